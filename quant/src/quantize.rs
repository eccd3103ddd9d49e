//! `ember quantize`: a GGUF file in, the same model with its weight matrices re-encoded out.
//!
//! Which tensors: as llama.cpp decides — every tensor of two or more dimensions whose name ends
//! in `weight`, except norms (`*_norm.weight`), is re-encoded, in the type [`crate::recipe`]
//! chooses (one type as with `llama-quantize --pure`, or a Q4_K_M/Q5_K_M mix as without it).
//! The token embedding takes the embedding type when one is given (Q8_0 by default with a single
//! type: in models with a tied output head it is also the output projection, the most sensitive
//! matrix). Everything else, and a tensor already in its type, is copied byte for byte. Every metadata key is kept, in order; `general.quantization_version` and
//! `general.file_type` are set last, as llama.cpp sets them, and the tensors are written in
//! llama.cpp's order ([`llama_order_key`]): for the same input the output file is byte-identical
//! to `llama-quantize`'s (`--pure` for a single type).

use crate::encode::{self, ErrorStats};
use crate::recipe::{Recipe, Target};
use crate::writer::{GgufWriter, MetaKv, TensorEntry};
use crate::{Progress, QuantError, Result, TensorReport, QUANTIZATION_VERSION};
use ember_runtime::gguf::{Gguf, MappedFile, TensorInfo};
use ember_runtime::weights::{GgmlType, Matrix};
use std::path::Path;

/// Settings of one run.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Type of the weight matrices: one type or a mix.
    pub target: Target,
    /// Type of the token embedding (`None`: the mix's choice).
    pub embeddings: Option<GgmlType>,
    /// Threads.
    pub threads: usize,
    /// Measure each re-encoded tensor's error against its source.
    pub measure: bool,
}

/// Whether llama.cpp would quantize this tensor (2-D or more, a weight, not a norm).
pub fn is_quantizable(name: &str, n_dims: u32) -> bool {
    n_dims >= 2 && name.ends_with("weight") && !name.contains("_norm.weight")
}

/// llama.cpp's tensor order (its loader keeps weights sorted this way, and `llama-quantize`
/// writes them in it): tensors outside the blocks first, then block by block, by name within.
/// Writing the same order makes ember's output byte-identical to llama-quantize's, file and all.
pub fn llama_order_key(name: &str) -> (i64, &str) {
    let layer = name
        .strip_prefix("blk.")
        .and_then(|rest| {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            rest[..digits].parse::<i64>().ok()
        })
        .unwrap_or(-1);
    (layer, name)
}

/// Rows and columns of a tensor seen as a matrix (innermost dimension = columns).
fn shape(t: &TensorInfo<'_>) -> Result<(usize, usize)> {
    let dims = &t.dims[..t.n_dims as usize];
    let cols = *dims.first().unwrap_or(&1);
    let rows: u64 = dims.iter().skip(1).product();
    match (usize::try_from(rows), usize::try_from(cols)) {
        (Ok(r), Ok(c)) => Ok((r, c)),
        _ => Err(QuantError(format!("{}: too large", t.name))),
    }
}

