//! Llama hyperparameters from the GGUF metadata (`llama.*` keys), checked for sense.

use crate::error::{Error, Name, Result};
use crate::gguf::{keys, Gguf};

/// The shape of a Llama model.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Config {
    /// Transformer blocks.
    pub n_layer: usize,
    /// Residual width (`embedding_length`).
    pub n_embd: usize,
    /// Feed-forward hidden width.
    pub n_ff: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (grouped-query attention when fewer than `n_head`).
    pub n_head_kv: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Dimensions rotated by RoPE (the first `rope_dim` of each head).
    pub rope_dim: usize,
    /// RoPE frequency base.
    pub rope_base: f32,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// Context length the model was trained for.
    pub n_ctx_train: usize,
    /// Vocabulary size (rows of the embedding).
    pub n_vocab: usize,
}

/// Largest dimensions accepted (far above the small models ember targets; they bound buffers).
pub mod limits {
    /// Residual and feed-forward widths.
    pub const MAX_WIDTH: usize = 1 << 16;
    /// Transformer blocks.
    pub const MAX_LAYERS: usize = 512;
    /// Attention heads.
    pub const MAX_HEADS: usize = 1024;
    /// Vocabulary size.
    pub const MAX_VOCAB: usize = 1 << 20;
    /// Training context.
    pub const MAX_CTX: usize = 1 << 24;
}

impl Config {
    /// The key/value width: `n_head_kv * head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    /// Reads and checks the hyperparameters of a `llama` GGUF.
    pub fn from_gguf(g: &Gguf<'_>) -> Result<Self> {
        let arch = g
            .get_str(keys::ARCHITECTURE)?
            .ok_or(Error::MissingKey(keys::ARCHITECTURE))?;
        if arch != "llama" {
            return Err(Error::UnsupportedArchitecture(Name::new(arch)));
        }
        fn req(g: &Gguf<'_>, key: &'static str, max: usize) -> Result<usize> {
            let v = g.get_u64(key)?.ok_or(Error::MissingKey(key))?;
            if v == 0 || v > max as u64 {
                return Err(Error::BadKey {
                    key,
                    reason: "zero or beyond ember's limits",
                });
            }
            Ok(v as usize)
        }
        let n_layer = req(g, "llama.block_count", limits::MAX_LAYERS)?;
        let n_embd = req(g, "llama.embedding_length", limits::MAX_WIDTH)?;
        let n_ff = req(g, "llama.feed_forward_length", limits::MAX_WIDTH)?;
        let n_head = req(g, "llama.attention.head_count", limits::MAX_HEADS)?;
        let n_head_kv = match g.get_u64("llama.attention.head_count_kv")? {
            None => n_head,
            Some(_) => req(g, "llama.attention.head_count_kv", limits::MAX_HEADS)?,
        };
        let n_ctx_train = req(g, "llama.context_length", limits::MAX_CTX)?;
        if n_embd % n_head != 0 {
            return Err(Error::BadKey {
                key: "llama.attention.head_count",
                reason: "does not divide embedding_length",
            });
        }
        if n_head % n_head_kv != 0 {
            return Err(Error::BadKey {
                key: "llama.attention.head_count_kv",
                reason: "does not divide head_count",
            });
        }
        let head_dim = n_embd / n_head;
        if head_dim > crate::model::forward::MAX_HEAD_DIM {
            return Err(Error::BadKey {
                key: "llama.attention.head_count",
                reason: "heads wider than 512 are not supported",
            });
        }
        let rope_dim = match g.get_u64("llama.rope.dimension_count")? {
            None => head_dim,
            Some(d) => d as usize,
        };
        if rope_dim == 0 || rope_dim > head_dim || rope_dim % 2 != 0 {
            return Err(Error::BadKey {
                key: "llama.rope.dimension_count",
                reason: "must be even, non-zero and at most the head width",
            });
        }
        let rope_base = g.get_f32("llama.rope.freq_base")?.unwrap_or(10000.0);
        if !(rope_base.is_finite() && rope_base > 1.0) {
            return Err(Error::BadKey {
                key: "llama.rope.freq_base",
                reason: "must be a number above 1",
            });
        }
        if let Some(t) = g.get_str("llama.rope.scaling.type")? {
            if t != "none" {
                return Err(Error::BadKey {
                    key: "llama.rope.scaling.type",
                    reason: "RoPE scaling is not supported",
                });
            }
        }
        let rms_eps = g
            .get_f32("llama.attention.layer_norm_rms_epsilon")?
            .unwrap_or(1e-5);
        if !(rms_eps.is_finite() && (0.0..1.0).contains(&rms_eps)) {
            return Err(Error::BadKey {
                key: "llama.attention.layer_norm_rms_epsilon",
                reason: "must be in [0, 1)",
            });
        }
        // The vocabulary is the token list (the embedding's shape is checked against it when the
        // weights are bound); a file without one falls back to the embedding's rows.
        let n_vocab = match g.get(keys::TOKENS).and_then(|v| v.as_array()) {
            Some(a) => a.len(),
            None => g
                .tensor("token_embd.weight")
                .map(|t| t.dims[1] as usize)
                .ok_or(Error::MissingTensor(Name::new("token_embd.weight")))?,
        };
        if n_vocab == 0 || n_vocab > limits::MAX_VOCAB {
            return Err(Error::BadKey {
                key: keys::TOKENS,
                reason: "vocabulary size out of range",
            });
        }
        if let Some(v) = g.get_u64("llama.vocab_size")? {
            if v != n_vocab as u64 {
                return Err(Error::BadKey {
                    key: "llama.vocab_size",
                    reason: "contradicts the number of tokens in tokenizer.ggml.tokens",
                });
            }
        }
        // Heads whose width is not embedding_length / head_count (Gemma, Qwen3) are another
        // architecture's; a llama file that says so is refused rather than misread.
        for key in ["llama.attention.key_length", "llama.attention.value_length"] {
            if let Some(v) = g.get_u64(key)? {
                if v != head_dim as u64 {
                    return Err(Error::BadKey {
                        key: if key.ends_with("key_length") {
                            "llama.attention.key_length"
                        } else {
                            "llama.attention.value_length"
                        },
                        reason: "contradicts embedding_length / head_count (other head widths are not supported)",
                    });
                }
            }
        }
        if let Some(f) = g.get_f32("llama.rope.scaling.factor")? {
            if !(f.is_finite() && f > 0.0) {
                return Err(Error::BadKey {
                    key: "llama.rope.scaling.factor",
                    reason: "must be a finite number above 0",
                });
            }
        }
        Ok(Config {
            n_layer,
            n_embd,
            n_ff,
            n_head,
            n_head_kv,
            head_dim,
            rope_dim,
            rope_base,
            rms_eps,
            n_ctx_train,
            n_vocab,
        })
    }
}
