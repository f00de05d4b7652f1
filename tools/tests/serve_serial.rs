//! `edgellm serve --serial` over a real pseudo-terminal: socat makes a pty pair, the server
//! holds one end, a pyserial client (tests/clients/serial_client.py) the other. The client
//! talks to the console (answers, Ctrl-C, an oversized line, non-UTF-8 bytes, json mode and
//! back); then the pty pair is torn down and made again, and the console comes back.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::serve::Serve;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// `socat pty,link=DIR/ttyA pty,link=DIR/ttyB`: a pty pair that lives as long as socat.
struct PtyPair {
    socat: Child,
    a: PathBuf,
    b: PathBuf,
}

impl PtyPair {
    fn start(dir: &Path) -> PtyPair {
        let (a, b) = (dir.join("ttyA"), dir.join("ttyB"));
        let socat = Command::new("socat")
            .arg("-d")
            .arg("-d")
            .arg(format!("pty,raw,echo=0,link={}", a.display()))
            .arg(format!("pty,raw,echo=0,link={}", b.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting socat (is it installed?)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(a.exists() && b.exists()) {
            assert!(Instant::now() < deadline, "socat made no ptys");
            std::thread::sleep(Duration::from_millis(20));
        }
        PtyPair { socat, a, b }
    }

    /// Tears the pair down the way socat does on SIGTERM (the links go too).
    fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if let Ok(None) = self.socat.try_wait() {
            let _ = kill(Pid::from_raw(self.socat.id() as i32), Signal::SIGTERM);
            let _ = self.socat.wait();
        }
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Runs the pyserial client; returns its JSON report.
fn client(device: &Path, scenario: &str) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/serial_client.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(device)
        .arg(scenario)
        .output()
        .expect("running python3");
    assert!(
        out.status.success(),
        "serial_client.py {scenario} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "serial_client.py printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn text<'v>(v: &'v Value, key: &str) -> &'v str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in the client's report: {v}"))
}

/// The answer part of what the console showed for a typed line: after the echo's line end,
/// without the progress indicator and the next prompt.
fn answer(shown: &str) -> String {
    let after_echo = shown.split_once("\r\n").map_or("", |(_, rest)| rest);
    let mut body = after_echo.strip_suffix("\r\n> ").unwrap_or(after_echo);
    if body.starts_with("\r[prompt ") {
        // "\r[prompt 32/40]\r[prompt 40/40]\r<blanks>\r": the last indicator ends at "]\r ".
        if let Some(i) = body.find("]\r ") {
            body = body[i + 2..]
                .trim_start_matches(' ')
                .trim_start_matches('\r');
        }
    }
    body.trim().to_string()
}

fn assert_answered(shown: &str, what: &str) {
    assert!(
        !shown.replace("\r\n", "").contains('\n'),
        "{what}: a bare LF in {shown:?}"
    );
    let a = answer(shown);
    assert!(
        !a.is_empty() && !a.starts_with('['),
        "{what}: no answer in {shown:?}"
    );
}

fn wait_for_log(serve: &Serve, needle: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while serve.stderr().matches(needle).count() < count {
        assert!(
            Instant::now() < deadline,
            "the server never logged {needle:?} ({count}x):\n{}",
            serve.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serial_console_over_a_pty_answers_and_survives_the_device_going_away() {
    let dir = Serve::fresh_dir();
    let pair = PtyPair::start(&dir);
    let args: Vec<String> = [
        "-t",
        "1",
        "--ctx",
        "1024",
        "--no-socket",
        "--serial",
        &pair.a.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut serve = Serve::start_args(&args, None);
    wait_for_log(&serve, "serial console open on", 1);

    let r = client(&pair.b, "session");
    for shown in r["set"].as_array().unwrap() {
        assert!(shown.as_str().unwrap().contains(" = "), "{shown}");
    }
    let shown = text(&r, "answer");
    assert!(
        shown.starts_with("What is the capital of France?\r\n"),
        "no echo: {shown:?}"
    );
    assert_answered(shown, "first question");

    let interrupted = text(&r, "interrupted");
    assert!(
        interrupted.contains("^C") && interrupted.ends_with("[stopped]\r\n> "),
        "{interrupted:?}"
    );
    assert!(
        r["interrupt_seconds"].as_f64().unwrap() < 2.0,
        "Ctrl-C took {}s",
        r["interrupt_seconds"]
    );
    assert_answered(text(&r, "after_interrupt"), "after Ctrl-C");

    let overlong = text(&r, "overlong");
    assert!(
        overlong.contains("[the line is longer than 1024 bytes and was not sent]"),
        "{overlong:?}"
    );
    assert_eq!(overlong.matches('x').count(), 1024, "echo past the limit");
    assert_answered(text(&r, "after_overlong"), "after the oversized line");

    let invalid = text(&r, "invalid");
    assert!(
        invalid.starts_with("Name an animal.\r\n[dropped 2 bytes that are not UTF-8]\r\n"),
        "{invalid:?}"
    );
    assert_answered(
        &invalid.replace("[dropped 2 bytes that are not UTF-8]\r\n", ""),
        "the question with non-UTF-8 bytes",
    );

    let lines = r["json_prompt"].as_array().unwrap();
    let (done, tokens) = lines.split_last().unwrap();
    assert!(!tokens.is_empty() && tokens.iter().all(|t| t["token"].is_string()));
    assert_eq!(done["done"], true);
    assert_eq!(done["stop_reason"], "max_tokens");
    assert_eq!(done["usage"]["completion_tokens"], 8);
    assert!(done["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(done["usage"]["cached_tokens"].is_u64());
    let chat_done = r["json_chat"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(chat_done["done"], true, "{chat_done}");
    let error = &r["json_error"][0]["error"];
    assert!(
        error.as_str().unwrap().contains("'prompt' must be"),
        "{error}"
    );
    assert!(text(&r, "back_to_human").contains("/help"));
    assert_answered(text(&r, "final_answer"), "back in human mode");

    // The device disappears: the console says so and the service keeps running.
    pair.stop();
    wait_for_log(&serve, "went away", 1);
    assert!(serve.child.try_wait().unwrap().is_none(), "the server died");
    // It comes back on the same path: the console reopens it and answers again.
    let pair = PtyPair::start(&dir);
    wait_for_log(&serve, "serial console open on", 2);
    let r = client(&pair.b, "again");
    assert_answered(text(&r, "answer"), "after the device came back");

    assert!(serve.sigterm().success(), "{}", serve.stderr());
    // The console ended cleanly, not with an error.
    let stopped = format!("serial console on {} stopped", dir.join("ttyA").display());
    assert!(serve.stderr().contains(&stopped), "{}", serve.stderr());
    drop(pair);
    let _ = std::fs::remove_dir_all(&dir);
}
