//! One module per subcommand.

pub mod bench;
pub mod chat;
pub mod inspect;
pub mod perplexity;
pub mod run;
pub mod template;
pub mod tokenize;

use clap::Args as ClapArgs;
use std::path::PathBuf;

/// Options every model-running command takes.
#[derive(ClapArgs, Clone, Debug)]
pub struct ModelArgs {
    /// Model file (GGUF). Default: $EMBER_MODEL, then models/SmolLM2-135M-Instruct.Q4_1.gguf
    #[arg(short = 'm', long = "model", env = "EMBER_MODEL")]
    pub model: Option<PathBuf>,
    /// Kernel set: auto, avx512-vnni, avx2, scalar (also $EMBER_KERNELS)
    #[arg(long, env = "EMBER_KERNELS")]
    pub kernels: Option<String>,
}

/// Sampling flags shared by the generating commands (see `ember_runtime::sampler` for the order
/// they apply in).
#[derive(ClapArgs, Clone, Debug)]
pub struct SamplingArgs {
    /// Temperature; 0 is greedy (the default, for reproducible output).
    #[arg(long, default_value_t = 0.0)]
    pub temp: f32,
    /// Keep the K most likely tokens (0 = all; 1 = greedy).
    #[arg(long = "top-k", default_value_t = 40)]
    pub top_k: usize,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass (1 = off).
    #[arg(long = "top-p", default_value_t = 0.95)]
    pub top_p: f32,
    /// Keep tokens at least this fraction as likely as the best one (0 = off).
    #[arg(long = "min-p", default_value_t = 0.05)]
    pub min_p: f32,
    /// Repetition penalty over the last --repeat-last-n tokens (1 = off).
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Tokens the penalties look back over.
    #[arg(long = "repeat-last-n", default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Frequency penalty (0 = off).
    #[arg(long = "frequency-penalty", default_value_t = 0.0)]
    pub frequency_penalty: f32,
    /// Presence penalty (0 = off).
    #[arg(long = "presence-penalty", default_value_t = 0.0)]
    pub presence_penalty: f32,
    /// Random seed (same seed, same text on the same machine).
    #[arg(long, default_value_t = 0x5eed)]
    pub seed: u64,
    /// Stop when this text appears (repeatable); it is not printed.
    #[arg(long = "stop")]
    pub stop: Vec<String>,
}

impl SamplingArgs {
    /// The runtime's sampler settings.
    pub fn config(&self) -> ember_runtime::sampler::SamplerConfig {
        ember_runtime::sampler::SamplerConfig {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            seed: self.seed,
        }
    }
}
