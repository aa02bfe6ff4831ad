//! `GET /v1/models` and `GET /v1/models/{id}`: the models a client may name, in OpenAI's shape,
//! or in Anthropic's when the request carries `anthropic-version` (every Anthropic SDK sends
//! it; both SDKs call the same path).
//!
//! OpenAI: `{"object": "list", "data": [{"id", "object": "model", "created", "owned_by"}]}`,
//! all at once. Anthropic (its Models API): `{"data": [{"type": "model", "id",
//! "display_name", "created_at"}], "has_more", "first_id", "last_id"}`, a page of `limit`
//! models (1 to 1,000, default 20) after `after_id` or before `before_id`.

use super::dialects::Dialect;
use super::respond::{self, Body};
use super::Gateway;
use crate::api::ApiError;
use crate::policy::{AUTO, LOCAL};
use http::{HeaderMap, Response, StatusCode};
use serde_json::{json, Value};

/// The header every Anthropic SDK sends, which tells its requests apart on a shared path.
const ANTHROPIC_VERSION: &str = "anthropic-version";

/// Anthropic's default page size and its largest.
const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 1000;

/// Whether `path` is one of the models endpoints.
pub fn is_models_path(path: &str) -> bool {
    path == "/v1/models" || path.starts_with("/v1/models/")
}

/// The dialect a models request is answered in: Anthropic's when it carries
/// `anthropic-version`, else OpenAI's (`None`).
pub fn dialect(headers: &HeaderMap) -> Option<Dialect> {
    headers
        .contains_key(ANTHROPIC_VERSION)
        .then_some(Dialect::Anthropic)
}

/// The names a client may send as `model`, with who serves each (`switchyard` for `auto` and
/// `local`, `switchyard-local` or `switchyard-cloud` for the policy's models): `auto`, `local`
/// when the policy has an on-box model, then the policy's models in order.
fn listed(gateway: &Gateway) -> Vec<(&str, &'static str)> {
    let mut out = vec![(AUTO, "switchyard")];
    if gateway.policy.local_model.is_some() {
        out.push((LOCAL, "switchyard"));
    }
    out.extend(gateway.policy.models.values().map(|m| {
        let owner = if m.kind.is_cloud() {
            "switchyard-cloud"
        } else {
            "switchyard-local"
        };
        (m.name.as_str(), owner)
    }));
    out
}

/// A model object in the dialect's shape. The gateway keeps no creation dates: OpenAI's
/// `created` is 0, Anthropic's `created_at` the same instant in RFC 3339.
fn object(dialect: Option<Dialect>, id: &str, owner: &str) -> Value {
    match dialect {
        Some(Dialect::Anthropic) => json!({
            "type": "model",
            "id": id,
            "display_name": id,
            "created_at": "1970-01-01T00:00:00Z",
        }),
        _ => json!({"id": id, "object": "model", "created": 0, "owned_by": owner}),
    }
}

/// `GET /v1/models` (`query`: the request's query string, read by Anthropic's pagination).
pub fn list(gateway: &Gateway, headers: &HeaderMap, query: Option<&str>) -> Response<Body> {
    let models = listed(gateway);
    let dialect = dialect(headers);
    if dialect != Some(Dialect::Anthropic) {
        let data: Vec<Value> = models
            .iter()
            .map(|(id, owner)| object(None, id, owner))
            .collect();
        return respond::json(StatusCode::OK, &json!({"object": "list", "data": data}));
    }
    let ids: Vec<&str> = models.iter().map(|(id, _)| *id).collect();
    match page(&ids, query.unwrap_or("")) {
        Ok((range, has_more)) => {
            let data: Vec<Value> = models[range.clone()]
                .iter()
                .map(|(id, owner)| object(dialect, id, owner))
                .collect();
            respond::json(
                StatusCode::OK,
                &json!({
                    "data": data,
                    "has_more": has_more,
                    "first_id": ids[range.clone()].first(),
                    "last_id": ids[range].last(),
                }),
            )
        }
        Err(e) => Dialect::Anthropic.error(&e),
    }
}

