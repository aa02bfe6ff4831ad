//! `switchyard bench-classifier`: classifier latency by input length (p50/p99, one request at a
//! time) and throughput with concurrent clients through the gateway's batcher. JSON lines out,
//! for benches/classifier.sh.

use super::classifier_args::ClassifierArgs;
use crate::classifier::batcher::{BatchSettings, Batcher};
use crate::classifier::encoder::{Encoder, Kernels};
use crate::classifier::heads::Heads;
use crate::classifier::{Classification, ClassifierError, RouterModel};
use clap::Args;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct BenchClassifierArgs {
    #[command(flatten)]
    pub classifier: ClassifierArgs,
    /// Input lengths in tokens (special tokens included).
    #[arg(long, default_value = "16,64,128,256,512", value_delimiter = ',')]
    pub lengths: Vec<usize>,
    /// CPU threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Timed runs per length.
    #[arg(long, default_value_t = 50)]
    pub runs: usize,
    /// Concurrent clients of the throughput run (0 skips it).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Seconds of each throughput run.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Batch window of the throughput run, in microseconds.
    #[arg(long, default_value_t = 500)]
    pub window_us: u64,
    /// Encoder layers pooled into the embedding (as `train-router --layers`). Default: the
    /// layers the heads read (`--heads`, or the built-in heads).
    #[arg(long, value_delimiter = ',')]
    pub layers: Option<Vec<usize>>,
    /// Also time candle's BertModel (the reference implementation) one request at a time.
    #[arg(long)]
    pub reference: bool,
    /// Instead: time the harness filter (the built-in rules that strip coding agents' text from
    /// the classifier's input) on a chat turn and a coding agent's turn, beside the encoder at
    /// 128 tokens in the same run.
    #[arg(long)]
    pub harness: bool,
}

/// A router model over fixed token ids (the text is only a key into them).
struct IdsModel {
    encoder: Encoder,
    ids: Vec<u32>,
    batch: usize,
}

impl RouterModel for IdsModel {
    fn classify(&self, texts: &[&str]) -> Result<Vec<Classification>, ClassifierError> {
        let batch: Vec<&[u32]> = texts.iter().map(|_| self.ids.as_slice()).collect();
        let mut out = vec![];
        for chunk in batch.chunks(self.batch.max(1)) {
            for _ in self.encoder.embed(chunk)? {
                out.push(Classification {
                    categories: vec![],
                    strong_score: 0.0,
                    tokens: self.ids.len(),
                    truncated: false,
                    strong_by_model: vec![],
                    strong_parts: vec![],
                });
            }
        }
        Ok(out)
    }
}

/// Which rules `--harness` times on an input.
#[derive(Clone, Copy)]
enum Rules {
    /// The harness rules on a user turn (`HarnessFilter::strip`).
    Strip,
    /// The tool-feedback rules on a tool's result (`HarnessFilter::feedback`).
    ToolFeedback,
    /// A sticky conversation's key on a chat request's opening (`sticky::session_key`: the
    /// harness rules on the opening's user messages until one has the person's words, then
    /// SHA-256).
    ConversationKey,
}

impl Rules {
    fn name(self) -> &'static str {
        match self {
            Rules::Strip => "strip",
            Rules::ToolFeedback => "tool_feedback",
            Rules::ConversationKey => "conversation_key",
        }
    }
}

