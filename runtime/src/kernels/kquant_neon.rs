//! NEON row dots for the weight types of K-quant files beyond Q4_0/Q4_1/Q8_0, for
//! [`Neon`](super::KernelPath::Neon) (widening multiplies) and
//! [`NeonDotprod`](super::KernelPath::NeonDotprod) (`sdot`): Q4_K and Q6_K against Q8_K
//! activations, and the 32-block types llama-quantize falls back to when rows are not a
//! multiple of 256 (Q5_0 against Q8_0, Q5_1 against Q8_1). The levels are unpacked to bytes
//! (Q4_K 0..16, Q6_K 0..64, Q5_0 -16..16, Q5_1 0..32, all exact as signed bytes), dotted 16 at
//! a time into i32 lanes, and each 16-value product vector is multiplied by its sub-block scale
//! in the lanes; the minimum (Q4_K) and the offset 32 (Q6_K) come from the activation `bsums`
//! in the integers, as in [`scalar`](super::scalar). One float step per (super-)block.
//!
//! Every `unsafe fn` here requires NEON, the `_dotprod` ones also the dot-product extension;
//! the safe entries are `pub(super)` and only stored in a [`Kernels`](super::Kernels) table
//! built after the CPU check.

// Rust 1.85 (our MSRV) requires `unsafe` around every `core::arch` intrinsic; from 1.87 the
// pointer-free ones are safe inside `#[target_feature]` functions.
#![allow(unused_unsafe)]

use std::arch::aarch64::*;
use std::arch::asm;

use crate::quant::k_quants::scales_mins_k4;
use crate::quant::{BlockQ4K, BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_1};

use super::neon::f16_to_f32;
use super::row_dot_entry;

row_dot_entry!(row_dot_q4_k, vec_dot_q4_k_q8_k, BlockQ4K, BlockQ8K);
row_dot_entry!(row_dot_q6_k, vec_dot_q6_k_q8_k, BlockQ6K, BlockQ8K);
row_dot_entry!(row_dot_q5_1, vec_dot_q5_1_q8_1, BlockQ5_1, BlockQ8_1);
row_dot_entry!(
    row_dot_q5_1_dotprod,
    vec_dot_q5_1_q8_1_dotprod,
    BlockQ5_1,
    BlockQ8_1
);
row_dot_entry!(
    row_dot_q4_k_dotprod,
    vec_dot_q4_k_q8_k_dotprod,
    BlockQ4K,
    BlockQ8K
);
row_dot_entry!(
    row_dot_q6_k_dotprod,
    vec_dot_q6_k_q8_k_dotprod,
    BlockQ6K,
    BlockQ8K
);

/// `Σ a·b` per group of 4 bytes into 4 i32 lanes, without dot product: widening multiplies
/// into i16 lanes (two products each: at most 2 · 64 · 128, exact) and a pairwise widening add.
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn dot16(a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: register-only operations; NEON is the caller's contract.
    unsafe {
        vpaddlq_s16(vmlal_high_s8(
            vmull_s8(vget_low_s8(a), vget_low_s8(b)),
            a,
            b,
        ))
    }
}

/// `Σ a·b` per group of 4 bytes into 4 i32 lanes (`sdot`).
///
/// # Safety
/// NEON and the dot-product extension must be available.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn dot16_dotprod(a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = unsafe { vdupq_n_s32(0) };
    // SAFETY: `sdot` exists on every CPU with the dot-product extension (the caller's
    // contract); it reads and writes only the three registers named.
    unsafe {
        asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    acc
}

/// 16 bytes of a block array, from byte `at`.
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn load16_u8<const N: usize>(a: &[u8; N], at: usize) -> uint8x16_t {
    let s: &[u8; 16] = a[at..at + 16]
        .try_into()
        .expect("16 bytes inside the block");
    // SAFETY: reads exactly the 16 bytes of `s`.
    unsafe { vld1q_u8(s.as_ptr()) }
}

/// 16 activation quants of a Q8_K block, from value `at`.
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn load16_i8(a: &[i8; 256], at: usize) -> int8x16_t {
    let s: &[i8; 16] = a[at..at + 16]
        .try_into()
        .expect("16 quants inside the block");
    // SAFETY: reads exactly the 16 bytes of `s`.
    unsafe { vld1q_s8(s.as_ptr()) }
}

/// Σ_j m_j · (activation sum of sub-block j) for Q4_K: the 16 activation sums added in pairs
/// (at most 2 · 16 · 127 each, exact in i16), times the mins, widened and summed.
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn q4_k_mins_sum(mins: [u8; 8], bsums: &[i16; 16]) -> i32 {
    // SAFETY: the loads read the 16 `bsums`; the rest is register-only.
    unsafe {
        let pairs = vpaddq_s16(vld1q_s16(bsums.as_ptr()), vld1q_s16(bsums.as_ptr().add(8)));
        let m = vreinterpretq_s16_u16(vmovl_u8(vcreate_u8(u64::from_le_bytes(mins))));
        vaddvq_s32(vmlal_high_s16(
            vmull_s16(vget_low_s16(pairs), vget_low_s16(m)),
            pairs,
            m,
        ))
    }
}

