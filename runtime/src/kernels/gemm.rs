//! gemm: the batched path of [`matmul`](super::matmul::matmul) for int weights (Q4_0, Q4_1,
//! Q5_0, Q5_1, Q8_0; the K-quants' super-blocks are [`gemm_kquant`](super::gemm_kquant)'s) when several activation rows come in at once (prompt processing). It owns the tiling,
//! the weight repacking and the per-ISA tile dots; it does not quantize the activations (matmul
//! does, once) and never allocates: its buffers are fixed-size arrays on the worker's stack.
//!
//! Work goes in tiles of 8 weight rows × up to 4 tokens. A tile's weight blocks are repacked once
//! per chunk of [`CHUNK_BLOCKS`] blocks (and per [`SIDE_TOKENS`] tokens: once for a whole
//! prompt of up to that many): each block's 32 quants become unsigned bytes (Q4
//! nibbles and Q5 levels as they are; Q8_0 quants + 128) transposed so that register `j` holds elements
//! `4j..4j+4` of all 8 rows (one i32 lane per row), next to the 8 row scales as f32. A token's
//! activation bytes `4j..4j+4` are broadcast to every lane, so one unsigned × signed byte-dot
//! step (`vpdpbusd`, or `maddubs` + `madd` on AVX2) adds that slice of the block to 8 row sums at
//! once (on VNNI the broadcast is `vpdpbusd`'s embedded one, so one instruction per step), and
//! the repacked block serves every token of the batch. The offsets that make the
//! weights unsigned (Q4_0: `-8·Σy`, Q5_0: `-16·Σy`, Q8_0: `-128·Σy`) start each block's int sum; they and the
//! activation scales are computed once per token and block ([`ActSide`]).
//!
//! Results equal the scalar kernels' up to the order of the float additions: every block's int
//! sum is exact and is scaled by the same `d_w · d_y` product.

#![cfg(target_arch = "x86_64")]
// Rust 1.85 (our MSRV) requires `unsafe` around every `core::arch` intrinsic; from 1.87 the
// pointer-free ones are safe inside `#[target_feature]` functions.
#![allow(unused_unsafe)]

use std::arch::x86_64::*;

use half::f16;

use super::kquant_avx2::q5_levels;
use super::matmul::{DisjointOut, WeightMatrix};
use super::threadpool::{split_range, ThreadPool};
use super::KernelPath;
use crate::ggml_type::GgmlType;
use crate::quant::blocks::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1, QK8_0};
use crate::quant::{self, Block, BlockQ5_0, BlockQ5_1};

/// Weight rows per tile: one per i32 lane of a 256-bit register.
pub(super) const TILE_ROWS: usize = 8;
/// Tokens per tile: 4 accumulators plus 8 weight registers fit the 16 ymm registers.
pub(super) const TILE_TOKENS: usize = 4;
/// Blocks repacked at a time (a chunk of 8 rows is at most 20 KiB, so it stays in L1).
const CHUNK_BLOCKS: usize = 64;
/// Tokens whose [`ActSide`] entries are computed at a time (with a chunk: 64 KiB of stack).
const SIDE_TOKENS: usize = 128;

/// The int-weight kernel family a path's gemm uses, if it has one for the weight type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum GemmIsa {
    /// AVX-512 VNNI `vpdpbusd` on 256-bit registers.
    Avx512Vnni,
    /// AVX2 `maddubs`: Q4 weights only (Q5 and Q8_0's unsigned quants would overflow its i16
    /// sums over a block).
    Avx2,
}

impl GemmIsa {
    /// The gemm kernels for `path` and weights of type `ty`, if any.
    pub(super) fn for_path(path: KernelPath, ty: GgmlType) -> Option<GemmIsa> {
        match (path, ty) {
            (
                KernelPath::Avx512,
                GgmlType::Q4_0
                | GgmlType::Q4_1
                | GgmlType::Q5_0
                | GgmlType::Q5_1
                | GgmlType::Q8_0
                | GgmlType::Q4_K
                | GgmlType::Q5_K
                | GgmlType::Q6_K,
            ) => Some(GemmIsa::Avx512Vnni),
            (KernelPath::Avx2, GgmlType::Q4_0 | GgmlType::Q4_1) => Some(GemmIsa::Avx2),
            _ => None,
        }
    }
}

