//! `Reader`: a borrowed little-endian cursor over untrusted GGUF bytes. Every read is bounds
//! checked and reports the offset it failed at; nothing is copied and nothing is allocated, so
//! a hostile length (2^63, `u64::MAX`) costs one comparison.

use super::GgufError;

/// A short read: `needed` bytes were asked for at `offset` but only `available` remained.
/// The parser turns it into [`GgufError::Truncated`] with a description of the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Short {
    pub offset: u64,
    pub needed: u64,
    pub available: u64,
}

impl Short {
    /// The error for this short read while reading `what` (e.g. "value of key 'general.name'").
    pub fn context(self, what: impl Into<String>) -> GgufError {
        GgufError::Truncated {
            what: what.into(),
            offset: self.offset,
            needed: self.needed,
            available: self.available,
        }
    }
}

/// A cursor over `bytes`; offsets in errors are relative to the start of `bytes`, plus `base`
/// (so a reader over an array's bytes still reports file offsets).
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    base: u64,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`, whose first byte is at file offset `base`.
    pub fn new(bytes: &'a [u8], base: u64) -> Reader<'a> {
        Reader {
            bytes,
            pos: 0,
            base,
        }
    }

    /// File offset of the next byte to read.
    pub fn offset(&self) -> u64 {
        // usize -> u64 never truncates on the platforms we build for (32 or 64 bit).
        self.base.saturating_add(self.pos as u64)
    }

    /// Bytes left to read.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// The next `n` bytes, or `Short` if fewer remain. `n` is file-controlled: it is compared
    /// with what remains before any conversion or arithmetic.
    pub fn take(&mut self, n: u64) -> Result<&'a [u8], Short> {
        let available = self.remaining();
        match usize::try_from(n) {
            Ok(len) if len <= available => {
                let out = &self.bytes[self.pos..self.pos + len];
                self.pos += len;
                Ok(out)
            }
            _ => Err(Short {
                offset: self.offset(),
                needed: n,
                available: available as u64,
            }),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Short> {
        let b = self.take(N as u64)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, Short> {
        Ok(self.array::<1>()?[0])
    }

    pub fn u16(&mut self) -> Result<u16, Short> {
        self.array().map(u16::from_le_bytes)
    }

    pub fn u32(&mut self) -> Result<u32, Short> {
        self.array().map(u32::from_le_bytes)
    }

    pub fn u64(&mut self) -> Result<u64, Short> {
        self.array().map(u64::from_le_bytes)
    }

    /// A GGUF string: u64 length, then that many bytes (not NUL-terminated). UTF-8 is checked
    /// by the caller, which knows what the string names.
    pub fn string_bytes(&mut self) -> Result<&'a [u8], Short> {
        let len = self.u64()?;
        self.take(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian_and_reports_offsets() {
        let bytes = [1u8, 0, 2, 0, 0, 0, 9];
        let mut r = Reader::new(&bytes, 100);
        assert_eq!(r.u16(), Ok(1));
        assert_eq!(r.u32(), Ok(2));
        assert_eq!(r.offset(), 106);
        assert_eq!(
            r.u32(),
            Err(Short {
                offset: 106,
                needed: 4,
                available: 1
            })
        );
        // A failed read consumes nothing.
        assert_eq!(r.u8(), Ok(9));
    }

    #[test]
    fn huge_lengths_do_not_overflow() {
        for len in [u64::MAX, 1u64 << 63, usize::MAX as u64] {
            let mut bytes = len.to_le_bytes().to_vec();
            bytes.extend_from_slice(b"abc");
            let mut r = Reader::new(&bytes, 0);
            let err = r.string_bytes().unwrap_err();
            assert_eq!(err.needed, len);
            assert_eq!(err.available, 3);
            assert_eq!(err.offset, 8);
        }
    }
}
