//! The in-process socket server the hal socket tests share: the real model on an engine
//! (1 thread, context 1024) behind a `SocketServer` on a private socket, and the clients that
//! talk to it (hyper's client for well-formed requests, raw bytes for hostile ones).
// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use edgellm_hal::engine::{Engine, EngineHandle};
use edgellm_hal::shutdown::Shutdown;
use edgellm_hal::socket::{SocketError, SocketLimits, SocketOptions, SocketServer};
use edgellm_models::{LoadOptions, Model, StateOptions};
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

pub const N_CTX: usize = 1024;

/// Tests that time the engine run one at a time (the machine has two cores).
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// The real model on an engine with one thread and a context of `N_CTX`.
pub fn engine(queue: usize) -> (Engine, EngineHandle) {
    engine_ctx(queue, N_CTX)
}

/// The real model on an engine with one thread and a context of `n_ctx`.
pub fn engine_ctx(queue: usize, n_ctx: usize) -> (Engine, EngineHandle) {
    engine_beams(queue, n_ctx, 0)
}

/// The state options every test engine uses at context `n_ctx`.
pub fn state_options(n_ctx: usize) -> StateOptions {
    StateOptions {
        n_ctx,
        n_threads: 1,
        ..Default::default()
    }
}

/// The real model, loaded as the test engines load it (one thread).
pub fn load_model() -> Model {
    Model::load(
        &edgellm_runtime::default_model_path(),
        LoadOptions {
            n_threads: 1,
            kernels: None,
        },
    )
    .expect("loading the model (run `make model`)")
}

/// [`engine_ctx`] with room for beam jobs of up to `max_beams` beams.
pub fn engine_beams(queue: usize, n_ctx: usize, max_beams: usize) -> (Engine, EngineHandle) {
    let path = edgellm_runtime::default_model_path();
    Engine::start_with_beams(load_model(), path, state_options(n_ctx), queue, max_beams)
        .expect("starting the engine")
}

pub fn fresh_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "edgellm-sock-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn options(path: &Path) -> SocketOptions {
    SocketOptions {
        path: path.to_path_buf(),
        mode: 0o660,
        group: None,
        allowed_uids: None,
        allowed_gids: None,
        max_body_bytes: 64 * 1024,
        board: Some("test-board".into()),
        listen: None,
        api_key: None,
    }
}

/// An engine plus a socket server on its own thread; stopped (and checked) on drop.
pub struct Server {
    pub engine: Option<Engine>,
    pub handle: EngineHandle,
    pub shutdown: Shutdown,
    pub thread: Option<JoinHandle<Result<(), SocketError>>>,
    pub socket: PathBuf,
    pub dir: PathBuf,
    pub tcp: Option<std::net::SocketAddr>,
}

impl Server {
    pub fn start(queue: usize) -> Server {
        Server::start_with(queue, SocketLimits::default(), |_| {})
    }

    pub fn start_with(
        queue: usize,
        limits: SocketLimits,
        adjust: impl FnOnce(&mut SocketOptions),
    ) -> Server {
        Server::start_on(engine(queue), limits, adjust)
    }

    /// A server (default limits) whose engine has room for `max_beams` beams.
    pub fn start_beams(queue: usize, max_beams: usize) -> Server {
        Server::start_on(
            engine_beams(queue, N_CTX, max_beams),
            SocketLimits::default(),
            |_| {},
        )
    }

    /// A server in front of `engine`.
    pub fn start_on(
        (engine, handle): (Engine, EngineHandle),
        limits: SocketLimits,
        adjust: impl FnOnce(&mut SocketOptions),
    ) -> Server {
        let dir = fresh_dir();
        let socket = dir.join("s.sock");
        let mut opts = options(&socket);
        adjust(&mut opts);
        let server = SocketServer::bind_with_limits(opts, handle.clone(), limits).expect("bind");
        let tcp = server.tcp_addr();
        let shutdown = Shutdown::new();
        let thread = {
            let shutdown = shutdown.clone();
            std::thread::spawn(move || server.run(shutdown))
        };
        Server {
            engine: Some(engine),
            handle,
            shutdown,
            thread: Some(thread),
            socket,
            dir,
            tcp,
        }
    }

    /// What `edgellm serve` does on SIGTERM; returns what `run` returned.
    pub fn stop(&mut self) -> Result<(), SocketError> {
        self.handle.shutdown();
        self.shutdown.trigger();
        let r = self
            .thread
            .take()
            .map_or(Ok(()), |t| t.join().expect("server thread"));
        if let Some(e) = self.engine.take() {
            e.join();
        }
        r
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// One request over a fresh connection with hyper's client.
pub async fn request(sock: &Path, method: &str, path: &str, body: Option<Value>) -> Reply {
    let stream = UnixStream::connect(sock).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    let conn = tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(format!("http://localhost{path}"))
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .unwrap();
    let resp = sender.send_request(req).await.expect("send");
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    conn.abort();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// The SSE events of a streamed request, each with the time it arrived since the request was
/// sent: `data` payloads and `: keep-alive` comments.
pub async fn stream_events(sock: &Path, path: &str, body: Value) -> Vec<(Duration, String)> {
    let start = Instant::now();
    let stream = UnixStream::connect(sock).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let req = Request::builder()
        .method("POST")
        .uri(format!("http://localhost{path}"))
        .header("host", "localhost")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut buf = String::new();
    let mut events = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("frame");
        if let Some(d) = frame.data_ref() {
            buf.push_str(std::str::from_utf8(d).unwrap());
            while let Some(end) = buf.find("\n\n") {
                events.push((start.elapsed(), buf[..end].to_string()));
                buf.drain(..end + 2);
            }
        }
    }
    assert!(buf.is_empty(), "unterminated event: {buf:?}");
    conn.abort();
    events
}

/// The JSON payloads of `data:` events before `[DONE]` (which must be the last event).
pub fn data_chunks(events: &[(Duration, String)]) -> Vec<Value> {
    let data: Vec<&str> = events
        .iter()
        .filter_map(|(_, e)| e.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last().map(|(_, e)| e.as_str()), Some("data: [DONE]"));
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

pub fn chat_body(question: &str, max_tokens: usize) -> Value {
    json!({
        "model": "whatever-the-client-says",
        "messages": [{"role": "user", "content": question}],
        "temperature": 0,
        "max_tokens": max_tokens,
    })
}

/// A raw request over a raw connection; returns everything the server sent until it closed
/// or `wait` passed.
pub async fn raw(sock: &Path, bytes: &[u8], wait: Duration) -> String {
    let mut s = UnixStream::connect(sock).await.unwrap();
    // A server that closes at once may refuse the write: what it sent (nothing) is the answer.
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
