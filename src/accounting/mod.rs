//! Accounting: what each request costs and may spend. A [`Ledger`] holds a gateway's prices
//! (its policy), metrics, budgets and rate limits; a [`Settlement`] per request reserves from
//! them on the way in and settles tokens, cost, budgets and metrics once, however the request ends.

pub mod budget;
pub mod metrics;
pub mod rate_limit;
pub mod recorder;
mod settlement;
pub mod state;

pub use metrics::{LocalMetrics, Metrics};
pub use settlement::{End, Refusal, Settlement, NONE, RESERVED_OUTPUT_TOKENS};
pub use state::ANONYMOUS;

use crate::api::Usage;
use crate::policy::Policy;
use futures_util::FutureExt;
use state::{StateStore, Ticket};
use std::sync::Arc;
use std::time::Duration;

/// How often a settlement the state store did not take is sent again, and the first pause
/// between tries (doubled after each).
const SETTLE_TRIES: u32 = 6;
const SETTLE_FIRST_PAUSE: Duration = Duration::from_millis(100);

/// The accounting state of one gateway: prices (the policy), metrics, budgets, rate limits.
pub struct Ledger {
    pub policy: Arc<Policy>,
    pub metrics: Metrics,
    /// Budget and rate-limit state, when the policy sets budgets or rate limits.
    pub state: Option<Arc<dyn StateStore>>,
    /// Settlements still on their way to the state store (shared with the ledgers before and
    /// after a reload), for shutdown to wait for.
    settling: tokio_util::task::TaskTracker,
    /// Models whose estimated token counts were logged already (once per model).
    warned: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Ledger {
    /// The ledger of `policy`, counting into `metrics`. The state store carries over from
    /// `previous` when its settings did not change (a policy reload), else is opened anew.
    ///
    /// Errors: a state store that cannot be opened (see [`state::open`]).
    pub fn new(
        policy: Arc<Policy>,
        metrics: Metrics,
        previous: Option<&Ledger>,
    ) -> Result<Ledger, String> {
        let state = match previous {
            Some(p) if state::same_store(&p.policy, &policy) => p.state.clone(),
            _ => state::open(&policy)?,
        };
        Ok(Ledger {
            policy,
            metrics,
            state,
            settling: previous.map(|p| p.settling.clone()).unwrap_or_default(),
            warned: Default::default(),
        })
    }

    /// Prices `usage` served by `model` at this policy's prices.
    pub fn bill(&self, model: &str, usage: Usage) -> Bill {
        bill(&self.policy, model, usage)
    }

    /// A request of `model` was settled with token counts that were estimated, in whole or in
    /// part, because the model reported none or reported them unreadably: counted in
    /// `switchyard_usage_estimated_total{model}`, and logged at warn level once per model.
    pub fn usage_estimated(&self, model: &str) {
        self.metrics.usage_estimated(model);
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        if !warned.contains(model) {
            warned.insert(model.to_string());
            tracing::warn!(
                "model `{model}` reported no usable token counts (usage missing, null or not an integer): they are estimated; see switchyard_usage_estimated_total"
            );
        }
    }

    /// Publishes every budget's remaining USD and limit (`switchyard_budget_remaining_usd`,
    /// `switchyard_budget_limit_usd`) and whether
    /// the state store answers (`switchyard_state_up`): one read of the store, bounded by its
    /// timeout.
    pub async fn publish_state(&self) {
        let Some(store) = &self.state else {
            return;
        };
        match store.remaining().await {
            Ok(left) => {
                for r in left {
                    let period = r.period.label();
                    self.metrics.budget_remaining(&r.tenant, period, r.usd);
                    self.metrics.budget_limit(&r.tenant, period, r.limit_usd);
                }
            }
            Err(_) => self.metrics.state_unavailable("read", "skip"),
        }
        let health = store.health();
        self.metrics.state_up(health.backend, health.available);
    }

    /// Settles `ticket` in the state store: at once when the store answers at once (memory),
    /// else in a task that tries again, with pauses, when the store does not answer in time
    /// (the settlement counts once however often it is sent). A settlement given up on leaves
    /// its reservation to lapse and its spending uncounted: counted in
    /// `switchyard_state_unavailable_total{operation="settle",action="drop"}` and logged.
    pub fn settle_state(self: &Arc<Self>, ticket: Ticket, spent_usd: f64, used_tokens: u64) {
        let Some(store) = self.state.clone() else {
            return;
        };
        if !ticket.holds() {
            return;
        }
        let ledger = self.clone();
        let mut settling = Box::pin(async move {
            let mut pause = SETTLE_FIRST_PAUSE;
            for attempt in 1..=SETTLE_TRIES {
                match store.settle(&ticket, spent_usd, used_tokens).await {
                    Ok(()) => return,
                    Err(e) if attempt == SETTLE_TRIES => {
                        ledger.metrics.state_unavailable("settle", "drop");
                        tracing::warn!(
                            "a settlement was not taken after {SETTLE_TRIES} tries ({e}): ${spent_usd:.6} of spending is not counted, and the reservation lapses by itself"
                        );
                    }
                    Err(_) => {
                        ledger.metrics.state_unavailable("settle", "retry");
                        tokio::time::sleep(pause).await;
                        pause *= 2;
                    }
                }
            }
        });
        if (&mut settling).now_or_never().is_none() {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    self.settling.spawn_on(settling, &rt);
                }
                Err(_) => tracing::warn!("a settlement outside the runtime was dropped"),
            }
        }
    }

    /// Waits, at most `limit`, for the settlements still on their way to the state store (at
    /// shutdown, after the last request). Returns how many were left unfinished.
    pub async fn settled(&self, limit: Duration) -> usize {
        self.settling.close();
        let _ = tokio::time::timeout(limit, self.settling.wait()).await;
        self.settling.len()
    }
}

