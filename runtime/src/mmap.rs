//! `MappedFile`: the model file, memory-mapped read-only. This is the one place the map is made,
//! and the storage of every weight: tensors are views into it, never copies.
//!
//! The memory-map contract: the file must not be truncated or modified in place while mapped.
//! A file replaced by rename (the way `edgellm quantize`, package managers and `cp` to a new
//! name followed by `mv` work) is safe: the old inode stays mapped until dropped. A file truncated
//! in place can make later reads of the map fault (SIGBUS); the service documents this in
//! SECURITY.md and never writes model files in place.
//!
//! A file the process cannot map is an error, never a panic: [`MappedFile::open`] returns an
//! `io::Error` carrying a [`MapError`] (downcast it with [`MapError::of`]) that names the file
//! size and, on a 32-bit build, the address-space limit. Rust slices hold at most `isize::MAX`
//! bytes, so a 32-bit build (armv7, 32-bit Raspberry Pi OS) maps at most 2 GiB - 1 bytes in one
//! piece, and even below that a 3 GiB user address space shared with the heap and libraries may
//! have no hole big enough, which `mmap` reports as `ENOMEM`.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use thiserror::Error;

/// Why a file could not be mapped. [`MappedFile::open`] returns it inside an `io::Error` (so
/// callers that report open failures as I/O errors keep doing so); [`MapError::of`] gets it back.
#[derive(Debug, Error)]
pub enum MapError {
    /// The file is larger than one slice can be on this platform (`isize::MAX` bytes).
    #[error(
        "file is {size} bytes ({}), more than a {pointer_bits}-bit build can map (at most {limit} \
         bytes, {}){}",
        human_size(*size),
        human_size(*limit),
        use_64_bit_hint(*pointer_bits)
    )]
    TooLarge {
        size: u64,
        limit: u64,
        pointer_bits: u32,
    },
    /// `mmap` itself failed (on 32-bit typically `ENOMEM`: no address-space hole big enough).
    #[error(
        "cannot map the file ({size} bytes, {}): {os_error}{}",
        human_size(*size),
        use_64_bit_hint(usize::BITS)
    )]
    MapFailed { size: u64, os_error: io::Error },
}

impl MapError {
    /// The `MapError` inside an error returned by [`MappedFile::open`], if that is why it failed.
    pub fn of(err: &io::Error) -> Option<&MapError> {
        err.get_ref().and_then(|e| e.downcast_ref::<MapError>())
    }

    fn into_io(self) -> io::Error {
        let kind = match &self {
            MapError::TooLarge { .. } => io::ErrorKind::InvalidInput,
            MapError::MapFailed { os_error, .. } => os_error.kind(),
        };
        io::Error::new(kind, self)
    }
}

/// The advice a 32-bit user needs: the model fits a 64-bit build.
fn use_64_bit_hint(pointer_bits: u32) -> &'static str {
    if pointer_bits < 64 {
        "; a 32-bit process cannot hold this model: use a 64-bit OS and the aarch64 build, or a \
         smaller model"
    } else {
        ""
    }
}

/// `size` in GiB or MiB, for messages.
fn human_size(size: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if size >= 1 << 30 {
        format!("{:.2} GiB", size as f64 / (MIB * 1024.0))
    } else {
        format!("{:.1} MiB", size as f64 / MIB)
    }
}

/// The length to map, or `TooLarge` when `size` exceeds `limit` (the largest slice, `isize::MAX`
/// bytes on this platform; a parameter so the 32-bit check is tested on 64-bit hosts too).
fn checked_map_len(size: u64, limit: u64, pointer_bits: u32) -> Result<usize, MapError> {
    match usize::try_from(size) {
        Ok(len) if size <= limit => Ok(len),
        _ => Err(MapError::TooLarge {
            size,
            limit,
            pointer_bits,
        }),
    }
}

/// A read-only memory map of a whole file.
pub struct MappedFile {
    path: PathBuf,
    map: Mmap,
}

