//! Hyperparameters from the GGUF metadata (`{arch}.*` keys, see [`super::arch`]), checked for
//! sense.

use super::arch::{Arch, ArchId};
use crate::error::{Error, Name, Result};
use crate::gguf::{keys, Gguf};
use crate::kernels::attend::MAX_HEAD_DIM;
use crate::kv::{KvShape, LayerSet};

/// The shape of a model.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Config {
    /// The architecture (its options are [`Config::arch`]).
    pub arch_id: ArchId,
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
    /// Width of one head (`attention.key_length`, else `n_embd / n_head`).
    pub head_dim: usize,
    /// Dimensions rotated by RoPE (the first `rope_dim` of each head).
    pub rope_dim: usize,
    /// RoPE frequency base.
    pub rope_base: f32,
    /// RoPE position scale (1 / the linear scaling factor; 1 without scaling).
    pub rope_scale: f32,
    /// RoPE frequency base of the sliding-window layers.
    pub rope_base_local: f32,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// Context length the model was trained for.
    pub n_ctx_train: usize,
    /// Vocabulary size (rows of the embedding).
    pub n_vocab: usize,
    /// Positions a sliding-window layer's query sees (itself included); 0 without windows.
    pub window: usize,
    /// The sliding-window layers.
    pub windowed: LayerSet,
    /// Scale of the attention scores (or of the queries, see [`Arch::scale_queries`]).
    pub attn_scale: f32,
    /// Final logits become `cap · tanh(logit / cap)`; 0 for none.
    pub logit_softcap: f32,
    /// Whether some weight matrix is of a format multiplied with Q8_K activations (the
    /// 256-element block formats): the forward state then holds them too.
    pub k_acts: bool,
}

/// Largest dimensions accepted (far above the small models ember targets; they bound buffers).
pub mod limits {
    /// Residual and feed-forward widths.
    pub const MAX_WIDTH: usize = 1 << 16;
    /// Transformer blocks.
    pub const MAX_LAYERS: usize = crate::kv::MAX_LAYERS;
    /// Attention heads.
    pub const MAX_HEADS: usize = 1024;
    /// Vocabulary size.
    pub const MAX_VOCAB: usize = 1 << 20;
    /// Training context.
    pub const MAX_CTX: usize = 1 << 24;
}

