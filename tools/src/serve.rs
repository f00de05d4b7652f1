//! `edgellm serve`: loads the model once, starts the engine, the Unix-socket server and the
//! serial console (each can be turned off), tells systemd it is ready, and on SIGTERM/SIGINT
//! stops cleanly: the answer in progress ends with a stop reason, the socket file is removed,
//! the exit status is 0. SIGHUP (`systemctl reload edgellm`) maps the model file again at the
//! next request boundary, for a model replaced on disk.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::thread::JoinHandle;

use anyhow::{bail, Context, Result};
use edgellm_hal::board::{BoardConfig, FlowControl};
use edgellm_hal::engine::{Engine, EngineHandle};
use edgellm_hal::memory::{self, MemoryNeed};
use edgellm_hal::serial::{run_console, SerialOptions};
use edgellm_hal::shutdown::Shutdown;
use edgellm_hal::socket::{SocketOptions, SocketServer};
use edgellm_hal::systemd;
use edgellm_models::kv_cache::{largest_context_within, KvShape};
use edgellm_models::{Model, StateLayout, StateOptions};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::cli_model::ModelArgs;

/// Where the socket goes without a board config or `--socket`.
const DEFAULT_SOCKET: &str = "/run/edgellm/edgellm.sock";

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub opts: ModelArgs,
    /// Unix socket path (default: the board's, else $XDG_RUNTIME_DIR/edgellm.sock, else
    /// /run/edgellm/edgellm.sock).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Do not serve the Unix socket.
    #[arg(long)]
    pub no_socket: bool,
    /// Serial device for the console (default: the board's when it enables one).
    #[arg(long)]
    pub serial: Option<PathBuf>,
    /// Serial baud rate (default: the board's, else 115200).
    #[arg(long)]
    pub baud: Option<u32>,
    /// Do not start the serial console.
    #[arg(long)]
    pub no_serial: bool,
    /// Requests that may wait for the engine; more get 429 (socket) or a message (console).
    #[arg(long, default_value_t = 16)]
    pub queue: usize,
    /// Largest request body in bytes (413 above it).
    #[arg(long, default_value_t = 1 << 20)]
    pub max_body: usize,
    /// Also serve HTTP on this TCP address (requires --api-key).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Bearer key every TCP request must carry (or $EDGELLM_API_KEY).
    #[arg(long, env = "EDGELLM_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Allow socket requests to ask for beam search ("beams": 2..=N): allocates N-1 more KV
    /// caches at start (the first beam shares the ordinary one). 0 or 1: beam search off.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_beams: usize,
}

