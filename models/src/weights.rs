//! `Weights`: every tensor a forward pass reads, bound by name and validated against the
//! hyperparameters at load. A binding is a byte range of the map (never a copy); the forward
//! pass resolves it against the mapped bytes.

use std::ops::Range;

use edgellm_runtime::gguf::{Gguf, TensorInfo};
use edgellm_runtime::kernels::matmul::WeightMatrix;
use edgellm_runtime::kernels::Kernels;
use edgellm_runtime::{quant, GgmlType};

use crate::error::ModelError;
use crate::hparams::HParams;

/// A tensor bound to its place in the map: type, rows × cols, byte range.
#[derive(Clone, Debug)]
pub struct Bound {
    pub name: String,
    pub ty: GgmlType,
    pub cols: usize,
    pub rows: usize,
    pub range: Range<usize>,
}

impl Bound {
    /// The tensor as a matmul operand.
    pub fn matrix<'a>(&self, map: &'a [u8]) -> WeightMatrix<'a> {
        WeightMatrix {
            ty: self.ty,
            cols: self.cols,
            rows: self.rows,
            data: &map[self.range.clone()],
        }
    }

    /// A 1-D F32 tensor (norm weights, biases) as floats.
    pub fn f32s<'a>(&self, map: &'a [u8]) -> &'a [f32] {
        quant::blocks::<f32>(&map[self.range.clone()]).unwrap_or(&[])
    }

    /// Bytes of row `r`.
    pub fn row<'a>(&self, map: &'a [u8], r: usize) -> &'a [u8] {
        let rb = self.range.len() / self.rows.max(1);
        &map[self.range.start + r * rb..self.range.start + (r + 1) * rb]
    }
}

/// One transformer block's tensors.
#[derive(Clone, Debug)]
pub struct LayerWeights {
    pub attn_norm: Bound,
    pub wq: Bound,
    pub wk: Bound,
    pub wv: Bound,
    pub bq: Option<Bound>,
    pub bk: Option<Bound>,
    pub bv: Option<Bound>,
    pub wo: Bound,
    /// Per-head RMSNorm of queries and keys, `[head_dim]` (gemma).
    pub q_norm: Option<Bound>,
    pub k_norm: Option<Bound>,
    /// RMSNorm of the attention output before its residual add, `[n_embd]` (gemma).
    pub post_attn_norm: Option<Bound>,
    pub ffn_norm: Bound,
    pub w_gate: Bound,
    pub w_up: Bound,
    pub w_down: Bound,
    /// RMSNorm of the FFN output before its residual add, `[n_embd]` (gemma).
    pub post_ffn_norm: Option<Bound>,
}

#[derive(Clone, Debug)]
pub struct Weights {
    pub token_embd: Bound,
    pub layers: Vec<LayerWeights>,
    pub output_norm: Bound,
    /// The output projection: `output.weight`, or `token_embd.weight` when tied.
    pub output: Bound,
    pub tied_output: bool,
    /// llama3-style per-dimension rope frequency factors.
    pub rope_freqs: Option<Bound>,
}

/// What a tensor is used for, which decides the types it may have.
#[derive(Clone, Copy)]
enum Role {
    /// A matmul operand: any type the kernels support.
    Matmul,
    /// Looked up by row: any type `quant::dequantize_row` supports.
    Embedding,
    /// Read as floats directly: F32 only.
    Vector,
}

struct Binder<'g, 'a> {
    g: &'g Gguf<'a>,
    base: usize,
}

impl Binder<'_, '_> {
    fn info(&self, name: &str) -> Result<&TensorInfo<'_>, ModelError> {
        self.g
            .tensor(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))
    }

    fn bind(&self, name: &str, shape: &[usize], role: Role) -> Result<Bound, ModelError> {
        let t = self.info(name)?;
        let expected: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
        let found = t.dims().to_vec();
        // Trailing dims of 1 are the same shape.
        let mut trimmed = found.clone();
        while trimmed.len() > expected.len() && trimmed.last() == Some(&1) {
            trimmed.pop();
        }
        if trimmed != expected {
            return Err(ModelError::Shape {
                name: name.to_string(),
                expected,
                found,
            });
        }
        let ok = match role {
            Role::Matmul => Kernels::act_type(t.ggml_type).is_ok(),
            Role::Embedding => quant::is_supported(t.ggml_type),
            Role::Vector => t.ggml_type == GgmlType::F32,
        };
        if !ok {
            return Err(ModelError::UnsupportedType {
                name: name.to_string(),
                ty: t.ggml_type,
                role: match role {
                    Role::Matmul => "a matrix multiplication",
                    Role::Embedding => "an embedding lookup",
                    Role::Vector => "a norm or bias vector (F32 required)",
                },
            });
        }
        let start = self.base + t.offset as usize;
        let cols = shape[0];
        let rows = shape[1..].iter().product::<usize>().max(1);
        Ok(Bound {
            name: name.to_string(),
            ty: t.ggml_type,
            cols,
            rows,
            range: start..start + t.n_bytes(),
        })
    }

    fn bind_opt(
        &self,
        name: &str,
        shape: &[usize],
        role: Role,
    ) -> Result<Option<Bound>, ModelError> {
        if self.g.tensor(name).is_some() {
            self.bind(name, shape, role).map(Some)
        } else {
            Ok(None)
        }
    }
}

