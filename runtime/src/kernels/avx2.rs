//! AVX2 + FMA + F16C kernels (x86_64): ggml's AVX2 row dots and Q8 activation quantizers, for
//! [`KernelPath::Avx2`](super::KernelPath::Avx2). The AVX-512 path reuses the float dots and the
//! quantizers from here.
//!
//! Every `unsafe fn` here requires AVX2, FMA and F16C. The safe `row_dot_*` / `quantize_row_*`
//! wrappers are `pub(super)` and only stored in a [`Kernels`](super::Kernels) table, which is
//! built after [`KernelPath::is_supported`](super::KernelPath::is_supported) said yes: that is
//! what makes calling them sound.
//!
//! Int paths (the body is [`int_row_dots!`], shared with the AVX-512 module, which swaps in its
//! own byte-dot primitives): Q4 blocks are taken two at a time, the low nibbles of both in one
//! register and the high nibbles in another, with the activation halves loaded to match, so one
//! int-to-float conversion and one FMA serve both blocks (each block's sum lands in its own
//! 128-bit half). Bytes are multiplied by `maddubs` (unsigned × signed), with the sign trick
//! `|x| · sign(y, x)` for signed weights: exact as long as the activation quants avoid -128,
//! which the Q8 quantizers guarantee (their range is [-127, 127]); weights may hold any byte.
//! The f16 scales of two blocks are converted together; steps alternate between two
//! accumulators to hide the FMA latency.

// Rust 1.85 (our MSRV) requires `unsafe` around every `core::arch` intrinsic; from 1.87 the
// pointer-free ones are safe inside `#[target_feature]` functions, where the blocks that hold
// only those then look unused.
#![allow(unused_unsafe)]

use std::arch::x86_64::*;

use half::{bf16, f16};

use crate::quant::blocks::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1, QK8_0};
use crate::quant::{fp32_to_fp16, quantize_act_row_q8_0, quantize_act_row_q8_1};

use super::scalar::{EXP_C, EXP_INV_LN2, EXP_LN2_HI, EXP_LN2_LO, EXP_SHIFT};
use super::{quantize_q8_groups, row_dot2_entry, row_dot_entry, rows_dot_entry, GROUP};

row_dot_entry!(row_dot_q4_0, vec_dot_q4_0_q8_0, BlockQ4_0, BlockQ8_0);
row_dot_entry!(row_dot_q4_1, vec_dot_q4_1_q8_1, BlockQ4_1, BlockQ8_1);
row_dot_entry!(row_dot_q8_0, vec_dot_q8_0_q8_0, BlockQ8_0, BlockQ8_0);
row_dot_entry!(row_dot_f16, vec_dot_f16, f16, f16);
row_dot_entry!(row_dot_f32, vec_dot_f32, f32, f32);
row_dot_entry!(row_dot_bf16, vec_dot_bf16_f32, bf16, f32);
row_dot2_entry!(row_dot2_q4_0, vec_dot2_q4_0_q8_0, BlockQ4_0, BlockQ8_0);
row_dot2_entry!(row_dot2_q4_1, vec_dot2_q4_1_q8_1, BlockQ4_1, BlockQ8_1);
row_dot2_entry!(row_dot2_q8_0, vec_dot2_q8_0_q8_0, BlockQ8_0, BlockQ8_0);
rows_dot_entry!(rows_dot_f16, vec_dots_f16, f16);
rows_dot_entry!(rows_dot_f32, vec_dots_f32, f32);

/// [`vec_soft_max_f32`] as a table entry.
pub(super) fn soft_max_f32(x: &mut [f32], max: f32) -> f64 {
    // SAFETY: only stored in a `Kernels` table for the avx2 or avx512 path, built after
    // `KernelPath::is_supported` confirmed AVX2, FMA and F16C.
    unsafe { vec_soft_max_f32(x, max) }
}

/// [`vec_swiglu_f32`] as a table entry.
pub(super) fn swiglu_f32(gate: &mut [f32], up: &[f32]) {
    // SAFETY: as for `soft_max_f32`.
    unsafe { vec_swiglu_f32(gate, up) }
}

/// [`quantize_row_q8_0_avx2`] as a table entry.
pub(super) fn quantize_row_q8_0_entry(x: &[f32], y: &mut [BlockQ8_0]) {
    // SAFETY: only stored in a `Kernels` table for the avx2 or avx512 path, built after
    // `KernelPath::is_supported` confirmed AVX2, FMA and F16C.
    unsafe { quantize_row_q8_0_avx2(x, y) }
}

/// [`quantize_row_q8_1_avx2`] as a table entry.
pub(super) fn quantize_row_q8_1_entry(x: &[f32], y: &mut [BlockQ8_1]) {
    // SAFETY: as for `quantize_row_q8_0_entry`.
    unsafe { quantize_row_q8_1_avx2(x, y) }
}

/// Two Q4 blocks' nibbles as bytes 0..=15, arranged for a pair step: `lo` holds elements
/// 0..16 of `q0` then of `q1` (the low nibbles), `hi` elements 16..32 of each (the high ones).
///
/// # Safety
/// AVX2 must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn nibbles_pair(q0: &[u8; 16], q1: &[u8; 16]) -> (__m256i, __m256i) {
    // SAFETY: each load reads one array's own 16 bytes; AVX2 is the caller's contract.
    unsafe {
        let v = _mm256_loadu2_m128i(q1.as_ptr().cast(), q0.as_ptr().cast());
        let m = _mm256_set1_epi8(0x0f);
        (
            _mm256_and_si256(v, m),
            _mm256_and_si256(_mm256_srli_epi16(v, 4), m),
        )
    }
}

/// Two Q8 blocks' quants arranged as [`nibbles_pair`] arranges Q4 elements.
///
/// # Safety
/// AVX2 must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q8_pair(y0: &[i8; 32], y1: &[i8; 32]) -> (__m256i, __m256i) {
    // SAFETY: each load reads 16 of one array's own 32 bytes.
    unsafe {
        let (p0, p1) = (y0.as_ptr(), y1.as_ptr());
        (
            _mm256_loadu2_m128i(p1.cast(), p0.cast()),
            _mm256_loadu2_m128i(p1.add(16).cast(), p0.add(16).cast()),
        )
    }
}

/// One Q4 block in the pair arrangement with an empty partner: elements 0..16 and 16..32 in
/// the low halves of `lo` and `hi` (bytes 0..=15), zeros above, and its Q8 block to match.
///
/// # Safety
/// AVX2 must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn nibbles_single(q: &[u8; 16], y: &[i8; 32]) -> [__m256i; 4] {
    // SAFETY: the loads read the arrays' own bytes; AVX2 is the caller's contract.
    unsafe {
        let v = _mm256_zextsi128_si256(_mm_loadu_si128(q.as_ptr().cast()));
        let m = _mm256_set1_epi8(0x0f);
        let yp = y.as_ptr();
        [
            _mm256_and_si256(v, m),
            _mm256_and_si256(_mm256_srli_epi16(v, 4), m),
            _mm256_zextsi128_si256(_mm_loadu_si128(yp.cast())),
            _mm256_zextsi128_si256(_mm_loadu_si128(yp.add(16).cast())),
        ]
    }
}

/// The 32 quants of a Q8 block.
///
/// # Safety
/// AVX2 must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn load_q8(qs: &[i8; 32]) -> __m256i {
    // SAFETY: `qs` is 32 readable bytes.
    unsafe { _mm256_loadu_si256(qs.as_ptr().cast()) }
}

/// `a · b` of two f16 scales (each converted exactly, as the scalar kernels do), in all 8 lanes.
///
/// # Safety
/// AVX2 and F16C must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn scale_product(a: f16, b: f16) -> __m256 {
    let bits = u32::from(a.to_bits()) | (u32::from(b.to_bits()) << 16);
    // SAFETY: register-only intrinsics; the features are the caller's contract.
    unsafe {
        let v = _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)); // [a, b, 0, 0]
        _mm256_broadcastss_ps(_mm_mul_ss(v, _mm_movehdup_ps(v)))
    }
}

