//! The on-box request classifier: a sentence encoder (all-MiniLM-L6-v2, BERT, in-process on the
//! CPU) with two small trained heads, a category distribution and the strong score.
//!
//! [`Classifier`] scores texts in batches; [`batcher::Batcher`] collects concurrent requests of the
//! gateway into small batches; [`train`] and [`eval`] reproduce and measure the committed heads.

pub mod batcher;
pub mod bert;
pub mod data;
mod dense;
pub mod embed_cache;
pub mod encoder;
pub mod eval;
pub mod heads;
pub mod input;
pub mod train;

use crate::features::ClassifierOutput;
use crate::policy::ClassifierSettings;
use encoder::Encoder;
use heads::Heads;
use std::path::{Path, PathBuf};

/// The heads trained by `switchyard train-router`, committed with the source.
pub const BUILTIN_HEADS: &[u8] = include_bytes!("trained/heads.safetensors");
/// Their label map.
pub const BUILTIN_LABELS: &str = include_str!("trained/labels.json");
/// Default token budget of the classifier's input when serving and scoring (the policy's
/// default: [`ClassifierSettings::DEFAULT_MAX_TOKENS`]).
pub const DEFAULT_MAX_TOKENS: usize = ClassifierSettings::DEFAULT_MAX_TOKENS;
/// Token budget of the training embeddings (more of each example for the heads to learn from).
pub const TRAIN_MAX_TOKENS: usize = 256;

/// Why the classifier could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ClassifierError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid classifier files: {0}")]
    Format(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("classifier computation failed: {0}")]
    Compute(#[from] candle_core::Error),
    #[error("the classifier is shut down")]
    Closed,
    /// The batch a request was part of failed (the message of the model's error).
    #[error("{0}")]
    Batch(String),
}

/// What the classifier says about one text.
#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    /// (category, probability), most likely first.
    pub categories: Vec<(String, f32)>,
    /// How likely a small model's answer is worse than a large model's, in [0, 1].
    pub strong_score: f32,
    /// Tokens of the input text (before truncation).
    pub tokens: usize,
    /// Whether the input was longer than the token budget.
    pub truncated: bool,
    /// The strong score of each on-box model's own heads, by model name.
    pub strong_by_model: Vec<(String, f32)>,
    /// The terms of `strong_score` when the heads have strong experts (for `classify` and
    /// `policy explain`); empty otherwise.
    pub strong_parts: Vec<heads::StrongPart>,
}

impl Classification {
    /// The policy's view: top category, its probability, strong score.
    pub fn output(&self) -> ClassifierOutput {
        let (category, probability) = self
            .categories
            .first()
            .cloned()
            .unwrap_or_else(|| ("other".into(), 0.0));
        ClassifierOutput {
            category,
            probability: f64::from(probability),
            strong_score: f64::from(self.strong_score),
            strong_by_model: self
                .strong_by_model
                .iter()
                .map(|(m, s)| (m.clone(), f64::from(*s)))
                .collect(),
        }
    }

    /// The compact `x-switchyard-classifier` header value: `code;p=0.91;strong=0.42`.
    pub fn header(&self) -> String {
        let o = self.output();
        format!(
            "{};p={:.2};strong={:.2}",
            o.category, o.probability, o.strong_score
        )
    }
}

/// A model that scores requests for routing; swappable behind this trait.
pub trait RouterModel: Send + Sync {
    /// Classifies a batch of texts, in order.
    fn classify(&self, texts: &[&str]) -> Result<Vec<Classification>, ClassifierError>;
}

/// Notes on on-box models whose own heads (`models.<name>.heads`) were calibrated on another
/// weights file than the one the policy loads for them (the heads' `model_file` against the
/// file name of the model's `path`): their strong score says when the labels' model answers
/// worse than the cloud, not when this one does. Heads that record no file, and folders that
/// cannot be read (loading them reports that), give none.
pub fn calibration_notes(policy: &crate::policy::Policy) -> Vec<String> {
    let mut notes = vec![];
    for (model, dir) in &policy.classifier.model_heads {
        let Ok(labels) = heads::Labels::read(dir) else {
            continue;
        };
        let loads = policy
            .models
            .get(model)
            .and_then(|m| m.local.as_ref())
            .and_then(|l| l.path.as_deref())
            .map(heads::model_file_name);
        if let (Some(calibrated), Some(loads)) = (labels.model_file, loads) {
            if calibrated != loads {
                notes.push(format!(
                    "model `{model}` loads {loads}, but its heads ({}) were calibrated for {calibrated}: \
                     its strong score says when {calibrated} answers worse than the cloud, not {loads}",
                    dir.display()
                ));
            }
        }
    }
    notes
}

/// The encoder and its heads.
pub struct Classifier {
    pub encoder: Encoder,
    pub heads: Heads,
    /// Heads calibrated for on-box models (`models.<name>.heads`), by model name.
    pub model_heads: Vec<(String, Heads)>,
    /// Token budget of one input (special tokens included).
    pub max_tokens: usize,
}

