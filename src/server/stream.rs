//! The SSE response of a streamed answer: chunks forwarded as they arrive. The body owns the
//! request's [`Settlement`], so the request is settled when the stream ends, however it ends
//! (done, error, or the client gone: the body is dropped).

use super::respond::Body;
use crate::accounting::{End, Settlement};
use crate::api::{sse, ApiError, Dialect};
use crate::engines::{Chunk, ChunkStream, EngineError};
use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, StreamExt};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use std::convert::Infallible;
use std::time::Duration;

/// The payload of the error event sent when a stream breaks after its head.
fn error_payload(e: &EngineError, model: &str) -> Bytes {
    match e.cause() {
        EngineError::InStream(payload) => payload.clone(),
        other => Bytes::from(stream_error(other, model).body_json().to_string()),
    }
}

/// The client's error for a stream that broke after its head.
fn stream_error(e: &EngineError, model: &str) -> ApiError {
    match e.cause() {
        EngineError::TotalTimeout(_)
        | EngineError::FirstByteTimeout(_)
        | EngineError::StreamIdle(_) => ApiError::GatewayTimeout(format!("model `{model}`: {e}")),
        // The on-box model's own failure text is for the log (the engine writes it), not the
        // client: as before the head, an internal error without details.
        EngineError::Failed(_) => ApiError::Internal,
        _ => ApiError::BadGateway(format!("model `{model}`: {e}")),
    }
}

/// Writes the error event of a stream in `dialect` that broke after its head: the upstream's
/// own error event as it came ([`EngineError::InStream`]), else the dialect's error event.
/// Sources: Anthropic's Messages streaming reference (`event: error`, an `error` object with
/// `type` and `message`), OpenAI's Responses streaming reference (`event: error` with `code`,
/// `message` and `param`).
fn write_dialect_error(out: &mut BytesMut, dialect: Dialect, e: &EngineError, model: &str) {
    if let EngineError::InStream(payload) = e {
        let name = !matches!(dialect, Dialect::Completions | Dialect::Embeddings);
        return sse::write_named_event(out, name.then_some(&b"error"[..]), payload);
    }
    let api = stream_error(e, model);
    let payload = match dialect {
        Dialect::Anthropic | Dialect::CountTokens => {
            let kind = crate::api::anthropic::error_kind(api.status()).1;
            serde_json::json!({"type": "error", "error": {"type": kind, "message": api.to_string()}})
        }
        Dialect::Responses | Dialect::Compaction | Dialect::InputTokens => {
            serde_json::json!({"type": "error", "code": "server_error",
            "message": api.to_string(), "param": null})
        }
        // Embeddings never stream; were one to, OpenAI's error body is its only error shape.
        Dialect::Completions | Dialect::Embeddings => api.body_json(),
    };
    let name = !matches!(dialect, Dialect::Completions | Dialect::Embeddings);
    sse::write_named_event(
        out,
        name.then_some(&b"error"[..]),
        payload.to_string().as_bytes(),
    );
}

/// The next chunk, or a [`EngineError::StreamIdle`] when none comes within `idle`.
async fn next_within(
    chunks: &mut ChunkStream,
    idle: Duration,
) -> Option<Result<Chunk, EngineError>> {
    if idle == Duration::MAX {
        return chunks.next().await;
    }
    // A chunk that is already there needs no timer (nor a read of the clock to arm one).
    if let Some(item) = chunks.next().now_or_never() {
        return item;
    }
    match tokio::time::timeout(idle, chunks.next()).await {
        Ok(item) => item,
        Err(_) => Some(Err(EngineError::StreamIdle(idle))),
    }
}

/// Initial capacity of an outgoing frame.
const FRAME_CAPACITY: usize = 4096;

/// The response body of a stream: SSE events, then `[DONE]`, or an error event and a close
/// (also when the stream sends nothing for `idle`; `Duration::MAX`: no limit). Chunks that are
/// ready together (one upstream read often holds several) go out as one frame. The usage-only
/// chunk goes out only when `include_usage`. With `dialect`, the chunks are events of that
/// dialect: each goes out with its `event:` name, an error in the dialect's shape, and only a
/// completions stream ends in `[DONE]`.
pub fn body(
    mut chunks: ChunkStream,
    mut settlement: Settlement,
    include_usage: bool,
    idle: Duration,
    dialect: Option<Dialect>,
) -> Body {
    let done_marker = matches!(dialect, None | Some(Dialect::Completions));
    let done: &'static [u8] = if done_marker { sse::DONE } else { b"" };
    let events = async_stream::stream! {
        while let Some(first) = next_within(&mut chunks, idle).await {
            // Room for a few events at once (one upstream read often holds several), so the
            // frame is not regrown event by event.
            let mut out = BytesMut::with_capacity(FRAME_CAPACITY);
            let mut item = Some(first);
            let mut ended = false;
            while let Some(next) = item.take() {
                match next {
                    Ok(chunk) => {
                        settlement.on_chunk(chunk.text_bytes, chunk.usage);
                        if !chunk.usage_only || include_usage {
                            match dialect {
                                None => sse::write_event(&mut out, &chunk.payload),
                                Some(_) => sse::write_named_event(&mut out, chunk.event.as_deref(), &chunk.payload),
                            }
                        }
                    }
                    Err(e) => {
                        match dialect {
                            None => sse::write_event(&mut out, &error_payload(&e, settlement.model())),
                            Some(d) => write_dialect_error(&mut out, d, &e, settlement.model()),
                        }
                        settlement.finish(End::StreamFailed(e.kind()));
                        yield Ok::<_, Infallible>(Frame::data(out.freeze()));
                        return;
                    }
                }
                match chunks.next().now_or_never() {
                    Some(None) => ended = true,
                    ready => item = ready.flatten(),
                }
            }
            // A stream that has ended already sends its `[DONE]` in the same frame.
            if ended {
                settlement.finish(End::StreamDone);
                out.extend_from_slice(done);
                yield Ok(Frame::data(out.freeze()));
                return;
            }
            if !out.is_empty() {
                yield Ok(Frame::data(out.freeze()));
            }
        }
        settlement.finish(End::StreamDone);
        if done_marker {
            yield Ok(Frame::data(Bytes::from_static(sse::DONE)));
        }
    };
    StreamBody::new(events).boxed_unsync()
}

