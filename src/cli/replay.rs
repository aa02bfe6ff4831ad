//! `switchyard replay` and `switchyard calibrate`: a policy over recorded or benchmark traffic,
//! without calling any model.

use super::classifier_args::progress;
use crate::classifier::Classifier;
use crate::policy::{self, Policy, Range};
use crate::tuning::calibrate::{calibrate, snippet};
use crate::tuning::plot::{self, Point};
use crate::tuning::replay::{render, replay};
use crate::tuning::{classify_rows, traffic};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The policy to replay.
    #[arg(long)]
    pub policy: PathBuf,
    /// JSONL traffic: OpenAI chat requests or {"prompt": ...}, optionally labelled
    /// (weak_correct/strong_correct or weak_score/strong_score).
    #[arg(long)]
    pub input: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Answer length assumed for rows that do not record `completion_tokens`.
    #[arg(long, default_value_t = 256)]
    pub output_tokens: u64,
    /// Draw the cost/quality curve of a strong-score threshold sweep (first rule with a
    /// strong_score condition) into this SVG file, with this policy marked.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CalibrateArgs {
    #[arg(long)]
    pub policy: PathBuf,
    #[arg(long)]
    pub input: PathBuf,
    /// Share of the traffic to send to the cloud, in [0, 1].
    #[arg(long)]
    pub cloud_share: f64,
    /// The rule whose strong_score threshold to set (default: the first rule that has one).
    #[arg(long)]
    pub rule: Option<String>,
    #[arg(long)]
    pub json: bool,
}

/// The policy and its traffic, classified where the policy needs it.
fn load(policy_path: &Path, input: &Path) -> Result<(Policy, Vec<traffic::Row>), String> {
    let policy = policy::load(policy_path).map_err(|e| e.to_string())?;
    let mut rows = traffic::read(input).map_err(|e| e.to_string())?;
    if policy.uses_classifier() {
        let s = &policy.classifier;
        let classifier = Classifier::from_settings(s)
            .map_err(|e| format!("cannot load the classifier ({}): {e}", s.encoder.display()))?;
        classify_rows(&policy, &classifier, &mut rows, |d, t| {
            progress("classifying", d, t)
        })
        .map_err(|e| e.to_string())?;
    }
    Ok((policy, rows))
}

/// Runs `replay`.
pub fn run_replay(args: ReplayArgs) -> i32 {
    let (policy, rows) = match load(&args.policy, &args.input) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let report = replay(&policy, &rows, args.output_tokens);
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        }
    } else {
        print!("{}", render(&report));
    }
    if let Some(path) = &args.plot {
        if let Err(e) = draw(&policy, &rows, args.output_tokens, path) {
            eprintln!("error: {e}");
            return 1;
        }
        eprintln!("wrote {}", path.display());
    }
    0
}

/// Sweeps the first strong-score rule's threshold and draws cost against quality.
fn draw(
    policy: &Policy,
    rows: &[traffic::Row],
    output_tokens: u64,
    path: &Path,
) -> Result<(), String> {
    let index = policy
        .rules
        .iter()
        .position(|r| r.when.strong_score.is_some())
        .ok_or("--plot needs a rule with a strong_score condition")?;
    let rule = &policy.rules[index];
    let labelled = rows.iter().any(|r| r.outcome.is_some());
    let point = |p: &Policy| {
        let r = replay(p, rows, output_tokens);
        let y = match (&r.quality, labelled) {
            (Some(q), true) => q.policy,
            _ => r.by_route.get("cloud").map(|s| s.share).unwrap_or(0.0),
        };
        Point {
            cost_usd: r.cost_usd,
            y,
        }
    };
    let above = rule.when.strong_score.is_some_and(|r| r.above.is_some());
    let sweep: Vec<Point> = (0..=40)
        .map(|i| {
            let t = f64::from(i) / 40.0;
            let mut p = policy.clone();
            p.rules[index].when.strong_score = Some(if above {
                Range {
                    above: Some(t),
                    below: None,
                }
            } else {
                Range {
                    above: None,
                    below: Some(t),
                }
            });
            point(&p)
        })
        .collect();
    let title = format!("rule `{}`: strong_score threshold from 0 to 1", rule.name);
    let y_label = if labelled {
        "quality (mean outcome)"
    } else {
        "share of cloud calls"
    };
    std::fs::write(path, plot::svg(&title, y_label, &sweep, point(policy)))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Runs `calibrate`.
pub fn run_calibrate(args: CalibrateArgs) -> i32 {
    let (policy, rows) = match load(&args.policy, &args.input) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let c = match calibrate(&policy, &rows, args.rule.as_deref(), args.cloud_share) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&c).unwrap_or_default());
        return 0;
    }
    println!(
        "rule `{}`: strong_score {} {:.4} sends {:.1}% of these {} requests to the cloud (target {:.1}%; {} requests reach the rule)",
        c.rule,
        c.bound,
        c.threshold,
        100.0 * c.cloud_share,
        rows.len(),
        100.0 * args.cloud_share,
        c.reaching
    );
    if (c.cloud_share - args.cloud_share).abs() > 0.05 {
        println!(
            "note: the target is out of this rule's reach: {:.1}% of the requests go to the cloud whatever the threshold, and only {} reach the rule",
            100.0 * c.fixed_cloud_share,
            c.reaching
        );
    }
    if let Some(q) = &c.quality {
        println!(
            "quality on {} labelled rows: {:.4} (all weak {:.4}, all strong {:.4}), PGR {:.3}",
            q.labelled, q.policy, q.all_weak, q.all_strong, q.pgr
        );
    }
    if let Some(s) = c.sticky_cloud_share {
        println!(
            "note: found turn by turn; with this policy's sticky conversations followed, the threshold sends {:.1}% to the cloud (replay)",
            100.0 * s
        );
    }
    println!("{}", snippet(&c));
    0
}
