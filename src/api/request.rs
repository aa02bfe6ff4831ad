//! `POST /v1/chat/completions` request: parsed once, validated, with the counts the
//! policy needs, and every field kept so that the cloud receives what the client sent.

use super::ApiError;
use serde_json::{Map, Value};

/// A message author.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    Function,
}

impl Role {
    fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "system" => Role::System,
            "developer" => Role::Developer,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            "function" => Role::Function,
            _ => return None,
        })
    }
}

/// A validated chat completion request.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The whole request object as sent (forwarded upstream with `model` replaced).
    pub body: Map<String, Value>,
    pub model: String,
    pub stream: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    /// `max_completion_tokens`, else `max_tokens`.
    pub max_tokens: Option<u64>,
    pub message_count: u64,
    /// Bytes of text across all messages.
    pub text_bytes: u64,
    /// Bytes of text of the longest message.
    pub largest_message_bytes: u64,
    /// Bytes of the `tools` (and `functions`) definitions, 0 when there are none.
    pub tool_bytes: u64,
    pub image_count: u64,
}

fn bad(message: impl Into<String>, param: &str) -> ApiError {
    ApiError::bad_request(message, Some(param))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl ChatRequest {
    /// Parses and validates a request body.
    pub fn parse(body: &[u8]) -> Result<ChatRequest, ApiError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            if std::str::from_utf8(body).is_err() {
                ApiError::bad_request("the request body is not valid UTF-8", None)
            } else {
                ApiError::bad_request(format!("the request body is not valid JSON: {e}"), None)
            }
        })?;
        let Value::Object(body) = value else {
            return Err(ApiError::bad_request(
                format!(
                    "the request body must be a JSON object, got {}",
                    type_name(&value)
                ),
                None,
            ));
        };
        Self::from_object(body)
    }

    fn from_object(body: Map<String, Value>) -> Result<ChatRequest, ApiError> {
        let model = match body.get("model") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::String(_)) => return Err(bad("`model` must not be empty", "model")),
            Some(v) => {
                return Err(bad(
                    format!("`model` must be a string, got {}", type_name(v)),
                    "model",
                ))
            }
            None => return Err(bad("missing required parameter `model`", "model")),
        };
        let stream = opt_bool(&body, "stream")?.unwrap_or(false);
        let include_usage = match body.get("stream_options") {
            None | Some(Value::Null) => false,
            Some(Value::Object(o)) => match o.get("include_usage") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(v) => {
                    return Err(bad(
                        format!(
                            "`stream_options.include_usage` must be a boolean, got {}",
                            type_name(v)
                        ),
                        "stream_options.include_usage",
                    ))
                }
            },
            Some(v) => {
                return Err(bad(
                    format!("`stream_options` must be an object, got {}", type_name(v)),
                    "stream_options",
                ))
            }
        };
        if include_usage && !stream {
            return Err(bad(
                "`stream_options` is only allowed when `stream` is true",
                "stream_options",
            ));
        }
        let max_tokens = match opt_u64(&body, "max_completion_tokens")? {
            Some(n) => Some(n),
            None => opt_u64(&body, "max_tokens")?,
        };
        if max_tokens == Some(0) {
            let param = if body.contains_key("max_completion_tokens") {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            return Err(bad(format!("`{param}` must be at least 1"), param));
        }
        if let Some(n) = opt_u64(&body, "n")? {
            if n == 0 {
                return Err(bad("`n` must be at least 1", "n"));
            }
        }
        for (name, max) in [("temperature", 2.0), ("top_p", 1.0)] {
            match body.get(name) {
                None | Some(Value::Null) => {}
                Some(Value::Number(x)) => {
                    let x = x.as_f64().unwrap_or(f64::NAN);
                    if !(0.0..=max).contains(&x) {
                        return Err(bad(
                            format!("`{name}` must be between 0 and {max}, got {x}"),
                            name,
                        ));
                    }
                }
                Some(v) => {
                    return Err(bad(
                        format!("`{name}` must be a number, got {}", type_name(v)),
                        name,
                    ))
                }
            }
        }
        match body.get("stop") {
            None | Some(Value::Null) | Some(Value::String(_)) => {}
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => {}
            Some(_) => {
                return Err(bad(
                    "`stop` must be a string or an array of strings",
                    "stop",
                ))
            }
        }
        let mut tool_bytes = 0u64;
        for name in ["tools", "functions"] {
            match body.get(name) {
                None | Some(Value::Null) => {}
                Some(Value::Array(a)) => {
                    if !a.is_empty() {
                        tool_bytes += serde_json::to_string(a)
                            .map(|s| s.len() as u64)
                            .unwrap_or(0);
                    }
                }
                Some(v) => {
                    return Err(bad(
                        format!("`{name}` must be an array, got {}", type_name(v)),
                        name,
                    ))
                }
            }
        }
        let messages = match body.get("messages") {
            Some(Value::Array(m)) if m.is_empty() => {
                return Err(bad(
                    "`messages` must contain at least one message",
                    "messages",
                ))
            }
            Some(Value::Array(m)) => m,
            Some(v) => {
                return Err(bad(
                    format!("`messages` must be an array, got {}", type_name(v)),
                    "messages",
                ))
            }
            None => return Err(bad("missing required parameter `messages`", "messages")),
        };
        let mut text_bytes = 0u64;
        let mut largest_message_bytes = 0u64;
        let mut image_count = 0u64;
        for (i, m) in messages.iter().enumerate() {
            let (t, img) = check_message(i, m)?;
            text_bytes += t;
            largest_message_bytes = largest_message_bytes.max(t);
            image_count += img;
        }
        let message_count = messages.len() as u64;
        Ok(ChatRequest {
            body,
            model,
            stream,
            include_usage,
            max_tokens,
            message_count,
            text_bytes,
            largest_message_bytes,
            tool_bytes,
            image_count,
        })
    }

    /// The messages as (role, text) pairs, text parts joined; for engines that need plain text.
    pub fn messages(&self) -> Vec<(Role, String)> {
        let Some(Value::Array(messages)) = self.body.get("messages") else {
            return vec![];
        };
        messages
            .iter()
            .filter_map(|m| {
                let role = Role::parse(m.get("role")?.as_str()?)?;
                let text = match m.get("content") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(parts)) => parts
                        .iter()
                        .filter_map(|p| p.get("text").and_then(Value::as_str))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    _ => String::new(),
                };
                Some((role, text))
            })
            .collect()
    }
}

