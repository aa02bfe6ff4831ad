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

/// The name by which labels and heads record an on-box model's weights: the file name of its
/// path, without the folders (which differ from machine to machine), e.g.
/// `qwen2.5-coder-1.5b-instruct-q4_k_m.gguf`.
pub fn model_file_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or(path.as_os_str())
        .to_string_lossy()
        .into_owned()
}

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
    /// The file name of the weights that earned those labels ([`model_file_name`]; the label
    /// rows' `model_file`), so that a policy giving these heads to a model that loads another
    /// file is told (`switchyard policy check`, `serve`'s log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_file: Option<String>,
    /// Strong heads for some categories, beside the main one (weights `strong_expert{i}.*`).
    /// The strong score is a mixture gated by the category head: each expert's score weighs
    /// the probability of its categories, the main head's the rest (see [`Heads::apply`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub strong_experts: Vec<StrongExpert>,
    /// The label rows training held out (`train-router --labels`: its first `--seed` and its
    /// `--validation`), so that `eval-router --labels --heads` scores these heads on rows they
    /// were not trained on, whatever seed it is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_out: Option<HeldOutSplit>,
}

/// Which label rows a training held out ([`Labels::held_out`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HeldOutSplit {
    pub seed: u64,
    /// The held-out share, in (0, 1).
    pub validation: f64,
    /// SHA-256 (hex) of the label file's bytes: the split is of that file's rows.
    pub labels_sha256: String,
}

/// A strong head for some categories ([`Labels::strong_experts`]): trained on the same label
/// as the main strong head, reading its own layers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StrongExpert {
    /// Categories (of [`Labels::categories`]) whose probability is this expert's weight.
    pub categories: Vec<String>,
    /// The layers of [`Labels::layers`] it reads, in this order; empty: all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<usize>,
}

