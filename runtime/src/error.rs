//! `Error`: the crate's one error type. Each module has its own typed error carrying the key,
//! tensor or offset that failed; this enum wraps them for callers that handle them alike.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Gguf(#[from] crate::gguf::GgufError),
    #[error(transparent)]
    Quant(#[from] crate::quant::QuantError),
    #[error(transparent)]
    Kernel(#[from] crate::kernels::KernelError),
    #[error(transparent)]
    Sampler(#[from] crate::sampler::SamplerError),
    #[error(transparent)]
    TextStream(#[from] crate::text_stream::TextStreamError),
    #[error(transparent)]
    Template(#[from] crate::chat_template::TemplateError),
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
}
