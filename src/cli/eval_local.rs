//! `switchyard eval-local`: how often an on-box model answers right, on a fixed sample of
//! questions with gold answers (GSM8K and MMLU-Pro from the training data), graded as the
//! lm-evaluation-harness grades them ([`crate::tuning::answers`]), with its speed beside it.

use super::generate::{resolve_model, ModelArgs};
use crate::api::Role;
use crate::local::generate::{generate, Params};
use crate::local::{configure_compute_threads, LocalModel};
use crate::tuning::answers::{self, Question, Task};
use clap::Args;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Args)]
pub struct EvalLocalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The training-data folder (`gsm8k/train.jsonl`, `mmlu_pro/questions.jsonl`).
    #[arg(long, default_value = "../shared/data/train")]
    pub data: PathBuf,
    /// GSM8K questions in the sample.
    #[arg(long, default_value_t = 50)]
    pub gsm8k: usize,
    /// MMLU-Pro questions in the sample.
    #[arg(long, default_value_t = 50)]
    pub mmlu_pro: usize,
    /// The sample's seed: the same seed gives every model the same questions.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Most tokens of each answer (greedy decoding).
    #[arg(long, default_value_t = 512)]
    pub max_tokens: usize,
    /// Print one JSON object per question, then the summary, instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: EvalLocalArgs) -> i32 {
    match try_run(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

/// Per-task tallies.
#[derive(Default)]
struct Tally {
    questions: usize,
    correct: usize,
    /// Answers with nothing to extract.
    unanswered: usize,
    tokens: usize,
    decode_tokens: usize,
    decode_secs: f64,
}

fn try_run(args: &EvalLocalArgs) -> Result<(), String> {
    let m = resolve_model(&args.model)?;
    // SAFETY: `eval-local` starts no thread before this.
    unsafe { configure_compute_threads(m.threads) };
    let model = LocalModel::load_full(
        &m.path,
        m.tokenizer.as_deref(),
        m.template.as_deref(),
        crate::local::model::Kernels::Fast,
    )
    .map_err(|e| format!("{}: {e}", m.path.display()))?;
    let mut questions: Vec<Question> = vec![];
    for (task, n) in [(Task::Gsm8k, args.gsm8k), (Task::MmluPro, args.mmlu_pro)] {
        if n > 0 {
            questions.extend(answers::load_sample(&args.data, task, n, args.seed)?);
        }
    }
    let params = Params {
        max_tokens: args.max_tokens.max(1),
        sampling: crate::local::sampling::SamplingParams {
            temperature: 0.0,
            top_p: 1.0,
            ..Default::default()
        },
        seed: 0,
        stop: vec![],
        ignore_eos: false,
    };
    let started = Instant::now();
    let mut tallies = [Tally::default(), Tally::default()];
    for (i, q) in questions.iter().enumerate() {
        let prompt = model
            .prompt(&[(Role::User, q.prompt.clone())])
            .map_err(|e| e.to_string())?;
        let mut answer = String::new();
        let outcome = crate::local::on_compute_pool(|| {
            generate(&model, &prompt, &params, |piece| {
                answer.push_str(piece);
                true
            })
        })
        .map_err(|e| e.to_string())?;
        let extracted = answers::extract(q, &answer);
        let correct = extracted.as_deref() == Some(q.gold.as_str());
        let t = &mut tallies[usize::from(q.task == Task::MmluPro)];
        t.questions += 1;
        t.correct += usize::from(correct);
        t.unanswered += usize::from(extracted.is_none());
        t.tokens += outcome.completion_tokens;
        // Decode rate as `generate` reports it: the tokens after the first over their time.
        t.decode_tokens += outcome.completion_tokens.saturating_sub(1);
        t.decode_secs += outcome.decode.as_secs_f64();
        if args.json {
            println!(
                "{}",
                json!({"task": q.task.name(), "id": q.id, "gold": q.gold, "extracted": extracted,
                    "correct": correct, "completion_tokens": outcome.completion_tokens, "answer": answer})
            );
        } else {
            eprintln!(
                "[{}/{}] {} {}: {} (gold {}, {} tokens)",
                i + 1,
                questions.len(),
                q.task.name(),
                q.id,
                extracted.as_deref().unwrap_or("-"),
                q.gold,
                outcome.completion_tokens
            );
        }
    }
    let summary: Vec<_> = [Task::Gsm8k, Task::MmluPro]
        .iter()
        .zip(&tallies)
        .filter(|(_, t)| t.questions > 0)
        .map(|(task, t)| {
            json!({"task": task.name(), "questions": t.questions, "correct": t.correct,
                "accuracy": t.correct as f64 / t.questions as f64, "unanswered": t.unanswered,
                "mean_answer_tokens": t.tokens as f64 / t.questions as f64,
                "decode_tokens_per_s": if t.decode_secs > 0.0 { t.decode_tokens as f64 / t.decode_secs } else { 0.0 }})
        })
        .collect();
    if args.json {
        println!(
            "{}",
            json!({"model": model.name, "path": m.path, "seed": args.seed, "threads": m.threads,
                "max_tokens": args.max_tokens, "kernels": crate::cpu::chosen().as_str(),
                "seconds": started.elapsed().as_secs_f64(), "tasks": summary})
        );
        return Ok(());
    }
    println!(
        "{} ({}), {} thread(s), seed {}, max {} tokens, {:.0} s",
        model.name,
        m.path.display(),
        m.threads,
        args.seed,
        args.max_tokens,
        started.elapsed().as_secs_f64()
    );
    println!("| task | questions | accuracy | unanswered | mean answer tokens | decode tok/s |");
    println!("|---|---|---|---|---|---|");
    for s in &summary {
        println!(
            "| {} | {} | {:.3} | {} | {:.0} | {:.1} |",
            s["task"].as_str().unwrap_or(""),
            s["questions"],
            s["accuracy"].as_f64().unwrap_or(0.0),
            s["unanswered"],
            s["mean_answer_tokens"].as_f64().unwrap_or(0.0),
            s["decode_tokens_per_s"].as_f64().unwrap_or(0.0),
        );
    }
    Ok(())
}
