//! The 32-value block formats the products read, repacked eight rows at a time, and the
//! product itself.
//!
//! A weight is `d * (u - OFFSET)`, or `d * u + m` for formats with a minimum, with `u` an
//! unsigned 4-, 5- or 8-bit value. At load, the blocks of eight consecutive rows are
//! interleaved (as llama.cpp's repacked `q4_0x8` layout): one 32-byte vector holds four values of
//! each of the eight rows, so one `u8 x i8` product instruction (`vpdpbusd`, or `vpmaddubsw` and
//! `vpmaddwd` on plain AVX2) against four broadcast activation bytes advances all eight rows'
//! sums, and the eight rows' scales are one vector: no horizontal sums, no per-row scale work.
//! The offset's share, `OFFSET * sum(y)`, is taken once per activation block (`Q8Block::corr`).

use super::Q8Block;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Values per block.
pub const QK: usize = 32;
/// Rows interleaved in one group.
pub const GROUP: usize = 8;

/// A 32-value block format of weights.
pub trait Format {
    /// Bytes of one block in the GGUF file.
    const BLOCK_BYTES: usize;
    /// Bits per unpacked value: 4, 5 or 8.
    const BITS: u32;
    /// What the unsigned values are offset by (0 for formats with a minimum).
    const OFFSET: i32;
    /// Whether a block is `d * u + m` (otherwise `d * (u - OFFSET)`).
    const HAS_MIN: bool;

    /// One GGUF block: its values as unsigned `u`, and the bits of its `d` and `m` (f16).
    fn parse(block: &[u8]) -> ([u8; QK], u16, u16);

    /// Bytes of one repacked group block (eight rows' blocks at one position).
    const GROUP_BYTES: usize = 16
        + if Self::HAS_MIN { 16 } else { 0 }
        + if Self::BITS == 8 { 256 } else { 128 }
        + if Self::BITS == 5 { 32 } else { 0 };
}

