//! The serial console's session against the real model, over an in-memory port: the banner,
//! questions answered turn after turn with the cache reused, the commands, Ctrl-C, line rules,
//! json mode, queue-full and shutdown messages, and the port going away.

mod common;
mod serial_terminal;

use std::io::ErrorKind;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgellm_hal::board::FlowControl;
use edgellm_hal::engine::{Engine, EngineHandle, Event, Job, Prompt};
use edgellm_hal::serial::{run_console, SerialError, SerialOptions};
use edgellm_hal::shutdown::Shutdown;
use edgellm_models::GenerateParams;
use edgellm_runtime::chat_template::ChatMessage;
use serial_terminal::*;

fn start_engine(queue: usize) -> (Engine, EngineHandle) {
    common::engine_ctx(queue, 512)
}

#[test]
fn human_mode_converses_turn_after_turn_with_commands() {
    let (_engine, h) = start_engine(4);
    let mut t = Terminal::connect(&h, 1024);
    let banner = t.expect("> ");
    assert!(banner.contains(&h.info().model_name), "{banner:?}");
    assert!(
        banner.contains("/help") && banner.contains("testboard"),
        "{banner:?}"
    );

    let help = t.line("/help");
    for cmd in ["/reset", "/system", "/set", "/stats", "/mode json"] {
        assert!(help.contains(cmd), "{cmd} missing from {help:?}");
    }
    assert!(t.line("/set max_tokens 16").contains("max_tokens = 16"));
    assert!(t.line("/set temp 0").contains("temp = 0"));
    // Bad values are refused with a reason, and the settings stay.
    assert!(t.line("/set temp -1").contains("temperature"));
    assert!(t.line("/set top_p 1.5").contains("top_p"));
    assert!(t.line("/set top_k many").contains("not a valid number"));
    assert!(t.line("/set max_tokens 0").contains("at least 1"));
    assert!(t.line("/set colour blue").contains("unknown setting"));
    let settings = t.line("/set");
    assert!(
        settings.contains("temp 0 ") && settings.contains("max_tokens 16"),
        "{settings:?}"
    );
    assert!(t.line("/frobnicate").contains("unknown command"));

    // First turn, typed with LF, then the echo and the streamed answer.
    let q1 = "What is the capital of France?";
    t.send(format!("{q1}\n").as_bytes());
    let echoed = t.expect(&format!("{q1}\r\n"));
    assert!(echoed.ends_with(&format!("{q1}\r\n")));
    let shown1 = t.expect("\r\n> ");
    let a1 = answer_text(&shown1, q1);
    assert!(!a1.is_empty(), "no answer in {shown1:?}");
    // CRLF line endings only.
    assert!(
        !shown1.replace("\r\n", "").contains('\n'),
        "bare LF in {shown1:?}"
    );
    let expected1 = reference(
        &h,
        &Prompt::Chat(vec![ChatMessage::new("user", q1)]),
        greedy(16, h.info().n_ctx, 1),
    );
    assert_eq!(a1, expected1.trim_end(), "the console's answer differs");

    // Second turn, typed with CRLF: the earlier turn comes from the cache.
    let reused_before = h.stats.reused_tokens.load(Ordering::Relaxed);
    let q2 = "And of Germany?";
    t.send(format!("{q2}\r\n").as_bytes());
    let shown2 = t.expect("\r\n> ");
    let a2 = answer_text(&shown2, q2);
    assert!(!a2.is_empty(), "{shown2:?}");
    let expected2 = reference(
        &h,
        &Prompt::Chat(vec![
            ChatMessage::new("user", q1),
            ChatMessage::new("assistant", expected1.trim_end()),
            ChatMessage::new("user", q2),
        ]),
        greedy(16, h.info().n_ctx, 1),
    );
    assert_eq!(a2, expected2.trim_end());
    assert!(h.stats.reused_tokens.load(Ordering::Relaxed) > reused_before);

    // The reference job ran last, so ask once more to make /stats describe the console's turn.
    t.line("Thanks!");
    let stats = t.line("/stats");
    let cached: usize = stats
        .split(" cached)")
        .next()
        .and_then(|s| s.rsplit('(').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no cached count in {stats:?}"));
    assert!(cached > 0, "third turn reused nothing: {stats:?}");
    assert!(stats.contains("tokens/s"), "{stats:?}");
    assert!(stats.contains(&format!("/ {} tokens used", h.info().n_ctx)));
    assert!(stats.contains("SoC temperature: "), "{stats:?}");
    assert!(!stats.contains("context: 0 /"), "{stats:?}");

    assert!(t.line("/reset").contains("new conversation"));
    assert!(t.line("/stats").contains("context: 0 /"));
    assert!(t
        .line("/system You answer in one word.")
        .contains("system prompt set"));
    let shown = t.line("Name a colour.");
    assert!(!answer_text(&shown, "Name a colour.").is_empty());

    t.shutdown.trigger();
    assert!(t
        .quiet_for(Duration::from_millis(500))
        .contains("shutting down"));
    t.finish().expect("run ends with Ok on shutdown");
}

#[test]
fn ctrl_c_stops_an_answer_and_bad_input_is_rejected_without_loss() {
    let (_engine, h) = start_engine(4);
    let mut t = Terminal::connect(&h, 64);
    t.expect("> ");
    t.line("/set max_tokens 400");

    // A long answer, interrupted after a few tokens.
    t.send(b"Write a long story about a dragon and a knight.\r\n");
    t.expect("knight.\r\n");
    // The progress indicator and some answer text.
    t.wait_for_bytes(120);
    let pressed = Instant::now();
    t.send(b"\x03");
    let rest = t.expect("[stopped]\r\n> ");
    assert!(
        pressed.elapsed() < Duration::from_secs(2),
        "Ctrl-C took {:?}",
        pressed.elapsed()
    );
    assert!(rest.contains("^C"), "{rest:?}");
    assert_eq!(h.stats.jobs_cancelled.load(Ordering::Relaxed), 1);
    assert!(h.stats.generated_tokens.load(Ordering::Relaxed) < 400);

    // Ctrl-C at the prompt clears the line.
    t.send(b"half a line\x03");
    t.expect("^C\r\n> ");
    assert!(t.line("/set max_tokens 8").contains("max_tokens = 8"));

    // A line over the 64-byte buffer is refused once it ends; the next line works.
    let long = "x".repeat(100);
    let refused = t.line(&long);
    assert!(refused.contains("longer than 64 bytes"), "{refused:?}");
    assert_eq!(refused.matches('x').count(), 64, "echo went past the limit");
    assert!(t.line("/help").contains("/reset"));

    // Bytes that are not UTF-8 are dropped with a notice and never echoed.
    t.send(b"/he\xff\xfe");
    let notice = t.expect("> /he");
    assert!(
        notice.contains("[dropped 2 bytes that are not UTF-8]"),
        "{notice:?}"
    );
    t.send("lp\r".as_bytes());
    assert!(t.expect("\r\n> ").contains("/reset"));
    // A multi-byte character typed in pieces is echoed once, whole.
    t.send(b"/set seed \xe2\x82");
    t.send(b"\xac\r");
    let shown = t.expect("\r\n> ");
    assert!(shown.starts_with("/set seed €\r\n"), "{shown:?}");
    assert!(shown.contains("not a valid number"));

    // A long prompt shows its evaluation progress ([prompt 32/N] first, n_batch 32).
    let mut t2 = Terminal::connect(&h, 4096);
    t2.expect("> ");
    t2.line("/set max_tokens 4");
    let long_question = format!(
        "Please summarise the following: {}",
        "the quick brown fox jumps over the lazy dog. ".repeat(12)
    );
    let shown = t2.line(&long_question);
    assert!(shown.contains("\r[prompt 64/"), "{shown:?}");

    // Too long for the context: refused with the reason.
    let huge = "word ".repeat(700);
    let shown = t2.line(&huge);
    assert!(shown.contains("the context holds 512"), "{shown:?}");

    // The port goes away: run returns the error (the device layer reopens).
    t.keys = None;
    let err = t.finish().expect_err("a vanished port is an error");
    assert_eq!(err.kind(), ErrorKind::BrokenPipe);
    t2.shutdown.trigger();
    t2.finish().unwrap();
}

#[test]
fn json_mode_answers_with_json_lines() {
    let (_engine, h) = start_engine(4);
    let mut t = Terminal::connect(&h, 1024);
    t.expect("> ");
    t.send(b"/mode json\r");
    t.expect("{\"mode\":\"json\"}\r\n");

    let request = r#"{"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0}"#;
    t.send(format!("{request}\r\n").as_bytes());
    let shown = t.expect("}}\r\n");
    // No echo: only JSON lines, each ending in CRLF.
    assert!(shown.ends_with("\r\n"));
    let lines: Vec<serde_json::Value> = shown
        .split_terminator("\r\n")
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let (done, tokens) = lines.split_last().unwrap();
    let text: String = tokens
        .iter()
        .map(|v| v["token"].as_str().expect("a token line").to_string())
        .collect();
    assert_eq!(
        text,
        reference(
            &h,
            &Prompt::Text("Once upon a time".into()),
            greedy(8, 512, 1)
        )
    );
    assert_eq!(done["done"], true);
    assert_eq!(done["stop_reason"], "max_tokens");
    assert_eq!(done["usage"]["completion_tokens"], 8);
    let prompt_tokens = h
        .prompt_ids(&Prompt::Text("Once upon a time".into()))
        .unwrap()
        .len();
    assert_eq!(done["usage"]["prompt_tokens"], prompt_tokens);

    // The same prompt again: all but the last two prompt tokens come from the cache.
    t.send(format!("{request}\n").as_bytes());
    let again: serde_json::Value =
        serde_json::from_str(t.expect("}}\r\n").rsplit("\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(again["usage"]["cached_tokens"], prompt_tokens - 2);

    // A chat request, with a stop string.
    t.send(
        br#"{"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8, "temperature": 0, "stop": ["zzz"], "seed": 1}"#,
    );
    t.send(b"\r");
    let shown = t.expect("}}\r\n");
    assert!(shown.contains("\"done\":true"), "{shown:?}");

    // Errors are JSON lines too, and the next request still works.
    for (bad, says) in [
        (r#"{"prompt": 5}"#, "'prompt' must be"),
        ("not json", "not valid JSON"),
        (r#"{"prompt": "a", "top_p": 2}"#, "top_p"),
        (r#"{"prompt": ""}"#, "empty"),
        (r#"{"mode": "loud"}"#, "mode"),
    ] {
        t.send(format!("{bad}\r").as_bytes());
        let line = t.expect("\r\n");
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        let msg = v["error"].as_str().unwrap_or_else(|| panic!("{line:?}"));
        assert!(msg.contains(says), "{bad}: {msg}");
    }
    let long = format!("{{\"prompt\": \"{}\"}}", "y".repeat(1100));
    t.send(format!("{long}\r").as_bytes());
    assert!(t.expect("\r\n").contains("longer than 1024 bytes"));
    t.send(b"{\"prompt\": \"a\xff\"}\r");
    assert!(t.expect("\r\n").contains("not UTF-8"));

    // Ctrl-C cancels a json answer too.
    t.send(br#"{"prompt": "The history of Rome", "max_tokens": 400}"#);
    t.send(b"\r");
    t.expect("{\"token\"");
    t.send(b"\x03");
    let end = t.expect("}}\r\n");
    assert!(end.contains("\"stop_reason\":\"cancelled\""), "{end:?}");

    // Back to human mode.
    t.send(b"{\"mode\":\"human\"}\r");
    let banner = t.expect("> ");
    assert!(banner.contains("/help"));
    assert!(t.line("/help").contains("/reset"));
    t.send(b"/mode json\r");
    t.expect("{\"mode\":\"json\"}\r\n");
    t.send(b"/mode human\r");
    t.expect("/help lists the commands.\r\n> ");

    t.shutdown.trigger();
    t.finish().unwrap();
}

#[test]
fn queue_full_and_shutting_down_are_reported() {
    let (_engine, h) = start_engine(1);
    let mut t = Terminal::connect(&h, 1024);
    t.expect("> ");

    // Occupy the engine (with a job that cannot end early).
    let cancel = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    h.submit(Job {
        prompt: h.prompt_ids(&Prompt::Text("Tell me".into())).unwrap(),
        params: GenerateParams {
            ignore_eos: true,
            ..greedy(500, 512, 3)
        },
        sink: Box::new(move |ev| tx.send(ev).is_ok()),
        cancel: Arc::clone(&cancel),
    })
    .expect("submit");
    while h.stats.busy.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    // A question waits in the queue (and says so); Ctrl-C gives the prompt back at once.
    t.send(
        b"Hello?
",
    );
    t.expect("[waiting for the engine: 1 request ahead]\r\n");
    let pressed = Instant::now();
    t.send(b"\x03");
    assert_eq!(t.expect("\r\n> "), "^C\r\n[stopped]\r\n> ");
    assert!(pressed.elapsed() < Duration::from_secs(2));
    // The skipped job still holds the one queue slot until the engine reaches it.
    let shown = t.line("Hello?");
    assert!(shown.contains("[the request queue is full"), "{shown:?}");
    t.send(b"/mode json\r");
    t.expect("{\"mode\":\"json\"}\r\n");
    t.send(b"{\"prompt\": \"Hello?\"}\r");
    let line = t.expect("\r\n");
    assert!(
        line.starts_with("{\"error\":\"the request queue is full"),
        "{line:?}"
    );
    cancel.store(true, Ordering::SeqCst);
    while !matches!(
        rx.recv_timeout(WAIT).unwrap(),
        Event::Done(_) | Event::Failed(_)
    ) {}
    // The queue drains; the console answers again.
    let deadline = Instant::now() + WAIT;
    while h.stats.queue_depth.load(Ordering::SeqCst) + h.stats.busy.load(Ordering::SeqCst) > 0 {
        assert!(Instant::now() < deadline, "the queue never drained");
        std::thread::sleep(Duration::from_millis(5));
    }
    t.send(b"{\"prompt\": \"Hello?\", \"max_tokens\": 2}\r");
    assert!(t.expect("}}\r\n").contains("\"done\":true"));

    h.shutdown();
    t.send(b"{\"prompt\": \"Hello?\"}\r");
    let line = t.expect("\r\n");
    assert!(line.contains("shutting down"), "{line:?}");
    t.send(b"/mode human\r");
    t.expect("> ");
    assert!(t.line("Hello?").contains("[the server is shutting down]"));
    t.shutdown.trigger();
    t.finish().unwrap();
}

#[test]
fn run_console_waits_for_a_missing_device_and_returns_on_shutdown() {
    let (_engine, h) = start_engine(1);
    let opts = SerialOptions {
        device: std::env::temp_dir().join(format!("edgellm-no-such-tty-{}", std::process::id())),
        baud: 115_200,
        flow_control: FlowControl::None,
        line_buffer: 1024,
        board: None,
    };
    // Bad options are refused at once.
    let bad = SerialOptions {
        line_buffer: 10,
        ..opts.clone()
    };
    assert!(matches!(
        run_console(bad, h.clone(), Shutdown::new()),
        Err(SerialError::LineBuffer { bytes: 10 })
    ));
    // A missing device is waited for, and shutdown ends the wait promptly.
    let shutdown = Shutdown::new();
    let console = {
        let (h, shutdown) = (h.clone(), shutdown.clone());
        std::thread::spawn(move || run_console(opts, h, shutdown))
    };
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!console.is_finished(), "gave up on a missing device");
    let triggered = Instant::now();
    shutdown.trigger();
    console.join().unwrap().expect("Ok on shutdown");
    assert!(triggered.elapsed() < Duration::from_millis(400));
}
