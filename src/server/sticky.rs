//! Sticky conversations: which conversation a request continues, and its pin in the state store.
//!
//! A conversation is named by the client: the gateway's `x-switchyard-session` header, else
//! the session id a coding agent sends on every request of one conversation
//! ([`client_name`]); or else by its opening: its messages up to the first user message that
//! holds words of the person's (what is left of it once the classifier's harness rules have
//! stripped it), the system, developer and user messages among them; they are the same on
//! every turn of one conversation. Coding agents open every conversation with user messages of
//! their own (Codex CLI: the folder's `AGENTS.md` and `<environment_context>`), which would
//! make every conversation in a folder one conversation without the person's first request.
//! The key is a SHA-256 of the caller's tenant and that name, so neither the header nor any
//! text is stored. The pin holds the model that answered the last sticky turn and the rule
//! that routed it.

use crate::accounting::state::{StateStore, StoreError};
use crate::api::{content_text, ChatRequest, Role};
use crate::classifier::input::HarnessFilter;
use crate::features::Pin;
use http::HeaderMap;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// The request header that names a conversation.
pub const SESSION_HEADER: &str = "x-switchyard-session";

/// Claude Code's session id, sent on every request of one session.
pub const CLAUDE_CODE_SESSION: &str = "x-claude-code-session-id";

/// Claude Code's subagent id, sent beside its session id by a subagent, whose conversation is
/// its own.
pub const CLAUDE_CODE_AGENT: &str = "x-claude-code-agent-id";

/// Codex CLI's conversation id, sent on every Responses request of one conversation (and kept
/// across its compactions, which replace the opening).
pub const CODEX_SESSION: &str = "session_id";

/// The conversation's name as the client gives it, from the first of these headers that is
/// set (not blank): `x-switchyard-session` (the name as it is); Claude Code's
/// `x-claude-code-session-id`, with `x-claude-code-agent-id` when a subagent sends it; and on
/// the Responses API (`responses`: the request came to `POST /v1/responses`), Codex CLI's
/// `session_id`. The agents' names carry their header's name, so no value of one header names
/// another's conversation. A value that is not visible ASCII is not read.
pub fn client_name(headers: &HeaderMap, responses: bool) -> Option<String> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    if let Some(name) = get(SESSION_HEADER) {
        return Some(name.to_string());
    }
    if let Some(session) = get(CLAUDE_CODE_SESSION) {
        return Some(match get(CLAUDE_CODE_AGENT) {
            Some(agent) => {
                format!("{CLAUDE_CODE_SESSION}\n{session}\n{CLAUDE_CODE_AGENT}\n{agent}")
            }
            None => format!("{CLAUDE_CODE_SESSION}\n{session}"),
        });
    }
    get(CODEX_SESSION)
        .filter(|_| responses)
        .map(|session| format!("{CODEX_SESSION}\n{session}"))
}

/// The conversation's key (hex SHA-256), or `None` when the request names none and has no user
/// message to name it by. `header`: the name the client gave it ([`client_name`]). `harness`: the rules that tell an agent's own user messages from the
/// person's (the policy's classifier settings); when no user message has words of the
/// person's yet, the opening ends at the first user message.
pub fn session_key(
    header: Option<&str>,
    tenant: Option<&str>,
    req: &ChatRequest,
    harness: &HarnessFilter,
) -> Option<String> {
    conversation_key(header, tenant, req.field("messages").as_ref(), harness)
}

/// [`session_key`] of a request whose `messages` member (the internal request's, an array of
/// chat messages) is `messages`.
pub fn conversation_key(
    header: Option<&str>,
    tenant: Option<&str>,
    messages: Option<&Value>,
    harness: &HarnessFilter,
) -> Option<String> {
    let mut h = Sha256::new();
    h.update(tenant.unwrap_or("").as_bytes());
    h.update([0]);
    match header.map(str::trim).filter(|s| !s.is_empty()) {
        Some(name) => {
            h.update(b"header\0");
            h.update(name.as_bytes());
        }
        None => {
            h.update(b"messages\0");
            let Some(Value::Array(messages)) = messages else {
                return None;
            };
            let end = opening_end(messages, harness)?;
            for m in &messages[..=end] {
                let Some(r) =
                    role(m).filter(|r| matches!(r, Role::System | Role::Developer | Role::User))
                else {
                    continue;
                };
                h.update(format!("{r:?}").as_bytes());
                h.update([0]);
                content_name(&mut h, m.get("content"));
            }
        }
    }
    Some(hex::encode(h.finalize()))
}

