//! OpenAI-compatible cloud provider: pooled keep-alive connections, per-model timeouts, streaming
//! forwarded chunk by chunk, usage taken from the upstream (asked for on streams).

use super::resilience::{self, CircuitBreaker, CircuitState, Permit};
use super::upstream::{self, Upstream, UpstreamError};
use super::{ChatEngine, Chunk, Completion, EngineError, EngineRequest, Native, Streaming};
use crate::accounting::metrics::RetryCounter;
use crate::api::anthropic_upstream::Thinking;
use crate::api::native::{self, StreamReader};
use crate::api::skim::{self, Kind, Reader, SkimError};
use crate::api::sse;
use crate::api::{Capability, Dialect, Reported, Usage};
use crate::features::estimate_text_tokens;
use crate::policy::{Model, Reasoning, RetrySettings, Secret, Timeouts};
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Uri};
use serde::Deserialize;
use std::borrow::Cow;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{timeout, timeout_at, Instant};

/// The request header in which the OpenAI SDKs count their own retries of a call.
const CLIENT_RETRY_COUNT: HeaderName = HeaderName::from_static("x-stainless-retry-count");

/// Largest non-streaming upstream response accepted.
pub const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// A cloud model behind an OpenAI-compatible API.
pub struct OpenAiEngine {
    name: String,
    redactor: Redactor,
    upstream_model: String,
    timeouts: Timeouts,
    retries: RetrySettings,
    breaker: Option<Arc<CircuitBreaker>>,
    forward_headers: Vec<HeaderName>,
    disabled: Option<String>,
    upstream: Arc<Upstream>,
    /// The request head up to the forwarded headers, for non-streaming and streaming calls.
    head_prefix: [Vec<u8>; 2],
    /// The dialects the upstream also serves, each with its head prefixes (Anthropic Messages
    /// at the same endpoint; Responses, completions, embeddings and the token counts at their
    /// own paths).
    native: Vec<(Dialect, [Vec<u8>; 2])>,
    retry_count: RetryCounter,
    /// The wire format of the upstream.
    wire: Wire,
    /// How the model is given a request's reasoning effort.
    reasoning: Reasoning,
}

/// What a cloud model's API speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    /// OpenAI chat completions: the request body is forwarded with only the model replaced.
    OpenAi,
    /// Anthropic Messages: requests, answers, streams and errors are translated
    /// ([`crate::api::anthropic_upstream`]); `max_tokens` defaults to the given count.
    Anthropic { default_max_tokens: u64 },
}

/// The Messages API version sent when the client names none (`anthropic-version`).
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// `?name=value&...` of a model's `query` parameters, percent-encoded (RFC 3986: all but
/// unreserved characters); empty when there are none.
fn query_string(query: &[(String, String)]) -> String {
    fn encode(out: &mut String, s: &str) {
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    let mut out = String::new();
    for (i, (k, v)) in query.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        encode(&mut out, k);
        out.push('=');
        encode(&mut out, v);
    }
    out
}

