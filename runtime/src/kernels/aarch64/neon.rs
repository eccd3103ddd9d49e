//! NEON kernels, with and without SDOT. Each reproduces the scalar spec bit for bit (see
//! `kernels/scalar.rs`): the same integer lanes, the same fused multiply-adds in the same order,
//! the same reductions — so an aarch64 board generates exactly the text an x86 machine does.
//!
//! f16 ⇄ f32 conversions use the FCVTL/FCVTN instructions through inline assembly: Rust's f16
//! vector types are not stable yet.

use crate::kernels::scalar;
use crate::kernels::tiles::{drive, Tiles, ROWS_DECODE};
use crate::kernels::{Isa, Kernels, OutRows, QActs};
use crate::weights::quants::QK_K;
use crate::weights::{BlockQ4_0, BlockQ4_1, BlockQ8_0, QK};
use core::arch::aarch64::*;
use core::arch::asm;
use half::f16;

/// The NEON table (every aarch64 CPU).
pub fn kernels() -> Option<Kernels> {
    if !super::neon_supported() {
        return None;
    }
    Some(Kernels {
        isa: Isa::Neon,
        numerics: crate::kernels::Numerics::Ember,
        quantize,
        quantize_q8k,
        gemm_q4_0: |w, a, o| unsafe_drive(&plain::Q4_0, w, a, o),
        gemm_q4_1: |w, a, o| unsafe_drive(&plain::Q4_1, w, a, o),
        gemm_q8_0: |w, a, o| unsafe_drive(&plain::Q8_0, w, a, o),
        gemm_blocks: super::blocks::gemm_blocks,
        dot_f32,
        dot_f16_f32,
        axpy_f32,
        // aarch64 has the fused multiply-add instruction in its base set: the spec compiles to it.
        rope: scalar::rope,
        rope_neox: scalar::rope_neox,
        softmax: scalar::softmax_chunk,
        scores_f16,
        update_f16,
        update_f16_f32,
        swiglu,
        geglu,
        tanh,
        exp_ggml,
        fma_rows,
        mad_q8_0,
        f16_f32: scalar::f16_f32,
    })
}

/// The NEON + SDOT table, if this CPU has the dot-product extension.
pub fn kernels_dotprod() -> Option<Kernels> {
    if !super::dotprod_supported() {
        return None;
    }
    let base = kernels()?;
    Some(Kernels {
        isa: Isa::NeonDotprod,
        numerics: crate::kernels::Numerics::Ember,
        gemm_q4_0: |w, a, o| unsafe_drive(&sdot::Q4_0, w, a, o),
        gemm_q4_1: |w, a, o| unsafe_drive(&sdot::Q4_1, w, a, o),
        gemm_q8_0: |w, a, o| unsafe_drive(&sdot::Q8_0, w, a, o),
        gemm_blocks: super::blocks::gemm_blocks_sdot,
        ..base
    })
}

fn unsafe_drive<W>(t: &Tiles<W>, w: &[W], a: &QActs<'_>, out: &mut OutRows<'_>) {
    // SAFETY: the tables holding these tiles are only built after the feature checks above.
    unsafe { drive(t, w, a, out) }
}

// ---------------------------------------------------------------------------------------------
// Conversions and small helpers.
// ---------------------------------------------------------------------------------------------

/// 4 f16 → f32 (FCVTL).
///
/// # Safety
/// NEON (baseline on aarch64).
#[inline(always)]
pub(super) unsafe fn cvt_f16x4(h: uint16x4_t) -> float32x4_t {
    let r: float32x4_t;
    asm!("fcvtl {r:v}.4s, {h:v}.4h", r = out(vreg) r, h = in(vreg) h, options(pure, nomem, nostack));
    r
}

#[inline(always)]
unsafe fn cvt_f32x4(f: float32x4_t) -> uint16x4_t {
    let r: uint16x4_t;
    asm!("fcvtn {r:v}.4h, {f:v}.4s", r = out(vreg) r, f = in(vreg) f, options(pure, nomem, nostack));
    r
}

/// 4 f16 from memory → f32.
#[inline(always)]
unsafe fn load_f16x4(p: *const f16) -> float32x4_t {
    cvt_f16x4(vld1_u16(p as *const u16))
}

/// hsum8 of the 8 lanes (lo = lanes 0-3, hi = 4-7) in the spec's order.
#[inline(always)]
unsafe fn hsum8(lo: float32x4_t, hi: float32x4_t) -> f32 {
    let s = vaddq_f32(lo, hi); // a[i] + a[i+4]
    let t = vadd_f32(vget_low_f32(s), vget_high_f32(s)); // (s0+s2, s1+s3)
    vget_lane_f32::<0>(t) + vget_lane_f32::<1>(t)
}

// ---------------------------------------------------------------------------------------------
// Activation quantization.
// ---------------------------------------------------------------------------------------------

