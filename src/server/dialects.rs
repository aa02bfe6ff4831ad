//! The dialects other than OpenAI chat completions, over HTTP: Anthropic Messages
//! (`POST /v1/messages`, `POST /v1/messages/count_tokens`), OpenAI Responses
//! (`POST /v1/responses`, its compaction, `POST /v1/responses/compact`, and its token count,
//! `POST /v1/responses/input_tokens`), legacy completions (`POST /v1/completions`) and
//! embeddings (`POST /v1/embeddings`). Read the body, translate it into the one internal
//! request ([`anthropic::to_chat`], [`responses::to_chat`], [`completions::to_chat`],
//! [`embeddings::to_chat`]), answer it as any chat request
//! ([`chat::answer`]: the same limits, classifier, policy, budgets, metrics and request log), and
//! turn the answer, the stream or the error into the dialect's shapes. A model whose upstream
//! speaks the client's dialect is sent the request as it came instead, and its answer comes
//! back untranslated.

use super::respond::{self, Body};
use super::{chat, Caller, Gateway};
use crate::accounting::End;
use crate::api::dialect::{renamed_api_error, renamed_error};
use crate::api::{
    anthropic, completions, embeddings, responses, sse, ApiError, Capability, ChatRequest,
};
use crate::engines::{EngineRequest, Native};
use bytes::BytesMut;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::Body as _;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

pub use crate::api::Dialect;

/// What a dialect's translation kept for the way back.
enum Inbound {
    Anthropic(anthropic::Inbound),
    Responses(responses::Inbound),
    Completions(completions::Inbound),
    /// An embeddings request, always answered as it came by a model that serves embeddings
    /// ([`Dialect::only_as_it_came`]): only its errors are translated (`messages` is its
    /// `input`).
    Embeddings(embeddings::Inbound),
}

/// A stream translator of either dialect.
enum Translator {
    Anthropic(anthropic::StreamTranslator),
    Responses(Box<responses::StreamTranslator>),
    Completions(completions::StreamTranslator),
}

impl Translator {
    fn event(&mut self, data: &[u8], out: &mut BytesMut) {
        match self {
            Translator::Anthropic(t) => t.event(data, out),
            Translator::Responses(t) => t.event(data, out),
            Translator::Completions(t) => t.event(data, out),
        }
    }
    fn end(&mut self, out: &mut BytesMut) {
        match self {
            Translator::Anthropic(t) => t.end(out),
            Translator::Responses(t) => t.end(out),
            Translator::Completions(t) => t.end(out),
        }
    }
    fn ended(&self) -> bool {
        match self {
            Translator::Anthropic(t) => t.ended(),
            Translator::Responses(t) => t.ended(),
            Translator::Completions(t) => t.ended(),
        }
    }
}

impl Dialect {
    /// The API that alone answers this dialect's requests, which are never translated (a
    /// compaction, an embedding); `None` for the dialects a chat answer is translated into.
    fn only_as_it_came(self) -> Option<&'static str> {
        match self {
            Dialect::Compaction => Some("the Responses API"),
            Dialect::Embeddings => Some("an embeddings API"),
            _ => None,
        }
    }

    /// The status and body of an error (OpenAI-shaped `body`) in this dialect.
    fn error_body(self, status: StatusCode, body: &[u8]) -> (StatusCode, bytes::Bytes) {
        match self {
            Dialect::Anthropic | Dialect::CountTokens => anthropic::error_body(status, body),
            // The Responses and completions APIs share OpenAI's error shape.
            Dialect::Responses
            | Dialect::Compaction
            | Dialect::InputTokens
            | Dialect::Completions
            | Dialect::Embeddings => (status, bytes::Bytes::copy_from_slice(body)),
        }
    }

    /// The response of an error in this dialect, with the error's own headers.
    pub fn error(self, e: &ApiError) -> Response<Body> {
        let (status, body) = self.error_body(e.status(), &e.body());
        let mut r = respond::with_body(status, "application/json", body);
        for (name, value) in e.headers() {
            r.headers_mut().insert(name, value);
        }
        r
    }

    fn to_chat(self, body: &[u8], counting: bool) -> Result<(Vec<u8>, Inbound), ApiError> {
        Ok(match self {
            // A token count's body is its dialect's request (without what only answering needs).
            Dialect::Anthropic | Dialect::CountTokens => {
                let counting = counting || self == Dialect::CountTokens;
                let (b, i) = anthropic::to_chat(body, counting)?;
                (b, Inbound::Anthropic(i))
            }
            Dialect::Responses | Dialect::InputTokens
                if counting || self == Dialect::InputTokens =>
            {
                let (b, i) = responses::count_to_chat(body)?;
                (b, Inbound::Responses(i))
            }
            Dialect::Responses | Dialect::InputTokens => {
                let (b, i) = responses::to_chat(body)?;
                (b, Inbound::Responses(i))
            }
            Dialect::Compaction => {
                let (b, i) = responses::compaction_to_chat(body)?;
                (b, Inbound::Responses(i))
            }
            Dialect::Completions => {
                let (b, i) = completions::to_chat(body)?;
                (b, Inbound::Completions(i))
            }
            Dialect::Embeddings => {
                let (b, i) = embeddings::to_chat(body)?;
                (b, Inbound::Embeddings(i))
            }
        })
    }
}

