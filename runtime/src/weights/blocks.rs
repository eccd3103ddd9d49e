//! Block layouts of the quantized formats, byte for byte as GGUF stores them, and their scalar
//! dequantize / quantize routines (the reference every SIMD kernel is tested against).

use bytemuck::{Pod, Zeroable};
use half::f16;

/// Elements per block for Q4_0, Q4_1, Q8_0 and Q8_1.
pub const QK: usize = 32;

/// 4-bit weights with a scale: value = d * (q - 8). `qs[j]` holds element j in its low nibble
/// and element j + 16 in its high nibble.
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_0 {
    /// Scale.
    pub d: f16,
    /// 32 packed 4-bit quants.
    pub qs: [u8; QK / 2],
}
const _: () = assert!(core::mem::size_of::<BlockQ4_0>() == 18);

/// 4-bit weights with scale and minimum: value = d * q + m, same nibble order as Q4_0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_1 {
    /// Scale.
    pub d: f16,
    /// Minimum (offset).
    pub m: f16,
    /// 32 packed 4-bit quants.
    pub qs: [u8; QK / 2],
}
const _: () = assert!(core::mem::size_of::<BlockQ4_1>() == 20);

/// 8-bit weights or activations with a scale: value = d * q.
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8_0 {
    /// Scale.
    pub d: f16,
    /// 32 signed quants.
    pub qs: [i8; QK],
}
const _: () = assert!(core::mem::size_of::<BlockQ8_0>() == 34);

impl Default for BlockQ8_0 {
    fn default() -> Self {
        Self::zeroed()
    }
}

/// 8-bit activations paired with Q4_1 weights: like Q8_0 plus `s = d * Σq`, which folds the
/// weight block's minimum into one multiply: Σ(d_w q_w + m_w)(d_x q_x) = d_w d_x Σq_w q_x + m_w s.
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8_1 {
    /// Scale.
    pub d: f16,
    /// d times the sum of the quants.
    pub s: f16,
    /// 32 signed quants.
    pub qs: [i8; QK],
}
const _: () = assert!(core::mem::size_of::<BlockQ8_1>() == 36);

impl Default for BlockQ8_1 {
    fn default() -> Self {
        Self::zeroed()
    }
}

/// Dequantizes Q4_0 blocks into `out` (32 values per block).
pub fn dequantize_q4_0(blocks: &[BlockQ4_0], out: &mut [f32]) {
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        for j in 0..QK / 2 {
            o[j] = d * ((b.qs[j] & 0x0f) as i32 - 8) as f32;
            o[j + QK / 2] = d * ((b.qs[j] >> 4) as i32 - 8) as f32;
        }
    }
}

/// Dequantizes Q4_1 blocks into `out`.
pub fn dequantize_q4_1(blocks: &[BlockQ4_1], out: &mut [f32]) {
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let (d, m) = (b.d.to_f32(), b.m.to_f32());
        for j in 0..QK / 2 {
            o[j] = (b.qs[j] & 0x0f) as f32 * d + m;
            o[j + QK / 2] = (b.qs[j] >> 4) as f32 * d + m;
        }
    }
}

/// Dequantizes Q8_0 blocks into `out`.
pub fn dequantize_q8_0(blocks: &[BlockQ8_0], out: &mut [f32]) {
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        for (o, &q) in o.iter_mut().zip(&b.qs) {
            *o = q as f32 * d;
        }
    }
}

/// Quantizes `x` (32 values per block) into Q8_0 blocks as activations are quantized
/// ([`crate::kernels::scalar::quantize_row`]: scale amax/127 rounded to f16, ties-to-even quants).
pub fn quantize_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    for (b, xb) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let (mut d, mut sum) = ([0.0f32], [0.0f32]);
        crate::kernels::scalar::quantize_row(xb, &mut b.qs, &mut d, &mut sum);
        b.d = f16::from_f32(d[0]);
    }
}

/// Rounds to the nearest integer, ties to even (what SIMD conversions do on every ISA).
#[inline]
pub fn round_even(x: f32) -> f32 {
    libm::rintf(x)
}
