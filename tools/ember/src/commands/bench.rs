//! `ember bench`: prompt processing and generation speed, with llama-bench's definitions.
//!
//! - pp N: one N-token prompt from an empty cache, as one batch; tokens/s.
//! - tg N: N single-token decode steps from an empty cache; tokens/s.
//! - With `-d D` (llama-bench's `--n-depth`), each test starts from a cache that already holds
//!   D tokens (evaluated untimed before each repetition), "pp N @ dD", "tg N @ dD": the speed of
//!   a long conversation, where attention reads D cached keys and values per token.
//!
//! Tokens are a fixed pseudo-random sequence of ordinary vocabulary entries (no text needed).
//! Each test runs once untimed (warm-up), then `-r` timed repetitions: mean ± standard deviation.
//!
//! With tg, the bench also measures what bounds decoding: the memory bandwidth on the spot (a
//! streaming read of 256 MiB by the same number of threads, best of three passes) and the bytes
//! a decoded token reads: the weights (every matrix once; a token embedding that is not also the
//! output head reads one row) and the cache (each layer's cached keys and values up to the
//! token, a sliding-window layer's within its window; the mean over the tg run's positions),
//! and reports the share of that bound the decode speed reaches.

use super::ModelArgs;
use crate::load::{self, CliError, CliResult};
use ember_runtime::arena::Arena;
use ember_runtime::model::Model;
use ember_runtime::session::{Session, SessionConfig};
use ember_runtime::tokenizer::TokenKind;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Threads (default: the number of physical cores).
    #[arg(short = 't', long = "threads")]
    threads: Option<usize>,
    /// Prompt tokens for the pp test (0 skips it).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    n_prompt: usize,
    /// Generated tokens for the tg test (0 skips it).
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    n_gen: usize,
    /// Tokens already in the cache when each test starts (evaluated untimed, as llama-bench's
    /// --n-depth).
    #[arg(short = 'd', long = "n-depth", default_value_t = 0)]
    n_depth: usize,
    /// Timed repetitions of each test.
    #[arg(short = 'r', long = "repetitions", default_value_t = 3)]
    reps: usize,
    /// KV cache precision: f16, f32 or q8_0.
    #[arg(long = "kv-type", default_value = "f16")]
    kv_type: String,
    /// Also print one JSON object as the last line.
    #[arg(long)]
    json: bool,
    /// Skip the memory bandwidth measurement (256 MiB read by the threads; with tg only).
    #[arg(long)]
    no_bandwidth: bool,
}

/// The largest batch the depth is evaluated in (when the pp test's is smaller).
const DEPTH_BATCH: usize = 512;

/// Bytes of the buffer the bandwidth measurement reads (well past any last-level cache here).
const BW_BYTES: usize = 256 << 20;

