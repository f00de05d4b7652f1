//! `Engine`: the one generation thread of a serving process, and `EngineHandle`, how the
//! socket server and the serial console talk to it.
//!
//! One model, one KV cache, one bounded FIFO queue. Front ends turn a request into prompt ids
//! on their own thread ([`EngineHandle::prompt_ids`]: tokenizing and template rendering need
//! only the shared, read-only `Model`), so a prompt that does not fit is refused before it
//! queues. [`EngineHandle::submit`] queues a [`Job`]; the engine thread takes jobs in order,
//! reuses the longest prefix the cache shares with the prompt (the same system prompt, the
//! earlier turns of a conversation), and reports [`Event`]s through the job's sink. A sink that
//! returns `false` (its client went away) or a raised cancel flag (Ctrl-C on the console, a
//! shutdown) stops the generation at the next token or prompt batch.
//!
//! [`EngineHandle::reload`] (SIGHUP in `edgellm serve`) maps the model file again at the next
//! request boundary: a file replaced on disk by rename keeps serving from its old mapping until
//! then, and a reload that fails (a broken new file) keeps the old model.
//!
//! Beam search ([`EngineHandle::submit_beams`]) is off unless the engine was started with room
//! for it ([`Engine::start_with_beams`]): then the KV caches of `max_beams` beams are allocated
//! at start, and the first beam's state is also the state ordinary jobs decode in (so beams
//! cost `max_beams - 1` extra caches, and the prompt prefix a beam job leaves is reused by the
//! next job like any other). Beam jobs share the queue with ordinary ones, report their result
//! only when the search ends ([`Event::Beams`]), and stop between decode steps when cancelled.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use edgellm_models::{
    BeamParams, BeamSearch, ChatFormat, GenerateParams, Generator, LoadOptions, Model, ModelError,
    State, StateOptions, StopReason, TokenSink,
};
use edgellm_runtime::chat_template::ChatMessage;
use thiserror::Error;

/// What the engine reports about one job, in this order: `Started`, `Progress`* (one per
/// prompt batch), `Text`* (final text: complete UTF-8, never part of a stop string), then
/// exactly one of `Done` or `Failed`. A beam job sends `Started`, one `Beams` (unless it
/// fails) and then `Done` or `Failed`: no `Progress` and no `Text`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The engine took the job from the queue.
    Started { prompt_tokens: usize },
    /// `done` of `total` prompt tokens that needed evaluating are evaluated.
    Progress { done: usize, total: usize },
    /// Generated text.
    Text(String),
    /// A beam job's results, best score first (at most the choices it asked for).
    Beams(Vec<BeamChoice>),
    /// Generation ended.
    Done(Summary),
    /// The job could not run or broke off (the message says why).
    Failed(String),
}

/// Figures of a finished job.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub stop_reason: StopReason,
    pub prompt_tokens: usize,
    /// Prompt tokens found in the cache and not evaluated again.
    pub reused_tokens: usize,
    pub completion_tokens: usize,
    pub prompt_ms: f64,
    pub gen_ms: f64,
    pub prompt_tokens_per_s: f64,
    pub gen_tokens_per_s: f64,
}

/// One result of a beam job.
#[derive(Debug, Clone, PartialEq)]
pub struct BeamChoice {
    /// The beam's text as streaming would print it (the end-of-generation token gives none).
    pub text: String,
    /// Generated tokens (a finished beam's end-of-generation token included).
    pub completion_tokens: usize,
    /// `Eos` for a beam that ended with an end-of-generation token; otherwise why the search
    /// stopped (`MaxTokens`, `ContextFull`, `Cancelled`).
    pub stop_reason: StopReason,
    /// Sum of the natural-log probabilities of its tokens.
    pub logprob_sum: f64,
    /// `logprob_sum / completion_tokens^length_penalty`: what the beams are ranked by.
    pub score: f64,
}

