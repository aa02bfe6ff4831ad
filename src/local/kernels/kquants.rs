//! The 256-value "K-quant" formats (Q4_K, Q5_K, Q6_K), repacked eight rows at a time, and their
//! product.
//!
//! A K-quant super-block holds 256 values of one row in sub-blocks, each with its own small
//! integer scale (and, for Q4_K/Q5_K, minimum), under one f16 scale `d` (and `dmin`)
//! (ggml's `block_q4_K`, `block_q5_K`, `block_q6_K`):
//! - Q4_K, Q5_K: eight sub-blocks of 32; weight `d * sc * u - dmin * m`, `sc` and `m` 6-bit,
//!   `u` 4- or 5-bit.
//! - Q6_K: sixteen sub-blocks of 16; weight `d * sc * (u - 32)`, `sc` a signed byte, `u` 6-bit.
//!
//! At load, the super-blocks of eight consecutive rows are interleaved as the 32-value formats are
//! (see [`super::formats`]): each 32-value chunk is eight vectors holding four values of each of
//! the eight rows, so one `u8 x i8` dot instruction advances eight rows. The activations are
//! quantised to 8 bits per 256 values with sums per 16 (ggml's `block_q8_K`), so that a whole
//! super-block is summed in integers: the sub-block scales multiply the 32-bit dot sums, the
//! minima multiply the activation sums, and one float multiply-add per super-block and row
//! remains (the arithmetic of ggml's `ggml_vec_dot_q4_K_q8_K`).

use super::formats::{unpack_bits, Avx2, Avx512Vnni, AvxVnni, Isa, GROUP};
use super::Kernel;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Values per super-block.
pub const QK_K: usize = 256;

/// 256 activations quantised to 8 bits (ggml's `block_q8_K`).
#[derive(Clone, Copy)]
pub struct Q8KBlock {
    /// Scale.
    pub d: f32,
    /// Sums of each 16 values.
    pub sums: [i32; 16],
    /// Values.
    pub qs: [i8; QK_K],
}

impl Q8KBlock {
    pub const EMPTY: Q8KBlock = Q8KBlock {
        d: 0.0,
        sums: [0; 16],
        qs: [0; QK_K],
    };
}

/// Quantises one row of activations (a multiple of 256 long) to [`Q8KBlock`]s.
pub fn quantize_row_k(x: &[f32], out: &mut [Q8KBlock]) {
    for (xs, b) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        let (d, inv) = super::scale_8bit(xs);
        for ((qs, vs), sum) in
            b.qs.chunks_exact_mut(16)
                .zip(xs.chunks_exact(16))
                .zip(&mut b.sums)
        {
            let mut s = 0i32;
            for (q, v) in qs.iter_mut().zip(vs) {
                let r = (v * inv).round() as i32;
                *q = r as i8;
                s += r;
            }
            *sum = s;
        }
        b.d = d;
    }
}

/// A K-quant format of weights.
pub trait KFormat {
    /// Bytes of one super-block in the GGUF file.
    const BLOCK_BYTES: usize;
    /// Bits per unpacked value: 4, 5 or 6.
    const BITS: u32;
    /// Bytes of one repacked 32-value chunk of eight rows.
    const CHUNK_BYTES: usize = 128
        + match Self::BITS {
            5 => 32,
            6 => 64,
            _ => 0,
        };
    /// Bytes before the chunks in a repacked group super-block: the scales `d` (and `dmin`),
    /// then the sub-block scales (and minima), row-minor.
    const HEADER_BYTES: usize = if Self::BITS == 6 { 16 + 128 } else { 32 + 128 };
    /// Bytes of one repacked group super-block.
    const GROUP_BYTES: usize = Self::HEADER_BYTES + 8 * Self::CHUNK_BYTES;

    /// One GGUF super-block.
    fn parse(block: &[u8]) -> Parsed;
}

/// One super-block, unpacked: unsigned values, the f16 bits of `d` and `dmin` (0 for Q6_K), and
/// the sub-block scales (Q6_K's 16 signed bytes; Q4_K/Q5_K's 8 scales then 8 minima).
pub struct Parsed {
    u: [u8; QK_K],
    d: u16,
    dmin: u16,
    scales: [u8; 16],
}

