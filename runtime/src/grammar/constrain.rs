//! Grammar-constrained sampling: the next token is one whose text keeps the output inside the
//! grammar, and end-of-generation comes only where the grammar may end.
//!
//! As llama.cpp does it, the sampler's own choice is checked first (one trial through the
//! matcher). When the grammar rejects it and the draw reaches only the `k` most likely tokens
//! (greedy: 1, top-k: k), those are tried best first until `k` are allowed, and the draw is made
//! again among them: the same token a full mask gives, for a few trials. Otherwise (no top-k,
//! or too few of the best allowed) every token of the vocabulary is tried, the rejected ones
//! masked out, and the choice made again among the rest. The tokens' texts are
//! decoded once, when the constraint is made, and kept sorted: a mask first finds which bytes the
//! grammar takes next (256 trials), rejects every token that starts with another without trying
//! it, and rejects without a trial every token that shares a rejected prefix with the one before
//! it in sorted order. Token references (`<[id]>`, `!<[id]>`) on the grammar's stacks allow
//! their tokens by id, text or not (a control token such as `<|im_start|>` has no text and is
//! reachable only so).

use super::{Grammar, Matcher, MatcherLimits};
use crate::arena::Arena;
use crate::error::Result;
use crate::sampler::Sampler;
use crate::tokenizer::{TokenId, TokenKind, Tokenizer};

/// A grammar's matcher, the vocabulary's texts, and the memory to mask its logits.
pub struct Constraint<'g, 'm> {
    matcher: Matcher<'g, 'm>,
    masked: &'m mut [f32],
    /// Token `id`'s text is `text[offs[id]..offs[id + 1]]` (empty: end-of-generation or a token
    /// that is never allowed).
    offs: &'m mut [u32],
    text: &'m mut [u8],
    /// The tokens with text, sorted by it, and each one's common prefix with the one before.
    order: &'m mut [u32],
    lcp: &'m mut [u16],
    /// The most likely tokens, tried in order when the sampler's choice is rejected.
    cands: &'m mut [u32],
    /// Full-vocabulary masks computed so far (the sampler's choice was rejected, and so were
    /// more of the most likely tokens than its draw reaches).
    pub masks: u64,
}

/// Most candidates tried, best first, before the whole vocabulary is masked (a quarter of it
/// is the largest top-k served so).
const MAX_CANDIDATES: usize = 256;

/// Whether a token may ever be produced under a grammar (as text).
fn is_text(tok: &Tokenizer<'_>, id: TokenId) -> bool {
    !tok.is_eog(id)
        && matches!(
            tok.kind(id),
            Some(TokenKind::Normal | TokenKind::Byte | TokenKind::UserDefined)
        )
}

/// Bytes of every text token's text.
fn text_bytes(tok: &Tokenizer<'_>) -> usize {
    let mut n = 0;
    for id in 0..tok.vocab_size() as TokenId {
        if is_text(tok, id) {
            tok.decode_token(id, false, &mut |b| n += b.len());
        }
    }
    n
}

impl<'g, 'm> Constraint<'g, 'm> {
    /// Arena bytes for the vocabulary of `tok`.
    pub fn bytes_needed(limits: &MatcherLimits, tok: &Tokenizer<'_>) -> usize {
        let n = tok.vocab_size();
        Matcher::bytes_needed(limits)
            + Arena::size_of::<f32>(n)
            + Arena::size_of::<u32>(n + 1)
            + Arena::size_of::<u8>(text_bytes(tok))
            + Arena::size_of::<u32>(n)
            + Arena::size_of::<u16>(n)
            + Arena::size_of::<u32>(MAX_CANDIDATES)
    }

