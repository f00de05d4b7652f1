//! NEON row dots for the weight types of K-quant files beyond Q4_0/Q4_1/Q8_0, for
//! [`Neon`](super::KernelPath::Neon) (widening multiplies) and
//! [`NeonDotprod`](super::KernelPath::NeonDotprod) (`sdot`): Q4_K, Q5_K and Q6_K against Q8_K
//! activations, and the 32-block types llama-quantize falls back to when rows are not a
//! multiple of 256 (Q5_0 against Q8_0, Q5_1 against Q8_1). The levels are unpacked to bytes
//! (Q4_K 0..16, Q6_K 0..64, Q5_0 -16..16, Q5_1 0..32, all exact as signed bytes), dotted 16 at
//! a time into i32 lanes, and each 16-value product vector is multiplied by its sub-block scale
//! in the lanes; the minimum (Q4_K) and the offset 32 (Q6_K) come from the activation `bsums`
//! in the integers, as in [`scalar`](super::scalar).
//!
//! The K-quant dots compute what their scalar twins compute, bit for bit (a Gemma-3 Q4_K_M
//! forward pass on a board then gives llama.cpp's x86 logits): the integer parts of a block are
//! exact in any order, and the few float steps per block follow the scalar kernel's, fused
//! multiply-adds included: the one-token Q4_K and Q6_K dots, and the prompt-batch dots of
//! [`Kernels::row_dot_batch`](super::Kernels::row_dot_batch) (Q4_K four tokens at a time and
//! tiled, Q6_K tiled). Q6_K's one-token order needs the integer lanes of x86's 8-lane sum:
//! 4 consecutive values per lane, as `sdot` gives them; without it, the weights and
//! activations are loaded de-interleaved by byte pairs so that widening multiplies give them too.
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
use crate::quant::{BlockQ4K, BlockQ5K, BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_1};

use super::neon::{cvt_f16x4, f16_to_f32};
use super::row_dot_entry;

row_dot_entry!(row_dot_q4_k, vec_dot_q4_k_q8_k, BlockQ4K, BlockQ8K);
row_dot_entry!(
    row_dot_q4_k_group4,
    vec_dot_q4_k_q8_k_group4,
    BlockQ4K,
    BlockQ8K
);
row_dot_entry!(
    row_dot_q4_k_tiled,
    vec_dot_q4_k_q8_k_tiled,
    BlockQ4K,
    BlockQ8K
);
row_dot_entry!(row_dot_q5_k, vec_dot_q5_k_q8_k, BlockQ5K, BlockQ8K);
row_dot_entry!(
    row_dot_q5_k_tiled,
    vec_dot_q5_k_q8_k_tiled,
    BlockQ5K,
    BlockQ8K
);
row_dot_entry!(
    row_dot_q5_k_dotprod,
    vec_dot_q5_k_q8_k_dotprod,
    BlockQ5K,
    BlockQ8K
);
row_dot_entry!(
    row_dot_q5_k_tiled_dotprod,
    vec_dot_q5_k_q8_k_tiled_dotprod,
    BlockQ5K,
    BlockQ8K
);
row_dot_entry!(row_dot_q6_k, vec_dot_q6_k_q8_k, BlockQ6K, BlockQ8K);
row_dot_entry!(
    row_dot_q6_k_tiled,
    vec_dot_q6_k_q8_k_tiled,
    BlockQ6K,
    BlockQ8K
);
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
    row_dot_q4_k_group4_dotprod,
    vec_dot_q4_k_q8_k_group4_dotprod,
    BlockQ4K,
    BlockQ8K
);
row_dot_entry!(
    row_dot_q4_k_tiled_dotprod,
    vec_dot_q4_k_q8_k_tiled_dotprod,
    BlockQ4K,
    BlockQ8K
);
row_dot_entry!(
    row_dot_q6_k_dotprod,
    vec_dot_q6_k_q8_k_dotprod,
    BlockQ6K,
    BlockQ8K
);
row_dot_entry!(
    row_dot_q6_k_tiled_dotprod,
    vec_dot_q6_k_q8_k_tiled_dotprod,
    BlockQ6K,
    BlockQ8K
);

/// `Σ a·b` per group of 4 bytes into 4 i32 lanes, without dot product: widening multiplies
/// into i16 lanes (two products each: at most 2 · 64 · 128, exact) and a pairwise widening add.
/// Lane `i` sums bytes `2i, 2i + 1, 2i + 8, 2i + 9` (not 4 consecutive ones, as `sdot` does).
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

/// `Σ a0·b0 + Σ a1·b1` over two 16-byte pairs into 4 i32 lanes (which bytes land in which lane
/// is unspecified), without dot product, for levels `a` in 0..16: four products per i16 lane
/// (at most 4 · 15 · 128), one pairwise widening add.
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn dot32_nibbles(a0: int8x16_t, b0: int8x16_t, a1: int8x16_t, b1: int8x16_t) -> int32x4_t {
    // SAFETY: register-only operations; NEON is the caller's contract.
    unsafe {
        let p = vmull_s8(vget_low_s8(a0), vget_low_s8(b0));
        let p = vmlal_high_s8(p, a0, b0);
        let p = vmlal_s8(p, vget_low_s8(a1), vget_low_s8(b1));
        vpaddlq_s16(vmlal_high_s8(p, a1, b1))
    }
}

