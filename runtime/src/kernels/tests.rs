//! One shared runner: every kernel set this CPU supports against the scalar reference, on random
//! and edge inputs, for every block count up to 20 and the model's widths.

use super::{scalar, Isa, Kernels, OutRows, QActs};
use crate::weights::{BlockQ4_0, BlockQ4_1, BlockQ8_0, QK};
use half::f16;

/// Small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// Input families: (name, value generator).
fn activations(rng: &mut Rng, n: usize, family: usize) -> Vec<f32> {
    (0..n)
        .map(|i| match family {
            0 => rng.f32(),
            1 => 0.0,
            // Large, but the f16 block scale (amax / 127) still fits.
            2 => rng.f32() * 6e6,
            3 => rng.f32() * 1e-30,
            4 => {
                if i % 7 == 0 {
                    1000.0
                } else {
                    rng.f32() * 1e-3
                }
            }
            5 => {
                if i % 32 == 0 {
                    -5.0
                } else {
                    5.0
                }
            }
            _ => (i as f32 * 0.37).sin() * 40.0,
        })
        .collect()
}
const FAMILIES: usize = 7;

fn block_counts() -> Vec<usize> {
    let mut v: Vec<usize> = (1..=20).collect();
    v.extend([18, 48, 49]);
    v
}

fn q4_1_blocks(rng: &mut Rng, n: usize) -> Vec<BlockQ4_1> {
    (0..n)
        .map(|_| BlockQ4_1 {
            d: f16::from_f32(rng.f32() * 0.1),
            m: f16::from_f32(rng.f32() * 0.5),
            qs: core::array::from_fn(|_| rng.byte()),
        })
        .collect()
}

fn q4_0_blocks(rng: &mut Rng, n: usize) -> Vec<BlockQ4_0> {
    (0..n)
        .map(|_| BlockQ4_0 {
            d: f16::from_f32(rng.f32() * 0.1),
            qs: core::array::from_fn(|_| rng.byte()),
        })
        .collect()
}

fn q8_0_blocks(rng: &mut Rng, n: usize) -> Vec<BlockQ8_0> {
    // Weights may hold -128 (the activations never do).
    (0..n)
        .map(|_| BlockQ8_0 {
            d: f16::from_f32(rng.f32() * 0.01),
            qs: core::array::from_fn(|_| rng.byte() as i8),
        })
        .collect()
}

/// Every set computes in the spec's order, so results must be equal bit for bit (NaN included).
fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// Planar quantized activations of `toks` rows.
struct Quant {
    qs: Vec<i8>,
    d: Vec<f32>,
    s: Vec<f32>,
    sums: Vec<i32>,
    nb: usize,
}

impl Quant {
    fn of(k: &Kernels, x: &[f32], nb: usize) -> Quant {
        let toks = x.len() / (nb * QK);
        let mut q = Quant {
            qs: vec![0; x.len()],
            d: vec![0.0; toks * nb],
            s: vec![0.0; toks * nb],
            sums: vec![0; toks * nb],
            nb,
        };
        for t in 0..toks {
            (k.quantize)(
                &x[t * nb * QK..(t + 1) * nb * QK],
                &mut q.qs[t * nb * QK..(t + 1) * nb * QK],
                &mut q.d[t * nb..(t + 1) * nb],
                &mut q.s[t * nb..(t + 1) * nb],
            );
        }
        super::block_sums(&q.qs, &mut q.sums);
        q
    }
    /// Q8_K activations (`nb` blocks of 256 a token), with the sums of each 32 quants.
    fn q8k(x: &[f32], nb: usize) -> Quant {
        let mut q = Quant {
            qs: vec![0; x.len()],
            d: vec![0.0; x.len() / crate::weights::quants::QK_K],
            s: Vec::new(),
            sums: vec![0; x.len() / QK],
            nb,
        };
        crate::weights::quants::quantize_q8k(x, &mut q.qs, &mut q.d);
        super::block_sums(&q.qs, &mut q.sums);
        q
    }
    /// The same activations without their integer sums (products that read them take their
    /// other way).
    fn without_sums(&self) -> Quant {
        Quant {
            qs: self.qs.clone(),
            d: self.d.clone(),
            s: self.s.clone(),
            sums: Vec::new(),
            nb: self.nb,
        }
    }
    fn acts(&self) -> QActs<'_> {
        QActs {
            qs: &self.qs,
            d: &self.d,
            s: &self.s,
            sums: &self.sums,
            nb: self.nb,
        }
    }
    fn bits(&self) -> (Vec<i8>, Vec<u32>, Vec<u32>) {
        (
            self.qs.clone(),
            self.d.iter().map(|v| v.to_bits()).collect(),
            self.s.iter().map(|v| v.to_bits()).collect(),
        )
    }
}

#[test]
fn quantization_is_bit_identical_to_the_spec() {
    let mut rng = Rng(1);
    for k in Kernels::all_supported() {
        for nb in block_counts() {
            for fam in 0..FAMILIES {
                let x = activations(&mut rng, nb * QK, fam);
                let a = Quant::of(&Kernels::SCALAR, &x, nb);
                let b = Quant::of(&k, &x, nb);
                assert_eq!(a.bits(), b.bits(), "[{}] nb={nb} family={fam}", k.isa);
            }
        }
    }
}

#[test]
fn quantization_handles_nan_and_infinity() {
    let mut x = vec![1.0f32; 2 * QK];
    x[3] = f32::NAN;
    x[5] = f32::INFINITY;
    x[40] = f32::NAN;
    for k in Kernels::all_supported() {
        let (a, b) = (Quant::of(&Kernels::SCALAR, &x, 2), Quant::of(&k, &x, 2));
        assert_eq!(a.qs, b.qs, "[{}]", k.isa);
        assert_eq!(a.d[1].to_bits(), b.d[1].to_bits(), "[{}]", k.isa);
    }
}

#[test]
fn q8k_quantization_is_bit_identical_to_the_spec() {
    use crate::weights::quants::{quantize_q8k, QK_K};
    let mut rng = Rng(11);
    let q8k = |f: crate::kernels::QuantizeKFn, x: &[f32]| {
        let (mut qs, mut d) = (vec![0i8; x.len()], vec![0.0f32; x.len() / QK_K]);
        f(x, &mut qs, &mut d);
        (qs, d.iter().map(|v| v.to_bits()).collect::<Vec<_>>())
    };
    for k in Kernels::all_supported() {
        for fam in 0..FAMILIES {
            let mut x = activations(&mut rng, 3 * QK_K, fam);
            // Block 1: its largest magnitude twice with opposite signs (the first one's sign
            // makes the scale), ties of the rounding, and NaN; block 2: zeros but one NaN.
            x[QK_K + 7] = -4.0;
            x[QK_K + 200] = 4.0;
            x[QK_K + 8] = 4.0 * 0.5 / 127.0;
            x[QK_K + 9] = 4.0 * 1.5 / 127.0;
            x[QK_K + 30] = f32::NAN;
            for v in &mut x[QK_K + 10..QK_K + 20] {
                *v = v.clamp(-3.9, 3.9);
            }
            if fam % 2 == 0 {
                x[2 * QK_K..].fill(0.0);
                x[2 * QK_K + 5] = f32::NAN;
            } else {
                // An infinity: its own quant is NaN (0), the others 0, the scale infinite.
                x[2 * QK_K + 100] = f32::NEG_INFINITY;
            }
            for v in &mut x[QK_K..2 * QK_K] {
                if v.abs() > 4.0 {
                    *v = v.signum() * 3.5;
                }
            }
            assert_eq!(
                q8k(quantize_q8k, &x),
                q8k(k.quantize_q8k, &x),
                "[{}] family={fam}",
                k.isa
            );
        }
    }
}

