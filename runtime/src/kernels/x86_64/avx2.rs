//! AVX2 + FMA + F16C kernels.

use super::gemm;
use crate::kernels::{Isa, Kernels, OutRows, QActs};
use crate::weights::{BlockQ4_0, BlockQ4_1, BlockQ8_0, QK};
use core::arch::x86_64::*;
use half::f16;

/// The AVX2 table, if this CPU has AVX2, FMA and F16C.
pub fn kernels() -> Option<Kernels> {
    if !super::avx2_supported() {
        return None;
    }
    Some(Kernels {
        isa: Isa::Avx2,
        numerics: crate::kernels::Numerics::Ember,
        quantize,
        gemm_q4_0,
        gemm_q4_1,
        gemm_q8_0,
        gemm_blocks: super::blocks::gemm_blocks,
        dot_f32,
        dot_f16_f32,
        axpy_f32,
        mad_f16,
        scale_f16,
        swiglu,
        exp_ggml,
        fma_rows,
        mad_q8_0,
    })
}

fn exp_ggml(x: &mut [f32]) {
    let n = x.len() - x.len() % 8;
    for c in x[..n].chunks_exact_mut(8) {
        // SAFETY: AVX2+FMA checked by `kernels()`; 8 floats in bounds.
        unsafe { _mm256_storeu_ps(c.as_mut_ptr(), exp_ggml8(_mm256_loadu_ps(c.as_ptr()))) };
    }
    crate::kernels::scalar::exp_ggml_inplace(&mut x[n..]);
}

fn swiglu(gate: &mut [f32], up: &[f32]) {
    // SAFETY: AVX2+FMA checked by `kernels()`.
    unsafe { swiglu_impl(gate, up) }
}

// The safe wrappers below are only placed in a table by `kernels()` after the CPU check.

fn quantize(x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32]) {
    let nb = (x.len() / QK).min(d.len()).min(s.len()).min(qs.len() / QK);
    for b in 0..nb {
        // SAFETY: AVX2 checked by `kernels()`; block b's 32 floats and 32 bytes are in bounds.
        unsafe {
            let (dd, sum) = quantize_block(x.as_ptr().add(b * QK), qs.as_mut_ptr().add(b * QK));
            d[b] = f16f(f32h(dd));
            s[b] = f16f(f32h(dd * sum as f32));
        }
    }
}

fn gemm_q4_0(w: &[BlockQ4_0], a: &QActs<'_>, out: &mut OutRows<'_>) {
    // SAFETY: AVX2+FMA+F16C checked by `kernels()`.
    unsafe { crate::kernels::tiles::drive(&gemm::avx2::Q4_0, w, a, out) }
}

fn gemm_q4_1(w: &[BlockQ4_1], a: &QActs<'_>, out: &mut OutRows<'_>) {
    // SAFETY: as above.
    unsafe { crate::kernels::tiles::drive(&gemm::avx2::Q4_1, w, a, out) }
}

fn gemm_q8_0(w: &[BlockQ8_0], a: &QActs<'_>, out: &mut OutRows<'_>) {
    // SAFETY: as above.
    unsafe { crate::kernels::tiles::drive(&gemm::avx2::Q8_0, w, a, out) }
}

fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: AVX2+FMA checked by `kernels()`.
    unsafe { dot_f32_impl(a, b) }
}

fn dot_f16_f32(a: &[f16], b: &[f32]) -> f32 {
    // SAFETY: AVX2+FMA+F16C checked by `kernels()`.
    unsafe { dot_f16_f32_impl(a, b) }
}

fn mad_f16(y: &mut [f16], x: &[f16], a: f32) {
    // SAFETY: AVX2+FMA+F16C checked by `kernels()`.
    unsafe { mad_f16_impl(y, x, a) }
}

fn scale_f16(y: &mut [f16], a: f32) {
    // SAFETY: as above.
    unsafe { scale_f16_impl(y, a) }
}

fn axpy_f32(y: &mut [f32], a: f32, x: &[f32]) {
    // SAFETY: as above.
    unsafe { axpy_f32_impl(y, a, x) }
}

fn mad_q8_0(y: &mut [f32], x: &[BlockQ8_0], a: f32) {
    // SAFETY: as above.
    unsafe { mad_q8_0_impl(y, x, a) }
}

