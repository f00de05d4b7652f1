//! The Unix-socket server: OpenAI-compatible HTTP/1.1 (hyper, on a current-thread tokio
//! runtime) in front of the [`Engine`](crate::engine::Engine), plus an optional TCP listener
//! that demands an API key.
//!
//! [`listener`] owns the socket file and who may connect, [`routes`] what each request gets,
//! [`sse`] streamed answers, [`errors`] the error responses, [`metrics`] the counters behind
//! `/metrics`. This module owns the accept loop and the limits that keep a slow or hostile
//! client from holding the server: the header read timeout (which hyper also runs while a
//! keep-alive connection sits idle between requests, so it is the idle timeout too), the body
//! read timeout, the body size limit and the connection limit.

mod errors;
mod listener;
mod metrics;
mod routes;
mod sse;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::engine::EngineHandle;
use crate::shutdown::Shutdown;
pub use listener::PeerPolicy;
use routes::ServerContext;

/// What `edgellm serve` passes to the socket server.
#[derive(Debug, Clone)]
pub struct SocketOptions {
    pub path: PathBuf,
    pub mode: u32,
    pub group: Option<String>,
    pub allowed_uids: Option<Vec<u32>>,
    pub allowed_gids: Option<Vec<u32>>,
    /// Largest request body accepted (413 above it).
    pub max_body_bytes: usize,
    /// Board name reported by /health.
    pub board: Option<String>,
    /// Optional TCP listener (only with an API key).
    pub listen: Option<std::net::SocketAddr>,
    pub api_key: Option<String>,
}

/// Time and count limits of the server; [`SocketLimits::default`] is what `edgellm serve` uses.
#[derive(Debug, Clone)]
pub struct SocketLimits {
    /// A request's headers must arrive within this; hyper also runs it while a keep-alive
    /// connection waits for its next request, so it closes idle connections too.
    pub header_read_timeout: Duration,
    /// A request's body must arrive within this (408 otherwise).
    pub body_read_timeout: Duration,
    /// The request line and headers must fit in this many bytes (431 otherwise); hyper's read
    /// buffer, at least 8 KiB.
    pub max_header_bytes: usize,
    /// Open connections at most; further ones are closed at once.
    pub max_connections: usize,
    /// A streamed answer sends `: keep-alive` after this long without a chunk.
    pub keep_alive_interval: Duration,
    /// On shutdown, how long in-flight responses may take to end before they are dropped.
    pub drain_timeout: Duration,
}

