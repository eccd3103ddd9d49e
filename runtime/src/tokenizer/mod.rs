//! Tokenizers built from the GGUF vocabulary: byte-level BPE (`tokenizer.ggml.model = gpt2`) and
//! SentencePiece-style (`llama`).
//!
//! Encoding, as llama.cpp does it:
//! 1. special tokens (control, user-defined, unknown) are found in the raw text, longest first;
//! 2. BPE: the text between them is decoded to codepoints and split into words by the model's
//!    pre-tokenizer ([`pretokenize`]); each word's UTF-8 bytes become GPT-2 alphabet symbols and
//!    are merged by rank ([`bpe`]);
//! 3. SentencePiece: the text between them (after a space when it follows a special token or
//!    starts the text, if `add_space_prefix`) has its spaces escaped to `▁` and is merged by
//!    token score, with `<0xNN>` byte fallback ([`spm`]).
//!
//! All tables (a hash index from text to id, the merge table) live in caller-provided memory, so the
//! tokenizer works without an allocator; token strings stay in the model file.

pub mod bpe;
mod heap;
pub mod pretokenize;
pub mod spm;
pub mod stream;
pub mod unicode;
#[rustfmt::skip]
mod unicode_tables;

pub use pretokenize::PreTokenizer;
pub use stream::Utf8Stream;
pub use unicode_tables::UNICODE_VERSION;

use crate::arena::Arena;
use crate::error::{Error, Result};
use crate::gguf::{keys, Gguf, Value};
use bpe::{Bigram, Symbol};

/// A token id.
pub type TokenId = u32;

/// "No token" in tables (also: a byte the vocabulary has no token for).
pub const NO_TOKEN: TokenId = u32::MAX;

/// Largest vocabulary accepted.
pub const MAX_VOCAB: usize = 1 << 20;

/// What a vocabulary entry is (`tokenizer.ggml.token_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum TokenKind {
    /// Ordinary text.
    Normal = 1,
    /// The unknown token.
    Unknown = 2,
    /// A control token such as `<|im_start|>`: matched in text, printed only on request.
    Control = 3,
    /// A user-added token: matched in text and printed as its text.
    UserDefined = 4,
    /// Never produced.
    Unused = 5,
    /// A raw byte token.
    Byte = 6,
}

impl TokenKind {
    fn from_i64(v: i64) -> TokenKind {
        match v {
            2 => TokenKind::Unknown,
            3 => TokenKind::Control,
            4 => TokenKind::UserDefined,
            5 => TokenKind::Unused,
            6 => TokenKind::Byte,
            _ => TokenKind::Normal,
        }
    }

    /// Matched as a whole inside text when special tokens are parsed.
    pub fn is_special(self) -> bool {
        matches!(
            self,
            TokenKind::Control | TokenKind::UserDefined | TokenKind::Unknown
        )
    }
}

/// Where a token's text sits inside the vocabulary array of the file.
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct TokRef {
    off: u32,
    len: u32,
}

/// One merge rule: `left` + `right` → `result`, with its priority.
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Merge {
    left: u32,
    right: u32,
    rank: u32,
    result: u32,
}

/// The vocabulary's tokenizer model (`tokenizer.ggml.model`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VocabKind {
    /// Byte-level BPE (`gpt2`).
    Bpe,
    /// SentencePiece-style merging by score (`llama`).
    Spm,
}

/// SentencePiece's escaped space, `▁` (U+2581).
const SPM_SPACE: &[u8] = "\u{2581}".as_bytes();

/// Texts llama.cpp treats as end-of-generation when the vocabulary has them.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
];

/// Most end-of-generation tokens tracked.
const MAX_EOG: usize = 8;

/// The tokenizer: vocabulary views into the model file plus lookup tables in an arena.
pub struct Tokenizer<'a> {
    kind: VocabKind,
    /// Token scores (SentencePiece merge priorities; empty for BPE).
    scores: &'a [f32],
    /// SentencePiece: a space is put before text that starts the input or follows a special token.
    add_space_prefix: bool,
    strings: &'a [u8],
    toks: &'a [TokRef],
    kinds: &'a [u8],
    /// Open-addressing hash index from token text to id (`NO_TOKEN` = empty slot); its length
    /// is a power of two at least twice the vocabulary.
    index: &'a [u32],
    /// Merge rules sorted by (left, right).
    merges: &'a [Merge],
    /// Special token ids, longest text first.
    specials: &'a [u32],
    byte_token: [TokenId; 256],
    pre: PreTokenizer,
    bos: Option<TokenId>,
    eos: Option<TokenId>,
    add_bos: bool,
    add_eos: bool,
    eog: [TokenId; MAX_EOG],
    n_eog: usize,
    dropped_merges: usize,
}