impl OpenAiEngine {
    /// Builds the engine of a policy model of kind `openai`, counting its retries in `retries`.
    pub fn new(model: &Model, retries: RetryCounter) -> Result<OpenAiEngine, String> {
        let p = model.provider.as_ref().ok_or("not a cloud model")?;
        let wire = match model.kind {
            crate::policy::ModelKind::Anthropic => Wire::Anthropic {
                default_max_tokens: model.max_output_tokens.unwrap_or(4096),
            },
            _ => Wire::OpenAi,
        };
        let path = match wire {
            Wire::OpenAi => "/chat/completions",
            Wire::Anthropic { .. } => "/v1/messages",
        };
        let endpoint_of = |path: &str| -> Result<Uri, String> {
            format!("{}{path}{}", p.base_url, query_string(&p.query))
                .parse()
                .map_err(|e| format!("invalid base_url for model `{}`: {e}", model.name))
        };
        let endpoint = endpoint_of(path)?;
        let authorization = match &p.api_key {
            Some(k) => {
                // `Authorization: Bearer <key>`, or the key as it is in another header.
                let value = match (&p.auth_header, wire) {
                    (None, Wire::OpenAi) => format!("Bearer {}", k.expose()),
                    _ => k.expose().to_string(),
                };
                let mut v = HeaderValue::from_str(&value).map_err(|_| {
                    format!(
                        "the API key of model `{}` contains characters not allowed in a header",
                        model.name
                    )
                })?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let upstream = Upstream::new(&endpoint, p.timeouts.connect, p.response_headers.clone())
            .map_err(|e| format!("model `{}`: {e}", model.name))?;
        let head_prefix = |endpoint: &Uri| {
            [false, true].map(|stream| {
            let mut h = format!(
                "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\naccept: {}\r\nuser-agent: switchyard/{}\r\n",
                endpoint.path_and_query().map_or("/", |p| p.as_str()),
                upstream.authority(),
                if stream { "text/event-stream" } else { "application/json" },
                env!("CARGO_PKG_VERSION"),
            )
            .into_bytes();
            let auth_name = match wire {
                Wire::OpenAi => http::header::AUTHORIZATION,
                Wire::Anthropic { .. } => HeaderName::from_static("x-api-key"),
            };
            if let Some(auth) = &authorization {
                let name = p.auth_header.as_ref().unwrap_or(&auth_name);
                h.extend_from_slice(name.as_str().as_bytes());
                h.extend_from_slice(b": ");
                h.extend_from_slice(auth.as_bytes());
                h.extend_from_slice(b"\r\n");
            }
            h
        })
        };
        let mut native = Vec::new();
        match wire {
            Wire::Anthropic { .. } => {
                native.push((Dialect::Anthropic, head_prefix(&endpoint)));
                let count = endpoint_of("/v1/messages/count_tokens")?;
                native.push((Dialect::CountTokens, head_prefix(&count)));
            }
            Wire::OpenAi => {
                for (served, dialect, path) in [
                    (p.responses, Dialect::Responses, "/responses"),
                    (p.responses, Dialect::Compaction, "/responses/compact"),
                    (p.responses, Dialect::InputTokens, "/responses/input_tokens"),
                    (p.completions, Dialect::Completions, "/completions"),
                    (p.embeddings, Dialect::Embeddings, "/embeddings"),
                ] {
                    if served {
                        native.push((dialect, head_prefix(&endpoint_of(path)?)));
                    }
                }
            }
        }
        let head_prefix = head_prefix(&endpoint);
        Ok(OpenAiEngine {
            name: model.name.clone(),
            redactor: Redactor::new(p.api_key.as_ref()),
            upstream_model: p.upstream_model.clone(),
            timeouts: p.timeouts,
            retries: p.retries,
            breaker: p.breaker.map(CircuitBreaker::new),
            forward_headers: p.forward_headers.clone(),
            disabled: p.disabled_reason.clone(),
            upstream,
            head_prefix,
            retry_count: retries,
            wire,
            native,
            reasoning: p.reasoning,
        })
    }

    /// Sends the request, retrying connect errors, 429 and 5xx with backoff while the
    /// deadline allows, and returns the first successful response head.
    async fn call(
        &self,
        req: &EngineRequest<'_>,
        stream: bool,
        deadline: Instant,
    ) -> Result<upstream::Response, EngineError> {
        let (head, body) = self.request(req, stream)?;
        // A client that retries by itself (the OpenAI SDKs say so with `x-stainless-retry-count`)
        // gets one try per call for an error status: its retries take the place of ours, instead
        // of multiplying them. Connections that fail are still retried here.
        let client_retries = req.headers.contains_key(CLIENT_RETRY_COUNT);
        let mut retry = 0;
        loop {
            let error = match self.send(&head, &body).await {
                Ok(resp) if resp.status.is_success() => return Ok(resp),
                Ok(resp) => self.status_error(resp, deadline).await,
                Err(e) => e,
            };
            let by_client = client_retries && matches!(error, EngineError::Status { .. });
            if !error.is_retryable() || by_client || retry >= self.retries.max_retries {
                return Err(error);
            }
            let retry_after = match &error {
                EngineError::Status {
                    retry_after: Some(v),
                    ..
                } => crate::api::parse_retry_after(v, std::time::SystemTime::now()),
                _ => None,
            };
            let Some(wait) = resilience::backoff(&self.retries, retry, retry_after) else {
                return Err(error);
            };
            if Instant::now() + wait >= deadline {
                return Err(error);
            }
            self.retry_count.retried(error.kind());
            tracing::debug!("model `{}`: {error}; retrying in {wait:?}", self.name);
            tokio::time::sleep(wait).await;
            retry += 1;
        }
    }

    /// Lets a call through the circuit breaker (always, without one).
    fn admit(&self) -> Result<Option<Permit>, EngineError> {
        match &self.breaker {
            None => Ok(None),
            Some(b) => b
                .admit(std::time::Instant::now())
                .map(Some)
                .map_err(|r| EngineError::circuit_open(r.retry_in)),
        }
    }

    /// The dialect, among those the upstream serves, of a request that came in it.
    fn native<'a>(&self, req: &EngineRequest<'a>) -> Option<(Native<'a>, &[Vec<u8>; 2])> {
        let n = req.native?;
        let (_, prefix) = self.native.iter().find(|(d, _)| *d == n.dialect)?;
        Some((n, prefix))
    }

    /// The request as sent upstream: its head and its body. A request in a dialect the upstream
    /// serves goes as it came, with only `model` replaced (and, on a completions stream,
    /// `stream_options.include_usage` set).
    fn request(
        &self,
        req: &EngineRequest<'_>,
        stream: bool,
    ) -> Result<(Vec<u8>, Vec<u8>), EngineError> {
        let mut body = Vec::new();
        let native = self.native(req);
        let prefix = match native {
            Some((_, prefix)) => &prefix[usize::from(stream)],
            None => &self.head_prefix[usize::from(stream)],
        };
        let mut head = Vec::with_capacity(prefix.len() + 64);
        head.extend_from_slice(prefix);
        if let Some((n, _)) = native {
            let usage = stream && n.dialect == Dialect::Completions;
            body = native::with_model(n.body, &self.upstream_model, usage).map_err(|e| {
                EngineError::Invalid {
                    message: format!("the request body is not a JSON object: {e}"),
                    param: "body",
                }
            })?;
        }
        match self.wire {
            Wire::OpenAi if native.is_some() => {}
            Wire::OpenAi => {
                let omit: &[&str] = match self.reasoning {
                    Reasoning::None => &["reasoning_effort"],
                    _ => &[],
                };
                req.request
                    .write_upstream(&self.upstream_model, stream, omit, &mut body)
            }
            Wire::Anthropic { default_max_tokens } => {
                if native.is_none() {
                    let thinking = match self.reasoning {
                        Reasoning::Effort => Some(Thinking::Adaptive),
                        Reasoning::Budget => Some(Thinking::Budget),
                        Reasoning::None => None,
                    };
                    body = crate::api::anthropic_upstream::from_chat(
                        &req.request.body(),
                        &self.upstream_model,
                        stream,
                        default_max_tokens,
                        thinking,
                    );
                }
                // The client's API version and betas when it names them (an Anthropic client).
                let version = req
                    .headers
                    .get("anthropic-version")
                    .map_or(ANTHROPIC_VERSION.as_bytes(), |v| v.as_bytes());
                head.extend_from_slice(b"anthropic-version: ");
                head.extend_from_slice(version);
                head.extend_from_slice(b"\r\n");
                // Every `anthropic-beta` line the client sent (a list may come in several).
                for beta in req.headers.get_all("anthropic-beta") {
                    head.extend_from_slice(b"anthropic-beta: ");
                    head.extend_from_slice(beta.as_bytes());
                    head.extend_from_slice(b"\r\n");
                }
            }
        }
        for (name, value) in crate::api::headers::forwarded(req.headers, &self.forward_headers) {
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        // Writing into a Vec cannot fail.
        let _ = write!(head, "content-length: {}\r\n\r\n", body.len());
        Ok((head, body))
    }

    /// Sends the request and waits for the response head.
    async fn send(&self, head: &[u8], body: &[u8]) -> Result<upstream::Response, EngineError> {
        match timeout(self.timeouts.first_byte, self.upstream.send(head, body)).await {
            Err(_) => Err(EngineError::FirstByteTimeout(self.timeouts.first_byte)),
            Ok(Err(UpstreamError::Connect(e))) => Err(EngineError::Connect(e)),
            Ok(Err(UpstreamError::Transport(e))) => Err(EngineError::Transport(e)),
            Ok(Ok(resp)) => Ok(resp),
        }
    }

    async fn status_error(&self, resp: upstream::Response, deadline: Instant) -> EngineError {
        let status = resp.status;
        let retry_after = resp.retry_after;
        let headers = Box::new(resp.passed);
        let body = match timeout_at(deadline, read_limited(resp.body, 64 * 1024)).await {
            Ok(Ok(b)) => self.redactor.apply(b),
            _ => Bytes::new(),
        };
        // An Anthropic error body becomes OpenAI's shape, with its message and type.
        let body = match self.wire {
            Wire::Anthropic { .. } => match serde_json::from_slice::<serde_json::Value>(&body) {
                Ok(v) if v.pointer("/error/message").is_some() => Bytes::from(
                    serde_json::json!({"error": {"message": v.pointer("/error/message"),
                        "type": v.pointer("/error/type"), "param": null, "code": null}})
                    .to_string(),
                ),
                _ => body,
            },
            Wire::OpenAi => body,
        };
        EngineError::Status {
            status,
            body,
            retry_after,
            headers,
        }
    }
}

/// Replaces the provider key wherever an upstream echoes it (in any body that reaches the
/// client: answers, stream events, errors).
#[derive(Clone)]
struct Redactor(Option<Arc<(memchr::memmem::Finder<'static>, Secret)>>);

impl Redactor {
    fn new(key: Option<&Secret>) -> Redactor {
        Redactor(key.filter(|k| k.expose().len() >= 4).map(|k| {
            let finder = memchr::memmem::Finder::new(k.expose().as_bytes()).into_owned();
            Arc::new((finder, k.clone()))
        }))
    }

    fn apply(&self, body: Bytes) -> Bytes {
        let Some(inner) = &self.0 else {
            return body;
        };
        let (finder, key) = &**inner;
        if finder.find(&body).is_none() {
            return body;
        }
        let text = String::from_utf8_lossy(&body);
        Bytes::from(text.replace(key.expose(), "***"))
    }
}

/// Reads a body up to `limit` bytes.
async fn read_limited(mut body: upstream::Body, limit: usize) -> Result<Bytes, EngineError> {
    let mut buf = BytesMut::new();
    while let Some(data) = body.frame().await {
        let data = data.map_err(|e| EngineError::Transport(e.to_string()))?;
        if buf.len() + data.len() > limit {
            return Err(EngineError::Protocol(format!(
                "the response is larger than {limit} bytes"
            )));
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

#[derive(Deserialize)]
struct CompletionView<'a> {
    #[serde(default, deserialize_with = "crate::api::usage::reported")]
    usage: Option<Reported>,
    #[serde(default, borrow)]
    choices: Vec<ChoiceView<'a>>,
}

#[derive(Deserialize)]
struct ChoiceView<'a> {
    #[serde(default, borrow)]
    message: Option<MessageView<'a>>,
}

#[derive(Deserialize)]
struct MessageView<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<CallView<'a>>>,
    #[serde(default, borrow)]
    function_call: Option<FunctionView<'a>>,
}

impl MessageView<'_> {
    /// Bytes of generated output: the text and every tool call's arguments.
    fn output_bytes(&self) -> u64 {
        let text = self.content.as_ref().map_or(0, |c| c.len());
        let calls = self
            .tool_calls
            .iter()
            .flatten()
            .filter_map(|c| c.function.as_ref());
        let arguments: usize = calls
            .chain(&self.function_call)
            .filter_map(|f| f.arguments.as_ref().map(|a| a.len()))
            .sum();
        (text + arguments) as u64
    }
}

#[derive(Deserialize)]
struct CallView<'a> {
    #[serde(default, borrow)]
    function: Option<FunctionView<'a>>,
}

#[derive(Deserialize)]
struct FunctionView<'a> {
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
}

#[async_trait]
impl ChatEngine for OpenAiEngine {
    fn availability(&self) -> Result<(), String> {
        if let Some(reason) = &self.disabled {
            return Err(reason.clone());
        }
        match &self.breaker {
            Some(b) => match b.admit_check(std::time::Instant::now()) {
                Some(retry_in) => Err(EngineError::circuit_open(retry_in).to_string()),
                None => Ok(()),
            },
            None => Ok(()),
        }
    }

