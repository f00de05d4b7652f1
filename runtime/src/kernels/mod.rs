//! Kernels: the dot products every matmul reduces to, per instruction set, behind one dispatch.
//!
//! A [`Kernels`] value is a table of row-dot functions for one [`KernelPath`]. It can only be
//! built by [`Kernels::new`], which checks the CPU first: holding one proves its instructions
//! exist, so the `#[target_feature]` functions it points to are never reached on a CPU without
//! them (no SIGILL). The path is chosen once at start-up ([`Kernels::from_env`]: best available,
//! or `EDGELLM_KERNELS=scalar|avx2|avx512|neon|neon-dotprod`).
//!
//! Every weight type pairs with an activation type (ggml's `vec_dot_type`): Q4_0, Q5_0 and Q8_0
//! with Q8_0, Q4_1 and Q5_1 with Q8_1, the K-quants (Q4_K, Q5_K, Q6_K) with Q8_K, F16 with F16,
//! F32 and BF16 with F32. Activations are quantized once per
//! matmul into a preallocated buffer ([`Kernels::quantize_act`]); the row dots then read them.
//! The scalar functions in [`scalar`] are the specification.
//!
//! One module per instruction set, each with the same table entries: `avx2` (x86_64 AVX2, FMA
//! and F16C), `avx512` (its int dots with AVX512-VNNI `vpdpbusd`, and `avx512_zmm`'s Q4_0 dots
//! on 512-bit registers; floats and quantizers from `avx2`) and `neon` (aarch64, with and without the dot-product extension). Their int dots are
//! exact in the integers, so they differ from the scalar ones only in the order of the float
//! additions; their activation quantizers write exactly the scalar bytes. They rely on one
//! property of the activations that the quantizers guarantee: quants lie in [-127, 127].
//! Instructions whose intrinsics were not stable in Rust 1.85 (`vpdpbusd`, `sdot`, `fcvtl`) are
//! one-line `asm!` blocks; the workspace now needs 1.89, whose AVX-512 intrinsics `avx512_zmm`
//! uses.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod avx512_zmm;
mod gemm;
mod gemm_kquant;
#[cfg(target_arch = "x86_64")]
mod kquant_avx2;
#[cfg(target_arch = "aarch64")]
mod kquant_neon;
pub mod matmul;
#[cfg(target_arch = "aarch64")]
mod neon;
pub mod scalar;
pub mod threadpool;

use std::fmt;

use half::f16;
use thiserror::Error;

use crate::ggml_type::GgmlType;
use crate::quant::blocks::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1};
use crate::quant::{self, Block, BlockQ4K, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K};

/// An instruction-set family the kernels are written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelPath {
    Scalar,
    Avx2,
    Avx512,
    Neon,
    NeonDotprod,
}

impl KernelPath {
    pub const ALL: [KernelPath; 5] = [
        KernelPath::Scalar,
        KernelPath::Avx2,
        KernelPath::Avx512,
        KernelPath::Neon,
        KernelPath::NeonDotprod,
    ];

    /// The name used by `EDGELLM_KERNELS`, `--kernels` and reports.
    pub fn name(self) -> &'static str {
        match self {
            KernelPath::Scalar => "scalar",
            KernelPath::Avx2 => "avx2",
            KernelPath::Avx512 => "avx512",
            KernelPath::Neon => "neon",
            KernelPath::NeonDotprod => "neon-dotprod",
        }
    }

    /// Parses a path name.
    pub fn from_name(name: &str) -> Result<KernelPath, KernelError> {
        KernelPath::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| KernelError::UnknownPath(name.to_string()))
    }

    /// Whether this CPU can run the path.
    pub fn is_supported(self) -> bool {
        match self {
            KernelPath::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            KernelPath::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            KernelPath::Avx512 => {
                KernelPath::Avx2.is_supported()
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "aarch64")]
            KernelPath::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[cfg(target_arch = "aarch64")]
            KernelPath::NeonDotprod => {
                std::arch::is_aarch64_feature_detected!("neon")
                    && std::arch::is_aarch64_feature_detected!("dotprod")
            }
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Whether this build has kernels for the path (the CPU may still lack it): the x86 paths
    /// on x86_64, the Arm ones on aarch64.
    pub fn is_implemented(self) -> bool {
        match self {
            KernelPath::Scalar => true,
            KernelPath::Avx2 | KernelPath::Avx512 => cfg!(target_arch = "x86_64"),
            KernelPath::Neon | KernelPath::NeonDotprod => cfg!(target_arch = "aarch64"),
        }
    }

    /// The fastest path this build implements and this CPU supports.
    pub fn best() -> KernelPath {
        [
            KernelPath::Avx512,
            KernelPath::Avx2,
            KernelPath::NeonDotprod,
            KernelPath::Neon,
        ]
        .into_iter()
        .find(|p| p.is_implemented() && p.is_supported())
        .unwrap_or(KernelPath::Scalar)
    }
}

impl fmt::Display for KernelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// CPU features relevant to the kernels, as detected at run time (for reports).
pub fn cpu_features() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut v = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! probe {
            ($($f:tt),*) => {$(
                if std::arch::is_x86_feature_detected!($f) { v.push($f); }
            )*};
        }
        probe!(
            "sse4.2",
            "avx",
            "f16c",
            "fma",
            "avx2",
            "avx512f",
            "avx512bw",
            "avx512vl",
            "avx512vnni",
            "avx512vbmi",
            "gfni",
            "avx512bf16",
            "avxvnni"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! probe {
            ($($f:tt),*) => {$(
                if std::arch::is_aarch64_feature_detected!($f) { v.push($f); }
            )*};
        }
        probe!("neon", "fp16", "dotprod", "i8mm", "sve");
    }
    v
}