/// The scale products of two block pairs from one conversion: `xd0·yd0` and `xd1·yd1`, each
/// broadcast to all 8 lanes.
///
/// # Safety
/// AVX2 and F16C must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn scale_products_2(xd0: f16, yd0: f16, xd1: f16, yd1: f16) -> (__m256, __m256) {
    let bits = u64::from(xd0.to_bits())
        | (u64::from(yd0.to_bits()) << 16)
        | (u64::from(xd1.to_bits()) << 32)
        | (u64::from(yd1.to_bits()) << 48);
    // SAFETY: register-only intrinsics; the features are the caller's contract.
    unsafe {
        let v = _mm_cvtph_ps(_mm_cvtsi64_si128(bits as i64)); // [xd0, yd0, xd1, yd1]
        let p = _mm_mul_ps(v, _mm_movehdup_ps(v)); // [d0, _, d1, _]
        (
            _mm256_broadcastss_ps(p),
            _mm256_broadcastss_ps(_mm_movehl_ps(p, p)),
        )
    }
}

/// An f16 value converted exactly to f32 in all eight lanes.
///
/// # Safety
/// AVX2 and F16C must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn f16_splat(h: f16) -> __m256 {
    // SAFETY: register-only intrinsics; the features are the caller's contract.
    unsafe { _mm256_cvtph_ps(_mm_set1_epi16(h.to_bits() as i16)) }
}

/// The scale products of two block pairs for the pair arrangement: `xd0·yd0` in lanes 0..4
/// and `xd1·yd1` in lanes 4..8.
///
/// # Safety
/// AVX2 and F16C must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn scale_products_split(xd0: f16, yd0: f16, xd1: f16, yd1: f16) -> __m256 {
    // SAFETY: register-only intrinsics; the features are the caller's contract.
    unsafe { _mm256_mul_ps(f16_halves(xd0, xd1), f16_halves(yd0, yd1)) }
}

/// `a` in lanes 0..4 and `b` in lanes 4..8, as f32: two broadcasts, a blend and one
/// conversion (cheaper than packing the halves in general registers). Two-row kernels convert
/// the activation pair's scales once this way and multiply each row's by them.
///
/// # Safety
/// AVX2 and F16C must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn f16_halves(a: f16, b: f16) -> __m256 {
    // SAFETY: register-only intrinsics; the features are the caller's contract.
    unsafe {
        let (a, b) = (a.to_bits() as i16, b.to_bits() as i16);
        _mm256_cvtph_ps(_mm_blend_epi16(_mm_set1_epi16(a), _mm_set1_epi16(b), 0xF0))
    }
}

/// A Q4_1 (or Q5_1) block pair's `[d, m]` f16 fields, then the activation pair's `[d, s]`,
/// each in lanes `0, 1` (first block) and `4, 5` (second) as f32; the other lanes are zero.
///
/// # Safety
/// AVX2 and F16C must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn f16_pair_fields(a0: [f16; 2], a1: [f16; 2]) -> __m256 {
    let word = |a: [f16; 2]| (u32::from(a[0].to_bits()) | (u32::from(a[1].to_bits()) << 16)) as i32;
    // SAFETY: register-only intrinsics; the features are the caller's contract.
    unsafe { _mm256_cvtph_ps(_mm_setr_epi32(word(a0), 0, word(a1), 0)) }
}

/// A Q4_1 block pair's f16 fields as one conversion: `(d, ms)` where `d` holds `xd0·yd0` in
/// lanes 0..4 and `xd1·yd1` in lanes 4..8, and `ms` holds `xm0·ys0` in lane 1 and `xm1·ys1` in
/// lane 5 (its other lanes are scale products, ignored).
///
/// # Safety
/// AVX2 and F16C must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn scale_products_q4_1_split(
    x0: &BlockQ4_1,
    x1: &BlockQ4_1,
    y0: &BlockQ8_1,
    y1: &BlockQ8_1,
) -> (__m256, __m256) {
    let pack = |x: &BlockQ4_1, y: &BlockQ8_1| {
        (u64::from(x.d.to_bits())
            | (u64::from(x.m.to_bits()) << 16)
            | (u64::from(y.d.to_bits()) << 32)
            | (u64::from(y.s.to_bits()) << 48)) as i64
    };
    let (b0, b1) = (pack(x0, y0), pack(x1, y1));
    // SAFETY: register-only intrinsics; the features are the caller's contract.
    unsafe {
        // [xd0, xm0, yd0, ys0 | xd1, xm1, yd1, ys1]
        let v = _mm256_cvtph_ps(_mm_set_epi64x(b1, b0));
        // lanes 0, 1 of each half times lanes 2, 3: [d, ms, _, _ | d, ms, _, _]
        let p = _mm256_mul_ps(v, _mm256_permute_ps(v, 0b11_10_11_10));
        (_mm256_permute_ps(p, 0), p)
    }
}

/// A Q4_1 block's `(d, ms)` as [`scale_products_q4_1_split`] lays out a pair's, for a block
/// without a partner: `xd·yd` in all lanes, `xm·ys` in lane 1.
///
/// # Safety
/// AVX2 and F16C must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn scale_products_q4_1_single(x: &BlockQ4_1, y: &BlockQ8_1) -> (__m256, __m256) {
    let xb = u64::from(x.d.to_bits()) | (u64::from(x.m.to_bits()) << 16);
    let yb = u64::from(y.d.to_bits()) | (u64::from(y.s.to_bits()) << 16);
    // SAFETY: register-only intrinsics; the features are the caller's contract.
    unsafe {
        let v = _mm_cvtph_ps(_mm_cvtsi64_si128((xb | (yb << 32)) as i64)); // [xd, xm, yd, ys]
        let p = _mm_mul_ps(v, _mm_movehl_ps(v, v)); // [d, ms, _, _]
        (_mm256_broadcastss_ps(p), _mm256_zextps128_ps256(p))
    }
}

/// Σ lanes 1 and 5: the `m·s` sums of [`scale_products_q4_1_split`]'s accumulated `ms`.
///
/// # Safety
/// AVX must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn sum_lanes_1_5(v: __m256) -> f32 {
    // SAFETY: register-only intrinsics; AVX is the caller's contract.
    unsafe {
        let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        _mm_cvtss_f32(_mm_movehdup_ps(h))
    }
}

/// The sum of the 8 lanes.
///
/// # Safety
/// AVX must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn hsum_f32_8(v: __m256) -> f32 {
    // SAFETY: register-only intrinsics; AVX is the caller's contract.
    unsafe {
        let r = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
        let r = _mm_add_ps(r, _mm_movehl_ps(r, r));
        let r = _mm_add_ss(r, _mm_movehdup_ps(r));
        _mm_cvtss_f32(r)
    }
}

