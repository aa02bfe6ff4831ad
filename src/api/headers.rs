//! Which headers cross the gateway. Client request headers reach a cloud upstream only when a
//! policy allow-lists them (`forward_headers`), and never credentials, hop-by-hop headers or
//! headers the gateway sets itself. Upstream response headers reach the client the same way
//! (`response_headers`), and the provider's request id comes back as
//! `x-switchyard-upstream-request-id`.

use http::{HeaderMap, HeaderName};

/// Hop-by-hop headers (RFC 9110 section 7.6.1) and framing: never crossed, either way.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// Request headers that are never forwarded besides [`HOP_BY_HOP`], whatever a policy lists.
const NEVER: &[&str] = &[
    // Credentials: the client's gateway key must not reach the provider.
    "authorization",
    "x-api-key",
    "api-key",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "host",
    // Set by the gateway for the upstream request.
    "content-type",
    "accept",
    "accept-encoding",
    "user-agent",
];

/// Whether `name` may never be forwarded (also `x-switchyard-*`, the gateway's own headers).
pub fn is_never_forwarded(name: &HeaderName) -> bool {
    let n = name.as_str();
    HOP_BY_HOP.contains(&n) || NEVER.contains(&n) || n.starts_with("x-switchyard-")
}

/// The client headers of `allow` found in `from`, in allow-list order.
pub fn forwarded<'a>(
    from: &'a HeaderMap,
    allow: &'a [HeaderName],
) -> impl Iterator<Item = (&'a HeaderName, &'a http::HeaderValue)> + 'a {
    allow
        .iter()
        .filter(|n| !is_never_forwarded(n))
        .flat_map(move |n| from.get_all(n).iter().map(move |v| (n, v)))
}

/// The response header that carries the provider's own request id (its `x-request-id`).
pub const UPSTREAM_REQUEST_ID: HeaderName =
    HeaderName::from_static("x-switchyard-upstream-request-id");

/// Upstream response headers that are never passed back besides [`HOP_BY_HOP`], whatever a
/// policy lists: the body's framing, cookies and authentication challenges, and headers the
/// gateway sets.
const NEVER_PASSED_BACK: &[&str] = &[
    "content-type",
    "content-encoding",
    "set-cookie",
    "www-authenticate",
    "proxy-authenticate",
    "authorization",
    "retry-after",
    "x-request-id",
];

/// Whether an upstream response header `name` may never reach the client (also
/// `x-switchyard-*`, the gateway's own headers).
pub fn is_never_passed_back(name: &str) -> bool {
    HOP_BY_HOP.contains(&name)
        || NEVER_PASSED_BACK.contains(&name)
        || name.starts_with("x-switchyard-")
}

/// The upstream response headers a model passes back to the client: exact lower-case names,
/// and prefixes (a pattern ending in `*`, such as `x-ratelimit-*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassBack {
    exact: Vec<HeaderName>,
    prefixes: Vec<String>,
}

impl PassBack {
    /// The allow-list of `patterns` (lower-cased). Errors: the pattern that is not a header
    /// name (or a name's prefix followed by `*`), or one that may never be passed back.
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Result<PassBack, String> {
        let mut out = PassBack::default();
        for raw in patterns {
            let p = raw.trim().to_ascii_lowercase();
            let (name, prefix) = match p.strip_suffix('*') {
                Some(stem) => (stem, true),
                None => (p.as_str(), false),
            };
            if name.is_empty() || HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(format!(
                    "`{raw}` is not a header name or a name prefix ending in `*`"
                ));
            }
            let blocked = if prefix {
                HOP_BY_HOP
                    .iter()
                    .chain(NEVER_PASSED_BACK)
                    .any(|n| n.starts_with(name))
                    || "x-switchyard-".starts_with(name)
                    || name.starts_with("x-switchyard-")
            } else {
                is_never_passed_back(name)
            };
            if blocked {
                return Err(format!(
                    "`{raw}` is never passed back: it frames the response, carries credentials or cookies, or is set by the gateway"
                ));
            }
            match prefix {
                true => out.prefixes.push(name.to_string()),
                false => out
                    .exact
                    .push(HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?),
            }
        }
        Ok(out)
    }

    /// Whether the upstream response header `name` (lower-case, as parsed) goes back to the
    /// client.
    pub fn allows(&self, name: &str) -> bool {
        self.exact
            .iter()
            .any(|n| n.as_str().eq_ignore_ascii_case(name))
            || self.prefixes.iter().any(|p| {
                name.len() >= p.len()
                    && name.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
            })
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_back_matches_names_and_prefixes_and_refuses_framing_and_credentials() {
        let p = PassBack::new(["X-RateLimit-*", "openai-processing-ms"]).unwrap();
        assert!(p.allows("x-ratelimit-remaining-tokens"));
        assert!(p.allows("X-Ratelimit-Limit-Requests"));
        assert!(p.allows("openai-processing-ms"));
        assert!(!p.allows("openai-processing"));
        assert!(!p.allows("x-ratelimit"));
        assert!(!p.allows("set-cookie"));
        for bad in [
            "set-cookie",
            "content-*",
            "x-switchyard-*",
            "x-*",
            "*",
            "x-request-id",
            "a b",
        ] {
            assert!(PassBack::new([bad]).is_err(), "{bad} was accepted");
        }
        assert!(PassBack::new(["x-ratelimit-*"]).is_ok());
    }

    #[test]
    fn only_allowed_headers_pass_and_credentials_never_do() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer client".parse().unwrap());
        h.insert("x-request-id", "r-1".parse().unwrap());
        h.insert("x-other", "o".parse().unwrap());
        let allow: Vec<HeaderName> = ["x-request-id", "authorization"]
            .iter()
            .map(|s| HeaderName::from_static(s))
            .collect();
        let got: Vec<_> = forwarded(&h, &allow)
            .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap().to_string()))
            .collect();
        assert_eq!(got, vec![("x-request-id".to_string(), "r-1".to_string())]);
        assert!(is_never_forwarded(&HeaderName::from_static(
            "x-switchyard-tags"
        )));
        assert!(is_never_forwarded(&HeaderName::from_static("connection")));
        assert!(!is_never_forwarded(&HeaderName::from_static("traceparent")));
    }
}
