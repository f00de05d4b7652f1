//! What each request gets: routing by path and method, the API key check on TCP, request
//! bodies read under the size and time limits, and the handlers of every endpoint. Completion
//! requests become engine jobs whose events come back over a tokio channel: collected into one
//! JSON response, or streamed as server-sent events ([`super::sse`]). A request with `beams`
//! above 1 becomes a beam job instead; its answers (the best `n` beams) arrive together when
//! the search ends.
//!
//! A request whose client goes away (its response future or body is dropped) raises its
//! job's cancel flag at once; the engine then moves on to the next job.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::errors::{self, error_response, json_response};
use super::metrics::{endpoint_label, ServerMetrics};
use super::sse::SseBody;
use super::SocketLimits;
use crate::engine::{BeamJob, EngineHandle, Event, Job, Summary};
use crate::openai::{self, Answer, ApiError, BeamRequest, ResponseMeta, Sampling, StreamKind};
use crate::shutdown::Shutdown;

/// Every response's body: a complete buffer or an event stream.
pub type ResponseBody = Either<Full<Bytes>, SseBody>;

/// What every connection's handlers share.
pub struct ServerContext {
    pub engine: EngineHandle,
    pub metrics: Arc<ServerMetrics>,
    pub limits: SocketLimits,
    pub max_body_bytes: usize,
    pub board: Option<String>,
    pub shutdown: Shutdown,
    /// Unix seconds the server started (`created` of `/v1/models`).
    pub started: u64,
    next_id: AtomicU64,
}

impl ServerContext {
    pub fn new(
        engine: EngineHandle,
        limits: SocketLimits,
        max_body_bytes: usize,
        board: Option<String>,
        shutdown: Shutdown,
    ) -> ServerContext {
        ServerContext {
            engine,
            metrics: Arc::new(ServerMetrics::default()),
            limits,
            max_body_bytes,
            board,
            shutdown,
            started: unix_now(),
            next_id: AtomicU64::new(1),
        }
    }
}

/// Method, path and start time of a request, for its log line.
pub struct RequestLog {
    method: Method,
    path: String,
    start: Instant,
}

impl RequestLog {
    pub fn line(&self, status: u16) -> String {
        format!(
            "{} {} {status} {:.0} ms",
            self.method,
            self.path,
            self.start.elapsed().as_secs_f64() * 1000.0
        )
    }

    pub fn with_summary(&self, status: u16, s: &Summary) -> String {
        format!(
            "{}, {} prompt tokens ({} reused) + {} generated, {}",
            self.line(status),
            s.prompt_tokens,
            s.reused_tokens,
            s.completion_tokens,
            s.stop_reason.name()
        )
    }
}

/// Raises a job's cancel flag when dropped: the response future or body it lives in is gone.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A queued job as its request sees it: the event channel and the cancel guard.
pub struct SubmittedJob {
    pub rx: UnboundedReceiver<Event>,
    _cancel: CancelOnDrop,
}

/// Queues an ordinary or a beam job (as `beams` asks) whose events arrive on a tokio channel;
/// the engine thread's send is synchronous and fails (cancelling the job) once the receiver is
/// gone.
fn submit(
    engine: &EngineHandle,
    prompt: Vec<u32>,
    sampling: &Sampling,
    beams: &BeamRequest,
) -> Result<SubmittedJob, ApiError> {
    let (tx, rx) = unbounded_channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let sink = Box::new(move |ev| tx.send(ev).is_ok());
    let n_ctx = engine.info().n_ctx;
    let submitted = if beams.is_beam_search() {
        engine.submit_beams(BeamJob {
            params: beams.beam_params(sampling, prompt.len(), n_ctx),
            prompt,
            beams: beams.beams,
            choices: beams.n,
            sink,
            cancel: Arc::clone(&cancel),
        })
    } else {
        engine.submit(Job {
            params: sampling.generate_params(prompt.len(), n_ctx, openai::random_seed()),
            prompt,
            sink,
            cancel: Arc::clone(&cancel),
        })
    };
    submitted.map_err(errors::submit_error)?;
    Ok(SubmittedJob {
        rx,
        _cancel: CancelOnDrop(cancel),
    })
}

