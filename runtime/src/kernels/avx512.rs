//! AVX-512 VNNI int kernels (x86_64), for [`KernelPath::Avx512`](super::KernelPath::Avx512):
//! the AVX2 kernels with each block's `maddubs` + `madd` pair replaced by one `vpdpbusd`
//! (unsigned × signed bytes summed in groups of 4 into i32 lanes, without saturation).
//! The float dots and the quantizers are AVX2's.
//!
//! `vpdpbusd` runs on 256-bit registers (AVX512-VNNI + AVX512VL), written as inline assembly:
//! the AVX-512 intrinsics and `#[target_feature]` names are stable only from Rust 1.89 and the
//! workspace supports 1.85. At our row lengths (18 to 48 blocks, one block per register) the
//! 512-bit form would need cross-block shuffles of the f16 scales and gains little on CPUs that
//! split 512-bit operations in two (AMD Zen 4).
//!
//! Every `unsafe fn` here requires AVX2, FMA, F16C, AVX512-VNNI and AVX512VL; the safe entries are
//! reachable only through a `Kernels` built for the path after its `is_supported` check.

// Rust 1.85 (our MSRV) requires `unsafe` around every `core::arch` intrinsic; from 1.87 the
// pointer-free ones are safe inside `#[target_feature]` functions, where the blocks that hold
// only those then look unused.
#![allow(unused_unsafe)]

use std::arch::asm;
use std::arch::x86_64::*;

use super::avx2::{bytes_from_nibbles_32, hsum_f32_8, load_q8, scale_product, scale_products_q4_1};
use super::{dot_blocks, row_dot_entry};
use crate::quant::blocks::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1};

row_dot_entry!(row_dot_q4_0, vec_dot_q4_0_q8_0, BlockQ4_0, BlockQ8_0);
row_dot_entry!(row_dot_q4_1, vec_dot_q4_1_q8_1, BlockQ4_1, BlockQ8_1);
row_dot_entry!(row_dot_q8_0, vec_dot_q8_0_q8_0, BlockQ8_0, BlockQ8_0);

/// `acc + Σ u·s` over each group of 4 bytes (u unsigned, s signed), per i32 lane, exact.
///
/// # Safety
/// AVX512-VNNI and AVX512VL must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dpbusd(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
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

/// One Q4_0 block's contribution added to `acc`: Σ (q4 - 8)·q8 as Σ q4·q8 - 8·Σ q8, both
/// unsigned × signed, so no sign trick is needed.
///
/// # Safety
/// As the module's functions.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_q4_0_q8_0(x: &BlockQ4_0, y: &BlockQ8_0, acc: __m256) -> __m256 {
    // SAFETY: the helpers read the blocks' own arrays; the features are the caller's contract.
    unsafe {
        let qy = load_q8(&y.qs);
        let zero = _mm256_setzero_si256();
        let dot = dpbusd(zero, bytes_from_nibbles_32(&x.qs), qy);
        let off = dpbusd(zero, _mm256_set1_epi8(8), qy);
        let q = _mm256_cvtepi32_ps(_mm256_sub_epi32(dot, off));
        _mm256_fmadd_ps(scale_product(x.d, y.d), q, acc)
    }
}

/// Σ (q4 - 8) · q8 per block, times both scales (twin:
/// [`scalar::vec_dot_q4_0_q8_0`](super::scalar::vec_dot_q4_0_q8_0)).
///
/// # Safety
/// As the module's functions.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_q4_0_q8_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    // SAFETY: the per-block helper needs exactly our features.
    unsafe {
        let (a0, a1) = dot_blocks!(x, y, _mm256_setzero_ps(), block_q4_0_q8_0);
        hsum_f32_8(_mm256_add_ps(a0, a1))
    }
}

/// One Q4_1 block's contribution: the scaled int sum added to `acc.0`, `m·s` to lane 1 of
/// `acc.1`.
///
/// # Safety
/// As the module's functions.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_q4_1_q8_1(x: &BlockQ4_1, y: &BlockQ8_1, acc: (__m256, __m128)) -> (__m256, __m128) {
    // SAFETY: the helpers read the blocks' own arrays; the features are the caller's contract.
    unsafe {
        let dm = scale_products_q4_1(x, y);
        let q = dpbusd(
            _mm256_setzero_si256(),
            bytes_from_nibbles_32(&x.qs),
            load_q8(&y.qs),
        );
        let sum = _mm256_fmadd_ps(_mm256_broadcastss_ps(dm), _mm256_cvtepi32_ps(q), acc.0);
        (sum, _mm_add_ps(acc.1, dm))
    }
}

/// Σ q4 · q8 per block times both scales, plus `m · s` (twin:
/// [`scalar::vec_dot_q4_1_q8_1`](super::scalar::vec_dot_q4_1_q8_1)).
///
/// # Safety
/// As the module's functions.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_q4_1_q8_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    // SAFETY: the per-block helper needs exactly our features.
    unsafe {
        let zero = (_mm256_setzero_ps(), _mm_setzero_ps());
        let (a0, a1) = dot_blocks!(x, y, zero, block_q4_1_q8_1);
        let summs = _mm_add_ps(a0.1, a1.1);
        hsum_f32_8(_mm256_add_ps(a0.0, a1.0)) + _mm_cvtss_f32(_mm_movehdup_ps(summs))
    }
}

/// One Q8_0 block's contribution added to `acc`, with the sign trick `|x| · sign(y, x)` (exact
/// while `y != -128`, which the activation quantizer guarantees).
///
/// # Safety
/// As the module's functions.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_q8_0_q8_0(x: &BlockQ8_0, y: &BlockQ8_0, acc: __m256) -> __m256 {
    // SAFETY: the helpers read the blocks' own arrays; the features are the caller's contract.
    unsafe {
        let (qx, qy) = (load_q8(&x.qs), load_q8(&y.qs));
        let q = dpbusd(
            _mm256_setzero_si256(),
            _mm256_sign_epi8(qx, qx),
            _mm256_sign_epi8(qy, qx),
        );
        _mm256_fmadd_ps(scale_product(x.d, y.d), _mm256_cvtepi32_ps(q), acc)
    }
}

/// Σ q8 · q8 per block, times both scales (twin:
/// [`scalar::vec_dot_q8_0_q8_0`](super::scalar::vec_dot_q8_0_q8_0)).
///
/// # Safety
/// As the module's functions.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    // SAFETY: the per-block helper needs exactly our features.
    unsafe {
        let (a0, a1) = dot_blocks!(x, y, _mm256_setzero_ps(), block_q8_0_q8_0);
        hsum_f32_8(_mm256_add_ps(a0, a1))
    }
}
