//! A validated policy, ready for [`decide`](super::decide) and for building engines.

use super::conditions::Conditions;
use super::schema::ModelKind;
use indexmap::IndexMap;
use std::fmt;
use std::time::Duration;

/// A validated routing policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Models by name, in declaration order.
    pub models: IndexMap<String, Model>,
    /// The model savings are measured against.
    pub reference_model: Option<String>,
    /// The model that `model: "local"` means (the first `local` model).
    pub local_model: Option<String>,
    pub tenants: Vec<Tenant>,
    pub rules: Vec<Rule>,
    pub default: Route,
    /// How to run the request classifier.
    pub classifier: ClassifierSettings,
    /// The request log, when enabled.
    pub recording: Option<RecordingSettings>,
    /// Spending limits, when set.
    pub budgets: Option<BudgetSettings>,
    /// Limits on what a client may send and hold open.
    pub limits: Limits,
    /// Per-tenant rate limits, when set.
    pub rate_limits: Option<RateLimitSettings>,
    /// Where budget, rate-limit and sticky-conversation state lives.
    pub state: StateSettings,
    /// How long a sticky conversation stays pinned after its last turn.
    pub sticky_ttl: Duration,
}

/// Where budget and rate-limit state lives (`state:`).
#[derive(Debug, Clone, PartialEq)]
pub struct StateSettings {
    /// `None`: this process's memory; else the Redis URL (it may hold a password).
    pub redis_url: Option<Secret>,
    /// Longest one store call may take.
    pub timeout: Duration,
    pub on_unavailable: super::schema::OnUnavailable,
    /// Prefix of every Redis key.
    pub key_prefix: String,
    /// Longest an unsettled reservation holds budget.
    pub reservation_ttl: Duration,
}

impl Default for StateSettings {
    fn default() -> Self {
        StateSettings {
            redis_url: None,
            timeout: Duration::from_millis(50),
            on_unavailable: super::schema::OnUnavailable::Reject,
            key_prefix: "switchyard:".to_string(),
            reservation_ttl: Duration::from_secs(600),
        }
    }
}

/// Limits on what a client controls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// Most messages in one request.
    pub max_messages: u64,
    /// Largest text of one message, its tool calls' JSON included, in bytes.
    pub max_message_bytes: u64,
    /// Largest `max_tokens` a client may ask for.
    pub max_tokens: u64,
    /// Largest total size of the request headers, in bytes.
    pub max_header_bytes: usize,
    /// Longest a client may take to send the request headers.
    pub header_timeout: Duration,
    /// Longest a client may take to send the request body.
    pub body_timeout: Duration,
    /// Longest a streamed cloud answer may go without an event.
    pub stream_idle_timeout: Duration,
    /// Most client connections open at once.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 4 * 1024 * 1024,
            max_messages: 1024,
            max_message_bytes: 1024 * 1024,
            max_tokens: 32_768,
            max_header_bytes: 16 * 1024,
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            stream_idle_timeout: Duration::from_secs(120),
            max_connections: 1024,
        }
    }
}

/// Requests and tokens per minute (`None`: no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rate {
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
}

/// Per-tenant rate limits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateLimitSettings {
    /// For every tenant without its own entry (and the anonymous caller).
    pub default: Option<Rate>,
    pub tenants: Vec<(String, Rate)>,
}

impl RateLimitSettings {
    /// The rate that applies to `tenant`.
    pub fn rate_of(&self, tenant: &str) -> Option<Rate> {
        self.tenants
            .iter()
            .find(|(t, _)| t == tenant)
            .map(|(_, r)| *r)
            .or(self.default)
    }
}

/// Spending limits on cloud models.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetSettings {
    pub global: Option<super::schema::BudgetLimits>,
    pub tenants: Vec<(String, super::schema::BudgetLimits)>,
    pub on_exhausted: super::schema::OnExhausted,
}

/// The request log's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordingSettings {
    pub path: std::path::PathBuf,
    pub prompts: super::schema::PromptRecording,
    pub max_bytes: u64,
    pub keep_files: usize,
}

/// How to run the request classifier.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifierSettings {
    /// The encoder folder.
    pub encoder: std::path::PathBuf,
    /// A heads folder; `None`: the heads built into the binary.
    pub heads: Option<std::path::PathBuf>,
    /// Token budget of one input.
    pub max_tokens: usize,
    /// Longest a request waits for others to share its batch.
    pub batch_window: Duration,
    /// Most requests in one batch.
    pub max_batch: usize,
    /// The policy's own harness rules (regular expressions), stripped from the classifier's
    /// input after the built-in ones (`classifier::input::HarnessFilter`).
    pub strip: Vec<String>,
    /// The policy's own rules for a person's words in a tool's result (regular expressions with
    /// a group named `keep`), after the built-in ones (`classifier::input::TOOL_FEEDBACK_RULES`).
    pub tool_feedback: Vec<String>,
    /// Whether the built-in harness and tool-feedback rules apply before the policy's
    /// (`strip_builtin`).
    pub strip_builtin: bool,
    /// Heads calibrated for an on-box model (`models.<name>.heads`), by model name: each gives
    /// that model's own strong score.
    pub model_heads: Vec<(String, std::path::PathBuf)>,
}

