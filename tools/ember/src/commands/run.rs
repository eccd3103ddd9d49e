//! `ember run`: generate text from a prompt; text on stdout, one stats line on stderr.

use super::{ContextArgs, ModelArgs, SamplingArgs};
use crate::load::{self, CliError, CliResult};
use ember_runtime::chat::Message;
use ember_runtime::parallel::Parallel;
use ember_runtime::session::{GenOptions, SessionConfig};
use std::io::Write;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt, verbatim (special tokens such as <|im_start|> are recognised).
    #[arg(short = 'p', long = "prompt")]
    prompt: String,
    /// Most tokens to generate.
    #[arg(short = 'n', long = "n-predict", default_value_t = 256)]
    n_predict: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    context: ContextArgs,
    /// Keep generating past end-of-generation tokens.
    #[arg(long)]
    ignore_eos: bool,
    /// Treat the prompt as one user message, through the model's chat template.
    #[arg(long)]
    chat: bool,
    /// With --chat: a system message first.
    #[arg(long, requires = "chat")]
    system: Option<String>,
    #[command(flatten)]
    grammar: super::GrammarArgs,
}

pub fn main(a: Args) -> CliResult {
    let sampler_cfg = a.sampling.config();
    sampler_cfg.validate()?;
    let grammar = a.grammar.source_without_beam(a.sampling.beam)?;
    let sessions = super::Sessions::Beam(a.sampling.beam as usize, a.n_predict);
    let opened = super::Opened::open(&a.model, &a.context, sessions)?;
    let (model, sc) = (opened.loaded.model(), opened.sc);
    if a.sampling.beam > 0 {
        return beam(&a, model, &opened.pool, &sc);
    }
    let mut engine = opened.engine(sampler_cfg, grammar.as_deref())?;
    let stops: Vec<&str> = a.sampling.stop.iter().map(String::as_str).collect();
    // Past the context the ring cache keeps generation going (see `ember_runtime::kv`).
    let opts = GenOptions {
        max_tokens: a.n_predict,
        ignore_eos: a.ignore_eos,
        stop: &stops,
    };
    let mut out = std::io::stdout().lock();
    let mut io_err = None;
    let mut on_text = |text: &str| match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => true,
        Err(e) => {
            io_err = Some(e);
            false
        }
    };
    let t0 = Instant::now();
    let mut t_prefill = None;
    let outcome = if a.chat {
        // The template writes special tokens as text (and BOS where the model wants it).
        engine.conversation().set_system(a.system.as_deref());
        engine.chat(
            &a.prompt,
            &opts,
            &mut || t_prefill = Some(Instant::now()),
            &mut on_text,
        )?
    } else {
        engine.generate(
            &a.prompt,
            &opts,
            &mut || t_prefill = Some(Instant::now()),
            &mut on_text,
        )?
    };
    let t_end = Instant::now();
    if let Some(e) = io_err {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e.into());
        }
    }
    let stats = outcome.stats;
    let t_prefill = t_prefill.unwrap_or(t_end);
    let pp = stats.prompt_tokens as f64 / (t_prefill - t0).as_secs_f64().max(1e-9);
    // Decode steps: every generated token but the first comes from one single-token forward.
    let steps = stats.generated_tokens.saturating_sub(1);
    let tg = steps as f64 / (t_end - t_prefill).as_secs_f64().max(1e-9);
    let rss = load::peak_rss().map_or(String::new(), |b| {
        format!(" | peak RSS {:.1} MiB", b as f64 / 1048576.0)
    });
    let masks = engine.grammar_masks().map_or(String::new(), |m| {
        format!(" | grammar: {m} full-vocabulary masks")
    });
    errln!(
        "\nember: prompt {} tokens, generated {} tokens | prefill {:.1} tok/s | decode {:.1} tok/s | threads={} kernels={} kv={}x{}{rss}{masks}",
        stats.prompt_tokens, stats.generated_tokens, pp, tg, engine.threads(), model.kernels.name(),
        sc.n_ctx, sc.kv_type.name()
    );
    Ok(())
}

/// `--beam B`: the best of B beams from the prompt.
fn beam(
    a: &Args,
    model: &ember_runtime::model::Model<'_>,
    pool: &ember_runtime::parallel::ThreadPool,
    sc: &SessionConfig,
) -> CliResult {
    let text = if a.chat {
        let t = super::template::chat_template(model)?;
        let mut msgs = Vec::new();
        if let Some(sys) = &a.system {
            msgs.push(Message {
                role: "system",
                content: sys,
            });
        }
        msgs.push(Message {
            role: "user",
            content: &a.prompt,
        });
        t.render(&msgs, true)?
    } else {
        a.prompt.clone()
    };
    let prompt = model
        .tokenizer
        .encode_to_vec(text.as_bytes(), true, !a.chat)?;
    if prompt.is_empty() {
        return Err(CliError("the prompt is empty".into()));
    }
    let t0 = Instant::now();
    let (text, r) = super::beam_text(
        model,
        pool,
        sc,
        a.sampling.beam as usize,
        &prompt,
        a.n_predict,
        a.ignore_eos,
        &a.sampling.stop,
    )?;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
        _ => {}
    }
    errln!(
        "\nember: prompt {} tokens, beam search of {} kept {} tokens (score {:.4}, {}) in {:.2} s | threads={} kernels={}",
        prompt.len(),
        a.sampling.beam,
        r.len,
        r.score,
        if r.finished { "ended" } else { "token limit" },
        t0.elapsed().as_secs_f64(),
        pool.threads(),
        model.kernels.name()
    );
    Ok(())
}
