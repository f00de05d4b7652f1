//! `GgufWriter`: the `Gguf` arrow run backwards, used by `edgellm quantize`. Owns encoding a
//! GGUF v3 file: metadata and tensor descriptions are collected first, then the header and
//! tensor infos are written from the tensors' sizes, then each tensor's data is streamed from a
//! callback, so no more than one tensor need be in memory. Padding follows gguf-py: zeros up to
//! the alignment after the tensor infos and after every tensor.

use std::collections::HashSet;
use std::io::{self, BufWriter, Write};

use crate::ggml_type::GgmlType;

use super::{
    tensor_shape_bytes, GgufError, MetaArray, MetaValue, ValueType, DEFAULT_ALIGNMENT, GGUF_MAGIC,
    GGUF_VERSION, KEY_ALIGNMENT,
};

/// An owned metadata value, to write.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValueOwned {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    Array(MetaArrayOwned),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// An owned metadata array, one variant per element type. Arrays of arrays may mix element
/// types, as the format allows; parsers reject nesting deeper than
/// [`super::MAX_ARRAY_DEPTH`].
#[derive(Clone, Debug, PartialEq)]
pub enum MetaArrayOwned {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    Str(Vec<String>),
    Array(Vec<MetaArrayOwned>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

impl MetaValueOwned {
    /// The value's type.
    pub fn value_type(&self) -> ValueType {
        match self {
            MetaValueOwned::U8(_) => ValueType::U8,
            MetaValueOwned::I8(_) => ValueType::I8,
            MetaValueOwned::U16(_) => ValueType::U16,
            MetaValueOwned::I16(_) => ValueType::I16,
            MetaValueOwned::U32(_) => ValueType::U32,
            MetaValueOwned::I32(_) => ValueType::I32,
            MetaValueOwned::F32(_) => ValueType::F32,
            MetaValueOwned::Bool(_) => ValueType::Bool,
            MetaValueOwned::Str(_) => ValueType::Str,
            MetaValueOwned::Array(_) => ValueType::Array,
            MetaValueOwned::U64(_) => ValueType::U64,
            MetaValueOwned::I64(_) => ValueType::I64,
            MetaValueOwned::F64(_) => ValueType::F64,
        }
    }
}

impl MetaArrayOwned {
    /// Element type.
    pub fn elem_type(&self) -> ValueType {
        match self {
            MetaArrayOwned::U8(_) => ValueType::U8,
            MetaArrayOwned::I8(_) => ValueType::I8,
            MetaArrayOwned::U16(_) => ValueType::U16,
            MetaArrayOwned::I16(_) => ValueType::I16,
            MetaArrayOwned::U32(_) => ValueType::U32,
            MetaArrayOwned::I32(_) => ValueType::I32,
            MetaArrayOwned::F32(_) => ValueType::F32,
            MetaArrayOwned::Bool(_) => ValueType::Bool,
            MetaArrayOwned::Str(_) => ValueType::Str,
            MetaArrayOwned::Array(_) => ValueType::Array,
            MetaArrayOwned::U64(_) => ValueType::U64,
            MetaArrayOwned::I64(_) => ValueType::I64,
            MetaArrayOwned::F64(_) => ValueType::F64,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            MetaArrayOwned::U8(v) => v.len(),
            MetaArrayOwned::I8(v) => v.len(),
            MetaArrayOwned::U16(v) => v.len(),
            MetaArrayOwned::I16(v) => v.len(),
            MetaArrayOwned::U32(v) => v.len(),
            MetaArrayOwned::I32(v) => v.len(),
            MetaArrayOwned::F32(v) => v.len(),
            MetaArrayOwned::Bool(v) => v.len(),
            MetaArrayOwned::Str(v) => v.len(),
            MetaArrayOwned::Array(v) => v.len(),
            MetaArrayOwned::U64(v) => v.len(),
            MetaArrayOwned::I64(v) => v.len(),
            MetaArrayOwned::F64(v) => v.len(),
        }
    }

    /// True when the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<&MetaValue<'_>> for MetaValueOwned {
    /// Copies a value read from a file (how `quantize` carries metadata over).
    fn from(v: &MetaValue<'_>) -> MetaValueOwned {
        match *v {
            MetaValue::U8(x) => MetaValueOwned::U8(x),
            MetaValue::I8(x) => MetaValueOwned::I8(x),
            MetaValue::U16(x) => MetaValueOwned::U16(x),
            MetaValue::I16(x) => MetaValueOwned::I16(x),
            MetaValue::U32(x) => MetaValueOwned::U32(x),
            MetaValue::I32(x) => MetaValueOwned::I32(x),
            MetaValue::F32(x) => MetaValueOwned::F32(x),
            MetaValue::Bool(x) => MetaValueOwned::Bool(x),
            MetaValue::Str(s) => MetaValueOwned::Str(s.to_string()),
            MetaValue::Array(ref a) => MetaValueOwned::Array(a.into()),
            MetaValue::U64(x) => MetaValueOwned::U64(x),
            MetaValue::I64(x) => MetaValueOwned::I64(x),
            MetaValue::F64(x) => MetaValueOwned::F64(x),
        }
    }
}

impl From<&MetaArray<'_>> for MetaArrayOwned {
    fn from(a: &MetaArray<'_>) -> MetaArrayOwned {
        // Collects the elements of one variant; the parser guarantees every element of `a` has
        // the array's element type, so nothing is dropped.
        macro_rules! collect {
            ($variant:ident, $map:expr) => {
                MetaArrayOwned::$variant(a.iter().filter_map($map).collect())
            };
        }
        match a.elem_type() {
            ValueType::U8 => collect!(U8, |v| match v {
                MetaValue::U8(x) => Some(x),
                _ => None,
            }),
            ValueType::I8 => collect!(I8, |v| match v {
                MetaValue::I8(x) => Some(x),
                _ => None,
            }),
            ValueType::U16 => collect!(U16, |v| match v {
                MetaValue::U16(x) => Some(x),
                _ => None,
            }),
            ValueType::I16 => collect!(I16, |v| match v {
                MetaValue::I16(x) => Some(x),
                _ => None,
            }),
            ValueType::U32 => collect!(U32, |v| match v {
                MetaValue::U32(x) => Some(x),
                _ => None,
            }),
            ValueType::I32 => collect!(I32, |v| match v {
                MetaValue::I32(x) => Some(x),
                _ => None,
            }),
            ValueType::F32 => collect!(F32, |v| match v {
                MetaValue::F32(x) => Some(x),
                _ => None,
            }),
            ValueType::Bool => collect!(Bool, |v| match v {
                MetaValue::Bool(x) => Some(x),
                _ => None,
            }),
            ValueType::Str => collect!(Str, |v| match v {
                MetaValue::Str(x) => Some(x.to_string()),
                _ => None,
            }),
            ValueType::Array => collect!(Array, |v| match v {
                MetaValue::Array(x) => Some(MetaArrayOwned::from(&x)),
                _ => None,
            }),
            ValueType::U64 => collect!(U64, |v| match v {
                MetaValue::U64(x) => Some(x),
                _ => None,
            }),
            ValueType::I64 => collect!(I64, |v| match v {
                MetaValue::I64(x) => Some(x),
                _ => None,
            }),
            ValueType::F64 => collect!(F64, |v| match v {
                MetaValue::F64(x) => Some(x),
                _ => None,
            }),
        }
    }
}

impl From<u32> for MetaValueOwned {
    fn from(x: u32) -> Self {
        MetaValueOwned::U32(x)
    }
}

impl From<f32> for MetaValueOwned {
    fn from(x: f32) -> Self {
        MetaValueOwned::F32(x)
    }
}

impl From<bool> for MetaValueOwned {
    fn from(x: bool) -> Self {
        MetaValueOwned::Bool(x)
    }
}

impl From<&str> for MetaValueOwned {
    fn from(x: &str) -> Self {
        MetaValueOwned::Str(x.to_string())
    }
}

impl From<String> for MetaValueOwned {
    fn from(x: String) -> Self {
        MetaValueOwned::Str(x)
    }
}

/// One tensor to write: its description and data size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorPlan {
    pub name: String,
    pub ggml_type: GgmlType,
    /// ggml order, as given (1 to 4 dims).
    pub dims: Vec<u64>,
    /// Exactly how many data bytes the callback must write.
    pub n_bytes: u64,
}