/// Defines the three int row dots (`vec_dot_q4_0_q8_0`, `vec_dot_q4_1_q8_1`,
/// `vec_dot_q8_0_q8_0`) over this module's int-dot primitives, which must be in scope:
/// - `dot_q4_pair(lo, hi, ylo, yhi) -> __m256i`: Σ q·y over groups of 4 bytes, `q` unsigned
///   nibbles, `y` signed quants, for the two halves of a pair (`lo·ylo + hi·yhi`);
/// - `dot_q4_pair_off8(lo, hi, ylo, yhi) -> __m256i`: the same for `(q - 8)·y`;
/// - `dot_i8(x, y) -> __m256i`: Σ x·y over groups of 4 signed bytes (`y != -128`).
///
/// The Q4 dots take two blocks per step in the pair arrangement ([`nibbles_pair`]): one
/// conversion, one FMA for both. Q8_0 blocks are whole registers already; they share only the
/// scale conversion. Steps alternate between two accumulators to hide the FMA latency.
macro_rules! int_row_dots {
    ($features:literal) => {
        /// Two Q4_1 block pairs' contribution: scaled int sums added to `acc.0`, the pair's
        /// `m·s` to lanes 1 and 5 of `acc.1`.
        ///
        /// # Safety
        /// The module's features must be available.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn pair_q4_1(
            x: &[BlockQ4_1],
            y: &[BlockQ8_1],
            acc: (__m256, __m256),
        ) -> (__m256, __m256) {
            // SAFETY: as in `pair_q4_0`.
            unsafe {
                let (lo, hi) = nibbles_pair(&x[0].qs, &x[1].qs);
                let (ylo, yhi) = q8_pair(&y[0].qs, &y[1].qs);
                let q = _mm256_cvtepi32_ps(dot_q4_pair(lo, hi, ylo, yhi));
                let (d, ms) = scale_products_q4_1_split(&x[0], &x[1], &y[0], &y[1]);
                (_mm256_fmadd_ps(d, q, acc.0), _mm256_add_ps(acc.1, ms))
            }
        }

        /// One Q4_1 block pair's contribution, laid out as [`pair_q4_1`]'s.
        ///
        /// # Safety
        /// The module's features must be available.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn single_q4_1(
            x: &BlockQ4_1,
            y: &BlockQ8_1,
            acc: (__m256, __m256),
        ) -> (__m256, __m256) {
            // SAFETY: as in `pair_q4_0`.
            unsafe {
                let [lo, hi, ylo, yhi] = nibbles_single(&x.qs, &y.qs);
                let q = _mm256_cvtepi32_ps(dot_q4_pair(lo, hi, ylo, yhi));
                let (d, ms) = scale_products_q4_1_single(x, y);
                (_mm256_fmadd_ps(d, q, acc.0), _mm256_add_ps(acc.1, ms))
            }
        }

        /// Σ q4 · q8 per block times both scales, plus `m · s` (twin:
        /// [`scalar::vec_dot_q4_1_q8_1`](super::scalar::vec_dot_q4_1_q8_1)).
        ///
        /// # Safety
        /// The module's features must be available.
        #[target_feature(enable = $features)]
        pub(super) unsafe fn vec_dot_q4_1_q8_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
            // SAFETY: the step helpers need exactly our features.
            unsafe {
                let zero = (_mm256_setzero_ps(), _mm256_setzero_ps());
                let (a0, a1) = dot_block_pairs!(x, y, zero, pair_q4_1, single_q4_1);
                hsum_f32_8(_mm256_add_ps(a0.0, a1.0)) + sum_lanes_1_5(_mm256_add_ps(a0.1, a1.1))
            }
        }

        /// Two Q8_0 block pairs' contribution added to `acc`.
        ///
        /// # Safety
        /// The module's features must be available.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn pair_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0], acc: __m256) -> __m256 {
            // SAFETY: as in `pair_q4_0`.
            unsafe {
                let (d0, d1) = scale_products_2(x[0].d, y[0].d, x[1].d, y[1].d);
                let q0 = _mm256_cvtepi32_ps(dot_i8(load_q8(&x[0].qs), load_q8(&y[0].qs)));
                let q1 = _mm256_cvtepi32_ps(dot_i8(load_q8(&x[1].qs), load_q8(&y[1].qs)));
                _mm256_fmadd_ps(d1, q1, _mm256_fmadd_ps(d0, q0, acc))
            }
        }

        /// One Q8_0 block pair's contribution added to `acc`.
        ///
        /// # Safety
        /// The module's features must be available.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn single_q8_0(x: &BlockQ8_0, y: &BlockQ8_0, acc: __m256) -> __m256 {
            // SAFETY: as in `pair_q4_0`.
            unsafe {
                let q = _mm256_cvtepi32_ps(dot_i8(load_q8(&x.qs), load_q8(&y.qs)));
                _mm256_fmadd_ps(scale_product(x.d, y.d), q, acc)
            }
        }

        /// Σ q8 · q8 per block, times both scales (twin:
        /// [`scalar::vec_dot_q8_0_q8_0`](super::scalar::vec_dot_q8_0_q8_0)).
        ///
        /// # Safety
        /// The module's features must be available.
        #[target_feature(enable = $features)]
        pub(super) unsafe fn vec_dot_q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
            // SAFETY: the step helpers need exactly our features.
            unsafe {
                let (a0, a1) = dot_block_pairs!(x, y, _mm256_setzero_ps(), pair_q8_0, single_q8_0);
                hsum_f32_8(_mm256_add_ps(a0, a1))
            }
        }

        /// Two rows' [`pair_q4_1`]: the activation pair loaded once.
        ///
        /// # Safety
        /// The module's features must be available.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn pair2_q4_1(
            x0: &[BlockQ4_1],
            x1: &[BlockQ4_1],
            y: &[BlockQ8_1],
            acc: ((__m256, __m256), (__m256, __m256)),
        ) -> ((__m256, __m256), (__m256, __m256)) {
            // SAFETY: as in `pair_q4_0`.
            unsafe {
                let (ylo, yhi) = q8_pair(&y[0].qs, &y[1].qs);
                let (lo0, hi0) = nibbles_pair(&x0[0].qs, &x0[1].qs);
                let (lo1, hi1) = nibbles_pair(&x1[0].qs, &x1[1].qs);
                let q0 = _mm256_cvtepi32_ps(dot_q4_pair(lo0, hi0, ylo, yhi));
                let q1 = _mm256_cvtepi32_ps(dot_q4_pair(lo1, hi1, ylo, yhi));
                // [xd·yd, xm·ys] of each block in lanes 0, 1 and 4, 5, as the one-row split.
                let yds = f16_pair_fields([y[0].d, y[0].s], [y[1].d, y[1].s]);
                let ms0 =
                    _mm256_mul_ps(f16_pair_fields([x0[0].d, x0[0].m], [x0[1].d, x0[1].m]), yds);
                let ms1 =
                    _mm256_mul_ps(f16_pair_fields([x1[0].d, x1[0].m], [x1[1].d, x1[1].m]), yds);
                let (d0, d1) = (_mm256_permute_ps(ms0, 0), _mm256_permute_ps(ms1, 0));
                (
                    (
                        _mm256_fmadd_ps(d0, q0, acc.0 .0),
                        _mm256_add_ps(acc.0 .1, ms0),
                    ),
                    (
                        _mm256_fmadd_ps(d1, q1, acc.1 .0),
                        _mm256_add_ps(acc.1 .1, ms1),
                    ),
                )
            }
        }

        /// Two rows' [`single_q4_1`].
        ///
        /// # Safety
        /// The module's features must be available.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn single2_q4_1(
            x0: &BlockQ4_1,
            x1: &BlockQ4_1,
            y: &BlockQ8_1,
            acc: ((__m256, __m256), (__m256, __m256)),
        ) -> ((__m256, __m256), (__m256, __m256)) {
            // SAFETY: as in `pair_q4_0`.
            unsafe { (single_q4_1(x0, y, acc.0), single_q4_1(x1, y, acc.1)) }
        }

        /// [`vec_dot_q4_1_q8_1`] of two rows with one activation row, bit for bit.
        ///
        /// # Safety
        /// The module's features must be available.
        #[target_feature(enable = $features)]
        pub(super) unsafe fn vec_dot2_q4_1_q8_1(
            x0: &[BlockQ4_1],
            x1: &[BlockQ4_1],
            y: &[BlockQ8_1],
        ) -> [f32; 2] {
            // SAFETY: the step helpers need exactly our features.
            unsafe {
                let z = (_mm256_setzero_ps(), _mm256_setzero_ps());
                let (a0, a1) = dot_block_pairs2!(x0, x1, y, (z, z), pair2_q4_1, single2_q4_1);
                let row = |a: (__m256, __m256), b: (__m256, __m256)| {
                    hsum_f32_8(_mm256_add_ps(a.0, b.0)) + sum_lanes_1_5(_mm256_add_ps(a.1, b.1))
                };
                [row(a0.0, a1.0), row(a0.1, a1.1)]
            }
        }

        /// Two rows' [`pair_q8_0`]: the activation pair loaded once.
        ///
        /// # Safety
        /// The module's features must be available.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn pair2_q8_0(
            x0: &[BlockQ8_0],
            x1: &[BlockQ8_0],
            y: &[BlockQ8_0],
            acc: (__m256, __m256),
        ) -> (__m256, __m256) {
            // SAFETY: as in `pair_q4_0`.
            unsafe {
                let (y0, y1) = (load_q8(&y[0].qs), load_q8(&y[1].qs));
                // each scale broadcast from memory and converted in place: no scalar assembly
                let (yd0, yd1) = (f16_splat(y[0].d), f16_splat(y[1].d));
                let d00 = _mm256_mul_ps(f16_splat(x0[0].d), yd0);
                let d01 = _mm256_mul_ps(f16_splat(x0[1].d), yd1);
                let d10 = _mm256_mul_ps(f16_splat(x1[0].d), yd0);
                let d11 = _mm256_mul_ps(f16_splat(x1[1].d), yd1);
                let q00 = _mm256_cvtepi32_ps(dot_i8(load_q8(&x0[0].qs), y0));
                let q01 = _mm256_cvtepi32_ps(dot_i8(load_q8(&x0[1].qs), y1));
                let q10 = _mm256_cvtepi32_ps(dot_i8(load_q8(&x1[0].qs), y0));
                let q11 = _mm256_cvtepi32_ps(dot_i8(load_q8(&x1[1].qs), y1));
                (
                    _mm256_fmadd_ps(d01, q01, _mm256_fmadd_ps(d00, q00, acc.0)),
                    _mm256_fmadd_ps(d11, q11, _mm256_fmadd_ps(d10, q10, acc.1)),
                )
            }
        }

        /// Two rows' [`single_q8_0`].
        ///
        /// # Safety
        /// The module's features must be available.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn single2_q8_0(
            x0: &BlockQ8_0,
            x1: &BlockQ8_0,
            y: &BlockQ8_0,
            acc: (__m256, __m256),
        ) -> (__m256, __m256) {
            // SAFETY: as in `pair_q4_0`.
            unsafe { (single_q8_0(x0, y, acc.0), single_q8_0(x1, y, acc.1)) }
        }

        /// [`vec_dot_q8_0_q8_0`] of two rows with one activation row, bit for bit.
        ///
        /// # Safety
        /// The module's features must be available.
        #[target_feature(enable = $features)]
        pub(super) unsafe fn vec_dot2_q8_0_q8_0(
            x0: &[BlockQ8_0],
            x1: &[BlockQ8_0],
            y: &[BlockQ8_0],
        ) -> [f32; 2] {
            // SAFETY: the step helpers need exactly our features.
            unsafe {
                let zero = (_mm256_setzero_ps(), _mm256_setzero_ps());
                let (a0, a1) = dot_block_pairs2!(x0, x1, y, zero, pair2_q8_0, single2_q8_0);
                [
                    hsum_f32_8(_mm256_add_ps(a0.0, a1.0)),
                    hsum_f32_8(_mm256_add_ps(a0.1, a1.1)),
                ]
            }
        }
    };
}

