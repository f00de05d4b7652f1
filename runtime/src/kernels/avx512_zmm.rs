//! 512-bit AVX-512 row dots for one-token products (decode), where the 256-bit kernels of
//! [`avx512`](super::avx512) run out of instructions before memory runs out of bandwidth:
//! four 32-value blocks per register. The weight blocks are gathered from their packed layout
//! (Q4_0: 18 bytes each) with one word permute of two loads; the scales with one word permute
//! and one conversion for four blocks. The activation row is rearranged into the same groups
//! once per matrix product ([`prepare_q8_0`]), not once per pair of weight rows.
//! A row's last `n % 4` blocks go through the same code with masked loads (bytes past the row
//! read as zeros, which add nothing), so no read leaves the row.
//!
//! The sums are in their own order (lanes of four blocks, then a tree reduction): within the
//! tolerance of the x86 SIMD paths, not the scalar kernels' bits.
//!
//! Every `unsafe fn` here requires AVX512F, AVX512BW, AVX512VL and AVX512-VNNI (and the
//! AVX2/FMA/F16C the path implies); the safe entries are reachable only through a `Kernels`
//! built for the `Avx512` path after its `is_supported` check.

use std::arch::x86_64::*;

use crate::quant::blocks::{BlockQ4_0, BlockQ8_0};

/// Bytes of one prepared activation group ([`ActQuad`] stored: the first halves' quants, the
/// second halves', the 16 lane scales as f32 and the 16 lane offsets as i32).
const QUAD_BYTES: usize = 256;

/// Bytes [`prepare_q8_0`] writes for an activation row of `act_bytes` bytes of Q8_0 blocks
/// (`64 · ceil(n / 4) · 4 <= 2 · 34 · n + 192` for `n` blocks: within the room
/// [`act_scratch_bytes`](super::matmul::act_scratch_bytes) leaves).
pub(super) fn prepared_q8_0_bytes(act_bytes: usize) -> usize {
    (act_bytes / size_of::<BlockQ8_0>()).div_ceil(4) * QUAD_BYTES
}

/// Stores a Q8_0 activation row as [`ActQuad`] groups of four blocks (the last padded with
/// zeros) into `out` ([`prepared_q8_0_bytes`] long; nothing is written if the sizes do not
/// fit), so that every row dot of a matrix product reads them without rearranging.
pub(super) fn prepare_q8_0(act: &[u8], out: &mut [u8]) {
    let Ok(y) = crate::quant::blocks::<BlockQ8_0>(act) else {
        return;
    };
    if out.len() < y.len().div_ceil(4) * QUAD_BYTES {
        return;
    }
    // SAFETY: this entry is stored in a kernel table only for the `Avx512` path, after its
    // `is_supported` check of the features `store_quads` enables.
    unsafe { store_quads(y, out) }
}

/// The work of [`prepare_q8_0`].
///
/// # Safety
/// The module's features must be available; `out` must hold `y.len().div_ceil(4)` groups.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn store_quads(y: &[BlockQ8_0], out: &mut [u8]) {
    let (yq, yt) = y.as_chunks::<4>();
    let (groups, _) = out.as_chunks_mut::<QUAD_BYTES>();
    let store = |g: &mut [u8; QUAD_BYTES], a: ActQuad| {
        let p = g.as_mut_ptr();
        // SAFETY: four 64-byte stores into the group's 256 bytes; the features are the
        // caller's contract.
        unsafe {
            _mm512_storeu_si512(p.cast(), a.lo);
            _mm512_storeu_si512(p.add(64).cast(), a.hi);
            _mm512_storeu_ps(p.add(128).cast(), a.d);
            _mm512_storeu_si512(p.add(192).cast(), a.off8);
        }
    };
    let mut groups = groups.iter_mut();
    // SAFETY: the features are the caller's contract.
    unsafe {
        for (yq, g) in yq.iter().zip(&mut groups) {
            store(g, act_quad(yq));
        }
        if let (false, Some(g)) = (yt.is_empty(), groups.next()) {
            store(g, act_quad_tail(yt));
        }
    }
}

/// A stored [`ActQuad`] group.
///
/// # Safety
/// The module's features must be available.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn load_quad(g: &[u8; QUAD_BYTES]) -> ActQuad {
    let p = g.as_ptr();
    // SAFETY: four 64-byte loads from the group's 256 bytes.
    unsafe {
        ActQuad {
            lo: _mm512_loadu_si512(p.cast()),
            hi: _mm512_loadu_si512(p.add(64).cast()),
            d: _mm512_loadu_ps(p.add(128).cast()),
            off8: _mm512_loadu_si512(p.add(192).cast()),
        }
    }
}

/// The Q4_0 weight row `w` against a prepared activation row `a`, both as bytes (NaN if they
/// are not whole Q4_0 blocks and groups for them).
pub(super) fn row_dot_q4_0_prepared(w: &[u8], a: &[u8]) -> f32 {
    let (Ok(x), (groups, [])) = (
        crate::quant::blocks::<BlockQ4_0>(w),
        a.as_chunks::<QUAD_BYTES>(),
    ) else {
        return f32::NAN;
    };
    if groups.len() < x.len().div_ceil(4) {
        return f32::NAN;
    }
    // SAFETY: stored in a kernel table only for the `Avx512` path, after its feature check.
    unsafe { vec_dot_q4_0_prepared(x, groups) }
}

