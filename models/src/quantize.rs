//! `edgellm quantize`: converts a GGUF file to one of llama.cpp's file types, choosing each
//! tensor's type as llama-quantize does (`llama_tensor_get_type` in llama.cpp's
//! `src/llama-quant.cpp`), so that the tensor bytes equal llama-quantize's for the same input.
//!
//! Requantizing (from Q4_1, say) dequantizes each row to f32 and quantizes it with ggml's
//! reference quantizers (no importance matrix), exactly as llama-quantize without `--imatrix`.
//! Reproduced: the K-quant mixtures Q4_K_M, Q5_K_M and Q6_K (more bits for some `attn_v` and
//! `ffn_down` layers, Q6_K for the output projection, tied embeddings), the fallback to a 32-block
//! type when a row is not a multiple of 256 (SmolLM2's 576-wide rows), and Falcon's and 70B
//! llama's special cases for these file types. Not reproduced: mixture-of-experts models
//! (rejected), imatrix-driven choices, and the file types edgellm does not write.

use std::io::Write;
use std::path::Path;

use edgellm_runtime::gguf::writer::{GgufWriter, MetaValueOwned};
use edgellm_runtime::gguf::{Gguf, TensorInfo};
use edgellm_runtime::mmap::MappedFile;
use edgellm_runtime::{quant, GgmlType};

use crate::error::ModelError;

/// A file type `edgellm quantize` writes: llama.cpp's `llama_ftype` of the same name.
#[allow(non_camel_case_types)] // llama.cpp's names, as GgmlType keeps ggml's
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantizeTarget {
    /// All 2-D weights in one type (llama.cpp's `ALL_F32` / `MOSTLY_<TYPE>`), except where
    /// llama.cpp decides otherwise (output projection, row-length fallbacks).
    Type(GgmlType),
    /// `MOSTLY_Q4_K_M`: Q4_K, with Q6_K for half the `attn_v` and `ffn_down` layers.
    Q4_K_M,
    /// `MOSTLY_Q5_K_M`: Q5_K, with Q6_K for half the `attn_v` and `ffn_down` layers.
    Q5_K_M,
}

/// Every target `edgellm quantize` writes.
pub const QUANTIZE_TARGETS: [QuantizeTarget; 10] = [
    QuantizeTarget::Type(GgmlType::F32),
    QuantizeTarget::Type(GgmlType::F16),
    QuantizeTarget::Type(GgmlType::Q8_0),
    QuantizeTarget::Type(GgmlType::Q4_0),
    QuantizeTarget::Type(GgmlType::Q4_1),
    QuantizeTarget::Type(GgmlType::Q5_0),
    QuantizeTarget::Type(GgmlType::Q5_1),
    QuantizeTarget::Q4_K_M,
    QuantizeTarget::Q5_K_M,
    QuantizeTarget::Type(GgmlType::Q6_K),
];

impl From<GgmlType> for QuantizeTarget {
    fn from(ty: GgmlType) -> QuantizeTarget {
        QuantizeTarget::Type(ty)
    }
}

