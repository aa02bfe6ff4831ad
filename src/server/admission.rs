//! Admission of a parsed request: the client limits its parser does not know, the caller's
//! rate limits, and the budget reservation of each cloud call (reserve now, settle at the end).

use super::{Caller, Gateway};
use crate::accounting::budget::{Exhausted, Ticket};
use crate::accounting::rate_limit::TokenTicket;
use crate::api::{ApiError, ChatRequest};
use crate::policy::ModelKind;
use std::time::SystemTime;

/// The limits on a parsed request that its parser does not know: messages, their size, `max_tokens`.
pub fn check_limits(limits: &crate::policy::Limits, req: &ChatRequest) -> Result<(), ApiError> {
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

/// Takes the request (and its estimated prompt tokens) from the caller's rate limits.
pub fn admit(
    gateway: &Gateway,
    caller: &Caller,
    prompt_estimate: u64,
) -> Result<Option<TokenTicket>, ApiError> {
    let Some(limiter) = &gateway.rate_limiter else {
        return Ok(None);
    };
    limiter
        .admit(caller.label(), prompt_estimate, std::time::Instant::now())
        .map_err(|r| {
            gateway
                .metrics
                .rate_limited
                .with_label_values(&[caller.label(), r.limit.label()])
                .inc();
            ApiError::RateLimited {
                message: r.to_string(),
                retry_after_secs: crate::api::retry_after_secs(r.retry_after),
            }
        })
}

/// Answer tokens a cloud reservation assumes when neither the request nor the model limits them.
const RESERVED_OUTPUT_TOKENS: u64 = 4096;

/// Reserves the worst-case cost of a cloud call against the budgets (`Ok(None)`: no budget
/// applies).
pub fn reserve(
    gateway: &Gateway,
    caller: &Caller,
    req: &ChatRequest,
    model: &str,
    prompt_estimate: u64,
) -> Result<Option<Ticket>, Exhausted> {
    let (Some(budgets), Some(m)) = (&gateway.budgets, gateway.policy.models.get(model)) else {
        return Ok(None);
    };
    if m.kind != ModelKind::Openai {
        return Ok(None);
    }
    let cap = m.max_output_tokens.unwrap_or(u64::MAX);
    let output = req
        .max_tokens
        .or(m.max_output_tokens)
        .unwrap_or(RESERVED_OUTPUT_TOKENS)
        .min(cap);
    let amount = m.price.cost(prompt_estimate, output);
    let ticket = budgets.reserve(caller.tenant.as_deref(), amount, SystemTime::now())?;
    gateway.publish_budgets();
    Ok(Some(ticket))
}
