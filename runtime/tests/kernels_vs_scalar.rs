//! Every kernel path this CPU (or QEMU) supports, checked against three references:
//! - the scalar table (the specification): random blocks of every weight/activation pair, with
//!   scales from zero and f16 subnormals to ±65504, and the block counts of real rows (1, 3, 17,
//!   18, 48, 49 and random ones). Int dots must agree within 1e-5 of Σ|terms| (their integer
//!   sums are exact; only the order of float additions differs), float dots within 1e-4. The
//!   NEON paths must equal the scalar kernels bit for bit wherever a llama-family Q4_0, Q4_1,
//!   Q5_0 or Q8_0 forward pass or a K-quant one (Gemma-3 Q4_K_M) uses them ([`neon_exact`]):
//!   those int dots, the K-quant ones including the prompt-batch dots of
//!   `Kernels::row_dot_batch`, the f16 attention dots in both orders, the softmax exponentials
//!   and SwiGLU;
//! - an independent naive dot of the dequantized rows in f64 (`quant::dequantize_row`), on fixed
//!   edge rows (all nibbles 0 or 15, ±127 activations, extreme scales);
//! - ggml's own `vec_dot` (the C code `ggml-sys-bleedingedge` vendors), on rows with an even
//!   block count (that ggml's NEON Q4_0 dot asserts one).
//!
//! The K-quants (Q4_K, Q5_K, Q6_K against Q8_K activations, whose `bsums` the generators keep
//! equal to the sums of their quants, as the quantizer does) take 1 to 12 super-blocks; their
//! Σ|terms| counts the scale part and the minimum part of each weight separately.
//!
//! The attention kernels: the multi-row dots (f16 and f32 rows, 1 to 6 vectors, any length and
//! stride) within the float dots' budget of the scalar ones, which equal the one-row dots bit
//! for bit; the softmax exponentials within 2 ulp of libm's `expf`, their sum within 1e-6.
//!
//! The activation quantizers must write exactly the scalar bytes, ties and specials included.
//! Also: asking for a path the CPU lacks is an error (never a crash), and `EDGELLM_KERNELS`
//! parsing. `bench_row_dots` (ignored) prints ns per row for each path.

use std::sync::Once;

use edgellm_runtime::kernels::{KernelError, KernelPath, Kernels, PreparedDots, SumOrder};
use edgellm_runtime::quant::{
    self, Block, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K,
    BlockQ8K, BlockQ8_0, BlockQ8_1,
};
use edgellm_runtime::GgmlType;
use ggml_sys_bleedingedge as ggml;
use half::{bf16, f16};
use proptest::prelude::*;
use proptest::test_runner::Config;

/// The SIMD tables this CPU can run (every implemented, supported path but scalar).
fn simd_kernels() -> Vec<Kernels> {
    static REPORT: Once = Once::new();
    let paths: Vec<KernelPath> = KernelPath::ALL
        .into_iter()
        .filter(|p| *p != KernelPath::Scalar && p.is_supported() && p.is_implemented())
        .collect();
    REPORT.call_once(|| eprintln!("kernel paths under test: {paths:?}"));
    paths
        .into_iter()
        .map(|p| Kernels::new(p).unwrap_or_else(|e| panic!("{p} is supported but: {e}")))
        .collect()
}

/// Whether `k` must equal the scalar kernels bit for bit in the kernels a SmolLM2 Q4_1 or
/// Q8_0 or a Gemma-3 Q4_K_M forward pass uses (the int dots of `ty`, or the float kernels when
/// `ty` is `None`): the
/// NEON paths, which reproduce the scalar (llama.cpp's x86) order of every float operation
/// there, so that greedy decoding on a board gives llama.cpp's tokens and logits.
fn neon_exact(k: &Kernels, ty: Option<GgmlType>) -> bool {
    matches!(k.path(), KernelPath::Neon | KernelPath::NeonDotprod)
        && ty.is_none_or(|t| {
            matches!(
                t,
                GgmlType::Q4_0
                    | GgmlType::Q4_1
                    | GgmlType::Q5_0
                    | GgmlType::Q8_0
                    | GgmlType::Q4_K
                    | GgmlType::Q5_K
                    | GgmlType::Q6_K
            )
        })
}

/// Whether `k` must equal the scalar `ty` dot bit for bit on x86: the Q5_K one-token dot, whose
/// scalar kernel follows the lanes of llama.cpp's AVX2 kernel (that build repacks no Q5_K
/// matrix, so this is the order its decode sums in), as the AVX2 kernel does.
fn x86_exact(k: &Kernels, ty: GgmlType) -> bool {
    matches!(k.path(), KernelPath::Avx2 | KernelPath::Avx512) && ty == GgmlType::Q5_K
}

/// Every table this CPU can run, scalar first.
fn all_kernels() -> Vec<Kernels> {
    let mut v = vec![Kernels::scalar()];
    v.extend(simd_kernels());
    v
}

// ---------------------------------------------------------------------------------------------
// Generators

/// f16 scales: mostly ordinary ones, plus zero, subnormals, the largest finite values and any
/// finite bit pattern (infinite or NaN scales make NaN in both and compare as nothing).
fn scale() -> impl Strategy<Value = f16> + Clone {
    prop_oneof![
        8 => (-2.0f32..2.0).prop_map(f16::from_f32),
        1 => Just(f16::ZERO),
        1 => (1u16..0x400, any::<bool>()).prop_map(|(b, neg)| f16::from_bits(b | (u16::from(neg) << 15))),
        1 => prop_oneof![Just(f16::MAX), Just(f16::MIN), Just(f16::MIN_POSITIVE)],
        2 => any::<u16>().prop_map(f16::from_bits).prop_filter("finite", |h| h.is_finite()),
    ]
}

/// Activation quants: the quantizers' range, [-127, 127] (the SIMD sign trick relies on it).
fn act_qs() -> impl Strategy<Value = [i8; 32]> + Clone {
    prop::array::uniform32(-127i8..=127)
}

fn block_q4_0() -> impl Strategy<Value = BlockQ4_0> + Clone {
    (scale(), any::<[u8; 16]>()).prop_map(|(d, qs)| BlockQ4_0 { d, qs })
}
fn block_q4_1() -> impl Strategy<Value = BlockQ4_1> + Clone {
    (scale(), scale(), any::<[u8; 16]>()).prop_map(|(d, m, qs)| BlockQ4_1 { d, m, qs })
}
/// Weights may hold any byte, -128 included.
fn block_q8_0_weight() -> impl Strategy<Value = BlockQ8_0> + Clone {
    (scale(), any::<[i8; 32]>()).prop_map(|(d, qs)| BlockQ8_0 { d, qs })
}
fn block_q8_0_act() -> impl Strategy<Value = BlockQ8_0> + Clone {
    (scale(), act_qs()).prop_map(|(d, qs)| BlockQ8_0 { d, qs })
}
fn block_q8_1_act() -> impl Strategy<Value = BlockQ8_1> + Clone {
    (scale(), scale(), act_qs()).prop_map(|(d, s, qs)| BlockQ8_1 { d, s, qs })
}
fn block_q5_0() -> impl Strategy<Value = BlockQ5_0> + Clone {
    (scale(), any::<[u8; 4]>(), any::<[u8; 16]>()).prop_map(|(d, qh, qs)| BlockQ5_0 { d, qh, qs })
}
fn block_q5_1() -> impl Strategy<Value = BlockQ5_1> + Clone {
    (scale(), scale(), any::<[u8; 4]>(), any::<[u8; 16]>()).prop_map(|(d, m, qh, qs)| BlockQ5_1 {
        d,
        m,
        qh,
        qs,
    })
}
/// Any bytes, any scale and min; `qh` empty for Q4_K.
fn k_weight_parts() -> impl Strategy<Value = (f16, f16, [u8; 12], [u8; 32], Vec<u8>)> + Clone {
    (
        scale(),
        scale(),
        any::<[u8; 12]>(),
        any::<[u8; 32]>(),
        prop::collection::vec(any::<u8>(), 128),
    )
}
fn block_q4_k() -> impl Strategy<Value = BlockQ4K> + Clone {
    k_weight_parts().prop_map(|(d, dmin, scales, _, qs)| BlockQ4K {
        d,
        dmin,
        scales,
        qs: qs.try_into().expect("128 bytes"),
    })
}
fn block_q5_k() -> impl Strategy<Value = BlockQ5K> + Clone {
    k_weight_parts().prop_map(|(d, dmin, scales, qh, qs)| BlockQ5K {
        d,
        dmin,
        scales,
        qh,
        qs: qs.try_into().expect("128 bytes"),
    })
}
fn block_q6_k() -> impl Strategy<Value = BlockQ6K> + Clone {
    (
        scale(),
        prop::collection::vec(any::<u8>(), 128 + 64),
        any::<[i8; 16]>(),
    )
        .prop_map(|(d, q, scales)| BlockQ6K {
            ql: q[..128].try_into().expect("128 bytes"),
            qh: q[128..].try_into().expect("64 bytes"),
            scales,
            d,
        })
}
/// Q8_K activations: quants in [-127, 127] with their true 16-value sums, an f32 scale.
fn block_q8_k_act() -> impl Strategy<Value = BlockQ8K> + Clone {
    (
        prop_oneof![4 => -2.0f32..2.0, 1 => Just(0.0f32), 1 => -1e-30f32..1e-30],
        prop::collection::vec(-127i8..=127, 256),
    )
        .prop_map(|(d, q)| {
            let qs: [i8; 256] = q.try_into().expect("256 quants");
            let mut bsums = [0i16; 16];
            for (s, c) in bsums.iter_mut().zip(qs.chunks_exact(16)) {
                *s = c.iter().map(|&v| i16::from(v)).sum();
            }
            BlockQ8K { d, qs, bsums }
        })
}
/// Super-block counts: real rows (1536 and 2304 columns are 6 and 9) and neighbours.
fn k_rows<W: std::fmt::Debug>(
    w: impl Strategy<Value = W> + Clone,
) -> impl Strategy<Value = (Vec<W>, Vec<BlockQ8K>)> {
    prop_oneof![prop::sample::select(vec![1usize, 2, 6, 9]), 1usize..12].prop_flat_map(move |n| {
        (
            prop::collection::vec(w.clone(), n),
            prop::collection::vec(block_q8_k_act(), n),
        )
    })
}

