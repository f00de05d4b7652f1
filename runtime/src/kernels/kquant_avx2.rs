//! AVX2 row dots for the weight types of K-quant files beyond Q4_0/Q4_1/Q8_0, for the
//! [`Avx2`](super::KernelPath::Avx2) and [`Avx512`](super::KernelPath::Avx512) paths: Q4_K, Q5_K
//! and Q6_K against Q8_K activations, and the 32-block types llama-quantize falls back to when
//! rows are not a multiple of 256 (Q5_0 against Q8_0, Q5_1 against Q8_1; SmolLM2's Q4_K_M file
//! is mostly Q5_0, its Q5_K_M file mostly Q5_1). Same shape as ggml's AVX2 kernels: unsigned
//! levels times signed activations with `maddubs` (exact: at most 2 · 63 · 127 per pair), the
//! sub-block scales applied with `madd`, and the minimum (Q4_K, Q5_K) or the offset 32 (Q6_K)
//! taken from the activation `bsums` in the integers. One int-to-float conversion and one FMA
//! per (super-)block; they differ from [`scalar`](super::scalar) only in the order of float
//! additions (Q5_K's not at all: both follow ggml's AVX2 kernel). The two-row Q4_K and Q6_K
//! dots (decode's matrix-vector products) equal their one-row dots bit for bit, with `vpdpwssd`
//! in place of `madd` + `add` on the AVX-512 path, as do the Q5_0 and Q5_1 matrix kernels of
//! both paths, which run four rows at a time (each row's float sum is one ordered chain of
//! FMAs, so four rows keep four chains in flight): `maddubs` + `madd` on AVX2, `vpdpbusd`
//! (and GFNI/VBMI level unpacking where present) on AVX-512.
//!
//! Every `unsafe fn` here requires AVX2, FMA and F16C; the safe entries are `pub(super)` and only
//! stored in a [`Kernels`](super::Kernels) table built after the CPU check.

// Rust 1.85 (our MSRV) requires `unsafe` around every `core::arch` intrinsic; from 1.87 the
// pointer-free ones are safe inside `#[target_feature]` functions.
#![allow(unused_unsafe)]

use std::arch::x86_64::*;

use crate::quant::k_quants::scales_mins_k4;
use crate::quant::{
    fp16_to_fp32, Block, BlockQ4K, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_0,
    BlockQ8_1,
};

use super::{row_dot2_entry, row_dot_entry};

row_dot_entry!(row_dot_q4_k, vec_dot_q4_k_q8_k, BlockQ4K, BlockQ8K);
row_dot_entry!(row_dot_q5_k, vec_dot_q5_k_q8_k, BlockQ5K, BlockQ8K);
row_dot_entry!(row_dot_q6_k, vec_dot_q6_k_q8_k, BlockQ6K, BlockQ8K);
row_dot_entry!(row_dot_q5_0, vec_dot_q5_0_q8_0, BlockQ5_0, BlockQ8_0);
row_dot_entry!(row_dot_q5_1, vec_dot_q5_1_q8_1, BlockQ5_1, BlockQ8_1);
row_dot2_entry!(
    row_dot2_q5_0_avx2,
    vec_dot2_q5_0_q8_0::<Q5_AVX2>,
    BlockQ5_0,
    BlockQ8_0
);
row_dot2_entry!(
    row_dot2_q5_0_vnni,
    vec_dot2_q5_0_q8_0::<Q5_VNNI>,
    BlockQ5_0,
    BlockQ8_0
);
row_dot2_entry!(
    row_dot2_q5_0_vbmi_gfni,
    vec_dot2_q5_0_q8_0::<Q5_VBMI_GFNI>,
    BlockQ5_0,
    BlockQ8_0
);

/// The two-row form of [`vec_dots_q5_0_q8_0`] for the row-pair table entries.
///
/// # Safety
/// As [`vec_dots_q5_0_q8_0`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn vec_dot2_q5_0_q8_0<const ISA: u8>(
    x0: &[BlockQ5_0],
    x1: &[BlockQ5_0],
    y: &[BlockQ8_0],
) -> [f32; 2] {
    // SAFETY: the caller's contract.
    unsafe { vec_dots_q5_0_q8_0::<2, ISA>([x0, x1], y) }
}

/// The sum of the eight f32 lanes.
///
/// # Safety
/// AVX2 must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum_f32x8(v: __m256) -> f32 {
    // SAFETY: register-only intrinsics; AVX is the caller's contract.
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }
}

/// Loads 32 bytes from a 32-byte chunk of a block.
///
/// # Safety
/// AVX2 must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load32<T>(bytes: &[T; 32]) -> __m256i {
    // SAFETY: reads exactly the array's 32 one-byte elements (callers pass u8 or i8 arrays).
    unsafe { _mm256_loadu_si256(bytes.as_ptr().cast()) }
}

/// The 32-byte chunk `k` of a byte array.
#[inline(always)]
fn chunk32<T, const N: usize>(a: &[T; N], k: usize) -> &[T; 32] {
    a[32 * k..32 * k + 32]
        .try_into()
        .expect("chunk inside the block")
}

