//! Quantized GEMM tiles for AVX2 and AVX-512 VNNI.
//!
//! A tile multiplies R weight rows by T tokens: each weight block is unpacked once and used for
//! all T tokens, and the R×T accumulator chains are independent, which keeps the FMA units busy.
//! Every (row, token) pair follows the scalar spec's order exactly (one bank of 8 lanes, one
//! fused multiply-add per block, `hsum8`, then the Q4_1 minimum terms as one scalar chain of
//! fused multiply-adds in block order: ggml's order), so the results are bit-identical to the
//! scalar reference.
//!

use crate::weights::{BlockQ4_0, BlockQ4_1, BlockQ8_0, QK};
use core::arch::x86_64::*;

use crate::kernels::tiles::{Tiles, ROWS_DECODE};

// ---------------------------------------------------------------------------------------------
// Shared pieces.
// ---------------------------------------------------------------------------------------------

/// hsum8 as the spec orders it.
#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    crate::kernels::x86_64::avx2::hsum_ps(v)
}

/// A Q4 block's nibbles as 32 bytes in element order.
#[inline(always)]
unsafe fn nibbles(qs: *const u8) -> __m256i {
    let q = _mm_loadu_si128(qs as *const __m128i);
    let m4 = _mm_set1_epi8(0x0f);
    _mm256_set_m128i(
        _mm_and_si128(_mm_srli_epi16(q, 4), m4),
        _mm_and_si128(q, m4),
    )
}

// ---------------------------------------------------------------------------------------------
// The tile body, shared by both sets: groups of 8 blocks, whose scales (d_w·d_x) are formed 8 at
// a time as vectors; then block by block, the 8 integer lanes, converted and multiplied into the
// accumulator with the block's broadcast scale, and the Q4_1 minimum term m_w·s_x fused into a
// scalar chain.
// ---------------------------------------------------------------------------------------------

/// How far ahead decode tiles prefetch weights, in rows.
const PREFETCH_ROWS: usize = 4;

/// The f16 at byte `off` of `n` (≤ 8) blocks `stride` bytes apart, as f32 lanes (0 beyond `n`).
/// Built from scalar loads: hardware gathers are slower than this on current cores.
#[inline(always)]
unsafe fn f16x8(base: *const u8, stride: usize, n: usize, off: usize) -> __m256 {
    let at = |j: usize| (base.add(j * stride + off) as *const i16).read_unaligned();
    let v = if n == 8 {
        _mm_setr_epi16(at(0), at(1), at(2), at(3), at(4), at(5), at(6), at(7))
    } else {
        let g = |j: usize| if j < n { at(j) } else { 0 };
        _mm_setr_epi16(g(0), g(1), g(2), g(3), g(4), g(5), g(6), g(7))
    };
    _mm256_cvtph_ps(v)
}

/// fma(a, b, c) on scalars, one rounding (no libm call in the hot loop).
#[inline(always)]
unsafe fn fma1(a: f32, b: f32, c: f32) -> f32 {
    _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(a), _mm_set_ss(b), _mm_set_ss(c)))
}

/// `n` (≤ 8) floats, zeros beyond.
#[inline(always)]
unsafe fn load_f32x8(p: *const f32, n: usize) -> __m256 {
    if n == 8 {
        _mm256_loadu_ps(p)
    } else {
        let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), idx);
        _mm256_maskload_ps(p, mask)
    }
}

macro_rules! tile {
    ($name:ident, $feat:literal, $W:ty, $mins:expr, |$wb:ident| $unpack:expr, |$u:ident, $xq:ident| $lanes:expr) => {
        #[target_feature(enable = $feat)]
        pub(crate) unsafe fn $name<const R: usize, const T: usize>(
            w: *const $W,
            qs: *const i8,
            d: *const f32,
            s: *const f32,
            nb: usize,
            out: &mut [[f32; T]; R],
        ) {
            let nbq = nb * QK;
            let size = core::mem::size_of::<$W>();
            let mut acc = [[_mm256_setzero_ps(); T]; R];
            let mut mins = [[0.0f32; T]; R];
            // With 4 tokens, each row's 4 minimum chains in the lanes of one vector: lane t
            // takes the same fused multiply-adds in the same block order as a scalar chain.
            let mut mins4 = [_mm_setzero_ps(); R];
            let mut g = 0;
            while g < nb {
                let n = (nb - g).min(8);
                // The blocks' scales d_w·d_x, read back one at a time as broadcasts.
                let mut dd = [[[0.0f32; 8]; T]; R];
                let mut mw = [[0.0f32; 8]; R];
                for r in 0..R {
                    let row = w.add(r * nb + g) as *const u8;
                    let dw = f16x8(row, size, n, 0);
                    if $mins {
                        _mm256_storeu_ps(mw[r].as_mut_ptr(), f16x8(row, size, n, 2));
                    }
                    for t in 0..T {
                        let v = _mm256_mul_ps(dw, load_f32x8(d.add(t * nb + g), n));
                        _mm256_storeu_ps(dd[r][t].as_mut_ptr(), v);
                    }
                }
                for j in 0..n {
                    let b = g + j;
                    let s4 = if $mins && T == 4 {
                        _mm_setr_ps(
                            *s.add(b),
                            *s.add(nb + b),
                            *s.add(2 * nb + b),
                            *s.add(3 * nb + b),
                        )
                    } else {
                        _mm_setzero_ps()
                    };
                    for r in 0..R {
                        if T <= 2 && j % 2 == 0 {
                            // Decoding streams every weight from memory once per token: ask
                            // for the same block of the rows PREFETCH_ROWS ahead (prefetches
                            // never fault, and the address is only computed, not read).
                            let ahead = w.wrapping_add((r + PREFETCH_ROWS) * nb + b);
                            _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
                        }
                        let $wb = &*w.add(r * nb + b);
                        let $u = $unpack;
                        if $mins && T == 4 {
                            mins4[r] = _mm_fmadd_ps(_mm_set1_ps(mw[r][j]), s4, mins4[r]);
                        }
                        for t in 0..T {
                            let $xq =
                                _mm256_loadu_si256(qs.add(t * nbq + b * QK) as *const __m256i);
                            let l = _mm256_cvtepi32_ps($lanes);
                            let sc = _mm256_broadcast_ss(&dd[r][t][j]);
                            acc[r][t] = _mm256_fmadd_ps(sc, l, acc[r][t]);
                            if $mins && T != 4 {
                                mins[r][t] = fma1(mw[r][j], *s.add(t * nb + b), mins[r][t]);
                            }
                        }
                    }
                }
                g += n;
            }
            if $mins && T == 4 {
                for r in 0..R {
                    let mut m = [0.0f32; 4];
                    _mm_storeu_ps(m.as_mut_ptr(), mins4[r]);
                    mins[r][..4].copy_from_slice(&m);
                }
            }
            for r in 0..R {
                for t in 0..T {
                    out[r][t] = hsum(acc[r][t]) + mins[r][t];
                }
            }
        }
    };
}

