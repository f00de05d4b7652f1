//! `gguf::Gguf::parse`: the `&[u8] ─▶ Gguf` arrow. Owns the GGUF container format (v2 and v3,
//! little-endian): reading and validating the header, metadata and tensor infos of an untrusted
//! file, and handing out borrowed metadata values and tensor byte slices. It never copies tensor
//! data and never interprets it; [`writer`] owns the other direction.
//!
//! Layout: magic `GGUF`, u32 version, u64 tensor count, u64 kv count, the kvs (string key, u32
//! value type, value), the tensor infos (string name, u32 n_dims, u64 dims, u32 ggml type, u64
//! offset relative to the data section), padding to `general.alignment` (default 32), data.
//!
//! Everything a file controls is validated before it is used, and every failure names the key,
//! tensor or byte offset: a hostile file gets an `Err`, never a panic, an out-of-bounds read or
//! an allocation sized by the file.

mod metadata;
mod reader;
#[cfg(test)]
mod tests;
pub mod writer;

use std::collections::HashMap;
use std::fmt;

use thiserror::Error;

use crate::ggml_type::GgmlType;
use crate::tensor::TensorView;
use reader::Reader;

pub use metadata::{MetaArray, MetaArrayIter, MetaValue, ValueType, MAX_ARRAY_DEPTH};
pub use writer::{GgufWriter, MetaArrayOwned, MetaValueOwned, TensorPlan};

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// The version [`writer::GgufWriter`] writes.
pub const GGUF_VERSION: u32 = 3;
/// Data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The metadata key that overrides [`DEFAULT_ALIGNMENT`].
pub const KEY_ALIGNMENT: &str = "general.alignment";
/// Most dimensions a ggml tensor can have.
pub const MAX_DIMS: usize = 4;

/// A lower bound on one kv's encoding: u64 key length + u32 value type (the value adds more).
const MIN_KV_BYTES: u64 = 12;
/// Smallest encoding of one tensor info: u64 name length + u32 n_dims + u32 type + u64 offset.
const MIN_TENSOR_INFO_BYTES: u64 = 24;

