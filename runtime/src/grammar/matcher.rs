//! Following text through a compiled [`Grammar`]: a set of pushdown stacks in fixed memory.

use super::{Grammar, Kind};
use crate::arena::Arena;
use crate::error::{Error, Result};

/// Bounds of a matcher's state, fixed when its memory is sized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatcherLimits {
    /// Stacks alive at once (the grammar's ambiguity at one point of the text).
    pub stacks: usize,
    /// Elements on one stack (how deeply rules nest at one point of the text).
    pub depth: usize,
}

impl Default for MatcherLimits {
    fn default() -> Self {
        MatcherLimits {
            stacks: 256,
            depth: 128,
        }
    }
}

/// A set of stacks, each in a fixed-size row of `depth` positions.
struct Set<'m> {
    data: &'m mut [u32],
    lens: &'m mut [u32],
    n: usize,
}

impl Set<'_> {
    fn stack(&self, i: usize, depth: usize) -> &[u32] {
        &self.data[i * depth..i * depth + self.lens[i] as usize]
    }

    fn contains(&self, s: &[u32], depth: usize) -> bool {
        (0..self.n).any(|i| self.stack(i, depth) == s)
    }

    /// Adds `s` unless the set holds it already.
    fn add(&mut self, s: &[u32], depth: usize) -> Result<()> {
        if self.contains(s, depth) {
            return Ok(());
        }
        self.push(s, depth)
    }

    /// Adds `s` (duplicates allowed).
    fn push(&mut self, s: &[u32], depth: usize) -> Result<()> {
        if s.len() > depth {
            return Err(deep(depth));
        }
        if self.n == self.lens.len() {
            return Err(Error::Capacity {
                what: "grammar matcher stacks (the grammar is too ambiguous here)",
                needed: self.n as u64 + 1,
                available: self.lens.len() as u64,
            });
        }
        self.data[self.n * depth..self.n * depth + s.len()].copy_from_slice(s);
        self.lens[self.n] = s.len() as u32;
        self.n += 1;
        Ok(())
    }
}

/// Where a text stands in a grammar.
pub struct Matcher<'g, 'm> {
    g: Grammar<'g>,
    depth: usize,
    cur: Set<'m>,
    next: Set<'m>,
    /// Stacks still to expand, and those expanded already (cycles through rules that derive
    /// only the empty text come back to a stack seen before: it is skipped, as llama.cpp does).
    todo: Set<'m>,
    seen: Set<'m>,
    /// The state a trial ([`Matcher::begin_trial`]) started from.
    saved: Set<'m>,
    /// Stacks a token reference took (before their expansion).
    taken: Set<'m>,
    saved_partial: (u32, u8),
    saved_min: u32,
    /// One stack being built.
    work: &'m mut [u32],
    /// A UTF-8 sequence begun by the last bytes: its value so far and the bytes still due.
    partial: (u32, u8),
    /// The smallest codepoint the begun sequence may encode.
    partial_min: u32,
}

impl<'g, 'm> Matcher<'g, 'm> {
    /// Arena bytes of a matcher with `limits`.
    pub const fn bytes_needed(limits: &MatcherLimits) -> usize {
        let (s, d) = (limits.stacks, limits.depth);
        (Arena::size_of::<u32>(s * d) + Arena::size_of::<u32>(s)) * 6 + Arena::size_of::<u32>(d + 1)
    }

    /// A matcher at the start of `g`'s root rule, its state in `arena`.
    pub fn new(g: Grammar<'g>, arena: &mut Arena<'m>, limits: &MatcherLimits) -> Result<Self> {
        let (s, d) = (limits.stacks.max(1), limits.depth.max(2));
        let set = |arena: &mut Arena<'m>| -> Result<Set<'m>> {
            Ok(Set {
                data: arena.alloc(s * d, "grammar matcher")?,
                lens: arena.alloc(s, "grammar matcher")?,
                n: 0,
            })
        };
        let (cur, next, todo, seen) = (set(arena)?, set(arena)?, set(arena)?, set(arena)?);
        let (saved, taken) = (set(arena)?, set(arena)?);
        let mut m = Matcher {
            g,
            depth: d,
            cur,
            next,
            todo,
            seen,
            saved,
            taken,
            saved_partial: (0, 0),
            saved_min: 0,
            work: arena.alloc(d + 1, "grammar matcher")?,
            partial: (0, 0),
            partial_min: 0,
        };
        m.reset()?;
        Ok(m)
    }

    /// Back to the start of the root rule.
    pub fn reset(&mut self) -> Result<()> {
        self.partial = (0, 0);
        self.next.n = 0;
        // One stack per alternative of the root, expanded to terminals.
        let g = self.g;
        for start in g.alternatives(g.root() as usize) {
            let len = if g.elem(start).ends_sequence() { 0 } else { 1 };
            self.work[0] = start;
            self.advance(len)?;
        }
        core::mem::swap(&mut self.cur, &mut self.next);
        Ok(())
    }