    fn circuit_retry_in(&self) -> Option<Duration> {
        self.breaker
            .as_ref()
            .and_then(|b| b.admit_check(std::time::Instant::now()))
    }

    fn circuit(&self) -> Option<CircuitState> {
        self.breaker
            .as_ref()
            .map(|b| b.state(std::time::Instant::now()))
    }

    fn serves(&self, dialect: Dialect) -> bool {
        self.native.iter().any(|(d, _)| *d == dialect)
    }

    async fn infer(&self, req: EngineRequest<'_>) -> Result<Completion, EngineError> {
        if let Some(reason) = &self.disabled {
            return Err(EngineError::Unavailable(reason.clone()));
        }
        let permit = self.admit()?;
        let result = self.complete(&req).await;
        if let Some(p) = permit {
            p.record(!result.as_ref().is_err_and(EngineError::is_upstream_failure));
        }
        result
    }

    async fn infer_stream(&self, req: EngineRequest<'_>) -> Result<Streaming, EngineError> {
        if let Some(reason) = &self.disabled {
            return Err(EngineError::Unavailable(reason.clone()));
        }
        let permit = self.admit()?;
        match self.open_stream(&req).await {
            Ok((mut chunks, headers)) => {
                chunks.permit = permit;
                let dialect = chunks.native.as_ref().map(|(d, _)| *d);
                Ok(Streaming {
                    chunks: Box::pin(chunks),
                    headers,
                    dialect,
                    prompt_tokens: None,
                })
            }
            Err(e) => {
                if let Some(p) = permit {
                    p.record(!e.is_upstream_failure());
                }
                Err(e)
            }
        }
    }
}

/// The chunks of a cloud stream, decoded from its SSE body as it arrives. The stream ends at
/// `[DONE]`; it ends with an error when the body breaks or is not SSE, when the deadline
/// passes, or when the body ends before a choice has finished. Its end, or its error, is
/// reported to the circuit breaker; dropped before either (the client went away), its permit
/// counts as neither.
struct SseChunks {
    /// For an Anthropic upstream: its events' translator, and the chunks translated but not
    /// yet handed out.
    anthropic: Option<crate::api::anthropic_upstream::StreamFromAnthropic>,
    queue: std::collections::VecDeque<Bytes>,
    /// For a stream in the client's dialect: the dialect and the reader of its events, which
    /// pass through as they came.
    native: Option<(Dialect, StreamReader)>,
    /// The usage counts one web search when it reports none ([`OpenAiEngine::searches_once`]).
    searches_once: bool,
    body: upstream::Body,
    decoder: sse::Decoder,
    redactor: Redactor,
    deadline: Instant,
    total: Duration,
    /// The deadline's timer, armed the first time the body has nothing ready.
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    permit: Option<Permit>,
    /// A choice has finished.
    finished: bool,
    /// The body has been read to its end.
    ended: bool,
    /// The stream has ended.
    done: bool,
}

/// What [`SseChunks::next_event`] found in what has been read.
enum Next {
    /// A whole event (not `[DONE]`).
    Event(sse::Event),
    /// More must be read first.
    Wait,
    /// The stream's next item instead: its end (`[DONE]`, or the body's end after a finished
    /// answer) or its failure (the body ended before the answer finished, or an event is too
    /// long).
    Item(Option<Result<Chunk, EngineError>>),
}

impl SseChunks {
    /// The next item from what has been read; `None` when more must be read first.
    fn decoded(&mut self) -> Option<Option<Result<Chunk, EngineError>>> {
        if self.native.is_some() {
            return self.decoded_native();
        }
        if self.anthropic.is_some() {
            return self.decoded_anthropic();
        }
        let event = match self.next_event() {
            Next::Event(e) => e,
            Next::Wait => return None,
            Next::Item(item) => return Some(item),
        };
        Some(Some(match parse_chunk(self.redactor.apply(event.data)) {
            Ok((mut chunk, finished)) => {
                self.finished |= finished;
                if let Some(u) = chunk.usage.as_mut().filter(|_| self.searches_once) {
                    u.web_searches.get_or_insert(1);
                }
                Ok(chunk)
            }
            Err(e) => self.fail(e),
        }))
    }