/// `Σ a·b` per group of 4 bytes into 4 i32 lanes (`sdot`).
///
/// # Safety
/// NEON and the dot-product extension must be available.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn dot16_dotprod(a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: the features are the caller's contract.
    unsafe { sdot(vdupq_n_s32(0), a, b) }
}

/// `acc + Σ a·b` per group of 4 bytes, in 4 i32 lanes (`sdot`).
///
/// # Safety
/// NEON and the dot-product extension must be available.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn sdot(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
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

/// [`dot32_nibbles`] with `sdot`: two chained dots.
///
/// # Safety
/// NEON and the dot-product extension must be available.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn dot32_nibbles_dotprod(
    a0: int8x16_t,
    b0: int8x16_t,
    a1: int8x16_t,
    b1: int8x16_t,
) -> int32x4_t {
    // SAFETY: the features are the caller's contract.
    unsafe { sdot(dot16_dotprod(a0, b0), a1, b1) }
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

/// 32 bytes from byte `at`, de-interleaved by byte pairs (`ld2` of 16-bit elements): the first
/// vector holds bytes `0, 1, 4, 5, 8, 9, …, 28, 29`, the second `2, 3, 6, 7, …, 30, 31`. Lane
/// `i` of the two vectors' low halves then covers bytes `4(i/2)..4(i/2) + 4` of the first 16,
/// of their high halves of the last 16: the 4-byte groups of `sdot`, for widening multiplies.
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn load32_pairs<const N: usize>(a: &[u8; N], at: usize) -> [uint8x16_t; 2] {
    let s: &[u8; 32] = a[at..at + 32]
        .try_into()
        .expect("32 bytes inside the block");
    // SAFETY: reads exactly the 32 bytes of `s`; `ld2` has no alignment requirement.
    unsafe {
        let v = vld2q_u16(s.as_ptr().cast::<u16>());
        [vreinterpretq_u8_u16(v.0), vreinterpretq_u8_u16(v.1)]
    }
}

/// [`load32_pairs`] of 32 activation quants of a Q8_K block, from value `at`.
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn load32_pairs_i8(a: &[i8; 256], at: usize) -> [int8x16_t; 2] {
    // SAFETY: `i8` and `u8` have the same size and alignment, and every byte is a valid `u8`:
    // the same 256 bytes, read only.
    let bytes: &[u8; 256] = unsafe { &*a.as_ptr().cast::<[u8; 256]>() };
    // SAFETY: NEON is the caller's contract.
    unsafe { load32_pairs(bytes, at).map(|v| vreinterpretq_s8_u8(v)) }
}

/// Lane `j` (0..4) = `Σ m · (activation sum)` over Q4_K sub-blocks `2j` and `2j + 1`: the 16
/// activation sums added in pairs (at most 2 · 16 · 127 each, exact in i16), times the mins,
/// widened, then added in pairs.
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn q4_k_mins_pairs(mins: [u8; 8], bsums: &[i16; 16]) -> int32x4_t {
    // SAFETY: the loads read the 16 `bsums`; the rest is register-only.
    unsafe {
        let pairs = vpaddq_s16(vld1q_s16(bsums.as_ptr()), vld1q_s16(bsums.as_ptr().add(8)));
        let m = vreinterpretq_s16_u16(vmovl_u8(vcreate_u8(u64::from_le_bytes(mins))));
        vpaddq_s32(
            vmull_s16(vget_low_s16(pairs), vget_low_s16(m)),
            vmull_high_s16(pairs, m),
        )
    }
}

/// Q6_K's offset part in the lanes of [`scalar::vec_dot_q6_k_q8_k`](super::scalar::vec_dot_q6_k_q8_k):
/// lane `l` (0..8, lanes 0..4 first) = `32 · (bsums[2l]·sc[2l] + bsums[2l + 1]·sc[2l + 1])`,
/// from the 16 scales widened ([`widen_scales_q6_k`]).
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn q6_k_offsets(s: [int16x8_t; 2], bsums: &[i16; 16]) -> [int32x4_t; 2] {
    // SAFETY: the loads read the 16 `bsums`; the rest is register-only.
    unsafe {
        let (b0, b1) = (vld1q_s16(bsums.as_ptr()), vld1q_s16(bsums.as_ptr().add(8)));
        let lo = vpaddq_s32(
            vmull_s16(vget_low_s16(b0), vget_low_s16(s[0])),
            vmull_high_s16(b0, s[0]),
        );
        let hi = vpaddq_s32(
            vmull_s16(vget_low_s16(b1), vget_low_s16(s[1])),
            vmull_high_s16(b1, s[1]),
        );
        [vshlq_n_s32::<5>(lo), vshlq_n_s32::<5>(hi)]
    }
}

/// The 16 signed sub-block scales of a Q6_K block widened to i16 (scales 0..8, 8..16).
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn widen_scales_q6_k(scales: &[i8; 16]) -> [int16x8_t; 2] {
    // SAFETY: the load reads the 16 scales; the rest is register-only.
    unsafe {
        let sc = vld1q_s8(scales.as_ptr());
        [vmovl_s8(vget_low_s8(sc)), vmovl_high_s8(sc)]
    }
}

/// Eight i16 values widened to i32 (values 0..4, 4..8), [`opaque`].
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn widen_i16(s: int16x8_t) -> [int32x4_t; 2] {
    // SAFETY: register-only operations; NEON is the caller's contract.
    unsafe {
        [
            opaque(vmovl_s16(vget_low_s16(s))),
            opaque(vmovl_high_s16(s)),
        ]
    }
}

/// `v`, hidden from the optimizer: scales widened from bytes stay one register, read lane by
/// lane by [`mla_lane`] / [`mul_lane`] (LLVM otherwise rewrites each lane read as a broadcast
/// of the byte and a widening, two instructions per scale).
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn opaque(mut v: int32x4_t) -> int32x4_t {
    // SAFETY: an empty template: the register is read and written unchanged.
    unsafe {
        asm!("/* {v:v} */", v = inout(vreg) v, options(pure, nomem, nostack, preserves_flags));
    }
    v
}

/// `acc + p · v[lane]`: the multiply-accumulate by a vector lane (`mla …, v.s[lane]`) where
/// `lane` is a constant once the caller's loops are unrolled, instead of a scale loaded and
/// broadcast from memory for every product.
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn mla_lane(acc: int32x4_t, p: int32x4_t, v: int32x4_t, lane: usize) -> int32x4_t {
    // SAFETY: register-only operations; NEON is the caller's contract.
    unsafe {
        match lane {
            0 => vmlaq_laneq_s32::<0>(acc, p, v),
            1 => vmlaq_laneq_s32::<1>(acc, p, v),
            2 => vmlaq_laneq_s32::<2>(acc, p, v),
            _ => vmlaq_laneq_s32::<3>(acc, p, v),
        }
    }
}

/// `p · v[lane]`, as [`mla_lane`].
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn mul_lane(p: int32x4_t, v: int32x4_t, lane: usize) -> int32x4_t {
    // SAFETY: register-only operations; NEON is the caller's contract.
    unsafe {
        match lane {
            0 => vmulq_laneq_s32::<0>(p, v),
            1 => vmulq_laneq_s32::<1>(p, v),
            2 => vmulq_laneq_s32::<2>(p, v),
            _ => vmulq_laneq_s32::<3>(p, v),
        }
    }
}

/// Two f16 scales converted exactly, as `[a, b]`.
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn f16_pair(a: half::f16, b: half::f16) -> float32x2_t {
    let bits = u64::from(a.to_bits()) | (u64::from(b.to_bits()) << 16);
    // SAFETY: register-only operations; NEON is the caller's contract.
    unsafe { vget_low_f32(cvt_f16x4(vcreate_u16(bits))) }
}

/// Lanes `[a, b]` of `[a, b, a, b]` (`t = [t0 + t1, t2 + t3, …]` twice over): the sums of two
/// 4-lane integer vectors, side by side.
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn sum_pair(a: int32x4_t, b: int32x4_t) -> int32x2_t {
    // SAFETY: register-only operations; NEON is the caller's contract.
    unsafe {
        let t = vpaddq_s32(a, b);
        vget_low_s32(vpaddq_s32(t, t))
    }
}

/// A Q4_K block against its Q8_K block, exactly, as `([v_0, …, v_3], mins)`: the 4 lanes of
/// `v_j` sum `sc[2j]·q4·q8` over sub-block `2j` and `sc[2j + 1]·q4·q8` over `2j + 1` (in some
/// order), lane `j` of `mins` is those sub-blocks' `Σ m · (activation sum)`. `$dot32` is the
/// path's [`dot32_nibbles`]. A macro, so that every kernel has it inline (LLVM keeps a
/// function this size called from several kernels out of line, its results through memory):
/// an `unsafe` expression over `#[target_feature]` helpers, whose features the calling
/// kernel's must cover.
macro_rules! q4_k_block {
    ($dot32:path, $xb:expr, $yb:expr) => {{
        let (xb, yb): (&BlockQ4K, &BlockQ8K) = ($xb, $yb);
        let (scales, mins) = scales_mins_k4(&xb.scales);
        // scale i: lane i % 4 of sc[i / 4]
        let sc = widen_i16(vreinterpretq_s16_u16(vmovl_u8(vcreate_u8(
            u64::from_le_bytes(scales),
        ))));
        let m4 = vdupq_n_u8(0x0F);
        let mut v = [vdupq_n_s32(0); 4];
        for (j, v) in v.iter_mut().enumerate() {
            let b0 = load16_u8(&xb.qs, 32 * j);
            let b1 = load16_u8(&xb.qs, 32 * j + 16);
            let lo = $dot32(
                vreinterpretq_s8_u8(vandq_u8(b0, m4)),
                load16_i8(&yb.qs, 64 * j),
                vreinterpretq_s8_u8(vandq_u8(b1, m4)),
                load16_i8(&yb.qs, 64 * j + 16),
            );
            let hi = $dot32(
                vreinterpretq_s8_u8(vshrq_n_u8(b0, 4)),
                load16_i8(&yb.qs, 64 * j + 32),
                vreinterpretq_s8_u8(vshrq_n_u8(b1, 4)),
                load16_i8(&yb.qs, 64 * j + 48),
            );
            *v = mla_lane(
                mul_lane(lo, sc[j / 2], 2 * j % 4),
                hi,
                sc[j / 2],
                (2 * j + 1) % 4,
            );
        }
        (v, q4_k_mins_pairs(mins, &yb.bsums))
    }};
}

/// `[sumi, imin]` of a Q4_K block (`q4_k_block!`'s parts summed): `Σ_j sc_j Σ q4·q8` and
/// `Σ_j m_j Σ q8`.
macro_rules! q4_k_sums {
    ($dot32:path, $xb:expr, $yb:expr) => {{
        let (v, mins) = q4_k_block!($dot32, $xb, $yb);
        sum_pair(
            vaddq_s32(vaddq_s32(v[0], v[1]), vaddq_s32(v[2], v[3])),
            mins,
        )
    }};
}

/// The 6-bit levels of 32 Q6_K values `128n + 32k + l` (`l` in 0..32) from their low-nibble
/// bytes `ql` and high-bit bytes `qh` (both loaded alike, so any byte order works): the two
/// high bits of quarter `k` moved to bits 4..6 and selected into the nibble (`bsl`).
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn q6_k_levels(ql: uint8x16_t, qh: uint8x16_t, k: usize) -> int8x16_t {
    // SAFETY: register-only operations; NEON is the caller's contract.
    unsafe {
        let low = if k < 2 {
            vandq_u8(ql, vdupq_n_u8(0x0F))
        } else {
            vshrq_n_u8(ql, 4)
        };
        let high = match k {
            0 => vshlq_n_u8(qh, 4),
            1 => vshlq_n_u8(qh, 2),
            2 => qh,
            _ => vshrq_n_u8(qh, 2),
        };
        vreinterpretq_s8_u8(vbslq_u8(vdupq_n_u8(0x30), high, low))
    }
}

/// `Σ sc · q6 · q8` over quarter `K` (values `128n + 32K + l`) of a Q6_K block half, added
/// into the 8 lanes of the scalar kernel, without dot product: `ql`, `qh` and the activations
/// `a` loaded de-interleaved by byte pairs ([`load32_pairs`]), so that a widening multiply of
/// the two vectors' low halves, accumulated and added pairwise, gives lanes 0..4 (sub-block
/// `8n + 2K`, scale in lane `2K % 4` of `s`), of their high halves lanes 4..8 (`8n + 2K + 1`).
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn q6_k_quarter<const K: usize>(
    lanes: [int32x4_t; 2],
    ql: [uint8x16_t; 2],
    qh: [uint8x16_t; 2],
    a: [int8x16_t; 2],
    s: int32x4_t,
) -> [int32x4_t; 2] {
    // SAFETY: register-only operations; NEON is the caller's contract.
    unsafe {
        let q0 = q6_k_levels(ql[0], qh[0], K);
        let q1 = q6_k_levels(ql[1], qh[1], K);
        // two products per i16 lane: at most 2 · 63 · 128
        let p_lo = vmlal_s8(
            vmull_s8(vget_low_s8(q0), vget_low_s8(a[0])),
            vget_low_s8(q1),
            vget_low_s8(a[1]),
        );
        let p_hi = vmlal_high_s8(vmull_high_s8(q0, a[0]), q1, a[1]);
        [
            mla_lane(lanes[0], vpaddlq_s16(p_lo), s, 2 * K % 4),
            mla_lane(lanes[1], vpaddlq_s16(p_hi), s, (2 * K + 1) % 4),
        ]
    }
}

/// [`q6_k_quarter`] with `sdot`, whose lanes are the scalar kernel's 4-byte groups: `ql`, `qh`
/// and `a` hold values `l` in 0..16 and 16..32 ([`load32_halves`]).
///
/// # Safety
/// NEON and the dot-product extension must be available.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn q6_k_quarter_dotprod<const K: usize>(
    lanes: [int32x4_t; 2],
    ql: [uint8x16_t; 2],
    qh: [uint8x16_t; 2],
    a: [int8x16_t; 2],
    s: int32x4_t,
) -> [int32x4_t; 2] {
    // SAFETY: register-only operations; the features are the caller's contract.
    unsafe {
        let p0 = dot16_dotprod(q6_k_levels(ql[0], qh[0], K), a[0]);
        let p1 = dot16_dotprod(q6_k_levels(ql[1], qh[1], K), a[1]);
        [
            mla_lane(lanes[0], p0, s, 2 * K % 4),
            mla_lane(lanes[1], p1, s, (2 * K + 1) % 4),
        ]
    }
}

