//! The console protocol against an in-memory port and a scripted assistant.

use super::*;
use std::collections::VecDeque;
use std::string::String;
use std::vec::Vec;

/// A port whose input arrives in chunks (one per read, as a UART delivers what was typed since
/// the last read) and whose output is recorded.
#[derive(Default)]
struct MemPort {
    input: VecDeque<Vec<u8>>,
    output: Vec<u8>,
}

impl MemPort {
    fn new(chunks: &[&[u8]]) -> Self {
        MemPort {
            input: chunks.iter().map(|c| c.to_vec()).collect(),
            output: Vec::new(),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output).into_owned()
    }
}

impl embedded_io::ErrorType for MemPort {
    type Error = core::convert::Infallible;
}

impl Read for MemPort {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let Some(mut chunk) = self.input.pop_front() else {
            return Ok(0);
        };
        let n = chunk.len().min(buf.len());
        buf[..n].copy_from_slice(&chunk[..n]);
        if n < chunk.len() {
            self.input.push_front(chunk.split_off(n));
        }
        Ok(n)
    }
}

impl ReadReady for MemPort {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        Ok(!self.input.is_empty())
    }
}

impl Write for MemPort {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Replies "ok" then `pieces` tokens " w0 w1 …", recording what it was asked.
struct Scripted {
    pieces: usize,
    lines: Vec<String>,
    stopped_after: Option<usize>,
    resets: usize,
    system: String,
    temperature: f32,
    reply_text: &'static str,
}

impl Scripted {
    fn new(pieces: usize) -> Self {
        Scripted {
            pieces,
            lines: Vec::new(),
            stopped_after: None,
            resets: 0,
            system: String::new(),
            temperature: 0.0,
            reply_text: "ok",
        }
    }
}

impl Assistant for Scripted {
    fn reply(&mut self, line: &str, emit: &mut dyn FnMut(&str) -> bool) -> Result<ReplyEnd, Error> {
        self.lines.push(line.into());
        if !emit(self.reply_text) {
            self.stopped_after = Some(0);
            return Ok(ReplyEnd::Stopped);
        }
        for i in 0..self.pieces {
            if !emit(&std::format!(" w{i}")) {
                self.stopped_after = Some(i + 1);
                return Ok(ReplyEnd::Stopped);
            }
        }
        Ok(ReplyEnd::Finished)
    }
    fn reset(&mut self) {
        self.resets += 1;
    }
    fn set_system(&mut self, text: &str) -> Result<(), Error> {
        self.system = text.into();
        self.reset();
        Ok(())
    }
    fn set_temperature(&mut self, t: f32) -> Result<(), Error> {
        self.temperature = t;
        Ok(())
    }
    fn write_stats(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        write!(out, "turns {}", self.lines.len())
    }
}

const CFG: ConsoleConfig<'static> = ConsoleConfig {
    banner: "ember test console",
    echo: true,
};

fn session(chunks: &[&[u8]], a: &mut Scripted, cfg: &ConsoleConfig<'_>, max_line: usize) -> String {
    let mut port = MemPort::new(chunks);
    let mut buf = std::vec![0u8; max_line];
    let exit = run(&mut port, a, &mut (), cfg, &mut buf).unwrap();
    assert_eq!(exit, Exit::EndOfInput);
    let out = port.text();
    // Every line end sent is CRLF.
    for (i, b) in port.output.iter().enumerate() {
        if *b == b'\n' {
            assert!(i > 0 && port.output[i - 1] == b'\r', "bare LF in {out:?}");
        }
    }
    out
}

#[test]
fn banner_prompt_echo_reply_prompt() {
    let mut a = Scripted::new(2);
    let out = session(&[b"hi there\r"], &mut a, &CFG, 64);
    assert_eq!(out, "ember test console\r\n> hi there\r\nok w0 w1\r\n> ");
    assert_eq!(a.lines, ["hi there"]);
}

