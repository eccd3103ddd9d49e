//! Decode and small batches (up to [`MAX_TOKENS`] tokens) of the formats of one scale per block
//! of 32 with AVX-512 VNNI (Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL; Q8_0 for batches of two or more,
//! see [`Unpack::DECODE16`]): sixteen rows a pass, four rows to a register.
//!
//! A row's group is read as two halves of 16 quants (elements 0..16 and 16..32, which is how
//! the 4-bit formats store them: low and high nibbles of the same 16 bytes), as unsigned bytes
//! `q + OFFSET` ([`Unpack::quad`]); four rows fill the four 128-bit lanes of a register. Two
//! `vpdpbusd` against a token's halves, each broadcast to every lane, leave four partial sums
//! per row. Four such registers (16 rows) fold into one in two rounds of in-lane unpacks and
//! adds, lane `4i + m` holding row `4m + i` — the order the rows' scales are put in, and
//! undone once per strip when the results are stored. The scales come without a gather: each
//! row's group is read as 32 bytes from its last 16 (the quants of the 4- and 5-bit formats),
//! which brings the next group's head along ([`tails_heads`]): its scale words, and the 5-bit
//! formats' fifth bits, which become byte masks by a shuffle and a bit test (`fifth4`). Only a
//! strip's first group gathers its scale words. `OFFSET·Σx` then comes back out of each
//! sum (`QActs::sums`), so every sum is exact and each lane takes the spec's float steps for its
//! row ([`crate::weights::quants::group_step`]): `acc = fma(d·dx, Σq·x, acc)` and, for Q4_1 /
//! Q5_1, `mins = fma(dm, sx, mins)` where `dm ≠ 0`, group after group. So the result is the
//! spec's bit for bit, as in every set. A batch goes through a strip in tiles of up to
//! [`TILE`] tokens, each group unpacked once per tile; there the group is also transposed once
//! ([`Transposed`]), so each token's sums need no fold ([`Sums`]).
//!
//! Against the four-row kernel of `blocks.rs` (eight 32-byte products reduced by `vphaddd` per
//! group), this takes a quarter of the horizontal work per row; against the strips (which
//! transpose 16 rows into L1 first) it packs nothing, which small batches cannot pay back. It
//! reads sixteen rows side by side, more streams than the hardware prefetcher follows, so it
//! prefetches: the first strip at once, then a window a strip and [`LEAD`] bytes ahead, a share
//! of it per group. Measured (2026-12-04): 1536 × 576 from memory (`examples/gemm_speed`), Q4_0
//! 31 µs against 43, Q4_1 36–38 against 43, IQ4_NL 30–35 against 43, Q5_0 / Q5_1 46–49 against
//! 51–53; SmolLM2 Q4_0 decode at one thread 128–132 tokens/s against 103–115. Loading the
//! scales with the tails instead of gathering them (2026-12-05): Q4_0 in cache 22 µs against
//! 25, from memory 27–30 against 28–34, Q4_1 29–30 against 34–37, IQ4_NL 29 against 31–32
//! (Q5_0 / Q5_1 level); SmolLM2 Q4_0 decode at one thread 163–168 tokens/s against 149–153.
//! The fifth bits by shuffle and test instead of four scalar loads and shifts per four rows:
//! in cache Q5_0 31–32 µs against 36–38, Q5_1 31 against 44–46; SmolLM2 decode at one thread
//! Q4_K_M (mostly Q5_0) 129–131 tokens/s against 102–104, Q5_K_M (Q5_1) 123 against 107–108.
//! Four sequences decoded together (`examples/decode_together`, 1 thread) Q4_1 248 tokens/s
//! against 177 with the strips, Q8_0 two sequences 154 against 90 (equal at eight). The
//! tokens' blocks read without bounds checks, the prefetch window unclamped, and a strip of
//! more than [`super::NEAR`] bytes prefetched into the L2 (2026-12-06, `ember bench`, one
//! thread, three alternating runs): SmolLM2 Q4_0 decode 126–151 tokens/s → 171–211, Q4_K_M
//! 126–138 → 148–163.

use super::Unpack;
use crate::kernels::{OutRows, QActs};
use crate::weights::{BlockType, QK};
use core::arch::x86_64::*;

/// Rows of a pass: the sixteen lanes of a 512-bit register.
pub(super) const ROWS: usize = 16;
/// How far past the next strip the prefetch window runs, in bytes.
const LEAD: usize = 1024;

