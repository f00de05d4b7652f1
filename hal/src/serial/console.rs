//! `Session`: one console conversation over any `Read + Write` port (the serial device, or an
//! in-memory port in tests). It owns the modes (human: banner, prompt, echo, commands, a chat
//! that continues turn after turn; json: one request per line, JSON lines back), the answer
//! loop that streams a job's events while still reading the port for Ctrl-C, and the messages
//! the person or microcontroller sees. It does not open devices (that is `device`).
//!
//! The port's `read` must return within a short timeout (`TimedOut`/`WouldBlock` when nothing
//! came): the session alternates between the engine's events and the port, and looks at the
//! shutdown flag between reads. Any other read or write error means the port is gone; `run`
//! returns it and the caller reopens the device. The conversation and mode survive that.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgellm_models::StopReason;
use edgellm_runtime::chat_template::ChatMessage;
use edgellm_runtime::sampler::SamplerConfig;

use super::json_request::{self, JsonCommand};
use super::line_editor::{Edit, LineEditor, ERASE_ECHO};
use crate::engine::{EngineHandle, Event, Job, Prompt, PromptError, Summary};
use crate::openai::{self, Sampling};
use crate::shutdown::Shutdown;

const PROMPT: &str = "> ";
const CTRL_C: u8 = 0x03;
/// How long output may stay blocked (flow control, a full pty) before the port counts as gone.
const WRITE_STALL_LIMIT: Duration = Duration::from_secs(30);
/// How long a job may wait in the queue before the console says it is waiting.
const QUEUE_NOTICE_DELAY: Duration = Duration::from_millis(250);
/// How long to wait for a cancelled job's last event once the port is gone or shutdown began.
const CANCEL_WAIT: Duration = Duration::from_secs(10);
/// Type-ahead kept while an answer streams; more is dropped (a runaway sender).
const MAX_TYPEAHEAD: usize = 2 * super::line_editor::MAX_LINE_BYTES;

const HELP: &str = "\
Type a message and press Enter; the answer streams back. Ctrl-C stops an answer.
/help               this list
/reset              start a new conversation
/system TEXT        set the system prompt (no TEXT removes it)
/set                show the sampling settings
/set temp|top_p|top_k|max_tokens|seed VALUE
                    change one (max_tokens auto, seed random restore the defaults)
/stats              speed of the last answer, context used, SoC temperature
/mode json          one JSON request per line ({\"mode\":\"human\"} comes back)";

/// What the console prints and how it reads lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Human,
    Json,
}

/// Settings of a session that do not come from the engine.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Longest input line in bytes (64..=65536).
    pub line_buffer: usize,
    /// Board name shown in the banner.
    pub board: Option<String>,
}

/// The human mode's `/set` values (absent: the defaults of the json mode).
#[derive(Debug, Clone, Default)]
struct HumanSettings {
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<usize>,
    max_tokens: Option<usize>,
    seed: Option<u64>,
}

impl HumanSettings {
    /// The settings as a request's sampling fields, checked like a request's.
    fn sampling(&self) -> Result<Sampling, String> {
        let d = SamplerConfig::default();
        let sampling = Sampling {
            max_tokens: self.max_tokens,
            sampler: SamplerConfig {
                temperature: self.temperature.unwrap_or(d.temperature),
                top_p: self.top_p.unwrap_or(d.top_p),
                top_k: self.top_k.unwrap_or(d.top_k),
                ..d
            },
            seed: self.seed,
            stop: Vec::new(),
        };
        sampling.sampler.validate().map_err(|e| e.to_string())?;
        Ok(sampling)
    }
}

/// How a job ended, as the session records it.
struct Answer {
    text: String,
    result: Result<Summary, String>,
}