fn quantize(x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32]) {
    let nb = (x.len() / QK).min(d.len()).min(s.len()).min(qs.len() / QK);
    for b in 0..nb {
        // SAFETY: block b's 32 floats and 32 bytes are in bounds (nb bounded above).
        let (dd, sum) =
            unsafe { quantize_block(x.as_ptr().add(b * QK), qs.as_mut_ptr().add(b * QK)) };
        d[b] = f16::from_f32(dd).to_f32();
        s[b] = f16::from_f32(dd * sum as f32).to_f32();
    }
}

#[inline(always)]
unsafe fn quantize_block(x: *const f32, q: *mut i8) -> (f32, i32) {
    let v: [float32x4_t; 8] = core::array::from_fn(|i| vld1q_f32(x.add(4 * i)));
    // maxNum ignores NaN, as the spec does.
    let mut m = vdupq_n_f32(0.0);
    for &vi in &v {
        m = vmaxnmq_f32(m, vabsq_f32(vi));
    }
    let amax = vmaxnmvq_f32(m);
    let d = amax / 127.0;
    let id = vdupq_n_f32(if amax != 0.0 { 127.0 / amax } else { 0.0 });
    let (lo, hi) = (vdupq_n_f32(-127.0), vdupq_n_f32(127.0));
    let mut sum = vdupq_n_s32(0);
    let mut out = [0i8; 32];
    for (i, &vi) in v.iter().enumerate() {
        let p = vmulq_f32(vi, id);
        // NaN → 0 before clamping (min/max would keep a NaN), then round ties to even.
        let p = vbslq_f32(vceqq_f32(p, p), p, vdupq_n_f32(0.0));
        let r = vrndnq_f32(vminq_f32(vmaxq_f32(p, lo), hi));
        let n = vcvtq_s32_f32(r);
        sum = vaddq_s32(sum, n);
        let b = vmovn_s16(vcombine_s16(vmovn_s32(n), vdup_n_s16(0)));
        vst1_lane_s32::<0>(
            out.as_mut_ptr().add(4 * i) as *mut i32,
            vreinterpret_s32_s8(b),
        );
    }
    core::ptr::copy_nonoverlapping(out.as_ptr(), q, 32);
    (d, vaddvq_s32(sum))
}

/// [`quants::quantize_q8k`](crate::weights::quants::quantize_q8k), four values a step: the
/// largest magnitude by maxNum (NaN never wins, as in the spec), the spec's `max` as the first
/// value of that magnitude, then the spec's steps on each value (the product, NaN to 0, the
/// clamp, rounding to nearest even) and its scalar scale.
fn quantize_q8k(x: &[f32], qs: &mut [i8], d: &mut [f32]) {
    for ((xb, qb), d) in x
        .chunks_exact(QK_K)
        .zip(qs.chunks_exact_mut(QK_K))
        .zip(d.iter_mut())
    {
        // SAFETY: the block's 256 floats and 256 bytes are in bounds (exact chunks).
        *d = unsafe { quantize_q8k_block(xb, qb.as_mut_ptr()) };
    }
}

/// One block of [`quantize_q8k`]: `x`'s 256 values into the 256 bytes at `q`; returns the scale.
///
/// # Safety
/// `q` is valid for 256 bytes of writes, and `x` holds 256 values.
#[inline(always)]
unsafe fn quantize_q8k_block(x: &[f32], q: *mut i8) -> f32 {
    const V: usize = QK_K / 4;
    let p = x.as_ptr();
    let mut m = vdupq_n_f32(0.0);
    for i in 0..V {
        m = vmaxnmq_f32(m, vabsq_f32(vld1q_f32(p.add(4 * i))));
    }
    let amax = vmaxnmvq_f32(m);
    if amax == 0.0 {
        core::ptr::write_bytes(q, 0, QK_K);
        return 0.0;
    }
    // The first value of that magnitude (a group of four compared at once, then its lanes).
    let target = vdupq_n_f32(amax);
    let mut max = amax;
    for i in 0..V {
        if vmaxvq_u32(vceqq_f32(vabsq_f32(vld1q_f32(p.add(4 * i))), target)) != 0 {
            if let Some(&v) = x[4 * i..4 * i + 4].iter().find(|v| v.abs() == amax) {
                max = v;
            }
            break;
        }
    }
    let iscale = -127.0 / max;
    let vs = vdupq_n_f32(iscale);
    let (lo, hi) = (vdupq_n_f32(-127.0), vdupq_n_f32(127.0));
    for i in 0..QK_K / 16 {
        let n: [int32x4_t; 4] = core::array::from_fn(|j| {
            let y = vmulq_f32(vs, vld1q_f32(p.add(16 * i + 4 * j)));
            // NaN → 0 before clamping (min/max would keep a NaN), then round ties to even.
            let y = vbslq_f32(vceqq_f32(y, y), y, vdupq_n_f32(0.0));
            vcvtnq_s32_f32(vminq_f32(vmaxq_f32(y, lo), hi))
        });
        // Within ±127: the saturating narrowings are exact.
        let h0 = vcombine_s16(vqmovn_s32(n[0]), vqmovn_s32(n[1]));
        let h1 = vcombine_s16(vqmovn_s32(n[2]), vqmovn_s32(n[3]));
        vst1q_s8(q.add(16 * i), vcombine_s8(vqmovn_s16(h0), vqmovn_s16(h1)));
    }
    1.0 / iscale
}

