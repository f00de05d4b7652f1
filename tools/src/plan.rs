//! `edgellm plan`: the memory a model will take at a context length, computed by the same
//! `StateLayout` the runtime allocates from, and whether it fits a board's budget.
//!
//! The model is a GGUF file, or a model card name (the pulled file when present, else the
//! card's shape and size); with `--board` and no model, every card is planned for that board.

use std::path::{Path, PathBuf};

use anyhow::Result;
use edgellm_hal::board::BoardConfig;
use edgellm_models::cards::{self, ModelCard, CARDS};
use edgellm_models::kv_cache::{largest_context_within, KvShape};
use edgellm_models::{KvType, LoadOptions, Model, StateLayout, StateOptions};
use serde_json::json;

use crate::cli_model::ModelArgs;
use crate::pull::models_dir;

#[derive(clap::Args)]
pub struct Args {
    /// GGUF model file (or `-m`), or a model card name (see `edgellm list`). With `--board` and
    /// no model: every card, at its recommended context, on that board.
    #[arg(value_name = "MODEL")]
    pub model_file: Option<String>,
    #[command(flatten)]
    pub opts: ModelArgs,
    /// Models folder where pulled cards are looked for (default: $EDGELLM_MODELS, else
    /// ./models/gguf).
    #[arg(long)]
    pub dir: Option<PathBuf>,
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

/// Where a plan's figures come from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Basis {
    /// The GGUF file: exact.
    File,
    /// A card without its file: weights from the card's size (unknown when not pinned),
    /// scratch estimated without the tokenizer tables.
    Card,
}

/// The memory figures of one model at one context.
struct Figures {
    weights: Option<u64>,
    kv: u64,
    /// The cache's shape (to size it at other contexts).
    kv_shape: KvShape,
    /// Activations, logits and (from a file) the tokenizer tables.
    scratch: u64,
    /// Tokenizer tables, included in `scratch`; known only from a file.
    vocab: Option<u64>,
    basis: Basis,
}

impl Figures {
    fn from_model(model: &Model, sopts: &StateOptions) -> Result<Figures> {
        let layout = StateLayout::new(&model.hparams, &model.weights, sopts)?;
        let vocab = model.tokenizer.heap_bytes() as u64;
        Ok(Figures {
            weights: Some(model.mapped_bytes() as u64),
            kv: layout.kv_bytes as u64,
            kv_shape: layout.kv_shape,
            scratch: layout.scratch_bytes() as u64 + vocab,
            vocab: Some(vocab),
            basis: Basis::File,
        })
    }

    fn from_card(card: &ModelCard, sopts: &StateOptions) -> Result<Figures> {
        let layout = card.shape.state_layout(sopts)?;
        Ok(Figures {
            weights: card.size_bytes,
            kv: layout.kv_bytes as u64,
            kv_shape: layout.kv_shape,
            scratch: layout.scratch_bytes() as u64,
            vocab: None,
            basis: Basis::Card,
        })
    }

    fn total(&self) -> Option<u64> {
        self.weights.map(|w| w + self.kv + self.scratch)
    }

    /// Known when the total is, or when the KV cache and scratch alone exceed the budget.
    fn fits(&self, budget: Option<u64>) -> Option<bool> {
        let b = budget?;
        match self.total() {
            Some(t) => Some(t <= b),
            None if self.kv + self.scratch > b => Some(false),
            None => None,
        }
    }
}

