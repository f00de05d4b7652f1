//! `quant`: ggml's tensor element formats (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1
//! and the K-quants Q4_K, Q5_K, Q6_K, Q8_K) — the byte
//! layouts, the zero-copy casts from mapped bytes to block slices, and the scalar reference
//! quantizers and dequantizers, bit-exact with ggml's `quantize_row_*_ref` / `dequantize_row_*`.
//!
//! Owns: the [`Block`] contract (which types may be viewed in place over file bytes), the casts
//! [`blocks()`], [`blocks_mut`] and [`block_bytes`] (the only `unsafe` here), one module per format,
//! and the generic row API ([`quantize_row`], [`dequantize_row`]) used by the model loader and
//! `edgellm quantize`. It must not hold SIMD kernels or dot products (those are `kernels`), nor
//! allocate: every function writes into a buffer its caller owns.
//!
//! The scalar quantizers are the specification: every output byte equals what ggml's reference
//! C code produces (`tests/quant_vs_ggml.rs` checks it against ggml itself). Two places where
//! C leaves the answer to the build:
//! - ggml computes `x*id` and then adds 8.5 (Q4_0) or 0.5 (Q4_1) in two statements; a compiler
//!   may fuse them into one FMA, which changes levels near boundaries. The llama.cpp build
//!   that made the project's reference files does not fuse (all 210 Q4_0 tensors of
//!   `quantized_tensor_sha256.json` match unfused rounding, 67 match fused), and Rust never
//!   fuses, so we round twice. Q4_1's `+ 0.5` is affected the same way, more rarely.
//! - a float converted to `int8_t` out of range is undefined; ggml gets there only for blocks
//!   whose scale is so tiny that `1/d` overflows (magnitudes below ~1e-37), and we reproduce
//!   what GCC's code does on the target CPU (`c_f32_to_i8`).
//!
//! NaN inputs never panic, but their bytes are unspecified (ggml's own depend on element order).

pub mod bf16;
pub mod blocks;
pub mod f16;
pub mod k_quants;
pub mod q4_0;
pub mod q4_1;
pub mod q5_0;
pub mod q5_1;
pub mod q8_0;
pub mod q8_1;

use std::mem::{align_of, size_of};

use half::{bf16 as Bf16, f16 as F16};
use thiserror::Error;

use crate::ggml_type::GgmlType;

pub use self::bf16::{bf16_to_fp32, dequantize_row_bf16, fp32_to_bf16, quantize_row_bf16};
pub use self::blocks::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1, QK4_0, QK4_1, QK8_0, QK8_1};
pub use self::f16::{dequantize_row_f16, fp16_to_fp32, fp32_to_fp16, quantize_row_f16};
pub use self::k_quants::q4_k::{dequantize_row_q4_k, quantize_row_q4_k, BlockQ4K};
pub use self::k_quants::q5_k::{dequantize_row_q5_k, quantize_row_q5_k, BlockQ5K};
pub use self::k_quants::q6_k::{dequantize_row_q6_k, quantize_row_q6_k, BlockQ6K};
pub use self::k_quants::q8_k::{dequantize_row_q8_k, quantize_row_q8_k, BlockQ8K};
pub use self::k_quants::{K_SCALE_SIZE, QK_K};
pub use self::q4_0::{dequantize_row_q4_0, quantize_row_q4_0};
pub use self::q4_1::{dequantize_row_q4_1, quantize_row_q4_1};
pub use self::q5_0::{dequantize_row_q5_0, quantize_row_q5_0, BlockQ5_0, QK5_0};
pub use self::q5_1::{dequantize_row_q5_1, quantize_row_q5_1, BlockQ5_1, QK5_1};
pub use self::q8_0::{dequantize_row_q8_0, quantize_act_row_q8_0, quantize_row_q8_0};
pub use self::q8_1::{dequantize_row_q8_1, quantize_act_row_q8_1, quantize_row_q8_1};

