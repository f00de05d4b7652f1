//! 512-bit AVX-512 row dots for one-token products (decode), where the 256-bit kernels of
//! [`avx512`](super::avx512) run out of instructions before memory runs out of bandwidth.
//! A Q4_0 row is read in groups of eight blocks (144 bytes: three loads, the last masked):
//! one word permute gathers the nibbles of four blocks into a register, `vpdpbusd` sums them
//! against the activations in four i32 lanes per block, and the two halves' lanes are folded
//! pairwise into one register (two lanes per block) before anything turns float, so the
//! conversion, the scales (one permute and one f16 conversion for eight blocks) and the
//! multiply-adds run once per eight blocks instead of once per four. The activation row is
//! rearranged into the same groups once per matrix product ([`prepare_q8_0`]), with the Q4_0
//! offset `8 · Σ y` already scaled, and the loop over a matrix's rows runs inside the kernel
//! ([`rows_q4_0_prepared`]). A row's last `n % 8` blocks go through the same code with masked
//! loads (bytes past the row read as zeros, which add nothing), so no read leaves the row.
//!
//! The sums are in their own order (lanes of the eight-block groups, then a tree reduction):
//! within the tolerance of the x86 SIMD paths, not the scalar kernels' bits.
//!
//! Every `unsafe fn` here requires AVX512F, AVX512BW, AVX512VL and AVX512-VNNI (and the
//! AVX2/FMA/F16C the path implies); the safe entries are reachable only through a `Kernels`
//! built for the `Avx512` path after its `is_supported` check.

use std::arch::x86_64::*;

use crate::quant::blocks::{BlockQ4_0, BlockQ8_0};

/// Bytes of one prepared activation group of eight blocks ([`ActOctet`] stored: the four
/// quant registers of its two [`ActQuad`]s, then the 16 lane scales and lane offsets as f32).
const OCTET_BYTES: usize = 384;

/// Bytes [`prepare_q8_0`] writes for an activation row of `act_bytes` bytes of Q8_0 blocks
/// (`384 · ceil(n / 8) <= 48 · n + 384 <= 2 · 34 · n + 448` for `n` blocks: within the room
/// [`act_scratch_bytes`](super::matmul::act_scratch_bytes) leaves after 64-byte alignment).
pub(super) fn prepared_q8_0_bytes(act_bytes: usize) -> usize {
    (act_bytes / size_of::<BlockQ8_0>()).div_ceil(8) * OCTET_BYTES
}

/// Stores a Q8_0 activation row as [`ActOctet`] groups of eight blocks (the last padded with
/// zeros) into `out` ([`prepared_q8_0_bytes`] long; nothing is written if the sizes do not
/// fit), so that every row dot of a matrix product reads them without rearranging.
pub(super) fn prepare_q8_0(act: &[u8], out: &mut [u8]) {
    let Ok(y) = crate::quant::blocks::<BlockQ8_0>(act) else {
        return;
    };
    if out.len() < y.len().div_ceil(8) * OCTET_BYTES {
        return;
    }
    // SAFETY: this entry is stored in a kernel table only for the `Avx512` path, after its
    // `is_supported` check of the features `store_octets` enables.
    unsafe { store_octets(y, out) }
}

/// The work of [`prepare_q8_0`].
///
/// # Safety
/// The module's features must be available; `out` must hold `y.len().div_ceil(8)` groups.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn store_octets(y: &[BlockQ8_0], out: &mut [u8]) {
    let (groups, _) = out.as_chunks_mut::<OCTET_BYTES>();
    for (y8, g) in y.chunks(8).zip(groups) {
        let (ya, yb) = y8.split_at(y8.len().min(4));
        // SAFETY: the features are the caller's contract.
        let a = unsafe {
            let quad = |q: &[BlockQ8_0]| match <&[BlockQ8_0; 4]>::try_from(q) {
                Ok(q) => act_quad(q),
                Err(_) => act_quad_tail(q),
            };
            ActOctet::of(quad(ya), quad(yb))
        };
        let p = g.as_mut_ptr();
        // SAFETY: six 64-byte stores into the group's 384 bytes; the features are the
        // caller's contract.
        unsafe {
            _mm512_storeu_si512(p.cast(), a.lo_a);
            _mm512_storeu_si512(p.add(64).cast(), a.hi_a);
            _mm512_storeu_si512(p.add(128).cast(), a.lo_b);
            _mm512_storeu_si512(p.add(192).cast(), a.hi_b);
            _mm512_storeu_ps(p.add(256).cast(), a.d);
            _mm512_storeu_ps(p.add(320).cast(), a.c8);
        }
    }
}

