//! Decode and small batches (up to [`MAX_TOKENS`] tokens) of the formats of one scale per block
//! of 32 (Q4_0, Q4_1, Q5_0, Q5_1, and with signed quants Q8_0 and IQ4_NL) with AVX2: `decode.rs`'s
//! passes, eight rows a pass, two rows to a register.
//!
//! A row's group is read as two halves of 16 quants (elements 0..16 and 16..32: the low and
//! high nibbles of its last 16 bytes, or Q8_0's two halves), rows 2k and 2k + 1 in the two
//! 128-bit lanes of register k ([`Unpack::pair`]). The 4- and 5-bit formats come as unsigned
//! bytes `q + OFFSET` of at most 31: two `maddubs` against the token's halves, each broadcast to
//! both lanes, add up in 16 bits (pairs below 2·31·128, two of them), and one `madd` leaves four
//! partial sums per row (the 4-bit formats, quants of at most 15, fold the four registers in 16
//! bits first and widen once); `OFFSET·Σx` then comes back out of each sum (`QActs::sums`).
//! Q8_0 and IQ4_NL come signed (quants up to ±128): each half goes in as |q| against the activations with
//! q's sign, and each product is widened at once. The four registers (8 rows) fold into one in
//! two rounds of in-lane unpacks and adds, lane `4i + j` holding row `2j + i` — the order the
//! rows' scales are put in, undone when the results are stored. The scales come without a
//! gather: each row's group is read as 32 bytes from its last 16, which brings the next group's
//! head along (its scale words, and the 5-bit formats' fifth bits). Every sum is exact and each
//! lane takes the spec's float steps for its row ([`crate::weights::quants::group_step`]): the
//! result is the spec's bit for bit.
//!
//! Against the four-row kernel (each row's 32 quants unpacked, signed, multiplied with the sign
//! trick, and four rows reduced by `vphaddd` per group), this takes about half the instructions
//! per row. Measured (2026-12-05, AMD EPYC without AVX-512, 1536 × 576 from memory,
//! `examples/gemm_speed`): Q4_0 30 µs against 59, Q4_1 34 against 64, Q5_0 44 against 77, Q5_1
//! 50 against 80, Q8_0 46 against 59, IQ4_NL 40 against 64; SmolLM2's 49152 × 576 Q8_0 output
//! head 1.44 ms against 2.47. SmolLM2 decode at one thread: Q4_0 147–148 tokens/s against
//! 99–102, then with Q8_0 here (its output head) 152–156 against 150; Q8_0 121 against 98–100.
//! The 4-bit formats' fold in 16 bits (2026-12-05, three alternating runs each, from memory):
//! Q4_0 one token 30.3–30.9 µs against 32.4–32.8, four tokens 70.5–72 against 75–77; Q4_1 four
//! tokens 73.8–75.5 against 78.7–80.7 (one token level). Tried and dropped the same day: a
//! batch tile transposing each group once, as the AVX-512 kernel does, so that tokens need no
//! fold (eight `maddubs` against broadcast dwords; Q4_0 four tokens 75–81 µs against 71, Q4_1
//! 76–79 against 74, only Q5_1 faster: 91 against 95); the minimum chains held back and run a
//! segment of groups at a time (Q4_1 four tokens 96–106 µs against 80–83); and skipping the zero
//! minimums' mask when every activation sum is finite (level).

use super::Unpack;
use crate::kernels::{OutRows, QActs};
use crate::weights::{BlockType, QK};
use core::arch::x86_64::*;

/// Rows of a pass: two rows to each of four 256-bit registers.
pub(super) const ROWS: usize = 8;
/// How far past the next pass's rows the prefetch window runs, in bytes.
const LEAD: usize = 1024;

/// The 16 bytes at `off` of rows `r` and `r + 1` of `strip` (rows of `row_bytes`), row `r` in
/// the low 128-bit lane.
///
/// # Safety
/// AVX2 must be enabled (this is inlined into [`gemm`]); `(r + 1) * row_bytes + off + 16 <=
/// strip.len()`.
#[inline(always)]
unsafe fn pair16(strip: &[u8], row_bytes: usize, r: usize, off: usize) -> __m256i {
    debug_assert!((r + 1) * row_bytes + off + 16 <= strip.len());
    // SAFETY: 16 bytes inside rows r and r + 1 (the caller's bound).
    unsafe {
        let p = strip.as_ptr().add(r * row_bytes + off);
        _mm256_loadu2_m128i(p.add(row_bytes).cast(), p.cast())
    }
}

