//! Retries with jittered exponential backoff, and a circuit breaker per upstream model.

use crate::policy::{BreakerSettings, RetrySettings};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long to wait before retry number `retry` (0-based): full jitter over an exponential
/// ceiling, and at least what the upstream's `Retry-After` asks. `None`: do not retry (the
/// upstream asks for a longer wait than `max_backoff`).
pub fn backoff(s: &RetrySettings, retry: u32, retry_after: Option<Duration>) -> Option<Duration> {
    let ceiling = s
        .initial_backoff
        .saturating_mul(1u32 << retry.min(20))
        .min(s.max_backoff);
    let jitter = ceiling.mul_f64(fastrand::f64());
    match retry_after {
        Some(d) if d > s.max_backoff => None,
        Some(d) => Some(d.max(jitter)),
        None => Some(jitter),
    }
}

/// A circuit's state, as the value of `switchyard_circuit_state{model}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls go through; failures are counted.
    Closed = 0,
    /// The cool-down is over: one trial call may go through.
    HalfOpen = 1,
    /// Calls are refused until the cool-down ends.
    Open = 2,
}

#[derive(Debug)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { trial_in_flight: bool },
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    window_start: Instant,
    calls: u64,
    failures: u64,
}

/// Opens when the failed share of a window's calls reaches the ratio, stays open for the
/// cool-down, then lets one trial call through: success closes it, failure opens it again.
#[derive(Debug)]
pub struct CircuitBreaker {
    settings: BreakerSettings,
    inner: Mutex<Inner>,
}

/// Why a call was refused: the circuit is open (or its one trial call is under way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Until the next trial call may go.
    pub retry_in: Duration,
}

/// A call let through by the breaker; report its outcome with [`Permit::record`]. Dropped
/// without an outcome (the client went away), it counts as neither.
#[derive(Debug)]
pub struct Permit {
    breaker: Arc<CircuitBreaker>,
    trial: bool,
    done: bool,
}

impl Permit {
    /// Reports the call's outcome.
    pub fn record(mut self, success: bool) {
        self.done = true;
        self.breaker.record(self.trial, success, Instant::now());
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done && self.trial {
            let mut i = self.breaker.lock();
            if let Phase::HalfOpen { trial_in_flight } = &mut i.phase {
                *trial_in_flight = false;
            }
        }
    }
}

