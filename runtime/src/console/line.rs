//! The console's line editor: bytes from a terminal in, a finished line (or an event) out.
//!
//! It never allocates and never fails: every byte value is accepted. Printable bytes (and tab,
//! and every byte of a multi-byte UTF-8 character) go into the line; Backspace and DEL erase the
//! last whole character; CR, LF or CRLF end the line; Ctrl-C clears it; escape sequences (arrow
//! and function keys, and string sequences such as `ESC ] 0;title BEL`, whole) and other control
//! bytes are dropped. A byte that cannot be part of UTF-8 text where it stands is kept in the line
//! (which is then refused as not UTF-8) but echoed as `?`, so raw bytes 0x80–0x9F, C1 controls to
//! some terminals, never reach the terminal. A line longer than the buffer is remembered as too
//! long and discarded when it ends.

/// Ctrl-C.
pub const CTRL_C: u8 = 0x03;
const BACKSPACE: u8 = 0x08;
const DEL: u8 = 0x7f;
const ESC: u8 = 0x1b;

/// What a byte did to the line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edit<'a> {
    /// Nothing to show (a dropped byte, the LF of a CRLF, a byte of an escape sequence).
    None,
    /// The byte was added to the line: echo it.
    Echo(u8),
    /// The last character was erased: move back over it (`cells` terminal columns).
    Erase {
        /// Columns the erased character took.
        cells: usize,
    },
    /// Ctrl-C: the line was cleared.
    Cleared,
    /// The line ended: its bytes (not necessarily UTF-8).
    Line(&'a [u8]),
    /// The line ended but was longer than the buffer: it was discarded.
    TooLong,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Escape {
    /// Not in an escape sequence.
    No,
    /// After ESC.
    Start,
    /// In a CSI (`ESC [`) or SS3 (`ESC O`) sequence, until its final byte.
    Body,
    /// In a string sequence (OSC `ESC ]`, DCS `ESC P`, SOS `ESC X`, PM `ESC ^`, APC `ESC _`),
    /// until BEL or ST (`ESC \\`).
    Str,
}

/// A line being typed, in a caller-provided buffer.
pub struct LineEditor<'b> {
    buf: &'b mut [u8],
    len: usize,
    overflow: bool,
    after_cr: bool,
    escape: Escape,
    /// UTF-8 continuation bytes the last lead byte still calls for.
    utf8_need: u8,
}

impl<'b> LineEditor<'b> {
    /// An editor whose lines may hold up to `buf.len()` bytes.
    pub fn new(buf: &'b mut [u8]) -> Self {
        LineEditor {
            buf,
            len: 0,
            overflow: false,
            after_cr: false,
            escape: Escape::No,
            utf8_need: 0,
        }
    }

    /// Longest line, in bytes.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// The line typed so far.
    pub fn current(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Forgets the line (and any escape sequence in progress).
    pub fn clear(&mut self) {
        self.len = 0;
        self.overflow = false;
        self.escape = Escape::No;
        self.utf8_need = 0;
    }

    /// Takes one byte.
    pub fn push(&mut self, b: u8) -> Edit<'_> {
        let after_cr = core::mem::replace(&mut self.after_cr, false);
        // A control byte ends any escape sequence and then counts as itself, so a broken
        // sequence can never swallow a line end or Ctrl-C.
        if self.escape != Escape::No && b < 0x20 && b != ESC {
            self.escape = Escape::No;
        }
        match self.escape {
            Escape::Start => {
                self.escape = match b {
                    b'[' | b'O' => Escape::Body,
                    b']' | b'P' | b'X' | b'^' | b'_' => Escape::Str,
                    _ => Escape::No,
                };
                return Edit::None;
            }
            // A string sequence swallows everything up to its terminator: BEL (a control byte,
            // handled above), or ESC, which starts ST (`ESC \\`) or another sequence.
            Escape::Str => {
                if b == ESC {
                    self.escape = Escape::Start;
                }
                return Edit::None;
            }
            // CSI parameters and intermediates are 0x20..=0x3f; a final byte is 0x40..=0x7e.
            Escape::Body => {
                if !(0x20..=0x3f).contains(&b) {
                    self.escape = Escape::No;
                }
                return Edit::None;
            }
            Escape::No => {}
        }
        match b {
            b'\r' | b'\n' => {
                if b == b'\n' && after_cr {
                    return Edit::None;
                }
                self.after_cr = b == b'\r';
                let too_long = self.overflow;
                let n = self.len;
                self.len = 0;
                self.overflow = false;
                if too_long {
                    Edit::TooLong
                } else {
                    Edit::Line(&self.buf[..n])
                }
            }
            CTRL_C => {
                self.clear();
                Edit::Cleared
            }
            BACKSPACE | DEL => {
                if self.overflow || self.len == 0 {
                    return Edit::None;
                }
                // Back to the lead byte of the last character (or one stray byte).
                let mut start = self.len - 1;
                while start > 0 && self.len - start < 4 && is_continuation(self.buf[start]) {
                    start -= 1;
                }
                if !is_lead_of(&self.buf[start..self.len]) {
                    start = self.len - 1;
                }
                let cells = display_width(&self.buf[start..self.len]);
                self.len = start;
                Edit::Erase { cells }
            }
            ESC => {
                self.escape = Escape::Start;
                Edit::None
            }
            b'\t' | 0x20..=0x7e | 0x80..=0xff => {
                if self.overflow {
                    return Edit::None;
                }
                if self.len == self.buf.len() {
                    self.overflow = true;
                    return Edit::None;
                }
                self.buf[self.len] = b;
                self.len += 1;
                // Echo a byte raw only where it can be UTF-8: ASCII, a lead byte, or a
                // continuation byte a lead byte called for.
                let valid = match b {
                    0x00..=0x7f => {
                        self.utf8_need = 0;
                        true
                    }
                    0x80..=0xbf if self.utf8_need > 0 => {
                        self.utf8_need -= 1;
                        true
                    }
                    0xc2..=0xdf => {
                        self.utf8_need = 1;
                        true
                    }
                    0xe0..=0xef => {
                        self.utf8_need = 2;
                        true
                    }
                    0xf0..=0xf4 => {
                        self.utf8_need = 3;
                        true
                    }
                    _ => {
                        self.utf8_need = 0;
                        false
                    }
                };
                Edit::Echo(if valid { b } else { b'?' })
            }
            // NUL and the other control bytes mean nothing here.
            _ => Edit::None,
        }
    }
}