/// `GET /v1/models/{id}`: the model object of a listed model, else 404 `model_not_found`
/// (Anthropic's `not_found_error`).
pub fn one(gateway: &Gateway, headers: &HeaderMap, id: &str) -> Response<Body> {
    let dialect = dialect(headers);
    match listed(gateway).into_iter().find(|(m, _)| *m == id) {
        Some((id, owner)) => respond::json(StatusCode::OK, &object(dialect, id, owner)),
        None => {
            let e = ApiError::ModelNotFound(
                crate::policy::DecideError::ModelNotFound(id.to_string()).to_string(),
            );
            match dialect {
                Some(d) => d.error(&e),
                None => respond::error(&e),
            }
        }
    }
}

/// The page of `ids` that Anthropic's `limit`, `after_id` and `before_id` ask for, and whether
/// more lie beyond it in the direction paged (`has_more`).
///
/// Errors: 400 for a `limit` outside 1 to 1,000, both cursors, or a cursor naming no listed
/// model.
fn page(ids: &[&str], query: &str) -> Result<(std::ops::Range<usize>, bool), ApiError> {
    let bad = |message: &str, param: &str| ApiError::bad_request(message, Some(param));
    let (mut limit, mut after, mut before) = (DEFAULT_LIMIT, None, None);
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| bad("`limit` must be an integer from 1 to 1000", "limit"))?
            }
            "after_id" => after = Some(value.into_owned()),
            "before_id" => before = Some(value.into_owned()),
            _ => {}
        }
    }
    let at = |cursor: &str, param: &str| {
        ids.iter().position(|id| *id == cursor).ok_or_else(|| {
            bad(
                &format!("`{param}` is not a listed model: {cursor:?}"),
                param,
            )
        })
    };
    Ok(match (after, before) {
        (Some(_), Some(_)) => {
            return Err(bad("send `after_id` or `before_id`, not both", "before_id"))
        }
        (None, Some(b)) => {
            let end = at(&b, "before_id")?;
            let start = end.saturating_sub(limit);
            (start..end, start > 0)
        }
        (after, None) => {
            let start = match after {
                Some(a) => at(&a, "after_id")? + 1,
                None => 0,
            };
            let end = (start + limit).min(ids.len());
            (start..end, end < ids.len())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDS: [&str; 5] = ["auto", "local", "a", "b", "c"];

    fn ok(query: &str) -> (Vec<&'static str>, bool) {
        let (range, more) = page(&IDS, query).expect("a page");
        (IDS[range].to_vec(), more)
    }

    #[test]
    fn pages_follow_anthropics_cursors() {
        assert_eq!(ok(""), (IDS.to_vec(), false));
        assert_eq!(ok("limit=2"), (vec!["auto", "local"], true));
        assert_eq!(ok("limit=2&after_id=local"), (vec!["a", "b"], true));
        assert_eq!(ok("limit=2&after_id=b"), (vec!["c"], false));
        assert_eq!(ok("after_id=c"), (vec![], false));
        assert_eq!(ok("limit=2&before_id=b"), (vec!["local", "a"], true));
        assert_eq!(ok("limit=2&before_id=local"), (vec!["auto"], false));
        assert_eq!(ok("limit=1000&unknown=1"), (IDS.to_vec(), false));
    }

    #[test]
    fn a_bad_page_is_a_400_naming_the_parameter() {
        for (query, param) in [
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("limit=x", "limit"),
            ("after_id=nope", "after_id"),
            ("before_id=nope", "before_id"),
            ("after_id=a&before_id=b", "before_id"),
        ] {
            let e = page(&IDS, query).expect_err(query);
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{query}");
            assert_eq!(e.body_json()["error"]["param"], param, "{query}");
        }
    }
}
