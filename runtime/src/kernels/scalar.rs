//! The scalar kernels: the specification every SIMD kernel is tested against. Each follows
//! ggml's `_generic` version of the same name (same integer sums, same order of the float
//! multiplies per block), so results agree with ggml's scalar path to the last bit where the
//! summation order is the same.

use half::f16;

use crate::quant::blocks::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1, QK8_0};
use crate::quant::k_quants::scale_min_k4;
use crate::quant::{BlockQ4K, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K, QK_K};

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

/// The 32 5-bit levels (0..32) of a Q5_0/Q5_1 block: nibble `j` (low nibbles are values 0..16,
/// high ones 16..32) plus bit `j` of the little-endian `qh` as bit 4.
#[inline(always)]
fn q5_levels(qs: &[u8; 16], qh: [u8; 4]) -> [i32; 32] {
    let qh = u32::from_le_bytes(qh);
    let mut v = [0i32; 32];
    for j in 0..16 {
        v[j] = i32::from(qs[j] & 0x0F) | (((qh >> j) & 1) << 4) as i32;
        v[j + 16] = i32::from(qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4) as i32;
    }
    v
}

/// Σ (q5 - 16) · q8 per block, times both scales.
pub fn vec_dot_q5_0_q8_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let v = q5_levels(&xb.qs, xb.qh);
        let sumi: i32 = v
            .iter()
            .zip(&yb.qs)
            .map(|(&w, &a)| (w - 16) * i32::from(a))
            .sum();
        sumf += (xb.d.to_f32() * yb.d.to_f32()) * sumi as f32;
    }
    sumf
}

/// Σ q5 · q8 per block times both scales, plus the weight minimum times the activation sum.
pub fn vec_dot_q5_1_q8_1(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let v = q5_levels(&xb.qs, xb.qh);
        let sumi: i32 = v.iter().zip(&yb.qs).map(|(&w, &a)| w * i32::from(a)).sum();
        sumf += (xb.d.to_f32() * yb.d.to_f32()) * sumi as f32 + xb.m.to_f32() * yb.s.to_f32();
    }
    sumf
}

/// The eight 6-bit scales and mins of a Q4_K / Q5_K block.
#[inline(always)]
fn scales_mins_k4(packed: &[u8; 12]) -> ([i32; 8], [i32; 8]) {
    let mut scales = [0i32; 8];
    let mut mins = [0i32; 8];
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, packed);
        scales[j] = i32::from(sc);
        mins[j] = i32::from(m);
    }
    (scales, mins)
}

/// Σ mins[j] · (activation sum over sub-block j), from the Q8_K 16-value sums.
#[inline(always)]
fn mins_dot_bsums(mins: &[i32; 8], bsums: &[i16; QK_K / 16]) -> i32 {
    (0..QK_K / 16)
        .map(|k| i32::from(bsums[k]) * mins[k / 2])
        .sum()
}

/// Per block, `d·Σ_j sc_j Σ q4 · q8 - dmin·Σ_j m_j Σ q8` with `d` and `dmin` times the
/// activation scale (ggml's integer semantics: the sums are exact, one float step per block).
/// The minimum's part reads the activation `bsums`, which the Q8_K quantizer keeps equal to
/// the sums of its quants.
pub fn vec_dot_q4_k_q8_k(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let (scales, mins) = scales_mins_k4(&xb.scales);
        let mut sumi = 0i32;
        for (j, (q, a)) in xb
            .qs
            .chunks_exact(32)
            .zip(yb.qs.chunks_exact(64))
            .enumerate()
        {
            let (mut lo, mut hi) = (0i32, 0i32);
            for l in 0..32 {
                lo += i32::from(q[l] & 0xF) * i32::from(a[l]);
                hi += i32::from(q[l] >> 4) * i32::from(a[l + 32]);
            }
            sumi += lo * scales[2 * j] + hi * scales[2 * j + 1];
        }
        let d = yb.d * xb.d.to_f32();
        let dmin = yb.d * xb.dmin.to_f32();
        sumf += d * sumi as f32 - dmin * mins_dot_bsums(&mins, &yb.bsums) as f32;
    }
    sumf
}

