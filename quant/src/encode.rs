//! Turning rows of f32 into a tensor of the target type, on several threads, and measuring
//! what was lost.

use crate::{formats, kquants};
use crate::{QuantError, Result};
use ember_runtime::weights::{GgmlType, Matrix};

/// Error sums of one tensor (source against its encoding, element by element).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ErrorStats {
    /// Σ (x − y)².
    pub sq_err: f64,
    /// Σ x².
    pub sq_src: f64,
    /// Σ y².
    pub sq_out: f64,
    /// Σ x·y.
    pub dot: f64,
    /// Elements.
    pub n: u64,
}

impl ErrorStats {
    /// Adds another part's sums.
    pub fn add(&mut self, o: &ErrorStats) {
        self.sq_err += o.sq_err;
        self.sq_src += o.sq_src;
        self.sq_out += o.sq_out;
        self.dot += o.dot;
        self.n += o.n;
    }
    /// Root-mean-square error.
    pub fn rmse(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            (self.sq_err / self.n as f64).sqrt()
        }
    }
    /// Cosine similarity of the tensor and its encoding (1 when both are zero).
    pub fn cosine(&self) -> f64 {
        let den = (self.sq_src * self.sq_out).sqrt();
        if den == 0.0 {
            if self.sq_src == self.sq_out {
                1.0
            } else {
                0.0
            }
        } else {
            self.dot / den
        }
    }
}

/// One type a tensor can be written as: how a row of f32 becomes its bytes, with ggml's
/// reference arithmetic (the same input gives llama-quantize's bytes).
pub struct Writer {
    /// The output type.
    pub ty: GgmlType,
    /// Encodes one row (a whole number of blocks) into exactly its bytes.
    encode: fn(&[f32], &mut [u8]),
}

/// Quantizes `x` into blocks of `B`, then copies them to `out` (a row inside a byte buffer has
/// no alignment to cast it in place).
fn write_blocks<B: bytemuck::Pod>(x: &[f32], out: &mut [u8], quantize: fn(&[f32], &mut [B])) {
    let mut q = vec![B::zeroed(); out.len() / core::mem::size_of::<B>()];
    quantize(x, &mut q);
    out.copy_from_slice(bytemuck::cast_slice(&q));
}

/// Every type ember writes: one row per type.
pub const WRITERS: [Writer; 11] = [
    Writer {
        ty: GgmlType::F32,
        encode: |x, out| out.copy_from_slice(bytemuck::cast_slice(x)),
    },
    Writer {
        ty: GgmlType::F16,
        encode: |x, out| write_blocks(x, out, formats::to_f16),
    },
    Writer {
        ty: GgmlType::Q8_0,
        encode: |x, out| write_blocks(x, out, formats::quantize_q8_0),
    },
    Writer {
        ty: GgmlType::Q4_0,
        encode: |x, out| write_blocks(x, out, formats::quantize_q4_0),
    },
    Writer {
        ty: GgmlType::Q4_1,
        encode: |x, out| write_blocks(x, out, formats::quantize_q4_1),
    },
    Writer {
        ty: GgmlType::Q5_0,
        encode: |x, out| write_blocks(x, out, kquants::quantize_q5_0),
    },
    Writer {
        ty: GgmlType::Q5_1,
        encode: |x, out| write_blocks(x, out, kquants::quantize_q5_1),
    },
    Writer {
        ty: GgmlType::IQ4_NL,
        encode: |x, out| write_blocks(x, out, kquants::quantize_iq4_nl),
    },
    Writer {
        ty: GgmlType::Q4_K,
        encode: |x, out| write_blocks(x, out, kquants::quantize_q4_k),
    },
    Writer {
        ty: GgmlType::Q5_K,
        encode: |x, out| write_blocks(x, out, kquants::quantize_q5_k),
    },
    Writer {
        ty: GgmlType::Q6_K,
        encode: |x, out| write_blocks(x, out, kquants::quantize_q6_k),
    },
];

/// The writer of `ty`, if ember writes it.
pub fn writer(ty: GgmlType) -> Option<&'static Writer> {
    WRITERS.iter().find(|w| w.ty == ty)
}

/// The names of the types ember writes, for messages.
pub fn target_names() -> String {
    let names: Vec<&str> = WRITERS.iter().map(|w| w.ty.name()).collect();
    names.join(", ")
}

/// The error for a type ember does not write.
fn refused(ty: GgmlType) -> QuantError {
    QuantError(format!(
        "cannot write tensors as {} (ember writes {})",
        ty.name(),
        target_names()
    ))
}

