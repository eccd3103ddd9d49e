//! The scalar kernels: plain Rust, no intrinsics, written to be read. They are the spec — every
//! SIMD kernel is tested against these — and the fallback on CPUs without a faster set.

use super::attend::RunningSum;
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
// (so all kernel sets, on x86 and Arm, give bit-identical results). It is the order of ggml's
// x86 kernels (`ggml_vec_dot_q4_1_q8_1` and friends), so that ember's logits are llama.cpp's to
// the bit, not merely close to them: the activations are re-quantized to 8 bits before every
// product, and a last-bit difference in one layer can flip a rounding there, which the next
// layers amplify into different tokens at near-ties.
//   - per block b, 8 integer lanes, lane l = Σ_{k<4} w[4l+k]·x[4l+k] (exact), elements in block
//     order (Q4 nibbles unpacked as [16 low | 16 high]);
//   - one bank of 8 accumulators: acc[l] = fma(d_w·d_x, lane l, acc[l]), block after block;
//   - the result is hsum8(acc), plus, for Q4_1, the minimum terms m_w·s_x summed block after
//     block in one scalar chain (fused), added last.

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

/// ((a0+a4) + (a2+a6)) + ((a1+a5) + (a3+a7)): the reduction order of the SIMD sets (and of
/// ggml's `hsum_float_8`).
#[inline]
pub fn hsum8(a: &[f32; 8]) -> f32 {
    let s: [f32; 4] = core::array::from_fn(|i| a[i] + a[i + 4]);
    (s[0] + s[2]) + (s[1] + s[3])
}

/// The one-bank accumulation of the spec.
struct Bank([f32; 8]);

impl Bank {
    fn add(&mut self, d: f32, lanes: [i32; 8]) {
        for (a, l) in self.0.iter_mut().zip(lanes) {
            *a = fma(d, l as f32, *a);
        }
    }
}

/// Σ over blocks of d_w d_x Σ (q_w - 8) q_x.
pub fn vec_dot_q4_0(w: &[BlockQ4_0], qs: &[i8], d: &[f32], _s: &[f32]) -> f32 {
    let mut bank = Bank([0.0; 8]);
    for (b, w) in w.iter().enumerate() {
        bank.add(
            w.d.to_f32() * d[b],
            lanes(&unpack_q4(&w.qs, 8), &qs[b * QK..]),
        );
    }
    hsum8(&bank.0)
}

/// Σ over blocks of d_w d_x Σ q_w q_x + m_w s_x.
pub fn vec_dot_q4_1(w: &[BlockQ4_1], qs: &[i8], d: &[f32], s: &[f32]) -> f32 {
    let mut bank = Bank([0.0; 8]);
    let mut mins = 0.0f32;
    for (b, w) in w.iter().enumerate() {
        bank.add(
            w.d.to_f32() * d[b],
            lanes(&unpack_q4(&w.qs, 0), &qs[b * QK..]),
        );
        mins = fma(w.m.to_f32(), s[b], mins);
    }
    hsum8(&bank.0) + mins
}

/// Σ over blocks of d_w d_x Σ q_w q_x.
pub fn vec_dot_q8_0(w: &[BlockQ8_0], qs: &[i8], d: &[f32], _s: &[f32]) -> f32 {
    let mut bank = Bank([0.0; 8]);
    for (b, w) in w.iter().enumerate() {
        let wq: [i32; QK] = core::array::from_fn(|e| w.qs[e] as i32);
        bank.add(w.d.to_f32() * d[b], lanes(&wq, &qs[b * QK..]));
    }
    hsum8(&bank.0)
}

/// Σ a_i b_i in f32: 16 lanes of fused multiply-adds over whole groups of 16, the lanes reduced
/// as `hsum8(low 8 + high 8)`, then the remaining elements one by one (fused). This is the order
/// of llama.cpp's f32 matrix products on AVX-512 (tinyBLAS: one 16-lane accumulator per output,
/// `_mm512_reduce_add_ps`), so f32 weights give its bits.
pub fn vec_dot_f32(a: &[f32], b: &[f32]) -> f32 {
    dot_by_lanes(a.len().min(b.len()), |i| a[i], |i| b[i])
}

