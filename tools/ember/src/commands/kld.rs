//! KL divergence against a base model, in llama-perplexity's file format and protocol, so a base
//! saved by either tool can be compared with a run of the other.
//!
//! The file: `_logits_`, then as little-endian i32 `n_ctx`, `n_vocab`, `n_chunk`, the
//! `n_chunk·n_ctx` evaluated tokens, and for each chunk, for each scored position (the
//! `n_ctx − 1 − n_ctx/2` predictions of its second half), `nv = 2·⌈n_vocab/2⌉ + 4` u16 values:
//! two f32 (`scale`, `min_log_prob`), then each token's log-probability as
//! `min_log_prob + scale·u16` (log-probabilities more than 16 below the top are stored as 0).

use crate::load::CliError;
use std::io::{BufWriter, Read, Write};

const MAGIC: &[u8; 8] = b"_logits_";

/// u16 values per scored position.
pub fn values_per_position(n_vocab: usize) -> usize {
    2 * n_vocab.div_ceil(2) + 4
}

/// Positions scored per chunk of `n_ctx`.
pub fn scored_per_chunk(n_ctx: usize) -> usize {
    n_ctx - 1 - n_ctx / 2
}

/// Encodes one position's logits as llama-perplexity stores them (`out`: `nv` values).
pub fn encode(logits: &[f32], out: &mut [u16]) {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let min = logits
        .iter()
        .fold(f32::INFINITY, |m, &v| m.min(v))
        .max(max - 16.0);
    let sum_exp: f64 = logits.iter().map(|&l| ((l - max).exp()) as f64).sum();
    let log_sum_exp = sum_exp.ln() as f32;
    let min_log_prob = min - max - log_sum_exp;
    let scale = (max - min) / 65535.0;
    let (head, rest) = out.split_at_mut(4);
    let mut h = [0u8; 8];
    h[..4].copy_from_slice(&scale.to_le_bytes());
    h[4..].copy_from_slice(&min_log_prob.to_le_bytes());
    for (i, v) in head.iter_mut().enumerate() {
        *v = u16::from_le_bytes([h[2 * i], h[2 * i + 1]]);
    }
    rest.fill(0);
    if scale != 0.0 {
        let inv = 1.0 / scale;
        for (o, &l) in rest.iter_mut().zip(logits) {
            if l > min {
                *o = (inv * (l - min)).round_ties_even().clamp(0.0, 65535.0) as u16;
            }
        }
    }
}

/// Writes a base file as the chunks are evaluated.
pub struct BaseWriter {
    out: BufWriter<std::fs::File>,
    nv: usize,
    buf: Vec<u16>,
    bytes: Vec<u8>,
}

impl BaseWriter {
    /// Creates `path` with the header and the tokens of the `n_chunk` chunks.
    pub fn create(
        path: &std::path::Path,
        n_ctx: usize,
        n_vocab: usize,
        tokens: &[u32],
    ) -> Result<Self, CliError> {
        let err = |e: std::io::Error| CliError(format!("{}: {e}", path.display()));
        let f = std::fs::File::create(path).map_err(err)?;
        let mut out = BufWriter::new(f);
        let n_chunk = tokens.len() / n_ctx;
        out.write_all(MAGIC).map_err(err)?;
        for v in [n_ctx, n_vocab, n_chunk] {
            out.write_all(&(v as i32).to_le_bytes()).map_err(err)?;
        }
        for &t in tokens {
            out.write_all(&(t as i32).to_le_bytes()).map_err(err)?;
        }
        let nv = values_per_position(n_vocab);
        Ok(BaseWriter {
            out,
            nv,
            buf: vec![0; nv],
            bytes: Vec::with_capacity(2 * nv),
        })
    }

    /// Appends one scored position.
    pub fn position(&mut self, logits: &[f32]) -> std::io::Result<()> {
        encode(logits, &mut self.buf);
        self.bytes.clear();
        for v in &self.buf[..self.nv] {
            self.bytes.extend_from_slice(&v.to_le_bytes());
        }
        self.out.write_all(&self.bytes)
    }

