//! `HParams`: a model's hyperparameters, read from GGUF keys only (`{arch}.block_count`, ...),
//! never from model-specific constants.

use edgellm_runtime::gguf::Gguf;
use edgellm_runtime::ops::{RopeParams, RopeStyle};

use crate::arch::{Arch, FfnAct};
use crate::error::ModelError;

/// Sliding-window attention (Gemma 3): most layers see only the last `window` positions and
/// rotate with their own RoPE base; every `pattern`-th layer is global.
#[derive(Clone, Debug, PartialEq)]
pub struct SlidingWindow {
    /// `{arch}.attention.sliding_window`: positions a local layer's query sees, itself included.
    pub window: usize,
    /// `{arch}.attention.sliding_window_pattern` (llama.cpp's per-architecture default when
    /// absent): layer `il` is local unless `il % pattern == pattern - 1`.
    pub pattern: usize,
    /// The local layers' RoPE: `{arch}.rope.freq_base_swa` (default 10000, as llama.cpp), no
    /// scaling.
    pub rope: RopeParams,
}

impl SlidingWindow {
    pub fn is_local(&self, il: usize) -> bool {
        il % self.pattern < self.pattern - 1
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct HParams {
    pub arch: Arch,
    pub n_layer: usize,
    /// Context length the model was trained with (`{arch}.context_length`).
    pub n_ctx_train: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_vocab: usize,
    pub rms_eps: f32,
    /// RoPE of the global layers (all layers when there is no sliding window).
    pub rope: RopeParams,
    /// Multiplier of the token embeddings (`sqrt(n_embd)` for gemma, else none).
    pub embd_scale: Option<f32>,
    pub ffn_act: FfnAct,
    /// Scale of the q·k products: `1 / sqrt(attention.key_length)` (Gemma's
    /// `query_pre_attn_scalar` is the key length for every size edgellm runs).
    pub attn_scale: f32,
    pub swa: Option<SlidingWindow>,
    /// `{arch}.final_logit_softcapping`: logits become `cap · tanh(logits / cap)`.
    pub final_logit_softcap: Option<f32>,
}

impl HParams {
    /// Width of the K (and V) rows of one layer: `n_head_kv * head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    /// Width of the attention queries: `n_head * head_dim`.
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// The sliding window of layer `il`, if it is a local layer.
    pub fn layer_window(&self, il: usize) -> Option<usize> {
        self.swa
            .as_ref()
            .filter(|s| s.is_local(il))
            .map(|s| s.window)
    }

    /// The RoPE of layer `il` (local layers have their own base).
    pub fn layer_rope(&self, il: usize) -> &RopeParams {
        match &self.swa {
            Some(s) if s.is_local(il) => &s.rope,
            _ => &self.rope,
        }
    }

    /// Reads the hyperparameters of `arch` from `g`. `n_vocab` comes from the tokenizer
    /// (`tokenizer.ggml.tokens`) when `{arch}.vocab_size` is absent.
    pub fn from_gguf(
        g: &Gguf<'_>,
        arch: Arch,
        n_vocab_tokens: usize,
    ) -> Result<HParams, ModelError> {
        let a = arch.name();
        let req = |k: &str| -> Result<usize, ModelError> {
            let key = format!("{a}.{k}");
            let v = g
                .get_u32(&key)?
                .ok_or(ModelError::MissingKey(key.clone()))?;
            if v == 0 {
                return Err(ModelError::BadHParam {
                    key,
                    value: v.to_string(),
                    why: "must be positive",
                });
            }
            Ok(v as usize)
        };
        let opt = |k: &str| -> Result<Option<usize>, ModelError> {
            Ok(g.get_u32(&format!("{a}.{k}"))?.map(|v| v as usize))
        };
        let n_layer = req("block_count")?;
        let n_embd = req("embedding_length")?;
        let n_ff = req("feed_forward_length")?;
        let n_head = req("attention.head_count")?;
        let n_head_kv = opt("attention.head_count_kv")?.unwrap_or(n_head);
        let n_ctx_train = opt("context_length")?.unwrap_or(2048);
        let head_dim = match opt("attention.key_length")? {
            Some(d) => d,
            None => {
                if n_embd % n_head != 0 {
                    return Err(ModelError::BadHParam {
                        key: format!("{a}.embedding_length"),
                        value: n_embd.to_string(),
                        why: "not divisible by attention.head_count",
                    });
                }
                n_embd / n_head
            }
        };
        if n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(ModelError::BadHParam {
                key: format!("{a}.attention.head_count_kv"),
                value: n_head_kv.to_string(),
                why: "must divide attention.head_count",
            });
        }
        let n_rot = opt("rope.dimension_count")?.unwrap_or(head_dim);
        if n_rot > head_dim || n_rot % 2 != 0 {
            return Err(ModelError::BadHParam {
                key: format!("{a}.rope.dimension_count"),
                value: n_rot.to_string(),
                why: "must be even and at most the head dimension",
            });
        }
        let rms_eps = g
            .get_f32(&format!("{a}.attention.layer_norm_rms_epsilon"))?
            .unwrap_or(1e-5);
        let freq_base = g
            .get_f32(&format!("{a}.rope.freq_base"))?
            .unwrap_or(10000.0);
        let scaling = g
            .get_str(&format!("{a}.rope.scaling.type"))?
            .unwrap_or("none");
        let freq_scale = match scaling {
            "none" => 1.0,
            "linear" => {
                let key = format!("{a}.rope.scaling.factor");
                match g.get_f32(&key)? {
                    Some(f) if f > 0.0 && f.is_finite() => 1.0 / f,
                    Some(f) => {
                        return Err(ModelError::BadHParam {
                            key,
                            value: f.to_string(),
                            why: "must be a positive number",
                        })
                    }
                    None => 1.0,
                }
            }
            // llama3-style scaling is carried by the `rope_freqs.weight` tensor.
            "llama3" => 1.0,
            other => {
                return Err(ModelError::BadHParam {
                    key: format!("{a}.rope.scaling.type"),
                    value: other.to_string(),
                    why: "unsupported rope scaling (supported: none, linear, llama3)",
                })
            }
        };
        let n_vocab = opt("vocab_size")?.unwrap_or(n_vocab_tokens);
        if let Some(v) = opt("attention.value_length")? {
            if v != head_dim {
                return Err(ModelError::BadHParam {
                    key: format!("{a}.attention.value_length"),
                    value: v.to_string(),
                    why: "differs from attention.key_length (not supported)",
                });
            }
        }
        let rope = RopeParams {
            style: arch.rope_style(),
            n_dims: n_rot,
            freq_base,
            freq_scale,
        };
        let swa = match opt("attention.sliding_window")? {
            Some(window) if window > 0 && arch.has_sliding_window() => {
                let pattern =
                    opt("attention.sliding_window_pattern")?.unwrap_or(arch.default_swa_pattern());
                if pattern == 0 {
                    return Err(ModelError::BadHParam {
                        key: format!("{a}.attention.sliding_window_pattern"),
                        value: "0".into(),
                        why: "must be positive",
                    });
                }
                let base_swa = g
                    .get_f32(&format!("{a}.rope.freq_base_swa"))?
                    .unwrap_or(10000.0);
                Some(SlidingWindow {
                    window,
                    pattern,
                    rope: RopeParams {
                        freq_base: base_swa,
                        freq_scale: 1.0,
                        ..rope
                    },
                })
            }
            _ => None,
        };
        let final_logit_softcap = match g.get_f32(&format!("{a}.final_logit_softcapping"))? {
            Some(c) if c > 0.0 && c.is_finite() => Some(c),
            Some(0.0) => None,
            Some(c) => {
                return Err(ModelError::BadHParam {
                    key: format!("{a}.final_logit_softcapping"),
                    value: c.to_string(),
                    why: "must be a positive number (or 0 for none)",
                })
            }
            None => None,
        };
        Ok(HParams {
            arch,
            n_layer,
            n_ctx_train,
            n_embd,
            n_ff,
            n_head,
            n_head_kv,
            head_dim,
            n_vocab,
            rms_eps,
            rope,
            embd_scale: arch.scales_embeddings().then(|| (n_embd as f32).sqrt()),
            ffn_act: arch.ffn_act(),
            attn_scale: 1.0 / (head_dim as f32).sqrt(),
            swa,
            final_logit_softcap,
        })
    }
}

impl Arch {
    /// How this architecture pairs RoPE dimensions.
    pub fn rope_style(self) -> RopeStyle {
        match self {
            Arch::Llama => RopeStyle::Normal,
            Arch::Qwen2 | Arch::Gemma3 => RopeStyle::Neox,
        }
    }
}
