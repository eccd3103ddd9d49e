//! The reader on small files built here: every value type, nested arrays, alignment, and the
//! malformed cases (each must be a typed error, never a panic).

use super::*;
use crate::error::Error;
use std::vec::Vec;

/// A minimal GGUF writer for tests.
#[derive(Default)]
struct Builder {
    kv: Vec<u8>,
    n_kv: u64,
    tensors: Vec<u8>,
    n_tensors: u64,
    data_len: usize,
    version: u32,
}

fn str_bytes(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(s);
    v
}

impl Builder {
    fn new() -> Self {
        Builder {
            version: 3,
            ..Default::default()
        }
    }
    fn kv(mut self, key: &str, ty: u32, payload: &[u8]) -> Self {
        self.kv.extend(str_bytes(key.as_bytes()));
        self.kv.extend(ty.to_le_bytes());
        self.kv.extend_from_slice(payload);
        self.n_kv += 1;
        self
    }
    fn tensor(mut self, name: &str, dims: &[u64], ty: u32, offset: u64, bytes: usize) -> Self {
        self.tensors.extend(str_bytes(name.as_bytes()));
        self.tensors.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            self.tensors.extend(d.to_le_bytes());
        }
        self.tensors.extend(ty.to_le_bytes());
        self.tensors.extend(offset.to_le_bytes());
        self.n_tensors += 1;
        self.data_len = self.data_len.max(offset as usize + bytes);
        self
    }
    fn build_with_alignment(&self, align: usize) -> Vec<u8> {
        let mut f = b"GGUF".to_vec();
        f.extend(self.version.to_le_bytes());
        f.extend(self.n_tensors.to_le_bytes());
        f.extend(self.n_kv.to_le_bytes());
        f.extend_from_slice(&self.kv);
        f.extend_from_slice(&self.tensors);
        while !f.len().is_multiple_of(align) {
            f.push(0);
        }
        f.extend(std::iter::repeat_n(0x11u8, self.data_len));
        f
    }
    fn build(&self) -> Vec<u8> {
        self.build_with_alignment(32)
    }
}

fn u32v(x: u32) -> Vec<u8> {
    x.to_le_bytes().to_vec()
}

fn sample() -> Builder {
    let mut arr = u32v(ValueType::I32 as u32);
    arr.extend(3u64.to_le_bytes());
    for v in [1i32, -2, 3] {
        arr.extend(v.to_le_bytes());
    }
    let mut strs = u32v(ValueType::String as u32);
    strs.extend(2u64.to_le_bytes());
    strs.extend(str_bytes(b"a b"));
    strs.extend(str_bytes("é".as_bytes()));
    let mut nested = u32v(ValueType::Array as u32);
    nested.extend(2u64.to_le_bytes());
    for n in [1u64, 2] {
        nested.extend(u32v(ValueType::U8 as u32));
        nested.extend(n.to_le_bytes());
        nested.extend(std::iter::repeat_n(7u8, n as usize));
    }
    Builder::new()
        .kv("general.architecture", 8, &str_bytes(b"llama"))
        .kv("u8", 0, &[200])
        .kv("i8", 1, &[0xff])
        .kv("u16", 2, &513u16.to_le_bytes())
        .kv("i16", 3, &(-3i16).to_le_bytes())
        .kv("u32", 4, &u32v(70000))
        .kv("i32", 5, &(-70000i32).to_le_bytes())
        .kv("f32", 6, &1.5f32.to_le_bytes())
        .kv("bool", 7, &[1])
        .kv("u64", 10, &(1u64 << 40).to_le_bytes())
        .kv("i64", 11, &(-5i64).to_le_bytes())
        .kv("f64", 12, &2.25f64.to_le_bytes())
        .kv("ints", 9, &arr)
        .kv("strings", 9, &strs)
        .kv("nested", 9, &nested)
        .tensor("a", &[32, 2], 0, 0, 256)
        .tensor("b", &[64], 3, 256, 40)
}

