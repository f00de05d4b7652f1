//! GGUF metadata values: `ValueType` (the on-disk type ids), `MetaValue` (one borrowed value)
//! and `MetaArray` (a zero-copy, lazily iterated array). Owns the parsing and validation of
//! values; arrays are validated once at parse time and then iterated without allocating.

use std::fmt;

use super::reader::Reader;
use super::GgufError;

/// Arrays may nest (an array of arrays); deeper than this is rejected so a hostile file cannot
/// exhaust the stack. llama.cpp's own files never nest at all.
pub const MAX_ARRAY_DEPTH: u32 = 8;

/// A GGUF metadata value type, numbered as in ggml's `enum gguf_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    Bool,
    Str,
    Array,
    U64,
    I64,
    F64,
}

impl ValueType {
    /// The type for an on-disk id, `None` for ids GGUF does not define.
    pub fn from_id(id: u32) -> Option<ValueType> {
        Some(match id {
            0 => ValueType::U8,
            1 => ValueType::I8,
            2 => ValueType::U16,
            3 => ValueType::I16,
            4 => ValueType::U32,
            5 => ValueType::I32,
            6 => ValueType::F32,
            7 => ValueType::Bool,
            8 => ValueType::Str,
            9 => ValueType::Array,
            10 => ValueType::U64,
            11 => ValueType::I64,
            12 => ValueType::F64,
            _ => return None,
        })
    }

    /// The on-disk id.
    pub fn id(self) -> u32 {
        match self {
            ValueType::U8 => 0,
            ValueType::I8 => 1,
            ValueType::U16 => 2,
            ValueType::I16 => 3,
            ValueType::U32 => 4,
            ValueType::I32 => 5,
            ValueType::F32 => 6,
            ValueType::Bool => 7,
            ValueType::Str => 8,
            ValueType::Array => 9,
            ValueType::U64 => 10,
            ValueType::I64 => 11,
            ValueType::F64 => 12,
        }
    }

    /// Encoded size of one value, `None` for the variable-length string and array.
    pub fn fixed_size(self) -> Option<u64> {
        match self {
            ValueType::U8 | ValueType::I8 | ValueType::Bool => Some(1),
            ValueType::U16 | ValueType::I16 => Some(2),
            ValueType::U32 | ValueType::I32 | ValueType::F32 => Some(4),
            ValueType::U64 | ValueType::I64 | ValueType::F64 => Some(8),
            ValueType::Str | ValueType::Array => None,
        }
    }

    /// Smallest encoding of one value: lets a count be checked against the bytes left before
    /// anything is read or allocated.
    fn min_size(self) -> u64 {
        match self {
            // u64 length (+ bytes).
            ValueType::Str => 8,
            // u32 element type + u64 count (+ elements).
            ValueType::Array => 12,
            fixed => fixed.fixed_size().unwrap_or(1),
        }
    }

    /// Name used in error messages (`"u32"`, `"string"`).
    pub fn name(self) -> &'static str {
        match self {
            ValueType::U8 => "u8",
            ValueType::I8 => "i8",
            ValueType::U16 => "u16",
            ValueType::I16 => "i16",
            ValueType::U32 => "u32",
            ValueType::I32 => "i32",
            ValueType::F32 => "f32",
            ValueType::Bool => "bool",
            ValueType::Str => "string",
            ValueType::Array => "array",
            ValueType::U64 => "u64",
            ValueType::I64 => "i64",
            ValueType::F64 => "f64",
        }
    }

    /// Name of an array of this element type, for error messages.
    pub fn array_name(self) -> &'static str {
        match self {
            ValueType::U8 => "array of u8",
            ValueType::I8 => "array of i8",
            ValueType::U16 => "array of u16",
            ValueType::I16 => "array of i16",
            ValueType::U32 => "array of u32",
            ValueType::I32 => "array of i32",
            ValueType::F32 => "array of f32",
            ValueType::Bool => "array of bool",
            ValueType::Str => "array of string",
            ValueType::Array => "array of array",
            ValueType::U64 => "array of u64",
            ValueType::I64 => "array of i64",
            ValueType::F64 => "array of f64",
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One metadata value, borrowing strings and arrays from the file.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MetaValue<'a> {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(&'a str),
    Array(MetaArray<'a>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl<'a> MetaValue<'a> {
    /// The value's type.
    pub fn value_type(&self) -> ValueType {
        match self {
            MetaValue::U8(_) => ValueType::U8,
            MetaValue::I8(_) => ValueType::I8,
            MetaValue::U16(_) => ValueType::U16,
            MetaValue::I16(_) => ValueType::I16,
            MetaValue::U32(_) => ValueType::U32,
            MetaValue::I32(_) => ValueType::I32,
            MetaValue::F32(_) => ValueType::F32,
            MetaValue::Bool(_) => ValueType::Bool,
            MetaValue::Str(_) => ValueType::Str,
            MetaValue::Array(_) => ValueType::Array,
            MetaValue::U64(_) => ValueType::U64,
            MetaValue::I64(_) => ValueType::I64,
            MetaValue::F64(_) => ValueType::F64,
        }
    }

    /// Type name for error messages; arrays name their element type (`"array of i32"`).
    pub fn type_name(&self) -> &'static str {
        match self {
            MetaValue::Array(a) => a.elem_type().array_name(),
            v => v.value_type().name(),
        }
    }

    /// The value of any integer type, widened; `None` for floats, bools, strings and arrays.
    pub fn as_integer(&self) -> Option<i128> {
        Some(match *self {
            MetaValue::U8(v) => v.into(),
            MetaValue::I8(v) => v.into(),
            MetaValue::U16(v) => v.into(),
            MetaValue::I16(v) => v.into(),
            MetaValue::U32(v) => v.into(),
            MetaValue::I32(v) => v.into(),
            MetaValue::U64(v) => v.into(),
            MetaValue::I64(v) => v.into(),
            _ => return None,
        })
    }
}