/// A file path given as the model, else the card it names.
enum Target {
    File(PathBuf),
    Card(&'static ModelCard),
}

fn resolve(name: &str) -> Result<Target> {
    let path = Path::new(name);
    if path.exists() {
        return Ok(Target::File(path.to_path_buf()));
    }
    match cards::find(name) {
        Ok(card) => Ok(Target::Card(card)),
        // Something that looks like a path: let the loader say the file is missing.
        Err(_) if name.contains('/') || name.ends_with(".gguf") => {
            Ok(Target::File(path.to_path_buf()))
        }
        Err(e) => Err(e.into()),
    }
}

pub fn main(mut args: Args) -> Result<()> {
    match args.model_file.clone() {
        Some(name) => match resolve(&name)? {
            Target::File(path) => {
                args.opts.model = Some(path);
                plan_file(&args, None)
            }
            Target::Card(card) => plan_card(&mut args, card),
        },
        None if args.opts.model.is_none() && args.opts.board.is_some() => plan_board(&args),
        None => plan_file(&args, None),
    }
}

/// A card: its pulled file when present and runnable, else the card's own figures.
fn plan_card(args: &mut Args, card: &'static ModelCard) -> Result<()> {
    let board = args.opts.board()?;
    let path = models_dir(args.dir.as_deref()).join(card.file_name);
    if args.opts.ctx.is_none() {
        let board_ctx = board.as_ref().map(|b| b.model.context_length as usize);
        args.opts.ctx = Some(card.context_for(board_ctx));
    }
    if path.is_file() && card.runs_here() {
        args.opts.model = Some(path);
        return plan_file(args, Some(card));
    }
    let n_ctx = args
        .opts
        .ctx
        .unwrap_or(card.context)
        .min(card.shape.n_ctx_train);
    // The same thread count a plan from the file gets (the flag, else the board's, at most
    // this machine's cores).
    let threads = args.opts.threads(board.as_ref())?;
    let sopts = StateOptions {
        n_ctx,
        n_batch: args.opts.batch.max(1),
        kv_type: args.opts.kv_type(board.as_ref())?,
        all_logits: false,
        n_threads: threads,
        swa_full: args.opts.swa_full,
        ..Default::default()
    };
    let figures = Figures::from_card(card, &sopts)?;
    let label = format!("{} (card; {} not present)", card.name, path.display());
    report(
        args.json,
        &label,
        Some(card),
        &sopts,
        &figures,
        board.as_ref(),
    )
}

/// A GGUF file: load it (mapped, not read) and size the state exactly.
fn plan_file(args: &Args, card: Option<&ModelCard>) -> Result<()> {
    let (model, board) = args.opts.load()?;
    let sopts = args.opts.state_options(&model, board.as_ref(), false)?;
    let figures = Figures::from_model(&model, &sopts)?;
    let label = format!("{} ({})", model.name, model.path().display());
    report(args.json, &label, card, &sopts, &figures, board.as_ref())
}

fn budget_of(board: Option<&BoardConfig>) -> (Option<u64>, String) {
    match board {
        Some(b) => (Some(b.memory.budget_bytes), format!("board {}", b.name)),
        None => (
            host_available_bytes(),
            "this machine's available memory".to_string(),
        ),
    }
}

fn report(
    as_json: bool,
    label: &str,
    card: Option<&ModelCard>,
    sopts: &StateOptions,
    f: &Figures,
    board: Option<&BoardConfig>,
) -> Result<()> {
    let (budget, budget_source) = budget_of(board);
    let fits = f.fits(budget);
    let reason = match (fits, budget) {
        (Some(false), Some(b)) => {
            let needed = f.kv + f.scratch + f.weights.unwrap_or(0);
            let fixed = f.weights.unwrap_or(0) + f.scratch;
            // The cache at a smaller context, sliding-window layers included.
            let s = f.kv_shape;
            let kv_at = |n: usize| {
                KvShape::new(s.n_layer, n, s.kv_dim, s.swa, sopts.n_batch, sopts.swa_full)
                    .bytes(sopts.kv_type) as u64
            };
            let ctx_fit = if fixed < b {
                largest_context_within(sopts.n_ctx, b - fixed, kv_at)
            } else {
                0
            };
            Some(format!(
                "needs {}{} but the budget of {budget_source} is {} ({} over){}{}",
                if f.weights.is_none() { "at least " } else { "" },
                mib(needed),
                mib(b),
                mib(needed - b),
                f.weights
                    .map_or(String::new(), |w| format!("; weights alone are {}", mib(w))),
                if ctx_fit > 0 {
                    format!("; a context of at most {ctx_fit} tokens would fit")
                } else {
                    String::new()
                }
            ))
        }
        _ => None,
    };
    if as_json {
        let out = json!({
            "model": label,
            "card": card.map(|c| c.name),
            "basis": if f.basis == Basis::File { "file" } else { "card" },
            "n_ctx": sopts.n_ctx,
            "n_batch": sopts.n_batch,
            "kv_type": sopts.kv_type.name(),
            "threads": sopts.n_threads,
            "weights_bytes": f.weights,
            "kv_bytes": f.kv,
            "scratch_bytes": f.scratch,
            "vocab_bytes": f.vocab,
            "total_bytes": f.total(),
            "budget_bytes": budget,
            "budget_source": budget_source,
            "fits": fits,
            "reason": reason,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("model:       {label}");
    println!(
        "context:     {} tokens, KV {} , batch {}, {} threads",
        sopts.n_ctx,
        sopts.kv_type.name(),
        sopts.n_batch,
        sopts.n_threads
    );
    match f.weights {
        Some(w) => println!(
            "weights:     {:>12} bytes  {:>10}  (memory-mapped, shared with the page cache)",
            w,
            mib(w)
        ),
        None => println!(
            "weights:     unknown (the card pins no size: `edgellm pull` it, then plan again)"
        ),
    }
    println!("kv cache:    {:>12} bytes  {:>10}", f.kv, mib(f.kv));
    match f.vocab {
        Some(v) => println!(
            "scratch:     {:>12} bytes  {:>10}  (activations, logits, vocab tables {})",
            f.scratch,
            mib(f.scratch),
            mib(v)
        ),
        None => println!(
            "scratch:     {:>12} bytes  {:>10}  (activations and logits, from the card; vocab tables need the file)",
            f.scratch,
            mib(f.scratch)
        ),
    }
    match f.total() {
        Some(t) => println!("total:       {:>12} bytes  {:>10}", t, mib(t)),
        None => println!("total:       unknown (weights unknown)"),
    }
    match (budget, fits) {
        (Some(b), Some(true)) => println!(
            "budget:      {:>12} bytes  {:>10}  ({budget_source}): fits",
            b,
            mib(b)
        ),
        (Some(b), Some(false)) => {
            println!(
                "budget:      {:>12} bytes  {:>10}  ({budget_source}): DOES NOT FIT",
                b,
                mib(b)
            );
            if let Some(r) = reason {
                println!("reason:      {r}");
            }
        }
        (Some(b), None) => println!(
            "budget:      {:>12} bytes  {:>10}  ({budget_source}): unknown until the weights' size is",
            b,
            mib(b)
        ),
        (None, _) => println!("budget:      unknown (no board given and /proc/meminfo unreadable)"),
    }
    if let Some(c) = card {
        if !c.runs_here() {
            println!(
                "note:        {} is a {} model, which this build of edgellm cannot run yet",
                c.name, c.architecture
            );
        }
    }
    Ok(())
}

/// One row of `plan --board`.
struct BoardRow {
    card: &'static ModelCard,
    sopts: StateOptions,
    figures: Figures,
}

/// Every card on one board, each at its recommended context capped by the board's.
fn plan_board(args: &Args) -> Result<()> {
    let Some(board) = args.opts.board()? else {
        anyhow::bail!("plan without a model needs --board");
    };
    let dir = models_dir(args.dir.as_deref());
    let threads = args.opts.threads(Some(&board))?;
    let kv_type: KvType = args.opts.kv_type(Some(&board))?;
    let mut rows = Vec::with_capacity(CARDS.len());
    for card in CARDS {
        let n_ctx = args
            .opts
            .ctx
            .unwrap_or_else(|| card.context_for(Some(board.model.context_length as usize)))
            .min(card.shape.n_ctx_train);
        let sopts = StateOptions {
            n_ctx,
            n_batch: args.opts.batch.max(1),
            kv_type,
            all_logits: false,
            n_threads: threads,
            swa_full: args.opts.swa_full,
            ..Default::default()
        };
        let path = dir.join(card.file_name);
        let figures = if path.is_file() && card.runs_here() {
            let model = Model::load(
                &path,
                LoadOptions {
                    n_threads: 1,
                    kernels: None,
                },
            )
            .map_err(|e| anyhow::anyhow!("loading {}: {e}", path.display()))?;
            Figures::from_model(&model, &sopts)?
        } else {
            Figures::from_card(card, &sopts)?
        };
        rows.push(BoardRow {
            card,
            sopts,
            figures,
        });
    }
    let budget = board.memory.budget_bytes;
    if args.json {
        let models: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({
                    "name": r.card.name,
                    "architecture": r.card.architecture,
                    "runs_here": r.card.runs_here(),
                    "recommended": r.card.boards.contains(&board.name.as_str()),
                    "basis": if r.figures.basis == Basis::File { "file" } else { "card" },
                    "n_ctx": r.sopts.n_ctx,
                    "weights_bytes": r.figures.weights,
                    "kv_bytes": r.figures.kv,
                    "scratch_bytes": r.figures.scratch,
                    "total_bytes": r.figures.total(),
                    "fits": r.figures.fits(Some(budget)),
                })
            })
            .collect();
        let out = json!({
            "board": board.name,
            "budget_bytes": budget,
            "kv_type": kv_type.name(),
            "threads": threads,
            "models": models,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "board {}: budget {}, KV {}, {} threads ({})",
        board.name,
        mib(budget),
        kv_type.name(),
        threads,
        board.description
    );
    println!(
        "{:<30} {:>6} {:>11} {:>11} {:>11} {:>11}  {:<5} {:<11} BASIS",
        "NAME", "CTX", "WEIGHTS", "KV", "SCRATCH", "TOTAL", "FITS", "RECOMMENDED"
    );
    let opt_mib = |b: Option<u64>| b.map_or("?".to_string(), mib);
    for r in &rows {
        let f = &r.figures;
        println!(
            "{:<30} {:>6} {:>11} {:>11} {:>11} {:>11}  {:<5} {:<11} {}",
            r.card.name,
            r.sopts.n_ctx,
            opt_mib(f.weights),
            mib(f.kv),
            mib(f.scratch),
            opt_mib(f.total()),
            match f.fits(Some(budget)) {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "?",
            },
            if r.card.boards.contains(&board.name.as_str()) {
                "yes"
            } else {
                "no"
            },
            match (f.basis, r.card.runs_here()) {
                (Basis::File, _) => "file",
                (Basis::Card, true) => "card",
                (Basis::Card, false) => "card (arch not in this build)",
            }
        );
    }
    println!(
        "? = the card pins no size: `edgellm pull NAME` then `edgellm plan NAME --board {}`",
        board.name
    );
    Ok(())
}
