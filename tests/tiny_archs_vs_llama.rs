//! Architectures checked against llama.cpp without real weights: tiny random qwen2, qwen3 and
//! Llama 3 models (`fixtures/tiny-archs/make_tiny_archs.py`: the architectures' real tensor names
//! and keys, F32 and a Q8_0 copy made by llama-quantize) and llama.cpp's logits for a prompt and
//! 8 greedy steps. ember must tokenize the prompt to llama.cpp's ids, choose the same tokens, and
//! give logits within 1e-4 (relative to the largest) on F32, where the summation orders of the
//! two differ in places (llama.cpp's decode steps, bias adds) and a last-bit difference can flip
//! an f16 rounding of the cache; on Q8_0 they are bit-identical (every operation of these
//! architectures, RoPE NEOX, Q/K norms, biases, `rope_freqs` included, follows llama.cpp's
//! arithmetic on every kernel set).

use ember_runtime::arena::Arena;
use ember_runtime::gguf::{Gguf, MappedFile};
use ember_runtime::kernels::Kernels;
use ember_runtime::kv::KvType;
use ember_runtime::model::Model;
use ember_runtime::sampler::argmax;
use ember_runtime::session::{Session, SessionConfig};
use ember_tests::{fixture, fixture_json};

fn check(file: &str, kernels: Kernels, tolerance: f32) {
    let fx = fixture_json("tiny-archs/reference.json");
    let r = &fx["models"][file];
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let (want_prompt, want_tokens) = (ids(&r["prompt_ids"]), ids(&r["tokens"]));
    let f = MappedFile::open(fixture(&format!("tiny-archs/{file}"))).expect("fixture");
    let g = Gguf::parse(f.bytes()).expect("parse");
    let mut mem = vec![0u8; Model::memory_needed(&g).expect("plan")];
    let mut arena = Arena::new(&mut mem);
    let model = Model::load(g, &mut arena, kernels).expect("load");
    let prompt = fx["prompt"].as_str().unwrap();
    let got = model
        .tokenizer
        .encode_to_vec(prompt.as_bytes(), true, true)
        .unwrap();
    assert_eq!(got, want_prompt, "{file}: prompt ids");

    let sc = SessionConfig {
        n_ctx: 64,
        kv_type: KvType::from_name(r["kv_cache"].as_str().unwrap()).expect("cache type"),
        ..Default::default()
    };
    let mut smem = vec![0u8; Session::bytes_needed(&model, &sc)];
    let mut sarena = Arena::new(&mut smem);
    let mut s = Session::new(&model, &mut sarena, &sc).expect("session");
    s.eval(&got).expect("prefill");
    let mut worst = 0.0f32;
    for (step, want) in r["logits"].as_array().unwrap().iter().enumerate() {
        let want: Vec<f32> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let logits = s.logits().expect("logits");
        assert_eq!(logits.len(), want.len(), "{file}: vocabulary");
        let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let err = logits
            .iter()
            .zip(&want)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()))
            / scale;
        worst = worst.max(err);
        assert!(
            err <= tolerance,
            "{file} [{}] step {step}: logits differ by {err:e} of the largest",
            kernels.isa
        );
        let next = argmax(logits);
        assert_eq!(
            next, want_tokens[step],
            "{file} [{}] step {step}: greedy token",
            kernels.isa
        );
        s.eval(&[next]).expect("decode");
    }
    eprintln!(
        "{file} [{}]: {} steps, largest relative logit error {worst:.2e}",
        kernels.isa,
        want_tokens.len()
    );
}

#[test]
fn tiny_models_match_llama_cpp_on_every_kernel_set() {
    for arch in ["qwen2", "qwen3", "llama3"] {
        // llama.cpp's order: the Q8_0 files' logits are llama.cpp's bits.
        for k in Kernels::all_supported().map(Kernels::exact) {
            check(&format!("tiny-{arch}-f32.gguf"), k, 1e-4);
            check(&format!("tiny-{arch}-q8_0.gguf"), k, 0.0);
        }
    }
}

#[test]
fn ember_quantize_writes_llama_quantizes_bytes_for_every_architecture() {
    use ember_quant::quantize::{quantize_file, Options};
    use ember_runtime::weights::GgmlType;
    let dir = std::env::temp_dir().join(format!("ember-tiny-archs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for arch in ["qwen2", "qwen3", "llama3"] {
        let out = dir.join(format!("{arch}.gguf"));
        let o = Options {
            target: ember_quant::recipe::Target::Single(GgmlType::Q8_0),
            embeddings: Some(GgmlType::Q8_0),
            threads: 2,
            measure: false,
        };
        let src = fixture(&format!("tiny-archs/tiny-{arch}-f32.gguf"));
        quantize_file(&src, &out, &o, &mut |_, _, _| {}).expect("quantize");
        let want = std::fs::read(fixture(&format!("tiny-archs/tiny-{arch}-q8_0.gguf"))).unwrap();
        assert!(
            std::fs::read(&out).unwrap() == want,
            "{arch}: differs from llama-quantize's file"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
