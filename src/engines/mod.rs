//! Chat engines: one trait for the on-box model, the on-box sentence encoder and the cloud
//! providers, so that fallbacks and accounting do not care which one answered.

pub mod encoder;
mod framing;
pub mod openai;
pub mod resilience;
mod upstream;

use crate::api::{ApiError, ChatRequest, Dialect};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use http::{HeaderMap, HeaderValue, StatusCode};
use std::time::Duration;

pub use crate::api::{Reported, Usage};

/// A finished non-streaming answer.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The `chat.completion` JSON, as sent to the client.
    pub body: Bytes,
    /// Token counts (from the engine or estimated).
    pub usage: Usage,
    /// Whether `usage` is an estimate because the engine reported none.
    pub usage_estimated: bool,
    /// Upstream response headers that go back to the client (empty for the on-box model).
    pub headers: HeaderMap,
    /// `None`: `body` is a `chat.completion`. Else the client's dialect, in which the upstream
    /// answered a request passed to it as it came ([`EngineRequest::native`]).
    pub dialect: Option<Dialect>,
}

/// One `chat.completion.chunk` of a stream, or one event of a stream in the client's dialect.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// The chunk JSON (the text after `data: `).
    pub payload: Bytes,
    /// The event's name (its `event:` line), in dialects that name their events.
    pub event: Option<Bytes>,
    /// Bytes of generated text in this chunk, tool-call arguments included.
    pub text_bytes: u64,
    /// Usage, when this chunk carries it (counts the upstream left out or garbled are `None`).
    pub usage: Option<Reported>,
    /// The chunk carries only usage (no choices): sent only to clients that asked for it.
    pub usage_only: bool,
}

/// A stream of chunks; it ends with `None` after the last chunk, or with an error.
pub type ChunkStream = BoxStream<'static, Result<Chunk, EngineError>>;

/// A stream whose head is certain: its chunks, and the upstream response headers that go back
/// to the client with the stream's head (empty for the on-box model).
pub struct Streaming {
    pub chunks: ChunkStream,
    pub headers: HeaderMap,
    /// `None`: the chunks are `chat.completion.chunk`s. Else the client's dialect, whose events
    /// they are ([`Completion::dialect`]).
    pub dialect: Option<Dialect>,
    /// The prompt's tokens, where the engine counted them before its first chunk (the on-box
    /// engine tokenizes the prompt to queue it); `None` for a cloud stream, whose counts come
    /// with its last chunk.
    pub prompt_tokens: Option<u64>,
}

impl Streaming {
    /// A stream with no headers to pass back.
    pub fn new(chunks: ChunkStream) -> Streaming {
        Streaming {
            chunks,
            headers: HeaderMap::new(),
            dialect: None,
            prompt_tokens: None,
        }
    }
}

/// What an engine needs to answer a request.
#[derive(Debug, Clone, Copy)]
pub struct EngineRequest<'a> {
    pub request: &'a ChatRequest,
    /// The client's request headers (a cloud engine forwards its allow-list of them).
    pub headers: &'a http::HeaderMap,
    /// The request as the client sent it, when it came in another dialect: an engine whose
    /// upstream speaks that dialect sends it on as it is (only `model` replaced) and answers in
    /// it; any other engine answers `request`, the translation.
    pub native: Option<Native<'a>>,
    /// The request as a cloud model gets it, when the route redacts private data from it.
    pub redacted: Option<&'a Redacted>,
}

impl<'a> EngineRequest<'a> {
    /// The request as an engine of the given kind gets it: a cloud engine the redacted one,
    /// when there is one; an on-box engine the request as sent.
    pub fn for_engine(self, cloud: bool) -> EngineRequest<'a> {
        match self.redacted.filter(|_| cloud) {
            Some(r) => EngineRequest {
                request: &r.request,
                headers: self.headers,
                native: match (self.native, &r.native) {
                    (Some(n), Some(body)) => Some(Native {
                        dialect: n.dialect,
                        body,
                    }),
                    _ => None,
                },
                redacted: None,
            },
            None => self,
        }
    }
}

/// A request with its private data replaced by placeholders ([`crate::pii`]), for cloud models.
#[derive(Debug, Clone)]
pub struct Redacted {
    /// The parsed request, redacted.
    pub request: ChatRequest,
    /// The body in the client's dialect, redacted, when the request came in another dialect.
    pub native: Option<Vec<u8>>,
}

/// A request body in the dialect the client spoke.
#[derive(Debug, Clone, Copy)]
pub struct Native<'a> {
    pub dialect: Dialect,
    pub body: &'a [u8],
}

