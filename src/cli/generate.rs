//! `switchyard generate`: answer one prompt with an on-box model and report its speed.

use crate::api::Role;
use crate::local::engine::DEFAULT_THREADS;
use crate::local::generate::{generate_with, Params};
use crate::local::grammar::Constraint;
use crate::local::{configure_compute_threads, LocalModel};
use crate::policy;
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

/// The on-box model a command loads (`generate`, `eval-local`).
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// A `local` model of the policy, or a path to a GGUF file. Default: the policy's first local model.
    #[arg(long)]
    pub model: Option<String>,
    /// The policy that names the models.
    #[arg(long, default_value = "policies/default.yaml")]
    pub policy: PathBuf,
    /// A tokenizer.json to use instead of the one in the GGUF metadata.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// A chat template instead of the GGUF metadata's: `chatml`, `gemma`, or a Jinja file.
    #[arg(long)]
    pub template: Option<String>,
    /// CPU threads of the matrix kernels (default: the policy's setting, else the engine's default).
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A system prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// Keep generating past the end-of-turn token, up to --max-tokens (for benchmarks).
    #[arg(long)]
    pub ignore_eos: bool,
    /// Print one JSON object (answer and speed) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Constrain the answer to a JSON object (as `response_format: {"type": "json_object"}`).
    #[arg(long, conflicts_with = "json_schema")]
    pub json_object: bool,
    /// Constrain the answer to the JSON schema in this file (as `response_format` `json_schema`).
    #[arg(long)]
    pub json_schema: Option<PathBuf>,
    /// The user's message.
    pub prompt: String,
}

pub fn run(args: GenerateArgs) -> i32 {
    match try_run(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

fn try_run(args: &GenerateArgs) -> Result<(), String> {
    let Resolved {
        path,
        tokenizer,
        template,
        threads,
    } = resolve_model(&args.model)?;
    // SAFETY: `generate` starts no thread before this.
    unsafe { configure_compute_threads(threads) };
    let loading = Instant::now();
    let model = LocalModel::load_full(
        &path,
        tokenizer.as_deref(),
        template.as_deref(),
        crate::local::model::Kernels::Fast,
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    let load_s = loading.elapsed().as_secs_f64();
    let mut messages = vec![];
    if let Some(s) = &args.system {
        messages.push((Role::System, s.clone()));
    }
    messages.push((Role::User, args.prompt.clone()));
    let prompt = model.prompt(&messages).map_err(|e| e.to_string())?;
    let params = Params {
        max_tokens: args.max_tokens.max(1),
        sampling: crate::local::sampling::SamplingParams {
            temperature: args.temperature,
            top_p: 1.0,
            ..Default::default()
        },
        seed: args.seed,
        stop: vec![],
        ignore_eos: args.ignore_eos,
    };
    let constraint = match (&args.json_schema, args.json_object) {
        (Some(file), _) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let schema = serde_json::from_str(&text)
                .map_err(|e| format!("{}: not JSON: {e}", file.display()))?;
            Some(Constraint::JsonSchema(schema))
        }
        (None, true) => Some(Constraint::JsonObject),
        (None, false) => None,
    };
    let compiling = Instant::now();
    let matcher = match &constraint {
        Some(c) => Some(model.grammars()?.matcher(c)?),
        None => None,
    };
    let grammar_s = compiling.elapsed().as_secs_f64();
    let mut answer = String::new();
    let mut stdout = std::io::stdout();
    let outcome = crate::local::on_compute_pool(|| {
        generate_with(&model, &prompt, &params, matcher, |piece| {
            answer.push_str(piece);
            if !args.json {
                let _ = stdout.write_all(piece.as_bytes());
                let _ = stdout.flush();
            }
            true
        })
    })
    .map_err(|e| e.to_string())?;
    if args.json {
        let v = serde_json::json!({
            "model": model.name,
            "threads": threads,
            "kernels": crate::cpu::chosen().as_str(),
            "block_kernel": crate::local::block_kernel_name(crate::cpu::chosen()),
            "answer": answer,
            "finish_reason": outcome.finish.reason(),
            "prompt_tokens": outcome.prompt_tokens,
            "completion_tokens": outcome.completion_tokens,
            "load_seconds": load_s,
            "constrained": constraint.is_some(),
            "grammar_seconds": grammar_s,
            "time_to_first_token_seconds": outcome.prefill.as_secs_f64(),
            "prompt_tokens_per_second": outcome.prefill_rate(),
            "decode_tokens_per_second": outcome.decode_rate(),
        });
        println!("{v}");
    } else {
        println!();
        eprintln!(
            "{} | {threads} thread(s) | prompt {} tokens at {:.1} tok/s | first token after {:.0} ms | \
             decode {} tokens at {:.1} tok/s | finish: {}",
            model.name,
            outcome.prompt_tokens,
            outcome.prefill_rate(),
            outcome.prefill.as_secs_f64() * 1000.0,
            outcome.completion_tokens,
            outcome.decode_rate(),
            outcome.finish.reason()
        );
    }
    Ok(())
}

/// What a command loads, from its [`ModelArgs`] and the policy.
pub struct Resolved {
    pub path: PathBuf,
    pub tokenizer: Option<PathBuf>,
    pub template: Option<String>,
    pub threads: usize,
}

/// The GGUF file, tokenizer, chat template and thread count of a command's model arguments.
pub fn resolve_model(args: &ModelArgs) -> Result<Resolved, String> {
    if let Some(m) = &args.model {
        let p = PathBuf::from(m);
        if p.extension().is_some_and(|e| e == "gguf") || p.is_file() {
            return Ok(Resolved {
                path: p,
                tokenizer: args.tokenizer.clone(),
                template: args.template.clone(),
                threads: args.threads.unwrap_or(DEFAULT_THREADS),
            });
        }
    }
    let policy = policy::load(&args.policy).map_err(|e| e.to_string())?;
    let model = match &args.model {
        Some(name) => policy.models.get(name).ok_or_else(|| {
            format!(
                "no model `{name}` in {} (nor a GGUF file of that name)",
                args.policy.display()
            )
        })?,
        None => policy
            .local_model
            .as_ref()
            .and_then(|n| policy.models.get(n))
            .ok_or_else(|| format!("{} has no local model", args.policy.display()))?,
    };
    let local = model
        .local
        .as_ref()
        .ok_or_else(|| format!("model `{}` is not a local model", model.name))?;
    let path = local
        .path
        .clone()
        .ok_or_else(|| format!("model `{}` has no `path`", model.name))?;
    Ok(Resolved {
        path,
        tokenizer: args.tokenizer.clone().or_else(|| local.tokenizer.clone()),
        template: args.template.clone().or_else(|| local.template.clone()),
        threads: args.threads.or(local.threads).unwrap_or(DEFAULT_THREADS),
    })
}