/// The inputs of `--harness`: a person's chat turn, and a coding agent's turn in Claude Code's
/// shape (a reminder block, a 28 KB file dump, a to-do reminder, then the question), for the
/// harness rules; the same file as a tool's result (nothing to keep: the rules read it all),
/// and Claude Code's result of a tool call the person rejected with a reason, for the
/// tool-feedback rules; chat requests that open with the chat turn, with the agent's turn
/// (Claude Code's first message), and Codex CLI's opening (AGENTS.md and environment as user
/// messages of their own, then the question), for the conversation key. Built here so that
/// every run reads the same bytes.
fn harness_inputs() -> [(&'static str, Rules, String); 7] {
    let chat = "I'm planning a trip to Lisbon in May with two kids (6 and 9). Could you suggest a \
        three-day itinerary that balances museums, outdoor time and easy food options, and tell \
        me which neighbourhoods are best to stay in if we want to walk most places? We don't \
        want more than one long outing a day."
        .to_string();
    let reminder = "As you answer the user's questions, you can use the following context: \
        codebase conventions, the project's build commands, and the style guide. IMPORTANT: this \
        context may or may not be relevant to your tasks. "
        .repeat(6);
    let mut file = String::new();
    for i in 0..400 {
        file.push_str(&format!(
            "    let value_{i} = compute(&input[{i}..], {i}).map_err(Error::from)?;\n"
        ));
    }
    let agent = format!(
        "<system-reminder>\n{reminder}\n</system-reminder>\n<file path=\"src/pipeline.rs\">\n{file}</file>\n\
         <system-reminder>The todo list is empty. Do not mention this to the user.</system-reminder>\n\
         Why does the pipeline fail on empty input, and how should compute handle it?"
    );
    let rejected = "Error: The user doesn't want to proceed with this tool use. The tool use was \
        rejected (eg. if it was a file edit, the new_string was NOT written to the file). To tell \
        you how to proceed, the user said:\nKeep the early return and log the empty input instead."
        .to_string();
    let opening = |messages: Vec<Value>| json!({"model": "auto", "messages": messages}).to_string();
    let system = json!({"role": "system", "content": "You are a helpful assistant."});
    let chat_opening = opening(vec![
        system.clone(),
        json!({"role": "user", "content": chat}),
    ]);
    let agent_opening = opening(vec![system, json!({"role": "user", "content": agent})]);
    let codex_opening = opening(vec![
        json!({"role": "developer", "content": "You are Codex, a coding agent."}),
        json!({"role": "user", "content": format!(
            "# AGENTS.md instructions for /repo\n\n<INSTRUCTIONS>\n{reminder}\n</INSTRUCTIONS>"
        )}),
        json!({"role": "user", "content": "<environment_context>\n  <cwd>/repo</cwd>\n  <sandbox_mode>workspace-write</sandbox_mode>\n</environment_context>"}),
        json!({"role": "user", "content": "Why does the pipeline fail on empty input?"}),
    ]);
    [
        ("chat turn", Rules::Strip, chat),
        ("coding agent turn", Rules::Strip, agent),
        ("tool result", Rules::ToolFeedback, file),
        ("rejected tool call", Rules::ToolFeedback, rejected),
        ("chat opening", Rules::ConversationKey, chat_opening),
        ("Claude Code opening", Rules::ConversationKey, agent_opening),
        ("Codex CLI opening", Rules::ConversationKey, codex_opening),
    ]
}

/// p50 microseconds of `f`, over `runs` calls after 10 to warm up.
fn time_calls<T>(runs: usize, f: impl Fn() -> T) -> f64 {
    for _ in 0..10 {
        std::hint::black_box(f());
    }
    let mut us = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        std::hint::black_box(f());
        us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    us.sort_by(f64::total_cmp);
    percentile(&us, 0.5)
}

/// `--harness`: the built-in rules' time on each input, and their share of the encoder's time
/// at 128 tokens (measured in the same run), as JSON lines.
fn harness(encoder: &Encoder, args: &BenchClassifierArgs) -> Result<(), ClassifierError> {
    let ids: Vec<u32> = std::iter::once(101)
        .chain((0..126).map(|i| 1000 + (i as u32 * 37) % 20000))
        .chain(std::iter::once(102))
        .collect();
    let (encoder_p50_ms, _) = time_single(encoder, &ids, args.runs)?;
    let filter = crate::classifier::input::HarnessFilter::default();
    let runs = args.runs.max(1) * 100;
    for (input, rules, text) in harness_inputs() {
        let text = std::hint::black_box(text.as_str());
        let (p50_us, kept_bytes) = match rules {
            Rules::Strip => (
                time_calls(runs, || filter.strip(text)),
                Some(filter.strip(text).len()),
            ),
            Rules::ToolFeedback => (
                time_calls(runs, || filter.feedback(text)),
                Some(filter.feedback(text).len()),
            ),
            Rules::ConversationKey => {
                let req = crate::api::ChatRequest::parse(text.as_bytes())
                    .map_err(|e| ClassifierError::Format(format!("the {input} request: {e:?}")))?;
                let key = || crate::server::sticky::session_key(None, None, &req, &filter);
                (time_calls(runs, key), None)
            }
        };
        println!(
            "{}",
            json!({"bench": "harness", "rules": rules.name(), "input": input,
                   "bytes": text.len(), "kept_bytes": kept_bytes,
                   "p50_us": (p50_us * 100.0).round() / 100.0,
                   "encoder_128_tokens_p50_ms": (encoder_p50_ms * 1000.0).round() / 1000.0,
                   "share_of_encoder": (p50_us / (encoder_p50_ms * 1000.0) * 1e5).round() / 1e5,
                   "threads": args.threads})
        );
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn time_single(encoder: &Encoder, ids: &[u32], runs: usize) -> Result<(f64, f64), ClassifierError> {
    for _ in 0..3 {
        encoder.embed(&[ids])?;
    }
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        encoder.embed(&[ids])?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    Ok((percentile(&ms, 0.5), percentile(&ms, 0.99)))
}

/// p50 milliseconds of both heads on one embedding `width` wide.
fn time_heads(heads: &Heads, width: usize, runs: usize) -> Result<f64, ClassifierError> {
    let x = vec![vec![1.0 / (width as f32).sqrt(); width]];
    for _ in 0..10 {
        heads.apply(&x)?;
    }
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        heads.apply(&x)?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    Ok(percentile(&ms, 0.5))
}

async fn throughput(batcher: Batcher, clients: usize, seconds: f64) -> f64 {
    let stop = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let b = batcher.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < stop {
                    if b.classify(String::new()).await.is_ok() {
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap_or(0);
    }
    total as f64 / started.elapsed().as_secs_f64()
}

/// Runs the benchmark.
pub fn run(args: BenchClassifierArgs) -> i32 {
    if rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.max(1))
        .build_global()
        .is_err()
    {
        eprintln!("error: the thread pool was already started");
        return 1;
    }
    let Some(heads) = args.classifier.load_heads() else {
        return 1;
    };
    let layers = args
        .layers
        .clone()
        .unwrap_or_else(|| heads.labels.layers.clone());
    // The heads on one embedding (their input width does not depend on the text's length).
    if args.layers.is_none() && !args.harness {
        let width = heads.category.w1.dims2().map_or(0, |d| d.1);
        match time_heads(&heads, width, args.runs.max(1) * 10) {
            Ok(p50) => println!(
                "{}",
                json!({"runtime": "switchyard", "heads_p50_ms": (p50 * 1e4).round() / 1e4,
                       "input": width, "layers": heads.labels.layers,
                       "strong_layers": heads.labels.strong_layers,
                       "strong_experts": heads.labels.strong_experts.iter()
                           .map(ToString::to_string).collect::<Vec<_>>(),
                       "threads": args.threads})
            ),
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        }
    }
    let load = |k| {
        Encoder::load_with(&args.classifier.encoder, k).and_then(|mut e| {
            if k != Kernels::Reference {
                e.set_layers(&layers)?;
            }
            Ok(e)
        })
    };
    let (fast, reference) = match (
        load(Kernels::Fast),
        args.reference.then(|| load(Kernels::Reference)).transpose(),
    ) {
        (Ok(f), Ok(r)) => (f, r),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    if args.harness {
        return match harness(&fast, &args) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        };
    }
    let mut fast = Some(fast);
    for &len in &args.lengths {
        let len = len.clamp(3, 512);
        // [CLS], ordinary word pieces, [SEP].
        let ids: Vec<u32> = std::iter::once(101)
            .chain((0..len - 2).map(|i| 1000 + (i as u32 * 37) % 20000))
            .chain(std::iter::once(102))
            .collect();
        let Some(encoder) = fast.take() else { return 1 };
        let single = time_single(&encoder, &ids, args.runs);
        let reference_single = reference
            .as_ref()
            .map(|r| time_single(r, &ids, args.runs.min(20)));
        let (p50, p99) = match single {
            Ok(v) => v,
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        };
        let mut line = json!({
            "runtime": "switchyard", "kernels": crate::cpu::chosen().as_str(),
            "threads": args.threads, "tokens": len, "layers": layers,
            "p50_ms": (p50 * 1000.0).round() / 1000.0, "p99_ms": (p99 * 1000.0).round() / 1000.0,
        });
        if let Some(Ok((r50, r99))) = reference_single {
            line["candle_bert_p50_ms"] = json!((r50 * 1000.0).round() / 1000.0);
            line["candle_bert_p99_ms"] = json!((r99 * 1000.0).round() / 1000.0);
        }
        let model = Arc::new(IdsModel {
            encoder,
            ids,
            batch: 16,
        });
        if args.concurrency > 0 {
            for (key, max_batch) in [("requests_per_s", 16), ("requests_per_s_unbatched", 1)] {
                let b = Batcher::start(
                    model.clone(),
                    BatchSettings {
                        window: Duration::from_micros(args.window_us),
                        max_batch,
                    },
                );
                let rps = rt.block_on(throughput(b, args.concurrency, args.seconds));
                line[key] = json!((rps * 10.0).round() / 10.0);
            }
            line["concurrency"] = json!(args.concurrency);
        }
        println!("{line}");
        // The batcher threads hold clones until their channels close.
        std::thread::sleep(Duration::from_millis(20));
        match Arc::try_unwrap(model) {
            Ok(m) => fast = Some(m.encoder),
            Err(_) => match load(Kernels::Fast) {
                Ok(e) => fast = Some(e),
                Err(e) => {
                    eprintln!("error: {e}");
                    return 1;
                }
            },
        }
    }
    0
}