/// Streaming-read bandwidth in GB/s with `threads` threads: each sums its share of a buffer of
/// [`BW_BYTES`] (eight independent sums, which the compiler vectorizes); best of three passes.
fn bandwidth(threads: usize) -> CliResult<f64> {
    let n = BW_BYTES / 8;
    let mut buf: Vec<u64> = Vec::new();
    buf.try_reserve_exact(n)
        .map_err(|_| CliError("no memory for the bandwidth measurement (256 MiB)".into()))?;
    // Written first, so that every page is really there (not the shared zero page).
    buf.extend((0..n as u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    let per = n.div_ceil(threads.max(1));
    let mut best = 0.0f64;
    let mut sink = 0u64;
    for _ in 0..3 {
        let t0 = Instant::now();
        let sums: Vec<u64> = std::thread::scope(|sc| {
            let hs: Vec<_> = buf
                .chunks(per)
                .map(|part| {
                    sc.spawn(move || {
                        let mut acc = [0u64; 8];
                        for c in part.chunks_exact(8) {
                            for (a, &v) in acc.iter_mut().zip(c) {
                                *a = a.wrapping_add(v);
                            }
                        }
                        acc.iter().fold(0u64, |x, &y| x ^ y)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap_or(0)).collect()
        });
        let dt = t0.elapsed().as_secs_f64();
        sink ^= sums.iter().fold(0, |x, &y| x ^ y);
        best = best.max(BW_BYTES as f64 / dt / 1e9);
    }
    // Keeps the sums (and so the reads) from being optimized away.
    std::hint::black_box(sink);
    Ok(best)
}

/// Weight bytes one decoded token reads: every tensor of two or more dimensions once, except a
/// token embedding beside a separate output head (a lookup reads one row of it).
fn weight_bytes_per_token(g: &ember_runtime::gguf::Gguf<'_>) -> u64 {
    let untied = g.tensors().any(|t| t.name == "output.weight");
    g.tensors()
        .filter(|t| t.n_dims >= 2)
        .filter(|t| !(untied && t.name == "token_embd.weight"))
        .map(|t| t.data.len() as u64)
        .sum()
}

/// Cache bytes a decoded token reads, the mean over the positions of a tg run of `n_gen` tokens
/// from a cache holding `depth`: each layer's keys and values of every position up to the
/// token's own (a sliding-window layer's within its window).
fn cache_bytes_per_token(
    c: &ember_runtime::model::Config,
    kv: ember_runtime::kv::KvType,
    depth: usize,
    n_gen: usize,
) -> u64 {
    let row = (2 * c.n_head_kv * kv.row_bytes(c.head_dim)) as u64;
    let total: u64 = (depth..depth + n_gen.max(1))
        .map(|p| {
            let seen = p as u64 + 1;
            (0..c.n_layer)
                .map(|l| c.layer_window(l).map_or(seen, |w| seen.min(w as u64)))
                .sum::<u64>()
                * row
        })
        .sum();
    total / n_gen.max(1) as u64
}

/// A fixed sequence of normal tokens (xorshift over the vocabulary, skipping special ones).
fn tokens(m: &Model<'_>, n: usize) -> Vec<u32> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let vocab = m.config.n_vocab as u64;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let id = (x % vocab) as u32;
        if m.tokenizer.kind(id) == Some(TokenKind::Normal) {
            out.push(id);
        }
    }
    out
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

pub fn main(a: Args) -> CliResult {
    if a.reps == 0 {
        return Err(CliError("repetitions (-r) must be at least 1".into()));
    }
    let kernels = load::kernels(a.model.kernels.as_deref())?;
    let pool = load::thread_pool(a.threads)?;
    let path = load::model_path(a.model.model);
    let name = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let t_open = Instant::now();
    load::with_model(path, kernels, |m| {
        let weight_bytes = weight_bytes_per_token(&m.gguf);
        let ctx = a
            .n_depth
            .checked_add(a.n_prompt.max(a.n_gen).max(1))
            .filter(|&c| c <= m.config.n_ctx_train)
            .ok_or_else(|| {
                CliError(format!(
                    "at most {} tokens per test, depth included, for this model",
                    m.config.n_ctx_train
                ))
            })?;
        let kv_type = ember_runtime::kv::KvType::from_name(&a.kv_type).ok_or_else(|| {
            CliError(format!(
                "unknown KV cache type '{}' (choose from: f16, f32, q8_0)",
                a.kv_type
            ))
        })?;
        // The cache holds each test whole, depth included (no sinks, no wrap): pp N is one batch
        // of N; the depth goes in batches of up to 512 (or N).
        let sc = SessionConfig {
            n_ctx: ctx,
            n_batch: a.n_prompt.max(a.n_depth.min(DEPTH_BATCH)).max(1),
            sinks: 0,
            kv_type,
        };
        let mut mem =
            ember_runtime::arena::try_zeroed(Session::plan(m, &sc)?.total, "session memory")?;
        let mut arena = Arena::new(&mut mem);
        let mut s = Session::new(m, &mut arena, &sc)?;
        s.set_parallel(&pool);
        // From opening the file to a session ready for its first token (mmap, parse, tokenizer
        // tables, buffers).
        let load_ms = t_open.elapsed().as_secs_f64() * 1e3;
        let threads = s.threads();
        let toks = tokens(m, ctx);
        let (depth, toks) = toks.split_at(a.n_depth);
        // Each repetition's start: an empty cache, then the depth (untimed).
        let start = |s: &mut Session<'_, '_>| -> CliResult {
            s.reset();
            for part in depth.chunks(sc.n_batch) {
                s.eval(part)?;
            }
            Ok(())
        };
        let at = if a.n_depth > 0 {
            format!(" @ d{}", a.n_depth)
        } else {
            String::new()
        };
        let mut results = Vec::new();
        outln!("model open to first-token ready: {load_ms:.1} ms\n")?;
        outln!("| model | threads | kernels | test | tokens/s |")?;
        outln!("|---|---|---|---|---|")?;
        if a.n_prompt > 0 {
            let mut runs = Vec::new();
            for rep in 0..=a.reps {
                start(&mut s)?;
                let t0 = Instant::now();
                s.eval(&toks[..a.n_prompt])?;
                let dt = t0.elapsed().as_secs_f64();
                if rep > 0 {
                    runs.push(a.n_prompt as f64 / dt);
                }
            }
            let (mean, sd) = mean_sd(&runs);
            outln!(
                "| {name} | {threads} | {} | pp{}{at} | {mean:.2} ± {sd:.2} |",
                m.kernels.name(),
                a.n_prompt
            )?;
            results.push(("pp", mean, sd));
        }
        if a.n_gen > 0 {
            let mut runs = Vec::new();
            for rep in 0..=a.reps {
                start(&mut s)?;
                let t0 = Instant::now();
                for &t in &toks[..a.n_gen] {
                    s.eval(&[t])?;
                }
                let dt = t0.elapsed().as_secs_f64();
                if rep > 0 {
                    runs.push(a.n_gen as f64 / dt);
                }
            }
            let (mean, sd) = mean_sd(&runs);
            outln!(
                "| {name} | {threads} | {} | tg{}{at} | {mean:.2} ± {sd:.2} |",
                m.kernels.name(),
                a.n_gen
            )?;
            results.push(("tg", mean, sd));
        }
        let passes = pool.passes();
        if passes.fewer > 0 {
            outln!(
                "\nthe CPUs were busy: {} of {} forward passes ran on fewer than {threads} \
                 threads (the pool times passes and takes fewer threads when more are not faster)",
                passes.fewer,
                passes.all
            )?;
        }
        let mut bound = None;
        let cache_bytes = cache_bytes_per_token(&m.config, kv_type, a.n_depth, a.n_gen);
        if a.n_gen > 0 && !a.no_bandwidth {
            let bw = bandwidth(threads)?;
            let tg = results.last().map_or(0.0, |r| r.1);
            let bytes = (weight_bytes + cache_bytes) as f64;
            let used = tg * bytes / 1e9;
            outln!(
                "\nmemory bandwidth ({threads} thread(s), streaming read): {bw:.1} GB/s; a \
                 decoded token reads {:.1} MB of weights and {:.1} MB of cache, so at most {:.0} \
                 tokens/s; tg reads {used:.1} GB/s = {:.0}% of the bandwidth",
                weight_bytes as f64 / 1e6,
                cache_bytes as f64 / 1e6,
                bw * 1e9 / bytes,
                100.0 * used / bw
            )?;
            bound = Some((bw, used / bw));
        }
        if a.json {
            let mut o = serde_json::Map::new();
            for (k, mean, sd) in &results {
                o.insert(format!("{k}_tokens_per_s"), serde_json::json!(mean));
                o.insert(format!("{k}_stddev"), serde_json::json!(sd));
            }
            o.insert("n_prompt".into(), serde_json::json!(a.n_prompt));
            o.insert("n_gen".into(), serde_json::json!(a.n_gen));
            o.insert("n_depth".into(), serde_json::json!(a.n_depth));
            o.insert("repetitions".into(), serde_json::json!(a.reps));
            o.insert("threads".into(), serde_json::json!(threads));
            o.insert("passes".into(), serde_json::json!(passes.all));
            o.insert(
                "passes_on_fewer_threads".into(),
                serde_json::json!(passes.fewer),
            );
            o.insert("kernels".into(), serde_json::json!(m.kernels.name()));
            o.insert("model".into(), serde_json::json!(name));
            o.insert("load_ms".into(), serde_json::json!(load_ms));
            o.insert(
                "weight_bytes_per_token".into(),
                serde_json::json!(weight_bytes),
            );
            if a.n_gen > 0 {
                o.insert(
                    "cache_bytes_per_token".into(),
                    serde_json::json!(cache_bytes),
                );
            }
            if let Some((bw, share)) = bound {
                o.insert("bandwidth_gb_per_s".into(), serde_json::json!(bw));
                o.insert("tg_share_of_bandwidth".into(), serde_json::json!(share));
            }
            outln!("{}", serde_json::Value::Object(o))?;
        }
        Ok(())
    })
}
