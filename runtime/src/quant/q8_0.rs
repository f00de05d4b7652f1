//! Q8_0: 32 values as an f16 scale and 32 signed bytes, `x = d * q` (ggml's
//! `quantize_row_q8_0_ref` / `dequantize_row_q8_0`). Also the activation format the Q4_0 and
//! Q8_0 dot products pair with, so [`quantize_row_q8_0`] runs on every token.

use super::blocks::{BlockQ8_0, QK8_0};
use super::f16::{fp16_to_fp32, fp32_to_fp16};
use super::{assert_row, c_f32_to_i8};

/// Quantizes `x` into `y`, bit-exact with ggml's `quantize_row_q8_0_ref`:
/// `d = amax / 127`, `q = roundf(x / d)` (halves away from zero). Allocation-free and branch-light,
/// for the per-token activation path; note ggml's own SIMD activation quantizers differ from its
/// reference in the last bit on ties (they round half to even, with `127/amax`).
///
/// # Panics
/// If `x.len() != y.len() * QK8_0`.
pub fn quantize_row_q8_0(x: &[f32], y: &mut [BlockQ8_0]) {
    assert_row("quantize_row_q8_0", x.len(), y.len(), QK8_0);
    for (xb, yb) in x.chunks_exact(QK8_0).zip(y.iter_mut()) {
        let xb: &[f32; QK8_0] = xb.try_into().expect("chunks_exact yields QK8_0 values");
        yb.d = fp32_to_fp16(quantize_block_q8(xb, &mut yb.qs));
    }
}

/// Quantizes activations `x` into `y` as llama.cpp's x86 build does before its int dot
/// products (its AVX2 `quantize_row_q8_0`, which the reference outputs come from):
/// `d = amax / 127`, `q = x · (127 / amax)` rounded half to even. It differs from
/// [`quantize_row_q8_0`] (the weights' quantizer) only in the last bit of some quants, but the
/// model's logits amplify such bits: the activations must be quantized exactly this way to
/// match llama.cpp's numbers.
///
/// # Panics
/// If `x.len() != y.len() * QK8_0`.
pub fn quantize_act_row_q8_0(x: &[f32], y: &mut [BlockQ8_0]) {
    assert_row("quantize_act_row_q8_0", x.len(), y.len(), QK8_0);
    for (xb, yb) in x.chunks_exact(QK8_0).zip(y.iter_mut()) {
        let xb: &[f32; QK8_0] = xb.try_into().expect("chunks_exact yields QK8_0 values");
        yb.d = fp32_to_fp16(quantize_act_block_q8(xb, &mut yb.qs));
    }
}

/// The activation quants of one block (Q8_0 and Q8_1, see [`quantize_act_row_q8_0`]).
/// Returns the f32 `d`. A block whose `127 / amax` overflows (amax below ~2.3e-37) or that holds
/// an infinity gets C's conversion of the products, as the x86 code's `cvtps2dq` would not.
#[inline(always)]
pub(super) fn quantize_act_block_q8(xb: &[f32; 32], qs: &mut [i8; 32]) -> f32 {
    let amax = block_amax(xb);
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    if amax.is_finite() && id.is_finite() {
        // |x · id| <= 127 and an ulp: the magic-number rounding applies and fits in i8.
        for (q, &v) in qs.iter_mut().zip(xb) {
            *q = round_even_small(v * id) as i8;
        }
    } else {
        for (q, &v) in qs.iter_mut().zip(xb) {
            *q = c_f32_to_i8((v * id).round_ties_even());
        }
    }
    d
}

/// The largest magnitude of a block, as the largest of the sign-cleared bit patterns: for
/// non-NaN floats the order of those integers is the order of the values, and an integer max
/// reduces in SIMD registers where ggml's float `MAX` chain would not (a NaN gives a NaN).
#[inline(always)]
fn block_amax(xb: &[f32; 32]) -> f32 {
    f32::from_bits(
        xb.iter()
            .fold(0u32, |m, v| m.max(v.to_bits() & 0x7FFF_FFFF)),
    )
}

/// `s` rounded half to even (the FPU's mode), for |s| < 2^22: adding 1.5 * 2^23 leaves the
/// integer in the sum's low mantissa bits.
#[inline(always)]
fn round_even_small(s: f32) -> i32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    (s + MAGIC).to_bits() as i32 - MAGIC.to_bits() as i32
}

/// ggml's Q8 quants of one block (shared by Q8_0 and Q8_1): `d = amax / 127`,
/// `q = roundf(x * (1/d))` converted as C converts to `int8_t`. Returns the f32 `d`.
#[inline(always)]
pub(super) fn quantize_block_q8(xb: &[f32; 32], qs: &mut [i8; 32]) -> f32 {
    let amax = block_amax(xb);
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    if amax.is_finite() && id.is_finite() {
        // Every |x * id| is at most 127 and an ulp or two (d's reciprocal rounds, but with
        // d >= 2^-128 its relative error is below 2^-22): `roundf_small` applies and the result
        // fits in i8.
        for (q, &v) in qs.iter_mut().zip(xb) {
            *q = roundf_small(v * id) as i8;
        }
    } else {
        // `1/d` overflowed (amax below ~3.7e-37) or an input is infinite: products are
        // infinite or NaN and C's conversion is the target CPU's.
        for (q, &v) in qs.iter_mut().zip(xb) {
            *q = c_f32_to_i8((v * id).round());
        }
    }
    d
}

