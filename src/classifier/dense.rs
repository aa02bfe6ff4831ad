//! `y = x · W + b` for the encoder's dense layers, and the same product for attention's
//! operands ([`packed_product`]). The weights are packed once, at load, into panels of 32
//! columns (each `k x 32`, row after row; the last panel padded with zero columns), so a kernel
//! streams them with plain loads while a few rows of `x` are broadcast against them into
//! vector accumulators. Three kernels, picked per layer from the process's
//! [`KernelPath`](crate::cpu::KernelPath):
//! - `avx512`: 8 rows x 32 columns, 16 ZMM accumulators;
//! - `avx2`: 6 rows x 16 columns (twice per panel), 12 YMM accumulators, which with the two
//!   weight vectors and the broadcast fits the 16 YMM registers (the shape of BLIS's Haswell
//!   kernel);
//! - `scalar`: 4 rows x 32 columns in plain Rust, vectorised only by the build's baseline.

use crate::cpu::KernelPath;
use std::cell::RefCell;

/// Columns of one packed panel.
pub const NR: usize = 32;
/// Most rows any kernel takes per call.
const MAX_MR: usize = 8;
/// Rows of `x` per cache block.
const ROW_BLOCK: usize = 96;
/// Multiply-adds below which a product runs on one thread (waking another costs more).
const PARALLEL_WORK: usize = 1 << 18;

/// A dense layer's weight `[k, n]` and bias `[n]`, packed for [`Dense::forward`].
pub struct Dense {
    k: usize,
    n: usize,
    path: KernelPath,
    /// `ceil(n / 32)` panels of `k x 32`.
    panels: Vec<f32>,
    /// The bias, zero-padded to the panels' width.
    bias: Vec<f32>,
}

impl Dense {
    /// From a row-major `[k, n]` weight and its bias, on the kernels of `path` (the process's
    /// is [`crate::cpu::chosen`]).
    ///
    /// Panics when `w` is not `k * n` values, `bias` not `n`, `n` is 0, or this CPU cannot run
    /// `path` (the loader checks all of these first: they are invariants, not input errors).
    pub fn with_path(w: Vec<f32>, bias: Vec<f32>, k: usize, n: usize, path: KernelPath) -> Dense {
        assert!(
            n > 0,
            "Dense::with_path: a layer needs at least one output column"
        );
        assert_eq!(
            Some(w.len()),
            k.checked_mul(n),
            "Dense::with_path: the weight has {} values, [{k}, {n}] needs k * n",
            w.len()
        );
        assert_eq!(
            bias.len(),
            n,
            "Dense::with_path: the bias has {} values, {n} needed",
            bias.len()
        );
        assert!(
            path.supported(),
            "Dense::with_path: this CPU cannot run the {path} kernels"
        );
        let mut panels = Vec::new();
        pack(&w, k, n, n, &mut panels);
        let mut padded = bias;
        padded.resize(n.div_ceil(NR) * NR, 0.0);
        Dense {
            k,
            n,
            path,
            panels,
            bias: padded,
        }
    }

    /// Output width.
    pub fn n(&self) -> usize {
        self.n
    }

