//! ember's zero-copy GGUF reader against `gguf-rs`, an independent reader (which copies the file
//! and needs `std`, so it is only a test dependency): the same metadata and tensor table.

use ember_runtime::gguf::{Gguf, Value};
use ember_tests::{model_bytes, model_path};
use serde_json::json;

fn to_json(v: &Value<'_>) -> serde_json::Value {
    match *v {
        Value::U8(x) => json!(x),
        Value::I8(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I32(x) => json!(x),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::F32(x) => json!(x),
        Value::F64(x) => json!(x),
        Value::Bool(x) => json!(x),
        Value::Str(b) => json!(String::from_utf8_lossy(b)),
        Value::Array(a) => serde_json::Value::Array(a.iter().map(|e| to_json(&e)).collect()),
    }
}

#[test]
fn metadata_and_tensor_table_match_gguf_rs() {
    let path = model_path();
    let mut container = gguf_rs::get_gguf_container_array_size(path.to_str().unwrap(), u64::MAX)
        .expect("gguf-rs opens the model");
    let theirs = container.decode().expect("gguf-rs decodes the model");
    let ours = Gguf::parse(model_bytes()).expect("ember parses the model");

    assert_eq!(theirs.num_kv() as usize, ours.metadata_len());
    assert_eq!(theirs.num_tensor() as usize, ours.tensor_count());
    let meta = theirs.metadata();
    let mut compared = 0;
    for (k, v) in ours.metadata() {
        let t = meta
            .get(k)
            .unwrap_or_else(|| panic!("gguf-rs lacks key {k}"));
        assert_eq!(&to_json(&v), t, "metadata key {k}");
        compared += 1;
    }
    assert_eq!(compared, meta.len());

    let ours_t: Vec<_> = ours.tensors().collect();
    assert_eq!(ours_t.len(), theirs.tensors().len());
    for (o, t) in ours_t.iter().zip(theirs.tensors()) {
        assert_eq!(o.name, t.name);
        assert_eq!(o.ty as u32, t.kind, "{}", o.name);
        assert_eq!(o.offset, t.offset, "{}", o.name);
        assert_eq!(&o.dims[..o.n_dims as usize], &t.shape[..], "{}", o.name);
        assert_eq!(o.data.len() as u64, t.size, "{}", o.name);
    }
    // The views really point into the mapping: no copy was made.
    let base = model_bytes().as_ptr() as usize;
    for t in &ours_t {
        let p = t.data.as_ptr() as usize;
        assert!(p >= base && p + t.data.len() <= base + model_bytes().len());
        assert_eq!(p - base, ours.data_offset() + t.offset as usize);
    }
}