    /// Flushes the file.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// A base file opened for reading: its header and tokens; positions are read chunk by chunk.
pub struct Base {
    file: std::io::BufReader<std::fs::File>,
    pub n_ctx: usize,
    pub tokens: Vec<u32>,
    nv: usize,
    /// One chunk's bytes, reused from chunk to chunk.
    raw: Vec<u8>,
}

impl Base {
    /// Opens `path`, checking the header against `n_vocab` and the file's length.
    pub fn open(path: &std::path::Path, n_vocab: usize) -> Result<Self, CliError> {
        let name = path.display();
        let err = |e: std::io::Error| CliError(format!("{name}: {e}"));
        let f = std::fs::File::open(path).map_err(err)?;
        let len = f.metadata().map_err(err)?.len();
        let mut file = std::io::BufReader::new(f);
        let mut head = [0u8; 20];
        file.read_exact(&mut head).map_err(|_| {
            CliError(format!(
                "{name}: too short for a log-probability file (no header)"
            ))
        })?;
        if &head[..8] != MAGIC {
            return Err(CliError(format!(
                "{name}: not a log-probability file (llama-perplexity's --kl-divergence-base format starts with '_logits_')"
            )));
        }
        let int = |i: usize| i32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let (n_ctx, vocab, n_chunk) = (int(8), int(12), int(16));
        if n_ctx < 3 || vocab <= 0 || n_chunk <= 0 {
            return Err(CliError(format!(
                "{name}: invalid header (n_ctx {n_ctx}, n_vocab {vocab}, n_chunk {n_chunk})"
            )));
        }
        let (n_ctx, vocab, n_chunk) = (n_ctx as usize, vocab as usize, n_chunk as usize);
        if vocab != n_vocab {
            return Err(CliError(format!(
                "{name}: the base was computed with a vocabulary of {vocab}, this model has {n_vocab}"
            )));
        }
        let nv = values_per_position(vocab);
        let need = (n_chunk as u128) * (n_ctx as u128) * 4
            + (n_chunk as u128) * (scored_per_chunk(n_ctx) as u128) * (nv as u128) * 2
            + 20;
        if need != len as u128 {
            return Err(CliError(format!(
                "{name}: {len} bytes, but its header (n_ctx {n_ctx}, n_vocab {vocab}, {n_chunk} chunks) needs {need}"
            )));
        }
        let mut raw = vec![0u8; n_chunk * n_ctx * 4];
        file.read_exact(&mut raw).map_err(err)?;
        let tokens: Vec<u32> = raw
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u32)
            .collect();
        if let Some(t) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(CliError(format!(
                "{name}: token {} is outside the vocabulary of {vocab}",
                *t as i32
            )));
        }
        Ok(Base {
            file,
            n_ctx,
            tokens,
            nv,
            raw: Vec::new(),
        })
    }

    /// Reads the next chunk's positions into `out` (`scored_per_chunk · nv` values).
    pub fn next_chunk(&mut self, out: &mut Vec<u16>) -> Result<(), CliError> {
        let n = scored_per_chunk(self.n_ctx) * self.nv;
        self.raw.resize(2 * n, 0);
        self.file
            .read_exact(&mut self.raw)
            .map_err(|e| CliError(format!("reading the base log-probabilities: {e}")))?;
        out.clear();
        out.extend(
            self.raw
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]])),
        );
        Ok(())
    }
}

/// Running sums of llama-perplexity's KL statistics.
#[derive(Default)]
pub struct Stats {
    sum_nll: f64,
    sum_nll2: f64,
    sum_nll_base: f64,
    sum_nll_base2: f64,
    sum_kld: f64,
    sum_kld2: f64,
    sum_p_diff2: f64,
    sum_p_diff4: f64,
    max_p_diff: f64,
    same_top: usize,
    count: usize,
    klds: Vec<f32>,
}

