//! `ember quantize` and `ember convert`: make the GGUF files ember runs (see `ember-quant`).

use crate::load::{self, CliError, CliResult};
use ember_quant::recipe::Target;
use ember_quant::{parse_target, parse_type, TensorReport};
use std::io::IsTerminal;
use std::path::PathBuf;

/// Flags shared by both commands.
#[derive(clap::Args)]
pub struct OutputArgs {
    /// Type of the weight matrices: f32, f16, q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl, q4_k, q5_k,
    /// q6_k, or (quantize only) llama.cpp's mixes q4_k_m, q5_k_m.
    #[arg(long = "type", default_value = "q8_0")]
    ty: String,
    /// Type of the token embedding (in tied models also the output head) [default: q8_0, or
    /// the mix's choice].
    #[arg(long)]
    embeddings: Option<String>,
    /// Threads [default: physical cores].
    #[arg(short = 't', long)]
    threads: Option<usize>,
    /// Print each tensor's RMSE and cosine similarity to its source.
    #[arg(long)]
    report: bool,
}

#[derive(clap::Args)]
pub struct QuantizeArgs {
    /// The GGUF to read (F32, F16, BF16 or quantized tensors).
    input: PathBuf,
    /// The GGUF to write (replaced only when complete).
    output: PathBuf,
    #[command(flatten)]
    out: OutputArgs,
}

#[derive(clap::Args)]
pub struct ConvertArgs {
    /// A Hugging Face Llama checkpoint folder (config.json, tokenizer.json, *.safetensors).
    dir: PathBuf,
    /// The GGUF to write (replaced only when complete).
    output: PathBuf,
    #[command(flatten)]
    out: OutputArgs,
    /// The pre-tokenizer name (tokenizer.ggml.pre) when it is not recognised, e.g. smollm.
    #[arg(long)]
    pre_tokenizer: Option<String>,
}

/// A progress bar on a terminal, nothing otherwise.
fn progress_bar(what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(what.to_string());
    bar
}

fn threads(t: Option<usize>) -> CliResult<usize> {
    match t {
        Some(0) => Err(CliError("--threads must be at least 1".into())),
        Some(n) => Ok(n.min(256)),
        None => Ok(load::default_threads()),
    }
}

fn print_report(reports: &[TensorReport], input_bytes: u64, output: &std::path::Path) -> CliResult {
    outln!(
        "{:<40} {:>6} {:>6} {:>12} {:>10}",
        "tensor",
        "from",
        "to",
        "rmse",
        "cosine"
    )?;
    for r in reports {
        match &r.error {
            Some(e) => outln!(
                "{:<40} {:>6} {:>6} {:>12.6e} {:>10.6}",
                r.name,
                r.from.name(),
                r.to.name(),
                e.rmse(),
                e.cosine()
            )?,
            None => outln!(
                "{:<40} {:>6} {:>6} {:>12} {:>10}",
                r.name,
                r.from.name(),
                r.to.name(),
                "copied",
                "-"
            )?,
        }
    }
    let out = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
    outln!(
        "size: {:.1} MiB -> {:.1} MiB",
        input_bytes as f64 / 1048576.0,
        out as f64 / 1048576.0
    )
}

pub fn quantize(a: QuantizeArgs) -> CliResult {
    let target = parse_target(&a.out.ty).map_err(|e| CliError(e.0))?;
    let embeddings = match (&a.out.embeddings, target) {
        (Some(e), _) => Some(parse_type(e).map_err(|e| CliError(e.0))?),
        (None, Target::Single(_)) => Some(ember_runtime::weights::GgmlType::Q8_0),
        (None, Target::Mix(_)) => None,
    };
    let o = ember_quant::quantize::Options {
        target,
        embeddings,
        threads: threads(a.out.threads)?,
        measure: a.out.report,
    };
    let bar = progress_bar("quantize");
    let reports =
        ember_quant::quantize::quantize_file(&a.input, &a.output, &o, &mut |name, done, total| {
            bar.set_length(total);
            bar.set_position(done);
            bar.set_message(name.to_string());
        })
        .map_err(|e| CliError(e.0))?;
    bar.finish_and_clear();
    let in_bytes = std::fs::metadata(&a.input).map(|m| m.len()).unwrap_or(0);
    if a.out.report {
        print_report(&reports, in_bytes, &a.output)?;
    }
    errln!(
        "ember: wrote {} ({} tensors, {} re-encoded)",
        a.output.display(),
        reports.len(),
        reports.iter().filter(|r| r.reencoded).count()
    );
    Ok(())
}

pub fn convert(a: ConvertArgs) -> CliResult {
    let o = ember_quant::convert::Options {
        ty: parse_type(&a.out.ty).map_err(|e| CliError(e.0))?,
        embeddings: parse_type(a.out.embeddings.as_deref().unwrap_or("q8_0"))
            .map_err(|e| CliError(e.0))?,
        threads: threads(a.out.threads)?,
        measure: a.out.report,
        pre_tokenizer: a.pre_tokenizer,
    };
    let bar = progress_bar("convert");
    let reports =
        ember_quant::convert::convert_dir(&a.dir, &a.output, &o, &mut |name, done, total| {
            bar.set_length(total);
            bar.set_position(done);
            bar.set_message(name.to_string());
        })
        .map_err(|e| CliError(e.0))?;
    bar.finish_and_clear();
    if a.out.report {
        // The checkpoint's size: its safetensors files.
        let in_bytes = std::fs::read_dir(&a.dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        print_report(&reports, in_bytes, &a.output)?;
    }
    errln!(
        "ember: wrote {} ({} tensors)",
        a.output.display(),
        reports.len()
    );
    Ok(())
}
