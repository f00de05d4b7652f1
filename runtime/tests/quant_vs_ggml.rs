//! The oracle for `edgellm_runtime::quant`: ggml's own C code, compiled from the sources that
//! `ggml-sys-bleedingedge` vendors (llama.cpp b2757), quantizes and dequantizes the same rows,
//! and every byte and every f32 bit must agree. Rows: random ones (several seeds and scales,
//! lengths up to 4096) and edge rows (zeros, constants, +/- constants, spikes, huge and tiny
//! magnitudes, subnormals, alternating signs, exact .5 ties, and Q4_0 rows whose rounding
//! depends on whether `x*id + 8.5` is fused into an FMA). No NaN inputs; no model file needed.
//!
//! The K-quants (Q4_K, Q5_K, Q6_K and the Q8_K activations) take whole 256-value super-blocks:
//! each row is tiled up to a multiple of 256 for them (the same values, repeated). ggml has no
//! `from_float_reference`/`to_float` trait entry for Q8_K, so its oracle is the exported C
//! functions `quantize_row_q8_K_reference` and `dequantize_row_q8_K` themselves.
//!
//! BF16 is younger than that ggml (it arrived in May 2024), so its oracle is `half`'s
//! conversion, an independent implementation of the same rule (ties to even, NaN made quiet).
//!
//! The oracle must be compiled without FMA contraction (`-ffp-contract=off` in
//! `CFLAGS_<target>`, set in `.cargo/config.toml`), because the build of llama.cpp that made the
//! reference files rounds `x*id` before adding 8.5; `oracle_rounds_like_the_reference_build`
//! says so when it is not. It cross-builds for aarch64 with the cross C compiler and runs
//! under qemu-aarch64, where the tiny-scale rows check the Arm conversion rules.

use edgellm_runtime::alloc_count::{thread_allocations_during, CountingAllocator};
use std::sync::Once;

use edgellm_runtime::quant::{
    self, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K,
    BlockQ8_0, BlockQ8_1,
};
use edgellm_runtime::GgmlType;
use ggml_sys_bleedingedge as ggml;
use half::{bf16, f16};

/// The types ggml b2757 can check (it predates BF16).
const GGML_TYPES: [GgmlType; 11] = [
    GgmlType::F16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q8_1,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::Q8_K,
];

// ggml's Q8_K functions, which its type table does not expose as reference entries.
extern "C" {
    fn quantize_row_q8_K_reference(x: *const f32, y: *mut std::ffi::c_void, k: i64);
    fn dequantize_row_q8_K(x: *const std::ffi::c_void, y: *mut f32, k: i64);
}

// ---------------------------------------------------------------------------------------------
// allocation counting, for the per-token quantizers

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations_during(f: impl FnOnce()) -> usize {
    thread_allocations_during(f) as usize
}

// ---------------------------------------------------------------------------------------------
// ggml's side

/// `ggml_init` fills the f16 -> f32 table that x86 builds of `GGML_FP16_TO_FP32` read; without
/// it every dequantized value would be 0.
fn ggml_ready() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let params = ggml::ggml_init_params {
            mem_size: 1024,
            mem_buffer: std::ptr::null_mut(),
            no_alloc: true,
        };
        // SAFETY: plain FFI call with a valid params struct; the context is freed at once, the
        // table it filled is static.
        unsafe {
            let ctx = ggml::ggml_init(params);
            assert!(!ctx.is_null(), "ggml_init failed");
            ggml::ggml_free(ctx);
        }
    });
}

fn traits(ty: GgmlType) -> ggml::ggml_type_traits_t {
    ggml_ready();
    // SAFETY: any ggml type id below GGML_TYPE_COUNT indexes ggml's static table.
    unsafe { ggml::ggml_internal_get_type_traits(ty.id() as ggml::ggml_type) }
}

fn row_bytes(ty: GgmlType, n: usize) -> usize {
    ty.row_bytes(n as u64).expect("whole blocks") as usize
}

