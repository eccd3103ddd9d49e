//! `ember convert` on a tiny random Llama checkpoint made with Python (`tests/fixtures/tiny-llama`,
//! `make_tiny_llama.py`): ember's tokens equal the Hugging Face tokenizer's, and ember's logits on
//! the converted file match an independent numpy forward pass of the original weights (which
//! checks the hyperparameters, the tensor mapping and the Q/K permutation).

use ember_quant::convert::{convert_dir, Options};
use ember_runtime::arena::Arena;
use ember_runtime::gguf::{Gguf, MappedFile};
use ember_runtime::kernels::Kernels;
use ember_runtime::model::Model;
use ember_runtime::weights::GgmlType;
use std::path::{Path, PathBuf};

fn fixture_dir() -> PathBuf {
    ember_tests::fixture("tiny-llama")
}

fn convert(ty: GgmlType, out: &Path) {
    let o = Options {
        ty,
        embeddings: ty,
        threads: 2,
        measure: true,
        pre_tokenizer: None,
    };
    let reports = convert_dir(&fixture_dir(), out, &o, &mut |_, _, _| {}).expect("convert");
    assert_eq!(reports.len(), 1 + 2 * 9 + 2);
    for r in &reports {
        let e = r.error.expect("measured");
        assert!(e.cosine() > 0.99, "{}: cosine {}", r.name, e.cosine());
    }
}

/// Max |ember − numpy| over the last 4 positions of each case, and the logits' scale.
fn compare(path: &Path) -> (f64, f64) {
    let reference = ember_tests::fixture_json("tiny-llama/reference.json");
    let file = MappedFile::open(path).unwrap();
    let g = Gguf::parse(file.bytes()).unwrap();
    let mut mem = vec![0u8; Model::memory_needed(&g).unwrap()];
    let mut arena = Arena::new(&mut mem);
    let model = Model::load(g, &mut arena, Kernels::best()).unwrap();
    ember_tests::worst_logit_error(&model, &reference, false, "tiny llama")
}

#[test]
fn f32_conversion_matches_numpy() {
    let dir = std::env::temp_dir().join(format!("ember-convert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("tiny-f32.gguf");
    convert(GgmlType::F32, &out);
    let (worst, scale) = compare(&out);
    eprintln!("f32: max |ember - numpy| = {worst:.3e} (logits up to {scale:.2})");
    assert!(worst < 1e-3 * scale.max(1.0), "{worst} vs scale {scale}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn quantized_conversions_stay_close_to_numpy() {
    let dir = std::env::temp_dir().join(format!("ember-convert-q-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (ty, tol) in [
        (GgmlType::F16, 0.01),
        (GgmlType::Q8_0, 0.05),
        (GgmlType::Q4_1, 0.5),
        (GgmlType::Q4_0, 0.5),
    ] {
        let out = dir.join(format!("tiny-{}.gguf", ty.name()));
        convert(ty, &out);
        let (worst, scale) = compare(&out);
        eprintln!(
            "{}: max |ember - numpy| = {worst:.3e} (logits up to {scale:.2})",
            ty.name()
        );
        assert!(
            worst < tol * scale.max(1.0),
            "{}: {worst} vs scale {scale}",
            ty.name()
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
