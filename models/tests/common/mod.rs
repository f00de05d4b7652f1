//! What the end-to-end model tests share: the real model's path, files derived from it with
//! `edgellm quantize` (made once, kept beside it), and the llama.cpp reference outputs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use edgellm_models::quantize::quantize_file;
use edgellm_models::{LoadOptions, Model};
use edgellm_runtime::kernels::Kernels;
use edgellm_runtime::GgmlType;

pub fn model_path() -> PathBuf {
    let p = edgellm_runtime::default_model_path();
    assert!(
        p.exists(),
        "model file {} is missing: run `make model` (or set EDGELLM_MODEL)",
        p.display()
    );
    p
}

pub fn reference_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference")
}

pub fn reference_json(name: &str) -> serde_json::Value {
    let p = reference_dir().join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

static DERIVE_LOCK: Mutex<()> = Mutex::new(());

/// The default model converted to `ty` by edgellm's own quantizer (cached next to it).
pub fn derived_model(ty: GgmlType) -> PathBuf {
    let src = model_path();
    if ty == GgmlType::Q4_1 {
        return src;
    }
    let out = src.with_file_name(format!("SmolLM2-135M-Instruct.{}.edgellm.gguf", ty.name()));
    let _guard = DERIVE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let stale = match (std::fs::metadata(&out), std::fs::metadata(&src)) {
        (Ok(o), Ok(s)) => o.modified().ok() < s.modified().ok(),
        _ => true,
    };
    if stale {
        quantize_file(&src, &out, ty, &mut |_, _| {}).expect("quantize");
    }
    out
}

pub fn threads() -> usize {
    std::env::var("EDGELLM_TEST_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(2)
        })
}

pub fn load(path: &Path) -> Model {
    Model::load(
        path,
        LoadOptions {
            n_threads: threads(),
            kernels: Some(Kernels::from_env().expect("EDGELLM_KERNELS")),
        },
    )
    .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

/// The kernels the token-exact tests pin: `EDGELLM_KERNELS` when set, else the scalar
/// specification (the SIMD paths are held to it kernel by kernel in runtime's tests).
pub fn reference_kernels() -> Kernels {
    match std::env::var("EDGELLM_KERNELS") {
        Ok(_) => Kernels::from_env().expect("EDGELLM_KERNELS"),
        Err(_) => Kernels::scalar(),
    }
}

pub fn load_with(path: &Path, kernels: Kernels) -> Model {
    Model::load(
        path,
        LoadOptions {
            n_threads: threads(),
            kernels: Some(kernels),
        },
    )
    .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

/// The text both perplexity tests score (Debian's base-files ships it; llama.cpp's figures in
/// shared/reference were computed on it).
pub const GPL3: &str = "/usr/share/common-licenses/GPL-3";

/// The GPL-3 text's perplexity under `model` at context `ctx`, llama.cpp's method.
pub fn gpl3_perplexity(model: &Model, ctx: usize) -> f64 {
    let text = std::fs::read_to_string(GPL3).expect("GPL-3 text (Debian base-files)");
    let tokens = model.tokenizer.encode(&text, true, false).unwrap();
    assert_eq!(
        tokens.len(),
        7639,
        "llama.cpp tokenizes GPL-3 into 7639 tokens"
    );
    let mut state = model
        .new_state(edgellm_models::StateOptions {
            n_ctx: ctx,
            n_batch: ctx,
            all_logits: true,
            ..Default::default()
        })
        .unwrap();
    let nll =
        edgellm_models::perplexity::perplexity(model, &mut state, &tokens, None, &mut |_, _, _| {})
            .unwrap();
    nll.ppl().0
}

/// Gemma-3-270M Q4_K_M (`tools/fetch-model.sh gemma3`), or `EDGELLM_GEMMA3_MODEL`.
pub fn gemma3_model_path() -> PathBuf {
    let p = match std::env::var_os("EDGELLM_GEMMA3_MODEL") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("gguf/gemma-3-270m-q4_k_m.gguf"),
    };
    assert!(
        p.exists(),
        "model file {} is missing: run `tools/fetch-model.sh gemma3` (or set EDGELLM_GEMMA3_MODEL)",
        p.display()
    );
    p
}

/// A fixture of this crate's tests (`models/tests/fixtures/NAME`).
pub fn fixture_json(name: &str) -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

/// GPL-3's token count under `model` (BOS added, as llama-perplexity) and its perplexity at
/// context `ctx`, llama.cpp's method (each chunk starts with BOS when the vocabulary adds one).
pub fn gpl3_tokens_and_perplexity(model: &Model, ctx: usize) -> (usize, f64) {
    let text = std::fs::read_to_string(GPL3).expect("GPL-3 text (Debian base-files)");
    let tokens = model.tokenizer.encode(&text, true, false).unwrap();
    let mut state = model
        .new_state(edgellm_models::StateOptions {
            n_ctx: ctx,
            n_batch: ctx,
            all_logits: true,
            ..Default::default()
        })
        .unwrap();
    let bos = model
        .tokenizer
        .add_bos()
        .then(|| model.tokenizer.bos())
        .flatten();
    let nll =
        edgellm_models::perplexity::perplexity(model, &mut state, &tokens, bos, &mut |_, _, _| {})
            .unwrap();
    (tokens.len(), nll.ppl().0)
}

struct DiscardText;
impl edgellm_models::TokenSink for DiscardText {
    fn on_text(&mut self, _text: &str) -> bool {
        true
    }
}

/// Greedy ids for `prompt` and the step-0 logits, exactly as the llama.cpp reference drivers
/// ran: whole prompt in one batch, argmax of raw logits, stop only at an end-of-generation token
/// (which is included). `kv_pad` is the KV padding of the llama.cpp build that made the
/// reference ([`StateOptions::kv_pad`](edgellm_models::StateOptions::kv_pad)).
pub fn reference_greedy(
    model: &Model,
    prompt: &[u32],
    n: usize,
    kv_pad: usize,
) -> (Vec<u32>, Vec<f32>) {
    use edgellm_models::{GenerateParams, Generator, LogitsWanted, StateOptions};
    let mut state = model
        .new_state(StateOptions {
            n_ctx: prompt.len() + n + 8,
            n_batch: prompt.len(),
            kv_pad,
            ..Default::default()
        })
        .unwrap();
    let mut gen = Generator::new(model).unwrap();
    model
        .forward(&mut state, prompt, LogitsWanted::Last)
        .unwrap();
    let step0 = state.logits().to_vec();
    state.reset();
    let params = GenerateParams {
        max_tokens: n,
        sampler: edgellm_runtime::sampler::SamplerConfig::greedy(),
        ..Default::default()
    };
    let out = gen
        .generate(model, &mut state, prompt, &params, &mut DiscardText)
        .unwrap();
    (out.generated, step0)
}

/// A JSON array of token ids.
pub fn json_ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}
