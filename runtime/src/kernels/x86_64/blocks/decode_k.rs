//! Batches of the K formats Q4_K, Q5_K and Q6_K with AVX-512 VNNI: sixteen rows a pass, as
//! [`super::decode`] takes the one-scale formats, in tiles of 4, 8 or 16 tokens (fewer for a
//! batch's last tokens).
//!
//! A block's quants are read 32 bytes a row (a pair of groups of 32), sixteen rows at a time,
//! and transposed once per tile of tokens ([`chunk`]; the layout of
//! [`Transposed`](super::decode::Transposed): dword lane `4i + m` holds four quants of row
//! `4m + i`); the groups come apart after the transposition (byte operations commute with
//! it: Q4_K's nibbles, Q5_K's fifth bits and Q6_K's top two or-ed in). A token's exact integer
//! sums of a group's two halves are then eight `vpdpbusd` against its activations' dwords
//! broadcast, with no fold. The rows' integer scales come in the same lane order from the
//! block's head, transposed once per block ([`KStrip::head`]), and multiply the halves' sums
//! (`vpmulld`), so `Σ sc·q·x` is exact per row; Q4_K's and Q5_K's minimums' term `Σ m·x`
//! comes from the activations' sums of 32 (`QActs::sums`) in four `vpdpwssd` a block. Q6_K's
//! quants are signed (−32..31): there the activations go in as the unsigned operand (`x +
//! 128`, one xor a block) and each half's chain starts at `−128·Σq` of its quants (made once a
//! group for the tile's tokens), which leaves `Σ q·x`. Each lane then takes the spec's float
//! steps for its row ([`crate::weights::quants::block_step_k`]): `acc = fma(d·dx, isum, acc)`
//! and, where `dm ≠ 0`, `mins = fma(dm·dx, imin, mins)`, block after block; the result is the
//! spec's bit for bit.
//!
//! Against the four-row loop of `blocks.rs` (per group, four rows and a token: 256-bit
//! `maddubs` and `vpdpwssd` for each, a horizontal fold per block; past eight tokens each
//! block unpacked into memory first) a token takes eight 512-bit products and a scale multiply
//! per group of sixteen rows, and larger tiles share each unpacked group among more tokens (the
//! tile's sums stay in registers; its float chains, touched once a block, may spill). Measured
//! (2026-12-06, `examples/gemm_speed`, 576 × 1536 from memory, alternating rounds, µs, the
//! loop → this kernel in tiles of four → with tiles of 8 and 16): Q4_K 8 tokens 117–128 →
//! 81–98 → 68–74, 64 859–861 → 576–608 → 420–451, 512 7128–7304 → 4868–5215 → 3717–3838; Q5_K 8
//! tokens 125–129 → 114–122 → 89–100, 64 890–941 → 830–884 → 502–538, 512 7323–7400 →
//! 6925–7313 → 4228–4428; Q6_K 8 tokens 165–176 → 165–171 → 169, 64 1169–1181 → 1045–1077 →
//! 594–744, 512 8997–9286 → 8526–8986 → 4912–5479. Fewer tokens ([`KStrip::MIN_TOKENS`]) keep
//! the loop, as fast or faster there (one token: the transposition is not shared; Q6_K at 2 and
//! 4 tokens 64–68 and 83–84 µs against 94–96 and 99–105).

use super::decode::{lane_rows, lanes4, t4, tails_heads, Rows4, ROWS, TILE};
use crate::kernels::{OutRows, QActs};
use crate::weights::quants::QK_K;
use core::arch::x86_64::*;

/// Groups of 32 in a block of 256.
const GROUPS: usize = 8;
/// How far past the next strip the prefetch window runs, in bytes.
const LEAD: usize = 1024;

