//! `POST /v1/chat/completions`, the HTTP side of a chat request. Read top to bottom: read the
//! body, check the client limits, extract the features, classify, decide, dispatch
//! ([`crate::dispatch`]: the route and its fallbacks, each call admitted by the rate limits and
//! budgets), respond. The request's
//! [`Settlement`] is opened first and settles it however it ends.

use super::limits;
use super::respond::{self, Body};
use super::sticky;
use super::stream;
use super::{Caller, Gateway, REQUEST_ID};
use crate::accounting::recorder::{Conversation, Entry};
use crate::accounting::{End, Settlement};
use crate::api::{ApiError, Capability, ChatRequest, Usage};
use crate::classifier;
use crate::dispatch::{self, Answer, Reply};
use crate::engines::{EngineRequest, Native, Redacted};
use crate::features::{self, Features};
use crate::pii;
use crate::policy::{self, Decision, Policy};
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The header that carries request tags for policies.
pub const TAGS_HEADER: &str = "x-switchyard-tags";
/// The response header with the classifier's outputs: `category;p=0.91;strong=0.42`.
pub const CLASSIFIER_HEADER: &str = "x-switchyard-classifier";
/// The response header naming the kinds of private data replaced before a cloud model got the
/// request: `email,phone`.
pub const REDACTED_HEADER: &str = "x-switchyard-redacted";
/// The response header set when a fallback answered: `<model that failed>; reason=<kind>`.
pub const FALLBACK_HEADER: &str = "x-switchyard-fallback";

const ROUTE_HEADER: HeaderName = HeaderName::from_static("x-switchyard-route");
const MODEL_HEADER: HeaderName = HeaderName::from_static("x-switchyard-model");
const RULE_HEADER: HeaderName = HeaderName::from_static("x-switchyard-rule");
const COST_HEADER: HeaderName = HeaderName::from_static("x-switchyard-cost-usd");

/// What a response's headers say about its routing.
struct Routing<'a> {
    route: &'static str,
    model: &'a str,
    rule: &'a str,
    cost_usd: f64,
}

impl Routing<'_> {
    fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(ROUTE_HEADER, HeaderValue::from_static(self.route));
        if let Ok(v) = HeaderValue::from_str(self.model) {
            headers.insert(MODEL_HEADER, v);
        }
        if let Ok(v) = HeaderValue::from_str(self.rule) {
            headers.insert(RULE_HEADER, v);
        }
        if let Ok(v) = HeaderValue::from_str(&format!("{:.8}", self.cost_usd)) {
            headers.insert(COST_HEADER, v);
        }
    }
}

/// Answers a chat completion request.
pub async fn handle(gateway: Arc<Gateway>, req: Request<Incoming>) -> Response<Body> {
    let mut settlement = gateway.ledger.open(Instant::now());
    let caller = Caller::of(&req);
    let (parts, body) = req.into_parts();
    let has_body = !body.is_end_stream();
    let parsed = match read(&gateway, &parts.headers, body)
        .await
        .and_then(|b| ChatRequest::parse(&b))
    {
        Ok(r) => r,
        Err(e) => {
            let mut resp = refuse(&mut settlement, &e, None);
            if has_body && stops_reading(&e) {
                respond::close_after(&mut resp, parts.version);
            }
            return resp;
        }
    };
    answer(gateway, &parts.headers, parsed, None, settlement, &caller).await
}

/// Marks a response whose body is in the client's dialect already (a model's upstream answered
/// the request as the client sent it): the dialect's handler passes it on untranslated.
#[derive(Debug, Clone, Copy)]
pub(super) struct Answered(pub crate::api::Dialect);

/// On a stream's response: the prompt's tokens when the stream began, as the engine counted
/// them where it had (the on-box model), else the gateway's estimate (the dialects that report a
/// prompt's size before its answer, such as Anthropic's `message_start`, say this).
#[derive(Debug, Clone, Copy)]
pub(super) struct PromptTokens(pub u64);

