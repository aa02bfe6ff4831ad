//! The routing heads on the sentence embedding: a category distribution and the strong score.
//! Each is a one-hidden-layer MLP, stored as safetensors beside a JSON label map.

use super::ClassifierError;
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// File names of a heads folder.
pub const WEIGHTS_FILE: &str = "heads.safetensors";
pub const LABELS_FILE: &str = "labels.json";

/// The JSON label map stored beside the weights.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Labels {
    /// Category names, in the order of the category head's outputs.
    pub categories: Vec<String>,
    /// Encoder the heads were trained on (a folder name under models/).
    pub encoder: String,
    /// Token budget the training embeddings were computed with.
    pub max_tokens: usize,
    /// How the strong score was labelled (for people reading the file).
    pub strong_label: String,
    /// The on-box model the strong score was calibrated for (`train-router --labels`); none
    /// for heads trained on the public data's labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// One MLP: `w2 · relu(w1 · x + b1) + b2`.
#[derive(Debug, Clone)]
pub struct Mlp {
    pub w1: Tensor,
    pub b1: Tensor,
    pub w2: Tensor,
    pub b2: Tensor,
}

impl Mlp {
    /// Raw outputs (logits) for a batch of inputs `[n, in]`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = x.matmul(&self.w1.t()?)?.broadcast_add(&self.b1)?.relu()?;
        h.matmul(&self.w2.t()?)?.broadcast_add(&self.b2)
    }

    fn tensors(&self, name: &str, out: &mut HashMap<String, Tensor>) {
        for (part, t) in [
            ("w1", &self.w1),
            ("b1", &self.b1),
            ("w2", &self.w2),
            ("b2", &self.b2),
        ] {
            out.insert(format!("{name}.{part}"), t.clone());
        }
    }

    fn from(name: &str, all: &HashMap<String, Tensor>) -> Result<Mlp, ClassifierError> {
        let get = |part: &str| {
            all.get(&format!("{name}.{part}"))
                .cloned()
                .ok_or_else(|| ClassifierError::Format(format!("heads lack {name}.{part}")))
        };
        Ok(Mlp {
            w1: get("w1")?,
            b1: get("b1")?,
            w2: get("w2")?,
            b2: get("b2")?,
        })
    }
}

/// The trained heads.
#[derive(Debug, Clone)]
pub struct Heads {
    pub labels: Labels,
    pub category: Mlp,
    pub strong: Mlp,
}

/// What the heads say about one embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadOutput {
    /// Probability per category, in the order of [`Labels::categories`].
    pub categories: Vec<f32>,
    pub strong_score: f32,
}

impl Heads {
    /// Loads `heads.safetensors` and `labels.json` from a folder.
    pub fn load(dir: &Path) -> Result<Heads, ClassifierError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| ClassifierError::Io { path, source })
        };
        let labels = String::from_utf8(read(LABELS_FILE)?)
            .map_err(|e| ClassifierError::Format(format!("{LABELS_FILE}: {e}")))?;
        Self::from_bytes(&read(WEIGHTS_FILE)?, &labels)
            .map_err(|e| ClassifierError::Format(format!("{}: {e}", dir.display())))
    }

    /// Builds the heads from the bytes of the two files.
    pub fn from_bytes(weights: &[u8], labels: &str) -> Result<Heads, ClassifierError> {
        let labels: Labels = serde_json::from_str(labels)
            .map_err(|e| ClassifierError::Format(format!("{LABELS_FILE}: {e}")))?;
        let all = candle_core::safetensors::load_buffer(weights, &Device::Cpu)
            .map_err(|e| ClassifierError::Format(format!("{WEIGHTS_FILE}: {e}")))?;
        let heads = Heads {
            category: Mlp::from("category", &all)?,
            strong: Mlp::from("strong", &all)?,
            labels,
        };
        let outputs = heads.category.b2.dims1()?;
        if outputs != heads.labels.categories.len() {
            return Err(ClassifierError::Format(format!(
                "the category head has {outputs} outputs for {} labels",
                heads.labels.categories.len()
            )));
        }
        Ok(heads)
    }

    /// Writes the heads into a folder (created when missing).
    pub fn save(&self, dir: &Path) -> Result<(), ClassifierError> {
        std::fs::create_dir_all(dir).map_err(|source| ClassifierError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut all = HashMap::new();
        self.category.tensors("category", &mut all);
        self.strong.tensors("strong", &mut all);
        candle_core::safetensors::save(&all, dir.join(WEIGHTS_FILE))?;
        let labels = serde_json::to_string_pretty(&self.labels)
            .map_err(|e| ClassifierError::Format(e.to_string()))?;
        let path = dir.join(LABELS_FILE);
        std::fs::write(&path, labels + "\n").map_err(|source| ClassifierError::Io { path, source })
    }

    /// Applies both heads to a batch of embeddings.
    pub fn apply(&self, embeddings: &[Vec<f32>]) -> Result<Vec<HeadOutput>, ClassifierError> {
        if embeddings.is_empty() {
            return Ok(vec![]);
        }
        let dim = embeddings[0].len();
        let flat: Vec<f32> = embeddings.iter().flatten().copied().collect();
        let x = Tensor::from_vec(flat, (embeddings.len(), dim), &Device::Cpu)?;
        let cats = candle_nn::ops::softmax_last_dim(&self.category.forward(&x)?)?;
        let strong = candle_nn::ops::sigmoid(&self.strong.forward(&x)?)?;
        let cats = cats.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let strong = strong.flatten_all()?.to_vec1::<f32>()?;
        Ok(cats
            .into_iter()
            .zip(strong)
            .map(|(categories, strong_score)| HeadOutput {
                categories,
                strong_score,
            })
            .collect())
    }
}
