//! The policy file as written in YAML. Every struct denies unknown fields so that a typo
//! is an error with a line and column, not a silently ignored setting.

use indexmap::IndexMap;
use serde::Deserialize;

/// Top level of a policy file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Format version; only `1` exists.
    pub version: u32,
    /// The cloud model that savings are measured against (default: the first `openai` model).
    #[serde(default)]
    pub reference_model: Option<String>,
    /// Routable models by name, in declaration order.
    pub models: IndexMap<String, ModelSpec>,
    /// Gateway API keys (as SHA-256 hashes) and the tenants they belong to.
    #[serde(default)]
    pub tenants: Vec<TenantSpec>,
    /// Ordered rules; the first that matches decides.
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    /// Where `auto` requests go when no rule matches. Required.
    #[serde(default)]
    pub default: Option<RouteSpec>,
    /// The request classifier (used only when a rule has a `category` or `strong_score` condition).
    #[serde(default)]
    pub classifier: Option<ClassifierSpec>,
    /// The request log for `replay` and `calibrate` (off unless set).
    #[serde(default)]
    pub recording: Option<RecordingSpec>,
    /// Spending limits on the cloud models.
    #[serde(default)]
    pub budgets: Option<BudgetsSpec>,
    /// Limits on what a client may send and hold open.
    #[serde(default)]
    pub limits: Option<ClientLimitsSpec>,
    /// Requests and tokens per minute, per tenant.
    #[serde(default)]
    pub rate_limits: Option<RateLimitsSpec>,
    /// Where budget, rate-limit and sticky-conversation state lives (default: this process's memory).
    #[serde(default)]
    pub state: Option<StateSpec>,
    /// Sticky conversations for every route (`true`, or `{ enabled, ttl_s }`).
    #[serde(default)]
    pub sticky: Option<StickySpec>,
}

/// Where budget and rate-limit state lives: `memory` (each replica its own) or `redis` (shared
/// by every replica that names the same server and `key_prefix`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSpec {
    /// `memory` (default) or `redis`.
    #[serde(default)]
    pub backend: StateBackend,
    /// `redis://[user:password@]host:port[/db]`, `rediss://` for TLS; `${VAR}` expanded.
    #[serde(default)]
    pub url: Option<String>,
    /// Longest one call to the store may take, in ms (default 50).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// What a cloud call that needs a reservation does when the store cannot be reached in time.
    #[serde(default)]
    pub on_unavailable: OnUnavailable,
    /// Prefix of every key (default `switchyard:`), to keep several gateways' state apart on one server.
    #[serde(default)]
    pub key_prefix: Option<String>,
    /// Longest a reservation is held when its request is never settled (its replica died), in
    /// seconds (default 600).
    #[serde(default)]
    pub reservation_ttl_s: Option<u64>,
}

/// The state store's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateBackend {
    #[default]
    Memory,
    Redis,
}

/// What a cloud call that needs a budget or rate-limit reservation does when the shared store
/// does not answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnavailable {
    /// The call is refused (503 `state_unavailable`; a fallback may answer instead).
    #[default]
    Reject,
    /// The call goes ahead unreserved; it is counted and logged.
    Allow,
}

impl OnUnavailable {
    /// As written in the policy.
    pub fn as_str(self) -> &'static str {
        match self {
            OnUnavailable::Reject => "reject",
            OnUnavailable::Allow => "allow",
        }
    }
}

/// Limits on what a client controls; every field has a default (docs/security.md).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientLimitsSpec {
    /// Largest request body in bytes (default 4 MiB).
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    /// Most messages in one request (default 1024).
    #[serde(default)]
    pub max_messages: Option<u64>,
    /// Largest text of one message, in bytes (default 1 MiB).
    #[serde(default)]
    pub max_message_bytes: Option<u64>,
    /// Largest `max_tokens` / `max_completion_tokens` a client may ask for (default 32768).
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// Largest total size of the request headers, in bytes (default 16 KiB).
    #[serde(default)]
    pub max_header_bytes: Option<usize>,
    /// Longest a client may take to send the request headers, in ms (default 30000).
    #[serde(default)]
    pub header_timeout_ms: Option<u64>,
    /// Longest a client may take to send the request body, in ms (default 30000).
    #[serde(default)]
    pub body_timeout_ms: Option<u64>,
    /// Longest a streamed cloud answer may go without an event before it is ended, in ms (default 120000).
    #[serde(default)]
    pub stream_idle_timeout_ms: Option<u64>,
    /// Most client connections open at once (default 1024); more are answered 503 and closed.
    #[serde(default)]
    pub max_connections: Option<usize>,
}

/// Requests and tokens per minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateSpec {
    #[serde(default)]
    pub requests_per_minute: Option<u64>,
    /// Prompt plus answer tokens (the prompt estimated on arrival, settled with the real counts).
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
}

