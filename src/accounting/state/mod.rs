//! Budget and rate-limit state, behind one store trait with two implementations: this
//! process's memory ([`MemoryStore`], the default) and Redis ([`RedisStore`], shared by every
//! replica that names the same server). Both keep the same semantics:
//!
//! - **Admission** ([`StateStore::admit`], one round trip): a request takes one request and its
//!   prompt estimate from its tenant's token buckets (requests and tokens per minute, each
//!   holding one minute's worth), gives back its own earlier budget reservation (a fallback's),
//!   and reserves the worst-case cost of the call it is about to make against every budget that
//!   applies (the gateway's and its tenant's, per UTC day and month). A rate limit refuses
//!   before anything is taken; a budget that cannot take the reservation refuses it after the
//!   rate was taken (the request may still be answered on the box).
//! - **Settlement** ([`StateStore::settle`], one round trip): the reservation is replaced by the
//!   real cost, and the tokens taken by the real count. A settlement names its request's
//!   reservation id and counts once however often it is retried.
//! - A reservation never settled (its replica died) lapses after `reservation_ttl`.
//!
//! Amounts cross the trait in USD; the Redis store keeps them as integer nano-USD.

mod memory;
mod pins;
mod redis_store;

pub use memory::MemoryStore;
pub use redis_store::RedisStore;

use super::budget::{Exhausted, Period, GLOBAL};
use super::rate_limit::RateLimited;
use crate::policy::{BudgetSettings, Policy, Rate, RateLimitSettings};
use async_trait::async_trait;
use std::time::{Duration, SystemTime};

/// The tenant label of a caller on an open gateway (rate limits and metrics).
pub const ANONYMOUS: &str = "anonymous";

/// What one admission asks of the store.
#[derive(Debug, Clone)]
pub struct Ask<'a> {
    /// The caller's tenant (`None`: an open gateway, whose caller meets only the gateway-wide
    /// budgets and the default rate).
    pub tenant: Option<&'a str>,
    /// Take one request and this many tokens (the prompt estimate) from the caller's rate
    /// limits: the request's first admission only.
    pub take_rate: Option<u64>,
    /// Reserve this many USD against every budget that applies (a cloud call).
    pub reserve_usd: Option<f64>,
}

/// What the store holds for one request, to settle when it ends.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ticket {
    /// The request's reservation id (random, 128 bits): what makes a settlement count once.
    pub id: String,
    /// The budget windows (tenant, period, period index) the reservation is held in.
    pub windows: Vec<(String, Period, i64)>,
    /// USD reserved in each of `windows` (0: none).
    pub reserved_usd: f64,
    /// Tokens taken from the caller's tokens-per-minute bucket (`None`: no token limit).
    pub tokens: Option<u64>,
    /// The caller's rate-limit label (tenant, or [`ANONYMOUS`]).
    pub rate_label: String,
}

impl Ticket {
    /// A new request's empty ticket, with a fresh reservation id.
    pub fn new(tenant: Option<&str>) -> Ticket {
        Ticket {
            id: format!("{:032x}", fastrand::u128(..)),
            rate_label: tenant.unwrap_or(ANONYMOUS).to_string(),
            ..Ticket::default()
        }
    }

    /// Whether the store holds anything of this request (a settlement has work to do).
    pub fn holds(&self) -> bool {
        !self.windows.is_empty() || self.tokens.is_some()
    }
}

/// The store's answer to an admission.
#[derive(Debug, Clone, PartialEq)]
pub enum Admitted {
    /// Everything asked was taken.
    Yes,
    /// The rate was taken (when asked), but a budget cannot take the reservation; nothing is
    /// reserved.
    OverBudget(Exhausted),
}

/// An admission refused before anything was taken.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refused {
    #[error("{0}")]
    RateLimited(RateLimited),
    #[error("{0}")]
    Unavailable(StoreError),
}

