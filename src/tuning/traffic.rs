//! Recorded or benchmark traffic for `replay` and `calibrate`: one JSON object per line, either an
//! OpenAI chat request or `{"prompt": ...}`, optionally with outcome labels
//! (`weak_correct`/`strong_correct` or `weak_score`/`strong_score`), `tags`, `tenant`, the
//! answer's `completion_tokens`, and a request log's `ts` and `session` (the conversation).

use crate::api::ChatRequest;
use crate::classifier::eval::Outcome;
use crate::features::{self, Features};
use serde_json::{json, Map, Value};
use std::path::Path;

/// One request of the traffic.
#[derive(Debug, Clone)]
pub struct Row {
    /// The row's `id`, when it has one.
    pub id: Option<Value>,
    pub request: ChatRequest,
    pub features: Features,
    /// How the small and the large model did on it, when labelled.
    pub outcome: Option<Outcome>,
    /// Tokens of the recorded answer, when known.
    pub completion_tokens: Option<u64>,
    /// The prompt's tokens as the answering model counted them (`usage.prompt_tokens` of a
    /// request-log row), when known; routing still uses the gateway's estimate.
    pub billed_prompt_tokens: Option<u64>,
    /// Of the prompt, the tokens a provider's prompt cache served (priced at the cached input
    /// price), when the row says.
    pub cached_prompt_tokens: Option<u64>,
    /// Of the prompt, the tokens written to a provider's prompt cache (priced at the cache
    /// write price), when the row says.
    pub cache_write_prompt_tokens: Option<u64>,
    /// Web searches the provider ran for the logged answer (`usage.server_tool_use`).
    pub web_searches: Option<u64>,
    /// The conversation the row continues.
    pub conversation: Conversation,
    /// When the request arrived (a request log's `ts`, Unix seconds), when the row says.
    pub ts: Option<f64>,
}

/// Which conversation a row continues (for sticky routes in a replay).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conversation {
    /// A request log's `session`: the key the gateway named it by (from the
    /// header that named the conversation or the opening messages).
    Logged(String),
    /// A request log's row that names none (`prompts: drop`, or a log written before
    /// conversations were recorded): a turn of no conversation.
    Unnamed,
    /// Another traffic file's row: named by its tenant and opening messages, as `serve` names a
    /// conversation without the header ([`crate::server::sticky::session_key`], with the
    /// replayed policy's harness rules).
    Opening,
}

/// Why traffic could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TrafficError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Row {
        path: String,
        line: usize,
        message: String,
    },
}

