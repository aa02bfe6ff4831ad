//! `switchyard pii-eval`: precision and recall of the private-data detector on a labelled set,
//! and its cost beside parsing the same requests.
//!
//! Input rows: `{"text": ..., "spans": [{"kind": ..., "value": ...}]}` (tests/data/pii.jsonl,
//! built by scripts/pii_set.py). A detected span is correct when it overlaps a labelled value
//! of its kind; a labelled value is found when a detection of its kind overlaps it.

use crate::api::ChatRequest;
use crate::pii::{self, Kind};
use clap::Args;
use serde::Serialize;
use serde_json::{json, Value};
use std::hint::black_box;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Args)]
pub struct PiiEvalArgs {
    /// The labelled rows (JSONL).
    #[arg(long, default_value = "tests/data/pii.jsonl")]
    pub input: PathBuf,
    /// Print the result as JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Timing passes over the set (0: no timing).
    #[arg(long, default_value_t = 20)]
    pub passes: usize,
}

/// Counts of one kind.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq)]
pub struct Score {
    /// Labelled values.
    pub labelled: u64,
    /// Labelled values found.
    pub found: u64,
    /// Detections.
    pub detected: u64,
    /// Detections that overlap a labelled value of their kind.
    pub correct: u64,
}

impl Score {
    pub fn precision(&self) -> f64 {
        if self.detected == 0 {
            1.0
        } else {
            self.correct as f64 / self.detected as f64
        }
    }
    pub fn recall(&self) -> f64 {
        if self.labelled == 0 {
            1.0
        } else {
            self.found as f64 / self.labelled as f64
        }
    }
}

/// One labelled row.
pub struct Row {
    pub text: String,
    pub spans: Vec<(Kind, Range<usize>)>,
}

/// Reads labelled rows. Errors: a line that is not a row, or a value not in its text.
pub fn load(path: &std::path::Path) -> Result<Vec<Row>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut rows = vec![];
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let where_ = || format!("{}:{}", path.display(), i + 1);
        let v: Value = serde_json::from_str(line).map_err(|e| format!("{}: {e}", where_()))?;
        let t = v["text"]
            .as_str()
            .ok_or_else(|| format!("{}: no `text`", where_()))?;
        let mut spans = vec![];
        for s in v["spans"].as_array().into_iter().flatten() {
            let (Some(kind), Some(value)) = (s["kind"].as_str(), s["value"].as_str()) else {
                return Err(format!("{}: a span needs `kind` and `value`", where_()));
            };
            let kind =
                Kind::parse(kind).ok_or_else(|| format!("{}: no kind `{kind}`", where_()))?;
            let at: Vec<usize> = t.match_indices(value).map(|(at, _)| at).collect();
            if at.is_empty() {
                return Err(format!("{}: `{value}` is not in the text", where_()));
            }
            for a in at {
                let r = a..a + value.len();
                if !spans.iter().any(|(k, x)| *k == kind && *x == r) {
                    spans.push((kind, r));
                }
            }
        }
        rows.push(Row {
            text: t.to_string(),
            spans,
        });
    }
    Ok(rows)
}

fn overlap(a: &Range<usize>, b: &Range<usize>) -> bool {
    a.start < b.end && b.start < a.end
}

/// Scores the detector on `rows`, per kind in [`Kind::ALL`] order.
pub fn score(rows: &[Row]) -> Vec<(Kind, Score)> {
    let mut scores: Vec<(Kind, Score)> = Kind::ALL.iter().map(|k| (*k, Score::default())).collect();
    for row in rows {
        let found = pii::find(&row.text);
        for (kind, s) in scores.iter_mut() {
            let gold: Vec<&Range<usize>> = row
                .spans
                .iter()
                .filter(|(k, _)| k == kind)
                .map(|(_, r)| r)
                .collect();
            let got: Vec<&Range<usize>> = found
                .iter()
                .filter(|f| f.kind == *kind)
                .map(|f| &f.range)
                .collect();
            s.labelled += gold.len() as u64;
            s.found += gold
                .iter()
                .filter(|g| got.iter().any(|d| overlap(g, d)))
                .count() as u64;
            s.detected += got.len() as u64;
            s.correct += got
                .iter()
                .filter(|d| gold.iter().any(|g| overlap(g, d)))
                .count() as u64;
        }
    }
    scores
}

