//! The console's conversations on the real model: the no_std ChatML assistant (fixed buffers)
//! and the engine's (the model's Jinja template, the engine's chat-turn policy: what `ember
//! serial` runs) give the same greedy replies turn after turn, with the KV cache kept between
//! turns, and the ChatML one keeps going through the ring cache when the conversation outgrows
//! the context.

use ember_runtime::arena::Arena;
use ember_runtime::console::{Assistant, ChatAssistant, EngineAssistant};
use ember_runtime::engine::{Engine, LoadedModel, Settings};
use ember_runtime::kernels::Kernels;
use ember_runtime::sampler::{Sampler, SamplerConfig};
use ember_runtime::session::{Session, SessionConfig};
use ember_tests::with_model;

/// SmolLM2's template adds this system message when the conversation has none.
const SMOLLM_DEFAULT_SYSTEM: &str =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

const QUESTIONS: [&str; 3] = [
    "What is the capital of France?",
    "And of Italy?",
    "Name a fruit.",
];

fn replies(a: &mut dyn Assistant) -> Vec<String> {
    QUESTIONS
        .iter()
        .map(|q| {
            let mut r = String::new();
            a.reply(q, &mut |p| {
                r.push_str(p);
                true
            })
            .expect("reply");
            r
        })
        .collect()
}

#[test]
fn chatml_and_template_assistants_agree_over_several_turns() {
    with_model(Kernels::best(), |m| {
        let sc = SessionConfig {
            n_ctx: 512,
            ..Default::default()
        };
        let cfg = SamplerConfig::default();
        let n_vocab = m.config.n_vocab;
        let max_line = 256;

        let mut mem = vec![
            0u8;
            Session::bytes_needed(m, &sc)
                + Sampler::bytes_needed(n_vocab, &cfg)
                + ChatAssistant::chatml_bytes_needed(max_line)
        ];
        let mut arena = Arena::new(&mut mem);
        let s = Session::new(m, &mut arena, &sc).unwrap();
        let smp = Sampler::new(&mut arena, n_vocab, cfg).unwrap();
        let mut chatml = ChatAssistant::chatml(s, smp, &mut arena, max_line, 48).unwrap();
        chatml.set_system(SMOLLM_DEFAULT_SYSTEM).unwrap();
        let a = replies(&mut chatml);

        let loaded = std::sync::Arc::new(
            LoadedModel::open(ember_tests::model_path(), Kernels::best()).unwrap(),
        );
        let settings = Settings {
            n_ctx: sc.n_ctx,
            sampler: cfg,
            ..Settings::default()
        };
        let engine = Engine::new(loaded, &settings, None).unwrap();
        let mut templ = EngineAssistant::new(engine, 48);
        let b = replies(&mut templ);

        assert_eq!(a, b);
        assert!(a.iter().all(|r| !r.is_empty()));
        // The cache kept the whole conversation: it holds more than the last turn.
        assert!(
            chatml.session().n_past() > 60,
            "{}",
            chatml.session().n_past()
        );
        assert_eq!(chatml.session().n_past(), templ.engine().session().n_past());

        // A line too long for the ChatML buffers is an error, and the console goes on.
        let long = "x".repeat(3 * max_line);
        assert!(chatml.reply(&long, &mut |_| true).is_err());
        chatml.reset();
        assert_eq!(replies(&mut chatml), a);
    })
}

#[test]
fn a_long_conversation_goes_on_through_the_ring() {
    with_model(Kernels::best(), |m| {
        let sc = SessionConfig {
            n_ctx: 96,
            n_batch: 32,
            ..Default::default()
        };
        let cfg = SamplerConfig::default();
        let mut mem = vec![
            0u8;
            Session::bytes_needed(m, &sc)
                + Sampler::bytes_needed(m.config.n_vocab, &cfg)
                + ChatAssistant::chatml_bytes_needed(128)
        ];
        let mut arena = Arena::new(&mut mem);
        let s = Session::new(m, &mut arena, &sc).unwrap();
        let smp = Sampler::new(&mut arena, m.config.n_vocab, cfg).unwrap();
        let mut a = ChatAssistant::chatml(s, smp, &mut arena, 128, 24).unwrap();
        for round in 0..3 {
            for r in replies(&mut a) {
                assert!(!r.is_empty(), "round {round}");
            }
        }
        assert!(a.session().n_past() > 2 * 96, "{}", a.session().n_past());
    })
}
