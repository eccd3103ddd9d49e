//! The forward pass over a batch of tokens, for every architecture of [`super::arch`].
//!
//! For each block: RMSNorm → Q/K/V projections (+ biases) → [per-head Q/K RMSNorm] → RoPE
//! (adjacent or NEOX pairs) → write K/V to the cache → causal grouped-query attention (over a
//! sliding window on windowed layers) → output projection → [post-norm] → residual; RMSNorm →
//! gated feed-forward (SiLU or GELU gate) → [post-norm] → residual. Then the final RMSNorm, the
//! output head for the tokens whose logits are wanted, and [logit soft-capping]. Bracketed steps
//! are the architecture's options.
//!
//! A batch of tokens goes through each matrix together (one pass over each weight matrix per
//! batch), and each activation is quantized once for all the matrices that read it. Every buffer
//! is a [`State`] field, sized once from the configuration.

use super::arch::{FfnAct, RopeLayout};
use super::trace;
use super::{Config, Layer, Model};
use crate::arena::Arena;
use crate::error::{Error, Result};
use crate::kernels::attend::{self, RunningSum, Softmax, MAX_HEAD_DIM};
use crate::kernels::{sincos, Kernels, Numerics, OutRows, QActs};
use crate::kv::{KvCache, KvType, Rows};
use crate::parallel::{chunk_rows, Parallel};
use crate::tokenizer::TokenId;
use crate::weights::quants::{Acts, QK_K};
use crate::weights::{Matrix, QK};
use core::sync::atomic::{AtomicBool, Ordering};
use half::f16;

/// Which tokens of a batch need logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// None (prompt tokens whose predictions are not used).
    None,
    /// Only the last token's (generation).
    Last,
    /// Every token's (perplexity, scoring).
    All,
}

/// Working buffers of the forward pass, for batches of up to `batch` tokens.
pub struct State<'a> {
    batch: usize,
    logit_rows: usize,
    /// Residual stream, `[batch][n_embd]`.
    x: &'a mut [f32],
    /// Normalised residual, `[batch][n_embd]`.
    xn: &'a mut [f32],
    /// Queries, `[batch][q_dim]`.
    q: &'a mut [f32],
    /// Keys, `[batch][kv_dim]`.
    k: &'a mut [f32],
    /// Values, `[batch][kv_dim]`.
    v: &'a mut [f32],
    /// Attention output `[batch][q_dim]`, then feed-forward output `[batch][n_embd]`.
    att: &'a mut [f32],
    /// Gate, then SwiGLU output, `[batch][n_ff]`.
    gate: &'a mut [f32],
    /// Up projection, `[batch][n_ff]`.
    up: &'a mut [f32],
    /// Quantized activations, in every form the products read.
    acts: ActBufs<'a>,
    /// The same for the feed-forward block's input (`[batch][n_embd]`), which its gate and up
    /// products read while their chunks quantize the gated values into `acts`.
    acts_in: ActBufs<'a>,
    /// cos/sin pairs per token, `[batch][rope_dim]`.
    rope: &'a mut [f32],
    /// The same for the sliding-window layers' RoPE base (empty without windows).
    rope_local: &'a mut [f32],
    /// Logits, `[logit_rows][n_vocab]`.
    logits: &'a mut [f32],
    /// Tiled attention scratch, `n_head` parts, one per worker thread (empty when batches are
    /// under [`attend::TILE`] tokens).
    tiles: &'a mut [f32],
}

impl<'a> State<'a> {
    /// Arena bytes for batches of `batch` tokens.
    pub fn bytes_needed(c: &Config, batch: usize) -> usize {
        let wide = wide(c);
        let lr = batch.min(LOGIT_ROWS);
        Arena::size_of::<f32>(batch * c.n_embd) * 2
            + Arena::size_of::<f32>(batch * c.q_dim())
            + Arena::size_of::<f32>(batch * c.q_dim().max(c.n_embd))
            + Arena::size_of::<f32>(batch * c.kv_dim()) * 2
            + Arena::size_of::<f32>(batch * c.n_ff) * 2
            + ActBufs::bytes_needed(batch, wide, k_wide(c, wide))
            + ActBufs::bytes_needed(batch, c.n_embd, k_wide(c, c.n_embd))
            + Arena::size_of::<f32>(batch * c.rope_dim)
            + Arena::size_of::<f32>(local_rope_len(c, batch))
            + Arena::size_of::<f32>(lr * c.n_vocab)
            + Arena::size_of::<f32>(tiles_len(c, batch))
    }

    /// Buffers in `arena` for batches of up to `batch` tokens.
    pub fn new(arena: &mut Arena<'a>, c: &Config, batch: usize) -> Result<Self> {
        if batch == 0 {
            return Err(Error::InvalidArgument("the batch size must be at least 1"));
        }
        let wide = wide(c);
        let lr = batch.min(LOGIT_ROWS);
        Ok(State {
            batch,
            logit_rows: lr,
            x: arena.alloc(batch * c.n_embd, "forward state")?,
            xn: arena.alloc(batch * c.n_embd, "forward state")?,
            q: arena.alloc(batch * c.q_dim(), "forward state")?,
            k: arena.alloc(batch * c.kv_dim(), "forward state")?,
            v: arena.alloc(batch * c.kv_dim(), "forward state")?,
            att: arena.alloc(batch * c.q_dim().max(c.n_embd), "forward state")?,
            gate: arena.alloc(batch * c.n_ff, "forward state")?,
            up: arena.alloc(batch * c.n_ff, "forward state")?,
            acts: ActBufs::new(arena, batch, wide, k_wide(c, wide))?,
            acts_in: ActBufs::new(arena, batch, c.n_embd, k_wide(c, c.n_embd))?,
            rope: arena.alloc(batch * c.rope_dim, "forward state")?,
            rope_local: arena.alloc(local_rope_len(c, batch), "forward state")?,
            logits: arena.alloc(lr * c.n_vocab, "logits")?,
            tiles: arena.alloc(tiles_len(c, batch), "attention tiles")?,
        })
    }

    /// Largest batch one [`forward`] call takes.
    pub fn batch(&self) -> usize {
        self.batch
    }
}

/// The widest input of any matrix (the quantized activation rows).
fn wide(c: &Config) -> usize {
    c.n_embd.max(c.n_ff).max(c.q_dim())
}

/// Inputs of `wide` values held as Q8_K activations: their whole blocks of 256, or 0 when no
/// matrix takes them.
fn k_wide(c: &Config, wide: usize) -> usize {
    if c.k_acts {
        wide / QK_K * QK_K
    } else {
        0
    }
}

/// Floats of the windowed layers' RoPE table.
fn local_rope_len(c: &Config, batch: usize) -> usize {
    if c.windowed.is_empty() || c.window == 0 {
        0
    } else {
        batch * c.rope_dim
    }
}

/// Floats of tiled-attention scratch for batches of `batch` tokens: one part per query head (so
/// as many threads as when each head was an item), each for the query heads of one KV head.
fn tiles_len(c: &Config, batch: usize) -> usize {
    if batch >= attend::TILE && c.head_dim <= MAX_HEAD_DIM && c.n_head_kv > 0 {
        c.n_head * attend::tile_scratch_len(c.head_dim, c.n_head / c.n_head_kv)
    } else {
        0
    }
}

/// Output-head rows computed together (bounds the logits buffer; the head is the largest matrix,
/// so batching its rows matters for perplexity runs).
pub const LOGIT_ROWS: usize = 16;