/// Answers a parsed chat request, whatever dialect it came in (`headers`: the client's;
/// `native`: the request as it came in another dialect, which a model whose upstream speaks it
/// is sent instead): client limits, features, classification, decision, dispatch, response.
pub(super) async fn answer(
    gateway: Arc<Gateway>,
    headers: &HeaderMap,
    parsed: ChatRequest,
    native: Option<Native<'_>>,
    mut settlement: Settlement,
    caller: &Caller,
) -> Response<Body> {
    if let Err(e) = limits::check(&gateway.policy.limits, &parsed) {
        return refuse(&mut settlement, &e, None);
    }
    let tags = headers.get(TAGS_HEADER).and_then(|v| v.to_str().ok());
    let mut feats = features::extract(&parsed, caller.tenant.as_deref(), tags);
    settlement.arrived(caller.tenant.as_deref(), feats.prompt_tokens);
    let request_id = headers.get(REQUEST_ID).and_then(|v| v.to_str().ok());
    detect_pii(&gateway, &parsed, &mut feats).await;
    let responses = native.is_some_and(|n| {
        matches!(
            n.dialect,
            crate::api::Dialect::Responses | crate::api::Dialect::Compaction
        )
    });
    // An embedding is no turn of a conversation: nothing pins it, and it pins nothing. Nor is
    // it an answer the reference model prices: it saves nothing against it.
    let embedding = native.is_some_and(|n| n.dialect == crate::api::Dialect::Embeddings);
    if embedding {
        settlement.without_savings();
    }
    let conversation = (!embedding)
        .then(|| conversation_of(&gateway, headers, &parsed, &feats, responses))
        .flatten();
    let key = conversation.as_ref().map(|c| c.0.as_str());
    let answered = pinned(&gateway, key, &mut feats).await;
    let classified = classify(&gateway, &parsed, &mut feats, request_id).await;
    let decision = match policy::decide(&gateway.policy, &feats) {
        Ok(d) => d,
        Err(e) => {
            let e = undecided(&gateway.policy, &e, &parsed);
            return refuse(&mut settlement, &e, None);
        }
    };
    // A lookup the store did not answer was counted as `unavailable` already.
    if answered == Some(true) {
        let m = &gateway.ledger.metrics;
        match (decision.pinned && decision.skipped.is_none(), &feats.pinned) {
            (true, _) => m.sticky("hit"),
            (false, Some(_)) => m.sticky("overridden"),
            (false, None) => m.sticky("new"),
        }
    }
    let redacted = match redact(&gateway, &parsed, native, &feats, decision).await {
        Ok(r) => r,
        Err(e) => return refuse(&mut settlement, &e, None),
    };
    // The request log holds the routing decisions `replay` and `calibrate` read again as
    // chats; an embedding, which no chat model could answer, would only skew them.
    if !embedding {
        record(
            &gateway,
            &mut settlement,
            &parsed,
            &feats,
            request_id,
            conversation.as_ref().map(|(key, by_header)| Conversation {
                key,
                by_header: *by_header,
            }),
            decision,
        );
    }
    // Anthropic's stream says the prompt's size in its first event (`message_start`).
    let count_prompt = native.is_some_and(|n| n.dialect == crate::api::Dialect::Anthropic);
    let request = EngineRequest {
        request: &parsed,
        headers,
        native,
        redacted: redacted.as_ref().map(|(r, _)| r),
    };
    let policy = &gateway.policy;
    let answer = dispatch::dispatch(policy, &gateway.engines, decision, request, &mut settlement);
    let mut resp = match answer.await {
        Ok(answer) => {
            let pin = pin_after(&decision, &answer);
            let cloud = answer.route == "cloud";
            // A complete answer is settled here, before the pin is written: a client that goes
            // away meanwhile cannot cut its settlement short.
            let mut resp = respond(
                &gateway,
                answer,
                decision.rule,
                settlement,
                &parsed,
                count_prompt,
            );
            if let (Some(key), true) = (key, decision.sticky) {
                keep_pin(&gateway, key, pin, decision.rule).await;
            }
            if let (Some((_, kinds)), true) = (&redacted, cloud) {
                let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
                if let Ok(v) = HeaderValue::from_str(&names.join(",")) {
                    resp.headers_mut().insert(REDACTED_HEADER, v);
                }
            }
            resp
        }
        Err(e) => {
            let model = e.model().unwrap_or(decision.model);
            let routing = Routing {
                route: policy.route_of(model),
                model,
                rule: decision.rule,
                cost_usd: 0.0,
            };
            refuse(&mut settlement, &e.to_api(), Some(&routing))
        }
    };
    if let Some(v) = classified.and_then(|h| HeaderValue::from_str(&h).ok()) {
        resp.headers_mut().insert(CLASSIFIER_HEADER, v);
    }
    resp
}

