//! (A plain `main`, not the libtest harness: the harness's own threads allocate, e.g. to report a
//! slow test, and a global counter would see them.)
//!
//! Decoding allocates nothing: a counting global allocator sees zero allocations over 1000 decode
//! steps after warm-up through a 256-token ring KV cache, which wraps about four times (forward
//! pass on one thread and on a two-thread pool, every KV precision, sampling with penalties,
//! top-k/top-p/min-p and temperature, detokenizing into a fixed buffer).

use ember_runtime::arena::Arena;
use ember_runtime::kernels::Kernels;
use ember_runtime::kv::KvType;
use ember_runtime::parallel::ThreadPool;
use ember_runtime::sampler::{Sampler, SamplerConfig};
use ember_runtime::session::{Session, SessionConfig};
use ember_runtime::tokenizer::Utf8Stream;
use ember_tests::with_model;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    decode_steps_allocate_nothing();
    println!("1 passed, 0 failed: 1000 decode steps through a wrapping ring allocate nothing (1 and 2 threads; f16, f32, q8_0 KV)");
}

fn decode_steps_allocate_nothing() {
    let pool = ThreadPool::new(2).expect("threads");
    with_model(Kernels::best(), |m| {
        for (threads, kv_type) in [
            (1, KvType::F16),
            (2, KvType::F16),
            (2, KvType::F32),
            (2, KvType::Q8_0),
        ] {
            let sc = SessionConfig {
                n_ctx: 256,
                n_batch: 32,
                sinks: 4,
                kv_type,
            };
            let mut mem = vec![0u8; Session::bytes_needed(m, &sc)];
            let mut arena = Arena::new(&mut mem);
            let mut s = Session::new(m, &mut arena, &sc).expect("session");
            if threads == 2 {
                s.set_parallel(&pool);
            }
            let cfg = SamplerConfig {
                temperature: 0.8,
                repeat_penalty: 1.1,
                ..Default::default()
            };
            let mut smem = vec![0u8; Sampler::bytes_needed(m.config.n_vocab, &cfg)];
            let mut sarena = Arena::new(&mut smem);
            let mut sampler = Sampler::new(&mut sarena, m.config.n_vocab, cfg).expect("sampler");
            let prompt = m
                .tokenizer
                .encode_to_vec(b"Once upon a time", true, true)
                .expect("encode");
            s.eval(&prompt).expect("prefill");
            let mut text = [0u8; 8192];
            let mut len = 0usize;
            let mut stream = Utf8Stream::new();
            let mut step = |s: &mut Session<'_, '_>| {
                let next = sampler.sample(s.logits().expect("logits"));
                sampler.accept(next);
                m.tokenizer.decode_token(next, true, &mut |b| {
                    stream.push(b, &mut |piece| {
                        // A fixed text buffer used as a ring.
                        for &byte in piece.as_bytes() {
                            text[len % text.len()] = byte;
                            len += 1;
                        }
                    })
                });
                s.eval(&[next]).expect("decode");
            };
            for _ in 0..5 {
                step(&mut s); // warm-up
            }
            let before = ALLOCS.load(Ordering::Relaxed);
            for _ in 0..1000 {
                step(&mut s);
            }
            let after = ALLOCS.load(Ordering::Relaxed);
            assert_eq!(
                after - before,
                0,
                "{threads} thread(s), {kv_type:?} KV: {} allocations in 1000 decode steps",
                after - before
            );
            assert!(s.kv().has_wrapped() && s.n_past() > 3 * sc.n_ctx);
            assert!(len > 0);
        }
    });
}
