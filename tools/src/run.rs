//! `edgellm run` (one prompt, streamed) and `edgellm chat` (a conversation on the terminal,
//! kept in the KV cache between turns).

use std::io::{BufRead, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use edgellm_models::{
    Beam, BeamParams, BeamSearch, ChatFormat, GenerateParams, Generator, Model, StateOptions,
    TokenSink,
};
use edgellm_runtime::chat_template::ChatMessage;
use edgellm_runtime::sampler::SamplerConfig;
use serde_json::json;

use crate::cli_model::ModelArgs;

/// Sampling and stopping flags shared by `run` and `chat`.
#[derive(clap::Args, Clone, Debug)]
pub struct SampleArgs {
    /// Tokens to generate at most.
    #[arg(short = 'n', long = "n-predict", default_value_t = 256)]
    pub n_predict: usize,
    /// Temperature; 0 is greedy (argmax).
    #[arg(long, default_value_t = 0.8)]
    pub temp: f32,
    /// Top-k; 0 turns it off.
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Top-p (nucleus), in (0, 1]; 1 turns it off.
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Min-p, in [0, 1]; 0 turns it off.
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    /// Repetition penalty over the last `--repeat-last-n` tokens; 1 turns it off.
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    #[arg(long, default_value_t = 64)]
    pub repeat_last_n: usize,
    #[arg(long, default_value_t = 0.0)]
    pub frequency_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    pub presence_penalty: f32,
    /// Sampling seed.
    #[arg(long, default_value_t = 0xFFFF_FFFF)]
    pub seed: u64,
    /// Stop string (repeatable); never printed.
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    /// Keep generating past end-of-generation tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    /// When the context fills, keep the first N tokens and drop the older half of the rest
    /// instead of stopping.
    #[arg(long = "context-shift", value_name = "N_KEEP", num_args = 0..=1, default_missing_value = "0")]
    pub context_shift: Option<usize>,
    /// Cut a prompt longer than the context to its last tokens instead of failing.
    #[arg(long)]
    pub truncate_prompt: bool,
}

impl SampleArgs {
    pub fn params(&self) -> Result<GenerateParams> {
        let sampler = SamplerConfig {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            seed: self.seed,
        };
        sampler.validate()?;
        Ok(GenerateParams {
            max_tokens: self.n_predict,
            sampler,
            stop: self.stop.clone(),
            ignore_eos: self.ignore_eos,
            context_shift: self.context_shift,
        })
    }
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub opts: ModelArgs,
    #[command(flatten)]
    pub sample: SampleArgs,
    /// The prompt.
    #[arg(short = 'p', long)]
    pub prompt: String,
    /// Wrap the prompt in the model's chat template as a user message.
    #[arg(long)]
    pub chat: bool,
    /// System message (with --chat).
    #[arg(long)]
    pub system: Option<String>,
    /// Treat special-token texts in the prompt as plain text.
    #[arg(long)]
    pub no_parse_special: bool,
    /// Print one JSON object at the end instead of streaming.
    #[arg(long)]
    pub json: bool,
    /// Beam search with N beams (one KV cache each) instead of sampling: prints the beam with
    /// the best score (with --json, every beam). Deterministic; the sampling flags do not apply.
    #[arg(long, value_name = "N")]
    pub beams: Option<usize>,
    /// Beam search: beams are ranked by logprob_sum / length^A (0 ranks by the plain sum;
    /// above 0 favours longer answers).
    #[arg(long, value_name = "A", default_value_t = 1.0)]
    pub length_penalty: f32,
}

#[derive(clap::Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub opts: ModelArgs,
    #[command(flatten)]
    pub sample: SampleArgs,
    /// System message.
    #[arg(long)]
    pub system: Option<String>,
}

/// Streams text to stdout; stops when `stop` is raised (Ctrl-C in chat).
struct StdoutSink {
    echo: bool,
    progress: bool,
    stop: Option<Arc<AtomicBool>>,
    text: String,
}

impl TokenSink for StdoutSink {
    fn on_text(&mut self, text: &str) -> bool {
        self.text.push_str(text);
        if self.echo {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        }
        !self.cancelled()
    }
    fn on_token(&mut self, _id: u32) -> bool {
        !self.cancelled()
    }
    fn on_prompt_progress(&mut self, done: usize, total: usize) -> bool {
        if self.progress {
            eprint!("\rprompt: {done}/{total} tokens");
            if done == total {
                eprint!("\r\x1b[K");
            }
        }
        !self.cancelled()
    }
}

