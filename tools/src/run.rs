//! `edgellm run` (one prompt, streamed) and `edgellm chat` (a conversation on the terminal,
//! kept in the KV cache between turns).

use std::io::{BufRead, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use edgellm_models::{GenerateParams, Generator, Model, TokenSink};
use edgellm_runtime::chat_template::{ChatMessage, ChatTemplate};
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

/// The model's chat template, or ChatML when it has none.
pub fn chat_template(model: &Model) -> Result<ChatTemplate> {
    match &model.chat_template {
        Some(src) => ChatTemplate::new(src).context("compiling the model's chat template"),
        None => Ok(ChatTemplate::chatml()),
    }
}

/// Renders `messages` with the generation prompt and tokenizes the result.
pub fn chat_prompt_ids(
    model: &Model,
    tmpl: &ChatTemplate,
    messages: &[ChatMessage],
) -> Result<Vec<u32>> {
    let tok = &model.tokenizer;
    let bos = tok
        .bos()
        .map(|b| String::from_utf8_lossy(tok.piece_special(b)).into_owned())
        .unwrap_or_default();
    let eos = tok
        .eos()
        .map(|b| String::from_utf8_lossy(tok.piece_special(b)).into_owned())
        .unwrap_or_default();
    let text = tmpl.render(messages, true, &bos, &eos)?;
    // The template writes the BOS text itself when the model wants one.
    let add_bos = tok.add_bos() && !(bos.is_empty() || text.starts_with(&bos));
    let mut ids = Vec::new();
    if add_bos {
        if let Some(b) = tok.bos() {
            ids.push(b);
        }
    }
    ids.extend(tok.encode(&text, false, true)?);
    Ok(ids)
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
        chat_prompt_ids(&model, &chat_template(&model)?, &messages)?
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

pub fn chat_main(args: ChatArgs) -> Result<()> {
    let params = args.sample.params()?;
    let (model, board) = args.opts.load()?;
    let mut state = args.opts.new_state(&model, board.as_ref(), false)?;
    let tmpl = chat_template(&model)?;
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
        let ids = chat_prompt_ids(&model, &tmpl, &messages)?;
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