/// What went wrong converting a row, naming the type and the sizes involved.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QuantError {
    #[error("{ty}: {op} is not supported (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q4_K, Q5_K, Q6_K, Q8_K)")]
    Unsupported { ty: GgmlType, op: &'static str },
    #[error("{ty}: {len} bytes is not a whole number of {block_bytes}-byte blocks")]
    PartialBlock {
        ty: GgmlType,
        len: usize,
        block_bytes: usize,
    },
    #[error("{ty}: buffer at address {addr:#x} is not aligned to {align} bytes")]
    Misaligned {
        ty: GgmlType,
        addr: usize,
        align: usize,
    },
    #[error("{ty}: {n} values is not a whole number of {block_size}-value blocks")]
    PartialRow {
        ty: GgmlType,
        n: usize,
        block_size: usize,
    },
    #[error("{ty} {op}: the source holds {src} values but the destination holds {dst}")]
    LengthMismatch {
        ty: GgmlType,
        op: &'static str,
        src: usize,
        dst: usize,
    },
}

/// A type whose values can be viewed in place over bytes of a ggml tensor: one block of
/// `ELEMS` elements of `TYPE`, laid out exactly as ggml lays it out.
///
/// # Safety
///
/// Implementors promise that the type is `#[repr(C)]` or `#[repr(transparent)]` with no padding
/// bytes, that every bit pattern of `size_of::<Self>()` bytes is a valid value, and that
/// `size_of::<Self>() == TYPE.type_size()` with `ELEMS == TYPE.block_size()`. The casts in this
/// module rely on all three.
pub unsafe trait Block: Copy + 'static {
    /// The ggml type this block belongs to.
    const TYPE: GgmlType;
    /// Elements per block (32 for the quantized formats, 1 for plain floats).
    const ELEMS: usize;
    /// Bytes per block (ggml's `type_size`).
    const BYTES: usize = size_of::<Self>();
}

// SAFETY: `#[repr(C)]` { f16, [u8; 16] }: 18 bytes, align 2, no padding (asserted in blocks.rs);
// any bits are a valid f16 and valid bytes.
unsafe impl Block for BlockQ4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
    const ELEMS: usize = QK4_0;
}
// SAFETY: `#[repr(C)]` { f16, f16, [u8; 16] }: 20 bytes, no padding; any bits are valid.
unsafe impl Block for BlockQ4_1 {
    const TYPE: GgmlType = GgmlType::Q4_1;
    const ELEMS: usize = QK4_1;
}
// SAFETY: `#[repr(C)]` { f16, [i8; 32] }: 34 bytes, no padding; any bits are valid.
unsafe impl Block for BlockQ8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;
    const ELEMS: usize = QK8_0;
}
// SAFETY: `#[repr(C)]` { f16, f16, [i8; 32] }: 36 bytes, no padding; any bits are valid.
unsafe impl Block for BlockQ8_1 {
    const TYPE: GgmlType = GgmlType::Q8_1;
    const ELEMS: usize = QK8_1;
}
// SAFETY: `#[repr(C)]` { f16, [u8; 4], [u8; 16] }: 22 bytes, align 2, no padding (asserted in
// q5_0.rs); any bits are valid.
unsafe impl Block for BlockQ5_0 {
    const TYPE: GgmlType = GgmlType::Q5_0;
    const ELEMS: usize = QK5_0;
}
// SAFETY: `#[repr(C)]` { f16, f16, [u8; 4], [u8; 16] }: 24 bytes, no padding; any bits are valid.
unsafe impl Block for BlockQ5_1 {
    const TYPE: GgmlType = GgmlType::Q5_1;
    const ELEMS: usize = QK5_1;
}
// SAFETY: `#[repr(C)]` { f16, f16, [u8; 12], [u8; 128] }: 144 bytes, align 2, no padding
// (asserted in k_quants/q4_k.rs); any bits are valid.
unsafe impl Block for BlockQ4K {
    const TYPE: GgmlType = GgmlType::Q4_K;
    const ELEMS: usize = QK_K;
}
// SAFETY: `#[repr(C)]` { f16, f16, [u8; 12], [u8; 32], [u8; 128] }: 176 bytes, no padding; any
// bits are valid.
unsafe impl Block for BlockQ5K {
    const TYPE: GgmlType = GgmlType::Q5_K;
    const ELEMS: usize = QK_K;
}
// SAFETY: `#[repr(C)]` { [u8; 128], [u8; 64], [i8; 16], f16 }: 210 bytes, the f16 at offset 208
// (even), align 2, no padding; any bits are valid.
unsafe impl Block for BlockQ6K {
    const TYPE: GgmlType = GgmlType::Q6_K;
    const ELEMS: usize = QK_K;
}
// SAFETY: `#[repr(C)]` { f32, [i8; 256], [i16; 16] }: 292 bytes, align 4, the i16s at offset 260
// (even), no padding; any bits are valid (an f32 may be NaN).
unsafe impl Block for BlockQ8K {
    const TYPE: GgmlType = GgmlType::Q8_K;
    const ELEMS: usize = QK_K;
}
// SAFETY: a primitive of 4 bytes; every bit pattern is some f32 (possibly NaN).
unsafe impl Block for f32 {
    const TYPE: GgmlType = GgmlType::F32;
    const ELEMS: usize = 1;
}
// SAFETY: `half::f16` is `#[repr(transparent)]` over u16; every bit pattern is valid.
unsafe impl Block for F16 {
    const TYPE: GgmlType = GgmlType::F16;
    const ELEMS: usize = 1;
}
// SAFETY: `half::bf16` is `#[repr(transparent)]` over u16; every bit pattern is valid.
unsafe impl Block for Bf16 {
    const TYPE: GgmlType = GgmlType::BF16;
    const ELEMS: usize = 1;
}

