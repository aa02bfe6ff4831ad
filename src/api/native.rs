//! Requests passed to an upstream in the client's own dialect (an Anthropic Messages request to
//! an Anthropic model, a Responses, legacy completions or embeddings request to an
//! OpenAI-compatible model that serves it): the body goes as it came with only `model`
//! replaced, and the answer comes back as the upstream sent it. The gateway reads only what it
//! settles: the token counts and the length of the text, and where a stream ends.
//!
//! Sources: Anthropic's Messages API reference ("Streaming Messages": `message_start`,
//! `content_block_delta`, `message_delta`, `message_stop`, `error`), OpenAI's Responses API
//! reference (the response object's `usage`, `response.output_text.delta`,
//! `response.completed`), its completions reference (`text_completion`) and its embeddings
//! reference (the `list`'s `usage`).

use super::skim::{self, Kind, Reader, SkimError};
use super::{Dialect, Reported};
use serde::Deserialize;

/// Writes `body` (a JSON object) with its `model` member replaced by `model` and every other
/// member as the client sent it, in its order; with `include_usage`, `stream_options` gets
/// `include_usage: true` (a completions stream, whose usage comes only when asked for).
///
/// Errors: the body is not a JSON object (the dialect's translation has checked it before).
pub fn with_model(body: &[u8], model: &str, include_usage: bool) -> Result<Vec<u8>, SkimError> {
    let mut out = Vec::with_capacity(body.len() + model.len() + 48);
    out.extend_from_slice(b"{\"model\":");
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, model);
    let mut r = Reader::new(body)?;
    let mut options = None;
    r.object(|r, key| {
        let value = r.raw()?;
        if key.is("model") {
            return Ok(());
        }
        if include_usage && key.is("stream_options") {
            options = Some(value);
            return Ok(());
        }
        out.extend_from_slice(b",\"");
        out.extend_from_slice(key.raw.as_bytes());
        out.extend_from_slice(b"\":");
        out.extend_from_slice(value.as_bytes());
        Ok(())
    })?;
    r.end()?;
    if include_usage {
        let mut opts = options
            .and_then(|o| {
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(o).ok()
            })
            .unwrap_or_default();
        opts.insert("include_usage".into(), serde_json::Value::Bool(true));
        out.extend_from_slice(b",\"stream_options\":");
        let _ = serde_json::to_writer(&mut out, &opts);
    }
    out.push(b'}');
    Ok(out)
}

/// Anthropic's `usage` object (counts the upstream left out are `None`).
#[derive(Debug, Default, Deserialize)]
struct AnthropicUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    server_tool_use: Option<ServerToolUse>,
}

/// Anthropic's count of the server tools' calls.
#[derive(Debug, Default, Deserialize)]
struct ServerToolUse {
    #[serde(default)]
    web_search_requests: Option<u64>,
}

impl AnthropicUsage {
    /// In the gateway's terms: the prompt is the uncached input plus the cache's reads and
    /// writes.
    fn reported(&self) -> Reported {
        let read = self.cache_read_input_tokens.unwrap_or(0);
        let write = self.cache_creation_input_tokens.unwrap_or(0);
        Reported {
            prompt_tokens: self
                .input_tokens
                .map(|n| n.saturating_add(read).saturating_add(write)),
            completion_tokens: self.output_tokens,
            cached_tokens: Some(read),
            cache_write_tokens: Some(write),
            web_searches: self
                .server_tool_use
                .as_ref()
                .and_then(|s| s.web_search_requests),
        }
    }
}

/// Anthropic's `usage` object in the gateway's terms ([`Reported`]; counts it left out are
/// `None`), or `None` when it is not an object of counts.
pub fn anthropic_reported(usage: &serde_json::Value) -> Option<Reported> {
    AnthropicUsage::deserialize(usage)
        .ok()
        .map(|u| u.reported())
}

/// The Responses API's `usage` object: `input_tokens` includes the cached ones.
#[derive(Debug, Default, Deserialize)]
struct ResponsesUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    input_tokens_details: Option<InputDetails>,
}