/// Collects metadata and tensor descriptions, then writes a GGUF v3 file.
#[derive(Clone, Debug, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, MetaValueOwned)>,
    keys: HashSet<String>,
    tensors: Vec<TensorPlan>,
    names: HashSet<String>,
    alignment: Option<u64>,
}

impl GgufWriter {
    /// An empty file description.
    pub fn new() -> GgufWriter {
        GgufWriter::default()
    }

    /// Adds a metadata kv; kvs are written in the order added. `general.alignment` must be a
    /// u32 power of two and sets the data alignment.
    pub fn add_metadata(
        &mut self,
        key: impl Into<String>,
        value: impl Into<MetaValueOwned>,
    ) -> Result<(), GgufError> {
        let key = key.into();
        let value = value.into();
        if key == KEY_ALIGNMENT {
            let MetaValueOwned::U32(a) = value else {
                return Err(GgufError::WrongType {
                    key,
                    expected: "u32",
                    found: value.value_type().name(),
                });
            };
            if !a.is_power_of_two() {
                return Err(GgufError::BadAlignment {
                    alignment: a.into(),
                });
            }
            self.alignment = Some(a.into());
        }
        if !self.keys.insert(key.clone()) {
            return Err(GgufError::DuplicateKey { key, offset: 0 });
        }
        self.metadata.push((key, value));
        Ok(())
    }