/// The tails of group `g` of a pass's eight rows (the last 16 bytes of each row's block, rows
/// 2k and 2k + 1 in register k) and the heads of group `g + 1` (the 16 bytes that follow each
/// tail), in the same order: one 32-byte load a row, two 128-bit permutes per two rows.
///
/// # Safety
/// AVX2 must be enabled (this is inlined into [`gemm`]); `strip` holds 8 rows of `row_bytes`
/// and `off + 32 <= row_bytes`.
#[inline(always)]
unsafe fn tails_heads(strip: &[u8], row_bytes: usize, off: usize) -> ([__m256i; 4], [__m256i; 4]) {
    debug_assert!(off + 32 <= row_bytes && strip.len() >= ROWS * row_bytes);
    let mut tails = [_mm256_setzero_si256(); 4];
    let mut heads = [_mm256_setzero_si256(); 4];
    for k in 0..4 {
        // SAFETY: 32 bytes inside rows 2k and 2k + 1 (the caller's `off`).
        let (a, b) = unsafe {
            let p = strip.as_ptr().add(2 * k * row_bytes + off);
            (
                _mm256_loadu_si256(p.cast()),
                _mm256_loadu_si256(p.add(row_bytes).cast()),
            )
        };
        tails[k] = _mm256_permute2x128_si256::<0x20>(a, b);
        heads[k] = _mm256_permute2x128_si256::<0x31>(a, b);
    }
    (tails, heads)
}

/// The rows' scale words (each head's first four bytes: f16 scale, then f16 minimum) in the
/// folded order: dword j of lane i is row 2j + i.
///
/// # Safety
/// AVX2 must be enabled (this is inlined into [`gemm`]).
#[inline(always)]
unsafe fn scale_words(heads: &[__m256i; 4]) -> __m256i {
    let h01 = _mm256_unpacklo_epi32(heads[0], heads[1]);
    let h23 = _mm256_unpacklo_epi32(heads[2], heads[3]);
    _mm256_unpacklo_epi64(h01, h23)
}

/// The scales (low halves of the scale words) and the minimums (high halves) as floats, in the
/// words' order.
///
/// # Safety
/// AVX2 and F16C must be enabled (this is inlined into [`gemm`]).
#[inline(always)]
unsafe fn scales(sw: __m256i) -> (__m256, __m256) {
    // Each lane's four low halves to its bytes 0..8, its high halves to 8..16; then lane 0's
    // and lane 1's low eight bytes side by side, and their high ones.
    let sel = _mm256_setr_epi8(
        0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15, 0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7,
        10, 11, 14, 15,
    );
    let v = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_shuffle_epi8(sw, sel));
    (
        _mm256_cvtph_ps(_mm256_castsi256_si128(v)),
        _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(v)),
    )
}

/// Low and high nibbles of two rows' 16 bytes (row in lane): elements 0..16 and 16..32.
///
/// # Safety
/// AVX2 must be enabled (this is inlined into [`gemm`]).
#[inline(always)]
pub(super) unsafe fn nibbles2(v: __m256i) -> (__m256i, __m256i) {
    let m4 = _mm256_set1_epi8(0x0f);
    (
        _mm256_and_si256(v, m4),
        _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4),
    )
}

/// Adds 16 to the bytes of two rows' nibbles where their fifth bit is set: the 32 bits at byte
/// `QH` of each row's `head` (row in lane), bits 0..16 for the low register, 16..32 for the
/// high one (as `fifth4`, with a compare for the mask).
///
/// # Safety
/// AVX2 must be enabled (this is inlined into [`gemm`]).
#[inline(always)]
pub(super) unsafe fn fifth2<const QH: i8>(
    head: __m256i,
    (lo, hi): (__m256i, __m256i),
) -> (__m256i, __m256i) {
    const { assert!(QH >= 0 && QH <= 12) };
    let (b0, b1, b2, b3) = (QH, QH + 1, QH + 2, QH + 3);
    // Byte j of the low register reads qh's byte j / 8; of the high one byte 2 + j / 8.
    let sel_lo = _mm256_setr_epi8(
        b0, b0, b0, b0, b0, b0, b0, b0, b1, b1, b1, b1, b1, b1, b1, b1, b0, b0, b0, b0, b0, b0, b0,
        b0, b1, b1, b1, b1, b1, b1, b1, b1,
    );
    let sel_hi = _mm256_setr_epi8(
        b2, b2, b2, b2, b2, b2, b2, b2, b3, b3, b3, b3, b3, b3, b3, b3, b2, b2, b2, b2, b2, b2, b2,
        b2, b3, b3, b3, b3, b3, b3, b3, b3,
    );
    // ... and tests bit j % 8 of it.
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let sixteen = _mm256_set1_epi8(16);
    // (A macro: a closure would not take the enclosing target features.)
    macro_rules! add {
        ($sel:expr) => {{
            let b = _mm256_and_si256(_mm256_shuffle_epi8(head, $sel), bit);
            _mm256_and_si256(_mm256_cmpeq_epi8(b, bit), sixteen)
        }};
    }
    (
        _mm256_or_si256(lo, add!(sel_lo)),
        _mm256_or_si256(hi, add!(sel_hi)),
    )
}

