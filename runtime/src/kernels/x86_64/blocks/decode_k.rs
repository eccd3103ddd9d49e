//! Small batches (2 to [`MAX_TOKENS`] tokens) of Q4_K with AVX-512 VNNI: sixteen rows a pass,
//! as [`super::decode`] takes the one-scale formats.
//!
//! A block's quants are read 32 bytes a row (two groups of 32: low and high nibbles), sixteen
//! rows at a time, and transposed once ([`chunk`]; the layout of
//! [`Transposed`](super::decode::Transposed): dword lane `4i + m` holds four quants of row
//! `4m + i`); the nibbles come apart after the transposition (byte operations commute with
//! it), so each pair of groups is transposed once for every token of the tile. A token's exact
//! integer sums of a group are then eight `vpdpbusd` against its activations' dwords
//! broadcast, with no fold. The rows' 6-bit scales come in the same lane order from the
//! block's head, transposed once per block ([`KStrip::head`]), and multiply the group's sums
//! (`vpmulld`), so `Σ sc·q·x` is exact per row; the minimums' term `Σ m·x` comes from the
//! activations' sums of 32 (`QActs::sums`) in four `vpdpwssd` a block. Each lane then takes the
//! spec's float steps for its row ([`crate::weights::quants::block_step_k`]): `acc =
//! fma(d·dx, isum, acc)` and, where `dm ≠ 0`, `mins = fma(dm·dx, imin, mins)`, block after
//! block; the result is the spec's bit for bit.
//!
//! Against the four-row loop of `blocks.rs` (per group, four rows and a token: 256-bit
//! `maddubs` and `vpdpwssd` for each, and a horizontal fold per block) a token takes eight
//! 512-bit products and a scale multiply per group of sixteen rows. Measured (2026-12-06,
//! `examples/gemm_speed`, 576 × 1536 from memory, two alternating rounds): 2 tokens 38–40 µs
//! against 42–49, 4 tokens 45–49 against 59–62, 8 tokens 85–104 against 117–120; one token is
//! slower this way (31–36 against 29–31: the transposition is not shared), so decode keeps the
//! four-row loop. Q5_K and Q6_K read through this kernel (their fifth and sixth bits or-ed in
//! after the transposition, Q6_K's signed quants against activations offset by 128) measured
//! no faster (4 tokens Q5_K 67–70 µs against 67–72, Q6_K 103–107 against 84–88), so they keep
//! the four-row loop too.

use super::decode::{lanes4, t4, tails_heads, Rows4, ROWS, TILE};
use crate::kernels::{OutRows, QActs};
use crate::weights::quants::QK_K;
use core::arch::x86_64::*;

/// Batches up to this size take this path.
pub(super) const MAX_TOKENS: usize = 8;
/// Groups of 32 in a block of 256.
const GROUPS: usize = 8;
/// How far past the next strip the prefetch window runs, in bytes.
const LEAD: usize = 1024;

/// A K format's sixteen-row reading: where its block's scales and quants are.
pub(super) trait KStrip {
    /// Bytes of a block of 256.
    const BYTES: usize;
    /// Whether the format has minimums: their term comes from the activations' sums of 32.
    const MINS: bool;
    /// Block `bi` of the strip's sixteen rows (each `row_bytes`): what its groups need
    /// ([`Head`]), in the folded lane order.
    ///
    /// # Safety
    /// AVX-512 F/BW must be enabled; the strip holds 16 rows of at least `bi + 1` blocks.
    unsafe fn head(strip: &[u8], row_bytes: usize, bi: usize) -> Head;
    /// The integer scale of group `j` (i32 lanes, the folded order).
    ///
    /// # Safety
    /// AVX-512 F must be enabled.
    unsafe fn scale(h: &Head, j: usize) -> __m512i;
    /// Groups `2p` and `2p + 1` of block `bi` of the strip's sixteen rows, transposed: for
    /// each, dword c of every row's low half (elements 4c..4c + 4) in register c, of its high
    /// half (elements 16 + 4c..) in register 4 + c, row `4m + i` in lane `4i + m`; unsigned
    /// bytes. (Byte operations commute with the dword transposition, so a format transposes
    /// its raw bytes once ([`chunk`]) and unpacks both groups from them.)
    ///
    /// # Safety
    /// AVX-512 F/BW must be enabled; the strip holds 16 rows of at least `bi + 1` blocks.
    unsafe fn pair(strip: &[u8], row_bytes: usize, bi: usize, p: usize) -> [[__m512i; 8]; 2];
}