/// Four consecutive rows of a matrix, each `len` bytes (rows are contiguous): `rows` holds
/// all `4·len` of them.
#[derive(Clone, Copy)]
pub(super) struct Rows4<'a> {
    pub len: usize,
    rows: &'a [u8],
}

impl<'a> Rows4<'a> {
    /// Rows `first..first + 4` of `w` (rows of `len` bytes; checked).
    #[inline(always)]
    pub fn new(w: &'a [u8], first: usize, len: usize) -> Rows4<'a> {
        Rows4 {
            len,
            rows: &w[first * len..(first + 4) * len],
        }
    }

    /// The first row's first byte (the others follow, `len` apart).
    #[inline(always)]
    pub fn ptr(self) -> *const u8 {
        self.rows.as_ptr()
    }

    /// Row `i` (0..4).
    #[inline(always)]
    pub fn row(self, i: usize) -> &'a [u8] {
        &self.rows[i * self.len..(i + 1) * self.len]
    }
}

/// The 16 bytes at `off` of each of the four rows, row i in 128-bit lane i.
///
/// # Safety
/// AVX-512 F must be enabled (this is inlined into [`gemm`]); `off + 16 <= rows.len`.
#[inline(always)]
pub(super) unsafe fn lanes4(rows: Rows4, off: usize) -> __m512i {
    debug_assert!(off + 16 <= rows.len);
    // (No closures here or below: they would not take the enclosing target features.)
    macro_rules! at {
        ($i:expr) => {
            // SAFETY: 16 bytes inside row $i (the caller's `off`; `Rows4` holds four rows).
            unsafe { _mm_loadu_si128(rows.ptr().add($i * rows.len + off).cast()) }
        };
    }
    let v = _mm512_castsi128_si512(at!(0));
    let v = _mm512_inserti32x4::<1>(v, at!(1));
    let v = _mm512_inserti32x4::<2>(v, at!(2));
    _mm512_inserti32x4::<3>(v, at!(3))
}

/// The dword transposition of four registers of four rows each (row `4m + i` of register m in
/// 128-bit lane i) into dword c of every row, row `4m + i` in lane `4i + m`.
///
/// # Safety
/// AVX-512 F must be enabled.
#[inline(always)]
pub(super) unsafe fn t4(q: [__m512i; 4]) -> [__m512i; 4] {
    let (u0, u1) = (
        _mm512_unpacklo_epi32(q[0], q[1]),
        _mm512_unpackhi_epi32(q[0], q[1]),
    );
    let (u2, u3) = (
        _mm512_unpacklo_epi32(q[2], q[3]),
        _mm512_unpackhi_epi32(q[2], q[3]),
    );
    [
        _mm512_unpacklo_epi64(u0, u2),
        _mm512_unpackhi_epi64(u0, u2),
        _mm512_unpacklo_epi64(u1, u3),
        _mm512_unpackhi_epi64(u1, u3),
    ]
}

/// The rows of the lanes after [`t4`] and a fold: lane `4i + m` holds row `4m + i` (the map is
/// its own inverse, so it also permutes folded sums back to row order).
///
/// # Safety
/// AVX-512 F must be enabled.
#[inline(always)]
pub(super) unsafe fn lane_rows() -> __m512i {
    _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15)
}

/// Tokens of a tile: their chains stay in registers through a strip's groups.
pub(super) const TILE: usize = 4;
/// Batches up to this size take this path (larger ones the strips, whose packing then pays).
pub(super) const MAX_TOKENS: usize = 8;

