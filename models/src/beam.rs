//! `BeamSearch`: beam-search decoding. Keeps the `N` most probable continuations of a prompt
//! (by cumulative log-probability), each in its own [`State`], and ranks the results by
//! `logprob_sum / len^alpha` (the length penalty of the classic texts and of Hugging Face's
//! `length_penalty`).
//!
//! Every buffer is allocated by [`BeamSearch::new`] (one state per beam, the candidate lists)
//! or at the start of [`BeamSearch::run`] (room for `max_tokens` in the finished hypotheses);
//! a decode step allocates nothing. The prompt is evaluated once, batched, in the first beam's
//! state (after the prefix that state already holds, as [`crate::generate::Generator`] reuses
//! it); beams get their parent's history by copying the positions in use
//! ([`State::copy_prefix_from`]), never the whole context. A search may use fewer beams than
//! were allocated ([`BeamSearch::run_with_beams`]): a server allocates for the most it allows
//! and serves smaller requests from the same states.
//!
//! One step, as Hugging Face's `BeamSearchScorer` with `early_stopping=True` does it:
//! 1. every live beam proposes its `N + n_eog` most probable next tokens (ranked by raw logit,
//!    ties to the lowest id, as greedy argmax does), enough that its `N` best ordinary tokens
//!    are among them whatever the end-of-generation tokens do;
//! 2. all proposals are ranked by cumulative log-probability (ties: parent rank, then id);
//! 3. walking that ranking, an end-of-generation token ranked among the first `N` finishes its
//!    beam (it joins the finished hypotheses, which keep the `N` best scores); any other token
//!    extends a live beam, until `N` live beams are chosen;
//! 4. generation stops once `N` hypotheses have finished, or after `max_tokens` tokens (the
//!    live beams then compete with the finished ones for the `N` places).
//!
//! What it must not do: sample, apply stop strings or shift the context (those belong to
//! [`crate::generate::Generator`]).

use std::time::Instant;

use edgellm_runtime::sampler::log_softmax_in_place;

use crate::error::ModelError;
use crate::forward::LogitsWanted;
use crate::generate::StopReason;
use crate::model::Model;
use crate::state::{State, StateOptions};

/// What one beam search should do.
#[derive(Clone, Debug, PartialEq)]
pub struct BeamParams {
    /// Tokens to generate at most (each beam, end-of-generation token included).
    pub max_tokens: usize,
    /// `alpha` in `score = logprob_sum / len^alpha`: above 0 favours longer outputs, 0 ranks
    /// by the plain sum.
    pub length_penalty: f32,
    /// Treat end-of-generation tokens as ordinary tokens.
    pub ignore_eos: bool,
}

impl Default for BeamParams {
    fn default() -> Self {
        BeamParams {
            max_tokens: 256,
            length_penalty: 1.0,
            ignore_eos: false,
        }
    }
}

/// One result of a beam search.
#[derive(Clone, Debug, PartialEq)]
pub struct Beam {
    /// Generated ids (the prompt excluded; a finished beam ends with its end-of-generation id).
    pub tokens: Vec<u32>,
    /// Sum of the natural-log probabilities of `tokens`.
    pub logprob_sum: f64,
    /// `logprob_sum / tokens.len()^length_penalty`.
    pub score: f64,
    /// Ended with an end-of-generation token.
    pub finished: bool,
}

/// Figures of one beam search.
#[derive(Clone, Debug)]
pub struct BeamOutcome {
    /// At most `N` beams, best score first.
    pub beams: Vec<Beam>,
    pub stop_reason: StopReason,
    /// Decode steps run (tokens each beam generated).
    pub steps: usize,
    /// Prompt tokens the first state already held and were not evaluated again.
    pub reused_tokens: usize,
    pub prompt_ms: f64,
    /// Time of the decode steps (selection, cache copies and the beams' forward passes).
    pub gen_ms: f64,
}