/// 32 bytes from byte `at` as two vectors: bytes 0..16 and 16..32.
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn load32_halves<const N: usize>(a: &[u8; N], at: usize) -> [uint8x16_t; 2] {
    // SAFETY: NEON is the caller's contract; the loads are bounds-checked.
    unsafe { [load16_u8(a, at), load16_u8(a, at + 16)] }
}

/// [`load32_halves`] of 32 activation quants of a Q8_K block, from value `at`.
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn load32_halves_i8(a: &[i8; 256], at: usize) -> [int8x16_t; 2] {
    // SAFETY: NEON is the caller's contract; the loads are bounds-checked.
    unsafe { [load16_i8(a, at), load16_i8(a, at + 16)] }
}

/// Half `$n` (a literal: every index is a constant) of a Q6_K block added into `$lanes` by
/// `$quarter` ([`q6_k_quarter`] or [`q6_k_quarter_dotprod`]) over the bytes `$load` and
/// `$load_i8` give it; `$sc`: the 16 scales as i32, scale `i` in lane `i % 4` of `$sc[i / 4]`.
macro_rules! q6_k_half {
    ($quarter:ident, $load:ident, $load_i8:ident, $lanes:ident, $xb:ident, $yb:ident, $sc:ident, $n:literal) => {
        // value 128n + 32k + l: low bits in `ql[64n + 32(k % 2) + l]` (nibble k / 2), high
        // bits in `qh[32n + l]` (bits 2k..2k + 2)
        let qh = $load(&$xb.qh, 32 * $n);
        let ql = [$load(&$xb.ql, 64 * $n), $load(&$xb.ql, 64 * $n + 32)];
        let a = |k: usize| $load_i8(&$yb.qs, 128 * $n + 32 * k);
        $lanes = $quarter::<0>($lanes, ql[0], qh, a(0), $sc[2 * $n]);
        $lanes = $quarter::<1>($lanes, ql[1], qh, a(1), $sc[2 * $n]);
        $lanes = $quarter::<2>($lanes, ql[0], qh, a(2), $sc[2 * $n + 1]);
        $lanes = $quarter::<3>($lanes, ql[1], qh, a(3), $sc[2 * $n + 1]);
    };
}

