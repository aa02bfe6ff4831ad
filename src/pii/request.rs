//! Private data in a request body: every text a model reads, in any dialect.
//!
//! The texts are the strings under the body's conversation members — `messages` (OpenAI chat,
//! Anthropic Messages), `system` (Anthropic), `input` and `instructions` (OpenAI Responses),
//! `prompt` (legacy completions) — at any depth: message content, text parts, tool results,
//! tool-call arguments; and under the members that carry the predicted output or name the
//! end user ([`TEXT_MEMBERS`]). Strings that are not text a person wrote are skipped: roles,
//! types, ids, names, URLs and inline data (images, files) ([`SKIPPED_KEYS`]), except inside a
//! tool call's arguments given as an object (Anthropic `tool_use.input`), whose keys are the
//! tool's own and are all read. Redaction leaves Anthropic `thinking` blocks and OpenAI Responses
//! `reasoning` items as they are: the provider signs or encrypts them and refuses a changed one,
//! and their text is the cloud model's own, written from what it was sent (placeholders, where
//! the conversation was redacted).

use super::{find, Kind, Kinds, Placeholders};
use serde_json::{Map, Value};

/// The top-level members scanned: those that hold the conversation, the predicted output
/// (OpenAI `prediction`), and those that name the person using the app (OpenAI `user`,
/// `safety_identifier`, `prompt_cache_key` and `metadata`, Anthropic `metadata.user_id`),
/// which a client often fills with an email. Tool definitions and response schemas are the
/// app's own and are not scanned.
pub const TEXT_MEMBERS: [&str; 10] = [
    "messages",
    "system",
    "input",
    "instructions",
    "prompt",
    "prediction",
    "user",
    "safety_identifier",
    "prompt_cache_key",
    "metadata",
];

/// Keys whose string values are never scanned or replaced (outside tool-call arguments).
pub const SKIPPED_KEYS: [&str; 19] = [
    "role",
    "type",
    "id",
    "name",
    "tool_call_id",
    "tool_use_id",
    "call_id",
    "url",
    "image_url",
    "data",
    "media_type",
    "mime_type",
    "detail",
    "file_id",
    "file_data",
    "signature",
    "encrypted_content",
    "cache_control",
    "status",
];

/// Content-block types whose `input` member holds a tool call's arguments as an object.
const TOOL_CALL_TYPES: [&str; 3] = ["tool_use", "server_tool_use", "mcp_tool_use"];

/// Content-block types redaction leaves unchanged: the model's own reasoning, which the
/// provider signs (Anthropic `thinking`) or encrypts (OpenAI Responses `reasoning` items).
const SIGNED_TYPES: [&str; 2] = ["thinking", "reasoning"];

/// How the members of an object are read: whether a key is skipped, and whether a member
/// holds tool-call arguments (read whole: every key is the tool's own).
#[derive(Clone, Copy)]
enum Scope {
    /// Message structure: [`SKIPPED_KEYS`] are skipped.
    Structure,
    /// Inside a tool call's arguments: nothing is skipped.
    Arguments,
}

impl Scope {
    /// The scope of member `key` of an object read in this scope, or `None` when it is
    /// skipped; `tool_call` says whether the object is a tool-call block ([`is_block_of`]).
    fn member(self, tool_call: bool, key: &str) -> Option<Scope> {
        match self {
            Scope::Arguments => Some(Scope::Arguments),
            Scope::Structure if SKIPPED_KEYS.contains(&key) => None,
            Scope::Structure if tool_call && key == "input" => Some(Scope::Arguments),
            Scope::Structure => Some(Scope::Structure),
        }
    }
}

/// Whether `map` is a content block whose `type` is one of `types`.
fn is_block_of(map: &Map<String, Value>, types: &[&str]) -> bool {
    map.get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| types.contains(&t))
}

/// Where private data was found: its kind and the JSON path of the text
/// (`messages[2].content[0].text`). The value itself is never kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    pub kind: Kind,
    pub path: String,
}

/// What a scan of a request found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    /// Every match, in the order of the body.
    pub detections: Vec<Detection>,
}

impl Findings {
    /// The kinds found.
    pub fn kinds(&self) -> Kinds {
        self.detections.iter().map(|d| d.kind).collect()
    }

