//! Switchyard: an edge LLM router. An OpenAI-compatible proxy that, per request, answers on
//! the box with a small model or forwards to a cloud model, as a YAML policy decides.
//!
//! The data path: [`server`] (HTTP in) -> [`api`] (parse) -> [`features`] -> [`classifier`] ->
//! [`policy::decide`] (pure) -> [`dispatch`] (route and fallbacks) -> [`engines`] (on-box or a
//! provider) -> [`server`] response or stream, settled once by [`accounting`]. See
//! docs/architecture.md.

pub mod accounting;
pub mod api;
pub mod classifier;
pub mod cli;
pub mod cpu;
pub mod dispatch;
pub mod engines;
pub mod features;
pub mod local;
pub mod pii;
pub mod policy;
pub mod server;
pub mod tuning;