/// A metadata array: element type, count and the raw encoded elements, borrowed from the file.
/// Validated when the file was parsed (bounds, UTF-8, bools, nesting depth), so iterating it
/// cannot fail and allocates nothing per element.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MetaArray<'a> {
    key: &'a str,
    elem_type: ValueType,
    len: usize,
    raw: &'a [u8],
    /// File offset of `raw[0]`.
    raw_offset: u64,
    /// Nesting depth of this array's elements (1 for a top-level array).
    depth: u32,
}

impl<'a> MetaArray<'a> {
    /// The metadata key this array belongs to (nested arrays report their outermost key).
    pub fn key(&self) -> &'a str {
        self.key
    }

    /// Element type.
    pub fn elem_type(&self) -> ValueType {
        self.elem_type
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The encoded elements, exactly as in the file (for fixed-size types: `len` little-endian
    /// values back to back).
    pub fn raw_bytes(&self) -> &'a [u8] {
        self.raw
    }

    /// The elements, in order.
    pub fn iter(&self) -> MetaArrayIter<'a> {
        MetaArrayIter {
            reader: Reader::new(self.raw, self.raw_offset),
            key: self.key,
            elem_type: self.elem_type,
            left: self.len,
            depth: self.depth,
        }
    }

    fn wrong_type(&self, expected: &'static str) -> GgufError {
        GgufError::WrongType {
            key: self.key.to_string(),
            expected,
            found: self.elem_type.array_name(),
        }
    }

    /// The elements of an array of strings, or `WrongType` for any other element type.
    pub fn strings(&self) -> Result<impl Iterator<Item = &'a str> + 'a, GgufError> {
        if self.elem_type != ValueType::Str {
            return Err(self.wrong_type("array of string"));
        }
        Ok(self.iter().filter_map(|v| match v {
            MetaValue::Str(s) => Some(s),
            _ => None,
        }))
    }

    /// The elements as `i32`: any integer element type whose values fit.
    pub fn to_i32_vec(&self) -> Result<Vec<i32>, GgufError> {
        if self.elem_type == ValueType::I32 {
            return Ok(fixed_le(self.raw, i32::from_le_bytes));
        }
        self.integers_to_vec("array of i32", "i32")
    }

    /// The elements as `u32`: any integer element type whose values fit.
    pub fn to_u32_vec(&self) -> Result<Vec<u32>, GgufError> {
        if self.elem_type == ValueType::U32 {
            return Ok(fixed_le(self.raw, u32::from_le_bytes));
        }
        self.integers_to_vec("array of u32", "u32")
    }

    /// The elements as `f32`: arrays of f32, or of f64 rounded to f32.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>, GgufError> {
        match self.elem_type {
            ValueType::F32 => Ok(fixed_le(self.raw, f32::from_le_bytes)),
            ValueType::F64 => Ok(fixed_le(self.raw, |b: [u8; 8]| {
                f64::from_le_bytes(b) as f32
            })),
            _ => Err(self.wrong_type("array of f32")),
        }
    }

    fn integers_to_vec<T: TryFrom<i128>>(
        &self,
        expected: &'static str,
        target: &'static str,
    ) -> Result<Vec<T>, GgufError> {
        let mut out = Vec::with_capacity(self.len);
        for v in self.iter() {
            let Some(i) = v.as_integer() else {
                return Err(self.wrong_type(expected));
            };
            let t = T::try_from(i).map_err(|_| GgufError::OutOfRange {
                key: self.key.to_string(),
                value: i,
                target,
            })?;
            out.push(t);
        }
        Ok(out)
    }
}

/// Decodes back-to-back little-endian values of `N` bytes each.
fn fixed_le<const N: usize, T>(raw: &[u8], decode: impl Fn([u8; N]) -> T) -> Vec<T> {
    raw.chunks_exact(N)
        .map(|c| {
            let mut b = [0u8; N];
            b.copy_from_slice(c);
            decode(b)
        })
        .collect()
}

/// Iterator over a [`MetaArray`]'s elements.
#[derive(Clone, Debug)]
pub struct MetaArrayIter<'a> {
    reader: Reader<'a>,
    key: &'a str,
    elem_type: ValueType,
    left: usize,
    depth: u32,
}

