//! Replay: what a policy does to a set of requests, without calling any model. Pure functions of
//! the policy, the rows' features (classified where the policy needs it) and their labels.
//! Under a policy with sticky routes, the rows are turns in the order given: a turn follows the
//! pin its conversation's earlier turns left, as `serve` would.

use super::traffic::{Conversation, Row};
use crate::accounting;
use crate::api::Usage;
use crate::classifier::eval::Outcome;
use crate::classifier::input::HarnessFilter;
use crate::features::{Features, Pin};
use crate::policy::{self, Policy};
use crate::server::sticky::session_key;
use indexmap::IndexMap;
use serde::Serialize;
use std::collections::HashMap;

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
    /// How the `auto` turns met their conversations' pins, when the policy has sticky routes.
    pub sticky: Option<StickyOutcomes>,
}

/// The `auto` turns of a replay under sticky routes, by what the pin did; the outcomes of
/// `switchyard_sticky_total` (docs/metrics.md), without `unavailable` (no store is called).
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct StickyOutcomes {
    /// The conversation's pin decided the model.
    pub hit: u64,
    /// The conversation had no pin (a first turn, or its pin had lapsed).
    pub new: u64,
    /// A rule above the pinning one (or a capability the pinned model lacks) moved the turn.
    pub overridden: u64,
}

/// Pins of the conversations replayed so far: the pin and the `ts` of the turn that wrote it.
struct Pins {
    ttl_s: f64,
    by_key: HashMap<String, (Pin, Option<f64>)>,
}

impl Pins {
    /// The pin of `key` at `ts`: lapsed once `ts` is more than the TTL past the turn that wrote
    /// it; a row without `ts` (or a pin written by one) finds its pin however far apart.
    fn get(&self, key: &str, ts: Option<f64>) -> Option<&Pin> {
        let (pin, at) = self.by_key.get(key)?;
        match (ts, at) {
            (Some(now), Some(at)) if now - at > self.ttl_s => None,
            _ => Some(pin),
        }
    }
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
    let mut pins = Pins {
        ttl_s: policy.sticky_ttl.as_secs_f64(),
        by_key: HashMap::new(),
    };
    let mut sticky = policy.uses_sticky().then(StickyOutcomes::default);
    let harness = HarnessFilter::of(&policy.classifier).unwrap_or_default();
    for row in rows {
        let conversation = match &row.conversation {
            _ if sticky.is_none() || row.features.requested_model != policy::AUTO => None,
            Conversation::Logged(key) => Some(key.clone()),
            Conversation::Unnamed => None,
            Conversation::Opening => {
                let tenant = row.features.tenant.as_deref();
                session_key(None, tenant, &row.request, &harness)
            }
        };
        let conversation = conversation.as_deref();
        let with_pin: Features;
        let features = match conversation.and_then(|k| pins.get(k, row.ts)) {
            Some(pin) => {
                with_pin = Features {
                    pinned: Some(pin.clone()),
                    ..row.features.clone()
                };
                &with_pin
            }
            None => &row.features,
        };
        let decision = match policy::decide(policy, features) {
            Ok(d) => d,
            Err(_) => {
                errors += 1;
                continue;
            }
        };
        if let (Some(key), Some(s)) = (conversation, sticky.as_mut()) {
            match (
                decision.pinned && decision.skipped.is_none(),
                &features.pinned,
            ) {
                (true, _) => s.hit += 1,
                (false, Some(_)) => s.overridden += 1,
                (false, None) => s.new += 1,
            }
            if decision.sticky {
                let pin = Pin {
                    model: decision.model.to_string(),
                    rule: decision.rule.to_string(),
                };
                pins.by_key.insert(key.to_string(), (pin, row.ts));
            }
        }
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
            web_searches: row.web_searches.unwrap_or(0),
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
        sticky,
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
    if let Some(s) = &r.sticky {
        line(format!(
            "sticky conversations: {} turns followed their pin, {} were moved by a higher rule, {} had none",
            s.hit, s.overridden, s.new
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
        assert_eq!(r.sticky, None, "no sticky route, no sticky outcomes");
    }

    #[test]
    fn turns_follow_their_conversations_pins_until_they_lapse() {
        let policy = crate::policy::parse(
            r#"
version: 1
models:
  small: { kind: local }
  big: { kind: openai, base_url: "http://127.0.0.1:1/v1" }
sticky: { enabled: false, ttl_s: 60 }
rules:
  - { name: forced, when: { tags: [forced] }, route: small }
  - { name: tagged, when: { tags: [premium] }, route: big, sticky: true }
default: { route: small }
"#,
            "t.yaml",
            &|_| None,
        )
        .expect("policy");
        // Two turns of one conversation (the same opener), as the request log writes them.
        let turn = |extra: &str, tags: &str, ts: f64| {
            let more = if extra.is_empty() {
                String::new()
            } else {
                format!(
                    r#", {{"role": "assistant", "content": "ok"}}, {{"role": "user", "content": "{extra}"}}"#
                )
            };
            format!(
                r#"{{"model": "auto", "messages": [{{"role": "user", "content": "plan a trip"}}{more}], "tags": [{tags}], "ts": {ts}}}"#
            )
        };
        let rows: Vec<Row> = [
            turn("", r#""premium""#, 1000.0), // new: pinned to big by `tagged`
            turn("and hotels", "", 1010.0),   // hit: big, though the default says small
            turn("and trains", r#""forced""#, 1020.0), // overridden by the rule above
            turn("and food", "", 1030.0),     // hit: the pin stayed
            turn("back again", "", 1100.0),   // 70 s after the last pin: lapsed, new
            r#"{"prompt": "another chat"}"#.to_string(), // new: its own conversation
            r#"{"model": "big", "messages": [{"role": "user", "content": "plan a trip"}]}"#
                .to_string(), // a named model: no pin, no outcome
        ]
        .iter()
        .map(|l| parse_row(l).expect("row"))
        .collect();
        let r = replay(&policy, &rows, 10);
        let models: Vec<u64> = ["big", "small"]
            .iter()
            .map(|m| r.by_model[*m].requests)
            .collect();
        assert_eq!(models, [4, 3], "{:?}", r.by_model);
        assert_eq!(
            r.by_rule["tagged"].requests, 3,
            "pinned turns count for the pinning rule"
        );
        assert_eq!(
            r.sticky,
            Some(StickyOutcomes {
                hit: 2,
                new: 3,
                overridden: 1
            })
        );
        assert!(render(&r).contains("2 turns followed their pin"));
        // A request log's `session` names the conversation, whatever the messages say.
        let named = |text: &str| {
            parse_row(&format!(
                r#"{{"model": "auto", "session": "abc", "messages": [{{"role": "user", "content": "{text}"}}], "tags": ["premium"]}}"#
            ))
            .expect("row")
        };
        let mut second = named("something else");
        second.features.tags.clear();
        let r = replay(&policy, &[named("first"), second], 10);
        assert_eq!(r.by_model["big"].requests, 2);
    }
}