impl Weights {
    /// Binds every tensor the architecture needs, checking names, shapes and types.
    pub fn bind(g: &Gguf<'_>, hp: &HParams) -> Result<Weights, ModelError> {
        let b = Binder {
            g,
            base: g.data_offset() as usize,
        };
        let d = hp.n_embd;
        let token_embd = b.bind("token_embd.weight", &[d, hp.n_vocab], Role::Embedding)?;
        let mut layers = Vec::with_capacity(hp.n_layer);
        for i in 0..hp.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}");
            let bias = |s: &str, len: usize| -> Result<Option<Bound>, ModelError> {
                if hp.arch.has_qkv_bias() {
                    b.bind(&n(s), &[len], Role::Vector).map(Some)
                } else {
                    b.bind_opt(&n(s), &[len], Role::Vector)
                }
            };
            // Norms the architecture needs; absent from (and ignored for) the others.
            let norm_if =
                |needed: bool, s: &str, len: usize| -> Result<Option<Bound>, ModelError> {
                    if needed {
                        b.bind(&n(s), &[len], Role::Vector).map(Some)
                    } else {
                        Ok(None)
                    }
                };
            let qk_norm = hp.arch.has_qk_norm();
            let post_norms = hp.arch.has_post_norms();
            layers.push(LayerWeights {
                attn_norm: b.bind(&n("attn_norm.weight"), &[d], Role::Vector)?,
                wq: b.bind(&n("attn_q.weight"), &[d, hp.q_dim()], Role::Matmul)?,
                wk: b.bind(&n("attn_k.weight"), &[d, hp.kv_dim()], Role::Matmul)?,
                wv: b.bind(&n("attn_v.weight"), &[d, hp.kv_dim()], Role::Matmul)?,
                bq: bias("attn_q.bias", hp.q_dim())?,
                bk: bias("attn_k.bias", hp.kv_dim())?,
                bv: bias("attn_v.bias", hp.kv_dim())?,
                wo: b.bind(&n("attn_output.weight"), &[hp.q_dim(), d], Role::Matmul)?,
                q_norm: norm_if(qk_norm, "attn_q_norm.weight", hp.head_dim)?,
                k_norm: norm_if(qk_norm, "attn_k_norm.weight", hp.head_dim)?,
                post_attn_norm: norm_if(post_norms, "post_attention_norm.weight", d)?,
                ffn_norm: b.bind(&n("ffn_norm.weight"), &[d], Role::Vector)?,
                w_gate: b.bind(&n("ffn_gate.weight"), &[d, hp.n_ff], Role::Matmul)?,
                w_up: b.bind(&n("ffn_up.weight"), &[d, hp.n_ff], Role::Matmul)?,
                w_down: b.bind(&n("ffn_down.weight"), &[hp.n_ff, d], Role::Matmul)?,
                post_ffn_norm: norm_if(post_norms, "post_ffw_norm.weight", d)?,
            });
        }
        let output_norm = b.bind("output_norm.weight", &[d], Role::Vector)?;
        let (output, tied_output) =
            match b.bind_opt("output.weight", &[d, hp.n_vocab], Role::Matmul)? {
                Some(o) => (o, false),
                None => {
                    if Kernels::act_type(token_embd.ty).is_err() {
                        return Err(ModelError::UnsupportedType {
                            name: token_embd.name.clone(),
                            ty: token_embd.ty,
                            role: "the tied output projection",
                        });
                    }
                    (token_embd.clone(), true)
                }
            };
        let rope_freqs = b.bind_opt("rope_freqs.weight", &[hp.rope.n_dims / 2], Role::Vector)?;
        Ok(Weights {
            token_embd,
            layers,
            output_norm,
            output,
            tied_output,
            rope_freqs,
        })
    }

    /// Every matmul operand, for sizing scratch buffers.
    pub fn matrices(&self) -> impl Iterator<Item = &Bound> {
        self.layers
            .iter()
            .flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down])
            .chain(std::iter::once(&self.output))
    }
}