    /// The next whole event that is not `[DONE]`, else what the stream gives instead.
    fn next_event(&mut self) -> Next {
        let event = match self.decoder.next_event() {
            Ok(Some(e)) => e,
            Ok(None) if self.ended => match self.decoder.finish() {
                Some(e) => e,
                None if self.finished => return Next::Item(self.end()),
                None => {
                    return Next::Item(Some(self.fail(EngineError::Transport(
                        "the upstream closed the stream before it finished".into(),
                    ))))
                }
            },
            Ok(None) => return Next::Wait,
            Err(e) => return Next::Item(Some(self.fail(EngineError::Protocol(e.to_string())))),
        };
        if event.is_done() {
            return Next::Item(self.end());
        }
        Next::Event(event)
    }

    /// [`Self::decoded`] for a stream in the client's dialect: each event as it came (its data
    /// and name), read for its text and usage. The stream ends at `[DONE]` (completions) or with
    /// the body once the answer has finished (`message_stop`, `response.completed`); an `error`
    /// event ends it with [`EngineError::InStream`], carrying that event's data.
    fn decoded_native(&mut self) -> Option<Option<Result<Chunk, EngineError>>> {
        let event = match self.next_event() {
            Next::Event(e) => e,
            Next::Wait => return None,
            Next::Item(item) => return Some(item),
        };
        let data = self.redactor.apply(event.data);
        let (_, reader) = self.native.as_mut()?;
        let read = match reader.event(event.name.as_deref(), &data) {
            Ok(r) => r,
            Err(e) => {
                let e = EngineError::Protocol(format!("a stream event is not JSON: {e}"));
                return Some(Some(self.fail(e)));
            }
        };
        if read.error {
            return Some(Some(self.fail(EngineError::InStream(data))));
        }
        self.finished |= read.finished;
        Some(Some(Ok(Chunk {
            payload: data,
            event: event.name,
            text_bytes: read.text_bytes,
            usage: read.usage,
            usage_only: read.usage_only,
        })))
    }

