//! Calibration: the strong-score threshold of one rule that sends a chosen share of the traffic
//! to the cloud (as RouteLLM calibrates its routers), from replayed decisions. The threshold is
//! found turn by turn; under sticky routes, where later turns follow their conversation's pin,
//! the share with pins followed is replayed at that threshold and reported beside it.

use super::replay::{quality, replay, Quality};
use super::traffic::Row;
use crate::policy::{self, Policy, Range};

/// A calibrated threshold.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Calibration {
    pub rule: String,
    /// 1-based line of the rule in its file.
    pub line: usize,
    /// `above` when the rule routes to the cloud, `below` when it keeps requests on the box.
    pub bound: &'static str,
    pub threshold: f64,
    /// Share of all routed requests that go to the cloud with this threshold.
    pub cloud_share: f64,
    /// Requests whose route the threshold decides (they reach the rule).
    pub reaching: usize,
    /// Share sent to the cloud whatever the threshold (by earlier rules, or rules the threshold
    /// cannot influence).
    pub fixed_cloud_share: f64,
    pub quality: Option<Quality>,
    /// Under sticky routes: the share of the rows sent to the cloud at this threshold when
    /// each conversation's later turns follow its pin (a replay of the calibrated policy).
    pub sticky_cloud_share: Option<f64>,
}

/// Why no threshold could be found.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CalibrateError {
    #[error("no rule `{0}` in the policy")]
    NoSuchRule(String),
    #[error("no rule of the policy has a `strong_score` condition (name one with --rule)")]
    NoStrongScoreRule,
    #[error("the cloud share must be between 0 and 1, got {0}")]
    BadShare(f64),
    #[error("no request of the traffic could be routed")]
    NoTraffic,
}

/// For one row: the cloud decision when the rule fires and when it does not, and its score;
/// or a fixed decision when the threshold cannot change it.
enum Fate {
    Fixed(bool),
    Open { score: f64, fire: bool, skip: bool },
}