/// Two weight rows of K-quant super-blocks and one Q8_K activation row, as [`k_rows`].
fn two_k_rows<W: std::fmt::Debug>(
    w: impl Strategy<Value = W> + Clone,
) -> impl Strategy<Value = (Vec<W>, Vec<W>, Vec<BlockQ8K>)> {
    prop_oneof![prop::sample::select(vec![1usize, 2, 6, 9]), 1usize..12].prop_flat_map(move |n| {
        (
            prop::collection::vec(w.clone(), n),
            prop::collection::vec(w.clone(), n),
            prop::collection::vec(block_q8_k_act(), n),
        )
    })
}

fn finite_f16() -> impl Strategy<Value = f16> + Clone {
    prop_oneof![
        4 => (-4.0f32..4.0).prop_map(f16::from_f32),
        1 => any::<u16>().prop_map(f16::from_bits).prop_filter("finite", |h| h.is_finite()),
    ]
}
fn moderate_f32() -> impl Strategy<Value = f32> + Clone {
    prop_oneof![
        4 => -4.0f32..4.0,
        1 => -1e4f32..1e4,
        1 => -1e-20f32..1e-20,
        1 => Just(0.0f32),
    ]
}

/// Block counts of real rows (576 and 1536 columns are 18 and 48 blocks) and their
/// neighbours, plus random ones.
fn n_blocks() -> impl Strategy<Value = usize> + Clone {
    prop_oneof![
        prop::sample::select(vec![1usize, 2, 3, 17, 18, 48, 49]),
        1usize..80,
    ]
}

/// Two rows of `n` weight blocks and `n` activation blocks.
fn rows<W: std::fmt::Debug, A: std::fmt::Debug>(
    w: impl Strategy<Value = W> + Clone,
    a: impl Strategy<Value = A> + Clone,
    per_block: usize,
) -> impl Strategy<Value = (Vec<W>, Vec<A>)> {
    n_blocks().prop_flat_map(move |n| {
        (
            prop::collection::vec(w.clone(), n * per_block),
            prop::collection::vec(a.clone(), n * per_block),
        )
    })
}

