//! Attention of one query head over cached keys and values, for each KV precision, built from the
//! vector ops of a [`Kernels`] table.
//!
//! The spec is llama.cpp's CPU flash attention for one token: keys one by one in position order;
//! score = (k · q)·scale; a running max M and sum S; a new max rescales the running sum of values
//! by e^(M_old − M), otherwise the value is added with weight e^(score − M). The result is acc / S
//! (the caller divides). The running state is a [`Softmax`], so one head can be attended over
//! several runs of cells (the sinks, the two halves of a wrapped ring, the batch being
//! evaluated) and give the same bits as one run over the same keys in the same order.
//!
//! Here it is computed a chunk of keys at a time, each step a kernel of the table: the chunk's
//! scores (one matrix product for Q8_0 keys), its softmax step (which keys grow the max, their
//! factors and weights, the sum of weights: [`Kernels::softmax`]), then its values added to the
//! running sum in key order (for an f16 cache, column block by column block with the running sum
//! in registers: [`Kernels::update_f16`], [`Kernels::update_f16_f32`]). Every value's chain is still per key, so chunking
//! changes no bits: the SIMD sets match the scalar set, which `tests.rs` checks against the
//! plain per-key loop.

use super::{scalar, Kernels, OutRows, QActs, UpdateF16Fn};
use crate::weights::{BlockQ8_0, QK};
use half::f16;

/// Widest attention head supported (bounds stack buffers of the attention kernels).
pub const MAX_HEAD_DIM: usize = 512;

/// One chunk of the online softmax ([`scalar::softmax_chunk`]): raw scores in, factors and
/// weights out, with which keys grow the max; the state is updated.
pub type SoftmaxFn = fn(&mut [f32], &mut [bool], f32, &mut Softmax);

/// Keys handled per chunk (bounds the stack buffers).
pub const CHUNK: usize = 128;

/// Running state of one head's online softmax.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Softmax {
    /// Largest score so far.
    pub max: f32,
    /// Σ e^(score − max) so far.
    pub sum: f32,
}

impl Softmax {
    /// Before any key.
    pub const NEW: Softmax = Softmax {
        max: f32::NEG_INFINITY,
        sum: 0.0,
    };
}

/// The element of attention's running sum of values over an f16 value cache. llama.cpp keeps it
/// in f16, rounding after every key (the `exact` sets keep that, [`super::Numerics::Exact`]);
/// ember's numerics keep it in f32 ([`super::Numerics::Ember`]): fewer roundings, and no
/// conversions of the sum in the additions' loop.
pub trait RunningSum: Copy {
    /// The empty sum.
    const ZERO: Self;
    /// Whether the query meets the keys rounded to f16 values (llama.cpp's f16 path converts
    /// it so; ember's numerics keep it in f32).
    const ROUNDS_QUERY: bool;
    /// The table's kernel that adds a chunk of f16 values to a running sum of this type
    /// ([`scalar::update_f16`]).
    fn update(k: &Kernels) -> UpdateF16Fn<Self>;
    /// self·a, rounded to this type.
    fn scaled(self, a: f32) -> Self;
    /// fma(x, a, self), rounded to this type.
    fn mad(self, x: f16, a: f32) -> Self;
    /// As f32 (exact).
    fn to_f32(self) -> f32;
}

