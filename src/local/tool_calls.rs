//! Reading tool calls out of an on-box model's text, as it streams: the Hermes syntax Qwen2.5's
//! template teaches (`<tool_call>\n{"name": "f", "arguments": {...}}\n</tool_call>`), turned into
//! OpenAI `tool_calls` (`{"id", "type": "function", "function": {"name", "arguments"}}`, the
//! arguments a JSON string). Text outside the tags is content. Small models often write the
//! call's JSON without the tags: an answer that is only `{"name": ..., "arguments": ...}` (or
//! that in a code fence) naming an offered function is read as that call; such an answer is
//! held back until it ends. A block that does not parse as a
//! call, or is still open when the answer ends, is handed out as content: nothing the model wrote
//! is dropped.

use super::template::{TOOL_CALL_CLOSE, TOOL_CALL_OPEN};
use serde_json::Value;

/// A tool call read from the text.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// Position among this answer's calls (OpenAI's `index` in stream deltas).
    pub index: usize,
    pub id: String,
    pub name: String,
    /// The arguments as a JSON text (OpenAI sends them as a string).
    pub arguments: String,
}

/// What the parser hands out.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Content(String),
    Call(ToolCall),
}

/// A streaming reader of one answer's text.
#[derive(Default)]
pub struct ToolCallParser {
    /// Text held back: a possible start of the opening tag, or an open call's body.
    held: String,
    inside: bool,
    calls: usize,
    /// Prefix of the call ids (unique per answer).
    id_prefix: String,
    /// The offered functions' names.
    names: Vec<String>,
    /// Nothing but whitespace was read yet.
    at_start: bool,
    /// The answer started like a bare JSON call: all of it is held until the end.
    bare: bool,
}

impl ToolCallParser {
    /// A parser whose call ids start with `id_prefix` (`call_...`), for calls of `names`.
    pub fn new(id_prefix: &str, names: Vec<String>) -> ToolCallParser {
        ToolCallParser {
            id_prefix: id_prefix.to_string(),
            names,
            at_start: true,
            ..Default::default()
        }
    }

    /// Calls read so far.
    pub fn calls(&self) -> usize {
        self.calls
    }

    /// Reads `text`, the next piece of the answer.
    pub fn push(&mut self, text: &str) -> Vec<Output> {
        self.held.push_str(text);
        if self.at_start {
            let start = self.held.trim_start();
            if start.is_empty() {
                return vec![];
            }
            self.at_start = false;
            self.bare = start.starts_with('{') || start.starts_with("```");
        }
        if self.bare {
            return vec![];
        }
        let mut out = vec![];
        loop {
            if self.inside {
                let Some(end) = self.held.find(TOOL_CALL_CLOSE) else {
                    return out;
                };
                let body = self.held[..end].to_string();
                self.held.drain(..end + TOOL_CALL_CLOSE.len());
                self.inside = false;
                match self.call_of(&body) {
                    Some(call) => out.push(Output::Call(call)),
                    None => out.push(Output::Content(format!(
                        "{TOOL_CALL_OPEN}{body}{TOOL_CALL_CLOSE}"
                    ))),
                }
                continue;
            }
            if let Some(start) = self.held.find(TOOL_CALL_OPEN) {
                let before = self.held[..start].to_string();
                push_content(&mut out, before, self.calls > 0);
                self.held.drain(..start + TOOL_CALL_OPEN.len());
                self.inside = true;
                continue;
            }
            // Hold back an end that may be the start of the opening tag.
            let len = self.held.len();
            let keep = (1..TOOL_CALL_OPEN.len().min(len) + 1)
                .rev()
                .find(|&k| {
                    self.held.is_char_boundary(len - k)
                        && TOOL_CALL_OPEN.starts_with(&self.held[len - k..])
                })
                .unwrap_or(0);
            let ready: String = self.held.drain(..len - keep).collect();
            push_content(&mut out, ready, self.calls > 0);
            return out;
        }
    }

    /// The end of the answer: whatever is held back, as content.
    pub fn finish(&mut self) -> Vec<Output> {
        if self.bare {
            self.bare = false;
            let text = std::mem::take(&mut self.held);
            if let Some(call) = self.bare_call(&text) {
                return vec![Output::Call(call)];
            }
            // Not a bare call: read it as any answer (it may hold tagged calls).
            let mut out = self.push(&text);
            out.extend(self.finish());
            return out;
        }
        let mut rest = std::mem::take(&mut self.held);
        if self.inside {
            rest = format!("{TOOL_CALL_OPEN}{rest}");
            self.inside = false;
        }
        let mut out = vec![];
        push_content(&mut out, rest, self.calls > 0);
        out
    }

