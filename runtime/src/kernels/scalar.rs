//! The scalar kernels: plain Rust, no intrinsics, written to be read. They are the spec — every
//! SIMD kernel is tested against these — and the fallback on CPUs without a faster set.

use crate::weights::blocks::round_even;
use crate::weights::{BlockQ4_0, BlockQ4_1, BlockQ8_0, QK};
use half::f16;

/// Fused multiply-add, correctly rounded (the hardware instruction under `std`, libm otherwise;
/// both give the same bits).
#[inline]
pub fn fma(a: f32, b: f32, c: f32) -> f32 {
    #[cfg(feature = "std")]
    {
        a.mul_add(b, c)
    }
    #[cfg(not(feature = "std"))]
    {
        libm::fmaf(a, b, c)
    }
}

// Activation quantization (the spec every set reproduces bit for bit): per block of 32,
// amax = max |x| (NaN ignored), d = amax / 127, q = round_ties_even(clamp(x · 127/amax, ±127))
// (NaN → 0); `d` is stored as the f16-rounded value and `s` as f16(d · Σq), both as f32.

/// Quantizes one row into planar 8-bit blocks.
pub fn quantize_row(x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32]) {
    for (b, xb) in x.chunks_exact(QK).enumerate() {
        let amax = xb
            .iter()
            .fold(0.0f32, |m, &v| if v.abs() > m { v.abs() } else { m });
        let dd = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in qs[b * QK..(b + 1) * QK].iter_mut().zip(xb) {
            *q = round_even((v * id).clamp(-127.0, 127.0)) as i8;
            sum += *q as i32;
        }
        d[b] = f16::from_f32(dd).to_f32();
        s[b] = f16::from_f32(dd * sum as f32).to_f32();
    }
}

// The quantized dot products share one summation order, which every SIMD set reproduces exactly
// (so all kernel sets, on x86 and Arm, give bit-identical results):
//   - per block b, 8 integer lanes, lane l = Σ_{k<4} w[4l+k]·x[4l+k] (exact), elements in block
//     order (Q4 nibbles unpacked as [16 low | 16 high]);
//   - two banks of 8 accumulators, even blocks into E, odd blocks into O:
//     bank[l] = fma(d_w·d_x, lane l, bank[l]), block after block;
//   - the result is hsum8(E + O), plus, for Q4_1, hsum8(M) where M[b mod 8] = fma(m_w, s_x, ·).
// Two banks let 512-bit kernels handle two blocks per instruction; 8-way `M` lets them handle
// eight blocks' minimum terms at once.

/// Lanes of one block: `lane[l] = Σ_{k<4} w[4l+k]·x[4l+k]`.
#[inline]
fn lanes(w: &[i32; QK], x: &[i8]) -> [i32; 8] {
    core::array::from_fn(|l| (0..4).map(|k| w[4 * l + k] * x[4 * l + k] as i32).sum())
}

/// A Q4 block's 32 quants in element order, each minus `offset`.
#[inline]
fn unpack_q4(qs: &[u8; QK / 2], offset: i32) -> [i32; QK] {
    core::array::from_fn(|e| {
        let q = if e < QK / 2 {
            qs[e] & 0x0f
        } else {
            qs[e - QK / 2] >> 4
        };
        q as i32 - offset
    })
}

/// ((a0+a4) + (a2+a6)) + ((a1+a5) + (a3+a7)): the reduction order of the SIMD sets.
#[inline]
pub fn hsum8(a: &[f32; 8]) -> f32 {
    let s: [f32; 4] = core::array::from_fn(|i| a[i] + a[i + 4]);
    (s[0] + s[2]) + (s[1] + s[3])
}

/// The two-bank accumulation of the spec.
struct Banks([[f32; 8]; 2]);

impl Banks {
    fn add(&mut self, b: usize, d: f32, lanes: [i32; 8]) {
        for (a, l) in self.0[b % 2].iter_mut().zip(lanes) {
            *a = fma(d, l as f32, *a);
        }
    }
    fn sum(&self) -> f32 {
        hsum8(&core::array::from_fn(|l| self.0[0][l] + self.0[1][l]))
    }
}

/// Σ over blocks of d_w d_x Σ (q_w - 8) q_x.
pub fn vec_dot_q4_0(w: &[BlockQ4_0], qs: &[i8], d: &[f32], _s: &[f32]) -> f32 {
    let mut banks = Banks([[0.0; 8]; 2]);
    for (b, w) in w.iter().enumerate() {
        banks.add(
            b,
            w.d.to_f32() * d[b],
            lanes(&unpack_q4(&w.qs, 8), &qs[b * QK..]),
        );
    }
    banks.sum()
}

/// Σ over blocks of d_w d_x Σ q_w q_x + m_w s_x.
pub fn vec_dot_q4_1(w: &[BlockQ4_1], qs: &[i8], d: &[f32], s: &[f32]) -> f32 {
    let mut banks = Banks([[0.0; 8]; 2]);
    let mut mins = [0.0f32; 8];
    for (b, w) in w.iter().enumerate() {
        banks.add(
            b,
            w.d.to_f32() * d[b],
            lanes(&unpack_q4(&w.qs, 0), &qs[b * QK..]),
        );
        mins[b % 8] = fma(w.m.to_f32(), s[b], mins[b % 8]);
    }
    banks.sum() + hsum8(&mins)
}

