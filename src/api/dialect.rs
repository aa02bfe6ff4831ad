//! The dialects besides OpenAI chat completions, and what their translators
//! ([`super::anthropic`], [`super::responses`], [`super::completions`], [`super::embeddings`])
//! read the same way: the
//! request object and its `model` and `stream`, their 400s, and the internal answer they
//! translate back.

use super::ApiError;
use serde_json::{Map, Value};
use std::borrow::Cow;

/// A dialect a client speaks besides OpenAI chat completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Anthropic Messages (`POST /v1/messages`).
    Anthropic,
    /// OpenAI Responses (`POST /v1/responses`).
    Responses,
    /// The Responses API's compaction of a conversation (`POST /v1/responses/compact`): its
    /// answer (a `response.compaction`, the user messages and an encrypted `compaction` item)
    /// only the Responses API itself writes, so it is always passed on as it came.
    Compaction,
    /// OpenAI legacy completions (`POST /v1/completions`).
    Completions,
    /// OpenAI embeddings (`POST /v1/embeddings`): only an embeddings API writes the answer, so
    /// it is always passed on as it came ([`super::embeddings`]).
    Embeddings,
    /// Anthropic's token count (`POST /v1/messages/count_tokens`) as an Anthropic model's
    /// upstream is asked it: the client's request passed on as it came, for the provider's own
    /// count. (The client's request itself is read as [`Dialect::Anthropic`].)
    CountTokens,
    /// The Responses API's token count (`POST /v1/responses/input_tokens`) as an upstream that
    /// serves the Responses API is asked it, likewise. (The client's request is read as
    /// [`Dialect::Responses`].)
    InputTokens,
}

impl Dialect {
    /// The dialect of a request path, when it is not OpenAI chat completions.
    pub fn of_path(path: &str) -> Option<Dialect> {
        if path.starts_with("/v1/messages") {
            Some(Dialect::Anthropic)
        } else if path == "/v1/responses/compact" {
            Some(Dialect::Compaction)
        } else if path.starts_with("/v1/responses") {
            Some(Dialect::Responses)
        } else if path == "/v1/completions" {
            Some(Dialect::Completions)
        } else if path == "/v1/embeddings" {
            Some(Dialect::Embeddings)
        } else {
            None
        }
    }
}

/// The first field of a request that only its dialect's own API serves (a Responses or
/// Messages request passed on as it came), as a `param` path; later marks are ignored.
#[derive(Default)]
pub(crate) struct DialectOnly(pub Option<String>);

impl DialectOnly {
    pub fn mark(&mut self, param: &str) {
        if self.0.is_none() {
            self.0 = Some(param.to_string());
        }
    }
}