/// ggml's reference quantizer (`from_float_reference`, what `llama-quantize` runs without an
/// importance matrix), cross-checked against `ggml_quantize_chunk` where that handles the type.
fn ggml_quantize(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; row_bytes(ty, x.len())];
    if ty == GgmlType::Q8_K {
        // SAFETY: `x` holds x.len() floats (whole blocks) and `out` the row's bytes.
        unsafe { quantize_row_q8_K_reference(x.as_ptr(), out.as_mut_ptr().cast(), x.len() as i64) };
        let mut via_traits = vec![0u8; out.len()];
        let from_float = traits(ty).from_float.expect("ggml quantizes Q8_K");
        // SAFETY: as above.
        unsafe { from_float(x.as_ptr(), via_traits.as_mut_ptr().cast(), x.len() as i64) };
        assert_eq!(
            via_traits, out,
            "Q8_K: from_float disagrees with the reference"
        );
        return out;
    }
    let from_float = traits(ty)
        .from_float_reference
        .expect("ggml has a reference quantizer");
    // SAFETY: `x` holds x.len() floats and `out` the row's bytes, as the function requires.
    unsafe { from_float(x.as_ptr(), out.as_mut_ptr().cast(), x.len() as i64) };
    if ty != GgmlType::Q8_1 {
        let mut chunk = vec![0u8; out.len()];
        // SAFETY: one row of x.len() values into a buffer of exactly its size; no imatrix.
        let written = unsafe {
            ggml::ggml_quantize_chunk(
                ty.id() as ggml::ggml_type,
                x.as_ptr(),
                chunk.as_mut_ptr().cast(),
                0,
                1,
                x.len() as i64,
                std::ptr::null(),
            )
        };
        assert_eq!(written, chunk.len());
        assert_eq!(
            chunk, out,
            "{ty}: ggml_quantize_chunk disagrees with from_float_reference"
        );
    }
    out
}

/// ggml's dequantizer (`to_float`, or `dequantize_row_q8_K`); `None` for Q8_1, which ggml
/// never dequantizes.
fn ggml_dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Option<Vec<f32>> {
    assert_eq!(bytes.len(), row_bytes(ty, n));
    let mut out = vec![0.0f32; n];
    if ty == GgmlType::Q8_K {
        // SAFETY: `bytes` holds n values of Q8_K, `out` n floats.
        unsafe { dequantize_row_q8_K(bytes.as_ptr().cast(), out.as_mut_ptr(), n as i64) };
        return Some(out);
    }
    let to_float = traits(ty).to_float?;
    // SAFETY: `bytes` holds n values of `ty`, `out` n floats.
    unsafe { to_float(bytes.as_ptr().cast(), out.as_mut_ptr(), n as i64) };
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// our side, through the generic row API the loader and `edgellm quantize` use

fn ours_quantize(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; row_bytes(ty, x.len())];
    quant::quantize_row(ty, x, &mut out).expect("quantize_row");
    out
}

fn ours_dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; n];
    quant::dequantize_row(ty, bytes, &mut out).expect("dequantize_row");
    out
}

// ---------------------------------------------------------------------------------------------
// comparison

fn block_of(ty: GgmlType, i: usize) -> usize {
    i / ty.block_size()
}

/// Quantizes `x` both ways and compares bytes, then dequantizes ggml's bytes both ways and
/// compares bits. Panics with the first differing block and its inputs.
fn check_row(ty: GgmlType, label: &str, x: &[f32]) {
    assert!(x.iter().all(|v| !v.is_nan()), "{label}: NaN input");
    let theirs = ggml_quantize(ty, x);
    let ours = ours_quantize(ty, x);
    if let Some(at) = theirs.iter().zip(&ours).position(|(a, b)| a != b) {
        let bb = ty.type_size();
        let b = at / bb;
        let e = ty.block_size();
        panic!(
            "{ty} quantize, {label}: byte {at} (block {b}) differs\n  input {:?}\n  ggml {:02x?}\n  ours {:02x?}",
            &x[b * e..(b + 1) * e],
            &theirs[b * bb..(b + 1) * bb],
            &ours[b * bb..(b + 1) * bb],
        );
    }
    check_dequantize(ty, label, &theirs, x.len());
}

fn check_dequantize(ty: GgmlType, label: &str, bytes: &[u8], n: usize) {
    let ours = ours_dequantize(ty, bytes, n);
    let theirs = match ggml_dequantize(ty, bytes, n) {
        Some(v) => v,
        None => naive_dequantize_q8_1(bytes),
    };
    for (i, (a, b)) in theirs.iter().zip(&ours).enumerate() {
        let same = a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
        assert!(
            same,
            "{ty} dequantize, {label}: value {i} (block {}): ggml {a:e} ({:#010x}), ours {b:e} ({:#010x})",
            block_of(ty, i),
            a.to_bits(),
            b.to_bits()
        );
    }
}