/// A Q4_K or Q5_K block's integers against its Q8_K block, as ggml's AVX2 kernels form them:
/// `sumi` (8 lanes: each 32-value sub-block's `maddubs` by its levels and `madd` by its scale,
/// summed) and `Σ m_j · bsum_j` in 4 lanes (`madd` of the mins with the 16 `bsums` paired into
/// 8 sub-block sums). `qh`: Q5_K's fifth bits (bit `2j` of `qh` for the low nibbles of
/// `qs[32j..32j + 32]`, bit `2j + 1` for the high ones), added as 16 to the levels (at most
/// 31: 2 · 31 · 128 per `maddubs` pair).
///
/// # Safety
/// AVX2, FMA and F16C must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn k4_block_ints(
    packed_scales: &[u8; 12],
    qs: &[u8; 128],
    qh: Option<&[u8; 32]>,
    yb: &BlockQ8K,
) -> (__m256i, __m128i) {
    // SAFETY: register intrinsics and loads through `load32`/`loadu` of whole arrays; AVX2 is
    // the caller's contract.
    unsafe {
        let m4 = _mm256_set1_epi8(0x0F);
        let (scales, mins) = scales_mins_k4(packed_scales);
        let (scales, mins) = (scales.map(i16::from), mins.map(i16::from));
        let bsums = _mm256_loadu_si256(yb.bsums.as_ptr().cast());
        let q8s = _mm_hadd_epi16(
            _mm256_castsi256_si128(bsums),
            _mm256_extracti128_si256(bsums, 1),
        );
        let prod = _mm_madd_epi16(_mm_loadu_si128(mins.as_ptr().cast()), q8s);
        // the fifth bits of value group `bit` as 16, or nothing
        let fifth = |bit: u8| match qh {
            Some(qh) => {
                let m = _mm256_set1_epi8(bit as i8);
                let set = _mm256_cmpeq_epi8(_mm256_and_si256(load32(qh), m), m);
                _mm256_and_si256(set, _mm256_set1_epi8(16))
            }
            None => _mm256_setzero_si256(),
        };
        let mut sumi = _mm256_setzero_si256();
        for j in 0..4 {
            let bits = load32(chunk32(qs, j));
            let ql = _mm256_add_epi8(_mm256_and_si256(bits, m4), fifth(1 << (2 * j)));
            let qh = _mm256_add_epi8(
                _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4),
                fifth(2 << (2 * j)),
            );
            let p16l = _mm256_madd_epi16(
                _mm256_set1_epi16(scales[2 * j]),
                _mm256_maddubs_epi16(ql, load32(chunk32(&yb.qs, 2 * j))),
            );
            let p16h = _mm256_madd_epi16(
                _mm256_set1_epi16(scales[2 * j + 1]),
                _mm256_maddubs_epi16(qh, load32(chunk32(&yb.qs, 2 * j + 1))),
            );
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16l, p16h));
        }
        (sumi, prod)
    }
}

/// ggml's `vec_dot_q4_K_q8_K` with AVX2.
///
/// # Safety
/// AVX2, FMA and F16C must be available.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_q4_k_q8_k(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    // SAFETY: register intrinsics; AVX2/FMA are the caller's contract.
    unsafe {
        let mut acc = _mm256_setzero_ps();
        let mut acc_m = _mm_setzero_ps();
        for (xb, yb) in x.iter().zip(y) {
            let (sumi, prod) = k4_block_ints(&xb.scales, &xb.qs, None, yb);
            let d = yb.d * fp16_to_fp32(xb.d);
            let dmin = -yb.d * fp16_to_fp32(xb.dmin);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
            acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m);
        }
        let m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
        let m = _mm_add_ss(m, _mm_movehdup_ps(m));
        hsum_f32x8(acc) + _mm_cvtss_f32(m)
    }
}

/// ggml's `vec_dot_q5_K_q8_K` with AVX2, bit for bit
/// ([`scalar::vec_dot_q5_k_q8_k`](super::scalar::vec_dot_q5_k_q8_k) follows the same order):
/// Q4_K's integers with the fifth bits ([`k4_block_ints`]), one FMA per block into eight lanes,
/// and the minimums' part in one scalar FMA chain as that kernel keeps it.
///
/// # Safety
/// AVX2, FMA and F16C must be available.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_q5_k_q8_k(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
    // SAFETY: register intrinsics; AVX2/FMA are the caller's contract.
    unsafe {
        let mut acc = _mm256_setzero_ps();
        let mut summs = 0.0f32;
        for (xb, yb) in x.iter().zip(y) {
            let (sumi, prod) = k4_block_ints(&xb.scales, &xb.qs, Some(&xb.qh), yb);
            let prod = _mm_add_epi32(prod, _mm_unpackhi_epi64(prod, prod));
            let imin = _mm_cvtsi128_si32(_mm_add_epi32(prod, _mm_srli_epi64(prod, 32)));
            let d = yb.d * fp16_to_fp32(xb.d);
            let dmin = -yb.d * fp16_to_fp32(xb.dmin);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
            summs = dmin.mul_add(imin as f32, summs);
        }
        hsum_f32x8(acc) + summs
    }
}

/// ggml's `vec_dot_q6_K_q8_K` with AVX2: the unsigned 6-bit levels times the activations, minus
/// 32 times the activation sums (from `bsums`), each 16-value sub-block times its scale.
///
/// # Safety
/// AVX2, FMA and F16C must be available.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_q6_k_q8_k(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
    // SAFETY: as in `vec_dot_q4_k_q8_k`; the scale load reads the block's 16 `scales` bytes.
    unsafe {
        let mut acc = _mm256_setzero_ps();
        for (xb, yb) in x.iter().zip(y) {
            let scales8 = _mm_loadu_si128(xb.scales.as_ptr().cast());
            let scales16 = _mm256_cvtepi8_epi16(scales8);
            // Σ_j sc_j · (activation sum of sub-block j), times 32
            let bsums = _mm256_loadu_si256(yb.bsums.as_ptr().cast());
            let mins = _mm256_slli_epi32(_mm256_madd_epi16(scales16, bsums), 5);

            let mut sumi = _mm256_setzero_si256();
            for n in 0..2 {
                let q = q6_k_levels(xb, n);
                for (k, &qk) in q.iter().enumerate() {
                    let q8 = load32(chunk32(&yb.qs, 4 * n + k));
                    let p16 = _mm256_maddubs_epi16(qk, q8);
                    // lanes 0..8 hold values 0..16 of the chunk (sub-block 8n + 2k), lanes
                    // 8..16 values 16..32 (sub-block 8n + 2k + 1)
                    let s = 8 * n + 2 * k;
                    let sc = _mm256_set_m128i(
                        _mm_set1_epi16(i16::from(xb.scales[s + 1])),
                        _mm_set1_epi16(i16::from(xb.scales[s])),
                    );
                    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(sc, p16));
                }
            }
            let d = yb.d * fp16_to_fp32(xb.d);
            acc = _mm256_fmadd_ps(
                _mm256_set1_ps(d),
                _mm256_cvtepi32_ps(_mm256_sub_epi32(sumi, mins)),
                acc,
            );
        }
        hsum_f32x8(acc)
    }
}

