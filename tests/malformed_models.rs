//! Malformed models, built from the tiny Llama (converted by ember-quant, then damaged): shapes
//! wrong for the architecture, unknown tensor types, another architecture, missing tensors,
//! duplicate names, data out of range or overlapping, NaN and infinity in weights, and every
//! truncation and header bit flip. Each ends in a typed error with a message, never a panic; a
//! file that parses never plans more memory than its own contents warrant.
//!
//! NaN and infinity: in a norm (F32) they are refused at load, naming the tensor; in a weight
//! matrix they are not scanned for (that would read the whole file at load) and flow into the
//! logits, where sampling still returns a token and generation ends normally.

use ember_quant::writer::{GgufWriter, MetaKv, TensorEntry};
use ember_runtime::arena::Arena;
use ember_runtime::error::Error;
use ember_runtime::gguf::Gguf;
use ember_runtime::kernels::Kernels;
use ember_runtime::model::Model;
use ember_runtime::sampler::{Sampler, SamplerConfig};
use ember_runtime::session::{self, GenOptions, Session, SessionConfig};
use ember_runtime::weights::GgmlType;
use std::path::PathBuf;
use std::sync::OnceLock;

/// The tiny model as F32 GGUF bytes (made once).
fn tiny() -> &'static [u8] {
    static T: OnceLock<Vec<u8>> = OnceLock::new();
    T.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ember-malformed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("tiny.gguf");
        let o = ember_quant::convert::Options {
            ty: GgmlType::F32,
            embeddings: GgmlType::F32,
            threads: 1,
            measure: false,
            pre_tokenizer: None,
        };
        ember_quant::convert::convert_dir(
            &ember_tests::fixture("tiny-llama"),
            &out,
            &o,
            &mut |_, _, _| {},
        )
        .unwrap();
        let b = std::fs::read(&out).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        b
    })
}

/// Parses and loads `bytes` (copied to an aligned buffer, as a mapping is); then, when it
/// loads, generates a few tokens.
fn load(bytes: &[u8]) -> Result<(), Error> {
    let mut aligned = vec![0u64; bytes.len().div_ceil(8)];
    // SAFETY: viewing a u64 buffer as bytes (no padding, any value valid).
    let buf = unsafe {
        std::slice::from_raw_parts_mut(aligned.as_mut_ptr().cast::<u8>(), aligned.len() * 8)
    };
    buf[..bytes.len()].copy_from_slice(bytes);
    let g = Gguf::parse(&buf[..bytes.len()])?;
    let need = Model::memory_needed(&g)?;
    assert!(
        need <= 64 * bytes.len() + (1 << 20),
        "{need} bytes planned for {} file bytes",
        bytes.len()
    );
    let mut mem = vec![0u8; need];
    let mut arena = Arena::new(&mut mem);
    let m = Model::load(g, &mut arena, Kernels::best())?;
    let sc = SessionConfig {
        n_ctx: 32,
        ..Default::default()
    };
    let mut smem = vec![0u8; Session::bytes_needed(&m, &sc)];
    let mut sarena = Arena::new(&mut smem);
    let mut s = Session::new(&m, &mut sarena, &sc)?;
    let cfg = SamplerConfig {
        temperature: 0.8,
        ..Default::default()
    };
    let mut pmem = vec![0u8; Sampler::bytes_needed(m.config.n_vocab, &cfg)];
    let mut parena = Arena::new(&mut pmem);
    let mut sampler = Sampler::new(&mut parena, m.config.n_vocab, cfg)?;
    let prompt = m.tokenizer.encode_to_vec(b"The quick", true, false)?;
    let opts = GenOptions {
        max_tokens: 4,
        ignore_eos: true,
        stop: &[],
    };
    session::generate(
        &mut s,
        &mut sampler,
        &prompt,
        &opts,
        &mut || {},
        &mut |_| true,
    )?;
    Ok(())
}

