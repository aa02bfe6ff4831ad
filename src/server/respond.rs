//! Building responses: JSON, Prometheus text and OpenAI-shaped errors.

use crate::api::ApiError;
use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE};
use http::{HeaderValue, Request, Response, StatusCode, Version};
use http_body::Body as _;
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

/// Makes `resp` the last response of its HTTP/1 connection (`Connection: close`). For a refusal
/// answered before the request's body was read to its end: the rest of the body cannot be
/// parsed as the next request, so the connection ends, and its lingering close
/// ([`super::linger`]) reads and discards what the client still sends, so that the client gets
/// to read the refusal. HTTP/2 needs neither (it ends the one stream).
pub fn close_after(resp: &mut Response<Body>, version: Version) {
    if matches!(
        version,
        Version::HTTP_09 | Version::HTTP_10 | Version::HTTP_11
    ) {
        resp.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
}

/// The response of an error answered before the request's body was read: when there is a
/// body, the connection ends after it ([`close_after`]).
pub fn refusal(e: &ApiError, req: &Request<hyper::body::Incoming>) -> Response<Body> {
    // In the client's dialect: Anthropic's error shape on its paths, and on the models paths
    // both SDKs share when the request is an Anthropic SDK's.
    let path = req.uri().path();
    let dialect = super::dialects::Dialect::of_path(path).or_else(|| {
        super::models::is_models_path(path)
            .then(|| super::models::dialect(req.headers()))
            .flatten()
    });
    let mut resp = match dialect {
        Some(d) => d.error(e),
        None => error(e),
    };
    if !req.body().is_end_stream() {
        close_after(&mut resp, req.version());
    }
    resp
}
