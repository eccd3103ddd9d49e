//! The real model's tokenizer on any text (proptest): decoding the tokens of valid UTF-8 gives
//! the text back, except the bytes SmolLM2's vocabulary has no token for, which are dropped
//! exactly as llama.cpp drops them; the streaming decoder gives the same text in whole
//! characters. Plus the regression the tokenizer fuzz target found.

use ember_runtime::kernels::Kernels;
use ember_runtime::model::Model;
use ember_runtime::tokenizer::Utf8Stream;
use proptest::prelude::*;
use std::sync::OnceLock;

fn model() -> &'static Model<'static> {
    // One model for the whole binary, its tables in a leaked buffer (tests only).
    static M: OnceLock<Model<'static>> = OnceLock::new();
    M.get_or_init(|| {
        let g = ember_runtime::gguf::Gguf::parse(ember_tests::model_bytes()).unwrap();
        let mem: &'static mut [u8] =
            Box::leak(vec![0u8; Model::memory_needed(&g).unwrap()].into_boxed_slice());
        let mut arena = ember_runtime::arena::Arena::new(mem);
        Model::load(g, &mut arena, Kernels::best()).unwrap()
    })
}

fn check(s: &str) -> Result<(), TestCaseError> {
    let tok = &model().tokenizer;
    let ids = tok.encode_to_vec(s.as_bytes(), false, false).unwrap();
    let kept: Vec<u8> = s.bytes().filter(|&b| tok.byte_token(b).is_some()).collect();
    prop_assert_eq!(tok.decode_to_vec(&ids, false), kept.clone());
    let mut stream = Utf8Stream::new();
    let mut out = String::new();
    for &id in &ids {
        tok.decode_token(id, false, &mut |b| stream.push(b, &mut |p| out.push_str(p)));
    }
    stream.finish(&mut |p| out.push_str(p));
    prop_assert_eq!(out.as_bytes(), &kept[..]);
    Ok(())
}

#[test]
fn the_vocabulary_lacks_21_byte_tokens() {
    let tok = &model().tokenizer;
    let missing: Vec<u8> = (0..=255u8)
        .filter(|&b| tok.byte_token(b).is_none())
        .collect();
    assert_eq!(
        missing,
        [
            4, 6, 19, 20, 22, 29, 192, 193, 241, 242, 245, 246, 247, 248, 249, 250, 251, 252, 253,
            254, 255
        ]
    );
}

/// Found by `fuzz/run.sh` (tokenizer target): U+0016 has no token; llama-tokenize gives
/// [24, 94] for "(\x16\x16n" too.
#[test]
fn unrepresentable_bytes_are_dropped_like_llama_cpp() {
    let tok = &model().tokenizer;
    assert_eq!(
        tok.encode_to_vec(b"(\x16\x16n", false, false).unwrap(),
        [24, 94]
    );
    let crash = "def fib(\x16\x16\x16\x16\x16n@:\n    if n < 3:\n        return \n\x01 2)\n";
    check(crash).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn decode_of_encode_is_the_text(s in any::<String>()) {
        check(&s)?;
    }

    #[test]
    fn decode_of_encode_is_the_text_for_ascii_and_code(s in "[ -~\t\n\r]{0,200}") {
        check(&s)?;
    }
}
