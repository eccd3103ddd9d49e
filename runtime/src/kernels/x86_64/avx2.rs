//! AVX2 + FMA + F16C kernels.

use crate::kernels::{gemm_by_rows, Isa, Kernels};
use crate::weights::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1, QK};
use core::arch::x86_64::*;
use half::f16;

/// The AVX2 table, if this CPU has AVX2, FMA and F16C.
pub fn kernels() -> Option<Kernels> {
    if !super::avx2_supported() {
        return None;
    }
    Some(Kernels {
        isa: Isa::Avx2,
        quantize_q8_0,
        quantize_q8_1,
        gemm_q4_0_q8_0: gemm_q4_0,
        gemm_q4_1_q8_1: gemm_q4_1,
        gemm_q8_0_q8_0: gemm_q8_0,
        dot_f32,
        dot_f16_f32,
        axpy_f16,
        axpy_f32,
        mad_f16,
        scale_f16,
    })
}

// The safe wrappers below are only placed in a table by `kernels()` after the CPU check.

fn quantize_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    let n = (x.len() / QK).min(out.len());
    for (xb, b) in x.chunks_exact(QK).zip(out.iter_mut()).take(n) {
        // SAFETY: AVX2 checked by `kernels()`; `xb` has 32 floats, `b.qs` 32 bytes.
        unsafe {
            let (d, _) = quantize_block(xb.as_ptr(), b.qs.as_mut_ptr());
            b.d = f32h(d);
        }
    }
}

fn quantize_q8_1(x: &[f32], out: &mut [BlockQ8_1]) {
    let n = (x.len() / QK).min(out.len());
    for (xb, b) in x.chunks_exact(QK).zip(out.iter_mut()).take(n) {
        // SAFETY: as above.
        unsafe {
            let (d, sum) = quantize_block(xb.as_ptr(), b.qs.as_mut_ptr());
            b.d = f32h(d);
            b.s = f32h(d * sum as f32);
        }
    }
}

fn gemm_q4_0(w: &[BlockQ4_0], x: &[BlockQ8_0], nb: usize, out: &mut [f32], s: usize) {
    // SAFETY: AVX2 checked by `kernels()`; `gemm_by_rows` passes equal-length row slices.
    gemm_by_rows(|w, x| unsafe { dot_q4_0_q8_0(w, x) }, w, x, nb, out, s)
}

fn gemm_q4_1(w: &[BlockQ4_1], x: &[BlockQ8_1], nb: usize, out: &mut [f32], s: usize) {
    // SAFETY: as above.
    gemm_by_rows(|w, x| unsafe { dot_q4_1_q8_1(w, x) }, w, x, nb, out, s)
}

fn gemm_q8_0(w: &[BlockQ8_0], x: &[BlockQ8_0], nb: usize, out: &mut [f32], s: usize) {
    // SAFETY: as above.
    gemm_by_rows(|w, x| unsafe { dot_q8_0_q8_0(w, x) }, w, x, nb, out, s)
}

fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: AVX2+FMA checked by `kernels()`.
    unsafe { dot_f32_impl(a, b) }
}

fn dot_f16_f32(a: &[f16], b: &[f32]) -> f32 {
    // SAFETY: AVX2+FMA+F16C checked by `kernels()`.
    unsafe { dot_f16_f32_impl(a, b) }
}