/// Defines the Q4_0 row dots (`vec_dot_q4_0_q8_0`, `vec_dot2_q4_0_q8_0`) over the
/// int-dot primitives [`int_row_dots`] names, plus `q4_0_offset(ylo, yhi) -> __m256i` (`8·Σy`
/// of an activation pair) and `dot_q4_pair_offset(lo, hi, ylo, yhi, off)` (`Σ q·y - off`).
macro_rules! q4_0_row_dots {
    ($features:literal) => {
        /// Two Q4_0 block pairs' contribution added to `acc`.
        ///
        /// # Safety
        /// The module's features must be available.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn pair_q4_0(x: &[BlockQ4_0], y: &[BlockQ8_0], acc: __m256) -> __m256 {
            // SAFETY: the helpers read the blocks' own arrays; the features are the caller's
            // contract.
            unsafe {
                let (lo, hi) = nibbles_pair(&x[0].qs, &x[1].qs);
                let (ylo, yhi) = q8_pair(&y[0].qs, &y[1].qs);
                let q = _mm256_cvtepi32_ps(dot_q4_pair_off8(lo, hi, ylo, yhi));
                let d = scale_products_split(x[0].d, y[0].d, x[1].d, y[1].d);
                _mm256_fmadd_ps(d, q, acc)
            }
        }

        /// One Q4_0 block pair's contribution added to `acc`.
        ///
        /// # Safety
        /// The module's features must be available.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn single_q4_0(x: &BlockQ4_0, y: &BlockQ8_0, acc: __m256) -> __m256 {
            // SAFETY: as in `pair_q4_0`.
            unsafe {
                let [lo, hi, ylo, yhi] = nibbles_single(&x.qs, &y.qs);
                let q = _mm256_cvtepi32_ps(dot_q4_pair_off8(lo, hi, ylo, yhi));
                _mm256_fmadd_ps(scale_product(x.d, y.d), q, acc)
            }
        }

        /// Σ (q4 - 8) · q8 per block, times both scales (twin:
        /// [`scalar::vec_dot_q4_0_q8_0`](super::scalar::vec_dot_q4_0_q8_0)).
        ///
        /// # Safety
        /// The module's features must be available.
        #[target_feature(enable = $features)]
        pub(super) unsafe fn vec_dot_q4_0_q8_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
            // SAFETY: the step helpers need exactly our features.
            unsafe {
                let (a0, a1) = dot_block_pairs!(x, y, _mm256_setzero_ps(), pair_q4_0, single_q4_0);
                hsum_f32_8(_mm256_add_ps(a0, a1))
            }
        }

        /// Two rows' [`pair_q4_0`]: the activation pair loaded and its offset computed once.
        ///
        /// # Safety
        /// The module's features must be available.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn pair2_q4_0(
            x0: &[BlockQ4_0],
            x1: &[BlockQ4_0],
            y: &[BlockQ8_0],
            acc: (__m256, __m256),
        ) -> (__m256, __m256) {
            // SAFETY: as in `pair_q4_0`.
            unsafe {
                let (ylo, yhi) = q8_pair(&y[0].qs, &y[1].qs);
                let off = q4_0_offset(ylo, yhi);
                let (lo0, hi0) = nibbles_pair(&x0[0].qs, &x0[1].qs);
                let (lo1, hi1) = nibbles_pair(&x1[0].qs, &x1[1].qs);
                let q0 = _mm256_cvtepi32_ps(dot_q4_pair_offset(lo0, hi0, ylo, yhi, off));
                let q1 = _mm256_cvtepi32_ps(dot_q4_pair_offset(lo1, hi1, ylo, yhi, off));
                let yd = f16_halves(y[0].d, y[1].d);
                let d0 = _mm256_mul_ps(f16_halves(x0[0].d, x0[1].d), yd);
                let d1 = _mm256_mul_ps(f16_halves(x1[0].d, x1[1].d), yd);
                (
                    _mm256_fmadd_ps(d0, q0, acc.0),
                    _mm256_fmadd_ps(d1, q1, acc.1),
                )
            }
        }

        /// Two rows' [`single_q4_0`].
        ///
        /// # Safety
        /// The module's features must be available.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn single2_q4_0(
            x0: &BlockQ4_0,
            x1: &BlockQ4_0,
            y: &BlockQ8_0,
            acc: (__m256, __m256),
        ) -> (__m256, __m256) {
            // SAFETY: as in `pair_q4_0`.
            unsafe { (single_q4_0(x0, y, acc.0), single_q4_0(x1, y, acc.1)) }
        }

        /// [`vec_dot_q4_0_q8_0`] of two rows with one activation row, bit for bit.
        ///
        /// # Safety
        /// The module's features must be available.
        #[target_feature(enable = $features)]
        pub(super) unsafe fn vec_dot2_q4_0_q8_0(
            x0: &[BlockQ4_0],
            x1: &[BlockQ4_0],
            y: &[BlockQ8_0],
        ) -> [f32; 2] {
            // SAFETY: the step helpers need exactly our features.
            unsafe {
                let zero = (_mm256_setzero_ps(), _mm256_setzero_ps());
                let (a0, a1) = dot_block_pairs2!(x0, x1, y, zero, pair2_q4_0, single2_q4_0);
                [
                    hsum_f32_8(_mm256_add_ps(a0.0, a1.0)),
                    hsum_f32_8(_mm256_add_ps(a0.1, a1.1)),
                ]
            }
        }
    };
}
pub(super) use int_row_dots;