/// Runs `tokens` (at most `state.batch()` and `kv.max_batch()`) at positions `kv.n_pos()..`, appending their keys and
/// values to `kv`. Calls `on_logits(i, logits)` for each token `i` whose logits `want` asks for.
/// When `cancel` is set (from any thread), it stops at the next layer with [`Error::Cancelled`]
/// and keeps nothing of the batch (see the loop for what the cache then holds).
#[allow(clippy::too_many_arguments)]
pub fn forward(
    model: &Model<'_>,
    par: &dyn Parallel,
    state: &mut State<'_>,
    kv: &mut KvCache<'_>,
    tokens: &[TokenId],
    want: Logits,
    cancel: Option<&AtomicBool>,
    on_logits: &mut dyn FnMut(usize, &[f32]),
) -> Result<()> {
    if tokens.len() > kv.max_batch() {
        return Err(Error::Capacity {
            what: "forward batch (at most the context size minus the sinks)",
            needed: tokens.len() as u64,
            available: kv.max_batch() as u64,
        });
    }
    let done = run(
        model,
        par,
        state,
        &mut Seqs::One(kv),
        tokens,
        want,
        cancel,
        on_logits,
    );
    par.pass_done(if done.is_ok() { tokens.len() } else { 0 });
    done
}

/// Runs one token of each of several sequences together: `tokens[i]` at the next position of
/// `kvs[i]` (appending its key and value there), so every weight matrix is read once for all of
/// them. Each token's logits go to `on_logits(i, logits)`. Every row is computed as
/// [`forward`] computes a single token, so the results are bit for bit those of one call per
/// sequence. `kvs` are caches of this model; at most `state.batch()` tokens.
pub fn forward_each<'k>(
    model: &Model<'_>,
    par: &dyn Parallel,
    state: &mut State<'_>,
    kvs: &mut dyn KvSet<'k>,
    tokens: &[TokenId],
    on_logits: &mut dyn FnMut(usize, &[f32]),
) -> Result<()> {
    if kvs.count() != tokens.len() {
        return Err(Error::InvalidArgument(
            "one token per sequence (as many caches as tokens)",
        ));
    }
    let done = run(
        model,
        par,
        state,
        &mut Seqs::Each(kvs),
        tokens,
        Logits::All,
        None,
        on_logits,
    );
    par.pass_done(if done.is_ok() { tokens.len() } else { 0 });
    done
}

/// The caches of the sequences a [`forward_each`] batch runs, by index.
pub trait KvSet<'k>: Sync {
    /// How many sequences.
    fn count(&self) -> usize;
    /// Sequence `i`'s cache.
    fn kv(&self, i: usize) -> &KvCache<'k>;
    /// Sequence `i`'s cache, to write.
    fn kv_mut(&mut self, i: usize) -> &mut KvCache<'k>;
}

/// The caches of a batch as optional slots filled from 0 up (the sequences are the filled
/// ones): a set built without allocation.
impl<'k, const N: usize> KvSet<'k> for [Option<&mut KvCache<'k>>; N] {
    fn count(&self) -> usize {
        self.iter().take_while(|k| k.is_some()).count()
    }
    fn kv(&self, i: usize) -> &KvCache<'k> {
        match &self[i] {
            Some(kv) => kv,
            None => unreachable!("a cache set is filled from 0 up"),
        }
    }
    fn kv_mut(&mut self, i: usize) -> &mut KvCache<'k> {
        match &mut self[i] {
            Some(kv) => kv,
            None => unreachable!("a cache set is filled from 0 up"),
        }
    }
}

/// The caches of a batch's tokens: one sequence at consecutive positions, or one token for
/// each of several sequences.
enum Seqs<'a, 'k> {
    One(&'a mut KvCache<'k>),
    Each(&'a mut dyn KvSet<'k>),
}

impl<'k> Seqs<'_, 'k> {
    /// The cache of batch token `i`, and the token's index in that cache's batch.
    fn at(&self, i: usize) -> (&KvCache<'k>, usize) {
        match self {
            Seqs::One(kv) => (kv, i),
            Seqs::Each(kvs) => (kvs.kv(i), 0),
        }
    }

    /// RoPE cos/sin rows of the `n` tokens at their positions.
    fn rope_table(&self, c: &Config, base: f32, freqs: Option<&[f32]>, n: usize, out: &mut [f32]) {
        match self {
            Seqs::One(kv) => rope_table(c, base, freqs, kv.n_pos(), n, out),
            Seqs::Each(kvs) => {
                for i in 0..n {
                    let row = &mut out[i * c.rope_dim..(i + 1) * c.rope_dim];
                    rope_table(c, base, freqs, kvs.kv(i).n_pos(), 1, row);
                }
            }
        }
    }

    /// Whether committing the batch overwrites cells that hold earlier tokens.
    fn overwrites(&self, n: usize) -> bool {
        match self {
            Seqs::One(kv) => kv.n_pos() + n > kv.capacity(),
            Seqs::Each(kvs) => (0..n).any(|i| kvs.kv(i).n_pos() + 1 > kvs.kv(i).capacity()),
        }
    }

    fn clear(&mut self, n: usize) {
        match self {
            Seqs::One(kv) => kv.clear(),
            Seqs::Each(kvs) => (0..n).for_each(|i| kvs.kv_mut(i).clear()),
        }
    }

    fn stage(&mut self, i: usize, k: &[f32], v: &[f32]) {
        match self {
            Seqs::One(kv) => kv.stage(i, k, v),
            Seqs::Each(kvs) => kvs.kv_mut(i).stage(0, k, v),
        }
    }

    fn commit(&mut self, l: usize, n: usize) {
        match self {
            Seqs::One(kv) => kv.commit(l, n),
            Seqs::Each(kvs) => (0..n).for_each(|i| kvs.kv_mut(i).commit(l, 1)),
        }
    }

    fn advance(&mut self, n: usize) {
        match self {
            Seqs::One(kv) => kv.advance(n),
            Seqs::Each(kvs) => (0..n).for_each(|i| kvs.kv_mut(i).advance(1)),
        }
    }
}

