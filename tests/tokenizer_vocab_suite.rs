//! llama.cpp's own tokenizer suite: `models/ggml-vocab-*.gguf` (vocabulary-only files) with
//! `.inp` inputs and `.out` expected ids (what `test-tokenizer-0` checks: no BOS, no special-token
//! parsing). Every vocabulary whose tokenizer ember supports must give llama.cpp's ids for every
//! case; the ones this project names as supported must load.

use ember_runtime::{arena::Arena, gguf::Gguf, tokenizer::Tokenizer};
use ember_tests::llama_cpp_source;

/// Vocabularies that must load (and pass).
const REQUIRED: &[&str] = &[
    "llama-spm",
    "llama-bpe",
    "qwen2",
    "gpt-2",
    "phi-3",
    "starcoder",
    "refact",
    "mpt",
    "command-r",
];

/// A vocabulary's cases: the input texts and llama.cpp's ids for each.
type Cases = (Vec<Vec<u8>>, Vec<Vec<u32>>);

fn cases(name: &str) -> Option<Cases> {
    let dir = llama_cpp_source().join("models");
    let inp = std::fs::read(dir.join(format!("ggml-vocab-{name}.gguf.inp"))).ok()?;
    let out = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.out"))).ok()?;
    let sep = b"\n__ggml_vocab_test__\n";
    let mut texts = Vec::new();
    let mut pos = 0;
    while pos < inp.len() {
        match inp[pos..].windows(sep.len()).position(|w| w == sep) {
            Some(i) => {
                texts.push(inp[pos..pos + i].to_vec());
                pos += i + sep.len();
            }
            None => {
                texts.push(inp[pos..].to_vec());
                break;
            }
        }
    }
    let ids: Vec<Vec<u32>> = out
        .lines()
        .map(|l| {
            l.split_whitespace()
                .map(|t| t.parse().expect("id"))
                .collect()
        })
        .collect();
    assert_eq!(texts.len(), ids.len(), "{name}: .inp and .out disagree");
    Some((texts, ids))
}

#[test]
fn every_supported_vocabulary_gives_llama_cpp_ids() {
    let dir = llama_cpp_source().join("models");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("models/")
        .filter_map(|e| {
            let n = e.ok()?.file_name().into_string().ok()?;
            Some(
                n.strip_prefix("ggml-vocab-")?
                    .strip_suffix(".gguf")?
                    .to_string(),
            )
        })
        .collect();
    names.sort();
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for name in &names {
        let Some((texts, want)) = cases(name) else {
            continue;
        };
        let bytes = std::fs::read(dir.join(format!("ggml-vocab-{name}.gguf"))).expect("vocab");
        let g = Gguf::parse(&bytes).expect("parse");
        let mut mem = vec![0u8; Tokenizer::memory_needed(&g).expect("plan")];
        let mut arena = Arena::new(&mut mem);
        let tok = match Tokenizer::from_gguf(&g, &mut arena) {
            Ok(t) => t,
            Err(e) => {
                assert!(!REQUIRED.contains(&name.as_str()), "{name}: {e}");
                report.push(format!("{name}: not supported ({e})"));
                continue;
            }
        };
        let mut bad = 0;
        for (text, ids) in texts.iter().zip(&want) {
            let got = tok.encode_to_vec(text, false, false).expect("encode");
            if &got != ids {
                bad += 1;
                failures.push(format!(
                    "{name}: {:?}\n  llama.cpp: {ids:?}\n  ember:     {got:?}",
                    String::from_utf8_lossy(text)
                ));
            }
        }
        report.push(format!(
            "{name}: {} of {} cases",
            texts.len() - bad,
            texts.len()
        ));
    }
    eprintln!("{}", report.join("\n"));
    for r in REQUIRED {
        assert!(
            names.iter().any(|n| n == r),
            "the sdist has no ggml-vocab-{r}"
        );
    }
    assert!(
        failures.is_empty(),
        "{} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
