//! The request log: one JSON line per routed request (the request as sent, with the tags, tenant
//! and decision, and how it ended: status, answering model, token usage and cost), written by a
//! background thread with size-based rotation. A row is started when the request is decided and
//! written when its [`crate::accounting::Settlement`] finishes, however the request ends.
//! `switchyard replay` and `calibrate` read these files as they are. Opt-in in the policy
//! (`recording`).

use crate::policy::{PromptRecording, RecordingSettings};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

/// A handle to the log writer; cheap to clone. Rows are dropped (and counted in the log) when
/// the writer falls behind by more than 10,000 rows, so a slow disk never stalls requests.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::SyncSender<Value>,
    prompts: PromptRecording,
}

/// What the gateway knows of a request when it records it.
pub struct Entry<'a> {
    pub body: &'a Map<String, Value>,
    pub tags: &'a [String],
    pub tenant: Option<&'a str>,
    pub route: &'a str,
    pub model: &'a str,
    pub rule: &'a str,
    pub prompt_tokens: u64,
    /// What the request needs of the model that answers it ([`crate::api::ChatRequest::needs`]),
    /// for `replay`: some of it the body no longer says (a Responses request's reasoning items,
    /// a legacy completion's raw prompt, images whose text was dropped).
    pub needs: crate::api::Capabilities,
    /// The request's `x-request-id`.
    pub request_id: Option<&'a str>,
    /// The kinds of private data the gateway's scan of this body found
    /// ([`crate::pii::request::scan_request`]), when it scanned it; `None`: not scanned, so the
    /// row is scanned for every kind.
    pub pii: Option<crate::pii::Kinds>,
    /// The conversation's key ([`crate::server::sticky::session_key`]: hex SHA-256 of the
    /// tenant and the header that named the conversation or the opening messages), for an `auto`
    /// request; `replay` follows pins by it.
    pub session: Option<Conversation<'a>>,
    /// The rules that tell an agent's opening messages from the person's (the policy's), for a
    /// key made again from the redacted opening.
    pub harness: &'a crate::classifier::input::HarnessFilter,
}

/// Which conversation a request continues, and how it was named.
#[derive(Debug, Clone, Copy)]
pub struct Conversation<'a> {
    /// The key (hex SHA-256).
    pub key: &'a str,
    /// Named by a header of the client's ([`crate::server::sticky::client_name`]), not by the
    /// opening messages' text.
    /// A key made of the text is made again from the text as the log keeps it (private data
    /// replaced), so that it is no hash of a detected value; `prompts: drop` keeps no trace of
    /// the text, so then such a key is not written.
    pub by_header: bool,
}

/// The conversation key a row records: the gateway's when the session header named the
/// conversation or nothing in the body was redacted, else the key of the opening as `row`
/// holds it (placeholders for private data, before the prompt setting applies); none under
/// `prompts: drop` unless the header named it.
fn conversation(
    e: &Entry,
    row: &Map<String, Value>,
    redacted: bool,
    prompts: PromptRecording,
) -> Option<String> {
    let c = e.session?;
    if c.by_header || !redacted {
        return (c.by_header || prompts != PromptRecording::Drop).then(|| c.key.to_string());
    }
    if prompts == PromptRecording::Drop {
        return None;
    }
    crate::server::sticky::conversation_key(None, e.tenant, row.get("messages"), e.harness)
}

fn hashed(text: &str) -> Value {
    json!(format!(
        "sha256:{}",
        hex::encode(Sha256::digest(text.as_bytes()))
    ))
}

/// Applies the prompt setting to every message's text.
fn redact(messages: &mut Value, mode: PromptRecording) {
    let Value::Array(list) = messages else { return };
    for m in list {
        let Some(content) = m.get_mut("content") else {
            continue;
        };
        match content {
            Value::String(s) => {
                *content = match mode {
                    PromptRecording::Keep => return,
                    PromptRecording::Hash => hashed(s),
                    PromptRecording::Drop => json!(""),
                }
            }
            Value::Array(parts) => {
                for p in parts {
                    if let Some(Value::String(t)) = p.get("text") {
                        let new = match mode {
                            PromptRecording::Keep => return,
                            PromptRecording::Hash => hashed(t),
                            PromptRecording::Drop => json!(""),
                        };
                        p["text"] = new;
                    }
                }
            }
            _ => {}
        }
    }
}

