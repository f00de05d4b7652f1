//! The hostile-input corpus of the socket API: several hundred malformed, truncated, mistyped,
//! out-of-range, oversized, slow and plain strange requests against one in-process server with
//! the real model. Each gets the right status (a 4xx, or 200 where the input is odd but valid),
//! every error is in OpenAI's shape, and after the whole corpus a normal request still gets the
//! same answer it got before.

mod common;

use std::time::{Duration, Instant};

use common::*;
use edgellm_hal::socket::SocketLimits;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const CHAT: &str = "/v1/chat/completions";
const COMPLETION: &str = "/v1/completions";
const MAX_BODY: usize = 64 * 1024;

/// One case: raw HTTP bytes and the status they must get.
struct Case {
    name: String,
    request: Vec<u8>,
    status: u16,
}

fn http(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn case(cases: &mut Vec<Case>, name: impl Into<String>, request: Vec<u8>, status: u16) {
    cases.push(Case {
        name: name.into(),
        request,
        status,
    });
}

fn post_case(cases: &mut Vec<Case>, name: impl Into<String>, path: &str, body: &[u8], status: u16) {
    case(cases, name, http("POST", path, body), status);
}

/// A valid body of `path`, short (1 token, greedy), with `field` set to `value`.
fn with_field(path: &str, field: &str, value: Value) -> Vec<u8> {
    let mut b = if path == CHAT {
        json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, "temperature": 0})
    } else {
        json!({"prompt": "Hi", "max_tokens": 1, "temperature": 0})
    };
    b[field] = value;
    b.to_string().into_bytes()
}