    /// A whole answer that is one call's JSON (perhaps in a code fence) of an offered function.
    fn bare_call(&mut self, text: &str) -> Option<ToolCall> {
        let t = text.trim();
        let t = match t.strip_prefix("```") {
            Some(fenced) => fenced
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .trim_end()
                .strip_suffix("```")?
                .trim(),
            None => t,
        };
        let v: Value = serde_json::from_str(t).ok()?;
        let name = v.get("name")?.as_str()?;
        if !self.names.iter().any(|n| n == name) || v.get("arguments").is_none() {
            return None;
        }
        self.call_of(t)
    }

    fn call_of(&mut self, body: &str) -> Option<ToolCall> {
        let v: Value = serde_json::from_str(body.trim()).ok()?;
        let name = v.get("name")?.as_str()?.to_string();
        let arguments = match v.get("arguments").or_else(|| v.get("parameters")) {
            None | Some(Value::Null) => "{}".to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(a) => a.to_string(),
        };
        let index = self.calls;
        self.calls += 1;
        Some(ToolCall {
            index,
            id: format!("{}_{index}", self.id_prefix),
            name,
            arguments,
        })
    }
}

/// Content between or after calls that is only whitespace (the newlines around the tags) is
/// not content.
fn push_content(out: &mut Vec<Output>, text: String, after_call: bool) {
    if text.is_empty() || (after_call && text.trim().is_empty()) {
        return;
    }
    out.push(Output::Content(text));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pieces: &[&str]) -> Vec<Output> {
        let mut p = ToolCallParser::new("call_x", vec!["get_weather".into(), "t".into()]);
        let mut out: Vec<Output> = pieces.iter().flat_map(|t| p.push(t)).collect();
        out.extend(p.finish());
        // Join neighbouring content.
        let mut joined: Vec<Output> = vec![];
        for o in out {
            match (joined.last_mut(), o) {
                (Some(Output::Content(a)), Output::Content(b)) => a.push_str(&b),
                (_, o) => joined.push(o),
            }
        }
        joined
    }

    fn call(index: usize, name: &str, args: &str) -> Output {
        Output::Call(ToolCall {
            index,
            id: format!("call_x_{index}"),
            name: name.into(),
            arguments: args.into(),
        })
    }

    #[test]
    fn calls_split_across_pieces_are_read_and_text_is_kept() {
        assert_eq!(
            run(&[
                "Let me check.\n<tool",
                "_call>\n{\"name\": \"get_weather\", \"argu",
                "ments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"t\", \"arguments\": {}}\n</tool_call>"
            ]),
            vec![
                Output::Content("Let me check.\n".into()),
                call(0, "get_weather", r#"{"city":"Paris"}"#),
                call(1, "t", "{}"),
            ]
        );
    }

    #[test]
    fn a_bare_call_of_an_offered_function_is_a_call() {
        assert_eq!(
            run(&[
                "{\"name\": \"get_weather\", ",
                "\"arguments\": {\"city\": \"Oslo\"}}"
            ]),
            vec![call(0, "get_weather", r#"{"city":"Oslo"}"#)]
        );
        assert_eq!(
            run(&["```json\n{\"name\": \"t\", \"arguments\": {}}\n```"]),
            vec![call(0, "t", "{}")]
        );
        // Another function's name, or JSON that is not a call, stays content.
        for text in [
            r#"{"name": "other", "arguments": {}}"#,
            r#"{"city": "Oslo"}"#,
        ] {
            assert_eq!(run(&[text]), vec![Output::Content(text.into())]);
        }
    }

    #[test]
    fn text_that_only_looks_like_a_call_is_content() {
        assert_eq!(
            run(&["a < b and <tool"]),
            vec![Output::Content("a < b and <tool".into())]
        );
        assert_eq!(
            run(&["<tool_call>not json</tool_call>"]),
            vec![Output::Content("<tool_call>not json</tool_call>".into())]
        );
        assert_eq!(
            run(&["<tool_call>{\"name\": \"f\", \"argu"]),
            vec![Output::Content(
                "<tool_call>{\"name\": \"f\", \"argu".into()
            )]
        );
    }
}
