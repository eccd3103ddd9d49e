//! Turning rows of f32 into a tensor of the target type, on several threads, and measuring
//! what was lost.

use crate::formats;
use crate::{QuantError, Result};
use ember_runtime::weights::blocks::{
    dequantize_q4_0, dequantize_q4_1, dequantize_q8_0, BlockQ4_0, BlockQ4_1, BlockQ8_0, QK,
};
use ember_runtime::weights::GgmlType;
use half::f16;

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

/// Types a tensor can be written as.
pub fn is_target(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::F32 | GgmlType::F16 | GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1
    )
}

/// Refuses output types that cannot be written (before any file is touched).
pub fn check_targets(types: &[GgmlType]) -> Result<()> {
    match types.iter().find(|t| !is_target(**t)) {
        Some(t) => Err(QuantError(format!("cannot write tensors as {}", t.name()))),
        None => Ok(()),
    }
}

/// Quantizes `x` to blocks of type `B` into `out`; with `back`, decodes them into `back` too.
fn blocks<B: bytemuck::Pod + Default>(
    x: &[f32],
    out: &mut [u8],
    back: Option<&mut [f32]>,
    quantize: fn(&[f32], &mut [B]),
    dequantize: fn(&[B], &mut [f32]),
) {
    let mut q = vec![B::default(); x.len() / QK];
    quantize(x, &mut q);
    out.copy_from_slice(bytemuck::cast_slice(&q));
    if let Some(b) = back {
        dequantize(&q, b);
    }
}

/// Encodes one row; with `back`, decodes it into `back` too.
fn encode_row(ty: GgmlType, x: &[f32], out: &mut [u8], back: Option<&mut [f32]>) {
    match ty {
        GgmlType::F32 => {
            out.copy_from_slice(bytemuck::cast_slice(x));
            if let Some(b) = back {
                b.copy_from_slice(x);
            }
        }
        GgmlType::F16 => {
            let mut h = vec![f16::ZERO; x.len()];
            formats::to_f16(x, &mut h);
            out.copy_from_slice(bytemuck::cast_slice(&h));
            if let Some(b) = back {
                for (o, v) in b.iter_mut().zip(&h) {
                    *o = v.to_f32();
                }
            }
        }
        GgmlType::Q8_0 => {
            blocks::<BlockQ8_0>(x, out, back, formats::quantize_q8_0, dequantize_q8_0)
        }
        GgmlType::Q4_0 => {
            blocks::<BlockQ4_0>(x, out, back, formats::quantize_q4_0, dequantize_q4_0)
        }
        GgmlType::Q4_1 => {
            blocks::<BlockQ4_1>(x, out, back, formats::quantize_q4_1, dequantize_q4_1)
        }
        _ => unreachable!("checked by is_target"),
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
    if !is_target(ty) {
        return Err(QuantError(format!("cannot write tensors as {}", ty.name())));
    }
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
                        encode_row(ty, &x, row_out, measure.then_some(&mut y[..]));
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
