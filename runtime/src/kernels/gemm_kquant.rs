//! gemm for K-quant weights (Q4_K, Q5_K, Q6_K × Q8_K activations), the batched path of
//! [`matmul`](super::matmul::matmul) on the VNNI path. Same tiling as [`gemm`](super::gemm):
//! 8 weight rows × up to 4 tokens, weights repacked per chunk into transposed unsigned bytes
//! that `vpdpbusd` multiplies with broadcast activation bytes. It owns only what the 256-value
//! super-blocks add, and like `gemm` never allocates (its tiles live on the worker's stack).
//!
//! A super-block is repacked as 8 pieces of 32 values (tile registers `j < 4` hold the piece's
//! first 16 values, `j >= 4` the other 16), plus per row: the sub-block scales as i32 lanes,
//! the coefficients of the activation sums as i16 pairs, and `d` (and `dmin`) as f32. Per token
//! and super-block everything stays in the integers, as in the scalar kernels:
//! - Q6_K: `Σ_j sc_j·Σ q·y` (16-value sub-blocks, scales applied with `vpmulld`) minus
//!   `32·Σ_j sc_j·bsum_j` (`vpmaddwd` of the scale pairs with the activation `bsums` pairs);
//! - Q4_K / Q5_K: `Σ_p sc_p·Σ q·y` (32-value sub-blocks) and `Σ_j m_{j/2}·bsum_j` for the mins;
//!
//! then one int-to-float step per row and token: the same exact ints times the same `d·d_y`
//! products as [`scalar`](super::scalar), so results differ only in the order of float additions.

#![cfg(target_arch = "x86_64")]
// Rust 1.85 (our MSRV) requires `unsafe` around every `core::arch` intrinsic; from 1.87 the
// pointer-free ones are safe inside `#[target_feature]` functions.
#![allow(unused_unsafe)]

use std::arch::x86_64::*;

use half::f16;

use super::gemm::{
    f16x8, gemm_blocks, store_tile, transpose_8x8_i32, vnni_dot4_bcast, TILE_ROWS, TILE_TOKENS,
};
use super::matmul::{DisjointOut, WeightMatrix};
use super::threadpool::{split_range, ThreadPool};
use crate::ggml_type::GgmlType;
use crate::quant::k_quants::scale_min_k4;
use crate::quant::{Block, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, QK_K};

/// Super-blocks repacked at a time (8 rows × 8 super-blocks: 23 KiB, in L1).
const CHUNK_BLOCKS: usize = 8;

/// One super-block of 8 rows, repacked. `q[p][j]` holds values `32p + 4j..32p + 4j + 4` of row
/// `r` at bytes `4r..4r + 4` (unsigned levels); `sc[s]` the scale of sub-block `s` per row
/// (Q6_K: 16 sub-blocks of 16 values; Q4_K/Q5_K: 8 of 32, in `sc[0..8]`); `coef[k]` per row
/// the i16 pair `(c_{2k}, c_{2k+1})` that multiplies the activation sums `bsums[2k..2k + 2]`
/// (Q6_K: the scales; Q4_K/Q5_K: the mins of sub-blocks `k`); `d`, `dmin` the row scales.
#[repr(C, align(32))]
#[derive(Clone, Copy)]
struct KTileBlock {
    q: [[[u8; 32]; 8]; 8],
    sc: [[i32; 8]; 16],
    coef: [[i32; 8]; 8],
    d: [f32; 8],
    dmin: [f32; 8],
}

impl KTileBlock {
    const ZERO: KTileBlock = KTileBlock {
        q: [[[0; 32]; 8]; 8],
        sc: [[0; 8]; 16],
        coef: [[0; 8]; 8],
        d: [0.0; 8],
        dmin: [0.0; 8],
    };
}

/// A K-quant weight block type the tiles can repack.
trait KWeight: Block + Sync {
    /// Q6_K's form (16 scaled sub-blocks, offset 32) rather than Q4_K's (8 sub-blocks, mins).
    const SIXTEENS: bool;
    /// The 32 unsigned levels of piece `p` (values `32p..32p + 32`) in value order.
    ///
    /// # Safety
    /// AVX2 must be available.
    unsafe fn piece(&self, p: usize) -> __m256i;
    /// The sub-block scales (`sc[0..8]` for Q4_K/Q5_K), the `bsums` coefficients, `d`, `dmin`.
    fn scales(&self) -> ([i32; 16], [i16; 16], f16, f16);
}

