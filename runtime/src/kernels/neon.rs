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
//! Int paths: nibbles unpacked with `and`/`ushr`, then per block either two `sdot` (16 bytes
//! each into 4 i32 lanes) or, without dot product, widening multiplies `smull`/`smlal` into i16
//! lanes and a pairwise widening add into i32. The i16 lanes hold at most two Q8 products
//! (2·128·127 = 32512, exact while the activation avoids -128, as the quantizers guarantee) or
//! four Q4 products (4·15·128 = 7680). Each block's sum becomes f32 lanes scaled by `dx·dy`
//! with an FMA; two accumulators hide its latency.

// Rust 1.85 (our MSRV) requires `unsafe` around every `core::arch` intrinsic; from 1.87 the
// pointer-free ones are safe inside `#[target_feature]` functions, where the blocks that hold
// only those then look unused.
#![allow(unused_unsafe)]

use std::arch::aarch64::*;
use std::arch::asm;

use half::{bf16, f16};

use super::{quantize_q8_groups, row_dot2_entry, row_dot_entry, rows_dot_entry, GROUP};
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
rows_dot_entry!(rows_dot_f16, vec_dots_f16, f16);
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
unsafe fn cvt_f16x4(h: uint16x4_t) -> float32x4_t {
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

/// For a Q4_1 block and its Q8_1 block: `[xd·yd, xm·ys]`.
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn scale_products_q4_1(x: &BlockQ4_1, y: &BlockQ8_1) -> float32x2_t {
    let xb = u64::from(x.d.to_bits()) | (u64::from(x.m.to_bits()) << 16);
    let yb = u64::from(y.d.to_bits()) | (u64::from(y.s.to_bits()) << 16);
    // SAFETY: register-only operations; NEON is the caller's contract.
    unsafe {
        let v = cvt_f16x4(vcreate_u16(xb | (yb << 32))); // [xd, xm, yd, ys]
        vmul_f32(vget_low_f32(v), vget_high_f32(v))
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

/// Σ a·b per 4 i32 lanes over two pairs of 16 small signed bytes, without dot product: whose
/// four products per i16 lane fit (`|a| <= 63`, `|b| <= 128`; Q4 and Q5 levels).
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn dot_small(a: (int8x16_t, int8x16_t), b: (int8x16_t, int8x16_t)) -> int32x4_t {
    // SAFETY: register-only operations; NEON is the caller's contract.
    unsafe {
        let p = vmull_s8(vget_low_s8(a.0), vget_low_s8(b.0));
        let p = vmlal_high_s8(p, a.0, b.0);
        let p = vmlal_s8(p, vget_low_s8(a.1), vget_low_s8(b.1));
        let p = vmlal_high_s8(p, a.1, b.1);
        vpaddlq_s16(p)
    }
}

/// Σ a·b per 4 i32 lanes over two pairs of 16 signed bytes, without dot product: two products
/// per i16 lane (exact while `b` avoids -128).
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn dot_i8(a: (int8x16_t, int8x16_t), b: (int8x16_t, int8x16_t)) -> int32x4_t {
    // SAFETY: register-only operations; NEON is the caller's contract.
    unsafe {
        let p0 = vmlal_high_s8(vmull_s8(vget_low_s8(a.0), vget_low_s8(b.0)), a.0, b.0);
        let p1 = vmlal_high_s8(vmull_s8(vget_low_s8(a.1), vget_low_s8(b.1)), a.1, b.1);
        vpadalq_s16(vpaddlq_s16(p0), p1)
    }
}

/// Σ a·b per 4 i32 lanes over two pairs of 16 signed bytes, with dot product.
///
/// # Safety
/// NEON and the dot-product extension must be available.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn dot_i8_dotprod(a: (int8x16_t, int8x16_t), b: (int8x16_t, int8x16_t)) -> int32x4_t {
    // SAFETY: register-only operations; the features are the caller's contract.
    unsafe { sdot(sdot(vdupq_n_s32(0), a.0, b.0), a.1, b.1) }
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
        let h = vreinterpretq_u8_u32(vdupq_n_u32(u32::from_le_bytes(qh)));
        // lanes 0..8 take byte 0 (2), lanes 8..16 byte 1 (3); each lane then tests bit lane % 8
        let spread_lo = vreinterpretq_u8_u64(vcombine_u64(
            vcreate_u64(0),
            vcreate_u64(0x0101_0101_0101_0101),
        ));
        let spread_hi = vaddq_u8(spread_lo, vdupq_n_u8(2));
        let lane_bit = vreinterpretq_u8_u64(vdupq_n_u64(0x8040_2010_0804_0201));
        let sixteen = vdupq_n_u8(16);
        let clear =
            |spread: uint8x16_t| vbicq_u8(sixteen, vtstq_u8(vqtbl1q_u8(h, spread), lane_bit));
        (
            vreinterpretq_s8_u8(vsubq_u8(lo, clear(spread_lo))),
            vreinterpretq_s8_u8(vsubq_u8(hi, clear(spread_hi))),
        )
    }
}

/// Runs `$block(&x[i], &y[i], acc)` over the first `min(x.len(), y.len())` block pairs with two
/// accumulators (even and odd blocks) to hide the latency of the per-block float FMA; returns
/// both for the caller to combine. `$block` must be a function with the caller's
/// `#[target_feature]`s (a closure would not inherit them and its intrinsics would not inline).
macro_rules! dot_blocks {
    ($x:expr, $y:expr, $zero:expr, $block:path) => {{
        let n = $x.len().min($y.len());
        let (x, y) = (&$x[..n], &$y[..n]);
        let (mut a0, mut a1) = ($zero, $zero);
        let (xp, yp) = (x.chunks_exact(2), y.chunks_exact(2));
        let (xr, yr) = (xp.remainder(), yp.remainder());
        for (xs, ys) in xp.zip(yp) {
            a0 = $block(&xs[0], &ys[0], a0);
            a1 = $block(&xs[1], &ys[1], a1);
        }
        if let (Some(xb), Some(yb)) = (xr.first(), yr.first()) {
            a0 = $block(xb, yb, a0);
        }
        (a0, a1)
    }};
}

/// [`dot_blocks!`] for two weight rows `$x0`, `$x1` against one activation row: each row's
/// blocks go through exactly the accumulators and order `dot_blocks!` gives them (so the
/// results equal two single-row calls bit for bit), interleaved so that the activation block
/// is loaded once for both.
macro_rules! dot_blocks2 {
    ($x0:expr, $x1:expr, $y:expr, $zero:expr, $block:path) => {{
        let n = $x0.len().min($x1.len()).min($y.len());
        let (x0, x1, y) = (&$x0[..n], &$x1[..n], &$y[..n]);
        let (mut a0, mut a1, mut b0, mut b1) = ($zero, $zero, $zero, $zero);
        let pairs = n / 2;
        for i in 0..pairs {
            let (j, k) = (2 * i, 2 * i + 1);
            a0 = $block(&x0[j], &y[j], a0);
            b0 = $block(&x1[j], &y[j], b0);
            a1 = $block(&x0[k], &y[k], a1);
            b1 = $block(&x1[k], &y[k], b1);
        }
        if n % 2 == 1 {
            a0 = $block(&x0[n - 1], &y[n - 1], a0);
            b0 = $block(&x1[n - 1], &y[n - 1], b0);
        }
        ((a0, a1), (b0, b1))
    }};
}

// ---------------------------------------------------------------------------------------------
// Int dots: one generic body per pair, instantiated with and without dot product

/// Defines the two row dots of one pair, `$plain` (NEON, its int dot is `$dot_plain`) and
/// `$dotprod` (NEON + dot product, [`dot_i8_dotprod`]), from one per-block body that calls the
/// int dot as `$dot` (bound by `use`, not a closure: closures do not inherit
/// `#[target_feature]`, so their intrinsics would not inline).
macro_rules! int_dot_pair {
    (
        $(#[$doc:meta])*
        $plain:ident / $dotprod:ident, $block_plain:ident / $block_dotprod:ident,
        $(@x2 $plain2:ident / $dotprod2:ident,)?
        $w:ty, $a:ty, $acc:ty, zero: $zero:expr, finish: $finish:path, plain: $dot_plain:ident,
        |$x:ident, $y:ident, $acc_in:ident, $dot:ident| $body:block
    ) => {
        /// One block pair's contribution, NEON only.
        ///
        /// # Safety
        /// NEON must be available.
        #[inline]
        #[target_feature(enable = "neon")]
        unsafe fn $block_plain($x: &$w, $y: &$a, $acc_in: $acc) -> $acc {
            use self::$dot_plain as $dot;
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
            use self::dot_i8_dotprod as $dot;
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
            unsafe {
                let (a0, a1) = dot_blocks!(x, y, $zero, $block_plain);
                $finish(a0, a1)
            }
        }

        $(#[$doc])*
        ///
        /// # Safety
        /// NEON and the dot-product extension must be available.
        #[target_feature(enable = "neon,dotprod")]
        pub(super) unsafe fn $dotprod(x: &[$w], y: &[$a]) -> f32 {
            // SAFETY: the per-block helper needs exactly our features.
            unsafe {
                let (a0, a1) = dot_blocks!(x, y, $zero, $block_dotprod);
                $finish(a0, a1)
            }
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
                let ((a0, a1), (b0, b1)) = dot_blocks2!(x0, x1, y, $zero, $block_plain);
                [$finish(a0, a1), $finish(b0, b1)]
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
                let ((a0, a1), (b0, b1)) = dot_blocks2!(x0, x1, y, $zero, $block_dotprod);
                [$finish(a0, a1), $finish(b0, b1)]
            }
        }
        )?
    };
}

/// The sum of both accumulators' lanes.
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn finish_f32x4(a0: float32x4_t, a1: float32x4_t) -> f32 {
    // SAFETY: register-only operations; NEON is the caller's contract.
    unsafe { vaddvq_f32(vaddq_f32(a0, a1)) }
}

/// The sum of both accumulators' scaled int sums, plus their Σ m·s (lane 1 of the pair).
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn finish_q4_1(a0: (float32x4_t, float32x2_t), a1: (float32x4_t, float32x2_t)) -> f32 {
    // SAFETY: register-only operations; NEON is the caller's contract.
    unsafe { vaddvq_f32(vaddq_f32(a0.0, a1.0)) + vget_lane_f32::<1>(vadd_f32(a0.1, a1.1)) }
}

int_dot_pair! {
    /// Σ (q4 - 8) · q8 per block, times both scales (twin:
    /// [`scalar::vec_dot_q4_0_q8_0`](super::scalar::vec_dot_q4_0_q8_0)).
    vec_dot_q4_0_q8_0 / vec_dot_q4_0_q8_0_dotprod, block_q4_0_q8_0 / block_q4_0_q8_0_dotprod,
    @x2 vec_dot2_q4_0_q8_0 / vec_dot2_q4_0_q8_0_dotprod,
    BlockQ4_0, BlockQ8_0, float32x4_t, zero: vdupq_n_f32(0.0), finish: finish_f32x4,
    plain: dot_small,
    |x, y, acc, dot| {
        let p = dot(q4_0_values(&x.qs), load_q8(&y.qs));
        vfmaq_n_f32(acc, vcvtq_f32_s32(p), scale_product(x.d, y.d))
    }
}

int_dot_pair! {
    /// Σ q4 · q8 per block times both scales, plus `m · s` (twin:
    /// [`scalar::vec_dot_q4_1_q8_1`](super::scalar::vec_dot_q4_1_q8_1)).
    vec_dot_q4_1_q8_1 / vec_dot_q4_1_q8_1_dotprod, block_q4_1_q8_1 / block_q4_1_q8_1_dotprod,
    @x2 vec_dot2_q4_1_q8_1 / vec_dot2_q4_1_q8_1_dotprod,
    BlockQ4_1, BlockQ8_1, (float32x4_t, float32x2_t),
    zero: (vdupq_n_f32(0.0), vdup_n_f32(0.0)), finish: finish_q4_1, plain: dot_small,
    |x, y, acc, dot| {
        let dm = scale_products_q4_1(x, y);
        let p = dot(q4_1_values(&x.qs), load_q8(&y.qs));
        (vfmaq_lane_f32::<0>(acc.0, vcvtq_f32_s32(p), dm), vadd_f32(acc.1, dm))
    }
}

int_dot_pair! {
    /// Σ q8 · q8 per block, times both scales (twin:
    /// [`scalar::vec_dot_q8_0_q8_0`](super::scalar::vec_dot_q8_0_q8_0)).
    vec_dot_q8_0_q8_0 / vec_dot_q8_0_q8_0_dotprod, block_q8_0_q8_0 / block_q8_0_q8_0_dotprod,
    BlockQ8_0, BlockQ8_0, float32x4_t, zero: vdupq_n_f32(0.0), finish: finish_f32x4,
    plain: dot_i8,
    |x, y, acc, dot| {
        let p = dot(load_q8(&x.qs), load_q8(&y.qs));
        vfmaq_n_f32(acc, vcvtq_f32_s32(p), scale_product(x.d, y.d))
    }
}

int_dot_pair! {
    /// Σ (q5 - 16) · q8 per block, times both scales (twin:
    /// [`scalar::vec_dot_q5_0_q8_0`](super::scalar::vec_dot_q5_0_q8_0)): SmolLM2's and
    /// Gemma-3's Q4_K_M files are mostly Q5_0 (their rows are not multiples of 256).
    vec_dot_q5_0_q8_0 / vec_dot_q5_0_q8_0_dotprod, block_q5_0_q8_0 / block_q5_0_q8_0_dotprod,
    BlockQ5_0, BlockQ8_0, float32x4_t, zero: vdupq_n_f32(0.0), finish: finish_f32x4,
    plain: dot_small,
    |x, y, acc, dot| {
        let p = dot(q5_0_values(&x.qs, x.qh), load_q8(&y.qs));
        vfmaq_n_f32(acc, vcvtq_f32_s32(p), scale_product(x.d, y.d))
    }
}

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
/// converted at once and their products taken by lane (`fmla` by element); each row's blocks go
/// to the even/odd accumulators in order, as in [`dot_blocks!`], so each result equals the
/// one-row dot's (`$one`) bit for bit.
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
                acc: (float32x4_t, float32x4_t),
                x0: &$w,
                x1: &$w,
                y: &BlockQ8_0,
                d0: float32x4_t,
                d1: float32x4_t,
            ) -> (float32x4_t, float32x4_t) {
                // SAFETY: the helpers read the blocks' own arrays; the features are the
                // caller's contract.
                unsafe {
                    let yq = load_q8(&y.qs);
                    let p0 = vcvtq_f32_s32($dot(
                        {
                            let $x = x0;
                            $values
                        },
                        yq,
                    ));
                    let p1 = vcvtq_f32_s32($dot(
                        {
                            let $x = x1;
                            $values
                        },
                        yq,
                    ));
                    (
                        vfmaq_laneq_f32::<L>(acc.0, p0, d0),
                        vfmaq_laneq_f32::<L>(acc.1, p1, d1),
                    )
                }
            }
            // SAFETY: the helpers read the blocks' own arrays; the features are the caller's
            // contract.
            unsafe {
                let n = x0.len().min(x1.len()).min(y.len());
                let (x0, x1, y) = (&x0[..n], &x1[..n], &y[..n]);
                let zero = vdupq_n_f32(0.0);
                let (mut a, mut b) = ([zero; 2], [zero; 2]);
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
                    (a[0], b[0]) = step::<0>((a[0], b[0]), &u[0], &v[0], &w[0], d0, d1);
                    (a[1], b[1]) = step::<1>((a[1], b[1]), &u[1], &v[1], &w[1], d0, d1);
                    (a[0], b[0]) = step::<2>((a[0], b[0]), &u[2], &v[2], &w[2], d0, d1);
                    (a[1], b[1]) = step::<3>((a[1], b[1]), &u[3], &v[3], &w[3], d0, d1);
                }
                for i in done..n {
                    let yq = load_q8(&y[i].qs);
                    let p0 = vcvtq_f32_s32($dot(
                        {
                            let $x = &x0[i];
                            $values
                        },
                        yq,
                    ));
                    let p1 = vcvtq_f32_s32($dot(
                        {
                            let $x = &x1[i];
                            $values
                        },
                        yq,
                    ));
                    a[i % 2] = vfmaq_n_f32(a[i % 2], p0, scale_product(x0[i].d, y[i].d));
                    b[i % 2] = vfmaq_n_f32(b[i % 2], p1, scale_product(x1[i].d, y[i].d));
                }
                [finish_f32x4(a[0], a[1]), finish_f32x4(b[0], b[1])]
            }
        }
    };
}