fn opt_bool(body: &Map<String, Value>, name: &str) -> Result<Option<bool>, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(bad(
            format!("`{name}` must be a boolean, got {}", type_name(v)),
            name,
        )),
    }
}

fn opt_u64(body: &Map<String, Value>, name: &str) -> Result<Option<u64>, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) => Ok(Some(v)),
            None => Err(bad(
                format!("`{name}` must be a non-negative integer, got {n}"),
                name,
            )),
        },
        Some(v) => Err(bad(
            format!("`{name}` must be an integer, got {}", type_name(v)),
            name,
        )),
    }
}

/// Validates one message; returns its text bytes and image count.
fn check_message(i: usize, m: &Value) -> Result<(u64, u64), ApiError> {
    let param = format!("messages[{i}]");
    let Value::Object(m) = m else {
        return Err(bad(
            format!("`{param}` must be an object, got {}", type_name(m)),
            &param,
        ));
    };
    let role = match m.get("role") {
        Some(Value::String(r)) => Role::parse(r).ok_or_else(|| {
            bad(
                format!("`{param}.role` is `{r}`, which is not one of system, developer, user, assistant, tool, function"),
                &format!("{param}.role"),
            )
        })?,
        Some(v) => return Err(bad(format!("`{param}.role` must be a string, got {}", type_name(v)), &format!("{param}.role"))),
        None => return Err(bad(format!("`{param}` is missing `role`"), &format!("{param}.role"))),
    };
    let content_param = format!("{param}.content");
    match m.get("content") {
        Some(Value::String(s)) => Ok((s.len() as u64, 0)),
        None | Some(Value::Null) => {
            if role == Role::Assistant || role == Role::Tool || role == Role::Function {
                Ok((0, 0))
            } else {
                Err(bad(
                    format!("`{content_param}` is required for role {role:?}").to_lowercase(),
                    &content_param,
                ))
            }
        }
        Some(Value::Array(parts)) => {
            let (mut text, mut images) = (0u64, 0u64);
            for (j, p) in parts.iter().enumerate() {
                let pp = format!("{content_param}[{j}]");
                let ty = p.get("type").and_then(Value::as_str).ok_or_else(|| {
                    bad(
                        format!("`{pp}` must be an object with a string `type`"),
                        &pp,
                    )
                })?;
                match ty {
                    "text" => match p.get("text") {
                        Some(Value::String(s)) => text += s.len() as u64,
                        _ => {
                            return Err(bad(
                                format!("`{pp}.text` must be a string"),
                                &format!("{pp}.text"),
                            ))
                        }
                    },
                    "image_url" | "input_image" | "image" => images += 1,
                    _ => {}
                }
            }
            Ok((text, images))
        }
        Some(v) => Err(bad(
            format!(
                "`{content_param}` must be a string or an array of content parts, got {}",
                type_name(v)
            ),
            &content_param,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> ApiError {
        ChatRequest::parse(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn parses_counts_and_keeps_unknown_fields() {
        let r = ChatRequest::parse(
            br#"{"model":"auto","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"data:x"}}]}],"tools":[{"type":"function","function":{"name":"f"}}],"logit_bias":{"1":2},"stream":true,"stream_options":{"include_usage":true},"max_tokens":5}"#,
        )
        .unwrap();
        assert_eq!((r.message_count, r.text_bytes, r.image_count), (2, 10, 1));
        assert!(r.tool_bytes > 0 && r.stream && r.include_usage);
        assert_eq!(r.max_tokens, Some(5));
        assert!(r.body.contains_key("logit_bias"));
        assert_eq!(r.messages()[1], (Role::User, "hi".to_string()));
    }

    #[test]
    fn rejects_bad_requests_with_the_parameter() {
        let param = |e: ApiError| match e {
            ApiError::BadRequest { param, .. } => param,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            param(err(r#"{"messages":[{"role":"user","content":"x"}]}"#)).as_deref(),
            Some("model")
        );
        assert_eq!(
            param(err(r#"{"model":"auto"}"#)).as_deref(),
            Some("messages")
        );
        assert_eq!(
            param(err(r#"{"model":"auto","messages":[]}"#)).as_deref(),
            Some("messages")
        );
        assert_eq!(
            param(err(
                r#"{"model":"auto","messages":[{"role":"wizard","content":"x"}]}"#
            ))
            .as_deref(),
            Some("messages[0].role")
        );
        assert_eq!(
            param(err(r#"{"model":5,"messages":[]}"#)).as_deref(),
            Some("model")
        );
        assert_eq!(
            param(err(
                r#"{"model":"a","messages":[{"role":"user","content":"x"}],"max_tokens":-1}"#
            ))
            .as_deref(),
            Some("max_tokens")
        );
        assert_eq!(
            param(err(
                r#"{"model":"a","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#
            ))
            .as_deref(),
            Some("stream")
        );
        assert_eq!(
            param(err(
                r#"{"model":"a","messages":[{"role":"user","content":5}]}"#
            ))
            .as_deref(),
            Some("messages[0].content")
        );
        assert!(matches!(err("{not json"), ApiError::BadRequest { .. }));
        assert!(matches!(err("[1,2]"), ApiError::BadRequest { .. }));
        assert!(matches!(
            ChatRequest::parse(b"{\"model\":\"\xff\"}").unwrap_err(),
            ApiError::BadRequest { .. }
        ));
    }
}