#[derive(Debug, Error)]
pub enum KernelError {
    #[error("unknown kernel path '{0}' (expected scalar, avx2, avx512, neon or neon-dotprod)")]
    UnknownPath(String),
    #[error("kernel path '{0}' is not supported by this CPU (detected features: {1})")]
    Unsupported(KernelPath, String),
    #[error("kernel path '{0}' is not built for this architecture")]
    NotImplemented(KernelPath),
    #[error("no kernel for weights of type {0}")]
    UnsupportedType(GgmlType),
    #[error("matmul operands disagree in shape")]
    Shape,
    #[error("EDGELLM_KERNELS: {0}")]
    Env(Box<KernelError>),
}

/// One weight row (bytes of its blocks) dotted with one activation row (bytes of its blocks).
pub type RowDot = fn(w: &[u8], a: &[u8]) -> f32;

/// Two weight rows dotted with one activation row: `[w0 · a, w1 · a]`, each equal to the
/// path's [`RowDot`] bit for bit (same per-row order of operations), with the activation's
/// loads and scale conversions shared by both rows.
pub type RowDot2 = fn(w0: &[u8], w1: &[u8], a: &[u8]) -> [f32; 2];

/// Rows of a matrix dotted with `g` vectors: `out[h·n_rows + r] = rows[r·stride..][..n] · xs[h·n..][..n]`
/// for every vector `h < g = xs.len() / n` and row `r < n_rows = out.len() / g` (panics unless
/// `n > 0`, `xs` holds whole vectors, `out` whole output rows and `rows` all `n_rows` rows).
/// Attention's two products have this shape, for the query heads of one GQA group at once:
/// the cached keys (`stride` = the KV width) against the queries, then the transposed values
/// (`stride` = the context length) against the probabilities. The vectors are f32 holding values
/// of the row type (an f16 cache's queries and probabilities rounded to f16 first), so their
/// products are those of ggml's f16 dot. The SIMD kernels convert each row chunk once for all
/// vectors and reduce several sums' lanes together. Each result is `row · vector` up to the
/// order of float additions: the scalar kernels follow llama.cpp's for `order`, and so do the
/// NEON ones for f16 rows (bit for bit); the x86 SIMD ones and f32 rows sum in their own.
pub type RowsDot<T> =
    fn(rows: &[T], stride: usize, xs: &[f32], n: usize, order: SumOrder, out: &mut [f32]);

/// The order llama.cpp's x86 build sums an attention product in, which the scalar f16
/// [`RowsDot`] follows, and the NEON one (the x86 SIMD kernels keep their own lane order). A prompt batch goes to
/// llamafile's tinyBLAS, a single token to `ggml_vec_dot_f16`, and they group differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SumOrder {
    /// tinyBLAS (two or more query rows): 16 lanes, lane `l` a chain of fused multiply-adds
    /// over products `l, l + 16, ...`, then reduced as `_mm512_reduce_add_ps`.
    Batch,
    /// `ggml_vec_dot_f16` over `padded` values (the vector, then zeros: llama.cpp pads the KV
    /// length to 32): 4 × 16 lanes of fused multiply-adds over each whole 64, reduced, then
    /// the other products one by one in f64.
    Single { padded: usize },
}

/// The exponentials of a softmax in place: `x[i] = e^(x[i] - max)`, returning their sum in f64
/// (ggml's `ggml_vec_soft_max_f32`). Every path computes `e^x` with ggml's `ggml_v_expf` (the
/// Arm optimized-routines algorithm, within 1.5 ulp of the exact value): the scalar and NEON
/// paths exactly as llama.cpp's AVX-512 build does, in its order of additions (bit for bit),
/// the AVX2 kernel as ggml's AVX2 variant (`k + k·j`) and in its own order, so it differs
/// from the scalar one by an ulp or two per value.
pub type SoftMaxExp = fn(x: &mut [f32], max: f32) -> f64;

/// The gated activation of a feed-forward block, in place: `gate[i] = act(gate[i]) · up[i]`.
pub type GatedAct = fn(gate: &mut [f32], up: &[f32]);

/// Quantizes one f32 row into Q8_0 activation blocks (`x.len() == 32 * y.len()`).
type QuantizeQ8_0 = fn(x: &[f32], y: &mut [BlockQ8_0]);
/// Quantizes one f32 row into Q8_1 activation blocks (`x.len() == 32 * y.len()`).
type QuantizeQ8_1 = fn(x: &[f32], y: &mut [BlockQ8_1]);
/// Quantizes one f32 row into Q8_K activation blocks (`x.len() == 256 * y.len()`).
type QuantizeQ8K = fn(x: &[f32], y: &mut [BlockQ8K]);