pub struct Session {
    engine: EngineHandle,
    shutdown: Shutdown,
    board: Option<String>,
    mode: Mode,
    editor: Box<LineEditor>,
    /// Bytes read but not yet given to the editor (type-ahead while an answer streams).
    input: VecDeque<u8>,
    /// Non-UTF-8 bytes dropped and not yet reported (human mode reports them once per burst).
    unreported_invalid: usize,
    system: Option<String>,
    /// The conversation so far: user and assistant turns.
    history: Vec<ChatMessage>,
    settings: HumanSettings,
    /// The last human-mode answer.
    last: Option<Summary>,
}

impl Session {
    pub fn new(engine: EngineHandle, shutdown: Shutdown, opts: &SessionOptions) -> Session {
        Session {
            engine,
            shutdown,
            board: opts.board.clone(),
            mode: Mode::Human,
            editor: Box::new(LineEditor::new(opts.line_buffer)),
            input: VecDeque::new(),
            unreported_invalid: 0,
            system: None,
            history: Vec::new(),
            settings: HumanSettings::default(),
            last: None,
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Serves `port` until shutdown (`Ok`) or until the port fails (`Err`: the device is gone).
    pub fn run<P: Read + Write>(&mut self, port: &mut P) -> io::Result<()> {
        self.editor.clear();
        self.input.clear();
        self.unreported_invalid = 0;
        if self.mode == Mode::Human {
            self.banner(port)?;
        }
        let mut buf = [0u8; 512];
        loop {
            if self.shutdown.is_triggered() {
                if self.mode == Mode::Human {
                    // Best effort: the port may already be unwritable.
                    let _ = self.send(port, b"\r\n[edgellm is shutting down]\r\n");
                }
                return Ok(());
            }
            if self.input.is_empty() {
                self.report_invalid(port, true)?;
                if let Some(n) = read_port(port, &mut buf)? {
                    self.input.extend(&buf[..n]);
                }
            }
            while let Some(byte) = self.input.pop_front() {
                for edit in self.editor.feed(byte) {
                    self.apply(port, edit)?;
                }
                if self.shutdown.is_triggered() {
                    break;
                }
            }
        }
    }

    fn apply<P: Read + Write>(&mut self, port: &mut P, edit: Edit) -> io::Result<()> {
        let human = self.mode == Mode::Human;
        match edit {
            Edit::Echo(bytes) if human => self.send(port, &bytes),
            Edit::Erase if human => self.send(port, ERASE_ECHO),
            Edit::Echo(_) | Edit::Erase => Ok(()),
            Edit::Invalid(n) => {
                self.unreported_invalid += n;
                Ok(())
            }
            Edit::Interrupt if human => {
                self.unreported_invalid = 0;
                self.send(port, format!("^C\r\n{PROMPT}").as_bytes())
            }
            Edit::Interrupt => Ok(()),
            Edit::Overlong { limit } => {
                self.unreported_invalid = 0;
                let msg = format!("the line is longer than {limit} bytes and was not sent");
                if human {
                    self.send(port, b"\r\n")?;
                    self.notice(port, &msg)?;
                    self.send(port, PROMPT.as_bytes())
                } else {
                    self.json(port, &json_request::error_line(&msg))
                }
            }
            Edit::Line { text, dropped } => {
                if human {
                    self.send(port, b"\r\n")?;
                    self.report_invalid(port, false)?;
                    self.human_line(port, text.trim())?;
                    if self.mode == Mode::Human {
                        self.send(port, PROMPT.as_bytes())?;
                    }
                    Ok(())
                } else {
                    self.unreported_invalid = 0;
                    if dropped > 0 {
                        let msg = format!(
                            "the line had {dropped} bytes that are not UTF-8; it was dropped"
                        );
                        return self.json(port, &json_request::error_line(&msg));
                    }
                    self.json_line(port, text.trim())
                }
            }
        }
    }

    // ---- human mode ----

    fn banner<P: Write>(&mut self, port: &mut P) -> io::Result<()> {
        let info = self.engine.info();
        let board = self
            .board
            .as_deref()
            .map(|b| format!(", board {b}"))
            .unwrap_or_default();
        let text = format!(
            "\r\nedgellm serial console: {} (context {}{board})\r\nType a message and press Enter; /help lists the commands.\r\n{PROMPT}",
            info.model_name, info.n_ctx
        );
        self.send(port, text.as_bytes())
    }

    fn human_line<P: Read + Write>(&mut self, port: &mut P, line: &str) -> io::Result<()> {
        if line.is_empty() {
            return Ok(());
        }
        match line.strip_prefix('/') {
            Some(command) => self.command(port, command),
            None => self.ask(port, line),
        }
    }

    fn command<P: Write>(&mut self, port: &mut P, command: &str) -> io::Result<()> {
        let (name, arg) = match command.split_once(char::is_whitespace) {
            Some((n, a)) => (n, a.trim()),
            None => (command, ""),
        };
        match name {
            "help" => self.text(port, HELP),
            "reset" => {
                self.history.clear();
                self.last = None;
                self.notice(port, "new conversation")
            }
            "system" if arg.is_empty() => {
                self.system = None;
                self.notice(port, "system prompt removed")
            }
            "system" => {
                self.system = Some(arg.to_string());
                self.notice(port, "system prompt set")
            }
            "set" if arg.is_empty() => {
                let text = self.settings_text();
                self.text(port, &text)
            }
            "set" => {
                let msg = match self.set(arg) {
                    Ok(m) | Err(m) => m,
                };
                self.notice(port, &msg)
            }
            "stats" => {
                let text = self.stats_text();
                self.text(port, &text)
            }
            "mode" => match arg {
                "json" => {
                    self.notice(
                        port,
                        "json mode: one JSON request per line; {\"mode\":\"human\"} comes back",
                    )?;
                    self.mode = Mode::Json;
                    self.json(port, &json_request::mode_line("json"))
                }
                "human" => self.notice(port, "already in human mode"),
                _ => self.notice(port, "usage: /mode json|human"),
            },
            _ => self.notice(port, &format!("unknown command /{name}; /help lists them")),
        }
    }

    /// Applies `/set KEY VALUE`; both results are the message to show.
    fn set(&mut self, arg: &str) -> Result<String, String> {
        let (key, value) = arg
            .split_once(char::is_whitespace)
            .map(|(k, v)| (k, v.trim()))
            .ok_or("usage: /set temp|top_p|top_k|max_tokens|seed VALUE")?;
        fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, String> {
            value
                .parse()
                .map_err(|_| format!("/set {key}: {value:?} is not a valid number"))
        }
        let mut next = self.settings.clone();
        match key {
            "temp" | "temperature" => next.temperature = Some(number(key, value)?),
            "top_p" => next.top_p = Some(number(key, value)?),
            "top_k" => next.top_k = Some(number(key, value)?),
            "max_tokens" if value == "auto" => next.max_tokens = None,
            "max_tokens" => match number(key, value)? {
                0 => return Err("/set max_tokens: must be at least 1 (or auto)".into()),
                n => next.max_tokens = Some(n),
            },
            "seed" if value == "random" => next.seed = None,
            "seed" => next.seed = Some(number(key, value)?),
            _ => {
                return Err(format!(
                    "/set {key}: unknown setting; one of temp, top_p, top_k, max_tokens, seed"
                ))
            }
        }
        // The same checks a request gets.
        next.sampling()?;
        self.settings = next;
        Ok(format!("{key} = {value}"))
    }

    fn settings_text(&self) -> String {
        let d = SamplerConfig::default();
        let s = &self.settings;
        format!(
            "temp {}  top_p {}  top_k {}  max_tokens {}  seed {}",
            s.temperature.unwrap_or(d.temperature),
            s.top_p.unwrap_or(d.top_p),
            s.top_k.unwrap_or(d.top_k),
            s.max_tokens
                .map_or("auto (the rest of the context)".into(), |n| n.to_string()),
            s.seed.map_or("random".into(), |n| n.to_string()),
        )
    }

    fn stats_text(&self) -> String {
        let last = match &self.last {
            Some(s) => format!(
                "last answer: {} tokens at {:.1} tokens/s; prompt {} tokens ({} cached) at {:.1} tokens/s",
                s.completion_tokens,
                s.gen_tokens_per_s,
                s.prompt_tokens,
                s.reused_tokens,
                s.prompt_tokens_per_s
            ),
            None => "last answer: none yet".into(),
        };
        // Positions this conversation holds: the last prompt plus its answer.
        let used = match &self.last {
            Some(s) if !self.history.is_empty() => s.prompt_tokens + s.completion_tokens,
            _ => 0,
        };
        let temp =
            crate::thermal::soc_temperature_c().map_or("n/a".to_string(), |t| format!("{t:.1} C"));
        format!(
            "{last}\ncontext: {used} / {} tokens used\nSoC temperature: {temp}\nqueue: {} waiting",
            self.engine.info().n_ctx,
            self.engine.stats.queue_depth.load(Ordering::Relaxed)
        )
    }

    /// One conversation turn: the question joins the history, the answer streams and joins it.
    fn ask<P: Read + Write>(&mut self, port: &mut P, question: &str) -> io::Result<()> {
        self.history.push(ChatMessage::new("user", question));
        let mut messages = Vec::with_capacity(self.history.len() + 1);
        if let Some(system) = &self.system {
            messages.push(ChatMessage::new("system", system.clone()));
        }
        messages.extend(self.history.iter().cloned());
        let ids = match self.engine.prompt_ids(&Prompt::Chat(messages)) {
            Ok(ids) => ids,
            Err(e) => {
                self.history.pop();
                let hint = match e {
                    PromptError::TooLong { .. } if !self.history.is_empty() => {
                        "; /reset starts a new conversation"
                    }
                    _ => "",
                };
                return self.notice(port, &format!("{e}{hint}"));
            }
        };
        let params = match self.settings.sampling() {
            Ok(s) => s.generate_params(ids.len(), self.engine.info().n_ctx, openai::random_seed()),
            Err(e) => {
                self.history.pop();
                return self.notice(port, &e);
            }
        };
        let answer = self.stream(port, ids, params);
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                self.history.pop();
                return Err(e);
            }
        };
        match answer.result {
            Ok(summary) => {
                if answer.text.is_empty() {
                    // Nothing was said: as if the question was never asked.
                    self.history.pop();
                } else {
                    self.history
                        .push(ChatMessage::new("assistant", answer.text.trim_end()));
                }
                self.last = Some(summary);
            }
            Err(_) => {
                self.history.pop();
            }
        }
        Ok(())
    }

