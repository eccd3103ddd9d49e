//! AVX-512 kernels with VNNI: `vpdpbusd` multiplies unsigned 4-bit weights by signed 8-bit
//! activations and accumulates in one instruction, two 32-element blocks per 512-bit register.

use super::avx2;
use crate::kernels::{gemm_by_rows, Isa, Kernels};
use crate::weights::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1};
use core::arch::x86_64::*;

/// The AVX-512 VNNI table, if this CPU has it.
pub fn kernels() -> Option<Kernels> {
    if !super::avx512_vnni_supported() {
        return None;
    }
    // Activation quantization and the f32/f16 vector ops are memory-bound at these sizes; the
    // AVX2 versions are reused.
    let base = avx2::kernels()?;
    Some(Kernels {
        isa: Isa::Avx512Vnni,
        gemm_q4_0_q8_0: gemm_q4_0,
        gemm_q4_1_q8_1: gemm_q4_1,
        gemm_q8_0_q8_0: gemm_q8_0,
        ..base
    })
}

fn gemm_q4_0(w: &[BlockQ4_0], x: &[BlockQ8_0], nb: usize, out: &mut [f32], s: usize) {
    // SAFETY: AVX-512 VNNI checked by `kernels()`; rows are equal-length slices.
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

use avx2::f16f;

/// Two blocks' scales spread over the 8+8 lanes of a 512-bit register.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn scales2(a: f32, b: f32) -> __m512 {
    _mm512_insertf32x8(
        _mm512_castps256_ps512(_mm256_set1_ps(a)),
        _mm256_set1_ps(b),
        1,
    )
}

#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,f16c")]
unsafe fn dot_q4_1_q8_1(w: &[BlockQ4_1], x: &[BlockQ8_1]) -> f32 {
    let n = w.len().min(x.len());
    let mut acc = _mm512_setzero_ps();
    let mut summs = 0.0f32;
    let mut i = 0;
    while i + 2 <= n {
        let (w0, w1, x0, x1) = (&w[i], &w[i + 1], &x[i], &x[i + 1]);
        let wq = _mm512_inserti64x4(
            _mm512_castsi256_si512(avx2::nibbles_32(w0.qs.as_ptr())),
            avx2::nibbles_32(w1.qs.as_ptr()),
            1,
        );
        let xq = _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm256_loadu_si256(x0.qs.as_ptr() as *const __m256i)),
            _mm256_loadu_si256(x1.qs.as_ptr() as *const __m256i),
            1,
        );
        let p = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), wq, xq));
        let d = scales2(f16f(w0.d) * f16f(x0.d), f16f(w1.d) * f16f(x1.d));
        acc = _mm512_fmadd_ps(d, p, acc);
        summs += f16f(w0.m) * f16f(x0.s) + f16f(w1.m) * f16f(x1.s);
        i += 2;
    }
    let mut sum = _mm512_reduce_add_ps(acc) + summs;
    if i < n {
        sum += dot_q4_1_q8_1_256(&w[i..n], &x[i..n]);
    }
    sum
}

/// One block at a time with 256-bit VNNI (odd tails).
#[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512vnni,f16c")]
unsafe fn dot_q4_1_q8_1_256(w: &[BlockQ4_1], x: &[BlockQ8_1]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut summs = 0.0f32;
    for (w, x) in w.iter().zip(x) {
        let wq = avx2::nibbles_32(w.qs.as_ptr());
        let xq = _mm256_loadu_si256(x.qs.as_ptr() as *const __m256i);
        let p = _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), wq, xq));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16f(w.d) * f16f(x.d)), p, acc);
        summs += f16f(w.m) * f16f(x.s);
    }
    avx2::hsum_ps(acc) + summs
}

#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni,f16c")]
unsafe fn dot_q4_0_q8_0(w: &[BlockQ4_0], x: &[BlockQ8_0]) -> f32 {
    // Σ(q - 8)·y = Σq·y - 8·Σy: the unsigned nibbles go straight into vpdpbusd, and Σy comes from
    // a second vpdpbusd against a vector of ones.
    let mut acc = _mm256_setzero_ps();
    let ones = _mm256_set1_epi8(1);
    for (w, x) in w.iter().zip(x) {
        let wq = avx2::nibbles_32(w.qs.as_ptr());
        let xq = _mm256_loadu_si256(x.qs.as_ptr() as *const __m256i);
        let qy = _mm256_dpbusd_epi32(_mm256_setzero_si256(), wq, xq);
        let sy = _mm256_dpbusd_epi32(_mm256_setzero_si256(), ones, xq);
        let p = _mm256_sub_epi32(qy, _mm256_slli_epi32(sy, 3));
        acc = _mm256_fmadd_ps(
            _mm256_set1_ps(f16f(w.d) * f16f(x.d)),
            _mm256_cvtepi32_ps(p),
            acc,
        );
    }
    avx2::hsum_ps(acc)
}

#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni,f16c")]
unsafe fn dot_q8_0_q8_0(w: &[BlockQ8_0], x: &[BlockQ8_0]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (w, x) in w.iter().zip(x) {
        let wq = _mm256_loadu_si256(w.qs.as_ptr() as *const __m256i);
        let xq = _mm256_loadu_si256(x.qs.as_ptr() as *const __m256i);
        // |w| as u8, sign moved onto the activations (never -128).
        let p = _mm256_dpbusd_epi32(
            _mm256_setzero_si256(),
            _mm256_abs_epi8(wq),
            _mm256_sign_epi8(xq, wq),
        );
        acc = _mm256_fmadd_ps(
            _mm256_set1_ps(f16f(w.d) * f16f(x.d)),
            _mm256_cvtepi32_ps(p),
            acc,
        );
    }
    avx2::hsum_ps(acc)
}
