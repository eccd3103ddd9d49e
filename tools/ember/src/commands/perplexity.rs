//! `ember perplexity`: llama.cpp's protocol. The text is tokenized once and cut into consecutive
//! chunks of CTX tokens; each chunk is evaluated from an empty cache and only the predictions for
//! its second half are scored (so every scored token has at least CTX/2 tokens of context).
//!
//! With `--kl-divergence-base FILE` it also saves every scored distribution in llama-perplexity's
//! format; with `--kl-divergence` as well, it reads them back instead (tokens included) and
//! reports the KL divergence of this run from that base ([`super::kld`]), so ember and llama.cpp
//! can each be the base of the other.

use super::{kld, ModelArgs};
use crate::load::{self, CliError, CliResult};
use ember_runtime::arena::Arena;
use ember_runtime::session::{Session, SessionConfig};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Text file to score (not needed with --kl-divergence: the base holds the tokens).
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Chunk size (context) in tokens (default 512; with --kl-divergence, the base's).
    #[arg(short = 'c', long = "ctx")]
    ctx: Option<usize>,
    /// Saves the log-probabilities of every scored token to FILE (llama-perplexity's format);
    /// with --kl-divergence, reads them from FILE instead.
    #[arg(long = "kl-divergence-base", value_name = "FILE")]
    kl_divergence_base: Option<PathBuf>,
    /// Reports the KL divergence from the base saved in --kl-divergence-base FILE.
    #[arg(long = "kl-divergence", requires = "kl_divergence_base")]
    kl_divergence: bool,
    /// Instead of chunks, score the whole text as one stream through a ring KV cache of --ctx
    /// tokens (every token after the first is scored).
    #[arg(long)]
    stream: bool,
    /// With --stream: leading tokens the ring never overwrites.
    #[arg(long, default_value_t = ember_runtime::session::DEFAULT_SINKS)]
    sinks: usize,
    /// KV cache precision: f16, f32 or q8_0.
    #[arg(long = "kv-type", default_value = "f16")]
    kv_type: String,
    /// Score at most this many chunks (default: all).
    #[arg(long)]
    chunks: Option<usize>,
    /// Threads (default: the number of physical cores).
    #[arg(short = 't', long = "threads")]
    threads: Option<usize>,
    /// Prompt batch size.
    #[arg(short = 'b', long = "batch", default_value_t = 512)]
    batch: usize,
}

/// −log softmax(logits)[target], in f64.
pub fn nll(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let sum: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    -(logits[target] as f64 - max - sum.ln())
}

