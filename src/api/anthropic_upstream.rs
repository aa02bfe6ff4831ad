//! The other side of the Anthropic dialect: an internal (OpenAI chat) request sent to an
//! Anthropic model (`kind: anthropic`) as a Messages request, and its answer and stream brought
//! back as an OpenAI chat completion and chunks. Sources: Anthropic's Messages API reference and
//! OpenAI's chat completions reference, as for [`super::anthropic`].

use bytes::Bytes;
use serde_json::{json, Map, Value};

/// Anthropic's `temperature` is in [0, 1]; OpenAI's in [0, 2].
const MAX_TEMPERATURE: f64 = 1.0;

/// The smallest thinking budget Anthropic accepts, in tokens.
const MIN_THINKING_BUDGET: u64 = 1024;

/// The lowest `top_p` Anthropic accepts with thinking on.
const MIN_THINKING_TOP_P: f64 = 0.95;

/// How a model is asked to think for a request's `reasoning_effort`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thinking {
    /// Adaptive thinking (`thinking: {"type": "adaptive"}`), its depth set by
    /// `output_config.effort`: Claude 4.6 and later.
    Adaptive,
    /// Extended thinking with a token budget (`thinking: {"type": "enabled", "budget_tokens"}`):
    /// Claude 3.7 to 4.5.
    Budget,
}

/// Anthropic's `output_config.effort` for an OpenAI `reasoning_effort`: `minimal` is `low`
/// (Anthropic's least), the others are the same words (`low`, `medium`, `high`, `xhigh`,
/// `max`; a model without one refuses it with its own 400); `none` asks for no effort setting.
fn anthropic_effort(effort: &str) -> Option<&str> {
    match effort {
        "none" => None,
        "minimal" => Some("low"),
        e => Some(e),
    }
}

/// The share of `max_tokens` a thinking budget takes at each effort, as OpenRouter's
/// reasoning-tokens guide maps efforts onto Anthropic budgets (`minimal` 10%, `low` 20%,
/// `medium` 50%, `high` 80%, `xhigh` 95%); Anthropic's `max` as `xhigh`. `None` for `none` and
/// for words that name no effort.
fn budget_share(effort: &str) -> Option<f64> {
    Some(match effort {
        "minimal" => 0.1,
        "low" => 0.2,
        "medium" => 0.5,
        "high" => 0.8,
        "xhigh" | "max" => 0.95,
        _ => return None,
    })
}

/// Sets `thinking` (and for [`Thinking::Adaptive`] `output_config.effort`) on a Messages
/// request `out` for the chat request's `reasoning_effort`, where Anthropic allows it:
/// thinking stays off when a tool call is forced (`tool_choice` `required` or a named
/// function) and when the request continues a tool call (the last assistant message has tool
/// calls: Anthropic wants that turn to start with the thinking block the model wrote, which an
/// OpenAI client does not keep); a budget must be at least 1,024 tokens and below
/// `max_tokens`. With thinking on, `temperature` is not sent (Anthropic allows only 1) and
/// `top_p` is raised to 0.95 at least.
fn set_thinking(chat: &Map<String, Value>, mode: Thinking, out: &mut Value) {
    let Some(effort) = chat.get("reasoning_effort").and_then(Value::as_str) else {
        return;
    };
    let forced = match chat.get("tool_choice") {
        Some(Value::String(s)) => s == "required",
        Some(Value::Object(_)) => true,
        _ => false,
    };
    let continues_tool_call = chat
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "assistant"))
        .and_then(|m| m.get("tool_calls"))
        .and_then(Value::as_array)
        .is_some_and(|calls| !calls.is_empty());
    let allowed = !forced && !continues_tool_call;
    let on = match mode {
        Thinking::Adaptive => {
            let Some(effort) = anthropic_effort(effort) else {
                return;
            };
            match out.get_mut("output_config").and_then(Value::as_object_mut) {
                Some(config) => {
                    config.insert("effort".into(), json!(effort));
                }
                None => out["output_config"] = json!({"effort": effort}),
            }
            if allowed {
                out["thinking"] = json!({"type": "adaptive"});
            }
            allowed
        }
        Thinking::Budget => {
            let Some(share) = budget_share(effort) else {
                return;
            };
            let max_tokens = out["max_tokens"].as_u64().unwrap_or(0);
            let budget = ((max_tokens as f64 * share) as u64).max(MIN_THINKING_BUDGET);
            let on = allowed && budget < max_tokens;
            if on {
                out["thinking"] = json!({"type": "enabled", "budget_tokens": budget});
            }
            on
        }
    };
    if on {
        if let Some(o) = out.as_object_mut() {
            o.remove("temperature");
        }
        if let Some(p) = out.get("top_p").and_then(Value::as_f64) {
            out["top_p"] = json!(p.max(MIN_THINKING_TOP_P));
        }
    }
}