/// A store that did not answer. Messages never quote the store's address or credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("the state store did not answer within {0} ms")]
    Timeout(u64),
    #[error("the state store cannot be reached ({0})")]
    Unreachable(String),
    #[error("the state store failed a command ({0})")]
    Failed(String),
}

/// The remaining USD of one budget.
#[derive(Debug, Clone, PartialEq)]
pub struct Remaining {
    pub tenant: String,
    pub period: Period,
    /// What is left: limit − spent − reserved, at least 0.
    pub usd: f64,
    /// The budget's limit.
    pub limit_usd: f64,
}

/// How the store answered lately, for `/readyz` and `switchyard_state_up`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// `memory` or `redis`.
    pub backend: &'static str,
    /// Whether the last call was answered in time.
    pub available: bool,
    /// Why not, when it was not.
    pub error: Option<String>,
}

/// Where budget and rate-limit state lives. See the module documentation.
#[async_trait]
pub trait StateStore: Send + Sync {
    /// Admits one step of a request: see [`Ask`]. `ticket` is the request's own (from
    /// [`Ticket::new`]); on return it says what the store holds for the request. Before a
    /// new reservation, any earlier one of the same ticket is given back.
    ///
    /// Errors: [`Refused::RateLimited`] (nothing taken), or [`Refused::Unavailable`] when the
    /// store did not answer in time; the ticket then counts as holding what was asked, so
    /// that its settlement gives back whatever a late-arriving admission took.
    async fn admit(&self, ask: &Ask<'_>, ticket: &mut Ticket) -> Result<Admitted, Refused>;

    /// Settles a request: gives back its reservation, adds `spent_usd` to every budget window
    /// of the ticket, and corrects the tokens taken to `used_tokens`. Idempotent per ticket id.
    ///
    /// Errors: [`StoreError`] when the store did not answer in time (the caller may retry).
    async fn settle(
        &self,
        ticket: &Ticket,
        spent_usd: f64,
        used_tokens: u64,
    ) -> Result<(), StoreError>;

    /// Every configured budget's remaining USD now (limit − spent − reserved, at least 0).
    async fn remaining(&self) -> Result<Vec<Remaining>, StoreError>;

    /// A sticky conversation's pin (`session`: the conversation's key), when it has one that
    /// has not lapsed.
    ///
    /// Errors: [`StoreError`] when the store did not answer in time.
    async fn pinned(&self, session: &str) -> Result<Option<String>, StoreError>;

    /// Pins a sticky conversation to `value` for `ttl`, replacing any earlier pin.
    ///
    /// Errors: [`StoreError`] when the store did not answer in time.
    async fn pin(&self, session: &str, value: &str, ttl: Duration) -> Result<(), StoreError>;

    /// How the store answered lately.
    fn health(&self) -> Health;

    /// Whether another replica may share this state (a settlement is then worth retrying in the
    /// background when the store is slow).
    fn shared(&self) -> bool;
}

/// The limits a store enforces, compiled from a policy.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Limits {
    /// (tenant or [`GLOBAL`], period, USD).
    pub budgets: Vec<(String, Period, f64)>,
    pub rates: Option<RateLimitSettings>,
}

impl Limits {
    /// The budget and rate limits of `policy`, when it sets any.
    pub fn of(policy: &Policy) -> Option<Limits> {
        if policy.budgets.is_none() && policy.rate_limits.is_none() {
            return None;
        }
        Some(Limits {
            budgets: policy.budgets.as_ref().map(budget_list).unwrap_or_default(),
            rates: policy.rate_limits.clone(),
        })
    }