/// A stored [`ActOctet`] group.
///
/// # Safety
/// The module's features must be available.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn load_octet(g: &[u8; OCTET_BYTES]) -> ActOctet {
    let p = g.as_ptr();
    // SAFETY: six 64-byte loads from the group's 384 bytes.
    unsafe {
        ActOctet {
            lo_a: _mm512_loadu_si512(p.cast()),
            hi_a: _mm512_loadu_si512(p.add(64).cast()),
            lo_b: _mm512_loadu_si512(p.add(128).cast()),
            hi_b: _mm512_loadu_si512(p.add(192).cast()),
            d: _mm512_loadu_ps(p.add(256).cast()),
            c8: _mm512_loadu_ps(p.add(320).cast()),
        }
    }
}

/// The Q4_0 weight row `w` against a prepared activation row `a`, both as bytes (NaN if they
/// are not whole Q4_0 blocks and groups for them).
pub(super) fn row_dot_q4_0_prepared(w: &[u8], a: &[u8]) -> f32 {
    let (Ok(x), (groups, [])) = (
        crate::quant::blocks::<BlockQ4_0>(w),
        a.as_chunks::<OCTET_BYTES>(),
    ) else {
        return f32::NAN;
    };
    if groups.len() < x.len().div_ceil(8) {
        return f32::NAN;
    }
    // SAFETY: stored in a kernel table only for the `Avx512` path, after its feature check.
    unsafe { vec_dot_q4_0_prepared(x, groups) }
}

/// Rows of a Q4_0 matrix (`w`, rows of `rb` bytes) against a prepared activation row `a` into
/// `out` (one value per row), with the loop over rows inside the kernel: row `i` goes with row
/// `half + i` ([`Segment::rows`](super::matmul) explains the two streams), an odd last row
/// alone. NaN everywhere if the shapes do not fit.
pub(super) fn rows_q4_0_prepared(w: &[u8], rb: usize, a: &[u8], out: &mut [f32]) {
    let n = out.len();
    let (Some(w), true, (groups, [])) = (
        w.get(..n * rb),
        rb.is_multiple_of(Q4_0_BYTES),
        a.as_chunks::<OCTET_BYTES>(),
    ) else {
        out.fill(f32::NAN);
        return;
    };
    let Ok(x) = crate::quant::blocks::<BlockQ4_0>(w) else {
        out.fill(f32::NAN);
        return;
    };
    let nb = rb / Q4_0_BYTES;
    if nb == 0 || groups.len() < nb.div_ceil(8) {
        out.fill(f32::NAN);
        return;
    }
    // SAFETY: stored in a kernel table only for the `Avx512` path, after its feature check.
    unsafe { rows_q4_0(x, nb, groups, out) }
}

/// The work of [`rows_q4_0_prepared`] (`x` holds `out.len()` rows of `nb` blocks).
///
/// # Safety
/// The module's features must be available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn rows_q4_0(x: &[BlockQ4_0], nb: usize, a: &[[u8; OCTET_BYTES]], out: &mut [f32]) {
    let half = out.len() / 2;
    let (xa, rest) = x.split_at(half * nb);
    let (xb, xl) = rest.split_at(half * nb);
    let (oa, rest) = out.split_at_mut(half);
    let (ob, ol) = rest.split_at_mut(half);
    let pairs = xa.chunks_exact(nb).zip(xb.chunks_exact(nb));
    // SAFETY: the features are the caller's contract; rows of one matrix have one length.
    unsafe {
        for ((ra, rb), (va, vb)) in pairs.zip(oa.iter_mut().zip(ob)) {
            [*va, *vb] = vec_dot2_q4_0_prepared(ra, rb, a);
        }
        if let Some(v) = ol.first_mut() {
            *v = vec_dot_q4_0_prepared(xl, a);
        }
    }
}

/// Bytes of a Q4_0 block: the f16 scale, then 16 bytes of nibbles.
const Q4_0_BYTES: usize = 18;

/// Word indices (into the first two 64-byte loads of an eight-block group, [`q4_0_load`]) of
/// the first four blocks' nibble words: output word `j` is word `j % 8` of block `j / 8`'s
/// nibbles, which start at word `9k + 1`. The second four blocks start at word 36, 4 words
/// into the second load: the same table plus 4 indexes them in the second and third loads.
const Q4_0_NIBBLE_WORDS: [i16; 32] = {
    let mut idx = [0i16; 32];
    let mut j = 0;
    while j < 32 {
        idx[j] = (9 * (j / 8) + 1 + j % 8) as i16;
        j += 1;
    }
    idx
};

