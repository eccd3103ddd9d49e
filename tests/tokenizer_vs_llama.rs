//! ember's tokenizer against llama.cpp's (`llama-tokenize --ids --no-bos`) on a varied corpus:
//! the ids must be identical for every string, and decoding must give the text back.

use ember_runtime::kernels::Kernels;
use ember_tests::{fixture_json, with_model};

fn ids_of(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("ids array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

#[test]
fn corpus_ids_match_llama_cpp() {
    let fx = fixture_json("tokenizer/expected.json");
    let cases = fx["cases"].as_array().expect("cases");
    assert!(cases.len() >= 50, "the corpus should be varied");
    with_model(Kernels::SCALAR, |m| {
        let mut failures = Vec::new();
        for c in cases {
            let text = c["text"].as_str().expect("text");
            let want = ids_of(&c["ids"]);
            let got = m
                .tokenizer
                .encode_to_vec(text.as_bytes(), true, false)
                .expect("encode");
            if got != want {
                failures.push(format!(
                    "{text:?}\n  llama.cpp: {want:?}\n  ember:     {got:?}"
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} differ:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    });
}

#[test]
fn invalid_utf8_ids_match_llama_cpp() {
    let fx = fixture_json("tokenizer/expected-bytes.json");
    with_model(Kernels::SCALAR, |m| {
        for c in fx["cases"].as_array().expect("cases") {
            let hex = c["hex"].as_str().expect("hex");
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            let got = m
                .tokenizer
                .encode_to_vec(&bytes, true, false)
                .expect("encode");
            assert_eq!(got, ids_of(&c["ids"]), "bytes {hex}");
        }
    });
}

#[test]
fn corpus_round_trips() {
    let fx = fixture_json("tokenizer/expected.json");
    with_model(Kernels::SCALAR, |m| {
        for c in fx["cases"].as_array().expect("cases") {
            let text = c["text"].as_str().expect("text");
            let ids = m
                .tokenizer
                .encode_to_vec(text.as_bytes(), true, false)
                .expect("encode");
            let back = m.tokenizer.decode_to_vec(&ids, true);
            assert_eq!(String::from_utf8_lossy(&back), text);
        }
    });
}