impl Beam {
    /// The text of `tokens` as streaming prints it: each token's piece, control tokens (the
    /// final end-of-generation token) giving nothing, invalid UTF-8 replaced.
    pub fn text(&self, tokenizer: &edgellm_runtime::tokenizer::Tokenizer) -> String {
        let bytes: Vec<u8> = self
            .tokens
            .iter()
            .flat_map(|&t| tokenizer.piece(t))
            .copied()
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl BeamOutcome {
    /// The best beam, if any token was generated.
    pub fn best(&self) -> Option<&Beam> {
        self.beams.first()
    }

    /// Mean time of one decode step.
    pub fn ms_per_step(&self) -> f64 {
        if self.steps > 0 {
            self.gen_ms / self.steps as f64
        } else {
            0.0
        }
    }
}

/// One proposed continuation: live beam `parent` (its rank in this step) extended by `token`.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    parent: usize,
    token: u32,
    /// Cumulative log-probability including `token`.
    logprob_sum: f64,
}

/// A beam that ended with an end-of-generation token.
struct Finished {
    tokens: Vec<u32>,
    logprob_sum: f64,
    score: f64,
}

/// Beam-search decoder with every buffer sized for `n_beams` at construction.
pub struct BeamSearch {
    /// Beams allocated for.
    n_beams: usize,
    /// Beams of the search running (or last run), `<= n_beams`.
    active: usize,
    /// Proposals per live beam: `active` plus the end-of-generation ids.
    per_beam: usize,
    /// One per beam slot, `[n_beams]`; slot 0 evaluates the prompt.
    states: Vec<State>,
    /// Cumulative log-probability of the beam in each slot, `[n_beams]`.
    slot_logprob: Vec<f64>,
    /// Slots of the live beams, in rank order, `[<= n_beams]`.
    live: Vec<usize>,
    /// One beam's best `(logit, id)` pairs, descending, `[per_beam]`.
    top: Vec<(f32, u32)>,
    /// Every live beam's proposals, `[n_beams * per_beam]`.
    candidates: Vec<Candidate>,
    /// The live beams of the next step, best first, `[n_beams]`.
    chosen: Vec<Candidate>,
    /// Slot each chosen beam moves into, `[n_beams]`.
    next_slot: Vec<usize>,
    /// Whether a chosen beam already occupies the slot, `[n_beams]`.
    slot_taken: Vec<bool>,
    /// Finished hypotheses, `[n_beams]`, the first `n_finished` in use.
    finished: Vec<Finished>,
    n_finished: usize,
}

impl BeamSearch {
    /// Allocates `n_beams` states (each with its own KV cache of `opts.n_ctx` positions) and the
    /// candidate buffers. Only the first state gets `opts.n_batch` rows of scratch (it alone
    /// evaluates the prompt); the others decode one token at a time.
    pub fn new(
        model: &Model,
        opts: StateOptions,
        n_beams: usize,
    ) -> Result<BeamSearch, ModelError> {
        if n_beams == 0 {
            return Err(ModelError::Option(
                "beam search needs at least one beam".into(),
            ));
        }
        let n_vocab = model.hparams.n_vocab;
        if n_beams > n_vocab {
            return Err(ModelError::Option(format!(
                "{n_beams} beams is more than the {n_vocab} tokens of the vocabulary"
            )));
        }
        let mut states = Vec::with_capacity(n_beams);
        states.push(model.new_state(opts)?);
        for _ in 1..n_beams {
            states.push(model.new_state(StateOptions { n_batch: 1, ..opts })?);
        }
        let per_beam = (n_beams + model.tokenizer.eog_ids().len()).min(n_vocab);
        Ok(BeamSearch {
            n_beams,
            active: n_beams,
            per_beam,
            states,
            slot_logprob: vec![0.0; n_beams],
            live: Vec::with_capacity(n_beams),
            top: Vec::with_capacity(per_beam),
            candidates: Vec::with_capacity(n_beams * per_beam),
            chosen: Vec::with_capacity(n_beams),
            next_slot: vec![0; n_beams],
            slot_taken: vec![false; n_beams],
            finished: (0..n_beams)
                .map(|_| Finished {
                    tokens: Vec::new(),
                    logprob_sum: 0.0,
                    score: 0.0,
                })
                .collect(),
            n_finished: 0,
        })
    }

    pub fn n_beams(&self) -> usize {
        self.n_beams
    }

    /// Context length of every beam.
    pub fn n_ctx(&self) -> usize {
        self.states[0].n_ctx()
    }

    /// Heap bytes of the beams' states (KV caches and scratch).
    pub fn heap_bytes(&self) -> usize {
        self.states.iter().map(State::heap_bytes).sum()
    }

    /// The first beam's state: it evaluates the prompt (with `opts.n_batch` rows) and may serve
    /// ordinary generation between searches. After a search it holds the prompt and the history
    /// of whichever beam ended in it, its tokens matching its K/V entries, so a later prompt
    /// can reuse the common prefix.
    pub fn first_state(&self) -> &State {
        &self.states[0]
    }

