//! `MappedFile`: the model file, memory-mapped read-only. This is the one place the map is made,
//! and the storage of every weight: tensors are views into it, never copies.
//!
//! The memory-map contract: the file must not be truncated or modified in place while mapped.
//! A file replaced by rename (the way `edgellm quantize`, package managers and `cp` to a new
//! name followed by `mv` work) is safe: the old inode stays mapped until dropped. A file truncated
//! in place can make later reads of the map fault (SIGBUS); the service documents this in
//! SECURITY.md and never writes model files in place.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

/// A read-only memory map of a whole file.
pub struct MappedFile {
    path: PathBuf,
    map: Mmap,
}

impl MappedFile {
    /// Maps `path` read-only.
    pub fn open(path: &Path) -> io::Result<MappedFile> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        if usize::try_from(len).is_err() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: file is {len} bytes, larger than this platform's address space",
                    path.display()
                ),
            ));
        }
        // SAFETY: the map is read-only and private to this process. The contract stated in the
        // module doc (the file is not truncated or modified in place while mapped) is what makes
        // the bytes stable; every consumer bounds-checks against `len()` before reading.
        let map = unsafe { Mmap::map(&file)? };
        #[cfg(unix)]
        {
            // Weights are read front to back once per token: tell the kernel so it reads ahead.
            let _ = map.advise(memmap2::Advice::WillNeed);
        }
        Ok(MappedFile {
            path: path.to_path_buf(),
            map,
        })
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The path the map was made from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True for an empty file.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
