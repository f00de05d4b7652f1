//! `Generator`: the token loop. It reuses the cached prefix of a prompt, evaluates the rest in
//! batches (reporting progress), then samples, streams text through a [`TokenSink`] and stops on
//! an end-of-generation token, a stop string, the token limit, a full context (or shifts it)
//! or the sink's word. The sampler and text stream are allocated once; a decode step
//! allocates nothing.

use std::time::Instant;

use edgellm_runtime::sampler::{Sampler, SamplerConfig};
use edgellm_runtime::text_stream::{StreamStep, TextStream};

use crate::error::ModelError;
use crate::forward::LogitsWanted;
use crate::model::Model;
use crate::state::State;

/// Where generated text goes. Returning `false` from `on_text` stops generation
/// (a client that went away, Ctrl-C).
pub trait TokenSink {
    /// Text that is final (complete UTF-8, not part of a possible stop string).
    fn on_text(&mut self, text: &str) -> bool;
    /// A token was generated (before its text, which may be held back).
    fn on_token(&mut self, _id: u32) -> bool {
        true
    }
    /// Prompt evaluation progress: `done` of `total` new prompt tokens evaluated.
    fn on_prompt_progress(&mut self, _done: usize, _total: usize) -> bool {
        true
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced an end-of-generation token.
    Eos,
    /// `max_tokens` were generated.
    MaxTokens,
    /// A stop string appeared in the output.
    StopString,
    /// The context filled and shifting was not enabled.
    ContextFull,
    /// The sink asked to stop.
    Cancelled,
}

impl StopReason {
    /// The name used in JSON output (`stop_reason`).
    pub fn name(self) -> &'static str {
        match self {
            StopReason::Eos => "eos",
            StopReason::MaxTokens => "max_tokens",
            StopReason::StopString => "stop_string",
            StopReason::ContextFull => "context_full",
            StopReason::Cancelled => "cancelled",
        }
    }

    /// OpenAI's `finish_reason`.
    pub fn finish_reason(self) -> &'static str {
        match self {
            StopReason::Eos | StopReason::StopString | StopReason::Cancelled => "stop",
            StopReason::MaxTokens | StopReason::ContextFull => "length",
        }
    }
}

/// What one generation call should do.
#[derive(Clone, Debug)]
pub struct GenerateParams {
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    pub stop: Vec<String>,
    /// Keep going past end-of-generation tokens.
    pub ignore_eos: bool,
    /// When the context fills: `Some(n_keep)` keeps the first `n_keep` positions and drops
    /// the older half of the rest (llama.cpp's context shift); `None` stops with `ContextFull`.
    pub context_shift: Option<usize>,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_tokens: 256,
            sampler: SamplerConfig::default(),
            stop: Vec::new(),
            ignore_eos: false,
            context_shift: None,
        }
    }
}

/// Figures of one generation call.
#[derive(Clone, Debug, Default)]
pub struct GenerateOutcome {
    pub generated: Vec<u32>,
    pub stop_reason: Option<StopReason>,
    /// Prompt tokens found already in the cache and not evaluated again.
    pub reused_tokens: usize,
    /// Prompt tokens evaluated.
    pub prompt_evaluated: usize,
    pub prompt_ms: f64,
    pub gen_ms: f64,
}

impl GenerateOutcome {
    pub fn prompt_tokens_per_s(&self) -> f64 {
        per_second(self.prompt_evaluated, self.prompt_ms)
    }
    /// Decode speed over the tokens after the first (the first comes from the prompt's logits).
    pub fn gen_tokens_per_s(&self) -> f64 {
        per_second(self.generated.len().saturating_sub(1), self.gen_ms)
    }
}

fn per_second(n: usize, ms: f64) -> f64 {
    if ms > 0.0 {
        n as f64 * 1000.0 / ms
    } else {
        0.0
    }
}

/// The sampler and text stream of one conversation, allocated once.
pub struct Generator {
    pub sampler: Sampler,
    pub stream: TextStream,
}

impl Generator {
    pub fn new(model: &Model) -> Result<Generator, ModelError> {
        Ok(Generator {
            sampler: Sampler::new(SamplerConfig::default(), model.hparams.n_vocab)
                .map_err(|e| ModelError::Option(e.to_string()))?,
            stream: TextStream::new(),
        })
    }

