//! Dumps of the forward pass's intermediate tensors, for finding where a result first differs
//! from llama.cpp's (compile with the `tensor-dump` feature and set `EDGELLM_DUMP=DIR`; without
//! the feature [`dump`] is an empty inline function). Each tensor is written as
//! `DIR/NAME-LAYER.bin` under the name llama.cpp's graph gives it (`attn_norm-0`, `Qcur-0`,
//! `kqv_out-0`, `ffn_out-0`, `l_out-0`, `result_norm`, ...): four little-endian i64 dimensions
//! (`width, rows, 1, 1`), then the f32 values, one row per token of the batch. The counterpart
//! for llama.cpp is `tools/reference/llama_tensor_dump.cpp`, and
//! `tools/reference/compare_dumps.py` lines the two up.

/// Writes `data` (`rows × width` values) as tensor `name` of layer `layer`, if dumping.
#[cfg(feature = "tensor-dump")]
pub(crate) fn dump(name: &str, layer: Option<usize>, data: &[f32], width: usize) {
    let Ok(dir) = std::env::var("EDGELLM_DUMP") else {
        return;
    };
    let path = match layer {
        Some(l) => format!("{dir}/{name}-{l}.bin"),
        None => format!("{dir}/{name}.bin"),
    };
    let rows = data.len() / width.max(1);
    let mut bytes = Vec::with_capacity(32 + 4 * data.len());
    for d in [width as i64, rows as i64, 1, 1] {
        bytes.extend_from_slice(&d.to_le_bytes());
    }
    for v in data {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    if let Err(e) = std::fs::write(&path, bytes) {
        log::warn!("tensor dump {path}: {e}");
    }
}

/// Does nothing: the `tensor-dump` feature is off.
#[cfg(not(feature = "tensor-dump"))]
#[inline(always)]
pub(crate) fn dump(_name: &str, _layer: Option<usize>, _data: &[f32], _width: usize) {}
