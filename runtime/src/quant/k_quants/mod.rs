//! `quant::k_quants`: ggml's super-block formats (Q4_K, Q5_K, Q6_K and the Q8_K activations),
//! 256 values per block, and the scale solvers their reference quantizers share
//! (`make_qkx2_quants`, `make_qx_quants`, `nearest_int`, the 6-bit scale packing).
//!
//! Every function here follows ggml's C statement by statement, in f32 and in the same order,
//! because the solvers compare candidate errors: a different rounding anywhere picks another
//! candidate and changes the bytes. Rust never contracts `a*b + c` into an FMA, which matches
//! the unfused build of the oracle (`-ffp-contract=off`, see `tests/quant_vs_ggml.rs`).
//!
//! Must not allocate: the per-block scratch lives on the stack.

pub mod q4_k;
pub mod q5_k;
pub mod q6_k;
pub mod q8_k;

/// Values per super-block (ggml's `QK_K`, the 256 build).
pub const QK_K: usize = 256;
/// Bytes of the packed 6-bit scales and mins of Q4_K and Q5_K (ggml's `K_SCALE_SIZE`).
pub const K_SCALE_SIZE: usize = 12;

/// ggml's `nearest_int`: adds 1.5 * 2^23 so the FPU rounds to an integer (ties to even) held in
/// the low mantissa bits, then reads them back. Exact for |v| <= 2^22; beyond that it returns
/// the same garbage ggml does (its `assert` is compiled out), which callers then clamp.
#[inline(always)]
pub(crate) fn nearest_int(v: f32) -> i32 {
    let biased = v + 12_582_912.0;
    (biased.to_bits() as i32 & 0x007F_FFFF) - 0x0040_0000
}