/// Tokens of a tile: a group's unpacked quants serve each of them.
const TILE: usize = 4;
/// Batches up to this size take this path (larger ones the strips, whose packing then pays).
/// Measured against the strips (2026-12-05, 1536 × 576 from memory): 2 tokens Q4_0 57 µs
/// against 80, Q4_1 52 against 102, Q5_1 71 against 112; 4 tokens Q4_0 78 against 94; 6 and 8
/// tokens level. SmolLM2 Q4_1 sequences decoded together at two threads
/// (`examples/decode_together`): 2 sequences 253 tokens/s against 200, 4 363 against 288, 8 398
/// against 347.
pub(super) const MAX_TOKENS: usize = 8;

/// The product of rows `0..ROWS·n` of the format `F` with the `toks` tokens of `a` (rows of
/// `row_bytes` bytes, `nb` groups each): the spec's result into `out`, pass after pass of 8
/// rows, tiles of up to [`TILE`] tokens each (a pass's groups are read from memory for the
/// first tile, from cache for the others). Returns the rows done (whole passes); the caller
/// does the rest.
///
/// # Safety
/// AVX2, FMA and F16C must be enabled (this is inlined into a function that enables them).
#[inline(always)]
pub(super) unsafe fn gemm<F: Unpack>(
    kind: &BlockType,
    w: &[u8],
    row_bytes: usize,
    a: &QActs<'_>,
    out: &mut OutRows<'_>,
    (nb, rows, toks): (usize, usize, usize),
) -> usize {
    assert!(F::DECODE8 && F::GPB == 1 && F::ONE_SCALE);
    // Everything read below: the tokens' nb blocks each (block_extent checked qs, d and s).
    let blocks = toks * nb;
    assert!(a.sums.len() >= blocks && a.qs.len() >= blocks * QK);
    assert!(a.d.len() >= blocks && a.s.len() >= blocks && out.n_toks() >= toks);
    // Bytes of a group (one block of 32), whose first two bytes are its f16 scale (and, with a
    // minimum, the next two its minimum's).
    let gb = kind.ty.type_size();
    assert!(gb >= 16 && row_bytes >= nb * gb && (gb >= 32 || !F::BEFORE));
    let full = rows / ROWS * ROWS;
    // The first pass and the lead at once (the window then runs ahead of the reads).
    super::prefetch_start(w, ROWS * row_bytes + LEAD);
    let at = (nb, gb, row_bytes);
    // One token has a loop of its own, unpacks its group next to its products (below) and moves
    // to the next group's heads after its products: together these measured 31.8–32.4 µs
    // against 33.5 for one token through the tiles' code alone (1536 × 576 Q4_0 from memory;
    // the kernel before batches took 30.1). Each part's share was not measured apart.
    if toks == 1 {
        for r0 in (0..full).step_by(ROWS) {
            // SAFETY: the caller's features; the extents are checked above.
            unsafe { pass::<F, 1>(w, a, out, at, r0, 0) };
        }
        return full;
    }
    for r0 in (0..full).step_by(ROWS) {
        let mut t0 = 0;
        while t0 < toks {
            // SAFETY (each): the caller's features; the extents are checked above.
            unsafe {
                match toks - t0 {
                    1 => pass::<F, 1>(w, a, out, at, r0, t0),
                    2 => pass::<F, 2>(w, a, out, at, r0, t0),
                    3 => pass::<F, 3>(w, a, out, at, r0, t0),
                    _ => pass::<F, TILE>(w, a, out, at, r0, t0),
                }
            }
            t0 += TILE;
        }
    }
    full
}

