//! NEON kernels (aarch64), for [`KernelPath::Neon`](super::KernelPath::Neon) (any ARMv8-A:
//! Cortex-A53/A72, Raspberry Pi 3/4) and [`KernelPath::NeonDotprod`](super::KernelPath::NeonDotprod)
//! (ARMv8.2-A dot product: Cortex-A55/A76, Raspberry Pi 5, Jetson Orin). The two differ only in
//! the int dots; the float dots and the quantizers are shared.
//!
//! Every `unsafe fn` here requires NEON, and the `_dotprod` ones also the dot-product extension.
//! The safe `row_dot_*` / `quantize_row_*` entries are `pub(super)` and only stored in a
//! [`Kernels`](super::Kernels) table built after [`KernelPath::is_supported`](super::KernelPath::is_supported)
//! said yes: that is what makes calling them sound.
//!
//! Two instructions are written as inline assembly because their intrinsics are not stable
//! in Rust 1.85..=1.96: `sdot` (`vdotq_s32`, feature `stdarch_neon_dotprod`) and
//! `fcvtl` (f16 → f32, whose intrinsic needs the unstable `float16x4_t`), which
//! is a base ARMv8-A instruction (no FP16 arithmetic extension needed).
//!
//! The kernels a llama-family Q4_0, Q4_1, Q5_0 or Q8_0 forward pass uses compute the scalar
//! kernels' bits (which are llama.cpp's x86 ones), so that a board decodes the tokens and
//! logits of the reference: the int row dots sum in the scalar `Lanes8` order, the f16
//! attention dots in [`SumOrder`]'s, and the softmax and SwiGLU exponentials are the scalar
//! `expf_ggml` lane for lane. With int8 activations one different bit upstream of a quantizer
//! flips quants and moves the logits by tenths after 30 layers, so close is not enough.
//!
//! Int paths: nibbles unpacked with `and`/`ushr`, then per block the exact sum of each group
//! of 4 consecutive elements in an i32 lane, 8 lanes per block: one `sdot` per 16 bytes, or,
//! without dot product, widening multiplies `smull` into i16 lanes and two pairwise adds
//! (`addp` in i16: two products, at most 2·128·127 = 32512, exact while the activation avoids
//! -128, as the quantizers guarantee; then `saddlp` into i32). Each lane becomes f32 and is
//! added into its own accumulator as `fma(dx·dy, lane, acc)`, block after block, as the
//! scalar kernels do.

// Rust 1.85 (our MSRV) requires `unsafe` around every `core::arch` intrinsic; from 1.87 the
// pointer-free ones are safe inside `#[target_feature]` functions, where the blocks that hold
// only those then look unused.
#![allow(unused_unsafe)]

use std::arch::aarch64::*;
use std::arch::asm;

use half::{bf16, f16};

use super::scalar::{EXP_C, EXP_INV_LN2, EXP_LN2_HI, EXP_LN2_LO, EXP_SHIFT};
use super::{quantize_q8_groups, row_dot2_entry, row_dot_entry, rows_dot_entry, SumOrder, GROUP};
use crate::quant::blocks::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1, QK8_0};
use crate::quant::BlockQ5_0;
use crate::quant::{fp32_to_fp16, quantize_act_row_q8_0, quantize_act_row_q8_1};

row_dot_entry!(row_dot_q4_0, vec_dot_q4_0_q8_0, BlockQ4_0, BlockQ8_0);
row_dot_entry!(row_dot_q4_1, vec_dot_q4_1_q8_1, BlockQ4_1, BlockQ8_1);
row_dot_entry!(row_dot_q8_0, vec_dot_q8_0_q8_0, BlockQ8_0, BlockQ8_0);
row_dot_entry!(
    row_dot_q4_0_dotprod,
    vec_dot_q4_0_q8_0_dotprod,
    BlockQ4_0,
    BlockQ8_0
);
row_dot_entry!(
    row_dot_q4_1_dotprod,
    vec_dot_q4_1_q8_1_dotprod,
    BlockQ4_1,
    BlockQ8_1
);
row_dot_entry!(
    row_dot_q8_0_dotprod,
    vec_dot_q8_0_q8_0_dotprod,
    BlockQ8_0,
    BlockQ8_0
);
row_dot_entry!(row_dot_q5_0, vec_dot_q5_0_q8_0, BlockQ5_0, BlockQ8_0);
row_dot_entry!(
    row_dot_q5_0_dotprod,
    vec_dot_q5_0_q8_0_dotprod,
    BlockQ5_0,
    BlockQ8_0
);
row_dot2_entry!(row_dot2_q5_0, vec_dot2_q5_0_q8_0, BlockQ5_0, BlockQ8_0);
row_dot2_entry!(
    row_dot2_q5_0_dotprod,
    vec_dot2_q5_0_q8_0_dotprod,
    BlockQ5_0,
    BlockQ8_0
);
row_dot2_entry!(row_dot2_q4_0, vec_dot2_q4_0_q8_0, BlockQ4_0, BlockQ8_0);
row_dot2_entry!(row_dot2_q4_1, vec_dot2_q4_1_q8_1, BlockQ4_1, BlockQ8_1);
row_dot2_entry!(row_dot2_q8_0, vec_dot2_q8_0_q8_0, BlockQ8_0, BlockQ8_0);
row_dot2_entry!(
    row_dot2_q4_0_dotprod,
    vec_dot2_q4_0_q8_0_dotprod,
    BlockQ4_0,
    BlockQ8_0
);
row_dot2_entry!(
    row_dot2_q4_1_dotprod,
    vec_dot2_q4_1_q8_1_dotprod,
    BlockQ4_1,
    BlockQ8_1
);
row_dot2_entry!(
    row_dot2_q8_0_dotprod,
    vec_dot2_q8_0_q8_0_dotprod,
    BlockQ8_0,
    BlockQ8_0
);
row_dot_entry!(row_dot_f16, vec_dot_f16, f16, f16);
row_dot_entry!(row_dot_f32, vec_dot_f32, f32, f32);
/// [`vec_dots_f16`] as a table entry: unlike the other rows dots, it follows `order`.
pub(super) fn rows_dot_f16(
    rows: &[f16],
    stride: usize,
    xs: &[f32],
    n: usize,
    order: SumOrder,
    out: &mut [f32],
) {
    // SAFETY: only stored in a `Kernels` table for a NEON path, built after
    // `KernelPath::is_supported` confirmed NEON.
    unsafe { vec_dots_f16(rows, stride, xs, n, order, out) }
}
rows_dot_entry!(rows_dot_f32, vec_dots_f32, f32);

/// [`vec_soft_max_f32`] as a table entry.
pub(super) fn soft_max_f32(x: &mut [f32], max: f32) -> f64 {
    // SAFETY: only stored in a `Kernels` table for a NEON path, built after
    // `KernelPath::is_supported` confirmed NEON.
    unsafe { vec_soft_max_f32(x, max) }
}

/// [`vec_swiglu_f32`] as a table entry.
pub(super) fn swiglu_f32(gate: &mut [f32], up: &[f32]) {
    // SAFETY: as for `soft_max_f32`.
    unsafe { vec_swiglu_f32(gate, up) }
}
row_dot_entry!(row_dot_bf16, vec_dot_bf16_f32, bf16, f32);

/// [`quantize_row_q8_0_neon`] as a table entry.
pub(super) fn quantize_row_q8_0_entry(x: &[f32], y: &mut [BlockQ8_0]) {
    // SAFETY: only stored in a `Kernels` table for a NEON path, built after
    // `KernelPath::is_supported` confirmed NEON.
    unsafe { quantize_row_q8_0_neon(x, y) }
}