impl Classifier {
    /// Loads the encoder folder and the heads (`None`: the heads built into the binary).
    pub fn load(
        encoder: &Path,
        heads: Option<&Path>,
        max_tokens: usize,
    ) -> Result<Classifier, ClassifierError> {
        let heads = match heads {
            Some(dir) => Heads::load(dir)?,
            None => Heads::from_bytes(BUILTIN_HEADS, BUILTIN_LABELS)?,
        };
        Classifier::new(Encoder::load(encoder)?, heads, max_tokens)
    }

    /// A classifier of `encoder` and `heads`, the encoder set to pool the layers the heads read.
    ///
    /// Errors: the heads read a layer the encoder does not have.
    pub fn new(
        mut encoder: Encoder,
        heads: Heads,
        max_tokens: usize,
    ) -> Result<Classifier, ClassifierError> {
        encoder.set_layers(&heads.labels.layers)?;
        Ok(Classifier {
            encoder,
            heads,
            model_heads: vec![],
            max_tokens,
        })
    }

    /// The classifier a policy's settings describe: the encoder, the shared heads and each
    /// on-box model's own.
    ///
    /// Errors: a folder that cannot be loaded, or model heads trained on another encoder.
    pub fn from_settings(settings: &ClassifierSettings) -> Result<Classifier, ClassifierError> {
        let mut c = Classifier::load(
            &settings.encoder,
            settings.heads.as_deref(),
            settings.max_tokens,
        )?;
        for (model, dir) in &settings.model_heads {
            let h = Heads::load(dir)?;
            if h.labels.encoder != c.heads.labels.encoder {
                return Err(ClassifierError::Format(format!(
                    "the heads of `{model}` ({}) were trained on the encoder {}, not {}",
                    dir.display(),
                    h.labels.encoder,
                    c.heads.labels.encoder
                )));
            }
            c.model_heads.push((model.clone(), h));
        }
        // The encoder pools every layer some heads read: the shared heads' first, then the
        // others'; each heads read their own blocks ([`Classifier::finish`]).
        let mut union = c.encoder.pooled_layers();
        for (_, h) in &c.model_heads {
            for l in h.labels.read_layers(c.encoder.layer_count()).0 {
                if !union.contains(&l) {
                    union.push(l);
                }
            }
        }
        if union != c.encoder.pooled_layers() {
            c.encoder.set_layers(&union)?;
        }
        Ok(c)
    }

    /// Embeds texts with this classifier's token budget (see [`Encoder::embed_texts`]).
    pub fn embed_all(
        &self,
        texts: &[&str],
        batch: usize,
    ) -> Result<Vec<(Vec<f32>, encoder::Tokens)>, ClassifierError> {
        self.encoder.embed_texts(texts, self.max_tokens, batch)
    }

    /// Names of the categories, in the heads' order.
    pub fn categories(&self) -> &[String] {
        &self.heads.labels.categories
    }

    /// Applies the heads to embedded texts.
    pub fn finish(
        &self,
        embedded: Vec<(Vec<f32>, encoder::Tokens)>,
    ) -> Result<Vec<Classification>, ClassifierError> {
        let embeddings: Vec<Vec<f32>> = embedded.iter().map(|(e, _)| e.clone()).collect();
        let (pooled, last) = (self.encoder.pooled_layers(), self.encoder.layer_count());
        let apply = |heads: &Heads| heads.apply_pooled(&embeddings, &pooled, last);
        let outs = apply(&self.heads)?;
        let mut by_model: Vec<Vec<(String, f32)>> = vec![vec![]; outs.len()];
        for (model, heads) in &self.model_heads {
            for (i, o) in apply(heads)?.into_iter().enumerate() {
                if let Some(v) = by_model.get_mut(i) {
                    v.push((model.clone(), o.strong_score));
                }
            }
        }
        Ok(outs
            .into_iter()
            .zip(embedded)
            .zip(by_model)
            .map(|((o, (_, t)), strong_by_model)| {
                let mut categories: Vec<(String, f32)> = self
                    .categories()
                    .iter()
                    .cloned()
                    .zip(o.categories)
                    .collect();
                categories.sort_by(|a, b| b.1.total_cmp(&a.1));
                Classification {
                    categories,
                    strong_score: o.strong_score,
                    tokens: t.original,
                    truncated: t.truncated,
                    strong_by_model,
                    strong_parts: o.strong_parts,
                }
            })
            .collect())
    }
}

impl RouterModel for Classifier {
    fn classify(&self, texts: &[&str]) -> Result<Vec<Classification>, ClassifierError> {
        let embedded = self.embed_all(texts, texts.len().max(1))?;
        self.finish(embedded)
    }
}

/// Loads the classifier a policy asks for and starts its batching thread.
pub fn start(settings: &ClassifierSettings) -> Result<batcher::Batcher, ClassifierError> {
    let classifier = Classifier::from_settings(settings)?;
    Ok(batcher::Batcher::start(
        std::sync::Arc::new(classifier),
        batcher::BatchSettings {
            window: settings.batch_window,
            max_batch: settings.max_batch,
        },
    ))
}
