//! The state store on a Redis server, shared by every replica that names it: one server-side
//! script per admission and one per settlement (`admit.lua`, `settle.lua`, each with
//! `common.lua` prepended), each atomic, so
//! concurrent replicas cannot together take more than a budget or a rate holds.
//!
//! The client is the `redis` crate's [`ConnectionManager`]: one multiplexed connection that
//! reconnects by itself after the server goes away (docs/architecture.md says why this crate).
//! Every call is bounded by `state.timeout_ms`; a call that runs out of time is reported as
//! [`StoreError::Timeout`] and the request goes on per `state.on_unavailable`.
//!
//! Keys (`<p>` is `state.key_prefix`):
//! - `<p>budget:<tenant>:<day|month>:<index>`: a budget window (hash: `spent`, `reserved`,
//!   `r:<id>`), with `…:lapse` (zset of reservation ids by lapse time); kept until a day after
//!   its period ends. `<tenant>` is `*` for the gateway-wide budget; `<index>` counts UTC days,
//!   or months, since 1970.
//! - `<p>rate:<tenant>:<requests|tokens>`: a token bucket (hash: `level`, `at` in ms); kept 2
//!   minutes after its last use (a full bucket is the same as none).
//! - `<p>settled:<id>`: a settlement's marker, kept twice the reservation TTL.
//! - `<p>sticky:<session>`: a sticky conversation's pin (`model` and `rule`, a newline between),
//!   kept `sticky.ttl_s` after the conversation's last turn. `<session>` is a SHA-256.

use super::{
    window_ttl, Admitted, Ask, Health, Limits, Refused, Remaining, StateStore, StoreError, Ticket,
};
use crate::accounting::budget::{Exhausted, Period};
use crate::accounting::rate_limit::{need, Limit, RateLimited};
use crate::policy::StateSettings;
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

/// USD to the store's integer nano-USD. Reservations round up, so that rounding never lets a
/// request past a budget.
fn nano_up(usd: f64) -> i64 {
    (usd * 1e9).ceil() as i64
}

fn nano(usd: f64) -> i64 {
    (usd * 1e9).round() as i64
}

fn usd(nano: i64) -> f64 {
    nano as f64 / 1e9
}

/// Budgets and rate limits on a Redis server.
pub struct RedisStore {
    limits: Limits,
    client: redis::Client,
    /// Made on first use (it needs the runtime), then shared.
    conn: OnceLock<Result<ConnectionManager, String>>,
    timeout: Duration,
    ttl: Duration,
    prefix: String,
    admit: redis::Script,
    settle: redis::Script,
    remaining: redis::Script,
    /// The last call's failure (`None`: it was answered).
    last_error: Mutex<Option<String>>,
}

impl RedisStore {
    /// A store of `limits` on the server of `settings.redis_url`. Connects on first use.
    ///
    /// Errors: a URL the client rejects (not quoted: it may hold a password).
    pub fn new(limits: Limits, settings: &StateSettings) -> Result<RedisStore, String> {
        let url = settings
            .redis_url
            .as_ref()
            .ok_or("the redis backend needs a url")?;
        let client = redis::Client::open(url.expose())
            .map_err(|e| format!("invalid Redis URL ({})", e.category()))?;
        Ok(RedisStore {
            limits,
            client,
            conn: OnceLock::new(),
            timeout: settings.timeout,
            ttl: settings.reservation_ttl,
            prefix: settings.key_prefix.clone(),
            admit: redis::Script::new(concat!(
                include_str!("common.lua"),
                include_str!("admit.lua")
            )),
            settle: redis::Script::new(concat!(
                include_str!("common.lua"),
                include_str!("settle.lua")
            )),
            remaining: redis::Script::new(concat!(
                include_str!("common.lua"),
                include_str!("remaining.lua")
            )),
            last_error: Mutex::new(None),
        })
    }

