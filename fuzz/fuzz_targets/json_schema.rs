//! JSON Schemas to grammars: an arbitrary text as a schema. The converter either refuses it or
//! makes a grammar that compiles; it never panics, hangs or grows without bound.
#![no_main]

use ember_runtime::grammar::{gbnf_from_schema, Grammar};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(g) = gbnf_from_schema(src) {
        if let Err(e) = Grammar::compile_owned(&g) {
            panic!("the grammar of an accepted schema does not compile: {e}\n{g}");
        }
    }
});