impl<'a> Tokenizer<'a> {
    /// Bytes of arena [`Tokenizer::from_gguf`] needs for this file's vocabulary.
    pub fn memory_needed(g: &Gguf<'_>) -> Result<usize> {
        let n = vocab_array(g)?.len();
        let m = g
            .get(keys::MERGES)
            .and_then(|v| v.as_array())
            .map_or(0, |a| a.len());
        let spm = g.get_str(keys::TOKENIZER_MODEL)? == Some("llama");
        Ok(Arena::size_of::<TokRef>(n)
            + Arena::size_of::<f32>(if spm { n } else { 0 })
            + Arena::size_of::<u8>(n)
            + Arena::size_of::<u32>(index_len(n))
            + Arena::size_of::<Merge>(m)
            + Arena::size_of::<u32>(n))
    }

    /// Builds the tokenizer from the GGUF metadata, with its tables in `arena`.
    pub fn from_gguf(g: &Gguf<'a>, arena: &mut Arena<'a>) -> Result<Self> {
        let kind = match g.get_str(keys::TOKENIZER_MODEL)? {
            Some("gpt2") => VocabKind::Bpe,
            Some("llama") => VocabKind::Spm,
            Some(_) => {
                return Err(Error::Tokenizer(
                    "only byte-level BPE ('gpt2') and SentencePiece ('llama') vocabularies are supported",
                ))
            }
            None => return Err(Error::MissingKey(keys::TOKENIZER_MODEL)),
        };
        let pre = match kind {
            VocabKind::Bpe => {
                let pre_name = g.get_str(keys::TOKENIZER_PRE)?.unwrap_or("gpt2");
                PreTokenizer::from_name(pre_name).ok_or(Error::Tokenizer(
                    "this pre-tokenizer (tokenizer.ggml.pre) is not supported",
                ))?
            }
            // SentencePiece splits nothing before merging.
            VocabKind::Spm => PreTokenizer::Gpt2,
        };

        // Token texts: remember where each one is inside the array's bytes.
        let arr = vocab_array(g)?;
        let n = arr.len();
        let strings = arr_bytes(&arr);
        if strings.len() > u32::MAX as usize {
            return Err(Error::Tokenizer("vocabulary strings exceed 4 GiB"));
        }
        let toks = arena.alloc::<TokRef>(n, "tokenizer token table")?;
        let mut pos = 0usize;
        for t in toks.iter_mut() {
            let len_bytes: [u8; 8] = strings
                .get(pos..pos + 8)
                .and_then(|b| b.try_into().ok())
                .ok_or(Error::Tokenizer("vocabulary array is malformed"))?;
            let len = u64::from_le_bytes(len_bytes) as usize;
            pos += 8;
            if pos + len > strings.len() {
                return Err(Error::Tokenizer("vocabulary array is malformed"));
            }
            *t = TokRef {
                off: pos as u32,
                len: len as u32,
            };
            pos += len;
        }

        // Token kinds (all normal when the file has no types).
        let kinds = arena.alloc::<u8>(n, "tokenizer token kinds")?;
        kinds.fill(TokenKind::Normal as u8);
        if let Some(v) = g.get(keys::TOKEN_TYPE) {
            let a = v.as_array().ok_or(Error::BadKey {
                key: keys::TOKEN_TYPE,
                reason: "not an array",
            })?;
            if a.len() != n {
                return Err(Error::BadKey {
                    key: keys::TOKEN_TYPE,
                    reason: "length differs from the vocabulary",
                });
            }
            for (i, k) in kinds.iter_mut().enumerate() {
                let t = a
                    .get_fixed(i)
                    .and_then(|v| v.as_i64())
                    .ok_or(Error::BadKey {
                        key: keys::TOKEN_TYPE,
                        reason: "not an integer array",
                    })?;
                *k = TokenKind::from_i64(t) as u8;
            }
        }

        let text_of = |id: u32| -> &'a [u8] {
            let t = toks[id as usize];
            &strings[t.off as usize..(t.off + t.len) as usize]
        };
        // Text → id index. Built in one pass (a sorted index cost ~70 ms of load time on a 49k
        // vocabulary; this is a few). A text that appears twice maps to its last id, as in
        // llama.cpp's token_to_id map.
        let index = arena.alloc::<u32>(index_len(n), "tokenizer index")?;
        index.fill(NO_TOKEN);
        let mask = index.len() - 1;
        for id in 0..n as u32 {
            let text = text_of(id);
            let mut slot = hash(text) as usize & mask;
            loop {
                let cur = index[slot];
                if cur == NO_TOKEN || text_of(cur) == text {
                    index[slot] = id;
                    break;
                }
                slot = (slot + 1) & mask;
            }
        }