    fn connection(&self) -> Result<ConnectionManager, StoreError> {
        let made = self.conn.get_or_init(|| {
            // Reconnection is the manager's: attempts back off from 50 ms to 2 s, each bounded
            // by the connect timeout; a command that finds the connection broken starts anew.
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.timeout.max(Duration::from_secs(1))))
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(Duration::from_secs(2))
                .set_number_of_retries(3);
            ConnectionManager::new_lazy_with_config(self.client.clone(), config)
                .map_err(|e| e.category().to_string())
        });
        made.clone().map_err(StoreError::Unreachable)
    }

    /// Runs one script invocation within the timeout, and notes how it went.
    async fn run<T: redis::FromRedisValue>(
        &self,
        call: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let result = match self.connection() {
            Err(e) => Err(e),
            Ok(mut conn) => {
                self.answer(tokio::time::timeout(self.timeout, call.invoke_async(&mut conn)).await)
            }
        };
        self.note(result)
    }

    /// Runs one command within the timeout, and notes how it went.
    async fn command<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let result = match self.connection() {
            Err(e) => Err(e),
            Ok(mut conn) => {
                self.answer(tokio::time::timeout(self.timeout, cmd.query_async(&mut conn)).await)
            }
        };
        self.note(result)
    }

    /// A call's outcome as the store's error kinds.
    fn answer<T>(
        &self,
        r: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, StoreError> {
        match r {
            Err(_) => Err(StoreError::Timeout(self.timeout.as_millis() as u64)),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if e.is_io_error() || e.is_connection_dropped() => {
                let why = if e.is_connection_refusal() {
                    "connection refused"
                } else if e.is_timeout() {
                    "timed out"
                } else {
                    "connection lost"
                };
                Err(StoreError::Unreachable(why.to_string()))
            }
            Ok(Err(e)) => Err(StoreError::Failed(e.category().to_string())),
        }
    }

    /// Notes whether the store answered (logged when that changes), and passes `result` on.
    fn note<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        let now = result.as_ref().err().map(ToString::to_string);
        let mut last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        // Logged when it changes, not per request: an outage is two lines, however long.
        match (&*last, &now) {
            (None, Some(e)) => tracing::warn!("the Redis state store is unavailable: {e}"),
            (Some(_), None) => tracing::info!("the Redis state store answers again"),
            _ => {}
        }
        *last = now;
        result
    }

    fn window_keys(&self, (who, period, index): &(String, Period, i64)) -> (String, String) {
        let h = format!("{}budget:{who}:{}:{index}", self.prefix, period.label());
        let z = format!("{h}:lapse");
        (h, z)
    }

    fn bucket_key(&self, label: &str, limit: Limit) -> String {
        format!("{}rate:{label}:{}", self.prefix, limit.label())
    }
}

#[async_trait]
impl StateStore for RedisStore {
    async fn admit(&self, ask: &Ask<'_>, ticket: &mut Ticket) -> Result<Admitted, Refused> {
        if !self.limits.needs_store(ask, ticket) {
            return Ok(Admitted::Yes);
        }
        let wall = SystemTime::now();
        // The budget windows: where a new reservation goes, else where the old one is.
        let reserving = ask
            .reserve_usd
            .filter(|_| self.limits.budgets_of(ask.tenant).next().is_some());
        let windows: Vec<(String, Period, i64, f64)> = match reserving {
            Some(_) => self
                .limits
                .budgets_of(ask.tenant)
                .map(|(who, p, limit)| (who.clone(), *p, p.index(wall), *limit))
                .collect(),
            None => ticket
                .windows
                .iter()
                .map(|(who, p, i)| (who.clone(), *p, *i, 0.0))
                .collect(),
        };
        let mut buckets: Vec<(Limit, u64, u64)> = vec![];
        if let (Some(tokens), Some(rate)) = (ask.take_rate, self.limits.rate_of(&ticket.rate_label))
        {
            if let Some(n) = rate.requests_per_minute {
                buckets.push((Limit::Requests, n, 1));
            }
            if let Some(n) = rate.tokens_per_minute {
                buckets.push((Limit::Tokens, n, tokens));
            }
        }
        let amount = reserving.map(nano_up).unwrap_or(0);
        let mut call = self.admit.prepare_invoke();
        call.arg(&ticket.id)
            .arg(amount)
            .arg(self.ttl.as_millis() as u64)
            .arg(windows.len())
            .arg(buckets.len())
            .arg(u8::from(!ticket.windows.is_empty()));
        for (who, p, index, limit) in &windows {
            let (h, z) = self.window_keys(&(who.clone(), *p, *index));
            call.key(h).key(z);
            call.arg(nano(*limit))
                .arg(window_ttl(*p, wall).as_millis() as u64);
        }
        for (limit, per_minute, take) in &buckets {
            call.key(self.bucket_key(&ticket.rate_label, *limit));
            call.arg(*per_minute).arg(need(*limit)).arg(*take);
        }
        let took_tokens = buckets
            .iter()
            .find(|(l, _, _)| *l == Limit::Tokens)
            .map(|(_, _, t)| *t);
        let reserved_windows = || -> Vec<(String, Period, i64)> {
            windows
                .iter()
                .map(|(w, p, i, _)| (w.clone(), *p, *i))
                .collect()
        };
        let reply: Vec<i64> = match self.run(&call).await {
            Ok(r) => r,
            Err(e) => {
                // The script may still run later (the server was slow, not gone): the ticket
                // holds what was asked, so that its settlement gives it back.
                if ask.take_rate.is_some() {
                    ticket.tokens = took_tokens;
                }
                if reserving.is_some() {
                    ticket.windows = reserved_windows();
                    ticket.reserved_usd = usd(amount);
                }
                return Err(Refused::Unavailable(e));
            }
        };
        let refused_at = |i: i64| usize::try_from(i - 1).ok();
        match reply.as_slice() {
            [1, i, wait_ms, ..] => {
                let (limit, per_minute, _) = refused_at(*i)
                    .and_then(|i| buckets.get(i).copied())
                    .ok_or_else(|| {
                    Refused::Unavailable(StoreError::Failed("bad reply".into()))
                })?;
                Err(Refused::RateLimited(RateLimited {
                    limit,
                    per_minute,
                    retry_after: Duration::from_millis((*wait_ms).max(1) as u64),
                }))
            }
            [code, rest @ ..] if *code == 0 || *code == 2 => {
                if ask.take_rate.is_some() {
                    ticket.tokens = took_tokens;
                }
                ticket.windows.clear();
                ticket.reserved_usd = 0.0;
                if let [i, spent, reserved] = rest {
                    let (who, period, _, limit) = refused_at(*i)
                        .and_then(|i| windows.get(i).cloned())
                        .ok_or_else(|| {
                            Refused::Unavailable(StoreError::Failed("bad reply".into()))
                        })?;
                    return Ok(Admitted::OverBudget(Exhausted {
                        tenant: who,
                        period,
                        limit,
                        spent: usd(*spent),
                        reserved: usd(*reserved),
                    }));
                }
                if reserving.is_some() {
                    ticket.windows = reserved_windows();
                    ticket.reserved_usd = usd(amount);
                }
                Ok(Admitted::Yes)
            }
            _ => Err(Refused::Unavailable(StoreError::Failed(
                "unexpected script reply".into(),
            ))),
        }
    }

