//! The sentence encoder: all-MiniLM-L6-v2 (BERT) run with candle, mean-pooled over the attention
//! mask and L2-normalised. Inputs longer than the token budget keep their head and tail.

use super::bert::Bert;
use super::ClassifierError;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;
use tokenizers::Tokenizer;

/// One text, tokenised for the encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct Tokens {
    /// `[CLS] ... [SEP]`, at most the budget long.
    pub ids: Vec<u32>,
    /// Tokens of the text before truncation (without `[CLS]`/`[SEP]`).
    pub original: usize,
    /// Whether the middle of the text was cut out.
    pub truncated: bool,
}

/// Which implementation computes the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// This crate's forward pass ([`super::bert::Bert`]): fused projections, no padding, on
    /// the process's CPU kernels ([`crate::cpu::chosen`]).
    Fast,
    /// [`Kernels::Fast`] on the kernels of a tier this CPU supports (for tests and comparisons).
    FastOn(crate::cpu::KernelPath),
    /// candle-transformers' `BertModel`, the reference the fast path is tested against.
    Reference,
}

enum Model {
    /// Shared by every encoder of the same weights ([`shared_bert`]).
    Fast(Arc<Bert>),
    Reference(Box<BertModel>),
}

/// Which weights a loaded [`Bert`] holds: the file (its path, length and modification time, so
/// that a file replaced on disk is loaded again) and the kernels it was prepared for.
type WeightsKey = (PathBuf, u64, Option<SystemTime>, crate::cpu::KernelPath);

/// The weights loaded in this process, while some encoder still holds them.
static LOADED: Mutex<Vec<(WeightsKey, Weak<Bert>)>> = Mutex::new(Vec::new());

/// The weights of `weights` on the kernels of `path`: the copy an encoder of the same file
/// holds already (the request classifier and an embeddings model of the same folder share one,
/// about 90 MB for all-MiniLM-L6-v2), else a new one.
///
/// Errors: those of [`Bert::load_with_path`].
fn shared_bert(
    weights: &Path,
    cfg: &Config,
    path: crate::cpu::KernelPath,
) -> Result<Arc<Bert>, ClassifierError> {
    let meta = std::fs::metadata(weights).ok();
    let key: WeightsKey = (
        weights
            .canonicalize()
            .unwrap_or_else(|_| weights.to_path_buf()),
        meta.as_ref().map_or(0, |m| m.len()),
        meta.and_then(|m| m.modified().ok()),
        path,
    );
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    loaded.retain(|(_, held)| held.strong_count() > 0);
    if let Some(bert) = loaded
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, held)| held.upgrade())
    {
        return Ok(bert);
    }
    let bert = Arc::new(Bert::load_with_path(weights, cfg, path)?);
    loaded.push((key, Arc::downgrade(&bert)));
    Ok(bert)
}

/// A BERT sentence encoder with its tokenizer.
pub struct Encoder {
    model: Model,
    tokenizer: Tokenizer,
    cls: u32,
    sep: u32,
    /// Width of the embedding: `hidden` times the number of pooled layers.
    pub dim: usize,
    /// Width of one layer's output.
    pub hidden: usize,
    /// Layers whose outputs are pooled into the embedding ([`Encoder::set_layers`]); empty: the
    /// last layer, as sentence-transformers pools it.
    pub layers: Vec<usize>,
    layer_count: usize,
    /// Most positions the model has.
    pub max_positions: usize,
}

impl Encoder {
    /// Loads a BERT folder: `config.json`, `model.safetensors`, `tokenizer.json`. The weights are
    /// shared with any encoder of the same file loaded before and still alive in this process
    /// (only the pooled layers, [`Encoder::set_layers`], are each encoder's own).
    pub fn load(dir: &Path) -> Result<Encoder, ClassifierError> {
        Self::load_with(dir, Kernels::Fast)
    }

