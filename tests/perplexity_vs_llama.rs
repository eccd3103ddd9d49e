//! Perplexity against llama.cpp (`llama-perplexity -c 512`) on the same text: within 1%.

use ember_runtime::arena::Arena;
use ember_runtime::kernels::Kernels;
use ember_runtime::session::{Session, SessionConfig};
use ember_tests::{fixture, fixture_json, with_model};

/// llama.cpp's protocol: chunks of `ctx` tokens from an empty cache, second halves scored.
fn perplexity(kernels: Kernels, ctx: usize, chunks: usize) -> f64 {
    let text = std::fs::read(fixture("perplexity/gpl-3.0.txt")).expect("text");
    with_model(kernels, |m| {
        let tokens = m
            .tokenizer
            .encode_to_vec(&text, true, true)
            .expect("encode");
        let sc = SessionConfig {
            n_ctx: ctx,
            n_batch: ctx,
        };
        let mut mem = vec![0u8; Session::bytes_needed(m, &sc)];
        let mut arena = Arena::new(&mut mem);
        let mut s = Session::new(m, &mut arena, &sc).expect("session");
        let (mut nll, mut count) = (0.0f64, 0usize);
        for c in 0..chunks.min(tokens.len() / ctx) {
            let chunk = &tokens[c * ctx..(c + 1) * ctx];
            s.reset();
            s.eval_all(chunk, &mut |i, logits| {
                if i >= ctx / 2 && i + 1 < ctx {
                    let max = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
                    let sum: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
                    nll -= logits[chunk[i + 1] as usize] as f64 - max - sum.ln();
                    count += 1;
                }
            })
            .expect("eval");
        }
        (nll / count as f64).exp()
    })
}

#[test]
fn perplexity_within_one_percent_of_llama_cpp() {
    let want = fixture_json("perplexity/expected.json")["chunks_4"]["ppl"]
        .as_f64()
        .expect("ppl");
    let got = perplexity(Kernels::best(), 512, 4);
    let rel = (got - want).abs() / want;
    eprintln!(
        "ember PPL {got:.4}, llama.cpp {want:.4}, difference {:.3}%",
        rel * 100.0
    );
    assert!(rel < 0.01, "ember PPL {got:.4} vs llama.cpp {want:.4}");
}