impl StrongExpert {
    /// Parses `CATEGORY[+CATEGORY...]=LAYER[,LAYER...]` (as `train-router --strong-expert`
    /// takes it), e.g. `math=2,4,6`; the layers may be left out (`math`: all of them).
    ///
    /// Errors: no category, or a layer that is not a number.
    pub fn parse(spec: &str) -> Result<StrongExpert, String> {
        let (cats, layers) = spec.split_once('=').unwrap_or((spec, ""));
        let categories: Vec<String> = cats
            .split('+')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        if categories.is_empty() {
            return Err(format!(
                "`{spec}`: expected CATEGORY[+CATEGORY]=LAYERS, e.g. math=2,4,6"
            ));
        }
        let layers = layers
            .split(',')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| {
                l.parse::<usize>()
                    .map_err(|_| format!("`{spec}`: `{l}` is not a layer number"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(StrongExpert { categories, layers })
    }
}

/// Experts as `train-router --strong-expert` takes them, space-separated (`math=2,4,6`).
pub fn describe_experts(experts: &[StrongExpert]) -> String {
    experts
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

impl std::fmt::Display for StrongExpert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.categories.join("+"))?;
        if !self.layers.is_empty() {
            let layers: Vec<String> = self.layers.iter().map(usize::to_string).collect();
            write!(f, "={}", layers.join(","))?;
        }
        Ok(())
    }
}

impl Labels {
    /// Reads a heads folder's `labels.json` alone (not the weights).
    ///
    /// Errors: the file cannot be read or is not a label map.
    pub fn read(dir: &Path) -> Result<Labels, ClassifierError> {
        let path = dir.join(LABELS_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| ClassifierError::Io {
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text)
            .map_err(|e| ClassifierError::Format(format!("{}: {e}", path.display())))
    }

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

    /// The layers each strong expert reads ([`StrongExpert::layers`], or all of `all`).
    pub fn expert_layers(&self, all: &[usize]) -> Vec<Vec<usize>> {
        self.strong_experts
            .iter()
            .map(|e| {
                if e.layers.is_empty() {
                    all.to_vec()
                } else {
                    e.layers.clone()
                }
            })
            .collect()
    }

    /// Where each strong expert's layers are among [`Labels::layers`] (`None`: all of them).
    ///
    /// Errors: an expert that names layers the heads do not pool, or any layer when the heads
    /// name none (they read the encoder's last layer alone).
    pub fn expert_blocks(&self) -> Result<Vec<Option<Vec<usize>>>, ClassifierError> {
        self.strong_experts
            .iter()
            .map(|e| {
                if e.layers.is_empty() {
                    Ok(None)
                } else if self.layers.is_empty() {
                    Err(ClassifierError::Format(format!(
                        "strong expert `{e}` names layers, but the heads name none (`layers`)"
                    )))
                } else {
                    blocks_in(&e.layers, &self.layers).map_err(|err| {
                        ClassifierError::Format(format!("strong expert `{e}`: {err}"))
                    })
                }
            })
            .collect()
    }

    /// For each strong expert, the indices of its categories in [`Labels::categories`].
    ///
    /// Errors: an unknown category, or one that two experts (or one, twice) name.
    pub fn expert_gates(&self) -> Result<Vec<Vec<usize>>, ClassifierError> {
        let mut seen = vec![];
        self.strong_experts
            .iter()
            .map(|e| {
                e.categories
                    .iter()
                    .map(|c| {
                        let i = self.categories.iter().position(|k| k == c).ok_or_else(|| {
                            ClassifierError::Format(format!(
                                "strong expert `{e}`: no category `{c}` (categories: {})",
                                self.categories.join(", ")
                            ))
                        })?;
                        if seen.contains(&i) {
                            return Err(ClassifierError::Format(format!(
                                "strong expert `{e}`: category `{c}` has another expert"
                            )));
                        }
                        seen.push(i);
                        Ok(i)
                    })
                    .collect()
            })
            .collect()
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
    /// One per [`Labels::strong_experts`], in that order.
    pub experts: Vec<Mlp>,
}

/// What the heads say about one embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadOutput {
    /// Probability per category, in the order of [`Labels::categories`].
    pub categories: Vec<f32>,
    pub strong_score: f32,
    /// With strong experts, the mixture's terms: the main head's first, then each expert's
    /// (`strong_score` is the sum of weight × score); empty without experts.
    pub strong_parts: Vec<StrongPart>,
}

/// One term of the strong score's mixture ([`Heads::apply`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StrongPart {
    /// `strong` for the main head, else the expert's categories joined by `+` (`math`).
    pub head: String,
    /// Its weight in [0, 1]: the category head's probability of the expert's categories, or
    /// what the experts leave to the main head.
    pub weight: f32,
    /// The head's own score in [0, 1].
    pub score: f32,
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
        let experts = (0..labels.strong_experts.len())
            .map(|i| Mlp::from(&expert_name(i), &all))
            .collect::<Result<Vec<_>, _>>()?;
        let heads = Heads {
            category: Mlp::from("category", &all)?,
            strong: Mlp::from("strong", &all)?,
            experts,
            labels,
        };
        heads.labels.strong_blocks()?;
        heads.labels.expert_gates()?;
        heads.labels.expert_blocks()?;
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
        for (i, e) in self.experts.iter().enumerate() {
            e.tensors(&expert_name(i), &mut all);
        }
        candle_core::safetensors::save(&all, dir.join(WEIGHTS_FILE))?;
        let labels = serde_json::to_string_pretty(&self.labels)
            .map_err(|e| ClassifierError::Format(e.to_string()))?;
        let path = dir.join(LABELS_FILE);
        std::fs::write(&path, labels + "\n").map_err(|source| ClassifierError::Io { path, source })
    }

    /// Applies the heads to a batch of embeddings in their own layout ([`Labels::layers`]).
    ///
    /// The strong score is `(1 - Σ g_i) · s + Σ g_i · s_i`: `s` the main strong head's,
    /// `s_i` strong expert i's, and `g_i` the category head's probability of expert i's
    /// categories (a mixture of experts gated by the category head, as in Jacobs et al. 1991,
    /// "Adaptive mixtures of local experts"). Without experts it is the main head's alone.
    pub fn apply(&self, embeddings: &[Vec<f32>]) -> Result<Vec<HeadOutput>, ClassifierError> {
        let own = self.labels.read_layers(usize::MAX).0;
        self.apply_pooled(embeddings, &own, usize::MAX)
    }