/// `d`, `dmin` (f16), 12 bytes of 6-bit scales and minima, 128 bytes of nibbles.
pub struct Q4K;
/// `d`, `dmin` (f16), 12 bytes of scales and minima, 32 bytes of fifth bits, 128 of nibbles.
pub struct Q5K;
/// 128 bytes of low nibbles, 64 of high 2-bit pairs, 16 signed scales, `d` (f16).
pub struct Q6K;

fn f16_bits(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

/// The 8 scales then 8 minima packed in 12 bytes (ggml's `get_scale_min_k4`).
fn scales_and_minima(q: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for j in 0..8 {
        let (sc, m) = if j < 4 {
            (q[j] & 63, q[j + 4] & 63)
        } else {
            (
                (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
                (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
            )
        };
        out[j] = sc;
        out[8 + j] = m;
    }
    out
}

/// Values of 128 bytes of nibbles in ggml's K-quant order (each 32 bytes hold sub-block `2i` in
/// the low nibbles and `2i + 1` in the high ones), with fifth bits `qh` (byte `l`, bit `j`:
/// value `l` of sub-block `j`) when given.
fn k_nibbles(qs: &[u8], qh: Option<&[u8]>) -> [u8; QK_K] {
    let mut u = [0u8; QK_K];
    for j in 0..8 {
        for l in 0..32 {
            let byte = qs[32 * (j / 2) + l];
            let low = if j % 2 == 0 { byte & 0x0F } else { byte >> 4 };
            let high = qh.map_or(0, |qh| ((qh[l] >> j) & 1) << 4);
            u[32 * j + l] = low | high;
        }
    }
    u
}

impl KFormat for Q4K {
    const BLOCK_BYTES: usize = 144;
    const BITS: u32 = 4;
    fn parse(b: &[u8]) -> Parsed {
        Parsed {
            u: k_nibbles(&b[16..144], None),
            d: f16_bits(b),
            dmin: f16_bits(&b[2..]),
            scales: scales_and_minima(&b[4..16]),
        }
    }
}

impl KFormat for Q5K {
    const BLOCK_BYTES: usize = 176;
    const BITS: u32 = 5;
    fn parse(b: &[u8]) -> Parsed {
        Parsed {
            u: k_nibbles(&b[48..176], Some(&b[16..48])),
            d: f16_bits(b),
            dmin: f16_bits(&b[2..]),
            scales: scales_and_minima(&b[4..16]),
        }
    }
}

impl KFormat for Q6K {
    const BLOCK_BYTES: usize = 210;
    const BITS: u32 = 6;
    fn parse(b: &[u8]) -> Parsed {
        let (ql, qh) = (&b[..128], &b[128..192]);
        let mut u = [0u8; QK_K];
        // ggml's `dequantize_row_q6_K`: two halves of 128 values, each four runs of 32.
        for n in 0..2 {
            let (ql, qh) = (&ql[64 * n..], &qh[32 * n..]);
            for l in 0..32 {
                let v = &mut u[128 * n..];
                v[l] = (ql[l] & 0x0F) | ((qh[l] & 3) << 4);
                v[l + 32] = (ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4);
                v[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                v[l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
            }
        }
        let mut scales = [0u8; 16];
        scales.copy_from_slice(&b[192..208]);
        Parsed {
            u,
            d: f16_bits(&b[208..]),
            dmin: 0,
            scales,
        }
    }
}

/// Repacks `rows` x `blocks` GGUF super-blocks (`rows` a multiple of [`GROUP`]) into groups of
/// eight rows. A group super-block is: the eight `d` (f16), the eight `dmin` (Q4_K/Q5_K); the
/// sub-block scales, sub-block-major (`[sub][row]`: 16 x 8 signed bytes for Q6_K; for Q4_K/Q5_K
/// 8 x 8 scales, then the minima by pairs of sub-blocks, `[pair][row][2]`, so that one
/// `vpmaddwd` weighs two sub-blocks' activation sums); then eight 32-value chunks. A chunk is the 32-value formats'
/// layout: value vector `k` (0..8) holds values `4k..4k+4` of each row, as nibbles (vector `k`
/// in the low nibbles and `k + 4` in the high nibbles of 32 bytes); Q5_K's fifth bits in 32 more
/// bytes (vector `k`'s in bit `k`); Q6_K's two high bits in 64 more (vector `k`'s in bits
/// `2(k % 4)` and up of the 32 bytes `k / 4`).
pub fn repack_k<F: KFormat>(data: &[u8], rows: usize, blocks: usize, out: &mut [u8]) {
    use rayon::prelude::*;
    debug_assert_eq!(out.len(), rows / GROUP * blocks * F::GROUP_BYTES);
    out.par_chunks_exact_mut(blocks * F::GROUP_BYTES)
        .enumerate()
        .for_each(|(g, group)| {
            for (b, dst) in group.chunks_exact_mut(F::GROUP_BYTES).enumerate() {
                let block = |r: usize| &data[((g * GROUP + r) * blocks + b) * F::BLOCK_BYTES..];
                let parsed: [Parsed; GROUP] = std::array::from_fn(|r| F::parse(block(r)));
                repack_block::<F>(&parsed, dst);
            }
        });
}

fn repack_block<F: KFormat>(parsed: &[Parsed; GROUP], dst: &mut [u8]) {
    for (r, p) in parsed.iter().enumerate() {
        dst[2 * r..2 * r + 2].copy_from_slice(&p.d.to_le_bytes());
        if F::BITS != 6 {
            dst[16 + 2 * r..16 + 2 * r + 2].copy_from_slice(&p.dmin.to_le_bytes());
        }
    }
    let scales_at = if F::BITS == 6 { 16 } else { 32 };
    for (r, p) in parsed.iter().enumerate() {
        for (s, &v) in p.scales.iter().enumerate() {
            let at = if F::BITS == 6 || s < 8 {
                8 * s + r
            } else {
                // Minima in pairs of sub-blocks: `[pair][row][2]`.
                let j = s - 8;
                64 + 16 * (j / 2) + 2 * r + j % 2
            };
            dst[scales_at + at] = v;
        }
    }
    for c in 0..8 {
        let chunk = &mut dst[F::HEADER_BYTES + c * F::CHUNK_BYTES..][..F::CHUNK_BYTES];
        for (r, p) in parsed.iter().enumerate() {
            for k in 0..8 {
                for t in 0..4 {
                    let v = p.u[32 * c + 4 * k + t];
                    let byte = 4 * r + t;
                    chunk[32 * (k % 4) + byte] |= (v & 0x0F) << (4 * (k / 4));
                    match F::BITS {
                        5 => chunk[128 + byte] |= ((v >> 4) & 1) << k,
                        6 => chunk[128 + 32 * (k / 4) + byte] |= ((v >> 4) & 3) << (2 * (k % 4)),
                        _ => {}
                    }
                }
            }
        }
    }
}

/// The eight value vectors of a Q6_K chunk at `p` (see [`repack_k`]).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn unpack6(p: *const u8) -> [__m256i; 8] {
    let mut u = unpack_bits::<4>(p);
    let three = _mm256_set1_epi8(0x30);
    for half in 0..2 {
        let h = _mm256_loadu_si256(p.add(128 + 32 * half) as *const __m256i);
        // Bits 2i, 2i + 1 of each byte to bits 4 and 5 (shifts stay within bytes here).
        let at4 = [
            _mm256_slli_epi16::<4>(h),
            _mm256_slli_epi16::<2>(h),
            h,
            _mm256_srli_epi16::<2>(h),
        ];
        for (i, v) in at4.into_iter().enumerate() {
            let k = 4 * half + i;
            u[k] = _mm256_or_si256(u[k], _mm256_and_si256(v, three));
        }
    }
    u
}

/// Eight sums of `u8 x i8` products of one value vector per `k` in `ks` with the activations'
/// bytes `4k..4k + 4` at `ys`, on top of `init`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dots<I: Isa>(init: __m256i, u: &[__m256i], ys: *const i32) -> __m256i {
    let mut sum = init;
    for (k, u) in u.iter().enumerate() {
        sum = I::dot(sum, *u, _mm256_set1_epi32(ys.add(k).read_unaligned()));
    }
    sum
}

/// Eight 32-bit lanes of small integers as 16-bit pairs `(v, v)`, for `vpmaddwd`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn pairs(v: __m256i) -> __m256i {
    _mm256_blend_epi16::<0xAA>(v, _mm256_slli_epi32::<16>(v))
}

/// Sums of `vpmaddubsw` products of the value vectors `u` with the activations' bytes at `ys`,
/// in 16 bits (the caller keeps them below 32768: at most 8 vectors of 4-bit values, 4 of
/// 5-bit, 2 of 6-bit), weighed by `scale` (pairs, see [`pairs`]) into eight 32-bit sums.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dots_i16(u: &[__m256i], ys: *const i32, scale: __m256i) -> __m256i {
    let mut sum = _mm256_setzero_si256();
    for (k, u) in u.iter().enumerate() {
        let y = _mm256_set1_epi32(ys.add(k).read_unaligned());
        sum = _mm256_add_epi16(sum, _mm256_maddubs_epi16(*u, y));
    }
    _mm256_madd_epi16(sum, scale)
}

/// The products of one group of eight weight rows of Q4_K or Q5_K (`w`: its group
/// super-blocks) with `R` activation rows: `R` vectors of eight sums.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dot_group_q45<F: KFormat, I: Isa, const R: usize>(
    w: &[u8],
    x: [&[Q8KBlock]; R],
) -> [__m256; R] {
    let blocks = x[0].len();
    debug_assert!(w.len() >= blocks * F::GROUP_BYTES);
    let mut acc = [_mm256_setzero_ps(); R];
    for b in 0..blocks {
        let p = w.as_ptr().add(b * F::GROUP_BYTES);
        let mut isum = [_mm256_setzero_si256(); R];
        for j in 0..8 {
            let u = if F::BITS == 5 {
                unpack_bits::<5>(p.add(F::HEADER_BYTES + j * F::CHUNK_BYTES))
            } else {
                unpack_bits::<4>(p.add(F::HEADER_BYTES + j * F::CHUNK_BYTES))
            };
            let sc = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.add(32 + 8 * j) as *const __m128i));
            let sc_pairs = pairs(sc);
            for r in 0..R {
                let ys = x[r].get_unchecked(b).qs.as_ptr().add(32 * j) as *const i32;
                let s = if !I::PAIRS_IN_I16 {
                    _mm256_mullo_epi32(dots::<I>(_mm256_setzero_si256(), &u, ys), sc)
                } else if F::BITS == 4 {
                    dots_i16(&u, ys, sc_pairs)
                } else {
                    _mm256_add_epi32(
                        dots_i16(&u[..4], ys, sc_pairs),
                        dots_i16(&u[4..], ys.add(4), sc_pairs),
                    )
                };
                isum[r] = _mm256_add_epi32(isum[r], s);
            }
        }
        let d = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
        let dmin = _mm256_cvtph_ps(_mm_loadu_si128(p.add(16) as *const __m128i));
        let minima: [__m256i; 4] = std::array::from_fn(|i| {
            _mm256_cvtepu8_epi16(_mm_loadu_si128(p.add(96 + 16 * i) as *const __m128i))
        });
        for r in 0..R {
            let xb = x[r].get_unchecked(b);
            let mut imin = _mm256_setzero_si256();
            for (i, m) in minima.iter().enumerate() {
                // Two sub-blocks' activation sums (at most 32 x 127 each) as 16-bit halves.
                let s = |j: usize| (xb.sums[2 * j] + xb.sums[2 * j + 1]) as i16 as u16 as i32;
                let y = _mm256_set1_epi32(s(2 * i) | (s(2 * i + 1) << 16));
                imin = _mm256_add_epi32(imin, _mm256_madd_epi16(*m, y));
            }
            let yd = _mm256_set1_ps(xb.d);
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[r]), _mm256_mul_ps(d, yd), acc[r]);
            acc[r] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(imin), _mm256_mul_ps(dmin, yd), acc[r]);
        }
    }
    acc
}