    /// `out[rows, n] = x[rows, k] · W + b`, on up to `threads` threads.
    ///
    /// Panics when `x` holds fewer than `rows * k` values or `out` fewer than `rows * n`.
    pub fn forward(&self, x: &[f32], rows: usize, out: &mut [f32], threads: usize) {
        let (k, n) = (self.k, self.n);
        let need_x = rows
            .checked_mul(k)
            .expect("Dense::forward: rows * k overflows");
        let need_out = rows
            .checked_mul(n)
            .expect("Dense::forward: rows * n overflows");
        assert!(
            x.len() >= need_x && out.len() >= need_out,
            "Dense::forward: x has {} values and out {}, [{rows}, {k}] and [{rows}, {n}] needed",
            x.len(),
            out.len()
        );
        if rows == 0 {
            return;
        }
        let panels = n.div_ceil(NR);
        let groups = threads.clamp(1, panels);
        let out_ptr = SendPtr(out.as_mut_ptr());
        let run = |g: usize| {
            // The whole pointer, not its field (a closure would capture the bare `*mut f32`).
            let out = out_ptr;
            let (from, to) = (g * panels / groups, (g + 1) * panels / groups);
            let cols = (to * NR).min(n) - from * NR;
            for r0 in (0..rows).step_by(ROW_BLOCK) {
                let r1 = (r0 + ROW_BLOCK).min(rows);
                // SAFETY: the path was checked at load; x holds rows x k and out rows x n
                // (asserted above); the group's panels and bias cover its `cols` columns; each
                // group writes only its own columns of `out`.
                unsafe {
                    packed_product(
                        self.path,
                        x.as_ptr().add(r0 * k),
                        r1 - r0,
                        k,
                        k,
                        &self.panels[from * k * NR..to * k * NR],
                        Some(&self.bias[from * NR..to * NR]),
                        out.0.add(r0 * n + from * NR),
                        n,
                        cols,
                    )
                }
            }
        };
        if groups > 1 && rows * n * k >= PARALLEL_WORK {
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
    }
}

/// Packs a row-major `[k, n]` matrix (rows `ld` apart) into `ceil(n / 32)` panels of `k x 32`,
/// the last one padded with zero columns.
pub fn pack(m: &[f32], k: usize, n: usize, ld: usize, out: &mut Vec<f32>) {
    out.clear();
    out.reserve(n.div_ceil(NR) * k * NR);
    for j in (0..n).step_by(NR) {
        let cols = (n - j).min(NR);
        for row in 0..k {
            out.extend_from_slice(&m[row * ld + j..row * ld + j + cols]);
            out.extend(std::iter::repeat_n(0.0, NR - cols));
        }
    }
}

/// `c[rows, n] = a[rows, k] · P (+ bias)`, with `P` packed by [`pack`] (`ceil(n / 32)` panels of
/// `k x 32`), rows of `a` `lda` apart and rows of `c` `ldc` apart, on the kernels of `path`.
///
/// Panics when `panels` (or `bias`) is shorter than `ceil(n / 32)` panels (or `* 32` values).
///
/// # Safety
/// `path` must be supported by this CPU ([`KernelPath::supported`]); `a` must address `rows`
/// rows of `k` values `lda` apart, and `c` `rows` rows of `n` values `ldc` apart.
#[allow(clippy::too_many_arguments)]
pub unsafe fn packed_product(
    path: KernelPath,
    a: *const f32,
    rows: usize,
    lda: usize,
    k: usize,
    panels: &[f32],
    bias: Option<&[f32]>,
    c: *mut f32,
    ldc: usize,
    n: usize,
) {
    let width = n.div_ceil(NR);
    assert!(
        panels.len() >= width * k * NR,
        "packed_product: too few panels"
    );
    assert!(
        bias.is_none_or(|b| b.len() >= width * NR),
        "packed_product: short bias"
    );
    debug_assert!(path.supported());
    let args = Operands {
        a,
        rows,
        lda,
        k,
        panels: panels.as_ptr(),
        bias: bias.map_or(std::ptr::null(), |b| b.as_ptr()),
        c,
        ldc,
        n,
    };
    match path {
        #[cfg(target_arch = "x86_64")]
        KernelPath::Avx512 => product_avx512(&args),
        #[cfg(target_arch = "x86_64")]
        KernelPath::Avx2 => product_avx2(&args),
        _ => product_with::<Scalar>(&args),
    }
}

/// The operands of one [`packed_product`].
struct Operands {
    a: *const f32,
    rows: usize,
    lda: usize,
    k: usize,
    panels: *const f32,
    bias: *const f32,
    c: *mut f32,
    ldc: usize,
    n: usize,
}

/// A register-blocked kernel: `c[MR, 32] = a[MR, k] · panel[k, 32] + bias` (no bias when null),
/// rows of `a` `lda` apart, rows of `c` `ldc` apart.
trait Tile {
    const MR: usize;
    unsafe fn tile(
        a: *const f32,
        lda: usize,
        k: usize,
        panel: *const f32,
        bias: *const f32,
        c: *mut f32,
        ldc: usize,
    );
}

thread_local! {
    /// The last rows of `a` (fewer than a kernel's) copied and zero-padded, per thread, so a
    /// product allocates nothing once warm.
    static TAIL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn product_avx512(o: &Operands) {
    product_with::<Avx512>(o)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn product_avx2(o: &Operands) {
    product_with::<Avx2>(o)
}

/// The product, tile by tile: full tiles straight into `c`; a panel narrower than 32 columns and
/// the last rows through a scratch tile.
#[inline(always)]
unsafe fn product_with<T: Tile>(o: &Operands) {
    let (k, mr) = (o.k, T::MR);
    let full = o.rows / mr * mr;
    let tail_rows = o.rows - full;
    TAIL.with(|cell| {
        let mut tail = cell.borrow_mut();
        if tail_rows > 0 {
            tail.clear();
            tail.resize(mr * k, 0.0);
            for (i, dst) in tail.chunks_exact_mut(k.max(1)).take(tail_rows).enumerate() {
                std::ptr::copy_nonoverlapping(o.a.add((full + i) * o.lda), dst.as_mut_ptr(), k);
            }
        }
        let mut scratch = [0.0f32; MAX_MR * NR];
        for p in 0..o.n.div_ceil(NR) {
            let cols = (o.n - p * NR).min(NR);
            let panel = o.panels.add(p * k * NR);
            let b = if o.bias.is_null() {
                o.bias
            } else {
                o.bias.add(p * NR)
            };
            for r in (0..full).step_by(mr) {
                let a = o.a.add(r * o.lda);
                let c = o.c.add(r * o.ldc + p * NR);
                if cols == NR {
                    T::tile(a, o.lda, k, panel, b, c, o.ldc);
                } else {
                    T::tile(a, o.lda, k, panel, b, scratch.as_mut_ptr(), NR);
                    for i in 0..mr {
                        std::ptr::copy_nonoverlapping(
                            scratch.as_ptr().add(i * NR),
                            c.add(i * o.ldc),
                            cols,
                        );
                    }
                }
            }
            if tail_rows > 0 {
                T::tile(tail.as_ptr(), k, k, panel, b, scratch.as_mut_ptr(), NR);
                for i in 0..tail_rows {
                    std::ptr::copy_nonoverlapping(
                        scratch.as_ptr().add(i * NR),
                        o.c.add((full + i) * o.ldc + p * NR),
                        cols,
                    );
                }
            }
        }
    });
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: hands disjoint column ranges of one output buffer to parallel tasks.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// The AVX-512 kernel: 8 rows x 32 columns. Written out register by register (16
/// accumulators): with 12 rows (24 accumulators) the release build unrolled the loop and spilled
/// them to the stack.
#[cfg(target_arch = "x86_64")]
struct Avx512;

#[cfg(target_arch = "x86_64")]
impl Tile for Avx512 {
    const MR: usize = 8;
    #[inline(always)]
    unsafe fn tile(
        a: *const f32,
        lda: usize,
        k: usize,
        panel: *const f32,
        bias: *const f32,
        c: *mut f32,
        ldc: usize,
    ) {
        tile_avx512(a, lda, k, panel, bias, c, ldc)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline(never)]
unsafe fn tile_avx512(
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
    let rows: [*const f32; 8] = std::array::from_fn(|r| a.add(r * lda));
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

/// The AVX2 kernel: 6 rows x 32 columns as two 6 x 16 halves.
#[cfg(target_arch = "x86_64")]
struct Avx2;

#[cfg(target_arch = "x86_64")]
impl Tile for Avx2 {
    const MR: usize = 6;
    #[inline(always)]
    unsafe fn tile(
        a: *const f32,
        lda: usize,
        k: usize,
        panel: *const f32,
        bias: *const f32,
        c: *mut f32,
        ldc: usize,
    ) {
        let half_bias = |h: usize| if bias.is_null() { bias } else { bias.add(h) };
        half_avx2(a, lda, k, panel, half_bias(0), c, ldc);
        half_avx2(a, lda, k, panel.add(16), half_bias(16), c.add(16), ldc);
    }
}

/// `c[6, 16] = a[6, k] · panel[k, 16 of 32] + bias`: 12 YMM accumulators, two weight vectors and
/// one broadcast, so nothing spills.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline(never)]
unsafe fn half_avx2(
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
        (_mm256_setzero_ps(), _mm256_setzero_ps())
    } else {
        (_mm256_loadu_ps(bias), _mm256_loadu_ps(bias.add(8)))
    };
    let (mut l0, mut l1, mut l2, mut l3, mut l4, mut l5) = (b0, b0, b0, b0, b0, b0);
    let (mut h0, mut h1, mut h2, mut h3, mut h4, mut h5) = (b1, b1, b1, b1, b1, b1);
    let rows: [*const f32; 6] = std::array::from_fn(|r| a.add(r * lda));
    let mut w = panel;
    for p in 0..k {
        let w0 = _mm256_loadu_ps(w);
        let w1 = _mm256_loadu_ps(w.add(8));
        w = w.add(NR);
        macro_rules! row {
            ($r:expr, $lo:ident, $hi:ident) => {
                let av = _mm256_broadcast_ss(&*rows[$r].add(p));
                $lo = _mm256_fmadd_ps(av, w0, $lo);
                $hi = _mm256_fmadd_ps(av, w1, $hi);
            };
        }
        row!(0, l0, h0);
        row!(1, l1, h1);
        row!(2, l2, h2);
        row!(3, l3, h3);
        row!(4, l4, h4);
        row!(5, l5, h5);
    }
    let out = [(l0, h0), (l1, h1), (l2, h2), (l3, h3), (l4, h4), (l5, h5)];
    for (r, (lo, hi)) in out.into_iter().enumerate() {
        _mm256_storeu_ps(c.add(r * ldc), lo);
        _mm256_storeu_ps(c.add(r * ldc + 8), hi);
    }
}

/// The portable kernel: 4 rows x 32 columns in plain Rust.
struct Scalar;

impl Tile for Scalar {
    const MR: usize = 4;
    #[inline(always)]
    unsafe fn tile(
        a: *const f32,
        lda: usize,
        k: usize,
        panel: *const f32,
        bias: *const f32,
        c: *mut f32,
        ldc: usize,
    ) {
        let start: [f32; NR] = if bias.is_null() {
            [0.0; NR]
        } else {
            std::array::from_fn(|j| *bias.add(j))
        };
        let mut acc = [start; 4];
        for p in 0..k {
            let w = std::slice::from_raw_parts(panel.add(p * NR), NR);
            for (r, row) in acc.iter_mut().enumerate() {
                let av = *a.add(r * lda + p);
                for (o, wv) in row.iter_mut().zip(w) {
                    *o += av * wv;
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            std::ptr::copy_nonoverlapping(row.as_ptr(), c.add(r * ldc), NR);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(x: &[f32], w: &[f32], b: &[f32], rows: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0.0; rows * n];
        for r in 0..rows {
            for j in 0..n {
                out[r * n + j] = b[j] + (0..k).map(|p| x[r * k + p] * w[p * n + j]).sum::<f32>();
            }
        }
        out
    }

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * seed) % 97) as f32 / 97.0 - 0.5)
            .collect()
    }

    #[test]
    fn every_kernel_path_matches_a_plain_loop() {
        // Tails of every kernel's rows (8, 6, 4), row blocks (> 96), narrow panels (n not a
        // multiple of 32), and a product big enough to run on two threads.
        let shapes = [
            (1, 8, 32),
            (5, 40, 64),
            (7, 5, 48),
            (9, 384, 96),
            (13, 40, 40),
            (100, 64, 33),
            (30, 384, 1536),
        ];
        crate::cpu::for_each_supported_path(|path| {
            for (rows, k, n) in shapes {
                let w = values(k * n, 7919);
                let b: Vec<f32> = (0..n).map(|i| i as f32 / 10.0).collect();
                let x = values(rows * k, 104_729);
                let want = plain(&x, &w, &b, rows, k, n);
                let d = Dense::with_path(w, b, k, n, path);
                for threads in [1, 2] {
                    // Longer buffers than needed: only the first rows x n change.
                    let mut out = vec![f32::NAN; rows * n + 3];
                    d.forward(&x, rows, &mut out, threads);
                    for (i, (got, want)) in out.iter().zip(&want).enumerate() {
                        assert!(
                            (got - want).abs() < 1e-3,
                            "{path} ({rows},{k},{n}) [{i}]: {got} vs {want}"
                        );
                    }
                    assert!(
                        out[rows * n..].iter().all(|v| v.is_nan()),
                        "{path}: wrote past n"
                    );
                }
            }
        });
    }

    #[test]
    fn packed_product_reads_and_writes_strided_operands() {
        // Attention's shapes: a is a slice of a wider matrix, c rows are wider than n.
        let (rows, k, n, lda, ldc) = (11, 32, 45, 96, 64);
        let a = values(rows * lda, 31);
        let m = values(k * n, 17);
        let mut panels = vec![];
        pack(&m, k, n, n, &mut panels);
        let dense_a: Vec<f32> = (0..rows)
            .flat_map(|r| a[r * lda..r * lda + k].to_vec())
            .collect();
        let want = plain(&dense_a, &m, &vec![0.0; n], rows, k, n);
        crate::cpu::for_each_supported_path(|path| {
            let mut c = vec![f32::NAN; rows * ldc];
            unsafe {
                packed_product(
                    path,
                    a.as_ptr(),
                    rows,
                    lda,
                    k,
                    &panels,
                    None,
                    c.as_mut_ptr(),
                    ldc,
                    n,
                )
            };
            for r in 0..rows {
                for j in 0..ldc {
                    let got = c[r * ldc + j];
                    if j < n {
                        assert!((got - want[r * n + j]).abs() < 1e-3, "{path} [{r},{j}]");
                    } else {
                        assert!(got.is_nan(), "{path}: wrote column {j} of row {r}");
                    }
                }
            }
        });
    }

    #[test]
    #[should_panic(expected = "Dense::forward: x has 10 values")]
    fn a_short_input_is_refused_not_read_past() {
        let d = Dense::with_path(vec![0.0; 4 * 32], vec![0.0; 32], 4, 32, KernelPath::Scalar);
        let mut out = vec![0.0; 3 * 32];
        d.forward(&[0.0; 10], 3, &mut out, 1);
    }

    #[test]
    #[should_panic(expected = "Dense::with_path: the weight has 100 values")]
    fn a_weight_of_the_wrong_size_is_refused() {
        Dense::with_path(vec![0.0; 100], vec![0.0; 32], 4, 32, KernelPath::Scalar);
    }
}
