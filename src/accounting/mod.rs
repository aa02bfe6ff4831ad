//! Accounting: what each request costs and may spend. A [`Ledger`] holds a gateway's prices
//! (its policy), metrics, budgets and rate limits; a [`Settlement`] per request reserves from
//! them on the way in and settles tokens, cost, budgets and metrics once, however the request ends.

pub mod budget;
pub mod metrics;
pub mod rate_limit;
pub mod recorder;
mod settlement;

pub use metrics::{LocalMetrics, Metrics};
pub use settlement::{End, Settlement, ANONYMOUS, NONE, RESERVED_OUTPUT_TOKENS};

use crate::api::Usage;
use crate::policy::Policy;
use budget::{BudgetStore, MemoryBudgets};
use rate_limit::RateLimiter;
use std::sync::Arc;

/// The accounting state of one gateway: prices (the policy), metrics, budgets, rate limits.
pub struct Ledger {
    pub policy: Arc<Policy>,
    pub metrics: Metrics,
    /// Spending budgets, when the policy sets them.
    pub budgets: Option<Arc<dyn BudgetStore>>,
    /// Per-tenant rate limits, when the policy sets them.
    pub rate_limiter: Option<Arc<RateLimiter>>,
    /// Models whose estimated token counts were logged already (once per model).
    warned: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Ledger {
    /// The ledger of `policy`, counting into `metrics`. Budget and rate-limit state carry over
    /// from `previous` when their settings did not change (a policy reload), else start empty.
    pub fn new(policy: Arc<Policy>, metrics: Metrics, previous: Option<&Ledger>) -> Ledger {
        let budgets = match previous {
            Some(p) if p.policy.budgets == policy.budgets => p.budgets.clone(),
            _ => policy
                .budgets
                .as_ref()
                .map(|b| Arc::new(MemoryBudgets::new(b)) as Arc<dyn BudgetStore>),
        };
        let rate_limiter = match previous {
            Some(p) if p.policy.rate_limits == policy.rate_limits => p.rate_limiter.clone(),
            _ => policy.rate_limits.clone().map(RateLimiter::new),
        };
        Ledger {
            policy,
            metrics,
            budgets,
            rate_limiter,
            warned: Default::default(),
        }
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

    /// Publishes every budget's remaining USD (`switchyard_budget_remaining_usd`).
    pub fn publish_budgets(&self) {
        if let Some(b) = &self.budgets {
            for (tenant, period, left) in b.remaining(std::time::SystemTime::now()) {
                self.metrics.budget_remaining(&tenant, period.label(), left);
            }
        }
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
    let (input, cached, output) = (
        usage.prompt_tokens,
        usage.cached_prompt_tokens,
        usage.completion_tokens,
    );
    let cost_usd = price.cost_of(input, cached, output);
    let reference = policy.reference_price().unwrap_or_default();
    let reference_usd = reference.cost_of(input, cached, output);
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
}