/// Finds the threshold for `rule` (default: the first rule with a `strong_score` condition) that
/// sends `share` of the rows to the cloud. Rows must be classified where the policy needs it.
pub fn calibrate(
    policy: &Policy,
    rows: &[Row],
    rule: Option<&str>,
    share: f64,
) -> Result<Calibration, CalibrateError> {
    if !(0.0..=1.0).contains(&share) {
        return Err(CalibrateError::BadShare(share));
    }
    let index = match rule {
        Some(name) => policy
            .rules
            .iter()
            .position(|r| r.name == name)
            .ok_or_else(|| CalibrateError::NoSuchRule(name.to_string()))?,
        None => policy
            .rules
            .iter()
            .position(|r| r.when.strong_score.is_some())
            .ok_or(CalibrateError::NoStrongScoreRule)?,
    };
    let target = &policy.rules[index];
    let fire_cloud = policy.route_of(&target.route.model) == "cloud";
    // The policy without the rule decides the requests that pass it.
    let mut without = policy.clone();
    without.rules.remove(index);
    let mut unconditioned = target.when.clone();
    unconditioned.strong_score = None;

    let mut fates = vec![];
    for row in rows {
        let f = &row.features;
        let Ok(d) = policy::decide(policy, f) else {
            continue;
        };
        let earlier = policy.rules[..index].iter().any(|r| r.when.matches(f));
        let reaches = !earlier && unconditioned.matches(f);
        let fate = match (&f.classifier, reaches) {
            (Some(c), true) => {
                let skip = policy::decide(&without, f)
                    .map(|d| policy.route_of(d.model) == "cloud")
                    .unwrap_or(false);
                Fate::Open {
                    score: c.strong_score,
                    fire: fire_cloud,
                    skip,
                }
            }
            _ => Fate::Fixed(policy.route_of(d.model) == "cloud"),
        };
        fates.push((fate, row.outcome));
    }
    if fates.is_empty() {
        return Err(CalibrateError::NoTraffic);
    }
    // Open rows by score; with `above`, the rule fires for the top k; with `below`, the bottom k.
    let mut open: Vec<(f64, bool, bool)> = fates
        .iter()
        .filter_map(|(f, _)| match f {
            Fate::Open { score, fire, skip } => Some((*score, *fire, *skip)),
            Fate::Fixed(_) => None,
        })
        .collect();
    let above = fire_cloud;
    if above {
        open.sort_by(|a, b| b.0.total_cmp(&a.0));
    } else {
        open.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let fixed_cloud = fates
        .iter()
        .filter(|(f, _)| matches!(f, Fate::Fixed(true)))
        .count();
    let total = fates.len() as f64;
    // cloud(k) = fixed + fire decisions of the first k + skip decisions of the rest.
    let skip_total = open.iter().filter(|o| o.2).count();
    let mut best = (f64::INFINITY, 0usize, 0.0);
    let (mut fire_sum, mut skip_sum) = (0usize, 0usize);
    for k in 0..=open.len() {
        if k > 0 {
            fire_sum += usize::from(open[k - 1].1);
            skip_sum += usize::from(open[k - 1].2);
        }
        // Thresholds cannot split equal scores.
        if k > 0 && k < open.len() && open[k - 1].0 == open[k].0 {
            continue;
        }
        let cloud = (fixed_cloud + fire_sum + skip_total - skip_sum) as f64 / total;
        let dist = (cloud - share).abs();
        if dist < best.0 - 1e-12 {
            best = (dist, k, cloud);
        }
    }
    let (_, k, cloud_share) = best;
    let threshold = match (k, open.len()) {
        (_, 0) => {
            if above {
                1.0
            } else {
                0.0
            }
        }
        (0, _) => {
            if above {
                1.0
            } else {
                0.0
            }
        }
        (k, n) if k == n => {
            if above {
                0.0
            } else {
                1.0
            }
        }
        (k, _) => (open[k - 1].0 + open[k].0) / 2.0,
    };
    // Quality with this threshold.
    let range = if above {
        Range {
            above: Some(threshold),
            below: None,
        }
    } else {
        Range {
            above: None,
            below: Some(threshold),
        }
    };
    let mut calibrated = policy.clone();
    calibrated.rules[index].when.strong_score = Some(range);
    let labelled: Vec<_> = rows
        .iter()
        .filter_map(|r| {
            let o = r.outcome?;
            let d = policy::decide(&calibrated, &r.features).ok()?;
            Some((o, policy.route_of(d.model) == "cloud"))
        })
        .collect();
    Ok(Calibration {
        rule: target.name.clone(),
        line: target.line,
        bound: if above { "above" } else { "below" },
        threshold,
        cloud_share,
        reaching: open.len(),
        fixed_cloud_share: fixed_cloud as f64 / total,
        quality: quality(&labelled),
        sticky_cloud_share: calibrated.uses_sticky().then(|| {
            replay(&calibrated, rows, 0)
                .by_route
                .get("cloud")
                .map_or(0.0, |s| s.share)
        }),
    })
}

/// The condition to paste into the rule.
pub fn snippet(c: &Calibration) -> String {
    format!(
        "# rule `{}` (line {}): set its strong_score condition to\n    strong_score: {{ {}: {:.4} }}",
        c.rule, c.line, c.bound, c.threshold
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classifier::eval::Outcome;
    use crate::features::ClassifierOutput;

    const POLICY: &str = r#"
version: 1
models:
  small: { kind: local }
  big: { kind: openai, base_url: "http://127.0.0.1:1/v1", price: { input_per_million: 1, output_per_million: 1 } }
rules:
  - { name: tools, when: { has_tools: true }, route: big }
  - { name: hard, when: { strong_score: { above: 0.5 } }, route: big, fallbacks: [small] }
default: { route: small }
"#;

    fn rows(scores: &[f64], tools: usize) -> Vec<Row> {
        scores
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                let mut r = crate::tuning::traffic::parse_row(
                    r#"{"prompt": "x", "weak_correct": false, "strong_correct": true}"#,
                )
                .expect("row");
                r.features.has_tools = i < tools;
                r.features.classifier = Some(ClassifierOutput {
                    category: "other".into(),
                    probability: 1.0,
                    strong_score: s,
                    strong_by_model: vec![],
                });
                r.outcome = Some(Outcome {
                    weak: 0.0,
                    strong: if s > 0.5 { 1.0 } else { 0.0 },
                });
                r
            })
            .collect()
    }

    #[test]
    fn finds_the_threshold_for_a_share_counting_earlier_rules() {
        let policy = crate::policy::parse(POLICY, "t.yaml", &|_| None).expect("policy");
        // Ten rows; the first two have tools (cloud whatever their score).
        let scores: Vec<f64> = (0..10).map(|i| f64::from(i) / 10.0).collect();
        let rows = rows(&scores, 2);
        let c = calibrate(&policy, &rows, None, 0.5).expect("calibrated");
        assert_eq!(c.rule, "hard");
        assert_eq!(c.bound, "above");
        assert_eq!(c.reaching, 8);
        assert!((c.cloud_share - 0.5).abs() < 1e-9, "{}", c.cloud_share);
        // 2 by tools + the 3 highest of the 8 others (0.7, 0.8, 0.9): threshold between 0.6 and 0.7.
        assert!((c.threshold - 0.65).abs() < 1e-9, "{}", c.threshold);
        let q = c.quality.clone().expect("labels");
        assert_eq!(q.labelled, 10);
        assert!(snippet(&c).contains("strong_score: { above: 0.6500 }"));
        assert_eq!(
            calibrate(&policy, &rows, Some("nope"), 0.5),
            Err(CalibrateError::NoSuchRule("nope".into()))
        );
        assert_eq!(
            calibrate(&policy, &rows, None, 1.5),
            Err(CalibrateError::BadShare(1.5))
        );
        let all = calibrate(&policy, &rows, None, 1.0).expect("all");
        assert!((all.cloud_share - 1.0).abs() < 1e-9);
        assert_eq!(c.sticky_cloud_share, None, "no sticky routes");
    }

    /// Under sticky routes the threshold is still found turn by turn, and the share with pins
    /// followed is replayed beside it: here every row is a turn of one conversation (the same
    /// opener), pinned to the box by its first turn, so no later turn reaches the cloud.
    #[test]
    fn under_sticky_routes_the_share_with_pins_is_replayed_beside() {
        let sticky = format!("{POLICY}sticky: true\n");
        let policy = crate::policy::parse(&sticky, "t.yaml", &|_| None).expect("policy");
        let scores: Vec<f64> = (0..10).map(|i| f64::from(i) / 10.0).collect();
        let c = calibrate(&policy, &rows(&scores, 0), None, 0.5).expect("calibrated");
        assert!((c.cloud_share - 0.5).abs() < 1e-9, "{}", c.cloud_share);
        assert_eq!(c.sticky_cloud_share, Some(0.0));
    }
}
