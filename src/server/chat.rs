//! `POST /v1/chat/completions`: parse -> features -> policy decision -> engine (with
//! fallbacks) -> response or stream, with accounting on the way back.

use super::admission;
use super::respond::{self, Body};
use super::stream::{self, StreamAccount};
use super::{Caller, Gateway};
use crate::accounting;
use crate::accounting::budget::Ticket;
use crate::accounting::rate_limit::TokenTicket;
use crate::accounting::recorder::Entry;
use crate::api::{ApiError, ChatRequest};
use crate::classifier;
use crate::engines::{EngineError, EngineRequest};
use crate::features;
use crate::policy::{self, DecideError, Decision, OnExhausted};
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// The header that carries request tags for policies.
pub const TAGS_HEADER: &str = "x-switchyard-tags";
/// The response header with the classifier's outputs: `category;p=0.91;strong=0.42`.
pub const CLASSIFIER_HEADER: &str = "x-switchyard-classifier";
/// The response header set when a fallback answered: `<model that failed>; reason=<kind>`.
pub const FALLBACK_HEADER: &str = "x-switchyard-fallback";

/// Route label of a model (`local` or `cloud`).
pub fn route_of(gateway: &Gateway, model: &str) -> &'static str {
    gateway.policy.route_of(model)
}

/// What a request's response headers say about its routing.
pub struct Routing<'a> {
    pub route: &'static str,
    pub model: &'a str,
    pub rule: &'a str,
    pub cost_usd: f64,
}

const ROUTE_HEADER: HeaderName = HeaderName::from_static("x-switchyard-route");
const MODEL_HEADER: HeaderName = HeaderName::from_static("x-switchyard-model");
const RULE_HEADER: HeaderName = HeaderName::from_static("x-switchyard-rule");
const COST_HEADER: HeaderName = HeaderName::from_static("x-switchyard-cost-usd");

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
    let started = Instant::now();
    let caller = req
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or(Caller { tenant: None });
    let (parts, body) = req.into_parts();
    let parsed = match read(&gateway, &parts.headers, body).await {
        Ok(r) => r,
        Err(e) => return fail(&gateway, started, None, &e),
    };
    if let Err(e) = admission::check_limits(&gateway.policy.limits, &parsed) {
        return fail(&gateway, started, None, &e);
    }
    let tags = parts.headers.get(TAGS_HEADER).and_then(|v| v.to_str().ok());
    let mut feats = features::extract(&parsed, caller.tenant.as_deref(), tags);
    let tokens = match admission::admit(&gateway, &caller, feats.prompt_tokens) {
        Ok(t) => t,
        Err(e) => return fail(&gateway, started, None, &e),
    };
    let classified = classify(&gateway, &parsed, &mut feats).await;
    let decision = match policy::decide(&gateway.policy, &feats) {
        Ok(d) => d,
        Err(e @ DecideError::ModelNotFound(_)) => {
            return fail(
                &gateway,
                started,
                None,
                &ApiError::ModelNotFound(e.to_string()),
            )
        }
        Err(e @ DecideError::NoLocalModel) => {
            return fail(
                &gateway,
                started,
                None,
                &ApiError::ModelNotFound(e.to_string()),
            )
        }
    };
    if let Some(rec) = &gateway.recorder {
        rec.record(&Entry {
            body: &parsed.body(),
            tags: &feats.tags,
            tenant: caller.tenant.as_deref(),
            route: route_of(&gateway, decision.model),
            model: decision.model,
            rule: decision.rule,
            prompt_tokens: feats.prompt_tokens,
        });
    }
    let mut resp = run(
        &gateway,
        Call {
            started,
            caller,
            req: parsed,
            headers: parts.headers,
            prompt_estimate: feats.prompt_tokens,
            tokens,
        },
        decision,
    )
    .await;
    if let Some(v) = classified.and_then(|h| HeaderValue::from_str(&h).ok()) {
        resp.headers_mut().insert(CLASSIFIER_HEADER, v);
    }
    resp
}

