//! The scalar kernels: the specification every SIMD kernel is tested against, and the path
//! that reproduces llama.cpp's numbers to the last bit. The reference outputs come from
//! llama.cpp's x86 build (AVX2 code, AVX-512 where it has it); the int dots here sum in its
//! order (`Lanes8`), the f16 attention dots in its two orders ([`SumOrder`]), the softmax and
//! SiLU exponentials with its `ggml_v_expf` ([`expf_ggml`]) and RoPE with its compiler's fused
//! multiply-adds ([`rope_pairs`]). A single bit matters: an activation quantized one step
//! differently moves the logits of the 135M model by ~0.3 after 30 layers.
//!
//! Fused multiply-adds (`mul_add`) are one rounding on every target; `with_fma!` runs a
//! kernel's body with the FMA instructions where an x86 CPU has them (baseline x86-64 has none:
//! each `mul_add` would be a call to libm's software `fmaf`).

use half::f16;

use super::SumOrder;
use crate::quant::blocks::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1};
use crate::quant::k_quants::scale_min_k4;
use crate::quant::{BlockQ4K, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K, QK_K};

/// Defines `pub fn $name` whose body runs with x86's FMA instructions where the CPU has them:
/// the same results (`mul_add` rounds once either way), without a libm call per fused
/// multiply-add on baseline x86-64.
macro_rules! with_fma {
    ($(#[$m:meta])* pub fn $name:ident$(<$lt:lifetime>)?($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        pub fn $name$(<$lt>)?($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body$(<$lt>)?($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "fma")]
                unsafe fn fused$(<$lt>)?($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has FMA, checked just above.
                    return unsafe { fused($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

/// The float side of llama.cpp's x86 int dots (`ggml_vec_dot_q4_0_q8_0` and the other 32-block
/// types, and llamafile's `tinyBLAS_Q0_AVX` for prompts, which sum alike): a block's products
/// go into 8 exact integer lanes of 4 consecutive elements, each lane is converted to f32 and
/// added into its own accumulator as `fma(d_w · d_a, lane, acc)`, block after block, and the 8
/// accumulators are reduced as `hsum_float_8` does.
struct Lanes8([f32; 8]);

impl Lanes8 {
    #[inline(always)]
    fn new() -> Lanes8 {
        Lanes8([0.0; 8])
    }

    /// One block: `w[i] · a[i]` summed per lane of 4, scaled by `d`.
    #[inline(always)]
    fn add_block(&mut self, d: f32, w: &[i32; 32], a: &[i8; 32]) {
        for (k, acc) in self.0.iter_mut().enumerate() {
            let lane: i32 = (4 * k..4 * k + 4).map(|i| w[i] * i32::from(a[i])).sum();
            *acc = d.mul_add(lane as f32, *acc);
        }
    }

    /// `hsum_float_8`: the high half added to the low one, then lanes 0+2 and 1+3, then those.
    #[inline(always)]
    fn sum(&self) -> f32 {
        let a = &self.0;
        let r: [f32; 4] = std::array::from_fn(|i| a[i + 4] + a[i]);
        (r[0] + r[2]) + (r[1] + r[3])
    }
}

/// The 32 nibbles of a Q4 block as levels 0..16, in element order (low nibbles first).
#[inline(always)]
fn q4_levels(qs: &[u8; 16]) -> [i32; 32] {
    let mut v = [0i32; 32];
    for j in 0..16 {
        v[j] = i32::from(qs[j] & 0x0F);
        v[j + 16] = i32::from(qs[j] >> 4);
    }
    v
}

with_fma! {
    /// Σ (q4 - 8) · q8 per block, times both scales (`Lanes8` order).
    pub fn vec_dot_q4_0_q8_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
        let mut acc = Lanes8::new();
        for (xb, yb) in x.iter().zip(y) {
            let w = q4_levels(&xb.qs).map(|v| v - 8);
            acc.add_block(xb.d.to_f32() * yb.d.to_f32(), &w, &yb.qs);
        }
        acc.sum()
    }
}

with_fma! {
    /// Σ q4 · q8 per block times both scales (`Lanes8` order), plus the weight minimum times
    /// the activation sum, chained in one fused multiply-add per block as GCC contracts
    /// ggml's `summs += m * s`, added last.
    pub fn vec_dot_q4_1_q8_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
        let mut acc = Lanes8::new();
        let mut summs = 0.0f32;
        for (xb, yb) in x.iter().zip(y) {
            summs = xb.m.to_f32().mul_add(yb.s.to_f32(), summs);
            acc.add_block(xb.d.to_f32() * yb.d.to_f32(), &q4_levels(&xb.qs), &yb.qs);
        }
        acc.sum() + summs
    }
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

with_fma! {
    /// Σ (q5 - 16) · q8 per block, times both scales (`Lanes8` order).
    pub fn vec_dot_q5_0_q8_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
        let mut acc = Lanes8::new();
        for (xb, yb) in x.iter().zip(y) {
            let w = q5_levels(&xb.qs, xb.qh).map(|v| v - 16);
            acc.add_block(xb.d.to_f32() * yb.d.to_f32(), &w, &yb.qs);
        }
        acc.sum()
    }
}

with_fma! {
    /// Σ q5 · q8 per block times both scales, plus the weight minimum times the activation
    /// sum (as [`vec_dot_q4_1_q8_1`]).
    pub fn vec_dot_q5_1_q8_1(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
        let mut acc = Lanes8::new();
        let mut summs = 0.0f32;
        for (xb, yb) in x.iter().zip(y) {
            summs = xb.m.to_f32().mul_add(yb.s.to_f32(), summs);
            let w = q5_levels(&xb.qs, xb.qh);
            acc.add_block(xb.d.to_f32() * yb.d.to_f32(), &w, &yb.qs);
        }
        acc.sum() + summs
    }
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

/// A Q4_K / Q5_K block's exact integer sums against a Q8_K block: `Σ_j sc_j Σ q · q8` over
/// its eight 32-value sub-blocks (levels from `level(l, j)`: value `l` of sub-block pair
/// `j`'s low (`false`) or high (`true`) half) and `Σ_j m_j Σ q8` from the activation `bsums`.
#[inline(always)]
fn k4_block_sums(
    scales: &[i32; 8],
    mins: &[i32; 8],
    yb: &BlockQ8K,
    level: impl Fn(usize, usize, bool) -> i32,
) -> (i32, i32) {
    let mut sumi = 0i32;
    for (j, a) in yb.qs.chunks_exact(64).enumerate() {
        let (mut lo, mut hi) = (0i32, 0i32);
        for l in 0..32 {
            lo += level(l, j, false) * i32::from(a[l]);
            hi += level(l, j, true) * i32::from(a[l + 32]);
        }
        sumi += lo * scales[2 * j] + hi * scales[2 * j + 1];
    }
    (sumi, mins_dot_bsums(mins, &yb.bsums))
}

/// [`k4_block_sums`] of a Q4_K block.
#[inline(always)]
fn q4_k_block_sums(xb: &BlockQ4K, yb: &BlockQ8K) -> (i32, i32) {
    let (scales, mins) = scales_mins_k4(&xb.scales);
    k4_block_sums(&scales, &mins, yb, |l, j, high| {
        let q = xb.qs[32 * j + l];
        i32::from(if high { q >> 4 } else { q & 0xF })
    })
}

/// [`k4_block_sums`] of a Q5_K block: each level's fifth bit from `qh` ([`q5_k_level`]).
#[inline(always)]
fn q5_k_block_sums(xb: &BlockQ5K, yb: &BlockQ8K) -> (i32, i32) {
    let (scales, mins) = scales_mins_k4(&xb.scales);
    k4_block_sums(&scales, &mins, yb, |l, j, high| {
        q5_k_level(xb, 64 * j + 32 * usize::from(high) + l)
    })
}

with_fma! {
    /// Per block the exact integer sums `Σ_j sc_j Σ q4 · q8` and `Σ_j m_j Σ q8` (the
    /// minimum's part from the activation `bsums`, which the Q8_K quantizer keeps equal to the
    /// sums of its quants), each added into its own f32 chain with a fused multiply-add by
    /// `d_w · d_a` and `dmin_w · d_a`, the second chain subtracted at the end: the order of
    /// llama.cpp's x86 build, which repacks Q4_K matrices (of a multiple of 8 rows, that is every
    /// model's) eight rows at a time and sums them so (`ggml_gemv_q4_K_8x8_q8_K` /
    /// `ggml_gemm_q4_K_8x8_q8_K`).
    pub fn vec_dot_q4_k_q8_k(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
        let mut acc = 0.0f32;
        let mut acc_min = 0.0f32;
        for (xb, yb) in x.iter().zip(y) {
            let (sumi, imin) = q4_k_block_sums(xb, yb);
            acc = (sumi as f32).mul_add(xb.d.to_f32() * yb.d, acc);
            acc_min = (imin as f32).mul_add(xb.dmin.to_f32() * yb.d, acc_min);
        }
        acc - acc_min
    }
}

with_fma! {
    /// [`vec_dot_q4_k_q8_k`] in the order llama.cpp's x86 build uses for the tokens its
    /// repacked kernel takes four at a time (`ggml_gemm_q4_K_8x8_q8_K`): the two fused chains
    /// step once per 64 values (a pair of sub-blocks) instead of once per block.
    pub fn vec_dot_q4_k_q8_k_group4(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
        let mut acc = 0.0f32;
        let mut acc_min = 0.0f32;
        for (xb, yb) in x.iter().zip(y) {
            let (scales, mins) = scales_mins_k4(&xb.scales);
            let d = xb.d.to_f32() * yb.d;
            let dmin = xb.dmin.to_f32() * yb.d;
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
                let isum = lo * scales[2 * j] + hi * scales[2 * j + 1];
                let bsum = |s: usize| i32::from(yb.bsums[2 * s]) + i32::from(yb.bsums[2 * s + 1]);
                let imin = mins[2 * j] * bsum(2 * j) + mins[2 * j + 1] * bsum(2 * j + 1);
                acc = (isum as f32).mul_add(d, acc);
                acc_min = (imin as f32).mul_add(dmin, acc_min);
            }
        }
        acc - acc_min
    }
}

/// One block's step of llama.cpp's tiled K-quant matmul (`ggml_compute_forward_mul_mat_tiled`
/// with its AVX-512 VNNI microkernel, which takes the prompt batches of 8 tokens or more for
/// the K-quant matrices the x86 build does not repack): the block's exact integer sum `sumi`
/// (and `imin`, the minimums' part, for the types that have one) converted to f32 once,
/// `r = fma(-dmin_w, imin, sumi · d_w)`, and `acc = fma(r, d_a, acc)`, block after block.
#[inline(always)]
fn tiled_step(acc: f32, sumi: i32, d_w: f32, min: Option<(i32, f32)>, d_a: f32) -> f32 {
    let mut r = sumi as f32 * d_w;
    if let Some((imin, dmin)) = min {
        r = (-dmin).mul_add(imin as f32, r);
    }
    r.mul_add(d_a, acc)
}

with_fma! {
    /// Q4_K in the order of llama.cpp's tiled matmul ([`tiled_step`]), which its x86 build uses
    /// for prompt batches of 8 tokens or more where a Q4_K matrix is not repacked (rows not a
    /// multiple of 8).
    pub fn vec_dot_q4_k_q8_k_tiled(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
        x.iter().zip(y).fold(0.0, |acc, (xb, yb)| {
            let (sumi, imin) = q4_k_block_sums(xb, yb);
            tiled_step(acc, sumi, xb.d.to_f32(), Some((imin, xb.dmin.to_f32())), yb.d)
        })
    }
}

with_fma! {
    /// Q5_K in the order of llama.cpp's tiled matmul ([`tiled_step`]): prompt batches of 8
    /// tokens or more on its x86 build.
    pub fn vec_dot_q5_k_q8_k_tiled(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
        x.iter().zip(y).fold(0.0, |acc, (xb, yb)| {
            let (sumi, imin) = q5_k_block_sums(xb, yb);
            tiled_step(acc, sumi, xb.d.to_f32(), Some((imin, xb.dmin.to_f32())), yb.d)
        })
    }
}

/// Value `i` (0..256) of a Q5_K block: the low or high nibble of `qs` plus 16 for its fifth bit
/// in `qh` (values `64j..64j + 32` are the low nibbles of `qs[32j..32j + 32]` with bit `2j` of
/// `qh[0..32]`, values `64j + 32..64j + 64` the high nibbles with bit `2j + 1`).
#[inline(always)]
pub(crate) fn q5_k_level(xb: &BlockQ5K, i: usize) -> i32 {
    let (j, high, l) = (i / 64, (i / 32) % 2 == 1, i % 32);
    let q = xb.qs[32 * j + l];
    let bit = 1u8 << (2 * j + usize::from(high));
    let h = if xb.qh[l] & bit != 0 { 16 } else { 0 };
    i32::from(if high { q >> 4 } else { q & 0xF }) + h
}

with_fma! {
    /// Q5_K in the order of llama.cpp's x86 build for one token (`ggml_vec_dot_q5_K_q8_K`,
    /// AVX2: that build repacks no Q5_K matrix): 8 integer lanes per block, lane `l` holding
    /// every 32-value sub-block's elements `4l..4l + 4` times the sub-block's scale, each lane
    /// scaled by `d_a · d_w` into its own f32 accumulator with a fused multiply-add; the
    /// minimums' part `Σ_j m_j Σ q8` (from the activation `bsums`) into one more f32 chain,
    /// `fma(-d_a · dmin_w, ·, chain)`; at the end the lanes reduced as `hsum_float_8` does, plus
    /// that chain.
    pub fn vec_dot_q5_k_q8_k(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
        let mut acc = [0.0f32; 8];
        let mut summs = 0.0f32;
        for (xb, yb) in x.iter().zip(y) {
            let (scales, mins) = scales_mins_k4(&xb.scales);
            let mut lanes = [0i32; 8];
            for (l, lane) in lanes.iter_mut().enumerate() {
                for (sb, sc) in scales.iter().enumerate() {
                    let base = 32 * sb + 4 * l;
                    let dot: i32 = (base..base + 4)
                        .map(|i| q5_k_level(xb, i) * i32::from(yb.qs[i]))
                        .sum();
                    *lane += sc * dot;
                }
            }
            let d = yb.d * xb.d.to_f32();
            for (a, lane) in acc.iter_mut().zip(lanes) {
                *a = d.mul_add(lane as f32, *a);
            }
            let dmin = -yb.d * xb.dmin.to_f32();
            summs = dmin.mul_add(mins_dot_bsums(&mins, &yb.bsums) as f32, summs);
        }
        Lanes8(acc).sum() + summs
    }
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

with_fma! {
    /// Per block `d·d_act·(Σ_j sc_j Σ q6 · q8 - 32·Σ_j sc_j Σ q8)`: the unsigned levels dotted
    /// exactly, the offset 32 applied through the activation `bsums`, in the order of llama.cpp's
    /// x86 build (`ggml_vec_dot_q6_K_q8_K`, AVX2): 8 integer lanes per block, lane `l` holding
    /// every 128-value half's and 32-value quarter's elements `4l..4l + 4` times their scale,
    /// less 32 times sub-blocks `2l` and `2l + 1`'s scaled sums; each lane scaled by
    /// `d_a · d_w` into its own f32 accumulator with a fused multiply-add, reduced as
    /// `hsum_float_8` does.
    pub fn vec_dot_q6_k_q8_k(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
        let mut acc = [0.0f32; 8];
        for (xb, yb) in x.iter().zip(y) {
            let q = q6_k_levels(xb);
            let sc = |i: usize| i32::from(xb.scales[i]);
            let mut lanes = [0i32; 8];
            for (l, lane) in lanes.iter_mut().enumerate() {
                for half in 0..2 {
                    for quarter in 0..4 {
                        let base = 128 * half + 32 * quarter + 4 * l;
                        let dot: i32 = (base..base + 4)
                            .map(|i| i32::from(q[i]) * i32::from(yb.qs[i]))
                            .sum();
                        *lane += sc(8 * half + 2 * quarter + l / 4) * dot;
                    }
                }
                let sub = i32::from(yb.bsums[2 * l]) * sc(2 * l)
                    + i32::from(yb.bsums[2 * l + 1]) * sc(2 * l + 1);
                *lane -= sub << 5;
            }
            let d = yb.d * xb.d.to_f32();
            for (a, lane) in acc.iter_mut().zip(lanes) {
                *a = d.mul_add(lane as f32, *a);
            }
        }
        Lanes8(acc).sum()
    }
}

with_fma! {
    /// Q6_K in the order of llama.cpp's tiled matmul ([`tiled_step`]), which its x86 build
    /// uses for every Q6_K matrix on prompt batches of 8 tokens or more: per block the exact
    /// `Σ_j sc_j (Σ q6 · q8 - 32 Σ q8)` over the sixteen 16-value sub-blocks.
    pub fn vec_dot_q6_k_q8_k_tiled(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
        x.iter().zip(y).fold(0.0, |acc, (xb, yb)| {
            let q = q6_k_levels(xb);
            let sumi: i32 = (0..QK_K / 16)
                .map(|j| {
                    let dot: i32 = (16 * j..16 * j + 16)
                        .map(|i| i32::from(q[i]) * i32::from(yb.qs[i]))
                        .sum();
                    i32::from(xb.scales[j]) * (dot - 32 * i32::from(yb.bsums[j]))
                })
                .sum();
            tiled_step(acc, sumi, xb.d.to_f32(), None, yb.d)
        })
    }
}

with_fma! {
    /// Σ q8 · q8 per block, times both scales (`Lanes8` order).
    pub fn vec_dot_q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
        let mut acc = Lanes8::new();
        for (xb, yb) in x.iter().zip(y) {
            let w = xb.qs.map(i32::from);
            acc.add_block(xb.d.to_f32() * yb.d.to_f32(), &w, &yb.qs);
        }
        acc.sum()
    }
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

/// `_mm512_reduce_add_ps` as GCC implements it: the high 8 lanes added to the low 8, then the
/// high 4 of those to the low 4, then lanes 0+2 and 1+3, then those two.
#[inline(always)]
fn reduce_add_16(x: &[f32; 16]) -> f32 {
    let a: [f32; 8] = std::array::from_fn(|i| x[i + 8] + x[i]);
    let b: [f32; 4] = std::array::from_fn(|i| a[i + 4] + a[i]);
    (b[0] + b[2]) + (b[1] + b[3])
}

/// One f16 dot in llama.cpp's order for `order` (see [`SumOrder`]); `x` holds f16 values.
#[inline(always)]
fn dot_f16_ordered(row: &[f16], x: &[f32], order: SumOrder) -> f32 {
    let n = row.len();
    match order {
        SumOrder::Batch => {
            let mut acc = [0.0f32; 16];
            for (rc, xc) in row.chunks(16).zip(x.chunks(16)) {
                for (l, (a, b)) in rc.iter().zip(xc).enumerate() {
                    acc[l] = a.to_f32().mul_add(*b, acc[l]);
                }
            }
            reduce_add_16(&acc)
        }
        SumOrder::Single { padded } => {
            // Values past `n` are zeros: their products add nothing to a lane or to the sum.
            let np = padded.max(n) / 64 * 64;
            let vec_end = np.min(n);
            let mut acc = [[0.0f32; 16]; 4];
            for (i, (a, b)) in row[..vec_end].iter().zip(&x[..vec_end]).enumerate() {
                let lane = &mut acc[(i % 64) / 16][i % 16];
                *lane = a.to_f32().mul_add(*b, *lane);
            }
            let s0: [f32; 16] =
                std::array::from_fn(|l| (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]));
            let mut sum = f64::from(reduce_add_16(&s0));
            for (a, b) in row[vec_end..].iter().zip(&x[vec_end..n]) {
                sum += f64::from(a.to_f32() * b);
            }
            sum as f32
        }
    }
}

with_fma! {
    /// Rows of an f16 matrix dotted with f32 vectors holding f16 values (see
    /// [`RowsDot`](super::RowsDot)), each sum in llama.cpp's order for `order`.
    pub fn vec_dots_f16(
        rows: &[f16],
        stride: usize,
        xs: &[f32],
        n: usize,
        order: SumOrder,
        out: &mut [f32],
    ) {
        let (_, n_rows) = super::rows_dot_shape(rows.len(), stride, xs.len(), n, out.len());
        if n_rows == 0 {
            return;
        }
        for (x, o) in xs.chunks_exact(n).zip(out.chunks_exact_mut(n_rows)) {
            for (r, o) in o.iter_mut().enumerate() {
                *o = dot_f16_ordered(&rows[r * stride..][..n], x, order);
            }
        }
    }
}

/// [`vec_dots_f16`] over f32 rows, each as [`vec_dot_f32`] (f64 sums, whatever the order: the
/// reference outputs have an f16 cache).
pub fn vec_dots_f32(
    rows: &[f32],
    stride: usize,
    xs: &[f32],
    n: usize,
    _order: SumOrder,
    out: &mut [f32],
) {
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

/// The constants of ggml's `ggml_v_expf` ([`expf_ggml`] and the SIMD exponentials), as bit
/// patterns of the hex floats they are published as: the rounding shifter 0x1.8p23, 1/ln 2,
/// ln 2 in two parts, and the polynomial's coefficients of b⁵ … b¹.
pub(super) const EXP_SHIFT: f32 = f32::from_bits(0x4b40_0000);
pub(super) const EXP_INV_LN2: f32 = f32::from_bits(0x3fb8_aa3b);
pub(super) const EXP_LN2_HI: f32 = f32::from_bits(0x3f31_7200);
pub(super) const EXP_LN2_LO: f32 = f32::from_bits(0x35bf_be8e);
pub(super) const EXP_C: [f32; 5] = [
    f32::from_bits(0x3c07_2010),
    f32::from_bits(0x3d2b_9f17),
    f32::from_bits(0x3e2a_af33),
    f32::from_bits(0x3eff_fedb),
    f32::from_bits(0x3f7f_fff6),
];

/// `e^x` as llama.cpp's AVX-512 `ggml_v_expf` computes it, lane for lane (the Arm optimized
/// routine: `x = n·ln2 + b`, a degree-5 polynomial in `b` scaled by `2^n`; within 1.5 ulp of
/// `e^x`, where libm's `expf` is correctly rounded). Inputs below about -103.97 give 0, above
/// 88.72 infinity, NaN gives NaN.
#[inline(always)]
pub fn expf_ggml(x: f32) -> f32 {
    let z = x.mul_add(EXP_INV_LN2, EXP_SHIFT);
    let n = z - EXP_SHIFT;
    let b = (-n).mul_add(EXP_LN2_LO, (-n).mul_add(EXP_LN2_HI, x));
    let u = b * b;
    let c = EXP_C;
    let j = c[0]
        .mul_add(b, c[1])
        .mul_add(u, c[2].mul_add(b, c[3]))
        .mul_add(u, c[4].mul_add(b, 1.0));
    if n.abs() > 192.0 {
        return if n <= 0.0 { 0.0 } else { f32::INFINITY };
    }
    // `vscalefps`: j · 2^n rounded once (n is an integer here, |n| <= 192; f64 holds the
    // product exactly).
    (f64::from(j) * 2f64.powi(n as i32)) as f32
}

with_fma! {
    /// `x[i] = e^(x[i] - max)` in place, returning the sum: ggml's `ggml_vec_soft_max_f32` on
    /// AVX-512, 16 values at a time through [`expf_ggml`], each 16 summed in f32 as
    /// `_mm512_reduce_add_ps` and added to an f64 total. llama.cpp pads the row with masked
    /// (zero) values to a multiple of 32, so a last partial 16 is summed with zeros.
    pub fn vec_soft_max_f32(x: &mut [f32], max: f32) -> f64 {
        let mut sum = 0.0f64;
        for c in x.chunks_mut(16) {
            let mut v = [0.0f32; 16];
            for (e, xi) in v.iter_mut().zip(c.iter_mut()) {
                *e = expf_ggml(*xi - max);
                *xi = *e;
            }
            sum += f64::from(reduce_add_16(&v));
        }
        sum
    }
}

with_fma! {
    /// SwiGLU in place, `gate[i] = silu(gate[i]) · up[i]` with `silu(x) = x / (1 + e^-x)`:
    /// ggml's `ggml_vec_swiglu_f32` on AVX-512, [`expf_ggml`] for whole 16s and libm's `expf`
    /// for the rest.
    pub fn vec_swiglu_f32(gate: &mut [f32], up: &[f32]) {
        let whole = gate.len() / 16 * 16;
        let (head, tail) = gate.split_at_mut(whole);
        for (g, u) in head.iter_mut().zip(up) {
            *g = *g / (1.0 + expf_ggml(-*g)) * u;
        }
        for (g, u) in tail.iter_mut().zip(&up[whole..]) {
            *g = crate::ops::silu(*g) * u;
        }
    }
}

with_fma! {
    /// RoPE's rotation of the pairs `(x[i], x[i + offset])`, `i = k · step`, by `cos_sin[k]`, as GCC compiles ggml's `rotate_pairs`: the
    /// first product of each output fused with the other, `x0·c - x1·s` as `fma(x0, c,
    /// -(x1·s))` and `x0·s + x1·c` as `fma(x0, s, x1·c)`.
    pub fn rope_pairs(x: &mut [f32], offset: usize, step: usize, cos_sin: &[(f32, f32)]) {
        for (k, &(c, s)) in cos_sin.iter().enumerate() {
            let i = k * step;
            let (x0, x1) = (x[i], x[i + offset]);
            x[i] = x0.mul_add(c, -(x1 * s));
            x[i + offset] = x0.mul_add(s, x1 * c);
        }
    }
}
