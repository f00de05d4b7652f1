//! `edgellm quantize IN OUT TYPE`: rewrites a GGUF file with its weights in another type
//! (llama-quantize's per-tensor choices; see `edgellm_models::quantize`).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use edgellm_models::quantize::quantize_file;
use edgellm_runtime::GgmlType;

use crate::progress;

#[derive(clap::Args)]
pub struct Args {
    /// Input GGUF file.
    pub input: PathBuf,
    /// Output GGUF file.
    pub output: PathBuf,
    /// Target type: F32, F16, Q8_0, Q4_0 or Q4_1.
    #[arg(value_name = "TYPE")]
    pub ty: String,
}

pub fn main(args: Args) -> Result<()> {
    let target = GgmlType::from_name(&args.ty).with_context(|| {
        format!(
            "unknown type '{}' (supported: F32, F16, Q8_0, Q4_0, Q4_1)",
            args.ty
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
        "wrote {} ({} tensors, {:.1} MiB, weights {target})",
        args.output.display(),
        summary.tensors,
        summary.bytes as f64 / 1048576.0
    );
    Ok(())
}
