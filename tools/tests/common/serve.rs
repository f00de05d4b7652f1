//! `Serve`: an `edgellm serve` process for a test: started on a private socket in a fresh
//! directory, waited for until it is ready, stopped with SIGTERM (checked) or killed on drop.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const START_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Serve {
    pub child: Child,
    /// The socket path (`<dir>/edgellm.sock` for [`Serve::start`]).
    pub socket: PathBuf,
    /// A directory private to this server, removed on drop.
    pub dir: PathBuf,
    log: Arc<Mutex<String>>,
}

impl Serve {
    /// The binary under test.
    pub fn edgellm() -> PathBuf {
        PathBuf::from(env!("CARGO_BIN_EXE_edgellm"))
    }

    /// The real model every serving test runs.
    pub fn model_path() -> PathBuf {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let p = std::env::var_os("EDGELLM_MODEL")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("models/gguf/SmolLM2-135M-Instruct.Q4_1.gguf"));
        assert!(
            p.exists(),
            "model {} missing: run `make model`",
            p.display()
        );
        p
    }

    /// A fresh directory for one server (sockets, pty links).
    pub fn fresh_dir() -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        // Short: socket paths must fit in 107 bytes.
        let dir = std::env::temp_dir().join(format!(
            "edgellm-t{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the test directory");
        dir
    }

    /// `edgellm serve -m MODEL -t 1 --ctx 2048 --socket DIR/edgellm.sock --no-serial EXTRA...`,
    /// ready once the socket accepts connections.
    pub fn start(extra: &[&str]) -> Serve {
        let dir = Serve::fresh_dir();
        let socket = dir.join("edgellm.sock");
        let mut args: Vec<String> = ["-t", "1", "--ctx", "2048", "--socket"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(socket.display().to_string());
        args.push("--no-serial".into());
        args.extend(extra.iter().map(|s| s.to_string()));
        Serve::spawn(args, Some(&socket), dir, socket.clone())
    }

    /// `edgellm serve [-m MODEL] ARGS...` (the test model unless ARGS name one); ready when
    /// `wait_for` accepts connections, or (None) when the log says "ready".
    pub fn start_args(args: &[String], wait_for: Option<&Path>) -> Serve {
        let dir = Serve::fresh_dir();
        let socket = wait_for
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.join("edgellm.sock"));
        Serve::spawn(args.to_vec(), wait_for, dir, socket)
    }

    fn spawn(args: Vec<String>, wait_for: Option<&Path>, dir: PathBuf, socket: PathBuf) -> Serve {
        let mut cmd = Command::new(Serve::edgellm());
        cmd.arg("serve");
        if !args.iter().any(|a| a == "-m" || a == "--model") {
            cmd.arg("-m").arg(Serve::model_path());
        }
        cmd.args(&args)
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("starting edgellm serve");
        let log = Arc::new(Mutex::new(String::new()));
        {
            let mut stderr = child.stderr.take().expect("piped stderr");
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stderr.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let text = String::from_utf8_lossy(&buf[..n]);
                    // Echo so a failing test shows the server's side.
                    eprint!("[serve] {text}");
                    log.lock().unwrap().push_str(&text);
                }
            });
        }
        let mut serve = Serve {
            child,
            socket,
            dir,
            log,
        };
        let start = Instant::now();
        loop {
            let ready = match wait_for {
                Some(p) => UnixStream::connect(p).is_ok(),
                None => serve.stderr().contains("ready"),
            };
            if ready {
                return serve;
            }
            if let Ok(Some(status)) = serve.child.try_wait() {
                panic!(
                    "edgellm serve {args:?} exited with {status} before it was ready:\n{}",
                    serve.stderr()
                );
            }
            if start.elapsed() > START_TIMEOUT {
                panic!(
                    "edgellm serve {args:?} not ready after {START_TIMEOUT:?}:\n{}",
                    serve.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything the server logged so far.
    pub fn stderr(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Sends SIGTERM and waits for the exit (panics after 30 s).
    pub fn sigterm(&mut self) -> ExitStatus {
        kill(self.pid(), Signal::SIGTERM).expect("sending SIGTERM");
        self.wait_exit(STOP_TIMEOUT)
    }

    /// Waits for the process to exit on its own (panics after `timeout`).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for edgellm serve") {
                return status;
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                panic!(
                    "edgellm serve still running {timeout:?} after being asked to stop:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `curl --unix-socket SOCK ARGS`: (HTTP status, body).
pub fn curl(sock: &Path, args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60", "--unix-socket"])
        .arg(sock)
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("running curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("curl printed the status");
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// `POST` a JSON body with curl: (HTTP status, body).
pub fn post(sock: &Path, path: &str, body: &str) -> (u16, String) {
    let url = format!("http://localhost{path}");
    curl(
        sock,
        &["-H", "content-type: application/json", "-d", body, &url],
    )
}