/// What went wrong reading (or writing) a GGUF file. Each variant names the key, tensor or
/// byte offset involved.
#[derive(Debug, Error)]
pub enum GgufError {
    #[error("not a GGUF file: magic at offset 0 is {found:02x?}, expected \"GGUF\"")]
    BadMagic { found: Vec<u8> },
    #[error("{}", unsupported_version_message(*version))]
    UnsupportedVersion { version: u32 },
    #[error(
        "file truncated reading {what} at offset {offset}: needs {needed} bytes, {available} left"
    )]
    Truncated {
        what: String,
        offset: u64,
        needed: u64,
        available: u64,
    },
    #[error("header claims {count} {what}s at offset {offset}, but each needs at least {min_each} bytes and only {available} are left")]
    CountTooLarge {
        what: &'static str,
        count: u64,
        min_each: u64,
        offset: u64,
        available: u64,
    },
    #[error("key '{key}': array of {count} {elem_type} elements at offset {offset} cannot fit in the {available} bytes left")]
    ArrayTooLarge {
        key: String,
        elem_type: &'static str,
        count: u64,
        offset: u64,
        available: u64,
    },
    #[error("{what} at offset {offset} is not valid UTF-8")]
    InvalidUtf8 { what: String, offset: u64 },
    #[error("key '{key}': unknown value type {type_id} at offset {offset}")]
    UnknownValueType {
        key: String,
        type_id: u32,
        offset: u64,
    },
    #[error("key '{key}': bool byte {value} at offset {offset} is neither 0 nor 1")]
    InvalidBool { key: String, value: u8, offset: u64 },
    #[error("key '{key}': arrays nested deeper than {limit} levels at offset {offset}")]
    NestingTooDeep {
        key: String,
        limit: u32,
        offset: u64,
    },
    #[error("duplicate metadata key '{key}' at offset {offset}")]
    DuplicateKey { key: String, offset: u64 },
    #[error("key '{key}': expected {expected}, found {found}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("key '{key}': value {value} does not fit in {target}")]
    OutOfRange {
        key: String,
        value: i128,
        target: &'static str,
    },
    #[error("required metadata key '{key}' is missing")]
    MissingKey { key: String },
    #[error("key 'general.alignment': {alignment} is not a power of two (or is zero)")]
    BadAlignment { alignment: u64 },
    #[error("tensor '{tensor}': {n_dims} dimensions, at most 4 are allowed")]
    TooManyDims { tensor: String, n_dims: u64 },
    #[error("tensor '{tensor}': dimension {dim} is {value}, must be in 1..=2^63-1")]
    BadDim {
        tensor: String,
        dim: usize,
        value: u64,
    },
    #[error("tensor '{tensor}': shape {shape:?} of type {ggml_type} overflows its element or byte count")]
    SizeOverflow {
        tensor: String,
        shape: Vec<u64>,
        ggml_type: GgmlType,
    },
    #[error("tensor '{tensor}': unknown ggml type id {type_id} at offset {offset}")]
    UnknownGgmlType {
        tensor: String,
        type_id: u32,
        offset: u64,
    },
    #[error("tensor '{tensor}': row length {ne0} is not a multiple of the {ggml_type} block size {block_size}")]
    NotBlockMultiple {
        tensor: String,
        ggml_type: GgmlType,
        ne0: u64,
        block_size: usize,
    },
    #[error("duplicate tensor name '{tensor}'")]
    DuplicateTensor { tensor: String },
    #[error(
        "tensor '{tensor}': data offset {offset} is not a multiple of the alignment {alignment}"
    )]
    MisalignedOffset {
        tensor: String,
        offset: u64,
        alignment: u64,
    },
    #[error("tensor '{tensor}': data [{start} .. {end}) runs past end of file ({file_len} bytes)")]
    DataOutOfBounds {
        tensor: String,
        /// Absolute file offsets; `end` saturates at `u64::MAX` when it overflows.
        start: u64,
        end: u64,
        file_len: u64,
    },
    #[error("tensor '{second}' (data offset {second_start}) overlaps tensor '{first}' (data [{first_start} .. {first_end}))")]
    Overlap {
        first: String,
        first_start: u64,
        first_end: u64,
        second: String,
        second_start: u64,
    },
    #[error("tensor '{tensor}': shape {found:?} does not match the expected {expected:?}")]
    ShapeMismatch {
        tensor: String,
        expected: Vec<u64>,
        found: Vec<u64>,
    },
    #[error("tensor '{tensor}': {written} data bytes written, the header promised {expected}")]
    DataSizeMismatch {
        tensor: String,
        expected: u64,
        written: u64,
    },
    #[error("writing GGUF: {0}")]
    Io(#[from] std::io::Error),
}

fn unsupported_version_message(version: u32) -> String {
    match version {
        1 => "GGUF version 1 (32-bit counts) is not supported: convert the model again with a \
              current llama.cpp"
            .to_string(),
        v => format!("unsupported GGUF version {v}: only versions 2 and 3 are supported"),
    }
}

/// One tensor of the file: its description and exactly its data bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorInfo<'a> {
    pub name: &'a str,
    pub ggml_type: GgmlType,
    /// ggml order (`shape[0]` = ne0, the contiguous dimension); unused dims are 1.
    pub shape: [u64; 4],
    pub n_dims: u32,
    /// Offset of the data relative to the data section.
    pub offset: u64,
    /// The tensor's bytes, borrowed from the file.
    pub data: &'a [u8],
}

impl<'a> TensorInfo<'a> {
    /// Number of elements (validated at parse to fit in `usize`).
    pub fn n_elements(&self) -> u64 {
        self.shape.iter().product()
    }

    /// Number of data bytes.
    pub fn n_bytes(&self) -> usize {
        self.data.len()
    }

    /// The used dimensions, `n_dims` of them.
    pub fn dims(&self) -> &[u64] {
        &self.shape[..self.n_dims as usize]
    }

    /// A view for kernels and model loaders.
    pub fn view(&self) -> TensorView<'a> {
        // Every dim divides `n_elements`, checked to fit in usize at parse time.
        let shape = self.shape.map(|d| d as usize);
        TensorView::new(self.name, self.ggml_type, shape, self.n_dims, self.data)
    }
}

/// A parsed, validated GGUF file, borrowing everything from its bytes.
pub struct Gguf<'a> {
    version: u32,
    alignment: u64,
    data_offset: u64,
    /// In file order.
    metadata: Vec<(&'a str, MetaValue<'a>)>,
    key_index: HashMap<&'a str, usize>,
    /// In file order.
    tensors: Vec<TensorInfo<'a>>,
    tensor_index: HashMap<&'a str, usize>,
}