/// A Q6_K block against its Q8_K block, exactly, in the 8 integer lanes of
/// [`scalar::vec_dot_q6_k_q8_k`](super::scalar::vec_dot_q6_k_q8_k) (lanes 0..4, 4..8): the
/// scaled products (`q6_k_half!` with `$quarter`, `$load`, `$load_i8`) less the offsets
/// ([`q6_k_offsets`]). Like `q4_k_block!`, an `unsafe` expression over `#[target_feature]`
/// helpers: the calling kernel's features must cover them.
macro_rules! q6_k_block {
    ($quarter:ident, $load:ident, $load_i8:ident, $xb:expr, $yb:expr) => {{
        let (xb, yb): (&BlockQ6K, &BlockQ8K) = ($xb, $yb);
        let s16 = widen_scales_q6_k(&xb.scales);
        let (s0, s1) = (widen_i16(s16[0]), widen_i16(s16[1]));
        let sc = [s0[0], s0[1], s1[0], s1[1]];
        let mut lanes = [vdupq_n_s32(0); 2];
        q6_k_half!($quarter, $load, $load_i8, lanes, xb, yb, sc, 0);
        q6_k_half!($quarter, $load, $load_i8, lanes, xb, yb, sc, 1);
        let off = q6_k_offsets(s16, &yb.bsums);
        [vsubq_s32(lanes[0], off[0]), vsubq_s32(lanes[1], off[1])]
    }};
}

