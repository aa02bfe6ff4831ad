//! `switchyard train-router`: reproduce the routing heads from a training-data folder.

use super::classifier_args::{cache_dir, progress, ClassifierArgs};
use super::held_out_labels::{score, Difference, HeldOut, RESAMPLES};
use crate::classifier::embed_cache::EmbedCache;
use crate::classifier::encoder::Encoder;
use crate::classifier::heads::{describe_experts, Heads, HeldOutSplit, Labels, StrongExpert};
use crate::classifier::train::{train_from, Layout, TrainConfig};
use crate::classifier::{
    data, ClassifierError, BUILTIN_HEADS, BUILTIN_LABELS, DEFAULT_MAX_TOKENS, TRAIN_MAX_TOKENS,
};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct TrainRouterArgs {
    /// Training data (the layout of ../shared/data/train). Evaluation data is refused.
    #[arg(long, required_unless_present = "base", conflicts_with = "base")]
    pub data: Option<PathBuf>,
    /// Where to write heads.safetensors and labels.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of the initial weights, the validation split and the batch order. Several
    /// (`--seed 7,1,2`) train once per seed and write the first seed's heads; with --labels,
    /// each seed's heads are checked against the built-in heads on that seed's held-out labels
    /// (a calibration has beaten them when it does at every seed).
    #[arg(long, value_delimiter = ',', default_values_t = [TrainConfig::default().seed])]
    pub seed: Vec<u64>,
    #[arg(long, default_value_t = TrainConfig::default().epochs)]
    pub epochs: usize,
    /// Share of the examples held out for validation (chosen by a hash of the text and the seed).
    /// Held-out --labels rows are only scored: the same share of the other label rows chooses
    /// the strong heads' epoch, and the heads are then trained again on all of those rows.
    #[arg(long, default_value_t = TrainConfig::default().validation)]
    pub validation: f64,
    /// Width of each head's hidden layer.
    #[arg(long, default_value_t = TrainConfig::default().hidden)]
    pub hidden: usize,
    /// Labels from `switchyard label`: the strong head learns them instead of the training
    /// folder's strong labels, so the strong score means "worse than the cloud for that
    /// on-box model"; the category head still learns from the training folder.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Keep the training folder's strong labels and learn the --labels beside them, as one
    /// more source whose rows together carry this share of the strong heads' loss (MMLU-Pro's
    /// rows carry 1, the synthetic tasks' 0.3). Each label row teaches the heads that score it:
    /// a strong expert as much as the category head gives the row its categories, the strong
    /// head the rest. For labels on a task the folder has no strong label for, such as GSM8K.
    /// Without it, the labels replace the folder's strong labels.
    #[arg(long, requires_all = ["labels", "data"], value_parser = parse_share)]
    pub labels_share: Option<f64>,
    /// Heads to start from, `builtin` or a folder `train-router` wrote: their category head is
    /// kept, and their strong head goes on learning the --labels (the validation loss decides
    /// whether any epoch beats the base). For a few hundred labels, too few to train from
    /// scratch. Reads no training folder.
    #[arg(long, requires = "labels")]
    pub base: Option<String>,
    /// Encoder layers whose mean-pooled outputs, concatenated, the heads read (0: the embedding
    /// layer, 1-6: transformer layers of all-MiniLM-L6-v2), e.g. `--layers 6` for the last
    /// alone. Default: the layers of the built-in heads (2,4,6), or of the --base heads.
    #[arg(long, value_delimiter = ',')]
    pub layers: Option<Vec<usize>>,
    /// The layers of --layers the strong head reads; the category head reads them all. Default:
    /// all of --layers when it is given, else the built-in heads' (6), or the --base heads'.
    #[arg(long, value_delimiter = ',')]
    pub strong_layers: Option<Vec<usize>>,
    /// A strong head for some categories, `CATEGORY[+CATEGORY]=LAYERS` (layers of --layers),
    /// trained on the same label: the strong score mixes it in with the category head's
    /// probability of those categories (docs/router-quality.md). Repeatable; `none` for no
    /// experts. Default: the built-in heads' (`math=2,4,6`) when --layers is not given, else
    /// none; with --base, the base heads'.
    #[arg(long = "strong-expert", value_name = "CATEGORY=LAYERS", value_parser = parse_expert)]
    pub strong_experts: Vec<Option<StrongExpert>>,
    /// Do not read or write the embedding cache (under ~/.cache/switchyard/embeddings).
    #[arg(long)]
    pub no_cache: bool,
    #[command(flatten)]
    pub classifier: ClassifierArgs,
}

