//! Round trips through `GgufWriter` and `Gguf::parse`, checked against the values put in and
//! against the reference reader, the Python `gguf` package (gguf-py, llama.cpp's own).

use std::io::Write;
use std::process::Command;

use super::*;

/// Every metadata type, nested arrays included, in a fixed order.
fn every_type_metadata() -> Vec<(&'static str, MetaValueOwned)> {
    use MetaArrayOwned as A;
    use MetaValueOwned as V;
    vec![
        ("general.architecture", V::Str("llama".into())),
        ("t.u8", V::U8(200)),
        ("t.i8", V::I8(-100)),
        ("t.u16", V::U16(60000)),
        ("t.i16", V::I16(-30000)),
        ("t.u32", V::U32(4_000_000_000)),
        ("t.i32", V::I32(-2_000_000_000)),
        ("t.f32", V::F32(1.0e-5)),
        ("t.bool_true", V::Bool(true)),
        ("t.bool_false", V::Bool(false)),
        ("t.str", V::Str("héllo <|im_end|> \u{1F600}".into())),
        ("t.str_empty", V::Str(String::new())),
        ("t.u64", V::U64(u64::MAX - 1)),
        ("t.i64", V::I64(i64::MIN + 1)),
        ("t.f64", V::F64(-1.0 / 3.0)),
        ("a.u8", V::Array(A::U8(vec![0, 1, 255]))),
        ("a.i8", V::Array(A::I8(vec![-128, 0, 127]))),
        ("a.u16", V::Array(A::U16(vec![1, 65535]))),
        ("a.i16", V::Array(A::I16(vec![-32768, 32767]))),
        ("a.u32", V::Array(A::U32(vec![7, u32::MAX]))),
        ("a.i32", V::Array(A::I32(vec![3, -1, 3, 1]))),
        ("a.f32", V::Array(A::F32(vec![0.5, -0.0, 1.0e30, -12.125]))),
        ("a.bool", V::Array(A::Bool(vec![true, false, true]))),
        (
            "a.str",
            V::Array(A::Str(vec![
                "<|endoftext|>".into(),
                "Ġ t".into(),
                "".into(),
                "ü".into(),
            ])),
        ),
        ("a.u64", V::Array(A::U64(vec![u64::MAX, 0]))),
        ("a.i64", V::Array(A::I64(vec![i64::MIN, -5]))),
        (
            "a.f64",
            V::Array(A::F64(vec![std::f64::consts::PI, -2.5e-300])),
        ),
        ("a.empty", V::Array(A::I32(Vec::new()))),
        (
            "a.nested_i32",
            V::Array(A::Array(vec![
                A::I32(vec![1, 2]),
                A::I32(vec![3]),
                A::I32(vec![]),
            ])),
        ),
        (
            "a.nested3_str",
            V::Array(A::Array(vec![
                A::Array(vec![A::Str(vec!["a".into(), "bc".into()])]),
                A::Array(vec![A::Str(vec!["d".into()]), A::Str(vec![])]),
            ])),
        ),
        ("general.alignment", V::U32(64)),
    ]
}

/// Tensors of several types; the I8 one has an odd size so padding between tensors is exercised.
fn tensor_specs() -> Vec<(&'static str, GgmlType, Vec<u64>)> {
    vec![
        ("w.f32", GgmlType::F32, vec![4, 3]),
        ("w.q4_0", GgmlType::Q4_0, vec![64, 2]),
        ("w.i8", GgmlType::I8, vec![5]),
        ("w.q8_0", GgmlType::Q8_0, vec![32]),
        ("w.f16", GgmlType::F16, vec![8, 2, 3]),
        ("w.q4_1", GgmlType::Q4_1, vec![32, 1, 1, 2]),
    ]
}

/// Deterministic, tensor-specific bytes.
fn tensor_bytes(i: usize, n: u64) -> Vec<u8> {
    (0..n)
        .map(|j| (j as usize * 31 + i * 7 + 1) as u8)
        .collect()
}

fn write_test_file() -> (GgufWriter, Vec<u8>) {
    let mut w = GgufWriter::new();
    for (k, v) in every_type_metadata() {
        w.add_metadata(k, v).unwrap();
    }
    for (name, ty, dims) in tensor_specs() {
        w.add_tensor(name, ty, &dims).unwrap();
    }
    let mut out = Vec::new();
    let size = w
        .write(&mut out, |i, plan, sink| {
            // Stream in two chunks to show the writer does not need a tensor in one piece.
            let bytes = tensor_bytes(i, plan.n_bytes);
            let (a, b) = bytes.split_at(bytes.len() / 2);
            sink.write_all(a)?;
            sink.write_all(b)
        })
        .unwrap();
    assert_eq!(size, out.len() as u64);
    (w, out)
}