/// The response of a model's answer: the JSON as the engine gave it, or the SSE stream (which
/// takes the settlement along, to settle when it ends); with `count_prompt`, a stream carries
/// [`PromptTokens`] for the dialect's translator.
fn respond(
    gateway: &Gateway,
    answer: Answer<'_>,
    rule: &str,
    mut settlement: Settlement,
    req: &ChatRequest,
    count_prompt: bool,
) -> Response<Body> {
    let Answer {
        model,
        route,
        fallback,
        reply,
    } = answer;
    let mut routing = Routing {
        route,
        model,
        rule,
        cost_usd: 0.0,
    };
    let mut resp = match reply {
        Reply::Complete(done) => {
            routing.cost_usd = settlement
                .finish(End::Complete(done.usage, done.usage_estimated))
                .cost_usd;
            let mut resp = respond::with_body(StatusCode::OK, "application/json", done.body);
            resp.headers_mut().extend(done.headers);
            if let Some(d) = done.dialect {
                resp.extensions_mut().insert(Answered(d));
            }
            resp
        }
        Reply::Stream(streaming) => {
            // A stream's head goes out before any tokens exist: its cost header is the prompt's.
            let prompt_estimate = settlement.prompt_estimate();
            let prompt = Usage {
                prompt_tokens: prompt_estimate,
                completion_tokens: 0,
                cached_prompt_tokens: 0,
                cache_write_prompt_tokens: 0,
                web_searches: 0,
            };
            routing.cost_usd = gateway.ledger.bill(model, prompt).cost_usd;
            // Cloud streams only: an on-box stream may wait its turn in the engine's queue,
            // which has its own bound, and its generation is bounded by max_tokens.
            let idle = if route == "cloud" {
                gateway.policy.limits.stream_idle_timeout
            } else {
                Duration::MAX
            };
            let framing = streaming.dialect;
            let body = stream::body(
                streaming.chunks,
                settlement,
                req.include_usage,
                idle,
                framing,
            );
            let mut resp = Response::new(stream::take_ready(body));
            if count_prompt {
                let counted = streaming.prompt_tokens.unwrap_or(prompt_estimate);
                resp.extensions_mut().insert(PromptTokens(counted));
            }
            if let Some(d) = framing {
                resp.extensions_mut().insert(Answered(d));
            }
            let h = resp.headers_mut();
            h.extend(streaming.headers);
            h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            resp
        }
    };
    routing.apply(resp.headers_mut());
    if let Some((model, reason)) = fallback {
        if let Ok(v) = HeaderValue::from_str(&format!("{model}; reason={reason}")) {
            resp.headers_mut().insert(FALLBACK_HEADER, v);
        }
    }
    resp
}