impl StdoutSink {
    fn cancelled(&self) -> bool {
        self.stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
    }
}

pub fn main(args: Args) -> Result<()> {
    let params = args.sample.params()?;
    let (model, board) = args.opts.load()?;
    let mut state = args.opts.new_state(&model, board.as_ref(), false)?;
    let tok = &model.tokenizer;
    let mut ids = if args.chat {
        let mut messages = Vec::new();
        if let Some(s) = &args.system {
            messages.push(ChatMessage {
                role: "system".into(),
                content: s.clone(),
            });
        }
        messages.push(ChatMessage {
            role: "user".into(),
            content: args.prompt.clone(),
        });
        ChatFormat::for_model(&model)?.prompt_ids(&model.tokenizer, &messages)?
    } else {
        tok.encode(&args.prompt, true, !args.no_parse_special)?
    };
    if ids.is_empty() {
        bail!("the prompt is empty");
    }
    let n_ctx = state.n_ctx();
    if ids.len() >= n_ctx {
        if !args.sample.truncate_prompt {
            bail!(
                "the prompt is {} tokens, the context holds {n_ctx} (raise --ctx, or pass --truncate-prompt to keep its last {} tokens)",
                ids.len(),
                n_ctx - 1
            );
        }
        let cut = ids.len() - (n_ctx - 1);
        ids.drain(..cut);
        log::warn!("prompt truncated: dropped its first {cut} tokens");
    }
    if let Some(n_beams) = args.beams {
        let opts = *state.options();
        drop(state);
        return beam_main(&args, &model, opts, &ids, n_beams);
    }
    let mut gen = Generator::new(&model)?;
    let mut sink = StdoutSink {
        echo: !args.json,
        progress: !args.json && std::io::stderr().is_terminal(),
        stop: None,
        text: String::new(),
    };
    let outcome = gen.generate(&model, &mut state, &ids, &params, &mut sink)?;
    let reason = outcome.stop_reason.map_or("unknown", |r| r.name());
    if args.json {
        let out = json!({
            "prompt_ids": ids,
            "generated_ids": outcome.generated,
            "text": sink.text,
            "stop_reason": reason,
            "timings": {
                "load_ms": model.load_ms,
                "prompt_tokens_per_s": outcome.prompt_tokens_per_s(),
                "gen_tokens_per_s": outcome.gen_tokens_per_s(),
                "prompt_ms": outcome.prompt_ms,
                "gen_ms": outcome.gen_ms,
            },
            "kernels": model.kernels().path().name(),
            "threads": model.n_threads(),
        });
        println!("{out}");
    } else {
        println!();
        eprintln!(
            "[{} prompt tokens at {:.1} tok/s, {} generated at {:.1} tok/s, stop: {reason}]",
            outcome.prompt_evaluated,
            outcome.prompt_tokens_per_s(),
            outcome.generated.len(),
            outcome.gen_tokens_per_s()
        );
    }
    Ok(())
}

