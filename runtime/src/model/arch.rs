//! The architectures ember runs, as one table: each row says how a model family differs from
//! Llama, and the one forward pass ([`super::forward`]) reads those options. Adding a family whose
//! differences are already options is one row here.
//!
//! | architecture | RoPE | extras |
//! |---|---|---|
//! | `llama` (Llama 2/3, SmolLM) | adjacent pairs | `rope_freqs.weight` factors (Llama 3.x) |
//! | `qwen2` | NEOX halves | Q/K/V biases |
//! | `qwen3` | NEOX halves | per-head RMSNorm of Q and K |
//! | `gemma3` | NEOX halves | Q/K norms, post-attention and post-FFN norms, embedding × √n_embd, GELU(tanh) gate, sliding-window layers, queries scaled before attention |
//!
//! Q/K/V and output biases are read wherever a file has them (as llama.cpp does for every one of
//! these families).

/// Which architecture (`general.architecture`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ArchId {
    /// `llama`.
    Llama,
    /// `qwen2`.
    Qwen2,
    /// `qwen3`.
    Qwen3,
    /// `gemma3`.
    Gemma3,
}

/// How RoPE pairs the dimensions of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeLayout {
    /// `(x[2i], x[2i+1])`: Llama's "normal" layout.
    Adjacent,
    /// `(x[i], x[i + rope_dim/2])`: GPT-NeoX's layout (Qwen, Gemma).
    Neox,
}

/// The gate activation of the feed-forward block (`down(act(gate(x)) * up(x))`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FfnAct {
    /// SiLU (SwiGLU).
    Silu,
    /// GELU, tanh approximation (GeGLU).
    GeluTanh,
}

/// Sliding-window attention layers (Gemma 3): every `pattern`-th layer attends to the whole
/// context, the others only to the last `{arch}.attention.sliding_window` positions, with their
/// own RoPE base.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowRule {
    /// Layers per global layer when the file does not say (`attention.sliding_window_pattern`).
    pub default_pattern: usize,
    /// RoPE base of the windowed layers when the file does not say (`rope.freq_base_swa`).
    pub default_local_base: f32,
}

/// The metadata keys of one architecture (`{arch}.*`), spelled out at compile time from the name
/// so that error messages can name them.
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs)]
pub struct Keys {
    pub block_count: &'static str,
    pub embedding_length: &'static str,
    pub feed_forward_length: &'static str,
    pub head_count: &'static str,
    pub head_count_kv: &'static str,
    pub key_length: &'static str,
    pub value_length: &'static str,
    pub context_length: &'static str,
    pub rope_dimension_count: &'static str,
    pub rope_freq_base: &'static str,
    pub rope_freq_base_swa: &'static str,
    pub rope_scaling_type: &'static str,
    pub rope_scaling_factor: &'static str,
    pub rms_eps: &'static str,
    pub vocab_size: &'static str,
    pub sliding_window: &'static str,
    pub sliding_window_pattern: &'static str,
    pub final_logit_softcapping: &'static str,
}

macro_rules! keys {
    ($a:literal) => {
        Keys {
            block_count: concat!($a, ".block_count"),
            embedding_length: concat!($a, ".embedding_length"),
            feed_forward_length: concat!($a, ".feed_forward_length"),
            head_count: concat!($a, ".attention.head_count"),
            head_count_kv: concat!($a, ".attention.head_count_kv"),
            key_length: concat!($a, ".attention.key_length"),
            value_length: concat!($a, ".attention.value_length"),
            context_length: concat!($a, ".context_length"),
            rope_dimension_count: concat!($a, ".rope.dimension_count"),
            rope_freq_base: concat!($a, ".rope.freq_base"),
            rope_freq_base_swa: concat!($a, ".rope.freq_base_swa"),
            rope_scaling_type: concat!($a, ".rope.scaling.type"),
            rope_scaling_factor: concat!($a, ".rope.scaling.factor"),
            rms_eps: concat!($a, ".attention.layer_norm_rms_epsilon"),
            vocab_size: concat!($a, ".vocab_size"),
            sliding_window: concat!($a, ".attention.sliding_window"),
            sliding_window_pattern: concat!($a, ".attention.sliding_window_pattern"),
            final_logit_softcapping: concat!($a, ".final_logit_softcapping"),
        }
    };
}

