//! The OpenAI Responses dialect (`POST /v1/responses`), stateless core, translated to and from
//! the gateway's one internal request (a chat completion), as [`super::anthropic`] does for
//! Messages. Errors keep OpenAI's shape, which the Responses API shares.
//!
//! Source of the format: OpenAI's Responses API reference (request fields, input items
//! `message` / `function_call` / `function_call_output`, the `response` object, and the
//! streaming events `response.created`, `response.in_progress`, `response.output_item.added`,
//! `response.content_part.added`, `response.output_text.delta`, `response.output_text.done`,
//! `response.content_part.done`, `response.function_call_arguments.delta`,
//! `response.function_call_arguments.done`, `response.output_item.done`, `response.completed`).

use super::chat_chunk::ChatEvent;
use super::dialect::{self, bad, DialectOnly, Renamed};
use super::ApiError;
use bytes::{Bytes, BytesMut};
use serde_json::{json, Map, Value};

/// What the translation keeps of the client's request for the way back.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    /// The model the client named.
    pub model: String,
    pub stream: bool,
    /// Request fields the `response` object repeats (`instructions`, `max_output_tokens`,
    /// `temperature`, `top_p`, `tools`, `tool_choice`, `text`, `metadata`, ...).
    pub echo: Map<String, Value>,
    /// The first field that only the Responses API serves, as a `param` path
    /// (`reasoning.summary`, `include`, `tools[1]`, `input[4]`, `input[0].content[1]`): the
    /// request can then only be passed as it came to a model that serves the Responses API.
    pub responses_only: Option<String>,
    /// Where the translation put a field of the request under chat's name: (chat's name, the
    /// request's own), for the errors that name it ([`dialect::renamed_error`]): `tools[1]` for
    /// a web search tool's `web_search_options`, `max_output_tokens` for `max_tokens`.
    pub renamed: Renamed,
}

/// Chat's names of the Responses fields the translation renames, besides a web search tool
/// (`tools[i]`, chat's `web_search_options`): chat's `messages` hold `instructions` and `input`,
/// and only `input` is the client's conversation.
const RENAMED: [(&str, &str); 5] = [
    ("max_tokens", "max_output_tokens"),
    ("reasoning_effort", "reasoning.effort"),
    ("verbosity", "text.verbosity"),
    ("response_format", "text.format"),
    ("messages", "input"),
];

/// Fields of the Responses API this gateway cannot honour, and why.
const REFUSED: &[(&str, &str)] = &[
    (
        "previous_response_id",
        "the gateway keeps no responses: send the whole conversation in `input`",
    ),
    (
        "conversation",
        "the gateway keeps no conversations: send the whole conversation in `input`",
    ),
    ("background", "background mode is not supported"),
    ("background_options", "background mode is not supported"),
    ("prompt", "stored prompts are not supported"),
];

/// Chat's `web_search_options` for a Responses web search tool (`web_search`,
/// `web_search_preview` and their dated names): its `search_context_size`, and its approximate
/// `user_location` (`city`, `region`, `country`, `timezone`) under chat's `approximate`.
fn web_search_options(tool: &Value) -> Value {
    let mut options = Map::new();
    if let Some(size) = tool.get("search_context_size").filter(|s| s.is_string()) {
        options.insert("search_context_size".into(), size.clone());
    }
    if let Some(place) = tool.get("user_location").and_then(Value::as_object) {
        let approximate: Map<String, Value> = ["city", "region", "country", "timezone"]
            .into_iter()
            .filter_map(|k| {
                Some((
                    k.to_string(),
                    place.get(k).filter(|v| v.is_string())?.clone(),
                ))
            })
            .collect();
        options.insert(
            "user_location".into(),
            json!({"type": "approximate", "approximate": approximate}),
        );
    }
    Value::Object(options)
}

/// Translates a Responses request body into an OpenAI chat completion request body.
///
/// Shapes: `model` (required); `input` as a string or a list of items: messages (`role`
/// user/system/developer/assistant, `content` a string or `input_text` / `input_image` /
/// `output_text` parts), `function_call` and `function_call_output`; `instructions`; function
/// `tools` and `tool_choice`; a web search tool (chat's `web_search_options`: [`web_search_options`]);
/// `max_output_tokens`, `temperature`, `top_p`, `user`,
/// `safety_identifier`, `prompt_cache_key`, `prompt_cache_retention`, `parallel_tool_calls`,
/// `metadata`, `prompt_cache_options`; `reasoning.effort` (chat's `reasoning_effort`);
/// `text.format` (`text`, `json_object`, `json_schema`) and `text.verbosity` (chat's
/// `verbosity`); `stream`; `refusal` parts of assistant messages (as their text).
/// `store: false`, `truncation: disabled`, `stream_options`, `service_tier` and
/// `client_metadata` are accepted.
///
/// What only the Responses API serves is not refused but recorded in
/// [`Inbound::responses_only`] (the request then goes only to a model that serves the
/// Responses API, as it came): `reasoning.summary`, a non-empty `include`, `max_tool_calls`,
/// `top_logprobs`, `truncation: auto`, `context_management`, `moderation`, `image`,
/// `access_programs`, tools other than functions and web search (built-in, custom, MCP; a web
/// search with domain `filters`, or a second one) and a `tool_choice`
/// that names one, `input_file` parts and images by `file_id`, and input items other than
/// messages and function calls
/// (reasoning items, custom and shell tool calls and their outputs, built-in tool calls). The
/// internal request still carries what a person or a tool wrote in those items (a tool call's
/// input, its output's text) for the classifier, the private-data scan and the token estimate,
/// and leaves out the rest (reasoning, which is the model's own).
///
/// Errors: a 400 naming the field: `previous_response_id`, `conversation`, `store: true`,
/// `background` (and its `background_options`), stored prompts, `item_reference` items (all need state the gateway does not
/// keep), and anything malformed.
pub fn to_chat(body: &[u8]) -> Result<(Vec<u8>, Inbound), ApiError> {
    from_object(dialect::request_object(body)?)
}

