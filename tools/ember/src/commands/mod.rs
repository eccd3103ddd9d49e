//! One module per subcommand.

pub mod bench;
pub mod chat;
pub mod inspect;
pub mod kld;
pub mod perplexity;
pub mod quantize;
pub mod run;
#[cfg(target_os = "linux")]
pub mod serial;
pub mod serve;
pub mod template;
pub mod tokenize;

use crate::load;
use clap::Args as ClapArgs;
use std::path::PathBuf;

/// Options every model-running command takes.
#[derive(ClapArgs, Clone, Debug)]
pub struct ModelArgs {
    /// Model file (GGUF). Default: $EMBER_MODEL, then models/SmolLM2-135M-Instruct.Q4_1.gguf
    #[arg(short = 'm', long = "model")]
    pub model: Option<PathBuf>,
    /// Kernel set: auto, avx512-vnni, avx2, scalar, neon, neon-dotprod; `exact` or SET+exact for llama.cpp's order of Q4_0/Q4_1/Q8_0 (also $EMBER_KERNELS)
    #[arg(long, env = "EMBER_KERNELS")]
    pub kernels: Option<String>,
}

/// Sampling flags shared by the generating commands (see `ember_runtime::sampler` for the order
/// they apply in).
#[derive(ClapArgs, Clone, Debug)]
pub struct SamplingArgs {
    /// Temperature; 0 is greedy (the default, for reproducible output).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
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
    /// Beam search with B beams instead of sampling (B sessions; the best sequence by mean
    /// log-probability is printed when the search ends). 0: off.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=16))]
    pub beam: u16,
}

/// Output grammar flags of the generating commands.
#[derive(ClapArgs, Clone, Debug)]
pub struct GrammarArgs {
    /// Keep the output inside this GBNF grammar (llama.cpp's syntax; its `root` rule).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["json", "json_schema"])]
    pub grammar: Option<PathBuf>,
    /// Keep the output a JSON value (the built-in JSON grammar).
    #[arg(long, conflicts_with = "json_schema")]
    pub json: bool,
    /// Keep the output JSON that this JSON Schema accepts (see the README for the keywords).
    #[arg(long = "json-schema", value_name = "FILE")]
    pub json_schema: Option<PathBuf>,
}

impl GrammarArgs {
    /// [`GrammarArgs::source`], refused with a beam search (`beam` > 0), which cannot follow
    /// a grammar.
    pub fn source_without_beam(&self, beam: u16) -> load::CliResult<Option<String>> {
        let src = self.source()?;
        if src.is_some() && beam > 0 {
            return Err(load::CliError(
                "--grammar, --json and --json-schema are not available with --beam".into(),
            ));
        }
        Ok(src)
    }

    /// The grammar's source, if one is asked for (checked: it compiles).
    pub fn source(&self) -> load::CliResult<Option<String>> {
        use ember_runtime::grammar::{gbnf_from_schema, Grammar, JSON};
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p).map_err(|e| load::CliError(format!("{}: {e}", p.display())))
        };
        match (&self.grammar, self.json, &self.json_schema) {
            (Some(p), _, _) => {
                let src = read(p)?;
                // A syntax check before the model loads: token names are looked up in the
                // vocabulary when the engine compiles the grammar.
                Grammar::compile_owned_with_tokens(&src, &|_| Ok(0))
                    .map_err(|e| load::CliError(format!("{}: {e}", p.display())))?;
                Ok(Some(src))
            }
            // The converter's grammars compile by construction.
            (None, _, Some(p)) => gbnf_from_schema(&read(p)?)
                .map(Some)
                .map_err(|e| load::CliError(format!("{}: {e}", p.display()))),
            (None, true, None) => Ok(Some(JSON.to_string())),
            (None, false, None) => Ok(None),
        }
    }
}

/// The sessions a command runs at once, for the memory budget.
#[derive(Clone, Copy, Debug)]
pub enum Sessions {
    /// One session.
    One,
    /// A beam search: `(width, max_tokens)`.
    Beam(usize, usize),
    /// A server's slots.
    Slots(usize),
}