/// Receives a job's events; returning `false` cancels the job (the client is gone).
pub type EventSink = Box<dyn FnMut(Event) -> bool + Send>;

/// A queued generation.
pub struct Job {
    pub prompt: Vec<u32>,
    pub params: GenerateParams,
    pub sink: EventSink,
    /// Raised by the submitter to stop the job (Ctrl-C); checked at every token.
    pub cancel: Arc<AtomicBool>,
}

/// A queued beam search.
pub struct BeamJob {
    pub prompt: Vec<u32>,
    /// Beams to search with, `2..=EngineInfo::max_beams` (1 is ordinary decoding: a [`Job`]).
    pub beams: usize,
    /// Best beams to report, `1..=beams`.
    pub choices: usize,
    pub params: BeamParams,
    pub sink: EventSink,
    /// Raised by the submitter to stop the job; checked between decode steps.
    pub cancel: Arc<AtomicBool>,
}

/// What the queue holds.
enum Queued {
    Generate(Job),
    Beams(BeamJob),
}

/// A request's prompt before tokenization.
#[derive(Debug, Clone)]
pub enum Prompt {
    /// Plain text, tokenized like `edgellm run`: BOS as the vocabulary asks, special-token
    /// texts parsed.
    Text(String),
    /// A conversation, rendered with the model's chat template and its generation prompt.
    Chat(Vec<ChatMessage>),
    /// Token ids, checked against the vocabulary.
    Ids(Vec<u32>),
}

#[derive(Debug, Error)]
pub enum PromptError {
    #[error("the prompt is empty")]
    Empty,
    #[error("the prompt is {tokens} tokens; the context holds {n_ctx} (at most {} prompt tokens)", n_ctx - 1)]
    TooLong { tokens: usize, n_ctx: usize },
    #[error("token id {id} is outside the vocabulary ({n_vocab} tokens)")]
    BadToken { id: u32, n_vocab: usize },
    #[error("{0}")]
    Model(#[from] ModelError),
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("the request queue is full ({0} requests waiting); try again later")]
    QueueFull(usize),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("{asked} beams asked for; {}", beams_allowed(*max_beams))]
    TooManyBeams { asked: usize, max_beams: usize },
}

/// What a server started with `max_beams` allows, and how to allow more.
fn beams_allowed(max_beams: usize) -> String {
    if max_beams < 2 {
        "beam search is off on this server (start `edgellm serve --max-beams N` to allow up to N beams)".into()
    } else {
        format!("this server allows at most {max_beams} (`edgellm serve --max-beams N` sets it)")
    }
}

/// Facts about the loaded model and engine, fixed at start.
#[derive(Debug, Clone)]
pub struct EngineInfo {
    /// `general.name` (what `/v1/models` and responses report).
    pub model_name: String,
    pub model_path: PathBuf,
    pub architecture: &'static str,
    pub n_ctx: usize,
    pub n_ctx_train: usize,
    pub n_vocab: usize,
    pub n_threads: usize,
    pub kernels: &'static str,
    pub queue_capacity: usize,
    /// Most beams a beam job may use; 0 when beam search is off.
    pub max_beams: usize,
    /// Milliseconds the model took to load.
    pub load_ms: f64,
    /// Size of the mapped model file.
    pub file_bytes: u64,
    /// Times the model was mapped again since start ([`EngineHandle::reload`]).
    pub reloads: u64,
}

impl EngineInfo {
    fn new(
        model: &Model,
        model_path: PathBuf,
        caches: &Caches,
        queue_capacity: usize,
        reloads: u64,
    ) -> EngineInfo {
        let state = caches.main();
        EngineInfo {
            model_name: model.name.clone(),
            model_path,
            architecture: model.hparams.arch.name(),
            n_ctx: state.n_ctx(),
            n_ctx_train: model.hparams.n_ctx_train,
            n_vocab: model.hparams.n_vocab,
            n_threads: model.n_threads(),
            kernels: model.kernels().path().name(),
            queue_capacity,
            max_beams: caches.max_beams(),
            load_ms: model.load_ms,
            file_bytes: model.mapped_bytes() as u64,
            reloads,
        }
    }
}