/// The forward pass over a batch whose tokens belong to `seqs`.
#[allow(clippy::too_many_arguments)]
fn run(
    model: &Model<'_>,
    par: &dyn Parallel,
    state: &mut State<'_>,
    seqs: &mut Seqs<'_, '_>,
    tokens: &[TokenId],
    want: Logits,
    cancel: Option<&AtomicBool>,
    on_logits: &mut dyn FnMut(usize, &[f32]),
) -> Result<()> {
    let c = &model.config;
    let w = &model.weights;
    let k = &model.kernels;
    let n = tokens.len();
    if n == 0 {
        return Ok(());
    }
    if n > state.batch {
        return Err(Error::Capacity {
            what: "forward batch",
            needed: n as u64,
            available: state.batch as u64,
        });
    }
    let (e, ff) = (c.n_embd, c.n_ff);
    trace::next_call();

    for (i, &t) in tokens.iter().enumerate() {
        if t as usize >= c.n_vocab {
            return Err(Error::TokenOutOfRange {
                id: t,
                vocab: c.n_vocab as u32,
            });
        }
        w.token_embd
            .dequantize_row(t as usize, &mut state.x[i * e..(i + 1) * e]);
    }
    if c.arch().embd_scale {
        let scale = libm::sqrtf(e as f32);
        state.x[..n * e].iter_mut().for_each(|x| *x *= scale);
    }
    seqs.rope_table(c, c.rope_base, w.rope_freqs, n, state.rope);
    if !state.rope_local.is_empty() {
        seqs.rope_table(c, c.rope_base_local, w.rope_freqs, n, state.rope_local);
    }
    trace::tensor("embd", None, &state.x[..n * e]);

    // Whether committing this batch overwrites cells that hold earlier tokens (the ring is full):
    // a batch stopped half-way would then leave those cells new in some layers and old in others.
    let overwrites = seqs.overwrites(n);
    for (l, layer) in w.layers.iter().enumerate() {
        // A stop request is honoured between layers: nothing of this batch is kept, and the cache
        // is as before it unless the batch had begun to overwrite held cells, in which case the
        // context is dropped (the session stays usable, empty).
        if l > 0 && cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            if overwrites {
                seqs.clear(n);
            }
            return Err(Error::Cancelled);
        }
        attention_block(model, par, layer, l, state, seqs, n);
        // Feed-forward block.
        let s = &mut *state;
        rms_norm(
            &s.x[..n * e],
            layer.ffn_norm,
            c.rms_eps,
            &mut s.xn[..n * e],
            e,
        );
        trace::tensor("ffn_norm", Some(l), &s.xn[..n * e]);
        let mut act = quantize(k, &s.xn[..n * e], e, &mut s.acts_in);
        // Gate and up in one parallel region; on each thread's rows right after, the gate's
        // activation, then those values quantized for the down product (its blocks are whole
        // in a chunk: the chunks are cut at `align`).
        let gelu = c.arch().ffn == FfnAct::GeluTanh;
        // The one form `ffn_down` reads: Q8_K when its rows are whole blocks of 256 of it.
        let form = if reads_q8k(&layer.w_down) && ff.is_multiple_of(QK_K) {
            Form::Q8K
        } else {
            Form::Blocks
        };
        let views = QuantViews::new(&mut s.acts, n, ff, form);
        let gated = |r0: usize, g: &mut OutRows<'_>, u: &mut OutRows<'_>| {
            for t in 0..g.n_toks() {
                if gelu {
                    (k.geglu)(g.row_mut(t), u.row_mut(t));
                } else {
                    (k.swiglu)(g.row_mut(t), u.row_mut(t));
                }
            }
            // SAFETY: chunks are disjoint row ranges, so their columns of the quantized rows are.
            unsafe { views.chunk(k, r0, g) };
        };
        gemm_fused(
            par,
            k,
            &mut act,
            n,
            &mut [
                (&layer.w_gate, &mut s.gate[..n * ff]),
                (&layer.w_up, &mut s.up[..n * ff]),
            ],
            Some((&gated, form.block())),
        );
        let whole = views.whole();
        trace::tensor("ffn_up", Some(l), &s.up[..n * ff]);
        trace::tensor("ffn_swiglu", Some(l), &s.gate[..n * ff]);
        let mut act = if whole {
            Act::made(&s.gate[..n * ff], ff, &mut s.acts, form)
        } else {
            quantize(k, &s.gate[..n * ff], ff, &mut s.acts)
        };
        gemm_fused(
            par,
            k,
            &mut act,
            n,
            &mut [(&layer.w_down, &mut s.att[..n * e])],
            None,
        );
        trace::tensor("ffn_out", Some(l), &s.att[..n * e]);
        if let Some(post) = layer.ffn_post_norm {
            rms_norm_in_place(&mut s.att[..n * e], post, c.rms_eps, e);
            trace::tensor("ffn_post_norm", Some(l), &s.att[..n * e]);
        }
        add(&mut s.x[..n * e], &s.att[..n * e]);
        trace::tensor("l_out", Some(l), &s.x[..n * e]);
    }
    seqs.advance(n);

    // Output head for the wanted tokens, LOGIT_ROWS at a time.
    let first = match want {
        Logits::None => return Ok(()),
        Logits::Last => n - 1,
        Logits::All => 0,
    };
    let mut i = first;
    while i < n {
        let m = (n - i).min(state.logit_rows);
        let s = &mut *state;
        rms_norm(
            &s.x[i * e..(i + m) * e],
            w.output_norm,
            c.rms_eps,
            &mut s.xn[..m * e],
            e,
        );
        trace::tensor("result_norm", None, &s.xn[..m * e]);
        let mut act = quantize(k, &s.xn[..m * e], e, &mut s.acts);
        gemm_fused(
            par,
            k,
            &mut act,
            m,
            &mut [(&w.output, &mut s.logits[..m * c.n_vocab])],
            None,
        );
        if c.logit_softcap > 0.0 {
            let (cap, inv) = (c.logit_softcap, 1.0 / c.logit_softcap);
            let logits = &mut s.logits[..m * c.n_vocab];
            // tanh(v·inv)·cap, each step rounded as one expression would.
            logits.iter_mut().for_each(|v| *v *= inv);
            (k.tanh)(logits);
            logits.iter_mut().for_each(|v| *v *= cap);
        }
        trace::tensor("result_output", None, &s.logits[..m * c.n_vocab]);
        for j in 0..m {
            on_logits(i + j, &s.logits[j * c.n_vocab..(j + 1) * c.n_vocab]);
        }
        i += m;
    }
    Ok(())
}