    // ---- json mode ----

    fn json_line<P: Read + Write>(&mut self, port: &mut P, line: &str) -> io::Result<()> {
        if line.is_empty() {
            return Ok(());
        }
        if line == "/mode human" {
            return self.switch_to_human(port);
        }
        let (prompt, sampling) = match json_request::parse_line(line) {
            Ok(JsonCommand::Generate { prompt, sampling }) => (prompt, sampling),
            Ok(JsonCommand::Mode(m)) => {
                return match m.as_str() {
                    "human" => self.switch_to_human(port),
                    "json" => self.json(port, &json_request::mode_line("json")),
                    _ => self.json(
                        port,
                        &json_request::error_line("\"mode\" must be \"human\" or \"json\""),
                    ),
                }
            }
            Err(e) => return self.json(port, &json_request::error_line(&e)),
        };
        let ids = match self.engine.prompt_ids(&prompt) {
            Ok(ids) => ids,
            Err(e) => return self.json(port, &json_request::error_line(&e.to_string())),
        };
        let params =
            sampling.generate_params(ids.len(), self.engine.info().n_ctx, openai::random_seed());
        self.stream(port, ids, params).map(drop)
    }

    fn switch_to_human<P: Write>(&mut self, port: &mut P) -> io::Result<()> {
        self.mode = Mode::Human;
        self.editor.clear();
        self.banner(port)
    }