/// [`to_chat`] of a body read already.
fn from_object(obj: Map<String, Value>) -> Result<(Vec<u8>, Inbound), ApiError> {
    for (field, why) in REFUSED {
        if obj
            .get(*field)
            .is_some_and(|v| !v.is_null() && *v != Value::Bool(false))
        {
            return Err(bad(format!("`{field}` is not supported: {why}"), field));
        }
    }
    if obj.get("store") == Some(&Value::Bool(true)) {
        return Err(bad(
            "`store: true` is not supported: the gateway keeps no responses (send `store: false` or leave it out)",
            "store",
        ));
    }
    for key in obj.keys() {
        if !matches!(
            key.as_str(),
            "model"
                | "input"
                | "instructions"
                | "tools"
                | "tool_choice"
                | "max_output_tokens"
                | "temperature"
                | "top_p"
                | "user"
                | "safety_identifier"
                | "prompt_cache_key"
                | "prompt_cache_retention"
                | "parallel_tool_calls"
                | "metadata"
                | "text"
                | "reasoning"
                | "include"
                | "max_tool_calls"
                | "top_logprobs"
                | "stream"
                | "stream_options"
                | "store"
                | "truncation"
                | "previous_response_id"
                | "background"
                | "conversation"
                | "prompt"
                | "service_tier"
                | "client_metadata"
                | "prompt_cache_options"
                | "context_management"
                | "moderation"
                | "image"
                | "access_programs"
                | "background_options"
        ) {
            return Err(bad(
                format!("`{key}` is not supported here (docs/api.md lists what is)"),
                key,
            ));
        }
    }
    let model = dialect::model(&obj)?;
    let stream = dialect::stream(&obj)?;
    let mut out = Map::new();
    let mut echo = Map::new();
    // The request's own settings are named before the items of its conversation.
    let mut only = DialectOnly::default();
    match obj.get("truncation") {
        None | Some(Value::Null) => {}
        Some(t) if t == "disabled" => {}
        // Dropping the conversation's oldest items to fit the context window is the
        // Responses API's own doing.
        Some(t) if t == "auto" => only.mark("truncation"),
        Some(_) => {
            return Err(bad(
                "`truncation` must be `auto` or `disabled`",
                "truncation",
            ))
        }
    }
    // Server-side compaction, moderation, request-level image options and access programs:
    // work the Responses API's own service does.
    for field in [
        "context_management",
        "moderation",
        "image",
        "access_programs",
    ] {
        match obj.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::Array(a)) if a.is_empty() => {}
            Some(_) => only.mark(field),
        }
    }
    // Codex CLI's own metadata for OpenAI (its session and turn): the chat API has no such
    // field, and nothing here reads it; a request passed through keeps it.
    if let Some(m) = obj.get("client_metadata").filter(|m| !m.is_null()) {
        if !m.is_object() {
            return Err(bad(
                "`client_metadata` must be an object",
                "client_metadata",
            ));
        }
    }
    let mut only_in_input = DialectOnly::default();
    let mut renamed = dialect::renamed(&RENAMED);
    out.insert("model".into(), json!(model));
    let mut messages = vec![];
    match obj.get("instructions") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            echo.insert("instructions".into(), json!(s));
            messages.push(json!({"role": "system", "content": s}));
        }
        Some(_) => return Err(bad("`instructions` must be a string", "instructions")),
    }
    match obj.get("input") {
        Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) if !items.is_empty() => {
            for (i, item) in items.iter().enumerate() {
                input_item(
                    item,
                    &format!("input[{i}]"),
                    &mut messages,
                    &mut only_in_input,
                )?;
            }
        }
        _ => {
            return Err(bad(
                "`input` is required: a string or a non-empty list of items",
                "input",
            ))
        }
    }
    if messages.is_empty() {
        // Input items the internal request does not carry (reasoning alone): the policy reads
        // an empty turn, and only a model that serves the Responses API is sent them.
        messages.push(json!({"role": "user", "content": ""}));
    }
    out.insert("messages".into(), Value::Array(messages));
    match obj.get("max_output_tokens") {
        None | Some(Value::Null) => {}
        Some(n) => {
            let n = n.as_u64().filter(|n| *n >= 1).ok_or_else(|| {
                bad(
                    "`max_output_tokens` must be an integer of at least 1",
                    "max_output_tokens",
                )
            })?;
            out.insert("max_tokens".into(), json!(n));
            echo.insert("max_output_tokens".into(), json!(n));
        }
    }
    for field in ["temperature", "top_p"] {
        match obj.get(field) {
            None | Some(Value::Null) => {}
            Some(n) if n.is_number() => {
                out.insert(field.into(), n.clone());
                echo.insert(field.into(), n.clone());
            }
            Some(_) => return Err(bad(format!("`{field}` must be a number"), field)),
        }
    }
    for (field, check) in [
        ("user", Value::is_string as fn(&Value) -> bool),
        ("safety_identifier", Value::is_string),
        ("prompt_cache_key", Value::is_string),
        ("prompt_cache_retention", Value::is_string),
        ("parallel_tool_calls", Value::is_boolean),
    ] {
        if let Some(x) = obj.get(field).filter(|x| !x.is_null()) {
            if !check(x) {
                return Err(bad(format!("`{field}` has the wrong type"), field));
            }
            out.insert(field.into(), x.clone());
            echo.insert(field.into(), x.clone());
        }
    }
    if let Some(m) = obj.get("metadata").filter(|m| !m.is_null()) {
        if !m.is_object() {
            return Err(bad("`metadata` must be an object", "metadata"));
        }
        echo.insert("metadata".into(), m.clone());
    }
    // Chat completions take the same prompt-cache options.
    if let Some(o) = obj.get("prompt_cache_options").filter(|o| !o.is_null()) {
        if !o.is_object() {
            return Err(bad(
                "`prompt_cache_options` must be an object",
                "prompt_cache_options",
            ));
        }
        out.insert("prompt_cache_options".into(), o.clone());
        echo.insert("prompt_cache_options".into(), o.clone());
    }
    if let Some(r) = obj.get("reasoning").filter(|r| !r.is_null()) {
        let Some(r) = r.as_object() else {
            return Err(bad("`reasoning` must be an object", "reasoning"));
        };
        match r.get("effort") {
            None | Some(Value::Null) => {}
            Some(Value::String(e)) => {
                out.insert("reasoning_effort".into(), json!(e));
            }
            Some(_) => {
                return Err(bad(
                    "`reasoning.effort` must be a string",
                    "reasoning.effort",
                ))
            }
        }
        // A summary of the model's reasoning is output only the Responses API gives.
        for field in ["summary", "generate_summary"] {
            if r.get(field).is_some_and(|v| !v.is_null()) {
                only.mark(&format!("reasoning.{field}"));
            }
        }
        echo.insert("reasoning".into(), Value::Object(r.clone()));
    }
    match obj.get("include") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) if list.iter().all(Value::is_string) => {
            if !list.is_empty() {
                only.mark("include");
            }
        }
        Some(_) => return Err(bad("`include` must be a list of strings", "include")),
    }
    for field in ["max_tool_calls", "top_logprobs"] {
        match obj.get(field) {
            None | Some(Value::Null) => {}
            Some(n) if n.is_u64() => {
                if field == "max_tool_calls" || n.as_u64() != Some(0) {
                    only.mark(field);
                }
            }
            Some(_) => {
                return Err(bad(
                    format!("`{field}` must be a non-negative integer"),
                    field,
                ))
            }
        }
    }
    if let Some(o) = obj.get("stream_options").filter(|o| !o.is_null()) {
        // `include_obfuscation` pads the events of OpenAI's own streams; the translated
        // stream has no padding to leave out.
        if !o.is_object() {
            return Err(bad("`stream_options` must be an object", "stream_options"));
        }
    }
    if let Some(tools) = obj.get("tools").filter(|t| !t.is_null()) {
        let Some(list) = tools.as_array() else {
            return Err(bad("`tools` must be a list", "tools"));
        };
        let mut fns = vec![];
        for (i, t) in list.iter().enumerate() {
            let p = format!("tools[{i}]");
            let kind = t.get("type").and_then(Value::as_str);
            match kind {
                Some("function") => {}
                // Web search: chat's `web_search_options`, which any model with the
                // `web_search` capability answers (one such tool; domain filters only the
                // Responses API serves).
                Some(k)
                    if k.starts_with("web_search")
                        && t.get("filters").is_none_or(Value::is_null)
                        && !out.contains_key("web_search_options") =>
                {
                    out.insert("web_search_options".into(), web_search_options(t));
                    renamed.push(("web_search_options".into(), p));
                    continue;
                }
                // Built-in tools (web search, file search, computer use, code interpreter,
                // image generation, shell), MCP servers and custom (free-form) tools.
                Some(_) => {
                    only.mark(&p);
                    continue;
                }
                None => return Err(bad("a tool needs a `type`", &p)),
            }
            let name = t
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("a function tool needs a `name`", &p))?;
            let mut f = json!({"name": name, "parameters": t.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}}))});
            if let Some(d) = t.get("description").and_then(Value::as_str) {
                f["description"] = json!(d);
            }
            if let Some(s) = t.get("strict").and_then(Value::as_bool) {
                f["strict"] = json!(s);
            }
            // Tools this list takes out (a web search) move the later ones up in chat's.
            if fns.len() != i {
                renamed.push((format!("tools[{}]", fns.len()).into(), p));
            }
            fns.push(json!({"type": "function", "function": f}));
        }
        echo.insert("tools".into(), tools.clone());
        if !fns.is_empty() {
            out.insert("tools".into(), Value::Array(fns));
        }
    }
    if let Some(choice) = obj.get("tool_choice").filter(|c| !c.is_null()) {
        let mapped = match choice {
            Value::String(s) if matches!(s.as_str(), "auto" | "none" | "required") => {
                Some(choice.clone())
            }
            Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
                let name = o.get("name").and_then(Value::as_str).ok_or_else(|| {
                    bad(
                        "`tool_choice` of type `function` needs a `name`",
                        "tool_choice.name",
                    )
                })?;
                Some(json!({"type": "function", "function": {"name": name}}))
            }
            // A built-in or custom tool, `allowed_tools`, an MCP server's tool.
            Value::Object(o) if o.get("type").is_some_and(Value::is_string) => {
                only.mark("tool_choice");
                None
            }
            _ => {
                return Err(bad(
                    "`tool_choice` must be auto, none, required or a tool",
                    "tool_choice",
                ))
            }
        };
        echo.insert("tool_choice".into(), choice.clone());
        if let Some(mapped) = mapped {
            out.insert("tool_choice".into(), mapped);
        }
    }
    if let Some(text) = obj.get("text").filter(|t| !t.is_null()) {
        echo.insert("text".into(), text.clone());
        match text.get("verbosity") {
            None | Some(Value::Null) => {}
            Some(Value::String(v)) => {
                out.insert("verbosity".into(), json!(v));
            }
            Some(_) => return Err(bad("`text.verbosity` must be a string", "text.verbosity")),
        }
        if let Some(format) = text.get("format").filter(|f| !f.is_null()) {
            match format.get("type").and_then(Value::as_str) {
                Some("text") => {}
                Some("json_object") => {
                    out.insert("response_format".into(), json!({"type": "json_object"}));
                }
                Some("json_schema") => {
                    let name = format
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("response");
                    let schema =
                        format
                            .get("schema")
                            .filter(|s| s.is_object())
                            .ok_or_else(|| {
                                bad(
                                    "a json_schema format needs a `schema` object",
                                    "text.format.schema",
                                )
                            })?;
                    let mut js = json!({"name": name, "schema": schema});
                    if let Some(s) = format.get("strict").and_then(Value::as_bool) {
                        js["strict"] = json!(s);
                    }
                    if let Some(d) = format.get("description").and_then(Value::as_str) {
                        js["description"] = json!(d);
                    }
                    out.insert(
                        "response_format".into(),
                        json!({"type": "json_schema", "json_schema": js}),
                    );
                }
                _ => {
                    return Err(bad(
                        "`text.format.type` must be text, json_object or json_schema",
                        "text.format.type",
                    ))
                }
            }
        }
    }
    if stream {
        out.insert("stream".into(), json!(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let bytes = serde_json::to_vec(&Value::Object(out)).map_err(|_| ApiError::Internal)?;
    Ok((
        bytes,
        Inbound {
            model: model.to_string(),
            stream,
            echo,
            responses_only: only.0.or(only_in_input.0),
            renamed,
        },
    ))
}

/// Reads a compaction request (`POST /v1/responses/compact`: `model`, the conversation in
/// `input` and `instructions`, and what Codex CLI sends beside them, `tools`, `reasoning`,
/// `text`, `parallel_tool_calls`) as [`to_chat`] reads a Responses request, for the policy, the
/// private-data scan and the budgets. Its answer, a `response.compaction` whose last item holds
/// the conversation encrypted, only the Responses API writes, so the request always needs the
/// `responses` capability ([`Inbound::responses_only`] is `input` when nothing in it asks
/// sooner) and is passed on as it came.
///
/// Errors: those of [`to_chat`], and a 400 naming `stream` when it is `true` (a compaction
/// answers in one JSON body).
pub fn compaction_to_chat(body: &[u8]) -> Result<(Vec<u8>, Inbound), ApiError> {
    let (bytes, mut inbound) = to_chat(body)?;
    if inbound.stream {
        return Err(bad(
            "`stream` is not supported by `/v1/responses/compact`: a compaction is answered in one JSON body",
            "stream",
        ));
    }
    inbound.responses_only.get_or_insert_with(|| "input".into());
    Ok((bytes, inbound))
}

/// Reads a token-count request (`POST /v1/responses/input_tokens`) as [`to_chat`] reads a
/// Responses request: the same fields, with `model` optional (`auto` when left out: the count
/// is for the model the policy would pick) and `personality` (a ChatGPT setting) accepted and
/// not read.
///
/// Errors: those of [`to_chat`].
pub fn count_to_chat(body: &[u8]) -> Result<(Vec<u8>, Inbound), ApiError> {
    let mut obj = dialect::request_object(body)?;
    obj.remove("personality");
    if obj.get("model").is_none_or(Value::is_null) {
        obj.insert("model".into(), json!("auto"));
    }
    from_object(obj)
}

/// The answer of `POST /v1/responses/input_tokens`: `{"object": "response.input_tokens",
/// "input_tokens": n}`.
pub fn input_tokens_body(input_tokens: u64) -> Bytes {
    Bytes::from(
        json!({"object": "response.input_tokens", "input_tokens": input_tokens}).to_string(),
    )
}

/// Appends a tool call to the assistant turn it belongs to: consecutive calls are one turn.
fn push_call(out: &mut Vec<Value>, id: &str, name: &str, args: &str) {
    let call = json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}});
    if let Some(last) = out
        .last_mut()
        .filter(|m| m["role"] == "assistant" && m.get("tool_calls").is_some())
    {
        if let Some(calls) = last["tool_calls"].as_array_mut() {
            calls.push(call);
            return;
        }
    }
    out.push(json!({"role": "assistant", "content": Value::Null, "tool_calls": [call]}));
}