    /// Adds a tensor of `ggml_type` with `dims` (ggml order); tensors are written in the order
    /// added. Validates the shape the way the parser will.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        ggml_type: GgmlType,
        dims: &[u64],
    ) -> Result<(), GgufError> {
        let name = name.into();
        let (_, n_bytes) = tensor_shape_bytes(&name, ggml_type, dims)?;
        if !self.names.insert(name.clone()) {
            return Err(GgufError::DuplicateTensor { tensor: name });
        }
        self.tensors.push(TensorPlan {
            name,
            ggml_type,
            dims: dims.to_vec(),
            n_bytes,
        });
        Ok(())
    }

    /// The tensors added so far, in order.
    pub fn tensors(&self) -> &[TensorPlan] {
        &self.tensors
    }

    /// Data alignment the file will use.
    pub fn alignment(&self) -> u64 {
        self.alignment.unwrap_or(DEFAULT_ALIGNMENT)
    }

    /// Writes the file to `out`. `data(i, plan, sink)` is called once per tensor, in order, and
    /// must write exactly `plan.n_bytes` bytes of tensor `i` to `sink`. Returns the file size.
    pub fn write<W: Write>(
        &self,
        out: W,
        mut data: impl FnMut(usize, &TensorPlan, &mut dyn Write) -> io::Result<()>,
    ) -> Result<u64, GgufError> {
        let alignment = self.alignment();
        let mut w = CountingWriter {
            inner: BufWriter::new(out),
            count: 0,
        };
        w.write_all(&GGUF_MAGIC)?;
        w.write_all(&GGUF_VERSION.to_le_bytes())?;
        w.write_all(&(self.tensors.len() as u64).to_le_bytes())?;
        w.write_all(&(self.metadata.len() as u64).to_le_bytes())?;
        for (key, value) in &self.metadata {
            write_str(&mut w, key)?;
            w.write_all(&value.value_type().id().to_le_bytes())?;
            write_value(&mut w, value)?;
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            write_str(&mut w, &t.name)?;
            w.write_all(&(t.dims.len() as u32).to_le_bytes())?;
            for d in &t.dims {
                w.write_all(&d.to_le_bytes())?;
            }
            w.write_all(&t.ggml_type.id().to_le_bytes())?;
            w.write_all(&offset.to_le_bytes())?;
            offset = offset
                .checked_add(t.n_bytes)
                .and_then(|end| end.checked_next_multiple_of(alignment))
                .ok_or_else(|| GgufError::SizeOverflow {
                    tensor: t.name.clone(),
                    shape: t.dims.clone(),
                    ggml_type: t.ggml_type,
                })?;
        }
        pad(&mut w, alignment)?;
        for (i, t) in self.tensors.iter().enumerate() {
            let start = w.count;
            data(i, t, &mut w)?;
            let written = w.count - start;
            if written != t.n_bytes {
                return Err(GgufError::DataSizeMismatch {
                    tensor: t.name.clone(),
                    expected: t.n_bytes,
                    written,
                });
            }
            pad(&mut w, alignment)?;
        }
        w.flush()?;
        Ok(w.count)
    }
}

