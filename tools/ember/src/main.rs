//! `ember`: run small GGUF language models on small machines.
//!
//! Every subcommand prints one clear line on stderr and exits non-zero on failure; stdout carries
//! only the command's result (token ids, generated text, the perplexity).

/// `println!` that returns an error instead of panicking when stdout fails (a full disk,
/// a closed file): `outln!(...)?` in a command.
macro_rules! outln {
    () => {
        $crate::load::write_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::load::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprintln!` that never panics: a message for a stderr that cannot take it is dropped (there
/// is nowhere else to report it).
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::load::write_err(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprint!` that never panics.
macro_rules! err {
    ($($arg:tt)*) => {
        $crate::load::write_err(format_args!($($arg)*))
    };
}

mod commands;
mod load;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "ember",
    version,
    about = "LLM inference for small devices",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a model's architecture, hyperparameters, tensors and vocabulary.
    Inspect(commands::inspect::Args),
    /// Print the token ids of a text as one JSON array.
    Tokenize(commands::tokenize::Args),
    /// Generate text from a prompt.
    Run(commands::run::Args),
    /// Chat with the model (its own chat template; the KV cache keeps the conversation).
    Chat(commands::chat::Args),
    /// Measure perplexity on a text file (llama.cpp's protocol).
    Perplexity(commands::perplexity::Args),
    /// Measure prompt (pp) and generation (tg) speed, as llama-bench defines them.
    Bench(commands::bench::Args),
    /// Re-encode a GGUF model's weights (q8_0, q4_0, q4_1, f16, f32).
    Quantize(commands::quantize::QuantizeArgs),
    /// Convert a Hugging Face Llama checkpoint to GGUF.
    Convert(commands::quantize::ConvertArgs),
    /// Print the prompt the model's chat template makes of a conversation.
    Template(commands::template::Args),
    /// Serve the model over HTTP: OpenAI-compatible API and a chat page.
    Serve(commands::serve::Args),
    /// Chat over a serial line (or stdin/stdout): the on-device console.
    #[cfg(target_os = "linux")]
    Serial(commands::serial::Args),
}

fn main() -> ExitCode {
    // Like other command-line tools, end quietly when the reader of our output goes away
    // (`ember run … | head`): Rust ignores SIGPIPE by default, which turns every later print into
    // a panic.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(a) => commands::inspect::main(a),
        Command::Tokenize(a) => commands::tokenize::main(a),
        Command::Run(a) => commands::run::main(a),
        Command::Chat(a) => commands::chat::main(a),
        Command::Perplexity(a) => commands::perplexity::main(a),
        Command::Bench(a) => commands::bench::main(a),
        Command::Template(a) => commands::template::main(a),
        Command::Quantize(a) => commands::quantize::quantize(a),
        Command::Convert(a) => commands::quantize::convert(a),
        Command::Serve(a) => commands::serve::main(a),
        #[cfg(target_os = "linux")]
        Command::Serial(a) => commands::serial::main(a),
    };
    // What is still buffered must reach its file too: a failure here is the command's failure.
    let result = result.and_then(|()| {
        use std::io::Write;
        std::io::stdout()
            .flush()
            .map_err(|e| load::CliError(format!("writing to stdout: {e}")))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            errln!("ember: error: {e}");
            ExitCode::FAILURE
        }
    }
}
