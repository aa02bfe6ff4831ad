//! Options shared by the commands that load the request classifier.

use crate::classifier::encoder::Encoder;
use crate::classifier::heads::Heads;
use crate::classifier::{Classifier, BUILTIN_HEADS, BUILTIN_LABELS, DEFAULT_MAX_TOKENS};
use clap::Args;
use std::path::PathBuf;

/// Where the classifier comes from.
#[derive(Debug, Clone, Args)]
pub struct ClassifierArgs {
    /// The encoder folder (config.json, model.safetensors, tokenizer.json).
    #[arg(long, default_value = "models/all-MiniLM-L6-v2")]
    pub encoder: PathBuf,
    /// A heads folder (heads.safetensors, labels.json); default: the heads built into the binary.
    #[arg(long)]
    pub heads: Option<PathBuf>,
    /// Token budget of one input; longer inputs keep their head and tail [default: 128;
    /// train-router: 256].
    #[arg(long)]
    pub max_tokens: Option<usize>,
}

impl ClassifierArgs {
    /// Loads the classifier, or prints why not.
    pub fn load(&self) -> Option<Classifier> {
        let max_tokens = self.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
        match Classifier::load(&self.encoder, self.heads.as_deref(), max_tokens) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!(
                    "error: cannot load the classifier ({}): {e}\n\
                     hint: scripts/fetch-models.sh fetches the default encoder",
                    self.encoder.display()
                );
                None
            }
        }
    }
}

impl ClassifierArgs {
    /// Loads only the heads (`--heads`, or the built-in ones), or prints why not.
    pub fn load_heads(&self) -> Option<Heads> {
        let loaded = match &self.heads {
            Some(dir) => Heads::load(dir),
            None => Heads::from_bytes(BUILTIN_HEADS, BUILTIN_LABELS),
        };
        loaded
            .map_err(|e| eprintln!("error: cannot load the heads: {e}"))
            .ok()
    }

    /// Loads only the encoder (for training), or prints why not.
    pub fn load_encoder(&self) -> Option<Encoder> {
        Encoder::load(&self.encoder)
            .map_err(|e| {
                eprintln!(
                    "error: cannot load the encoder ({}): {e}\n\
                     hint: scripts/fetch-models.sh fetches the default encoder",
                    self.encoder.display()
                )
            })
            .ok()
    }
}

/// The cache folder of downloaded models and computed embeddings.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SWITCHYARD_CACHE") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("switchyard")
}

/// A progress bar on stderr, redrawn in place on a terminal; plain lines otherwise.
pub fn progress(label: &str, done: usize, total: usize) {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        const WIDTH: usize = 30;
        let filled = (done * WIDTH)
            .checked_div(total)
            .unwrap_or(WIDTH)
            .min(WIDTH);
        eprint!(
            "\r{label} [{}{}] {done}/{total}",
            "#".repeat(filled),
            " ".repeat(WIDTH - filled)
        );
        if done >= total {
            eprintln!();
        }
    } else {
        eprintln!("{label}: {done}/{total}");
    }
}
