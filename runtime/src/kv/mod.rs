//! The key/value cache: a fixed-size ring with attention sinks, in one block of caller memory.
//!
//! For every layer and KV head, the keys (after RoPE, at their absolute positions) and values of
//! the tokens seen, as f16, f32 or Q8_0 ([`KvType`]). The capacity is fixed when the cache is
//! made; it never grows.
//!
//! **Ring policy.** The first `sinks` tokens of the context (the "attention sinks": most of a
//! head's attention mass lands on the first few tokens, whatever they are) stay for good. The
//! other `capacity − sinks` cells form a ring: once it is full, each new token overwrites the
//! oldest non-sink token. A token at position p therefore attends to the sinks and to the
//! `capacity − sinks` most recent positions up to p (itself included). Keys keep the rotation of
//! their absolute position, so the relative positions the model sees stay right, and nothing is
//! recomputed when the ring wraps (llama.cpp's context shift instead drops half of the context
//! and re-rotates the cached keys, a pause in generation).
//!
//! **Batches.** A batch of new tokens is first written to a staging area; each token attends to
//! the cached cells of its window, then to the staged tokens up to itself, and the batch is moved
//! into the ring afterwards. Keys are visited in position order in both cases, so evaluating a
//! prompt in batches gives the same bits as one token at a time, even across a wrap — for
//! batches under 64 tokens. Larger batches (f16 or f32 cache, no wrap inside the batch) take
//! llama.cpp's tiled attention instead, as llama.cpp does (`kernels::attend::attend_tiled`):
//! their bits are llama.cpp's for the same batching, not those of token-by-token evaluation.

use crate::arena::Arena;
use crate::error::{Error, Result};
use crate::weights::blocks::quantize_q8_0;
use crate::weights::{BlockQ8_0, QK};
use half::f16;

/// Precision of the cached keys and values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum KvType {
    /// Half precision (llama.cpp's default).
    #[default]
    F16,
    /// Single precision: twice the memory, no rounding.
    F32,
    /// 8-bit blocks of 32 with an f16 scale: about half of f16's memory.
    Q8_0,
}

impl KvType {
    /// Every type.
    pub const ALL: [KvType; 3] = [KvType::F16, KvType::F32, KvType::Q8_0];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            KvType::F16 => "f16",
            KvType::F32 => "f32",
            KvType::Q8_0 => "q8_0",
        }
    }

    /// Parses a name as printed by [`KvType::name`].
    pub fn from_name(s: &str) -> Option<KvType> {
        KvType::ALL.into_iter().find(|t| t.name() == s)
    }
}

/// What a cache needs to know of the model it serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct KvShape {
    /// Layers.
    pub n_layer: usize,
    /// Key/value heads per layer.
    pub n_head_kv: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Largest context the model takes (its training context).
    pub max_ctx: usize,
}

/// Shape of a cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct KvConfig {
    /// Tokens held (the context size).
    pub capacity: usize,
    /// Leading tokens never overwritten (must be smaller than `capacity`).
    pub sinks: usize,
    /// Precision.
    pub ty: KvType,
}

impl KvConfig {
    /// Checks the shape against the model.
    pub fn validate(&self, c: &KvShape) -> Result<()> {
        if self.capacity == 0 || self.capacity > c.max_ctx {
            return Err(Error::InvalidArgument(
                "the context size must be between 1 and the model's context_length",
            ));
        }
        if self.sinks >= self.capacity {
            return Err(Error::InvalidArgument(
                "the number of attention sinks must be smaller than the context size",
            ));
        }
        if self.ty == KvType::Q8_0 && !c.head_dim.is_multiple_of(QK) {
            return Err(Error::InvalidArgument(
                "a q8_0 KV cache needs a head size that is a multiple of 32",
            ));
        }
        Ok(())
    }
}