#[test]
fn gemm_is_bit_identical_to_the_scalar_reference() {
    let mut rng = Rng(2);
    for k in Kernels::all_supported() {
        for nb in block_counts() {
            for fam in 0..FAMILIES {
                // 7 rows × 6 tokens: full tiles and every kind of remainder; 1 token: decode tiles.
                let rows = 7;
                let toks = if fam % 2 == 0 { 6 } else { 1 };
                let x = activations(&mut rng, toks * nb * QK, fam);
                let q = Quant::of(&Kernels::SCALAR, &x, nb);
                let a = q.acts();
                let stride = rows + 3;
                let mut r1 = vec![0.0; toks * stride];
                let mut r2 = vec![0.0; toks * stride];
                let check = |r1: &[f32], r2: &[f32], what: &str| {
                    for (i, (&p, &q)) in r1.iter().zip(r2).enumerate() {
                        assert!(
                            same(p, q),
                            "[{}] {what} nb={nb} fam={fam} i={i}: {p} vs {q}",
                            k.isa
                        );
                    }
                };

                let w = q4_1_blocks(&mut rng, rows * nb);
                (Kernels::SCALAR.gemm_q4_1)(&w, &a, &mut OutRows::new(&mut r1, stride, rows, toks));
                (k.gemm_q4_1)(&w, &a, &mut OutRows::new(&mut r2, stride, rows, toks));
                check(&r1, &r2, "q4_1");

                let w = q4_0_blocks(&mut rng, rows * nb);
                (Kernels::SCALAR.gemm_q4_0)(&w, &a, &mut OutRows::new(&mut r1, stride, rows, toks));
                (k.gemm_q4_0)(&w, &a, &mut OutRows::new(&mut r2, stride, rows, toks));
                check(&r1, &r2, "q4_0");

                let w = q8_0_blocks(&mut rng, rows * nb);
                (Kernels::SCALAR.gemm_q8_0)(&w, &a, &mut OutRows::new(&mut r1, stride, rows, toks));
                (k.gemm_q8_0)(&w, &a, &mut OutRows::new(&mut r2, stride, rows, toks));
                check(&r1, &r2, "q8_0");
            }
        }
    }
}

#[test]
fn gemm_agrees_with_dequantized_float_math() {
    // The spec itself against plain f64 math on dequantized values: only rounding apart.
    let mut rng = Rng(4);
    let nb = 18;
    let x = activations(&mut rng, nb * QK, 0);
    let q = Quant::of(&Kernels::SCALAR, &x, nb);
    let w = q4_1_blocks(&mut rng, nb);
    let mut wf = vec![0.0f32; nb * QK];
    crate::weights::blocks::dequantize_q4_1(&w, &mut wf);
    let exact: f64 = (0..nb * QK)
        .map(|i| wf[i] as f64 * (q.qs[i] as f64 * q.d[i / QK] as f64))
        .sum();
    let mut out = [0.0f32];
    (Kernels::SCALAR.gemm_q4_1)(&w, &q.acts(), &mut OutRows::new(&mut out, 1, 1, 1));
    // The m·s term uses s = f16(d·Σq): allow for that rounding.
    let scale: f64 = wf.iter().map(|v| v.abs() as f64).sum::<f64>() * 1e-2;
    assert!(
        (out[0] as f64 - exact).abs() <= scale.max(1e-3),
        "{} vs {exact}",
        out[0]
    );
}

#[test]
fn vector_ops_are_bit_identical_to_the_scalar_reference() {
    let mut rng = Rng(3);
    for k in Kernels::all_supported() {
        for n in [0usize, 1, 7, 8, 15, 16, 17, 31, 64, 65, 100] {
            let a: Vec<f32> = (0..n).map(|_| rng.f32()).collect();
            let b: Vec<f32> = (0..n).map(|_| rng.f32()).collect();
            let h: Vec<f16> = a.iter().map(|&v| f16::from_f32(v)).collect();
            assert!(
                same(scalar::vec_dot_f32(&a, &b), (k.dot_f32)(&a, &b)),
                "[{}] dot_f32 n={n}",
                k.isa
            );
            assert!(
                same(scalar::vec_dot_f16_f32(&h, &b), (k.dot_f16_f32)(&h, &b)),
                "[{}] dot_f16 n={n}",
                k.isa
            );
            let (mut y1, mut y2) = (b.clone(), b.clone());
            scalar::axpy_f32(&mut y1, -1.5, &a);
            (k.axpy_f32)(&mut y2, -1.5, &a);
            for (p, q) in y1.iter().zip(&y2) {
                assert!(same(*p, *q), "[{}] axpy_f32 n={n}", k.isa);
            }
        }
    }
}

#[test]
fn every_listed_set_reports_its_support() {
    assert!(Kernels::for_isa(super::Isa::Scalar).is_some());
    for isa in super::Isa::ALL {
        assert_eq!(Kernels::for_isa(isa).is_some(), isa.is_supported(), "{isa}");
        if let Some(k) = Kernels::for_isa(isa) {
            assert_eq!(k.isa, isa);
        }
    }
    eprintln!(
        "kernel sets on this CPU: {:?}",
        Kernels::all_supported()
            .map(|k| k.isa.name())
            .collect::<Vec<_>>()
    );
}

#[test]
fn softmax_exp_is_glibcs_expf() {
    // The edges first (the thresholds are glibc's), then a sweep of the softmax's range.
    assert_eq!(scalar::exp_softmax(f32::NEG_INFINITY), 0.0);
    assert_eq!(scalar::exp_softmax(0.0), 1.0);
    assert_eq!(scalar::exp_softmax(-104.0), 0.0);
    assert_eq!(scalar::exp_softmax(89.0), f32::INFINITY);
    assert!(scalar::exp_softmax(f32::NAN).is_nan());
    assert!(
        scalar::exp_softmax(-103.0) > 0.0,
        "subnormal results are kept"
    );
    // On glibc, `f32::exp` is glibc's `expf`, the function llama.cpp calls: equal bits.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let mut bits = (-104.0f32).to_bits();
        while bits > 0x8000_0000 {
            let x = f32::from_bits(bits);
            assert_eq!(
                scalar::exp_softmax(x).to_bits(),
                x.exp().to_bits(),
                "x = {x:e}"
            );
            bits -= 997;
        }
        let mut x = 0.0f32;
        while x < 89.0 {
            assert_eq!(
                scalar::exp_softmax(x).to_bits(),
                x.exp().to_bits(),
                "x = {x:e}"
            );
            x += 0.000_37;
        }
    }
    // Everywhere: within 1 ulp of the exact value.
    let mut x = -87.0f32;
    while x < 88.0 {
        let (got, want) = (scalar::exp_softmax(x) as f64, (x as f64).exp());
        assert!(((got - want) / want).abs() < 1.2e-7, "x = {x}");
        x += 0.0137;
    }
}

