//! Quick throughput probe of the block-format products (for development; the benches are in
//! benches/): `TYPE=q4_0 ROWS=1536 COLS=576 TOKS=1 cargo run --release -p ember-runtime
//! --example gemm_speed`. The weights are random bytes (valid f16 scales) spread over enough
//! copies of the matrix (`MB`, default 256 MiB) that each product reads them from memory, as
//! decode does (`ITERS` sets the repetitions); `EXACT=1` also times llama.cpp's order (Q4_0,
//! Q4_1, Q8_0); `NO_SUMS=1` leaves out the activations' integer sums (the slower way some
//! products take without them).
use ember_runtime::kernels::{block_sums, Kernels, Numerics, OutRows, QActs};
use ember_runtime::weights::{quants, BlockQ4_0, BlockQ4_1, BlockQ8_0, GgmlType, BLOCK_TYPES, QK};
use std::time::Instant;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let ty_name = std::env::var("TYPE").unwrap_or_else(|_| "q4_0".into());
    let Some(kind) = BLOCK_TYPES
        .iter()
        .find(|b| b.ty.name().eq_ignore_ascii_case(&ty_name))
    else {
        eprintln!("TYPE: not a block format of the weight table: {ty_name}");
        std::process::exit(2);
    };
    let (rows, cols, toks) = (env("ROWS", 1536), env("COLS", 576), env("TOKS", 1));
    if cols == 0 || cols % kind.ty.block_size() != 0 {
        eprintln!(
            "COLS: {cols} is not whole blocks of {} ({})",
            kind.ty.block_size(),
            kind.ty.name()
        );
        std::process::exit(2);
    }
    let total = env("MB", 256) << 20;
    let per = kind.ty.type_size() * cols / kind.ty.block_size();
    let copies = (total / (rows * per)).max(1);
    // Random bytes, every odd one below 0x3c: wherever a block keeps an f16 scale (at even
    // offsets), it is finite and below 1.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let w: Vec<u8> = (0..copies * rows * per)
        .map(|i| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8 & if i % 2 == 1 { 0x3b } else { 0xff }
        })
        .collect();
    let x: Vec<f32> = (0..toks * cols)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let k8 = kind.acts == quants::Acts::Q8K;
    for k in Kernels::all_supported() {
        let nb = if k8 { cols / quants::QK_K } else { cols / QK };
        let mut qs = vec![0i8; toks * cols];
        let mut d = vec![0f32; toks * nb];
        let mut s = vec![0f32; toks * nb];
        for t in 0..toks {
            let (xr, qr) = (
                &x[t * cols..(t + 1) * cols],
                &mut qs[t * cols..(t + 1) * cols],
            );
            if k8 {
                quants::quantize_q8k(xr, qr, &mut d[t * nb..(t + 1) * nb]);
            } else {
                (k.quantize)(
                    xr,
                    qr,
                    &mut d[t * nb..(t + 1) * nb],
                    &mut s[t * nb..(t + 1) * nb],
                );
            }
        }
        let mut sums = vec![0i32; toks * cols / QK];
        if std::env::var("NO_SUMS").is_err() {
            block_sums(&qs, &mut sums);
        } else {
            sums.clear();
        }
        let a = QActs {
            qs: &qs,
            d: &d,
            s: &s,
            sums: &sums,
            nb,
        };
        let mut out = vec![0f32; toks * rows];
        let orders = if std::env::var("EXACT").is_ok() {
            &[Numerics::Ember, Numerics::Exact][..]
        } else {
            &[Numerics::Ember][..]
        };
        for &numerics in orders {
            let exact_row = matches!(kind.ty, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0);
            if numerics == Numerics::Exact && !exact_row {
                continue;
            }
            let iters = if k.isa.name() == "scalar" {
                copies.min(4)
            } else {
                env("ITERS", (copies * 4).max(20))
            };
            let t0 = Instant::now();
            for i in 0..iters {
                let m = &w[(i % copies) * rows * per..][..rows * per];
                let mut o = OutRows::new(&mut out, rows, rows, toks);
                match (numerics, kind.ty) {
                    (Numerics::Exact, GgmlType::Q4_0) => {
                        (k.gemm_q4_0)(bytemuck::cast_slice::<u8, BlockQ4_0>(m), &a, &mut o)
                    }
                    (Numerics::Exact, GgmlType::Q4_1) => {
                        (k.gemm_q4_1)(bytemuck::cast_slice::<u8, BlockQ4_1>(m), &a, &mut o)
                    }
                    (Numerics::Exact, GgmlType::Q8_0) => {
                        (k.gemm_q8_0)(bytemuck::cast_slice::<u8, BlockQ8_0>(m), &a, &mut o)
                    }
                    _ => (k.gemm_blocks)(kind, m, per, &a, &mut o),
                }
            }
            let dt = t0.elapsed().as_secs_f64() / iters as f64;
            println!(
                "{:>12} {:>6} {}: {:8.1} us per {}x{} x {} tokens, {:6.2} GB/s of weights",
                k.isa.name(),
                if numerics == Numerics::Exact {
                    "exact"
                } else {
                    "ember"
                },
                kind.ty.name(),
                dt * 1e6,
                rows,
                cols,
                toks,
                (rows * per) as f64 / dt / 1e9
            );
        }
    }
}
