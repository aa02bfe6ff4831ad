//! `y = x · W + b` for the encoder's dense layers. The weights are packed once, at load, into
//! panels of 32 columns (each `k x 32`, row after row), so the AVX-512 kernel streams them with
//! plain loads while 8 rows of `x` are broadcast against them into 16 vector accumulators.
//! Machines without AVX-512 use the `gemm` crate on the unpacked weights. [`packed_product`] is
//! the same kernel for operands packed per call (attention).

use gemm::Parallelism;

/// Columns of one packed panel (two 16-lane vectors).
pub const NR: usize = 32;
/// Rows of `x` per kernel call.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const MR: usize = 8;
/// Rows of `x` per cache block.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const ROW_BLOCK: usize = 96;

/// A dense layer's weight `[k, n]` and bias `[n]`, packed for [`Dense::forward`].
pub struct Dense {
    pub k: usize,
    pub n: usize,
    /// Row-major `[k, n]`, for the portable path.
    w: Vec<f32>,
    /// `n / 32` panels of `k x 32`; empty when the fast kernel does not apply.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    panels: Vec<f32>,
    bias: Vec<f32>,
}

fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

impl Dense {
    /// From a row-major `[k, n]` weight and its bias.
    pub fn new(w: Vec<f32>, bias: Vec<f32>, k: usize, n: usize) -> Dense {
        Self::with_kernel(w, bias, k, n, has_avx512())
    }

    fn with_kernel(w: Vec<f32>, bias: Vec<f32>, k: usize, n: usize, avx512: bool) -> Dense {
        let panels = if avx512 && n.is_multiple_of(NR) {
            let mut p = Vec::with_capacity(k * n);
            for j in (0..n).step_by(NR) {
                for row in w.chunks_exact(n).take(k) {
                    p.extend_from_slice(&row[j..j + NR]);
                }
            }
            p
        } else {
            vec![]
        };
        Dense {
            k,
            n,
            w,
            panels,
            bias,
        }
    }

    /// `out[rows, n] = x[rows, k] · W + b`, on up to `threads` threads.
    pub fn forward(&self, x: &[f32], rows: usize, out: &mut [f32], threads: usize) {
        let (k, n) = (self.k, self.n);
        debug_assert!(x.len() >= rows * k && out.len() >= rows * n);
        if rows == 0 {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if !self.panels.is_empty() {
            let panels = n / NR;
            let groups = threads.clamp(1, panels);
            let out_ptr = SendPtr(out.as_mut_ptr());
            let run = |g: usize| {
                let (from, to) = (g * panels / groups, (g + 1) * panels / groups);
                // SAFETY: AVX-512 was detected when the panels were packed; each group writes
                // only its own columns of `out`.
                unsafe { self.panels_avx512(x, rows, out_ptr, from, to) }
            };
            if groups > 1 && rows * n * k >= 1 << 18 {
                rayon::scope(|s| {
                    for g in 1..groups {
                        let run = &run;
                        s.spawn(move |_| run(g));
                    }
                    run(0);
                });
            } else {
                (0..groups).for_each(run);
            }
            return;
        }
        for r in out.chunks_exact_mut(n).take(rows) {
            r.copy_from_slice(&self.bias);
        }
        let par = if threads > 1 && rows * n * k >= 1 << 18 {
            Parallelism::Rayon(threads)
        } else {
            Parallelism::None
        };
        // SAFETY: x is rows x k, w is k x n, out is rows x n, all row-major.
        unsafe {
            gemm::gemm(
                rows,
                n,
                k,
                out.as_mut_ptr(),
                1,
                n as isize,
                true,
                x.as_ptr(),
                1,
                k as isize,
                self.w.as_ptr(),
                1,
                n as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                par,
            );
        }
    }

    /// Panels `from..to` for all rows.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn panels_avx512(&self, x: &[f32], rows: usize, out: SendPtr, from: usize, to: usize) {
        let (k, n) = (self.k, self.n);
        for r0 in (0..rows).step_by(ROW_BLOCK) {
            let r1 = (r0 + ROW_BLOCK).min(rows);
            packed_product(
                x.as_ptr().add(r0 * k),
                r1 - r0,
                k,
                k,
                &self.panels[from * k * NR..to * k * NR],
                Some(&self.bias[from * NR..to * NR]),
                out.0.add(r0 * n + from * NR),
                n,
            );
        }
    }
}

/// Whether [`packed_product`] can run here.
pub fn avx512() -> bool {
    has_avx512()
}

/// Packs a row-major `[k, n]` matrix (rows `ld` apart, `n` a multiple of 32) into panels.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub fn pack(m: &[f32], k: usize, n: usize, ld: usize, out: &mut Vec<f32>) {
    out.clear();
    for j in (0..n).step_by(NR) {
        for row in 0..k {
            out.extend_from_slice(&m[row * ld + j..row * ld + j + NR]);
        }
    }
}