/// A K format's sixteen-row reading: where its block's scales and quants are.
pub(super) trait KStrip {
    /// Bytes of a block of 256.
    const BYTES: usize;
    /// The fewest tokens that take this kernel (fewer take the four-row loop of `blocks.rs`).
    const MIN_TOKENS: usize;
    /// Whether the format has minimums: their term comes from the activations' sums of 32.
    const MINS: bool;
    /// Whether the quants are signed (Q6_K): the activations then go in as the unsigned
    /// operand (`x + 128`), and each half's chain starts at `−128·Σq` of its quants.
    const SIGNED: bool;
    /// Block `bi` of the strip's sixteen rows (each `row_bytes`): what its groups need
    /// ([`Head`]), in the folded lane order. This default reads Q4_K's and Q5_K's head (f16
    /// `d`, `dmin`, then 12 bytes of 6-bit scales and minimums).
    ///
    /// # Safety
    /// AVX-512 F/BW must be enabled; the strip holds 16 rows of at least `bi + 1` blocks.
    #[inline(always)]
    unsafe fn head(strip: &[u8], row_bytes: usize, bi: usize) -> Head {
        // SAFETY: the caller's.
        unsafe { head_k4(strip, row_bytes, bi, Self::BYTES) }
    }
    /// The integer scales of group `j`'s two halves (i32 lanes, the folded order). This
    /// default gives Q4_K's and Q5_K's one 6-bit scale a group, for both halves.
    ///
    /// # Safety
    /// AVX-512 F must be enabled.
    #[inline(always)]
    unsafe fn scales(h: &Head, j: usize) -> (__m512i, __m512i) {
        // SAFETY: the caller's features.
        let s = unsafe { scale_min_k4::<false>(&h.words, j) };
        (s, s)
    }
    /// Groups `2p` and `2p + 1` of block `bi` of the strip's sixteen rows, transposed: for
    /// each, dword c of every row's low half (elements 4c..4c + 4) in register c, of its high
    /// half (elements 16 + 4c..) in register 4 + c, row `4m + i` in lane `4i + m`; unsigned
    /// bytes, or signed with [`KStrip::SIGNED`]. (Byte operations commute with the dword
    /// transposition, so a format transposes its raw bytes once ([`chunk`]) and unpacks both
    /// groups from them.)
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
    const MIN_TOKENS: usize = 4;
    const MINS: bool = true;
    const SIGNED: bool = false;
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

/// Bit `j` of each byte of `h` moved to bit `to` (`width` bits from `j`), or-ed into `q` (16-bit
/// shifts: the mask drops what crosses from the neighbouring byte).
///
/// # Safety
/// AVX-512 F/BW must be enabled.
#[inline(always)]
unsafe fn or_bits(q: &[__m512i; 8], h: &[__m512i; 8], j: u32, width: u32, to: u32) -> [__m512i; 8] {
    let (left, right) = (
        _mm_cvtsi32_si128(to.saturating_sub(j) as i32),
        _mm_cvtsi32_si128(j.saturating_sub(to) as i32),
    );
    let mask = _mm512_set1_epi8((((1u32 << width) - 1) << to) as i8);
    // (Loops, not closures: closures would not take the enclosing target features.)
    let mut out = *q;
    for (o, &h) in out.iter_mut().zip(h) {
        let moved = _mm512_srl_epi16(_mm512_sll_epi16(h, left), right);
        // o | (moved & mask)
        *o = _mm512_ternarylogic_epi32::<0xf8>(*o, moved, mask);
    }
    out
}

pub(super) struct Q5K;
impl KStrip for Q5K {
    const BYTES: usize = 176;
    const MIN_TOKENS: usize = 8;
    const MINS: bool = true;
    const SIGNED: bool = false;
    #[inline(always)]
    unsafe fn pair(strip: &[u8], row_bytes: usize, bi: usize, p: usize) -> [[__m512i; 8]; 2] {
        // Groups 2p and 2p + 1: Q4_K's nibbles (at 48 + 32p), with bit 2p (2p + 1) of the
        // element's byte of qh (bytes 16..48) as bit 4.
        let b = bi * Self::BYTES;
        let j = 2 * p as u32;
        // SAFETY (all): the caller's features; the bytes are inside each row's block.
        unsafe {
            let raw = chunk(strip, row_bytes, b + 48 + 32 * p);
            let qh = chunk(strip, row_bytes, b + 16);
            [
                or_bits(&nibbles(&raw, false), &qh, j, 1, 4),
                or_bits(&nibbles(&raw, true), &qh, j + 1, 1, 4),
            ]
        }
    }
}

/// `v` less 32 in each byte (Q6_K's centring).
///
/// # Safety
/// AVX-512 BW must be enabled.
#[inline(always)]
unsafe fn less32(v: [__m512i; 8]) -> [__m512i; 8] {
    let mut out = v;
    for o in &mut out {
        *o = _mm512_sub_epi8(*o, _mm512_set1_epi8(32));
    }
    out
}

pub(super) struct Q6K;
impl KStrip for Q6K {
    const BYTES: usize = 210;
    const MIN_TOKENS: usize = 8;
    const MINS: bool = false;
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn head(strip: &[u8], row_bytes: usize, bi: usize) -> Head {
        let b = bi * Self::BYTES;
        // SAFETY (all): the caller's features and block: the scales are bytes 192..208, `d`
        // bytes 208..210 (read as the high half of the dword at 206).
        unsafe {
            let words = rows16(strip, row_bytes, b + 192);
            let lane_row = lane_rows();
            let at = _mm512_mullo_epi32(lane_row, _mm512_set1_epi32(row_bytes as i32));
            let dw = _mm512_i32gather_epi32::<1>(at, strip[b + 206..].as_ptr().cast());
            let d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(dw)));
            let zero = _mm512_setzero_si512();
            Head {
                d,
                dm: _mm512_setzero_ps(),
                words,
                mins: [zero; 4],
            }
        }
    }
    #[inline(always)]
    unsafe fn scales(h: &Head, j: usize) -> (__m512i, __m512i) {
        // Scales 2j and 2j + 1 (signed bytes): bytes 2·(j % 2) and 2·(j % 2) + 1 of word j / 2.
        let w = h.words[j / 2];
        let (lo, hi) = if j.is_multiple_of(2) {
            (_mm512_slli_epi32::<24>(w), _mm512_slli_epi32::<16>(w))
        } else {
            (_mm512_slli_epi32::<8>(w), w)
        };
        (_mm512_srai_epi32::<24>(lo), _mm512_srai_epi32::<24>(hi))
    }
    #[inline(always)]
    unsafe fn pair(strip: &[u8], row_bytes: usize, bi: usize, p: usize) -> [[__m512i; 8]; 2] {
        // Group j = 4n + k: the low 4 bits from ql[64n + 32·(k % 2) + l] (nibble k / 2), the
        // high two from bits 2k..2k + 2 of qh[32n + l]; less 32. Groups 2p and 2p + 1 share
        // n = p / 2 and the nibble, k = 2·(p % 2) and k + 1.
        let b = bi * Self::BYTES;
        let (n, high) = (p / 2, p % 2 == 1);
        let k = 2 * (p % 2) as u32;
        // SAFETY (all): the caller's features; the bytes are inside each row's block.
        unsafe {
            let qh = chunk(strip, row_bytes, b + 128 + 32 * n);
            let q0 = nibbles(&chunk(strip, row_bytes, b + 64 * n), high);
            let q1 = nibbles(&chunk(strip, row_bytes, b + 64 * n + 32), high);
            [
                less32(or_bits(&q0, &qh, 2 * k, 2, 4)),
                less32(or_bits(&q1, &qh, 2 * k + 2, 2, 4)),
            ]
        }
    }
}