/// The product of rows `0..ROWS·n` of the one-scale format `F` (rows of `row_bytes` bytes, `nb`
/// groups each) with the `toks` tokens of `a`: the spec's result into `out`, strip after strip
/// of 16 rows, tiles of up to [`TILE`] tokens each (a strip's groups are read from memory for
/// the first tile, from cache for the others). Returns the rows done (whole passes of
/// [`ROWS`]); the caller does the rest.
///
/// # Safety
/// AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI must be enabled (this is inlined into a function
/// that enables them).
#[inline(always)]
pub(super) unsafe fn gemm<F: Unpack>(
    kind: &BlockType,
    w: &[u8],
    row_bytes: usize,
    a: &QActs<'_>,
    out: &mut OutRows<'_>,
    (nb, rows, toks): (usize, usize, usize),
) -> usize {
    const {
        assert!(
            !(F::ONE_SCALE && F::MINS && !F::SUMS),
            "one-scale minimums come from s"
        )
    };
    const {
        assert!(
            !F::HEADS || F::NEXT_HEADS,
            "a group's heads come with the tails of the group before"
        )
    };
    assert!(F::GPB == 1 && F::ONE_SCALE);
    // Everything read below: the tokens' nb blocks each (block_extent checked qs, d and s).
    let blocks = toks * nb;
    assert!(a.sums.len() >= blocks && a.qs.len() >= blocks * QK);
    assert!(a.d.len() >= blocks && a.s.len() >= blocks && out.n_toks() >= toks);
    // Bytes of a group (one block of 32: these formats' blocks), whose first two bytes are its
    // f16 scale (and, with a minimum, the next two its minimum's).
    let gb = kind.ty.type_size();
    assert!(gb >= 16 && row_bytes >= nb * gb);
    let full = rows / ROWS * ROWS;
    assert!(ROWS * row_bytes <= i32::MAX as usize);
    // The first pass and the lead at once (the window then runs ahead of the reads).
    super::prefetch_start(w, ROWS * row_bytes + LEAD);
    let at = Extent { nb, gb, row_bytes };
    for r0 in (0..full).step_by(ROWS) {
        let mut t0 = 0;
        while t0 < toks {
            // SAFETY (each): the caller's features; the extents are checked above.
            unsafe {
                match toks - t0 {
                    1 => tile::<F, Fold, 1>(kind, w, a, out, &at, r0, t0),
                    2 => tile::<F, Transposed, 2>(kind, w, a, out, &at, r0, t0),
                    3 => tile::<F, Transposed, 3>(kind, w, a, out, &at, r0, t0),
                    _ => tile::<F, Transposed, TILE>(kind, w, a, out, &at, r0, t0),
                }
            }
            t0 += TILE;
        }
    }
    full
}

/// A matrix's shape in bytes: `nb` groups of `gb` bytes a row, rows of `row_bytes`.
struct Extent {
    nb: usize,
    gb: usize,
    row_bytes: usize,
}

/// The tails of group `g` of a strip's sixteen rows (the last 16 bytes of each row's block,
/// row `4k + i` in lane i of register k) and the heads of group `g + 1` (the 16 bytes that
/// follow each tail: the next block's scale words, and fifth bits where it has them), in the
/// same order: one 32-byte load a row, two rows a register, two 128-bit shuffles per four rows.
///
/// # Safety
/// AVX-512 F must be enabled (this is inlined into [`gemm`]); `strip` holds 16 rows of
/// `row_bytes` and `off + 32 <= row_bytes` (group `g + 1` exists and starts at `off + 16`).
#[inline(always)]
pub(super) unsafe fn tails_heads(
    strip: &[u8],
    row_bytes: usize,
    off: usize,
) -> ([__m512i; 4], [__m512i; 4]) {
    debug_assert!(off + 32 <= row_bytes && strip.len() >= ROWS * row_bytes);
    macro_rules! pair {
        ($r:expr) => {{
            // SAFETY: 32 bytes inside rows $r and $r + 1 of the strip (the caller's `off`).
            let (a, b) = unsafe {
                let p = strip.as_ptr().add($r * row_bytes + off);
                (
                    _mm256_loadu_si256(p.cast()),
                    _mm256_loadu_si256(p.add(row_bytes).cast()),
                )
            };
            _mm512_inserti64x4::<1>(_mm512_castsi256_si512(a), b)
        }};
    }
    let mut tails = [_mm512_setzero_si512(); 4];
    let mut heads = [_mm512_setzero_si512(); 4];
    for k in 0..4 {
        // 128-bit lanes: row 4k's tail and next head, then row 4k + 1's; (4k + 2, 4k + 3).
        let (a, b) = (pair!(4 * k), pair!(4 * k + 2));
        tails[k] = _mm512_shuffle_i32x4::<0b10_00_10_00>(a, b);
        heads[k] = _mm512_shuffle_i32x4::<0b11_01_11_01>(a, b);
    }
    (tails, heads)
}

/// The rows' scale words (each head's first four bytes: f16 scale, then f16 minimum) in the
/// folded lane order: lane i of `heads[k]` is row 4k + i, whose words go to dword k of lane i.
///
/// # Safety
/// AVX-512 F must be enabled (this is inlined into [`gemm`]).
#[inline(always)]
unsafe fn scale_words(heads: &[__m512i; 4]) -> __m512i {
    let h01 = _mm512_unpacklo_epi32(heads[0], heads[1]);
    let h23 = _mm512_unpacklo_epi32(heads[2], heads[3]);
    _mm512_unpacklo_epi64(h01, h23)
}