#[derive(Debug, Default, Deserialize)]
struct InputDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

impl ResponsesUsage {
    fn reported(&self) -> Reported {
        Reported {
            prompt_tokens: self.input_tokens,
            completion_tokens: self.output_tokens,
            cached_tokens: self
                .input_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens),
            cache_write_tokens: None,
            web_searches: None,
        }
    }
}

/// Reads a usage object leniently: one that does not read is `None` (the settlement then
/// estimates), never an error.
fn usage<'a, T: Deserialize<'a>>(raw: &'a str) -> Option<T> {
    serde_json::from_str(raw).ok()
}

/// The raw JSON of the member at `path` (object keys, outermost first) in `doc`.
fn find<'a>(doc: &'a [u8], path: &[&str]) -> Result<Option<&'a str>, SkimError> {
    fn walk<'a>(r: &mut Reader<'a>, path: &[&str]) -> Result<Option<&'a str>, SkimError> {
        let Some((first, rest)) = path.split_first() else {
            return r.raw().map(Some);
        };
        if r.peek()? != Kind::Object {
            r.skip()?;
            return Ok(None);
        }
        let mut found = None;
        r.object(|r, key| {
            if found.is_none() && key.is(first) {
                found = walk(r, rest)?;
                return Ok(());
            }
            r.skip()
        })?;
        Ok(found)
    }
    let mut r = Reader::new(doc)?;
    let found = walk(&mut r, path)?;
    r.end()?;
    Ok(found)
}

/// Bytes of the strings under `key` in the objects of the JSON array `raw_array`; with `inner`,
/// in the objects of each element's `inner` array instead (Responses' `output[].content[].text`).
/// Tool calls among the elements count too: a string `arguments` (a Responses `function_call`)
/// and an object `input` (an Anthropic `tool_use`, its compact JSON).
fn text_bytes(raw_array: &str, inner: Option<&str>, key: &str) -> Result<u64, SkimError> {
    let mut total = 0u64;
    let mut r = Reader::of(raw_array);
    if r.peek()? != Kind::Array {
        return Ok(0);
    }
    r.array(|r| {
        if r.peek()? != Kind::Object {
            return r.skip();
        }
        r.object(|r, k| match inner {
            Some(inner) if k.is(inner) => {
                total += text_bytes(r.raw()?, None, key)?;
                Ok(())
            }
            None if k.is(key) && r.peek()? == Kind::String => {
                total += r.string()?.len() as u64;
                Ok(())
            }
            _ if k.is("arguments") && r.peek()? == Kind::String => {
                total += r.string()?.len() as u64;
                Ok(())
            }
            _ if k.is("input") && r.peek()? == Kind::Object => {
                total += super::skim::compact_len(r.raw()?) as u64;
                Ok(())
            }
            _ => r.skip(),
        })
    })?;
    Ok(total)
}

/// What the gateway reads of a whole answer in `dialect`: its usage (`None` when it has none)
/// and the bytes of its text (for an estimate when the usage is missing).
///
/// Errors: the body is not JSON.
pub fn answer(dialect: Dialect, body: &[u8]) -> Result<(Option<Reported>, u64), SkimError> {
    let usage_raw = find(body, &["usage"])?;
    let reported = match dialect {
        Dialect::Anthropic => usage_raw
            .and_then(usage::<AnthropicUsage>)
            .map(|u| u.reported()),
        Dialect::Responses | Dialect::Compaction => usage_raw
            .and_then(usage::<ResponsesUsage>)
            .map(|u| u.reported()),
        Dialect::Completions => usage_raw.and_then(Reported::from_json),
        // `prompt_tokens` and `total_tokens`: an embedding writes no tokens.
        Dialect::Embeddings => usage_raw.and_then(Reported::from_json).map(|mut r| {
            r.completion_tokens.get_or_insert(0);
            r
        }),
        // A count is no answer: nothing to bill.
        Dialect::CountTokens | Dialect::InputTokens => None,
    };
    let text = match dialect {
        Dialect::Anthropic => find(body, &["content"])?.map(|a| text_bytes(a, None, "text")),
        Dialect::Responses => {
            find(body, &["output"])?.map(|a| text_bytes(a, Some("content"), "text"))
        }
        // A compaction's output is the client's own user messages and the encrypted summary:
        // no text the model wrote.
        Dialect::Compaction | Dialect::Embeddings | Dialect::CountTokens | Dialect::InputTokens => {
            None
        }
        Dialect::Completions => find(body, &["choices"])?.map(|a| text_bytes(a, None, "text")),
    };
    Ok((reported, text.transpose()?.unwrap_or(0)))
}