    /// A constraint at the start of `g`, for the vocabulary of `tok` (its size is the model's).
    pub fn new(
        g: Grammar<'g>,
        arena: &mut Arena<'m>,
        limits: &MatcherLimits,
        tok: &Tokenizer<'_>,
    ) -> Result<Self> {
        let n = tok.vocab_size();
        if let Some(id) = g.max_token_ref().filter(|&id| id as usize >= n) {
            use core::fmt::Write;
            let mut detail = crate::error::Detail::new("");
            let _ = write!(detail, "<[{id}]>, in a vocabulary of {n} tokens");
            return Err(crate::error::Error::Grammar {
                reason: "a token reference beyond the vocabulary",
                detail,
            });
        }
        let offs = arena.alloc::<u32>(n + 1, "grammar token table")?;
        let text = arena.alloc::<u8>(text_bytes(tok), "grammar token table")?;
        let mut at = 0usize;
        let mut n_text = 0;
        for (id, off) in offs.iter_mut().enumerate().take(n) {
            *off = at as u32;
            if is_text(tok, id as TokenId) {
                let start = at;
                tok.decode_token(id as TokenId, false, &mut |b| {
                    let end = (at + b.len()).min(text.len());
                    text[at..end].copy_from_slice(&b[..end - at]);
                    at = end;
                });
                n_text += (at > start) as usize;
            }
        }
        offs[n] = at as u32;
        let order = arena.alloc::<u32>(n_text, "grammar token order")?;
        let mut k = 0;
        for (id, w) in offs.windows(2).enumerate() {
            if w[1] > w[0] {
                order[k] = id as u32;
                k += 1;
            }
        }
        let span = |id: u32| offs[id as usize] as usize..offs[id as usize + 1] as usize;
        order.sort_unstable_by(|&a, &b| text[span(a)].cmp(&text[span(b)]));
        let lcp = arena.alloc::<u16>(n_text, "grammar token order")?;
        for (i, l) in lcp.iter_mut().enumerate() {
            *l = if i == 0 {
                0
            } else {
                let (a, b) = (&text[span(order[i - 1])], &text[span(order[i])]);
                a.iter()
                    .zip(b)
                    .take_while(|(x, y)| x == y)
                    .count()
                    .min(u16::MAX as usize) as u16
            };
        }
        Ok(Constraint {
            matcher: Matcher::new(g, arena, limits)?,
            masked: arena.alloc(n, "grammar logits mask")?,
            offs,
            text,
            order,
            lcp,
            cands: arena.alloc(MAX_CANDIDATES, "grammar candidates")?,
            masks: 0,
        })
    }

    /// The matcher (where the output stands in the grammar).
    pub fn matcher(&self) -> &Matcher<'g, 'm> {
        &self.matcher
    }

    /// Back to the start of the grammar.
    pub fn reset(&mut self) -> Result<()> {
        self.masks = 0;
        self.matcher.reset()
    }

    fn token_text(&self, id: TokenId) -> &[u8] {
        let i = id as usize;
        match (self.offs.get(i), self.offs.get(i + 1)) {
            (Some(&a), Some(&b)) => &self.text[a as usize..b as usize],
            _ => &[],
        }
    }

    /// Tries `bytes` from the current state: `None` when all are taken, else the index of the
    /// first byte refused.
    fn trial(&mut self, id: TokenId) -> Result<Option<usize>> {
        let i = id as usize;
        let (a, b) = (self.offs[i] as usize, self.offs[i + 1] as usize);
        self.matcher.begin_trial();
        let mut refused = None;
        for j in a..b {
            match self.matcher.accept_bytes(&self.text[j..j + 1]) {
                Ok(true) => {}
                Ok(false) => {
                    refused = Some(j - a);
                    break;
                }
                Err(e) => {
                    self.matcher.end_trial();
                    return Err(e);
                }
            }
        }
        self.matcher.end_trial();
        Ok(refused)
    }

    /// Whether token `id` may come next.
    pub fn allows(&mut self, tok: &Tokenizer<'_>, id: TokenId) -> Result<bool> {
        if tok.is_eog(id) {
            return Ok(self.matcher.is_complete());
        }
        if self.matcher.token_allowed(id) {
            return Ok(true);
        }
        // A token with no text would leave the grammar where it is: never chosen.
        if self.token_text(id).is_empty() {
            return Ok(false);
        }
        Ok(self.trial(id)?.is_none())
    }

