//! Q5_0: 32 values as an f16 scale, 32 low nibbles and 32 fifth bits, `x = d * (q - 16)`
//! (ggml's `quantize_row_q5_0_reference` / `dequantize_row_q5_0`).

use half::f16;

use super::f16::{fp16_to_fp32, fp32_to_fp16};
use super::{assert_row, block_signed_absmax, c_f32_to_i8};

/// Elements per Q5_0 block.
pub const QK5_0: usize = 32;

/// 5-bit symmetric (ggml's `block_q5_0`): element `j` in the low nibble of `qs[j]` with its
/// fifth bit at bit `j` of the little-endian `qh`, element `j + 16` in the high nibble with its
/// fifth bit at bit `j + 16`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BlockQ5_0 {
    pub d: f16,
    pub qh: [u8; 4],
    pub qs: [u8; QK5_0 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);

/// Quantizes `x` into `y` exactly as ggml's reference: `d = max / -16` (`max` the first value
/// of largest magnitude), `q = min(31, (int8)(x/d + 16.5))`, the product rounded before the add
/// as in Q4_0.
///
/// # Panics
/// If `x.len() != y.len() * QK5_0`.
pub fn quantize_row_q5_0(x: &[f32], y: &mut [BlockQ5_0]) {
    assert_row("quantize_row_q5_0", x.len(), y.len(), QK5_0);
    for (xb, yb) in x.chunks_exact(QK5_0).zip(y.iter_mut()) {
        let max = block_signed_absmax(xb);
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        yb.d = fp32_to_fp16(d);

        let mut qh = 0u32;
        let (lo, hi) = xb.split_at(QK5_0 / 2);
        for (j, (q, (&x0, &x1))) in yb.qs.iter_mut().zip(lo.iter().zip(hi)).enumerate() {
            let xi0 = c_f32_to_i8(x0 * id + 16.5).min(31) as u8;
            let xi1 = c_f32_to_i8(x1 * id + 16.5).min(31) as u8;
            *q = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
            qh |= u32::from((xi0 & 0x10) >> 4) << j;
            qh |= u32::from((xi1 & 0x10) >> 4) << (j + QK5_0 / 2);
        }
        yb.qh = qh.to_le_bytes();
    }
}

/// `y = d * (q - 16)`.
///
/// # Panics
/// If `y.len() != x.len() * QK5_0`.
pub fn dequantize_row_q5_0(x: &[BlockQ5_0], y: &mut [f32]) {
    assert_row("dequantize_row_q5_0", y.len(), x.len(), QK5_0);
    for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK5_0)) {
        let d = fp16_to_fp32(xb.d);
        let qh = u32::from_le_bytes(xb.qh);
        let (lo, hi) = yb.split_at_mut(QK5_0 / 2);
        for (j, ((&q, y0), y1)) in xb.qs.iter().zip(lo).zip(hi).enumerate() {
            let h0 = (((qh >> j) << 4) & 0x10) as u8;
            let h1 = ((qh >> (j + 12)) & 0x10) as u8;
            *y0 = (((q & 0x0F) | h0) as i32 - 16) as f32 * d;
            *y1 = (((q >> 4) | h1) as i32 - 16) as f32 * d;
        }
    }
}
