//! Generation with only the `no_std` core API: no `std` or `alloc` feature in the engine
//! (`cargo test -p ember-runtime --no-default-features --test no_std_generation`), everything
//! carved from one caller-provided buffer, kernels chosen at compile time. (The test binary
//! itself links std, to read the model and the fixtures.) CI runs it on x86-64 and, under
//! qemu, on aarch64.
//!
//! Checks: greedy text against llama.cpp's (`tests/fixtures/greedy`, the criterion of
//! `tests/greedy_vs_llama.rs`: identical, or parting only at a near-tie), top-k 1 equal to
//! greedy, and top-k sampling through a small ring cache that wraps several times.
//! Without target features the x86-64 build runs the scalar kernels: the workload is kept small.

use ember_runtime::arena::Arena;
use ember_runtime::gguf::Gguf;
use ember_runtime::kernels::Kernels;
use ember_runtime::kv::KvType;
use ember_runtime::model::Model;
use ember_runtime::sampler::{argmax, Sampler, SamplerConfig};
use ember_runtime::session::{Session, SessionConfig};
use ember_runtime::tokenizer::{EncodeScratch, TokenId, Utf8Stream};
use std::path::PathBuf;

const NEAR_TIE: f32 = 1.0;
/// Tokens compared (llama.cpp's fixture has 40; a prefix keeps this affordable under qemu).
const N_PREDICT: usize = 24;
const MAX_PROMPT: usize = 1024;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The real model: `$EMBER_MODEL`, else `models/…`, fetched with `tools/fetch-model.sh` when
/// missing (as the cross-crate tests do).
fn model_bytes() -> Vec<u8> {
    let path = std::env::var_os("EMBER_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    if !path.exists() && std::env::var_os("EMBER_MODEL").is_none() {
        let ok = std::process::Command::new(repo().join("tools/fetch-model.sh"))
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "tools/fetch-model.sh failed: this test needs the model");
    }
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run tools/fetch-model.sh, or set EMBER_MODEL)",
            path.display()
        )
    })
}

/// Fixed-capacity text output (no allocation in the engine's path).
struct Text {
    buf: [u8; 16384],
    len: usize,
}

impl Text {
    fn new() -> Self {
        Text {
            buf: [0; 16384],
            len: 0,
        }
    }

    fn push(&mut self, s: &str) {
        for &b in s.as_bytes() {
            if self.len < self.buf.len() {
                self.buf[self.len] = b;
            }
            self.len += 1;
        }
    }

    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len.min(self.buf.len())]).expect("utf-8")
    }
}

/// Encodes `text` into `ids`, returning the count.
fn encode(m: &Model<'_>, enc: &mut EncodeScratch<'_>, text: &str, ids: &mut [TokenId]) -> usize {
    let mut n = 0;
    m.tokenizer
        .encode(text.as_bytes(), true, true, enc, &mut |t| {
            ids[n] = t;
            n += 1;
            Ok(())
        })
        .expect("encode");
    n
}