/// Cost of one request and what it saved against the reference model.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Bill {
    /// USD spent (at the serving model's price).
    pub cost_usd: f64,
    /// USD the same tokens would have cost on the reference model, minus `cost_usd`.
    /// Negative when the request was served by a pricier model.
    pub savings_usd: f64,
}

/// Prices a request served by `model` with `usage`.
pub fn bill(policy: &Policy, model: &str, usage: Usage) -> Bill {
    let price = policy
        .models
        .get(model)
        .map(|m| m.price)
        .unwrap_or_default();
    let cost_usd = price.cost_of(&usage);
    let reference = policy.reference_price().unwrap_or_default();
    let reference_usd = reference.cost_of(&usage);
    let savings_usd = if policy.reference_model.is_some() {
        reference_usd - cost_usd
    } else {
        0.0
    };
    Bill {
        cost_usd,
        savings_usd,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_saves_what_the_reference_would_cost() {
        let p = crate::policy::parse(
            "version: 1\nmodels:\n  small: { kind: local }\n  big: { kind: openai, base_url: 'http://x/v1', price: { input_per_million: 2, output_per_million: 8 } }\ndefault: { route: small }\n",
            "t.yaml",
            &|_| None,
        )
        .unwrap();
        let u = Usage {
            prompt_tokens: 1_000_000,
            completion_tokens: 500_000,
            cached_prompt_tokens: 0,
            cache_write_prompt_tokens: 0,
            web_searches: 0,
        };
        assert_eq!(
            bill(&p, "small", u),
            Bill {
                cost_usd: 0.0,
                savings_usd: 6.0
            }
        );
        assert_eq!(
            bill(&p, "big", u),
            Bill {
                cost_usd: 6.0,
                savings_usd: 0.0
            }
        );
    }

    #[test]
    fn cache_reads_and_writes_have_their_own_prices() {
        let p = crate::policy::parse(
            "version: 1\nmodels:\n  claude: { kind: anthropic, price: { input_per_million: 3, output_per_million: 15, cached_input_per_million: 0.3, cache_write_per_million: 3.75, web_search_per_thousand: 10 } }\n  plain: { kind: anthropic, price: { input_per_million: 3, output_per_million: 15 } }\ndefault: { route: claude }\n",
            "t.yaml",
            &|_| None,
        )
        .unwrap();
        // 1M prompt tokens: 200k uncached, 500k read from the cache, 300k written to it; and
        // 7 web searches.
        let u = Usage {
            prompt_tokens: 1_000_000,
            completion_tokens: 100_000,
            cached_prompt_tokens: 500_000,
            cache_write_prompt_tokens: 300_000,
            web_searches: 7,
        };
        let cost = bill(&p, "claude", u).cost_usd;
        let expected = 0.2 * 3.0 + 0.5 * 0.3 + 0.3 * 3.75 + 0.1 * 15.0 + 7.0 * 10.0 / 1000.0;
        assert!((cost - expected).abs() < 1e-9, "{cost} != {expected}");
        // Without cache prices, reads and writes cost what input costs; without a search
        // price, searches cost nothing.
        let plain = bill(&p, "plain", u).cost_usd;
        assert!((plain - (3.0 + 1.5)).abs() < 1e-9, "{plain}");
    }
}
