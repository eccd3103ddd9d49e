//! Tensor element types and the block formats of quantized weights.
//!
//! GGUF stores each tensor in one [`GgmlType`]. Quantized types group 32 consecutive values of
//! a row into a block with its own scale (and minimum); [`blocks`] defines those layouts as
//! `#[repr(C)]` structs whose sizes are checked at compile time, and their plain scalar
//! quantize/dequantize routines. A [`Matrix`] is a typed, zero-copy view of a weight matrix.

pub mod blocks;
pub mod quants;

pub use blocks::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1, QK};
use quants::QuantBlock;

use crate::error::{Error, Name, Result};
use half::{bf16, f16};

/// The element types GGUF defines (numbering from ggml). ember computes with F32, F16, BF16,
/// Q4_0, Q4_1, Q8_0 and the formats of [`BLOCK_TYPES`]; the others are known by size so any
/// valid file can be inspected.
#[allow(non_camel_case_types, missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    IQ2_XXS = 16,
    IQ2_XS = 17,
    IQ3_XXS = 18,
    IQ1_S = 19,
    IQ4_NL = 20,
    IQ3_S = 21,
    IQ2_S = 22,
    IQ4_XS = 23,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    IQ1_M = 29,
    BF16 = 30,
    TQ1_0 = 34,
    TQ2_0 = 35,
    MXFP4 = 39,
}

impl GgmlType {
    /// The type with this GGUF id, if it is one ggml defines.
    pub fn from_u32(id: u32) -> Option<Self> {
        use GgmlType::*;
        Some(match id {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            9 => Q8_1,
            10 => Q2_K,
            11 => Q3_K,
            12 => Q4_K,
            13 => Q5_K,
            14 => Q6_K,
            15 => Q8_K,
            16 => IQ2_XXS,
            17 => IQ2_XS,
            18 => IQ3_XXS,
            19 => IQ1_S,
            20 => IQ4_NL,
            21 => IQ3_S,
            22 => IQ2_S,
            23 => IQ4_XS,
            24 => I8,
            25 => I16,
            26 => I32,
            27 => I64,
            28 => F64,
            29 => IQ1_M,
            30 => BF16,
            34 => TQ1_0,
            35 => TQ2_0,
            39 => MXFP4,
            _ => return None,
        })
    }

    /// (elements per block, bytes per block).
    pub fn block_layout(self) -> (usize, usize) {
        use GgmlType::*;
        match self {
            F32 | I32 => (1, 4),
            F16 | BF16 | I16 => (1, 2),
            I8 => (1, 1),
            I64 | F64 => (1, 8),
            Q4_0 => (32, 18),
            Q4_1 => (32, 20),
            Q5_0 => (32, 22),
            Q5_1 => (32, 24),
            Q8_0 => (32, 34),
            Q8_1 => (32, 36),
            IQ4_NL => (32, 18),
            MXFP4 => (32, 17),
            Q2_K => (256, 84),
            Q3_K => (256, 110),
            Q4_K => (256, 144),
            Q5_K => (256, 176),
            Q6_K => (256, 210),
            Q8_K => (256, 292),
            IQ2_XXS => (256, 66),
            IQ2_XS => (256, 74),
            IQ3_XXS => (256, 98),
            IQ1_S => (256, 50),
            IQ3_S => (256, 110),
            IQ2_S => (256, 82),
            IQ4_XS => (256, 136),
            IQ1_M => (256, 56),
            TQ1_0 => (256, 54),
            TQ2_0 => (256, 66),
        }
    }

    /// Elements per block.
    pub fn block_size(self) -> usize {
        self.block_layout().0
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        self.block_layout().1
    }

    /// Bytes holding `n` elements, or `None` when `n` is not a whole number of blocks.
    pub fn row_bytes(self, n: u64) -> Option<u64> {
        let (bs, ts) = self.block_layout();
        if !n.is_multiple_of(bs as u64) {
            return None;
        }
        (n / bs as u64).checked_mul(ts as u64)
    }

