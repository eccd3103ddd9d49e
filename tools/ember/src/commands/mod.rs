//! One module per subcommand.

pub mod bench;
pub mod inspect;
pub mod perplexity;
pub mod run;
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