    /// See [`BeamSearch::first_state`].
    pub fn first_state_mut(&mut self) -> &mut State {
        &mut self.states[0]
    }

    /// Empties every beam's cache (after a failed forward pass left one half-written).
    pub fn reset(&mut self) {
        for s in &mut self.states {
            s.reset();
        }
    }

    /// Runs a beam search from `prompt` with every allocated beam. `on_step(n)` is called after
    /// each decode step with the tokens generated so far; returning `false` stops (with the
    /// beams as they are).
    pub fn run(
        &mut self,
        model: &Model,
        prompt: &[u32],
        params: &BeamParams,
        on_step: &mut dyn FnMut(usize) -> bool,
    ) -> Result<BeamOutcome, ModelError> {
        self.run_with_beams(model, prompt, self.n_beams, params, on_step)
    }

    /// [`BeamSearch::run`] with `n_beams` of the allocated beams (`1..=self.n_beams()`): the
    /// same result as a `BeamSearch` allocated for `n_beams`.
    pub fn run_with_beams(
        &mut self,
        model: &Model,
        prompt: &[u32],
        n_beams: usize,
        params: &BeamParams,
        on_step: &mut dyn FnMut(usize) -> bool,
    ) -> Result<BeamOutcome, ModelError> {
        if n_beams == 0 || n_beams > self.n_beams {
            return Err(ModelError::Option(format!(
                "{n_beams} beams asked for; this search has room for 1 to {}",
                self.n_beams
            )));
        }
        if prompt.is_empty() {
            return Err(ModelError::Option("the prompt is empty".into()));
        }
        if !params.length_penalty.is_finite() {
            return Err(ModelError::Option(format!(
                "length penalty {} is not a finite number",
                params.length_penalty
            )));
        }
        let n_ctx = self.n_ctx();
        if prompt.len() > n_ctx {
            return Err(ModelError::ContextFull {
                needed: prompt.len(),
                n_ctx,
            });
        }
        // The last token chosen is never evaluated, so the context holds one token more.
        let room = n_ctx - prompt.len() + 1;
        let max_tokens = params.max_tokens.min(room);
        let limit_reason = if params.max_tokens > room {
            StopReason::ContextFull
        } else {
            StopReason::MaxTokens
        };
        self.active = n_beams;
        let n_vocab = model.hparams.n_vocab;
        self.per_beam = (n_beams + model.tokenizer.eog_ids().len()).min(n_vocab);
        // No-ops unless a reloaded model has more end-of-generation ids than the one the
        // buffers were sized for.
        self.top.clear();
        self.top.reserve(self.per_beam);
        self.candidates.clear();
        self.candidates.reserve(n_beams * self.per_beam);
        for f in &mut self.finished[..n_beams] {
            f.tokens.clear();
            f.tokens.reserve(max_tokens);
        }
        self.n_finished = 0;
        self.chosen.clear();

        let t0 = Instant::now();
        for s in &mut self.states[1..] {
            s.reset();
        }
        // Prefix reuse as the generator does it: keep what the first state shares with the
        // prompt, but evaluate at least its last two tokens (see `State::keep_prompt_prefix`).
        let first = &mut self.states[0];
        let reused_tokens = first.keep_prompt_prefix(prompt);
        model.forward(first, &prompt[reused_tokens..], LogitsWanted::Last)?;
        let prompt_ms = t0.elapsed().as_secs_f64() * 1000.0;
        self.live.clear();
        self.live.push(0);
        self.slot_logprob[0] = 0.0;

        let t1 = Instant::now();
        let mut steps = 0;
        let mut stop_reason = limit_reason;
        while steps < max_tokens {
            self.propose(params.ignore_eos);
            self.choose(model, prompt.len(), steps + 1, params);
            steps += 1;
            if self.n_finished >= self.active || self.chosen.is_empty() {
                stop_reason = StopReason::Eos;
                break;
            }
            if steps == max_tokens {
                break;
            }
            if !on_step(steps) {
                stop_reason = StopReason::Cancelled;
                break;
            }
            self.advance(model, prompt.len() + steps - 1)?;
        }
        let gen_ms = t1.elapsed().as_secs_f64() * 1000.0;

        let beams = self.results(prompt.len(), stop_reason, params.length_penalty);
        Ok(BeamOutcome {
            beams,
            stop_reason,
            steps,
            reused_tokens,
            prompt_ms,
            gen_ms,
        })
    }

