//! # ember-quant
//!
//! Makes the int4/int8 GGUF files ember runs, and says what quantizing cost:
//!
//! | module      | what it does                                                               |
//! |-------------|----------------------------------------------------------------------------|
//! | [`formats`] | f32 rows to Q8_0, Q4_0, Q4_1 with ggml's reference rounding (byte-identical)|
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
pub mod quantize;
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

/// The output types, by the names the CLI takes.
pub fn parse_type(name: &str) -> Result<GgmlType> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "q8_0" => GgmlType::Q8_0,
        "q4_0" => GgmlType::Q4_0,
        "q4_1" => GgmlType::Q4_1,
        "f16" => GgmlType::F16,
        "f32" => GgmlType::F32,
        _ => {
            return Err(QuantError(format!(
                "unknown type {name:?}: use q8_0, q4_0, q4_1, f16 or f32"
            )))
        }
    })
}

/// `general.file_type` for a file whose matrices are `ty` (llama.cpp's `llama_ftype`).
pub fn file_type(ty: GgmlType) -> u32 {
    match ty {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q4_0 => 2,
        GgmlType::Q4_1 => 3,
        GgmlType::Q8_0 => 7,
        _ => 0,
    }
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