/// Σ a_i b_i with `a` in f16, in the order of ggml's `ggml_vec_dot_f16` on AVX-512 (the order
/// llama.cpp's flash attention scores keys in): groups of 64 into 4 × 16 lanes of fused
/// multiply-adds, the 4 banks added as (b0 + b2) + (b1 + b3), the 16 lanes reduced as
/// `hsum8(low 8 + high 8)`; the remaining elements are then added one by one in f64, and the
/// total rounded to f32.
pub fn vec_dot_f16_f32(a: &[f16], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let whole = n - n % 64;
    let mut banks = [[0.0f32; 16]; 4];
    for i in (0..whole).step_by(64) {
        for (j, bank) in banks.iter_mut().enumerate() {
            for (l, acc) in bank.iter_mut().enumerate() {
                let e = i + 16 * j + l;
                *acc = fma(a[e].to_f32(), b[e], *acc);
            }
        }
    }
    let lanes: [f32; 16] =
        core::array::from_fn(|l| (banks[0][l] + banks[2][l]) + (banks[1][l] + banks[3][l]));
    let mut sum = hsum8(&core::array::from_fn(|l| lanes[l] + lanes[l + 8])) as f64;
    for e in whole..n {
        sum += (a[e].to_f32() * b[e]) as f64;
    }
    sum as f32
}

#[inline]
fn dot_by_lanes(n: usize, a: impl Fn(usize) -> f32, b: impl Fn(usize) -> f32) -> f32 {
    let mut acc = [0.0f32; 16];
    let whole = n - n % 16;
    for i in (0..whole).step_by(16) {
        for (l, acc) in acc.iter_mut().enumerate() {
            *acc = fma(a(i + l), b(i + l), *acc);
        }
    }
    let mut s = hsum8(&core::array::from_fn(|l| acc[l] + acc[l + 8]));
    for i in whole..n {
        s = fma(a(i), b(i), s);
    }
    s
}

/// `acc[j] = fma(a[i], b[i·stride + j], acc[j])` for i = 0, 1, … in order, for every j:
/// acc += Σ a_i · (row i of b), each element one chain of fused multiply-adds (the order of ggml's
/// `simd_gemm`, which tiled attention uses for scores and for values).
pub fn fma_rows(acc: &mut [f32], a: &[f32], b: &[f32], stride: usize) {
    for (i, &ai) in a.iter().enumerate() {
        let row = &b[i * stride..i * stride + acc.len()];
        for (y, &x) in acc.iter_mut().zip(row) {
            *y = fma(ai, x, *y);
        }
    }
}

/// `out[i] = f32(x[i])` over the shorter of the two (exact).
pub fn f16_f32(x: &[f16], out: &mut [f32]) {
    for (o, x) in out.iter_mut().zip(x) {
        *o = x.to_f32();
    }
}

/// y = fma(a, x, y).
pub fn axpy_f32(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = fma(a, x, *y);
    }
}

/// An f16 value row added to attention's running sum over an f16 value cache, element by
/// element: `y = y.mad(x, a)` ([`RunningSum::mad`]: one fused multiply-add, then the sum's
/// rounding).
pub fn mad_f16<A: RunningSum>(y: &mut [A], x: &[f16], a: f32) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = y.mad(x, a);
    }
}

/// Attention's running sum rescaled, element by element ([`RunningSum::scaled`]).
pub fn scale_f16<A: RunningSum>(y: &mut [A], a: f32) {
    for y in y.iter_mut() {
        *y = y.scaled(a);
    }
}

/// Rotates adjacent pairs `(x[2i], x[2i+1])` of one head by the angles in `cs` (Llama's "normal"
/// RoPE layout; dimensions past `cs.len()` are left as they are). Each output is one product
/// rounded and one fused multiply-add, in the operand order of llama.cpp's compiled x86 loop
/// (`vfmaddsub`), so the rotated queries and keys are its bits.
#[inline]
pub fn rope(x: &mut [f32], cs: &[f32]) {
    for (pair, c) in x.chunks_exact_mut(2).zip(cs.chunks_exact(2)) {
        let (x0, x1) = (pair[0], pair[1]);
        pair[0] = fma(x0, c[0], -(x1 * c[1]));
        pair[1] = fma(x0, c[1], x1 * c[0]);
    }
}