/// Per-tenant rate limits.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsSpec {
    /// Applies to every tenant (and to the anonymous caller of an open gateway) without its own entry.
    #[serde(default)]
    pub default: Option<RateSpec>,
    /// Per tenant (names from `tenants`).
    #[serde(default)]
    pub tenants: indexmap::IndexMap<String, RateSpec>,
}

/// What happens to a cloud request when a budget is used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnExhausted {
    /// Answer on the box (the policy's first local model).
    #[default]
    Local,
    /// 429 with a message that says which budget.
    Reject,
}

/// Limits in USD per UTC day and calendar month; either may be left out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetLimits {
    #[serde(default)]
    pub daily_usd: Option<f64>,
    #[serde(default)]
    pub monthly_usd: Option<f64>,
}

/// Budgets.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetsSpec {
    #[serde(default)]
    pub on_exhausted: OnExhausted,
    /// The whole gateway's spend.
    #[serde(default)]
    pub global: Option<BudgetLimits>,
    /// Per tenant (names from `tenants`).
    #[serde(default)]
    pub tenants: indexmap::IndexMap<String, BudgetLimits>,
}

/// Whether recorded requests keep their text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptRecording {
    /// As sent.
    #[default]
    Keep,
    /// SHA-256 of each text (replay can count and route, not classify).
    Hash,
    /// Replaced by an empty string.
    Drop,
}

/// The request log.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingSpec {
    /// The JSONL file (`${ENV}` expanded).
    pub path: String,
    #[serde(default)]
    pub prompts: PromptRecording,
    /// Rotate when the file would grow past this many bytes (default 100 MiB).
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// Rotated files kept (`path.1` ... `path.N`, default 5).
    #[serde(default)]
    pub keep_files: Option<usize>,
}

/// Settings of the request classifier.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierSpec {
    /// The encoder folder (`${ENV}` expanded; default `models/all-MiniLM-L6-v2`).
    #[serde(default)]
    pub encoder: Option<String>,
    /// A heads folder from `switchyard train-router` (default: the heads built into the binary).
    #[serde(default)]
    pub heads: Option<String>,
    /// Token budget of the classifier's input (default 128); longer inputs keep head and tail.
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// Longest a request waits for others to share its batch, in microseconds (default 500).
    #[serde(default)]
    pub batch_window_us: Option<u64>,
    /// Most requests classified in one batch (default 16).
    #[serde(default)]
    pub max_batch: Option<usize>,
    /// More harness text to strip from the classifier's input, as regular expressions (`.`
    /// matches newlines), after the built-in rules.
    #[serde(default)]
    pub strip: Option<Vec<String>>,
    /// Where a person's words sit in a tool's result (a rejected tool call's reason), as
    /// regular expressions with a group named `keep` holding them, after the built-in rules.
    #[serde(default)]
    pub tool_feedback: Option<Vec<String>>,
    /// Whether the built-in harness and tool-feedback rules apply (default true); `false`
    /// leaves only `strip` and `tool_feedback`.
    #[serde(default)]
    pub strip_builtin: Option<bool>,
}

/// Where a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// On this box, in-process.
    Local,
    /// A cloud provider speaking the OpenAI chat completions API.
    Openai,
    /// Anthropic's Messages API (`base_url` without `/v1`; default `https://api.anthropic.com`).
    Anthropic,
    /// A sentence encoder on this box, in-process: it serves embeddings (`POST /v1/embeddings`)
    /// and nothing else.
    Encoder,
}

impl ModelKind {
    /// Whether the model runs in the cloud (`openai` and `anthropic`).
    pub fn is_cloud(self) -> bool {
        matches!(self, ModelKind::Openai | ModelKind::Anthropic)
    }
}

/// How a cloud model is given the effort a request asks of its reasoning (`reasoning_effort`,
/// the Responses API's `reasoning.effort`, the Messages API's `output_config.effort`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reasoning {
    /// The provider's effort setting: `reasoning_effort` as it came (`openai`); adaptive
    /// thinking with `output_config.effort` (`anthropic`, Claude 4.6 and later). The default.
    Effort,
    /// `anthropic` only: extended thinking with a token budget, a share of `max_tokens` by
    /// effort (Claude 3.7 to 4.5).
    Budget,
    /// The model does not reason: the effort is not sent.
    None,
}