    /// [`Heads::apply`] on embeddings that pool the encoder layers `pooled` (`hidden` values
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
        if embeddings.is_empty() {
            return Ok(vec![]);
        }
        let (all, strong) = self.labels.read_layers(last);
        let dim = embeddings[0].len();
        let flat: Vec<f32> = embeddings.iter().flatten().copied().collect();
        let x = Tensor::from_vec(flat, (embeddings.len(), dim), &Device::Cpu)?;
        let view = |layers: &[usize]| -> Result<Tensor, ClassifierError> {
            Ok(match blocks_in(layers, pooled)? {
                Some(b) => select_blocks(&x, &b, pooled.len())?,
                None => x.clone(),
            })
        };
        let score = |mlp: &Mlp, layers: &[usize]| -> Result<Vec<f32>, ClassifierError> {
            let s = candle_nn::ops::sigmoid(&mlp.forward(&view(layers)?)?)?;
            Ok(s.flatten_all()?.to_vec1::<f32>()?)
        };
        let cats = candle_nn::ops::softmax_last_dim(&self.category.forward(&view(&all)?)?)?;
        let cats = cats.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let main = score(&self.strong, &strong)?;
        let gates = self.labels.expert_gates()?;
        let experts = self
            .experts
            .iter()
            .zip(self.labels.expert_layers(&all))
            .map(|(mlp, layers)| score(mlp, &layers))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(cats
            .into_iter()
            .zip(main)
            .enumerate()
            .map(|(row, (categories, main))| {
                let (rest, weights) = mixture_weights(&categories, &gates);
                let mut strong_score = 0.0f32;
                let mut strong_parts = vec![];
                for ((g, scores), spec) in weights
                    .into_iter()
                    .zip(&experts)
                    .zip(&self.labels.strong_experts)
                {
                    let score = scores.get(row).copied().unwrap_or(main);
                    strong_score += g * score;
                    strong_parts.push(StrongPart {
                        head: spec.categories.join("+"),
                        weight: g,
                        score,
                    });
                }
                if !strong_parts.is_empty() {
                    strong_parts.insert(
                        0,
                        StrongPart {
                            head: "strong".into(),
                            weight: rest,
                            score: main,
                        },
                    );
                }
                HeadOutput {
                    strong_score: strong_score + rest * main,
                    categories,
                    strong_parts,
                }
            })
            .collect())
    }
}

/// The strong score's mixture at one row (Jacobs et al. 1991): each expert's weight, the
/// category head's probability of the expert's categories (`categories`: one row of its
/// softmax; `gates`: each expert's category indices, [`Labels::expert_gates`]), and what is left
/// for the strong head, at least 0. `(rest, weights)`, one weight per expert in order.
pub fn mixture_weights(categories: &[f32], gates: &[Vec<usize>]) -> (f32, Vec<f32>) {
    let mut rest = 1.0f32;
    let weights = gates
        .iter()
        .map(|gate| {
            let g: f32 = gate.iter().filter_map(|&c| categories.get(c)).sum();
            rest -= g;
            g
        })
        .collect();
    (rest.max(0.0), weights)
}

