//! A model: hyperparameters, weights bound to the file's tensors, and the tokenizer. The
//! architecture table ([`arch`]) says which tensors a family has; one forward pass runs them all.
//!
//! Every weight is a view into the GGUF bytes; loading reads the metadata and the tensor table,
//! checks each tensor's shape and type for its role, and builds the tokenizer's lookup tables.

pub mod arch;
pub mod config;
pub mod forward;
pub mod trace;

pub use arch::{Arch, ArchId};
pub use config::Config;
pub use forward::{Logits, State};

use crate::arena::Arena;
use crate::error::{Error, Name, Result};
use crate::gguf::{Gguf, TensorInfo};
use crate::kernels::Kernels;
use crate::tokenizer::Tokenizer;
use crate::weights::{GgmlType, Matrix};

/// One transformer block's weights. Shapes are (rows × cols) = (out × in).
#[derive(Clone, Copy, Debug)]
pub struct Layer<'a> {
    /// RMSNorm weight before attention, `[n_embd]`.
    pub attn_norm: &'a [f32],
    /// Query projection, `q_dim × n_embd`.
    pub wq: Matrix<'a>,
    /// Key projection, `kv_dim × n_embd`.
    pub wk: Matrix<'a>,
    /// Value projection, `kv_dim × n_embd`.
    pub wv: Matrix<'a>,
    /// Attention output projection, `n_embd × q_dim`.
    pub wo: Matrix<'a>,
    /// Biases of the query, key, value and output projections, where the file has them.
    pub bq: Option<&'a [f32]>,
    /// Key bias.
    pub bk: Option<&'a [f32]>,
    /// Value bias.
    pub bv: Option<&'a [f32]>,
    /// Output bias.
    pub bo: Option<&'a [f32]>,
    /// Per-head RMSNorm weights of queries and keys, `[head_dim]` ([`Arch::qk_norm`]).
    pub q_norm: Option<&'a [f32]>,
    /// Key norm.
    pub k_norm: Option<&'a [f32]>,
    /// RMSNorm weight of the attention output before its residual add ([`Arch::post_norms`]).
    pub attn_post_norm: Option<&'a [f32]>,
    /// RMSNorm weight of the feed-forward output before its residual add.
    pub ffn_post_norm: Option<&'a [f32]>,
    /// RMSNorm weight before the feed-forward block, `[n_embd]`.
    pub ffn_norm: &'a [f32],
    /// Feed-forward gate, `n_ff × n_embd`.
    pub w_gate: Matrix<'a>,
    /// Feed-forward up, `n_ff × n_embd`.
    pub w_up: Matrix<'a>,
    /// Feed-forward down, `n_embd × n_ff`.
    pub w_down: Matrix<'a>,
}

/// All weights of the model.
#[derive(Clone, Copy, Debug)]
pub struct Weights<'a> {
    /// Token embedding, `n_vocab × n_embd` (looked up by row).
    pub token_embd: Matrix<'a>,
    /// Final RMSNorm weight, `[n_embd]`.
    pub output_norm: &'a [f32],
    /// Output head, `n_vocab × n_embd`: `output.weight`, or the embedding when tied.
    pub output: Matrix<'a>,
    /// Whether the output head is the embedding matrix.
    pub tied_output: bool,
    /// Per-block weights, `[n_layer]`.
    pub layers: &'a [Layer<'a>],
    /// RoPE frequency factors (`rope_freqs.weight`), `[rope_dim / 2]`, when the model has them.
    pub rope_freqs: Option<&'a [f32]>,
}

/// A loaded model, borrowing the file bytes and an arena for its tables.
pub struct Model<'a> {
    /// Hyperparameters.
    pub config: Config,
    /// Weight views.
    pub weights: Weights<'a>,
    /// Tokenizer.
    pub tokenizer: Tokenizer<'a>,
    /// The kernels every forward pass uses.
    pub kernels: Kernels,
    /// The file.
    pub gguf: Gguf<'a>,
}