/// The 32 five-bit levels (0..=31) of a Q5_0 / Q5_1 block as bytes in element order: the low
/// nibbles (elements 0..16) in the low half, the high nibbles (16..32) in the high half, and
/// bit 4 of element j from bit j of `qh` (ggml's `bytes_from_bits_32`: each byte of `qh`
/// broadcast to 8 lanes, all bits but the lane's own set, compared with all ones).
///
/// # Safety
/// AVX2 must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q5_levels(qs: &[u8; 16], qh: [u8; 4]) -> __m256i {
    // SAFETY: the load reads the 16 bytes of `qs`; the rest is register-only.
    unsafe {
        let v = _mm_loadu_si128(qs.as_ptr().cast());
        let nibbles = _mm256_and_si256(
            _mm256_set_m128i(_mm_srli_epi16(v, 4), v),
            _mm256_set1_epi8(0x0F),
        );
        let spread = _mm256_shuffle_epi8(
            _mm256_set1_epi32(i32::from_le_bytes(qh)),
            _mm256_set_epi64x(
                0x0303_0303_0303_0303,
                0x0202_0202_0202_0202,
                0x0101_0101_0101_0101,
                0,
            ),
        );
        let own_bit_clear = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
        let bit_set = _mm256_cmpeq_epi8(
            _mm256_or_si256(spread, own_bit_clear),
            _mm256_set1_epi64x(-1),
        );
        _mm256_or_si256(nibbles, _mm256_and_si256(bit_set, _mm256_set1_epi8(0x10)))
    }
}

/// The 32 quants of a Q8 block.
///
/// # Safety
/// AVX2 must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_q8(qs: &[i8; 32]) -> __m256i {
    // SAFETY: reads exactly the 32 bytes of `qs`.
    unsafe { _mm256_loadu_si256(qs.as_ptr().cast()) }
}

/// Four f16 values (as bits, lane order) converted exactly to f32 (F16C).
///
/// # Safety
/// F16C must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16x4(h: [u16; 4]) -> __m128 {
    let bits = u64::from(h[0])
        | (u64::from(h[1]) << 16)
        | (u64::from(h[2]) << 32)
        | (u64::from(h[3]) << 48);
    // SAFETY: register-only intrinsics; F16C is the caller's contract.
    unsafe { _mm_cvtph_ps(_mm_cvtsi64_si128(bits as i64)) }
}

/// ggml's `vec_dot_q5_0_q8_0` with AVX2: levels minus 16 (signed -16..=15) times the
/// activations with `maddubs` and the sign trick (exact while the activations avoid -128),
/// one FMA per block into one accumulator, in the order of ggml's AVX2 kernel (SmolLM2's
/// Q4_K_M perplexity moves by tenths of a percent with the float summation order alone)
/// (twin: [`scalar::vec_dot_q5_0_q8_0`](super::scalar::vec_dot_q5_0_q8_0)).
///
/// # Safety
/// AVX2, FMA and F16C must be available.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_q5_0_q8_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
    // SAFETY: register intrinsics and loads of arrays owned by the blocks; the features are the
    // caller's contract.
    unsafe {
        let sixteen = _mm256_set1_epi8(16);
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_ps();
        for (xb, yb) in x.iter().zip(y) {
            let q = _mm256_sub_epi8(q5_levels(&xb.qs, xb.qh), sixteen);
            let a = load_q8(&yb.qs);
            let p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(q, q), _mm256_sign_epi8(a, q));
            let sumi = _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, ones));
            let s = f16x4([xb.d.to_bits(), yb.d.to_bits(), 0, 0]); // [xd, yd, 0, 0]
            let d = _mm256_broadcastss_ps(_mm_mul_ss(s, _mm_movehdup_ps(s)));
            acc = _mm256_fmadd_ps(d, sumi, acc);
        }
        hsum_f32x8(acc)
    }
}

/// The 32 five-bit levels (0..=31) of a Q5_0 / Q5_1 block as unsigned bytes, for the AVX-512
/// path: the 16 nibble bytes broadcast to both halves and shifted apart with one variable
/// shift and a mask, the fifth bits spread by one shuffle and compare and merged with one
/// `vpternlogd`.
///
/// # Safety
/// AVX2, AVX512F and AVX512VL must be available, and AVX512-VBMI and GFNI when `VBMI_GFNI`:
/// then one `vgf2p8affineqb` (a bit matrix per quadword: keep the low nibble in the low half,
/// move the high one down in the high half) separates the nibbles, and one `vpmultishiftqb`
/// moves each fifth bit into place instead of a shuffle, an or and a compare. (Every CPU with
/// AVX512-VNNI and VBMI so far has GFNI too: Ice Lake and later, Zen 4 and later.)
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_levels_vnni<const VBMI_GFNI: bool>(qs: &[u8; 16], qh: [u8; 4]) -> __m256i {
    use super::avx512::{multishift, or_and};
    // SAFETY: the load reads the 16 bytes of `qs`; the features are the caller's contract.
    unsafe {
        // the low half keeps the low nibbles, the high half takes the high ones
        let v = _mm256_broadcastsi128_si256(_mm_loadu_si128(qs.as_ptr().cast()));
        let nibbles = if VBMI_GFNI {
            // low half: bits 0..4 of each byte; high half: bits 4..8 moved down
            let pick = _mm256_set_epi64x(
                0x1020_4080_0000_0000,
                0x1020_4080_0000_0000,
                0x0102_0408_0000_0000,
                0x0102_0408_0000_0000,
            );
            super::avx512::gf2p8affine(v, pick)
        } else {
            let nibble_shift = _mm256_set_epi32(4, 4, 4, 4, 0, 0, 0, 0);
            _mm256_and_si256(_mm256_srlv_epi32(v, nibble_shift), _mm256_set1_epi8(0x0F))
        };
        let qh = _mm256_set1_epi32(i32::from_le_bytes(qh));
        let fifth = if VBMI_GFNI {
            // byte j takes the 8 bits of `qh | qh << 32` from bit j - 4 (mod 64): its bit 4
            // is bit j of `qh`
            let bit_to_4 = _mm256_set_epi64x(
                0x1b1a_1918_1716_1514,
                0x1312_1110_0f0e_0d0c,
                0x0b0a_0908_0706_0504,
                0x0302_0100_3f3e_3d3c,
            );
            multishift(bit_to_4, qh)
        } else {
            let byte_of_bit = _mm256_set_epi64x(
                0x0303_0303_0303_0303,
                0x0202_0202_0202_0202,
                0x0101_0101_0101_0101,
                0,
            );
            let spread = _mm256_shuffle_epi8(qh, byte_of_bit);
            let own_bit_clear = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
            _mm256_cmpeq_epi8(
                _mm256_or_si256(spread, own_bit_clear),
                _mm256_set1_epi64x(-1),
            )
        };
        or_and(nibbles, fifth, _mm256_set1_epi8(16))
    }
}