/// A writer that counts the bytes through it (the file position, for padding).
struct CountingWriter<W: Write> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Zeros up to the next multiple of `alignment`.
fn pad<W: Write>(w: &mut CountingWriter<W>, alignment: u64) -> io::Result<()> {
    const ZEROS: [u8; 64] = [0; 64];
    let mut left = w.count.next_multiple_of(alignment) - w.count;
    while left > 0 {
        let n = left.min(ZEROS.len() as u64) as usize;
        w.write_all(&ZEROS[..n])?;
        left -= n as u64;
    }
    Ok(())
}

fn write_str(w: &mut impl Write, s: &str) -> io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn write_value(w: &mut impl Write, v: &MetaValueOwned) -> io::Result<()> {
    match v {
        MetaValueOwned::U8(x) => w.write_all(&x.to_le_bytes()),
        MetaValueOwned::I8(x) => w.write_all(&x.to_le_bytes()),
        MetaValueOwned::U16(x) => w.write_all(&x.to_le_bytes()),
        MetaValueOwned::I16(x) => w.write_all(&x.to_le_bytes()),
        MetaValueOwned::U32(x) => w.write_all(&x.to_le_bytes()),
        MetaValueOwned::I32(x) => w.write_all(&x.to_le_bytes()),
        MetaValueOwned::F32(x) => w.write_all(&x.to_le_bytes()),
        MetaValueOwned::Bool(x) => w.write_all(&[u8::from(*x)]),
        MetaValueOwned::Str(s) => write_str(w, s),
        MetaValueOwned::Array(a) => write_array(w, a),
        MetaValueOwned::U64(x) => w.write_all(&x.to_le_bytes()),
        MetaValueOwned::I64(x) => w.write_all(&x.to_le_bytes()),
        MetaValueOwned::F64(x) => w.write_all(&x.to_le_bytes()),
    }
}

/// Element type, count, elements.
fn write_array(w: &mut impl Write, a: &MetaArrayOwned) -> io::Result<()> {
    w.write_all(&a.elem_type().id().to_le_bytes())?;
    w.write_all(&(a.len() as u64).to_le_bytes())?;
    macro_rules! each_le {
        ($v:expr) => {{
            for x in $v {
                w.write_all(&x.to_le_bytes())?;
            }
            Ok(())
        }};
    }
    match a {
        MetaArrayOwned::U8(v) => w.write_all(v),
        MetaArrayOwned::I8(v) => each_le!(v),
        MetaArrayOwned::U16(v) => each_le!(v),
        MetaArrayOwned::I16(v) => each_le!(v),
        MetaArrayOwned::U32(v) => each_le!(v),
        MetaArrayOwned::I32(v) => each_le!(v),
        MetaArrayOwned::F32(v) => each_le!(v),
        MetaArrayOwned::Bool(v) => each_le!(v.iter().map(|&b| u8::from(b))),
        MetaArrayOwned::Str(v) => {
            for s in v {
                write_str(w, s)?;
            }
            Ok(())
        }
        MetaArrayOwned::Array(v) => {
            for inner in v {
                write_array(w, inner)?;
            }
            Ok(())
        }
        MetaArrayOwned::U64(v) => each_le!(v),
        MetaArrayOwned::I64(v) => each_le!(v),
        MetaArrayOwned::F64(v) => each_le!(v),
    }
}