/// ggml's `make_qkx2_quants`: levels `L[i]` in `0..=nmax` and `(scale, -min)` minimising the
/// weighted squared error of `x ≈ scale * L + min` (min <= 0), trying `nstep + 1` candidate
/// inverse scales `(rmin + rdelta * is + nmax) / (max - min)` after the plain one. Returns
/// `(scale, the_min)` where `the_min = -min`.
pub(crate) fn make_qkx2_quants(
    nmax: i32,
    x: &[f32; 32],
    weights: &[f32; 32],
    levels: &mut [u8; 32],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..32 {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        levels.fill(0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_mad = 0.0f32;
    for i in 0..32 {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        levels[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        best_mad += weights[i] * (diff * diff);
    }
    let mut aux = [0u8; 32];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..32 {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            aux[i] = l as u8;
            let w = weights[i];
            let lf = l as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut mad = 0.0f32;
            for i in 0..32 {
                let diff = this_scale * aux[i] as f32 + this_min - x[i];
                mad += weights[i] * (diff * diff);
            }
            if mad < best_mad {
                *levels = aux;
                best_mad = mad;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// ggml's `make_qx_quants` with `rmse_type == 1` and no importance weights (the only form the
/// reference quantizers use): signed levels `L[i] + nmax` in `0..2*nmax` and the scale
/// minimising the `x²`-weighted error over 19 candidate inverse scales around `-nmax / max`.
pub(crate) fn make_qx_quants(nmax: i32, x: &[f32; 16], levels: &mut [i8; 16]) -> f32 {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < 1e-30 {
        levels.fill(0);
        return 0.0;
    }
    let level = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let mut iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (q, &v) in levels.iter_mut().zip(x) {
        let l = level(iscale, v);
        *q = (l + nmax) as i8;
        let w = v * v;
        let lf = l as f32;
        sumlx += w * v * lf;
        suml2 += w * lf * lf;
    }
    let mut scale = sumlx / suml2;
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &v in x {
            let l = level(iscale, v);
            let w = v * v;
            let lf = l as f32;
            sumlx += w * v * lf;
            suml2 += w * lf * lf;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (q, &v) in levels.iter_mut().zip(x) {
                *q = (level(iscale, v) + nmax) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// The 6-bit scale and min of sub-block `j` (0..8) from Q4_K's / Q5_K's 12 packed bytes
/// (ggml's `get_scale_min_k4`): sub-blocks 0..4 in the low 6 bits of bytes `j` and `j + 4`,
/// sub-blocks 4..8 in a nibble of byte `j + 4` plus the top 2 bits of bytes `j - 4` and `j`.
#[inline(always)]
pub fn scale_min_k4(j: usize, q: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// All eight `(scale, min)` pairs of [`scale_min_k4`] at once, as `(scales, mins)`, from the
/// three little-endian words of the packed bytes: sub-blocks 0..4 are the low 6 bits of words 0
/// (scales) and 1 (mins); sub-blocks 4..8 take a nibble of word 2 and the top 2 bits of word 0
/// (scales) or word 1 (mins) per byte.
#[inline(always)]
pub fn scales_mins_k4(q: &[u8; K_SCALE_SIZE]) -> ([u8; 8], [u8; 8]) {
    const LOW6: u32 = 0x3f3f_3f3f;
    const LOW4: u32 = 0x0f0f_0f0f;
    const LOW2: u32 = 0x0303_0303;
    let word = |i: usize| u32::from_le_bytes([q[4 * i], q[4 * i + 1], q[4 * i + 2], q[4 * i + 3]]);
    let (w0, w1, w2) = (word(0), word(1), word(2));
    let scales_hi = (w2 & LOW4) | (((w0 >> 6) & LOW2) << 4);
    let mins_hi = ((w2 >> 4) & LOW4) | (((w1 >> 6) & LOW2) << 4);
    (
        (u64::from(w0 & LOW6) | (u64::from(scales_hi) << 32)).to_le_bytes(),
        (u64::from(w1 & LOW6) | (u64::from(mins_hi) << 32)).to_le_bytes(),
    )
}

/// The per-sub-block half of Q4_K's and Q5_K's reference quantizers: solves each 32-value
/// sub-block with [`make_qkx2_quants`] (weights `sqrt(mean(x²)) + |x|`), quantizes the eight
/// scales and mins to 6 bits against their maxima, packs them, and re-derives the levels from the
/// stored (rounded) scales. Returns `(d, dmin, scales, levels)`.
pub(crate) fn quantize_super_block_scale_min(
    x: &[f32; QK_K],
    nmax: i32,
    rmin: f32,
    nstep: i32,
) -> (half::f16, half::f16, [u8; K_SCALE_SIZE], [u8; QK_K]) {
    use super::f16::{fp16_to_fp32, fp32_to_fp16};

    let mut levels = [0u8; QK_K];
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..8 {
        let xs: &[f32; 32] = x[32 * j..32 * j + 32].try_into().expect("32 values");
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        let mut weights = [0.0f32; 32];
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let ls: &mut [u8; 32] = (&mut levels[32 * j..32 * j + 32])
            .try_into()
            .expect("32 levels");
        let (scale, min) = make_qkx2_quants(nmax, xs, &weights, ls, rmin, 0.1, nstep);
        scales[j] = scale;
        mins[j] = min;
        if scale > max_scale {
            max_scale = scale;
        }
        if min > max_min {
            max_min = min;
        }
    }

    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut packed = [0u8; K_SCALE_SIZE];
    for j in 0..8 {
        // C stores nearest_int's int in a uint8_t before clamping: keep the low byte too.
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            packed[j] = ls;
            packed[j + 4] = lm;
        } else {
            packed[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            packed[j - 4] |= (ls >> 4) << 6;
            packed[j] |= (lm >> 4) << 6;
        }
    }
    let d = fp32_to_fp16(max_scale / 63.0);
    let dmin = fp32_to_fp16(max_min / 63.0);

    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, &packed);
        let dj = fp16_to_fp32(d) * sc as f32;
        if dj == 0.0 {
            // ggml keeps the solver's levels for a sub-block whose stored scale is zero
            continue;
        }
        let dm = fp16_to_fp32(dmin) * m as f32;
        for (l, &v) in levels[32 * j..32 * j + 32]
            .iter_mut()
            .zip(&x[32 * j..32 * j + 32])
        {
            *l = nearest_int((v + dm) / dj).clamp(0, nmax) as u8;
        }
    }
    (d, dmin, packed, levels)
}

#[cfg(test)]
mod tests {
    #[test]
    fn scales_mins_k4_equals_scale_min_k4() {
        // every byte value in every position, with varied neighbours
        for v in 0..=255u8 {
            for pos in 0..K_SCALE_SIZE {
                let mut q = [0u8; K_SCALE_SIZE];
                for (i, b) in q.iter_mut().enumerate() {
                    *b = (i as u8)
                        .wrapping_mul(37)
                        .wrapping_add(v.rotate_left(i as u32));
                }
                q[pos] = v;
                let (scales, mins) = super::scales_mins_k4(&q);
                for j in 0..8 {
                    assert_eq!(
                        (scales[j], mins[j]),
                        super::scale_min_k4(j, &q),
                        "{q:?} j={j}"
                    );
                }
            }
        }
    }

    use super::*;

    #[test]
    fn nearest_int_rounds_ties_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(-0.5), 0);
        assert_eq!(nearest_int(-1.5), -2);
        assert_eq!(nearest_int(-7.49), -7);
        assert_eq!(nearest_int(4_194_303.0), 4_194_303);
        assert_eq!(nearest_int(-4_194_303.0), -4_194_303);
    }

    #[test]
    fn scale_min_packing_round_trips() {
        // pack as the quantizer does, unpack with scale_min_k4
        let ls: [u8; 8] = [0, 1, 17, 63, 32, 5, 48, 63];
        let lm: [u8; 8] = [63, 0, 2, 33, 15, 16, 62, 1];
        let mut q = [0u8; K_SCALE_SIZE];
        for j in 0..8 {
            if j < 4 {
                q[j] = ls[j];
                q[j + 4] = lm[j];
            } else {
                q[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4);
                q[j - 4] |= (ls[j] >> 4) << 6;
                q[j] |= (lm[j] >> 4) << 6;
            }
        }
        for j in 0..8 {
            assert_eq!(scale_min_k4(j, &q), (ls[j], lm[j]), "sub-block {j}");
        }
    }
}
