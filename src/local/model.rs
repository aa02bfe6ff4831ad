//! A llama-family decoder over GGUF weights (architectures `llama`, `qwen2`, `qwen3`, `phi3`,
//! `gemma2` and `gemma3`, read from the GGUF metadata). What sets the families apart is read as
//! data where the file says it: query/key/value biases (qwen2), per-head query/key RMS norms
//! (qwen3, gemma3), a fused query/key/value projection and a fused gate/up projection (phi3), and
//! norms after attention and after the feed-forward (gemma2, gemma3) are used when their tensors
//! are there; the head width comes from `<arch>.attention.key_length` when given, sliding-window
//! layers from `<arch>.attention.sliding_window`, logit soft-capping (`cap * tanh(x / cap)`) from
//! `<arch>.attn_logit_softcapping` and `<arch>.final_logit_softcapping`. Gemma's own traits
//! follow its architecture: embeddings scaled by √hidden, a GELU (tanh) gate, which layers slide
//! (every other one for gemma2, five in six for gemma3), and gemma3's local layers' rotary base
//! of 10 000 (llama.cpp's `gemma2` and `gemma3` graphs are the reference for each). The weights are read-only and shared by every worker; each generation owns a
//! [`Session`] with its own KV cache, so several can decode at once on one copy of the weights.

use super::kernels::QuantMatrix;
use super::LocalError;
use candle_core::quantized::{gguf_file, QMatMul, QTensor};
use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::kv_cache::KvCache;
use candle_transformers::quantized_nn::RmsNorm;
use candle_transformers::utils::build_causal_mask;

/// Model architectures this decoder runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
    Qwen3,
    Phi3,
    Gemma2,
    Gemma3,
}

impl Arch {
    /// The architecture named by `general.architecture`.
    pub fn from_metadata(name: &str) -> Result<Arch, LocalError> {
        match name {
            "llama" => Ok(Arch::Llama),
            "qwen2" => Ok(Arch::Qwen2),
            "qwen3" => Ok(Arch::Qwen3),
            "phi3" => Ok(Arch::Phi3),
            "gemma2" => Ok(Arch::Gemma2),
            "gemma3" => Ok(Arch::Gemma3),
            other => Err(LocalError::Unsupported(format!(
                "architecture `{other}` (supported: llama, qwen2, qwen3, phi3, gemma2, gemma3)"
            ))),
        }
    }

    /// The name used as the metadata key prefix.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Phi3 => "phi3",
            Arch::Gemma2 => "gemma2",
            Arch::Gemma3 => "gemma3",
        }
    }

    /// Whether its GGUF files keep query/key in NeoX halves (rotated by halves); llama's are
    /// converted for the interleaved rotation.
    fn rope_neox(self) -> bool {
        matches!(
            self,
            Arch::Qwen2 | Arch::Qwen3 | Arch::Phi3 | Arch::Gemma2 | Arch::Gemma3
        )
    }

    /// Every `n`th layer attends to the whole context and the others to a sliding window, when
    /// the file gives a window (llama.cpp's `swa_pattern`: gemma2's is 2, gemma3's 6).
    fn sliding_pattern(self) -> Option<usize> {
        match self {
            Arch::Gemma2 => Some(2),
            Arch::Gemma3 => Some(6),
            _ => None,
        }
    }
}

/// A weight matrix: block formats on the project's AVX2 kernels, the rest on candle's.
enum Linear {
    Block(QuantMatrix),
    Candle(QMatMul),
}

/// Which matrix kernels to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// The project's AVX2 kernels for the block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K,
    /// Q5_K, Q6_K) where the CPU has AVX2, candle's for the rest.
    Fast,
    /// candle's kernels for every format (for comparisons with candle's own models).
    Portable,
}