/// Counters the engine keeps (read by `/metrics`, `/health`, the console's `/stats`).
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Jobs waiting in the queue (not counting the one running).
    pub queue_depth: AtomicUsize,
    /// 1 while a job runs.
    pub busy: AtomicUsize,
    pub jobs_started: AtomicU64,
    pub jobs_completed: AtomicU64,
    pub jobs_cancelled: AtomicU64,
    pub jobs_failed: AtomicU64,
    /// Prompt tokens evaluated.
    pub prompt_tokens: AtomicU64,
    /// Prompt tokens reused from the cache instead of evaluated.
    pub reused_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub prompt_ms_total: AtomicU64,
    pub gen_ms_total: AtomicU64,
    /// Generation speed of the last job, tokens/s × 1000.
    pub last_gen_tps_milli: AtomicU64,
    /// Prompt speed of the last job, tokens/s × 1000.
    pub last_prompt_tps_milli: AtomicU64,
    /// Positions of the context in use after the last job.
    pub ctx_used: AtomicUsize,
    /// Reloads asked for that failed (the old model kept serving).
    pub reload_failures: AtomicU64,
}

impl EngineStats {
    /// Counts a finished job: its prompt tokens evaluated and reused, tokens generated, time
    /// spent, and whether it was cancelled or completed.
    fn record_job(
        &self,
        prompt_evaluated: usize,
        reused: usize,
        generated: usize,
        prompt_ms: f64,
        gen_ms: f64,
        cancelled: bool,
    ) {
        let add = |counter: &AtomicU64, n: u64| counter.fetch_add(n, Ordering::Relaxed);
        add(&self.prompt_tokens, prompt_evaluated as u64);
        add(&self.reused_tokens, reused as u64);
        add(&self.generated_tokens, generated as u64);
        add(&self.prompt_ms_total, prompt_ms as u64);
        add(&self.gen_ms_total, gen_ms as u64);
        add(
            if cancelled {
                &self.jobs_cancelled
            } else {
                &self.jobs_completed
            },
            1,
        );
    }

    pub fn last_gen_tokens_per_s(&self) -> f64 {
        self.last_gen_tps_milli.load(Ordering::Relaxed) as f64 / 1000.0
    }
    pub fn last_prompt_tokens_per_s(&self) -> f64 {
        self.last_prompt_tps_milli.load(Ordering::Relaxed) as f64 / 1000.0
    }
}

/// The cloneable side of the engine that front ends hold.
#[derive(Clone)]
pub struct EngineHandle {
    tx: SyncSender<Queued>,
    loaded: Arc<RwLock<Loaded>>,
    pub stats: Arc<EngineStats>,
    shutdown: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
}

/// The model being served, swapped as a whole by a reload.
#[derive(Clone)]
struct Loaded {
    model: Arc<Model>,
    chat: Arc<ChatFormat>,
    info: Arc<EngineInfo>,
}

/// The engine thread. Dropping every handle or calling [`EngineHandle::shutdown`] ends it.
pub struct Engine {
    thread: Option<JoinHandle<()>>,
}

/// How long the idle engine waits for a job before it looks at the shutdown flag again.
const IDLE_POLL: Duration = Duration::from_millis(100);

impl Engine {
    /// Allocates the KV cache and generator and starts the engine thread; beam search is off.
    pub fn start(
        model: Model,
        model_path: PathBuf,
        state_options: StateOptions,
        queue_capacity: usize,
    ) -> Result<(Engine, EngineHandle), ModelError> {
        Engine::start_with_beams(model, model_path, state_options, queue_capacity, 0)
    }