/// A block's head for sixteen rows, in the folded lane order: the float scales, the words its
/// integer scales come from, and (with minimums) their pairs for `vpdpwssd`.
pub(super) struct Head {
    d: __m512,
    dm: __m512,
    words: [__m512i; 4],
    /// Minimums of groups `2k` (low i16) and `2k + 1` (high i16).
    mins: [__m512i; 4],
}

/// The 16 bytes at `off` of each block's rows, transposed ([`t4`]).
///
/// # Safety
/// AVX-512 F must be enabled; `off + 16 <= row_bytes` and the strip holds 16 rows.
#[inline(always)]
unsafe fn rows16(strip: &[u8], row_bytes: usize, off: usize) -> [__m512i; 4] {
    // SAFETY (each): the caller's features and offset.
    unsafe {
        t4([
            lanes4(Rows4::new(strip, 0, row_bytes), off),
            lanes4(Rows4::new(strip, 4, row_bytes), off),
            lanes4(Rows4::new(strip, 8, row_bytes), off),
            lanes4(Rows4::new(strip, 12, row_bytes), off),
        ])
    }
}

/// The 32 bytes at `off` of each of the strip's sixteen rows, transposed: dword c of bytes
/// 0..16 in register c, of bytes 16..32 in register 4 + c, row `4m + i` in lane `4i + m`
/// ([`tails_heads`]' reads, two rows a 512-bit register, then the [`t4`] transpositions).
///
/// # Safety
/// AVX-512 F must be enabled; `off + 32 <= row_bytes` and the strip holds 16 rows.
#[inline(always)]
unsafe fn chunk(strip: &[u8], row_bytes: usize, off: usize) -> [__m512i; 8] {
    // SAFETY (all): the caller's features and offset.
    unsafe {
        let (lo, hi) = tails_heads(strip, row_bytes, off);
        let (lo, hi) = (t4(lo), t4(hi));
        [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1], hi[2], hi[3]]
    }
}

/// Bits `at..at + n` of each dword (n < 32 - at, as constants once inlined).
///
/// # Safety
/// AVX-512 F must be enabled.
#[inline(always)]
unsafe fn bits(v: __m512i, at: u32, n: u32) -> __m512i {
    let shifted = _mm512_srlv_epi32(v, _mm512_set1_epi32(at as i32));
    _mm512_and_si512(shifted, _mm512_set1_epi32((1 << n) - 1))
}

/// The 6-bit scale (`MIN = false`) or minimum of group `j` of Q4_K / Q5_K from the transposed
/// scale words (`w[1..4]`: bytes 0..12 of the scales), ggml's `get_scale_min_k4`.
///
/// # Safety
/// AVX-512 F must be enabled.
#[inline(always)]
unsafe fn scale_min_k4<const MIN: bool>(w: &[__m512i; 4], j: usize) -> __m512i {
    let (lo, hi) = if MIN { (w[2], 4) } else { (w[1], 0) };
    let j8 = 8 * (j % 4) as u32;
    if j < 4 {
        // SAFETY: the caller's features.
        unsafe { bits(lo, j8, 6) }
    } else {
        // SAFETY: the caller's features.
        unsafe {
            _mm512_or_si512(
                bits(w[3], j8 + hi, 4),
                _mm512_slli_epi32::<4>(bits(lo, j8 + 6, 2)),
            )
        }
    }
}

/// The head of a Q4_K / Q5_K block: f16 `d`, `dmin`, then the 12 bytes of 6-bit scales and
/// minimums.
///
/// # Safety
/// AVX-512 F/BW must be enabled; the strip holds 16 rows of block `bi` (`bytes` each).
#[inline(always)]
unsafe fn head_k4(strip: &[u8], row_bytes: usize, bi: usize, bytes: usize) -> Head {
    // SAFETY (all): the caller's features and block.
    unsafe {
        let words = rows16(strip, row_bytes, bi * bytes);
        let d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(words[0]));
        let dm = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(words[0])));
        // (No closures: they would not take the enclosing target features.)
        macro_rules! pair {
            ($k:expr) => {
                _mm512_or_si512(
                    scale_min_k4::<true>(&words, 2 * $k),
                    _mm512_slli_epi32::<16>(scale_min_k4::<true>(&words, 2 * $k + 1)),
                )
            };
        }
        Head {
            d,
            dm,
            words,
            mins: [pair!(0), pair!(1), pair!(2), pair!(3)],
        }
    }
}

