//! `POST /v1/chat/completions` request: parsed once, validated, with the counts the
//! policy needs, and every field kept so that the cloud receives what the client sent.

use super::capabilities::{Capabilities, Capability};
use super::skim::{self, Kind, RawStr, Reader, SkimError};
use super::ApiError;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::ops::Range;

/// A message author.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    Function,
}

impl Role {
    /// The role of an OpenAI `role` name.
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "system" => Role::System,
            "developer" => Role::Developer,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            "function" => Role::Function,
            _ => return None,
        })
    }
}

/// A validated chat completion request.
///
/// The body is kept as it came, with the place of each top-level member: the cloud receives
/// every member byte for byte (only `model` and, on streams, `stream_options` are rewritten),
/// and nothing is built from the messages on the way.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    raw: String,
    /// Top-level members in order. A repeated key is forwarded as sent; the gateway reads its
    /// last value, as JSON parsers do.
    members: Vec<Member>,
    /// Index in `members` of the last member named each of [`KNOWN`] ([`NONE`] if absent).
    known: [usize; KNOWN.len()],
    pub model: String,
    pub stream: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    /// `max_completion_tokens`, else `max_tokens`.
    pub max_tokens: Option<u64>,
    pub message_count: u64,
    /// Bytes of text across all messages.
    pub text_bytes: u64,
    /// Bytes of text of the longest message.
    pub largest_message_bytes: u64,
    /// Bytes of the `tools` (and `functions`) definitions, 0 when there are none.
    pub tool_bytes: u64,
    pub image_count: u64,
    /// What the request needs of the model that answers it ([`ChatRequest::needs`]).
    pub needs: Capabilities,
    /// The first content part of a type the gateway does not know, when there is one.
    pub unknown_part: Option<UnknownPart>,
    /// A legacy completion (`/v1/completions`): the one user message is a raw prompt, which an
    /// on-box model continues as it is, without its chat template.
    pub raw_prompt: bool,
    /// For a request in a dialect with features of its own, the API that alone serves them
    /// ([`Capability::Responses`] or [`Capability::Messages`], which the request then needs)
    /// and the first field that uses one (`reasoning.summary`, `input[3]`, `thinking`, ...):
    /// the `param` of the error when no model has that capability.
    pub dialect_only: Option<(Capability, String)>,
    /// Tokens the client sent as ids rather than text (an embeddings `input` of token ids,
    /// [`ChatRequest::set_token_ids`]): they are in no message, so the prompt estimate counts
    /// them one token each ([`crate::features::estimate_request_tokens`]).
    pub token_ids: u64,
}

/// A content part of a type the gateway does not know: passed to a cloud provider as it is,
/// refused by the on-box engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownPart {
    /// Its `type`, as sent (at most 64 characters).
    pub kind: String,
    /// Where it is: `messages[i].content[j]`.
    pub param: String,
}

/// A top-level member: where its key (between the quotes, as sent) and its value are in the body.
#[derive(Debug, Clone)]
struct Member {
    key: Range<usize>,
    key_escaped: bool,
    value: Range<usize>,
}

/// The members the gateway reads, found in the parsing pass.
const KNOWN: [&str; 15] = [
    "model",
    "stream",
    "stream_options",
    "max_completion_tokens",
    "max_tokens",
    "n",
    "temperature",
    "top_p",
    "stop",
    "tools",
    "functions",
    "response_format",
    "tool_choice",
    "logprobs",
    "top_logprobs",
];
const NONE: usize = usize::MAX;

fn bad(message: impl Into<String>, param: &str) -> ApiError {
    ApiError::bad_request(message, Some(param))
}

fn not_json(e: SkimError) -> ApiError {
    ApiError::bad_request(format!("the request body is not valid JSON: {e}"), None)
}

fn type_name(v: &Value) -> &'static str {
    Kind::from(v).described()
}

/// Offset of `part` (a slice of `whole`) in `whole`.
fn offset_in(whole: &str, part: &str) -> usize {
    part.as_ptr() as usize - whole.as_ptr() as usize
}

