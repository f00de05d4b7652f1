//! `Arch`: the architectures edgellm runs, chosen by the GGUF `general.architecture` key, and
//! what distinguishes each from the llama baseline.

use crate::error::ModelError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// LLaMA 1/2/3, SmolLM, TinyLlama, Mistral-style dense models.
    Llama,
    /// Qwen2 / Qwen2.5: llama with q/k/v biases and NEOX RoPE.
    Qwen2,
}

impl Arch {
    pub fn from_name(name: &str) -> Result<Arch, ModelError> {
        match name {
            "llama" => Ok(Arch::Llama),
            "qwen2" => Ok(Arch::Qwen2),
            other => Err(ModelError::UnsupportedArchitecture(other.to_string())),
        }
    }

    /// The GGUF key prefix.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        }
    }

    /// Whether attention projections carry biases (`attn_q.bias`, ...).
    pub fn has_qkv_bias(self) -> bool {
        matches!(self, Arch::Qwen2)
    }
}
