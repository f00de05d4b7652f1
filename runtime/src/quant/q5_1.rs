//! Q5_1: 32 values as an f16 scale, an f16 minimum, 32 low nibbles and 32 fifth bits,
//! `x = d * q + m` (ggml's `quantize_row_q5_1_reference` / `dequantize_row_q5_1`).

use half::f16;

use super::f16::{fp16_to_fp32, fp32_to_fp16};
use super::{assert_row, block_min_max, c_f32_to_i8};

/// Elements per Q5_1 block.
pub const QK5_1: usize = 32;

/// 5-bit with minimum (ggml's `block_q5_1`); nibble and fifth-bit layout as [`BlockQ5_0`](super::BlockQ5_0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BlockQ5_1 {
    pub d: f16,
    pub m: f16,
    pub qh: [u8; 4],
    pub qs: [u8; QK5_1 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24);

/// Quantizes `x` into `y` exactly as ggml's reference: `m = min`, `d = (max - min) / 31`,
/// `q = (uint8)((x - min) / d + 0.5)` (no clamp: the top value lands on 31 at most).
///
/// # Panics
/// If `x.len() != y.len() * QK5_1`.
pub fn quantize_row_q5_1(x: &[f32], y: &mut [BlockQ5_1]) {
    assert_row("quantize_row_q5_1", x.len(), y.len(), QK5_1);
    for (xb, yb) in x.chunks_exact(QK5_1).zip(y.iter_mut()) {
        let (min, max) = block_min_max(xb);
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        yb.d = fp32_to_fp16(d);
        yb.m = fp32_to_fp16(min);

        let mut qh = 0u32;
        let (lo, hi) = xb.split_at(QK5_1 / 2);
        for (j, (q, (&x0, &x1))) in yb.qs.iter_mut().zip(lo.iter().zip(hi)).enumerate() {
            // C converts the float straight to uint8_t; GCC does that through a 32-bit
            // conversion and keeps the low byte, as `c_f32_to_i8` does (x86 and Arm agree for
            // every value this can see: non-negative, +inf or NaN).
            let xi0 = c_f32_to_i8((x0 - min) * id + 0.5) as u8;
            let xi1 = c_f32_to_i8((x1 - min) * id + 0.5) as u8;
            *q = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
            qh |= u32::from((xi0 & 0x10) >> 4) << j;
            qh |= u32::from((xi1 & 0x10) >> 4) << (j + QK5_1 / 2);
        }
        yb.qh = qh.to_le_bytes();
    }
}

/// `y = d * q + m`.
///
/// # Panics
/// If `y.len() != x.len() * QK5_1`.
pub fn dequantize_row_q5_1(x: &[BlockQ5_1], y: &mut [f32]) {
    assert_row("dequantize_row_q5_1", y.len(), x.len(), QK5_1);
    for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK5_1)) {
        let d = fp16_to_fp32(xb.d);
        let m = fp16_to_fp32(xb.m);
        let qh = u32::from_le_bytes(xb.qh);
        let (lo, hi) = yb.split_at_mut(QK5_1 / 2);
        for (j, ((&q, y0), y1)) in xb.qs.iter().zip(lo).zip(hi).enumerate() {
            let h0 = (((qh >> j) << 4) & 0x10) as u8;
            let h1 = ((qh >> (j + 12)) & 0x10) as u8;
            *y0 = ((q & 0x0F) | h0) as f32 * d + m;
            *y1 = ((q >> 4) | h1) as f32 * d + m;
        }
    }
}