    /// Expands the stack in `work` (`len` positions) through rule references until every
    /// stack's top is a terminal (or the stack is empty), adding each to `next`.
    fn advance(&mut self, len: usize) -> Result<()> {
        let (g, d) = (&self.g, self.depth);
        self.todo.n = 0;
        self.seen.n = 0;
        self.todo.push(&self.work[..len], d)?;
        while self.todo.n > 0 {
            // Pop the last stack into `work`.
            let i = self.todo.n - 1;
            let len = self.todo.lens[i] as usize;
            self.work[..len].copy_from_slice(&self.todo.data[i * d..i * d + len]);
            self.todo.n -= 1;
            let stack = &self.work[..len];
            if self.seen.contains(stack, d) {
                continue;
            }
            self.seen.push(stack, d)?;
            let Some(&pos) = stack.last() else {
                self.next.add(stack, d)?;
                continue;
            };
            let e = g.elem(pos);
            if e.kind() != Kind::RuleRef {
                self.next.add(stack, d)?;
                continue;
            }
            for sub in g.alternatives(e.value as usize) {
                // The child: this stack without its top, the position after the reference, and
                // the alternative's first element.
                let mut n = len - 1;
                if !g.elem(pos + 1).ends_sequence() {
                    self.work[n] = pos + 1;
                    n += 1;
                }
                if !g.elem(sub).ends_sequence() {
                    if n == d {
                        return Err(deep(d));
                    }
                    self.work[n] = sub;
                    n += 1;
                }
                self.todo.push(&self.work[..n], d)?;
                // Restore the popped stack's top (the child overwrote the row past len - 1).
                self.work[len - 1] = pos;
            }
        }
        Ok(())
    }

    /// Takes codepoint `cp`: true when the text so far is still in the grammar (the state then
    /// moves on); false, with the state unchanged, when no stack accepts it.
    pub fn accept_char(&mut self, cp: u32) -> Result<bool> {
        self.next.n = 0;
        let d = self.depth;
        for i in 0..self.cur.n {
            let len = self.cur.lens[i] as usize;
            if len == 0 {
                continue;
            }
            let top = self.cur.data[i * d + len - 1];
            if !is_char(self.g.elem(top).kind()) {
                continue;
            }
            let (ok, after) = self.g.match_char(top, cp);
            if !ok {
                continue;
            }
            self.work[..len - 1].copy_from_slice(&self.cur.data[i * d..i * d + len - 1]);
            let mut n = len - 1;
            if !self.g.elem(after).ends_sequence() {
                self.work[n] = after;
                n += 1;
            }
            self.advance(n)?;
        }
        if self.next.n == 0 {
            return Ok(false);
        }
        core::mem::swap(&mut self.cur, &mut self.next);
        Ok(true)
    }