pub fn main(a: Args) -> CliResult {
    if a.stream && a.kl_divergence_base.is_some() {
        return Err(CliError(
            "--kl-divergence-base scores chunks, not a stream: leave out --stream".into(),
        ));
    }
    let text = match (&a.file, a.kl_divergence) {
        (Some(f), false) => {
            Some(std::fs::read(f).map_err(|e| CliError(format!("{}: {e}", f.display())))?)
        }
        (None, false) => return Err(CliError("a text file to score is needed (-f FILE)".into())),
        (_, true) => None,
    };
    // Each chunk scores the predictions after its first half: with fewer than 3 tokens there
    // are none.
    if let Some(c) = a.ctx.filter(|&c| c < 3) {
        return Err(CliError(format!(
            "the context (-c) must be at least 3 tokens (a chunk scores the predictions after its first half), not {c}"
        )));
    }
    if a.chunks == Some(0) {
        return Err(CliError(
            "--chunks must be at least 1 (leave it out to score every chunk)".into(),
        ));
    }
    let kernels = load::kernels(a.model.kernels.as_deref())?;
    let pool = load::thread_pool(a.threads)?;
    load::with_model(load::model_path(a.model.model), kernels, |model| {
        let mut base = match (&a.kl_divergence_base, a.kl_divergence) {
            (Some(path), true) => Some(kld::Base::open(path, model.config.n_vocab)?),
            _ => None,
        };
        let (tokens, n_ctx) = match (&mut base, &text) {
            (Some(b), _) => {
                if let Some(c) = a.ctx.filter(|&c| c != b.n_ctx) {
                    return Err(CliError(format!(
                        "the base was computed with chunks of {} tokens, not {c} (leave out -c)",
                        b.n_ctx
                    )));
                }
                (std::mem::take(&mut b.tokens), b.n_ctx)
            }
            (None, Some(t)) => (
                model.tokenizer.encode_to_vec(t, true, true)?,
                a.ctx.unwrap_or(512),
            ),
            (None, None) => unreachable!("a text is read unless a base is"),
        };
        let mut n_chunks = tokens.len() / n_ctx;
        if let Some(c) = a.chunks {
            n_chunks = n_chunks.min(c);
        }
        if n_chunks == 0 {
            return Err(CliError(format!(
                "the text has {} tokens, fewer than one chunk of {n_ctx}",
                tokens.len()
            )));
        }
        let mut writer = match (&a.kl_divergence_base, a.kl_divergence) {
            (Some(path), false) => Some(kld::BaseWriter::create(
                path,
                n_ctx,
                model.config.n_vocab,
                &tokens[..n_chunks * n_ctx],
            )?),
            _ => None,
        };
        let mut stats = kld::Stats::default();
        let mut base_chunk = Vec::new();
        let mut io_error = None;
        let kv_type = ember_runtime::kv::KvType::from_name(&a.kv_type).ok_or_else(|| {
            CliError(format!(
                "unknown KV cache type '{}' (choose from: f16, f32, q8_0)",
                a.kv_type
            ))
        })?;
        let sc = SessionConfig {
            n_ctx,
            n_batch: a.batch.min(n_ctx),
            sinks: if a.stream { a.sinks } else { 0 },
            kv_type,
        };
        let mut mem =
            ember_runtime::arena::try_zeroed(Session::plan(model, &sc)?.total, "session memory")?;
        let mut arena = Arena::new(&mut mem);
        let mut s = Session::new(model, &mut arena, &sc)?;
        s.set_parallel(&pool);
        let bos = model
            .tokenizer
            .add_bos()
            .then(|| model.tokenizer.bos())
            .flatten();
        let first = n_ctx / 2;
        let (mut nll_sum, mut count) = (0.0f64, 0usize);
        let t0 = Instant::now();
        errln!(
            "ember: {} tokens, {} chunks of {}",
            tokens.len(),
            n_chunks,
            n_ctx
        );
        if a.stream {
            // One pass over the same span of text, through the ring: each token is predicted from
            // the sinks and the most recent tokens; the first half-context is not scored (too
            // little context), like the first half of each chunk.
            let span = &tokens[..n_chunks * n_ctx];
            let mut scored = 0usize;
            let mut last_report = 0usize;
            s.eval_all(span, &mut |i, logits| {
                if i >= first && i + 1 < span.len() {
                    nll_sum += nll(logits, span[i + 1] as usize);
                    count += 1;
                    scored += 1;
                    if scored - last_report >= n_ctx {
                        last_report = scored;
                        err!("[{}]{:.4},", i + 1, (nll_sum / count as f64).exp());
                        let _ = std::io::stderr().flush();
                    }
                }
            })?;
        }
        let chunked = if a.stream { 0 } else { n_chunks };
        for c in 0..chunked {
            let mut chunk = tokens[c * n_ctx..(c + 1) * n_ctx].to_vec();
            if let Some(b) = bos {
                chunk[0] = b;
            }
            if let Some(b) = &mut base {
                b.next_chunk(&mut base_chunk)?;
            }
            let nv = kld::values_per_position(model.config.n_vocab);
            s.reset();
            s.eval_all(&chunk, &mut |i, logits| {
                if i >= first && i + 1 < n_ctx {
                    nll_sum += nll(logits, chunk[i + 1] as usize);
                    count += 1;
                    if base.is_some() {
                        let at = (i - first) * nv;
                        stats.add(logits, &base_chunk[at..at + nv], chunk[i + 1] as usize);
                    }
                    if let Some(w) = &mut writer {
                        if let Err(e) = w.position(logits) {
                            io_error.get_or_insert(e);
                        }
                    }
                }
            })?;
            if let Some(e) = io_error.take() {
                return Err(CliError(format!("writing the base log-probabilities: {e}")));
            }
            if base.is_some() {
                err!(
                    "[{}]{:.4} KLD {:.5},",
                    c + 1,
                    (nll_sum / count as f64).exp(),
                    stats.mean_kld()
                );
            } else {
                err!("[{}]{:.4},", c + 1, (nll_sum / count as f64).exp());
            }
            let _ = std::io::stderr().flush();
        }
        if let Some(w) = writer {
            w.finish()
                .map_err(|e| CliError(format!("writing the base log-probabilities: {e}")))?;
        }
        if count == 0 {
            return Err(CliError(
                "no prediction was scored (the chunks are too short)".into(),
            ));
        }
        let ppl = (nll_sum / count as f64).exp();
        errln!(
            "\nember: {} tokens scored in {:.1} s, threads={} kernels={} kv={}{}",
            count,
            t0.elapsed().as_secs_f64(),
            s.threads(),
            model.kernels.name(),
            kv_type.name(),
            if a.stream {
                format!(" stream (ring of {n_ctx}, {} sinks)", a.sinks)
            } else {
                String::new()
            }
        );
        if base.is_some() {
            for line in stats.report() {
                outln!("{line}")?;
            }
        }
        outln!("PPL = {ppl:.4}")?;
        Ok(())
    })
}