/// Rewrites the tiny model with `edit` applied to its tensor table and data.
fn rebuilt(edit: impl FnOnce(&mut Vec<MetaKv>, &mut Vec<(TensorEntry, Vec<u8>)>)) -> Vec<u8> {
    let f = tiny();
    let g = Gguf::parse(f).unwrap();
    let mut meta: Vec<MetaKv> = g.metadata().map(|(k, v)| MetaKv::copy(k, &v)).collect();
    let mut tensors: Vec<(TensorEntry, Vec<u8>)> = g
        .tensors()
        .map(|t| {
            (
                TensorEntry {
                    name: t.name.into(),
                    dims: t.dims[..t.n_dims as usize].to_vec(),
                    ty: t.ty,
                },
                t.data.to_vec(),
            )
        })
        .collect();
    edit(&mut meta, &mut tensors);
    let p: PathBuf = std::env::temp_dir().join(format!(
        "ember-rebuilt-{}-{:?}.gguf",
        std::process::id(),
        std::thread::current().id()
    ));
    let entries: Vec<TensorEntry> = tensors.iter().map(|(e, _)| e.clone()).collect();
    let mut w = GgufWriter::create(&p, &meta, &entries).unwrap();
    for (_, d) in &tensors {
        w.tensor(d).unwrap();
    }
    w.finish().unwrap();
    let b = std::fs::read(&p).unwrap();
    std::fs::remove_file(&p).ok();
    b
}

/// The tiny model with `blk.0.ffn_gate.weight` in a type ember does not run (IQ2_XXS, sized
/// correctly).
fn with_unsupported_gate() -> Vec<u8> {
    rebuilt(|_, t| {
        let (e, d) = t
            .iter_mut()
            .find(|(e, _)| e.name == "blk.0.ffn_gate.weight")
            .unwrap();
        e.dims = vec![256, 40];
        e.ty = GgmlType::IQ2_XXS;
        *d = vec![0u8; 40 * 66];
    })
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn the_tiny_model_itself_loads_and_generates() {
    load(tiny()).unwrap();
}

#[test]
fn shapes_wrong_for_the_architecture_name_the_tensor() {
    let b = rebuilt(|_, t| {
        let q = t
            .iter_mut()
            .find(|(e, _)| e.name == "blk.1.attn_k.weight")
            .unwrap();
        q.0.dims = vec![32, 64]; // the data size stays: 64×32 instead of 32×64
    });
    let e = load(&b).unwrap_err();
    assert!(matches!(e, Error::BadTensorShape { .. }), "{e:?}");
    assert!(e.to_string().contains("blk.1.attn_k.weight"), "{e}");
}

#[test]
fn a_missing_tensor_is_named() {
    let b = rebuilt(|_, t| t.retain(|(e, _)| e.name != "blk.0.ffn_up.weight"));
    let e = load(&b).unwrap_err();
    assert!(e.to_string().contains("blk.0.ffn_up.weight"), "{e}");
}

#[test]
fn unsupported_tensor_types_and_architectures_are_refused() {
    // A matrix of a type ember does not compute with (IQ2_XXS, sized correctly).
    let b = with_unsupported_gate();
    let e = load(&b).unwrap_err();
    assert!(e.to_string().contains("blk.0.ffn_gate.weight"), "{e}");
    // An unknown type id, patched into the table of a valid file.
    let mut b = tiny().to_vec();
    let name = b"blk.0.ffn_up.weight";
    let at = b.windows(name.len()).position(|w| w == name).unwrap() + name.len();
    let ty_at = at + 4 + 2 * 8; // n_dims, two dims
    b[ty_at..ty_at + 4].copy_from_slice(&99u32.to_le_bytes());
    let e = load(&b).unwrap_err();
    assert!(
        matches!(e, Error::UnsupportedTensorType { type_id: 99, .. }),
        "{e:?}"
    );
    let b = rebuilt(|m, _| {
        let a = m
            .iter_mut()
            .find(|kv| kv.key == "general.architecture")
            .unwrap();
        *a = MetaKv::str("general.architecture", "falcon");
    });
    let e = load(&b).unwrap_err();
    assert!(matches!(e, Error::UnsupportedArchitecture(_)), "{e:?}");
}

#[test]
fn nan_and_infinity_in_norms_are_refused_and_in_matrices_survive() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let b = rebuilt(|_, t| {
            let (_, d) = t
                .iter_mut()
                .find(|(e, _)| e.name == "blk.0.attn_norm.weight")
                .unwrap();
            d[8..12].copy_from_slice(&bad.to_le_bytes());
        });
        let e = load(&b).unwrap_err();
        assert!(
            e.to_string().contains("blk.0.attn_norm.weight") && e.to_string().contains("NaN"),
            "{e}"
        );
        let b = rebuilt(|_, t| {
            for name in ["token_embd.weight", "blk.0.attn_q.weight", "output.weight"] {
                let (_, d) = t.iter_mut().find(|(e, _)| e.name == name).unwrap();
                for i in (0..d.len()).step_by(4 * 97) {
                    d[i..i + 4].copy_from_slice(&bad.to_le_bytes());
                }
            }
        });
        load(&b).unwrap();
        // All of the output head NaN: every logit NaN, and generation still ends normally.
        let b = rebuilt(|_, t| {
            let (_, d) = t
                .iter_mut()
                .find(|(e, _)| e.name == "output.weight")
                .unwrap();
            *d = f32_bytes(&vec![bad; d.len() / 4]);
        });
        load(&b).unwrap();
    }
}

