//! Perplexity on GPL-3 against llama.cpp's figures (`shared/reference/perplexity_smollm2.json`):
//! within 1%, llama.cpp's method (non-overlapping chunks of `ctx`, second half scored).
//! Q4_1 at c=256 runs in `make test`; the other formats and c=512 are `#[ignore]`d for time
//! (`cargo test -p edgellm-models --test perplexity_smollm2 -- --ignored`).

mod common;

use edgellm_runtime::GgmlType;

fn edgellm_ppl(ty: GgmlType, ctx: usize) -> f64 {
    common::gpl3_perplexity(&common::load(&common::derived_model(ty)), ctx)
}

fn check(ty: GgmlType, ctx: usize) {
    let reference = common::reference_json("perplexity_smollm2.json");
    let want = reference["files"][ty.name()][format!("ppl_c{ctx}")]
        .as_f64()
        .unwrap();
    let got = edgellm_ppl(ty, ctx);
    let rel = (got - want).abs() / want;
    eprintln!(
        "{ty} c={ctx}: edgellm {got:.4}, llama.cpp {want:.4} ({:.3}%)",
        rel * 100.0
    );
    assert!(
        rel < 0.01,
        "{ty} c={ctx}: perplexity {got:.4} is not within 1% of llama.cpp's {want:.4}"
    );
}

#[test]
#[cfg_attr(target_arch = "aarch64", ignore = "hours under QEMU")]
fn ppl_q4_1_c256() {
    check(GgmlType::Q4_1, 256);
}

#[test]
#[ignore = "slow: run with --ignored"]
fn ppl_q4_1_c512() {
    check(GgmlType::Q4_1, 512);
}

#[test]
#[ignore = "slow: run with --ignored"]
fn ppl_q8_0() {
    check(GgmlType::Q8_0, 256);
    check(GgmlType::Q8_0, 512);
}

#[test]
#[ignore = "slow: run with --ignored"]
fn ppl_q4_0() {
    check(GgmlType::Q4_0, 256);
    check(GgmlType::Q4_0, 512);
}

#[test]
#[ignore = "slow: run with --ignored"]
fn ppl_f16() {
    check(GgmlType::F16, 256);
    check(GgmlType::F16, 512);
}

#[test]
#[ignore = "slow: run with --ignored"]
fn ppl_f32() {
    check(GgmlType::F32, 256);
    check(GgmlType::F32, 512);
}