/// Microseconds per request: parsing the request, and the detector's path in the gateway
/// (reading `messages` and scanning it), over `passes` passes.
fn timing(bodies: &[Vec<u8>], passes: usize) -> (f64, f64) {
    let parsed: Vec<ChatRequest> = bodies
        .iter()
        .filter_map(|b| ChatRequest::parse(b).ok())
        .collect();
    let n = (bodies.len() * passes).max(1) as f64;
    let started = Instant::now();
    for _ in 0..passes {
        for b in bodies {
            black_box(ChatRequest::parse(black_box(b)).is_ok());
        }
    }
    let parse = started.elapsed().as_secs_f64() * 1e6 / n;
    let started = Instant::now();
    for _ in 0..passes {
        for r in &parsed {
            black_box(crate::pii::request::scan_request(black_box(r)));
        }
    }
    let scan = started.elapsed().as_secs_f64() * 1e6 / n;
    (parse, scan)
}

fn chat_body(text: &str) -> Vec<u8> {
    json!({"model": "auto", "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": text}
    ]})
    .to_string()
    .into_bytes()
}

pub fn run(args: PiiEvalArgs) -> i32 {
    let rows = match load(&args.input) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let scores = score(&rows);
    let total = scores.iter().fold(Score::default(), |a, (_, s)| Score {
        labelled: a.labelled + s.labelled,
        found: a.found + s.found,
        detected: a.detected + s.detected,
        correct: a.correct + s.correct,
    });
    let negatives = rows.iter().filter(|r| r.spans.is_empty()).count();
    let flagged_negatives = rows
        .iter()
        .filter(|r| r.spans.is_empty() && !pii::find(&r.text).is_empty())
        .count();
    // Timing: each row as a one-turn chat request, and 4 KiB requests of many rows.
    let short: Vec<Vec<u8>> = rows.iter().map(|r| chat_body(&r.text)).collect();
    let long: Vec<Vec<u8>> = rows
        .chunks(64)
        .map(|c| {
            let mut t = String::new();
            for r in c {
                if t.len() >= 4096 {
                    break;
                }
                t.push_str(&r.text);
                t.push('\n');
            }
            chat_body(&t)
        })
        .collect();
    let times =
        (args.passes > 0).then(|| (timing(&short, args.passes), timing(&long, args.passes)));
    if args.json {
        let per_kind: serde_json::Map<String, Value> = scores
            .iter()
            .map(|(k, s)| {
                (
                    k.name().to_string(),
                    json!({"counts": s, "precision": s.precision(), "recall": s.recall()}),
                )
            })
            .collect();
        let out = json!({
            "rows": rows.len(),
            "negatives": negatives,
            "flagged_negatives": flagged_negatives,
            "kinds": per_kind,
            "all": {"counts": total, "precision": total.precision(), "recall": total.recall()},
            "timing_us": times.map(|((p, s), (lp, ls))| json!({
                "short": {"parse": p, "scan": s},
                "long": {"parse": lp, "scan": ls},
            })),
        });
        println!("{out}");
        return 0;
    }
    println!(
        "{} rows ({} without private data; {} of those flagged)\n",
        rows.len(),
        negatives,
        flagged_negatives
    );
    println!("| kind | labelled | found | detected | correct | precision | recall |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (k, s) in scores
        .iter()
        .map(|(k, s)| (k.name(), s))
        .chain([("all", &total)])
    {
        println!(
            "| {k} | {} | {} | {} | {} | {:.3} | {:.3} |",
            s.labelled,
            s.found,
            s.detected,
            s.correct,
            s.precision(),
            s.recall()
        );
    }
    if let Some(((p, s), (lp, ls))) = times {
        println!("\n| requests | parse (µs) | detect (µs) | detect / parse |");
        println!("|---|---:|---:|---:|");
        println!(
            "| one row (~60 B of text) | {p:.2} | {s:.2} | {:.2} |",
            s / p
        );
        println!(
            "| many rows (~4 KiB of text) | {lp:.2} | {ls:.2} | {:.2} |",
            ls / lp
        );
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_overlaps_per_kind() {
        let rows = vec![
            Row {
                text: "mail a@example.com or call +44 20 7946 0958".into(),
                spans: vec![(Kind::Email, 5..18)],
            },
            Row {
                text: "order 12345".into(),
                spans: vec![(Kind::Phone, 6..11)],
            },
        ];
        let s = score(&rows);
        let email = s.iter().find(|(k, _)| *k == Kind::Email).map(|(_, s)| *s);
        let phone = s.iter().find(|(k, _)| *k == Kind::Phone).map(|(_, s)| *s);
        assert_eq!(
            email,
            Some(Score {
                labelled: 1,
                found: 1,
                detected: 1,
                correct: 1
            })
        );
        // The phone in the first row was not labelled, the "phone" in the second not found.
        assert_eq!(
            phone,
            Some(Score {
                labelled: 1,
                found: 0,
                detected: 1,
                correct: 0
            })
        );
    }
}