#[test]
fn duplicate_names_and_bad_data_ranges_are_refused() {
    // Two tensors with one name: attn_k renamed attn_q in place (same length).
    let mut b = tiny().to_vec();
    let k = b"blk.0.attn_k.weight";
    let at = b.windows(k.len()).position(|w| w == k).unwrap();
    b[at..at + k.len()].copy_from_slice(b"blk.0.attn_q.weight");
    let e = load(&b).unwrap_err();
    assert!(e.to_string().contains("blk.0.attn_q.weight"), "{e}");
    // Two metadata keys with one name: rope.freq_base renamed context_length (same length).
    let mut b = tiny().to_vec();
    let key = b"llama.rope.freq_base";
    let at = b.windows(key.len()).position(|w| w == key).unwrap();
    b[at..at + key.len()].copy_from_slice(b"llama.context_length");
    let e = load(&b).unwrap_err();
    assert!(e.to_string().contains("llama.context_length"), "{e}");
    let g = Gguf::parse(tiny()).unwrap();
    let first = g.tensors().next().unwrap();
    let data_start = g.data_offset();
    // Offsets out of range, misaligned, or overlapping another tensor's data.
    for (what, value) in [
        ("past the end", (tiny().len() - data_start) as u64),
        ("huge", u64::MAX - 7),
        ("misaligned", 4),
        ("overlapping", 32),
    ] {
        let mut b = tiny().to_vec();
        let name = first.name.as_bytes();
        let at = b.windows(name.len()).position(|w| w == name).unwrap() + name.len();
        let off_at = at + 4 + 8 * first.n_dims as usize + 4;
        let cur = u64::from_le_bytes(b[off_at..off_at + 8].try_into().unwrap());
        let v = if what == "overlapping" {
            cur + value
        } else {
            value
        };
        b[off_at..off_at + 8].copy_from_slice(&v.to_le_bytes());
        let e = load(&b).unwrap_err();
        assert!(!e.to_string().is_empty(), "{what}");
    }
}

#[test]
fn every_truncation_and_header_bit_flip_ends_in_an_error_or_a_normal_run() {
    let f = tiny();
    let g = Gguf::parse(f).unwrap();
    let header = g.data_offset();
    // Every truncation inside the header, then a sample of the data region.
    for n in (0..header).chain((header..f.len()).step_by(997)) {
        let e = load(&f[..n]).unwrap_err();
        assert!(!e.to_string().is_empty());
    }
    // Every bit of the first 4 KiB of the header, and a sample after.
    let mut b = f.to_vec();
    for i in (0..header.min(4096)).chain((4096..header).step_by(13)) {
        for bit in 0..8 {
            b[i] ^= 1 << bit;
            if let Err(e) = load(&b) {
                assert!(!e.to_string().is_empty());
            }
            b[i] ^= 1 << bit;
        }
    }
    // Counts and lengths set to huge values: every 8-byte-aligned word of the header.
    for i in (0..header.saturating_sub(8)).step_by(8) {
        let keep: [u8; 8] = b[i..i + 8].try_into().unwrap();
        for v in [u64::MAX, 1 << 40, 0xffff_ffff] {
            b[i..i + 8].copy_from_slice(&v.to_le_bytes());
            let _ = load(&b);
        }
        b[i..i + 8].copy_from_slice(&keep);
    }
}

/// The tiny model's embedding shape, `[n_embd, n_vocab]` in GGUF order.
fn embd_dims() -> (u64, u64) {
    let g = Gguf::parse(tiny()).unwrap();
    let t = g.tensor("token_embd.weight").unwrap();
    (t.dims[0], t.dims[1])
}