#[test]
fn ggml_exp_is_accurate_and_total() {
    // ggml's own bound for this algorithm is 1.45 ulp plus rounding.
    let mut x = -87.0f32;
    while x < 88.0 {
        let (got, want) = (scalar::exp_ggml(x) as f64, (x as f64).exp());
        assert!(((got - want) / want).abs() < 2.5e-7, "x = {x}");
        x += 0.0137;
    }
    assert_eq!(scalar::exp_ggml(0.0), 1.0);
    assert_eq!(scalar::exp_ggml(-200.0), 0.0);
    assert_eq!(scalar::exp_ggml(f32::NEG_INFINITY), 0.0);
    assert_eq!(scalar::exp_ggml(200.0), f32::INFINITY);
    assert_eq!(scalar::exp_ggml(f32::INFINITY), f32::INFINITY);
    assert!(scalar::exp_ggml(f32::NAN).is_nan());
    assert!(scalar::exp_ggml(-100.0) > 0.0, "subnormal results are kept");
    assert_eq!(scalar::silu(0.0), 0.0);
    assert_eq!(scalar::silu(-200.0), -0.0);
    assert_eq!(scalar::silu(200.0), 200.0);
}

#[test]
fn exp_is_accurate_and_total() {
    // Against f64 exp over the range softmax and SiLU use, and the edges.
    let mut worst = 0.0f64;
    let mut x = -100.0f32;
    while x < 88.0 {
        let got = scalar::exp(x) as f64;
        let want = (x as f64).exp();
        if want > 1e-37 {
            worst = worst.max(((got - want) / want).abs());
        }
        x += 0.0137;
    }
    assert!(worst < 5e-7, "relative error {worst}");
    assert_eq!(scalar::exp(0.0), 1.0);
    assert_eq!(scalar::exp(f32::NEG_INFINITY), 0.0);
    assert_eq!(scalar::exp(-200.0), 0.0);
    assert_eq!(scalar::exp(f32::INFINITY), f32::INFINITY);
    assert!(scalar::exp(f32::NAN).is_nan());
    assert!(scalar::exp(-90.0) > 0.0, "subnormal results are kept");
}

/// A gated activation of set `k` (`got`) on gates `g` and ups `u` equals the scalar `spec` bit
/// for bit (NaNs as NaNs).
type Gated = fn(&mut [f32], &[f32]);
fn gated_is_the_spec(k: &Kernels, spec: Gated, got: Gated, g: &[f32], u: &[f32]) {
    let (mut a, mut b) = (g.to_vec(), g.to_vec());
    spec(&mut a, u);
    got(&mut b, u);
    for (i, (p, q)) in a.iter().zip(&b).enumerate() {
        let n = g.len();
        assert!(
            same(*p, *q),
            "[{}] n={n} i={i}: {p} vs {q} (gate {})",
            k.isa,
            g[i]
        );
    }
}

#[test]
fn swiglu_is_bit_identical_to_the_scalar_reference() {
    let mut rng = Rng(5);
    for k in Kernels::all_supported() {
        for n in [0usize, 1, 7, 8, 9, 64, 1536, 1541] {
            let mut g: Vec<f32> = (0..n)
                .map(|i| rng.f32() * if i % 5 == 0 { 120.0 } else { 8.0 })
                .collect();
            if n > 3 {
                g[1] = f32::NAN;
                g[2] = f32::INFINITY;
                g[3] = -f32::INFINITY;
            }
            if n > 7 {
                // Past ggml's |n| > 192 cut-off, and just inside it.
                g[4] = 300.0;
                g[5] = -300.0;
                g[6] = -132.0;
                g[7] = 132.0;
            }
            let u: Vec<f32> = (0..n).map(|_| rng.f32()).collect();
            gated_is_the_spec(&k, scalar::swiglu, k.swiglu, &g, &u);
        }
    }
}

/// Inputs of libm's `tanhf` that reach each of its branches and of its `expm1f`'s, with
/// both signs: the branch points (|z| bits over 10, log(3)/2, log(5/3)/2, the least normal;
/// 2|z| at 1.5·ln 2, ln 2 / 2, 2⁻²⁵) a few ulps either side, every 13th float from 2⁻⁸ to 11
/// (each k of the reduction), every 1021st float, and the specials.
fn tanh_inputs() -> Vec<f32> {
    let mut bits: Vec<u32> = vec![];
    for edge in [
        0x4120_0000u32,
        0x3f0c_9f54,
        0x3e82_c578,
        0x0080_0000,
        0x3f85_1592 - 0x0080_0000,
        0x3eb1_7218 - 0x0080_0000,
        0x3300_0000 - 0x0080_0000,
    ] {
        bits.extend(edge - 3..=edge + 3);
    }
    bits.extend((0x3b80_0000u32..0x4130_0000).step_by(13));
    bits.extend((0..0x7f80_0000u32).step_by(1021));
    bits.extend([0, 1, 0x7f80_0000, 0x7fc0_0000, 0x7f80_0001, 0x7f7f_ffff]);
    let mut v: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
    v.extend(bits.iter().map(|&b| -f32::from_bits(b)));
    v
}

#[test]
fn tanh_is_libms_bit_for_bit() {
    let x = tanh_inputs();
    for k in Kernels::all_supported() {
        let mut y = x.clone();
        (k.tanh)(&mut y);
        for (&x, &y) in x.iter().zip(&y) {
            let want = libm::tanhf(x);
            assert!(
                same(want, y),
                "[{}] tanh({x:e} = {:#x}): {y:e} against {want:e}",
                k.isa,
                x.to_bits()
            );
        }
    }
}

/// Every float (2³² of them) through each SIMD set's tanh against libm's: rare inputs tell
/// apart steps the sample above cannot (a last bit of one of expm1f's coefficients changes a
/// few results). About 30 s a set in a release build; under qemu (the aarch64 cross test) it
/// is left out, run it on a board with `-- --ignored`.
#[test]
#[cfg_attr(
    not(target_arch = "x86_64"),
    ignore = "2^32 evaluations: too slow under emulation"
)]
fn tanh_of_every_float_is_libms() {
    for k in Kernels::all_supported().filter(|k| k.isa != Isa::Scalar) {
        let mut buf = vec![0f32; 1 << 16];
        for hi in 0..1u32 << 16 {
            for (i, v) in buf.iter_mut().enumerate() {
                *v = f32::from_bits(hi << 16 | i as u32);
            }
            (k.tanh)(&mut buf);
            for (i, &y) in buf.iter().enumerate() {
                let x = f32::from_bits(hi << 16 | i as u32);
                let want = libm::tanhf(x);
                assert!(
                    same(want, y),
                    "[{}] tanh({x:e}): {y:e} against {want:e}",
                    k.isa
                );
            }
        }
    }
}

#[test]
fn geglu_is_bit_identical_to_the_scalar_reference() {
    let mut rng = Rng(11);
    for k in Kernels::all_supported() {
        for n in [0usize, 1, 7, 8, 9, 64, 2048, 2053] {
            // Magnitudes from 1e-30 to 1e4, both signs, and the specials.
            let mut g: Vec<f32> = (0..n)
                .map(|i| rng.f32() * 10f32.powi((i % 35) as i32 - 30))
                .collect();
            for (i, s) in [f32::NAN, f32::INFINITY, -f32::INFINITY, 0.0, -0.0, 1e-45]
                .into_iter()
                .enumerate()
            {
                if let Some(v) = g.get_mut(3 * i + 1) {
                    *v = s;
                }
            }
            let u: Vec<f32> = (0..n).map(|_| rng.f32() * 4.0).collect();
            gated_is_the_spec(&k, scalar::geglu, k.geglu, &g, &u);
        }
    }
}