/// Tokens `t0..t0 + N` times the pass of rows `r0..r0 + 8` (see the module); `nb` groups of
/// `gb` bytes a row, rows of `row_bytes`.
///
/// # Safety
/// AVX2, FMA and F16C must be enabled (this is inlined into [`gemm`]); `w` holds the pass, `a`
/// the tokens' blocks and `out` their rows (checked by [`gemm`]).
#[inline(always)]
unsafe fn pass<F: Unpack, const N: usize>(
    w: &[u8],
    a: &QActs<'_>,
    out: &mut OutRows<'_>,
    (nb, gb, row_bytes): (usize, usize, usize),
    r0: usize,
    t0: usize,
) {
    // Lane 4i + j of a folded sum is row 2j + i: the permutation back to row order.
    let lane_row = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    // Signed pairs (the wide formats) take the sign trick and need no offset.
    let wide = F::PAIR8;
    let offset = if wide { 0 } else { F::OFFSET as i32 };
    let ones = _mm256_set1_epi16(1);
    // The 4-bit formats' products fold in 16 bits, and one `madd` then widens each row's
    // sum: a 16-bit lane of the fold sums 8 of the row's `maddubs` pairs, each below
    // 2·15·127 = 3810, so at most 30480 (activations are never −128). The 5-bit formats'
    // would reach 63000: they are widened before the fold.
    let fold16 = !wide && F::QMAX <= 15;
    let zero = _mm256_setzero_ps();
    let slen = ROWS * row_bytes;
    let step = slen.div_ceil(nb).next_multiple_of(64);
    let strip = &w[r0 * row_bytes..(r0 + ROWS) * row_bytes];
    // The prefetch window (read as if in order): a pass and LEAD bytes ahead, `step` bytes of
    // it per group. A prefetch is a hint that never faults, so the window is not clamped to
    // the weights (past the last pass it touches at most a pass and LEAD bytes beyond them):
    // the address arithmetic stays out of the group loop.
    let window = w.as_ptr().wrapping_add((r0 + ROWS) * row_bytes + LEAD);
    let lines = step / 64;
    let far = slen > super::NEAR;
    // Each token's first block: block (t0 + t)·nb + g is below toks·nb, which `gemm` checked
    // that qs, d, s and sums cover.
    let first: [usize; N] = core::array::from_fn(|t| (t0 + t) * nb);
    // SAFETY (each): the caller's features; every row holds group 0 (gb ≥ 16).
    let mut heads = unsafe {
        [
            pair16(strip, row_bytes, 0, 0),
            pair16(strip, row_bytes, 2, 0),
            pair16(strip, row_bytes, 4, 0),
            pair16(strip, row_bytes, 6, 0),
        ]
    };
    // SAFETY: the caller's features.
    let mut sw = unsafe { scale_words(&heads) };
    let (mut acc, mut mins) = ([zero; N], [zero; N]);
    for g in 0..nb {
        // SAFETY: the caller's features.
        unsafe { super::prefetch_window(window.wrapping_add(step * g), lines, far) };
        // The last 16 bytes of each row's group g.
        let off = g * gb + gb - 16;
        let (tails, next) = if g + 1 < nb {
            // SAFETY: the caller's features; group g + 1 follows (checked by `gemm`).
            unsafe { tails_heads(strip, row_bytes, off) }
        } else {
            // SAFETY (each): the caller's features; group g is in every row.
            let t = unsafe {
                [
                    pair16(strip, row_bytes, 0, off),
                    pair16(strip, row_bytes, 2, off),
                    pair16(strip, row_bytes, 4, off),
                    pair16(strip, row_bytes, 6, off),
                ]
            };
            (t, heads)
        };
        // SAFETY (each): the caller's features.
        let (dw, m) = unsafe { scales(sw) };
        // A group's quants, unpacked once for the tile's tokens (one token unpacks them next
        // to its products: see `gemm`).
        let z = _mm256_setzero_si256();
        let before = if F::BEFORE {
            // SAFETY (each): the caller's features; the 16 bytes before the tail are in the
            // group (gb ≥ 32 where a format reads them).
            unsafe {
                [
                    pair16(strip, row_bytes, 0, off - 16),
                    pair16(strip, row_bytes, 2, off - 16),
                    pair16(strip, row_bytes, 4, off - 16),
                    pair16(strip, row_bytes, 6, off - 16),
                ]
            }
        } else {
            [z; 4]
        };
        let q = if N > 1 {
            // SAFETY (each): the caller's features.
            unsafe {
                [
                    F::pair(heads[0], before[0], tails[0]),
                    F::pair(heads[1], before[1], tails[1]),
                    F::pair(heads[2], before[2], tails[2]),
                    F::pair(heads[3], before[3], tails[3]),
                ]
            }
        } else {
            [(z, z); 4]
        };
        // The next group's heads and scale words, once this group's quants are read: with
        // several tokens right after the unpack above (the tokens' products below then hold
        // one register of them, not four), with one after its products.
        macro_rules! advance {
            () => {
                heads = next;
                if g + 1 < nb {
                    // SAFETY: the caller's features.
                    sw = unsafe { scale_words(&next) };
                }
            };
        }
        if N > 1 {
            advance!();
        }
        // The minimum is added: its chain takes −m; the spec skips groups whose dm is 0.
        let dm = _mm256_xor_ps(m, _mm256_set1_ps(-0.0));
        let live = _mm256_cmp_ps::<_CMP_NEQ_UQ>(dm, zero);
        for t in 0..N {
            let b = first[t] + g;
            // SAFETY: block b's 32 quants, scale and sums are in bounds (see `first`).
            let (xl, xh, dx, sx) = unsafe {
                let x = a.qs.as_ptr().add(b * QK);
                (
                    _mm256_broadcastsi128_si256(_mm_loadu_si128(x.cast())),
                    _mm256_broadcastsi128_si256(_mm_loadu_si128(x.add(16).cast())),
                    *a.d.get_unchecked(b),
                    *a.s.get_unchecked(b),
                )
            };
            // (A macro: a closure would not take the enclosing target features.)
            macro_rules! product {
                ($k:expr) => {{
                    let (lo, hi) = if N > 1 {
                        q[$k]
                    } else {
                        // SAFETY: the caller's features.
                        unsafe { F::pair(heads[$k], before[$k], tails[$k]) }
                    };
                    if wide {
                        // |q| times x with q's sign (activations are never −128); the pairs
                        // reach 2·128·127, so each product is widened at once.
                        let pl =
                            _mm256_maddubs_epi16(_mm256_abs_epi8(lo), _mm256_sign_epi8(xl, lo));
                        let ph =
                            _mm256_maddubs_epi16(_mm256_abs_epi8(hi), _mm256_sign_epi8(xh, hi));
                        _mm256_add_epi32(_mm256_madd_epi16(pl, ones), _mm256_madd_epi16(ph, ones))
                    } else {
                        let s16 = _mm256_add_epi16(
                            _mm256_maddubs_epi16(lo, xl),
                            _mm256_maddubs_epi16(hi, xh),
                        );
                        if fold16 {
                            s16
                        } else {
                            _mm256_madd_epi16(s16, ones)
                        }
                    }
                }};
            }
            let p = [product!(0), product!(1), product!(2), product!(3)];
            if N == 1 {
                advance!();
            }
            // Fold: rows (i, 2 + i) then (i, 2 + i, 4 + i, 6 + i) in lane i, adding dwords
            // as i32 or, with `fold16`, as pairs of i16 that one `madd` then widens.
            macro_rules! fold {
                ($add:ident) => {{
                    let s01 = $add(
                        _mm256_unpacklo_epi32(p[0], p[1]),
                        _mm256_unpackhi_epi32(p[0], p[1]),
                    );
                    let s23 = $add(
                        _mm256_unpacklo_epi32(p[2], p[3]),
                        _mm256_unpackhi_epi32(p[2], p[3]),
                    );
                    $add(
                        _mm256_unpacklo_epi64(s01, s23),
                        _mm256_unpackhi_epi64(s01, s23),
                    )
                }};
            }
            let mut isum = if fold16 {
                _mm256_madd_epi16(fold!(_mm256_add_epi16), ones)
            } else {
                fold!(_mm256_add_epi32)
            };
            if offset != 0 {
                // SAFETY: block b's sum is in bounds (see `first`).
                let sum = unsafe { *a.sums.get_unchecked(b) };
                isum = _mm256_sub_epi32(isum, _mm256_set1_epi32(offset * sum));
            }
            let dx = _mm256_set1_ps(dx);
            acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(dw, dx), _mm256_cvtepi32_ps(isum), acc[t]);
            if F::MINS {
                let next = _mm256_fmadd_ps(dm, _mm256_set1_ps(sx), mins[t]);
                mins[t] = _mm256_blendv_ps(mins[t], next, live);
            }
        }
    }
    for t in 0..N {
        let r = _mm256_permutevar8x32_ps(_mm256_sub_ps(acc[t], mins[t]), lane_row);
        let o = &mut out.row_mut(t0 + t)[r0..r0 + ROWS];
        // SAFETY: 8 floats inside `o`.
        unsafe { _mm256_storeu_ps(o.as_mut_ptr(), r) };
    }
}