/// A `data:` URL as an Anthropic base64 image source, else a URL source.
fn image_source(url: &str) -> Value {
    if let Some(rest) = url.strip_prefix("data:") {
        if let Some((media, data)) = rest.split_once(";base64,") {
            return json!({"type": "base64", "media_type": media, "data": data});
        }
    }
    json!({"type": "url", "url": url})
}

/// The text of an OpenAI message `content` (a string, or parts of which the text ones count).
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// An OpenAI assistant message (`content` and `tool_calls`) as Messages content blocks: a
/// `text` block when there is text, then a `tool_use` block per call (its JSON arguments as
/// `input`, `{}` when they do not parse).
pub fn assistant_blocks(message: &Value) -> Vec<Value> {
    let mut blocks = vec![];
    let text = text_of(message.get("content").unwrap_or(&Value::Null));
    if !text.is_empty() {
        blocks.push(json!({"type": "text", "text": text}));
    }
    for call in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let args = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or("{}");
        let input: Value = serde_json::from_str(args).unwrap_or_else(|_| json!({}));
        blocks.push(json!({"type": "tool_use",
            "id": call.get("id").and_then(Value::as_str).unwrap_or(""),
            "name": call.pointer("/function/name").and_then(Value::as_str).unwrap_or(""),
            "input": input}));
    }
    blocks
}

/// Appends `blocks` as a turn of `role`, joining it to the previous turn of the same role
/// (Messages alternate user and assistant turns).
fn push_turn(turns: &mut Vec<Value>, role: &str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    if let Some(last) = turns.last_mut().filter(|t| t["role"] == role) {
        if let Some(content) = last["content"].as_array_mut() {
            content.extend(blocks);
            return;
        }
    }
    turns.push(json!({"role": role, "content": blocks}));
}

/// Translates an OpenAI chat request (its JSON members) into a Messages request body for
/// `model`. `max_tokens` comes from the request (`max_completion_tokens`, else `max_tokens`),
/// else `default_max_tokens` (Messages requires it). System and developer messages become
/// `system`; tool calls `tool_use` blocks; tool messages `tool_result` blocks of a user turn;
/// image parts image blocks; `stop` `stop_sequences`; `safety_identifier` (else `user`)
/// `metadata.user_id`; `web_search_options` Anthropic's web search tool ([`web_search_tool`]);
/// a function's `strict` the tool's; a `json_schema` `response_format`
/// `output_config.format` (Anthropic's structured output, for the models that have it: the
/// policy declares `json_schema` for them); temperature is capped at 1. `reasoning_effort`
/// becomes thinking as `thinking` says ([`set_thinking`]; `None`: not sent). The thinking the
/// answer holds comes back as `reasoning_content` ([`to_completion`]).
pub fn from_chat(
    chat: &Map<String, Value>,
    model: &str,
    stream: bool,
    default_max_tokens: u64,
    thinking: Option<Thinking>,
) -> Vec<u8> {
    let mut system = vec![];
    let mut turns: Vec<Value> = vec![];
    for m in chat
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
        let content = m.get("content").unwrap_or(&Value::Null);
        match role {
            "system" | "developer" => system.push(text_of(content)),
            "assistant" => {
                let blocks = assistant_blocks(m);
                push_turn(&mut turns, "assistant", blocks);
            }
            "tool" => {
                let block = json!({"type": "tool_result",
                    "tool_use_id": m.get("tool_call_id").and_then(Value::as_str).unwrap_or(""),
                    "content": text_of(content)});
                push_turn(&mut turns, "user", vec![block]);
            }
            _ => {
                let blocks = match content {
                    Value::Array(parts) => parts
                        .iter()
                        .filter_map(|p| match p.get("type").and_then(Value::as_str) {
                            Some("text") => Some(json!({"type": "text", "text": p.get("text").and_then(Value::as_str).unwrap_or("")})),
                            Some("image_url") => p
                                .pointer("/image_url/url")
                                .and_then(Value::as_str)
                                .map(|u| json!({"type": "image", "source": image_source(u)})),
                            _ => None,
                        })
                        .collect(),
                    other => vec![json!({"type": "text", "text": text_of(other)})],
                };
                push_turn(&mut turns, "user", blocks);
            }
        }
    }
    let max_tokens = chat
        .get("max_completion_tokens")
        .or_else(|| chat.get("max_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(default_max_tokens);
    let mut out = json!({"model": model, "max_tokens": max_tokens, "messages": turns});
    let system: Vec<String> = system.into_iter().filter(|s| !s.is_empty()).collect();
    if !system.is_empty() {
        out["system"] = json!(system.join("\n\n"));
    }
    if stream {
        out["stream"] = json!(true);
    }
    if let Some(t) = chat.get("temperature").and_then(Value::as_f64) {
        out["temperature"] = json!(t.min(MAX_TEMPERATURE));
    }
    if let Some(p) = chat.get("top_p").filter(|p| p.is_number()) {
        out["top_p"] = p.clone();
    }
    match chat.get("stop") {
        Some(Value::String(s)) => out["stop_sequences"] = json!([s]),
        Some(Value::Array(a)) if !a.is_empty() => out["stop_sequences"] = Value::Array(a.clone()),
        _ => {}
    }
    // OpenAI's `safety_identifier` replaced `user` as the end user's id.
    if let Some(u) = ["safety_identifier", "user"]
        .iter()
        .find_map(|k| chat.get(*k).and_then(Value::as_str))
    {
        out["metadata"] = json!({"user_id": u});
    }
    let tools: Vec<Value> = chat
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| {
            let f = t.get("function")?;
            let mut tool = json!({"name": f.get("name")?,
                "input_schema": f.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}}))});
            if let Some(d) = f.get("description") {
                tool["description"] = d.clone();
            }
            if let Some(strict) = f.get("strict").filter(|s| s.is_boolean()) {
                tool["strict"] = strict.clone();
            }
            Some(tool)
        })
        .collect();
    if !tools.is_empty() {
        out["tools"] = Value::Array(tools);
        let mut choice = match chat.get("tool_choice") {
            Some(Value::String(s)) if s == "required" => json!({"type": "any"}),
            Some(Value::String(s)) if s == "none" => json!({"type": "none"}),
            Some(Value::Object(o)) => match o.get("function").and_then(|f| f.get("name")) {
                Some(name) => json!({"type": "tool", "name": name}),
                None => json!({"type": "auto"}),
            },
            _ => json!({"type": "auto"}),
        };
        if chat.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
            choice["disable_parallel_tool_use"] = json!(true);
        }
        out["tool_choice"] = choice;
    }
    if let Some(schema) = chat
        .get("response_format")
        .filter(|f| f.get("type").and_then(Value::as_str) == Some("json_schema"))
        .and_then(|f| f.pointer("/json_schema/schema"))
    {
        out["output_config"] = json!({"format": {"type": "json_schema", "schema": schema}});
    }
    if let Some(options) = chat.get("web_search_options").filter(|o| o.is_object()) {
        let search = web_search_tool(options);
        match out.get_mut("tools").and_then(Value::as_array_mut) {
            Some(tools) => tools.push(search),
            None => out["tools"] = json!([search]),
        }
    }
    if let Some(mode) = thinking {
        set_thinking(chat, mode, &mut out);
    }
    serde_json::to_vec(&out).unwrap_or_default()
}