impl Config {
    /// The architecture's options.
    pub fn arch(&self) -> &'static Arch {
        Arch::of(self.arch_id)
    }

    /// The key/value width: `n_head_kv * head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    /// The query width: `n_head * head_dim` (not always `n_embd`).
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// The window of layer `l`'s attention (`None`: the whole context).
    pub fn layer_window(&self, l: usize) -> Option<usize> {
        (self.window > 0 && self.windowed.contains(l)).then_some(self.window)
    }

    /// The RoPE base of layer `l`.
    pub fn layer_rope_base(&self, l: usize) -> f32 {
        if self.layer_window(l).is_some() {
            self.rope_base_local
        } else {
            self.rope_base
        }
    }

    /// What the KV cache needs to know of the model.
    pub fn kv_shape(&self) -> KvShape {
        KvShape {
            n_layer: self.n_layer,
            n_head_kv: self.n_head_kv,
            head_dim: self.head_dim,
            max_ctx: self.n_ctx_train,
            window: self.window,
            windowed: self.windowed,
        }
    }

    /// Reads and checks the hyperparameters of a GGUF of a supported architecture.
    pub fn from_gguf(g: &Gguf<'_>) -> Result<Self> {
        let name = g
            .get_str(keys::ARCHITECTURE)?
            .ok_or(Error::MissingKey(keys::ARCHITECTURE))?;
        let arch = Arch::by_name(name).ok_or(Error::UnsupportedArchitecture(Name::new(name)))?;
        let k = &arch.keys;
        fn req(g: &Gguf<'_>, key: &'static str, max: usize) -> Result<usize> {
            let v = g.get_u64(key)?.ok_or(Error::MissingKey(key))?;
            opt_in(key, v, max)
        }
        fn opt_in(key: &'static str, v: u64, max: usize) -> Result<usize> {
            if v == 0 || v > max as u64 {
                return Err(Error::BadKey {
                    key,
                    reason: "zero or beyond ember's limits",
                });
            }
            Ok(v as usize)
        }
        let n_layer = req(g, k.block_count, limits::MAX_LAYERS)?;
        let n_embd = req(g, k.embedding_length, limits::MAX_WIDTH)?;
        let n_ff = req(g, k.feed_forward_length, limits::MAX_WIDTH)?;
        let n_head = req(g, k.head_count, limits::MAX_HEADS)?;
        let n_head_kv = match g.get_u64(k.head_count_kv)? {
            None => n_head,
            Some(v) => opt_in(k.head_count_kv, v, limits::MAX_HEADS)?,
        };
        let n_ctx_train = req(g, k.context_length, limits::MAX_CTX)?;
        if n_head % n_head_kv != 0 {
            return Err(Error::BadKey {
                key: k.head_count_kv,
                reason: "does not divide head_count",
            });
        }
        let head_dim = match g.get_u64(k.key_length)? {
            Some(v) => opt_in(k.key_length, v, MAX_HEAD_DIM)?,
            None => {
                if n_embd % n_head != 0 {
                    return Err(Error::BadKey {
                        key: k.head_count,
                        reason: "does not divide embedding_length (and no key_length is given)",
                    });
                }
                n_embd / n_head
            }
        };
        if head_dim > MAX_HEAD_DIM {
            return Err(Error::BadKey {
                key: k.head_count,
                reason: "heads wider than 512 are not supported",
            });
        }
        if let Some(v) = g.get_u64(k.value_length)? {
            if v != head_dim as u64 {
                return Err(Error::BadKey {
                    key: k.value_length,
                    reason: "differs from the key width (value heads of another width are not supported)",
                });
            }
        }
        let rope_dim = match g.get_u64(k.rope_dimension_count)? {
            None => head_dim,
            Some(d) => d as usize,
        };
        if rope_dim == 0 || rope_dim > head_dim || rope_dim % 2 != 0 {
            return Err(Error::BadKey {
                key: k.rope_dimension_count,
                reason: "must be even, non-zero and at most the head width",
            });
        }
        let base = |key: &'static str, default: f32| -> Result<f32> {
            let b = g.get_f32(key)?.unwrap_or(default);
            if !(b.is_finite() && b > 1.0) {
                return Err(Error::BadKey {
                    key,
                    reason: "must be a number above 1",
                });
            }
            Ok(b)
        };
        let rope_base = base(k.rope_freq_base, 10000.0)?;
        let factor = match g.get_f32(k.rope_scaling_factor)? {
            None => 1.0,
            Some(f) if f.is_finite() && f > 0.0 => f,
            Some(_) => {
                return Err(Error::BadKey {
                    key: k.rope_scaling_factor,
                    reason: "must be a finite number above 0",
                })
            }
        };
        let rope_scale = match g.get_str(k.rope_scaling_type)? {
            None | Some("none") => 1.0,
            Some("linear") => 1.0 / factor,
            Some(_) => {
                return Err(Error::BadKey {
                    key: k.rope_scaling_type,
                    reason: "only 'none' and 'linear' RoPE scaling are supported",
                })
            }
        };
        let rms_eps = g.get_f32(k.rms_eps)?.unwrap_or(arch.default_rms_eps);
        if !(rms_eps.is_finite() && (0.0..1.0).contains(&rms_eps)) {
            return Err(Error::BadKey {
                key: k.rms_eps,
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
        if let Some(v) = g.get_u64(k.vocab_size)? {
            if v != n_vocab as u64 {
                return Err(Error::BadKey {
                    key: k.vocab_size,
                    reason: "contradicts the number of tokens in tokenizer.ggml.tokens",
                });
            }
        }

        // Sliding windows: only for architectures that have them, and only when the file gives
        // a window (as llama.cpp decides).
        let (mut window, mut windowed, mut rope_base_local) = (0, LayerSet::EMPTY, rope_base);
        if let Some(rule) = arch.windows {
            if let Some(w) = g.get_u64(k.sliding_window)? {
                if w > 0 {
                    window = w.min(limits::MAX_CTX as u64) as usize;
                    windowed =
                        window_layers(g, k.sliding_window_pattern, n_layer, rule.default_pattern)?;
                    rope_base_local = base(k.rope_freq_base_swa, rule.default_local_base)?;
                }
            }
        }
        let logit_softcap = match g.get_f32(k.final_logit_softcapping)? {
            None => 0.0,
            Some(c) if c.is_finite() && c >= 0.0 => c,
            Some(_) => {
                return Err(Error::BadKey {
                    key: k.final_logit_softcapping,
                    reason: "must be a finite number, at least 0",
                })
            }
        };
        // Gemma 3 27B scales by the residual width per head, every other size by the head width
        // (the reference implementation's query_pre_attn_scalar, as llama.cpp reads it).
        let scale_width = if arch.id == ArchId::Gemma3 && n_layer == 62 {
            n_embd / n_head
        } else {
            head_dim
        };
        let attn_scale = 1.0 / libm::sqrtf(scale_width as f32);
        Ok(Config {
            arch_id: arch.id,
            n_layer,
            n_embd,
            n_ff,
            n_head,
            n_head_kv,
            head_dim,
            rope_dim,
            rope_base,
            rope_scale,
            rope_base_local,
            rms_eps,
            n_ctx_train,
            n_vocab,
            window,
            windowed,
            attn_scale,
            logit_softcap,
            k_acts: g.tensors().any(|t| {
                crate::weights::block_type(t.ty)
                    .is_some_and(|b| b.acts == crate::weights::quants::Acts::Q8K)
            }),
        })
    }
}

/// The windowed layers: `pattern` as a per-layer bool array, or as n (every n-th layer global,
/// the others windowed), else `default` as n.
fn window_layers(
    g: &Gguf<'_>,
    key: &'static str,
    n_layer: usize,
    default: usize,
) -> Result<LayerSet> {
    let mut set = LayerSet::EMPTY;
    let bad = |reason| Error::BadKey { key, reason };
    if let Some(v) = g.get(key) {
        if let Some(a) = v.as_array() {
            if a.len() != n_layer {
                return Err(bad("the per-layer array's length differs from block_count"));
            }
            for l in 0..n_layer {
                match a.get_fixed(l).and_then(|v| v.as_bool()) {
                    Some(true) => set.insert(l),
                    Some(false) => {}
                    None => return Err(bad("not a bool array")),
                }
            }
            return Ok(set);
        }
    }
    let n = match g.get_u64(key)? {
        Some(n) => n as usize,
        None => default,
    };
    for l in 0..n_layer {
        // n = 0: every layer windowed; else the last of every n is global.
        if n == 0 || l % n < n - 1 {
            set.insert(l);
        }
    }
    Ok(set)
}