    /// [`Encoder::load`] with a choice of implementation.
    pub fn load_with(dir: &Path, kernels: Kernels) -> Result<Encoder, ClassifierError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| ClassifierError::Io { path, source })
        };
        let config: Config = serde_json::from_slice(&read("config.json")?)
            .map_err(|e| ClassifierError::Format(format!("{}/config.json: {e}", dir.display())))?;
        let mut tokenizer = Tokenizer::from_bytes(read("tokenizer.json")?).map_err(|e| {
            ClassifierError::Format(format!("{}/tokenizer.json: {e}", dir.display()))
        })?;
        // The shipped tokenizer pads and truncates to a fixed length; this encoder does both itself.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| ClassifierError::Format(e.to_string()))?;
        let special = |t: &str| {
            tokenizer
                .token_to_id(t)
                .ok_or_else(|| ClassifierError::Format(format!("the tokenizer has no {t} token")))
        };
        let (cls, sep) = (special("[CLS]")?, special("[SEP]")?);
        let weights = dir.join("model.safetensors");
        let model = match kernels {
            Kernels::Fast => Model::Fast(shared_bert(&weights, &config, crate::cpu::chosen())?),
            Kernels::FastOn(path) => Model::Fast(shared_bert(&weights, &config, path)?),
            Kernels::Reference => {
                // SAFETY: the file is memory-mapped read-only and not modified while the model lives.
                let vb = unsafe {
                    VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &Device::Cpu)
                }
                .map_err(|e| ClassifierError::Format(format!("{}: {e}", weights.display())))?;
                Model::Reference(Box::new(BertModel::load(vb, &config).map_err(|e| {
                    ClassifierError::Format(format!("{}: {e}", weights.display()))
                })?))
            }
        };
        Ok(Encoder {
            model,
            tokenizer,
            cls,
            sep,
            dim: config.hidden_size,
            hidden: config.hidden_size,
            layers: vec![],
            layer_count: config.num_hidden_layers,
            max_positions: config.max_position_embeddings,
        })
    }

    /// Whether this encoder computes with the same copy of the weights as `other` (two
    /// encoders of one file share it: [`Encoder::load`]).
    pub fn shares_weights_with(&self, other: &Encoder) -> bool {
        match (&self.model, &other.model) {
            (Model::Fast(a), Model::Fast(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Number of transformer layers (the last layer's number).
    pub fn layer_count(&self) -> usize {
        self.layer_count
    }

    /// The layers pooled into each embedding, in order (the last layer when none were set).
    pub fn pooled_layers(&self) -> Vec<usize> {
        if self.layers.is_empty() {
            vec![self.layer_count]
        } else {
            self.layers.clone()
        }
    }

    /// Pools the outputs of `layers` (0: the embedding layer, `i`: transformer layer `i`,
    /// 1-based) into each embedding, each block of `hidden` values mean-pooled and L2-normalised,
    /// concatenated in the order given; empty: the last layer alone. The routing heads record
    /// the layers they were trained on (`labels.json` `layers`).
    ///
    /// Errors: a layer the model does not have, a repeated layer, or layers other than the last
    /// on the reference implementation.
    pub fn set_layers(&mut self, layers: &[usize]) -> Result<(), ClassifierError> {
        if let Some(bad) = layers.iter().find(|&&l| l > self.layer_count) {
            return Err(ClassifierError::Format(format!(
                "layer {bad} pooled, but the encoder has layers 0 to {}",
                self.layer_count
            )));
        }
        if layers
            .iter()
            .enumerate()
            .any(|(i, l)| layers[..i].contains(l))
        {
            return Err(ClassifierError::Format(format!(
                "layers {layers:?} name a layer twice"
            )));
        }
        if matches!(self.model, Model::Reference(_))
            && !layers.is_empty()
            && layers != [self.layer_count]
        {
            return Err(ClassifierError::Format(
                "the reference encoder pools the last layer only".into(),
            ));
        }
        self.layers = layers.to_vec();
        self.dim = self.hidden * layers.len().max(1);
        Ok(())
    }

    /// The text of a token id (empty when unknown).
    pub fn token(&self, id: u32) -> String {
        self.tokenizer.id_to_token(id).unwrap_or_default()
    }

    /// Tokenises `text` into at most `budget` tokens (special tokens included): when it is
    /// longer, the first half of the budget and the last half are kept.
    pub fn tokenize(&self, text: &str, budget: usize) -> Result<Tokens, ClassifierError> {
        let budget = budget.clamp(3, self.max_positions);
        let enc = self
            .tokenizer
            .encode_fast(text, false)
            .map_err(|e| ClassifierError::Tokenizer(e.to_string()))?;
        let ids = enc.get_ids();
        let room = budget - 2;
        let mut out = Vec::with_capacity(ids.len().min(room) + 2);
        out.push(self.cls);
        let truncated = ids.len() > room;
        if truncated {
            let head = room.div_ceil(2);
            out.extend_from_slice(&ids[..head]);
            out.extend_from_slice(&ids[ids.len() - (room - head)..]);
        } else {
            out.extend_from_slice(ids);
        }
        out.push(self.sep);
        Ok(Tokens {
            ids: out,
            original: ids.len(),
            truncated,
        })
    }

    /// Embeds a batch of tokenised texts (padded to the longest): one vector of [`Encoder::dim`]
    /// values each, a unit vector per pooled layer.
    pub fn embed(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>, ClassifierError> {
        if batch.is_empty() {
            return Ok(vec![]);
        }
        let model = match &self.model {
            Model::Fast(bert) if self.layers.is_empty() => return bert.forward(batch),
            Model::Fast(bert) => return bert.forward_pooled(batch, &self.layers),
            Model::Reference(m) => m,
        };
        let len = batch.iter().map(|ids| ids.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(batch.len() * len);
        let mut mask = Vec::with_capacity(batch.len() * len);
        for row in batch {
            ids.extend_from_slice(row);
            ids.extend(std::iter::repeat_n(0u32, len - row.len()));
            mask.extend(std::iter::repeat_n(1u32, row.len()));
            mask.extend(std::iter::repeat_n(0u32, len - row.len()));
        }
        let shape = (batch.len(), len);
        let ids = Tensor::from_vec(ids, shape, &Device::Cpu)?;
        let mask = Tensor::from_vec(mask, shape, &Device::Cpu)?;
        let types = ids.zeros_like()?;
        let hidden = model.forward(&ids, &types, Some(&mask))?;
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?;
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        Ok(mean.broadcast_div(&norm)?.to_vec2::<f32>()?)
    }

    /// Embeds texts, sorted by length into batches of at most `batch` for less padding;
    /// returns (embedding, tokens) in input order.
    pub fn embed_texts(
        &self,
        texts: &[&str],
        max_tokens: usize,
        batch: usize,
    ) -> Result<Vec<(Vec<f32>, Tokens)>, ClassifierError> {
        let tokens = texts
            .iter()
            .map(|t| self.tokenize(t, max_tokens))
            .collect::<Result<Vec<_>, _>>()?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| tokens[i].ids.len());
        let mut out: Vec<Vec<f32>> = vec![vec![]; texts.len()];
        for chunk in order.chunks(batch.max(1)) {
            let ids: Vec<&[u32]> = chunk.iter().map(|&i| tokens[i].ids.as_slice()).collect();
            for (&i, e) in chunk.iter().zip(self.embed(&ids)?) {
                out[i] = e;
            }
        }
        Ok(out.into_iter().zip(tokens).collect())
    }
}
