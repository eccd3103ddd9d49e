//! Pre-tokenizers: split text into words before BPE, as the model's tokenizer was trained.
//!
//! GPT-2's regex is `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`;
//! SmolLM2 (`smollm`) first isolates every `\p{N}` codepoint, then applies GPT-2's regex to each
//! piece. Llama 3's (`llama-bpe`) is
//! `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
//! and Qwen2's the same with `\p{N}` alone instead of `\p{N}{1,3}`. Both are hand-written matchers over codepoints (no regex engine, no allocation), with
//! the same decisions as llama.cpp's, so words — and so tokens — come out identical.

use super::unicode::{flags, CpFlags};

/// Which pre-tokenizer a vocabulary uses (`tokenizer.ggml.pre`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreTokenizer {
    /// GPT-2's regex.
    Gpt2,
    /// Every number codepoint alone, then GPT-2's regex (SmolLM, StarCoder, ...).
    DigitsThenGpt2,
    /// Llama 3's regex: numbers in runs of up to three.
    Llama3,
    /// Qwen2's regex: Llama 3's with every number alone.
    Qwen2,
}

impl PreTokenizer {
    /// The pre-tokenizer for a `tokenizer.ggml.pre` name, as llama.cpp maps names to regexes.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "gpt-2" | "gpt2" | "phi-2" | "mpt" | "olmo" | "jais" | "trillion"
            | "granite-docling" | "mellum" | "modern-bert" => Some(Self::Gpt2),
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone"
            | "minerva" | "mellum2" => Some(Self::DigitsThenGpt2),
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral"
            | "midm-2.0" | "lfm2" => Some(Self::Llama3),
            "qwen2" | "deepseek-r1-qwen" | "stablelm2" | "hunyuan" => Some(Self::Qwen2),
            _ => None,
        }
    }

    /// Whether a word that is itself a token is emitted whole, without merging (llama.cpp's
    /// `ignore_merges`, set for Llama 3's vocabularies).
    pub fn ignores_merges(self) -> bool {
        self == Self::Llama3
    }

    /// Whether encoding adds BOS when the vocabulary does not say (`add_bos_token`).
    pub fn adds_bos_by_default(self) -> bool {
        self == Self::Llama3
    }

    /// Splits `cps` into words, calling `word(start, end)` for each codepoint range, in order.
    /// The ranges cover `cps` exactly.
    pub fn split(self, cps: &[u32], mut word: impl FnMut(usize, usize)) {
        match self {
            Self::Gpt2 => gpt2_split(cps, 0, cps.len(), &mut word),
            Self::DigitsThenGpt2 => {
                let mut start = 0;
                for (i, &cp) in cps.iter().enumerate() {
                    if flags(cp).number {
                        gpt2_split(cps, start, i, &mut word);
                        word(i, i + 1);
                        start = i + 1;
                    }
                }
                gpt2_split(cps, start, cps.len(), &mut word);
            }
            Self::Llama3 => llama3_split(cps, 3, &mut word),
            Self::Qwen2 => llama3_split(cps, 1, &mut word),
        }
    }
}

