//! Decode (one token) of the formats of one scale per block of 32 with AVX-512 VNNI (Q4_0,
//! Q4_1, Q5_0, Q5_1, IQ4_NL: those with [`Unpack::DECODE16`]): sixteen rows a pass, four rows
//! to a register.
//!
//! A row's group is read as two halves of 16 quants (elements 0..16 and 16..32, which is how
//! the 4-bit formats store them: low and high nibbles of the same 16 bytes), as unsigned bytes
//! `q + OFFSET` ([`Unpack::quad`]); four rows fill the four 128-bit lanes of a register. Two
//! `vpdpbusd` against the token's halves, each broadcast to every lane, leave four partial sums
//! per row. Four such registers (16 rows) fold into one in two rounds of in-lane unpacks and
//! adds, lane `4i + m` holding row `4m + i` — the order the rows' scales are gathered in, and
//! undone once per strip when the results are stored. `OFFSET·Σx` then comes back out of each
//! sum (`QActs::sums`), so every sum is exact and each lane takes the spec's float steps for its
//! row ([`crate::weights::quants::group_step`]): `acc = fma(d·dx, Σq·x, acc)` and, for Q4_1 /
//! Q5_1, `mins = fma(dm, sx, mins)` where `dm ≠ 0`, group after group. So the result is the
//! spec's bit for bit, as in every set.
//!
//! Against the four-row kernel of `blocks.rs` (eight 32-byte products reduced by `vphaddd` per
//! group), this takes a quarter of the horizontal work per row. It reads sixteen rows side by
//! side, more streams than the hardware prefetcher follows, so it prefetches: the first strip at
//! once, then a window a strip and [`LEAD`] bytes ahead, a share of it per group. (1536 × 576
//! from memory, `examples/gemm_speed`: Q4_0 31 µs against 43, Q4_1 36–38 against 43, IQ4_NL
//! 30–35 against 43, Q5_0 / Q5_1 46–49 against 51–53; decoding SmolLM2 Q4_0 at one thread
//! 128–132 tokens/s against 103–115.)

use super::Unpack;
use crate::kernels::{OutRows, QActs};
use crate::weights::{BlockType, QK};
use core::arch::x86_64::*;

/// Rows of a pass: the sixteen lanes of a 512-bit register.
pub(super) const ROWS: usize = 16;
/// How far past the next strip the prefetch window runs, in bytes.
const LEAD: usize = 1024;

/// Four consecutive rows of a matrix, each `len` bytes, from `p` (rows are contiguous): all
/// `4·len` bytes are inside the slice it was made from.
#[derive(Clone, Copy)]
pub(super) struct Rows4<'a> {
    pub p: *const u8,
    pub len: usize,
    rows: &'a [u8],
}

impl<'a> Rows4<'a> {
    /// Rows `first..first + 4` of `w` (rows of `len` bytes; checked).
    #[inline(always)]
    pub fn new(w: &'a [u8], first: usize, len: usize) -> Rows4<'a> {
        let rows = &w[first * len..(first + 4) * len];
        Rows4 {
            p: rows.as_ptr(),
            len,
            rows,
        }
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
            unsafe { _mm_loadu_si128(rows.p.add($i * rows.len + off).cast()) }
        };
    }
    let v = _mm512_castsi128_si512(at!(0));
    let v = _mm512_inserti32x4::<1>(v, at!(1));
    let v = _mm512_inserti32x4::<2>(v, at!(2));
    _mm512_inserti32x4::<3>(v, at!(3))
}