/// The kernel table for one path. See the module doc for why it can only be built by `new`.
#[derive(Clone, Copy)]
pub struct Kernels {
    path: KernelPath,
    q4_0: RowDot,
    q4_1: RowDot,
    q8_0: RowDot,
    q5_0: RowDot,
    q5_1: RowDot,
    q4_k: RowDot,
    q5_k: RowDot,
    q6_k: RowDot,
    f16: RowDot,
    f32: RowDot,
    bf16: RowDot,
    /// Two-row dots where a path has them (decode is bound by per-row work on small cores).
    q4_0x2: Option<RowDot2>,
    q4_1x2: Option<RowDot2>,
    q8_0x2: Option<RowDot2>,
    q5_0x2: Option<RowDot2>,
    q4_kx2: Option<RowDot2>,
    q6_kx2: Option<RowDot2>,
    /// The K-quant row dots for the tokens of a prompt batch that llama.cpp's x86 build sums
    /// in other orders than one token's: the scalar path's, which follows it, and the NEON
    /// paths', which equal it bit for bit ([`Kernels::row_dot_batch`]).
    kquant_batch: Option<KquantBatchDots>,
    /// One-token Q4_0 dots that read the activation row in their own layout.
    q4_0_prepared: Option<PreparedDots>,
    /// One-token Q5_0 and Q5_1 matrix products: all rows in one call, several at a time, each
    /// equal to `q5_0` / `q5_1` bit for bit ([`Kernels::matrix_rows`]).
    q5_0_rows: Option<MatrixRows>,
    q5_1_rows: Option<MatrixRows>,
    /// The KV cache's multi-row dots (attention).
    f16_rows: RowsDot<f16>,
    f32_rows: RowsDot<f32>,
    soft_max: SoftMaxExp,
    /// SwiGLU: `silu(gate) · up`, SiLU as ggml's `ggml_v_silu` computes it (`x / (1 + e^-x)`
    /// with the vector exponential of [`SoftMaxExp`]).
    swiglu: GatedAct,
    quantize_q8_0: QuantizeQ8_0,
    quantize_q8_1: QuantizeQ8_1,
    quantize_q8_k: QuantizeQ8K,
}

/// The batch from which llama.cpp's x86 build sends K-quant matrices it does not repack
/// through its tiled matmul (`ggml_tiled_min_batch`).
pub const TILED_MIN_BATCH: usize = 8;

/// One-token row dots that read the activation row in a layout of their own, made once per
/// matrix product ([`Kernels::prepared_dots`]): the rearranging a kernel would otherwise repeat
/// for every pair of weight rows.
#[derive(Clone, Copy)]
pub struct PreparedDots {
    /// Bytes of the prepared row for an activation row of that many bytes.
    pub bytes: fn(act_row_bytes: usize) -> usize,
    /// Writes the prepared form of an activation row (`out` is `bytes` long).
    pub prepare: fn(act: &[u8], out: &mut [u8]),
    /// [`RowDot`] with the prepared row in place of the activation row.
    pub dot: RowDot,
    /// What a one-token matrix product runs on the prepared row: all its rows in one call,
    /// each equal bit for bit to [`PreparedDots::dot`] of the row.
    pub rows: MatrixRows,
}

/// `(weights, row bytes, activation row, out)`: every row of `weights` (rows of `row bytes`)
/// against one activation row (in the layout the kernel reads), one value per row into `out`,
/// with the loop over rows inside the kernel.
pub type MatrixRows = fn(w: &[u8], row_bytes: usize, act: &[u8], out: &mut [f32]);

/// See [`Kernels::row_dot_batch`].
#[derive(Clone, Copy)]
struct KquantBatchDots {
    q4_k_group4: RowDot,
    q4_k_tiled: RowDot,
    q5_k_tiled: RowDot,
    q6_k_tiled: RowDot,
}

impl fmt::Debug for Kernels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kernels").field("path", &self.path).finish()
    }
}

