//! The scalar kernels: plain Rust, no intrinsics, written to be read. They are the spec — every
//! SIMD kernel is tested against these — and the fallback on CPUs without a faster set.

use crate::weights::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1, QK};
use half::f16;

/// Σ over blocks of d_w d_x Σ (q_w - 8) q_x.
pub fn vec_dot_q4_0_q8_0(w: &[BlockQ4_0], x: &[BlockQ8_0]) -> f32 {
    let mut sum = 0.0f32;
    for (w, x) in w.iter().zip(x) {
        let mut sumi = 0i32;
        for j in 0..QK / 2 {
            let lo = (w.qs[j] & 0x0f) as i32 - 8;
            let hi = (w.qs[j] >> 4) as i32 - 8;
            sumi += lo * x.qs[j] as i32 + hi * x.qs[j + QK / 2] as i32;
        }
        sum += w.d.to_f32() * x.d.to_f32() * sumi as f32;
    }
    sum
}

/// Σ over blocks of d_w d_x Σ q_w q_x + m_w s_x.
pub fn vec_dot_q4_1_q8_1(w: &[BlockQ4_1], x: &[BlockQ8_1]) -> f32 {
    let mut sum = 0.0f32;
    for (w, x) in w.iter().zip(x) {
        let mut sumi = 0i32;
        for j in 0..QK / 2 {
            let lo = (w.qs[j] & 0x0f) as i32;
            let hi = (w.qs[j] >> 4) as i32;
            sumi += lo * x.qs[j] as i32 + hi * x.qs[j + QK / 2] as i32;
        }
        sum += w.d.to_f32() * x.d.to_f32() * sumi as f32 + w.m.to_f32() * x.s.to_f32();
    }
    sum
}

/// Σ over blocks of d_w d_x Σ q_w q_x.
pub fn vec_dot_q8_0_q8_0(w: &[BlockQ8_0], x: &[BlockQ8_0]) -> f32 {
    let mut sum = 0.0f32;
    for (w, x) in w.iter().zip(x) {
        let sumi: i32 =
            w.qs.iter()
                .zip(&x.qs)
                .map(|(&a, &b)| a as i32 * b as i32)
                .sum();
        sum += w.d.to_f32() * x.d.to_f32() * sumi as f32;
    }
    sum
}

/// Σ a_i b_i in f32.
pub fn vec_dot_f32(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(&a, &b)| a * b).sum()
}

/// Σ a_i b_i with `a` in f16, accumulated in f32.
pub fn vec_dot_f16_f32(a: &[f16], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(&a, &b)| a.to_f32() * b).sum()
}

/// y += a * x, with `x` in f16.
pub fn axpy_f16(y: &mut [f32], a: f32, x: &[f16]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += a * x.to_f32();
    }
}

/// y += a * x.
pub fn axpy_f32(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// y = f16(x·a + y), fused multiply-add then one rounding to f16 per element: the f16 running sum
/// of attention over an f16 value cache (as llama.cpp's flash attention keeps it).
pub fn mad_f16(y: &mut [f16], x: &[f16], a: f32) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = f16::from_f32(libm::fmaf(x.to_f32(), a, y.to_f32()));
    }
}

/// y = f16(y·a).
pub fn scale_f16(y: &mut [f16], a: f32) {
    for y in y.iter_mut() {
        *y = f16::from_f32(y.to_f32() * a);
    }
}
