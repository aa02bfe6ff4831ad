//! Every error a client can see, mapped to its HTTP status and OpenAI error body in one place.

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use serde_json::json;

/// The OpenAI `error.type` families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    Authentication,
    NotFound,
    RateLimit,
    Server,
}

impl ErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request_error",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::NotFound => "not_found_error",
            ErrorKind::RateLimit => "rate_limit_error",
            ErrorKind::Server => "server_error",
        }
    }
}

/// An error answered to a client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or asks for something invalid (400).
    #[error("{message}")]
    BadRequest {
        message: String,
        param: Option<String>,
        code: Option<&'static str>,
    },
    /// Missing or wrong gateway key (401).
    #[error("invalid gateway API key: send `Authorization: Bearer <key>` with a key known to this gateway")]
    Unauthorized,
    /// No such route (404).
    #[error("no route for {method} {path}")]
    NoRoute { method: String, path: String },
    /// A stored response was asked for (`GET`, `DELETE`, `/cancel` or `/input_items` under
    /// `/v1/responses/{id}`), and the gateway stores none (404).
    #[error("no response `{0}` here: the gateway keeps no responses (it refuses `store: true` and `previous_response_id`), so it has none to retrieve, list, cancel or delete; send the whole conversation in `input`")]
    ResponseNotStored(String),
    /// The requested model does not exist (404).
    #[error("{0}")]
    ModelNotFound(String),
    /// The path exists but not with this method (405).
    #[error("method {method} is not allowed on {path} (allowed: {allow})")]
    MethodNotAllowed {
        method: String,
        path: String,
        allow: &'static str,
    },
    /// The body is over the configured limit (413).
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// Not `application/json` (415).
    #[error("unsupported content type `{0}`: send `Content-Type: application/json`")]
    UnsupportedMediaType(String),
    /// The upstream answered with an error status once retries and fallbacks were used up.
    /// The client gets `status` (the upstream's, or 502 for a 500, 501 or an unknown 5xx:
    /// [`client_status`]), the upstream's (redacted) body when it is an OpenAI error object
    /// (else `message` in that shape), its `Retry-After`, and `x-switchyard-upstream-status`.
    #[error("{message}")]
    Upstream {
        status: StatusCode,
        upstream: StatusCode,
        body: Bytes,
        retry_after: Option<HeaderValue>,
        /// Upstream response headers passed back (the model's `response_headers`, and
        /// `x-switchyard-upstream-request-id`).
        headers: Box<http::HeaderMap>,
        message: String,
    },
    /// The upstream refused this gateway's provider credentials (its 401 or 403): not the
    /// client's fault, so 502, with `x-switchyard-upstream-status`.
    #[error("{message}")]
    ProviderRejected {
        message: String,
        upstream: StatusCode,
    },
    /// The upstream failed, was unreachable or spoke nonsense (502).
    #[error("{0}")]
    BadGateway(String),
    /// The upstream did not answer in time (504).
    #[error("{0}")]
    GatewayTimeout(String),
    /// No model of the route can serve right now (503).
    #[error("{0}")]
    Unavailable(String),
    /// The model's circuit breaker is open (503 `model_unavailable` + `Retry-After` until its
    /// next trial call).
    #[error("{message}")]
    CircuitOpen {
        message: String,
        retry_after_secs: u64,
    },
    /// The model is busy; the client should retry after `retry_after_secs` (503 + `Retry-After`).
    #[error("{message}")]
    Overloaded {
        message: String,
        retry_after_secs: u64,
    },
    /// A spending budget is used up (429 `budget_exceeded`, `Retry-After` until the period ends).
    #[error("{message}")]
    BudgetExhausted {
        message: String,
        retry_after_secs: u64,
    },
    /// The budget and rate-limit store did not answer in time and the policy refuses cloud
    /// calls then (`state.on_unavailable: reject`): 503 `state_unavailable` + `Retry-After: 1`.
    #[error("{0}")]
    StateUnavailable(String),
    /// A tenant's rate limit refused the request (429 `rate_limit_exceeded` + `Retry-After`).
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after_secs: u64,
    },
    /// The request headers are over the configured limit (431).
    #[error("request headers are larger than the limit of {limit} bytes")]
    HeadersTooLarge { limit: usize },
    /// The client took too long to send its request (408).
    #[error("{0}")]
    RequestTimeout(String),
    /// The gateway has as many connections open as it allows (503 + `Retry-After`).
    #[error("the gateway is at its connection limit ({limit} open); retry later")]
    TooManyConnections { limit: usize },
    /// A bug: never expected, never with details (500).
    #[error("internal error")]
    Internal,
}

