//! The Anthropic Messages dialect (`POST /v1/messages`), translated to and from the gateway's
//! one internal request, the OpenAI chat completion: a Messages request becomes a chat
//! request before anything looks at it (so features, the classifier, the policy, budgets, limits,
//! metrics and the request log see what they see for any dialect), and the answer, the stream and
//! the errors go back in Anthropic's shapes.
//!
//! Sources of the formats: Anthropic's Messages API reference (request fields, content blocks,
//! `tool_use`/`tool_result`, the streaming event sequence `message_start`, `content_block_start`,
//! `content_block_delta` (`text_delta`, `input_json_delta`), `content_block_stop`,
//! `message_delta`, `message_stop`, `ping`, and the error shape with its statuses); OpenAI's chat
//! completions reference for the other side.

use super::chat_chunk::ChatEvent;
use super::dialect::{self, bad, DialectOnly, Renamed};
use super::ApiError;
use bytes::{Bytes, BytesMut};
use http::StatusCode;
use serde_json::{json, Map, Value};

/// What the translation keeps of the client's request for the way back.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    /// The model the client named.
    pub model: String,
    pub stream: bool,
    /// The first field that only Anthropic's Messages API serves, as a `param` path
    /// (`thinking`, `tools[2]`, `messages[0].content[1]`): the request can then only be passed
    /// as it came to a `kind: anthropic` model.
    pub messages_only: Option<String>,
    /// Where the translation put a field of the request under chat's name, for the errors
    /// that name it ([`dialect::renamed_error`]; Anthropic's error shape keeps only the
    /// message): `output_config.format` for chat's `response_format`, `stop_sequences` for
    /// `stop`.
    pub renamed: Renamed,
}

/// Chat's names of the Messages fields the translation renames, besides the output format
/// (`output_config.format` or the beta's `output_format`, chat's `response_format`).
const RENAMED: [(&str, &str); 3] = [
    ("reasoning_effort", "output_config.effort"),
    ("stop", "stop_sequences"),
    ("user", "metadata.user_id"),
];

/// Request members that only the Messages API serves: a container for code execution, MCP
/// servers it connects to, context editing, the region inference runs in, Anthropic's own
/// fallback models on a refusal and the credit a refusal gave for them.
const MESSAGES_ONLY_MEMBERS: [&str; 6] = [
    "container",
    "mcp_servers",
    "context_management",
    "inference_geo",
    "fallbacks",
    "fallback_credit_token",
];