/// A tool call's output as text: a string, or a list of content parts whose text parts count
/// (other parts, such as images or files, mark the request as one only the Responses API
/// serves), or any other JSON as it is written.
fn output_text(item: &Value, param: &str, only: &mut DialectOnly) -> Result<String, ApiError> {
    Ok(match item.get("output") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                match (part.get("type").and_then(Value::as_str), part.get("text")) {
                    (Some("input_text" | "output_text"), Some(Value::String(t))) => {
                        text.push_str(t)
                    }
                    (Some(_), _) => only.mark(&format!("{param}.output[{j}]")),
                    (None, _) => {
                        return Err(bad(
                            "an output part needs a `type`",
                            &format!("{param}.output[{j}]"),
                        ))
                    }
                }
            }
            text
        }
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    })
}

/// One input item onto the chat messages; items only the Responses API serves are marked in
/// `only` and carried as the chat turns closest to them (see [`to_chat`]).
fn input_item(
    item: &Value,
    param: &str,
    out: &mut Vec<Value>,
    only: &mut DialectOnly,
) -> Result<(), ApiError> {
    let kind = item.get("type").and_then(Value::as_str);
    match kind {
        Some("function_call") => {
            let id = item.get("call_id").and_then(Value::as_str);
            let name = item.get("name").and_then(Value::as_str);
            let (Some(id), Some(name)) = (id, name) else {
                return Err(bad("a function_call item needs `call_id` and `name`", param));
            };
            let args = item.get("arguments").and_then(Value::as_str).unwrap_or("{}");
            push_call(out, id, name, args);
            Ok(())
        }
        Some("function_call_output") => {
            let id = item
                .get("call_id")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("a function_call_output item needs `call_id`", param))?;
            let output = output_text(item, param, only)?;
            out.push(json!({"role": "tool", "tool_call_id": id, "content": output}));
            Ok(())
        }
        Some("item_reference") => Err(bad(
            "`item_reference` items are not supported: the gateway keeps no items (send the item itself)",
            param,
        )),
        // The model's own reasoning (encrypted, or a summary of it): passed on as it came,
        // read by nothing here.
        Some("reasoning") => {
            only.mark(param);
            Ok(())
        }
        // Custom, shell, patch, computer and built-in tool calls, and their outputs: the call's
        // input and the output's text are what the conversation holds.
        Some(t) if t.ends_with("_call_output") => {
            only.mark(param);
            if let Some(id) = item.get("call_id").and_then(Value::as_str) {
                let output = output_text(item, param, only)?;
                out.push(json!({"role": "tool", "tool_call_id": id, "content": output}));
            }
            Ok(())
        }
        Some(t) if t.ends_with("_call") => {
            only.mark(param);
            if let Some(id) = item.get("call_id").and_then(Value::as_str) {
                let name = item
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or(t.trim_end_matches("_call"));
                let args = match ["arguments", "input", "action"].iter().find_map(|k| item.get(*k)) {
                    Some(Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                    None => "{}".to_string(),
                };
                push_call(out, id, name, &args);
            }
            Ok(())
        }
        None | Some("message") => {
            let role = item
                .get("role")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("a message item needs a `role`", param))?;
            let role = match role {
                "user" | "system" | "assistant" => role,
                "developer" => "system",
                other => return Err(bad(format!("role `{other}` is not supported"), &format!("{param}.role"))),
            };
            let content = match item.get("content") {
                Some(Value::String(s)) => json!(s),
                Some(Value::Array(parts)) => {
                    let mut out_parts = vec![];
                    for (j, p) in parts.iter().enumerate() {
                        let pp = format!("{param}.content[{j}]");
                        match p.get("type").and_then(Value::as_str) {
                            Some("input_text" | "output_text" | "text") => {
                                let t = p.get("text").and_then(Value::as_str).ok_or_else(|| bad("a text part needs `text`", &pp))?;
                                out_parts.push(json!({"type": "text", "text": t}));
                            }
                            // An answer's refusal, given back in a later turn: what the model said.
                            Some("refusal") if role == "assistant" => {
                                let t = p.get("refusal").and_then(Value::as_str).ok_or_else(|| bad("a refusal part needs `refusal`", &pp))?;
                                out_parts.push(json!({"type": "text", "text": t}));
                            }
                            // Files, and images by file id, are read from the Responses API's
                            // own storage.
                            Some("input_file") => only.mark(&pp),
                            Some("input_image") if p.get("image_url").is_none_or(Value::is_null) => {
                                if !p.get("file_id").is_some_and(Value::is_string) {
                                    return Err(bad("an input_image needs `image_url` or `file_id`", &pp));
                                }
                                only.mark(&pp);
                            }
                            Some("input_image") => {
                                let url = p
                                    .get("image_url")
                                    .and_then(Value::as_str)
                                    .ok_or_else(|| bad("`image_url` must be a string", &pp))?;
                                let mut image = json!({"url": url});
                                if let Some(d) = p.get("detail").and_then(Value::as_str) {
                                    image["detail"] = json!(d);
                                }
                                out_parts.push(json!({"type": "image_url", "image_url": image}));
                            }
                            Some(other) => {
                                return Err(bad(format!("content parts of type `{other}` are not supported (input_text, input_image, input_file, output_text, refusal)"), &pp))
                            }
                            None => return Err(bad("a content part needs a `type`", &pp)),
                        }
                    }
                    if role != "user" {
                        // System and assistant turns are text in chat completions.
                        let text: Vec<&str> = out_parts.iter().filter_map(|p| p["text"].as_str()).collect();
                        if text.len() != out_parts.len() {
                            return Err(bad("only user messages may hold images", param));
                        }
                        json!(text.join(""))
                    } else if out_parts.is_empty() {
                        // Only files, which the internal request does not carry.
                        json!("")
                    } else {
                        Value::Array(out_parts)
                    }
                }
                _ => return Err(bad("`content` must be a string or a list of parts", param)),
            };
            out.push(json!({"role": role, "content": content}));
            Ok(())
        }
        // Other items the Responses API defines (MCP approvals and tool lists, compaction,
        // ...): nothing here reads them.
        Some(_) => {
            only.mark(param);
            Ok(())
        }
    }
}

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
    let (input, output) = (n("prompt_tokens"), n("completion_tokens"));
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input.saturating_add(output),
    })
}

