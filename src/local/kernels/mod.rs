//! Matrix products with block-quantised weights on AVX2: the 32-value formats (Q4_0, Q4_1, Q5_0,
//! Q5_1, Q8_0) and the 256-value K-quants (Q4_K, Q5_K, Q6_K; see [`kquants`]).
//!
//! candle 0.11 multiplies most of the 32-value formats with a portable scalar loop (Q5_0, the
//! bulk of Qwen2.5-0.5B's Q4_K_M file, and Q4_1, SmolLM2's), and the K-quants (the bulk of every
//! other Q4_K_M file) one row at a time. Here the activations are quantised to 8 bits once per
//! product (per block of 32 as ggml's `quantize_row_q8_1`, or per 256 as its
//! `quantize_row_q8_K`), and the weights, repacked at load eight rows to a group (see
//! [`formats`]), are multiplied with integer dot products:
//! `vpdpbusd` where the CPU has VNNI, `vpmaddubsw` otherwise. Groups of weight rows are spread
//! over candle's CPU worker pool. With several activation rows (a prompt, or a batch of
//! generations) each weight block is unpacked once for four rows, and a task walks its groups
//! against every activation row, so the weights stay in cache.

mod buffer;
mod formats;
mod kquants;

use buffer::WeightBuf;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{CpuStorage, Device, Storage, Tensor};
pub(crate) use formats::Kernel;
use formats::{Format, GROUP, QK};
use kquants::{KFormat, Q8KBlock, QK_K};

/// Row groups per task: small enough to spread over threads, large enough to amortise.
const GROUPS_PER_TASK: usize = 2;
/// Products over fewer weight bytes (times activation rows) than this run on the calling thread.
const INLINE_BYTES: usize = 256 << 10;
/// Activation rows each weight block is unpacked for at once.
const ROW_GROUP: usize = 4;

/// A block-quantised weight matrix of `rows` x `cols` (the layer computes `x @ W^T`), repacked.
pub struct QuantMatrix {
    data: WeightBuf,
    /// [`QuantMatrix::product`] for the matrix's format, picked when it was repacked.
    product: fn(&QuantMatrix, &[f32], usize, &mut [f32]),
    kernel: Kernel,
    rows: usize,
    cols: usize,
}

/// One block of activations quantised to 8 bits.
#[derive(Clone, Copy)]
pub struct Q8Block {
    /// Scale.
    d: f32,
    /// Scale times the sum of the values (for formats with a minimum).
    s: f32,
    /// Minus the weight format's offset times the sum of the values (for formats stored with
    /// an offset).
    corr: i32,
    /// Values.
    qs: [i8; QK],
}

/// A weight format as the products see it: its repacking, its activation blocks and its group
/// kernel.
trait Scheme {
    /// One quantised block of activations.
    type Act: Copy + Send + Sync;
    /// A zeroed activation block.
    const EMPTY: Self::Act;
    /// Values per block.
    const QK: usize;
    /// Bytes of one block in the GGUF file.
    const BLOCK_BYTES: usize;
    /// Bytes of one repacked group block (eight rows' blocks at one position).
    const GROUP_BYTES: usize;
    /// Repacks `rows` x `blocks` GGUF blocks into `out` (zeroed, `rows / 8 * blocks *
    /// GROUP_BYTES` long).
    fn repack(data: &[u8], rows: usize, blocks: usize, out: &mut [u8]);
    /// Quantises one row of activations.
    fn quantize(row: &[f32], out: &mut [Self::Act]);
    /// See [`Kernel::dot_group`].
    ///
    /// # Safety
    /// As [`Kernel::dot_group`].
    unsafe fn dot<const R: usize>(
        kernel: Kernel,
        w: &[u8],
        x: [&[Self::Act]; R],
        out: *mut f32,
        stride: usize,
    );
}