/// `Σ q · a` over the 32 values of a K-quant sub-block into the 8 lanes of the x86 8-lane
/// sums (lane `l` of lanes 0..4 sums values `4l..4l + 4`, of lanes 4..8 values `16 + 4l..`),
/// without dot product: `q` (levels 0..32) and `a` loaded de-interleaved by byte pairs
/// ([`load32_pairs`]), two products per i16 lane (at most 2 · 31 · 128), added pairwise.
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn k_sub_lanes(q: [int8x16_t; 2], a: [int8x16_t; 2]) -> [int32x4_t; 2] {
    // SAFETY: register-only operations; NEON is the caller's contract.
    unsafe {
        let p_lo = vmlal_s8(
            vmull_s8(vget_low_s8(q[0]), vget_low_s8(a[0])),
            vget_low_s8(q[1]),
            vget_low_s8(a[1]),
        );
        let p_hi = vmlal_high_s8(vmull_high_s8(q[0], a[0]), q[1], a[1]);
        [vpaddlq_s16(p_lo), vpaddlq_s16(p_hi)]
    }
}

/// [`k_sub_lanes`] with `sdot`, over values 0..16 and 16..32 ([`load32_halves`]).
///
/// # Safety
/// NEON and the dot-product extension must be available.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn k_sub_lanes_dotprod(q: [int8x16_t; 2], a: [int8x16_t; 2]) -> [int32x4_t; 2] {
    // SAFETY: register-only operations; the features are the caller's contract.
    unsafe { [dot16_dotprod(q[0], a[0]), dot16_dotprod(q[1], a[1])] }
}

