//! The socket server in-process against the real model (1 thread, context 1024): every
//! endpoint in OpenAI's / llama.cpp's shapes, every error status, streaming chunks and
//! keep-alives, cancellation by a vanished client, the queue limit, prefix reuse, the socket
//! file's life cycle and access rules, the limits against slow clients, and shutdown.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use edgellm_hal::shutdown::Shutdown;
use edgellm_hal::socket::{SocketError, SocketLimits, SocketServer};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

#[test]
fn every_endpoint_answers_in_its_shape() {
    let _g = serial();
    let srv = Server::start(4);
    let sock = srv.socket.clone();
    let model_name = srv.handle.info().model_name.clone();
    rt().block_on(async {
        let h = request(&sock, "GET", "/health", None).await;
        assert_eq!(h.status, 200);
        let h = h.json();
        assert_eq!(h["status"], "ok");
        assert_eq!(h["model"], model_name.as_str());
        assert_eq!(h["context"], N_CTX);
        assert_eq!(h["threads"], 1);
        assert_eq!(h["board"], "test-board");
        assert_eq!(h["queue_depth"], 0);
        assert_eq!(h["busy"], false);
        assert!(h["kernels"].is_string());
        assert!(h.get("soc_temperature_c").is_some());

        let m = request(&sock, "GET", "/v1/models", None).await.json();
        assert_eq!(m["object"], "list");
        assert_eq!(m["data"][0]["id"], model_name.as_str());
        assert_eq!(m["data"][0]["object"], "model");
        assert_eq!(m["data"][0]["meta"]["n_ctx"], N_CTX);

        let t = request(&sock, "POST", "/tokenize", Some(json!({"content": "Hello world"}))).await;
        assert_eq!(t.status, 200);
        let tokens = t.json()["tokens"].clone();
        let expected = srv.handle.tokenize("Hello world", false, true).unwrap();
        assert_eq!(tokens, json!(expected));
        let with_bos = request(
            &sock,
            "POST",
            "/tokenize",
            Some(json!({"content": "Hello world", "add_special": true})),
        )
        .await
        .json();
        assert_eq!(with_bos["tokens"], json!(srv.handle.tokenize("Hello world", true, true).unwrap()));
        let d = request(&sock, "POST", "/detokenize", Some(json!({"tokens": tokens}))).await;
        assert_eq!(d.json()["content"], "Hello world");

        // Chat, non-streaming, greedy.
        let c = request(&sock, "POST", "/v1/chat/completions", Some(chat_body("What is 2+2?", 8))).await;
        assert_eq!(c.status, 200, "{}", c.body);
        let c = c.json();
        assert_eq!(c["object"], "chat.completion");
        assert!(c["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert_eq!(c["model"], model_name.as_str());
        assert_eq!(c["choices"][0]["index"], 0);
        assert_eq!(c["choices"][0]["message"]["role"], "assistant");
        let answer = c["choices"][0]["message"]["content"].as_str().unwrap().to_string();
        assert!(!answer.is_empty());
        let u = &c["usage"];
        let completion_tokens = u["completion_tokens"].as_u64().unwrap();
        assert!((1..=8).contains(&completion_tokens));
        assert_eq!(
            u["total_tokens"].as_u64().unwrap(),
            u["prompt_tokens"].as_u64().unwrap() + completion_tokens
        );
        let finish = c["choices"][0]["finish_reason"].as_str().unwrap();
        assert_eq!(finish, if completion_tokens == 8 { "length" } else { "stop" });

        // The same question streamed with usage: role first, then content, then finish, usage.
        let mut body = chat_body("What is 2+2?", 8);
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
        let events = stream_events(&sock, "/v1/chat/completions", body).await;
        let chunks = data_chunks(&events);
        for c in &chunks {
            assert_eq!(c["object"], "chat.completion.chunk");
            assert_eq!(c["model"], model_name.as_str());
        }
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let n = chunks.len();
        let streamed: String = chunks[1..n - 2]
            .iter()
            .map(|c| {
                assert_eq!(c["choices"][0]["finish_reason"], Value::Null);
                assert_eq!(c["usage"], Value::Null);
                c["choices"][0]["delta"]["content"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(streamed, answer, "streamed and whole greedy answers differ");
        assert_eq!(chunks[n - 2]["choices"][0]["delta"], json!({}));
        assert_eq!(chunks[n - 2]["choices"][0]["finish_reason"], finish);
        assert_eq!(chunks[n - 1]["choices"], json!([]));
        assert_eq!(chunks[n - 1]["usage"]["completion_tokens"], completion_tokens);
        // The second identical prompt came from the cache (all but its last two tokens).
        let cached = chunks[n - 1]["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap();
        assert_eq!(cached + 2, chunks[n - 1]["usage"]["prompt_tokens"].as_u64().unwrap());

        // Completions, whole and streamed.
        let body = json!({"prompt": "The capital of France is", "max_tokens": 6, "temperature": 0});
        let t = request(&sock, "POST", "/v1/completions", Some(body.clone())).await.json();
        assert_eq!(t["object"], "text_completion");
        assert!(t["id"].as_str().unwrap().starts_with("cmpl-"));
        let text = t["choices"][0]["text"].as_str().unwrap().to_string();
        assert_eq!(t["usage"]["completion_tokens"], 6);
        assert_eq!(t["choices"][0]["finish_reason"], "length");
        let mut sbody = body.clone();
        sbody["stream"] = json!(true);
        let chunks = data_chunks(&stream_events(&sock, "/v1/completions", sbody).await);
        assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
        let streamed: String = chunks
            .iter()
            .map(|c| c["choices"][0]["text"].as_str().unwrap())
            .collect();
        assert_eq!(streamed, text);
        assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "length");

        let metrics = request(&sock, "GET", "/metrics", None).await;
        assert_eq!(metrics.status, 200);
        assert!(metrics.headers["content-type"].to_str().unwrap().starts_with("text/plain"));
        let m = metrics.body;
        assert!(
            m.contains("edgellm_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"} 2"),
            "{m}"
        );
        assert!(m.contains("edgellm_requests_total{endpoint=\"/v1/completions\",status=\"200\"} 2"));
        let gen = srv.handle.stats.generated_tokens.load(Ordering::Relaxed);
        assert!(m.contains(&format!("edgellm_generated_tokens_total {gen}\n")), "{m}");
        assert!(m.contains("# TYPE edgellm_queue_depth gauge\nedgellm_queue_depth 0\n"));
        assert!(m.contains("edgellm_reused_tokens_total "));
        assert!(m.contains("edgellm_last_generation_tokens_per_second "));
    });
}

#[test]
fn errors_have_openais_shape_and_status() {
    let _g = serial();
    let srv = Server::start(4);
    let sock = srv.socket.clone();
    rt().block_on(async {
        let check = |r: &Reply, status: u16, param: Option<&str>| {
            assert_eq!(r.status.as_u16(), status, "{}", r.body);
            let e = &r.json()["error"];
            assert!(e["message"].is_string() && e["type"].is_string(), "{}", r.body);
            assert!(e.get("code").is_some() && e.get("param").is_some());
            if let Some(p) = param {
                assert_eq!(e["param"], p, "{}", r.body);
            }
            e["message"].as_str().unwrap().to_string()
        };
        // Malformed JSON.
        let r = raw(
            &sock,
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 9\r\nconnection: close\r\n\r\n{\"messages",
            Duration::from_secs(10),
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 400"), "{r}");
        assert!(r.contains("not valid JSON"), "{r}");

        let chat = "/v1/chat/completions";
        let mut bad = chat_body("hi", 4);
        bad["temperature"] = json!(-1);
        check(&request(&sock, "POST", chat, Some(bad)).await, 400, Some("temperature"));
        let mut bad = chat_body("hi", 4);
        bad["top_p"] = json!(1.5);
        check(&request(&sock, "POST", chat, Some(bad)).await, 400, Some("top_p"));
        let mut bad = chat_body("hi", 4);
        bad["max_tokens"] = json!("many");
        check(&request(&sock, "POST", chat, Some(bad)).await, 400, Some("max_tokens"));
        let mut bad = chat_body("hi", 4);
        bad["n"] = json!(2);
        check(&request(&sock, "POST", chat, Some(bad)).await, 400, Some("n"));
        check(
            &request(&sock, "POST", "/v1/completions", Some(json!({"prompt": ""}))).await,
            400,
            Some("prompt"),
        );
        // A prompt longer than the context: the message gives both numbers.
        let long = "word ".repeat(1500);
        let msg = check(
            &request(&sock, "POST", chat, Some(chat_body(&long, 4))).await,
            400,
            Some("messages"),
        );
        assert!(msg.contains(&N_CTX.to_string()) && msg.contains("tokens"), "{msg}");

        let r = request(&sock, "GET", "/v1/nothing", None).await;
        check(&r, 404, None);
        let r = request(&sock, "GET", chat, None).await;
        check(&r, 405, None);
        assert_eq!(r.headers["allow"], "POST");
        let r = request(&sock, "POST", "/health", Some(json!({}))).await;
        check(&r, 405, None);
        assert_eq!(r.headers["allow"], "GET");

        // 413: declared up front, and found while reading a chunked body.
        let r = raw(
            &sock,
            b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\r\n{",
            Duration::from_secs(10),
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 413"), "{r}");
        let mut chunked =
            b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..20 {
            chunked.extend_from_slice(format!("{:x}\r\n{}\r\n", 8192, "a".repeat(8192)).as_bytes());
        }
        let r = raw(&sock, &chunked, Duration::from_secs(10)).await;
        assert!(r.starts_with("HTTP/1.1 413"), "{r}");
        assert!(r.contains("body_too_large"), "{r}");

        let m = request(&sock, "GET", "/metrics", None).await.body;
        assert!(m.contains("status=\"413\"} 2"), "{m}");
        assert!(m.contains("edgellm_requests_total{endpoint=\"other\",status=\"404\"} 1"), "{m}");
    });
}

/// A streaming request that generates for a long time (the model tells a story).
fn long_story(stream: bool) -> Value {
    json!({
        "messages": [{"role": "user", "content": "Write a very long story about a dragon and a knight."}],
        "max_tokens": 900,
        "temperature": 0.8,
        "seed": 1,
        "stream": stream,
    })
}

/// Opens a raw streaming request and reads until the first content chunk has arrived.
async fn start_stream(sock: &Path, body: &Value) -> UnixStream {
    let body = body.to_string();
    let mut s = UnixStream::connect(sock).await.unwrap();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(60);
    while !String::from_utf8_lossy(&seen).contains("\"content\":\"")
        || String::from_utf8_lossy(&seen).matches("data: ").count() < 2
    {
        assert!(
            Instant::now() < deadline,
            "no content: {}",
            String::from_utf8_lossy(&seen)
        );
        let n = tokio::time::timeout(Duration::from_secs(60), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
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
fn a_vanished_client_frees_the_engine_at_once() {
    let _g = serial();
    let srv = Server::start(4);
    let sock = srv.socket.clone();
    let stats = srv.handle.stats.clone();
    rt().block_on(async {
        // Streaming: the client reads the first token, then hangs up.
        let s = start_stream(&sock, &long_story(true)).await;
        drop(s);
        let freed = wait_until("the cancel", || {
            stats.jobs_cancelled.load(Ordering::SeqCst) == 1
        })
        .await;
        println!("streaming client gone: engine freed after {freed:?}");
        assert!(freed < Duration::from_secs(2));
        let t = Instant::now();
        let r = request(
            &sock,
            "POST",
            "/v1/chat/completions",
            Some(chat_body("Say hi.", 4)),
        )
        .await;
        assert_eq!(r.status, 200);
        println!("next request answered in {:?}", t.elapsed());
        assert!(t.elapsed() < Duration::from_secs(10));

        // Non-streaming: the client hangs up while its answer is being generated.
        let body = long_story(false).to_string();
        let mut s = UnixStream::connect(&sock).await.unwrap();
        s.write_all(
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let generated = stats.generated_tokens.load(Ordering::SeqCst);
        wait_until("generation", || stats.busy.load(Ordering::SeqCst) == 1).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(s);
        let freed = wait_until("the second cancel", || {
            stats.jobs_cancelled.load(Ordering::SeqCst) == 2
        })
        .await;
        println!("non-streaming client gone: engine freed after {freed:?}");
        assert!(freed < Duration::from_secs(2));
        assert!(stats.generated_tokens.load(Ordering::SeqCst) - generated < 800);
        assert_eq!(stats.busy.load(Ordering::SeqCst), 0);
    });
}

#[test]
fn a_full_queue_gives_429_and_queued_streams_keep_alive() {
    let _g = serial();
    let limits = SocketLimits {
        keep_alive_interval: Duration::from_millis(200),
        ..Default::default()
    };
    let srv = Server::start_with(1, limits, |_| {});
    let sock = srv.socket.clone();
    let stats = srv.handle.stats.clone();
    rt().block_on(async {
        let running = start_stream(&sock, &long_story(true)).await;
        // One request fits in the queue: a stream, which must get keep-alives while it waits.
        let mut queued_body = chat_body("Say hi.", 4);
        queued_body["stream"] = json!(true);
        let queued = {
            let sock = sock.clone();
            tokio::spawn(
                async move { stream_events(&sock, "/v1/chat/completions", queued_body).await },
            )
        };
        wait_until("the queued job", || {
            stats.queue_depth.load(Ordering::SeqCst) == 1
        })
        .await;
        let r = request(
            &sock,
            "POST",
            "/v1/chat/completions",
            Some(chat_body("Too many.", 4)),
        )
        .await;
        assert_eq!(r.status, 429, "{}", r.body);
        assert_eq!(r.json()["error"]["code"], "queue_full");
        tokio::time::sleep(Duration::from_millis(700)).await;
        drop(running);
        let events = queued.await.unwrap();
        let first_data = events
            .iter()
            .position(|(_, e)| e.starts_with("data: "))
            .unwrap();
        let keep_alives = events[..first_data]
            .iter()
            .filter(|(_, e)| e == ": keep-alive")
            .count();
        assert!(keep_alives >= 2, "{events:?}");
        let chunks = data_chunks(&events);
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let m = request(&sock, "GET", "/metrics", None).await.body;
        assert!(
            m.contains(
                "edgellm_requests_total{endpoint=\"/v1/chat/completions\",status=\"429\"} 1"
            ),
            "{m}"
        );
    });
}

#[test]
fn prefix_reuse_shortens_time_to_first_token() {
    let _g = serial();
    let srv = Server::start(4);
    let sock = srv.socket.clone();
    // A system prompt of at least 200 tokens.
    let mut system = String::from("You are a careful assistant for a small single-board computer.");
    let sentences = [
        " You answer briefly and precisely.",
        " You never invent facts about the hardware.",
        " When a question is unclear, you ask one short question back.",
        " You prefer metric units and plain words.",
    ];
    let mut i = 0;
    while srv.handle.tokenize(&system, false, true).unwrap().len() < 200 {
        system.push_str(sentences[i % sentences.len()]);
        i += 1;
    }
    let ask = |q: &str| {
        json!({
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": q}],
            "max_tokens": 4,
            "temperature": 0,
            "stream": true,
            "stream_options": {"include_usage": true},
        })
    };
    rt().block_on(async {
        let ttft = |events: &[(Duration, String)]| {
            events
                .iter()
                .find(|(_, e)| e.contains("\"content\":\"") && !e.contains("\"role\""))
                .map(|(t, _)| *t)
                .expect("no content chunk")
        };
        let usage = |events: &[(Duration, String)]| data_chunks(events).last().unwrap()["usage"].clone();
        let first = stream_events(&sock, "/v1/chat/completions", ask("What is a GPIO pin?")).await;
        let second = stream_events(&sock, "/v1/chat/completions", ask("How hot may the CPU get?")).await;
        let (t1, t2) = (ttft(&first), ttft(&second));
        let (u1, u2) = (usage(&first), usage(&second));
        let cached = u2["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap();
        println!(
            "prefix reuse: first request {} prompt tokens, time to first token {t1:?}; second {} prompt tokens, {cached} cached, time to first token {t2:?} ({:.1}x shorter)",
            u1["prompt_tokens"], u2["prompt_tokens"], t1.as_secs_f64() / t2.as_secs_f64()
        );
        assert_eq!(u1["prompt_tokens_details"]["cached_tokens"], 0);
        assert!(cached >= 190, "cached {cached}");
        assert!(t1 >= t2 * 5, "time to first token {t1:?} then {t2:?}: less than 5x shorter");
        let m = request(&sock, "GET", "/metrics", None).await.body;
        assert!(m.contains(&format!("edgellm_reused_tokens_total {cached}\n")), "{m}");
    });
}

#[test]
fn the_socket_file_is_replaced_when_stale_and_kept_otherwise() {
    let _g = serial();
    let (engine, handle) = engine(2);
    let dir = fresh_dir();

    // Stale: a socket file nobody listens on.
    let stale = dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let server =
        SocketServer::bind(options(&stale), handle.clone()).expect("stale socket replaced");
    let meta = std::fs::metadata(&stale).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert!(std::os::unix::net::UnixStream::connect(&stale).is_ok());
    // Live: the server above holds it.
    match SocketServer::bind(options(&stale), handle.clone()) {
        Err(SocketError::InUse(p)) => assert_eq!(p, stale),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a live socket was taken over"),
    }
    // Shutting down removes it.
    let shutdown = Shutdown::new();
    shutdown.trigger();
    server.run(shutdown).unwrap();
    assert!(!stale.exists());

    // Not a socket: refused and left alone.
    let file = dir.join("notes.txt");
    std::fs::write(&file, "keep me").unwrap();
    let e = SocketServer::bind(options(&file), handle.clone())
        .err()
        .expect("refused");
    assert!(matches!(e, SocketError::NotASocket(_)), "{e}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");

    // Mode and group from the options.
    let custom = dir.join("custom.sock");
    let mut opts = options(&custom);
    opts.mode = 0o600;
    opts.group = Some("daemon".into());
    let server = SocketServer::bind(opts, handle.clone()).unwrap();
    let meta = std::fs::metadata(&custom).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let daemon = nix::unistd::Group::from_name("daemon").unwrap().unwrap();
    assert_eq!(meta.gid(), daemon.gid.as_raw());
    drop(server);
    let mut opts = options(&dir.join("nogroup.sock"));
    opts.group = Some("no-such-group-edgellm".into());
    let e = SocketServer::bind(opts, handle.clone())
        .err()
        .expect("refused");
    assert!(e.to_string().contains("no-such-group-edgellm"), "{e}");
    assert!(!dir.join("nogroup.sock").exists());

    // TCP without a key is refused before anything is bound.
    let mut opts = options(&dir.join("tcp.sock"));
    opts.listen = Some("127.0.0.1:0".parse().unwrap());
    let e = SocketServer::bind(opts, handle.clone())
        .err()
        .expect("refused");
    assert!(matches!(e, SocketError::TcpWithoutKey(_)), "{e}");
    assert!(!dir.join("tcp.sock").exists());

    handle.shutdown();
    drop(handle);
    engine.join();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn peers_off_the_allow_list_are_closed_and_tcp_needs_the_key() {
    let _g = serial();
    let me = nix::unistd::getuid().as_raw();
    let refused = Server::start_with(2, SocketLimits::default(), |o| {
        o.allowed_uids = Some(vec![me.wrapping_add(4242)]);
    });
    let allowed = Server::start_with(2, SocketLimits::default(), |o| {
        o.allowed_gids = Some(vec![nix::unistd::getgid().as_raw()]);
        o.listen = Some("127.0.0.1:0".parse().unwrap());
        o.api_key = Some("sesame".into());
    });
    rt().block_on(async {
        let r = raw(
            &refused.socket,
            b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n",
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(r, "", "an unlisted peer got an answer");
        let m = request(&allowed.socket, "GET", "/health", None).await;
        assert_eq!(m.status, 200);

        let addr = allowed.tcp.expect("tcp listener");
        let tcp = |auth: Option<&'static str>| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let auth = auth
                .map(|k| format!("authorization: Bearer {k}\r\n"))
                .unwrap_or_default();
            s.write_all(
                format!("GET /health HTTP/1.1\r\nhost: x\r\n{auth}connection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let no_key = tcp(None).await;
        assert!(no_key.starts_with("HTTP/1.1 401"), "{no_key}");
        assert!(no_key.contains("invalid_api_key"));
        assert!(tcp(Some("wrong")).await.starts_with("HTTP/1.1 401"));
        assert!(tcp(Some("sesame")).await.starts_with("HTTP/1.1 200"));
    });
}

#[test]
fn slow_and_idle_clients_are_cut_off() {
    let _g = serial();
    let limits = SocketLimits {
        header_read_timeout: Duration::from_millis(500),
        body_read_timeout: Duration::from_millis(500),
        max_connections: 3,
        ..Default::default()
    };
    let srv = Server::start_with(2, limits, |_| {});
    let sock = srv.socket.clone();
    rt().block_on(async {
        // Headers that never end: closed after the header timeout.
        let t = Instant::now();
        let r = raw(
            &sock,
            b"GET /health HTTP/1.1\r\nhost: x\r\n",
            Duration::from_secs(10),
        )
        .await;
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "held {:?}",
            t.elapsed()
        );
        assert!(!r.contains("200 OK"), "{r}");
        // A body that never arrives: 408 after the body timeout.
        let r = raw(
            &sock,
            b"POST /tokenize HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"con",
            Duration::from_secs(10),
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 408"), "{r}");
        // An idle keep-alive connection is closed.
        let t = Instant::now();
        let r = raw(
            &sock,
            b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n",
            Duration::from_secs(10),
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "idle connection held {:?}",
            t.elapsed()
        );

        // Over the connection limit: the extra connection is closed at once.
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(UnixStream::connect(&sock).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let t = Instant::now();
        let r = raw(
            &sock,
            b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n",
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(r, "");
        assert!(t.elapsed() < Duration::from_millis(400));
        drop(held);
        // Once they are closed, connections are served again.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let m = request(&sock, "GET", "/metrics", None).await.body;
        assert!(
            m.contains("edgellm_connections_refused_limit_total 1\n"),
            "{m}"
        );
    });
}

#[test]
fn shutdown_finishes_the_stream_and_removes_the_socket() {
    let _g = serial();
    let mut srv = Server::start(4);
    let sock = srv.socket.clone();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<(Duration, String)>>();
    let client = {
        let sock = sock.clone();
        std::thread::spawn(move || {
            rt().block_on(async {
                let events = stream_events(&sock, "/v1/chat/completions", long_story(true)).await;
                tx.send(events).unwrap();
            })
        })
    };
    let stats = srv.handle.stats.clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    while stats.busy.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    // Mid-answer (the counters only move when a job ends).
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    srv.stop().expect("run returns Ok");
    println!("stopped in {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(5));
    let events = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    client.join().unwrap();
    let chunks = data_chunks(&events);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert!(
        chunks.len() < 300,
        "the answer was not cut short: {} chunks",
        chunks.len()
    );
    assert_eq!(stats.jobs_cancelled.load(Ordering::SeqCst), 1);
    assert!(!sock.exists(), "socket file left behind");
}
