//! The serving engine against the real model: jobs run in FIFO order, prefix reuse, cancellation
//! by flag and by a vanished client, the bounded queue, shutdown, and prompt checks.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::Duration;

use edgellm_hal::engine::{
    Engine, EngineHandle, Event, Job, Prompt, PromptError, SubmitError, Summary,
};
use edgellm_models::{GenerateParams, StopReason};
use edgellm_runtime::chat_template::ChatMessage;
use edgellm_runtime::sampler::SamplerConfig;

const WAIT: Duration = Duration::from_secs(120);

fn start(queue: usize) -> (Engine, EngineHandle) {
    common::engine_ctx(queue, 512)
}

fn greedy(max_tokens: usize) -> GenerateParams {
    GenerateParams {
        max_tokens,
        sampler: SamplerConfig::greedy(),
        ..Default::default()
    }
}

/// Submits `prompt` and returns the channel its events arrive on, plus its cancel flag.
fn submit(
    h: &EngineHandle,
    prompt: &Prompt,
    params: GenerateParams,
) -> Result<(Receiver<Event>, Arc<AtomicBool>), SubmitError> {
    let ids = h.prompt_ids(prompt).expect("prompt ids");
    let (tx, rx) = mpsc::channel();
    let cancel = Arc::new(AtomicBool::new(false));
    h.submit(Job {
        prompt: ids,
        params,
        sink: Box::new(move |ev| tx.send(ev).is_ok()),
        cancel: Arc::clone(&cancel),
    })?;
    Ok((rx, cancel))
}

/// Collects a job's events until Done/Failed: (text, summary or failure message).
fn finish(rx: &Receiver<Event>) -> (Vec<Event>, String, Result<Summary, String>) {
    let mut events = Vec::new();
    let mut text = String::new();
    loop {
        let ev = rx.recv_timeout(WAIT).expect("the engine went quiet");
        events.push(ev.clone());
        match ev {
            Event::Text(t) => text.push_str(&t),
            Event::Done(s) => return (events, text, Ok(s)),
            Event::Failed(m) => return (events, text, Err(m)),
            _ => {}
        }
    }
}

fn question(q: &str) -> Prompt {
    Prompt::Chat(vec![ChatMessage::new("user", q)])
}

#[test]
fn jobs_run_in_order_and_reuse_the_cached_prefix() {
    let (engine, h) = start(4);
    let p = question("What is the capital of France?");
    let (a, _) = submit(&h, &p, greedy(12)).unwrap();
    let (b, _) = submit(&h, &p, greedy(12)).unwrap();
    let (ev_a, text_a, sum_a) = finish(&a);
    let (_, text_b, sum_b) = finish(&b);
    let (sum_a, sum_b) = (sum_a.unwrap(), sum_b.unwrap());

    // Event order: Started, progress, text, Done.
    assert!(
        matches!(ev_a[0], Event::Started { prompt_tokens } if prompt_tokens == sum_a.prompt_tokens)
    );
    assert!(matches!(ev_a[1], Event::Progress { .. }));
    assert!(matches!(ev_a.last(), Some(Event::Done(_))));
    assert!(!text_a.is_empty());
    // Greedy twice: the same answer; the second evaluates only the last two prompt tokens.
    assert_eq!(text_a, text_b);
    assert_eq!(sum_a.reused_tokens, 0);
    assert_eq!(sum_b.reused_tokens, sum_b.prompt_tokens - 2);
    assert_eq!(
        h.stats.reused_tokens.load(Ordering::Relaxed) as usize,
        sum_b.reused_tokens
    );
    assert_eq!(h.stats.jobs_completed.load(Ordering::Relaxed), 2);
    assert_eq!(h.stats.queue_depth.load(Ordering::SeqCst), 0);
    h.shutdown();
    engine.join();
}

#[test]
fn cancel_flag_and_vanished_client_stop_a_job_and_the_next_runs() {
    let (engine, h) = start(4);
    let long = GenerateParams {
        ignore_eos: true,
        ..greedy(400)
    };
    // Cancelled by its flag after the first text.
    let (rx, cancel) = submit(&h, &question("Tell me a long story."), long.clone()).unwrap();
    loop {
        if let Event::Text(_) = rx.recv_timeout(WAIT).unwrap() {
            cancel.store(true, Ordering::SeqCst);
            break;
        }
    }
    let (_, _, sum) = finish(&rx);
    let sum = sum.unwrap();
    assert_eq!(sum.stop_reason, StopReason::Cancelled);
    assert!(sum.completion_tokens < 400);

    // A client that goes away: its receiver is dropped after the first text.
    let (rx, _) = submit(&h, &question("Tell me another story."), long).unwrap();
    loop {
        if let Event::Text(_) = rx.recv_timeout(WAIT).unwrap() {
            break;
        }
    }
    drop(rx);
    let (next, _) = submit(&h, &question("Say hi."), greedy(4)).unwrap();
    let (_, _, sum) = finish(&next);
    assert_eq!(sum.unwrap().completion_tokens, 4);
    assert_eq!(h.stats.jobs_cancelled.load(Ordering::Relaxed), 2);
    h.shutdown();
    engine.join();
}

#[test]
fn full_queue_refuses_and_shutdown_ends_running_and_queued_jobs() {
    let (engine, h) = start(1);
    let long = GenerateParams {
        ignore_eos: true,
        ..greedy(480)
    };
    let (running, _) = submit(&h, &question("Count to one hundred."), long.clone()).unwrap();
    // Wait until it runs, so the queue is empty again.
    loop {
        if let Event::Started { .. } = running.recv_timeout(WAIT).unwrap() {
            break;
        }
    }
    let (queued, _) = submit(&h, &question("Hi"), greedy(4)).unwrap();
    assert_eq!(h.stats.queue_depth.load(Ordering::SeqCst), 1);
    assert_eq!(
        submit(&h, &question("Hi"), greedy(4)).err(),
        Some(SubmitError::QueueFull(1))
    );

    h.shutdown();
    let (_, _, sum) = finish(&running);
    assert_eq!(sum.unwrap().stop_reason, StopReason::Cancelled);
    let (_, _, failed) = finish(&queued);
    assert!(failed.unwrap_err().contains("shutting down"));
    assert_eq!(
        submit(&h, &question("Hi"), greedy(4)).err(),
        Some(SubmitError::ShuttingDown)
    );
    engine.join();
}

#[test]
fn prompt_checks_name_the_problem() {
    let (engine, h) = start(1);
    assert!(matches!(
        h.prompt_ids(&Prompt::Text(String::new())),
        Err(PromptError::Empty)
    ));
    assert!(matches!(
        h.prompt_ids(&Prompt::Chat(Vec::new())),
        Err(PromptError::Empty)
    ));
    let long = "word ".repeat(600);
    match h.prompt_ids(&Prompt::Text(long)) {
        Err(e @ PromptError::TooLong { n_ctx: 512, .. }) => {
            assert!(e.to_string().contains("512"), "{e}")
        }
        other => panic!("expected TooLong, got {other:?}"),
    }
    assert!(matches!(
        h.prompt_ids(&Prompt::Ids(vec![1, 2, 999_999])),
        Err(PromptError::BadToken { id: 999_999, .. })
    ));
    // Tokenize / detokenize round trip, specials included.
    let ids = h.tokenize("<|im_start|>user", false, true).unwrap();
    assert_eq!(ids.len(), 2);
    assert_eq!(h.detokenize(&ids).unwrap(), "<|im_start|>user");
    h.shutdown();
    engine.join();
}
