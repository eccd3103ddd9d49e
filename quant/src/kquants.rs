//! f32 rows to the 5-bit, K and IQ4_NL formats, with the arithmetic of ggml's quantizers without
//! an importance matrix (what `llama-quantize` runs): `quantize_row_{q5_0,q5_1,q4_K,q5_K,q6_K}_ref`
//! and `quantize_iq4_nl` (its seven-step scale search). The same input gives the same bytes.
//!
//! Byte identity needs the same float operations in the same order: every sum below runs left to
//! right over the elements as ggml's loops do, products associate as C parses them (`w*x*l` is
//! `(w·x)·l`), nothing is fused, and rounding to the nearest integer uses ggml's addition trick
//! (the runtime's `quants::nearest_int`), whose result for out-of-range inputs is kept too.
//! ggml's reference code is compiled for baseline x86-64 (no FMA to contract into), so this is
//! the arithmetic it does.

use crate::formats::signed_max;
use ember_runtime::weights::quants::{
    nearest_int, BlockIq4Nl, BlockQ4K, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, IQ4_GRID, QK5,
    QK_K,
};
use half::f16;

/// Below this largest magnitude a group counts as all zero (ggml's `GROUP_MAX_EPS`).
const GROUP_MAX_EPS: f32 = 1e-15;