/// A Q5_K block against its Q8_K block, exactly, as `(lanes, imin)`: the 8 integer lanes of
/// [`scalar::vec_dot_q5_k_q8_k`](super::scalar::vec_dot_q5_k_q8_k) (lanes 0..4, 4..8), each
/// 32-value sub-block's lanes by `$sub` ([`k_sub_lanes`] or [`k_sub_lanes_dotprod`], over
/// the bytes `$load` and `$load_i8` give it) times its scale, and `Σ_j m_j Σ q8`. Value `l`
/// of sub-blocks `2j` and `2j + 1` is the low and high nibble of `qs[32j + l]`, plus 16 for
/// bit `2j` and `2j + 1` of `qh[l]`; `qs`, `qh` and the activations are loaded alike, so any
/// byte order works. Like `q4_k_block!`, an `unsafe` expression over `#[target_feature]`
/// helpers: the calling kernel's features must cover them.
macro_rules! q5_k_block {
    ($sub:ident, $load:ident, $load_i8:ident, $xb:expr, $yb:expr) => {{
        let (xb, yb): (&BlockQ5K, &BlockQ8K) = ($xb, $yb);
        let (scales, mins) = scales_mins_k4(&xb.scales);
        // scale i: lane i % 4 of sc[i / 4]
        let sc = widen_i16(vreinterpretq_s16_u16(vmovl_u8(vcreate_u8(
            u64::from_le_bytes(scales),
        ))));
        let qh = $load(&xb.qh, 0);
        let (m4, bit4) = (vdupq_n_u8(0x0F), vdupq_n_u8(0x10));
        let fifth = |h: uint8x16_t, bit: u8| vandq_u8(vtstq_u8(h, vdupq_n_u8(bit)), bit4);
        let mut lanes = [vdupq_n_s32(0); 2];
        for j in 0..4 {
            let qs = $load(&xb.qs, 32 * j);
            let lo = [0, 1].map(|h| {
                vreinterpretq_s8_u8(vorrq_u8(vandq_u8(qs[h], m4), fifth(qh[h], 1 << (2 * j))))
            });
            let hi = [0, 1].map(|h| {
                vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(qs[h], 4), fifth(qh[h], 2 << (2 * j))))
            });
            for (sub, (q, at)) in [(lo, 64 * j), (hi, 64 * j + 32)].into_iter().enumerate() {
                let p = $sub(q, $load_i8(&yb.qs, at));
                let (v, lane) = (sc[j / 2], (2 * j + sub) % 4);
                lanes = [
                    mla_lane(lanes[0], p[0], v, lane),
                    mla_lane(lanes[1], p[1], v, lane),
                ];
            }
        }
        (lanes, vaddvq_s32(q4_k_mins_pairs(mins, &yb.bsums)))
    }};
}