/// One model entry. Fields that only make sense for one kind are checked in `compile`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub kind: ModelKind,
    #[serde(default)]
    pub price: PriceSpec,
    #[serde(default)]
    pub limits: LimitsSpec,
    /// What the model can do (`tools`, `json_object`, `json_schema`, `logprobs`, `n`, `images`,
    /// `audio`, `files`, `web_search`); default: everything for `openai`, what the translation
    /// carries for `anthropic`, the on-box engine's own for `local`.
    #[serde(default)]
    pub capabilities: Option<Vec<String>>,
    /// `openai` only: base URL of the API (`.../v1`); `${ENV}` and `${ENV:-default}` are expanded.
    #[serde(default)]
    pub base_url: Option<String>,
    /// `openai` only: the provider key, normally `${SOME_ENV}`.
    #[serde(default)]
    pub api_key: Option<String>,
    /// `openai` only: the model name sent upstream (default: the entry's name).
    #[serde(default)]
    pub upstream_model: Option<String>,
    /// `openai` only: timeouts in milliseconds.
    #[serde(default)]
    pub timeouts: TimeoutsSpec,
    /// `local` only: the GGUF file (`${ENV}` expanded; relative to the working directory).
    #[serde(default)]
    pub path: Option<String>,
    /// `local` only: the chat template, instead of the one in the GGUF metadata: `chatml`,
    /// `gemma`, or the path of a Jinja file (`${ENV}` expanded).
    #[serde(default)]
    pub template: Option<String>,
    /// `local` only: a heads folder from `train-router --labels` calibrated for this model:
    /// rules whose route's on-box model is this one read the strong score of these heads.
    /// Empty (e.g. `${VAR:-}` with VAR unset): none, the rules read the shared heads.
    #[serde(default)]
    pub heads: Option<String>,
    /// `local` only: a `tokenizer.json` (default: built from the GGUF metadata).
    #[serde(default)]
    pub tokenizer: Option<String>,
    /// `local` only: generations decoded at once (each with its own KV cache, one copy of the weights).
    #[serde(default)]
    pub workers: Option<usize>,
    /// `local` only: requests waiting for a worker before new ones are refused (or spilled).
    #[serde(default)]
    pub queue: Option<usize>,
    /// `local` only: CPU threads of the matrix kernels (process-wide; the first local model's wins).
    #[serde(default)]
    pub threads: Option<usize>,
    /// `openai` only: retries of failures before the first byte.
    #[serde(default)]
    pub retries: Option<RetriesSpec>,
    /// `openai` only: the circuit breaker.
    #[serde(default)]
    pub circuit_breaker: Option<BreakerSpec>,
    /// `openai` only: client request headers passed on to the upstream (an allow-list; default
    /// `x-request-id`, `traceparent`, `tracestate`).
    #[serde(default)]
    pub forward_headers: Option<Vec<String>>,
    /// `openai` only: upstream response headers passed back to the client (an allow-list of
    /// names, or prefixes ending in `*`; default `x-ratelimit-*`, `openai-processing-ms`,
    /// `retry-after-ms`).
    #[serde(default)]
    pub response_headers: Option<Vec<String>>,
    /// `openai` only: the header that carries `api_key` (default `authorization`, as
    /// `Bearer <key>`; any other name carries the key as it is, e.g. Azure's `api-key`).
    #[serde(default)]
    pub auth_header: Option<String>,
    /// `openai` only: query parameters added to every call (e.g. Azure's `api-version`);
    /// `${VAR}` is expanded in values.
    #[serde(default)]
    pub query: Option<indexmap::IndexMap<String, String>>,
    /// Cloud models only: how the model is given a request's reasoning effort (default
    /// `effort`).
    #[serde(default)]
    pub reasoning: Option<Reasoning>,
    /// `openai` only: the upstream serves the Responses API (`POST {base_url}/responses`, and
    /// `POST {base_url}/responses/compact`), so Responses requests are forwarded to it as they
    /// came (default false: translated to chat), and compactions go only to such a model.
    #[serde(default)]
    pub responses: Option<bool>,
    /// `openai` only: the upstream serves legacy completions (`POST {base_url}/completions`),
    /// so completions requests are forwarded to it (default false: it gets none).
    #[serde(default)]
    pub completions: Option<bool>,
    /// `openai` only: the upstream serves embeddings (`POST {base_url}/embeddings`), so
    /// embedding requests are forwarded to it as they came (default false: it gets none, and
    /// no other model can answer them).
    #[serde(default)]
    pub embeddings: Option<bool>,
}

/// Retries of a cloud call: connect errors, 429 and 5xx, before any byte reached the client.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetriesSpec {
    /// Retries after the first attempt (default 2; 0 turns retries off).
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// First backoff in ms, doubled each retry, with full jitter (default 100).
    #[serde(default)]
    pub initial_backoff_ms: Option<u64>,
    /// Longest wait before a retry, in ms, `Retry-After` included (default 5000): an upstream
    /// asking for longer is not retried.
    #[serde(default)]
    pub max_backoff_ms: Option<u64>,
}