/// [`dot_group_q45`] for Q6_K.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dot_group_q6<I: Isa, const R: usize>(w: &[u8], x: [&[Q8KBlock]; R]) -> [__m256; R] {
    let blocks = x[0].len();
    debug_assert!(w.len() >= blocks * Q6K::GROUP_BYTES);
    let mut acc = [_mm256_setzero_ps(); R];
    for b in 0..blocks {
        let p = w.as_ptr().add(b * Q6K::GROUP_BYTES);
        let mut isum = [_mm256_setzero_si256(); R];
        for c in 0..8 {
            let u = unpack6(p.add(Q6K::HEADER_BYTES + c * Q6K::CHUNK_BYTES));
            let scale = |s: usize| {
                _mm256_cvtepi8_epi32(_mm_loadl_epi64(p.add(16 + 8 * s) as *const __m128i))
            };
            let (sc_lo, sc_hi) = (scale(2 * c), scale(2 * c + 1));
            let (p_lo, p_hi) = (pairs(sc_lo), pairs(sc_hi));
            for r in 0..R {
                let xb = x[r].get_unchecked(b);
                let ys = xb.qs.as_ptr().add(32 * c) as *const i32;
                // The offset of 32: minus 32 times each 16 activations' sum, weighed by the
                // sub-block's scale.
                let (lo, hi) = (-32 * xb.sums[2 * c], -32 * xb.sums[2 * c + 1]);
                let s = if I::PAIRS_IN_I16 {
                    let corr = _mm256_add_epi32(
                        _mm256_mullo_epi32(_mm256_set1_epi32(lo), sc_lo),
                        _mm256_mullo_epi32(_mm256_set1_epi32(hi), sc_hi),
                    );
                    let a = _mm256_add_epi32(
                        dots_i16(&u[..2], ys, p_lo),
                        dots_i16(&u[2..4], ys.add(2), p_lo),
                    );
                    let b = _mm256_add_epi32(
                        dots_i16(&u[4..6], ys.add(4), p_hi),
                        dots_i16(&u[6..], ys.add(6), p_hi),
                    );
                    _mm256_add_epi32(corr, _mm256_add_epi32(a, b))
                } else {
                    let lo = dots::<I>(_mm256_set1_epi32(lo), &u[..4], ys);
                    let hi = dots::<I>(_mm256_set1_epi32(hi), &u[4..], ys.add(4));
                    _mm256_add_epi32(_mm256_mullo_epi32(lo, sc_lo), _mm256_mullo_epi32(hi, sc_hi))
                };
                isum[r] = _mm256_add_epi32(isum[r], s);
            }
        }
        let d = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
        for r in 0..R {
            let yd = _mm256_set1_ps(x[r].get_unchecked(b).d);
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[r]), _mm256_mul_ps(d, yd), acc[r]);
        }
    }
    acc
}

