//! The real Gemma 3 270M Q4_K_M file (`tools/fetch-model.sh gemma3-270m`) against llama.cpp
//! (`fixtures/gemma3/make_gemma3_fixtures.py`): the tokenizer's ids on the project's corpus,
//! greedy text for plain and turn-formatted prompts, and perplexity within 0.5% (2 chunks of 512
//! here; the README gives the whole text). Greedy text is llama.cpp's wherever llama.cpp's own
//! kernel paths (its default, repacked Q4_K tiles and `--no-repack`) print the same; where they
//! do not (one prompt, after 5 tokens), ember's must follow them as far as they agree.

use ember_runtime::arena::Arena;
use ember_runtime::gguf::{Gguf, MappedFile};
use ember_runtime::kernels::Kernels;
use ember_runtime::model::Model;
use ember_runtime::sampler::argmax;
use ember_runtime::session::{Session, SessionConfig};
use ember_tests::{fixture, fixture_json, named_model_path};

fn with_gemma<R>(f: impl FnOnce(&Model<'_>) -> R) -> R {
    with_gemma_kernels(Kernels::best(), f)
}

fn with_gemma_kernels<R>(kernels: Kernels, f: impl FnOnce(&Model<'_>) -> R) -> R {
    let file = MappedFile::open(named_model_path("gemma3-270m", "gemma-3-270m-q4_k_m.gguf"))
        .expect("the Gemma file");
    let g = Gguf::parse(file.bytes()).expect("parse");
    let mut mem = vec![0u8; Model::memory_needed(&g).expect("plan")];
    let mut arena = Arena::new(&mut mem);
    let model = Model::load(g, &mut arena, kernels).expect("load");
    f(&model)
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn gemma3_matches_llama_cpp() {
    let fx = fixture_json("gemma3/expected.json");
    with_gemma(|m| {
        assert_eq!(m.config.arch().name, "gemma3");
        // Tokenizer.
        let cases = fx["tokenizer"]["cases"].as_array().unwrap();
        let mut bad = Vec::new();
        for c in cases {
            let text = c["text"].as_str().unwrap();
            let got = m
                .tokenizer
                .encode_to_vec(text.as_bytes(), true, false)
                .unwrap();
            if got != ids(&c["ids"]) {
                bad.push(format!(
                    "{text:?}\n  llama.cpp: {:?}\n  ember:     {got:?}",
                    ids(&c["ids"])
                ));
            }
        }
        assert!(
            bad.is_empty(),
            "{} of {} differ:\n{}",
            bad.len(),
            cases.len(),
            bad.join("\n")
        );

        // Greedy text.
        let sc = SessionConfig {
            n_ctx: 256,
            ..Default::default()
        };
        let mut mem = vec![0u8; Session::bytes_needed(m, &sc)];
        let mut arena = Arena::new(&mut mem);
        let mut s = Session::new(m, &mut arena, &sc).expect("session");
        for c in fx["greedy"]["cases"].as_array().unwrap() {
            let (prompt, want) = (c["prompt"].as_str().unwrap(), c["text"].as_str().unwrap());
            s.reset();
            let p = m
                .tokenizer
                .encode_to_vec(prompt.as_bytes(), true, true)
                .unwrap();
            s.eval(&p).expect("prefill");
            let mut text = Vec::new();
            while text.len() < want.len() {
                let next = argmax(s.logits().unwrap());
                if m.tokenizer.is_eog(next) {
                    break;
                }
                m.tokenizer
                    .decode_token(next, true, &mut |b| text.extend_from_slice(b));
                s.eval(&[next]).expect("decode");
            }
            let got = String::from_utf8_lossy(&text);
            match c["no_repack_text"].as_str() {
                // llama.cpp's two kernel paths agree: ember's text is theirs.
                None => assert_eq!(got, want, "{prompt:?}"),
                // They part (a near-tie their summation orders break differently): ember follows
                // them as far as they agree with each other.
                Some(other) => {
                    let common: String = want
                        .chars()
                        .zip(other.chars())
                        .take_while(|(a, b)| a == b)
                        .map(|(a, _)| a)
                        .collect();
                    assert!(
                        got.starts_with(&common),
                        "{prompt:?}: {got:?} leaves llama.cpp's common {common:?}"
                    );
                }
            }
        }

        // Perplexity, llama-perplexity's protocol (BOS in front of each chunk, second halves):
        // 2 chunks of 512 (all of it in batches of 512, tiled attention).
        check_perplexity(m, &fx, "chunks2", 512, 2, 0.005);
        // One chunk of 1024, where the sliding-window layers mask the oldest keys and keep rings of
        // their own, so its second batch attends token by token. There llama.cpp's order (`exact`:
        // an f16 running sum of values) must be within 0.5% of llama.cpp; ember's (an f32 running
        // sum) within 1%: on this one chunk, ember's four variants (either order, an f16 or f32
        // cache) span 15.94–16.10 against llama.cpp's 16.04, so summation order alone moves it
        // ±0.5% (2026-12-06; over the whole text at 1024, ember's order gives 13.889 against
        // llama.cpp's 13.881). A masking or ring fault moves it by far more.
        check_perplexity(m, &fx, "ctx1024_chunks1", 1024, 1, 0.01);
    });
    let fx = fixture_json("gemma3/expected.json");
    with_gemma_kernels(Kernels::best().exact(), |m| {
        check_perplexity(m, &fx, "ctx1024_chunks1", 1024, 1, 0.005)
    });
}

/// Perplexity of `chunks` chunks of `ctx` within `bound` (relative) of llama.cpp's in `fx`.
fn check_perplexity(
    m: &Model<'_>,
    fx: &serde_json::Value,
    key: &str,
    ctx: usize,
    chunks: usize,
    bound: f64,
) {
    let ppl = perplexity(m, ctx, chunks);
    let want = fx["perplexity"][key]["ppl"].as_f64().unwrap();
    let rel = (ppl - want) / want;
    eprintln!(
        "gemma3 perplexity ({chunks} x {ctx}, {}): ember {ppl:.4}, llama.cpp {want:.4} ({:+.2}%)",
        m.kernels.name(),
        rel * 100.0
    );
    assert!(
        rel.abs() < bound,
        "perplexity {ppl} vs llama.cpp {want} ({chunks} x {ctx}, {})",
        m.kernels.name()
    );
}

fn perplexity(m: &Model<'_>, ctx: usize, chunks: usize) -> f64 {
    let text = std::fs::read(fixture("perplexity/gpl-3.0.txt")).unwrap();
    // Tokenized as llama-perplexity does: with the BOS the vocabulary asks for.
    let tokens = m.tokenizer.encode_to_vec(&text, true, true).unwrap();
    let sc = SessionConfig {
        n_ctx: ctx,
        n_batch: 512,
        sinks: 0,
        ..Default::default()
    };
    let mut mem = vec![0u8; Session::bytes_needed(m, &sc)];
    let mut arena = Arena::new(&mut mem);
    let mut s = Session::new(m, &mut arena, &sc).expect("session");
    let (mut nll, mut count) = (0.0f64, 0usize);
    for c in 0..chunks {
        let mut chunk = tokens[c * ctx..(c + 1) * ctx].to_vec();
        chunk[0] = m.tokenizer.bos().unwrap();
        s.reset();
        s.eval_all(&chunk, &mut |i, logits| {
            if i >= ctx / 2 && i + 1 < ctx {
                let max = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
                let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
                nll += max + sum.ln() - logits[chunk[i + 1] as usize] as f64;
                count += 1;
            }
        })
        .expect("eval");
    }
    (nll / count as f64).exp()
}