const _: () = assert!(size_of::<F16>() == 2 && size_of::<Bf16>() == 2);

/// Checks that `ptr..ptr+len` can hold whole, aligned `B`s.
fn check_cast<B: Block>(addr: usize, len: usize) -> Result<(), QuantError> {
    if !len.is_multiple_of(B::BYTES) {
        return Err(QuantError::PartialBlock {
            ty: B::TYPE,
            len,
            block_bytes: B::BYTES,
        });
    }
    if !addr.is_multiple_of(align_of::<B>()) {
        return Err(QuantError::Misaligned {
            ty: B::TYPE,
            addr,
            align: align_of::<B>(),
        });
    }
    Ok(())
}

/// Views `bytes` as blocks without copying. Fails if the length is not a whole number of blocks
/// or the start is not aligned for `B` (GGUF aligns tensor data to 32 bytes, so tensors of a
/// mapped file always are).
pub fn blocks<B: Block>(bytes: &[u8]) -> Result<&[B], QuantError> {
    if bytes.is_empty() {
        // an empty slice's pointer may be dangling and unaligned for `B`
        return Ok(&[]);
    }
    check_cast::<B>(bytes.as_ptr() as usize, bytes.len())?;
    // SAFETY: the pointer is aligned for `B` and the length is a whole number of `B`s (checked
    // above); `Block` guarantees every bit pattern is a valid `B`; the result borrows `bytes`, so
    // the memory stays alive and unaliased by writers for its lifetime.
    Ok(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<B>(), bytes.len() / B::BYTES) })
}

/// Views `bytes` as mutable blocks without copying; same checks as [`blocks()`].
pub fn blocks_mut<B: Block>(bytes: &mut [u8]) -> Result<&mut [B], QuantError> {
    if bytes.is_empty() {
        return Ok(&mut []);
    }
    check_cast::<B>(bytes.as_ptr() as usize, bytes.len())?;
    let n = bytes.len() / B::BYTES;
    // SAFETY: aligned and whole (checked above); every bit pattern is a valid `B` and `B` has no
    // padding (the `Block` contract), so writes through the result leave only initialized bytes
    // behind; the exclusive borrow of `bytes` is moved into the result.
    Ok(unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<B>(), n) })
}

/// The bytes of `blocks`, as ggml would store them (to write a file or hash a tensor).
pub fn block_bytes<B: Block>(blocks: &[B]) -> &[u8] {
    // SAFETY: `B` has no padding (the `Block` contract), so all `size_of_val(blocks)` bytes are
    // initialized; u8 has alignment 1; the result borrows `blocks`.
    unsafe {
        std::slice::from_raw_parts(blocks.as_ptr().cast::<u8>(), std::mem::size_of_val(blocks))
    }
}