/// `c[rows, 32 * panels] = a[rows, k] · P (+ bias)`, with `P` packed by [`pack`] (`k x 32` per
/// panel), rows of `a` `lda` apart and rows of `c` `ldc` apart.
///
/// # Safety
/// AVX-512 must be available ([`avx512`]); `a` must address `rows` rows of `k` values and `c`
/// `rows` rows of `32 * panels` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn packed_product(
    a: *const f32,
    rows: usize,
    lda: usize,
    k: usize,
    panels: &[f32],
    bias: Option<&[f32]>,
    c: *mut f32,
    ldc: usize,
) {
    let n_panels = panels.len() / (k * NR).max(1);
    let full = rows / MR * MR;
    // The last rows (fewer than 8) go through a zero-padded copy.
    let mut tail = vec![];
    if full < rows {
        tail = vec![0.0f32; MR * k];
        for (i, dst) in tail.chunks_exact_mut(k).take(rows - full).enumerate() {
            std::ptr::copy_nonoverlapping(a.add((full + i) * lda), dst.as_mut_ptr(), k);
        }
    }
    for p in 0..n_panels {
        let panel = panels.as_ptr().add(p * k * NR);
        let b = bias.map_or(std::ptr::null(), |b| b.as_ptr().add(p * NR));
        for r in (0..full).step_by(MR) {
            kernel(
                a.add(r * lda),
                lda,
                k,
                panel,
                b,
                c.add(r * ldc + p * NR),
                ldc,
            );
        }
        if full < rows {
            let mut out = [0.0f32; MR * NR];
            kernel(tail.as_ptr(), k, k, panel, b, out.as_mut_ptr(), NR);
            for i in 0..rows - full {
                std::ptr::copy_nonoverlapping(
                    out.as_ptr().add(i * NR),
                    c.add((full + i) * ldc + p * NR),
                    NR,
                );
            }
        }
    }
}

#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct SendPtr(*mut f32);
// SAFETY: hands disjoint column ranges of one output buffer to parallel tasks.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// `c[8, 32] = a[8, k] · panel[k, 32] + bias` (no bias when null), rows of `a` `lda` apart,
/// rows of `c` `ldc` apart. Written out register by register (16 accumulators): with 12 rows
/// (24 accumulators) the release build unrolled the loop and spilled them to the stack.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline(never)]
unsafe fn kernel(
    a: *const f32,
    lda: usize,
    k: usize,
    panel: *const f32,
    bias: *const f32,
    c: *mut f32,
    ldc: usize,
) {
    use std::arch::x86_64::*;
    let (b0, b1) = if bias.is_null() {
        (_mm512_setzero_ps(), _mm512_setzero_ps())
    } else {
        (_mm512_loadu_ps(bias), _mm512_loadu_ps(bias.add(16)))
    };
    let (mut l0, mut l1, mut l2, mut l3) = (b0, b0, b0, b0);
    let (mut l4, mut l5, mut l6, mut l7) = (b0, b0, b0, b0);
    let (mut h0, mut h1, mut h2, mut h3) = (b1, b1, b1, b1);
    let (mut h4, mut h5, mut h6, mut h7) = (b1, b1, b1, b1);
    let rows: [*const f32; MR] = std::array::from_fn(|r| a.add(r * lda));
    let mut w = panel;
    for p in 0..k {
        let w0 = _mm512_loadu_ps(w);
        let w1 = _mm512_loadu_ps(w.add(16));
        w = w.add(NR);
        macro_rules! row {
            ($r:expr, $lo:ident, $hi:ident) => {
                let av = _mm512_set1_ps(*rows[$r].add(p));
                $lo = _mm512_fmadd_ps(av, w0, $lo);
                $hi = _mm512_fmadd_ps(av, w1, $hi);
            };
        }
        row!(0, l0, h0);
        row!(1, l1, h1);
        row!(2, l2, h2);
        row!(3, l3, h3);
        row!(4, l4, h4);
        row!(5, l5, h5);
        row!(6, l6, h6);
        row!(7, l7, h7);
    }
    let out = [
        (l0, h0),
        (l1, h1),
        (l2, h2),
        (l3, h3),
        (l4, h4),
        (l5, h5),
        (l6, h6),
        (l7, h7),
    ];
    for (r, (lo, hi)) in out.into_iter().enumerate() {
        _mm512_storeu_ps(c.add(r * ldc), lo);
        _mm512_storeu_ps(c.add(r * ldc + 16), hi);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_kernel_matches_a_plain_loop() {
        for (rows, k, n) in [(1, 8, 32), (13, 40, 64), (30, 384, 96), (7, 5, 48)] {
            let w: Vec<f32> = (0..k * n)
                .map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5)
                .collect();
            let b: Vec<f32> = (0..n).map(|i| i as f32 / 10.0).collect();
            let x: Vec<f32> = (0..rows * k)
                .map(|i| ((i * 104_729) % 89) as f32 / 89.0 - 0.5)
                .collect();
            let fast = Dense::new(w.clone(), b.clone(), k, n);
            let portable = Dense::with_kernel(w.clone(), b.clone(), k, n, false);
            for (d, threads) in [(&fast, 1), (&fast, 2), (&portable, 1), (&portable, 2)] {
                let mut out = vec![0.0; rows * n];
                d.forward(&x, rows, &mut out, threads);
                for r in 0..rows {
                    for j in 0..n {
                        let want: f32 =
                            b[j] + (0..k).map(|p| x[r * k + p] * w[p * n + j]).sum::<f32>();
                        let got = out[r * n + j];
                        assert!(
                            (got - want).abs() < 1e-3,
                            "({rows},{k},{n}) [{r},{j}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