#[test]
fn without_echo_only_the_reply_is_sent() {
    let mut a = Scripted::new(0);
    let cfg = ConsoleConfig { echo: false, ..CFG };
    let out = session(&[b"abc\x7fd\n"], &mut a, &cfg, 64);
    assert_eq!(out, "ember test console\r\n> ok\r\n> ");
    assert_eq!(a.lines, ["abd"]);
}

#[test]
fn cr_lf_and_crlf_each_end_one_turn() {
    let mut a = Scripted::new(0);
    session(&[b"one\rtwo\nthree\r\nfour\r"], &mut a, &CFG, 64);
    assert_eq!(a.lines, ["one", "two", "three", "four"]);
}

#[test]
fn backspace_erases_on_screen_and_in_the_line() {
    let mut a = Scripted::new(0);
    let out = session(&["ab€\x08\x7fc\r".as_bytes()], &mut a, &CFG, 64);
    assert_eq!(a.lines, ["ac"]);
    assert!(out.contains("ab€\x08 \x08\x08 \x08c\r\n"), "{out:?}");
}

#[test]
fn ctrl_c_mid_reply_stops_it_and_the_console_goes_on() {
    let mut a = Scripted::new(1000);
    let out = session(&[b"tell me\r", b"\x03", b"next\r"], &mut a, &CFG, 64);
    // The reply stopped right after the piece during which Ctrl-C arrived.
    assert_eq!(a.stopped_after, Some(0));
    assert_eq!(a.lines, ["tell me", "next"]);
    assert!(out.contains("ok ^C\r\n> next\r\n"), "{out:?}");
}

#[test]
fn other_keys_during_a_reply_are_dropped() {
    let mut a = Scripted::new(3);
    let out = session(&[b"go\r", b"zz", b"\r"], &mut a, &CFG, 64);
    assert_eq!(a.lines, ["go"]);
    assert!(!out.contains("zz"));
    // The user is told, once, after the reply.
    assert_eq!(
        out.matches("(busy: what was typed during the reply was dropped")
            .count(),
        1
    );
    // A reply nobody typed over says nothing of the kind.
    let mut a = Scripted::new(3);
    let out = session(&[b"go\r"], &mut a, &CFG, 64);
    assert!(!out.contains("busy"), "{out:?}");
}

#[test]
fn an_osc_sequence_and_stray_c1_bytes_never_reach_the_line_or_the_terminal() {
    let mut a = Scripted::new(0);
    let out = session(&[b"a\x1b]0;title\x07b\rx\x9b\x85y\r"], &mut a, &CFG, 64);
    assert_eq!(a.lines, ["ab"]);
    assert!(!out.contains(";title"), "{out:?}");
    assert!(out.contains("x??y"), "{out:?}");
    // A raw invalid byte would show as U+FFFD in the lossy text.
    assert!(!out.contains('\u{fffd}'), "{out:?}");
}

#[test]
fn ctrl_c_at_the_prompt_clears_the_line() {
    let mut a = Scripted::new(0);
    let out = session(&[b"junk\x03real\r"], &mut a, &CFG, 64);
    assert_eq!(a.lines, ["real"]);
    assert!(out.contains("> junk^C\r\n> real\r\nok"), "{out:?}");
}

#[test]
fn an_overlong_line_is_refused_and_the_next_one_works() {
    let mut a = Scripted::new(0);
    let long = [b'x'; 100];
    let out = session(&[&long, b"\r", b"short\r"], &mut a, &CFG, 16);
    assert_eq!(a.lines, ["short"]);
    assert!(out.contains("error: line too long (more than 16 bytes), discarded\r\n> "));
    // The echo stopped at the limit.
    assert!(!out.contains(&"x".repeat(17)));
}

