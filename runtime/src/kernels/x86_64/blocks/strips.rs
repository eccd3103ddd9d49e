//! Prefill of the formats of one scale per block of 32 (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL)
//! with AVX-512 VNNI: strips of 16 rows, packed once so that each i32 lane of a 512-bit register
//! is one row.
//!
//! A strip's groups are unpacked into a buffer that stays in L1 (`Packed`): for group g, eight
//! registers, register k holding bytes 4k..4k+4 of the 16 rows' quants, as unsigned bytes (the
//! quants + 128 for signed formats), and the rows' float scales as lanes. A token's block of 32
//! activation quants then meets the 16 rows in eight `vpdpbusd`, each with four of the token's
//! bytes broadcast: lane i sums row i's whole block, with no horizontal reduction. The offset
//! comes back out as 128·Σx, from the activation block's integer sum (`QActs::sums`). The sums
//! are exact, and each lane then takes the spec's float steps for its row
//! ([`crate::weights::quants::group_step`]): `acc = fma(d·dx, Σq·x, acc)` and, for Q4_1 / Q5_1,
//! `mins = fma(dm, sx, mins)` where `dm ≠ 0`, group after group. So every (row, token) is the
//! spec's result bit for bit, as with every other set.
//!
//! The packing (a transpose of 4-byte columns, done once per strip and chunk of groups) is paid
//! back over the tokens: this path is taken for batches of [`MIN_TOKENS`] or more (smaller ones,
//! down to one token, take `decode.rs`, which packs nothing). The packing prefetches the next
//! strip's rows as it goes.

use super::{Unpack, G};
use crate::kernels::{row_group, OutRows, QActs};
use crate::weights::{BlockType, QK};
use core::arch::x86_64::*;

/// Rows of a strip: the sixteen i32 lanes of a 512-bit register.
const ROWS: usize = 16;
/// Groups packed at a time (640 bytes each: 30 KiB).
const KC: usize = 48;
/// Tokens of a tile (their chains stay in registers across a chunk's groups).
const T: usize = 8;
/// Tokens whose float chains a pass keeps, at most (Q4_1 / Q5_1 keep the minimum chain here;
/// the scale chain goes to `out` between chunks of groups, exactly).
pub(super) const TS: usize = 128;
/// Batches from this size take the strips.
pub(super) const MIN_TOKENS: usize = super::decode::MAX_TOKENS + 1;

/// A strip's groups, unpacked.
#[repr(C, align(64))]
struct Packed {
    /// `w[g][k][i]`: bytes 4k..4k+4 of row i's quants in group g, unsigned.
    w: [[[u32; ROWS]; 8]; KC],
    /// The rows' scales.
    d: [[f32; ROWS]; KC],
    /// The rows' minimum scales (zero for formats without one).
    dm: [[f32; ROWS]; KC],
}

/// Group `g` of each of a strip's rows `q`, as the format's [`Unpack::group`] gives it; every
/// second group also prefetches the same place in the rows of the next strip (`next`, the
/// weights from there on: rows are contiguous, small batches are bound by memory, and the rows
/// read side by side are more streams than the hardware prefetcher follows).
///
/// # Safety
/// AVX2, FMA and F16C must be enabled (this is inlined into a strip's packing); group `g` is in
/// every row.
#[inline(always)]
pub(super) unsafe fn groups<F: Unpack, const R: usize>(
    kind: &BlockType,
    q: &[&[u8]; R],
    next: &[u8],
    g: usize,
) -> [G; R] {
    // Bytes of a group (one block of 32: these formats' blocks).
    let gb = kind.ty.type_size();
    // SAFETY: the caller's features.
    let mut out = [unsafe { G::zero() }; R];
    for (i, (row, o)) in q.iter().zip(out.iter_mut()).enumerate() {
        if g.is_multiple_of(2) {
            let at = i * row.len() + g * gb;
            if at < next.len() {
                // A prefetch of an address inside the weights (it never faults).
                _mm_prefetch::<_MM_HINT_T0>(next[at..].as_ptr().cast());
            }
        }
        // SAFETY: the caller's features; group g is in the row.
        *o = unsafe { F::group(kind, row, &F::head(row, g / F::GPB), g) };
    }
    out
}