fn f16_bits(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

/// Values of 16 bytes of nibbles (low nibbles are values 0..16, high ones 16..32) and of the
/// fifth bits `qh` (bit `i` is value `i`'s).
fn nibbles_and_bits(qs: &[u8], qh: u32) -> [u8; QK] {
    let mut u = [0u8; QK];
    for i in 0..16 {
        u[i] = (qs[i] & 0x0F) | ((((qh >> i) & 1) as u8) << 4);
        u[i + 16] = (qs[i] >> 4) | ((((qh >> (i + 16)) & 1) as u8) << 4);
    }
    u
}

/// `d` (f16), 16 bytes of nibbles; weight `d * (u - 8)`.
pub struct Q4_0;
/// `d`, `m` (f16), 16 bytes of nibbles; weight `d * u + m`.
pub struct Q4_1;
/// `d` (f16), 4 bytes of fifth bits, 16 bytes of nibbles; weight `d * (u - 16)`.
pub struct Q5_0;
/// `d`, `m` (f16), 4 bytes of fifth bits, 16 bytes of nibbles; weight `d * u + m`.
pub struct Q5_1;
/// `d` (f16), 32 signed bytes `q`; weight `d * q`, kept as `u = q + 128`.
pub struct Q8_0;

impl Format for Q4_0 {
    const BLOCK_BYTES: usize = 18;
    const BITS: u32 = 4;
    const OFFSET: i32 = 8;
    const HAS_MIN: bool = false;
    fn parse(b: &[u8]) -> ([u8; QK], u16, u16) {
        (nibbles_and_bits(&b[2..18], 0), f16_bits(b), 0)
    }
}

impl Format for Q4_1 {
    const BLOCK_BYTES: usize = 20;
    const BITS: u32 = 4;
    const OFFSET: i32 = 0;
    const HAS_MIN: bool = true;
    fn parse(b: &[u8]) -> ([u8; QK], u16, u16) {
        (
            nibbles_and_bits(&b[4..20], 0),
            f16_bits(b),
            f16_bits(&b[2..]),
        )
    }
}

impl Format for Q5_0 {
    const BLOCK_BYTES: usize = 22;
    const BITS: u32 = 5;
    const OFFSET: i32 = 16;
    const HAS_MIN: bool = false;
    fn parse(b: &[u8]) -> ([u8; QK], u16, u16) {
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        (nibbles_and_bits(&b[6..22], qh), f16_bits(b), 0)
    }
}

impl Format for Q5_1 {
    const BLOCK_BYTES: usize = 24;
    const BITS: u32 = 5;
    const OFFSET: i32 = 0;
    const HAS_MIN: bool = true;
    fn parse(b: &[u8]) -> ([u8; QK], u16, u16) {
        let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        (
            nibbles_and_bits(&b[8..24], qh),
            f16_bits(b),
            f16_bits(&b[2..]),
        )
    }
}

impl Format for Q8_0 {
    const BLOCK_BYTES: usize = 34;
    const BITS: u32 = 8;
    const OFFSET: i32 = 128;
    const HAS_MIN: bool = false;
    fn parse(b: &[u8]) -> ([u8; QK], u16, u16) {
        let mut u = [0u8; QK];
        for (u, q) in u.iter_mut().zip(&b[2..34]) {
            *u = q ^ 0x80;
        }
        (u, f16_bits(b), 0)
    }
}

/// Repacks `rows` x `blocks` GGUF blocks (`rows` a multiple of [`GROUP`]) into groups of eight
/// rows. A group block is: the eight `d` (f16), the eight `m` (with a minimum), then the values.
/// Value vector `k` (0..8) holds values `4k..4k+4` of each row, row `r` in bytes `4r..4r+4`:
/// 8-bit values as they are; 4- and 5-bit values as nibbles, vector `k` in the low nibbles and
/// vector `k + 4` in the high nibbles of the same 32 bytes; 5-bit values' fifth bits in 32 more
/// bytes, vector `k`'s in bit `k`.
pub fn repack<F: Format>(data: &[u8], rows: usize, blocks: usize, out: &mut [u8]) {
    use rayon::prelude::*;
    debug_assert_eq!(out.len(), rows / GROUP * blocks * F::GROUP_BYTES);
    out.par_chunks_exact_mut(blocks * F::GROUP_BYTES)
        .enumerate()
        .for_each(|(g, group)| {
            for (b, dst) in group.chunks_exact_mut(F::GROUP_BYTES).enumerate() {
                let block = |r: usize| &data[((g * GROUP + r) * blocks + b) * F::BLOCK_BYTES..];
                repack_block::<F>(std::array::from_fn(|r| F::parse(block(r))), dst);
            }
        });
}

/// Writes one group block: the eight rows' parsed blocks at one position (see [`repack`]).
fn repack_block<F: Format>(parsed: [([u8; QK], u16, u16); GROUP], dst: &mut [u8]) {
    let mut at = 0;
    for (r, (_, d, _)) in parsed.iter().enumerate() {
        dst[2 * r..2 * r + 2].copy_from_slice(&d.to_le_bytes());
    }
    at += 16;
    if F::HAS_MIN {
        for (r, (_, _, m)) in parsed.iter().enumerate() {
            dst[at + 2 * r..at + 2 * r + 2].copy_from_slice(&m.to_le_bytes());
        }
        at += 16;
    }
    for (r, (u, _, _)) in parsed.iter().enumerate() {
        for k in 0..8 {
            for t in 0..4 {
                let v = u[4 * k + t];
                let byte = 4 * r + t;
                if F::BITS == 8 {
                    dst[at + 32 * k + byte] = v;
                } else {
                    dst[at + 32 * (k % 4) + byte] |= (v & 0x0F) << (4 * (k / 4));
                    if F::BITS == 5 {
                        dst[at + 128 + byte] |= ((v >> 4) & 1) << k;
                    }
                }
            }
        }
    }
}

/// How a CPU multiplies unsigned by signed bytes and sums each four products into a 32-bit lane.
#[cfg(target_arch = "x86_64")]
pub trait Isa {
    /// Whether pairs of products are summed in 16 bits first (which saturates past 32767).
    const PAIRS_IN_I16: bool;

    /// `acc` plus `u8 x i8` products, each four consecutive ones summed into one `i32` lane.
    ///
    /// # Safety
    /// The CPU has the instructions this names.
    unsafe fn dot(acc: __m256i, u: __m256i, s: __m256i) -> __m256i;
}

/// AVX2: `vpmaddubsw` (pairs into `i16`), then `vpmaddwd` with ones (pairs of those into `i32`).
#[cfg(target_arch = "x86_64")]
pub struct Avx2;
/// AVX-VNNI's `vpdpbusd` (256-bit, VEX): one instruction.
#[cfg(target_arch = "x86_64")]
pub struct AvxVnni;
/// AVX-512 VNNI's `vpdpbusd` on 256-bit registers (AVX-512 VL).
#[cfg(target_arch = "x86_64")]
pub struct Avx512Vnni;

#[cfg(target_arch = "x86_64")]
impl Isa for Avx2 {
    const PAIRS_IN_I16: bool = true;
    #[inline(always)]
    unsafe fn dot(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
        let pairs = _mm256_maddubs_epi16(u, s);
        _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
    }
}

#[cfg(target_arch = "x86_64")]
impl Isa for AvxVnni {
    const PAIRS_IN_I16: bool = false;
    #[inline(always)]
    unsafe fn dot(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
        _mm256_dpbusd_avx_epi32(acc, u, s)
    }
}

#[cfg(target_arch = "x86_64")]
impl Isa for Avx512Vnni {
    const PAIRS_IN_I16: bool = false;
    #[inline(always)]
    unsafe fn dot(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(acc, u, s)
    }
}

/// The eight value vectors of the group block at `p` (see [`repack`]) of `BITS`-bit values.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub unsafe fn unpack_bits<const BITS: u32>(p: *const u8) -> [__m256i; 8] {
    let mut u = [_mm256_setzero_si256(); 8];
    if BITS == 8 {
        for (k, u) in u.iter_mut().enumerate() {
            *u = _mm256_loadu_si256(p.add(32 * k) as *const __m256i);
        }
        return u;
    }
    let low = _mm256_set1_epi8(0x0F);
    for k in 0..4 {
        let c = _mm256_loadu_si256(p.add(32 * k) as *const __m256i);
        u[k] = _mm256_and_si256(c, low);
        u[k + 4] = _mm256_and_si256(_mm256_srli_epi16::<4>(c), low);
    }
    if BITS == 5 {
        let h = _mm256_loadu_si256(p.add(128) as *const __m256i);
        let fifth = _mm256_set1_epi8(0x10);
        // Bit k of each byte to bit 4 (shifts stay within bytes for these amounts).
        let at4 = [
            _mm256_slli_epi16::<4>(h),
            _mm256_slli_epi16::<3>(h),
            _mm256_slli_epi16::<2>(h),
            _mm256_slli_epi16::<1>(h),
            h,
            _mm256_srli_epi16::<1>(h),
            _mm256_srli_epi16::<2>(h),
            _mm256_srli_epi16::<3>(h),
        ];
        for k in 0..8 {
            u[k] = _mm256_or_si256(u[k], _mm256_and_si256(at4[k], fifth));
        }
    }
    u
}