/// Runs a beam search of `width` beams from `prompt` with sessions shaped `sc`; returns the best
/// text (cut before the first stop string) and the search result.
#[allow(clippy::too_many_arguments)]
pub fn beam_text(
    model: &ember_runtime::model::Model<'_>,
    pool: &ember_runtime::parallel::ThreadPool,
    sc: &ember_runtime::session::SessionConfig,
    width: usize,
    prompt: &[u32],
    max_tokens: usize,
    ignore_eos: bool,
    stops: &[String],
) -> load::CliResult<(String, ember_runtime::session::BeamResult)> {
    use ember_runtime::arena::try_zeroed;
    use ember_runtime::arena::Arena;
    use ember_runtime::session::{beam_search, BeamOptions, BeamScratch, Session};
    let size = Session::plan(model, sc)?.total;
    let mut mem = Vec::new();
    for _ in 0..width {
        mem.push(try_zeroed(size, "beam session memory")?);
    }
    let mut sessions = Vec::with_capacity(width);
    for buf in mem.iter_mut() {
        let mut s = Session::new(model, &mut Arena::new(buf), sc)?;
        s.set_parallel(pool);
        sessions.push(s);
    }
    let mut smem = try_zeroed(
        BeamScratch::bytes_needed(width, max_tokens),
        "beam search memory",
    )?;
    let mut scratch = BeamScratch::new(&mut Arena::new(&mut smem), width, max_tokens)?;
    let opts = BeamOptions {
        width,
        max_tokens,
        length_penalty: 1.0,
        ignore_eos,
    };
    let r = beam_search(&mut sessions, prompt, &opts, &mut scratch)?;
    let bytes = model.tokenizer.decode_to_vec(scratch.best(&r), false);
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if let Some(cut) = stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
    {
        text.truncate(cut);
    }
    Ok((text, r))
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

/// Context, KV cache and board flags shared by the commands that run the model.
#[derive(ClapArgs, Clone, Debug)]
pub struct ContextArgs {
    /// Context size in tokens: the KV ring's capacity [default: the board's, else 2048]
    #[arg(short = 'c', long = "ctx")]
    pub ctx: Option<usize>,
    /// Leading tokens the ring cache never overwrites (attention sinks)
    #[arg(long, default_value_t = ember_runtime::session::DEFAULT_SINKS)]
    pub sinks: usize,
    /// KV cache precision: f16, f32 or q8_0 [default: the board's, else f16]
    #[arg(long = "kv-type")]
    pub kv_type: Option<String>,
    /// Board profile (pi-zero-2w, pi-3b, pi-4, pi-5): its threads, context and KV type unless
    /// given, and its memory budget, checked before anything is allocated
    #[arg(long)]
    pub board: Option<String>,
    /// Threads [default: the board's, else the number of physical cores]
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    /// Prompt tokens evaluated together (512, as llama.cpp batches them, gives its bits for long
    /// prompts; smaller saves memory)
    #[arg(short = 'b', long = "batch")]
    pub batch: Option<usize>,
}

impl ContextArgs {
    /// The board named by `--board`.
    pub fn board(&self) -> load::CliResult<Option<&'static ember_boards::Board>> {
        self.board
            .as_deref()
            .map(|n| {
                ember_boards::find(n).ok_or_else(|| {
                    let all: Vec<_> = ember_boards::BOARDS.iter().map(|b| b.name).collect();
                    load::CliError(format!(
                        "unknown board '{n}' (choose from: {})",
                        all.join(", ")
                    ))
                })
            })
            .transpose()
    }

    /// `-t`, else the board's threads, else `None` (the physical cores).
    pub fn threads(&self) -> load::CliResult<Option<usize>> {
        Ok(self.threads.or(self.board()?.map(|b| b.threads)))
    }

    /// The session configuration for `model`, checked (and checked against the board's budget
    /// for every session `sessions` says will run).
    pub fn session_config(
        &self,
        model: &ember_runtime::model::Model<'_>,
        default_ctx: usize,
        n_batch: usize,
        sessions: Sessions,
    ) -> load::CliResult<ember_runtime::session::SessionConfig> {
        use ember_runtime::kv::KvType;
        use ember_runtime::session::{Session, SessionConfig};
        let board = self.board()?;
        let n_train = model.config.n_ctx_train;
        let n_ctx = match (self.ctx, board) {
            (Some(c), _) => c,
            (None, Some(b)) => b.n_ctx.min(n_train),
            (None, None) => default_ctx.min(n_train),
        };
        let kv_type = match (&self.kv_type, board) {
            (Some(t), _) => KvType::from_name(t).ok_or_else(|| {
                load::CliError(format!(
                    "unknown KV cache type '{t}' (choose from: f16, f32, q8_0)"
                ))
            })?,
            (None, Some(b)) => b.kv_type,
            (None, None) => KvType::F16,
        };
        // The engine's checks and messages (context, sinks, batch).
        let sc = ember_runtime::engine::Settings {
            n_ctx,
            n_batch: self.batch.unwrap_or(n_batch),
            sinks: self.sinks,
            kv_type,
            ..Default::default()
        }
        .check(model)?;
        let plan = Session::plan(model, &sc)?;
        // A beam search runs `width` sessions plus its scratch; a server one per slot.
        let (copies, beam_scratch, what, flag) = match sessions {
            Sessions::Beam(w, n) if w > 0 => (
                w,
                ember_runtime::session::BeamScratch::bytes_needed(w, n),
                "beams",
                "--beam",
            ),
            Sessions::Slots(n) if n > 1 => (n, 0, "slots", "--slots"),
            _ => (1, 0, "", ""),
        };
        if let Some(b) = board {
            let fp = ember_boards::Footprint {
                weights: model.gguf.bytes().len(),
                model_tables: ember_runtime::model::Model::memory_needed(&model.gguf)?,
                session: plan.total.saturating_mul(copies) + beam_scratch,
            };
            let with_ctx = |c: usize| {
                Session::plan(model, &SessionConfig { n_ctx: c, ..sc })
                    .ok()
                    .map(|p| p.total.saturating_mul(copies) + beam_scratch)
            };
            if let Err(e) = b.check(&fp, n_train, with_ctx) {
                let mib = |x: usize| x as f64 / 1048576.0;
                let hint =
                    match e.max_ctx {
                        Some(c) => format!(
                        "a context of at most {c} tokens (-c {c}) would fit with --kv-type {}{}",
                        kv_type.name(),
                        if copies > 1 { format!(" and {flag} {copies}") } else { String::new() }
                    ),
                        None if copies > 1 => format!("no context fits {copies} {what}; use fewer"),
                        None => "the model alone does not fit".to_string(),
                    };
                let beams = if copies > 1 {
                    format!(" for {copies} {what}")
                } else {
                    String::new()
                };
                return Err(load::CliError(format!(
                    "this configuration needs {:.1} MiB (weights {:.1}, KV cache {:.1}{beams}, scratch {:.1}), more than the {} budget of {} MiB; {hint}",
                    mib(e.needed),
                    mib(fp.weights),
                    mib(plan.kv_cache * copies),
                    mib((plan.scratch + plan.logits) * copies + beam_scratch + fp.model_tables),
                    b.name,
                    b.budget_mib
                )));
            }
        }
        Ok(sc)
    }
}