impl MappedFile {
    /// Maps `path` read-only. A file that cannot be mapped as one slice here yields an error
    /// carrying a [`MapError`].
    pub fn open(path: &Path) -> io::Result<MappedFile> {
        let file = File::open(path)?;
        let size = file.metadata()?.len();
        let len =
            checked_map_len(size, isize::MAX as u64, usize::BITS).map_err(MapError::into_io)?;
        // SAFETY: the map is read-only and private to this process. The contract stated in the
        // module doc (the file is not truncated or modified in place while mapped) is what makes
        // the bytes stable; every consumer bounds-checks against `len()` before reading. `len` is
        // the file's size and at most `isize::MAX`, so the map is a valid slice.
        let map = unsafe { memmap2::MmapOptions::new().len(len).map(&file) }
            .map_err(|os_error| MapError::MapFailed { size, os_error }.into_io())?;
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

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    /// A sparse file (it takes no disk) of `size` bytes that starts with a valid GGUF header
    /// (version 3, no tensors, one kv: `general.architecture = "llama"`); removed on drop.
    struct SparseGguf(PathBuf);

    impl SparseGguf {
        fn new(name: &str, size: u64) -> SparseGguf {
            use std::io::Write;
            let path = std::env::temp_dir()
                .join(format!("edgellm-mmap-{name}-{}.gguf", std::process::id()));
            let mut f = File::create(&path).unwrap();
            let key = b"general.architecture";
            let value = b"llama";
            let mut header = Vec::new();
            header.extend_from_slice(b"GGUF");
            header.extend_from_slice(&3u32.to_le_bytes());
            header.extend_from_slice(&0u64.to_le_bytes()); // tensors
            header.extend_from_slice(&1u64.to_le_bytes()); // kvs
            header.extend_from_slice(&(key.len() as u64).to_le_bytes());
            header.extend_from_slice(key);
            header.extend_from_slice(&8u32.to_le_bytes()); // string
            header.extend_from_slice(&(value.len() as u64).to_le_bytes());
            header.extend_from_slice(value);
            f.write_all(&header).unwrap();
            f.set_len(size).unwrap();
            SparseGguf(path)
        }
    }

    impl Drop for SparseGguf {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn a_file_larger_than_a_32_bit_slice_is_too_large_with_both_sizes_named() {
        let limit = i32::MAX as u64;
        assert_eq!(checked_map_len(limit, limit, 32).unwrap() as u64, limit);
        for size in [limit + 1, 5 * GIB, u64::MAX] {
            let err = checked_map_len(size, limit, 32).unwrap_err();
            assert!(
                matches!(err, MapError::TooLarge { size: s, limit: l, pointer_bits: 32 } if s == size && l == limit),
                "{err:?}"
            );
        }
        let msg = checked_map_len(5 * GIB, limit, 32).unwrap_err().to_string();
        for part in [
            "5368709120 bytes",
            "5.00 GiB",
            "32-bit",
            "2147483647 bytes",
            "64-bit OS",
        ] {
            assert!(msg.contains(part), "{msg:?} lacks {part:?}");
        }
    }

    #[test]
    fn the_map_error_survives_the_io_error_open_returns() {
        let io = MapError::TooLarge {
            size: 5 * GIB,
            limit: i32::MAX as u64,
            pointer_bits: 32,
        }
        .into_io();
        assert_eq!(io.kind(), io::ErrorKind::InvalidInput);
        assert!(matches!(MapError::of(&io), Some(MapError::TooLarge { .. })));
        assert!(io.to_string().contains("5368709120 bytes"), "{io}");
        assert!(MapError::of(&io::Error::from(io::ErrorKind::NotFound)).is_none());
    }

    /// On a 32-bit build (armv7 under qemu-arm in `make test`) a 5 GiB and a 2 GiB model file
    /// are refused with the typed error, before `mmap` is tried.
    #[cfg(target_pointer_width = "32")]
    #[test]
    fn open_refuses_files_beyond_the_32_bit_limit() {
        for (name, size) in [("5gib", 5 * GIB), ("2gib", 2 * GIB)] {
            let file = SparseGguf::new(name, size);
            let err = match MappedFile::open(&file.0) {
                Ok(_) => panic!("{size}-byte file mapped on a 32-bit build"),
                Err(e) => e,
            };
            match MapError::of(&err) {
                Some(MapError::TooLarge {
                    size: s,
                    limit,
                    pointer_bits: 32,
                }) => {
                    assert_eq!(*s, size);
                    assert_eq!(*limit, i32::MAX as u64);
                }
                other => panic!("expected TooLarge, got {other:?} ({err})"),
            }
            assert!(err.to_string().contains(&format!("{size} bytes")), "{err}");
        }
    }

    /// The same 5 GiB file maps on a 64-bit build and its header parses: the limit is the
    /// platform's, not the file's.
    #[cfg(target_pointer_width = "64")]
    #[test]
    fn open_maps_a_5_gib_file_on_64_bit() {
        let file = SparseGguf::new("5gib", 5 * GIB);
        let map = MappedFile::open(&file.0).unwrap();
        assert_eq!(map.len() as u64, 5 * GIB);
        let g = crate::gguf::Gguf::parse(map.bytes()).unwrap();
        assert_eq!(g.architecture().unwrap(), "llama");
    }
}
