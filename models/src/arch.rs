//! `Arch`: the architectures edgellm runs, chosen by the GGUF `general.architecture` key, and
//! what distinguishes each from the llama baseline.

use crate::error::ModelError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// LLaMA 1/2/3, SmolLM, TinyLlama, Mistral-style dense models.
    Llama,
    /// Qwen2 / Qwen2.5: llama with q/k/v biases and NEOX RoPE.
    Qwen2,
    /// Gemma 3: llama with embeddings scaled by √d, GeGLU FFN, RMS-normed queries and keys,
    /// norms after attention and after the FFN too, NEOX RoPE, and sliding-window layers
    /// (with their own RoPE base) between global ones.
    Gemma3,
}

/// The FFN's gate activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FfnAct {
    /// `silu(gate) * up` (llama, qwen2).
    Silu,
    /// `gelu_tanh(gate) * up` (gemma).
    GeluTanh,
}

impl Arch {
    pub fn from_name(name: &str) -> Result<Arch, ModelError> {
        match name {
            "llama" => Ok(Arch::Llama),
            "qwen2" => Ok(Arch::Qwen2),
            "gemma3" => Ok(Arch::Gemma3),
            other => Err(ModelError::UnsupportedArchitecture(other.to_string())),
        }
    }

    /// The GGUF key prefix.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Gemma3 => "gemma3",
        }
    }

    /// Whether attention projections carry biases (`attn_q.bias`, ...).
    pub fn has_qkv_bias(self) -> bool {
        matches!(self, Arch::Qwen2)
    }

    /// Whether each head's queries and keys are RMS-normed before RoPE (`attn_q_norm`,
    /// `attn_k_norm`).
    pub fn has_qk_norm(self) -> bool {
        matches!(self, Arch::Gemma3)
    }

    /// Whether the attention and FFN outputs are RMS-normed before their residual add
    /// (`post_attention_norm`, `post_ffw_norm`).
    pub fn has_post_norms(self) -> bool {
        matches!(self, Arch::Gemma3)
    }

    /// Whether the token embeddings are multiplied by `sqrt(embedding_length)`.
    pub fn scales_embeddings(self) -> bool {
        matches!(self, Arch::Gemma3)
    }

    /// Whether the file's `attention.sliding_window` key applies (llama.cpp reads it only for
    /// the architectures built with sliding-window layers).
    pub fn has_sliding_window(self) -> bool {
        matches!(self, Arch::Gemma3)
    }

    /// Every how-many layers one is global when the file does not say (llama.cpp's default
    /// pattern for the architecture; 0 = none).
    pub fn default_swa_pattern(self) -> usize {
        match self {
            Arch::Gemma3 => 6,
            Arch::Llama | Arch::Qwen2 => 0,
        }
    }

    pub fn ffn_act(self) -> FfnAct {
        match self {
            Arch::Gemma3 => FfnAct::GeluTanh,
            Arch::Llama | Arch::Qwen2 => FfnAct::Silu,
        }
    }
}