impl Recorder {
    /// Starts the writer thread for the policy's recording settings.
    pub fn start(settings: &RecordingSettings) -> std::io::Result<Recorder> {
        if let Some(parent) = settings.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let mut writer = Writer::open(
            settings.path.clone(),
            settings.max_bytes,
            settings.keep_files,
        )?;
        let (tx, rx) = mpsc::sync_channel::<Value>(10_000);
        std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || {
                while let Ok(row) = rx.recv() {
                    if let Err(e) = writer.write(&row) {
                        tracing::warn!("request log: {e}");
                    }
                }
            })?;
        Ok(Recorder {
            tx,
            prompts: settings.prompts,
        })
    }

    /// The row of one request, written by [`Row::finish`]. Private data found in the texts
    /// ([`crate::pii`]) is replaced by typed placeholders before the prompt setting applies,
    /// and the kinds found are listed in `pii` (for `replay`): the log never holds a detected
    /// value.
    pub fn row(&self, e: &Entry) -> Row {
        let mut row = e.body.clone();
        let mut p = crate::pii::Placeholders::default();
        // A body the gateway scanned is redacted for the kinds found, and not read again when
        // there were none.
        let kinds = e.pii.unwrap_or(crate::pii::Kinds::ALL);
        if !kinds.is_empty() {
            crate::pii::request::redact(&mut row, kinds, &mut p);
        }
        let session = conversation(e, &row, !p.replaced.is_empty(), self.prompts);
        if let Some(m) = row.get_mut("messages") {
            redact(m, self.prompts);
        }
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        row.insert("ts".into(), json!((ts * 1000.0).round() / 1000.0));
        row.insert("tags".into(), json!(e.tags));
        if let Some(t) = e.tenant {
            row.insert("tenant".into(), json!(t));
        }
        if let Some(id) = e.request_id {
            row.insert("request_id".into(), json!(id));
        }
        if let Some(key) = session {
            row.insert("session".into(), json!(key));
        }
        row.insert("prompt_tokens".into(), json!(e.prompt_tokens));
        if !e.needs.is_empty() {
            let names: Vec<&str> = e.needs.iter().map(|c| c.name()).collect();
            row.insert("needs".into(), json!(names));
        }
        if !p.replaced.is_empty() {
            let kinds: Vec<&str> = p.replaced.iter().map(|(k, _)| k.name()).collect();
            row.insert("pii".into(), json!(kinds));
        }
        row.insert(
            "decision".into(),
            json!({"route": e.route, "model": e.model, "rule": e.rule}),
        );
        Row {
            tx: self.tx.clone(),
            row,
        }
    }
}

/// How a recorded request ended.
pub struct Outcome<'a> {
    /// The `status` label of `switchyard_requests_total` (`200`, `stream_error`, `429`, ...).
    pub status: &'a str,
    /// The route and model that answered (or were tried last).
    pub route: &'a str,
    pub model: &'a str,
    /// The tokens billed, when a model was called: reported by it or estimated.
    pub usage: Option<crate::api::Usage>,
    /// Whether some of those counts are estimates.
    pub usage_estimated: bool,
    /// USD spent, at the model's price.
    pub cost_usd: f64,
}

/// The row of one request, started when it is decided.
pub struct Row {
    tx: mpsc::SyncSender<Value>,
    row: Map<String, Value>,
}

impl Row {
    /// Adds how the request ended and queues the row: `usage` in the OpenAI shape (with
    /// `prompt_tokens_details.cached_tokens`, and `server_tool_use.web_search_requests` when
    /// the provider searched), `cost_usd`, and `result` (status, route, model,
    /// `usage_estimated`).
    pub fn finish(mut self, o: &Outcome) {
        if let Some(u) = o.usage {
            let mut usage = json!({
                "prompt_tokens": u.prompt_tokens,
                "completion_tokens": u.completion_tokens,
                "total_tokens": u.total(),
                "prompt_tokens_details": {"cached_tokens": u.cached_prompt_tokens},
                "cache_creation_input_tokens": u.cache_write_prompt_tokens,
            });
            if u.web_searches > 0 {
                usage["server_tool_use"] = json!({"web_search_requests": u.web_searches});
            }
            self.row.insert("usage".into(), usage);
        }
        self.row.insert("cost_usd".into(), json!(o.cost_usd));
        self.row.insert(
            "result".into(),
            json!({"status": o.status, "route": o.route, "model": o.model,
                   "usage_estimated": o.usage_estimated}),
        );
        if self.tx.try_send(Value::Object(self.row)).is_err() {
            tracing::warn!("request log: writer behind, a row was dropped");
        }
    }
}

/// The file writer with rotation: `path` is renamed to `path.1` (and `.1` to `.2`...) when it
/// would grow past `max_bytes`; at most `keep` old files stay.
struct Writer {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    keep: usize,
}

fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl Writer {
    fn open(path: PathBuf, max_bytes: u64, keep: usize) -> std::io::Result<Writer> {
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(Writer {
            path,
            file,
            size,
            max_bytes,
            keep,
        })
    }

    fn write(&mut self, row: &Value) -> std::io::Result<()> {
        let mut line = row.to_string();
        line.push('\n');
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(line.as_bytes())?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        if self.keep == 0 {
            std::fs::remove_file(&self.path).ok();
        } else {
            std::fs::remove_file(rotated(&self.path, self.keep)).ok();
            for n in (1..self.keep).rev() {
                std::fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1)).ok();
            }
            std::fs::rename(&self.path, rotated(&self.path, 1))?;
        }
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_or_drops_prompt_text() {
        let mut m = json!([{"role": "user", "content": "secret"}, {"role": "user", "content": [{"type": "text", "text": "also"}]}]);
        redact(&mut m, PromptRecording::Hash);
        assert!(m[0]["content"]
            .as_str()
            .is_some_and(|s| s.starts_with("sha256:") && !s.contains("secret")));
        assert!(m[1]["content"][0]["text"]
            .as_str()
            .is_some_and(|s| s.starts_with("sha256:")));
        let mut d = json!([{"role": "user", "content": "secret"}]);
        redact(&mut d, PromptRecording::Drop);
        assert_eq!(d[0]["content"], "");
    }

    fn object(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    /// The `session` a recorder keeping `prompts` writes for a request of tenant `t` with
    /// `messages`, whose conversation the gateway named `session`.
    fn logged_session(
        prompts: PromptRecording,
        messages: &Value,
        session: Conversation,
    ) -> Option<Value> {
        let body = object(json!({"model": "auto", "messages": messages}));
        let (tx, _rx) = mpsc::sync_channel(1);
        let row = Recorder { tx, prompts }.row(&Entry {
            body: &body,
            tags: &[],
            tenant: Some("t"),
            route: "local",
            model: "m",
            rule: "default",
            prompt_tokens: 1,
            needs: crate::api::Capabilities::NONE,
            request_id: None,
            pii: None,
            session: Some(session),
            harness: &crate::classifier::input::HarnessFilter::default(),
        });
        row.row.get("session").cloned()
    }

    #[test]
    fn a_conversation_named_by_text_is_not_written_when_prompts_are_dropped() {
        let hi = json!([{"role": "user", "content": "hi"}]);
        let session = |prompts, by_header| {
            let named = Conversation {
                key: "ab12",
                by_header,
            };
            logged_session(prompts, &hi, named)
        };
        for prompts in [PromptRecording::Keep, PromptRecording::Hash] {
            assert_eq!(session(prompts, false), Some(json!("ab12")));
        }
        assert_eq!(session(PromptRecording::Drop, false), None);
        assert_eq!(session(PromptRecording::Drop, true), Some(json!("ab12")));
    }

    /// A key made of an opening that holds private data is made again from the opening with
    /// placeholders: a hash of the value, which a guess of the rest of the text could test,
    /// never reaches the log.
    #[test]
    fn a_conversation_key_is_made_of_the_redacted_opening() {
        let harness = crate::classifier::input::HarnessFilter::default();
        let opening = |text: &str| json!([{"role": "user", "content": text}]);
        let key = |messages: &Value| {
            crate::server::sticky::conversation_key(None, Some("t"), Some(messages), &harness)
        };
        let raw = opening("Mail bob@example.com the report");
        let live = key(&raw).expect("a key");
        let named = Conversation {
            key: &live,
            by_header: false,
        };
        let logged = logged_session(PromptRecording::Hash, &raw, named);
        let redacted = key(&opening("Mail [EMAIL_1] the report"));
        assert_eq!(logged, redacted.map(Value::from));
        assert_ne!(logged, Some(json!(live)));
    }

    #[test]
    fn rotates_by_size_and_keeps_a_bounded_number_of_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("log.jsonl");
        let mut w = Writer::open(path.clone(), 100, 2).expect("open");
        for i in 0..20 {
            w.write(&json!({"i": i, "pad": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}))
                .expect("write");
        }
        assert!(std::fs::metadata(&path).expect("current").len() <= 100);
        assert!(rotated(&path, 1).exists() && rotated(&path, 2).exists());
        assert!(!rotated(&path, 3).exists());
        let last = std::fs::read_to_string(&path).expect("read");
        assert!(last.lines().last().is_some_and(|l| l.contains("\"i\":19")));
    }
}