/// RMSNorm, projections, RoPE, cache write, attention and output projection of one block.
#[allow(clippy::too_many_arguments)]
fn attention_block(
    model: &Model<'_>,
    par: &dyn Parallel,
    layer: &Layer<'_>,
    l: usize,
    s: &mut State<'_>,
    seqs: &mut Seqs<'_, '_>,
    n: usize,
) {
    let c = &model.config;
    let k = &model.kernels;
    let arch = c.arch();
    let (e, qd, kvd, hd) = (c.n_embd, c.q_dim(), c.kv_dim(), c.head_dim);
    rms_norm(
        &s.x[..n * e],
        layer.attn_norm,
        c.rms_eps,
        &mut s.xn[..n * e],
        e,
    );
    trace::tensor("attn_norm", Some(l), &s.xn[..n * e]);
    let mut act = quantize(k, &s.xn[..n * e], e, &mut s.acts);
    gemm_fused(
        par,
        k,
        &mut act,
        n,
        &mut [
            (&layer.wq, &mut s.q[..n * qd]),
            (&layer.wk, &mut s.k[..n * kvd]),
            (&layer.wv, &mut s.v[..n * kvd]),
        ],
        None,
    );
    for (b, out, w) in [
        (layer.bq, &mut s.q[..n * qd], qd),
        (layer.bk, &mut s.k[..n * kvd], kvd),
        (layer.bv, &mut s.v[..n * kvd], kvd),
    ] {
        if let Some(b) = b {
            out.chunks_exact_mut(w).for_each(|row| add(row, b));
        }
    }
    if let (Some(qn), Some(kn)) = (layer.q_norm, layer.k_norm) {
        rms_norm_in_place(&mut s.q[..n * qd], qn, c.rms_eps, hd);
        rms_norm_in_place(&mut s.k[..n * kvd], kn, c.rms_eps, hd);
        trace::tensor("Qcur_normed", Some(l), &s.q[..n * qd]);
        trace::tensor("Kcur_normed", Some(l), &s.k[..n * kvd]);
    }

    trace::tensor("Vcur", Some(l), &s.v[..n * kvd]);
    let window = c.layer_window(l);
    let table = if window.is_some() && !s.rope_local.is_empty() {
        &*s.rope_local
    } else {
        &*s.rope
    };
    let rot = match arch.rope {
        RopeLayout::Adjacent => k.rope,
        RopeLayout::Neox => k.rope_neox,
    };
    for i in 0..n {
        let cs = &table[i * c.rope_dim..(i + 1) * c.rope_dim];
        for h in 0..c.n_head {
            rot(&mut s.q[i * qd + h * hd..i * qd + (h + 1) * hd], cs);
        }
        for h in 0..c.n_head_kv {
            rot(&mut s.k[i * kvd + h * hd..i * kvd + (h + 1) * hd], cs);
        }
        seqs.stage(
            i,
            &s.k[i * kvd..(i + 1) * kvd],
            &s.v[i * kvd..(i + 1) * kvd],
        );
    }

    trace::tensor("Qcur", Some(l), &s.q[..n * qd]);
    trace::tensor("Kcur", Some(l), &s.k[..n * kvd]);
    let group = c.n_head / c.n_head_kv;
    let scale = if arch.scale_queries {
        s.q[..n * qd].iter_mut().for_each(|x| *x *= c.attn_scale);
        1.0
    } else {
        c.attn_scale
    };
    let tiled = match seqs {
        Seqs::One(kv) => attend_batch_tiled(model, par, l, s, kv, n, scale),
        Seqs::Each(_) => false,
    };
    if !tiled {
        let (q, seqs_r) = (&*s.q, &*seqs);
        let att = OutRows::new(&mut s.att[..n * qd], qd, qd, n);
        let att = &att;
        par.for_each(n * c.n_head, usize::MAX, &|item, _| {
            // SAFETY: each item (token i, head h) writes only row i, columns of head h, and
            // every item runs once.
            let mut out = unsafe { att.rows(0, qd) };
            let (i, h) = (item / c.n_head, item % c.n_head);
            let qh = &q[i * qd + h * hd..i * qd + (h + 1) * hd];
            let (kvr, ki) = seqs_r.at(i);
            attend_head(k, kvr, l, h / group, ki, window, qh, scale, &mut |d, v| {
                out.set(i, h * hd + d, v)
            });
        });
    }
    seqs.commit(l, n);
    trace::tensor("kqv_out", Some(l), &s.att[..n * qd]);
    let mut act = quantize(k, &s.att[..n * qd], qd, &mut s.acts);
    gemm_fused(
        par,
        k,
        &mut act,
        n,
        &mut [(&layer.wo, &mut s.xn[..n * e])],
        None,
    );
    if let Some(b) = layer.bo {
        s.xn[..n * e]
            .chunks_exact_mut(e)
            .for_each(|row| add(row, b));
    }
    trace::tensor("attn_out", Some(l), &s.xn[..n * e]);
    if let Some(post) = layer.attn_post_norm {
        rms_norm_in_place(&mut s.xn[..n * e], post, c.rms_eps, e);
        trace::tensor("attn_post_norm", Some(l), &s.xn[..n * e]);
    }
    add(&mut s.x[..n * e], &s.xn[..n * e]);
    trace::tensor("ffn_inp", Some(l), &s.x[..n * e]);
}

/// Attention of a whole batch as llama.cpp computes it for batches of [`attend::TILE`] tokens or
/// more (its tiled flash attention): f32 queries, 64-key tiles, block-wise softmax, f32 running
/// sums ([`attend::attend_tiled`]). Taken when the batch is that large, the cache is f16 or f32
/// and no token of the batch evicts another (so every token sees the keys before it, as in
/// llama.cpp's cache); returns false, having done nothing, otherwise. Threads take (query tile,
/// head) items.
fn attend_batch_tiled(
    model: &Model<'_>,
    par: &dyn Parallel,
    l: usize,
    s: &mut State<'_>,
    kv: &KvCache<'_>,
    n: usize,
    scale: f32,
) -> bool {
    let c = &model.config;
    let k = &model.kernels;
    let (qd, hd) = (c.q_dim(), c.head_dim);
    // One scratch part per query head (see `tiles_len`), each for the heads of one KV head.
    let group = c.n_head / c.n_head_kv.max(1);
    let per_group = attend::tile_scratch_len(hd, group);
    // A sliding window that masks any key of this batch needs the per-token path.
    let masked = c.layer_window(l).is_some_and(|w| kv.n_pos() + n > w);
    if n < attend::TILE
        || masked
        || c.n_head_kv == 0
        || s.tiles.len() < c.n_head * per_group
        || !matches!(kv.config().ty, KvType::F16 | KvType::F32)
        || kv.unwrapped_batch(l, 0, n).is_none()
    {
        return false;
    }
    let q = &*s.q;
    let att = OutRows::new(&mut s.att[..n * qd], qd, qd, n);
    let att = &att;
    let tiles = OutRows::new(
        &mut s.tiles[..c.n_head * per_group],
        per_group,
        per_group,
        c.n_head,
    );
    let tiles = &tiles;
    // Items are (query tile, KV head): each tile of keys and values is loaded once for the
    // KV head's query heads. One scratch part per slot: n_head parts, so at most n_head
    // threads. Items go from the last query tile to the first: later tiles see more keys, so
    // the costly ones start first.
    let items = n.div_ceil(attend::TILE) * c.n_head_kv;
    par.for_each(items, c.n_head, &|item, slot| {
        // SAFETY: each item (query tile, KV head kh) writes only its rows' columns of the query
        // heads of kh, each item runs once, and only the thread holding `slot` uses scratch
        // part `slot`.
        let (mut out, mut scratch) = unsafe { (att.rows(0, qd), tiles.rows(0, per_group)) };
        let buf = scratch.row_mut(slot);
        let item = items - 1 - item;
        let (i0, kh) = ((item / c.n_head_kv) * attend::TILE, item % c.n_head_kv);
        let Some([(pk, pv, np), (sk, sv, _)]) = kv.unwrapped_batch(l, kh, n) else {
            return;
        };
        let mut load = |j: usize, key: &mut [f32], value: &mut [f32]| {
            let (rk, rv, j) = if j < np {
                (&pk, &pv, j)
            } else {
                (&sk, &sv, j - np)
            };
            row_f32(k, rk, j, key);
            row_f32(k, rv, j, value);
        };
        let h0 = kh * group;
        attend::attend_tiled(
            k,
            &q[i0 * qd + h0 * hd..],
            qd,
            ((n - i0).min(attend::TILE), group),
            hd,
            np + i0,
            scale,
            &mut load,
            buf,
            &mut |r, col, v| out.set(i0 + r, h0 * hd + col, v),
        );
    });
    true
}

/// Row `j` of f16 or f32 cache rows (`out.len()` values each) as f32.
fn row_f32(k: &Kernels, rows: &Rows<'_>, j: usize, out: &mut [f32]) {
    let w = out.len();
    match rows {
        Rows::F16(r) => (k.f16_f32)(&r[j * w..(j + 1) * w], out),
        Rows::F32(r) => out.copy_from_slice(&r[j * w..(j + 1) * w]),
        Rows::Q8_0(_) => unreachable!("tiled attention is only taken for f16 and f32 caches"),
    }
}