    /// [`Engine::start`] with room for beam jobs of up to `max_beams` beams (below 2: off): the
    /// states of `max_beams` beams, the first also serving ordinary jobs.
    pub fn start_with_beams(
        model: Model,
        model_path: PathBuf,
        state_options: StateOptions,
        queue_capacity: usize,
        max_beams: usize,
    ) -> Result<(Engine, EngineHandle), ModelError> {
        let caches = Caches::new(&model, state_options, max_beams)?;
        let generator = Generator::new(&model)?;
        let chat = ChatFormat::for_model(&model)?;
        let info = EngineInfo::new(&model, model_path, &caches, queue_capacity, 0);
        let model = Arc::new(model);
        let (tx, rx) = mpsc::sync_channel(queue_capacity);
        let handle = EngineHandle {
            tx,
            loaded: Arc::new(RwLock::new(Loaded {
                model: Arc::clone(&model),
                chat: Arc::new(chat),
                info: Arc::new(info),
            })),
            stats: Arc::new(EngineStats::default()),
            shutdown: Arc::new(AtomicBool::new(false)),
            reload: Arc::new(AtomicBool::new(false)),
        };
        let worker = Worker {
            model,
            caches,
            generator,
            rx,
            loaded: Arc::clone(&handle.loaded),
            stats: Arc::clone(&handle.stats),
            shutdown: Arc::clone(&handle.shutdown),
            reload: Arc::clone(&handle.reload),
        };
        let thread = std::thread::Builder::new()
            .name("edgellm-engine".into())
            .spawn(move || worker.run())
            .map_err(ModelError::Threads)?;
        Ok((
            Engine {
                thread: Some(thread),
            },
            handle,
        ))
    }

    /// Waits for the engine thread to end (after a shutdown, or once every handle is gone).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("the engine thread panicked");
            }
        }
    }
}