/// y = fma(q·d, a, y) over whole blocks, 8 values at a time (q·d is exact, so this matches the
/// scalar spec).
#[target_feature(enable = "avx2,fma")]
unsafe fn mad_q8_0_impl(y: &mut [f32], x: &[BlockQ8_0], a: f32) {
    let va = _mm256_set1_ps(a);
    for (yb, b) in y.chunks_exact_mut(QK).zip(x) {
        let vd = _mm256_set1_ps(f16f(b.d));
        for g in 0..QK / 8 {
            // SAFETY (of the raw accesses): 8 quants and 8 floats of this block, in bounds.
            let q = _mm_loadl_epi64(b.qs.as_ptr().add(8 * g) as *const __m128i);
            let xv = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), vd);
            let yp = yb.as_mut_ptr().add(8 * g);
            _mm256_storeu_ps(yp, _mm256_fmadd_ps(xv, va, _mm256_loadu_ps(yp)));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Building blocks shared with the AVX-512 set.
// ---------------------------------------------------------------------------------------------

/// Horizontal sum of 8 floats.
///
/// # Safety
/// The CPU must support AVX2.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn hsum_ps(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps(v, 1);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Horizontal max of 8 floats.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn hmax_ps(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_movehdup_ps(m));
    _mm_cvtss_f32(m)
}

/// Quantizes 32 floats to 32 i8 as the scalar spec does (scale amax/127, ties to even, NaN as 0).
/// Returns the f32 scale and the sum of the quants.
///
/// # Safety
/// The CPU must support AVX2; `x` must point to 32 floats and `q` to 32 writable bytes.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn quantize_block(x: *const f32, q: *mut i8) -> (f32, i32) {
    let sign = _mm256_set1_ps(-0.0);
    let v = [
        _mm256_loadu_ps(x),
        _mm256_loadu_ps(x.add(8)),
        _mm256_loadu_ps(x.add(16)),
        _mm256_loadu_ps(x.add(24)),
    ];
    // max_ps returns its second operand when the first is NaN, so NaN never becomes the max.
    let mut m = _mm256_setzero_ps();
    for &vi in &v {
        m = _mm256_max_ps(_mm256_andnot_ps(sign, vi), m);
    }
    let amax = hmax_ps(m);
    let d = amax / 127.0;
    let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
    let mut iv = [_mm256_setzero_si256(); 4];
    for (i, &vi) in v.iter().enumerate() {
        let s = _mm256_mul_ps(vi, id);
        // Zero NaN lanes (NaN inputs, or inf * 0) as the scalar `as i8` does.
        let s = _mm256_and_ps(s, _mm256_cmp_ps(s, s, _CMP_ORD_Q));
        // Clamp as the spec does (127 / amax overflows for subnormal amax).
        let s = _mm256_min_ps(
            _mm256_max_ps(s, _mm256_set1_ps(-127.0)),
            _mm256_set1_ps(127.0),
        );
        let r = _mm256_round_ps(s, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        iv[i] = _mm256_cvtps_epi32(r);
    }
    let sum = _mm256_add_epi32(
        _mm256_add_epi32(iv[0], iv[1]),
        _mm256_add_epi32(iv[2], iv[3]),
    );
    let s128 = _mm_add_epi32(
        _mm256_castsi256_si128(sum),
        _mm256_extracti128_si256(sum, 1),
    );
    let s128 = _mm_hadd_epi32(s128, s128);
    let s128 = _mm_hadd_epi32(s128, s128);
    let total = _mm_cvtsi128_si32(s128);
    // Pack 32 × i32 → 32 × i8 (values are within ±127, so saturation never triggers), then undo
    // the lane interleaving of the pack instructions.
    let p01 = _mm256_packs_epi32(iv[0], iv[1]);
    let p23 = _mm256_packs_epi32(iv[2], iv[3]);
    let p = _mm256_packs_epi16(p01, p23);
    let p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(q as *mut __m256i, p);
    (d, total)
}

/// f16 → f32 with the F16C instruction (the `half` crate's portable conversion is far slower and
/// this runs four times per block).
#[inline]
#[target_feature(enable = "f16c")]
pub(crate) unsafe fn f16f(x: f16) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(x.to_bits() as i32)))
}

/// f32 → f16 (round to nearest even) with F16C.
#[inline]
#[target_feature(enable = "f16c")]
pub(crate) unsafe fn f32h(x: f32) -> f16 {
    f16::from_bits(
        _mm_extract_epi16::<0>(_mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(x))) as u16,
    )
}

// ---------------------------------------------------------------------------------------------
// Dot products.
// ---------------------------------------------------------------------------------------------

/// Scalar fused multiply-add.
#[inline]
#[target_feature(enable = "fma")]
unsafe fn fmas(a: f32, b: f32, c: f32) -> f32 {
    _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(a), _mm_set_ss(b), _mm_set_ss(c)))
}

// The f32 dot follows the scalar spec: 16 lanes of FMA (lanes 0–7 and 8–15 in two registers),
// folded to 8 and `hsum8`, then the tail one element at a time (fused).

