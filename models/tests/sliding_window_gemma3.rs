//! Gemma-3's sliding-window cache: its 15 local layers hold a sliding buffer of about
//! `window + batch` positions instead of the whole context, and nothing a forward pass computes
//! may change. Every check compares a sliding state with a `swa_full` one (every layer holds the
//! whole context, llama.cpp's `--swa-full`) bit for bit: the prompt (with a slide mid-prompt),
//! greedy decoding (with a slide mid-decode), prefix reuse (a usable prefix and one the buffer
//! slid past) and context shifts (with and without the cap the window imposes).

mod common;

use edgellm_models::{LogitsWanted, Model, State, StateOptions};

const N_CTX: usize = 2048;
const N_BATCH: usize = 64;
/// Gemma-3-270M: 18 layers (every 6th global), window 512, one KV head of 256.
const WINDOW: usize = 512;
const KV_ROW_BYTES: usize = 2 * 256 * 2;
/// A local layer's slots: window - 1 + 64 kept on a slide, a batch, max(window, 256) margin.
const SLOTS: usize = WINDOW - 1 + 64 + N_BATCH + WINDOW;
/// Positions evaluated as the prompt: one slide mid-prompt (the batch at 1088 would run past
/// slot 1151), and the buffer ends 4 positions short of its last slot, so decoding slides too.
const PROMPT: usize = 1660;

fn options(swa_full: bool) -> StateOptions {
    StateOptions {
        n_ctx: N_CTX,
        n_batch: N_BATCH,
        swa_full,
        ..Default::default()
    }
}

fn gpl3_tokens(model: &Model) -> Vec<u32> {
    let text = std::fs::read_to_string(common::GPL3).expect("GPL-3 text (Debian base-files)");
    model.tokenizer.encode(&text, true, false).unwrap()
}

fn assert_same_logits(a: &State, b: &State, what: &str) {
    let same = a
        .logits()
        .iter()
        .zip(b.logits())
        .all(|(x, y)| x.to_bits() == y.to_bits());
    assert!(
        same,
        "{what}: logits differ between sliding and full caches"
    );
}

/// Evaluates `tokens` in both states, a `N_BATCH` batch per forward call, comparing the logits
/// after every call.
fn eval_both(model: &Model, s: &mut State, f: &mut State, tokens: &[u32], what: &str) {
    for (i, chunk) in tokens.chunks(N_BATCH).enumerate() {
        model.forward(s, chunk, LogitsWanted::Last).unwrap();
        model.forward(f, chunk, LogitsWanted::Last).unwrap();
        assert_same_logits(s, f, &format!("{what}, batch {i}"));
    }
}

/// `n` greedy steps in both states (the sliding state's argmax feeds both), comparing logits.
fn decode_both(model: &Model, s: &mut State, f: &mut State, n: usize, what: &str) {
    for step in 0..n {
        let id = argmax(s.logits());
        model.forward(s, &[id], LogitsWanted::Last).unwrap();
        model.forward(f, &[id], LogitsWanted::Last).unwrap();
        assert_same_logits(s, f, &format!("{what}, decode step {step}"));
    }
}

fn argmax(l: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in l.iter().enumerate() {
        if *v > l[best] {
            best = i;
        }
    }
    best as u32
}

/// A new state holding `src`'s positions (as beam search copies them).
fn copy_of(model: &Model, src: &State, swa_full: bool) -> State {
    let mut s = model.new_state(options(swa_full)).unwrap();
    s.copy_prefix_from(src, src.n_past());
    s
}

/// `edgellm plan` before the download (the card) says what the file will allocate.
#[test]
fn the_card_plans_the_cache_the_file_gets() {
    let model = common::load(&common::gemma3_model_path());
    let card = edgellm_models::cards::find("gemma3-270m:q4_k_m").unwrap();
    for (n_ctx, n_batch, swa_full) in [(4096, 64, false), (32768, 512, false), (32768, 64, true)] {
        let opts = StateOptions {
            n_ctx,
            n_batch,
            swa_full,
            ..Default::default()
        };
        let file = edgellm_models::StateLayout::new(&model.hparams, &model.weights, &opts).unwrap();
        let planned = card.shape.state_layout(&opts).unwrap();
        assert_eq!(planned.kv_shape, file.kv_shape);
        assert_eq!(planned.kv_bytes, file.kv_bytes);
    }
}