#[test]
fn reads_every_value_type_and_the_tensor_table() {
    let f = sample().build();
    let g = Gguf::parse(&f).expect("valid file");
    assert_eq!(g.version(), 3);
    assert_eq!(g.metadata_len(), 15);
    assert_eq!(g.get_str("general.architecture").unwrap(), Some("llama"));
    assert_eq!(g.get("u8"), Some(Value::U8(200)));
    assert_eq!(g.get("i8"), Some(Value::I8(-1)));
    assert_eq!(g.get("u16"), Some(Value::U16(513)));
    assert_eq!(g.get("i16"), Some(Value::I16(-3)));
    assert_eq!(g.get_u64("u32").unwrap(), Some(70000));
    assert_eq!(g.get("i32"), Some(Value::I32(-70000)));
    assert_eq!(g.get_f32("f32").unwrap(), Some(1.5));
    assert_eq!(g.get_bool("bool").unwrap(), Some(true));
    assert_eq!(g.get_u64("u64").unwrap(), Some(1 << 40));
    assert_eq!(g.get("i64").and_then(|v| v.as_i64()), Some(-5));
    assert_eq!(g.get("f64"), Some(Value::F64(2.25)));
    let ints: Vec<i64> = g
        .get("ints")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(ints, [1, -2, 3]);
    let a = g.get("ints").unwrap().as_array().unwrap();
    assert_eq!(a.get_fixed(1), Some(Value::I32(-2)));
    assert_eq!(a.get_fixed(3), None);
    let strs: Vec<&str> = g
        .get("strings")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(strs, ["a b", "é"]);
    let nested = g.get("nested").unwrap().as_array().unwrap();
    let lens: Vec<usize> = nested.iter().map(|v| v.as_array().unwrap().len()).collect();
    assert_eq!(lens, [1, 2]);
    assert_eq!(g.get("missing"), None);
    assert!(g.get_str("u8").is_err(), "a u8 is not a string");

    let t: Vec<_> = g.tensors().collect();
    assert_eq!(t.len(), 2);
    assert_eq!(
        (t[0].name, t[0].dims, t[0].ty, t[0].data.len()),
        ("a", [32, 2, 1, 1], GgmlType::F32, 256)
    );
    assert_eq!(
        (t[1].name, t[1].n_dims, t[1].ty, t[1].data.len()),
        ("b", 1, GgmlType::Q4_1, 40)
    );
    assert_eq!(g.data_offset() % 32, 0);
    // Zero-copy: the view is inside the input buffer.
    assert_eq!(t[1].data.as_ptr(), f[g.data_offset() + 256..].as_ptr());
}

#[test]
fn version_2_is_read_too() {
    let mut b = sample();
    b.version = 2;
    assert!(Gguf::parse(&b.build()).is_ok());
}

#[test]
fn honours_general_alignment() {
    let b = Builder::new()
        .kv("general.alignment", 4, &u32v(64))
        .tensor("t", &[32], 0, 64, 128);
    let f = b.build_with_alignment(64);
    let g = Gguf::parse(&f).expect("valid");
    assert_eq!(g.alignment(), 64);
    assert_eq!(g.data_offset() % 64, 0);
    let bad = Builder::new().kv("general.alignment", 4, &u32v(48));
    assert_eq!(
        Gguf::parse(&bad.build()).unwrap_err(),
        Error::BadAlignment(48)
    );
}

#[test]
fn every_truncation_is_an_error() {
    let f = sample().build();
    for n in 0..f.len() {
        // Truncating inside the tensor data leaves a shorter data section: still an error.
        assert!(Gguf::parse(&f[..n]).is_err(), "truncated at {n} parsed");
    }
}

#[test]
fn every_single_bit_flip_in_the_header_is_handled() {
    let f = sample().build();
    let header_end = f.len() - 296;
    for i in 0..header_end {
        for bit in 0..8 {
            let mut g = f.clone();
            g[i] ^= 1 << bit;
            // Either a valid reading or a typed error: never a panic.
            if let Ok(gg) = Gguf::parse(&g) {
                let _ = gg.metadata().count();
                let _ = gg.tensors().count();
            }
        }
    }
}

#[test]
fn bad_magic_and_versions() {
    let mut f = sample().build();
    f[0] = b'X';
    assert_eq!(Gguf::parse(&f).unwrap_err(), Error::BadMagic);
    let mut b = sample();
    b.version = 1;
    assert_eq!(
        Gguf::parse(&b.build()).unwrap_err(),
        Error::UnsupportedVersion(1)
    );
    assert!(matches!(
        Gguf::parse(b"GG").unwrap_err(),
        Error::Truncated { .. }
    ));
}