#[target_feature(enable = "avx2,fma")]
unsafe fn dot_f32_impl(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    while i + 16 <= n {
        let (pa, pb) = (a.as_ptr().add(i), b.as_ptr().add(i));
        lo = _mm256_fmadd_ps(_mm256_loadu_ps(pa), _mm256_loadu_ps(pb), lo);
        hi = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(8)), _mm256_loadu_ps(pb.add(8)), hi);
        i += 16;
    }
    let mut s = hsum_ps(_mm256_add_ps(lo, hi));
    while i < n {
        s = fmas(a[i], b[i], s);
        i += 1;
    }
    s
}

/// The f16 dot in [`scalar::vec_dot_f16_f32`](crate::kernels::scalar::vec_dot_f16_f32)'s
/// order: ggml's 4 banks of 16 lanes are 8 registers here (bank j's lanes 0–7 and 8–15).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f16_f32_impl(a: &[f16], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc = [_mm256_setzero_ps(); 8];
    let mut i = 0;
    while i + 64 <= n {
        for (r, acc) in acc.iter_mut().enumerate() {
            let av = _mm256_cvtph_ps(_mm_loadu_si128(a.as_ptr().add(i + 8 * r) as *const __m128i));
            *acc = _mm256_fmadd_ps(av, _mm256_loadu_ps(b.as_ptr().add(i + 8 * r)), *acc);
        }
        i += 64;
    }
    // Lanes 0–7 and 8–15 of (b0 + b2) + (b1 + b3), then the 16 lanes folded to 8 and summed.
    let lo = _mm256_add_ps(_mm256_add_ps(acc[0], acc[4]), _mm256_add_ps(acc[2], acc[6]));
    let hi = _mm256_add_ps(_mm256_add_ps(acc[1], acc[5]), _mm256_add_ps(acc[3], acc[7]));
    let mut sum = hsum_ps(_mm256_add_ps(lo, hi)) as f64;
    while i < n {
        sum += (f16f(a[i]) * b[i]) as f64;
        i += 1;
    }
    sum as f32
}

fn fma_rows(acc: &mut [f32], a: &[f32], b: &[f32], stride: usize) {
    let n = acc.len();
    if a.is_empty() || n == 0 {
        return;
    }
    assert!(stride >= n && b.len() >= (a.len() - 1) * stride + n);
    // SAFETY: AVX2+FMA checked by `kernels()`; every row i of b read below is b[i·stride..][..n],
    // in bounds by the assertion.
    unsafe { fma_rows_impl(acc, a, b, stride) }
}

/// [`scalar::fma_rows`](crate::kernels::scalar::fma_rows) with up to 64 accumulators held in
/// registers across all the rows.
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_rows_impl(acc: &mut [f32], a: &[f32], b: &[f32], stride: usize) {
    let n = acc.len();
    let (ap, bp) = (acc.as_mut_ptr(), b.as_ptr());
    let mut j0 = 0;
    while j0 + 8 <= n {
        let w = ((n - j0) / 8).min(8);
        let mut r = [_mm256_setzero_ps(); 8];
        for (k, r) in r.iter_mut().enumerate().take(w) {
            *r = _mm256_loadu_ps(ap.add(j0 + 8 * k));
        }
        for (i, &ai) in a.iter().enumerate() {
            let va = _mm256_set1_ps(ai);
            let row = bp.add(i * stride + j0);
            for (k, r) in r.iter_mut().enumerate().take(w) {
                *r = _mm256_fmadd_ps(va, _mm256_loadu_ps(row.add(8 * k)), *r);
            }
        }
        for (k, r) in r.iter().enumerate().take(w) {
            _mm256_storeu_ps(ap.add(j0 + 8 * k), *r);
        }
        j0 += 8 * w;
    }
    // The last columns (fewer than a register's worth): the scalar spec on them.
    crate::kernels::scalar::fma_rows(&mut acc[j0..], a, &b[j0..], stride);
}

