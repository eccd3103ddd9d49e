//! Criterion benchmarks of every kernel set on this CPU, at the model's shapes
//! (SmolLM2-135M: width 576, feed-forward 1536, head width 64).
//!
//!     cargo bench -p ember-runtime --bench kernels

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ember_runtime::kernels::attend::{self, Softmax};
use ember_runtime::kernels::{Kernels, OutRows, QActs};
use ember_runtime::weights::quants::{quantize_q8k, Acts::Q8K, QK_K};
use ember_runtime::weights::{BlockQ4_1, BlockQ8_0, GgmlType, BLOCK_TYPES, QK};
use half::f16;
use std::hint::black_box;

fn data(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 2000) as f32 / 1000.0 - 1.0)
        .collect()
}

struct Acts {
    qs: Vec<i8>,
    d: Vec<f32>,
    s: Vec<f32>,
    nb: usize,
}

fn quantized(k: &Kernels, x: &[f32], cols: usize) -> Acts {
    let nb = cols / QK;
    let toks = x.len() / cols;
    let mut a = Acts {
        qs: vec![0; x.len()],
        d: vec![0.0; toks * nb],
        s: vec![0.0; toks * nb],
        nb,
    };
    for t in 0..toks {
        (k.quantize)(
            &x[t * cols..(t + 1) * cols],
            &mut a.qs[t * cols..(t + 1) * cols],
            &mut a.d[t * nb..(t + 1) * nb],
            &mut a.s[t * nb..(t + 1) * nb],
        );
    }
    a
}

/// `rows` rows of `ty` from a hash, every f16-aligned pair a finite value below 4 in size.
fn table_bytes(ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let n = ty.row_bytes(cols as u64).expect("whole blocks") as usize * rows;
    let mut out = Vec::with_capacity(n);
    for i in 0..n / 2 {
        let h = ((i as u32).wrapping_mul(2654435761) >> 8) as u16;
        let v = f16::from_bits(h);
        let h = if v.is_finite() && v.to_f32().abs() < 4.0 {
            h
        } else {
            h & 0x3bff
        };
        out.extend_from_slice(&h.to_le_bytes());
    }
    out
}

/// The feed-forward shapes: gate/up (576 columns, which SmolLM2's K files hold as Q5_0 / Q5_1
/// / IQ4_NL since 576 is not a multiple of 256) and down (1536 columns: every type).
fn gemm(c: &mut Criterion) {
    gemm_shape(c, 1536, 576);
    gemm_shape(c, 576, 1536);
}

fn gemm_shape(c: &mut Criterion, rows: usize, cols: usize) {
    let nb = cols / QK;
    let w: Vec<BlockQ4_1> = (0..rows * nb)
        .map(|i| BlockQ4_1 {
            d: f16::from_f32(0.01),
            m: f16::from_f32(-0.05),
            qs: [(i * 37 % 256) as u8; 16],
        })
        .collect();
    let w8: Vec<BlockQ8_0> = (0..rows * nb)
        .map(|i| BlockQ8_0 {
            d: f16::from_f32(0.01),
            qs: [(i * 13 % 200) as i8 - 100; 32],
        })
        .collect();
    for toks in [1usize, 64] {
        let x = data(toks * cols, 7);
        let mut g = c.benchmark_group(format!("gemm_{rows}x{cols}_tokens{toks}"));
        g.throughput(Throughput::Elements((rows * cols * toks) as u64));
        for k in Kernels::all_supported() {
            let a = quantized(&k, &x, cols);
            let mut sums = vec![0i32; a.d.len()];
            ember_runtime::kernels::block_sums(&a.qs, &mut sums);
            let acts = QActs {
                qs: &a.qs,
                d: &a.d,
                s: &a.s,
                sums: &sums,
                nb: a.nb,
            };
            // Q8_K activations for the 256-element formats.
            let mut kq = Acts {
                qs: vec![0; x.len()],
                d: vec![0.0; x.len() / QK_K],
                s: Vec::new(),
                nb: cols / QK_K,
            };
            let mut ksums = vec![0i32; x.len() / 32];
            if cols.is_multiple_of(QK_K) {
                quantize_q8k(&x, &mut kq.qs, &mut kq.d);
                ember_runtime::kernels::block_sums(&kq.qs, &mut ksums);
            }
            let kacts = QActs {
                qs: &kq.qs,
                d: &kq.d,
                s: &kq.s,
                sums: &ksums,
                nb: kq.nb,
            };
            let mut out = vec![0.0f32; toks * rows];
            g.bench_function(BenchmarkId::new("q4_1-exact", k.isa.name()), |b| {
                b.iter(|| {
                    (k.gemm_q4_1)(
                        black_box(&w),
                        &acts,
                        &mut OutRows::new(&mut out, rows, rows, toks),
                    )
                })
            });
            g.bench_function(BenchmarkId::new("q8_0-exact", k.isa.name()), |b| {
                b.iter(|| {
                    (k.gemm_q8_0)(
                        black_box(&w8),
                        &acts,
                        &mut OutRows::new(&mut out, rows, rows, toks),
                    )
                })
            });
            for kind in BLOCK_TYPES
                .iter()
                .filter(|b| cols.is_multiple_of(b.ty.block_size()))
            {
                let wb = table_bytes(kind.ty, rows, cols);
                let rb = wb.len() / rows;
                g.bench_function(BenchmarkId::new(kind.ty.name(), k.isa.name()), |b| {
                    b.iter(|| {
                        (k.gemm_blocks)(
                            kind,
                            black_box(&wb),
                            rb,
                            if kind.acts == Q8K { &kacts } else { &acts },
                            &mut OutRows::new(&mut out, rows, rows, toks),
                        )
                    })
                });
            }
        }
        g.finish();
    }
}