impl QuantizeTarget {
    /// llama-quantize's name for the target (`"Q4_K_M"`, `"Q8_0"`, `"F16"`).
    pub fn name(self) -> &'static str {
        match self {
            QuantizeTarget::Type(ty) => ty.name(),
            QuantizeTarget::Q4_K_M => "Q4_K_M",
            QuantizeTarget::Q5_K_M => "Q5_K_M",
        }
    }

    /// Parses a target name case-insensitively; only targets edgellm writes.
    pub fn from_name(name: &str) -> Option<QuantizeTarget> {
        QUANTIZE_TARGETS
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// The names of every target, for messages.
    pub fn names() -> String {
        QUANTIZE_TARGETS.map(QuantizeTarget::name).join(", ")
    }

    /// llama.cpp's `general.file_type` (`llama_ftype`); `None` for a target edgellm does not write.
    pub fn file_type(self) -> Option<u32> {
        match self {
            QuantizeTarget::Type(GgmlType::F32) => Some(0),
            QuantizeTarget::Type(GgmlType::F16) => Some(1),
            QuantizeTarget::Type(GgmlType::Q4_0) => Some(2),
            QuantizeTarget::Type(GgmlType::Q4_1) => Some(3),
            QuantizeTarget::Type(GgmlType::Q8_0) => Some(7),
            QuantizeTarget::Type(GgmlType::Q5_0) => Some(8),
            QuantizeTarget::Type(GgmlType::Q5_1) => Some(9),
            QuantizeTarget::Q4_K_M => Some(15),
            QuantizeTarget::Q5_K_M => Some(17),
            QuantizeTarget::Type(GgmlType::Q6_K) => Some(18),
            QuantizeTarget::Type(_) => None,
        }
    }

    /// The type most weights get (`llama_ftype_get_default_type`).
    pub fn default_type(self) -> GgmlType {
        match self {
            QuantizeTarget::Type(ty) => ty,
            QuantizeTarget::Q4_K_M => GgmlType::Q4_K,
            QuantizeTarget::Q5_K_M => GgmlType::Q5_K,
        }
    }
}

impl std::fmt::Display for QuantizeTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the model is, as far as llama.cpp's per-tensor rules look at it.
#[derive(Clone, Copy, Debug, Default)]
pub struct ModelFacts {
    /// `{arch}.block_count`: the layer count `ffn_down` layers are placed in.
    pub n_layer: u32,
    /// llama.cpp's Falcon rules apply.
    pub is_falcon: bool,
    /// llama.cpp's 70B rule applies (a llama of 80 layers with grouped-query attention).
    pub is_llama_70b: bool,
}

/// llama.cpp's broad tensor roles (`tensor_get_category`), tested in its order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Category {
    Output,
    TokenEmbd,
    /// `attn_v`, and the fused `attn_qkv` / `attn_kv_b` treated like it.
    AttnV,
    FfnDown,
    Other,
}

fn category(name: &str) -> Category {
    if name == "output.weight" {
        return Category::Output;
    }
    if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        return Category::TokenEmbd;
    }
    for (pattern, cat) in [
        ("attn_qkv.weight", Category::AttnV),
        ("attn_kv_b.weight", Category::AttnV),
        ("attn_v.weight", Category::AttnV),
        ("attn_k.weight", Category::Other),
        ("attn_q.weight", Category::Other),
        ("attn_output.weight", Category::Other),
        ("ffn_up", Category::Other),
        ("ffn_gate", Category::Other),
        ("ffn_down", Category::FfnDown),
    ] {
        if name.contains(pattern) {
            return cat;
        }
    }
    Category::Other
}

/// Whether llama-quantize converts the tensor at all (`tensor_allows_quantization`, the
/// architecture-independent part): 2-D or more weights that are not norms, expert gates,
/// positional or token-type embeddings, or small convolution / bias tables.
fn allows_quantization(name: &str, n_dims: u32) -> bool {
    n_dims >= 2
        && name.ends_with("weight")
        && !name.contains("_norm.weight")
        && !name.contains("ffn_gate_inp.weight")
        && name != "position_embd.weight"
        && name != "token_types.weight"
        && !name.contains("ssm_conv1d")
        && !name.contains("attn_rel_b.weight")
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers and every third between.
fn use_more_bits(i_layer: u32, n_layers: u32) -> bool {
    let (i, n) = (i64::from(i_layer), i64::from(n_layers));
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8).rem_euclid(3) == 2
}

/// llama.cpp's `tensor_type_fallback`: a 256-block type whose block does not divide the row
/// becomes a 32-block type, and a 32-block type that does not either becomes F16.
fn fallback(ty: GgmlType, ne0: u64) -> GgmlType {
    if ne0.is_multiple_of(ty.block_size() as u64) {
        return ty;
    }
    let demoted = match ty {
        GgmlType::Q2_K | GgmlType::Q3_K => GgmlType::Q4_0,
        GgmlType::Q4_K => GgmlType::Q5_0,
        GgmlType::Q5_K => GgmlType::Q5_1,
        GgmlType::Q6_K => GgmlType::Q8_0,
        other => other,
    };
    if ne0.is_multiple_of(demoted.block_size() as u64) {
        demoted
    } else {
        GgmlType::F16
    }
}