fn is_continuation(b: u8) -> bool {
    b & 0xc0 == 0x80
}

/// Whether `s` is one whole UTF-8 character.
fn is_lead_of(s: &[u8]) -> bool {
    core::str::from_utf8(s).is_ok_and(|c| c.chars().count() == 1)
}

/// Terminal columns of one character: 2 for the wide East Asian blocks and emoji, else 1.
fn display_width(ch: &[u8]) -> usize {
    let Some(c) = core::str::from_utf8(ch).ok().and_then(|s| s.chars().next()) else {
        return 1;
    };
    let cp = c as u32;
    let wide = matches!(cp,
        0x1100..=0x115f | 0x2e80..=0x303e | 0x3041..=0x33ff | 0x3400..=0x4dbf | 0x4e00..=0x9fff
        | 0xa000..=0xa4cf | 0xac00..=0xd7a3 | 0xf900..=0xfaff | 0xfe30..=0xfe4f | 0xff00..=0xff60
        | 0xffe0..=0xffe6 | 0x1f300..=0x1f64f | 0x1f900..=0x1f9ff | 0x20000..=0x3fffd);
    if wide {
        2
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input`; returns the finished lines (None for a too-long one) and the echo stream.
    fn run(
        cap: usize,
        input: &[u8],
    ) -> (
        std::vec::Vec<Option<std::vec::Vec<u8>>>,
        std::string::String,
    ) {
        let mut buf = std::vec![0u8; cap];
        let mut ed = LineEditor::new(&mut buf);
        let mut lines = std::vec::Vec::new();
        let mut echo = std::string::String::new();
        for &b in input {
            match ed.push(b) {
                Edit::Line(l) => lines.push(Some(l.to_vec())),
                Edit::TooLong => lines.push(None),
                Edit::Echo(b) => echo.push(b as char),
                Edit::Erase { cells } => echo.push_str(&"<".repeat(cells)),
                Edit::Cleared => echo.push('^'),
                Edit::None => {}
            }
        }
        (lines, echo)
    }

    fn line(s: &str) -> Option<std::vec::Vec<u8>> {
        Some(s.as_bytes().to_vec())
    }

    #[test]
    fn cr_lf_and_crlf_each_end_one_line() {
        let (lines, _) = run(64, b"a\rb\nc\r\nd\n\re\r\r");
        assert_eq!(
            lines,
            [
                line("a"),
                line("b"),
                line("c"),
                line("d"),
                line(""),
                line("e"),
                line("")
            ]
        );
    }

    #[test]
    fn backspace_and_del_erase_whole_characters() {
        let (lines, echo) = run(64, "hé€😀".as_bytes());
        assert!(lines.is_empty());
        assert_eq!(echo.chars().count(), "hé€😀".len());
        let mut input = "hé€😀".as_bytes().to_vec();
        input.extend_from_slice(&[DEL, BACKSPACE, DEL]);
        input.extend_from_slice(b"ey\r");
        let (lines, echo) = run(64, &input);
        assert_eq!(lines, [line("hey")]);
        // The emoji is two columns wide, the others one.
        assert!(echo.contains("<<<<"));
        // Erasing an empty line does nothing.
        let (lines, echo) = run(64, &[DEL, DEL, b'x', b'\n']);
        assert_eq!((lines, echo.as_str()), (std::vec![line("x")], "x"));
        // A stray continuation byte is erased alone.
        let (lines, _) = run(64, &[b'a', 0x80, 0x80, DEL, b'\n']);
        assert_eq!(lines, [Some(std::vec![b'a', 0x80])]);
    }

    #[test]
    fn ctrl_c_clears_the_line() {
        let (lines, echo) = run(64, b"abc\x03de\r");
        assert_eq!(lines, [line("de")]);
        assert_eq!(echo, "abc^de");
    }

    #[test]
    fn escape_sequences_and_control_bytes_are_dropped() {
        // Up, down, right, left arrows (CSI and SS3 forms), Home, F5, then NUL and BEL.
        let (lines, echo) = run(64, b"a\x1b[A\x1b[B\x1bOC\x1b[D\x1b[1~\x1b[15~b\x00\x07c\r");
        assert_eq!(lines, [line("abc")]);
        assert_eq!(echo, "abc");
        // A lone ESC followed by a letter drops just that pair.
        assert_eq!(run(64, b"\x1bxy\n").0, [line("y")]);
        // A control byte ends a broken sequence, so a line end still works.
        assert_eq!(run(64, b"q\x1b[12\r").0, [line("q")]);
    }

    #[test]
    fn string_sequences_are_dropped_whole() {
        // OSC set-title ended by BEL, and by ST; a DCS; an APC.
        for seq in [
            &b"\x1b]0;title\x07"[..],
            b"\x1b]0;title\x1b\\",
            b"\x1bPq#0;2;0;0;0\x1b\\",
            b"\x1b_app\x1b\\",
        ] {
            let mut input = b"ab".to_vec();
            input.extend_from_slice(seq);
            input.extend_from_slice(b"cd\r");
            let (lines, echo) = run(64, &input);
            assert_eq!(lines, [line("abcd")], "{seq:?}");
            assert_eq!(echo, "abcd");
        }
        // An unterminated one still cannot swallow the line end or Ctrl-C.
        assert_eq!(
            run(64, b"x\x1b]0;never ends\ry\r").0,
            [line("x"), line("y")]
        );
        assert_eq!(run(64, b"x\x1b]0;t\x03y\r").1, "x^y");
    }

    #[test]
    fn bytes_that_cannot_be_utf8_are_echoed_as_question_marks() {
        let echo_of = |input: &[u8]| {
            let mut buf = [0u8; 64];
            let mut ed = LineEditor::new(&mut buf);
            let mut echo = std::vec::Vec::new();
            for &b in input {
                if let Edit::Echo(e) = ed.push(b) {
                    echo.push(e);
                }
            }
            echo
        };
        // Stray continuation bytes (0x80..=0x9f are C1 controls to some terminals), bytes
        // that never start UTF-8, and a lead byte cut short.
        assert_eq!(echo_of(b"a\x85\x9b\xbfb"), b"a???b");
        assert_eq!(echo_of(b"\xc0\xc1\xf5\xff"), b"????");
        assert_eq!(echo_of(b"\xc3a\x9d"), b"\xc3a?");
        // Valid UTF-8 (2, 3 and 4 bytes) passes raw, continuation bytes included.
        let ok = "é€😀".as_bytes();
        assert_eq!(echo_of(ok), ok);
        // The line keeps the bytes (and is refused as not UTF-8 by the console).
        assert_eq!(run(64, b"a\x9bb\r").0, [Some(b"a\x9bb".to_vec())]);
    }

    #[test]
    fn an_overlong_line_is_discarded_and_the_next_one_works() {
        let (lines, echo) = run(4, b"abcdefgh\x7f\x7f\rok\r");
        assert_eq!(lines, [None, line("ok")]);
        assert_eq!(echo, "abcdok");
        // Exactly full is fine.
        assert_eq!(run(4, b"abcd\n").0, [line("abcd")]);
    }

    #[test]
    fn any_byte_stream_is_accepted() {
        let mut buf = [0u8; 16];
        let mut ed = LineEditor::new(&mut buf);
        let mut x = 0x1234_5678u32;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if let Edit::Line(l) = ed.push(x as u8) {
                assert!(l.len() <= 16);
            }
            assert!(ed.current().len() <= 16);
        }
    }
}
