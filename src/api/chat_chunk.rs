//! One event of the internal (OpenAI chat) stream, read for the stream translators of the other
//! dialects ([`super::anthropic`], [`super::responses`], [`super::completions`]).

use serde_json::Value;

/// A chat stream event's data.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatEvent {
    /// `[DONE]`.
    Done,
    /// An error object (the stream broke): its message.
    Error(String),
    /// A chunk (boxed: it is much larger than the other variants).
    Chunk(Box<ChunkView>),
}

/// What the translators read of a chunk (its first choice).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChunkView {
    pub id: Option<String>,
    pub created: Option<Value>,
    /// Non-null `usage`.
    pub usage: Option<Value>,
    /// Whether the chunk has a choice (a usage-only chunk has none).
    pub has_choice: bool,
    /// Non-empty `delta.content`.
    pub text: Option<String>,
    pub calls: Vec<CallDelta>,
    /// `delta.annotations` (`url_citation` objects of a search model's answer).
    pub annotations: Vec<Value>,
    pub finish: Option<String>,
    /// The stop string that ended the choice (`stop_reason`, as vLLM and the on-box engine
    /// report it), when it is a string.
    pub stop_sequence: Option<String>,
}

/// One `delta.tool_calls` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct CallDelta {
    pub index: u64,
    pub id: Option<String>,
    pub name: Option<String>,
    /// Non-empty `function.arguments`.
    pub args: Option<String>,
}

/// Reads one event's data; `None` when it is not JSON (the gateway never writes such events).
pub fn read(data: &[u8]) -> Option<ChatEvent> {
    if data == b"[DONE]" {
        return Some(ChatEvent::Done);
    }
    let v: Value = serde_json::from_slice(data).ok()?;
    // `"error": null` is no error (some providers send it on every chunk).
    if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
        let message = err
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("the stream failed");
        return Some(ChatEvent::Error(message.to_string()));
    }
    let s = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
    let choice = v.pointer("/choices/0");
    let delta = choice.map(|c| &c["delta"]);
    Some(ChatEvent::Chunk(Box::new(ChunkView {
        id: s(&v, "/id"),
        created: v.get("created").cloned(),
        usage: v.get("usage").filter(|u| !u.is_null()).cloned(),
        has_choice: choice.is_some(),
        text: delta
            .and_then(|d| d.get("content"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_string),
        calls: delta
            .and_then(|d| d.get("tool_calls"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|c| CallDelta {
                index: c.get("index").and_then(Value::as_u64).unwrap_or(0),
                id: s(c, "/id"),
                name: s(c, "/function/name"),
                args: s(c, "/function/arguments").filter(|a| !a.is_empty()),
            })
            .collect(),
        annotations: delta
            .and_then(|d| d.get("annotations"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        finish: choice.and_then(|c| s(c, "/finish_reason")),
        stop_sequence: choice.and_then(|c| s(c, "/stop_reason")),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_null_error_is_a_chunk_and_an_error_object_ends_the_stream() {
        let chunk = br#"{"id":"c1","choices":[{"index":0,"delta":{"content":"Hi"}}],"error":null}"#;
        match read(chunk) {
            Some(ChatEvent::Chunk(c)) => assert_eq!(c.text.as_deref(), Some("Hi")),
            other => panic!("{other:?}"),
        }
        let failed = br#"{"error":{"message":"overloaded","type":"server_error"}}"#;
        assert!(matches!(read(failed), Some(ChatEvent::Error(m)) if m == "overloaded"));
        assert!(matches!(read(b"[DONE]"), Some(ChatEvent::Done)));
        assert!(read(b"not json").is_none());
    }
}
