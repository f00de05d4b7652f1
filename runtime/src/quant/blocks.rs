//! The block structs of ggml's quantized formats, laid out byte for byte as ggml lays them out
//! (`ggml-common.h`), so a slice of the mapped file can be viewed as a slice of blocks.

use half::f16;

/// Elements per Q4_0 block.
pub const QK4_0: usize = 32;
/// Elements per Q4_1 block.
pub const QK4_1: usize = 32;
/// Elements per Q8_0 block.
pub const QK8_0: usize = 32;
/// Elements per Q8_1 block.
pub const QK8_1: usize = 32;

/// 4-bit symmetric: `x = d * (q - 8)`; element `j` in the low nibble of `qs[j]`, element
/// `j + 16` in the high nibble.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; QK4_0 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);

/// 4-bit with minimum: `x = d * q + m`; nibble layout as `BlockQ4_0`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; QK4_1 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);

/// 8-bit symmetric: `x = d * q`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; QK8_0],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

impl Default for BlockQ8_0 {
    fn default() -> Self {
        BlockQ8_0 {
            d: f16::ZERO,
            qs: [0; QK8_0],
        }
    }
}

/// 8-bit activations paired with Q4_1 weights: `x = d * q`, and `s = d * sum(q)` so the
/// weight minimum's contribution is one multiply per block.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8_1 {
    pub d: f16,
    pub s: f16,
    pub qs: [i8; QK8_1],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);

impl Default for BlockQ8_1 {
    fn default() -> Self {
        BlockQ8_1 {
            d: f16::ZERO,
            s: f16::ZERO,
            qs: [0; QK8_1],
        }
    }
}
