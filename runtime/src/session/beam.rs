//! Beam search: keeps the `width` most likely continuations (by total log-probability) at every
//! step, each in its own session, and returns the best finished or surviving one by
//! length-normalised score: Σ log p / len^α.
//!
//! Deterministic: candidates are ordered by score, then parent beam, then token id. Beams share
//! the prompt, so forking a beam copies only the cache rows of its generated tokens. Buffers are
//! sized once ([`BeamScratch`]); nothing is allocated per token.

use super::Session;
use crate::arena::Arena;
use crate::error::{Error, Result};
use crate::tokenizer::TokenId;

/// Widest beam supported.
pub const MAX_BEAM: usize = 16;

/// Settings of [`beam_search`].
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BeamOptions {
    /// Beams kept (at most [`MAX_BEAM`], and no more than the sessions given).
    pub width: usize,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// α of the length normalisation (1: mean log-probability per token; 0: none).
    pub length_penalty: f32,
    /// Keep going past end-of-generation tokens.
    pub ignore_eos: bool,
}

/// The best sequence found.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BeamResult {
    /// Its length-normalised score.
    pub score: f32,
    /// Tokens generated (in [`BeamScratch::best`]), not counting an end-of-generation token.
    pub len: usize,
    /// True when it ended with an end-of-generation token.
    pub finished: bool,
}

/// A candidate continuation: a parent beam and a token.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Candidate {
    score: f32,
    parent: u32,
    token: TokenId,
}

/// Buffers of a beam search, sized for a width and a token limit.
pub struct BeamScratch<'a> {
    width: usize,
    max_tokens: usize,
    /// Tokens of each beam, `[2][width][max_tokens]` (this step's and the next).
    seqs: &'a mut [TokenId],
    /// The best finished sequence, `[max_tokens]`.
    best: &'a mut [TokenId],
}

impl<'a> BeamScratch<'a> {
    /// Arena bytes for `width` beams of up to `max_tokens` tokens.
    pub fn bytes_needed(width: usize, max_tokens: usize) -> usize {
        Arena::size_of::<TokenId>(2 * width * max_tokens) + Arena::size_of::<TokenId>(max_tokens)
    }

    /// Buffers in `arena`.
    pub fn new(arena: &mut Arena<'a>, width: usize, max_tokens: usize) -> Result<Self> {
        if width == 0 || width > MAX_BEAM {
            return Err(Error::InvalidArgument(
                "the beam width must be between 1 and 16",
            ));
        }
        let n = width
            .checked_mul(max_tokens)
            .and_then(|x| x.checked_mul(2))
            .ok_or(Error::InvalidArgument("too many tokens for a beam search"))?;
        Ok(BeamScratch {
            width,
            max_tokens,
            seqs: arena.alloc(n, "beam sequences")?,
            best: arena.alloc(max_tokens, "beam result")?,
        })
    }

    /// The best sequence of the last search.
    pub fn best(&self, r: &BeamResult) -> &[TokenId] {
        &self.best[..r.len]
    }
}

/// log Σ e^x, stable, summed in f64 (scores add up over many steps).
fn log_sum_exp(x: &[f32]) -> f32 {
    let max = x
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    if !max.is_finite() {
        return max;
    }
    let sum: f64 = x.iter().map(|&v| libm::exp((v - max) as f64)).sum();
    max + libm::log(sum) as f32
}

/// Inserts `c` into `top` (sorted best first, at most `k` long) if it belongs there.
fn keep_best(top: &mut [Candidate], n: &mut usize, k: usize, c: Candidate) {
    let better = |a: &Candidate, b: &Candidate| {
        a.score > b.score || (a.score == b.score && (a.parent, a.token) < (b.parent, b.token))
    };
    if *n == k && !better(&c, &top[k - 1]) {
        return;
    }
    let mut i = if *n < k { *n } else { k - 1 };
    if *n < k {
        *n += 1;
    }
    while i > 0 && better(&c, &top[i - 1]) {
        top[i] = top[i - 1];
        i -= 1;
    }
    top[i] = c;
}

fn normalised(score: f32, len: usize, alpha: f32) -> f32 {
    score / libm::powf(len.max(1) as f32, alpha)
}