impl ChatRequest {
    /// Parses and validates a request body.
    pub fn parse(body: &[u8]) -> Result<ChatRequest, ApiError> {
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::bad_request("the request body is not valid UTF-8", None))?;
        let mut r = Reader::of(text);
        let kind = r.peek().map_err(not_json)?;
        if kind != Kind::Object {
            r.skip().and_then(|()| r.end()).map_err(not_json)?;
            return Err(ApiError::bad_request(
                format!(
                    "the request body must be a JSON object, got {}",
                    kind.described()
                ),
                None,
            ));
        }
        // One pass: the place of every member, and the messages validated and counted on the
        // way (their errors wait until the whole body is known to be JSON).
        let mut members: Vec<Member> = Vec::with_capacity(16);
        let mut known = [NONE; KNOWN.len()];
        let mut messages = None;
        r.object(|r, key| {
            let start = r.value_start();
            let name = key.decoded();
            if name == "messages" {
                messages = Some(count_messages(r)?);
            } else {
                r.skip()?;
            }
            if let Some(k) = KNOWN.iter().position(|k| *k == name) {
                known[k] = members.len();
            }
            let key_start = offset_in(text, key.raw);
            members.push(Member {
                key: key_start..key_start + key.raw.len(),
                key_escaped: key.escaped,
                value: start..r.offset(),
            });
            Ok(())
        })
        .and_then(|()| r.end())
        .map_err(not_json)?;
        let mut req = ChatRequest {
            raw: text.to_owned(),
            members,
            known,
            model: String::new(),
            stream: false,
            include_usage: false,
            max_tokens: None,
            message_count: 0,
            text_bytes: 0,
            largest_message_bytes: 0,
            tool_bytes: 0,
            image_count: 0,
            needs: Capabilities::NONE,
            unknown_part: None,
            raw_prompt: false,
            dialect_only: None,
            token_ids: 0,
        };
        req.validate()?;
        let counts = match messages {
            None => return Err(bad("missing required parameter `messages`", "messages")),
            Some(counts) => counts?,
        };
        req.message_count = counts.messages;
        req.text_bytes = counts.text_bytes;
        req.largest_message_bytes = counts.largest;
        req.image_count = counts.images;
        req.needs = req.needs_of(&counts);
        req.unknown_part = counts.unknown_part;
        Ok(req)
    }

    /// Marks the request a legacy completion: its one user message is a raw prompt, which only
    /// a model with the `completions` capability can answer.
    pub fn set_raw_prompt(&mut self) {
        self.raw_prompt = true;
        self.needs = self.needs.with(Capability::Completions);
    }

    /// Records `n` tokens the client sent as ids (an embeddings input), which no message holds.
    pub fn set_token_ids(&mut self, n: u64) {
        self.token_ids = n;
    }

    /// Marks a request that uses `param`, which only its dialect's API serves (`api`:
    /// [`Capability::Responses`] or [`Capability::Messages`]): only a model with that
    /// capability (its body passed as it came) can answer it.
    pub fn set_dialect_only(&mut self, api: Capability, param: String) {
        self.dialect_only = Some((api, param));
        self.needs = self.needs.with(api);
    }

    /// The request field that asks for `c`, for the `param` of the error when no model has it:
    /// the dialect's own field for [`ChatRequest::dialect_only`], `modalities` or `audio` for
    /// an answer in audio, else [`Capability::param`].
    pub fn param_for(&self, c: Capability) -> String {
        if let Some((api, p)) = &self.dialect_only {
            if *api == c {
                return p.clone();
            }
        }
        match (c, self.audio_answer()) {
            (Capability::Audio, Some(field)) => field.into(),
            _ => c.param().into(),
        }
    }

    /// The field that asks for an answer in audio: `modalities` naming it, else `audio` (the
    /// voice and format it comes in); `None` when neither does.
    fn audio_answer(&self) -> Option<&'static str> {
        if matches!(self.field("modalities"), Some(Value::Array(m)) if m.iter().any(|m| m == "audio"))
        {
            Some("modalities")
        } else if matches!(self.field("audio"), Some(a) if !a.is_null()) {
            Some("audio")
        } else {
            None
        }
    }

    /// What the request needs of a model (see [`Capability`] for where each comes from).
    fn needs_of(&self, counts: &MessageCounts) -> Capabilities {
        let mut needs = Capabilities::NONE;
        let tool_choice_none =
            matches!(self.field("tool_choice"), Some(Value::String(s)) if s == "none");
        // `validate` checked that these are arrays or null: a non-empty array is more than `[]`
        // once compacted (the definitions themselves are not parsed again).
        let listed = |name| {
            self.member(name).is_some_and(|raw| {
                matches!(Reader::of(raw).peek(), Ok(Kind::Array)) && skim::compact_len(raw) > 2
            })
        };
        if (listed("tools") || listed("functions")) && !tool_choice_none {
            needs = needs.with(Capability::Tools);
        }
        if let Some(Value::Object(f)) = self.field("response_format") {
            match f.get("type").and_then(Value::as_str) {
                Some("json_object") => needs = needs.with(Capability::JsonObject),
                Some("json_schema") => needs = needs.with(Capability::JsonSchema),
                _ => {}
            }
        }
        let logprobs = matches!(self.field("logprobs"), Some(Value::Bool(true)));
        let top =
            matches!(self.field("top_logprobs"), Some(Value::Number(n)) if n.as_u64() != Some(0));
        if logprobs || top {
            needs = needs.with(Capability::Logprobs);
        }
        if matches!(self.field("n"), Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n > 1)) {
            needs = needs.with(Capability::N);
        }
        if self.audio_answer().is_some() {
            needs = needs.with(Capability::Audio);
        }
        if matches!(self.field("web_search_options"), Some(o) if !o.is_null()) {
            needs = needs.with(Capability::WebSearch);
        }
        for (count, c) in [
            (counts.images, Capability::Images),
            (counts.audio, Capability::Audio),
            (counts.files, Capability::Files),
        ] {
            if count > 0 {
                needs = needs.with(c);
            }
        }
        needs
    }

    /// The raw JSON of a top-level member.
    fn member(&self, name: &str) -> Option<&str> {
        let text = self.raw.as_str();
        let m = match KNOWN.iter().position(|k| *k == name) {
            Some(k) => self.members.get(self.known[k])?,
            None => self.members.iter().rfind(|m| key_of(text, m) == name)?,
        };
        Some(&text[m.value.clone()])
    }

    /// Whether the request has a top-level member `name`.
    pub fn has(&self, name: &str) -> bool {
        self.member(name).is_some()
    }

    /// A top-level member, parsed.
    pub fn field(&self, name: &str) -> Option<Value> {
        serde_json::from_str(self.member(name)?).ok()
    }

    /// Bytes of the request body as sent: an upper bound on every text inside it (message
    /// content, tool-call arguments, tool results), for work whose cost grows with them.
    pub fn body_bytes(&self) -> u64 {
        self.raw.len() as u64
    }

    /// The whole request object, parsed (for the request log and the on-box engine; the cloud
    /// path does not need it).
    pub fn body(&self) -> Map<String, Value> {
        serde_json::from_str(&self.raw).unwrap_or_default()
    }

    /// Writes the request as sent to a cloud model: `model` replaced by `model`, the members
    /// named in `omit` left out (what the model is not given, such as `reasoning_effort` for a
    /// model that does not reason), every other member as the client sent it, and on streams
    /// `stream_options.include_usage` set.
    pub fn write_upstream(&self, model: &str, stream: bool, omit: &[&str], out: &mut Vec<u8>) {
        let text = self.raw.as_str();
        out.reserve(self.raw.len() + model.len() + 48);
        out.extend_from_slice(b"{\"model\":");
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, model);
        for m in &self.members {
            let key = key_of(text, m);
            if key == "model" || (stream && key == "stream_options") || omit.contains(&&*key) {
                continue;
            }
            out.extend_from_slice(b",\"");
            out.extend_from_slice(text[m.key.clone()].as_bytes());
            out.extend_from_slice(b"\":");
            out.extend_from_slice(text[m.value.clone()].as_bytes());
        }
        if stream {
            out.extend_from_slice(b",\"stream_options\":");
            match self.field("stream_options") {
                Some(Value::Object(mut opts)) => {
                    opts.insert("include_usage".into(), Value::Bool(true));
                    let _ = serde_json::to_writer(&mut *out, &opts);
                }
                _ => out.extend_from_slice(b"{\"include_usage\":true}"),
            }
        }
        out.push(b'}');
    }

    fn validate(&mut self) -> Result<(), ApiError> {
        self.model = match self.field("model") {
            Some(Value::String(s)) if !s.is_empty() => s,
            Some(Value::String(_)) => return Err(bad("`model` must not be empty", "model")),
            Some(v) => {
                return Err(bad(
                    format!("`model` must be a string, got {}", type_name(&v)),
                    "model",
                ))
            }
            None => return Err(bad("missing required parameter `model`", "model")),
        };
        self.stream = self.opt_bool("stream")?.unwrap_or(false);
        self.include_usage = match self.field("stream_options") {
            None | Some(Value::Null) => false,
            Some(Value::Object(o)) => match o.get("include_usage") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(v) => {
                    return Err(bad(
                        format!(
                            "`stream_options.include_usage` must be a boolean, got {}",
                            type_name(v)
                        ),
                        "stream_options.include_usage",
                    ))
                }
            },
            Some(v) => {
                return Err(bad(
                    format!("`stream_options` must be an object, got {}", type_name(&v)),
                    "stream_options",
                ))
            }
        };
        if self.include_usage && !self.stream {
            return Err(bad(
                "`stream_options` is only allowed when `stream` is true",
                "stream_options",
            ));
        }
        self.max_tokens = match self.opt_u64("max_completion_tokens")? {
            Some(n) => Some(n),
            None => self.opt_u64("max_tokens")?,
        };
        if self.max_tokens == Some(0) {
            let param = if self.has("max_completion_tokens") {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            return Err(bad(format!("`{param}` must be at least 1"), param));
        }
        if let Some(n) = self.opt_u64("n")? {
            if n == 0 {
                return Err(bad("`n` must be at least 1", "n"));
            }
        }
        for (name, max) in [("temperature", 2.0), ("top_p", 1.0)] {
            match self.field(name) {
                None | Some(Value::Null) => {}
                Some(Value::Number(x)) => {
                    let x = x.as_f64().unwrap_or(f64::NAN);
                    if !(0.0..=max).contains(&x) {
                        return Err(bad(
                            format!("`{name}` must be between 0 and {max}, got {x}"),
                            name,
                        ));
                    }
                }
                Some(v) => {
                    return Err(bad(
                        format!("`{name}` must be a number, got {}", type_name(&v)),
                        name,
                    ))
                }
            }
        }
        match self.field("stop") {
            None | Some(Value::Null) | Some(Value::String(_)) => {}
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => {}
            Some(_) => {
                return Err(bad(
                    "`stop` must be a string or an array of strings",
                    "stop",
                ))
            }
        }
        self.tool_bytes = 0;
        for name in ["tools", "functions"] {
            let Some(raw) = self.member(name) else {
                continue;
            };
            match Reader::of(raw).peek() {
                Ok(Kind::Null) => {}
                Ok(Kind::Array) => self.tool_bytes += skim::compact_len(raw) as u64,
                Ok(kind) => {
                    return Err(bad(
                        format!("`{name}` must be an array, got {}", kind.described()),
                        name,
                    ))
                }
                Err(e) => return Err(not_json(e)),
            }
        }
        Ok(())
    }

    fn opt_bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.field(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(v) => Err(bad(
                format!("`{name}` must be a boolean, got {}", type_name(&v)),
                name,
            )),
        }
    }

    fn opt_u64(&self, name: &str) -> Result<Option<u64>, ApiError> {
        match self.field(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) => Ok(Some(v)),
                None => Err(bad(
                    format!("`{name}` must be a non-negative integer, got {n}"),
                    name,
                )),
            },
            Some(v) => Err(bad(
                format!("`{name}` must be an integer, got {}", type_name(&v)),
                name,
            )),
        }
    }

    /// The messages as (role, text) pairs, text parts joined; for engines that need plain text.
    pub fn messages(&self) -> Vec<(Role, String)> {
        let Some(Value::Array(messages)) = self.field("messages") else {
            return vec![];
        };
        messages
            .iter()
            .filter_map(|m| {
                let role = Role::parse(m.get("role")?.as_str()?)?;
                Some((role, content_text(m.get("content"))))
            })
            .collect()
    }
}