/// The 8 six-bit scales and mins of a Q4_K/Q5_K block as (scales, per-`bsums` coefficients).
fn k4_scales(packed: &[u8; 12]) -> ([i32; 16], [i16; 16]) {
    let mut sc = [0i32; 16];
    let mut coef = [0i16; 16];
    for j in 0..8 {
        let (s, m) = scale_min_k4(j, packed);
        sc[j] = i32::from(s);
        coef[2 * j] = i16::from(m);
        coef[2 * j + 1] = i16::from(m);
    }
    (sc, coef)
}

/// Nibbles of `qs[32k..32k + 32]`: low ones for even pieces `p = 2k`, high ones for odd.
///
/// # Safety
/// AVX2 must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn k4_nibbles(qs: &[u8; QK_K / 2], p: usize) -> __m256i {
    let k = p / 2;
    // SAFETY: `k < 4`, so the load reads 32 bytes inside `qs`.
    unsafe {
        let v = _mm256_loadu_si256(qs[32 * k..32 * k + 32].as_ptr().cast());
        let v = if p % 2 == 1 {
            _mm256_srli_epi16(v, 4)
        } else {
            v
        };
        _mm256_and_si256(v, _mm256_set1_epi8(0x0F))
    }
}

impl KWeight for BlockQ4K {
    const SIXTEENS: bool = false;
    #[inline]
    unsafe fn piece(&self, p: usize) -> __m256i {
        // SAFETY: AVX2 is the caller's contract.
        unsafe { k4_nibbles(&self.qs, p) }
    }
    fn scales(&self) -> ([i32; 16], [i16; 16], f16, f16) {
        let (sc, coef) = k4_scales(&self.scales);
        (sc, coef, self.d, self.dmin)
    }
}

impl KWeight for BlockQ5K {
    const SIXTEENS: bool = false;
    #[inline]
    unsafe fn piece(&self, p: usize) -> __m256i {
        // SAFETY: the load reads the 32 bytes of `qh`; AVX2 is the caller's contract.
        unsafe {
            let qh = _mm256_loadu_si256(self.qh.as_ptr().cast());
            // bit `p` of each `qh` byte becomes bit 4 of the level
            let bit = _mm256_and_si256(
                _mm256_srl_epi16(qh, _mm_cvtsi32_si128(p as i32)),
                _mm256_set1_epi8(1),
            );
            _mm256_or_si256(k4_nibbles(&self.qs, p), _mm256_slli_epi16(bit, 4))
        }
    }
    fn scales(&self) -> ([i32; 16], [i16; 16], f16, f16) {
        let (sc, coef) = k4_scales(&self.scales);
        (sc, coef, self.d, self.dmin)
    }
}

impl KWeight for BlockQ6K {
    const SIXTEENS: bool = true;
    #[inline]
    unsafe fn piece(&self, p: usize) -> __m256i {
        // Piece 4n + k of the 128-value half n (the scalar `q6_k_levels` order).
        let (n, k) = (p / 4, p % 4);
        // SAFETY: the loads read 32 bytes inside `ql` (`64n + 32(k % 2) + 32 <= 128`) and
        // `qh` (`32n + 32 <= 64`); AVX2 is the caller's contract.
        unsafe {
            let ql = _mm256_loadu_si256(self.ql[64 * n + 32 * (k % 2)..].as_ptr().cast());
            let qh = _mm256_loadu_si256(self.qh[32 * n..].as_ptr().cast());
            let lo = if k >= 2 { _mm256_srli_epi16(ql, 4) } else { ql };
            let hi = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * k as i32));
            _mm256_or_si256(
                _mm256_and_si256(lo, _mm256_set1_epi8(0x0F)),
                _mm256_slli_epi16(_mm256_and_si256(hi, _mm256_set1_epi8(3)), 4),
            )
        }
    }
    fn scales(&self) -> ([i32; 16], [i16; 16], f16, f16) {
        (
            self.scales.map(i32::from),
            self.scales.map(i16::from),
            self.d,
            f16::ZERO,
        )
    }
}

/// `out[t * rows + r] = row r · activation row t` for K-quant weights (see
/// [`gemm`](super::gemm::gemm), whose contract this shares). Returns false (nothing written) for
/// other types or shapes.
pub(super) fn gemm_kquant(
    pool: &ThreadPool,
    w: &WeightMatrix<'_>,
    act: &[u8],
    arb: usize,
    nb: usize,
    out: &DisjointOut,
) -> bool {
    match w.ty {
        GgmlType::Q4_K => run::<BlockQ4K>(pool, w, act, arb, nb, out),
        GgmlType::Q5_K => run::<BlockQ5K>(pool, w, act, arb, nb, out),
        GgmlType::Q6_K => run::<BlockQ6K>(pool, w, act, arb, nb, out),
        _ => false,
    }
}

