//! A BERT encoder forward pass written for latency on the CPU: the same weights and arithmetic as
//! candle's `BertModel`, but with the Q/K/V projections fused into one matrix multiply, no
//! padding (a batch's sequences are stacked row-wise and attend only within themselves),
//! attention computed per (sequence, head) on the rayon pool, and vectorisable GELU, softmax and
//! layer norm loops. Dense layers and attention's small products use [`dense`]'s packed kernels
//! (AVX-512, AVX2 or portable, per the process's [`KernelPath`]).

use super::dense::{self, Dense};
use super::ClassifierError;
use crate::cpu::KernelPath;
use candle_core::{Device, Tensor};
use candle_transformers::models::bert::Config;
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::Path;

struct Norm {
    g: Vec<f32>,
    b: Vec<f32>,
}

struct Layer {
    qkv: Dense,
    out: Dense,
    ln1: Norm,
    up: Dense,
    down: Dense,
    ln2: Norm,
}

/// The encoder's weights, laid out for [`Bert::forward`].
pub struct Bert {
    hidden: usize,
    heads: usize,
    eps: f32,
    max_positions: usize,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    ln: Norm,
    layers: Vec<Layer>,
    /// The kernels of the dense layers and of attention.
    path: KernelPath,
}

fn vec_of(all: &HashMap<String, Tensor>, name: &str) -> Result<Vec<f32>, ClassifierError> {
    let t = all
        .get(name)
        .or_else(|| all.get(&format!("bert.{name}")))
        .ok_or_else(|| ClassifierError::Format(format!("the encoder has no tensor {name}")))?;
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

/// `[out, in]` (PyTorch layout) to `[in, out]`.
fn transpose(w: &[f32], n_out: usize, n_in: usize) -> Vec<f32> {
    let mut t = vec![0.0; w.len()];
    for o in 0..n_out {
        for i in 0..n_in {
            t[i * n_out + o] = w[o * n_in + i];
        }
    }
    t
}

fn dense(
    all: &HashMap<String, Tensor>,
    names: &[&str],
    n_in: usize,
    n_out_each: usize,
    path: KernelPath,
) -> Result<Dense, ClassifierError> {
    let mut w = vec![];
    let mut b = vec![];
    for n in names {
        w.extend(vec_of(all, &format!("{n}.weight"))?);
        b.extend(vec_of(all, &format!("{n}.bias"))?);
    }
    let n_out = n_out_each * names.len();
    if w.len() != n_in * n_out || b.len() != n_out {
        return Err(ClassifierError::Format(format!(
            "unexpected shape of {}",
            names.join("+")
        )));
    }
    if n_out == 0 {
        return Err(ClassifierError::Format(format!(
            "{} has no outputs",
            names.join("+")
        )));
    }
    Ok(Dense::with_path(
        transpose(&w, n_out, n_in),
        b,
        n_in,
        n_out,
        path,
    ))
}

fn norm(all: &HashMap<String, Tensor>, name: &str) -> Result<Norm, ClassifierError> {
    Ok(Norm {
        g: vec_of(all, &format!("{name}.weight"))?,
        b: vec_of(all, &format!("{name}.bias"))?,
    })
}

impl Bert {
    /// Loads `model.safetensors` with the given configuration, on the process's kernels
    /// ([`crate::cpu::chosen`]).
    pub fn load(weights: &Path, cfg: &Config) -> Result<Bert, ClassifierError> {
        Self::load_with_path(weights, cfg, crate::cpu::chosen())
    }

    /// [`Bert::load`] on the kernels of `path`. Errors: a path this CPU cannot run, or weights
    /// that do not match the configuration.
    pub fn load_with_path(
        weights: &Path,
        cfg: &Config,
        path: KernelPath,
    ) -> Result<Bert, ClassifierError> {
        if !path.supported() {
            return Err(ClassifierError::Format(format!(
                "this CPU cannot run the {path} kernels"
            )));
        }
        let all = candle_core::safetensors::load(weights, &Device::Cpu)
            .map_err(|e| ClassifierError::Format(format!("{}: {e}", weights.display())))?;
        let h = cfg.hidden_size;
        let i = cfg.intermediate_size;
        if cfg.num_attention_heads == 0 || !h.is_multiple_of(cfg.num_attention_heads) {
            return Err(ClassifierError::Format(
                "hidden size is not a multiple of the heads".into(),
            ));
        }
        let mut layers = vec![];
        for l in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            let a = format!("{p}.attention");
            layers.push(Layer {
                qkv: dense(
                    &all,
                    &[
                        &format!("{a}.self.query"),
                        &format!("{a}.self.key"),
                        &format!("{a}.self.value"),
                    ],
                    h,
                    h,
                    path,
                )?,
                out: dense(&all, &[&format!("{a}.output.dense")], h, h, path)?,
                ln1: norm(&all, &format!("{a}.output.LayerNorm"))?,
                up: dense(&all, &[&format!("{p}.intermediate.dense")], h, i, path)?,
                down: dense(&all, &[&format!("{p}.output.dense")], i, h, path)?,
                ln2: norm(&all, &format!("{p}.output.LayerNorm"))?,
            });
        }
        let token_type = vec_of(&all, "embeddings.token_type_embeddings.weight")?;
        Ok(Bert {
            hidden: h,
            heads: cfg.num_attention_heads,
            eps: cfg.layer_norm_eps as f32,
            max_positions: cfg.max_position_embeddings,
            word: vec_of(&all, "embeddings.word_embeddings.weight")?,
            position: vec_of(&all, "embeddings.position_embeddings.weight")?,
            token_type: token_type[..h.min(token_type.len())].to_vec(),
            ln: norm(&all, "embeddings.LayerNorm")?,
            layers,
            path,
        })
    }

    /// Number of transformer layers.
    pub fn layer_count(&self) -> usize {
        self.layers.len()
    }

    /// Mean-pooled, L2-normalised embeddings of a batch of token id sequences (the last layer's
    /// output, as sentence-transformers pools it).
    pub fn forward(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>, ClassifierError> {
        self.forward_pooled(batch, &[self.layers.len()])
    }

    /// Like [`Bert::forward`], pooling the output of each of `pool`'s layers (0: the embedding
    /// layer, `i`: transformer layer `i`, 1-based) and concatenating them in `pool`'s order: one
    /// vector of `hidden * pool.len()` values per sequence, each `hidden` block a unit vector.
    ///
    /// Errors: a layer beyond the model's, a sequence that is empty, too long, or has an id
    /// outside the vocabulary.
    pub fn forward_pooled(
        &self,
        batch: &[&[u32]],
        pool: &[usize],
    ) -> Result<Vec<Vec<f32>>, ClassifierError> {
        if let Some(&bad) = pool.iter().find(|&&l| l > self.layers.len()) {
            return Err(ClassifierError::Format(format!(
                "layer {bad} pooled (the encoder has layers 0 to {})",
                self.layers.len()
            )));
        }
        let h = self.hidden;
        let vocab = self.word.len() / h;
        let mut spans = Vec::with_capacity(batch.len());
        let mut rows = 0;
        for ids in batch {
            if ids.is_empty() || ids.len() > self.max_positions {
                return Err(ClassifierError::Format(format!(
                    "a sequence of {} tokens (the encoder takes 1 to {})",
                    ids.len(),
                    self.max_positions
                )));
            }
            if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
                return Err(ClassifierError::Format(format!(
                    "token id {bad} out of range"
                )));
            }
            spans.push((rows, ids.len()));
            rows += ids.len();
        }
        let threads = rayon::current_num_threads();
        let inter = self.layers.first().map(|l| l.up.n()).unwrap_or(0);
        SCRATCH.with(|cell| {
            let mut guard = cell.borrow_mut();
            let Scratch {
                x,
                qkv,
                ctx,
                tmp,
                up,
            } = &mut *guard;
            for (buf, len) in [
                (&mut *x, rows * h),
                (&mut *qkv, rows * 3 * h),
                (&mut *ctx, rows * h),
                (&mut *tmp, rows * h),
                (&mut *up, rows * inter),
            ] {
                buf.resize(len, 0.0);
            }
            let out = self.layers_forward(batch, &spans, rows, threads, pool, x, qkv, ctx, tmp, up);
            // Keep what a typical request needs; give back what a large batch took.
            for buf in [x, qkv, ctx, tmp, up] {
                if buf.capacity() > SCRATCH_KEEP {
                    *buf = Vec::new();
                }
            }
            out
        })
    }

    /// The embeddings, the layers and the pooling, on preallocated buffers.
    #[allow(clippy::too_many_arguments)]
    fn layers_forward(
        &self,
        batch: &[&[u32]],
        spans: &[(usize, usize)],
        rows: usize,
        threads: usize,
        pool: &[usize],
        x: &mut Vec<f32>,
        qkv: &mut [f32],
        ctx: &mut [f32],
        tmp: &mut Vec<f32>,
        up: &mut [f32],
    ) -> Result<Vec<Vec<f32>>, ClassifierError> {
        let h = self.hidden;
        // Embeddings.
        for (ids, &(start, _)) in batch.iter().zip(spans) {
            for (p, &id) in ids.iter().enumerate() {
                let row = &mut x[(start + p) * h..(start + p + 1) * h];
                let w = &self.word[id as usize * h..(id as usize + 1) * h];
                let pos = &self.position[p * h..(p + 1) * h];
                for (((r, w), p), t) in row.iter_mut().zip(w).zip(pos).zip(&self.token_type) {
                    *r = w + p + t;
                }
            }
        }
        layer_norm(x, h, &self.ln, self.eps);
        let mut out = vec![Vec::with_capacity(h * pool.len()); spans.len()];
        let pool_now = |depth: usize, x: &[f32], out: &mut [Vec<f32>]| {
            for (slot, &l) in pool.iter().enumerate() {
                if l != depth {
                    continue;
                }
                for (o, &(start, len)) in out.iter_mut().zip(spans) {
                    o.resize(h * pool.len(), 0.0);
                    mean_pool(
                        &x[start * h..(start + len) * h],
                        h,
                        &mut o[slot * h..(slot + 1) * h],
                    );
                }
            }
        };
        pool_now(0, x, &mut out);
        for (depth, layer) in self.layers.iter().enumerate() {
            layer.qkv.forward(x, rows, qkv, threads);
            self.attention(qkv, spans, ctx);
            layer.out.forward(ctx, rows, tmp, threads);
            rows_parallel(tmp, x, h, threads, |t, x| {
                add(t, x);
                layer_norm(t, h, &layer.ln1, self.eps);
            });
            std::mem::swap(x, tmp);
            layer.up.forward(x, rows, up, threads);
            let width = up.len() / rows.max(1);
            rows_parallel(up, &[], width, threads, |u, _| gelu(u));
            layer.down.forward(up, rows, tmp, threads);
            rows_parallel(tmp, x, h, threads, |t, x| {
                add(t, x);
                layer_norm(t, h, &layer.ln2, self.eps);
            });
            std::mem::swap(x, tmp);
            pool_now(depth + 1, x, &mut out);
        }
        Ok(out)
    }

    /// Self-attention of every (sequence, head), written into `ctx` (`[rows, hidden]`).
    fn attention(&self, qkv: &[f32], spans: &[(usize, usize)], ctx: &mut [f32]) {
        let h = self.hidden;
        let dh = h / self.heads;
        let scale = 1.0 / (dh as f32).sqrt();
        let tasks: Vec<(usize, usize, usize)> = spans
            .iter()
            .flat_map(|&(start, len)| (0..self.heads).map(move |head| (start, len, head)))
            .collect();
        let out = SendPtr(ctx.as_mut_ptr());
        let run = |&(start, len, head): &(usize, usize, usize)| {
            // SAFETY: every task writes its own rows x columns of ctx.
            unsafe { self.head(qkv, start, len, head, scale, out) };
        };
        // Short sequences are cheaper than waking another thread.
        let work: usize = spans.iter().map(|&(_, len)| len * len).sum::<usize>() * self.heads;
        if rayon::current_num_threads() > 1 && tasks.len() > 1 && work >= 1 << 15 {
            tasks.par_iter().for_each(run);
        } else {
            tasks.iter().for_each(run);
        }
    }
}