impl ClassifierSettings {
    /// Default token budget of the classifier's input when serving and scoring, chosen from the
    /// measured quality/latency trade-off (docs/router-quality.md#truncation).
    pub const DEFAULT_MAX_TOKENS: usize = 128;
}

impl Default for ClassifierSettings {
    fn default() -> Self {
        ClassifierSettings {
            encoder: "models/all-MiniLM-L6-v2".into(),
            heads: None,
            max_tokens: ClassifierSettings::DEFAULT_MAX_TOKENS,
            batch_window: Duration::from_micros(500),
            max_batch: 16,
            strip: vec![],
            tool_feedback: vec![],
            strip_builtin: true,
            model_heads: vec![],
        }
    }
}

impl Policy {
    /// Default of `sticky.ttl_s`.
    pub const DEFAULT_STICKY_TTL: Duration = Duration::from_secs(3600);

    /// The routes of the policy: every rule's, then the default.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.rules.iter().map(|r| &r.route).chain([&self.default])
    }

    /// Whether requests are scanned for private data: a rule routes on it or a route redacts it.
    pub fn uses_pii(&self) -> bool {
        self.rules.iter().any(|r| r.when.pii.is_some())
            || self.routes().any(|r| !r.redact.is_empty())
    }

    /// Whether some route keeps conversations on one model.
    pub fn uses_sticky(&self) -> bool {
        self.routes().any(|r| r.sticky)
    }

    /// Whether any rule needs the classifier's outputs.
    pub fn uses_classifier(&self) -> bool {
        self.rules.iter().any(|r| r.when.uses_classifier())
    }

    /// Where a model runs: `local` (on the box) or `cloud`.
    pub fn route_of(&self, model: &str) -> &'static str {
        match self.models.get(model).map(|m| m.kind) {
            Some(ModelKind::Local | ModelKind::Encoder) => "local",
            _ => "cloud",
        }
    }

    /// The reference model's price, if there is one.
    pub fn reference_price(&self) -> Option<Price> {
        self.reference_model
            .as_ref()
            .and_then(|m| self.models.get(m))
            .map(|m| m.price)
    }
}

/// A routable model.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub name: String,
    pub kind: ModelKind,
    pub price: Price,
    pub context_tokens: Option<u64>,
    pub max_output_tokens: Option<u64>,
    /// Connection settings, for `openai` models.
    pub provider: Option<Provider>,
    /// Engine settings, for `local` models.
    pub local: Option<LocalSettings>,
    /// The encoder's settings, for `encoder` models.
    pub encoder: Option<EncoderSettings>,
    /// What the model can do: declared in the policy, else for a cloud model every
    /// capability the gateway knows (the provider refuses what its model lacks), and for an
    /// on-box model what the on-box engine supports ([`crate::local::capabilities`]).
    pub capabilities: crate::api::Capabilities,
}

/// How to run an on-box model.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalSettings {
    /// The GGUF file; `None` leaves the model without an engine (reported unavailable).
    pub path: Option<std::path::PathBuf>,
    /// A `tokenizer.json` to use instead of the GGUF metadata.
    pub tokenizer: Option<std::path::PathBuf>,
    /// A chat template to use instead of the GGUF metadata's: a built-in format (`chatml`,
    /// `gemma`) or a Jinja file's path.
    pub template: Option<String>,
    /// Generations decoded at once.
    pub workers: usize,
    /// Requests that may wait for a worker.
    pub queue: usize,
    /// CPU threads of the matrix kernels; `None`: the engine's measured default.
    pub threads: Option<usize>,
}

/// How to run an on-box sentence encoder (`kind: encoder`).
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderSettings {
    /// A BERT folder: `config.json`, `model.safetensors`, `tokenizer.json`.
    pub path: std::path::PathBuf,
    /// Most tokens of one input (special tokens included); a longer input is refused, never
    /// cut. `None`: the model's position count.
    pub max_input_tokens: Option<usize>,
    /// Requests that may wait while another is embedded; beyond it, 503 with `Retry-After`.
    pub queue: usize,
}

/// USD per million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Price {
    pub input_per_million: f64,
    pub output_per_million: f64,
    /// Input tokens served from the provider's prompt cache (the policy's default: the input
    /// price).
    pub cached_input_per_million: f64,
    /// Input tokens written to the provider's prompt cache (Anthropic's cache writes; the
    /// policy's default: the input price).
    pub cache_write_per_million: f64,
    /// USD per 1,000 web searches the provider bills per search (default 0).
    pub web_search_per_thousand: f64,
}