/// One query head of batch token `i` over everything it sees in the cache (see
/// [`KvCache::for_each_run`]), at the cache's precision; writes the `hd` outputs through `out`.
#[allow(clippy::too_many_arguments)]
fn attend_head(
    k: &Kernels,
    kv: &KvCache<'_>,
    l: usize,
    kh: usize,
    i: usize,
    window: Option<usize>,
    qh: &[f32],
    scale: f32,
    out: &mut dyn FnMut(usize, f32),
) {
    let hd = qh.len();
    let mut st = Softmax::NEW;
    match kv.config().ty {
        // llama.cpp's numerics meet an f16 cache with the query rounded to f16 and an f16
        // running sum, as its CPU flash attention does; ember's keep both in f32.
        KvType::F16 => {
            let runs = &mut |f: &mut RunFn<'_>| kv.for_each_run(l, kh, i, window, f);
            match k.numerics {
                Numerics::Exact => attend_f16_cache::<f16>(k, qh, scale, runs, out),
                Numerics::Ember => attend_f16_cache::<f32>(k, qh, scale, runs, out),
            }
        }
        KvType::F32 => {
            let mut acc = [0.0f32; MAX_HEAD_DIM];
            let acc = &mut acc[..hd];
            kv.for_each_run(l, kh, i, window, &mut |keys, values, n| {
                if let (Rows::F32(ks), Rows::F32(vs)) = (keys, values) {
                    attend::attend_f32(k, qh, ks, vs, n, scale, acc, &mut st);
                }
            });
            finish(acc.iter().copied(), st.sum, out);
        }
        KvType::Q8_0 => {
            // The query quantized to 8 bits like an activation row; scores are integer dots.
            let nb = hd / QK;
            let mut qs = [0i8; MAX_HEAD_DIM];
            let (mut qd, mut qsum) = ([0.0f32; MAX_HEAD_DIM / QK], [0.0f32; MAX_HEAD_DIM / QK]);
            (k.quantize)(qh, &mut qs[..hd], &mut qd[..nb], &mut qsum[..nb]);
            let qa = QActs {
                qs: &qs[..hd],
                d: &qd[..nb],
                s: &qsum[..nb],
                sums: &[],
                nb,
            };
            let mut acc = [0.0f32; MAX_HEAD_DIM];
            let acc = &mut acc[..hd];
            kv.for_each_run(l, kh, i, window, &mut |keys, values, n| {
                if let (Rows::Q8_0(ks), Rows::Q8_0(vs)) = (keys, values) {
                    attend::attend_q8_0(k, &qa, ks, vs, n, scale, acc, &mut st);
                }
            });
            finish(acc.iter().copied(), st.sum, out);
        }
    }
}

/// What [`KvCache::for_each_run`] calls for each run of cells: keys, values, their count.
type RunFn<'f> = dyn FnMut(Rows<'_>, Rows<'_>, usize) + 'f;

/// [`attend_head`] over an f16 cache (`runs` hands its runs of keys and values to a function, as
/// [`KvCache::for_each_run`]) with a running sum of type `A` (for an f16 sum, the query is
/// rounded to f16 values first: [`RunningSum::ROUNDS_QUERY`]).
fn attend_f16_cache<A: RunningSum>(
    k: &Kernels,
    qh: &[f32],
    scale: f32,
    runs: &mut dyn FnMut(&mut RunFn<'_>),
    out: &mut dyn FnMut(usize, f32),
) {
    let hd = qh.len();
    let mut st = Softmax::NEW;
    let mut q16 = [0.0f32; MAX_HEAD_DIM];
    let q = if A::ROUNDS_QUERY {
        for (d, &x) in q16.iter_mut().zip(qh) {
            *d = f16::from_f32(x).to_f32();
        }
        &q16[..hd]
    } else {
        qh
    };
    let mut acc = [A::ZERO; MAX_HEAD_DIM];
    let acc = &mut acc[..hd];
    runs(&mut |keys, values, n| {
        if let (Rows::F16(ks), Rows::F16(vs)) = (keys, values) {
            attend::attend_f16(k, q, ks, vs, n, scale, acc, &mut st);
        }
    });
    finish(acc.iter().map(|a| a.to_f32()), st.sum, out);
}

/// Writes acc / sum (0 when nothing was attended).
fn finish(acc: impl Iterator<Item = f32>, sum: f32, out: &mut dyn FnMut(usize, f32)) {
    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
    for (d, a) in acc.enumerate() {
        out(d, a * inv);
    }
}

/// The buffers of the quantized activations: quants `[batch][wide]` (`wide`: the widest matrix
/// input) with block scales, sums and integer sums `[batch][wide / 32]`, and the Q8_K form (for the
/// 256-element block formats; empty when the model has none): quants `[batch][wide]`, scales
/// `[batch][wide / 256]`, integer sums of each 32 quants `[batch][wide / 32]`.
struct ActBufs<'a> {
    qs: &'a mut [i8],
    d: &'a mut [f32],
    s: &'a mut [f32],
    sums: &'a mut [i32],
    kqs: &'a mut [i8],
    kd: &'a mut [f32],
    ksums: &'a mut [i32],
}

impl<'a> ActBufs<'a> {
    /// Arena bytes for `batch` rows of up to `wide` values, `k_wide` of them in Q8_K form.
    fn bytes_needed(batch: usize, wide: usize, k_wide: usize) -> usize {
        Arena::size_of::<i8>(batch * wide)
            + Arena::size_of::<f32>(batch * wide.div_ceil(QK)) * 2
            + Arena::size_of::<i32>(batch * wide.div_ceil(QK))
            + Arena::size_of::<i8>(batch * k_wide)
            + Arena::size_of::<f32>(batch * k_wide / QK_K)
            + Arena::size_of::<i32>(batch * k_wide / QK)
    }

    /// The buffers in `arena`.
    fn new(arena: &mut Arena<'a>, batch: usize, wide: usize, k_wide: usize) -> Result<Self> {
        let what = "forward state";
        Ok(ActBufs {
            qs: arena.alloc(batch * wide, what)?,
            d: arena.alloc(batch * wide.div_ceil(QK), what)?,
            s: arena.alloc(batch * wide.div_ceil(QK), what)?,
            sums: arena.alloc(batch * wide.div_ceil(QK), what)?,
            kqs: arena.alloc(batch * k_wide, what)?,
            kd: arena.alloc(batch * k_wide / QK_K, what)?,
            ksums: arena.alloc(batch * k_wide / QK, what)?,
        })
    }
}

/// Activations in every form the matrix products read: f32 (f32/f16/bf16 weights), 8-bit blocks
/// of 32, and Q8_K (the 256-element block formats), made the first time a product needs it
/// ([`Act::make_q8k`]).
struct Act<'b> {
    /// Rows (tokens) of `cols` values.
    f32: &'b [f32],
    cols: usize,
    /// Blocks of 32; `None` when only the Q8_K form was made ([`Form::Q8K`]).
    q: Option<QActs<'b>>,
    k: Option<QActs<'b>>,
    /// Where the Q8_K form goes, until it is made.
    kbuf: Option<(&'b mut [i8], &'b mut [f32], &'b mut [i32])>,
}

impl<'b> Act<'b> {
    /// The rows (tokens).
    fn rows(&self) -> usize {
        self.f32.len() / self.cols
    }