impl Stats {
    /// Adds one position: this run's `logits`, the base's stored `base` (nv values), the token
    /// that came next.
    pub fn add(&mut self, logits: &[f32], base: &[u16], target: usize) {
        let f = |i: usize| {
            f32::from_le_bytes({
                let (a, b) = (base[2 * i].to_le_bytes(), base[2 * i + 1].to_le_bytes());
                [a[0], a[1], b[0], b[1]]
            })
        };
        let (scale, min_log_prob) = (f(0), f(1));
        let q = &base[4..4 + logits.len()];
        let (mut imax, mut max) = (0usize, f32::NEG_INFINITY);
        for (i, &l) in logits.iter().enumerate() {
            if l > max {
                (imax, max) = (i, l);
            }
        }
        let lse = logits
            .iter()
            .map(|&l| ((l - max) as f64).exp())
            .sum::<f64>()
            .ln()
            + max as f64;
        let nll = lse - logits[target] as f64;
        let base_log = |i: usize| (scale * q[i] as f32 + min_log_prob) as f64;
        let nll_base = -base_log(target);
        let (mut kld, mut imax_base, mut best) = (0.0f64, 0usize, f64::NEG_INFINITY);
        for (i, &l) in logits.iter().enumerate() {
            let pb = base_log(i);
            if pb > best {
                (imax_base, best) = (i, pb);
            }
            if pb > -16.0 {
                kld += pb.exp() * (pb - (l as f64 - lse));
            }
        }
        self.sum_nll += nll;
        self.sum_nll2 += nll * nll;
        self.sum_nll_base += nll_base;
        self.sum_nll_base2 += nll_base * nll_base;
        self.sum_kld += kld;
        self.sum_kld2 += kld * kld;
        let p_diff = (-nll).exp() - (-nll_base).exp();
        self.sum_p_diff2 += p_diff * p_diff;
        self.sum_p_diff4 += p_diff.powi(4);
        self.max_p_diff = self.max_p_diff.max(p_diff.abs());
        self.same_top += usize::from(imax == imax_base);
        self.count += 1;
        self.klds.push(kld as f32);
    }

    /// Mean KL divergence so far.
    pub fn mean_kld(&self) -> f64 {
        self.sum_kld / self.count.max(1) as f64
    }

    /// The summary, llama-perplexity's figures and names.
    pub fn report(&mut self) -> Vec<String> {
        let n = self.count.max(1) as f64;
        let mean_unc = |s: f64, s2: f64| {
            let m = s / n;
            let v = s2 / n - m * m;
            let u = if v > 0.0 && self.count > 10 {
                (v / (n - 1.0)).sqrt()
            } else {
                0.0
            };
            (m, u)
        };
        let (lp, lpu) = mean_unc(self.sum_nll, self.sum_nll2);
        let (lb, lbu) = mean_unc(self.sum_nll_base, self.sum_nll_base2);
        let (kl, klu) = mean_unc(self.sum_kld, self.sum_kld2);
        let (mse, _) = mean_unc(self.sum_p_diff2, self.sum_p_diff4);
        let top = self.same_top as f64 / n;
        self.klds.sort_by(|a, b| a.total_cmp(b));
        let q = |p: f64| {
            let k = self.klds.len();
            if k == 0 {
                0.0
            } else {
                self.klds[((p * (k - 1) as f64).round() as usize).min(k - 1)]
            }
        };
        vec![
            format!("Mean PPL(Q)    = {:.6} ± {:.6}", lp.exp(), lp.exp() * lpu),
            format!("Mean PPL(base) = {:.6} ± {:.6}", lb.exp(), lb.exp() * lbu),
            format!("Mean ln(PPL(Q)/PPL(base)) = {:.6}", lp - lb),
            format!("Mean KLD = {kl:.6} ± {klu:.6}"),
            format!(
                "Median KLD = {:.6}, 99.0% KLD = {:.6}, max KLD = {:.6}",
                q(0.5),
                q(0.99),
                q(1.0)
            ),
            format!(
                "RMS Δp = {:.3} %, max Δp = {:.3} %",
                100.0 * mse.sqrt(),
                100.0 * self.max_p_diff
            ),
            format!(
                "Same top p = {:.3} ± {:.3} %",
                100.0 * top,
                100.0 * (top * (1.0 - top) / (n - 1.0).max(1.0)).sqrt()
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_distribution_against_its_own_encoding_has_almost_no_divergence() {
        let logits: Vec<f32> = (0..1001)
            .map(|i| ((i * 37 % 101) as f32) * 0.1 - 3.0)
            .collect();
        let mut enc = vec![0u16; values_per_position(logits.len())];
        encode(&logits, &mut enc);
        let mut s = Stats::default();
        s.add(&logits, &enc, 3);
        // Only the 16-bit storage differs: log-probabilities off by at most half a step
        // (10/65535/2), a first-order error of that size in the (unnormalised) sum.
        assert!(s.mean_kld().abs() < 1e-4, "{}", s.mean_kld());
        assert_eq!(s.same_top, 1);
        // Another distribution diverges.
        let other: Vec<f32> = logits.iter().rev().copied().collect();
        let mut t = Stats::default();
        t.add(&other, &enc, 3);
        assert!(t.mean_kld() > 0.1);
    }
}
