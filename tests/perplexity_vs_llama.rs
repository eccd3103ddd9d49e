//! Perplexity against llama.cpp (`llama-perplexity -c 512`) on the same text: equal with the default
//! f16 cache, within 1% with the f32 and q8_0 caches, and the ring streaming mode.

use ember_runtime::arena::Arena;
use ember_runtime::kernels::Kernels;
use ember_runtime::kv::KvType;
use ember_runtime::session::{Session, SessionConfig};
use ember_tests::{fixture, fixture_json, with_model};

/// How the text is scored.
#[derive(Clone, Copy)]
enum Mode {
    /// llama.cpp's protocol: chunks of `ctx` tokens from an empty cache, second halves scored.
    Chunks,
    /// The same span as one stream through a ring cache of `ctx` tokens with these sinks; every
    /// prediction after the first half-context scored.
    Stream { sinks: usize },
}

fn perplexity(kernels: Kernels, ctx: usize, chunks: usize, kv_type: KvType, mode: Mode) -> f64 {
    let text = std::fs::read(fixture("perplexity/gpl-3.0.txt")).expect("text");
    with_model(kernels, |m| {
        let tokens = m
            .tokenizer
            .encode_to_vec(&text, true, true)
            .expect("encode");
        let sc = SessionConfig {
            n_ctx: ctx,
            n_batch: ctx,
            sinks: match mode {
                Mode::Chunks => 0,
                Mode::Stream { sinks } => sinks,
            },
            kv_type,
        };
        let mut mem = vec![0u8; Session::bytes_needed(m, &sc)];
        let mut arena = Arena::new(&mut mem);
        let mut s = Session::new(m, &mut arena, &sc).expect("session");
        let (mut nll, mut count) = (0.0f64, 0usize);
        let n_chunks = chunks.min(tokens.len() / ctx);
        if let Mode::Stream { .. } = mode {
            let span = &tokens[..n_chunks * ctx];
            s.eval_all(span, &mut |i, logits| {
                if i >= ctx / 2 && i + 1 < span.len() {
                    nll += nll_of(logits, span[i + 1]);
                    count += 1;
                }
            })
            .expect("eval");
            return (nll / count as f64).exp();
        }
        for c in 0..n_chunks {
            let chunk = &tokens[c * ctx..(c + 1) * ctx];
            s.reset();
            s.eval_all(chunk, &mut |i, logits| {
                if i >= ctx / 2 && i + 1 < ctx {
                    nll += nll_of(logits, chunk[i + 1]);
                    count += 1;
                }
            })
            .expect("eval");
        }
        (nll / count as f64).exp()
    })
}

/// −log softmax(logits)[target], in f64.
fn nll_of(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let sum: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    -(logits[target as usize] as f64 - max - sum.ln())
}

#[test]
fn perplexity_equals_llama_cpp() {
    // ember's logits are llama.cpp's bits (same batching: one 512-token batch per chunk), so the
    // figure is llama.cpp's to the 4 decimals it prints.
    let want = fixture_json("perplexity/expected.json")["chunks_4"]["ppl"]
        .as_f64()
        .expect("ppl");
    let got = perplexity(Kernels::best().exact(), 512, 4, KvType::F16, Mode::Chunks);
    eprintln!("ember (exact) PPL {got:.4}, llama.cpp {want:.4}");
    assert!(
        (got - want).abs() < 0.00005,
        "ember PPL {got:.4} vs llama.cpp {want:.4}"
    );
}

#[test]
fn perplexity_with_embers_own_numerics_is_within_half_a_percent_of_llama_cpp() {
    // The default kernels sum each block exactly, then one fused multiply-add per block: not
    // llama.cpp's order, so not its bits, but its quality.
    let want = fixture_json("perplexity/expected.json")["chunks_4"]["ppl"]
        .as_f64()
        .expect("ppl");
    let got = perplexity(Kernels::best(), 512, 4, KvType::F16, Mode::Chunks);
    let rel = (got - want).abs() / want;
    eprintln!(
        "ember PPL {got:.4}, llama.cpp {want:.4}, difference {:.3}%",
        rel * 100.0
    );
    assert!(rel < 0.005, "ember PPL {got:.4} vs llama.cpp {want:.4}");
}

#[test]
fn every_kv_precision_stays_within_one_percent_of_llama_cpp() {
    let want = fixture_json("perplexity/expected.json")["chunks_4"]["ppl"]
        .as_f64()
        .expect("ppl");
    for ty in [KvType::F32, KvType::Q8_0] {
        let got = perplexity(Kernels::best(), 512, 4, ty, Mode::Chunks);
        let rel = (got - want).abs() / want;
        eprintln!(
            "{} KV: ember PPL {got:.4}, llama.cpp (f16 KV) {want:.4}, difference {:.3}%",
            ty.name(),
            rel * 100.0
        );
        assert!(rel < 0.01, "{} KV: PPL {got:.4} vs {want:.4}", ty.name());
    }
}

/// A ring of 256 tokens (4 sinks) streamed over the 2048 tokens of eight 256-token chunks: every
/// prediction sees the sinks and the 252 most recent tokens, against 128..255 tokens in the
/// chunked protocol at the same context, so the two must be close. Without sinks the window
/// loses the first tokens that soak up attention, and perplexity explodes (StreamingLLM's
/// finding): the sinks must make a large difference.
#[test]
fn streaming_through_a_small_ring_stays_close_to_the_chunked_result() {
    let chunked = perplexity(Kernels::best(), 256, 8, KvType::F16, Mode::Chunks);
    let ring = perplexity(
        Kernels::best(),
        256,
        8,
        KvType::F16,
        Mode::Stream { sinks: 4 },
    );
    let no_sinks = perplexity(
        Kernels::best(),
        256,
        8,
        KvType::F16,
        Mode::Stream { sinks: 0 },
    );
    eprintln!(
        "ctx 256: chunked {chunked:.4}; one stream through the ring: {ring:.4} with 4 sinks, {no_sinks:.4} without"
    );
    assert!(
        (ring - chunked).abs() / chunked < 0.05,
        "ring {ring:.4} vs chunked {chunked:.4}"
    );
    assert!(ring * 1.2 < no_sinks, "sinks: {ring:.4} vs {no_sinks:.4}");
}