/// The order llama-quantize visits tensors in (its `weights_map`): by layer number (tensors
/// outside `blk.N.` first), then by name. Its layer counters follow this order.
fn visit_key(name: &str) -> (i64, &str) {
    let layer = name
        .strip_prefix("blk.")
        .map(|rest| {
            let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            rest[..digits].parse::<i64>().unwrap_or(-1)
        })
        .unwrap_or(-1);
    (layer, name)
}

/// The type of every tensor in `tensors` (same order) for `target`: llama-quantize's choices.
pub fn plan_tensor_types(
    tensors: &[TensorInfo<'_>],
    target: QuantizeTarget,
    facts: ModelFacts,
) -> Vec<GgmlType> {
    let default_type = target.default_type();
    let is_quantized_target = default_type.block_size() > 1;
    let cats: Vec<Category> = tensors.iter().map(|t| category(t.name)).collect();
    let has_tied_embeddings = !cats.contains(&Category::Output);
    let n_attn_v = cats.iter().filter(|&&c| c == Category::AttnV).count() as u32;
    let (mut i_attn_v, mut i_ffn_down) = (0u32, 0u32);

    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by(|&a, &b| visit_key(tensors[a].name).cmp(&visit_key(tensors[b].name)));

    let mut types = vec![GgmlType::F32; tensors.len()];
    for i in order {
        let t = &tensors[i];
        if !allows_quantization(t.name, t.n_dims) {
            types[i] = t.ggml_type;
            continue;
        }
        if !is_quantized_target {
            types[i] = default_type;
            continue;
        }
        let ne0 = t.shape[0];
        let mut ty = default_type;
        match cats[i] {
            Category::Output | Category::TokenEmbd
                if cats[i] == Category::Output || has_tied_embeddings =>
            {
                if facts.is_falcon || !ne0.is_multiple_of(ty.block_size() as u64) {
                    ty = GgmlType::Q8_0;
                } else if ty != GgmlType::Q8_0 {
                    ty = GgmlType::Q6_K;
                }
            }
            Category::AttnV => {
                let more = matches!(target, QuantizeTarget::Q4_K_M | QuantizeTarget::Q5_K_M)
                    && use_more_bits(i_attn_v, n_attn_v);
                if more {
                    ty = GgmlType::Q6_K;
                }
                if facts.is_llama_70b && ty == GgmlType::Q4_K {
                    ty = GgmlType::Q5_K;
                }
                i_attn_v += 1;
            }
            Category::FfnDown => {
                let n_layer = facts.n_layer;
                let more = use_more_bits(i_ffn_down, n_layer);
                match target {
                    QuantizeTarget::Q4_K_M if facts.is_falcon => {
                        ty = if i_ffn_down < n_layer / 16 {
                            GgmlType::Q6_K
                        } else if more {
                            GgmlType::Q5_K
                        } else {
                            GgmlType::Q4_K
                        };
                    }
                    QuantizeTarget::Q4_K_M | QuantizeTarget::Q5_K_M if more => {
                        ty = GgmlType::Q6_K;
                    }
                    _ => {}
                }
                i_ffn_down += 1;
            }
            _ => {}
        }
        types[i] = fallback(ty, ne0);
    }
    types
}

/// The facts llama.cpp's rules need, from the file's metadata.
fn model_facts(g: &Gguf<'_>) -> Result<ModelFacts, ModelError> {
    let arch = g.architecture()?;
    let key = |k: &str| format!("{arch}.{k}");
    let n_layer = g.get_u32(&key("block_count"))?.unwrap_or(0);
    if g.get_u32(&key("expert_count"))?.unwrap_or(0) > 1 {
        return Err(ModelError::Option(format!(
            "{arch}: mixture-of-experts models are not supported by edgellm quantize"
        )));
    }
    let n_head = g.get_u32(&key("attention.head_count"))?.unwrap_or(0);
    let n_head_kv = g
        .get_u32(&key("attention.head_count_kv"))?
        .unwrap_or(n_head);
    Ok(ModelFacts {
        n_layer,
        is_falcon: arch == "falcon",
        is_llama_70b: arch == "llama" && n_layer == 80 && n_head != n_head_kv,
    })
}

/// What `quantize_file` wrote.
#[derive(Clone, Debug)]
pub struct QuantizeSummary {
    pub tensors: usize,
    pub bytes: u64,
}

/// Converts `input` to `target`, writing `output` (through a temporary name renamed into place,
/// so a reader never maps a half-written file). `progress(done, total)` is called per tensor.
pub fn quantize_file(
    input: &Path,
    output: &Path,
    target: impl Into<QuantizeTarget>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<QuantizeSummary, ModelError> {
    let target = target.into();
    let Some(file_type) = target.file_type() else {
        return Err(ModelError::Option(format!(
            "unsupported target {target} (supported: {})",
            QuantizeTarget::names()
        )));
    };
    let open_err = |path: &Path| {
        let path = path.display().to_string();
        move |source| ModelError::Open { path, source }
    };
    let map = MappedFile::open(input).map_err(open_err(input))?;
    let g = Gguf::parse(map.bytes())?;
    let facts = model_facts(&g)?;
    let ftype = MetaValueOwned::U32(file_type);

    let mut w = GgufWriter::new();
    for (k, v) in g.metadata() {
        let value = match *k {
            "general.file_type" => ftype.clone(),
            _ => MetaValueOwned::from(v),
        };
        w.add_metadata(*k, value)?;
    }
    if g.get("general.file_type").is_none() {
        w.add_metadata("general.file_type", ftype)?;
    }
    if g.get("general.quantization_version").is_none() {
        w.add_metadata("general.quantization_version", MetaValueOwned::U32(2))?;
    }
    let tensors = g.tensors();
    let types = plan_tensor_types(tensors, target, facts);
    for (t, &ty) in tensors.iter().zip(&types) {
        if ty != t.ggml_type && !quant::is_supported(t.ggml_type) {
            return Err(ModelError::UnsupportedType {
                name: t.name.to_string(),
                ty: t.ggml_type,
                role: "conversion",
            });
        }
        w.add_tensor(t.name, ty, t.dims())?;
    }

    let tmp = output.with_extension("partial");
    let file = std::fs::File::create(&tmp).map_err(open_err(&tmp))?;
    let mut row_f32: Vec<f32> = Vec::new();
    let mut row_out: Vec<u8> = Vec::new();
    let total = tensors.len();
    let written = w.write(file, |i, _plan, out: &mut dyn Write| {
        let src = &tensors[i];
        let ty = types[i];
        if ty == src.ggml_type {
            // Same type: llama-quantize copies the bytes unchanged.
            out.write_all(src.data)?;
        } else {
            let ne0 = src.shape[0];
            let in_row = src.ggml_type.row_bytes(ne0).unwrap_or(0) as usize;
            let out_row = ty.row_bytes(ne0).unwrap_or(0) as usize;
            row_f32.resize(ne0 as usize, 0.0);
            row_out.resize(out_row, 0);
            for r in src.data.chunks_exact(in_row.max(1)) {
                quant::dequantize_row(src.ggml_type, r, &mut row_f32)
                    .map_err(std::io::Error::other)?;
                quant::quantize_row(ty, &row_f32, &mut row_out).map_err(std::io::Error::other)?;
                out.write_all(&row_out)?;
            }
        }
        progress(i + 1, total);
        Ok(())
    });
    let bytes = match written {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.into());
        }
    };
    std::fs::rename(&tmp, output).map_err(open_err(output))?;
    Ok(QuantizeSummary {
        tensors: total,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, n_dims: u32, ne0: u64) -> TensorInfo<'_> {
        TensorInfo {
            name,
            ggml_type: GgmlType::Q4_1,
            shape: [ne0, if n_dims > 1 { 64 } else { 1 }, 1, 1],
            n_dims,
            offset: 0,
            data: &[],
        }
    }

    fn plan(names: &[(&str, u32, u64)], target: QuantizeTarget, n_layer: u32) -> Vec<GgmlType> {
        let tensors: Vec<TensorInfo> = names.iter().map(|&(n, d, e)| info(n, d, e)).collect();
        let facts = ModelFacts {
            n_layer,
            ..Default::default()
        };
        plan_tensor_types(&tensors, target, facts)
    }

    #[test]
    fn use_more_bits_matches_llama_cpp_for_30_layers() {
        // n/8 = 3, 7n/8 = 26: layers 0-2, 26-29 and every third from 5.
        let more: Vec<u32> = (0..30).filter(|&i| use_more_bits(i, 30)).collect();
        assert_eq!(more, [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]);
    }

    #[test]
    fn legacy_targets_follow_llama_quantize_for_smollm2() {
        let t = [
            ("blk.0.attn_norm.weight", 1, 576),
            ("token_embd.weight", 2, 576),
            ("blk.0.ffn_down.weight", 2, 1536),
        ];
        use GgmlType::*;
        let q4_0 = QuantizeTarget::Type(Q4_0);
        // Tied output projection: Q6_K, which 576-wide rows turn into Q8_0.
        assert_eq!(plan(&t, q4_0, 1), [Q4_1, Q8_0, Q4_0]);
        assert_eq!(plan(&t, QuantizeTarget::Type(F16), 1), [Q4_1, F16, F16]);
        assert_eq!(plan(&t, QuantizeTarget::Type(Q8_0), 1), [Q4_1, Q8_0, Q8_0]);
        // With a separate output.weight, token_embd takes the target type.
        let untied = [("output.weight", 2, 256), ("token_embd.weight", 2, 576)];
        assert_eq!(plan(&untied, q4_0, 1), [Q6_K, Q4_0]);
    }

    #[test]
    fn k_mixtures_give_more_bits_by_layer_and_fall_back_on_short_rows() {
        use GgmlType::*;
        let n = 8u32; // use_more_bits(i, 8): layers 0, 3, 6, 7
        let names: Vec<String> = (0..n)
            .flat_map(|l| {
                [
                    format!("blk.{l}.attn_v.weight"),
                    format!("blk.{l}.ffn_down.weight"),
                ]
            })
            .collect();
        // Listed in reverse so the plan must follow llama.cpp's visiting order, not the file's.
        let t: Vec<(&str, u32, u64)> = names.iter().rev().map(|s| (s.as_str(), 2, 512)).collect();
        let got = plan(&t, QuantizeTarget::Q4_K_M, n);
        let want: Vec<GgmlType> = (0..n)
            .rev()
            .flat_map(|l| {
                let ty = if [0, 3, 6, 7].contains(&l) {
                    Q6_K
                } else {
                    Q4_K
                };
                [ty, ty]
            })
            .collect();
        assert_eq!(got, want);
        let short = [
            ("blk.0.attn_q.weight", 2, 576),
            ("blk.0.attn_v.weight", 2, 576),
        ];
        assert_eq!(plan(&short, QuantizeTarget::Q4_K_M, 1), [Q5_0, Q8_0]);
        assert_eq!(plan(&short, QuantizeTarget::Q5_K_M, 1), [Q5_1, Q8_0]);
        assert_eq!(plan(&short, QuantizeTarget::Type(Q6_K), 1), [Q8_0, Q8_0]);
        assert_eq!(fallback(Q4_K, 48), F16);
    }

    #[test]
    fn target_names_and_file_types() {
        for t in QUANTIZE_TARGETS {
            assert_eq!(QuantizeTarget::from_name(&t.name().to_lowercase()), Some(t));
            assert!(t.file_type().is_some());
        }
        assert_eq!(QuantizeTarget::Q4_K_M.file_type(), Some(15));
        assert_eq!(QuantizeTarget::Q5_K_M.file_type(), Some(17));
        assert_eq!(QuantizeTarget::Type(GgmlType::Q6_K).file_type(), Some(18));
        assert_eq!(QuantizeTarget::from_name("Q4_K"), None);
    }
}