impl<'a> Model<'a> {
    /// Arena bytes [`Model::load`] needs for this file.
    pub fn memory_needed(g: &Gguf<'_>) -> Result<usize> {
        let cfg = Config::from_gguf(g)?;
        Ok(Tokenizer::memory_needed(g)? + Arena::size_of::<Layer<'static>>(cfg.n_layer))
    }

    /// Binds the weights of a GGUF of a supported architecture and builds its tokenizer in
    /// `arena`.
    pub fn load(g: Gguf<'a>, arena: &mut Arena<'a>, kernels: Kernels) -> Result<Self> {
        let config = Config::from_gguf(&g)?;
        let c = &config;
        let token_embd = matrix(&g, "token_embd.weight", c.n_vocab, c.n_embd)?;
        let (output, tied_output) = match g.tensor("output.weight") {
            Some(_) => (matrix(&g, "output.weight", c.n_vocab, c.n_embd)?, false),
            None => (token_embd, true),
        };
        let output_norm = vector(&g, "output_norm.weight", c.n_embd)?;
        let rope_freqs = match g.tensor("rope_freqs.weight") {
            Some(_) => Some(vector(&g, "rope_freqs.weight", c.rope_dim / 2)?),
            None => None,
        };
        let (kv, qd, hd) = (c.kv_dim(), c.q_dim(), c.head_dim);
        let arch = c.arch();
        let layers = arena.alloc_init(c.n_layer, "layer table", |i| {
            let mut name = NameBuf::new(i);
            let mut opt = |suffix: &str, n: usize| -> Result<Option<&'a [f32]>> {
                let name = name.get(suffix);
                match g.tensor(name) {
                    Some(_) => vector(&g, name, n).map(Some),
                    None => Ok(None),
                }
            };
            let (bq, bk, bv, bo) = (
                opt("attn_q.bias", qd)?,
                opt("attn_k.bias", kv)?,
                opt("attn_v.bias", kv)?,
                opt("attn_output.bias", c.n_embd)?,
            );
            let mut req = |on: bool, suffix: &str, n: usize| -> Result<Option<&'a [f32]>> {
                if on {
                    vector(&g, name.get(suffix), n).map(Some)
                } else {
                    Ok(None)
                }
            };
            let q_norm = req(arch.qk_norm, "attn_q_norm.weight", hd)?;
            let k_norm = req(arch.qk_norm, "attn_k_norm.weight", hd)?;
            let attn_post_norm = req(arch.post_norms, "post_attention_norm.weight", c.n_embd)?;
            let ffn_post_norm = req(arch.post_norms, "post_ffw_norm.weight", c.n_embd)?;
            Ok(Layer {
                attn_norm: vector(&g, name.get("attn_norm.weight"), c.n_embd)?,
                wq: matrix(&g, name.get("attn_q.weight"), qd, c.n_embd)?,
                wk: matrix(&g, name.get("attn_k.weight"), kv, c.n_embd)?,
                wv: matrix(&g, name.get("attn_v.weight"), kv, c.n_embd)?,
                wo: matrix(&g, name.get("attn_output.weight"), c.n_embd, qd)?,
                bq,
                bk,
                bv,
                bo,
                q_norm,
                k_norm,
                attn_post_norm,
                ffn_post_norm,
                ffn_norm: vector(&g, name.get("ffn_norm.weight"), c.n_embd)?,
                w_gate: matrix(&g, name.get("ffn_gate.weight"), c.n_ff, c.n_embd)?,
                w_up: matrix(&g, name.get("ffn_up.weight"), c.n_ff, c.n_embd)?,
                w_down: matrix(&g, name.get("ffn_down.weight"), c.n_embd, c.n_ff)?,
            })
        })?;
        let tokenizer = Tokenizer::from_gguf(&g, arena)?;
        if tokenizer.vocab_size() != c.n_vocab {
            return Err(Error::BadKey {
                key: crate::gguf::keys::TOKENS,
                reason: "the token list and the embedding disagree on the vocabulary size",
            });
        }
        #[cfg(feature = "log")]
        log::info!(
            "model: {}, {} layers, width {}, {} heads ({} KV), vocab {}; kernels {}",
            arch.name,
            c.n_layer,
            c.n_embd,
            c.n_head,
            c.n_head_kv,
            c.n_vocab,
            kernels.name()
        );
        Ok(Model {
            config,
            weights: Weights {
                token_embd,
                output_norm,
                output,
                tied_output,
                layers,
                rope_freqs,
            },
            tokenizer,
            kernels,
            gguf: g,
        })
    }
}

