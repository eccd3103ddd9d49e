//! Choosing the next token from the logits.
//!
//! The chain, in order (each step off at its default):
//! 1. penalties over the last `repeat_last_n` tokens: repetition (a seen token's logit is divided
//!    by `repeat_penalty` when positive, multiplied when negative), frequency (minus
//!    `frequency_penalty` × count) and presence (minus `presence_penalty` once);
//! 2. `temperature <= 0`: greedy, the highest logit (ties to the lowest id) — done;
//! 3. top-k: keep the `top_k` highest logits (0 = all);
//! 4. top-p: keep the smallest set of most likely tokens whose probabilities (softmax at
//!    temperature 1) sum to at least `top_p`;
//! 5. min-p: keep tokens whose probability is at least `min_p` × the top one's;
//! 6. temperature: softmax of logits / `temperature` over what is left, then one draw from a
//!    seeded xoshiro256** generator (same seed, same text on the same machine).
//!
//! `top_k = 1` is greedy. Everything works in buffers sized once for the vocabulary: no
//! allocation per token.

use crate::arena::Arena;
use crate::error::{Error, Result};
use crate::kernels::scalar::exp;
use crate::tokenizer::TokenId;

/// The highest logit's token; ties go to the lowest id. NaN logits never win.
pub fn argmax(logits: &[f32]) -> TokenId {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best as TokenId
}

/// Sampling settings. The defaults are greedy decoding.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SamplerConfig {
    /// Softmax temperature; 0 (or below) is greedy.
    pub temperature: f32,
    /// Keep this many most likely tokens (0 = no limit).
    pub top_k: usize,
    /// Nucleus: keep the most likely tokens up to this cumulative probability (1 = off).
    pub top_p: f32,
    /// Keep tokens at least this fraction as likely as the most likely one (0 = off).
    pub min_p: f32,
    /// Repetition penalty (1 = off).
    pub repeat_penalty: f32,
    /// How many past tokens the penalties look at.
    pub repeat_last_n: usize,
    /// Subtracted once per past occurrence (0 = off).
    pub frequency_penalty: f32,
    /// Subtracted once if the token occurred at all (0 = off).
    pub presence_penalty: f32,
    /// Random seed.
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.0,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            seed: 0x5eed,
        }
    }
}

impl SamplerConfig {
    /// Checks every field for sense.
    pub fn validate(&self) -> Result<()> {
        let finite = [
            self.temperature,
            self.top_p,
            self.min_p,
            self.repeat_penalty,
            self.frequency_penalty,
            self.presence_penalty,
        ];
        if finite.iter().any(|v| !v.is_finite()) {
            return Err(Error::InvalidArgument(
                "sampling parameters must be finite numbers",
            ));
        }
        if self.temperature < 0.0 {
            return Err(Error::InvalidArgument(
                "the temperature must be 0 (greedy) or above",
            ));
        }
        if !(0.0..=1.0).contains(&self.top_p) || self.top_p == 0.0 {
            return Err(Error::InvalidArgument("top-p must be in (0, 1]"));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(Error::InvalidArgument("min-p must be in [0, 1]"));
        }
        if self.repeat_penalty <= 0.0 {
            return Err(Error::InvalidArgument(
                "the repetition penalty must be above 0",
            ));
        }
        if self.repeat_last_n > MAX_PENALTY_WINDOW {
            return Err(Error::InvalidArgument(
                "repeat-last-n is limited to 8192 tokens",
            ));
        }
        Ok(())
    }
}

/// Largest penalty window.
pub const MAX_PENALTY_WINDOW: usize = 8192;

/// xoshiro256** seeded through splitmix64: small, fast, and the same sequence everywhere.
#[derive(Clone, Debug)]
pub struct Rng([u64; 4]);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            x ^ (x >> 31)
        };
        Rng([next(), next(), next(), next()])
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let out = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }

    /// Uniform in [0, 1).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// A sampler with its buffers, for one vocabulary.
pub struct Sampler<'a> {
    cfg: SamplerConfig,
    rng: Rng,
    /// Penalized logits, then probabilities, `[n_vocab]`.
    work: &'a mut [f32],
    /// Candidate ids, `[n_vocab]`.
    ids: &'a mut [u32],
    /// The last `repeat_last_n` accepted tokens (a ring).
    history: &'a mut [u32],
    hist_len: usize,
    hist_next: usize,
}

impl<'a> Sampler<'a> {
    /// Arena bytes for a vocabulary of `n_vocab` and `cfg`'s penalty window.
    pub fn bytes_needed(n_vocab: usize, cfg: &SamplerConfig) -> usize {
        Arena::size_of::<f32>(n_vocab)
            + Arena::size_of::<u32>(n_vocab)
            + Arena::size_of::<u32>(cfg.repeat_last_n.max(1))
    }