/// The products of one group of eight weight rows (`w`: its group blocks) with `R` quantised
/// activation rows: `R` vectors of eight sums. Each group block is unpacked once for all `R`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dot_group<F: Format, I: Isa, const R: usize>(
    w: &[u8],
    x: [&[Q8Block]; R],
) -> [__m256; R] {
    let blocks = x[0].len();
    debug_assert!(w.len() >= blocks * F::GROUP_BYTES);
    // Unsigned bytes up to 255 (Q8_0's) overflow a 16-bit pair sum: there the weights go back
    // to signed and lend their sign to the activations (ggml's AVX2 arithmetic).
    let signed = I::PAIRS_IN_I16 && F::BITS == 8;
    let values_at = 16 + if F::HAS_MIN { 16 } else { 0 };
    let mut acc = [_mm256_setzero_ps(); R];
    for b in 0..blocks {
        let p = w.as_ptr().add(b * F::GROUP_BYTES);
        let d = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
        let m = if F::HAS_MIN {
            _mm256_cvtph_ps(_mm_loadu_si128(p.add(16) as *const __m128i))
        } else {
            _mm256_setzero_ps()
        };
        let mut u = match F::BITS {
            8 => unpack_bits::<8>(p.add(values_at)),
            5 => unpack_bits::<5>(p.add(values_at)),
            _ => unpack_bits::<4>(p.add(values_at)),
        };
        let mut q = [_mm256_setzero_si256(); 8];
        if signed {
            for k in 0..8 {
                q[k] = _mm256_xor_si256(u[k], _mm256_set1_epi8(-128));
                u[k] = _mm256_sign_epi8(q[k], q[k]);
            }
        }
        for j in 0..R {
            let xb = x[j].get_unchecked(b);
            let ys = xb.qs.as_ptr() as *const i32;
            let mut sum = if F::OFFSET != 0 && !signed {
                _mm256_set1_epi32(xb.corr)
            } else {
                _mm256_setzero_si256()
            };
            for k in 0..8 {
                let y = _mm256_set1_epi32(ys.add(k).read_unaligned());
                let y = if signed { _mm256_sign_epi8(y, q[k]) } else { y };
                sum = I::dot(sum, u[k], y);
            }
            let scale = _mm256_mul_ps(d, _mm256_set1_ps(xb.d));
            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), scale, acc[j]);
            if F::HAS_MIN {
                acc[j] = _mm256_fmadd_ps(m, _mm256_set1_ps(xb.s), acc[j]);
            }
        }
    }
    acc
}