fn bare_id(id: Option<&str>) -> String {
    let id = id.unwrap_or("");
    id.strip_prefix("chatcmpl-").unwrap_or(id).to_string()
}

/// The `response` object around `output`, repeating the request's settings.
/// The Responses API's `incomplete_details.reason` for a chat `finish_reason` that stops an
/// answer short: `length` (`max_output_tokens`) or `content_filter`.
fn incomplete_reason(finish: Option<&str>) -> Option<&'static str> {
    match finish {
        Some("length") => Some("max_output_tokens"),
        Some("content_filter") => Some("content_filter"),
        _ => None,
    }
}

fn response_object(
    id: &str,
    inbound: &Inbound,
    status: &str,
    output: Value,
    usage: Value,
    incomplete: Option<&str>,
) -> Value {
    let mut r = json!({
        "id": format!("resp_{id}"),
        "object": "response",
        "created_at": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "status": status,
        "model": inbound.model,
        "output": output,
        "usage": usage,
        "error": Value::Null,
        "incomplete_details": match incomplete { Some(reason) => json!({"reason": reason}), None => Value::Null },
        "instructions": Value::Null,
        "max_output_tokens": Value::Null,
        "parallel_tool_calls": true,
        "temperature": Value::Null,
        "top_p": Value::Null,
        "tool_choice": "auto",
        "tools": [],
        "text": {"format": {"type": "text"}},
        "store": false,
        "metadata": {},
    });
    if let Some(o) = r.as_object_mut() {
        for (k, v) in &inbound.echo {
            o.insert(k.clone(), v.clone());
        }
    }
    r
}

/// A chat answer's `url_citation` annotation (`{"type": "url_citation", "url_citation":
/// {start_index, end_index, url, title}}`) in the Responses shape (its members beside
/// `type`); `None` for any other annotation.
fn annotation(a: &Value) -> Option<Value> {
    let c = a
        .get("url_citation")
        .filter(|_| a.get("type").and_then(Value::as_str) == Some("url_citation"))?;
    Some(json!({"type": "url_citation",
        "start_index": c.get("start_index").cloned().unwrap_or(Value::Null),
        "end_index": c.get("end_index").cloned().unwrap_or(Value::Null),
        "url": c.get("url").cloned().unwrap_or(Value::Null),
        "title": c.get("title").cloned().unwrap_or(Value::Null)}))
}