/// A circuit breaker: opens on a failure ratio, half-opens after a cool-down.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSpec {
    /// Failed share of the calls in the window that opens the circuit (default 0.5).
    #[serde(default)]
    pub failure_ratio: Option<f64>,
    /// Calls the window needs before the ratio counts (default 10).
    #[serde(default)]
    pub min_calls: Option<u64>,
    /// Length of the counting window in ms (default 30000).
    #[serde(default)]
    pub window_ms: Option<u64>,
    /// How long the circuit stays open before one trial call, in ms (default 30000).
    #[serde(default)]
    pub cooldown_ms: Option<u64>,
    /// Default true.
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// Prices in USD per million tokens.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceSpec {
    #[serde(default)]
    pub input_per_million: f64,
    #[serde(default)]
    pub output_per_million: f64,
    /// Input tokens served from the provider's prompt cache (default: `input_per_million`).
    #[serde(default)]
    pub cached_input_per_million: Option<f64>,
    /// Input tokens written to the provider's prompt cache (default: `input_per_million`).
    #[serde(default)]
    pub cache_write_per_million: Option<f64>,
    /// USD per 1,000 web searches the provider runs and bills per search (Anthropic's web
    /// search tool; default 0).
    #[serde(default)]
    pub web_search_per_thousand: f64,
}

/// Size limits of a model.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// Context window in tokens (prompt plus output).
    #[serde(default)]
    pub context_tokens: Option<u64>,
    /// Largest `max_tokens` the model accepts.
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
}

/// Upstream timeouts in milliseconds.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsSpec {
    #[serde(default)]
    pub connect_ms: Option<u64>,
    #[serde(default)]
    pub first_byte_ms: Option<u64>,
    #[serde(default)]
    pub total_ms: Option<u64>,
}

/// A gateway key holder.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSpec {
    pub name: String,
    /// Hex SHA-256 of the gateway key (`printf %s "$KEY" | sha256sum`).
    pub key_sha256: String,
}

/// One routing rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub name: String,
    #[serde(default)]
    pub when: ConditionsSpec,
    pub route: String,
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// Private data replaced by typed placeholders before the request goes to a cloud model
    /// of this route: `true` (every kind) or a list of kinds.
    #[serde(default)]
    pub redact: Option<PiiSpec>,
    /// Keep a conversation this rule routes on the model that answered it (default: the
    /// policy's `sticky`).
    #[serde(default)]
    pub sticky: Option<bool>,
}

/// The default route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub route: String,
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// As a rule's `redact`.
    #[serde(default)]
    pub redact: Option<PiiSpec>,
    /// As a rule's `sticky`.
    #[serde(default)]
    pub sticky: Option<bool>,
}

/// Kinds of private data: `true` (any kind), `false` (none), or a list of kind names
/// (`email`, `phone`, `credit_card`, `iban`, `national_id`, `ip_address`, `secret`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PiiSpec {
    Any(bool),
    Kinds(Vec<String>),
}

/// Sticky conversations: `true`, or the settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StickySpec {
    On(bool),
    Settings(StickySettingsSpec),
}

/// Sticky conversations' settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StickySettingsSpec {
    /// Every rule and the default route are sticky unless they say `sticky: false` (default
    /// true when this block is given).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// How long a conversation stays pinned after its last turn, in seconds (default 3600).
    #[serde(default)]
    pub ttl_s: Option<u64>,
}

/// Conditions of a rule; all that are given must hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionsSpec {
    /// Requested model names the rule applies to (default `[auto]`).
    #[serde(default)]
    pub model: Option<Vec<String>>,
    #[serde(default)]
    pub prompt_tokens: Option<RangeSpec<u64>>,
    #[serde(default)]
    pub messages: Option<RangeSpec<u64>>,
    #[serde(default)]
    pub has_tools: Option<bool>,
    #[serde(default)]
    pub has_images: Option<bool>,
    #[serde(default)]
    pub tenant: Option<Vec<String>>,
    /// Matches when the request carries any of these tags.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    #[serde(default)]
    pub category: Option<CategorySpec>,
    #[serde(default)]
    pub strong_score: Option<RangeSpec<f64>>,
    /// Private data in the request: `true` (any kind), `false` (none), or any of a list of kinds.
    #[serde(default)]
    pub pii: Option<PiiSpec>,
}

/// A strict numeric range: `above < value < below`, either bound optional.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeSpec<T> {
    #[serde(default = "Option::default")]
    pub above: Option<T>,
    #[serde(default = "Option::default")]
    pub below: Option<T>,
}

/// Classifier category condition.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategorySpec {
    /// The top category must be one of these.
    #[serde(rename = "in")]
    pub one_of: Vec<String>,
    /// ...with at least this probability (default 0).
    #[serde(default)]
    pub min_probability: Option<f64>,
}