/// Typed storage of rows.
enum Store<'a> {
    F16(&'a mut [f16]),
    F32(&'a mut [f32]),
    Q8_0(&'a mut [BlockQ8_0]),
}

/// A read view of consecutive rows of one head.
#[derive(Clone, Copy)]
pub enum Rows<'a> {
    /// f16 values.
    F16(&'a [f16]),
    /// f32 values.
    F32(&'a [f32]),
    /// Q8_0 blocks.
    Q8_0(&'a [BlockQ8_0]),
}

impl<'a> Store<'a> {
    /// Element units (values or blocks) per row of `hd` values.
    fn unit(ty: KvType, hd: usize) -> usize {
        match ty {
            KvType::Q8_0 => hd / QK,
            _ => hd,
        }
    }

    fn bytes_needed(ty: KvType, rows: usize, hd: usize) -> usize {
        let n = rows * Self::unit(ty, hd);
        match ty {
            KvType::F16 => Arena::size_of::<f16>(n),
            KvType::F32 => Arena::size_of::<f32>(n),
            KvType::Q8_0 => Arena::size_of::<BlockQ8_0>(n),
        }
    }

    fn new(
        arena: &mut Arena<'a>,
        ty: KvType,
        rows: usize,
        hd: usize,
        what: &'static str,
    ) -> Result<Self> {
        let n = rows
            .checked_mul(Self::unit(ty, hd))
            .ok_or(Error::InvalidArgument("the context size is too large"))?;
        Ok(match ty {
            KvType::F16 => Store::F16(arena.alloc(n, what)?),
            KvType::F32 => Store::F32(arena.alloc(n, what)?),
            KvType::Q8_0 => Store::Q8_0(arena.alloc(n, what)?),
        })
    }

    /// Stores `src` (`hd` values) as row `r`.
    fn write(&mut self, r: usize, src: &[f32]) {
        let hd = src.len();
        match self {
            Store::F16(s) => {
                for (d, &x) in s[r * hd..(r + 1) * hd].iter_mut().zip(src) {
                    *d = f16::from_f32(x);
                }
            }
            Store::F32(s) => s[r * hd..(r + 1) * hd].copy_from_slice(src),
            Store::Q8_0(s) => {
                let nb = hd / QK;
                quantize_q8_0(src, &mut s[r * nb..(r + 1) * nb]);
            }
        }
    }

    /// Copies row `from` of `src` (same type) to row `to` of `self`.
    fn copy_row(&mut self, to: usize, src: &Store<'_>, from: usize, unit: usize) {
        let (d, s) = (to * unit..(to + 1) * unit, from * unit..(from + 1) * unit);
        match (self, src) {
            (Store::F16(a), Store::F16(b)) => a[d].copy_from_slice(&b[s]),
            (Store::F32(a), Store::F32(b)) => a[d].copy_from_slice(&b[s]),
            (Store::Q8_0(a), Store::Q8_0(b)) => a[d].copy_from_slice(&b[s]),
            _ => unreachable!("staging and cells share one type"),
        }
    }

    /// Rows `r..r + n`.
    fn rows(&self, r: usize, n: usize, unit: usize) -> Rows<'_> {
        let span = r * unit..(r + n) * unit;
        match self {
            Store::F16(s) => Rows::F16(&s[span]),
            Store::F32(s) => Rows::F32(&s[span]),
            Store::Q8_0(s) => Rows::Q8_0(&s[span]),
        }
    }
}

/// Keys and values of every layer and KV head, `[n_layer][n_head_kv][capacity]` rows each, plus
/// the staging rows of the batch being evaluated, `[n_head_kv][batch]`.
pub struct KvCache<'a> {
    n_layer: usize,
    n_head_kv: usize,
    head_dim: usize,
    unit: usize,
    cfg: KvConfig,
    batch: usize,
    k: Store<'a>,
    v: Store<'a>,
    stage_k: Store<'a>,
    stage_v: Store<'a>,
    /// Tokens evaluated so far: the position of the next one.
    n_pos: usize,
}

impl<'a> KvCache<'a> {
    /// Arena bytes for a cache shaped `kc` that takes batches of up to `batch` tokens.
    pub fn bytes_needed(c: &KvShape, kc: &KvConfig, batch: usize) -> usize {
        let cells = c.n_layer * c.n_head_kv * kc.capacity;
        let staged = c.n_head_kv * batch.min(kc.capacity.saturating_sub(kc.sinks)).max(1);
        2 * Store::bytes_needed(kc.ty, cells, c.head_dim)
            + 2 * Store::bytes_needed(kc.ty, staged, c.head_dim)
    }

    /// A cache shaped `kc` in `arena`, for batches of up to `batch` tokens (at most
    /// `capacity − sinks`: a batch never overwrites cells its own tokens still see).
    pub fn new(arena: &mut Arena<'a>, c: &KvShape, kc: &KvConfig, batch: usize) -> Result<Self> {
        kc.validate(c)?;
        if batch == 0 {
            return Err(Error::InvalidArgument("the batch size must be at least 1"));
        }
        let batch = batch.min(kc.capacity - kc.sinks);
        let cells = c
            .n_layer
            .checked_mul(c.n_head_kv)
            .and_then(|x| x.checked_mul(kc.capacity))
            .ok_or(Error::InvalidArgument("the context size is too large"))?;
        let hd = c.head_dim;
        Ok(KvCache {
            n_layer: c.n_layer,
            n_head_kv: c.n_head_kv,
            head_dim: hd,
            unit: Store::unit(kc.ty, hd),
            cfg: *kc,
            batch,
            k: Store::new(arena, kc.ty, cells, hd, "KV cache (keys)")?,
            v: Store::new(arena, kc.ty, cells, hd, "KV cache (values)")?,
            stage_k: Store::new(arena, kc.ty, c.n_head_kv * batch, hd, "KV staging")?,
            stage_v: Store::new(arena, kc.ty, c.n_head_kv * batch, hd, "KV staging")?,
            n_pos: 0,
        })
    }

    /// Tokens the cache holds at most (the context size).
    pub fn capacity(&self) -> usize {
        self.cfg.capacity
    }

    /// The shape.
    pub fn config(&self) -> &KvConfig {
        &self.cfg
    }

    /// Largest batch of new tokens one forward pass may add.
    pub fn max_batch(&self) -> usize {
        self.batch
    }

    /// Tokens evaluated since the last clear: the position of the next token.
    pub fn n_pos(&self) -> usize {
        self.n_pos
    }

    /// Tokens held (at most the capacity).
    pub fn len(&self) -> usize {
        self.n_pos.min(self.cfg.capacity)
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.n_pos == 0
    }

    /// True once the ring has overwritten a token.
    pub fn has_wrapped(&self) -> bool {
        self.n_pos > self.cfg.capacity
    }

    /// Forgets every token.
    pub fn clear(&mut self) {
        self.n_pos = 0;
    }

    /// Keeps only the first `n` tokens (to rewind a turn). Refused once the ring has overwritten
    /// tokens, unless nothing is removed: the window before them is gone.
    pub fn truncate(&mut self, n: usize) -> Result<()> {
        if n >= self.n_pos {
            return Ok(());
        }
        if self.has_wrapped() {
            return Err(Error::InvalidArgument(
                "cannot rewind the context: the ring cache has already overwritten older tokens",
            ));
        }
        self.n_pos = n;
        Ok(())
    }

    /// True when position `pos` is still in the cache (evaluated, and a sink or within the ring).
    pub fn holds(&self, pos: usize) -> bool {
        let (s, r) = (self.cfg.sinks, self.cfg.capacity - self.cfg.sinks);
        pos < self.n_pos && (pos < s || pos + r >= self.n_pos)
    }

    /// The cell holding position `pos` (when [`KvCache::holds`] it).
    pub fn cell(&self, pos: usize) -> usize {
        let s = self.cfg.sinks;
        if pos < s {
            pos
        } else {
            s + (pos - s) % (self.cfg.capacity - s)
        }
    }

    fn row(&self, layer: usize, head: usize, cell: usize) -> usize {
        (layer * self.n_head_kv + head) * self.cfg.capacity + cell
    }

    /// Stages the key and value rows (`kv_dim` values each, all heads) of batch token `i`.
    pub(crate) fn stage(&mut self, i: usize, k: &[f32], v: &[f32]) {
        let hd = self.head_dim;
        for h in 0..self.n_head_kv {
            let r = h * self.batch + i;
            self.stage_k.write(r, &k[h * hd..(h + 1) * hd]);
            self.stage_v.write(r, &v[h * hd..(h + 1) * hd]);
        }
    }

    /// Moves the `n` staged tokens of `layer` into their cells (positions `n_pos..n_pos + n`).
    pub(crate) fn commit(&mut self, layer: usize, n: usize) {
        debug_assert!(layer < self.n_layer && n <= self.batch);
        for i in 0..n {
            let cell = self.cell(self.n_pos + i);
            for h in 0..self.n_head_kv {
                let (to, from) = (self.row(layer, h, cell), h * self.batch + i);
                self.k.copy_row(to, &self.stage_k, from, self.unit);
                self.v.copy_row(to, &self.stage_v, from, self.unit);
            }
        }
    }

    /// Marks the committed batch of `n` tokens as evaluated.
    pub(crate) fn advance(&mut self, n: usize) {
        self.n_pos += n;
    }

    /// Copies from `src` (same shape, same number of evaluated tokens) the rows of every held
    /// position from `from` on: afterwards the two caches are equal, provided they already held
    /// the same tokens before `from` (a beam forked from a shared prompt).
    pub(crate) fn copy_positions_from(&mut self, src: &KvCache<'_>, from: usize) -> Result<()> {
        if src.cfg != self.cfg
            || (src.n_layer, src.n_head_kv, src.head_dim)
                != (self.n_layer, self.n_head_kv, self.head_dim)
        {
            return Err(Error::InvalidArgument(
                "copying between KV caches of different shapes",
            ));
        }
        self.n_pos = src.n_pos;
        for pos in from..self.n_pos {
            if !self.holds(pos) {
                continue;
            }
            let cell = self.cell(pos);
            for l in 0..self.n_layer {
                for h in 0..self.n_head_kv {
                    let r = self.row(l, h, cell);
                    self.k.copy_row(r, &src.k, r, self.unit);
                    self.v.copy_row(r, &src.v, r, self.unit);
                }
            }
        }
        Ok(())
    }

    /// The keys and values a batch of `n` tokens attends to when none of its tokens evicts
    /// another: the cached positions `0..n_pos` (their cells are in position order) and the
    /// staged batch; batch token `i` sees the first `n_pos + i + 1` of them. `None` when the ring
    /// has wrapped, or would within the batch: then the tokens' windows differ.
    pub(crate) fn unwrapped_batch(
        &self,
        layer: usize,
        head: usize,
        n: usize,
    ) -> Option<[(Rows<'_>, Rows<'_>, usize); 2]> {
        if self.n_pos + n > self.cfg.capacity || n > self.batch {
            return None;
        }
        let (u, r) = (self.unit, self.row(layer, head, 0));
        let staged = head * self.batch;
        Some([
            (
                self.k.rows(r, self.n_pos, u),
                self.v.rows(r, self.n_pos, u),
                self.n_pos,
            ),
            (
                self.stage_k.rows(staged, n, u),
                self.stage_v.rows(staged, n, u),
                n,
            ),
        ])
    }

    /// Calls `f(keys, values, count)` for each run of consecutive rows that batch token `i` of
    /// `layer`, KV head `head` attends to, in position order: the sinks, the ring's cells of its
    /// window (one or two runs), then the staged batch up to itself. With `window`, only the
    /// last `window` positions up to the token's own (sliding-window attention), sinks included
    /// only when inside it.
    pub(crate) fn for_each_run(
        &self,
        layer: usize,
        head: usize,
        i: usize,
        window: Option<usize>,
        f: &mut dyn FnMut(Rows<'_>, Rows<'_>, usize),
    ) {
        let (s, cap, u) = (self.cfg.sinks, self.cfg.capacity, self.unit);
        let pos0 = self.n_pos;
        let p = pos0 + i;
        // First position the window lets this token see.
        let w0 = window.map_or(0, |w| (p + 1).saturating_sub(w));
        let mut run = |cell: usize, n: usize| {
            if n > 0 {
                let r = self.row(layer, head, cell);
                f(self.k.rows(r, n, u), self.v.rows(r, n, u), n);
            }
        };
        let sinks = s.min(pos0);
        if w0 < sinks {
            run(w0, sinks - w0);
        }
        let lo = s.max((p + 1).saturating_sub(cap - s)).max(w0);
        if pos0 > lo {
            let (c0, count) = (self.cell(lo), pos0 - lo);
            let first = count.min(cap - c0);
            run(c0, first);
            run(s, count - first);
        }
        let b0 = w0.saturating_sub(pos0).min(i);
        let r = head * self.batch + b0;
        f(
            self.stage_k.rows(r, i + 1 - b0, u),
            self.stage_v.rows(r, i + 1 - b0, u),
            i + 1 - b0,
        );
    }
}

#[cfg(test)]
mod tests;
