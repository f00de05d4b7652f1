//! `edgellm perplexity`: llama.cpp's method. The text is cut into non-overlapping chunks of
//! `ctx` tokens, each evaluated from an empty cache; only the second half of each chunk is
//! scored (every scored token has at least `ctx/2` tokens of context).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use edgellm_models::perplexity::perplexity;
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
    let bos = if tok.add_bos() { tok.bos() } else { None };
    let pb = progress::bar(n_chunks as u64, "perplexity");
    let t0 = std::time::Instant::now();
    let json = args.json;
    let nll = perplexity(
        &model,
        &mut state,
        &tokens,
        bos,
        &mut |done, _total, nll| {
            pb.inc(1);
            if !json {
                eprint!("[{done}]{:.4} ", nll.ppl().0);
            }
        },
    )?;
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