/// Rotates the pairs `(x[i], x[i + rope_dim/2])` of one head by the angles in `cs` (GPT-NeoX's
/// layout, `rope_dim = cs.len()`; later dimensions are left as they are), with the arithmetic of
/// [`rope`].
#[inline]
pub fn rope_neox(x: &mut [f32], cs: &[f32]) {
    let half = cs.len() / 2;
    let (lo, hi) = x.split_at_mut(half);
    for ((a, b), c) in lo.iter_mut().zip(hi.iter_mut()).zip(cs.chunks_exact(2)) {
        let (x0, x1) = (*a, *b);
        *a = fma(x0, c[0], -(x1 * c[1]));
        *b = fma(x0, c[1], x1 * c[0]);
    }
}

/// One chunk of attention's online softmax. `x` holds the raw scores (k · q) of the chunk's keys
/// in order; each, times `scale`, is s. Where s exceeds the running max M (`st.max`), the key
/// `grows` it: its factor e^(M − s) rescales the running sums and M becomes s; elsewhere its
/// weight is e^(s − M). `x` is left holding the factors and weights ([`exp_softmax`]), and the
/// sum of weights `st.sum` has taken them in order: `fma(sum, factor, 1)` or `fma(sum, 1, weight)`.
pub fn softmax_chunk(
    x: &mut [f32],
    grows: &mut [bool],
    scale: f32,
    st: &mut super::attend::Softmax,
) {
    let run = softmax_factors(x, grows, scale, st.max);
    for f in x.iter_mut() {
        *f = exp_softmax(*f);
    }
    st.sum = softmax_sum(x, grows, st.sum);
    st.max = run;
}

/// [`softmax_chunk`]'s first step, from the running max `run`: which keys grow it, and each
/// key's exponent (M − s where it grows, s − M elsewhere). Returns the new running max.
#[inline]
pub fn softmax_factors(x: &mut [f32], grows: &mut [bool], scale: f32, mut run: f32) -> f32 {
    for (f, g) in x.iter_mut().zip(grows.iter_mut()) {
        let s = *f * scale;
        *g = s > run;
        *f = if *g { run - s } else { s - run };
        if *g {
            run = s;
        }
    }
    run
}

/// [`softmax_chunk`]'s last step: the sum of weights `sum` after the chunk's factors and
/// weights `x`, in order.
#[inline]
pub fn softmax_sum(x: &[f32], grows: &[bool], mut sum: f32) -> f32 {
    for (&f, &g) in x.iter().zip(grows) {
        let (ms, vs) = if g { (f, 1.0) } else { (1.0, f) };
        sum = fma(sum, ms, vs);
    }
    sum
}

/// Scores of `out.len()` f16 keys stored one after another (`q.len()` values each) against `q`:
/// `out[j] = vec_dot_f16_f32(key j, q)`.
pub fn scores_f16(keys: &[f16], q: &[f32], out: &mut [f32]) {
    let hd = q.len();
    for (j, o) in out.iter_mut().enumerate() {
        *o = vec_dot_f16_f32(&keys[j * hd..(j + 1) * hd], q);
    }
}

