//! `ember chat`: a conversation at the terminal.
//!
//! Each turn renders the whole conversation with the model's chat template, but feeds the model
//! only the tokens the KV cache does not already hold (the longest common prefix stays). On a
//! terminal the prompt has line editing and history; otherwise each input line is one turn, so
//! the REPL can be scripted. Ctrl-C stops the reply, not the program. With `--tools`, a reply
//! is a tool call (printed, its result read as the next line and sent back as a `tool`
//! message) or an answer.

use super::{ContextArgs, ModelArgs, SamplingArgs};
use crate::load::{CliError, CliResult};
use ember_runtime::chat::tools::{tools_from_openai, ToolChoice, ToolReply, ToolSet};
use ember_runtime::session::{GenOptions, StopReason};
use std::io::{BufRead, IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// A system message to start the conversation with.
    #[arg(long)]
    system: Option<String>,
    /// Most tokens per reply.
    #[arg(short = 'n', long = "n-predict", default_value_t = 512)]
    n_predict: usize,
    #[command(flatten)]
    context: ContextArgs,
    #[command(flatten)]
    grammar: super::GrammarArgs,
    /// Tools the model may call: a JSON file of OpenAI's tool list
    /// (`[{"type": "function", "function": {"name", "description", "parameters"}}]`). A call is
    /// printed as `[tool call] NAME ARGUMENTS`; the next input line is its result.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["grammar", "json", "json_schema"])]
    tools: Option<std::path::PathBuf>,
    /// With --tools: `auto` (a call or an answer, as the model decides) or `required`.
    #[arg(long = "tool-choice", default_value = "auto", value_parser = ["auto", "required"], requires = "tools")]
    tool_choice: String,
}

const HELP: &str = "commands: /reset (new conversation), /system TEXT (set the system message and reset), /help, /quit";