/// True for the types [`quantize_row`] and [`dequantize_row`] handle.
pub fn is_supported(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::F32
            | GgmlType::F16
            | GgmlType::BF16
            | GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q8_0
            | GgmlType::Q8_1
            | GgmlType::Q4_K
            | GgmlType::Q5_K
            | GgmlType::Q6_K
            | GgmlType::Q8_K
    )
}

/// Decodes `src`, a whole number of `ty` blocks (aligned for the block type, as tensor data in a
/// mapped GGUF file is), into `dst`, which must hold exactly the number of values `src` encodes.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    match ty {
        GgmlType::F32 => dequantize_with(src, dst, |x: &[f32], y| y.copy_from_slice(x)),
        GgmlType::F16 => dequantize_with(src, dst, dequantize_row_f16),
        GgmlType::BF16 => dequantize_with(src, dst, dequantize_row_bf16),
        GgmlType::Q4_0 => dequantize_with(src, dst, dequantize_row_q4_0),
        GgmlType::Q4_1 => dequantize_with(src, dst, dequantize_row_q4_1),
        GgmlType::Q8_0 => dequantize_with(src, dst, dequantize_row_q8_0),
        GgmlType::Q8_1 => dequantize_with(src, dst, dequantize_row_q8_1),
        GgmlType::Q5_0 => dequantize_with(src, dst, dequantize_row_q5_0),
        GgmlType::Q5_1 => dequantize_with(src, dst, dequantize_row_q5_1),
        GgmlType::Q4_K => dequantize_with(src, dst, dequantize_row_q4_k),
        GgmlType::Q5_K => dequantize_with(src, dst, dequantize_row_q5_k),
        GgmlType::Q6_K => dequantize_with(src, dst, dequantize_row_q6_k),
        GgmlType::Q8_K => dequantize_with(src, dst, dequantize_row_q8_k),
        _ => Err(QuantError::Unsupported {
            ty,
            op: "dequantize",
        }),
    }
}

/// Encodes `src` as `ty` into `dst`, which must be exactly `ty.row_bytes(src.len())` bytes and
/// aligned for the block type. `src.len()` must be a multiple of the type's block size.
pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    match ty {
        GgmlType::F32 => quantize_with(src, dst, |x, y: &mut [f32]| y.copy_from_slice(x)),
        GgmlType::F16 => quantize_with(src, dst, quantize_row_f16),
        GgmlType::BF16 => quantize_with(src, dst, quantize_row_bf16),
        GgmlType::Q4_0 => quantize_with(src, dst, quantize_row_q4_0),
        GgmlType::Q4_1 => quantize_with(src, dst, quantize_row_q4_1),
        GgmlType::Q8_0 => quantize_with(src, dst, quantize_row_q8_0),
        GgmlType::Q8_1 => quantize_with(src, dst, quantize_row_q8_1),
        GgmlType::Q5_0 => quantize_with(src, dst, quantize_row_q5_0),
        GgmlType::Q5_1 => quantize_with(src, dst, quantize_row_q5_1),
        GgmlType::Q4_K => quantize_with(src, dst, quantize_row_q4_k),
        GgmlType::Q5_K => quantize_with(src, dst, quantize_row_q5_k),
        GgmlType::Q6_K => quantize_with(src, dst, quantize_row_q6_k),
        GgmlType::Q8_K => quantize_with(src, dst, quantize_row_q8_k),
        _ => Err(QuantError::Unsupported { ty, op: "quantize" }),
    }
}

fn dequantize_with<B: Block>(
    src: &[u8],
    dst: &mut [f32],
    f: impl FnOnce(&[B], &mut [f32]),
) -> Result<(), QuantError> {
    let x = blocks::<B>(src)?;
    if x.len() * B::ELEMS != dst.len() {
        return Err(QuantError::LengthMismatch {
            ty: B::TYPE,
            op: "dequantize",
            src: x.len() * B::ELEMS,
            dst: dst.len(),
        });
    }
    f(x, dst);
    Ok(())
}