/// Words k = 0..8 of four rows' groups `u4` (32 bytes each) into `w[k][at..at + 4]`: the
/// transpose of 4-byte words, by unpacking pairs of words, then pairs of pairs, which leaves
/// words k and k + 4 of the four rows in the two halves of one register.
///
/// # Safety
/// AVX2 must be enabled (this is inlined into the packing of a strip).
#[inline(always)]
pub(super) unsafe fn transpose4<const R: usize>(u4: &[__m256i], w: &mut [[u32; R]; 8], at: usize) {
    let lo01 = _mm256_unpacklo_epi32(u4[0], u4[1]);
    let hi01 = _mm256_unpackhi_epi32(u4[0], u4[1]);
    let lo23 = _mm256_unpacklo_epi32(u4[2], u4[3]);
    let hi23 = _mm256_unpackhi_epi32(u4[2], u4[3]);
    let cols = [
        _mm256_unpacklo_epi64(lo01, lo23), // words 0 | 4
        _mm256_unpackhi_epi64(lo01, lo23), // words 1 | 5
        _mm256_unpacklo_epi64(hi01, hi23), // words 2 | 6
        _mm256_unpackhi_epi64(hi01, hi23), // words 3 | 7
    ];
    for (k, c) in cols.into_iter().enumerate() {
        let a = &mut w[k][at..at + 4];
        // SAFETY: 16 bytes into the slice above.
        unsafe { _mm_storeu_si128(a.as_mut_ptr().cast(), _mm256_castsi256_si128(c)) };
        let b = &mut w[k + 4][at..at + 4];
        // SAFETY: as above.
        unsafe { _mm_storeu_si128(b.as_mut_ptr().cast(), _mm256_extracti128_si256::<1>(c)) };
    }
}

/// The chains of `N` tokens (activation blocks `first[t]..` of the tile's tokens) over the
/// packed groups `0..gn` (activation block `g0 + gi`).
///
/// # Safety
/// AVX-512 F/BW/VL and VNNI must be enabled (this is inlined into [`gemm`]); `a` holds every
/// block read (checked by the caller).
#[inline(always)]
unsafe fn tile<F: Unpack, const N: usize>(
    p: &Packed,
    gn: usize,
    a: &QActs<'_>,
    first: [usize; N],
    acc: &mut [__m512; N],
    mins: &mut [__m512; N],
) {
    let (qs, d, s, sums) = (a.qs.as_ptr(), a.d.as_ptr(), a.s.as_ptr(), a.sums.as_ptr());
    for gi in 0..gn {
        // SAFETY: aligned loads inside `p` (64-byte aligned, rows of 64 bytes).
        let w: [__m512i; 8] =
            core::array::from_fn(|k| unsafe { _mm512_load_si512(p.w[gi][k].as_ptr().cast()) });
        // SAFETY: as above.
        let dw = unsafe { _mm512_load_ps(p.d[gi].as_ptr()) };
        let (dm, live) = if F::MINS {
            // SAFETY: as above.
            let dm = unsafe { _mm512_load_ps(p.dm[gi].as_ptr()) };
            (dm, _mm512_cmpneq_ps_mask(dm, _mm512_setzero_ps()))
        } else {
            (_mm512_setzero_ps(), 0)
        };
        for t in 0..N {
            let b = first[t] + gi;
            // SAFETY (reads below): block b of the activations is inside `a` (the caller's
            // check); 32 quants, read as eight unaligned 4-byte words.
            let x = unsafe { qs.add(b * QK) } as *const i32;
            // (A macro: a closure would not take the enclosing target features.)
            macro_rules! xw {
                ($k:expr) => {
                    _mm512_set1_epi32(unsafe { x.add($k).read_unaligned() })
                };
            }
            // Two chains of four, so that consecutive products do not wait on each other.
            let mut p0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[0], xw!(0));
            let mut p1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[4], xw!(4));
            for k in 1..4 {
                p0 = _mm512_dpbusd_epi32(p0, w[k], xw!(k));
                p1 = _mm512_dpbusd_epi32(p1, w[k + 4], xw!(k + 4));
            }
            let mut isum = _mm512_add_epi32(p0, p1);
            if !F::UNSIGNED {
                // Σ(q + 128)·x − 128·Σx.
                let sx = unsafe { *sums.add(b) };
                isum = _mm512_sub_epi32(isum, _mm512_slli_epi32::<7>(_mm512_set1_epi32(sx)));
            }
            let dx = unsafe { *d.add(b) };
            let sc = _mm512_mul_ps(dw, _mm512_set1_ps(dx));
            acc[t] = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(isum), acc[t]);
            if F::MINS {
                let sx = _mm512_set1_ps(unsafe { *s.add(b) });
                mins[t] = _mm512_mask3_fmadd_ps(dm, sx, mins[t], live);
            }
        }
    }
}