/// Adds a chunk of f16 values (`acc.len()` each, one after another) to the running sum `acc` (f16
/// in llama.cpp's numerics, f32 in ember's) in order: value j, where `grows[j]`, after
/// `scale_f16(acc, w[j])` and with weight 1; else with weight `w[j]` (each addition a
/// [`mad_f16`]).
pub fn update_f16<A: RunningSum>(acc: &mut [A], values: &[f16], grows: &[bool], w: &[f32]) {
    let hd = acc.len();
    for (j, (&g, &w)) in grows.iter().zip(w).enumerate() {
        let v = &values[j * hd..(j + 1) * hd];
        if g {
            scale_f16(acc, w);
            mad_f16(acc, v, 1.0);
        } else {
            mad_f16(acc, v, w);
        }
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

/// T[i] = bits of 2^(i/32) (correctly rounded f64) − (i << 47): adding k << 47 then puts
/// 2^(k/32) together, exponent included.
pub(crate) const EXP_SOFTMAX_T: [u64; 32] = [
    0x3ff0000000000000,
    0x3fefd9b0d3158574,
    0x3fefb5586cf9890f,
    0x3fef9301d0125b51,
    0x3fef72b83c7d517b,
    0x3fef54873168b9aa,
    0x3fef387a6e756238,
    0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715,
    0x3feef1a7373aa9cb,
    0x3feedea64c123422,
    0x3feece086061892d,
    0x3feebfdad5362a27,
    0x3feeb42b569d4f82,
    0x3feeab07dd485429,
    0x3feea47eb03a5585,
    0x3feea09e667f3bcd,
    0x3fee9f75e8ec5f74,
    0x3feea11473eb0187,
    0x3feea589994cce13,
    0x3feeace5422aa0db,
    0x3feeb737b0cdc5e5,
    0x3feec49182a3f090,
    0x3feed503b23e255d,
    0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47,
    0x3fef199bdd85529c,
    0x3fef3720dcef9069,
    0x3fef5818dcfba487,
    0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da,
    0x3fefd0765b6e4540,
];

/// [`exp_softmax`]'s limits (as f32 bits: e^x is ∞ above `HI`, 0 below `LO`) and its f64
/// constants: 32/ln 2, the cubic's c0, c1, c2, and the 1.5·2^52 that rounds to an integer.
pub(crate) const EXP_SOFTMAX_HI: u32 = 0x42b1_7217;
pub(crate) const EXP_SOFTMAX_LO: u32 = 0xc2cf_f1b4;
#[inline(always)]
pub(crate) fn exp_softmax_consts() -> [f64; 5] {
    const N: f64 = 32.0;
    [
        f64::from_bits(0x3ff7_1547_652b_82fe) * N,
        f64::from_bits(0x3fac_6af8_4b91_2394) / (N * N * N),
        f64::from_bits(0x3fce_bfce_50fa_c4f3) / (N * N),
        f64::from_bits(0x3fe6_2e42_ff0c_52d6) / N,
        f64::from_bits(0x4338_0000_0000_0000),
    ]
}

/// e^x for the attention softmax, as glibc's `expf` computes it (llama.cpp's flash attention
/// calls `expf`, and glibc's is not always correctly rounded, so only its algorithm gives its
/// bits): x·32/ln 2 = k + r in f64, e^x = 2^(k/32)·2^(r/32) with 2^(i/32) from a 32-entry table
/// and a cubic in r. Checked equal to glibc's `expf` on 746 million inputs in (−87, 88) (every
/// third f32) and by a sampled test on every x86-64 glibc build; no libm, so it is the same
/// function without `std`.
pub fn exp_softmax(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    if x > f32::from_bits(EXP_SOFTMAX_HI) {
        return f32::INFINITY; // x > ln(2^128)
    }
    if x < f32::from_bits(EXP_SOFTMAX_LO) {
        return 0.0; // x < ln(2^-150)
    }
    let [inv_ln2_n, c0, c1, c2, shift] = exp_softmax_consts();
    let z = inv_ln2_n * x as f64;
    let kd = z + shift;
    let ki = kd.to_bits();
    let r = z - (kd - shift);
    let s = f64::from_bits(EXP_SOFTMAX_T[(ki % 32) as usize].wrapping_add(ki << 47));
    let y = (c0 * r + c1) * (r * r) + (c2 * r + 1.0);
    (y * s) as f32
}

/// e^x as ggml's 16-lane `ggml_v_expf` computes it (the exp of llama.cpp's SiLU on AVX-512):
/// n = round(x·log2 e) by the 1.5·2²³ trick, b = x − n·ln 2 in two fused steps, a degree-5
/// polynomial in b evaluated as ggml evaluates it, then ·2ⁿ with one rounding (`scalef`); 0 or ∞
/// when |n| > 192. Its constants are ggml's, so the bits are llama.cpp's.
#[inline]
pub fn exp_ggml(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0; // 0x1.8p23
    let z = fma(x, f32::from_bits(0x3fb8_aa3b), SHIFT); // 0x1.715476p+0
    let n = z - SHIFT;
    let b = fma(-n, f32::from_bits(0x3f31_7200), x); // 0x1.62e4p-1
    let b = fma(-n, f32::from_bits(0x35bf_be8e), b); // 0x1.7f7d1cp-20
    if n.abs() > 192.0 {
        return if n <= 0.0 { 0.0 } else { f32::INFINITY };
    }
    let u = b * b;
    let hi = fma(
        fma(f32::from_bits(0x3c07_2010), b, f32::from_bits(0x3d2b_9f17)), // 0x1.0e4020p-7, 0x1.573e2ep-5
        u,
        fma(f32::from_bits(0x3e2a_af33), b, f32::from_bits(0x3eff_fedb)), // 0x1.555e66p-3, 0x1.fffdb6p-2
    );
    let j = fma(hi, u, fma(f32::from_bits(0x3f7f_fff6), b, 1.0)); // 0x1.ffffecp-1
    scalef(j, n)
}

/// x ← e^x with [`exp_ggml`], element-wise.
pub fn exp_ggml_inplace(x: &mut [f32]) {
    for v in x {
        *v = exp_ggml(*v);
    }
}

/// x·2ⁿ for integral n in [−192, 192], rounded once (AVX-512's `vscalefps`).
#[inline]
pub fn scalef(x: f32, n: f32) -> f32 {
    if n.is_nan() {
        return f32::NAN;
    }
    let n = n as i32;
    let n1 = n / 2;
    // Each half is a normal power of two, so the first product is exact and the second rounds.
    (x * pow2i(n1)) * pow2i(n - n1)
}

/// x · sigmoid(x) = x / (1 + e^−x), with ggml's exp (see [`exp_ggml`]).
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp_ggml(0.0 - x))
}