// ---------------------------------------------------------------------------------------------
// Quantized GEMM tiles (the structure of the x86 ones: groups of 8 blocks for the scales, then
// block by block into one accumulator, the Q4_1 minimum terms as a scalar chain).
// ---------------------------------------------------------------------------------------------

const PREFETCH_ROWS: usize = 4 * ROWS_DECODE;

/// The f16 at byte `off` of `n` (≤ 8) blocks `stride` bytes apart, as two f32x4 (0 beyond `n`).
#[inline(always)]
unsafe fn f16x8(
    base: *const u8,
    stride: usize,
    n: usize,
    off: usize,
) -> (float32x4_t, float32x4_t) {
    let mut h = [0u16; 8];
    for (j, v) in h.iter_mut().enumerate().take(n) {
        *v = (base.add(j * stride + off) as *const u16).read_unaligned();
    }
    let v = vld1q_u16(h.as_ptr());
    (cvt_f16x4(vget_low_u16(v)), cvt_f16x4(vget_high_u16(v)))
}

/// `n` (≤ 8) floats, zeros beyond.
#[inline(always)]
unsafe fn f32x8(p: *const f32, n: usize) -> (float32x4_t, float32x4_t) {
    let mut v = [0.0f32; 8];
    core::ptr::copy_nonoverlapping(p, v.as_mut_ptr(), n);
    (vld1q_f32(v.as_ptr()), vld1q_f32(v.as_ptr().add(4)))
}

/// A Q4 block's 32 quants in element order, each minus `offset`, as two i8x16.
#[inline(always)]
unsafe fn nibbles(qs: *const u8, offset: i8) -> (int8x16_t, int8x16_t) {
    let q = vld1q_u8(qs);
    let lo = vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0f)));
    let hi = vreinterpretq_s8_u8(vshrq_n_u8::<4>(q));
    let o = vdupq_n_s8(offset);
    (vsubq_s8(lo, o), vsubq_s8(hi, o))
}

macro_rules! tile {
    ($name:ident, $feat:literal, $W:ty, $mins:expr, $lanes:ident, |$wb:ident| $unpack:expr) => {
        #[target_feature(enable = $feat)]
        unsafe fn $name<const R: usize, const T: usize>(
            w: *const $W,
            qs: *const i8,
            d: *const f32,
            s: *const f32,
            nb: usize,
            out: &mut [[f32; T]; R],
        ) {
            let nbq = nb * QK;
            let size = core::mem::size_of::<$W>();
            let z = vdupq_n_f32(0.0);
            // acc[r][t] = (lanes 0-3, lanes 4-7)
            let mut acc = [[(z, z); T]; R];
            let mut mins = [[0.0f32; T]; R];
            let mut g = 0;
            while g < nb {
                let n = (nb - g).min(8);
                let mut dd = [[[0.0f32; 8]; T]; R];
                let mut mw = [[0.0f32; 8]; R];
                for r in 0..R {
                    let row = w.add(r * nb + g) as *const u8;
                    let (dw0, dw1) = f16x8(row, size, n, 0);
                    if $mins {
                        let (mw0, mw1) = f16x8(row, size, n, 2);
                        vst1q_f32(mw[r].as_mut_ptr(), mw0);
                        vst1q_f32(mw[r].as_mut_ptr().add(4), mw1);
                    }
                    for t in 0..T {
                        let (dx0, dx1) = f32x8(d.add(t * nb + g), n);
                        vst1q_f32(dd[r][t].as_mut_ptr(), vmulq_f32(dw0, dx0));
                        vst1q_f32(dd[r][t].as_mut_ptr().add(4), vmulq_f32(dw1, dx1));
                    }
                }
                for j in 0..n {
                    if T == 1 && R == ROWS_DECODE {
                        mca_mark!("BEGIN");
                    }
                    let b = g + j;
                    for r in 0..R {
                        if T == 1 && j % 2 == 0 {
                            let ahead = w.wrapping_add((r + PREFETCH_ROWS) * nb + b);
                            asm!("prfm pldl1keep, [{p}]", p = in(reg) ahead, options(nostack, readonly, preserves_flags));
                        }
                        let $wb = &*w.add(r * nb + b);
                        let (u0, u1) = $unpack;
                        for t in 0..T {
                            let xp = qs.add(t * nbq + b * QK);
                            let l0 = vcvtq_f32_s32($lanes(u0, vld1q_s8(xp)));
                            let l1 = vcvtq_f32_s32($lanes(u1, vld1q_s8(xp.add(16))));
                            let sc = vdupq_n_f32(dd[r][t][j]);
                            let a = acc[r][t];
                            acc[r][t] = (vfmaq_f32(a.0, l0, sc), vfmaq_f32(a.1, l1, sc));
                            if $mins {
                                // FMADD (scalar, fused), in block order.
                                mins[r][t] = scalar::fma(mw[r][j], *s.add(t * nb + b), mins[r][t]);
                            }
                        }
                    }
                    if T == 1 && R == ROWS_DECODE {
                        mca_mark!("END");
                    }
                }
                g += n;
            }
            for r in 0..R {
                for t in 0..T {
                    let (lo, hi) = acc[r][t];
                    out[r][t] = hsum8(lo, hi) + mins[r][t];
                }
            }
        }
    };
}