    /// The budgets that apply to `tenant` (`None`: the gateway-wide ones only).
    pub fn budgets_of<'a>(
        &'a self,
        tenant: Option<&'a str>,
    ) -> impl Iterator<Item = &'a (String, Period, f64)> + 'a {
        self.budgets
            .iter()
            .filter(move |(who, _, _)| who == GLOBAL || Some(who.as_str()) == tenant)
    }

    /// The rate of the caller labelled `label`.
    pub fn rate_of(&self, label: &str) -> Option<Rate> {
        self.rates.as_ref().and_then(|r| r.rate_of(label))
    }

    /// Whether an admission of `ask` has anything to do: a rate to take, a reservation to make,
    /// or an earlier one of `ticket` to give back.
    pub fn needs_store(&self, ask: &Ask<'_>, ticket: &Ticket) -> bool {
        let rate = ask.take_rate.is_some()
            && self
                .rate_of(&ticket.rate_label)
                .is_some_and(|r| r.requests_per_minute.is_some() || r.tokens_per_minute.is_some());
        let reserve = ask.reserve_usd.is_some() && self.budgets_of(ask.tenant).next().is_some();
        rate || reserve || !ticket.windows.is_empty()
    }
}

fn budget_list(settings: &BudgetSettings) -> Vec<(String, Period, f64)> {
    let mut out = vec![];
    let mut add = |who: &str, l: &crate::policy::BudgetLimits| {
        if let Some(d) = l.daily_usd {
            out.push((who.to_string(), Period::Day, d));
        }
        if let Some(m) = l.monthly_usd {
            out.push((who.to_string(), Period::Month, m));
        }
    };
    if let Some(g) = &settings.global {
        add(GLOBAL, g);
    }
    for (t, l) in &settings.tenants {
        add(t, l);
    }
    out
}

/// The store of `policy`'s budgets, rate limits and sticky conversations (`None` when it has
/// none of them): in this process's memory, or on the Redis server of `state.url`. No
/// connection is made here; the Redis store connects on first use and reconnects by itself.
///
/// Errors: a Redis URL the client rejects (the message does not quote it).
pub fn open(policy: &Policy) -> Result<Option<std::sync::Arc<dyn StateStore>>, String> {
    let limits = match Limits::of(policy) {
        Some(l) => l,
        None if policy.uses_sticky() => Limits::default(),
        None => return Ok(None),
    };
    Ok(Some(match &policy.state.redis_url {
        None => std::sync::Arc::new(MemoryStore::new(limits)),
        Some(_) => std::sync::Arc::new(RedisStore::new(limits, &policy.state)?),
    }))
}

/// Whether two policies would build the same store (a reload keeps it, and its state: budget
/// spending, rate buckets, pins). Turning sticky conversations on or off keeps it when the
/// limits alone already need one.
pub fn same_store(a: &Policy, b: &Policy) -> bool {
    let has_store = |p: &Policy| Limits::of(p).is_some() || p.uses_sticky();
    a.budgets == b.budgets
        && a.rate_limits == b.rate_limits
        && a.state == b.state
        && has_store(a) == has_store(b)
}

/// Seconds a budget window's key is kept after its period began: the rest of the period and a
/// day more (so that a late settlement still finds it).
fn window_ttl(period: Period, now: SystemTime) -> Duration {
    Duration::from_secs(period.seconds_left(now) + 86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(extra: &str) -> Policy {
        let src = format!(
            "version: 1\nmodels:\n  small: {{ kind: local }}\ndefault: {{ route: small }}\n{extra}"
        );
        crate::policy::parse(&src, "t.yaml", &|_| None).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_reload_keeps_the_store_unless_what_it_holds_changes() {
        let budget = "budgets:\n  global: { daily_usd: 5 }\n";
        let sticky = "sticky: { ttl_s: 60 }\n";
        let (plain, budgeted) = (policy(""), policy(budget));
        let both = policy(&format!("{budget}{sticky}"));
        // Sticky turned on beside a budget: the same store (spending and buckets stay).
        assert!(same_store(&budgeted, &both) && same_store(&both, &budgeted));
        // Other limits, or a store where there was none: another store.
        assert!(!same_store(
            &budgeted,
            &policy("budgets:\n  global: { daily_usd: 6 }\n")
        ));
        assert!(!same_store(&plain, &policy(sticky)));
        assert!(same_store(&plain, &plain));
    }
}
