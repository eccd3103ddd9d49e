//! The key/value cache: for every layer, the keys (after RoPE) and values of the tokens seen so
//! far, stored as f16 in one fixed block of caller memory.
//!
//! Cells are addressed by position (cell = position); the capacity is fixed when the cache is
//! made and running out is an error, never a reallocation.

use crate::arena::Arena;
use crate::error::{Error, Result};
use crate::model::Config;
use half::f16;

/// Keys and values of every layer, `[n_layer][capacity][kv_dim]` each.
pub struct KvCache<'a> {
    n_layer: usize,
    kv_dim: usize,
    capacity: usize,
    k: &'a mut [f16],
    v: &'a mut [f16],
    len: usize,
}

impl<'a> KvCache<'a> {
    /// Arena bytes for a cache of `capacity` tokens.
    pub fn bytes_needed(cfg: &Config, capacity: usize) -> usize {
        2 * Arena::size_of::<f16>(cfg.n_layer * capacity * cfg.kv_dim())
    }

    /// A cache for `capacity` tokens in `arena`.
    pub fn new(arena: &mut Arena<'a>, cfg: &Config, capacity: usize) -> Result<Self> {
        if capacity == 0 {
            return Err(Error::InvalidArgument(
                "the context size must be at least 1",
            ));
        }
        let n = cfg
            .n_layer
            .checked_mul(capacity)
            .and_then(|x| x.checked_mul(cfg.kv_dim()))
            .ok_or(Error::InvalidArgument("the context size is too large"))?;
        Ok(KvCache {
            n_layer: cfg.n_layer,
            kv_dim: cfg.kv_dim(),
            capacity,
            k: arena.alloc(n, "KV cache (keys)")?,
            v: arena.alloc(n, "KV cache (values)")?,
            len: 0,
        })
    }

    /// Tokens the cache can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every token.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Keeps only the first `n` tokens (e.g. to rewind a turn).
    pub fn truncate(&mut self, n: usize) {
        self.len = self.len.min(n);
    }

    /// Marks `n` more tokens as held (after their rows were written).
    pub(crate) fn advance(&mut self, n: usize) {
        self.len = (self.len + n).min(self.capacity);
    }

    fn range(&self, layer: usize, cell: usize, n: usize) -> core::ops::Range<usize> {
        let start = (layer * self.capacity + cell) * self.kv_dim;
        start..start + n * self.kv_dim
    }

    /// Writes the key and value rows of one token of `layer` at `cell`.
    pub(crate) fn write(&mut self, layer: usize, cell: usize, k: &[f32], v: &[f32]) {
        debug_assert!(layer < self.n_layer && cell < self.capacity);
        let r = self.range(layer, cell, 1);
        for (d, s) in self.k[r.clone()].iter_mut().zip(k) {
            *d = f16::from_f32(*s);
        }
        for (d, s) in self.v[r].iter_mut().zip(v) {
            *d = f16::from_f32(*s);
        }
    }

    /// Keys of cells `0..n` of `layer`, `[n][kv_dim]`.
    pub(crate) fn keys(&self, layer: usize, n: usize) -> &[f16] {
        &self.k[self.range(layer, 0, n)]
    }

    /// Values of cells `0..n` of `layer`, `[n][kv_dim]`.
    pub(crate) fn values(&self, layer: usize, n: usize) -> &[f16] {
        &self.v[self.range(layer, 0, n)]
    }
}
