//! Beam search on the real model: width 1 is greedy (same tokens, same score), wider beams score
//! at least as high as greedy by the same length-normalised measure on the fixture prompts, and
//! the result is deterministic.

use ember_runtime::arena::Arena;
use ember_runtime::kernels::Kernels;
use ember_runtime::model::Model;
use ember_runtime::sampler::argmax;
use ember_runtime::session::{beam_search, BeamOptions, BeamScratch, Session, SessionConfig};
use ember_tests::{fixture_json, with_model};

const MAX_TOKENS: usize = 24;

/// log softmax(logits)[t].
fn log_prob(logits: &[f32], t: u32) -> f32 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let sum: f64 = logits.iter().map(|&v| ((v - max) as f64).exp()).sum();
    logits[t as usize] - max - sum.ln() as f32
}

/// Greedy tokens and their length-normalised score (α = 1: mean log-probability; an
/// end-of-generation token counts in the length, as in the beam search).
fn greedy(m: &Model<'_>, s: &mut Session<'_, '_>, prompt: &[u32]) -> (Vec<u32>, f32) {
    s.reset();
    s.eval(prompt).expect("prefill");
    let (mut out, mut total) = (Vec::new(), 0.0f32);
    for _ in 0..MAX_TOKENS {
        let logits = s.logits().expect("logits");
        let t = argmax(logits);
        total += log_prob(logits, t);
        if m.tokenizer.is_eog(t) {
            return (out.clone(), total / (out.len() + 1) as f32);
        }
        out.push(t);
        s.eval(&[t]).expect("decode");
    }
    let n = out.len() as f32;
    (out, total / n)
}

#[test]
fn beams_score_at_least_as_high_as_greedy_and_width_one_is_greedy() {
    let cases = fixture_json("greedy/expected.json");
    let cases = cases["cases"].as_array().expect("cases");
    with_model(Kernels::best(), |m| {
        let sc = SessionConfig {
            n_ctx: 256,
            ..Default::default()
        };
        let width = 4;
        let mut mem: Vec<Vec<u8>> = (0..width)
            .map(|_| vec![0u8; Session::bytes_needed(m, &sc)])
            .collect();
        let mut sessions: Vec<Session<'_, '_>> = mem
            .iter_mut()
            .map(|buf| Session::new(m, &mut Arena::new(buf), &sc).expect("session"))
            .collect();
        let mut smem = vec![0u8; BeamScratch::bytes_needed(width, MAX_TOKENS)];
        let mut sarena = Arena::new(&mut smem);
        let mut scratch = BeamScratch::new(&mut sarena, width, MAX_TOKENS).expect("scratch");
        let mut better = 0;
        for case in cases.iter().take(6) {
            let prompt = m
                .tokenizer
                .encode_to_vec(case["prompt"].as_str().unwrap().as_bytes(), true, true)
                .expect("encode");
            let (g_tokens, g_score) = greedy(m, &mut sessions[0], &prompt);
            let opts = |w| BeamOptions {
                width: w,
                max_tokens: MAX_TOKENS,
                length_penalty: 1.0,
                ignore_eos: false,
            };
            let one = beam_search(&mut sessions, &prompt, &opts(1), &mut scratch).expect("beam 1");
            assert_eq!(scratch.best(&one), &g_tokens[..], "width 1 is greedy");
            assert!(
                (one.score - g_score).abs() < 1e-4,
                "{} vs {g_score}",
                one.score
            );
            let r = beam_search(&mut sessions, &prompt, &opts(width), &mut scratch).expect("beam");
            let tokens = scratch.best(&r).to_vec();
            eprintln!(
                "beam {width}: {:.4} (greedy {g_score:.4}) {:?}",
                r.score,
                String::from_utf8_lossy(&m.tokenizer.decode_to_vec(&tokens, false))
            );
            assert!(
                r.score >= g_score - 1e-5,
                "beam {} < greedy {g_score}",
                r.score
            );
            better += (r.score > g_score + 1e-5) as usize;
            // Deterministic.
            let again =
                beam_search(&mut sessions, &prompt, &opts(width), &mut scratch).expect("beam");
            assert_eq!((again, scratch.best(&again)), (r, &tokens[..]));
        }
        eprintln!("beam {width} beat greedy on {better} of 6 prompts");
    });
}