scaled_dot2!(
    vec_dot2_q8_0_q8_0,
    vec_dot_q8_0_q8_0,
    "neon",
    dot_i8,
    BlockQ8_0,
    |x| load_q8(&x.qs)
);
scaled_dot2!(
    vec_dot2_q8_0_q8_0_dotprod,
    vec_dot_q8_0_q8_0_dotprod,
    "neon,dotprod",
    dot_i8_dotprod,
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
        let ((a0, a1), (b0, b1)) = dot_blocks2!(x0, x1, y, vdupq_n_f32(0.0), block_q5_0_q8_0);
        [finish_f32x4(a0, a1), finish_f32x4(b0, b1)]
    }
}
scaled_dot2!(
    vec_dot2_q5_0_q8_0_dotprod,
    vec_dot_q5_0_q8_0_dotprod,
    "neon,dotprod",
    dot_i8_dotprod,
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

float_rows_dots!(rows_step_f16, rows_group_f16, vec_dots_f16, f16, |p| {
    cvt_f16x4(vld1_u16(p.cast::<u16>()))
});
float_rows_dots!(rows_step_f32, rows_group_f32, vec_dots_f32, f32, |p| {
    vld1q_f32(p)
});

/// The constants of [`expf_4`] (and of ggml's `ggml_v_expf`), as bit patterns of the hex
/// floats they are published as: the rounding shifter 0x1.8p23, 1/ln 2, ln 2 in two parts, and
/// the polynomial's coefficients of b⁵ … b¹.
const EXP_SHIFT: f32 = f32::from_bits(0x4b40_0000);
const EXP_INV_LN2: f32 = f32::from_bits(0x3fb8_aa3b);
const EXP_LN2_HI: f32 = f32::from_bits(0x3f31_7200);
const EXP_LN2_LO: f32 = f32::from_bits(0x35bf_be8e);
const EXP_C: [f32; 5] = [
    f32::from_bits(0x3c07_2010),
    f32::from_bits(0x3d2b_9f17),
    f32::from_bits(0x3e2a_af33),
    f32::from_bits(0x3eff_fedb),
    f32::from_bits(0x3f7f_fff6),
];

/// e^x in 4 lanes, as ggml's NEON `ggml_v_expf` (Arm's optimized-routines `expf`): x = n·ln 2 + b
/// with n an integer (rounded by the shifter) and |b| ≤ ln 2 / 2, e^b - 1 by a degree-5
/// polynomial, 2ⁿ built in the exponent bits. Lanes with |n| > 126 take a path that scales in
/// two steps, so results overflow to ∞ above ~88.7 and flush to 0 below ~-103.9, as `expf`
/// does. Within 1.5 ulp of e^x.
///
/// # Safety
/// NEON must be available.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn expf_4(x: float32x4_t) -> float32x4_t {
    // SAFETY: register-only intrinsics; NEON is the caller's contract.
    unsafe {
        let shift = vdupq_n_f32(EXP_SHIFT);
        let z = vfmaq_f32(shift, x, vdupq_n_f32(EXP_INV_LN2));
        let n = vsubq_f32(z, shift);
        let b = vfmsq_f32(
            vfmsq_f32(x, n, vdupq_n_f32(EXP_LN2_HI)),
            n,
            vdupq_n_f32(EXP_LN2_LO),
        );
        // 2ⁿ: n's integer sits in z's low mantissa bits; shifted into the exponent field and
        // added to 1.0's bits.
        let e = vshlq_n_u32::<23>(vreinterpretq_u32_f32(z));
        let k = vreinterpretq_f32_u32(vaddq_u32(e, vreinterpretq_u32_f32(vdupq_n_f32(1.0))));
        let big = vcagtq_f32(n, vdupq_n_f32(126.0));
        let u = vmulq_f32(b, b);
        let [c0, c1, c2, c3, c4] = [
            vdupq_n_f32(EXP_C[0]),
            vdupq_n_f32(EXP_C[1]),
            vdupq_n_f32(EXP_C[2]),
            vdupq_n_f32(EXP_C[3]),
            vdupq_n_f32(EXP_C[4]),
        ];
        let j = vfmaq_f32(
            vmulq_f32(c4, b),
            vfmaq_f32(vfmaq_f32(c3, c2, b), vfmaq_f32(c1, c0, b), u),
            u,
        );
        let near = vfmaq_f32(k, j, k);
        if vmaxvq_u32(big) == 0 {
            return near;
        }
        // |n| > 126: 2ⁿ = s1·s2 with both factors representable; |n| > 192: s1² alone
        // (∞ or 0).
        let g = vandq_u32(vclezq_f32(n), vdupq_n_u32(0x8200_0000));
        let s1 = vreinterpretq_f32_u32(vaddq_u32(g, vdupq_n_u32(0x7f00_0000)));
        let s2 = vreinterpretq_f32_u32(vsubq_u32(e, g));
        vbslq_f32(
            vcagtq_f32(n, vdupq_n_f32(192.0)),
            vmulq_f32(s1, s1),
            vbslq_f32(big, vmulq_f32(vfmaq_f32(s2, s2, j), s1), near),
        )
    }
}