/// Why an engine could not answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// The engine is disabled or not loaded.
    #[error("{0}")]
    Unavailable(String),
    /// The model's circuit breaker is open after too many failures.
    #[error("{reason}")]
    CircuitOpen {
        reason: String,
        /// Until the breaker lets a trial call through.
        retry_after_secs: u64,
    },
    /// The upstream could not be reached.
    #[error("cannot connect to the upstream: {0}")]
    Connect(String),
    /// No response head within the first-byte timeout.
    #[error("the upstream sent no response within {0:?}")]
    FirstByteTimeout(Duration),
    /// The whole response took longer than the total timeout.
    #[error("the upstream response took longer than {0:?}")]
    TotalTimeout(Duration),
    /// A stream sent nothing for longer than the idle limit.
    #[error("the stream sent nothing for {0:?}")]
    StreamIdle(Duration),
    /// The upstream answered with an error status.
    #[error("the upstream answered with status {status}")]
    Status {
        status: StatusCode,
        body: Bytes,
        retry_after: Option<HeaderValue>,
        /// Upstream response headers that go back to the client.
        headers: Box<HeaderMap>,
    },
    /// The connection failed while the response was being read.
    #[error("the upstream connection failed: {0}")]
    Transport(String),
    /// The upstream sent something that is not the OpenAI wire format.
    #[error("the upstream sent an invalid response: {0}")]
    Protocol(String),
    /// The upstream sent an error object inside the stream.
    #[error("the upstream reported an error in the stream")]
    InStream(Bytes),
    /// The engine's queue is full: another model may take the request, else retry later.
    #[error("the model is busy: {queued} requests are already waiting")]
    Overloaded {
        queued: usize,
        retry_after_secs: u64,
    },
    /// The prompt does not fit the model's context (a larger model may take it).
    #[error("{0}")]
    ContextLength(String),
    /// The request asks this engine for something it cannot do (the client's mistake).
    #[error("{message}")]
    Invalid {
        message: String,
        param: &'static str,
    },
    /// The engine failed while computing the answer.
    #[error("the model failed: {0}")]
    Failed(String),
    /// A cloud call failed after the upstream accepted it (a `200` head, then a body that broke,
    /// timed out or could not be read): the provider bills it, so the settlement does too, with
    /// `billed` (the prompt estimate; what was generated is unknown). Everything else about
    /// the failure is `error`'s.
    #[error("{error}")]
    AfterHead {
        error: Box<EngineError>,
        billed: crate::api::Usage,
    },
}

