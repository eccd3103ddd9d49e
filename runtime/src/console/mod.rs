//! A chat console over a byte port: a UART on a board, a serial device or a pseudo-terminal on
//! Linux, stdin/stdout.
//!
//! The protocol (what a person at screen, minicom or picocom sees):
//! - a banner line, then the prompt `> ` at the start of a line; every line end sent is CRLF;
//! - typed characters are echoed (unless echo is off), Backspace and DEL erase the last whole
//!   character, CR, LF or CRLF end the line ([`line::LineEditor`]);
//! - the reply streams token by token, then a line end and the prompt again;
//! - Ctrl-C during a reply stops it and returns to the prompt; at the prompt it clears the line;
//!   anything else typed during a reply is dropped, and a line after the reply says so (`busy`);
//! - a line longer than the buffer is discarded with an error line saying it is `too long`;
//!   invalid UTF-8 gets an error line; NUL, escape sequences and other control bytes are ignored;
//! - commands: `/help`, `/reset`, `/system TEXT`, `/temp X`, `/json on|off` (replies kept
//!   inside the built-in JSON grammar), `/stats`.
//!
//! The console is `no_std` and allocates nothing: the line lives in a caller buffer and the
//! conversation in an [`Assistant`]: [`ChatAssistant`] (a session with its KV cache kept between
//! turns, ChatML in fixed buffers, no `std`) on a board, or, with `std`, `EngineAssistant` (the
//! engine API every other front end uses: the model's template, one chat-turn policy). It is generic over `embedded-io`'s `Read + ReadReady + Write`, so the
//! same code runs on a board's UART driver and, in `ember serial`, on a Linux tty.

mod chat;
#[cfg(feature = "std")]
mod engine;
pub mod line;

pub use chat::ChatAssistant;
#[cfg(feature = "std")]
pub use engine::EngineAssistant;

use crate::error::Error;
use core::fmt::{self, Write as _};
use embedded_io::{Read, ReadReady, Write};
use line::{Edit, LineEditor, CTRL_C};

/// The help text of `/help`.
pub const HELP: &str = "commands: /help, /reset (new conversation), /system TEXT (set the system \
                        message; new conversation), /temp X (sampling temperature, 0 = greedy), \
                        /json on|off (replies as JSON), /stats; Ctrl-C stops a reply";

/// Default longest line, in bytes.
pub const DEFAULT_MAX_LINE: usize = 1024;

/// How a reply ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyEnd {
    /// The model ended its turn (or reached the reply length limit).
    Finished,
    /// The output callback asked to stop (Ctrl-C).
    Stopped,
}

/// What the console needs from a conversation. [`ChatAssistant`] is the real one; tests use
/// scripted ones.
pub trait Assistant {
    /// Adds the user's `line` to the conversation and generates the reply, calling `emit` with
    /// each piece of text as it is produced (`emit` returns false to stop).
    fn reply(&mut self, line: &str, emit: &mut dyn FnMut(&str) -> bool) -> Result<ReplyEnd, Error>;
    /// Starts a new conversation (the system message stays).
    fn reset(&mut self);
    /// Sets the system message (empty: none) and starts a new conversation.
    fn set_system(&mut self, text: &str) -> Result<(), Error>;
    /// Sets the sampling temperature (0 = greedy).
    fn set_temperature(&mut self, t: f32) -> Result<(), Error>;
    /// Keeps replies inside the built-in JSON grammar (or not).
    fn set_json(&mut self, on: bool) -> Result<(), Error> {
        let _ = on;
        Err(Error::InvalidArgument("this console has no JSON replies"))
    }
    /// One line of statistics for `/stats` (no line end).
    fn write_stats(&self, out: &mut dyn fmt::Write) -> fmt::Result;
}

/// The `/stats` line both assistants write: turns, what the cache holds, the last reply (and its
/// speed, when measured), temperature, kernels, and whether replies are JSON.
pub(crate) fn write_stats_line(
    out: &mut dyn fmt::Write,
    turns: usize,
    session: &crate::session::Session<'_, '_>,
    last_tokens: usize,
    rate: Option<f64>,
    temperature: f32,
    json: bool,
) -> fmt::Result {
    let s = session;
    write!(
        out,
        "turns {turns} | context {} tokens, cache holds {} of {} | last reply {last_tokens} tokens",
        s.n_past(),
        s.n_past().min(s.n_ctx()),
        s.n_ctx(),
    )?;
    if let Some(tps) = rate {
        write!(out, " ({tps:.1} tok/s)")?;
    }
    write!(
        out,
        " | temperature {temperature} | kernels {}",
        s.model().kernels.name()
    )?;
    if json {
        write!(out, " | JSON replies")?;
    }
    Ok(())
}