/// The client's error for a request the policy cannot route: an unknown model (404), or a
/// capability no model of the route has (400, naming it and the request parameter that asks
/// for it: [`ChatRequest::param_for`]).
fn undecided(policy: &Policy, e: &policy::DecideError, req: &ChatRequest) -> ApiError {
    match e.missing_capability() {
        Some(c) => {
            let param = req.param_for(c);
            let mut message = e.message_for(Some(&param));
            if c == Capability::Embeddings {
                // Embeddings are not routed by what they say: the client names its model.
                let serving: Vec<String> = policy
                    .models
                    .values()
                    .filter(|m| m.capabilities.has(c))
                    .map(|m| format!("`{}`", m.name))
                    .collect();
                message.push_str(&if serving.is_empty() {
                    " (no model of this gateway serves embeddings)".to_string()
                } else {
                    format!(" (models that serve embeddings: {})", serving.join(", "))
                });
            }
            ApiError::BadRequest {
                message,
                param: Some(param),
                code: Some("unsupported_capability"),
            }
        }
        None => ApiError::ModelNotFound(e.to_string()),
    }
}

/// The error response of a request that ends without an answer, settled with its status.
fn refuse(settlement: &mut Settlement, e: &ApiError, routing: Option<&Routing>) -> Response<Body> {
    // What the request cost though it failed: calls the providers bill after their head.
    let cost_usd = settlement.finish(End::Error(e.status())).cost_usd;
    let mut resp = respond::error(e);
    if let Some(r) = routing {
        Routing { cost_usd, ..*r }.apply(resp.headers_mut());
    }
    resp
}

/// Starts the request's row of the request log, when the policy keeps one; the settlement
/// writes it with the outcome.
fn record(
    gateway: &Gateway,
    settlement: &mut Settlement,
    req: &ChatRequest,
    feats: &Features,
    request_id: Option<&str>,
    session: Option<Conversation>,
    decision: Decision,
) {
    if let Some(rec) = &gateway.recorder {
        settlement.log(rec.row(&Entry {
            body: &req.body(),
            tags: &feats.tags,
            tenant: feats.tenant.as_deref(),
            route: gateway.policy.route_of(decision.model),
            model: decision.model,
            rule: decision.rule,
            prompt_tokens: feats.prompt_tokens,
            needs: feats.needs,
            request_id,
            pii: gateway.policy.uses_pii().then_some(feats.pii),
            session,
            harness: &gateway.harness,
        }));
    }
}

/// Requests whose body is longer than this are scanned for private data off the async
/// runtime's threads. The body, not the message text, is measured: the scan also reads
/// tool-call arguments and tool results, which the text count leaves out.
const PII_INLINE_BYTES: u64 = 64 * 1024;

/// Scans the request for private data when the policy routes on it or redacts it, puts the
/// kinds found into the features and counts them (`switchyard_pii_detections_total`).
pub(super) async fn detect_pii(gateway: &Gateway, req: &ChatRequest, feats: &mut Features) {
    if !gateway.policy.uses_pii() {
        return;
    }
    let found = if req.body_bytes() > PII_INLINE_BYTES {
        let owned = req.clone();
        tokio::task::spawn_blocking(move || pii::request::scan_request(&owned))
            .await
            .unwrap_or_default()
    } else {
        pii::request::scan_request(req)
    };
    gateway.ledger.metrics.pii_detected(&found.counts());
    feats.pii = found.kinds();
}

/// The request with the private data its route redacts replaced by placeholders, for the
/// route's cloud models, and the kinds replaced (`None` when there is nothing to replace).
/// Requests over [`PII_INLINE_BYTES`] of body are redacted off the async runtime's threads.
/// Counted in `switchyard_pii_redactions_total`.
///
/// Errors: the redacted request does not parse again (never expected; the request is refused
/// rather than sent unredacted).
async fn redact(
    gateway: &Gateway,
    req: &ChatRequest,
    native: Option<Native<'_>>,
    feats: &Features,
    decision: Decision<'_>,
) -> Result<Option<(Redacted, pii::Kinds)>, ApiError> {
    let kinds = pii::Kinds::from_iter(feats.pii.iter().filter(|k| decision.redact.contains(*k)));
    if kinds.is_empty() {
        return Ok(None);
    }
    let copy = if req.body_bytes() > PII_INLINE_BYTES {
        let owned = req.clone();
        let body = native.map(|n| n.body.to_vec());
        tokio::task::spawn_blocking(move || redacted_copy(&owned, body.as_deref(), kinds))
            .await
            .ok()
            .flatten()
    } else {
        redacted_copy(req, native.map(|n| n.body), kinds)
    };
    let Some((redacted, replaced)) = copy else {
        // The reason may quote the request: it is not logged.
        tracing::error!("a redacted request does not parse again; it is refused");
        return Err(ApiError::Internal);
    };
    gateway.ledger.metrics.pii_redacted(&replaced.replaced);
    Ok(Some((redacted, kinds)))
}