/// The value as `MetaValueOwned`, from our parser's borrowed value.
fn owned(v: &MetaValue<'_>) -> MetaValueOwned {
    MetaValueOwned::from(v)
}

#[test]
fn writer_round_trips_through_parser() {
    let (_, bytes) = write_test_file();
    let g = Gguf::parse(&bytes).unwrap();
    assert_eq!(g.version(), 3);
    assert_eq!(g.alignment(), 64);
    assert_eq!(g.data_offset() % 64, 0);
    let expected = every_type_metadata();
    assert_eq!(g.metadata().len(), expected.len());
    for ((k, v), (ek, ev)) in g.metadata().iter().zip(&expected) {
        assert_eq!(k, ek);
        assert_eq!(&owned(v), ev, "key {k}");
    }
    assert_eq!(g.tensors().len(), tensor_specs().len());
    for (i, (t, (name, ty, dims))) in g.tensors().iter().zip(tensor_specs()).enumerate() {
        assert_eq!(t.name, name);
        assert_eq!(t.ggml_type, ty);
        assert_eq!(t.dims(), &dims[..]);
        assert_eq!(t.offset % 64, 0);
        assert_eq!(t.data, &tensor_bytes(i, t.data.len() as u64)[..]);
        assert_eq!(g.tensor(name).map(|t| t.name), Some(name));
    }
    // The end of the file is padded like gguf-py does.
    assert_eq!(bytes.len() % 64, 0);
}

#[test]
fn typed_getters_convert_or_name_the_key() {
    let (_, bytes) = write_test_file();
    let g = Gguf::parse(&bytes).unwrap();
    assert_eq!(g.architecture().unwrap(), "llama");
    assert_eq!(g.get_u32("t.u8").unwrap(), Some(200));
    assert_eq!(g.get_u32("t.u32").unwrap(), Some(4_000_000_000));
    assert_eq!(g.get_u64("t.u64").unwrap(), Some(u64::MAX - 1));
    assert_eq!(g.get_u32("missing").unwrap(), None);
    let err = g.get_u32("t.i32").unwrap_err();
    assert!(matches!(err, GgufError::OutOfRange { ref key, .. } if key == "t.i32"));
    let err = g.get_u32("t.u64").unwrap_err();
    assert!(err.to_string().contains("t.u64"), "{err}");
    let err = g.get_u32("t.str").unwrap_err();
    assert_eq!(err.to_string(), "key 't.str': expected u32, found string");
    let err = g.get_str("a.i32").unwrap_err();
    assert_eq!(
        err.to_string(),
        "key 'a.i32': expected string, found array of i32"
    );
    assert_eq!(g.get_f32("t.f32").unwrap(), Some(1.0e-5));
    assert_eq!(g.get_f32("t.f64").unwrap(), Some((-1.0f64 / 3.0) as f32));
    assert_eq!(g.get_bool("t.bool_true").unwrap(), Some(true));
    assert!(g.get_bool("t.u8").is_err());

    let a = g.get_array("a.i32").unwrap().unwrap();
    assert_eq!(a.len(), 4);
    assert_eq!(a.to_i32_vec().unwrap(), vec![3, -1, 3, 1]);
    assert!(a.to_u32_vec().is_err()); // -1 does not fit
    assert!(a.to_f32_vec().is_err());
    assert!(a.strings().is_err());
    let a = g.get_array("a.u8").unwrap().unwrap();
    assert_eq!(a.to_u32_vec().unwrap(), vec![0, 1, 255]);
    assert_eq!(a.to_i32_vec().unwrap(), vec![0, 1, 255]);
    let a = g.get_array("a.f32").unwrap().unwrap();
    assert_eq!(a.to_f32_vec().unwrap(), vec![0.5, -0.0, 1.0e30, -12.125]);
    let a = g.get_array("a.str").unwrap().unwrap();
    let strings: Vec<&str> = a.strings().unwrap().collect();
    assert_eq!(strings, ["<|endoftext|>", "Ġ t", "", "ü"]);
    let a = g.get_array("a.nested_i32").unwrap().unwrap();
    let inner: Vec<Vec<i32>> = a
        .iter()
        .map(|v| match v {
            MetaValue::Array(x) => x.to_i32_vec().unwrap(),
            other => panic!("not an array: {other:?}"),
        })
        .collect();
    assert_eq!(inner, vec![vec![1, 2], vec![3], vec![]]);
}

