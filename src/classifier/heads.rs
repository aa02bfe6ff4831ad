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
    /// Encoder layers whose mean-pooled outputs, concatenated, are the heads' input
    /// ([`super::encoder::Encoder::set_layers`]); empty: the last layer alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<usize>,
    /// The layers of [`Labels::layers`] the strong head reads (their blocks, in this order);
    /// empty: all of them. The category head always reads all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub strong_layers: Vec<usize>,
    /// Token budget the training embeddings were computed with.
    pub max_tokens: usize,
    /// How the strong score was labelled (for people reading the file).
    pub strong_label: String,
    /// The on-box model the strong score was calibrated for (`train-router --labels`); none
    /// for heads trained on the public data's labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

impl Labels {
    /// The encoder layers the heads read, all of them and the strong head's: [`Labels::layers`]
    /// (`last`, the encoder's last layer, when it names none) and [`Labels::strong_layers`]
    /// (all of them when it names none).
    pub fn read_layers(&self, last: usize) -> (Vec<usize>, Vec<usize>) {
        let all = if self.layers.is_empty() {
            vec![last]
        } else {
            self.layers.clone()
        };
        let strong = if self.strong_layers.is_empty() {
            all.clone()
        } else {
            self.strong_layers.clone()
        };
        (all, strong)
    }

    /// Which blocks of the pooled embedding (`hidden` values per layer of [`Labels::layers`])
    /// the strong head reads, in order; `None`: the whole embedding.
    ///
    /// Errors: a strong layer that is not pooled.
    pub fn strong_blocks(&self) -> Result<Option<Vec<usize>>, ClassifierError> {
        if self.strong_layers.is_empty() {
            return Ok(None);
        }
        blocks_in(&self.strong_layers, &self.layers)
    }
}

/// The columns of `x` (`[n, blocks * width]`) that make up `blocks` (each `width` wide),
/// concatenated in `blocks`' order: `[n, blocks.len() * width]`.
pub fn select_blocks(x: &Tensor, blocks: &[usize], total: usize) -> candle_core::Result<Tensor> {
    let width = x.dims2()?.1 / total.max(1);
    let parts = blocks
        .iter()
        .map(|&b| x.narrow(1, b * width, width))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Tensor::cat(&parts, 1)?.contiguous()
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
        heads.labels.strong_blocks()?;
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

    /// Applies both heads to a batch of embeddings in their own layout ([`Labels::layers`]).
    pub fn apply(&self, embeddings: &[Vec<f32>]) -> Result<Vec<HeadOutput>, ClassifierError> {
        let total = self.labels.layers.len().max(1);
        self.apply_blocks(embeddings, None, self.labels.strong_blocks()?, total)
    }

    /// Applies both heads to embeddings that pool the encoder layers `pooled` (`hidden` values
    /// each, in that order), which must include the layers the heads read; `last` is the
    /// encoder's last layer, what heads without [`Labels::layers`] read.
    ///
    /// Errors: a layer the heads read that is not pooled; a computation error.
    pub fn apply_pooled(
        &self,
        embeddings: &[Vec<f32>],
        pooled: &[usize],
        last: usize,
    ) -> Result<Vec<HeadOutput>, ClassifierError> {
        let (all, strong) = self.labels.read_layers(last);
        let category = blocks_in(&all, pooled)?;
        let strong = blocks_in(&strong, pooled)?;
        self.apply_blocks(embeddings, category, strong, pooled.len())
    }

    /// Both heads, each on its blocks of the embeddings (`total` blocks wide; `None`: all).
    fn apply_blocks(
        &self,
        embeddings: &[Vec<f32>],
        category_blocks: Option<Vec<usize>>,
        strong_blocks: Option<Vec<usize>>,
        total: usize,
    ) -> Result<Vec<HeadOutput>, ClassifierError> {
        if embeddings.is_empty() {
            return Ok(vec![]);
        }
        let dim = embeddings[0].len();
        let flat: Vec<f32> = embeddings.iter().flatten().copied().collect();
        let x = Tensor::from_vec(flat, (embeddings.len(), dim), &Device::Cpu)?;
        let view = |blocks: Option<Vec<usize>>| match blocks {
            Some(b) => select_blocks(&x, &b, total),
            None => Ok(x.clone()),
        };
        let cats =
            candle_nn::ops::softmax_last_dim(&self.category.forward(&view(category_blocks)?)?)?;
        let strong = candle_nn::ops::sigmoid(&self.strong.forward(&view(strong_blocks)?)?)?;
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

/// Where each of `wanted`'s layers is in `pooled`; `None` when they are the same list.
///
/// Errors: a wanted layer that is not pooled.
fn blocks_in(wanted: &[usize], pooled: &[usize]) -> Result<Option<Vec<usize>>, ClassifierError> {
    if wanted == pooled {
        return Ok(None);
    }
    wanted
        .iter()
        .map(|l| {
            pooled.iter().position(|p| p == l).ok_or_else(|| {
                ClassifierError::Format(format!(
                    "layer {l} is not among the pooled layers {pooled:?}"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(layers: &[usize], strong: &[usize]) -> Labels {
        Labels {
            categories: vec!["a".into()],
            encoder: "e".into(),
            layers: layers.to_vec(),
            strong_layers: strong.to_vec(),
            max_tokens: 128,
            strong_label: String::new(),
            model: None,
        }
    }

    #[test]
    fn the_strong_head_reads_the_blocks_of_its_layers() {
        assert_eq!(labels(&[], &[]).strong_blocks().ok(), Some(None));
        assert_eq!(labels(&[2, 4, 6], &[]).strong_blocks().ok(), Some(None));
        assert_eq!(
            labels(&[2, 4, 6], &[2, 4, 6]).strong_blocks().ok(),
            Some(None)
        );
        assert_eq!(
            labels(&[2, 4, 6], &[6, 2]).strong_blocks().ok(),
            Some(Some(vec![2, 0]))
        );
        let err = labels(&[2, 4], &[6])
            .strong_blocks()
            .expect_err("6 not pooled");
        assert!(
            err.to_string()
                .contains("layer 6 is not among the pooled layers"),
            "{err}"
        );

        // Two rows of three 2-wide blocks: [b0 b0 b1 b1 b2 b2].
        let x = Tensor::from_vec(
            (0..12).map(|v| v as f32).collect::<Vec<_>>(),
            (2, 6),
            &Device::Cpu,
        )
        .expect("tensor");
        let picked = select_blocks(&x, &[2, 0], 3)
            .and_then(|t| t.to_vec2::<f32>())
            .expect("select");
        assert_eq!(
            picked,
            vec![vec![4.0, 5.0, 0.0, 1.0], vec![10.0, 11.0, 6.0, 7.0]]
        );
    }
}