/// Tokens `t0..t0 + N` times the strip of rows `r0..r0 + 16` (see the module).
///
/// # Safety
/// AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI must be enabled (this is inlined into [`gemm`]);
/// `w` holds the strip, `a` the tokens' blocks and `out` their rows (checked by [`gemm`]).
#[inline(always)]
unsafe fn tile<F: Unpack, S: Sums, const N: usize>(
    kind: &BlockType,
    w: &[u8],
    a: &QActs<'_>,
    out: &mut OutRows<'_>,
    &Extent { nb, gb, row_bytes }: &Extent,
    r0: usize,
    t0: usize,
) {
    // The permutation of folded sums back to row order for the store.
    let lane_row = lane_rows();
    let offset = F::OFFSET as i32;
    let strip = &w[r0 * row_bytes..(r0 + ROWS) * row_bytes];
    let q = |k: usize| Rows4::new(strip, 4 * k, row_bytes);
    // The prefetch window (read as if in order): a strip and LEAD bytes ahead, `step` bytes of
    // it per group. A prefetch is a hint that never faults, so the window is not clamped to
    // the weights (past the last strip it touches at most a strip and LEAD bytes beyond them):
    // the address arithmetic stays out of the group loop.
    let slen = ROWS * row_bytes;
    let step = slen.div_ceil(nb).next_multiple_of(64);
    let window = w.as_ptr().wrapping_add((r0 + ROWS) * row_bytes + LEAD);
    let lines = step / 64;
    let far = slen > super::NEAR;
    // Each token's first block: block (t0 + t)·nb + g is below toks·nb, which `gemm` checked
    // that qs, d, s and sums cover.
    let first: [usize; N] = core::array::from_fn(|t| (t0 + t) * nb);
    let zero = _mm512_setzero_ps();
    let (mut acc, mut mins) = ([zero; N], [zero; N]);
    // Group 0's scale words, gathered in lane order, and its heads where the format reads them
    // (each next group's come with the tails of the group before).
    let lane_off = _mm512_mullo_epi32(lane_row, _mm512_set1_epi32(row_bytes as i32));
    // SAFETY: each lane reads the 4 bytes a row's group 0 starts with (gb ≥ 16); row 15's are
    // inside the strip.
    let mut sw = unsafe { _mm512_i32gather_epi32::<1>(lane_off, strip.as_ptr().cast()) };
    let mut heads = [_mm512_setzero_si512(); 4];
    if F::HEADS {
        // SAFETY (each): the caller's features; every row holds at least one group (gb ≥ 16).
        heads = unsafe {
            [
                lanes4(q(0), 0),
                lanes4(q(1), 0),
                lanes4(q(2), 0),
                lanes4(q(3), 0),
            ]
        };
    }
    for g in 0..nb {
        if t0 == 0 {
            // SAFETY: the caller's features.
            unsafe { super::prefetch_window(window.wrapping_add(step * g), lines, far) };
        }
        // The last 16 bytes of each row's group g.
        let off = g * gb + gb - 16;
        let (tails, next) = if F::NEXT_HEADS && g + 1 < nb {
            // SAFETY: the caller's features; group g + 1 follows (`gemm` checked the strip).
            unsafe { tails_heads(strip, row_bytes, off) }
        } else {
            // SAFETY (each): the caller's features; group g is in every row.
            let t = unsafe {
                [
                    lanes4(q(0), off),
                    lanes4(q(1), off),
                    lanes4(q(2), off),
                    lanes4(q(3), off),
                ]
            };
            (t, heads)
        };
        // (No closures below: they would not take the enclosing target features.)
        macro_rules! quad {
            ($k:expr) => {
                // SAFETY: the caller's features; the rows are the strip's, and group g is in
                // every row (checked by `gemm`).
                unsafe { F::quad(kind, q($k), g, heads[$k], tails[$k]) }
            };
        }
        let quads = [quad!(0), quad!(1), quad!(2), quad!(3)];
        // SAFETY: the caller's features.
        let prep = unsafe { S::prepare(quads) };
        if !F::NEXT_HEADS && g > 0 {
            // SAFETY: each lane reads the 4 bytes a row's group g starts with; row 15's are
            // inside the strip.
            sw = unsafe { _mm512_i32gather_epi32::<1>(lane_off, strip[g * gb..].as_ptr().cast()) };
        }
        let dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(sw));
        let (dm, live) = if F::MINS {
            // The minimum is added: its chain takes −m (as `Unpack::group` gives it).
            let m = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(sw)));
            let dm = _mm512_castsi512_ps(_mm512_xor_si512(
                _mm512_castps_si512(m),
                _mm512_set1_epi32(i32::MIN),
            ));
            (dm, _mm512_cmpneq_ps_mask(dm, zero))
        } else {
            (zero, 0)
        };
        heads = next;
        if F::NEXT_HEADS && g + 1 < nb {
            // SAFETY: the caller's features.
            sw = unsafe { scale_words(&next) };
        }
        // Every token's integer sums before the float steps (the group's words then die
        // token after token), or each token's as its steps come ([`Unpack::SUMS_FIRST`]).
        let mut isums = [_mm512_setzero_si512(); N];
        if F::SUMS_FIRST {
            let mut xs = [a.qs.as_ptr(); N];
            for (x, &f) in xs.iter_mut().zip(&first) {
                // SAFETY: each token's 32 quants of this group are in bounds (see `first`).
                *x = unsafe { x.add((f + g) * QK) };
            }
            // SAFETY: the caller's features; `xs` point to the tokens' quants of this group.
            isums = unsafe { S::sums::<N>(&prep, &xs) };
        }
        for t in 0..N {
            let b = first[t] + g;
            // SAFETY: block b's scale, minimum and sum are in bounds (see `first`).
            let (dx, sx, sum) = unsafe {
                (
                    *a.d.get_unchecked(b),
                    *a.s.get_unchecked(b),
                    *a.sums.get_unchecked(b),
                )
            };
            let mut isum = if F::SUMS_FIRST {
                isums[t]
            } else {
                // SAFETY: the caller's features; block b's 32 quants are in bounds.
                unsafe { S::one(&prep, a.qs.as_ptr().add(b * QK)) }
            };
            if offset != 0 {
                isum = _mm512_sub_epi32(isum, _mm512_set1_epi32(offset * sum));
            }
            let dx = _mm512_set1_ps(dx);
            acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(dw, dx), _mm512_cvtepi32_ps(isum), acc[t]);
            if F::MINS {
                mins[t] = _mm512_mask3_fmadd_ps(dm, _mm512_set1_ps(sx), mins[t], live);
            }
        }
    }
    for t in 0..N {
        let r = _mm512_permutexvar_ps(lane_row, _mm512_sub_ps(acc[t], mins[t]));
        let o = &mut out.row_mut(t0 + t)[r0..r0 + ROWS];
        // SAFETY: 16 floats inside `o`.
        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), r) };
    }
}