impl Linear {
    fn new(t: candle_core::quantized::QTensor, kernels: Kernels) -> candle_core::Result<Linear> {
        let fast = match kernels {
            Kernels::Fast => QuantMatrix::from_qtensor(&t),
            Kernels::Portable => None,
        };
        match fast {
            Some(m) => Ok(Linear::Block(m)),
            None => Ok(Linear::Candle(QMatMul::from_qtensor(t)?)),
        }
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Linear::Block(m) => m.forward(x),
            Linear::Candle(m) => m.forward(x),
        }
    }
}

/// The query, key and value projections: three matrices, or one whose output rows are the
/// query's, then the key's, then the value's (phi3's `attn_qkv`).
enum Qkv {
    Split { q: Linear, k: Linear, v: Linear },
    Fused(Linear),
}

/// The feed-forward's gate and up projections: two matrices, or one whose output rows are the
/// gate's, then the up projection's (phi3's `ffn_up` without an `ffn_gate`).
enum GateUp {
    Split { gate: Linear, up: Linear },
    Fused(Linear),
}

struct Layer {
    attn_norm: RmsNorm,
    /// Norms of the attention's and the feed-forward's outputs, before their residual adds
    /// (gemma3's `post_attention_norm`, `post_ffw_norm`).
    post_attn_norm: Option<RmsNorm>,
    post_ffn_norm: Option<RmsNorm>,
    /// Keys this layer's queries see, back from their own position (itself included); `None`:
    /// all of them.
    window: Option<usize>,
    /// Index of its rotary tables in [`Weights::ropes`].
    rope: usize,
    qkv: Qkv,
    /// Query/key/value biases (qwen2 has them, llama does not).
    bias: Option<(Tensor, Tensor, Tensor)>,
    /// RMS norms over each head's query and key, before the rotation (qwen3).
    qk_norm: Option<(RmsNorm, RmsNorm)>,
    wo: Linear,
    ffn_norm: RmsNorm,
    gate_up: GateUp,
    down: Linear,
}

/// The model's weights and shape; shared read-only between sessions.
pub struct Weights {
    pub arch: Arch,
    /// Token embeddings, kept quantised: only one row per token is ever read.
    embed: QTensor,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: Linear,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    /// Rotary tables, `(context_length, head_dim / 2)` each: cos and sin, for the global
    /// layers first and, where they differ, the sliding-window layers'.
    ropes: Vec<(Tensor, Tensor)>,
    /// Embeddings are multiplied by this (gemma: √hidden).
    embed_scale: Option<f64>,
    /// The feed-forward gate's activation is GELU (tanh approximation) instead of SiLU.
    gelu: bool,
    /// Attention scores are divided by this (√head width, or gemma2 27B's √(hidden / heads)).
    score_scale: f64,
    /// Attention scores and output logits are soft-capped at these (gemma2): `cap * tanh(x / cap)`.
    attn_softcap: Option<f64>,
    final_softcap: Option<f64>,
    /// NeoX-style (halves) rotary embedding instead of the interleaved one.
    rope_neox: bool,
    /// Longest sequence (prompt + output) the model supports.
    pub context_length: usize,
    device: Device,
}

/// Reads a metadata value, naming the key when it is missing or of the wrong type.
pub(crate) fn md<'a>(
    ct: &'a gguf_file::Content,
    key: &str,
) -> Result<&'a gguf_file::Value, LocalError> {
    ct.metadata
        .get(key)
        .ok_or_else(|| LocalError::Format(format!("the GGUF metadata has no `{key}`")))
}

fn md_u32(ct: &gguf_file::Content, key: &str) -> Result<usize, LocalError> {
    md(ct, key)?
        .to_u32()
        .map(|v| v as usize)
        .map_err(|e| LocalError::Format(format!("`{key}`: {e}")))
}

