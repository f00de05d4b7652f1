//! Beam search on the real model: one beam is greedy decoding; four beams give the same beams
//! and scores as a naive reference that re-evaluates every candidate sequence from scratch;
//! decode steps allocate nothing.

mod common;

use edgellm_models::beam::length_penalized;
use edgellm_models::{
    BeamParams, BeamSearch, GenerateParams, Generator, LoadOptions, LogitsWanted, Model,
    StateOptions, StopReason, TokenSink,
};
use edgellm_runtime::alloc_count::{thread_allocations, CountingAllocator};
use edgellm_runtime::chat_template::ChatMessage;
use edgellm_runtime::kernels::Kernels;
use edgellm_runtime::sampler::{log_softmax_in_place, SamplerConfig};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// One thread: the tests share two cores with the rest of the suite.
fn load(kernels: Kernels) -> Model {
    let path = common::model_path();
    Model::load(
        &path,
        LoadOptions {
            n_threads: 1,
            kernels: Some(kernels),
        },
    )
    .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

fn state_options() -> StateOptions {
    StateOptions {
        n_ctx: 96,
        n_batch: 96,
        ..Default::default()
    }
}

fn chat_prompt(model: &Model, question: &str) -> Vec<u32> {
    edgellm_models::ChatFormat::for_model(model)
        .unwrap()
        .prompt_ids(
            &model.tokenizer,
            &[ChatMessage {
                role: "user".into(),
                content: question.into(),
            }],
        )
        .unwrap()
}

struct Discard;
impl TokenSink for Discard {
    fn on_text(&mut self, _text: &str) -> bool {
        true
    }
}

#[test]
fn one_beam_is_greedy() {
    let model = load(Kernels::from_env().expect("EDGELLM_KERNELS"));
    for (prompt, max_tokens) in [
        (
            model
                .tokenizer
                .encode("The three primary colours are", true, true)
                .unwrap(),
            12,
        ),
        // Ends with <|im_end|> before the limit: the end-of-generation path.
        (chat_prompt(&model, "Say just the word yes."), 12),
    ] {
        let mut state = model.new_state(state_options()).unwrap();
        let greedy = Generator::new(&model)
            .unwrap()
            .generate(
                &model,
                &mut state,
                &prompt,
                &GenerateParams {
                    max_tokens,
                    sampler: SamplerConfig::greedy(),
                    ..Default::default()
                },
                &mut Discard,
            )
            .unwrap();
        let mut beam = BeamSearch::new(&model, state_options(), 1).unwrap();
        let out = beam
            .run(
                &model,
                &prompt,
                &BeamParams {
                    max_tokens,
                    ..Default::default()
                },
                &mut |_| true,
            )
            .unwrap();
        assert_eq!(out.beams.len(), 1);
        assert_eq!(out.beams[0].tokens, greedy.generated);
        assert_eq!(Some(out.stop_reason), greedy.stop_reason);
        assert_eq!(
            out.beams[0].finished,
            greedy.stop_reason == Some(StopReason::Eos)
        );
    }
}

/// A reference beam (generated ids, logprob sum, score, finished).
type RefBeam = (Vec<u32>, f64, f64, bool);

/// Beam search the slow, obvious way: every step evaluates every live sequence from an empty
/// cache (prompt and generated tokens in one batch), takes the log-softmax of the whole
/// vocabulary and ranks all `live * n_vocab` continuations. Selection follows Hugging Face's
/// `BeamSearchScorer` with `early_stopping=True`: an end-of-generation token ranked in the
/// first `n` finishes its beam; the best `n` other continuations stay live; stop when `n` beams
/// have finished; at the token limit the live beams join the finished ones.
fn reference_beam_search(
    model: &Model,
    opts: StateOptions,
    prompt: &[u32],
    n: usize,
    max_tokens: usize,
    alpha: f32,
) -> Vec<RefBeam> {
    let mut state = model.new_state(opts).unwrap();
    let mut live: Vec<(Vec<u32>, f64)> = vec![(Vec::new(), 0.0)];
    let mut finished: Vec<RefBeam> = Vec::new();
    for len in 1..=max_tokens {
        let mut ranked: Vec<(f64, usize, u32)> = Vec::new();
        for (parent, (tokens, sum)) in live.iter().enumerate() {
            state.reset();
            let seq: Vec<u32> = prompt.iter().chain(tokens).copied().collect();
            model.forward(&mut state, &seq, LogitsWanted::Last).unwrap();
            let mut lp = state.logits().to_vec();
            log_softmax_in_place(&mut lp);
            ranked.extend(
                lp.iter()
                    .enumerate()
                    .map(|(id, &l)| (sum + f64::from(l), parent, id as u32)),
            );
        }
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut next = Vec::new();
        for (rank, &(sum, parent, id)) in ranked.iter().enumerate() {
            if next.len() == n {
                break;
            }
            let mut tokens = live[parent].0.clone();
            tokens.push(id);
            if model.tokenizer.is_eog(id) {
                if rank < n {
                    finished.push((tokens, sum, length_penalized(sum, len, alpha), true));
                    finished.sort_by(|a, b| b.2.total_cmp(&a.2));
                    finished.truncate(n);
                }
            } else {
                next.push((tokens, sum));
            }
        }
        if finished.len() >= n {
            return finished;
        }
        live = next;
    }
    for (tokens, sum) in live {
        let score = length_penalized(sum, tokens.len(), alpha);
        finished.push((tokens, sum, score, false));
    }
    finished.sort_by(|a, b| b.2.total_cmp(&a.2));
    finished.truncate(n);
    finished
}

/// Cached and from-scratch evaluation must see bit-identical logits, or a near-tie could break
/// differently and the beams part for a reason that is not a bug. On x86_64 the SIMD paths sum
/// a multi-token batch in a different (blocked GEMM) order than a single row, so both searches
/// run with one-token batches: the prompt and the reference's sequences then go through exactly
/// the arithmetic of a decode step, whatever the kernels. (The scalar kernels would make
/// batches bit-identical too, but evaluating ~30 sequences with them takes minutes.) The F16
/// cache stays: a row is rounded to f16 the same way whichever pass wrote it.
#[test]
fn four_beams_equal_a_naive_reference() {
    let model = load(Kernels::from_env().expect("EDGELLM_KERNELS"));
    let opts = StateOptions {
        n_batch: 1,
        ..state_options()
    };
    // ChatML without the default system message: a short prompt keeps the reference quick.
    let prompt = model
        .tokenizer
        .encode(
            "<|im_start|>user\nIs the sky blue? Answer yes or no.<|im_end|>\n<|im_start|>assistant\n",
            false,
            true,
        )
        .unwrap();
    let (n, max_tokens, alpha) = (4, 8, 1.0);
    let want = reference_beam_search(&model, opts, &prompt, n, max_tokens, alpha);
    let mut beam = BeamSearch::new(&model, opts, n).unwrap();
    let got = beam
        .run(
            &model,
            &prompt,
            &BeamParams {
                max_tokens,
                length_penalty: alpha,
                ignore_eos: false,
            },
            &mut |_| true,
        )
        .unwrap();
    let show = |tokens: &[u32]| model.tokenizer.decode(tokens);
    for b in &got.beams {
        eprintln!(
            "beam {:?} {:?} sum {:.4} score {:.4} finished {}",
            show(&b.tokens),
            b.tokens,
            b.logprob_sum,
            b.score,
            b.finished
        );
    }
    assert_eq!(got.beams.len(), want.len());
    for (g, w) in got.beams.iter().zip(&want) {
        assert_eq!(g.tokens, w.0, "{:?} vs {:?}", show(&g.tokens), show(&w.0));
        assert!(
            (g.logprob_sum - w.1).abs() < 1e-3,
            "{} vs {}",
            g.logprob_sum,
            w.1
        );
        assert!((g.score - w.2).abs() < 1e-3, "{} vs {}", g.score, w.2);
        assert_eq!(g.finished, w.3);
    }
    // The case must exercise both ways a beam ends, and beams that left their first parent.
    assert!(got.beams.iter().any(|b| b.finished));
    assert!(got.beams.iter().any(|b| !b.finished) || got.stop_reason == StopReason::Eos);
    let first_tokens: std::collections::BTreeSet<u32> =
        got.beams.iter().map(|b| b.tokens[0]).collect();
    assert!(
        first_tokens.len() < got.beams.len(),
        "no two beams share a parent: the cache copy is not exercised"
    );
}

/// After the first step (whose copies share the prompt), ten decode steps of four beams -
/// proposals, ranking, cache copies, forward passes, finished hypotheses - allocate nothing.
/// Counted on this thread, which runs the search: the other tests of this binary run in
/// parallel and allocate (the forward pass's worker threads are covered by no_alloc_decode.rs).
#[test]
fn beam_steps_allocate_nothing() {
    let model = load(Kernels::from_env().expect("EDGELLM_KERNELS"));
    let prompt = model
        .tokenizer
        .encode("Once upon a time, there was a little robot who", true, true)
        .unwrap();
    let mut beam = BeamSearch::new(&model, state_options(), 4).unwrap();
    let mut marks = [0u64; 16];
    let mut n_marks = 0;
    let out = beam
        .run(
            &model,
            &prompt,
            &BeamParams {
                max_tokens: 13,
                length_penalty: 1.0,
                ignore_eos: false,
            },
            &mut |_| {
                marks[n_marks] = thread_allocations();
                n_marks += 1;
                true
            },
        )
        .unwrap();
    assert_eq!(out.stop_reason, StopReason::MaxTokens);
    assert_eq!(out.steps, 13);
    // `on_step` runs after steps 1..=12; between its 1st and 12th call lie 11 full steps.
    assert_eq!(n_marks, 12);
    let during = marks[11] - marks[0];
    assert_eq!(during, 0, "{during} heap allocations in 11 beam steps");
}
