//! `edgellm list`: the model cards, ollama-style, and which of them are in the models folder
//! (size on disk, and whether the file is the card's, checked by size and sha256).

use std::path::PathBuf;

use anyhow::Result;
use edgellm_models::cards::CARDS;
use serde_json::json;

use crate::pull::{check_file, models_dir, source_label, LocalFile};

#[derive(clap::Args)]
pub struct Args {
    /// Models folder (default: $EDGELLM_MODELS, else ./models/gguf).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// One JSON array, an object per card.
    #[arg(long)]
    pub json: bool,
}

fn size_label(bytes: Option<u64>) -> String {
    match bytes {
        Some(b) if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        Some(b) => format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64),
        None => "?".to_string(),
    }
}

pub fn main(args: Args) -> Result<()> {
    let dir = models_dir(args.dir.as_deref());
    let mut rows = Vec::with_capacity(CARDS.len());
    for card in CARDS {
        let local = check_file(card, &dir.join(card.file_name))?;
        rows.push((card, local));
    }
    if args.json {
        let out: Vec<_> = rows
            .iter()
            .map(|(c, local)| {
                let (sha_local, why) = match local {
                    LocalFile::Unpinned { sha256, .. } => (Some(sha256.clone()), None),
                    LocalFile::Mismatch { sha256, why, .. } => (sha256.clone(), Some(why.clone())),
                    _ => (None, None),
                };
                json!({
                    "name": c.name,
                    "architecture": c.architecture,
                    "runs_here": c.runs_here(),
                    "file": dir.join(c.file_name).display().to_string(),
                    "size_bytes": c.size_bytes,
                    "sha256": c.sha256,
                    "license": c.license,
                    "source": source_label(c),
                    "boards": c.boards,
                    "context": c.context,
                    "chat": c.chat,
                    "present": local.size().is_some(),
                    "local_size_bytes": local.size(),
                    "local_state": local.label(),
                    "local_sha256": sha_local,
                    "mismatch": why,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{:<30} {:<7} {:>9} {:>6} {:<5} {:<10} BOARDS",
        "NAME", "ARCH", "SIZE", "CTX", "CHAT", "LOCAL"
    );
    for (c, local) in &rows {
        let arch = if c.runs_here() {
            c.architecture.to_string()
        } else {
            format!("{}*", c.architecture)
        };
        println!(
            "{:<30} {:<7} {:>9} {:>6} {:<5} {:<10} {}",
            c.name,
            arch,
            size_label(local.size().or(c.size_bytes)),
            c.context,
            if c.chat { "yes" } else { "no" },
            local.label(),
            c.boards.join(",")
        );
    }
    println!("models folder: {}", dir.display());
    if rows.iter().any(|(c, _)| !c.runs_here()) {
        println!("* this build of edgellm cannot run that architecture yet");
    }
    if rows.iter().any(|(c, _)| c.sha256.is_none()) {
        println!("size ? and LOCAL unpinned: no checksum pinned for that card (pull prints the sha256 it computes)");
    }
    for (c, local) in &rows {
        if let LocalFile::Mismatch { why, .. } = local {
            println!(
                "{}: the local file is not the card's ({why}); `edgellm pull {}` replaces it",
                c.name, c.name
            );
        }
    }
    Ok(())
}