/// The text of a message's `content`: a string, or its text parts joined by newlines (other
/// parts and a missing content give nothing).
pub fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The key of a member, as its value (borrowed unless it was sent with escapes).
fn key_of<'t>(text: &'t str, m: &Member) -> Cow<'t, str> {
    let raw = &text[m.key.clone()];
    RawStr {
        raw,
        escaped: m.key_escaped,
    }
    .decoded()
}

/// What the policy needs to know of the messages.
#[derive(Default)]
struct MessageCounts {
    messages: u64,
    text_bytes: u64,
    largest: u64,
    images: u64,
    audio: u64,
    files: u64,
    unknown_part: Option<UnknownPart>,
}

/// The content parts of one message, by kind.
#[derive(Default)]
struct Parts {
    images: u64,
    audio: u64,
    files: u64,
    unknown: Option<UnknownPart>,
}

/// A content part's kind.
enum PartKind {
    Text,
    Image,
    Audio,
    File,
    Unknown(String),
}

/// Reads the `messages` array, validating every message and counting what the policy needs
/// without building the messages. The outer error is malformed JSON, the inner one invalid
/// messages (the first invalid one).
fn count_messages(r: &mut Reader) -> Result<Result<MessageCounts, ApiError>, SkimError> {
    let kind = r.peek()?;
    if kind != Kind::Array {
        r.skip()?;
        return Ok(Err(bad(
            format!("`messages` must be an array, got {}", kind.described()),
            "messages",
        )));
    }
    let mut counts = MessageCounts::default();
    let mut invalid: Option<ApiError> = None;
    r.array(|r| {
        let i = counts.messages as usize;
        counts.messages += 1;
        if invalid.is_some() {
            return r.skip();
        }
        match check_message(r, i)? {
            Ok((text, parts)) => {
                counts.text_bytes += text;
                counts.largest = counts.largest.max(text);
                counts.images += parts.images;
                counts.audio += parts.audio;
                counts.files += parts.files;
                if counts.unknown_part.is_none() {
                    counts.unknown_part = parts.unknown;
                }
            }
            Err(e) => invalid = Some(e),
        }
        Ok(())
    })?;
    if let Some(e) = invalid {
        return Ok(Err(e));
    }
    if counts.messages == 0 {
        return Ok(Err(bad(
            "`messages` must contain at least one message",
            "messages",
        )));
    }
    Ok(Ok(counts))
}

