//! The chunked form of the attention spec ([`scalar::attend_f16`]) that the SIMD sets share:
//! the scores of a chunk of keys first, their exponentials in one vectorized pass, then the f16
//! running sum updated key by key, in order. Each set plugs in its own vector ops, which are
//! bit-identical to the scalar ones, so the result is too.

use super::scalar::{self, ATTEND_CHUNK};
use half::f16;

/// The vector operations the chunked attention needs.
pub struct AttendOps {
    /// f16 · f32 dot product, spec order.
    pub dot: fn(&[f16], &[f32]) -> f32,
    /// x ← e^x for every element, the engine's exp.
    pub exp_inplace: fn(&mut [f32]),
    /// y = f16(y·a).
    pub scale: fn(&mut [f16], f32),
    /// y = f16(x·a + y).
    pub mad: fn(&mut [f16], &[f16], f32),
}

/// [`scalar::attend_f16`], computed chunk by chunk with `ops`.
#[allow(clippy::too_many_arguments)]
pub fn attend_chunked(
    ops: &AttendOps,
    q: &[f32],
    keys: &[f16],
    values: &[f16],
    stride: usize,
    n: usize,
    scale: f32,
    acc: &mut [f16],
) -> f32 {
    let hd = q.len();
    let acc = &mut acc[..hd];
    acc.fill(f16::ZERO);
    let (mut max, mut sum) = (f32::NEG_INFINITY, 0.0f32);
    let mut factor = [0.0f32; ATTEND_CHUNK];
    let mut grows = [false; ATTEND_CHUNK];
    let mut c0 = 0;
    while c0 < n {
        let m = (n - c0).min(ATTEND_CHUNK);
        // Running max: where it grows, the factor rescales the sum by e^(M_old − s); else the
        // value's weight is e^(s − M).
        let mut run = max;
        for j in 0..m {
            let k = &keys[(c0 + j) * stride..(c0 + j) * stride + hd];
            let s = (ops.dot)(k, q) * scale;
            grows[j] = s > run;
            factor[j] = if grows[j] { run - s } else { s - run };
            if grows[j] {
                run = s;
            }
        }
        (ops.exp_inplace)(&mut factor[..m]);
        for j in 0..m {
            let (ms, vs) = if grows[j] {
                (factor[j], 1.0)
            } else {
                (1.0, factor[j])
            };
            if grows[j] {
                (ops.scale)(acc, ms);
            }
            (ops.mad)(acc, &values[(c0 + j) * stride..(c0 + j) * stride + hd], vs);
            sum = sum * ms + vs;
        }
        max = run;
        c0 += m;
    }
    sum
}

/// x ← e^x with the scalar spec (for tails and for sets without a vector exp).
pub fn exp_inplace_scalar(x: &mut [f32]) {
    for v in x {
        *v = scalar::exp(*v);
    }
}