    /// The activations in the form `acts` (`None` for Q8_K before [`Act::make_q8k`]).
    fn form(&self, acts: Acts) -> Option<&QActs<'b>> {
        match acts {
            Acts::Q8_0 | Acts::Q8_1 => self.q.as_ref(),
            Acts::Q8K => self.k.as_ref(),
        }
    }

    /// Makes the Q8_K form, once, when one of `matrices` reads it. Rows whose width is not whole
    /// blocks of 256 have none (no such matrix reads them: its rows are whole blocks).
    fn make_q8k<'m>(&mut self, k: &Kernels, mut matrices: impl Iterator<Item = &'m Matrix<'m>>) {
        if self.k.is_some() || !matrices.any(reads_q8k) {
            return;
        }
        let (rows, cols) = (self.rows(), self.cols);
        let Some((qs, d, sums)) = self.kbuf.take() else {
            return;
        };
        if !cols.is_multiple_of(QK_K) || qs.len() < rows * cols {
            return;
        }
        let (qs, d) = (&mut qs[..rows * cols], &mut d[..rows * cols / QK_K]);
        let sums = &mut sums[..rows * cols / QK];
        (k.quantize_q8k)(self.f32, qs, d);
        crate::kernels::block_sums(qs, sums);
        self.k = Some(QActs {
            qs,
            d,
            s: &[],
            sums,
            nb: cols / QK_K,
        });
    }
}

/// Quantizes `x` (rows of `cols`) once into blocks of 32, for every matrix that reads it; the
/// Q8_K form is made when a product needs it.
fn quantize<'b>(k: &Kernels, x: &'b [f32], cols: usize, bufs: &'b mut ActBufs<'_>) -> Act<'b> {
    let rows = x.len() / cols;
    let nb = cols / QK;
    for r in 0..rows {
        (k.quantize)(
            &x[r * cols..(r + 1) * cols],
            &mut bufs.qs[r * cols..(r + 1) * cols],
            &mut bufs.d[r * nb..(r + 1) * nb],
            &mut bufs.s[r * nb..(r + 1) * nb],
        );
    }
    crate::kernels::block_sums(&bufs.qs[..rows * cols], &mut bufs.sums[..rows * nb]);
    Act::made(x, cols, bufs, Form::Blocks)
}

/// Which form of quantized activations a pass makes (the other, if a product wants it, is
/// made from the f32 values then: [`Act::make_q8k`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Form {
    /// Blocks of 32 (read by the 32-element block formats and the `exact` kernels).
    Blocks,
    /// Q8_K only (read by the 256-element block formats).
    Q8K,
}

impl Form {
    /// The values of one block of the form.
    fn block(self) -> usize {
        match self {
            Form::Blocks => QK,
            Form::Q8K => QK_K,
        }
    }
}

impl<'b> Act<'b> {
    /// The activations `x` (rows of `cols`) already quantized into `bufs` in `form` (as
    /// [`quantize`] or [`QuantViews`] leave them).
    fn made(x: &'b [f32], cols: usize, bufs: &'b mut ActBufs<'_>, form: Form) -> Act<'b> {
        let rows = x.len() / cols;
        let nb = cols / QK;
        let (kqs, kd, ksums) = (&mut *bufs.kqs, &mut *bufs.kd, &mut *bufs.ksums);
        let (k, kbuf) = if form == Form::Q8K {
            let k = QActs {
                qs: &kqs[..rows * cols],
                d: &kd[..rows * cols / QK_K],
                s: &[],
                sums: &ksums[..rows * nb],
                nb: cols / QK_K,
            };
            (Some(k), None)
        } else {
            (None, Some((kqs, kd, ksums)))
        };
        Act {
            f32: x,
            cols,
            q: (form == Form::Blocks).then(|| QActs {
                qs: &bufs.qs[..rows * cols],
                d: &bufs.d[..rows * nb],
                s: &bufs.s[..rows * nb],
                sums: &bufs.sums[..rows * nb],
                nb,
            }),
            k,
            kbuf,
        }
    }
}

/// Whether `m`'s products read the activations in Q8_K form.
fn reads_q8k(m: &Matrix<'_>) -> bool {
    matches!(m, Matrix::Blocks { kind, .. } if kind.acts == Acts::Q8K)
}

/// Views of activation buffers that the chunks of a parallel region quantize their columns into
/// (each chunk its own, so the next product needs no serial pass), in one [`Form`]. Rows of
/// `cols` values, as [`quantize`] lays them out.
struct QuantViews<'b> {
    form: Form,
    /// Quants, scales and integer sums; with [`Form::Blocks`] also the block sums (`s`).
    qs: OutRows<'b, i8>,
    d: OutRows<'b, f32>,
    s: Option<OutRows<'b, f32>>,
    sums: OutRows<'b, i32>,
    /// Cleared by a chunk that is not whole blocks (and so quantized nothing).
    whole: AtomicBool,
}

impl<'b> QuantViews<'b> {
    /// Views of `bufs` for `rows` rows of `cols` values in `form` (Q8_K needs `cols` whole
    /// blocks of 256).
    fn new(bufs: &'b mut ActBufs<'_>, rows: usize, cols: usize, form: Form) -> Self {
        let nb = cols / QK;
        let (qs, d, s, sums) = match form {
            Form::Blocks => (
                &mut bufs.qs[..rows * cols],
                &mut bufs.d[..rows * nb],
                Some(OutRows::new(&mut bufs.s[..rows * nb], nb, nb, rows)),
                &mut bufs.sums[..rows * nb],
            ),
            Form::Q8K => (
                &mut bufs.kqs[..rows * cols],
                &mut bufs.kd[..rows * cols / QK_K],
                None,
                &mut bufs.ksums[..rows * nb],
            ),
        };
        let scales = cols / form.block();
        QuantViews {
            form,
            qs: OutRows::new(qs, cols, cols, rows),
            d: OutRows::new(d, scales, scales, rows),
            s,
            sums: OutRows::new(sums, nb, nb, rows),
            whole: AtomicBool::new(true),
        }
    }

    /// Whether every chunk was whole blocks, so that the views hold every row quantized.
    fn whole(&self) -> bool {
        self.whole.load(Ordering::Relaxed)
    }

    /// Quantizes `x`, columns `c0..c0 + x.n_rows()` of every row, into the views: the same
    /// blocks as quantizing whole rows, as `c0` and the chunk's width are whole blocks of the
    /// form (a chunk that is not quantizes nothing and clears [`QuantViews::whole`]).
    ///
    /// # Safety
    /// Calls at the same time must take disjoint column ranges.
    unsafe fn chunk(&self, k: &Kernels, c0: usize, x: &mut OutRows<'_>) {
        let c1 = c0 + x.n_rows();
        let block = self.form.block();
        if !c0.is_multiple_of(block) || !c1.is_multiple_of(block) {
            self.whole.store(false, Ordering::Relaxed);
            return;
        }
        // SAFETY: the caller's column ranges are disjoint, so are their blocks' (whole blocks
        // of the form, and of 32 for the integer sums).
        let (mut qs, mut d, mut s, mut sums) = unsafe {
            (
                self.qs.rows(c0, c1),
                self.d.rows(c0 / block, c1 / block),
                self.s.as_ref().map(|s| s.rows(c0 / QK, c1 / QK)),
                self.sums.rows(c0 / QK, c1 / QK),
            )
        };
        for t in 0..x.n_toks() {
            let xt = x.row_mut(t);
            match &mut s {
                Some(s) => (k.quantize)(xt, qs.row_mut(t), d.row_mut(t), s.row_mut(t)),
                None => (k.quantize_q8k)(xt, qs.row_mut(t), d.row_mut(t)),
            }
            crate::kernels::block_sums(qs.row_mut(t), sums.row_mut(t));
        }
    }
}

/// Work run by each thread on its rows of the first two outputs of a fused product: the first
/// row's index, then the two views.
type AfterFn<'f> = dyn Fn(usize, &mut OutRows<'_>, &mut OutRows<'_>) + Sync + 'f;