impl Bert {
    /// One (sequence, head) of attention on the packed kernels: the keys transposed and packed
    /// as 32-column panels (the sequence padded to a multiple of 32), then the values.
    ///
    /// # Safety
    /// `out` addresses the `[rows, hidden]` context, of which this writes only the sequence's
    /// rows of the head's columns.
    unsafe fn head(
        &self,
        qkv: &[f32],
        start: usize,
        len: usize,
        head: usize,
        scale: f32,
        out: SendPtr,
    ) {
        let h = self.hidden;
        let dh = h / self.heads;
        let padded = len.div_ceil(dense::NR) * dense::NR;
        PACKED.with(|cell| {
            let mut guard = cell.borrow_mut();
            let (scores, keys, values) = &mut *guard;
            let row =
                |i: usize, part: usize| &qkv[(start + i) * 3 * h + part * h + head * dh..][..dh];
            // Keys transposed: [dh, padded], zero past the sequence.
            scores.clear();
            scores.resize(dh * padded, 0.0);
            for j in 0..len {
                for (d, v) in row(j, 1).iter().enumerate() {
                    scores[d * padded + j] = *v;
                }
            }
            dense::pack(scores, dh, padded, padded, keys);
            scores.clear();
            scores.resize(len * padded, 0.0);
            let q = qkv.as_ptr().add(start * 3 * h + head * dh);
            dense::packed_product(
                self.path,
                q,
                len,
                3 * h,
                dh,
                keys,
                None,
                scores.as_mut_ptr(),
                padded,
                padded,
            );
            for r in scores.chunks_exact_mut(padded) {
                let r = &mut r[..len];
                r.iter_mut().for_each(|v| *v *= scale);
                softmax(r);
            }
            // Values [len, dh], packed into the keys' buffer (free again).
            values.clear();
            for j in 0..len {
                values.extend_from_slice(row(j, 2));
            }
            dense::pack(values, len, dh, dh, keys);
            dense::packed_product(
                self.path,
                scores.as_ptr(),
                len,
                padded,
                len,
                keys,
                None,
                out.0.add(start * h + head * dh),
                h,
                dh,
            );
        });
    }
}

