//! Gateway keys: `Authorization: Bearer <key>` checked against the policy's tenants
//! (SHA-256 hashes, compared in constant time) before any other work is done.

use crate::api::ApiError;
use crate::policy::Tenant;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Who sent a request: the tenant of its gateway key, or nobody on an open gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub tenant: Option<String>,
}

impl Caller {
    /// The tenant label for metrics (`anonymous` on an open gateway).
    pub fn label(&self) -> &str {
        self.tenant.as_deref().unwrap_or("anonymous")
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

    /// Checks the `Authorization` header value. Every tenant's hash is compared, match or
    /// not, so the time taken does not tell how close a wrong key was.
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<Caller, ApiError> {
        if self.is_open() {
            return Ok(Caller { tenant: None });
        }
        let key = authorization
            .and_then(|h| {
                h.strip_prefix(b"Bearer ")
                    .or_else(|| h.strip_prefix(b"bearer "))
            })
            .map(|k| k.trim_ascii())
            .unwrap_or(b"");
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
