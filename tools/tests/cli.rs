//! End-to-end tests of the `edgellm` binary on the real model: quantize reproduces
//! llama-quantize's tensor bytes, inspect agrees with the `gguf` Python reader, run and
//! tokenize match llama.cpp's recorded outputs, and bad input gives errors, never panics.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use edgellm_runtime::gguf::Gguf;
use edgellm_runtime::mmap::MappedFile;
use sha2::{Digest, Sha256};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edgellm"))
}

fn model() -> PathBuf {
    let p = edgellm_runtime::default_model_path();
    assert!(p.exists(), "{} missing: run `make model`", p.display());
    p
}

fn reference(name: &str) -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/reference")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn edgellm");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "edgellm panicked: {stderr}");
    out
}

fn scratch_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli");
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn quantize_reproduces_llama_quantize_tensor_bytes() {
    let reference = reference("quantized_tensor_sha256.json");
    for ty in ["Q4_0", "Q8_0", "F16", "F32"] {
        let out = scratch_dir().join(format!("q_{ty}.gguf"));
        let o = run(bin().arg("quantize").arg(model()).arg(&out).arg(ty));
        assert!(
            o.status.success(),
            "quantize {ty}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let map = MappedFile::open(&out).unwrap();
        let g = Gguf::parse(map.bytes()).unwrap();
        let want = reference["files"][ty].as_object().unwrap();
        assert_eq!(g.tensors().len(), want.len(), "{ty}: tensor count");
        for t in g.tensors() {
            let w = &want[t.name];
            assert_eq!(
                t.ggml_type.name(),
                w["type"].as_str().unwrap(),
                "{ty} {}: type",
                t.name
            );
            let sha = format!("{:x}", Sha256::digest(t.data));
            assert_eq!(
                sha,
                w["sha256"].as_str().unwrap(),
                "{ty} {}: data sha256",
                t.name
            );
        }
        // ggml-compatible readers accept it: the gguf Python package reads the same tensors.
        if ty == "Q4_0" {
            let py = Command::new("python3")
                .arg("-c")
                .arg("import sys, gguf\nr = gguf.GGUFReader(sys.argv[1])\nprint(len(r.tensors), sum(1 for f in r.fields if not f.startswith('GGUF.')))")
                .arg(&out)
                .output()
                .expect("python3 (make setup installs the gguf package)");
            assert!(
                py.status.success(),
                "gguf reader: {}",
                String::from_utf8_lossy(&py.stderr)
            );
            assert_eq!(String::from_utf8_lossy(&py.stdout).trim(), "272 33");
        }
        if ty == "F32" {
            // 540 MB: do not leave it behind.
            drop(map);
            let _ = std::fs::remove_file(&out);
        }
    }
}

#[test]
fn inspect_json_agrees_with_gguf_python() {
    let o = run(bin().arg("inspect").arg(model()).arg("--json"));
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["architecture"], "llama");
    assert_eq!(v["metadata"].as_object().unwrap().len(), 33);
    assert_eq!(v["tensors"].as_array().unwrap().len(), 272);
    assert_eq!(v["mapped_bytes"], 98_362_432);
    let py = Command::new("python3")
        .arg("-c")
        .arg("import sys, json, gguf\nr = gguf.GGUFReader(sys.argv[1])\nprint(json.dumps([[t.name, t.tensor_type.name, [int(x) for x in t.shape], int(t.n_bytes)] for t in r.tensors]))")
        .arg(model())
        .output()
        .expect("python3 with gguf");
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let theirs: Vec<(String, String, Vec<u64>, u64)> = serde_json::from_slice(&py.stdout).unwrap();
    let ours: Vec<(String, String, Vec<u64>, u64)> = v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["type"].as_str().unwrap().to_string(),
                t["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap())
                    .collect(),
                t["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ours, theirs);
}

#[test]
fn inspect_maps_without_copying() {
    let o = run(Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg(env!("CARGO_BIN_EXE_edgellm"))
        .arg("inspect")
        .arg(model()));
    // GNU time (installed by `make setup`) reports the child's peak RSS in KiB.
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let kb: u64 = stderr
        .trim()
        .lines()
        .last()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The file is 96 MiB; a zero-copy parse touches only the header.
    assert!(
        kb < 40 * 1024,
        "peak RSS {kb} KiB is not far below the 96 MiB file"
    );
}

#[test]
fn run_json_greedy_matches_reference_prefix() {
    let reference = reference("greedy_smollm2.json");
    let e = &reference["Q4_1"][0];
    let o = run(bin()
        .env("EDGELLM_KERNELS", "scalar")
        .args(["run", "--temp", "0", "-n", "5", "--json", "-p"])
        .arg(e["prompt"].as_str().unwrap()));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["prompt_ids"], e["prompt_ids"]);
    let want: Vec<_> = e["generated_ids"].as_array().unwrap()[..5].to_vec();
    assert_eq!(v["generated_ids"].as_array().unwrap(), &want);
    assert_eq!(v["stop_reason"], "max_tokens");
    for k in ["load_ms", "prompt_tokens_per_s", "gen_tokens_per_s"] {
        assert!(v["timings"][k].as_f64().is_some(), "timings.{k}");
    }
}

#[test]
fn tokenize_json_matches_llama_cpp() {
    let reference = reference("tokenize_smollm2.json");
    for e in reference.as_array().unwrap().iter().take(4) {
        let o = run(bin()
            .args(["tokenize", "--json"])
            .arg(e["text"].as_str().unwrap()));
        assert!(o.status.success());
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["ids"], e["ids"], "{}", e["text"]);
    }
}

