//! The scalar kernels: the specification every SIMD kernel is tested against. Each follows
//! ggml's `_generic` version of the same name (same integer sums, same order of the float
//! multiplies per block), so results agree with ggml's scalar path to the last bit where the
//! summation order is the same.

use half::f16;

use crate::quant::blocks::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1, QK8_0};

/// Σ (q4 - 8) · q8 per block, times both scales.
pub fn vec_dot_q4_0_q8_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let mut sumi0 = 0i32;
        let mut sumi1 = 0i32;
        for j in 0..QK8_0 / 2 {
            let v0 = (xb.qs[j] & 0x0f) as i32 - 8;
            let v1 = (xb.qs[j] >> 4) as i32 - 8;
            sumi0 += v0 * yb.qs[j] as i32;
            sumi1 += v1 * yb.qs[j + QK8_0 / 2] as i32;
        }
        sumf += (sumi0 + sumi1) as f32 * (xb.d.to_f32() * yb.d.to_f32());
    }
    sumf
}

/// Σ q4 · q8 per block times both scales, plus the weight minimum times the activation sum.
pub fn vec_dot_q4_1_q8_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let mut sumi0 = 0i32;
        let mut sumi1 = 0i32;
        for j in 0..QK8_0 / 2 {
            let v0 = (xb.qs[j] & 0x0f) as i32;
            let v1 = (xb.qs[j] >> 4) as i32;
            sumi0 += v0 * yb.qs[j] as i32;
            sumi1 += v1 * yb.qs[j + QK8_0 / 2] as i32;
        }
        sumf += (xb.d.to_f32() * yb.d.to_f32()) * (sumi0 + sumi1) as f32
            + xb.m.to_f32() * yb.s.to_f32();
    }
    sumf
}

/// Σ q8 · q8 per block, times both scales.
pub fn vec_dot_q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let mut sumi = 0i32;
        for j in 0..QK8_0 {
            sumi += xb.qs[j] as i32 * yb.qs[j] as i32;
        }
        sumf += sumi as f32 * (xb.d.to_f32() * yb.d.to_f32());
    }
    sumf
}

/// f16 · f16 accumulated in f64 (ggml's `ggml_float`).
pub fn vec_dot_f16(x: &[f16], y: &[f16]) -> f32 {
    let mut sum = 0.0f64;
    for (a, b) in x.iter().zip(y) {
        sum += (a.to_f32() * b.to_f32()) as f64;
    }
    sum as f32
}

/// f32 · f32 accumulated in f64 (ggml's `ggml_float`).
pub fn vec_dot_f32(x: &[f32], y: &[f32]) -> f32 {
    let mut sum = 0.0f64;
    for (a, b) in x.iter().zip(y) {
        sum += (a * b) as f64;
    }
    sum as f32
}

/// bf16 weights · f32 activations, accumulated in f64.
pub fn vec_dot_bf16_f32(x: &[half::bf16], y: &[f32]) -> f32 {
    let mut sum = 0.0f64;
    for (a, b) in x.iter().zip(y) {
        sum += (a.to_f32() * b) as f64;
    }
    sum as f32
}
