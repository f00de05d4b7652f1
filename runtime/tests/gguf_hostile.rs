//! Hostile GGUF input: truncations and byte flips of the real model, and hand-made files that
//! each break one rule. Every case must be an `Err` naming the right thing (or, for random
//! flips, any `Ok`/`Err`): never a panic, an out-of-bounds read or a huge allocation.

use std::time::Instant;

use edgellm_runtime::gguf::{Gguf, GgufError};
use edgellm_runtime::mmap::MappedFile;

fn open_model() -> MappedFile {
    let path = edgellm_runtime::default_model_path();
    assert!(
        path.exists(),
        "model file {} is missing: run `make model` first",
        path.display()
    );
    MappedFile::open(&path).unwrap_or_else(|e| panic!("cannot map {}: {e}", path.display()))
}

/// A test-only GGUF byte builder: writes exactly the fields it is told to, valid or not.
#[derive(Default)]
struct Builder {
    buf: Vec<u8>,
}

impl Builder {
    /// Magic, version and the two counts.
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Builder {
        let mut b = Builder::default();
        b.buf.extend_from_slice(b"GGUF");
        b.u32(version).u64(n_tensors).u64(n_kv);
        b
    }
    fn u32(&mut self, x: u32) -> &mut Self {
        self.buf.extend_from_slice(&x.to_le_bytes());
        self
    }
    fn u64(&mut self, x: u64) -> &mut Self {
        self.buf.extend_from_slice(&x.to_le_bytes());
        self
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }
    /// A GGUF string: u64 length + bytes.
    fn str(&mut self, s: &[u8]) -> &mut Self {
        self.u64(s.len() as u64).bytes(s)
    }
    /// A u32 kv.
    fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.str(key.as_bytes()).u32(4).u32(v)
    }
    /// A string kv.
    fn kv_str(&mut self, key: &str, v: &str) -> &mut Self {
        self.str(key.as_bytes()).u32(8).str(v.as_bytes())
    }
    /// A tensor info with a raw type id.
    fn tensor(&mut self, name: &str, dims: &[u64], type_id: u32, offset: u64) -> &mut Self {
        self.str(name.as_bytes()).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(type_id).u64(offset)
    }
    /// Zeros up to a multiple of `align`, then `n` data bytes.
    fn data(&mut self, align: usize, n: usize) -> &mut Self {
        while !self.buf.len().is_multiple_of(align) {
            self.buf.push(0);
        }
        self.buf.resize(self.buf.len() + n, 0xAB);
        self
    }
    fn parse(&self) -> Result<(), GgufError> {
        Gguf::parse(&self.buf).map(|_| ())
    }
}

fn err_of(b: &Builder) -> GgufError {
    match b.parse() {
        Ok(()) => panic!("hostile file parsed without error"),
        Err(e) => e,
    }
}

/// A valid file with two F32 tensors of 8 elements (32 bytes each), for variations.
fn two_tensors(offset_a: u64, offset_b: u64, data: usize) -> Builder {
    let mut b = Builder::header(3, 2, 1);
    b.kv_str("general.architecture", "llama")
        .tensor("a", &[8], 0, offset_a)
        .tensor("b", &[8], 0, offset_b)
        .data(32, data);
    b
}

#[test]
fn hand_made_valid_file_parses() {
    // Control: the builder makes files the parser accepts, so the errors below come from the
    // one field each test breaks.
    let b = two_tensors(0, 32, 64);
    let bytes = &b.buf;
    let g = Gguf::parse(bytes).unwrap();
    assert_eq!(g.tensors().len(), 2);
    assert_eq!(g.tensor("b").unwrap().data.len(), 32);
    assert_eq!(g.architecture().unwrap(), "llama");
    // Version 2 has the same layout.
    let mut v2 = two_tensors(0, 32, 64);
    v2.buf[4] = 2;
    assert_eq!(Gguf::parse(&v2.buf).unwrap().version(), 2);
    // No tensors at all, and a file that ends right after the kvs.
    let mut b = Builder::header(3, 0, 1);
    b.kv_u32("x", 1);
    assert!(b.parse().is_ok());
}

