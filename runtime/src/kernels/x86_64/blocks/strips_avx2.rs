//! Prefill of the formats of one scale per block of 32 (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL)
//! with AVX2: `strips.rs`'s strips, eight rows to a 256-bit register, with `maddubs` for
//! `vpdpbusd`.
//!
//! A strip's groups are unpacked once into a buffer that stays in L1 (`Packed`): for group g,
//! eight registers, register k holding bytes 4k..4k+4 of the 8 rows' quants, and the rows'
//! float scales as lanes. A token's block of 32 activation quants then meets the 8 rows in
//! eight `maddubs`, each with four of the token's bytes broadcast, so that i32 lane i ends with
//! row i's whole block and nothing is reduced across lanes. `maddubs` saturates its 16-bit
//! pairs, so the unsigned operand must stay small:
//! - the 4- and 5-bit formats (`Unpack::QMAX` 15 or 31) go in as `q + OFFSET` (0..15, 0..31),
//!   and [`run_len`] products add up in 16 bits before one `madd` widens them (8 products of
//!   pairs below 2·15·128, 4 below 2·31·128); `OFFSET·Σx` comes back out of the sum;
//! - Q8_0 and IQ4_NL (quants up to ±128) go in as |q|, their signs moved onto the activations
//!   (`sign`; activations are never −128), each product widened at once.
//!
//! The sums are exact, so each lane takes the spec's float steps for its row
//! ([`crate::weights::quants::group_step`]), as in `strips.rs`: every (row, token) is the spec's
//! result bit for bit.

use super::strips::{drive, groups, transpose4, Strip, Strips, TS};
use super::Unpack;
use crate::kernels::{OutRows, QActs};
use crate::weights::{BlockType, QK};
use core::arch::x86_64::*;

/// Rows of a strip: the eight i32 lanes of a 256-bit register.
const ROWS: usize = 8;
/// Groups packed at a time (256 bytes of quants each, twice for the wide formats).
const KC: usize = 48;
/// Tokens of a tile (their chains stay in registers across a chunk's groups).
const T: usize = 4;
/// Batches from this size take the strips, but those of the formats `decode_avx2.rs` takes (up
/// to its `MAX_TOKENS`); one token takes the four-row kernel. Measured
/// against the four-row kernel's batches (2026-12-05, AMD EPYC without AVX-512, 1536 × 576 from
/// memory, `examples/gemm_speed`): 2 tokens Q4_0 78 µs against 117, Q4_1 96 against 182, Q8_0
/// 142 against 196; 4 tokens Q4_0 110 against 171; 128 tokens Q4_0 1.44 ms against 3.93, Q8_0
/// 2.30 against 4.19, Q5_0 1.55 against 3.94.
pub(super) const MIN_TOKENS: usize = 2;

/// How many `maddubs` products of quants up to `qmax` add up in 16 bits without overflow (each
/// is a pair of products of at most `qmax · 128`); 0 for the wide formats.
const fn run_len(qmax: u8) -> usize {
    let pair = 2 * qmax as usize * 128;
    let n = i16::MAX as usize / pair;
    if n >= 8 {
        8
    } else if n >= 4 {
        4
    } else {
        0
    }
}

/// A strip's groups, unpacked.
#[repr(C, align(32))]
struct Packed {
    /// `w[g][k][i]`: bytes 4k..4k+4 of row i's quants in group g, as the unsigned operand.
    w: [[[u32; ROWS]; 8]; KC],
    /// The same bytes of the quants themselves, for the wide formats' signs.
    s: [[[u32; ROWS]; 8]; KC],
    /// The rows' scales.
    d: [[f32; ROWS]; KC],
    /// The rows' minimum scales (zero for formats without one).
    dm: [[f32; ROWS]; KC],
}