/// Translates a Messages request body into an OpenAI chat completion request body.
///
/// Shapes: `model` (string), `max_tokens` (integer ≥ 1) and `messages` (user/assistant turns)
/// are required; `system` is a string or text blocks; content is a string or blocks of `text`,
/// `image` (base64 or URL source), `tool_use` (assistant) and `tool_result` (user); `tools` are
/// client tools (`name`, `description`, `input_schema`); `tool_choice` is `auto`, `any`, `tool`
/// or `none`; `stop_sequences`, `temperature`, `top_p`, `metadata.user_id` and `stream` map to
/// their OpenAI fields; a tool's `strict` is the function's; `output_config` (and the beta's
/// `output_format`) becomes `reasoning_effort` and `response_format` ([`output_config`]).
/// `top_k`, `cache_control` (a block's, or the request's), `speed: standard` and `diagnostics`
/// are accepted and not forwarded (OpenAI has no such fields); `thinking` blocks in earlier
/// turns are dropped.
///
/// With `counting` (a `count_tokens` body), `max_tokens` is not required.
///
/// What only the Messages API serves is not refused but recorded in [`Inbound::messages_only`]
/// (the request then goes only to an Anthropic model, as it came): extended `thinking`, server
/// and Anthropic-defined tools (`type` other than `custom`), [`MESSAGES_ONLY_MEMBERS`],
/// `speed: fast`, and
/// content blocks other than text, images, tool calls and results (documents, search results,
/// server tool calls and their results, non-text tool results). The internal request keeps
/// the text around them and a server or MCP tool call's input as a tool call.
///
/// Errors: a 400 naming the field for a body that is not such a request.
pub fn to_chat(body: &[u8], counting: bool) -> Result<(Vec<u8>, Inbound), ApiError> {
    let obj = dialect::request_object(body)?;
    for key in obj.keys() {
        if !matches!(
            key.as_str(),
            "model"
                | "max_tokens"
                | "messages"
                | "system"
                | "stop_sequences"
                | "temperature"
                | "top_p"
                | "top_k"
                | "metadata"
                | "stream"
                | "tools"
                | "tool_choice"
                | "service_tier"
                | "thinking"
                | "container"
                | "mcp_servers"
                | "context_management"
                | "output_format"
                | "output_config"
                | "cache_control"
                | "inference_geo"
                | "speed"
                | "fallbacks"
                | "fallback_credit_token"
                | "diagnostics"
        ) {
            return Err(bad(
                format!("`{key}` is not supported here (docs/api.md lists what is)"),
                key,
            ));
        }
    }
    let model = dialect::model(&obj)?;
    let max_tokens = match obj.get("max_tokens") {
        None if counting => 1,
        m => m
            .and_then(Value::as_u64)
            .filter(|n| *n >= 1)
            .ok_or_else(|| {
                bad(
                    "`max_tokens` is required and must be an integer of at least 1",
                    "max_tokens",
                )
            })?,
    };
    let stream = dialect::stream(&obj)?;
    let mut only = DialectOnly::default();
    match obj.get("thinking") {
        None | Some(Value::Null) => {}
        Some(Value::Object(t)) => match t.get("type").and_then(Value::as_str) {
            Some("disabled") => {}
            Some(_) => only.mark("thinking"),
            None => return Err(bad("`thinking` needs a `type`", "thinking.type")),
        },
        Some(_) => return Err(bad("`thinking` must be an object", "thinking")),
    }
    for member in MESSAGES_ONLY_MEMBERS {
        if obj.get(member).is_some_and(|v| !v.is_null()) {
            only.mark(member);
        }
    }
    match obj.get("speed") {
        None | Some(Value::Null) => {}
        Some(s) if s == "standard" => {}
        // Fast output is a mode of Anthropic's own models (and their price).
        Some(s) if s == "fast" => only.mark("speed"),
        Some(_) => return Err(bad("`speed` must be `standard` or `fast`", "speed")),
    }
    // Automatic prompt caching marks the last cacheable block, as a block's own
    // `cache_control` does; neither is forwarded to other models. `diagnostics` reports
    // Anthropic's prompt-cache misses to the client: nothing here to report.
    for member in ["cache_control", "diagnostics"] {
        if obj
            .get(member)
            .is_some_and(|v| !v.is_null() && !v.is_object())
        {
            return Err(bad(format!("`{member}` must be an object"), member));
        }
    }
    // The request's own settings are named before the blocks of its conversation.
    let mut only_in_messages = DialectOnly::default();
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert("max_tokens".into(), json!(max_tokens));
    let mut messages = vec![];
    if let Some(system) = obj.get("system") {
        let text = match system {
            Value::String(s) => s.clone(),
            Value::Array(blocks) => {
                let mut parts = vec![];
                for (i, b) in blocks.iter().enumerate() {
                    let param = format!("system[{i}]");
                    if b.get("type").and_then(Value::as_str) != Some("text") {
                        return Err(bad("system blocks must be `text` blocks", &param));
                    }
                    parts.push(text_of(b, &param)?);
                }
                parts.join("\n\n")
            }
            _ => {
                return Err(bad(
                    "`system` must be a string or a list of text blocks",
                    "system",
                ))
            }
        };
        if !text.is_empty() {
            messages.push(json!({"role": "system", "content": text}));
        }
    }
    let turns = obj
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| {
            bad(
                "`messages` is required and must be a non-empty list",
                "messages",
            )
        })?;
    for (i, turn) in turns.iter().enumerate() {
        let param = format!("messages[{i}]");
        let role = turn
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("each message needs a `role`", &param))?;
        let content = turn
            .get("content")
            .ok_or_else(|| bad("each message needs `content`", &param))?;
        match role {
            "user" => user_turn(content, &param, &mut messages, &mut only_in_messages)?,
            "assistant" => messages.push(assistant_turn(
                content,
                &param,
                &mut only_in_messages,
            )?),
            other => {
                return Err(bad(
                    format!("role `{other}` is not a Messages role (user or assistant; the system prompt goes in `system`)"),
                    &format!("{param}.role"),
                ))
            }
        }
    }
    out.insert("messages".into(), Value::Array(messages));
    if stream {
        out.insert("stream".into(), json!(true));
        // The way back needs the counts for `message_delta`.
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    for (from, to) in [("temperature", "temperature"), ("top_p", "top_p")] {
        match obj.get(from) {
            None | Some(Value::Null) => {}
            Some(n) if n.is_number() => {
                out.insert(to.into(), n.clone());
            }
            Some(_) => return Err(bad(format!("`{from}` must be a number"), from)),
        }
    }
    if let Some(k) = obj.get("top_k") {
        if !(k.is_null() || k.as_u64().is_some()) {
            return Err(bad("`top_k` must be a non-negative integer", "top_k"));
        }
    }
    match obj.get("stop_sequences") {
        None | Some(Value::Null) => {}
        Some(Value::Array(seqs)) if seqs.iter().all(Value::is_string) => {
            if !seqs.is_empty() {
                out.insert("stop".into(), Value::Array(seqs.clone()));
            }
        }
        Some(_) => {
            return Err(bad(
                "`stop_sequences` must be a list of strings",
                "stop_sequences",
            ))
        }
    }
    if let Some(meta) = obj.get("metadata") {
        match meta.get("user_id") {
            Some(Value::String(u)) => {
                out.insert("user".into(), json!(u));
            }
            None | Some(Value::Null) => {}
            Some(_) => {
                return Err(bad(
                    "`metadata.user_id` must be a string",
                    "metadata.user_id",
                ))
            }
        }
    }
    if let Some(tools) = obj.get("tools").filter(|t| !t.is_null()) {
        let Some(list) = tools.as_array() else {
            return Err(bad("`tools` must be a list", "tools"));
        };
        let mut fns = vec![];
        for (i, t) in list.iter().enumerate() {
            let param = format!("tools[{i}]");
            if let Some(kind) = t.get("type").and_then(Value::as_str) {
                // Server tools (web search, code execution, ...) and Anthropic-defined client
                // tools (bash, text editor, computer use), whose schema is Anthropic's.
                if kind != "custom" {
                    only.mark(&param);
                    continue;
                }
            }
            let name = t
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("a tool needs a `name`", &param))?;
            let schema = t
                .get("input_schema")
                .filter(|s| s.is_object())
                .ok_or_else(|| bad("a tool needs an `input_schema` object", &param))?;
            let mut f = json!({"name": name, "parameters": schema});
            if let Some(d) = t.get("description").and_then(Value::as_str) {
                f["description"] = json!(d);
            }
            match t.get("strict") {
                None | Some(Value::Null) => {}
                Some(Value::Bool(strict)) => f["strict"] = json!(strict),
                Some(_) => {
                    return Err(bad(
                        "`strict` must be a boolean",
                        &format!("{param}.strict"),
                    ))
                }
            }
            fns.push(json!({"type": "function", "function": f}));
        }
        if !fns.is_empty() {
            out.insert("tools".into(), Value::Array(fns));
        }
    }
    if let Some(choice) = obj.get("tool_choice").filter(|c| !c.is_null()) {
        let kind = choice.get("type").and_then(Value::as_str).unwrap_or("");
        let mapped = match kind {
            "auto" => json!("auto"),
            "any" => json!("required"),
            "none" => json!("none"),
            "tool" => {
                let name = choice.get("name").and_then(Value::as_str).ok_or_else(|| {
                    bad(
                        "`tool_choice` of type `tool` needs a `name`",
                        "tool_choice.name",
                    )
                })?;
                json!({"type": "function", "function": {"name": name}})
            }
            _ => {
                return Err(bad(
                    "`tool_choice.type` must be auto, any, tool or none",
                    "tool_choice.type",
                ))
            }
        };
        out.insert("tool_choice".into(), mapped);
        if choice.get("disable_parallel_tool_use") == Some(&Value::Bool(true)) {
            out.insert("parallel_tool_calls".into(), json!(false));
        }
    }
    let mut renamed = dialect::renamed(&RENAMED);
    output_config(&obj, &mut out, &mut only, &mut renamed)?;
    let bytes = serde_json::to_vec(&Value::Object(out)).map_err(|_| ApiError::Internal)?;
    Ok((
        bytes,
        Inbound {
            model: model.to_string(),
            stream,
            messages_only: only.0.or(only_in_messages.0),
            renamed,
        },
    ))
}

