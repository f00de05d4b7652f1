//! Ops: the model-agnostic math of a transformer layer (RMSNorm, RoPE, softmax, activations,
//! one attention head over the KV cache). They know nothing about any architecture's graph and
//! allocate nothing; each follows the arithmetic of ggml's CPU op of the same name (sums in f64
//! where ggml sums in `ggml_float`, f16 rounding where ggml stores f16) so results track
//! llama.cpp's closely.

use crate::kernels::SumOrder;
use half::f16;

/// `out = x / sqrt(mean(x²) + eps) * weight` (weight may be absent: plain normalization).
pub fn rms_norm(out: &mut [f32], x: &[f32], weight: Option<&[f32]>, eps: f32) {
    let scale = rms_scale(x, eps);
    match weight {
        Some(w) => {
            for ((o, v), wi) in out.iter_mut().zip(x).zip(w) {
                *o = (v * scale) * wi;
            }
        }
        None => {
            for (o, v) in out.iter_mut().zip(x) {
                *o = v * scale;
            }
        }
    }
}

/// [`rms_norm`] of `x` into itself (QK-norm of one head, Gemma's post-norms).
pub fn rms_norm_in_place(x: &mut [f32], weight: &[f32], eps: f32) {
    let scale = rms_scale(x, eps);
    for (v, wi) in x.iter_mut().zip(weight) {
        *v = (*v * scale) * wi;
    }
}

/// `1 / sqrt(mean(x²) + eps)`, the sum in f64 as ggml's `ggml_float`. ggml adds the squares one
/// after another; here eight running sums take every eighth square (the compiler keeps them
/// in vector registers: one f64 chain of 576 additions was a few percent of prompt time, with
/// the other threads waiting). Each square is an f32, so the f64 sums round only where the
/// squares' exponents span more than 29 bits, and then at 2^-53, far below the f32 the mean
/// is rounded to: the order changes nothing visible.
fn rms_scale(x: &[f32], eps: f32) -> f32 {
    let mut lanes = [0.0f64; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l += (v * v) as f64;
        }
    }
    let mut sum = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
    for v in tail {
        sum += (v * v) as f64;
    }
    let mean = (sum / x.len() as f64) as f32;
    1.0f32 / (mean + eps).sqrt()
}

/// How RoPE pairs the dimensions of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs `(x[2i], x[2i+1])` (ggml mode 0, llama).
    Normal,
    /// Halves `(x[i], x[i + d/2])` (ggml NEOX mode, qwen2, gemma).
    Neox,
}

/// Rotary position embedding parameters of one model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeParams {
    pub style: RopeStyle,
    /// Rotated dimensions per head (`rope.dimension_count`), ≤ head dim.
    pub n_dims: usize,
    pub freq_base: f32,
    /// `1 / factor` for linear scaling, 1 otherwise.
    pub freq_scale: f32,
}

/// Fills `cos_sin` (`n_dims / 2` pairs) with the rotation of position `pos` (negative `pos`
/// rotates back, which the KV-cache shift uses), as
/// `ggml_rope_cache_init` does: `theta_i = freq_scale * pos * base^(-2i/n_dims) / factor_i`.
pub fn rope_cache(
    p: &RopeParams,
    pos: f32,
    freq_factors: Option<&[f32]>,
    cos_sin: &mut [(f32, f32)],
) {
    let theta_scale = p.freq_base.powf(-2.0 / p.n_dims as f32);
    let mut theta = pos;
    for (i, cs) in cos_sin.iter_mut().enumerate().take(p.n_dims / 2) {
        let ff = freq_factors.map_or(1.0, |f| f[i]);
        let t = p.freq_scale * (theta / ff);
        *cs = (t.cos(), t.sin());
        theta *= theta_scale;
    }
}

/// Rotates one head `x` (`head_dim` values) by the precomputed `cos_sin` of its position, with
/// the fused multiply-adds of llama.cpp's build
/// ([`rope_pairs`](crate::kernels::scalar::rope_pairs)).
pub fn rope_apply(style: RopeStyle, n_dims: usize, x: &mut [f32], cos_sin: &[(f32, f32)]) {
    let pairs = &cos_sin[..n_dims / 2];
    match style {
        RopeStyle::Normal => crate::kernels::scalar::rope_pairs(x, 1, 2, pairs),
        RopeStyle::Neox => crate::kernels::scalar::rope_pairs(x, n_dims / 2, 1, pairs),
    }
}