    /// Matches per kind, in [`Kind::ALL`] order (kinds not found left out).
    pub fn counts(&self) -> Vec<(Kind, u64)> {
        Kind::ALL
            .into_iter()
            .map(|k| {
                (
                    k,
                    self.detections.iter().filter(|d| d.kind == k).count() as u64,
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// Finds private data in the conversation members of a request body.
pub fn scan(body: &Map<String, Value>) -> Findings {
    let mut out = Findings::default();
    for key in TEXT_MEMBERS {
        if let Some(v) = body.get(key) {
            scan_value(v, key.to_string(), Scope::Structure, &mut out);
        }
    }
    out
}

/// Finds private data in a parsed chat request: the same members [`scan`] and [`redact`] read
/// (the gateway's internal request holds every dialect's conversation in `messages`), so a
/// kind this scan does not find is not there for [`redact`] to replace.
pub fn scan_request(req: &crate::api::ChatRequest) -> Findings {
    let mut out = Findings::default();
    for key in TEXT_MEMBERS {
        if let Some(v) = req.field(key) {
            scan_value(&v, key.to_string(), Scope::Structure, &mut out);
        }
    }
    out
}

fn scan_value(v: &Value, path: String, scope: Scope, out: &mut Findings) {
    match v {
        Value::String(s) => {
            for f in find(s) {
                out.detections.push(Detection {
                    kind: f.kind,
                    path: path.clone(),
                });
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                scan_value(item, format!("{path}[{i}]"), scope, out);
            }
        }
        Value::Object(map) => {
            let tool_call = is_block_of(map, &TOOL_CALL_TYPES);
            for (k, item) in map {
                if let Some(inner) = scope.member(tool_call, k) {
                    scan_value(item, format!("{path}.{k}"), inner, out);
                }
            }
        }
        _ => {}
    }
}

/// Replaces every match of `kinds` in the conversation members of `body` with its typed
/// placeholder; returns whether anything changed.
pub fn redact(body: &mut Map<String, Value>, kinds: Kinds, p: &mut Placeholders) -> bool {
    let mut changed = false;
    for key in TEXT_MEMBERS {
        if let Some(v) = body.get_mut(key) {
            changed |= redact_value(v, kinds, Scope::Structure, p);
        }
    }
    changed
}

fn redact_value(v: &mut Value, kinds: Kinds, scope: Scope, p: &mut Placeholders) -> bool {
    match v {
        Value::String(s) => match p.redact(s, kinds) {
            Some(r) => {
                *s = r;
                true
            }
            None => false,
        },
        Value::Array(items) => items.iter_mut().fold(false, |changed, item| {
            redact_value(item, kinds, scope, p) | changed
        }),
        Value::Object(map) => {
            if matches!(scope, Scope::Structure) && is_block_of(map, &SIGNED_TYPES) {
                return false;
            }
            let tool_call = is_block_of(map, &TOOL_CALL_TYPES);
            map.iter_mut().fold(false, |changed, (k, item)| {
                match scope.member(tool_call, k) {
                    Some(inner) => redact_value(item, kinds, inner, p) | changed,
                    None => changed,
                }
            })
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("a test body is an object"),
        }
    }

    #[test]
    fn scans_texts_and_skips_ids_and_urls() {
        let b = body(json!({
            "model": "auto",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [
                    {"type": "text", "text": "Mail me at ann@example.com"},
                    {"type": "image_url", "image_url": {"url": "https://x.test/a?u=ann@example.com"}}
                ]},
                {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "pay", "arguments": "{\"iban\": \"GB82WEST12345698765432\"}"}}]}
            ]
        }));
        let f = scan(&b);
        assert_eq!(
            f.detections,
            vec![
                Detection {
                    kind: Kind::Email,
                    path: "messages[1].content[0].text".into()
                },
                Detection {
                    kind: Kind::Iban,
                    path: "messages[2].tool_calls[0].function.arguments".into()
                },
            ]
        );
        assert_eq!(f.counts(), vec![(Kind::Email, 1), (Kind::Iban, 1)]);
    }

    #[test]
    fn tool_arguments_given_as_an_object_are_read_whole_and_thinking_is_left_signed() {
        let mut b = body(json!({
            "messages": [
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "Ann's SSN is 123-45-6789.", "signature": "c2ln"},
                    {"type": "tool_use", "id": "toolu_1", "name": "lookup",
                     "input": {"id": "123-45-6789", "name": "ann@example.com", "type": "ssn"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "found"}
                ]}
            ]
        }));
        let paths: Vec<String> = scan(&b).detections.into_iter().map(|d| d.path).collect();
        assert_eq!(
            paths,
            [
                "messages[0].content[0].thinking",
                "messages[0].content[1].input.id",
                "messages[0].content[1].input.name",
            ]
        );
        let mut p = Placeholders::default();
        assert!(redact(&mut b, Kinds::ALL, &mut p));
        let call = &b["messages"][0]["content"][1];
        assert_eq!(call["input"]["id"], "[NATIONAL_ID_1]");
        assert_eq!(call["input"]["name"], "[EMAIL_1]");
        assert_eq!(
            (&call["id"], &call["name"]),
            (&json!("toolu_1"), &json!("lookup"))
        );
        assert_eq!(
            b["messages"][0]["content"][0]["thinking"],
            "Ann's SSN is 123-45-6789."
        );
    }

    #[test]
    fn redacts_only_the_kinds_asked_for() {
        let mut b = body(json!({
            "system": "Customer: bob@example.com, card 4111 1111 1111 1111",
            "messages": [{"role": "user", "content": "Is bob@example.com on file?"}]
        }));
        let mut p = Placeholders::default();
        assert!(redact(&mut b, Kinds::NONE.with(Kind::Email), &mut p));
        assert_eq!(b["system"], "Customer: [EMAIL_1], card 4111 1111 1111 1111");
        assert_eq!(b["messages"][0]["content"], "Is [EMAIL_1] on file?");
        assert_eq!(p.replaced, vec![(Kind::Email, 2)]);
        assert!(!redact(&mut b, Kinds::NONE.with(Kind::Phone), &mut p));
    }
}