/// Two weight rows of `n` blocks and one activation row of `n` blocks.
fn two_rows<W: std::fmt::Debug, A: std::fmt::Debug>(
    w: impl Strategy<Value = W> + Clone,
    a: impl Strategy<Value = A> + Clone,
) -> impl Strategy<Value = (Vec<W>, Vec<W>, Vec<A>)> {
    n_blocks().prop_flat_map(move |n| {
        (
            prop::collection::vec(w.clone(), n),
            prop::collection::vec(w.clone(), n),
            prop::collection::vec(a.clone(), n),
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Σ|terms|: the scale of the rounding error any summation order may make

fn abs_terms_q4_0(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f64 {
    w.iter()
        .zip(a)
        .map(|(x, y)| {
            let d = (f64::from(x.d.to_f32()) * f64::from(y.d.to_f32())).abs();
            let s: i64 = (0..16)
                .map(|j| {
                    let lo = i64::from(x.qs[j] & 0x0f) - 8;
                    let hi = i64::from(x.qs[j] >> 4) - 8;
                    (lo * i64::from(y.qs[j])).abs() + (hi * i64::from(y.qs[j + 16])).abs()
                })
                .sum();
            d * s as f64
        })
        .sum()
}

fn abs_terms_q4_1(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f64 {
    w.iter()
        .zip(a)
        .map(|(x, y)| {
            let d = (f64::from(x.d.to_f32()) * f64::from(y.d.to_f32())).abs();
            let s: i64 = (0..16)
                .map(|j| {
                    let lo = i64::from(x.qs[j] & 0x0f);
                    let hi = i64::from(x.qs[j] >> 4);
                    (lo * i64::from(y.qs[j])).abs() + (hi * i64::from(y.qs[j + 16])).abs()
                })
                .sum();
            d * s as f64 + (f64::from(x.m.to_f32()) * f64::from(y.s.to_f32())).abs()
        })
        .sum()
}

fn abs_terms_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f64 {
    w.iter()
        .zip(a)
        .map(|(x, y)| {
            let d = (f64::from(x.d.to_f32()) * f64::from(y.d.to_f32())).abs();
            let s: i64 =
                x.qs.iter()
                    .zip(&y.qs)
                    .map(|(&p, &q)| (i64::from(p) * i64::from(q)).abs())
                    .sum();
            d * s as f64
        })
        .sum()
}

/// Σ|terms| from the dequantized rows: for the types with a minimum (Q5_1, Q4_K, Q5_K) the
/// scale part and the minimum part of every weight count separately (the kernels sum them
/// apart), found by dequantizing copies with the minimum, then the scale, zeroed.
fn abs_terms_dequantized(ty: GgmlType, w: &[u8], a: &[u8]) -> f64 {
    let act = Kernels::act_type(ty).expect("act type");
    let n = w.len() / ty.type_size() * ty.block_size();
    let deq = |ty: GgmlType, bytes: &[u8]| {
        let r = Row::from_bytes(bytes);
        let mut out = vec![0.0f32; n];
        quant::dequantize_row(ty, r.bytes(), &mut out).expect("dequantize");
        out
    };
    let af = deq(act, a);
    // byte offsets of the f16 scale and minimum fields, for the types that have both
    let split = match ty {
        GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => Some((0usize, 2usize)),
        _ => None,
    };
    match split {
        None => abs_terms_float(&deq(ty, w), &af),
        Some((d_at, m_at)) => {
            let zeroed = |at: usize| {
                let mut v = w.to_vec();
                for b in v.chunks_exact_mut(ty.type_size()) {
                    b[at] = 0;
                    b[at + 1] = 0;
                }
                v
            };
            abs_terms_float(&deq(ty, &zeroed(m_at)), &af)
                + abs_terms_float(&deq(ty, &zeroed(d_at)), &af)
        }
    }
}

fn abs_terms_float(w: &[f32], a: &[f32]) -> f64 {
    w.iter()
        .zip(a)
        .map(|(&x, &y)| (f64::from(x) * f64::from(y)).abs())
        .sum()
}

// ---------------------------------------------------------------------------------------------
// Checks

/// Every SIMD path's `ty` row dot against the scalar one: `|got - want| <= rel · Σ|terms|`
/// (plus the smallest normal f32, for rows whose terms are all subnormal or zero).
fn check_vs_scalar<W: Block, A: Block>(
    ty: GgmlType,
    w: &[W],
    a: &[A],
    abs_terms: f64,
    rel: f64,
) -> Result<(), TestCaseError> {
    let (wb, ab) = (quant::block_bytes(w), quant::block_bytes(a));
    let want = Kernels::scalar().row_dot(ty).expect("scalar kernel")(wb, ab);
    prop_assert!(
        want.is_finite(),
        "{ty}: scalar result {want} (generator made a non-finite row)"
    );
    let tol = rel * abs_terms + f64::from(f32::MIN_POSITIVE);
    for k in simd_kernels() {
        let got = k.row_dot(ty).expect("kernel")(wb, ab);
        if neon_exact(&k, Some(ty)) || x86_exact(&k, ty) {
            prop_assert!(
                got.to_bits() == want.to_bits(),
                "{} {ty} over {} blocks: got {got}, scalar {want}: not bit for bit",
                k.path(),
                w.len() * W::ELEMS / 32,
            );
        }
        let err = (f64::from(got) - f64::from(want)).abs();
        prop_assert!(
            err <= tol,
            "{} {ty} over {} blocks: got {got}, scalar {want}, |diff| {err:e} > {tol:e} (Σ|terms| {abs_terms:e})",
            k.path(),
            w.len() * W::ELEMS / 32,
        );
        if let Some(p) = k.prepared_dots(ty) {
            let got = (p.dot)(wb, &prepared(&p, ab));
            let err = (f64::from(got) - f64::from(want)).abs();
            prop_assert!(
                err <= tol,
                "{} {ty} prepared over {} blocks: got {got}, scalar {want}, |diff| {err:e} > {tol:e}",
                k.path(),
                w.len() * W::ELEMS / 32,
            );
        }
    }
    Ok(())
}

/// The prepared form of activation row `a` for `p` ([`PreparedDots`]).
fn prepared(p: &PreparedDots, a: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; (p.bytes)(a.len())];
    (p.prepare)(a, &mut out);
    out
}

/// Every path's two-row `ty` dot and one-token matrix kernel (where it has them) equal its
/// one-row dot on each row, bit for bit; the one-row dots are checked against the scalar ones
/// above.
fn check_two_rows<W: Block, A: Block>(
    ty: GgmlType,
    w0: &[W],
    w1: &[W],
    a: &[A],
) -> Result<(), TestCaseError> {
    let (b0, b1, ab) = (
        quant::block_bytes(w0),
        quant::block_bytes(w1),
        quant::block_bytes(a),
    );
    for k in all_kernels() {
        let dot = k.row_dot(ty).expect("kernel");
        let want = [dot(b0, ab), dot(b1, ab)];
        if let Some(dot2) = k.row_dot2(ty) {
            let got = dot2(b0, b1, ab);
            prop_assert!(
                got[0].to_bits() == want[0].to_bits() && got[1].to_bits() == want[1].to_bits(),
                "{} {ty} two rows over {} blocks: {got:?}, one by one {want:?}",
                k.path(),
                w0.len() * W::ELEMS / 32,
            );
        }
        if let Some(rows_dot) = k.matrix_rows(ty) {
            // Eleven rows: two of each of four streams, then a pair, then one alone.
            let order = [0, 1, 1, 0, 0, 0, 1, 1, 1, 0, 1];
            let rows: Vec<u8> = order.iter().flat_map(|&i| [b0, b1][i]).copied().collect();
            let mut got = [f32::NAN; 11];
            rows_dot(&rows, b0.len(), ab, &mut got);
            let want = order.map(|i| want[i]);
            prop_assert!(
                got.iter()
                    .zip(&want)
                    .all(|(g, w)| g.to_bits() == w.to_bits()),
                "{} {ty} matrix rows over {} blocks: {got:?}, one by one {want:?}",
                k.path(),
                w0.len() * W::ELEMS / 32,
            );
        }
        if let Some(p) = k.prepared_dots(ty) {
            let pa = prepared(&p, ab);
            let want = [(p.dot)(b0, &pa), (p.dot)(b1, &pa)];
            // The matrix kernel over rows w0, w1, w0 (pairs, then an odd row alone).
            let rows = [b0, b1, b0].concat();
            let mut got = [f32::NAN; 3];
            (p.rows)(&rows, b0.len(), &pa, &mut got);
            let want = [want[0], want[1], want[0]];
            prop_assert!(
                got.iter()
                    .zip(&want)
                    .all(|(g, w)| g.to_bits() == w.to_bits()),
                "{} {ty} prepared matrix rows over {} blocks: {got:?}, one by one {want:?}",
                k.path(),
                w0.len() * W::ELEMS / 32,
            );
        }
    }
    Ok(())
}

/// Every path's prompt-batch K-quant dots ([`Kernels::row_dot_batch`]: Q4_K four tokens at a
/// time for matrices of a multiple of 8 rows, the tiled order for the other Q4_K and every
/// Q5_K and Q6_K matrix on batches of 8 tokens or more) against the scalar path's: the same
/// choice of dot and token count, and on the NEON paths the same bits.
fn check_batch_vs_scalar<W: Block>(
    ty: GgmlType,
    rows: usize,
    nb: usize,
    w: &[W],
    a: &[BlockQ8K],
) -> Result<(), TestCaseError> {
    let (wb, ab) = (quant::block_bytes(w), quant::block_bytes(a));
    let (dot, n) = Kernels::scalar()
        .row_dot_batch(ty, rows, nb)
        .unwrap_or_else(|| panic!("scalar {ty}: no batch dot for {rows} rows, {nb} tokens"));
    let want = dot(wb, ab);
    prop_assert!(want.is_finite(), "{ty}: scalar batch result {want}");
    for k in simd_kernels() {
        let Some((dot, got_n)) = k.row_dot_batch(ty, rows, nb) else {
            prop_assert!(!neon_exact(&k, Some(ty)), "{} {ty}: no batch dot", k.path());
            continue;
        };
        prop_assert_eq!(got_n, n, "{} {}: tokens taken", k.path(), ty);
        let got = dot(wb, ab);
        if neon_exact(&k, Some(ty)) {
            prop_assert!(
                got.to_bits() == want.to_bits(),
                "{} {ty} batch ({rows} rows, {nb} tokens) over {} blocks: got {got}, scalar {want}: not bit for bit",
                k.path(),
                w.len() * W::ELEMS / 32,
            );
        }
    }
    Ok(())
}

/// Integer sums are exact, so only float rounding of at most ~50 per-block terms differs.
const INT_REL: f64 = 1e-5;
/// Float dots: f32 lanes against the scalar f64 sum.
const FLOAT_REL: f64 = 1e-4;

fn config() -> Config {
    Config {
        cases: 384,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn q4_0_q8_0_matches_scalar((w, a) in rows(block_q4_0(), block_q8_0_act(), 1)) {
        check_vs_scalar(GgmlType::Q4_0, &w, &a, abs_terms_q4_0(&w, &a), INT_REL)?;
    }

    #[test]
    fn two_row_dots_equal_one_row_dots(
        (w0, w1, a) in two_rows(block_q4_0(), block_q8_0_act()),
        (v0, v1, b) in two_rows(block_q4_1(), block_q8_1_act()),
        (u0, u1, c) in two_rows(block_q8_0_weight(), block_q8_0_act()),
        (p0, p1, e) in two_rows(block_q5_0(), block_q8_0_act()),
        (s0, s1, h) in two_rows(block_q5_1(), block_q8_1_act()),
        (k0, k1, f) in two_k_rows(block_q4_k()),
        (h0, h1, g) in two_k_rows(block_q6_k()),
    ) {
        check_two_rows(GgmlType::Q4_0, &w0, &w1, &a)?;
        check_two_rows(GgmlType::Q4_1, &v0, &v1, &b)?;
        check_two_rows(GgmlType::Q8_0, &u0, &u1, &c)?;
        check_two_rows(GgmlType::Q5_0, &p0, &p1, &e)?;
        check_two_rows(GgmlType::Q5_1, &s0, &s1, &h)?;
        check_two_rows(GgmlType::Q4_K, &k0, &k1, &f)?;
        check_two_rows(GgmlType::Q6_K, &h0, &h1, &g)?;
    }

    #[test]
    fn q4_1_q8_1_matches_scalar((w, a) in rows(block_q4_1(), block_q8_1_act(), 1)) {
        check_vs_scalar(GgmlType::Q4_1, &w, &a, abs_terms_q4_1(&w, &a), INT_REL)?;
    }

    #[test]
    fn q5_0_q8_0_matches_scalar((w, a) in rows(block_q5_0(), block_q8_0_act(), 1)) {
        let t = abs_terms_dequantized(GgmlType::Q5_0, quant::block_bytes(&w), quant::block_bytes(&a));
        check_vs_scalar(GgmlType::Q5_0, &w, &a, t, INT_REL)?;
    }

    #[test]
    fn q5_1_q8_1_matches_scalar((w, a) in rows(block_q5_1(), block_q8_1_act(), 1)) {
        // the kernels use the stored activation sums `s`, not d·Σq: count m·s as a term
        let t = abs_terms_dequantized(GgmlType::Q5_1, quant::block_bytes(&w), quant::block_bytes(&a))
            + w.iter().zip(&a).map(|(x, y)| (f64::from(x.m.to_f32()) * f64::from(y.s.to_f32())).abs()).sum::<f64>();
        check_vs_scalar(GgmlType::Q5_1, &w, &a, t, INT_REL)?;
    }

    #[test]
    fn q4_k_q8_k_matches_scalar((w, a) in k_rows(block_q4_k())) {
        let t = abs_terms_dequantized(GgmlType::Q4_K, quant::block_bytes(&w), quant::block_bytes(&a));
        check_vs_scalar(GgmlType::Q4_K, &w, &a, t, INT_REL)?;
    }

    #[test]
    fn q5_k_q8_k_matches_scalar((w, a) in k_rows(block_q5_k())) {
        let t = abs_terms_dequantized(GgmlType::Q5_K, quant::block_bytes(&w), quant::block_bytes(&a));
        check_vs_scalar(GgmlType::Q5_K, &w, &a, t, INT_REL)?;
    }

    #[test]
    fn q6_k_q8_k_matches_scalar((w, a) in k_rows(block_q6_k())) {
        let t = abs_terms_dequantized(GgmlType::Q6_K, quant::block_bytes(&w), quant::block_bytes(&a));
        check_vs_scalar(GgmlType::Q6_K, &w, &a, t, INT_REL)?;
    }

    #[test]
    fn kquant_batch_dots_match_scalar(
        (w, a) in k_rows(block_q4_k()),
        (v, b) in k_rows(block_q5_k()),
        (u, c) in k_rows(block_q6_k()),
    ) {
        // Q4_K repacked (rows % 8 == 0; 4 and 7 tokens take the group-of-4 dot) and tiled
        check_batch_vs_scalar(GgmlType::Q4_K, 8, 4, &w, &a)?;
        check_batch_vs_scalar(GgmlType::Q4_K, 1536, 7, &w, &a)?;
        check_batch_vs_scalar(GgmlType::Q4_K, 7, 8, &w, &a)?;
        check_batch_vs_scalar(GgmlType::Q5_K, 8, 8, &v, &b)?;
        check_batch_vs_scalar(GgmlType::Q6_K, 8, 8, &u, &c)?;
        check_batch_vs_scalar(GgmlType::Q6_K, 262_144, 32, &u, &c)?;
    }

    #[test]
    fn q8_0_q8_0_matches_scalar((w, a) in rows(block_q8_0_weight(), block_q8_0_act(), 1)) {
        check_vs_scalar(GgmlType::Q8_0, &w, &a, abs_terms_q8_0(&w, &a), INT_REL)?;
    }

    #[test]
    fn f16_f16_matches_scalar((w, a) in rows(finite_f16(), finite_f16(), 32)) {
        let wf: Vec<f32> = w.iter().map(|h| h.to_f32()).collect();
        let af: Vec<f32> = a.iter().map(|h| h.to_f32()).collect();
        check_vs_scalar(GgmlType::F16, &w, &a, abs_terms_float(&wf, &af), FLOAT_REL)?;
    }

    #[test]
    fn f32_f32_matches_scalar((w, a) in rows(moderate_f32(), moderate_f32(), 32)) {
        check_vs_scalar(GgmlType::F32, &w, &a, abs_terms_float(&w, &a), FLOAT_REL)?;
    }

    #[test]
    fn bf16_f32_matches_scalar((w, a) in rows(moderate_f32(), moderate_f32(), 32)) {
        let wb: Vec<bf16> = w.iter().map(|&x| bf16::from_f32(x)).collect();
        let wf: Vec<f32> = wb.iter().map(|x| x.to_f32()).collect();
        check_vs_scalar(GgmlType::BF16, &wb, &a, abs_terms_float(&wf, &a), FLOAT_REL)?;
    }

    #[test]
    fn float_rows_of_any_length_match_scalar(
        w in prop::collection::vec(moderate_f32(), 0..200),
        a in prop::collection::vec(moderate_f32(), 0..200),
    ) {
        // lengths that are no multiple of the vector width, and unequal lengths (the dot runs
        // over the shorter one, as the scalar zip does)
        let n = w.len().min(a.len());
        check_vs_scalar(GgmlType::F32, &w, &a, abs_terms_float(&w[..n], &a[..n]), FLOAT_REL)?;
        let wh: Vec<f16> = w.iter().map(|&x| f16::from_f32(x)).collect();
        let ah: Vec<f16> = a.iter().map(|&x| f16::from_f32(x)).collect();
        let whf: Vec<f32> = wh.iter().map(|h| h.to_f32()).collect();
        let ahf: Vec<f32> = ah.iter().map(|h| h.to_f32()).collect();
        check_vs_scalar(GgmlType::F16, &wh, &ah, abs_terms_float(&whf[..n], &ahf[..n]), FLOAT_REL)?;
        let wb: Vec<bf16> = w.iter().map(|&x| bf16::from_f32(x)).collect();
        let wbf: Vec<f32> = wb.iter().map(|x| x.to_f32()).collect();
        check_vs_scalar(GgmlType::BF16, &wb, &a, abs_terms_float(&wbf[..n], &a[..n]), FLOAT_REL)?;
    }

    #[test]
    fn multi_row_dots_match_scalar(
        (n_rows, n, pad, g) in (0usize..40, 1usize..150, 0usize..20, 1usize..=6),
        seed in prop::collection::vec(moderate_f32(), 64),
    ) {
        check_rows_dots(n_rows, n, n + pad, g, &seed)?;
    }

    #[test]
    fn soft_max_exponentials_match_scalar(
        x in prop::collection::vec(prop_oneof![
            6 => -30.0f32..30.0,
            2 => -120.0f32..0.0,
            1 => -1e4f32..1e4,
            1 => Just(0.0f32),
        ], 0..100),
        max in prop_oneof![Just(None), (-30.0f32..30.0).prop_map(Some)],
    ) {
        check_soft_max(&x, max)?;
    }

    #[test]
    fn swiglu_matches_scalar(
        gate in prop::collection::vec(prop_oneof![
            6 => -30.0f32..30.0,
            2 => -120.0f32..120.0,
            1 => -1e4f32..1e4,
            1 => Just(0.0f32),
        ], 0..100),
        up in -4.0f32..4.0,
    ) {
        check_swiglu(&gate, up)?;
    }

    #[test]
    fn quantize_act_writes_the_scalar_bytes(x in prop::collection::vec(act_value(), 32..=32 * 49)) {
        let n = x.len() / 32 * 32;
        check_quantize_act(&x[..n])?;
    }
}

/// The grouping check of [`check_rows_dots`] on values with full mantissas (the property test's
/// values are coarse enough that many sums are exact in any order, which would hide an order
/// difference): rows past a step's block and single rows, 1 to 6 vectors, tails of 0 to 7.
#[test]
fn multi_row_dots_do_not_depend_on_grouping() {
    let seed: Vec<f32> = (0..97u32)
        .map(|i| ((i as f32) * 0.618_034).fract() * 2.0 - 1.0 + 1.0 / (3.0 + i as f32))
        .collect();
    for (n_rows, n) in [(17, 64), (9, 256), (20, 61), (33, 8)] {
        for g in 1..=6 {
            check_rows_dots(n_rows, n, n + 3, g, &seed).expect("grouping-independent results");
        }
    }
}

/// Every path's multi-row dots (f16 and f32 rows, `g` vectors) against the scalar ones, each
/// result within `FLOAT_REL · Σ|terms|`: `n_rows` rows of `n` values, `stride` apart (the matrix
/// ends with the last row, as the KV cache's last head does), values cycled from `seed`. The
/// scalar results are checked against the one-row scalar dots (with the vector in f16 for f16
/// rows, which holds the same values): bit for bit for f32, within the same bound for f16,
/// whose rows dot sums in llama.cpp's two attention orders ([`SumOrder`]) where the one-row dot
/// sums in f64.
fn check_rows_dots(
    n_rows: usize,
    n: usize,
    stride: usize,
    g: usize,
    seed: &[f32],
) -> Result<(), TestCaseError> {
    let len = if n_rows == 0 {
        0
    } else {
        (n_rows - 1) * stride + n
    };
    let m: Vec<f32> = (0..len)
        .map(|i| seed[(i * 7 + i / 13) % seed.len()])
        .collect();
    let x: Vec<f32> = (0..g * n).map(|i| seed[(i * 5 + 3) % seed.len()]).collect();
    let mh: Vec<f16> = m.iter().map(|&v| f16::from_f32(v)).collect();
    let xh: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
    let mhf: Vec<f32> = mh.iter().map(|h| h.to_f32()).collect();
    let xhf: Vec<f32> = xh.iter().map(|h| h.to_f32()).collect();
    let scalar = Kernels::scalar();
    let mut want32 = vec![0.0f32; g * n_rows];
    let mut want16 = vec![0.0f32; g * n_rows];
    let mut want16_single = vec![0.0f32; g * n_rows];
    let single = SumOrder::Single {
        padded: n.next_multiple_of(32),
    };
    (scalar.rows_dot_f32())(&m, stride, &x, n, SumOrder::Batch, &mut want32);
    (scalar.rows_dot_f16())(&mh, stride, &xhf, n, SumOrder::Batch, &mut want16);
    (scalar.rows_dot_f16())(&mh, stride, &xhf, n, single, &mut want16_single);
    let dot16 = scalar.row_dot(GgmlType::F16).expect("f16 dot");
    let dot32 = scalar.row_dot(GgmlType::F32).expect("f32 dot");
    for h in 0..g {
        for r in 0..n_rows {
            let (row, row_h) = (&m[r * stride..][..n], &mh[r * stride..][..n]);
            let (v, v_h) = (&x[h * n..][..n], &xh[h * n..][..n]);
            let one32 = dot32(quant::block_bytes(row), quant::block_bytes(v));
            let one16 = dot16(quant::block_bytes(row_h), quant::block_bytes(v_h));
            prop_assert_eq!(want32[h * n_rows + r].to_bits(), one32.to_bits());
            let t16 = abs_terms_float(&mhf[r * stride..][..n], &xhf[h * n..][..n]);
            let tol16 = FLOAT_REL * t16 + f64::from(f32::MIN_POSITIVE);
            for (order, got) in [("batch", &want16), ("single", &want16_single)] {
                let e = (f64::from(got[h * n_rows + r]) - f64::from(one16)).abs();
                prop_assert!(
                    e <= tol16,
                    "scalar f16 rows ({order} order): {} vs {one16}",
                    got[h * n_rows + r]
                );
            }
        }
    }
    for k in simd_kernels() {
        let mut got32 = vec![f32::NAN; g * n_rows];
        let mut got16 = vec![f32::NAN; g * n_rows];
        (k.rows_dot_f32())(&m, stride, &x, n, SumOrder::Batch, &mut got32);
        (k.rows_dot_f16())(&mh, stride, &xhf, n, SumOrder::Batch, &mut got16);
        if neon_exact(&k, None) {
            let mut got16_single = vec![f32::NAN; g * n_rows];
            (k.rows_dot_f16())(&mh, stride, &xhf, n, single, &mut got16_single);
            for (order, got, want) in [
                ("batch", &got16, &want16),
                ("single", &got16_single, &want16_single),
            ] {
                for (o, (a, b)) in got.iter().zip(want.iter()).enumerate() {
                    prop_assert!(
                        a.to_bits() == b.to_bits(),
                        "{} f16 rows ({order} order), output {o} of {n_rows} rows × {g} of {n}: {a} vs scalar {b}",
                        k.path()
                    );
                }
            }
        }
        for h in 0..g {
            for r in 0..n_rows {
                let o = h * n_rows + r;
                let t32 = abs_terms_float(&m[r * stride..][..n], &x[h * n..][..n]);
                let t16 = abs_terms_float(&mhf[r * stride..][..n], &xhf[h * n..][..n]);
                let tol32 = FLOAT_REL * t32 + f64::from(f32::MIN_POSITIVE);
                let tol16 = FLOAT_REL * t16 + f64::from(f32::MIN_POSITIVE);
                let e32 = (f64::from(got32[o]) - f64::from(want32[o])).abs();
                let e16 = (f64::from(got16[o]) - f64::from(want16[o])).abs();
                prop_assert!(e32 <= tol32, "{} f32 rows: vector {h}/{g}, row {r}/{n_rows} of {n} (stride {stride}): {} vs {}", k.path(), got32[o], want32[o]);
                prop_assert!(e16 <= tol16, "{} f16 rows: vector {h}/{g}, row {r}/{n_rows} of {n} (stride {stride}): {} vs {}", k.path(), got16[o], want16[o]);
            }
        }
        // Grouping must not change a result: each vector alone, and each row alone, gives the
        // same bits as the grouped call (a query's attention scores may not depend on how
        // many other queries shared its call).
        for h in 0..g {
            let v = &x[h * n..(h + 1) * n];
            let vh = &xhf[h * n..(h + 1) * n];
            let (mut one32, mut one16) = (vec![f32::NAN; n_rows], vec![f32::NAN; n_rows]);
            (k.rows_dot_f32())(&m, stride, v, n, SumOrder::Batch, &mut one32);
            (k.rows_dot_f16())(&mh, stride, vh, n, SumOrder::Batch, &mut one16);
            for r in 0..n_rows {
                let o = h * n_rows + r;
                prop_assert_eq!(
                    one32[r].to_bits(),
                    got32[o].to_bits(),
                    "{} f32 vector {}/{} alone, row {}",
                    k.path(),
                    h,
                    g,
                    r
                );
                prop_assert_eq!(
                    one16[r].to_bits(),
                    got16[o].to_bits(),
                    "{} f16 vector {}/{} alone, row {}",
                    k.path(),
                    h,
                    g,
                    r
                );
                let (mut a32, mut a16) = ([f32::NAN], [f32::NAN]);
                (k.rows_dot_f32())(
                    &m[r * stride..r * stride + n],
                    stride,
                    v,
                    n,
                    SumOrder::Batch,
                    &mut a32,
                );
                (k.rows_dot_f16())(
                    &mh[r * stride..r * stride + n],
                    stride,
                    vh,
                    n,
                    SumOrder::Batch,
                    &mut a16,
                );
                prop_assert_eq!(
                    a32[0].to_bits(),
                    got32[o].to_bits(),
                    "{} f32 row {} alone",
                    k.path(),
                    r
                );
                prop_assert_eq!(
                    a16[0].to_bits(),
                    got16[o].to_bits(),
                    "{} f16 row {} alone",
                    k.path(),
                    r
                );
            }
        }
    }
    Ok(())
}

/// Every path's softmax exponentials against the scalar ones (libm's `expf`): each value
/// within 2 ulp relative (the SIMD `expf` is within 1.5 ulp, libm's within 0.5) or both below
/// `silu(gate) · up` of every path against the scalar one (libm's `expf`): within 5e-7 relative
/// (the vector exponential is within 1.5 ulp, then an add, a divide and a multiply), or both
/// below 1e-30 where `e^-x` overflows in one and not yet in the other. `up` varies per element
/// around `up0`, and odd lengths exercise the tails.
fn check_swiglu(gate: &[f32], up0: f32) -> Result<(), TestCaseError> {
    let up: Vec<f32> = (0..gate.len()).map(|i| up0 + i as f32 * 0.01).collect();
    let mut want = gate.to_vec();
    (Kernels::scalar().swiglu())(&mut want, &up);
    for k in simd_kernels() {
        let mut got = gate.to_vec();
        (k.swiglu())(&mut got, &up);
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            prop_assert!(
                !neon_exact(&k, None) || g.to_bits() == w.to_bits(),
                "{}: silu({}) * {} = {g}, scalar {w}: not bit for bit",
                k.path(),
                gate[i],
                up[i]
            );
            let close = (f64::from(g) - f64::from(w)).abs() <= 5e-7 * f64::from(w).abs()
                || (g.abs() < 1e-30 && w.abs() < 1e-30);
            prop_assert!(
                close,
                "{}: silu({}) * {} = {g}, scalar {w}",
                k.path(),
                gate[i],
                up[i]
            );
        }
    }
    Ok(())
}

/// the normal range (the SIMD path flushes from about -103.9, where libm's goes on in
/// subnormals), the sum within 1e-6 relative. `max` is the row's maximum (as softmax passes it)
/// or an arbitrary value, so arguments above 0 up to overflow are covered too.
fn check_soft_max(x: &[f32], max: Option<f32>) -> Result<(), TestCaseError> {
    let max = max.unwrap_or_else(|| x.iter().copied().fold(f32::NEG_INFINITY, f32::max));
    let mut want = x.to_vec();
    let want_sum = (Kernels::scalar().soft_max())(&mut want, max);
    for k in simd_kernels() {
        let mut got = x.to_vec();
        let got_sum = (k.soft_max())(&mut got, max);
        if neon_exact(&k, None) {
            prop_assert!(
                got_sum.to_bits() == want_sum.to_bits(),
                "{}: sum {got_sum}, scalar {want_sum}: not bit for bit",
                k.path()
            );
        }
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            prop_assert!(
                !neon_exact(&k, None) || g.to_bits() == w.to_bits(),
                "{}: e^({} - {max}) = {g}, scalar {w}: not bit for bit",
                k.path(),
                x[i]
            );
            let close = if w.is_infinite() {
                g == w
            } else {
                (f64::from(g) - f64::from(w)).abs() <= 2.4e-7 * f64::from(w).abs()
                    || (g.abs() < f32::MIN_POSITIVE && w.abs() < f32::MIN_POSITIVE)
            };
            prop_assert!(
                close,
                "{}: e^({} - {max}) = {g}, scalar {w}",
                k.path(),
                x[i]
            );
        }
        let close_sum = if want_sum.is_infinite() {
            got_sum == want_sum
        } else {
            (got_sum - want_sum).abs() <= 1e-6 * want_sum.abs()
        };
        prop_assert!(close_sum, "{}: sum {got_sum}, scalar {want_sum}", k.path());
    }
    Ok(())
}

/// Activation values: ordinary, huge, tiny (down to subnormal), exact ties after scaling
/// (multiples of 0.5 in blocks whose amax is 127), and the specials.
fn act_value() -> impl Strategy<Value = f32> + Clone {
    prop_oneof![
        6 => -10.0f32..10.0,
        2 => (-254i32..=254).prop_map(|k| k as f32 * 0.5),
        1 => Just(127.0f32),
        1 => -1e30f32..1e30,
        1 => -1e-37f32..1e-37,
        1 => (1u32..0x0080_0000).prop_map(f32::from_bits),
        1 => prop::sample::select(vec![0.0f32, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -f32::NAN, f32::MAX, f32::MIN_POSITIVE]),
    ]
}

/// Byte storage aligned for every block type, big enough for any row the tests build.
#[repr(C, align(8))]
struct Aligned([u8; Row::MAX]);

/// One row's bytes in aligned storage (a `Vec<u8>` only promises alignment 1).
struct Row {
    buf: Box<Aligned>,
    len: usize,
}

impl Row {
    const MAX: usize = 8192;

    fn zeroed(len: usize, fill: u8) -> Row {
        assert!(len <= Row::MAX, "row of {len} bytes");
        Row {
            buf: Box::new(Aligned([fill; Row::MAX])),
            len,
        }
    }

    fn from_bytes(bytes: &[u8]) -> Row {
        let mut r = Row::zeroed(bytes.len(), 0);
        r.bytes_mut().copy_from_slice(bytes);
        r
    }

    fn bytes(&self) -> &[u8] {
        &self.buf.0[..self.len]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf.0[..self.len]
    }
}

/// Each path's Q8_0 and Q8_1 activation bytes against the scalar quantizers'.
fn check_quantize_act(x: &[f32]) -> Result<(), TestCaseError> {
    for act in [GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8_K] {
        // Q8_K takes whole 256-value blocks: the longest such prefix, if any
        let x = &x[..x.len() / act.block_size() * act.block_size()];
        if x.is_empty() {
            continue;
        }
        let bytes = act.row_bytes(x.len() as u64).expect("whole blocks") as usize;
        let mut want = Row::zeroed(bytes, 0);
        let want = want.bytes_mut();
        Kernels::scalar().quantize_act(act, x, want);
        for k in simd_kernels() {
            let mut got = Row::zeroed(bytes, 0xA5);
            let got = got.bytes_mut();
            k.quantize_act(act, x, got);
            if got != want {
                let blk = act.type_size();
                let i = got
                    .iter()
                    .zip(want.iter())
                    .position(|(g, w)| g != w)
                    .unwrap_or(0)
                    / blk;
                prop_assert!(
                    false,
                    "{} {act}: block {i} differs: got {:?}, scalar {:?}, input {:?}",
                    k.path(),
                    &got[i * blk..(i + 1) * blk],
                    &want[i * blk..(i + 1) * blk],
                    &x[i * act.block_size()..(i + 1) * act.block_size()]
                );
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Fixed edge rows against the dequantized rows dotted naively in f64

/// Scales that stress the float side: ordinary, zero, negative, the largest finite f16 and the
/// smallest subnormal one.
const EDGE_SCALES: [f32; 6] = [1.0, 0.0, -0.75, 65504.0, 5.960_464_5e-8, 0.013];

/// The weight bytes of edge pattern `p` (all nibbles 0, all 15, alternating, a ramp).
fn edge_bytes(p: usize, j: usize) -> u8 {
    match p % 4 {
        0 => 0x00,
        1 => 0xFF,
        2 => {
            if j.is_multiple_of(2) {
                0x0F
            } else {
                0xF0
            }
        }
        _ => (j * 37 + 11) as u8,
    }
}

/// An activation row of `n` values for pattern `p`: ±127 extremes, alternating signs, a ramp.
fn edge_act(p: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| match p % 3 {
            0 => 127.0,
            1 => {
                if i % 2 == 0 {
                    -3.5
                } else {
                    3.5
                }
            }
            _ => (i as f32 - n as f32 / 2.0) * 0.37,
        })
        .collect()
}

/// `ty`'s edge weight row of `nb` blocks for pattern `p`.
fn edge_weights(ty: GgmlType, p: usize, nb: usize) -> Vec<u8> {
    let h = |b: usize| {
        f16::from_f32(EDGE_SCALES[(b + p) % EDGE_SCALES.len()])
            .to_bits()
            .to_le_bytes()
    };
    let mut out = Vec::new();
    for b in 0..nb {
        match ty {
            GgmlType::Q4_0 => {
                out.extend(h(b));
                out.extend((0..16).map(|j| edge_bytes(p, j)));
            }
            GgmlType::Q4_1 => {
                out.extend(h(b));
                out.extend(h(b + 1));
                out.extend((0..16).map(|j| edge_bytes(p, j)));
            }
            GgmlType::Q8_0 => {
                out.extend(h(b));
                // bytes as i8: 0 / -1 / alternating 15,-16 / a ramp through -128..127
                out.extend((0..32).map(|j| edge_bytes(p, j)));
            }
            GgmlType::Q5_0 => {
                out.extend(h(b));
                out.extend((0..20).map(|j| edge_bytes(p, j + 3)));
            }
            GgmlType::Q5_1 => {
                out.extend(h(b));
                out.extend(h(b + 1));
                out.extend((0..20).map(|j| edge_bytes(p, j + 3)));
            }
            GgmlType::Q4_K | GgmlType::Q5_K => {
                out.extend(h(b));
                out.extend(h(b + 1));
                // packed scales and mins (all 0 / all 63 / mixed), then qh and the nibbles
                out.extend((0..ty.type_size() - 4).map(|j| edge_bytes(p, j)));
            }
            GgmlType::Q6_K => {
                // ql, qh, then the i8 scales (0 / -1 / 15,-16 / a ramp through -128..127)
                out.extend((0..208).map(|j| edge_bytes(p, j)));
                out.extend(h(b));
            }
            _ => unreachable!("edge weights are for the int types"),
        }
    }
    out
}

/// The scalar quantizer's activation row for weights of `ty`.
fn quantized_act(ty: GgmlType, x: &[f32]) -> Row {
    let bytes = Kernels::act_row_bytes(ty, x.len()).expect("act type");
    let mut r = Row::zeroed(bytes, 0);
    let act = Kernels::act_type(ty).expect("act type");
    Kernels::scalar().quantize_act(act, x, r.bytes_mut());
    r
}

/// `(Σ w·a, Σ|w·a|)` in f64 over the dequantized rows, plus for Q4_1 the bound on the error of
/// the stored activation sums `s = fp16(d·Σq)` that the kernels use instead of `d·Σq`.
fn dequantized_dot(ty: GgmlType, w: &[u8], a: &[u8], n: usize) -> (f64, f64) {
    let act = Kernels::act_type(ty).expect("act type");
    let (mut wf, mut af) = (vec![0.0f32; n], vec![0.0f32; n]);
    quant::dequantize_row(ty, w, &mut wf).expect("dequantize weights");
    quant::dequantize_row(act, a, &mut af).expect("dequantize activations");
    let dot: f64 = wf
        .iter()
        .zip(&af)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum();
    let mut bound = abs_terms_dequantized(ty, w, a);
    if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
        let mins: Vec<f16> = match ty {
            GgmlType::Q4_1 => quant::blocks::<BlockQ4_1>(w)
                .expect("q4_1 blocks")
                .iter()
                .map(|b| b.m)
                .collect(),
            _ => quant::blocks::<BlockQ5_1>(w)
                .expect("q5_1 blocks")
                .iter()
                .map(|b| b.m)
                .collect(),
        };
        let ab = quant::blocks::<BlockQ8_1>(a).expect("q8_1 blocks");
        for (m, y) in mins.iter().zip(ab) {
            let sum_q: i32 = y.qs.iter().map(|&q| i32::from(q)).sum();
            let exact = f64::from(y.d.to_f32()) * f64::from(sum_q);
            bound += 1e5 * (f64::from(m.to_f32()) * (f64::from(y.s.to_f32()) - exact)).abs();
        }
    }
    (dot, bound)
}

#[test]
fn int_dots_match_dequantized_rows_on_edge_patterns() {
    let kernels = all_kernels();
    let mut checked = 0;
    let types = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q8_0,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ];
    for ty in types {
        // super-blocks: 1, 3 and 9 (2304 values), within `Row::MAX`
        let counts: &[usize] = if ty.block_size() == 256 {
            &[1, 3, 9]
        } else {
            &[1, 3, 17, 18, 48, 49]
        };
        for &nb in counts {
            for p in 0..12 {
                let n = nb * ty.block_size();
                let w = Row::from_bytes(&edge_weights(ty, p, nb));
                let a = quantized_act(ty, &edge_act(p, n));
                let (want, bound) = dequantized_dot(ty, w.bytes(), a.bytes(), n);
                let tol = INT_REL * bound + 1e-30;
                for k in &kernels {
                    let got = k.row_dot(ty).expect("kernel")(w.bytes(), a.bytes());
                    assert!(
                        (f64::from(got) - want).abs() <= tol,
                        "{} {ty}, {nb} blocks, pattern {p}: got {got}, dequantized dot {want}, tolerance {tol:e}",
                        k.path()
                    );
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, (5 * 6 + 3 * 3) * 12 * kernels.len());
}

#[test]
fn row_dots_reject_partial_blocks_with_nan() {
    for k in all_kernels() {
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q8_0,
            GgmlType::F16,
            GgmlType::F32,
            GgmlType::BF16,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q4_K,
            GgmlType::Q5_K,
            GgmlType::Q6_K,
        ] {
            // two blocks (of 32 values for the scalar types)
            let n = 2 * ty.block_size().max(32);
            let w = Row::zeroed(ty.type_size() * 2 + 1, 0);
            let a = Row::zeroed(Kernels::act_row_bytes(ty, n).expect("act"), 0);
            let got = k.row_dot(ty).expect("kernel")(w.bytes(), a.bytes());
            assert!(
                got.is_nan(),
                "{} {ty}: a partial block gave {got}",
                k.path()
            );
            let w = Row::zeroed(ty.row_bytes(n as u64).expect("row") as usize, 0);
            assert_eq!(
                k.row_dot(ty).expect("kernel")(w.bytes(), a.bytes()),
                0.0,
                "{} {ty}",
                k.path()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ggml's own vec_dot

/// ggml's vec_dot for `ty` (with its activation type), after `ggml_init` filled the f16 table
/// its x86 builds read.
fn ggml_vec_dot(ty: GgmlType, n: usize, w: &[u8], a: &[u8]) -> f32 {
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
    // SAFETY: every ggml type id below GGML_TYPE_COUNT indexes ggml's static table.
    let traits = unsafe { ggml::ggml_internal_get_type_traits(ty.id() as ggml::ggml_type) };
    assert_eq!(
        traits.vec_dot_type as u32,
        Kernels::act_type(ty).expect("act").id()
    );
    let vec_dot = traits.vec_dot.expect("ggml has a vec_dot for the type");
    assert_eq!(w.len(), ty.row_bytes(n as u64).expect("row") as usize);
    assert_eq!(a.len(), Kernels::act_row_bytes(ty, n).expect("act"));
    let mut s = 0.0f32;
    // SAFETY: `w` and `a` hold exactly one row of `n` elements of the weight and activation
    // types (checked above); ggml reads only those and writes the one float `s`.
    unsafe {
        vec_dot(
            n as i32,
            &mut s,
            0,
            w.as_ptr().cast(),
            0,
            a.as_ptr().cast(),
            0,
            1,
        )
    };
    s
}

/// A deterministic pseudo-random stream (xorshift64*), for rows without proptest.
struct Stream(u64);

impl Stream {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

#[test]
fn every_path_matches_ggml_vec_dot() {
    let kernels = all_kernels();
    let mut rng = Stream(0x9E37_79B9_7F4A_7C15);
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q8_0,
        GgmlType::F16,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ] {
        // even block counts: ggml b2757's NEON Q4_0 dot asserts one
        let counts: &[usize] = if ty.block_size() == 256 {
            &[1, 6, 9]
        } else {
            &[2, 18, 48]
        };
        for &nb in counts {
            for _ in 0..20 {
                let n = nb * ty.block_size().max(32);
                let scale = [1.0f32, 1e-3, 40.0][(rng.next() % 3) as usize];
                let wf: Vec<f32> = (0..n).map(|_| rng.unit() * scale).collect();
                let x: Vec<f32> = (0..n).map(|_| rng.unit() * 3.0).collect();
                let mut w = Row::zeroed(ty.row_bytes(n as u64).expect("row") as usize, 0);
                quant::quantize_row(ty, &wf, w.bytes_mut()).expect("quantize weights");
                let a = quantized_act(ty, &x);
                let want = ggml_vec_dot(ty, n, w.bytes(), a.bytes());
                let (_, bound) = dequantized_dot(ty, w.bytes(), a.bytes(), n);
                let rel = if ty == GgmlType::F16 {
                    FLOAT_REL
                } else {
                    INT_REL
                };
                let tol = rel * bound + 1e-30;
                for k in &kernels {
                    let got = k.row_dot(ty).expect("kernel")(w.bytes(), a.bytes());
                    assert!(
                        (f64::from(got) - f64::from(want)).abs() <= tol,
                        "{} {ty}, {nb} blocks: got {got}, ggml {want}, tolerance {tol:e}",
                        k.path()
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Dispatch

#[test]
fn paths_the_cpu_lacks_are_errors_not_crashes() {
    for p in KernelPath::ALL {
        match Kernels::new(p) {
            Ok(k) => {
                assert!(
                    p.is_supported() && p.is_implemented(),
                    "{p} built without support"
                );
                assert_eq!(k.path(), p);
                // and it runs
                let w = Row::zeroed(GgmlType::Q4_0.type_size(), 0x88);
                let a = quantized_act(GgmlType::Q4_0, &[1.0; 32]);
                assert_eq!(
                    k.row_dot(GgmlType::Q4_0).expect("kernel")(w.bytes(), a.bytes()),
                    0.0
                );
            }
            Err(KernelError::Unsupported(q, features)) => {
                assert_eq!(q, p);
                assert!(
                    !p.is_supported(),
                    "{p} is supported but new() said otherwise"
                );
                assert!(features == edgellm_runtime::kernels::cpu_features().join(" "));
            }
            Err(KernelError::NotImplemented(q)) => {
                assert_eq!(q, p);
                assert!(p.is_supported() && !p.is_implemented());
            }
            Err(e) => panic!("{p}: unexpected error {e}"),
        }
    }
    // each architecture builds its own paths and never the other's
    let x86 = cfg!(target_arch = "x86_64");
    let arm = cfg!(target_arch = "aarch64");
    assert_eq!(KernelPath::Avx2.is_implemented(), x86);
    assert_eq!(KernelPath::Avx512.is_implemented(), x86);
    assert_eq!(KernelPath::Neon.is_implemented(), arm);
    assert_eq!(KernelPath::NeonDotprod.is_implemented(), arm);
    if !x86 {
        assert!(matches!(
            Kernels::new(KernelPath::Avx2),
            Err(KernelError::Unsupported(..))
        ));
    }
    if !arm {
        assert!(matches!(
            Kernels::new(KernelPath::Neon),
            Err(KernelError::Unsupported(..))
        ));
        assert!(matches!(
            Kernels::new(KernelPath::NeonDotprod),
            Err(KernelError::Unsupported(..))
        ));
    }
}

#[test]
fn best_path_prefers_the_widest_supported() {
    let best = KernelPath::best();
    let order = [
        KernelPath::Avx512,
        KernelPath::Avx2,
        KernelPath::NeonDotprod,
        KernelPath::Neon,
        KernelPath::Scalar,
    ];
    let expected = order
        .into_iter()
        .find(|p| p.is_supported() && p.is_implemented())
        .expect("scalar is always there");
    assert_eq!(best, expected);
    assert_eq!(Kernels::detect().path(), best);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        assert_ne!(best, KernelPath::Scalar, "an AVX2 CPU must not run scalar");
    }
    #[cfg(target_arch = "aarch64")]
    assert_ne!(best, KernelPath::Scalar, "every aarch64 CPU has NEON");
}

#[test]
fn edgellm_kernels_setting_is_parsed() {
    for p in KernelPath::ALL {
        assert_eq!(KernelPath::from_name(p.name()).expect("own name"), p);
        assert_eq!(
            KernelPath::from_name(&format!("  {}\n", p.name().to_uppercase()))
                .expect("case, spaces"),
            p
        );
    }
    assert!(
        matches!(KernelPath::from_name("avx3"), Err(KernelError::UnknownPath(s)) if s == "avx3")
    );
    assert!(matches!(
        KernelPath::from_name(""),
        Err(KernelError::UnknownPath(_))
    ));

    assert_eq!(
        Kernels::from_setting(None).expect("best").path(),
        KernelPath::best()
    );
    assert_eq!(
        Kernels::from_setting(Some("  ")).expect("blank").path(),
        KernelPath::best()
    );
    assert_eq!(
        Kernels::from_setting(Some("scalar"))
            .expect("scalar")
            .path(),
        KernelPath::Scalar
    );
    let e = Kernels::from_setting(Some("sse9")).expect_err("unknown");
    assert!(
        matches!(&e, KernelError::Env(inner) if matches!(**inner, KernelError::UnknownPath(_)))
    );
    assert!(
        e.to_string()
            .starts_with("EDGELLM_KERNELS: unknown kernel path 'sse9'"),
        "{e}"
    );
    for p in KernelPath::ALL {
        let r = Kernels::from_setting(Some(p.name()));
        if p.is_supported() && p.is_implemented() {
            assert_eq!(r.expect("supported").path(), p);
        } else {
            let e = r.expect_err("unsupported");
            assert!(matches!(e, KernelError::Env(_)), "{p}: {e}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Micro-benchmark: `cargo test --release -p edgellm-runtime --test kernels_vs_scalar bench --
// --ignored --nocapture` (the test profile keeps debug assertions, whose checks on every
// `core::arch` load roughly double the time of the int dots).

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn bench_row_dots() {
    use std::hint::black_box;
    use std::time::Instant;

    const ROWS: usize = 512;
    // the fastest of several trials: the machine is shared, and interference only adds time
    const TRIALS: usize = 9;
    fn best_of(trials: usize, mut f: impl FnMut() -> f64) -> f64 {
        (0..trials).map(|_| f()).fold(f64::INFINITY, f64::min)
    }
    let mut rng = Stream(7);
    for cols in [576usize, 1536] {
        let x: Vec<f32> = (0..cols).map(|_| rng.unit()).collect();
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q8_0,
            GgmlType::F16,
            GgmlType::F32,
            GgmlType::BF16,
            GgmlType::Q5_0,
            GgmlType::Q4_K,
            GgmlType::Q6_K,
        ] {
            if cols % ty.block_size() != 0 {
                continue; // the K-quants take whole 256-value rows
            }
            // ROWS distinct weight rows back to back (0.2-3 MB), as a matmul streams them
            let rb = ty.row_bytes(cols as u64).expect("row") as usize;
            let mut storage = vec![0u8; rb * ROWS + 64];
            let off = storage.as_ptr().align_offset(64);
            let matrix = &mut storage[off..off + rb * ROWS];
            for row in matrix.chunks_exact_mut(rb) {
                let wf: Vec<f32> = (0..cols).map(|_| rng.unit()).collect();
                quant::quantize_row(ty, &wf, row).expect("quantize");
            }
            let matrix = &*matrix;
            let a = quantized_act(ty, &x);
            let mut line = format!("{ty:>5} x {cols:>4}:");
            for k in all_kernels() {
                let dot = k.row_dot(ty).expect("kernel");
                let ns = best_of(TRIALS, || {
                    let reps = 100;
                    let start = Instant::now();
                    let mut sink = 0.0f32;
                    for _ in 0..reps {
                        for r in matrix.chunks_exact(rb) {
                            sink += dot(black_box(r), black_box(a.bytes()));
                        }
                    }
                    black_box(sink);
                    start.elapsed().as_nanos() as f64 / (reps * ROWS) as f64
                });
                line += &format!("  {} {ns:7.1} ns", k.path());
                // the two-row dot, per row, pairing rows as the matmul does (i with ROWS/2 + i)
                if let Some(dot2) = k.row_dot2(ty) {
                    let (first, second) = matrix.split_at(rb * ROWS / 2);
                    let ns = best_of(TRIALS, || {
                        let reps = 100;
                        let start = Instant::now();
                        let mut sink = 0.0f32;
                        for _ in 0..reps {
                            for (r0, r1) in first.chunks_exact(rb).zip(second.chunks_exact(rb)) {
                                let [v0, v1] =
                                    dot2(black_box(r0), black_box(r1), black_box(a.bytes()));
                                sink += v0 + v1;
                            }
                        }
                        black_box(sink);
                        start.elapsed().as_nanos() as f64 / (reps * ROWS) as f64
                    });
                    line += &format!(" (x2 {ns:7.1} ns)");
                }
            }
            eprintln!("{line}");
        }
        // the activation quantizers, per row
        for act in [GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8_K] {
            if cols % act.block_size() != 0 {
                continue;
            }
            let mut line = format!("quantize {act} x {cols:>4}:");
            let mut dst = Row::zeroed(act.row_bytes(cols as u64).expect("row") as usize, 0);
            for k in all_kernels() {
                let ns = best_of(TRIALS, || {
                    let reps = 5_000;
                    let start = Instant::now();
                    for _ in 0..reps {
                        k.quantize_act(act, black_box(&x), dst.bytes_mut());
                        black_box(dst.bytes());
                    }
                    start.elapsed().as_nanos() as f64 / reps as f64
                });
                line += &format!("  {} {ns:7.1} ns", k.path());
            }
            eprintln!("{line}");
        }
    }
}