#[test]
fn bad_magic_and_versions() {
    let mut b = two_tensors(0, 32, 64);
    b.buf[0..4].copy_from_slice(b"GGML");
    assert!(matches!(err_of(&b), GgufError::BadMagic { .. }));
    for version in [1u32, 4, 0, u32::MAX] {
        let mut b = two_tensors(0, 32, 64);
        b.buf[4..8].copy_from_slice(&version.to_le_bytes());
        let e = err_of(&b);
        assert!(matches!(e, GgufError::UnsupportedVersion { version: v } if v == version));
        if version == 1 {
            assert!(e.to_string().contains("version 1"), "{e}");
        } else {
            assert!(e.to_string().contains(&version.to_string()), "{e}");
        }
    }
}

#[test]
fn absurd_counts_are_rejected_before_allocating() {
    for n in [u64::MAX, 1 << 63, 1 << 40, 1000] {
        let mut b = Builder::header(3, 0, n);
        b.kv_u32("x", 1);
        match err_of(&b) {
            GgufError::CountTooLarge { what, count, .. } => {
                assert_eq!(what, "metadata kv");
                assert_eq!(count, n);
            }
            e => panic!("kv count {n}: {e}"),
        }
        let mut b = Builder::header(3, n, 0);
        b.tensor("t", &[8], 0, 0);
        match err_of(&b) {
            GgufError::CountTooLarge { what, count, .. } => {
                assert_eq!(what, "tensor info");
                assert_eq!(count, n);
            }
            e => panic!("tensor count {n}: {e}"),
        }
    }
}

#[test]
fn huge_string_lengths() {
    for len in [1u64 << 63, u64::MAX] {
        // In a key.
        let mut b = Builder::header(3, 0, 1);
        b.u64(len).bytes(b"general.name").u32(4).u32(0);
        match err_of(&b) {
            GgufError::Truncated {
                what,
                needed,
                offset,
                ..
            } => {
                assert_eq!(what, "key of metadata kv #0");
                assert_eq!(needed, len);
                assert_eq!(offset, 32);
            }
            e => panic!("{e}"),
        }
        // In a string value.
        let mut b = Builder::header(3, 0, 1);
        b.str(b"general.name").u32(8).u64(len).bytes(b"abcdefgh");
        let e = err_of(&b);
        assert!(matches!(e, GgufError::Truncated { needed, .. } if needed == len));
        assert!(e.to_string().contains("'general.name'"), "{e}");
        // In a string array element.
        let mut b = Builder::header(3, 0, 1);
        b.str(b"tok")
            .u32(9)
            .u32(8)
            .u64(1)
            .u64(len)
            .bytes(b"abcdefgh");
        let e = err_of(&b);
        assert!(matches!(e, GgufError::Truncated { needed, .. } if needed == len));
        assert!(e.to_string().contains("'tok'"), "{e}");
        // In a tensor name.
        let mut b = Builder::header(3, 1, 0);
        b.u64(len).bytes(&[0; 40]);
        let e = err_of(&b);
        assert!(e.to_string().contains("name of tensor info #0"), "{e}");
    }
}

#[test]
fn huge_array_counts() {
    for (elem_type, count) in [(10u32, u64::MAX), (4, 1 << 62), (8, 1 << 61), (9, 1 << 60)] {
        let mut b = Builder::header(3, 0, 1);
        b.str(b"arr")
            .u32(9)
            .u32(elem_type)
            .u64(count)
            .bytes(&[0; 64]);
        match err_of(&b) {
            GgufError::ArrayTooLarge { key, count: c, .. } => {
                assert_eq!(key, "arr");
                assert_eq!(c, count);
            }
            e => panic!("{e}"),
        }
    }
}

