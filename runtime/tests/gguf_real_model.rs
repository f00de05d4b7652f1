//! The real SmolLM2 file parsed by our GGUF reader, checked against llama.cpp's / gguf-py's
//! dump of it in `shared/reference/smollm2_gguf_dump.txt`.

use std::path::{Path, PathBuf};

use edgellm_runtime::gguf::{Gguf, GgufWriter, MetaArrayOwned, MetaValue, MetaValueOwned};
use edgellm_runtime::mmap::MappedFile;
use edgellm_runtime::GgmlType;

fn open_model() -> MappedFile {
    let path = edgellm_runtime::default_model_path();
    assert!(
        path.exists(),
        "model file {} is missing: run `make model` first",
        path.display()
    );
    MappedFile::open(&path).unwrap_or_else(|e| panic!("cannot map {}: {e}", path.display()))
}

fn reference_dump() -> String {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference/smollm2_gguf_dump.txt");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read the reference dump {}: {e}", path.display()))
}

/// A metadata line of the gguf-dump section:
/// `     13: UINT32     |        1 | llama.block_count = 30`.
struct DumpKey {
    key: String,
    /// `UINT32`, or `[STRING]` for arrays.
    ty: String,
    count: usize,
    value: String,
}

/// A tensor line: `      1:   28311552 |   576, 49152,     1,     1 | Q8_0    | token_embd.weight`.
struct DumpTensor {
    name: String,
    n_elements: u64,
    shape: [u64; 4],
    ty: String,
}

fn parse_dump(text: &str) -> (Vec<DumpKey>, Vec<DumpTensor>) {
    let section1 = text
        .split("########## 2.")
        .next()
        .expect("dump has a section 1");
    let mut keys = Vec::new();
    let mut tensors = Vec::new();
    let mut in_tensors = false;
    for line in section1.lines() {
        if line.starts_with("* Dumping") && line.ends_with("tensor(s)") {
            in_tensors = true;
            continue;
        }
        // Values (chat template, tokens) may contain '|': split at most into the columns.
        let parts: Vec<&str> = line.splitn(if in_tensors { 4 } else { 3 }, '|').collect();
        let Some((index, first)) = parts[0].split_once(':') else {
            continue;
        };
        if index.trim().parse::<u32>().is_err() {
            continue;
        }
        if !in_tensors {
            let (key, value) = parts[2].trim().split_once(" = ").expect("key = value");
            keys.push(DumpKey {
                key: key.to_string(),
                ty: first.trim().to_string(),
                count: parts[1].trim().parse().expect("count"),
                value: value.to_string(),
            });
        } else {
            let dims: Vec<u64> = parts[1]
                .split(',')
                .map(|d| d.trim().parse().expect("dim"))
                .collect();
            tensors.push(DumpTensor {
                name: parts[3].trim().to_string(),
                n_elements: first.trim().parse().expect("n_elements"),
                shape: dims.try_into().expect("4 dims"),
                ty: parts[2].trim().to_string(),
            });
        }
    }
    (keys, tensors)
}

/// gguf-dump's type column for one of our values.
fn dump_type(v: &MetaValue<'_>) -> String {
    fn name(t: edgellm_runtime::gguf::ValueType) -> &'static str {
        use edgellm_runtime::gguf::ValueType as T;
        match t {
            T::U8 => "UINT8",
            T::I8 => "INT8",
            T::U16 => "UINT16",
            T::I16 => "INT16",
            T::U32 => "UINT32",
            T::I32 => "INT32",
            T::F32 => "FLOAT32",
            T::Bool => "BOOL",
            T::Str => "STRING",
            T::Array => "ARRAY",
            T::U64 => "UINT64",
            T::I64 => "INT64",
            T::F64 => "FLOAT64",
        }
    }
    match v {
        MetaValue::Array(a) => format!("[{}]", name(a.elem_type())),
        v => name(v.value_type()).to_string(),
    }
}