/// Feeds what names a message's `content` to `h`: its text (a string, or its text parts joined
/// by newlines, as keys were always made), then each other part's payload (an image's URL or
/// data, an audio clip), so that two conversations opening with different images and no text
/// are two conversations. Text-only openers keep the key they had before parts counted. Part
/// fields beside the payload (`cache_control`, which clients move from turn to turn) are left
/// out.
fn content_name(h: &mut Sha256, content: Option<&Value>) {
    h.update(content_text(content).as_bytes());
    h.update([0]);
    let Some(Value::Array(parts)) = content else {
        return;
    };
    for p in parts.iter().filter(|p| p.get("text").is_none()) {
        let kind = p.get("type").and_then(Value::as_str).unwrap_or("");
        h.update(kind.as_bytes());
        h.update([0]);
        h.update(p.get(kind).map(Value::to_string).unwrap_or_default());
        h.update([0]);
    }
}

fn role(m: &Value) -> Option<Role> {
    m.get("role").and_then(Value::as_str).and_then(Role::parse)
}

/// The index of the opening's last message in `messages` (chat messages): the first user
/// message that holds words of the person's once `harness` has stripped it, or an image or
/// other part that is not text; when none does yet, the first user message. `None` when there
/// is no user message.
pub fn opening_end(messages: &[Value], harness: &HarnessFilter) -> Option<usize> {
    let first_user = messages.iter().position(|m| role(m) == Some(Role::User))?;
    let person = |m: &Value| {
        let content = m.get("content");
        let media = matches!(content, Some(Value::Array(parts))
            if parts.iter().any(|p| p.get("text").is_none()));
        media || !harness.strip(&content_text(content)).is_empty()
    };
    let end = (first_user..messages.len())
        .find(|&i| role(&messages[i]) == Some(Role::User) && person(&messages[i]))
        .unwrap_or(first_user);
    Some(end)
}

/// The pin stored for a conversation.
fn decode(value: &str) -> Option<Pin> {
    let (model, rule) = value.split_once('\n')?;
    Some(Pin {
        model: model.to_string(),
        rule: rule.to_string(),
    })
}

/// The pin of conversation `key`, if it has one.
///
/// Errors: the store did not answer in time.
pub async fn lookup(store: &dyn StateStore, key: &str) -> Result<Option<Pin>, StoreError> {
    Ok(store.pinned(key).await?.as_deref().and_then(decode))
}