/// ggml has no Q8_1 dequantizer; the format's meaning is `x = d * q`, computed here from the
/// raw bytes without our block types.
fn naive_dequantize_q8_1(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(36)
        .flat_map(|b| {
            let d = f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
            b[4..].iter().map(move |&q| q as i8 as f32 * d)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// inputs

/// SplitMix64: a tiny deterministic generator, so failures reproduce by seed.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Roughly normal (Irwin-Hall of 4), mean 0, sd 1.
    fn normal(&mut self) -> f32 {
        let s: f32 = (0..4).map(|_| self.unit()).sum();
        (s - 2.0) * 3.0f32.sqrt()
    }
}

/// Random rows: roughly normal weights at several scales, with the occasional outlier as real
/// weight matrices have.
fn random_rows() -> Vec<(String, Vec<f32>)> {
    let mut rows = Vec::new();
    for seed in [1u64, 2, 3, 42, 0x5EED] {
        let mut rng = Rng(seed);
        for &n in &[32usize, 64, 96, 576, 1536, 4096] {
            for &scale in &[1e-4f32, 0.02, 1.0, 37.0, 3000.0, 60000.0] {
                let x: Vec<f32> = (0..n)
                    .map(|_| {
                        let v = rng.normal() * scale;
                        if rng.unit() < 0.01 {
                            v * 20.0
                        } else {
                            v
                        }
                    })
                    .collect();
                rows.push((format!("random seed {seed} n {n} scale {scale}"), x));
            }
        }
    }
    rows
}

fn blocks_from(label: &str, values: impl Fn(usize) -> f32) -> (String, Vec<f32>) {
    (label.to_string(), (0..128).map(values).collect())
}

/// Edge rows, four blocks each.
fn edge_rows() -> Vec<(String, Vec<f32>)> {
    let mut rows = vec![
        blocks_from("zeros", |_| 0.0),
        blocks_from("negative zeros", |_| -0.0),
    ];
    let magnitudes = [
        1.0f32,
        0.1,
        3.3,
        1e-3,
        65504.0,
        65519.0,
        65520.0,
        70000.0,
        1e6,
        1e10,
        1e30,
        3e38,
        f32::MAX,
        1e-5,
        6.1e-5,
        5.96e-8,
        1e-10,
        1e-20,
        1e-30,
        1e-36,
        3.7e-37,
        1e-37,
        1e-38,
        f32::MIN_POSITIVE,
        1e-40,
        1e-44,
        1e-45,
    ];
    for &c in &magnitudes {
        rows.push(blocks_from(&format!("constant {c:e}"), |_| c));
        rows.push(blocks_from(&format!("constant -{c:e}"), |_| -c));
        rows.push(blocks_from(&format!("alternating +-{c:e}"), |i| {
            if i % 2 == 0 {
                c
            } else {
                -c
            }
        }));
        rows.push(blocks_from(&format!("alternating -+{c:e}"), |i| {
            if i % 2 == 0 {
                -c
            } else {
                c
            }
        }));
        rows.push(blocks_from(&format!("ramp to {c:e}"), |i| {
            c * ((i % 32) as f32 - 15.0) / 16.0
        }));
        rows.push(blocks_from(&format!("spike {c:e} in small noise"), |i| {
            if i % 32 == 7 {
                c
            } else {
                ((i * 37) % 11) as f32 * 1e-3 - 5e-3
            }
        }));
        rows.push(blocks_from(&format!("spike -{c:e} over zeros"), |i| {
            if i % 32 == 19 {
                -c
            } else {
                0.0
            }
        }));
        rows.push(blocks_from(&format!("tiny {c:e} with one 1.0"), |i| {
            if i % 32 == 3 {
                1.0
            } else {
                c * (((i * 7) % 5) as f32 - 2.0)
            }
        }));
    }
    // Exact ties: with these anchors the scale is exactly 1, so every half-integer input lands
    // on a rounding boundary (Q8: k + 0.5; Q4_0: x + 8.5 an integer; Q4_1: x - 0 + 0.5 an
    // integer); the same rows nudged one ulp down and up.
    type Tie = (&'static str, fn(usize) -> f32);
    let ties: [Tie; 3] = [
        ("q8 ties", |i| match i % 32 {
            0 => 127.0,
            _ => ((i * 5) % 250) as f32 - 125.0 + 0.5,
        }),
        ("q4_0 ties", |i| match i % 32 {
            0 => -8.0,
            _ => ((i * 5) % 16) as f32 - 7.5,
        }),
        ("q4_1 ties", |i| match i % 32 {
            30 => 0.0,
            31 => 15.0,
            _ => ((i * 5) % 15) as f32 + 0.5,
        }),
    ];
    for (label, tie) in ties {
        for nudge in [-1i32, 0, 1] {
            rows.push(blocks_from(&format!("{label}, nudged {nudge} ulp"), |i| {
                let v = tie(i);
                let anchor = matches!((label, i % 32), ("q4_1 ties", 30 | 31) | (_, 0));
                // (stepping the bits of 0.0 down would make a NaN)
                if anchor || v == 0.0 {
                    v
                } else {
                    f32::from_bits((v.to_bits() as i32 + nudge) as u32)
                }
            }));
        }
    }
    rows
}

/// Q4_0 blocks where ggml's two statements `x0 = x*id; (int8_t)(x0 + 8.5f)` give a different
/// level when a compiler fuses them into `fma(x, id, 8.5)`: the product rounds up to exactly
/// -7.5 steps while its exact value lies just below, so `+ 8.5` lands on 1 unfused and below 1
/// fused. llama.cpp's x86 build (the one that made the reference files) does not fuse.
fn fma_sensitive_q4_0_rows() -> Vec<(String, Vec<f32>)> {
    let mut rng = Rng(7);
    let mut x = Vec::new();
    while x.len() < 32 * 64 {
        let max = -(1.0 + rng.unit() * 100.0);
        let d = max / -8.0;
        let id = 1.0 / d;
        // element 0 sets the scale; elements 1.. are crafted (checked at element 2)
        let mut block = vec![max];
        let mut v = -7.5 / id;
        for _ in 0..4096 {
            let p = v as f64 * id as f64; // exact: 24 + 24 bits
            let fused_below = (p + 8.5) < 1.0 && ((p + 8.5) as f32) < 1.0;
            if (v * id) == -7.5 && fused_below && v.abs() <= max.abs() {
                block.push(v);
            }
            v = f32::from_bits(v.to_bits() + 1);
            if block.len() == 32 {
                break;
            }
        }
        if block.len() > 1 {
            while block.len() < 32 {
                block.push(block[1]);
            }
            x.extend(block);
        }
    }
    vec![("fma-sensitive q4_0".to_string(), x)]
}

/// Q4_1 blocks (min 0, so `x - min` is exact) where `(x - min)*id` rounds up to 0.49999997
/// while its exact value lies lower: unfused, `0.49999997 + 0.5` ties to 1.0 (level 1); fused,
/// the exact sum rounds below 1 (level 0).
fn fma_sensitive_q4_1_rows() -> Vec<(String, Vec<f32>)> {
    let below_half = f32::from_bits(0.5f32.to_bits() - 1);
    let mut rng = Rng(8);
    let mut x = Vec::new();
    while x.len() < 32 * 64 {
        let max = 1.0 + rng.unit() * 100.0;
        let id = 1.0 / (max / 15.0);
        let mut block = vec![0.0, max];
        let mut v = below_half / id;
        v = f32::from_bits(v.to_bits() - 64);
        for _ in 0..128 {
            let p = v as f64 * id as f64; // exact
            if v * id == below_half && ((p + 0.5) as f32) < 1.0 {
                block.push(v);
            }
            v = f32::from_bits(v.to_bits() + 1);
        }
        if block.len() > 2 {
            let crafted = block[2];
            block.resize(32, crafted);
            x.extend(block);
        }
    }
    vec![("fma-sensitive q4_1".to_string(), x)]
}

fn all_rows() -> Vec<(String, Vec<f32>)> {
    let mut rows = edge_rows();
    rows.extend(fma_sensitive_q4_0_rows());
    rows.extend(fma_sensitive_q4_1_rows());
    rows.extend(random_rows());
    rows
}

// ---------------------------------------------------------------------------------------------
// tests

#[test]
fn quantize_and_dequantize_match_ggml_bit_for_bit() {
    assert_oracle_unfused();
    let rows = all_rows();
    for ty in GGML_TYPES {
        let (mut checked, mut blocks) = (0, 0);
        for (label, x) in &rows {
            if ty.block_size() == 256 && trips_ggml_assert(x) {
                continue;
            }
            let x = fit_row(ty, x);
            check_row(ty, label, &x);
            checked += 1;
            blocks += x.len() / ty.block_size();
        }
        eprintln!("{ty}: {checked} rows, {blocks} blocks bit-exact");
    }
}

/// Whether ggml's K-quant reference code may stop at `assert(fval <= 4194303.f)` in
/// `nearest_int` on this row: it does when a solver's intermediate becomes infinite or NaN (on
/// some edge rows), but only in a build of the oracle with assertions. Release builds (and
/// llama.cpp's) define NDEBUG and quantize every row like ours; cargo's non-release profiles
/// (the aarch64 script's QEMU runs) keep the asserts, so there the K-quant oracle checks are
/// skipped altogether (run the script with `--release` to get them on aarch64).
fn trips_ggml_assert(_x: &[f32]) -> bool {
    static NOTICE: Once = Once::new();
    let oracle_asserts = std::env::current_exe()
        .map(|p| p.components().any(|c| c.as_os_str() == "debug"))
        .unwrap_or(true);
    if oracle_asserts {
        NOTICE.call_once(|| {
            eprintln!("ggml oracle built with assertions: K-quant oracle checks skipped")
        });
    }
    oracle_asserts
}

/// `x` tiled up to a whole number of `ty` blocks (the K-quants' 256-value super-blocks).
fn fit_row(ty: GgmlType, x: &[f32]) -> Vec<f32> {
    let bs = ty.block_size();
    let n = x.len().div_ceil(bs) * bs;
    x.iter().copied().cycle().take(n).collect()
}

/// How many blocks of the FMA-sensitive rows gave their crafted element (element 2) level 1,
/// the unfused answer, out of how many.
fn unfused_levels(ty: GgmlType, bytes: &[u8]) -> (usize, usize) {
    let levels: Vec<u8> = match ty {
        GgmlType::Q4_0 => quant::blocks::<BlockQ4_0>(bytes)
            .expect("aligned")
            .iter()
            .map(|b| b.qs[2] & 0x0F)
            .collect(),
        GgmlType::Q4_1 => quant::blocks::<BlockQ4_1>(bytes)
            .expect("aligned")
            .iter()
            .map(|b| b.qs[2] & 0x0F)
            .collect(),
        _ => unreachable!("only the 4-bit formats add after multiplying"),
    };
    (levels.iter().filter(|&&l| l == 1).count(), levels.len())
}

/// The reference files were made by a build that rounds `x*id` before adding 8.5 (checked
/// against `quantized_tensor_sha256.json`: all 210 Q4_0 tensors match unfused rounding, 67
/// fused). GCC fuses by default when FMA is enabled, so the oracle must be compiled with
/// `-ffp-contract=off` (`.cargo/config.toml` [env] CFLAGS_<target>); say so plainly if not.
fn assert_oracle_unfused() {
    for (ty, rows) in [
        (GgmlType::Q4_0, fma_sensitive_q4_0_rows()),
        (GgmlType::Q4_1, fma_sensitive_q4_1_rows()),
    ] {
        let (hits, n) = unfused_levels(ty, &ggml_quantize(ty, &rows[0].1));
        assert_eq!(
            hits,
            n,
            "the ggml oracle was compiled with FMA contraction ({} of {n} crafted {ty} blocks \
             fused): build ggml-sys-bleedingedge with CFLAGS_<target>=-ffp-contract=off, as \
             llama.cpp's reference x86 build effectively is",
            n - hits
        );
    }
}

#[test]
fn oracle_rounds_like_the_reference_build() {
    for (ty, rows) in [
        (GgmlType::Q4_0, fma_sensitive_q4_0_rows()),
        (GgmlType::Q4_1, fma_sensitive_q4_1_rows()),
    ] {
        assert!(rows[0].1.len() >= 32 * 64);
        let (hits, n) = unfused_levels(ty, &ours_quantize(ty, &rows[0].1));
        assert_eq!(hits, n, "{ty}: ours must round the product before adding");
    }
    assert_oracle_unfused();
}

#[test]
fn dequantize_matches_ggml_on_random_bytes() {
    // Arbitrary bit patterns: every f16 scale class (subnormal, huge, inf, NaN) and all nibbles.
    let mut rng = Rng(99);
    for ty in GGML_TYPES {
        let n = 32 * 512;
        let bytes: Vec<u8> = (0..row_bytes(ty, n))
            .map(|_| rng.next_u64() as u8)
            .collect();
        check_dequantize(ty, "random bytes", &bytes, n);
    }
}

#[test]
fn f16_conversions_match_ggml_exhaustively() {
    ggml_ready();
    for bits in 0..=u16::MAX {
        // SAFETY: pure function on a value.
        let theirs = unsafe { ggml::ggml_fp16_to_fp32(bits) };
        let ours = quant::fp16_to_fp32(f16::from_bits(bits));
        assert!(
            theirs.to_bits() == ours.to_bits() || (theirs.is_nan() && ours.is_nan()),
            "f16 {bits:#06x}: ggml {theirs:e}, ours {ours:e}"
        );
    }
    // f32 -> f16: a stride through all non-NaN f32 bit patterns, plus every f16 midpoint and
    // its neighbours (where rounding decides).
    let check = |x: f32| {
        if x.is_nan() {
            return;
        }
        // SAFETY: pure function on a value.
        let theirs = unsafe { ggml::ggml_fp32_to_fp16(x) };
        let ours = quant::fp32_to_fp16(x).to_bits();
        assert_eq!(theirs, ours, "f32 {x:e} ({:#010x})", x.to_bits());
    };
    for i in 0..(1u32 << 20) {
        check(f32::from_bits(i.wrapping_mul(4099)));
    }
    for h in 0..0x7C00u16 {
        let lo = f16::from_bits(h).to_f32() as f64;
        let hi = f16::from_bits(h + 1).to_f32() as f64;
        let mid = ((lo + hi) / 2.0) as f32; // exact: f16 midpoints fit in f32
        for s in [1.0f32, -1.0] {
            for delta in [-1i32, 0, 1] {
                check(s * f32::from_bits((mid.to_bits() as i32 + delta) as u32));
            }
        }
    }
}

#[test]
fn bf16_matches_independent_conversion() {
    let check = |x: f32| {
        let ours = quant::fp32_to_bf16(x);
        let theirs = bf16::from_f32(x);
        assert_eq!(
            ours.to_bits(),
            theirs.to_bits(),
            "f32 {x:e} ({:#010x})",
            x.to_bits()
        );
        assert_eq!(
            quant::bf16_to_fp32(ours).to_bits(),
            theirs.to_f32().to_bits()
        );
    };
    for i in 0..(1u32 << 22) {
        check(f32::from_bits(i.wrapping_mul(1021)));
    }
    for (_, x) in all_rows() {
        let mut ours = vec![0u8; x.len() * 2];
        quant::quantize_row(GgmlType::BF16, &x, &mut ours).expect("quantize_row");
        let theirs: Vec<u8> = x
            .iter()
            .flat_map(|&v| bf16::from_f32(v).to_bits().to_le_bytes())
            .collect();
        assert_eq!(ours, theirs);
        let back = ours_dequantize(GgmlType::BF16, &ours, x.len());
        for (b, v) in back.iter().zip(&x) {
            assert_eq!(b.to_bits(), bf16::from_f32(*v).to_f32().to_bits());
        }
    }
}

#[test]
fn typed_entry_points_equal_the_reference_bytes() {
    // The typed functions the kernels (Q8_0, Q8_1 per token) and tools call directly must give
    // the same bytes as the generic row API checked above.
    for (label, x) in all_rows() {
        if !trips_ggml_assert(&x) {
            typed_k_entry_points_equal_the_reference_bytes(&label, &fit_row(GgmlType::Q4_K, &x));
        }
        let mut q5_0 = vec![BlockQ5_0::default(); x.len() / 32];
        quant::quantize_row_q5_0(&x, &mut q5_0);
        assert_eq!(
            quant::block_bytes(&q5_0),
            ggml_quantize(GgmlType::Q5_0, &x),
            "Q5_0 {label}"
        );
        let mut q5_1 = vec![BlockQ5_1::default(); x.len() / 32];
        quant::quantize_row_q5_1(&x, &mut q5_1);
        assert_eq!(
            quant::block_bytes(&q5_1),
            ggml_quantize(GgmlType::Q5_1, &x),
            "Q5_1 {label}"
        );
        let mut q4_0 = vec![BlockQ4_0::default(); x.len() / 32];
        quant::quantize_row_q4_0(&x, &mut q4_0);
        assert_eq!(
            quant::block_bytes(&q4_0),
            ggml_quantize(GgmlType::Q4_0, &x),
            "Q4_0 {label}"
        );
        let mut q8_0 = vec![BlockQ8_0::default(); x.len() / 32];
        quant::quantize_row_q8_0(&x, &mut q8_0);
        assert_eq!(
            quant::block_bytes(&q8_0),
            ggml_quantize(GgmlType::Q8_0, &x),
            "Q8_0 {label}"
        );
        let mut q8_1 = vec![BlockQ8_1::default(); x.len() / 32];
        quant::quantize_row_q8_1(&x, &mut q8_1);
        assert_eq!(
            quant::block_bytes(&q8_1),
            ggml_quantize(GgmlType::Q8_1, &x),
            "Q8_1 {label}"
        );
        let mut q4_1 = vec![BlockQ4_1::default(); x.len() / 32];
        quant::quantize_row_q4_1(&x, &mut q4_1);
        assert_eq!(
            quant::block_bytes(&q4_1),
            ggml_quantize(GgmlType::Q4_1, &x),
            "Q4_1 {label}"
        );
    }
}

fn typed_k_entry_points_equal_the_reference_bytes(label: &str, x: &[f32]) {
    let nb = x.len() / 256;
    let mut q4_k = vec![BlockQ4K::default(); nb];
    quant::quantize_row_q4_k(x, &mut q4_k);
    assert_eq!(
        quant::block_bytes(&q4_k),
        ggml_quantize(GgmlType::Q4_K, x),
        "Q4_K {label}"
    );
    let mut q5_k = vec![BlockQ5K::default(); nb];
    quant::quantize_row_q5_k(x, &mut q5_k);
    assert_eq!(
        quant::block_bytes(&q5_k),
        ggml_quantize(GgmlType::Q5_K, x),
        "Q5_K {label}"
    );
    let mut q6_k = vec![BlockQ6K::default(); nb];
    quant::quantize_row_q6_k(x, &mut q6_k);
    assert_eq!(
        quant::block_bytes(&q6_k),
        ggml_quantize(GgmlType::Q6_K, x),
        "Q6_K {label}"
    );
    let mut q8_k = vec![BlockQ8K::default(); nb];
    quant::quantize_row_q8_k(x, &mut q8_k);
    assert_eq!(
        quant::block_bytes(&q8_k),
        ggml_quantize(GgmlType::Q8_K, x),
        "Q8_K {label}"
    );
}

#[test]
fn activation_quantizers_do_not_allocate() {
    let mut rng = Rng(11);
    let x: Vec<f32> = (0..1536).map(|_| rng.normal()).collect();
    let mut q8_0 = vec![BlockQ8_0::default(); 1536 / 32];
    let mut q8_1 = vec![BlockQ8_1::default(); 1536 / 32];
    let mut q8_k = vec![BlockQ8K::default(); 1536 / 256];
    let mut back = vec![0.0f32; 1536];
    let n = allocations_during(|| {
        for _ in 0..4 {
            quant::quantize_row_q8_0(&x, &mut q8_0);
            quant::quantize_row_q8_1(&x, &mut q8_1);
            quant::quantize_row_q8_k(&x, &mut q8_k);
            quant::dequantize_row_q8_k(&q8_k, &mut back);
            quant::dequantize_row_q8_0(&q8_0, &mut back);
            quant::dequantize_row(GgmlType::Q8_1, quant::block_bytes(&q8_1), &mut back)
                .expect("dequantize_row");
        }
    });
    assert_eq!(n, 0, "the per-token quantizers allocated {n} times");
    // and the counter works
    assert!(allocations_during(|| drop(std::hint::black_box(vec![0u8; 10]))) >= 1);
}