/// `roundf(s)` for |s| < 2^22, branch-free and without float-to-int conversions so the block
/// loop vectorizes even on baseline x86-64: [`round_even_small`]'s result, then the remainder,
/// exact, shows the ties, which move one step away from zero where even went toward it.
#[inline(always)]
fn roundf_small(s: f32) -> i32 {
    let even = round_even_small(s);
    let rem = s - even as f32;
    even + i32::from(rem == 0.5 && s > 0.0) - i32::from(rem == -0.5 && s < 0.0)
}

/// `y = d * q`.
///
/// # Panics
/// If `y.len() != x.len() * QK8_0`.
pub fn dequantize_row_q8_0(x: &[BlockQ8_0], y: &mut [f32]) {
    assert_row("dequantize_row_q8_0", y.len(), x.len(), QK8_0);
    for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK8_0)) {
        let d = fp16_to_fp32(xb.d);
        for (v, &q) in yb.iter_mut().zip(&xb.qs) {
            *v = q as f32 * d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;
    use proptest::prelude::*;

    fn round_trip(x: &[f32]) -> (Vec<BlockQ8_0>, Vec<f32>) {
        let mut q = vec![BlockQ8_0::default(); x.len() / QK8_0];
        quantize_row_q8_0(x, &mut q);
        let mut y = vec![0.0; x.len()];
        dequantize_row_q8_0(&q, &mut y);
        (q, y)
    }

    #[test]
    fn activation_quants_use_127_over_amax_and_round_half_to_even() {
        let mut x = [0.0f32; 32];
        x[0] = -127.0;
        x[1] = 0.5;
        x[2] = -0.5;
        x[3] = 1.5;
        x[4] = 2.5;
        x[5] = 126.49;
        x[6] = -3.5;
        let mut q = [BlockQ8_0::default()];
        quantize_act_row_q8_0(&x, &mut q);
        assert_eq!(q[0].d, f16::from_f32(1.0));
        assert_eq!(q[0].qs[..7], [-127, 0, 0, 2, 2, 126, -4]);
        let zeros = [0.0f32; 32];
        quantize_act_row_q8_0(&zeros, &mut q);
        assert_eq!((q[0].d, q[0].qs), (f16::from_f32(0.0), [0; 32]));
    }

    #[test]
    fn amax_maps_to_127_and_halves_round_away() {
        let mut x = [0.0f32; 32];
        x[0] = -127.0;
        x[1] = 0.5;
        x[2] = -0.5;
        x[3] = 1.5;
        x[4] = 2.5;
        x[5] = 126.49;
        let (q, y) = round_trip(&x);
        assert_eq!(q[0].d, f16::from_f32(1.0));
        assert_eq!(q[0].qs[..6], [-127, 1, -1, 2, 3, 126]);
        assert_eq!(y[0], -127.0);
    }

    #[test]
    fn roundf_small_matches_roundf() {
        let check = |v: f32| assert_eq!(roundf_small(v), v.round() as i32, "{v}");
        for k in -300..300 {
            let tie = k as f32 + 0.5;
            for delta in -2i32..=2 {
                check(f32::from_bits((tie.to_bits() as i32 + delta) as u32));
            }
            check(k as f32);
        }
        for v in [
            0.0,
            -0.0,
            0.49999997,
            -0.49999997,
            4194303.5,
            -4194303.5,
            1e-30,
            -1e-30,
        ] {
            check(v);
        }
        // a stride through every float of magnitude up to 2^9
        let mut bits = 0u32;
        while f32::from_bits(bits) < 512.0 {
            check(f32::from_bits(bits));
            check(-f32::from_bits(bits));
            bits += 251;
        }
    }

    #[test]
    fn zero_block() {
        let (q, y) = round_trip(&[0.0; 32]);
        assert_eq!(q[0].d.to_bits(), 0);
        assert!(q[0].qs.iter().all(|&v| v == 0));
        assert!(y.iter().all(|&v| v == 0.0));
    }

    proptest! {
        #[test]
        fn round_trip_error_within_half_step(
            x in prop::collection::vec(-1000.0f32..1000.0, 32 * 4),
        ) {
            let (q, y) = round_trip(&x);
            for (b, (xb, yb)) in q.iter().zip(x.chunks(32).zip(y.chunks(32))) {
                let d = b.d.to_f32();
                for (a, r) in xb.iter().zip(yb) {
                    // half a step plus the f16 rounding of d over up to 127 steps
                    let tol = 0.5 * d + 127.0 * d / 2048.0 + 1e-6;
                    prop_assert!((a - r).abs() <= tol, "{} vs {} (d = {})", a, r, d);
                }
            }
        }
    }
}
