//! Helpers shared by the cross-crate tests: the real model (fetched on first use) and the
//! fixtures made from llama.cpp (see `fixtures/make_fixtures.py`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A fixture file under `tests/fixtures/`.
pub fn fixture(rel: &str) -> PathBuf {
    root().join("tests").join("fixtures").join(rel)
}

/// Parsed JSON fixture.
pub fn fixture_json(rel: &str) -> serde_json::Value {
    let p = fixture(rel);
    let s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Path of the real SmolLM2-135M-Instruct Q4_1 model: `$EMBER_MODEL`, else `models/…`, fetched
/// with `tools/fetch-model.sh` the first time it is missing.
pub fn model_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Ok(p) = std::env::var("EMBER_MODEL") {
            return PathBuf::from(p);
        }
        let p = root()
            .join("models")
            .join("SmolLM2-135M-Instruct.Q4_1.gguf");
        if !p.exists() {
            let status = std::process::Command::new(root().join("tools").join("fetch-model.sh"))
                .status()
                .expect("running tools/fetch-model.sh");
            assert!(
                status.success(),
                "tools/fetch-model.sh failed: the tests need the model"
            );
        }
        p
    })
    .clone()
}

/// Path of another model `tools/fetch-model.sh` knows (`gemma3-270m`, ...), as `file` under
/// `models/`, fetched the first time it is missing.
pub fn named_model_path(name: &str, file: &str) -> PathBuf {
    let p = root().join("models").join(file);
    if !p.exists() {
        let status = std::process::Command::new(root().join("tools").join("fetch-model.sh"))
            .arg(name)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("running tools/fetch-model.sh");
        assert!(status.success(), "tools/fetch-model.sh {name} failed");
    }
    p
}

/// The model file's bytes, mapped once for the whole test binary.
pub fn model_bytes() -> &'static [u8] {
    static FILE: OnceLock<ember_runtime::gguf::MappedFile> = OnceLock::new();
    FILE.get_or_init(|| {
        ember_runtime::gguf::MappedFile::open(model_path()).expect("mapping the model")
    })
    .bytes()
}

/// Runs `f` with the model loaded using `kernels`.
pub fn with_model<R>(
    kernels: ember_runtime::kernels::Kernels,
    f: impl FnOnce(&ember_runtime::model::Model<'_>) -> R,
) -> R {
    use ember_runtime::{arena::Arena, gguf::Gguf, model::Model};
    let g = Gguf::parse(model_bytes()).expect("parsing the model");
    let mut mem = vec![0u8; Model::memory_needed(&g).expect("memory plan")];
    let mut arena = Arena::new(&mut mem);
    let model = Model::load(g, &mut arena, kernels).expect("loading the model");
    f(&model)
}

/// A converted model against a reference forward pass (`reference`: `cases`, each a `text`, the
/// reference tokenizer's `ids` and the reference `last_logits` of its last positions): asserts
/// that ember's tokens (`special`: parsing special tokens) equal the ids (`label` names the case
/// set), and returns the largest |ember − reference| over the logits given and the logits' scale
/// (their largest magnitude). The cache is f32, so only the weights' precision differs.
pub fn worst_logit_error(
    model: &ember_runtime::model::Model<'_>,
    reference: &serde_json::Value,
    special: bool,
    label: &str,
) -> (f64, f64) {
    use ember_runtime::session::{Session, SessionConfig};
    let sc = SessionConfig {
        n_ctx: 64,
        kv_type: ember_runtime::kv::KvType::F32,
        ..Default::default()
    };
    let mut smem = vec![0u8; Session::bytes_needed(model, &sc)];
    let mut sarena = ember_runtime::arena::Arena::new(&mut smem);
    let mut s = Session::new(model, &mut sarena, &sc).unwrap();
    let (mut worst, mut scale) = (0.0f64, 0.0f64);
    for case in reference["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let ids = model
            .tokenizer
            .encode_to_vec(text.as_bytes(), true, special)
            .unwrap();
        assert_eq!(ids, want, "{label}: tokens of {text:?}");
        let last = case["last_logits"].as_array().unwrap();
        let first_kept = ids.len() - last.len();
        s.reset();
        let mut got = vec![Vec::new(); ids.len()];
        s.eval_all(&ids, &mut |i, l| got[i] = l.to_vec()).unwrap();
        for (k, row) in last.iter().enumerate() {
            for (j, v) in row.as_array().unwrap().iter().enumerate() {
                let w = v.as_f64().unwrap();
                worst = worst.max((got[first_kept + k][j] as f64 - w).abs());
                scale = scale.max(w.abs());
            }
        }
    }
    (worst, scale)
}

/// A copy of the real model whose chat template is `template` (the weights and every other key
/// unchanged), written under the target directory's temporary folder as `name`.
pub fn model_with_template(name: &str, template: &str) -> PathBuf {
    model_with_metadata(name, |meta| {
        for kv in meta.iter_mut() {
            if kv.key == ember_runtime::gguf::keys::CHAT_TEMPLATE {
                *kv = ember_quant::writer::MetaKv::str(&kv.key.clone(), template);
            }
        }
    })
}

/// A copy of the real model with `edit` applied to its metadata (the weights unchanged), written
/// under the target directory's temporary folder as `name`.
pub fn model_with_metadata(
    name: &str,
    edit: impl FnOnce(&mut Vec<ember_quant::writer::MetaKv>),
) -> PathBuf {
    use ember_quant::writer::{GgufWriter, MetaKv, TensorEntry};
    use ember_runtime::gguf::Gguf;
    let dir = root().join("target").join("tmp-models");
    std::fs::create_dir_all(&dir).expect("creating target/tmp-models");
    let out = dir.join(format!("{name}.gguf"));
    let g = Gguf::parse(model_bytes()).expect("parsing the model");
    let mut meta: Vec<MetaKv> = g.metadata().map(|(k, v)| MetaKv::copy(k, &v)).collect();
    edit(&mut meta);
    let tensors: Vec<TensorEntry> = g
        .tensors()
        .map(|t| TensorEntry {
            name: t.name.into(),
            dims: t.dims[..t.n_dims as usize].to_vec(),
            ty: t.ty,
        })
        .collect();
    // The writer fills a temporary file and renames it over `out` when complete.
    let mut w = GgufWriter::create(&out, &meta, &tensors).expect("writing the model copy");
    for t in g.tensors() {
        w.tensor(t.data).expect("writing a tensor");
    }
    w.finish().expect("finishing the model copy");
    out
}

/// The llama.cpp sources of the `llama-cpp-python` sdist, whose own suites the tests read
/// (vocabularies with expected ids, chat templates, grammars): `$EMBER_LLAMA_CPP_SOURCE`, else
/// fetched once with `tools/fetch-llama-cpp-source.sh`.
pub fn llama_cpp_source() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Ok(p) = std::env::var("EMBER_LLAMA_CPP_SOURCE") {
            return PathBuf::from(p);
        }
        let out =
            std::process::Command::new(root().join("tools").join("fetch-llama-cpp-source.sh"))
                .stderr(std::process::Stdio::inherit())
                .output()
                .expect("running tools/fetch-llama-cpp-source.sh");
        assert!(
            out.status.success(),
            "tools/fetch-llama-cpp-source.sh failed: the test needs llama.cpp's suites"
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
    .clone()
}