impl fmt::Debug for Gguf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gguf")
            .field("version", &self.version)
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// A tensor info as read, before its data range is resolved.
struct RawTensorInfo<'a> {
    name: &'a str,
    ggml_type: GgmlType,
    shape: [u64; 4],
    n_dims: u32,
    offset: u64,
    n_bytes: u64,
}

impl<'a> Gguf<'a> {
    /// Parses and fully validates a GGUF file (header, metadata, tensor infos, data ranges).
    pub fn parse(bytes: &'a [u8]) -> Result<Gguf<'a>, GgufError> {
        let mut r = Reader::new(bytes, 0);
        let magic = r.take(4).map_err(|s| s.context("magic"))?;
        if magic != GGUF_MAGIC {
            return Err(GgufError::BadMagic {
                found: magic.to_vec(),
            });
        }
        let version = r.u32().map_err(|s| s.context("version"))?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::UnsupportedVersion { version });
        }
        let tensor_count = r.u64().map_err(|s| s.context("tensor count"))?;
        let kv_count = r.u64().map_err(|s| s.context("metadata kv count"))?;
        let counts_end = r.offset();
        let available = r.remaining() as u64;
        // Bound both counts by the bytes left before sizing any Vec with them.
        let too_many = |what, count, min_each| GgufError::CountTooLarge {
            what,
            count,
            min_each,
            offset: counts_end,
            available,
        };
        let kv_min = kv_count
            .checked_mul(MIN_KV_BYTES)
            .ok_or_else(|| too_many("metadata kv", kv_count, MIN_KV_BYTES))?;
        if kv_min > available {
            return Err(too_many("metadata kv", kv_count, MIN_KV_BYTES));
        }
        let ti_min = tensor_count
            .checked_mul(MIN_TENSOR_INFO_BYTES)
            .ok_or_else(|| too_many("tensor info", tensor_count, MIN_TENSOR_INFO_BYTES))?;
        if ti_min > available.saturating_sub(kv_min) {
            return Err(too_many("tensor info", tensor_count, MIN_TENSOR_INFO_BYTES));
        }
        // Both fit in usize: each is at most `available`.
        let kv_count = kv_count as usize;
        let tensor_count = tensor_count as usize;