/// In-place softmax as ggml's `soft_max` op computes it: the maximum, the exponentials and
/// their f64 sum by the kernel table's [`SoftMaxExp`](crate::kernels::SoftMaxExp), then one
/// multiply by the sum's inverse.
pub fn softmax(x: &mut [f32], exp_sum: crate::kernels::SoftMaxExp) {
    let max = max_ignoring_nan(x);
    let sum = exp_sum(x, max);
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// SiLU: `x / (1 + e^-x)`.
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// GELU, tanh approximation (ggml's `gelu`).
#[inline]
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const COEF_A: f32 = 0.044715;
    // `1 + A·x·x` is one fused multiply-add in ggml's build (GCC contracts it; the table it
    // fills differs in an entry or two without it).
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (COEF_A * x).mul_add(x, 1.0)).tanh())
}

/// `gate[i] = silu(gate[i]) * up[i]` (SwiGLU).
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = silu(*g) * u;
    }
}

/// GELU as ggml's CPU backend computes it (`GGML_GELU_FP16`): 0 at or below -10, identity at or
/// above 10, else the input rounded to f16 looked up in a 64k-entry table of [`gelu_tanh`]
/// rounded to f16, as ggml's `ggml_table_gelu_f16` (computing `tanh` per element was a third
/// of Gemma's prompt time). The table is built on first use; [`prepare_gelu`] builds it ahead.
#[inline]
pub fn gelu_tanh_f16(x: f32) -> f32 {
    gelu_clamped(x).unwrap_or_else(|| {
        let h = f16::from_f32(x).to_bits();
        f16::from_bits(gelu_f16_table()[usize::from(h)]).to_f32()
    })
}

/// ggml's GELU outside the table's range: 0 at or below -10, `x` at or above 10; `None`
/// between them (NaN included), where the table answers.
#[inline]
fn gelu_clamped(x: f32) -> Option<f32> {
    if x <= -10.0 {
        Some(0.0)
    } else if x >= 10.0 {
        Some(x)
    } else {
        None
    }
}

/// Entry `h`: [`gelu_tanh`] of the f16 with bits `h`, rounded to f16 (bits).
fn gelu_f16_table() -> &'static [u16] {
    static TABLE: std::sync::OnceLock<Vec<u16>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|h| f16::from_f32(gelu_tanh(f16::from_bits(h).to_f32())).to_bits())
            .collect()
    })
}

/// Builds the GELU table now (at load), so the first token does not allocate it.
pub fn prepare_gelu() {
    gelu_f16_table();
}

/// `gate[i] = gelu(gate[i]) * up[i]` (GeGLU, Gemma's FFN), with ggml's f16-rounded GELU
/// ([`gelu_tanh_f16`]) as `ggml_geglu` uses it.
///
/// Runs in tiles of [`GELU_TILE`]: the f32→f16 and f16→f32 conversions go through `half`'s
/// slice conversions (F16C / FP16 where present), so only the table lookup is per element.
pub fn geglu(gate: &mut [f32], up: &[f32]) {
    use half::slice::HalfFloatSliceExt;
    let table = gelu_f16_table();
    let mut h = [f16::ZERO; GELU_TILE];
    let mut y = [0f32; GELU_TILE];
    for (g, u) in gate.chunks_mut(GELU_TILE).zip(up.chunks(GELU_TILE)) {
        let n = g.len().min(u.len());
        let (g, u, h, y) = (&mut g[..n], &u[..n], &mut h[..n], &mut y[..n]);
        h.convert_from_f32_slice(g);
        for v in h.iter_mut() {
            *v = f16::from_bits(table[usize::from(v.to_bits())]);
        }
        h.convert_to_f32_slice(y);
        for ((g, &u), &y) in g.iter_mut().zip(u).zip(y.iter()) {
            *g = gelu_clamped(*g).unwrap_or(y) * u;
        }
    }
}

