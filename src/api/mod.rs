//! The OpenAI wire format: request parsing and validation, usage, the headers that never go
//! upstream, SSE framing, and errors.

pub mod anthropic;
pub mod anthropic_upstream;
pub mod capabilities;
pub mod chat_chunk;
pub mod completions;
pub mod dialect;
pub mod embeddings;
mod error;
pub mod headers;
pub mod native;
mod request;
pub mod responses;
pub mod skim;
pub mod sse;
pub mod usage;

pub use capabilities::{Capabilities, Capability};
pub use dialect::Dialect;
pub use error::{
    client_status, parse_retry_after, retry_after_secs, ApiError, ErrorKind, UPSTREAM_STATUS,
};
pub use request::{content_text, ChatRequest, Role, UnknownPart};
pub use usage::{Reported, Usage};
