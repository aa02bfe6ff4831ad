//! Replay: what a policy does to a set of requests, without calling any model. Pure functions of
//! the policy, the rows' features (classified where the policy needs it) and their labels.

use super::traffic::Row;
use crate::accounting;
use crate::api::Usage;
use crate::classifier::eval::Outcome;
use crate::policy::{self, Policy};
use indexmap::IndexMap;
use serde::Serialize;

/// Counts and shares of one group (route, model or rule).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Share {
    pub requests: u64,
    pub share: f64,
}

/// Estimated tokens and cost on one model.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct ModelCost {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
}

/// Quality of the routing on the labelled rows.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Quality {
    pub labelled: u64,
    /// Mean outcome of the routed models (the small model's on the box, the large model's in the cloud).
    pub policy: f64,
    pub all_weak: f64,
    pub all_strong: f64,
    /// Performance gap recovered: (policy - all weak) / (all strong - all weak).
    pub pgr: f64,
    /// Share of the labelled rows sent to the cloud.
    pub cloud_share: f64,
}

/// What replaying a policy over traffic gives.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub requests: u64,
    pub by_route: IndexMap<String, Share>,
    pub by_model: IndexMap<String, Share>,
    pub by_rule: IndexMap<String, Share>,
    /// Rows the policy could not route (unknown model), with the reason.
    pub errors: u64,
    pub cost_by_model: IndexMap<String, ModelCost>,
    pub cost_usd: f64,
    pub reference_model: Option<String>,
    /// The same traffic sent to the reference cloud model.
    pub reference_cost_usd: f64,
    pub savings_usd: f64,
    pub savings_percent: f64,
    pub quality: Option<Quality>,
}

fn bump(map: &mut IndexMap<String, Share>, key: &str) {
    map.entry(key.to_string())
        .or_insert(Share {
            requests: 0,
            share: 0.0,
        })
        .requests += 1;
}

fn finish_shares(map: &mut IndexMap<String, Share>, total: u64) {
    for s in map.values_mut() {
        s.share = s.requests as f64 / total.max(1) as f64;
    }
    map.sort_by(|_, a, _, b| b.requests.cmp(&a.requests));
}

/// Quality and PGR of routing `cloud[i]` for labelled outcomes.
pub fn quality(outcomes: &[(Outcome, bool)]) -> Option<Quality> {
    if outcomes.is_empty() {
        return None;
    }
    let n = outcomes.len() as f64;
    let weak = outcomes.iter().map(|(o, _)| o.weak).sum::<f64>() / n;
    let strong = outcomes.iter().map(|(o, _)| o.strong).sum::<f64>() / n;
    let policy = outcomes
        .iter()
        .map(|(o, cloud)| if *cloud { o.strong } else { o.weak })
        .sum::<f64>()
        / n;
    let gap = strong - weak;
    Some(Quality {
        labelled: outcomes.len() as u64,
        policy,
        all_weak: weak,
        all_strong: strong,
        pgr: if gap.abs() < 1e-12 {
            1.0
        } else {
            (policy - weak) / gap
        },
        cloud_share: outcomes.iter().filter(|(_, c)| *c).count() as f64 / n,
    })
}

/// Replays `rows` (already classified where needed) through `policy`. `output_tokens` is the
/// answer length assumed for rows that do not record theirs.
pub fn replay(policy: &Policy, rows: &[Row], output_tokens: u64) -> Report {
    let mut by_route = IndexMap::new();
    let mut by_model = IndexMap::new();
    let mut by_rule = IndexMap::new();
    let mut cost_by_model: IndexMap<String, ModelCost> = IndexMap::new();
    let mut errors = 0;
    let (mut cost, mut reference_cost) = (0.0, 0.0);
    let mut labelled = vec![];
    for row in rows {
        let decision = match policy::decide(policy, &row.features) {
            Ok(d) => d,
            Err(_) => {
                errors += 1;
                continue;
            }
        };
        let route = policy.route_of(decision.model);
        bump(&mut by_route, route);
        bump(&mut by_model, decision.model);
        bump(&mut by_rule, decision.rule);
        let usage = Usage {
            prompt_tokens: row
                .billed_prompt_tokens
                .unwrap_or(row.features.prompt_tokens),
            completion_tokens: row
                .completion_tokens
                .or(row.request.max_tokens.map(|m| m.min(output_tokens)))
                .unwrap_or(output_tokens),
            cached_prompt_tokens: row.cached_prompt_tokens.unwrap_or(0),
            cache_write_prompt_tokens: row.cache_write_prompt_tokens.unwrap_or(0),
        };
        let bill = accounting::bill(policy, decision.model, usage);
        let c = cost_by_model.entry(decision.model.to_string()).or_default();
        c.requests += 1;
        c.input_tokens += usage.prompt_tokens;
        c.output_tokens += usage.completion_tokens;
        c.cost_usd += bill.cost_usd;
        cost += bill.cost_usd;
        if let Some(r) = &policy.reference_model {
            reference_cost += accounting::bill(policy, r, usage).cost_usd;
        }
        if let Some(o) = row.outcome {
            labelled.push((o, route == "cloud"));
        }
    }
    let routed = rows.len() as u64 - errors;
    finish_shares(&mut by_route, routed);
    finish_shares(&mut by_model, routed);
    finish_shares(&mut by_rule, routed);
    let savings = reference_cost - cost;
    Report {
        requests: rows.len() as u64,
        by_route,
        by_model,
        by_rule,
        errors,
        cost_by_model,
        cost_usd: cost,
        reference_model: policy.reference_model.clone(),
        reference_cost_usd: reference_cost,
        savings_usd: savings,
        savings_percent: if reference_cost > 0.0 {
            100.0 * savings / reference_cost
        } else {
            0.0
        },
        quality: quality(&labelled),
    }
}