fn small_ops(c: &mut Criterion) {
    let n = 1536;
    let x = data(n, 3);
    let mut g = c.benchmark_group("vector_ops_1536");
    g.throughput(Throughput::Elements(n as u64));
    for k in Kernels::all_supported() {
        let mut qs = vec![0i8; n];
        let mut d = vec![0.0f32; n / QK];
        let mut s = vec![0.0f32; n / QK];
        g.bench_function(BenchmarkId::new("quantize", k.isa.name()), |b| {
            b.iter(|| (k.quantize)(black_box(&x), &mut qs, &mut d, &mut s))
        });
        let up = data(n, 9);
        let mut gate = x.clone();
        g.bench_function(BenchmarkId::new("swiglu", k.isa.name()), |b| {
            b.iter(|| {
                gate.copy_from_slice(&x);
                (k.swiglu)(black_box(&mut gate), &up)
            })
        });
        // Gemma's gated feed-forward (libm's tanh, step by step in the SIMD sets).
        g.bench_function(BenchmarkId::new("geglu", k.isa.name()), |b| {
            b.iter(|| {
                gate.copy_from_slice(&x);
                (k.geglu)(black_box(&mut gate), &up)
            })
        });
    }
    g.finish();

    // Tiled attention's inner product: one query row's scores over a tile of 64 keys of a
    // 64-wide head (keys transposed, 64 apart), as `attend_tiled` calls it.
    let mut g = c.benchmark_group("fma_rows_64x64");
    g.throughput(Throughput::Elements(64 * 64));
    let (a, b) = (data(64, 5), data(64 * 64, 6));
    for k in Kernels::all_supported() {
        let mut acc = vec![0.0f32; 64];
        g.bench_function(BenchmarkId::new("fma_rows", k.isa.name()), |bch| {
            bch.iter(|| (k.fma_rows)(black_box(&mut acc), &a, &b, 64))
        });
    }
    g.finish();

    // One head of attention over 512 cached tokens, for each KV precision (rows of one head
    // stored one after another, as the cache keeps them).
    let (ctx, hd) = (512usize, 64usize);
    let kf = data(ctx * hd, 1);
    let vf = data(ctx * hd, 2);
    let q = data(hd, 4);
    let k16: Vec<f16> = kf.iter().map(|&x| f16::from_f32(x)).collect();
    let v16: Vec<f16> = vf.iter().map(|&x| f16::from_f32(x)).collect();
    let q16: Vec<f32> = q.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
    let to_q8 = |x: &[f32]| -> Vec<BlockQ8_0> {
        let mut b = vec![BlockQ8_0::default(); x.len() / QK];
        ember_runtime::weights::blocks::quantize_q8_0(x, &mut b);
        b
    };
    let (k8, v8) = (to_q8(&kf), to_q8(&vf));
    let nb = hd / QK;
    let (mut qq, mut qd, mut qs) = (vec![0i8; hd], vec![0.0f32; nb], vec![0.0f32; nb]);
    ember_runtime::kernels::scalar::quantize_row(&q, &mut qq, &mut qd, &mut qs);
    let qa = QActs {
        qs: &qq,
        d: &qd,
        s: &qs,
        sums: &[],
        nb,
    };
    let mut g = c.benchmark_group("attention_head_ctx512");
    g.throughput(Throughput::Elements(ctx as u64));
    for k in Kernels::all_supported() {
        let mut a16 = vec![f16::ZERO; hd];
        let mut a32 = vec![0.0f32; hd];
        g.bench_function(BenchmarkId::new("f16", k.isa.name()), |b| {
            b.iter(|| {
                let mut st = Softmax::NEW;
                attend::attend_f16(
                    &k,
                    black_box(&q16),
                    &k16,
                    &v16,
                    ctx,
                    0.125,
                    &mut a16,
                    &mut st,
                );
                st.sum
            })
        });
        let mut s32 = vec![0.0f32; hd];
        g.bench_function(BenchmarkId::new("f16-f32-sum", k.isa.name()), |b| {
            b.iter(|| {
                let mut st = Softmax::NEW;
                attend::attend_f16(&k, black_box(&q), &k16, &v16, ctx, 0.125, &mut s32, &mut st);
                st.sum
            })
        });
        g.bench_function(BenchmarkId::new("f32", k.isa.name()), |b| {
            b.iter(|| {
                let mut st = Softmax::NEW;
                attend::attend_f32(&k, black_box(&q), &kf, &vf, ctx, 0.125, &mut a32, &mut st);
                st.sum
            })
        });
        g.bench_function(BenchmarkId::new("q8_0", k.isa.name()), |b| {
            b.iter(|| {
                let mut st = Softmax::NEW;
                attend::attend_q8_0(&k, black_box(&qa), &k8, &v8, ctx, 0.125, &mut a32, &mut st);
                st.sum
            })
        });
    }
    g.finish();
}

criterion_group!(benches, gemm, small_ops);
criterion_main!(benches);