/// `--strong-expert`: `none`, or a [`StrongExpert`].
fn parse_expert(spec: &str) -> Result<Option<StrongExpert>, String> {
    if spec == "none" {
        return Ok(None);
    }
    StrongExpert::parse(spec).map(Some)
}

/// `--labels-share`: a finite number above 0.
fn parse_share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 => Ok(s),
        _ => Err(format!("`{text}` is not a share above 0")),
    }
}

/// `N (source n, ...)`, sources in the order they first appear.
fn count_by_source<'a>(examples: impl IntoIterator<Item = &'a data::Example>) -> String {
    let (mut total, mut by_source): (usize, Vec<(&str, usize)>) = (0, vec![]);
    for e in examples {
        total += 1;
        match by_source.iter_mut().find(|(s, _)| *s == e.source) {
            Some((_, n)) => *n += 1,
            None => by_source.push((e.source, 1)),
        }
    }
    let sources: Vec<String> = by_source.iter().map(|(s, n)| format!("{s} {n}")).collect();
    format!("{total} ({})", sources.join(", "))
}

/// Runs the command.
pub fn run(args: TrainRouterArgs) -> i32 {
    let base = match args.base.as_deref() {
        None => Ok(None),
        Some("builtin") => Heads::from_bytes(BUILTIN_HEADS, BUILTIN_LABELS).map(Some),
        Some(dir) => Heads::load(Path::new(dir)).map(Some),
    };
    let base = match base {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: base heads: {e}");
            return 1;
        }
    };
    let loaded = match &args.data {
        Some(dir) => data::load(dir),
        None => Ok(vec![]),
    };
    let mut examples = match loaded {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let mut labelled_for = None;
    if let Some(path) = &args.labels {
        let (labels, model) = match data::load_labels(path) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        };
        if args.labels_share.is_none() {
            for e in &mut examples {
                e.strong = None;
                e.pair = None;
            }
        }
        examples.extend(labels.iter().cloned());
        let sha256 = match data::file_sha256(path) {
            Ok(h) => h,
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        };
        labelled_for = Some(Labelled {
            model,
            file: path.display().to_string(),
            sha256,
            rows: labels,
        });
    }
    println!("examples: {}", count_by_source(&examples));
    let strong = examples.iter().filter(|e| e.strong.is_some());
    println!("strong-score rows: {}", count_by_source(strong));
    let built_in = match serde_json::from_str::<Labels>(BUILTIN_LABELS) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: the built-in heads' labels: {e}");
            return 1;
        }
    };
    let experts: Option<Vec<StrongExpert>> = (!args.strong_experts.is_empty())
        .then(|| args.strong_experts.iter().flatten().cloned().collect());
    let layout = match (&base, &args.layers, &args.strong_layers) {
        (Some(b), l, s)
            if l.as_ref().is_some_and(|l| *l != b.labels.layers)
                || s.as_ref().is_some_and(|s| *s != b.labels.strong_layers)
                || experts
                    .as_ref()
                    .is_some_and(|e| *e != b.labels.strong_experts) =>
        {
            eprintln!(
                "error: --layers/--strong-layers/--strong-expert differ from the base heads' \
                 layers {:?} (strong {:?}, experts [{}])",
                b.labels.layers,
                b.labels.strong_layers,
                describe_experts(&b.labels.strong_experts)
            );
            return 1;
        }
        (Some(b), _, _) => Layout {
            layers: b.labels.layers.clone(),
            strong_layers: b.labels.strong_layers.clone(),
            strong_experts: b.labels.strong_experts.clone(),
        },
        (None, Some(l), s) => Layout {
            layers: l.clone(),
            strong_layers: s.clone().unwrap_or_default(),
            strong_experts: experts.unwrap_or_default(),
        },
        (None, None, s) => Layout {
            layers: built_in.layers.clone(),
            strong_layers: s.clone().unwrap_or(built_in.strong_layers.clone()),
            strong_experts: experts.unwrap_or(built_in.strong_experts.clone()),
        },
    };
    let layers = layout.layers.clone();
    let Some(mut encoder) = args.classifier.load_encoder() else {
        return 1;
    };
    if let Err(e) = encoder.set_layers(&layers) {
        eprintln!("error: --layers: {e}");
        return 1;
    }
    let max_tokens = args.classifier.max_tokens.unwrap_or(TRAIN_MAX_TOKENS);
    let cache_file = (!args.no_cache).then(|| {
        EmbedCache::file_for(
            &cache_dir().join("embeddings"),
            &args.classifier.encoder,
            max_tokens,
            &layers,
        )
    });
    let mut cache = EmbedCache::open(cache_file.as_deref(), encoder.dim);
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
    let embeddings = match cache.embed(&encoder, max_tokens, &texts, |d, t| {
        progress("embedding", d, t)
    }) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let trained = Trained {
        examples: &examples,
        embeddings: &embeddings,
        layout: &layout,
        base: base.as_ref(),
        max_tokens,
    };
    match train_each_seed(&args, &trained, labelled_for.as_ref(), encoder) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// A label file given with --labels: the on-box model it grades, its path, its rows.