/// Defines the Q4_K, Q5_K and Q6_K dots over one set of integer primitives, with its features:
/// the per-block integer parts (`q4_k_block!`, `q5_k_block!`, `q6_k_block!` over `$dot32`,
/// `$k_sub` and `$q6_quarter`,
/// exact, so their order of summation is free) and, over them, the float steps of each scalar
/// twin in its order.
macro_rules! kquant_dots {
    (
        features: $features:literal,
        dot32_nibbles: $dot32:path,
        q6_quarter: $q6_quarter:ident,
        k_sub: $k_sub:ident,
        load32: $load32:ident,
        load32_i8: $load32_i8:ident,
        q4k: $q4k:ident,
        q4k_group4: $q4k_group4:ident,
        q4k_tiled: $q4k_tiled:ident,
        q5k: $q5k:ident,
        q5k_tiled: $q5k_tiled:ident,
        q6k: $q6k:ident,
        q6k_tiled: $q6k_tiled:ident $(,)?
    ) => {
        /// Q5_K · Q8_K as [`scalar::vec_dot_q5_k_q8_k`](super::scalar::vec_dot_q5_k_q8_k)
        /// computes it, bit for bit: each of the 8 integer lanes into its own f32 accumulator
        /// with a fused multiply-add by `d_a · d_w`, the minimums' part into one fused chain
        /// by `-d_a · dmin_w`, reduced as `hsum_float_8` does, plus that chain.
        ///
        /// # Safety
        #[doc = concat!("The features `", $features, "` must be available.")]
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $q5k(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
            // SAFETY: register operations and the bounds-checked loads of the helpers.
            unsafe {
                let mut acc = [vdupq_n_f32(0.0); 2];
                let mut summs = 0.0f32;
                for (xb, yb) in x.iter().zip(y) {
                    let (lanes, imin) = q5_k_block!($k_sub, $load32, $load32_i8, xb, yb);
                    let d = yb.d * f16_to_f32(xb.d);
                    acc[0] = vfmaq_n_f32(acc[0], vcvtq_f32_s32(lanes[0]), d);
                    acc[1] = vfmaq_n_f32(acc[1], vcvtq_f32_s32(lanes[1]), d);
                    let dmin = -yb.d * f16_to_f32(xb.dmin);
                    summs = dmin.mul_add(imin as f32, summs);
                }
                // hsum_float_8: high half plus low half, lanes 0 + 2 and 1 + 3, then those
                let r = vaddq_f32(acc[1], acc[0]);
                vaddv_f32(vadd_f32(vget_low_f32(r), vget_high_f32(r))) + summs
            }
        }

        /// Q5_K · Q8_K as
        /// [`scalar::vec_dot_q5_k_q8_k_tiled`](super::scalar::vec_dot_q5_k_q8_k_tiled)
        /// computes it, bit for bit: per block `r = fma(-dmin_w, imin, sumi · d_w)`,
        /// `acc = fma(r, d_a, acc)`.
        ///
        /// # Safety
        #[doc = concat!("The features `", $features, "` must be available.")]
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $q5k_tiled(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
            // SAFETY: register operations and the bounds-checked loads of the helpers.
            unsafe {
                let mut acc = 0.0f32;
                for (xb, yb) in x.iter().zip(y) {
                    let (lanes, imin) = q5_k_block!($k_sub, $load32, $load32_i8, xb, yb);
                    let sumi = vaddvq_s32(vaddq_s32(lanes[0], lanes[1]));
                    let r = sumi as f32 * f16_to_f32(xb.d);
                    let r = (-f16_to_f32(xb.dmin)).mul_add(imin as f32, r);
                    acc = r.mul_add(yb.d, acc);
                }
                acc
            }
        }

        /// Q4_K · Q8_K as [`scalar::vec_dot_q4_k_q8_k`](super::scalar::vec_dot_q4_k_q8_k)
        /// computes it, bit for bit: per block `[acc, acc_min] = fma([sumi, imin],
        /// [d_w·d_a, dmin_w·d_a], [acc, acc_min])` (the two fused chains side by side in one
        /// vector), `acc - acc_min` at the end.
        ///
        /// # Safety
        #[doc = concat!("The features `", $features, "` must be available.")]
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $q4k(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
            // SAFETY: register operations and the bounds-checked loads of the helpers.
            unsafe {
                let mut acc = vdup_n_f32(0.0);
                for (xb, yb) in x.iter().zip(y) {
                    let d = vmul_n_f32(f16_pair(xb.d, xb.dmin), yb.d);
                    acc = vfma_f32(acc, vcvt_f32_s32(q4_k_sums!($dot32, xb, yb)), d);
                }
                vget_lane_f32::<0>(acc) - vget_lane_f32::<1>(acc)
            }
        }

        /// Q4_K · Q8_K as
        /// [`scalar::vec_dot_q4_k_q8_k_group4`](super::scalar::vec_dot_q4_k_q8_k_group4)
        /// computes it, bit for bit: the two fused chains (side by side, as in the one-token
        /// dot) step once per pair of sub-blocks.
        ///
        /// # Safety
        #[doc = concat!("The features `", $features, "` must be available.")]
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $q4k_group4(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
            // SAFETY: register operations and the bounds-checked loads of the helpers.
            unsafe {
                let mut acc = vdup_n_f32(0.0);
                for (xb, yb) in x.iter().zip(y) {
                    let d = vmul_n_f32(f16_pair(xb.d, xb.dmin), yb.d);
                    let (v, mins) = q4_k_block!($dot32, xb, yb);
                    let sums = vpaddq_s32(vpaddq_s32(v[0], v[1]), vpaddq_s32(v[2], v[3]));
                    let (s, m) = (vcvtq_f32_s32(sums), vcvtq_f32_s32(mins));
                    // [isum_j, imin_j] for j = 0, 1 and 2, 3
                    let (p01, p23) = (vzip1q_f32(s, m), vzip2q_f32(s, m));
                    acc = vfma_f32(acc, vget_low_f32(p01), d);
                    acc = vfma_f32(acc, vget_high_f32(p01), d);
                    acc = vfma_f32(acc, vget_low_f32(p23), d);
                    acc = vfma_f32(acc, vget_high_f32(p23), d);
                }
                vget_lane_f32::<0>(acc) - vget_lane_f32::<1>(acc)
            }
        }

        /// Q4_K · Q8_K as
        /// [`scalar::vec_dot_q4_k_q8_k_tiled`](super::scalar::vec_dot_q4_k_q8_k_tiled)
        /// computes it, bit for bit: per block `r = fma(-dmin_w, imin, sumi · d_w)`,
        /// `acc = fma(r, d_a, acc)`.
        ///
        /// # Safety
        #[doc = concat!("The features `", $features, "` must be available.")]
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $q4k_tiled(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
            // SAFETY: register operations and the bounds-checked loads of the helpers.
            unsafe {
                let mut acc = 0.0f32;
                for (xb, yb) in x.iter().zip(y) {
                    let d = f16_pair(xb.d, xb.dmin);
                    let s = vcvt_f32_s32(q4_k_sums!($dot32, xb, yb));
                    let r = vget_lane_f32::<0>(s) * vget_lane_f32::<0>(d);
                    let r = (-vget_lane_f32::<1>(d)).mul_add(vget_lane_f32::<1>(s), r);
                    acc = r.mul_add(yb.d, acc);
                }
                acc
            }
        }

        /// Q6_K · Q8_K as [`scalar::vec_dot_q6_k_q8_k`](super::scalar::vec_dot_q6_k_q8_k)
        /// computes it, bit for bit: each of the 8 integer lanes into its own f32 accumulator
        /// with a fused multiply-add by `d_a · d_w`, reduced as `hsum_float_8` does.
        ///
        /// # Safety
        #[doc = concat!("The features `", $features, "` must be available.")]
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $q6k(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
            // SAFETY: register operations and the bounds-checked loads of the helpers.
            unsafe {
                let mut acc = [vdupq_n_f32(0.0); 2];
                for (xb, yb) in x.iter().zip(y) {
                    let lanes = q6_k_block!($q6_quarter, $load32, $load32_i8, xb, yb);
                    let d = yb.d * f16_to_f32(xb.d);
                    acc[0] = vfmaq_n_f32(acc[0], vcvtq_f32_s32(lanes[0]), d);
                    acc[1] = vfmaq_n_f32(acc[1], vcvtq_f32_s32(lanes[1]), d);
                }
                // hsum_float_8: high half plus low half, lanes 0 + 2 and 1 + 3, then those
                let r = vaddq_f32(acc[1], acc[0]);
                vaddv_f32(vadd_f32(vget_low_f32(r), vget_high_f32(r)))
            }
        }

        /// Q6_K · Q8_K as
        /// [`scalar::vec_dot_q6_k_q8_k_tiled`](super::scalar::vec_dot_q6_k_q8_k_tiled)
        /// computes it, bit for bit: per block `acc = fma(sumi · d_w, d_a, acc)`.
        ///
        /// # Safety
        #[doc = concat!("The features `", $features, "` must be available.")]
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $q6k_tiled(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
            // SAFETY: register operations and the bounds-checked loads of the helpers.
            unsafe {
                let mut acc = 0.0f32;
                for (xb, yb) in x.iter().zip(y) {
                    let lanes = q6_k_block!($q6_quarter, $load32, $load32_i8, xb, yb);
                    let sumi = vaddvq_s32(vaddq_s32(lanes[0], lanes[1]));
                    acc = (sumi as f32 * f16_to_f32(xb.d)).mul_add(yb.d, acc);
                }
                acc
            }
        }
    };
}

