//! Quick throughput probe of the GEMM kernels (for development; the benches are in benches/):
//! `ROWS=1536 TOKS=4 cargo run --release -p ember-runtime --example gemm_speed`.
use ember_runtime::kernels::{Kernels, OutRows, QActs};
use ember_runtime::weights::{BlockQ4_1, QK};
use std::time::Instant;

fn main() {
    let rows: usize = std::env::var("ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1536);
    let toks: usize = std::env::var("TOKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let cols = 576usize;
    let nb = cols / QK;
    let w: Vec<BlockQ4_1> = (0..rows * nb)
        .map(|i| BlockQ4_1 {
            d: half::f16::from_f32(0.01),
            m: half::f16::from_f32(-0.02),
            qs: [(i % 251) as u8; 16],
        })
        .collect();
    let x: Vec<f32> = (0..toks * cols)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    for k in Kernels::all_supported() {
        let mut qs = vec![0i8; toks * cols];
        let mut d = vec![0f32; toks * nb];
        let mut s = vec![0f32; toks * nb];
        for t in 0..toks {
            (k.quantize)(
                &x[t * cols..(t + 1) * cols],
                &mut qs[t * cols..(t + 1) * cols],
                &mut d[t * nb..(t + 1) * nb],
                &mut s[t * nb..(t + 1) * nb],
            );
        }
        let mut sums = vec![0i32; toks * nb];
        ember_runtime::kernels::block_sums(&qs, &mut sums);
        let a = QActs {
            qs: &qs,
            d: &d,
            s: &s,
            sums: &sums,
            nb,
        };
        let mut out = vec![0f32; toks * rows];
        let iters = if k.isa.name() == "scalar" {
            2
        } else {
            (3_000_000_000 / (rows * cols * toks)).max(3)
        };
        let t0 = Instant::now();
        for _ in 0..iters {
            (k.gemm_q4_1)(&w, &a, &mut OutRows::new(&mut out, rows, rows, toks));
        }
        let dt = t0.elapsed().as_secs_f64() / iters as f64;
        println!(
            "{}: {:.1} us per {}x{} product with {} tokens, {:.2} GMAC/s",
            k.isa,
            dt * 1e6,
            rows,
            cols,
            toks,
            (rows * cols * toks) as f64 / dt / 1e9
        );
    }
}