        // Scores, for SentencePiece (a missing array scores every token 0).
        let scores: &'a [f32] = match kind {
            VocabKind::Bpe => &[],
            VocabKind::Spm => {
                let out = arena.alloc::<f32>(n, "tokenizer scores")?;
                out.fill(0.0);
                if let Some(v) = g.get(keys::SCORES) {
                    let a = v.as_array().ok_or(Error::BadKey {
                        key: keys::SCORES,
                        reason: "not an array",
                    })?;
                    if a.len() != n {
                        return Err(Error::BadKey {
                            key: keys::SCORES,
                            reason: "length differs from the vocabulary",
                        });
                    }
                    for (i, o) in out.iter_mut().enumerate() {
                        *o = a
                            .get_fixed(i)
                            .and_then(|v| v.as_f64())
                            .ok_or(Error::BadKey {
                                key: keys::SCORES,
                                reason: "not a number array",
                            })? as f32;
                    }
                }
                out
            }
        };

        let mut tok = Tokenizer {
            kind,
            scores,
            add_space_prefix: false,
            strings,
            toks,
            kinds,
            index,
            merges: &[],
            specials: &[],
            byte_token: [NO_TOKEN; 256],
            pre,
            bos: None,
            eos: None,
            add_bos: false,
            add_eos: false,
            eog: [NO_TOKEN; MAX_EOG],
            n_eog: 0,
            dropped_merges: 0,
        };

        // Single-byte symbols: GPT-2 alphabet characters (BPE), `<0xNN>` tokens or else the byte
        // itself (SentencePiece byte fallback).
        for b in 0..=255u8 {
            let mut buf = [0u8; 4];
            tok.byte_token[b as usize] = match kind {
                VocabKind::Bpe => {
                    let len = unicode::encode_utf8(unicode::byte_to_codepoint(b), &mut buf);
                    tok.find(&buf[..len])
                }
                VocabKind::Spm => {
                    const HEX: &[u8; 16] = b"0123456789ABCDEF";
                    let name = [
                        b'<',
                        b'0',
                        b'x',
                        HEX[(b >> 4) as usize],
                        HEX[(b & 15) as usize],
                        b'>',
                    ];
                    tok.find(&name).or_else(|| tok.find(&[b]))
                }
            }
            .unwrap_or(NO_TOKEN);
        }

        // Merge rules: "left right" → (left id, right id, rank, result id). SentencePiece
        // vocabularies merge by score and have none.
        let merges_arr = match (kind, g.get(keys::MERGES)) {
            (VocabKind::Bpe, None) => return Err(Error::MissingKey(keys::MERGES)),
            (VocabKind::Spm, None) => None,
            (_, Some(v)) => Some(v.as_array().ok_or(Error::BadKey {
                key: keys::MERGES,
                reason: "not an array",
            })?),
        };
        let merges_len = merges_arr.as_ref().map_or(0, |a| a.len());
        let merges = arena.alloc::<Merge>(merges_len, "tokenizer merge table")?;
        let mut n_merges = 0;
        let mut concat = [0u8; 512];
        for (rank, v) in merges_arr.iter().flat_map(|a| a.iter()).enumerate() {
            let Value::Str(s) = v else {
                return Err(Error::BadKey {
                    key: keys::MERGES,
                    reason: "not a string array",
                });
            };
            // Split at the first space after the first byte, as llama.cpp does.
            let Some(sp) = s.iter().skip(1).position(|&c| c == b' ').map(|p| p + 1) else {
                tok.dropped_merges += 1;
                continue;
            };
            let (l, r) = (&s[..sp], &s[sp + 1..]);
            let ids = (tok.find(l), tok.find(r));
            let result = if l.len() + r.len() <= concat.len() {
                concat[..l.len()].copy_from_slice(l);
                concat[l.len()..l.len() + r.len()].copy_from_slice(r);
                tok.find(&concat[..l.len() + r.len()])
            } else {
                None
            };
            match (ids, result) {
                ((Some(left), Some(right)), Some(result)) => {
                    merges[n_merges] = Merge {
                        left,
                        right,
                        rank: rank as u32,
                        result,
                    };
                    n_merges += 1;
                }
                // A rule whose parts or result are not tokens can never fire on token ids.
                _ => tok.dropped_merges += 1,
            }
        }
        let merges = &mut merges[..n_merges];
        merges.sort_unstable_by_key(|m| (m.left, m.right, m.rank));
        // Keep the first (lowest-rank) rule of duplicated pairs, as llama.cpp's map does.
        let mut w = 0;
        for i in 0..merges.len() {
            if w == 0
                || (merges[w - 1].left, merges[w - 1].right) != (merges[i].left, merges[i].right)
            {
                merges[w] = merges[i];
                w += 1;
            }
        }
        tok.merges = &merges[..w];

        // Special tokens, longest first (ties by id, for a deterministic order).
        let n_special = tok
            .kinds
            .iter()
            .filter(|&&k| TokenKind::from_i64(k as i64).is_special())
            .count();
        let specials = arena.alloc::<u32>(n_special, "tokenizer special tokens")?;
        let mut j = 0;
        for (i, &k) in tok.kinds.iter().enumerate() {
            if TokenKind::from_i64(k as i64).is_special() {
                specials[j] = i as u32;
                j += 1;
            }
        }
        specials.sort_unstable_by(|&a, &b| text_of(b).len().cmp(&text_of(a).len()).then(a.cmp(&b)));
        tok.specials = specials;

        // Special ids and flags.
        let id_key = |key: &'static str| -> Result<Option<TokenId>> {
            match g.get_u64(key)? {
                Some(id) if id < n as u64 => Ok(Some(id as u32)),
                Some(_) => Err(Error::BadKey {
                    key,
                    reason: "token id outside the vocabulary",
                }),
                None => Ok(None),
            }
        };
        tok.bos = id_key(keys::BOS_ID)?;
        tok.eos = id_key(keys::EOS_ID)?;
        // Defaults as llama.cpp's: SentencePiece adds BOS and a space prefix; BPE adds BOS only
        // for the pre-tokenizers that do (Llama 3).
        let (bos_default, prefix_default) = match kind {
            VocabKind::Bpe => (pre.adds_bos_by_default(), false),
            VocabKind::Spm => (true, true),
        };
        tok.add_bos = g.get_bool(keys::ADD_BOS)?.unwrap_or(bos_default);
        tok.add_space_prefix = g
            .get_bool(keys::ADD_SPACE_PREFIX)?
            .unwrap_or(prefix_default);
        tok.add_eos = g.get_bool(keys::ADD_EOS)?.unwrap_or(false);
        for id in [tok.eos, id_key(keys::EOT_ID)?, id_key(keys::EOM_ID)?]
            .into_iter()
            .flatten()
        {
            tok.add_eog(id);
        }
        for t in EOG_TEXTS {
            if let Some(id) = tok.find(t.as_bytes()) {
                tok.add_eog(id);
            }
        }
        Ok(tok)
    }

    fn add_eog(&mut self, id: TokenId) {
        if self.n_eog < MAX_EOG && !self.eog[..self.n_eog].contains(&id) {
            self.eog[self.n_eog] = id;
            self.n_eog += 1;
        }
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.toks.len()
    }

    /// The pre-tokenizer in use (BPE vocabularies).
    pub fn pre_tokenizer(&self) -> PreTokenizer {
        self.pre
    }

    /// The tokenizer model.
    pub fn vocab_kind(&self) -> VocabKind {
        self.kind
    }

    /// Whether SentencePiece text gets a leading space (`add_space_prefix`).
    pub fn add_space_prefix(&self) -> bool {
        self.add_space_prefix
    }

    /// Merge rules in use.
    pub fn merge_count(&self) -> usize {
        self.merges.len()
    }

    /// Merge rules that could not be used (parts or result not in the vocabulary).
    pub fn dropped_merge_count(&self) -> usize {
        self.dropped_merges
    }

    /// Beginning-of-sequence token.
    pub fn bos(&self) -> Option<TokenId> {
        self.bos
    }

    /// End-of-sequence token.
    pub fn eos(&self) -> Option<TokenId> {
        self.eos
    }

    /// Whether encoding with `add_special` prepends BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Tokens that end generation.
    pub fn eog_tokens(&self) -> &[TokenId] {
        &self.eog[..self.n_eog]
    }

    /// Whether `id` ends generation.
    pub fn is_eog(&self, id: TokenId) -> bool {
        self.eog_tokens().contains(&id)
    }

    /// Special tokens (control, user-defined, unknown), longest text first.
    pub fn special_tokens(&self) -> &[TokenId] {
        self.specials
    }

    /// The kind of token `id`.
    pub fn kind(&self, id: TokenId) -> Option<TokenKind> {
        self.kinds
            .get(id as usize)
            .map(|&k| TokenKind::from_i64(k as i64))
    }

    /// The token for the single byte `b` (its GPT-2 byte-level character), if the vocabulary
    /// has one; bytes without one are dropped when encoding, as llama.cpp drops them.
    pub fn byte_token(&self, b: u8) -> Option<TokenId> {
        Some(self.byte_token[b as usize]).filter(|&t| t != NO_TOKEN)
    }

    /// The token's text as stored in the vocabulary (GPT-2 alphabet for normal tokens).
    pub fn token_text(&self, id: TokenId) -> Option<&'a [u8]> {
        let t = self.toks.get(id as usize)?;
        self.strings.get(t.off as usize..(t.off + t.len) as usize)
    }

    /// The id of the token whose vocabulary text is exactly `text`.
    pub fn find(&self, text: &[u8]) -> Option<TokenId> {
        let text_of = |id: u32| {
            let t = self.toks[id as usize];
            &self.strings[t.off as usize..(t.off + t.len) as usize]
        };
        let mask = self.index.len() - 1;
        let mut slot = hash(text) as usize & mask;
        loop {
            let id = self.index[slot];
            if id == NO_TOKEN {
                return None;
            }
            if text_of(id) == text {
                return Some(id);
            }
            slot = (slot + 1) & mask;
        }
    }

    /// Rank and result of merging `left` and `right`.
    fn merge_rank(&self, left: u32, right: u32) -> Option<(u32, u32)> {
        let i = self
            .merges
            .partition_point(|m| (m.left, m.right) < (left, right));
        self.merges
            .get(i)
            .filter(|m| m.left == left && m.right == right)
            .map(|m| (m.rank, m.result))
    }

    /// Encodes `text` (any bytes; invalid UTF-8 becomes U+FFFD per byte), calling `out` for each
    /// token. `parse_special` matches control tokens written in the text (user-defined ones always match); `add_special` adds BOS
    /// (and EOS) where the vocabulary asks for them. `scratch` must hold at least `text.len()`.
    pub fn encode(
        &self,
        text: &[u8],
        parse_special: bool,
        add_special: bool,
        scratch: &mut EncodeScratch<'_>,
        out: &mut dyn FnMut(TokenId) -> Result<()>,
    ) -> Result<()> {
        if text.len() > scratch.capacity() {
            return Err(Error::Capacity {
                what: "tokenizer scratch (text bytes)",
                needed: text.len() as u64,
                available: scratch.capacity() as u64,
            });
        }
        if add_special && self.add_bos {
            if let Some(b) = self.bos {
                out(b)?;
            }
        }
        let EncodeScratch {
            cpts,
            marks,
            word_ids,
            syms,
            heap,
        } = scratch;
        let marks = &mut marks[..text.len()];
        marks.fill(0);
        self.mark_specials(text, marks, parse_special);
        let mut p = 0;
        // SentencePiece: the text starts, or follows, a special token (space prefix).
        let mut after_special = true;
        while p < text.len() {
            if marks[p] != 0 {
                let id = marks[p] - 1;
                out(id)?;
                p += self.token_text(id).map_or(1, |t| t.len().max(1));
                after_special = true;
                continue;
            }
            let mut q = p;
            while q < text.len() && marks[q] == 0 {
                q += 1;
            }
            match self.kind {
                VocabKind::Bpe => self.encode_raw(&text[p..q], cpts, word_ids, syms, heap, out)?,
                VocabKind::Spm => {
                    let prefix = self.add_space_prefix && after_special;
                    self.encode_spm(&text[p..q], prefix, word_ids, syms, heap, out)?
                }
            }
            after_special = false;
            p = q;
        }
        if add_special && self.add_eos {
            if let Some(e) = self.eos {
                out(e)?;
            }
        }
        Ok(())
    }

    /// Marks special-token occurrences: `marks[start] = id + 1`, `u32::MAX` on the bytes after.
    /// Longest tokens first; each takes its leftmost non-overlapping occurrences in text not yet
    /// claimed — llama.cpp's partition order, so the same tokens win. User-defined tokens are
    /// matched always, control and unknown ones only with `parse_special` (as llama.cpp does).
    fn mark_specials(&self, text: &[u8], marks: &mut [u32], parse_special: bool) {
        for &id in self.specials {
            if !parse_special && self.kind(id) != Some(TokenKind::UserDefined) {
                continue;
            }
            let Some(t) = self.token_text(id) else {
                continue;
            };
            if t.is_empty() || t.len() > text.len() {
                continue;
            }
            let mut p = 0;
            while p + t.len() <= text.len() {
                // Skip ahead to the next candidate first byte.
                match text[p..=text.len() - t.len()]
                    .iter()
                    .position(|&c| c == t[0])
                {
                    Some(off) => p += off,
                    None => break,
                }
                if &text[p..p + t.len()] == t && marks[p..p + t.len()].iter().all(|&m| m == 0) {
                    marks[p] = id + 1;
                    marks[p + 1..p + t.len()].fill(u32::MAX);
                    p += t.len();
                } else {
                    p += 1;
                }
            }
        }
    }

    /// Escapes and merges SentencePiece text that holds no special tokens. The escaped text is
    /// built in `bytes_buf`'s memory and its symbols in `syms`'s (both sized by
    /// [`EncodeScratch`] for either tokenizer).
    fn encode_spm(
        &self,
        text: &[u8],
        prefix: bool,
        bytes_buf: &mut [u32],
        syms: &mut [Symbol],
        heap: &mut [Bigram],
        out: &mut dyn FnMut(TokenId) -> Result<()>,
    ) -> Result<()> {
        let buf: &mut [u8] = bytemuck::cast_slice_mut(bytes_buf);
        let mut n = 0;
        let mut push = |b: &[u8]| -> bool {
            if n + b.len() > buf.len() {
                return false;
            }
            buf[n..n + b.len()].copy_from_slice(b);
            n += b.len();
            true
        };
        let mut fits = !prefix || push(SPM_SPACE);
        for &c in text {
            fits &= if c == b' ' {
                push(SPM_SPACE)
            } else {
                push(&[c])
            };
        }
        let syms: &mut [spm::Sym] = bytemuck::cast_slice_mut(syms);
        let heap: &mut [spm::Pair] = bytemuck::cast_slice_mut(heap);
        if !fits || syms.len() < n || heap.len() < spm::heap_capacity(n) {
            return Err(Error::Capacity {
                what: "tokenizer scratch (escaped text)",
                needed: n as u64,
                available: syms.len() as u64,
            });
        }
        let mut result = Ok(());
        spm::merge(
            &buf[..n],
            |t| {
                self.find(t)
                    .map(|id| (id, self.scores.get(id as usize).copied().unwrap_or(0.0)))
            },
            |b| Some(self.byte_token[b as usize]).filter(|&t| t != NO_TOKEN),
            syms,
            heap,
            |id| {
                if result.is_ok() {
                    result = out(id);
                }
            },
        );
        result
    }

    /// Pre-tokenizes and merges text that holds no special tokens.
    fn encode_raw(
        &self,
        text: &[u8],
        cpts: &mut [u32],
        word_ids: &mut [u32],
        syms: &mut [Symbol],
        heap: &mut [Bigram],
        out: &mut dyn FnMut(TokenId) -> Result<()>,
    ) -> Result<()> {
        let mut n = 0;
        let mut pos = 0;
        while pos < text.len() {
            cpts[n] = unicode::next_codepoint(text, &mut pos);
            n += 1;
        }
        let cpts = &cpts[..n];
        let mut result = Ok(());
        self.pre.split(cpts, |a, b| {
            if result.is_err() {
                return;
            }
            let mut k = 0;
            for &cp in &cpts[a..b] {
                let mut buf = [0u8; 4];
                let len = unicode::encode_utf8(cp, &mut buf);
                for &byte in &buf[..len] {
                    word_ids[k] = self.byte_token[byte as usize];
                    k += 1;
                }
            }
            // A word that is itself a token is taken whole (Llama 3's `ignore_merges`).
            if self.pre.ignores_merges() && k > 1 {
                let mut whole = [0u8; 256];
                let mut len = 0;
                let mut fits = true;
                for &cp in &cpts[a..b] {
                    let mut buf = [0u8; 4];
                    let n = unicode::encode_utf8(cp, &mut buf);
                    for &byte in &buf[..n] {
                        let mut c = [0u8; 4];
                        let m = unicode::encode_utf8(unicode::byte_to_codepoint(byte), &mut c);
                        if len + m > whole.len() {
                            fits = false;
                            break;
                        }
                        whole[len..len + m].copy_from_slice(&c[..m]);
                        len += m;
                    }
                }
                if let Some(id) = fits.then(|| self.find(&whole[..len])).flatten() {
                    if result.is_ok() {
                        result = out(id);
                    }
                    return;
                }
            }
            let ok = bpe::merge_word(
                &word_ids[..k],
                |l, r| self.merge_rank(l, r),
                syms,
                heap,
                |id| {
                    if result.is_ok() {
                        result = out(id);
                    }
                },
            );
            if !ok && result.is_ok() {
                result = Err(Error::Capacity {
                    what: "tokenizer scratch (word)",
                    needed: k as u64,
                    available: syms.len() as u64,
                });
            }
        });
        result
    }

    /// The bytes token `id` stands for. Normal tokens map back from the GPT-2 alphabet; control
    /// and unknown tokens give their text only when `special` is set; unused tokens give nothing.
    pub fn decode_token(&self, id: TokenId, special: bool, sink: &mut dyn FnMut(&[u8])) {
        let (Some(text), Some(kind)) = (self.token_text(id), self.kind(id)) else {
            return;
        };
        match kind {
            TokenKind::Control | TokenKind::Unknown => {
                if special {
                    sink(text)
                }
            }
            TokenKind::UserDefined => sink(text),
            TokenKind::Unused => {}
            TokenKind::Byte if self.kind == VocabKind::Spm => {
                // `<0xNN>`.
                let hex = text.get(3..5).and_then(|h| core::str::from_utf8(h).ok());
                if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    sink(&[b]);
                }
            }
            TokenKind::Normal | TokenKind::Byte if self.kind == VocabKind::Spm => {
                // `▁` stands for a space.
                let mut rest = text;
                while !rest.is_empty() {
                    match rest.windows(3).position(|w| w == SPM_SPACE) {
                        Some(i) => {
                            sink(&rest[..i]);
                            sink(b" ");
                            rest = &rest[i + 3..];
                        }
                        None => {
                            sink(rest);
                            rest = &[];
                        }
                    }
                }
            }
            TokenKind::Normal | TokenKind::Byte => {
                let mut buf = [0u8; 64];
                let mut n = 0;
                let mut pos = 0;
                while pos < text.len() {
                    let cp = unicode::next_codepoint(text, &mut pos);
                    if n + 4 > buf.len() {
                        sink(&buf[..n]);
                        n = 0;
                    }
                    match unicode::codepoint_to_byte(cp) {
                        Some(b) => {
                            buf[n] = b;
                            n += 1;
                        }
                        // Not in the byte alphabet: pass the character through.
                        None => {
                            let mut c = [0u8; 4];
                            let len = unicode::encode_utf8(cp, &mut c);
                            buf[n..n + len].copy_from_slice(&c[..len]);
                            n += len;
                        }
                    }
                }
                if n > 0 {
                    sink(&buf[..n]);
                }
            }
        }
    }

    /// Encodes into a new vector, with scratch sized to the text.
    #[cfg(feature = "alloc")]
    pub fn encode_to_vec(
        &self,
        text: &[u8],
        parse_special: bool,
        add_special: bool,
    ) -> Result<alloc::vec::Vec<TokenId>> {
        let mut buf = alloc::vec![0u8; EncodeScratch::bytes_needed(text.len())];
        let mut arena = Arena::new(&mut buf);
        let mut scratch = EncodeScratch::new(&mut arena, text.len())?;
        let mut ids = alloc::vec::Vec::new();
        self.encode(text, parse_special, add_special, &mut scratch, &mut |id| {
            ids.push(id);
            Ok(())
        })?;
        Ok(ids)
    }

    /// Decodes tokens to bytes (control tokens included when `special`).
    #[cfg(feature = "alloc")]
    /// A SentencePiece vocabulary with `add_space_prefix` drops the space its encoder put
    /// before the text (from the first token only, as llama.cpp's detokenizer does).
    pub fn decode_to_vec(&self, ids: &[TokenId], special: bool) -> alloc::vec::Vec<u8> {
        let mut v = alloc::vec::Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            let start = v.len();
            self.decode_token(id, special, &mut |b| v.extend_from_slice(b));
            if i == 0 && self.add_space_prefix && v.get(start) == Some(&b' ') {
                v.remove(start);
            }
        }
        v
    }
}