/// Low or high nibbles of each byte of `v`.
///
/// # Safety
/// AVX-512 F/BW must be enabled.
#[inline(always)]
unsafe fn nibbles(v: &[__m512i; 8], high: bool) -> [__m512i; 8] {
    let m = _mm512_set1_epi8(0x0f);
    let shift = _mm_cvtsi32_si128(4 * high as i32);
    // (Loops, not closures: closures would not take the enclosing target features.)
    let mut out = *v;
    for o in &mut out {
        *o = _mm512_and_si512(_mm512_srl_epi16(*o, shift), m);
    }
    out
}

pub(super) struct Q4K;
impl KStrip for Q4K {
    const BYTES: usize = 144;
    const MINS: bool = true;
    #[inline(always)]
    unsafe fn head(strip: &[u8], row_bytes: usize, bi: usize) -> Head {
        // SAFETY: the caller's.
        unsafe { head_k4(strip, row_bytes, bi, Self::BYTES) }
    }
    #[inline(always)]
    unsafe fn scale(h: &Head, j: usize) -> __m512i {
        // SAFETY: the caller's features.
        unsafe { scale_min_k4::<false>(&h.words, j) }
    }
    #[inline(always)]
    unsafe fn pair(strip: &[u8], row_bytes: usize, bi: usize, p: usize) -> [[__m512i; 8]; 2] {
        // Groups 2p and 2p + 1: the low and high nibbles of the 32 bytes at 16 + 32p.
        // SAFETY (all): the caller's features; the bytes are inside each row's block.
        unsafe {
            let raw = chunk(strip, row_bytes, bi * Self::BYTES + 16 + 32 * p);
            [nibbles(&raw, false), nibbles(&raw, true)]
        }
    }
}

/// The product of rows `0..ROWS·n` of the K format `F` (rows of `row_bytes` bytes, `nb` blocks
/// each) with the `toks` tokens of `a` (Q8_K, with their sums of 32): the spec's result into
/// `out`, strip after strip of 16 rows, tiles of up to [`TILE`] tokens each. Returns the rows
/// done (whole passes of [`ROWS`]); the caller does the rest.
///
/// # Safety
/// AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI must be enabled (this is inlined into a function
/// that enables them).
#[inline(always)]
pub(super) unsafe fn gemm<F: KStrip>(
    w: &[u8],
    row_bytes: usize,
    a: &QActs<'_>,
    out: &mut OutRows<'_>,
    (nb, rows, toks): (usize, usize, usize),
) -> usize {
    let blocks = toks * nb;
    assert!(a.qs.len() >= blocks * QK_K && a.d.len() >= blocks);
    assert!(a.sums.len() >= blocks * GROUPS && out.n_toks() >= toks);
    assert!(row_bytes >= nb * F::BYTES && ROWS * row_bytes <= i32::MAX as usize);
    let full = rows / ROWS * ROWS;
    for line in w[..(ROWS * row_bytes + LEAD).min(w.len())].chunks(64) {
        // A prefetch of an address inside the weights (it never faults).
        _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast());
    }
    for r0 in (0..full).step_by(ROWS) {
        let mut t0 = 0;
        while t0 < toks {
            let at = (nb, row_bytes, r0, t0);
            // SAFETY (each): the caller's features; the extents are checked above.
            unsafe {
                match toks - t0 {
                    1 => tile::<F, 1>(w, a, out, at),
                    2 => tile::<F, 2>(w, a, out, at),
                    3 => tile::<F, 3>(w, a, out, at),
                    _ => tile::<F, TILE>(w, a, out, at),
                }
            }
            t0 += TILE;
        }
    }
    full
}

