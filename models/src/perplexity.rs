//! Perplexity by llama.cpp's method: the tokens are cut into non-overlapping chunks of the
//! state's context, each evaluated from an empty cache as one batch; only the second half of
//! each chunk is scored, so every scored token has at least `ctx/2` tokens of context.

use crate::error::ModelError;
use crate::forward::LogitsWanted;
use crate::model::Model;
use crate::state::State;

/// Running totals of negative log-likelihoods.
#[derive(Clone, Debug, Default)]
pub struct NllSum {
    pub sum: f64,
    pub sum_sq: f64,
    pub count: usize,
}

impl NllSum {
    /// Adds `-log p(target)` under `logits`.
    pub fn add(&mut self, logits: &[f32], target: u32) {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let z: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
        let nll = -(logits[target as usize] as f64 - max - z.ln());
        self.sum += nll;
        self.sum_sq += nll * nll;
        self.count += 1;
    }

    /// Perplexity and llama.cpp's ± estimate.
    pub fn ppl(&self) -> (f64, f64) {
        let n = self.count.max(1) as f64;
        let mean = self.sum / n;
        let ppl = mean.exp();
        let var = self.sum_sq / n - mean * mean;
        let pm = if var > 0.0 && self.count > 1 {
            (var / (n - 1.0)).sqrt() * ppl
        } else {
            0.0
        };
        (ppl, pm)
    }
}

/// Scores `tokens` chunk by chunk with `state` (created with `all_logits` and a batch of its
/// whole context). `bos`, when given, replaces each chunk's first token, as llama.cpp does for
/// models that add one. `on_chunk(done, total, &totals)` reports progress.
pub fn perplexity(
    model: &Model,
    state: &mut State,
    tokens: &[u32],
    bos: Option<u32>,
    on_chunk: &mut dyn FnMut(usize, usize, &NllSum),
) -> Result<NllSum, ModelError> {
    let n_ctx = state.n_ctx();
    let n_chunks = tokens.len() / n_ctx;
    let first = n_ctx / 2;
    let mut nll = NllSum::default();
    let mut chunk = vec![0u32; n_ctx];
    for c in 0..n_chunks {
        let targets = &tokens[c * n_ctx..(c + 1) * n_ctx];
        chunk.copy_from_slice(targets);
        if let Some(b) = bos {
            chunk[0] = b;
        }
        state.reset();
        model.forward(
            state,
            &chunk,
            LogitsWanted::All(&mut |i, logits| {
                if i >= first && i + 1 < n_ctx {
                    nll.add(logits, targets[i + 1]);
                }
            }),
        )?;
        on_chunk(c + 1, n_chunks, &nll);
    }
    Ok(nll)
}