/// The instructions of the multi-row Q5_0/Q5_1 kernels (their `ISA` parameter): AVX2 alone
/// (`maddubs` + `madd` for the int dots, each row's scale broadcast from a register).
const Q5_AVX2: u8 = 0;
/// AVX-512 with VNNI (and F, VL): one `vpdpbusd` per int dot, the scales multiplied in by FMAs
/// with a broadcast memory operand.
const Q5_VNNI: u8 = 1;
/// [`Q5_VNNI`] plus AVX512-VBMI and GFNI: the cheaper level unpacking of [`q5_levels_vnni`].
const Q5_VBMI_GFNI: u8 = 2;

/// A Q5 block's 32 levels (0..=31) as unsigned bytes with the instructions of `ISA`.
///
/// # Safety
/// The features of `ISA` must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_levels_isa<const ISA: u8>(qs: &[u8; 16], qh: [u8; 4]) -> __m256i {
    // SAFETY: the features are the caller's contract.
    unsafe {
        match ISA {
            Q5_AVX2 => q5_levels(qs, qh),
            Q5_VNNI => q5_levels_vnni::<false>(qs, qh),
            _ => q5_levels_vnni::<true>(qs, qh),
        }
    }
}

/// `acc + Σ u·s` over each group of four bytes per i32 lane (`u` unsigned at most 31, `s`
/// signed): `maddubs` + `madd` (no saturation: 2 · 31 · 128 < 2^15) on AVX2, `vpdpbusd` with
/// VNNI; the same integers.
///
/// # Safety
/// The features of `ISA` must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_u8_i8<const ISA: u8>(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    // SAFETY: register-only operations; the features are the caller's contract.
    unsafe {
        if ISA == Q5_AVX2 {
            let pairs = _mm256_maddubs_epi16(u, s);
            _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
        } else {
            super::avx512::dpbusd(acc, u, s)
        }
    }
}

/// `acc + x · *d` in every lane (one rounding, as `_mm256_fmadd_ps`).
///
/// # Safety
/// The features of `ISA` must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fmadd_scale<const ISA: u8>(acc: __m256, x: __m256, d: &f32) -> __m256 {
    // SAFETY: register-only operations and the read of `*d`; the features are the caller's
    // contract.
    unsafe {
        if ISA == Q5_AVX2 {
            _mm256_fmadd_ps(x, _mm256_set1_ps(*d), acc)
        } else {
            super::avx512::fmadd_broadcast(acc, x, d)
        }
    }
}

/// [`vec_dot_q5_0_q8_0`] of `N` rows (2 or 4) with one activation row, each bit for bit: each
/// block's int sums from the levels 0..=31 unsigned ([`dot_u8_i8`]) started at `-16·Σa`
/// (computed once for all rows), the same i32 per lane as the one-row kernel's sign trick on
/// levels minus 16 (its four-element groups, exact while the activations avoid -128); the
/// scale products and FMAs as in the one-row kernel.
///
/// Each row's FMAs form one chain (ggml's order: one accumulator, block after block), so one
/// row's step waits for the last; four rows keep four chains in flight (AVX-512: 20.8 GB/s of
/// weights from L2 at one thread against 18.1 for two rows, SmolLM2's 576-wide rows).
///
/// Per block, the rows' f16 scales and the activation's are converted by two four-lane
/// `vcvtph2ps` and multiplied once.
///
/// # Safety
/// AVX2, FMA and F16C must be available, and the features of `ISA`: AVX512F, AVX512-VNNI and
/// AVX512VL from [`Q5_VNNI`], AVX512-VBMI and GFNI too for [`Q5_VBMI_GFNI`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dots_q5_0_q8_0<const N: usize, const ISA: u8>(
    x: [&[BlockQ5_0]; N],
    y: &[BlockQ8_0],
) -> [f32; N] {
    const { assert!(N == 2 || N == 4) };
    // SAFETY: register intrinsics and loads of arrays owned by the blocks; the features are the
    // caller's contract.
    unsafe {
        let sixteen = _mm256_set1_epi8(16);
        let zero = _mm256_setzero_si256();
        let mut acc = [_mm256_setzero_ps(); N];
        let n = x.iter().fold(y.len(), |n, r| n.min(r.len()));
        for (i, yb) in y[..n].iter().enumerate() {
            // SAFETY: `i < n`, the shortest row's length.
            let b: [&BlockQ5_0; N] = std::array::from_fn(|r| unsafe { x[r].get_unchecked(i) });
            let a = load_q8(&yb.qs);
            let neg_off = _mm256_sub_epi32(zero, dot_u8_i8::<ISA>(zero, sixteen, a));
            // [xd_0·yd, .., xd_{N-1}·yd]: each the one-row kernel's `xd·yd`
            let xd = b
                .iter()
                .enumerate()
                .fold(0u64, |h, (r, b)| h | u64::from(b.d.to_bits()) << (16 * r));
            let mut d = [0f32; 4];
            _mm_storeu_ps(
                d.as_mut_ptr(),
                _mm_mul_ps(
                    _mm_cvtph_ps(_mm_cvtsi64_si128(xd as i64)),
                    _mm_cvtph_ps(_mm_set1_epi16(yb.d.to_bits() as i16)),
                ),
            );
            for r in 0..N {
                let s = dot_u8_i8::<ISA>(neg_off, q5_levels_isa::<ISA>(&b[r].qs, b[r].qh), a);
                acc[r] = fmadd_scale::<ISA>(acc[r], _mm256_cvtepi32_ps(s), &d[r]);
            }
        }
        acc.map(|a| hsum_f32x8(a))
    }
}

/// The rows of a matrix (`w`, rows of `rb` bytes of `W` blocks) against one activation row
/// `a` of `A` blocks, one value per row into `out`, with the loop over rows inside the kernel:
/// `four` rows at a time (row `i` with rows `q + i`, `2q + i` and `3q + i` of the `4q` first:
/// four sequential streams through memory), then `two` and a last row by `one`. NaN everywhere
/// if the shapes do not fit.
fn rows_by_four<W: Block, A: Block>(
    w: &[u8],
    rb: usize,
    a: &[u8],
    out: &mut [f32],
    four: impl Fn([&[W]; 4], &[A]) -> [f32; 4],
    two: impl Fn([&[W]; 2], &[A]) -> [f32; 2],
    one: impl Fn(&[W], &[A]) -> f32,
) {
    let n = out.len();
    let bb = size_of::<W>();
    let fits = (|| {
        let x = crate::quant::blocks::<W>(w.get(..n * rb)?).ok()?;
        let y = crate::quant::blocks::<A>(a).ok()?;
        (rb.is_multiple_of(bb) && rb > 0 && y.len() >= rb / bb).then_some((x, y))
    })();
    let Some((x, y)) = fits else {
        out.fill(f32::NAN);
        return;
    };
    let nb = rb / bb;
    let row = |r: usize| &x[r * nb..(r + 1) * nb];
    let y = &y[..nb];
    let q = n / 4;
    for i in 0..q {
        let v = four([row(i), row(q + i), row(2 * q + i), row(3 * q + i)], y);
        for (k, v) in v.into_iter().enumerate() {
            out[k * q + i] = v;
        }
    }
    let mut r = 4 * q;
    if n - r >= 2 {
        [out[r], out[r + 1]] = two([row(r), row(r + 1)], y);
        r += 2;
    }
    if r < n {
        out[r] = one(row(r), y);
    }
}