/// One weight block of 8 rows, repacked: `q[j]` holds elements `4j..4j+4` of row `r` at bytes
/// `4r..4r+4` (unsigned), `d` the row scales, `m` the row minimums (Q4_1, Q5_1; zero otherwise).
#[repr(C, align(32))]
#[derive(Clone, Copy)]
struct TileBlock {
    q: [[u8; 32]; 8],
    d: [f32; 8],
    m: [f32; 8],
}

impl TileBlock {
    const ZERO: TileBlock = TileBlock {
        q: [[0; 32]; 8],
        d: [0.0; 8],
        m: [0.0; 8],
    };
}

/// What a tile dot needs of one activation block besides its quants: the scale as f32 and
/// either the int sum's starting offset (Q8_0 activations) or `s` as f32 (Q8_1).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct ActSide {
    d: f32,
    /// Q8_0: the offset `-k·Σy` as i32 bits; Q8_1: `s` as f32 bits.
    aux: u32,
}

/// An activation block with 32 signed quants.
trait ActQuants: Block {
    fn qs(&self) -> &[i8; 32];
}
impl ActQuants for BlockQ8_0 {
    #[inline(always)]
    fn qs(&self) -> &[i8; 32] {
        &self.qs
    }
}
impl ActQuants for BlockQ8_1 {
    #[inline(always)]
    fn qs(&self) -> &[i8; 32] {
        &self.qs
    }
}

/// `out[t * rows + r] = row r · activation row t` for int weights, `act` holding `nb` quantized
/// activation rows of `arb` bytes each (the type [`Kernels::act_type`](super::Kernels::act_type)
/// gives). Returns false (nothing written) if `isa` has no kernel for the type.
///
/// `isa` must come from [`GemmIsa::for_path`] for the path of a built `Kernels` table: that
/// table's `is_supported` check is what makes the `#[target_feature]` kernels sound to call.
pub(super) fn gemm(
    pool: &ThreadPool,
    isa: GemmIsa,
    w: &WeightMatrix<'_>,
    act: &[u8],
    arb: usize,
    nb: usize,
    out: &DisjointOut,
) -> bool {
    match w.ty {
        GgmlType::Q4_0 => run::<BlockQ4_0, BlockQ8_0>(pool, isa, w, act, arb, nb, out),
        GgmlType::Q4_1 => run::<BlockQ4_1, BlockQ8_1>(pool, isa, w, act, arb, nb, out),
        GgmlType::Q8_0 if isa == GemmIsa::Avx512Vnni => {
            run::<BlockQ8_0, BlockQ8_0>(pool, isa, w, act, arb, nb, out)
        }
        GgmlType::Q5_0 if isa == GemmIsa::Avx512Vnni => {
            run::<BlockQ5_0, BlockQ8_0>(pool, isa, w, act, arb, nb, out)
        }
        GgmlType::Q5_1 if isa == GemmIsa::Avx512Vnni => {
            run::<BlockQ5_1, BlockQ8_1>(pool, isa, w, act, arb, nb, out)
        }
        GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K if isa == GemmIsa::Avx512Vnni => {
            super::gemm_kquant::gemm_kquant(pool, w, act, arb, nb, out)
        }
        _ => false,
    }
}

/// A weight block type the tiles can repack.
trait WeightBlock: Block {
    /// Activation offset multiplier `k` (the int sum starts at `-k·Σy`), or `None` for Q4_1 and Q5_1,
    /// whose `m·s` term is added in floats instead.
    const OFFSET: Option<i32>;
}
impl WeightBlock for BlockQ4_0 {
    const OFFSET: Option<i32> = Some(8);
}
impl WeightBlock for BlockQ4_1 {
    const OFFSET: Option<i32> = None;
}
impl WeightBlock for BlockQ8_0 {
    const OFFSET: Option<i32> = Some(128);
}
impl WeightBlock for BlockQ5_0 {
    const OFFSET: Option<i32> = Some(16);
}
impl WeightBlock for BlockQ5_1 {
    const OFFSET: Option<i32> = None;
}

/// Fills the side entries of one activation block.
trait SideOf {
    fn side(&self, offset: Option<i32>) -> ActSide;
}
impl SideOf for BlockQ8_0 {
    #[inline]
    fn side(&self, offset: Option<i32>) -> ActSide {
        let sum: i32 = self.qs.iter().map(|&v| i32::from(v)).sum();
        ActSide {
            d: self.d.to_f32(),
            aux: (-offset.unwrap_or(0) * sum) as u32,
        }
    }
}
impl SideOf for BlockQ8_1 {
    #[inline]
    fn side(&self, _offset: Option<i32>) -> ActSide {
        ActSide {
            d: self.d.to_f32(),
            aux: self.s.to_f32().to_bits(),
        }
    }
}

