//! `ember convert`: a Hugging Face Llama, Qwen2 or Qwen3 checkpoint (`config.json`,
//! `tokenizer.json`, `tokenizer_config.json`, `*.safetensors`) to GGUF, mapped as llama.cpp's
//! `convert_hf_to_gguf.py` maps it:
//!
//! - hyperparameters to the `{arch}.*` keys (`llama`, `qwen2`, `qwen3`; `attention.key_length`
//!   when the heads are not `hidden_size / num_attention_heads` wide);
//! - the byte-level BPE tokenizer to `tokenizer.ggml.*` (tokens in id order, token types:
//!   normal, control for special added tokens, user-defined for other added tokens, unused for
//!   padding up to the model's vocabulary size; merges as `"left right"`; the special token ids
//!   and add-BOS/EOS flags; the pre-tokenizer's name recognised from `tokenizer.json`'s structure
//!   — llama.cpp hashes the tokenizer's output instead — or given with `--pre-tokenizer`);
//! - the chat template from `tokenizer_config.json`;
//! - tensors renamed (Qwen2's Q/K/V biases, Qwen3's Q/K norms included); for Llama the rows of
//!   `q_proj` and `k_proj` permuted within each head: Hugging Face rotates the two halves of a
//!   head (`rotate_half`), ggml's Llama RoPE rotates adjacent pairs, so row `h·hd + 2i + j` of the
//!   GGUF tensor is row `h·hd + j·hd/2 + i` of the checkpoint's. Qwen's RoPE is NEOX, the halves
//!   themselves: no permutation.
//!
//! Norms are written as F32, the token embedding as the embedding type, every other matrix as
//! the requested type.

use crate::encode;
use crate::writer::{GgufWriter, MetaKv, TensorEntry};
use crate::{file_type, Progress, QuantError, Result, TensorReport, QUANTIZATION_VERSION};
use ember_runtime::weights::GgmlType;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::path::Path;

/// Settings of one conversion.
#[derive(Clone, Debug)]
pub struct Options {
    /// Type of the weight matrices.
    pub ty: GgmlType,
    /// Type of the token embedding.
    pub embeddings: GgmlType,
    /// Threads.
    pub threads: usize,
    /// Measure each tensor's error against the checkpoint's values.
    pub measure: bool,
    /// The pre-tokenizer name (`tokenizer.ggml.pre`), when it cannot be recognised.
    pub pre_tokenizer: Option<String>,
}

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(QuantError(msg.into()))
}

fn read_json(path: &Path) -> Result<Json> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| QuantError(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| QuantError(format!("{}: {e}", path.display())))
}

/// The hyperparameters of `config.json`.
#[derive(Clone, Debug)]
struct Hparams {
    /// `general.architecture`: `llama`, `qwen2` or `qwen3`.
    arch: &'static str,
    /// Width of one head (`head_dim`, else hidden_size / num_attention_heads).
    head_dim: u64,
    n_embd: u64,
    n_ff: u64,
    n_layer: u64,
    n_head: u64,
    n_head_kv: u64,
    n_ctx: u64,
    eps: f64,
    rope_theta: f64,
    tied: bool,
    vocab_size: Option<u64>,
    bos: Option<u64>,
    eos: Option<u64>,
}

