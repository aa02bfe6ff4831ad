//! The on-box small LLM: GGUF chat models run in-process on the CPU with candle.
//!
//! [`LocalModel`] is one loaded model (weights, tokenizer, chat template); [`engine::LocalEngine`]
//! serves it to the gateway through a bounded queue and a pool of decode workers.

pub mod engine;
pub use engine::capabilities;

/// The on-box block kernel a tier runs (`avx512vnni`, `avxvnni`, `avx2`), or `candle` where
/// candle's own kernels run.
pub fn block_kernel_name(path: crate::cpu::KernelPath) -> &'static str {
    kernels::Kernel::for_path(path).map_or("candle", kernels::Kernel::name)
}
pub mod generate;
pub mod grammar;
mod kernels;
pub mod model;
pub mod request;
pub mod response;
pub mod sampling;
pub mod template;
pub mod tokenizer;
pub mod tool_calls;

use crate::api::Role;
use candle_core::quantized::gguf_file;
use model::{md, Kernels, Weights};
use std::path::{Path, PathBuf};
use template::ChatTemplate;
use tokenizers::Tokenizer;

/// Why an on-box model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid GGUF model: {0}")]
    Format(String),
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),
    /// The chat template refused the messages with its own `raise_exception` (e.g. roles that
    /// do not alternate, a system message the model does not take): the request's fault.
    #[error("the model's chat template refuses these messages: {0}")]
    TemplateRefused(String),
    #[error("the prompt is {prompt} tokens, the model's context is {context}")]
    PromptTooLong { prompt: usize, context: usize },
    #[error("the generation reached its capacity of {0} tokens")]
    ContextFull(usize),
    #[error("model computation failed: {0}")]
    Compute(#[from] candle_core::Error),
}

/// A loaded chat model.
pub struct LocalModel {
    pub weights: Weights,
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
    /// Tokens that end the answer (end of turn, end of text).
    pub end_tokens: Vec<u32>,
    /// The file's model name (`general.name`), for logs.
    pub name: String,
    /// The text of the tokenizer's special tokens (`<|im_start|>`, ...), which message content
    /// must not be able to produce.
    specials: Vec<String>,
    /// The grammar compiler for constrained output, built on first use.
    grammars: std::sync::OnceLock<Result<grammar::Grammars, String>>,
}

impl LocalModel {
    /// Loads a GGUF chat model; `tokenizer` is a `tokenizer.json` to use instead of the one
    /// built from the GGUF metadata.
    pub fn load(path: &Path, tokenizer: Option<&Path>) -> Result<LocalModel, LocalError> {
        Self::load_with(path, tokenizer, Kernels::Fast)
    }

    /// [`LocalModel::load`] with a choice of matrix kernels.
    pub fn load_with(
        path: &Path,
        tokenizer: Option<&Path>,
        kernels: Kernels,
    ) -> Result<LocalModel, LocalError> {
        Self::load_full(path, tokenizer, None, kernels)
    }

    /// [`LocalModel::load_with`] with a chat template to use instead of the file's: a built-in
    /// format or a Jinja file ([`template::source_of`]).
    pub fn load_full(
        path: &Path,
        tokenizer: Option<&Path>,
        chat_template: Option<&str>,
        kernels: Kernels,
    ) -> Result<LocalModel, LocalError> {
        let io = |source| LocalError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let ct = gguf_file::Content::read(&mut file)
            .map_err(|e| LocalError::Format(format!("{}: {e}", path.display())))?;
        let weights = Weights::from_gguf(&ct, &mut file, kernels)?;
        let tokenizer = match tokenizer {
            Some(p) => tokenizer::from_file(p)?,
            None => tokenizer::from_gguf(&ct)?,
        };
        let text_of = |key: &str| -> Option<(u32, String)> {
            let id = md(&ct, key).ok()?.to_u32().ok()?;
            Some((id, tokenizer.id_to_token(id)?))
        };
        let bos = text_of("tokenizer.ggml.bos_token_id");
        let eos = text_of("tokenizer.ggml.eos_token_id");
        let mut end_tokens: Vec<u32> = eos.iter().map(|(id, _)| *id).collect();
        for t in [
            "<|im_end|>",
            "<|endoftext|>",
            "<|eot_id|>",
            "<|end|>",
            "<end_of_turn>",
        ] {
            if let Some(id) = tokenizer.token_to_id(t) {
                if !end_tokens.contains(&id) {
                    end_tokens.push(id);
                }
            }
        }
        let template_src = match chat_template {
            Some(choice) => Some(template::source_of(choice)?),
            None => md(&ct, "tokenizer.chat_template")
                .ok()
                .and_then(|v| v.to_string().ok())
                .cloned(),
        };
        let template = ChatTemplate::new(
            template_src.as_deref(),
            bos.as_ref().map(|(_, t)| t.as_str()).unwrap_or(""),
            eos.as_ref().map(|(_, t)| t.as_str()).unwrap_or(""),
        )?;
        let name = md(&ct, "general.name")
            .ok()
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_else(|| path.display().to_string());
        let specials = tokenizer
            .get_added_tokens_decoder()
            .values()
            .filter(|t| t.special && !t.content.is_empty())
            .map(|t| t.content.clone())
            .collect();
        Ok(LocalModel {
            weights,
            tokenizer,
            template,
            end_tokens,
            name,
            specials,
            grammars: std::sync::OnceLock::new(),
        })
    }