fn run<W, A>(
    pool: &ThreadPool,
    isa: GemmIsa,
    w: &WeightMatrix<'_>,
    act: &[u8],
    arb: usize,
    nb: usize,
    out: &DisjointOut,
) -> bool
where
    W: WeightBlock + Sync,
    A: ActQuants + SideOf + Sync,
    (W, A): Repack<W>,
{
    let rows = w.rows;
    let Some((wblocks, ablocks, nblocks)) = gemm_blocks::<W, A>(w, act, arb, nb, QK8_0) else {
        return false;
    };
    let groups = rows.div_ceil(TILE_ROWS);
    pool.run(&|index, n_threads| {
        let (g0, g1) = split_range(groups, index, n_threads, 1);
        if g0 >= g1 {
            return;
        }
        let mut tile = [TileBlock::ZERO; CHUNK_BLOCKS];
        // [SIDE_TOKENS][kn]: the side entries of the chunk's blocks for a run of tokens.
        let mut side = [ActSide::default(); SIDE_TOKENS * CHUNK_BLOCKS];
        for k0 in (0..nblocks).step_by(CHUNK_BLOCKS) {
            let kn = CHUNK_BLOCKS.min(nblocks - k0);
            // Prompts up to SIDE_TOKENS tokens take one pass, so each group's chunk is
            // repacked once for all of them.
            for t0 in (0..nb).step_by(SIDE_TOKENS) {
                let tn = SIDE_TOKENS.min(nb - t0);
                for (t, sides) in side.chunks_exact_mut(kn).take(tn).enumerate() {
                    let arow = &ablocks[(t0 + t) * nblocks + k0..][..kn];
                    for (s, a) in sides.iter_mut().zip(arow) {
                        *s = a.side(W::OFFSET);
                    }
                }
                let side = &side[..tn * kn];
                for g in g0..g1 {
                    let r0 = g * TILE_ROWS;
                    let nr = TILE_ROWS.min(rows - r0);
                    let tile = &mut tile[..kn];
                    <(W, A)>::repack(isa, &wblocks[k0..], nblocks, r0, nr, tile);
                    let tile: &[TileBlock] = tile;
                    let mut tt = 0;
                    while tt < tn {
                        let nt = TILE_TOKENS.min(tn - tt);
                        let acts = &ablocks[(t0 + tt) * nblocks + k0..];
                        let sides = &side[tt * kn..];
                        let sums = <(W, A)>::tile_dot(isa, nt, tile, acts, nblocks, sides);
                        // SAFETY: rows `r0..r0 + nr` belong to this worker's groups alone.
                        unsafe { store_tile(out, &sums, nt, nr, t0 + tt, rows, r0, k0 == 0) };
                        tt += nt;
                    }
                }
            }
        }
    });
    true
}

/// Writes a tile's sums (`nt` tokens from `token0`, `nr` rows from `r0`) into `out`, whose
/// rows are `rows` long: stored by a matrix's first chunk of blocks, added by the others.
///
/// # Safety
/// No other thread may touch rows `r0..r0 + nr` of `out` during the job.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(super) unsafe fn store_tile(
    out: &DisjointOut,
    sums: &[[f32; 8]; TILE_TOKENS],
    nt: usize,
    nr: usize,
    token0: usize,
    rows: usize,
    r0: usize,
    first_chunk: bool,
) {
    for (c, sum) in sums.iter().enumerate().take(nt) {
        let base = (token0 + c) * rows + r0;
        for (r, &v) in sum.iter().enumerate().take(nr) {
            // SAFETY: the row is in `r0..r0 + nr` (the caller's contract).
            unsafe {
                if first_chunk {
                    out.write(base + r, v);
                } else {
                    out.add(base + r, v);
                }
            }
        }
    }
}

