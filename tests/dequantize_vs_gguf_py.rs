//! Every block format of ember's weight table dequantizes exactly as the `gguf` Python package
//! (llama.cpp's independent numpy implementation) does, on random blocks
//! (`fixtures/quants/make_quant_fixtures.py` made the fixture); and its dot-product spec equals
//! the dot product of the dequantized weights with the dequantized activations, up to f32
//! rounding.

use ember_runtime::weights::{block_type, GgmlType, BLOCK_TYPES};
use sha2::{Digest, Sha256};

fn ty_of(name: &str) -> GgmlType {
    BLOCK_TYPES
        .iter()
        .map(|b| b.ty)
        .find(|t| t.name().eq_ignore_ascii_case(name))
        .unwrap_or_else(|| panic!("{name} is not in the block table"))
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The fixture's blocks, copied to a 2-byte-aligned buffer as a mapping would be.
fn aligned(bytes: &[u8]) -> (Vec<u16>, usize) {
    let mut v = vec![0u16; bytes.len().div_ceil(2)];
    bytemuck::cast_slice_mut::<u16, u8>(&mut v)[..bytes.len()].copy_from_slice(bytes);
    (v, bytes.len())
}

#[test]
fn every_block_format_dequantizes_as_gguf_py_does() {
    let f = ember_tests::fixture_json("quants/gguf_py.json");
    let types = f["types"].as_object().unwrap();
    assert_eq!(
        types.len(),
        BLOCK_TYPES.len(),
        "a table row without a fixture"
    );
    for (name, case) in types {
        let ty = ty_of(name);
        let (buf, len) = aligned(&hex(case["blocks"].as_str().unwrap()));
        let bytes = &bytemuck::cast_slice::<u16, u8>(&buf)[..len];
        let n = len / ty.type_size() * ty.block_size();
        let mut out = vec![0f32; n];
        (block_type(ty).unwrap().dequantize)(bytes, &mut out);
        let mut le = Vec::with_capacity(4 * n);
        for v in &out {
            le.extend_from_slice(&v.to_le_bytes());
        }
        let first: Vec<f64> = case["first"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let ours: Vec<f64> = out[..first.len()].iter().map(|&v| v as f64).collect();
        assert_eq!(ours, first, "{name}: first values");
        let sha = format!("{:x}", Sha256::digest(&le));
        assert_eq!(
            sha,
            case["values_sha256"].as_str().unwrap(),
            "{name}: values"
        );
    }
}

#[test]
fn the_dot_spec_equals_the_dot_of_dequantized_values() {
    let f = ember_tests::fixture_json("quants/gguf_py.json");
    for (name, case) in f["types"].as_object().unwrap() {
        let ty = ty_of(name);
        let kind = block_type(ty).unwrap();
        let (buf, len) = aligned(&hex(case["blocks"].as_str().unwrap()));
        let bytes = &bytemuck::cast_slice::<u16, u8>(&buf)[..len];
        let n = len / ty.type_size() * ty.block_size();
        let mut w = vec![0f32; n];
        (kind.dequantize)(bytes, &mut w);
        // Activations: 8-bit blocks (of 32, or 256 for the Q8_K formats) with scales,
        // dequantized for the reference.
        let ab = kind.acts.block();
        let mut state = 0x9e3779b97f4a7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let qs: Vec<i8> = (0..n).map(|_| (next() % 255) as i8).collect();
        let d: Vec<f32> = (0..n / ab)
            .map(|_| (next() % 1000) as f32 / 1000.0 + 0.01)
            .collect();
        let want: f64 = (0..n)
            .map(|i| w[i] as f64 * qs[i] as f64 * d[i / ab] as f64)
            .sum();
        // Q8_1's block sums (d·Σq, exact here; the kernels' are rounded to f16).
        let sums: Vec<f32> = (0..n / ab)
            .map(|b| {
                d[b] * qs[b * ab..(b + 1) * ab]
                    .iter()
                    .map(|&q| q as i32)
                    .sum::<i32>() as f32
            })
            .collect();
        let got = (kind.dot)(bytes, &qs, &d, &sums) as f64;
        let scale: f64 = (0..n)
            .map(|i| (w[i] as f64 * qs[i] as f64 * d[i / ab] as f64).abs())
            .sum();
        assert!(
            (got - want).abs() <= 1e-5 * scale.max(1.0),
            "{name}: dot {got} vs {want} (scale {scale})"
        );
    }
}