#[test]
fn unknown_value_types_and_bad_bools() {
    let mut b = Builder::header(3, 0, 1);
    b.str(b"weird").u32(13).u32(0);
    assert!(matches!(
        err_of(&b),
        GgufError::UnknownValueType { ref key, type_id: 13, offset: 37 } if key == "weird"
    ));
    let mut b = Builder::header(3, 0, 1);
    b.str(b"arr").u32(9).u32(77).u64(0);
    assert!(matches!(
        err_of(&b),
        GgufError::UnknownValueType { ref key, type_id: 77, .. } if key == "arr"
    ));
    let mut b = Builder::header(3, 0, 1);
    b.str(b"flag").u32(7).bytes(&[2]);
    assert!(matches!(
        err_of(&b),
        GgufError::InvalidBool { ref key, value: 2, .. } if key == "flag"
    ));
}

#[test]
fn nested_arrays_1000_deep() {
    let mut b = Builder::header(3, 0, 1);
    b.str(b"deep").u32(9);
    for _ in 0..1000 {
        b.u32(9).u64(1);
    }
    b.u32(4).u64(0);
    match err_of(&b) {
        GgufError::NestingTooDeep { key, limit, .. } => {
            assert_eq!(key, "deep");
            assert_eq!(limit, edgellm_runtime::gguf::MAX_ARRAY_DEPTH);
        }
        e => panic!("{e}"),
    }
    // Exactly at the limit is fine.
    let depth = edgellm_runtime::gguf::MAX_ARRAY_DEPTH;
    let mut b = Builder::header(3, 0, 1);
    b.str(b"ok").u32(9);
    for _ in 1..depth {
        b.u32(9).u64(1);
    }
    b.u32(4).u64(1).u32(7);
    assert!(b.parse().is_ok(), "{:?}", b.parse());
}

#[test]
fn duplicate_keys_and_non_utf8() {
    let mut b = Builder::header(3, 0, 2);
    b.kv_u32("llama.block_count", 30)
        .kv_u32("llama.block_count", 31);
    assert!(matches!(
        err_of(&b),
        GgufError::DuplicateKey { ref key, .. } if key == "llama.block_count"
    ));
    let mut b = Builder::header(3, 0, 2);
    b.kv_u32("ok", 1).str(b"bad\xff\xfekey").u32(4).u32(0);
    let e = err_of(&b);
    assert!(matches!(e, GgufError::InvalidUtf8 { .. }));
    assert!(e.to_string().contains("key of metadata kv #1"), "{e}");
    let mut b = Builder::header(3, 0, 1);
    b.str(b"general.name").u32(8).str(b"\xc3\x28");
    let e = err_of(&b);
    assert!(e.to_string().contains("'general.name'"), "{e}");
    let mut b = Builder::header(3, 1, 0);
    b.str(b"\x80bad").u32(1).u64(8).u32(0).u64(0).data(32, 32);
    let e = err_of(&b);
    assert!(e.to_string().contains("name of tensor info #0"), "{e}");
}

#[test]
fn bad_alignment() {
    for a in [0u32, 3, 48] {
        let mut b = Builder::header(3, 1, 1);
        b.kv_u32("general.alignment", a)
            .tensor("t", &[8], 0, 0)
            .data(32, 32);
        assert!(matches!(
            err_of(&b),
            GgufError::BadAlignment { alignment } if alignment == a as u64
        ));
    }
    let mut b = Builder::header(3, 0, 1);
    b.kv_str("general.alignment", "32");
    assert!(matches!(
        err_of(&b),
        GgufError::WrongType { ref key, .. } if key == "general.alignment"
    ));
    // A valid custom alignment moves the data section.
    let mut b = Builder::header(3, 1, 1);
    b.kv_u32("general.alignment", 256)
        .tensor("t", &[8], 0, 0)
        .data(256, 32);
    let g = Gguf::parse(&b.buf).unwrap();
    assert_eq!(g.data_offset(), 256);
}