impl ApiError {
    /// A 400 with a message and the offending parameter.
    pub fn bad_request(message: impl Into<String>, param: Option<&str>) -> ApiError {
        ApiError::BadRequest {
            message: message.into(),
            param: param.map(str::to_string),
            code: None,
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NoRoute { .. }
            | ApiError::ResponseNotStored(_)
            | ApiError::ModelNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Upstream { status, .. } => *status,
            ApiError::BadGateway(_) | ApiError::ProviderRejected { .. } => StatusCode::BAD_GATEWAY,
            ApiError::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Unavailable(_)
            | ApiError::Overloaded { .. }
            | ApiError::CircuitOpen { .. }
            | ApiError::StateUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BudgetExhausted { .. } | ApiError::RateLimited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::TooManyConnections { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind_and_code(&self) -> (ErrorKind, Option<&'static str>) {
        match self {
            ApiError::BadRequest { code, .. } => (ErrorKind::InvalidRequest, *code),
            ApiError::Unauthorized => (ErrorKind::Authentication, Some("invalid_api_key")),
            ApiError::NoRoute { .. } | ApiError::ResponseNotStored(_) => {
                (ErrorKind::NotFound, Some("not_found"))
            }
            ApiError::ModelNotFound(_) => (ErrorKind::InvalidRequest, Some("model_not_found")),
            ApiError::MethodNotAllowed { .. } => {
                (ErrorKind::InvalidRequest, Some("method_not_allowed"))
            }
            ApiError::PayloadTooLarge { .. } => {
                (ErrorKind::InvalidRequest, Some("request_too_large"))
            }
            ApiError::UnsupportedMediaType(_) => {
                (ErrorKind::InvalidRequest, Some("unsupported_media_type"))
            }
            ApiError::Upstream { status, .. } if status.as_u16() == 429 => {
                (ErrorKind::RateLimit, Some("upstream_rate_limited"))
            }
            ApiError::Upstream { status, .. } if status.is_server_error() => {
                (ErrorKind::Server, Some("upstream_error"))
            }
            ApiError::Upstream { .. } => (ErrorKind::InvalidRequest, Some("upstream_error")),
            ApiError::BadGateway(_) | ApiError::ProviderRejected { .. } => {
                (ErrorKind::Server, Some("upstream_error"))
            }
            ApiError::GatewayTimeout(_) => (ErrorKind::Server, Some("upstream_timeout")),
            ApiError::Unavailable(_) | ApiError::CircuitOpen { .. } => {
                (ErrorKind::Server, Some("model_unavailable"))
            }
            ApiError::Overloaded { .. } => (ErrorKind::Server, Some("model_overloaded")),
            ApiError::StateUnavailable(_) => (ErrorKind::Server, Some("state_unavailable")),
            ApiError::BudgetExhausted { .. } => (ErrorKind::RateLimit, Some("budget_exceeded")),
            ApiError::RateLimited { .. } => (ErrorKind::RateLimit, Some("rate_limit_exceeded")),
            ApiError::HeadersTooLarge { .. } => {
                (ErrorKind::InvalidRequest, Some("request_headers_too_large"))
            }
            ApiError::RequestTimeout(_) => (ErrorKind::InvalidRequest, Some("request_timeout")),
            ApiError::TooManyConnections { .. } => {
                (ErrorKind::Server, Some("too_many_connections"))
            }
            ApiError::Internal => (ErrorKind::Server, Some("internal_error")),
        }
    }

    /// The OpenAI error object `{"error": {...}}` as JSON.
    pub fn body_json(&self) -> serde_json::Value {
        let (kind, code) = self.kind_and_code();
        let param = match self {
            ApiError::BadRequest { param, .. } => param.clone(),
            ApiError::ModelNotFound(_) => Some("model".to_string()),
            _ => None,
        };
        json!({"error": {"message": self.to_string(), "type": kind.as_str(), "param": param, "code": code}})
    }

    /// This error with a `Retry-After` of at least `wait` (for an upstream's error: the longer of
    /// its own and `wait`). Errors that carry no `Retry-After` are returned as they are.
    pub fn retry_after_at_least(mut self, wait: std::time::Duration) -> ApiError {
        let secs = retry_after_secs(wait);
        if let ApiError::Upstream {
            status,
            retry_after,
            ..
        } = &mut self
        {
            let now = std::time::SystemTime::now();
            let own = retry_after.as_ref().and_then(|v| parse_retry_after(v, now));
            let shorter = own.is_none_or(|d| retry_after_secs(d) < secs);
            if shorter && (status.is_server_error() || status.as_u16() == 429) {
                *retry_after = Some(HeaderValue::from(secs));
            }
        }
        self
    }

    /// The response body: the upstream's own body for passed-through errors, else ours.
    pub fn body(&self) -> Bytes {
        match self {
            ApiError::Upstream { body, .. } if is_openai_error(body) => body.clone(),
            _ => Bytes::from(self.body_json().to_string()),
        }
    }

    /// Extra headers this error needs (`Allow`, `Retry-After`, `x-switchyard-upstream-status`).
    pub fn headers(&self) -> Vec<(http::header::HeaderName, HeaderValue)> {
        match self {
            ApiError::MethodNotAllowed { allow, .. } => {
                vec![(http::header::ALLOW, HeaderValue::from_static(allow))]
            }
            ApiError::Upstream {
                upstream,
                retry_after,
                headers,
                ..
            } => {
                let mut h: Vec<_> = headers
                    .iter()
                    .map(|(n, v)| (n.clone(), v.clone()))
                    .collect();
                h.push((UPSTREAM_STATUS, HeaderValue::from(upstream.as_u16())));
                if let Some(v) = retry_after {
                    h.push((http::header::RETRY_AFTER, v.clone()));
                }
                h
            }
            ApiError::ProviderRejected { upstream, .. } => {
                vec![(UPSTREAM_STATUS, HeaderValue::from(upstream.as_u16()))]
            }
            ApiError::Overloaded {
                retry_after_secs, ..
            }
            | ApiError::BudgetExhausted {
                retry_after_secs, ..
            }
            | ApiError::RateLimited {
                retry_after_secs, ..
            }
            | ApiError::CircuitOpen {
                retry_after_secs, ..
            } => vec![(
                http::header::RETRY_AFTER,
                HeaderValue::from(*retry_after_secs),
            )],
            ApiError::TooManyConnections { .. } | ApiError::StateUnavailable(_) => {
                vec![(http::header::RETRY_AFTER, HeaderValue::from_static("1"))]
            }
            _ => vec![],
        }
    }
}

/// The response header with the upstream's own status, on errors that come from one.
pub const UPSTREAM_STATUS: http::header::HeaderName =
    http::header::HeaderName::from_static("x-switchyard-upstream-status");

/// The status a client gets for an upstream's error status: a 4xx as it is; 502, 503 and 504 as
/// they are (bad gateway, unavailable and timeout mean the same one hop further); Anthropic's
/// 529 (overloaded) as 503; any other 5xx (500, 501, ...) becomes 502, the gateway's word for
/// "the upstream failed".
pub fn client_status(upstream: StatusCode) -> StatusCode {
    match upstream.as_u16() {
        400..=499 | 502..=504 => upstream,
        529 => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// Reads a `Retry-After` value (RFC 9110, section 10.2.3): a delay in seconds, or an HTTP date
/// (then the time from `now` until it, zero when it has passed). `None` when it is neither.
pub fn parse_retry_after(
    v: &HeaderValue,
    now: std::time::SystemTime,
) -> Option<std::time::Duration> {
    let s = v.to_str().ok()?.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Some(std::time::Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(s).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// Whole seconds for a `Retry-After` header (rounded up, at least 1).
pub fn retry_after_secs(wait: std::time::Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// Whether a body already is an OpenAI-shaped error object.
fn is_openai_error(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Shape {
        #[allow(dead_code)]
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        #[allow(dead_code)]
        message: String,
    }
    serde_json::from_slice::<Shape>(body).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_statuses_keep_their_class() {
        for (upstream, client) in [
            (400, 400),
            (404, 404),
            (422, 422),
            (429, 429),
            (500, 502),
            (501, 502),
            (502, 502),
            (503, 503),
            (504, 504),
            (507, 502),
        ] {
            let s = StatusCode::from_u16(upstream).unwrap();
            assert_eq!(client_status(s).as_u16(), client, "{upstream}");
        }
    }

    #[test]
    fn errors_have_openai_shape() {
        let e = ApiError::bad_request("messages must not be empty", Some("messages"));
        let v = e.body_json();
        assert_eq!(e.status(), 400);
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "messages");
        assert_eq!(
            ApiError::ModelNotFound("x".into()).body_json()["error"]["code"],
            "model_not_found"
        );
    }

    #[test]
    fn upstream_body_passes_through_only_when_openai_shaped() {
        let shaped =
            Bytes::from_static(br#"{"error":{"message":"bad","type":"invalid_request_error"}}"#);
        let upstream = |body: Bytes| ApiError::Upstream {
            status: StatusCode::BAD_REQUEST,
            upstream: StatusCode::BAD_REQUEST,
            body,
            retry_after: None,
            headers: Box::default(),
            message: "model `m`: the upstream answered with status 400".into(),
        };
        assert_eq!(upstream(shaped.clone()).body(), shaped);
        let ours = upstream(Bytes::from_static(b"<html>")).body();
        let v: serde_json::Value = serde_json::from_slice(&ours).unwrap();
        assert_eq!(
            v["error"]["message"],
            "model `m`: the upstream answered with status 400"
        );
    }
}