impl Kernels {
    /// The table for `path`, after checking that this CPU supports it.
    pub fn new(path: KernelPath) -> Result<Kernels, KernelError> {
        if !path.is_supported() {
            return Err(KernelError::Unsupported(path, cpu_features().join(" ")));
        }
        if !path.is_implemented() {
            return Err(KernelError::NotImplemented(path));
        }
        // Every entry below enables at most the features `is_supported` just confirmed: this
        // match is the only place the ISA modules' entries are reachable from.
        let scalar = Kernels::scalar();
        // The AVX-512 path's Q5_0/Q5_1 dots split the nibbles with one GFNI instruction and
        // place the fifth bits with one VBMI instruction where the CPU has both.
        #[cfg(target_arch = "x86_64")]
        let vbmi_gfni = std::arch::is_x86_feature_detected!("avx512vbmi")
            && std::arch::is_x86_feature_detected!("gfni");
        let k = match path {
            KernelPath::Scalar => scalar,
            #[cfg(target_arch = "x86_64")]
            KernelPath::Avx2 => Kernels {
                path,
                q4_0: avx2::row_dot_q4_0,
                q4_1: avx2::row_dot_q4_1,
                q8_0: avx2::row_dot_q8_0,
                f16: avx2::row_dot_f16,
                f32: avx2::row_dot_f32,
                bf16: avx2::row_dot_bf16,
                f16_rows: avx2::rows_dot_f16,
                f32_rows: avx2::rows_dot_f32,
                soft_max: avx2::soft_max_f32,
                swiglu: avx2::swiglu_f32,
                quantize_q8_0: avx2::quantize_row_q8_0_entry,
                quantize_q8_1: avx2::quantize_row_q8_1_entry,
                q4_k: kquant_avx2::row_dot_q4_k,
                q5_k: kquant_avx2::row_dot_q5_k,
                q6_k: kquant_avx2::row_dot_q6_k,
                q5_0: kquant_avx2::row_dot_q5_0,
                q5_1: kquant_avx2::row_dot_q5_1,
                q4_0x2: Some(avx2::row_dot2_q4_0),
                q4_1x2: Some(avx2::row_dot2_q4_1),
                q8_0x2: Some(avx2::row_dot2_q8_0),
                q4_kx2: Some(kquant_avx2::row_dot2_q4_k),
                q6_kx2: Some(kquant_avx2::row_dot2_q6_k),
                q5_0x2: Some(kquant_avx2::row_dot2_q5_0_avx2),
                kquant_batch: None,
                q4_0_prepared: None,
                q5_0_rows: Some(kquant_avx2::rows_q5_0_avx2),
                q5_1_rows: Some(kquant_avx2::rows_q5_1_avx2),
                // no SIMD kernels yet: the scalar ones
                ..scalar
            },
            #[cfg(target_arch = "x86_64")]
            KernelPath::Avx512 => Kernels {
                path,
                // One token reads a prepared row (`q4_0_prepared`); batches go to the gemm.
                q4_0: avx2::row_dot_q4_0,
                q4_1: avx512::row_dot_q4_1,
                q8_0: avx512::row_dot_q8_0,
                q4_0x2: Some(avx2::row_dot2_q4_0),
                q4_1x2: Some(avx512::row_dot2_q4_1),
                q8_0x2: Some(avx512::row_dot2_q8_0),
                q5_0x2: Some(if vbmi_gfni {
                    kquant_avx2::row_dot2_q5_0_vbmi_gfni
                } else {
                    kquant_avx2::row_dot2_q5_0_vnni
                }),
                q5_0_rows: Some(if vbmi_gfni {
                    kquant_avx2::rows_q5_0_vbmi_gfni
                } else {
                    kquant_avx2::rows_q5_0_vnni
                }),
                q5_1_rows: Some(if vbmi_gfni {
                    kquant_avx2::rows_q5_1_vbmi_gfni
                } else {
                    kquant_avx2::rows_q5_1_vnni
                }),
                q4_kx2: Some(kquant_avx2::row_dot2_q4_k_vnni),
                q6_kx2: Some(kquant_avx2::row_dot2_q6_k_vnni),
                kquant_batch: None,
                q4_0_prepared: Some(PreparedDots {
                    bytes: avx512_zmm::prepared_q8_0_bytes,
                    prepare: avx512_zmm::prepare_q8_0,
                    dot: avx512_zmm::row_dot_q4_0_prepared,
                    rows: avx512_zmm::rows_q4_0_prepared,
                }),
                // The float dots are memory-bound at our row lengths: AVX2's serve.
                f16: avx2::row_dot_f16,
                f32: avx2::row_dot_f32,
                bf16: avx2::row_dot_bf16,
                f16_rows: avx2::rows_dot_f16,
                f32_rows: avx2::rows_dot_f32,
                soft_max: avx2::soft_max_f32,
                swiglu: avx2::swiglu_f32,
                quantize_q8_0: avx2::quantize_row_q8_0_entry,
                quantize_q8_1: avx2::quantize_row_q8_1_entry,
                q4_k: kquant_avx2::row_dot_q4_k,
                q5_k: kquant_avx2::row_dot_q5_k,
                q6_k: kquant_avx2::row_dot_q6_k,
                q5_0: kquant_avx2::row_dot_q5_0,
                q5_1: kquant_avx2::row_dot_q5_1,
                // no SIMD kernels yet: the scalar ones
                ..scalar
            },
            #[cfg(target_arch = "aarch64")]
            KernelPath::Neon => Kernels {
                path,
                q4_0: neon::row_dot_q4_0,
                q4_1: neon::row_dot_q4_1,
                q8_0: neon::row_dot_q8_0,
                f16: neon::row_dot_f16,
                f32: neon::row_dot_f32,
                bf16: neon::row_dot_bf16,
                f16_rows: neon::rows_dot_f16,
                f32_rows: neon::rows_dot_f32,
                soft_max: neon::soft_max_f32,
                swiglu: neon::swiglu_f32,
                quantize_q8_0: neon::quantize_row_q8_0_entry,
                quantize_q8_1: neon::quantize_row_q8_1_entry,
                q4_k: kquant_neon::row_dot_q4_k,
                q5_k: kquant_neon::row_dot_q5_k,
                q6_k: kquant_neon::row_dot_q6_k,
                q5_0: neon::row_dot_q5_0,
                q5_1: kquant_neon::row_dot_q5_1,
                q4_0x2: Some(neon::row_dot2_q4_0),
                q4_1x2: Some(neon::row_dot2_q4_1),
                q8_0x2: Some(neon::row_dot2_q8_0),
                q5_0x2: Some(neon::row_dot2_q5_0),
                kquant_batch: Some(KquantBatchDots {
                    q4_k_group4: kquant_neon::row_dot_q4_k_group4,
                    q4_k_tiled: kquant_neon::row_dot_q4_k_tiled,
                    q5_k_tiled: kquant_neon::row_dot_q5_k_tiled,
                    q6_k_tiled: kquant_neon::row_dot_q6_k_tiled,
                }),
                // no SIMD kernels yet: the scalar ones
                ..scalar
            },
            #[cfg(target_arch = "aarch64")]
            KernelPath::NeonDotprod => Kernels {
                path,
                q4_0: neon::row_dot_q4_0_dotprod,
                q4_1: neon::row_dot_q4_1_dotprod,
                q8_0: neon::row_dot_q8_0_dotprod,
                q4_k: kquant_neon::row_dot_q4_k_dotprod,
                q5_k: kquant_neon::row_dot_q5_k_dotprod,
                q6_k: kquant_neon::row_dot_q6_k_dotprod,
                q5_0: neon::row_dot_q5_0_dotprod,
                q5_1: kquant_neon::row_dot_q5_1_dotprod,
                q4_0x2: Some(neon::row_dot2_q4_0_dotprod),
                q4_1x2: Some(neon::row_dot2_q4_1_dotprod),
                q8_0x2: Some(neon::row_dot2_q8_0_dotprod),
                q5_0x2: Some(neon::row_dot2_q5_0_dotprod),
                kquant_batch: Some(KquantBatchDots {
                    q4_k_group4: kquant_neon::row_dot_q4_k_group4_dotprod,
                    q4_k_tiled: kquant_neon::row_dot_q4_k_tiled_dotprod,
                    q5_k_tiled: kquant_neon::row_dot_q5_k_tiled_dotprod,
                    q6_k_tiled: kquant_neon::row_dot_q6_k_tiled_dotprod,
                }),
                ..Kernels::new(KernelPath::Neon)?
            },
            #[allow(unreachable_patterns)]
            _ => return Err(KernelError::NotImplemented(path)),
        };
        Ok(Kernels { path, ..k })
    }

