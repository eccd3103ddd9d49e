//! # ember-quant
//!
//! Makes the int4/int8 GGUF files ember runs, and says what quantizing cost:
//!
//! | module      | what it does                                                               |
//! |-------------|----------------------------------------------------------------------------|
//! | [`formats`] | f32 rows to Q8_0, Q4_0, Q4_1 with ggml's reference rounding (byte-identical)|
//! | [`kquants`] | f32 rows to Q5_0, Q5_1, IQ4_NL, Q4_K, Q5_K, Q6_K, as ggml (byte-identical)  |
//! | [`recipe`]  | which type each tensor takes: one type, or llama.cpp's Q4_K_M/Q5_K_M mixes  |
//! | [`encode`]  | a whole tensor on several threads, with its error against the source       |
//! | [`writer`]  | GGUF v3 written tensor by tensor into a temporary file, renamed when done  |
//! | [`quantize`]| GGUF in, GGUF out (`ember quantize`)                                        |
//! | [`convert`] | a Hugging Face Llama checkpoint to GGUF (`ember convert`)                  |
//!
//! Memory stays bounded: inputs are memory-mapped and read tensor by tensor; only the tensor
//! being written is held in RAM, a few MiB of rows at a time.

pub mod convert;
pub mod encode;
pub mod formats;
pub mod kquants;
pub mod quantize;
pub mod recipe;
pub mod writer;

use std::fmt;

/// A quantizer error: one line for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantError(pub String);

impl fmt::Display for QuantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for QuantError {}

impl From<ember_runtime::Error> for QuantError {
    fn from(e: ember_runtime::Error) -> Self {
        QuantError(e.to_string())
    }
}

/// Shorthand.
pub type Result<T> = std::result::Result<T, QuantError>;

use ember_runtime::weights::GgmlType;

/// The single output types, by the names the CLI takes.
pub fn parse_type(name: &str) -> Result<GgmlType> {
    let lower = name.to_ascii_lowercase();
    encode::WRITERS
        .iter()
        .map(|w| w.ty)
        .find(|t| t.name().eq_ignore_ascii_case(&lower))
        .ok_or_else(|| {
            QuantError(format!(
                "unknown type {name:?}: use one of {}",
                encode::target_names().to_ascii_lowercase()
            ))
        })
}

/// What `--type` asks for: a single type or one of llama.cpp's mixes (`q4_k_m`, `q5_k_m`).
pub fn parse_target(name: &str) -> Result<recipe::Target> {
    if let Some(m) = recipe::Mix::by_name(name) {
        return Ok(recipe::Target::Mix(m));
    }
    parse_type(name).map(recipe::Target::Single).map_err(|e| {
        QuantError(format!(
            "{}, or a mix: {}",
            e.0,
            recipe::Mix::NAMES.join(", ")
        ))
    })
}

/// `general.file_type` for a file whose matrices are `ty` (llama.cpp's `llama_ftype`; a lone
/// K type is llama-quantize's alias for its `_M` mix, whose number it writes).
pub fn file_type(ty: GgmlType) -> u32 {
    match ty {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q4_0 => 2,
        GgmlType::Q4_1 => 3,
        GgmlType::Q8_0 => 7,
        GgmlType::Q5_0 => 8,
        GgmlType::Q5_1 => 9,
        GgmlType::Q4_K => 15,
        GgmlType::Q5_K => 17,
        GgmlType::Q6_K => 18,
        GgmlType::IQ4_NL => 25,
        _ => 0,
    }
}

/// Test input: `n` values uniform in ±scale/2 from a xorshift32 seeded with `seed`.
#[cfg(test)]
pub(crate) fn test_data(seed: u32, n: usize, scale: f32) -> Vec<f32> {
    let mut x = seed.max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as f32 / u32::MAX as f32 - 0.5) * scale
        })
        .collect()
}

/// `general.quantization_version` written with quantized files (ggml's `GGML_QNT_VERSION`).
pub const QUANTIZATION_VERSION: u32 = 2;

/// Progress: called after each tensor with (tensor name, bytes done, bytes in all).
pub type Progress<'a> = dyn FnMut(&str, u64, u64) + 'a;

/// What happened to one tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorReport {
    /// Name in the output.
    pub name: String,
    /// Source type.
    pub from: GgmlType,
    /// Output type.
    pub to: GgmlType,
    /// Decoded and encoded again (else copied byte for byte).
    pub reencoded: bool,
    /// Error against the source (when measured and the tensor was re-encoded).
    pub error: Option<encode::ErrorStats>,
}
