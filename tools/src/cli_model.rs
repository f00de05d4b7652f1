//! The options every model-running subcommand shares (`-m`, `--threads`, `--ctx`, `--kernels`,
//! `--board`) and how they become a loaded `Model` and `State`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use edgellm_hal::board::BoardConfig;
use edgellm_models::{KvType, LoadOptions, Model, State, StateLayout, StateOptions};
use edgellm_runtime::kernels::{KernelPath, Kernels};

#[derive(clap::Args, Clone, Debug)]
pub struct ModelArgs {
    /// GGUF model file (default: $EDGELLM_MODEL, else the model `make model` fetches).
    #[arg(short = 'm', long = "model")]
    pub model: Option<PathBuf>,
    /// Worker threads (default: the board's, else every core). 0 is an error; more than the
    /// cores are clamped with a warning.
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Context length in tokens (default: the board's, else 2048, at most the model's).
    #[arg(short = 'c', long = "ctx")]
    pub ctx: Option<usize>,
    /// Prompt batch size.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// KV cache element type: f16 or f32.
    #[arg(long = "kv-type")]
    pub kv_type: Option<String>,
    /// Give sliding-window layers (Gemma-3's local layers) a cache of the whole context, as
    /// llama.cpp's --swa-full, instead of a buffer of about window + batch positions (a
    /// shorter one can reuse a cached prompt prefix only while it still holds its last window).
    #[arg(long = "swa-full")]
    pub swa_full: bool,
    /// Kernel path: scalar, avx2, avx512, neon, neon-dotprod (default: best for this CPU,
    /// or $EDGELLM_KERNELS).
    #[arg(long)]
    pub kernels: Option<String>,
    /// Board config (name of a stock board or a TOML path) for defaults.
    #[arg(long)]
    pub board: Option<String>,
}

impl ModelArgs {
    /// `-m`, else the board's `model.path`, else `$EDGELLM_MODEL` or the fetched default.
    pub fn model_path(&self, board: Option<&BoardConfig>) -> PathBuf {
        self.model
            .clone()
            .or_else(|| board.and_then(|b| b.model.path.clone()))
            .unwrap_or_else(edgellm_runtime::default_model_path)
    }

    pub fn board(&self) -> Result<Option<BoardConfig>> {
        match &self.board {
            Some(b) => Ok(Some(
                BoardConfig::load(b).with_context(|| format!("board '{b}'"))?,
            )),
            None => Ok(None),
        }
    }

    /// Threads: flag, else board, else all cores; validated.
    pub fn threads(&self, board: Option<&BoardConfig>) -> Result<usize> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let t = match self.threads {
            Some(t) => t,
            None => board.map_or(cores, |b| b.cpu.threads as usize),
        };
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        if t > cores {
            log::warn!("{t} threads requested but this machine has {cores} cores: using {cores}");
            return Ok(cores);
        }
        Ok(t)
    }

    pub fn kv_type(&self, board: Option<&BoardConfig>) -> Result<KvType> {
        let name = match &self.kv_type {
            Some(k) => k.clone(),
            None => return Ok(board.map_or(KvType::F16, |b| b.model.kv_type)),
        };
        KvType::from_name(&name).with_context(|| format!("--kv-type '{name}': expected f16 or f32"))
    }

    pub fn kernels(&self) -> Result<Kernels> {
        Ok(match &self.kernels {
            Some(k) => Kernels::new(KernelPath::from_name(k)?)?,
            None => Kernels::from_env()?,
        })
    }

    pub fn load(&self) -> Result<(Model, Option<BoardConfig>)> {
        let board = self.board()?;
        let path = self.model_path(board.as_ref());
        if !path.exists() {
            bail!(
                "model file {} not found (run `make model`, set EDGELLM_MODEL or pass -m)",
                path.display()
            );
        }
        let model = Model::load(
            &path,
            LoadOptions {
                n_threads: self.threads(board.as_ref())?,
                kernels: Some(self.kernels()?),
            },
        )
        .with_context(|| format!("loading {}", path.display()))?;
        Ok((model, board))
    }

    /// The context length: flag, else board, else 2048; never more than the model was trained for.
    pub fn ctx(&self, model_ctx: usize, board: Option<&BoardConfig>) -> usize {
        let want = self
            .ctx
            .unwrap_or_else(|| board.map_or(2048, |b| b.model.context_length as usize));
        if want > model_ctx {
            log::warn!("context {want} is more than the model's {model_ctx}: using {model_ctx}");
            model_ctx
        } else {
            want
        }
    }

    /// The state options for `model`; logs how the KV cache divides between global and
    /// sliding-window layers when the model has the latter.
    pub fn state_options(
        &self,
        model: &Model,
        board: Option<&BoardConfig>,
        all_logits: bool,
    ) -> Result<StateOptions> {
        let opts = StateOptions {
            n_ctx: self.ctx(model.hparams.n_ctx_train, board),
            n_batch: self.batch.max(1),
            kv_type: self.kv_type(board)?,
            all_logits,
            n_threads: model.n_threads(),
            swa_full: self.swa_full,
            ..Default::default()
        };
        let layout = StateLayout::new(&model.hparams, &model.weights, &opts)?;
        let shape = layout.kv_shape;
        if let Some(swa) = shape.swa {
            let n_local = shape.n_local();
            let per_position = 2 * shape.kv_dim * opts.kv_type.bytes();
            let mib = |positions: usize| (positions * per_position) as f64 / 1048576.0;
            log::info!(
                "KV cache: {} global layers x {} positions ({:.1} MiB), {n_local} sliding-window layers (window {}) x {} positions ({:.1} MiB){}",
                shape.n_layer - n_local,
                shape.n_ctx,
                mib((shape.n_layer - n_local) * shape.n_ctx),
                swa.window,
                shape.local_slots,
                mib(n_local * shape.local_slots),
                if opts.swa_full { " (--swa-full)" } else { "" }
            );
        }
        Ok(opts)
    }

    pub fn new_state(
        &self,
        model: &Model,
        board: Option<&BoardConfig>,
        all_logits: bool,
    ) -> Result<State> {
        let opts = self.state_options(model, board, all_logits)?;
        Ok(model.new_state(opts)?)
    }
}