#[test]
fn real_model_matches_reference_dump() {
    let map = open_model();
    let g = Gguf::parse(map.bytes()).expect("the real model parses");
    let (keys, tensors) = parse_dump(&reference_dump());

    // Header facts from the dump (GGUF.* pseudo keys are the dump's, not metadata).
    let pseudo = |k: &str| {
        keys.iter()
            .find(|d| d.key == k)
            .unwrap_or_else(|| panic!("dump lacks {k}"))
            .value
            .parse::<u64>()
            .unwrap()
    };
    assert_eq!(g.version() as u64, pseudo("GGUF.version"));
    assert_eq!(g.tensors().len() as u64, pseudo("GGUF.tensor_count"));
    assert_eq!(g.metadata().len() as u64, pseudo("GGUF.kv_count"));
    assert_eq!(g.version(), 3);
    assert_eq!(g.alignment(), 32);
    assert_eq!(g.data_offset(), 1_785_664);
    assert_eq!(g.metadata().len(), 33);
    assert_eq!(g.tensors().len(), 272);

    let real_keys: Vec<&DumpKey> = keys
        .iter()
        .filter(|d| !d.key.starts_with("GGUF."))
        .collect();
    assert_eq!(real_keys.len(), g.metadata().len());
    for (d, (key, value)) in real_keys.iter().zip(g.metadata()) {
        assert_eq!(&d.key, key, "metadata key order");
        assert_eq!(d.ty, dump_type(value), "type of {key}");
        let count = match value {
            MetaValue::Array(a) => a.len(),
            _ => 1,
        };
        assert_eq!(d.count, count, "count of {key}");
        // Scalars are printed in full (strings unless truncated): compare values too.
        match *value {
            MetaValue::U32(x) => assert_eq!(d.value, x.to_string(), "{key}"),
            MetaValue::Bool(b) => {
                assert_eq!(d.value, if b { "True" } else { "False" }, "{key}")
            }
            // Python prints the f32 widened to f64, shortest round trip.
            MetaValue::F32(x) => {
                assert_eq!(d.value.parse::<f64>().unwrap(), f64::from(x), "{key}")
            }
            MetaValue::Str(s) if !d.value.ends_with("...'") => {
                assert_eq!(d.value, format!("'{s}'"), "{key}")
            }
            _ => {}
        }
    }

    assert_eq!(tensors.len(), g.tensors().len());
    let mut total_bytes = 0u64;
    for (d, t) in tensors.iter().zip(g.tensors()) {
        assert_eq!(d.name, t.name, "tensor order");
        assert_eq!(d.shape, t.shape, "shape of {}", t.name);
        assert_eq!(d.n_elements, t.n_elements(), "elements of {}", t.name);
        assert_eq!(
            GgmlType::from_name(&d.ty),
            Some(t.ggml_type),
            "type of {}",
            t.name
        );
        // The data slice is exactly where the info says, in the map itself (no copy).
        let start = t.data.as_ptr() as usize - map.bytes().as_ptr() as usize;
        assert_eq!(start as u64, g.data_offset() + t.offset, "{}", t.name);
        assert_eq!(
            t.n_bytes() as u64,
            t.ggml_type.row_bytes(t.shape[0]).unwrap() * t.shape[1] * t.shape[2] * t.shape[3]
        );
        assert_eq!(g.tensor(t.name), Some(t));
        total_bytes += t.n_bytes() as u64;
    }
    // "total tensor data bytes: 96576768" in section 2 of the dump.
    assert_eq!(total_bytes, 96_576_768);
    assert!(g.tensor("output.weight").is_none());
}

#[test]
fn real_model_typed_getters_and_tokenizer_arrays() {
    let map = open_model();
    let g = Gguf::parse(map.bytes()).unwrap();
    let dump = reference_dump();
    assert_eq!(g.architecture().unwrap(), "llama");
    assert_eq!(g.get_u32("llama.block_count").unwrap(), Some(30));
    assert_eq!(g.get_u32("llama.embedding_length").unwrap(), Some(576));
    assert_eq!(g.get_f32("llama.rope.freq_base").unwrap(), Some(100000.0));
    assert_eq!(
        g.get_bool("tokenizer.ggml.add_bos_token").unwrap(),
        Some(false)
    );
    assert_eq!(g.get_str("tokenizer.ggml.model").unwrap(), Some("gpt2"));
    assert_eq!(
        g.get_u32(edgellm_runtime::gguf::KEY_ALIGNMENT).unwrap(),
        None
    );

    let template = g.get_str("tokenizer.chat_template").unwrap().unwrap();
    let ref_template = dump
        .split("--- tokenizer.chat_template (full) ---\n")
        .nth(1)
        .and_then(|s| s.split("\n--- end chat_template ---").next())
        .expect("dump has the full template");
    assert_eq!(template, ref_template);

    let tokens: Vec<&str> = g
        .get_array("tokenizer.ggml.tokens")
        .unwrap()
        .unwrap()
        .strings()
        .unwrap()
        .collect();
    assert_eq!(tokens.len(), 49152);
    assert_eq!(tokens[0], "<|endoftext|>");
    let types = g
        .get_array("tokenizer.ggml.token_type")
        .unwrap()
        .unwrap()
        .to_i32_vec()
        .unwrap();
    assert_eq!(types.len(), 49152);
    // Section 2 lists every non-normal token: 17 control tokens (type 3), the rest normal.
    let mut control = Vec::new();
    let mut in_list = false;
    for line in dump.lines() {
        if line.starts_with("non-normal tokens") {
            in_list = true;
            continue;
        }
        if in_list {
            let mut f = line.split_whitespace();
            let (Some(id), Some(ty), Some(text)) = (f.next(), f.next(), f.next()) else {
                break;
            };
            let Ok(id) = id.parse::<usize>() else { break };
            control.push((
                id,
                ty.parse::<i32>().unwrap(),
                text.trim_matches('\'').to_string(),
            ));
        }
    }
    assert_eq!(control.len(), 17);
    for (id, ty, text) in &control {
        assert_eq!(types[*id], *ty, "type of token {id}");
        assert_eq!(tokens[*id], text, "text of token {id}");
    }
    assert_eq!(types.iter().filter(|&&t| t == 1).count(), 49135);

    let merges: Vec<&str> = g
        .get_array("tokenizer.ggml.merges")
        .unwrap()
        .unwrap()
        .strings()
        .unwrap()
        .collect();
    assert_eq!(merges.len(), 48900);
    assert_eq!(&merges[..5], ["Ġ t", "Ġ a", "i n", "h e", "Ġ Ġ"]);
}