/// What a message's `content` turned out to be.
enum Content {
    Absent,
    Text(u64, Parts),
    Invalid(ApiError),
}

/// Reads one message; the outer error is malformed JSON, the inner one an invalid message.
/// On success, its text bytes and content parts. (Parameter names are built only for errors.)
fn check_message(r: &mut Reader, i: usize) -> Result<Result<(u64, Parts), ApiError>, SkimError> {
    let param = || format!("messages[{i}]");
    let kind = r.peek()?;
    if kind != Kind::Object {
        r.skip()?;
        return Ok(Err(bad(
            format!("`{}` must be an object, got {}", param(), kind.described()),
            &param(),
        )));
    }
    let mut role: Option<Result<RawStr, Kind>> = None;
    let mut content = Content::Absent;
    // An assistant turn's tool calls are prompt text on every later turn: their JSON (compact,
    // as `tools` is counted) counts with the message's text.
    let mut calls = 0u64;
    r.object(|r, key| {
        if key.is("tool_calls") || key.is("function_call") {
            calls += skim::compact_len(r.raw()?) as u64;
            return Ok(());
        }
        if key.is("role") {
            role = Some(match r.peek()? {
                Kind::String => Ok(r.string()?),
                kind => {
                    r.skip()?;
                    Err(kind)
                }
            });
            return Ok(());
        }
        if key.is("content") {
            content = read_content(r, i)?;
            return Ok(());
        }
        r.skip()
    })?;
    let role_param = || format!("messages[{i}].role");
    let role = match role {
        Some(Ok(raw)) => {
            let r = raw.decoded();
            match Role::parse(&r) {
                Some(role) => role,
                None => return Ok(Err(bad(
                    format!("`{}` is `{r}`, which is not one of system, developer, user, assistant, tool, function", role_param()),
                    &role_param(),
                ))),
            }
        }
        Some(Err(kind)) => {
            return Ok(Err(bad(
                format!(
                    "`{}` must be a string, got {}",
                    role_param(),
                    kind.described()
                ),
                &role_param(),
            )))
        }
        None => {
            return Ok(Err(bad(
                format!("`{}` is missing `role`", param()),
                &role_param(),
            )))
        }
    };
    Ok(match content {
        Content::Text(text, parts) => Ok((text + calls, parts)),
        Content::Invalid(e) => Err(e),
        Content::Absent => {
            if role == Role::Assistant || role == Role::Tool || role == Role::Function {
                Ok((calls, Parts::default()))
            } else {
                let content_param = format!("messages[{i}].content");
                Err(bad(
                    format!("`{content_param}` is required for role {role:?}").to_lowercase(),
                    &content_param,
                ))
            }
        }
    })
}

