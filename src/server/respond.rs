//! Building responses: JSON, Prometheus text and OpenAI-shaped errors.

use crate::api::ApiError;
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use std::convert::Infallible;

/// The response body type of every route.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A body of fixed bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

/// A response with a body and content type.
pub fn with_body(
    status: StatusCode,
    content_type: &'static str,
    bytes: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(full(bytes));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    with_body(status, "application/json", value.to_string())
}

/// The response of an error.
pub fn error(e: &ApiError) -> Response<Body> {
    let mut r = with_body(e.status(), "application/json", e.body());
    for (name, value) in e.headers() {
        r.headers_mut().insert(name, value);
    }
    r
}