fn corpus() -> Vec<Case> {
    let mut c = Vec::new();
    let valid_chat = with_field(CHAT, "model", json!("x"));
    let valid_completion = with_field(COMPLETION, "model", json!("x"));

    for path in [CHAT, COMPLETION] {
        let valid = if path == CHAT {
            &valid_chat
        } else {
            &valid_completion
        };
        // Malformed JSON.
        for (i, bad) in [
            "",
            "{",
            "}",
            "[",
            "null",
            "true",
            "123",
            "\"a string\"",
            "[1, 2, 3]",
            "{'messages': 1}",
            "{\"messages\": [}",
            "{\"prompt\": \"a\",}",
            "{\"prompt\": NaN}",
            "{\"prompt\": \"a\"}{",
            "{\"prompt\": \"unterminated}",
            "{\"prompt\": \"\\ud800\"}",
            "{\"prompt\": \"a\" \"b\"}",
            "\u{feff}{\"prompt\": \"a\"}",
        ]
        .iter()
        .enumerate()
        {
            post_case(
                &mut c,
                format!("{path} malformed #{i}"),
                path,
                bad.as_bytes(),
                400,
            );
        }
        // Nesting far beyond any real request (serde_json's recursion limit).
        post_case(
            &mut c,
            format!("{path} deep nesting"),
            path,
            format!("{}{}", "[".repeat(5000), "]".repeat(5000)).as_bytes(),
            400,
        );
        // Truncated at every tenth of a valid body.
        for k in 1..10 {
            let cut = valid.len() * k / 10;
            post_case(
                &mut c,
                format!("{path} truncated at {cut}"),
                path,
                &valid[..cut],
                400,
            );
        }
        // Invalid UTF-8 inside a string.
        let mut bad = valid.clone();
        let at = bad.iter().position(|&b| b == b'H').unwrap();
        bad[at] = 0xff;
        post_case(&mut c, format!("{path} invalid utf-8"), path, &bad, 400);

        // Wrong types and bad values, field by field.
        let bad_values: Vec<(&str, Value)> = vec![
            ("temperature", json!("hot")),
            ("temperature", json!([1])),
            ("temperature", json!({"v": 1})),
            ("temperature", json!(true)),
            ("temperature", json!(-1)),
            ("temperature", json!(-0.0001)),
            ("temperature", json!(1e300)),
            ("top_p", json!(0)),
            ("top_p", json!(1.5)),
            ("top_p", json!(-1)),
            ("top_p", json!("0.9")),
            ("top_k", json!(-1)),
            ("top_k", json!(1.5)),
            ("top_k", json!("40")),
            ("min_p", json!(-0.1)),
            ("min_p", json!(2)),
            ("min_p", json!(null)),
            ("repeat_penalty", json!(0)),
            ("repeat_penalty", json!(-1)),
            ("repeat_penalty", json!(1e300)),
            ("frequency_penalty", json!(3)),
            ("frequency_penalty", json!(-2.5)),
            ("presence_penalty", json!(2.0001)),
            ("presence_penalty", json!("none")),
            ("max_tokens", json!(0)),
            ("max_tokens", json!(-5)),
            ("max_tokens", json!(1.5)),
            ("max_tokens", json!("10")),
            ("max_completion_tokens", json!(-1)),
            ("seed", json!("x")),
            ("seed", json!(1.5)),
            ("seed", json!(-2)),
            ("stop", json!(5)),
            ("stop", json!([1])),
            ("stop", json!([""])),
            ("stop", json!({"a": 1})),
            (
                "stop",
                json!((0..17).map(|i| i.to_string()).collect::<Vec<_>>()),
            ),
            ("n", json!(2)),
            ("n", json!(0)),
            ("n", json!("1")),
            ("stream", json!("yes")),
            ("stream", json!(1)),
            ("stream_options", json!(5)),
            ("stream_options", json!({"include_usage": "x"})),
            ("model", json!(5)),
            // Beam search: bad values, and beams this server (started without
            // --max-beams) does not allow.
            ("beams", json!(0)),
            ("beams", json!(-1)),
            ("beams", json!(2.5)),
            ("beams", json!("4")),
            ("beams", json!([4])),
            ("beams", json!(true)),
            ("beams", json!(2)),
            ("beams", json!(u64::MAX)),
            ("beams", json!(null)),
            ("length_penalty", json!("1")),
            ("length_penalty", json!(1e300)),
            ("length_penalty", json!({"a": 1})),
        ];
        for (field, v) in &bad_values {
            // `null` means absent: valid.
            let status = if v.is_null() { 200 } else { 400 };
            post_case(
                &mut c,
                format!("{path} {field} = {v}"),
                path,
                &with_field(path, field, v.clone()),
                status,
            );
        }
        // Numbers beyond every integer type.
        for (field, raw) in [
            ("max_tokens", "1e30"),
            ("max_tokens", "18446744073709551616"),
            ("top_k", "99999999999999999999999"),
            ("seed", "18446744073709551616"),
            ("temperature", "1e999"),
            ("beams", "1e30"),
            ("beams", "18446744073709551616"),
            ("beams", "-0"),
            ("length_penalty", "NaN"),
            ("length_penalty", "-1e999"),
            ("length_penalty", "Infinity"),
        ] {
            let body = String::from_utf8(with_field(path, field, json!(0)))
                .unwrap()
                .replace(&format!("\"{field}\":0"), &format!("\"{field}\":{raw}"));
            post_case(
                &mut c,
                format!("{path} {field} = {raw}"),
                path,
                body.as_bytes(),
                400,
            );
        }
        // Odd but valid: unknown fields are ignored, the model field names anything, the last
        // of duplicate keys counts, extreme-but-legal values work.
        let odd: Vec<(&str, Value)> = vec![
            ("logprobs", json!(true)),
            ("user", json!("someone")),
            ("beams", json!(1)),
            ("length_penalty", json!(-3)),
            ("x-unknown", json!({"deep": [1, 2, {"x": null}]})),
            ("model", json!("../../../../etc/passwd")),
            ("model", json!("/dev/sda")),
            ("model", json!("")),
            ("temperature", json!(0)),
            ("temperature", json!(100)),
            ("top_p", json!(1e-30)),
            ("top_k", json!(1)),
            ("top_k", json!(1_000_000)),
            ("min_p", json!(1)),
            ("seed", json!(-1)),
            ("seed", json!(u64::MAX)),
            ("stop", json!("../../etc/passwd")),
            ("stop", json!(["\u{0}", "\u{fffd}"])),
            ("frequency_penalty", json!(-2)),
            ("presence_penalty", json!(2)),
            ("repeat_penalty", json!(1e-3)),
            ("n", json!(1)),
            ("max_tokens", json!(1_000_000)),
        ];
        for (field, v) in odd {
            post_case(
                &mut c,
                format!("{path} odd {field} = {v}"),
                path,
                &with_field(path, field, v),
                200,
            );
        }
        let dup = String::from_utf8(valid.clone()).unwrap().replacen(
            '{',
            "{\"temperature\": \"first\", ",
            1,
        );
        post_case(
            &mut c,
            format!("{path} duplicate key, last valid"),
            path,
            dup.as_bytes(),
            200,
        );
        let mut dup = String::from_utf8(valid.clone()).unwrap();
        let end = dup.rfind('}').unwrap();
        dup.replace_range(end.., ", \"temperature\": -3}");
        post_case(
            &mut c,
            format!("{path} duplicate key, last bad"),
            path,
            dup.as_bytes(),
            400,
        );

        // Prompts: empty, longer than the context, over the body limit.
        let long = "word ".repeat(3 * N_CTX);
        let over = "x".repeat(MAX_BODY + 1);
        if path == CHAT {
            for (name, messages) in [
                ("no messages", json!([])),
                ("messages not a list", json!({"role": "user"})),
                ("message not an object", json!(["hi"])),
                ("message without role", json!([{"content": "hi"}])),
                (
                    "message with numeric role",
                    json!([{"role": 1, "content": "hi"}]),
                ),
                ("unknown role", json!([{"role": "wizard", "content": "hi"}])),
                ("numeric content", json!([{"role": "user", "content": 5}])),
                (
                    "content parts not text",
                    json!([{"role": "user", "content": [{"type": "image_url"}]}]),
                ),
                (
                    "prompt longer than the context",
                    json!([{"role": "user", "content": long}]),
                ),
            ] {
                post_case(
                    &mut c,
                    format!("{path} {name}"),
                    path,
                    &with_field(path, "messages", messages),
                    400,
                );
            }
            post_case(
                &mut c,
                format!("{path} body over the limit"),
                path,
                &with_field(path, "messages", json!([{"role": "user", "content": over}])),
                413,
            );
            post_case(
                &mut c,
                format!("{path} only empty content"),
                path,
                &with_field(path, "messages", json!([{"role": "user", "content": ""}])),
                400,
            );
            post_case(
                &mut c,
                format!("{path} an empty message among others"),
                path,
                &with_field(
                    path,
                    "messages",
                    json!([{"role": "system", "content": ""}, {"role": "user", "content": "Hi"}]),
                ),
                200,
            );
        } else {
            for (name, prompt) in [
                ("empty prompt", json!("")),
                ("numeric prompt", json!(5)),
                ("empty id list", json!([])),
                ("id outside the vocabulary", json!([1, 2, 999_999])),
                ("negative id", json!([-1])),
                ("several prompts", json!(["a", "b"])),
                ("prompt longer than the context", json!(long)),
            ] {
                post_case(
                    &mut c,
                    format!("{path} {name}"),
                    path,
                    &with_field(path, "prompt", prompt),
                    400,
                );
            }
            post_case(
                &mut c,
                format!("{path} body over the limit"),
                path,
                &with_field(path, "prompt", json!(over)),
                413,
            );
            post_case(
                &mut c,
                format!("{path} special tokens in the prompt"),
                path,
                &with_field(path, "prompt", json!("<|im_start|><|im_end|><|endoftext|>")),
                200,
            );
        }
        // Methods and paths.
        for method in ["GET", "PUT", "DELETE", "PATCH"] {
            case(
                &mut c,
                format!("{method} {path}"),
                http(method, path, b""),
                405,
            );
        }
    }

    // Tokenize / detokenize.
    for (body, status) in [
        (json!({"content": "hello"}), 200),
        (json!({"content": ""}), 200),
        (json!({"content": 5}), 400),
        (json!({}), 400),
        (json!({"content": "a", "add_special": "yes"}), 400),
        (json!({"content": "../../etc/passwd"}), 200),
    ] {
        post_case(
            &mut c,
            format!("/tokenize {body}"),
            "/tokenize",
            body.to_string().as_bytes(),
            status,
        );
    }
    for (body, status) in [
        (json!({"tokens": [1, 2, 3]}), 200),
        (json!({"tokens": []}), 200),
        (json!({"tokens": [-1]}), 400),
        (json!({"tokens": [999_999]}), 400),
        (json!({"tokens": [1.5]}), 400),
        (json!({"tokens": "1 2 3"}), 400),
        (json!({"tokens": [u64::MAX]}), 400),
        (json!({}), 400),
    ] {
        post_case(
            &mut c,
            format!("/detokenize {body}"),
            "/detokenize",
            body.to_string().as_bytes(),
            status,
        );
    }
    post_case(&mut c, "/tokenize malformed", "/tokenize", b"{", 400);
    post_case(&mut c, "/detokenize malformed", "/detokenize", b"[", 400);

    // Paths: unknown, traversal, encoded, absurd.
    for path in [
        "/",
        "/v1",
        "/v2/chat/completions",
        "/v1/chat/completions/",
        "/v1/chat/completions/../models",
        "/../../etc/passwd",
        "/v1/models/../../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/v1/models%00",
        "/health/../metrics",
        "/metrics.txt",
        "/admin",
        "/v1/embeddings",
        "/v1/files",
    ] {
        case(&mut c, format!("GET {path}"), http("GET", path, b""), 404);
    }
    for path in ["/health", "/metrics", "/v1/models"] {
        case(&mut c, format!("GET {path}"), http("GET", path, b""), 200);
        case(
            &mut c,
            format!("POST {path}"),
            http("POST", path, b"{}"),
            405,
        );
    }
    case(
        &mut c,
        "GET with a query",
        http("GET", "/health?x=1&y=../../", b""),
        200,
    );

    // HTTP-level oddities.
    case(
        &mut c,
        "Content-Length beyond the limit, no body",
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n".to_vec(),
        413,
    );
    case(
        &mut c,
        "chunked body over the limit",
        {
            let mut r = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
            for _ in 0..80 {
                r.extend_from_slice(format!("400\r\n{}\r\n", "a".repeat(1024)).as_bytes());
            }
            r.extend_from_slice(b"0\r\n\r\n");
            r
        },
        413,
    );
    case(
        &mut c,
        "chunked valid body",
        {
            let body = with_field(COMPLETION, "model", json!("c"));
            let mut r = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
            for chunk in body.chunks(7) {
                r.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                r.extend_from_slice(chunk);
                r.extend_from_slice(b"\r\n");
            }
            r.extend_from_slice(b"0\r\n\r\n");
            r
        },
        200,
    );
    case(
        &mut c,
        "HTTP/1.0 request",
        b"GET /health HTTP/1.0\r\n\r\n".to_vec(),
        200,
    );
    case(
        &mut c,
        "a header of 100 kB",
        format!(
            "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(100_000)
        )
        .into_bytes(),
        431,
    );
    case(
        &mut c,
        "garbage request line",
        b"\x00\x01\x02 nonsense\r\n\r\n".to_vec(),
        400,
    );
    case(
        &mut c,
        "lowercase method",
        b"get /health HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        405,
    );
    case(
        &mut c,
        "two Content-Length headers that disagree",
        b"POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n{\"a\":".to_vec(),
        400,
    );
    c
}