/// The product of rows `0..ROWS·n` of the K format `F` (rows of `row_bytes` bytes, `nb` blocks
/// each) with the `toks` tokens of `a` (Q8_K, with their sums of 32): the spec's result into
/// `out`, strip after strip of 16 rows, each in tiles of 16, 8 or [`TILE`] tokens (fewer for a
/// batch's last tokens). Returns the rows done (whole passes of [`ROWS`]); the caller does the
/// rest.
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
    // The first pass and the lead at once (the window then runs ahead of the reads).
    super::prefetch_start(w, ROWS * row_bytes + LEAD);
    for r0 in (0..full).step_by(ROWS) {
        let mut t0 = 0;
        while t0 < toks {
            let at = (nb, row_bytes, r0, t0);
            // SAFETY (each): the caller's features; the extents are checked above.
            let n = unsafe {
                match toks - t0 {
                    1 => tile::<F, 1>(w, a, out, at),
                    2 => tile::<F, 2>(w, a, out, at),
                    3 => tile::<F, 3>(w, a, out, at),
                    4..8 => tile::<F, TILE>(w, a, out, at),
                    8..16 => tile::<F, 8>(w, a, out, at),
                    _ => tile::<F, 16>(w, a, out, at),
                }
            };
            t0 += n;
        }
    }
    full
}

