//! `switchyard eval-router`: routing quality of the strong score on RouteLLM's benchmarks and
//! category accuracy on MT-Bench/Vicuna-Bench, beside a random router (and optionally the
//! logistic-regression baseline).

use super::classifier_args::{cache_dir, progress, ClassifierArgs};
use super::held_out_labels::{score, Difference, HeldOut, Scored, RESAMPLES};
use crate::classifier::data::{self, category_index};
use crate::classifier::embed_cache::EmbedCache;
use crate::classifier::encoder::Encoder;
use crate::classifier::eval::{
    bootstrap_apgr, category_scores, map_benchmark_category, percentile, Outcome,
};
use crate::classifier::heads::Labels;
use crate::classifier::train::{argmax, logistic_regression, TrainConfig};
use crate::classifier::{Classifier, ClassifierError, DEFAULT_MAX_TOKENS, TRAIN_MAX_TOKENS};
use clap::Args;
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct EvalRouterArgs {
    /// Evaluation data (the layout of ../shared/data/eval).
    #[arg(long, required_unless_present = "labels")]
    pub data: Option<PathBuf>,
    /// Instead of the benchmarks: labels from `switchyard label`, scored on the rows that
    /// `train-router --labels` holds out (same `--seed`), with `--heads` beside the built-in heads
    /// and a paired bootstrap interval (2,000 resamples) of the difference.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// The seed of the held-out split (train-router's `--seed`), and of the bootstrap resamples
    /// [default: 7; with --labels and --heads, the seed those heads were trained with].
    #[arg(long)]
    pub seed: Option<u64>,
    /// The held-out share (train-router's `--validation`) [default: 0.1; with --labels and
    /// --heads, the share those heads held out].
    #[arg(long)]
    pub validation: Option<f64>,
    /// Also train and score the baseline: a logistic regression on the embeddings, trained on
    /// this training folder's MMLU-Pro with the label "Llama-3.1-8B-Instruct wrong".
    #[arg(long)]
    pub baseline_train: Option<PathBuf>,
    /// Do not read or write the embedding cache.
    #[arg(long)]
    pub no_cache: bool,
    #[command(flatten)]
    pub classifier: ClassifierArgs,
}

/// One routing benchmark: prompts and outcomes.
struct Bench {
    name: &'static str,
    prompts: Vec<String>,
    outcomes: Vec<Outcome>,
}

fn num(v: &Value, key: &str) -> f64 {
    match v.get(key) {
        Some(Value::Bool(b)) => f64::from(u8::from(*b)),
        Some(x) => x.as_f64().unwrap_or(0.0),
        None => 0.0,
    }
}

fn load_bench(
    dir: &Path,
    name: &'static str,
    weak: &str,
    strong: &str,
) -> Result<Bench, ClassifierError> {
    let rows = data::jsonl(&dir.join(format!("routellm/{name}.jsonl")))?;
    Ok(Bench {
        name,
        prompts: rows
            .iter()
            .map(|r| {
                r.get("prompt")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            })
            .collect(),
        outcomes: rows
            .iter()
            .map(|r| Outcome {
                weak: num(r, weak),
                strong: num(r, strong),
            })
            .collect(),
    })
}