    /// The best path for this CPU.
    pub fn detect() -> Kernels {
        match Kernels::new(KernelPath::best()) {
            Ok(k) => k,
            Err(_) => Kernels::scalar(),
        }
    }

    /// The scalar reference table (always available).
    pub fn scalar() -> Kernels {
        Kernels {
            path: KernelPath::Scalar,
            q4_0: row_dot_q4_0_scalar,
            q4_1: row_dot_q4_1_scalar,
            q8_0: row_dot_q8_0_scalar,
            q5_0: row_dot_q5_0_scalar,
            q5_1: row_dot_q5_1_scalar,
            q4_k: row_dot_q4_k_scalar,
            q5_k: row_dot_q5_k_scalar,
            q6_k: row_dot_q6_k_scalar,
            f16: row_dot_f16_scalar,
            f32: row_dot_f32_scalar,
            bf16: row_dot_bf16_scalar,
            q4_0x2: None,
            q4_1x2: None,
            q8_0x2: None,
            q5_0x2: None,
            q4_kx2: None,
            q6_kx2: None,
            q4_0_prepared: None,
            q5_0_rows: None,
            q5_1_rows: None,
            kquant_batch: Some(KquantBatchDots {
                q4_k_group4: row_dot_q4_k_group4_scalar,
                q4_k_tiled: row_dot_q4_k_tiled_scalar,
                q5_k_tiled: row_dot_q5_k_tiled_scalar,
                q6_k_tiled: row_dot_q6_k_tiled_scalar,
            }),
            f16_rows: scalar::vec_dots_f16,
            f32_rows: scalar::vec_dots_f32,
            soft_max: scalar::vec_soft_max_f32,
            swiglu: scalar::vec_swiglu_f32,
            quantize_q8_0: quant::quantize_act_row_q8_0,
            quantize_q8_1: quant::quantize_act_row_q8_1,
            quantize_q8_k: quant::quantize_row_q8_k,
        }
    }

    /// `EDGELLM_KERNELS` if set (an error if it names a path this CPU lacks), else the best.
    pub fn from_env() -> Result<Kernels, KernelError> {
        match std::env::var("EDGELLM_KERNELS") {
            Ok(name) => Kernels::from_setting(Some(&name)),
            Err(_) => Kernels::from_setting(None),
        }
    }

    /// What [`from_env`](Kernels::from_env) does with the variable's value: `None` or blank
    /// means the best path, otherwise the named one (an error if unknown or unsupported).
    pub fn from_setting(value: Option<&str>) -> Result<Kernels, KernelError> {
        match value {
            Some(name) if !name.trim().is_empty() => KernelPath::from_name(name)
                .and_then(Kernels::new)
                .map_err(|e| KernelError::Env(Box::new(e))),
            _ => Ok(Kernels::detect()),
        }
    }

    pub fn path(&self) -> KernelPath {
        self.path
    }

    /// The activation type a weight type's row dot consumes (ggml's `vec_dot_type`).
    pub fn act_type(weight: GgmlType) -> Result<GgmlType, KernelError> {
        match weight {
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => Ok(GgmlType::Q8_0),
            GgmlType::Q4_1 | GgmlType::Q5_1 => Ok(GgmlType::Q8_1),
            GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => Ok(GgmlType::Q8_K),
            GgmlType::F16 => Ok(GgmlType::F16),
            GgmlType::F32 | GgmlType::BF16 => Ok(GgmlType::F32),
            other => Err(KernelError::UnsupportedType(other)),
        }
    }

    /// Bytes of one activation row of `n` elements for weights of type `weight`.
    pub fn act_row_bytes(weight: GgmlType, n: usize) -> Result<usize, KernelError> {
        let act = Kernels::act_type(weight)?;
        act.row_bytes(n as u64)
            .map(|b| b as usize)
            .ok_or(KernelError::UnsupportedType(weight))
    }

    /// The two-row dot for weights of type `weight`, where this path has one (same input
    /// rules as [`row_dot`](Kernels::row_dot), same results bit for bit).
    pub fn row_dot2(&self, weight: GgmlType) -> Option<RowDot2> {
        match weight {
            GgmlType::Q4_0 => self.q4_0x2,
            GgmlType::Q4_1 => self.q4_1x2,
            GgmlType::Q8_0 => self.q8_0x2,
            GgmlType::Q5_0 => self.q5_0x2,
            GgmlType::Q4_K => self.q4_kx2,
            GgmlType::Q6_K => self.q6_kx2,
            _ => None,
        }
    }