impl Default for SocketLimits {
    fn default() -> Self {
        SocketLimits {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_header_bytes: 32 * 1024,
            max_connections: 256,
            keep_alive_interval: Duration::from_secs(2),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("binding {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("{0} is in use: another server answers on it")]
    InUse(PathBuf),
    #[error("socket group {name:?}: {reason}")]
    Group { name: String, reason: String },
    #[error("setting the owner or mode of {path}: {source}")]
    Permissions {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("listening on TCP {0} needs an API key")]
    TcpWithoutKey(SocketAddr),
    #[error("binding TCP {addr}: {source}")]
    TcpBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

pub struct SocketServer {
    unix: std::os::unix::net::UnixListener,
    path: PathBuf,
    tcp: Option<(std::net::TcpListener, Arc<str>)>,
    peers: PeerPolicy,
    max_body_bytes: usize,
    board: Option<String>,
    limits: SocketLimits,
    engine: EngineHandle,
}

impl SocketServer {
    /// Binds the socket (replacing a stale file, refusing a live one) and applies mode/group.
    pub fn bind(opts: SocketOptions, engine: EngineHandle) -> Result<SocketServer, SocketError> {
        SocketServer::bind_with_limits(opts, engine, SocketLimits::default())
    }

    /// [`bind`](Self::bind) with other limits.
    pub fn bind_with_limits(
        opts: SocketOptions,
        engine: EngineHandle,
        limits: SocketLimits,
    ) -> Result<SocketServer, SocketError> {
        // Check the TCP side first: nothing is bound when the configuration is refused.
        let tcp_key = match (opts.listen, opts.api_key.as_deref()) {
            (Some(addr), None | Some("")) => return Err(SocketError::TcpWithoutKey(addr)),
            (Some(addr), Some(key)) => Some((addr, Arc::<str>::from(key))),
            (None, _) => None,
        };
        let unix = listener::bind_unix(&opts.path, opts.mode, opts.group.as_deref())?;
        let tcp = match tcp_key {
            None => None,
            Some((addr, key)) => {
                let bound = std::net::TcpListener::bind(addr)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .map_err(|source| SocketError::TcpBind { addr, source });
                match bound {
                    Ok(l) => Some((l, key)),
                    Err(e) => {
                        let _ = std::fs::remove_file(&opts.path);
                        return Err(e);
                    }
                }
            }
        };
        Ok(SocketServer {
            unix,
            path: opts.path,
            tcp,
            peers: PeerPolicy {
                uids: opts.allowed_uids,
                gids: opts.allowed_gids,
            },
            max_body_bytes: opts.max_body_bytes,
            board: opts.board,
            limits,
            engine,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The bound TCP address (the real port when the option asked for port 0).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// Serves until `shutdown` triggers, then removes the socket file.
    pub fn run(self, shutdown: Shutdown) -> Result<(), SocketError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let path = self.path.clone();
        let result = rt.block_on(self.serve(shutdown));
        // Blocking tokenizer tasks of abandoned requests must not hold up the exit.
        rt.shutdown_timeout(Duration::from_secs(1));
        match std::fs::remove_file(&path) {
            Ok(()) => log::info!("socket {} removed", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("removing socket {}: {e}", path.display()),
        }
        result
    }

    async fn serve(self, shutdown: Shutdown) -> Result<(), SocketError> {
        let ctx = Arc::new(ServerContext::new(
            self.engine,
            self.limits.clone(),
            self.max_body_bytes,
            self.board,
            shutdown.clone(),
        ));
        let unix = tokio::net::UnixListener::from_std(self.unix)?;
        let tcp = match self.tcp {
            Some((l, key)) => Some((tokio::net::TcpListener::from_std(l)?, key)),
            None => None,
        };
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout)
            .max_buf_size(self.limits.max_header_bytes)
            .keep_alive(true);
        let slots = Arc::new(Semaphore::new(self.limits.max_connections));
        let mut connections = JoinSet::new();
        log::info!(
            "socket server listening on {}{}",
            self.path.display(),
            tcp.as_ref()
                .and_then(|(l, _)| l.local_addr().ok())
                .map(|a| format!(" and TCP {a} (API key required)"))
                .unwrap_or_default()
        );
        loop {
            tokio::select! {
                () = shutdown.wait() => break,
                accepted = unix.accept() => match accepted {
                    Ok((stream, _)) => {
                        match stream.peer_cred() {
                            Ok(c) if self.peers.allows(c.uid(), c.gid()) => {}
                            Ok(c) => {
                                log::warn!(
                                    "refused a connection from uid {} gid {} (pid {:?}): not on the allow-list",
                                    c.uid(), c.gid(), c.pid()
                                );
                                ctx.metrics.refused_peer.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                continue;
                            }
                            Err(e) => {
                                log::warn!("refused a connection: reading its peer credentials failed: {e}");
                                continue;
                            }
                        }
                        if let Some(slot) = take_slot(&slots, &ctx) {
                            spawn_connection(&mut connections, &http, TokioIo::new(stream), &ctx, None, &shutdown, slot);
                        }
                    }
                    Err(e) => accept_failed(e).await,
                },
                accepted = accept_tcp(tcp.as_ref()) => match accepted {
                    Ok((stream, key)) => {
                        if let Some(slot) = take_slot(&slots, &ctx) {
                            spawn_connection(&mut connections, &http, TokioIo::new(stream), &ctx, Some(key), &shutdown, slot);
                        }
                    }
                    Err(e) => accept_failed(e).await,
                },
                Some(_) = connections.join_next() => {}
            }
        }
        // Stop accepting; let the responses in flight end (the engine cancels the running
        // job, so streams finish with their finish_reason and [DONE]).
        drop(unix);
        drop(tcp);
        log::info!(
            "socket server stopping: {} connection(s) to finish",
            connections.len()
        );
        let drained = tokio::time::timeout(self.limits.drain_timeout, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            log::warn!(
                "{} connection(s) still open after {:?}; closing them",
                connections.len(),
                self.limits.drain_timeout
            );
            connections.abort_all();
        }
        Ok(())
    }
}

/// A connection slot, or `None` (the connection is dropped, i.e. closed) over the limit.
fn take_slot(slots: &Arc<Semaphore>, ctx: &ServerContext) -> Option<OwnedSemaphorePermit> {
    match Arc::clone(slots).try_acquire_owned() {
        Ok(p) => Some(p),
        Err(_) => {
            ctx.metrics
                .refused_over_limit
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            log::warn!(
                "refused a connection: {} connections are open already",
                ctx.limits.max_connections
            );
            None
        }
    }
}

async fn accept_tcp(
    tcp: Option<&(tokio::net::TcpListener, Arc<str>)>,
) -> std::io::Result<(tokio::net::TcpStream, Arc<str>)> {
    match tcp {
        Some((l, key)) => l.accept().await.map(|(s, _)| (s, Arc::clone(key))),
        None => std::future::pending().await,
    }
}

/// Accept errors are mostly out of file descriptors: wait a little instead of spinning.
async fn accept_failed(e: std::io::Error) {
    log::warn!("accepting a connection failed: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

fn spawn_connection<I>(
    connections: &mut JoinSet<()>,
    http: &http1::Builder,
    io: I,
    ctx: &Arc<ServerContext>,
    api_key: Option<Arc<str>>,
    shutdown: &Shutdown,
    slot: OwnedSemaphorePermit,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let ctx = Arc::clone(ctx);
    let service = service_fn(move |req| routes::handle(Arc::clone(&ctx), api_key.clone(), req));
    let conn = http.serve_connection(io, service);
    let shutdown = shutdown.clone();
    connections.spawn(async move {
        tokio::pin!(conn);
        let result = tokio::select! {
            r = conn.as_mut() => r,
            () = shutdown.wait() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            log::debug!("connection ended: {e}");
        }
        drop(slot);
    });
}