/// Where a translation put a field of the client's request under chat's name: (chat's name,
/// the request's own name), for the errors that name it ([`renamed_error`]).
pub(crate) type Renamed = Vec<(Cow<'static, str>, String)>;

/// The renames a dialect always makes, to grow with those a request adds.
pub(crate) fn renamed(fixed: &[(&'static str, &str)]) -> Renamed {
    fixed
        .iter()
        .map(|(chat, own)| (Cow::Borrowed(*chat), own.to_string()))
        .collect()
}

/// The request's own name of a field named in chat's terms (`param`, or the head of a path
/// below it: `messages[2].content` under `messages`), when the translation renamed it.
fn own_param<'a>(renamed: &'a [(Cow<'static, str>, String)], param: &str) -> Option<&'a str> {
    renamed.iter().find_map(|(chat, own)| {
        let below = param
            .strip_prefix(chat.as_ref())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']));
        below.then_some(own.as_str())
    })
}

/// An OpenAI-shaped error body of the chat path in the client's terms: its `param`, and the
/// fields its message names in backticks, under the request's own names; any other body as it
/// is. The errors come from the gateway (a capability no model of the route has, a limit) or a
/// chat upstream (its 400), both of which name chat's fields.
pub(crate) fn renamed_error(body: &[u8], renamed: &[(Cow<'static, str>, String)]) -> bytes::Bytes {
    if renamed.is_empty() {
        return bytes::Bytes::copy_from_slice(body);
    }
    let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
        return bytes::Bytes::copy_from_slice(body);
    };
    let Some(error) = v.get_mut("error").and_then(Value::as_object_mut) else {
        return bytes::Bytes::copy_from_slice(body);
    };
    let own = error
        .get("param")
        .and_then(Value::as_str)
        .and_then(|p| own_param(renamed, p))
        .map(str::to_string);
    if let Some(own) = own {
        error.insert("param".into(), Value::String(own));
    }
    if let Some(Value::String(message)) = error.get_mut("message") {
        rename_in_message(message, renamed);
    }
    bytes::Bytes::from(v.to_string())
}

/// [`renamed_error`] for an error not yet written: a 400 of the chat request's parser (its
/// `param` and message); any other error as it is.
pub(crate) fn renamed_api_error(e: ApiError, renamed: &[(Cow<'static, str>, String)]) -> ApiError {
    match e {
        ApiError::BadRequest {
            mut message,
            param,
            code,
        } => {
            rename_in_message(&mut message, renamed);
            let param = param.map(|p| own_param(renamed, &p).map_or(p, str::to_string));
            ApiError::BadRequest {
                message,
                param,
                code,
            }
        }
        e => e,
    }
}

/// Replaces each renamed field that `message` names in backticks with the request's own name,
/// in one pass (a name renamed into another renamed name is not renamed twice).
fn rename_in_message(message: &mut String, renamed: &[(Cow<'static, str>, String)]) {
    let mut out = String::with_capacity(message.len());
    let mut rest = message.as_str();
    while let Some(open) = rest.find('`') {
        let Some(len) = rest[open + 1..].find('`') else {
            break;
        };
        let name = &rest[open + 1..open + 1 + len];
        out.push_str(&rest[..=open]);
        match renamed.iter().find(|(chat, _)| chat == name) {
            Some((_, own)) => out.push_str(own),
            None => out.push_str(name),
        }
        out.push('`');
        rest = &rest[open + len + 2..];
    }
    out.push_str(rest);
    *message = out;
}

/// A 400 naming the request parameter `param`.
pub(crate) fn bad(message: impl Into<String>, param: &str) -> ApiError {
    ApiError::bad_request(message, Some(param))
}

/// The request body as a JSON object.
///
/// Errors: a 400 for a body that is not JSON, or not an object.
pub(crate) fn request_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(_) => Err(bad("the body must be a JSON object", "body")),
        Err(e) => Err(ApiError::bad_request(
            format!("the body is not valid JSON: {e}"),
            None,
        )),
    }
}

/// The required, non-empty `model`.
pub(crate) fn model(obj: &Map<String, Value>) -> Result<&str, ApiError> {
    obj.get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| bad("`model` is required and must be a string", "model"))
}

/// `stream`: absent or null is `false`.
pub(crate) fn stream(obj: &Map<String, Value>) -> Result<bool, ApiError> {
    match obj.get("stream") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(bad("`stream` must be a boolean", "stream")),
    }
}

/// An internal (chat completion) answer and its first choice.
///
/// Errors: a 502 when the body is not a chat completion with a choice.
pub(crate) fn chat_answer(body: &[u8]) -> Result<(Value, Value), ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| ApiError::BadGateway("the model's answer is not a chat completion".into()))?;
    let choice = v
        .pointer("/choices/0")
        .cloned()
        .ok_or_else(|| ApiError::BadGateway("the model's answer has no choices".into()))?;
    Ok((v, choice))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parser_error_names_the_clients_own_fields() {
        let mut renamed = renamed(&[("messages", "input"), ("max_tokens", "max_output_tokens")]);
        renamed.push(("web_search_options".into(), "tools[2]".into()));
        // Function tools after a web search tool move down one place in chat's list.
        renamed.push(("tools[1]".into(), "tools[2]".into()));
        renamed.push(("tools[0]".into(), "tools[1]".into()));
        // (message, param) as the parser wrote them, and as the client reads them. Only whole
        // names in backticks are renamed (`messages[1]` is a path of its own), and once each.
        for ((message, param), (own_message, own_param)) in [
            (
                (
                    "`messages[1]` must be an object, and `max_tokens` at least 1",
                    "messages[1].content",
                ),
                (
                    "`messages[1]` must be an object, and `max_output_tokens` at least 1",
                    "input",
                ),
            ),
            (
                (
                    "`tools[0]` and `tools[1]` differ; ` unpaired",
                    "tools[0].function",
                ),
                ("`tools[1]` and `tools[2]` differ; ` unpaired", "tools[1]"),
            ),
        ] {
            let body = renamed_api_error(bad(message, param), &renamed).body_json();
            assert_eq!(body["error"]["param"], own_param, "{param}");
            assert_eq!(body["error"]["message"], own_message, "{message}");
        }
        let kept = renamed_api_error(bad("`model` is required", "model"), &renamed);
        assert_eq!(kept.body_json()["error"]["param"], "model");
        assert!(matches!(
            renamed_api_error(ApiError::Internal, &renamed),
            ApiError::Internal
        ));
    }
}