    /// The multi-row dot over f16 rows (an f16 KV cache).
    pub fn rows_dot_f16(&self) -> RowsDot<f16> {
        self.f16_rows
    }

    /// The multi-row dot over f32 rows (an f32 KV cache).
    pub fn rows_dot_f32(&self) -> RowsDot<f32> {
        self.f32_rows
    }

    /// The exponentials of a softmax (see [`SoftMaxExp`]).
    pub fn soft_max(&self) -> SoftMaxExp {
        self.soft_max
    }

    /// SwiGLU, `gate[i] = silu(gate[i]) · up[i]` (see [`Kernels`]' field).
    pub fn swiglu(&self) -> GatedAct {
        self.swiglu
    }

    /// The row-dot function for weights of type `weight`.
    ///
    /// The int row dots (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and K-quant weights) expect activation
    /// quants in [-127, 127], the range [`quantize_act`](Kernels::quantize_act) produces, and
    /// Q8_K `bsums` equal to the sums of their quants; the weights may hold any bytes.
    pub fn row_dot(&self, weight: GgmlType) -> Result<RowDot, KernelError> {
        match weight {
            GgmlType::Q4_0 => Ok(self.q4_0),
            GgmlType::Q4_1 => Ok(self.q4_1),
            GgmlType::Q8_0 => Ok(self.q8_0),
            GgmlType::Q5_0 => Ok(self.q5_0),
            GgmlType::Q5_1 => Ok(self.q5_1),
            GgmlType::Q4_K => Ok(self.q4_k),
            GgmlType::Q5_K => Ok(self.q5_k),
            GgmlType::Q6_K => Ok(self.q6_k),
            GgmlType::F16 => Ok(self.f16),
            GgmlType::F32 => Ok(self.f32),
            GgmlType::BF16 => Ok(self.bf16),
            other => Err(KernelError::UnsupportedType(other)),
        }
    }

    /// The row dot for the first `n` tokens of a batch of `nb`, as `(dot, n)`, where the path
    /// sums them differently from [`row_dot`] (the scalar path, following llama.cpp's x86
    /// build, and the NEON paths, bit for bit): Q4_K matrices of a multiple of 8 rows, which that build repacks, take tokens
    /// `0..nb - nb % 4` four at a time; the other Q4_K, Q5_K and Q6_K matrices go through its
    /// tiled matmul on batches of [`TILED_MIN_BATCH`] tokens or more, all tokens.
    ///
    /// [`row_dot`]: Kernels::row_dot
    pub fn row_dot_batch(
        &self,
        weight: GgmlType,
        rows: usize,
        nb: usize,
    ) -> Option<(RowDot, usize)> {
        let dots = self.kquant_batch?;
        let tiled = |dot: RowDot| (nb >= TILED_MIN_BATCH).then_some((dot, nb));
        match weight {
            GgmlType::Q4_K if rows.is_multiple_of(8) => {
                let n = nb - nb % 4;
                (n > 0).then_some((dots.q4_k_group4, n))
            }
            GgmlType::Q4_K => tiled(dots.q4_k_tiled),
            GgmlType::Q5_K => tiled(dots.q5_k_tiled),
            GgmlType::Q6_K => tiled(dots.q6_k_tiled),
            _ => None,
        }
    }

    /// The one-token matrix kernel for `weight` that reads the plain activation row, where the
    /// path has one ([`MatrixRows`]): each row's value equals [`row_dot`](Kernels::row_dot)'s
    /// bit for bit.
    pub fn matrix_rows(&self, weight: GgmlType) -> Option<MatrixRows> {
        match weight {
            GgmlType::Q5_0 => self.q5_0_rows,
            GgmlType::Q5_1 => self.q5_1_rows,
            _ => None,
        }
    }

    /// The one-token dots for `weight` that read a prepared activation row, where the path
    /// has them ([`PreparedDots`]).
    pub fn prepared_dots(&self, weight: GgmlType) -> Option<PreparedDots> {
        match weight {
            GgmlType::Q4_0 => self.q4_0_prepared,
            _ => None,
        }
    }

    /// Quantizes one f32 row into the activation format `act` (`dst` holds exactly its bytes).
    /// Every path writes the bytes the scalar `quant::quantize_row_q8_0` / `q8_1` / `q8_k` write.
    pub fn quantize_act(&self, act: GgmlType, x: &[f32], dst: &mut [u8]) {
        match act {
            GgmlType::Q8_0 => {
                if let Ok(blocks) = quant::blocks_mut::<BlockQ8_0>(dst) {
                    (self.quantize_q8_0)(x, blocks);
                }
            }
            GgmlType::Q8_1 => {
                if let Ok(blocks) = quant::blocks_mut::<BlockQ8_1>(dst) {
                    (self.quantize_q8_1)(x, blocks);
                }
            }
            GgmlType::Q8_K => {
                if let Ok(blocks) = quant::blocks_mut::<BlockQ8K>(dst) {
                    (self.quantize_q8_k)(x, blocks);
                }
            }
            GgmlType::F16 => {
                if let Ok(h) = quant::blocks_mut::<f16>(dst) {
                    for (o, v) in h.iter_mut().zip(x) {
                        *o = f16::from_f32(*v);
                    }
                }
            }
            _ => {
                if let Ok(f) = quant::blocks_mut::<f32>(dst) {
                    f.copy_from_slice(&x[..f.len()]);
                }
            }
        }
    }
}