struct Labelled {
    model: data::LabelledModel,
    file: String,
    /// SHA-256 of the label file ([`data::file_sha256`]).
    sha256: String,
    rows: Vec<data::Example>,
}

/// What every seed trains on.
struct Trained<'a> {
    examples: &'a [data::Example],
    embeddings: &'a [Vec<f32>],
    layout: &'a Layout,
    base: Option<&'a Heads>,
    /// The token budget of the training inputs.
    max_tokens: usize,
}

/// One seed's heads against the built-in heads on that seed's held-out labels.
struct SeedCheck {
    seed: u64,
    held_out: usize,
    worse: usize,
    built_in: f64,
    trained: f64,
    difference: Difference,
}

/// Trains the heads at each `--seed`, writes the first seed's to `--out`, and with labels
/// checks each seed's heads against the built-in ones ([`print_checks`]).
fn train_each_seed(
    args: &TrainRouterArgs,
    trained: &Trained,
    labelled: Option<&Labelled>,
    mut encoder: Encoder,
) -> Result<(), ClassifierError> {
    let encoder_name = args
        .classifier
        .encoder
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let built_in = Heads::from_bytes(BUILTIN_HEADS, BUILTIN_LABELS)?;
    let mut checks = vec![];
    for (i, &seed) in args.seed.iter().enumerate() {
        if args.seed.len() > 1 {
            println!("\nseed {seed}:");
        }
        let cfg = TrainConfig {
            seed,
            epochs: args.epochs,
            hidden: args.hidden,
            validation: args.validation.clamp(0.0, 0.9),
            labels_share: args.labels_share,
            ..TrainConfig::default()
        };
        let mut log = |line: String| println!("{line}");
        let (mut heads, report) = train_from(
            trained.examples,
            trained.embeddings,
            &cfg,
            &encoder_name,
            trained.max_tokens,
            trained.layout,
            trained.base,
            &mut log,
        )?;
        let category = match &args.base {
            Some(b) => format!("category head kept from {b}"),
            None => format!(
                "category accuracy {:.3}, macro-F1 {:.3}",
                report.category_accuracy, report.category_macro_f1
            ),
        };
        println!(
            "validation ({} held out of {}): {category}{}",
            report.validation_examples,
            report.validation_examples + report.train_examples,
            report
                .mmlu_pro_apgr
                .map(|a| format!(
                    ", MMLU-Pro APGR {a:.3} ({} vs {})",
                    data::MMLU_PAIR.0,
                    data::MMLU_PAIR.1
                ))
                .unwrap_or_default()
        );
        if let Some(a) = report.labels_apgr {
            println!("validation APGR on held-out labels: {a:.3}");
        }
        if let Some(l) = labelled {
            let own = format!(
                "the on-box model `{}` answers worse than the cloud (strong_label of {}, from switchyard label)",
                l.model.name, l.file
            );
            heads.labels.strong_label = match args.labels_share {
                None => own,
                Some(share) => format!(
                    "{}; beside it, at share {share}: {own}",
                    heads.labels.strong_label
                ),
            };
            heads.labels.model = Some(l.model.name.clone());
            heads.labels.model_file = l.model.file.clone();
            heads.labels.held_out = (cfg.validation > 0.0).then(|| HeldOutSplit {
                seed,
                validation: cfg.validation,
                labels_sha256: l.sha256.clone(),
            });
        }
        if i == 0 {
            heads.save(&args.out)?;
            println!("wrote {}", args.out.display());
        }
        if let Some(l) = labelled {
            let held = match HeldOut::split(&l.rows, seed, cfg.validation) {
                Ok(held) => held,
                Err(e) => {
                    let why = match e {
                        ClassifierError::Format(m) => m,
                        e => e.to_string(),
                    };
                    println!("{why}: nothing to check against the built-in heads");
                    continue;
                }
            };
            let (base_scores, back) =
                held.strong_scores(encoder, built_in.clone(), DEFAULT_MAX_TOKENS)?;
            let (scores, back) = held.strong_scores(back, heads, DEFAULT_MAX_TOKENS)?;
            encoder = back;
            checks.push(SeedCheck {
                seed,
                held_out: held.rows.len(),
                worse: held.worse(),
                built_in: score(&base_scores, &held.outcomes).apgr,
                trained: score(&scores, &held.outcomes).apgr,
                difference: Difference::of(&base_scores, &scores, &held.outcomes, seed),
            });
        }
    }
    if let (Some(l), false) = (labelled, checks.is_empty()) {
        print_checks(&checks, l, args.validation.clamp(0.0, 0.9));
    }
    Ok(())
}