/// `output_config` (`effort`, and `format`: structured output) and the beta's `output_format`
/// onto the chat request: `effort` (low, medium, high, xhigh, max) as `reasoning_effort`, as it
/// is; a `json_schema` format as a strict `response_format` named `output`. Members of
/// `output_config` added after these are marked as only the Messages API serving them.
///
/// Errors: a 400 naming the member for a malformed one, or both a format and `output_format`.
fn output_config(
    obj: &Map<String, Value>,
    out: &mut Map<String, Value>,
    only: &mut DialectOnly,
    renamed: &mut Renamed,
) -> Result<(), ApiError> {
    let config = match obj.get("output_config") {
        None | Some(Value::Null) => None,
        Some(Value::Object(c)) => Some(c),
        Some(_) => return Err(bad("`output_config` must be an object", "output_config")),
    };
    let mut format = None;
    if let Some(config) = config {
        for (key, value) in config {
            let param = format!("output_config.{key}");
            match (key.as_str(), value) {
                (_, Value::Null) => {}
                ("effort", Value::String(effort)) => {
                    out.insert("reasoning_effort".into(), json!(effort));
                }
                ("effort", _) => return Err(bad("`effort` must be a string", &param)),
                ("format", f) => format = Some((f, param)),
                _ => only.mark(&param),
            }
        }
    }
    if let Some(f) = obj.get("output_format").filter(|f| !f.is_null()) {
        if format.is_some() {
            return Err(bad(
                "give the output format once, in `output_config.format` (`output_format` is its beta name)",
                "output_format",
            ));
        }
        format = Some((f, "output_format".to_string()));
    }
    if let Some((f, param)) = format {
        if f.get("type").and_then(Value::as_str) != Some("json_schema") {
            return Err(bad(
                "the output format's `type` must be `json_schema`",
                &format!("{param}.type"),
            ));
        }
        let schema = f.get("schema").filter(|s| s.is_object()).ok_or_else(|| {
            bad(
                "a json_schema format needs a `schema` object",
                &format!("{param}.schema"),
            )
        })?;
        out.insert(
            "response_format".into(),
            json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": true}}),
        );
        renamed.push(("response_format".into(), param));
    }
    Ok(())
}

fn text_of(block: &Value, param: &str) -> Result<String, ApiError> {
    block
        .get("text")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| bad("a text block needs `text`", param))
}