/// Something that shows the console is busy generating (an LED).
pub trait BusyIndicator {
    /// On while a reply is being generated, off otherwise.
    fn set_busy(&mut self, busy: bool);
}

/// No indicator.
impl BusyIndicator for () {
    fn set_busy(&mut self, _: bool) {}
}

/// A busy LED on any `embedded-hal` output pin (lit = high).
pub struct BusyPin<P>(pub P);

impl<P: embedded_hal::digital::OutputPin> BusyIndicator for BusyPin<P> {
    fn set_busy(&mut self, busy: bool) {
        // A failing LED must not stop the conversation: its error is dropped on purpose.
        let _ = if busy {
            self.0.set_high()
        } else {
            self.0.set_low()
        };
    }
}

/// Settings of a console.
#[derive(Clone, Copy, Debug)]
pub struct ConsoleConfig<'a> {
    /// The first line sent.
    pub banner: &'a str,
    /// Echo typed characters (off when the terminal echoes locally).
    pub echo: bool,
}

/// Why [`run`] returned without an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// The port reported end of input (hangup).
    EndOfInput,
}

/// Runs the console on `port` until the port ends (or fails: its error is returned). `line_buf`
/// holds one input line: its length is the longest line accepted.
pub fn run<P, A>(
    port: &mut P,
    assistant: &mut A,
    busy: &mut dyn BusyIndicator,
    cfg: &ConsoleConfig<'_>,
    line_buf: &mut [u8],
) -> Result<Exit, P::Error>
where
    P: Read + ReadReady + Write,
    A: Assistant + ?Sized,
{
    let max_line = line_buf.len();
    let mut editor = LineEditor::new(line_buf);
    {
        let mut out = Out::new(port);
        let _ = write!(out, "{}\n> ", cfg.banner);
        out.finish()?;
    }
    let mut input = [0u8; 64];
    loop {
        let n = port.read(&mut input)?;
        if n == 0 {
            return Ok(Exit::EndOfInput);
        }
        for &b in &input[..n] {
            let mut out = Out::new(port);
            match editor.push(b) {
                Edit::None => {}
                Edit::Echo(c) => {
                    if cfg.echo {
                        out.raw(&[c]);
                    }
                }
                Edit::Erase { cells } => {
                    if cfg.echo {
                        for _ in 0..cells {
                            out.raw(b"\x08 \x08");
                        }
                    }
                }
                Edit::Cleared => {
                    let _ = out.write_str("^C\n> ");
                }
                Edit::TooLong => {
                    if cfg.echo {
                        let _ = out.write_str("\n");
                    }
                    let _ = write!(
                        out,
                        "error: line too long (more than {max_line} bytes), discarded\n> "
                    );
                }
                Edit::Line(bytes) => {
                    if cfg.echo {
                        let _ = out.write_str("\n");
                    }
                    match core::str::from_utf8(bytes) {
                        Err(_) => {
                            let _ =
                                out.write_str("error: the line is not valid UTF-8, discarded\n");
                        }
                        Ok(text) => {
                            let text = text.trim();
                            if let Some(cmd) = text.strip_prefix('/') {
                                command(cmd, assistant, &mut out);
                            } else if !text.is_empty() {
                                out.finish()?;
                                if reply(text, assistant, busy, &mut *out.port)? {
                                    return Ok(Exit::EndOfInput);
                                }
                            }
                        }
                    }
                    let _ = out.write_str("> ");
                }
            }
            out.finish()?;
        }
    }
}