/// Translates an OpenAI chat completion body into a `response` object.
pub fn from_completion(body: &[u8], inbound: &Inbound) -> Result<Bytes, ApiError> {
    let (v, choice) = dialect::chat_answer(body)?;
    let id = bare_id(v.get("id").and_then(Value::as_str));
    let msg = &choice["message"];
    let mut output = vec![];
    if let Some(t) = msg
        .get("content")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        let annotations: Vec<Value> = msg
            .get("annotations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(annotation)
            .collect();
        output.push(json!({"type": "message", "id": format!("msg_{id}"), "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": t, "annotations": annotations}]}));
    }
    for (i, call) in msg
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        output.push(json!({"type": "function_call", "id": format!("fc_{id}_{i}"), "status": "completed",
            "call_id": call.get("id").and_then(Value::as_str).unwrap_or(""),
            "name": call.pointer("/function/name").and_then(Value::as_str).unwrap_or(""),
            "arguments": call.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("{}")}));
    }
    let incomplete = incomplete_reason(choice.get("finish_reason").and_then(Value::as_str));
    let status = if incomplete.is_some() {
        "incomplete"
    } else {
        "completed"
    };
    let r = response_object(
        &id,
        inbound,
        status,
        Value::Array(output),
        usage_of(v.get("usage")),
        incomplete,
    );
    Ok(Bytes::from(r.to_string()))
}

#[derive(Debug)]
enum Item {
    Text {
        index: usize,
        text: String,
        /// The text's annotations, in the Responses shape.
        annotations: Vec<Value>,
    },
    Call {
        index: usize,
        call: u64,
        id: String,
        call_id: String,
        name: String,
        args: String,
    },
}

/// Turns an OpenAI chunk stream into the Responses event stream (see the module documentation),
/// with `sequence_number`s from 0; the final `response.completed` carries the whole output and
/// the usage. An error event of the stream becomes an `error` event.
#[derive(Debug)]
pub struct StreamTranslator {
    inbound: Inbound,
    id: String,
    seq: u64,
    started: bool,
    open: Option<Item>,
    done: Vec<Value>,
    /// Why the answer stopped short (`incomplete_details.reason`), when it did.
    incomplete: Option<&'static str>,
    usage: Option<Value>,
    ended: bool,
}

impl StreamTranslator {
    pub fn new(inbound: &Inbound) -> StreamTranslator {
        StreamTranslator {
            inbound: inbound.clone(),
            id: String::new(),
            seq: 0,
            started: false,
            open: None,
            done: vec![],
            incomplete: None,
            usage: None,
            ended: false,
        }
    }

    fn emit(&mut self, out: &mut BytesMut, kind: &str, mut data: Value) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        out.extend_from_slice(data.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
    }

    fn start(&mut self, id: Option<&str>, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        self.id = bare_id(id);
        let r = response_object(
            &self.id,
            &self.inbound,
            "in_progress",
            json!([]),
            Value::Null,
            None,
        );
        self.emit(out, "response.created", json!({"response": r.clone()}));
        self.emit(out, "response.in_progress", json!({"response": r}));
    }