/// The redacted copies of a request (the parsed request and, when the client spoke another
/// dialect, its own body), with the placeholders used; `None` when the redacted request does not
/// parse again. A native body that cannot be redacted is dropped, so cloud models get the
/// redacted parsed request instead ([`crate::engines::EngineRequest::for_engine`]), unless the
/// request uses what only its dialect serves ([`ChatRequest::dialect_only`]): then `None`.
fn redacted_copy(
    req: &ChatRequest,
    native: Option<&[u8]>,
    kinds: pii::Kinds,
) -> Option<(Redacted, pii::Placeholders)> {
    let mut p = pii::Placeholders::default();
    let mut body = req.body();
    pii::request::redact(&mut body, kinds, &mut p);
    let mut request = serde_json::to_vec(&body)
        .ok()
        .and_then(|b| ChatRequest::parse(&b).ok())?;
    if req.raw_prompt {
        request.set_raw_prompt();
    }
    if let Some((api, p)) = &req.dialect_only {
        request.set_dialect_only(*api, p.clone());
    }
    let native = native.and_then(|n| {
        let mut body: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(n).ok()?;
        pii::request::redact(&mut body, kinds, &mut p);
        serde_json::to_vec(&body).ok()
    });
    // What only the Responses API serves has no translation to fall back on.
    if native.is_none() && req.dialect_only.is_some() {
        return None;
    }
    Some((Redacted { request, native }, p))
}

/// The conversation an `auto` request continues ([`sticky::session_key`]) and whether the
/// client named it in a header ([`sticky::client_name`]), when the policy has sticky routes
/// (its pin is looked up by it) or keeps a request log (`replay` follows a sticky policy's pins by it, whatever
/// the policy that served the traffic).
fn conversation_of(
    gateway: &Gateway,
    headers: &HeaderMap,
    req: &ChatRequest,
    feats: &Features,
    responses: bool,
) -> Option<(String, bool)> {
    let wanted = gateway.policy.uses_sticky() || gateway.recorder.is_some();
    if !wanted || feats.requested_model != policy::AUTO {
        return None;
    }
    let name = sticky::client_name(headers, responses);
    let key = sticky::session_key(
        name.as_deref(),
        feats.tenant.as_deref(),
        req,
        &gateway.harness,
    )?;
    Some((key, name.is_some()))
}

/// Looks up the pin of conversation `key` when the policy has sticky routes, and puts it into
/// the features; returns whether the store answered (`None`: no lookup). A store that does
/// not answer in time leaves the request unpinned
/// (`switchyard_sticky_total{outcome="unavailable"}`).
async fn pinned(gateway: &Gateway, key: Option<&str>, feats: &mut Features) -> Option<bool> {
    if !gateway.policy.uses_sticky() {
        return None;
    }
    let store = gateway.ledger.state.as_ref()?;
    match sticky::lookup(store.as_ref(), key?).await {
        Ok(pin) => {
            feats.pinned = pin;
            Some(true)
        }
        Err(e) => {
            gateway.ledger.metrics.sticky("unavailable");
            tracing::debug!("sticky conversation lookup failed: {e}");
            Some(false)
        }
    }
}

