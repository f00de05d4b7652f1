//! `edgellm`: the one binary. Each subcommand lives in its own module; this file parses the
//! command line and sets up logging.
#![forbid(unsafe_code)]

mod bench;
mod cli_model;
mod inspect;
mod list;
mod perplexity;
mod plan;
mod progress;
mod pull;
mod quantize;
mod run;
mod serve;
mod tokenize;

use clap::{Parser, Subcommand};
use edgellm_runtime::alloc_count::CountingAllocator;

/// Counts heap allocations (one relaxed atomic add each) so `bench` can report them per token.
#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

#[derive(Parser)]
#[command(
    name = "edgellm",
    version,
    about = "Small language models on small boards"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Architecture, hyperparameters, tokenizer and tensors of a GGUF file.
    Inspect(inspect::Args),
    /// The memory a model will take at a context length, and whether it fits a board.
    Plan(plan::Args),
    /// Fetch a known model (see `list`) into the models folder, sha256-checked.
    Pull(pull::Args),
    /// The known models and which of them are in the models folder.
    List(list::Args),
    /// Convert a GGUF file to another weight type (F32, F16, Q8_0, Q4_0, Q4_1).
    Quantize(quantize::Args),
    /// Generate text from a prompt.
    Run(run::Args),
    /// Interactive chat on the terminal.
    Chat(run::ChatArgs),
    /// Show the token ids of a text.
    Tokenize(tokenize::Args),
    /// Perplexity of a text file (llama.cpp's method).
    Perplexity(perplexity::Args),
    /// Prompt-processing and generation speed, like llama-bench.
    Bench(bench::Args),
    /// Serve the model: serial console and Unix-socket OpenAI-compatible API.
    Serve(serve::Args),
}

fn main() {
    edgellm_runtime::malloc_arenas::limit_malloc_arenas();
    let cli = Cli::parse();
    // A service logs what it does (journald keeps it); the one-shot commands only warn.
    let default_level = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .format_timestamp(None)
        .init();
    let result = match cli.command {
        Command::Inspect(a) => inspect::main(a),
        Command::Plan(a) => plan::main(a),
        Command::Pull(a) => pull::main(a),
        Command::List(a) => list::main(a),
        Command::Quantize(a) => quantize::main(a),
        Command::Run(a) => run::main(a),
        Command::Chat(a) => run::chat_main(a),
        Command::Tokenize(a) => tokenize::main(a),
        Command::Perplexity(a) => perplexity::main(a),
        Command::Bench(a) => bench::main(a),
        Command::Serve(a) => serve::main(a),
    };
    if let Err(e) = result {
        // A reader that went away (`edgellm inspect MODEL | head`) is not an error.
        let broken_pipe = e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        });
        if broken_pipe {
            std::process::exit(0);
        }
        eprintln!("edgellm: error: {e:#}");
        std::process::exit(1);
    }
}
