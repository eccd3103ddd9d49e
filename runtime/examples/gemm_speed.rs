//! Quick throughput probe of the GEMM kernels (for development; the benches are in benches/).
use ember_runtime::kernels::{Kernels, OutRows, QActs};
use ember_runtime::weights::{BlockQ4_1, QK};
use std::time::Instant;

fn main() {
    let rows: usize = std::env::var("ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1536);
    let (cols, toks) = (576usize, 1usize);
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
        let a = QActs {
            qs: &qs,
            d: &d,
            s: &s,
            nb,
        };
        let mut out = vec![0f32; toks * rows];
        let iters = if k.isa.name() == "scalar" {
            2
        } else {
            (3_000_000_000 / (rows * cols)).max(3)
        };
        let t0 = Instant::now();
        for _ in 0..iters {
            (k.gemm_q4_1)(&w, &a, &mut OutRows::new(&mut out, rows, rows, toks));
        }
        let dt = t0.elapsed().as_secs_f64() / iters as f64;
        println!(
            "{}: {:.1} us per {}x{} matvec, {:.2} GMAC/s",
            k.isa,
            dt * 1e6,
            rows,
            cols,
            (rows * cols * toks) as f64 / dt / 1e9
        );
    }
}