/// Chunks of rows are multiples of this (whole decode tiles).
const ROW_ALIGN: usize = 16;

/// Several products of the same activations in one parallel region: for each `(matrix, out)`,
/// `out[t][r] = matrix[r] · a[t]` for `n` tokens. The rows of every matrix are cut into chunks
/// ([`chunk_rows`]) that the threads take as they come free. With `after`, the first two
/// matrices (of equal rows) are cut alike, in multiples of its `align` rows, and each chunk of
/// both ends with `after(first_row, out0, out1)` on its rows (SwiGLU and the quantization of its
/// result, without another synchronisation).
fn gemm_fused(
    par: &dyn Parallel,
    k: &Kernels,
    a: &mut Act<'_>,
    n: usize,
    jobs: &mut [(&Matrix<'_>, &mut [f32])],
    after: Option<(&AfterFn<'_>, usize)>,
) {
    const MAX_JOBS: usize = 3;
    assert!(jobs.len() <= MAX_JOBS);
    a.make_q8k(k, jobs.iter().map(|(m, _)| *m));
    let a = &*a;
    let nj = jobs.len();
    let mut views: [Option<(Matrix<'_>, OutRows<'_>)>; MAX_JOBS] = [None, None, None];
    for (v, (m, out)) in views.iter_mut().zip(jobs.iter_mut()) {
        let rows = m.rows();
        *v = Some((**m, OutRows::new(out, rows, rows, n)));
    }
    let rows = |j: usize| views[j].as_ref().map_or(0, |(m, _)| m.rows());
    let paired = after.is_some() && nj >= 2;
    if paired {
        assert_eq!(rows(0), rows(1), "paired products differ in rows");
    }
    // Items: for each job (the pair counting as one), its chunks, in order, as many as the
    // threads the pool uses now want (a busy machine's pool running alone takes the larger
    // chunks of one thread).
    let threads = par.active();
    let mut first = [0usize; MAX_JOBS + 1];
    let mut chunk = [ROW_ALIGN; MAX_JOBS];
    for j in 0..nj {
        let align = match after {
            Some((_, align)) if paired && j < 2 => align.max(ROW_ALIGN),
            _ => ROW_ALIGN,
        };
        chunk[j] = chunk_rows(rows(j), threads, align);
        let items = if paired && j == 1 {
            0
        } else {
            rows(j).div_ceil(chunk[j])
        };
        first[j + 1] = first[j] + items;
    }
    let views = &views;
    par.for_each(first[nj], usize::MAX, &|item, _| {
        let j = (0..nj).rfind(|&j| first[j] <= item).unwrap_or(0);
        let Some((m, out)) = &views[j] else { return };
        let r0 = (item - first[j]) * chunk[j];
        let r1 = (r0 + chunk[j]).min(m.rows());
        // SAFETY: chunks are disjoint row ranges of each output, and each item runs once.
        let mut sub = unsafe { out.rows(r0, r1) };
        gemm_rows(k, m, a, r0, r1, &mut sub);
        if let (true, Some((f, _)), Some((m1, out1))) = (paired && j == 0, after, &views[1]) {
            // SAFETY: as above, for the second product's rows of this chunk.
            let mut sub1 = unsafe { out1.rows(r0, r1) };
            gemm_rows(k, m1, a, r0, r1, &mut sub1);
            f(r0, &mut sub, &mut sub1);
        }
    });
}

/// Rows `r0..r1` of `m` times every token of `a`, into `out` (a view of those rows).
fn gemm_rows(
    k: &Kernels,
    m: &Matrix<'_>,
    a: &Act<'_>,
    r0: usize,
    r1: usize,
    out: &mut OutRows<'_>,
) {
    let cols = m.cols();
    let nb = cols / QK;
    let n = a.rows();
    let exact = k.numerics == Numerics::Exact;
    match (*m, &a.q) {
        // llama.cpp's order, when asked for (blocks of 32 are made for every matrix but the
        // `ffn_down` of a 256-element block format).
        (Matrix::Q4_0 { data, .. }, Some(q)) if exact => {
            (k.gemm_q4_0)(&data[r0 * nb..r1 * nb], q, out)
        }
        (Matrix::Q4_1 { data, .. }, Some(q)) if exact => {
            (k.gemm_q4_1)(&data[r0 * nb..r1 * nb], q, out)
        }
        (Matrix::Q8_0 { data, .. }, Some(q)) if exact => {
            (k.gemm_q8_0)(&data[r0 * nb..r1 * nb], q, out)
        }
        // The formats of the block table: their scalar spec, the same on every kernel set.
        (
            Matrix::Q4_0 { .. } | Matrix::Q4_1 { .. } | Matrix::Q8_0 { .. } | Matrix::Blocks { .. },
            _,
        ) => {
            let Some((kind, data)) = m.table_blocks() else {
                // Not reached: these matrices are all rows of the table. Were it reached, the
                // product is NaN rather than a wrong number.
                for t in 0..out.n_toks() {
                    out.row_mut(t).fill(f32::NAN);
                }
                return;
            };
            let rb = m.row_bytes();
            match a.form(kind.acts) {
                Some(acts) => (k.gemm_blocks)(kind, &data[r0 * rb..r1 * rb], rb, acts, out),
                // Not reached: `gemm_fused` makes the Q8_K form before any product that reads
                // it (the state holds its buffers whenever the model has such a matrix,
                // `Config::k_acts`, and such rows are whole blocks of 256), and blocks of 32
                // are missing only for an `ffn_down` that reads Q8_K. Were it reached, the
                // product is NaN rather than a wrong number.
                None => {
                    for t in 0..out.n_toks() {
                        out.row_mut(t).fill(f32::NAN);
                    }
                }
            }
        }
        (Matrix::F32 { data, .. }, _) => f32_gemm(
            k.dot_f32,
            &data[r0 * cols..r1 * cols],
            &a.f32[..n * cols],
            cols,
            out,
        ),
        (Matrix::F16 { data, .. }, _) => f32_gemm(
            k.dot_f16_f32,
            &data[r0 * cols..r1 * cols],
            &a.f32[..n * cols],
            cols,
            out,
        ),
        (Matrix::BF16 { data, .. }, _) => f32_gemm(
            |w: &[half::bf16], x: &[f32]| {
                w.iter().zip(x).fold(0.0f32, |acc, (a, &b)| {
                    crate::kernels::scalar::fma(a.to_f32(), b, acc)
                })
            },
            &data[r0 * cols..r1 * cols],
            &a.f32[..n * cols],
            cols,
            out,
        ),
    }
}

/// Row-by-row product of float weights with f32 activations.
fn f32_gemm<W>(
    dot: impl Fn(&[W], &[f32]) -> f32,
    w: &[W],
    x: &[f32],
    cols: usize,
    out: &mut OutRows<'_>,
) {
    for (r, row) in w.chunks_exact(cols).enumerate() {
        for (t, xt) in x.chunks_exact(cols).enumerate() {
            out.set(t, r, dot(row, xt));
        }
    }
}

/// RMSNorm of each `width` values of `x`, in place: `x / sqrt(mean(x²) + eps) * weight`
/// ([`rms_scales`]).
pub fn rms_norm_in_place(x: &mut [f32], weight: &[f32], eps: f32, width: usize) {
    for rows in x.chunks_mut(RMS_ROWS * width) {
        let scales = rms_scales(rows, width, eps);
        for (row, scale) in rows.chunks_exact_mut(width).zip(scales) {
            for (v, &g) in row.iter_mut().zip(weight) {
                *v = *v * scale * g;
            }
        }
    }
}

/// Rows whose sums of squares [`rms_scales`] runs side by side.
const RMS_ROWS: usize = 4;

/// 1 / sqrt(mean(x²) + eps) of each `width` values of `x` (at most [`RMS_ROWS`] rows), each
/// square rounded to f32 and a row's squares summed in f64, in order: exactly llama.cpp's
/// arithmetic. The rows' sums are independent chains stepped together (a row's sum is a chain
/// of dependent additions: several rows at once take about the time of one).
fn rms_scales(x: &[f32], width: usize, eps: f32) -> [f32; RMS_ROWS] {
    let rows = x.len() / width.max(1);
    debug_assert!(rows <= RMS_ROWS);
    if rows == 0 {
        return [0.0; RMS_ROWS];
    }
    // A missing row repeats the last one (its result is not used).
    let row = |r: usize| &x[r.min(rows - 1) * width..][..width];
    let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3));
    let mut ss = [0.0f64; RMS_ROWS];
    for j in 0..width {
        ss[0] += (r0[j] * r0[j]) as f64;
        ss[1] += (r1[j] * r1[j]) as f64;
        ss[2] += (r2[j] * r2[j]) as f64;
        ss[3] += (r3[j] * r3[j]) as f64;
    }
    ss.map(|s| 1.0 / libm::sqrtf((s / width as f64) as f32 + eps))
}

/// Row-wise RMSNorm: `out = x / sqrt(mean(x²) + eps) * weight` ([`rms_norm_in_place`] on a copy).
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32], width: usize) {
    out.copy_from_slice(x);
    rms_norm_in_place(out, weight, eps, width);
}

