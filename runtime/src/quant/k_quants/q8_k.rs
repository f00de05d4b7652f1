//! Q8_K: the activation format the K-quant dot products pair with, 256 values as an f32 scale,
//! 256 signed bytes and the sums of each 16 (ggml's `quantize_row_q8_K_reference`). Quantized
//! once per matmul on every token, so [`quantize_row_q8_k`] must stay allocation-free.

use super::{nearest_int, QK_K};
use crate::quant::assert_row;

/// One Q8_K block (ggml's `block_q8_K`): `x = d * q`, and `bsums[k] = Σ qs[16k..16k + 16]` so the
/// weight mins and offsets cost one multiply per 16 values.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; QK_K],
    pub bsums: [i16; QK_K / 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 292);

impl Default for BlockQ8K {
    fn default() -> Self {
        BlockQ8K {
            d: 0.0,
            qs: [0; QK_K],
            bsums: [0; QK_K / 16],
        }
    }
}

/// Quantizes `x` into `y`, bit-exact with ggml's `quantize_row_q8_K_reference`: `max` is the
/// first value of largest magnitude, `q = min(127, nearest_int(-127/max · x))`, `d = 1/iscale`.
/// All-zero blocks get `d = 0`, zero quants and zero sums (ggml leaves their sums unwritten).
/// Quants lie in [-127, 127] for finite inputs.
///
/// # Panics
/// If `x.len() != y.len() * QK_K`.
pub fn quantize_row_q8_k(x: &[f32], y: &mut [BlockQ8K]) {
    assert_row("quantize_row_q8_k", x.len(), y.len(), QK_K);
    for (xb, yb) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
        let mut max = 0.0f32;
        let mut amax = 0.0f32;
        for &v in xb {
            let ax = v.abs();
            if ax > amax {
                amax = ax;
                max = v;
            }
        }
        if amax == 0.0 {
            *yb = BlockQ8K::default();
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in yb.qs.iter_mut().zip(xb) {
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        for (s, q) in yb.bsums.iter_mut().zip(yb.qs.chunks_exact(16)) {
            *s = q.iter().map(|&v| i16::from(v)).sum();
        }
        yb.d = 1.0 / iscale;
    }
}

/// `y = d * q`.
///
/// # Panics
/// If `y.len() != x.len() * QK_K`.
pub fn dequantize_row_q8_k(x: &[BlockQ8K], y: &mut [f32]) {
    assert_row("dequantize_row_q8_k", y.len(), x.len(), QK_K);
    for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        for (v, &q) in yb.iter_mut().zip(&xb.qs) {
            *v = xb.d * q as f32;
        }
    }
}