/// Weight names of strong expert `i` in `heads.safetensors`.
fn expert_name(i: usize) -> String {
    format!("strong_expert{i}")
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
            model_file: None,
            strong_experts: vec![],
            held_out: None,
        }
    }

    /// An MLP on `input` values whose outputs are `bias` whatever the input.
    fn constant(input: usize, bias: &[f32]) -> Mlp {
        let t = |v: Vec<f32>, shape: (usize, usize)| {
            Tensor::from_vec(v, shape, &Device::Cpu).expect("tensor")
        };
        let n = bias.len();
        Mlp {
            w1: t(vec![0.0; input], (1, input)),
            b1: Tensor::from_vec(vec![0.0f32], 1, &Device::Cpu).expect("b1"),
            w2: t(vec![0.0; n], (n, 1)),
            b2: Tensor::from_vec(bias.to_vec(), n, &Device::Cpu).expect("b2"),
        }
    }

    #[test]
    fn strong_experts_mix_by_the_category_probabilities() {
        let mut l = labels(&[], &[]);
        l.categories = vec!["a".into(), "b".into(), "c".into()];
        // Category probabilities 0.25 / 0.5 / 0.25; main strong 0.5.
        let ln = |v: f32| v.ln();
        let mut heads = Heads {
            labels: l,
            category: constant(2, &[0.0, ln(2.0), 0.0]),
            strong: constant(2, &[0.0]),
            experts: vec![],
        };
        let x = vec![vec![0.3, -0.7]];
        let alone = heads.apply(&x).expect("apply");
        assert!((alone[0].strong_score - 0.5).abs() < 1e-6, "{alone:?}");
        assert!(
            alone[0].strong_parts.is_empty(),
            "no mixture without experts"
        );

        // An expert for b scoring 0.75: 0.5 · 0.75 + 0.5 · 0.5.
        heads.labels.strong_experts = vec![StrongExpert::parse("b").expect("spec")];
        heads.experts = vec![constant(2, &[ln(3.0)])];
        let out = heads.apply(&x).expect("apply");
        assert!((out[0].strong_score - 0.625).abs() < 1e-6, "{out:?}");
        let parts: Vec<(&str, f32, f32)> = out[0]
            .strong_parts
            .iter()
            .map(|p| (p.head.as_str(), p.weight, p.score))
            .collect();
        assert_eq!(parts.len(), 2, "{parts:?}");
        assert_eq!(parts[0].0, "strong");
        assert_eq!(parts[1].0, "b");
        assert!((parts[0].1 - 0.5).abs() < 1e-6 && (parts[0].2 - 0.5).abs() < 1e-6);
        assert!((parts[1].1 - 0.5).abs() < 1e-6 && (parts[1].2 - 0.75).abs() < 1e-6);
        assert!((out[0].categories[1] - 0.5).abs() < 1e-6, "{out:?}");

        // And one for a+c scoring 0.25: 0.5 · 0.75 + 0.5 · 0.25, nothing left to the main head.
        heads
            .labels
            .strong_experts
            .push(StrongExpert::parse("a+c").expect("spec"));
        heads.experts.push(constant(2, &[-ln(3.0)]));
        let mixed = heads.apply(&x).expect("apply")[0].strong_score;
        assert!((mixed - 0.5).abs() < 1e-6, "{mixed}");

        // The weights round-trip through the files.
        let dir = std::env::temp_dir().join(format!("switchyard-experts-{}", std::process::id()));
        heads.save(&dir).expect("save");
        let loaded = Heads::load(&dir).expect("load");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(loaded.labels, heads.labels);
        assert_eq!(
            loaded.apply(&x).expect("apply")[0].strong_score,
            heads.apply(&x).expect("apply")[0].strong_score
        );
    }

    #[test]
    fn strong_experts_are_checked() {
        assert_eq!(
            StrongExpert::parse("math+code=2,4,6"),
            Ok(StrongExpert {
                categories: vec!["math".into(), "code".into()],
                layers: vec![2, 4, 6],
            })
        );
        assert_eq!(
            StrongExpert::parse("math=2,4,6")
                .map(|e| e.to_string())
                .as_deref(),
            Ok("math=2,4,6")
        );
        assert!(StrongExpert::parse("=2").is_err());
        assert!(StrongExpert::parse("math=two").is_err());

        let mut l = labels(&[2, 4, 6], &[6]);
        l.categories = vec!["math".into(), "code".into()];
        l.strong_experts = vec![StrongExpert::parse("math=2,4,6").expect("spec")];
        assert_eq!(l.expert_gates().ok(), Some(vec![vec![0]]));
        assert_eq!(l.expert_layers(&[2, 4, 6]), vec![vec![2, 4, 6]]);
        l.strong_experts
            .push(StrongExpert::parse("code+math").expect("spec"));
        let err = l.expert_gates().expect_err("math twice");
        assert!(err.to_string().contains("has another expert"), "{err}");
        l.strong_experts = vec![StrongExpert::parse("poetry").expect("spec")];
        let err = l.expert_gates().expect_err("unknown");
        assert!(err.to_string().contains("no category `poetry`"), "{err}");

        l.strong_experts = vec![StrongExpert::parse("math=6,2").expect("spec")];
        assert_eq!(l.expert_blocks().ok(), Some(vec![Some(vec![2, 0])]));
        l.strong_experts = vec![StrongExpert::parse("math").expect("spec")];
        assert_eq!(l.expert_blocks().ok(), Some(vec![None]));
        l.strong_experts = vec![StrongExpert::parse("math=3").expect("spec")];
        let err = l.expert_blocks().expect_err("3 not pooled");
        assert!(err.to_string().contains("layer 3 is not among"), "{err}");
        let mut last = labels(&[], &[]);
        last.strong_experts = vec![StrongExpert::parse("a=6").expect("spec")];
        let err = last.expert_blocks().expect_err("no layers");
        assert!(err.to_string().contains("the heads name none"), "{err}");
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