/// Anthropic's web search tool (`web_search_20250305`, a server tool the API runs) for
/// OpenAI's `web_search_options`: its `user_location.approximate` (`city`, `region`,
/// `country`, `timezone`) becomes the tool's approximate `user_location`.
/// `search_context_size` has no Anthropic counterpart and is not carried.
fn web_search_tool(options: &Value) -> Value {
    let mut tool = json!({"type": "web_search_20250305", "name": "web_search"});
    if let Some(place) = options
        .pointer("/user_location/approximate")
        .and_then(Value::as_object)
    {
        let mut location = Map::new();
        location.insert("type".into(), json!("approximate"));
        for key in ["city", "region", "country", "timezone"] {
            if let Some(v) = place.get(key).filter(|v| v.is_string()) {
                location.insert(key.into(), v.clone());
            }
        }
        tool["user_location"] = Value::Object(location);
    }
    tool
}

/// OpenAI `url_citation` annotations for a text block's web search `citations`, the block's
/// text being characters `start..end` of the answer's content.
fn url_citations(citations: &[Value], start: usize, end: usize) -> Vec<Value> {
    citations
        .iter()
        .filter(|c| c.get("type").and_then(Value::as_str) == Some("web_search_result_location"))
        .map(|c| {
            json!({"type": "url_citation", "url_citation": {"start_index": start, "end_index": end,
                "url": c.get("url").cloned().unwrap_or(Value::Null),
                "title": c.get("title").cloned().unwrap_or(Value::Null)}})
        })
        .collect()
}

