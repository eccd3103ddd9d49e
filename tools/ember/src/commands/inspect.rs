//! `ember inspect`: what is in a model file.

use super::{ContextArgs, ModelArgs};
use crate::load::{self, CliResult, OpenFile};
use ember_runtime::gguf::{keys, Value};
use ember_runtime::model::arch::{FfnAct, RopeLayout};
use ember_runtime::model::Config;
use ember_runtime::session::{Session, SessionConfig};
use std::collections::BTreeMap;

#[derive(clap::Args)]
pub struct Args {
    /// Model file (GGUF); the same as -m.
    #[arg(value_name = "MODEL", conflicts_with = "model")]
    path: Option<std::path::PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    /// The memory plan is computed for these settings (--ctx, --kv-type, --sinks, --board).
    #[command(flatten)]
    context: ContextArgs,
    /// Also list every metadata key and every tensor.
    #[arg(long)]
    verbose: bool,
}

/// Prints every buffer a session with these settings needs, before allocating any of it.
fn memory_plan(m: &ember_runtime::model::Model<'_>, ctx: &ContextArgs) -> CliResult {
    let mib = |x: usize| format!("{:>8.2} MiB", x as f64 / 1048576.0);
    let sc = ctx.session_config(
        m,
        2048,
        SessionConfig::default().n_batch,
        super::Sessions::One,
    )?;
    let plan = Session::plan(m, &sc)?;
    let weights = m.gguf.bytes().len();
    let tables = ember_runtime::model::Model::memory_needed(&m.gguf)?;
    outln!(
        "memory plan:   context {} tokens ({} sinks), KV {}, prompt batch {}{}",
        sc.n_ctx,
        sc.sinks,
        sc.kv_type.name(),
        sc.n_batch.min(sc.n_ctx - sc.sinks),
        ctx.board()?
            .map(|b| format!(", board {} (budget {} MiB)", b.name, b.budget_mib))
            .unwrap_or_default()
    )?;
    outln!(
        "  weights      {} (mapped from the file, not allocated)",
        mib(weights)
    )?;
    outln!("  model tables {}", mib(tables))?;
    outln!("  KV cache     {}", mib(plan.kv_cache))?;
    outln!("  scratch      {}", mib(plan.scratch + plan.logits))?;
    outln!(
        "  allocated    {} (model tables + one session buffer)",
        mib(tables + plan.total)
    )?;
    outln!(
        "  total        {} (resident with the weights)",
        mib(weights + tables + plan.total)
    )?;
    Ok(())
}

fn show(v: &Value<'_>) -> String {
    match v {
        Value::Str(b) => {
            let s = String::from_utf8_lossy(b);
            let s: String = s.chars().take(60).collect();
            format!("{:?}{}", s, if b.len() > 60 { "…" } else { "" })
        }
        Value::Array(a) => format!("[{} × {}]", a.len(), a.elem_type().name()),
        Value::U8(x) => x.to_string(),
        Value::I8(x) => x.to_string(),
        Value::U16(x) => x.to_string(),
        Value::I16(x) => x.to_string(),
        Value::U32(x) => x.to_string(),
        Value::I32(x) => x.to_string(),
        Value::U64(x) => x.to_string(),
        Value::I64(x) => x.to_string(),
        Value::F32(x) => x.to_string(),
        Value::F64(x) => x.to_string(),
        Value::Bool(x) => x.to_string(),
    }
}