impl EngineHandle {
    fn loaded(&self) -> Loaded {
        self.loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The model being served (the new one after a reload).
    pub fn model(&self) -> Arc<Model> {
        self.loaded().model
    }

    /// Facts about the model being served and the engine.
    pub fn info(&self) -> Arc<EngineInfo> {
        self.loaded().info
    }

    /// Asks the engine to map the model file again at the next request boundary (after the
    /// running job, before the next queued one). A failed reload is logged and keeps the old
    /// model.
    pub fn reload(&self) {
        self.reload.store(true, Ordering::SeqCst);
    }

    /// The prompt ids of `prompt`, refused when empty or when it leaves no room in the context
    /// for a generated token.
    pub fn prompt_ids(&self, prompt: &Prompt) -> Result<Vec<u32>, PromptError> {
        let loaded = self.loaded();
        let tok = &loaded.model.tokenizer;
        let n_ctx = loaded.info.n_ctx;
        let ids = match prompt {
            Prompt::Text(text) => {
                if text.is_empty() {
                    return Err(PromptError::Empty);
                }
                tok.encode(text, true, true).map_err(ModelError::from)?
            }
            Prompt::Chat(messages) => {
                if messages.is_empty() {
                    return Err(PromptError::Empty);
                }
                loaded.chat.prompt_ids(tok, messages)?
            }
            Prompt::Ids(ids) => {
                let n_vocab = tok.n_vocab();
                if let Some(&id) = ids.iter().find(|&&id| id as usize >= n_vocab) {
                    return Err(PromptError::BadToken { id, n_vocab });
                }
                ids.clone()
            }
        };
        if ids.is_empty() {
            return Err(PromptError::Empty);
        }
        if ids.len() >= n_ctx {
            return Err(PromptError::TooLong {
                tokens: ids.len(),
                n_ctx,
            });
        }
        Ok(ids)
    }

    /// Token ids of `text` (`add_special`: BOS as the vocabulary asks; `parse_special`:
    /// special-token texts become their ids).
    pub fn tokenize(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, PromptError> {
        Ok(self
            .model()
            .tokenizer
            .encode(text, add_special, parse_special)
            .map_err(ModelError::from)?)
    }

    /// The text of `ids` (control tokens give their text, like llama.cpp's `/detokenize`).
    pub fn detokenize(&self, ids: &[u32]) -> Result<String, PromptError> {
        let model = self.model();
        let tok = &model.tokenizer;
        let n_vocab = tok.n_vocab();
        let mut bytes = Vec::new();
        for &id in ids {
            if id as usize >= n_vocab {
                return Err(PromptError::BadToken { id, n_vocab });
            }
            bytes.extend_from_slice(tok.piece_special(id));
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Queues a job; fails at once when the queue is full or the engine is shutting down.
    pub fn submit(&self, job: Job) -> Result<(), SubmitError> {
        self.enqueue(Queued::Generate(job))
    }

    /// Queues a beam job; fails at once when it asks for more beams than the engine has room
    /// for, when the queue is full or when the engine is shutting down.
    pub fn submit_beams(&self, job: BeamJob) -> Result<(), SubmitError> {
        let max_beams = self.info().max_beams;
        if job.beams > max_beams {
            return Err(SubmitError::TooManyBeams {
                asked: job.beams,
                max_beams,
            });
        }
        self.enqueue(Queued::Beams(job))
    }

    fn enqueue(&self, job: Queued) -> Result<(), SubmitError> {
        if self.is_shutting_down() {
            return Err(SubmitError::ShuttingDown);
        }
        self.stats.queue_depth.fetch_add(1, Ordering::SeqCst);
        match self.tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.stats.queue_depth.fetch_sub(1, Ordering::SeqCst);
                Err(match e {
                    TrySendError::Full(_) => SubmitError::QueueFull(self.info().queue_capacity),
                    TrySendError::Disconnected(_) => SubmitError::ShuttingDown,
                })
            }
        }
    }

    /// Stops the engine: the running job ends with `StopReason::Cancelled`, queued jobs fail
    /// with "shutting down", and new submissions are refused.
    pub fn shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }
}

/// The KV caches the engine decodes into: one state, or the beam search's states, whose first
/// is also the state of ordinary jobs.
// The engine holds exactly one, for its whole life: a few hundred bytes of size do not matter.
#[allow(clippy::large_enum_variant)]
enum Caches {
    Single(State),
    Beams(BeamSearch),
}

impl Caches {
    fn new(model: &Model, opts: StateOptions, max_beams: usize) -> Result<Caches, ModelError> {
        Ok(if max_beams < 2 {
            Caches::Single(model.new_state(opts)?)
        } else {
            let search = BeamSearch::new(model, opts, max_beams)?;
            log::info!(
                "beam search: up to {max_beams} beams, {:.1} MiB of state in all",
                search.heap_bytes() as f64 / 1048576.0
            );
            Caches::Beams(search)
        })
    }

    /// The state ordinary jobs use.
    fn main(&self) -> &State {
        match self {
            Caches::Single(s) => s,
            Caches::Beams(b) => b.first_state(),
        }
    }

    fn main_mut(&mut self) -> &mut State {
        match self {
            Caches::Single(s) => s,
            Caches::Beams(b) => b.first_state_mut(),
        }
    }

    fn max_beams(&self) -> usize {
        match self {
            Caches::Single(_) => 0,
            Caches::Beams(b) => b.n_beams(),
        }
    }