/// OpenAI's `finish_reason` for Anthropic's `stop_reason`.
fn finish_reason(stop: Option<&str>) -> &'static str {
    match stop {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

/// OpenAI's `usage` for Anthropic's: prompt tokens are the uncached input plus the cache's reads
/// and writes; the reads are `prompt_tokens_details.cached_tokens`, and Anthropic's two cache
/// counts are kept beside them as they came (as LiteLLM's OpenAI usage does), and so is
/// `server_tool_use` (the web searches Anthropic ran, billed per search). A count the
/// upstream did not send is left out (`null` when it sent neither), not written as 0: the
/// settlement then estimates it, where a 0 would bill nothing.
fn usage_of(u: &Value) -> Value {
    let n = |k: &str| u.get(k).and_then(Value::as_u64);
    let (input, output) = (n("input_tokens"), n("output_tokens"));
    if input.is_none() && output.is_none() {
        return Value::Null;
    }
    let (read, write) = (
        n("cache_read_input_tokens").unwrap_or(0),
        n("cache_creation_input_tokens").unwrap_or(0),
    );
    let prompt = input.map(|i| i.saturating_add(read).saturating_add(write));
    let mut usage = Map::new();
    if let Some(p) = prompt {
        usage.insert("prompt_tokens".into(), json!(p));
    }
    if let Some(o) = output {
        usage.insert("completion_tokens".into(), json!(o));
    }
    if let (Some(p), Some(o)) = (prompt, output) {
        usage.insert("total_tokens".into(), json!(p.saturating_add(o)));
    }
    if prompt.is_some() {
        usage.insert(
            "prompt_tokens_details".into(),
            json!({"cached_tokens": read}),
        );
    }
    usage.insert("cache_read_input_tokens".into(), json!(read));
    usage.insert("cache_creation_input_tokens".into(), json!(write));
    if let Some(tools) = u.get("server_tool_use").filter(|t| t.is_object()) {
        usage.insert("server_tool_use".into(), tools.clone());
    }
    Value::Object(usage)
}

/// Translates a Messages answer into an OpenAI chat completion body: text blocks as the
/// content (their web search citations as `url_citation` annotations over the block's
/// characters), `tool_use` blocks as tool calls, the text of `thinking` blocks as the message's
/// `reasoning_content` (the chat field DeepSeek's API, vLLM and LiteLLM use for a model's
/// reasoning; OpenAI's chat API has none); redacted thinking and server tools' calls and
/// results are left out.
///
/// Errors: the answer is not a Messages `message` (the caller's protocol error).
pub fn to_completion(body: &[u8], model: &str) -> Result<Bytes, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("the response is not JSON: {e}"))?;
    if v.get("type").and_then(Value::as_str) != Some("message") {
        return Err("the response is not a Messages `message`".into());
    }
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut chars = 0;
    let mut annotations = vec![];
    let mut calls = vec![];
    for b in v
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => {
                let t = b.get("text").and_then(Value::as_str).unwrap_or("");
                text.push_str(t);
                let start = chars;
                chars += t.chars().count();
                if let Some(citations) = b.get("citations").and_then(Value::as_array) {
                    annotations.extend(url_citations(citations, start, chars));
                }
            }
            Some("tool_use") => calls.push(json!({"id": b.get("id"), "type": "function",
                "function": {"name": b.get("name"), "arguments": b.get("input").cloned().unwrap_or_else(|| json!({})).to_string()}})),
            Some("thinking") => {
                reasoning.push_str(b.get("thinking").and_then(Value::as_str).unwrap_or(""))
            }
            _ => {}
        }
    }
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    if !annotations.is_empty() {
        message["annotations"] = Value::Array(annotations);
    }
    if !reasoning.is_empty() {
        message["reasoning_content"] = json!(reasoning);
    }
    let id = v.get("id").and_then(Value::as_str).unwrap_or("");
    let out = json!({
        "id": format!("chatcmpl-{}", id.strip_prefix("msg_").unwrap_or(id)),
        "object": "chat.completion",
        "created": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": Value::Null,
            "finish_reason": finish_reason(v.get("stop_reason").and_then(Value::as_str))}],
        "usage": usage_of(v.get("usage").unwrap_or(&Value::Null)),
    });
    Ok(Bytes::from(out.to_string()))
}

/// What one Messages stream event becomes on the OpenAI side.
#[derive(Debug, PartialEq)]
pub enum Translated {
    /// OpenAI chunk payloads to send, in order (possibly none).
    Chunks(Vec<Bytes>),
    /// The message is complete (`message_stop`), after these chunks.
    Done(Vec<Bytes>),
    /// An `error` event: its message.
    Error(String),
}

