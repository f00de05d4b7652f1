//! AVX-512 VNNI int kernels (x86_64) for Q4_1 and Q8_0, for
//! [`KernelPath::Avx512`](super::KernelPath::Avx512): the AVX2 kernels with each block's
//! `maddubs` + `madd` pair replaced by one `vpdpbusd` (unsigned × signed bytes summed in groups
//! of 4 into i32 lanes, without saturation). The float dots and the quantizers are AVX2's;
//! the path's one-token Q4_0 dots are in [`avx512_zmm`](super::avx512_zmm), its Q4_0
//! fallback (batches the gemm does not take) is AVX2's.
//!
//! `vpdpbusd` runs on 256-bit registers (AVX512-VNNI + AVX512VL), written as inline assembly
//! from when the workspace supported Rust 1.85 (the intrinsics are stable since 1.89). For
//! these two types the 512-bit form measured no faster: a block is already a few 256-bit
//! operations, and CPUs like AMD Zen 4 split 512-bit operations in two.
//!
//! Every `unsafe fn` here requires AVX2, FMA, F16C, AVX512-VNNI and AVX512VL; the safe entries are
//! reachable only through a `Kernels` built for the path after its `is_supported` check.

// Rust 1.85 (our MSRV) requires `unsafe` around every `core::arch` intrinsic; from 1.87 the
// pointer-free ones are safe inside `#[target_feature]` functions, where the blocks that hold
// only those then look unused.
#![allow(unused_unsafe)]

use std::arch::asm;
use std::arch::x86_64::*;

use super::avx2::{
    dot_block_pairs, dot_block_pairs2, f16_pair_fields, f16_splat, hsum_f32_8, int_row_dots,
    load_q8, nibbles_pair, nibbles_single, q8_pair, scale_product, scale_products_2,
    scale_products_q4_1_single, scale_products_q4_1_split, sum_lanes_1_5,
};
use super::{row_dot2_entry, row_dot_entry};
use crate::quant::blocks::{BlockQ4_1, BlockQ8_0, BlockQ8_1};

row_dot_entry!(row_dot_q4_1, vec_dot_q4_1_q8_1, BlockQ4_1, BlockQ8_1);
row_dot_entry!(row_dot_q8_0, vec_dot_q8_0_q8_0, BlockQ8_0, BlockQ8_0);
row_dot2_entry!(row_dot2_q4_1, vec_dot2_q4_1_q8_1, BlockQ4_1, BlockQ8_1);
row_dot2_entry!(row_dot2_q8_0, vec_dot2_q8_0_q8_0, BlockQ8_0, BlockQ8_0);

