//! `ember template`: the prompt the model's chat template makes of a conversation, exactly.

use super::ModelArgs;
use crate::load::{self, CliError, CliResult};
use ember_runtime::chat::{ChatTemplate, Message};
use ember_runtime::model::Model;
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// A JSON list of {"role", "content"} objects.
    #[arg(long)]
    messages: PathBuf,
    /// Leave out the assistant prompt at the end.
    #[arg(long)]
    no_generation_prompt: bool,
    /// Render this Jinja template instead of the model's own (with the model's BOS and EOS).
    #[arg(long, value_name = "FILE")]
    chat_template_file: Option<PathBuf>,
    /// The day the template's `strftime_now` sees, YYYY-MM-DD (default: today, UTC).
    #[arg(long, value_name = "YYYY-MM-DD")]
    date: Option<String>,
}

/// The model's chat template (built-in ChatML when the file has none).
pub fn chat_template(m: &Model<'_>) -> CliResult<ChatTemplate> {
    Ok(ChatTemplate::for_model(m)?)
}

/// Reads a conversation file.
pub fn read_messages(path: &PathBuf) -> CliResult<Vec<(String, String)>> {
    let raw =
        std::fs::read_to_string(path).map_err(|e| CliError(format!("{}: {e}", path.display())))?;
    let v: serde_json::Value = serde_json::from_str(&raw)
        .map_err(|e| CliError(format!("{}: not JSON: {e}", path.display())))?;
    let list = v.as_array().ok_or_else(|| {
        CliError(format!(
            "{}: expected a JSON list of messages",
            path.display()
        ))
    })?;
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let field = |k: &str| {
                m.get(k)
                    .and_then(|x| x.as_str())
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        CliError(format!(
                            "{}: message {i} has no string \"{k}\"",
                            path.display()
                        ))
                    })
            };
            Ok((field("role")?, field("content")?))
        })
        .collect()
}

pub fn main(a: Args) -> CliResult {
    let msgs = read_messages(&a.messages)?;
    let source = match &a.chat_template_file {
        Some(p) => Some(
            std::fs::read_to_string(p).map_err(|e| CliError(format!("{}: {e}", p.display())))?,
        ),
        None => None,
    };
    let kernels = load::kernels(a.model.kernels.as_deref())?;
    load::with_model(load::model_path(a.model.model), kernels, |m| {
        let mut t = match &source {
            Some(src) => ChatTemplate::for_model_with(m, Some(src))?,
            None => chat_template(m)?,
        };
        if let Some(d) = &a.date {
            t = t.with_date(d)?;
        }
        let messages: Vec<Message<'_>> = msgs
            .iter()
            .map(|(r, c)| Message {
                role: r,
                content: c,
            })
            .collect();
        let out = t.render(&messages, !a.no_generation_prompt)?;
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(out.as_bytes())?;
        stdout.flush()?;
        Ok(())
    })
}