    /// The next token: the sampler's choice when the grammar allows it, else its choice among
    /// the tokens the grammar allows; `None` when the grammar allows none (a dead end).
    pub fn sample(
        &mut self,
        sampler: &mut Sampler<'_>,
        tok: &Tokenizer<'_>,
        logits: &[f32],
    ) -> Result<Option<TokenId>> {
        let first = sampler.sample(logits);
        if self.allows(tok, first)? {
            return Ok(Some(first));
        }
        if let Some(id) = self.sample_among_best(sampler, tok, logits)? {
            return Ok(Some(id));
        }
        self.masks += 1;
        // The bytes the grammar takes next.
        let mut takes = [false; 256];
        for (b, t) in takes.iter_mut().enumerate() {
            self.matcher.begin_trial();
            *t = self.matcher.accept_bytes(&[b as u8])?;
            self.matcher.end_trial();
        }
        let n = logits.len().min(self.masked.len());
        self.masked[..n].fill(f32::NEG_INFINITY);
        // End-of-generation tokens, where the grammar may end.
        let complete = self.matcher.is_complete();
        let mut any = false;
        if complete {
            for &id in tok.eog_tokens() {
                if let Some(&l) = logits.get(id as usize) {
                    self.masked[id as usize] = l;
                    any = true;
                }
            }
        }
        // Text tokens in sorted order; `refused`: the previous token's first refused byte.
        let mut refused: Option<usize> = None;
        for k in 0..self.order.len() {
            let id = self.order[k];
            let shared = self.lcp[k] as usize;
            if refused.is_some_and(|r| shared > r) {
                // Same refused prefix as the token before.
                continue;
            }
            let first_byte = self.text[self.offs[id as usize] as usize];
            refused = if !takes[first_byte as usize] {
                Some(0)
            } else {
                self.trial(id)?
            };
            if refused.is_none() && (id as usize) < n {
                self.masked[id as usize] = logits[id as usize];
                any = true;
            }
        }
        // Tokens the references on the stacks' tops take by id.
        let Constraint {
            matcher, masked, ..
        } = self;
        for (not, v) in matcher.token_tops() {
            if !not {
                if (v as usize) < n && !tok.is_eog(v) {
                    masked[v as usize] = logits[v as usize];
                    any = true;
                }
                continue;
            }
            for id in 0..n as TokenId {
                if id != v && !tok.is_eog(id) && tok.kind(id) != Some(TokenKind::Unused) {
                    masked[id as usize] = logits[id as usize];
                    any = true;
                }
            }
        }
        if !any {
            return Ok(None);
        }
        Ok(self.draw_masked(sampler, n))
    }

    /// The sampler's draw from the masked logits (it keeps to finite ones while there are any).
    fn draw_masked(&mut self, sampler: &mut Sampler<'_>, n: usize) -> Option<TokenId> {
        let id = sampler.sample(&self.masked[..n]);
        self.masked
            .get(id as usize)
            .is_some_and(|l| l.is_finite())
            .then_some(id)
    }

    /// When the sampler's draw reaches only its `k` most likely tokens (greedy, top-k up to 64):
    /// the draw among the tokens the grammar allows, found by trying the 256 most likely in
    /// order until `k` are allowed; `None` when more would have to be tried (the caller masks
    /// the whole vocabulary). Same token as the full mask: the draw sees the same `k` tokens with
    /// the same logits, every other one masked.
    fn sample_among_best(
        &mut self,
        sampler: &mut Sampler<'_>,
        tok: &Tokenizer<'_>,
        logits: &[f32],
    ) -> Result<Option<TokenId>> {
        let Some(k) = sampler.reach() else {
            return Ok(None);
        };
        let m = self.cands.len();
        if k == 0 || k > m / 4 {
            return Ok(None);
        }
        // The m most likely tokens after the penalties, best first (ties: lower id first, as
        // the sampler ranks them).
        let pen = sampler.penalized(logits);
        let cands = &mut self.cands[..m];
        let mut len = 0;
        for (id, &v) in pen.iter().enumerate() {
            if v.is_nan() || (len == m && v <= pen[cands[m - 1] as usize]) {
                continue;
            }
            let at = cands[..len].partition_point(|&c| pen[c as usize] >= v);
            let end = len.min(m - 1);
            cands.copy_within(at..end, at + 1);
            cands[at] = id as u32;
            len = (len + 1).min(m);
        }
        let n = logits.len().min(self.masked.len());
        self.masked[..n].fill(f32::NEG_INFINITY);
        let mut found = 0;
        for i in 0..len {
            let id = self.cands[i];
            if (id as usize) < n && self.allows(tok, id)? {
                self.masked[id as usize] = logits[id as usize];
                found += 1;
                if found == k {
                    break;
                }
            }
        }
        // Fewer than k allowed among the m: the draw could reach tokens not tried.
        if found < k {
            return Ok(None);
        }
        Ok(self.draw_masked(sampler, n))
    }

    /// Moves the grammar past token `id` (which [`Constraint::allows`]).
    pub fn accept(&mut self, tok: &Tokenizer<'_>, id: TokenId) -> Result<()> {
        if tok.is_eog(id) {
            return Ok(());
        }
        let i = id as usize;
        let (a, b) = match (self.offs.get(i), self.offs.get(i + 1)) {
            (Some(&a), Some(&b)) => (a as usize, b as usize),
            _ => return Ok(()),
        };
        let Constraint { matcher, text, .. } = self;
        matcher.accept_token(id, &text[a..b]).map(|_| ())
    }
}
