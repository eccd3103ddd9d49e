//! `ember convert` on tiny random Qwen2 and Qwen3 checkpoints made with Python
//! (`tests/fixtures/tiny-qwen/make_tiny_qwen.py`: Qwen2 with Q/K/V biases, Qwen3 with Q/K norms
//! and heads wider than hidden_size / heads, both with Qwen2's pre-tokenizer and tied
//! embeddings): the converted file names the architecture and the pre-tokenizer, ember's tokens
//! equal the Hugging Face tokenizer's, and ember's logits match an independent numpy forward pass
//! of the original weights (which checks the keys, the tensor mapping and the NEOX RoPE without
//! a Q/K permutation).

use ember_quant::convert::{convert_dir, Options};
use ember_runtime::arena::Arena;
use ember_runtime::gguf::{keys, Gguf, MappedFile};
use ember_runtime::kernels::Kernels;
use ember_runtime::model::Model;
use ember_runtime::weights::GgmlType;

fn check(arch: &str, ty: GgmlType, tol: f64) {
    let src = ember_tests::fixture(&format!("tiny-qwen/{arch}"));
    let dir = std::env::temp_dir().join(format!("ember-convert-{arch}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(format!("tiny-{arch}-{}.gguf", ty.name()));
    let o = Options {
        ty,
        embeddings: ty,
        threads: 2,
        measure: false,
        pre_tokenizer: None,
    };
    convert_dir(&src, &out, &o, &mut |_, _, _| {}).expect("convert");
    let reference = ember_tests::fixture_json(&format!("tiny-qwen/{arch}/reference.json"));
    let file = MappedFile::open(&out).unwrap();
    let g = Gguf::parse(file.bytes()).unwrap();
    assert_eq!(g.get_str(keys::ARCHITECTURE).unwrap(), Some(arch));
    assert_eq!(g.get_str(keys::TOKENIZER_PRE).unwrap(), Some("qwen2"));
    let mut mem = vec![0u8; Model::memory_needed(&g).unwrap()];
    let mut arena = Arena::new(&mut mem);
    let model = Model::load(g, &mut arena, Kernels::best()).unwrap();
    assert!(model.weights.tied_output);
    let (worst, scale) = ember_tests::worst_logit_error(&model, &reference, true, arch);
    eprintln!(
        "{arch} {}: max |ember - numpy| = {worst:.3e} (logits up to {scale:.2})",
        ty.name()
    );
    assert!(
        worst < tol * scale.max(1.0),
        "{arch} {}: {worst} vs scale {scale}",
        ty.name()
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn qwen2_and_qwen3_conversions_match_numpy() {
    for arch in ["qwen2", "qwen3"] {
        check(arch, GgmlType::F32, 1e-3);
        check(arch, GgmlType::Q8_0, 0.05);
    }
}
