//! Which type each tensor gets when a model is converted to a target type: llama-quantize's
//! choices for the formats edgellm writes, so `edgellm quantize` reproduces its files.

use std::io::Write;
use std::path::Path;

use edgellm_runtime::gguf::writer::{GgufWriter, MetaValueOwned};
use edgellm_runtime::gguf::Gguf;
use edgellm_runtime::mmap::MappedFile;
use edgellm_runtime::{quant, GgmlType};

use crate::error::ModelError;

/// Weight types `edgellm quantize` can write.
pub const QUANTIZE_TARGETS: [GgmlType; 5] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
];

/// llama.cpp's `general.file_type` (`llama_ftype`) for a target.
pub fn file_type(target: GgmlType) -> Option<u32> {
    match target {
        GgmlType::F32 => Some(0),
        GgmlType::F16 => Some(1),
        GgmlType::Q4_0 => Some(2),
        GgmlType::Q4_1 => Some(3),
        GgmlType::Q8_0 => Some(7),
        _ => None,
    }
}

/// The type tensor `name` (with `n_dims` dims, rows of `ne0`) gets for `target`.
/// `has_output` says whether the file has a separate `output.weight` (else `token_embd` is the
/// output projection too).
///
/// - 1-D tensors (norms, biases) stay F32, as llama-quantize keeps them.
/// - The output projection (`output.weight`, or a tied `token_embd.weight`) gets llama.cpp's
///   Q6_K for 4- and 5-bit targets; rows that are not a multiple of 256 (SmolLM2's 576) fall
///   back to Q8_0 there, and until edgellm writes K-quants every such tensor takes that
///   fallback.
/// - Everything else takes the target type.
pub fn tensor_type(
    name: &str,
    n_dims: u32,
    ne0: u64,
    target: GgmlType,
    has_output: bool,
) -> GgmlType {
    if n_dims < 2 {
        return GgmlType::F32;
    }
    let is_output = name == "output.weight" || (!has_output && name == "token_embd.weight");
    if is_output
        && matches!(
            target,
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1
        )
    {
        // Q6_K when ne0 % 256 == 0 in llama.cpp; Q8_0 is its fallback and ours.
        let _ = ne0;
        return GgmlType::Q8_0;
    }
    if target.row_bytes(ne0).is_none() {
        // Rows that do not divide into the target's blocks stay as wide as F16.
        return GgmlType::F16;
    }
    target
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
    target: GgmlType,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<QuantizeSummary, ModelError> {
    if !QUANTIZE_TARGETS.contains(&target) {
        return Err(ModelError::Option(format!(
            "unsupported target type {target} (supported: F32, F16, Q8_0, Q4_0, Q4_1)"
        )));
    }
    let open_err = |path: &Path| {
        let path = path.display().to_string();
        move |source| ModelError::Open { path, source }
    };
    let map = MappedFile::open(input).map_err(open_err(input))?;
    let g = Gguf::parse(map.bytes())?;
    let has_output = g.tensor("output.weight").is_some();
    let ftype = MetaValueOwned::U32(file_type(target).unwrap_or(0));

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
    let mut types = Vec::with_capacity(tensors.len());
    for t in tensors {
        let ty = tensor_type(t.name, t.n_dims, t.shape[0], target, has_output);
        if ty != t.ggml_type && !quant::is_supported(t.ggml_type) {
            return Err(ModelError::UnsupportedType {
                name: t.name.to_string(),
                ty: t.ggml_type,
                role: "conversion",
            });
        }
        w.add_tensor(t.name, ty, t.dims())?;
        types.push(ty);
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

    #[test]
    fn follows_llama_quantize_for_smollm2() {
        assert_eq!(
            tensor_type("blk.0.attn_norm.weight", 1, 576, GgmlType::Q4_0, false),
            GgmlType::F32
        );
        assert_eq!(
            tensor_type("token_embd.weight", 2, 576, GgmlType::Q4_0, false),
            GgmlType::Q8_0
        );
        assert_eq!(
            tensor_type("token_embd.weight", 2, 576, GgmlType::Q4_0, true),
            GgmlType::Q4_0
        );
        assert_eq!(
            tensor_type("token_embd.weight", 2, 576, GgmlType::F16, false),
            GgmlType::F16
        );
        assert_eq!(
            tensor_type("blk.0.ffn_down.weight", 2, 1536, GgmlType::Q8_0, false),
            GgmlType::Q8_0
        );
    }
}