/// One request on its way to an engine.
struct Call {
    started: Instant,
    caller: Caller,
    req: ChatRequest,
    headers: HeaderMap,
    prompt_estimate: u64,
    /// Its tokens taken from the caller's rate limit, settled when the answer ends.
    tokens: Option<TokenTicket>,
}

/// Runs the classifier when its outputs could change the decision and puts them into the
/// features; returns the `x-switchyard-classifier` header value. A classifier failure is
/// counted and logged, and the request is routed as if no classifier condition matched.
async fn classify(
    gateway: &Gateway,
    req: &ChatRequest,
    feats: &mut features::Features,
) -> Option<String> {
    let batcher = gateway.classifier.as_ref()?;
    if !policy::needs_classifier(&gateway.policy, feats) {
        return None;
    }
    let text = classifier::input::text_of(&req.messages()).to_string();
    let m = &gateway.metrics.classifier;
    let started = Instant::now();
    match batcher.classify(text).await {
        Ok(c) => {
            m.duration.observe(started.elapsed().as_secs_f64());
            m.strong_score.observe(f64::from(c.strong_score));
            if c.truncated {
                m.truncated.inc();
            }
            feats.classifier = Some(c.output());
            Some(c.header())
        }
        Err(e) => {
            m.errors.inc();
            tracing::warn!("request classifier failed: {e}");
            None
        }
    }
}

