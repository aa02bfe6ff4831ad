//! Request ids: every request gets one, at the top of the tower stack. It is the client's own
//! `x-request-id` when that is sane (1 to 128 bytes of visible ASCII), else one the gateway
//! makes (`req_` and 32 hex digits, 128 random bits). It goes back on every response, errors
//! included, is forwarded upstream with the model's `forward_headers` (where `x-request-id` is by
//! default), names the request in its warning log lines (`request_id=...`; at debug level, every
//! line of the request, in a `request{id=...}` span), and is written to the request log.

use super::respond::Body;
use http::{HeaderName, HeaderValue, Request, Response};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower::{Layer, Service};
use tracing::Instrument;

/// The request id header, in requests and responses.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client request id kept.
const MAX_LEN: usize = 128;

/// Whether a client's request id can be kept: 1 to [`MAX_LEN`] bytes, each visible ASCII
/// (`!` to `~`).
pub fn is_sane(id: &HeaderValue) -> bool {
    let b = id.as_bytes();
    !b.is_empty() && b.len() <= MAX_LEN && b.iter().all(|c| (0x21..=0x7e).contains(c))
}

/// A new request id: `req_` and 32 lowercase hex digits.
pub fn generate() -> HeaderValue {
    let mut id = *b"req_00000000000000000000000000000000";
    let random = fastrand::u128(..).to_le_bytes();
    if hex::encode_to_slice(random, &mut id[4..]).is_err() {
        return HeaderValue::from_static("req_unknown");
    }
    HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("req_unknown"))
}

/// The id of a request: the client's when sane, else a new one.
fn id_of(req: &Request<Incoming>) -> HeaderValue {
    match req.headers().get(REQUEST_ID) {
        Some(v) if is_sane(v) => v.clone(),
        _ => generate(),
    }
}

/// Gives every request its id (see the module documentation).
#[derive(Clone, Copy, Default)]
pub struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestIdService<S>;
    fn layer(&self, inner: S) -> RequestIdService<S> {
        RequestIdService { inner }
    }
}

/// See [`RequestIdLayer`].
#[derive(Clone)]
pub struct RequestIdService<S> {
    inner: S,
}

impl<S> Service<Request<Incoming>> for RequestIdService<S>
where
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Incoming>) -> Self::Future {
        let id = id_of(&req);
        req.headers_mut().insert(REQUEST_ID, id.clone());
        // At debug level every line of the request carries its id. The span costs about a tenth
        // of the gateway's own work per request when enabled, so it is not at info level: the
        // request's warnings name the id themselves (`request_id=...`).
        let span = tracing::debug_span!("request", id = %id.to_str().unwrap_or_default());
        let answer = self.inner.call(req).instrument(span);
        Box::pin(async move {
            let mut resp = answer.await?;
            resp.headers_mut().insert(REQUEST_ID, id);
            Ok(resp)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_visible_ascii_ids_are_kept() {
        for ok in ["abc", "req-1_2.3:4/5", &"x".repeat(MAX_LEN)] {
            assert!(is_sane(&HeaderValue::from_str(ok).unwrap()), "{ok}");
        }
        for bad in ["", "a b", &"x".repeat(MAX_LEN + 1), "tab\there"] {
            assert!(!is_sane(&HeaderValue::from_str(bad).unwrap()), "{bad:?}");
        }
        assert!(!is_sane(&HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap()));
    }

    #[test]
    fn generated_ids_are_sane_and_differ() {
        let (a, b) = (generate(), generate());
        assert!(is_sane(&a) && a != b);
        let s = a.to_str().unwrap();
        assert!(s.starts_with("req_") && s.len() == 36, "{s}");
        assert!(s[4..].bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