impl<'a> Iterator for MetaArrayIter<'a> {
    type Item = MetaValue<'a>;

    fn next(&mut self) -> Option<MetaValue<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // The bytes were validated at parse time with this same function, so this cannot fail;
        // if it somehow did, ending the iteration is the answer that cannot read out of bounds.
        match read_value(&mut self.reader, self.elem_type, self.key, self.depth) {
            Ok(v) => Some(v),
            Err(_) => {
                self.left = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for MetaArrayIter<'_> {}

/// Reads and validates one value of type `ty` belonging to `key`. `depth` is the nesting depth
/// of the value (0 for a top-level value).
pub(crate) fn read_value<'a>(
    r: &mut Reader<'a>,
    ty: ValueType,
    key: &'a str,
    depth: u32,
) -> Result<MetaValue<'a>, GgufError> {
    let short = |s: super::reader::Short| s.context(format!("{} value of key '{key}'", ty.name()));
    Ok(match ty {
        ValueType::U8 => MetaValue::U8(r.u8().map_err(short)?),
        ValueType::I8 => MetaValue::I8(r.u8().map_err(short)? as i8),
        ValueType::U16 => MetaValue::U16(r.u16().map_err(short)?),
        ValueType::I16 => MetaValue::I16(r.u16().map_err(short)? as i16),
        ValueType::U32 => MetaValue::U32(r.u32().map_err(short)?),
        ValueType::I32 => MetaValue::I32(r.u32().map_err(short)? as i32),
        ValueType::F32 => MetaValue::F32(f32::from_bits(r.u32().map_err(short)?)),
        ValueType::U64 => MetaValue::U64(r.u64().map_err(short)?),
        ValueType::I64 => MetaValue::I64(r.u64().map_err(short)? as i64),
        ValueType::F64 => MetaValue::F64(f64::from_bits(r.u64().map_err(short)?)),
        ValueType::Bool => {
            let offset = r.offset();
            match r.u8().map_err(short)? {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                value => {
                    return Err(GgufError::InvalidBool {
                        key: key.to_string(),
                        value,
                        offset,
                    })
                }
            }
        }
        ValueType::Str => {
            let offset = r.offset();
            let bytes = r.string_bytes().map_err(short)?;
            let s = std::str::from_utf8(bytes).map_err(|_| GgufError::InvalidUtf8 {
                what: format!("string value of key '{key}'"),
                offset,
            })?;
            MetaValue::Str(s)
        }
        ValueType::Array => MetaValue::Array(read_array(r, key, depth + 1)?),
    })
}

/// Reads an array header and validates every element; `depth` is the depth of the elements.
fn read_array<'a>(
    r: &mut Reader<'a>,
    key: &'a str,
    depth: u32,
) -> Result<MetaArray<'a>, GgufError> {
    let header_offset = r.offset();
    if depth > MAX_ARRAY_DEPTH {
        return Err(GgufError::NestingTooDeep {
            key: key.to_string(),
            limit: MAX_ARRAY_DEPTH,
            offset: header_offset,
        });
    }
    let type_id = r
        .u32()
        .map_err(|s| s.context(format!("array element type of key '{key}'")))?;
    let elem_type = ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
        key: key.to_string(),
        type_id,
        offset: header_offset,
    })?;
    let count = r
        .u64()
        .map_err(|s| s.context(format!("array length of key '{key}'")))?;
    let raw_offset = r.offset();
    let available = r.remaining() as u64;
    // Every element takes at least `min_size` bytes: reject impossible counts before walking.
    let too_large = || GgufError::ArrayTooLarge {
        key: key.to_string(),
        elem_type: elem_type.name(),
        count,
        offset: raw_offset,
        available,
    };
    let min_bytes = count
        .checked_mul(elem_type.min_size())
        .ok_or_else(too_large)?;
    if min_bytes > available {
        return Err(too_large());
    }
    // `count <= available`, which is a usize.
    let len = usize::try_from(count).map_err(|_| too_large())?;

    let raw = if let Some(size) = elem_type.fixed_size() {
        // `min_bytes` is exactly `count * size` here and fits.
        let raw = r.take(count * size).map_err(|s| s.context(key))?;
        if elem_type == ValueType::Bool {
            if let Some(i) = raw.iter().position(|&b| b > 1) {
                return Err(GgufError::InvalidBool {
                    key: key.to_string(),
                    value: raw[i],
                    offset: raw_offset + i as u64,
                });
            }
        }
        raw
    } else {
        // Walk a copy of the reader over every element, then take the bytes it consumed.
        let mut probe = r.clone();
        for _ in 0..len {
            read_value(&mut probe, elem_type, key, depth)?;
        }
        let consumed = (r.remaining() - probe.remaining()) as u64;
        r.take(consumed).map_err(|s| s.context(key))?
    };
    Ok(MetaArray {
        key,
        elem_type,
        len,
        raw,
        raw_offset,
        depth,
    })
}
