//! Bad input to the quantizer and the converter: a clear error naming the problem, and nothing
//! left at the output path (no file, no temporary file beside it). Also: what the writer writes,
//! the runtime's reader reads back exactly.

use ember_quant::recipe::Target;
use ember_quant::writer::{GgufWriter, MetaKv, TensorEntry};
use ember_quant::{convert, quantize};
use ember_runtime::gguf::{Gguf, MappedFile, Value};
use ember_runtime::weights::GgmlType;
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ember-quant-bad-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

fn opts() -> quantize::Options {
    quantize::Options {
        target: Target::Single(GgmlType::Q8_0),
        embeddings: Some(GgmlType::Q8_0),
        threads: 2,
        measure: false,
    }
}

/// A small GGUF with one F32 matrix of `cols` columns.
fn small_gguf(path: &Path, arch: &str, cols: u64) {
    let meta = [MetaKv::str("general.architecture", arch)];
    let t = TensorEntry {
        name: "blk.0.ffn_up.weight".into(),
        dims: vec![cols, 2],
        ty: GgmlType::F32,
    };
    let mut w = GgufWriter::create(path, &meta, std::slice::from_ref(&t)).unwrap();
    let data: Vec<f32> = (0..2 * cols).map(|i| i as f32 * 0.25 - 3.0).collect();
    w.tensor(bytemuck::cast_slice(&data)).unwrap();
    w.finish().unwrap();
}

#[test]
fn a_row_length_that_is_not_whole_blocks_falls_back_to_f16() {
    let d = scratch("rows");
    let input = d.join("in.gguf");
    small_gguf(&input, "llama", 40);
    let out_dir = scratch("rows-out");
    // As llama-quantize: a matrix whose rows no block of its type divides falls back to F16.
    let r = quantize::quantize_file(&input, &out_dir.join("o.gguf"), &opts(), &mut |_, _, _| {})
        .unwrap();
    assert_eq!((r[0].to, r[0].reencoded), (GgmlType::F16, true));
    std::fs::remove_file(out_dir.join("o.gguf")).unwrap();
    // 64 columns work, and the result reads back.
    small_gguf(&input, "llama", 64);
    let out = out_dir.join("o.gguf");
    quantize::quantize_file(&input, &out, &opts(), &mut |_, _, _| {}).unwrap();
    let f = MappedFile::open(&out).unwrap();
    let g = Gguf::parse(f.bytes()).unwrap();
    assert_eq!(g.tensor("blk.0.ffn_up.weight").unwrap().ty, GgmlType::Q8_0);
    assert_eq!(g.get_u64("general.file_type").unwrap(), Some(7));
    assert_eq!(files_in(&out_dir), 1);
}

#[test]
fn other_architectures_and_types_are_refused() {
    let d = scratch("arch");
    let input = d.join("in.gguf");
    small_gguf(&input, "gpt2", 64);
    let out = d.join("out.gguf");
    let e = quantize::quantize_file(&input, &out, &opts(), &mut |_, _, _| {}).unwrap_err();
    assert!(
        e.0.contains("architecture \"gpt2\" is not supported"),
        "{e}"
    );
    assert!(!out.exists());
    assert!(ember_quant::parse_type("q3_k")
        .unwrap_err()
        .0
        .contains("unknown type"));
    // A type ember reads but does not write.
    let o = quantize::Options {
        target: Target::Single(GgmlType::Q2_K),
        ..opts()
    };
    small_gguf(&input, "llama", 64);
    assert!(quantize::quantize_file(&input, &out, &o, &mut |_, _, _| {}).is_err());
    assert_eq!(files_in(&d), 1);
}

/// A copy of the tiny checkpoint with `edit` applied to one of its JSON files.
fn edited_checkpoint(tag: &str, file: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let src = ember_tests::fixture("tiny-llama");
    let d = scratch(tag);
    for f in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors",
    ] {
        std::fs::copy(src.join(f), d.join(f)).unwrap();
    }
    let p = d.join(file);
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
    d
}

fn convert_err(dir: &Path) -> String {
    let out_dir = scratch(&format!(
        "{}-out",
        dir.file_name().unwrap().to_string_lossy()
    ));
    let o = convert::Options {
        ty: GgmlType::Q8_0,
        embeddings: GgmlType::Q8_0,
        threads: 1,
        measure: false,
        pre_tokenizer: None,
    };
    let e = convert::convert_dir(dir, &out_dir.join("o.gguf"), &o, &mut |_, _, _| {}).unwrap_err();
    assert_eq!(files_in(&out_dir), 0, "left a file for {e}");
    e.0
}