/// How a tile turns a group's unpacked quads and a token's 32 activation quants into the
/// sixteen rows' integer sums (lane 4i + m: row 4m + i). Both give the same exact integers.
pub(super) trait Sums {
    /// What a group's quads become once, for every token of the tile.
    type Group: Copy;
    /// # Safety
    /// AVX-512 F/BW must be enabled (this is inlined into [`tile`]).
    unsafe fn prepare(quads: [(__m512i, __m512i); 4]) -> Self::Group;
    /// One token's sums (`x`: its 32 quants of the group).
    ///
    /// # Safety
    /// AVX-512 F/BW/VL and VNNI must be enabled (this is inlined into [`tile`]); `x` points to
    /// 32 readable quants.
    unsafe fn one(g: &Self::Group, x: *const i8) -> __m512i;
    /// The sums of each of `N` tokens (`xs[t]`: its 32 quants of the group); by default
    /// [`Sums::one`] token after token.
    ///
    /// # Safety
    /// AVX-512 F/BW/VL and VNNI must be enabled (this is inlined into [`tile`]); each of `xs`
    /// points to 32 readable quants.
    #[inline(always)]
    unsafe fn sums<const N: usize>(g: &Self::Group, xs: &[*const i8; N]) -> [__m512i; N] {
        let mut s = [_mm512_setzero_si512(); N];
        for (s, &x) in s.iter_mut().zip(xs) {
            // SAFETY: the caller's features and quants.
            *s = unsafe { Self::one(g, x) };
        }
        s
    }
}