impl EngineError {
    /// Label for `switchyard_upstream_errors_total{kind}`.
    pub fn kind(&self) -> &'static str {
        match self.cause() {
            EngineError::Unavailable(_) => "unavailable",
            EngineError::CircuitOpen { .. } => "circuit_open",
            EngineError::Connect(_) => "connect",
            EngineError::FirstByteTimeout(_) => "first_byte_timeout",
            EngineError::TotalTimeout(_) => "total_timeout",
            EngineError::StreamIdle(_) => "stream_idle",
            EngineError::Status { status, .. } if status.as_u16() == 429 => "status_429",
            EngineError::Status { status, .. } if status.is_server_error() => "status_5xx",
            EngineError::Status { .. } => "status_4xx",
            EngineError::Transport(_) => "transport",
            EngineError::Protocol(_) => "protocol",
            EngineError::InStream(_) => "in_stream",
            EngineError::Overloaded { .. } => "overloaded",
            EngineError::ContextLength(_) => "context_length",
            EngineError::Invalid { .. } => "invalid_request",
            EngineError::Failed(_) => "failed",
            EngineError::AfterHead { error, .. } => error.kind(),
        }
    }

    /// Whether the next model of the route should be tried (only failures before the
    /// first byte, and never for the client's own mistakes).
    pub fn allows_fallback(&self) -> bool {
        match self.cause() {
            EngineError::Status { status, .. } => {
                status.is_server_error() || status.as_u16() == 429
            }
            EngineError::Invalid { .. } => false,
            _ => true,
        }
    }

    /// The failure itself: `error` of [`EngineError::AfterHead`], else `self`.
    pub fn cause(&self) -> &EngineError {
        match self {
            EngineError::AfterHead { error, .. } => error.cause(),
            e => e,
        }
    }

    /// What the provider bills for this failed call, when it bills one
    /// ([`EngineError::AfterHead`]).
    pub fn billed(&self) -> Option<crate::api::Usage> {
        match self {
            EngineError::AfterHead { billed, .. } => Some(*billed),
            _ => None,
        }
    }

    /// This failure, billed `usage` by the provider (it came after the upstream's `200` head).
    pub fn after_head(self, usage: crate::api::Usage) -> EngineError {
        match self {
            e @ EngineError::AfterHead { .. } => e,
            e => EngineError::AfterHead {
                error: Box::new(e),
                billed: usage,
            },
        }
    }

    /// A call the circuit breaker refused; the next trial call may go in `retry_in`.
    pub fn circuit_open(retry_in: Duration) -> EngineError {
        let secs = crate::api::retry_after_secs(retry_in);
        EngineError::CircuitOpen {
            reason: format!(
                "its circuit breaker is open after repeated upstream failures (next trial call in {secs} s)"
            ),
            retry_after_secs: secs,
        }
    }

    /// Whether the same call may be tried again: the upstream could not be reached, or said
    /// 429 or 5xx (nothing reached the client yet).
    pub fn is_retryable(&self) -> bool {
        match self.cause() {
            EngineError::Connect(_) => true,
            EngineError::Status { status, .. } => {
                status.is_server_error() || status.as_u16() == 429
            }
            _ => false,
        }
    }

    /// Whether this failure counts against the upstream's health (its circuit breaker); the
    /// client's own mistakes and refusals on this side do not.
    pub fn is_upstream_failure(&self) -> bool {
        match self.cause() {
            EngineError::Status { .. } => self.is_retryable(),
            EngineError::Connect(_)
            | EngineError::FirstByteTimeout(_)
            | EngineError::TotalTimeout(_)
            | EngineError::StreamIdle(_)
            | EngineError::Transport(_)
            | EngineError::Protocol(_)
            | EngineError::InStream(_) => true,
            _ => false,
        }
    }

    /// The error the client sees for this failure of `model`.
    pub fn to_api(&self, model: &str) -> ApiError {
        match self.cause() {
            EngineError::Unavailable(reason) => ApiError::Unavailable(format!("model `{model}` is unavailable: {reason}")),
            EngineError::CircuitOpen { reason, retry_after_secs } => ApiError::CircuitOpen {
                message: format!("model `{model}` is unavailable: {reason}"),
                retry_after_secs: *retry_after_secs,
            },
            EngineError::FirstByteTimeout(_)
            | EngineError::TotalTimeout(_)
            | EngineError::StreamIdle(_) => {
                ApiError::GatewayTimeout(format!("model `{model}`: {self}"))
            }
            EngineError::Status { status, .. } if matches!(status.as_u16(), 401 | 403) => ApiError::ProviderRejected {
                message: format!("model `{model}`: the upstream rejected this gateway's provider credentials (status {status})"),
                upstream: *status,
            },
            EngineError::Status { status, body, retry_after, headers } => ApiError::Upstream {
                status: crate::api::client_status(*status),
                upstream: *status,
                body: body.clone(),
                retry_after: retry_after.clone(),
                headers: headers.clone(),
                message: format!("model `{model}`: the upstream answered with status {status}"),
            },
            EngineError::Overloaded { retry_after_secs, .. } => ApiError::Overloaded {
                message: format!("model `{model}`: {self}; retry later"),
                retry_after_secs: *retry_after_secs,
            },
            EngineError::ContextLength(m) => ApiError::BadRequest {
                message: format!("model `{model}`: {m}"),
                param: Some("messages".into()),
                code: Some("context_length_exceeded"),
            },
            EngineError::Invalid { message, param } => ApiError::BadRequest {
                message: format!("model `{model}`: {message}"),
                param: Some((*param).into()),
                code: None,
            },
            EngineError::Failed(_) => ApiError::Internal,
            _ => ApiError::BadGateway(format!("model `{model}`: {self}")),
        }
    }
}

/// A model that answers chat requests.
#[async_trait]
pub trait ChatEngine: Send + Sync {
    /// `Ok` when the engine can take requests, else why not.
    fn availability(&self) -> Result<(), String>;

    /// The state of the engine's circuit breaker, when it has one.
    fn circuit(&self) -> Option<resilience::CircuitState> {
        None
    }

    /// When the circuit breaker refuses calls now: how long until it lets one through.
    fn circuit_retry_in(&self) -> Option<Duration> {
        None
    }

    /// What the engine reports it can do, when it can tell (an on-box model: what its engine
    /// and its chat template support). Routing narrows the policy's capabilities of the model
    /// to this; `None` leaves them as the policy says (cloud models).
    fn capabilities(&self) -> Option<crate::api::Capabilities> {
        None
    }

    /// Whether the upstream speaks `dialect` itself: a request passed on in it
    /// ([`EngineRequest::native`]) goes as it came (a cloud model's declared APIs).
    fn serves(&self, _dialect: Dialect) -> bool {
        false
    }

    /// Answers a request in one piece.
    async fn infer(&self, req: EngineRequest<'_>) -> Result<Completion, EngineError>;

    /// Answers a request as a stream. Returns once the first byte of the answer is
    /// certain (for a cloud model: the response head), so that failures before it can fall back.
    async fn infer_stream(&self, req: EngineRequest<'_>) -> Result<Streaming, EngineError>;

    /// The prompt tokens of `req` exactly as this engine would count them (its tokenizer and
    /// chat template), when it can tell without a model call; `None` otherwise (cloud models:
    /// their tokenizers are the provider's).
    fn count_prompt_tokens(&self, _req: &crate::api::ChatRequest) -> Option<u64> {
        None
    }
}