/// [`row_dot_q4_0_prepared`] of two weight rows.
pub(super) fn row_dot2_q4_0_prepared(w0: &[u8], w1: &[u8], a: &[u8]) -> [f32; 2] {
    let (Ok(x0), Ok(x1), (groups, [])) = (
        crate::quant::blocks::<BlockQ4_0>(w0),
        crate::quant::blocks::<BlockQ4_0>(w1),
        a.as_chunks::<QUAD_BYTES>(),
    ) else {
        return [f32::NAN; 2];
    };
    if x0.len() != x1.len() || groups.len() < x0.len().div_ceil(4) {
        return [f32::NAN; 2];
    }
    // SAFETY: as in `row_dot_q4_0_prepared`.
    unsafe { vec_dot2_q4_0_prepared(x0, x1, groups) }
}

/// Bytes of a Q4_0 block: the f16 scale, then 16 bytes of nibbles.
const Q4_0_BYTES: usize = 18;

/// Word indices (into two 64-byte loads from a group's first block) of the four blocks' nibble
/// words: output word `j` is word `j % 8` of block `j / 8`'s nibbles, which start at word
/// `9k + 1`.
const Q4_0_NIBBLE_WORDS: [i16; 32] = {
    let mut idx = [0i16; 32];
    let mut j = 0;
    while j < 32 {
        idx[j] = (9 * (j / 8) + 1 + j % 8) as i16;
        j += 1;
    }
    idx
};

/// Word indices of the four blocks' scales, each repeated for the block's four i32 lanes.
const Q4_0_SCALE_WORDS: [i16; 32] = {
    let mut idx = [0i16; 32];
    let mut j = 0;
    while j < 16 {
        idx[j] = (9 * (j / 4)) as i16;
        j += 1;
    }
    idx
};

/// One group (up to four blocks) of activations: the quants' first halves of each block in
/// 16-byte lanes, their second halves, every lane's scale (f32, four lanes per block) and the
/// Q4_0 offset `8 · Σ y` per i32 lane. Missing blocks are zeros.
struct ActQuad {
    lo: __m512i,
    hi: __m512i,
    d: __m512,
    off8: __m512i,
}

/// [`ActQuad`] of four activation blocks' quants (`q[k]`, 32 bytes each) and scales (f16 bits).
///
/// # Safety
/// The module's features must be available.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn act_quad_of(q: [__m256i; 4], d: [i16; 4]) -> ActQuad {
    let q01 = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(q[0]), q[1]);
    let q23 = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(q[2]), q[3]);
    let lo = _mm512_permutex2var_epi64(q01, _mm512_setr_epi64(0, 1, 4, 5, 8, 9, 12, 13), q23);
    let hi = _mm512_permutex2var_epi64(q01, _mm512_setr_epi64(2, 3, 6, 7, 10, 11, 14, 15), q23);
    let d4 = _mm_cvtph_ps(_mm_setr_epi16(d[0], d[1], d[2], d[3], 0, 0, 0, 0));
    let d = _mm512_permutexvar_ps(
        _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
        _mm512_castps128_ps512(d4),
    );
    let eight = _mm512_set1_epi8(8);
    let off8 = _mm512_dpbusd_epi32(
        _mm512_dpbusd_epi32(_mm512_setzero_si512(), eight, lo),
        eight,
        hi,
    );
    ActQuad { lo, hi, d, off8 }
}

/// Four whole activation blocks as an [`ActQuad`].
///
/// # Safety
/// The module's features must be available.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn act_quad(y: &[BlockQ8_0; 4]) -> ActQuad {
    // SAFETY: each load reads one block's 32 quants; the features are the caller's contract.
    unsafe {
        let q = |k: usize| _mm256_loadu_si256(y[k].qs.as_ptr().cast());
        let d = |k: usize| y[k].d.to_bits() as i16;
        act_quad_of([q(0), q(1), q(2), q(3)], [d(0), d(1), d(2), d(3)])
    }
}

/// The last 1 to 3 activation blocks as an [`ActQuad`], zeros for the missing ones.
///
/// # Safety
/// The module's features must be available.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn act_quad_tail(y: &[BlockQ8_0]) -> ActQuad {
    // SAFETY: each load reads one block of `y`; the features are the caller's contract.
    unsafe {
        let q = |k: usize| {
            y.get(k).map_or(_mm256_setzero_si256(), |b| {
                _mm256_loadu_si256(b.qs.as_ptr().cast())
            })
        };
        let d = |k: usize| y.get(k).map_or(0, |b| b.d.to_bits() as i16);
        act_quad_of([q(0), q(1), q(2), q(3)], [d(0), d(1), d(2), d(3)])
    }
}