#[test]
fn tensor_info_errors_name_the_tensor() {
    let one = |dims: &[u64], type_id: u32, offset: u64| {
        let mut b = Builder::header(3, 1, 0);
        b.tensor("blk.0.w", dims, type_id, offset).data(32, 4096);
        err_of(&b)
    };
    for id in [4u32, 99, 5, u32::MAX] {
        match one(&[32], id, 0) {
            GgufError::UnknownGgmlType {
                tensor, type_id, ..
            } => {
                assert_eq!(tensor, "blk.0.w");
                assert_eq!(type_id, id);
            }
            e => panic!("{e}"),
        }
    }
    assert!(one(&[32], 99, 0).to_string().contains("99"));
    assert!(matches!(
        one(&[1, 1, 1, 1, 1], 0, 0),
        GgufError::TooManyDims { ref tensor, n_dims: 5 } if tensor == "blk.0.w"
    ));
    assert!(matches!(
        one(&[8, 0], 0, 0),
        GgufError::BadDim {
            dim: 1,
            value: 0,
            ..
        }
    ));
    assert!(matches!(
        one(&[8, u64::MAX], 0, 0),
        GgufError::BadDim { dim: 1, .. }
    ));
    // 2^32 * 2^32 elements overflows u64.
    assert!(matches!(
        one(&[1 << 32, 1 << 32], 0, 0),
        GgufError::SizeOverflow { ref tensor, .. } if tensor == "blk.0.w"
    ));
    // Elements fit u64 but bytes (x4 for F32) do not.
    assert!(matches!(
        one(&[1 << 31, 1 << 31, 1 << 1], 0, 0),
        GgufError::SizeOverflow { .. } | GgufError::DataOutOfBounds { .. }
    ));
    assert!(matches!(
        one(&[33, 2], 2, 0),
        GgufError::NotBlockMultiple {
            ne0: 33,
            block_size: 32,
            ..
        }
    ));
    assert!(matches!(
        one(&[32], 0, 16),
        GgufError::MisalignedOffset { ref tensor, offset: 16, alignment: 32 } if tensor == "blk.0.w"
    ));
    assert!(matches!(
        one(&[32], 0, 1 << 20),
        GgufError::DataOutOfBounds { .. }
    ));
    assert!(matches!(
        one(&[32], 0, u64::MAX - 31),
        GgufError::DataOutOfBounds { end: u64::MAX, .. }
    ));
}

#[test]
fn data_ranges_past_end_and_overlaps() {
    let e = err_of(&two_tensors(0, 64, 64));
    assert_eq!(
        e.to_string(),
        format!(
            "tensor 'b': data [{} .. {}) runs past end of file ({} bytes)",
            two_tensors(0, 64, 64).buf.len() - 64 + 64,
            two_tensors(0, 64, 64).buf.len() - 64 + 96,
            two_tensors(0, 64, 64).buf.len()
        )
    );
    // b starts inside a (a is 32 bytes; offsets are multiples of 32 so use a larger a).
    let mut b = Builder::header(3, 2, 0);
    b.tensor("a", &[16], 0, 0)
        .tensor("b", &[8], 0, 32)
        .data(32, 128);
    match err_of(&b) {
        GgufError::Overlap { first, second, .. } => {
            assert_eq!(first, "a");
            assert_eq!(second, "b");
        }
        e => panic!("{e}"),
    }
    // Same offset, listed in the other order.
    assert!(matches!(
        err_of(&two_tensors(32, 32, 64)),
        GgufError::Overlap { .. }
    ));
    let mut b = Builder::header(3, 2, 0);
    b.tensor("a", &[8], 0, 0)
        .tensor("a", &[8], 0, 32)
        .data(32, 64);
    assert!(matches!(
        err_of(&b),
        GgufError::DuplicateTensor { ref tensor } if tensor == "a"
    ));
}

/// Offsets to truncate the real file at. Every offset through the end of the tensor infos
/// would be 1.8 M parses of up to a 1.8 MB header (hours), so: every offset in the first 64 KiB
/// (header and the first kvs), a stride of 1009 (prime) through the big tokenizer arrays, a stride of 7
/// through the tensor infos (7 is coprime with their field sizes, so every field position of
/// some info is hit), every offset around the start and end of the infos and of the padding,
/// and a sample of the data section. `truncated_real_file_exhaustive` does every info offset.
fn truncation_offsets(file_len: usize, infos_start: usize, data_offset: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..65536.min(infos_start)).collect();
    v.extend((65536..infos_start).step_by(1009));
    v.extend(infos_start.saturating_sub(64)..infos_start + 256);
    v.extend((infos_start + 256..data_offset - 256).step_by(7));
    v.extend(data_offset - 256..=data_offset);
    v.extend((data_offset..file_len).step_by(1_000_003));
    v.push(file_len - 1);
    v
}