/// The instruction set a product runs on, picked once per matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    Avx2,
    AvxVnni,
    Avx512Vnni,
}

impl Kernel {
    /// Every kernel.
    #[cfg(test)]
    pub const ALL: [Kernel; 3] = [Kernel::Avx2, Kernel::AvxVnni, Kernel::Avx512Vnni];

    /// The kernel of the process's tier ([`crate::cpu::chosen`]), or `None` (candle's kernels).
    pub fn detect() -> Option<Kernel> {
        Kernel::for_path(crate::cpu::chosen())
    }

    /// The fastest kernel of a tier on this CPU: `avx512` takes VNNI in its VEX (AVX-VNNI) or
    /// EVEX (AVX-512 VNNI) form, VEX first (it measured no slower and needs no 512-bit state);
    /// `avx2` takes AVX-VNNI when present; `scalar` takes none (candle's kernels).
    pub fn for_path(path: crate::cpu::KernelPath) -> Option<Kernel> {
        use crate::cpu::KernelPath;
        let order: &[Kernel] = match path {
            KernelPath::Avx512 => &[Kernel::AvxVnni, Kernel::Avx512Vnni, Kernel::Avx2],
            KernelPath::Avx2 => &[Kernel::AvxVnni, Kernel::Avx2],
            KernelPath::Scalar => &[],
        };
        order.iter().copied().find(|k| k.available())
    }

    /// The kernel's name, for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Avx2 => "avx2",
            Kernel::AvxVnni => "avxvnni",
            Kernel::Avx512Vnni => "avx512vnni",
        }
    }

    /// Whether this CPU has the instructions this kernel uses.
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            let base = is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c");
            base && match self {
                Kernel::Avx2 => true,
                Kernel::AvxVnni => is_x86_feature_detected!("avxvnni"),
                Kernel::Avx512Vnni => {
                    is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl")
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// The products of one group of eight weight rows with `R` activation rows, stored at
    /// `out[j * stride..][..8]` for activation row `j`.
    ///
    /// # Safety
    /// `self` came from [`Kernel::detect`] on this CPU (or is [`Kernel::available`]); `w` holds
    /// `x[j].len()` group blocks of `F`; `out` has room for `R` rows of `stride`.
    #[inline]
    pub unsafe fn dot_group<F: Format, const R: usize>(
        self,
        w: &[u8],
        x: [&[Q8Block]; R],
        out: *mut f32,
        stride: usize,
    ) {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                Kernel::Avx2 => group_avx2::<F, R>(w, x, out, stride),
                Kernel::AvxVnni => group_avxvnni::<F, R>(w, x, out, stride),
                Kernel::Avx512Vnni => group_avx512vnni::<F, R>(w, x, out, stride),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (w, x, out, stride);
            unreachable!("no kernel is detected off x86_64")
        }
    }
}

/// One entry point per instruction set, so that each is compiled for its own features.
macro_rules! entry {
    ($name:ident, $isa:ty, $features:literal) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name<F: Format, const R: usize>(
            w: &[u8],
            x: [&[Q8Block]; R],
            out: *mut f32,
            stride: usize,
        ) {
            let sums = dot_group::<F, $isa, R>(w, x);
            for (j, s) in sums.into_iter().enumerate() {
                _mm256_storeu_ps(out.add(j * stride), s);
            }
        }
    };
}

entry!(group_avx2, Avx2, "avx2,fma,f16c");
entry!(group_avxvnni, AvxVnni, "avx2,fma,f16c,avxvnni");
entry!(
    group_avx512vnni,
    Avx512Vnni,
    "avx2,fma,f16c,avx512vnni,avx512vl"
);