macro_rules! tiles {
    ($feat:literal, $lanes:ident) => {
        tile!(tile_q4_1, $feat, BlockQ4_1, true, $lanes, |wb| nibbles(
            wb.qs.as_ptr(),
            0
        ));
        tile!(tile_q4_0, $feat, BlockQ4_0, false, $lanes, |wb| nibbles(
            wb.qs.as_ptr(),
            8
        ));
        tile!(tile_q8_0, $feat, BlockQ8_0, false, $lanes, |wb| (
            vld1q_s8(wb.qs.as_ptr()),
            vld1q_s8(wb.qs.as_ptr().add(16))
        ));

        pub(super) const Q4_1: Tiles<BlockQ4_1> = Tiles {
            decode: tile_q4_1::<4, 1>,
            prefill: tile_q4_1::<2, 4>,
            pair: tile_q4_1::<4, 2>,
            single: tile_q4_1::<1, 1>,
        };
        pub(super) const Q4_0: Tiles<BlockQ4_0> = Tiles {
            decode: tile_q4_0::<4, 1>,
            prefill: tile_q4_0::<2, 4>,
            pair: tile_q4_0::<4, 2>,
            single: tile_q4_0::<1, 1>,
        };
        pub(super) const Q8_0: Tiles<BlockQ8_0> = Tiles {
            decode: tile_q8_0::<4, 1>,
            prefill: tile_q8_0::<2, 4>,
            pair: tile_q8_0::<4, 2>,
            single: tile_q8_0::<1, 1>,
        };
    };
}

/// Plain NEON: widening multiplies and pairwise adds form the lanes.
pub(super) mod plain {
    use super::*;

    /// Σ of 4 consecutive products, 4 lanes (|128·127·2| fits the i16 pair sums).
    ///
    /// # Safety
    /// NEON (baseline on aarch64).
    #[inline(always)]
    pub(in crate::kernels::aarch64) unsafe fn lanes(a: int8x16_t, b: int8x16_t) -> int32x4_t {
        let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
        let hi = vmull_high_s8(a, b);
        vpaddlq_s16(vpaddq_s16(lo, hi))
    }

    tiles!("neon", lanes);
}

/// NEON with SDOT: one instruction forms the lanes.
pub(super) mod sdot {
    use super::*;

    /// Σ of 4 consecutive products, 4 lanes, in one SDOT.
    ///
    /// # Safety
    /// The CPU must have the dot-product extension.
    #[inline(always)]
    pub(in crate::kernels::aarch64) unsafe fn lanes(a: int8x16_t, b: int8x16_t) -> int32x4_t {
        let mut r = vdupq_n_s32(0);
        asm!(
            ".arch_extension dotprod",
            "sdot {r:v}.4s, {a:v}.16b, {b:v}.16b",
            r = inout(vreg) r,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack)
        );
        r
    }

    tiles!("neon,dotprod", lanes);
}

// ---------------------------------------------------------------------------------------------
// Vector ops, exp, SwiGLU, attention.
// ---------------------------------------------------------------------------------------------

/// 16-lane fma dot (four f32x4), lanes folded as low 8 + high 8 and `hsum8`, then the tail one
/// by one (fused): the scalar spec.
#[inline(always)]
unsafe fn dot_by_lanes(
    n: usize,
    a: impl Fn(usize) -> float32x4_t,
    b: impl Fn(usize) -> float32x4_t,
    tail: impl Fn(usize) -> (f32, f32),
) -> f32 {
    let mut acc = [vdupq_n_f32(0.0); 4];
    let whole = n - n % 16;
    let mut i = 0;
    while i < whole {
        for (r, acc) in acc.iter_mut().enumerate() {
            *acc = vfmaq_f32(*acc, a(i + 4 * r), b(i + 4 * r));
        }
        i += 16;
    }
    let mut s = hsum8(vaddq_f32(acc[0], acc[2]), vaddq_f32(acc[1], acc[3]));
    for i in whole..n {
        let (x, y) = tail(i);
        s = scalar::fma(x, y, s);
    }
    s
}

fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    // SAFETY: every vector load reads whole groups of 16 below `n`.
    unsafe {
        dot_by_lanes(
            n,
            |i| vld1q_f32(a.as_ptr().add(i)),
            |i| vld1q_f32(b.as_ptr().add(i)),
            |i| (a[i], b[i]),
        )
    }
}