fn bits16(v: &[f16]) -> Vec<u16> {
    v.iter().map(|x| x.to_bits()).collect()
}
fn bits32(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn chunked_attention_equals_the_per_key_spec_even_when_split_into_runs() {
    chunked_attention_equals_the_per_key_spec::<f16>(|a| {
        bits16(a).into_iter().map(u32::from).collect()
    });
    chunked_attention_equals_the_per_key_spec::<f32>(bits32);
}

/// The chunked kernels of the scalar set against the key-by-key spec, for a running sum of type
/// `A` (`bits` its bits).
fn chunked_attention_equals_the_per_key_spec<A: super::attend::RunningSum>(
    bits: impl Fn(&[A]) -> Vec<u32>,
) {
    use super::attend::{attend_f16, Softmax};
    let mut rng = Rng(5);
    let k = Kernels::SCALAR;
    for &(n, hd) in &[(1usize, 64usize), (300, 64), (513, 32), (0, 64)] {
        let keys: Vec<f16> = (0..n * hd)
            .map(|_| f16::from_f32(rng.f32() * 3.0))
            .collect();
        let values: Vec<f16> = (0..n * hd).map(|_| f16::from_f32(rng.f32())).collect();
        let q: Vec<f32> = (0..hd).map(|_| f16::from_f32(rng.f32()).to_f32()).collect();
        let (mut a1, mut s1) = (vec![A::ZERO; hd], Softmax::NEW);
        scalar::attend_f16(&q, &keys, &values, n, 0.125, &mut a1, &mut s1);
        // Whole, and in three runs continuing one state.
        let (mut a2, mut s2) = (vec![A::ZERO; hd], Softmax::NEW);
        attend_f16(&k, &q, &keys, &values, n, 0.125, &mut a2, &mut s2);
        let (mut a3, mut s3) = (vec![A::ZERO; hd], Softmax::NEW);
        let cuts = [0, n / 3, n / 3 + n / 5, n];
        for w in cuts.windows(2) {
            let r = w[0] * hd..w[1] * hd;
            attend_f16(
                &k,
                &q,
                &keys[r.clone()],
                &values[r],
                w[1] - w[0],
                0.125,
                &mut a3,
                &mut s3,
            );
        }
        assert_eq!((bits(&a1), s1.sum.to_bits()), (bits(&a2), s2.sum.to_bits()));
        assert_eq!((bits(&a1), s1.sum.to_bits()), (bits(&a3), s3.sum.to_bits()));
    }
}

#[test]
fn rope_of_every_set_is_the_spec_bit_for_bit() {
    let mut rng = Rng(12);
    for k in Kernels::all_supported() {
        for hd in [64usize, 128, 80] {
            let x: Vec<f32> = (0..hd).map(|_| rng.f32() * 4.0).collect();
            let cs: Vec<f32> = (0..hd - 16).map(|_| rng.f32()).collect();
            for (spec, set) in [
                (scalar::rope as fn(&mut [f32], &[f32]), k.rope),
                (scalar::rope_neox, k.rope_neox),
            ] {
                let (mut a, mut b) = (x.clone(), x.clone());
                spec(&mut a, &cs);
                set(&mut b, &cs);
                assert_eq!(bits32(&a), bits32(&b), "[{}] hd {hd}", k.isa);
            }
        }
    }
}

#[test]
fn the_softmax_chunk_of_every_set_is_the_spec_bit_for_bit_with_ties_nans_and_the_exp_limits() {
    use super::attend::Softmax;
    let mut rng = Rng(11);
    // Values that exercise the running max (ties, signed zeros, NaN, infinities) and every branch
    // of the exponential (NaN, above and below its range, subnormal results).
    let special = [
        0.0,
        -0.0,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1.0,
        1.0,
        -1.0,
        700.0,
        -700.0,
        -830.0,
        -828.0,
        88.7,
        89.0,
        f32::MIN_POSITIVE,
        -f32::MAX,
    ];
    for k in Kernels::all_supported() {
        for case in 0..400 {
            let n = 1 + (rng.next() % 40) as usize;
            let scale = if case % 3 == 0 { 1.0 } else { 0.125 };
            let x: Vec<f32> = (0..n)
                .map(|_| match rng.next() % 4 {
                    0 => special[(rng.next() % special.len() as u64) as usize],
                    1 => rng.f32() * 1000.0,
                    _ => rng.f32() * 8.0,
                })
                .collect();
            let start = match case % 4 {
                0 => Softmax::NEW,
                1 => Softmax { max: 1.0, sum: 3.5 },
                2 => Softmax {
                    max: -0.0,
                    sum: 1.0,
                },
                _ => Softmax {
                    max: 50.0,
                    sum: 0.25,
                },
            };
            let run = |f: super::attend::SoftmaxFn| {
                let (mut x, mut g, mut st) = (x.clone(), vec![false; n], start);
                f(&mut x, &mut g, scale, &mut st);
                (bits32(&x), g, st.max.to_bits(), st.sum.to_bits())
            };
            assert_eq!(
                run(scalar::softmax_chunk),
                run(k.softmax),
                "[{}] case {case}: {x:?} from {start:?}",
                k.isa
            );
        }
        // Signed zeros tying for the max: the earlier one stays the max, as the spec's `>` keeps
        // it (the max's bits are state the next chunk starts from).
        let zeros = [
            (
                vec![-0.0, 0.0, -1.0, 0.0, -0.0, -2.0, 0.0, -3.0, 0.0],
                Softmax::NEW,
            ),
            (
                vec![0.0, -0.0, -1.0, -0.0, 0.0, -2.0, -0.0, -3.0, 0.0],
                Softmax::NEW,
            ),
            (
                vec![-1.0, 0.0, -2.0, 0.0, -0.0, -2.0, 0.0, -3.0],
                Softmax {
                    max: -0.0,
                    sum: 1.0,
                },
            ),
            (
                vec![-1.0, -0.0, -2.0, 0.0, -0.0, -2.0, 0.0, -3.0],
                Softmax { max: 0.0, sum: 1.0 },
            ),
        ];
        for (x, start) in zeros {
            let run = |f: super::attend::SoftmaxFn| {
                let (mut x, mut g, mut st) = (x.clone(), vec![false; x.len()], start);
                f(&mut x, &mut g, 1.0, &mut st);
                (bits32(&x), g, st.max.to_bits(), st.sum.to_bits())
            };
            assert_eq!(
                run(scalar::softmax_chunk),
                run(k.softmax),
                "[{}] {x:?}",
                k.isa
            );
        }
        // The exponential over a dense sweep of (−104, 0]: with the max at 0, the weights are
        // e^s themselves.
        let mut x = vec![0.0f32; 128];
        for c in 0..2000 {
            for (i, v) in x.iter_mut().enumerate() {
                *v = -((c * 128 + i) as f32) * (104.0 / 256_000.0);
            }
            let run = |f: super::attend::SoftmaxFn| {
                let (mut x, mut g) = (x.clone(), vec![false; 128]);
                let mut st = Softmax { max: 0.0, sum: 0.0 };
                f(&mut x, &mut g, 1.0, &mut st);
                (bits32(&x), st.sum.to_bits())
            };
            assert_eq!(
                run(scalar::softmax_chunk),
                run(k.softmax),
                "[{}] sweep {c}",
                k.isa
            );
        }
    }
}

#[test]
fn attention_is_bit_identical_to_the_scalar_reference_for_every_kv_type() {
    use super::attend::{attend_f16, attend_f32, attend_q8_0, Softmax};
    let mut rng = Rng(6);
    let s = Kernels::SCALAR;
    for k in Kernels::all_supported() {
        for &(n, hd) in &[
            (1usize, 64usize),
            (7, 64),
            (300, 64),
            (513, 32),
            (5, 128),
            (131, 256),
            (40, 80),
            (20, 36),
            (0, 64),
        ] {
            let kf: Vec<f32> = (0..n * hd).map(|_| rng.f32() * 3.0).collect();
            let vf: Vec<f32> = (0..n * hd).map(|_| rng.f32()).collect();
            let q: Vec<f32> = (0..hd).map(|_| rng.f32() * 2.0).collect();
            // f16
            let k16: Vec<f16> = kf.iter().map(|&x| f16::from_f32(x)).collect();
            let v16: Vec<f16> = vf.iter().map(|&x| f16::from_f32(x)).collect();
            let q16: Vec<f32> = q.iter().map(|&x| f16::from_f32(x).to_f32()).collect();
            let mut r = [
                (vec![f16::ZERO; hd], Softmax::NEW),
                (vec![f16::ZERO; hd], Softmax::NEW),
            ];
            for (t, (acc, st)) in [s, k].iter().zip(r.iter_mut()) {
                attend_f16(t, &q16, &k16, &v16, n, 0.125, acc, st);
            }
            assert_eq!(bits16(&r[0].0), bits16(&r[1].0), "[{}] f16 n={n}", k.isa);
            assert_eq!(r[0].1, r[1].1, "[{}] f16 n={n}", k.isa);
            // f16 cache, f32 running sum (ember's numerics), the query as it is.
            let mut r = [
                (vec![0.0f32; hd], Softmax::NEW),
                (vec![0.0f32; hd], Softmax::NEW),
            ];
            for (t, (acc, st)) in [s, k].iter().zip(r.iter_mut()) {
                attend_f16(t, &q, &k16, &v16, n, 0.125, acc, st);
            }
            assert_eq!(
                bits32(&r[0].0),
                bits32(&r[1].0),
                "[{}] f16→f32 n={n}",
                k.isa
            );
            assert_eq!(r[0].1, r[1].1, "[{}] f16→f32 n={n}", k.isa);
            // f32
            let mut r = [
                (vec![0.0f32; hd], Softmax::NEW),
                (vec![0.0f32; hd], Softmax::NEW),
            ];
            for (t, (acc, st)) in [s, k].iter().zip(r.iter_mut()) {
                attend_f32(t, &q, &kf, &vf, n, 0.125, acc, st);
            }
            assert_eq!(bits32(&r[0].0), bits32(&r[1].0), "[{}] f32 n={n}", k.isa);
            assert_eq!(r[0].1, r[1].1, "[{}] f32 n={n}", k.isa);
            if hd % QK != 0 {
                continue;
            }
            // q8_0
            let quant = |x: &[f32]| -> Vec<BlockQ8_0> {
                let mut b = vec![BlockQ8_0::default(); x.len() / QK];
                crate::weights::blocks::quantize_q8_0(x, &mut b);
                b
            };
            let (k8, v8) = (quant(&kf), quant(&vf));
            let nb = hd / QK;
            let (mut qq, mut qd, mut qsum) = (vec![0i8; hd], vec![0.0f32; nb], vec![0.0f32; nb]);
            scalar::quantize_row(&q, &mut qq, &mut qd, &mut qsum);
            let qa = QActs {
                qs: &qq,
                d: &qd,
                s: &qsum,
                sums: &[],
                nb,
            };
            let mut r = [
                (vec![0.0f32; hd], Softmax::NEW),
                (vec![0.0f32; hd], Softmax::NEW),
            ];
            for (t, (acc, st)) in [s, k].iter().zip(r.iter_mut()) {
                attend_q8_0(t, &qa, &k8, &v8, n, 0.125, acc, st);
            }
            assert_eq!(bits32(&r[0].0), bits32(&r[1].0), "[{}] q8_0 n={n}", k.isa);
            assert_eq!(r[0].1, r[1].1, "[{}] q8_0 n={n}", k.isa);
            // The q8_0 result is close to the f32 one (a sanity check of the format, not bits).
            if n > 0 {
                let mut f = (vec![0.0f32; hd], Softmax::NEW);
                attend_f32(&s, &q, &kf, &vf, n, 0.125, &mut f.0, &mut f.1);
                for (a, b) in f.0.iter().zip(&r[0].0) {
                    assert!(
                        (a / f.1.sum - b / r[0].1.sum).abs() < 0.05,
                        "q8_0 vs f32: {a} {b}"
                    );
                }
            }
        }
    }
}

#[test]
fn q8_mad_matches_the_scalar_reference() {
    let mut rng = Rng(8);
    for k in Kernels::all_supported() {
        let blocks: Vec<BlockQ8_0> = (0..3)
            .map(|_| BlockQ8_0 {
                d: f16::from_f32(rng.f32()),
                qs: core::array::from_fn(|_| rng.byte() as i8),
            })
            .collect();
        let y: Vec<f32> = (0..96).map(|_| rng.f32()).collect();
        let (mut a, mut b) = (y.clone(), y);
        super::attend::mad_q8_0_scalar(&mut a, &blocks, 0.37);
        (k.mad_q8_0)(&mut b, &blocks, 0.37);
        assert_eq!(bits32(&a), bits32(&b), "[{}] mad_q8_0", k.isa);
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
    /// Random shapes and values (every activation family, every weight format): each SIMD set
    /// equals the scalar spec bit for bit, for activation quantization and for the GEMMs.
    #[test]
    fn simd_equals_the_scalar_spec_on_random_shapes(
        nb in 1usize..40,
        rows in 1usize..12,
        toks in 1usize..9,
        fam in 0usize..FAMILIES,
        seed in proptest::prelude::any::<u64>(),
    ) {
        let mut rng = Rng(seed | 1);
        let x = activations(&mut rng, toks * nb * QK, fam);
        let q = Quant::of(&Kernels::SCALAR, &x, nb);
        let w1 = q4_1_blocks(&mut rng, rows * nb);
        let w0 = q4_0_blocks(&mut rng, rows * nb);
        let w8 = q8_0_blocks(&mut rng, rows * nb);
        for k in Kernels::all_supported() {
            proptest::prop_assert_eq!(Quant::of(&k, &x, nb).bits(), q.bits());
            let mut r1 = vec![0.0; toks * rows];
            let mut r2 = vec![0.0; toks * rows];
            macro_rules! both {
                ($f:ident, $w:expr) => {
                    (Kernels::SCALAR.$f)($w, &q.acts(), &mut OutRows::new(&mut r1, rows, rows, toks));
                    (k.$f)($w, &q.acts(), &mut OutRows::new(&mut r2, rows, rows, toks));
                    for (a, b) in r1.iter().zip(&r2) {
                        proptest::prop_assert!(same(*a, *b), "[{}] {}: {} vs {}", k.isa, stringify!($f), a, b);
                    }
                };
            }
            both!(gemm_q4_1, &w1);
            both!(gemm_q4_0, &w0);
            both!(gemm_q8_0, &w8);
        }
    }
}

/// Runs the tiled attention of `rows` queries over `keys`/`values` (f16, `hd` each) with the
/// first row seeing `first + 1` keys.
fn tiled(
    k: &Kernels,
    q: &[f32],
    rows: usize,
    hd: usize,
    first: usize,
    kv: &[(Vec<f16>, Vec<f16>)],
) -> Vec<f32> {
    use super::attend::{attend_tiled, tile_scratch_len};
    let mut scratch = vec![0.0f32; tile_scratch_len(hd, 1)];
    let mut out = vec![0.0f32; rows * hd];
    let mut load = |j: usize, key: &mut [f32], value: &mut [f32]| {
        for d in 0..hd {
            key[d] = kv[j].0[d].to_f32();
            value[d] = kv[j].1[d].to_f32();
        }
    };
    attend_tiled(
        k,
        q,
        hd,
        (rows, 1),
        hd,
        first,
        0.125,
        &mut load,
        &mut scratch,
        &mut |r, d, v| out[r * hd + d] = v,
    );
    out
}

#[test]
fn tiled_attention_is_bit_identical_across_sets_and_is_causal_softmax_attention() {
    let mut rng = Rng(11);
    let hd = 64;
    for (rows, first) in [
        (1usize, 0usize),
        (64, 0),
        (37, 5),
        (64, 70),
        (13, 130),
        (64, 191),
    ] {
        let n_keys = first + rows;
        let kv: Vec<(Vec<f16>, Vec<f16>)> = (0..n_keys)
            .map(|_| {
                let key = (0..hd).map(|_| f16::from_f32(rng.f32() * 4.0)).collect();
                let value = (0..hd).map(|_| f16::from_f32(rng.f32())).collect();
                (key, value)
            })
            .collect();
        let q: Vec<f32> = (0..rows * hd).map(|_| rng.f32() * 3.0).collect();
        let want = tiled(&Kernels::SCALAR, &q, rows, hd, first, &kv);
        for k in Kernels::all_supported() {
            let got = tiled(&k, &q, rows, hd, first, &kv);
            assert_eq!(
                bits32(&got),
                bits32(&want),
                "[{}] rows {rows} first {first}",
                k.isa
            );
        }
        // Against plain causal softmax attention in f64.
        for r in 0..rows {
            let seen = first + r + 1;
            let scores: Vec<f64> = (0..seen)
                .map(|j| {
                    (0..hd)
                        .map(|d| q[r * hd + d] as f64 * kv[j].0[d].to_f32() as f64)
                        .sum::<f64>()
                        * 0.125
                })
                .collect();
            let mx = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = scores.iter().map(|s| (s - mx).exp()).collect();
            let total: f64 = w.iter().sum();
            for d in 0..hd {
                let v: f64 = (0..seen)
                    .map(|j| w[j] * kv[j].1[d].to_f32() as f64)
                    .sum::<f64>()
                    / total;
                let g = want[r * hd + d] as f64;
                assert!(
                    (g - v).abs() < 1e-5,
                    "rows {rows} first {first} r {r} d {d}: {g} vs {v}"
                );
            }
        }
    }
}

#[test]
fn fma_rows_is_bit_identical_to_the_scalar_reference() {
    let mut rng = Rng(12);
    for k in Kernels::all_supported() {
        // Every count of whole registers in a pass (1 to 8 of 8 lanes, 1 to 16 of 4), the
        // tails, more than a pass.
        let mut cases = vec![
            (0usize, 3usize, 8usize),
            (1, 5, 1),
            (7, 64, 9),
            (8, 1, 8),
            (64, 64, 64),
            (67, 13, 70),
            (130, 4, 130),
            (256, 9, 260),
        ];
        cases.extend((4..=72).step_by(4).map(|n| (n, 1 + n % 7, n + n % 3)));
        for (n, rows, stride) in cases {
            let a: Vec<f32> = (0..rows).map(|_| rng.f32() * 3.0).collect();
            let b: Vec<f32> = (0..rows * stride).map(|_| rng.f32()).collect();
            let init: Vec<f32> = (0..n).map(|_| rng.f32()).collect();
            let (mut want, mut got) = (init.clone(), init);
            scalar::fma_rows(&mut want, &a, &b, stride);
            (k.fma_rows)(&mut got, &a, &b, stride);
            assert_eq!(bits32(&got), bits32(&want), "[{}] n {n} rows {rows}", k.isa);
        }
    }
}

/// Random blocks of a table format: random bytes with finite f16 fields (the format's scales are
/// wherever its layout puts them; any byte there is read as an f16, so every f16-aligned pair
/// that decodes to a non-finite value is replaced).
fn table_blocks(rng: &mut Rng, ty: crate::weights::GgmlType, rows: usize, cols: usize) -> Vec<u16> {
    let bytes = ty.row_bytes(cols as u64).unwrap() as usize * rows;
    (0..bytes / 2)
        .map(|_| loop {
            let h = rng.next() as u16;
            let v = f16::from_bits(h);
            if v.is_finite() && v.to_f32().abs() < 4.0 {
                break h;
            }
        })
        .collect()
}

#[test]
fn block_table_gemm_is_the_dot_spec_bit_for_bit_on_every_set() {
    use crate::weights::quants::{Acts, QK_K};
    use crate::weights::BLOCK_TYPES;
    let mut rng = Rng(0x51ab_1e5e_ed00_0001);
    for kind in BLOCK_TYPES.iter() {
        let ty = kind.ty;
        for &cols in &[
            ty.block_size(),
            2 * ty.block_size(),
            576usize.max(ty.block_size()),
            1536,
            2080, // more groups than the x86 strips pack at a time
        ] {
            if cols % ty.block_size() != 0 {
                continue;
            }
            // Decode, also over two passes of 16 rows and a part; more tokens than one token
            // tile; a strip of 16 rows and a part, over more tokens than one pass of the strips
            // keeps; and small batches (one tile of tokens, and a tile and a part).
            for (rows, toks) in [(7, 1), (37, 1), (5, 70), (21, 133), (21, 3), (21, 6)] {
                let w16 = table_blocks(&mut rng, ty, rows, cols);
                let w: &[u8] = bytemuck::cast_slice(&w16);
                let rb = ty.row_bytes(cols as u64).unwrap() as usize;
                let x: Vec<f32> = (0..toks * cols).map(|_| rng.f32() * 3.0).collect();
                let q = match kind.acts {
                    Acts::Q8_0 | Acts::Q8_1 => Quant::of(&Kernels::SCALAR, &x, cols / QK),
                    Acts::Q8K => Quant::q8k(&x, cols / QK_K),
                };
                let nb = q.nb;
                // With the activations' integer sums and without (a product may read them).
                let bare = q.without_sums();
                let both = [q.acts(), bare.acts()];
                let mut want = vec![0f32; toks * rows];
                for r in 0..rows {
                    for t in 0..toks {
                        want[t * rows + r] = (kind.dot)(
                            &w[r * rb..(r + 1) * rb],
                            &q.qs[t * cols..(t + 1) * cols],
                            &q.d[t * nb..(t + 1) * nb],
                            q.s.get(t * nb..(t + 1) * nb).unwrap_or(&[]),
                        );
                    }
                }
                for (k, a) in Kernels::all_supported().flat_map(|k| both.map(|a| (k, a))) {
                    let mut got = vec![0f32; toks * rows];
                    let mut out = OutRows::new(&mut got, rows, rows, toks);
                    (k.gemm_blocks)(kind, w, rb, &a, &mut out);
                    for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            same(*g, *e),
                            "{} {} cols {cols} sums {} [{i}]: {g} vs {e}",
                            k.isa,
                            ty.name(),
                            a.sums.len()
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn the_supported_type_list_names_every_table_row() {
    use crate::weights::{GgmlType, BLOCK_TYPES};
    let names: Vec<&str> = GgmlType::MATMUL_NAMES.split(", ").collect();
    for b in BLOCK_TYPES.iter() {
        assert!(b.ty.is_matmul_supported());
        assert!(
            names.contains(&b.ty.name()),
            "{} missing from MATMUL_NAMES",
            b.ty.name()
        );
    }
    assert_eq!(names.len(), BLOCK_TYPES.len() + 3);
}

#[test]
fn kernel_names_choose_the_set_and_the_order() {
    use super::{Isa, Numerics};
    let best = Kernels::best();
    assert_eq!(Kernels::from_name("").map(|k| k.name()), Some(best.name()));
    assert_eq!(
        Kernels::from_name("auto").map(|k| k.numerics),
        Some(Numerics::Ember)
    );
    let exact = Kernels::from_name("exact").unwrap();
    assert_eq!((exact.isa, exact.numerics), (best.isa, Numerics::Exact));
    let s = Kernels::from_name("scalar+exact").unwrap();
    assert_eq!(
        (s.isa, s.numerics, s.name()),
        (Isa::Scalar, Numerics::Exact, "scalar+exact")
    );
    for k in Kernels::all_supported() {
        // Every name a table prints reads back as that table.
        for k in [k, k.exact()] {
            let back = Kernels::from_name(k.name()).unwrap();
            assert_eq!((back.isa, back.numerics), (k.isa, k.numerics));
        }
    }
    for bad in ["avx9", "exact+exact", "+exact", "scalar+", "EXACT"] {
        assert!(Kernels::from_name(bad).is_none(), "{bad}");
    }
}

/// Checks every set's `gemm_blocks` of `rows` rows of `w` (rows of `rb` bytes) with the tokens
/// of `q` (Q8_0 / Q8_1 or Q8_K blocks, as the format takes) against the format's dot spec, bit
/// for bit; `what` names the case.
fn gemm_blocks_is_the_spec(
    kind: &crate::weights::BlockType,
    w: &[u8],
    rb: usize,
    rows: usize,
    q: &Quant,
    what: &str,
) {
    let nb = q.nb;
    let cols = match kind.acts {
        crate::weights::quants::Acts::Q8K => nb * crate::weights::quants::QK_K,
        _ => nb * QK,
    };
    let toks = q.d.len() / nb;
    for k in Kernels::all_supported() {
        let mut got = vec![0f32; toks * rows];
        let mut out = OutRows::new(&mut got, rows, rows, toks);
        (k.gemm_blocks)(kind, w, rb, &q.acts(), &mut out);
        for t in 0..toks {
            for r in 0..rows {
                let want = (kind.dot)(
                    &w[r * rb..(r + 1) * rb],
                    &q.qs[t * cols..(t + 1) * cols],
                    &q.d[t * nb..(t + 1) * nb],
                    q.s.get(t * nb..(t + 1) * nb).unwrap_or(&[]),
                );
                let g = got[t * rows + r];
                assert!(
                    same(g, want),
                    "{} {} {what} [{t}, {r}]: {g} vs {want}",
                    k.isa,
                    kind.ty.name()
                );
            }
        }
    }
}

/// The one-scale formats at the edges of their quants (every byte 0x00, 0xff, 0x80 or 0x77,
/// the scales 1.0) against activations at ±127: the AVX2 strips add up to eight `maddubs`
/// products in 16 bits (their decode two), and a bound one too loose would saturate here.
#[test]
fn block_table_gemm_at_the_quants_edges_is_the_spec() {
    use crate::weights::{GgmlType, BLOCK_TYPES};
    let (rows, cols) = (19, 576);
    for (kind, toks) in BLOCK_TYPES.iter().flat_map(|k| [(k, 1), (k, 4), (k, 9)]) {
        let ty = kind.ty;
        let mins = matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1);
        if !matches!(
            ty,
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::IQ4_NL
        ) && !mins
        {
            continue;
        }
        let rb = ty.row_bytes(cols as u64).unwrap() as usize;
        for fill in [0x00u8, 0xff, 0x80, 0x77] {
            let mut w = vec![fill; rows * rb];
            for b in w.chunks_exact_mut(ty.type_size()) {
                b[..2].copy_from_slice(&0x3c00u16.to_le_bytes());
                if mins {
                    b[2..4].copy_from_slice(&0x3c00u16.to_le_bytes());
                }
            }
            for sign in [1.0f32, -1.0, 0.0] {
                // 0.0: alternating signs, block by block.
                let x: Vec<f32> = (0..toks * cols)
                    .map(|i| {
                        if sign == 0.0 {
                            [1.0, -1.0][i / QK % 2]
                        } else {
                            sign
                        }
                    })
                    .collect();
                let q = Quant::of(&Kernels::SCALAR, &x, cols / QK);
                gemm_blocks_is_the_spec(kind, &w, rb, rows, &q, &format!("{fill:#x} {sign}"));
            }
        }
    }
}

/// The K formats in batches of 2 to 27 tokens (the AVX-512 sixteen-row kernel takes Q4_K's from
/// 4 tokens and Q5_K's and Q6_K's from 8, the four-row loop the others; its tiles of 16, 8 and
/// 4 tokens and the parts left), over one and two strips of sixteen rows and a part: random
/// blocks with the minimum's scale ±0 in every third block, and blocks at the quants' edges
/// (every byte 0xff or 0x77: quants 15 or 7, 6-bit scales and minimums 63 or 55) against
/// activations at ±127, where the integer sums are largest.
#[test]
fn block_table_gemm_of_k_formats_in_batches_is_the_spec() {
    use crate::weights::quants::QK_K;
    use crate::weights::{GgmlType, BLOCK_TYPES};
    let mut rng = Rng(0x4b16_0001_5eed_0003);
    for kind in BLOCK_TYPES.iter() {
        let ty = kind.ty;
        if !matches!(ty, GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K) {
            continue;
        }
        for (rows, cols) in [(16, QK_K), (37, 1536)] {
            let rb = ty.row_bytes(cols as u64).unwrap() as usize;
            let mut random: Vec<u8> =
                bytemuck::cast_slice(&table_blocks(&mut rng, ty, rows, cols)).to_vec();
            if ty != GgmlType::Q6_K {
                for (i, b) in random.chunks_exact_mut(ty.type_size()).enumerate() {
                    // dmin (f16 at byte 2): +0 or −0 in every third block.
                    match i % 6 {
                        0 => b[2..4].copy_from_slice(&0x0000u16.to_le_bytes()),
                        3 => b[2..4].copy_from_slice(&0x8000u16.to_le_bytes()),
                        _ => {}
                    }
                }
            }
            let edges = [0xffu8, 0x77].map(|fill| {
                let mut w = vec![fill; rows * rb];
                for b in w.chunks_exact_mut(ty.type_size()) {
                    // d and dmin 1.0 (Q6_K's d is its last two bytes).
                    if ty == GgmlType::Q6_K {
                        let n = b.len();
                        b[n - 2..].copy_from_slice(&0x3c00u16.to_le_bytes());
                    } else {
                        b[..2].copy_from_slice(&0x3c00u16.to_le_bytes());
                        b[2..4].copy_from_slice(&0x3c00u16.to_le_bytes());
                    }
                }
                w
            });
            for toks in (2..=9).chain([12, 16, 21, 27]) {
                let x: Vec<f32> = (0..toks * cols).map(|_| rng.f32() * 3.0).collect();
                let mut q = Quant::q8k(&x, cols / QK_K);
                let what = format!("random, {rows} rows, {toks} tokens");
                gemm_blocks_is_the_spec(kind, &random, rb, rows, &q, &what);
                // The last token's block 0 scaled by ∞: where dmin is ±0 the spec skips the
                // minimum's step (0·∞ would make it NaN) and the row's result stays ±∞.
                q.d[(toks - 1) * q.nb] = f32::INFINITY;
                gemm_blocks_is_the_spec(kind, &random, rb, rows, &q, &format!("{what}, ∞"));
                for (w, fill) in edges.iter().zip(["0xff", "0x77"]) {
                    for sign in [1.0f32, -1.0, 0.0] {
                        // 0.0: alternating signs, group by group.
                        let x: Vec<f32> = (0..toks * cols)
                            .map(|i| match sign {
                                0.0 => [1.0, -1.0][i / QK % 2],
                                s => s,
                            })
                            .collect();
                        let q = Quant::q8k(&x, cols / QK_K);
                        let what = format!("{fill} {sign}, {rows} rows, {toks} tokens");
                        gemm_blocks_is_the_spec(kind, w, rb, rows, &q, &what);
                    }
                }
            }
        }
    }
}

/// Groups whose minimum is ±0 are skipped by the spec's minimum chain. A set may drop that skip
/// only while it changes nothing: here some activation sums are infinite or NaN, where a skipped
/// group and a fused multiply-add by 0 differ (0·∞ is NaN), and others are finite.
#[test]
fn block_table_gemm_skips_zero_minimums_as_the_spec() {
    use crate::weights::{GgmlType, BLOCK_TYPES};
    let mut rng = Rng(0x2e60_0001_5eed_0002);
    let (rows, cols) = (19, 576);
    for kind in BLOCK_TYPES.iter() {
        let ty = kind.ty;
        if !matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
            continue;
        }
        let rb = ty.row_bytes(cols as u64).unwrap() as usize;
        let mut w: Vec<u8> = bytemuck::cast_slice(&table_blocks(&mut rng, ty, rows, cols)).to_vec();
        for (i, b) in w.chunks_exact_mut(ty.type_size()).enumerate() {
            // The minimum (f16 at byte 2): +0 or −0 in every third group.
            match i % 6 {
                0 => b[2..4].copy_from_slice(&0x0000u16.to_le_bytes()),
                3 => b[2..4].copy_from_slice(&0x8000u16.to_le_bytes()),
                _ => {}
            }
        }
        for toks in [1, 2, 3, 4, 6, 9] {
            let x: Vec<f32> = (0..toks * cols).map(|_| rng.f32() * 3.0).collect();
            let mut q = Quant::of(&Kernels::SCALAR, &x, cols / QK);
            let nb = q.nb;
            for poison in [
                None,
                Some(f32::INFINITY),
                Some(f32::NEG_INFINITY),
                Some(f32::NAN),
            ] {
                if let Some(v) = poison {
                    // A block sum of the last token, in a group whose minimum is +0.
                    q.s[(toks - 1) * nb + 6] = v;
                }
                gemm_blocks_is_the_spec(
                    kind,
                    &w,
                    rb,
                    rows,
                    &q,
                    &format!("{toks} tokens {poison:?}"),
                );
            }
        }
    }
}

/// f16 → f32 of every set is the spec's for every f16 value (zeros, subnormals, infinities and
/// NaNs among them), at lengths around the vector width.
#[test]
fn f16_f32_of_every_set_is_the_spec() {
    let all: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
    for k in Kernels::all_supported() {
        for n in [0usize, 1, 7, 8, 9, 17, all.len()] {
            let (mut want, mut got) = (vec![0f32; n], vec![1f32; n]);
            crate::kernels::scalar::f16_f32(&all[..n], &mut want);
            (k.f16_f32)(&all[..n], &mut got);
            for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                assert!(same(*g, *e), "{} [{i}]: {g} vs {e}", k.isa);
            }
        }
    }
}

/// The tiled attention of a KV head's query heads together (each tile of keys and values loaded
/// once for all of them) gives each head the bits of that head attended alone, on every set.
#[test]
fn tiled_attention_of_grouped_heads_equals_each_head_alone() {
    use super::attend::{attend_tiled, tile_scratch_len};
    let mut rng = Rng(23);
    let (hd, heads) = (64, 3);
    for (rows, first) in [(64usize, 0usize), (37, 70), (64, 130)] {
        let n_keys = first + rows;
        let kv: Vec<(Vec<f32>, Vec<f32>)> = (0..n_keys)
            .map(|_| {
                let key = (0..hd).map(|_| rng.f32() * 4.0).collect();
                let value = (0..hd).map(|_| rng.f32()).collect();
                (key, value)
            })
            .collect();
        // Rows of `heads` query heads side by side, as the forward pass keeps them.
        let stride = heads * hd;
        let q: Vec<f32> = (0..rows * stride).map(|_| rng.f32() * 3.0).collect();
        let run = |k: &Kernels, q: &[f32], heads: usize| -> Vec<f32> {
            let mut scratch = vec![0.0f32; tile_scratch_len(hd, heads)];
            let mut out = vec![0.0f32; rows * heads * hd];
            let mut load = |j: usize, key: &mut [f32], value: &mut [f32]| {
                key.copy_from_slice(&kv[j].0);
                value.copy_from_slice(&kv[j].1);
            };
            attend_tiled(
                k,
                q,
                stride,
                (rows, heads),
                hd,
                first,
                0.125,
                &mut load,
                &mut scratch,
                &mut |r, col, v| out[r * heads * hd + col] = v,
            );
            out
        };
        for k in Kernels::all_supported() {
            let together = run(&k, &q, heads);
            for g in 0..heads {
                let alone = run(&k, &q[g * hd..], 1);
                for r in 0..rows {
                    assert_eq!(
                        bits32(&together[r * stride + g * hd..r * stride + (g + 1) * hd]),
                        bits32(&alone[r * hd..(r + 1) * hd]),
                        "[{}] rows {rows} first {first} head {g} row {r}",
                        k.isa
                    );
                }
            }
        }
    }
}