/// The chains of `N` tokens (activation blocks `first[t]..` of the tile's tokens) over the
/// packed groups `0..gn` (activation block `g0 + gi`).
///
/// # Safety
/// AVX2, FMA and F16C must be enabled (this is inlined into [`gemm`]); `a` holds every block
/// read (checked by the caller).
#[inline(always)]
unsafe fn tile<F: Unpack, const N: usize>(
    p: &Packed,
    gn: usize,
    a: &QActs<'_>,
    first: [usize; N],
    acc: &mut [__m256; N],
    mins: &mut [__m256; N],
) {
    let run = run_len(F::QMAX);
    let (qs, d, s, sums) = (a.qs.as_ptr(), a.d.as_ptr(), a.s.as_ptr(), a.sums.as_ptr());
    let ones = _mm256_set1_epi16(1);
    let zero = _mm256_setzero_ps();
    for gi in 0..gn {
        // SAFETY: aligned loads inside `p` (32-byte aligned, rows of 32 bytes).
        let dw = unsafe { _mm256_load_ps(p.d[gi].as_ptr()) };
        let (dm, live) = if F::MINS {
            // SAFETY: as above.
            let dm = unsafe { _mm256_load_ps(p.dm[gi].as_ptr()) };
            (dm, _mm256_cmp_ps::<_CMP_NEQ_UQ>(dm, zero))
        } else {
            (zero, zero)
        };
        for t in 0..N {
            let b = first[t] + gi;
            // SAFETY (reads below): block b of the activations is inside `a` (the caller's
            // check); 32 quants, read as eight unaligned 4-byte words; the packed words are
            // aligned loads inside `p`.
            let x = unsafe { qs.add(b * QK) } as *const i32;
            // (Macros: a closure would not take the enclosing target features.)
            macro_rules! xw {
                ($k:expr) => {
                    _mm256_set1_epi32(unsafe { x.add($k).read_unaligned() })
                };
            }
            macro_rules! w {
                ($k:expr) => {
                    unsafe { _mm256_load_si256(p.w[gi][$k].as_ptr().cast()) }
                };
            }
            macro_rules! prod {
                ($k:expr) => {
                    _mm256_maddubs_epi16(w!($k), xw!($k))
                };
            }
            let isum = if run == 0 {
                macro_rules! wide {
                    ($k:expr) => {{
                        // SAFETY: as above.
                        let sg = unsafe { _mm256_load_si256(p.s[gi][$k].as_ptr().cast()) };
                        let sx = _mm256_sign_epi8(xw!($k), sg);
                        _mm256_madd_epi16(_mm256_maddubs_epi16(w!($k), sx), ones)
                    }};
                }
                let mut p0 = wide!(0);
                let mut p1 = wide!(4);
                for k in 1..4 {
                    p0 = _mm256_add_epi32(p0, wide!(k));
                    p1 = _mm256_add_epi32(p1, wide!(k + 4));
                }
                _mm256_add_epi32(p0, p1)
            } else {
                // Two 16-bit chains of four products.
                let p0 = _mm256_add_epi16(
                    _mm256_add_epi16(prod!(0), prod!(1)),
                    _mm256_add_epi16(prod!(2), prod!(3)),
                );
                let p1 = _mm256_add_epi16(
                    _mm256_add_epi16(prod!(4), prod!(5)),
                    _mm256_add_epi16(prod!(6), prod!(7)),
                );
                if run >= 8 {
                    _mm256_madd_epi16(_mm256_add_epi16(p0, p1), ones)
                } else {
                    _mm256_add_epi32(_mm256_madd_epi16(p0, ones), _mm256_madd_epi16(p1, ones))
                }
            };
            let isum = if run != 0 && F::OFFSET != 0 {
                // Σ(q + OFFSET)·x − OFFSET·Σx.
                let sx = unsafe { *sums.add(b) };
                _mm256_sub_epi32(isum, _mm256_set1_epi32(F::OFFSET as i32 * sx))
            } else {
                isum
            };
            let dx = unsafe { *d.add(b) };
            let sc = _mm256_mul_ps(dw, _mm256_set1_ps(dx));
            acc[t] = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(isum), acc[t]);
            if F::MINS {
                let sx = _mm256_set1_ps(unsafe { *s.add(b) });
                let m = _mm256_fmadd_ps(dm, sx, mins[t]);
                mins[t] = _mm256_blendv_ps(mins[t], m, live);
            }
        }
    }
}

/// The product of rows of the one-scale format `F` with every token of `a` (see the module;
/// `strips::drive` runs the strips). `nb`, `rows`, `toks` as [`crate::kernels::block_extent`]
/// checked them.
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
    extent: (usize, usize, usize),
) {
    // SAFETY: the caller's features.
    unsafe { drive::<F, Avx2, ROWS, T>(kind, w, row_bytes, a, out, extent) }
}

