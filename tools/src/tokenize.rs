//! `edgellm tokenize`: the token ids (and pieces) of a text.

use anyhow::Result;
use serde_json::json;

use crate::cli_model::ModelArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub opts: ModelArgs,
    /// The text to tokenize.
    pub text: String,
    /// Treat special-token texts (`<|im_start|>`) as plain text.
    #[arg(long)]
    pub no_parse_special: bool,
    /// Print `{"ids": [...]}`.
    #[arg(long)]
    pub json: bool,
}

pub fn main(args: Args) -> Result<()> {
    let (model, _) = args.opts.load()?;
    let tok = &model.tokenizer;
    let ids = tok.encode(&args.text, true, !args.no_parse_special)?;
    if args.json {
        println!("{}", json!({ "ids": ids }));
        return Ok(());
    }
    for id in &ids {
        println!(
            "{id:>6} {:?}",
            String::from_utf8_lossy(tok.piece_special(*id))
        );
    }
    println!("{} tokens", ids.len());
    Ok(())
}