/// An `image` block as an OpenAI image part.
fn image_part(block: &Value, param: &str) -> Result<Value, ApiError> {
    let source = block
        .get("source")
        .ok_or_else(|| bad("an image block needs a `source`", param))?;
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media = source.get("media_type").and_then(Value::as_str);
            let data = source.get("data").and_then(Value::as_str);
            match (media, data) {
                (Some(m), Some(d)) => format!("data:{m};base64,{d}"),
                _ => {
                    return Err(bad(
                        "a base64 image needs `media_type` and `data`",
                        &format!("{param}.source"),
                    ))
                }
            }
        }
        Some("url") => source
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("a URL image needs `url`", &format!("{param}.source")))?
            .to_string(),
        _ => {
            return Err(bad(
                "an image source must be of type base64 or url",
                &format!("{param}.source.type"),
            ))
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

fn user_turn(
    content: &Value,
    param: &str,
    out: &mut Vec<Value>,
    only: &mut DialectOnly,
) -> Result<(), ApiError> {
    let blocks = match content {
        Value::String(s) => {
            out.push(json!({"role": "user", "content": s}));
            return Ok(());
        }
        Value::Array(b) => b,
        _ => return Err(bad("`content` must be a string or a list of blocks", param)),
    };
    let before = out.len();
    let mut parts = vec![];
    for (j, b) in blocks.iter().enumerate() {
        let p = format!("{param}.content[{j}]");
        match b.get("type").and_then(Value::as_str) {
            Some("text") => parts.push(json!({"type": "text", "text": text_of(b, &p)?})),
            Some("image") => parts.push(image_part(b, &p)?),
            Some("tool_result") => {
                let id = b
                    .get("tool_use_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("a tool_result needs `tool_use_id`", &p))?;
                let text = match b.get("content") {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(inner)) => {
                        let mut texts = vec![];
                        for (k, ib) in inner.iter().enumerate() {
                            let ip = format!("{p}.content[{k}]");
                            match ib.get("type").and_then(Value::as_str) {
                                Some("text") => texts.push(text_of(ib, &ip)?),
                                // Images, documents, search results: the text is carried.
                                Some(_) => only.mark(&ip),
                                None => return Err(bad("a block needs a `type`", &ip)),
                            }
                        }
                        texts.join("\n")
                    }
                    Some(_) => {
                        return Err(bad("tool_result `content` must be a string or blocks", &p))
                    }
                };
                let text = if b.get("is_error") == Some(&Value::Bool(true)) {
                    format!("Error: {text}")
                } else {
                    text
                };
                // Tool results answer the assistant's calls: they come first.
                out.push(json!({"role": "tool", "tool_call_id": id, "content": text}));
            }
            // Documents, search results, container uploads, ...
            Some(_) => only.mark(&p),
            None => return Err(bad("a content block needs a `type`", &p)),
        }
    }
    if !parts.is_empty() {
        out.push(json!({"role": "user", "content": parts}));
    } else if out.len() == before {
        // Only blocks the internal request does not carry (a document): an empty turn.
        out.push(json!({"role": "user", "content": ""}));
    }
    Ok(())
}

fn assistant_turn(content: &Value, param: &str, only: &mut DialectOnly) -> Result<Value, ApiError> {
    let blocks = match content {
        Value::String(s) => return Ok(json!({"role": "assistant", "content": s})),
        Value::Array(b) => b,
        _ => return Err(bad("`content` must be a string or a list of blocks", param)),
    };
    let mut text = String::new();
    let mut calls = vec![];
    for (j, b) in blocks.iter().enumerate() {
        let p = format!("{param}.content[{j}]");
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(&text_of(b, &p)?),
            Some(kind @ ("tool_use" | "server_tool_use" | "mcp_tool_use")) => {
                if kind != "tool_use" {
                    only.mark(&p);
                }
                let id = b.get("id").and_then(Value::as_str);
                let name = b.get("name").and_then(Value::as_str);
                let (Some(id), Some(name)) = (id, name) else {
                    return Err(bad("a tool_use block needs `id` and `name`", &p));
                };
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({"id": id, "type": "function",
                    "function": {"name": name, "arguments": input.to_string()}}));
            }
            Some("thinking" | "redacted_thinking") => {}
            // Server tools' results (web search, code execution, MCP), ...
            Some(_) => only.mark(&p),
            None => return Err(bad("a content block needs a `type`", &p)),
        }
    }
    let mut m = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }});
    if !calls.is_empty() {
        m["tool_calls"] = Value::Array(calls);
    }
    Ok(m)
}

/// Anthropic's `stop_reason` for an OpenAI `finish_reason`.
fn stop_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic's `stop_reason` and `stop_sequence` for an OpenAI choice's `finish_reason` and the
/// stop string it reports as `stop_reason` (vLLM's field, which the on-box engine writes too):
/// a `stop` that a stop string caused is `stop_sequence`, naming it. OpenAI itself does not say
/// which stop string matched, so its answers end in `end_turn`.
fn stop_of(finish: Option<&str>, stop_string: Option<&str>) -> (&'static str, Value) {
    match (finish, stop_string) {
        (Some("stop"), Some(s)) => ("stop_sequence", json!(s)),
        _ => (stop_reason(finish), Value::Null),
    }
}

