//! The server-sent-events body of a streamed completion: turns the job's engine events into
//! `data: {chunk}\n\n` frames in OpenAI's shapes, ends with `data: [DONE]`, and sends a
//! `: keep-alive` comment after every stretch of silence (queue wait, long prompt) so clients
//! do not time out.
//!
//! A beam job's answers are only known when the search ends: its stream is the role chunk,
//! keep-alive comments while the beams run, then one chunk per choice with that choice's whole
//! text, one finish chunk per choice, the usage and `[DONE]`.
//!
//! Dropping the body (the client went away) drops the event receiver and raises the job's
//! cancel flag, so the engine stops at its next token or prompt batch.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use super::metrics::ServerMetrics;
use super::routes::{RequestLog, SubmittedJob};
use crate::engine::{Event, Summary};
use crate::openai::{stream_chunk, ChunkPart, ResponseMeta, StreamKind};
use edgellm_models::StopReason;

const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";
const DONE: &[u8] = b"data: [DONE]\n\n";

pub struct SseBody {
    job: SubmittedJob,
    kind: StreamKind,
    meta: ResponseMeta,
    include_usage: bool,
    keep_alive_every: Duration,
    // Fires after `keep_alive_every` without a frame.
    keep_alive: Pin<Box<Sleep>>,
    finished: bool,
    /// How each choice of a beam job ended (its finish chunks go out with `Done`).
    beam_finishes: Vec<StopReason>,
    log: RequestLog,
    metrics: Arc<ServerMetrics>,
}

impl SseBody {
    pub fn new(
        job: SubmittedJob,
        kind: StreamKind,
        meta: ResponseMeta,
        include_usage: bool,
        keep_alive_every: Duration,
        log: RequestLog,
        metrics: Arc<ServerMetrics>,
    ) -> SseBody {
        SseBody {
            job,
            kind,
            meta,
            include_usage,
            keep_alive_every,
            keep_alive: Box::pin(tokio::time::sleep(keep_alive_every)),
            finished: false,
            beam_finishes: Vec::new(),
            log,
            metrics,
        }
    }

    fn data(&self, part: &ChunkPart<'_>, out: &mut Vec<u8>) {
        let chunk = stream_chunk(self.kind, &self.meta, part, self.include_usage);
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(chunk.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
    }

    /// The bytes an event becomes (none for progress reports).
    fn frame_for(&mut self, ev: Event) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        match ev {
            Event::Started { .. } => {
                if self.kind == StreamKind::Chat {
                    self.data(&ChunkPart::Role, &mut out);
                }
            }
            Event::Progress { .. } => {}
            Event::Text(t) => self.data(&ChunkPart::Content(&t), &mut out),
            Event::Beams(choices) => {
                for (b, index) in choices.iter().zip(0..) {
                    let part = ChunkPart::BeamContent {
                        index,
                        text: &b.text,
                        beam_score: b.score,
                    };
                    self.data(&part, &mut out);
                }
                self.beam_finishes = choices.iter().map(|b| b.stop_reason).collect();
            }
            Event::Done(s) => {
                if self.beam_finishes.is_empty() {
                    self.data(&ChunkPart::Finish(s.stop_reason), &mut out);
                }
                for (reason, index) in std::mem::take(&mut self.beam_finishes).into_iter().zip(0..)
                {
                    self.data(&ChunkPart::BeamFinish { index, reason }, &mut out);
                }
                if self.include_usage {
                    self.data(&ChunkPart::Usage(&s), &mut out);
                }
                out.extend_from_slice(DONE);
                self.finish(Some(&s));
            }
            Event::Failed(message) => {
                self.metrics
                    .generation_errors
                    .fetch_add(1, Ordering::Relaxed);
                let e = super::errors::generation_failed(message);
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(e.to_json().as_bytes());
                out.extend_from_slice(b"\n\n");
                out.extend_from_slice(DONE);
                log::warn!("{}: generation failed: {}", self.log.line(200), e.message);
                self.finished = true;
            }
        }
        (!out.is_empty()).then_some(out)
    }

    fn finish(&mut self, s: Option<&Summary>) {
        self.finished = true;
        if let Some(s) = s {
            log::info!("{}", self.log.with_summary(200, s));
        }
    }

    fn reset_keep_alive(&mut self) {
        let at = tokio::time::Instant::from_std(Instant::now() + self.keep_alive_every);
        self.keep_alive.as_mut().reset(at);
    }
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        loop {
            match this.job.rx.poll_recv(cx) {
                Poll::Ready(Some(ev)) => {
                    if let Some(bytes) = this.frame_for(ev) {
                        this.reset_keep_alive();
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(bytes)))));
                    }
                }
                Poll::Ready(None) => {
                    // The engine dropped the job without a last event: end the stream.
                    this.finished = true;
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(DONE)))));
                }
                Poll::Pending => break,
            }
        }
        if this.keep_alive.as_mut().poll(cx).is_ready() {
            this.reset_keep_alive();
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(KEEP_ALIVE)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.finished
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for SseBody {
    fn drop(&mut self) {
        if !self.finished {
            log::info!(
                "{}: client went away mid-stream; generation cancelled",
                self.log.line(200)
            );
        }
    }
}