/// Takes what a stream body has ready now, without waiting. If the stream has already ended (a
/// short answer that the upstream sent in one piece with its head), the whole answer goes out as
/// one sized body (`Content-Length`), as it would through a plain proxy. Clients read a sized body
/// with less work than a chunked one, and nothing is held back by it. Otherwise the ready part
/// goes out first and the rest streams as it comes.
pub fn take_ready(mut body: Body) -> Body {
    // Most often one frame, taken as it is; several are joined.
    let (mut first, mut joined) = (Bytes::new(), BytesMut::new());
    let ready = loop {
        match body.frame().now_or_never() {
            Some(Some(Ok(frame))) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if first.is_empty() && joined.is_empty() {
                    first = data;
                } else {
                    if joined.is_empty() {
                        joined.extend_from_slice(&std::mem::take(&mut first));
                    }
                    joined.extend_from_slice(&data);
                }
            }
            Some(Some(Err(never))) => match never {},
            Some(None) => {
                let all = if joined.is_empty() {
                    first
                } else {
                    joined.freeze()
                };
                return http_body_util::Full::new(all)
                    .map_err(|never| match never {})
                    .boxed_unsync();
            }
            None if joined.is_empty() => break first,
            None => break joined.freeze(),
        }
    };
    if ready.is_empty() {
        return body;
    }
    let first = futures_util::stream::once(std::future::ready(Ok(Frame::data(ready))));
    StreamBody::new(first.chain(http_body_util::BodyStream::new(body))).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;

    fn body_of(stream: impl futures_util::Stream<Item = Bytes> + Send + 'static) -> Body {
        StreamBody::new(stream.map(|b| Ok::<_, Infallible>(Frame::data(b)))).boxed_unsync()
    }

    #[test]
    fn an_on_box_failure_mid_stream_says_internal_error_without_its_text() {
        let e = EngineError::Failed("matmul shape [3, 7] at /home/build/weights".into());
        let api = stream_error(&e, "on-box");
        assert_eq!(api.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
        let body = api.body_json().to_string();
        assert!(!body.contains("matmul"), "{body}");
        assert!(body.contains("internal error"), "{body}");
        let timeout = stream_error(&EngineError::StreamIdle(Duration::from_secs(3)), "m");
        assert_eq!(timeout.status(), http::StatusCode::GATEWAY_TIMEOUT);
    }

    #[tokio::test]
    async fn a_stream_already_ended_goes_out_sized() {
        let parts = [
            Bytes::from_static(b"data: 1\n\n"),
            Bytes::from_static(sse::DONE),
        ];
        let body = take_ready(body_of(futures_util::stream::iter(parts)));
        assert_eq!(body.size_hint().exact(), Some(9 + sse::DONE.len() as u64));
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"data: 1\n\ndata: [DONE]\n\n");
    }

    #[tokio::test]
    async fn one_ready_frame_goes_out_as_it_is() {
        let frame = Bytes::from_static(b"data: 1\n\ndata: [DONE]\n\n");
        let mut body = take_ready(body_of(futures_util::stream::iter([frame.clone()])));
        assert_eq!(body.size_hint().exact(), Some(frame.len() as u64));
        let out = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(out.as_ptr(), frame.as_ptr(), "not copied");
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn a_stream_still_running_sends_its_ready_part_then_streams() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        tx.send(Bytes::from_static(b"data: a\n\n")).unwrap();
        tx.send(Bytes::from_static(b"data: b\n\n")).unwrap();
        let rest =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|b| (b, rx)) },
            );
        let mut body = take_ready(body_of(rest));
        assert_eq!(body.size_hint().exact(), None);
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"data: a\n\ndata: b\n\n");
        // Nothing more until the stream sends it.
        assert!(body.frame().now_or_never().is_none());
        tx.send(Bytes::from_static(b"data: c\n\n")).unwrap();
        drop(tx);
        let rest = body.collect().await.unwrap().to_bytes();
        assert_eq!(&rest[..], b"data: c\n\n");
    }
}