    /// Fills `candidates` with every live beam's best proposals, ranked.
    fn propose(&mut self, ignore_eos: bool) {
        let per_beam = if ignore_eos {
            self.active
        } else {
            self.per_beam
        };
        self.candidates.clear();
        for (parent, &slot) in self.live.iter().enumerate() {
            let logits = self.states[slot].logits_mut();
            top_logits(logits, per_beam, &mut self.top);
            log_softmax_in_place(logits);
            let base = self.slot_logprob[slot];
            self.candidates
                .extend(self.top.iter().map(|&(_, token)| Candidate {
                    parent,
                    token,
                    logprob_sum: base + f64::from(logits[token as usize]),
                }));
        }
        // Unstable sort: no buffer to allocate, and (parent, token) makes every key distinct.
        self.candidates.sort_unstable_by(|a, b| {
            b.logprob_sum
                .total_cmp(&a.logprob_sum)
                .then(a.parent.cmp(&b.parent))
                .then(a.token.cmp(&b.token))
        });
    }

    /// Walks the ranked candidates: end-of-generation tokens ranked in the first `N` finish
    /// their beam, the best `N` others become the next live beams (`chosen`).
    fn choose(&mut self, model: &Model, prompt_len: usize, len: usize, params: &BeamParams) {
        self.chosen.clear();
        for rank in 0..self.candidates.len() {
            if self.chosen.len() == self.active {
                break;
            }
            let c = self.candidates[rank];
            if !params.ignore_eos && model.tokenizer.is_eog(c.token) {
                if rank < self.active {
                    let history = &self.states[self.live[c.parent]].tokens()[prompt_len..];
                    let score = length_penalized(c.logprob_sum, len, params.length_penalty);
                    add_finished(
                        &mut self.finished[..self.active],
                        &mut self.n_finished,
                        history,
                        c.token,
                        c.logprob_sum,
                        score,
                    );
                }
            } else {
                self.chosen.push(c);
            }
        }
    }

    /// Moves each chosen beam into a slot and evaluates its new token. A beam's first child
    /// keeps the parent's slot; further children take slots nobody keeps and copy the parent's
    /// `n_past` positions first. All copies happen before any forward pass, so no parent is
    /// overwritten while a child still needs it.
    fn advance(&mut self, model: &Model, n_past: usize) -> Result<(), ModelError> {
        self.slot_taken.fill(false);
        for (j, c) in self.chosen.iter().enumerate() {
            let parent = self.live[c.parent];
            if self.slot_taken[parent] {
                self.next_slot[j] = usize::MAX;
            } else {
                self.slot_taken[parent] = true;
                self.next_slot[j] = parent;
            }
        }
        let mut free = 0;
        for (j, c) in self.chosen.iter().enumerate() {
            if self.next_slot[j] != usize::MAX {
                continue;
            }
            while self.slot_taken[free] {
                free += 1;
            }
            self.slot_taken[free] = true;
            self.next_slot[j] = free;
            let (dst, src) = dst_and_src(&mut self.states, free, self.live[c.parent]);
            dst.copy_prefix_from(src, n_past);
        }
        self.live.clear();
        for (j, c) in self.chosen.iter().enumerate() {
            let slot = self.next_slot[j];
            self.slot_logprob[slot] = c.logprob_sum;
            model.forward(&mut self.states[slot], &[c.token], LogitsWanted::Last)?;
            self.live.push(slot);
        }
        Ok(())
    }

