//! Switchyard: an edge LLM router. An OpenAI-compatible proxy that, per request, answers on
//! the box with a small model or forwards to a cloud model, as a YAML policy decides.
//!
//! The data path: [`api`] (parse) -> [`features`] -> [`policy::decide`] -> [`engines`] ->
//! [`server`] response or stream, with [`accounting`] on the way back.

pub mod accounting;
pub mod api;
pub mod classifier;
pub mod cli;
pub mod engines;
pub mod features;
pub mod local;
pub mod policy;
pub mod server;
pub mod tuning;
