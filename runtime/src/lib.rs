//! edgellm-runtime: the primitives every model is built from.
//!
//! ```text
//! model.gguf ─mmap─▶ &'m [u8] ─gguf::Gguf::parse─▶ Gguf<'m> ─views─▶ TensorView<'m> ─bind─▶ Weights<'m>
//!    forward(&Weights, &mut State, tokens, pos) ─uses─▶ ops + Kernels ─▶ logits: &[f32]
//!    ─Sampler─▶ token id ─Tokenizer::piece─▶ bytes ─TextStream─▶ serial console | socket client
//! ```
//!
//! Each arrow is one module: [`mmap`] makes the map (the only storage of weights), [`gguf`]
//! parses and validates it into zero-copy [`tensor::TensorView`]s, [`quant`] defines ggml's block
//! formats with scalar quantize/dequantize, [`kernels`] holds the dot products per ISA behind
//! one dispatch, [`tokenizer`] turns text into ids and ids into bytes, [`sampler`] picks the next
//! id, [`text_stream`] turns id bytes into user-visible text (UTF-8 carry, stop strings), and
//! [`chat_template`] renders a model's Jinja chat template.
//!
//! This crate is the only one with `unsafe`: the map, the byte-to-block casts and the kernels,
//! each with its `// SAFETY:` justification.

pub mod alloc_count;
pub mod chat_template;
pub mod error;
pub mod ggml_type;
pub mod gguf;
pub mod kernels;
pub mod malloc_arenas;
pub mod mmap;
pub mod ops;
pub mod quant;
pub mod sampler;
pub mod tensor;
pub mod text_stream;
pub mod tokenizer;

pub use error::Error;
pub use ggml_type::GgmlType;

/// File name of the default model (SmolLM2-135M-Instruct, Q4_1), fetched by `make model`.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The model used when none is named: `$EDGELLM_MODEL` if set, else the file `make model`
/// fetches into the workspace's `models/gguf/` folder.
pub fn default_model_path() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("EDGELLM_MODEL") {
        return p.into();
    }
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("models")
        .join("gguf")
        .join(DEFAULT_MODEL_FILE)
}
