//! Q8_1: Q8_0 plus `s = d * sum(q)`, the activation format the Q4_1 dot product pairs with
//! (ggml's `quantize_row_q8_1_ref`). ggml never stores Q8_1 tensors and has no dequantizer for
//! it; ours is `x = d * q`, like Q8_0.

use super::assert_row;
use super::blocks::{BlockQ8_1, QK8_1};
use super::f16::{fp16_to_fp32, fp32_to_fp16};
use super::q8_0::{quantize_act_block_q8, quantize_block_q8};

/// Quantizes `x` into `y`, bit-exact with ggml's `quantize_row_q8_1_ref`: the quants of Q8_0,
/// and `s = fp16(sum(q) * d)` with the sum taken over the stored (int8) quants. Allocation-free,
/// for the per-token activation path.
///
/// # Panics
/// If `x.len() != y.len() * QK8_1`.
pub fn quantize_row_q8_1(x: &[f32], y: &mut [BlockQ8_1]) {
    quantize_blocks_q8_1("quantize_row_q8_1", x, y, quantize_block_q8);
}

/// Quantizes activations as llama.cpp's x86 build does (see
/// [`quantize_act_row_q8_0`](super::q8_0::quantize_act_row_q8_0)), with `s = d · Σ q`.
///
/// # Panics
/// If `x.len() != y.len() * QK8_1`.
pub fn quantize_act_row_q8_1(x: &[f32], y: &mut [BlockQ8_1]) {
    quantize_blocks_q8_1("quantize_act_row_q8_1", x, y, quantize_act_block_q8);
}

/// Q8_1 blocks from `block`'s quants and scale, with `s = fp16(d · Σ q)` over the stored quants.
#[inline(always)]
fn quantize_blocks_q8_1(
    name: &str,
    x: &[f32],
    y: &mut [BlockQ8_1],
    block: fn(&[f32; QK8_1], &mut [i8; QK8_1]) -> f32,
) {
    assert_row(name, x.len(), y.len(), QK8_1);
    for (xb, yb) in x.chunks_exact(QK8_1).zip(y.iter_mut()) {
        let xb: &[f32; QK8_1] = xb.try_into().expect("chunks_exact yields QK8_1 values");
        let d = block(xb, &mut yb.qs);
        let sum: i32 = yb.qs.iter().map(|&q| i32::from(q)).sum();
        yb.d = fp32_to_fp16(d);
        yb.s = fp32_to_fp16(d * sum as f32);
    }
}

/// `y = d * q` (`s` is redundant with the quants and ignored).
///
/// # Panics
/// If `y.len() != x.len() * QK8_1`.
pub fn dequantize_row_q8_1(x: &[BlockQ8_1], y: &mut [f32]) {
    assert_row("dequantize_row_q8_1", y.len(), x.len(), QK8_1);
    for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK8_1)) {
        let d = fp16_to_fp32(xb.d);
        for (v, &q) in yb.iter_mut().zip(&xb.qs) {
            *v = q as f32 * d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::blocks::BlockQ8_0;
    use crate::quant::q8_0::quantize_row_q8_0;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn quants_equal_q8_0_and_s_is_d_times_sum(
            x in prop::collection::vec(-50.0f32..50.0, 32 * 3),
        ) {
            let mut q1 = vec![BlockQ8_1::default(); 3];
            let mut q0 = vec![BlockQ8_0::default(); 3];
            quantize_row_q8_1(&x, &mut q1);
            quantize_row_q8_0(&x, &mut q0);
            for (a, b) in q1.iter().zip(&q0) {
                prop_assert_eq!(a.d, b.d);
                prop_assert_eq!(a.qs, b.qs);
                let sum: i32 = a.qs.iter().map(|&q| i32::from(q)).sum();
                let d = b.d.to_f32();
                // s is computed from the f32 d, then rounded to f16
                prop_assert!((a.s.to_f32() - sum as f32 * d).abs() <= (sum as f32 * d).abs() / 1024.0 + 1e-3);
            }
            let mut y = vec![0.0; x.len()];
            dequantize_row_q8_1(&q1, &mut y);
            for (b, (xb, yb)) in q1.iter().zip(x.chunks(32).zip(y.chunks(32))) {
                let d = b.d.to_f32();
                for (a, r) in xb.iter().zip(yb) {
                    prop_assert!((a - r).abs() <= 0.5 * d + 127.0 * d / 2048.0 + 1e-6);
                }
            }
        }
    }
}