fn number(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

/// The outcome labels of a row, when it has both halves of a pair.
fn outcome(row: &Map<String, Value>) -> Option<Outcome> {
    for (w, s) in [
        ("weak_correct", "strong_correct"),
        ("weak_score", "strong_score"),
    ] {
        if let (Some(weak), Some(strong)) = (number(row.get(w)), number(row.get(s))) {
            return Some(Outcome { weak, strong });
        }
    }
    None
}

/// Parses one line of traffic.
pub fn parse_row(line: &str) -> Result<Row, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(obj) = v else {
        return Err("a row must be a JSON object".into());
    };
    let mut body = if let Some(p) = obj.get("prompt") {
        let p = p.as_str().ok_or("`prompt` must be a string")?;
        json!({"model": "auto", "messages": [{"role": "user", "content": p}]})
    } else if obj.contains_key("messages") {
        let mut b = obj.clone();
        for k in [
            "id",
            "tags",
            "tenant",
            "completion_tokens",
            "cached_prompt_tokens",
            "cache_write_prompt_tokens",
            // What the request log adds to the request.
            "ts",
            "session",
            "request_id",
            "prompt_tokens",
            "needs",
            "decision",
            "pii",
            "usage",
            "cost_usd",
            "result",
            "weak_correct",
            "strong_correct",
            "weak_score",
            "strong_score",
        ] {
            b.remove(k);
        }
        Value::Object(b)
    } else {
        return Err("a row needs `messages` (an OpenAI chat request) or a `prompt` string".into());
    };
    if body.get("model").is_none() {
        body["model"] = json!("auto");
    }
    let bytes = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
    let request = ChatRequest::parse(&bytes).map_err(|e| e.to_string())?;
    let tags: Vec<String> = match obj.get("tags") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect(),
        Some(Value::String(s)) => features::parse_tags(Some(s)),
        _ => vec![],
    };
    let tenant = obj.get("tenant").and_then(Value::as_str);
    let mut features = features::extract(&request, tenant, None);
    features.tags = tags;
    // A recorded row names what the request needed of its model, which its body may no longer
    // say (what only its dialect's API serves; images whose text was dropped).
    if let Some(Value::Array(names)) = obj.get("needs") {
        for c in names
            .iter()
            .filter_map(|n| n.as_str().and_then(crate::api::Capability::parse))
        {
            features.needs = features.needs.with(c);
        }
    }
    // A recorded row keeps the gateway's own estimate (its text may be hashed or dropped).
    if let Some(n) = obj.get("prompt_tokens").and_then(Value::as_u64) {
        features.prompt_tokens = n;
    }
    // The request log replaces private data by placeholders and names the kinds it found.
    features.pii = match obj.get("pii") {
        Some(Value::Array(kinds)) => kinds
            .iter()
            .filter_map(|k| k.as_str().and_then(crate::pii::Kind::parse))
            .collect(),
        _ => crate::pii::request::scan_request(&request).kinds(),
    };
    let completion_tokens = obj
        .get("completion_tokens")
        .or_else(|| obj.get("usage").and_then(|u| u.get("completion_tokens")))
        .and_then(Value::as_u64);
    let billed_prompt_tokens = obj
        .get("usage")
        .and_then(|u| u.get("prompt_tokens"))
        .and_then(Value::as_u64);
    let cached_prompt_tokens = obj
        .get("cached_prompt_tokens")
        .or_else(|| {
            obj.get("usage")
                .and_then(|u| u.get("prompt_tokens_details"))
                .and_then(|d| d.get("cached_tokens"))
        })
        .and_then(Value::as_u64);
    let cache_write_prompt_tokens = obj
        .get("cache_write_prompt_tokens")
        .or_else(|| {
            obj.get("usage")
                .and_then(|u| u.get("cache_creation_input_tokens"))
        })
        .and_then(Value::as_u64);
    let web_searches = obj
        .get("usage")
        .and_then(|u| u.pointer("/server_tool_use/web_search_requests"))
        .and_then(Value::as_u64);
    // A request log names the conversation, or leaves it unnamed: its texts may be hashed or
    // dropped, so they do not name it.
    let conversation = match obj.get("session") {
        Some(Value::String(s)) => Conversation::Logged(s.clone()),
        _ if obj.contains_key("decision") => Conversation::Unnamed,
        _ => Conversation::Opening,
    };
    Ok(Row {
        id: obj.get("id").cloned(),
        outcome: outcome(&obj),
        request,
        features,
        completion_tokens,
        billed_prompt_tokens,
        cached_prompt_tokens,
        cache_write_prompt_tokens,
        web_searches,
        conversation,
        ts: obj.get("ts").and_then(Value::as_f64),
    })
}

/// Reads a JSONL traffic file; a bad row is an error naming its line.
pub fn read(path: &Path) -> Result<Vec<Row>, TrafficError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| TrafficError::Io {
        path: p.clone(),
        source,
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            parse_row(l).map_err(|message| TrafficError::Row {
                path: p.clone(),
                line: i + 1,
                message,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rows_conversation_is_the_logs_session_or_its_opening_messages() {
        let conversation = |line: &str| parse_row(line).expect("row").conversation;
        // A request log's row: the conversation it names, or none (the log kept no name).
        let logged = r#"{"model": "auto", "messages": [{"role": "user", "content": ""}], "decision": {"route": "local", "model": "m", "rule": "default"}"#;
        assert_eq!(
            conversation(&format!(r#"{logged}, "session": "ab12", "ts": 5.5}}"#)),
            Conversation::Logged("ab12".to_string())
        );
        assert_eq!(conversation(&format!("{logged}}}")), Conversation::Unnamed);
        // Other traffic: named by its opening messages when replayed.
        assert_eq!(
            conversation(r#"{"prompt": "plan a trip"}"#),
            Conversation::Opening
        );
        assert_eq!(
            parse_row(&format!(r#"{logged}, "ts": 5.5}}"#))
                .expect("row")
                .ts,
            Some(5.5)
        );
    }

    #[test]
    fn reads_prompts_requests_and_labels() {
        let r = parse_row(
            r#"{"id": 3, "prompt": "hi", "weak_correct": true, "strong_correct": false}"#,
        )
        .expect("row");
        assert_eq!(r.id, Some(json!(3)));
        assert_eq!(r.features.requested_model, "auto");
        assert_eq!(
            r.outcome,
            Some(Outcome {
                weak: 1.0,
                strong: 0.0
            })
        );
        let r = parse_row(
            r#"{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {"name": "f"}}], "tags": ["premium"], "weak_score": 3, "strong_score": 9, "completion_tokens": 12}"#,
        )
        .expect("row");
        assert_eq!(r.features.requested_model, "gpt-4o");
        assert!(r.features.has_tools);
        assert_eq!(r.features.tags, vec!["premium"]);
        assert_eq!(
            r.outcome,
            Some(Outcome {
                weak: 3.0,
                strong: 9.0
            })
        );
        assert_eq!(r.completion_tokens, Some(12));
        assert!(parse_row(r#"{"text": "x"}"#).is_err());
        assert!(parse_row("[1]").is_err());
    }
}