/// What one event of a stream in the client's dialect tells the gateway.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct EventRead {
    /// Bytes of generated text (text, tool-call arguments, thinking).
    pub text_bytes: u64,
    /// The usage so far, when this event carries (or completes) it.
    pub usage: Option<Reported>,
    /// The answer is finished: nothing but the end of the body should follow (for a
    /// completions stream, a choice has finished).
    pub finished: bool,
    /// The event is the upstream's error: the stream ends with it.
    pub error: bool,
    /// A completions chunk with usage and no choices (the one `stream_options.include_usage`
    /// asks for).
    pub usage_only: bool,
}

/// Reads the events of one stream in a dialect, keeping what spans events (Anthropic's prompt
/// counts come in `message_start`, its output count in `message_delta`).
#[derive(Debug)]
pub struct StreamReader {
    dialect: Dialect,
    /// Anthropic: the usage of `message_start`.
    started: Option<Reported>,
}

impl StreamReader {
    pub fn new(dialect: Dialect) -> StreamReader {
        StreamReader {
            dialect,
            started: None,
        }
    }

    /// Reads one event: its name (the `event:` field, else the data's `type`) and data.
    ///
    /// Errors: the data is not JSON.
    pub fn event(&mut self, name: Option<&[u8]>, data: &[u8]) -> Result<EventRead, SkimError> {
        let mut read = EventRead::default();
        let typed;
        let kind = match name {
            Some(n) => std::str::from_utf8(n).unwrap_or_default(),
            None => {
                typed = find(data, &["type"])?
                    .and_then(|t| serde_json::from_str::<String>(t).ok())
                    .unwrap_or_default();
                typed.as_str()
            }
        };
        match (self.dialect, kind) {
            (_, "error") => read.error = true,
            (Dialect::Anthropic, "message_start") => {
                self.started = find(data, &["message", "usage"])?
                    .and_then(usage::<AnthropicUsage>)
                    .map(|u| u.reported());
                // The prompt's counts now, the output's at `message_delta`: a stream cut
                // between them is billed its prompt as reported, its output estimated.
                read.usage = self.started.map(|u| Reported {
                    completion_tokens: None,
                    ..u
                });
            }
            (Dialect::Anthropic, "content_block_delta") => {
                if let Some(delta) = find(data, &["delta"])? {
                    let mut r = Reader::of(delta);
                    if r.peek()? == Kind::Object {
                        r.object(|r, key| {
                            let generated =
                                key.is("text") || key.is("partial_json") || key.is("thinking");
                            if generated && r.peek()? == Kind::String {
                                read.text_bytes += r.string()?.len() as u64;
                                return Ok(());
                            }
                            r.skip()
                        })?;
                    }
                }
            }
            (Dialect::Anthropic, "message_delta") => {
                // Its counts are cumulative; the prompt's come from `message_start` unless it
                // repeats them.
                if let Some(u) = find(data, &["usage"])?.and_then(usage::<AnthropicUsage>) {
                    let mut reported = self.started.unwrap_or_default();
                    let now = u.reported();
                    if u.input_tokens.is_some() {
                        reported = now;
                    }
                    reported.completion_tokens = now.completion_tokens;
                    reported.web_searches = now.web_searches.or(reported.web_searches);
                    read.usage = Some(reported);
                }
            }
            (Dialect::Anthropic, "message_stop") => read.finished = true,
            (Dialect::Responses, "response.output_text.delta")
            | (Dialect::Responses, "response.function_call_arguments.delta") => {
                if let Some(raw) = find(data, &["delta"])? {
                    let mut r = Reader::of(raw);
                    if r.peek()? == Kind::String {
                        read.text_bytes += r.string()?.len() as u64;
                    }
                }
            }
            (
                Dialect::Responses,
                "response.completed" | "response.incomplete" | "response.failed",
            ) => {
                read.usage = find(data, &["response", "usage"])?
                    .and_then(usage::<ResponsesUsage>)
                    .map(|u| u.reported());
                read.finished = true;
            }
            (Dialect::Completions, _) => {
                if find(data, &["error"])?.is_some_and(|e| e != "null") {
                    read.error = true;
                    return Ok(read);
                }
                let choices = find(data, &["choices"])?;
                if let Some(choices) = choices {
                    read.text_bytes = text_bytes(choices, None, "text")?;
                    read.finished = choices_finished(choices)?;
                }
                read.usage = find(data, &["usage"])?.and_then(Reported::from_json);
                read.usage_only = read.usage.is_some()
                    && choices.is_none_or(|c| skim::compact_len(c) <= 2 || c == "null");
                read.finished |= read.usage_only;
            }
            _ => {}
        }
        Ok(read)
    }
}

