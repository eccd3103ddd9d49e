//! One shared runner: every kernel set this CPU supports against the scalar reference, on random
//! and edge inputs, for every block count up to 20 and the model's widths.

use super::{scalar, Kernels};
use crate::weights::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1, QK};
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

/// |a - b| within a tolerance scaled by the magnitude of the terms summed.
fn close(a: f32, b: f32, scale: f32) -> bool {
    if !a.is_finite() || !b.is_finite() {
        return !a.is_finite() && !b.is_finite();
    }
    (a - b).abs() <= 1e-5 * scale.max(1e-30) + 1e-6 * a.abs().max(b.abs())
}

/// Bitwise view (f16 NaN != NaN under `==`).
fn bytes<T: bytemuck::Pod>(v: &[T]) -> Vec<u8> {
    bytemuck::cast_slice(v).to_vec()
}

#[test]
fn quantization_is_bit_identical_to_the_spec() {
    let mut rng = Rng(1);
    for k in Kernels::all_supported() {
        for nb in block_counts() {
            for fam in 0..FAMILIES {
                let x = activations(&mut rng, nb * QK, fam);
                let (mut a, mut b) = (
                    vec![BlockQ8_0::default(); nb],
                    vec![BlockQ8_0::default(); nb],
                );
                (Kernels::SCALAR.quantize_q8_0)(&x, &mut a);
                (k.quantize_q8_0)(&x, &mut b);
                assert_eq!(
                    bytes(&a),
                    bytes(&b),
                    "[{}] q8_0 nb={nb} family={fam}",
                    k.isa
                );
                let (mut a, mut b) = (
                    vec![BlockQ8_1::default(); nb],
                    vec![BlockQ8_1::default(); nb],
                );
                (Kernels::SCALAR.quantize_q8_1)(&x, &mut a);
                (k.quantize_q8_1)(&x, &mut b);
                assert_eq!(
                    bytes(&a),
                    bytes(&b),
                    "[{}] q8_1 nb={nb} family={fam}",
                    k.isa
                );
            }
        }
    }
}

#[test]
fn quantization_handles_nan_and_infinity() {
    let mut x = vec![1.0f32; QK];
    x[3] = f32::NAN;
    x[5] = f32::INFINITY;
    for k in Kernels::all_supported() {
        let mut a = vec![BlockQ8_1::default(); 1];
        let mut b = vec![BlockQ8_1::default(); 1];
        (Kernels::SCALAR.quantize_q8_1)(&x, &mut a);
        (k.quantize_q8_1)(&x, &mut b);
        assert_eq!(bytes(&a), bytes(&b), "[{}]", k.isa);
    }
}

#[test]
fn gemm_matches_the_scalar_reference() {
    let mut rng = Rng(2);
    for k in Kernels::all_supported() {
        for nb in block_counts() {
            for fam in 0..FAMILIES {
                let rows = 3;
                let toks = 2;
                let x = activations(&mut rng, toks * nb * QK, fam);
                let mut x80 = vec![BlockQ8_0::default(); toks * nb];
                let mut x81 = vec![BlockQ8_1::default(); toks * nb];
                (Kernels::SCALAR.quantize_q8_0)(&x, &mut x80);
                (Kernels::SCALAR.quantize_q8_1)(&x, &mut x81);

                let w = q4_1_blocks(&mut rng, rows * nb);
                let (mut a, mut b) = (vec![0.0; rows * toks], vec![0.0; rows * toks]);
                (Kernels::SCALAR.gemm_q4_1_q8_1)(&w, &x81, nb, &mut a, rows);
                (k.gemm_q4_1_q8_1)(&w, &x81, nb, &mut b, rows);
                let scale: f32 = x.iter().map(|v| v.abs()).sum::<f32>().min(f32::MAX);
                for (i, (&p, &q)) in a.iter().zip(&b).enumerate() {
                    assert!(
                        close(p, q, scale),
                        "[{}] q4_1 nb={nb} fam={fam} i={i}: {p} vs {q}",
                        k.isa
                    );
                }

                let w = q4_0_blocks(&mut rng, rows * nb);
                (Kernels::SCALAR.gemm_q4_0_q8_0)(&w, &x80, nb, &mut a, rows);
                (k.gemm_q4_0_q8_0)(&w, &x80, nb, &mut b, rows);
                for (&p, &q) in a.iter().zip(&b) {
                    assert!(
                        close(p, q, scale),
                        "[{}] q4_0 nb={nb} fam={fam}: {p} vs {q}",
                        k.isa
                    );
                }

                let w = q8_0_blocks(&mut rng, rows * nb);
                (Kernels::SCALAR.gemm_q8_0_q8_0)(&w, &x80, nb, &mut a, rows);
                (k.gemm_q8_0_q8_0)(&w, &x80, nb, &mut b, rows);
                for (&p, &q) in a.iter().zip(&b) {
                    assert!(
                        close(p, q, scale),
                        "[{}] q8_0 nb={nb} fam={fam}: {p} vs {q}",
                        k.isa
                    );
                }
            }
        }
    }
}

#[test]
fn vector_ops_match_the_scalar_reference() {
    let mut rng = Rng(3);
    for k in Kernels::all_supported() {
        for n in [0usize, 1, 7, 8, 15, 16, 17, 31, 64, 65, 100] {
            let a: Vec<f32> = (0..n).map(|_| rng.f32()).collect();
            let b: Vec<f32> = (0..n).map(|_| rng.f32()).collect();
            let h: Vec<f16> = a.iter().map(|&v| f16::from_f32(v)).collect();
            let scale = n as f32;
            assert!(
                close(scalar::vec_dot_f32(&a, &b), (k.dot_f32)(&a, &b), scale),
                "[{}] dot_f32 n={n}",
                k.isa
            );
            assert!(
                close(
                    scalar::vec_dot_f16_f32(&h, &b),
                    (k.dot_f16_f32)(&h, &b),
                    scale
                ),
                "[{}] dot_f16 n={n}",
                k.isa
            );
            let (mut y1, mut y2) = (b.clone(), b.clone());
            scalar::axpy_f16(&mut y1, 0.3, &h);
            (k.axpy_f16)(&mut y2, 0.3, &h);
            for (p, q) in y1.iter().zip(&y2) {
                assert!(close(*p, *q, 1.0), "[{}] axpy_f16 n={n}", k.isa);
            }
            let (mut y1, mut y2) = (b.clone(), b.clone());
            scalar::axpy_f32(&mut y1, -1.5, &a);
            (k.axpy_f32)(&mut y2, -1.5, &a);
            for (p, q) in y1.iter().zip(&y2) {
                assert!(close(*p, *q, 1.0), "[{}] axpy_f32 n={n}", k.isa);
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