pub fn main(a: Args) -> CliResult {
    let path = load::model_path(a.path.clone().or(a.model.model.clone()));
    let file = OpenFile::open(path.clone())?;
    let g = file.gguf()?;
    let size = file.file.bytes().len();
    outln!(
        "file:          {} ({} bytes, {:.1} MiB)",
        path.display(),
        size,
        size as f64 / 1048576.0
    )?;
    outln!(
        "gguf:          version {}, {} metadata keys, {} tensors, alignment {}",
        g.version(),
        g.metadata_len(),
        g.tensor_count(),
        g.alignment()
    )?;
    let arch = g.get_str(keys::ARCHITECTURE)?.unwrap_or("(none)");
    outln!("architecture:  {arch}")?;
    if let Some(n) = g.get_str(keys::NAME)? {
        outln!("name:          {n}")?;
    }
    match Config::from_gguf(&g) {
        Ok(c) => {
            outln!("layers:        {}", c.n_layer)?;
            outln!("width:         {} (ffn {})", c.n_embd, c.n_ff)?;
            outln!(
                "heads:         {} query, {} key/value, head width {}{}",
                c.n_head,
                c.n_head_kv,
                c.head_dim,
                if c.q_dim() != c.n_embd {
                    format!(" (queries {} wide)", c.q_dim())
                } else {
                    String::new()
                }
            )?;
            let a = c.arch();
            let layout = match a.rope {
                RopeLayout::Adjacent => "adjacent pairs",
                RopeLayout::Neox => "NEOX halves",
            };
            let scale = if c.rope_scale != 1.0 {
                format!(", linear scale {}", c.rope_scale)
            } else {
                String::new()
            };
            outln!(
                "rope:          base {}, {} dims, {layout}{scale}",
                c.rope_base,
                c.rope_dim
            )?;
            if c.window > 0 {
                outln!(
                    "windows:       {} of {} layers attend to the last {} positions (rope base {})",
                    c.windowed.len(),
                    c.n_layer,
                    c.window,
                    c.rope_base_local
                )?;
            }
            let mut opts: Vec<&str> = Vec::new();
            if a.qk_norm {
                opts.push("Q/K norms");
            }
            if a.post_norms {
                opts.push("post-attention and post-FFN norms");
            }
            if a.embd_scale {
                opts.push("embedding x sqrt(width)");
            }
            if g.tensor("blk.0.attn_q.bias").is_some() {
                opts.push("Q/K/V biases");
            }
            if g.tensor("rope_freqs.weight").is_some() {
                opts.push("RoPE frequency factors");
            }
            if c.logit_softcap > 0.0 {
                opts.push("logit soft-capping");
            }
            opts.push(match a.ffn {
                FfnAct::Silu => "SiLU-gated FFN",
                FfnAct::GeluTanh => "GELU(tanh)-gated FFN",
            });
            outln!("options:       {}", opts.join(", "))?;
            outln!("rms eps:       {:e}", c.rms_eps)?;
            outln!("context:       {} (trained)", c.n_ctx_train)?;
            outln!("vocab:         {}", c.n_vocab)?;
        }
        Err(e) => outln!("model:         not runnable by ember: {e}")?,
    }
    let mut types: BTreeMap<&str, usize> = BTreeMap::new();
    let mut params = 0u64;
    for t in g.tensors() {
        *types.entry(t.ty.name()).or_default() += 1;
        params += t.n_elements();
    }
    let unsupported: Vec<&str> = g
        .tensors()
        .filter(|t| t.n_dims >= 2 && !t.ty.is_matmul_supported())
        .map(|t| t.ty.name())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let types: Vec<String> = types.iter().map(|(k, v)| format!("{k} × {v}")).collect();
    outln!(
        "tensors:       {} ({}), {:.1} M parameters",
        g.tensor_count(),
        types.join(", "),
        params as f64 / 1e6
    )?;
    if !unsupported.is_empty() {
        outln!(
            "unsupported:   tensor types ember does not run: {}",
            unsupported.join(", ")
        )?;
    }
    outln!(
        "output head:   {}",
        if g.tensor("output.weight").is_some() {
            "output.weight"
        } else {
            "tied to token_embd.weight"
        }
    )?;
    // Special ids ember does not use but llama.cpp reads: outside the vocabulary they are
    // ignored (as llama.cpp ignores them, with a warning), and said so here.
    let n_tokens = g
        .get(keys::TOKENS)
        .and_then(|v| v.as_array())
        .map(|a| a.len());
    for key in [
        keys::UNK_ID,
        keys::PAD_ID,
        "tokenizer.ggml.seperator_token_id",
        "tokenizer.ggml.cls_token_id",
        "tokenizer.ggml.mask_token_id",
    ] {
        if let (Some(id), Some(n)) = (g.get(key).and_then(|v| v.as_u64()), n_tokens) {
            if id >= n as u64 {
                outln!(
                    "warning:       {key} = {id} is outside the vocabulary of {n} tokens; ignored"
                )?;
            }
        }
    }
    let tok_model = g.get_str(keys::TOKENIZER_MODEL)?.unwrap_or("(none)");
    let pre = g.get_str(keys::TOKENIZER_PRE)?.unwrap_or("(none)");
    outln!("tokenizer:     {tok_model}, pre-tokenizer {pre}")?;
    let kernels = load::kernels(a.model.kernels.as_deref())?;
    let loaded = load::with_model(path, kernels, |m| {
        let t = &m.tokenizer;
        let name = |id: u32| String::from_utf8_lossy(t.token_text(id).unwrap_or(b"?")).into_owned();
        outln!(
            "vocabulary:    {} tokens, {} merges, {} special",
            t.vocab_size(),
            t.merge_count(),
            t.special_tokens().len()
        )?;
        let opt = |id: Option<u32>| id.map_or("(none)".to_string(), |i| format!("{i} {}", name(i)));
        outln!("bos:           {} (added: {})", opt(t.bos()), t.add_bos())?;
        outln!("eos:           {}", opt(t.eos()))?;
        let eog: Vec<String> = t
            .eog_tokens()
            .iter()
            .map(|&i| format!("{i} {}", name(i)))
            .collect();
        outln!("end of gen:    {}", eog.join(", "))?;
        let mut sp: Vec<u32> = t.special_tokens().to_vec();
        sp.sort();
        // Names escaped (a special token may be whitespace), the first 32 of a long list.
        const SHOWN: usize = 32;
        let names: Vec<String> = sp
            .iter()
            .take(SHOWN)
            .map(|&i| format!("{:?}", name(i)))
            .collect();
        let more = if sp.len() > SHOWN {
            format!(" ... and {} more", sp.len() - SHOWN)
        } else {
            String::new()
        };
        outln!("special:       {}{more}", names.join(" "))?;
        outln!("kernels:       {}", m.kernels.name())?;
        memory_plan(m, &a.context)
    });
    if let Err(e) = loaded {
        outln!("load:          fails: {e}")?;
    }
    outln!(
        "chat template: {}",
        if g.get(keys::CHAT_TEMPLATE).is_some() {
            "present"
        } else {
            "absent"
        }
    )?;
    if a.verbose {
        outln!("\nmetadata:")?;
        for (k, v) in g.metadata() {
            outln!("  {k} = {}", show(&v))?;
        }
        outln!("\ntensors:")?;
        for t in g.tensors() {
            let dims: Vec<String> = t.dims[..t.n_dims as usize]
                .iter()
                .map(|d| d.to_string())
                .collect();
            outln!(
                "  {:<28} {:<5} [{}] offset {}",
                t.name,
                t.ty.name(),
                dims.join(", "),
                t.offset
            )?;
        }
    }
    Ok(())
}