/// Σ over blocks of d_w d_x Σ q_w q_x.
pub fn vec_dot_q8_0(w: &[BlockQ8_0], qs: &[i8], d: &[f32], _s: &[f32]) -> f32 {
    let mut banks = Banks([[0.0; 8]; 2]);
    for (b, w) in w.iter().enumerate() {
        let wq: [i32; QK] = core::array::from_fn(|e| w.qs[e] as i32);
        banks.add(b, w.d.to_f32() * d[b], lanes(&wq, &qs[b * QK..]));
    }
    banks.sum()
}

/// Σ a_i b_i in f32: 8 lanes of fused multiply-adds over whole groups of 8, `hsum8`, then the
/// remaining elements one by one (fused).
pub fn vec_dot_f32(a: &[f32], b: &[f32]) -> f32 {
    dot_by_lanes(a.len().min(b.len()), |i| a[i], |i| b[i])
}

/// Σ a_i b_i with `a` in f16, in the order of [`vec_dot_f32`].
pub fn vec_dot_f16_f32(a: &[f16], b: &[f32]) -> f32 {
    dot_by_lanes(a.len().min(b.len()), |i| a[i].to_f32(), |i| b[i])
}

#[inline]
fn dot_by_lanes(n: usize, a: impl Fn(usize) -> f32, b: impl Fn(usize) -> f32) -> f32 {
    let mut acc = [0.0f32; 8];
    let whole = n - n % 8;
    for i in (0..whole).step_by(8) {
        for (l, acc) in acc.iter_mut().enumerate() {
            *acc = fma(a(i + l), b(i + l), *acc);
        }
    }
    let mut s = hsum8(&acc);
    for i in whole..n {
        s = fma(a(i), b(i), s);
    }
    s
}

/// y = fma(a, x, y).
pub fn axpy_f32(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = fma(a, x, *y);
    }
}

/// y = f16(x·a + y), fused multiply-add then one rounding to f16 per element: the f16 running sum
/// of attention over an f16 value cache (as llama.cpp's flash attention keeps it).
pub fn mad_f16(y: &mut [f16], x: &[f16], a: f32) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = f16::from_f32(fma(x.to_f32(), a, y.to_f32()));
    }
}

/// y = f16(y·a).
pub fn scale_f16(y: &mut [f16], a: f32) {
    for y in y.iter_mut() {
        *y = f16::from_f32(y.to_f32() * a);
    }
}

// ---------------------------------------------------------------------------------------------
// exp, as the engine computes it everywhere (softmax, SiLU): fast, vectorizable, and the same
// bits on every ISA. e^x = 2^n · e^r with n = round(x·log2 e), r = x − n·ln 2 (in two parts), and
// e^r from its Taylor series to r^7/7! by Horner's rule with fused multiply-adds
// (|r| ≤ ln2/2: relative error about 2e-7). 2^n is applied in two halves so that subnormal
// results come out right.
// ---------------------------------------------------------------------------------------------

/// Below this e^x is 0 in f32.
pub const EXP_LO: f32 = -104.0;
/// Above this e^x is ∞ in f32.
pub const EXP_HI: f32 = 89.0;
const LOG2E: f32 = core::f32::consts::LOG2_E;
/// ln 2 split so that n·LN2_HI is exact for the n that occur.
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// 1/k! for k = 7 down to 2.
pub const EXP_POLY: [f32; 6] = [
    1.0 / 5040.0,
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    0.5,
];

/// 2^k for k in [-126, 127].
#[inline]
pub fn pow2i(k: i32) -> f32 {
    f32::from_bits(((k + 127) as u32) << 23)
}

/// e^x (NaN for NaN, 0 below −104, ∞ above 89).
#[inline]
pub fn exp(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    let x = x.clamp(EXP_LO, EXP_HI);
    let n = round_even(x * LOG2E);
    let r = fma(n, -LN2_HI, x);
    let r = fma(n, -LN2_LO, r);
    let mut p = EXP_POLY[0];
    for &c in &EXP_POLY[1..] {
        p = fma(p, r, c);
    }
    let p = fma(p, r, 1.0);
    let p = fma(p, r, 1.0);
    let n = n as i32;
    let n1 = n >> 1;
    (p * pow2i(n1)) * pow2i(n - n1)
}

/// x · sigmoid(x) = x / (1 + e^−x).
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// gate = silu(gate) · up, element-wise.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = silu(*g) * u;
    }
}

// ---------------------------------------------------------------------------------------------
// Attention of one query head, key by key (the spec `kernels/attend.rs` computes chunk by chunk).
// ---------------------------------------------------------------------------------------------

/// Attends query `q` (already rounded to f16 values) to `n` f16 keys and values stored one after
/// another (`q.len()` each), continuing the online softmax `st` and the f16 running sum `acc`:
/// for each key, score = (k · q)·scale; a new max M rescales `acc` and the sum by e^(M_old − M),
/// otherwise the value is added with weight e^(score − M).
#[allow(clippy::too_many_arguments)]
pub fn attend_f16(
    q: &[f32],
    keys: &[f16],
    values: &[f16],
    n: usize,
    scale: f32,
    acc: &mut [f16],
    st: &mut super::attend::Softmax,
) {
    let hd = q.len();
    for j in 0..n {
        let score = vec_dot_f16_f32(&keys[j * hd..(j + 1) * hd], q) * scale;
        let (mut ms, mut vs) = (1.0f32, 1.0f32);
        if score > st.max {
            ms = exp(st.max - score);
            st.max = score;
            scale_f16(acc, ms);
        } else {
            vs = exp(score - st.max);
        }
        mad_f16(acc, &values[j * hd..(j + 1) * hd], vs);
        st.sum = st.sum * ms + vs;
    }
}