/// Anthropic's `usage` from an OpenAI one: `input_tokens` leaves out the cached part, which is
/// `cache_read_input_tokens`, and the part written to the cache (`cache_creation_input_tokens`,
/// which an Anthropic upstream's translated usage carries).
fn usage_of(u: Option<&Value>) -> Value {
    let n = |k: &str| {
        u.and_then(|u| u.get(k))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let cached = u
        .and_then(|u| u.pointer("/prompt_tokens_details/cached_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let written = n("cache_creation_input_tokens");
    json!({
        "input_tokens": n("prompt_tokens").saturating_sub(cached).saturating_sub(written),
        "output_tokens": n("completion_tokens"),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": written,
    })
}

/// The message id of an answer: `msg_` and the completion's id without its prefix.
fn message_id(id: Option<&str>) -> String {
    let id = id.unwrap_or("");
    let bare = id
        .strip_prefix("chatcmpl-")
        .or_else(|| id.strip_prefix("chatcmpl_"))
        .unwrap_or(id);
    format!("msg_{bare}")
}

/// Translates an OpenAI chat completion body into a Messages answer (`type: message`), for the
/// client that asked for `model`. A body that is not a chat completion becomes an `api_error`.
pub fn from_completion(body: &[u8], model: &str) -> Result<Bytes, ApiError> {
    let (v, choice) = dialect::chat_answer(body)?;
    let content = super::anthropic_upstream::assistant_blocks(&choice["message"]);
    let stop = stop_of(
        choice.get("finish_reason").and_then(Value::as_str),
        choice.get("stop_reason").and_then(Value::as_str),
    );
    let out = json!({
        "id": message_id(v.get("id").and_then(Value::as_str)),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop.0,
        "stop_sequence": stop.1,
        "usage": usage_of(v.get("usage")),
    });
    Ok(Bytes::from(out.to_string()))
}

/// Anthropic's status and error `type` for a gateway error of `status` with OpenAI `code`.
/// Overload and unavailability are Anthropic's 529 `overloaded_error`, which its SDKs retry.
pub fn error_kind(status: StatusCode) -> (StatusCode, &'static str) {
    match status.as_u16() {
        401 => (status, "authentication_error"),
        403 => (status, "permission_error"),
        404 => (status, "not_found_error"),
        413 => (status, "request_too_large"),
        429 => (status, "rate_limit_error"),
        503 | 529 => (
            StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            "overloaded_error",
        ),
        400..=499 => (status, "invalid_request_error"),
        _ => (status, "api_error"),
    }
}

/// An error body in Anthropic's shape, `{"type": "error", "error": {"type", "message"}}`, from
/// the gateway's (OpenAI-shaped) error body or a provider's.
pub fn error_body(status: StatusCode, body: &[u8]) -> (StatusCode, Bytes) {
    let (status, kind) = error_kind(status);
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let message = v
        .pointer("/error/message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("the request failed with status {}", status.as_u16()));
    let out = json!({"type": "error", "error": {"type": kind, "message": message}});
    (status, Bytes::from(out.to_string()))
}

/// Writes one Anthropic SSE event: `event: <type>` and its JSON.
fn write_event(out: &mut BytesMut, kind: &str, data: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Open {
    Text(usize),
    Tool { block: usize, call: u64 },
}

/// Turns an OpenAI chunk stream into the Messages event sequence: `message_start` and `ping`,
/// then per content block `content_block_start`, its deltas (`text_delta` for text,
/// `input_json_delta` for a tool call's arguments) and `content_block_stop`, then
/// `message_delta` (stop reason and counts) and `message_stop`. An error event of the stream
/// becomes an Anthropic `error` event.
///
/// `message_start` carries the prompt's token count as the gateway knew it when the stream
/// began (the on-box engine's count, or the gateway's estimate: OpenAI streams report usage only
/// at their end); `message_delta` carries the exact counts once the stream's usage chunk came,
/// and current Anthropic SDKs take the input count from there too.
#[derive(Debug)]
pub struct StreamTranslator {
    model: String,
    prompt_tokens: u64,
    started: bool,
    open: Option<Open>,
    next_block: usize,
    stop: &'static str,
    stop_sequence: Value,
    usage: Option<Value>,
    ended: bool,
}

impl StreamTranslator {
    /// A translator for the client that asked for `model`, whose prompt is about
    /// `prompt_tokens` tokens long (reported in `message_start`).
    pub fn new(model: &str, prompt_tokens: u64) -> StreamTranslator {
        StreamTranslator {
            model: model.to_string(),
            prompt_tokens,
            started: false,
            open: None,
            next_block: 0,
            stop: "end_turn",
            stop_sequence: Value::Null,
            usage: None,
            ended: false,
        }
    }

    fn start(&mut self, id: Option<&str>, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        let message = json!({
            "id": message_id(id), "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": Value::Null, "stop_sequence": Value::Null,
            "usage": {"input_tokens": self.prompt_tokens, "output_tokens": 0},
        });
        write_event(
            out,
            "message_start",
            &json!({"type": "message_start", "message": message}),
        );
        write_event(out, "ping", &json!({"type": "ping"}));
    }

    fn close_block(&mut self, out: &mut BytesMut) {
        if let Some(open) = self.open.take() {
            let index = match open {
                Open::Text(i) => i,
                Open::Tool { block, .. } => block,
            };
            write_event(
                out,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            );
        }
    }

    fn open_block(&mut self, open: Open, block: Value, out: &mut BytesMut) {
        self.close_block(out);
        let index = self.next_block;
        self.next_block += 1;
        let open = match open {
            Open::Text(_) => Open::Text(index),
            Open::Tool { call, .. } => Open::Tool { block: index, call },
        };
        self.open = Some(open);
        write_event(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        );
    }

    /// Takes one OpenAI stream event's data (a chunk, an error object or `[DONE]`).
    pub fn event(&mut self, data: &[u8], out: &mut BytesMut) {
        if self.ended {
            return;
        }
        let c = match super::chat_chunk::read(data) {
            None => return,
            Some(ChatEvent::Done) => return self.end(out),
            Some(ChatEvent::Error(message)) => {
                self.start(None, out);
                let error =
                    json!({"type": "error", "error": {"type": "api_error", "message": message}});
                write_event(out, "error", &error);
                self.ended = true;
                return;
            }
            Some(ChatEvent::Chunk(c)) => *c,
        };
        self.start(c.id.as_deref(), out);
        if c.usage.is_some() {
            self.usage = c.usage;
        }
        if let Some(t) = &c.text {
            if !matches!(self.open, Some(Open::Text(_))) {
                self.open_block(Open::Text(0), json!({"type": "text", "text": ""}), out);
            }
            let delta = json!({"type": "content_block_delta", "index": self.next_block - 1, "delta": {"type": "text_delta", "text": t}});
            write_event(out, "content_block_delta", &delta);
        }
        for call in &c.calls {
            if !matches!(self.open, Some(Open::Tool { call: n, .. }) if n == call.index) {
                let block = json!({"type": "tool_use", "id": call.id.as_deref().unwrap_or(""),
                    "name": call.name.as_deref().unwrap_or(""), "input": {}});
                self.open_block(
                    Open::Tool {
                        block: 0,
                        call: call.index,
                    },
                    block,
                    out,
                );
            }
            if let Some(args) = &call.args {
                let delta = json!({"type": "content_block_delta", "index": self.next_block - 1,
                    "delta": {"type": "input_json_delta", "partial_json": args}});
                write_event(out, "content_block_delta", &delta);
            }
        }
        if let Some(f) = &c.finish {
            (self.stop, self.stop_sequence) = stop_of(Some(f), c.stop_sequence.as_deref());
        }
    }

    /// Ends the message (at `[DONE]`, or when the stream ends without it after its answer).
    pub fn end(&mut self, out: &mut BytesMut) {
        if self.ended {
            return;
        }
        self.start(None, out);
        self.close_block(out);
        let usage = usage_of(self.usage.as_ref());
        write_event(
            out,
            "message_delta",
            &json!({"type": "message_delta", "delta": {"stop_reason": self.stop, "stop_sequence": self.stop_sequence}, "usage": usage}),
        );
        write_event(out, "message_stop", &json!({"type": "message_stop"}));
        self.ended = true;
    }

    /// Whether the message was ended (by [`Self::end`] or an error event).
    pub fn ended(&self) -> bool {
        self.ended
    }
}

/// The answer of `count_tokens`: `{"input_tokens": n}`.
pub fn count_tokens_body(input_tokens: u64) -> Bytes {
    Bytes::from(json!({"input_tokens": input_tokens}).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_reasons_map_to_stop_reasons() {
        for (finish, stop) in [
            (Some("stop"), "end_turn"),
            (Some("length"), "max_tokens"),
            (Some("tool_calls"), "tool_use"),
            (Some("content_filter"), "refusal"),
            (None, "end_turn"),
        ] {
            assert_eq!(stop_reason(finish), stop, "{finish:?}");
        }
    }

    /// A choice that a stop string ended (`stop_reason`, as vLLM and the on-box engine report
    /// it) is Anthropic's `stop_sequence`, naming the string, in an answer and in a stream.
    #[test]
    fn a_reported_stop_string_is_the_stop_sequence() {
        let answer = |choice: Value| -> Value {
            let body = json!({"id": "chatcmpl-1", "choices": [choice]}).to_string();
            serde_json::from_slice(&from_completion(body.as_bytes(), "m").expect("answer"))
                .expect("json")
        };
        let stopped = answer(
            json!({"index": 0, "message": {"role": "assistant", "content": "Th"},
            "finish_reason": "stop", "stop_reason": "e"}),
        );
        assert_eq!(
            (&stopped["stop_reason"], &stopped["stop_sequence"]),
            (&json!("stop_sequence"), &json!("e"))
        );
        // vLLM writes a stop token's id there, and a cut answer names no string.
        for (finish, reason) in [(json!("stop"), json!(2)), (json!("length"), json!("e"))] {
            let other = answer(
                json!({"index": 0, "message": {"role": "assistant", "content": "x"},
                "finish_reason": finish, "stop_reason": reason}),
            );
            assert_eq!(other["stop_sequence"], Value::Null, "{other}");
        }
        let mut t = StreamTranslator::new("m", 0);
        let mut out = BytesMut::new();
        for chunk in [
            json!({"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {"content": "Th"}, "finish_reason": null}]}),
            json!({"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "stop_reason": "e"}]}),
        ] {
            t.event(chunk.to_string().as_bytes(), &mut out);
        }
        t.event(b"[DONE]", &mut out);
        let text = String::from_utf8(out.to_vec()).expect("utf-8");
        assert!(
            text.contains(r#""stop_reason":"stop_sequence","stop_sequence":"e""#),
            "{text}"
        );
    }

    fn chat(body: Value) -> Value {
        let (bytes, _) = to_chat(body.to_string().as_bytes(), false).expect("translates");
        serde_json::from_slice(&bytes).expect("json")
    }

    #[test]
    fn a_claude_code_shaped_request_translates_turn_by_turn() {
        let v = chat(json!({
            "model": "claude-sonnet", "max_tokens": 1024, "stream": true,
            "system": [{"type": "text", "text": "You are a coding agent.", "cache_control": {"type": "ephemeral"}},
                       {"type": "text", "text": "Be brief."}],
            "tools": [{"name": "read_file", "description": "Reads a file", "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "stop_sequences": ["\n\nHuman:"], "temperature": 0.2, "top_k": 40,
            "metadata": {"user_id": "u-1"},
            "messages": [
                {"role": "user", "content": "Fix the bug in main.rs"},
                {"role": "assistant", "content": [{"type": "text", "text": "Reading it."},
                    {"type": "tool_use", "id": "toolu_1", "name": "read_file", "input": {"path": "main.rs"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "fn main() {}"}]},
                    {"type": "text", "text": "Go on."},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}
            ]
        }));
        assert_eq!(
            v["messages"][0],
            json!({"role": "system", "content": "You are a coding agent.\n\nBe brief."})
        );
        assert_eq!(
            v["messages"][2]["tool_calls"][0]["function"],
            json!({"name": "read_file", "arguments": "{\"path\":\"main.rs\"}"})
        );
        assert_eq!(v["messages"][2]["content"], "Reading it.");
        assert_eq!(
            v["messages"][3],
            json!({"role": "tool", "tool_call_id": "toolu_1", "content": "fn main() {}"})
        );
        assert_eq!(
            v["messages"][4]["content"][1]["image_url"]["url"],
            "data:image/png;base64,iVBORw0KGgo="
        );
        assert_eq!(v["tools"][0]["function"]["parameters"]["type"], "object");
        assert_eq!(v["tool_choice"], "required");
        assert_eq!(v["parallel_tool_calls"], false);
        assert_eq!(v["stop"], json!(["\n\nHuman:"]));
        assert_eq!(v["user"], "u-1");
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert!(v.get("top_k").is_none());
    }

    #[test]
    fn what_cannot_be_translated_is_refused_by_name() {
        for (body, param) in [
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
                "max_tokens",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": []}),
                "messages",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}),
                "messages[0].role",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "thinking": "on", "messages": [{"role": "user", "content": "x"}]}),
                "thinking",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "betas": [], "messages": [{"role": "user", "content": "x"}]}),
                "betas",
            ),
        ] {
            let e = to_chat(body.to_string().as_bytes(), false).expect_err("refused");
            assert_eq!(e.status(), StatusCode::BAD_REQUEST);
            assert_eq!(e.body_json()["error"]["param"], param, "{e}");
        }
    }

    /// The first field of `body` that only the Messages API serves.
    fn messages_only(body: Value) -> Option<String> {
        to_chat(body.to_string().as_bytes(), false)
            .expect("translated")
            .1
            .messages_only
    }

    #[test]
    fn what_only_the_messages_api_serves_is_marked_not_refused() {
        let user = json!([{"role": "user", "content": "x"}]);
        for (body, param) in [
            (
                json!({"model": "m", "max_tokens": 5, "thinking": {"type": "enabled", "budget_tokens": 1024}, "messages": user}),
                "thinking",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "tools": [{"name": "f", "input_schema": {"type": "object"}},
                    {"type": "web_search_20250305", "name": "web_search"}], "messages": user}),
                "tools[1]",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "mcp_servers": [{"type": "url", "url": "https://mcp.example", "name": "x"}], "messages": user}),
                "mcp_servers",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
                    {"type": "text", "text": "Summarise"}, {"type": "document", "source": {}}]}]}),
                "messages[0].content[1]",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "News?"},
                    {"role": "assistant", "content": [{"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "news"}},
                        {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []}]}]}),
                "messages[1].content[0]",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "speed": "fast", "messages": user}),
                "speed",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "inference_geo": "us", "messages": user}),
                "inference_geo",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "fallbacks": ["default"], "messages": user}),
                "fallbacks",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "output_config": {"effort": "high", "task_budget": 100}, "messages": user}),
                "output_config.task_budget",
            ),
        ] {
            assert_eq!(
                messages_only(body.clone()).as_deref(),
                Some(param),
                "{body}"
            );
        }
        assert_eq!(
            messages_only(
                json!({"model": "m", "max_tokens": 5, "thinking": {"type": "disabled"}, "messages": user})
            ),
            None
        );
        // The internal request keeps the text around what it does not carry, and a server
        // tool's call; a turn of a document alone is an empty turn.
        let v = chat(json!({"model": "m", "max_tokens": 5, "messages": [
            {"role": "user", "content": [{"type": "document", "source": {}}]},
            {"role": "assistant", "content": [{"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "news"}}]}]}));
        assert_eq!(v["messages"][0], json!({"role": "user", "content": ""}));
        assert_eq!(
            v["messages"][1]["tool_calls"][0]["function"]["arguments"],
            "{\"query\":\"news\"}"
        );
    }

    #[test]
    fn output_config_strict_tools_and_automatic_caching_reach_the_chat_request() {
        let user = json!([{"role": "user", "content": "A city?"}]);
        let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
        let expected = json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": true}});
        let (bytes, inbound) = to_chat(
            json!({"model": "m", "max_tokens": 5, "messages": user, "speed": "standard",
                   "cache_control": {"type": "ephemeral"}, "diagnostics": {"previous_message_id": "msg_1"},
                   "output_config": {"effort": "low", "format": {"type": "json_schema", "schema": schema}},
                   "tools": [{"name": "f", "input_schema": {"type": "object"}, "strict": true}]})
            .to_string()
            .as_bytes(),
            false,
        )
        .expect("translates");
        let v: Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(inbound.messages_only, None);
        assert_eq!(v["response_format"], expected);
        assert_eq!(v["reasoning_effort"], "low");
        assert_eq!(v["tools"][0]["function"]["strict"], true);
        for dropped in ["cache_control", "diagnostics", "speed", "output_config"] {
            assert!(v.get(dropped).is_none(), "{dropped}: {v}");
        }
        // The structured-output beta's name for the same format.
        let beta = chat(json!({"model": "m", "max_tokens": 5, "messages": user,
            "output_format": {"type": "json_schema", "schema": schema}}));
        assert_eq!(beta["response_format"], expected);
        for (body, param) in [
            (
                json!({"model": "m", "max_tokens": 5, "messages": user, "output_config": {"format": {"type": "json_schema", "schema": schema}},
                       "output_format": {"type": "json_schema", "schema": schema}}),
                "output_format",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": user, "output_config": {"format": {"type": "text"}}}),
                "output_config.format.type",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": user, "output_config": {"format": {"type": "json_schema"}}}),
                "output_config.format.schema",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": user, "output_config": {"effort": 2}}),
                "output_config.effort",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": user, "output_config": "json"}),
                "output_config",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": user, "speed": "warp"}),
                "speed",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": user, "cache_control": "ephemeral"}),
                "cache_control",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": user, "tools": [{"name": "f", "input_schema": {"type": "object"}, "strict": "yes"}]}),
                "tools[0].strict",
            ),
        ] {
            let e = to_chat(body.to_string().as_bytes(), false).expect_err("refused");
            assert_eq!(e.body_json()["error"]["param"], param, "{e}");
        }
    }

    #[test]
    fn an_answer_with_a_tool_call_comes_back_as_blocks() {
        let body = json!({"id": "chatcmpl-abc", "choices": [{"index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": "Let me look.", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": "{\"path\":\"a\"}"}}]}}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 10}}});
        let out: Value = serde_json::from_slice(
            &from_completion(body.to_string().as_bytes(), "claude-x").unwrap(),
        )
        .unwrap();
        assert_eq!(out["id"], "msg_abc");
        assert_eq!(out["model"], "claude-x");
        assert_eq!(out["stop_reason"], "tool_use");
        assert_eq!(
            out["content"][1],
            json!({"type": "tool_use", "id": "call_1", "name": "read_file", "input": {"path": "a"}})
        );
        assert_eq!(
            out["usage"],
            json!({"input_tokens": 20, "output_tokens": 7, "cache_read_input_tokens": 10, "cache_creation_input_tokens": 0})
        );
    }

    #[test]
    fn a_stream_becomes_the_messages_event_sequence() {
        let mut t = StreamTranslator::new("claude-x", 6);
        let mut out = BytesMut::new();
        for chunk in [
            json!({"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]}),
            json!({"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": null}]}),
            json!({"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_9", "type": "function", "function": {"name": "f", "arguments": ""}}]}, "finish_reason": null}]}),
            json!({"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":"}}]}, "finish_reason": null}]}),
            json!({"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}, "finish_reason": "tool_calls"}]}),
            json!({"id": "chatcmpl-1", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3}}),
        ] {
            t.event(chunk.to_string().as_bytes(), &mut out);
        }
        t.event(b"[DONE]", &mut out);
        let text = String::from_utf8(out.to_vec()).unwrap();
        let kinds: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(
            kinds,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert!(text.contains(r#""partial_json":"{\"a\":""#), "{text}");
        assert!(text.contains(r#""stop_reason":"tool_use""#));
        // The prompt's count as known at the start, the exact counts at the end.
        let data: Vec<Value> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect();
        assert_eq!(data[0]["message"]["usage"]["input_tokens"], 6);
        let delta = data.iter().find(|d| d["type"] == "message_delta");
        assert_eq!(
            delta.map(|d| (&d["usage"]["input_tokens"], &d["usage"]["output_tokens"])),
            Some((&json!(5), &json!(3)))
        );
        assert!(t.ended());
    }

    #[test]
    fn errors_take_anthropics_shape_and_overload_is_529() {
        let (s, b) = error_body(
            StatusCode::SERVICE_UNAVAILABLE,
            br#"{"error":{"message":"busy","type":"server_error"}}"#,
        );
        assert_eq!(s.as_u16(), 529);
        assert_eq!(
            serde_json::from_slice::<Value>(&b).unwrap(),
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
        );
        assert_eq!(
            error_kind(StatusCode::TOO_MANY_REQUESTS).1,
            "rate_limit_error"
        );
        assert_eq!(
            error_kind(StatusCode::UNAUTHORIZED).1,
            "authentication_error"
        );
    }
}