impl Hparams {
    fn from_config(c: &Json) -> Result<Self> {
        // The checkpoint class, as convert_hf_to_gguf.py's registry names them.
        let class = |name: &str| {
            c["architectures"]
                .as_array()
                .is_some_and(|a| a.iter().any(|v| v.as_str() == Some(name)))
        };
        let arch = if class("LlamaForCausalLM") || c["model_type"].as_str() == Some("llama") {
            "llama"
        } else if class("Qwen2ForCausalLM") {
            "qwen2"
        } else if class("Qwen3ForCausalLM") {
            "qwen3"
        } else {
            let arch = c["architectures"]
                .get(0)
                .and_then(|v| v.as_str())
                .or(c["model_type"].as_str())
                .unwrap_or("unknown");
            return err(format!(
                "config.json: architecture {arch:?} is not supported (LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM)"
            ));
        };
        if c["use_sliding_window"].as_bool() == Some(true) {
            return err("config.json: use_sliding_window is not supported for this architecture");
        }
        let int = |k: &str| {
            c[k].as_u64()
                .filter(|&v| v > 0 && v < (1 << 32))
                .ok_or_else(|| QuantError(format!("config.json: missing or invalid key {k}")))
        };
        let n_head = int("num_attention_heads")?;
        let n_embd = int("hidden_size")?;
        let head_dim = match c.get("head_dim") {
            None | Some(Json::Null) => {
                if n_embd % n_head != 0 {
                    return err(
                        "config.json: hidden_size is not a multiple of num_attention_heads",
                    );
                }
                n_embd / n_head
            }
            Some(v) => v
                .as_u64()
                .filter(|&d| d > 0 && d <= 512)
                .ok_or_else(|| QuantError("config.json: invalid head_dim".into()))?,
        };
        if arch == "llama" && head_dim != n_embd / n_head {
            return err("config.json: a head_dim other than hidden_size / num_attention_heads is not supported for Llama");
        }
        let h = Hparams {
            arch,
            head_dim,
            n_embd,
            n_ff: int("intermediate_size")?,
            n_layer: int("num_hidden_layers")?,
            n_head,
            n_head_kv: if c.get("num_key_value_heads").is_some_and(|v| !v.is_null()) {
                int("num_key_value_heads")?
            } else {
                n_head
            },
            n_ctx: int("max_position_embeddings")?,
            eps: c["rms_norm_eps"]
                .as_f64()
                .filter(|v| v.is_finite() && *v > 0.0)
                .ok_or_else(|| {
                    QuantError("config.json: missing or invalid key rms_norm_eps".into())
                })?,
            rope_theta: match c.get("rope_theta") {
                None | Some(Json::Null) => 10000.0,
                Some(v) => v
                    .as_f64()
                    .filter(|v| v.is_finite() && *v > 0.0)
                    .ok_or_else(|| QuantError("config.json: invalid rope_theta".into()))?,
            },
            tied: c["tie_word_embeddings"].as_bool().unwrap_or(false),
            vocab_size: c["vocab_size"].as_u64(),
            bos: c["bos_token_id"].as_u64(),
            eos: c["eos_token_id"].as_u64(),
        };
        if n_head % h.n_head_kv != 0 || head_dim % 2 != 0 {
            return err("config.json: hidden_size, num_attention_heads and num_key_value_heads do not fit together");
        }
        if c.get("rope_scaling").is_some_and(|v| !v.is_null()) {
            return err("config.json: rope_scaling is not supported");
        }
        Ok(h)
    }

    fn head_dim(&self) -> u64 {
        self.head_dim
    }

    /// The metadata key `{arch}.{suffix}`.
    fn key(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.arch)
    }
}

/// The tokenizer, as GGUF stores it.
struct Vocab {
    tokens: Vec<String>,
    types: Vec<i32>,
    merges: Vec<String>,
    pre: String,
    ids: HashMap<String, u32>,
}

const TOKEN_NORMAL: i32 = 1;
const TOKEN_CONTROL: i32 = 3;
const TOKEN_USER_DEFINED: i32 = 4;
const TOKEN_UNUSED: i32 = 5;

/// The `tokenizer.ggml.pre` name of a `tokenizer.json` pre-tokenizer, when it is one ember knows.
fn recognise_pre(p: &Json) -> Option<&'static str> {
    let byte_level = |v: &Json| {
        v["type"].as_str() == Some("ByteLevel") && v["use_regex"].as_bool().unwrap_or(true)
    };
    if byte_level(p) {
        return Some("gpt-2");
    }
    let seq = p["pretokenizers"]
        .as_array()
        .filter(|_| p["type"] == "Sequence")?;
    // Llama 3's and Qwen2's: their regex split, then the byte mapping without GPT-2's regex.
    const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    fn split(v: &Json) -> Option<&str> {
        (v["type"] == "Split" && v["behavior"] == "Isolated" && v["invert"] != true)
            .then(|| v["pattern"]["Regex"].as_str())
            .flatten()
    }
    let plain_bytes = |v: &Json| v["type"] == "ByteLevel" && v["use_regex"] == false;
    match seq.as_slice() {
        [d, b] if d["type"] == "Digits" && d["individual_digits"] == true && byte_level(b) => {
            Some("smollm")
        }
        [b] if byte_level(b) => Some("gpt-2"),
        [r, b] if plain_bytes(b) && split(r) == Some(LLAMA3) => Some("llama-bpe"),
        [r, b] if plain_bytes(b) && split(r) == Some(QWEN2) => Some("qwen2"),
        _ => None,
    }
}

