//! The Unicode facts the tokenizer needs: codepoint classes, white space, lenient UTF-8
//! decoding, and GPT-2's byte-level alphabet.

use super::unicode_tables::CLASS_RANGES;

/// What the pre-tokenizer's regex classes see in a codepoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpFlags {
    /// `\p{L}`.
    pub letter: bool,
    /// `\p{N}`.
    pub number: bool,
    /// `\s` (Unicode White_Space).
    pub whitespace: bool,
    /// Any assigned or unassigned codepoint (false only for "no codepoint", past a fragment end).
    pub any: bool,
}

impl CpFlags {
    /// The flags of "no codepoint here".
    pub const NONE: CpFlags = CpFlags {
        letter: false,
        number: false,
        whitespace: false,
        any: false,
    };
}

/// Unicode White_Space, the set `\s` matches.
pub fn is_whitespace(cp: u32) -> bool {
    matches!(cp, 0x09..=0x0d | 0x20 | 0x85 | 0xa0 | 0x1680 | 0x2000..=0x200a | 0x2028 | 0x2029
        | 0x202f | 0x205f | 0x3000)
}

/// Class of a codepoint: 0 unassigned, 1 number, 2 letter, 3 other (see `unicode_tables.rs`).
pub fn class(cp: u32) -> u32 {
    if cp > 0x10ffff {
        return 0;
    }
    // Last range whose start is <= cp.
    let i = CLASS_RANGES.partition_point(|&r| (r >> 2) <= cp);
    CLASS_RANGES[i.saturating_sub(1)] & 3
}

/// The flags of a codepoint.
pub fn flags(cp: u32) -> CpFlags {
    if cp < 0x80 {
        // ASCII fast path.
        let b = cp as u8;
        return CpFlags {
            letter: b.is_ascii_alphabetic(),
            number: b.is_ascii_digit(),
            whitespace: matches!(b, 0x09..=0x0d | 0x20),
            any: true,
        };
    }
    let c = class(cp);
    CpFlags {
        letter: c == 2,
        number: c == 1,
        whitespace: is_whitespace(cp),
        any: true,
    }
}

/// The replacement character that stands for each invalid byte.
pub const REPLACEMENT: u32 = 0xfffd;

/// Decodes one codepoint at `bytes[*pos]` and advances `pos`. An invalid byte (a stray
/// continuation byte, a truncated sequence) decodes to U+FFFD and advances by one byte, so no
/// input is ever rejected. Sequences are otherwise taken at face value (as llama.cpp does), and a
/// value above U+10FFFF, which no encoder can write back, also becomes U+FFFD.
pub fn next_codepoint(bytes: &[u8], pos: &mut usize) -> u32 {
    let b0 = bytes[*pos] as u32;
    let cont = |i: usize| {
        bytes
            .get(*pos + i)
            .filter(|&&b| b & 0xc0 == 0x80)
            .map(|&b| (b & 0x3f) as u32)
    };
    let (cp, len) = if b0 < 0x80 {
        (Some(b0), 1)
    } else if b0 & 0x40 == 0 {
        (None, 1)
    } else if b0 & 0x20 == 0 {
        (cont(1).map(|c1| (b0 & 0x1f) << 6 | c1), 2)
    } else if b0 & 0x10 == 0 {
        (
            cont(1)
                .zip(cont(2))
                .map(|(c1, c2)| (b0 & 0x0f) << 12 | c1 << 6 | c2),
            3,
        )
    } else if b0 & 0x08 == 0 {
        let c = cont(1).zip(cont(2)).zip(cont(3));
        (
            c.map(|((c1, c2), c3)| (b0 & 0x07) << 18 | c1 << 12 | c2 << 6 | c3),
            4,
        )
    } else {
        (None, 1)
    };
    match cp {
        Some(cp) if cp <= 0x10ffff => {
            *pos += len;
            cp
        }
        _ => {
            *pos += 1;
            REPLACEMENT
        }
    }
}

/// Encodes a codepoint as UTF-8 (surrogates too, byte for byte as they were decoded).
pub fn encode_utf8(cp: u32, out: &mut [u8; 4]) -> usize {
    if cp < 0x80 {
        out[0] = cp as u8;
        1
    } else if cp < 0x800 {
        out[0] = 0xc0 | (cp >> 6) as u8;
        out[1] = 0x80 | (cp & 0x3f) as u8;
        2
    } else if cp < 0x10000 {
        out[0] = 0xe0 | (cp >> 12) as u8;
        out[1] = 0x80 | ((cp >> 6) & 0x3f) as u8;
        out[2] = 0x80 | (cp & 0x3f) as u8;
        3
    } else {
        out[0] = 0xf0 | (cp >> 18) as u8;
        out[1] = 0x80 | ((cp >> 12) & 0x3f) as u8;
        out[2] = 0x80 | ((cp >> 6) & 0x3f) as u8;
        out[3] = 0x80 | (cp & 0x3f) as u8;
        4
    }
}

/// GPT-2's byte-level alphabet: every byte gets a printable codepoint. Printable Latin-1 bytes
/// stand for themselves; the other 68 bytes (controls, space, DEL, NBSP, soft hyphen) map in
/// order to U+0100 and up.
pub fn byte_to_codepoint(b: u8) -> u32 {
    let printable = |b: u8| matches!(b, 0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff);
    if printable(b) {
        return b as u32;
    }
    let rank = (0..b).filter(|&x| !printable(x)).count() as u32;
    0x100 + rank
}

/// The inverse of [`byte_to_codepoint`], `None` for codepoints outside the alphabet.
pub fn codepoint_to_byte(cp: u32) -> Option<u8> {
    match cp {
        0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff => Some(cp as u8),
        0x100..=0x143 => {
            let mut rank = cp - 0x100;
            for b in 0..=255u8 {
                if !matches!(b, 0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff) {
                    if rank == 0 {
                        return Some(b);
                    }
                    rank -= 1;
                }
            }
            None
        }
        _ => None,
    }
}
