//! Per-tenant rate limits: requests and tokens per minute, each a token bucket that holds one
//! minute's worth and refills continuously. A request takes one request and its prompt estimate
//! on arrival, and its tokens are settled with the real counts when the answer ends (reserve,
//! then settle), so a tokens bucket may go below zero; new requests wait until it refills. The
//! buckets live in a [`StateStore`](super::state::StateStore); this module holds their
//! arithmetic, which the Redis store's script repeats.

use std::time::{Duration, Instant};

/// One token bucket.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    pub capacity: f64,
    pub level: f64,
    pub at: Instant,
}

impl Bucket {
    /// A full bucket of `per_minute`.
    pub fn new(per_minute: u64, now: Instant) -> Bucket {
        Bucket {
            capacity: per_minute as f64,
            level: per_minute as f64,
            at: now,
        }
    }

    fn per_sec(&self) -> f64 {
        self.capacity / 60.0
    }

    /// Adds what flowed in since the last refill, up to the capacity.
    pub fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + dt * self.per_sec()).min(self.capacity);
        self.at = now;
    }

    /// How long until the bucket holds `need` (zero: it does now).
    pub fn wait_for(&self, need: f64) -> Duration {
        if self.level >= need {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((need - self.level) / self.per_sec())
        }
    }
}

/// What a request needs in a bucket to pass: one request; for tokens only that the bucket is
/// not in debt (a prompt larger than a minute's worth would otherwise never pass).
pub fn need(limit: Limit) -> f64 {
    match limit {
        Limit::Requests => 1.0,
        Limit::Tokens => TOKENS_NEED,
    }
}

/// The least level a tokens bucket must hold for a request to pass.
pub const TOKENS_NEED: f64 = 1e-6;

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    Requests,
    Tokens,
}

impl Limit {
    /// The `limit` label of `switchyard_rate_limited_total`.
    pub fn label(self) -> &'static str {
        match self {
            Limit::Requests => "requests",
            Limit::Tokens => "tokens",
        }
    }
}

/// A refusal: the limit, and when to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimited {
    pub limit: Limit,
    pub per_minute: u64,
    pub retry_after: Duration,
}

impl std::fmt::Display for RateLimited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rate limit reached: {} {} per minute; retry in {} s",
            self.per_minute,
            self.limit.label(),
            crate::api::retry_after_secs(self.retry_after)
        )
    }
}