    /// [`Self::decoded`] for an Anthropic upstream: its events translated into OpenAI chunks,
    /// handed out one at a time; the stream ends after `message_stop`'s usage chunk.
    fn decoded_anthropic(&mut self) -> Option<Option<Result<Chunk, EngineError>>> {
        use crate::api::anthropic_upstream::Translated;
        loop {
            if let Some(payload) = self.queue.pop_front() {
                let prompt = self.anthropic.as_mut().and_then(|t| t.take_prompt_usage());
                return Some(Some(parse_chunk(payload).map(|(mut c, _)| {
                    // The prompt's counts ride on the first chunk after `message_start`, so a
                    // stream cut before its usage chunk bills them.
                    if c.usage.is_none() {
                        c.usage = prompt;
                    }
                    c
                })));
            }
            if self.finished {
                return Some(self.end());
            }
            let event = match self.decoder.next_event() {
                Ok(Some(e)) => e,
                Ok(None) if self.ended => match self.decoder.finish() {
                    Some(e) => e,
                    None => {
                        return Some(Some(self.fail(EngineError::Transport(
                            "the upstream closed the stream before it finished".into(),
                        ))))
                    }
                },
                Ok(None) => return None,
                Err(e) => return Some(Some(self.fail(EngineError::Protocol(e.to_string())))),
            };
            let data = self.redactor.apply(event.data);
            let translator = self.anthropic.as_mut()?;
            match translator.event(&data) {
                Translated::Chunks(c) => self.queue.extend(c),
                Translated::Done(c) => {
                    self.queue.extend(c);
                    self.finished = true;
                }
                Translated::Error(message) => {
                    let payload =
                        serde_json::json!({"error": {"message": message, "type": "server_error"}});
                    return Some(Some(
                        self.fail(EngineError::InStream(Bytes::from(payload.to_string()))),
                    ));
                }
            }
        }
    }

    fn end(&mut self) -> Option<Result<Chunk, EngineError>> {
        self.done = true;
        if let Some(p) = self.permit.take() {
            p.record(true);
        }
        None
    }

    fn fail(&mut self, e: EngineError) -> Result<Chunk, EngineError> {
        self.done = true;
        if let Some(p) = self.permit.take() {
            p.record(!e.is_upstream_failure());
        }
        Err(e)
    }
}

impl futures_util::Stream for SseChunks {
    type Item = Result<Chunk, EngineError>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::future::Future as _;
        use std::task::Poll;
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(item) = this.decoded() {
                return Poll::Ready(item);
            }
            match this.body.poll_frame(cx) {
                Poll::Ready(Some(Ok(data))) => this.decoder.push_bytes(data),
                Poll::Ready(None) => this.ended = true,
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Some(this.fail(EngineError::Transport(e.to_string()))))
                }
                Poll::Pending => {
                    let deadline = this.deadline;
                    let timer = this
                        .timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let e = EngineError::TotalTimeout(this.total);
                    return Poll::Ready(Some(this.fail(e)));
                }
            }
        }
    }
}