/// [`quantize_row_q8_1_neon`] as a table entry.
pub(super) fn quantize_row_q8_1_entry(x: &[f32], y: &mut [BlockQ8_1]) {
    // SAFETY: as for `quantize_row_q8_0_entry`.
    unsafe { quantize_row_q8_1_neon(x, y) }
}

// ---------------------------------------------------------------------------------------------
// Building blocks

/// `acc + Σ a·b` over each group of 4 signed bytes, per i32 lane (`sdot`).
///
/// # Safety
/// NEON and the dot-product extension must be available.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
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

/// Four f16 (as bits) converted exactly to f32 (`fcvtl`).
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
pub(super) unsafe fn cvt_f16x4(h: uint16x4_t) -> float32x4_t {
    let r: float32x4_t;
    // SAFETY: `fcvtl` is a base ARMv8-A SIMD instruction; it reads and writes only the two
    // registers named.
    unsafe {
        asm!(
            "fcvtl {r:v}.4s, {h:v}.4h",
            r = lateout(vreg) r,
            h = in(vreg) h,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    r
}

/// An f16 converted exactly to f32 with `fcvtl` (the `half` crate's conversion is an
/// out-of-line call on aarch64).
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
pub(super) unsafe fn f16_to_f32(h: f16) -> f32 {
    // SAFETY: register-only operations; NEON is the caller's contract.
    unsafe { vgetq_lane_f32::<0>(cvt_f16x4(vcreate_u16(u64::from(h.to_bits())))) }
}

/// `a · b` of two f16 scales, each converted exactly (as the scalar kernels do).
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn scale_product(a: f16, b: f16) -> f32 {
    let bits = u64::from(a.to_bits()) | (u64::from(b.to_bits()) << 16);
    // SAFETY: register-only operations; NEON is the caller's contract.
    unsafe {
        let v = cvt_f16x4(vcreate_u16(bits)); // [a, b, 0, 0]
        vgetq_lane_f32::<0>(v) * vgetq_lane_f32::<1>(v)
    }
}

/// For a Q4_1 block and its Q8_1 block: lane 0 of the first result is `xd·yd`, lane 1 of the
/// second `fma(xm, ys, summs[1])`, the scalar kernel's chain of `m·s` (lane 0 of it gathers
/// products nothing reads).
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn scales_q4_1(
    x: &BlockQ4_1,
    y: &BlockQ8_1,
    summs: float32x2_t,
) -> (float32x2_t, float32x2_t) {
    let xb = u64::from(x.d.to_bits()) | (u64::from(x.m.to_bits()) << 16);
    let yb = u64::from(y.d.to_bits()) | (u64::from(y.s.to_bits()) << 16);
    // SAFETY: register-only operations; NEON is the caller's contract.
    unsafe {
        let v = cvt_f16x4(vcreate_u16(xb | (yb << 32))); // [xd, xm, yd, ys]
        let (w, a) = (vget_low_f32(v), vget_high_f32(v));
        (vmul_f32(w, a), vfma_f32(summs, w, a))
    }
}

/// A Q4 block's nibbles as two vectors of bytes 0..=15: elements 0..16 and 16..32.
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn nibbles(qs: &[u8; 16]) -> (uint8x16_t, uint8x16_t) {
    // SAFETY: `qs` is 16 readable bytes.
    unsafe {
        let v = vld1q_u8(qs.as_ptr());
        (vandq_u8(v, vdupq_n_u8(0x0f)), vshrq_n_u8::<4>(v))
    }
}

/// A Q8 block's quants as two vectors: elements 0..16 and 16..32.
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn load_q8(qs: &[i8; 32]) -> (int8x16_t, int8x16_t) {
    // SAFETY: `qs` is 32 readable bytes.
    unsafe { (vld1q_s8(qs.as_ptr()), vld1q_s8(qs.as_ptr().add(16))) }
}

/// A block's exact integer sums in the scalar kernels' eight lanes (`Lanes8`): lane `k` of `.0`
/// sums elements `4k..4k + 4`, lane `k` of `.1` elements `16 + 4k..20 + 4k`.
type Lanes = (int32x4_t, int32x4_t);

/// Σ a·b over each group of 4 of 16 signed bytes, without dot product: widening products, a
/// pairwise add in i16 (two products, at most 2·128·127 = 32512: exact while `b` avoids -128,
/// as the quantizers guarantee), then a pairwise widening add into i32.
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn groups4(a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: register-only operations; NEON is the caller's contract.
    unsafe {
        let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
        let hi = vmull_high_s8(a, b);
        vpaddlq_s16(vpaddq_s16(lo, hi))
    }
}

/// The [`Lanes`] of a block's 32 products, without dot product.
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn dot_lanes(a: (int8x16_t, int8x16_t), b: (int8x16_t, int8x16_t)) -> Lanes {
    // SAFETY: register-only operations; NEON is the caller's contract.
    unsafe { (groups4(a.0, b.0), groups4(a.1, b.1)) }
}

/// The [`Lanes`] of a block's 32 products, with dot product (one `sdot` per half).
///
/// # Safety
/// NEON and the dot-product extension must be available.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn dot_lanes_dotprod(a: (int8x16_t, int8x16_t), b: (int8x16_t, int8x16_t)) -> Lanes {
    // SAFETY: register-only operations; the features are the caller's contract.
    unsafe {
        let zero = vdupq_n_s32(0);
        (sdot(zero, a.0, b.0), sdot(zero, a.1, b.1))
    }
}

/// Nibbles 0..=15 minus 8, as signed bytes.
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn q4_0_values(qs: &[u8; 16]) -> (int8x16_t, int8x16_t) {
    // SAFETY: register-only operations and the load in `nibbles`; NEON is the caller's contract.
    unsafe {
        let (lo, hi) = nibbles(qs);
        let eight = vdupq_n_s8(8);
        (
            vsubq_s8(vreinterpretq_s8_u8(lo), eight),
            vsubq_s8(vreinterpretq_s8_u8(hi), eight),
        )
    }
}

/// Nibbles 0..=15 as signed bytes.
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn q4_1_values(qs: &[u8; 16]) -> (int8x16_t, int8x16_t) {
    // SAFETY: register-only operations and the load in `nibbles`; NEON is the caller's contract.
    unsafe {
        let (lo, hi) = nibbles(qs);
        (vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi))
    }
}

/// Q5_0's 32 levels minus 16 (-16..=15) as signed bytes: elements 0..16 (low nibbles, fifth
/// bits from `qh` bits 0..16) and 16..32 (high nibbles, bits 16..32). One `tbl` per half
/// spreads a `qh` byte over each group of 8 lanes, each lane tests its own bit, and the lanes
/// whose bit is clear lose 16 (`bic` + `sub`): no widening, no per-byte moves from the
/// general registers.
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn q5_0_values(qs: &[u8; 16], qh: [u8; 4]) -> (int8x16_t, int8x16_t) {
    // SAFETY: register-only operations and the load in `nibbles`; NEON is the caller's contract.
    unsafe {
        let (lo, hi) = nibbles(qs);
        // inverted, so that one `cmtst` marks the lanes whose bit is clear
        let h = vreinterpretq_u8_u32(vdupq_n_u32(!u32::from_le_bytes(qh)));
        // lanes 0..8 take byte 0 (2), lanes 8..16 byte 1 (3); each lane then tests bit lane % 8
        let spread_lo = vreinterpretq_u8_u64(vcombine_u64(
            vcreate_u64(0),
            vcreate_u64(0x0101_0101_0101_0101),
        ));
        let spread_hi = vaddq_u8(spread_lo, vdupq_n_u8(2));
        let lane_bit = vreinterpretq_u8_u64(vdupq_n_u64(0x8040_2010_0804_0201));
        let sixteen = vdupq_n_u8(16);
        let clear =
            |spread: uint8x16_t| vandq_u8(sixteen, vtstq_u8(vqtbl1q_u8(h, spread), lane_bit));
        (
            vreinterpretq_s8_u8(vsubq_u8(lo, clear(spread_lo))),
            vreinterpretq_s8_u8(vsubq_u8(hi, clear(spread_hi))),
        )
    }
}

