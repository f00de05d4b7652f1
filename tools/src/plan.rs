//! `edgellm plan`: the memory a model will take at a context length, computed by the same
//! `StateLayout` the runtime allocates from, and whether it fits a board's budget.

use anyhow::Result;
use edgellm_models::StateLayout;
use serde_json::json;

use crate::cli_model::ModelArgs;

#[derive(clap::Args)]
pub struct Args {
    /// GGUF model file (or `-m`).
    #[arg(value_name = "MODEL")]
    pub model_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub opts: ModelArgs,
    /// One JSON object: weights_bytes, kv_bytes, scratch_bytes, total_bytes, budget_bytes, fits.
    #[arg(long)]
    pub json: bool,
}

/// Memory the OS reports available (`MemAvailable`), for plans without a board.
fn host_available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / 1048576.0)
}

pub fn main(mut args: Args) -> Result<()> {
    if args.model_file.is_some() {
        args.opts.model = args.model_file.clone();
    }
    let (model, board) = args.opts.load()?;
    let sopts = args.opts.state_options(&model, board.as_ref(), false)?;
    let layout = StateLayout::new(&model.hparams, &model.weights, &sopts)?;
    let weights = model.mapped_bytes() as u64;
    let kv = layout.kv_bytes as u64;
    let vocab = model.tokenizer.heap_bytes() as u64;
    let scratch = layout.scratch_bytes() as u64 + vocab;
    let total = weights + kv + scratch;
    let (budget, budget_source) = match &board {
        Some(b) => (Some(b.memory.budget_bytes), format!("board {}", b.name)),
        None => (
            host_available_bytes(),
            "this machine's available memory".to_string(),
        ),
    };
    let fits = budget.map(|b| total <= b);
    let reason = match (fits, budget) {
        (Some(false), Some(b)) => {
            let over = total - b;
            let kv_per_tok = kv / sopts.n_ctx.max(1) as u64;
            let ctx_fit = if weights + scratch < b && kv_per_tok > 0 {
                (b - weights - scratch) / kv_per_tok
            } else {
                0
            };
            Some(format!(
                "needs {} but the budget of {budget_source} is {} ({} over); weights alone are {}{}",
                mib(total),
                mib(b),
                mib(over),
                mib(weights),
                if ctx_fit > 0 { format!("; a context of at most {ctx_fit} tokens would fit") } else { String::new() }
            ))
        }
        _ => None,
    };
    if args.json {
        let out = json!({
            "model": model.path().display().to_string(),
            "n_ctx": sopts.n_ctx,
            "n_batch": sopts.n_batch,
            "kv_type": sopts.kv_type.name(),
            "threads": model.n_threads(),
            "weights_bytes": weights,
            "kv_bytes": kv,
            "scratch_bytes": scratch,
            "vocab_bytes": vocab,
            "total_bytes": total,
            "budget_bytes": budget,
            "budget_source": budget_source,
            "fits": fits,
            "reason": reason,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("model:       {} ({})", model.name, model.path().display());
    println!(
        "context:     {} tokens, KV {} , batch {}, {} threads",
        sopts.n_ctx,
        sopts.kv_type.name(),
        sopts.n_batch,
        model.n_threads()
    );
    println!(
        "weights:     {:>12} bytes  {:>10}  (memory-mapped, shared with the page cache)",
        weights,
        mib(weights)
    );
    println!("kv cache:    {:>12} bytes  {:>10}", kv, mib(kv));
    println!(
        "scratch:     {:>12} bytes  {:>10}  (activations, logits, vocab tables {})",
        scratch,
        mib(scratch),
        mib(vocab)
    );
    println!("total:       {:>12} bytes  {:>10}", total, mib(total));
    match (budget, fits) {
        (Some(b), Some(true)) => println!(
            "budget:      {:>12} bytes  {:>10}  ({budget_source}): fits",
            b,
            mib(b)
        ),
        (Some(b), _) => {
            println!(
                "budget:      {:>12} bytes  {:>10}  ({budget_source}): DOES NOT FIT",
                b,
                mib(b)
            );
            if let Some(r) = reason {
                println!("reason:      {r}");
            }
        }
        (None, _) => println!("budget:      unknown (no board given and /proc/meminfo unreadable)"),
    }
    Ok(())
}