/// Whether any choice of a completions chunk has a `finish_reason`.
fn choices_finished(raw: &str) -> Result<bool, SkimError> {
    let mut finished = false;
    let mut r = Reader::of(raw);
    if r.peek()? != Kind::Array {
        return Ok(false);
    }
    r.array(|r| {
        if r.peek()? != Kind::Object {
            return r.skip();
        }
        r.object(|r, k| {
            if k.is("finish_reason") {
                if !r.null()? {
                    finished = true;
                    r.skip()?;
                }
                return Ok(());
            }
            r.skip()
        })
    })?;
    Ok(finished)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn only_the_model_is_replaced() {
        let body = br#"{ "max_tokens": 64, "model" : "auto", "system": [{"type":"text","text":"x","cache_control":{"type":"ephemeral"}}], "messages":[{"role":"user","content":"h\u00e9"}], "stream": true }"#;
        let out = with_model(body, "claude-sonnet", false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            r#"{"model":"claude-sonnet","max_tokens":64,"system":[{"type":"text","text":"x","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":"h\u00e9"}],"stream":true}"#
        );
        let out = with_model(
            br#"{"model":"m","prompt":"x","stream":true,"stream_options":{"other":1}}"#,
            "up",
            true,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({"model":"up","prompt":"x","stream":true,"stream_options":{"other":1,"include_usage":true}})
        );
        assert!(with_model(b"[1]", "m", false).is_err());
    }

    #[test]
    fn answers_give_their_usage_and_text() {
        let messages = json!({"type": "message", "content": [{"type": "text", "text": "Hello"}, {"type": "tool_use", "input": {"city": "Paris"}}],
            "usage": {"input_tokens": 10, "output_tokens": 3, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5}});
        let (u, text) = answer(Dialect::Anthropic, messages.to_string().as_bytes()).unwrap();
        let u = u.unwrap();
        assert_eq!(
            (
                u.prompt_tokens,
                u.completion_tokens,
                u.cached_tokens,
                u.cache_write_tokens
            ),
            (Some(115), Some(3), Some(100), Some(5))
        );
        // The text and the tool call's input (`{"city":"Paris"}`, compact).
        assert_eq!(text, 5 + 16);
        let response = json!({"object": "response", "output": [{"type": "message", "content": [{"type": "output_text", "text": "Hi there"}]},
                {"type": "function_call", "name": "f", "arguments": "{}"}],
            "usage": {"input_tokens": 20, "output_tokens": 2, "input_tokens_details": {"cached_tokens": 8}}});
        let (u, text) = answer(Dialect::Responses, response.to_string().as_bytes()).unwrap();
        let u = u.unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.cached_tokens),
            (Some(20), Some(2), Some(8))
        );
        assert_eq!(text, 8 + 2);
        let completion = json!({"object": "text_completion", "choices": [{"text": "abc", "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 4, "completion_tokens": 1}});
        let (u, text) = answer(Dialect::Completions, completion.to_string().as_bytes()).unwrap();
        assert_eq!(u.unwrap().prompt_tokens, Some(4));
        assert_eq!(text, 3);
        // No usage: the settlement estimates.
        let (u, _) = answer(Dialect::Anthropic, br#"{"content": []}"#).unwrap();
        assert_eq!(u, None);
        assert!(answer(Dialect::Anthropic, b"{nope").is_err());
    }

    #[test]
    fn an_anthropic_stream_joins_its_prompt_and_output_counts() {
        let mut r = StreamReader::new(Dialect::Anthropic);
        let start = json!({"type": "message_start", "message": {"usage": {"input_tokens": 21, "output_tokens": 1, "cache_read_input_tokens": 4, "cache_creation_input_tokens": 0}}});
        // The prompt's counts at once (no output count yet), for a stream cut before its end.
        let read = r
            .event(Some(b"message_start"), start.to_string().as_bytes())
            .unwrap();
        let prompt = read.usage.expect("the prompt's counts");
        assert_eq!(
            (
                prompt.prompt_tokens,
                prompt.completion_tokens,
                prompt.cached_tokens
            ),
            (Some(25), None, Some(4))
        );
        assert!(!read.finished && !read.usage_only);
        let delta = json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}});
        assert_eq!(
            r.event(None, delta.to_string().as_bytes())
                .unwrap()
                .text_bytes,
            5
        );
        let end = json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}});
        let read = r
            .event(Some(b"message_delta"), end.to_string().as_bytes())
            .unwrap();
        let u = read.usage.unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.cached_tokens),
            (Some(25), Some(7), Some(4))
        );
        assert!(
            r.event(Some(b"message_stop"), br#"{"type":"message_stop"}"#)
                .unwrap()
                .finished
        );
        assert!(
            r.event(
                Some(b"error"),
                br#"{"type":"error","error":{"type":"overloaded_error"}}"#
            )
            .unwrap()
            .error
        );
    }

    #[test]
    fn responses_and_completions_streams_end_with_their_usage() {
        let mut r = StreamReader::new(Dialect::Responses);
        let delta =
            json!({"type": "response.output_text.delta", "delta": "abc", "sequence_number": 3});
        assert_eq!(
            r.event(
                Some(b"response.output_text.delta"),
                delta.to_string().as_bytes()
            )
            .unwrap()
            .text_bytes,
            3
        );
        let done = json!({"type": "response.completed", "response": {"usage": {"input_tokens": 9, "output_tokens": 3}}});
        let read = r
            .event(Some(b"response.completed"), done.to_string().as_bytes())
            .unwrap();
        assert!(read.finished);
        assert_eq!(read.usage.unwrap().completion_tokens, Some(3));
        let mut r = StreamReader::new(Dialect::Completions);
        let chunk = json!({"choices": [{"index": 0, "text": "ab", "finish_reason": null}]});
        let read = r.event(None, chunk.to_string().as_bytes()).unwrap();
        assert_eq!((read.text_bytes, read.finished), (2, false));
        let chunk = json!({"choices": [{"finish_reason": "stop", "index": 0, "text": ""}]});
        let read = r.event(None, chunk.to_string().as_bytes()).unwrap();
        assert_eq!((read.text_bytes, read.finished), (0, true));
        let last = json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}});
        let read = r.event(None, last.to_string().as_bytes()).unwrap();
        assert!(read.finished && read.usage_only);
        assert!(
            r.event(None, br#"{"error":{"message":"x"}}"#)
                .unwrap()
                .error
        );
    }
}