/// The product of rows of the one-scale format `F` with every token of `a` (see the module).
/// `nb`, `rows`, `toks` as [`crate::kernels::block_extent`] checked them.
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
    extent: (usize, usize, usize),
) {
    // SAFETY: the caller's features.
    unsafe { drive::<F, Vnni, ROWS, T>(kind, w, row_bytes, a, out, extent) }
}

/// One instruction set's strips of `R` rows (a lane each): how a chunk of a strip's groups is
/// packed, and how `N` tokens pass through it; [`drive`] runs them over a matrix.
pub(super) trait Strips<const R: usize> {
    /// Groups packed at a time.
    const KC: usize;
    /// A chunk of a strip's groups, unpacked.
    type Packed;
    /// An empty chunk.
    fn packed() -> Self::Packed;
    /// Unpacks groups `g0..g0 + gn` of the strip's rows `q` into `p` (`next`: the weights from
    /// the next strip on, to prefetch).
    ///
    /// # Safety
    /// The set's features must be enabled; the groups are in the rows.
    unsafe fn pack<F: Unpack>(
        kind: &BlockType,
        q: &[&[u8]; R],
        next: &[u8],
        g0: usize,
        gn: usize,
        p: &mut Self::Packed,
    );
    /// Tokens `ts + j..ts + j + N` through the packed chunk: their chains read (the scale chain
    /// from `out`, zeros at the first chunk; the minimum chain from `mbuf`), carried through the
    /// chunk's groups, and written back.
    ///
    /// # Safety
    /// The set's features must be enabled; `a` holds every block read (checked by [`drive`]).
    unsafe fn run<F: Unpack, const N: usize>(
        p: &Self::Packed,
        a: &QActs<'_>,
        out: &mut OutRows<'_>,
        mbuf: &mut [[f32; R]; TS],
        at: &Strip,
        j: usize,
    );
}

/// The strips of `S` over a matrix: strip after strip of `R` rows, chunk after chunk of `S::KC`
/// groups packed once, tokens through each chunk in tiles of `T`, `TS` tokens' chains at a time;
/// then acc − mins, the spec's result.
///
/// # Safety
/// The features of `S` must be enabled (this is inlined into a function that enables them).
#[inline(always)]
pub(super) unsafe fn drive<F: Unpack, S: Strips<R>, const R: usize, const T: usize>(
    kind: &BlockType,
    w: &[u8],
    row_bytes: usize,
    a: &QActs<'_>,
    out: &mut OutRows<'_>,
    (nb, rows, toks): (usize, usize, usize),
) {
    assert!(F::GPB == 1 && F::ONE_SCALE);
    // Everything the tiles read (block_extent checked qs, d and s).
    assert!(a.sums.len() >= toks * nb);
    let mut p = S::packed();
    let mut mbuf = [[0f32; R]; TS];
    for r0 in (0..rows).step_by(R) {
        let n = (rows - r0).min(R);
        let q = row_group::<R>(w, row_bytes, rows, r0);
        let mut packed = None;
        for ts in (0..toks).step_by(TS) {
            let tn = (toks - ts).min(TS);
            if F::MINS {
                mbuf[..tn].fill([0.0; R]);
            }
            for g0 in (0..nb).step_by(S::KC) {
                let gn = (nb - g0).min(S::KC);
                if packed != Some(g0) {
                    let next = w.get((r0 + R) * row_bytes..).unwrap_or(&[]);
                    // SAFETY: the caller's features.
                    unsafe { S::pack::<F>(kind, &q, next, g0, gn, &mut p) };
                    packed = Some(g0);
                }
                let at = Strip {
                    ts,
                    r0,
                    n,
                    g0,
                    gn,
                    nb,
                };
                let mut j = 0;
                while j + T <= tn {
                    // SAFETY: the caller's features; every block read is inside `a`.
                    unsafe { S::run::<F, T>(&p, a, out, &mut mbuf, &at, j) };
                    j += T;
                }
                while j < tn {
                    // SAFETY: as above.
                    unsafe { S::run::<F, 1>(&p, a, out, &mut mbuf, &at, j) };
                    j += 1;
                }
            }
            if F::MINS {
                // The spec's result: acc − mins.
                for (j, m) in mbuf[..tn].iter().enumerate() {
                    let o = &mut out.row_mut(ts + j)[r0..r0 + n];
                    for (o, m) in o.iter_mut().zip(m) {
                        *o -= *m;
                    }
                }
            }
        }
    }
}