#[test]
fn huge_counts_and_lengths_are_refused_before_any_work() {
    let mut f = b"GGUF".to_vec();
    f.extend(3u32.to_le_bytes());
    f.extend(u64::MAX.to_le_bytes());
    f.extend(0u64.to_le_bytes());
    assert!(matches!(
        Gguf::parse(&f).unwrap_err(),
        Error::LimitExceeded {
            what: "tensor count",
            ..
        }
    ));

    let mut f = b"GGUF".to_vec();
    f.extend(3u32.to_le_bytes());
    f.extend(0u64.to_le_bytes());
    f.extend(1u64.to_le_bytes());
    f.extend(u64::MAX.to_le_bytes()); // key length
    assert!(matches!(
        Gguf::parse(&f).unwrap_err(),
        Error::LimitExceeded { .. }
    ));

    let mut arr = u32v(ValueType::U64 as u32);
    arr.extend((1u64 << 23).to_le_bytes()); // 8M elements, 64 MiB claimed, file is tiny
    let b = Builder::new().kv("big", 9, &arr);
    assert!(matches!(
        Gguf::parse(&b.build()).unwrap_err(),
        Error::Truncated { .. }
    ));

    let mut arr = u32v(ValueType::String as u32);
    arr.extend(u64::MAX.to_le_bytes());
    let b = Builder::new().kv("big", 9, &arr);
    assert!(matches!(
        Gguf::parse(&b.build()).unwrap_err(),
        Error::LimitExceeded { .. }
    ));

    // Deeply nested arrays.
    let mut deep = Vec::new();
    for _ in 0..10 {
        deep.extend(u32v(ValueType::Array as u32));
        deep.extend(1u64.to_le_bytes());
    }
    let b = Builder::new().kv("deep", 9, &deep);
    assert!(matches!(
        Gguf::parse(&b.build()).unwrap_err(),
        Error::LimitExceeded {
            what: "array nesting depth",
            ..
        }
    ));

    let b = Builder::new().tensor("t", &[1 << 31, 1 << 31, 1 << 31], 0, 0, 0);
    assert!(matches!(
        Gguf::parse(&b.build()).unwrap_err(),
        Error::LimitExceeded { .. }
    ));
    let b = Builder::new().tensor("t", &[32, 1, 1, 1, 1], 0, 0, 128);
    assert!(matches!(
        Gguf::parse(&b.build()).unwrap_err(),
        Error::LimitExceeded {
            what: "tensor dimension count",
            ..
        }
    ));
}

#[test]
fn bad_tensor_tables_are_refused() {
    let dup = Builder::new()
        .tensor("t", &[32], 0, 0, 128)
        .tensor("t", &[32], 0, 128, 128);
    assert!(matches!(
        Gguf::parse(&dup.build()).unwrap_err(),
        Error::DuplicateTensor(_)
    ));
    let overlap = Builder::new()
        .tensor("a", &[32], 0, 0, 128)
        .tensor("b", &[32], 0, 64, 128);
    assert!(matches!(
        Gguf::parse(&overlap.build()).unwrap_err(),
        Error::BadTensorData { .. }
    ));
    let misaligned = Builder::new().tensor("a", &[32], 0, 4, 128);
    assert!(matches!(
        Gguf::parse(&misaligned.build()).unwrap_err(),
        Error::BadTensorData { .. }
    ));
    let mut past_end = Builder::new().tensor("a", &[32], 0, 0, 128).build();
    past_end.truncate(past_end.len() - 1);
    assert!(matches!(
        Gguf::parse(&past_end).unwrap_err(),
        Error::BadTensorData { .. }
    ));
    let bad_block = Builder::new().tensor("q", &[33], 3, 0, 40);
    assert!(matches!(
        Gguf::parse(&bad_block.build()).unwrap_err(),
        Error::BadTensorData { .. }
    ));
    let unknown_type = Builder::new().tensor("u", &[32], 99, 0, 128);
    assert!(matches!(
        Gguf::parse(&unknown_type.build()).unwrap_err(),
        Error::UnsupportedTensorType { type_id: 99, .. }
    ));
    let zero_dim = Builder::new().tensor("z", &[0], 0, 0, 0);
    assert!(Gguf::parse(&zero_dim.build()).is_err());
}

#[test]
fn duplicate_keys_and_bad_types_are_refused() {
    let b = Builder::new().kv("k", 4, &u32v(1)).kv("k", 4, &u32v(2));
    assert!(matches!(
        Gguf::parse(&b.build()).unwrap_err(),
        Error::DuplicateKey(_)
    ));
    let b = Builder::new().kv("k", 13, &[]);
    assert!(matches!(
        Gguf::parse(&b.build()).unwrap_err(),
        Error::BadValueType { type_id: 13, .. }
    ));
    let b = Builder::new().kv("k", 8, &str_bytes(&[0xff, 0xfe]));
    let f = b.build();
    let g = Gguf::parse(&f).expect("non-UTF-8 string values are kept as bytes");
    assert!(g.get_str("k").is_err());
}