/// What a command that runs engines opens: the model, the thread pool and the checked session
/// configuration (against the board's budget for `sessions`).
pub struct Opened {
    pub loaded: std::sync::Arc<ember_runtime::engine::LoadedModel>,
    pub pool: std::sync::Arc<ember_runtime::parallel::ThreadPool>,
    pub sc: ember_runtime::session::SessionConfig,
}

impl Opened {
    /// Opens `-m`'s model with `--kernels`, `-t`'s pool and the context flags' configuration.
    pub fn open(
        model: &ModelArgs,
        context: &ContextArgs,
        sessions: Sessions,
    ) -> load::CliResult<Self> {
        let kernels = load::kernels(model.kernels.as_deref())?;
        let pool = std::sync::Arc::new(load::thread_pool(context.threads()?)?);
        let loaded = load::open_model(load::model_path(model.model.clone()), kernels)?;
        let sc = context.session_config(
            loaded.model(),
            2048,
            ember_runtime::session::SessionConfig::default().n_batch,
            sessions,
        )?;
        Ok(Opened { loaded, pool, sc })
    }

    /// An engine with this configuration on the shared pool, sampling with `sampler`, inside
    /// `grammar` (GBNF) when given.
    pub fn engine(
        &self,
        sampler: ember_runtime::sampler::SamplerConfig,
        grammar: Option<&str>,
    ) -> load::CliResult<ember_runtime::engine::Engine> {
        use ember_runtime::parallel::Parallel;
        let sc = &self.sc;
        let settings = ember_runtime::engine::Settings {
            n_ctx: sc.n_ctx,
            n_batch: sc.n_batch,
            sinks: sc.sinks,
            kv_type: sc.kv_type,
            threads: self.pool.threads(),
            sampler,
        };
        let mut e = ember_runtime::engine::Engine::new(
            std::sync::Arc::clone(&self.loaded),
            &settings,
            Some(std::sync::Arc::clone(&self.pool)),
        )?;
        e.set_grammar(grammar)?;
        Ok(e)
    }
}