/// Runs `$pair(&x[i..i + 2], &y[i..i + 2], acc)` over the first `min(x.len(), y.len())` block
/// pairs, alternating two accumulators, and `$single` on an odd last block; returns both
/// accumulators for the caller to combine. The step functions must carry the caller's
/// `#[target_feature]`s (a closure would not inherit them and its intrinsics would not inline).
macro_rules! dot_block_pairs {
    ($x:expr, $y:expr, $zero:expr, $pair:path, $single:path) => {{
        let n = $x.len().min($y.len());
        let (x, y) = (&$x[..n], &$y[..n]);
        let (mut a0, mut a1) = ($zero, $zero);
        let (xq, yq) = (x.chunks_exact(4), y.chunks_exact(4));
        let (xr, yr) = (xq.remainder(), yq.remainder());
        for (xs, ys) in xq.zip(yq) {
            a0 = $pair(&xs[..2], &ys[..2], a0);
            a1 = $pair(&xs[2..], &ys[2..], a1);
        }
        if let (Some(xp), Some(yp)) = (xr.get(..2), yr.get(..2)) {
            a0 = $pair(xp, yp, a0);
        }
        if let (true, Some(xb), Some(yb)) = (xr.len() % 2 == 1, xr.last(), yr.last()) {
            a1 = $single(xb, yb, a1);
        }
        (a0, a1)
    }};
}
pub(super) use dot_block_pairs;

/// [`dot_block_pairs!`] over two weight rows `$x0`, `$x1` and one activation row: the step
/// functions take both rows' blocks and a tuple of the two rows' accumulators, and each row's
/// accumulators see exactly the steps they see in the one-row loop (so the results are equal
/// bit for bit).
macro_rules! dot_block_pairs2 {
    ($x0:expr, $x1:expr, $y:expr, $zero:expr, $pair:path, $single:path) => {{
        let n = $x0.len().min($x1.len()).min($y.len());
        let (x0, x1, y) = (&$x0[..n], &$x1[..n], &$y[..n]);
        let (mut a0, mut a1) = ($zero, $zero);
        let (q0, q1, yq) = (x0.chunks_exact(4), x1.chunks_exact(4), y.chunks_exact(4));
        let (r0, r1, yr) = (q0.remainder(), q1.remainder(), yq.remainder());
        for ((b0, b1), ys) in q0.zip(q1).zip(yq) {
            a0 = $pair(&b0[..2], &b1[..2], &ys[..2], a0);
            a1 = $pair(&b0[2..], &b1[2..], &ys[2..], a1);
        }
        if let (Some(p0), Some(p1), Some(yp)) = (r0.get(..2), r1.get(..2), yr.get(..2)) {
            a0 = $pair(p0, p1, yp, a0);
        }
        if let (true, Some(b0), Some(b1), Some(yb)) =
            (yr.len() % 2 == 1, r0.last(), r1.last(), yr.last())
        {
            a1 = $single(b0, b1, yb, a1);
        }
        (a0, a1)
    }};
}
pub(super) use dot_block_pairs2;

/// Σ (q - 8)·y for the pair arrangement, with `maddubs` and the sign trick on `q - 8`; the two
/// halves' i16 pair sums (each at most 2·8·127) add without overflow before widening.
///
/// # Safety
/// AVX2 must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q4_pair_off8(lo: __m256i, hi: __m256i, ylo: __m256i, yhi: __m256i) -> __m256i {
    // SAFETY: register-only intrinsics; AVX2 is the caller's contract.
    unsafe {
        let eight = _mm256_set1_epi8(8);
        let (lo, hi) = (_mm256_sub_epi8(lo, eight), _mm256_sub_epi8(hi, eight));
        let p_lo = _mm256_maddubs_epi16(_mm256_sign_epi8(lo, lo), _mm256_sign_epi8(ylo, lo));
        let p_hi = _mm256_maddubs_epi16(_mm256_sign_epi8(hi, hi), _mm256_sign_epi8(yhi, hi));
        _mm256_madd_epi16(_mm256_add_epi16(p_lo, p_hi), _mm256_set1_epi16(1))
    }
}

/// Σ q·y for the pair arrangement (`q` nibbles 0..=15, so `maddubs` needs no sign trick); the
/// two halves' i16 pair sums (each at most 2·15·128) add without overflow before widening.
///
/// # Safety
/// AVX2 must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q4_pair(lo: __m256i, hi: __m256i, ylo: __m256i, yhi: __m256i) -> __m256i {
    // SAFETY: register-only intrinsics; AVX2 is the caller's contract.
    unsafe {
        let p = _mm256_add_epi16(_mm256_maddubs_epi16(lo, ylo), _mm256_maddubs_epi16(hi, yhi));
        _mm256_madd_epi16(p, _mm256_set1_epi16(1))
    }
}

/// Σ x·y over each group of 4 bytes as 8 i32 lanes, for signed `x` and `y` with `y != -128`
/// (the sign trick: `|x| · sign(y, x)` fits `maddubs` without saturating).
///
/// # Safety
/// AVX2 must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_i8(x: __m256i, y: __m256i) -> __m256i {
    // SAFETY: register-only intrinsics; AVX2 is the caller's contract.
    unsafe {
        let p = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
        _mm256_madd_epi16(p, _mm256_set1_epi16(1))
    }
}

/// The part of the Q4_0 offset `8·Σy` two rows can share: none here (the `maddubs` form
/// subtracts 8 from the nibbles instead).
///
/// # Safety
/// AVX2 must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_0_offset(_ylo: __m256i, _yhi: __m256i) -> __m256i {
    // SAFETY: register-only; AVX2 is the caller's contract.
    unsafe { _mm256_setzero_si256() }
}

/// [`dot_q4_pair_off8`], given [`q4_0_offset`]'s result.
///
/// # Safety
/// AVX2 must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q4_pair_offset(
    lo: __m256i,
    hi: __m256i,
    ylo: __m256i,
    yhi: __m256i,
    _off: __m256i,
) -> __m256i {
    // SAFETY: register-only; AVX2 is the caller's contract.
    unsafe { dot_q4_pair_off8(lo, hi, ylo, yhi) }
}

int_row_dots!("avx2,fma,f16c");
q4_0_row_dots!("avx2,fma,f16c");

/// Σ x·y over the first `n` elements: `|i| load` gives 8 f32 lanes of each side starting at
/// element `i`, `|i| tail` the product of element `i`. Four accumulators of 8 lanes, then 8-wide
/// steps, then the tail one element at a time. (A macro, not closures: closures do not inherit
/// the enclosing `#[target_feature]`, so their intrinsics would not inline.)
macro_rules! float_dot {
    ($n:expr, |$i:ident| $load:expr, |$j:ident| $tail:expr) => {{
        let n: usize = $n;
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut base = 0;
        while base + 32 <= n {
            for (k, a) in acc.iter_mut().enumerate() {
                let $i = base + 8 * k;
                let (x, y) = $load;
                *a = _mm256_fmadd_ps(x, y, *a);
            }
            base += 32;
        }
        while base + 8 <= n {
            let $i = base;
            let (x, y) = $load;
            acc[0] = _mm256_fmadd_ps(x, y, acc[0]);
            base += 8;
        }
        let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut sumf = hsum_f32_8(sum);
        for $j in base..n {
            sumf += $tail;
        }
        sumf
    }};
}

/// Σ x·y in f32 lanes (the scalar twin [`scalar::vec_dot_f32`](super::scalar::vec_dot_f32)
/// sums in f64; the difference is float rounding only).
///
/// # Safety
/// AVX2 and FMA must be available.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_f32(x: &[f32], y: &[f32]) -> f32 {
    let (xp, yp) = (x.as_ptr(), y.as_ptr());
    // SAFETY: `float_dot!` loads elements `i..i + 8` only while `i + 8 <= n`, with `n` the
    // shorter length.
    unsafe {
        float_dot!(
            x.len().min(y.len()),
            |i| (_mm256_loadu_ps(xp.add(i)), _mm256_loadu_ps(yp.add(i))),
            |j| x[j] * y[j]
        )
    }
}