/// Builds `blk.N.suffix` names without allocating.
struct NameBuf {
    buf: [u8; 96],
    prefix: usize,
}

impl NameBuf {
    fn new(layer: usize) -> Self {
        let mut buf = [0u8; 96];
        buf[..4].copy_from_slice(b"blk.");
        let mut n = 4;
        let mut digits = [0u8; 20];
        let mut d = 0;
        let mut v = layer;
        loop {
            digits[d] = b'0' + (v % 10) as u8;
            d += 1;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        for i in (0..d).rev() {
            buf[n] = digits[i];
            n += 1;
        }
        buf[n] = b'.';
        NameBuf { buf, prefix: n + 1 }
    }

    fn get(&mut self, suffix: &str) -> &str {
        let end = self.prefix + suffix.len();
        self.buf[self.prefix..end].copy_from_slice(suffix.as_bytes());
        core::str::from_utf8(&self.buf[..end]).unwrap_or("")
    }
}

fn tensor<'a>(g: &Gguf<'a>, name: &str) -> Result<TensorInfo<'a>> {
    g.tensor(name).ok_or(Error::MissingTensor(Name::new(name)))
}

/// A 2-D weight of `rows × cols` (GGUF dims `[cols, rows]`).
fn matrix<'a>(g: &Gguf<'a>, name: &str, rows: usize, cols: usize) -> Result<Matrix<'a>> {
    let t = tensor(g, name)?;
    if !t.ty.is_matmul_supported() {
        return Err(Error::UnsupportedWeightType {
            name: Name::new(name),
            ty: t.ty.name(),
            supported: GgmlType::MATMUL_NAMES,
        });
    }
    if t.n_dims != 2 || [t.dims[0], t.dims[1]] != [cols as u64, rows as u64] {
        return Err(Error::BadTensorShape {
            name: Name::new(name),
            expected: [cols as u64, rows as u64],
            found: t.dims,
            found_dims: t.n_dims as u8,
        });
    }
    Matrix::new(name, t.ty, rows, cols, t.data)
}

/// A 1-D f32 weight of length `n`. NaN or infinite values are refused: a norm weight must be
/// finite for the output to mean anything.
fn vector<'a>(g: &Gguf<'a>, name: &str, n: usize) -> Result<&'a [f32]> {
    let t = tensor(g, name)?;
    if t.ty != GgmlType::F32 {
        return Err(Error::BadTensorRole {
            name: Name::new(name),
            reason: "must be f32",
        });
    }
    if t.n_elements() != n as u64 || t.dims[0] != n as u64 {
        return Err(Error::BadTensorShape {
            name: Name::new(name),
            expected: [n as u64, 1],
            found: t.dims,
            found_dims: t.n_dims as u8,
        });
    }
    let v: &[f32] = bytemuck::try_cast_slice(t.data).map_err(|_| Error::BadTensorRole {
        name: Name::new(name),
        reason: "data is not 4-byte aligned",
    })?;
    if v.iter().any(|x| !x.is_finite()) {
        return Err(Error::BadTensorRole {
            name: Name::new(name),
            reason: "holds NaN or infinite values",
        });
    }
    Ok(v)
}