/// `x[i] = e^(x[i] - max)` with [`expf_4`], returning Σ x[i] (twin:
/// [`scalar::vec_soft_max_f32`](super::scalar::vec_soft_max_f32)). The sum runs in f64 lanes;
/// the last `len % 4` values go through a stack tile.
///
/// # Safety
/// NEON must be available.
#[target_feature(enable = "neon")]
pub(super) unsafe fn vec_soft_max_f32(x: &mut [f32], max: f32) -> f64 {
    let n = x.len();
    let n4 = n - n % 4;
    let p = x.as_mut_ptr();
    // SAFETY: 4 values are loaded and stored at `i` only while `i + 4 <= n`.
    unsafe {
        let m = vdupq_n_f32(max);
        let (mut lo, mut hi) = (vdupq_n_f64(0.0), vdupq_n_f64(0.0));
        let mut i = 0;
        while i < n4 {
            let v = expf_4(vsubq_f32(vld1q_f32(p.add(i)), m));
            vst1q_f32(p.add(i), v);
            lo = vaddq_f64(lo, vcvt_f64_f32(vget_low_f32(v)));
            hi = vaddq_f64(hi, vcvt_high_f64_f32(v));
            i += 4;
        }
        let mut sum = vaddvq_f64(vaddq_f64(lo, hi));
        if n4 < n {
            let mut tile = [0.0f32; 4];
            tile[..n - n4].copy_from_slice(&x[n4..]);
            let v = expf_4(vsubq_f32(vld1q_f32(tile.as_ptr()), m));
            vst1q_f32(tile.as_mut_ptr(), v);
            for (d, e) in x[n4..].iter_mut().zip(tile) {
                *d = e;
                sum += e as f64;
            }
        }
        sum
    }
}