    /// The name llama.cpp prints (`q4_1`, `f32`, ...).
    pub fn name(self) -> &'static str {
        use GgmlType::*;
        match self {
            F32 => "f32",
            F16 => "f16",
            Q4_0 => "q4_0",
            Q4_1 => "q4_1",
            Q5_0 => "q5_0",
            Q5_1 => "q5_1",
            Q8_0 => "q8_0",
            Q8_1 => "q8_1",
            Q2_K => "q2_K",
            Q3_K => "q3_K",
            Q4_K => "q4_K",
            Q5_K => "q5_K",
            Q6_K => "q6_K",
            Q8_K => "q8_K",
            IQ2_XXS => "iq2_xxs",
            IQ2_XS => "iq2_xs",
            IQ3_XXS => "iq3_xxs",
            IQ1_S => "iq1_s",
            IQ4_NL => "iq4_nl",
            IQ3_S => "iq3_s",
            IQ2_S => "iq2_s",
            IQ4_XS => "iq4_xs",
            I8 => "i8",
            I16 => "i16",
            I32 => "i32",
            I64 => "i64",
            F64 => "f64",
            IQ1_M => "iq1_m",
            BF16 => "bf16",
            TQ1_0 => "tq1_0",
            TQ2_0 => "tq2_0",
            MXFP4 => "mxfp4",
        }
    }

    /// Types ember can multiply with activations.
    pub fn is_matmul_supported(self) -> bool {
        matches!(
            self,
            Self::F32 | Self::F16 | Self::BF16 | Self::Q4_0 | Self::Q4_1 | Self::Q8_0
        ) || block_type(self).is_some()
    }

    /// The names of every type ember multiplies, for messages.
    pub const MATMUL_NAMES: &'static str =
        "f32, f16, bf16, q4_0, q4_1, q8_0, q5_0, q5_1, q2_K, q3_K, q4_K, q5_K, q6_K, iq4_nl, iq4_xs";
}

/// The dot-product spec of a row (its bytes) with activation quants, scales and sums.
pub type DotFn = fn(&[u8], &[i8], &[f32], &[f32]) -> f32;

/// One row of the table of block formats that [`quants`] defines: what a weight matrix of that
/// type needs to be bound, dequantized and multiplied. Adding a format is one block layout, its
/// [`QuantBlock`] impl, and one row here.
#[derive(Clone, Copy)]
pub struct BlockType {
    /// The GGUF type.
    pub ty: GgmlType,
    /// The activation blocks its products take (Q8_K for the formats of 256-element blocks).
    pub acts: quants::Acts,
    /// Dequantizes whole blocks (bytes) into f32 values.
    pub dequantize: fn(&[u8], &mut [f32]),
    /// The dot-product spec ([`quants::dot`]) of one row's blocks (bytes) with 8-bit activation
    /// blocks of the form `acts` (`qs`, `d`, `s`).
    pub dot: DotFn,
    /// Unpacks groups `first..` of one row (bytes) into integer [`quants::Group`]s, for
    /// products that reuse them across tokens.
    pub unpack: fn(&[u8], usize, &mut [quants::Group]),
}

impl core::fmt::Debug for BlockType {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "BlockType({})", self.ty.name())
    }
}

/// `bytes` as blocks of `B`. Matrices are checked when made (whole blocks, aligned), so this
/// cannot fail for their rows.
fn as_blocks<B: QuantBlock>(bytes: &[u8]) -> &[B] {
    bytemuck::cast_slice(bytes)
}

fn dequantize_bytes<B: QuantBlock>(bytes: &[u8], out: &mut [f32]) {
    quants::dequantize(as_blocks::<B>(bytes), out)
}

fn dot_bytes<B: QuantBlock>(bytes: &[u8], qs: &[i8], d: &[f32], s: &[f32]) -> f32 {
    quants::dot(as_blocks::<B>(bytes), qs, d, s)
}

fn unpack_bytes<B: QuantBlock>(bytes: &[u8], first: usize, out: &mut [quants::Group]) {
    quants::unpack(as_blocks::<B>(bytes), first, out)
}

const fn row<B: QuantBlock>(ty: GgmlType) -> BlockType {
    BlockType {
        ty,
        acts: B::ACTS,
        dequantize: dequantize_bytes::<B>,
        dot: dot_bytes::<B>,
        unpack: unpack_bytes::<B>,
    }
}