/// The f16 dot in [`scalar::vec_dot_f16_f32`]'s order (ggml's 4 banks of 16 lanes are 16
/// registers of 4 here: bank j, lanes 4k..4k+4 in register 4j + k).
fn dot_f16_f32(a: &[f16], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let whole = n - n % 64;
    // SAFETY: every vector load reads whole groups of 64 below `n`.
    unsafe {
        let mut acc = [vdupq_n_f32(0.0); 16];
        let mut i = 0;
        while i < whole {
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = load_f16x4(a.as_ptr().add(i + 4 * r));
                *acc = vfmaq_f32(*acc, av, vld1q_f32(b.as_ptr().add(i + 4 * r)));
            }
            i += 64;
        }
        // (b0 + b2) + (b1 + b3) for each of the 4 registers of 16 lanes, then lanes 0–7 + 8–15.
        let lanes: [float32x4_t; 4] = core::array::from_fn(|k| {
            vaddq_f32(
                vaddq_f32(acc[k], acc[8 + k]),
                vaddq_f32(acc[4 + k], acc[12 + k]),
            )
        });
        let mut sum = hsum8(vaddq_f32(lanes[0], lanes[2]), vaddq_f32(lanes[1], lanes[3])) as f64;
        for e in whole..n {
            sum += (a[e].to_f32() * b[e]) as f64;
        }
        sum as f32
    }
}

/// [`scalar::fma_rows`] with up to 64 accumulators held in registers across all the rows.
fn fma_rows(acc: &mut [f32], a: &[f32], b: &[f32], stride: usize) {
    let n = acc.len();
    if a.is_empty() || n == 0 {
        return;
    }
    assert!(stride >= n && b.len() >= (a.len() - 1) * stride + n);
    let (ap, bp) = (acc.as_mut_ptr(), b.as_ptr());
    let mut j0 = 0;
    // SAFETY: every row i of b read is b[i·stride..][..n], in bounds by the assertion; acc reads
    // and writes stay below n.
    // (A fixed count of registers for each pass, so the loop over the rows tests none of them:
    // on x86 a test per register cost a quarter of the time of 64 columns.)
    unsafe {
        while j0 + 4 <= n {
            let (p, q) = (ap.add(j0), bp.add(j0));
            let w = match (n - j0) / 4 {
                16.. => fma_cols::<16>(p, a, q, stride),
                8..=15 => fma_cols::<8>(p, a, q, stride),
                4..=7 => fma_cols::<4>(p, a, q, stride),
                2..=3 => fma_cols::<2>(p, a, q, stride),
                _ => fma_cols::<1>(p, a, q, stride),
            };
            j0 += 4 * w;
        }
    }
    // The last columns (fewer than a register's worth): the scalar spec on them.
    crate::kernels::scalar::fma_rows(&mut acc[j0..], a, &b[j0..], stride);
}

/// `fma_rows` for the 4·R columns at `acc`, rows of `b` at `b`, `stride` apart; returns R.
///
/// # Safety
/// `acc` must point to 4·R writable floats and `b` to `a.len()` rows of which this reads 4·R
/// at the same offset.
#[inline]
unsafe fn fma_cols<const R: usize>(
    acc: *mut f32,
    a: &[f32],
    b: *const f32,
    stride: usize,
) -> usize {
    // SAFETY: the caller's bounds.
    unsafe {
        let mut r = [vdupq_n_f32(0.0); R];
        for (k, r) in r.iter_mut().enumerate() {
            *r = vld1q_f32(acc.add(4 * k));
        }
        for (i, &ai) in a.iter().enumerate() {
            let va = vdupq_n_f32(ai);
            let row = b.add(i * stride);
            for (k, r) in r.iter_mut().enumerate() {
                *r = vfmaq_f32(*r, vld1q_f32(row.add(4 * k)), va);
            }
        }
        for (k, r) in r.iter().enumerate() {
            vst1q_f32(acc.add(4 * k), *r);
        }
    }
    R
}

fn axpy_f32(y: &mut [f32], a: f32, x: &[f32]) {
    let n = y.len().min(x.len());
    let mut i = 0;
    // SAFETY: as above.
    unsafe {
        while i + 4 <= n {
            let p = y.as_mut_ptr().add(i);
            vst1q_f32(
                p,
                vfmaq_f32(vld1q_f32(p), vld1q_f32(x.as_ptr().add(i)), vdupq_n_f32(a)),
            );
            i += 4;
        }
    }
    for j in i..n {
        y[j] = scalar::fma(a, x[j], y[j]);
    }
}

/// y = fma(q·d, a, y) over whole blocks, 4 values at a time (q·d is exact, so this matches the
/// scalar spec).
fn mad_q8_0(y: &mut [f32], x: &[BlockQ8_0], a: f32) {
    for (yb, b) in y.chunks_exact_mut(QK).zip(x) {
        let d = b.d.to_f32();
        // SAFETY: 32 quants and 32 floats of this block, in bounds.
        unsafe {
            for h in 0..2 {
                let q16 = vmovl_s8(vld1_s8(b.qs.as_ptr().add(16 * h)));
                let q16b = vmovl_s8(vld1_s8(b.qs.as_ptr().add(16 * h + 8)));
                for (k, half) in [
                    vget_low_s16(q16),
                    vget_high_s16(q16),
                    vget_low_s16(q16b),
                    vget_high_s16(q16b),
                ]
                .into_iter()
                .enumerate()
                {
                    let xv = vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(half)), d);
                    let p = yb.as_mut_ptr().add(16 * h + 4 * k);
                    vst1q_f32(p, vfmaq_n_f32(vld1q_f32(p), xv, a));
                }
            }
        }
    }
}

