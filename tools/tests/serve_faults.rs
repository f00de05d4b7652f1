//! Faults `edgellm serve` must survive, each on the real binary: the model file replaced on disk
//! while serving (the old mapping keeps serving; SIGHUP maps the new file at a request boundary;
//! a broken new file keeps the old model), SIGKILL then a restart on the same socket (the stale
//! file is replaced), and a memory limit too small for the model and context (refused at start
//! with the figure it needed). Client disconnects, SIGTERM mid-answer and the serial device
//! going away are in serve_socket.rs and serve_serial.rs.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::serve::{curl, post, Serve};
use nix::sys::signal::{kill, Signal};
use serde_json::Value;

const ASK: &str = r#"{"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 6, "temperature": 0}"#;

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn health(sock: &Path) -> Value {
    let (status, body) = curl(sock, &["http://localhost/health"]);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn answer(sock: &Path) -> String {
    let (status, body) = post(sock, "/v1/chat/completions", ASK);
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Waits until `/health` satisfies `ok` (the engine reloads between requests).
fn wait_health(sock: &Path, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let h = health(sock);
        if ok(&h) {
            return h;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what} never happened: {h}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_model_replaced_on_disk_serves_on_until_sighup_maps_the_new_file() {
    let dir = Serve::fresh_dir();
    let model = dir.join("model.gguf");
    std::fs::copy(Serve::model_path(), &model).unwrap();
    let socket = dir.join("edgellm.sock");
    let args = strings(&[
        "-m",
        model.to_str().unwrap(),
        "-t",
        "1",
        "--ctx",
        "512",
        "--socket",
        socket.to_str().unwrap(),
        "--no-serial",
    ]);
    let mut serve = Serve::start_args(&args, Some(&socket));
    // Asked twice: the second answer comes through the prefix cache (the prompt's last two
    // tokens evaluated again), the path every later request takes.
    answer(&socket);
    let first = answer(&socket);
    let old_bytes = health(&socket)["model_file_bytes"].as_u64().unwrap();

    // A new file (the same weights as Q8_0, so a different size) renamed over the old one.
    let staged = dir.join("model.gguf.new");
    let q = Command::new(Serve::edgellm())
        .arg("quantize")
        .arg(&model)
        .arg(&staged)
        .arg("q8_0")
        .output()
        .unwrap();
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    std::fs::rename(&staged, &model).unwrap();

    // The old mapping keeps serving, unchanged.
    assert_eq!(answer(&socket), first);
    assert_eq!(health(&socket)["model_file_bytes"], old_bytes);

    kill(serve.pid(), Signal::SIGHUP).unwrap();
    let h = wait_health(&socket, "the reload", |h| h["reloads"] == 1);
    let new_bytes = h["model_file_bytes"].as_u64().unwrap();
    assert_ne!(new_bytes, old_bytes, "{h}");
    assert_eq!(new_bytes, std::fs::metadata(&model).unwrap().len());
    assert!(!answer(&socket).is_empty());

    // A broken file: the reload fails, the model mapped before keeps serving.
    std::fs::write(&staged, b"GGUF but not really").unwrap();
    std::fs::rename(&staged, &model).unwrap();
    kill(serve.pid(), Signal::SIGHUP).unwrap();
    let h = wait_health(&socket, "the failed reload", |h| h["reload_failures"] == 1);
    assert_eq!(h["reloads"], 1);
    assert_eq!(h["model_file_bytes"], new_bytes);
    assert!(!answer(&socket).is_empty());
    assert!(serve.stderr().contains("the old model keeps serving"));

    assert!(serve.sigterm().success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn after_sigkill_a_restart_replaces_the_stale_socket() {
    let mut serve = Serve::start(&[]);
    let socket = serve.socket.clone();
    assert!(!answer(&socket).is_empty());
    kill(serve.pid(), Signal::SIGKILL).unwrap();
    let status = serve.wait_exit(Duration::from_secs(10));
    assert!(!status.success());
    assert!(
        socket.exists(),
        "a killed server cannot remove its socket file"
    );

    let args = strings(&[
        "-t",
        "1",
        "--ctx",
        "512",
        "--socket",
        socket.to_str().unwrap(),
        "--no-serial",
    ]);
    let mut again = Serve::start_args(&args, Some(&socket));
    assert!(!answer(&socket).is_empty());
    assert!(again.sigterm().success());
    assert!(!socket.exists());
}

/// A server that a failed assertion must not leave running (it holds the test's output pipes).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_memory_limit_too_small_is_refused_at_start_with_the_figure() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("prlimit (util-linux) missing: skipped");
        return;
    }
    let dir = Serve::fresh_dir();
    let socket = dir.join("edgellm.sock");
    // 300 MB of address space: the 98 MB model maps, but a 8192-token F16 KV cache (180 MiB)
    // plus the rest does not fit.
    let out = Command::new("prlimit")
        .arg("--as=300000000")
        .arg(Serve::edgellm())
        .arg("serve")
        .arg("-m")
        .arg(Serve::model_path())
        .args(["-t", "1", "--ctx", "8192", "--no-serial", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not enough memory"), "{stderr}");
    assert!(stderr.contains("KV cache 180.0 MiB"), "{stderr}");
    assert!(stderr.contains("lower --ctx to at most"), "{stderr}");
    assert!(!socket.exists());

    // The context it suggests does start under the same limit, and answers. Then once more
    // without the limit: the address space it peaks at, every thread started and a request
    // answered, is within the limit too. (Address space no figure counted, such as glibc's
    // 64 MiB malloc arena per thread, would make the limited start fail or not depending on
    // which thread allocates first; unlimited, the peak shows it every time.)
    let fit: usize = stderr
        .split("at most ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    for limited in [true, false] {
        let mut cmd = if limited {
            let mut c = Command::new("prlimit");
            c.arg("--as=300000000").arg(Serve::edgellm());
            c
        } else {
            Command::new(Serve::edgellm())
        };
        let mut child = KillOnDrop(
            cmd.arg("serve")
                .arg("-m")
                .arg(Serve::model_path())
                .args(["-t", "1", "--no-serial", "--ctx"])
                .arg(fit.to_string())
                .arg("--socket")
                .arg(&socket)
                .spawn()
                .unwrap(),
        );
        let child = &mut child.0;
        let start = Instant::now();
        while !socket.exists() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("serve at the suggested context {fit} exited with {status}");
            }
            assert!(start.elapsed() < Duration::from_secs(60));
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!answer(&socket).is_empty());
        if !limited {
            let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
            let peak_kb: u64 = status
                .lines()
                .find_map(|l| l.strip_prefix("VmPeak:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap();
            assert!(
                peak_kb * 1024 <= 300_000_000,
                "unlimited, serve at context {fit} peaked at {peak_kb} kB of address space"
            );
        }
        kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            Signal::SIGTERM,
        )
        .unwrap();
        assert!(child.wait().unwrap().success());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