#[test]
fn shape_errors_show_the_whole_shape_and_the_vocabulary_from_the_token_list() {
    let (e_dim, vocab) = embd_dims();
    // A 3-D embedding with the same elements: the message shows all three dimensions.
    let b = rebuilt(|_, t| {
        let (e, _) = t
            .iter_mut()
            .find(|(e, _)| e.name == "token_embd.weight")
            .unwrap();
        e.dims = vec![e_dim, vocab / 2, 2];
    });
    let e = load(&b).unwrap_err().to_string();
    assert!(
        e.contains(&format!(
            "[{e_dim}, {}, 2], expected [{e_dim}, {vocab}]",
            vocab / 2
        )),
        "{e}"
    );
    // A transposed embedding: the expected shape has the vocabulary of the token list.
    let b = rebuilt(|_, t| {
        let (e, _) = t
            .iter_mut()
            .find(|(e, _)| e.name == "token_embd.weight")
            .unwrap();
        e.dims = vec![vocab, e_dim];
    });
    let e = load(&b).unwrap_err().to_string();
    assert!(
        e.contains(&format!(
            "has shape [{vocab}, {e_dim}], expected [{e_dim}, {vocab}]"
        )),
        "{e}"
    );
}

#[test]
fn metadata_that_contradicts_the_model_is_refused_by_name() {
    let g = Gguf::parse(tiny()).unwrap();
    let head_dim = g.get_u64("llama.embedding_length").unwrap().unwrap()
        / g.get_u64("llama.attention.head_count").unwrap().unwrap();
    let (_, vocab) = embd_dims();
    // A head width the tensors do not have: the first tensor that disagrees is named.
    let b = rebuilt(|m, _| {
        m.retain(|x| x.key != "llama.attention.key_length");
        m.push(MetaKv::u32(
            "llama.attention.key_length",
            head_dim as u32 * 2,
        ));
    });
    let e = load(&b).unwrap_err();
    assert!(matches!(e, Error::BadTensorShape { .. }), "{e:?}");
    assert!(e.to_string().contains("blk.0.attn_q.weight"), "{e}");
    let cases: Vec<(MetaKv, &str)> = vec![
        (
            MetaKv::u32("llama.attention.value_length", head_dim as u32 + 1),
            "llama.attention.value_length",
        ),
        (
            MetaKv::u32("llama.vocab_size", vocab as u32 + 7),
            "llama.vocab_size",
        ),
        (
            MetaKv::f32("llama.rope.scaling.factor", f32::NAN),
            "llama.rope.scaling.factor",
        ),
    ];
    for (kv, key) in cases {
        let b = rebuilt(|m, _| {
            m.retain(|x| x.key != kv.key);
            m.push(kv.clone());
        });
        let e = load(&b).unwrap_err();
        assert!(matches!(e, Error::BadKey { .. }), "{key}: {e:?}");
        assert!(e.to_string().contains(key), "{e}");
    }
    // Agreeing values load.
    let b = rebuilt(|m, _| {
        m.retain(|x| x.key != "llama.attention.key_length" && x.key != "llama.vocab_size");
        m.push(MetaKv::u32("llama.attention.key_length", head_dim as u32));
        m.push(MetaKv::u32("llama.vocab_size", vocab as u32));
    });
    load(&b).unwrap();
}

#[test]
fn an_unsupported_weight_type_names_the_tensor_and_the_type() {
    let b = with_unsupported_gate();
    let e = load(&b).unwrap_err();
    assert!(matches!(e, Error::UnsupportedWeightType { .. }), "{e:?}");
    let m = e.to_string();
    assert!(
        m.contains("blk.0.ffn_gate.weight") && m.contains("iq2_xxs"),
        "{m}"
    );
}

#[test]
fn a_tensor_without_dimensions_says_so() {
    // Patch the first tensor's dimension count to 0 in a valid file.
    let mut b = tiny().to_vec();
    let name = b"token_embd.weight";
    let at = b.windows(name.len()).position(|w| w == name).unwrap() + name.len();
    b[at..at + 4].copy_from_slice(&0u32.to_le_bytes());
    let e = Gguf::parse(&b).unwrap_err().to_string();
    assert!(
        e.contains("token_embd.weight") && e.contains("no dimensions"),
        "{e}"
    );
}