/// Reads a message's `content`: a string, null, or an array of parts.
fn read_content(r: &mut Reader, i: usize) -> Result<Content, SkimError> {
    let content_param = || format!("messages[{i}].content");
    match r.peek()? {
        Kind::String => Ok(Content::Text(r.string()?.len() as u64, Parts::default())),
        Kind::Null => {
            r.skip()?;
            Ok(Content::Absent)
        }
        Kind::Array => {
            let (mut text, mut parts) = (0u64, Parts::default());
            let mut invalid = None;
            let mut j = 0;
            r.array(|r| {
                let part = j;
                let pp = || format!("{}[{part}]", content_param());
                j += 1;
                if invalid.is_some() {
                    return r.skip();
                }
                match read_part(r, pp)? {
                    Ok((t, kind)) => {
                        text += t;
                        match kind {
                            PartKind::Text => {}
                            PartKind::Image => parts.images += 1,
                            PartKind::Audio => parts.audio += 1,
                            PartKind::File => parts.files += 1,
                            PartKind::Unknown(kind) => {
                                parts
                                    .unknown
                                    .get_or_insert(UnknownPart { kind, param: pp() });
                            }
                        }
                    }
                    Err(e) => invalid = Some(e),
                }
                Ok(())
            })?;
            Ok(match invalid {
                Some(e) => Content::Invalid(e),
                None => Content::Text(text, parts),
            })
        }
        kind => {
            r.skip()?;
            Ok(Content::Invalid(bad(
                format!(
                    "`{}` must be a string or an array of content parts, got {}",
                    content_param(),
                    kind.described()
                ),
                &content_param(),
            )))
        }
    }
}

