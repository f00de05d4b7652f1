//! `Model`: a loaded model file: the map (the only storage of the weights), its
//! hyperparameters, the bound weights, the tokenizer, the chat template, and the kernels and
//! thread pool that run it. Loading parses and validates everything up front, so a bad file
//! fails here with a named error and never mid-generation.

use std::path::Path;
use std::time::Instant;

use edgellm_runtime::gguf::Gguf;
use edgellm_runtime::kernels::threadpool::ThreadPool;
use edgellm_runtime::kernels::Kernels;
use edgellm_runtime::mmap::MappedFile;
use edgellm_runtime::tokenizer::Tokenizer;

use crate::arch::Arch;
use crate::error::ModelError;
use crate::hparams::HParams;
use crate::state::{State, StateOptions};
use crate::weights::Weights;

/// How to run a model.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Worker threads (including the caller); at least 1.
    pub n_threads: usize,
    /// The kernel table; `None` = `Kernels::from_env()`.
    pub kernels: Option<Kernels>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            n_threads: 1,
            kernels: None,
        }
    }
}

pub struct Model {
    pub(crate) map: MappedFile,
    pub hparams: HParams,
    pub weights: Weights,
    pub tokenizer: Tokenizer,
    /// The model's own `tokenizer.chat_template`, if it has one.
    pub chat_template: Option<String>,
    /// `general.name`, or the file name.
    pub name: String,
    pub(crate) pool: ThreadPool,
    pub(crate) kernels: Kernels,
    /// Milliseconds from open to ready.
    pub load_ms: f64,
}

impl Model {
    /// Maps, parses and validates `path` and binds the weights.
    pub fn load(path: &Path, opts: LoadOptions) -> Result<Model, ModelError> {
        let start = Instant::now();
        let map = MappedFile::open(path).map_err(|source| ModelError::Open {
            path: path.display().to_string(),
            source,
        })?;
        let kernels = match opts.kernels {
            Some(k) => k,
            None => Kernels::from_env()?,
        };
        let (hparams, weights, tokenizer, chat_template, name) = {
            let g = Gguf::parse(map.bytes())?;
            let arch = Arch::from_name(g.architecture()?)?;
            let tokenizer = Tokenizer::from_gguf(&g)?;
            let hparams = HParams::from_gguf(&g, arch, tokenizer.n_vocab())?;
            if hparams.n_vocab != tokenizer.n_vocab() {
                return Err(ModelError::BadHParam {
                    key: format!("{}.vocab_size", arch.name()),
                    value: hparams.n_vocab.to_string(),
                    why: "differs from the number of tokenizer.ggml.tokens",
                });
            }
            let weights = Weights::bind(&g, &hparams)?;
            let chat_template = g.get_str("tokenizer.chat_template")?.map(str::to_string);
            let name = match g.get_str("general.name")? {
                Some(n) => n.to_string(),
                None => path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "model".to_string()),
            };
            (hparams, weights, tokenizer, chat_template, name)
        };
        let pool = ThreadPool::new(opts.n_threads.max(1)).map_err(ModelError::Threads)?;
        if hparams.ffn_act == crate::arch::FfnAct::GeluTanh {
            edgellm_runtime::ops::prepare_gelu();
        }
        let load_ms = start.elapsed().as_secs_f64() * 1000.0;
        log::info!(
            "loaded {} ({}, {} layers, {} MB mapped) in {load_ms:.1} ms, kernels {}, {} threads",
            name,
            hparams.arch.name(),
            hparams.n_layer,
            map.len() / 1_000_000,
            kernels.path(),
            pool.n_threads()
        );
        Ok(Model {
            map,
            hparams,
            weights,
            tokenizer,
            chat_template,
            name,
            pool,
            kernels,
            load_ms,
        })
    }

    /// A fresh state (KV cache and scratch) for this model.
    pub fn new_state(&self, mut opts: StateOptions) -> Result<State, ModelError> {
        opts.n_threads = self.pool.n_threads();
        State::new(&self.hparams, &self.weights, opts)
    }

    pub fn kernels(&self) -> &Kernels {
        &self.kernels
    }

    pub fn n_threads(&self) -> usize {
        self.pool.n_threads()
    }

    /// Bytes of the mapped file.
    pub fn mapped_bytes(&self) -> usize {
        self.map.len()
    }

    pub fn path(&self) -> &Path {
        self.map.path()
    }
}

#[cfg(test)]
mod thread_safety {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}

    /// The serving engine shares one `Model` between the thread that generates and the threads
    /// that tokenize requests, and moves a `State` and `Generator` into its thread.
    #[test]
    fn model_is_shareable_and_state_movable() {
        assert_send_sync::<super::Model>();
        assert_send::<crate::State>();
        assert_send::<crate::Generator>();
        assert_send_sync::<crate::ChatFormat>();
    }
}