    /// A sampler in `arena`.
    pub fn new(arena: &mut Arena<'a>, n_vocab: usize, cfg: SamplerConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Sampler {
            cfg,
            rng: Rng::new(cfg.seed),
            work: arena.alloc(n_vocab, "sampler")?,
            ids: arena.alloc(n_vocab, "sampler")?,
            history: arena.alloc(cfg.repeat_last_n.max(1), "sampler history")?,
            hist_len: 0,
            hist_next: 0,
        })
    }

    /// The settings.
    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    /// Changes the temperature (0 = greedy).
    pub fn set_temperature(&mut self, t: f32) -> Result<()> {
        if !t.is_finite() {
            return Err(Error::InvalidArgument(
                "the temperature must be a finite number",
            ));
        }
        self.cfg.temperature = t;
        Ok(())
    }

    /// Takes new settings (and resets): the penalty window must fit the one this sampler was
    /// made for.
    pub fn reconfigure(&mut self, cfg: SamplerConfig) -> Result<()> {
        cfg.validate()?;
        if cfg.repeat_last_n > self.history.len() {
            return Err(Error::Capacity {
                what: "sampler penalty window",
                needed: cfg.repeat_last_n as u64,
                available: self.history.len() as u64,
            });
        }
        self.cfg = cfg;
        self.reset();
        Ok(())
    }

    /// Forgets the penalty history and restarts the random sequence.
    pub fn reset(&mut self) {
        self.hist_len = 0;
        self.hist_next = 0;
        self.rng = Rng::new(self.cfg.seed);
    }

    /// Records a token as part of the context (prompt or generated) for the penalties.
    pub fn accept(&mut self, id: TokenId) {
        if self.cfg.repeat_last_n == 0 {
            return;
        }
        self.history[self.hist_next] = id;
        self.hist_next = (self.hist_next + 1) % self.cfg.repeat_last_n;
        self.hist_len = (self.hist_len + 1).min(self.cfg.repeat_last_n);
    }

    /// How many of the most likely tokens (after the penalties) a draw can reach: 1 when
    /// greedy, `top_k` when set, `None` when every token can be drawn.
    pub fn reach(&self) -> Option<usize> {
        let c = &self.cfg;
        if c.temperature <= 0.0 || c.top_k == 1 {
            Some(1)
        } else if c.top_k > 0 {
            Some(c.top_k)
        } else {
            None
        }
    }

    /// `logits` after the penalties: the values [`Sampler::sample`] ranks (in its own buffer;
    /// nothing is drawn or remembered).
    pub fn penalized(&mut self, logits: &[f32]) -> &[f32] {
        let n = logits.len().min(self.work.len());
        self.work[..n].copy_from_slice(&logits[..n]);
        self.apply_penalties(n);
        &self.work[..n]
    }

    /// Chooses the next token from `logits` (length = the vocabulary).
    pub fn sample(&mut self, logits: &[f32]) -> TokenId {
        let n = logits.len().min(self.work.len());
        let work = &mut self.work[..n];
        work.copy_from_slice(&logits[..n]);
        self.apply_penalties(n);
        let c = self.cfg;
        let work = &mut self.work[..n];
        if c.temperature <= 0.0 || c.top_k == 1 {
            return argmax(work);
        }
        // Candidates, most likely first (ties: lower id first). NaN logits sort last.
        let ids = &mut self.ids[..n];
        for (i, id) in ids.iter_mut().enumerate() {
            *id = i as u32;
        }
        let key = |w: &[f32], a: u32, b: u32| {
            let (x, y) = (w[a as usize], w[b as usize]);
            y.partial_cmp(&x)
                .unwrap_or_else(|| x.is_nan().cmp(&y.is_nan()))
                .then(a.cmp(&b))
        };
        let mut k = if c.top_k == 0 { n } else { c.top_k.min(n) };
        if k < n {
            ids.select_nth_unstable_by(k - 1, |&a, &b| key(work, a, b));
        }
        ids[..k].sort_unstable_by(|&a, &b| key(work, a, b));
        let ids = &ids[..k];

        // Probabilities at temperature 1 for top-p and min-p.
        let max = work[ids[0] as usize];
        if !max.is_finite() {
            return ids[0];
        }
        let mut sum = 0.0f32;
        for &id in ids {
            sum += exp(work[id as usize] - max);
        }
        if c.top_p < 1.0 {
            let mut cum = 0.0f32;
            for (i, &id) in ids.iter().enumerate() {
                cum += exp(work[id as usize] - max) / sum;
                if cum >= c.top_p {
                    k = i + 1;
                    break;
                }
            }
        }
        if c.min_p > 0.0 {
            // p_i / p_max = e^(l_i − max).
            let keep = ids[..k]
                .iter()
                .take_while(|&&id| exp(work[id as usize] - max) >= c.min_p)
                .count();
            k = keep.max(1);
        }
        let ids = &ids[..k];

        // Temperature, then one draw.
        let inv_t = 1.0 / c.temperature;
        let mut total = 0.0f32;
        for &id in ids {
            total += exp((work[id as usize] - max) * inv_t);
        }
        let mut r = self.rng.next_f32() * total;
        for &id in ids {
            r -= exp((work[id as usize] - max) * inv_t);
            if r < 0.0 {
                return id;
            }
        }
        ids[k - 1]
    }

    fn apply_penalties(&mut self, n: usize) {
        let c = self.cfg;
        if self.hist_len == 0
            || (c.repeat_penalty == 1.0 && c.frequency_penalty == 0.0 && c.presence_penalty == 0.0)
        {
            return;
        }
        let hist = &self.history[..self.hist_len];
        // Count occurrences in the id buffer (free until candidates are listed), touching only
        // the ids in the window: O(window), not O(window²).
        let counts = &mut self.ids[..n];
        for &id in hist.iter().filter(|&&id| (id as usize) < n) {
            counts[id as usize] = 0;
        }
        for &id in hist.iter().filter(|&&id| (id as usize) < n) {
            counts[id as usize] += 1;
        }
        for &id in hist {
            let id = id as usize;
            if id >= n || counts[id] == 0 {
                continue; // each distinct token once
            }
            let count = counts[id] as f32;
            counts[id] = 0;
            let l = &mut self.work[id];
            if *l > 0.0 {
                *l /= c.repeat_penalty;
            } else {
                *l *= c.repeat_penalty;
            }
            *l -= count * c.frequency_penalty + c.presence_penalty;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_sampler<R>(n: usize, cfg: SamplerConfig, f: impl FnOnce(&mut Sampler<'_>) -> R) -> R {
        let mut mem = std::vec![0u8; Sampler::bytes_needed(n, &cfg)];
        let mut arena = Arena::new(&mut mem);
        let mut s = Sampler::new(&mut arena, n, cfg).unwrap();
        f(&mut s)
    }

    fn logits(n: usize) -> std::vec::Vec<f32> {
        (0..n).map(|i| ((i * 7919) % 1000) as f32 / 100.0).collect()
    }

    #[test]
    fn greedy_and_top_k_1_pick_the_argmax() {
        let l = logits(1000);
        let want = argmax(&l);
        for cfg in [
            SamplerConfig {
                temperature: 0.0,
                ..Default::default()
            },
            SamplerConfig {
                temperature: 1.5,
                top_k: 1,
                ..Default::default()
            },
        ] {
            with_sampler(1000, cfg, |s| {
                for _ in 0..10 {
                    assert_eq!(s.sample(&l), want);
                }
            });
        }
    }

    #[test]
    fn same_seed_same_draws_and_samples_stay_in_the_top_k() {
        let l = logits(5000);
        let cfg = SamplerConfig {
            temperature: 1.0,
            top_k: 20,
            top_p: 1.0,
            min_p: 0.0,
            seed: 42,
            ..Default::default()
        };
        let a: std::vec::Vec<u32> =
            with_sampler(5000, cfg, |s| (0..200).map(|_| s.sample(&l)).collect());
        let b: std::vec::Vec<u32> =
            with_sampler(5000, cfg, |s| (0..200).map(|_| s.sample(&l)).collect());
        assert_eq!(a, b);
        let mut sorted: std::vec::Vec<(f32, u32)> =
            l.iter().enumerate().map(|(i, &v)| (v, i as u32)).collect();
        sorted.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
        let top: std::vec::Vec<u32> = sorted[..20].iter().map(|x| x.1).collect();
        assert!(a.iter().all(|id| top.contains(id)));
        assert!(
            a.iter().collect::<std::collections::BTreeSet<_>>().len() > 3,
            "a real distribution"
        );
        let c: std::vec::Vec<u32> = with_sampler(5000, SamplerConfig { seed: 43, ..cfg }, |s| {
            (0..200).map(|_| s.sample(&l)).collect()
        });
        assert_ne!(a, c);
    }

    #[test]
    fn top_p_and_min_p_cut_the_tail() {
        // One dominant token: a small top-p or a large min-p leaves only it.
        let mut l = std::vec![0.0f32; 100];
        l[17] = 10.0;
        for cfg in [
            SamplerConfig {
                temperature: 1.0,
                top_k: 0,
                top_p: 0.5,
                min_p: 0.0,
                ..Default::default()
            },
            SamplerConfig {
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
                min_p: 0.5,
                ..Default::default()
            },
        ] {
            with_sampler(100, cfg, |s| {
                for _ in 0..50 {
                    assert_eq!(s.sample(&l), 17);
                }
            });
        }
    }

    #[test]
    fn repetition_penalty_moves_away_from_seen_tokens() {
        let mut l = std::vec![0.0f32; 10];
        l[3] = 2.0;
        l[4] = 1.9;
        let cfg = SamplerConfig {
            repeat_penalty: 1.3,
            repeat_last_n: 4,
            ..Default::default()
        };
        with_sampler(10, cfg, |s| {
            assert_eq!(s.sample(&l), 3);
            s.accept(3);
            assert_eq!(s.sample(&l), 4, "2.0/1.3 < 1.9");
            for _ in 0..4 {
                s.accept(7);
            }
            assert_eq!(s.sample(&l), 3, "3 left the window");
        });
    }

    #[test]
    fn nan_and_infinite_logits_never_break_it() {
        let mut l = logits(300);
        l[5] = f32::NAN;
        l[6] = f32::INFINITY;
        l[7] = f32::NEG_INFINITY;
        for t in [0.0, 0.7] {
            with_sampler(
                300,
                SamplerConfig {
                    temperature: t,
                    top_k: 0,
                    ..Default::default()
                },
                |s| {
                    let id = s.sample(&l);
                    assert!((id as usize) < 300);
                },
            );
        }
    }

    #[test]
    fn bad_settings_are_refused() {
        for cfg in [
            SamplerConfig {
                top_p: 0.0,
                ..Default::default()
            },
            SamplerConfig {
                top_p: 1.5,
                ..Default::default()
            },
            SamplerConfig {
                min_p: -0.1,
                ..Default::default()
            },
            SamplerConfig {
                repeat_penalty: 0.0,
                ..Default::default()
            },
            SamplerConfig {
                temperature: f32::NAN,
                ..Default::default()
            },
            SamplerConfig {
                repeat_last_n: 1 << 20,
                ..Default::default()
            },
        ] {
            assert!(cfg.validate().is_err(), "{cfg:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// Any logits and settings: the token drawn is in the top-k set, inside the top-p
        /// nucleus, above the min-p floor; temperature 0 is the argmax; the same seed draws the
        /// same tokens.
        #[test]
        fn samples_stay_inside_the_filters(
            logits in proptest::collection::vec(-20.0f32..20.0, 1..300),
            top_k in 0usize..50,
            top_p in 0.01f32..=1.0,
            min_p in 0.0f32..0.5,
            temperature in 0.0f32..3.0,
            seed in proptest::prelude::any::<u64>(),
        ) {
            let n = logits.len();
            let cfg = SamplerConfig { temperature, top_k, top_p, min_p, seed, ..SamplerConfig::default() };
            let mut mem = std::vec![0u8; Sampler::bytes_needed(n, &cfg)];
            let mut arena = Arena::new(&mut mem);
            let mut s = Sampler::new(&mut arena, n, cfg).unwrap();
            let draws: std::vec::Vec<TokenId> = (0..16).map(|_| s.sample(&logits)).collect();
            // Ranked: highest logit first, ties by lower id.
            let mut order: std::vec::Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &b| logits[b].partial_cmp(&logits[a]).unwrap().then(a.cmp(&b)));
            if temperature == 0.0 || top_k == 1 {
                proptest::prop_assert!(draws.iter().all(|&t| t == argmax(&logits)));
                proptest::prop_assert_eq!(argmax(&logits) as usize, order[0]);
            } else {
                let k = if top_k == 0 { n } else { top_k.min(n) };
                let max = logits[order[0]];
                let sum: f64 = order[..k].iter().map(|&i| ((logits[i] - max) as f64).exp()).sum();
                for &t in &draws {
                    let rank = order.iter().position(|&i| i == t as usize).unwrap();
                    proptest::prop_assert!(rank < k, "rank {} outside top-k {}", rank, k);
                    let before: f64 = order[..rank].iter().map(|&i| ((logits[i] - max) as f64).exp() / sum).sum();
                    proptest::prop_assert!(before < top_p as f64 + 1e-4, "mass before {} ≥ top-p {}", before, top_p);
                    let rel = ((logits[t as usize] - max) as f64).exp();
                    proptest::prop_assert!(rank == 0 || rel >= min_p as f64 - 1e-6, "below min-p");
                }
            }
            // Seeded repeatability.
            let mut mem2 = std::vec![0u8; Sampler::bytes_needed(n, &cfg)];
            let mut arena2 = Arena::new(&mut mem2);
            let mut s2 = Sampler::new(&mut arena2, n, cfg).unwrap();
            let again: std::vec::Vec<TokenId> = (0..16).map(|_| s2.sample(&logits)).collect();
            proptest::prop_assert_eq!(draws, again);
        }
    }
}