/// gate = silu(gate) · up, element-wise.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = silu(*g) * u;
    }
}

/// The constants of the `libm` crate's `expm1f` inside its `tanhf` (ln 2 in two parts, 1/ln 2,
/// and the two polynomial coefficients), as bits: the SIMD sets' tanh takes its steps with them.
pub const EXPM1F_LN2_HI: f32 = f32::from_bits(0x3f31_7180);
/// See [`EXPM1F_LN2_HI`].
pub const EXPM1F_LN2_LO: f32 = f32::from_bits(0x3717_f7d1);
/// See [`EXPM1F_LN2_HI`].
pub const EXPM1F_INV_LN2: f32 = f32::from_bits(0x3fb8_aa3b);
/// See [`EXPM1F_LN2_HI`].
pub const EXPM1F_Q1: f32 = f32::from_bits(0xbd08_8868);
/// See [`EXPM1F_LN2_HI`].
pub const EXPM1F_Q2: f32 = f32::from_bits(0x3acf_3010);

/// √(2/π) in [`gelu_tanh`].
pub const GELU_SQRT_2_OVER_PI: f32 = 0.797_884_6;
/// The cubic term's factor in [`gelu_tanh`].
pub const GELU_A: f32 = 0.044_715;

/// GELU with the tanh approximation, in f32:
/// `0.5·x·(1 + tanh(√(2/π)·x·(1 + 0.044715·x²)))`, the tanh being the `libm` crate's `tanhf`
/// (musl's, after FreeBSD's: its `expm1f` and a division, every step a rounded f32 operation, so
/// a SIMD set can take the same steps). The reference implementations (PyTorch's
/// `gelu(approximate="tanh")`) compute it so; llama.cpp looks it up in an f16 table instead.
pub fn gelu_tanh(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::tanhf(GELU_SQRT_2_OVER_PI * x * (1.0 + GELU_A * x * x)))
}

/// x ← tanh(x), element-wise, with the `libm` crate's `tanhf` (as [`gelu_tanh`]).
pub fn tanh_inplace(x: &mut [f32]) {
    for v in x {
        *v = libm::tanhf(*v);
    }
}

/// gate = gelu_tanh(gate) · up, element-wise (GeGLU).
pub fn geglu(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = gelu_tanh(*g) * u;
    }
}

// ---------------------------------------------------------------------------------------------
// Attention of one query head, key by key (the spec `kernels/attend.rs` computes chunk by chunk).
// ---------------------------------------------------------------------------------------------

/// Attends query `q` to `n` f16 keys and values stored one after another (`q.len()` each),
/// continuing the online softmax `st` and the running sum `acc` (f16 or f32, [`RunningSum`]):
/// for each key, score = (k · q)·scale; a new max M rescales `acc` and the sum by e^(M_old − M),
/// otherwise the value is added with weight e^(score − M).
#[allow(clippy::too_many_arguments)]
pub fn attend_f16<A: RunningSum>(
    q: &[f32],
    keys: &[f16],
    values: &[f16],
    n: usize,
    scale: f32,
    acc: &mut [A],
    st: &mut super::attend::Softmax,
) {
    let hd = q.len();
    for j in 0..n {
        let score = vec_dot_f16_f32(&keys[j * hd..(j + 1) * hd], q) * scale;
        let (mut ms, mut vs) = (1.0f32, 1.0f32);
        if score > st.max {
            ms = exp_softmax(st.max - score);
            st.max = score;
            scale_f16(acc, ms);
        } else {
            vs = exp_softmax(score - st.max);
        }
        mad_f16(acc, &values[j * hd..(j + 1) * hd], vs);
        st.sum = fma(st.sum, ms, vs);
    }
}
