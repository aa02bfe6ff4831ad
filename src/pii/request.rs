//! Private data in a request body: every text a model reads, in any dialect.
//!
//! The texts are the strings under the body's conversation members — `messages` (OpenAI chat,
//! Anthropic Messages), `system` (Anthropic), `input` and `instructions` (OpenAI Responses),
//! `prompt` (legacy completions) — at any depth: message content, text parts, tool results,
//! tool-call arguments. Strings that are not text a person wrote are skipped: roles, types,
//! ids, names, URLs and inline data (images, files) ([`SKIPPED_KEYS`]).

use super::{find, Kind, Kinds, Placeholders};
use serde_json::{Map, Value};

/// The top-level members that hold the conversation.
pub const TEXT_MEMBERS: [&str; 5] = ["messages", "system", "input", "instructions", "prompt"];

/// Keys whose string values are never scanned or replaced.
pub const SKIPPED_KEYS: [&str; 18] = [
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
    "cache_control",
    "status",
];

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
            scan_value(v, key.to_string(), &mut out);
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
            scan_value(&v, key.to_string(), &mut out);
        }
    }
    out
}

fn scan_value(v: &Value, path: String, out: &mut Findings) {
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
                scan_value(item, format!("{path}[{i}]"), out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                if !SKIPPED_KEYS.contains(&k.as_str()) {
                    scan_value(item, format!("{path}.{k}"), out);
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
            changed |= redact_value(v, kinds, p);
        }
    }
    changed
}

fn redact_value(v: &mut Value, kinds: Kinds, p: &mut Placeholders) -> bool {
    match v {
        Value::String(s) => match p.redact(s, kinds) {
            Some(r) => {
                *s = r;
                true
            }
            None => false,
        },
        Value::Array(items) => items.iter_mut().fold(false, |changed, item| {
            redact_value(item, kinds, p) | changed
        }),
        Value::Object(map) => map
            .iter_mut()
            .filter(|(k, _)| !SKIPPED_KEYS.contains(&k.as_str()))
            .fold(false, |changed, (_, item)| {
                redact_value(item, kinds, p) | changed
            }),
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
