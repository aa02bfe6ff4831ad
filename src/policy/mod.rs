//! Routing policies: the YAML schema, its validation into a [`Policy`], and the pure
//! [`decide`] function that turns request [`Features`](crate::features::Features) into a
//! [`Decision`].

mod compile;
mod conditions;
mod decide;
mod env;
mod model;
mod positions;
pub mod schema;

pub use compile::{load, parse, PolicyError, PolicyErrors};
pub use conditions::{CategoryCondition, Conditions, PiiCondition, Range};
pub use decide::{decide, lacking, needs_classifier, DecideError, Decision};
pub use model::{
    BreakerSettings, BudgetSettings, ClassifierSettings, EncoderSettings, Limits, LocalSettings,
    Model, Policy, Price, Provider, Rate, RateLimitSettings, RecordingSettings, RetrySettings,
    Route, Rule, Secret, StateSettings, Tenant, Timeouts, DEFAULT_FORWARD_HEADERS,
};
pub use schema::{BudgetLimits, ModelKind, OnExhausted, OnUnavailable, PromptRecording, Reasoning};

/// Classifier categories a policy may route on.
pub const CATEGORIES: &[&str] = &[
    "code",
    "math",
    "reasoning",
    "knowledge",
    "writing",
    "transform",
    "chat",
    "other",
];

/// Requested model name that lets the policy decide.
pub const AUTO: &str = "auto";
/// Requested model name that forces the on-box model.
pub const LOCAL: &str = "local";