/// Runs one slash command.
fn command<P: Write>(cmd: &str, assistant: &mut (impl Assistant + ?Sized), out: &mut Out<'_, P>) {
    let (name, arg) = cmd.split_once(' ').unwrap_or((cmd, ""));
    let arg = arg.trim();
    let _ = match name {
        "help" => writeln!(out, "{HELP}"),
        "reset" => {
            assistant.reset();
            writeln!(out, "(new conversation)")
        }
        "system" => match assistant.set_system(arg) {
            Ok(()) if arg.is_empty() => writeln!(out, "(no system message; new conversation)"),
            Ok(()) => writeln!(out, "(system message set; new conversation)"),
            Err(e) => writeln!(out, "error: {e}"),
        },
        "temp" => match arg.parse::<f32>() {
            Ok(t) if t.is_finite() && t >= 0.0 => match assistant.set_temperature(t) {
                Ok(()) => writeln!(out, "(temperature {t})"),
                Err(e) => writeln!(out, "error: {e}"),
            },
            _ => writeln!(
                out,
                "error: /temp needs a number of at least 0, e.g. /temp 0.7"
            ),
        },
        "json" => match arg {
            "on" | "off" => match assistant.set_json(arg == "on") {
                Ok(()) if arg == "on" => writeln!(out, "(replies are JSON)"),
                Ok(()) => writeln!(out, "(replies are free text)"),
                Err(e) => writeln!(out, "error: {e}"),
            },
            _ => writeln!(out, "error: /json needs on or off"),
        },
        "stats" => assistant.write_stats(out).and_then(|_| out.write_str("\n")),
        _ => {
            let mut shown = name;
            if shown.len() > 32 {
                let mut n = 32;
                while !shown.is_char_boundary(n) {
                    n -= 1;
                }
                shown = &shown[..n];
            }
            writeln!(out, "error: unknown command /{shown} (try /help)")
        }
    };
}

/// Streams the reply to `line`, watching the input for Ctrl-C. Returns whether the port ended
/// meanwhile.
fn reply<P, A>(
    line: &str,
    assistant: &mut A,
    busy: &mut dyn BusyIndicator,
    port: &mut P,
) -> Result<bool, P::Error>
where
    P: Read + ReadReady + Write,
    A: Assistant + ?Sized,
{
    let mut io_error = None;
    let mut hung_up = false;
    let mut interrupted = false;
    let mut dropped = false;
    busy.set_busy(true);
    let result = assistant.reply(line, &mut |piece| {
        let mut out = Out::new(port);
        out.text(piece);
        if let Err(e) = out.finish() {
            io_error = Some(e);
            return false;
        }
        // Between tokens: was Ctrl-C typed? Everything else typed meanwhile is dropped, and
        // the user is told so when the reply ends.
        match port.read_ready() {
            Ok(false) => true,
            Ok(true) => {
                let mut typed = [0u8; 64];
                match port.read(&mut typed) {
                    Ok(0) => {
                        hung_up = true;
                        false
                    }
                    Ok(n) => {
                        interrupted = typed[..n].contains(&CTRL_C);
                        dropped |= typed[..n].iter().any(|&b| b != CTRL_C);
                        !interrupted
                    }
                    Err(e) => {
                        io_error = Some(e);
                        false
                    }
                }
            }
            Err(e) => {
                io_error = Some(e);
                false
            }
        }
    });
    busy.set_busy(false);
    if let Some(e) = io_error {
        return Err(e);
    }
    let mut out = Out::new(port);
    let _ = match result {
        Ok(_) if interrupted => out.write_str(" ^C\n"),
        Ok(_) => out.write_str("\n"),
        Err(e) => write!(out, "\nerror: {e}\n"),
    };
    if dropped && !hung_up {
        let _ =
            out.write_str("(busy: what was typed during the reply was dropped; type it again)\n");
    }
    out.finish()?;
    Ok(hung_up)
}

/// Text to the port with LF sent as CRLF; remembers the first error.
struct Out<'p, P: Write> {
    port: &'p mut P,
    error: Option<P::Error>,
}

impl<'p, P: Write> Out<'p, P> {
    fn new(port: &'p mut P) -> Self {
        Out { port, error: None }
    }

    fn raw(&mut self, bytes: &[u8]) {
        if self.error.is_none() {
            if let Err(e) = self.port.write_all(bytes) {
                self.error = Some(e);
            }
        }
    }

    /// Model output: line ends become CRLF, and control characters that could drive the
    /// terminal (escape sequences, bells, carriage returns) are dropped.
    fn text(&mut self, s: &str) {
        for run in s.split_inclusive(|c: char| c.is_control()) {
            let (plain, ctl) = match run.char_indices().last() {
                Some((i, c)) if c.is_control() => (&run[..i], Some(c)),
                _ => (run, None),
            };
            self.raw(plain.as_bytes());
            match ctl {
                Some('\n') => self.raw(b"\r\n"),
                Some('\t') => self.raw(b"\t"),
                _ => {}
            }
        }
    }

    /// Flushes; the first error of the whole exchange wins.
    fn finish(&mut self) -> Result<(), P::Error> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.port.flush()
    }
}

impl<P: Write> fmt::Write for Out<'_, P> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut first = true;
        for part in s.split('\n') {
            if !first {
                self.raw(b"\r\n");
            }
            first = false;
            self.raw(part.as_bytes());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