/// Pins conversation `key` to `model`, routed by `rule`, for `ttl`.
///
/// Errors: the store did not answer in time.
pub async fn pin(
    store: &dyn StateStore,
    key: &str,
    model: &str,
    rule: &str,
    ttl: Duration,
) -> Result<(), StoreError> {
    store.pin(key, &format!("{model}\n{rule}"), ttl).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn clients_name_conversations_in_their_own_headers() {
        let name = |pairs: &[(&str, &str)], responses| client_name(&headers(pairs), responses);
        assert_eq!(name(&[], true), None);
        assert_eq!(name(&[(SESSION_HEADER, "  ")], true), None);
        // The gateway's own header is the name as it is, and comes first.
        assert_eq!(
            name(
                &[(SESSION_HEADER, " chat-1 "), (CLAUDE_CODE_SESSION, "s")],
                false
            ),
            Some("chat-1".into())
        );
        let claude = name(&[(CLAUDE_CODE_SESSION, "5f1c")], false);
        assert_eq!(claude.as_deref(), Some("x-claude-code-session-id\n5f1c"));
        let subagent = name(
            &[(CLAUDE_CODE_SESSION, "5f1c"), (CLAUDE_CODE_AGENT, "a1")],
            false,
        );
        assert_ne!(subagent, claude);
        assert!(subagent.is_some());
        // Codex CLI's `session_id` is read on the Responses API only.
        assert_eq!(
            name(&[(CODEX_SESSION, "0199")], true).as_deref(),
            Some("session_id\n0199")
        );
        assert_eq!(name(&[(CODEX_SESSION, "0199")], false), None);
        // One value in two headers names two conversations.
        assert_ne!(
            name(&[(CODEX_SESSION, "0199")], true),
            name(&[(SESSION_HEADER, "0199")], true)
        );
    }

    fn req(body: &str) -> ChatRequest {
        ChatRequest::parse(body.as_bytes()).unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn a_conversation_keeps_its_key_across_turns() {
        let h = HarnessFilter::default();
        let first = req(
            r#"{"model":"auto","messages":[{"role":"system","content":"S"},{"role":"user","content":"hi"}]}"#,
        );
        let later = req(
            r#"{"model":"auto","messages":[{"role":"system","content":"S"},{"role":"user","content":"hi"},{"role":"assistant","content":"hello"},{"role":"user","content":"more"}]}"#,
        );
        let other = req(
            r#"{"model":"auto","messages":[{"role":"system","content":"S"},{"role":"user","content":"bye"}]}"#,
        );
        let k = session_key(None, None, &first, &h);
        assert!(k.is_some());
        assert_eq!(k, session_key(None, None, &later, &h));
        assert_ne!(k, session_key(None, None, &other, &h));
        // Another tenant's identical conversation is another conversation.
        assert_ne!(k, session_key(None, Some("team-b"), &first, &h));
        // The header names the conversation, whatever its messages.
        assert_eq!(
            session_key(Some("s1"), None, &first, &h),
            session_key(Some("s1"), None, &other, &h)
        );
        // Openers that are only an image are told apart by the image, and a part's
        // `cache_control`, which clients move between turns, does not change the key.
        let image = |url: &str, extra: &str| {
            req(&format!(
                r#"{{"model":"auto","messages":[{{"role":"user","content":[{{"type":"image_url","image_url":{{"url":"{url}"}}{extra}}}]}}]}}"#
            ))
        };
        let a = session_key(None, None, &image("data:image/png;base64,AAAA", ""), &h);
        assert_ne!(
            a,
            session_key(None, None, &image("data:image/png;base64,BBBB", ""), &h)
        );
        assert_eq!(
            a,
            session_key(
                None,
                None,
                &image(
                    "data:image/png;base64,AAAA",
                    r#","cache_control":{"type":"ephemeral"}"#
                ),
                &h
            )
        );
        // A text-only opener keeps the key it had before non-text parts counted (pins stored
        // then still match): the tenant, then each role and text.
        let mut old = Sha256::new();
        old.update(b"\0messages\0System\0S\0User\0hi\0");
        assert_eq!(k, Some(hex::encode(old.finalize())));
        // Text sent as a string or as one text part is the same opener.
        let parts = req(
            r#"{"model":"auto","messages":[{"role":"system","content":"S"},{"role":"user","content":[{"type":"text","text":"hi"}]}]}"#,
        );
        assert_eq!(k, session_key(None, None, &parts, &h));
        let none = req(r#"{"model":"auto","messages":[{"role":"system","content":"S"}]}"#);
        assert_eq!(session_key(None, None, &none, &h), None);
    }

    /// Codex CLI opens every conversation in a folder with the same user messages (the
    /// folder's AGENTS.md, its environment): the person's first request tells two of them
    /// apart, and stays the conversation's name on later turns.
    #[test]
    fn an_agents_own_opening_messages_do_not_name_the_conversation() {
        let h = HarnessFilter::default();
        let codex = |prompt: &str, more: &str| {
            req(&format!(
                r##"{{"model":"auto","messages":[{{"role":"developer","content":"You are Codex."}},{{"role":"user","content":[{{"type":"text","text":"# AGENTS.md instructions for /repo\n\n<INSTRUCTIONS>\nUse 4 spaces.\n</INSTRUCTIONS>"}}]}},{{"role":"user","content":[{{"type":"text","text":"<environment_context>\n  <cwd>/repo</cwd>\n</environment_context>"}}]}},{{"role":"user","content":"{prompt}"}}{more}]}}"##
            ))
        };
        let a = session_key(None, None, &codex("Add retries to the client.", ""), &h);
        let b = session_key(None, None, &codex("Write a README.", ""), &h);
        assert!(a.is_some());
        assert_ne!(a, b, "two conversations in one folder");
        let later =
            r#",{"role":"assistant","content":"Done."},{"role":"user","content":"Now add tests."}"#;
        assert_eq!(
            a,
            session_key(None, None, &codex("Add retries to the client.", later), &h)
        );
        // Under a policy that turns the built-in rules off, those messages are the person's.
        let none = HarnessFilter::new(&[], &[], false).expect("no rules");
        assert_eq!(
            session_key(None, None, &codex("Add retries to the client.", ""), &none),
            session_key(None, None, &codex("Write a README.", ""), &none)
        );
        // A conversation with no words of the person's yet is named by its first user message.
        let harness_only = req(
            r#"{"model":"auto","messages":[{"role":"user","content":"<environment_context>x</environment_context>"}]}"#,
        );
        let mut first = Sha256::new();
        first.update(b"\0messages\0User\0<environment_context>x</environment_context>\0");
        assert_eq!(
            session_key(None, None, &harness_only, &h),
            Some(hex::encode(first.finalize()))
        );
    }

    #[test]
    fn pins_round_trip() {
        assert_eq!(
            decode("gpt-4o\nhard"),
            Some(Pin {
                model: "gpt-4o".into(),
                rule: "hard".into()
            })
        );
        assert_eq!(decode("garbage"), None);
    }
}