/// Word indices (into the first two loads) of the eight blocks' scales in the lane order of
/// [`ActOctet`]: 128-bit chunk `k` holds the scales of blocks `k`, `4 + k`, `k`, `4 + k`.
const Q4_0_SCALE_WORDS: [i16; 32] = {
    let mut idx = [0i16; 32];
    let mut j = 0;
    while j < 16 {
        idx[j] = (9 * (j / 4) + 36 * (j % 2)) as i16;
        j += 1;
    }
    idx
};

/// Four activation blocks (or fewer, zeros for the missing ones): the quants' first halves of
/// each block in 16-byte lanes, their second halves, every lane's scale (f32, four lanes per
/// block) and the Q4_0 offset `8 · Σ y` per i32 lane.
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

/// The per-block i32 lanes of two four-block groups `a` (blocks 0-3, four lanes each, block
/// `k` in 128-bit chunk `k`) and `b` (blocks 4-7, the same way) folded into one register:
/// chunk `k` holds lanes of blocks `k`, `4 + k`, `k`, `4 + k`, each the sum of two of its
/// block's lanes (exact).
///
/// # Safety
/// The module's features must be available.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn fold_pair(a: __m512i, b: __m512i) -> __m512i {
    _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b))
}

/// One prepared group of eight activation blocks: the quant registers of its first four
/// blocks (`a`) and last four (`b`) as in [`ActQuad`], then per lane of the [`fold_pair`]
/// order the block's scale `d` and its offset `d · 8 · Σ y` over the lane's bytes (`c8`).
struct ActOctet {
    lo_a: __m512i,
    hi_a: __m512i,
    lo_b: __m512i,
    hi_b: __m512i,
    d: __m512,
    c8: __m512,
}

impl ActOctet {
    /// The group of two [`ActQuad`]s.
    ///
    /// # Safety
    /// The module's features must be available.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn of(a: ActQuad, b: ActQuad) -> ActOctet {
        // SAFETY: register operations; the features are the caller's contract.
        unsafe {
            // Each block's scale fills its four lanes, so pairing lanes 0 and 1 of each chunk
            // gives the fold order's `a, b, a, b`.
            let d = _mm512_unpacklo_ps(a.d, b.d);
            let c8 = _mm512_mul_ps(_mm512_cvtepi32_ps(fold_pair(a.off8, b.off8)), d);
            ActOctet {
                lo_a: a.lo,
                hi_a: a.hi,
                lo_b: b.lo,
                hi_b: b.hi,
                d,
                c8,
            }
        }
    }
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

/// The last 0 to 3 activation blocks as an [`ActQuad`], zeros for the missing ones.
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

/// Adds one group of eight Q4_0 blocks, loaded as three 64-byte registers `w` (the group's
/// 144 bytes, zeros after), against `a` to `acc`; with `HALF`, a group of at most four blocks
/// (whose second four would add nothing).
///
/// # Safety
/// The module's features must be available.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q4_0_octet<const HALF: bool>(w: [__m512i; 3], a: &ActOctet, acc: __m512) -> __m512 {
    // SAFETY: register operations (the index tables are constants); the features are the
    // caller's contract.
    unsafe {
        let nib_idx = _mm512_loadu_si512(Q4_0_NIBBLE_WORDS.as_ptr().cast());
        let nib_a = _mm512_permutex2var_epi16(w[0], nib_idx, w[1]);
        let mask = _mm512_set1_epi8(0x0F);
        let dot = |nib: __m512i, lo: __m512i, hi: __m512i| {
            let nlo = _mm512_and_si512(nib, mask);
            let nhi = _mm512_and_si512(_mm512_srli_epi16::<4>(nib), mask);
            _mm512_dpbusd_epi32(
                _mm512_dpbusd_epi32(_mm512_setzero_si512(), nlo, lo),
                nhi,
                hi,
            )
        };
        let dot_b = if HALF {
            _mm512_setzero_si512()
        } else {
            let nib_idx_b = _mm512_add_epi16(nib_idx, _mm512_set1_epi16(4));
            dot(
                _mm512_permutex2var_epi16(w[1], nib_idx_b, w[2]),
                a.lo_b,
                a.hi_b,
            )
        };
        let sums = fold_pair(dot(nib_a, a.lo_a, a.hi_a), dot_b);
        let r = _mm512_fmsub_ps(_mm512_cvtepi32_ps(sums), a.d, a.c8);
        let d_idx = _mm512_loadu_si512(Q4_0_SCALE_WORDS.as_ptr().cast());
        let wd = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutex2var_epi16(
            w[0], d_idx, w[1],
        )));
        _mm512_fmadd_ps(wd, r, acc)
    }
}