impl CircuitBreaker {
    pub fn new(settings: BreakerSettings) -> Arc<CircuitBreaker> {
        Arc::new(CircuitBreaker {
            settings,
            inner: Mutex::new(Inner {
                phase: Phase::Closed,
                window_start: Instant::now(),
                calls: 0,
                failures: 0,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state at `now`.
    pub fn state(&self, now: Instant) -> CircuitState {
        match self.lock().phase {
            Phase::Closed => CircuitState::Closed,
            Phase::Open { until } if now < until => CircuitState::Open,
            Phase::Open { .. } | Phase::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// Whether a call would be refused now (without taking the trial slot): how long until one
    /// may go.
    pub fn admit_check(&self, now: Instant) -> Option<Duration> {
        match self.lock().phase {
            Phase::Open { until } if now < until => Some(until - now),
            Phase::HalfOpen {
                trial_in_flight: true,
            } => Some(Duration::from_secs(1)),
            _ => None,
        }
    }

    /// Lets a call through, or says how long until one may go.
    pub fn admit(self: &Arc<Self>, now: Instant) -> Result<Permit, Refused> {
        let mut i = self.lock();
        let trial = match i.phase {
            Phase::Closed => false,
            Phase::Open { until } if now < until => {
                return Err(Refused {
                    retry_in: until - now,
                })
            }
            Phase::HalfOpen {
                trial_in_flight: true,
            } => {
                return Err(Refused {
                    retry_in: Duration::from_secs(1),
                })
            }
            Phase::Open { .. } | Phase::HalfOpen { .. } => {
                i.phase = Phase::HalfOpen {
                    trial_in_flight: true,
                };
                true
            }
        };
        Ok(Permit {
            breaker: self.clone(),
            trial,
            done: false,
        })
    }

    fn record(&self, trial: bool, success: bool, now: Instant) {
        let s = self.settings;
        let mut i = self.lock();
        if trial {
            i.phase = if success {
                Phase::Closed
            } else {
                Phase::Open {
                    until: now + s.cooldown,
                }
            };
            i.window_start = now;
            i.calls = 0;
            i.failures = 0;
            return;
        }
        if !matches!(i.phase, Phase::Closed) {
            // A call admitted before the circuit opened: its outcome no longer matters.
            return;
        }
        if now.duration_since(i.window_start) >= s.window {
            i.window_start = now;
            i.calls = 0;
            i.failures = 0;
        }
        i.calls += 1;
        i.failures += u64::from(!success);
        if i.calls >= s.min_calls && i.failures as f64 >= s.failure_ratio * i.calls as f64 {
            tracing::warn!(
                "circuit opened: {} of the last {} calls failed; refusing calls for {:?}",
                i.failures,
                i.calls,
                s.cooldown
            );
            i.phase = Phase::Open {
                until: now + s.cooldown,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::parse_retry_after;
    use http::HeaderValue;
    use std::time::SystemTime;

    fn breaker() -> Arc<CircuitBreaker> {
        CircuitBreaker::new(BreakerSettings {
            failure_ratio: 0.5,
            min_calls: 4,
            window: Duration::from_secs(10),
            cooldown: Duration::from_secs(5),
        })
    }

    #[test]
    fn opens_on_the_failure_ratio_and_half_opens_after_the_cool_down() {
        let b = breaker();
        let t0 = Instant::now();
        for ok in [true, false, true] {
            b.admit(t0).unwrap().record(ok);
        }
        assert_eq!(b.state(t0), CircuitState::Closed, "3 calls < min_calls");
        b.admit(t0).unwrap().record(false);
        let now = Instant::now();
        assert_eq!(b.state(now), CircuitState::Open, "2 of 4 failed");
        assert!(b.admit(now).is_err());
        let later = now + Duration::from_secs(6);
        assert_eq!(b.state(later), CircuitState::HalfOpen);
        let trial = b.admit(later).unwrap();
        assert!(b.admit(later).is_err(), "one trial call at a time");
        trial.record(false);
        assert_eq!(b.state(Instant::now()), CircuitState::Open, "failed trial");
        let later = Instant::now() + Duration::from_secs(6);
        b.admit(later).unwrap().record(true);
        assert_eq!(b.state(later), CircuitState::Closed);
        assert!(b.admit(later).is_ok());
    }

    #[test]
    fn a_dropped_trial_frees_the_slot() {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..4 {
            b.admit(t0).unwrap().record(false);
        }
        let later = Instant::now() + Duration::from_secs(6);
        drop(b.admit(later).unwrap());
        assert!(b.admit(later).is_ok());
    }

    #[test]
    fn backoff_is_jittered_capped_and_honours_retry_after() {
        let s = RetrySettings {
            max_retries: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
        };
        for retry in 0..8 {
            let d = backoff(&s, retry, None).unwrap();
            let ceiling = Duration::from_millis((100u64 << retry).min(1000));
            assert!(d <= ceiling, "{d:?} > {ceiling:?}");
        }
        assert!(
            backoff(&s, 0, Some(Duration::from_millis(700))).unwrap() >= Duration::from_millis(700)
        );
        assert_eq!(backoff(&s, 0, Some(Duration::from_secs(2))), None);
        let now = SystemTime::now();
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("3"), now),
            Some(Duration::from_secs(3))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(120));
        let d = parse_retry_after(&HeaderValue::from_str(&date).unwrap(), now).unwrap();
        assert!(d > Duration::from_secs(118) && d <= Duration::from_secs(120));
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("soon"), now),
            None
        );
    }
}