impl<F: Format> Scheme for F {
    type Act = Q8Block;
    const EMPTY: Q8Block = Q8Block {
        d: 0.0,
        s: 0.0,
        corr: 0,
        qs: [0; QK],
    };
    const QK: usize = QK;
    const BLOCK_BYTES: usize = F::BLOCK_BYTES;
    const GROUP_BYTES: usize = <F as Format>::GROUP_BYTES;
    fn repack(data: &[u8], rows: usize, blocks: usize, out: &mut [u8]) {
        formats::repack::<F>(data, rows, blocks, out)
    }
    fn quantize(row: &[f32], out: &mut [Q8Block]) {
        quantize_row(row, out, F::OFFSET)
    }
    unsafe fn dot<const R: usize>(
        kernel: Kernel,
        w: &[u8],
        x: [&[Q8Block]; R],
        out: *mut f32,
        stride: usize,
    ) {
        kernel.dot_group::<F, R>(w, x, out, stride)
    }
}

/// The K-quant formats' [`Scheme`], through a wrapper so it does not overlap the 32-value one.
struct K<F>(std::marker::PhantomData<F>);

impl<F: KFormat> Scheme for K<F> {
    type Act = Q8KBlock;
    const EMPTY: Q8KBlock = Q8KBlock::EMPTY;
    const QK: usize = QK_K;
    const BLOCK_BYTES: usize = F::BLOCK_BYTES;
    const GROUP_BYTES: usize = F::GROUP_BYTES;
    fn repack(data: &[u8], rows: usize, blocks: usize, out: &mut [u8]) {
        kquants::repack_k::<F>(data, rows, blocks, out)
    }
    fn quantize(row: &[f32], out: &mut [Q8KBlock]) {
        kquants::quantize_row_k(row, out)
    }
    unsafe fn dot<const R: usize>(
        kernel: Kernel,
        w: &[u8],
        x: [&[Q8KBlock]; R],
        out: *mut f32,
        stride: usize,
    ) {
        kquants::dot_group_k::<F, R>(kernel, w, x, out, stride)
    }
}

impl QuantMatrix {
    /// The matrix of a tensor, or `None` for formats these kernels do not run, shapes they do
    /// not take (rows not a multiple of 8, columns not a multiple of the block), or a CPU
    /// without AVX2, FMA and F16C.
    pub fn from_qtensor(t: &QTensor) -> Option<QuantMatrix> {
        Self::with_kernel(t, Kernel::detect()?)
    }

    /// [`QuantMatrix::from_qtensor`] on `kernel`, which must be [`Kernel::available`].
    fn with_kernel(t: &QTensor, kernel: Kernel) -> Option<QuantMatrix> {
        match t.dtype() {
            GgmlDType::Q4_0 => Self::repacked::<formats::Q4_0>(t, kernel),
            GgmlDType::Q4_1 => Self::repacked::<formats::Q4_1>(t, kernel),
            GgmlDType::Q5_0 => Self::repacked::<formats::Q5_0>(t, kernel),
            GgmlDType::Q5_1 => Self::repacked::<formats::Q5_1>(t, kernel),
            GgmlDType::Q8_0 => Self::repacked::<formats::Q8_0>(t, kernel),
            GgmlDType::Q4K => Self::repacked::<K<kquants::Q4K>>(t, kernel),
            GgmlDType::Q5K => Self::repacked::<K<kquants::Q5K>>(t, kernel),
            GgmlDType::Q6K => Self::repacked::<K<kquants::Q6K>>(t, kernel),
            _ => None,
        }
    }

    fn repacked<S: Scheme>(t: &QTensor, kernel: Kernel) -> Option<QuantMatrix> {
        if !kernel.available() {
            return None;
        }
        let (rows, cols) = t.shape().dims2().ok()?;
        if cols % S::QK != 0 || rows % GROUP != 0 {
            return None;
        }
        let raw = t.data().ok()?;
        let blocks = cols / S::QK;
        if raw.len() != rows * blocks * S::BLOCK_BYTES {
            return None;
        }
        let mut data = WeightBuf::zeroed(rows / GROUP * blocks * S::GROUP_BYTES)?;
        S::repack(&raw, rows, blocks, &mut data);
        Some(QuantMatrix {
            data,
            product: Self::product::<S>,
            kernel,
            rows,
            cols,
        })
    }