/// Runs the command.
pub fn run(args: EvalRouterArgs) -> i32 {
    match eval(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// The held-out split `--labels` scores: the one `--heads` were trained with when their
/// `labels.json` records it (`held_out`) for this label file (by its SHA-256), else `--seed`
/// and `--validation` (7 and 0.1 by default).
///
/// Errors: a `--seed` or `--validation` other than the heads' own (they would be scored on rows
/// they were trained on), or heads whose `labels.json` cannot be read.
fn split_of(args: &EvalRouterArgs, labels: &Path) -> Result<(u64, f64), ClassifierError> {
    let defaults = TrainConfig::default();
    let recorded = match &args.classifier.heads {
        Some(dir) => Labels::read(dir)?.held_out,
        None => None,
    };
    // A split is of the file the heads were trained on; other files' rows were never seen.
    let recorded = match recorded {
        Some(r) if r.labels_sha256 == data::file_sha256(labels)? => Some(r),
        _ => None,
    };
    let Some(r) = recorded else {
        return Ok((
            args.seed.unwrap_or(defaults.seed),
            args.validation.unwrap_or(defaults.validation),
        ));
    };
    let seed_differs = args.seed.is_some_and(|s| s != r.seed);
    let share_differs = args
        .validation
        .is_some_and(|v| (v - r.validation).abs() > 1e-9);
    if seed_differs || share_differs {
        return Err(ClassifierError::Format(format!(
            "these heads were trained holding out --seed {} --validation {}: another split would \
             score them on label rows they were trained on (leave --seed and --validation out)",
            r.seed, r.validation
        )));
    }
    Ok((r.seed, r.validation))
}

/// `--labels`: APGR and CPT of the strong score on the held-out rows of a label file, for the
/// built-in heads and the `--heads` given, beside a random router; with `--heads`, a paired
/// bootstrap interval of the APGR difference ([`Difference`]), which says whether a
/// calibration beats the built-in heads by more than the held-out rows' noise.
fn eval_labels(args: &EvalRouterArgs, path: &Path) -> Result<(), ClassifierError> {
    let (rows, labelled) = data::load_labels(path)?;
    let model = labelled.name;
    let (seed, validation) = split_of(args, path)?;
    let held = HeldOut::split(&rows, seed, validation)
        .map_err(|e| ClassifierError::Format(format!("{}: {e}", path.display())))?;
    println!(
        "Held-out labels of `{model}` ({} of {} rows, seed {}; the on-box answer is worse on {})\n",
        held.rows.len(),
        rows.len(),
        seed,
        held.worse()
    );
    println!("| heads | APGR | CPT(50%) | CPT(80%) |");
    println!("|---|---|---|---|");
    println!("| random (expected) | 0.500 | 50.0% | 80.0% |");
    let mut sets = vec![("built-in".to_string(), None)];
    if let Some(h) = &args.classifier.heads {
        sets.push((h.display().to_string(), Some(h.clone())));
    }
    let Some(mut encoder) = args.classifier.load_encoder() else {
        return Err(ClassifierError::Format("no encoder".into()));
    };
    let max_tokens = args.classifier.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    let mut all_scores: Vec<Vec<f64>> = vec![];
    for (name, heads) in sets {
        let c = ClassifierArgs {
            heads,
            ..args.classifier.clone()
        };
        let Some(heads) = c.load_heads() else {
            return Err(ClassifierError::Format("no heads".into()));
        };
        let (scores, back) = held.strong_scores(encoder, heads, max_tokens)?;
        encoder = back;
        let s = score(&scores, &held.outcomes);
        println!(
            "| {name} | {:.3} | {:.1}% | {:.1}% |",
            s.apgr,
            s.cpt50 * 100.0,
            s.cpt80 * 100.0
        );
        all_scores.push(scores);
    }
    if let [built_in, heads] = all_scores.as_slice() {
        let d = Difference::of(built_in, heads, &held.outcomes, seed);
        println!(
            "\nAPGR of --heads minus the built-in heads', paired over these {} rows ({RESAMPLES} bootstrap resamples, seed {}): median {:+.3}, 5th to 95th percentile {:+.3} to {:+.3}",
            held.rows.len(),
            seed,
            d.median,
            d.low,
            d.high
        );
    }
    Ok(())
}

fn eval(args: &EvalRouterArgs) -> Result<(), ClassifierError> {
    if let Some(path) = &args.labels {
        return eval_labels(args, path);
    }
    let Some(dir) = &args.data else {
        return Err(ClassifierError::Format("give --data or --labels".into()));
    };
    let seed = args.seed.unwrap_or(TrainConfig::default().seed);
    let benches = vec![
        load_bench(dir, "mmlu", "weak_correct", "strong_correct")?,
        load_bench(dir, "gsm8k", "weak_correct", "strong_correct")?,
        load_bench(dir, "mt_bench", "weak_score", "strong_score")?,
    ];
    let categories = data::jsonl(&dir.join("categories/mt_vicuna.jsonl"))?;
    let Some(classifier) = args.classifier.load() else {
        return Err(ClassifierError::Format("no classifier".into()));
    };
    let open_cache = |max_tokens: usize, encoder: &Encoder| {
        let file = (!args.no_cache).then(|| {
            EmbedCache::file_for(
                &cache_dir().join("embeddings"),
                &args.classifier.encoder,
                max_tokens,
                &encoder.layers,
            )
        });
        EmbedCache::open(file.as_deref(), encoder.dim)
    };
    let mut cache = open_cache(classifier.max_tokens, &classifier.encoder);
    // With --heads, the built-in heads score the same prompts, for the paired interval.
    let mut built_in = match &args.classifier.heads {
        Some(_) => {
            let c = ClassifierArgs {
                heads: None,
                ..args.classifier.clone()
            };
            let Some(classifier) = c.load() else {
                return Err(ClassifierError::Format("no built-in classifier".into()));
            };
            let cache = open_cache(classifier.max_tokens, &classifier.encoder);
            Some((classifier, cache))
        }
        None => None,
    };
    // The baseline reads the last layer's embeddings of inputs truncated at 256 tokens, whatever
    // the heads read.
    let mut baseline = match &args.baseline_train {
        Some(dir) => {
            let Some(encoder) = args.classifier.load_encoder() else {
                return Err(ClassifierError::Format("no encoder".into()));
            };
            let mut cache = open_cache(TRAIN_MAX_TOKENS, &encoder);
            let model = train_baseline(dir, &encoder, &mut cache)?;
            Some((model, encoder, cache))
        }
        None => None,
    };

    println!(
        "Strong score on RouteLLM's benchmarks (encoder {}, {} tokens; interval: {RESAMPLES} \
         bootstrap resamples of the prompts, seed {}, 5th to 95th percentile)\n",
        args.classifier.encoder.display(),
        classifier.max_tokens,
        seed
    );
    println!("| benchmark | prompts | router | APGR | APGR interval | CPT(50%) | CPT(80%) |");
    println!("|---|---|---|---|---|---|---|");
    let mut differences = vec![];
    for b in &benches {
        let texts: Vec<&str> = b.prompts.iter().map(String::as_str).collect();
        let ours = strong_scores(&classifier, &mut cache, &texts, b.name)?;
        let mut lines = vec![(
            "random (expected)",
            Scored {
                apgr: 0.5,
                cpt50: 0.5,
                cpt80: 0.8,
            },
            None,
        )];
        let interval = |scores: &[f64]| {
            let values = bootstrap_apgr(scores, &b.outcomes, RESAMPLES, seed);
            Some((percentile(&values, 0.05), percentile(&values, 0.95)))
        };
        if let Some((base, encoder, baseline_cache)) = &mut baseline {
            let emb = baseline_cache.embed(encoder, TRAIN_MAX_TOKENS, &texts, |_, _| {})?;
            let s: Vec<f64> = emb.iter().map(|e| f64::from(base(e))).collect();
            lines.push((
                "baseline (logistic regression)",
                score(&s, &b.outcomes),
                interval(&s),
            ));
        }
        lines.push((
            "switchyard strong_score",
            score(&ours, &b.outcomes),
            interval(&ours),
        ));
        for (name, s, interval) in lines {
            let interval = match interval {
                Some((low, high)) => format!("{low:.3} to {high:.3}"),
                None => "-".to_string(),
            };
            println!(
                "| {} | {} | {name} | {:.3} | {interval} | {:.1}% | {:.1}% |",
                b.name,
                b.prompts.len(),
                s.apgr,
                s.cpt50 * 100.0,
                s.cpt80 * 100.0
            );
        }
        if let Some((classifier, cache)) = &mut built_in {
            let theirs = strong_scores(classifier, cache, &texts, b.name)?;
            let d = Difference::of(&theirs, &ours, &b.outcomes, seed);
            differences.push((b.name, b.prompts.len(), d));
        }
    }
    if !differences.is_empty() {
        println!(
            "\nAPGR of --heads minus the built-in heads', paired over each benchmark's prompts \
             ({RESAMPLES} bootstrap resamples, seed {}):",
            seed
        );
        for (name, n, d) in differences {
            println!(
                "{name} ({n} prompts): median {:+.3}, 5th to 95th percentile {:+.3} to {:+.3}{}",
                d.median,
                d.low,
                d.high,
                if d.above_zero() { " (above zero)" } else { "" }
            );
        }
    }

    let texts: Vec<&str> = categories
        .iter()
        .map(|r| r.get("prompt").and_then(Value::as_str).unwrap_or(""))
        .collect();
    let emb = cache.embed(
        &classifier.encoder,
        classifier.max_tokens,
        &texts,
        |d, t| progress("categories", d, t),
    )?;
    let outs = classifier.heads.apply(&emb)?;
    let (mut gold, mut pred) = (vec![], vec![]);
    let mut confusion: std::collections::BTreeMap<(String, String), usize> = Default::default();
    for (r, o) in categories.iter().zip(&outs) {
        let label = r.get("category").and_then(Value::as_str).unwrap_or("");
        let Some(g) = map_benchmark_category(label).and_then(category_index) else {
            continue;
        };
        let p = argmax(&o.categories);
        gold.push(g);
        pred.push(p);
        if g != p {
            *confusion
                .entry((label.to_string(), data::CATEGORIES[p].to_string()))
                .or_default() += 1;
        }
    }
    let (acc, f1) = category_scores(&gold, &pred);
    println!(
        "\nCategories on MT-Bench + Vicuna-Bench ({} prompts): accuracy {acc:.3}, macro-F1 {f1:.3}",
        gold.len()
    );
    let mistakes: Vec<String> = confusion
        .iter()
        .map(|((g, p), n)| format!("{g}->{p} {n}"))
        .collect();
    println!(
        "mistakes (benchmark label -> predicted): {}",
        mistakes.join(", ")
    );
    Ok(())
}

/// The strong score `classifier` gives each text, its embeddings read through `cache`.
fn strong_scores(
    classifier: &Classifier,
    cache: &mut EmbedCache,
    texts: &[&str],
    name: &str,
) -> Result<Vec<f64>, ClassifierError> {
    let emb = cache.embed(&classifier.encoder, classifier.max_tokens, texts, |d, t| {
        progress(name, d, t)
    })?;
    let heads = classifier.heads.apply(&emb)?;
    Ok(heads.iter().map(|h| f64::from(h.strong_score)).collect())
}

fn train_baseline(
    dir: &Path,
    encoder: &Encoder,
    cache: &mut EmbedCache,
) -> Result<impl Fn(&[f32]) -> f32, ClassifierError> {
    let examples = data::load_mmlu_pro_label(dir, "Meta-Llama-3_1-8B-Instruct")?;
    let texts: Vec<&str> = examples.iter().map(|(t, _)| t.as_str()).collect();
    let emb = cache.embed(encoder, TRAIN_MAX_TOKENS, &texts, |d, t| {
        progress("baseline training data", d, t)
    })?;
    let labels: Vec<f32> = examples.iter().map(|(_, y)| *y).collect();
    let cfg = TrainConfig {
        epochs: 30,
        weight_decay: 0.0,
        ..TrainConfig::default()
    };
    logistic_regression(&emb, &labels, &cfg, &mut |line| eprintln!("{line}"))
}