/// The table of block formats multiplied through [`quants::dot`].
pub const BLOCK_TYPES: [BlockType; 12] = [
    row::<BlockQ4_0>(GgmlType::Q4_0),
    row::<BlockQ4_1>(GgmlType::Q4_1),
    row::<BlockQ8_0>(GgmlType::Q8_0),
    row::<quants::BlockQ5_0>(GgmlType::Q5_0),
    row::<quants::BlockQ5_1>(GgmlType::Q5_1),
    row::<quants::BlockQ2K>(GgmlType::Q2_K),
    row::<quants::BlockQ3K>(GgmlType::Q3_K),
    row::<quants::BlockQ4K>(GgmlType::Q4_K),
    row::<quants::BlockQ5K>(GgmlType::Q5_K),
    row::<quants::BlockQ6K>(GgmlType::Q6_K),
    row::<quants::BlockIq4Nl>(GgmlType::IQ4_NL),
    row::<quants::BlockIq4Xs>(GgmlType::IQ4_XS),
];

/// The table row of `ty`, if it is one of [`BLOCK_TYPES`].
pub fn block_type(ty: GgmlType) -> Option<&'static BlockType> {
    BLOCK_TYPES.iter().find(|b| b.ty == ty)
}

/// A typed, zero-copy 2-D weight matrix: `rows` rows of `cols` elements, row-major, as GGUF
/// stores `[cols, rows]` (innermost dimension first).
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs)] // rows, cols, data in every variant
pub enum Matrix<'a> {
    /// Rows of f32.
    F32 {
        rows: usize,
        cols: usize,
        data: &'a [f32],
    },
    /// Rows of f16.
    F16 {
        rows: usize,
        cols: usize,
        data: &'a [f16],
    },
    /// Rows of bf16.
    BF16 {
        rows: usize,
        cols: usize,
        data: &'a [bf16],
    },
    /// Rows of Q4_0 blocks.
    Q4_0 {
        rows: usize,
        cols: usize,
        data: &'a [BlockQ4_0],
    },
    /// Rows of Q4_1 blocks.
    Q4_1 {
        rows: usize,
        cols: usize,
        data: &'a [BlockQ4_1],
    },
    /// Rows of Q8_0 blocks.
    Q8_0 {
        rows: usize,
        cols: usize,
        data: &'a [BlockQ8_0],
    },
    /// Rows of blocks of a format of [`BLOCK_TYPES`] (`data` holds whole, 2-byte aligned
    /// blocks).
    Blocks {
        rows: usize,
        cols: usize,
        data: &'a [u8],
        kind: &'static BlockType,
    },
}

impl<'a> Matrix<'a> {
    /// Views `bytes` as a `rows × cols` matrix of type `ty`. Fails if the type is not one ember
    /// multiplies, the size is wrong, or the bytes are misaligned for the block type.
    pub fn new(
        name: &str,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        bytes: &'a [u8],
    ) -> Result<Self> {
        let bad = |reason| Error::BadTensorRole {
            name: Name::new(name),
            reason,
        };
        let expected = ty
            .row_bytes(cols as u64)
            .and_then(|r| r.checked_mul(rows as u64))
            .ok_or(bad("row length is not a whole number of blocks"))?;
        if bytes.len() as u64 != expected {
            return Err(bad("data size does not match its shape"));
        }
        fn cast<T: bytemuck::Pod>(b: &[u8]) -> Option<&[T]> {
            bytemuck::try_cast_slice(b).ok()
        }
        let misaligned = || bad("data is not aligned for its element type");
        Ok(match ty {
            GgmlType::F32 => Matrix::F32 {
                rows,
                cols,
                data: cast(bytes).ok_or_else(misaligned)?,
            },
            GgmlType::F16 => Matrix::F16 {
                rows,
                cols,
                data: cast(bytes).ok_or_else(misaligned)?,
            },
            GgmlType::BF16 => Matrix::BF16 {
                rows,
                cols,
                data: cast(bytes).ok_or_else(misaligned)?,
            },
            GgmlType::Q4_0 => Matrix::Q4_0 {
                rows,
                cols,
                data: cast(bytes).ok_or_else(misaligned)?,
            },
            GgmlType::Q4_1 => Matrix::Q4_1 {
                rows,
                cols,
                data: cast(bytes).ok_or_else(misaligned)?,
            },
            GgmlType::Q8_0 => Matrix::Q8_0 {
                rows,
                cols,
                data: cast(bytes).ok_or_else(misaligned)?,
            },
            _ => match block_type(ty) {
                // Every block format holds f16 scales: 2-byte alignment makes each block (an
                // even number of bytes) castable.
                Some(kind) if (bytes.as_ptr() as usize).is_multiple_of(2) => Matrix::Blocks {
                    rows,
                    cols,
                    data: bytes,
                    kind,
                },
                Some(_) => return Err(misaligned()),
                None => return Err(bad("element type not supported for a weight matrix")),
            },
        })
    }

