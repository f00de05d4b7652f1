//! The context shift (llama.cpp's): keeping the first `n_keep` positions and dropping the older
//! half of the rest moves the later entries down and re-rotates their keys. Layer 0's keys and
//! values depend only on the token and its position, so after a shift they must equal a fresh
//! evaluation of the kept tokens at their new positions. (Deeper layers legitimately differ:
//! their entries were computed while the dropped tokens were still there.)

mod common;

use edgellm_models::{
    GenerateParams, Generator, KvType, LogitsWanted, StateOptions, StopReason, TokenSink,
};
use edgellm_runtime::sampler::SamplerConfig;

struct Quiet;
impl TokenSink for Quiet {
    fn on_text(&mut self, _t: &str) -> bool {
        true
    }
}

#[test]
#[cfg_attr(
    target_arch = "aarch64",
    ignore = "slow under QEMU; the shift is arch-independent code"
)]
fn shifted_layer0_cache_matches_fresh_evaluation() {
    let model = common::load_with(&common::model_path(), common::reference_kernels());
    let text = "The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step. \
                All that glitters is not gold, and every cloud has a silver lining in the end.";
    let ids = model.tokenizer.encode(text, true, false).unwrap();
    assert!(ids.len() > 40);
    let opts = StateOptions {
        n_ctx: 64,
        kv_type: KvType::F32,
        ..Default::default()
    };
    let mut shifted = model.new_state(opts).unwrap();
    model
        .forward(&mut shifted, &ids[..40], LogitsWanted::Last)
        .unwrap();
    let n_keep = 4;
    model.shift_context(&mut shifted, n_keep);
    // (40 - 4) / 2 = 18 positions dropped: tokens 4..22.
    let kept: Vec<u32> = ids[..n_keep]
        .iter()
        .chain(&ids[n_keep + 18..40])
        .copied()
        .collect();
    assert_eq!(shifted.tokens(), &kept[..]);

    let mut fresh = model.new_state(opts).unwrap();
    model
        .forward(&mut fresh, &kept, LogitsWanted::Last)
        .unwrap();

    let a = shifted.kv_cache().layer_f32(0).unwrap();
    let b = fresh.kv_cache().layer_f32(0).unwrap();
    let n = kept.len();
    let mut max_k = 0.0f32;
    for p in 0..n {
        for c in 0..a.kv_dim {
            max_k = max_k.max((a.k[p * a.kv_dim + c] - b.k[p * b.kv_dim + c]).abs());
            assert_eq!(
                a.v_t[c * a.n_ctx + p],
                b.v_t[c * b.n_ctx + p],
                "value at position {p}, column {c}"
            );
        }
    }
    assert!(
        max_k < 1e-3,
        "re-rotated keys differ from fresh ones by {max_k}"
    );

    // And generation goes on from the shifted cache.
    model
        .forward(&mut shifted, &ids[40..41], LogitsWanted::Last)
        .unwrap();
    assert!(shifted.logits().iter().all(|l| l.is_finite()));
}

#[test]
#[cfg_attr(
    target_arch = "aarch64",
    ignore = "slow under QEMU; the shift is arch-independent code"
)]
fn generation_shifts_instead_of_stopping_when_asked() {
    let model = common::load_with(&common::model_path(), common::reference_kernels());
    let prompt = model
        .tokenizer
        .encode("Once upon a time", true, false)
        .unwrap();
    let opts = StateOptions {
        n_ctx: 32,
        ..Default::default()
    };
    let mut gen = Generator::new(&model).unwrap();
    let mut params = GenerateParams {
        max_tokens: 60,
        sampler: SamplerConfig::greedy(),
        ignore_eos: true,
        ..Default::default()
    };
    let mut state = model.new_state(opts).unwrap();
    let out = gen
        .generate(&model, &mut state, &prompt, &params, &mut Quiet)
        .unwrap();
    assert_eq!(out.stop_reason, Some(StopReason::ContextFull));
    assert_eq!(
        prompt.len() + out.generated.len(),
        33,
        "fills the 32 positions, then stops"
    );

    params.context_shift = Some(4);
    let mut state = model.new_state(opts).unwrap();
    let out = gen
        .generate(&model, &mut state, &prompt, &params, &mut Quiet)
        .unwrap();
    assert_eq!(out.stop_reason, Some(StopReason::MaxTokens));
    assert_eq!(out.generated.len(), 60);
    assert_eq!(
        &state.tokens()[..4],
        &prompt[..4],
        "the first n_keep tokens stay"
    );
}