        let mut metadata = Vec::with_capacity(kv_count);
        let mut key_index = HashMap::with_capacity(kv_count);
        for i in 0..kv_count {
            let key_offset = r.offset();
            let key_bytes = r
                .string_bytes()
                .map_err(|s| s.context(format!("key of metadata kv #{i}")))?;
            let key = std::str::from_utf8(key_bytes).map_err(|_| GgufError::InvalidUtf8 {
                what: format!("key of metadata kv #{i}"),
                offset: key_offset,
            })?;
            let type_offset = r.offset();
            let type_id = r
                .u32()
                .map_err(|s| s.context(format!("value type of key '{key}'")))?;
            let ty = ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
                key: key.to_string(),
                type_id,
                offset: type_offset,
            })?;
            let value = metadata::read_value(&mut r, ty, key, 0)?;
            if key_index.insert(key, metadata.len()).is_some() {
                return Err(GgufError::DuplicateKey {
                    key: key.to_string(),
                    offset: key_offset,
                });
            }
            metadata.push((key, value));
        }

        let mut gguf = Gguf {
            version,
            alignment: DEFAULT_ALIGNMENT,
            data_offset: 0,
            metadata,
            key_index,
            tensors: Vec::new(),
            tensor_index: HashMap::new(),
        };
        if let Some(a) = gguf.get_u32(KEY_ALIGNMENT)? {
            if !a.is_power_of_two() {
                return Err(GgufError::BadAlignment {
                    alignment: a.into(),
                });
            }
            gguf.alignment = a.into();
        }
        let alignment = gguf.alignment;

        let mut raw_infos = Vec::with_capacity(tensor_count);
        let mut tensor_index = HashMap::with_capacity(tensor_count);
        for i in 0..tensor_count {
            let info = read_tensor_info(&mut r, i, alignment)?;
            if tensor_index.insert(info.name, raw_infos.len()).is_some() {
                return Err(GgufError::DuplicateTensor {
                    tensor: info.name.to_string(),
                });
            }
            raw_infos.push(info);
        }

        let file_len = bytes.len() as u64;
        // The data section starts at the next multiple of the alignment. With no tensors a file
        // may end before it (nothing is read there).
        let infos_end = r.offset();
        let data_offset = infos_end
            .checked_next_multiple_of(alignment)
            .unwrap_or(u64::MAX);

        let mut tensors = Vec::with_capacity(tensor_count);
        for info in &raw_infos {
            let start = data_offset.checked_add(info.offset);
            let end = start.and_then(|s| s.checked_add(info.n_bytes));
            let (Some(start), Some(end)) = (start, end) else {
                return Err(GgufError::DataOutOfBounds {
                    tensor: info.name.to_string(),
                    start: start.unwrap_or(u64::MAX),
                    end: u64::MAX,
                    file_len,
                });
            };
            if end > file_len {
                return Err(GgufError::DataOutOfBounds {
                    tensor: info.name.to_string(),
                    start,
                    end,
                    file_len,
                });
            }
            // In bounds of `bytes`, so both fit in usize.
            let data = &bytes[start as usize..end as usize];
            tensors.push(TensorInfo {
                name: info.name,
                ggml_type: info.ggml_type,
                shape: info.shape,
                n_dims: info.n_dims,
                offset: info.offset,
                data,
            });
        }

        // No two tensors may share bytes: sort by offset and compare neighbours.
        let mut by_offset: Vec<&TensorInfo<'a>> = tensors.iter().collect();
        by_offset.sort_by_key(|t| t.offset);
        for pair in by_offset.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let a_end = a.offset + a.data.len() as u64; // in bounds: checked above
            if b.offset < a_end {
                return Err(GgufError::Overlap {
                    first: a.name.to_string(),
                    first_start: a.offset,
                    first_end: a_end,
                    second: b.name.to_string(),
                    second_start: b.offset,
                });
            }
        }

        gguf.data_offset = data_offset;
        gguf.tensors = tensors;
        gguf.tensor_index = tensor_index;
        Ok(gguf)
    }

    /// Format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Data alignment in bytes (a power of two).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// File offset where the data section starts; tensor offsets are relative to it.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Every metadata kv, in file order.
    pub fn metadata(&self) -> &[(&'a str, MetaValue<'a>)] {
        &self.metadata
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&MetaValue<'a>> {
        self.key_index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn wrong_type(key: &str, expected: &'static str, found: &MetaValue<'_>) -> GgufError {
        GgufError::WrongType {
            key: key.to_string(),
            expected,
            found: found.type_name(),
        }
    }

    /// A string value; `Ok(None)` when absent, `WrongType` when not a string.
    pub fn get_str(&self, key: &str) -> Result<Option<&'a str>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::Str(s)) => Ok(Some(s)),
            Some(v) => Err(Self::wrong_type(key, "string", v)),
        }
    }

    fn get_integer<T: TryFrom<i128>>(
        &self,
        key: &str,
        target: &'static str,
    ) -> Result<Option<T>, GgufError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let i = v
            .as_integer()
            .ok_or_else(|| Self::wrong_type(key, target, v))?;
        T::try_from(i).map(Some).map_err(|_| GgufError::OutOfRange {
            key: key.to_string(),
            value: i,
            target,
        })
    }

    /// An integer value of any integer type that fits in u32 (files write counts as u32, u64
    /// or i32); `OutOfRange` when it does not fit.
    pub fn get_u32(&self, key: &str) -> Result<Option<u32>, GgufError> {
        self.get_integer(key, "u32")
    }

    /// An integer value of any integer type that fits in u64.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        self.get_integer(key, "u64")
    }

    /// A float value, f32 or f64 (rounded to f32).
    pub fn get_f32(&self, key: &str) -> Result<Option<f32>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::F32(x)) => Ok(Some(*x)),
            Some(MetaValue::F64(x)) => Ok(Some(*x as f32)),
            Some(v) => Err(Self::wrong_type(key, "f32", v)),
        }
    }

    /// A bool value.
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(Self::wrong_type(key, "bool", v)),
        }
    }

    /// An array value.
    pub fn get_array(&self, key: &str) -> Result<Option<&MetaArray<'a>>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::Array(a)) => Ok(Some(a)),
            Some(v) => Err(Self::wrong_type(key, "array", v)),
        }
    }

    /// `general.architecture` (e.g. `"llama"`), which every model file must have.
    pub fn architecture(&self) -> Result<&'a str, GgufError> {
        const KEY: &str = "general.architecture";
        self.get_str(KEY)?.ok_or_else(|| GgufError::MissingKey {
            key: KEY.to_string(),
        })
    }

    /// Every tensor, in file order.
    pub fn tensors(&self) -> &[TensorInfo<'a>] {
        &self.tensors
    }

    /// The tensor called `name`, if present.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo<'a>> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }
}

