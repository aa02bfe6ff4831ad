//! `switchyard classify`: score a text, or JSONL rows from stdin, with the request classifier.

use super::classifier_args::ClassifierArgs;
use crate::api::ChatRequest;
use crate::classifier::{input, Classification, Classifier};
use clap::Args;
use serde_json::{json, Map, Value};
use std::io::{BufRead, Write};
use std::time::Instant;

#[derive(Debug, Args)]
pub struct ClassifyArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// With `-`: add each row's `embedding`, the input the heads read, for research on the router
    /// outside this binary: the mean-pooled output of each encoder layer the heads name (their
    /// `labels.json` `layers`; the built-in heads: 2, 4 and 6), each block L2-normalised, 384
    /// numbers per layer for the default encoder.
    #[arg(long)]
    pub embedding: bool,
    /// Rows classified together when reading stdin.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    #[command(flatten)]
    pub classifier: ClassifierArgs,
    /// The text to classify, or `-` to read JSONL rows (`{"id": .., "prompt": ..}` or an OpenAI
    /// chat request) from stdin and write one JSON result per row, in order.
    pub text: String,
}

/// One result as JSON.
pub fn to_json(c: &Classification, ms: Option<f64>) -> Map<String, Value> {
    let mut m = Map::new();
    let top = c.output();
    m.insert("category".into(), json!(top.category));
    m.insert("probability".into(), json!(round(top.probability)));
    m.insert("strong_score".into(), json!(round(top.strong_score)));
    m.insert(
        "categories".into(),
        Value::Object(
            c.categories
                .iter()
                .map(|(k, p)| (k.clone(), json!(round(f64::from(*p)))))
                .collect(),
        ),
    );
    if !c.strong_parts.is_empty() {
        m.insert(
            "strong_parts".into(),
            Value::Array(
                c.strong_parts
                    .iter()
                    .map(|p| {
                        json!({"head": p.head, "weight": round(f64::from(p.weight)),
                               "score": round(f64::from(p.score))})
                    })
                    .collect(),
            ),
        );
    }
    m.insert("tokens".into(), json!(c.tokens));
    m.insert("truncated".into(), json!(c.truncated));
    if let Some(ms) = ms {
        m.insert("ms".into(), json!((ms * 1000.0).round() / 1000.0));
    }
    m
}

fn round(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// The text of one input row: its `prompt`, or the classifier's view of its `messages`.
fn row_text(row: &Value) -> Result<String, String> {
    if let Some(p) = row.get("prompt") {
        return p
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| "`prompt` must be a string".to_string());
    }
    if row.get("messages").is_some() {
        let bytes = serde_json::to_vec(row).map_err(|e| e.to_string())?;
        let req = ChatRequest::parse(&bytes).map_err(|e| e.to_string())?;
        return Ok(input::text_of(
            &req.messages(),
            &input::HarnessFilter::default(),
        ));
    }
    Err("a row needs a `prompt` string or `messages`".into())
}

/// Runs the command.
pub fn run(args: ClassifyArgs) -> i32 {
    if args.embedding && args.text != "-" {
        eprintln!("error: --embedding needs rows from stdin (`switchyard classify --embedding -`)");
        return 2;
    }
    let Some(classifier) = args.classifier.load() else {
        return 1;
    };
    if args.text == "-" {
        return run_stdin(&classifier, args.batch.max(1), args.embedding);
    }
    let start = Instant::now();
    let result = crate::classifier::RouterModel::classify(&classifier, &[args.text.as_str()]);
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    let c = match result {
        Ok(mut v) if !v.is_empty() => v.remove(0),
        Ok(_) => return 1,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    if args.json {
        println!("{}", Value::Object(to_json(&c, Some(ms))));
    } else {
        let cats: Vec<String> = c
            .categories
            .iter()
            .map(|(k, p)| format!("{k} {p:.2}"))
            .collect();
        println!("category      {}", cats.join(", "));
        println!(
            "strong score  {:.3}{}",
            c.strong_score,
            super::explain::strong_terms(&c.strong_parts)
        );
        println!(
            "tokens        {}{}",
            c.tokens,
            if c.truncated {
                format!(" (truncated to {})", classifier.max_tokens)
            } else {
                String::new()
            }
        );
        println!("time          {ms:.1} ms");
    }
    0
}

fn run_stdin(classifier: &Classifier, batch: usize, with_embedding: bool) -> i32 {
    let stdin = std::io::stdin();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut failed = 0usize;
    let mut lines = stdin.lock().lines().enumerate();
    loop {
        // (id, text or error) for up to `batch` rows.
        let mut rows: Vec<(Option<Value>, Result<String, String>)> = vec![];
        for (n, line) in lines.by_ref() {
            let line = match line {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("error: reading stdin: {e}");
                    return 1;
                }
            };
            if line.trim().is_empty() {
                continue;
            }
            let row = match serde_json::from_str::<Value>(&line) {
                Ok(v) => (v.get("id").cloned(), row_text(&v)),
                Err(e) => (None, Err(format!("line {}: invalid JSON: {e}", n + 1))),
            };
            rows.push(row);
            if rows.len() >= batch {
                break;
            }
        }
        if rows.is_empty() {
            break;
        }
        let texts: Vec<&str> = rows.iter().filter_map(|(_, t)| t.as_deref().ok()).collect();
        let start = Instant::now();
        let results = classifier.embed_all(&texts, 16).and_then(|e| {
            let vectors: Vec<Vec<f32>> = if with_embedding {
                e.iter().map(|(v, _)| v.clone()).collect()
            } else {
                vec![]
            };
            Ok((classifier.finish(e)?, vectors))
        });
        let (mut results, mut vectors) = match results {
            Ok((r, v)) => (r.into_iter(), v.into_iter()),
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        };
        let ms = start.elapsed().as_secs_f64() * 1000.0 / texts.len().max(1) as f64;
        for (id, text) in rows {
            let mut obj = match text {
                Ok(_) => match results.next() {
                    Some(c) => {
                        let mut m = to_json(&c, Some(ms));
                        if let Some(v) = vectors.next() {
                            m.insert("embedding".into(), json!(v));
                        }
                        m
                    }
                    None => continue,
                },
                Err(e) => {
                    failed += 1;
                    let mut m = Map::new();
                    m.insert("error".into(), json!(e));
                    m
                }
            };
            if let Some(id) = id {
                obj.insert("id".into(), id);
            }
            if writeln!(out, "{}", Value::Object(obj)).is_err() {
                return 1;
            }
        }
    }
    if out.flush().is_err() {
        return 1;
    }
    if failed > 0 {
        eprintln!("{failed} rows could not be classified (see their `error`)");
        1
    } else {
        0
    }
}