fn load_vocab(dir: &Path, h: &Hparams, pre_override: Option<&str>) -> Result<Vocab> {
    let t = read_json(&dir.join("tokenizer.json"))?;
    let model = &t["model"];
    if model["type"].as_str() != Some("BPE") {
        return err("tokenizer.json: only byte-level BPE tokenizers are supported");
    }
    if t["decoder"]["type"]
        .as_str()
        .is_some_and(|d| d != "ByteLevel")
    {
        return err("tokenizer.json: only byte-level BPE tokenizers are supported (decoder is not ByteLevel)");
    }
    let pre = match pre_override {
        Some(p) => p.to_string(),
        None => recognise_pre(&t["pre_tokenizer"]).map(String::from).ok_or_else(|| {
            QuantError("tokenizer.json: pre-tokenizer not recognised; name it with --pre-tokenizer (e.g. gpt-2, smollm)".into())
        })?,
    };
    if ember_runtime::tokenizer::PreTokenizer::from_name(&pre).is_none() {
        return err(format!("pre-tokenizer {pre:?} is not one ember implements"));
    }
    let vocab = model["vocab"]
        .as_object()
        .ok_or_else(|| QuantError("tokenizer.json: model.vocab is missing".into()))?;
    let mut by_id: HashMap<u64, (String, i32)> = HashMap::new();
    for (tok, id) in vocab {
        let id = id
            .as_u64()
            .ok_or_else(|| QuantError(format!("tokenizer.json: bad id for token {tok:?}")))?;
        by_id.insert(id, (tok.clone(), TOKEN_NORMAL));
    }
    for a in t["added_tokens"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let (Some(id), Some(content)) = (a["id"].as_u64(), a["content"].as_str()) else {
            return err("tokenizer.json: an added token without id or content");
        };
        let ty = if a["special"].as_bool().unwrap_or(false) {
            TOKEN_CONTROL
        } else {
            TOKEN_USER_DEFINED
        };
        by_id.insert(id, (content.to_string(), ty));
    }
    let max_id = by_id.keys().copied().max().unwrap_or(0);
    let n = (max_id + 1).max(h.vocab_size.unwrap_or(0));
    if n > 1 << 24 {
        return err("tokenizer.json: vocabulary too large");
    }
    let mut tokens = Vec::with_capacity(n as usize);
    let mut types = Vec::with_capacity(n as usize);
    for id in 0..n {
        match by_id.remove(&id) {
            Some((tok, ty)) => {
                tokens.push(tok);
                types.push(ty);
            }
            None => {
                tokens.push(format!("[PAD{id}]"));
                types.push(TOKEN_UNUSED);
            }
        }
    }
    let merges = model["merges"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .map(|m| match m {
            Json::String(s) => Ok(s.clone()),
            Json::Array(p) if p.len() == 2 => match (p[0].as_str(), p[1].as_str()) {
                (Some(a), Some(b)) => Ok(format!("{a} {b}")),
                _ => err("tokenizer.json: a merge is not two strings"),
            },
            _ => err("tokenizer.json: a merge is neither \"a b\" nor [a, b]"),
        })
        .collect::<Result<Vec<_>>>()?;
    let ids = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    Ok(Vocab {
        tokens,
        types,
        merges,
        pre,
        ids,
    })
}

/// Tokenizer and chat-template keys from `tokenizer_config.json` (and config.json's ids).
fn special_meta(dir: &Path, h: &Hparams, v: &Vocab) -> Result<Vec<MetaKv>> {
    let path = dir.join("tokenizer_config.json");
    let tc = if path.exists() {
        read_json(&path)?
    } else {
        Json::Null
    };
    let mut meta = Vec::new();
    let token_id = |key: &str| -> Option<u32> {
        let text = match &tc[key] {
            Json::String(s) => Some(s.as_str()),
            Json::Object(o) => o.get("content").and_then(|c| c.as_str()),
            _ => None,
        }?;
        v.ids.get(text).copied()
    };
    let pick = |key: &str, fallback: Option<u64>| {
        token_id(key).or(fallback.and_then(|i| u32::try_from(i).ok()))
    };
    for (key, gguf_key, fallback) in [
        ("bos_token", "tokenizer.ggml.bos_token_id", h.bos),
        ("eos_token", "tokenizer.ggml.eos_token_id", h.eos),
        ("unk_token", "tokenizer.ggml.unknown_token_id", None),
        ("pad_token", "tokenizer.ggml.padding_token_id", None),
    ] {
        if let Some(id) = pick(key, fallback).filter(|&i| (i as usize) < v.tokens.len()) {
            meta.push(MetaKv::u32(gguf_key, id));
        }
    }
    for (key, gguf_key) in [
        ("add_bos_token", "tokenizer.ggml.add_bos_token"),
        ("add_eos_token", "tokenizer.ggml.add_eos_token"),
    ] {
        if let Some(b) = tc[key].as_bool() {
            meta.push(MetaKv::bool(gguf_key, b));
        }
    }
    let template = match &tc["chat_template"] {
        Json::String(s) => Some(s.clone()),
        Json::Array(list) => list
            .iter()
            .find(|t| t["name"] == "default")
            .and_then(|t| t["template"].as_str())
            .map(String::from),
        _ => None,
    };
    if let Some(t) = template {
        meta.push(MetaKv::str("tokenizer.chat_template", &t));
    }
    Ok(meta)
}

/// How a checkpoint tensor becomes a GGUF tensor.
struct Mapping {
    hf: String,
    gguf: String,
    /// Expected `[rows, cols]` (1-D: `[n]`).
    shape: Vec<u64>,
    /// Heads whose rows are permuted (q: all heads, k: the KV heads).
    permute_heads: Option<u64>,
}

fn mappings(h: &Hparams) -> Vec<Mapping> {
    let (d, ff, hd) = (h.n_embd, h.n_ff, h.head_dim());
    let (kv, qd) = (h.n_head_kv * hd, h.n_head * hd);
    // Llama's Q/K rows are permuted for its adjacent-pair RoPE; Qwen's NEOX RoPE takes them as
    // they are.
    let permute = |heads: u64| (h.arch == "llama").then_some(heads);
    let m = |hf: String, gguf: String, shape: &[u64], p: Option<u64>| Mapping {
        hf,
        gguf,
        shape: shape.to_vec(),
        permute_heads: p,
    };
    let n_vocab = 0; // checked against the vocabulary separately
    let mut v = vec![m(
        "model.embed_tokens.weight".into(),
        "token_embd.weight".into(),
        &[n_vocab, d],
        None,
    )];
    for i in 0..h.n_layer {
        let p = |s: &str| format!("model.layers.{i}.{s}");
        let b = |s: &str| format!("blk.{i}.{s}");
        v.push(m(
            p("input_layernorm.weight"),
            b("attn_norm.weight"),
            &[d],
            None,
        ));
        v.push(m(
            p("self_attn.q_proj.weight"),
            b("attn_q.weight"),
            &[qd, d],
            permute(h.n_head),
        ));
        v.push(m(
            p("self_attn.k_proj.weight"),
            b("attn_k.weight"),
            &[kv, d],
            permute(h.n_head_kv),
        ));
        v.push(m(
            p("self_attn.v_proj.weight"),
            b("attn_v.weight"),
            &[kv, d],
            None,
        ));
        v.push(m(
            p("self_attn.o_proj.weight"),
            b("attn_output.weight"),
            &[d, qd],
            None,
        ));
        if h.arch == "qwen2" {
            for (n, rows) in [("q", qd), ("k", kv), ("v", kv)] {
                v.push(m(
                    p(&format!("self_attn.{n}_proj.bias")),
                    b(&format!("attn_{n}.bias")),
                    &[rows],
                    None,
                ));
            }
        }
        if h.arch == "qwen3" {
            for n in ["q", "k"] {
                v.push(m(
                    p(&format!("self_attn.{n}_norm.weight")),
                    b(&format!("attn_{n}_norm.weight")),
                    &[hd],
                    None,
                ));
            }
        }
        v.push(m(
            p("post_attention_layernorm.weight"),
            b("ffn_norm.weight"),
            &[d],
            None,
        ));
        v.push(m(
            p("mlp.gate_proj.weight"),
            b("ffn_gate.weight"),
            &[ff, d],
            None,
        ));
        v.push(m(
            p("mlp.up_proj.weight"),
            b("ffn_up.weight"),
            &[ff, d],
            None,
        ));
        v.push(m(
            p("mlp.down_proj.weight"),
            b("ffn_down.weight"),
            &[d, ff],
            None,
        ));
    }
    v.push(m(
        "model.norm.weight".into(),
        "output_norm.weight".into(),
        &[d],
        None,
    ));
    if !h.tied {
        v.push(m(
            "lm_head.weight".into(),
            "output.weight".into(),
            &[n_vocab, d],
            None,
        ));
    }
    v
}

/// Reads element `i` of a tensor's raw little-endian data as f32.
fn element(dtype: Dtype, data: &[u8], i: usize) -> f32 {
    match dtype {
        Dtype::F32 => f32::from_le_bytes([
            data[4 * i],
            data[4 * i + 1],
            data[4 * i + 2],
            data[4 * i + 3],
        ]),
        Dtype::F16 => half::f16::from_le_bytes([data[2 * i], data[2 * i + 1]]).to_f32(),
        _ => half::bf16::from_le_bytes([data[2 * i], data[2 * i + 1]]).to_f32(),
    }
}

/// Converts the checkpoint in `dir` into `output` (see the module notes).
pub fn convert_dir(
    dir: &Path,
    output: &Path,
    o: &Options,
    progress: &mut Progress<'_>,
) -> Result<Vec<TensorReport>> {
    encode::check_targets(&[o.ty, o.embeddings])?;
    let h = Hparams::from_config(&read_json(&dir.join("config.json"))?)?;
    let vocab = load_vocab(dir, &h, o.pre_tokenizer.as_deref())?;
    let n_vocab = vocab.tokens.len() as u64;

    // Every *.safetensors file, mapped (read-only, never copied).
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| QuantError(format!("{}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return err(format!("{}: no *.safetensors files", dir.display()));
    }
    let maps = paths
        .iter()
        .map(|p| {
            let f =
                std::fs::File::open(p).map_err(|e| QuantError(format!("{}: {e}", p.display())))?;
            // SAFETY: the checkpoint is mapped read-only and only read; like any mapped file it
            // must not be changed by another process while the conversion runs.
            unsafe { memmap2::Mmap::map(&f) }
                .map_err(|e| QuantError(format!("{}: {e}", p.display())))
        })
        .collect::<Result<Vec<_>>>()?;
    let files = maps
        .iter()
        .zip(&paths)
        .map(|(m, p)| {
            SafeTensors::deserialize(m).map_err(|e| QuantError(format!("{}: {e}", p.display())))
        })
        .collect::<Result<Vec<_>>>()?;
    let find = |name: &str| files.iter().find_map(|f| f.tensor(name).ok());

    // Plan every tensor (and check it) before writing anything.
    let mut plan = Vec::new();
    for m in mappings(&h) {
        let view = find(&m.hf).ok_or_else(|| QuantError(format!("missing tensor {}", m.hf)))?;
        let mut want = m.shape.clone();
        if want[0] == 0 {
            want[0] = n_vocab;
        }
        let got: Vec<u64> = view.shape().iter().map(|&d| d as u64).collect();
        if got != want {
            return err(format!("{}: shape {got:?}, expected {want:?}", m.hf));
        }
        if !matches!(view.dtype(), Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            return err(format!(
                "{}: dtype {:?} is not supported (F32, F16, BF16)",
                m.hf,
                view.dtype()
            ));
        }
        let to = if want.len() == 1 {
            GgmlType::F32
        } else if m.gguf == "token_embd.weight" {
            o.embeddings
        } else {
            o.ty
        };
        plan.push((m, view, to));
    }

    let k = |s: &str| h.key(s);
    let mut meta = vec![
        MetaKv::str("general.architecture", h.arch),
        MetaKv::str(
            "general.name",
            dir.file_name()
                .map(|n| n.to_string_lossy())
                .as_deref()
                .unwrap_or("model"),
        ),
        MetaKv::u32(&k("vocab_size"), n_vocab as u32),
        MetaKv::u32(&k("context_length"), h.n_ctx as u32),
        MetaKv::u32(&k("embedding_length"), h.n_embd as u32),
        MetaKv::u32(&k("block_count"), h.n_layer as u32),
        MetaKv::u32(&k("feed_forward_length"), h.n_ff as u32),
        MetaKv::u32(&k("rope.dimension_count"), h.head_dim() as u32),
        MetaKv::u32(&k("attention.head_count"), h.n_head as u32),
        MetaKv::u32(&k("attention.head_count_kv"), h.n_head_kv as u32),
        MetaKv::f32(&k("attention.layer_norm_rms_epsilon"), h.eps as f32),
        MetaKv::f32(&k("rope.freq_base"), h.rope_theta as f32),
        MetaKv::u32("general.file_type", file_type(o.ty)),
        MetaKv::str("tokenizer.ggml.model", "gpt2"),
        MetaKv::str("tokenizer.ggml.pre", &vocab.pre),
        MetaKv::str_array("tokenizer.ggml.tokens", &vocab.tokens),
        MetaKv::i32_array("tokenizer.ggml.token_type", &vocab.types),
        MetaKv::str_array("tokenizer.ggml.merges", &vocab.merges),
    ];
    if h.head_dim() * h.n_head != h.n_embd {
        meta.push(MetaKv::u32(&k("attention.key_length"), h.head_dim() as u32));
        meta.push(MetaKv::u32(
            &k("attention.value_length"),
            h.head_dim() as u32,
        ));
    }
    meta.extend(special_meta(dir, &h, &vocab)?);
    if !matches!(o.ty, GgmlType::F32 | GgmlType::F16)
        || !matches!(o.embeddings, GgmlType::F32 | GgmlType::F16)
    {
        meta.push(MetaKv::u32(
            "general.quantization_version",
            QUANTIZATION_VERSION,
        ));
    }
    let entries: Vec<TensorEntry> = plan
        .iter()
        .map(|(m, _, to)| TensorEntry {
            name: m.gguf.clone(),
            dims: m
                .shape
                .iter()
                .rev()
                .map(|&d| if d == 0 { n_vocab } else { d })
                .collect(),
            ty: *to,
        })
        .collect();
    let mut w = GgufWriter::create(output, &meta, &entries)?;

    let total: u64 = plan.iter().map(|(_, v, _)| v.data().len() as u64).sum();
    let mut done = 0u64;
    let mut reports = Vec::with_capacity(plan.len());
    for (m, view, to) in &plan {
        let shape = view.shape();
        let (rows, cols) = match shape {
            [n] => (1, *n),
            [r, c] => (*r, *c),
            _ => return err(format!("{}: not a matrix or vector", m.hf)),
        };
        let (dtype, data) = (view.dtype(), view.data());
        let hd = h.head_dim() as usize;
        let heads = m.permute_heads;
        let src = |r: usize, out: &mut [f32]| -> Result<()> {
            // The checkpoint row that becomes GGUF row r.
            let from = match heads {
                Some(_) => {
                    let (head, w) = (r / hd, r % hd);
                    head * hd + (w % 2) * (hd / 2) + w / 2
                }
                None => r,
            };
            for (c, o) in out.iter_mut().enumerate() {
                *o = element(dtype, data, from * cols + c);
            }
            Ok(())
        };
        let stats = encode::encode_to(&mut w, rows, cols, *to, o.threads, &src, o.measure)
            .map_err(|e| QuantError(format!("{}: {e}", m.gguf)))?;
        reports.push(TensorReport {
            name: m.gguf.clone(),
            from: match dtype {
                Dtype::F16 => GgmlType::F16,
                Dtype::BF16 => GgmlType::BF16,
                _ => GgmlType::F32,
            },
            to: *to,
            reencoded: true,
            error: o.measure.then_some(stats),
        });
        done += data.len() as u64;
        progress(&m.gguf, done, total);
    }
    w.finish()?;
    Ok(reports)
}