/// The service: one request in, one response out; counts and logs it.
pub async fn handle(
    ctx: Arc<ServerContext>,
    api_key: Option<Arc<str>>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let log = RequestLog {
        method: req.method().clone(),
        path: req.uri().path().to_string(),
        start: Instant::now(),
    };
    let endpoint = endpoint_label(&log.path);
    let response = match api_key {
        Some(key) if !authorized(&req, &key) => error_response(&errors::unauthorized()),
        _ => route(&ctx, req, &log).await,
    };
    let status = response.status().as_u16();
    ctx.metrics.count_request(endpoint, status);
    // Streams log when they end; completions logged their tokens already.
    let streamed = matches!(response.body(), Either::Right(_));
    let logged = response.extensions().get::<Logged>().is_some();
    if !streamed && !logged {
        log::info!("{}", log.line(status));
    }
    Ok(response)
}

/// Marks a response whose request was already logged (with its token counts).
#[derive(Clone, Copy)]
struct Logged;

/// `Authorization: Bearer KEY`, compared without an early exit on the first differing byte.
fn authorized(req: &Request<Incoming>, key: &str) -> bool {
    let Some(given) = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.trim().as_bytes(), key.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn route(
    ctx: &Arc<ServerContext>,
    req: Request<Incoming>,
    log: &RequestLog,
) -> Response<ResponseBody> {
    let path = log.path.as_str();
    let allow = match path {
        "/v1/chat/completions" | "/v1/completions" | "/tokenize" | "/detokenize" => "POST",
        "/v1/models" | "/health" | "/metrics" => "GET",
        _ => {
            return error_response(&errors::not_found(req.method().as_str(), path));
        }
    };
    if req.method().as_str() != allow {
        return errors::method_not_allowed(req.method().as_str(), path, allow);
    }
    let result = match path {
        "/v1/chat/completions" => completion(ctx, req, StreamKind::Chat, log).await,
        "/v1/completions" => completion(ctx, req, StreamKind::Text, log).await,
        "/tokenize" => tokenize(ctx, req).await,
        "/detokenize" => detokenize(ctx, req).await,
        "/v1/models" => Ok(models(ctx)),
        "/health" => Ok(health(ctx)),
        _ => Ok(metrics(ctx)),
    };
    result.unwrap_or_else(|e| error_response(&e))
}

/// The body, refused with 413 when its Content-Length or its bytes so far exceed the limit,
/// and with 408 when it does not arrive within the body timeout.
async fn read_body(ctx: &ServerContext, req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let limit = ctx.max_body_bytes;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(errors::body_too_large(limit));
    }
    let body = Limited::new(req.into_body(), limit);
    match tokio::time::timeout(ctx.limits.body_read_timeout, body.collect()).await {
        Err(_) => Err(errors::body_timeout(ctx.limits.body_read_timeout.as_secs())),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(errors::body_too_large(limit))
        }
        Ok(Err(e)) => Err(ApiError::bad_request(format!(
            "reading the request body failed: {e}"
        ))),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

async fn completion(
    ctx: &Arc<ServerContext>,
    req: Request<Incoming>,
    kind: StreamKind,
    log: &RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    let body = read_body(ctx, req).await?;
    let (prompt, sampling, beams, stream, include_usage, param) = match kind {
        StreamKind::Chat => {
            let r = openai::parse_chat_request(&body)?;
            (
                r.prompt(),
                r.sampling,
                r.beams,
                r.stream,
                r.include_usage,
                "messages",
            )
        }
        StreamKind::Text => {
            let r = openai::parse_completion_request(&body)?;
            (
                r.prompt(),
                r.sampling,
                r.beams,
                r.stream,
                r.include_usage,
                "prompt",
            )
        }
    };
    if ctx.shutdown.is_triggered() {
        return Err(errors::shutting_down());
    }
    // Template rendering and tokenizing take a while for a long prompt: off the I/O thread.
    let engine = ctx.engine.clone();
    let ids = tokio::task::spawn_blocking(move || engine.prompt_ids(&prompt))
        .await
        .map_err(|e| errors::generation_failed(format!("tokenizing the prompt failed: {e}")))?
        .map_err(|e| errors::prompt_error(e, param))?;
    let mut job = submit(&ctx.engine, ids, &sampling, &beams)?;
    let n = ctx.next_id.fetch_add(1, Ordering::Relaxed);
    let meta = ResponseMeta {
        id: match kind {
            StreamKind::Chat => format!("chatcmpl-{n}"),
            StreamKind::Text => format!("cmpl-{n}"),
        },
        created: unix_now(),
        model: ctx.engine.info().model_name.clone(),
    };
    if stream {
        let body = SseBody::new(
            job,
            kind,
            meta,
            include_usage,
            ctx.limits.keep_alive_interval,
            RequestLog {
                method: log.method.clone(),
                path: log.path.clone(),
                start: log.start,
            },
            Arc::clone(&ctx.metrics),
        );
        let mut r = Response::new(Either::Right(body));
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return Ok(r);
    }
    let mut text = String::new();
    let mut beam_choices = None;
    let summary = loop {
        match job.rx.recv().await {
            Some(Event::Text(t)) => text.push_str(&t),
            Some(Event::Beams(b)) => beam_choices = Some(b),
            Some(Event::Done(s)) => break s,
            Some(Event::Failed(m)) => {
                ctx.metrics
                    .generation_errors
                    .fetch_add(1, Ordering::Relaxed);
                return Err(
                    if m == crate::engine::SubmitError::ShuttingDown.to_string() {
                        errors::shutting_down()
                    } else {
                        errors::generation_failed(m)
                    },
                );
            }
            Some(Event::Started { .. } | Event::Progress { .. }) => {}
            None => {
                return Err(errors::generation_failed(
                    "the engine stopped before the answer ended".into(),
                ))
            }
        }
    };
    let answers = match &beam_choices {
        Some(b) => Answer::of_beams(b),
        None => Answer::single(&text, &summary).to_vec(),
    };
    let value = match kind {
        StreamKind::Chat => openai::chat_completion(&meta, &answers, &summary),
        StreamKind::Text => openai::text_completion(&meta, &answers, &summary),
    };
    log::info!("{}", log.with_summary(200, &summary));
    let mut r = json_response(StatusCode::OK, value.to_string());
    r.extensions_mut().insert(Logged);
    Ok(r)
}

async fn tokenize(
    ctx: &ServerContext,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, ApiError> {
    let body = read_body(ctx, req).await?;
    let r = openai::parse_tokenize_request(&body)?;
    let engine = ctx.engine.clone();
    let tokens = tokio::task::spawn_blocking(move || {
        engine.tokenize(&r.content, r.add_special, r.parse_special)
    })
    .await
    .map_err(|e| errors::generation_failed(format!("tokenizing failed: {e}")))?
    .map_err(|e| ApiError::invalid("content", e.to_string()))?;
    Ok(json_response(
        StatusCode::OK,
        json!({ "tokens": tokens }).to_string(),
    ))
}

async fn detokenize(
    ctx: &ServerContext,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, ApiError> {
    let body = read_body(ctx, req).await?;
    let r = openai::parse_detokenize_request(&body)?;
    let content = ctx
        .engine
        .detokenize(&r.tokens)
        .map_err(|e| ApiError::invalid("tokens", e.to_string()))?;
    Ok(json_response(
        StatusCode::OK,
        json!({ "content": content }).to_string(),
    ))
}

fn models(ctx: &ServerContext) -> Response<ResponseBody> {
    let info = ctx.engine.info();
    let body = json!({
        "object": "list",
        "data": [{
            "id": info.model_name,
            "object": "model",
            "created": ctx.started,
            "owned_by": "edgellm",
            "meta": {
                "architecture": info.architecture,
                "path": info.model_path.display().to_string(),
                "n_ctx": info.n_ctx,
                "n_ctx_train": info.n_ctx_train,
                "n_vocab": info.n_vocab,
                "threads": info.n_threads,
                "kernels": info.kernels,
                "max_beams": info.max_beams,
            }
        }]
    });
    json_response(StatusCode::OK, body.to_string())
}

fn health(ctx: &ServerContext) -> Response<ResponseBody> {
    let (info, stats) = (ctx.engine.info(), &ctx.engine.stats);
    let stopping = ctx.shutdown.is_triggered() || ctx.engine.is_shutting_down();
    let body = json!({
        "status": if stopping { "shutting_down" } else { "ok" },
        "model": info.model_name,
        "context": info.n_ctx,
        "context_used": stats.ctx_used.load(Ordering::Relaxed),
        "threads": info.n_threads,
        "kernels": info.kernels,
        "board": ctx.board,
        "queue_depth": stats.queue_depth.load(Ordering::Relaxed),
        "queue_capacity": info.queue_capacity,
        "busy": stats.busy.load(Ordering::Relaxed) == 1,
        "soc_temperature_c": crate::thermal::soc_temperature_c(),
        "model_file": info.model_path.display().to_string(),
        "model_file_bytes": info.file_bytes,
        "reloads": info.reloads,
        "reload_failures": stats.reload_failures.load(Ordering::Relaxed),
    });
    let status = if stopping {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json_response(status, body.to_string())
}

fn metrics(ctx: &ServerContext) -> Response<ResponseBody> {
    let text = ctx.metrics.render(
        &ctx.engine.stats,
        &ctx.engine.info(),
        crate::thermal::soc_temperature_c(),
    );
    let mut r = Response::new(Either::Left(Full::new(Bytes::from(text))));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