/// The rows of a Q5_0 matrix against one Q8_0 activation row ([`rows_by_four`]), each equal
/// to [`vec_dot_q5_0_q8_0`] of its row bit for bit.
fn rows_q5_0<const ISA: u8>(w: &[u8], rb: usize, a: &[u8], out: &mut [f32]) {
    // SAFETY (each call): only `Kernels::new` stores the entries below, for the path whose
    // `is_supported` check covers `ISA` (and the VBMI/GFNI form only where the CPU has both).
    rows_by_four::<BlockQ5_0, BlockQ8_0>(
        w,
        rb,
        a,
        out,
        |x, y| unsafe { vec_dots_q5_0_q8_0::<4, ISA>(x, y) },
        |x, y| unsafe { vec_dots_q5_0_q8_0::<2, ISA>(x, y) },
        |x, y| unsafe { vec_dot_q5_0_q8_0(x, y) },
    );
}

/// The rows of a Q5_1 matrix against one Q8_1 activation row ([`rows_by_four`]), each equal
/// to [`vec_dot_q5_1_q8_1`] of its row bit for bit.
fn rows_q5_1<const ISA: u8>(w: &[u8], rb: usize, a: &[u8], out: &mut [f32]) {
    // SAFETY (each call): as in `rows_q5_0`.
    rows_by_four::<BlockQ5_1, BlockQ8_1>(
        w,
        rb,
        a,
        out,
        |x, y| unsafe { vec_dots_q5_1_q8_1::<4, ISA>(x, y) },
        |x, y| unsafe { vec_dots_q5_1_q8_1::<2, ISA>(x, y) },
        |x, y| unsafe { vec_dot_q5_1_q8_1(x, y) },
    );
}

/// [`rows_q5_0`] with AVX2 alone.
pub(super) fn rows_q5_0_avx2(w: &[u8], rb: usize, a: &[u8], out: &mut [f32]) {
    rows_q5_0::<Q5_AVX2>(w, rb, a, out);
}

/// [`rows_q5_0`] with AVX-512 VNNI.
pub(super) fn rows_q5_0_vnni(w: &[u8], rb: usize, a: &[u8], out: &mut [f32]) {
    rows_q5_0::<Q5_VNNI>(w, rb, a, out);
}

/// [`rows_q5_0`] with AVX-512 VNNI, VBMI and GFNI.
pub(super) fn rows_q5_0_vbmi_gfni(w: &[u8], rb: usize, a: &[u8], out: &mut [f32]) {
    rows_q5_0::<Q5_VBMI_GFNI>(w, rb, a, out);
}

/// [`rows_q5_1`] with AVX2 alone.
pub(super) fn rows_q5_1_avx2(w: &[u8], rb: usize, a: &[u8], out: &mut [f32]) {
    rows_q5_1::<Q5_AVX2>(w, rb, a, out);
}

/// [`rows_q5_1`] with AVX-512 VNNI.
pub(super) fn rows_q5_1_vnni(w: &[u8], rb: usize, a: &[u8], out: &mut [f32]) {
    rows_q5_1::<Q5_VNNI>(w, rb, a, out);
}

/// [`rows_q5_1`] with AVX-512 VNNI, VBMI and GFNI.
pub(super) fn rows_q5_1_vbmi_gfni(w: &[u8], rb: usize, a: &[u8], out: &mut [f32]) {
    rows_q5_1::<Q5_VBMI_GFNI>(w, rb, a, out);
}

/// ggml's `vec_dot_q5_1_q8_1` with AVX2: levels 0..=31 times the activations with `maddubs`
/// (at most 2 · 31 · 128 per pair), one FMA per block into one accumulator, plus `m · s` summed
/// in block order: ggml's float order (twin:
/// [`scalar::vec_dot_q5_1_q8_1`](super::scalar::vec_dot_q5_1_q8_1)).
///
/// # Safety
/// AVX2, FMA and F16C must be available.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_q5_1_q8_1(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
    // SAFETY: as in `vec_dot_q5_0_q8_0`.
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_ps();
        // lane 1 collects Σ m·s
        let mut acc_m = _mm_setzero_ps();
        for (xb, yb) in x.iter().zip(y) {
            let q = q5_levels(&xb.qs, xb.qh);
            let a = load_q8(&yb.qs);
            let sumi = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(q, a), ones));
            // [xd, xm, yd, ys] → [xd·yd, xm·ys, ..]
            let s = f16x4([
                xb.d.to_bits(),
                xb.m.to_bits(),
                yb.d.to_bits(),
                yb.s.to_bits(),
            ]);
            let p = _mm_mul_ps(s, _mm_movehl_ps(s, s));
            acc = _mm256_fmadd_ps(sumi, _mm256_broadcastss_ps(p), acc);
            acc_m = _mm_add_ps(acc_m, p);
        }
        hsum_f32x8(acc) + _mm_cvtss_f32(_mm_movehdup_ps(acc_m))
    }
}

