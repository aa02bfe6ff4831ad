//! Routing of paths and methods, and the small endpoints (health, readiness, metrics; the
//! models endpoints are in [`super::models`]).

use super::dialects::{self, Dialect};
use super::respond::{self, Body};
use super::{chat, models, Caller, Gateway};
use crate::api::ApiError;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use std::sync::Arc;

/// Answers one request; `draining`: shutdown has begun.
pub async fn handle(
    gateway: Arc<Gateway>,
    req: Request<Incoming>,
    draining: bool,
) -> Response<Body> {
    let path = req.uri().path();
    let model_id = path.strip_prefix("/v1/models/").filter(|id| !id.is_empty());
    // What the Responses API serves of a stored response (retrieve, delete, cancel, input
    // items) is under its id: the gateway stores none.
    let response_id = path
        .strip_prefix("/v1/responses/")
        .and_then(|rest| rest.split('/').next())
        .filter(|id| !id.is_empty());
    let allow = match path {
        "/v1/chat/completions"
        | "/v1/completions"
        | "/v1/messages"
        | "/v1/messages/count_tokens"
        | "/v1/responses"
        | "/v1/responses/compact"
        | "/v1/responses/input_tokens"
        | "/v1/embeddings" => "POST",
        "/v1/models" | "/v1/switchyard/budget" | "/healthz" | "/readyz" | "/metrics" => "GET, HEAD",
        _ if model_id.is_some() => "GET, HEAD",
        _ => {
            let e = match response_id {
                Some(id) => ApiError::ResponseNotStored(id.chars().take(64).collect()),
                None => ApiError::NoRoute {
                    method: req.method().to_string(),
                    path: path.to_string(),
                },
            };
            return respond::refusal(&e, &req);
        }
    };
    let method = req.method();
    let allowed = match allow {
        "POST" => method == Method::POST,
        _ => method == Method::GET || method == Method::HEAD,
    };
    if !allowed {
        let e = ApiError::MethodNotAllowed {
            method: method.to_string(),
            path: path.to_string(),
            allow,
        };
        return respond::refusal(&e, &req);
    }
    if let Some(id) = model_id {
        return models::one(&gateway, req.headers(), id);
    }
    match path {
        "/healthz" => respond::json(StatusCode::OK, &json!({"status": "ok"})),
        "/readyz" => readyz(&gateway, draining).await,
        "/metrics" => {
            gateway.model_states();
            gateway.ledger.publish_state().await;
            respond::with_body(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                gateway.metrics().render(),
            )
        }
        "/v1/models" => models::list(&gateway, req.headers(), req.uri().query()),
        "/v1/switchyard/budget" => budget(&gateway, &req).await,
        "/v1/messages" => dialects::handle(gateway, req, Dialect::Anthropic, false).await,
        "/v1/messages/count_tokens" => {
            dialects::handle(gateway, req, Dialect::Anthropic, true).await
        }
        "/v1/responses" => dialects::handle(gateway, req, Dialect::Responses, false).await,
        "/v1/responses/compact" => dialects::handle(gateway, req, Dialect::Compaction, false).await,
        "/v1/responses/input_tokens" => {
            dialects::handle(gateway, req, Dialect::Responses, true).await
        }
        "/v1/completions" => dialects::handle(gateway, req, Dialect::Completions, false).await,
        "/v1/embeddings" => dialects::handle(gateway, req, Dialect::Embeddings, false).await,
        _ => chat::handle(gateway, req).await,
    }
}

/// Readiness, with each model's availability and the state store's (read now, bounded by
/// `state.timeout_ms`; it never makes the gateway not ready).
async fn readyz(gateway: &Gateway, draining: bool) -> Response<Body> {
    let models: serde_json::Map<String, serde_json::Value> = gateway
        .model_states()
        .into_iter()
        .map(|(name, state)| {
            let v = match state {
                Ok(()) => json!({"available": true}),
                Err(reason) => json!({"available": false, "reason": reason}),
            };
            (name, v)
        })
        .collect();
    let (status, word) = if draining {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else if gateway.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
    };
    let mut body = json!({"status": word, "models": models});
    // The budget and rate-limit store, as its last call found it: shown, never a reason to be
    // not ready (the policy's `state.on_unavailable` says what requests do without it).
    if let Some(store) = &gateway.ledger.state {
        gateway.ledger.publish_state().await;
        let h = store.health();
        body["state"] = match h.error {
            None => json!({"backend": h.backend, "available": true}),
            Some(e) => json!({"backend": h.backend, "available": false, "reason": e}),
        };
    }
    respond::json(status, &body)
}

/// The caller's own budgets: a tenant sees its limits only (not other tenants', nor the
/// gateway-wide one); the anonymous caller of an open gateway sees the gateway-wide ones.
///
/// Errors: 503 `state_unavailable` when the state store does not answer in time.
async fn budget(gateway: &Gateway, req: &Request<Incoming>) -> Response<Body> {
    let caller = req.extensions().get::<Caller>();
    let tenant = caller.and_then(|c| c.tenant.clone());
    let own = tenant
        .clone()
        .unwrap_or_else(|| crate::accounting::budget::GLOBAL.to_string());
    let left = match &gateway.ledger.state {
        None => vec![],
        Some(store) => match store.remaining().await {
            Ok(left) => left,
            Err(e) => {
                gateway.metrics().state_unavailable("read", "reject");
                return respond::error(&ApiError::StateUnavailable(e.to_string()));
            }
        },
    };
    let budgets: Vec<serde_json::Value> = left
        .into_iter()
        .filter(|r| r.tenant == own)
        .map(|r| json!({"period": r.period.label(), "remaining_usd": r.usd}))
        .collect();
    respond::json(
        StatusCode::OK,
        &json!({"object": "budget", "tenant": tenant, "budgets": budgets}),
    )
}
