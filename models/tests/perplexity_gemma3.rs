//! Perplexity of Gemma-3-270M (Q4_K_M) on GPL-3 against llama.cpp's figures
//! (`fixtures/perplexity_gemma3.json`, made by tools/make-gemma-reference.sh): within 1%,
//! llama.cpp's method (non-overlapping chunks of `ctx`, second half scored). c=1024 runs in
//! `make test` (it also checks the sliding window); c=256 and c=512 take as long each and are
//! `#[ignore]`d for time (`cargo test -p edgellm-models --test perplexity_gemma3 -- --ignored`).

mod common;

fn check(ctx: usize) {
    let reference = common::fixture_json("perplexity_gemma3.json");
    let want = reference[format!("ppl_c{ctx}")].as_f64().unwrap();
    let chunks = reference[format!("chunks_c{ctx}")].as_u64().unwrap() as usize;
    let model = common::load(&common::gemma3_model_path());
    let (n_tokens, got) = common::gpl3_tokens_and_perplexity(&model, ctx);
    assert_eq!(
        n_tokens / ctx,
        chunks,
        "GPL-3 gives {n_tokens} tokens: {} chunks of {ctx}, llama.cpp scored {chunks}",
        n_tokens / ctx
    );
    let rel = (got - want).abs() / want;
    eprintln!(
        "gemma3 Q4_K_M c={ctx}: edgellm {got:.4}, llama.cpp {want:.4} ({:.3}%)",
        rel * 100.0
    );
    assert!(
        rel < 0.01,
        "c={ctx}: perplexity {got:.4} is not within 1% of llama.cpp's {want:.4}"
    );
}

#[test]
#[ignore = "slow: run with --ignored (c=1024 runs by default)"]
fn ppl_gemma3_q4_k_m_c256() {
    check(256);
}

#[test]
#[ignore = "slow: run with --ignored"]
fn ppl_gemma3_q4_k_m_c512() {
    check(512);
}

/// At c=1024 the scored positions 512..1023 lie beyond the 512-position sliding window, so the
/// local layers' masking is what this checks.
#[test]
#[cfg_attr(
    any(target_arch = "aarch64", target_arch = "arm"),
    ignore = "hours under QEMU"
)]
fn ppl_gemma3_q4_k_m_c1024_sliding_window() {
    check(1024);
}