impl Weights {
    /// Loads the weights of a GGUF file whose header is `ct`.
    pub fn from_gguf<R: std::io::Seek + std::io::Read>(
        ct: &gguf_file::Content,
        reader: &mut R,
        kernels: Kernels,
    ) -> Result<Weights, LocalError> {
        let device = Device::Cpu;
        let arch_name = md(ct, "general.architecture")?
            .to_string()
            .map_err(|e| LocalError::Format(e.to_string()))?;
        let arch = Arch::from_metadata(arch_name)?;
        let p = arch.name();
        let n_head = md_u32(ct, &format!("{p}.attention.head_count"))?;
        let n_kv_head = md_u32(ct, &format!("{p}.attention.head_count_kv")).unwrap_or(n_head);
        let hidden = md_u32(ct, &format!("{p}.embedding_length"))?;
        let n_layer = md_u32(ct, &format!("{p}.block_count"))?;
        let context_length = md_u32(ct, &format!("{p}.context_length"))?;
        let eps = md(ct, &format!("{p}.attention.layer_norm_rms_epsilon"))?
            .to_f32()
            .map_err(|e| LocalError::Format(e.to_string()))? as f64;
        let rope_base = md(ct, &format!("{p}.rope.freq_base"))
            .and_then(|v| v.to_f32().map_err(|e| LocalError::Format(e.to_string())))
            .unwrap_or(10_000.0);
        // The head width: given (qwen3's heads are wider than `hidden / heads`), else implied.
        let key_length = md_u32(ct, &format!("{p}.attention.key_length")).ok();
        if n_head == 0
            || n_kv_head == 0
            || n_head % n_kv_head != 0
            || (key_length.is_none() && hidden % n_head != 0)
            || key_length == Some(0)
        {
            return Err(LocalError::Format(format!(
                "inconsistent attention shape: {hidden} wide, {n_head} heads, {n_kv_head} key/value heads"
            )));
        }
        let head_dim = key_length.unwrap_or(hidden / n_head);
        // Rotation over part of each head (`rope.dimension_count` below the head width) is not
        // implemented: refused rather than run wrong.
        if let Ok(rotated) = md_u32(ct, &format!("{p}.rope.dimension_count")) {
            if rotated != head_dim {
                return Err(LocalError::Unsupported(format!(
                    "rotary embedding over {rotated} of each head's {head_dim} dimensions"
                )));
            }
        }
        let t = |name: &str| {
            ct.tensor(reader, name, &device)
                .map_err(|e| LocalError::Format(format!("tensor `{name}`: {e}")))
        };
        let mut t = t;
        let embed = t("token_embd.weight")?;
        if embed.shape().dims2()?.1 != hidden {
            return Err(LocalError::Format(format!(
                "token_embd.weight is not {hidden} wide"
            )));
        }
        let norm = RmsNorm::from_qtensor(t("output_norm.weight")?, eps)?;
        // Tied embeddings (no `output.weight`): the output projection is the embedding matrix.
        // Asked before reading: a missing tensor's error would carry a backtrace, which with
        // RUST_BACKTRACE set costs seconds and tens of MB to resolve.
        let output = if ct.tensor_infos.contains_key("output.weight") {
            Linear::new(t("output.weight")?, kernels)?
        } else {
            Linear::new(t("token_embd.weight")?, kernels)?
        };
        let sliding_window = md_u32(ct, &format!("{p}.attention.sliding_window"))
            .ok()
            .filter(|w| *w > 0);
        let mut layers = Vec::with_capacity(n_layer);
        for i in 0..n_layer {
            let has = |s: &str| ct.tensor_infos.contains_key(&format!("blk.{i}.{s}"));
            let (has_bias, has_qk_norm) = (has("attn_q.bias"), has("attn_q_norm.weight"));
            let (fused_qkv, fused_gate_up) = (has("attn_qkv.weight"), !has("ffn_gate.weight"));
            let has_post_norms = has("post_attention_norm.weight");
            let local = match (sliding_window, arch.sliding_pattern()) {
                (Some(w), Some(n)) if (i + 1) % n != 0 => Some(w),
                _ => None,
            };
            let mut w = |s: &str| t(&format!("blk.{i}.{s}"));
            let bias = if has_bias {
                Some((
                    w("attn_q.bias")?.dequantize(&device)?,
                    w("attn_k.bias")?.dequantize(&device)?,
                    w("attn_v.bias")?.dequantize(&device)?,
                ))
            } else {
                None
            };
            let qk_norm = if has_qk_norm {
                Some((
                    RmsNorm::from_qtensor(w("attn_q_norm.weight")?, eps)?,
                    RmsNorm::from_qtensor(w("attn_k_norm.weight")?, eps)?,
                ))
            } else {
                None
            };
            let (post_attn_norm, post_ffn_norm) = if has_post_norms {
                (
                    Some(RmsNorm::from_qtensor(
                        w("post_attention_norm.weight")?,
                        eps,
                    )?),
                    Some(RmsNorm::from_qtensor(w("post_ffw_norm.weight")?, eps)?),
                )
            } else {
                (None, None)
            };
            layers.push(Layer {
                attn_norm: RmsNorm::from_qtensor(w("attn_norm.weight")?, eps)?,
                post_attn_norm,
                post_ffn_norm,
                window: local,
                rope: usize::from(local.is_some() && arch == Arch::Gemma3),
                qkv: if fused_qkv {
                    Qkv::Fused(Linear::new(w("attn_qkv.weight")?, kernels)?)
                } else {
                    Qkv::Split {
                        q: Linear::new(w("attn_q.weight")?, kernels)?,
                        k: Linear::new(w("attn_k.weight")?, kernels)?,
                        v: Linear::new(w("attn_v.weight")?, kernels)?,
                    }
                },
                bias,
                qk_norm,
                wo: Linear::new(w("attn_output.weight")?, kernels)?,
                ffn_norm: RmsNorm::from_qtensor(w("ffn_norm.weight")?, eps)?,
                gate_up: if fused_gate_up {
                    GateUp::Fused(Linear::new(w("ffn_up.weight")?, kernels)?)
                } else {
                    GateUp::Split {
                        gate: Linear::new(w("ffn_gate.weight")?, kernels)?,
                        up: Linear::new(w("ffn_up.weight")?, kernels)?,
                    }
                },
                down: Linear::new(w("ffn_down.weight")?, kernels)?,
            });
        }
        // Phi-3's long-context files scale their rotation by context length (LongRoPE): not
        // implemented, so refused rather than run wrong.
        if ["rope_factors_long.weight", "rope_factors_short.weight"]
            .iter()
            .any(|n| ct.tensor_infos.contains_key(*n))
        {
            return Err(LocalError::Unsupported(
                "LongRoPE scaling (`rope_factors_long`/`rope_factors_short`)".into(),
            ));
        }
        // Llama 3.1+ files carry their rope scaling as per-frequency divisors (`rope_freqs`).
        let freq_factors = if ct.tensor_infos.contains_key("rope_freqs.weight") {
            let f = t("rope_freqs.weight")?
                .dequantize(&device)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            if f.len() != head_dim / 2 || f.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
                return Err(LocalError::Format(format!(
                    "rope_freqs.weight has {} factors, not {} positive ones",
                    f.len(),
                    head_dim / 2
                )));
            }
            Some(f)
        } else {
            None
        };
        let mut ropes = vec![rope_tables(
            head_dim,
            rope_base,
            freq_factors.as_deref(),
            context_length,
            &device,
        )?];
        if arch == Arch::Gemma3 {
            // Its sliding-window layers rotate with base 10 000 (llama.cpp: `freq_base_swa`).
            let base = md(ct, &format!("{p}.rope.local_freq_base"))
                .and_then(|v| v.to_f32().map_err(|e| LocalError::Format(e.to_string())))
                .unwrap_or(10_000.0);
            ropes.push(rope_tables(head_dim, base, None, context_length, &device)?);
        }
        let gemma = matches!(arch, Arch::Gemma2 | Arch::Gemma3);
        let softcap = |key: &str| {
            md(ct, &format!("{p}.{key}"))
                .ok()
                .and_then(|v| v.to_f32().ok())
                .filter(|c| c.is_finite() && *c > 0.0)
                .map(f64::from)
        };
        // llama.cpp scales gemma2 27B's (46 layers) queries by √(hidden / heads) instead of
        // √head width (its `query_pre_attn_scalar`); the GGUF metadata does not carry it.
        let score_scale = if arch == Arch::Gemma2 && n_layer == 46 {
            ((hidden / n_head) as f64).sqrt()
        } else {
            (head_dim as f64).sqrt()
        };
        Ok(Weights {
            arch,
            embed,
            layers,
            norm,
            output,
            n_head,
            n_kv_head,
            head_dim,
            ropes,
            embed_scale: gemma.then(|| (hidden as f64).sqrt()),
            gelu: gemma,
            score_scale,
            attn_softcap: softcap("attn_logit_softcapping"),
            final_softcap: softcap("final_logit_softcapping"),
            rope_neox: arch.rope_neox(),
            context_length,
            device,
        })
    }

    /// The embeddings of `input`'s tokens, as F32 (scaled where the family scales them).
    fn embed(&self, input: &Tensor) -> candle_core::Result<Tensor> {
        let x = self.embed.embedding(input)?.to_dtype(DType::F32)?;
        match self.embed_scale {
            Some(s) => x * s,
            None => Ok(x),
        }
    }

    /// Logits per step: the vocabulary the output projection covers (rows of the embedding
    /// matrix, which may exceed the tokenizer's tokens).
    pub fn vocab_size(&self) -> usize {
        self.embed.shape().dims().first().copied().unwrap_or(0)
    }

    /// A new generation with room for `capacity` tokens (prompt + output).
    pub fn session(&self, capacity: usize) -> Session {
        let capacity = capacity.clamp(1, self.context_length);
        Session {
            caches: (0..self.layers.len())
                .map(|_| KvCache::new(2, capacity))
                .collect(),
            pos: 0,
            capacity,
        }
    }

    fn rope(&self, x: &Tensor, pos: usize, table: usize) -> candle_core::Result<Tensor> {
        let (_, _, len, _) = x.dims4()?;
        let (cos, sin) = &self.ropes[table];
        let cos = cos.narrow(0, pos, len)?;
        let sin = sin.narrow(0, pos, len)?;
        if self.rope_neox {
            candle_nn::rotary_emb::rope(x, &cos, &sin)
        } else {
            candle_nn::rotary_emb::rope_i(x, &cos, &sin)
        }
    }

    /// Query, key and value projections of `x` (biases added).
    fn qkv(&self, layer: &Layer, x: &Tensor) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let (mut q, mut k, mut v) = match &layer.qkv {
            Qkv::Split { q, k, v } => (q.forward(x)?, k.forward(x)?, v.forward(x)?),
            Qkv::Fused(w) => {
                let qkv = w.forward(x)?;
                let (nq, nkv) = (self.n_head * self.head_dim, self.n_kv_head * self.head_dim);
                let last = qkv.rank() - 1;
                (
                    qkv.narrow(last, 0, nq)?.contiguous()?,
                    qkv.narrow(last, nq, nkv)?.contiguous()?,
                    qkv.narrow(last, nq + nkv, nkv)?.contiguous()?,
                )
            }
        };
        if let Some((bq, bk, bv)) = &layer.bias {
            q = q.broadcast_add(bq)?;
            k = k.broadcast_add(bk)?;
            v = v.broadcast_add(bv)?;
        }
        Ok((q, k, v))
    }

    /// Attention of one sequence's new positions (`q`, `k`, `v` of shape `(1, len, ..)`) over
    /// its cache; returns `(1, len, hidden)`, before the output projection.
    fn attend(
        &self,
        cache: &mut KvCache,
        (q, k, v): (Tensor, Tensor, Tensor),
        layer: &Layer,
        pos: usize,
        mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let qk_norm = layer.qk_norm.as_ref();
        // `width` is heads × head width, which need not be the model's hidden size.
        let (b, len, width) = q.dims3()?;
        let heads = |t: Tensor, n: usize| {
            t.reshape((b, len, n, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (mut q, mut k) = (heads(q, self.n_head)?, heads(k, self.n_kv_head)?);
        if let Some((qn, kn)) = qk_norm {
            let norm = |t: &Tensor, n: &RmsNorm| -> candle_core::Result<Tensor> {
                let shape = t.shape().clone();
                n.forward(&t.flatten_to(2)?)?.reshape(shape)
            };
            q = norm(&q, qn)?;
            k = norm(&k, kn)?;
        }
        let q = self.rope(&q, pos, layer.rope)?;
        let k = self.rope(&k, pos, layer.rope)?;
        let v = heads(v, self.n_kv_head)?;
        let (mut k, mut v) = cache.append(&k, &v)?;
        // A sliding-window layer: the keys no query of this step can see are left out, and a
        // longer prompt gets the window's mask instead of the causal one.
        let mut window_mask = None;
        if let Some(w) = layer.window {
            let kv_len = k.dim(2)?;
            let first = (pos + 1).saturating_sub(w);
            if first > 0 {
                k = k.narrow(2, first, kv_len - first)?;
                v = v.narrow(2, first, kv_len - first)?;
            }
            if len > 1 && pos + len > w {
                window_mask = Some(sliding_mask(len, pos, first, w, &self.device)?);
            }
        }
        let mask = window_mask.as_ref().or(mask);
        // Grouped-query attention without copying K/V per query head: the `rep` query heads
        // that share a key/value head are stacked as extra rows against it.
        let rep = self.n_head / self.n_kv_head;
        let kv_len = k.dim(2)?;
        let q = q.reshape((b, self.n_kv_head, rep * len, self.head_dim))?;
        let scores = (q.matmul(&k.t()?)? / self.score_scale)?;
        let scores = soft_cap(scores, self.attn_softcap)?;
        let scores = match mask {
            None => scores,
            Some(m) => {
                let shape = (b, self.n_kv_head, rep, len, kv_len);
                let s5 = scores.reshape(shape)?;
                let m = m.broadcast_as(shape)?;
                let neg_inf = Tensor::new(f32::NEG_INFINITY, &self.device)?.broadcast_as(shape)?;
                m.where_cond(&neg_inf, &s5)?
                    .reshape((b, self.n_kv_head, rep * len, kv_len))?
            }
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        probs
            .matmul(&v)?
            .reshape((b, self.n_head, len, self.head_dim))?
            .transpose(1, 2)?
            .reshape((b, len, width))
    }

    /// One layer over `x` of shape `(n, len, hidden)`: `n` sequences (each with its session, at
    /// its own position), sharing every matrix product; attention is per sequence.
    fn layer(
        &self,
        index: usize,
        layer: &Layer,
        sessions: &mut [&mut Session],
        x: &Tensor,
        mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let h = layer.attn_norm.forward(x)?;
        let (q, k, v) = self.qkv(layer, &h)?;
        let y = if sessions.len() == 1 {
            let s = &mut sessions[0];
            self.attend(&mut s.caches[index], (q, k, v), layer, s.pos, mask)?
        } else {
            let mut ys = Vec::with_capacity(sessions.len());
            for (i, s) in sessions.iter_mut().enumerate() {
                let one = (q.narrow(0, i, 1)?, k.narrow(0, i, 1)?, v.narrow(0, i, 1)?);
                ys.push(self.attend(&mut s.caches[index], one, layer, s.pos, mask)?);
            }
            Tensor::cat(&ys, 0)?
        };
        let mut y = layer.wo.forward(&y)?;
        if let Some(n) = &layer.post_attn_norm {
            y = n.forward(&y)?;
        }
        let x1 = (y + x)?;
        let h = layer.ffn_norm.forward(&x1)?;
        let (gate, up) = match &layer.gate_up {
            GateUp::Split { gate, up } => (gate.forward(&h)?, up.forward(&h)?),
            GateUp::Fused(w) => {
                let both = w.forward(&h)?;
                let last = both.rank() - 1;
                let half = both.dim(last)? / 2;
                (both.narrow(last, 0, half)?, both.narrow(last, half, half)?)
            }
        };
        let gate = if self.gelu {
            gate.gelu()?
        } else {
            candle_nn::ops::silu(&gate)?
        };
        let mut mlp = layer.down.forward(&(gate * up)?)?;
        if let Some(n) = &layer.post_ffn_norm {
            mlp = n.forward(&mlp)?;
        }
        mlp + x1
    }

    /// One decoding step for several sequences at once: `tokens[i]` follows `sessions[i]`'s
    /// previous tokens. The weights are read once for all of them. Returns each one's logits.
    pub fn forward_batch(
        &self,
        sessions: &mut [&mut Session],
        tokens: &[u32],
    ) -> Result<Vec<Vec<f32>>, LocalError> {
        if tokens.len() != sessions.len() || tokens.is_empty() {
            return Err(LocalError::Format("one token per sequence".into()));
        }
        if let Some(s) = sessions.iter().find(|s| s.pos + 1 > s.capacity) {
            return Err(LocalError::ContextFull(s.capacity));
        }
        let input = Tensor::new(tokens, &self.device)?.unsqueeze(1)?;
        let mut x = self.embed(&input)?;
        for (i, layer) in self.layers.iter().enumerate() {
            x = self.layer(i, layer, sessions, &x, None)?;
        }
        let logits = self.output.forward(&self.norm.forward(&x)?)?;
        let logits = soft_cap(logits, self.final_softcap)?;
        for s in sessions.iter_mut() {
            s.pos += 1;
        }
        Ok(logits.squeeze(1)?.to_dtype(DType::F32)?.to_vec2()?)
    }

    /// Runs `tokens` through the model after the session's previous tokens and returns the
    /// logits of the last one.
    pub fn forward(&self, session: &mut Session, tokens: &[u32]) -> Result<Vec<f32>, LocalError> {
        if tokens.is_empty() {
            return Err(LocalError::Format("no tokens to run".into()));
        }
        if session.pos + tokens.len() > session.capacity {
            return Err(LocalError::ContextFull(session.capacity));
        }
        let pos = session.pos;
        let len = tokens.len();
        let input = Tensor::new(tokens, &self.device)?.unsqueeze(0)?;
        let mask = if len > 1 {
            Some(build_causal_mask(len, pos, &self.device)?)
        } else {
            None
        };
        let mut x = self.embed(&input)?;
        for (i, layer) in self.layers.iter().enumerate() {
            x = self.layer(i, layer, &mut [&mut *session], &x, mask.as_ref())?;
        }
        let last = self.norm.forward(&x.i((.., len - 1..len, ..))?)?;
        let logits = soft_cap(self.output.forward(&last)?, self.final_softcap)?;
        session.pos += len;
        Ok(logits
            .squeeze(0)?
            .squeeze(0)?
            .to_dtype(DType::F32)?
            .to_vec1()?)
    }
}

/// `cap * tanh(x / cap)` (gemma2's logit soft-capping), or `x` without a cap.
fn soft_cap(x: Tensor, cap: Option<f64>) -> candle_core::Result<Tensor> {
    match cap {
        Some(c) => (x / c)?.tanh()? * c,
        None => Ok(x),
    }
}

/// The mask of `len` queries from position `pos` over the keys from position `first` on, for a
/// layer that sees `window` keys back (itself included): 1 where a key is in the future or out
/// of the window (llama.cpp's standard sliding window: masked when `query − key ≥ window`).
fn sliding_mask(
    len: usize,
    pos: usize,
    first: usize,
    window: usize,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let kv_len = pos + len - first;
    let mask: Vec<u8> = (0..len)
        .flat_map(|i| {
            (0..kv_len).map(move |j| {
                let (query, key) = (pos + i, first + j);
                u8::from(key > query || query - key >= window)
            })
        })
        .collect();
    Tensor::from_slice(&mask, (len, kv_len), device)
}

/// The rotary tables `(len, head_dim / 2)`: the angle of position `p` and frequency `i` is
/// `p · base^(−2i / head_dim) / factor_i`, the factors being a file's `rope_freqs` (Llama 3.1's
/// rope scaling as llama.cpp applies it; 1 when absent).
fn rope_tables(
    head_dim: usize,
    base: f32,
    factors: Option<&[f32]>,
    len: usize,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let inv: Vec<f32> = (0..head_dim)
        .step_by(2)
        .enumerate()
        .map(|(k, i)| {
            let factor = factors.and_then(|f| f.get(k)).copied().unwrap_or(1.0);
            1.0 / base.powf(i as f32 / head_dim as f32) / factor
        })
        .collect();
    let inv = Tensor::new(inv.as_slice(), device)?;
    let angles = Tensor::arange(0u32, len as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((len, 1))?
        .broadcast_mul(&inv.reshape((1, inv.elem_count()))?)?;
    Ok((angles.cos()?, angles.sin()?))
}

/// One generation's state: the KV cache of every layer and the position reached.
pub struct Session {
    caches: Vec<KvCache>,
    pos: usize,
    capacity: usize,
}

impl Session {
    /// Tokens run so far.
    pub fn len(&self) -> usize {
        self.pos
    }

    /// Whether no token was run yet.
    pub fn is_empty(&self) -> bool {
        self.pos == 0
    }

    /// Tokens this session has room for.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// A copy of the session with its own cache (the keys and values run so far copied, not
    /// shared): a second generation continuing from the same prompt without running it again.
    ///
    /// Errors: a cache that cannot be read or copied.
    pub fn fork(&self) -> Result<Session, LocalError> {
        let mut caches = Vec::with_capacity(self.caches.len());
        for c in &self.caches {
            let mut copy = KvCache::new(2, self.capacity);
            if let (Some(k), Some(v)) = (c.k()?, c.v()?) {
                copy.append(&k.contiguous()?, &v.contiguous()?)?;
            }
            caches.push(copy);
        }
        Ok(Session {
            caches,
            pos: self.pos,
            capacity: self.capacity,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sliding_mask_hides_the_future_and_what_is_out_of_the_window() {
        // 3 queries from position 5, keys from position 3 on, a window of 3 keys.
        let m = sliding_mask(3, 5, 3, 3, &Device::Cpu).unwrap();
        let m = m.to_vec2::<u8>().unwrap();
        // keys:             3  4  5  6  7
        assert_eq!(m[0], [0, 0, 0, 1, 1]); // query 5 sees 3..=5
        assert_eq!(m[1], [1, 0, 0, 0, 1]); // query 6 sees 4..=6
        assert_eq!(m[2], [1, 1, 0, 0, 0]); // query 7 sees 5..=7
    }

    #[test]
    fn rope_factors_divide_each_frequency() {
        let dev = Device::Cpu;
        let (cos, sin) = rope_tables(8, 10_000.0, Some(&[1.0, 2.0, 4.0, 8.0]), 5, &dev).unwrap();
        let (cos, sin) = (cos.to_vec2::<f32>().unwrap(), sin.to_vec2::<f32>().unwrap());
        for p in 0..5 {
            for k in 0..4 {
                let freq = 10_000f32.powf(-(2.0 * k as f32) / 8.0) / [1.0, 2.0, 4.0, 8.0][k];
                let angle = p as f32 * freq;
                assert!((cos[p][k] - angle.cos()).abs() < 1e-6, "cos {p} {k}");
                assert!((sin[p][k] - angle.sin()).abs() < 1e-6, "sin {p} {k}");
            }
        }
    }
}