/// Adds one group of a Q4_0 row, four blocks loaded as `w0` (their first 64 bytes) and `w1`
/// (the rest, zeros after), against `a` to `acc`.
///
/// # Safety
/// The module's features must be available.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q4_0_quad(w0: __m512i, w1: __m512i, a: &ActQuad, acc: __m512) -> __m512 {
    // SAFETY: register operations (the index tables are constants); the features are the
    // caller's contract.
    unsafe {
        let nib_idx = _mm512_loadu_si512(Q4_0_NIBBLE_WORDS.as_ptr().cast());
        let nib = _mm512_permutex2var_epi16(w0, nib_idx, w1);
        let mask = _mm512_set1_epi8(0x0F);
        let lo = _mm512_and_si512(nib, mask);
        let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(nib), mask);
        let dot = _mm512_dpbusd_epi32(
            _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, a.lo),
            hi,
            a.hi,
        );
        let q = _mm512_cvtepi32_ps(_mm512_sub_epi32(dot, a.off8));
        let d_idx = _mm512_loadu_si512(Q4_0_SCALE_WORDS.as_ptr().cast());
        let wd = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(d_idx, w0)));
        _mm512_fmadd_ps(_mm512_mul_ps(wd, a.d), q, acc)
    }
}

/// The two loads of [`q4_0_quad`] for four whole blocks.
///
/// # Safety
/// The module's features must be available.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q4_0_load(x: &[BlockQ4_0; 4]) -> (__m512i, __m512i) {
    let p: *const u8 = x.as_ptr().cast();
    // SAFETY: the four blocks are 72 bytes: the first load reads 64 of them, the masked one
    // the other 8 (masked-off bytes are not accessed).
    unsafe {
        (
            _mm512_loadu_si512(p.cast()),
            _mm512_maskz_loadu_epi8(0xFF, p.add(64).cast()),
        )
    }
}

/// The two loads of [`q4_0_quad`] for the last 1 to 3 blocks (at most 54 bytes).
///
/// # Safety
/// The module's features must be available.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q4_0_load_tail(x: &[BlockQ4_0]) -> (__m512i, __m512i) {
    let bytes = Q4_0_BYTES * x.len().min(3);
    // SAFETY: the mask covers exactly the blocks' bytes (masked-off bytes are not accessed).
    unsafe {
        (
            _mm512_maskz_loadu_epi8((1u64 << bytes) - 1, x.as_ptr().cast()),
            _mm512_setzero_si512(),
        )
    }
}

/// Σ (q4 - 8) · q8 per block, times both scales, four blocks per step, against a prepared
/// activation row (`a` holds at least `x.len().div_ceil(4)` groups; twin:
/// [`scalar::vec_dot_q4_0_q8_0`](super::scalar::vec_dot_q4_0_q8_0)).
///
/// # Safety
/// The module's features must be available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn vec_dot_q4_0_prepared(x: &[BlockQ4_0], a: &[[u8; QUAD_BYTES]]) -> f32 {
    let mut acc = _mm512_setzero_ps();
    let (xq, xt) = x.as_chunks::<4>();
    // SAFETY: the features are the caller's contract; the loads read the chunks' blocks.
    unsafe {
        for (xq, g) in xq.iter().zip(a) {
            let (w0, w1) = q4_0_load(xq);
            acc = q4_0_quad(w0, w1, &load_quad(g), acc);
        }
        if let (false, Some(g)) = (xt.is_empty(), a.get(xq.len())) {
            let (w0, w1) = q4_0_load_tail(xt);
            acc = q4_0_quad(w0, w1, &load_quad(g), acc);
        }
    }
    _mm512_reduce_add_ps(acc)
}

/// [`vec_dot_q4_0_prepared`] of two rows of the same length.
///
/// # Safety
/// The module's features must be available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn vec_dot2_q4_0_prepared(
    x0: &[BlockQ4_0],
    x1: &[BlockQ4_0],
    a: &[[u8; QUAD_BYTES]],
) -> [f32; 2] {
    let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let (x0q, x0t) = x0.as_chunks::<4>();
    let (x1q, x1t) = x1.as_chunks::<4>();
    // SAFETY: as in `vec_dot_q4_0_prepared`.
    unsafe {
        for ((x0q, x1q), g) in x0q.iter().zip(x1q).zip(a) {
            let q = load_quad(g);
            let (w0, w1) = q4_0_load(x0q);
            acc0 = q4_0_quad(w0, w1, &q, acc0);
            let (w0, w1) = q4_0_load(x1q);
            acc1 = q4_0_quad(w0, w1, &q, acc1);
        }
        if let (false, Some(g)) = (x0t.is_empty(), a.get(x0q.len())) {
            let q = load_quad(g);
            let (w0, w1) = q4_0_load_tail(x0t);
            acc0 = q4_0_quad(w0, w1, &q, acc0);
            let (w0, w1) = q4_0_load_tail(x1t);
            acc1 = q4_0_quad(w0, w1, &q, acc1);
        }
    }
    [_mm512_reduce_add_ps(acc0), _mm512_reduce_add_ps(acc1)]
}