pub fn main(args: Args) -> Result<()> {
    if args.listen.is_some() && args.api_key.as_deref().is_none_or(str::is_empty) {
        bail!("--listen serves HTTP over TCP, which needs --api-key (or $EDGELLM_API_KEY)");
    }
    if args.queue == 0 {
        bail!("--queue must be at least 1");
    }
    let board = args.opts.board()?;
    let socket = socket_options(&args, board.as_ref());
    let serial = serial_options(&args, board.as_ref())?;
    if socket.is_none() && serial.is_none() {
        bail!("nothing to serve: the socket is off and there is no serial console (give --serial DEV or a --board with one)");
    }

    // Signals first: a SIGTERM during a long model load is held, then ends the service as soon
    // as it is up.
    let shutdown = Shutdown::new();
    let mut signals =
        Signals::new([SIGTERM, SIGINT, SIGHUP]).context("installing signal handlers")?;
    let signal_handle = signals.handle();

    let (model, board) = args.opts.load()?;
    let model_path = args.opts.model_path(board.as_ref());
    let state_options = args.opts.state_options(&model, board.as_ref(), false)?;
    check_memory(&model, &state_options, args.max_beams, board.as_ref())?;
    let (engine, handle) = Engine::start_with_beams(
        model,
        model_path.clone(),
        state_options,
        args.queue,
        args.max_beams,
    )
    .context("starting the engine")?;
    log::info!(
        "model {} ({}) loaded in {:.0} ms: context {}, {} threads, kernels {}",
        handle.info().model_name,
        model_path.display(),
        handle.info().load_ms,
        handle.info().n_ctx,
        handle.info().n_threads,
        handle.info().kernels
    );
    let signal_thread = {
        let shutdown = shutdown.clone();
        let handle = handle.clone();
        std::thread::Builder::new()
            .name("edgellm-signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    if sig == SIGHUP {
                        log::info!(
                            "SIGHUP: the model will be mapped again at the next request boundary"
                        );
                        handle.reload();
                        continue;
                    }
                    log::info!("signal {sig}: shutting down");
                    handle.shutdown();
                    shutdown.trigger();
                    break;
                }
            })
            .context("starting the signal thread")?
    };

    let mut workers: Vec<(&'static str, JoinHandle<Result<()>>)> = Vec::new();
    let mut started = Vec::new();
    let result = (|| -> Result<()> {
        if let Some(opts) = socket {
            let path = opts.path.clone();
            let server = SocketServer::bind(opts, handle.clone())
                .with_context(|| format!("socket {}", path.display()))?;
            started.push(format!("socket {}", path.display()));
            let shutdown = shutdown.clone();
            workers.push((
                "socket server",
                spawn("edgellm-socket", move || {
                    server.run(shutdown).map_err(anyhow::Error::from)
                })?,
            ));
        }
        if let Some(opts) = serial {
            started.push(format!(
                "serial console {} at {} baud",
                opts.device.display(),
                opts.baud
            ));
            let (engine, shutdown) = (handle.clone(), shutdown.clone());
            workers.push((
                "serial console",
                spawn("edgellm-serial", move || {
                    run_console(opts, engine, shutdown).map_err(anyhow::Error::from)
                })?,
            ));
        }
        Ok(())
    })();
    if result.is_ok() {
        log::info!("ready: {}", started.join(", "));
        systemd::notify(&format!(
            "READY=1\nSTATUS=serving {} on {}",
            handle.info().model_name,
            started.join(", ")
        ));
    }

    let outcome = result.and_then(|()| wait_for_workers(&mut workers, &shutdown, &handle));
    // Whatever ended the service, stop the rest of it.
    systemd::notify("STOPPING=1");
    handle.shutdown();
    shutdown.trigger();
    for (name, w) in workers {
        match w.join() {
            Ok(Err(e)) => log::error!("{name}: {e:#}"),
            Err(_) => log::error!("{name}: panicked"),
            Ok(Ok(())) => {}
        }
    }
    drop(handle);
    engine.join();
    signal_handle.close();
    let _ = signal_thread.join();
    if outcome.is_ok() {
        log::info!("stopped");
    }
    outcome
}