/// Refuses output types that cannot be written (before any file is touched).
pub fn check_targets(types: &[GgmlType]) -> Result<()> {
    types
        .iter()
        .try_for_each(|&t| writer(t).map(|_| ()).ok_or_else(|| refused(t)))
}

/// Encodes one row with `w`; with `back`, decodes it into `back` too (through the runtime's
/// dequantizer, as ember will read it).
fn encode_row(w: &Writer, x: &[f32], out: &mut [u8], back: Option<&mut [f32]>) {
    (w.encode)(x, out);
    if let Some(b) = back {
        // An 8-byte aligned copy, which every element type can be viewed in.
        let mut aligned = vec![0u64; out.len().div_ceil(8)];
        let bytes = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut aligned)[..out.len()];
        bytes.copy_from_slice(out);
        match Matrix::new("row", w.ty, 1, x.len(), bytes) {
            Ok(m) => m.dequantize_row(0, b),
            Err(_) => b.fill(f32::NAN),
        }
    }
}

/// A source of f32 rows: row `r` into the slice (its length is the row length).
pub type RowSource<'a> = dyn Fn(usize, &mut [f32]) -> Result<()> + Sync + 'a;

/// Encodes `rows` rows of `cols` values, read from `src`, as `ty` on `threads` threads; with
/// `measure`, also returns the error sums.
pub fn encode(
    rows: usize,
    cols: usize,
    ty: GgmlType,
    threads: usize,
    src: &RowSource<'_>,
    measure: bool,
) -> Result<(Vec<u8>, ErrorStats)> {
    let w = writer(ty).ok_or_else(|| refused(ty))?;
    let row_bytes = ty
        .row_bytes(cols as u64)
        .filter(|_| ty.block_size() == 1 || cols.is_multiple_of(ty.block_size()))
        .ok_or_else(|| {
            QuantError(format!(
                "row length {cols} is not a multiple of the {} block size {}",
                ty.name(),
                ty.block_size()
            ))
        })? as usize;
    let mut out = vec![0u8; rows * row_bytes];
    let threads = threads.clamp(1, rows.max(1));
    let per = rows.div_ceil(threads).max(1);
    let results: Vec<Result<ErrorStats>> = std::thread::scope(|s| {
        let handles: Vec<_> = out
            .chunks_mut(per * row_bytes.max(1))
            .enumerate()
            .map(|(t, chunk)| {
                s.spawn(move || -> Result<ErrorStats> {
                    let mut x = vec![0.0f32; cols];
                    let mut y = vec![0.0f32; if measure { cols } else { 0 }];
                    let mut st = ErrorStats::default();
                    for (i, row_out) in chunk.chunks_mut(row_bytes.max(1)).enumerate() {
                        src(t * per + i, &mut x)?;
                        encode_row(w, &x, row_out, measure.then_some(&mut y[..]));
                        if measure {
                            for (&a, &b) in x.iter().zip(&y) {
                                let (a, b) = (a as f64, b as f64);
                                st.sq_err += (a - b) * (a - b);
                                st.sq_src += a * a;
                                st.sq_out += b * b;
                                st.dot += a * b;
                            }
                            st.n += cols as u64;
                        }
                    }
                    Ok(st)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(QuantError("a quantizer thread failed".into())))
            })
            .collect()
    });
    let mut total = ErrorStats::default();
    for r in results {
        total.add(&r?);
    }
    Ok((out, total))
}

/// Output bytes encoded per step of [`encode_to`]: bounds the memory a tensor takes, whatever its
/// size.
const STEP_BYTES: usize = 4 << 20;

/// Encodes a whole tensor into `w` (as [`encode`]), a few MiB of rows at a time.
pub fn encode_to(
    w: &mut crate::writer::GgufWriter,
    rows: usize,
    cols: usize,
    ty: GgmlType,
    threads: usize,
    src: &RowSource<'_>,
    measure: bool,
) -> Result<ErrorStats> {
    let row_bytes = ty.row_bytes(cols as u64).unwrap_or(1).max(1) as usize;
    let step = (STEP_BYTES / row_bytes).max(1);
    let mut total = ErrorStats::default();
    let mut start = 0;
    while start < rows {
        let n = step.min(rows - start);
        let part = |r: usize, out: &mut [f32]| src(start + r, out);
        let (bytes, st) = encode(n, cols, ty, threads, &part, measure)?;
        w.write_data(&bytes)?;
        total.add(&st);
        start += n;
    }
    w.end_tensor()?;
    Ok(total)
}
