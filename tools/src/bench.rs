//! `edgellm bench`: llama-bench's two measurements on one model. Prompt processing: a prompt of
//! `-p` tokens evaluated as one batch from an empty cache. Generation: `-n` tokens decoded one at
//! a time from an empty cache. Each repeated `-r` times and reported as mean ± stddev, with
//! load time, peak RSS, heap allocations per generated token, the kernel path and CPU features.

use std::time::Instant;

use anyhow::{bail, Result};
use edgellm_models::{LogitsWanted, StateOptions};
use edgellm_runtime::alloc_count::allocations;
use edgellm_runtime::kernels::cpu_features;
use serde_json::json;

use crate::cli_model::ModelArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub opts: ModelArgs,
    /// Prompt tokens per prompt-processing run.
    #[arg(short = 'p', long = "n-prompt", default_value_t = 128)]
    pub n_prompt: usize,
    /// Tokens per generation run.
    #[arg(short = 'n', long = "n-gen", default_value_t = 64)]
    pub n_gen: usize,
    /// Repetitions of each measurement.
    #[arg(short = 'r', long = "reps", default_value_t = 5)]
    pub reps: usize,
    /// One JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Mean and sample standard deviation.
fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// Peak resident set size of this process (`VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub fn main(mut args: Args) -> Result<()> {
    if args.reps == 0 || args.n_prompt == 0 || args.n_gen == 0 {
        bail!("-p, -n and -r must be at least 1");
    }
    args.opts.batch = args.n_prompt;
    if args.opts.ctx.is_none() {
        args.opts.ctx = Some(
            (args.n_prompt.max(args.n_gen + 1))
                .next_power_of_two()
                .max(256),
        );
    }
    let (model, board) = args.opts.load()?;
    let mut sopts: StateOptions = args.opts.state_options(&model, board.as_ref(), false)?;
    sopts.n_batch = args.n_prompt;
    if sopts.n_ctx < args.n_prompt.max(args.n_gen + 1) {
        bail!("--ctx {} is smaller than the benchmark needs", sopts.n_ctx);
    }
    let mut state = model.new_state(sopts)?;
    let n_vocab = model.hparams.n_vocab as u64;
    // A fixed pseudo-random prompt (llama-bench uses random tokens too).
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let prompt: Vec<u32> = (0..args.n_prompt)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n_vocab) as u32
        })
        .collect();

    // Warm-up: touches every weight page and every buffer once.
    model.forward(&mut state, &prompt[..1], LogitsWanted::Last)?;

    let mut pp = Vec::with_capacity(args.reps);
    let mut tg = Vec::with_capacity(args.reps);
    let mut allocs = 0u64;
    let mut gen_tokens = 0u64;
    for _ in 0..args.reps {
        state.reset();
        let t = Instant::now();
        model.forward(&mut state, &prompt, LogitsWanted::Last)?;
        pp.push(args.n_prompt as f64 / t.elapsed().as_secs_f64());

        state.reset();
        let mut tok = prompt[0];
        let a0 = allocations();
        let t = Instant::now();
        for _ in 0..args.n_gen {
            model.forward(&mut state, std::slice::from_ref(&tok), LogitsWanted::Last)?;
            tok = edgellm_runtime::ops::argmax(state.logits()) as u32;
        }
        tg.push(args.n_gen as f64 / t.elapsed().as_secs_f64());
        allocs += allocations() - a0;
        gen_tokens += args.n_gen as u64;
    }
    let (pp_m, pp_s) = mean_std(&pp);
    let (tg_m, tg_s) = mean_std(&tg);
    let allocs_per_token = allocs as f64 / gen_tokens as f64;
    let rss = peak_rss_bytes();
    let features = cpu_features();
    if args.json {
        let out = json!({
            "model": model.path().display().to_string(),
            "model_bytes": model.mapped_bytes(),
            "n_prompt": args.n_prompt,
            "n_gen": args.n_gen,
            "reps": args.reps,
            "pp_tokens_per_s": [pp_m, pp_s],
            "tg_tokens_per_s": [tg_m, tg_s],
            "load_ms": model.load_ms,
            "peak_rss_bytes": rss,
            "allocs_per_token": allocs_per_token,
            "kernels": model.kernels().path().name(),
            "threads": model.n_threads(),
            "cpu_features": features,
        });
        println!("{out}");
    } else {
        println!(
            "model:     {} ({:.1} MiB)",
            model.name,
            model.mapped_bytes() as f64 / 1048576.0
        );
        println!(
            "kernels:   {}   threads: {}   cpu: {}",
            model.kernels().path(),
            model.n_threads(),
            features.join(" ")
        );
        println!("load:      {:.1} ms", model.load_ms);
        println!("pp{:<6} {pp_m:>9.1} ± {pp_s:.1} tok/s", args.n_prompt);
        println!("tg{:<6} {tg_m:>9.1} ± {tg_s:.1} tok/s", args.n_gen);
        if let Some(r) = rss {
            println!("peak RSS:  {:.1} MiB", r as f64 / 1048576.0);
        }
        println!("allocations per generated token: {allocs_per_token}");
    }
    Ok(())
}
