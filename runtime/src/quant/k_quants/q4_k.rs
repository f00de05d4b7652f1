//! Q4_K: 256 values in eight sub-blocks of 32, `x = d·sc_j · q - dmin·m_j` with 4-bit levels
//! and 6-bit sub-block scales and mins (ggml's `quantize_row_q4_K_reference` /
//! `dequantize_row_q4_K`). The main type of Q4_K_M files.

use half::f16;

use super::{quantize_super_block_scale_min, scale_min_k4, K_SCALE_SIZE, QK_K};
use crate::quant::assert_row;
use crate::quant::f16::fp16_to_fp32;

/// One Q4_K super-block (ggml's `block_q4_K`): `qs` holds, per 64 values, 32 bytes whose low
/// nibbles are values 0..32 and high nibbles values 32..64.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ4K {
    /// Scale of the 6-bit sub-block scales.
    pub d: f16,
    /// Scale of the 6-bit sub-block mins.
    pub dmin: f16,
    /// Eight scales and eight mins, 6 bits each, packed as [`scale_min_k4`] reads them.
    pub scales: [u8; K_SCALE_SIZE],
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);

impl Default for BlockQ4K {
    fn default() -> Self {
        BlockQ4K {
            d: f16::ZERO,
            dmin: f16::ZERO,
            scales: [0; K_SCALE_SIZE],
            qs: [0; QK_K / 2],
        }
    }
}

/// Quantizes `x` into `y`, bit-exact with ggml's `quantize_row_q4_K_reference` (what
/// `llama-quantize` runs without an importance matrix).
///
/// # Panics
/// If `x.len() != y.len() * QK_K`.
pub fn quantize_row_q4_k(x: &[f32], y: &mut [BlockQ4K]) {
    assert_row("quantize_row_q4_k", x.len(), y.len(), QK_K);
    for (xb, yb) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
        let xb: &[f32; QK_K] = xb.try_into().expect("chunks_exact yields QK_K values");
        let (d, dmin, scales, levels) = quantize_super_block_scale_min(xb, 15, -1.0, 20);
        yb.d = d;
        yb.dmin = dmin;
        yb.scales = scales;
        for (q, l) in yb.qs.chunks_exact_mut(32).zip(levels.chunks_exact(64)) {
            for (k, b) in q.iter_mut().enumerate() {
                *b = l[k] | (l[k + 32] << 4);
            }
        }
    }
}

/// `y = d·sc · q - dmin·m` per sub-block.
///
/// # Panics
/// If `y.len() != x.len() * QK_K`.
pub fn dequantize_row_q4_k(x: &[BlockQ4K], y: &mut [f32]) {
    assert_row("dequantize_row_q4_k", y.len(), x.len(), QK_K);
    for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = fp16_to_fp32(xb.d);
        let min = fp16_to_fp32(xb.dmin);
        for (j, (q, out)) in xb
            .qs
            .chunks_exact(32)
            .zip(yb.chunks_exact_mut(64))
            .enumerate()
        {
            let (sc1, m1) = scale_min_k4(2 * j, &xb.scales);
            let (sc2, m2) = scale_min_k4(2 * j + 1, &xb.scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            let (lo, hi) = out.split_at_mut(32);
            for ((&b, o1), o2) in q.iter().zip(lo).zip(hi) {
                *o1 = d1 * (b & 0xF) as f32 - m1;
                *o2 = d2 * (b >> 4) as f32 - m2;
            }
        }
    }
}