/// The eight f32 accumulators of the scalar kernels' `Lanes8`: lanes 0..4 and 4..8.
type Acc8 = (float32x4_t, float32x4_t);

/// Runs `acc = $block(&x[i], &y[i], acc)` over the first `min(x.len(), y.len())` block pairs,
/// in order (one chain per lane, as the scalar kernels add). `$block` must be a function with
/// the caller's `#[target_feature]`s (a closure would not inherit them and its intrinsics would
/// not inline).
macro_rules! dot_blocks {
    ($x:expr, $y:expr, $zero:expr, $block:path) => {{
        let mut acc = $zero;
        for (xb, yb) in $x.iter().zip($y) {
            acc = $block(xb, yb, acc);
        }
        acc
    }};
}

/// [`dot_blocks!`] for two weight rows `$x0`, `$x1` against one activation row, interleaved so
/// that the activation block is loaded once for both; each row's chain is the one-row one, so
/// the results equal two single-row calls bit for bit.
macro_rules! dot_blocks2 {
    ($x0:expr, $x1:expr, $y:expr, $zero:expr, $block:path) => {{
        let (mut a, mut b) = ($zero, $zero);
        for ((x0, x1), yb) in $x0.iter().zip($x1).zip($y) {
            a = $block(x0, yb, a);
            b = $block(x1, yb, b);
        }
        (a, b)
    }};
}

// ---------------------------------------------------------------------------------------------
// Int dots: one generic body per pair, instantiated with and without dot product

