//! The OpenAI wire format: request parsing and validation, SSE framing, and errors.

mod error;
mod request;
pub mod skim;
pub mod sse;

pub use error::{retry_after_secs, ApiError, ErrorKind};
pub use request::{ChatRequest, Role};
