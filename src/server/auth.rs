//! Gateway keys: `Authorization: Bearer <key>` (or `x-api-key: <key>`) checked against the policy's tenants
//! (SHA-256 hashes, compared in constant time) before any other work is done, by the
//! [`AuthLayer`] at the top of the tower stack.

use super::respond::{self, Body};
use super::GatewayHandle;
use crate::api::ApiError;
use crate::policy::Tenant;
use http::{Request, Response};
use hyper::body::Incoming;
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use subtle::ConstantTimeEq;
use tower::{Layer, Service};

/// Who sent a request: the tenant of its gateway key, or nobody on an open gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub tenant: Option<String>,
}

impl Caller {
    /// The caller the auth layer recorded on `req` (no tenant when there is none).
    pub fn of<B>(req: &http::Request<B>) -> Caller {
        req.extensions()
            .get::<Caller>()
            .cloned()
            .unwrap_or(Caller { tenant: None })
    }
}

/// The key check of one policy.
#[derive(Debug, Clone)]
pub struct Auth {
    tenants: Vec<Tenant>,
}

impl Auth {
    pub fn new(tenants: Vec<Tenant>) -> Auth {
        Auth { tenants }
    }

    /// No keys configured: every caller is let in.
    pub fn is_open(&self) -> bool {
        self.tenants.is_empty()
    }

    /// Checks the `Authorization` header value (`Bearer <key>`).
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<Caller, ApiError> {
        self.check_key(authorization.and_then(bearer))
    }

    /// Checks a gateway key. Every tenant's hash is compared, match or not, so the time taken
    /// does not tell how close a wrong key was.
    pub fn check_key(&self, key: Option<&[u8]>) -> Result<Caller, ApiError> {
        if self.is_open() {
            return Ok(Caller { tenant: None });
        }
        let key = key.map(|k| k.trim_ascii()).unwrap_or(b"");
        let digest: [u8; 32] = Sha256::digest(key).into();
        let mut found: Option<&Tenant> = None;
        for t in &self.tenants {
            if bool::from(t.key_sha256.ct_eq(&digest)) {
                found = Some(t);
            }
        }
        match found {
            Some(t) if !key.is_empty() => Ok(Caller {
                tenant: Some(t.name.clone()),
            }),
            _ => Err(ApiError::Unauthorized),
        }
    }
}

/// The key of an `Authorization: Bearer <key>` value.
fn bearer(h: &[u8]) -> Option<&[u8]> {
    h.strip_prefix(b"Bearer ")
        .or_else(|| h.strip_prefix(b"bearer "))
}

/// Paths any caller may reach without a gateway key: probes and the metrics scrape.
fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// Checks the gateway key of every request but the [public](is_public) ones, before the body
/// is read, and puts the [`Caller`] in the request's extensions.
#[derive(Clone)]
pub struct AuthLayer {
    gateway: GatewayHandle,
}

impl AuthLayer {
    pub fn new(gateway: GatewayHandle) -> AuthLayer {
        AuthLayer { gateway }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            gateway: self.gateway.clone(),
            inner,
        }
    }
}

/// See [`AuthLayer`].
#[derive(Clone)]
pub struct AuthService<S> {
    gateway: GatewayHandle,
    inner: S,
}

impl<S> Service<Request<Incoming>> for AuthService<S>
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
        let gateway = self.gateway.current();
        let limit = gateway.policy.limits.max_header_bytes;
        if header_bytes(req.headers()) > limit {
            let resp = respond::refusal(&ApiError::HeadersTooLarge { limit }, &req);
            return Box::pin(async move { Ok(resp) });
        }
        if !is_public(req.uri().path()) {
            // `Authorization: Bearer <key>` (OpenAI's SDKs), else `x-api-key: <key>` (Anthropic's).
            let headers = req.headers();
            let key = headers
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes())
                .and_then(bearer)
                .or_else(|| headers.get("x-api-key").map(|v| v.as_bytes()));
            match gateway.auth.check_key(key) {
                Ok(caller) => {
                    req.extensions_mut().insert(caller);
                }
                Err(e) => {
                    let resp = respond::refusal(&e, &req);
                    return Box::pin(async move { Ok(resp) });
                }
            }
        }
        req.extensions_mut().insert(gateway);
        Box::pin(self.inner.call(req))
    }
}

/// Size of request headers as sent: names, values and the `: ` and line end of each.
fn header_bytes(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        let key_sha256: [u8; 32] = Sha256::digest(b"sk-team-a").into();
        Auth::new(vec![Tenant {
            name: "team-a".into(),
            key_sha256,
        }])
    }

    #[test]
    fn known_key_maps_to_its_tenant() {
        assert_eq!(
            auth()
                .check(Some(b"Bearer sk-team-a"))
                .unwrap()
                .tenant
                .as_deref(),
            Some("team-a")
        );
    }

    #[test]
    fn wrong_or_missing_keys_are_refused() {
        assert_eq!(
            auth().check(Some(b"Bearer sk-team-b")),
            Err(ApiError::Unauthorized)
        );
        assert_eq!(
            auth().check(Some(b"sk-team-a")),
            Err(ApiError::Unauthorized)
        );
        assert_eq!(auth().check(None), Err(ApiError::Unauthorized));
    }

    #[test]
    fn open_gateway_lets_everyone_in() {
        assert_eq!(
            Auth::new(vec![]).check(None).unwrap(),
            Caller { tenant: None }
        );
    }
}