/// cos/sin of every rotated pair, for `n` tokens from position `pos0`: `out[t][2i] = cos θ`,
/// `out[t][2i+1] = sin θ`, θ = pos · base^(−2i/rope_dim) / factor_i (× the linear scale). θ is
/// stepped by repeated multiplication in f32, as ggml computes it, so the angles match
/// llama.cpp's bit for bit.
pub fn rope_table(
    c: &Config,
    base: f32,
    freqs: Option<&[f32]>,
    pos0: usize,
    n: usize,
    out: &mut [f32],
) {
    let theta_scale = libm::powf(base, -2.0 / c.rope_dim as f32);
    for t in 0..n {
        let row = &mut out[t * c.rope_dim..(t + 1) * c.rope_dim];
        let mut theta = (pos0 + t) as f32;
        for i in 0..c.rope_dim / 2 {
            let ff = freqs.map_or(1.0, |f| f[i]);
            let mut th = theta / ff;
            if c.rope_scale != 1.0 {
                th *= c.rope_scale;
            }
            let (sin, cos) = sin_cos(th);
            row[2 * i] = cos;
            row[2 * i + 1] = sin;
            theta *= theta_scale;
        }
    }
}

/// sin θ and cos θ as llama.cpp gets them from glibc's `sincosf` (see [`sincos`]).
#[inline]
fn sin_cos(th: f32) -> (f32, f32) {
    sincos::sincosf(th)
}

fn add(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of pseudo-random activations, some blocks all zero and one with a large value.
    fn rows(n: usize, cols: usize) -> Vec<f32> {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        (0..n * cols)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let v = (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                match i / QK % 7 {
                    3 => 0.0,
                    5 if i % QK == 9 => 1e4,
                    _ => v,
                }
            })
            .collect()
    }

    /// A form of quantized activations: quants, scales, integer sums, and (blocks of 32) the
    /// block sums.
    type Quants = (Vec<i8>, Vec<f32>, Vec<i32>, Vec<f32>);

    fn quants(a: &QActs<'_>) -> Quants {
        (a.qs.to_vec(), a.d.to_vec(), a.sums.to_vec(), a.s.to_vec())
    }

    #[test]
    fn chunks_quantized_in_parallel_equal_whole_rows() {
        let (n, cols) = (3, 4 * QK_K);
        let x = rows(n, cols);
        // The Q8_K form as the spec makes it.
        let mut kqs = vec![0i8; n * cols];
        let mut kd = vec![0f32; n * cols / QK_K];
        let mut ksums = vec![0i32; n * cols / QK];
        crate::weights::quants::quantize_q8k(&x, &mut kqs, &mut kd);
        crate::kernels::block_sums(&kqs, &mut ksums);
        let spec_k = (kqs, kd, ksums, vec![]);
        for k in Kernels::all_supported() {
            let mut mem = vec![0u8; 2 * ActBufs::bytes_needed(n, cols, cols)];
            let mut arena = Arena::new(&mut mem);
            let mut whole = ActBufs::new(&mut arena, n, cols, cols).unwrap();
            let mut chunked = ActBufs::new(&mut arena, n, cols, cols).unwrap();
            let a = quantize(&k, &x, cols, &mut whole);
            let spec_blocks = quants(a.q.as_ref().unwrap());
            for (form, expected) in [(Form::Blocks, &spec_blocks), (Form::Q8K, &spec_k)] {
                let mut xs = x.clone();
                let views = QuantViews::new(&mut chunked, n, cols, form);
                let out = OutRows::new(&mut xs, cols, cols, n);
                // Chunks of 256 and 512 values, in any order.
                for (c0, c1) in [(3 * QK_K, 4 * QK_K), (0, QK_K), (QK_K, 3 * QK_K)] {
                    // SAFETY: the chunks are disjoint, and one at a time.
                    unsafe { views.chunk(&k, c0, &mut out.rows(c0, c1)) };
                }
                assert!(views.whole(), "{} {form:?}", k.name());
                let got = Act::made(&x, cols, &mut chunked, form);
                // The form made, and only it.
                let (made, other) = match form {
                    Form::Blocks => (&got.q, &got.k),
                    Form::Q8K => (&got.k, &got.q),
                };
                assert!(other.is_none(), "{} {form:?}", k.name());
                let made = quants(made.as_ref().unwrap());
                assert!(&made == expected, "{} {form:?}", k.name());
            }
        }
    }

    #[test]
    fn a_chunk_of_partial_blocks_is_reported() {
        let (n, cols) = (2, 2 * QK_K);
        let k = Kernels::best();
        let mut x = rows(n, cols);
        let mut mem = vec![0u8; ActBufs::bytes_needed(n, cols, cols)];
        let mut arena = Arena::new(&mut mem);
        let mut bufs = ActBufs::new(&mut arena, n, cols, cols).unwrap();
        let out = OutRows::new(&mut x, cols, cols, n);
        // Whole blocks of 32 but not of 256, in Q8_K form.
        let views = QuantViews::new(&mut bufs, n, cols, Form::Q8K);
        // SAFETY: one chunk at a time.
        unsafe { views.chunk(&k, 0, &mut out.rows(0, 64)) };
        assert!(!views.whole());
        // In blocks of 32 they are whole; 48 values are not.
        let views = QuantViews::new(&mut bufs, n, cols, Form::Blocks);
        // SAFETY: as above.
        unsafe { views.chunk(&k, 0, &mut out.rows(0, 64)) };
        assert!(views.whole());
        // SAFETY: as above.
        unsafe { views.chunk(&k, 64, &mut out.rows(64, 112)) };
        assert!(!views.whole());
    }
}