impl Price {
    /// Cost in USD of the given token counts, every input token at the full input price (the
    /// worst case, for reservations).
    pub fn cost(&self, input_tokens: u64, output_tokens: u64) -> f64 {
        self.cost_of(&crate::api::Usage {
            prompt_tokens: input_tokens,
            completion_tokens: output_tokens,
            ..Default::default()
        })
    }

    /// Cost in USD of `usage`: `(input - cached - written) × input_per_million + cached ×
    /// cached_input_per_million + written × cache_write_per_million + output ×
    /// output_per_million`, over 10⁶. `cached` is the part of the input served from the
    /// provider's prompt cache (OpenAI's `prompt_tokens_details.cached_tokens`, Anthropic's
    /// `cache_read_input_tokens`), `written` the part written to it (Anthropic's
    /// `cache_creation_input_tokens`); together they are capped at the input. Web searches
    /// the provider ran add `searches × web_search_per_thousand / 1000`.
    pub fn cost_of(&self, usage: &crate::api::Usage) -> f64 {
        let input = usage.prompt_tokens;
        let cached = usage.cached_prompt_tokens.min(input);
        let written = usage.cache_write_prompt_tokens.min(input - cached);
        ((input - cached - written) as f64 * self.input_per_million
            + cached as f64 * self.cached_input_per_million
            + written as f64 * self.cache_write_per_million
            + usage.completion_tokens as f64 * self.output_per_million)
            / 1_000_000.0
            + usage.web_searches as f64 * self.web_search_per_thousand / 1000.0
    }
}

/// How to reach an OpenAI-compatible provider.
#[derive(Debug, Clone, PartialEq)]
pub struct Provider {
    /// Base URL without a trailing slash, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// The provider key; `None` when its variable is unset (the model is then disabled).
    pub api_key: Option<Secret>,
    /// Why the model is disabled, when it is.
    pub disabled_reason: Option<String>,
    pub upstream_model: String,
    pub timeouts: Timeouts,
    pub retries: RetrySettings,
    /// `None`: no circuit breaker.
    pub breaker: Option<BreakerSettings>,
    /// Client request headers passed on to the upstream (lower-case names).
    pub forward_headers: Vec<http::HeaderName>,
    /// Upstream response headers passed back to the client (besides the provider's request id,
    /// always passed as `x-switchyard-upstream-request-id`).
    pub response_headers: crate::api::headers::PassBack,
    /// The header that carries the key: `None` for `Authorization: Bearer <key>`, else this
    /// header with the key as it is.
    pub auth_header: Option<http::HeaderName>,
    /// Query parameters of every call, in order (values expanded, not yet percent-encoded).
    pub query: Vec<(String, String)>,
    /// The upstream serves the Responses API: Responses requests are forwarded as they came.
    pub responses: bool,
    /// How the model is given a request's reasoning effort.
    pub reasoning: super::schema::Reasoning,
    /// The upstream serves legacy completions: completions requests are forwarded as they came.
    pub completions: bool,
    /// The upstream serves embeddings: embedding requests are forwarded as they came.
    pub embeddings: bool,
}

/// Retries of failures before the first byte.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetrySettings {
    pub max_retries: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            max_retries: 2,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// When a circuit breaker opens and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSettings {
    pub failure_ratio: f64,
    pub min_calls: u64,
    pub window: Duration,
    pub cooldown: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failure_ratio: 0.5,
            min_calls: 10,
            window: Duration::from_secs(30),
            cooldown: Duration::from_secs(30),
        }
    }
}

/// Client headers forwarded when a policy does not list its own.
pub const DEFAULT_FORWARD_HEADERS: [&str; 3] = ["x-request-id", "traceparent", "tracestate"];

/// Upstream response headers a cloud model passes back unless its policy lists others: the
/// provider's rate-limit state and timings, which the OpenAI SDKs and their users read.
pub const DEFAULT_RESPONSE_HEADERS: [&str; 3] =
    ["x-ratelimit-*", "openai-processing-ms", "retry-after-ms"];

/// Upstream timeouts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            first_byte: Duration::from_secs(60),
            total: Duration::from_secs(600),
        }
    }
}

/// A string that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }
    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A gateway key holder: name and SHA-256 of the key.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub name: String,
    pub key_sha256: [u8; 32],
}

/// A rule: conditions and where it routes.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub when: Conditions,
    pub route: Route,
    /// 1-based line of the rule in its file (for messages).
    pub line: usize,
}

/// A target model, its ordered fallbacks, and what the route does to requests.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Route {
    pub model: String,
    pub fallbacks: Vec<String>,
    /// The fallbacks of a conversation pinned to one of the route's models: entry 0 for
    /// `model`, entry `i + 1` for `fallbacks[i]` (the route's other models, in route order), and
    /// a last entry, every model of the route, for a pin outside it (the box a budget sent
    /// the conversation to).
    pub pinned_fallbacks: Vec<Vec<String>>,
    /// Kinds of private data replaced by placeholders before a cloud model of the route gets
    /// the request.
    pub redact: crate::pii::Kinds,
    /// Conversations this route answers stay on the model that answered them.
    pub sticky: bool,
}
