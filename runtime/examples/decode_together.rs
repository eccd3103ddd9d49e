//! Decode speed of B sessions stepped together (`Session::eval_each`) against one session:
//!
//!     cargo run --release -p ember-runtime --example decode_together -- MODEL [THREADS] [STEPS] [B]
//!
//! Prints, for B = 1, 2, 4, 8, the aggregate tokens/s and its ratio to B = 1 (one
//! `eval(&[t])` per step), best of three runs each; with B, only that batch.

use ember_runtime::arena::Arena;
use ember_runtime::gguf::{Gguf, MappedFile};
use ember_runtime::kernels::Kernels;
use ember_runtime::model::Model;
use ember_runtime::parallel::ThreadPool;
use ember_runtime::session::{Session, SessionConfig};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .expect("usage: decode_together MODEL [THREADS] [STEPS]");
    let threads: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2);
    let steps: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(64);
    let file = MappedFile::open(path).expect("model file");
    let g = Gguf::parse(file.bytes()).expect("GGUF");
    let mut tables = vec![0u8; Model::memory_needed(&g).expect("plan")];
    let model = Model::load(g, &mut Arena::new(&mut tables), Kernels::best()).expect("model");
    let pool = ThreadPool::new(threads).expect("threads");
    let sc = SessionConfig {
        n_ctx: 512,
        ..SessionConfig::default()
    };
    let only: Option<usize> = args.get(4).and_then(|s| s.parse().ok());
    let mut base = 0.0;
    for b in [1usize, 2, 4, 8] {
        if only.is_some_and(|o| o != b) {
            continue;
        }
        let mut mems: Vec<Vec<u8>> = (0..b)
            .map(|_| vec![0u8; Session::bytes_needed(&model, &sc)])
            .collect();
        let mut best = 0.0f64;
        for _ in 0..3 {
            let mut sessions: Vec<Session> = mems
                .iter_mut()
                .map(|m| {
                    let mut s = Session::new(&model, &mut Arena::new(m), &sc).expect("session");
                    s.set_parallel(&pool);
                    s
                })
                .collect();
            for s in sessions.iter_mut() {
                s.eval(&[1, 2, 3]).expect("prompt");
            }
            let tokens: Vec<u32> = (0..b as u32).map(|i| 100 + i).collect();
            let t0 = Instant::now();
            for _ in 0..steps {
                if b == 1 {
                    sessions[0].eval(&tokens).expect("eval");
                } else {
                    let mut refs: Vec<&mut Session> = sessions.iter_mut().collect();
                    Session::eval_each(&mut refs, &tokens).expect("eval_each");
                }
            }
            let tps = (steps * b) as f64 / t0.elapsed().as_secs_f64();
            best = best.max(tps);
        }
        if b == 1 {
            base = best;
        }
        if base > 0.0 {
            println!("B={b}: {best:.1} tok/s ({:.2}x)", best / base);
        } else {
            // B = 1 was not run: no ratio to print.
            println!("B={b}: {best:.1} tok/s");
        }
    }
}