/// Elements per tile of [`geglu`].
const GELU_TILE: usize = 64;

/// The index of the largest value, the lowest index among equal ones; NaN counts as -inf
/// (index 0 if no value is larger than -inf). Greedy decoding's pick. It scans blocks of
/// [`ARGMAX_BLOCK`]: a block's maximum is a lane-parallel reduction the compiler vectorizes,
/// and only a block that beats the best so far is searched for its position (a serial scan
/// of 262144 logits was ~1% of a Gemma-3 token).
pub fn argmax(x: &[f32]) -> usize {
    let (mut best_v, mut best_i) = (f32::NEG_INFINITY, 0);
    let mut blocks = x.chunks_exact(ARGMAX_BLOCK);
    for (b, block) in (&mut blocks).enumerate() {
        let block_max = max_ignoring_nan(block);
        if block_max > best_v {
            best_v = block_max;
            // The first value equal to the block's maximum is the lowest index of the best.
            best_i = b * ARGMAX_BLOCK + block.iter().position(|&v| v == block_max).unwrap_or(0);
        }
    }
    let tail = x.len() - blocks.remainder().len();
    for (k, &v) in blocks.remainder().iter().enumerate() {
        if v > best_v {
            (best_v, best_i) = (v, tail + k);
        }
    }
    best_i
}

/// Values per block of [`argmax`].
const ARGMAX_BLOCK: usize = 64;

/// The largest value of `x`, NaN counting as -inf (-inf for an empty slice). Sixteen running
/// maxima the compiler keeps in vector registers, then one reduction.
pub fn max_ignoring_nan(x: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut m = [f32::NEG_INFINITY; LANES];
    let mut parts = x.chunks_exact(LANES);
    for part in &mut parts {
        for j in 0..LANES {
            // Written so it is a max instruction: a NaN in `part` never wins.
            m[j] = if part[j] > m[j] { part[j] } else { m[j] };
        }
    }
    let tail = parts
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &v| if v > a { v } else { a });
    m.iter().fold(tail, |a, &v| if v > a { v } else { a })
}

/// Logit soft-capping: `x = cap · tanh(x / cap)`, in ggml's order (scale by `1/cap`, tanh,
/// scale by `cap`).
pub fn softcap(x: &mut [f32], cap: f32) {
    let inv = 1.0 / cap;
    for v in x.iter_mut() {
        *v = (*v * inv).tanh() * cap;
    }
}

/// An element type the KV cache can store.
pub trait KvElem: crate::quant::Block + Send + Sync {
    /// The ggml type whose row dot the kernels provide for it.
    const GGML_TYPE: crate::GgmlType;
    fn from_f32(v: f32) -> Self;
    fn to_f32(self) -> f32;
    /// Rounds every value to this type and back (what storing it in the cache would keep).
    fn round_f32s(x: &mut [f32]);
    /// `dst[i] = from_f32(src[i])` over the shorter of the two, converting many at once.
    fn from_f32s(src: &[f32], dst: &mut [Self]);
    /// The kernel table's multi-row dot over rows of this type.
    fn rows_dot(k: &crate::kernels::Kernels) -> crate::kernels::RowsDot<Self>;
}

impl KvElem for f16 {
    const GGML_TYPE: crate::GgmlType = crate::GgmlType::F16;
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn round_f32s(x: &mut [f32]) {
        use half::slice::HalfFloatSliceExt;
        // Through a stack tile with half's slice conversions (F16C / FP16 where present: the
        // same round-to-nearest-even as `from_f32`, without a feature check per value).
        let mut tile = [f16::ZERO; 64];
        for c in x.chunks_mut(64) {
            let t = &mut tile[..c.len()];
            t.convert_from_f32_slice(c);
            t.convert_to_f32_slice(c);
        }
    }
    fn from_f32s(src: &[f32], dst: &mut [Self]) {
        use half::slice::HalfFloatSliceExt;
        let n = src.len().min(dst.len());
        // F16C / FP16 where present, the same rounding as `from_f32`.
        dst[..n].convert_from_f32_slice(&src[..n]);
    }
    fn rows_dot(k: &crate::kernels::Kernels) -> crate::kernels::RowsDot<Self> {
        k.rows_dot_f16()
    }
}