/// Where a pass of the strips is: tokens from `ts`, the strip's rows `r0..r0 + n`, and the
/// packed chunk of groups `g0..g0 + gn` of `nb`.
pub(super) struct Strip {
    pub ts: usize,
    pub r0: usize,
    pub n: usize,
    pub g0: usize,
    pub gn: usize,
    pub nb: usize,
}

/// The AVX-512 VNNI strips (see the module).
struct Vnni;
impl Strips<ROWS> for Vnni {
    const KC: usize = KC;
    type Packed = Packed;
    fn packed() -> Packed {
        Packed {
            w: [[[0; ROWS]; 8]; KC],
            d: [[0.0; ROWS]; KC],
            dm: [[0.0; ROWS]; KC],
        }
    }
    #[inline(always)]
    unsafe fn pack<F: Unpack>(
        kind: &BlockType,
        q: &[&[u8]; ROWS],
        next: &[u8],
        g0: usize,
        gn: usize,
        p: &mut Packed,
    ) {
        let (mut d, mut dm) = ([0u16; ROWS], [0u16; ROWS]);
        let mut u = [_mm256_setzero_si256(); ROWS];
        for gi in 0..gn {
            let g = g0 + gi;
            // SAFETY: the caller's features; group g is in the rows (the caller's extent).
            let gs = unsafe { groups::<F, ROWS>(kind, q, next, g) };
            for (i, gr) in gs.iter().enumerate() {
                u[i] = if F::UNSIGNED {
                    gr.q
                } else {
                    // q + 128 as an unsigned byte.
                    _mm256_xor_si256(gr.q, _mm256_set1_epi8(-128))
                };
                d[i] = gr.d;
                dm[i] = gr.dm;
            }
            for (rq, u4) in u.chunks_exact(4).enumerate() {
                // SAFETY: the caller's features.
                unsafe { transpose4(u4, &mut p.w[gi], 4 * rq) };
            }
            // The scales, 16 f16 values at a time (exact).
            // SAFETY: 32 bytes from each array of 16 u16, 64 into each array of 16 f32.
            unsafe {
                let dv = _mm512_cvtph_ps(_mm256_loadu_si256(d.as_ptr().cast()));
                _mm512_store_ps(p.d[gi].as_mut_ptr(), dv);
                let mv = if F::MINS {
                    _mm512_cvtph_ps(_mm256_loadu_si256(dm.as_ptr().cast()))
                } else {
                    _mm512_setzero_ps()
                };
                _mm512_store_ps(p.dm[gi].as_mut_ptr(), mv);
            }
        }
    }
    #[inline(always)]
    unsafe fn run<F: Unpack, const N: usize>(
        p: &Packed,
        a: &QActs<'_>,
        out: &mut OutRows<'_>,
        mbuf: &mut [[f32; ROWS]; TS],
        at: &Strip,
        j: usize,
    ) {
        let zero = _mm512_setzero_ps();
        let mask: __mmask16 = if at.n >= ROWS { !0 } else { (1u16 << at.n) - 1 };
        let (mut acc, mut mins) = ([zero; N], [zero; N]);
        for (t, (c, m)) in acc.iter_mut().zip(mins.iter_mut()).enumerate() {
            let o = &out.row_mut(at.ts + j + t)[at.r0..at.r0 + at.n];
            // SAFETY: n floats inside `o` (the mask), 16 inside `mbuf[j + t]`.
            unsafe {
                if at.g0 > 0 {
                    *c = _mm512_maskz_loadu_ps(mask, o.as_ptr());
                }
                if F::MINS {
                    *m = _mm512_loadu_ps(mbuf[j + t].as_ptr());
                }
            }
        }
        let first = core::array::from_fn(|t| (at.ts + j + t) * at.nb + at.g0);
        // SAFETY: the caller's features and check.
        unsafe { tile::<F, N>(p, at.gn, a, first, &mut acc, &mut mins) };
        for (t, (c, m)) in acc.iter().zip(mins.iter()).enumerate() {
            let o = &mut out.row_mut(at.ts + j + t)[at.r0..at.r0 + at.n];
            // SAFETY: as above.
            unsafe {
                _mm512_mask_storeu_ps(o.as_mut_ptr(), mask, *c);
                if F::MINS {
                    _mm512_storeu_ps(mbuf[j + t].as_mut_ptr(), *m);
                }
            }
        }
    }
}