impl RunningSum for f16 {
    const ZERO: Self = f16::ZERO;
    const ROUNDS_QUERY: bool = true;
    fn update(k: &Kernels) -> UpdateF16Fn<Self> {
        k.update_f16
    }
    fn scaled(self, a: f32) -> Self {
        f16::from_f32(self.to_f32() * a)
    }
    fn mad(self, x: f16, a: f32) -> Self {
        f16::from_f32(scalar::fma(x.to_f32(), a, self.to_f32()))
    }
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

impl RunningSum for f32 {
    const ZERO: Self = 0.0;
    const ROUNDS_QUERY: bool = false;
    fn update(k: &Kernels) -> UpdateF16Fn<Self> {
        k.update_f16_f32
    }
    fn scaled(self, a: f32) -> Self {
        self * a
    }
    fn mad(self, x: f16, a: f32) -> Self {
        scalar::fma(x.to_f32(), a, self)
    }
    fn to_f32(self) -> f32 {
        self
    }
}

/// The online-softmax update over `n` keys, a chunk at a time: `scores(c0, out)` writes the raw
/// dot products of keys `c0..c0 + out.len()`; `apply(acc, c0, grows, w)` then adds the chunk's
/// values to the running sum `acc` in key order: key `c0 + j` first rescales `acc` by `w[j]` and
/// adds its value with weight 1 where `grows[j]` (the max grew), else adds its value with weight
/// `w[j]` ([`per_key`] spells it out).
#[inline(always)]
fn online<A>(
    softmax: SoftmaxFn,
    n: usize,
    scale: f32,
    st: &mut Softmax,
    acc: &mut [A],
    mut scores: impl FnMut(usize, &mut [f32]),
    mut apply: impl FnMut(&mut [A], usize, &[bool], &[f32]),
) {
    let mut factor = [0.0f32; CHUNK];
    let mut grows = [false; CHUNK];
    let mut c0 = 0;
    while c0 < n {
        let m = (n - c0).min(CHUNK);
        scores(c0, &mut factor[..m]);
        softmax(&mut factor[..m], &mut grows[..m], scale, st);
        apply(acc, c0, &grows[..m], &factor[..m]);
        c0 += m;
    }
}

/// `online`'s `apply` key by key: `rescale(acc, m)` multiplies the running sum by m, and
/// `add(acc, j, w)` adds w times value j.
#[inline(always)]
pub fn per_key<A>(
    acc: &mut [A],
    c0: usize,
    grows: &[bool],
    w: &[f32],
    rescale: impl Fn(&mut [A], f32),
    add: impl Fn(&mut [A], usize, f32),
) {
    for (j, (&g, &w)) in grows.iter().zip(w).enumerate() {
        if g {
            rescale(acc, w);
            add(acc, c0 + j, 1.0);
        } else {
            add(acc, c0 + j, w);
        }
    }
}

/// One head over an f16 cache: `q` against `n` keys and values stored one after another,
/// `q.len()` each, into the running sum `acc` (f16 as llama.cpp keeps it, with `q` rounded to
/// f16 values as llama.cpp converts it; or f32: [`RunningSum`]).
#[allow(clippy::too_many_arguments)]
pub fn attend_f16<A: RunningSum>(
    k: &Kernels,
    q: &[f32],
    keys: &[f16],
    values: &[f16],
    n: usize,
    scale: f32,
    acc: &mut [A],
    st: &mut Softmax,
) {
    let hd = q.len();
    let (keys, values) = (&keys[..n * hd], &values[..n * hd]);
    let update = A::update(k);
    online(
        k.softmax,
        n,
        scale,
        st,
        acc,
        |c0, out| (k.scores_f16)(&keys[c0 * hd..(c0 + out.len()) * hd], q, out),
        |acc, c0, grows, w| update(acc, &values[c0 * hd..(c0 + w.len()) * hd], grows, w),
    );
}

/// One head over an f32 cache; f32 running sum.
#[allow(clippy::too_many_arguments)]
pub fn attend_f32(
    k: &Kernels,
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    n: usize,
    scale: f32,
    acc: &mut [f32],
    st: &mut Softmax,
) {
    let hd = q.len();
    let (keys, values) = (&keys[..n * hd], &values[..n * hd]);
    online(
        k.softmax,
        n,
        scale,
        st,
        acc,
        |c0, out| {
            for (j, o) in out.iter_mut().enumerate() {
                *o = (k.dot_f32)(&keys[(c0 + j) * hd..(c0 + j + 1) * hd], q);
            }
        },
        |acc, c0, grows, w| {
            per_key(acc, c0, grows, w, scale_f32, |acc, j, w| {
                (k.axpy_f32)(acc, w, &values[j * hd..(j + 1) * hd])
            })
        },
    );
}

/// One head over a Q8_0 cache: the query quantized to 8 bits (one token of `q`, `acc.len() / 32`
/// blocks), each chunk's scores as one Q8_0 matrix product; values dequantized into an f32 running
/// sum (as llama.cpp does for a quantized value cache).
#[allow(clippy::too_many_arguments)]
pub fn attend_q8_0(
    k: &Kernels,
    q: &QActs<'_>,
    keys: &[BlockQ8_0],
    values: &[BlockQ8_0],
    n: usize,
    scale: f32,
    acc: &mut [f32],
    st: &mut Softmax,
) {
    let nb = q.nb;
    let (keys, values) = (&keys[..n * nb], &values[..n * nb]);
    online(
        k.softmax,
        n,
        scale,
        st,
        acc,
        |c0, out| {
            let m = out.len();
            let mut rows = OutRows::new(out, m, m, 1);
            (k.gemm_q8_0)(&keys[c0 * nb..(c0 + m) * nb], q, &mut rows);
        },
        |acc, c0, grows, w| {
            per_key(acc, c0, grows, w, scale_f32, |acc, j, w| {
                (k.mad_q8_0)(acc, &values[j * nb..(j + 1) * nb], w)
            })
        },
    );
}

/// y ← y·a (one rounding per element, so any vectorization gives the same bits).
pub fn scale_f32(y: &mut [f32], a: f32) {
    for v in y {
        *v *= a;
    }
}

/// y = fma(q·d, a, y) for each element of Q8_0 blocks `x` (a dequantized value row added to an
/// f32 running sum); q·d is exact in f32.
pub fn mad_q8_0_scalar(y: &mut [f32], x: &[BlockQ8_0], a: f32) {
    for (yb, b) in y.chunks_exact_mut(QK).zip(x) {
        let d = b.d.to_f32();
        for (y, &q) in yb.iter_mut().zip(&b.qs) {
            *y = scalar::fma(q as f32 * d, a, *y);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tiled attention: llama.cpp's flash attention for batches of `TILE` or more query tokens.
// ---------------------------------------------------------------------------------------------

/// x ← x·scale, returning the largest x (−∞ for none; a NaN is never the largest, as in
/// `if x > max { max = x }`). Eight running maxima side by side, then the largest of them: the
/// same value as one scan in order (a max does not depend on the order, but for the sign of a
/// zero, which nothing after it can tell: x − (±0) and e^(±0) are equal wherever it is used),
/// without one scan's chain of dependent compares (in a profile of `ember bench -p 512 -d
/// 2048`, that chain was 5% of the run).
fn scale_max(row: &mut [f32], scale: f32) -> f32 {
    let larger = |x: f32, m: f32| if x > m { x } else { m };
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunks = row.chunks_exact_mut(8);
    for c in &mut chunks {
        for (x, m) in c.iter_mut().zip(lanes.iter_mut()) {
            *x *= scale;
            *m = larger(*x, *m);
        }
    }
    for (x, m) in chunks.into_remainder().iter_mut().zip(lanes.iter_mut()) {
        *x *= scale;
        *m = larger(*x, *m);
    }
    lanes.iter().fold(f32::NEG_INFINITY, |m, &x| larger(x, m))
}

/// Writes key `j` and value `j` of the attended sequence as f32 rows.
pub type LoadKv<'l> = dyn FnMut(usize, &mut [f32], &mut [f32]) + 'l;

/// Query rows and keys per tile of llama.cpp's tiled CPU flash attention (`GGML_FA_TILE_Q`,
/// `GGML_FA_TILE_KV`), which it uses when a batch has at least this many tokens.
pub const TILE: usize = 64;

/// f32 scratch for the tiled attention of `heads` query heads (of one KV head) with head width
/// `hd`: the key tile (transposed) and the value tile, shared by the heads, and each head's
/// running sums of values, maxima and sums of weights.
pub const fn tile_scratch_len(hd: usize, heads: usize) -> usize {
    2 * TILE * hd + heads * TILE * (hd + 2)
}

/// Attends up to [`TILE`] query rows of each of `heads` query heads that share their keys and
/// values (grouped-query attention: the heads of one KV head) to the keys `load(j, key, value)`
/// writes as f32 rows. Query row `r` of head `g` is `q[r·stride + g·hd..][..hd]` (f32 as it is),
/// and sees keys `0..first + r + 1`. Each row is computed exactly as llama.cpp's tiled flash
/// attention computes it: keys in tiles of 64 from key 0; per tile and row, scores as chains of
/// fused multiply-adds over the head dimension, times `scale`; the tile's max updates the
/// running max M (a larger M rescales the f32 running sum of values and S by glibc's
/// e^(M_old − M)); weights e^(score − M) with ggml's exp, summed 16 at a time
/// (`hsum8(low 8 + high 8)`) into an f64 sum that is added to S; values added key by key with
/// fused multiply-adds; finally ·1/S. Each tile of keys and values is loaded and transposed
/// once for all the heads (llama.cpp does it per head). Writes `out(r, g·hd + d, value)`.
#[allow(clippy::too_many_arguments)]
pub fn attend_tiled(
    k: &Kernels,
    q: &[f32],
    stride: usize,
    (rows, heads): (usize, usize),
    hd: usize,
    first: usize,
    scale: f32,
    load: &mut LoadKv<'_>,
    scratch: &mut [f32],
    out: &mut dyn FnMut(usize, usize, f32),
) {
    debug_assert!(rows <= TILE && hd <= MAX_HEAD_DIM);
    let (kt, rest) = scratch.split_at_mut(TILE * hd);
    let (vt, rest) = rest.split_at_mut(TILE * hd);
    let (acc, rest) = rest.split_at_mut(heads * TILE * hd);
    let (m, rest) = rest.split_at_mut(heads * TILE);
    let s = &mut rest[..heads * TILE];
    for g in 0..heads {
        acc[g * TILE * hd..(g * TILE + rows) * hd].fill(0.0);
        m[g * TILE..g * TILE + rows].fill(f32::NEG_INFINITY);
        s[g * TILE..g * TILE + rows].fill(0.0);
    }
    let mut row = [0.0f32; TILE];
    let mut key = [0.0f32; MAX_HEAD_DIM];
    let total = first + rows; // keys the last row sees
    let mut base = 0;
    while base < total {
        let nk = (total - base).min(TILE);
        // Keys transposed (kt[d][j]) so each score row is built by axpy over the tile; values
        // as rows.
        for j in 0..nk {
            load(base + j, &mut key[..hd], &mut vt[j * hd..(j + 1) * hd]);
            for (d, &x) in key[..hd].iter().enumerate() {
                kt[d * TILE + j] = x;
            }
        }
        for g in 0..heads {
            for r in 0..rows {
                let seen = first + r + 1;
                if seen <= base {
                    continue; // every key of this tile is in the row's future
                }
                let i = g * TILE + r;
                let vis = (seen - base).min(TILE);
                row[..vis].fill(0.0);
                let qr = &q[r * stride + g * hd..r * stride + (g + 1) * hd];
                (k.fma_rows)(&mut row[..vis], qr, kt, TILE);
                let tile_max = scale_max(&mut row[..vis], scale);
                let a = &mut acc[i * hd..(i + 1) * hd];
                let m_new = if tile_max > m[i] { tile_max } else { m[i] };
                if m_new > m[i] {
                    let ms = scalar::exp_softmax(m[i] - m_new);
                    scale_f32(a, ms);
                    s[i] *= ms;
                }
                m[i] = m_new;
                for x in &mut row[..vis] {
                    *x -= m_new;
                }
                (k.exp_ggml)(&mut row[..vis]);
                row[vis..].fill(0.0); // masked and padding keys weigh e^−∞ = 0
                let mut sum = 0.0f64;
                for c in row.chunks_exact(16) {
                    let half: [f32; 8] = core::array::from_fn(|i| c[i] + c[i + 8]);
                    sum += scalar::hsum8(&half) as f64;
                }
                s[i] = (s[i] as f64 + sum) as f32;
                (k.fma_rows)(a, &row[..vis], vt, hd);
            }
        }
        base += TILE;
    }
    for g in 0..heads {
        for r in 0..rows {
            let i = g * TILE + r;
            let inv = if s[i] == 0.0 { 0.0 } else { 1.0 / s[i] };
            for d in 0..hd {
                out(r, g * hd + d, acc[i * hd + d] * inv);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::scale_max;

    /// `scale_max` scales every element as the in-order scan does and finds the same largest
    /// value (NaN never, ±∞ and ties as they come), for every length a tile row takes.
    #[test]
    fn scale_max_equals_the_scan_in_order() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let specials = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            1.5,
            -1.5,
        ];
        for len in 0..=64 {
            for round in 0..40 {
                let row: Vec<f32> = (0..len)
                    .map(|_| {
                        let r = next();
                        if round % 2 == 1 && r % 5 == 0 {
                            specials[(r >> 8) as usize % specials.len()]
                        } else {
                            ((r >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 40.0
                        }
                    })
                    .collect();
                let scale = 0.125;
                let mut expect = row.clone();
                let mut max = f32::NEG_INFINITY;
                for x in &mut expect {
                    *x *= scale;
                    max = if *x > max { *x } else { max };
                }
                let mut got = row.clone();
                let m = scale_max(&mut got, scale);
                assert!(m == max, "len {len}: {m} against {max} ({row:?})");
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&expect), "len {len}");
            }
        }
    }
}