/// The weight matrix and the `nb` activation rows of a gemm call as blocks of `elems`
/// elements each, and the blocks per row; `None` if the shapes do not fit (the caller then
/// leaves the product to the row dots).
pub(super) fn gemm_blocks<'w, W: Block, A: Block>(
    w: &WeightMatrix<'w>,
    act: &'w [u8],
    arb: usize,
    nb: usize,
    elems: usize,
) -> Option<(&'w [W], &'w [A], usize)> {
    let (rows, nblocks) = (w.rows, w.cols / elems);
    if !w.cols.is_multiple_of(elems) || rows == 0 || nb == 0 {
        return None;
    }
    let wblocks = quant::blocks::<W>(w.data.get(..rows * w.row_bytes())?).ok()?;
    let ablocks = quant::blocks::<A>(act.get(..nb * arb)?).ok()?;
    (wblocks.len() == rows * nblocks && ablocks.len() == nb * nblocks)
        .then_some((wblocks, ablocks, nblocks))
}

/// Per weight/activation pair: the repack and the tile dot, dispatched on the ISA.
trait Repack<W> {
    /// Repacks rows `r0..r0 + nr` (`nr <= 8`; missing rows repeat row `r0`) of the weight
    /// blocks `w` (row `r` starts at `w[r * stride]`) into `tile` (one entry per block).
    fn repack(isa: GemmIsa, w: &[W], stride: usize, r0: usize, nr: usize, tile: &mut [TileBlock]);
    /// The row sums of `tile` with `nt <= 4` tokens: token `c`'s blocks start at
    /// `acts[c * astride]`, its side entries at `sides[c * tile.len()]`.
    fn tile_dot<A: ActQuants>(
        isa: GemmIsa,
        nt: usize,
        tile: &[TileBlock],
        acts: &[A],
        astride: usize,
        sides: &[ActSide],
    ) -> [[f32; 8]; TILE_TOKENS];
}

macro_rules! impl_repack {
    ($w:ty, $a:ty, $repack:ident, $min:literal) => {
        impl Repack<$w> for ($w, $a) {
            fn repack(
                _isa: GemmIsa,
                w: &[$w],
                stride: usize,
                r0: usize,
                nr: usize,
                tile: &mut [TileBlock],
            ) {
                let rows: [&[$w]; TILE_ROWS] = [0, 1, 2, 3, 4, 5, 6, 7].map(|i| {
                    let r = if i < nr { r0 + i } else { r0 };
                    &w[r * stride..][..tile.len()]
                });
                // SAFETY: both gemm ISAs include AVX2, FMA and F16C, and `GemmIsa` values come
                // from a built `Kernels` table's path (see `gemm`).
                unsafe { $repack(&rows, tile) }
            }
            fn tile_dot<A: ActQuants>(
                isa: GemmIsa,
                nt: usize,
                tile: &[TileBlock],
                acts: &[A],
                astride: usize,
                sides: &[ActSide],
            ) -> [[f32; 8]; TILE_TOKENS] {
                // SAFETY: as above; `Avx512Vnni` is only produced for the avx512 path, whose
                // check covers AVX512-VNNI and AVX512VL.
                unsafe {
                    match isa {
                        GemmIsa::Avx512Vnni => {
                            vnni::tile_dot::<A, $min>(nt, tile, acts, astride, sides)
                        }
                        GemmIsa::Avx2 => avx2::tile_dot::<A, $min>(nt, tile, acts, astride, sides),
                    }
                }
            }
        }
    };
}
impl_repack!(BlockQ4_0, BlockQ8_0, repack_q4_0, false);
impl_repack!(BlockQ4_1, BlockQ8_1, repack_q4_1, true);
impl_repack!(BlockQ8_0, BlockQ8_0, repack_q8_0, false);
impl_repack!(BlockQ5_0, BlockQ8_0, repack_q5_0, false);
impl_repack!(BlockQ5_1, BlockQ8_1, repack_q5_1, true);