/// The product of rows `0..ROWS·n` of the one-scale format `F` (rows of `row_bytes` bytes, `nb`
/// groups each) with the one token of `a`: the spec's result into `out` (token 0). Returns the
/// rows done (whole passes of [`ROWS`]); the caller does the rest.
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
    (nb, rows): (usize, usize),
) -> usize {
    const {
        assert!(
            !(F::ONE_SCALE && F::MINS && !F::SUMS),
            "one-scale minimums come from s"
        )
    };
    assert!(F::GPB == 1 && F::ONE_SCALE);
    // Everything read below: the token's nb blocks (block_extent checked qs, d and s).
    assert!(a.sums.len() >= nb && a.qs.len() >= nb * QK && a.d.len() >= nb && a.s.len() >= nb);
    // Bytes of a group (one block of 32: these formats' blocks), whose first two bytes are its
    // f16 scale (and, with a minimum, the next two its minimum's).
    let gb = kind.ty.type_size();
    assert!(gb >= 4 && row_bytes >= nb * gb);
    let full = rows / ROWS * ROWS;
    // Lane 4i + m of a folded sum is row 4m + i (the module): the rows' offsets in that order,
    // for the scales' gather, and the permutation back to row order for the store.
    let lane_row: [i32; ROWS] = core::array::from_fn(|l| (4 * (l % 4) + l / 4) as i32);
    assert!(ROWS * row_bytes <= i32::MAX as usize);
    // SAFETY: 64 bytes from an array of 16 i32.
    let offs = unsafe {
        _mm512_mullo_epi32(
            _mm512_loadu_si512(lane_row.as_ptr().cast()),
            _mm512_set1_epi32(row_bytes as i32),
        )
    };
    // Row order → lane: row k sits in lane 4(k % 4) + k / 4, the same map (an involution).
    // SAFETY: as above.
    let unfold = unsafe { _mm512_loadu_si512(lane_row.as_ptr().cast()) };
    let m4 = F::OFFSET as i32;
    // The first strip and the lead at once (the window below then runs ahead of the reads):
    // products of a few strips (a thread's chunk of a small matrix) would otherwise start cold,
    // sixteen rows being more streams than the hardware prefetcher follows.
    for line in w[..(ROWS * row_bytes + LEAD).min(w.len())].chunks(64) {
        // A prefetch of an address inside the weights (it never faults).
        _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast());
    }
    for r0 in (0..full).step_by(ROWS) {
        let strip = &w[r0 * row_bytes..(r0 + ROWS) * row_bytes];
        let q = |k: usize| Rows4::new(strip, 4 * k, row_bytes);
        let (mut acc, mut mins) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        for g in 0..nb {
            {
                // A window a strip and LEAD bytes ahead of where the strip is (read as if in
                // order).
                let slen = ROWS * row_bytes;
                let from = (r0 + ROWS) * row_bytes + LEAD + slen * g / nb;
                let to = ((r0 + ROWS) * row_bytes + LEAD + slen * (g + 1) / nb).min(w.len());
                if from < to {
                    for line in w[from..to].chunks(64) {
                        // A prefetch of an address inside the weights (it never faults).
                        _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast());
                    }
                }
            }
            let x = &a.qs[g * QK..g * QK + QK];
            // SAFETY: 32 bytes in bounds (the slice above).
            let (xl, xh) = unsafe {
                (
                    _mm512_broadcast_i32x4(_mm_loadu_si128(x.as_ptr().cast())),
                    _mm512_broadcast_i32x4(_mm_loadu_si128(x[16..].as_ptr().cast())),
                )
            };
            macro_rules! product {
                ($k:expr) => {{
                    // SAFETY: the caller's features; the rows are the strip's, and group g is
                    // in every row (checked above).
                    let (lo, hi) = unsafe { F::quad(kind, q($k), g) };
                    _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, xl), hi, xh)
                }};
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
            let mut isum = _mm512_add_epi32(
                _mm512_unpacklo_epi64(s01, s23),
                _mm512_unpackhi_epi64(s01, s23),
            );
            if m4 != 0 {
                isum = _mm512_sub_epi32(isum, _mm512_set1_epi32(m4 * a.sums[g]));
            }
            // The rows' scale words (f16 scale, then f16 minimum), gathered in lane order.
            let base = &strip[g * gb..];
            // SAFETY: each lane reads 4 bytes at a row's block g, which starts with them (gb ≥
            // 4); row 15's is inside `base` (the strip's last row).
            let sw = unsafe { _mm512_i32gather_epi32::<1>(offs, base.as_ptr().cast()) };
            let dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(sw));
            let dx = _mm512_set1_ps(a.d[g]);
            acc = _mm512_fmadd_ps(_mm512_mul_ps(dw, dx), _mm512_cvtepi32_ps(isum), acc);
            if F::MINS {
                // The minimum is added: its chain takes −m (as `Unpack::group` gives it).
                let m = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(sw)));
                let dm = _mm512_castsi512_ps(_mm512_xor_si512(
                    _mm512_castps_si512(m),
                    _mm512_set1_epi32(i32::MIN),
                ));
                let live = _mm512_cmpneq_ps_mask(dm, _mm512_setzero_ps());
                mins = _mm512_mask3_fmadd_ps(dm, _mm512_set1_ps(a.s[g]), mins, live);
            }
        }
        let r = _mm512_permutexvar_ps(unfold, _mm512_sub_ps(acc, mins));
        let o = &mut out.row_mut(0)[r0..r0 + ROWS];
        // SAFETY: 16 floats inside `o`.
        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), r) };
    }
    full
}
