//! The cost of synchronisation alone: one decode step's parallel regions with empty items
//! (SmolLM2-135M: 30 layers of QKV, attention, output, gate/up and down regions, then the
//! output head), on the caller alone and on a pool of 2 threads. What is left of a token's time
//! once the kernels are removed.
//!
//!     cargo bench -p ember-runtime --bench parallel

use criterion::{criterion_group, criterion_main, Criterion};
use ember_runtime::parallel::{chunk_rows, Parallel, Serial, ThreadPool};
use std::hint::black_box;

/// Items of one region for `rows` rows on `threads` threads, as the forward pass cuts them.
fn items(rows: usize, threads: usize) -> usize {
    rows.div_ceil(chunk_rows(rows, threads, 16))
}

fn token(par: &dyn Parallel) {
    let t = par.threads();
    let regions = [
        items(576, t) + 2 * items(192, t),
        9,
        items(576, t),
        items(1536, t),
        items(576, t),
    ];
    for _layer in 0..30 {
        for &n in &regions {
            par.for_each(n, usize::MAX, &|i, s| {
                black_box((i, s));
            });
        }
    }
    par.for_each(items(49152, t), usize::MAX, &|i, s| {
        black_box((i, s));
    });
}

fn sync(c: &mut Criterion) {
    let mut g = c.benchmark_group("sync_per_token");
    g.bench_function("serial", |b| b.iter(|| token(&Serial)));
    let pool = ThreadPool::new(2).expect("threads");
    g.bench_function("pool2", |b| b.iter(|| token(&pool)));
    g.finish();
}

criterion_group!(benches, sync);
criterion_main!(benches);
