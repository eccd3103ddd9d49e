//! GGUF writing (the quantizer's writer) and reading back: any file the reader accepts is
//! copied key by key and tensor by tensor; the copy must parse to the same metadata and tensor
//! table, byte for byte.
#![no_main]

use ember_quant::writer::{GgufWriter, MetaKv, TensorEntry};
use ember_runtime::gguf::{Gguf, MappedFile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(g) = Gguf::parse(data) else { return };
    let meta: Vec<MetaKv> = g.metadata().map(|(k, v)| MetaKv::copy(k, &v)).collect();
    let tensors: Vec<TensorEntry> = g
        .tensors()
        .map(|t| TensorEntry {
            name: t.name.into(),
            dims: t.dims[..t.n_dims as usize].to_vec(),
            ty: t.ty,
        })
        .collect();
    let path =
        std::env::temp_dir().join(format!("ember-fuzz-roundtrip-{}.gguf", std::process::id()));
    let Ok(mut w) = GgufWriter::create(&path, &meta, &tensors) else {
        return;
    };
    for t in g.tensors() {
        w.tensor(t.data).expect("the table sized this tensor");
    }
    w.finish().expect("finish");
    let copy = MappedFile::open(&path).expect("reopen");
    let h = Gguf::parse(copy.bytes()).expect("the copy parses");
    let again: Vec<MetaKv> = h.metadata().map(|(k, v)| MetaKv::copy(k, &v)).collect();
    assert_eq!(meta, again);
    assert_eq!(g.tensor_count(), h.tensor_count());
    for (a, b) in g.tensors().zip(h.tensors()) {
        assert_eq!(
            (a.name, a.dims, a.n_dims, a.ty),
            (b.name, b.dims, b.n_dims, b.ty)
        );
        assert_eq!(a.data, b.data);
    }
    let _ = std::fs::remove_file(&path);
});
