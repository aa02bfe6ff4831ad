//! Which client request headers may reach a cloud upstream: only those a policy allow-lists,
//! and never credentials, hop-by-hop headers or headers the gateway sets itself.

use http::{HeaderMap, HeaderName};

/// Headers that are never forwarded, whatever a policy lists.
const NEVER: &[&str] = &[
    // Credentials: the client's gateway key must not reach the provider.
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    // Hop-by-hop (RFC 9110 section 7.6.1) and framing.
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    // Set by the gateway for the upstream request.
    "content-type",
    "accept",
    "accept-encoding",
    "user-agent",
];

/// Whether `name` may never be forwarded (also `x-switchyard-*`, the gateway's own headers).
pub fn is_never_forwarded(name: &HeaderName) -> bool {
    let n = name.as_str();
    NEVER.contains(&n) || n.starts_with("x-switchyard-")
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

#[cfg(test)]
mod tests {
    use super::*;

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