/// Turns a Messages event stream into OpenAI chunks: a role chunk at `message_start`, content
/// and tool-call deltas, a text block's web search citations as `url_citation` annotations
/// when the block ends, thinking as `reasoning_content` deltas ([`to_completion`]), the finish
/// reason at `message_delta`, and a usage-only chunk (choices empty) at `message_stop`.
/// Redacted thinking, signatures and server tools' calls and results send nothing.
#[derive(Debug)]
pub struct StreamFromAnthropic {
    model: String,
    id: String,
    /// Usage so far: `message_start`'s, then `message_delta`'s counts.
    usage: Map<String, Value>,
    /// OpenAI tool-call index of each Anthropic content block index.
    tool_index: Vec<(u64, u64)>,
    /// Characters of content sent so far.
    chars: usize,
    /// The open text block: its index, the character its text starts at, and its citations.
    text_block: Option<(u64, usize, Vec<Value>)>,
    finish: &'static str,
    /// `message_start`'s prompt counts, not yet handed to the settlement.
    prompt_usage: Option<crate::api::usage::Reported>,
}

impl StreamFromAnthropic {
    pub fn new(model: &str) -> StreamFromAnthropic {
        StreamFromAnthropic {
            model: model.to_string(),
            id: String::new(),
            usage: Map::new(),
            tool_index: vec![],
            chars: 0,
            text_block: None,
            finish: "stop",
            prompt_usage: None,
        }
    }

