//! The ring KV cache on the real model: a prompt evaluated in batches gives the same logits, bit
//! for bit, as one token at a time, also when the ring wraps in the middle of a batch, for every
//! KV precision; and generation goes on past the context.

use ember_runtime::arena::Arena;
use ember_runtime::kernels::Kernels;
use ember_runtime::kv::KvType;
use ember_runtime::model::Model;
use ember_runtime::session::{Session, SessionConfig};
use ember_tests::with_model;

/// Logits after evaluating `tokens` in batches of `batch` through a ring of `ctx` (4 sinks).
fn last_logits(m: &Model<'_>, tokens: &[u32], ctx: usize, batch: usize, ty: KvType) -> Vec<f32> {
    let sc = SessionConfig {
        n_ctx: ctx,
        n_batch: batch,
        sinks: 4,
        kv_type: ty,
    };
    let mut mem = vec![0u8; Session::bytes_needed(m, &sc)];
    let mut arena = Arena::new(&mut mem);
    let mut s = Session::new(m, &mut arena, &sc).expect("session");
    for chunk in tokens.chunks(batch) {
        s.eval(chunk).expect("eval");
    }
    assert_eq!(s.n_past(), tokens.len());
    s.logits().expect("logits").to_vec()
}

#[test]
fn batches_equal_single_tokens_bit_for_bit_across_a_wrap() {
    with_model(Kernels::best(), |m| {
        let text = "The quick brown fox jumps over the lazy dog. ".repeat(12);
        let tokens = m
            .tokenizer
            .encode_to_vec(text.as_bytes(), true, true)
            .expect("encode");
        assert!(tokens.len() > 100, "{} tokens", tokens.len());
        for ty in KvType::ALL {
            let one = last_logits(m, &tokens, 48, 1, ty);
            // 44-token batches: the ring of 44 cells wraps inside most batches.
            for batch in [7, 44] {
                let many = last_logits(m, &tokens, 48, batch, ty);
                assert!(
                    one.iter()
                        .zip(&many)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{} KV, batch {batch}: logits differ",
                    ty.name()
                );
            }
            // Within the context, a ring that never wraps is the plain cache.
            let wide = last_logits(m, &tokens, 512, 64, ty);
            assert!(
                one.iter().zip(&wide).any(|(a, b)| a != b),
                "the ring had no effect"
            );
        }
    });
}

#[test]
fn a_session_refuses_sinks_not_smaller_than_the_context_and_a_short_buffer() {
    with_model(Kernels::best(), |m| {
        let bad = SessionConfig {
            n_ctx: 16,
            sinks: 16,
            ..Default::default()
        };
        assert!(Session::plan(m, &bad).is_err());
        let mut mem = vec![0u8; 1 << 20];
        let mut arena = Arena::new(&mut mem);
        assert!(Session::new(m, &mut arena, &bad).is_err());
        let sc = SessionConfig {
            n_ctx: 4096,
            ..Default::default()
        };
        let mut arena = Arena::new(&mut mem);
        let e = Session::new(m, &mut arena, &sc).err().expect("too small");
        assert!(e.to_string().contains("session memory"), "{e}");
        assert_eq!(arena.used(), 0, "nothing allocated before the check");
        let too_long = SessionConfig {
            n_ctx: m.config.n_ctx_train + 1,
            ..Default::default()
        };
        assert!(Session::plan(m, &too_long).is_err());
    });
}

/// Greedy steps of several sessions decoded together (`Session::eval_each`) give each session
/// the logits it gets decoded alone, bit for bit: for every KV precision, with prompts of
/// different lengths (so the sessions sit at different positions), and past the context of the
/// shortest ring (one session wraps while the others do not).
#[test]
fn sessions_decoded_together_equal_each_decoded_alone() {
    with_model(Kernels::best(), |m| {
        let prompts = [
            "The capital of France is",
            "Once upon a time, in a small village by the sea, there lived",
            "def fibonacci(n):",
        ];
        for ty in KvType::ALL {
            let configs: Vec<SessionConfig> = [40usize, 512, 96]
                .iter()
                .map(|&n_ctx| SessionConfig {
                    n_ctx,
                    n_batch: 64,
                    sinks: 4,
                    kv_type: ty,
                })
                .collect();
            let mut mems: Vec<Vec<u8>> = configs
                .iter()
                .flat_map(|sc| {
                    let n = Session::bytes_needed(m, sc);
                    [vec![0u8; n], vec![0u8; n]]
                })
                .collect();
            let (mut alone, mut together): (Vec<Session>, Vec<Session>) = (Vec::new(), Vec::new());
            for (i, mem) in mems.iter_mut().enumerate() {
                let s = Session::new(m, &mut Arena::new(mem), &configs[i / 2]).expect("session");
                if i % 2 == 0 {
                    alone.push(s);
                } else {
                    together.push(s);
                }
            }
            for (i, p) in prompts.iter().enumerate() {
                let ids = m.tokenizer.encode_to_vec(p.as_bytes(), true, true).unwrap();
                alone[i].eval(&ids).unwrap();
                together[i].eval(&ids).unwrap();
            }
            for step in 0..48 {
                let next: Vec<u32> = alone
                    .iter()
                    .map(|s| ember_runtime::sampler::argmax(s.logits().unwrap()))
                    .collect();
                for (s, &t) in alone.iter_mut().zip(&next) {
                    s.eval(&[t]).unwrap();
                }
                let mut refs: Vec<&mut Session> = together.iter_mut().collect();
                Session::eval_each(&mut refs, &next).unwrap();
                for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
                    assert_eq!(a.n_past(), b.n_past());
                    let (la, lb) = (a.logits().unwrap(), b.logits().unwrap());
                    assert!(
                        la.iter().zip(lb).all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{} KV, step {step}, session {i}: logits differ",
                        ty.name()
                    );
                }
            }
            assert!(alone[0].kv().has_wrapped(), "the short ring never wrapped");
        }
    });
}
