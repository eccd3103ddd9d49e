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
        quantize,
        gemm_q4_0,
        gemm_q4_1,
        gemm_q8_0,
        dot_f32,
        dot_f16_f32,
        axpy_f32,
        mad_f16,
        scale_f16,
        swiglu,
        exp_inplace,
        mad_q8_0,
    })
}

fn exp_inplace(x: &mut [f32]) {
    let n = x.len() - x.len() % 8;
    for c in x[..n].chunks_exact_mut(8) {
        // SAFETY: AVX2+FMA checked by `kernels()`; 8 floats in bounds.
        unsafe { _mm256_storeu_ps(c.as_mut_ptr(), exp8(_mm256_loadu_ps(c.as_ptr()))) };
    }
    crate::kernels::attend::exp_inplace_scalar(&mut x[n..]);
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

// The f32 and f16 dots follow the scalar spec: one 8-lane FMA accumulator, `hsum8`, then the
// tail one element at a time (fused).

#[target_feature(enable = "avx2,fma")]
unsafe fn dot_f32_impl(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= n {
        acc = _mm256_fmadd_ps(
            _mm256_loadu_ps(a.as_ptr().add(i)),
            _mm256_loadu_ps(b.as_ptr().add(i)),
            acc,
        );
        i += 8;
    }
    let mut s = hsum_ps(acc);
    while i < n {
        s = fmas(a[i], b[i], s);
        i += 1;
    }
    s
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f16_f32_impl(a: &[f16], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= n {
        let av = _mm256_cvtph_ps(_mm_loadu_si128(a.as_ptr().add(i) as *const __m128i));
        acc = _mm256_fmadd_ps(av, _mm256_loadu_ps(b.as_ptr().add(i)), acc);
        i += 8;
    }
    let mut s = hsum_ps(acc);
    while i < n {
        s = fmas(f16f(a[i]), b[i], s);
        i += 1;
    }
    s
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

/// e^x for 8 lanes, operation for operation as [`scalar::exp`](crate::kernels::scalar::exp).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn exp8(x: __m256) -> __m256 {
    use crate::kernels::scalar::{EXP_HI, EXP_LO, EXP_POLY};
    let nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    let xc = _mm256_min_ps(
        _mm256_max_ps(x, _mm256_set1_ps(EXP_LO)),
        _mm256_set1_ps(EXP_HI),
    );
    let n = _mm256_round_ps(
        _mm256_mul_ps(xc, _mm256_set1_ps(core::f32::consts::LOG2_E)),
        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
    );
    let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-0.693_145_75), xc);
    let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-1.428_606_8e-6), r);
    let mut p = _mm256_set1_ps(EXP_POLY[0]);
    for &c in &EXP_POLY[1..] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let one = _mm256_set1_ps(1.0);
    let p = _mm256_fmadd_ps(p, r, one);
    let p = _mm256_fmadd_ps(p, r, one);
    let ni = _mm256_cvtps_epi32(n);
    let n1 = _mm256_srai_epi32(ni, 1);
    let n2 = _mm256_sub_epi32(ni, n1);
    let pow2 = |k: __m256i| {
        _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_add_epi32(k, _mm256_set1_epi32(127)),
            23,
        ))
    };
    let res = _mm256_mul_ps(_mm256_mul_ps(p, pow2(n1)), pow2(n2));
    _mm256_blendv_ps(res, x, nan)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn swiglu_impl(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let one = _mm256_set1_ps(1.0);
    let sign = _mm256_set1_ps(-0.0);
    let mut i = 0;
    while i + 8 <= n {
        let g = _mm256_loadu_ps(gate.as_ptr().add(i));
        let u = _mm256_loadu_ps(up.as_ptr().add(i));
        let e = exp8(_mm256_xor_ps(g, sign));
        let silu = _mm256_div_ps(g, _mm256_add_ps(one, e));
        _mm256_storeu_ps(gate.as_mut_ptr().add(i), _mm256_mul_ps(silu, u));
        i += 8;
    }
    crate::kernels::scalar::swiglu(&mut gate[i..n], &up[i..n]);
}