impl OpenAiEngine {
    async fn complete(&self, req: &EngineRequest<'_>) -> Result<Completion, EngineError> {
        let deadline = Instant::now() + self.timeouts.total;
        let resp = self.call(req, false, deadline).await?;
        // The upstream took the call: a failure from here on is billed, at least the prompt.
        self.read_completion(req, resp, deadline)
            .await
            .map_err(|e| e.after_head(self.prompt_usage(req)))
    }

    /// The answer of a call whose `200` head came: its body read in full, checked and counted.
    async fn read_completion(
        &self,
        req: &EngineRequest<'_>,
        resp: upstream::Response,
        deadline: Instant,
    ) -> Result<Completion, EngineError> {
        let headers = resp.passed;
        let body = timeout_at(deadline, read_limited(resp.body, MAX_RESPONSE_BYTES))
            .await
            .map_err(|_| EngineError::TotalTimeout(self.timeouts.total))??;
        let body = self.redactor.apply(body);
        if let Some((n, _)) = self.native(req) {
            let (reported, text) = native::answer(n.dialect, &body)
                .map_err(|e| EngineError::Protocol(format!("the response is not JSON: {e}")))?;
            let (usage, usage_estimated) = reported
                .unwrap_or_default()
                .resolve(self.prompt_estimate(req), estimate_text_tokens(text));
            return Ok(Completion {
                body,
                usage,
                usage_estimated,
                headers,
                dialect: Some(n.dialect),
            });
        }
        let body = match self.wire {
            Wire::OpenAi => body,
            Wire::Anthropic { .. } => {
                crate::api::anthropic_upstream::to_completion(&body, &self.upstream_model)
                    .map_err(EngineError::Protocol)?
            }
        };
        let view: CompletionView = serde_json::from_slice(&body).map_err(|e| {
            EngineError::Protocol(format!("the response is not a chat completion: {e}"))
        })?;
        // What the upstream did not count (or counted unreadably) is estimated: the prompt from
        // the request, the answer from its text.
        let mut reported = view.usage.unwrap_or_default();
        if self.searches_once(req) {
            reported.web_searches.get_or_insert(1);
        }
        let text: u64 = view
            .choices
            .iter()
            .filter_map(|c| c.message.as_ref().map(MessageView::output_bytes))
            .sum();
        let (usage, usage_estimated) =
            reported.resolve(self.prompt_estimate(req), estimate_text_tokens(text));
        Ok(Completion {
            body,
            usage,
            usage_estimated,
            headers,
            dialect: None,
        })
    }

    /// What a call that failed after its head is billed: the prompt estimate, no output.
    fn prompt_usage(&self, req: &EngineRequest<'_>) -> Usage {
        Usage {
            prompt_tokens: self.prompt_estimate(req),
            ..Usage::default()
        }
    }

    /// The gateway's estimate of the request's prompt tokens, for when the upstream counts none.
    fn prompt_estimate(&self, req: &EngineRequest<'_>) -> u64 {
        crate::features::estimate_request_tokens(req.request)
    }

    /// Whether an answer counts one web search when the upstream reports none: a chat request
    /// with `web_search_options` to an OpenAI-compatible upstream. OpenAI's search models
    /// (`gpt-4o-search-preview`, ...) search before every answer and bill each request as one
    /// web search call, but their usage has no count of searches; an upstream that reports one
    /// (`usage.server_tool_use.web_search_requests`) is taken at its word.
    fn searches_once(&self, req: &EngineRequest<'_>) -> bool {
        matches!(self.wire, Wire::OpenAi)
            && self.native(req).is_none()
            && req.request.needs.has(Capability::WebSearch)
    }

    async fn open_stream(
        &self,
        req: &EngineRequest<'_>,
    ) -> Result<(SseChunks, http::HeaderMap), EngineError> {
        let deadline = Instant::now() + self.timeouts.total;
        let resp = self.call(req, true, deadline).await?;
        let is_sse = resp
            .content_type
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        if !is_sse {
            // It answered (the provider bills that), only not as a stream.
            return Err(EngineError::Protocol(
                "the upstream did not answer the stream request with text/event-stream".into(),
            )
            .after_head(self.prompt_usage(req)));
        }
        let native = self
            .native(req)
            .map(|(n, _)| (n.dialect, StreamReader::new(n.dialect)));
        let chunks = SseChunks {
            anthropic: match self.wire {
                Wire::Anthropic { .. } if native.is_some() => None,
                Wire::Anthropic { .. } => Some(
                    crate::api::anthropic_upstream::StreamFromAnthropic::new(&self.upstream_model),
                ),
                Wire::OpenAi => None,
            },
            queue: std::collections::VecDeque::new(),
            searches_once: self.searches_once(req),
            native,
            body: resp.body,
            decoder: sse::Decoder::default(),
            redactor: self.redactor.clone(),
            deadline,
            total: self.timeouts.total,
            timer: None,
            permit: None,
            finished: false,
            ended: false,
            done: false,
        };
        Ok((chunks, resp.passed))
    }
}