#[test]
fn real_model_tensor_views() {
    let map = open_model();
    let g = Gguf::parse(map.bytes()).unwrap();
    let embd = g.tensor("token_embd.weight").unwrap().view();
    assert_eq!(embd.ggml_type, GgmlType::Q8_0);
    embd.expect_shape(&[576, 49152]).unwrap();
    assert_eq!(embd.rows(), 49152);
    assert_eq!(embd.row_len(), 576);
    assert_eq!(embd.row_bytes(), 576 / 32 * 34);
    assert_eq!(
        embd.row(49151).as_ptr_range().end,
        embd.data.as_ptr_range().end
    );
    let err = g
        .tensor("blk.3.ffn_up.weight")
        .unwrap()
        .view()
        .expect_shape(&[1536, 576])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "tensor 'blk.3.ffn_up.weight': shape [576, 1536] does not match the expected [1536, 576]"
    );
    let norm = g.tensor("output_norm.weight").unwrap().view();
    norm.expect_shape(&[576]).unwrap();
    assert_eq!(norm.rows(), 1);
    assert_eq!(norm.row(0).len(), 576 * 4);
}

/// Where `write_fuzz_seed_corpus` puts the seeds (gitignored; regenerate with the command in
/// `fuzz/README.md`).
fn seed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("fuzz")
        .join("corpus")
        .join("gguf_parse")
}

/// Writes small seed files for `fuzz/fuzz_targets/gguf_parse.rs`, derived from the real
/// model's header: its metadata with arrays cut to a few elements and one small tensor per
/// type it uses (with real bytes), plus variants. Each seed is under 64 KiB.
#[test]
#[ignore = "writes fuzz seeds into fuzz/corpus; run on demand"]
fn write_fuzz_seed_corpus() {
    let map = open_model();
    let g = Gguf::parse(map.bytes()).unwrap();
    let dir = seed_dir();
    std::fs::create_dir_all(&dir).unwrap();

    let build = |alignment: Option<u32>, n_array: usize, nested: bool| -> Vec<u8> {
        let mut w = GgufWriter::new();
        for (key, value) in g.metadata() {
            let owned = match value {
                MetaValue::Array(a) => {
                    let mut o = MetaArrayOwned::from(a);
                    match &mut o {
                        MetaArrayOwned::Str(v) => v.truncate(n_array),
                        MetaArrayOwned::I32(v) => v.truncate(n_array),
                        MetaArrayOwned::F32(v) => v.truncate(n_array),
                        _ => {}
                    }
                    MetaValueOwned::Array(o)
                }
                v => MetaValueOwned::from(v),
            };
            w.add_metadata(*key, owned).unwrap();
        }
        if let Some(a) = alignment {
            w.add_metadata("general.alignment", a).unwrap();
        }
        if nested {
            let inner = MetaArrayOwned::Array(vec![
                MetaArrayOwned::I32(vec![1, -2]),
                MetaArrayOwned::Str(vec!["x".into()]),
            ]);
            w.add_metadata(
                "test.nested",
                MetaValueOwned::Array(MetaArrayOwned::Array(vec![inner])),
            )
            .unwrap();
            w.add_metadata("test.f64", MetaValueOwned::F64(0.25))
                .unwrap();
            w.add_metadata("test.u64", MetaValueOwned::U64(1 << 40))
                .unwrap();
        }
        let mut sources = Vec::new();
        for ty in [GgmlType::Q8_0, GgmlType::F32, GgmlType::Q4_1] {
            let src = g.tensors().iter().find(|t| t.ggml_type == ty).unwrap();
            let dims = [ty.block_size() as u64 * 2, 2];
            w.add_tensor(src.name, ty, &dims).unwrap();
            sources.push(src.data);
        }
        let mut out = Vec::new();
        w.write(&mut out, |i, plan, sink| {
            sink.write_all(&sources[i][..plan.n_bytes as usize])
        })
        .unwrap();
        out
    };

    let seeds = [
        ("smollm2_small", build(None, 8, false)),
        ("smollm2_align64", build(Some(64), 3, false)),
        ("smollm2_nested", build(None, 1, true)),
        ("smollm2_no_arrays", build(None, 0, false)),
    ];
    for (name, bytes) in &seeds {
        assert!(bytes.len() < 64 * 1024, "{name} is {} bytes", bytes.len());
        Gguf::parse(bytes).unwrap_or_else(|e| panic!("seed {name} does not parse: {e}"));
        std::fs::write(dir.join(format!("{name}.bin")), bytes).unwrap();
    }
    // The real file's first bytes: a truncated header, the common hostile case.
    std::fs::write(dir.join("smollm2_head_4k.bin"), &map.bytes()[..4096]).unwrap();
}
