//! Deterministic mutations of valid JSON bodies, for the tests that feed hostile input to the
//! readers and translators (tests/mutated_input.rs in process, tests/bad_input.rs over HTTP).
//! Each mutation changes one node of the tree: removes it, gives it a value of another type or
//! another `type` tag, a subtree from elsewhere in the body, a member a dialect refuses, or
//! odd characters; one body in eight also has its bytes cut or changed.

use serde_json::{json, Map, Value};

/// Mutated bodies per seed and test: 1,500, or `SWITCHYARD_MUTATION_ROUNDS` for a longer hunt.
pub fn rounds() -> usize {
    std::env::var("SWITCHYARD_MUTATION_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1500)
}

/// One step of a path into a JSON tree.
#[derive(Clone, Debug)]
enum Step {
    Key(String),
    Index(usize),
}

/// Members and `type` tags of the dialects: a mutation that adds one reaches a branch a random
/// name would not.
const NAMES: &[&str] = &[
    "type",
    "text",
    "content",
    "role",
    "name",
    "input",
    "output",
    "arguments",
    "tools",
    "tool_choice",
    "tool_calls",
    "tool_call_id",
    "function",
    "parameters",
    "system",
    "messages",
    "thinking",
    "stream",
    "max_tokens",
    "previous_response_id",
    "store",
    "background",
    "conversation",
    "prompt",
    "n",
    "echo",
    "logprobs",
    "suffix",
    "best_of",
    "dimensions",
    "encoding_format",
    "cache_control",
    "citations",
    "image_url",
    "source",
    "data",
    "url",
    "file_id",
    "detail",
    "response_format",
    "json_schema",
    "schema",
    "format",
    "usage",
    "delta",
    "index",
    "choices",
    "message",
    "finish_reason",
    "stop_reason",
    "reasoning",
    "reasoning_content",
    "summary",
    "include",
    "truncation",
    "web_search_options",
    "output_config",
    "model",
];

const TYPES: &[&str] = &[
    "text",
    "image_url",
    "input_audio",
    "file",
    "input_text",
    "input_image",
    "input_file",
    "output_text",
    "refusal",
    "message",
    "function_call",
    "function_call_output",
    "reasoning",
    "item_reference",
    "custom_tool_call",
    "web_search_call",
    "compaction",
    "image",
    "document",
    "tool_use",
    "tool_result",
    "thinking",
    "redacted_thinking",
    "server_tool_use",
    "web_search_tool_result",
    "search_result",
    "function",
    "custom",
    "web_search",
    "web_search_preview",
    "mcp",
    "json_schema",
    "json_object",
    "enabled",
    "adaptive",
    "disabled",
    "auto",
    "any",
    "none",
    "tool",
    "base64",
    "url",
    "ephemeral",
    "text_delta",
    "input_json_delta",
    "thinking_delta",
    "signature_delta",
    "citations_delta",
    "message_start",
    "message_delta",
    "message_stop",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "error",
    "",
];

/// Characters that break assumptions about text: several bytes, zero width, combining,
/// right-to-left, control, digits and the punctuation of private data.
const CHARS: &[char] = &[
    'é',
    '😀',
    '\u{0}',
    '\u{200b}',
    '\u{202e}',
    '\u{301}',
    '\u{fffd}',
    '\u{10ffff}',
    '\n',
    '\t',
    '"',
    '\\',
    '@',
    '-',
    '.',
    ' ',
    '+',
    '0',
    '4',
    '9',
    'x',
    '<',
    '>',
    '/',
    '{',
    '}',
];

pub struct Mutator {
    rng: fastrand::Rng,
}

impl Mutator {
    /// A mutator whose choices follow from `seed` (plus `SWITCHYARD_MUTATION_SEED`, 0 unless
    /// set, to draw other bodies in a longer hunt).
    pub fn new(seed: u64) -> Mutator {
        let extra: u64 = std::env::var("SWITCHYARD_MUTATION_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Mutator {
            rng: fastrand::Rng::with_seed(seed.wrapping_add(extra.wrapping_mul(1_000_003))),
        }
    }

    /// A number in `0..n` (`n` > 0).
    pub fn index(&mut self, n: usize) -> usize {
        self.rng.usize(..n)
    }

    /// `seed` with one to three mutations, as bytes; one time in eight its bytes are also cut
    /// or changed.
    pub fn mutated(&mut self, seed: &Value) -> Vec<u8> {
        let mut v = seed.clone();
        for _ in 0..self.rng.usize(1..=3) {
            self.mutate(&mut v);
        }
        let mut bytes = serde_json::to_vec(&v).expect("a value serializes");
        if self.rng.u8(..8) == 0 {
            self.mutate_bytes(&mut bytes);
        }
        bytes
    }

    /// One of `values`, mutated, and its index.
    pub fn one_of(&mut self, values: &[Value]) -> (usize, Vec<u8>) {
        let i = self.index(values.len());
        (i, self.mutated(&values[i]))
    }

    /// `text` with one to four characters inserted, removed or replaced, or repeated.
    pub fn text(&mut self, text: &str) -> String {
        let mut chars: Vec<char> = text.chars().collect();
        for _ in 0..self.rng.usize(1..=4) {
            let at = self.rng.usize(..=chars.len());
            match self.rng.u8(..5) {
                0 | 1 => chars.insert(at, CHARS[self.index(CHARS.len())]),
                2 if at < chars.len() => {
                    chars.remove(at);
                }
                3 if at < chars.len() => chars[at] = CHARS[self.index(CHARS.len())],
                _ => {
                    let tail: Vec<char> = chars[at..].to_vec();
                    chars.extend(tail);
                }
            }
        }
        chars.into_iter().collect()
    }

    fn mutate(&mut self, v: &mut Value) {
        let mut paths = vec![];
        walk(v, &mut vec![], &mut paths);
        let path = paths[self.index(paths.len())].clone();
        let donor = {
            let p = &paths[self.index(paths.len())];
            at(v, p).cloned().unwrap_or(Value::Null)
        };
        let op = self.rng.u8(..8);
        if op == 0 && !path.is_empty() {
            let (last, parent) = path.split_last().expect("not the root");
            match (at_mut(v, parent), last) {
                (Some(Value::Object(o)), Step::Key(k)) => {
                    o.remove(k);
                }
                (Some(Value::Array(a)), Step::Index(i)) if *i < a.len() => {
                    a.remove(*i);
                }
                _ => {}
            }
            return;
        }
        let odd = self.odd_value();
        let type_name = TYPES[self.index(TYPES.len())];
        let member = NAMES[self.index(NAMES.len())];
        let Some(node) = at_mut(v, &path) else {
            return;
        };
        match op {
            1 | 2 => *node = odd,
            3 => *node = donor,
            4 => match node {
                Value::Object(o) => {
                    o.insert("type".into(), json!(type_name));
                }
                _ => *node = json!({"type": type_name}),
            },
            5 => match node {
                Value::Object(o) => {
                    o.insert(member.into(), odd);
                }
                Value::Array(a) if !a.is_empty() => {
                    let copy = a[0].clone();
                    a.push(copy);
                }
                _ => *node = odd,
            },
            6 => {
                if let Value::String(s) = node {
                    *s = self.text(s);
                } else {
                    *node = odd;
                }
            }
            _ => match node {
                Value::Array(a) => {
                    if self.rng.bool() {
                        a.clear();
                    } else {
                        let all = a.clone();
                        for _ in 0..20 {
                            a.extend(all.iter().cloned());
                        }
                    }
                }
                Value::Object(o) => {
                    if self.rng.bool() {
                        o.clear();
                    } else {
                        o.insert(member.into(), json!(type_name));
                    }
                }
                _ => *node = json!([odd]),
            },
        }
    }

    /// A value of any JSON type, or an edge of one.
    fn odd_value(&mut self) -> Value {
        match self.rng.u8(..22) {
            0 => Value::Null,
            1 => json!(true),
            2 => json!(false),
            3 => json!(0),
            4 => json!(-1),
            5 => json!(1.5),
            6 => json!(1e300),
            7 => json!(-1e300),
            8 => json!(u64::MAX),
            9 => json!(i64::MIN),
            10 => json!(""),
            11 => json!("x"),
            12 => json!("a".repeat(20_000)),
            13 => json!("é😀\u{0}\u{202e}\u{fffd}\u{301}"),
            14 => json!([]),
            15 => json!({}),
            16 => json!([null]),
            17 => json!({"type": null}),
            18 => json!({"type": "text", "text": 5}),
            19 => {
                let mut deep = json!([]);
                for _ in 0..200 {
                    deep = json!([deep]);
                }
                deep
            }
            20 => {
                let mut deep = json!({});
                for _ in 0..40 {
                    let mut o = Map::new();
                    o.insert("content".into(), deep);
                    deep = Value::Object(o);
                }
                deep
            }
            _ => json!(["x", 1, null, {}]),
        }
    }

    fn mutate_bytes(&mut self, b: &mut Vec<u8>) {
        if b.is_empty() {
            return;
        }
        let at = self.rng.usize(..b.len());
        match self.rng.u8(..4) {
            0 => b.truncate(at),
            1 => b[at] ^= 1 << self.rng.u8(..8),
            2 => {
                const BYTES: &[u8] = b"\"\\{}[],:\x00\xff\xc3\xe2\x80 0e-";
                b.insert(at, BYTES[self.index(BYTES.len())]);
            }
            _ => {
                let end = (at + self.rng.usize(1..64)).min(b.len());
                let slice = b[at..end].to_vec();
                b.splice(at..at, slice);
            }
        }
    }
}

/// Every path in `v` (the root's is empty).
fn walk(v: &Value, path: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(path.clone());
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                path.push(Step::Key(k.clone()));
                walk(x, path, out);
                path.pop();
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                path.push(Step::Index(i));
                walk(x, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

fn at<'a>(v: &'a Value, path: &[Step]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, s| match s {
        Step::Key(k) => v.get(k),
        Step::Index(i) => v.get(i),
    })
}

fn at_mut<'a>(v: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, s| match s {
        Step::Key(k) => v.get_mut(k),
        Step::Index(i) => v.get_mut(i),
    })
}