/// As [`vec_dot_q4_k_q8_k`], with each level's fifth bit from `qh`.
pub fn vec_dot_q5_k_q8_k(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let (scales, mins) = scales_mins_k4(&xb.scales);
        let mut sumi = 0i32;
        for (j, (q, a)) in xb
            .qs
            .chunks_exact(32)
            .zip(yb.qs.chunks_exact(64))
            .enumerate()
        {
            let (u1, u2) = (1u8 << (2 * j), 2u8 << (2 * j));
            let (mut lo, mut hi) = (0i32, 0i32);
            for l in 0..32 {
                let h1 = if xb.qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if xb.qh[l] & u2 != 0 { 16 } else { 0 };
                lo += (i32::from(q[l] & 0xF) + h1) * i32::from(a[l]);
                hi += (i32::from(q[l] >> 4) + h2) * i32::from(a[l + 32]);
            }
            sumi += lo * scales[2 * j] + hi * scales[2 * j + 1];
        }
        let d = yb.d * xb.d.to_f32();
        let dmin = yb.d * xb.dmin.to_f32();
        sumf += d * sumi as f32 - dmin * mins_dot_bsums(&mins, &yb.bsums) as f32;
    }
    sumf
}

/// The 256 unsigned 6-bit levels (0..64) of a Q6_K block, in value order.
#[inline(always)]
pub(crate) fn q6_k_levels(xb: &BlockQ6K) -> [u8; QK_K] {
    let mut q = [0u8; QK_K];
    for n in 0..2 {
        let ql = &xb.ql[64 * n..64 * n + 64];
        let qh = &xb.qh[32 * n..32 * n + 32];
        let out = &mut q[128 * n..128 * n + 128];
        for l in 0..32 {
            out[l] = (ql[l] & 0xF) | ((qh[l] & 3) << 4);
            out[l + 32] = (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4);
            out[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
            out[l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
        }
    }
    q
}

/// Per block, `d·d_act·(Σ_j sc_j Σ q6 · q8 - 32·Σ_j sc_j Σ q8)`: the unsigned levels dotted
/// exactly, the offset 32 applied through the activation `bsums` (ggml's NEON/AVX form).
pub fn vec_dot_q6_k_q8_k(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let q = q6_k_levels(xb);
        let mut isum = 0i32;
        let mut isum_mins = 0i32;
        for (j, (qj, aj)) in q.chunks_exact(16).zip(yb.qs.chunks_exact(16)).enumerate() {
            let s: i32 = qj
                .iter()
                .zip(aj)
                .map(|(&w, &a)| i32::from(w) * i32::from(a))
                .sum();
            isum += s * i32::from(xb.scales[j]);
            isum_mins += i32::from(yb.bsums[j]) * i32::from(xb.scales[j]);
        }
        sumf += xb.d.to_f32() * yb.d * (isum - 32 * isum_mins) as f32;
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

/// Rows of an f16 matrix dotted with f32 vectors holding f16 values (see
/// [`RowsDot`](super::RowsDot)): each `out[h·n_rows + r]` is Σ row·vector with f32 products
/// summed in f64, as [`vec_dot_f16`] computes it for the vector in f16.
pub fn vec_dots_f16(rows: &[f16], stride: usize, xs: &[f32], n: usize, out: &mut [f32]) {
    let (_, n_rows) = super::rows_dot_shape(rows.len(), stride, xs.len(), n, out.len());
    if n_rows == 0 {
        return;
    }
    for (x, o) in xs.chunks_exact(n).zip(out.chunks_exact_mut(n_rows)) {
        for (r, o) in o.iter_mut().enumerate() {
            let mut sum = 0.0f64;
            for (a, b) in rows[r * stride..][..n].iter().zip(x) {
                sum += (a.to_f32() * b) as f64;
            }
            *o = sum as f32;
        }
    }
}

/// [`vec_dots_f16`] over f32 rows, each as [`vec_dot_f32`].
pub fn vec_dots_f32(rows: &[f32], stride: usize, xs: &[f32], n: usize, out: &mut [f32]) {
    let (_, n_rows) = super::rows_dot_shape(rows.len(), stride, xs.len(), n, out.len());
    if n_rows == 0 {
        return;
    }
    for (x, o) in xs.chunks_exact(n).zip(out.chunks_exact_mut(n_rows)) {
        for (r, o) in o.iter_mut().enumerate() {
            *o = vec_dot_f32(&rows[r * stride..][..n], x);
        }
    }
}

/// `x[i] = e^(x[i] - max)` in place, returning Σ x[i] summed in f64: the exponentials of a
/// softmax, as ggml's `ggml_vec_soft_max_f32` computes them (its scalar loop: libm's `expf`).
pub fn vec_soft_max_f32(x: &mut [f32], max: f32) -> f64 {
    let mut sum = 0.0f64;
    for v in x.iter_mut() {
        let e = (*v - max).exp();
        sum += e as f64;
        *v = e;
    }
    sum
}