    /// Evaluates `prompt` (reusing the longest cached prefix) and generates.
    pub fn generate(
        &mut self,
        model: &Model,
        state: &mut State,
        prompt: &[u32],
        params: &GenerateParams,
        sink: &mut dyn TokenSink,
    ) -> Result<GenerateOutcome, ModelError> {
        if prompt.is_empty() {
            return Err(ModelError::Option("the prompt is empty".into()));
        }
        if prompt.len() > state.n_ctx() {
            return Err(ModelError::ContextFull {
                needed: prompt.len(),
                n_ctx: state.n_ctx(),
            });
        }
        self.sampler
            .set_config(params.sampler.clone())
            .map_err(|e| ModelError::Option(e.to_string()))?;
        self.stream
            .set_stops(&params.stop)
            .map_err(|e| ModelError::Option(e.to_string()))?;
        self.sampler.reset();

        // Prefix reuse: keep what the cache shares with the prompt, but always evaluate at
        // least the last two prompt tokens, in a batch (see `State::keep_prompt_prefix`).
        let common = state.keep_prompt_prefix(prompt);
        for &t in prompt {
            self.sampler.accept(t);
        }
        let mut out = GenerateOutcome {
            generated: Vec::with_capacity(params.max_tokens),
            reused_tokens: common,
            ..Default::default()
        };

        let t0 = Instant::now();
        let rest = &prompt[common..];
        let step = state.options().n_batch.max(1);
        let mut done = 0;
        while done < rest.len() {
            let end = (done + step).min(rest.len());
            model.forward(state, &rest[done..end], LogitsWanted::Last)?;
            done = end;
            if !sink.on_prompt_progress(done, rest.len()) {
                out.prompt_evaluated = done;
                out.prompt_ms = t0.elapsed().as_secs_f64() * 1000.0;
                out.stop_reason = Some(StopReason::Cancelled);
                return Ok(out);
            }
        }
        out.prompt_evaluated = rest.len();
        out.prompt_ms = t0.elapsed().as_secs_f64() * 1000.0;

        let t1 = Instant::now();
        let reason = self.decode_loop(model, state, params, sink, &mut out.generated)?;
        out.gen_ms = t1.elapsed().as_secs_f64() * 1000.0;
        out.stop_reason = Some(reason);
        Ok(out)
    }

    fn decode_loop(
        &mut self,
        model: &Model,
        state: &mut State,
        params: &GenerateParams,
        sink: &mut dyn TokenSink,
        generated: &mut Vec<u32>,
    ) -> Result<StopReason, ModelError> {
        let tok = &model.tokenizer;
        let mut emit_ok = true;
        loop {
            if generated.len() >= params.max_tokens {
                self.flush(sink);
                return Ok(StopReason::MaxTokens);
            }
            let id = self.sampler.sample(state.logits());
            self.sampler.accept(id);
            generated.push(id);
            if !sink.on_token(id) {
                return Ok(StopReason::Cancelled);
            }
            if tok.is_eog(id) && !params.ignore_eos {
                self.flush(sink);
                return Ok(StopReason::Eos);
            }
            let step = self.stream.push(tok.piece(id), &mut |text: &str| {
                if emit_ok {
                    emit_ok = sink.on_text(text);
                }
            });
            if !emit_ok {
                return Ok(StopReason::Cancelled);
            }
            if step == StreamStep::Stop {
                return Ok(StopReason::StopString);
            }
            if generated.len() >= params.max_tokens {
                self.flush(sink);
                return Ok(StopReason::MaxTokens);
            }
            if state.n_past() + 1 > state.n_ctx() {
                // A shift may free nothing: when `n_keep` leaves less than a sliding window's
                // worth after it, no position can go without breaking that window.
                let freed = match params.context_shift {
                    Some(n_keep) => model.shift_context(state, n_keep),
                    None => 0,
                };
                if freed == 0 {
                    self.flush(sink);
                    return Ok(StopReason::ContextFull);
                }
            }
            model.forward(state, &[id], LogitsWanted::Last)?;
        }
    }

    fn flush(&mut self, sink: &mut dyn TokenSink) {
        let mut ok = true;
        self.stream.finish(&mut |text: &str| {
            if ok {
                ok = sink.on_text(text);
            }
        });
    }
}

impl Model {
    /// llama.cpp's context shift: keep the first `n_keep` positions, drop the older half of
    /// the rest, and move the newer half down (re-rotating its keys). With sliding-window
    /// layers that slid past `n_keep`, fewer may go: at most what leaves them the next
    /// query's window ([`crate::kv_cache::KvCache::max_discard`]). Returns how many positions
    /// were dropped.
    pub fn shift_context(&self, state: &mut State, n_keep: usize) -> usize {
        let n_past = state.n_past();
        let n_keep = n_keep.min(n_past);
        let n_discard = ((n_past - n_keep) / 2).min(state.kv.max_discard(n_keep, n_past));
        self.discard_positions(state, n_keep, n_discard);
        n_discard
    }

    /// Drops positions `[n_keep, n_keep + n_discard)` from `state` and moves the later ones
    /// down (the context shift with a chosen size).
    ///
    /// # Panics
    /// If `n_keep + n_discard > n_past` or `n_discard` is more than
    /// [`crate::kv_cache::KvCache::max_discard`] allows.
    pub fn discard_positions(&self, state: &mut State, n_keep: usize, n_discard: usize) {
        if n_discard == 0 {
            return;
        }
        let map = self.map.bytes();
        let ff = self.weights.rope_freqs.as_ref().map(|b| b.f32s(map));
        state.kv.shift(
            n_keep,
            n_discard,
            state.n_past(),
            &|il| *self.hparams.layer_rope(il),
            ff,
            self.hparams.head_dim,
        );
        state.tokens.drain(n_keep..n_keep + n_discard);
    }
}
