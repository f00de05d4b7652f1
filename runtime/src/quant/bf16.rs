//! BF16: the top half of an f32, one value per "block" (ggml's `ggml_compute_fp32_to_bf16` and
//! `ggml_compute_bf16_to_fp32`).

use half::bf16;

use super::assert_row;

/// ggml's `GGML_FP32_TO_BF16`: round to nearest, ties to even, on the raw bits (so overflow
/// rounds to infinity and subnormals are kept, not flushed); NaN keeps its top bits and is made
/// quiet by setting bit 6 of the result.
#[inline]
pub fn fp32_to_bf16(x: f32) -> bf16 {
    let u = x.to_bits();
    if u & 0x7FFF_FFFF > 0x7F80_0000 {
        return bf16::from_bits(((u >> 16) | 0x40) as u16);
    }
    // Adding 0x7FFF plus the lowest kept bit rounds up exactly when the dropped half is above
    // the midpoint, or at it with an odd kept part. The sum cannot wrap: the largest finite
    // input is 0xFF7F_FFFF.
    let rounded = u + 0x7FFF + ((u >> 16) & 1);
    bf16::from_bits((rounded >> 16) as u16)
}

/// ggml's `GGML_BF16_TO_FP32`: exact (the bits shifted into the top half).
#[inline]
pub fn bf16_to_fp32(h: bf16) -> f32 {
    f32::from_bits(u32::from(h.to_bits()) << 16)
}

/// `y[i] = fp32_to_bf16(x[i])` (ggml's `ggml_fp32_to_bf16_row_ref`).
///
/// # Panics
/// If the lengths differ.
pub fn quantize_row_bf16(x: &[f32], y: &mut [bf16]) {
    assert_row("quantize_row_bf16", x.len(), y.len(), 1);
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi = fp32_to_bf16(xi);
    }
}

/// `y[i] = bf16_to_fp32(x[i])` (ggml's `ggml_bf16_to_fp32_row`).
///
/// # Panics
/// If the lengths differ.
pub fn dequantize_row_bf16(x: &[bf16], y: &mut [f32]) {
    assert_row("dequantize_row_bf16", y.len(), x.len(), 1);
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi = bf16_to_fp32(xi);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_ties_to_even_on_bits() {
        let cases: [(u32, u16); 9] = [
            (0x3F80_0000, 0x3F80), // 1.0
            (0x3F80_8000, 0x3F80), // tie, even stays
            (0x3F81_8000, 0x3F82), // tie, odd rounds up
            (0x3F80_8001, 0x3F81), // above the tie
            (0x3F80_7FFF, 0x3F80), // below the tie
            (0x7F7F_FFFF, 0x7F80), // f32::MAX rounds to infinity
            (0x0000_0001, 0x0000), // smallest subnormal rounds to zero
            (0x0000_8001, 0x0001), // subnormal kept, not flushed
            (0x8000_0000, 0x8000), // -0.0
        ];
        for (x, bits) in cases {
            assert_eq!(fp32_to_bf16(f32::from_bits(x)).to_bits(), bits, "{x:#010x}");
        }
    }

    #[test]
    fn nan_is_made_quiet() {
        assert_eq!(fp32_to_bf16(f32::from_bits(0x7F80_0001)).to_bits(), 0x7FC0);
        assert_eq!(fp32_to_bf16(f32::from_bits(0xFFC0_0000)).to_bits(), 0xFFC0);
        assert_eq!(fp32_to_bf16(f32::from_bits(0x7FA1_2345)).to_bits(), 0x7FE1);
        assert_eq!(fp32_to_bf16(f32::INFINITY).to_bits(), 0x7F80);
    }

    #[test]
    fn every_bf16_round_trips() {
        for bits in 0..=u16::MAX {
            let x = bf16_to_fp32(bf16::from_bits(bits));
            if x.is_nan() {
                continue;
            }
            assert_eq!(fp32_to_bf16(x).to_bits(), bits, "{bits:#06x}");
        }
    }
}
