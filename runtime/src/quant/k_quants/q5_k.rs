//! Q5_K: Q4_K's layout plus a fifth bit per value in `qh`, `x = d·sc_j · q - dmin·m_j` with
//! levels 0..32 (ggml's `quantize_row_q5_K_reference` / `dequantize_row_q5_K`).

use half::f16;

use super::{quantize_super_block_scale_min, scale_min_k4, K_SCALE_SIZE, QK_K};
use crate::quant::assert_row;
use crate::quant::f16::fp16_to_fp32;

/// One Q5_K super-block (ggml's `block_q5_K`): low nibbles as in Q4_K; bit `2k` of `qh[l]` is
/// the fifth bit of value `64k + l`, bit `2k + 1` that of value `64k + 32 + l`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ5K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; K_SCALE_SIZE],
    pub qh: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5K>() == 176);

impl Default for BlockQ5K {
    fn default() -> Self {
        BlockQ5K {
            d: f16::ZERO,
            dmin: f16::ZERO,
            scales: [0; K_SCALE_SIZE],
            qh: [0; QK_K / 8],
            qs: [0; QK_K / 2],
        }
    }
}

/// Quantizes `x` into `y`, bit-exact with ggml's `quantize_row_q5_K_reference`.
///
/// # Panics
/// If `x.len() != y.len() * QK_K`.
pub fn quantize_row_q5_k(x: &[f32], y: &mut [BlockQ5K]) {
    assert_row("quantize_row_q5_k", x.len(), y.len(), QK_K);
    for (xb, yb) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
        let xb: &[f32; QK_K] = xb.try_into().expect("chunks_exact yields QK_K values");
        let (d, dmin, scales, levels) = quantize_super_block_scale_min(xb, 31, -0.5, 15);
        yb.d = d;
        yb.dmin = dmin;
        yb.scales = scales;
        yb.qh = [0; QK_K / 8];
        for (k, (q, l)) in yb
            .qs
            .chunks_exact_mut(32)
            .zip(levels.chunks_exact(64))
            .enumerate()
        {
            let (m1, m2) = (1u8 << (2 * k), 2u8 << (2 * k));
            for (j, b) in q.iter_mut().enumerate() {
                let (mut l1, mut l2) = (l[j], l[j + 32]);
                if l1 > 15 {
                    l1 -= 16;
                    yb.qh[j] |= m1;
                }
                if l2 > 15 {
                    l2 -= 16;
                    yb.qh[j] |= m2;
                }
                *b = l1 | (l2 << 4);
            }
        }
    }
}

/// `y = d·sc · q - dmin·m` per sub-block, `q` with its fifth bit.
///
/// # Panics
/// If `y.len() != x.len() * QK_K`.
pub fn dequantize_row_q5_k(x: &[BlockQ5K], y: &mut [f32]) {
    assert_row("dequantize_row_q5_k", y.len(), x.len(), QK_K);
    for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = fp16_to_fp32(xb.d);
        let min = fp16_to_fp32(xb.dmin);
        for (k, (q, out)) in xb
            .qs
            .chunks_exact(32)
            .zip(yb.chunks_exact_mut(64))
            .enumerate()
        {
            let (sc1, m1) = scale_min_k4(2 * k, &xb.scales);
            let (sc2, m2) = scale_min_k4(2 * k + 1, &xb.scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            let (u1, u2) = (1u8 << (2 * k), 2u8 << (2 * k));
            let (lo, hi) = out.split_at_mut(32);
            for (l, ((&b, o1), o2)) in q.iter().zip(lo).zip(hi).enumerate() {
                let h1 = if xb.qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if xb.qh[l] & u2 != 0 { 16 } else { 0 };
                *o1 = d1 * ((b & 0xF) + h1) as f32 - m1;
                *o2 = d2 * ((b >> 4) + h2) as f32 - m2;
            }
        }
    }
}