/// The model a sticky turn leaves its conversation pinned to: the one that answered, except
/// when a pinned model failed (an error, an open circuit, an unavailable store) and a fallback
/// answered for it: one failed turn does not move the conversation (and its provider's prompt
/// cache) off its model. A capability the pinned model lacks, or a budget that refuses it,
/// moves the pin (docs/policies.md, "Sticky conversations").
fn pin_after<'p>(decision: &Decision<'p>, answer: &dispatch::Answer<'p>) -> &'p str {
    match answer.fallback {
        Some((_, why)) if decision.pinned && decision.skipped.is_none() => {
            if why == "budget_exhausted" {
                answer.model
            } else {
                decision.model
            }
        }
        _ => answer.model,
    }
}

/// Pins the conversation `key` to the model that answered it (or refreshes its pin), before
/// the answer goes out so that the next turn finds it; one store call, bounded by the store's
/// timeout. A store that does not answer leaves the conversation as it was.
async fn keep_pin(gateway: &Gateway, key: &str, model: &str, rule: &str) {
    let Some(store) = gateway.ledger.state.as_ref() else {
        return;
    };
    let ttl = gateway.policy.sticky_ttl;
    if let Err(e) = sticky::pin(store.as_ref(), key, model, rule, ttl).await {
        gateway.ledger.metrics.sticky("unavailable");
        tracing::debug!("sticky conversation pin failed: {e}");
    }
}

/// Runs the classifier when its outputs could change the decision and puts them into the
/// features; returns the `x-switchyard-classifier` header value. A classifier failure is
/// counted and logged, and the request is routed as if no classifier condition matched.
async fn classify(
    gateway: &Gateway,
    req: &ChatRequest,
    feats: &mut Features,
    request_id: Option<&str>,
) -> Option<String> {
    let batcher = gateway.classifier.as_ref()?;
    if !policy::needs_classifier(&gateway.policy, feats) {
        return None;
    }
    let text = classifier::input::text_of(&req.messages(), &gateway.harness);
    let started = Instant::now();
    match batcher.classify(text).await {
        Ok(c) => {
            let m = &gateway.ledger.metrics;
            m.classified(started.elapsed(), f64::from(c.strong_score), c.truncated);
            feats.classifier = Some(c.output());
            Some(c.header())
        }
        Err(e) => {
            gateway.ledger.metrics.classifier_failed();
            let request_id = request_id.unwrap_or_default();
            tracing::warn!(request_id, "request classifier failed: {e}");
            None
        }
    }
}

/// Whether [`read`] gave up on the body before its end with this error: a body it does not
/// take, over the limit, or too slow. (A body that does not parse was read whole.)
pub(super) fn stops_reading(e: &ApiError) -> bool {
    matches!(
        e,
        ApiError::UnsupportedMediaType(_)
            | ApiError::PayloadTooLarge { .. }
            | ApiError::RequestTimeout(_)
    )
}

/// Reads the body: JSON content type, size limit, time limit.
pub(super) async fn read(
    gateway: &Gateway,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Bytes, ApiError> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    match content_type.as_deref() {
        Some(ct)
            if ct
                .split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")) => {}
        Some(ct) => {
            return Err(ApiError::UnsupportedMediaType(
                ct.chars().take(100).collect(),
            ))
        }
        None => return Err(ApiError::UnsupportedMediaType("none".into())),
    }
    let limit = gateway.policy.limits.max_body_bytes;
    let wait = gateway.policy.limits.body_timeout;
    let collected = match tokio::time::timeout(wait, Limited::new(body, limit).collect()).await {
        Ok(c) => c,
        Err(_) => {
            gateway.ledger.metrics.client_timeout("body");
            return Err(ApiError::RequestTimeout(format!(
                "the request body did not arrive within {} s",
                wait.as_secs_f64()
            )));
        }
    };
    let bytes: Bytes = match collected {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(ApiError::PayloadTooLarge { limit })
        }
        Err(e) => {
            return Err(ApiError::bad_request(
                format!("could not read the request body: {e}"),
                None,
            ))
        }
    };
    Ok(bytes)
}