#[test]
fn plan_json_has_the_stable_fields_and_judges_boards() {
    let o = run(bin().arg("plan").arg(model()).args([
        "--ctx",
        "1024",
        "--json",
        "--board",
        "rpi-zero-2w",
    ]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for k in [
        "weights_bytes",
        "kv_bytes",
        "scratch_bytes",
        "total_bytes",
        "budget_bytes",
    ] {
        assert!(v[k].as_u64().is_some(), "{k}");
    }
    // 30 layers x 1024 positions x 192 (3 KV heads x 64) x 2 (K and V) x 2 bytes.
    assert_eq!(v["kv_bytes"], 30 * 1024 * 192 * 2 * 2);
    assert_eq!(v["weights_bytes"], 98_362_432);
    let total = v["total_bytes"].as_u64().unwrap();
    assert_eq!(
        total,
        v["weights_bytes"].as_u64().unwrap()
            + v["kv_bytes"].as_u64().unwrap()
            + v["scratch_bytes"].as_u64().unwrap()
    );
    assert_eq!(v["fits"], total <= v["budget_bytes"].as_u64().unwrap());
    // A context that cannot fit a small budget is refused with the reason.
    let o = run(bin().arg("plan").arg(model()).args([
        "--ctx",
        "8192",
        "--kv-type",
        "f32",
        "--board",
        "rpi-zero-2w",
    ]));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("fits") || text.contains("DOES NOT FIT"),
        "{text}"
    );
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    // Prompt longer than the context.
    let long = "word ".repeat(400);
    let o = run(bin()
        .args(["run", "--ctx", "64", "-n", "1", "-p"])
        .arg(&long));
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("context"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Invalid sampler values.
    for args in [
        ["--temp", "-1"],
        ["--top-p", "0"],
        ["--top-p", "1.5"],
        ["--min-p", "2"],
    ] {
        let o = run(bin().args(["run", "-n", "1", "-p", "hi"]).args(args));
        assert!(!o.status.success(), "{args:?} accepted");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("error"),
            "{args:?}"
        );
    }
    // Threads 0.
    let o = run(bin().args(["run", "-t", "0", "-n", "1", "-p", "hi"]));
    assert!(!o.status.success());
    // A truncated model file.
    let bytes = std::fs::read(model()).unwrap();
    let cut = scratch_dir().join("truncated.gguf");
    std::fs::write(&cut, &bytes[..1_000_000]).unwrap();
    for sub in [vec!["inspect"], vec!["run", "-p", "hi", "-m"]] {
        let o = run(bin().args(&sub).arg(&cut));
        assert!(!o.status.success(), "{sub:?} accepted a truncated file");
    }
    // An unknown kernel path.
    let o = run(bin().args(["run", "--kernels", "sse9", "-n", "1", "-p", "hi"]));
    assert!(!o.status.success());
}

#[test]
fn chat_keeps_the_conversation_and_obeys_commands() {
    use std::io::Write;
    let mut child = bin()
        .args(["chat", "--temp", "0", "-n", "24", "--ctx", "512"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"What is the capital of France?\n/reset\n/system You answer in one word.\nName a color.\n/exit\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // llama.cpp's greedy answer to this chat (reference prompt 4) starts "L'Étoile, la".
    assert!(stdout.starts_with("L'Étoile, la"), "first answer: {stdout}");
    assert!(stderr.contains("(conversation cleared)"), "{stderr}");
    assert!(stderr.contains("(system message set"), "{stderr}");
    assert!(
        stdout.lines().filter(|l| !l.trim().is_empty()).count() >= 2,
        "two answers: {stdout}"
    );
}
