//! `edgellm quantize` to the K-quant mixtures against llama.cpp's llama-quantize
//! (`fixtures/kquant_tensor_sha256.json`, made by `tools/make-kquant-reference.sh`): every
//! tensor's type and data bytes equal for Q4_K_M, Q5_K_M and Q6_K made from the Q4_1 model,
//! and each file's perplexity on GPL-3 within 1% of llama-perplexity's (`#[ignore]`d for time:
//! `cargo test --release -p edgellm-models --test quantize_kquants -- --ignored`). The
//! perplexity moves by a few tenths of a percent with the float summation order of the row dots
//! alone (scalar and SIMD kernels land on either side of llama.cpp's figure), hence 1%.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use edgellm_models::quantize::{quantize_file, QuantizeTarget};
use edgellm_runtime::gguf::Gguf;
use edgellm_runtime::mmap::MappedFile;

const TARGETS: [&str; 3] = ["Q4_K_M", "Q5_K_M", "Q6_K"];

fn fixture() -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kquant_tensor_sha256.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

/// Targets quantized by this test process (each once, under the lock: tests run in parallel).
static MADE: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

/// The default model quantized to `name` by this build of edgellm (in the target dir).
fn edgellm_file(name: &'static str) -> PathBuf {
    let target = QuantizeTarget::from_name(name).unwrap();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(dir).unwrap();
    let out = dir.join(format!("SmolLM2-135M-Instruct.{name}.edgellm.gguf"));
    let mut made = MADE.lock().unwrap_or_else(|p| p.into_inner());
    if !made.contains(&name) {
        quantize_file(&common::model_path(), &out, target, &mut |_, _| {}).expect("quantize");
        made.push(name);
    }
    out
}

#[test]
fn kquant_files_equal_llama_quantize_tensor_for_tensor() {
    let reference = fixture();
    for name in TARGETS {
        let want = &reference["files"][name];
        let path = edgellm_file(name);
        let map = MappedFile::open(&path).unwrap();
        let g = Gguf::parse(map.bytes()).unwrap();
        assert_eq!(
            g.get_u32("general.file_type").unwrap(),
            want["file_type"].as_u64().map(|v| v as u32),
            "{name}: general.file_type"
        );
        let tensors = want["tensors"].as_object().unwrap();
        assert_eq!(g.tensors().len(), tensors.len(), "{name}: tensor count");
        let mut wrong = Vec::new();
        for t in g.tensors() {
            let w = &tensors[t.name];
            let (ty, sha) = (t.ggml_type.name(), sha256_hex(t.data));
            if ty != w["type"].as_str().unwrap() || sha != w["sha256"].as_str().unwrap() {
                wrong.push(format!("{} ({ty}, want {})", t.name, w["type"]));
            }
        }
        assert!(
            wrong.is_empty(),
            "{name}: {} tensors differ from llama-quantize's: {wrong:?}",
            wrong.len()
        );
    }
}

fn edgellm_ppl(path: &Path, ctx: usize) -> f64 {
    common::gpl3_perplexity(&common::load(path), ctx)
}

fn check_ppl(name: &'static str, ctx: usize) {
    let want = fixture()["files"][name][format!("ppl_c{ctx}")]
        .as_f64()
        .unwrap();
    let got = edgellm_ppl(&edgellm_file(name), ctx);
    let rel = (got - want).abs() / want;
    eprintln!(
        "{name} c={ctx}: edgellm {got:.4}, llama.cpp {want:.4} ({:.3}%)",
        rel * 100.0
    );
    assert!(
        rel < 0.01,
        "{name} c={ctx}: perplexity {got:.4} is not within 1% of llama.cpp's {want:.4}"
    );
}

#[test]
#[ignore = "slow (about 90 s on 2 x86 cores): run with --ignored"]
fn ppl_q4_k_m_c256() {
    check_ppl("Q4_K_M", 256);
}

#[test]
#[ignore = "slow: run with --ignored"]
fn ppl_q4_k_m_c512() {
    check_ppl("Q4_K_M", 512);
}

#[test]
#[ignore = "slow: run with --ignored"]
fn ppl_q5_k_m() {
    check_ppl("Q5_K_M", 256);
    check_ppl("Q5_K_M", 512);
}

#[test]
#[ignore = "slow: run with --ignored"]
fn ppl_q6_k() {
    check_ppl("Q6_K", 256);
    check_ppl("Q6_K", 512);
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