/// Tokens `t0..t0 + N` times the strip of rows `r0..r0 + 16` (see the module).
///
/// # Safety
/// As [`gemm`], which checked the extents.
#[inline(always)]
unsafe fn tile<F: KStrip, const N: usize>(
    w: &[u8],
    a: &QActs<'_>,
    out: &mut OutRows<'_>,
    (nb, row_bytes, r0, t0): (usize, usize, usize, usize),
) {
    let lane_row = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    let strip = &w[r0 * row_bytes..(r0 + ROWS) * row_bytes];
    let slen = ROWS * row_bytes;
    let step = slen.div_ceil(nb).next_multiple_of(64);
    let window = w.as_ptr().wrapping_add((r0 + ROWS) * row_bytes + LEAD);
    let (lines, far) = (step / 64, slen > super::NEAR);
    let zero = _mm512_setzero_ps();
    let (mut acc, mut mins) = ([zero; N], [zero; N]);
    // Each token's block 0 (t0 + t < toks: `gemm` checked qs, d and sums for toks·nb blocks).
    let first: [usize; N] = core::array::from_fn(|t| (t0 + t) * nb);
    for bi in 0..nb {
        if t0 == 0 {
            // SAFETY: the caller's features (a prefetch never faults).
            unsafe { super::prefetch_window(window.wrapping_add(step * bi), lines, far) };
        }
        // SAFETY: the caller's features; block bi is in every row of the strip.
        let h = unsafe { F::head(strip, row_bytes, bi) };
        // SAFETY: block first[t] + bi of qs is in bounds (see `first`).
        let xs: [*const i8; N] =
            core::array::from_fn(|t| unsafe { a.qs.as_ptr().add((first[t] + bi) * QK_K) });
        let mut isum = [_mm512_setzero_si512(); N];
        let mut pair = [[_mm512_setzero_si512(); 8]; 2];
        for j in 0..GROUPS {
            if j % 2 == 0 {
                // SAFETY: the caller's features; block bi is in every row of the strip.
                pair = unsafe { F::pair(strip, row_bytes, bi, j / 2) };
            }
            let quants = &pair[j % 2];
            let (lo, hi) = (&quants[..4], &quants[4..]);
            // SAFETY: the caller's features.
            let sc = unsafe { F::scale(&h, j) };
            for t in 0..N {
                // SAFETY: dwords 8j..8j + 8 of the token's 256 quants (see `xs`).
                let x = unsafe { xs[t].add(32 * j).cast::<i32>() };
                let (mut s0, mut s1) = (_mm512_setzero_si512(), _mm512_setzero_si512());
                for c in 0..4 {
                    // SAFETY: dwords c and 4 + c of the group's 32 quants.
                    let (xl, xh) = unsafe {
                        (
                            _mm512_set1_epi32(x.add(c).read_unaligned()),
                            _mm512_set1_epi32(x.add(4 + c).read_unaligned()),
                        )
                    };
                    s0 = _mm512_dpbusd_epi32(s0, lo[c], xl);
                    s1 = _mm512_dpbusd_epi32(s1, hi[c], xh);
                }
                // Each half's sum is at most 16·15·127 in size, the group's 32 of them fit
                // i32, and times the 6-bit scale too.
                let scaled = _mm512_mullo_epi32(_mm512_add_epi32(s0, s1), sc);
                isum[t] = _mm512_add_epi32(isum[t], scaled);
            }
        }
        for t in 0..N {
            let b = first[t] + bi;
            // SAFETY: block b's scale and sums are in bounds (see `first`).
            let dx = _mm512_set1_ps(unsafe { *a.d.get_unchecked(b) });
            acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(h.d, dx), _mm512_cvtepi32_ps(isum[t]), acc[t]);
            if F::MINS {
                // Σ m·x: the eight sums of 32 as i16 pairs (|s| ≤ 32·127) against the
                // minimums' pairs.
                let mut imin = _mm512_setzero_si512();
                for k in 0..GROUPS / 2 {
                    // SAFETY: sums 8b + 2k and 8b + 2k + 1 are in bounds (see `first`).
                    let (s0, s1) = unsafe {
                        (
                            *a.sums.get_unchecked(GROUPS * b + 2 * k),
                            *a.sums.get_unchecked(GROUPS * b + 2 * k + 1),
                        )
                    };
                    let pair = (s0 & 0xffff) | (s1 << 16);
                    imin = _mm512_dpwssd_epi32(imin, h.mins[k], _mm512_set1_epi32(pair));
                }
                let live = _mm512_cmpneq_ps_mask(h.dm, zero);
                let dm = _mm512_mul_ps(h.dm, dx);
                mins[t] = _mm512_mask3_fmadd_ps(dm, _mm512_cvtepi32_ps(imin), mins[t], live);
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