/// [`scalar::scores_f16`]: one [`dot_f16_f32`] per key.
fn scores_f16(keys: &[f16], q: &[f32], out: &mut [f32]) {
    let hd = q.len();
    for (j, o) in out.iter_mut().enumerate() {
        *o = dot_f16_f32(&keys[j * hd..(j + 1) * hd], q);
    }
}

/// [`scalar::update_f16`], key by key.
fn update_f16(acc: &mut [f16], values: &[f16], grows: &[bool], w: &[f32]) {
    let hd = acc.len();
    let values = &values[..grows.len().min(w.len()) * hd];
    crate::kernels::attend::per_key(acc, 0, grows, w, scale_f16, |acc, j, w| {
        // SAFETY: bounds as in the loops.
        unsafe { mad_f16_impl(acc, &values[j * hd..(j + 1) * hd], w) }
    });
}

/// [`scalar::update_f16`] into an f32 running sum (ember's numerics): for heads of whole groups of
/// 4, the running sum is held in registers, up to 64 values at a time, across the chunk's keys
/// ([`update_cols_f32`]); else the spec itself.
fn update_f16_f32(acc: &mut [f32], values: &[f16], grows: &[bool], w: &[f32]) {
    let (hd, m) = (acc.len(), grows.len().min(w.len()));
    let values = &values[..m * hd];
    if hd % 4 == 0 {
        let (ap, vp) = (acc.as_mut_ptr(), values.as_ptr());
        let mut c = 0;
        // SAFETY (of each call): columns c..c + 4·Q lie inside acc's hd, and `values` holds m
        // rows of hd (sliced above).
        unsafe {
            while c + 64 <= hd {
                update_cols_f32::<16>(ap.add(c), vp.add(c), hd, &grows[..m], w);
                c += 64;
            }
            while c < hd {
                update_cols_f32::<1>(ap.add(c), vp.add(c), hd, &grows[..m], w);
                c += 4;
            }
        }
        return;
    }
    scalar::update_f16(acc, values, &grows[..m], w)
}

/// The f32 running sum's 4·Q columns at `acc` (values at `v`, rows `hd` apart), key by key with
/// those columns in registers: each step one product or one fused multiply-add, as the spec's.
///
/// # Safety
/// `acc` must point to 4·Q writable values and `v` to `grows.len()` rows of `hd` values, of which
/// this reads 4·Q at the same offset; `w` must be at least as long as `grows`.
#[inline(always)]
unsafe fn update_cols_f32<const Q: usize>(
    acc: *mut f32,
    v: *const f16,
    hd: usize,
    grows: &[bool],
    w: &[f32],
) {
    let mut a = [vdupq_n_f32(0.0); Q];
    for (r, a) in a.iter_mut().enumerate() {
        *a = vld1q_f32(acc.add(4 * r));
    }
    for (j, (&g, &wj)) in grows.iter().zip(w).enumerate() {
        let mut wj = wj;
        if g {
            let s = vdupq_n_f32(wj);
            for a in a.iter_mut() {
                *a = vmulq_f32(*a, s);
            }
            wj = 1.0;
        }
        let vw = vdupq_n_f32(wj);
        let row = v.add(j * hd);
        for (r, a) in a.iter_mut().enumerate() {
            *a = vfmaq_f32(*a, load_f16x4(row.add(4 * r)), vw);
        }
    }
    for (r, a) in a.iter().enumerate() {
        vst1q_f32(acc.add(4 * r), *a);
    }
}

#[inline(always)]
unsafe fn mad_f16_impl(y: &mut [f16], x: &[f16], a: f32) {
    let n = y.len().min(x.len());
    let va = vdupq_n_f32(a);
    let mut i = 0;
    while i + 4 <= n {
        let p = y.as_mut_ptr().add(i);
        let r = vfmaq_f32(load_f16x4(p), load_f16x4(x.as_ptr().add(i)), va);
        vst1_u16(p as *mut u16, cvt_f32x4(r));
        i += 4;
    }
    for j in i..n {
        y[j] = f16::from_f32(scalar::fma(x[j].to_f32(), a, y[j].to_f32()));
    }
}

fn scale_f16(y: &mut [f16], a: f32) {
    // SAFETY: bounds as in the loops.
    unsafe { scale_f16_impl(y, a) }
}

#[inline(always)]
unsafe fn scale_f16_impl(y: &mut [f16], a: f32) {
    let n = y.len();
    let va = vdupq_n_f32(a);
    let mut i = 0;
    while i + 4 <= n {
        let p = y.as_mut_ptr().add(i);
        vst1_u16(p as *mut u16, cvt_f32x4(vmulq_f32(load_f16x4(p), va)));
        i += 4;
    }
    for v in &mut y[i..n] {
        *v = f16::from_f32(v.to_f32() * a);
    }
}

