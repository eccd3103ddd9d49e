//! The real model's tokenizer on arbitrary bytes: encoding never fails on any input; decoding
//! gives back valid UTF-8 input exactly (special tokens not parsed), except the bytes the
//! vocabulary has no token for, which are dropped as llama.cpp drops them (SmolLM2 lacks 21 of
//! the 256 byte tokens: six C0 controls, 0xC0, 0xC1 and 0xF5..=0xFF); and the streaming decoder
//! never splits a character.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let tok = &common::model().tokenizer;
    let special = tok.encode_to_vec(data, true, true).expect("encode");
    let _ = tok.decode_to_vec(&special, true);
    if let Ok(s) = std::str::from_utf8(data) {
        let ids = tok.encode_to_vec(data, false, false).expect("encode");
        let representable: Vec<u8> = s.bytes().filter(|&b| tok.byte_token(b).is_some()).collect();
        assert_eq!(tok.decode_to_vec(&ids, false), representable);
        let Ok(s) = String::from_utf8(representable) else {
            return;
        };
        let mut stream = ember_runtime::tokenizer::Utf8Stream::new();
        let mut out = String::new();
        for &id in &ids {
            tok.decode_token(id, false, &mut |b| {
                stream.push(b, &mut |piece| out.push_str(piece))
            });
        }
        stream.finish(&mut |piece| out.push_str(piece));
        assert_eq!(out, s);
    }
});