/// The AVX2 strips (see the module).
struct Avx2;
impl Strips<ROWS> for Avx2 {
    const KC: usize = KC;
    type Packed = Packed;
    fn packed() -> Packed {
        Packed {
            w: [[[0; ROWS]; 8]; KC],
            s: [[[0; ROWS]; 8]; KC],
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
        let wide = run_len(F::QMAX) == 0;
        let (mut d, mut dm) = ([0u16; ROWS], [0u16; ROWS]);
        let mut u = [_mm256_setzero_si256(); ROWS];
        let mut sq = [_mm256_setzero_si256(); ROWS];
        for gi in 0..gn {
            let g = g0 + gi;
            // SAFETY: the caller's features; group g is in the rows (the caller's extent).
            let gs = unsafe { groups::<F, ROWS>(kind, q, next, g) };
            for (i, gr) in gs.iter().enumerate() {
                u[i] = if wide {
                    sq[i] = gr.q;
                    _mm256_abs_epi8(gr.q)
                } else if F::UNSIGNED {
                    gr.q
                } else {
                    _mm256_add_epi8(gr.q, _mm256_set1_epi8(F::OFFSET as i8))
                };
                d[i] = gr.d;
                dm[i] = gr.dm;
            }
            for r in 0..ROWS / 4 {
                // SAFETY: the caller's features.
                unsafe { transpose4(&u[4 * r..4 * r + 4], &mut p.w[gi], 4 * r) };
                if wide {
                    // SAFETY: as above.
                    unsafe { transpose4(&sq[4 * r..4 * r + 4], &mut p.s[gi], 4 * r) };
                }
            }
            // The scales, 8 f16 values at a time (exact).
            // SAFETY: 16 bytes from each array of 8 u16, 32 into each array of 8 f32.
            unsafe {
                let dv = _mm256_cvtph_ps(_mm_loadu_si128(d.as_ptr().cast()));
                _mm256_store_ps(p.d[gi].as_mut_ptr(), dv);
                let mv = if F::MINS {
                    _mm256_cvtph_ps(_mm_loadu_si128(dm.as_ptr().cast()))
                } else {
                    _mm256_setzero_ps()
                };
                _mm256_store_ps(p.dm[gi].as_mut_ptr(), mv);
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
        let zero = _mm256_setzero_ps();
        let (mut acc, mut mins) = ([zero; N], [zero; N]);
        for (t, (c, m)) in acc.iter_mut().zip(mins.iter_mut()).enumerate() {
            // SAFETY (both): the caller's features.
            if at.g0 > 0 {
                *c = unsafe { load8(&out.row_mut(at.ts + j + t)[at.r0..at.r0 + at.n]) };
            }
            if F::MINS {
                *m = unsafe { load8(&mbuf[j + t]) };
            }
        }
        let first = core::array::from_fn(|t| (at.ts + j + t) * at.nb + at.g0);
        // SAFETY: the caller's features and check.
        unsafe { tile::<F, N>(p, at.gn, a, first, &mut acc, &mut mins) };
        for (t, (c, m)) in acc.iter().zip(mins.iter()).enumerate() {
            // SAFETY (both): the caller's features.
            unsafe { store8(&mut out.row_mut(at.ts + j + t)[at.r0..at.r0 + at.n], *c) };
            if F::MINS {
                unsafe { store8(&mut mbuf[j + t], *m) };
            }
        }
    }
}

/// Up to eight floats of `o` as a register (zeros past its end).
///
/// # Safety
/// AVX must be enabled (this is inlined into [`gemm`]).
#[inline(always)]
unsafe fn load8(o: &[f32]) -> __m256 {
    if o.len() >= ROWS {
        // SAFETY: 8 floats inside `o`.
        unsafe { _mm256_loadu_ps(o.as_ptr()) }
    } else {
        let mut b = [0f32; ROWS];
        b[..o.len()].copy_from_slice(o);
        // SAFETY: 8 floats inside `b`.
        unsafe { _mm256_loadu_ps(b.as_ptr()) }
    }
}

/// The first `o.len()` (at most eight) lanes of `v` into `o`.
///
/// # Safety
/// AVX must be enabled (this is inlined into [`gemm`]).
#[inline(always)]
unsafe fn store8(o: &mut [f32], v: __m256) {
    if o.len() >= ROWS {
        // SAFETY: 8 floats inside `o`.
        unsafe { _mm256_storeu_ps(o.as_mut_ptr(), v) }
    } else {
        let mut b = [0f32; ROWS];
        // SAFETY: 8 floats inside `b`.
        unsafe { _mm256_storeu_ps(b.as_mut_ptr(), v) };
        let n = o.len();
        o.copy_from_slice(&b[..n]);
    }
}
