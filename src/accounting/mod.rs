//! Accounting on the way back: tokens, cost and savings of each request, into the metrics.

pub mod budget;
pub mod metrics;
pub mod rate_limit;
pub mod recorder;

pub use metrics::{LocalMetrics, Metrics};

use crate::engines::Usage;
use crate::policy::Policy;

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
    let cost_usd = price.cost(usage.prompt_tokens, usage.completion_tokens);
    let reference = policy.reference_price().unwrap_or_default();
    let reference_usd = reference.cost(usage.prompt_tokens, usage.completion_tokens);
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

/// Records a settled request in the metrics.
pub fn settle(metrics: &Metrics, policy: &Policy, model: &str, tenant: &str, usage: Usage) -> Bill {
    let b = bill(policy, model, usage);
    metrics
        .tokens
        .with_label_values(&[model, "input"])
        .inc_by(usage.prompt_tokens);
    metrics
        .tokens
        .with_label_values(&[model, "output"])
        .inc_by(usage.completion_tokens);
    metrics
        .cost
        .with_label_values(&[model, tenant])
        .inc_by(b.cost_usd);
    if b.savings_usd >= 0.0 {
        metrics
            .savings
            .with_label_values(&[tenant])
            .inc_by(b.savings_usd);
    } else {
        metrics
            .overspend
            .with_label_values(&[tenant])
            .inc_by(-b.savings_usd);
    }
    b
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