    // ---- answers ----

    /// Runs one job, showing its events as they come and reading the port between them (Ctrl-C
    /// cancels; other bytes wait in `input`). Queue-full and shutting-down are shown here.
    fn stream<P: Read + Write>(
        &mut self,
        port: &mut P,
        prompt: Vec<u32>,
        params: edgellm_models::GenerateParams,
    ) -> io::Result<Answer> {
        let (tx, rx) = mpsc::channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let prompt_tokens = prompt.len();
        let job = Job {
            prompt,
            params,
            sink: Box::new(move |ev| tx.send(ev).is_ok()),
            cancel: Arc::clone(&cancel),
        };
        if let Err(e) = self.engine.submit(job) {
            let msg = e.to_string();
            self.show_error(port, &msg)?;
            return Ok(Answer {
                text: String::new(),
                result: Err(msg),
            });
        }
        // A job that has not started after a moment waits behind others: say so (human mode).
        let mut waiting_notice_at =
            (self.mode == Mode::Human).then(|| Instant::now() + QUEUE_NOTICE_DELAY);
        let mut view = AnswerView::new(self.mode);
        let mut buf = [0u8; 256];
        loop {
            if waiting_notice_at.is_some_and(|at| !view.started && Instant::now() >= at) {
                waiting_notice_at = None;
                let stats = &self.engine.stats;
                // Our job is among the queued ones.
                let ahead = (stats.busy.load(Ordering::SeqCst)
                    + stats.queue_depth.load(Ordering::SeqCst))
                .saturating_sub(1)
                .max(1);
                let plural = if ahead == 1 { "" } else { "s" };
                self.notice(
                    port,
                    &format!("waiting for the engine: {ahead} request{plural} ahead"),
                )?;
            }
            if cancel.load(Ordering::SeqCst) && !view.started {
                // Still queued: the engine will skip the job; the console need not wait for it.
                let out = view.render(&Event::Done(Summary {
                    stop_reason: StopReason::Cancelled,
                    prompt_tokens,
                    reused_tokens: 0,
                    completion_tokens: 0,
                    prompt_ms: 0.0,
                    gen_ms: 0.0,
                    prompt_tokens_per_s: 0.0,
                    gen_tokens_per_s: 0.0,
                }));
                self.send(port, out.as_bytes())?;
                return Ok(Answer {
                    text: String::new(),
                    result: Err("cancelled while queued".into()),
                });
            }
            // Everything the engine has said so far.
            loop {
                match rx.try_recv() {
                    Ok(ev) => {
                        if let Some(answer) = self.show(port, &mut view, ev)? {
                            return Ok(answer);
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        let msg = "the engine stopped".to_string();
                        self.show_error(port, &msg)?;
                        return Ok(Answer {
                            text: view.text,
                            result: Err(msg),
                        });
                    }
                }
            }
            if self.shutdown.is_triggered() {
                cancel.store(true, Ordering::SeqCst);
                view.shutting_down = true;
            }
            // Then the port, briefly.
            match read_port(port, &mut buf) {
                Ok(Some(n)) => {
                    let bytes = &buf[..n];
                    if let Some(i) = bytes.iter().position(|&b| b == CTRL_C) {
                        if !cancel.swap(true, Ordering::SeqCst) {
                            view.interrupted = true;
                            // Ctrl-C drops the type-ahead before it.
                            self.input.clear();
                            if self.mode == Mode::Human {
                                self.send(port, b"^C")?;
                            }
                        }
                        self.take_typeahead(&bytes[i + 1..]);
                    } else {
                        self.take_typeahead(bytes);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    // The port is gone: stop the job and wait for its end so the conversation
                    // stays consistent, then report the port's failure.
                    cancel.store(true, Ordering::SeqCst);
                    drain_until_end(&rx);
                    return Err(e);
                }
            }
        }
    }

    fn take_typeahead(&mut self, bytes: &[u8]) {
        let room = MAX_TYPEAHEAD.saturating_sub(self.input.len());
        if bytes.len() > room {
            log::warn!(
                "serial console: dropped {} bytes of type-ahead",
                bytes.len() - room
            );
        }
        self.input.extend(&bytes[..bytes.len().min(room)]);
    }

    /// Shows one event; returns the answer when the job has ended.
    fn show<P: Write>(
        &mut self,
        port: &mut P,
        view: &mut AnswerView,
        ev: Event,
    ) -> io::Result<Option<Answer>> {
        let out = view.render(&ev);
        if !out.is_empty() {
            self.send(port, out.as_bytes())?;
        }
        Ok(match ev {
            Event::Done(summary) => Some(Answer {
                text: std::mem::take(&mut view.text),
                result: Ok(summary),
            }),
            Event::Failed(msg) => Some(Answer {
                text: std::mem::take(&mut view.text),
                result: Err(msg),
            }),
            _ => None,
        })
    }

    // ---- output ----

    /// An error for the current mode: `[message]` or `{"error": ...}`.
    fn show_error<P: Write>(&mut self, port: &mut P, msg: &str) -> io::Result<()> {
        match self.mode {
            Mode::Human => self.notice(port, msg),
            Mode::Json => self.json(port, &json_request::error_line(msg)),
        }
    }

    /// `[message]` on its own line (human mode).
    fn notice<P: Write>(&mut self, port: &mut P, msg: &str) -> io::Result<()> {
        self.text(port, &format!("[{msg}]"))
    }

    /// Text with CRLF line endings, ending in one.
    fn text<P: Write>(&mut self, port: &mut P, text: &str) -> io::Result<()> {
        let mut out = crlf(text, &mut false);
        out.push_str("\r\n");
        self.send(port, out.as_bytes())
    }

    fn json<P: Write>(&mut self, port: &mut P, line: &str) -> io::Result<()> {
        self.send(port, format!("{line}\r\n").as_bytes())
    }

    /// Reports dropped non-UTF-8 bytes (human mode). In the middle of a line (`retype`), the
    /// notice goes on a line of its own and the prompt and line typed so far are shown again;
    /// at a line end, the notice just precedes what the line does.
    fn report_invalid<P: Write>(&mut self, port: &mut P, retype: bool) -> io::Result<()> {
        let n = std::mem::take(&mut self.unreported_invalid);
        if n == 0 || self.mode != Mode::Human {
            return Ok(());
        }
        let plural = if n == 1 {
            "byte that is"
        } else {
            "bytes that are"
        };
        let notice = format!("[dropped {n} {plural} not UTF-8]\r\n");
        let text = if retype {
            format!("\r\n{notice}{PROMPT}{}", self.editor.line())
        } else {
            notice
        };
        self.send(port, text.as_bytes())
    }

    /// Writes all of `bytes`, waiting out a blocked port (flow control) unless shutdown comes
    /// or it stays blocked for [`WRITE_STALL_LIMIT`].
    fn send<P: Write>(&self, port: &mut P, mut bytes: &[u8]) -> io::Result<()> {
        let mut stalled_since: Option<Instant> = None;
        while !bytes.is_empty() {
            match port.write(bytes) {
                Ok(0) => {
                    return Err(io::Error::new(
                        ErrorKind::WriteZero,
                        "the port took nothing",
                    ))
                }
                Ok(n) => {
                    bytes = &bytes[n..];
                    stalled_since = None;
                }
                Err(e) if is_retry(&e) => {
                    let since = *stalled_since.get_or_insert_with(Instant::now);
                    if self.shutdown.is_triggered() || since.elapsed() > WRITE_STALL_LIMIT {
                        return Err(io::Error::new(
                            ErrorKind::TimedOut,
                            "the port stopped taking output",
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e),
            }
        }
        port.flush()
            .or_else(|e| if is_retry(&e) { Ok(()) } else { Err(e) })
    }
}

/// How one answer looks on the port, event by event.
struct AnswerView {
    mode: Mode,
    /// The generated text so far.
    text: String,
    /// Width of the `[prompt 64/230]` indicator on screen (0 = none shown).
    progress_width: usize,
    /// The last text written ended in CR (so a following LF is already a line end).
    after_cr: bool,
    /// The engine took the job from the queue.
    started: bool,
    interrupted: bool,
    shutting_down: bool,
}

impl AnswerView {
    fn new(mode: Mode) -> AnswerView {
        AnswerView {
            mode,
            text: String::new(),
            progress_width: 0,
            after_cr: false,
            started: false,
            interrupted: false,
            shutting_down: false,
        }
    }

    /// The bytes to write for `ev`.
    fn render(&mut self, ev: &Event) -> String {
        if let Event::Started { .. } = ev {
            self.started = true;
        }
        match self.mode {
            Mode::Human => self.render_human(ev),
            Mode::Json => self.render_json(ev),
        }
    }

    fn render_json(&mut self, ev: &Event) -> String {
        let line = match ev {
            Event::Text(t) if !t.is_empty() => {
                self.text.push_str(t);
                json_request::token_line(t)
            }
            Event::Done(s) => json_request::done_line(s),
            Event::Failed(m) => json_request::error_line(m),
            _ => return String::new(),
        };
        line + "\r\n"
    }

    fn render_human(&mut self, ev: &Event) -> String {
        let mut out = String::new();
        match ev {
            // Beam jobs come from the socket only (json_request refuses them).
            Event::Started { .. } | Event::Beams(_) => {}
            Event::Progress { done, total } => {
                let indicator = format!("[prompt {done}/{total}]");
                out.push('\r');
                out.push_str(&indicator);
                self.progress_width = self.progress_width.max(indicator.len());
            }
            Event::Text(t) => {
                self.clear_progress(&mut out);
                self.text.push_str(t);
                out.push_str(&crlf(t, &mut self.after_cr));
            }
            Event::Done(s) => {
                let had_progress = self.progress_width > 0;
                self.clear_progress(&mut out);
                let ends_line = if self.text.is_empty() {
                    // A "^C" typed before any text (and not wiped with the progress) is on
                    // the current line.
                    self.interrupted && !had_progress
                } else {
                    !self.text.ends_with('\n')
                };
                if ends_line {
                    out.push_str("\r\n");
                }
                let note = match s.stop_reason {
                    StopReason::Eos | StopReason::StopString => None,
                    StopReason::MaxTokens => {
                        Some("[max_tokens reached; /set max_tokens N allows more]")
                    }
                    StopReason::ContextFull => {
                        Some("[the context is full; /reset starts a new conversation]")
                    }
                    StopReason::Cancelled if self.shutting_down && !self.interrupted => {
                        Some("[stopped: edgellm is shutting down]")
                    }
                    StopReason::Cancelled => Some("[stopped]"),
                };
                if let Some(note) = note {
                    out.push_str(note);
                    out.push_str("\r\n");
                }
            }
            Event::Failed(m) => {
                self.clear_progress(&mut out);
                if !(self.text.is_empty() || self.text.ends_with('\n')) {
                    out.push_str("\r\n");
                }
                out.push_str(&format!("[error: {m}]\r\n"));
            }
        }
        out
    }

    fn clear_progress(&mut self, out: &mut String) {
        if self.progress_width > 0 {
            out.push('\r');
            out.extend(std::iter::repeat_n(' ', self.progress_width));
            out.push('\r');
            self.progress_width = 0;
        }
    }
}

/// `text` with every bare "\n" as "\r\n" (`after_cr` carries a CR at the end of the previous
/// piece, so a CRLF split across tokens is not doubled).
fn crlf(text: &str, after_cr: &mut bool) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c == '\n' && !*after_cr {
            out.push('\r');
        }
        out.push(c);
        *after_cr = c == '\r';
    }
    out
}

/// Errors a port with a read timeout returns when there is simply nothing yet.
fn is_retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::TimedOut | ErrorKind::WouldBlock | ErrorKind::Interrupted
    )
}

/// One read with the port's timeout: `Some(n)` bytes, `None` when nothing came, `Err` when the
/// port is gone (end of file counts: a hung-up tty).
fn read_port<P: Read>(port: &mut P, buf: &mut [u8]) -> io::Result<Option<usize>> {
    match port.read(buf) {
        Ok(0) => Err(io::Error::new(ErrorKind::UnexpectedEof, "the port closed")),
        Ok(n) => Ok(Some(n)),
        Err(e) if is_retry(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Waits (bounded) for a cancelled job's last event.
fn drain_until_end(rx: &Receiver<Event>) {
    let deadline = Instant::now() + CANCEL_WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Event::Done(_) | Event::Failed(_)) => return,
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_converts_bare_newlines_once() {
        let mut cr = false;
        assert_eq!(crlf("a\nb\r\nc", &mut cr), "a\r\nb\r\nc");
        assert_eq!(crlf("end\r", &mut cr), "end\r");
        assert!(cr);
        // The LF of a CRLF split across two tokens.
        assert_eq!(crlf("\nx", &mut cr), "\nx");
        assert_eq!(crlf("\n\n", &mut cr), "\r\n\r\n");
    }

    fn summary(reason: StopReason) -> Summary {
        Summary {
            stop_reason: reason,
            prompt_tokens: 10,
            reused_tokens: 4,
            completion_tokens: 2,
            prompt_ms: 1.0,
            gen_ms: 1.0,
            prompt_tokens_per_s: 1.0,
            gen_tokens_per_s: 1.0,
        }
    }

    #[test]
    fn human_view_shows_progress_in_place_then_clears_it_for_the_text() {
        let mut v = AnswerView::new(Mode::Human);
        assert_eq!(
            v.render(&Event::Progress {
                done: 64,
                total: 230
            }),
            "\r[prompt 64/230]"
        );
        assert_eq!(
            v.render(&Event::Progress {
                done: 230,
                total: 230
            }),
            "\r[prompt 230/230]"
        );
        let blank = " ".repeat("[prompt 230/230]".len());
        assert_eq!(
            v.render(&Event::Text("Hi\nthere".into())),
            format!("\r{blank}\rHi\r\nthere")
        );
        assert_eq!(v.render(&Event::Done(summary(StopReason::Eos))), "\r\n");
        assert_eq!(v.text, "Hi\nthere");
    }

    #[test]
    fn human_view_notes_why_an_answer_stopped() {
        let mut v = AnswerView::new(Mode::Human);
        v.interrupted = true;
        v.render(&Event::Text("a".into()));
        assert_eq!(
            v.render(&Event::Done(summary(StopReason::Cancelled))),
            "\r\n[stopped]\r\n"
        );
        let mut v = AnswerView::new(Mode::Human);
        assert!(v
            .render(&Event::Done(summary(StopReason::MaxTokens)))
            .contains("max_tokens"));
    }

    #[test]
    fn json_view_writes_one_json_line_per_token_and_a_done_line() {
        let mut v = AnswerView::new(Mode::Json);
        assert_eq!(v.render(&Event::Progress { done: 1, total: 2 }), "");
        assert_eq!(
            v.render(&Event::Text("a\"b\n".into())),
            "{\"token\":\"a\\\"b\\n\"}\r\n"
        );
        let done = v.render(&Event::Done(summary(StopReason::MaxTokens)));
        let value: serde_json::Value = serde_json::from_str(done.trim_end()).unwrap();
        assert_eq!(value["done"], true);
        assert_eq!(value["stop_reason"], "max_tokens");
        assert_eq!(value["usage"]["prompt_tokens"], 10);
        assert_eq!(value["usage"]["completion_tokens"], 2);
        assert_eq!(value["usage"]["cached_tokens"], 4);
        assert!(done.ends_with("}\r\n"));
    }
}