    /// `x @ W^T` for `x` of shape `(.., cols)`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dims = x.dims().to_vec();
        let k = *dims.last().unwrap_or(&0);
        if k != self.cols {
            candle_core::bail!("matmul: input width {k}, weights {}", self.cols);
        }
        let m = x.elem_count() / k.max(1);
        // The activations as they are stored (no copy when contiguous f32, as they are here).
        let x = x.to_dtype(candle_core::DType::F32)?.contiguous()?;
        let (storage, layout) = x.storage_and_layout();
        let input = match (&*storage, layout.contiguous_offsets()) {
            (Storage::Cpu(CpuStorage::F32(v)), Some((start, end))) => &v[start..end],
            _ => candle_core::bail!("matmul: activations are not contiguous f32 on the CPU"),
        };
        let mut result = vec![0f32; m * self.rows];
        (self.product)(self, input, m, &mut result);
        drop(storage);
        let mut shape = dims;
        if let Some(last) = shape.last_mut() {
            *last = self.rows;
        }
        Tensor::from_vec(result, shape, &Device::Cpu)
    }

    /// Fills `out` (`m` x `rows`) with the products of the `m` activation rows in `input`.
    fn product<S: Scheme>(&self, input: &[f32], m: usize, out: &mut [f32]) {
        let n = self.rows;
        let bpr = self.cols / S::QK;
        let mut q8 = vec![S::EMPTY; m * bpr];
        for (row, blocks) in input.chunks_exact(self.cols).zip(q8.chunks_exact_mut(bpr)) {
            S::quantize(row, blocks);
        }
        let group_bytes = bpr * S::GROUP_BYTES;
        let groups = n / GROUP;
        let out = OutPtr(out.as_mut_ptr());
        let q8 = &q8;
        let act = |i: usize| &q8[i * bpr..][..bpr];
        let tasks = groups.div_ceil(GROUPS_PER_TASK);
        let run = |tiles: std::ops::Range<usize>| {
            let out = &out;
            for tile in tiles {
                let mine = tile * GROUPS_PER_TASK..((tile + 1) * GROUPS_PER_TASK).min(groups);
                let mut i = 0;
                while i < m {
                    let rows = (m - i).min(ROW_GROUP);
                    for g in mine.clone() {
                        let w = &self.data[g * group_bytes..][..group_bytes];
                        // SAFETY: the kernel was checked when the matrix was built, `w` holds
                        // `bpr` group blocks of `S`; each task writes only its own groups'
                        // eight columns of rows `i..i + rows`, inside `out`.
                        unsafe {
                            let at = out.0.add(i * n + g * GROUP);
                            if rows == ROW_GROUP {
                                let x = [act(i), act(i + 1), act(i + 2), act(i + 3)];
                                S::dot::<ROW_GROUP>(self.kernel, w, x, at, n);
                            } else {
                                for j in 0..rows {
                                    let x = [act(i + j)];
                                    S::dot::<1>(self.kernel, w, x, at.add(j * n), n);
                                }
                            }
                        }
                    }
                    i += rows;
                }
            }
        };
        if m * self.data.len() < INLINE_BYTES {
            // Too little work to pay for waking the other threads.
            run(0..tasks);
        } else {
            // candle's spin-then-park pool, the caller included: no hand-off per product.
            candle_core::utils::barrier_pool().execute_chunked(tasks, run);
        }
    }
}

/// The output buffer, shared by the pool's threads, which write disjoint cells.
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint cells and the buffer outlives `execute_chunked`.
unsafe impl Sync for OutPtr {}
unsafe impl Send for OutPtr {}

/// The scale `d` that maps the largest magnitude of `xs` (a multiple of 8 long) to 127, and its
/// inverse (0 for an all-zero block).
fn scale_8bit(xs: &[f32]) -> (f32, f32) {
    // Eight running maxima (which the compiler keeps in one vector) instead of one chain.
    let mut lanes = [0f32; 8];
    for eight in xs.chunks_exact(8) {
        for (l, v) in lanes.iter_mut().zip(eight) {
            *l = l.max(v.abs());
        }
    }
    let amax = lanes.iter().fold(0f32, |a, &v| a.max(v));
    let d = amax / 127.0;
    (d, if d > 0.0 { 1.0 / d } else { 0.0 })
}

