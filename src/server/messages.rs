//! `POST /v1/messages` and `POST /v1/messages/count_tokens`: the Anthropic Messages dialect over
//! HTTP. Read the body, translate it into the one internal request ([`anthropic::to_chat`]),
//! answer it as any chat request ([`chat::answer`]: the same limits, classifier, policy, budgets,
//! metrics and request log), and turn the response, stream or error into Anthropic's shapes.

use super::respond::{self, Body};
use super::{chat, Caller, Gateway};
use crate::accounting::End;
use crate::api::anthropic::{self, StreamTranslator};
use crate::api::{sse, ApiError, ChatRequest};
use bytes::BytesMut;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::Body as _;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

/// The response of an error in Anthropic's shape (`{"type": "error", ...}`), with the
/// error's own headers (`Retry-After`, ...).
pub fn error(e: &ApiError) -> Response<Body> {
    let (status, body) = anthropic::error_body(e.status(), &e.body());
    let mut r = respond::with_body(status, "application/json", body);
    for (name, value) in e.headers() {
        r.headers_mut().insert(name, value);
    }
    r
}

/// Answers `POST /v1/messages`, or with `count_only` `POST /v1/messages/count_tokens`.
pub async fn handle(
    gateway: Arc<Gateway>,
    req: Request<Incoming>,
    count_only: bool,
) -> Response<Body> {
    let caller = req
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or(Caller { tenant: None });
    let (parts, body) = req.into_parts();
    let has_body = !body.is_end_stream();
    let read = chat::read(&gateway, &parts.headers, body).await;
    let translated = read.as_ref().map_err(Clone::clone).and_then(|b| {
        let (chat_body, inbound) = anthropic::to_chat(b, count_only)?;
        Ok((ChatRequest::parse(&chat_body)?, inbound))
    });
    let (parsed, inbound) = match translated {
        Ok(t) => t,
        Err(e) => {
            if !count_only {
                // Counted like any refused chat request.
                gateway
                    .ledger
                    .open(Instant::now())
                    .finish(End::Error(e.status()));
            }
            let mut resp = error(&e);
            if has_body && read.is_err() && chat::stops_reading(&e) {
                respond::close_after(&mut resp, parts.version);
            }
            return resp;
        }
    };
    if count_only {
        let tags = parts
            .headers
            .get(chat::TAGS_HEADER)
            .and_then(|v| v.to_str().ok());
        let feats = crate::features::extract(&parsed, caller.tenant.as_deref(), tags);
        return respond::with_body(
            StatusCode::OK,
            "application/json",
            anthropic::count_tokens_body(feats.prompt_tokens),
        );
    }
    let settlement = gateway.ledger.open(Instant::now());
    let resp = chat::answer(gateway, &parts.headers, parsed, settlement, &caller).await;
    to_anthropic(resp, &inbound.model).await
}

/// Turns an OpenAI-shaped response of the chat path into Anthropic's: a chat completion into a
/// `message`, an SSE stream into the Messages events, an error into Anthropic's error shape.
/// The gateway's own headers (`x-switchyard-*`, `Retry-After`, ...) stay.
async fn to_anthropic(resp: Response<Body>, model: &str) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    let is_stream = parts
        .headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if parts.status == StatusCode::OK && is_stream {
        parts.headers.remove(CONTENT_LENGTH);
        return Response::from_parts(parts, translate_stream(body, model.to_string()));
    }
    // JSON answers and errors are whole in memory already.
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    parts.headers.remove(CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let body = if parts.status == StatusCode::OK {
        match anthropic::from_completion(&bytes, model) {
            Ok(b) => b,
            Err(e) => {
                let (status, b) = anthropic::error_body(e.status(), &e.body());
                parts.status = status;
                b
            }
        }
    } else {
        let (status, b) = anthropic::error_body(parts.status, &bytes);
        parts.status = status;
        b
    };
    Response::from_parts(parts, respond::full(body))
}

/// The Messages event stream of an OpenAI SSE body, frame by frame as it comes.
fn translate_stream(mut body: Body, model: String) -> Body {
    let events = async_stream::stream! {
        let mut decoder = sse::Decoder::default();
        let mut t = StreamTranslator::new(&model);
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame;
            let Ok(data) = frame.into_data() else { continue };
            decoder.push_bytes(data);
            let mut out = BytesMut::new();
            // The gateway wrote these frames itself: no line is over the decoder's bound.
            while let Ok(Some(event)) = decoder.next_event() {
                t.event(&event.data, &mut out);
            }
            if !out.is_empty() {
                yield Ok::<_, Infallible>(Frame::data(out.freeze()));
            }
        }
        if !t.ended() {
            let mut out = BytesMut::new();
            t.end(&mut out);
            yield Ok(Frame::data(out.freeze()));
        }
    };
    StreamBody::new(events).boxed_unsync()
}
