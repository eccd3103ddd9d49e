//! Greedy generation against llama.cpp (`llama-simple -n 40`) on chat-formatted and plain prompts:
//! every prompt's text must be llama.cpp's, byte for byte, with every kernel set.
//!
//! ember computes what llama.cpp's CPU backend computes, operation for operation and bit for bit
//! (the README's "How ember is checked against llama.cpp" lists what that took; the tensors were
//! compared with `tools/compare-trace.py`). So there is no tolerance here: a divergence anywhere
//! fails, and the message gives the top-2 logit gap where it happened, to tell a near-tie (a
//! last-bit difference somewhere) from a real error.

use ember_runtime::arena::Arena;
use ember_runtime::kernels::{Isa, Kernels};
use ember_runtime::model::Model;
use ember_runtime::sampler::argmax;
use ember_runtime::session::{Session, SessionConfig};
use ember_tests::{fixture_json, with_model};

const N_PREDICT: usize = 40;

/// Outcome of one prompt.
enum Outcome {
    Same,
    /// Diverged where the top-2 logit gap was this.
    Diverged {
        gap: f32,
        at: usize,
        ember: String,
    },
}

fn run(model: &Model<'_>, prompt: &str, expected: &str) -> Outcome {
    let sc = SessionConfig {
        n_ctx: 512,
        ..Default::default()
    };
    let mut mem = vec![0u8; Session::bytes_needed(model, &sc)];
    let mut arena = Arena::new(&mut mem);
    let mut s = Session::new(model, &mut arena, &sc).expect("session");
    let tok = &model.tokenizer;
    let ids = tok
        .encode_to_vec(prompt.as_bytes(), true, true)
        .expect("encode");
    s.eval(&ids).expect("prefill");
    let mut text: Vec<u8> = Vec::new();
    for step in 0..N_PREDICT {
        let logits = s.logits().expect("logits");
        let next = argmax(logits);
        let mut sorted: Vec<f32> = logits.to_vec();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let gap = sorted[0] - sorted[1];
        if tok.is_eog(next) {
            break;
        }
        tok.decode_token(next, true, &mut |b| text.extend_from_slice(b));
        // Still on llama.cpp's path? (Compare bytes: a token may end inside a character.)
        let common = text.len().min(expected.len());
        if text[..common] != expected.as_bytes()[..common] || (text.len() > expected.len()) {
            return Outcome::Diverged {
                gap,
                at: step,
                ember: String::from_utf8_lossy(&text).into_owned(),
            };
        }
        s.eval(&[next]).expect("decode");
    }
    if text == expected.as_bytes() {
        Outcome::Same
    } else {
        // Stopped early (end of generation) where llama.cpp went on, or the reverse.
        Outcome::Diverged {
            gap: f32::INFINITY,
            at: N_PREDICT,
            ember: String::from_utf8_lossy(&text).into_owned(),
        }
    }
}

fn check(kernels: Kernels, limit: usize) {
    let fx = fixture_json("greedy/expected.json");
    let cases = fx["cases"].as_array().expect("cases");
    with_model(kernels, |m| {
        let mut same = 0;
        let mut bad = Vec::new();
        for c in cases.iter().take(limit) {
            let (p, want) = (c["prompt"].as_str().unwrap(), c["text"].as_str().unwrap());
            match run(m, p, want) {
                Outcome::Same => same += 1,
                Outcome::Diverged { gap, at, ember } => {
                    bad.push(format!("{p:?}: diverged at token {at} (top-2 gap {gap:.3})\n  llama.cpp: {want:?}\n  ember:     {ember:?}"));
                }
            }
        }
        let n = cases.len().min(limit);
        eprintln!("[{}] {same}/{n} identical", kernels.isa);
        assert!(
            bad.is_empty(),
            "[{}] {same}/{n} identical; divergences:\n{}",
            kernels.isa,
            bad.join("\n")
        );
    });
}

#[test]
fn greedy_matches_llama_cpp_with_best_kernels() {
    // llama.cpp's order (`exact`); `EMBER_KERNELS` picks another set, for comparisons.
    let k = std::env::var("EMBER_KERNELS")
        .ok()
        .and_then(|n| Kernels::from_name(&n))
        .unwrap_or_else(|| Kernels::best().exact());
    check(k, usize::MAX);
}

#[test]
fn greedy_matches_llama_cpp_with_every_kernel_set() {
    for k in Kernels::all_supported().map(Kernels::exact) {
        // The scalar reference is slow: a few prompts show that it, too, is llama.cpp to the bit.
        let scalar = k.isa == Isa::Scalar;
        check(k, if scalar { 4 } else { usize::MAX });
    }
}