/// Llama 3's regex over `cps`, numbers in runs of at most `digits`.
fn llama3_split(cps: &[u32], digits: usize, word: &mut impl FnMut(usize, usize)) {
    let end = cps.len();
    let at = |p: usize| if p < end { Some(cps[p]) } else { None };
    let fl = |p: usize| {
        if p < end {
            flags(cps[p])
        } else {
            CpFlags::NONE
        }
    };
    let is_rn = |c: Option<u32>| matches!(c, Some(0x0D | 0x0A));
    let lower = |c: Option<u32>| c.and_then(char::from_u32).map(|c| c.to_ascii_lowercase());
    let mut prev_end = 0;
    let mut emit = |to: usize| {
        if to > prev_end {
            word(prev_end, to);
        }
        prev_end = to;
    };
    let mut pos = 0;
    while pos < end {
        let cp = cps[pos];
        let f = fl(pos);
        // (?i:'s|'t|'re|'ve|'m|'ll|'d)
        if cp == '\'' as u32 && pos + 1 < end {
            let n = lower(at(pos + 1));
            if matches!(n, Some('s' | 't' | 'm' | 'd')) {
                pos += 2;
                emit(pos);
                continue;
            }
            if pos + 2 < end {
                let nn = lower(at(pos + 2));
                if matches!(
                    (n, nn),
                    (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l'))
                ) {
                    pos += 3;
                    emit(pos);
                    continue;
                }
            }
        }
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if !(is_rn(Some(cp)) || f.number) && (f.letter || fl(pos + 1).letter) {
            pos += 1;
            while fl(pos).letter {
                pos += 1;
            }
            emit(pos);
            continue;
        }
        // \p{N}{1,digits}
        if f.number {
            let mut ini = pos;
            while fl(pos).number {
                pos += 1;
                if pos - ini >= digits {
                    emit(pos);
                    ini = pos;
                }
            }
            emit(pos);
            continue;
        }
        // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
        let mut f2 = if cp == ' ' as u32 { fl(pos + 1) } else { f };
        let other = |f: CpFlags| !(f.whitespace || f.letter || f.number) && f.any;
        if other(f2) && f.any {
            pos += (cp == ' ' as u32) as usize;
            while other(f2) {
                pos += 1;
                f2 = fl(pos);
            }
            while is_rn(at(pos)) {
                pos += 1;
            }
            emit(pos);
            continue;
        }
        let mut n_ws = 0;
        let mut last_rn = 0;
        while fl(pos + n_ws).whitespace {
            if is_rn(at(pos + n_ws)) {
                last_rn = pos + n_ws + 1;
            }
            n_ws += 1;
        }
        // \s*[\r\n]+
        if last_rn > 0 {
            pos = last_rn;
            emit(pos);
            continue;
        }
        // \s+(?!\S)
        if n_ws > 1 && at(pos + n_ws).is_some() {
            pos += n_ws - 1;
            emit(pos);
            continue;
        }
        // \s+
        if n_ws > 0 {
            pos += n_ws;
            emit(pos);
            continue;
        }
        pos += 1;
        emit(pos);
    }
    emit(end);
}

/// GPT-2's regex over `cps[ini..end]`, seeing nothing outside that range.
fn gpt2_split(cps: &[u32], ini: usize, end: usize, word: &mut impl FnMut(usize, usize)) {
    let at = |p: usize| if p < end { Some(cps[p]) } else { None };
    let fl = |p: usize| {
        if p < end {
            flags(cps[p])
        } else {
            CpFlags::NONE
        }
    };
    let mut prev_end = ini;
    let mut emit = |to: usize| {
        if to > prev_end {
            word(prev_end, to);
        }
        prev_end = to;
    };
    let mut pos = ini;
    while pos < end {
        let cp = cps[pos];
        let f = fl(pos);

        // 's 't 're 've 'm 'll 'd
        if cp == '\'' as u32 && pos + 1 < end {
            let n = cps[pos + 1];
            if matches!(char::from_u32(n), Some('s' | 't' | 'm' | 'd')) {
                pos += 2;
                emit(pos);
                continue;
            }
            if let Some(nn) = at(pos + 2) {
                let pair = (char::from_u32(n), char::from_u32(nn));
                if matches!(
                    pair,
                    (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l'))
                ) {
                    pos += 3;
                    emit(pos);
                    continue;
                }
            }
        }

        let space = cp == ' ' as u32;
        let mut f2 = if space { fl(pos + 1) } else { f };
        // ` ?\p{L}+`
        if f2.letter {
            pos += space as usize;
            while f2.letter {
                pos += 1;
                f2 = fl(pos);
            }
            emit(pos);
            continue;
        }
        // ` ?\p{N}+`
        if f2.number {
            pos += space as usize;
            while f2.number {
                pos += 1;
                f2 = fl(pos);
            }
            emit(pos);
            continue;
        }
        // ` ?[^\s\p{L}\p{N}]+`
        let other = |f: CpFlags| !(f.whitespace || f.letter || f.number) && f.any;
        if other(f2) {
            pos += space as usize;
            while other(f2) {
                pos += 1;
                f2 = fl(pos);
            }
            emit(pos);
            continue;
        }

        let mut n_ws = 0;
        while fl(pos + n_ws).whitespace {
            n_ws += 1;
        }
        // `\s+(?!\S)`: a run followed by more text leaves its last space for the next word.
        if n_ws > 1 && at(pos + n_ws).is_some() {
            pos += n_ws - 1;
            emit(pos);
            continue;
        }
        // `\s+`
        if n_ws > 0 {
            pos += n_ws;
            emit(pos);
            continue;
        }
        // No alternative matched: the codepoint stands alone.
        pos += 1;
        emit(pos);
    }
    emit(end);
}
