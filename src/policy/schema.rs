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
}

/// Where a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// On this box, in-process.
    Local,
    /// A cloud provider speaking the OpenAI chat completions API.
    Openai,
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
}

/// Prices in USD per million tokens.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceSpec {
    #[serde(default)]
    pub input_per_million: f64,
    #[serde(default)]
    pub output_per_million: f64,
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
}

/// The default route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub route: String,
    #[serde(default)]
    pub fallbacks: Vec<String>,
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