/// e^x for 4 lanes, operation for operation as [`scalar::exp_ggml`] (ggml's AVX-512
/// `ggml_v_expf`, whose final ·2ⁿ is two products here: exact, then one rounding).
#[inline(always)]
unsafe fn exp_ggml4(x: float32x4_t) -> float32x4_t {
    let c = |bits: u32| vdupq_n_f32(f32::from_bits(bits));
    let shift = vdupq_n_f32(12_582_912.0);
    let z = vfmaq_f32(shift, x, c(0x3fb8_aa3b));
    let n = vsubq_f32(z, shift);
    let b = vfmsq_f32(x, n, c(0x3f31_7200));
    let b = vfmsq_f32(b, n, c(0x35bf_be8e));
    let u = vmulq_f32(b, b);
    let hi = vfmaq_f32(
        vfmaq_f32(c(0x3eff_fedb), c(0x3e2a_af33), b),
        vfmaq_f32(c(0x3d2b_9f17), c(0x3c07_2010), b),
        u,
    );
    let j = vfmaq_f32(vfmaq_f32(vdupq_n_f32(1.0), c(0x3f7f_fff6), b), hi, u);
    let big = vcagtq_f32(n, vdupq_n_f32(192.0));
    let nc = vminq_f32(vmaxq_f32(n, vdupq_n_f32(-192.0)), vdupq_n_f32(192.0));
    let ni = vcvtq_s32_f32(nc);
    let n1 = vshrq_n_s32::<1>(ni);
    let n2 = vsubq_s32(ni, n1);
    let pow2 =
        |k: int32x4_t| vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(k, vdupq_n_s32(127))));
    let res = vmulq_f32(vmulq_f32(j, pow2(n2)), pow2(n1));
    let res = vbslq_f32(vceqq_f32(n, n), res, vdupq_n_f32(f32::NAN));
    let alt = vbslq_f32(vclezq_f32(n), vdupq_n_f32(0.0), vdupq_n_f32(f32::INFINITY));
    vbslq_f32(big, alt, res)
}

fn swiglu(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let mut i = 0;
    // SAFETY: whole groups of 4 below `n`.
    unsafe {
        while i + 4 <= n {
            let g = vld1q_f32(gate.as_ptr().add(i));
            let e = exp_ggml4(vsubq_f32(vdupq_n_f32(0.0), g));
            let silu = vdivq_f32(g, vaddq_f32(vdupq_n_f32(1.0), e));
            vst1q_f32(
                gate.as_mut_ptr().add(i),
                vmulq_f32(silu, vld1q_f32(up.as_ptr().add(i))),
            );
            i += 4;
        }
    }
    scalar::swiglu(&mut gate[i..n], &up[i..n]);
}

/// [`scalar::geglu`], 4 lanes at a time: the same multiplications and additions (none fused),
/// the tanh as [`tanh4`].
fn geglu(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let mut i = 0;
    // SAFETY: whole groups of 4 below `n`.
    unsafe {
        let (one, half) = (vdupq_n_f32(1.0), vdupq_n_f32(0.5));
        let (c, a) = (
            vdupq_n_f32(scalar::GELU_SQRT_2_OVER_PI),
            vdupq_n_f32(scalar::GELU_A),
        );
        while i + 4 <= n {
            let x = vld1q_f32(gate.as_ptr().add(i));
            // (c·x)·(1 + (a·x)·x), then (0.5·x)·(1 + tanh), then ·up: the spec's order.
            let cube = vaddq_f32(one, vmulq_f32(vmulq_f32(a, x), x));
            let t = tanh4(vmulq_f32(vmulq_f32(c, x), cube));
            let g = vmulq_f32(vmulq_f32(half, x), vaddq_f32(one, t));
            vst1q_f32(
                gate.as_mut_ptr().add(i),
                vmulq_f32(g, vld1q_f32(up.as_ptr().add(i))),
            );
            i += 4;
        }
    }
    scalar::geglu(&mut gate[i..n], &up[i..n]);
}

fn tanh(x: &mut [f32]) {
    let n = x.len() - x.len() % 4;
    for c in x[..n].chunks_exact_mut(4) {
        // SAFETY: 4 floats in bounds.
        unsafe { vst1q_f32(c.as_mut_ptr(), tanh4(vld1q_f32(c.as_ptr()))) };
    }
    scalar::tanh_inplace(&mut x[n..]);
}