/// Evaluates `prompt` and searches with `sessions.len()` ≥ `opts.width` sessions of the same
/// model and configuration (their contents are replaced). The best sequence ends up in
/// `scratch` ([`BeamScratch::best`]).
pub fn beam_search(
    sessions: &mut [Session<'_, '_>],
    prompt: &[TokenId],
    opts: &BeamOptions,
    scratch: &mut BeamScratch<'_>,
) -> Result<BeamResult> {
    let w = opts.width;
    if w == 0 || w > scratch.width || w > sessions.len() {
        return Err(Error::InvalidArgument(
            "the beam width must be at least 1 and at most the sessions and scratch given",
        ));
    }
    if opts.max_tokens > scratch.max_tokens {
        return Err(Error::InvalidArgument(
            "more tokens than the beam scratch holds",
        ));
    }
    if prompt.is_empty() {
        return Err(Error::InvalidArgument(
            "nothing to continue from: the prompt is empty",
        ));
    }
    if !(opts.length_penalty.is_finite()) {
        return Err(Error::InvalidArgument(
            "the length penalty must be a finite number",
        ));
    }
    let (first, rest) = sessions.split_at_mut(1);
    let s0 = &mut first[0];
    s0.reset();
    s0.eval(prompt)?;
    let shared = s0.n_past();
    let tok = &s0.model().tokenizer;
    for s in rest.iter_mut().take(w - 1) {
        s.reset();
        s.fork_from(s0, 0)?;
    }

    let mt = scratch.max_tokens;
    let (mut cur, mut next) = (0usize, 1usize);
    let seq = |buf: usize, beam: usize| (buf * w + beam) * mt;
    // Beam b lives in session slot[b]; score[b] is its total log-probability.
    let mut slot = [0usize; MAX_BEAM];
    let mut score = [0.0f32; MAX_BEAM];
    for (b, s) in slot.iter_mut().enumerate().take(w) {
        *s = b;
    }
    let mut alive = 1; // every beam is the prompt at first: expand one
    let mut best = BeamResult {
        score: f32::NEG_INFINITY,
        len: 0,
        finished: false,
    };
    let mut n_finished = 0;
    let mut len = 0;
    while len < opts.max_tokens && alive > 0 {
        // The w best continuations of every beam, then the w best overall (plus any that end).
        let mut top = [Candidate::default(); MAX_BEAM * MAX_BEAM];
        let mut n_top = 0;
        let k = w * w;
        for b in 0..alive {
            let logits = sessions[slot[b]]
                .logits()
                .ok_or(Error::InvalidArgument("a beam has no logits"))?;
            let lse = log_sum_exp(logits);
            let mut mine = [Candidate::default(); MAX_BEAM];
            let mut n_mine = 0;
            for (t, &l) in logits.iter().enumerate() {
                if l.is_nan() {
                    continue;
                }
                let c = Candidate {
                    score: score[b] + (l - lse),
                    parent: b as u32,
                    token: t as TokenId,
                };
                keep_best(&mut mine, &mut n_mine, w, c);
            }
            for c in &mine[..n_mine] {
                keep_best(&mut top, &mut n_top, k, *c);
            }
        }
        let mut chosen = 0;
        let mut taken = [false; MAX_BEAM]; // whether a parent's session is claimed by a child
        let mut parent_of = [0usize; MAX_BEAM];
        for c in &top[..n_top] {
            if chosen == w {
                break;
            }
            let p = c.parent as usize;
            if tok.is_eog(c.token) && !opts.ignore_eos {
                // A finished hypothesis: its length counts the end token.
                let ns = normalised(c.score, len + 1, opts.length_penalty);
                if ns > best.score {
                    let src = seq(cur, p);
                    scratch.best[..len].copy_from_slice(&scratch.seqs[src..src + len]);
                    best = BeamResult {
                        score: ns,
                        len,
                        finished: true,
                    };
                }
                n_finished += 1;
                continue;
            }
            let (src, dst) = (seq(cur, p), seq(next, chosen));
            scratch.seqs.copy_within(src..src + len, dst);
            scratch.seqs[dst + len] = c.token;
            score[chosen] = c.score;
            parent_of[chosen] = p;
            chosen += 1;
        }
        len += 1;
        // Sessions: each parent's first child keeps its session; others fork into free ones.
        let old_slot = slot;
        let mut new_slot = [usize::MAX; MAX_BEAM];
        let mut used = [false; MAX_BEAM];
        for j in 0..chosen {
            let p = parent_of[j];
            if !taken[p] {
                taken[p] = true;
                new_slot[j] = old_slot[p];
                used[old_slot[p]] = true;
            }
        }
        for j in 0..chosen {
            if new_slot[j] != usize::MAX {
                continue;
            }
            let free = (0..w)
                .find(|&s| !used[s])
                .ok_or(Error::InvalidArgument("beam slots"))?;
            used[free] = true;
            new_slot[j] = free;
            let src = old_slot[parent_of[j]];
            // Fork before anything evaluates its next token: copy the parent's state.
            let (a, b) = if free < src {
                let (lo, hi) = sessions.split_at_mut(src);
                (&mut lo[free], &hi[0])
            } else {
                let (lo, hi) = sessions.split_at_mut(free);
                (&mut hi[0], &lo[src])
            };
            a.fork_from(b, shared)?;
        }
        slot = new_slot;
        alive = chosen;
        core::mem::swap(&mut cur, &mut next);
        if n_finished >= w || len == opts.max_tokens {
            break;
        }
        for b in 0..alive {
            let t = scratch.seqs[seq(cur, b) + len - 1];
            sessions[slot[b]].eval(&[t])?;
        }
    }
    // Surviving beams compete with the finished ones.
    for (b, &sc) in score.iter().enumerate().take(alive) {
        let ns = normalised(sc, len, opts.length_penalty);
        if ns > best.score {
            let src = seq(cur, b);
            scratch.best[..len].copy_from_slice(&scratch.seqs[src..src + len]);
            best = BeamResult {
                score: ns,
                len,
                finished: false,
            };
        }
    }
    Ok(best)
}