impl KvElem for f32 {
    const GGML_TYPE: crate::GgmlType = crate::GgmlType::F32;
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    fn round_f32s(_: &mut [f32]) {}
    fn from_f32s(src: &[f32], dst: &mut [Self]) {
        let n = src.len().min(dst.len());
        dst[..n].copy_from_slice(&src[..n]);
    }
    fn rows_dot(k: &crate::kernels::Kernels) -> crate::kernels::RowsDot<Self> {
        k.rows_dot_f32()
    }
}

/// Query heads [`attention`] takes at once, at most: one kernel call then serves up to this
/// many heads of a GQA group (the kernels' register budget), and the scratch holds as many.
pub const ATTN_MAX_HEADS: usize = 4;

/// One thread's attention scratch, allocated once for a context length and head size: the
/// scores, then probabilities, of up to [`ATTN_MAX_HEADS`] heads `[ATTN_MAX_HEADS][n_ctx]` and
/// their queries `[ATTN_MAX_HEADS][head_dim]`, f32 (rounded to the cache's element type where
/// ggml rounds them).
#[derive(Clone, Debug, Default)]
pub struct AttnScratch {
    scores: Vec<f32>,
    q: Vec<f32>,
}

impl AttnScratch {
    /// The scratch for contexts up to `n_ctx` and heads of `head_dim`, for any cache element
    /// type (`_elem`: both types share the f32 buffers).
    pub fn new(n_ctx: usize, head_dim: usize, _elem: crate::GgmlType) -> AttnScratch {
        AttnScratch {
            scores: vec![0.0; ATTN_MAX_HEADS * n_ctx],
            q: vec![0.0; ATTN_MAX_HEADS * head_dim],
        }
    }

    /// Heap bytes of one thread's scratch (`_elem_bytes`: the same for every element type).
    pub fn bytes_for(n_ctx: usize, head_dim: usize, _elem_bytes: usize) -> usize {
        4 * ATTN_MAX_HEADS * (n_ctx + head_dim)
    }
}

/// The KV cache of one layer as attention reads it: keys row-major `[n_ctx][kv_dim]`, values
/// transposed `[kv_dim][n_ctx]` (as llama.cpp stores them) so both products are row dots.
pub struct LayerCache<'a, T: KvElem> {
    pub k: &'a [T],
    pub v_t: &'a [T],
    pub kv_dim: usize,
    pub n_ctx: usize,
}

