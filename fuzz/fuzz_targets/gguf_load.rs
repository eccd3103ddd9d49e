//! Any bytes as a model file: the GGUF reader, then (when it parses) the model load with its
//! memory plan, then a tokenizer round on the loaded vocabulary. Must never panic, read out of
//! bounds or allocate more than the file warrants.
#![no_main]

use ember_runtime::arena::Arena;
use ember_runtime::gguf::Gguf;
use ember_runtime::kernels::Kernels;
use ember_runtime::model::Model;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // GGUF data is aligned in a real mapping: give the reader an aligned copy.
    let mut aligned = vec![0u64; data.len().div_ceil(8)];
    let bytes = &mut bytemuck_bytes(&mut aligned)[..data.len()];
    bytes.copy_from_slice(data);
    let Ok(g) = Gguf::parse(bytes) else { return };
    for (_, v) in g.metadata() {
        if let Some(a) = v.as_array() {
            for _ in a.iter() {}
        }
    }
    let Ok(need) = Model::memory_needed(&g) else {
        return;
    };
    // The plan is derived from counts the file itself holds.
    assert!(
        need <= 64 * data.len() + (1 << 20),
        "{need} bytes planned for a {}-byte file",
        data.len()
    );
    let mut mem = vec![0u8; need];
    let mut arena = Arena::new(&mut mem);
    let Ok(model) = Model::load(g, &mut arena, Kernels::SCALAR) else {
        return;
    };
    let _ = model
        .tokenizer
        .encode_to_vec(b"Hello <|im_start|> 123", true, true);
});

fn bytemuck_bytes(v: &mut [u64]) -> &mut [u8] {
    // SAFETY: u64 has no padding and every byte pattern is a valid u8.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), v.len() * 8) }
}