#[test]
fn broken_checkpoints_name_what_is_wrong() {
    let e = convert_err(&edited_checkpoint("nokey", "config.json", |c| {
        c.as_object_mut().unwrap().remove("hidden_size");
    }));
    assert!(e.contains("missing or invalid key hidden_size"), "{e}");
    let e = convert_err(&edited_checkpoint("arch", "config.json", |c| {
        c["model_type"] = "gpt2".into();
        c["architectures"] = serde_json::json!(["GPT2LMHeadModel"]);
    }));
    assert!(e.contains("\"GPT2LMHeadModel\" is not supported"), "{e}");
    let e = convert_err(&edited_checkpoint("layers", "config.json", |c| {
        c["num_hidden_layers"] = 3.into();
    }));
    assert!(
        e.contains("missing tensor model.layers.2.input_layernorm.weight"),
        "{e}"
    );
    let e = convert_err(&edited_checkpoint("ffn", "config.json", |c| {
        c["intermediate_size"] = 128.into();
    }));
    assert!(
        e.contains("model.layers.0.mlp.gate_proj.weight: shape [160, 64], expected [128, 64]"),
        "{e}"
    );
    let e = convert_err(&edited_checkpoint("scaling", "config.json", |c| {
        c["rope_scaling"] = serde_json::json!({"type": "linear", "factor": 2.0});
    }));
    assert!(e.contains("rope_scaling"), "{e}");
    let e = convert_err(&edited_checkpoint("unigram", "tokenizer.json", |t| {
        t["model"]["type"] = "Unigram".into();
    }));
    assert!(e.contains("only byte-level BPE"), "{e}");
    let e = convert_err(&edited_checkpoint("pre", "tokenizer.json", |t| {
        t["pre_tokenizer"] = serde_json::json!({"type": "Whitespace"});
    }));
    assert!(e.contains("--pre-tokenizer"), "{e}");
    let d = edited_checkpoint("nosafetensors", "config.json", |_| {});
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    assert!(convert_err(&d).contains("no *.safetensors"));
    let d = edited_checkpoint("badsafetensors", "config.json", |_| {});
    std::fs::write(
        d.join("model.safetensors"),
        b"\xff\xff\xff\xff\xff\xff\xff\x7fjunk",
    )
    .unwrap();
    assert!(convert_err(&d).contains("model.safetensors"));
}

#[test]
fn written_metadata_reads_back_exactly() {
    let d = scratch("roundtrip");
    let p = d.join("rt.gguf");
    let meta = [
        MetaKv::str("general.architecture", "llama"),
        MetaKv::u32("a.u32", 7),
        MetaKv::i32("a.i32", -7),
        MetaKv::f32("a.f32", 1.5),
        MetaKv::bool("a.bool", true),
        MetaKv::str_array("a.strs", &["x", "", "ünï"]),
        MetaKv::i32_array("a.ints", &[1, -2, 3]),
        MetaKv::u32("general.alignment", 64),
    ];
    let tensors = [
        TensorEntry {
            name: "one".into(),
            dims: vec![3],
            ty: GgmlType::F32,
        },
        TensorEntry {
            name: "two".into(),
            dims: vec![32, 2],
            ty: GgmlType::F16,
        },
    ];
    let mut w = GgufWriter::create(&p, &meta, &tensors).unwrap();
    w.tensor(bytemuck::cast_slice(&[1.0f32, 2.0, 3.0])).unwrap();
    w.tensor(&[0x3cu8; 128]).unwrap();
    w.finish().unwrap();
    let f = MappedFile::open(&p).unwrap();
    let g = Gguf::parse(f.bytes()).unwrap();
    assert_eq!(g.alignment(), 64);
    assert_eq!(g.get("a.u32"), Some(Value::U32(7)));
    assert_eq!(g.get("a.i32"), Some(Value::I32(-7)));
    assert_eq!(g.get("a.f32"), Some(Value::F32(1.5)));
    assert_eq!(g.get("a.bool"), Some(Value::Bool(true)));
    let strs: Vec<_> = g
        .get("a.strs")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(strs, ["x", "", "ünï"]);
    // Copying every value reproduces the metadata bytes.
    let copied: Vec<MetaKv> = g.metadata().map(|(k, v)| MetaKv::copy(k, &v)).collect();
    assert_eq!(copied, meta);
    assert_eq!(
        g.tensor("one").unwrap().data,
        bytemuck::cast_slice::<f32, u8>(&[1.0, 2.0, 3.0])
    );
    assert_eq!(g.tensor("two").unwrap().data, &[0x3cu8; 128][..]);
    // Duplicates are refused before anything is written; so is a short tensor.
    assert!(GgufWriter::create(
        &d.join("dup.gguf"),
        &[meta[1].clone(), meta[1].clone()],
        &[]
    )
    .is_err());
    let mut w = GgufWriter::create(&d.join("short.gguf"), &meta, &tensors).unwrap();
    assert!(w.tensor(&[0u8; 4]).is_err());
    drop(w);
    assert!(!d.join("short.gguf").exists());
    assert_eq!(files_in(&d), 1);
}