/// The three loads of [`q4_0_octet`] for eight whole blocks.
///
/// # Safety
/// The module's features must be available.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q4_0_load(x: &[BlockQ4_0; 8]) -> [__m512i; 3] {
    let p: *const u8 = x.as_ptr().cast();
    // SAFETY: the eight blocks are 144 bytes: two loads read 128 of them, the masked one the
    // other 16 (masked-off bytes are not accessed).
    unsafe {
        [
            _mm512_loadu_si512(p.cast()),
            _mm512_loadu_si512(p.add(64).cast()),
            _mm512_maskz_loadu_epi8(0xFFFF, p.add(128).cast()),
        ]
    }
}

/// The loads of [`q4_0_octet`] for the last 1 to 7 blocks (at most 126 bytes).
///
/// # Safety
/// The module's features must be available.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q4_0_load_tail(x: &[BlockQ4_0]) -> [__m512i; 3] {
    let bytes = Q4_0_BYTES * x.len().min(7);
    let mask = |from: usize| match bytes.saturating_sub(from) {
        0 => 0,
        n if n >= 64 => u64::MAX,
        n => (1u64 << n) - 1,
    };
    let p: *const u8 = x.as_ptr().cast();
    // SAFETY: the masks cover exactly the blocks' bytes (masked-off bytes are not accessed,
    // and an all-zero mask touches no memory).
    unsafe {
        [
            _mm512_maskz_loadu_epi8(mask(0), p.cast()),
            _mm512_maskz_loadu_epi8(mask(64), p.wrapping_add(64).cast()),
            _mm512_setzero_si512(),
        ]
    }
}

/// A row's last 1 to 7 blocks `xt` against their group `a`, added to `acc` (at most four
/// take the half group).
///
/// # Safety
/// The module's features must be available.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q4_0_tail(xt: &[BlockQ4_0], a: &ActOctet, acc: __m512) -> __m512 {
    // SAFETY: the features are the caller's contract.
    unsafe {
        let w = q4_0_load_tail(xt);
        if xt.len() <= 4 {
            q4_0_octet::<true>(w, a, acc)
        } else {
            q4_0_octet::<false>(w, a, acc)
        }
    }
}

/// Σ (q4 - 8) · q8 per block, times both scales, eight blocks per step, against a prepared
/// activation row (`a` holds at least `x.len().div_ceil(8)` groups; twin:
/// [`scalar::vec_dot_q4_0_q8_0`](super::scalar::vec_dot_q4_0_q8_0)).
///
/// # Safety
/// The module's features must be available.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn vec_dot_q4_0_prepared(x: &[BlockQ4_0], a: &[[u8; OCTET_BYTES]]) -> f32 {
    let mut acc = _mm512_setzero_ps();
    let (xo, xt) = x.as_chunks::<8>();
    // SAFETY: the features are the caller's contract; the loads read the chunks' blocks.
    unsafe {
        for (xo, g) in xo.iter().zip(a) {
            acc = q4_0_octet::<false>(q4_0_load(xo), &load_octet(g), acc);
        }
        if let (false, Some(g)) = (xt.is_empty(), a.get(xo.len())) {
            acc = q4_0_tail(xt, &load_octet(g), acc);
        }
    }
    _mm512_reduce_add_ps(acc)
}

/// [`vec_dot_q4_0_prepared`] of two rows of the same length.
///
/// # Safety
/// The module's features must be available.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn vec_dot2_q4_0_prepared(
    x0: &[BlockQ4_0],
    x1: &[BlockQ4_0],
    a: &[[u8; OCTET_BYTES]],
) -> [f32; 2] {
    let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let (x0o, x0t) = x0.as_chunks::<8>();
    let (x1o, x1t) = x1.as_chunks::<8>();
    // SAFETY: as in `vec_dot_q4_0_prepared`.
    unsafe {
        for ((x0o, x1o), g) in x0o.iter().zip(x1o).zip(a) {
            let q = load_octet(g);
            acc0 = q4_0_octet::<false>(q4_0_load(x0o), &q, acc0);
            acc1 = q4_0_octet::<false>(q4_0_load(x1o), &q, acc1);
        }
        if let (false, Some(g)) = (x0t.is_empty(), a.get(x0o.len())) {
            let q = load_octet(g);
            acc0 = q4_0_tail(x0t, &q, acc0);
            acc1 = q4_0_tail(x1t, &q, acc1);
        }
    }
    [_mm512_reduce_add_ps(acc0), _mm512_reduce_add_ps(acc1)]
}
