//! Beam search over the socket (the `beams`, `length_penalty` and `n` extension) against the
//! real model: the answers equal `BeamSearch` run directly (what `edgellm run --beams` prints),
//! one beam is greedy decoding, a beam job leaves the ordinary cache sound, requests over the
//! server's `max_beams` are refused with a 400 saying how to allow them, a streamed beam answer
//! comes at the end behind keep-alives, and a vanished client frees the engine.

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use edgellm_hal::engine::Prompt;
use edgellm_hal::socket::SocketLimits;
use edgellm_models::{BeamOutcome, BeamParams, BeamSearch, StateLayout, StateOptions};
use edgellm_runtime::chat_template::ChatMessage;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const QUESTION: &str = "What is the capital of France?";
const PROMPT: &str = "The three primary colors are";
const MAX_TOKENS: usize = 12;

/// `BeamSearch` with `beams` beams run directly on `prompt` (a fresh model and states, the test
/// engine's options), as `edgellm run --beams` runs it.
fn direct(prompt: &[u32], beams: usize) -> (BeamOutcome, Vec<String>) {
    let model = load_model();
    let mut search = BeamSearch::new(&model, state_options(N_CTX), beams).unwrap();
    let out = search
        .run(
            &model,
            prompt,
            &BeamParams {
                max_tokens: MAX_TOKENS,
                ..BeamParams::default()
            },
            &mut |_| true,
        )
        .unwrap();
    let texts = out.beams.iter().map(|b| b.text(&model.tokenizer)).collect();
    (out, texts)
}

fn chat_beams(question: &str, beams: usize, n: usize) -> Value {
    json!({
        "messages": [{"role": "user", "content": question}],
        "max_tokens": MAX_TOKENS,
        "beams": beams,
        "n": n,
    })
}