fn run<W: KWeight>(
    pool: &ThreadPool,
    w: &WeightMatrix<'_>,
    act: &[u8],
    arb: usize,
    nb: usize,
    out: &DisjointOut,
) -> bool {
    let rows = w.rows;
    let Some((wblocks, ablocks, nblocks)) = gemm_blocks::<W, BlockQ8K>(w, act, arb, nb, QK_K)
    else {
        return false;
    };
    let groups = rows.div_ceil(TILE_ROWS);
    pool.run(&|index, n_threads| {
        let (g0, g1) = split_range(groups, index, n_threads, 1);
        let mut tile = [KTileBlock::ZERO; CHUNK_BLOCKS];
        for k0 in (0..nblocks).step_by(CHUNK_BLOCKS) {
            let kn = CHUNK_BLOCKS.min(nblocks - k0);
            for g in g0..g1 {
                let r0 = g * TILE_ROWS;
                let nr = TILE_ROWS.min(rows - r0);
                // Rows past the end repeat the group's first row; their sums are dropped.
                let row_blocks = [0, 1, 2, 3, 4, 5, 6, 7].map(|i| {
                    let r = if i < nr { r0 + i } else { r0 };
                    &wblocks[r * nblocks + k0..][..kn]
                });
                let tile = &mut tile[..kn];
                // SAFETY: gemm runs only for the VNNI path, whose CPU check covers AVX2.
                unsafe { repack(&row_blocks, tile) };
                let tile: &[KTileBlock] = tile;
                let mut t0 = 0;
                while t0 < nb {
                    let nt = TILE_TOKENS.min(nb - t0);
                    let acts = &ablocks[t0 * nblocks + k0..];
                    // SAFETY: as above, and the VNNI path's check covers AVX512-VNNI/VL.
                    let sums = unsafe { tile_dot::<W>(nt, tile, acts, nblocks) };
                    // SAFETY: rows `r0..r0 + nr` belong to this worker's groups alone.
                    unsafe { store_tile(out, &sums, nt, nr, t0, rows, r0, k0 == 0) };
                    t0 += nt;
                }
            }
        }
    });
    true
}

/// Repacks `tile.len()` super-blocks of 8 rows into `tile` (see [`KTileBlock`]).
///
/// # Safety
/// AVX2, FMA and F16C must be available.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn repack<W: KWeight>(rows: &[&[W]; TILE_ROWS], tile: &mut [KTileBlock]) {
    for (k, tb) in tile.iter_mut().enumerate() {
        let blocks: [&W; TILE_ROWS] = rows.map(|r| &r[k]);
        // SAFETY: the stores write `tb.q[p][j]`'s 32 bytes; `piece` reads its own block; the
        // features are the caller's contract.
        unsafe {
            for (p, qp) in tb.q.iter_mut().enumerate() {
                let mut v = [_mm256_setzero_si256(); 8];
                for (vr, b) in v.iter_mut().zip(blocks) {
                    *vr = b.piece(p);
                }
                transpose_8x8_i32(&mut v);
                for (q, vj) in qp.iter_mut().zip(v) {
                    _mm256_storeu_si256(q.as_mut_ptr().cast(), vj);
                }
            }
        }
        let mut d = [f16::ZERO; 8];
        let mut dmin = [f16::ZERO; 8];
        for (r, b) in blocks.iter().enumerate() {
            let (sc, coef, bd, bm) = b.scales();
            for (s, &v) in sc.iter().enumerate() {
                tb.sc[s][r] = v;
            }
            for k in 0..8 {
                let pair =
                    u32::from(coef[2 * k] as u16) | (u32::from(coef[2 * k + 1] as u16) << 16);
                tb.coef[k][r] = pair as i32;
            }
            d[r] = bd;
            dmin[r] = bm;
        }
        // SAFETY: F16C is the caller's contract.
        unsafe {
            tb.d = f16x8(d);
            tb.dmin = f16x8(dmin);
        }
    }
}