/// The output type of each tensor.
fn plan<'a>(g: &Gguf<'a>, o: &Options) -> Result<Vec<(TensorInfo<'a>, GgmlType)>> {
    let arch = g.get_str("general.architecture")?.unwrap_or("");
    if ember_runtime::model::Arch::by_name(arch).is_none() {
        return Err(QuantError(format!(
            "architecture {arch:?} is not supported (ember runs {})",
            ember_runtime::model::arch::ARCH_NAMES
        )));
    }
    let mut tensors: Vec<TensorInfo<'a>> = g.tensors().collect();
    tensors.sort_by(|a, b| llama_order_key(a.name).cmp(&llama_order_key(b.name)));
    let n_layer = block_count(g, arch, &tensors);
    let mut recipe = Recipe::new(
        o.target,
        o.embeddings,
        tensors.iter().map(|t| t.name),
        n_layer,
    );
    tensors
        .into_iter()
        .map(|t| {
            if !is_quantizable(t.name, t.n_dims) {
                return Ok((t, t.ty));
            }
            let (_, cols) = shape(&t)?;
            let to = recipe.choose(t.name, cols);
            if !(to.block_size() == 1 || cols.is_multiple_of(to.block_size())) {
                return Err(QuantError(format!(
                    "{}: row length {cols} is not a multiple of the {} block size {}",
                    t.name,
                    to.name(),
                    to.block_size()
                )));
            }
            // Whatever `Matrix` can view, it can dequantize.
            if !t.ty.is_matmul_supported() {
                return Err(QuantError(format!(
                    "{}: cannot read {} tensors (these can be re-encoded: {})",
                    t.name,
                    t.ty.name(),
                    GgmlType::MATMUL_NAMES
                )));
            }
            encode::check_targets(&[to]).map_err(|e| QuantError(format!("{}: {e}", t.name)))?;
            Ok((t, to))
        })
        .collect()
}

/// The model's layer count (`{arch}.block_count`; else one past the highest `blk.N`).
fn block_count(g: &Gguf<'_>, arch: &str, tensors: &[TensorInfo<'_>]) -> usize {
    let key = format!("{arch}.block_count");
    g.metadata()
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.as_u64())
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or_else(|| {
            tensors
                .iter()
                .map(|t| llama_order_key(t.name).0 + 1)
                .max()
                .unwrap_or(0)
                .max(0) as usize
        })
}

/// Quantizes `input` into `output` (see the module notes). Returns one report per tensor.
pub fn quantize_file(
    input: &Path,
    output: &Path,
    o: &Options,
    progress: &mut Progress<'_>,
) -> Result<Vec<TensorReport>> {
    encode::check_targets(&[o.target.base()])?;
    encode::check_targets(o.embeddings.as_slice())?;
    let file =
        MappedFile::open(input).map_err(|e| QuantError(format!("{}: {e}", input.display())))?;
    let g =
        Gguf::parse(file.bytes()).map_err(|e| QuantError(format!("{}: {e}", input.display())))?;
    let plan = plan(&g, o)?;

    let mut meta: Vec<MetaKv> = g
        .metadata()
        .filter(|(k, _)| *k != "general.quantization_version" && *k != "general.file_type")
        .map(|(k, v)| MetaKv::copy(k, &v))
        .collect();
    meta.push(MetaKv::u32(
        "general.quantization_version",
        QUANTIZATION_VERSION,
    ));
    meta.push(MetaKv::u32("general.file_type", o.target.file_type()));
    let entries: Vec<TensorEntry> = plan
        .iter()
        .map(|(t, to)| TensorEntry {
            name: t.name.into(),
            dims: t.dims[..t.n_dims as usize].to_vec(),
            ty: *to,
        })
        .collect();
    let mut w = GgufWriter::create(output, &meta, &entries)?;

    let total: u64 = plan.iter().map(|(t, _)| t.data.len() as u64).sum();
    let mut done = 0u64;
    let mut reports = Vec::with_capacity(plan.len());
    for (t, to) in &plan {
        // A tensor already in its type is copied, as llama-quantize does.
        let reencode = *to != t.ty;
        let error = if reencode {
            let (rows, cols) = shape(t)?;
            let m = Matrix::new(t.name, t.ty, rows, cols, t.data)?;
            let src = |r: usize, out: &mut [f32]| -> Result<()> {
                m.dequantize_row(r, out);
                Ok(())
            };
            let stats = encode::encode_to(&mut w, rows, cols, *to, o.threads, &src, o.measure)
                .map_err(|e| QuantError(format!("{}: {e}", t.name)))?;
            o.measure.then_some(stats)
        } else {
            w.tensor(t.data)?;
            None::<ErrorStats>
        };
        reports.push(TensorReport {
            name: t.name.into(),
            from: t.ty,
            to: *to,
            reencoded: reencode,
            error,
        });
        done += t.data.len() as u64;
        progress(t.name, done, total);
    }
    w.finish()?;
    Ok(reports)
}