/// Σ x·y over f16 rows, converted to f32 lanes (twin: [`scalar::vec_dot_f16`](super::scalar::vec_dot_f16)).
///
/// # Safety
/// AVX2, FMA and F16C must be available.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_f16(x: &[f16], y: &[f16]) -> f32 {
    let (xp, yp) = (x.as_ptr(), y.as_ptr());
    // SAFETY: as in `vec_dot_f32`: 8 f16 (16 bytes) are loaded only while `i + 8 <= n`.
    unsafe {
        float_dot!(
            x.len().min(y.len()),
            |i| (
                _mm256_cvtph_ps(_mm_loadu_si128(xp.add(i).cast())),
                _mm256_cvtph_ps(_mm_loadu_si128(yp.add(i).cast()))
            ),
            |j| x[j].to_f32() * y[j].to_f32()
        )
    }
}

/// The four sums of `a`, `b`, `c`, `d`'s lanes, in that order (three `hadd`s and one add
/// instead of four separate reductions).
///
/// # Safety
/// AVX must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum_f32_8x4(a: __m256, b: __m256, c: __m256, d: __m256) -> __m128 {
    // SAFETY: register-only intrinsics; AVX is the caller's contract.
    unsafe {
        // [a01 a23 b01 b23 | a45 a67 b45 b67], then [a0-3 b0-3 c0-3 d0-3 | a4-7 b4-7 c4-7 d4-7]
        let abcd = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
        _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1))
    }
}

/// The sum of one register's lanes in exactly [`hsum_f32_8x4`]'s order, so a result does not
/// depend on whether its sum was reduced alone or in a group of four (attention must give a
/// query the same scores however its batch was grouped: a conversation continued from the
/// prompt cache has to match the same prompt evaluated fresh).
///
/// # Safety
/// AVX must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum_f32_8_as_x4(a: __m256) -> f32 {
    // SAFETY: register-only intrinsics; AVX is the caller's contract.
    unsafe {
        let t = _mm256_hadd_ps(a, a);
        let t = _mm256_hadd_ps(t, t);
        _mm_cvtss_f32(_mm_add_ps(
            _mm256_castps256_ps128(t),
            _mm256_extractf128_ps(t, 1),
        ))
    }
}

/// Defines `$step`, `$group` and `$dots` for rows of `$t`, whose `|$p| $load` reads 8 elements
/// at `$p` as f32 lanes.
///
/// `$step::<N, G>` dots `N` rows (at `p`, `stride` elements apart) with `G` f32 vectors (at
/// `x`, `n` apart) over `n` columns: accumulator `k·G + h` (of 12) holds row `k` · vector `h`.
/// Each 8 columns of a row are loaded and converted once for all `G` vectors: with a GQA group
/// of query heads as the vectors, that conversion, the bound of a one-vector dot, is shared.
/// The last `n % 8` columns of each row go through a zero-padded stack tile against `x_tail`
/// (the same columns of the vectors, padded). `$group::<G, N>` runs `N` rows per step, then
/// single rows, and writes the sums; `$dots` is the [`RowsDot`](super::RowsDot) kernel, which
/// takes the vectors four at a time (12 accumulators and the row fit AVX2's 16 registers).
macro_rules! float_rows_dots {
    ($step:ident, $group:ident, $dots:ident, $t:ty, |$p:ident| $load:expr) => {
        /// # Safety
        /// AVX2, FMA and F16C must be available; rows `0..N` of `n` elements at `p` (`stride`
        /// apart) and `G` vectors of `n` f32 at `x` must lie in their allocations; `N·G <= 12`.
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $step<const N: usize, const G: usize>(
            p: *const $t,
            stride: usize,
            x: *const f32,
            n: usize,
            x_tail: &[__m256; 4],
        ) -> [__m256; 12] {
            let n8 = n - n % 8;
            // SAFETY: loads of 8 elements at column `i < n8` of a row or a vector stay inside
            // it (the caller's contract); the tails are copied out by their exact length.
            unsafe {
                let mut acc = [_mm256_setzero_ps(); 12];
                let mut i = 0;
                while i < n8 {
                    for k in 0..N {
                        let r = {
                            let $p = p.add(k * stride + i);
                            $load
                        };
                        for h in 0..G {
                            let xv = _mm256_loadu_ps(x.add(h * n + i));
                            acc[k * G + h] = _mm256_fmadd_ps(r, xv, acc[k * G + h]);
                        }
                    }
                    i += 8;
                }
                if n8 < n {
                    for k in 0..N {
                        let mut tile = [<$t>::default(); 8];
                        std::ptr::copy_nonoverlapping(
                            p.add(k * stride + n8),
                            tile.as_mut_ptr(),
                            n - n8,
                        );
                        let r = {
                            let $p = tile.as_ptr();
                            $load
                        };
                        for h in 0..G {
                            acc[k * G + h] = _mm256_fmadd_ps(r, x_tail[h], acc[k * G + h]);
                        }
                    }
                }
                acc
            }
        }

        /// `out[h·n_rows + r] = row r · vector h` for `G` vectors at `x` and `n_rows` rows.
        ///
        /// # Safety
        /// AVX2, FMA and F16C must be available; `x` holds `G·n` values, `out` `G·n_rows`, and
        /// rows `0..n_rows` of `n` elements at `p` lie in one allocation; `N·G <= 12`.
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $group<const G: usize, const N: usize>(
            p: *const $t,
            stride: usize,
            x: &[f32],
            n: usize,
            out: &mut [f32],
        ) {
            let n_rows = out.len() / G;
            let n8 = n - n % 8;
            let mut tails = [[0.0f32; 8]; 4];
            for (h, t) in tails.iter_mut().enumerate().take(G) {
                t[..n - n8].copy_from_slice(&x[h * n + n8..(h + 1) * n]);
            }
            // SAFETY: each step reads rows `r..r + M` with `r + M <= n_rows` (in bounds by the
            // caller's contract) and the `G` vectors of `x`; the sums land in `out` through
            // bounds-checked indexing.
            unsafe {
                let x_tail = [
                    _mm256_loadu_ps(tails[0].as_ptr()),
                    _mm256_loadu_ps(tails[1].as_ptr()),
                    _mm256_loadu_ps(tails[2].as_ptr()),
                    _mm256_loadu_ps(tails[3].as_ptr()),
                ];
                let mut sums = [0.0f32; 12];
                let mut r = 0;
                while r < n_rows {
                    let m = if r + N <= n_rows { N } else { 1 };
                    let acc = if m == N {
                        $step::<N, G>(p.add(r * stride), stride, x.as_ptr(), n, &x_tail)
                    } else {
                        $step::<1, G>(p.add(r * stride), stride, x.as_ptr(), n, &x_tail)
                    };
                    let mut j = 0;
                    while j + 4 <= m * G {
                        let s = hsum_f32_8x4(acc[j], acc[j + 1], acc[j + 2], acc[j + 3]);
                        _mm_storeu_ps(sums.as_mut_ptr().add(j), s);
                        j += 4;
                    }
                    while j < m * G {
                        sums[j] = hsum_f32_8_as_x4(acc[j]);
                        j += 1;
                    }
                    for k in 0..m {
                        for h in 0..G {
                            out[h * n_rows + r + k] = sums[k * G + h];
                        }
                    }
                    r += m;
                }
            }
        }

        /// Rows dotted with f32 vectors in f32 lanes (see [`RowsDot`](super::RowsDot); twin:
        /// the scalar kernel of the same name, which sums in f64: the difference is float
        /// rounding only).
        ///
        /// # Safety
        /// AVX2, FMA and F16C must be available.
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(super) unsafe fn $dots(
            rows: &[$t],
            stride: usize,
            xs: &[f32],
            n: usize,
            out: &mut [f32],
        ) {
            let (g, n_rows) = super::rows_dot_shape(rows.len(), stride, xs.len(), n, out.len());
            let mut h0 = 0;
            while h0 < g {
                let gc = (g - h0).min(4);
                let x = &xs[h0 * n..(h0 + gc) * n];
                let o = &mut out[h0 * n_rows..(h0 + gc) * n_rows];
                let p = rows.as_ptr();
                // SAFETY: `rows_dot_shape` checked that the `n_rows` rows lie in `rows`; `x`
                // and `o` hold `gc` vectors and `gc` output rows; N·G is at most 9.
                unsafe {
                    match gc {
                        1 => $group::<1, 8>(p, stride, x, n, o),
                        2 => $group::<2, 4>(p, stride, x, n, o),
                        3 => $group::<3, 3>(p, stride, x, n, o),
                        _ => $group::<4, 2>(p, stride, x, n, o),
                    }
                }
                h0 += gc;
            }
        }
    };
}