#[test]
#[cfg_attr(
    any(target_arch = "aarch64", target_arch = "arm"),
    ignore = "minutes under QEMU; the cache bookkeeping is arch-independent"
)]
fn sliding_cache_computes_what_the_full_cache_computes() {
    let model = common::load(&common::gemma3_model_path());
    let tokens = gpl3_tokens(&model);
    let mut s = model.new_state(options(false)).unwrap();
    let mut f = model.new_state(options(true)).unwrap();

    // Memory: 15 local layers of SLOTS positions and 3 global ones of N_CTX.
    let kv = s.kv_cache().shape();
    assert_eq!((kv.n_local(), kv.local_slots), (15, SLOTS));
    assert_eq!(
        s.kv_cache().bytes(),
        (15 * SLOTS + 3 * N_CTX) * KV_ROW_BYTES
    );
    assert_eq!(f.kv_cache().bytes(), 18 * N_CTX * KV_ROW_BYTES);
    assert_eq!(s.layout().kv_bytes, s.kv_cache().bytes());
    eprintln!(
        "KV cache at {N_CTX}: sliding {:.1} MiB, full {:.1} MiB",
        s.kv_cache().bytes() as f64 / 1048576.0,
        f.kv_cache().bytes() as f64 / 1048576.0
    );

    // The prompt: one slide, mid-prompt (the batch at 1088 keeps 1088 - 575 = 513 on).
    eval_both(&model, &mut s, &mut f, &tokens[..PROMPT], "prompt");
    assert_eq!(s.kv_cache().slot_base(0), 513);
    assert_eq!(s.kv_cache().slot_base(5), 0, "layer 5 is global");
    assert_eq!(f.kv_cache().slot_base(0), 0);
    let (s_prompt, f_prompt) = (copy_of(&model, &s, false), copy_of(&model, &f, true));

    // Decoding: a slide at position 1664 (1664 + 1 - 513 > SLOTS) keeps 575 positions.
    decode_both(&model, &mut s, &mut f, 20, "decode");
    assert_eq!(s.kv_cache().slot_base(0), 1664 - 575);
    assert_eq!(s.n_past(), PROMPT + 20);

    // Prefix reuse, usable: the buffer (base 513) still holds the window before 1600.
    let (mut s2, mut f2) = (copy_of(&model, &s_prompt, false), f_prompt);
    assert_eq!(s2.truncate(1600), 1600);
    assert_eq!(f2.truncate(1600), 1600);
    assert_eq!(s2.n_past(), 1600);
    // The continuation crosses the next slide.
    eval_both(
        &model,
        &mut s2,
        &mut f2,
        &tokens[1600..1760],
        "after truncate(1600)",
    );
    assert_eq!(s2.kv_cache().slot_base(0), 1664 - 575);

    // Prefix reuse, unusable: the window before 1000 starts at 489 < base 513, so nothing is
    // kept, and evaluating from scratch equals a fresh evaluation.
    let mut s3 = copy_of(&model, &s_prompt, false);
    assert_eq!(s3.truncate(1000), 0);
    assert_eq!((s3.n_past(), s3.kv_cache().slot_base(0)), (0, 0));
    let mut fresh = model.new_state(options(true)).unwrap();
    eval_both(
        &model,
        &mut s3,
        &mut fresh,
        &tokens[..130],
        "after truncate(1000)",
    );

    // keep_prompt_prefix reports what it kept: a prompt that shares all but the last 10 of the
    // decoded state's positions reuses them; one that shares only 1200 reuses nothing.
    let mut prompt: Vec<u32> = s.tokens().to_vec();
    let n = prompt.len();
    prompt[n - 10] += 1;
    let mut s4 = copy_of(&model, &s, false);
    let mut f4 = copy_of(&model, &f, true);
    assert_eq!(s4.keep_prompt_prefix(&prompt), n - 10);
    assert_eq!(f4.keep_prompt_prefix(&prompt), n - 10);
    eval_both(&model, &mut s4, &mut f4, &prompt[n - 10..], "reused prefix");
    prompt[1200] += 1;
    assert_eq!(s4.keep_prompt_prefix(&prompt), 0);
    assert_eq!(f4.keep_prompt_prefix(&prompt), 1200);

    // Context shifts of the decoded state (base 1089, 1680 positions).
    for (n_keep, capped) in [
        // base <= n_keep: at most 1680 - 1089 - 511 = 80 of the 290 the shift would drop.
        (1100, Some(80)),
        // 0 < n_keep < base: at most 1680 - 1000 - 511 = 169 of 340.
        (1000, Some(169)),
        // n_keep = 0: the held range moves down with the rest (840 dropped, no cap).
        (0, None),
    ] {
        let mut s5 = copy_of(&model, &s, false);
        let mut f5 = copy_of(&model, &f, true);
        let half = (s5.n_past() - n_keep) / 2;
        let dropped = model.shift_context(&mut s5, n_keep);
        assert_eq!(dropped, capped.unwrap_or(half), "n_keep {n_keep}");
        model.discard_positions(&mut f5, n_keep, dropped);
        assert_eq!(s5.tokens(), f5.tokens());
        let mut want = s.tokens()[..n_keep].to_vec();
        want.extend_from_slice(&s.tokens()[n_keep + dropped..]);
        assert_eq!(s5.tokens(), &want[..]);
        let what = format!("after a shift keeping {n_keep}");
        eval_both(&model, &mut s5, &mut f5, &tokens[1700..1710], &what);
        decode_both(&model, &mut s5, &mut f5, 3, &what);
    }
}