/// One token: two products per four rows against the token's halves broadcast to every lane,
/// then the four rows' partial sums folded side by side (fewest instructions when nothing
/// shares a transposition).
pub(super) struct Fold;
impl Sums for Fold {
    type Group = [(__m512i, __m512i); 4];
    #[inline(always)]
    unsafe fn prepare(quads: [(__m512i, __m512i); 4]) -> Self::Group {
        quads
    }
    #[inline(always)]
    unsafe fn one(quads: &Self::Group, x: *const i8) -> __m512i {
        // SAFETY: 32 readable bytes (the caller's).
        let (xl, xh) = unsafe {
            (
                _mm512_broadcast_i32x4(_mm_loadu_si128(x.cast())),
                _mm512_broadcast_i32x4(_mm_loadu_si128(x.add(16).cast())),
            )
        };
        macro_rules! product {
            ($k:expr) => {
                _mm512_dpbusd_epi32(
                    _mm512_dpbusd_epi32(_mm512_setzero_si512(), quads[$k].0, xl),
                    quads[$k].1,
                    xh,
                )
            };
        }
        let p = [product!(0), product!(1), product!(2), product!(3)];
        // Fold: rows (i, 4 + i) then (i, 4 + i, 8 + i, 12 + i) in 128-bit lane i.
        let s01 = _mm512_add_epi32(
            _mm512_unpacklo_epi32(p[0], p[1]),
            _mm512_unpackhi_epi32(p[0], p[1]),
        );
        let s23 = _mm512_add_epi32(
            _mm512_unpacklo_epi32(p[2], p[3]),
            _mm512_unpackhi_epi32(p[2], p[3]),
        );
        _mm512_add_epi32(
            _mm512_unpacklo_epi64(s01, s23),
            _mm512_unpackhi_epi64(s01, s23),
        )
    }
}

/// Batches: the group transposed once, `lo[c]` holding elements 4c..4c + 4 of every row's low
/// half and `hi[c]` of its high half, row 4m + i in dword lane 4i + m (the folded order); each
/// token's sums are then eight products against its activations' dwords, with no fold.
/// Measured (2026-12-05, 1536 × 576 from memory, 4 tokens): Q4_0 46 µs against 50, Q4_1 39
/// against 48, Q5_0 47 against 58, Q5_1 51 against 58, IQ4_NL 43 against 50, Q8_0 level; one
/// token is slower this way (Q4_0 in cache 28.6 µs against 24).
pub(super) struct Transposed;
impl Sums for Transposed {
    type Group = ([__m512i; 4], [__m512i; 4]);
    #[inline(always)]
    unsafe fn prepare(q: [(__m512i, __m512i); 4]) -> Self::Group {
        // SAFETY (both): the caller's features.
        unsafe {
            (
                t4([q[0].0, q[1].0, q[2].0, q[3].0]),
                t4([q[0].1, q[1].1, q[2].1, q[3].1]),
            )
        }
    }
    #[inline(always)]
    unsafe fn one((lo, hi): &Self::Group, x: *const i8) -> __m512i {
        macro_rules! dp {
            ($s:expr, $w:expr, $c:expr) => {
                // SAFETY: dword $c (< 8) of the 32 readable bytes at `x` (the caller's).
                _mm512_dpbusd_epi32(
                    $s,
                    $w,
                    _mm512_set1_epi32(unsafe { x.cast::<i32>().add($c).read_unaligned() }),
                )
            };
        }
        let z = _mm512_setzero_si512();
        let s0 = dp!(dp!(dp!(dp!(z, lo[0], 0), lo[1], 1), lo[2], 2), lo[3], 3);
        let s1 = dp!(dp!(dp!(dp!(z, hi[0], 4), hi[1], 5), hi[2], 6), hi[3], 7);
        _mm512_add_epi32(s0, s1)
    }
    #[inline(always)]
    unsafe fn sums<const N: usize>((lo, hi): &Self::Group, xs: &[*const i8; N]) -> [__m512i; N] {
        // Word c of every token in turn, so each transposed word dies after its N products;
        // two chains a token (low and high half), as latency needs.
        let (mut s0, mut s1) = ([_mm512_setzero_si512(); N], [_mm512_setzero_si512(); N]);
        for c in 0..4 {
            for t in 0..N {
                // SAFETY: dwords c and 4 + c (< 8) of the 32 readable bytes at `xs[t]` (the
                // caller's).
                let (xl, xh) = unsafe {
                    let x = xs[t].cast::<i32>();
                    (x.add(c).read_unaligned(), x.add(4 + c).read_unaligned())
                };
                s0[t] = _mm512_dpbusd_epi32(s0[t], lo[c], _mm512_set1_epi32(xl));
                s1[t] = _mm512_dpbusd_epi32(s1[t], hi[c], _mm512_set1_epi32(xh));
            }
        }
        let mut s = s0;
        for (s, s1) in s.iter_mut().zip(s1) {
            *s = _mm512_add_epi32(*s, s1);
        }
        s
    }
}