/// The status line's code, or 0 when the server closed without a response.
fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn the_hostile_corpus_gets_the_right_statuses_and_the_server_keeps_answering() {
    let _g = serial();
    let limits = SocketLimits {
        header_read_timeout: Duration::from_secs(2),
        body_read_timeout: Duration::from_secs(2),
        max_connections: 64,
        ..SocketLimits::default()
    };
    let srv = Server::start_with(4, limits, |o| o.max_body_bytes = MAX_BODY);
    let rt = rt();
    let reference = json!({
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 8,
        "temperature": 0,
    });
    let before = rt.block_on(request(&srv.socket, "POST", CHAT, Some(reference.clone())));
    assert_eq!(before.status, 200, "{}", before.body);

    let cases = corpus();
    let mut failures = Vec::new();
    for case in &cases {
        let response = rt.block_on(raw(&srv.socket, &case.request, Duration::from_secs(30)));
        let got = status_of(&response);
        if got != case.status {
            failures.push(format!(
                "{}: expected {}, got {got}: {}",
                case.name,
                case.status,
                response.chars().take(300).collect::<String>()
            ));
            continue;
        }
        // Errors from our routes (not hyper's own 400/431) are in OpenAI's shape.
        if got >= 400 && response.contains("application/json") {
            let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
            let v: Value =
                serde_json::from_str(body).unwrap_or_else(|e| panic!("{}: {e}: {body}", case.name));
            assert!(v["error"]["message"].is_string(), "{}: {body}", case.name);
            assert!(v["error"]["type"].is_string(), "{}: {body}", case.name);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    eprintln!("{} hostile cases passed", cases.len());

    // Clients that hold connections: a header that never ends, a body that never comes, a
    // chunked body that never ends, and more idle connections than the limit.
    rt.block_on(async {
        let slow = [
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: a".to_vec(),
            b"POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"con".to_vec(),
            b"POST /tokenize HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"con\r\n".to_vec(),
        ];
        let start = Instant::now();
        let mut held = Vec::new();
        for bytes in &slow {
            let mut s = UnixStream::connect(&srv.socket).await.unwrap();
            s.write_all(bytes).await.unwrap();
            held.push(s);
        }
        let mut idle = Vec::new();
        for _ in 0..1000 {
            match UnixStream::connect(&srv.socket).await {
                Ok(s) => idle.push(s),
                Err(e) => panic!("connect failed with {} idle connections: {e}", idle.len()),
            }
        }
        // The server closes every one of them: the slow ones by their timeouts (408 or a
        // close), the idle ones over the limit at once and the rest by the header timeout.
        for (i, mut s) in held.into_iter().enumerate() {
            let mut out = Vec::new();
            tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
                .await
                .unwrap_or_else(|_| panic!("slow client {i} was never cut off"))
                .ok();
            let text = String::from_utf8_lossy(&out);
            assert!(
                out.is_empty() || [408, 400].contains(&status_of(&text)),
                "slow client {i}: {text}"
            );
        }
        let mut closed = 0;
        for mut s in idle {
            let mut buf = [0u8; 64];
            if let Ok(Ok(0)) =
                tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await
            {
                closed += 1;
            }
        }
        assert_eq!(closed, 1000, "idle connections left open");
        assert!(start.elapsed() < Duration::from_secs(60));
    });

    // After all of it, the same question gets the same answer.
    let after = rt.block_on(request(&srv.socket, "POST", CHAT, Some(reference)));
    assert_eq!(after.status, 200, "{}", after.body);
    let text = |r: &Reply| r.json()["choices"][0]["message"]["content"].clone();
    assert_eq!(text(&after), text(&before));
    assert!(
        srv.handle
            .stats
            .jobs_failed
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0
    );
}