/// Reads what the gateway needs from one chunk; the bool says whether it finished a choice.
/// Events are many and the gateway reads few of their fields: a plain delta (no usage, no
/// error) is read by [`quick_delta`]; any other event is skimmed whole by [`read_chunk`].
fn parse_chunk(payload: Bytes) -> Result<(Chunk, bool), EngineError> {
    match quick_delta(&payload) {
        Some((text_bytes, finished)) => Ok((
            Chunk {
                payload,
                event: None,
                text_bytes,
                usage: None,
                usage_only: false,
            },
            finished,
        )),
        None => read_chunk(payload),
    }
}

/// Substring finders for the members [`quick_delta`] looks for.
struct DeltaKeys {
    content: memchr::memmem::Finder<'static>,
    arguments: memchr::memmem::Finder<'static>,
    finish_reason: memchr::memmem::Finder<'static>,
    usage: memchr::memmem::Finder<'static>,
    error: memchr::memmem::Finder<'static>,
}

static DELTA_KEYS: std::sync::LazyLock<DeltaKeys> = std::sync::LazyLock::new(|| DeltaKeys {
    content: memchr::memmem::Finder::new(b"\"content\""),
    arguments: memchr::memmem::Finder::new(b"\"arguments\""),
    finish_reason: memchr::memmem::Finder::new(b"\"finish_reason\""),
    usage: memchr::memmem::Finder::new(b"\"usage\""),
    error: memchr::memmem::Finder::new(b"\"error\""),
});

/// The text bytes of a plain delta event and whether it finishes a choice, read by substring
/// search instead of a walk of the whole event: `None` when the event is not a JSON object,
/// or has a non-null `usage` or `error` anywhere, which [`read_chunk`] then reads properly.
/// It does not check the event for well-formedness; the client's parser still does.
fn quick_delta(payload: &[u8]) -> Option<(u64, bool)> {
    let doc = std::str::from_utf8(payload).ok()?;
    let trimmed = doc.trim_ascii();
    if !(trimmed.starts_with('{') && trimmed.ends_with('}')) {
        return None;
    }
    let keys = &*DELTA_KEYS;
    let mut other = false;
    for key in [&keys.usage, &keys.error] {
        skim::each_member_value(doc, key, |r| {
            other |= !r.null()?;
            Ok(())
        })
        .ok()?;
    }
    if other {
        return None;
    }
    let (mut text_bytes, mut finished) = (0u64, false);
    // Text and tool-call arguments are both generated output.
    for key in [&keys.content, &keys.arguments] {
        skim::each_member_value(doc, key, |r| {
            if r.peek()? == Kind::String {
                text_bytes += r.string()?.len() as u64;
            }
            Ok(())
        })
        .ok()?;
    }
    skim::each_member_value(doc, &keys.finish_reason, |r| {
        finished |= r.peek()? != Kind::Null;
        Ok(())
    })
    .ok()?;
    Some((text_bytes, finished))
}