float_rows_dots!(rows_step_f16, rows_group_f16, vec_dots_f16, f16, |p| {
    _mm256_cvtph_ps(_mm_loadu_si128(p.cast()))
});
float_rows_dots!(rows_step_f32, rows_group_f32, vec_dots_f32, f32, |p| {
    _mm256_loadu_ps(p)
});

/// e^x in 8 lanes, as ggml's AVX2 `ggml_v_expf` (Arm's optimized-routines `expf`): x = n·ln 2 + b
/// with n an integer (rounded by the shifter) and |b| ≤ ln 2 / 2, e^b - 1 by a degree-5
/// polynomial, 2ⁿ built in the exponent bits. Lanes with |n| > 126 take a path that scales in
/// two steps, so results overflow to ∞ above ~88.7 and flush to 0 below ~-103.9, as `expf`
/// does. Within 1.5 ulp of e^x.
///
/// # Safety
/// AVX2 and FMA must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn expf_8(x: __m256) -> __m256 {
    // SAFETY: register-only intrinsics; AVX2 and FMA are the caller's contract.
    unsafe {
        let shift = _mm256_set1_ps(EXP_SHIFT);
        let z = _mm256_fmadd_ps(x, _mm256_set1_ps(EXP_INV_LN2), shift);
        let n = _mm256_sub_ps(z, shift);
        let b = _mm256_fnmadd_ps(
            n,
            _mm256_set1_ps(EXP_LN2_LO),
            _mm256_fnmadd_ps(n, _mm256_set1_ps(EXP_LN2_HI), x),
        );
        // 2ⁿ: n's integer sits in z's low mantissa bits; shifted into the exponent field and
        // added to 1.0's bits.
        let e = _mm256_slli_epi32(_mm256_castps_si256(z), 23);
        let k = _mm256_castsi256_ps(_mm256_add_epi32(
            e,
            _mm256_castps_si256(_mm256_set1_ps(1.0)),
        ));
        let abs_n = _mm256_andnot_ps(_mm256_set1_ps(-0.0), n);
        let big = _mm256_cmp_ps(abs_n, _mm256_set1_ps(126.0), _CMP_GT_OQ);
        let u = _mm256_mul_ps(b, b);
        let [c0, c1, c2, c3, c4] = [
            _mm256_set1_ps(EXP_C[0]),
            _mm256_set1_ps(EXP_C[1]),
            _mm256_set1_ps(EXP_C[2]),
            _mm256_set1_ps(EXP_C[3]),
            _mm256_set1_ps(EXP_C[4]),
        ];
        let j = _mm256_fmadd_ps(
            _mm256_fmadd_ps(_mm256_fmadd_ps(c0, b, c1), u, _mm256_fmadd_ps(c2, b, c3)),
            u,
            _mm256_mul_ps(c4, b),
        );
        let near = _mm256_fmadd_ps(j, k, k);
        if _mm256_movemask_ps(big) == 0 {
            return near;
        }
        // |n| > 126: 2ⁿ = s1·s2 with both factors representable; |n| > 192: s1² alone
        // (∞ or 0).
        let g = _mm256_and_si256(
            _mm256_castps_si256(_mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_LE_OQ)),
            _mm256_set1_epi32(0x8200_0000u32 as i32),
        );
        let s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f00_0000)));
        let s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
        let huge = _mm256_cmp_ps(abs_n, _mm256_set1_ps(192.0), _CMP_GT_OQ);
        let scaled = _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1);
        _mm256_blendv_ps(
            _mm256_blendv_ps(near, scaled, big),
            _mm256_mul_ps(s1, s1),
            huge,
        )
    }
}

/// `x[i] = e^(x[i] - max)` with [`expf_8`], returning Σ x[i] (twin:
/// [`scalar::vec_soft_max_f32`](super::scalar::vec_soft_max_f32)). The sum runs in f64 lanes;
/// the last `len % 8` values go through a stack tile.
///
/// # Safety
/// AVX2, FMA and F16C must be available.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_soft_max_f32(x: &mut [f32], max: f32) -> f64 {
    let n = x.len();
    let n8 = n - n % 8;
    let p = x.as_mut_ptr();
    // SAFETY: 8 values are loaded and stored at `i` only while `i + 8 <= n`.
    unsafe {
        let m = _mm256_set1_ps(max);
        let (mut lo, mut hi) = (_mm256_setzero_pd(), _mm256_setzero_pd());
        let mut i = 0;
        while i < n8 {
            let v = expf_8(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), m));
            _mm256_storeu_ps(p.add(i), v);
            lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
            hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
            i += 8;
        }
        let s = _mm256_add_pd(lo, hi);
        let s = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));
        let mut sum = _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
        if n8 < n {
            let mut tile = [0.0f32; 8];
            tile[..n - n8].copy_from_slice(&x[n8..]);
            let v = expf_8(_mm256_sub_ps(_mm256_loadu_ps(tile.as_ptr()), m));
            _mm256_storeu_ps(tile.as_mut_ptr(), v);
            for (d, e) in x[n8..].iter_mut().zip(tile) {
                *d = e;
                sum += e as f64;
            }
        }
        sum
    }
}

/// `gate[i] = silu(gate[i]) · up[i]` with ggml's `ggml_v_silu` arithmetic, `x / (1 + e^-x)`
/// with [`expf_8`] (twin: [`scalar::vec_swiglu_f32`](super::scalar::vec_swiglu_f32), which uses
/// the AVX-512 form of the exponential); the last
/// `len % 8` values go through a stack tile. Runs over `min(gate.len(), up.len())` values.
///
/// # Safety
/// AVX2, FMA and F16C must be available.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_swiglu_f32(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let n8 = n - n % 8;
    let (g, u) = (gate.as_mut_ptr(), up.as_ptr());
    // SAFETY: 8 values are loaded and stored at `i` only while `i + 8 <= n`; the tile is ours.
    unsafe {
        let one = _mm256_set1_ps(1.0);
        let step = |x: __m256, y: __m256| {
            let e = expf_8(_mm256_sub_ps(_mm256_setzero_ps(), x));
            _mm256_mul_ps(_mm256_div_ps(x, _mm256_add_ps(one, e)), y)
        };
        let mut i = 0;
        while i < n8 {
            let v = step(_mm256_loadu_ps(g.add(i)), _mm256_loadu_ps(u.add(i)));
            _mm256_storeu_ps(g.add(i), v);
            i += 8;
        }
        if n8 < n {
            let (mut tg, mut tu) = ([0.0f32; 8], [0.0f32; 8]);
            tg[..n - n8].copy_from_slice(&gate[n8..n]);
            tu[..n - n8].copy_from_slice(&up[n8..n]);
            let v = step(_mm256_loadu_ps(tg.as_ptr()), _mm256_loadu_ps(tu.as_ptr()));
            _mm256_storeu_ps(tg.as_mut_ptr(), v);
            gate[n8..n].copy_from_slice(&tg[..n - n8]);
        }
    }
}