/// Transposes 8 registers of 8 i32 lanes: lane `j` of `v[r]` goes to lane `r` of `v[j]`.
///
/// # Safety
/// AVX2 must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn transpose_8x8_i32(v: &mut [__m256i; 8]) {
    // SAFETY: register-only intrinsics; AVX2 is the caller's contract.
    unsafe {
        let t0 = _mm256_unpacklo_epi32(v[0], v[1]);
        let t1 = _mm256_unpackhi_epi32(v[0], v[1]);
        let t2 = _mm256_unpacklo_epi32(v[2], v[3]);
        let t3 = _mm256_unpackhi_epi32(v[2], v[3]);
        let t4 = _mm256_unpacklo_epi32(v[4], v[5]);
        let t5 = _mm256_unpackhi_epi32(v[4], v[5]);
        let t6 = _mm256_unpacklo_epi32(v[6], v[7]);
        let t7 = _mm256_unpackhi_epi32(v[6], v[7]);
        let u0 = _mm256_unpacklo_epi64(t0, t2);
        let u1 = _mm256_unpackhi_epi64(t0, t2);
        let u2 = _mm256_unpacklo_epi64(t1, t3);
        let u3 = _mm256_unpackhi_epi64(t1, t3);
        let u4 = _mm256_unpacklo_epi64(t4, t6);
        let u5 = _mm256_unpackhi_epi64(t4, t6);
        let u6 = _mm256_unpacklo_epi64(t5, t7);
        let u7 = _mm256_unpackhi_epi64(t5, t7);
        v[0] = _mm256_permute2x128_si256(u0, u4, 0x20);
        v[1] = _mm256_permute2x128_si256(u1, u5, 0x20);
        v[2] = _mm256_permute2x128_si256(u2, u6, 0x20);
        v[3] = _mm256_permute2x128_si256(u3, u7, 0x20);
        v[4] = _mm256_permute2x128_si256(u0, u4, 0x31);
        v[5] = _mm256_permute2x128_si256(u1, u5, 0x31);
        v[6] = _mm256_permute2x128_si256(u2, u6, 0x31);
        v[7] = _mm256_permute2x128_si256(u3, u7, 0x31);
    }
}

/// A Q4 block's 32 nibbles as bytes in element order (low nibbles are elements 0..16).
///
/// # Safety
/// AVX2 must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_elements(qs: &[u8; 16]) -> __m256i {
    // SAFETY: the load reads the array's own 16 bytes; AVX2 is the caller's contract.
    unsafe {
        let v = _mm_loadu_si128(qs.as_ptr().cast());
        let m = _mm_set1_epi8(0x0f);
        let lo = _mm_and_si128(v, m);
        let hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
        _mm256_set_m128i(hi, lo)
    }
}

/// Eight f16 values as f32.
///
/// # Safety
/// F16C must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn f16x8(h: [f16; 8]) -> [f32; 8] {
    let bits: [u16; 8] = h.map(f16::to_bits);
    let mut out = [0.0f32; 8];
    // SAFETY: the load reads `bits`' 16 bytes, the store writes `out`'s 32.
    unsafe {
        let v = _mm256_cvtph_ps(_mm_loadu_si128(bits.as_ptr().cast()));
        _mm256_storeu_ps(out.as_mut_ptr(), v);
    }
    out
}

/// Defines a repack function for one weight block type: `$elements(&block) -> __m256i` gives
/// the 32 unsigned element bytes, `$min(&block) -> f16` the minimum (or zero).
macro_rules! repack_fn {
    ($name:ident, $w:ty, |$b:ident| $elements:expr, |$bm:ident| $min:expr) => {
        /// Repacks `tile.len()` blocks of 8 rows into `tile` (see [`TileBlock`]).
        ///
        /// # Safety
        /// AVX2, FMA and F16C must be available.
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name(rows: &[&[$w]; TILE_ROWS], tile: &mut [TileBlock]) {
            for (k, tb) in tile.iter_mut().enumerate() {
                let blocks: [&$w; TILE_ROWS] = rows.map(|r| &r[k]);
                // SAFETY: the helpers read the blocks' own arrays; the stores write `tb.q[j]`'s
                // 32 bytes; the features are the caller's contract.
                unsafe {
                    let mut v = [_mm256_setzero_si256(); 8];
                    for (vr, $b) in v.iter_mut().zip(blocks) {
                        *vr = $elements;
                    }
                    transpose_8x8_i32(&mut v);
                    for (q, vj) in tb.q.iter_mut().zip(v) {
                        _mm256_storeu_si256(q.as_mut_ptr().cast(), vj);
                    }
                    tb.d = f16x8(blocks.map(|b| b.d));
                    tb.m = f16x8(blocks.map(|$bm| $min));
                }
            }
        }
    };
}

repack_fn!(repack_q4_0, BlockQ4_0, |b| q4_elements(&b.qs), |_b| {
    f16::ZERO
});
repack_fn!(repack_q4_1, BlockQ4_1, |b| q4_elements(&b.qs), |b| b.m);
repack_fn!(
    repack_q8_0,
    BlockQ8_0,
    |b| _mm256_xor_si256(
        _mm256_loadu_si256(b.qs.as_ptr().cast()),
        _mm256_set1_epi8(-128)
    ),
    |_b| f16::ZERO
);
repack_fn!(repack_q5_0, BlockQ5_0, |b| q5_levels(&b.qs, b.qh), |_b| {
    f16::ZERO
});
repack_fn!(repack_q5_1, BlockQ5_1, |b| q5_levels(&b.qs, b.qh), |b| b.m);