/// Tokens `t0..t0 + N` times the strip of rows `r0..r0 + 16` (see the module); returns N.
///
/// # Safety
/// As [`gemm`], which checked the extents.
#[inline(always)]
unsafe fn tile<F: KStrip, const N: usize>(
    w: &[u8],
    a: &QActs<'_>,
    out: &mut OutRows<'_>,
    (nb, row_bytes, r0, t0): (usize, usize, usize, usize),
) -> usize {
    let lane_row = lane_rows();
    let strip = &w[r0 * row_bytes..(r0 + ROWS) * row_bytes];
    let slen = ROWS * row_bytes;
    let step = slen.div_ceil(nb).next_multiple_of(64);
    let window = w.as_ptr().wrapping_add((r0 + ROWS) * row_bytes + LEAD);
    let (lines, far) = (step / 64, slen > super::NEAR);
    let zero = _mm512_setzero_ps();
    let (mut acc, mut mins) = ([zero; N], [zero; N]);
    // Each token's block 0 (t0 + t < toks: `gemm` checked qs, d and sums for toks·nb blocks).
    let first: [usize; N] = core::array::from_fn(|t| (t0 + t) * nb);
    // Signed quants (Q6_K): the tokens' quants of the block as unsigned bytes.
    let mut xu = [[0u8; QK_K]; N];
    for bi in 0..nb {
        if t0 == 0 {
            // SAFETY: the caller's features (a prefetch never faults).
            unsafe { super::prefetch_window(window.wrapping_add(step * bi), lines, far) };
        }
        // SAFETY: the caller's features; block bi is in every row of the strip.
        let h = unsafe { F::head(strip, row_bytes, bi) };
        let xs: [*const i8; N] = if F::SIGNED {
            // The tokens' quants of the block as unsigned bytes (x + 128).
            for (t, u) in xu.iter_mut().enumerate() {
                let x = &a.qs[(first[t] + bi) * QK_K..][..QK_K];
                for (u, x) in u.chunks_exact_mut(64).zip(x.chunks_exact(64)) {
                    // SAFETY: 64 bytes each (the chunks).
                    unsafe {
                        let v = _mm512_loadu_si512(x.as_ptr().cast());
                        let v = _mm512_xor_si512(v, _mm512_set1_epi8(i8::MIN));
                        _mm512_storeu_si512(u.as_mut_ptr().cast(), v);
                    }
                }
            }
            core::array::from_fn(|t| xu[t].as_ptr().cast())
        } else {
            // SAFETY: block first[t] + bi of qs is in bounds (see `first`).
            core::array::from_fn(|t| unsafe { a.qs.as_ptr().add((first[t] + bi) * QK_K) })
        };
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
            let (sc0, sc1) = unsafe { F::scales(&h, j) };
            // Signed quants: each half's chain starts at −128·Σq, which the unsigned
            // activations' +128 adds back (|Σq| ≤ 16·32, so the products stay far from the
            // i32 range).
            let z = _mm512_setzero_si512();
            let (init0, init1) = if F::SIGNED {
                let ones = _mm512_set1_epi8(1);
                let (mut q0, mut q1) = (z, z);
                for c in 0..4 {
                    q0 = _mm512_dpbusd_epi32(q0, ones, lo[c]);
                    q1 = _mm512_dpbusd_epi32(q1, ones, hi[c]);
                }
                (
                    _mm512_slli_epi32::<7>(_mm512_sub_epi32(z, q0)),
                    _mm512_slli_epi32::<7>(_mm512_sub_epi32(z, q1)),
                )
            } else {
                (z, z)
            };
            for t in 0..N {
                // SAFETY: dwords 8j..8j + 8 of the token's 256 quants (see `xs`).
                let x = unsafe { xs[t].add(32 * j).cast::<i32>() };
                let (mut s0, mut s1) = (init0, init1);
                for c in 0..4 {
                    // SAFETY: dwords c and 4 + c of the group's 32 quants.
                    let (xl, xh) = unsafe {
                        (
                            _mm512_set1_epi32(x.add(c).read_unaligned()),
                            _mm512_set1_epi32(x.add(4 + c).read_unaligned()),
                        )
                    };
                    if F::SIGNED {
                        s0 = _mm512_dpbusd_epi32(s0, xl, lo[c]);
                        s1 = _mm512_dpbusd_epi32(s1, xh, hi[c]);
                    } else {
                        s0 = _mm512_dpbusd_epi32(s0, lo[c], xl);
                        s1 = _mm512_dpbusd_epi32(s1, hi[c], xh);
                    }
                }
                // A half's sum is at most 16·63·127 in size, a block's scaled sums fit i32.
                let scaled = if F::SIGNED {
                    _mm512_add_epi32(_mm512_mullo_epi32(s0, sc0), _mm512_mullo_epi32(s1, sc1))
                } else {
                    _mm512_mullo_epi32(_mm512_add_epi32(s0, s1), sc0)
                };
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
    N
}