/// One architecture: its name, keys and its differences from Llama.
#[derive(Clone, Copy, Debug)]
pub struct Arch {
    /// Identifier.
    pub id: ArchId,
    /// `general.architecture`.
    pub name: &'static str,
    /// Metadata keys.
    pub keys: Keys,
    /// RoPE pairing.
    pub rope: RopeLayout,
    /// Per-head RMSNorm of queries and keys before RoPE (`attn_q_norm`, `attn_k_norm`).
    pub qk_norm: bool,
    /// RMSNorm of the attention and feed-forward outputs before each residual add
    /// (`post_attention_norm`, `post_ffw_norm`).
    pub post_norms: bool,
    /// The embedding is multiplied by √n_embd.
    pub embd_scale: bool,
    /// Feed-forward gate activation.
    pub ffn: FfnAct,
    /// Sliding-window layers, when the file gives a window.
    pub windows: Option<WindowRule>,
    /// Queries are multiplied by the attention scale before attention (which then scales by 1),
    /// rather than the scores after it.
    pub scale_queries: bool,
    /// RMSNorm epsilon when the file does not give one.
    pub default_rms_eps: f32,
}

/// Every architecture ember runs.
pub const ARCHS: &[Arch] = &[
    Arch {
        id: ArchId::Llama,
        name: "llama",
        keys: keys!("llama"),
        rope: RopeLayout::Adjacent,
        qk_norm: false,
        post_norms: false,
        embd_scale: false,
        ffn: FfnAct::Silu,
        windows: None,
        scale_queries: false,
        default_rms_eps: 1e-5,
    },
    Arch {
        id: ArchId::Qwen2,
        name: "qwen2",
        keys: keys!("qwen2"),
        rope: RopeLayout::Neox,
        qk_norm: false,
        post_norms: false,
        embd_scale: false,
        ffn: FfnAct::Silu,
        windows: None,
        scale_queries: false,
        default_rms_eps: 1e-6,
    },
    Arch {
        id: ArchId::Qwen3,
        name: "qwen3",
        keys: keys!("qwen3"),
        rope: RopeLayout::Neox,
        qk_norm: true,
        post_norms: false,
        embd_scale: false,
        ffn: FfnAct::Silu,
        windows: None,
        scale_queries: false,
        default_rms_eps: 1e-6,
    },
    Arch {
        id: ArchId::Gemma3,
        name: "gemma3",
        keys: keys!("gemma3"),
        rope: RopeLayout::Neox,
        qk_norm: true,
        post_norms: true,
        embd_scale: true,
        ffn: FfnAct::GeluTanh,
        windows: Some(WindowRule {
            default_pattern: 6,
            default_local_base: 10000.0,
        }),
        scale_queries: true,
        default_rms_eps: 1e-6,
    },
];

/// Names of every supported architecture, for error messages.
pub const ARCH_NAMES: &str = "llama, qwen2, qwen3, gemma3";

impl Arch {
    /// The row for a `general.architecture` name.
    pub fn by_name(name: &str) -> Option<&'static Arch> {
        ARCHS.iter().find(|a| a.name == name)
    }

    /// The row for an identifier.
    pub fn of(id: ArchId) -> &'static Arch {
        // Every identifier has exactly one row (checked by a test).
        ARCHS.iter().find(|a| a.id == id).unwrap_or(&ARCHS[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_has_one_row_and_names_are_listed() {
        for a in ARCHS {
            assert_eq!(ARCHS.iter().filter(|b| b.id == a.id).count(), 1);
            assert_eq!(Arch::of(a.id).name, a.name);
            assert!(ARCH_NAMES.split(", ").any(|n| n == a.name));
            assert!(a.keys.block_count.starts_with(a.name));
        }
        assert_eq!(ARCH_NAMES.split(", ").count(), ARCHS.len());
    }
}