/// Quantises one row of activations to 8-bit blocks (as ggml's `quantize_row_q8_1`), for
/// weights stored with `offset`.
fn quantize_row(x: &[f32], out: &mut [Q8Block], offset: i32) {
    for (xs, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let (d, inv) = scale_8bit(xs);
        let mut sum = 0i32;
        for (q, v) in b.qs.iter_mut().zip(xs) {
            let r = (v * inv).round() as i32;
            *q = r as i8;
            sum += r;
        }
        b.d = d;
        b.s = d * sum as f32;
        b.corr = -offset * sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(rows: usize, cols: usize, seed: usize) -> Tensor {
        let v: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * seed % 1000) as f32 / 500.0) - 1.0)
            .collect();
        Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap()
    }

    /// Each format's product, on every kernel this CPU has, against the exact product of the
    /// same quantised weights, for a single activation row, a group of four with a remainder,
    /// and a prompt-sized block; two K-quant super-blocks per row.
    #[test]
    fn matches_the_exact_product_of_the_quantised_weights() {
        let kernels: Vec<Kernel> = Kernel::ALL
            .into_iter()
            .filter(|k| {
                if !k.available() {
                    crate::cpu::note(format_args!(
                        "the {} block kernel is not tested here: this CPU lacks it",
                        k.name()
                    ));
                }
                k.available()
            })
            .collect();
        let (n, k) = (72, 512);
        let w = tensor(n, k, 7919);
        for dtype in [
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q5_0,
            GgmlDType::Q5_1,
            GgmlDType::Q8_0,
            GgmlDType::Q4K,
            GgmlDType::Q5K,
            GgmlDType::Q6K,
        ] {
            let q = QTensor::quantize(&w, dtype).unwrap();
            let dense = q.dequantize(&Device::Cpu).unwrap();
            for (kernel, m) in kernels
                .iter()
                .flat_map(|&k| [1usize, 7, 72].map(|m| (k, m)))
            {
                let ours = QuantMatrix::with_kernel(&q, kernel).expect("supported format");
                let x = tensor(m, k, 104729).reshape((1, m, k)).unwrap();
                let values =
                    |t: Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };
                let a = values(ours.forward(&x).unwrap());
                let b = values(x.broadcast_matmul(&dense.t().unwrap()).unwrap());
                assert_eq!(a.len(), m * n);
                let scale = b.iter().fold(0f32, |s, v| s.max(v.abs()));
                for (x, y) in a.iter().zip(&b) {
                    // 8-bit activations: about 0.4% of the largest output.
                    assert!(
                        (x - y).abs() <= 1e-2 * scale.max(1.0),
                        "{dtype:?} on {kernel:?}: {x} vs {y} (m={m})"
                    );
                }
            }
        }
    }

    /// Matrices these kernels cannot run are left to candle's.
    #[test]
    fn declines_other_formats_and_shapes() {
        let q = |rows, dtype| QTensor::quantize(&tensor(rows, 256, 31), dtype).unwrap();
        assert!(QuantMatrix::from_qtensor(&q(12, GgmlDType::Q5_0)).is_none());
        assert!(QuantMatrix::from_qtensor(&q(12, GgmlDType::Q4K)).is_none());
        assert!(QuantMatrix::from_qtensor(&q(16, GgmlDType::Q2K)).is_none());
        let supported = QuantMatrix::from_qtensor(&q(16, GgmlDType::Q5_0)).is_some();
        assert_eq!(supported, Kernel::detect().is_some());
    }

    /// Each tier maps to a kernel of its own instructions (or candle's for `scalar`).
    #[test]
    fn tiers_pick_kernels_they_can_run() {
        use crate::cpu::KernelPath;
        assert_eq!(Kernel::for_path(KernelPath::Scalar), None);
        if let Some(k) = Kernel::for_path(KernelPath::Avx2) {
            assert!(k.available() && k != Kernel::Avx512Vnni, "{k:?}");
        }
        for p in KernelPath::ALL {
            assert!(Kernel::for_path(p).is_none_or(Kernel::available));
        }
    }
}