/// [`vec_dot_q5_1_q8_1`] of `N` rows (2 or 4) with one activation row, each bit for bit (as
/// [`vec_dots_q5_0_q8_0`]): per row and block the levels ([`q5_levels_isa`]) dotted by
/// [`dot_u8_i8`] (the lanes of the one-row kernel's `maddubs` + `madd`), one
/// conversion and one FMA by `xd·yd`, and `xm·ys` added into the row's lane of one 8-lane sum;
/// per block the rows' `d` and `m` (one 4-byte insert per row) and the activation's `d` and
/// `s` converted by two 8-lane `vcvtph2ps` and multiplied once.
///
/// # Safety
/// As [`vec_dots_q5_0_q8_0`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn vec_dots_q5_1_q8_1<const N: usize, const ISA: u8>(
    x: [&[BlockQ5_1]; N],
    y: &[BlockQ8_1],
) -> [f32; N] {
    const { assert!(N == 2 || N == 4) };
    // SAFETY: register intrinsics, loads of arrays owned by the blocks and unaligned reads of
    // the first four bytes of each block (its `d` and `m`, the activation's `d` and `s`); the
    // features are the caller's contract.
    unsafe {
        let zero = _mm256_setzero_si256();
        let mut acc = [_mm256_setzero_ps(); N];
        // lane 2r + 1 collects row r's Σ m·s
        let mut acc_m = _mm256_setzero_ps();
        let n = x.iter().fold(y.len(), |n, r| n.min(r.len()));
        // the first four bytes of a block: its f16 `d` then `m` (or `s`)
        let head = |b: *const u8| std::ptr::read_unaligned(b.cast::<i32>());
        for (i, yb) in y[..n].iter().enumerate() {
            // SAFETY: `i < n`, the shortest row's length.
            let b: [&BlockQ5_1; N] = std::array::from_fn(|r| unsafe { x[r].get_unchecked(i) });
            let a = load_q8(&yb.qs);
            let mut dm = _mm_cvtsi32_si128(head((b[0] as *const BlockQ5_1).cast()));
            dm = _mm_insert_epi32::<1>(dm, head((b[1] as *const BlockQ5_1).cast()));
            if N == 4 {
                dm = _mm_insert_epi32::<2>(dm, head((b[2] as *const BlockQ5_1).cast()));
                dm = _mm_insert_epi32::<3>(dm, head((b[3] as *const BlockQ5_1).cast()));
            }
            let ys = _mm256_cvtph_ps(_mm_set1_epi32(head((yb as *const BlockQ8_1).cast())));
            // [xd_r·yd, xm_r·ys] pairs: each the one-row kernel's product
            let p = _mm256_mul_ps(_mm256_cvtph_ps(dm), ys);
            acc_m = _mm256_add_ps(acc_m, p);
            // row r's `xd·yd` is `pd[2r]` (its `xm·ys` is `pd[2r + 1]`)
            let mut pd = [0f32; 8];
            _mm256_storeu_ps(pd.as_mut_ptr(), p);
            for r in 0..N {
                let s = dot_u8_i8::<ISA>(zero, q5_levels_isa::<ISA>(&b[r].qs, b[r].qh), a);
                acc[r] = fmadd_scale::<ISA>(acc[r], _mm256_cvtepi32_ps(s), &pd[2 * r]);
            }
        }
        let mut m = [0.0f32; 8];
        _mm256_storeu_ps(m.as_mut_ptr(), acc_m);
        std::array::from_fn(|r| hsum_f32x8(acc[r]) + m[2 * r + 1])
    }
}

// ---------------------------------------------------------------------------------------------
// Two-row K-quant dots: `[x0 · y, x1 · y]`, each equal bit for bit to the one-row kernel above
// (the same integers in each i32 lane, the same float operations in the same order), with the
// activation loads and `bsums` shared by both rows. The sub-block scales are spread to their
// lanes with `vpshufb` from one register per row instead of one scalar broadcast each. With
// `VNNI`, each `madd` + `add` pair is one `vpdpwssd` (the same wrapping i32 sums).

/// Q4_K's eight 6-bit scales (lanes 0..8) and eight mins (lanes 8..16) of a super-block as
/// i16 ([`scales_mins_k4`]).
///
/// # Safety
/// AVX2 must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_k_scales_mins(scales: &[u8; 12]) -> __m256i {
    let (sc, m) = scales_mins_k4(scales);
    // SAFETY: register-only intrinsics; AVX2 is the caller's contract.
    unsafe {
        _mm256_cvtepu8_epi16(_mm_set_epi64x(
            i64::from_le_bytes(m),
            i64::from_le_bytes(sc),
        ))
    }
}

/// The `vpshufb` mask that spreads i16 lane `k` of each 128-bit half to all eight of its lanes.
#[inline(always)]
fn spread_i16(k: usize) -> i16 {
    i16::from_le_bytes([2 * k as u8, 2 * k as u8 + 1])
}

/// `acc + madd(a, b)`, by `vpdpwssd` when `VNNI`.
///
/// # Safety
/// AVX2 must be available, and AVX512-VNNI and AVX512VL when `VNNI`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn madd_acc<const VNNI: bool>(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
    // SAFETY: register-only operations; the features are the caller's contract.
    unsafe {
        if VNNI {
            super::avx512::dpwssd(acc, a, b)
        } else {
            _mm256_add_epi32(acc, _mm256_madd_epi16(a, b))
        }
    }
}

/// The final reduction of [`vec_dot_q4_k_q8_k`]: the eight scale lanes plus the four min lanes.
///
/// # Safety
/// AVX2 must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_k_sum(acc: __m256, acc_m: __m128) -> f32 {
    // SAFETY: register-only intrinsics; AVX2 is the caller's contract.
    unsafe {
        let m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
        let m = _mm_add_ss(m, _mm_movehdup_ps(m));
        hsum_f32x8(acc) + _mm_cvtss_f32(m)
    }
}

row_dot2_entry!(row_dot2_q4_k, vec_dot2_q4_k_q8_k_avx2, BlockQ4K, BlockQ8K);
row_dot2_entry!(row_dot2_q6_k, vec_dot2_q6_k_q8_k_avx2, BlockQ6K, BlockQ8K);
row_dot2_entry!(
    row_dot2_q4_k_vnni,
    vec_dot2_q4_k_q8_k_vnni,
    BlockQ4K,
    BlockQ8K
);
row_dot2_entry!(
    row_dot2_q6_k_vnni,
    vec_dot2_q6_k_q8_k_vnni,
    BlockQ6K,
    BlockQ8K
);

/// [`vec_dot2_q4_k_q8_k`] for the AVX2 path.
///
/// # Safety
/// AVX2, FMA and F16C must be available.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn vec_dot2_q4_k_q8_k_avx2(x0: &[BlockQ4K], x1: &[BlockQ4K], y: &[BlockQ8K]) -> [f32; 2] {
    // SAFETY: the caller's contract is the kernel's.
    unsafe { vec_dot2_q4_k_q8_k::<false>(x0, x1, y) }
}