/// `acc + Σ u·s` over each group of 4 bytes (u unsigned, s signed), per i32 lane, exact.
///
/// # Safety
/// AVX512-VNNI and AVX512VL must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dpbusd(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    let mut acc = acc;
    // SAFETY: the EVEX encoding of `vpdpbusd` on ymm registers exists on every CPU with
    // AVX512-VNNI and AVX512VL (the caller's contract); it reads and writes only the three
    // registers named.
    unsafe {
        asm!(
            "{{evex}} vpdpbusd {acc}, {u}, {s}",
            acc = inout(ymm_reg) acc,
            u = in(ymm_reg) u,
            s = in(ymm_reg) s,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    acc
}

/// `a | (b & c)` bitwise (`vpternlogd`, one instruction for the two).
///
/// # Safety
/// AVX512F and AVX512VL must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn or_and(a: __m256i, b: __m256i, c: __m256i) -> __m256i {
    let mut a = a;
    // SAFETY: the EVEX `vpternlogd` on ymm registers exists on every CPU with AVX512F and
    // AVX512VL (the caller's contract); it reads and writes only the three registers named.
    // Immediate 0xF8 is the truth table of A | (B & C) (A = 0xF0, B = 0xCC, C = 0xAA).
    unsafe {
        asm!(
            "vpternlogd {a}, {b}, {c}, 0xF8",
            a = inout(ymm_reg) a,
            b = in(ymm_reg) b,
            c = in(ymm_reg) c,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    a
}

/// `acc + madd(a, b)`: each i32 lane plus the sum of its two i16 products, exact and wrapping
/// like `_mm256_add_epi32(acc, _mm256_madd_epi16(a, b))` (one instruction instead of two).
///
/// # Safety
/// AVX512-VNNI and AVX512VL must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dpwssd(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
    let mut acc = acc;
    // SAFETY: as for `dpbusd` (`vpdpwssd` is AVX512-VNNI too).
    unsafe {
        asm!(
            "{{evex}} vpdpwssd {acc}, {a}, {b}",
            acc = inout(ymm_reg) acc,
            a = in(ymm_reg) a,
            b = in(ymm_reg) b,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    acc
}

/// `acc + x · *d` in every lane (`vfmadd231ps` with the scale broadcast from memory, so the
/// broadcast takes the load unit, not a shuffle).
///
/// # Safety
/// AVX512F and AVX512VL must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn fmadd_broadcast(acc: __m256, x: __m256, d: &f32) -> __m256 {
    let mut acc = acc;
    // SAFETY: reads the four bytes of `*d`, valid by the reference; the EVEX `vfmadd231ps`
    // with a `{1to8}` operand exists on every CPU with AVX512F and AVX512VL (the caller's
    // contract).
    unsafe {
        asm!(
            "vfmadd231ps {acc}, {x}, dword ptr [{d}]{{1to8}}",
            acc = inout(ymm_reg) acc,
            x = in(ymm_reg) x,
            d = in(reg) d,
            options(pure, readonly, nostack, preserves_flags),
        );
    }
    acc
}

/// Each byte of `x` times the 8×8 bit matrix in the same quadword of `m`, over GF(2)
/// (`vgf2p8affineqb` with no constant): bit `i` of a result byte is the parity of `x & m.byte[7 - i]`.
///
/// # Safety
/// GFNI and AVX must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn gf2p8affine(x: __m256i, m: __m256i) -> __m256i {
    let r: __m256i;
    // SAFETY: the VEX `vgf2p8affineqb` on ymm registers exists on every CPU with GFNI and AVX
    // (the caller's contract); it reads and writes only the three registers named.
    unsafe {
        asm!(
            "vgf2p8affineqb {r}, {x}, {m}, 0",
            r = lateout(ymm_reg) r,
            x = in(ymm_reg) x,
            m = in(ymm_reg) m,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    r
}

/// Byte `j` of each qword of the result: the 8 bits of the same qword of `data` starting at bit
/// `ctrl[j] & 63`, wrapping around (`vpmultishiftqb`).
///
/// # Safety
/// AVX512-VBMI and AVX512VL must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn multishift(ctrl: __m256i, data: __m256i) -> __m256i {
    let r: __m256i;
    // SAFETY: the EVEX `vpmultishiftqb` on ymm registers exists on every CPU with AVX512-VBMI
    // and AVX512VL (the caller's contract); it reads and writes only the three registers named.
    unsafe {
        asm!(
            "vpmultishiftqb {r}, {ctrl}, {data}",
            r = lateout(ymm_reg) r,
            ctrl = in(ymm_reg) ctrl,
            data = in(ymm_reg) data,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    r
}

/// Σ q·y for the pair arrangement (`q` nibbles, unsigned): `lo·ylo + hi·yhi`.
///
/// # Safety
/// As the module's functions.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q4_pair(lo: __m256i, hi: __m256i, ylo: __m256i, yhi: __m256i) -> __m256i {
    // SAFETY: register-only operations; the features are the caller's contract.
    unsafe { dpbusd(dpbusd(_mm256_setzero_si256(), lo, ylo), hi, yhi) }
}

/// Σ x·y over each group of 4 signed bytes, with the sign trick `|x| · sign(y, x)` (exact while
/// `y != -128`, which the activation quantizer guarantees).
///
/// # Safety
/// As the module's functions.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_i8(x: __m256i, y: __m256i) -> __m256i {
    // SAFETY: register-only operations; the features are the caller's contract.
    unsafe {
        dpbusd(
            _mm256_setzero_si256(),
            _mm256_sign_epi8(x, x),
            _mm256_sign_epi8(y, x),
        )
    }
}

int_row_dots!("avx2,fma,f16c");