/// The `libm` crate's `tanhf` of 4 lanes, bit for bit (NaN payloads aside): the steps of the
/// AVX2 set's `tanh8` (which spells out the branches), with `vbslq` for its blends.
///
/// # Safety
/// None beyond NEON, which every aarch64 CPU has (lane arithmetic only, no memory access).
#[inline]
unsafe fn tanh4(z: float32x4_t) -> float32x4_t {
    use scalar::{
        EXPM1F_INV_LN2 as INV_LN2, EXPM1F_LN2_HI as LN2_HI, EXPM1F_LN2_LO as LN2_LO,
        EXPM1F_Q1 as Q1, EXPM1F_Q2 as Q2,
    };
    let f = vdupq_n_f32;
    let sign = vdupq_n_u32(0x8000_0000);
    let zb = vreinterpretq_u32_f32(z);
    let w = vbicq_u32(zb, sign);
    let abs = vreinterpretq_f32_u32(w);
    let above = |v: uint32x4_t, c: u32| vcgtq_u32(v, vdupq_n_u32(c));
    let (huge, big, mid, normal) = (
        above(w, 0x4120_0000),
        above(w, 0x3f0c_9f54),
        above(w, 0x3e82_c578),
        above(w, 0x007f_ffff),
    );
    // expm1f's argument: −2|z| on the lanes of its third branch, else 2|z|.
    let small = vbicq_u32(normal, mid);
    let two = vaddq_f32(abs, abs);
    let hy = vreinterpretq_u32_f32(two);
    let y = vreinterpretq_f32_u32(veorq_u32(hy, vandq_u32(small, sign)));
    // k, as expm1f picks it.
    let kgen = vcvtq_s32_f32(vaddq_f32(vmulq_f32(f(INV_LN2), y), f(0.5)));
    let kpos = vbslq_s32(above(hy, 0x3f85_1591), kgen, vdupq_n_s32(1));
    let kneg = vreinterpretq_s32_u32(above(hy, 0x3eb1_7218));
    let k = vbslq_s32(small, kneg, kpos);
    let t = vcvtq_f32_s32(k);
    let hi = vsubq_f32(y, vmulq_f32(t, f(LN2_HI)));
    let lo = vmulq_f32(t, f(LN2_LO));
    let x = vsubq_f32(hi, lo);
    let c = vsubq_f32(vsubq_f32(hi, x), lo);
    // The primary range.
    let hfx = vmulq_f32(f(0.5), x);
    let hxs = vmulq_f32(x, hfx);
    let r1 = vaddq_f32(
        f(1.0),
        vmulq_f32(hxs, vaddq_f32(f(Q1), vmulq_f32(hxs, f(Q2)))),
    );
    let t3 = vsubq_f32(f(3.0), vmulq_f32(r1, hfx));
    let e = vmulq_f32(
        hxs,
        vdivq_f32(vsubq_f32(r1, t3), vsubq_f32(f(6.0), vmulq_f32(x, t3))),
    );
    let k0 = vsubq_f32(x, vsubq_f32(vmulq_f32(x, e), hxs));
    let e = vsubq_f32(vsubq_f32(vmulq_f32(x, vsubq_f32(e, c)), c), hxs);
    let km1 = vsubq_f32(vmulq_f32(f(0.5), vsubq_f32(x, e)), f(0.5));
    let k1 = vbslq_f32(
        vcltq_f32(x, f(-0.25)),
        vmulq_f32(f(-2.0), vsubq_f32(e, vaddq_f32(x, f(0.5)))),
        vaddq_f32(f(1.0), vmulq_f32(f(2.0), vsubq_f32(x, e))),
    );
    let twopk = vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(k, vdupq_n_s32(0x7f))));
    let uf = vreinterpretq_f32_s32(vshlq_n_s32::<23>(vsubq_s32(vdupq_n_s32(0x7f), k)));
    let below23 = vmulq_f32(vaddq_f32(vsubq_f32(x, e), vsubq_f32(f(1.0), uf)), twopk);
    let from23 = vmulq_f32(vaddq_f32(vsubq_f32(x, vaddq_f32(e, uf)), f(1.0)), twopk);
    let is = |v: i32| vceqq_s32(k, vdupq_n_s32(v));
    let mut em1 = vbslq_f32(vcgtq_s32(k, vdupq_n_s32(22)), from23, below23);
    em1 = vbslq_f32(is(1), k1, em1);
    em1 = vbslq_f32(is(-1), km1, em1);
    em1 = vbslq_f32(is(0), k0, em1);
    em1 = vbslq_f32(above(hy, 0x32ff_ffff), em1, y);
    // tanhf's branches: one division for t/(t + 2) or 2/(t + 2).
    let num = vbslq_f32(big, f(2.0), em1);
    let q = vdivq_f32(num, vaddq_f32(em1, f(2.0)));
    let mut tt = vbslq_f32(big, vsubq_f32(f(1.0), q), q);
    tt = vreinterpretq_f32_u32(veorq_u32(vreinterpretq_u32_f32(tt), vandq_u32(small, sign)));
    tt = vbslq_f32(huge, vaddq_f32(f(1.0), vdivq_f32(f(0.0), abs)), tt);
    tt = vbslq_f32(normal, tt, abs);
    vreinterpretq_f32_u32(veorq_u32(vreinterpretq_u32_f32(tt), vandq_u32(zb, sign)))
}

fn exp_ggml(x: &mut [f32]) {
    let n = x.len() - x.len() % 4;
    for c in x[..n].chunks_exact_mut(4) {
        // SAFETY: 4 floats in bounds.
        unsafe { vst1q_f32(c.as_mut_ptr(), exp_ggml4(vld1q_f32(c.as_ptr()))) };
    }
    scalar::exp_ggml_inplace(&mut x[n..]);
}