/// `run --beams N`: a beam search over `ids`, printed when it ends (the best beam is only
/// known then, so nothing streams).
fn beam_main(
    args: &Args,
    model: &Model,
    opts: StateOptions,
    ids: &[u32],
    n_beams: usize,
) -> Result<()> {
    if !args.sample.stop.is_empty() {
        bail!("--stop does not apply to beam search (--beams)");
    }
    if args.sample.context_shift.is_some() {
        bail!("--context-shift does not apply to beam search (--beams)");
    }
    let mut search = BeamSearch::new(model, opts, n_beams)?;
    log::info!(
        "beam search: {n_beams} beams, {:.1} MiB of state",
        search.heap_bytes() as f64 / (1024.0 * 1024.0)
    );
    let params = BeamParams {
        max_tokens: args.sample.n_predict,
        length_penalty: args.length_penalty,
        ignore_eos: args.sample.ignore_eos,
    };
    let progress = !args.json && std::io::stderr().is_terminal();
    let outcome = search.run(model, ids, &params, &mut |n| {
        if progress {
            eprint!("\rbeam search: {n} tokens");
        }
        true
    })?;
    if progress {
        eprint!("\r\x1b[K");
    }
    let text = |b: &Beam| b.text(&model.tokenizer);
    let best = outcome.best();
    let best_text = best.map(text).unwrap_or_default();
    let reason = outcome.stop_reason.name();
    if args.json {
        let beams: Vec<_> = outcome
            .beams
            .iter()
            .map(|b| {
                json!({
                    "tokens": b.tokens,
                    "text": text(b),
                    "logprob_sum": b.logprob_sum,
                    "score": b.score,
                    "finished": b.finished,
                })
            })
            .collect();
        let out = json!({
            "prompt_ids": ids,
            "generated_ids": best.map_or(&[][..], |b| &b.tokens[..]),
            "text": best_text,
            "stop_reason": reason,
            "beams": beams,
            "length_penalty": args.length_penalty,
            "timings": {
                "load_ms": model.load_ms,
                "prompt_ms": outcome.prompt_ms,
                "gen_ms": outcome.gen_ms,
                "steps": outcome.steps,
                "ms_per_step": outcome.ms_per_step(),
            },
            "kernels": model.kernels().path().name(),
            "threads": model.n_threads(),
        });
        println!("{out}");
    } else {
        println!("{best_text}");
        eprintln!(
            "[{} prompt tokens in {:.0} ms, {n_beams} beams x {} steps at {:.1} ms/step, best score {:.4}, stop: {reason}]",
            ids.len(),
            outcome.prompt_ms,
            outcome.steps,
            outcome.ms_per_step(),
            best.map_or(f64::NAN, |b| b.score),
        );
    }
    Ok(())
}

pub fn chat_main(args: ChatArgs) -> Result<()> {
    let params = args.sample.params()?;
    let (model, board) = args.opts.load()?;
    let mut state = args.opts.new_state(&model, board.as_ref(), false)?;
    let format = ChatFormat::for_model(&model)?;
    let mut gen = Generator::new(&model)?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("installing the Ctrl-C handler")?;
    }
    let mut system = args.system.clone();
    let mut messages: Vec<ChatMessage> = Vec::new();
    let reset = |messages: &mut Vec<ChatMessage>, system: &Option<String>| {
        messages.clear();
        if let Some(s) = system {
            messages.push(ChatMessage {
                role: "system".into(),
                content: s.clone(),
            });
        }
    };
    reset(&mut messages, &system);
    eprintln!("edgellm chat: {} ({} tokens of context). /reset, /system TEXT, /exit; Ctrl-C stops an answer.", model.name, state.n_ctx());
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        eprint!("> ");
        line.clear();
        stop.store(false, Ordering::SeqCst);
        match stdin.lock().read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
        let input = line.trim_end_matches(['\r', '\n']);
        if input.trim().is_empty() {
            continue;
        }
        if input == "/exit" || input == "/quit" {
            break;
        }
        if input == "/reset" {
            reset(&mut messages, &system);
            state.reset();
            eprintln!("(conversation cleared)");
            continue;
        }
        if let Some(s) = input.strip_prefix("/system") {
            let s = s.trim();
            system = if s.is_empty() {
                None
            } else {
                Some(s.to_string())
            };
            reset(&mut messages, &system);
            state.reset();
            eprintln!("(system message set; conversation cleared)");
            continue;
        }
        messages.push(ChatMessage {
            role: "user".into(),
            content: input.to_string(),
        });
        let ids = format.prompt_ids(&model.tokenizer, &messages)?;
        if ids.len() >= state.n_ctx() {
            messages.pop();
            eprintln!("(that would need {} tokens of context, more than the {} there are: /reset or a shorter message)", ids.len(), state.n_ctx());
            continue;
        }
        let mut sink = StdoutSink {
            echo: true,
            progress: std::io::stderr().is_terminal(),
            stop: Some(Arc::clone(&stop)),
            text: String::new(),
        };
        let outcome = gen.generate(&model, &mut state, &ids, &params, &mut sink)?;
        println!();
        if outcome.stop_reason == Some(edgellm_models::StopReason::Cancelled) {
            eprintln!("(stopped)");
        }
        messages.push(ChatMessage {
            role: "assistant".into(),
            content: sink.text,
        });
    }
    Ok(())
}