/// The 8 × `nt` row sums of a tile over the chunk's super-blocks (`nt <= 4`; entries for
/// `c >= nt` are zero). Token `c`'s blocks start at `acts[c * astride]`.
///
/// # Safety
/// AVX2, FMA, F16C, AVX512-VNNI and AVX512VL must be available.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_dot<W: KWeight>(
    nt: usize,
    tile: &[KTileBlock],
    acts: &[BlockQ8K],
    astride: usize,
) -> [[f32; 8]; TILE_TOKENS] {
    assert!((1..=TILE_TOKENS).contains(&nt));
    assert!(acts.len() >= (nt - 1) * astride + tile.len());
    // SAFETY: the asserts keep every token's blocks in bounds; the features are the caller's
    // contract.
    unsafe {
        let a = acts.as_ptr();
        match nt {
            1 => tile_dot_n::<W, 1>(tile, a, astride),
            2 => tile_dot_n::<W, 2>(tile, a, astride),
            3 => tile_dot_n::<W, 3>(tile, a, astride),
            _ => tile_dot_n::<W, 4>(tile, a, astride),
        }
    }
}

/// [`tile_dot`] for exactly `C` tokens.
///
/// # Safety
/// As [`tile_dot`]; `acts[c * astride + k]` must be readable for `c < C`, `k < tile.len()`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_dot_n<W: KWeight, const C: usize>(
    tile: &[KTileBlock],
    acts: *const BlockQ8K,
    astride: usize,
) -> [[f32; 8]; TILE_TOKENS] {
    let mut out = [[0.0f32; 8]; TILE_TOKENS];
    // SAFETY: the loads read `KTileBlock` fields (32-byte aligned) and, by the caller's
    // contract, activation blocks in bounds; the features are the caller's contract.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); C];
        for (k, tb) in tile.iter().enumerate() {
            let ys: [&BlockQ8K; C] = {
                let mut ys = [&*acts; C];
                for (c, y) in ys.iter_mut().enumerate() {
                    *y = &*acts.add(c * astride + k);
                }
                ys
            };
            let mut isum = [_mm256_setzero_si256(); C];
            for (p, qp) in tb.q.iter().enumerate() {
                let mut wq = [_mm256_setzero_si256(); 8];
                for (wj, q) in wq.iter_mut().zip(qp) {
                    *wj = _mm256_load_si256(q.as_ptr().cast());
                }
                for (s, y) in isum.iter_mut().zip(ys) {
                    let y = y.qs[32 * p..].as_ptr();
                    let zero = _mm256_setzero_si256();
                    let lo = vnni_dot4_bcast(zero, [wq[0], wq[1], wq[2], wq[3]], y);
                    if W::SIXTEENS {
                        let hi = vnni_dot4_bcast(zero, [wq[4], wq[5], wq[6], wq[7]], y.add(16));
                        let sc0 = _mm256_load_si256(tb.sc[2 * p].as_ptr().cast());
                        let sc1 = _mm256_load_si256(tb.sc[2 * p + 1].as_ptr().cast());
                        *s = _mm256_add_epi32(*s, _mm256_mullo_epi32(lo, sc0));
                        *s = _mm256_add_epi32(*s, _mm256_mullo_epi32(hi, sc1));
                    } else {
                        let all = vnni_dot4_bcast(lo, [wq[4], wq[5], wq[6], wq[7]], y.add(16));
                        let sc = _mm256_load_si256(tb.sc[p].as_ptr().cast());
                        *s = _mm256_add_epi32(*s, _mm256_mullo_epi32(all, sc));
                    }
                }
            }
            let dw = _mm256_load_ps(tb.d.as_ptr());
            let dmin = _mm256_load_ps(tb.dmin.as_ptr());
            for ((acc, s), y) in acc.iter_mut().zip(isum).zip(ys) {
                // Σ_j c_j · bsum_j per row, two sub-blocks per `vpmaddwd`
                let mut off = _mm256_setzero_si256();
                for (kk, coef) in tb.coef.iter().enumerate() {
                    let pair = y.bsums.as_ptr().add(2 * kk).cast::<i32>().read_unaligned();
                    let c = _mm256_load_si256(coef.as_ptr().cast());
                    off = _mm256_add_epi32(off, _mm256_madd_epi16(c, _mm256_set1_epi32(pair)));
                }
                let dy = _mm256_set1_ps(y.d);
                if W::SIXTEENS {
                    let total = _mm256_sub_epi32(s, _mm256_slli_epi32(off, 5));
                    let d = _mm256_mul_ps(dw, dy);
                    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(total), d, *acc);
                } else {
                    let d = _mm256_mul_ps(dw, dy);
                    let m = _mm256_mul_ps(dmin, dy);
                    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), d, *acc);
                    *acc = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(off), m, *acc);
                }
            }
        }
        for (o, acc) in out.iter_mut().zip(acc) {
            _mm256_storeu_ps(o.as_mut_ptr(), acc);
        }
    }
    out
}