/// Slots of the text → id index for `n` tokens (load factor at most 1/2).
fn index_len(n: usize) -> usize {
    (2 * n).next_power_of_two()
}

/// FNV-1a: small, fast on short strings, and good enough for token texts.
fn hash(text: &[u8]) -> u32 {
    text.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ b as u32).wrapping_mul(0x0100_0193)
    })
}

fn vocab_array<'a>(g: &Gguf<'a>) -> Result<crate::gguf::Array<'a>> {
    let a = g
        .get(keys::TOKENS)
        .ok_or(Error::MissingKey(keys::TOKENS))?
        .as_array()
        .ok_or(Error::BadKey {
            key: keys::TOKENS,
            reason: "not an array",
        })?;
    if a.elem_type() != crate::gguf::ValueType::String {
        return Err(Error::BadKey {
            key: keys::TOKENS,
            reason: "not a string array",
        });
    }
    if a.is_empty() || a.len() > MAX_VOCAB {
        return Err(Error::BadKey {
            key: keys::TOKENS,
            reason: "vocabulary size out of range",
        });
    }
    Ok(a)
}

fn arr_bytes<'a>(a: &crate::gguf::Array<'a>) -> &'a [u8] {
    a.raw_bytes()
}

/// Working memory for [`Tokenizer::encode`], sized for a maximum text length.
pub struct EncodeScratch<'s> {
    cpts: &'s mut [u32],
    marks: &'s mut [u32],
    word_ids: &'s mut [u32],
    syms: &'s mut [Symbol],
    heap: &'s mut [Bigram],
}