impl Inbound {
    /// Where the translation put the client's fields under chat's names, for the errors that
    /// name them (none for legacy completions, whose fields keep their names).
    fn renamed(&self) -> &[(Cow<'static, str>, String)] {
        match self {
            Inbound::Anthropic(i) => &i.renamed,
            Inbound::Responses(i) => &i.renamed,
            Inbound::Completions(_) => &[],
            Inbound::Embeddings(i) => &i.renamed,
        }
    }

    fn answer(&self, body: &[u8]) -> Result<bytes::Bytes, ApiError> {
        match self {
            Inbound::Anthropic(i) => anthropic::from_completion(body, &i.model),
            Inbound::Responses(i) => responses::from_completion(body, i),
            Inbound::Completions(i) => completions::from_completion(body, i),
            // Never reached: `handle` refuses such an answer before ([`Dialect::only_as_it_came`]).
            Inbound::Embeddings(_) => Err(ApiError::BadGateway(
                "the request was not answered by an embeddings API".into(),
            )),
        }
    }

    /// The stream translator of the dialect (none for embeddings, which have no stream);
    /// `prompt_tokens`: the prompt's size as the gateway knew it when the stream began.
    fn translator(&self, prompt_tokens: u64) -> Option<Translator> {
        Some(match self {
            Inbound::Anthropic(i) => {
                Translator::Anthropic(anthropic::StreamTranslator::new(&i.model, prompt_tokens))
            }
            Inbound::Responses(i) => {
                Translator::Responses(Box::new(responses::StreamTranslator::new(i)))
            }
            Inbound::Completions(i) => {
                Translator::Completions(completions::StreamTranslator::new(i))
            }
            Inbound::Embeddings(_) => return None,
        })
    }
}

/// Answers a request of `dialect`; with `count_only`, counts its prompt's tokens instead
/// (Anthropic's `count_tokens`, the Responses API's `input_tokens`).
pub async fn handle(
    gateway: Arc<Gateway>,
    req: Request<Incoming>,
    dialect: Dialect,
    count_only: bool,
) -> Response<Body> {
    let caller = Caller::of(&req);
    let (parts, body) = req.into_parts();
    let has_body = !body.is_end_stream();
    let read = chat::read(&gateway, &parts.headers, body).await;
    let translated = read.as_ref().map_err(Clone::clone).and_then(|b| {
        let (chat_body, inbound) = dialect.to_chat(b, count_only)?;
        let mut parsed =
            ChatRequest::parse(&chat_body).map_err(|e| renamed_api_error(e, inbound.renamed()))?;
        if dialect == Dialect::Completions {
            parsed.set_raw_prompt();
        }
        match &inbound {
            Inbound::Responses(responses::Inbound {
                responses_only: Some(p),
                ..
            }) => parsed.set_dialect_only(Capability::Responses, p.clone()),
            Inbound::Anthropic(anthropic::Inbound {
                messages_only: Some(p),
                ..
            }) => parsed.set_dialect_only(Capability::Messages, p.clone()),
            Inbound::Embeddings(i) => {
                parsed.set_dialect_only(Capability::Embeddings, "input".into());
                parsed.set_token_ids(i.token_ids);
            }
            _ => {}
        }
        Ok((parsed, inbound))
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
            let mut resp = dialect.error(&e);
            if has_body && read.is_err() && chat::stops_reading(&e) {
                respond::close_after(&mut resp, parts.version);
            }
            return resp;
        }
    };
    if count_only {
        // The same limits as the request it counts: counting renders and tokenises it.
        if let Err(e) = super::limits::check(&gateway.policy.limits, &parsed) {
            return dialect.error(&e);
        }
        let body = read.unwrap_or_default();
        let counted = count(&gateway, &parts.headers, parsed, &caller, dialect, &body).await;
        let body = match dialect {
            Dialect::Responses => responses::input_tokens_body(counted),
            _ => anthropic::count_tokens_body(counted),
        };
        return respond::with_body(StatusCode::OK, "application/json", body);
    }
    let settlement = gateway.ledger.open(Instant::now());
    // A model whose upstream speaks the dialect is sent the body as it came.
    let body = read.unwrap_or_default();
    let native = Native {
        dialect,
        body: &body,
    };
    let resp = chat::answer(
        gateway,
        &parts.headers,
        parsed,
        Some(native),
        settlement,
        &caller,
    )
    .await;
    if resp
        .extensions()
        .get::<chat::Answered>()
        .is_some_and(|a| a.0 == dialect)
    {
        return resp;
    }
    if let Some(api) = dialect
        .only_as_it_came()
        .filter(|_| resp.status() == StatusCode::OK)
    {
        // Only a model that serves the dialect's own API may answer it (it needs that
        // capability), and it is sent the request as it came: an answer in another shape
        // cannot be one.
        let e = ApiError::BadGateway(format!("the request was not answered by {api}"));
        return dialect.error(&e);
    }
    translate(resp, dialect, &inbound).await
}

/// The prompt tokens of a request of `dialect` (`body`, read as `parsed`), counted for the model
/// the policy would pick, as serving it would: the private-data scan first (so that a `pii` rule
/// routes the count as it would route the request), then the decision. Exact on the box (the
/// model's tokenizer and chat template; templating and tokenising take about 0.25 s per MB, off
/// the runtime's threads as answering does); in the cloud, the provider's own count where its
/// upstream serves one (Anthropic's `count_tokens` for an Anthropic model, the Responses API's
/// `input_tokens` for a `responses: true` model) and the route would not redact the request;
/// else, or when that call fails, the gateway's estimate (what budgets reserve and rules see).
async fn count(
    gateway: &Arc<Gateway>,
    headers: &http::HeaderMap,
    parsed: ChatRequest,
    caller: &Caller,
    dialect: Dialect,
    body: &[u8],
) -> u64 {
    let tags = headers.get(chat::TAGS_HEADER).and_then(|v| v.to_str().ok());
    let mut feats = crate::features::extract(&parsed, caller.tenant.as_deref(), tags);
    let estimate = feats.prompt_tokens;
    chat::detect_pii(gateway, &parsed, &mut feats).await;
    let Ok(decision) = crate::policy::decide(&gateway.policy, &feats) else {
        return estimate;
    };
    let Some(engine) = gateway.engines.get(decision.model).cloned() else {
        return estimate;
    };
    let redacts = feats.pii.iter().any(|k| decision.redact.contains(k));
    let upstream = match dialect {
        Dialect::Anthropic => Dialect::CountTokens,
        _ => Dialect::InputTokens,
    };
    if engine.serves(upstream) && !redacts {
        let request = EngineRequest {
            request: &parsed,
            headers,
            native: Some(Native {
                dialect: upstream,
                body,
            }),
            redacted: None,
        };
        return match engine.infer(request).await {
            Ok(c) => serde_json::from_slice::<serde_json::Value>(&c.body)
                .ok()
                .and_then(|v| v["input_tokens"].as_u64())
                .unwrap_or(estimate),
            Err(e) => {
                tracing::debug!("model `{}` did not count the prompt: {e}", decision.model);
                estimate
            }
        };
    }
    tokio::task::spawn_blocking(move || engine.count_prompt_tokens(&parsed))
        .await
        .ok()
        .flatten()
        .unwrap_or(estimate)
}

/// Turns an OpenAI-shaped response of the chat path into the dialect's: a chat completion into
/// its answer, an SSE stream into its events, an error into its error shape. The gateway's own
/// headers (`x-switchyard-*`, `Retry-After`, ...) stay.
async fn translate(resp: Response<Body>, dialect: Dialect, inbound: &Inbound) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    let is_stream = parts
        .headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let prompt = parts
        .extensions
        .get::<chat::PromptTokens>()
        .map_or(0, |p| p.0);
    let translator = (parts.status == StatusCode::OK && is_stream)
        .then(|| inbound.translator(prompt))
        .flatten();
    if let Some(translator) = translator {
        parts.headers.remove(CONTENT_LENGTH);
        return Response::from_parts(parts, translate_stream(body, translator));
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
        match inbound.answer(&bytes) {
            Ok(b) => b,
            Err(e) => {
                let (status, b) = dialect.error_body(e.status(), &e.body());
                parts.status = status;
                b
            }
        }
    } else {
        let bytes = renamed_error(&bytes, inbound.renamed());
        let (status, b) = dialect.error_body(parts.status, &bytes);
        parts.status = status;
        b
    };
    Response::from_parts(parts, respond::full(body))
}

/// The dialect's event stream of an OpenAI SSE body, frame by frame as it comes.
fn translate_stream(mut body: Body, mut t: Translator) -> Body {
    let events = async_stream::stream! {
        let mut decoder = sse::Decoder::default();
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