#[test]
fn writer_rejects_what_the_parser_would() {
    let mut w = GgufWriter::new();
    w.add_metadata("k", 1u32).unwrap();
    assert!(matches!(
        w.add_metadata("k", 2u32),
        Err(GgufError::DuplicateKey { ref key, .. }) if key == "k"
    ));
    assert!(matches!(
        w.add_metadata(KEY_ALIGNMENT, 48u32),
        Err(GgufError::BadAlignment { alignment: 48 })
    ));
    assert!(w.add_metadata(KEY_ALIGNMENT, "32").is_err());
    w.add_tensor("t", GgmlType::F32, &[2]).unwrap();
    assert!(matches!(
        w.add_tensor("t", GgmlType::F32, &[2]),
        Err(GgufError::DuplicateTensor { .. })
    ));
    assert!(matches!(
        w.add_tensor("q", GgmlType::Q4_0, &[33]),
        Err(GgufError::NotBlockMultiple { ne0: 33, .. })
    ));
    assert!(matches!(
        w.add_tensor("z", GgmlType::F32, &[4, 0]),
        Err(GgufError::BadDim {
            dim: 1,
            value: 0,
            ..
        })
    ));
    // A callback that writes the wrong number of bytes is caught, naming the tensor.
    let err = w
        .write(Vec::new(), |_, _, sink| sink.write_all(&[0u8; 7]))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "tensor 't': 7 data bytes written, the header promised 8"
    );
}

/// Python's view of a metadata value: scalars as JSON, floats as the bits of the f64 they
/// widen to, arrays flattened to their leaves (gguf-py's `ReaderField.contents()` flattens).
fn python_json(v: &MetaValue<'_>, out: &mut Vec<serde_json::Value>) {
    use serde_json::json;
    let f = |x: f64| json!({ "f64bits": x.to_bits() });
    out.push(match *v {
        MetaValue::U8(x) => json!(x),
        MetaValue::I8(x) => json!(x),
        MetaValue::U16(x) => json!(x),
        MetaValue::I16(x) => json!(x),
        MetaValue::U32(x) => json!(x),
        MetaValue::I32(x) => json!(x),
        MetaValue::U64(x) => json!(x),
        MetaValue::I64(x) => json!(x),
        MetaValue::F32(x) => f(x.into()),
        MetaValue::F64(x) => f(x),
        MetaValue::Bool(x) => json!(x),
        MetaValue::Str(s) => json!(s),
        MetaValue::Array(a) => {
            for e in a.iter() {
                python_json(&e, out);
            }
            return;
        }
    });
}

const PY_READ: &str = r#"
import json, struct, sys
import gguf
r = gguf.GGUFReader(sys.argv[1])
def enc(x):
    if isinstance(x, float):
        return {"f64bits": struct.unpack("<Q", struct.pack("<d", x))[0]}
    if isinstance(x, list):
        return [enc(e) for e in x]
    return x
fields = []
for name, f in r.fields.items():
    if name.startswith("GGUF."):
        continue
    c = f.contents()
    fields.append([name, int(f.types[0]), enc(c) if isinstance(c, list) else [enc(c)]])
tensors = [[t.name, int(t.tensor_type), [int(d) for d in t.shape], int(t.data_offset), t.data.tobytes().hex()] for t in r.tensors]
print(json.dumps({"alignment": int(r.alignment), "fields": fields, "tensors": tensors}))
"#;

#[test]
fn writer_output_matches_gguf_py_reader() {
    let probe = Command::new("python3").args(["-c", "import gguf"]).output();
    match &probe {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            println!(
                "skipping the gguf-py comparison: `import gguf` failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            return;
        }
        Err(e) => {
            println!("skipping the gguf-py comparison: cannot run python3: {e}");
            return;
        }
    }
    let (_, bytes) = write_test_file();
    let path =
        std::env::temp_dir().join(format!("edgellm-gguf-writer-{}.gguf", std::process::id()));
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(&bytes))
        .unwrap();
    let out = Command::new("python3")
        .args(["-c", PY_READ])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "gguf-py failed to read our file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let py: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let g = Gguf::parse(&bytes).unwrap();
    assert_eq!(py["alignment"], 64);
    let fields = py["fields"].as_array().unwrap();
    assert_eq!(fields.len(), g.metadata().len());
    for (field, (key, value)) in fields.iter().zip(g.metadata()) {
        assert_eq!(field[0], *key);
        assert_eq!(field[1], value.value_type().id(), "type of {key}");
        let mut ours = Vec::new();
        python_json(value, &mut ours);
        assert_eq!(field[2], serde_json::Value::Array(ours), "value of {key}");
    }
    let tensors = py["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), g.tensors().len());
    for (pt, t) in tensors.iter().zip(g.tensors()) {
        assert_eq!(pt[0], t.name);
        assert_eq!(pt[1], t.ggml_type.id(), "type of {}", t.name);
        let dims: Vec<u64> = serde_json::from_value(pt[2].clone()).unwrap();
        assert_eq!(dims, t.dims(), "shape of {}", t.name);
        assert_eq!(
            pt[3],
            g.data_offset() + t.offset,
            "data offset of {}",
            t.name
        );
        let hex: String = t.data.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(pt[4], hex, "data of {}", t.name);
    }
}
