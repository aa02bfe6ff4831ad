//! The SSE response of a streamed answer: chunks forwarded as they arrive, and the
//! request settled when the stream ends, however it ends (done, error, client gone).

use super::respond::Body;
use super::Gateway;
use crate::accounting;
use crate::accounting::budget::Ticket;
use crate::accounting::rate_limit::TokenTicket;
use crate::api::{sse, ApiError};
use crate::engines::{Chunk, ChunkStream, EngineError, Usage};
use crate::features::estimate_text_tokens;
use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, StreamExt};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

/// How a stream ended, as the `status` label of `switchyard_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Still running (when dropped: the client went away).
    Open,
    Done,
    Failed,
}

/// Accounting of one stream, settled on drop.
pub struct StreamAccount {
    gateway: Arc<Gateway>,
    started: Instant,
    route: &'static str,
    model: String,
    rule: String,
    tenant: String,
    prompt_estimate: u64,
    first_text: Option<Instant>,
    text_bytes: u64,
    usage: Option<Usage>,
    outcome: Outcome,
    /// The budget reservation to settle with the stream's cost.
    ticket: Option<Ticket>,
    /// The rate-limit tokens to settle with the stream's token count.
    rate_tokens: Option<TokenTicket>,
}

impl StreamAccount {
    /// Settles `ticket` with this stream's cost when it ends.
    pub fn with_budget(mut self, ticket: Option<Ticket>) -> StreamAccount {
        self.ticket = ticket;
        self
    }

    /// Settles `tokens` with this stream's token count when it ends.
    pub fn with_rate_tokens(mut self, tokens: Option<TokenTicket>) -> StreamAccount {
        self.rate_tokens = tokens;
        self
    }

    pub fn new(
        gateway: Arc<Gateway>,
        started: Instant,
        route: &'static str,
        model: String,
        rule: String,
        tenant: String,
        prompt_estimate: u64,
    ) -> StreamAccount {
        StreamAccount {
            gateway,
            started,
            route,
            model,
            rule,
            tenant,
            prompt_estimate,
            first_text: None,
            text_bytes: 0,
            usage: None,
            outcome: Outcome::Open,
            ticket: None,
            rate_tokens: None,
        }
    }

    fn on_chunk(&mut self, c: &Chunk) {
        if c.text_bytes > 0 && self.first_text.is_none() {
            self.first_text = Some(Instant::now());
        }
        self.text_bytes += c.text_bytes;
        if c.usage.is_some() {
            self.usage = c.usage;
        }
    }

    fn finish(&mut self) {
        self.outcome = Outcome::Done;
    }

    fn on_error(&mut self, e: &EngineError) {
        self.outcome = Outcome::Failed;
        self.gateway
            .metrics
            .upstream_errors
            .with_label_values(&[&self.model, e.kind()])
            .inc();
    }
}

impl Drop for StreamAccount {
    fn drop(&mut self) {
        let usage = self.usage.unwrap_or(Usage {
            prompt_tokens: self.prompt_estimate,
            completion_tokens: estimate_text_tokens(self.text_bytes),
        });
        let g = &self.gateway;
        let bill = accounting::settle(&g.metrics, &g.policy, &self.model, &self.tenant, usage);
        if let (Some(t), Some(b)) = (self.ticket.take(), &g.budgets) {
            b.settle(t, bill.cost_usd);
            g.publish_budgets();
        }
        if let Some(t) = self.rate_tokens.take() {
            t.settle(usage.prompt_tokens + usage.completion_tokens);
        }
        let status = match self.outcome {
            Outcome::Done => "200",
            Outcome::Failed => "stream_error",
            Outcome::Open => "client_closed",
        };
        let m = &g.metrics;
        m.requests
            .with_label_values(&[self.route, &self.model, &self.rule, status])
            .inc();
        m.request_duration
            .with_label_values(&[self.route])
            .observe(self.started.elapsed().as_secs_f64());
        if let Some(t) = self.first_text {
            m.ttft
                .with_label_values(&[self.route])
                .observe((t - self.started).as_secs_f64());
        }
    }
}

/// The payload of the error event sent when a stream breaks after its head.
fn error_payload(e: &EngineError, model: &str) -> Bytes {
    match e {
        EngineError::InStream(payload) => payload.clone(),
        other => {
            let api: ApiError = match other {
                EngineError::TotalTimeout(_)
                | EngineError::FirstByteTimeout(_)
                | EngineError::StreamIdle(_) => {
                    ApiError::GatewayTimeout(format!("model `{model}`: {other}"))
                }
                _ => ApiError::BadGateway(format!("model `{model}`: {other}")),
            };
            Bytes::from(api.body_json().to_string())
        }
    }
}

/// The next chunk, or a [`EngineError::StreamIdle`] when none comes within `idle`.
async fn next_within(
    chunks: &mut ChunkStream,
    idle: std::time::Duration,
) -> Option<Result<Chunk, EngineError>> {
    if idle == std::time::Duration::MAX {
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
/// (also when a cloud stream sends nothing for `limits.stream_idle_timeout`). Chunks that are ready
/// together (one upstream read often holds several) go out as one frame.
pub fn body(mut chunks: ChunkStream, mut account: StreamAccount, include_usage: bool) -> Body {
    // Cloud streams only: an on-box stream may wait its turn in the engine's queue, which has
    // its own bound, and its generation is bounded by max_tokens.
    let idle = if account.route == "cloud" {
        account.gateway.policy.limits.stream_idle_timeout
    } else {
        std::time::Duration::MAX
    };
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
                        account.on_chunk(&chunk);
                        if !chunk.usage_only || include_usage {
                            sse::write_event(&mut out, &chunk.payload);
                        }
                    }
                    Err(e) => {
                        account.on_error(&e);
                        sse::write_event(&mut out, &error_payload(&e, &account.model));
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
                account.finish();
                out.extend_from_slice(sse::DONE);
                yield Ok(Frame::data(out.freeze()));
                return;
            }
            if !out.is_empty() {
                yield Ok(Frame::data(out.freeze()));
            }
        }
        account.finish();
        yield Ok(Frame::data(Bytes::from_static(sse::DONE)));
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