#[test]
fn generation_from_one_buffer_without_std() {
    let file = model_bytes();
    let g = Gguf::parse(&file).expect("gguf");
    // A session that holds the greedy prompts, and a small ring.
    let sc = SessionConfig {
        n_ctx: 128,
        n_batch: 16,
        sinks: 4,
        kv_type: KvType::F16,
    };
    let ring = SessionConfig { n_ctx: 24, ..sc };
    let top_k = SamplerConfig {
        temperature: 0.9,
        top_k: 40,
        top_p: 1.0,
        min_p: 0.0,
        seed: 42,
        ..SamplerConfig::default()
    };
    let top_1 = SamplerConfig {
        temperature: 0.7,
        top_k: 1,
        ..SamplerConfig::default()
    };
    // The engine's memory: one buffer for everything, sized up front from the file.
    let n_vocab = ember_runtime::model::Config::from_gguf(&g)
        .expect("config")
        .n_vocab;
    let model_tables = Model::memory_needed(&g).expect("model tables");
    let mut ram = vec![
        0u8;
        model_tables
            + EncodeScratch::bytes_needed(MAX_PROMPT)
            + 2 * Sampler::bytes_needed(n_vocab, &top_k)
            + (24 << 20)
    ];
    let mut arena = Arena::new(&mut ram);
    let model = Model::load(g, &mut arena, Kernels::best()).expect("model");
    let plan = Session::plan(&model, &sc).expect("plan");
    let before = arena.used();
    let mut session = Session::new(&model, &mut arena, &sc).expect("session");
    assert!(
        arena.used() - before <= plan.total,
        "the plan covers the session"
    );
    let mut small = Session::new(&model, &mut arena, &ring).expect("session");
    let mut enc = EncodeScratch::new(&mut arena, MAX_PROMPT).expect("scratch");
    let mut greedy_k1 = Sampler::new(&mut arena, n_vocab, top_1).expect("sampler");
    let tok = &model.tokenizer;
    let mut ids = [0 as TokenId; MAX_PROMPT];

    // Greedy against llama.cpp on the first fixture prompts.
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("tests/fixtures/greedy/expected.json"))
            .expect("fixture"),
    )
    .expect("json");
    let cases = fixture["cases"].as_array().expect("cases");
    // EMBER_SAMPLE (set under qemu, where a token costs ~100× more): one prompt, a shorter
    // continuation, and the ring wrapped once instead of four times.
    let sample = std::env::var_os("EMBER_SAMPLE").is_some();
    let (n_cases, n_predict, n_ring) = if sample {
        (1, 12, 40)
    } else {
        (2, N_PREDICT, 80)
    };
    let mut identical = 0;
    for case in cases.iter().skip(2).take(n_cases) {
        let prompt = case["prompt"].as_str().expect("prompt");
        let want = case["text"].as_str().expect("text");
        let n = encode(&model, &mut enc, prompt, &mut ids);
        session.reset();
        session.eval(&ids[..n]).expect("prefill");
        let mut text = Text::new();
        let mut stream = Utf8Stream::new();
        let mut parted = false;
        for _ in 0..n_predict {
            let logits = session.logits().expect("logits");
            let next = argmax(logits);
            // top-k 1 is greedy, whatever the temperature.
            assert_eq!(greedy_k1.sample(logits), next);
            if tok.is_eog(next) {
                break;
            }
            let second = logits
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != next as usize)
                .fold(f32::NEG_INFINITY, |m, (_, &v)| m.max(v));
            let gap = logits[next as usize] - second;
            tok.decode_token(next, true, &mut |b| stream.push(b, &mut |s| text.push(s)));
            if !parted && !want.starts_with(text.as_str()) {
                assert!(
                    gap < NEAR_TIE,
                    "parted from llama.cpp at a clear winner (gap {gap}): {:?} vs {want:?}",
                    text.as_str()
                );
                parted = true;
            }
            session.eval(&[next]).expect("decode");
        }
        stream.finish(&mut |s| text.push(s));
        let same = !parted && want.starts_with(text.as_str());
        identical += same as usize;
        eprintln!("{} {:?}", if same { "same" } else { "tie " }, text.as_str());
    }
    eprintln!("{identical}/{n_cases} identical to llama.cpp over {n_predict} tokens");

    // Top-k sampling through the 24-token ring (20 ring cells): 80 tokens wrap it four times.
    let mut sampler = Sampler::new(&mut arena, n_vocab, top_k).expect("sampler");
    let n = encode(&model, &mut enc, "Once upon a time", &mut ids);
    small.eval(&ids[..n]).expect("prefill");
    let mut text = Text::new();
    let mut stream = Utf8Stream::new();
    for _ in 0..n_ring {
        let next = sampler.sample(small.logits().expect("logits"));
        sampler.accept(next);
        tok.decode_token(next, true, &mut |b| stream.push(b, &mut |s| text.push(s)));
        small.eval(&[next]).expect("decode");
    }
    assert!(small.kv().has_wrapped() && small.n_past() == n + n_ring);
    assert!(text.len > n_ring, "{} bytes of text", text.len);
}