#[test]
fn invalid_utf8_nul_and_escape_sequences_never_break_it() {
    let mut a = Scripted::new(0);
    let out = session(
        &[
            b"\xff\xfe\r",
            b"a\x00b\x1b[A\x1b[Dc\x1bOB\r",
            b"\x1b\x1b[[\r",
            b"ok\r",
        ],
        &mut a,
        &CFG,
        64,
    );
    assert!(out.contains("error: the line is not valid UTF-8, discarded"));
    assert_eq!(a.lines, ["abc", "ok"]);
}

#[test]
fn commands() {
    let mut a = Scripted::new(0);
    let out = session(
        &[
            b"/help\r",
            b"/reset\r",
            b"/system Be brief.\r",
            b"/temp 0.7\r",
            b"/temp hot\r",
            b"/temp -1\r",
            // Typed ahead in the same read as the line: kept (a chunk arriving during the reply
            // would be dropped).
            b"/frobnicate now\r",
            b"hello\r/stats\r",
        ],
        &mut a,
        &CFG,
        64,
    );
    assert!(out.contains(HELP));
    assert!(out.contains("(new conversation)"));
    assert!(out.contains("(system message set; new conversation)"));
    assert_eq!(a.system, "Be brief.");
    assert_eq!(a.resets, 2);
    assert!(out.contains("(temperature 0.7)"));
    assert_eq!(a.temperature, 0.7);
    assert_eq!(out.matches("error: /temp needs a number").count(), 2);
    assert!(out.contains("turns 1\r\n"), "{out:?}");
    assert!(out.contains("error: unknown command /frobnicate (try /help)"));
    // Commands are not sent to the model.
    assert_eq!(a.lines, ["hello"]);
}

#[test]
fn model_output_cannot_drive_the_terminal() {
    let mut a = Scripted::new(0);
    a.reply_text = "line1\nline2\x1b[2J\x07\rend\ttab";
    let out = session(&[b"q\r"], &mut a, &CFG, 64);
    assert!(out.contains("line1\r\nline2[2Jend\ttab\r\n> "), "{out:?}");
}

#[test]
fn end_of_input_during_a_reply_ends_the_console() {
    let mut a = Scripted::new(1000);
    let mut port = MemPort::new(&[b"q\r", b""]);
    let mut buf = [0u8; 32];
    assert_eq!(
        run(&mut port, &mut a, &mut (), &CFG, &mut buf),
        Ok(Exit::EndOfInput)
    );
    assert_eq!(a.stopped_after, Some(0));
}

#[test]
fn the_busy_led_is_lit_only_while_generating() {
    use embedded_hal_mock::eh1::digital::{Mock, State, Transaction};
    let expect = [
        Transaction::set(State::High),
        Transaction::set(State::Low),
        Transaction::set(State::High),
        Transaction::set(State::Low),
    ];
    let mut led = BusyPin(Mock::new(&expect));
    let mut a = Scripted::new(2);
    let mut port = MemPort::new(&[b"one\r/help\r\rtwo\r"]);
    let mut buf = [0u8; 32];
    run(&mut port, &mut a, &mut led, &CFG, &mut buf).unwrap();
    led.0.done();
}

#[test]
fn arbitrary_bytes_end_in_a_clean_exit() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..50 {
        let mut chunks = Vec::new();
        for _ in 0..40 {
            let mut c = Vec::new();
            for _ in 0..(x % 23) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Bias towards the interesting bytes.
                let b = match x % 8 {
                    0 => b'\r',
                    1 => 0x03,
                    2 => 0x1b,
                    3 => 0x7f,
                    4 => b'/',
                    _ => (x >> 8) as u8,
                };
                c.push(b);
            }
            chunks.push(c);
        }
        let refs: Vec<&[u8]> = chunks.iter().map(|c| c.as_slice()).collect();
        let mut a = Scripted::new(round % 5);
        let cfg = ConsoleConfig {
            echo: round % 2 == 0,
            ..CFG
        };
        session(&refs, &mut a, &cfg, 8 + round);
        for l in &a.lines {
            assert!(l.len() <= 8 + round);
        }
    }
}
