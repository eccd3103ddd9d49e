//! Driving GEMM tiles over a whole product, shared by every SIMD set.
//!
//! A tile multiplies R weight rows by T tokens in registers. Decoding (one token) runs tall tiles
//! down the rows, streaming the weights once. Prefill (many tokens) runs wide tiles over a chunk
//! of rows small enough to stay in L1 while every group of tokens passes over it, so weights are
//! read from memory once per product rather than once per token group; two or three tokens
//! left over (a few sequences decoded together) take tiles of two tokens.

use super::{OutRows, QActs};
use crate::weights::QK;

/// Rows of a decode tile.
pub const ROWS_DECODE: usize = 4;
/// Rows of a prefill tile.
pub const ROWS_PREFILL: usize = 2;
/// Tokens of a prefill tile.
pub const TOKENS: usize = 4;
/// Rows of a tile of two tokens (two or three sequences decoded together, a prompt's last
/// tokens).
pub const ROWS_PAIR: usize = 4;
/// Weight bytes a prefill row chunk may span (a part of L1).
const CHUNK_BYTES: usize = 16 * 1024;

/// A tile: R rows from `w` (rows `nb` blocks apart) × T tokens of planar activations starting
/// at `qs`/`d`/`s`; writes `out[r][t]`.
pub type Tile<W, const R: usize, const T: usize> = unsafe fn(
    w: *const W,
    qs: *const i8,
    d: *const f32,
    s: *const f32,
    nb: usize,
    out: &mut [[f32; T]; R],
);

/// The tiles of one weight type for one instruction set.
pub struct Tiles<W> {
    /// R = ROWS_DECODE, T = 1.
    pub decode: Tile<W, ROWS_DECODE, 1>,
    /// R = ROWS_PREFILL, T = TOKENS.
    pub prefill: Tile<W, ROWS_PREFILL, TOKENS>,
    /// R = ROWS_PAIR, T = 2.
    pub pair: Tile<W, ROWS_PAIR, 2>,
    /// R = 1, T = 1 (remainders).
    pub single: Tile<W, 1, 1>,
}

/// Runs tiles over every row and token: `out(t, r) = w[r] · a[t]`.
///
/// # Safety
/// The tiles must be runnable on this CPU (their features checked by the caller's table).
pub unsafe fn drive<W>(tiles: &Tiles<W>, w: &[W], a: &QActs<'_>, out: &mut OutRows<'_>) {
    let nb = a.nb;
    if nb == 0 {
        return;
    }
    let rows = (w.len() / nb).min(out.n_rows());
    let toks = a.tokens().min(out.n_toks());
    if rows == 0 || toks == 0 {
        return;
    }
    // Everything the tiles read is inside these slices.
    assert!(a.qs.len() >= toks * nb * QK && a.d.len() >= toks * nb && a.s.len() >= toks * nb);
    assert!(w.len() >= rows * nb);
    let (wp, qp, dp, sp) = (w.as_ptr(), a.qs.as_ptr(), a.d.as_ptr(), a.s.as_ptr());
    // SAFETY (all pointer arithmetic below): rows < `rows` and tokens < `toks`, checked above.
    let tok = |t: usize| unsafe { (qp.add(t * nb * QK), dp.add(t * nb), sp.add(t * nb)) };
    let row = |r: usize| unsafe { wp.add(r * nb) };

    if toks == 1 {
        let (q, d, s) = tok(0);
        let mut r = 0;
        while r + ROWS_DECODE <= rows {
            let mut o = [[0.0f32; 1]; ROWS_DECODE];
            (tiles.decode)(row(r), q, d, s, nb, &mut o);
            for (i, v) in o.iter().enumerate() {
                out.set(0, r + i, v[0]);
            }
            r += ROWS_DECODE;
        }
        for r in r..rows {
            let mut o = [[0.0f32; 1]; 1];
            (tiles.single)(row(r), q, d, s, nb, &mut o);
            out.set(0, r, o[0][0]);
        }
        return;
    }

    let row_bytes = nb * core::mem::size_of::<W>();
    // A multiple of both tiles' rows (4 and 2).
    let chunk = (CHUNK_BYTES / row_bytes.max(1)).max(ROWS_PAIR) / ROWS_PAIR * ROWS_PAIR;
    let mut c0 = 0;
    while c0 < rows {
        let c1 = (c0 + chunk).min(rows);
        let mut t = 0;
        while t + TOKENS <= toks {
            let (q, d, s) = tok(t);
            let mut r = c0;
            while r + ROWS_PREFILL <= c1 {
                let mut o = [[0.0f32; TOKENS]; ROWS_PREFILL];
                (tiles.prefill)(row(r), q, d, s, nb, &mut o);
                for (i, v) in o.iter().enumerate() {
                    for (j, &x) in v.iter().enumerate() {
                        out.set(t + j, r + i, x);
                    }
                }
                r += ROWS_PREFILL;
            }
            for r in r..c1 {
                for j in 0..TOKENS {
                    single(tiles, row(r), tok(t + j), nb, out, t + j, r);
                }
            }
            t += TOKENS;
        }
        // Tokens left over (fewer than a prefill tile, e.g. a few sequences decoded together):
        // pairs of tokens down the chunk, then a last one with decode tiles.
        while t + 2 <= toks {
            let (q, d, s) = tok(t);
            let mut r = c0;
            while r + ROWS_PAIR <= c1 {
                let mut o = [[0.0f32; 2]; ROWS_PAIR];
                (tiles.pair)(row(r), q, d, s, nb, &mut o);
                for (i, v) in o.iter().enumerate() {
                    out.set(t, r + i, v[0]);
                    out.set(t + 1, r + i, v[1]);
                }
                r += ROWS_PAIR;
            }
            for r in r..c1 {
                for j in 0..2 {
                    single(tiles, row(r), tok(t + j), nb, out, t + j, r);
                }
            }
            t += 2;
        }
        for t in t..toks {
            let (q, d, s) = tok(t);
            let mut r = c0;
            while r + ROWS_DECODE <= c1 {
                let mut o = [[0.0f32; 1]; ROWS_DECODE];
                (tiles.decode)(row(r), q, d, s, nb, &mut o);
                for (i, v) in o.iter().enumerate() {
                    out.set(t, r + i, v[0]);
                }
                r += ROWS_DECODE;
            }
            for r in r..c1 {
                single(tiles, row(r), (q, d, s), nb, out, t, r);
            }
        }
        c0 = c1;
    }
}

#[inline(always)]
unsafe fn single<W>(
    tiles: &Tiles<W>,
    w: *const W,
    (q, d, s): (*const i8, *const f32, *const f32),
    nb: usize,
    out: &mut OutRows<'_>,
    t: usize,
    r: usize,
) {
    let mut o = [[0.0f32; 1]; 1];
    (tiles.single)(w, q, d, s, nb, &mut o);
    out.set(t, r, o[0][0]);
}
