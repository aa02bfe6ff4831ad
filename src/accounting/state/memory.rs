//! The state store in this process's memory: each replica counts on its own.

use super::pins::Pins;
use super::{Admitted, Ask, Health, Limits, Refused, Remaining, StateStore, StoreError, Ticket};
use crate::accounting::budget::{Exhausted, Period};
use crate::accounting::rate_limit::{need, Bucket, Limit, RateLimited};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// One budget's spending in one period.
#[derive(Debug, Default)]
struct Window {
    spent: f64,
    reserved: f64,
    /// Reservations in flight: id → (USD, when it lapses).
    held: HashMap<String, (f64, Instant)>,
    /// The earliest lapse among `held`.
    next_lapse: Option<Instant>,
}

impl Window {
    /// Drops the reservations that lapsed by `now`.
    fn lapse(&mut self, now: Instant) {
        if self.next_lapse.is_none_or(|t| t > now) {
            return;
        }
        self.held.retain(|_, (_, until)| *until > now);
        self.reserved = self.held.values().map(|(usd, _)| usd).sum();
        self.next_lapse = self.held.values().map(|(_, until)| *until).min();
    }

    fn release(&mut self, id: &str) {
        if let Some((usd, _)) = self.held.remove(id) {
            self.reserved = (self.reserved - usd).max(0.0);
        }
    }
}

type WindowKey = (String, Period, i64);

#[derive(Debug, Default)]
struct State {
    windows: HashMap<WindowKey, Window>,
    /// (rate label, limit) → bucket.
    buckets: HashMap<(String, Limit), Bucket>,
    /// Settled ticket ids, and the same in the order they were settled (to forget them).
    settled: std::collections::HashSet<String>,
    settled_order: std::collections::VecDeque<(Instant, String)>,
}

/// How long the memory store remembers a settled ticket. In one process a settlement is sent
/// once (it cannot fail), so this only catches a repeat soon after; Redis keeps its markers
/// twice the reservation TTL, for settlements retried across an outage.
const SETTLED_MEMORY: Duration = Duration::from_secs(60);

impl State {
    fn window(&mut self, key: &WindowKey) -> &mut Window {
        if !self.windows.contains_key(key) {
            // A new period: the windows of earlier ones are no longer read.
            let (who, period, index) = key;
            self.windows
                .retain(|(w, p, i), _| !(w == who && p == period && *i < *index));
            self.windows.insert(key.clone(), Window::default());
        }
        self.windows.get_mut(key).expect("inserted above")
    }
}

/// Most sticky conversations held in memory; past it, lapsed pins are dropped, then the
/// conversation idle longest ([`Pins`]).
const MAX_PINS: usize = 65_536;

/// Budgets, rate limits and sticky conversations in this process's memory.
pub struct MemoryStore {
    limits: Limits,
    ttl: Duration,
    state: Mutex<State>,
    /// Sticky conversations' pins and when each lapses.
    pins: Mutex<Pins>,
}

impl MemoryStore {
    /// A store of `limits` whose unsettled reservations lapse after 10 minutes.
    pub fn new(limits: Limits) -> MemoryStore {
        MemoryStore::with_ttl(limits, Duration::from_secs(600))
    }