    /// Number of rows (output features).
    pub fn rows(&self) -> usize {
        match *self {
            Matrix::F32 { rows, .. }
            | Matrix::F16 { rows, .. }
            | Matrix::BF16 { rows, .. }
            | Matrix::Q4_0 { rows, .. }
            | Matrix::Q4_1 { rows, .. }
            | Matrix::Q8_0 { rows, .. }
            | Matrix::Blocks { rows, .. } => rows,
        }
    }

    /// Number of columns (input features).
    pub fn cols(&self) -> usize {
        match *self {
            Matrix::F32 { cols, .. }
            | Matrix::F16 { cols, .. }
            | Matrix::BF16 { cols, .. }
            | Matrix::Q4_0 { cols, .. }
            | Matrix::Q4_1 { cols, .. }
            | Matrix::Q8_0 { cols, .. }
            | Matrix::Blocks { cols, .. } => cols,
        }
    }

    /// The element type.
    pub fn ty(&self) -> GgmlType {
        match self {
            Matrix::F32 { .. } => GgmlType::F32,
            Matrix::F16 { .. } => GgmlType::F16,
            Matrix::BF16 { .. } => GgmlType::BF16,
            Matrix::Q4_0 { .. } => GgmlType::Q4_0,
            Matrix::Q4_1 { .. } => GgmlType::Q4_1,
            Matrix::Q8_0 { .. } => GgmlType::Q8_0,
            Matrix::Blocks { kind, .. } => kind.ty,
        }
    }

    /// Dequantizes row `r` into `out` (length `cols`). Used for embedding lookups.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let cols = self.cols();
        let out = &mut out[..cols];
        let nb = cols / QK;
        match *self {
            Matrix::F32 { data, .. } => out.copy_from_slice(&data[r * cols..(r + 1) * cols]),
            Matrix::F16 { data, .. } => {
                for (o, x) in out.iter_mut().zip(&data[r * cols..(r + 1) * cols]) {
                    *o = x.to_f32();
                }
            }
            Matrix::BF16 { data, .. } => {
                for (o, x) in out.iter_mut().zip(&data[r * cols..(r + 1) * cols]) {
                    *o = x.to_f32();
                }
            }
            Matrix::Q4_0 { data, .. } => blocks::dequantize_q4_0(&data[r * nb..(r + 1) * nb], out),
            Matrix::Q4_1 { data, .. } => blocks::dequantize_q4_1(&data[r * nb..(r + 1) * nb], out),
            Matrix::Q8_0 { data, .. } => blocks::dequantize_q8_0(&data[r * nb..(r + 1) * nb], out),
            Matrix::Blocks { data, kind, .. } => {
                let rb = self.row_bytes();
                (kind.dequantize)(&data[r * rb..(r + 1) * rb], out)
            }
        }
    }

    /// The table row of this matrix's format and its bytes, for every format of
    /// [`BLOCK_TYPES`] (Q4_0, Q4_1 and Q8_0 included); `None` for f32, f16 and bf16.
    pub fn table_blocks(&self) -> Option<(&'static BlockType, &'a [u8])> {
        let bytes: &'a [u8] = match *self {
            Matrix::Q4_0 { data, .. } => bytemuck::cast_slice(data),
            Matrix::Q4_1 { data, .. } => bytemuck::cast_slice(data),
            Matrix::Q8_0 { data, .. } => bytemuck::cast_slice(data),
            Matrix::Blocks { data, kind, .. } => return Some((kind, data)),
            Matrix::F32 { .. } | Matrix::F16 { .. } | Matrix::BF16 { .. } => return None,
        };
        Some((block_type(self.ty())?, bytes))
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.ty().row_bytes(self.cols() as u64).unwrap_or(0) as usize
    }
}