fn axpy_f16(y: &mut [f32], a: f32, x: &[f16]) {
    // SAFETY: as above.
    unsafe { axpy_f16_impl(y, a, x) }
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

/// Expands 16 bytes of packed nibbles to 32 bytes: low nibbles first, then high nibbles — the
/// element order of Q4 blocks.
///
/// # Safety
/// The CPU must support AVX2; `qs` must point to 16 readable bytes.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn nibbles_32(qs: *const u8) -> __m256i {
    let q = _mm_loadu_si128(qs as *const __m128i);
    let m4 = _mm_set1_epi8(0x0f);
    let lo = _mm_and_si128(q, m4);
    let hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
    _mm256_set_m128i(hi, lo)
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

/// Σ of unsigned × signed byte products as 8 i32 lanes (each lane sums 4 adjacent products).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_u8_i8(u: __m256i, s: __m256i) -> __m256i {
    // maddubs: pairs of u8*i8 summed to i16 (|15*127*2| and |128*127*2| both fit in i16).
    let p16 = _mm256_maddubs_epi16(u, s);
    _mm256_madd_epi16(p16, _mm256_set1_epi16(1))
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

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q4_1_q8_1(w: &[BlockQ4_1], x: &[BlockQ8_1]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut summs = 0.0f32;
    for (w, x) in w.iter().zip(x) {
        let wq = nibbles_32(w.qs.as_ptr());
        let xq = _mm256_loadu_si256(x.qs.as_ptr() as *const __m256i);
        let p = _mm256_cvtepi32_ps(dot_u8_i8(wq, xq));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16f(w.d) * f16f(x.d)), p, acc);
        summs += f16f(w.m) * f16f(x.s);
    }
    hsum_ps(acc) + summs
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q4_0_q8_0(w: &[BlockQ4_0], x: &[BlockQ8_0]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let eight = _mm256_set1_epi8(8);
    for (w, x) in w.iter().zip(x) {
        // (q - 8) is signed: move the sign onto the activations so maddubs sees |q - 8| as u8.
        let wq = _mm256_sub_epi8(nibbles_32(w.qs.as_ptr()), eight);
        let xq = _mm256_loadu_si256(x.qs.as_ptr() as *const __m256i);
        let p = dot_u8_i8(_mm256_sign_epi8(wq, wq), _mm256_sign_epi8(xq, wq));
        acc = _mm256_fmadd_ps(
            _mm256_set1_ps(f16f(w.d) * f16f(x.d)),
            _mm256_cvtepi32_ps(p),
            acc,
        );
    }
    hsum_ps(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q8_0_q8_0(w: &[BlockQ8_0], x: &[BlockQ8_0]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (w, x) in w.iter().zip(x) {
        let wq = _mm256_loadu_si256(w.qs.as_ptr() as *const __m256i);
        let xq = _mm256_loadu_si256(x.qs.as_ptr() as *const __m256i);
        // |w| as u8 (even -128 → 128), sign moved onto x (never -128: activations are ±127).
        let p = dot_u8_i8(_mm256_sign_epi8(wq, wq), _mm256_sign_epi8(xq, wq));
        acc = _mm256_fmadd_ps(
            _mm256_set1_ps(f16f(w.d) * f16f(x.d)),
            _mm256_cvtepi32_ps(p),
            acc,
        );
    }
    hsum_ps(acc)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn dot_f32_impl(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc = [_mm256_setzero_ps(); 2];
    let mut i = 0;
    while i + 16 <= n {
        acc[0] = _mm256_fmadd_ps(
            _mm256_loadu_ps(a.as_ptr().add(i)),
            _mm256_loadu_ps(b.as_ptr().add(i)),
            acc[0],
        );
        acc[1] = _mm256_fmadd_ps(
            _mm256_loadu_ps(a.as_ptr().add(i + 8)),
            _mm256_loadu_ps(b.as_ptr().add(i + 8)),
            acc[1],
        );
        i += 16;
    }
    let mut s = hsum_ps(_mm256_add_ps(acc[0], acc[1]));
    while i < n {
        s += a[i] * b[i];
        i += 1;
    }
    s
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f16_f32_impl(a: &[f16], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc = [_mm256_setzero_ps(); 2];
    let mut i = 0;
    while i + 16 <= n {
        let a0 = _mm256_cvtph_ps(_mm_loadu_si128(a.as_ptr().add(i) as *const __m128i));
        let a1 = _mm256_cvtph_ps(_mm_loadu_si128(a.as_ptr().add(i + 8) as *const __m128i));
        acc[0] = _mm256_fmadd_ps(a0, _mm256_loadu_ps(b.as_ptr().add(i)), acc[0]);
        acc[1] = _mm256_fmadd_ps(a1, _mm256_loadu_ps(b.as_ptr().add(i + 8)), acc[1]);
        i += 16;
    }
    let mut s = hsum_ps(_mm256_add_ps(acc[0], acc[1]));
    while i < n {
        s += a[i].to_f32() * b[i];
        i += 1;
    }
    s
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn axpy_f16_impl(y: &mut [f32], a: f32, x: &[f16]) {
    let n = y.len().min(x.len());
    let va = _mm256_set1_ps(a);
    let mut i = 0;
    while i + 8 <= n {
        let xv = _mm256_cvtph_ps(_mm_loadu_si128(x.as_ptr().add(i) as *const __m128i));
        let yp = y.as_mut_ptr().add(i);
        _mm256_storeu_ps(yp, _mm256_fmadd_ps(va, xv, _mm256_loadu_ps(yp)));
        i += 8;
    }
    while i < n {
        y[i] += a * x[i].to_f32();
        i += 1;
    }
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
        y[i] += a * x[i];
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