/// Defines `tile_dot` for one ISA over its `block_isum(w: &[__m256i; 8], y: *const i8, start:
/// __m256i) -> __m256i` (lane `r`: `start + Σ_j Σ_{i<4} w[j].byte(4r + i) · y[4j + i]`).
macro_rules! tile_dot_fn {
    ($features:literal) => {
        /// The 8 × `nt` row sums of a tile over the chunk's blocks (`nt <= 4`; entries for
        /// `c >= nt` are zero). Token `c`'s blocks start at `acts[c * astride]`, its side
        /// entries at `sides[c * tile.len()]`.
        ///
        /// # Safety
        /// The module's features must be available.
        #[target_feature(enable = $features)]
        pub(super) unsafe fn tile_dot<A: ActQuants, const MIN: bool>(
            nt: usize,
            tile: &[TileBlock],
            acts: &[A],
            astride: usize,
            sides: &[ActSide],
        ) -> [[f32; 8]; TILE_TOKENS] {
            let n = tile.len();
            assert!((1..=TILE_TOKENS).contains(&nt));
            assert!(acts.len() >= (nt - 1) * astride + n && sides.len() >= nt * n);
            // SAFETY: the asserts keep every token's `n` blocks and side entries in bounds;
            // the features are the caller's contract.
            unsafe {
                let (a, s) = (acts.as_ptr(), sides.as_ptr());
                match nt {
                    1 => tile_dot_n::<A, MIN, 1>(tile, a, astride, s),
                    2 => tile_dot_n::<A, MIN, 2>(tile, a, astride, s),
                    3 => tile_dot_n::<A, MIN, 3>(tile, a, astride, s),
                    _ => tile_dot_n::<A, MIN, 4>(tile, a, astride, s),
                }
            }
        }

        /// [`tile_dot`] for exactly `C` tokens.
        ///
        /// # Safety
        /// The module's features must be available; `acts[c * astride + k]` and
        /// `sides[c * tile.len() + k]` must be readable for `c < C`, `k < tile.len()`.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn tile_dot_n<A: ActQuants, const MIN: bool, const C: usize>(
            tile: &[TileBlock],
            acts: *const A,
            astride: usize,
            sides: *const ActSide,
        ) -> [[f32; 8]; TILE_TOKENS] {
            let n = tile.len();
            let mut out = [[0.0f32; 8]; TILE_TOKENS];
            // SAFETY: the loads read `TileBlock` fields (32-byte aligned) and, by the
            // caller's contract, blocks and side entries in bounds; the features are the
            // caller's contract.
            unsafe {
                let mut acc = [_mm256_setzero_ps(); C];
                for (k, tb) in tile.iter().enumerate() {
                    let mut wq = [_mm256_setzero_si256(); 8];
                    for (wj, q) in wq.iter_mut().zip(&tb.q) {
                        *wj = _mm256_load_si256(q.as_ptr().cast());
                    }
                    let dw = _mm256_load_ps(tb.d.as_ptr());
                    for (c, acc) in acc.iter_mut().enumerate() {
                        let s = *sides.add(c * n + k);
                        let y = (*acts.add(c * astride + k)).qs().as_ptr();
                        let start = if MIN {
                            _mm256_setzero_si256()
                        } else {
                            _mm256_set1_epi32(s.aux as i32)
                        };
                        let isum = block_isum(&wq, y, start);
                        let d = _mm256_mul_ps(dw, _mm256_set1_ps(s.d));
                        *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), d, *acc);
                        if MIN {
                            let m = _mm256_load_ps(tb.m.as_ptr());
                            let ms = _mm256_set1_ps(f32::from_bits(s.aux));
                            *acc = _mm256_fmadd_ps(m, ms, *acc);
                        }
                    }
                }
                for (o, acc) in out.iter_mut().zip(acc) {
                    _mm256_storeu_ps(o.as_mut_ptr(), acc);
                }
            }
            out
        }
    };
}

