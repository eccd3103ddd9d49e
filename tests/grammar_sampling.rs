//! Grammar-constrained sampling draws what a full mask of the vocabulary would give. When the
//! sampler's choice is rejected, `Constraint::sample` tries only the most likely tokens (as many
//! as greedy or top-k can reach); this checks it against a mask built here token by token with
//! `Constraint::allows`, drawn by a twin sampler of the same seed, over SmolLM2's vocabulary,
//! random logits, penalties, and states along real outputs of several grammars.

use ember_runtime::arena::Arena;
use ember_runtime::grammar::{gbnf_from_schema, Constraint, Grammar, MatcherLimits, JSON};
use ember_runtime::kernels::Kernels;
use ember_runtime::sampler::{Rng, Sampler, SamplerConfig};
use ember_tests::with_model;

#[test]
fn constrained_draws_equal_a_full_mask() {
    let schema = r#"{"type": "object", "properties": {"room": {"enum": ["kitchen", "hall"]},
        "level": {"type": "integer"}, "note": {"type": "string", "maxLength": 40}},
        "required": ["room", "level"]}"#;
    let grammars = [
        JSON.to_string(),
        gbnf_from_schema(schema).unwrap(),
        // Free text inside a string: most tokens pass the first byte, few end it.
        "root ::= \"\\\"\" [^\"\\\\\\n]{0,200} \"\\\"\"".to_string(),
        "root ::= (\"yes\" | \"no\" | \"maybe later\") \".\"".to_string(),
    ];
    let configs = [
        SamplerConfig {
            temperature: 0.0,
            ..SamplerConfig::default()
        },
        SamplerConfig {
            temperature: 0.0,
            repeat_penalty: 1.3,
            repeat_last_n: 16,
            ..SamplerConfig::default()
        },
        SamplerConfig {
            temperature: 0.9,
            top_k: 40,
            top_p: 0.9,
            seed: 11,
            ..SamplerConfig::default()
        },
        SamplerConfig {
            temperature: 1.2,
            top_k: 5,
            min_p: 0.05,
            presence_penalty: 0.5,
            frequency_penalty: 0.3,
            repeat_last_n: 32,
            seed: 5,
            ..SamplerConfig::default()
        },
    ];
    with_model(Kernels::best(), |model| {
        let tok = &model.tokenizer;
        let n = tok.vocab_size();
        let mut rng = Rng::new(2026);
        let (mut draws, mut rejected, mut full) = (0, 0, 0);
        for src in &grammars {
            let g = Grammar::compile_owned(src).unwrap();
            let limits = MatcherLimits::default();
            for cfg in &configs {
                let mut mem = vec![0u8; Constraint::bytes_needed(&limits, tok)];
                let mut arena = Arena::new(&mut mem);
                let mut c = Constraint::new(g.grammar(), &mut arena, &limits, tok).unwrap();
                let size = Sampler::bytes_needed(n, cfg);
                let (mut m1, mut m2) = (vec![0u8; size], vec![0u8; size]);
                let mut s1 = Sampler::new(&mut Arena::new(&mut m1), n, *cfg).unwrap();
                let mut s2 = Sampler::new(&mut Arena::new(&mut m2), n, *cfg).unwrap();
                let mut logits = vec![0f32; n];
                let mut mask = vec![0f32; n];
                let mut recent: Vec<u32> = Vec::new();
                for _step in 0..40 {
                    // The reference: every token tried.
                    let allowed: Vec<usize> = (0..n)
                        .filter(|&id| c.allows(tok, id as u32).unwrap())
                        .collect();
                    // Peaked random logits: a few likely tokens over a flat tail, and (as a
                    // model mostly does) often some allowed ones among or just below them.
                    for l in logits.iter_mut() {
                        *l = rng.next_f32() * 4.0 - 2.0;
                    }
                    for _ in 0..8 {
                        let id = (rng.next_u64() % n as u64) as usize;
                        logits[id] = 6.0 + rng.next_f32() * 6.0;
                    }
                    if !allowed.is_empty() && !rng.next_u64().is_multiple_of(4) {
                        for _ in 0..1 + rng.next_u64() % 6 {
                            let id = allowed[(rng.next_u64() % allowed.len() as u64) as usize];
                            logits[id] = 3.0 + rng.next_f32() * 7.0;
                        }
                    }
                    // Tokens just taken, likely again: the penalties reorder them.
                    if !recent.is_empty() && rng.next_u64().is_multiple_of(2) {
                        for &id in recent.iter().rev().take(3) {
                            logits[id as usize] = 5.0 + rng.next_f32() * 6.0;
                        }
                    }
                    mask.fill(f32::NEG_INFINITY);
                    for &id in &allowed {
                        mask[id] = logits[id];
                    }
                    let any = mask.iter().any(|l| l.is_finite());
                    let masks_before = c.masks;
                    let got = c.sample(&mut s1, tok, &logits).unwrap();
                    if !any {
                        assert_eq!(got, None);
                        break;
                    }
                    // The twin: its own choice when the mask allows it, else a draw from the
                    // full mask (the generators stay in step: one draw, or two).
                    let first = s2.sample(&logits);
                    let want = if mask[first as usize].is_finite() {
                        first
                    } else {
                        rejected += 1;
                        s2.sample(&mask)
                    };
                    full += (c.masks > masks_before) as usize;
                    assert_eq!(got, Some(want), "{src:?} {cfg:?}");
                    let got = want;
                    draws += 1;
                    if tok.is_eog(got) || !c.matcher().can_continue() {
                        c.reset().unwrap();
                        s1.reset();
                        s2.reset();
                        recent.clear();
                        continue;
                    }
                    c.accept(tok, got).unwrap();
                    recent.push(got);
                    s1.accept(got);
                    s2.accept(got);
                }
            }
        }
        eprintln!(
            "{draws} constrained draws equal the full mask's: {rejected} rejected the sampler's \
             choice, {full} of them needed the whole vocabulary masked"
        );
        assert!(
            draws > 400 && rejected > 100,
            "{draws} draws, {rejected} rejected"
        );
    });
}