/// Reads and parses the body: JSON content type, size limit, valid request.
async fn read(
    gateway: &Gateway,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<ChatRequest, ApiError> {
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
            gateway
                .metrics
                .client_timeouts
                .with_label_values(&["body"])
                .inc();
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
    ChatRequest::parse(&bytes)
}

/// Records a request that failed before any model was tried.
fn fail(
    gateway: &Gateway,
    started: Instant,
    routing: Option<&Routing>,
    e: &ApiError,
) -> Response<Body> {
    let status = e.status();
    let (route, model, rule) = routing
        .map(|r| (r.route, r.model, r.rule))
        .unwrap_or(("none", "none", "none"));
    gateway
        .metrics
        .requests
        .with_label_values(&[route, model, rule, status.as_str()])
        .inc();
    gateway
        .metrics
        .request_duration
        .with_label_values(&[route])
        .observe(started.elapsed().as_secs_f64());
    let mut resp = respond::error(e);
    if let Some(r) = routing {
        r.apply(resp.headers_mut());
    }
    resp
}

/// Tries the decision's model, then its fallbacks, and answers with the first that works.
async fn run(gateway: &Arc<Gateway>, call: Call, decision: Decision<'_>) -> Response<Body> {
    let Call {
        started,
        caller,
        req,
        headers,
        prompt_estimate,
        mut tokens,
    } = call;
    let Decision {
        model,
        fallbacks,
        rule,
    } = decision;
    let mut candidates: Vec<&str> = std::iter::once(model)
        .chain(fallbacks.iter().map(String::as_str))
        .collect();
    // With `on_exhausted: local`, the box answers what a used-up budget refuses, even when the
    // route does not list it; it is tried only after such a refusal.
    let routed = candidates.len();
    let budget_local = gateway
        .policy
        .budgets
        .as_ref()
        .filter(|b| b.on_exhausted == OnExhausted::Local)
        .and(gateway.policy.local_model.as_deref())
        .filter(|l| !candidates.contains(l));
    candidates.extend(budget_local);
    let mut refused_by_budget = false;
    // Why each model a budget refused could not serve (others are asked for their availability).
    let mut budget_reasons: Vec<(&str, String)> = vec![];
    let mut engine_time = Duration::ZERO;
    let mut last: Option<(&str, EngineError)> = None;
    // The first model that could not answer, and why: said in `x-switchyard-fallback`.
    let mut first_failure: Option<(&str, &'static str)> = None;
    for (i, &model) in candidates.iter().enumerate() {
        if i >= routed && !refused_by_budget {
            break;
        }
        if let Some((from, _)) = &last {
            gateway
                .metrics
                .fallbacks
                .with_label_values(&[from, model])
                .inc();
        }
        let route = route_of(gateway, model);
        let engine = match gateway.engines.get(model) {
            Some(e) => e.clone(),
            None => {
                let reason = gateway.availability(model).err().unwrap_or_default();
                fail_over(
                    &mut first_failure,
                    &mut last,
                    model,
                    EngineError::Unavailable(reason),
                );
                continue;
            }
        };
        if let Err(reason) = engine.availability() {
            let e = match engine.circuit_retry_in() {
                Some(wait) => EngineError::circuit_open(wait),
                None => EngineError::Unavailable(reason),
            };
            fail_over(&mut first_failure, &mut last, model, e);
            continue;
        }
        let ticket = match admission::reserve(gateway, &caller, &req, model, prompt_estimate) {
            Ok(t) => t,
            Err(ex) => {
                let tenant = ex.tenant.clone();
                gateway
                    .metrics
                    .budget_exhausted
                    .with_label_values(&[&tenant])
                    .inc();
                let on = gateway.policy.budgets.as_ref().map(|b| b.on_exhausted);
                if on == Some(OnExhausted::Reject) {
                    let error = ApiError::BudgetExhausted {
                        message: ex.to_string(),
                        retry_after_secs: ex.period.seconds_left(SystemTime::now()),
                    };
                    let routing = Routing {
                        route,
                        model,
                        rule,
                        cost_usd: 0.0,
                    };
                    return fail(gateway, started, Some(&routing), &error);
                }
                refused_by_budget = true;
                budget_reasons.push((model, ex.to_string()));
                first_failure.get_or_insert((model, "budget_exhausted"));
                last = Some((model, EngineError::Unavailable(ex.to_string())));
                continue;
            }
        };
        let settle = |ticket: Option<Ticket>, cost: f64| {
            if let (Some(t), Some(b)) = (ticket, &gateway.budgets) {
                b.settle(t, cost);
                gateway.publish_budgets();
            }
        };
        let engine_started = Instant::now();
        let ereq = EngineRequest {
            request: &req,
            headers: &headers,
        };
        if req.stream {
            match engine.infer_stream(ereq).await {
                Ok(chunks) => {
                    engine_time += engine_started.elapsed();
                    let estimate = accounting::bill(
                        &gateway.policy,
                        model,
                        crate::engines::Usage {
                            prompt_tokens: prompt_estimate,
                            completion_tokens: 0,
                        },
                    );
                    let routing = Routing {
                        route,
                        model,
                        rule,
                        cost_usd: estimate.cost_usd,
                    };
                    let account = StreamAccount::new(
                        gateway.clone(),
                        started,
                        route,
                        model.to_string(),
                        rule.to_string(),
                        caller.label().to_string(),
                        prompt_estimate,
                    )
                    .with_budget(ticket)
                    .with_rate_tokens(tokens.take());
                    let mut resp = Response::new(stream::take_ready(stream::body(
                        chunks,
                        account,
                        req.include_usage,
                    )));
                    let h = resp.headers_mut();
                    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
                    h.insert(
                        http::header::CACHE_CONTROL,
                        HeaderValue::from_static("no-cache"),
                    );
                    routing.apply(h);
                    say_fallback(h, first_failure);
                    gateway
                        .metrics
                        .gateway_overhead
                        .observe(started.elapsed().saturating_sub(engine_time).as_secs_f64());
                    return resp;
                }
                Err(e) => {
                    settle(ticket, 0.0);
                    engine_time += engine_started.elapsed();
                    gateway
                        .metrics
                        .upstream_errors
                        .with_label_values(&[model, e.kind()])
                        .inc();
                    let retry = e.allows_fallback() && i + 1 < candidates.len();
                    fail_over(&mut first_failure, &mut last, model, e);
                    if !retry {
                        break;
                    }
                }
            }
        } else {
            match engine.infer(ereq).await {
                Ok(done) => {
                    engine_time += engine_started.elapsed();
                    let bill = accounting::settle(
                        &gateway.metrics,
                        &gateway.policy,
                        model,
                        caller.label(),
                        done.usage,
                    );
                    settle(ticket, bill.cost_usd);
                    if let Some(t) = tokens.take() {
                        t.settle(done.usage.prompt_tokens + done.usage.completion_tokens);
                    }
                    let routing = Routing {
                        route,
                        model,
                        rule,
                        cost_usd: bill.cost_usd,
                    };
                    let mut resp =
                        respond::with_body(StatusCode::OK, "application/json", done.body);
                    routing.apply(resp.headers_mut());
                    say_fallback(resp.headers_mut(), first_failure);
                    let m = &gateway.metrics;
                    let elapsed = started.elapsed();
                    m.requests
                        .with_label_values(&[route, model, rule, "200"])
                        .inc();
                    m.request_duration
                        .with_label_values(&[route])
                        .observe(elapsed.as_secs_f64());
                    m.ttft
                        .with_label_values(&[route])
                        .observe(elapsed.as_secs_f64());
                    m.gateway_overhead
                        .observe(elapsed.saturating_sub(engine_time).as_secs_f64());
                    return resp;
                }
                Err(e) => {
                    settle(ticket, 0.0);
                    engine_time += engine_started.elapsed();
                    gateway
                        .metrics
                        .upstream_errors
                        .with_label_values(&[model, e.kind()])
                        .inc();
                    let retry = e.allows_fallback() && i + 1 < candidates.len();
                    fail_over(&mut first_failure, &mut last, model, e);
                    if !retry {
                        break;
                    }
                }
            }
        }
    }
    gateway
        .metrics
        .gateway_overhead
        .observe(started.elapsed().saturating_sub(engine_time).as_secs_f64());
    let (model, error) = match last {
        Some((m, e)) => (m, e.to_api(m)),
        None => (candidates[0], ApiError::Internal),
    };
    let tried = if refused_by_budget {
        &candidates[..]
    } else {
        &candidates[..routed]
    };
    let error = match error {
        ApiError::Unavailable(_) if tried.len() > 1 => {
            let reasons: Vec<String> = tried
                .iter()
                .map(|m| {
                    let reason = budget_reasons
                        .iter()
                        .find(|(b, _)| b == m)
                        .map(|(_, r)| r.clone())
                        .or_else(|| gateway.availability(m).err())
                        .unwrap_or_else(|| "failed".into());
                    format!("{m}: {reason}")
                })
                .collect();
            ApiError::Unavailable(format!(
                "no model of the route can serve the request ({})",
                reasons.join("; ")
            ))
        }
        e => e,
    };
    let routing = Routing {
        route: route_of(gateway, model),
        model,
        rule,
        cost_usd: 0.0,
    };
    fail(gateway, started, Some(&routing), &error)
}

/// Notes a model's failure: the last error (what the client sees if nothing answers) and the
/// first (what `x-switchyard-fallback` names if a later model answers).
fn fail_over<'a>(
    first: &mut Option<(&'a str, &'static str)>,
    last: &mut Option<(&'a str, EngineError)>,
    model: &'a str,
    e: EngineError,
) {
    first.get_or_insert((model, e.kind()));
    *last = Some((model, e));
}

/// Sets `x-switchyard-fallback` when the answer comes from a fallback.
fn say_fallback(headers: &mut HeaderMap, first_failure: Option<(&str, &str)>) {
    if let Some((model, reason)) = first_failure {
        if let Ok(v) = HeaderValue::from_str(&format!("{model}; reason={reason}")) {
            headers.insert(FALLBACK_HEADER, v);
        }
    }
}