/// Working buffers of one forward pass, kept per thread so that a request allocates nothing.
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    tmp: Vec<f32>,
    up: Vec<f32>,
}

/// Largest buffer (in floats) kept between forward passes: 512 tokens of the widest layer.
const SCRATCH_KEEP: usize = 512 * 1536;

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
    /// Scores, packed keys (then values) and the values of one attention head.
    static PACKED: std::cell::RefCell<(Vec<f32>, Vec<f32>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: used only to hand disjoint regions of one buffer to parallel tasks.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// Runs `f` on row blocks of `dst` (and the same rows of `src`, when given) on up to `threads`
/// threads; each row is computed exactly as on one thread.
fn rows_parallel(
    dst: &mut [f32],
    src: &[f32],
    width: usize,
    threads: usize,
    f: impl Fn(&mut [f32], &[f32]) + Sync,
) {
    let rows = dst.len() / width.max(1);
    if threads < 2 || rows < 32 {
        f(dst, src);
        return;
    }
    let per = rows.div_ceil(threads) * width;
    let (d0, d1) = dst.split_at_mut(per.min(dst.len()));
    let (s0, s1) = if src.is_empty() {
        (src, src)
    } else {
        src.split_at(per.min(src.len()))
    };
    rayon::join(|| f(d0, s0), || f(d1, s1));
}

/// The mean of `rows` (`[n, h]`, row-major) written into `out` (`[h]`), scaled to unit length.
fn mean_pool(rows: &[f32], h: usize, out: &mut [f32]) {
    out.fill(0.0);
    let len = rows.len() / h;
    for r in rows.chunks_exact(h) {
        for (m, v) in out.iter_mut().zip(r) {
            *m += v;
        }
    }
    let norm = out.iter().map(|v| v * v).sum::<f32>().sqrt() / len as f32;
    let scale = 1.0 / (len as f32 * norm.max(1e-12));
    out.iter_mut().for_each(|v| *v *= scale);
}

fn add(dst: &mut [f32], src: &[f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}

/// Sum of `f(x)` over a slice with 16 independent partial sums, so the loop vectorises.
#[inline(always)]
fn sum_by(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0.0f32; 16];
    let chunks = xs.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for c in chunks {
        for i in 0..16 {
            acc[i] += f(c[i]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn layer_norm(x: &mut [f32], h: usize, n: &Norm, eps: f32) {
    for row in x.chunks_exact_mut(h) {
        let mean = sum_by(row, |v| v) / h as f32;
        let var = sum_by(row, |v| (v - mean) * (v - mean)) / h as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, g), b) in row.iter_mut().zip(&n.g).zip(&n.b) {
            *v = (*v - mean) * inv * g + b;
        }
    }
}

/// e^x for x <= 0 or moderate x, branch-free so the loops vectorise (relative error ~1e-7).
#[inline(always)]
fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // Round x / ln 2 to an integer n with the 1.5 * 2^23 trick: n's bits land in the mantissa,
    // so no float-to-int conversion (which would not vectorise) is needed.
    const MAGIC: f32 = 12_582_912.0;
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    // ln 2 split in two (Cody-Waite) so that n * ln 2 is subtracted without losing bits.
    let r = (x - n * 0.693_359_4) + n * 2.121_944_4e-4;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r / 5040.0))))));
    f32::from_bits(t.to_bits().wrapping_sub(0x4B40_0000).wrapping_add(127) << 23) * p
}