/// A chat completion as a provider answers it.
pub fn completion_seed() -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": null,
            "message": {"role": "assistant", "content": "Hi", "reasoning_content": "r", "refusal": null,
                "annotations": [{"type": "url_citation", "url_citation": {"url": "https://example.com", "title": "t", "start_index": 0, "end_index": 2}}],
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7,
                  "prompt_tokens_details": {"cached_tokens": 1}, "completion_tokens_details": {"reasoning_tokens": 1}}
    })
}

/// A chat stream's chunks as a provider sends them.
pub fn chunk_seeds() -> Vec<Value> {
    vec![
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
               "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]}),
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
               "choices": [{"index": 0, "delta": {"reasoning_content": "hm", "content": "Hel"}, "finish_reason": null}]}),
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
               "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                   "function": {"name": "f", "arguments": "{\"a\""}}]}, "finish_reason": null}]}),
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
               "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]},
                            "finish_reason": "tool_calls"}]}),
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
               "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}),
    ]
}

/// A Messages answer as Anthropic sends it.
pub fn anthropic_answer_seed() -> Value {
    json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "redacted_thinking", "data": "x"},
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "q"}},
            {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": [{"type": "web_search_result", "url": "https://example.com", "title": "t"}]},
            {"type": "text", "text": "Hi", "citations": [{"type": "web_search_result_location", "url": "https://example.com", "title": "t", "cited_text": "c"}]},
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 5, "output_tokens": 2, "cache_read_input_tokens": 1, "cache_creation_input_tokens": 1}
    })
}

/// A Messages stream's events as Anthropic sends them.
pub fn anthropic_event_seeds() -> Vec<Value> {
    vec![
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
               "content": [], "stop_reason": null, "usage": {"input_tokens": 5, "output_tokens": 1, "cache_read_input_tokens": 0}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "s"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hi"}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "citations_delta",
               "citation": {"type": "web_search_result_location", "url": "https://example.com", "title": "t"}}}),
        json!({"type": "content_block_stop", "index": 1}),
        json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}}),
        json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"a\":"}}),
        json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "1}"}}),
        json!({"type": "content_block_stop", "index": 2}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 9}}),
        json!({"type": "message_stop"}),
    ]
}