async fn post(sock: &Path, path: &str, body: Value) -> Value {
    let r = request(sock, "POST", path, Some(body)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

/// Checks that `choices` are the best beams of `want`, in order, with their scores.
fn assert_choices_are(choices: &Value, want: &BeamOutcome, texts: &[String], key: &str) {
    let choices = choices.as_array().unwrap();
    for (i, c) in choices.iter().enumerate() {
        let text = match key {
            "message" => &c["message"]["content"],
            _ => &c["text"],
        };
        assert_eq!(c["index"], i);
        assert_eq!(text, texts[i].as_str(), "choice {i}");
        let score = c["beam_score"].as_f64().unwrap();
        assert!(
            (score - want.beams[i].score).abs() < 1e-9,
            "choice {i}: score {score} vs {}",
            want.beams[i].score
        );
        let reason = if want.beams[i].finished {
            "stop"
        } else {
            "length"
        };
        assert_eq!(c["finish_reason"], reason, "choice {i}");
    }
}

#[test]
fn beams_over_the_socket_equal_beam_search_run_directly() {
    let _g = serial();
    let srv = Server::start_beams(4, 4);
    let sock = srv.socket.clone();
    let chat_ids = srv
        .handle
        .prompt_ids(&Prompt::Chat(vec![ChatMessage::new("user", QUESTION)]))
        .unwrap();
    let text_ids = srv.handle.prompt_ids(&Prompt::Text(PROMPT.into())).unwrap();
    let (want4, texts4) = direct(&chat_ids, 4);
    // Two beams out of the four the server allocated: the same as a search allocated for two.
    let (want2, texts2) = direct(&text_ids, 2);
    for (b, t) in want4.beams.iter().zip(&texts4) {
        println!(
            "direct 4 beams: {t:?} score {:.4} finished {}",
            b.score, b.finished
        );
    }
    rt().block_on(async {
        let v = post(&sock, "/v1/chat/completions", chat_beams(QUESTION, 4, 2)).await;
        println!("{v}");
        let choices = v["choices"].as_array().unwrap();
        assert_eq!(choices.len(), 2);
        assert_choices_are(&v["choices"], &want4, &texts4, "message");
        // Two distinct beams, best first.
        assert_ne!(want4.beams[0].tokens, want4.beams[1].tokens);
        assert!(
            choices[0]["beam_score"].as_f64().unwrap()
                >= choices[1]["beam_score"].as_f64().unwrap()
        );
        assert_eq!(v["usage"]["prompt_tokens"], chat_ids.len());
        assert_eq!(v["usage"]["completion_tokens"], want4.beams[0].tokens.len());

        let mut body = json!({"prompt": PROMPT, "max_tokens": MAX_TOKENS, "beams": 2, "n": 2,
            "length_penalty": 1.0, "temperature": 1.7, "seed": 3});
        let v = post(&sock, "/v1/completions", body.clone()).await;
        assert_eq!(v["choices"].as_array().unwrap().len(), 2);
        assert_choices_are(&v["choices"], &want2, &texts2, "text");
        // Without n, the best beam alone.
        body["n"] = json!(null);
        let v = post(&sock, "/v1/completions", body).await;
        assert_eq!(v["choices"].as_array().unwrap().len(), 1);
        assert_eq!(v["choices"][0]["text"], texts2[0].as_str());
    });

    // What one more beam costs at the default context (2048): printed for the docs.
    let model = load_model();
    let one_row = StateOptions {
        n_batch: 1,
        ..state_options(2048)
    };
    let layout = StateLayout::new(&model.hparams, &model.weights, &one_row).unwrap();
    println!(
        "one more beam at context 2048: KV cache {:.1} MiB + scratch {:.1} MiB",
        layout.kv_bytes as f64 / 1048576.0,
        layout.scratch_bytes() as f64 / 1048576.0
    );
}

#[test]
fn one_beam_is_greedy_and_a_beam_job_leaves_the_cache_sound() {
    let _g = serial();
    let srv = Server::start_beams(4, 4);
    let sock = srv.socket.clone();
    rt().block_on(async {
        let greedy = post(
            &sock,
            "/v1/chat/completions",
            chat_body(QUESTION, MAX_TOKENS),
        )
        .await;
        let greedy_text = greedy["choices"][0]["message"]["content"].clone();
        println!("greedy: {greedy_text}");
        let mut one = chat_body(QUESTION, MAX_TOKENS);
        one["beams"] = json!(1);
        one["n"] = json!(1);
        let v = post(&sock, "/v1/chat/completions", one).await;
        assert_eq!(v["choices"][0]["message"]["content"], greedy_text);
        assert!(v["choices"][0].get("beam_score").is_none());

        // A beam job on another question, then the first one again: the ordinary decoding
        // reuses what the beam job left in the shared first state and still answers greedily.
        let other = "Name a large animal that lives in the sea.";
        let v = post(&sock, "/v1/chat/completions", chat_beams(other, 4, 1)).await;
        assert!(v["choices"][0]["beam_score"].is_f64());
        let after = post(
            &sock,
            "/v1/chat/completions",
            chat_body(QUESTION, MAX_TOKENS),
        )
        .await;
        assert_eq!(after["choices"][0]["message"]["content"], greedy_text);
        // The system prompt and the template's head are shared with the beam job's prompt.
        let reused = after["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap();
        println!("cached after the beam job: {reused}");
        assert!(reused > 0);

        // The same question as a beam job, then greedy: the whole prompt (and a beam's tokens)
        // sit in the first state; the greedy answer must not change.
        post(&sock, "/v1/chat/completions", chat_beams(QUESTION, 3, 1)).await;
        let again = post(
            &sock,
            "/v1/chat/completions",
            chat_body(QUESTION, MAX_TOKENS),
        )
        .await;
        assert_eq!(again["choices"][0]["message"]["content"], greedy_text);
    });
}

#[test]
fn beams_over_the_limit_are_refused_with_how_to_allow_them() {
    let _g = serial();
    let off = Server::start(2);
    let on = Server::start_beams(2, 4);
    rt().block_on(async {
        for (sock, beams, says) in [
            (&off.socket, 2, "--max-beams"),
            (&on.socket, 5, "at most 4"),
            (&on.socket, 1_000_000, "at most 4"),
        ] {
            for path in ["/v1/chat/completions", "/v1/completions"] {
                let body = json!({"prompt": "x", "messages": [{"role": "user", "content": "x"}],
                    "beams": beams, "max_tokens": 2});
                let r = request(sock, "POST", path, Some(body)).await;
                assert_eq!(r.status, 400, "{}", r.body);
                let e = &r.json()["error"];
                assert_eq!(e["param"], "beams", "{}", r.body);
                assert_eq!(e["type"], "invalid_request_error");
                assert!(e["message"].as_str().unwrap().contains(says), "{}", r.body);
            }
        }
        // One beam is ordinary decoding: served without beam caches.
        let mut body = chat_body("Say hi.", 2);
        body["beams"] = json!(1);
        let r = request(&off.socket, "POST", "/v1/chat/completions", Some(body)).await;
        assert_eq!(r.status, 200, "{}", r.body);
    });
    assert_eq!(on.handle.info().max_beams, 4);
    assert_eq!(off.handle.info().max_beams, 0);
}

#[test]
fn a_streamed_beam_answer_comes_at_the_end_behind_keep_alives() {
    let _g = serial();
    let limits = SocketLimits {
        keep_alive_interval: Duration::from_millis(50),
        ..SocketLimits::default()
    };
    let srv = Server::start_on(engine_beams(4, N_CTX, 4), limits, |_| {});
    let sock = srv.socket.clone();
    rt().block_on(async {
        let whole = post(&sock, "/v1/chat/completions", chat_beams(QUESTION, 4, 2)).await;
        let mut body = chat_beams(QUESTION, 4, 2);
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
        let events = stream_events(&sock, "/v1/chat/completions", body).await;
        let chunks = data_chunks(&events);
        for c in &chunks {
            println!("{c}");
        }
        let keep_alives = events.iter().filter(|(_, e)| e == ": keep-alive").count();
        println!("{keep_alives} keep-alives");
        assert!(keep_alives > 0);
        // Role, the two answers, their two finish chunks, the usage.
        assert_eq!(chunks.len(), 6);
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        for i in 0..2 {
            let content = &chunks[1 + i]["choices"][0];
            let want = &whole["choices"][i];
            assert_eq!(content["index"], i);
            assert_eq!(content["delta"]["content"], want["message"]["content"]);
            // This request reuses the prompt the first one left in the cache; its last tokens
            // are evaluated again in a batch, which gives exactly the fresh scores.
            assert_eq!(content["beam_score"], want["beam_score"]);
            let finish = &chunks[3 + i]["choices"][0];
            assert_eq!(finish["index"], i);
            assert_eq!(finish["finish_reason"], want["finish_reason"]);
        }
        let usage = &chunks[5]["usage"];
        assert_eq!(
            usage["completion_tokens"],
            whole["usage"]["completion_tokens"]
        );
        assert_eq!(usage["prompt_tokens"], whole["usage"]["prompt_tokens"]);
        assert_eq!(
            usage["prompt_tokens_details"]["cached_tokens"],
            usage["prompt_tokens"].as_u64().unwrap() - 2
        );
        // The keep-alives come before the answer (while the beams run), not after it.
        let first_content = events
            .iter()
            .position(|(_, e)| e.contains("\"content\":\"") && !e.contains("\"content\":\"\""))
            .unwrap();
        assert!(events[..first_content]
            .iter()
            .any(|(_, e)| e == ": keep-alive"));
    });
}

/// A long beam search as a raw request; the connection is returned unread.
async fn start_raw(sock: &Path, stream: bool) -> UnixStream {
    let body = json!({
        "messages": [{"role": "user", "content": "Write a very long story about a dragon and a knight."}],
        "max_tokens": 900,
        "beams": 4,
        "stream": stream,
    })
    .to_string();
    let mut s = UnixStream::connect(sock).await.unwrap();
    s.write_all(
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    s
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

#[test]
fn a_vanished_beam_client_frees_the_engine() {
    let _g = serial();
    let srv = Server::start_beams(4, 4);
    let sock = srv.socket.clone();
    let stats = srv.handle.stats.clone();
    rt().block_on(async {
        for (stream, cancelled) in [(false, 1), (true, 2)] {
            let mut s = start_raw(&sock, stream).await;
            wait_until("the beam job", || stats.busy.load(Ordering::SeqCst) == 1).await;
            if stream {
                // The response head and the role chunk have come.
                let mut buf = [0u8; 1024];
                let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
                    .await
                    .unwrap()
                    .unwrap();
                assert!(String::from_utf8_lossy(&buf[..n]).contains("200 OK"));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(s);
            let freed = wait_until("the cancel", || {
                stats.jobs_cancelled.load(Ordering::SeqCst) == cancelled
            })
            .await;
            println!("beam client gone (stream {stream}): engine freed after {freed:?}");
            assert!(freed < Duration::from_secs(2));
            assert_eq!(stats.jobs_completed.load(Ordering::SeqCst), cancelled - 1);
            let t = Instant::now();
            let v = post(&sock, "/v1/chat/completions", chat_body("Say hi.", 4)).await;
            assert!(v["choices"][0]["message"]["content"].is_string());
            assert!(t.elapsed() < Duration::from_secs(10));
        }
    });
}

#[test]
fn shutdown_stops_a_beam_job_between_steps() {
    let _g = serial();
    let mut srv = Server::start_beams(4, 4);
    let sock = srv.socket.clone();
    let stats = srv.handle.stats.clone();
    let rt = rt();
    let s = rt.block_on(async {
        let s = start_raw(&sock, true).await;
        wait_until("the beam job", || stats.busy.load(Ordering::SeqCst) == 1).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        s
    });
    let t = Instant::now();
    srv.stop().expect("the server stops cleanly");
    println!("stopped mid-search in {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(stats.jobs_cancelled.load(Ordering::SeqCst), 1);
    // The stream ended with the beams as they were, a finish reason and [DONE].
    let text = rt.block_on(async {
        let mut s = s;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    });
    assert!(text.contains("\"finish_reason\":\"stop\""), "{text}");
    assert!(text.contains("\"beam_score\""), "{text}");
    assert!(text.contains("data: [DONE]"), "{text}");
}