/// F16 and BF16 inputs are dequantized exactly: quantizing a file of F16 (or BF16) matrices gives
/// the same bytes as quantizing an F32 file holding the same values; quantized inputs (Q8_0,
/// Q4_0, Q4_1) are dequantized and requantized without error.
#[test]
fn every_input_type_requantizes() {
    let d = scratch("inputs");
    let tiny = d.join("tiny-f32.gguf");
    let o = convert::Options {
        ty: GgmlType::F32,
        embeddings: GgmlType::F32,
        threads: 2,
        measure: false,
        pre_tokenizer: None,
    };
    convert::convert_dir(
        &ember_tests::fixture("tiny-llama"),
        &tiny,
        &o,
        &mut |_, _, _| {},
    )
    .unwrap();
    let file = MappedFile::open(&tiny).unwrap();
    let g = Gguf::parse(file.bytes()).unwrap();
    let meta: Vec<MetaKv> = g.metadata().map(|(k, v)| MetaKv::copy(k, &v)).collect();
    // Writes the model with every matrix as `ty` (values rounded by `round`), norms F32.
    let write = |path: &Path, ty: GgmlType, round: &dyn Fn(f32) -> Vec<u8>, as_f32: bool| {
        let entries: Vec<TensorEntry> = g
            .tensors()
            .map(|t| TensorEntry {
                name: t.name.into(),
                dims: t.dims[..t.n_dims as usize].to_vec(),
                ty: if t.n_dims >= 2 && !as_f32 {
                    ty
                } else {
                    GgmlType::F32
                },
            })
            .collect();
        let mut w = GgufWriter::create(path, &meta, &entries).unwrap();
        for t in g.tensors() {
            let vals: &[f32] = bytemuck::cast_slice(t.data);
            if t.n_dims >= 2 {
                let bytes: Vec<u8> = vals.iter().flat_map(|&v| round(v)).collect();
                w.tensor(&bytes).unwrap();
            } else {
                w.tensor(t.data).unwrap();
            }
        }
        w.finish().unwrap();
    };
    let f16 = |v: f32| half::f16::from_f32(v).to_le_bytes().to_vec();
    let f16_as_f32 = |v: f32| half::f16::from_f32(v).to_f32().to_le_bytes().to_vec();
    let bf16 = |v: f32| half::bf16::from_f32(v).to_le_bytes().to_vec();
    let bf16_as_f32 = |v: f32| half::bf16::from_f32(v).to_f32().to_le_bytes().to_vec();
    for (name, ty, narrow, widened) in [
        (
            "f16",
            GgmlType::F16,
            &f16 as &dyn Fn(f32) -> Vec<u8>,
            &f16_as_f32 as &dyn Fn(f32) -> Vec<u8>,
        ),
        ("bf16", GgmlType::BF16, &bf16, &bf16_as_f32),
    ] {
        let a = d.join(format!("{name}.gguf"));
        let b = d.join(format!("{name}-as-f32.gguf"));
        write(&a, ty, narrow, false);
        write(&b, ty, widened, true);
        for q in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1] {
            let o = quantize::Options {
                target: Target::Single(q),
                ..opts()
            };
            let (qa, qb) = (d.join("qa.gguf"), d.join("qb.gguf"));
            quantize::quantize_file(&a, &qa, &o, &mut |_, _, _| {}).unwrap();
            quantize::quantize_file(&b, &qb, &o, &mut |_, _, _| {}).unwrap();
            assert!(
                std::fs::read(&qa).unwrap() == std::fs::read(&qb).unwrap(),
                "{name} -> {}",
                q.name()
            );
            // Requantizing a quantized file works and stays close (q8_0 → q8_0).
            let o8 = quantize::Options {
                measure: true,
                ..opts()
            };
            let rq = d.join("rq.gguf");
            let reports = quantize::quantize_file(&qa, &rq, &o8, &mut |_, _, _| {}).unwrap();
            for r in reports.iter().filter(|r| r.reencoded) {
                let e = r.error.unwrap();
                assert!(e.cosine() > 0.999, "{} {}: {}", name, r.name, e.cosine());
            }
        }
    }
}
