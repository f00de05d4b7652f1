//! edgellm-models: how each architecture composes runtime ops into a forward pass.
//!
//! ```text
//! path ─Model::load─▶ Model { map, HParams, Weights (byte ranges of the map), Tokenizer }
//!      ─Model::new_state─▶ State { KvCache, scratch }   (allocated once)
//!      ─Model::forward(&mut State, tokens)─▶ logits      (allocates nothing)
//!      ─Generator─▶ sampled ids ─TextStream─▶ TokenSink
//! ```
//!
//! [`arch`] names the architectures (chosen by `general.architecture`), [`hparams`] reads their
//! hyperparameters from GGUF keys, [`weights`] binds and validates tensors, [`kv_cache`] and
//! [`state`] own what a forward pass writes, [`forward`] is the pass itself, [`generate`] the
//! token loop with sampling, stop conditions and streaming.
#![forbid(unsafe_code)]

pub mod arch;
pub mod beam;
pub mod cards;
pub mod chat;
pub mod error;
pub mod forward;
pub mod generate;
pub mod hparams;
pub mod kv_cache;
pub mod model;
pub mod perplexity;
pub mod quantize;
pub mod state;
mod tensor_dump;
pub mod weights;

pub use arch::Arch;
pub use beam::{Beam, BeamOutcome, BeamParams, BeamSearch};
pub use cards::{CardError, ModelCard};
pub use chat::ChatFormat;
pub use error::ModelError;
pub use forward::LogitsWanted;
pub use generate::{GenerateOutcome, GenerateParams, Generator, StopReason, TokenSink};
pub use hparams::HParams;
pub use kv_cache::KvType;
pub use model::{LoadOptions, Model};
pub use state::{State, StateLayout, StateOptions};