    /// The prompt's counts `message_start` reported (uncached input, cache reads and writes; no
    /// output count yet), once: what a stream cut before `message_stop` is billed for its
    /// prompt, in place of the gateway's estimate.
    pub fn take_prompt_usage(&mut self) -> Option<crate::api::usage::Reported> {
        self.prompt_usage.take()
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Bytes {
        Bytes::from(
            json!({"id": self.id, "object": "chat.completion.chunk", "created": 0, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            .to_string(),
        )
    }

    /// Takes one event's data.
    pub fn event(&mut self, data: &[u8]) -> Translated {
        let Ok(v) = serde_json::from_slice::<Value>(data) else {
            return Translated::Error("the upstream sent an event that is not JSON".into());
        };
        match v.get("type").and_then(Value::as_str).unwrap_or("") {
            "message_start" => {
                let m = &v["message"];
                let id = m.get("id").and_then(Value::as_str).unwrap_or("");
                self.id = format!("chatcmpl-{}", id.strip_prefix("msg_").unwrap_or(id));
                if let Some(u) = m.get("usage").and_then(Value::as_object) {
                    self.usage.extend(u.clone());
                    // `message_start`'s output count is a placeholder: the prompt's alone.
                    self.prompt_usage =
                        crate::api::native::anthropic_reported(&Value::Object(u.clone()))
                            .filter(|r| r.prompt_tokens.is_some())
                            .map(|r| crate::api::usage::Reported {
                                completion_tokens: None,
                                ..r
                            });
                }
                Translated::Chunks(vec![
                    self.chunk(json!({"role": "assistant", "content": ""}), None)
                ])
            }
            "content_block_start" => {
                let b = &v["content_block"];
                let block = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                match b.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {}
                    Some("text") => {
                        let citations = b
                            .get("citations")
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default();
                        self.text_block = Some((block, self.chars, citations));
                        return Translated::Chunks(vec![]);
                    }
                    // Thinking, and the calls and results of server tools (web search).
                    _ => return Translated::Chunks(vec![]),
                }
                let index = self.tool_index.len() as u64;
                self.tool_index.push((block, index));
                Translated::Chunks(vec![self.chunk(
                    json!({"tool_calls": [{"index": index, "id": b.get("id"), "type": "function",
                        "function": {"name": b.get("name"), "arguments": ""}}]}),
                    None,
                )])
            }
            "content_block_delta" => {
                let d = &v["delta"];
                match d.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let t = d.get("text").and_then(Value::as_str).unwrap_or("");
                        self.chars += t.chars().count();
                        Translated::Chunks(vec![self.chunk(json!({"content": t}), None)])
                    }
                    Some("thinking_delta") => {
                        let t = d.get("thinking").and_then(Value::as_str).unwrap_or("");
                        Translated::Chunks(vec![self.chunk(json!({"reasoning_content": t}), None)])
                    }
                    Some("citations_delta") => {
                        if let (Some((_, _, citations)), Some(c)) =
                            (self.text_block.as_mut(), d.get("citation"))
                        {
                            citations.push(c.clone());
                        }
                        Translated::Chunks(vec![])
                    }
                    Some("input_json_delta") => {
                        let block = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                        // A server tool's input (a web search's query) is not a tool call.
                        let Some(index) = self
                            .tool_index
                            .iter()
                            .find(|(b, _)| *b == block)
                            .map(|(_, i)| *i)
                        else {
                            return Translated::Chunks(vec![]);
                        };
                        let partial = d.get("partial_json").and_then(Value::as_str).unwrap_or("");
                        Translated::Chunks(vec![self.chunk(
                            json!({"tool_calls": [{"index": index, "function": {"arguments": partial}}]}),
                            None,
                        )])
                    }
                    _ => Translated::Chunks(vec![]),
                }
            }
            "content_block_stop" => {
                let block = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                match self.text_block.take() {
                    Some((open, start, citations)) if open == block => {
                        let annotations = url_citations(&citations, start, self.chars);
                        if annotations.is_empty() {
                            return Translated::Chunks(vec![]);
                        }
                        Translated::Chunks(vec![
                            self.chunk(json!({"annotations": annotations}), None)
                        ])
                    }
                    other => {
                        self.text_block = other;
                        Translated::Chunks(vec![])
                    }
                }
            }
            "message_delta" => {
                self.finish =
                    finish_reason(v.pointer("/delta/stop_reason").and_then(Value::as_str));
                if let Some(u) = v.get("usage").and_then(Value::as_object) {
                    for (k, x) in u {
                        if !x.is_null() {
                            self.usage.insert(k.clone(), x.clone());
                        }
                    }
                }
                Translated::Chunks(vec![self.chunk(json!({}), Some(self.finish))])
            }
            "message_stop" => {
                let usage = usage_of(&Value::Object(self.usage.clone()));
                let last = json!({"id": self.id, "object": "chat.completion.chunk", "created": 0,
                    "model": self.model, "choices": [], "usage": usage});
                Translated::Done(vec![Bytes::from(last.to_string())])
            }
            "error" => Translated::Error(
                v.pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("the upstream stream failed")
                    .to_string(),
            ),
            // ping, and event types added later.
            _ => Translated::Chunks(vec![]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_counts_stay_missing_for_the_settlement_to_estimate() {
        assert_eq!(usage_of(&Value::Null), Value::Null);
        assert_eq!(usage_of(&json!({})), Value::Null);
        let only_output = usage_of(&json!({"output_tokens": 5}));
        assert_eq!(only_output["completion_tokens"], 5);
        assert!(only_output.get("prompt_tokens").is_none());
        let whole = usage_of(&json!({"input_tokens": 10, "output_tokens": 3,
            "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5}));
        assert_eq!(
            (&whole["prompt_tokens"], &whole["total_tokens"]),
            (&json!(115), &json!(118))
        );
    }

    #[test]
    fn stop_reasons_map_to_finish_reasons() {
        for (stop, finish) in [
            (Some("end_turn"), "stop"),
            (Some("stop_sequence"), "stop"),
            (Some("max_tokens"), "length"),
            (Some("model_context_window_exceeded"), "length"),
            (Some("tool_use"), "tool_calls"),
            (Some("refusal"), "content_filter"),
            (Some("pause_turn"), "stop"),
        ] {
            assert_eq!(finish_reason(stop), finish, "{stop:?}");
        }
    }

    #[test]
    fn a_chat_request_becomes_a_messages_request() {
        let chat: Map<String, Value> = serde_json::from_value(json!({
            "model": "auto", "max_tokens": 100, "temperature": 1.5, "stop": "END", "user": "u1",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{\"city\":\"Oslo\"}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "cold"},
                {"role": "user", "content": "And tomorrow?"}],
            "tools": [{"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}],
            "tool_choice": "required", "parallel_tool_calls": false})).unwrap();
        let v: Value =
            serde_json::from_slice(&from_chat(&chat, "claude-x", true, 4096, None)).unwrap();
        assert_eq!(v["model"], "claude-x");
        assert_eq!(v["system"], "Be brief.");
        assert_eq!(v["temperature"], 1.0);
        assert_eq!(v["stop_sequences"], json!(["END"]));
        assert_eq!(
            v["messages"][0]["content"][1]["source"],
            json!({"type": "base64", "media_type": "image/jpeg", "data": "AAAA"})
        );
        assert_eq!(
            v["messages"][1]["content"][0],
            json!({"type": "tool_use", "id": "c1", "name": "w", "input": {"city": "Oslo"}})
        );
        // The tool result and the next user message are one user turn.
        assert_eq!(
            v["messages"][2]["content"][0],
            json!({"type": "tool_result", "tool_use_id": "c1", "content": "cold"})
        );
        assert_eq!(
            v["messages"][2]["content"][1],
            json!({"type": "text", "text": "And tomorrow?"})
        );
        assert_eq!(
            v["tool_choice"],
            json!({"type": "any", "disable_parallel_tool_use": true})
        );
        assert_eq!(v["metadata"]["user_id"], "u1");
        // `safety_identifier`, OpenAI's successor to `user`, is the one Anthropic is given.
        let mut chat = chat;
        chat.insert("safety_identifier".into(), json!("hashed-9"));
        let v: Value =
            serde_json::from_slice(&from_chat(&chat, "claude-x", false, 4096, None)).unwrap();
        assert_eq!(v["metadata"], json!({"user_id": "hashed-9"}));
        assert!(v.get("output_config").is_none(), "{v}");
    }

    #[test]
    fn a_json_schema_and_strict_tools_become_structured_output() {
        let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false});
        let chat: Map<String, Value> = serde_json::from_value(json!({
            "model": "auto", "messages": [{"role": "user", "content": "A city?"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": true}},
            "tools": [{"type": "function", "function": {"name": "w", "parameters": {"type": "object"}, "strict": true}}]}))
        .unwrap();
        let v: Value =
            serde_json::from_slice(&from_chat(&chat, "claude-x", false, 4096, None)).unwrap();
        assert_eq!(
            v["output_config"],
            json!({"format": {"type": "json_schema", "schema": schema}})
        );
        assert_eq!(v["tools"][0]["strict"], true);
    }

    /// The Messages request for a chat request with these members.
    fn thinking_request(chat: Value, mode: Thinking) -> Value {
        let chat: Map<String, Value> = serde_json::from_value(chat).unwrap();
        serde_json::from_slice(&from_chat(&chat, "claude-x", false, 4096, Some(mode))).unwrap()
    }

    #[test]
    fn reasoning_effort_becomes_adaptive_thinking_with_its_effort() {
        let ask = |effort: &str| {
            json!({"model": "auto", "reasoning_effort": effort, "temperature": 0.2, "top_p": 0.5,
                "messages": [{"role": "user", "content": "Prove it."}]})
        };
        let v = thinking_request(ask("high"), Thinking::Adaptive);
        assert_eq!(v["thinking"], json!({"type": "adaptive"}));
        assert_eq!(v["output_config"], json!({"effort": "high"}));
        // Anthropic allows temperature 1 only, and top_p from 0.95, while the model thinks.
        assert!(v.get("temperature").is_none(), "{v}");
        assert_eq!(v["top_p"], 0.95);
        assert_eq!(
            thinking_request(ask("minimal"), Thinking::Adaptive)["output_config"],
            json!({"effort": "low"})
        );
        let none = thinking_request(ask("none"), Thinking::Adaptive);
        assert!(none.get("thinking").is_none() && none.get("output_config").is_none());
        assert_eq!(none["temperature"], 0.2);
        // Beside a JSON schema, the effort joins `output_config`.
        let mut with_schema = ask("low");
        with_schema["response_format"] = json!({"type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "object"}}});
        assert_eq!(
            thinking_request(with_schema, Thinking::Adaptive)["output_config"],
            json!({"format": {"type": "json_schema", "schema": {"type": "object"}}, "effort": "low"})
        );
        // Without `reasoning_effort`, nothing is asked.
        let plain = thinking_request(
            json!({"model": "auto", "messages": [{"role": "user", "content": "Hi"}]}),
            Thinking::Adaptive,
        );
        assert!(plain.get("thinking").is_none() && plain.get("output_config").is_none());
    }

    #[test]
    fn a_thinking_budget_is_a_share_of_max_tokens() {
        let ask = |effort: &str, max_tokens: u64| {
            json!({"model": "auto", "reasoning_effort": effort, "max_tokens": max_tokens,
                "messages": [{"role": "user", "content": "Prove it."}]})
        };
        for (effort, budget) in [
            ("minimal", 1024),
            ("low", 2000),
            ("medium", 5000),
            ("high", 8000),
            ("xhigh", 9500),
        ] {
            let v = thinking_request(ask(effort, 10_000), Thinking::Budget);
            assert_eq!(
                v["thinking"],
                json!({"type": "enabled", "budget_tokens": budget}),
                "{effort}"
            );
            assert!(v.get("output_config").is_none(), "{v}");
        }
        // No budget fits below 1,025 tokens: the model answers without thinking.
        assert!(thinking_request(ask("high", 1024), Thinking::Budget)
            .get("thinking")
            .is_none());
        assert_eq!(
            thinking_request(ask("low", 1025), Thinking::Budget)["thinking"]["budget_tokens"],
            1024
        );
        assert!(thinking_request(ask("none", 10_000), Thinking::Budget)
            .get("thinking")
            .is_none());
    }

    #[test]
    fn no_thinking_where_anthropic_refuses_it() {
        let call =
            json!([{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]);
        let tools = json!([{"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}]);
        for mode in [Thinking::Adaptive, Thinking::Budget] {
            // A forced tool call.
            for choice in [
                json!("required"),
                json!({"type": "function", "function": {"name": "w"}}),
            ] {
                let v = thinking_request(
                    json!({"model": "auto", "reasoning_effort": "high", "tools": tools,
                        "tool_choice": choice, "temperature": 0.3,
                        "messages": [{"role": "user", "content": "Weather?"}]}),
                    mode,
                );
                assert!(v.get("thinking").is_none(), "{mode:?} {v}");
                assert_eq!(v["temperature"], 0.3);
            }
            // A tool call's result, answered in the same turn.
            let v = thinking_request(
                json!({"model": "auto", "reasoning_effort": "high", "tools": tools,
                    "messages": [{"role": "user", "content": "Weather?"},
                        {"role": "assistant", "content": null, "tool_calls": call},
                        {"role": "tool", "tool_call_id": "c1", "content": "cold"}]}),
                mode,
            );
            assert!(v.get("thinking").is_none(), "{mode:?} {v}");
            // Once the model answered in text, the next turn thinks again.
            let v = thinking_request(
                json!({"model": "auto", "reasoning_effort": "high", "tools": tools,
                    "messages": [{"role": "user", "content": "Weather?"},
                        {"role": "assistant", "content": null, "tool_calls": call},
                        {"role": "tool", "tool_call_id": "c1", "content": "cold"},
                        {"role": "assistant", "content": "Cold."},
                        {"role": "user", "content": "Tomorrow?"}]}),
                mode,
            );
            assert!(v.get("thinking").is_some(), "{mode:?} {v}");
        }
        // Adaptive: the effort is still given, since it needs no thinking.
        let v = thinking_request(
            json!({"model": "auto", "reasoning_effort": "low", "tools": tools,
                "tool_choice": "required", "messages": [{"role": "user", "content": "Weather?"}]}),
            Thinking::Adaptive,
        );
        assert_eq!(v["output_config"], json!({"effort": "low"}));
    }

    #[test]
    fn thinking_in_the_answer_is_reasoning_content_not_content() {
        let body = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [{"type": "thinking", "thinking": "Let me see.", "signature": "sig"},
                {"type": "redacted_thinking", "data": "xyz"},
                {"type": "text", "text": "42"}],
            "stop_reason": "end_turn", "usage": {"input_tokens": 10, "output_tokens": 30}});
        let v: Value =
            serde_json::from_slice(&to_completion(body.to_string().as_bytes(), "m").unwrap())
                .unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "42");
        // The thinking's text; redacted thinking has none to show.
        assert_eq!(
            v["choices"][0]["message"]["reasoning_content"],
            "Let me see."
        );
        assert_eq!(v["usage"]["completion_tokens"], 30);
        let mut s = StreamFromAnthropic::new("m");
        let mut text = String::new();
        let mut reasoning = String::new();
        for event in [
            json!({"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 10, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me see."}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "42"}}),
            json!({"type": "content_block_stop", "index": 1}),
        ] {
            let Translated::Chunks(chunks) = s.event(event.to_string().as_bytes()) else {
                panic!("{event}");
            };
            for c in chunks {
                let c: Value = serde_json::from_slice(&c).unwrap();
                let delta = &c["choices"][0]["delta"];
                text.push_str(delta["content"].as_str().unwrap_or(""));
                reasoning.push_str(delta["reasoning_content"].as_str().unwrap_or(""));
            }
        }
        assert_eq!((text.as_str(), reasoning.as_str()), ("42", "Let me see."));
    }

    #[test]
    fn an_answer_and_a_stream_come_back_as_openai() {
        let body = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [{"type": "text", "text": "Hi"}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 10, "output_tokens": 3, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5}});
        let v: Value =
            serde_json::from_slice(&to_completion(body.to_string().as_bytes(), "claude").unwrap())
                .unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "Hi");
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 115, "completion_tokens": 3, "total_tokens": 118, "prompt_tokens_details": {"cached_tokens": 100},
                "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5})
        );
        let mut s = StreamFromAnthropic::new("claude");
        let events = [
            json!({"type": "message_start", "message": {"id": "msg_2", "usage": {"input_tokens": 7, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "t1", "name": "f", "input": {}}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"a\":1}"}}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
        ];
        let mut payloads = vec![];
        for e in events {
            match s.event(e.to_string().as_bytes()) {
                Translated::Chunks(c) => payloads.extend(c),
                other => panic!("{other:?}"),
            }
        }
        let Translated::Done(last) = s.event(br#"{"type":"message_stop"}"#) else {
            panic!("done")
        };
        let p: Vec<Value> = payloads
            .iter()
            .chain(&last)
            .map(|b| serde_json::from_slice(b).unwrap())
            .collect();
        assert_eq!(
            p[1]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
            "f"
        );
        assert_eq!(
            p[2]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
            "{\"a\":1}"
        );
        assert_eq!(p[3]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(p[4]["usage"]["completion_tokens"], 9);
        assert_eq!(p[4]["usage"]["prompt_tokens"], 7);
        assert!(
            matches!(s.event(br#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#), Translated::Error(m) if m == "busy")
        );
    }
}