/// The table of [`SeedCheck`]s and a verdict: the heads beat the built-in ones when every
/// seed's paired interval lies above zero (one split's interval covers which rows are scored,
/// not which were trained on).
fn print_checks(checks: &[SeedCheck], labelled: &Labelled, validation: f64) {
    println!(
        "\nAgainst the built-in heads, on each seed's held-out labels of `{}` at {DEFAULT_MAX_TOKENS} \
         tokens (`eval-router --labels {} --seed N --validation {validation} --heads DIR` scores \
         the same rows; interval: {RESAMPLES} paired bootstrap resamples, 5th to 95th percentile):\n",
        labelled.model.name, labelled.file
    );
    println!("| seed | held out | on-box worse | built-in APGR | trained APGR | difference: median (interval) |");
    println!("|---:|---:|---:|---:|---:|---|");
    for c in checks {
        let d = &c.difference;
        println!(
            "| {} | {} | {} | {:.3} | {:.3} | {:+.3} ({:+.3} to {:+.3}) |",
            c.seed, c.held_out, c.worse, c.built_in, c.trained, d.median, d.low, d.high
        );
    }
    let short: Vec<String> = checks
        .iter()
        .filter(|c| !c.difference.above_zero())
        .map(|c| c.seed.to_string())
        .collect();
    if !short.is_empty() {
        println!(
            "\nverdict: not better than the built-in heads at seed{} {} (the interval reaches zero): keep the built-in heads",
            if short.len() > 1 { "s" } else { "" },
            short.join(", ")
        );
    } else if checks.len() == 1 {
        println!(
            "\nverdict: better than the built-in heads at this seed; check other splits before deploying (--seed 7,1,2)"
        );
    } else {
        println!(
            "\nverdict: better than the built-in heads at every seed ({} splits)",
            checks.len()
        );
    }
}