/// Σ_k scale_k · (activation sum k) for Q6_K's 16 signed sub-block scales, widened and summed.
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn q6_k_scaled_sums(scales: &[i8; 16], bsums: &[i16; 16]) -> i32 {
    // SAFETY: the loads read the 16 scales and the 16 `bsums`; the rest is register-only.
    unsafe {
        let sc = vld1q_s8(scales.as_ptr());
        let (s0, s1) = (vmovl_s8(vget_low_s8(sc)), vmovl_high_s8(sc));
        let (b0, b1) = (vld1q_s16(bsums.as_ptr()), vld1q_s16(bsums.as_ptr().add(8)));
        let p = vmull_s16(vget_low_s16(b0), vget_low_s16(s0));
        let p = vmlal_high_s16(p, b0, s0);
        let p = vmlal_s16(p, vget_low_s16(b1), vget_low_s16(s1));
        vaddvq_s32(vmlal_high_s16(p, b1, s1))
    }
}

/// Defines the Q4_K and Q6_K dots over one 16-byte dot primitive, with its features.
macro_rules! kquant_dots {
    ($q4k:ident, $q6k:ident, $features:literal, $dot16:path) => {
        /// Q4_K · Q8_K: the nibbles of each 32-value sub-block dotted with the activations,
        /// times the sub-block scale, minus the mins times the activation sums.
        ///
        /// # Safety
        #[doc = concat!("The features `", $features, "` must be available.")]
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $q4k(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
            // SAFETY: register operations and the bounds-checked loads above; the features are
            // the caller's contract.
            unsafe {
                let m4 = vdupq_n_u8(0x0F);
                let mut sumf = 0.0f32;
                for (xb, yb) in x.iter().zip(y) {
                    let (scales, mins) = scales_mins_k4(&xb.scales);
                    let mut isum = vdupq_n_s32(0);
                    for j in 0..4 {
                        let b0 = load16_u8(&xb.qs, 32 * j);
                        let b1 = load16_u8(&xb.qs, 32 * j + 16);
                        let lo = vaddq_s32(
                            $dot16(
                                vreinterpretq_s8_u8(vandq_u8(b0, m4)),
                                load16_i8(&yb.qs, 64 * j),
                            ),
                            $dot16(
                                vreinterpretq_s8_u8(vandq_u8(b1, m4)),
                                load16_i8(&yb.qs, 64 * j + 16),
                            ),
                        );
                        let hi = vaddq_s32(
                            $dot16(
                                vreinterpretq_s8_u8(vshrq_n_u8(b0, 4)),
                                load16_i8(&yb.qs, 64 * j + 32),
                            ),
                            $dot16(
                                vreinterpretq_s8_u8(vshrq_n_u8(b1, 4)),
                                load16_i8(&yb.qs, 64 * j + 48),
                            ),
                        );
                        isum = vmlaq_n_s32(isum, lo, i32::from(scales[2 * j]));
                        isum = vmlaq_n_s32(isum, hi, i32::from(scales[2 * j + 1]));
                    }
                    let d = yb.d * f16_to_f32(xb.d);
                    let dmin = yb.d * f16_to_f32(xb.dmin);
                    sumf +=
                        d * vaddvq_s32(isum) as f32 - dmin * q4_k_mins_sum(mins, &yb.bsums) as f32;
                }
                sumf
            }
        }

        /// Q6_K · Q8_K: the unsigned 6-bit levels of each 16-value sub-block dotted with the
        /// activations, times the sub-block scale, minus 32 times the scaled activation sums.
        ///
        /// # Safety
        #[doc = concat!("The features `", $features, "` must be available.")]
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $q6k(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
            // SAFETY: as for the Q4_K dot.
            unsafe {
                let m4 = vdupq_n_u8(0x0F);
                let bits45 = vdupq_n_u8(0x30);
                let mut sumf = 0.0f32;
                for (xb, yb) in x.iter().zip(y) {
                    let isum_mins = q6_k_scaled_sums(&xb.scales, &yb.bsums);
                    let mut isum = vdupq_n_s32(0);
                    for n in 0..2 {
                        let qh = [load16_u8(&xb.qh, 32 * n), load16_u8(&xb.qh, 32 * n + 16)];
                        let ql = [
                            load16_u8(&xb.ql, 64 * n),
                            load16_u8(&xb.ql, 64 * n + 16),
                            load16_u8(&xb.ql, 64 * n + 32),
                            load16_u8(&xb.ql, 64 * n + 48),
                        ];
                        // value 128n + 32k + 16h + l: sub-block 8n + 2k + h
                        for k in 0..4 {
                            for h in 0..2 {
                                let low = if k % 2 == 0 { ql[h] } else { ql[2 + h] };
                                let low = if k < 2 {
                                    vandq_u8(low, m4)
                                } else {
                                    vshrq_n_u8(low, 4)
                                };
                                // the two high bits of value k moved to bits 4..6, then
                                // selected into the nibble (`bsl`)
                                let high = match k {
                                    0 => vshlq_n_u8(qh[h], 4),
                                    1 => vshlq_n_u8(qh[h], 2),
                                    2 => qh[h],
                                    _ => vshrq_n_u8(qh[h], 2),
                                };
                                let q = vreinterpretq_s8_u8(vbslq_u8(bits45, high, low));
                                let p = $dot16(q, load16_i8(&yb.qs, 128 * n + 32 * k + 16 * h));
                                isum =
                                    vmlaq_n_s32(isum, p, i32::from(xb.scales[8 * n + 2 * k + h]));
                            }
                        }
                    }
                    sumf += f16_to_f32(xb.d) * yb.d * (vaddvq_s32(isum) - 32 * isum_mins) as f32;
                }
                sumf
            }
        }
    };
}

