//! Q6_K: 256 values in sixteen sub-blocks of 16, `x = d·sc_j · (q - 32)` with 6-bit levels and
//! signed 8-bit sub-block scales (ggml's `quantize_row_q6_K_reference` / `dequantize_row_q6_K`).
//! Q4_K_M files store `output.weight` and half of the `ffn_down`/`attn_v` tensors in it.

use half::f16;

use super::{make_qx_quants, nearest_int, QK_K};
use crate::quant::assert_row;
use crate::quant::f16::{fp16_to_fp32, fp32_to_fp16};

/// One Q6_K super-block (ggml's `block_q6_K`). Per 128 values `n`: `ql[64n/2 + l]` holds the low
/// nibbles of values `l` (low half) and `l + 64` (high half), `ql[.. + 32 + l]` those of `l + 32`
/// and `l + 96`; `qh[32n/... + l]` holds the top two bits of values `l`, `l + 32`, `l + 64`,
/// `l + 96` at bits 0, 2, 4, 6.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ6K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);

impl Default for BlockQ6K {
    fn default() -> Self {
        BlockQ6K {
            ql: [0; QK_K / 2],
            qh: [0; QK_K / 4],
            scales: [0; QK_K / 16],
            d: f16::ZERO,
        }
    }
}

/// Quantizes `x` into `y`, bit-exact with ggml's `quantize_row_q6_K_reference`.
///
/// # Panics
/// If `x.len() != y.len() * QK_K`.
pub fn quantize_row_q6_k(x: &[f32], y: &mut [BlockQ6K]) {
    assert_row("quantize_row_q6_k", x.len(), y.len(), QK_K);
    for (xb, yb) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
        let mut levels = [0i8; QK_K];
        let mut scales = [0.0f32; QK_K / 16];
        let mut max_scale = 0.0f32;
        let mut max_abs_scale = 0.0f32;
        for (ib, (xs, ls)) in xb
            .chunks_exact(16)
            .zip(levels.chunks_exact_mut(16))
            .enumerate()
        {
            let xs: &[f32; 16] = xs.try_into().expect("16 values");
            let ls: &mut [i8; 16] = ls.try_into().expect("16 levels");
            let scale = make_qx_quants(32, xs, ls);
            scales[ib] = scale;
            if scale.abs() > max_abs_scale {
                max_abs_scale = scale.abs();
                max_scale = scale;
            }
        }
        if max_abs_scale == 0.0 {
            *yb = BlockQ6K::default();
            continue;
        }
        let iscale = -128.0 / max_scale;
        yb.d = fp32_to_fp16(1.0 / iscale);
        for (s, &sc) in yb.scales.iter_mut().zip(&scales) {
            // C stores the int in an int8_t: keep the low byte.
            *s = nearest_int(iscale * sc).min(127) as i8;
        }
        for j in 0..QK_K / 16 {
            let d = fp16_to_fp32(yb.d) * yb.scales[j] as f32;
            if d == 0.0 {
                continue;
            }
            for (l, &v) in levels[16 * j..16 * j + 16]
                .iter_mut()
                .zip(&xb[16 * j..16 * j + 16])
            {
                *l = (nearest_int(v / d).clamp(-32, 31) + 32) as i8;
            }
        }
        for (n, (ql, qh)) in yb
            .ql
            .chunks_exact_mut(64)
            .zip(yb.qh.chunks_exact_mut(32))
            .enumerate()
        {
            let l = &levels[128 * n..128 * n + 128];
            for i in 0..32 {
                let (q1, q2, q3, q4) = (
                    l[i] as u8,
                    l[i + 32] as u8,
                    l[i + 64] as u8,
                    l[i + 96] as u8,
                );
                ql[i] = (q1 & 0xF) | ((q3 & 0xF) << 4);
                ql[i + 32] = (q2 & 0xF) | ((q4 & 0xF) << 4);
                qh[i] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
            }
        }
    }
}

/// `y = d·sc · (q - 32)` per sub-block of 16.
///
/// # Panics
/// If `y.len() != x.len() * QK_K`.
pub fn dequantize_row_q6_k(x: &[BlockQ6K], y: &mut [f32]) {
    assert_row("dequantize_row_q6_k", y.len(), x.len(), QK_K);
    for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = fp16_to_fp32(xb.d);
        for (n, out) in yb.chunks_exact_mut(128).enumerate() {
            let ql = &xb.ql[64 * n..64 * n + 64];
            let qh = &xb.qh[32 * n..32 * n + 32];
            let sc = &xb.scales[8 * n..8 * n + 8];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                out[l] = d * sc[is] as f32 * q1 as f32;
                out[l + 32] = d * sc[is + 2] as f32 * q2 as f32;
                out[l + 64] = d * sc[is + 4] as f32 * q3 as f32;
                out[l + 96] = d * sc[is + 6] as f32 * q4 as f32;
            }
        }
    }
}