#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_f32_impl(y: &mut [f32], a: f32, x: &[f32]) {
    let n = y.len().min(x.len());
    let va = _mm256_set1_ps(a);
    let mut i = 0;
    while i + 8 <= n {
        let yp = y.as_mut_ptr().add(i);
        let xv = _mm256_loadu_ps(x.as_ptr().add(i));
        _mm256_storeu_ps(yp, _mm256_fmadd_ps(va, xv, _mm256_loadu_ps(yp)));
        i += 8;
    }
    while i < n {
        y[i] = fmas(a, x[i], y[i]);
        i += 1;
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn mad_f16_impl(y: &mut [f16], x: &[f16], a: f32) {
    let n = y.len().min(x.len());
    let va = _mm256_set1_ps(a);
    let mut i = 0;
    while i + 8 <= n {
        let yp = y.as_mut_ptr().add(i) as *mut __m128i;
        let xv = _mm256_cvtph_ps(_mm_loadu_si128(x.as_ptr().add(i) as *const __m128i));
        let yv = _mm256_cvtph_ps(_mm_loadu_si128(yp));
        let r = _mm256_fmadd_ps(xv, va, yv);
        _mm_storeu_si128(yp, _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(r));
        i += 8;
    }
    while i < n {
        y[i] = f32h(libm::fmaf(f16f(x[i]), a, f16f(y[i])));
        i += 1;
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scale_f16_impl(y: &mut [f16], a: f32) {
    let n = y.len();
    let va = _mm256_set1_ps(a);
    let mut i = 0;
    while i + 8 <= n {
        let yp = y.as_mut_ptr().add(i) as *mut __m128i;
        let r = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128(yp)), va);
        _mm_storeu_si128(yp, _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(r));
        i += 8;
    }
    while i < n {
        y[i] = f32h(f16f(y[i]) * a);
        i += 1;
    }
}

/// e^x for 8 lanes, operation for operation as
/// [`scalar::exp_ggml`](crate::kernels::scalar::exp_ggml) (ggml's AVX-512 `ggml_v_expf`; the
/// final ·2ⁿ, one instruction there, is two exact-then-rounding products here).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn exp_ggml8(x: __m256) -> __m256 {
    let c = |bits: u32| _mm256_set1_ps(f32::from_bits(bits));
    let shift = _mm256_set1_ps(12_582_912.0);
    let z = _mm256_fmadd_ps(x, c(0x3fb8_aa3b), shift);
    let n = _mm256_sub_ps(z, shift);
    let b = _mm256_fnmadd_ps(n, c(0x3f31_7200), x);
    let b = _mm256_fnmadd_ps(n, c(0x35bf_be8e), b);
    let u = _mm256_mul_ps(b, b);
    let hi = _mm256_fmadd_ps(
        _mm256_fmadd_ps(c(0x3c07_2010), b, c(0x3d2b_9f17)),
        u,
        _mm256_fmadd_ps(c(0x3e2a_af33), b, c(0x3eff_fedb)),
    );
    let j = _mm256_fmadd_ps(
        hi,
        u,
        _mm256_fmadd_ps(c(0x3f7f_fff6), b, _mm256_set1_ps(1.0)),
    );
    // ·2ⁿ as (·2^(n−n/2))·2^(n/2) for |n| ≤ 192 (both powers normal: the first product is
    // exact, the second rounds once, as `vscalefps` does); NaN n (NaN x) stays NaN through j.
    let big = _mm256_cmp_ps(
        _mm256_andnot_ps(_mm256_set1_ps(-0.0), n),
        _mm256_set1_ps(192.0),
        _CMP_GT_OQ,
    );
    let nc = _mm256_min_ps(
        _mm256_max_ps(n, _mm256_set1_ps(-192.0)),
        _mm256_set1_ps(192.0),
    );
    let ni = _mm256_cvtps_epi32(nc);
    let n1 = _mm256_srai_epi32(ni, 1);
    let n2 = _mm256_sub_epi32(ni, n1);
    let pow2 = |k: __m256i| {
        _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_add_epi32(k, _mm256_set1_epi32(127)),
            23,
        ))
    };
    let res = _mm256_mul_ps(_mm256_mul_ps(j, pow2(n2)), pow2(n1));
    let nan = _mm256_cmp_ps(n, n, _CMP_UNORD_Q);
    let res = _mm256_blendv_ps(res, _mm256_set1_ps(f32::NAN), nan);
    let alt = _mm256_blendv_ps(
        _mm256_set1_ps(f32::INFINITY),
        _mm256_setzero_ps(),
        _mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_LE_OQ),
    );
    _mm256_blendv_ps(res, alt, big)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn swiglu_impl(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let one = _mm256_set1_ps(1.0);
    let mut i = 0;
    while i + 8 <= n {
        let g = _mm256_loadu_ps(gate.as_ptr().add(i));
        let u = _mm256_loadu_ps(up.as_ptr().add(i));
        let e = exp_ggml8(_mm256_sub_ps(_mm256_setzero_ps(), g));
        let silu = _mm256_div_ps(g, _mm256_add_ps(one, e));
        _mm256_storeu_ps(gate.as_mut_ptr().add(i), _mm256_mul_ps(silu, u));
        i += 8;
    }
    crate::kernels::scalar::swiglu(&mut gate[i..n], &up[i..n]);
}
