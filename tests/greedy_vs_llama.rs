//! Greedy generation against llama.cpp (`llama-simple -n 40`) on chat-formatted and plain prompts.
//!
//! The only accepted cause of a difference is a near-tie: at the first token where ember's text
//! leaves llama.cpp's, ember's two best logits must be within `NEAR_TIE` of each other (two
//! engines that round differently may then pick either). A divergence at a clear winner fails.
//!
//! Current state (see the README): ember mirrors llama.cpp's numerics where they matter most
//! (Q8_1/Q8_0 activation quantization, f16 queries and an f16 running sum in attention, the f64
//! RMSNorm sum, the stepped RoPE angles), and the perplexity agrees within 0.3%, but the two
//! engines still sum in different orders and this 4-bit model's logits are flat: only 6 of the 20
//! prompts are identical over 40 tokens; the others part at near-ties. `MIN_IDENTICAL` guards
//! that figure against regressions; the goal is all 20.

use ember_runtime::arena::Arena;
use ember_runtime::kernels::{Isa, Kernels};
use ember_runtime::model::Model;
use ember_runtime::sampler::argmax;
use ember_runtime::session::{Session, SessionConfig};
use ember_tests::{fixture_json, with_model};

/// Two correct engines that sum in different orders differ by up to ~0.8 in single logits on this
/// 4-bit model (measured: ember's scalar and AVX2 kernels, before they shared one summation order,
/// differed by up to 0.77 over the 49152 logits of one prompt), so a gap under 1.0 is a tie.
const NEAR_TIE: f32 = 1.0;
const MIN_IDENTICAL_PERCENT: usize = 25;
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

fn check(kernels: Kernels, limit: usize, require_identical: bool) {
    let fx = fixture_json("greedy/expected.json");
    let cases = fx["cases"].as_array().expect("cases");
    with_model(kernels, |m| {
        let mut same = 0;
        let mut report = Vec::new();
        let mut bad = Vec::new();
        for c in cases.iter().take(limit) {
            let (p, want) = (c["prompt"].as_str().unwrap(), c["text"].as_str().unwrap());
            match run(m, p, want) {
                Outcome::Same => same += 1,
                Outcome::Diverged { gap, at, ember } => {
                    let line = format!("{p:?}: diverged at token {at} (top-2 gap {gap:.3})\n  llama.cpp: {want:?}\n  ember:     {ember:?}");
                    if gap < NEAR_TIE {
                        report.push(line)
                    } else {
                        bad.push(line)
                    }
                }
            }
        }
        let n = cases.len().min(limit);
        eprintln!(
            "[{}] {same}/{n} identical; near-tie divergences: {}\n{}",
            kernels.isa,
            report.len(),
            report.join("\n")
        );
        assert!(
            bad.is_empty(),
            "[{}] divergences that are not near-ties:\n{}",
            kernels.isa,
            bad.join("\n")
        );
        assert!(
            !require_identical || same * 100 >= n * MIN_IDENTICAL_PERCENT,
            "[{}] only {same} of {n} identical",
            kernels.isa
        );
    });
}

#[test]
fn greedy_matches_llama_cpp_with_best_kernels() {
    // `EMBER_KERNELS` picks another set, for comparisons.
    let k = std::env::var("EMBER_KERNELS")
        .ok()
        .and_then(|n| Isa::from_name(&n))
        .and_then(Kernels::for_isa)
        .unwrap_or_else(Kernels::best);
    check(k, usize::MAX, true);
}

#[test]
fn greedy_matches_llama_cpp_with_every_kernel_set() {
    for k in Kernels::all_supported() {
        // The scalar reference is slow: a few prompts show that it, too, parts only at near-ties.
        let scalar = k.isa == Isa::Scalar;
        check(k, if scalar { 4 } else { usize::MAX }, !scalar);
    }
}