/// The products of one group of eight weight rows of `F` with `R` activation rows, stored at
/// `out[j * stride..][..8]` for activation row `j`.
///
/// # Safety
/// `kernel` is [`Kernel::available`]; `w` holds `x[j].len()` group super-blocks of `F`; `out`
/// has room for `R` rows of `stride`.
#[inline]
pub unsafe fn dot_group_k<F: KFormat, const R: usize>(
    kernel: Kernel,
    w: &[u8],
    x: [&[Q8KBlock]; R],
    out: *mut f32,
    stride: usize,
) {
    #[cfg(target_arch = "x86_64")]
    {
        match kernel {
            Kernel::Avx2 => k_avx2::<F, R>(w, x, out, stride),
            Kernel::AvxVnni => k_avxvnni::<F, R>(w, x, out, stride),
            Kernel::Avx512Vnni => k_avx512vnni::<F, R>(w, x, out, stride),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (kernel, w, x, out, stride);
        unreachable!("no kernel is detected off x86_64")
    }
}

/// One entry point per instruction set, so that each is compiled for its own features.
macro_rules! entry {
    ($name:ident, $isa:ty, $features:literal) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name<F: KFormat, const R: usize>(
            w: &[u8],
            x: [&[Q8KBlock]; R],
            out: *mut f32,
            stride: usize,
        ) {
            let sums = if F::BITS == 6 {
                dot_group_q6::<$isa, R>(w, x)
            } else {
                dot_group_q45::<F, $isa, R>(w, x)
            };
            for (j, s) in sums.into_iter().enumerate() {
                _mm256_storeu_ps(out.add(j * stride), s);
            }
        }
    };
}

entry!(k_avx2, Avx2, "avx2,fma,f16c");
entry!(k_avxvnni, AvxVnni, "avx2,fma,f16c,avxvnni");
entry!(
    k_avx512vnni,
    Avx512Vnni,
    "avx2,fma,f16c,avx512vnni,avx512vl"
);