/// Attention of `n_heads = q.len() / head_dim` query heads (at most [`ATTN_MAX_HEADS`]) that
/// share KV head `kv_head`, for one query position: per head `out = softmax(scale · q·Kᵀ) · V`
/// over the cached positions `kv` (`0..=pos` for causal attention; a sliding window starts
/// later, which is what ggml's `-inf` mask over the other positions amounts to). `q` and `out`
/// are `[n_heads][head_dim]`; `single` is `None` for a position of a prompt batch of two or
/// more, `Some(kv_pad)` for a lone one, whose weighted sum of values llama.cpp takes over the
/// KV length padded to a multiple of `kv_pad` (it sums the two in other orders, see
/// [`SumOrder`]). The queries and the probabilities are rounded to the cache's
/// element type before their products, as ggml's f16 KV path does. Both products are one call
/// each of the kernel table's multi-row dot for that type, for all heads at once: the keys `kv`
/// against the queries, then the head's `head_dim` transposed value rows (their columns `kv`)
/// against the probabilities; each cache row is read once for the group.
#[allow(clippy::too_many_arguments)]
pub fn attention<T: KvElem>(
    q: &[f32],
    head_dim: usize,
    cache: &LayerCache<'_, T>,
    kv_head: usize,
    kv: std::ops::Range<usize>,
    scale: f32,
    single: Option<usize>,
    kern: &crate::kernels::Kernels,
    scratch: &mut AttnScratch,
    out: &mut [f32],
) {
    let dots = T::rows_dot(kern);
    let hd = head_dim;
    let n_heads = q.len() / hd;
    assert!(
        n_heads <= ATTN_MAX_HEADS && n_heads * hd == q.len() && out.len() == q.len(),
        "attention of {} values as heads of {hd} into {}",
        q.len(),
        out.len()
    );
    assert!(!kv.is_empty(), "attention over no cached position");
    let q_r = &mut scratch.q[..q.len()];
    q_r.copy_from_slice(q);
    T::round_f32s(q_r);
    let n_kv = kv.len();
    let scores = &mut scratch.scores[..n_heads * n_kv];
    let koff = kv_head * hd;
    // [n_heads][n_kv]
    // llama.cpp's order of the sums (followed by the scalar kernels): a prompt batch's by
    // tinyBLAS, a single token's by `ggml_vec_dot_f16` over the head, then over the padded KV
    // length.
    let (k_order, v_order) = match single {
        None => (SumOrder::Batch, SumOrder::Batch),
        Some(kv_pad) => (
            SumOrder::Single { padded: hd },
            SumOrder::Single {
                padded: n_kv.next_multiple_of(kv_pad.max(1)),
            },
        ),
    };
    dots(
        &cache.k[kv.start * cache.kv_dim + koff..],
        cache.kv_dim,
        q_r,
        hd,
        k_order,
        scores,
    );
    for s in scores.chunks_exact_mut(n_kv) {
        for v in s.iter_mut() {
            *v *= scale;
        }
        softmax(s, kern.soft_max());
        T::round_f32s(s);
    }
    dots(
        &cache.v_t[koff * cache.n_ctx + kv.start..],
        cache.n_ctx,
        scores,
        n_kv,
        v_order,
        out,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_table_equals_the_direct_computation() {
        for h in 0..=u16::MAX {
            let x = f16::from_bits(h).to_f32();
            if !(x > -10.0 && x < 10.0) {
                continue;
            }
            let direct = f16::from_f32(gelu_tanh(x)).to_f32();
            assert_eq!(gelu_tanh_f16(x).to_bits(), direct.to_bits(), "x = {x}");
        }
        assert_eq!(gelu_tanh_f16(-10.5), 0.0);
        assert_eq!(gelu_tanh_f16(12.25), 12.25);
    }

    /// The eight-lane f64 sum gives ggml's one-chain result bit for bit, on rows of model-like
    /// widths with magnitudes spread over many octaves and a few outliers.
    #[test]
    fn rms_scale_equals_ggml_sequential_sum() {
        let mut seed = 0x2545_f491_u32;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for row in 0..3000 {
            let n = [576, 640, 1536, 2048, 37][row % 5];
            let x: Vec<f32> = (0..n)
                .map(|_| {
                    let r = next();
                    let mag = f32::from_bits(((r >> 8) & 0x7f_ffff) | 0x3f80_0000) - 1.0;
                    let octave = (r % 24) as i32 - 12 + if r % 97 == 0 { 10 } else { 0 };
                    let v = mag * 2f32.powi(octave);
                    if r & 1 == 1 {
                        -v
                    } else {
                        v
                    }
                })
                .collect();
            let mut sum = 0.0f64;
            for v in &x {
                sum += (v * v) as f64;
            }
            let mean = (sum / n as f64) as f32;
            let want = 1.0f32 / (mean + 1e-5).sqrt();
            assert_eq!(rms_scale(&x, 1e-5).to_bits(), want.to_bits(), "row {row}");
        }
    }

    #[test]
    fn rms_norm_matches_naive() {
        let x: Vec<f32> = (0..64).map(|i| (i as f32 - 30.0) * 0.37).collect();
        let w: Vec<f32> = (0..64).map(|i| 1.0 + i as f32 * 0.01).collect();
        let mut out = vec![0.0; 64];
        rms_norm(&mut out, &x, Some(&w), 1e-5);
        let ms: f64 = x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / 64.0;
        for i in 0..64 {
            let want = x[i] as f64 / (ms + 1e-5).sqrt() * w[i] as f64;
            assert!((out[i] as f64 - want).abs() < 1e-5 * want.abs().max(1.0));
        }
    }

    fn naive_rope(style: RopeStyle, x: &[f32], pos: usize, base: f32) -> Vec<f32> {
        let d = x.len();
        let mut y = x.to_vec();
        for i in 0..d / 2 {
            let theta = pos as f64 * (base as f64).powf(-2.0 * i as f64 / d as f64);
            let (c, s) = (theta.cos(), theta.sin());
            let (a, b) = match style {
                RopeStyle::Normal => (2 * i, 2 * i + 1),
                RopeStyle::Neox => (i, i + d / 2),
            };
            y[a] = (x[a] as f64 * c - x[b] as f64 * s) as f32;
            y[b] = (x[a] as f64 * s + x[b] as f64 * c) as f32;
        }
        y
    }

    #[test]
    fn rope_both_styles_match_naive() {
        let x: Vec<f32> = (0..64)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.25)
            .collect();
        for style in [RopeStyle::Normal, RopeStyle::Neox] {
            for pos in [0usize, 1, 17, 500] {
                let p = RopeParams {
                    style,
                    n_dims: 64,
                    freq_base: 10000.0,
                    freq_scale: 1.0,
                };
                let mut cs = vec![(0.0, 0.0); 32];
                rope_cache(&p, pos as f32, None, &mut cs);
                let mut y = x.clone();
                rope_apply(style, 64, &mut y, &cs);
                let want = naive_rope(style, &x, pos, 10000.0);
                for i in 0..64 {
                    assert!((y[i] - want[i]).abs() < 2e-3, "{style:?} pos {pos} i {i}");
                }
            }
        }
    }

    #[test]
    fn softmax_sums_to_one_and_orders() {
        let mut x = vec![1.0, 2.0, 3.0, -1e9];
        softmax(&mut x, crate::kernels::Kernels::scalar().soft_max());
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[2] > x[1] && x[1] > x[0] && x[3] == 0.0);
        let e: Vec<f64> = [1.0f64, 2.0, 3.0].iter().map(|v| v.exp()).collect();
        let s: f64 = e.iter().sum();
        assert!((x[0] as f64 - e[0] / s).abs() < 1e-6);
    }

    #[test]
    fn rms_norm_in_place_equals_rms_norm() {
        let x: Vec<f32> = (0..256)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.03)
            .collect();
        let w: Vec<f32> = (0..256).map(|i| 0.5 + (i % 7) as f32 * 0.3).collect();
        let mut want = vec![0.0; 256];
        rms_norm(&mut want, &x, Some(&w), 1e-6);
        let mut got = x.clone();
        rms_norm_in_place(&mut got, &w, 1e-6);
        assert_eq!(got, want);
    }

    #[test]
    fn gelu_tanh_f16_tracks_exact_gelu_and_ggml_clamps() {
        for i in -1200..=1200 {
            let x = i as f32 * 0.01;
            let xd = x as f64;
            let exact = 0.5
                * xd
                * (1.0 + (0.797_884_560_802_865_4 * xd * (1.0 + 0.044715 * xd * xd)).tanh());
            let got = gelu_tanh_f16(x) as f64;
            // Two f16 roundings: the input (relative 2^-11, times gelu's slope ≤ 1.13) and
            // the output (relative 2^-11).
            let tol = 1.2e-3 * xd.abs().max(exact.abs()) + 1e-6;
            assert!((got - exact).abs() <= tol, "x {x}: {got} vs {exact}");
        }
        assert_eq!(gelu_tanh_f16(-10.0), 0.0);
        assert_eq!(gelu_tanh_f16(-25.0), 0.0);
        assert_eq!(gelu_tanh_f16(10.0), 10.0);
        assert_eq!(gelu_tanh_f16(12.345), 12.345);
        // Inside the table range the result is an f16 value computed from an f16 input.
        let y = gelu_tanh_f16(1.2345);
        assert_eq!(f16::from_f32(y).to_f32(), y);
        assert_eq!(y, gelu_tanh_f16(f16::from_f32(1.2345).to_f32()));
    }

    #[test]
    fn geglu_multiplies_gelu_of_gate_by_up() {
        let mut gate = vec![-11.0, -1.0, 0.0, 0.5, 3.0, 11.0];
        let up = vec![2.0, 3.0, 4.0, -1.0, 0.5, 2.0];
        let want: Vec<f32> = gate
            .iter()
            .zip(&up)
            .map(|(g, u)| gelu_tanh_f16(*g) * u)
            .collect();
        geglu(&mut gate, &up);
        assert_eq!(gate, want);
        assert_eq!(gate[0], 0.0);
        assert_eq!(gate[5], 22.0);
    }

    #[test]
    fn geglu_equals_the_per_element_lookup_across_tiles_and_bounds() {
        // Values across the table's range, both clamps, NaN-free; a length that ends mid-tile.
        let gate: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.0237).collect();
        let up: Vec<f32> = (0..1000).map(|i| ((i * 7919) % 13) as f32 - 6.5).collect();
        let mut got = gate.clone();
        geglu(&mut got, &up);
        for i in 0..gate.len() {
            let want = gelu_tanh_f16(gate[i]) * up[i];
            assert_eq!(
                got[i].to_bits(),
                want.to_bits(),
                "element {i} ({})",
                gate[i]
            );
        }
    }

    /// [`argmax`] one value at a time: its reference.
    fn argmax_serial(x: &[f32]) -> usize {
        let (mut best_v, mut best_i) = (f32::NEG_INFINITY, 0);
        for (i, &v) in x.iter().enumerate() {
            if v > best_v {
                (best_v, best_i) = (v, i);
            }
        }
        best_i
    }

    proptest::proptest! {
        #[test]
        fn argmax_is_the_first_largest_with_nan_as_minus_infinity(
            x in proptest::collection::vec(
                proptest::prop_oneof![
                    4 => proptest::strategy::Strategy::prop_map(-8i32..8, |v| v as f32),
                    1 => proptest::num::f32::ANY,
                    1 => proptest::strategy::Just(f32::NAN),
                    1 => proptest::strategy::Just(f32::NEG_INFINITY),
                ],
                0..300,
            )
        ) {
            let want = x
                .iter()
                .enumerate()
                .fold((f32::NEG_INFINITY, 0), |(bv, bi), (i, &v)| {
                    let v = if v.is_nan() { f32::NEG_INFINITY } else { v };
                    if v > bv { (v, i) } else { (bv, bi) }
                })
                .1;
            proptest::prop_assert_eq!(argmax(&x), want);
            proptest::prop_assert_eq!(argmax_serial(&x), want);
        }
    }

    #[test]
    fn softcap_bounds_and_keeps_small_values() {
        let mut x = vec![-1000.0, -30.0, -0.01, 0.0, 0.01, 30.0, 1000.0];
        softcap(&mut x, 30.0);
        for (v, x0) in x
            .iter()
            .zip([-1000.0f64, -30.0, -0.01, 0.0, 0.01, 30.0, 1000.0])
        {
            let want = 30.0 * (x0 / 30.0).tanh();
            assert!((*v as f64 - want).abs() < 1e-4, "{v} vs {want}");
            assert!(v.abs() <= 30.0);
        }
    }

    /// ns per attention head (SmolLM2's shape: head dim 64, KV width 192) at several context
    /// lengths, best of many runs, for the detected kernel path, with 1 to `ATTN_MAX_HEADS`
    /// heads of a GQA group per call.
    /// `cargo test --release -p edgellm-runtime --lib bench_attention -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn bench_attention() {
        let (hd, kv_dim, n_ctx) = (64, 192, 1024);
        let k: Vec<f16> = (0..n_ctx * kv_dim)
            .map(|i| f16::from_f32(((i * 5 % 11) as f32 - 5.0) * 0.1))
            .collect();
        let v_t: Vec<f16> = (0..kv_dim * n_ctx)
            .map(|i| f16::from_f32(((i * 3 % 7) as f32 - 3.0) * 0.2))
            .collect();
        let q: Vec<f32> = (0..4 * hd)
            .map(|i| ((i % 61) as f32 - 31.5) * 0.03)
            .collect();
        let cache = LayerCache {
            k: &k,
            v_t: &v_t,
            kv_dim,
            n_ctx,
        };
        let mut scratch = AttnScratch::new(n_ctx, hd, crate::GgmlType::F16);
        let mut out = vec![0.0; 4 * hd];
        let kern = crate::kernels::Kernels::detect();
        for n_kv in [16usize, 64, 128, 256, 512, 1024] {
            let mut line = format!("{} n_kv {n_kv:5}, ns per head:", kern.path());
            for heads in 1..=ATTN_MAX_HEADS {
                let reps = 50_000 / n_kv;
                let mut best = f64::MAX;
                for _ in 0..40 {
                    let t0 = std::time::Instant::now();
                    for _ in 0..reps {
                        attention(
                            &q[..heads * hd],
                            hd,
                            &cache,
                            1,
                            0..n_kv,
                            0.125,
                            Some(256),
                            &kern,
                            &mut scratch,
                            &mut out[..heads * hd],
                        );
                        std::hint::black_box(&mut out);
                    }
                    let ns = t0.elapsed().as_secs_f64() * 1e9 / (reps * heads) as f64;
                    best = best.min(ns);
                }
                line += &format!("  {heads}/call {best:6.0}");
            }
            println!("{line}");
        }
    }

    /// Every kernel path this CPU runs against a naive f64 attention, on a toy shape and on
    /// SmolLM2's (head dim 64 of a KV width 192, groups of 1, 3 and 4 heads), causal and
    /// sliding-window ranges whose lengths are no multiple of the vector width. The tolerance
    /// covers the f16 rounding of q and of the probabilities.
    #[test]
    fn attention_matches_naive_f64() {
        for (hd, n_ctx, kv_dim, kv_head, heads, ranges) in [
            (8, 7, 16, 1, 1, vec![0..5usize, 2..5]),
            (8, 7, 16, 1, 2, vec![0..5usize, 2..5]),
            (64, 45, 192, 2, 1, vec![0..1, 0..37, 9..37, 0..45]),
            (64, 45, 192, 2, 3, vec![0..1, 0..37, 9..37, 0..45]),
            (64, 45, 192, 0, 4, vec![0..2, 0..45]),
        ] {
            let k: Vec<f16> = (0..n_ctx * kv_dim)
                .map(|i| f16::from_f32(((i * 5 % 11) as f32 - 5.0) * 0.1))
                .collect();
            let v_t: Vec<f16> = (0..kv_dim * n_ctx)
                .map(|i| f16::from_f32(((i * 3 % 7) as f32 - 3.0) * 0.2))
                .collect();
            let q: Vec<f32> = (0..heads * hd)
                .map(|i| ((i * 7 % 9) as f32 - 3.5) * 0.3)
                .collect();
            let cache = LayerCache {
                k: &k,
                v_t: &v_t,
                kv_dim,
                n_ctx,
            };
            let mut scratch = AttnScratch::new(n_ctx, hd, crate::GgmlType::F16);
            for path in crate::kernels::KernelPath::ALL {
                if !(path.is_implemented() && path.is_supported()) {
                    continue;
                }
                let kern = crate::kernels::Kernels::new(path).expect("supported path");
                for kv in &ranges {
                    let mut out = vec![0.0; heads * hd];
                    let scale = 0.5;
                    attention(
                        &q,
                        hd,
                        &cache,
                        kv_head,
                        kv.clone(),
                        scale,
                        (kv.len() % 2 == 1).then_some(32),
                        &kern,
                        &mut scratch,
                        &mut out,
                    );
                    for h in 0..heads {
                        let qh = &q[h * hd..(h + 1) * hd];
                        let mut s: Vec<f64> = kv
                            .clone()
                            .map(|j| {
                                (0..hd)
                                    .map(|d| {
                                        qh[d] as f64 * k[j * kv_dim + kv_head * hd + d].to_f64()
                                    })
                                    .sum::<f64>()
                                    * scale as f64
                            })
                            .collect();
                        let m = s.iter().cloned().fold(f64::MIN, f64::max);
                        let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                        for x in s.iter_mut() {
                            *x = (*x - m).exp() / z;
                        }
                        for d in 0..hd {
                            let want: f64 = kv
                                .clone()
                                .enumerate()
                                .map(|(i, j)| s[i] * v_t[(kv_head * hd + d) * n_ctx + j].to_f64())
                                .sum();
                            let got = out[h * hd + d] as f64;
                            assert!(
                                (got - want).abs() < 3e-3,
                                "{path} hd {hd} heads {heads} {kv:?} h {h} d {d}: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}
