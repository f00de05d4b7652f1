//! `edgellm perplexity`: llama.cpp's method. The text is cut into non-overlapping chunks of
//! `ctx` tokens, each evaluated from an empty cache; only the second half of each chunk is
//! scored (every scored token has at least `ctx/2` tokens of context).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use edgellm_models::LogitsWanted;
use serde_json::json;

use crate::cli_model::ModelArgs;
use crate::progress;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub opts: ModelArgs,
    /// Text file to score.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Print ppl, ppl_pm, chunks, scored_tokens as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Running totals of negative log-likelihoods.
#[derive(Default)]
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

pub fn main(mut args: Args) -> Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    if args.opts.ctx.is_none() {
        args.opts.ctx = Some(512);
    }
    let (model, board) = args.opts.load()?;
    let n_ctx = args.opts.ctx(model.hparams.n_ctx_train, board.as_ref());
    // Each chunk is one batch, as llama-perplexity runs it (-b = -c).
    args.opts.batch = n_ctx;
    let mut state = args.opts.new_state(&model, board.as_ref(), true)?;
    let tok = &model.tokenizer;
    let tokens = tok.encode(&text, true, false)?;
    let n_chunks = tokens.len() / n_ctx;
    if n_chunks == 0 {
        bail!(
            "{} has {} tokens, fewer than one chunk of {n_ctx}",
            args.file.display(),
            tokens.len()
        );
    }
    let first = n_ctx / 2;
    let bos = if tok.add_bos() { tok.bos() } else { None };
    let mut nll = NllSum::default();
    let mut chunk_tokens = vec![0u32; n_ctx];
    let pb = progress::bar(n_chunks as u64, "perplexity");
    let t0 = std::time::Instant::now();
    for c in 0..n_chunks {
        chunk_tokens.copy_from_slice(&tokens[c * n_ctx..(c + 1) * n_ctx]);
        if let Some(b) = bos {
            chunk_tokens[0] = b;
        }
        state.reset();
        let targets = &tokens[c * n_ctx..(c + 1) * n_ctx];
        model.forward(
            &mut state,
            &chunk_tokens,
            LogitsWanted::All(&mut |i, logits| {
                if i >= first && i + 1 < n_ctx {
                    nll.add(logits, targets[i + 1]);
                }
            }),
        )?;
        pb.inc(1);
        if !args.json {
            let (p, _) = nll.ppl();
            eprint!("[{}]{p:.4} ", c + 1);
        }
    }
    pb.finish_and_clear();
    let (ppl, pm) = nll.ppl();
    let secs = t0.elapsed().as_secs_f64();
    if args.json {
        println!(
            "{}",
            json!({
                "ppl": ppl,
                "ppl_pm": pm,
                "chunks": n_chunks,
                "ctx": n_ctx,
                "scored_tokens": nll.count,
                "tokens": tokens.len(),
                "seconds": secs,
            })
        );
    } else {
        eprintln!();
        println!(
            "Final estimate: PPL = {ppl:.4} +/- {pm:.5}  ({n_chunks} chunks of {n_ctx}, {} tokens scored, {:.1} s, {:.0} tok/s)",
            nll.count,
            secs,
            (n_chunks * n_ctx) as f64 / secs
        );
    }
    Ok(())
}