kquant_dots!(vec_dot_q4_k_q8_k, vec_dot_q6_k_q8_k, "neon", dot16);
kquant_dots!(
    vec_dot_q4_k_q8_k_dotprod,
    vec_dot_q6_k_q8_k_dotprod,
    "neon,dotprod",
    dot16_dotprod
);

/// The 32 five-bit levels (0..=31) of a Q5_0 / Q5_1 block as bytes: elements 0..16 (the low
/// nibbles, bit 4 from `qh` bits 0..16) and 16..32 (the high nibbles, bits 16..32). Each `qh`
/// byte is spread over 8 lanes and tested against that lane's own bit.
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn q5_levels(qs: &[u8; 16], qh: [u8; 4]) -> (uint8x16_t, uint8x16_t) {
    // SAFETY: `load16_u8` reads the 16 bytes of `qs`; the rest is register-only.
    unsafe {
        let v = load16_u8(qs, 0);
        let lane_bit = vreinterpretq_u8_u64(vdupq_n_u64(0x8040_2010_0804_0201));
        let bit4 = vdupq_n_u8(0x10);
        let high = |b0: u8, b1: u8| {
            let spread = vcombine_u8(vdup_n_u8(b0), vdup_n_u8(b1));
            vandq_u8(vtstq_u8(spread, lane_bit), bit4)
        };
        (
            vorrq_u8(vandq_u8(v, vdupq_n_u8(0x0F)), high(qh[0], qh[1])),
            vorrq_u8(vshrq_n_u8(v, 4), high(qh[2], qh[3])),
        )
    }
}

/// 32 quants of a Q8 block as two vectors: elements 0..16 and 16..32.
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn load_q8_32(qs: &[i8; 32]) -> (int8x16_t, int8x16_t) {
    // SAFETY: reads exactly the 32 bytes of `qs`.
    unsafe { (vld1q_s8(qs.as_ptr()), vld1q_s8(qs.as_ptr().add(16))) }
}

/// Defines the Q5_1 dot over one 16-byte dot primitive, with its features. The levels
/// (0..=31) fit signed bytes, so it uses the signed dot; per block, one int-to-float conversion
/// and one FMA into 4 f32 lanes. (Q5_0 is in [`neon`](super::neon), with a two-row form.)
macro_rules! q5_1_dot {
    ($q5_1:ident, $features:literal, $dot16:path) => {
        /// Q5_1 · Q8_1: `level · q8` per block times both scales, plus `m · s` (twin:
        /// [`scalar::vec_dot_q5_1_q8_1`](super::scalar::vec_dot_q5_1_q8_1)).
        ///
        /// # Safety
        #[doc = concat!("The features `", $features, "` must be available.")]
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $q5_1(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
            // SAFETY: as for the Q5_0 dot.
            unsafe {
                let mut acc = [vdupq_n_f32(0.0); 2];
                let mut sum_ms = 0.0f32;
                for (i, (xb, yb)) in x.iter().zip(y).enumerate() {
                    let (lo, hi) = q5_levels(&xb.qs, xb.qh);
                    let (alo, ahi) = load_q8_32(&yb.qs);
                    let sumi = vaddq_s32(
                        $dot16(vreinterpretq_s8_u8(lo), alo),
                        $dot16(vreinterpretq_s8_u8(hi), ahi),
                    );
                    let d = f16_to_f32(xb.d) * f16_to_f32(yb.d);
                    acc[i % 2] = vfmaq_n_f32(acc[i % 2], vcvtq_f32_s32(sumi), d);
                    sum_ms += f16_to_f32(xb.m) * f16_to_f32(yb.s);
                }
                vaddvq_f32(vaddq_f32(acc[0], acc[1])) + sum_ms
            }
        }
    };
}

q5_1_dot!(vec_dot_q5_1_q8_1, "neon", dot16);
q5_1_dot!(vec_dot_q5_1_q8_1_dotprod, "neon,dotprod", dot16_dotprod);