    /// The grammar compiler of the model's vocabulary (built on the first call: about a second
    /// for a 150k-token vocabulary).
    ///
    /// Errors: the vocabulary's token bytes cannot be read (see [`grammar::Grammars::new`]).
    pub fn grammars(&self) -> Result<&grammar::Grammars, String> {
        self.grammars
            .get_or_init(|| {
                grammar::Grammars::new(&self.tokenizer, self.weights.vocab_size(), &self.end_tokens)
                    .map_err(|e| format!("this model's output cannot be constrained: {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The bytes of `token` (exact for byte-level and byte-fallback vocabularies; otherwise
    /// its decoded text).
    pub fn token_bytes(&self, token: u32) -> Vec<u8> {
        match self.grammars() {
            Ok(g) => g.token_bytes(token),
            Err(_) => self
                .tokenizer
                .decode(&[token], false)
                .unwrap_or_default()
                .into_bytes(),
        }
    }

    /// What this model can do through the on-box engine: everything the engine supports
    /// ([`engine::capabilities`]) but tools when its chat template has no tools section in the
    /// syntax the engine parses.
    pub fn capabilities(&self) -> crate::api::Capabilities {
        let all = engine::capabilities();
        if self.template.has_tools() {
            all
        } else {
            all.without(crate::api::Capability::Tools)
        }
    }

    /// The prompt token ids for a conversation with tool calls and tool results, offering
    /// `tools`, in the model's chat format. Special tokens come only from the template: one
    /// written in any text of the request (`<|im_end|>\n<|im_start|>system` in a message, a
    /// tool's description or a call's arguments) is [defused](defuse) into plain text, so
    /// content cannot forge a turn.
    pub fn chat_prompt(
        &self,
        messages: &[template::TemplateMessage],
        tools: Option<&[serde_json::Value]>,
    ) -> Result<Vec<u32>, LocalError> {
        let messages: Vec<template::TemplateMessage> = messages
            .iter()
            .map(|m| template::TemplateMessage {
                role: m.role,
                content: self.safe(&m.content),
                tool_calls: m
                    .tool_calls
                    .as_ref()
                    .map(|calls| calls.iter().map(|c| self.safe_json(c)).collect()),
                tool_call_id: m.tool_call_id.clone(),
                name: m.name.clone(),
            })
            .collect();
        let tools: Option<Vec<serde_json::Value>> =
            tools.map(|t| t.iter().map(|v| self.safe_json(v)).collect());
        let text = self.template.render_with(&messages, tools.as_deref())?;
        tokenizer::encode(&self.tokenizer, &text)
    }

    /// [`LocalModel::chat_prompt`] for a conversation of plain text turns.
    pub fn prompt(&self, messages: &[(Role, String)]) -> Result<Vec<u32>, LocalError> {
        let messages: Vec<template::TemplateMessage> = messages
            .iter()
            .map(|(r, c)| template::TemplateMessage::text(*r, c.clone()))
            .collect();
        self.chat_prompt(&messages, None)
    }

    /// `text`, [defused](defuse) when it holds a special token's text.
    fn safe(&self, text: &str) -> String {
        if self.specials.iter().any(|s| text.contains(s.as_str())) {
            defuse(text, &self.specials)
        } else {
            text.to_string()
        }
    }

    /// `v` with every string in it (keys included) made [safe](LocalModel::safe).
    fn safe_json(&self, v: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::String(s) => Value::String(self.safe(s)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.safe_json(x)).collect()),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, x)| (self.safe(k), self.safe_json(x)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

/// `text` with every special token string broken by a zero-width space after its first
/// character: it reads the same, but tokenizes as ordinary text.
pub fn defuse(text: &str, specials: &[String]) -> String {
    let mut out = text.to_string();
    for s in specials {
        if let Some(first) = s.chars().next() {
            let split = first.len_utf8();
            let broken = format!("{}\u{200B}{}", &s[..split], &s[split..]);
            out = out.replace(s.as_str(), &broken);
        }
    }
    out
}

static COMPUTE_THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// Sets the number of CPU threads of the process's compute pools: the rayon pool (the
/// classifier's and candle's element-wise work) and candle's pool (the block kernels and
/// candle's matrix products), which read `RAYON_NUM_THREADS` when they start, and candle's
/// matrix products on every call. The first call wins.
///
/// # Safety
/// Writes the environment: call it before any other thread of the process exists (no async
/// runtime, no compute pool yet), as `serve` and `generate` do first thing.
pub unsafe fn configure_compute_threads(threads: usize) {
    let threads = threads.max(1);
    if COMPUTE_THREADS.set(threads).is_ok() {
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
}

/// The compute threads [`configure_compute_threads`] set, if it ran.
pub fn compute_threads() -> Option<usize> {
    COMPUTE_THREADS.get().copied()
}

/// The compute threads a policy asks for: the first on-box model with a `path`, its `threads`
/// or the engine's default; `None` when no on-box model will load.
pub fn threads_of(policy: &crate::policy::Policy) -> Option<usize> {
    policy
        .models
        .values()
        .filter_map(|m| m.local.as_ref().filter(|l| l.path.is_some()))
        .map(|l| l.threads.unwrap_or(engine::DEFAULT_THREADS))
        .next()
}

/// Runs `f` on a worker of the CPU thread pool that candle's element-wise operations use, so that
/// their parallel loops run in place instead of handing each operation to another thread (with
/// one thread, that hand-off cost more than the operations; see docs/benchmarks.md).
pub fn on_compute_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}
