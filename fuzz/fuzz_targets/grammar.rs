//! GBNF grammars: an arbitrary source (the bytes before the first NUL) compiled into fixed
//! memory, then the rest fed to the matcher byte by byte with small bounds. Compiling and
//! matching either succeed or return an error; they never panic, hang or grow.
#![no_main]

use ember_runtime::arena::Arena;
use ember_runtime::grammar::{Grammar, GrammarLimits, Matcher, MatcherLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (src, text) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(src) = std::str::from_utf8(src) else {
        return;
    };
    let limits = GrammarLimits::for_source(src.len());
    let mut mem = vec![0u8; Grammar::bytes_needed(&limits)];
    let mut arena = Arena::new(&mut mem);
    let Ok(g) = Grammar::compile(src, &mut arena, &limits) else {
        return;
    };
    let ml = MatcherLimits {
        stacks: 64,
        depth: 32,
    };
    let mut mmem = vec![0u8; Matcher::bytes_needed(&ml)];
    let mut marena = Arena::new(&mut mmem);
    let Ok(mut m) = Matcher::new(g, &mut marena, &ml) else {
        return;
    };
    for chunk in text.chunks(3) {
        m.begin_trial();
        let _ = m.accept_bytes(chunk);
        m.end_trial();
        match m.accept_bytes(chunk) {
            Ok(true) => {}
            _ => break,
        }
    }
    let _ = m.is_complete();
});