/// [`parse_chunk`] for any event: skimmed whole (checked for well-formedness, nothing built).
fn read_chunk(payload: Bytes) -> Result<(Chunk, bool), EngineError> {
    let not_json = |e: SkimError| EngineError::Protocol(format!("a stream event is not JSON: {e}"));
    let mut r = Reader::new(&payload).map_err(not_json)?;
    let (mut text_bytes, mut finished, mut choices, mut usage, mut error) =
        (0, false, 0, None, false);
    r.object(|r, key| {
        if key.is("choices") {
            if r.null()? {
                return Ok(());
            }
            return r.array(|r| {
                choices += 1;
                r.object(|r, key| {
                    if key.is("delta") {
                        if r.null()? {
                            return Ok(());
                        }
                        return r.object(|r, key| {
                            if key.is("content") && r.peek()? == Kind::String {
                                text_bytes += r.string()?.len() as u64;
                                return Ok(());
                            }
                            if key.is("function_call") && r.peek()? == Kind::Object {
                                return r.object(|r, key| {
                                    if key.is("arguments") && r.peek()? == Kind::String {
                                        text_bytes += r.string()?.len() as u64;
                                        return Ok(());
                                    }
                                    r.skip()
                                });
                            }
                            if key.is("tool_calls") && r.peek()? == Kind::Array {
                                return r.array(|r| {
                                    if r.peek()? != Kind::Object {
                                        return r.skip();
                                    }
                                    r.object(|r, key| {
                                        if key.is("function") && r.peek()? == Kind::Object {
                                            return r.object(|r, key| {
                                                if key.is("arguments") && r.peek()? == Kind::String
                                                {
                                                    text_bytes += r.string()?.len() as u64;
                                                    return Ok(());
                                                }
                                                r.skip()
                                            });
                                        }
                                        r.skip()
                                    })
                                });
                            }
                            r.skip()
                        });
                    }
                    if key.is("finish_reason") && r.peek()? != Kind::Null {
                        finished = true;
                    }
                    r.skip()
                })
            });
        }
        if key.is("usage") {
            usage = Reported::from_json(r.raw()?);
            return Ok(());
        }
        if key.is("error") && r.peek()? != Kind::Null {
            error = true;
        }
        r.skip()
    })
    .and_then(|()| r.end())
    .map_err(not_json)?;
    if error {
        return Err(EngineError::InStream(payload));
    }
    let usage_only = choices == 0 && usage.is_some();
    Ok((
        Chunk {
            payload,
            event: None,
            text_bytes,
            usage,
            usage_only,
        },
        finished || usage_only,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quick_read_of_a_delta_agrees_with_the_full_one() {
        let events: &[&[u8]] = &[
            br#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}"#,
            br#"{"choices":[{"index":0,"delta":{"content":"h\u00e9 \"quoted\" text"},"finish_reason":null}],"usage":null}"#,
            br#" { "choices" : [ { "delta" : { "content" : "spaced" } , "finish_reason" : "length" } ] } "#,
            br#"{"choices":[{"delta":{"content":"a"},"finish_reason":null},{"delta":{"content":"bc"},"finish_reason":"stop"}]}"#,
            br#"{"choices":[{"delta":{"content":null,"tool_calls":[{"function":{"arguments":"{\"content\":\"x\"}"}}]}}]}"#,
            br#"{"choices":[{"delta":{},"logprobs":{"content":[{"token":"a"}]},"finish_reason":"stop"}]}"#,
            br#"{"choices":[{"delta":{"function_call":{"name":"f","arguments":"{\"a\":1}"}},"finish_reason":null}]}"#,
        ];
        for e in events {
            let quick = quick_delta(e).expect("a plain delta");
            let (full, fin) = read_chunk(Bytes::from_static(e)).unwrap();
            assert_eq!(
                quick,
                (full.text_bytes, fin),
                "{}",
                String::from_utf8_lossy(e)
            );
        }
        // Tool-call arguments are generated output, as text is.
        assert_eq!(
            quick_delta(events[4]).map(|(n, _)| n),
            Some(r#"{"content":"x"}"#.len() as u64)
        );
        // Usage, errors and anything not an object go the full way.
        for e in [
            &br#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#[..],
            br#"{"error":{"message":"x"}}"#,
            br#"[{"choices":[]}]"#,
        ] {
            assert_eq!(quick_delta(e), None, "{}", String::from_utf8_lossy(e));
        }
    }

    #[test]
    fn a_complete_answers_output_counts_its_tool_call_arguments() {
        let body = br#"{"choices":[{"message":{"content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"city\":\"Paris\"}"}}]}},{"message":{"content":"hi","function_call":{"name":"g","arguments":"{}"}}}]}"#;
        let view: CompletionView = serde_json::from_slice(body).expect("a completion");
        let bytes: Vec<u64> = view
            .choices
            .iter()
            .map(|c| c.message.as_ref().map_or(0, MessageView::output_bytes))
            .collect();
        assert_eq!(bytes, [16, 4]);
    }

    #[test]
    fn chunks_report_text_usage_and_errors() {
        let (c, fin) = parse_chunk(Bytes::from_static(
            br#"{"choices":[{"delta":{"content":"h\u00e9"},"finish_reason":null}]}"#,
        ))
        .unwrap();
        assert_eq!((c.text_bytes, c.usage_only, fin), (3, false, false));
        let (c, fin) = parse_chunk(Bytes::from_static(
            br#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
        ))
        .unwrap();
        assert_eq!(
            c.usage,
            Some(Reported {
                prompt_tokens: Some(3),
                completion_tokens: Some(4),
                cached_tokens: None,
                cache_write_tokens: None,
                web_searches: None,
            })
        );
        assert!(c.usage_only && fin);
        // A usage chunk with a count that is null or not an integer still ends the stream well:
        // the count is left for the settlement to estimate.
        let (c, fin) = parse_chunk(Bytes::from_static(
            br#"{"choices":[],"usage":{"prompt_tokens":null,"completion_tokens":"4"}}"#,
        ))
        .unwrap();
        assert_eq!(c.usage, Some(Reported::default()));
        assert!(c.usage_only && fin);
        assert!(matches!(
            parse_chunk(Bytes::from_static(br#"{"error":{"message":"x"}}"#)),
            Err(EngineError::InStream(_))
        ));
        assert!(matches!(
            parse_chunk(Bytes::from_static(b"nope")),
            Err(EngineError::Protocol(_))
        ));
        // Two choices, the first finished; null fields read as absent; the reader keeps its
        // place after every value it decides on.
        let (c, fin) = parse_chunk(Bytes::from_static(
            br#"{"choices":[{"index":0,"delta":{"content":"ab"},"finish_reason":"stop"},{"index":1,"delta":null,"finish_reason":null},{"delta":{"role":"assistant","content":null}}],"error":null,"usage":null}"#,
        ))
        .unwrap();
        assert_eq!(
            (c.text_bytes, c.usage, c.usage_only, fin),
            (2, None, false, true)
        );
        for bad in [
            &br#"{"choices":[{"delta":{"content":"x"}}],}"#[..],
            br#"{"choices":[{"delta":{"content":"x"}}]} x"#,
            br#"{"choices":{}}"#,
            b"[1]",
        ] {
            assert!(
                matches!(
                    read_chunk(Bytes::from_static(bad)),
                    Err(EngineError::Protocol(_))
                ),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