/// Waits until shutdown or until a worker ends on its own (an error, or a panic): that ends
/// the service, so systemd restarts it instead of leaving half of it running.
fn wait_for_workers(
    workers: &mut Vec<(&'static str, JoinHandle<Result<()>>)>,
    shutdown: &Shutdown,
    _engine: &EngineHandle,
) -> Result<()> {
    loop {
        if shutdown.is_triggered() {
            return Ok(());
        }
        if let Some(i) = workers.iter().position(|(_, w)| w.is_finished()) {
            let (name, w) = workers.swap_remove(i);
            return match w.join() {
                Ok(Ok(())) if shutdown.is_triggered() => Ok(()),
                Ok(Ok(())) => bail!("{name} stopped unexpectedly"),
                Ok(Err(e)) => Err(e.context(name)),
                Err(_) => bail!("{name} panicked"),
            };
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Refuses to start when a memory limit (cgroup, RLIMIT_AS) cannot hold the model at this
/// context (with `max_beams` beams' caches): better a clear error now than the OOM killer
/// mid-answer.
fn check_memory(
    model: &Model,
    opts: &StateOptions,
    max_beams: usize,
    board: Option<&BoardConfig>,
) -> Result<()> {
    let layout = StateLayout::new(&model.hparams, &model.weights, opts)?;
    // The beams past the first: a KV cache each and one-row scratch (they decode one token
    // at a time), as `BeamSearch::new` allocates them.
    let extra_beams = max_beams.saturating_sub(1) as u64;
    let beam_layout = StateLayout::new(
        &model.hparams,
        &model.weights,
        &StateOptions {
            n_batch: 1,
            ..*opts
        },
    )?;
    let need = MemoryNeed {
        weights: model.mapped_bytes() as u64,
        kv: layout.kv_bytes as u64,
        beam_kv: extra_beams * beam_layout.kv_bytes as u64,
        scratch: (layout.scratch_bytes()
            + model.tokenizer.heap_bytes()
            + extra_beams as usize * beam_layout.scratch_bytes()) as u64,
        overhead: SERVE_OVERHEAD_BYTES,
    };
    if extra_beams > 0 {
        log::info!(
            "--max-beams {max_beams}: {} MiB more for the beams' KV caches and scratch",
            (need.beam_kv + extra_beams * beam_layout.scratch_bytes() as u64) >> 20
        );
    }
    // Every cache at context `n` (sliding-window layers grow slower than the context): the
    // ordinary one sized for prompt batches, the beams' for one token.
    let kv_at = |n: usize| {
        let at = |s: KvShape, n_batch: usize| {
            KvShape::new(s.n_layer, n, s.kv_dim, s.swa, n_batch, opts.swa_full).bytes(opts.kv_type)
                as u64
        };
        at(layout.kv_shape, opts.n_batch) + extra_beams * at(beam_layout.kv_shape, 1)
    };
    let fitting = |room: u64| largest_context_within(opts.n_ctx, room, kv_at);
    memory::check(need, &fitting).map_err(|e| anyhow::anyhow!("not enough memory: {e}"))?;
    if let Some(b) = board {
        if need.total() > b.memory.budget_bytes {
            log::warn!(
                "the model needs {} MiB at context {}, more than board {}'s budget of {} MiB",
                need.total() >> 20,
                opts.n_ctx,
                b.name,
                b.memory.budget_bytes >> 20
            );
        }
    }
    if let Some(avail) = memory::available_bytes() {
        if need.anonymous() > avail {
            log::warn!(
                "the model needs {} MiB besides its weights but only {} MiB are available",
                need.anonymous() >> 20,
                avail >> 20
            );
        }
    }
    Ok(())
}

/// Threads' stacks, the server's buffers and allocator slack, on top of what `plan` counts.
const SERVE_OVERHEAD_BYTES: u64 = 64 << 20;

fn spawn(
    name: &str,
    f: impl FnOnce() -> Result<()> + Send + 'static,
) -> Result<JoinHandle<Result<()>>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .with_context(|| format!("starting thread {name}"))
}

fn socket_options(args: &Args, board: Option<&BoardConfig>) -> Option<SocketOptions> {
    if args.no_socket {
        return None;
    }
    let path = args
        .socket
        .clone()
        .or_else(|| board.map(|b| b.socket.path.clone()))
        .unwrap_or_else(|| match std::env::var_os("XDG_RUNTIME_DIR") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("edgellm.sock"),
            _ => PathBuf::from(DEFAULT_SOCKET),
        });
    Some(SocketOptions {
        path,
        mode: board.map_or(0o660, |b| b.socket.mode),
        group: board.and_then(|b| b.socket.group.clone()),
        allowed_uids: board.and_then(|b| b.socket.allowed_uids.clone()),
        allowed_gids: board.and_then(|b| b.socket.allowed_gids.clone()),
        max_body_bytes: args.max_body,
        board: board.map(|b| b.name.clone()),
        listen: args.listen,
        api_key: args.api_key.clone(),
    })
}

fn serial_options(args: &Args, board: Option<&BoardConfig>) -> Result<Option<SerialOptions>> {
    if args.no_serial {
        return Ok(None);
    }
    let board_serial = board.map(|b| &b.serial).filter(|s| s.enabled);
    let device = match (&args.serial, board_serial) {
        (Some(d), _) => d.clone(),
        (None, Some(s)) => s.device.clone(),
        (None, None) => return Ok(None),
    };
    let baud = args
        .baud
        .or(board_serial.map(|s| s.baud))
        .unwrap_or(115_200);
    if baud == 0 {
        bail!("--baud must be positive");
    }
    Ok(Some(SerialOptions {
        device,
        baud,
        flow_control: board_serial.map_or(FlowControl::None, |s| s.flow_control),
        line_buffer: board_serial.map_or(1024, |s| s.line_buffer),
        board: board.map(|b| b.name.clone()),
    }))
}