/// The report as text for a terminal.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!(
        "requests: {} ({} could not be routed)",
        r.requests, r.errors
    ));
    for (title, map) in [
        ("route", &r.by_route),
        ("model", &r.by_model),
        ("rule", &r.by_rule),
    ] {
        let parts: Vec<String> = map
            .iter()
            .map(|(k, s)| format!("{k} {} ({:.1}%)", s.requests, 100.0 * s.share))
            .collect();
        line(format!("by {title}: {}", parts.join(", ")));
    }
    line("estimated tokens and cost:".into());
    for (m, c) in &r.cost_by_model {
        line(format!(
            "  {m}: {} requests, {} input + {} output tokens, ${:.4}",
            c.requests, c.input_tokens, c.output_tokens, c.cost_usd
        ));
    }
    line(format!("  this policy: ${:.4}", r.cost_usd));
    if let Some(m) = &r.reference_model {
        line(format!(
            "  all on {m} (reference): ${:.4}; savings ${:.4} ({:.1}%)",
            r.reference_cost_usd, r.savings_usd, r.savings_percent
        ));
    }
    if let Some(q) = &r.quality {
        line(format!(
            "quality on {} labelled rows: policy {:.4}, all weak {:.4}, all strong {:.4}, PGR {:.3} with {:.1}% cloud calls",
            q.labelled, q.policy, q.all_weak, q.all_strong, q.pgr, 100.0 * q.cloud_share
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tuning::traffic::parse_row;

    #[test]
    fn counts_costs_savings_and_pgr() {
        let policy = crate::policy::parse(
            r#"
version: 1
models:
  small: { kind: local }
  big: { kind: openai, base_url: "http://127.0.0.1:1/v1", price: { input_per_million: 1000000, output_per_million: 2000000 } }
rules:
  - { name: tagged, when: { tags: [premium] }, route: big }
default: { route: small }
"#,
            "t.yaml",
            &|_| None,
        )
        .expect("policy");
        let rows: Vec<Row> = [
            r#"{"prompt": "aaaa", "tags": ["premium"], "completion_tokens": 2, "weak_correct": false, "strong_correct": true}"#,
            r#"{"prompt": "bbbb", "completion_tokens": 2, "weak_correct": true, "strong_correct": true}"#,
            r#"{"prompt": "cccc", "completion_tokens": 2, "weak_correct": false, "strong_correct": true}"#,
            r#"{"model": "nope", "messages": [{"role": "user", "content": "x"}]}"#,
        ]
        .iter()
        .map(|l| parse_row(l).expect("row"))
        .collect();
        let r = replay(&policy, &rows, 100);
        assert_eq!(r.requests, 4);
        assert_eq!(r.errors, 1);
        assert_eq!(r.by_route["local"].requests, 2);
        assert_eq!(r.by_rule["tagged"].requests, 1);
        // One request on `big`: 1 + 4 + 3 = 8 input tokens (text, framing, overhead), 2 output.
        let big = &r.cost_by_model["big"];
        assert_eq!((big.input_tokens, big.output_tokens), (8, 2));
        assert!((r.cost_usd - (8.0 + 4.0)).abs() < 1e-9);
        assert!((r.reference_cost_usd - 3.0 * 12.0).abs() < 1e-9);
        assert!((r.savings_percent - 100.0 * 24.0 / 36.0).abs() < 1e-9);
        let q = r.quality.clone().expect("labels");
        assert_eq!(q.labelled, 3);
        // Policy: strong on the first (1), weak on the others (1, 0) = 2/3; weak 1/3, strong 1.
        assert!((q.pgr - 0.5).abs() < 1e-9, "{}", q.pgr);
        assert!(render(&r).contains("PGR 0.500"));
    }
}