fn quantize_with<B: Block>(
    src: &[f32],
    dst: &mut [u8],
    f: impl FnOnce(&[f32], &mut [B]),
) -> Result<(), QuantError> {
    if !src.len().is_multiple_of(B::ELEMS) {
        return Err(QuantError::PartialRow {
            ty: B::TYPE,
            n: src.len(),
            block_size: B::ELEMS,
        });
    }
    let y = blocks_mut::<B>(dst)?;
    if y.len() * B::ELEMS != src.len() {
        return Err(QuantError::LengthMismatch {
            ty: B::TYPE,
            op: "quantize",
            src: src.len(),
            dst: y.len() * B::ELEMS,
        });
    }
    f(src, y);
    Ok(())
}

/// The smallest and largest value of a block, scanned as ggml's reference quantizers scan it
/// (Q4_1, Q5_1), so ties and signed zeros resolve the same way.
fn block_min_max(xb: &[f32]) -> (f32, f32) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in xb {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// The value of largest magnitude in a block, sign kept, first one on ties (Q4_0, Q5_0).
fn block_signed_absmax(xb: &[f32]) -> f32 {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in xb {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

/// Panics unless `x` holds exactly `n_blocks` blocks of `qk` values: the typed row functions'
/// precondition, a programming error (callers size both buffers from the same row length).
#[inline]
#[track_caller]
fn assert_row(name: &str, n_values: usize, n_blocks: usize, qk: usize) {
    assert!(
        n_values == n_blocks * qk,
        "{name}: {n_values} values do not fill {n_blocks} blocks of {qk}"
    );
}

/// C's `(int8_t)v` for a float, as GCC compiles it: convert to a 32-bit integer with the CPU's
/// truncating instruction, then keep the low byte. Inside [-128, 127] this is plain truncation
/// toward zero. Outside it C is undefined and CPUs differ; ggml reaches that case only when a
/// block's scale is so small that `1/d` overflows to infinity (all magnitudes below ~1e-37),
/// and we copy the target's behaviour so the bytes still match ggml built for it:
/// x86's `cvttss2si` returns `0x8000_0000` for NaN and out-of-range values (low byte 0).
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
#[inline(always)]
fn c_f32_to_i8(v: f32) -> i8 {
    let i = if (-2_147_483_648.0..2_147_483_648.0).contains(&v) {
        v as i32
    } else {
        i32::MIN
    };
    i as i8
}

/// C's `(int8_t)v` for a float, as GCC compiles it on Arm (and elsewhere): `fcvtzs` saturates to
/// the 32-bit range and turns NaN into 0, exactly Rust's `as i32`; the low byte is kept.
#[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
#[inline(always)]
fn c_f32_to_i8(v: f32) -> i8 {
    (v as i32) as i8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_block<B: Block>() {
        assert_eq!(B::BYTES, B::TYPE.type_size(), "{}", B::TYPE);
        assert_eq!(B::ELEMS, B::TYPE.block_size(), "{}", B::TYPE);
        assert!(is_supported(B::TYPE));
    }

    #[test]
    fn block_sizes_match_ggml_type_table() {
        check_block::<BlockQ4_0>();
        check_block::<BlockQ4_1>();
        check_block::<BlockQ8_0>();
        check_block::<BlockQ8_1>();
        check_block::<BlockQ5_0>();
        check_block::<BlockQ5_1>();
        check_block::<BlockQ4K>();
        check_block::<BlockQ5K>();
        check_block::<BlockQ6K>();
        check_block::<BlockQ8K>();
        check_block::<f32>();
        check_block::<F16>();
        check_block::<Bf16>();
    }

    #[repr(C, align(8))]
    struct Aligned([u8; 80]);

    #[test]
    fn casts_check_length_and_alignment() {
        let mut storage = Aligned([0; 80]);
        let bytes = &mut storage.0;
        assert_eq!(blocks::<BlockQ4_0>(&bytes[..36]).map(|b| b.len()), Ok(2));
        assert_eq!(
            blocks::<BlockQ4_0>(&bytes[..35]).unwrap_err(),
            QuantError::PartialBlock {
                ty: GgmlType::Q4_0,
                len: 35,
                block_bytes: 18
            }
        );
        let addr = bytes[1..].as_ptr() as usize;
        assert_eq!(
            blocks::<BlockQ8_0>(&bytes[1..35]).unwrap_err(),
            QuantError::Misaligned {
                ty: GgmlType::Q8_0,
                addr,
                align: 2
            }
        );
        assert!(blocks::<f32>(&bytes[2..6]).is_err());
        assert_eq!(blocks::<f32>(&bytes[4..12]).map(|b| b.len()), Ok(2));
        assert_eq!(blocks::<BlockQ8_1>(&[]).map(|b| b.len()), Ok(0));
        assert!(blocks_mut::<F16>(&mut bytes[1..5]).is_err());
    }

    #[test]
    fn casts_follow_ggml_byte_layout() {
        let mut storage = Aligned([0; 80]);
        let bytes = &mut storage.0;
        {
            let b = blocks_mut::<BlockQ8_1>(&mut bytes[..72]).unwrap();
            b[1].d = F16::from_f32(1.5);
            b[1].s = F16::from_f32(-2.0);
            b[1].qs[0] = -2;
            b[1].qs[31] = 7;
        }
        // block 1 starts at byte 36: d (little-endian f16), s, then the 32 quants.
        assert_eq!(bytes[36..38], F16::from_f32(1.5).to_bits().to_le_bytes());
        assert_eq!(bytes[38..40], F16::from_f32(-2.0).to_bits().to_le_bytes());
        assert_eq!(bytes[40], 0xFE);
        assert_eq!(bytes[71], 7);
        let view = blocks::<BlockQ8_1>(&bytes[..72]).unwrap();
        assert_eq!(block_bytes(view), &bytes[..72]);
    }

    #[test]
    fn row_api_names_type_and_sizes_in_errors() {
        let mut out = [0.0f32; 32];
        let mut storage = Aligned([0; 80]);
        let e = dequantize_row(GgmlType::Q2_K, &storage.0[..0], &mut out).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Q2_K: dequantize is not supported (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q4_K, Q5_K, Q6_K, Q8_K)"
        );
        let e = dequantize_row(GgmlType::Q4_1, &storage.0[..40], &mut out).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Q4_1 dequantize: the source holds 64 values but the destination holds 32"
        );
        let e = quantize_row(GgmlType::Q8_0, &out[..31], &mut storage.0[..34]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Q8_0: 31 values is not a whole number of 32-value blocks"
        );
        let e = quantize_row(GgmlType::Q8_0, &out, &mut storage.0[..68]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Q8_0 quantize: the source holds 32 values but the destination holds 64"
        );
        let e = quantize_row(GgmlType::Q8_0, &out, &mut storage.0[..33]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Q8_0: 33 bytes is not a whole number of 34-byte blocks"
        );
        assert!(quantize_row(GgmlType::Q4_K, &out, &mut storage.0[..18]).is_err());
        for ty in GgmlType::ALL {
            let supported = dequantize_row(ty, &[], &mut []).is_ok();
            assert_eq!(supported, is_supported(ty), "{ty}");
        }
    }

    #[test]
    fn c_f32_to_i8_truncates_in_range() {
        for (v, q) in [
            (0.0, 0),
            (-0.9, 0),
            (0.9, 0),
            (127.9, 127),
            (-128.9, -128),
            (15.5, 15),
        ] {
            assert_eq!(c_f32_to_i8(v), q, "{v}");
        }
        // out of the int8 range, the low byte of the 32-bit conversion (C's wrap)
        assert_eq!(c_f32_to_i8(300.0), 300i32 as i8);
        assert_eq!(c_f32_to_i8(-200.0), -200i32 as i8);
        assert_eq!(c_f32_to_i8(f32::NAN), 0);
        assert_eq!(c_f32_to_i8(f32::NEG_INFINITY), 0);
    }
}
