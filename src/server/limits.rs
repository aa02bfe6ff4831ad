//! The policy's limits on a parsed request that its parser does not know: the number of
//! messages, their size, and `max_tokens`.

use crate::api::{ApiError, ChatRequest};

/// Checks `req` against `limits`.
///
/// Errors: [`ApiError::BadRequest`] (400) naming the parameter over its limit.
pub fn check(limits: &crate::policy::Limits, req: &ChatRequest) -> Result<(), ApiError> {
    if req.message_count > limits.max_messages {
        return Err(ApiError::bad_request(
            format!(
                "too many messages: {} (the limit is {})",
                req.message_count, limits.max_messages
            ),
            Some("messages"),
        ));
    }
    if req.largest_message_bytes > limits.max_message_bytes {
        return Err(ApiError::bad_request(
            format!(
                "a message is {} bytes long (the limit is {} bytes per message)",
                req.largest_message_bytes, limits.max_message_bytes
            ),
            Some("messages"),
        ));
    }
    if let Some(n) = req.max_tokens.filter(|n| *n > limits.max_tokens) {
        let param = if req.has("max_completion_tokens") {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        return Err(ApiError::bad_request(
            format!(
                "`{param}` is {n}, above this gateway's limit of {}",
                limits.max_tokens
            ),
            Some(param),
        ));
    }
    Ok(())
}
