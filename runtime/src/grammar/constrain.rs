//! Grammar-constrained sampling: the next token is one whose text keeps the output inside the
//! grammar, and end-of-generation comes only where the grammar may end.
//!
//! As llama.cpp does it, the sampler's own choice is checked first (one trial through the
//! matcher); only when the grammar rejects it is every token of the vocabulary tried, the
//! rejected ones masked out, and the choice made again among the rest. Each token's first byte
//! is found once, when the constraint is made: a mask first finds which bytes the grammar takes
//! next (256 trials) and rejects every token that starts with another without trying it.

use super::{Grammar, Matcher, MatcherLimits};
use crate::arena::Arena;
use crate::error::Result;
use crate::sampler::Sampler;
use crate::tokenizer::{TokenId, TokenKind, Tokenizer};

/// "No first byte" in the token table.
const NO_BYTE: u16 = u16::MAX;

/// A grammar's matcher and the memory to mask a vocabulary's logits.
pub struct Constraint<'g, 'm> {
    matcher: Matcher<'g, 'm>,
    masked: &'m mut [f32],
    /// Each token's first byte (`NO_BYTE`: no text, or not a text token).
    first: &'m mut [u16],
    /// Full-vocabulary masks computed so far (how often the sampler's choice was rejected).
    pub masks: u64,
}

impl<'g, 'm> Constraint<'g, 'm> {
    /// Arena bytes for a vocabulary of `n_vocab` tokens.
    pub const fn bytes_needed(limits: &MatcherLimits, n_vocab: usize) -> usize {
        Matcher::bytes_needed(limits)
            + Arena::size_of::<f32>(n_vocab)
            + Arena::size_of::<u16>(n_vocab)
    }

    /// A constraint at the start of `g`, for the vocabulary of `tok` (its size is the model's).
    pub fn new(
        g: Grammar<'g>,
        arena: &mut Arena<'m>,
        limits: &MatcherLimits,
        tok: &Tokenizer<'_>,
    ) -> Result<Self> {
        let n_vocab = tok.vocab_size();
        let first = arena.alloc::<u16>(n_vocab, "grammar token table")?;
        for (id, f) in first.iter_mut().enumerate() {
            *f = NO_BYTE;
            let id = id as TokenId;
            if tok.is_eog(id)
                || !matches!(
                    tok.kind(id),
                    Some(TokenKind::Normal | TokenKind::Byte | TokenKind::UserDefined)
                )
            {
                continue;
            }
            tok.decode_token(id, false, &mut |b| {
                if *f == NO_BYTE {
                    if let Some(&c) = b.first() {
                        *f = c as u16;
                    }
                }
            });
        }
        Ok(Constraint {
            matcher: Matcher::new(g, arena, limits)?,
            masked: arena.alloc(n_vocab, "grammar logits mask")?,
            first,
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

    /// Whether token `id` may come next.
    pub fn allows(&mut self, tok: &Tokenizer<'_>, id: TokenId) -> Result<bool> {
        if tok.is_eog(id) {
            return Ok(self.matcher.is_complete());
        }
        match tok.kind(id) {
            Some(TokenKind::Normal | TokenKind::Byte | TokenKind::UserDefined) => {}
            _ => return Ok(false),
        }
        self.matcher.begin_trial();
        let (mut ok, mut any) = (true, false);
        let mut err = None;
        let m = &mut self.matcher;
        tok.decode_token(id, false, &mut |b| {
            if ok && err.is_none() && !b.is_empty() {
                any = true;
                match m.accept_bytes(b) {
                    Ok(true) => {}
                    Ok(false) => ok = false,
                    Err(e) => err = Some(e),
                }
            }
        });
        self.matcher.end_trial();
        if let Some(e) = err {
            return Err(e);
        }
        // A token with no text would leave the grammar where it is: never chosen.
        Ok(ok && any)
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
        self.masks += 1;
        // The bytes the grammar takes next.
        let mut takes = [false; 256];
        for (b, t) in takes.iter_mut().enumerate() {
            self.matcher.begin_trial();
            *t = self.matcher.accept_bytes(&[b as u8])?;
            self.matcher.end_trial();
        }
        let n = logits.len().min(self.masked.len());
        let mut any = false;
        for (id, &logit) in logits[..n].iter().enumerate() {
            let f = self.first[id];
            let ok = if f != NO_BYTE && !takes[f as usize] {
                false
            } else {
                self.allows(tok, id as TokenId)?
            };
            any |= ok;
            self.masked[id] = if ok { logit } else { f32::NEG_INFINITY };
        }
        if !any {
            return Ok(None);
        }
        let id = sampler.sample(&self.masked[..n]);
        // The sampler keeps to finite logits while there are any.
        Ok(self
            .masked
            .get(id as usize)
            .is_some_and(|l| l.is_finite())
            .then_some(id))
    }

    /// Moves the grammar past token `id` (which [`Constraint::allows`]).
    pub fn accept(&mut self, tok: &Tokenizer<'_>, id: TokenId) -> Result<()> {
        if tok.is_eog(id) {
            return Ok(());
        }
        let m = &mut self.matcher;
        let mut r = Ok(true);
        tok.decode_token(id, false, &mut |b| {
            if matches!(r, Ok(true)) {
                r = m.accept_bytes(b);
            }
        });
        r.map(|_| ())
    }
}
