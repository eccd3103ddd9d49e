//! `ember tokenize`: text → token ids, as one JSON array. Only the vocabulary is read, so a
//! vocabulary-only GGUF (llama.cpp's `ggml-vocab-*.gguf`) works.

use super::ModelArgs;
use crate::load::{self, CliError, CliResult};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Read the text from this file (bytes as they are).
    #[arg(short = 'f', long = "file", conflicts_with = "text")]
    file: Option<PathBuf>,
    /// Do not recognise special tokens written in the text.
    #[arg(long)]
    no_parse_special: bool,
    /// The text.
    text: Option<String>,
}

pub fn main(a: Args) -> CliResult {
    let text: Vec<u8> = match (&a.file, &a.text) {
        (Some(f), _) => std::fs::read(f).map_err(|e| CliError(format!("{}: {e}", f.display())))?,
        (None, Some(t)) => t.as_bytes().to_vec(),
        (None, None) => return Err(CliError("give a TEXT or -f FILE".into())),
    };
    load::with_tokenizer(load::model_path(a.model.model), |t| {
        let ids = t.encode_to_vec(&text, !a.no_parse_special, true)?;
        outln!(
            "{}",
            serde_json::to_string(&ids).map_err(|e| CliError(e.to_string()))?
        )?;
        Ok(())
    })
}