/// The index of the grid value nearest `x` (the upper one on a tie), by bisection.
fn nearest_grid(grid: &[i8; 16], x: f32) -> usize {
    if x <= grid[0] as f32 {
        return 0;
    }
    if x >= grid[15] as f32 {
        return 15;
    }
    let (mut lo, mut hi) = (0usize, 15usize);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if x < grid[mid] as f32 {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    if x - (grid[hi - 1] as f32) < grid[hi] as f32 - x {
        hi - 1
    } else {
        hi
    }
}

/// Q5_0: the value of largest magnitude maps to −16; quants min(31, trunc(x/d + 16.5)).
pub fn quantize_q5_0(x: &[f32], out: &mut [BlockQ5_0]) {
    for (b, xb) in out.iter_mut().zip(x.chunks_exact(QK5)) {
        let (max, _) = signed_max(xb);
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16::from_f32(d);
        let q: [u8; QK5] = core::array::from_fn(|j| ((xb[j] * id + 16.5) as i8).min(31) as u8);
        pack5(&q, &mut b.qs, &mut b.qh);
    }
}

/// Q5_1: scale (max − min)/31 and offset min; quants trunc((x − min)/d + 0.5).
pub fn quantize_q5_1(x: &[f32], out: &mut [BlockQ5_1]) {
    for (b, xb) in out.iter_mut().zip(x.chunks_exact(QK5)) {
        let (mut min, mut max) = (f32::MAX, -f32::MAX);
        for &v in xb {
            if v < min {
                min = v;
            }
            if v > max {
                max = v;
            }
        }
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16::from_f32(d);
        b.m = f16::from_f32(min);
        let q: [u8; QK5] = core::array::from_fn(|j| ((xb[j] - min) * id + 0.5) as u8);
        pack5(&q, &mut b.qs, &mut b.qh);
    }
}

/// Low nibbles of elements j and j + 16 in byte j; fifth bits in a little-endian u32.
fn pack5(q: &[u8; QK5], qs: &mut [u8; QK5 / 2], qh: &mut [u8; 4]) {
    let mut h = 0u32;
    for j in 0..QK5 / 2 {
        let (a, b) = (q[j], q[j + QK5 / 2]);
        qs[j] = (a & 0x0f) | ((b & 0x0f) << 4);
        h |= (((a & 0x10) >> 4) as u32) << j;
        h |= (((b & 0x10) >> 4) as u32) << (j + QK5 / 2);
    }
    *qh = h.to_le_bytes();
}

/// IQ4_NL: for each block of 32, the scale whose weighted (by x²) fit of `x` by grid values is
/// best among the first guess (largest magnitude ↦ −127) and 15 guesses around it.
pub fn quantize_iq4_nl(x: &[f32], out: &mut [BlockIq4Nl]) {
    const NTRY: i32 = 7;
    let grid = &IQ4_GRID;
    for (b, xb) in out.iter_mut().zip(x.chunks_exact(QK5)) {
        let w: [f32; QK5] = core::array::from_fn(|j| xb[j] * xb[j]);
        // The weighted least-squares fit of xb by the grid values nearest id·xb.
        let fit = |id: f32| {
            let (mut sqx, mut sq2) = (0.0f32, 0.0f32);
            for (&v, &w) in xb.iter().zip(&w) {
                let q = grid[nearest_grid(grid, id * v)] as f32;
                sqx += w * q * v;
                sq2 += w * q * q;
            }
            (sqx, sq2)
        };
        let (max, amax) = signed_max(xb);
        let scale = if amax < GROUP_MAX_EPS {
            0.0
        } else {
            let d = -max / grid[0] as f32;
            let (sqx, sq2) = fit(1.0 / d);
            let mut d = if sq2 > 0.0 { sqx / sq2 } else { 0.0 };
            let mut best = d * sqx;
            for t in -NTRY..=NTRY {
                let (sqx, sq2) = fit((t + grid[0] as i32) as f32 / max);
                if sq2 > 0.0 && sqx * sqx > best * sq2 {
                    d = sqx / sq2;
                    best = d * sqx;
                }
            }
            d
        };
        b.d = f16::from_f32(scale);
        let id = if scale != 0.0 { 1.0 / scale } else { 0.0 };
        let l: [u8; QK5] = core::array::from_fn(|j| nearest_grid(grid, id * xb[j]) as u8);
        for j in 0..QK5 / 2 {
            b.qs[j] = l[j] | (l[j + QK5 / 2] << 4);
        }
    }
}

/// The asymmetric fit of one group of 32 (ggml's `make_qkx2_quants`, squared error): quants
/// `l` in 0..=nmax with `x ≈ scale·l − m`, weighted by `w`, trying `nstep + 1` scales from
/// `(nmax + rmin)/(max − min)` in steps of 0.1/(max − min). Returns (scale, m) and fills `l`.
fn fit_scale_min(
    x: &[f32; 32],
    w: &[f32; 32],
    nmax: i32,
    rmin: f32,
    nstep: i32,
    l: &mut [u8],
) -> (f32, f32) {
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = w[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..32 {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l[..32].fill(0);
        return (0.0, -min);
    }
    let quant = |iscale: f32, min: f32, v: f32| nearest_int(iscale * (v - min)).clamp(0, nmax);
    let error = |scale: f32, min: f32, l: &[u8]| {
        let mut e = 0.0f32;
        for i in 0..32 {
            let diff = scale * l[i] as f32 + min - x[i];
            e += w[i] * (diff * diff);
        }
        e
    };
    let iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    for i in 0..32 {
        l[i] = quant(iscale, min, x[i]) as u8;
    }
    let mut best = error(scale, min, l);
    let mut aux = [0u8; 32];
    for is in 0..=nstep {
        let iscale = (rmin + 0.1 * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..32 {
            let q = quant(iscale, min, x[i]);
            aux[i] = q as u8;
            let wl = w[i] * q as f32;
            sum_l += wl;
            sum_l2 += wl * q as f32;
            sum_xl += wl * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let e = error(this_scale, this_min, &aux);
            if e < best {
                l[..32].copy_from_slice(&aux);
                best = e;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// The shared part of Q4_K and Q5_K: each group of 32 fitted by [`fit_scale_min`] (weights
/// √mean(x²) + |x|), the eight scales and minimums as 6-bit fractions of the block's largest
/// (packed as `get_scale_min_k4` reads them), then every quant recomputed from the stored scales
/// (a group whose stored scale is 0 keeps its fitted quants). Returns (d, dmin, scales, quants).
fn k_block(x: &[f32], nmax: i32, rmin: f32, nstep: i32) -> (f16, f16, [u8; 12], [u8; QK_K]) {
    let mut l = [0u8; QK_K];
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..8 {
        let xg: &[f32; 32] = x[32 * j..32 * j + 32].try_into().expect("32 values");
        let mut sum_x2 = 0.0f32;
        for &v in xg {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        let w: [f32; 32] = core::array::from_fn(|i| av_x + xg[i].abs());
        (scales[j], mins[j]) = fit_scale_min(xg, &w, nmax, rmin, nstep, &mut l[32 * j..]);
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut packed = [0u8; 12];
    for j in 0..8 {
        // ggml stores the rounded value in a byte (wrapping) before clamping it to 63.
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            packed[j] = ls;
            packed[j + 4] = lm;
        } else {
            packed[j + 4] = (ls & 0x0f) | ((lm & 0x0f) << 4);
            packed[j - 4] |= (ls >> 4) << 6;
            packed[j] |= (lm >> 4) << 6;
        }
    }
    let d = f16::from_f32(max_scale / 63.0);
    let dmin = f16::from_f32(max_min / 63.0);
    for j in 0..8 {
        let (sc, m) = ember_runtime::weights::quants::scale_min_k4(j, &packed);
        let dj = d.to_f32() * sc as f32;
        if dj == 0.0 {
            continue;
        }
        let dm = dmin.to_f32() * m as f32;
        for i in 32 * j..32 * j + 32 {
            l[i] = nearest_int((x[i] + dm) / dj).clamp(0, nmax) as u8;
        }
    }
    (d, dmin, packed, l)
}

/// Q4_K: 8 groups of 32 with 6-bit scales and minimums (ggml's `quantize_row_q4_K_ref`).
pub fn quantize_q4_k(x: &[f32], out: &mut [BlockQ4K]) {
    for (b, xb) in out.iter_mut().zip(x.chunks_exact(QK_K)) {
        let (d, dmin, scales, l) = k_block(xb, 15, -1.0, 20);
        b.d = d;
        b.dmin = dmin;
        b.scales = scales;
        for (c, run) in b.qs.chunks_exact_mut(32).enumerate() {
            for (i, q) in run.iter_mut().enumerate() {
                *q = l[64 * c + i] | (l[64 * c + 32 + i] << 4);
            }
        }
    }
}

/// Q5_K: Q4_K with 5-bit quants, the fifth bits in `qh` (ggml's `quantize_row_q5_K_ref`).
pub fn quantize_q5_k(x: &[f32], out: &mut [BlockQ5K]) {
    for (b, xb) in out.iter_mut().zip(x.chunks_exact(QK_K)) {
        let (d, dmin, scales, l) = k_block(xb, 31, -0.5, 15);
        b.d = d;
        b.dmin = dmin;
        b.scales = scales;
        b.qh = [0; QK_K / 8];
        for (c, run) in b.qs.chunks_exact_mut(32).enumerate() {
            for (i, q) in run.iter_mut().enumerate() {
                let (lo, hi) = (l[64 * c + i], l[64 * c + 32 + i]);
                b.qh[i] |= ((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1));
                *q = (lo & 0x0f) | ((hi & 0x0f) << 4);
            }
        }
    }
}

/// The symmetric fit of one group of 16 (ggml's `make_qx_quants` with weights x²): quants in
/// −32..=31 stored +32 in `l`, trying the scale that maps the largest magnitude to −32 and 18
/// neighbours. Returns the scale.
fn fit_scale_q6(x: &[f32], l: &mut [i8]) -> f32 {
    let (max, amax) = signed_max(x);
    if amax < GROUP_MAX_EPS {
        l[..16].fill(0);
        return 0.0;
    }
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for &v in &x[..16] {
            let q = nearest_int(iscale * v).clamp(-32, 31) as f32;
            let w = v * v;
            sumlx += w * v * q;
            suml2 += w * q * q;
        }
        (sumlx, suml2)
    };
    let store = |iscale: f32, l: &mut [i8]| {
        for (l, &v) in l.iter_mut().zip(&x[..16]) {
            *l = (nearest_int(iscale * v).clamp(-32, 31) + 32) as i8;
        }
    };
    let iscale = -32.0 / max;
    store(iscale, l);
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in (-9..=9).filter(|&i| i != 0) {
        let iscale = -(32.0 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            store(iscale, l);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Q6_K: 16 groups of 16 with signed 8-bit scales (ggml's `quantize_row_q6_K_ref`).
pub fn quantize_q6_k(x: &[f32], out: &mut [BlockQ6K]) {
    for (b, xb) in out.iter_mut().zip(x.chunks_exact(QK_K)) {
        let mut l = [0i8; QK_K];
        let mut scales = [0.0f32; QK_K / 16];
        let (mut max_scale, mut max_abs) = (0.0f32, 0.0f32);
        for (g, s) in scales.iter_mut().enumerate() {
            *s = fit_scale_q6(&xb[16 * g..16 * g + 16], &mut l[16 * g..16 * g + 16]);
            if s.abs() > max_abs {
                max_abs = s.abs();
                max_scale = *s;
            }
        }
        if max_abs < GROUP_MAX_EPS {
            *b = bytemuck::Zeroable::zeroed();
            continue;
        }
        let iscale = -128.0 / max_scale;
        b.d = f16::from_f32(1.0 / iscale);
        for (q, &s) in b.scales.iter_mut().zip(&scales) {
            *q = nearest_int(iscale * s).min(127) as i8;
        }
        for g in 0..QK_K / 16 {
            let d = b.d.to_f32() * b.scales[g] as f32;
            if d == 0.0 {
                continue;
            }
            for i in 16 * g..16 * g + 16 {
                l[i] = (nearest_int(xb[i] / d).clamp(-32, 31) + 32) as i8;
            }
        }
        let l = l.map(|v| v as u8);
        for half in 0..2 {
            let (ql, qh) = (
                &mut b.ql[64 * half..64 * half + 64],
                &mut b.qh[32 * half..32 * half + 32],
            );
            let lh = &l[128 * half..128 * half + 128];
            for i in 0..32 {
                let (q1, q2, q3, q4) = (lh[i], lh[i + 32], lh[i + 64], lh[i + 96]);
                ql[i] = (q1 & 0x0f) | ((q3 & 0x0f) << 4);
                ql[i + 32] = (q2 & 0x0f) | ((q4 & 0x0f) << 4);
                qh[i] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytemuck::Zeroable;
    use ember_runtime::weights::quants::{dequantize, QuantBlock};

    fn data(seed: u32, n: usize) -> Vec<f32> {
        crate::test_data(seed, n, 0.2)
    }

    /// Relative RMS error of a round trip through `B`.
    fn rel_rmse<B: QuantBlock>(x: &[f32], q: fn(&[f32], &mut [B])) -> f64 {
        let mut b = vec![B::zeroed(); x.len() / B::N];
        q(x, &mut b);
        let mut y = vec![0.0; x.len()];
        dequantize(&b, &mut y);
        let (mut e, mut s) = (0.0f64, 0.0f64);
        for (&a, &c) in x.iter().zip(&y) {
            e += ((a - c) as f64).powi(2);
            s += (a as f64).powi(2);
        }
        (e / s).sqrt()
    }

    #[test]
    fn nearest_int_rounds_ties_to_even() {
        for (x, want) in [
            (0.5, 0),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (3.49, 3),
        ] {
            assert_eq!(nearest_int(x), want, "{x}");
        }
    }

    #[test]
    fn nearest_grid_picks_the_closest_value() {
        let g = &IQ4_GRID;
        assert_eq!(nearest_grid(g, -200.0), 0);
        assert_eq!(nearest_grid(g, 500.0), 15);
        assert_eq!(nearest_grid(g, 0.0), 8); // 1 is nearer than −10
        assert_eq!(nearest_grid(g, -4.5), 8); // a tie (−10 and 1 are 5.5 away) goes up
        assert_eq!(nearest_grid(g, -4.6), 7);
        for (i, &v) in g.iter().enumerate() {
            assert_eq!(nearest_grid(g, v as f32), i);
        }
    }

    /// Each format's error on smooth random data is what its bits allow (and far below a
    /// wrong packing's): a few % for 4 bits, less with more.
    #[test]
    fn round_trips_are_as_close_as_the_bits_allow() {
        let x = data(11, QK_K * 16);
        let cases = [
            ("q5_0", rel_rmse::<BlockQ5_0>(&x, quantize_q5_0), 0.05),
            ("q5_1", rel_rmse::<BlockQ5_1>(&x, quantize_q5_1), 0.04),
            ("iq4_nl", rel_rmse::<BlockIq4Nl>(&x, quantize_iq4_nl), 0.10),
            ("q4_k", rel_rmse::<BlockQ4K>(&x, quantize_q4_k), 0.08),
            ("q5_k", rel_rmse::<BlockQ5K>(&x, quantize_q5_k), 0.04),
            ("q6_k", rel_rmse::<BlockQ6K>(&x, quantize_q6_k), 0.02),
        ];
        for (name, e, bound) in cases {
            assert!(e < bound, "{name}: relative RMSE {e}");
            assert!(e > 1e-4, "{name}: relative RMSE {e} is suspiciously small");
        }
    }

    #[test]
    fn zero_blocks_stay_zero() {
        let x = vec![0.0f32; QK_K];
        let mut b = [BlockQ6K::zeroed()];
        quantize_q6_k(&x, &mut b);
        assert_eq!(b[0], BlockQ6K::zeroed());
        let mut b = [BlockQ4K::zeroed()];
        quantize_q4_k(&x, &mut b);
        let mut y = vec![1.0; QK_K];
        dequantize(&b, &mut y);
        assert!(y.iter().all(|&v| v == 0.0));
        let mut b = [BlockIq4Nl::default()];
        quantize_iq4_nl(&x[..32], &mut b);
        assert_eq!(b[0].d.to_f32(), 0.0);
        assert!(b[0].qs.iter().all(|&q| q == 0x88)); // index 8 (grid value 1) is nearest 0
    }
}