kquant_dots!(
    features: "neon",
    dot32_nibbles: dot32_nibbles,
    q6_quarter: q6_k_quarter,
    k_sub: k_sub_lanes,
    load32: load32_pairs,
    load32_i8: load32_pairs_i8,
    q4k: vec_dot_q4_k_q8_k,
    q4k_group4: vec_dot_q4_k_q8_k_group4,
    q4k_tiled: vec_dot_q4_k_q8_k_tiled,
    q5k: vec_dot_q5_k_q8_k,
    q5k_tiled: vec_dot_q5_k_q8_k_tiled,
    q6k: vec_dot_q6_k_q8_k,
    q6k_tiled: vec_dot_q6_k_q8_k_tiled,
);
kquant_dots!(
    features: "neon,dotprod",
    dot32_nibbles: dot32_nibbles_dotprod,
    q6_quarter: q6_k_quarter_dotprod,
    k_sub: k_sub_lanes_dotprod,
    load32: load32_halves,
    load32_i8: load32_halves_i8,
    q4k: vec_dot_q4_k_q8_k_dotprod,
    q4k_group4: vec_dot_q4_k_q8_k_group4_dotprod,
    q4k_tiled: vec_dot_q4_k_q8_k_tiled_dotprod,
    q5k: vec_dot_q5_k_q8_k_dotprod,
    q5k_tiled: vec_dot_q5_k_q8_k_tiled_dotprod,
    q6k: vec_dot_q6_k_q8_k_dotprod,
    q6k_tiled: vec_dot_q6_k_q8_k_tiled_dotprod,
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