    /// The finished hypotheses, joined by the live beams when the search ran out of tokens (or
    /// was stopped), best `N` by score.
    fn results(&mut self, prompt_len: usize, stop: StopReason, alpha: f32) -> Vec<Beam> {
        let mut beams: Vec<Beam> = self.finished[..self.n_finished]
            .iter()
            .map(|f| Beam {
                tokens: f.tokens.clone(),
                logprob_sum: f.logprob_sum,
                score: f.score,
                finished: true,
            })
            .collect();
        if stop != StopReason::Eos {
            for c in &self.chosen {
                let mut tokens = self.states[self.live[c.parent]].tokens()[prompt_len..].to_vec();
                tokens.push(c.token);
                let score = length_penalized(c.logprob_sum, tokens.len(), alpha);
                beams.push(Beam {
                    tokens,
                    logprob_sum: c.logprob_sum,
                    score,
                    finished: false,
                });
            }
        }
        // Stable: among equal scores the finished beam, then the better-ranked live one, wins.
        beams.sort_by(|a, b| b.score.total_cmp(&a.score));
        beams.truncate(self.active);
        beams
    }
}

/// `logprob_sum / len^alpha`.
pub fn length_penalized(logprob_sum: f64, len: usize, alpha: f32) -> f64 {
    logprob_sum / (len as f64).powf(f64::from(alpha))
}

/// The `k` largest logits of `logits` as `(logit, id)`, descending, ties to the lower id; NaN
/// counts as `-inf`. `top` must have room for `k` (it is never grown past that).
fn top_logits(logits: &[f32], k: usize, top: &mut Vec<(f32, u32)>) {
    top.clear();
    for (id, &l) in logits.iter().enumerate() {
        let l = if l.is_nan() { f32::NEG_INFINITY } else { l };
        if top.len() == k {
            if l <= top[k - 1].0 {
                continue;
            }
            top.pop();
        }
        let at = top.partition_point(|&(v, _)| v >= l);
        top.insert(at, (l, id as u32));
    }
}

/// Hugging Face's `BeamHypotheses.add`: keep the best `finished.len()` scores, replacing the
/// worst one when full and the new score beats it.
fn add_finished(
    finished: &mut [Finished],
    n_finished: &mut usize,
    history: &[u32],
    token: u32,
    logprob_sum: f64,
    score: f64,
) {
    let at = if *n_finished < finished.len() {
        *n_finished += 1;
        *n_finished - 1
    } else {
        let (worst, w) = finished
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.score.total_cmp(&b.1.score))
            .expect("at least one beam");
        if score <= w.score {
            return;
        }
        worst
    };
    let f = &mut finished[at];
    f.tokens.clear();
    f.tokens.extend_from_slice(history);
    f.tokens.push(token);
    f.logprob_sum = logprob_sum;
    f.score = score;
}

/// `(&mut states[dst], &states[src])` for `dst != src`.
fn dst_and_src(states: &mut [State], dst: usize, src: usize) -> (&mut State, &State) {
    debug_assert_ne!(dst, src);
    if dst < src {
        let (a, b) = states.split_at_mut(src);
        (&mut a[dst], &b[0])
    } else {
        let (a, b) = states.split_at_mut(dst);
        (&mut b[0], &a[src])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_logits_keeps_the_largest_with_ties_to_the_lower_id() {
        let mut top = Vec::with_capacity(3);
        top_logits(&[1.0, 5.0, f32::NAN, 5.0, -2.0, 7.0, 1.0], 3, &mut top);
        assert_eq!(top, vec![(7.0, 5), (5.0, 1), (5.0, 3)]);
        assert_eq!(top.capacity(), 3);
    }

    #[test]
    fn finished_hypotheses_keep_the_best_scores() {
        let mut f: Vec<Finished> = (0..2)
            .map(|_| Finished {
                tokens: Vec::with_capacity(4),
                logprob_sum: 0.0,
                score: 0.0,
            })
            .collect();
        let mut n = 0;
        add_finished(&mut f, &mut n, &[1], 9, -3.0, -1.5);
        add_finished(&mut f, &mut n, &[2], 9, -1.0, -0.5);
        // Worse than both: dropped.
        add_finished(&mut f, &mut n, &[3], 9, -4.0, -2.0);
        // Better than the worst (-1.5): replaces it.
        add_finished(&mut f, &mut n, &[4], 9, -2.0, -1.0);
        assert_eq!(n, 2);
        let mut kept: Vec<(Vec<u32>, f64)> =
            f.iter().map(|h| (h.tokens.clone(), h.score)).collect();
        kept.sort_by(|a, b| b.1.total_cmp(&a.1));
        assert_eq!(kept, vec![(vec![2, 9], -0.5), (vec![4, 9], -1.0)]);
    }

    #[test]
    fn length_penalty_divides_by_a_power_of_the_length() {
        assert_eq!(length_penalized(-6.0, 4, 1.0), -1.5);
        assert_eq!(length_penalized(-6.0, 4, 0.0), -6.0);
        assert_eq!(length_penalized(-6.0, 4, 0.5), -3.0);
    }
}
