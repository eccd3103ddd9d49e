//! Quantizing rows of f32 to the block formats, with the rounding of ggml's reference
//! quantizers (`quantize_row_*_ref`, what `llama-quantize` uses without an importance matrix):
//! the same input gives the same bytes.
//!
//! These differ on purpose from the runtime's activation quantizer (`ember_runtime::weights::
//! blocks::quantize_q8_0`, ties to even, as the SIMD kernels round): model files are made with
//! the reference rounding (half away from zero for Q8_0, truncation after +0.5/+8.5 for Q4_x).

use ember_runtime::weights::blocks::{BlockQ4_0, BlockQ4_1, BlockQ8_0, QK};
use half::f16;

/// Q8_0: per block of 32, scale amax/127, quants round(x/scale) half away from zero.
pub fn quantize_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    for (b, xb) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16::from_f32(d);
        for (q, &v) in b.qs.iter_mut().zip(xb) {
            *q = (v * id).round() as i8;
        }
    }
}

/// The first value of largest magnitude in `x` (its sign kept) and that magnitude (0, 0 for an
/// empty or all-zero `x`): the reference quantizers' `max`/`amax` search.
pub(crate) fn signed_max(x: &[f32]) -> (f32, f32) {
    let (mut max, mut amax) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

/// Q4_0: per block, the value of largest magnitude maps to -8; quants min(15, trunc(x/d + 8.5)).
pub fn quantize_q4_0(x: &[f32], out: &mut [BlockQ4_0]) {
    for (b, xb) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let (max, _) = signed_max(xb);
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16::from_f32(d);
        for j in 0..QK / 2 {
            let lo = ((xb[j] * id + 8.5) as i8).min(15) as u8;
            let hi = ((xb[j + QK / 2] * id + 8.5) as i8).min(15) as u8;
            b.qs[j] = lo | (hi << 4);
        }
    }
}

/// Q4_1: per block, scale (max-min)/15 and offset min; quants min(15, trunc((x-min)/d + 0.5)).
pub fn quantize_q4_1(x: &[f32], out: &mut [BlockQ4_1]) {
    for (b, xb) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let (mut min, mut max) = (f32::MAX, -f32::MAX);
        for &v in xb {
            if v < min {
                min = v;
            }
            if v > max {
                max = v;
            }
        }
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16::from_f32(d);
        b.m = f16::from_f32(min);
        for j in 0..QK / 2 {
            let lo = (((xb[j] - min) * id + 0.5) as i8).min(15) as u8;
            let hi = (((xb[j + QK / 2] - min) * id + 0.5) as i8).min(15) as u8;
            b.qs[j] = lo | (hi << 4);
        }
    }
}

/// F16, rounded to nearest even (as ggml's conversion).
pub fn to_f16(x: &[f32], out: &mut [f16]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = f16::from_f32(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_runtime::weights::blocks::{dequantize_q4_0, dequantize_q4_1, dequantize_q8_0};

    fn data(seed: u32, n: usize) -> Vec<f32> {
        crate::test_data(seed, n, 4.0)
    }

    /// Dequantized values are within half a step of the input, plus what storing the scale as
    /// f16 costs (up to 127 steps × 2⁻¹¹ relative).
    #[test]
    fn round_trip_errors_are_within_half_a_step() {
        let x = data(7, 32 * 64);
        let mut q8 = vec![BlockQ8_0::default(); 64];
        quantize_q8_0(&x, &mut q8);
        let mut y = vec![0.0; x.len()];
        dequantize_q8_0(&q8, &mut y);
        for (b, (xs, ys)) in q8.iter().zip(x.chunks(32).zip(y.chunks(32))) {
            let d = b.d.to_f32();
            for (a, c) in xs.iter().zip(ys) {
                assert!((a - c).abs() <= (0.5 + 127.0 / 2048.0) * d + 1e-6);
            }
        }
        let mut q4 = vec![BlockQ4_1::default(); 64];
        quantize_q4_1(&x, &mut q4);
        dequantize_q4_1(&q4, &mut y);
        for (b, (xs, ys)) in q4.iter().zip(x.chunks(32).zip(y.chunks(32))) {
            let d = b.d.to_f32();
            for (a, c) in xs.iter().zip(ys) {
                assert!((a - c).abs() <= 0.5 * d * 1.05 + 1e-3, "{a} {c} {d}");
            }
        }
        let mut q40 = vec![BlockQ4_0::default(); 64];
        quantize_q4_0(&x, &mut q40);
        dequantize_q4_0(&q40, &mut y);
        for (b, (xs, ys)) in q40.iter().zip(x.chunks(32).zip(y.chunks(32))) {
            let d = b.d.to_f32().abs();
            for (a, c) in xs.iter().zip(ys) {
                assert!((a - c).abs() <= 0.5 * d * 1.05 + 1e-3 || (a - c).abs() <= d * 1.05);
            }
        }
    }

    #[test]
    fn reference_rounding_on_known_values() {
        // Q8_0: amax 127 → d = 1; 2.5 rounds away from zero to 3, -2.5 to -3.
        let mut x = vec![0.0f32; 32];
        x[0] = 127.0;
        x[1] = 2.5;
        x[2] = -2.5;
        x[3] = 0.49;
        let mut b = [BlockQ8_0::default()];
        quantize_q8_0(&x, &mut b);
        assert_eq!(&b[0].qs[..4], &[127, 3, -3, 0]);
        // Q4_0: the largest magnitude is negative (-8) → d = 1, it maps to quant 0; 7 → 15.
        let mut x = vec![0.0f32; 32];
        x[0] = -8.0;
        x[1] = 7.0;
        x[2] = 0.4;
        let mut b = [BlockQ4_0::default()];
        quantize_q4_0(&x, &mut b);
        assert_eq!(b[0].d.to_f32(), 1.0);
        assert_eq!(b[0].qs[0] & 15, 0);
        assert_eq!(b[0].qs[1] & 15, 15);
        assert_eq!(b[0].qs[2] & 15, 8);
        // All zeros: scale 0, quants at the zero point.
        let mut b = [BlockQ4_0::default()];
        quantize_q4_0(&[0.0; 32], &mut b);
        assert_eq!((b[0].d.to_f32(), b[0].qs[0]), (0.0, 0x88));
        let mut b = [BlockQ4_1::default()];
        quantize_q4_1(&[1.5; 32], &mut b);
        assert_eq!(
            (b[0].d.to_f32(), b[0].m.to_f32(), b[0].qs[0]),
            (0.0, 1.5, 0)
        );
    }
}
