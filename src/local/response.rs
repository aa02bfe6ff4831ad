//! The on-box engine's answers in OpenAI's chat completion shape: each choice's text read for
//! tool calls, its log probabilities (`{"content": [{"token", "logprob", "bytes",
//! "top_logprobs": [...]}]}`), and its `finish_reason` (`tool_calls` when it called a tool),
//! whole (`chat.completion`) or as stream deltas (`chat.completion.chunk`: content deltas,
//! tool-call deltas with `index`, `id`, `type` and `function`, and logprobs beside the text they
//! belong to).

use super::generate::Finish;
use super::sampling::TokenLogprob;
use super::tool_calls::{Output, ToolCallParser};
use super::LocalModel;
use serde_json::{json, Value};

/// One token in OpenAI's logprobs shape.
fn token_json(model: &LocalModel, token: u32, logprob: f32) -> Value {
    let bytes = model.token_bytes(token);
    json!({"token": String::from_utf8_lossy(&bytes), "logprob": logprob, "bytes": bytes})
}

/// Entries of `logprobs.content` for `tokens`.
pub fn logprobs_json(model: &LocalModel, tokens: &[TokenLogprob]) -> Vec<Value> {
    tokens
        .iter()
        .map(|t| {
            let mut v = token_json(model, t.token, t.logprob);
            v["top_logprobs"] = t
                .top
                .iter()
                .map(|&(tok, lp)| token_json(model, tok, lp))
                .collect();
            v
        })
        .collect()
}

/// What a choice hands out for one piece of text: content and tool calls, as delta objects.
pub struct ChoiceState {
    parser: Option<ToolCallParser>,
    pub content: String,
    pub tool_calls: Vec<Value>,
    pub logprobs: Vec<Value>,
    pub finish: Option<Finish>,
    /// The stop string that ended the choice, when one did.
    pub stop_sequence: Option<String>,
}

impl ChoiceState {
    /// A choice whose text is read for calls of `tools` when there are any (ids start with
    /// `id_prefix`).
    pub fn new(tools: Option<Vec<String>>, id_prefix: &str) -> ChoiceState {
        ChoiceState {
            parser: tools.map(|names| ToolCallParser::new(id_prefix, names)),
            content: String::new(),
            tool_calls: vec![],
            logprobs: vec![],
            finish: None,
            stop_sequence: None,
        }
    }

    /// Reads the next piece of text; returns the deltas to stream (content and tool calls).
    pub fn push(&mut self, text: &str) -> Vec<Value> {
        let outputs = match &mut self.parser {
            Some(p) => p.push(text),
            None if text.is_empty() => vec![],
            None => vec![Output::Content(text.to_string())],
        };
        self.take(outputs)
    }

    /// The end of the choice's text: what the parser held back. `stop_sequence`: the stop
    /// string that ended it, when one did.
    pub fn end(&mut self, finish: Finish, stop_sequence: Option<String>) -> Vec<Value> {
        let outputs = match &mut self.parser {
            Some(p) => p.finish(),
            None => vec![],
        };
        self.finish = Some(finish);
        self.stop_sequence = stop_sequence;
        self.take(outputs)
    }

    /// The stop string that ended the choice, as the choice's `stop_reason` (the field vLLM's
    /// OpenAI-compatible server adds to a choice, and the Anthropic translation reads as
    /// `stop_sequence`); `None` when the choice ended otherwise.
    pub fn stop_reason(&self) -> Option<&str> {
        (self.finish_reason() == "stop")
            .then_some(self.stop_sequence.as_deref())
            .flatten()
    }

    fn take(&mut self, outputs: Vec<Output>) -> Vec<Value> {
        outputs
            .into_iter()
            .map(|o| match o {
                Output::Content(t) => {
                    self.content.push_str(&t);
                    json!({"content": t})
                }
                Output::Call(c) => {
                    let call = json!({"id": c.id, "type": "function",
                                      "function": {"name": c.name, "arguments": c.arguments}});
                    self.tool_calls.push(call.clone());
                    let mut delta = call;
                    delta["index"] = json!(c.index);
                    json!({"tool_calls": [delta]})
                }
            })
            .collect()
    }

    /// The OpenAI `finish_reason`: `tool_calls` when the choice called a tool.
    pub fn finish_reason(&self) -> &'static str {
        if !self.tool_calls.is_empty() {
            return "tool_calls";
        }
        match self.finish {
            Some(Finish::Length) => "length",
            _ => "stop",
        }
    }

    /// The whole choice (`choices[i]` of a `chat.completion`).
    pub fn choice_json(&self, index: usize, with_logprobs: bool) -> Value {
        let mut message = json!({"role": "assistant", "content": self.content});
        if !self.tool_calls.is_empty() {
            if self.content.trim().is_empty() {
                message["content"] = Value::Null;
            }
            message["tool_calls"] = json!(self.tool_calls);
        }
        let mut choice = json!({
            "index": index,
            "message": message,
            "logprobs": if with_logprobs { json!({"content": self.logprobs}) } else { Value::Null },
            "finish_reason": self.finish_reason(),
        });
        if let Some(stop) = self.stop_reason() {
            choice["stop_reason"] = json!(stop);
        }
        choice
    }
}