/// Like [`row_dot_entry`], for a two-row kernel `$kernel(w0, w1, a) -> [f32; 2]`.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
macro_rules! row_dot2_entry {
    ($name:ident, $kernel:path, $w:ty, $a:ty) => {
        #[doc = concat!("`", stringify!($kernel), "` over the bytes of three rows (NaN if they are not whole, aligned blocks).")]
        pub(super) fn $name(w0: &[u8], w1: &[u8], a: &[u8]) -> [f32; 2] {
            match (super::cast_pair::<$w, $a>(w0, a), crate::quant::blocks::<$w>(w1)) {
                // SAFETY: as for `row_dot_entry`.
                (Some((w0, a)), Ok(w1)) => unsafe { $kernel(w0, w1, a) },
                _ => [f32::NAN; 2],
            }
        }
    };
}
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) use row_dot2_entry;

/// Defines `$name`, the safe table entry for the `#[target_feature]` kernel `$kernel` over the
/// bytes of a weight row and an activation row.
///
/// The entry is `pub(super)` in its ISA module and stored only by [`Kernels::new`], after
/// [`KernelPath::is_supported`] confirmed the features the kernel enables: holding the table is
/// the proof that calling it is sound. Only the ISAs with SIMD kernels (x86_64, aarch64) use it:
/// 32-bit Arm runs the scalar table (its NEON intrinsics are not stable Rust).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
macro_rules! row_dot_entry {
    ($name:ident, $kernel:path, $w:ty, $a:ty) => {
        #[doc = concat!("`", stringify!($kernel), "` over the bytes of two rows (NaN if they are not whole, aligned blocks).")]
        pub(super) fn $name(w: &[u8], a: &[u8]) -> f32 {
            match super::cast_pair::<$w, $a>(w, a) {
                // SAFETY: only `Kernels::new` stores this entry, for a path whose
                // `is_supported` check covers the features the kernel enables.
                Some((w, a)) => unsafe { $kernel(w, a) },
                None => f32::NAN,
            }
        }
    };
}
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) use row_dot_entry;

/// Like [`row_dot_entry`], for a [`RowsDot`] kernel `$kernel(rows, stride, x, out)` over `$t`.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
macro_rules! rows_dot_entry {
    ($name:ident, $kernel:path, $t:ty) => {
        #[doc = concat!("`", stringify!($kernel), "` as a table entry.")]
        pub(super) fn $name(
            rows: &[$t],
            stride: usize,
            xs: &[f32],
            n: usize,
            _order: super::SumOrder,
            out: &mut [f32],
        ) {
            // SAFETY: only `Kernels::new` stores this entry, for a path whose `is_supported`
            // check covers the features the kernel enables.
            unsafe { $kernel(rows, stride, xs, n, out) }
        }
    };
}
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) use rows_dot_entry;

/// Blocks the SIMD activation quantizers handle per group: their scales are computed
/// together, so the two dependent divisions per block become two vector divisions per group.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const GROUP: usize = 8;

/// The SIMD Q8 activation quantizers' loop, over groups of up to [`GROUP`] blocks: the `amax`
/// of every block, then the scales of the group together, then each block's quants through
/// `$store`; a block holding a NaN goes to `$scalar` instead (the specification handles its
/// `amax` ordering). The ISA module supplies, with its `#[target_feature]`s:
/// `block_amax(&[f32]) -> Option<f32>` (None on NaN), `group_scales(&[f32; GROUP]) -> (d, id)`
/// (lane by lane `d = amax / 127`, `id = if d != 0 { 1 / d } else { 0 }`) and
/// `quantize_block_q8(&[f32], id)` (the quants, in the ISA's register form).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
macro_rules! quantize_q8_groups {
    ($x:expr, $y:expr, $scalar:path, |$yb:ident, $d:ident, $q:ident| $store:block) => {{
        let (x, y) = ($x, $y);
        assert_eq!(
            x.len(),
            y.len() * QK8_0,
            "{}: {} values for {} blocks",
            stringify!($scalar),
            x.len(),
            y.len()
        );
        for (xg, yg) in x.chunks(QK8_0 * GROUP).zip(y.chunks_mut(GROUP)) {
            let mut amax = [0.0f32; GROUP];
            let mut nan = [false; GROUP];
            for (k, xb) in xg.chunks_exact(QK8_0).enumerate() {
                match block_amax(xb) {
                    Some(a) => amax[k] = a,
                    None => nan[k] = true,
                }
            }
            let (d, id) = group_scales(&amax);
            for (k, (xb, $yb)) in xg.chunks_exact(QK8_0).zip(yg.iter_mut()).enumerate() {
                // NaN, infinite or tiny blocks (whose `127 / amax` overflows) go the scalar way.
                if nan[k] || !amax[k].is_finite() || !id[k].is_finite() {
                    $scalar(xb, std::slice::from_mut($yb));
                    continue;
                }
                let $d = d[k];
                let $q = quantize_block_q8(xb, id[k]);
                $store
            }
        }
    }};
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) use quantize_q8_groups;

