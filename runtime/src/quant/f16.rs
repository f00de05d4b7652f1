//! F16: IEEE half precision, one value per "block". The conversions every f16 scale in the
//! quantized blocks goes through (ggml's `GGML_FP32_TO_FP16` / `GGML_FP16_TO_FP32`).

use half::f16;

use super::assert_row;

/// ggml's `GGML_FP32_TO_FP16`: round to nearest, ties to even, with subnormals kept and overflow
/// to infinity; NaN becomes the canonical quiet NaN with the input's sign (`0x7E00`), as ggml's
/// portable conversion does (hardware F16C would keep the top payload bits instead).
#[inline]
pub fn fp32_to_fp16(x: f32) -> f16 {
    if x.is_nan() {
        let sign = ((x.to_bits() >> 16) & 0x8000) as u16;
        return f16::from_bits(sign | 0x7E00);
    }
    f16::from_f32(x)
}

/// ggml's `GGML_FP16_TO_FP32`: exact (every f16 is an f32).
#[inline]
pub fn fp16_to_fp32(h: f16) -> f32 {
    h.to_f32()
}

/// `y[i] = fp32_to_fp16(x[i])` (ggml's `ggml_fp32_to_fp16_row`).
///
/// # Panics
/// If the lengths differ.
pub fn quantize_row_f16(x: &[f32], y: &mut [f16]) {
    assert_row("quantize_row_f16", x.len(), y.len(), 1);
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi = fp32_to_fp16(xi);
    }
}

/// `y[i] = fp16_to_fp32(x[i])` (ggml's `ggml_fp16_to_fp32_row`).
///
/// # Panics
/// If the lengths differ.
pub fn dequantize_row_f16(x: &[f16], y: &mut [f32]) {
    assert_row("dequantize_row_f16", y.len(), x.len(), 1);
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi = fp16_to_fp32(xi);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_nearest_even_and_saturates_to_infinity() {
        let cases: [(f32, u16); 12] = [
            (0.0, 0x0000),
            (-0.0, 0x8000),
            (1.0, 0x3C00),
            (65504.0, 0x7BFF),
            (65519.99, 0x7BFF), // below the rounding midpoint to 2^16
            (65520.0, 0x7C00),  // the midpoint, ties to even: infinity
            (1e30, 0x7C00),
            (-1e30, 0xFC00),
            (f32::INFINITY, 0x7C00),
            (5.9604645e-8, 0x0001),       // smallest subnormal
            (2.9802322e-8, 0x0000),       // half of it: tie to even (zero)
            (1.0 + 1.0 / 2048.0, 0x3C00), // tie between 1 and 1+2^-10: even
        ];
        for (x, bits) in cases {
            assert_eq!(fp32_to_fp16(x).to_bits(), bits, "{x}");
        }
        assert_eq!(fp32_to_fp16(f32::NAN).to_bits(), 0x7E00);
        assert_eq!(fp32_to_fp16(f32::from_bits(0xFF80_0001)).to_bits(), 0xFE00);
    }

    #[test]
    fn every_f16_round_trips() {
        for bits in 0..=u16::MAX {
            let h = f16::from_bits(bits);
            let x = fp16_to_fp32(h);
            if h.is_nan() {
                assert!(x.is_nan());
                continue;
            }
            assert_eq!(fp32_to_fp16(x).to_bits(), bits, "{bits:#06x}");
        }
    }

    #[test]
    fn rows_convert_elementwise() {
        let x = [1.0f32, -2.5, 1e-6, 70000.0];
        let mut h = [f16::ZERO; 4];
        quantize_row_f16(&x, &mut h);
        let mut y = [0.0f32; 4];
        dequantize_row_f16(&h, &mut y);
        assert_eq!(y[..2], [1.0, -2.5]);
        assert!((y[2] - 1e-6).abs() < 6e-8);
        assert_eq!(y[3], f32::INFINITY);
    }
}
