//! Greedy generation against llama.cpp's recorded outputs (`shared/reference/greedy_smollm2.json`):
//! ids equal at every step before the first near-tie (reference margin < 0.05), all 48 where
//! there is none; step-0 top-10 logits within 0.05.

mod common;

use edgellm_runtime::kernels::{KernelPath, Kernels};
use edgellm_runtime::GgmlType;

const MARGIN: f64 = 0.05;

/// The KV padding of the llama.cpp build that made shared/reference (c392e50, Feb 2025).
const REFERENCE_KV_PAD: usize = 32;

/// Logit tolerance, for the step-0 logits and as the near-tie margin of the id rule. The scalar
/// kernels compute what llama.cpp's x86 build computes, bit for bit where it matters (its
/// activation quantizer, its summation orders, its exponential and fused multiply-adds): the
/// reference rule, 0.05, and in practice 48 of 48 ids and step-0 logits within 1e-4. The NEON
/// kernels compute the scalar bits in every kernel a Q4_0, Q4_1, Q5_0 or Q8_0 forward pass
/// uses, so they are held to the same rule. The x86 SIMD kernels sum in their own orders;
/// with int8 activations one different bit upstream of a quantizer flips quants, and after 30
/// layers the logits differ by 0.15-0.5, so for the quantized formats they are held to 1.0
/// (F32 and F16 have no activation quantizer: 0.05).
fn logit_tolerance(ty: GgmlType, path: KernelPath) -> f64 {
    match (ty, path) {
        (_, KernelPath::Scalar)
        | (GgmlType::F32 | GgmlType::F16, _)
        | (
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q8_0,
            KernelPath::Neon | KernelPath::NeonDotprod,
        ) => MARGIN,
        _ => 1.0,
    }
}

fn check_format(key: &str, ty: GgmlType, max_prompts: usize, n_steps: usize) {
    check_format_with(key, ty, max_prompts, n_steps, common::reference_kernels());
}

fn check_format_with(
    key: &str,
    ty: GgmlType,
    max_prompts: usize,
    n_steps: usize,
    kernels: Kernels,
) {
    let path = kernels.path();
    let tolerance = logit_tolerance(ty, path);
    let reference = common::reference_json("greedy_smollm2.json");
    let model = common::load_with(&common::derived_model(ty), kernels);
    let entries = reference[key].as_array().unwrap();
    let mut report = Vec::new();
    for e in entries.iter().take(max_prompts) {
        let prompt_text = e["prompt"].as_str().unwrap();
        let want_prompt: Vec<u32> = common::json_ids(&e["prompt_ids"]);
        let prompt = model.tokenizer.encode(prompt_text, true, true).unwrap();
        assert_eq!(prompt, want_prompt, "prompt ids for {prompt_text:?}");
        let want: Vec<u32> = common::json_ids(&e["generated_ids"]);
        let margins: Vec<f64> = e["top1_minus_top2_logit_margin"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_f64().unwrap())
            .collect();
        let n = n_steps.min(want.len());
        let (got, step0) = common::reference_greedy(&model, &prompt, n, REFERENCE_KV_PAD);
        // Steps that must match: up to (not including) the first near-tie.
        let must = margins
            .iter()
            .take(n)
            .position(|&m| m < tolerance)
            .unwrap_or(n);
        assert!(
            got.len() >= must,
            "{key} {prompt_text:?}: generated only {} ids",
            got.len()
        );
        assert_eq!(
            &got[..must],
            &want[..must],
            "{key} {prompt_text:?}: ids differ before the first near-tie (step {must})"
        );
        let same = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
        let mut worst = 0.0f64;
        for pair in e["step0_top10_id_logit"].as_array().unwrap() {
            let id = pair[0].as_u64().unwrap() as usize;
            let logit = pair[1].as_f64().unwrap();
            let ours = step0[id] as f64;
            worst = worst.max((ours - logit).abs());
            assert!(
                (ours - logit).abs() < tolerance,
                "{key} {prompt_text:?}: step-0 logit of {id}: {ours} vs llama.cpp {logit}"
            );
        }
        report.push(format!(
            "{key} ({path}) {prompt_text:?}: {same}/{n} equal, {must} required; step-0 top-10 logits within {worst:.4}"
        ));
    }
    for r in report {
        eprintln!("{r}");
    }
}

#[test]
#[cfg_attr(
    target_arch = "aarch64",
    ignore = "too slow under QEMU: greedy_q4_1_short covers aarch64"
)]
fn greedy_q4_1_matches_llama_cpp() {
    check_format("Q4_1", GgmlType::Q4_1, usize::MAX, 48);
}

#[test]
#[cfg_attr(
    target_arch = "aarch64",
    ignore = "too slow under QEMU: greedy_q4_1_short covers aarch64"
)]
fn greedy_q8_0_matches_llama_cpp() {
    check_format("Q8_0", GgmlType::Q8_0, usize::MAX, 48);
}

#[test]
#[cfg_attr(
    target_arch = "aarch64",
    ignore = "too slow under QEMU: greedy_q4_1_short covers aarch64"
)]
fn greedy_f32_matches_llama_cpp() {
    check_format("F32_dequantized_from_Q4_1", GgmlType::F32, usize::MAX, 48);
}

/// The short version the aarch64 (QEMU) run uses: first prompt, 16 tokens, on the scalar
/// kernels (held to 0.05 on every target) and on the path `EDGELLM_KERNELS` names, if another.
#[test]
fn greedy_q4_1_short() {
    check_format_with("Q4_1", GgmlType::Q4_1, 1, 16, Kernels::scalar());
    let chosen = common::reference_kernels();
    if chosen.path() != KernelPath::Scalar {
        check_format("Q4_1", GgmlType::Q4_1, 1, 16);
    }
}