/// [`vec_dot2_q4_k_q8_k`] for the AVX-512 path.
///
/// # Safety
/// AVX2, FMA, F16C, AVX512-VNNI and AVX512VL must be available.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn vec_dot2_q4_k_q8_k_vnni(x0: &[BlockQ4K], x1: &[BlockQ4K], y: &[BlockQ8K]) -> [f32; 2] {
    // SAFETY: the caller's contract is the kernel's.
    unsafe { vec_dot2_q4_k_q8_k::<true>(x0, x1, y) }
}

/// [`vec_dot2_q6_k_q8_k`] for the AVX2 path.
///
/// # Safety
/// AVX2, FMA and F16C must be available.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn vec_dot2_q6_k_q8_k_avx2(x0: &[BlockQ6K], x1: &[BlockQ6K], y: &[BlockQ8K]) -> [f32; 2] {
    // SAFETY: the caller's contract is the kernel's.
    unsafe { vec_dot2_q6_k_q8_k::<false>(x0, x1, y) }
}

/// [`vec_dot2_q6_k_q8_k`] for the AVX-512 path.
///
/// # Safety
/// AVX2, FMA, F16C, AVX512-VNNI and AVX512VL must be available.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn vec_dot2_q6_k_q8_k_vnni(x0: &[BlockQ6K], x1: &[BlockQ6K], y: &[BlockQ8K]) -> [f32; 2] {
    // SAFETY: the caller's contract is the kernel's.
    unsafe { vec_dot2_q6_k_q8_k::<true>(x0, x1, y) }
}

/// [`vec_dot_q4_k_q8_k`] of two rows with one activation row, bit for bit.
///
/// # Safety
/// AVX2, FMA and F16C must be available, and AVX512-VNNI and AVX512VL when `VNNI`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn vec_dot2_q4_k_q8_k<const VNNI: bool>(
    x0: &[BlockQ4K],
    x1: &[BlockQ4K],
    y: &[BlockQ8K],
) -> [f32; 2] {
    // SAFETY: register intrinsics and loads through `load32`/`loadu` of whole arrays owned by the
    // blocks; the features are the caller's contract.
    unsafe {
        let m4 = _mm256_set1_epi8(0x0F);
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let (mut acc_m0, mut acc_m1) = (_mm_setzero_ps(), _mm_setzero_ps());
        for ((b0, b1), yb) in x0.iter().zip(x1).zip(y) {
            // the 8 sub-block sums of the activations, from the 16 bsums
            let bsums = _mm256_loadu_si256(yb.bsums.as_ptr().cast());
            let q8s = _mm_hadd_epi16(
                _mm256_castsi256_si128(bsums),
                _mm256_extracti128_si256(bsums, 1),
            );
            let ms0 = q4_k_scales_mins(&b0.scales);
            let ms1 = q4_k_scales_mins(&b1.scales);
            let prod0 = _mm_madd_epi16(_mm256_extracti128_si256(ms0, 1), q8s);
            let prod1 = _mm_madd_epi16(_mm256_extracti128_si256(ms1, 1), q8s);
            // the 8 scales in both halves
            let sc0 = _mm256_permute4x64_epi64(ms0, 0x44);
            let sc1 = _mm256_permute4x64_epi64(ms1, 0x44);

            // two sums per row (the low and the high nibbles), so that `vpdpwssd`'s latency
            // does not chain all eight sub-blocks
            let zero = _mm256_setzero_si256();
            let (mut sumi0, mut sumi1) = ([zero; 2], [zero; 2]);
            for j in 0..4 {
                let q8l = load32(chunk32(&yb.qs, 2 * j));
                let q8h = load32(chunk32(&yb.qs, 2 * j + 1));
                let spread_l = _mm256_set1_epi16(spread_i16(2 * j));
                let spread_h = _mm256_set1_epi16(spread_i16(2 * j + 1));
                for (sumi, b, sc) in [(&mut sumi0, b0, sc0), (&mut sumi1, b1, sc1)] {
                    let q4bits = load32(chunk32(&b.qs, j));
                    let q4l = _mm256_and_si256(q4bits, m4);
                    let q4h = _mm256_and_si256(_mm256_srli_epi16(q4bits, 4), m4);
                    let p16l = _mm256_maddubs_epi16(q4l, q8l);
                    let p16h = _mm256_maddubs_epi16(q4h, q8h);
                    sumi[0] = madd_acc::<VNNI>(sumi[0], _mm256_shuffle_epi8(sc, spread_l), p16l);
                    sumi[1] = madd_acc::<VNNI>(sumi[1], _mm256_shuffle_epi8(sc, spread_h), p16h);
                }
            }
            let sumi0 = _mm256_add_epi32(sumi0[0], sumi0[1]);
            let sumi1 = _mm256_add_epi32(sumi1[0], sumi1[1]);
            // [d0, dmin0, d1, dmin1] times [yd, -yd, yd, -yd]: the one-row kernel's products
            let s = f16x4([
                b0.d.to_bits(),
                b0.dmin.to_bits(),
                b1.d.to_bits(),
                b1.dmin.to_bits(),
            ]);
            let p = _mm_mul_ps(_mm_setr_ps(yb.d, -yb.d, yb.d, -yb.d), s);
            let d0 = _mm256_broadcastss_ps(p);
            let d1 = _mm256_broadcastss_ps(_mm_movehl_ps(p, p));
            let dmin0 = _mm_shuffle_ps(p, p, 0x55);
            let dmin1 = _mm_shuffle_ps(p, p, 0xFF);
            acc0 = _mm256_fmadd_ps(d0, _mm256_cvtepi32_ps(sumi0), acc0);
            acc1 = _mm256_fmadd_ps(d1, _mm256_cvtepi32_ps(sumi1), acc1);
            acc_m0 = _mm_fmadd_ps(dmin0, _mm_cvtepi32_ps(prod0), acc_m0);
            acc_m1 = _mm_fmadd_ps(dmin1, _mm_cvtepi32_ps(prod1), acc_m1);
        }
        [q4_k_sum(acc0, acc_m0), q4_k_sum(acc1, acc_m1)]
    }
}