impl<'s> EncodeScratch<'s> {
    /// Arena bytes for texts up to `max_text` bytes.
    pub const fn bytes_needed(max_text: usize) -> usize {
        // A word of n input bytes has at most 3n UTF-8 bytes (each invalid byte becomes U+FFFD).
        // SentencePiece escapes each space to 3 bytes and may add one: at most 3n + 3.
        let n = if max_text == 0 { 1 } else { max_text };
        let w = 3 * n + 3;
        Arena::size_of::<u32>(n) * 2
            + Arena::size_of::<u32>(w)
            + Arena::size_of::<Symbol>(w)
            + Arena::size_of::<Bigram>(3 * w)
    }

    /// Carves scratch for texts up to `max_text` bytes out of `arena`.
    pub fn new(arena: &mut Arena<'s>, max_text: usize) -> Result<Self> {
        let n = max_text.max(1);
        let w = 3 * n + 3;
        Ok(EncodeScratch {
            cpts: arena.alloc(n, "tokenizer scratch")?,
            marks: arena.alloc(n, "tokenizer scratch")?,
            word_ids: arena.alloc(w, "tokenizer scratch")?,
            syms: arena.alloc(w, "tokenizer scratch")?,
            heap: arena.alloc(bpe::heap_capacity(w), "tokenizer scratch")?,
        })
    }

    /// Longest text (in bytes) this scratch can encode.
    pub fn capacity(&self) -> usize {
        self.cpts.len()
    }
}

#[cfg(test)]
mod tests;
