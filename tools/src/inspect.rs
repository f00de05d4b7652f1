//! `edgellm inspect`: what a GGUF file holds, read from the map without loading weights.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use edgellm_runtime::gguf::{Gguf, MetaValue};
use edgellm_runtime::mmap::MappedFile;
use serde_json::{json, Value};

#[derive(clap::Args)]
pub struct Args {
    /// GGUF model file.
    pub model: PathBuf,
    /// One JSON object: architecture, metadata, tensors, mapped_bytes.
    #[arg(long)]
    pub json: bool,
}

/// A metadata value as JSON (arrays in full).
pub fn meta_json(v: &MetaValue<'_>) -> Value {
    match v {
        MetaValue::U8(x) => json!(x),
        MetaValue::I8(x) => json!(x),
        MetaValue::U16(x) => json!(x),
        MetaValue::I16(x) => json!(x),
        MetaValue::U32(x) => json!(x),
        MetaValue::I32(x) => json!(x),
        MetaValue::U64(x) => json!(x),
        MetaValue::I64(x) => json!(x),
        MetaValue::F32(x) => json!(x),
        MetaValue::F64(x) => json!(x),
        MetaValue::Bool(x) => json!(x),
        MetaValue::Str(s) => json!(s),
        MetaValue::Array(a) => Value::Array(a.iter().map(|e| meta_json(&e)).collect()),
    }
}

/// A metadata value in one short line for the human report.
fn meta_short(v: &MetaValue<'_>) -> String {
    match v {
        MetaValue::Str(s) => {
            let one_line: String = s
                .chars()
                .take(60)
                .map(|c| if c == '\n' { ' ' } else { c })
                .collect();
            if s.chars().count() > 60 {
                format!("{one_line:?}... ({} bytes)", s.len())
            } else {
                format!("{one_line:?}")
            }
        }
        MetaValue::Array(a) => {
            let head: Vec<String> = a.iter().take(4).map(|e| meta_short(&e)).collect();
            format!(
                "[{}{}] ({} x {})",
                head.join(", "),
                if a.len() > 4 { ", ..." } else { "" },
                a.len(),
                a.elem_type().name()
            )
        }
        other => meta_json(other).to_string(),
    }
}

pub fn main(args: Args) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out_w = std::io::BufWriter::new(stdout.lock());
    let map = MappedFile::open(&args.model)
        .with_context(|| format!("opening {}", args.model.display()))?;
    let g =
        Gguf::parse(map.bytes()).with_context(|| format!("parsing {}", args.model.display()))?;
    let arch = g.architecture().unwrap_or("(none)");
    if args.json {
        let metadata: serde_json::Map<String, Value> = g
            .metadata()
            .iter()
            .map(|(k, v)| (k.to_string(), meta_json(v)))
            .collect();
        let tensors: Vec<Value> = g
            .tensors()
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "type": t.ggml_type.name(),
                    "shape": t.dims(),
                    "offset": t.offset,
                    "bytes": t.n_bytes(),
                })
            })
            .collect();
        let out = json!({
            "architecture": arch,
            "version": g.version(),
            "alignment": g.alignment(),
            "metadata": metadata,
            "tensors": tensors,
            "mapped_bytes": map.len(),
        });
        writeln!(out_w, "{}", serde_json::to_string(&out)?)?;
        return Ok(());
    }

    writeln!(out_w, "file:          {}", args.model.display())?;
    writeln!(
        out_w,
        "gguf version:  {}   alignment: {}   mapped: {} bytes ({:.1} MiB)",
        g.version(),
        g.alignment(),
        map.len(),
        map.len() as f64 / 1048576.0
    )?;
    writeln!(out_w, "architecture:  {arch}")?;
    if let Ok(Some(name)) = g.get_str("general.name") {
        writeln!(out_w, "name:          {name}")?;
    }
    let hp_keys = [
        ("context_length", "context length"),
        ("block_count", "layers"),
        ("embedding_length", "embedding"),
        ("feed_forward_length", "feed-forward"),
        ("attention.head_count", "heads"),
        ("attention.head_count_kv", "kv heads"),
        ("rope.dimension_count", "rope dims"),
        ("rope.freq_base", "rope base"),
        ("attention.layer_norm_rms_epsilon", "rms eps"),
    ];
    for (k, label) in hp_keys {
        if let Some(v) = g.get(&format!("{arch}.{k}")) {
            writeln!(out_w, "  {label:<15}{}", meta_short(v))?;
        }
    }
    let tok_model = g
        .get_str("tokenizer.ggml.model")
        .ok()
        .flatten()
        .unwrap_or("(none)");
    let tok_pre = g
        .get_str("tokenizer.ggml.pre")
        .ok()
        .flatten()
        .unwrap_or("default");
    let n_vocab = g
        .get_array("tokenizer.ggml.tokens")
        .ok()
        .flatten()
        .map_or(0, |a| a.len());
    writeln!(
        out_w,
        "tokenizer:     {tok_model} (pre: {tok_pre}), {n_vocab} tokens"
    )?;
    let tmpl = g.get_str("tokenizer.chat_template").ok().flatten();
    writeln!(
        out_w,
        "chat template: {}",
        tmpl.map_or(
            format!(
                "none ({} fallback)",
                edgellm_models::chat::Fallback::for_arch_name(arch).name()
            ),
            |t| format!("present ({} bytes)", t.len())
        )
    )?;

    writeln!(out_w, "\nmetadata ({} keys):", g.metadata().len())?;
    for (k, v) in g.metadata() {
        writeln!(out_w, "  {k:<45} {}", meta_short(v))?;
    }

    let mut by_type: BTreeMap<&str, (usize, u64, usize)> = BTreeMap::new();
    for t in g.tensors() {
        let e = by_type.entry(t.ggml_type.name()).or_default();
        e.0 += 1;
        e.1 += t.n_elements();
        e.2 += t.n_bytes();
    }
    writeln!(out_w, "\ntensors ({}), by type:", g.tensors().len())?;
    writeln!(
        out_w,
        "  {:<6} {:>7} {:>14} {:>14}",
        "type", "count", "elements", "bytes"
    )?;
    let mut total = 0;
    for (ty, (n, el, by)) in &by_type {
        writeln!(out_w, "  {ty:<6} {n:>7} {el:>14} {by:>14}")?;
        total += by;
    }
    writeln!(
        out_w,
        "  {:<6} {:>7} {:>14} {:>14}",
        "total",
        g.tensors().len(),
        "",
        total
    )?;
    writeln!(
        out_w,
        "\n  {:<32} {:<6} {:<22} {:>12} {:>10}",
        "name", "type", "shape", "offset", "bytes"
    )?;
    for t in g.tensors() {
        let shape = format!("{:?}", t.dims());
        writeln!(
            out_w,
            "  {:<32} {:<6} {:<22} {:>12} {:>10}",
            t.name,
            t.ggml_type.name(),
            shape,
            t.offset,
            t.n_bytes()
        )?;
    }
    out_w.flush()?;
    Ok(())
}