    async fn settle(
        &self,
        ticket: &Ticket,
        spent_usd: f64,
        used_tokens: u64,
    ) -> Result<(), StoreError> {
        if !ticket.holds() {
            return Ok(());
        }
        let wall = SystemTime::now();
        let bucket = ticket.tokens.and_then(|reserved| {
            let per_minute = self.limits.rate_of(&ticket.rate_label)?.tokens_per_minute?;
            Some((per_minute, reserved))
        });
        let mut call = self.settle.prepare_invoke();
        call.key(format!("{}settled:{}", self.prefix, ticket.id));
        call.arg(&ticket.id)
            .arg(nano(spent_usd).max(0))
            .arg((2 * self.ttl).as_millis() as u64)
            .arg(ticket.windows.len())
            .arg(usize::from(bucket.is_some()));
        for w in &ticket.windows {
            let (h, z) = self.window_keys(w);
            call.key(h).key(z);
        }
        for (_, p, _) in &ticket.windows {
            call.arg(window_ttl(*p, wall).as_millis() as u64);
        }
        if let Some((per_minute, reserved)) = bucket {
            call.key(self.bucket_key(&ticket.rate_label, Limit::Tokens));
            call.arg(per_minute).arg(reserved).arg(used_tokens);
        }
        self.run::<i64>(&call).await.map(|_| ())
    }

    async fn pinned(&self, session: &str) -> Result<Option<String>, StoreError> {
        let key = format!("{}sticky:{session}", self.prefix);
        self.command(redis::cmd("GET").arg(key)).await
    }

    async fn pin(&self, session: &str, value: &str, ttl: Duration) -> Result<(), StoreError> {
        let key = format!("{}sticky:{session}", self.prefix);
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self.command(redis::cmd("SET").arg(key).arg(value).arg("PX").arg(ttl_ms))
            .await
    }

    async fn remaining(&self) -> Result<Vec<Remaining>, StoreError> {
        // With no budgets the script reads nothing: still a round trip, which `/readyz` uses
        // to tell whether the server answers.
        let wall = SystemTime::now();
        let mut call = self.remaining.prepare_invoke();
        for (who, p, _) in &self.limits.budgets {
            let (h, z) = self.window_keys(&(who.clone(), *p, p.index(wall)));
            call.key(h).key(z);
        }
        let reply: Vec<i64> = self.run(&call).await?;
        Ok(self
            .limits
            .budgets
            .iter()
            .zip(reply.chunks(2))
            .map(|((who, period, limit), w)| {
                let taken = w.iter().map(|n| usd(*n)).sum::<f64>();
                Remaining {
                    tenant: who.clone(),
                    period: *period,
                    usd: (limit - taken).max(0.0),
                    limit_usd: *limit,
                }
            })
            .collect())
    }

    fn health(&self) -> Health {
        let last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        Health {
            backend: "redis",
            available: last.is_none(),
            error: last.clone(),
        }
    }

    fn shared(&self) -> bool {
        true
    }
}
