//! Per-tenant rate limits: requests and tokens per minute, each a token bucket that holds one
//! minute's worth. Tokens are taken on arrival (the prompt estimate) and settled with the real
//! counts when the answer ends (reserve, then settle), so a bucket may go below zero; new
//! requests wait until it refills.

use crate::policy::{Rate, RateLimitSettings};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Bucket {
    capacity: f64,
    per_sec: f64,
    level: f64,
    at: Instant,
}

impl Bucket {
    fn new(per_minute: u64, now: Instant) -> Bucket {
        Bucket {
            capacity: per_minute as f64,
            per_sec: per_minute as f64 / 60.0,
            level: per_minute as f64,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + dt * self.per_sec).min(self.capacity);
        self.at = now;
    }

    /// How long until the bucket holds `need` (zero: it does now).
    fn wait_for(&self, need: f64) -> Duration {
        if self.level >= need {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((need - self.level) / self.per_sec)
        }
    }
}

#[derive(Debug)]
struct TenantBuckets {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// Tokens taken for a request on arrival; settle with the real count when it ends. Dropped
/// unsettled, the estimate stands.
#[derive(Debug)]
pub struct TokenTicket {
    limiter: Arc<RateLimiter>,
    tenant: String,
    reserved: u64,
}

impl TokenTicket {
    /// Replaces the reserved estimate with `used` tokens.
    pub fn settle(self, used: u64) {
        let mut all = self.limiter.lock();
        if let Some(b) = all.get_mut(&self.tenant).and_then(|t| t.tokens.as_mut()) {
            b.level = (b.level + self.reserved as f64 - used as f64).min(b.capacity);
        }
    }
}

/// The rate limits of one policy, with each tenant's buckets.
#[derive(Debug)]
pub struct RateLimiter {
    settings: RateLimitSettings,
    buckets: Mutex<HashMap<String, TenantBuckets>>,
}

impl RateLimiter {
    pub fn new(settings: RateLimitSettings) -> Arc<RateLimiter> {
        Arc::new(RateLimiter {
            settings,
            buckets: Mutex::default(),
        })
    }

    /// The settings these buckets were made for.
    pub fn settings(&self) -> &RateLimitSettings {
        &self.settings
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, TenantBuckets>> {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a request of `tenant` with an estimated `tokens`, or says which limit refuses it.
    /// `Ok(None)`: no token limit applies.
    pub fn admit(
        self: &Arc<Self>,
        tenant: &str,
        tokens: u64,
        now: Instant,
    ) -> Result<Option<TokenTicket>, RateLimited> {
        let Some(Rate {
            requests_per_minute,
            tokens_per_minute,
        }) = self.settings.rate_of(tenant)
        else {
            return Ok(None);
        };
        let mut all = self.lock();
        let t = all
            .entry(tenant.to_string())
            .or_insert_with(|| TenantBuckets {
                requests: requests_per_minute.map(|n| Bucket::new(n, now)),
                tokens: tokens_per_minute.map(|n| Bucket::new(n, now)),
            });
        for (bucket, limit, per_minute) in [
            (&mut t.requests, Limit::Requests, requests_per_minute),
            (&mut t.tokens, Limit::Tokens, tokens_per_minute),
        ] {
            if let (Some(b), Some(per_minute)) = (bucket.as_mut(), per_minute) {
                b.refill(now);
                // A request needs one request; tokens only need the bucket not to be in debt
                // (a prompt larger than a minute's worth would otherwise never pass).
                let need = if limit == Limit::Requests {
                    1.0
                } else {
                    f64::MIN_POSITIVE
                };
                let wait = b.wait_for(need);
                if !wait.is_zero() {
                    return Err(RateLimited {
                        limit,
                        per_minute,
                        retry_after: wait,
                    });
                }
            }
        }
        if let Some(b) = t.requests.as_mut() {
            b.level -= 1.0;
        }
        Ok(t.tokens.as_mut().map(|b| {
            b.level -= tokens as f64;
            TokenTicket {
                limiter: self.clone(),
                tenant: tenant.to_string(),
                reserved: tokens,
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rpm: Option<u64>, tpm: Option<u64>) -> Arc<RateLimiter> {
        RateLimiter::new(RateLimitSettings {
            default: None,
            tenants: vec![(
                "a".into(),
                Rate {
                    requests_per_minute: rpm,
                    tokens_per_minute: tpm,
                },
            )],
        })
    }

    #[test]
    fn requests_per_minute_refuse_then_refill() {
        let l = limiter(Some(2), None);
        let t0 = Instant::now();
        assert!(l.admit("a", 10, t0).is_ok());
        assert!(l.admit("a", 10, t0).is_ok());
        let e = l.admit("a", 10, t0).unwrap_err();
        assert_eq!(e.limit, Limit::Requests);
        assert!(
            e.retry_after > Duration::from_secs(29) && e.retry_after <= Duration::from_secs(30)
        );
        assert!(l.admit("a", 10, t0 + Duration::from_secs(31)).is_ok());
        assert!(l.admit("b", 10, t0).unwrap().is_none(), "no limit for b");
    }

    #[test]
    fn tokens_are_reserved_then_settled() {
        let l = limiter(None, Some(600));
        let t0 = Instant::now();
        let ticket = l.admit("a", 500, t0).unwrap().unwrap();
        ticket.settle(700); // 100 tokens of debt
        let e = l.admit("a", 1, t0).unwrap_err();
        assert_eq!(e.limit, Limit::Tokens);
        // 600 per minute = 10 per second: 100 of debt takes 10 s.
        assert!((e.retry_after.as_secs_f64() - 10.0).abs() < 0.1);
        let t = l
            .admit("a", 50, t0 + Duration::from_secs(11))
            .unwrap()
            .unwrap();
        t.settle(10);
        assert!(l.admit("a", 1, t0 + Duration::from_secs(11)).is_ok());
    }
}