/// Reads one content part: its text bytes and kind, or why it is invalid.
fn read_part(
    r: &mut Reader,
    pp: impl Fn() -> String,
) -> Result<Result<(u64, PartKind), ApiError>, SkimError> {
    let no_type = || {
        bad(
            format!("`{}` must be an object with a string `type`", pp()),
            &pp(),
        )
    };
    if r.peek()? != Kind::Object {
        r.skip()?;
        return Ok(Err(no_type()));
    }
    let mut ty: Option<RawStr> = None;
    let mut text: Option<Option<u64>> = None;
    r.object(|r, key| {
        if key.is("type") {
            ty = match r.peek()? {
                Kind::String => Some(r.string()?),
                _ => {
                    r.skip()?;
                    None
                }
            };
            return Ok(());
        }
        if key.is("text") {
            text = Some(match r.peek()? {
                Kind::String => Some(r.string()?.len() as u64),
                _ => {
                    r.skip()?;
                    None
                }
            });
            return Ok(());
        }
        r.skip()
    })?;
    let Some(ty) = ty else {
        return Ok(Err(no_type()));
    };
    Ok(match ty.decoded().as_ref() {
        "text" => match text {
            Some(Some(n)) => Ok((n, PartKind::Text)),
            _ => Err(bad(
                format!("`{}.text` must be a string", pp()),
                &format!("{}.text", pp()),
            )),
        },
        "image_url" | "input_image" | "image" => Ok((0, PartKind::Image)),
        "input_audio" | "audio" => Ok((0, PartKind::Audio)),
        "file" | "input_file" => Ok((0, PartKind::File)),
        other => Ok((0, PartKind::Unknown(other.chars().take(64).collect()))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(body: &str) -> ApiError {
        ChatRequest::parse(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn needs_come_from_the_fields_that_ask_for_them() {
        let needs = |extra: &str, content: &str| {
            let body = format!(
                r#"{{"model":"auto","messages":[{{"role":"user","content":{content}}}]{extra}}}"#
            );
            let r = ChatRequest::parse(body.as_bytes()).unwrap();
            (r.needs.names(), r.unknown_part.map(|p| (p.kind, p.param)))
        };
        let none = ("none".to_string(), None);
        assert_eq!(needs("", r#""hi""#), none);
        for quiet in [
            r#","tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"none""#,
            r#","tools":[]"#,
            r#","response_format":{"type":"text"}"#,
            r#","logprobs":false,"top_logprobs":0"#,
            r#","n":1"#,
        ] {
            assert_eq!(needs(quiet, r#""hi""#), none, "{quiet}");
        }
        let asks = needs(
            r#","tools":[{"type":"function","function":{"name":"f"}}],"response_format":{"type":"json_schema","json_schema":{"name":"a"}},"top_logprobs":2,"n":2"#,
            r#"[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"u"}},{"type":"input_audio","input_audio":{}},{"type":"file","file":{}},{"type":"video","v":1}]"#,
        );
        assert_eq!(
            asks,
            (
                "tools, json_schema, logprobs, n, images, audio, files".to_string(),
                Some(("video".to_string(), "messages[0].content[4]".to_string()))
            )
        );
        assert_eq!(
            needs(r#","response_format":{"type":"json_object"}"#, r#""hi""#).0,
            "json_object"
        );
        for quiet in [
            r#","modalities":["text"],"audio":null"#,
            r#","web_search_options":null"#,
        ] {
            assert_eq!(needs(quiet, r#""hi""#), none, "{quiet}");
        }
        for (audio_out, param) in [
            (r#","modalities":["text","audio"]"#, "modalities"),
            (r#","audio":{"voice":"alloy","format":"wav"}"#, "audio"),
        ] {
            assert_eq!(needs(audio_out, r#""hi""#).0, "audio", "{audio_out}");
            let body = format!(
                r#"{{"model":"auto","messages":[{{"role":"user","content":"hi"}}]{audio_out}}}"#
            );
            let r = ChatRequest::parse(body.as_bytes()).unwrap();
            assert_eq!(r.param_for(Capability::Audio), param);
            assert_eq!(r.param_for(Capability::Tools), "tools");
        }
        assert_eq!(
            needs(
                r#","web_search_options":{"search_context_size":"low"}"#,
                r#""hi""#
            )
            .0,
            "web_search"
        );
    }

    #[test]
    fn parses_counts_and_keeps_unknown_fields() {
        let r = ChatRequest::parse(
            br#"{"model":"auto","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"data:x"}}]}],"tools":[{"type":"function","function":{"name":"f"}}],"logit_bias":{"1":2},"stream":true,"stream_options":{"include_usage":true},"max_tokens":5}"#,
        )
        .unwrap();
        assert_eq!((r.message_count, r.text_bytes, r.image_count), (2, 10, 1));
        assert!(r.tool_bytes > 0 && r.stream && r.include_usage);
        assert_eq!(r.max_tokens, Some(5));
        assert!(r.has("logit_bias"));
        assert_eq!(r.messages()[1], (Role::User, "hi".to_string()));
    }

    #[test]
    fn upstream_body_replaces_model_keeps_the_rest_and_asks_for_usage_on_streams() {
        let sent = br#"{ "model" : "auto", "messages":[{"role":"user","content":"h\u00e9"}],
            "stream":true,"stream_options":{"x":1},"seed":7,"n\u0061me":"a",
            "re\u0061soning_effort":"high"}"#;
        let r = ChatRequest::parse(sent).unwrap();
        let upstream = |model: &str, stream: bool| {
            let mut out = vec![];
            r.write_upstream(model, stream, &["reasoning_effort"], &mut out);
            serde_json::from_slice::<Value>(&out).unwrap()
        };
        let mut kept = vec![];
        r.write_upstream("gpt-5", false, &[], &mut kept);
        let kept: Value = serde_json::from_slice(&kept).unwrap();
        assert_eq!(kept["reasoning_effort"], "high");
        let out = upstream("gpt-4o", true);
        assert_eq!(out["model"], "gpt-4o");
        assert_eq!(
            (out["seed"].clone(), out["name"].clone()),
            (json!(7), json!("a"))
        );
        assert_eq!(out["messages"][0]["content"], "h\u{e9}");
        assert_eq!(
            out["stream_options"],
            json!({"x": 1, "include_usage": true})
        );
        let out = upstream("m\"x", false);
        assert_eq!(out["model"], "m\"x");
        assert_eq!(out["stream_options"], json!({"x": 1}));
        let mut keys: Vec<String> = out.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "messages",
                "model",
                "name",
                "seed",
                "stream",
                "stream_options"
            ]
        );
    }

    #[test]
    fn a_repeated_key_reads_as_its_last_value() {
        let r = ChatRequest::parse(
            br#"{"model":"a","model":"b","messages":[{"role":"user","content":"x"}],"max_tokens":3,"max_tokens":5}"#,
        )
        .unwrap();
        assert_eq!((r.model.as_str(), r.max_tokens), ("b", Some(5)));
        let mut out = vec![];
        r.write_upstream("up", false, &[], &mut out);
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            (out["model"].clone(), out["max_tokens"].clone()),
            (json!("up"), json!(5))
        );
    }

    #[test]
    fn rejects_bad_requests_with_the_parameter() {
        let param = |e: ApiError| match e {
            ApiError::BadRequest { param, .. } => param,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            param(err(r#"{"messages":[{"role":"user","content":"x"}]}"#)).as_deref(),
            Some("model")
        );
        assert_eq!(
            param(err(r#"{"model":"auto"}"#)).as_deref(),
            Some("messages")
        );
        assert_eq!(
            param(err(r#"{"model":"auto","messages":[]}"#)).as_deref(),
            Some("messages")
        );
        assert_eq!(
            param(err(
                r#"{"model":"auto","messages":[{"role":"wizard","content":"x"}]}"#
            ))
            .as_deref(),
            Some("messages[0].role")
        );
        assert_eq!(
            param(err(r#"{"model":5,"messages":[]}"#)).as_deref(),
            Some("model")
        );
        assert_eq!(
            param(err(
                r#"{"model":"a","messages":[{"role":"user","content":"x"}],"max_tokens":-1}"#
            ))
            .as_deref(),
            Some("max_tokens")
        );
        assert_eq!(
            param(err(
                r#"{"model":"a","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#
            ))
            .as_deref(),
            Some("stream")
        );
        assert_eq!(
            param(err(
                r#"{"model":"a","messages":[{"role":"user","content":5}]}"#
            ))
            .as_deref(),
            Some("messages[0].content")
        );
        assert!(matches!(err("{not json"), ApiError::BadRequest { .. }));
        assert!(matches!(err("[1,2]"), ApiError::BadRequest { .. }));
        assert!(matches!(
            ChatRequest::parse(b"{\"model\":\"\xff\"}").unwrap_err(),
            ApiError::BadRequest { .. }
        ));
    }
}