/// Reads and validates tensor info `#index`: everything but the data range, which needs the
/// end of all infos.
fn read_tensor_info<'a>(
    r: &mut Reader<'a>,
    index: usize,
    alignment: u64,
) -> Result<RawTensorInfo<'a>, GgufError> {
    let name_offset = r.offset();
    let name_bytes = r
        .string_bytes()
        .map_err(|s| s.context(format!("name of tensor info #{index}")))?;
    let name = std::str::from_utf8(name_bytes).map_err(|_| GgufError::InvalidUtf8 {
        what: format!("name of tensor info #{index}"),
        offset: name_offset,
    })?;
    let short = |field: &'static str| {
        move |s: reader::Short| s.context(format!("{field} of tensor '{name}'"))
    };

    let n_dims = r.u32().map_err(short("n_dims"))?;
    if n_dims as usize > MAX_DIMS {
        return Err(GgufError::TooManyDims {
            tensor: name.to_string(),
            n_dims: n_dims.into(),
        });
    }
    let mut dims = [1u64; MAX_DIMS];
    for d in dims.iter_mut().take(n_dims as usize) {
        *d = r.u64().map_err(short("dimensions"))?;
    }
    let type_offset = r.offset();
    let type_id = r.u32().map_err(short("type"))?;
    let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownGgmlType {
        tensor: name.to_string(),
        type_id,
        offset: type_offset,
    })?;
    let offset = r.u64().map_err(short("data offset"))?;
    let (shape, n_bytes) = tensor_shape_bytes(name, ggml_type, &dims[..n_dims as usize])?;
    if offset % alignment != 0 {
        return Err(GgufError::MisalignedOffset {
            tensor: name.to_string(),
            offset,
            alignment,
        });
    }
    Ok(RawTensorInfo {
        name,
        ggml_type,
        shape,
        n_dims,
        offset,
        n_bytes,
    })
}

/// Validates a tensor's dims (ggml order, at most 4, each in `1..=i64::MAX`, ne0 a whole number
/// of blocks, element and byte counts without overflow and addressable by `usize`) and returns
/// the shape padded with 1s and the data size in bytes. Shared by the parser and the writer.
pub(crate) fn tensor_shape_bytes(
    name: &str,
    ggml_type: GgmlType,
    dims: &[u64],
) -> Result<([u64; 4], u64), GgufError> {
    if dims.len() > MAX_DIMS {
        return Err(GgufError::TooManyDims {
            tensor: name.to_string(),
            n_dims: dims.len() as u64,
        });
    }
    let mut shape = [1u64; MAX_DIMS];
    for (dim, (&value, s)) in dims.iter().zip(shape.iter_mut()).enumerate() {
        // ggml stores dims as int64: zero and "negative" are both invalid.
        if value == 0 || value > i64::MAX as u64 {
            return Err(GgufError::BadDim {
                tensor: name.to_string(),
                dim,
                value,
            });
        }
        *s = value;
    }
    let overflow = || GgufError::SizeOverflow {
        tensor: name.to_string(),
        shape: dims.to_vec(),
        ggml_type,
    };
    let n_elements = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(overflow)?;
    // Views index with usize: on 32-bit boards a tensor must be addressable.
    usize::try_from(n_elements).map_err(|_| overflow())?;
    let block_size = ggml_type.block_size();
    if shape[0] % block_size as u64 != 0 {
        return Err(GgufError::NotBlockMultiple {
            tensor: name.to_string(),
            ggml_type,
            ne0: shape[0],
            block_size,
        });
    }
    let n_bytes = ggml_type
        .row_bytes(shape[0])
        // The product of dims 1..4 divides `n_elements`, which did not overflow.
        .and_then(|row| row.checked_mul(shape[1] * shape[2] * shape[3]))
        .ok_or_else(overflow)?;
    Ok((shape, n_bytes))
}
