//! `edgellm serve`'s Unix socket with real clients: the `openai` Python package (answers equal
//! `edgellm run`'s at temperature 0, beam answers `edgellm run --beams`'s), `curl --unix-socket` on every endpoint and error status,
//! concurrent clients served in queue order, the queue limit, and SIGTERM mid-answer.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::serve::{curl, post, Serve};
use serde_json::{json, Value};

const N: usize = 16;
const QUESTION: &str = "What is the capital of France?";
const PROMPT: &str = "The three primary colors are";

fn client(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(name)
}

/// Runs a Python client script; its stdout is one JSON object.
fn python(script: &str, args: &[String]) -> Value {
    let out = Command::new("python3")
        .arg(client(script))
        .args(args)
        .output()
        .expect("running python3");
    assert!(
        out.status.success(),
        "{script} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{script} printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// `edgellm run ARGS` stdout: the answer then a newline.
fn edgellm_run(args: &[&str]) -> String {
    let out = Command::new(Serve::edgellm())
        .arg("run")
        .arg("-m")
        .arg(Serve::model_path())
        .args(["-t", "1", "--temp", "0", "-n", &N.to_string()])
        .args(args)
        .output()
        .expect("running edgellm run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.strip_suffix('\n')
        .expect("run ends with a newline")
        .to_string()
}

#[test]
fn the_openai_package_gets_what_edgellm_run_prints() {
    let mut serve = Serve::start(&[]);
    let r = python(
        "openai_client.py",
        &[
            serve.socket.display().to_string(),
            QUESTION.into(),
            PROMPT.into(),
            N.to_string(),
        ],
    );
    let chat_run = edgellm_run(&["--chat", "-p", QUESTION]);
    let completion_run = edgellm_run(&["-p", PROMPT]);
    println!("chat: {:?}\ncompletion: {:?}", r["chat"], r["completion"]);
    assert_eq!(r["chat"], chat_run.as_str());
    assert_eq!(r["stream_text"], chat_run.as_str());
    assert_eq!(r["completion"], completion_run.as_str());
    assert_eq!(r["stream_roles"], json!(["assistant"]));
    assert_eq!(r["stream_finish"], r["chat_finish"]);
    assert_eq!(
        r["stream_usage"]["completion_tokens"],
        r["chat_usage"]["completion_tokens"]
    );
    assert_eq!(
        r["stream_usage"]["prompt_tokens"],
        r["chat_usage"]["prompt_tokens"]
    );
    assert!(r["completion_usage"]["completion_tokens"].as_u64().unwrap() <= N as u64);
    let model = r["models"][0].as_str().unwrap();
    assert_eq!(r["chat_model"], model);
    assert_ne!(model, "anything");
    assert_eq!(serve.sigterm().code(), Some(0));
}

#[test]
fn the_openai_package_gets_beams_equal_to_edgellm_run_beams() {
    let mut serve = Serve::start(&["--max-beams", "4"]);
    let r = python(
        "openai_beams.py",
        &[
            serve.socket.display().to_string(),
            QUESTION.into(),
            N.to_string(),
        ],
    );
    println!("{r}");
    let run = edgellm_run(&["--chat", "-p", QUESTION, "--beams", "4"]);
    assert_eq!(r["texts"][0], run.as_str());
    assert_eq!(r["texts"].as_array().unwrap().len(), 2);
    assert_ne!(r["texts"][0], r["texts"][1]);
    let scores: Vec<f64> = r["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_f64().expect("beam_score"))
        .collect();
    assert!(scores[0] >= scores[1], "{scores:?}");
    assert!(r["usage"]["completion_tokens"].as_u64().unwrap() <= N as u64);
    assert_eq!(serve.sigterm().code(), Some(0));
}

/// `curl --unix-socket SOCK` with `args`; returns (status, body).
fn error_code(body: &str) -> Value {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert!(v["error"]["message"].is_string(), "{body}");
    assert!(v["error"]["type"].is_string(), "{body}");
    v["error"]["code"].clone()
}

#[test]
fn curl_reaches_every_endpoint_and_every_error() {
    let mut serve = Serve::start(&["--queue", "1", "--max-body", "4096"]);
    let sock = serve.socket.clone();

    let (s, b) = curl(&sock, &["http://localhost/health"]);
    assert_eq!(s, 200, "{b}");
    let health: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["context"], 2048);
    assert_eq!(health["threads"], 1);
    let model = health["model"].as_str().unwrap().to_string();

    let (s, b) = curl(&sock, &["http://localhost/v1/models"]);
    assert_eq!(s, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&b).unwrap()["data"][0]["id"],
        model.as_str()
    );

    let (s, b) = post(&sock, "/tokenize", r#"{"content": "Hello world"}"#);
    assert_eq!(s, 200);
    let tokens = serde_json::from_str::<Value>(&b).unwrap()["tokens"].clone();
    assert!(!tokens.as_array().unwrap().is_empty());
    let (s, b) = post(
        &sock,
        "/detokenize",
        &json!({ "tokens": tokens }).to_string(),
    );
    assert_eq!(s, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&b).unwrap()["content"],
        "Hello world"
    );

    let chat = json!({"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 8, "temperature": 0});
    let (s, b) = post(&sock, "/v1/chat/completions", &chat.to_string());
    assert_eq!(s, 200, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], model.as_str());
    let mut streamed = chat.clone();
    streamed["stream"] = json!(true);
    let (s, b) = curl(
        &sock,
        &[
            "-N",
            "-d",
            &streamed.to_string(),
            "http://localhost/v1/chat/completions",
        ],
    );
    assert_eq!(s, 200);
    assert!(b.contains("\"object\":\"chat.completion.chunk\""), "{b}");
    assert!(b.trim_end().ends_with("data: [DONE]"), "{b}");
    let (s, b) = post(
        &sock,
        "/v1/completions",
        r#"{"prompt": "Once upon a time", "max_tokens": 4, "temperature": 0}"#,
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        serde_json::from_str::<Value>(&b).unwrap()["object"],
        "text_completion"
    );

    // Errors.
    let (s, b) = post(&sock, "/v1/chat/completions", "{not json");
    assert_eq!(s, 400, "{b}");
    error_code(&b);
    let (s, b) = post(
        &sock,
        "/v1/chat/completions",
        r#"{"messages": [{"role": "user", "content": "hi"}], "temperature": -1}"#,
    );
    assert_eq!(s, 400);
    assert!(b.contains("temperature"), "{b}");
    let (s, b) = post(
        &sock,
        "/v1/chat/completions",
        r#"{"messages": [{"role": "user", "content": "hi"}], "n": 2}"#,
    );
    assert_eq!(s, 400, "{b}");
    let (s, b) = curl(&sock, &["http://localhost/v2/nothing"]);
    assert_eq!(s, 404);
    assert_eq!(error_code(&b), "unknown_url");
    let (s, b) = curl(&sock, &["-X", "DELETE", "http://localhost/v1/models"]);
    assert_eq!(s, 405);
    assert_eq!(error_code(&b), "method_not_allowed");
    let big = json!({"prompt": "x".repeat(8000)}).to_string();
    let (s, b) = post(&sock, "/v1/completions", &big);
    assert_eq!(s, 413, "{b}");
    assert_eq!(error_code(&b), "body_too_large");

    // 429: one answer running, one queued (--queue 1), the third is refused.
    let long = json!({"messages": [{"role": "user", "content": "Write a very long story about a dragon."}],
                      "max_tokens": 1000, "temperature": 0, "stream": true});
    let mut running = Command::new("curl")
        .args(["-sS", "-N", "--unix-socket"])
        .arg(&sock)
        .args([
            "-d",
            &long.to_string(),
            "http://localhost/v1/chat/completions",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&sock, "busy", |h| h["busy"] == true);
    let mut queued = Command::new("curl")
        .args(["-sS", "--unix-socket"])
        .arg(&sock)
        .args([
            "-d",
            &chat.to_string(),
            "http://localhost/v1/chat/completions",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&sock, "a queued request", |h| h["queue_depth"] == 1);
    let (s, b) = post(&sock, "/v1/chat/completions", &chat.to_string());
    assert_eq!(s, 429, "{b}");
    assert_eq!(error_code(&b), "queue_full");
    running.kill().unwrap();
    running.wait().unwrap();
    assert!(queued.wait().unwrap().success());

    let (s, m) = curl(&sock, &["http://localhost/metrics"]);
    assert_eq!(s, 200);
    for line in [
        "edgellm_requests_total{endpoint=\"/v1/chat/completions\",status=\"429\"} 1",
        "edgellm_requests_total{endpoint=\"/v1/completions\",status=\"413\"} 1",
        "edgellm_requests_total{endpoint=\"other\",status=\"404\"} 1",
        "edgellm_jobs_cancelled_total 1",
    ] {
        assert!(m.contains(line), "{line} missing from:\n{m}");
    }
    assert_eq!(serve.sigterm().code(), Some(0));
}

/// Polls `/health` until `cond` holds.
fn wait_for(sock: &Path, what: &str, cond: impl Fn(&Value) -> bool) {
    let start = Instant::now();
    loop {
        let (_, b) = curl(sock, &["http://localhost/health"]);
        if serde_json::from_str::<Value>(&b).is_ok_and(|h| cond(&h)) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no {what}: {b}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn eight_concurrent_clients_are_answered_in_queue_order() {
    let serve = Serve::start(&[]);
    let r = python(
        "concurrent_clients.py",
        &[
            serve.socket.display().to_string(),
            "8".into(),
            "0.05".into(),
            "12".into(),
            "--disconnect".into(),
            "2".into(),
        ],
    );
    println!("{r}");
    let results = r["results"].as_array().unwrap();
    for (i, c) in results.iter().enumerate() {
        assert_eq!(c["status"], 200, "client {i}: {c}");
        if i != 2 {
            assert_eq!(c["done"], true, "client {i}: {c}");
            assert!(!c["text"].as_str().unwrap().is_empty(), "client {i}");
        }
    }
    // Queue order: the server numbers answers as their requests enter the queue.
    let queue_pos = |i: &Value| {
        let id = results[i.as_u64().unwrap() as usize]["id"]
            .as_str()
            .unwrap();
        id.strip_prefix("chatcmpl-")
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    let finished: Vec<u64> = r["finish_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(queue_pos)
        .collect();
    let mut sorted = finished.clone();
    sorted.sort_unstable();
    assert_eq!(finished, sorted, "answers finished out of queue order");
    let started: Vec<u64> = (0..8u64).map(|i| queue_pos(&json!(i))).collect();
    println!("queue positions in start order {started:?}, in finish order {finished:?}");
    // Client 2 asked for 400 tokens and left after the first: client 3 did not wait for them.
    let gap = results[3]["end"].as_f64().unwrap() - results[2]["end"].as_f64().unwrap();
    assert!(
        gap < 2.0,
        "client 3 finished {gap:.2} s after client 2 left"
    );
    let (_, m) = curl(&serve.socket, &["http://localhost/metrics"]);
    assert!(m.contains("edgellm_jobs_cancelled_total 1\n"), "{m}");
    assert!(m.contains("edgellm_jobs_completed_total 7\n"), "{m}");
}

#[test]
fn a_queue_of_two_refuses_the_excess() {
    let serve = Serve::start(&["--queue", "2"]);
    let r = python(
        "concurrent_clients.py",
        &[
            serve.socket.display().to_string(),
            "6".into(),
            "0.3".into(),
            "8".into(),
            "--long-first".into(),
        ],
    );
    let statuses: Vec<u64> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_u64().unwrap())
        .collect();
    // Client 0 runs, clients 1 and 2 wait in the queue, the rest are refused.
    assert_eq!(statuses, vec![200, 200, 200, 429, 429, 429], "{r}");
    assert_eq!(r["results"][3]["error"]["code"], "queue_full");
}

#[test]
fn sigterm_mid_answer_finishes_the_stream_and_exits_zero() {
    let mut serve = Serve::start(&[]);
    let long = json!({"messages": [{"role": "user", "content": "Write a very long story about a dragon."}],
                      "max_tokens": 1500, "temperature": 0, "stream": true});
    let mut stream = Command::new("curl")
        .args(["-sS", "-N", "--unix-socket"])
        .arg(&serve.socket)
        .args([
            "-d",
            &long.to_string(),
            "http://localhost/v1/chat/completions",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = stream.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("\"content\":\"") || seen.len() < 2000 {
        let n = out.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "stream ended early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    let status = serve.sigterm();
    out.read_to_end(&mut seen).unwrap();
    assert!(stream.wait().unwrap().success());
    let text = String::from_utf8_lossy(&seen);
    assert_eq!(status.code(), Some(0), "{}", serve.stderr());
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(text.contains("\"finish_reason\":\"stop\""), "{text}");
    assert!(!serve.socket.exists(), "the socket file is left behind");
}
