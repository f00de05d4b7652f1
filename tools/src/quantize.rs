//! `edgellm quantize IN OUT TYPE`: rewrites a GGUF file as one of llama.cpp's file types, with
//! llama-quantize's per-tensor choices (see `edgellm_models::quantize`).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use edgellm_models::quantize::{quantize_file, QuantizeTarget};

use crate::progress;

#[derive(clap::Args)]
pub struct Args {
    /// Input GGUF file.
    pub input: PathBuf,
    /// Output GGUF file.
    pub output: PathBuf,
    /// Target file type: F32, F16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K_M, Q5_K_M or Q6_K
    /// (case-insensitive; llama-quantize's names and mixtures).
    #[arg(value_name = "TYPE")]
    pub ty: String,
}

pub fn main(args: Args) -> Result<()> {
    let target = QuantizeTarget::from_name(&args.ty).with_context(|| {
        format!(
            "unknown type '{}' (supported: {})",
            args.ty,
            QuantizeTarget::names()
        )
    })?;
    if args.output.exists() && args.input.canonicalize().ok() == args.output.canonicalize().ok() {
        bail!("the output must not be the input file (it is mapped while writing)");
    }
    let pb = progress::bar(0, "quantize");
    let summary = quantize_file(&args.input, &args.output, target, &mut |done, total| {
        pb.set_length(total as u64);
        pb.set_position(done as u64);
    })
    .with_context(|| format!("quantizing {} to {target}", args.input.display()))?;
    pb.finish_and_clear();
    eprintln!(
        "wrote {} ({} tensors, {:.1} MiB, {target})",
        args.output.display(),
        summary.tensors,
        summary.bytes as f64 / 1048576.0
    );
    Ok(())
}