/// erf(x), Abramowitz-Stegun 7.1.26 (absolute error below 1.5e-7).
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp(-a * a);
    y.copysign(x)
}

/// GELU with the exact (erf) form, as BERT uses.
fn gelu(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
    }
}

fn softmax(row: &mut [f32]) {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = row.chunks_exact(16);
    let mut max = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    for c in chunks {
        for i in 0..16 {
            lanes[i] = if c[i] > lanes[i] { c[i] } else { lanes[i] };
        }
    }
    max = lanes.iter().copied().fold(max, f32::max);
    for v in row.iter_mut() {
        *v = exp(*v - max);
    }
    let inv = 1.0 / sum_by(row, |v| v);
    row.iter_mut().for_each(|v| *v *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_erf_are_accurate() {
        for i in -400..=100 {
            let x = i as f32 / 10.0;
            let rel = (exp(x) - x.exp()).abs() / x.exp().max(1e-30);
            assert!(rel < 2e-6, "exp({x}): {} vs {}", exp(x), x.exp());
        }
        // erf(0.5), erf(1), erf(2), erf(-1) from tables.
        for (x, want) in [
            (0.5f32, 0.520_499_9),
            (1.0, 0.842_700_8),
            (2.0, 0.995_322_3),
            (-1.0, -0.842_700_8),
        ] {
            assert!((erf(x) - want).abs() < 3e-7, "erf({x}) = {}", erf(x));
        }
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut r = vec![1.0, 2.0, 3.0, -50.0];
        softmax(&mut r);
        assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(r[2] > r[1] && r[1] > r[0] && r[3] < 1e-20);
    }
}