/// Start of the tensor-info region: where the first tensor's name length is, found by
/// searching for it right after the last metadata value.
fn tensor_infos_start(bytes: &[u8], g: &Gguf<'_>) -> usize {
    let first = g.tensors()[0].name.as_bytes();
    let mut needle = (first.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(first);
    let end = g.data_offset() as usize;
    bytes[..end]
        .windows(needle.len())
        .rposition(|w| w == needle.as_slice())
        .expect("first tensor info")
}

fn assert_truncations_fail(bytes: &[u8], offsets: &[usize]) {
    let t0 = Instant::now();
    for &len in offsets {
        if let Ok(g) = Gguf::parse(&bytes[..len]) {
            panic!(
                "truncated at {len} of {} bytes, parsed with {} tensors",
                bytes.len(),
                g.tensors().len()
            );
        }
    }
    println!("{} truncations in {:?}", offsets.len(), t0.elapsed());
}

#[test]
fn truncated_real_file_is_always_an_error() {
    let map = open_model();
    let bytes = map.bytes();
    let g = Gguf::parse(bytes).unwrap();
    let data_offset = g.data_offset() as usize;
    let infos_start = tensor_infos_start(bytes, &g);
    assert!(infos_start > 65536 && data_offset - infos_start > 1024);
    let offsets = truncation_offsets(bytes.len(), infos_start, data_offset);
    assert_truncations_fail(bytes, &offsets);
}

#[test]
#[ignore = "about a minute: every offset of the tensor-info region"]
fn truncated_real_file_exhaustive() {
    let map = open_model();
    let bytes = map.bytes();
    let g = Gguf::parse(bytes).unwrap();
    let offsets: Vec<usize> = (tensor_infos_start(bytes, &g)..=g.data_offset() as usize).collect();
    assert_truncations_fail(bytes, &offsets);
}

/// splitmix64: a deterministic generator for the flip positions.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_byte_flips_never_panic() {
    let map = open_model();
    let g = Gguf::parse(map.bytes()).unwrap();
    let data_offset = g.data_offset() as usize;
    let infos_start = tensor_infos_start(map.bytes(), &g);
    // Structural regions get most flips: the header and first kvs, and the tensor infos.
    let regions = [(0, 4096), (infos_start, data_offset), (0, data_offset)];
    drop(g);
    let mut bytes = map.bytes().to_vec();
    let mut rng = SplitMix(0x5EED_6767);
    const TRIALS: usize = 3000;
    let (mut ok, mut err) = (0, 0);
    let t0 = Instant::now();
    for trial in 0..TRIALS {
        let (lo, hi) = regions[trial % regions.len()];
        let n_flips = 1 + rng.below(4);
        let mut saved = Vec::with_capacity(n_flips);
        for _ in 0..n_flips {
            let at = lo + rng.below(hi - lo);
            saved.push((at, bytes[at]));
            // Half the time a random byte, half a single bit.
            bytes[at] = if rng.next() & 1 == 0 {
                rng.next() as u8
            } else {
                bytes[at] ^ (1 << rng.below(8))
            };
        }
        match Gguf::parse(&bytes) {
            Ok(g) => {
                ok += 1;
                // Whatever parsed must be safe to use.
                for (_, v) in g.metadata() {
                    if let edgellm_runtime::gguf::MetaValue::Array(a) = v {
                        assert!(a.iter().count() == a.len());
                    }
                }
                for t in g.tensors() {
                    let v = t.view();
                    assert_eq!(v.rows() * v.row_bytes(), t.data.len());
                }
            }
            Err(e) => {
                err += 1;
                assert!(!e.to_string().is_empty());
            }
        }
        for (at, b) in saved.into_iter().rev() {
            bytes[at] = b;
        }
    }
    println!(
        "{TRIALS} flip trials: {ok} Ok, {err} Err, in {:?}",
        t0.elapsed()
    );
    assert!(err > 0);
}