/// `gate[i] = silu(gate[i]) · up[i]` with ggml's `ggml_v_silu` arithmetic, `x / (1 + e^-x)`
/// with [`expf_4`] (twin: [`ops::swiglu`](crate::ops::swiglu), libm's `expf`); the last
/// `len % 4` values go through a stack tile. Runs over `min(gate.len(), up.len())` values.
///
/// # Safety
/// NEON must be available.
#[target_feature(enable = "neon")]
pub(super) unsafe fn vec_swiglu_f32(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let n4 = n - n % 4;
    let (g, u) = (gate.as_mut_ptr(), up.as_ptr());
    // SAFETY: 4 values are loaded and stored at `i` only while `i + 4 <= n`; the tile is ours.
    unsafe {
        let one = vdupq_n_f32(1.0);
        let step = |x: float32x4_t, y: float32x4_t| {
            let e = expf_4(vnegq_f32(x));
            vmulq_f32(vdivq_f32(x, vaddq_f32(one, e)), y)
        };
        let mut i = 0;
        while i < n4 {
            let v = step(vld1q_f32(g.add(i)), vld1q_f32(u.add(i)));
            vst1q_f32(g.add(i), v);
            i += 4;
        }
        if n4 < n {
            let (mut tg, mut tu) = ([0.0f32; 4], [0.0f32; 4]);
            tg[..n - n4].copy_from_slice(&gate[n4..n]);
            tu[..n - n4].copy_from_slice(&up[n4..n]);
            let v = step(vld1q_f32(tg.as_ptr()), vld1q_f32(tu.as_ptr()));
            vst1q_f32(tg.as_mut_ptr(), v);
            gate[n4..n].copy_from_slice(&tg[..n - n4]);
        }
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
