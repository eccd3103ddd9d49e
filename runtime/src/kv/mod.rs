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
use half::{f16, slice::HalfFloatSliceExt};

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

    /// Bytes of a cached row of `n` values (`n` whole blocks of 32 for Q8_0).
    pub fn row_bytes(self, n: usize) -> usize {
        match self {
            KvType::F16 => 2 * n,
            KvType::F32 => 4 * n,
            KvType::Q8_0 => n / QK * core::mem::size_of::<BlockQ8_0>(),
        }
    }
}

/// Most layers a model may have (bounds [`LayerSet`]).
pub const MAX_LAYERS: usize = 512;

/// A set of layers (bit `l` for layer `l`), sized for [`MAX_LAYERS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LayerSet([u64; MAX_LAYERS / 64]);

impl LayerSet {
    /// No layer.
    pub const EMPTY: LayerSet = LayerSet([0; MAX_LAYERS / 64]);

    /// Adds layer `l`.
    pub fn insert(&mut self, l: usize) {
        self.0[l / 64] |= 1 << (l % 64);
    }

    /// Whether layer `l` is in the set.
    pub fn contains(&self, l: usize) -> bool {
        l < MAX_LAYERS && self.0[l / 64] >> (l % 64) & 1 == 1
    }

    /// Layers in the set.
    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// True when no layer is in the set.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Layers of the set below `l`.
    pub fn count_below(&self, l: usize) -> usize {
        let l = l.min(MAX_LAYERS);
        let whole: usize = self.0[..l / 64]
            .iter()
            .map(|w| w.count_ones() as usize)
            .sum();
        let part = if l.is_multiple_of(64) {
            0
        } else {
            (self.0[l / 64] & ((1u64 << (l % 64)) - 1)).count_ones() as usize
        };
        whole + part
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
    /// Positions a sliding-window layer attends to (0: no windows).
    pub window: usize,
    /// The sliding-window layers: when the window is smaller than the context, each keeps a
    /// ring of only `window` cells (no sinks: nothing older than the window is ever read).
    pub windowed: LayerSet,
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

    /// Arena bytes for `rows` rows of `hd` values ([`KvType::row_bytes`] each).
    fn bytes_needed(ty: KvType, rows: usize, hd: usize) -> usize {
        Arena::size_of::<u8>(rows.saturating_mul(ty.row_bytes(hd)))
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
            // Eight values a conversion where the CPU has one (the same rounding as
            // `f16::from_f32`, to nearest even).
            Store::F16(s) => s[r * hd..(r + 1) * hd].convert_from_f32_slice(src),
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

/// Keys and values of every layer and KV head, `[n_layer][n_head_kv][cells of the layer]` rows
/// (`capacity` cells, or `window` for a sliding-window layer's own ring), plus the staging rows of
/// the batch being evaluated, `[n_head_kv][batch]`.
pub struct KvCache<'a> {
    n_layer: usize,
    /// Cells of a windowed layer's own ring (0: every layer uses the shared ring).
    window: usize,
    windowed: LayerSet,
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
        let cells = Self::cells(c, kc).unwrap_or(usize::MAX / 4);
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
        let cells =
            Self::cells(c, kc).ok_or(Error::InvalidArgument("the context size is too large"))?;
        let hd = c.head_dim;
        let window = Self::own_window(c, kc);
        Ok(KvCache {
            n_layer: c.n_layer,
            window,
            windowed: if window > 0 {
                c.windowed
            } else {
                LayerSet::EMPTY
            },
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

    /// Cells of a windowed layer's own ring: the window, when it is smaller than the context
    /// (0: the windowed layers share the context's ring).
    fn own_window(c: &KvShape, kc: &KvConfig) -> usize {
        if c.window > 0 && c.window < kc.capacity && !c.windowed.is_empty() {
            c.window
        } else {
            0
        }
    }

    /// Cells of every layer and head.
    fn cells(c: &KvShape, kc: &KvConfig) -> Option<usize> {
        let w = Self::own_window(c, kc);
        let windowed = if w > 0 {
            c.windowed.count_below(c.n_layer)
        } else {
            0
        };
        let per_head = (c.n_layer - windowed)
            .checked_mul(kc.capacity)?
            .checked_add(windowed.checked_mul(w)?)?;
        per_head.checked_mul(c.n_head_kv)
    }

    /// Cells of layer `l`'s ring, and whether it is a window's own ring.
    fn layer_cells(&self, l: usize) -> (usize, bool) {
        if self.window > 0 && self.windowed.contains(l) {
            (self.window, true)
        } else {
            (self.cfg.capacity, false)
        }
    }

    /// The cell of layer `l` that holds position `pos`.
    fn layer_cell(&self, l: usize, pos: usize) -> usize {
        match self.layer_cells(l) {
            (w, true) => pos % w,
            _ => self.cell(pos),
        }
    }

    /// Bytes of cache memory layer `l` uses (keys and values).
    pub fn layer_bytes(&self, l: usize) -> usize {
        let rows = self.n_head_kv * self.layer_cells(l).0;
        2 * Store::bytes_needed(self.cfg.ty, rows, self.head_dim)
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
    /// tokens, unless nothing is removed: the window before them is gone. (The same for a
    /// sliding-window layer's own ring: once it has wrapped, the positions a rewound token would
    /// see are gone.)
    pub fn truncate(&mut self, n: usize) -> Result<()> {
        if n >= self.n_pos {
            return Ok(());
        }
        if self.has_wrapped() || (self.window > 0 && self.n_pos > self.window) {
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
        let cap = self.cfg.capacity;
        let (cells, _) = self.layer_cells(layer);
        // Rows of the layers before: the windowed ones hold `window` cells per head.
        let win = if self.window > 0 {
            self.windowed.count_below(layer)
        } else {
            0
        };
        let before = ((layer - win) * cap + win * self.window) * self.n_head_kv;
        before + head * cells + cell
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
            let cell = self.layer_cell(layer, self.n_pos + i);
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
            || (
                src.n_layer,
                src.n_head_kv,
                src.head_dim,
                src.window,
                src.windowed,
            ) != (
                self.n_layer,
                self.n_head_kv,
                self.head_dim,
                self.window,
                self.windowed,
            )
        {
            return Err(Error::InvalidArgument(
                "copying between KV caches of different shapes",
            ));
        }
        self.n_pos = src.n_pos;
        for l in 0..self.n_layer {
            let (cells, own) = self.layer_cells(l);
            for pos in from..self.n_pos {
                let held = if own {
                    pos + cells >= self.n_pos
                } else {
                    self.holds(pos)
                };
                if !held {
                    continue;
                }
                let cell = self.layer_cell(l, pos);
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
        if self.n_pos + n > self.layer_cells(layer).0 || n > self.batch {
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
        match self.layer_cells(layer) {
            (w, true) => {
                // The window's own ring holds the last `w` positions, oldest at `pos0 % w`.
                let lo = w0.max(pos0.saturating_sub(w));
                if pos0 > lo {
                    let (c0, count) = (lo % w, pos0 - lo);
                    let first = count.min(w - c0);
                    run(c0, first);
                    run(0, count - first);
                }
            }
            _ => {
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
            }
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