/// Input lines: rustyline on a terminal, plain lines otherwise.
enum Input {
    Terminal(rustyline::DefaultEditor),
    Piped(std::io::StdinLock<'static>),
}

impl Input {
    /// The next line; `None` at end of input. Ctrl-C at the prompt gives an empty line.
    fn line(&mut self) -> CliResult<Option<String>> {
        match self {
            Input::Terminal(ed) => match ed.readline("> ") {
                Ok(l) => {
                    let _ = ed.add_history_entry(l.as_str());
                    Ok(Some(l))
                }
                Err(rustyline::error::ReadlineError::Interrupted) => Ok(Some(String::new())),
                Err(rustyline::error::ReadlineError::Eof) => Ok(None),
                Err(e) => Err(CliError(format!("reading input: {e}"))),
            },
            Input::Piped(r) => {
                let mut buf = Vec::new();
                if r.read_until(b'\n', &mut buf)? == 0 {
                    return Ok(None);
                }
                let l = String::from_utf8_lossy(&buf);
                Ok(Some(l.trim_end_matches(['\n', '\r']).to_string()))
            }
        }
    }
}

pub fn main(a: Args) -> CliResult {
    let sampler_cfg = a.sampling.config();
    sampler_cfg.validate()?;
    let grammar = a.grammar.source_without_beam(a.sampling.beam)?;
    let terminal = std::io::stdin().is_terminal();
    let mut input = if terminal {
        Input::Terminal(
            rustyline::DefaultEditor::new().map_err(|e| CliError(format!("terminal: {e}")))?,
        )
    } else {
        Input::Piped(std::io::stdin().lock())
    };
    let sessions = super::Sessions::Beam(a.sampling.beam as usize, a.n_predict);
    let opened = super::Opened::open(&a.model, &a.context, sessions)?;
    let (model, sc, pool) = (opened.loaded.model(), opened.sc, &opened.pool);
    let mut engine = opened.engine(sampler_cfg, grammar.as_deref())?;
    engine.conversation().set_system(a.system.as_deref());
    let mut follow_up = None;
    if let Some(path) = &a.tools {
        if a.sampling.beam > 0 {
            return Err(CliError("--tools is not available with --beam".into()));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError(format!("{}: {e}", path.display())))?;
        let list: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| CliError(format!("{}: not JSON: {e}", path.display())))?;
        let tools =
            tools_from_openai(&list).map_err(|e| CliError(format!("{}: {e}", path.display())))?;
        let choice = if a.tool_choice == "required" {
            ToolChoice::Required
        } else {
            ToolChoice::Auto
        };
        let template = engine.conversation().template();
        let set = ToolSet::for_template(tools.clone(), choice, template)
            .map_err(|e| CliError(format!("{}: {e}", path.display())))?;
        // After a tool's result the model may answer, also when a call was required.
        follow_up = Some(
            ToolSet::for_template(tools, ToolChoice::Auto, template)
                .map_err(|e| CliError(format!("{}: {e}", path.display())))?,
        );
        if terminal {
            errln!(
                "ember chat: {} tools, {} format",
                set.tools().len(),
                set.format().name()
            );
        }
        engine.set_tools(Some(set))?;
    }
    // Ctrl-C stops the reply (also a long prompt, between layers), not the program.
    let stop_reply = engine.cancel_flag();
    {
        let flag = Arc::clone(&stop_reply);
        ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
            .map_err(|e| CliError(format!("installing the Ctrl-C handler: {e}")))?;
    }
    let stops: Vec<&str> = a.sampling.stop.iter().map(String::as_str).collect();
    if terminal {
        errln!(
            "ember chat: {} ({HELP})",
            if engine.conversation().template().is_model_template() {
                "the model's chat template"
            } else {
                "ChatML"
            }
        );
    }
    let mut out = std::io::stdout();
    while let Some(line) = input.line()? {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(cmd) = line.strip_prefix('/') {
            let (name, arg) = cmd.split_once(' ').unwrap_or((cmd, ""));
            match name {
                "quit" | "exit" => break,
                "help" => errln!("{HELP}"),
                "reset" => {
                    engine.reset();
                    errln!("(new conversation)");
                }
                "system" => {
                    let sys = arg.trim();
                    engine
                        .conversation()
                        .set_system((!sys.is_empty()).then_some(sys));
                    engine.reset();
                    errln!("(system message set; new conversation)");
                }
                _ => errln!("unknown command /{name}; {HELP}"),
            }
            continue;
        }
        if a.sampling.beam > 0 {
            // Beam search reads the whole conversation into its own sessions.
            let ids = engine
                .conversation()
                .user_turn_full(&model.tokenizer, line)?;
            let (reply, _) = super::beam_text(
                model,
                pool,
                &sc,
                a.sampling.beam as usize,
                &ids,
                a.n_predict,
                false,
                &a.sampling.stop,
            )?;
            outln!("{reply}")?;
            engine.conversation().push_reply(&reply);
            continue;
        }
        // Only the part of the conversation the cache does not hold is fed; past the context
        // the ring cache keeps the conversation going. Each reply is one sentence of the
        // grammar, if there is one.
        let opts = GenOptions {
            max_tokens: a.n_predict,
            ignore_eos: false,
            stop: &stops,
        };
        if engine.tools().is_some() {
            let follow = follow_up.as_ref();
            tool_turns(
                &mut engine,
                &mut input,
                line,
                &opts,
                &stop_reply,
                terminal,
                follow,
            )?;
            continue;
        }
        let mut write_error = None;
        let r = engine.chat(line, &opts, &mut || {}, &mut |piece| {
            if let Err(e) = out.write_all(piece.as_bytes()).and_then(|_| out.flush()) {
                write_error = Some(e);
                return false;
            }
            !stop_reply.load(Ordering::SeqCst)
        });
        if let Some(e) = write_error {
            return Err(CliError(format!("writing to stdout: {e}")));
        }
        match r {
            Ok(o) => {
                if o.reason == StopReason::Stopped {
                    err!(" (stopped)");
                }
                outln!()?;
            }
            Err(ember_runtime::Error::Cancelled) => {
                // Stopped while reading the message: it is dropped, the conversation goes on.
                errln!("(stopped before the reply; the message was dropped)");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// One user message with tools: each reply that is a call is printed (`[tool call] NAME
/// ARGUMENTS`), its result read as the next input line and sent back, until the model answers
/// (printed as text) or the input ends. Replies to a result keep to `follow_up`'s grammar (a
/// call or an answer).
fn tool_turns(
    engine: &mut ember_runtime::engine::Engine,
    input: &mut Input,
    line: &str,
    opts: &GenOptions<'_>,
    stop_reply: &Arc<std::sync::atomic::AtomicBool>,
    terminal: bool,
    follow_up: Option<&ToolSet>,
) -> CliResult {
    let first = engine.tools().map(|t| t.grammar().to_string());
    let r = (|| -> CliResult {
        let (mut role, mut text) = ("user", line.to_string());
        loop {
            let mut reply = String::new();
            let r = engine.chat_as(role, &text, opts, &mut || {}, &mut |piece| {
                reply.push_str(piece);
                !stop_reply.load(Ordering::SeqCst)
            });
            match r {
                Ok(o) if o.reason == StopReason::Stopped => {
                    outln!("{reply}")?;
                    errln!("(stopped)");
                    return Ok(());
                }
                Ok(_) => {}
                Err(ember_runtime::Error::Cancelled) => {
                    errln!("(stopped before the reply; the message was dropped)");
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
            let parsed = match engine.tools() {
                Some(t) => t.parse_reply(&reply),
                None => ToolReply::Text(reply),
            };
            match parsed {
                ToolReply::Text(t) => {
                    outln!("{t}")?;
                    return Ok(());
                }
                ToolReply::Call { name, arguments } => {
                    outln!("[tool call] {name} {arguments}")?;
                    if terminal {
                        errln!("(type the tool's result)");
                    }
                    let Some(result) = input.line()? else {
                        return Ok(());
                    };
                    if let Some(f) = follow_up {
                        engine.set_grammar(Some(f.grammar()))?;
                    }
                    (role, text) = ("tool", result);
                }
            }
        }
    })();
    // The next user message gets the tool set's own grammar again.
    engine.set_grammar(first.as_deref())?;
    r
}