/// A decode tile of [`ROWS_DECODE`] rows that runs them one after the other with the one-row
/// tile: each row's blocks are read in address order, one stream the hardware prefetcher
/// follows. (Interleaving the rows' blocks, four short streams 600 bytes apart, halved decode
/// speed on Q8_0: 64 against 128 tokens/s here.) Each row's arithmetic is the same either way.
macro_rules! row_by_row {
    ($name:ident, $tile:ident, $feat:literal, $W:ty) => {
        #[target_feature(enable = $feat)]
        unsafe fn $name(
            w: *const $W,
            qs: *const i8,
            d: *const f32,
            s: *const f32,
            nb: usize,
            out: &mut [[f32; 1]; ROWS_DECODE],
        ) {
            for (r, o) in out.iter_mut().enumerate() {
                let mut one = [[0.0f32; 1]; 1];
                $tile::<1, 1>(w.add(r * nb), qs, d, s, nb, &mut one);
                *o = one[0];
            }
        }
    };
}

/// Tables of tiles for one set.
macro_rules! tiles {
    ($feat:literal, $lanes:ident) => {
        tile!(
            tile_q4_1,
            $feat,
            BlockQ4_1,
            true,
            |wb| nibbles(wb.qs.as_ptr()),
            |u, xq| $lanes(u, xq)
        );
        tile!(
            tile_q4_0,
            $feat,
            BlockQ4_0,
            false,
            // (q - 8) is signed: keep it, and let the lane function take |q - 8| and the sign.
            |wb| _mm256_sub_epi8(nibbles(wb.qs.as_ptr()), _mm256_set1_epi8(8)),
            |u, xq| $lanes(_mm256_sign_epi8(u, u), _mm256_sign_epi8(xq, u))
        );
        tile!(
            tile_q8_0,
            $feat,
            BlockQ8_0,
            false,
            |wb| _mm256_loadu_si256(wb.qs.as_ptr() as *const __m256i),
            // |w| as u8 (-128 → 128), its sign moved onto the activations (never -128).
            |u, xq| $lanes(_mm256_sign_epi8(u, u), _mm256_sign_epi8(xq, u))
        );

        row_by_row!(decode_q4_1, tile_q4_1, $feat, BlockQ4_1);
        row_by_row!(decode_q4_0, tile_q4_0, $feat, BlockQ4_0);
        row_by_row!(decode_q8_0, tile_q8_0, $feat, BlockQ8_0);

        pub(crate) const Q4_1: Tiles<BlockQ4_1> = Tiles {
            decode: decode_q4_1,
            prefill: tile_q4_1::<2, 4>,
            pair: tile_q4_1::<4, 2>,
            single: tile_q4_1::<1, 1>,
        };
        pub(crate) const Q4_0: Tiles<BlockQ4_0> = Tiles {
            decode: decode_q4_0,
            prefill: tile_q4_0::<2, 4>,
            pair: tile_q4_0::<4, 2>,
            single: tile_q4_0::<1, 1>,
        };
        pub(crate) const Q8_0: Tiles<BlockQ8_0> = Tiles {
            decode: decode_q8_0,
            prefill: tile_q8_0::<2, 4>,
            pair: tile_q8_0::<4, 2>,
            single: tile_q8_0::<1, 1>,
        };
    };
}

/// AVX2: `maddubs` + `madd` form the lanes.
pub(crate) mod avx2 {
    use super::*;

    /// 8 lanes of Σ_{k<4} u[4l+k]·s[4l+k] (|15·127·2| and |128·127·2| fit maddubs's i16).
    #[inline(always)]
    unsafe fn lanes(u: __m256i, s: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
    }

    tiles!("avx2,fma,f16c", lanes);
}

/// AVX-512 VNNI: one `vpdpbusd` forms the lanes.
pub(crate) mod avx512 {
    use super::*;

    #[inline(always)]
    unsafe fn lanes(u: __m256i, s: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
    }

    tiles!("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni", lanes);
}