    /// Takes `bytes` of UTF-8 text (a character may be split across calls, as tokens split
    /// it): true when the text is still in the grammar. On false the state is where the first
    /// rejected character found it (the characters before it are taken).
    pub fn accept_bytes(&mut self, bytes: &[u8]) -> Result<bool> {
        for &b in bytes {
            let (mut v, mut due) = self.partial;
            if due > 0 {
                if b & 0xC0 != 0x80 {
                    return Ok(false);
                }
                v = (v << 6) | (b & 0x3F) as u32;
                due -= 1;
            } else {
                (v, due) = match b {
                    0x00..=0x7F => (b as u32, 0),
                    0xC2..=0xDF => ((b & 0x1F) as u32, 1),
                    0xE0..=0xEF => ((b & 0x0F) as u32, 2),
                    0xF0..=0xF4 => ((b & 0x07) as u32, 3),
                    _ => return Ok(false),
                };
                // The smallest codepoint a sequence of this length encodes (shorter forms are
                // overlong and invalid).
                self.partial_min = [0, 0x80, 0x800, 0x1_0000][due as usize];
            }
            if due > 0 {
                // A character begun: some stack must accept one of the characters it may become.
                let shift = 6 * due as u32;
                let hi = ((v << shift) | ((1u32 << shift) - 1)).min(0x10_FFFF);
                let lo = (v << shift).max(self.partial_min);
                if lo > hi {
                    return Ok(false);
                }
                if !self.accepts_range(lo, hi) {
                    return Ok(false);
                }
                self.partial = (v, due);
                continue;
            }
            self.partial = (0, 0);
            if !self.accept_char(v)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether token `id` may come next as a token (a token reference on some stack's top takes
    /// it; its text is not looked at). Never between the bytes of one character.
    pub fn token_allowed(&self, id: u32) -> bool {
        self.token_tops().any(|(not, v)| (v == id) != not)
    }

    /// The token references on the stacks' tops: (negated, token id).
    pub fn token_tops(&self) -> impl Iterator<Item = (bool, u32)> + '_ {
        let d = self.depth;
        let whole = self.partial.1 == 0;
        (0..self.cur.n).filter_map(move |i| {
            let len = self.cur.lens[i] as usize;
            if !whole || len == 0 {
                return None;
            }
            let e = self.g.elem(self.cur.data[i * d + len - 1]);
            match e.kind() {
                Kind::Token => Some((false, e.value)),
                Kind::TokenNot => Some((true, e.value)),
                _ => None,
            }
        })
    }

    /// Takes token `id` whose text is `bytes`, as llama.cpp does: stacks topped by a token
    /// reference take it by its id, the others take its text character by character; the state
    /// goes on with both. True when either took it; on false the state is where the text's
    /// first rejected character found it. A token with no text (a control token) is taken only
    /// by a reference.
    pub fn accept_token(&mut self, id: u32, bytes: &[u8]) -> Result<bool> {
        let d = self.depth;
        // The stacks a reference takes, popped (and the element after it pushed).
        self.taken.n = 0;
        if self.partial.1 == 0 {
            for i in 0..self.cur.n {
                let len = self.cur.lens[i] as usize;
                if len == 0 {
                    continue;
                }
                let top = self.cur.data[i * d + len - 1];
                let e = self.g.elem(top);
                let hit = match e.kind() {
                    Kind::Token => e.value == id,
                    Kind::TokenNot => e.value != id,
                    _ => false,
                };
                if !hit {
                    continue;
                }
                self.work[..len - 1].copy_from_slice(&self.cur.data[i * d..i * d + len - 1]);
                let mut n = len - 1;
                if !self.g.elem(top + 1).ends_sequence() {
                    self.work[n] = top + 1;
                    n += 1;
                }
                let Matcher { taken, work, .. } = self;
                taken.push(&work[..n], d)?;
            }
        }
        let by_text = !bytes.is_empty() && self.accept_bytes(bytes)?;
        if self.taken.n == 0 {
            return Ok(by_text);
        }
        if !by_text {
            self.cur.n = 0;
            self.partial = (0, 0);
        }
        // The union: the taken stacks expanded, then the text's stacks.
        self.next.n = 0;
        for k in 0..self.taken.n {
            let len = self.taken.lens[k] as usize;
            self.work[..len].copy_from_slice(&self.taken.data[k * d..k * d + len]);
            self.advance(len)?;
        }
        for i in 0..self.cur.n {
            let len = self.cur.lens[i] as usize;
            let Matcher { cur, next, .. } = self;
            next.add(&cur.data[i * d..i * d + len], d)?;
        }
        core::mem::swap(&mut self.cur, &mut self.next);
        Ok(true)
    }

    /// Whether some stack's top could take a character in `lo..=hi`.
    fn accepts_range(&self, lo: u32, hi: u32) -> bool {
        let d = self.depth;
        (0..self.cur.n).any(|i| {
            let len = self.cur.lens[i] as usize;
            len > 0 && {
                let top = self.cur.data[i * d + len - 1];
                is_char(self.g.elem(top).kind()) && self.g.match_range(top, lo, hi)
            }
        })
    }

    /// Whether the text so far is a complete sentence of the grammar (it may also go on).
    pub fn is_complete(&self) -> bool {
        self.partial.1 == 0 && (0..self.cur.n).any(|i| self.cur.lens[i] == 0)
    }

    /// Remembers the state, to try text and come back ([`Matcher::end_trial`]).
    pub fn begin_trial(&mut self) {
        let d = self.depth;
        let n = self.cur.n;
        self.saved.data[..n * d].copy_from_slice(&self.cur.data[..n * d]);
        self.saved.lens[..n].copy_from_slice(&self.cur.lens[..n]);
        self.saved.n = n;
        self.saved_partial = self.partial;
        self.saved_min = self.partial_min;
    }

    /// Back to the state of the last [`Matcher::begin_trial`].
    pub fn end_trial(&mut self) {
        let (d, n) = (self.depth, self.saved.n);
        self.cur.data[..n * d].copy_from_slice(&self.saved.data[..n * d]);
        self.cur.lens[..n].copy_from_slice(&self.saved.lens[..n]);
        self.cur.n = n;
        self.partial = self.saved_partial;
        self.partial_min = self.saved_min;
    }

    /// Whether any text can follow (some stack is not empty).
    pub fn can_continue(&self) -> bool {
        (0..self.cur.n).any(|i| self.cur.lens[i] > 0)
    }

    /// Stacks alive (the grammar's ambiguity at this point).
    pub fn stack_count(&self) -> usize {
        self.cur.n
    }
}

fn is_char(k: Kind) -> bool {
    matches!(k, Kind::Char | Kind::CharNot | Kind::CharAny)
}

fn deep(depth: usize) -> Error {
    Error::Capacity {
        what: "grammar matcher stack depth (rules nest too deeply here)",
        needed: depth as u64 + 1,
        available: depth as u64,
    }
}