    fn close(&mut self, out: &mut BytesMut) {
        match self.open.take() {
            Some(Item::Text {
                index,
                text,
                annotations,
            }) => {
                let item_id = format!("msg_{}", self.id);
                let part = json!({"type": "output_text", "text": text, "annotations": annotations});
                self.emit(out, "response.output_text.done", json!({"item_id": item_id, "output_index": index, "content_index": 0, "text": text}));
                self.emit(out, "response.content_part.done", json!({"item_id": item_id, "output_index": index, "content_index": 0, "part": part}));
                let item = json!({"type": "message", "id": item_id, "status": "completed", "role": "assistant", "content": [part]});
                self.emit(
                    out,
                    "response.output_item.done",
                    json!({"output_index": index, "item": item.clone()}),
                );
                self.done.push(item);
            }
            Some(Item::Call {
                index,
                id,
                call_id,
                name,
                args,
                ..
            }) => {
                self.emit(
                    out,
                    "response.function_call_arguments.done",
                    json!({"item_id": id, "output_index": index, "arguments": args}),
                );
                let item = json!({"type": "function_call", "id": id, "status": "completed", "call_id": call_id, "name": name, "arguments": args});
                self.emit(
                    out,
                    "response.output_item.done",
                    json!({"output_index": index, "item": item.clone()}),
                );
                self.done.push(item);
            }
            None => {}
        }
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
                // As the API ends a failed stream: after `response.created` (which clients
                // expect first), an `error` event, then `response.failed` with the output so far
                // and the error.
                self.start(None, out);
                let error =
                    json!({"code": "server_error", "message": message, "param": Value::Null});
                self.emit(out, "error", error);
                let mut r = response_object(
                    &self.id,
                    &self.inbound,
                    "failed",
                    Value::Array(self.done.clone()),
                    usage_of(self.usage.as_ref()),
                    None,
                );
                r["error"] = json!({"code": "server_error", "message": message});
                self.emit(out, "response.failed", json!({"response": r}));
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
            let item_id = format!("msg_{}", self.id);
            if !matches!(self.open, Some(Item::Text { .. })) {
                self.close(out);
                let index = self.done.len();
                let item = json!({"type": "message", "id": item_id, "status": "in_progress", "role": "assistant", "content": []});
                self.emit(
                    out,
                    "response.output_item.added",
                    json!({"output_index": index, "item": item}),
                );
                let part = json!({"type": "output_text", "text": "", "annotations": []});
                self.emit(out, "response.content_part.added", json!({"item_id": item_id, "output_index": index, "content_index": 0, "part": part}));
                self.open = Some(Item::Text {
                    index,
                    text: String::new(),
                    annotations: vec![],
                });
            }
            if let Some(Item::Text { index, text, .. }) = &mut self.open {
                text.push_str(t);
                let delta = json!({"item_id": item_id, "output_index": *index, "content_index": 0, "delta": t});
                self.emit(out, "response.output_text.delta", delta);
            }
        }
        // Citations of the text so far (a chunk of their own, after the text they cite).
        for a in c.annotations.iter().filter_map(annotation) {
            let item_id = format!("msg_{}", self.id);
            if let Some(Item::Text {
                index, annotations, ..
            }) = &mut self.open
            {
                let event = json!({"item_id": item_id, "output_index": *index, "content_index": 0,
                    "annotation_index": annotations.len(), "annotation": a});
                annotations.push(a);
                self.emit(out, "response.output_text.annotation.added", event);
            }
        }
        for call in &c.calls {
            if !matches!(&self.open, Some(Item::Call { call: n, .. }) if *n == call.index) {
                self.close(out);
                let index = self.done.len();
                let id = format!("fc_{}_{}", self.id, call.index);
                let call_id = call.id.clone().unwrap_or_default();
                let name = call.name.clone().unwrap_or_default();
                let item = json!({"type": "function_call", "id": id, "status": "in_progress", "call_id": call_id, "name": name, "arguments": ""});
                self.emit(
                    out,
                    "response.output_item.added",
                    json!({"output_index": index, "item": item}),
                );
                self.open = Some(Item::Call {
                    index,
                    call: call.index,
                    id,
                    call_id,
                    name,
                    args: String::new(),
                });
            }
            if let (
                Some(piece),
                Some(Item::Call {
                    index, id, args, ..
                }),
            ) = (&call.args, &mut self.open)
            {
                args.push_str(piece);
                let delta = json!({"item_id": id.clone(), "output_index": *index, "delta": piece});
                self.emit(out, "response.function_call_arguments.delta", delta);
            }
        }
        if let Some(reason) = incomplete_reason(c.finish.as_deref()) {
            self.incomplete = Some(reason);
        }
    }

    /// Ends the response: the open item is finished and `response.completed` (or
    /// `response.incomplete`) carries the output and the usage.
    pub fn end(&mut self, out: &mut BytesMut) {
        if self.ended {
            return;
        }
        self.start(None, out);
        self.close(out);
        let (status, kind) = if self.incomplete.is_some() {
            ("incomplete", "response.incomplete")
        } else {
            ("completed", "response.completed")
        };
        let r = response_object(
            &self.id,
            &self.inbound,
            status,
            Value::Array(self.done.clone()),
            usage_of(self.usage.as_ref()),
            self.incomplete,
        );
        self.emit(out, kind, json!({"response": r}));
        self.ended = true;
    }

    pub fn ended(&self) -> bool {
        self.ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: Value) -> Value {
        let (b, _) = to_chat(body.to_string().as_bytes()).expect("translates");
        serde_json::from_slice(&b).unwrap()
    }

    /// The `event:` names of an SSE text, in order.
    fn event_names(text: &str) -> Vec<&str> {
        text.lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect()
    }

    /// The last event's data, parsed.
    fn last_data(text: &str) -> Value {
        text.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .next_back()
            .and_then(|d| serde_json::from_str(d).ok())
            .expect("a JSON event")
    }

    #[test]
    fn input_items_become_chat_messages() {
        let v = chat(
            json!({"model": "auto", "instructions": "Be brief.", "max_output_tokens": 50,
            "input": [
                {"role": "developer", "content": "Answer in French."},
                {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}, {"type": "input_image", "image_url": "data:image/png;base64,AA=="}]},
                {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
                {"type": "function_call", "call_id": "c2", "name": "get_time", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
                {"type": "function_call_output", "call_id": "c2", "output": "noon"}],
            "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
            "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": true}}}),
        );
        assert_eq!(
            v["messages"][0],
            json!({"role": "system", "content": "Be brief."})
        );
        assert_eq!(
            v["messages"][1],
            json!({"role": "system", "content": "Answer in French."})
        );
        assert_eq!(
            v["messages"][2]["content"][1]["image_url"]["url"],
            "data:image/png;base64,AA=="
        );
        assert_eq!(
            v["messages"][3]["tool_calls"].as_array().map(Vec::len),
            Some(2)
        );
        assert_eq!(
            v["messages"][5],
            json!({"role": "tool", "tool_call_id": "c2", "content": "noon"})
        );
        // A tool output sent as text parts reaches the model as its text.
        let parts = chat(json!({"model": "auto", "input": [
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1",
             "output": [{"type": "input_text", "text": "18 "}, {"type": "input_text", "text": "C"}]}]}));
        assert_eq!(parts["messages"][1]["content"], "18 C");
        assert_eq!(v["max_tokens"], 50);
        assert_eq!(v["response_format"]["json_schema"]["strict"], true);
        assert_eq!(v["tools"][0]["function"]["name"], "get_weather");
    }

    #[test]
    fn state_is_refused_by_name() {
        for (body, param) in [
            (
                json!({"model": "m", "input": "x", "previous_response_id": "resp_1"}),
                "previous_response_id",
            ),
            (json!({"model": "m", "input": "x", "store": true}), "store"),
            (
                json!({"model": "m", "input": "x", "background": true}),
                "background",
            ),
            (
                json!({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}),
                "input[0]",
            ),
            (json!({"model": "m"}), "input"),
            (
                json!({"model": "m", "input": "x", "include": "all"}),
                "include",
            ),
            (
                json!({"model": "m", "input": "x", "reasoning": {"effort": 3}}),
                "reasoning.effort",
            ),
            (
                json!({"model": "m", "input": "x", "tools": [{}]}),
                "tools[0]",
            ),
            (
                json!({"model": "m", "input": "x", "frobnicate": 1}),
                "frobnicate",
            ),
        ] {
            let e = to_chat(body.to_string().as_bytes()).expect_err("refused");
            assert_eq!(e.body_json()["error"]["param"], param, "{e}");
        }
        assert!(to_chat(br#"{"model":"m","input":"x","store":false}"#).is_ok());
    }

    /// The first field of `body` that only the Responses API serves.
    fn responses_only(body: Value) -> Option<String> {
        to_chat(body.to_string().as_bytes())
            .expect("translated")
            .1
            .responses_only
    }

    #[test]
    fn errors_name_the_requests_own_fields() {
        let inbound = |tools: Value| {
            to_chat(
                json!({"model": "m", "input": "x", "tools": tools})
                    .to_string()
                    .as_bytes(),
            )
            .expect("translated")
            .1
        };
        let error = |inbound: &Inbound, param: &str, message: &str| -> Value {
            let body = json!({"error": {"message": message, "type": "invalid_request_error",
                "param": param, "code": null}});
            let out = dialect::renamed_error(body.to_string().as_bytes(), &inbound.renamed);
            serde_json::from_slice(&out).expect("json")
        };
        let searching_last =
            inbound(json!([{"type": "function", "name": "f"}, {"type": "web_search_preview"}]));
        // A function tool after the web search is one place further down than in chat's list.
        let searching_first =
            inbound(json!([{"type": "web_search"}, {"type": "function", "name": "g"}]));
        for (inbound, param, own) in [
            (&searching_last, "messages[2].content", "input"),
            (&searching_last, "max_tokens", "max_output_tokens"),
            (
                &searching_last,
                "response_format.json_schema",
                "text.format",
            ),
            (&searching_last, "web_search_options", "tools[1]"),
            // Not renamed: the same name in both, or a longer name that only starts alike.
            (&searching_last, "tools", "tools"),
            (&searching_last, "max_tokens_total", "max_tokens_total"),
            (&searching_first, "tools[0].function.parameters", "tools[1]"),
            (&searching_first, "web_search_options", "tools[0]"),
        ] {
            assert_eq!(error(inbound, param, "x")["error"]["param"], own, "{param}");
        }
        let out = error(
            &searching_last,
            "max_tokens",
            "`max_tokens` is 9, above `max_tokens_total`",
        );
        assert_eq!(
            out["error"]["message"],
            "`max_output_tokens` is 9, above `max_tokens_total`"
        );
        // A body that is not an OpenAI error stays as it is.
        assert_eq!(
            &dialect::renamed_error(b"upstream down", &searching_last.renamed)[..],
            b"upstream down"
        );
    }

    #[test]
    fn a_compaction_always_needs_the_responses_api() {
        let only = |v: Value| {
            compaction_to_chat(v.to_string().as_bytes())
                .map(|(_, i)| i.responses_only)
                .map_err(|e| e.body_json()["error"]["param"].clone())
        };
        let plain = json!({"model": "auto", "input": [{"role": "user", "content": "Fix it"}]});
        assert_eq!(only(plain.clone()), Ok(Some("input".into())));
        // What asks for the Responses API sooner is named instead.
        let reasoning = json!({"model": "auto", "input": [{"role": "user", "content": "Fix it"},
            {"type": "reasoning", "summary": [], "encrypted_content": "gAAA"}]});
        assert_eq!(only(reasoning), Ok(Some("input[1]".into())));
        let mut stream = plain.clone();
        stream["stream"] = json!(true);
        assert_eq!(only(stream.clone()), Err(json!("stream")));
        stream["stream"] = json!(false);
        assert_eq!(only(stream), Ok(Some("input".into())));
        let mut stored = plain;
        stored["previous_response_id"] = json!("resp_1");
        assert_eq!(only(stored), Err(json!("previous_response_id")));
    }

    #[test]
    fn a_web_search_tool_is_chats_web_search_options() {
        let (body, inbound) = to_chat(
            json!({"model": "auto", "input": "Latest tokio?", "tools": [
                {"type": "function", "name": "f"},
                {"type": "web_search", "search_context_size": "low",
                 "user_location": {"type": "approximate", "city": "Oslo", "country": "NO"}}]})
            .to_string()
            .as_bytes(),
        )
        .expect("translated");
        assert_eq!(inbound.responses_only, None);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v["web_search_options"],
            json!({"search_context_size": "low",
                "user_location": {"type": "approximate", "approximate": {"city": "Oslo", "country": "NO"}}})
        );
        assert_eq!(v["tools"].as_array().map(Vec::len), Some(1));
        let (body, _) = to_chat(
            br#"{"model": "auto", "input": "x", "tools": [{"type": "web_search_preview_2025_03_11"}]}"#,
        )
        .expect("translated");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["web_search_options"], json!({}));
        assert!(v.get("tools").is_none(), "{v}");
    }

    #[test]
    fn url_citations_become_output_text_annotations() {
        let (_, inbound) = to_chat(br#"{"model": "auto", "input": "x"}"#).expect("translated");
        let citation = json!({"type": "url_citation", "url_citation": {"start_index": 0,
            "end_index": 5, "url": "https://tokio.example", "title": "Tokio"}});
        let expected = json!({"type": "url_citation", "start_index": 0, "end_index": 5,
            "url": "https://tokio.example", "title": "Tokio"});
        let answer = json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant",
                "content": "Tokio.", "annotations": [citation, {"type": "file_citation"}]}}]});
        let r: Value = serde_json::from_slice(
            &from_completion(answer.to_string().as_bytes(), &inbound).unwrap(),
        )
        .unwrap();
        assert_eq!(
            r["output"][0]["content"][0]["annotations"],
            json!([expected])
        );
        let mut s = StreamTranslator::new(&inbound);
        let mut out = BytesMut::new();
        for chunk in [
            json!({"id": "c1", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Tokio."}}]}),
            json!({"id": "c1", "choices": [{"index": 0, "delta": {"annotations": [citation]}}]}),
            json!({"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        ] {
            s.event(chunk.to_string().as_bytes(), &mut out);
        }
        s.event(b"[DONE]", &mut out);
        let text = String::from_utf8_lossy(&out);
        let data = |event: &str| -> Value {
            let at = text.find(&format!("event: {event}\n")).expect(event);
            let line = text[at..].lines().nth(1).expect("data line");
            serde_json::from_str(line.trim_start_matches("data: ")).unwrap()
        };
        let added = data("response.output_text.annotation.added");
        assert_eq!(
            (&added["annotation"], &added["annotation_index"]),
            (&expected, &json!(0))
        );
        assert_eq!(
            data("response.completed")["response"]["output"][0]["content"][0]["annotations"],
            json!([expected])
        );
    }

    #[test]
    fn what_only_the_responses_api_serves_is_marked_not_refused() {
        for (body, param) in [
            (
                json!({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"}, {"type": "file_search", "vector_store_ids": ["vs_1"]}]}),
                "tools[1]",
            ),
            (
                json!({"model": "m", "input": "x", "tools": [{"type": "web_search", "filters": {"allowed_domains": ["docs.rs"]}}]}),
                "tools[0]",
            ),
            (
                json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}, {"type": "web_search_preview"}]}),
                "tools[1]",
            ),
            (
                json!({"model": "m", "input": [{"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAA"}]}),
                "input[0]",
            ),
            (
                json!({"model": "m", "input": "x", "reasoning": {"effort": "low", "summary": "auto"}}),
                "reasoning.summary",
            ),
            (
                json!({"model": "m", "input": "x", "include": ["reasoning.encrypted_content"]}),
                "include",
            ),
            (
                json!({"model": "m", "input": "x", "tool_choice": {"type": "web_search_preview"}}),
                "tool_choice",
            ),
            (
                json!({"model": "m", "input": "x", "max_tool_calls": 3}),
                "max_tool_calls",
            ),
            (
                json!({"model": "m", "input": [{"role": "user", "content": [
                    {"type": "input_text", "text": "Summarise"},
                    {"type": "input_file", "file_id": "file-1"}]}]}),
                "input[0].content[1]",
            ),
            (
                json!({"model": "m", "input": [{"type": "function_call_output", "call_id": "c1",
                    "output": [{"type": "input_image", "image_url": "data:image/png;base64,AA=="}]}]}),
                "input[0].output[0]",
            ),
            (
                json!({"model": "m", "input": [{"type": "mcp_approval_response", "approve": true, "approval_request_id": "a1"}]}),
                "input[0]",
            ),
            (
                json!({"model": "m", "input": "x", "truncation": "auto"}),
                "truncation",
            ),
            (
                json!({"model": "m", "input": "x", "context_management": [{"type": "compaction", "compact_threshold": 200000}]}),
                "context_management",
            ),
            (
                json!({"model": "m", "input": "x", "moderation": {"mode": "enforce"}}),
                "moderation",
            ),
            (
                json!({"model": "m", "input": [{"role": "system", "content": [
                    {"type": "input_text", "text": "Use the style guide"},
                    {"type": "input_file", "file_id": "file-2"}]}]}),
                "input[0].content[1]",
            ),
            (
                json!({"model": "m", "input": [{"role": "user", "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {"type": "input_image", "file_id": "file-3"}]}]}),
                "input[0].content[1]",
            ),
        ] {
            assert_eq!(
                responses_only(body.clone()).as_deref(),
                Some(param),
                "{body}"
            );
        }
        for plain in [
            json!({"model": "m", "input": "x"}),
            json!({"model": "m", "input": "x", "include": [], "top_logprobs": 0,
                   "reasoning": {"effort": "high", "summary": null}, "stream_options": {"include_obfuscation": false}}),
            // Codex CLI's own metadata, and settings that change nothing here.
            json!({"model": "m", "input": "x", "truncation": "disabled", "context_management": [],
                   "client_metadata": {"session_id": "019a", "thread_id": "019a"}, "reasoning": null}),
        ] {
            assert_eq!(responses_only(plain.clone()), None, "{plain}");
        }
    }

    #[test]
    fn identifiers_effort_and_verbosity_reach_the_chat_request() {
        let (body, inbound) = to_chat(
            json!({"model": "auto", "input": "hi", "safety_identifier": "u-hash", "prompt_cache_key": "conv-7",
                   "prompt_cache_retention": "24h", "reasoning": {"effort": "minimal"}, "text": {"verbosity": "low"}})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["safety_identifier"], "u-hash");
        assert_eq!(v["prompt_cache_key"], "conv-7");
        assert_eq!(v["prompt_cache_retention"], "24h");
        assert_eq!(v["reasoning_effort"], "minimal");
        assert_eq!(v["verbosity"], "low");
        assert_eq!(inbound.responses_only, None);
        // The response repeats them, as OpenAI's does.
        assert_eq!(inbound.echo["safety_identifier"], "u-hash");
        assert_eq!(inbound.echo["reasoning"], json!({"effort": "minimal"}));
        let e = to_chat(br#"{"model":"m","input":"x","prompt_cache_key":7}"#).expect_err("refused");
        assert_eq!(e.body_json()["error"]["param"], "prompt_cache_key");
    }

    #[test]
    fn prompt_cache_options_a_schema_description_and_an_old_refusal_reach_the_chat_request() {
        let (body, inbound) = to_chat(
            json!({"model": "auto", "prompt_cache_options": {"mode": "explicit", "ttl": "1h"},
                   "client_metadata": {"session_id": "019a"},
                   "text": {"format": {"type": "json_schema", "name": "city", "description": "A city and its country",
                                       "schema": {"type": "object"}}},
                   "input": [
                       {"role": "user", "content": "How do I pick a lock?"},
                       {"type": "message", "role": "assistant", "content": [{"type": "refusal", "refusal": "I can't help with that."}]},
                       {"role": "user", "content": "Then name a city."}]})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v["prompt_cache_options"],
            json!({"mode": "explicit", "ttl": "1h"})
        );
        assert_eq!(
            v["response_format"]["json_schema"]["description"],
            "A city and its country"
        );
        assert_eq!(
            v["messages"][1],
            json!({"role": "assistant", "content": "I can't help with that."})
        );
        assert!(v.get("client_metadata").is_none(), "{v}");
        assert_eq!(inbound.responses_only, None);
        for (body, param) in [
            (
                json!({"model": "m", "input": "x", "client_metadata": "019a"}),
                "client_metadata",
            ),
            (
                json!({"model": "m", "input": "x", "truncation": "sometimes"}),
                "truncation",
            ),
            (
                json!({"model": "m", "input": "x", "background_options": {"completion_window": "2h"}}),
                "background_options",
            ),
            (
                json!({"model": "m", "input": [{"role": "user", "content": [{"type": "refusal", "refusal": "no"}]}]}),
                "input[0].content[0]",
            ),
            (
                json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image"}]}]}),
                "input[0].content[0]",
            ),
        ] {
            let e = to_chat(body.to_string().as_bytes()).expect_err("refused");
            assert_eq!(e.body_json()["error"]["param"], param, "{e}");
        }
    }

    #[test]
    fn an_agent_conversation_keeps_what_people_and_tools_wrote() {
        // A coding agent's turn: reasoning carried across turns, a custom (free-form) tool call
        // and a shell call with their outputs.
        let (body, inbound) = to_chat(
            json!({"model": "auto", "instructions": "You are a coding agent.", "store": false,
                   "include": ["reasoning.encrypted_content"], "reasoning": {"effort": "medium", "summary": "auto"},
                   "tools": [{"type": "custom", "name": "apply_patch"}, {"type": "local_shell"}],
                   "input": [
                       {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Fix the test"}]},
                       {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA"},
                       {"type": "local_shell_call", "id": "lsh_1", "call_id": "c1", "status": "completed",
                        "action": {"type": "exec", "command": ["cargo", "test"]}},
                       {"type": "local_shell_call_output", "call_id": "c1", "output": "1 failed"},
                       {"type": "custom_tool_call", "call_id": "c2", "name": "apply_patch", "input": "*** Begin Patch"},
                       {"type": "custom_tool_call_output", "call_id": "c2", "output": "Done"}]})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(inbound.responses_only.as_deref(), Some("reasoning.summary"));
        let v: Value = serde_json::from_slice(&body).unwrap();
        let messages = v["messages"].as_array().unwrap();
        // The system turn, the user's, then one assistant call and output per tool: the
        // reasoning item is the model's own and is not carried.
        assert_eq!(messages.len(), 6, "{v}");
        assert_eq!(
            messages[2]["tool_calls"][0]["function"]["name"],
            "local_shell"
        );
        assert_eq!(
            messages[2]["tool_calls"][0]["function"]["arguments"],
            json!({"type": "exec", "command": ["cargo", "test"]}).to_string()
        );
        assert_eq!(
            messages[3],
            json!({"role": "tool", "tool_call_id": "c1", "content": "1 failed"})
        );
        assert_eq!(
            messages[4]["tool_calls"][0]["function"]["arguments"],
            "*** Begin Patch"
        );
        assert_eq!(messages[5]["content"], "Done");
        // Neither tool is a function tool: the internal request offers none.
        assert!(v.get("tools").is_none());
        let parsed = crate::api::ChatRequest::parse(&body).expect("the internal request parses");
        assert_eq!(parsed.message_count, 6);
        // A turn of files alone is an empty turn inside.
        let (body, inbound) = to_chat(
            json!({"model": "auto", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            inbound.responses_only.as_deref(),
            Some("input[0].content[0]")
        );
        assert!(crate::api::ChatRequest::parse(&body).is_ok());
    }

    #[test]
    fn a_filtered_answer_is_incomplete_with_its_reason() {
        let (_, inbound) = to_chat(br#"{"model":"auto","input":"hi","stream":true}"#).unwrap();
        let mut t = StreamTranslator::new(&inbound);
        let mut out = BytesMut::new();
        let chunk = json!({"id": "c", "choices": [{"index": 0, "delta": {"content": "No"}, "finish_reason": "content_filter"}]});
        t.event(chunk.to_string().as_bytes(), &mut out);
        t.event(b"[DONE]", &mut out);
        let text = String::from_utf8(out.to_vec()).unwrap();
        let last = last_data(&text);
        assert_eq!(last["type"], "response.incomplete");
        assert_eq!(last["response"]["status"], "incomplete");
        assert_eq!(
            last["response"]["incomplete_details"]["reason"],
            "content_filter"
        );
        assert_eq!(incomplete_reason(Some("length")), Some("max_output_tokens"));
        assert_eq!(incomplete_reason(Some("stop")), None);
    }

    #[test]
    fn a_stream_that_fails_first_still_starts_and_ends_as_failed() {
        let (_, inbound) = to_chat(br#"{"model":"auto","input":"hi","stream":true}"#).unwrap();
        let mut t = StreamTranslator::new(&inbound);
        let mut out = BytesMut::new();
        t.event(
            br#"{"error":{"message":"model `m`: no event for 30s"}}"#,
            &mut out,
        );
        assert!(t.ended());
        let text = String::from_utf8(out.to_vec()).unwrap();
        let kinds = event_names(&text);
        assert_eq!(
            kinds,
            [
                "response.created",
                "response.in_progress",
                "error",
                "response.failed"
            ]
        );
        let failed = last_data(&text);
        assert_eq!(failed["response"]["status"], "failed");
        assert_eq!(
            failed["response"]["error"]["message"],
            "model `m`: no event for 30s"
        );
    }

    #[test]
    fn a_stream_becomes_typed_events_ending_in_the_whole_response() {
        let (_, inbound) = to_chat(br#"{"model":"auto","input":"hi","stream":true}"#).unwrap();
        let mut t = StreamTranslator::new(&inbound);
        let mut out = BytesMut::new();
        for c in [
            json!({"id": "chatcmpl-9", "choices": [{"index": 0, "delta": {"content": "Hel"}}]}),
            json!({"id": "chatcmpl-9", "choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]}),
            json!({"id": "chatcmpl-9", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}),
        ] {
            t.event(c.to_string().as_bytes(), &mut out);
        }
        t.event(b"[DONE]", &mut out);
        let text = String::from_utf8(out.to_vec()).unwrap();
        let kinds = event_names(&text);
        assert_eq!(
            kinds,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed"
            ]
        );
        let last: Value =
            serde_json::from_str(text.trim_end().rsplit("data: ").next().unwrap()).unwrap();
        assert_eq!(last["response"]["output"][0]["content"][0]["text"], "Hello");
        assert_eq!(last["response"]["usage"]["total_tokens"], 5);
        assert_eq!(last["sequence_number"], 9);
    }
}