/// `(g, n_rows)` of a [`RowsDot`] call, after checking its promises: `n > 0`, whole vectors and
/// output rows, and the rows inside the matrix (`(n_rows - 1)·stride + n <= rows_len`).
pub(crate) fn rows_dot_shape(
    rows_len: usize,
    stride: usize,
    xs_len: usize,
    n: usize,
    out_len: usize,
) -> (usize, usize) {
    assert!(
        n > 0 && xs_len.is_multiple_of(n) && xs_len > 0,
        "{xs_len} values are no whole vectors of {n}"
    );
    let g = xs_len / n;
    assert!(
        out_len.is_multiple_of(g),
        "{out_len} outputs are no whole rows for {g} vectors"
    );
    let n_rows = out_len / g;
    assert!(
        n_rows == 0 || (n_rows - 1) * stride + n <= rows_len,
        "{n_rows} rows of {n} with stride {stride} need more than {rows_len} elements"
    );
    (g, n_rows)
}

/// Views both byte rows as blocks; a length or alignment mismatch (impossible for tensors the
/// loader validated) yields NaN so it shows in the output instead of passing silently.
fn cast_pair<'a, W: Block, A: Block>(w: &'a [u8], a: &'a [u8]) -> Option<(&'a [W], &'a [A])> {
    Some((quant::blocks::<W>(w).ok()?, quant::blocks::<A>(a).ok()?))
}

fn row_dot_q4_0_scalar(w: &[u8], a: &[u8]) -> f32 {
    cast_pair::<BlockQ4_0, BlockQ8_0>(w, a)
        .map_or(f32::NAN, |(w, a)| scalar::vec_dot_q4_0_q8_0(w, a))
}
fn row_dot_q4_1_scalar(w: &[u8], a: &[u8]) -> f32 {
    cast_pair::<BlockQ4_1, BlockQ8_1>(w, a)
        .map_or(f32::NAN, |(w, a)| scalar::vec_dot_q4_1_q8_1(w, a))
}
fn row_dot_q8_0_scalar(w: &[u8], a: &[u8]) -> f32 {
    cast_pair::<BlockQ8_0, BlockQ8_0>(w, a)
        .map_or(f32::NAN, |(w, a)| scalar::vec_dot_q8_0_q8_0(w, a))
}
fn row_dot_q5_0_scalar(w: &[u8], a: &[u8]) -> f32 {
    cast_pair::<BlockQ5_0, BlockQ8_0>(w, a)
        .map_or(f32::NAN, |(w, a)| scalar::vec_dot_q5_0_q8_0(w, a))
}
fn row_dot_q5_1_scalar(w: &[u8], a: &[u8]) -> f32 {
    cast_pair::<BlockQ5_1, BlockQ8_1>(w, a)
        .map_or(f32::NAN, |(w, a)| scalar::vec_dot_q5_1_q8_1(w, a))
}
fn row_dot_q4_k_scalar(w: &[u8], a: &[u8]) -> f32 {
    cast_pair::<BlockQ4K, BlockQ8K>(w, a).map_or(f32::NAN, |(w, a)| scalar::vec_dot_q4_k_q8_k(w, a))
}
fn row_dot_q4_k_group4_scalar(w: &[u8], a: &[u8]) -> f32 {
    cast_pair::<BlockQ4K, BlockQ8K>(w, a)
        .map_or(f32::NAN, |(w, a)| scalar::vec_dot_q4_k_q8_k_group4(w, a))
}
fn row_dot_q4_k_tiled_scalar(w: &[u8], a: &[u8]) -> f32 {
    cast_pair::<BlockQ4K, BlockQ8K>(w, a)
        .map_or(f32::NAN, |(w, a)| scalar::vec_dot_q4_k_q8_k_tiled(w, a))
}
fn row_dot_q5_k_tiled_scalar(w: &[u8], a: &[u8]) -> f32 {
    cast_pair::<BlockQ5K, BlockQ8K>(w, a)
        .map_or(f32::NAN, |(w, a)| scalar::vec_dot_q5_k_q8_k_tiled(w, a))
}
fn row_dot_q6_k_tiled_scalar(w: &[u8], a: &[u8]) -> f32 {
    cast_pair::<BlockQ6K, BlockQ8K>(w, a)
        .map_or(f32::NAN, |(w, a)| scalar::vec_dot_q6_k_q8_k_tiled(w, a))
}
fn row_dot_q5_k_scalar(w: &[u8], a: &[u8]) -> f32 {
    cast_pair::<BlockQ5K, BlockQ8K>(w, a).map_or(f32::NAN, |(w, a)| scalar::vec_dot_q5_k_q8_k(w, a))
}
fn row_dot_q6_k_scalar(w: &[u8], a: &[u8]) -> f32 {
    cast_pair::<BlockQ6K, BlockQ8K>(w, a).map_or(f32::NAN, |(w, a)| scalar::vec_dot_q6_k_q8_k(w, a))
}
fn row_dot_f16_scalar(w: &[u8], a: &[u8]) -> f32 {
    cast_pair::<f16, f16>(w, a).map_or(f32::NAN, |(w, a)| scalar::vec_dot_f16(w, a))
}
fn row_dot_f32_scalar(w: &[u8], a: &[u8]) -> f32 {
    cast_pair::<f32, f32>(w, a).map_or(f32::NAN, |(w, a)| scalar::vec_dot_f32(w, a))
}
fn row_dot_bf16_scalar(w: &[u8], a: &[u8]) -> f32 {
    cast_pair::<half::bf16, f32>(w, a).map_or(f32::NAN, |(w, a)| scalar::vec_dot_bf16_f32(w, a))
}