    /// A store of `limits` whose unsettled reservations lapse after `ttl`.
    pub fn with_ttl(limits: Limits, ttl: Duration) -> MemoryStore {
        MemoryStore {
            limits,
            ttl,
            state: Mutex::default(),
            pins: Mutex::new(Pins::new(MAX_PINS)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// [`StateStore::admit`] at the given monotonic and wall-clock times.
    pub fn admit_at(
        &self,
        ask: &Ask<'_>,
        ticket: &mut Ticket,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Admitted, RateLimited> {
        let mut st = self.lock();
        if let (Some(tokens), Some(rate)) = (ask.take_rate, self.limits.rate_of(&ticket.rate_label))
        {
            let limits = [
                (Limit::Requests, rate.requests_per_minute, 1),
                (Limit::Tokens, rate.tokens_per_minute, tokens),
            ];
            for (limit, per_minute, _) in limits {
                let Some(per_minute) = per_minute else {
                    continue;
                };
                let b = st
                    .buckets
                    .entry((ticket.rate_label.clone(), limit))
                    .or_insert_with(|| Bucket::new(per_minute, now));
                b.capacity = per_minute as f64;
                b.refill(now);
                let wait = b.wait_for(need(limit));
                if !wait.is_zero() {
                    return Err(RateLimited {
                        limit,
                        per_minute,
                        retry_after: wait,
                    });
                }
            }
            for (limit, per_minute, take) in limits {
                if per_minute.is_some() {
                    if let Some(b) = st.buckets.get_mut(&(ticket.rate_label.clone(), limit)) {
                        b.level -= take as f64;
                    }
                    if limit == Limit::Tokens {
                        ticket.tokens = Some(tokens);
                    }
                }
            }
        }
        for key in std::mem::take(&mut ticket.windows) {
            if let Some(w) = st.windows.get_mut(&key) {
                w.release(&ticket.id);
            }
        }
        ticket.reserved_usd = 0.0;
        let Some(amount) = ask.reserve_usd else {
            return Ok(Admitted::Yes);
        };
        let mut keys = vec![];
        for (who, period, limit) in self.limits.budgets_of(ask.tenant) {
            let key = (who.clone(), *period, period.index(wall));
            let w = st.window(&key);
            w.lapse(now);
            if w.spent + w.reserved + amount > *limit {
                return Ok(Admitted::OverBudget(Exhausted {
                    tenant: who.clone(),
                    period: *period,
                    limit: *limit,
                    spent: w.spent,
                    reserved: w.reserved,
                }));
            }
            keys.push(key);
        }
        let until = now + self.ttl;
        for key in &keys {
            let w = st.window(key);
            w.held.insert(ticket.id.clone(), (amount, until));
            w.reserved += amount;
            w.next_lapse = Some(w.next_lapse.map_or(until, |t| t.min(until)));
        }
        if !keys.is_empty() {
            ticket.windows = keys;
            ticket.reserved_usd = amount;
        }
        Ok(Admitted::Yes)
    }

    /// [`StateStore::settle`] at the given monotonic time.
    pub fn settle_at(&self, ticket: &Ticket, spent_usd: f64, used_tokens: u64, now: Instant) {
        let mut st = self.lock();
        while let Some((at, _)) = st.settled_order.front() {
            if now.saturating_duration_since(*at) < SETTLED_MEMORY {
                break;
            }
            if let Some((_, id)) = st.settled_order.pop_front() {
                st.settled.remove(&id);
            }
        }
        if !st.settled.insert(ticket.id.clone()) {
            return;
        }
        st.settled_order.push_back((now, ticket.id.clone()));
        for key in &ticket.windows {
            let w = st.window(key);
            w.release(&ticket.id);
            w.spent += spent_usd;
        }
        if let Some(reserved) = ticket.tokens {
            if let Some(b) = st
                .buckets
                .get_mut(&(ticket.rate_label.clone(), Limit::Tokens))
            {
                b.refill(now);
                b.level = (b.level + reserved as f64 - used_tokens as f64).min(b.capacity);
            }
        }
    }

    /// [`StateStore::remaining`] at the given times.
    pub fn remaining_at(&self, now: Instant, wall: SystemTime) -> Vec<Remaining> {
        let mut st = self.lock();
        self.limits
            .budgets
            .iter()
            .map(|(who, period, limit)| {
                let w = st.window(&(who.clone(), *period, period.index(wall)));
                w.lapse(now);
                Remaining {
                    tenant: who.clone(),
                    period: *period,
                    usd: (limit - w.spent - w.reserved).max(0.0),
                    limit_usd: *limit,
                }
            })
            .collect()
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn admit(&self, ask: &Ask<'_>, ticket: &mut Ticket) -> Result<Admitted, Refused> {
        self.admit_at(ask, ticket, Instant::now(), SystemTime::now())
            .map_err(Refused::RateLimited)
    }

    async fn settle(
        &self,
        ticket: &Ticket,
        spent_usd: f64,
        used_tokens: u64,
    ) -> Result<(), StoreError> {
        self.settle_at(ticket, spent_usd, used_tokens, Instant::now());
        Ok(())
    }

    async fn remaining(&self) -> Result<Vec<Remaining>, StoreError> {
        Ok(self.remaining_at(Instant::now(), SystemTime::now()))
    }

    async fn pinned(&self, session: &str) -> Result<Option<String>, StoreError> {
        let pins = self.pins.lock().unwrap_or_else(|e| e.into_inner());
        Ok(pins.get(session, Instant::now()).map(str::to_string))
    }

    async fn pin(&self, session: &str, value: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut pins = self.pins.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        pins.set(session, value, now + ttl, now);
        Ok(())
    }

    fn health(&self) -> Health {
        Health {
            backend: "memory",
            available: true,
            error: None,
        }
    }

    fn shared(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::budget::GLOBAL;
    use crate::policy::{Rate, RateLimitSettings};
    use std::time::UNIX_EPOCH;

    fn budgets() -> MemoryStore {
        MemoryStore::new(Limits {
            budgets: vec![
                (GLOBAL.into(), Period::Day, 10.0),
                (GLOBAL.into(), Period::Month, 15.0),
                ("a".into(), Period::Day, 4.0),
            ],
            rates: None,
        })
    }

    fn reserve(tenant: Option<&str>, usd: f64) -> Ask<'_> {
        Ask {
            tenant,
            take_rate: None,
            reserve_usd: Some(usd),
        }
    }

    fn left(s: &MemoryStore, now: Instant, wall: SystemTime, who: &str, p: Period) -> f64 {
        s.remaining_at(now, wall)
            .into_iter()
            .find(|r| r.tenant == who && r.period == p)
            .map(|r| r.usd)
            .expect("a configured budget")
    }

    #[test]
    fn periods_roll_over_in_utc_and_reservations_lapse() {
        let s = budgets();
        let t0 = Instant::now();
        let day = UNIX_EPOCH + Duration::from_secs(40 * 86_400);
        let mut a = Ticket::new(Some("a"));
        assert_eq!(
            s.admit_at(&reserve(Some("a"), 3.0), &mut a, t0, day),
            Ok(Admitted::Yes)
        );
        s.settle_at(&a, 3.0, 0, t0);
        // The next UTC day starts afresh; the month keeps counting (3 of 15).
        let tomorrow = day + Duration::from_secs(86_400);
        assert_eq!(left(&s, t0, tomorrow, GLOBAL, Period::Day), 10.0);
        assert_eq!(left(&s, t0, tomorrow, GLOBAL, Period::Month), 12.0);
        // A reservation never settled lapses after the TTL.
        let mut b = Ticket::new(None);
        s.admit_at(&reserve(None, 5.0), &mut b, t0, tomorrow)
            .expect("admitted");
        assert_eq!(left(&s, t0, tomorrow, GLOBAL, Period::Day), 5.0);
        let later = t0 + Duration::from_secs(601);
        assert_eq!(left(&s, later, tomorrow, GLOBAL, Period::Day), 10.0);
    }

    #[test]
    fn requests_per_minute_refuse_then_refill() {
        let s = MemoryStore::new(Limits {
            budgets: vec![],
            rates: Some(RateLimitSettings {
                default: None,
                tenants: vec![(
                    "a".into(),
                    Rate {
                        requests_per_minute: Some(2),
                        tokens_per_minute: Some(600),
                    },
                )],
            }),
        });
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let ask = Ask {
            tenant: Some("a"),
            take_rate: Some(500),
            reserve_usd: None,
        };
        let mut first = Ticket::new(Some("a"));
        s.admit_at(&ask, &mut first, t0, wall).expect("first");
        // 700 used of the 500 taken: 100 tokens of debt, 10 s at 600 per minute.
        s.settle_at(&first, 0.0, 700, t0);
        let e = s
            .admit_at(&ask, &mut Ticket::new(Some("a")), t0, wall)
            .unwrap_err();
        assert_eq!(e.limit, Limit::Tokens);
        assert!((e.retry_after.as_secs_f64() - 10.0).abs() < 0.1, "{e:?}");
        let t1 = t0 + Duration::from_secs(11);
        let mut second = Ticket::new(Some("a"));
        s.admit_at(&ask, &mut second, t1, wall).expect("refilled");
        s.settle_at(&second, 0.0, 10, t1);
        let e = s
            .admit_at(&ask, &mut Ticket::new(Some("a")), t1, wall)
            .unwrap_err();
        assert_eq!(e.limit, Limit::Requests);
        // 2 per minute: 1 left at t0, 1 + 11/30 at t1, 11/30 after the second: 19 s to 1.
        assert!((e.retry_after.as_secs_f64() - 19.0).abs() < 0.1, "{e:?}");
        let mut b = Ticket::new(Some("b"));
        assert_eq!(
            s.admit_at(&ask, &mut b, t1, wall),
            Ok(Admitted::Yes),
            "no limit for b"
        );
        assert_eq!(b.tokens, None);
    }
}
