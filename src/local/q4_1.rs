//! Matrix products with Q4_1 weights (the default SmolLM2 file's format) on AVX2.
//!
//! candle 0.11 multiplies Q4_1 weights with a portable scalar loop; this is the AVX2 kernel
//! llama.cpp uses (`ggml_vec_dot_q4_1_q8_1`): the activations are quantised to 8 bits per block
//! of 32 once per product, then each weight row is a sum of integer dot products. Tiles of weight
//! rows are spread over candle's CPU worker pool; for prompts (several activation rows) each task
//! walks its tile against every activation row, so the weights stay in cache.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use half::f16;

const QK: usize = 32;
/// Bytes of one Q4_1 block: `d` (f16), `m` (f16), 16 bytes of nibbles.
const BLOCK_BYTES: usize = 20;
/// Weight rows per task: small enough to spread over threads, large enough to amortise.
const ROWS_PER_TASK: usize = 16;

/// A Q4_1 weight matrix of `rows` x `cols` (the layer computes `x @ W^T`).
pub struct Q41Matrix {
    data: Vec<u8>,
    rows: usize,
    cols: usize,
}

/// One block of activations quantised to 8 bits: scale, scale * sum of values, values.
#[derive(Clone, Copy)]
struct Q8Block {
    d: f32,
    s: f32,
    qs: [i8; QK],
}

impl Q41Matrix {
    /// The matrix of a Q4_1 tensor, or `None` for other formats or when this CPU lacks AVX2/FMA.
    pub fn from_qtensor(t: &QTensor) -> Option<Q41Matrix> {
        if t.dtype() != GgmlDType::Q4_1 || !has_avx2() {
            return None;
        }
        let (rows, cols) = t.shape().dims2().ok()?;
        if cols % QK != 0 {
            return None;
        }
        let data = t.data().ok()?.into_owned();
        (data.len() == rows * cols / QK * BLOCK_BYTES).then_some(Q41Matrix { data, rows, cols })
    }

    /// `x @ W^T` for `x` of shape `(.., cols)`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dims = x.dims().to_vec();
        let k = *dims.last().unwrap_or(&0);
        if k != self.cols {
            candle_core::bail!("q4_1 matmul: input width {k}, weights {}", self.cols);
        }
        let m = x.elem_count() / k.max(1);
        let input: Vec<f32> = x.flatten_all()?.to_vec1()?;
        let blocks_per_row = k / QK;
        let mut q8 = vec![
            Q8Block {
                d: 0.0,
                s: 0.0,
                qs: [0; QK]
            };
            m * blocks_per_row
        ];
        for (row, out) in input
            .chunks_exact(k)
            .zip(q8.chunks_exact_mut(blocks_per_row))
        {
            quantize_row(row, out);
        }
        let n = self.rows;
        let mut result = vec![0f32; m * n];
        let out = OutPtr(result.as_mut_ptr());
        // candle's spin-then-park pool, the caller included: no hand-off per product.
        candle_core::utils::barrier_pool().execute_chunked(n.div_ceil(ROWS_PER_TASK), |tiles| {
            let out = &out;
            for tile in tiles {
                let r0 = tile * ROWS_PER_TASK;
                for r in r0..(r0 + ROWS_PER_TASK).min(n) {
                    let w = &self.data[r * blocks_per_row * BLOCK_BYTES..]
                        [..blocks_per_row * BLOCK_BYTES];
                    for i in 0..m {
                        // SAFETY: AVX2/FMA were checked when the matrix was built; each (i, r)
                        // cell is written by exactly one task.
                        unsafe {
                            *out.0.add(i * n + r) =
                                dot_avx2(w, &q8[i * blocks_per_row..][..blocks_per_row]);
                        }
                    }
                }
            }
        });
        let mut shape = dims;
        if let Some(last) = shape.last_mut() {
            *last = n;
        }
        Tensor::from_vec(result, shape, &Device::Cpu)
    }
}

/// The output buffer, shared by the pool's threads, which write disjoint cells.
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint cells and the buffer outlives `execute_chunked`.
unsafe impl Sync for OutPtr {}
unsafe impl Send for OutPtr {}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Quantises one row of activations to 8-bit blocks (as ggml's `quantize_row_q8_1`).
fn quantize_row(x: &[f32], out: &mut [Q8Block]) {
    for (xs, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, v) in b.qs.iter_mut().zip(xs) {
            let r = (v * inv).round() as i32;
            *q = r as i8;
            sum += r;
        }
        b.d = d;
        b.s = d * sum as f32;
    }
}

/// Dot product of one Q4_1 weight row (raw blocks) with a quantised activation row.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(w: &[u8], x: &[Q8Block]) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = _mm256_setzero_ps();
    let mut summs = 0f32;
    let low = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    for (i, xb) in x.iter().enumerate() {
        let b = &w[i * BLOCK_BYTES..][..BLOCK_BYTES];
        let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
        let m = f16::from_le_bytes([b[2], b[3]]).to_f32();
        summs += m * xb.s;
        // Nibbles: low halves are values 0..16, high halves 16..32.
        let packed = _mm_loadu_si128(b[4..].as_ptr() as *const __m128i);
        let nibbles = _mm256_and_si256(
            _mm256_insertf128_si256::<1>(
                _mm256_castsi128_si256(packed),
                _mm_srli_epi16::<4>(packed),
            ),
            low,
        );
        let ys = _mm256_loadu_si256(xb.qs.as_ptr() as *const __m256i);
        // u8 x i8 -> i16 pairs -> i32 lanes.
        let dot = _mm256_madd_epi16(_mm256_maddubs_epi16(nibbles, ys), ones);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d * xb.d), _mm256_cvtepi32_ps(dot), acc);
    }
    let hi = _mm256_extractf128_ps::<1>(acc);
    let s = _mm_add_ps(_mm256_castps256_ps128(acc), hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s) + summs
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn dot_avx2(_w: &[u8], _x: &[Q8Block]) -> f32 {
    unreachable!("built only where AVX2 is present")
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QMatMul;
    use candle_core::Module;

    #[test]
    fn matches_candles_q4_1_product() {
        if !has_avx2() {
            return;
        }
        let dev = Device::Cpu;
        let (n, k) = (72, 256);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
            .collect();
        let w = Tensor::from_vec(w, (n, k), &dev).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q4_1).unwrap();
        let ours = Q41Matrix::from_qtensor(&q).expect("q4_1");
        let reference = QMatMul::from_qtensor(q).unwrap();
        for m in [1usize, 3, 40] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 104729 % 997) as f32 / 498.0) - 1.0)
                .collect();
            let x = Tensor::from_vec(x, (1, m, k), &dev).unwrap();
            let values = |t: Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };
            let a = values(ours.forward(&x).unwrap());
            let b = values(reference.forward(&x).unwrap());
            assert_eq!(a.len(), m * n);
            let scale = b.iter().fold(0f32, |s, v| s.max(v.abs()));
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() <= 1e-3 * scale.max(1.0), "{x} vs {y} (m={m})");
            }
        }
    }
}