/// Σ x·y of bf16 weights and f32 activations (twin:
/// [`scalar::vec_dot_bf16_f32`](super::scalar::vec_dot_bf16_f32)); bf16 → f32 is a 16-bit shift.
///
/// # Safety
/// AVX2 and FMA must be available.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_bf16_f32(x: &[bf16], y: &[f32]) -> f32 {
    let (xp, yp) = (x.as_ptr(), y.as_ptr());
    // SAFETY: as in `vec_dot_f32`: 8 bf16 (16 bytes) and 8 f32 are loaded only while
    // `i + 8 <= n`.
    unsafe {
        float_dot!(
            x.len().min(y.len()),
            |i| (
                _mm256_castsi256_ps(_mm256_slli_epi32(
                    _mm256_cvtepu16_epi32(_mm_loadu_si128(xp.add(i).cast())),
                    16
                )),
                _mm256_loadu_ps(yp.add(i))
            ),
            |j| x[j].to_f32() * y[j]
        )
    }
}

/// `amax = max |x|` of one block of 32 floats, or `None` if it holds a NaN (whose ordering
/// rules for `amax` are left to the scalar code). A max is exact in any order.
///
/// # Safety
/// AVX2 must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_amax(xb: &[f32]) -> Option<f32> {
    debug_assert_eq!(xb.len(), QK8_0);
    // SAFETY: `xb` holds 32 floats (the callers pass `chunks_exact(32)` items); 4 loads of 8.
    unsafe {
        let p = xb.as_ptr();
        let sign = _mm256_set1_ps(-0.0);
        let mut amax = _mm256_setzero_ps();
        let mut nan = _mm256_setzero_ps();
        for k in 0..4 {
            let v = _mm256_loadu_ps(p.add(8 * k));
            amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v));
            nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        }
        if _mm256_movemask_ps(nan) != 0 {
            return None;
        }
        let m = _mm_max_ps(_mm256_extractf128_ps(amax, 1), _mm256_castps256_ps128(amax));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        Some(_mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m))))
    }
}

/// The scales of up to [`GROUP`] blocks from their `amax`: `d = amax / 127` and
/// `id = 127 / amax` (0 where `amax == 0`), lane by lane the scalar operations.
///
/// # Safety
/// AVX must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group_scales(amax: &[f32; GROUP]) -> ([f32; GROUP], [f32; GROUP]) {
    let (mut d, mut id) = ([0.0f32; GROUP], [0.0f32; GROUP]);
    // SAFETY: the loads and stores touch the three arrays' own 8 floats.
    unsafe {
        let av = _mm256_loadu_ps(amax.as_ptr());
        let dv = _mm256_div_ps(av, _mm256_set1_ps(127.0));
        let nonzero = _mm256_cmp_ps(av, _mm256_setzero_ps(), _CMP_NEQ_UQ);
        let idv = _mm256_and_ps(nonzero, _mm256_div_ps(_mm256_set1_ps(127.0), av));
        _mm256_storeu_ps(d.as_mut_ptr(), dv);
        _mm256_storeu_ps(id.as_mut_ptr(), idv);
    }
    (d, id)
}

/// The 32 quants of one block: `v * id` rounded half to even (`cvtps2dq` in the default
/// rounding mode) and the low byte. The caller passes finite scales only, so every product
/// is within an ulp of [-127, 127].
///
/// # Safety
/// AVX2 must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_block_q8(xb: &[f32], id: f32) -> __m256i {
    debug_assert_eq!(xb.len(), QK8_0);
    // SAFETY: `xb` holds 32 floats (4 loads of 8); the rest is register arithmetic.
    unsafe {
        let p = xb.as_ptr();
        let idv = _mm256_set1_ps(id);
        let low_byte = _mm256_set1_epi32(0xff);
        let mut q = [_mm256_setzero_si256(); 4];
        for (k, qk) in q.iter_mut().enumerate() {
            let s = _mm256_mul_ps(_mm256_loadu_ps(p.add(8 * k)), idv);
            *qk = _mm256_and_si256(_mm256_cvtps_epi32(s), low_byte);
        }
        // The packs keep bytes 0..=255 intact; they interleave 4-lane groups, undone by the permute.
        let p01 = _mm256_packus_epi32(q[0], q[1]);
        let p23 = _mm256_packus_epi32(q[2], q[3]);
        let bytes = _mm256_packus_epi16(p01, p23);
        _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
    }
}

/// The sum of 32 signed bytes.
///
/// # Safety
/// AVX2 must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn sum_i8_32(v: __m256i) -> i32 {
    // SAFETY: register-only intrinsics; AVX2 is the caller's contract.
    unsafe {
        // Offset to unsigned, sum groups of 8 with `sad` against zero, remove the offset.
        let s = _mm256_sad_epu8(
            _mm256_xor_si256(v, _mm256_set1_epi8(-128)),
            _mm256_setzero_si256(),
        );
        let s = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        let s = _mm_add_epi64(s, _mm_unpackhi_epi64(s, s));
        _mm_cvtsi128_si32(s) - 32 * 128
    }
}

/// `quant::fp32_to_fp16` with F16C: the same IEEE round-to-nearest-even conversion
/// (subnormals kept, overflow to infinity); NaN, where ggml's portable conversion and the
/// hardware differ in the payload, goes to the portable one.
///
/// # Safety
/// F16C must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fp32_to_fp16_f16c(x: f32) -> f16 {
    if x.is_nan() {
        return fp32_to_fp16(x);
    }
    // SAFETY: register-only intrinsics; F16C is the caller's contract.
    let bits =
        unsafe { _mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(x), _MM_FROUND_TO_NEAREST_INT), 0) };
    f16::from_bits(bits as u16)
}

/// [`quantize_act_row_q8_0`](crate::quant::quantize_act_row_q8_0), byte for byte, 8 lanes at a time.
///
/// # Safety
/// AVX2 and F16C must be available.
///
/// # Panics
/// If `x.len() != y.len() * 32`, as the scalar function.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn quantize_row_q8_0_avx2(x: &[f32], y: &mut [BlockQ8_0]) {
    // SAFETY: the helpers need our features; the store writes `yb.qs`'s own 32 bytes.
    unsafe {
        quantize_q8_groups!(x, y, quantize_act_row_q8_0, |yb, d, q| {
            yb.d = fp32_to_fp16_f16c(d);
            _mm256_storeu_si256(yb.qs.as_mut_ptr().cast(), q);
        })
    }
}

/// [`quantize_act_row_q8_1`](crate::quant::quantize_act_row_q8_1), byte for byte, 8 lanes at a time.
///
/// # Safety
/// AVX2 and F16C must be available.
///
/// # Panics
/// If `x.len() != y.len() * 32`, as the scalar function.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn quantize_row_q8_1_avx2(x: &[f32], y: &mut [BlockQ8_1]) {
    // SAFETY: the helpers need our features; the store writes `yb.qs`'s own 32 bytes.
    unsafe {
        quantize_q8_groups!(x, y, quantize_act_row_q8_1, |yb, d, q| {
            yb.d = fp32_to_fp16_f16c(d);
            _mm256_storeu_si256(yb.qs.as_mut_ptr().cast(), q);
            // the sum of the stored quants, as the scalar code takes it
            yb.s = fp32_to_fp16_f16c(sum_i8_32(q) as f32 * d);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16c_conversion_matches_the_portable_one() {
        if !super::super::KernelPath::Avx2.is_supported() {
            return;
        }
        // every 251st f32 bit pattern (both signs, all exponents), plus the edges
        let edges = [
            0.0f32,
            -0.0,
            65504.0,
            65519.99,
            65520.0,
            6.0e-8,
            2.9e-8,
            3.0e-8,
            f32::MAX,
        ];
        let strided = (0..u32::MAX / 251).map(|i| f32::from_bits(i * 251));
        for x in edges.into_iter().chain(strided) {
            // SAFETY: AVX2/F16C support was checked above.
            let got = unsafe { fp32_to_fp16_f16c(x) };
            assert_eq!(
                got.to_bits(),
                fp32_to_fp16(x).to_bits(),
                "{x:e} ({:#010x})",
                x.to_bits()
            );
        }
    }
}
