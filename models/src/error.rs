//! `ModelError`: everything that can go wrong loading a model or running it, naming the key,
//! tensor or figure at fault.

use edgellm_runtime::chat_template::TemplateError;
use edgellm_runtime::gguf::GgufError;
use edgellm_runtime::kernels::KernelError;
use edgellm_runtime::tokenizer::TokenizerError;
use edgellm_runtime::GgmlType;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Quant(#[from] edgellm_runtime::quant::QuantError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("unsupported architecture '{0}' (supported: llama, qwen2, gemma3)")]
    UnsupportedArchitecture(String),
    #[error("required metadata key '{0}' is missing")]
    MissingKey(String),
    #[error("key '{key}' = {value}: {why}")]
    BadHParam {
        key: String,
        value: String,
        why: &'static str,
    },
    #[error("tensor '{0}' is missing")]
    MissingTensor(String),
    #[error("tensor '{name}': shape {found:?}, expected {expected:?}")]
    Shape {
        name: String,
        expected: Vec<u64>,
        found: Vec<u64>,
    },
    #[error("tensor '{name}': type {ty} is not supported for {role}")]
    UnsupportedType {
        name: String,
        ty: GgmlType,
        role: &'static str,
    },
    #[error("token id {id} is outside the vocabulary ({n_vocab} tokens)")]
    BadToken { id: u32, n_vocab: usize },
    #[error("context is full: {needed} positions needed, the context holds {n_ctx}")]
    ContextFull { needed: usize, n_ctx: usize },
    #[error("invalid option: {0}")]
    Option(String),
    #[error("could not start worker threads: {0}")]
    Threads(std::io::Error),
}
