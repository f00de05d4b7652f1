//! Q4_1: 32 values as an f16 scale, an f16 minimum and 32 nibbles, `x = d * q + m` (ggml's
//! `quantize_row_q4_1_ref` / `dequantize_row_q4_1`).

use super::blocks::{BlockQ4_1, QK4_1};
use super::f16::{fp16_to_fp32, fp32_to_fp16};
use super::{assert_row, block_min_max, c_f32_to_i8};

/// Quantizes `x` into `y` exactly as ggml's reference: `m = min`, `d = (max - min) / 15`,
/// `q = min(15, (int8)((x - min) / d + 0.5))`.
///
/// # Panics
/// If `x.len() != y.len() * QK4_1`.
pub fn quantize_row_q4_1(x: &[f32], y: &mut [BlockQ4_1]) {
    assert_row("quantize_row_q4_1", x.len(), y.len(), QK4_1);
    for (xb, yb) in x.chunks_exact(QK4_1).zip(y.iter_mut()) {
        let (min, max) = block_min_max(xb);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        yb.d = fp32_to_fp16(d);
        yb.m = fp32_to_fp16(min);

        let (lo, hi) = xb.split_at(QK4_1 / 2);
        for ((q, &x0), &x1) in yb.qs.iter_mut().zip(lo).zip(hi) {
            // Rounded after the multiply and again after `+ 0.5`, as ggml's two statements are
            // when not contracted into an FMA (x86 builds without -mfma, clang).
            let xi0 = c_f32_to_i8((x0 - min) * id + 0.5).min(15) as u8;
            let xi1 = c_f32_to_i8((x1 - min) * id + 0.5).min(15) as u8;
            *q = xi0 | (xi1 << 4);
        }
    }
}

/// `y = d * q + m` for each nibble: low nibbles are elements 0..16, high ones 16..32.
///
/// `q * d` is exact in f32 (a 4-bit integer times an f16's 11-bit significand), so this equals
/// the fused `fma(q, d, m)` that compilers emit for ggml's `x0*d + m` where FMA is available:
/// the bytes agree whichever way ggml was built.
///
/// # Panics
/// If `y.len() != x.len() * QK4_1`.
pub fn dequantize_row_q4_1(x: &[BlockQ4_1], y: &mut [f32]) {
    assert_row("dequantize_row_q4_1", y.len(), x.len(), QK4_1);
    for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK4_1)) {
        let d = fp16_to_fp32(xb.d);
        let m = fp16_to_fp32(xb.m);
        let (lo, hi) = yb.split_at_mut(QK4_1 / 2);
        for ((&q, y0), y1) in xb.qs.iter().zip(lo).zip(hi) {
            *y0 = (q & 0x0F) as f32 * d + m;
            *y1 = (q >> 4) as f32 * d + m;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;
    use proptest::prelude::*;

    fn round_trip(x: &[f32]) -> (Vec<BlockQ4_1>, Vec<f32>) {
        let mut q = vec![BlockQ4_1::default(); x.len() / QK4_1];
        quantize_row_q4_1(x, &mut q);
        let mut y = vec![0.0; x.len()];
        dequantize_row_q4_1(&q, &mut y);
        (q, y)
    }

    #[test]
    fn ramp_is_exact() {
        // min 1, max 16.5: d = 1.1 -> levels hit every other input
        let x: Vec<f32> = (0..32).map(|i| 1.0 + i as f32 * 0.5).collect();
        let (q, _) = round_trip(&x);
        assert_eq!(q[0].m, f16::from_f32(1.0));
        assert_eq!(q[0].d, f16::from_f32(15.5 / 15.0));
        assert_eq!(q[0].qs[0] & 0x0F, 0);
        assert_eq!(q[0].qs[15] >> 4, 15);

        // a ramp of exact levels comes back exactly
        let x: Vec<f32> = (0..32).map(|i| -3.0 + (i % 16) as f32 * 0.25).collect();
        let (_, y) = round_trip(&x);
        assert_eq!(x, y);
    }

    #[test]
    fn constant_block_has_zero_scale() {
        let (q, y) = round_trip(&[-2.75; 32]);
        assert_eq!(q[0].d.to_f32(), 0.0);
        assert_eq!(q[0].m, f16::from_f32(-2.75));
        assert!(q[0].qs.iter().all(|&n| n == 0));
        assert!(y.iter().all(|&v| v == -2.75));
    }

    proptest! {
        #[test]
        fn round_trip_error_within_half_step(
            x in prop::collection::vec(-1000.0f32..1000.0, 32 * 4),
        ) {
            let (q, y) = round_trip(&x);
            for (b, (xb, yb)) in q.iter().zip(x.chunks(32).zip(y.chunks(32))) {
                let d = b.d.to_f32();
                let m_err = (b.m.to_f32() - xb.iter().copied().fold(f32::MAX, f32::min)).abs();
                for (a, r) in xb.iter().zip(yb) {
                    // half a step, the f16 rounding of d over up to 15 steps, and of m
                    let tol = 0.5 * d + 15.0 * d * 1e-3 + m_err + 1e-4;
                    prop_assert!((a - r).abs() <= tol, "{} vs {} (d = {})", a, r, d);
                }
            }
        }
    }
}