/// Defines the two row dots of one pair, `$plain` (NEON, [`dot_lanes`]) and `$dotprod` (NEON +
/// dot product, [`dot_lanes_dotprod`]), from one per-block body that calls the int dot as
/// `$dot` (bound by `use`, not a closure: closures do not inherit `#[target_feature]`, so their
/// intrinsics would not inline).
macro_rules! int_dot_pair {
    (
        $(#[$doc:meta])*
        $plain:ident / $dotprod:ident, $block_plain:ident / $block_dotprod:ident,
        $(@x2 $plain2:ident / $dotprod2:ident,)?
        $w:ty, $a:ty, $acc:ty, zero: $zero:expr, finish: $finish:path,
        |$x:ident, $y:ident, $acc_in:ident, $dot:ident| $body:block
    ) => {
        /// One block pair's contribution, NEON only.
        ///
        /// # Safety
        /// NEON must be available.
        #[inline]
        #[target_feature(enable = "neon")]
        unsafe fn $block_plain($x: &$w, $y: &$a, $acc_in: $acc) -> $acc {
            use self::dot_lanes as $dot;
            // SAFETY: the helpers read the blocks' own arrays; NEON is the caller's contract.
            unsafe { $body }
        }

        /// One block pair's contribution, with dot product.
        ///
        /// # Safety
        /// NEON and the dot-product extension must be available.
        #[inline]
        #[target_feature(enable = "neon,dotprod")]
        unsafe fn $block_dotprod($x: &$w, $y: &$a, $acc_in: $acc) -> $acc {
            use self::dot_lanes_dotprod as $dot;
            // SAFETY: the helpers read the blocks' own arrays; the features are the caller's
            // contract.
            unsafe { $body }
        }

        $(#[$doc])*
        ///
        /// # Safety
        /// NEON must be available.
        #[target_feature(enable = "neon")]
        pub(super) unsafe fn $plain(x: &[$w], y: &[$a]) -> f32 {
            // SAFETY: the per-block helper needs exactly our features.
            unsafe { $finish(dot_blocks!(x, y, $zero, $block_plain)) }
        }

        $(#[$doc])*
        ///
        /// # Safety
        /// NEON and the dot-product extension must be available.
        #[target_feature(enable = "neon,dotprod")]
        pub(super) unsafe fn $dotprod(x: &[$w], y: &[$a]) -> f32 {
            // SAFETY: the per-block helper needs exactly our features.
            unsafe { $finish(dot_blocks!(x, y, $zero, $block_dotprod)) }
        }

        $(
        /// Two rows at once (see [`dot_blocks2!`]), NEON only.
        ///
        /// # Safety
        /// NEON must be available.
        #[target_feature(enable = "neon")]
        pub(super) unsafe fn $plain2(x0: &[$w], x1: &[$w], y: &[$a]) -> [f32; 2] {
            // SAFETY: the per-block helper needs exactly our features.
            unsafe {
                let (a, b) = dot_blocks2!(x0, x1, y, $zero, $block_plain);
                [$finish(a), $finish(b)]
            }
        }

        /// Two rows at once (see [`dot_blocks2!`]), with dot product.
        ///
        /// # Safety
        /// NEON and the dot-product extension must be available.
        #[target_feature(enable = "neon,dotprod")]
        pub(super) unsafe fn $dotprod2(x0: &[$w], x1: &[$w], y: &[$a]) -> [f32; 2] {
            // SAFETY: the per-block helper needs exactly our features.
            unsafe {
                let (a, b) = dot_blocks2!(x0, x1, y, $zero, $block_dotprod);
                [$finish(a), $finish(b)]
            }
        }
        )?
    };
}

/// `acc[k] = fma(d, lane k, acc[k])` over a block's eight [`Lanes`] (the scalar
/// `Lanes8::add_block`; the lane sums are exact in f32).
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn add_block(acc: Acc8, p: Lanes, d: f32) -> Acc8 {
    // SAFETY: register-only operations; NEON is the caller's contract.
    unsafe {
        (
            vfmaq_n_f32(acc.0, vcvtq_f32_s32(p.0), d),
            vfmaq_n_f32(acc.1, vcvtq_f32_s32(p.1), d),
        )
    }
}

/// [`add_block`] with the scale in lane `L` of `d` (`fmla` by element).
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn add_block_lane<const L: i32>(acc: Acc8, p: Lanes, d: float32x2_t) -> Acc8 {
    // SAFETY: register-only operations; NEON is the caller's contract.
    unsafe {
        (
            vfmaq_lane_f32::<L>(acc.0, vcvtq_f32_s32(p.0), d),
            vfmaq_lane_f32::<L>(acc.1, vcvtq_f32_s32(p.1), d),
        )
    }
}

/// [`add_block`] with the scale in lane `L` of `d` (`fmla` by element).
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn add_block_laneq<const L: i32>(acc: Acc8, p: Lanes, d: float32x4_t) -> Acc8 {
    // SAFETY: register-only operations; NEON is the caller's contract.
    unsafe {
        (
            vfmaq_laneq_f32::<L>(acc.0, vcvtq_f32_s32(p.0), d),
            vfmaq_laneq_f32::<L>(acc.1, vcvtq_f32_s32(p.1), d),
        )
    }
}

/// The scalar `Lanes8::sum`: the high four accumulators added to the low four, then lanes
/// 0 + 2 and 1 + 3, then those two.
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn hsum8(acc: Acc8) -> f32 {
    // SAFETY: register-only operations; NEON is the caller's contract.
    unsafe {
        let r = vaddq_f32(acc.1, acc.0);
        vpadds_f32(vadd_f32(vget_low_f32(r), vget_high_f32(r)))
    }
}

/// [`hsum8`] of the scaled int sums plus the chain of `m·s` (lane 1), as the scalar Q4_1 dot
/// ends.
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn finish_q4_1(acc: (Acc8, float32x2_t)) -> f32 {
    // SAFETY: register-only operations; NEON is the caller's contract.
    unsafe { hsum8(acc.0) + vget_lane_f32::<1>(acc.1) }
}

int_dot_pair! {
    /// Σ (q4 - 8) · q8 per block, times both scales, in the scalar kernel's order (twin:
    /// [`scalar::vec_dot_q4_0_q8_0`](super::scalar::vec_dot_q4_0_q8_0), bit for bit).
    vec_dot_q4_0_q8_0 / vec_dot_q4_0_q8_0_dotprod, block_q4_0_q8_0 / block_q4_0_q8_0_dotprod,
    @x2 vec_dot2_q4_0_q8_0 / vec_dot2_q4_0_q8_0_dotprod,
    BlockQ4_0, BlockQ8_0, Acc8, zero: (vdupq_n_f32(0.0), vdupq_n_f32(0.0)), finish: hsum8,
    |x, y, acc, dot| {
        let p = dot(q4_0_values(&x.qs), load_q8(&y.qs));
        add_block(acc, p, scale_product(x.d, y.d))
    }
}

int_dot_pair! {
    /// Σ q4 · q8 per block times both scales, plus `m · s`, in the scalar kernel's order
    /// (twin: [`scalar::vec_dot_q4_1_q8_1`](super::scalar::vec_dot_q4_1_q8_1), bit for bit).
    vec_dot_q4_1_q8_1 / vec_dot_q4_1_q8_1_dotprod, block_q4_1_q8_1 / block_q4_1_q8_1_dotprod,
    BlockQ4_1, BlockQ8_1, (Acc8, float32x2_t),
    zero: ((vdupq_n_f32(0.0), vdupq_n_f32(0.0)), vdup_n_f32(0.0)), finish: finish_q4_1,
    |x, y, acc, dot| {
        let (d, summs) = scales_q4_1(x, y, acc.1);
        let p = dot(q4_1_values(&x.qs), load_q8(&y.qs));
        (add_block_lane::<0>(acc.0, p, d), summs)
    }
}

int_dot_pair! {
    /// Σ q8 · q8 per block, times both scales, in the scalar kernel's order (twin:
    /// [`scalar::vec_dot_q8_0_q8_0`](super::scalar::vec_dot_q8_0_q8_0), bit for bit).
    vec_dot_q8_0_q8_0 / vec_dot_q8_0_q8_0_dotprod, block_q8_0_q8_0 / block_q8_0_q8_0_dotprod,
    BlockQ8_0, BlockQ8_0, Acc8, zero: (vdupq_n_f32(0.0), vdupq_n_f32(0.0)), finish: hsum8,
    |x, y, acc, dot| {
        let p = dot(load_q8(&x.qs), load_q8(&y.qs));
        add_block(acc, p, scale_product(x.d, y.d))
    }
}

int_dot_pair! {
    /// Σ (q5 - 16) · q8 per block, times both scales, in the scalar kernel's order (twin:
    /// [`scalar::vec_dot_q5_0_q8_0`](super::scalar::vec_dot_q5_0_q8_0), bit for bit):
    /// SmolLM2's and Gemma-3's Q4_K_M files are mostly Q5_0 (their rows are not multiples of
    /// 256).
    vec_dot_q5_0_q8_0 / vec_dot_q5_0_q8_0_dotprod, block_q5_0_q8_0 / block_q5_0_q8_0_dotprod,
    BlockQ5_0, BlockQ8_0, Acc8, zero: (vdupq_n_f32(0.0), vdupq_n_f32(0.0)), finish: hsum8,
    |x, y, acc, dot| {
        let p = dot(q5_0_values(&x.qs, x.qh), load_q8(&y.qs));
        add_block(acc, p, scale_product(x.d, y.d))
    }
}

/// Defines [`vec_dot_q4_1_q8_1`] of two rows with one activation row over the int dot `$dot`
/// (features `$features`), bit for bit the one-row dot on each: SmolLM2 Q4_1's decode step is
/// mostly this loop. Per block, both rows' `d` and `m` and the activation's `d` and `s` are
/// converted together, `[x0d, x0m, x1d, x1m]` and `[yd, ys, yd, ys]`: one product gives both
/// scale products (lanes 0 and 2), one fused multiply-add both chains of `m·s` (lanes 1 and 3).
macro_rules! q4_1_dot2 {
    ($name:ident, $features:literal, $dot:path) => {
        #[doc = concat!("[`vec_dot_q4_1_q8_1`] of two rows with one activation row (int dot `", stringify!($dot), "`), bit for bit.")]
        ///
        /// # Safety
        #[doc = concat!("The features `", $features, "` must be available.")]
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $name(
            x0: &[BlockQ4_1],
            x1: &[BlockQ4_1],
            y: &[BlockQ8_1],
        ) -> [f32; 2] {
            // `d` and the second f16 field as one u32 (two adjacent fields: one load).
            let pair = |a: f16, b: f16| u32::from(a.to_bits()) | (u32::from(b.to_bits()) << 16);
            // SAFETY: the helpers read the blocks' own arrays; the features are the caller's
            // contract.
            unsafe {
                let zero = vdupq_n_f32(0.0);
                let (mut a, mut b, mut summs) = ((zero, zero), (zero, zero), zero);
                for ((u, v), w) in x0.iter().zip(x1).zip(y) {
                    let xv = vset_lane_u32::<1>(pair(v.d, v.m), vdup_n_u32(pair(u.d, u.m)));
                    let xv = cvt_f16x4(vreinterpret_u16_u32(xv));
                    let yv = cvt_f16x4(vreinterpret_u16_u32(vdup_n_u32(pair(w.d, w.s))));
                    let d = vmulq_f32(xv, yv);
                    summs = vfmaq_f32(summs, xv, yv);
                    let yq = load_q8(&w.qs);
                    a = add_block_laneq::<0>(a, $dot(q4_1_values(&u.qs), yq), d);
                    b = add_block_laneq::<2>(b, $dot(q4_1_values(&v.qs), yq), d);
                }
                [
                    hsum8(a) + vgetq_lane_f32::<1>(summs),
                    hsum8(b) + vgetq_lane_f32::<3>(summs),
                ]
            }
        }
    };
}

q4_1_dot2!(vec_dot2_q4_1_q8_1, "neon", dot_lanes);
q4_1_dot2!(
    vec_dot2_q4_1_q8_1_dotprod,
    "neon,dotprod",
    dot_lanes_dotprod
);

/// A block type with one f16 scale `d` (Q8_0, Q5_0).
trait BlockScale {
    fn scale(&self) -> &f16;
}
impl BlockScale for BlockQ8_0 {
    fn scale(&self) -> &f16 {
        &self.d
    }
}
impl BlockScale for BlockQ5_0 {
    fn scale(&self) -> &f16 {
        &self.d
    }
}

/// Four blocks' f16 scales converted exactly to f32 lanes: four lane loads and one `fcvtl`.
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn scales4<B: BlockScale>(b: &[B; 4]) -> float32x4_t {
    let d = |i: usize| (b[i].scale() as *const f16).cast::<u16>();
    // SAFETY: each pointer is to a block's `d`, an f16 (two readable bytes, aligned for u16);
    // the rest is register-only.
    unsafe {
        let v = vld1_lane_u16::<0>(d(0), vdup_n_u16(0));
        let v = vld1_lane_u16::<1>(d(1), v);
        let v = vld1_lane_u16::<2>(d(2), v);
        cvt_f16x4(vld1_lane_u16::<3>(d(3), v))
    }
}

/// Defines a two-row dot of `$w` blocks (one f16 scale each, values `$values` of block `$x`)
/// against Q8_0 activations over one int dot with its features: the Q8_0 output matrix is most
/// of a decode step for Gemma-3 (262144 rows), Q5_0 most of the rest, and one-block steps spend
/// more on each block's two f16 scales than on its 32 products. Four blocks' scales are
/// converted at once and their products taken by lane (`fmla` by element); each row's blocks
/// go through its one chain in order, so each result equals the one-row dot's (`$one`) bit for
/// bit.
macro_rules! scaled_dot2 {
    ($name:ident, $one:ident, $features:literal, $dot:path, $w:ty, |$x:ident| $values:expr) => {
        #[doc = concat!("[`", stringify!($one), "`] of two rows with one activation row, bit for bit.")]
        ///
        /// # Safety
        #[doc = concat!("The features `", $features, "` must be available.")]
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $name(x0: &[$w], x1: &[$w], y: &[BlockQ8_0]) -> [f32; 2] {
            /// Both rows' block `x0`, `x1` against `y`, added to `acc` with the scale products
            /// in lane `L` of `d0`, `d1`. (A function, not a closure: closures do not inherit
            /// `#[target_feature]`, so the int dot would not inline.)
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn step<const L: i32>(
                acc: (Acc8, Acc8),
                x0: &$w,
                x1: &$w,
                y: &BlockQ8_0,
                d0: float32x4_t,
                d1: float32x4_t,
            ) -> (Acc8, Acc8) {
                // SAFETY: the helpers read the blocks' own arrays; the features are the
                // caller's contract.
                unsafe {
                    let yq = load_q8(&y.qs);
                    let p0 = $dot(
                        {
                            let $x = x0;
                            $values
                        },
                        yq,
                    );
                    let p1 = $dot(
                        {
                            let $x = x1;
                            $values
                        },
                        yq,
                    );
                    (
                        add_block_laneq::<L>(acc.0, p0, d0),
                        add_block_laneq::<L>(acc.1, p1, d1),
                    )
                }
            }
            // SAFETY: the helpers read the blocks' own arrays; the features are the caller's
            // contract.
            unsafe {
                let n = x0.len().min(x1.len()).min(y.len());
                let (x0, x1, y) = (&x0[..n], &x1[..n], &y[..n]);
                let zero = vdupq_n_f32(0.0);
                let mut acc = ((zero, zero), (zero, zero));
                let (c0, c1, cy) = (x0.chunks_exact(4), x1.chunks_exact(4), y.chunks_exact(4));
                let done = n - cy.remainder().len();
                for ((u, v), w) in c0.zip(c1).zip(cy) {
                    let (u, v, w): (&[$w; 4], &[$w; 4], &[BlockQ8_0; 4]) = (
                        u.try_into().expect("chunk of 4"),
                        v.try_into().expect("chunk of 4"),
                        w.try_into().expect("chunk of 4"),
                    );
                    let yd = scales4(w);
                    let d0 = vmulq_f32(scales4(u), yd);
                    let d1 = vmulq_f32(scales4(v), yd);
                    acc = step::<0>(acc, &u[0], &v[0], &w[0], d0, d1);
                    acc = step::<1>(acc, &u[1], &v[1], &w[1], d0, d1);
                    acc = step::<2>(acc, &u[2], &v[2], &w[2], d0, d1);
                    acc = step::<3>(acc, &u[3], &v[3], &w[3], d0, d1);
                }
                for i in done..n {
                    let yq = load_q8(&y[i].qs);
                    let p0 = $dot(
                        {
                            let $x = &x0[i];
                            $values
                        },
                        yq,
                    );
                    let p1 = $dot(
                        {
                            let $x = &x1[i];
                            $values
                        },
                        yq,
                    );
                    acc = (
                        add_block(acc.0, p0, scale_product(x0[i].d, y[i].d)),
                        add_block(acc.1, p1, scale_product(x1[i].d, y[i].d)),
                    );
                }
                [hsum8(acc.0), hsum8(acc.1)]
            }
        }
    };
}

scaled_dot2!(
    vec_dot2_q8_0_q8_0,
    vec_dot_q8_0_q8_0,
    "neon",
    dot_lanes,
    BlockQ8_0,
    |x| load_q8(&x.qs)
);
scaled_dot2!(
    vec_dot2_q8_0_q8_0_dotprod,
    vec_dot_q8_0_q8_0_dotprod,
    "neon,dotprod",
    dot_lanes_dotprod,
    BlockQ8_0,
    |x| load_q8(&x.qs)
);

/// [`vec_dot_q5_0_q8_0`] of two rows with one activation row, bit for bit, NEON only: block by
/// block ([`dot_blocks2!`]); the four-scale form of the dotprod path measured more instructions
/// here (the widening products need the registers).
///
/// # Safety
/// NEON must be available.
#[target_feature(enable = "neon")]
pub(super) unsafe fn vec_dot2_q5_0_q8_0(
    x0: &[BlockQ5_0],
    x1: &[BlockQ5_0],
    y: &[BlockQ8_0],
) -> [f32; 2] {
    // SAFETY: the per-block helper needs exactly our features.
    unsafe {
        let zero = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
        let (a, b) = dot_blocks2!(x0, x1, y, zero, block_q5_0_q8_0);
        [hsum8(a), hsum8(b)]
    }
}
scaled_dot2!(
    vec_dot2_q5_0_q8_0_dotprod,
    vec_dot_q5_0_q8_0_dotprod,
    "neon,dotprod",
    dot_lanes_dotprod,
    BlockQ5_0,
    |x| q5_0_values(&x.qs, x.qh)
);

// ---------------------------------------------------------------------------------------------
// Float dots

/// Σ x·y over the first `n` elements: `|i| load` gives 4 f32 lanes of each side starting at
/// element `i`, `|j| tail` the product of element `j`. Four accumulators of 4 lanes, then
/// 4-wide steps, then the tail one element at a time (a macro, not closures: see
/// `int_dot_pair!`).
macro_rules! float_dot {
    ($n:expr, |$i:ident| $load:expr, |$j:ident| $tail:expr) => {{
        let n: usize = $n;
        let mut acc = [vdupq_n_f32(0.0); 4];
        let mut base = 0;
        while base + 16 <= n {
            for (k, a) in acc.iter_mut().enumerate() {
                let $i = base + 4 * k;
                let (x, y) = $load;
                *a = vfmaq_f32(*a, x, y);
            }
            base += 16;
        }
        while base + 4 <= n {
            let $i = base;
            let (x, y) = $load;
            acc[0] = vfmaq_f32(acc[0], x, y);
            base += 4;
        }
        let mut sumf = vaddvq_f32(vaddq_f32(
            vaddq_f32(acc[0], acc[1]),
            vaddq_f32(acc[2], acc[3]),
        ));
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
/// NEON must be available.
#[target_feature(enable = "neon")]
pub(super) unsafe fn vec_dot_f32(x: &[f32], y: &[f32]) -> f32 {
    let (xp, yp) = (x.as_ptr(), y.as_ptr());
    // SAFETY: `float_dot!` loads elements `i..i + 4` only while `i + 4 <= n`, with `n` the
    // shorter length.
    unsafe {
        float_dot!(
            x.len().min(y.len()),
            |i| (vld1q_f32(xp.add(i)), vld1q_f32(yp.add(i))),
            |j| x[j] * y[j]
        )
    }
}

/// Σ x·y over f16 rows, converted exactly to f32 lanes (twin:
/// [`scalar::vec_dot_f16`](super::scalar::vec_dot_f16)).
///
/// # Safety
/// NEON must be available.
#[target_feature(enable = "neon")]
pub(super) unsafe fn vec_dot_f16(x: &[f16], y: &[f16]) -> f32 {
    let (xp, yp) = (x.as_ptr().cast::<u16>(), y.as_ptr().cast::<u16>());
    // SAFETY: as in `vec_dot_f32`: 4 f16 (8 bytes; `f16` is a transparent u16) are loaded only
    // while `i + 4 <= n`.
    unsafe {
        float_dot!(
            x.len().min(y.len()),
            |i| (
                cvt_f16x4(vld1_u16(xp.add(i))),
                cvt_f16x4(vld1_u16(yp.add(i)))
            ),
            |j| x[j].to_f32() * y[j].to_f32()
        )
    }
}

/// Defines `$step`, `$group` and `$dots` for rows of `$t`, whose `|$p| $load` reads 4 elements
/// at `$p` as f32 lanes: the NEON twin of the AVX2 module's `float_rows_dots!` (4 lanes per
/// step; the same 12 accumulators, of NEON's 32 registers).
///
/// `$step::<N, G>` dots `N` rows (at `p`, `stride` elements apart) with `G` f32 vectors (at
/// `x`, `n` apart) over `n` columns: accumulator `k·G + h` holds row `k` · vector `h`; each 4
/// columns of a row are loaded and converted once for all `G` vectors. The last `n % 4` columns
/// of each row go through a zero-padded stack tile against `x_tail`. `$group::<G, N>` runs `N`
/// rows per step, then single rows, and writes the sums (four at a time by pairwise adds);
/// `$dots` is the [`RowsDot`](super::RowsDot) kernel, taking the vectors four at a time.
macro_rules! float_rows_dots {
    ($step:ident, $group:ident, $dots:ident, $t:ty, |$p:ident| $load:expr) => {
        /// # Safety
        /// NEON must be available; rows `0..N` of `n` elements at `p` (`stride` apart) and `G`
        /// vectors of `n` f32 at `x` must lie in their allocations; `N·G <= 12`.
        #[inline]
        #[target_feature(enable = "neon")]
        unsafe fn $step<const N: usize, const G: usize>(
            p: *const $t,
            stride: usize,
            x: *const f32,
            n: usize,
            x_tail: &[float32x4_t; 4],
        ) -> [float32x4_t; 12] {
            let n4 = n - n % 4;
            // SAFETY: loads of 4 elements at column `i < n4` of a row or a vector stay inside
            // it (the caller's contract); the tails are copied out by their exact length.
            unsafe {
                let mut acc = [vdupq_n_f32(0.0); 12];
                let mut i = 0;
                while i < n4 {
                    for k in 0..N {
                        let r = {
                            let $p = p.add(k * stride + i);
                            $load
                        };
                        for h in 0..G {
                            let xv = vld1q_f32(x.add(h * n + i));
                            acc[k * G + h] = vfmaq_f32(acc[k * G + h], r, xv);
                        }
                    }
                    i += 4;
                }
                if n4 < n {
                    for k in 0..N {
                        let mut tile = [<$t>::default(); 4];
                        std::ptr::copy_nonoverlapping(
                            p.add(k * stride + n4),
                            tile.as_mut_ptr(),
                            n - n4,
                        );
                        let r = {
                            let $p = tile.as_ptr();
                            $load
                        };
                        for h in 0..G {
                            acc[k * G + h] = vfmaq_f32(acc[k * G + h], r, x_tail[h]);
                        }
                    }
                }
                acc
            }
        }

        /// `out[h·n_rows + r] = row r · vector h` for `G` vectors at `x` and `n_rows` rows.
        ///
        /// # Safety
        /// NEON must be available; `x` holds `G·n` values, `out` `G·n_rows`, and rows
        /// `0..n_rows` of `n` elements at `p` lie in one allocation; `N·G <= 12`.
        #[inline]
        #[target_feature(enable = "neon")]
        unsafe fn $group<const G: usize, const N: usize>(
            p: *const $t,
            stride: usize,
            x: &[f32],
            n: usize,
            out: &mut [f32],
        ) {
            let n_rows = out.len() / G;
            let n4 = n - n % 4;
            let mut tails = [[0.0f32; 4]; 4];
            for (h, t) in tails.iter_mut().enumerate().take(G) {
                t[..n - n4].copy_from_slice(&x[h * n + n4..(h + 1) * n]);
            }
            // SAFETY: each step reads rows `r..r + M` with `r + M <= n_rows` (in bounds by the
            // caller's contract) and the `G` vectors of `x`; the sums land in `out` through
            // bounds-checked indexing.
            unsafe {
                let x_tail = [
                    vld1q_f32(tails[0].as_ptr()),
                    vld1q_f32(tails[1].as_ptr()),
                    vld1q_f32(tails[2].as_ptr()),
                    vld1q_f32(tails[3].as_ptr()),
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
                        let s = vpaddq_f32(
                            vpaddq_f32(acc[j], acc[j + 1]),
                            vpaddq_f32(acc[j + 2], acc[j + 3]),
                        );
                        vst1q_f32(sums.as_mut_ptr().add(j), s);
                        j += 4;
                    }
                    while j < m * G {
                        sums[j] = vaddvq_f32(acc[j]);
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
        /// NEON must be available.
        #[target_feature(enable = "neon")]
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

float_rows_dots!(rows_step_f32, rows_group_f32, vec_dots_f32, f32, |p| {
    vld1q_f32(p)
});

/// `_mm512_reduce_add_ps` as the scalar `reduce_add_16` takes it, over 16 lanes held as four
/// vectors: the high 8 lanes added to the low 8, then [`hsum8`].
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn hsum16(v: [float32x4_t; 4]) -> f32 {
    // SAFETY: register-only operations; NEON is the caller's contract.
    unsafe { hsum8((vaddq_f32(v[2], v[0]), vaddq_f32(v[3], v[1]))) }
}

/// The `4·Q` lanes of the scalar `dot_f16_ordered` over `row · x` (equal lengths): lane `l`
/// (lane `l % 4` of vector `l / 4`) a chain of fused multiply-adds over the products `l`,
/// `l + 4Q`, ... A last partial 4 goes through stack tiles padded with `-0 · 0`, a product
/// that leaves every lane as it is (the scalar lanes past the end are not touched).
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn f16_lanes<const Q: usize>(row: &[f16], x: &[f32]) -> [float32x4_t; Q] {
    let len = row.len().min(x.len());
    let (rp, xp) = (row.as_ptr().cast::<u16>(), x.as_ptr());
    // SAFETY: 4 values of each side are loaded at `j` only while `j + 4 <= len` (`f16` is a
    // transparent u16); the tiles are ours.
    unsafe {
        let mut acc = [vdupq_n_f32(0.0); Q];
        let mut i = 0;
        while i + 4 * Q <= len {
            for (k, a) in acc.iter_mut().enumerate() {
                let j = i + 4 * k;
                *a = vfmaq_f32(*a, cvt_f16x4(vld1_u16(rp.add(j))), vld1q_f32(xp.add(j)));
            }
            i += 4 * Q;
        }
        for (k, a) in acc.iter_mut().enumerate() {
            let j = i + 4 * k;
            if j + 4 <= len {
                *a = vfmaq_f32(*a, cvt_f16x4(vld1_u16(rp.add(j))), vld1q_f32(xp.add(j)));
            } else {
                if j < len {
                    let (mut tr, mut tx) = ([f16::NEG_ZERO; 4], [0.0f32; 4]);
                    tr[..len - j].copy_from_slice(&row[j..len]);
                    tx[..len - j].copy_from_slice(&x[j..len]);
                    let r = cvt_f16x4(vld1_u16(tr.as_ptr().cast::<u16>()));
                    *a = vfmaq_f32(*a, r, vld1q_f32(tx.as_ptr()));
                }
                break;
            }
        }
        acc
    }
}

/// `sum + Σ f64(row[i] · x[i])`, added one by one in order as the scalar kernel's tail does (the
/// f32 products are taken 4 at a time).
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn f64_tail(row: &[f16], x: &[f32], mut sum: f64) -> f64 {
    let len = row.len().min(x.len());
    let len4 = len - len % 4;
    let (rp, xp) = (row.as_ptr().cast::<u16>(), x.as_ptr());
    // SAFETY: 4 values of each side are loaded at `i` only while `i + 4 <= len`.
    unsafe {
        let mut i = 0;
        while i < len4 {
            let p = vmulq_f32(cvt_f16x4(vld1_u16(rp.add(i))), vld1q_f32(xp.add(i)));
            let (lo, hi) = (vcvt_f64_f32(vget_low_f32(p)), vcvt_high_f64_f32(p));
            sum += vgetq_lane_f64::<0>(lo);
            sum += vgetq_lane_f64::<1>(lo);
            sum += vgetq_lane_f64::<0>(hi);
            sum += vgetq_lane_f64::<1>(hi);
            i += 4;
        }
        for (r, v) in row[len4..len].iter().zip(&x[len4..len]) {
            sum += f64::from(f16_to_f32(*r) * v);
        }
    }
    sum
}

/// One f16 row · one vector (equal lengths) in the scalar `dot_f16_ordered`'s order for
/// `order`, bit for bit: `Batch` in 16 lanes, `Single` in 64 over the whole 64s of the padded
/// length (their lanes reduced as the scalar kernel does), then the rest in f64.
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn dot_f16_ordered(row: &[f16], x: &[f32], order: SumOrder) -> f32 {
    // SAFETY: register-only operations and the helpers' in-bounds loads; NEON is the caller's
    // contract.
    unsafe {
        match order {
            SumOrder::Batch => hsum16(f16_lanes::<4>(row, x)),
            SumOrder::Single { padded } => {
                let n = row.len();
                let vec_end = (padded.max(n) / 64 * 64).min(n);
                let mut sum = 0.0f64;
                if vec_end > 0 {
                    let a = f16_lanes::<16>(&row[..vec_end], &x[..vec_end]);
                    // lane l of the 64 is in quad l / 4: the scalar's four 16s are quads
                    // 0..4, 4..8, 8..12, 12..16, summed (0 + 2) + (1 + 3) lane by lane
                    let s0 = [0, 1, 2, 3].map(|q| {
                        vaddq_f32(vaddq_f32(a[q], a[q + 8]), vaddq_f32(a[q + 4], a[q + 12]))
                    });
                    sum = f64::from(hsum16(s0));
                }
                f64_tail(&row[vec_end..], &x[vec_end..], sum) as f32
            }
        }
    }
}

/// Rows of f16 dotted with f32 vectors holding f16 values, each sum in llama.cpp's order for
/// `order` (see [`RowsDot`](super::RowsDot); twin: [`scalar::vec_dots_f16`](super::scalar::vec_dots_f16),
/// bit for bit). One row and one vector at a time: the orders leave no lanes to share.
///
/// # Safety
/// NEON must be available.
#[target_feature(enable = "neon")]
pub(super) unsafe fn vec_dots_f16(
    rows: &[f16],
    stride: usize,
    xs: &[f32],
    n: usize,
    order: SumOrder,
    out: &mut [f32],
) {
    let (_, n_rows) = super::rows_dot_shape(rows.len(), stride, xs.len(), n, out.len());
    if n_rows == 0 {
        return;
    }
    for (x, o) in xs.chunks_exact(n).zip(out.chunks_exact_mut(n_rows)) {
        for (r, o) in o.iter_mut().enumerate() {
            // SAFETY: NEON is our own contract.
            *o = unsafe { dot_f16_ordered(&rows[r * stride..][..n], x, order) };
        }
    }
}

/// 2⁶⁴ and 2⁻¹⁰⁰: the second factors of [`expf_ggml_4`]'s two-step scaling.
const EXP_2P64: f32 = f32::from_bits((127 + 64) << 23);
const EXP_2M100: f32 = f32::from_bits((127 - 100) << 23);

/// e^x in 4 lanes, lane for lane [`scalar::expf_ggml`](super::scalar::expf_ggml) (llama.cpp's
/// AVX-512 `ggml_v_expf`): x = n·ln 2 + b with n an integer (rounded by the shifter), a
/// degree-5 polynomial `j ≈ e^b`, then `j · 2ⁿ` rounded once (`vscalefps`; not the `k + k·j`
/// of ggml's NEON variant). For |n| <= 126, 2ⁿ is a normal float and one multiply rounds
/// once; otherwise `(j · 2^(n-s)) · 2^s` with s = 64 (n > 0) or -100, whose first product is
/// exact; |n| > 192 gives 0 or ∞.
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn expf_ggml_4(x: float32x4_t) -> float32x4_t {
    // SAFETY: register-only intrinsics; NEON is the caller's contract.
    unsafe {
        let one = vdupq_n_f32(1.0);
        let shift = vdupq_n_f32(EXP_SHIFT);
        let z = vfmaq_f32(shift, x, vdupq_n_f32(EXP_INV_LN2));
        let n = vsubq_f32(z, shift);
        let b = vfmsq_f32(
            vfmsq_f32(x, n, vdupq_n_f32(EXP_LN2_HI)),
            n,
            vdupq_n_f32(EXP_LN2_LO),
        );
        let u = vmulq_f32(b, b);
        let [c0, c1, c2, c3, c4] = EXP_C.map(|c| vdupq_n_f32(c));
        let j = vfmaq_f32(
            vfmaq_f32(one, c4, b),
            vfmaq_f32(vfmaq_f32(c3, c2, b), vfmaq_f32(c1, c0, b), u),
            u,
        );
        // n's integer sits in z's low mantissa bits: shifted into the exponent field it is
        // n·2²³ (mod 2³²), and adding a biased exponent's bits makes a power of two.
        let e = vshlq_n_u32::<23>(vreinterpretq_u32_f32(z));
        let near = vmulq_f32(
            j,
            vreinterpretq_f32_u32(vaddq_u32(e, vreinterpretq_u32_f32(one))),
        );
        let big = vcagtq_f32(n, vdupq_n_f32(126.0));
        if vmaxvq_u32(big) == 0 {
            return near;
        }
        let pos = vcgtzq_f32(n);
        let bias = vbslq_u32(
            pos,
            vdupq_n_u32((127 - 64) << 23),
            vdupq_n_u32((127 + 100) << 23),
        );
        let s = vbslq_f32(pos, vdupq_n_f32(EXP_2P64), vdupq_n_f32(EXP_2M100));
        let far = vmulq_f32(vmulq_f32(j, vreinterpretq_f32_u32(vaddq_u32(e, bias))), s);
        let limit = vbslq_f32(pos, vdupq_n_f32(f32::INFINITY), vdupq_n_f32(0.0));
        let far = vbslq_f32(vcagtq_f32(n, vdupq_n_f32(192.0)), limit, far);
        vbslq_f32(big, far, near)
    }
}

/// `x[i] = e^(x[i] - max)` with [`expf_ggml_4`], returning Σ x[i] (twin:
/// [`scalar::vec_soft_max_f32`](super::scalar::vec_soft_max_f32), bit for bit): each 16
/// values summed as [`hsum16`] into an f64 total, a last partial 16 padded with zeros.
///
/// # Safety
/// NEON must be available.
#[target_feature(enable = "neon")]
pub(super) unsafe fn vec_soft_max_f32(x: &mut [f32], max: f32) -> f64 {
    let n = x.len();
    let n16 = n - n % 16;
    let p = x.as_mut_ptr();
    // SAFETY: 16 values are loaded and stored at `i` only while `i + 16 <= n`; the tile is ours.
    unsafe {
        let m = vdupq_n_f32(max);
        let mut sum = 0.0f64;
        let mut i = 0;
        while i < n16 {
            let mut v = [m; 4];
            for (k, v) in v.iter_mut().enumerate() {
                *v = expf_ggml_4(vsubq_f32(vld1q_f32(p.add(i + 4 * k)), m));
                vst1q_f32(p.add(i + 4 * k), *v);
            }
            sum += f64::from(hsum16(v));
            i += 16;
        }
        if n16 < n {
            let mut tile = [0.0f32; 16];
            tile[..n - n16].copy_from_slice(&x[n16..]);
            let t = tile.as_mut_ptr();
            for k in 0..4 {
                vst1q_f32(
                    t.add(4 * k),
                    expf_ggml_4(vsubq_f32(vld1q_f32(t.add(4 * k)), m)),
                );
            }
            x[n16..].copy_from_slice(&tile[..n - n16]);
            tile[n - n16..].fill(0.0);
            let t = tile.as_ptr();
            let v = [0, 1, 2, 3].map(|k| vld1q_f32(t.add(4 * k)));
            sum += f64::from(hsum16(v));
        }
        sum
    }
}

/// `gate[i] = silu(gate[i]) · up[i]`, `x / (1 + e^-x)` with [`expf_ggml_4`] over whole 16s
/// and [`ops::silu`](crate::ops::silu) (libm) for the rest (twin:
/// [`scalar::vec_swiglu_f32`](super::scalar::vec_swiglu_f32), bit for bit). Runs over
/// `min(gate.len(), up.len())` values.
///
/// # Safety
/// NEON must be available.
#[target_feature(enable = "neon")]
pub(super) unsafe fn vec_swiglu_f32(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let whole = n - n % 16;
    let (g, u) = (gate.as_mut_ptr(), up.as_ptr());
    // SAFETY: 4 values are loaded and stored at `i` only while `i + 4 <= whole <= n`.
    unsafe {
        let one = vdupq_n_f32(1.0);
        let mut i = 0;
        while i < whole {
            let x = vld1q_f32(g.add(i));
            let e = expf_ggml_4(vnegq_f32(x));
            let v = vmulq_f32(vdivq_f32(x, vaddq_f32(one, e)), vld1q_f32(u.add(i)));
            vst1q_f32(g.add(i), v);
            i += 4;
        }
    }
    for (g, u) in gate[whole..n].iter_mut().zip(&up[whole..n]) {
        *g = crate::ops::silu(*g) * u;
    }
}

/// Σ x·y of bf16 weights and f32 activations (twin:
/// [`scalar::vec_dot_bf16_f32`](super::scalar::vec_dot_bf16_f32)); bf16 → f32 is a 16-bit
/// widening shift.
///
/// # Safety
/// NEON must be available.
#[target_feature(enable = "neon")]
pub(super) unsafe fn vec_dot_bf16_f32(x: &[bf16], y: &[f32]) -> f32 {
    let (xp, yp) = (x.as_ptr().cast::<u16>(), y.as_ptr());
    // SAFETY: as in `vec_dot_f32`: 4 bf16 (8 bytes; `bf16` is a transparent u16) and 4 f32 are
    // loaded only while `i + 4 <= n`.
    unsafe {
        float_dot!(
            x.len().min(y.len()),
            |i| (
                vreinterpretq_f32_u32(vshll_n_u16::<16>(vld1_u16(xp.add(i)))),
                vld1q_f32(yp.add(i))
            ),
            |j| x[j].to_f32() * y[j]
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Activation quantizers

/// `amax = max |x|` of one block of 32 floats, or `None` if it holds a NaN (`fmax` returns NaN
/// if either input is, so a NaN anywhere shows in the result). A max is exact in any order.
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn block_amax(xb: &[f32]) -> Option<f32> {
    debug_assert_eq!(xb.len(), QK8_0);
    // SAFETY: `xb` holds 32 floats (the callers pass `chunks_exact(32)` items); 8 loads of 4.
    let amax = unsafe {
        let p = xb.as_ptr();
        let mut m = vabsq_f32(vld1q_f32(p));
        for k in 1..8 {
            m = vmaxq_f32(m, vabsq_f32(vld1q_f32(p.add(4 * k))));
        }
        vmaxvq_f32(m)
    };
    (!amax.is_nan()).then_some(amax)
}

/// The scales of up to [`GROUP`] blocks from their `amax`: `d = amax / 127` and
/// `id = 127 / amax` (0 where `amax == 0`), lane by lane the scalar operations.
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn group_scales(amax: &[f32; GROUP]) -> ([f32; GROUP], [f32; GROUP]) {
    let (mut d, mut id) = ([0.0f32; GROUP], [0.0f32; GROUP]);
    // SAFETY: the loads and stores touch the three arrays' own 8 floats, 4 at a time.
    unsafe {
        for k in 0..GROUP / 4 {
            let av = vld1q_f32(amax.as_ptr().add(4 * k));
            let dv = vdivq_f32(av, vdupq_n_f32(127.0));
            let zero = vceqzq_f32(av);
            let inv = vdivq_f32(vdupq_n_f32(127.0), av);
            let idv = vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(inv), zero));
            vst1q_f32(d.as_mut_ptr().add(4 * k), dv);
            vst1q_f32(id.as_mut_ptr().add(4 * k), idv);
        }
    }
    (d, id)
}

/// The 32 quants of one block, as two vectors: `fcvtns` rounds half to even (the caller passes
/// finite scales only, so every product is within an ulp of [-127, 127]) and `xtn` keeps the
/// low byte.
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn quantize_block_q8(xb: &[f32], id: f32) -> (int8x16_t, int8x16_t) {
    debug_assert_eq!(xb.len(), QK8_0);
    // SAFETY: `xb` holds 32 floats (8 loads of 4); the rest is register arithmetic.
    unsafe {
        let p = xb.as_ptr();
        let mut q16 = [vdupq_n_s16(0); 4];
        for (k, q) in q16.iter_mut().enumerate() {
            let a = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(p.add(8 * k)), id));
            let b = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(p.add(8 * k + 4)), id));
            *q = vcombine_s16(vmovn_s32(a), vmovn_s32(b));
        }
        (
            vcombine_s8(vmovn_s16(q16[0]), vmovn_s16(q16[1])),
            vcombine_s8(vmovn_s16(q16[2]), vmovn_s16(q16[3])),
        )
    }
}

/// [`quantize_act_row_q8_0`](crate::quant::quantize_act_row_q8_0), byte for byte, 4 lanes at a time.
///
/// # Safety
/// NEON must be available.
///
/// # Panics
/// If `x.len() != y.len() * 32`, as the scalar function.
#[target_feature(enable = "neon")]
pub(super) unsafe fn quantize_row_q8_0_neon(x: &[f32], y: &mut [BlockQ8_0]) {
    // SAFETY: the helpers need our features; the stores write `yb.qs`'s own 32 bytes.
    unsafe {
        quantize_q8_groups!(x, y, quantize_act_row_q8_0, |yb, d, q| {
            yb.d = fp32_to_fp16(d);
            vst1q_s8(yb.qs.as_mut_ptr(), q.0);
            vst1q_s8(yb.qs.as_mut_ptr().add(16), q.1);
        })
    }
}

/// [`quantize_act_row_q8_1`](crate::quant::quantize_act_row_q8_1), byte for byte, 4 lanes at a time.
///
/// # Safety
/// NEON must be available.
///
/// # Panics
/// If `x.len() != y.len() * 32`, as the scalar function.
#[target_feature(enable = "neon")]
pub(super) unsafe fn quantize_row_q8_1_neon(x: &[f32], y: &mut [BlockQ8_1]) {
    // SAFETY: the helpers need our features; the stores write `yb.qs`'s own 32 bytes.
    unsafe {
        quantize_q8_groups!(x, y, quantize_act_row_q8_1, |yb, d, q| {
            yb.d = fp32_to_fp16(d);
            vst1q_s8(yb.qs.as_mut_ptr(), q.0);
            vst1q_s8(yb.qs.as_mut_ptr().add(16), q.1);
            // the sum of the stored quants, as the scalar code takes it
            let sum = i32::from(vaddlvq_s8(q.0)) + i32::from(vaddlvq_s8(q.1));
            yb.s = fp32_to_fp16(sum as f32 * d);
        })
    }
}