/// The 4 activation bytes `4j..4j+4` of a block, broadcast to every i32 lane.
///
/// # Safety
/// AVX2 must be available and `y` must point at 32 readable bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn broadcast_4(y: *const i8, j: usize) -> __m256i {
    // SAFETY: `4j + 4 <= 32` for the callers' `j < 8`; the read is unaligned-safe.
    unsafe { _mm256_set1_epi32(y.add(4 * j).cast::<i32>().read_unaligned()) }
}

pub(super) use vnni::dot4_bcast as vnni_dot4_bcast;

mod vnni {
    //! The tile dot over AVX-512 VNNI `vpdpbusd` (256-bit, via the avx512 module's `asm!`).
    #![allow(unused_unsafe)]
    use std::arch::asm;
    use std::arch::x86_64::*;

    use super::{ActQuants, ActSide, TileBlock, TILE_TOKENS};

    /// `start + Σ_j w[j] · broadcast(y[4j..4j+4])`, exact (two chains to hide the latency).
    ///
    /// # Safety
    /// AVX2, AVX512-VNNI and AVX512VL must be available; `y` points at 32 readable bytes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block_isum(w: &[__m256i; 8], y: *const i8, start: __m256i) -> __m256i {
        // SAFETY: the caller's contract covers the features and `y`.
        unsafe {
            let lo = dot4_bcast(start, [w[0], w[1], w[2], w[3]], y);
            let hi = dot4_bcast(_mm256_setzero_si256(), [w[4], w[5], w[6], w[7]], y.add(16));
            _mm256_add_epi32(lo, hi)
        }
    }

    /// `acc + Σ_{j<4} w[j] · broadcast(y[4j..4j+4])`, exact: `vpdpbusd` with the activation
    /// bytes as an embedded broadcast operand (one instruction per step instead of two).
    ///
    /// # Safety
    /// AVX512-VNNI and AVX512VL must be available; `y` points at 16 readable bytes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in crate::kernels) unsafe fn dot4_bcast(
        acc: __m256i,
        w: [__m256i; 4],
        y: *const i8,
    ) -> __m256i {
        let mut acc = acc;
        // SAFETY: the EVEX `vpdpbusd` exists on every CPU with AVX512-VNNI and AVX512VL (the
        // caller's contract); it reads the 16 bytes at `y` the caller vouches for and writes
        // only `acc`.
        unsafe {
            asm!(
                "vpdpbusd {acc}, {w0}, dword ptr [{y}]{{1to8}}",
                "vpdpbusd {acc}, {w1}, dword ptr [{y} + 4]{{1to8}}",
                "vpdpbusd {acc}, {w2}, dword ptr [{y} + 8]{{1to8}}",
                "vpdpbusd {acc}, {w3}, dword ptr [{y} + 12]{{1to8}}",
                acc = inout(ymm_reg) acc,
                w0 = in(ymm_reg) w[0],
                w1 = in(ymm_reg) w[1],
                w2 = in(ymm_reg) w[2],
                w3 = in(ymm_reg) w[3],
                y = in(reg) y,
                options(pure, readonly, nostack, preserves_flags),
            );
        }
        acc
    }

    tile_dot_fn!("avx2,fma,f16c");
}

mod avx2 {
    //! The tile dot over AVX2 `maddubs`, for Q4 weights: nibbles times quants in [-127, 127]
    //! give i16 pair sums of at most 2·15·127, so all 8 steps add in i16 (≤ 30480) before one
    //! widening `madd`.
    #![allow(unused_unsafe)]
    use std::arch::x86_64::*;

    use super::{broadcast_4, ActQuants, ActSide, TileBlock, TILE_TOKENS};

    /// `start + Σ_j w[j] · broadcast(y[4j..4j+4])` for `w` bytes in 0..=15, exact.
    ///
    /// # Safety
    /// AVX2 must be available; `y` points at 32 readable bytes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block_isum(w: &[__m256i; 8], y: *const i8, start: __m256i) -> __m256i {
        // SAFETY: the caller's contract covers the features and `y`.
        unsafe {
            let mut p = _mm256_maddubs_epi16(w[0], broadcast_4(y, 0));
            for j in 1..8 {
                p = _mm256_add_epi16(p, _mm256_maddubs_epi16(w[j], broadcast_4(y, j)));
            }
            _mm256_add_epi32(start, _mm256_madd_epi16(p, _mm256_set1_epi16(1)))
        }
    }

    tile_dot_fn!("avx2,fma,f16c");
}
