//! Q4_0: 32 values as one f16 scale and 32 unsigned nibbles, `x = d * (q - 8)` (ggml's
//! `quantize_row_q4_0_ref` / `dequantize_row_q4_0`).

use super::blocks::{BlockQ4_0, QK4_0};
use super::f16::{fp16_to_fp32, fp32_to_fp16};
use super::{assert_row, block_signed_absmax, c_f32_to_i8};

/// Quantizes `x` into `y` exactly as ggml's reference: the scale comes from the value of largest
/// magnitude, sign included (the first one on ties), so that value maps to -8 and the other
/// side of zero gets the extra level; `d = max / -8`, then
/// `q = min(15, (int8)(x / d + 8.5))`, truncation making `+ 8.5` round to nearest.
///
/// # Panics
/// If `x.len() != y.len() * QK4_0`.
pub fn quantize_row_q4_0(x: &[f32], y: &mut [BlockQ4_0]) {
    assert_row("quantize_row_q4_0", x.len(), y.len(), QK4_0);
    for (xb, yb) in x.chunks_exact(QK4_0).zip(y.iter_mut()) {
        let max = block_signed_absmax(xb);
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        yb.d = fp32_to_fp16(d);

        let (lo, hi) = xb.split_at(QK4_0 / 2);
        for ((q, &x0), &x1) in yb.qs.iter_mut().zip(lo).zip(hi) {
            // Two statements in ggml (`x0 = x*id`, then `x0 + 8.5f`): we round after each.
            let xi0 = c_f32_to_i8(x0 * id + 8.5).min(15) as u8;
            let xi1 = c_f32_to_i8(x1 * id + 8.5).min(15) as u8;
            *q = xi0 | (xi1 << 4);
        }
    }
}

/// `y = d * (q - 8)` for each nibble: low nibbles are elements 0..16, high ones 16..32.
///
/// # Panics
/// If `y.len() != x.len() * QK4_0`.
pub fn dequantize_row_q4_0(x: &[BlockQ4_0], y: &mut [f32]) {
    assert_row("dequantize_row_q4_0", y.len(), x.len(), QK4_0);
    for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK4_0)) {
        let d = fp16_to_fp32(xb.d);
        let (lo, hi) = yb.split_at_mut(QK4_0 / 2);
        for ((&q, y0), y1) in xb.qs.iter().zip(lo).zip(hi) {
            *y0 = ((q & 0x0F) as i32 - 8) as f32 * d;
            *y1 = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;
    use proptest::prelude::*;

    fn round_trip(x: &[f32]) -> (Vec<BlockQ4_0>, Vec<f32>) {
        let mut q = vec![BlockQ4_0::default(); x.len() / QK4_0];
        quantize_row_q4_0(x, &mut q);
        let mut y = vec![0.0; x.len()];
        dequantize_row_q4_0(&q, &mut y);
        (q, y)
    }

    #[test]
    fn largest_magnitude_maps_to_minus_eight() {
        let mut x = [0.0f32; 32];
        for (i, v) in x.iter_mut().enumerate() {
            *v = i as f32 - 10.0; // -10 ..= 21
        }
        let (q, y) = round_trip(&x);
        // max = 21 (largest magnitude), d = -21/8
        assert_eq!(q[0].d, f16::from_f32(-21.0 / 8.0));
        assert_eq!(q[0].qs[15] >> 4, 0); // element 31 (= 21) -> q 0 -> -8 * d
        assert_eq!(y[31], -8.0 * f16::from_f32(-21.0 / 8.0).to_f32());
        // -10 -> -10 / -2.625 + 8.5 = 12.3 -> 12
        assert_eq!(q[0].qs[0] & 0x0F, 12);
    }

    #[test]
    fn first_of_equal_magnitudes_wins() {
        let mut x = [0.0f32; 32];
        x[3] = -4.0;
        x[7] = 4.0;
        let (q, _) = round_trip(&x);
        assert_eq!(q[0].d, f16::from_f32(0.5)); // -4 / -8
        x[3] = 4.0;
        x[7] = -4.0;
        let (q, _) = round_trip(&x);
        assert_eq!(q[0].d, f16::from_f32(-0.5));
    }

    #[test]
    fn zeros_give_zero_scale_and_middle_nibble() {
        let (q, y) = round_trip(&[0.0; 64]);
        for b in &q {
            assert_eq!(b.d.to_bits(), 0x8000); // 0 / -8 is -0.0
            assert!(b.qs.iter().all(|&n| n == 0x88));
        }
        assert!(y.iter().all(|&v| v == 0.0));
    }

    proptest! {
        #[test]
        fn round_trip_error_within_half_step(
            x in prop::collection::vec(-1000.0f32..1000.0, 32 * 4),
        ) {
            let (q, y) = round_trip(&x);
            for (b, (xb, yb)) in q.iter().zip(x.chunks(32).zip(y.chunks(32))) {
                let d = b.d.to_f32().abs();
                for (a, r) in xb.iter().zip(yb) {
                    // Half a step, but a whole one above 7.5 steps on the side opposite the
                    // largest magnitude (level 16 does not exist and clamps to 15); plus the
                    // f16 rounding of d, scaled by up to 8 steps.
                    let steps = if (a / d).abs() > 7.5 { 1.0 } else { 0.5 };
                    let tol = steps * d + 8.0 * d * 1e-3 + 1e-6;
                    prop_assert!((a - r).abs() <= tol, "{} vs {} (d = {})", a, r, d);
                }
            }
        }
    }
}