/// The four 32-value chunks of 6-bit levels (0..=63) that half `n` of a Q6_K block holds, in
/// element order (as in [`vec_dot_q6_k_q8_k`]).
///
/// # Safety
/// AVX2 must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k_levels(xb: &BlockQ6K, n: usize) -> [__m256i; 4] {
    // SAFETY: loads of whole 32-byte chunks of the block's arrays; the rest is register-only.
    unsafe {
        let m4 = _mm256_set1_epi8(0x0F);
        let m2 = _mm256_set1_epi8(0x30);
        let ql1 = load32(chunk32(&xb.ql, 2 * n));
        let ql2 = load32(chunk32(&xb.ql, 2 * n + 1));
        let qh = load32(chunk32(&xb.qh, n));
        [
            _mm256_or_si256(
                _mm256_and_si256(ql1, m4),
                _mm256_and_si256(_mm256_slli_epi16(qh, 4), m2),
            ),
            _mm256_or_si256(
                _mm256_and_si256(ql2, m4),
                _mm256_and_si256(_mm256_slli_epi16(qh, 2), m2),
            ),
            _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                _mm256_and_si256(qh, m2),
            ),
            _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(ql2, 4), m4),
                _mm256_and_si256(_mm256_srli_epi16(qh, 2), m2),
            ),
        ]
    }
}

/// [`vec_dot_q6_k_q8_k`] of two rows with one activation row, bit for bit.
///
/// # Safety
/// AVX2, FMA and F16C must be available, and AVX512-VNNI and AVX512VL when `VNNI`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn vec_dot2_q6_k_q8_k<const VNNI: bool>(
    x0: &[BlockQ6K],
    x1: &[BlockQ6K],
    y: &[BlockQ8K],
) -> [f32; 2] {
    // SAFETY: as in `vec_dot2_q4_k_q8_k`; the scale loads read each block's 16 `scales` bytes.
    unsafe {
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for ((b0, b1), yb) in x0.iter().zip(x1).zip(y) {
            let bsums = _mm256_loadu_si256(yb.bsums.as_ptr().cast());
            let sc0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(b0.scales.as_ptr().cast()));
            let sc1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(b1.scales.as_ptr().cast()));
            // 32 · Σ_j sc_j · (activation sum of sub-block j)
            let mins0 = _mm256_slli_epi32(_mm256_madd_epi16(sc0, bsums), 5);
            let mins1 = _mm256_slli_epi32(_mm256_madd_epi16(sc1, bsums), 5);
            // scales 0..8 (half 0), then 8..16 (half 1), in both 128-bit halves
            let halves = [
                [
                    _mm256_permute4x64_epi64(sc0, 0x44),
                    _mm256_permute4x64_epi64(sc1, 0x44),
                ],
                [
                    _mm256_permute4x64_epi64(sc0, 0xEE),
                    _mm256_permute4x64_epi64(sc1, 0xEE),
                ],
            ];
            // two sums per row (even and odd chunks), as in `vec_dot2_q4_k_q8_k`
            let zero = _mm256_setzero_si256();
            let (mut sumi0, mut sumi1) = ([zero; 2], [zero; 2]);
            for (n, [h0, h1]) in halves.into_iter().enumerate() {
                let q0 = q6_k_levels(b0, n);
                let q1 = q6_k_levels(b1, n);
                for k in 0..4 {
                    let q8 = load32(chunk32(&yb.qs, 4 * n + k));
                    // sub-block 8n + 2k in the low lanes, 8n + 2k + 1 in the high ones
                    let spread = _mm256_setr_m128i(
                        _mm_set1_epi16(spread_i16(2 * k)),
                        _mm_set1_epi16(spread_i16(2 * k + 1)),
                    );
                    let p0 = _mm256_maddubs_epi16(q0[k], q8);
                    let p1 = _mm256_maddubs_epi16(q1[k], q8);
                    let e = k % 2;
                    sumi0[e] = madd_acc::<VNNI>(sumi0[e], _mm256_shuffle_epi8(h0, spread), p0);
                    sumi1[e] = madd_acc::<VNNI>(sumi1[e], _mm256_shuffle_epi8(h1, spread), p1);
                }
            }
            let sumi0 = _mm256_add_epi32(sumi0[0], sumi0[1]);
            let sumi1 = _mm256_add_epi32(sumi1[0], sumi1[1]);
            let s = f16x4([b0.d.to_bits(), b1.d.to_bits(), 0, 0]);
            let p = _mm_mul_ps(_mm_set1_ps(yb.d), s);
            let d0 = _mm256_broadcastss_ps(p);
            let d1 = _mm256_broadcastss_ps(_mm_movehdup_ps(p));
            acc0 = _mm256_fmadd_ps(d0, _mm256_cvtepi32_ps(_mm256_sub_epi32(sumi0, mins0)), acc0);
            acc1 = _mm256_fmadd_ps(d1, _mm256_cvtepi32_ps(_mm256_sub_epi32(sumi1, mins1)), acc1);
        }
        [hsum_f32x8(acc0), hsum_f32x8(acc1)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    /// The VBMI/GFNI form of the two-row Q5_0 dot equals the shuffle form bit for bit (the kernel
    /// table holds only the one this CPU prefers, so the property test sees only that one).
    #[test]
    fn q5_0_two_row_vbmi_gfni_equals_shuffle_form() {
        let supported = std::arch::is_x86_feature_detected!("avx512vbmi")
            && std::arch::is_x86_feature_detected!("gfni")
            && super::super::KernelPath::Avx512.is_supported();
        if !supported {
            eprintln!("skipped: this CPU lacks the AVX-512 path, VBMI or GFNI");
            return;
        }
        let mut seed = 0x9e37_79b9_u32;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for n in [1usize, 2, 3, 18, 20, 37] {
            let mut w = |salt: u32| -> Vec<BlockQ5_0> {
                (0..n)
                    .map(|_| BlockQ5_0 {
                        d: f16::from_f32((next() % 2000) as f32 / 1000.0 - 1.0 + salt as f32),
                        qh: next().to_le_bytes(),
                        qs: std::array::from_fn(|_| next() as u8),
                    })
                    .collect()
            };
            let (x0, x1) = (w(0), w(1));
            let y: Vec<BlockQ8_0> = (0..n)
                .map(|_| BlockQ8_0 {
                    d: f16::from_f32((next() % 1000) as f32 / 997.0),
                    qs: std::array::from_fn(|_| ((next() % 255) as i32 - 127) as i8),
                })
                .collect();
            // SAFETY: the features were checked above.
            let (a, b) = unsafe {
                (
                    vec_dot2_q5_0_q8_0::<Q5_VBMI_GFNI>(&x0, &x1, &y),
                    vec_dot2_q5_0_q8_0::<Q5_VNNI>(&x0, &x1, &y),
                )
            };
            assert_eq!(a.map(f32::to_bits), b.map(f32::to_bits), "{n} blocks");
        }
    }
}
