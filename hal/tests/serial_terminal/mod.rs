//! The serial console tests' terminal: an in-memory serial line (`MemPort`) between a console
//! `Session` on its own thread and a `Terminal` that types bytes and reads the screen, plus the
//! reference answers the console's output is compared with.
// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use edgellm_hal::engine::{EngineHandle, Event, Job, Prompt};
use edgellm_hal::openai;
use edgellm_hal::serial::{Session, SessionOptions};
use edgellm_hal::shutdown::Shutdown;
use edgellm_models::GenerateParams;
use serde_json::json;

pub const WAIT: Duration = Duration::from_secs(60);

/// The console's end of an in-memory serial line: reads time out like a real port's.
pub struct MemPort {
    from_terminal: Receiver<Vec<u8>>,
    unread: VecDeque<u8>,
    to_terminal: Sender<Vec<u8>>,
}

impl Read for MemPort {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.unread.is_empty() {
            match self.from_terminal.recv_timeout(Duration::from_millis(10)) {
                Ok(bytes) => self.unread.extend(bytes),
                Err(RecvTimeoutError::Timeout) => {
                    return Err(io::Error::new(ErrorKind::TimedOut, "nothing yet"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(io::Error::new(ErrorKind::BrokenPipe, "unplugged"))
                }
            }
        }
        let n = buf.len().min(self.unread.len());
        for (dst, src) in buf.iter_mut().zip(self.unread.drain(..n)) {
            *dst = src;
        }
        Ok(n)
    }
}

impl Write for MemPort {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.to_terminal
            .send(buf.to_vec())
            .map_err(|_| io::Error::new(ErrorKind::BrokenPipe, "terminal gone"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The person's end: types bytes, reads what the console shows.
pub struct Terminal {
    pub keys: Option<Sender<Vec<u8>>>,
    pub screen: Receiver<Vec<u8>>,
    /// Everything shown so far.
    pub seen: Vec<u8>,
    /// Where the next `expect` starts looking.
    pub mark: usize,
    pub session: Option<JoinHandle<io::Result<()>>>,
    pub shutdown: Shutdown,
}

impl Terminal {
    pub fn connect(engine: &EngineHandle, line_buffer: usize) -> Terminal {
        let (keys, from_terminal) = mpsc::channel();
        let (to_terminal, screen) = mpsc::channel();
        let shutdown = Shutdown::new();
        let mut session = Session::new(
            engine.clone(),
            shutdown.clone(),
            &SessionOptions {
                line_buffer,
                board: Some("testboard".into()),
            },
        );
        let session = std::thread::spawn(move || {
            let mut port = MemPort {
                from_terminal,
                unread: VecDeque::new(),
                to_terminal,
            };
            session.run(&mut port)
        });
        Terminal {
            keys: Some(keys),
            screen,
            seen: Vec::new(),
            mark: 0,
            session: Some(session),
            shutdown,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.keys
            .as_ref()
            .expect("connected")
            .send(bytes.to_vec())
            .expect("the session ended");
    }

    /// Waits until the screen shows `pattern` after the mark; returns what came from the mark
    /// to the end of the pattern, and moves the mark past it.
    pub fn expect(&mut self, pattern: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(i) = find(&self.seen[self.mark..], pattern.as_bytes()) {
                let end = self.mark + i + pattern.len();
                let out = String::from_utf8(self.seen[self.mark..end].to_vec())
                    .expect("the console wrote non-UTF-8");
                self.mark = end;
                return out;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.screen.recv_timeout(left) {
                Ok(bytes) => self.seen.extend(bytes),
                Err(_) => panic!(
                    "no {pattern:?} on the console; after the mark it shows:\n{:?}",
                    String::from_utf8_lossy(&self.seen[self.mark..])
                ),
            }
        }
    }

    /// Types a line (CR) and returns everything up to the next prompt.
    pub fn line(&mut self, text: &str) -> String {
        self.send(format!("{text}\r").as_bytes());
        self.expect("\r\n> ")
    }

    /// Waits until `n` bytes were shown after the mark.
    pub fn wait_for_bytes(&mut self, n: usize) {
        let deadline = Instant::now() + WAIT;
        while self.seen.len() < self.mark + n {
            let left = deadline.saturating_duration_since(Instant::now());
            let bytes = self
                .screen
                .recv_timeout(left)
                .expect("the console went quiet");
            self.seen.extend(bytes);
        }
    }

    /// Everything shown after the mark within `period`.
    pub fn quiet_for(&mut self, period: Duration) -> String {
        let end = Instant::now() + period;
        while let Ok(bytes) = self
            .screen
            .recv_timeout(end.saturating_duration_since(Instant::now()))
        {
            self.seen.extend(bytes);
        }
        let out = String::from_utf8_lossy(&self.seen[self.mark..]).into_owned();
        self.mark = self.seen.len();
        out
    }

    pub fn finish(&mut self) -> io::Result<()> {
        self.session
            .take()
            .expect("running")
            .join()
            .expect("the session panicked")
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The text of an answer as the console showed it after the echoed `question`: without the
/// prompt progress indicator, the closing note and the next prompt, CRLF back to LF.
pub fn answer_text(shown: &str, question: &str) -> String {
    let mut body = shown
        .split_once(&format!("{question}\r\n"))
        .map_or(shown, |(_, b)| b);
    body = body.strip_suffix("\r\n> ").unwrap_or(body);
    if body.starts_with("\r[prompt ") {
        // "\r[prompt 32/40]\r[prompt 40/40]\r<blanks>\r": the last indicator ends at "]\r ".
        let cleared = body
            .find("]\r ")
            .expect("the progress indicator is cleared");
        body = body[cleared + 2..].trim_start_matches(' ');
        body = body.strip_prefix('\r').expect("blanks end with CR");
    }
    // A closing note ("[max_tokens reached; ...]") is not part of the answer.
    if let Some(i) = body.rfind("\r\n[") {
        if body.ends_with(']') {
            body = &body[..i];
        }
    }
    body.replace("\r\n", "\n").trim_end().to_string()
}

/// The text a job gives when run straight on the engine.
pub fn reference(engine: &EngineHandle, prompt: &Prompt, params: GenerateParams) -> String {
    let ids = engine.prompt_ids(prompt).expect("prompt ids");
    let (tx, rx) = mpsc::channel();
    engine
        .submit(Job {
            prompt: ids,
            params,
            sink: Box::new(move |ev| tx.send(ev).is_ok()),
            cancel: Arc::new(AtomicBool::new(false)),
        })
        .expect("submit");
    let mut text = String::new();
    loop {
        match rx.recv_timeout(WAIT).expect("engine went quiet") {
            Event::Text(t) => text.push_str(&t),
            Event::Done(_) => return text,
            Event::Failed(m) => panic!("reference job failed: {m}"),
            _ => {}
        }
    }
}

/// Greedy parameters for `max_tokens`, as the console builds them for a prompt of
/// `prompt_tokens` in a context of `n_ctx`.
pub fn greedy(max_tokens: usize, n_ctx: usize, prompt_tokens: usize) -> GenerateParams {
    let mut s = openai::parse_completion_request(
        json!({"prompt": "x", "temperature": 0, "max_tokens": max_tokens})
            .to_string()
            .as_bytes(),
    )
    .unwrap()
    .sampling;
    s.seed = Some(0);
    s.generate_params(prompt_tokens, n_ctx, 0)
}