    fn reset(&mut self) {
        match self {
            Caches::Single(s) => s.reset(),
            Caches::Beams(b) => b.reset(),
        }
    }
}

struct Worker {
    model: Arc<Model>,
    caches: Caches,
    generator: Generator,
    rx: Receiver<Queued>,
    loaded: Arc<RwLock<Loaded>>,
    stats: Arc<EngineStats>,
    shutdown: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
}

impl Worker {
    fn run(mut self) {
        loop {
            if self.reload.swap(false, Ordering::SeqCst) && !self.shutdown.load(Ordering::SeqCst) {
                self.reload_model();
            }
            match self.rx.recv_timeout(IDLE_POLL) {
                Ok(job) => {
                    self.stats.queue_depth.fetch_sub(1, Ordering::SeqCst);
                    // A reload asked for while this job waited happens before it runs.
                    if self.reload.swap(false, Ordering::SeqCst) {
                        self.reload_model();
                    }
                    match job {
                        job if self.shutdown.load(Ordering::SeqCst) => refuse(job),
                        Queued::Generate(job) => self.run_job(job),
                        Queued::Beams(job) => self.run_beam_job(job),
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if self.shutdown.load(Ordering::SeqCst) {
                        // Fail whatever raced in, then stop.
                        while let Ok(job) = self.rx.try_recv() {
                            self.stats.queue_depth.fetch_sub(1, Ordering::SeqCst);
                            refuse(job);
                        }
                        break;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        log::debug!("engine thread stopped");
    }

    /// Maps the model file again; on success the new model serves from the next job on, on
    /// failure the old one keeps serving.
    fn reload_model(&mut self) {
        let old = self
            .loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .info
            .clone();
        let path = old.model_path.clone();
        log::info!("reloading the model from {}", path.display());
        let opts = LoadOptions {
            n_threads: self.model.n_threads(),
            kernels: Some(*self.model.kernels()),
        };
        let result = Model::load(&path, opts).and_then(|model| {
            // Same shapes: the KV caches and scratch are reused (no second allocation at peak).
            let state_options = *self.caches.main().options();
            let same_layout =
                edgellm_models::StateLayout::new(&model.hparams, &model.weights, &state_options)?
                    == *self.caches.main().layout();
            let state = if same_layout {
                None
            } else {
                Some(Caches::new(&model, state_options, self.caches.max_beams())?)
            };
            let generator = Generator::new(&model)?;
            let chat = ChatFormat::for_model(&model)?;
            Ok((model, state, generator, chat))
        });
        match result {
            Ok((model, state, generator, chat)) => {
                match state {
                    Some(c) => self.caches = c,
                    None => self.caches.reset(),
                }
                self.generator = generator;
                let info = EngineInfo::new(
                    &model,
                    path,
                    &self.caches,
                    old.queue_capacity,
                    old.reloads + 1,
                );
                log::info!(
                    "reloaded {} ({} bytes) in {:.0} ms",
                    info.model_name,
                    info.file_bytes,
                    info.load_ms
                );
                self.model = Arc::new(model);
                *self.loaded.write().unwrap_or_else(|p| p.into_inner()) = Loaded {
                    model: Arc::clone(&self.model),
                    chat: Arc::new(chat),
                    info: Arc::new(info),
                };
                self.stats.ctx_used.store(0, Ordering::Relaxed);
            }
            Err(e) => {
                self.stats.reload_failures.fetch_add(1, Ordering::Relaxed);
                log::error!(
                    "reloading {} failed, the old model keeps serving: {e}",
                    path.display()
                );
            }
        }
    }

    fn run_job(&mut self, mut job: Job) {
        // Ids tokenized before a reload may not fit a new vocabulary.
        let n_vocab = self.model.hparams.n_vocab;
        if let Some(&id) = job.prompt.iter().find(|&&id| id as usize >= n_vocab) {
            (job.sink)(Event::Failed(
                PromptError::BadToken { id, n_vocab }.to_string(),
            ));
            return;
        }
        let stats = &self.stats;
        stats.busy.store(1, Ordering::SeqCst);
        stats.jobs_started.fetch_add(1, Ordering::Relaxed);
        let mut sink = JobSink {
            sink: &mut job.sink,
            cancel: &job.cancel,
            shutdown: &self.shutdown,
        };
        let result = if sink.emit(Event::Started {
            prompt_tokens: job.prompt.len(),
        }) {
            self.generator.generate(
                &self.model,
                self.caches.main_mut(),
                &job.prompt,
                &job.params,
                &mut sink,
            )
        } else {
            // The client left while queued: nothing to evaluate.
            Ok(edgellm_models::GenerateOutcome {
                stop_reason: Some(StopReason::Cancelled),
                ..Default::default()
            })
        };
        match result {
            Ok(out) => {
                let reason = out.stop_reason.unwrap_or(StopReason::Cancelled);
                let summary = Summary {
                    stop_reason: reason,
                    prompt_tokens: job.prompt.len(),
                    reused_tokens: out.reused_tokens,
                    completion_tokens: out.generated.len(),
                    prompt_ms: out.prompt_ms,
                    gen_ms: out.gen_ms,
                    prompt_tokens_per_s: out.prompt_tokens_per_s(),
                    gen_tokens_per_s: out.gen_tokens_per_s(),
                };
                stats.record_job(
                    out.prompt_evaluated,
                    out.reused_tokens,
                    out.generated.len(),
                    out.prompt_ms,
                    out.gen_ms,
                    reason == StopReason::Cancelled,
                );
                if out.generated.len() > 1 {
                    stats
                        .last_gen_tps_milli
                        .store((out.gen_tokens_per_s() * 1000.0) as u64, Ordering::Relaxed);
                }
                if out.prompt_evaluated > 0 {
                    stats.last_prompt_tps_milli.store(
                        (out.prompt_tokens_per_s() * 1000.0) as u64,
                        Ordering::Relaxed,
                    );
                }
                (job.sink)(Event::Done(summary));
            }
            Err(e) => {
                log::error!("generation failed: {e}");
                // The cache may hold a half-written batch: start the next job from scratch.
                self.caches.main_mut().reset();
                stats.jobs_failed.fetch_add(1, Ordering::Relaxed);
                (job.sink)(Event::Failed(e.to_string()));
            }
        }
        stats
            .ctx_used
            .store(self.caches.main().n_past(), Ordering::Relaxed);
        stats.busy.store(0, Ordering::SeqCst);
    }

    fn run_beam_job(&mut self, mut job: BeamJob) {
        let n_vocab = self.model.hparams.n_vocab;
        let refused = if let Some(&id) = job.prompt.iter().find(|&&id| id as usize >= n_vocab) {
            Some(PromptError::BadToken { id, n_vocab }.to_string())
        } else if job.beams == 0 || job.beams > self.caches.max_beams() {
            Some(
                SubmitError::TooManyBeams {
                    asked: job.beams,
                    max_beams: self.caches.max_beams(),
                }
                .to_string(),
            )
        } else if job.choices == 0 || job.choices > job.beams {
            Some(format!(
                "{} choices asked of {} beams",
                job.choices, job.beams
            ))
        } else {
            None
        };
        let search = match (&mut self.caches, refused) {
            (Caches::Beams(search), None) => search,
            (_, refused) => {
                (job.sink)(Event::Failed(refused.unwrap_or_else(|| beams_allowed(0))));
                return;
            }
        };
        let stats = &self.stats;
        stats.busy.store(1, Ordering::SeqCst);
        stats.jobs_started.fetch_add(1, Ordering::Relaxed);
        let (cancel, shutdown) = (&job.cancel, &self.shutdown);
        let live = || !cancel.load(Ordering::Relaxed) && !shutdown.load(Ordering::Relaxed);
        let started = (job.sink)(Event::Started {
            prompt_tokens: job.prompt.len(),
        }) && live();
        let result = if started {
            search
                .run_with_beams(
                    &self.model,
                    &job.prompt,
                    job.beams,
                    &job.params,
                    &mut |_| live(),
                )
                .map(Some)
        } else {
            // The client left while queued: nothing to evaluate.
            Ok(None)
        };
        match result {
            Ok(out) => {
                let (choices, summary) = match &out {
                    Some(out) => beam_results(&self.model, out, job.prompt.len(), job.choices),
                    None => (Vec::new(), cancelled_summary(job.prompt.len())),
                };
                let cancelled = summary.stop_reason == StopReason::Cancelled;
                match &out {
                    Some(out) => stats.record_job(
                        job.prompt.len() - out.reused_tokens,
                        out.reused_tokens,
                        summary.completion_tokens,
                        out.prompt_ms,
                        out.gen_ms,
                        cancelled,
                    ),
                    None => stats.record_job(0, 0, 0, 0.0, 0.0, cancelled),
                }
                if out.is_some() {
                    (job.sink)(Event::Beams(choices));
                }
                (job.sink)(Event::Done(summary));
            }
            Err(e) => {
                log::error!("beam search failed: {e}");
                // A beam's cache may hold a half-written batch: start the next job from scratch.
                search.reset();
                stats.jobs_failed.fetch_add(1, Ordering::Relaxed);
                (job.sink)(Event::Failed(e.to_string()));
            }
        }
        stats
            .ctx_used
            .store(self.caches.main().n_past(), Ordering::Relaxed);
        stats.busy.store(0, Ordering::SeqCst);
    }
}

/// The best `choices` beams of `out` and the job's summary (its completion tokens are the best
/// beam's; its generation speed counts decode steps, each a token for every beam).
fn beam_results(
    model: &Model,
    out: &edgellm_models::BeamOutcome,
    prompt_tokens: usize,
    choices: usize,
) -> (Vec<BeamChoice>, Summary) {
    let choices: Vec<BeamChoice> = out
        .beams
        .iter()
        .take(choices)
        .map(|b| BeamChoice {
            text: b.text(&model.tokenizer),
            completion_tokens: b.tokens.len(),
            stop_reason: if b.finished {
                StopReason::Eos
            } else {
                out.stop_reason
            },
            logprob_sum: b.logprob_sum,
            score: b.score,
        })
        .collect();
    let evaluated = prompt_tokens - out.reused_tokens;
    let per_s = |n: usize, ms: f64| {
        if ms > 0.0 {
            n as f64 * 1000.0 / ms
        } else {
            0.0
        }
    };
    let summary = Summary {
        stop_reason: out.stop_reason,
        prompt_tokens,
        reused_tokens: out.reused_tokens,
        completion_tokens: choices.first().map_or(0, |c| c.completion_tokens),
        prompt_ms: out.prompt_ms,
        gen_ms: out.gen_ms,
        prompt_tokens_per_s: per_s(evaluated, out.prompt_ms),
        gen_tokens_per_s: per_s(out.steps, out.gen_ms),
    };
    (choices, summary)
}

/// The summary of a job cancelled before it ran.
fn cancelled_summary(prompt_tokens: usize) -> Summary {
    Summary {
        stop_reason: StopReason::Cancelled,
        prompt_tokens,
        reused_tokens: 0,
        completion_tokens: 0,
        prompt_ms: 0.0,
        gen_ms: 0.0,
        prompt_tokens_per_s: 0.0,
        gen_tokens_per_s: 0.0,
    }
}

fn refuse(job: Queued) {
    let mut sink = match job {
        Queued::Generate(j) => j.sink,
        Queued::Beams(j) => j.sink,
    };
    sink(Event::Failed(SubmitError::ShuttingDown.to_string()));
}

/// Adapts a job's event sink to the generator, folding in the cancel and shutdown flags.
struct JobSink<'a> {
    sink: &'a mut EventSink,
    cancel: &'a AtomicBool,
    shutdown: &'a AtomicBool,
}

impl JobSink<'_> {
    fn live(&self) -> bool {
        !self.cancel.load(Ordering::Relaxed) && !self.shutdown.load(Ordering::Relaxed)
    }
    fn emit(&mut self, ev: Event) -> bool {
        (self.sink)(ev) && self.live()
    }
}

impl TokenSink for JobSink<'_> {
    fn on_text(&mut self, text: &str) -> bool {
        self.emit(Event::Text(text.to_string()))
    }
    fn on_token(&mut self, _id: u32) -> bool {
        self.live()
    }
    fn on_prompt_progress(&mut self, done: usize, total: usize) -> bool {
        self.emit(Event::Progress { done, total })
    }
}
