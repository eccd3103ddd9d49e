//! The host engine (`std`): a model and sessions that own their memory, for front ends.
//!
//! The core modules borrow everything (a [`Session`] borrows its model, its arena and its
//! threads), which is what a board wants and what makes them awkward to hold in a program. Here
//! the same pieces are owned: a [`LoadedModel`] holds its file (memory-mapped) and its tables;
//! an [`Engine`] holds one session's buffers, its sampler, its grammar, its conversation and a
//! share of a thread pool. Every front end (the CLI, the C ABI, the server) is I/O around these,
//! so defaults, checks and the chat-turn policy exist once:
//!
//! - [`Settings`]: context, batch, sinks, KV type, threads and sampling, checked against a
//!   model with one set of messages;
//! - [`Engine::chat`]: one turn of a conversation (the sampler and grammar restart each turn; a
//!   turn stopped before its message reached the cache is taken back; a reply stopped half-way
//!   is kept as far as it went);
//! - [`Engine::generate`]: raw text continued;
//! - [`Engine::begin`] / [`Engine::advance`]: the same, a step at a time, for a caller that
//!   interleaves several engines (a server's slots) and wants the longest cached prefix reused.
//!
//! Memory is allocated when a model or an engine is made, never while generating.

use crate::arena::{try_zeroed, Arena};
use crate::chat::tools::ToolSet;
use crate::chat::{ChatTemplate, Conversation, Message};
use crate::error::{Error, Result};
use crate::gguf::{Gguf, MappedFile};
use crate::grammar::{Constraint, Grammar, MatcherLimits, OwnedGrammar};
use crate::kernels::Kernels;
use crate::kv::KvType;
use crate::model::Model;
use crate::parallel::ThreadPool;
use crate::sampler::{Sampler, SamplerConfig};
use crate::session::{
    self, GenOptions, GenStats, Generation, Session, SessionConfig, Step, StopReason, MAX_STOPS,
};
use crate::tokenizer::TokenId;
use core::sync::atomic::{AtomicBool, Ordering};
use std::path::Path;
use std::string::String;
use std::sync::Arc;
use std::vec::Vec;

/// Most threads a setting may ask for.
pub const MAX_THREADS: usize = 256;
/// The context when none is asked for (at most the model's own).
pub const DEFAULT_CTX: usize = 2048;

/// A heap buffer that structures borrowing it can hold with a `'static` lifetime: it is
/// allocated once, never moved (only its address is kept), and freed on drop, after its
/// borrowers (each owner declares its borrowers first).
struct Buffer {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the buffer is plain bytes owned by this value; access goes through the borrowers.
unsafe impl Send for Buffer {}
// SAFETY: as above; `Buffer` itself gives no access.
unsafe impl Sync for Buffer {}

impl Buffer {
    /// `n` zeroed bytes, or [`Error::OutOfMemory`].
    fn new(n: usize, what: &'static str) -> Result<Self> {
        let b = try_zeroed(n, what)?.into_boxed_slice();
        let len = b.len();
        Ok(Buffer {
            ptr: Box::into_raw(b) as *mut u8,
            len,
        })
    }

    /// The bytes, for one borrower that the owner drops before this buffer.
    ///
    /// # Safety
    /// Called once per buffer (one mutable view), and the view must not outlive `self`.
    unsafe fn view(&mut self) -> &'static mut [u8] {
        // SAFETY: `ptr` is a live allocation of `len` bytes (from `Box::into_raw`), and the
        // caller takes the only view, dropped before the buffer.
        unsafe { core::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        let raw = core::ptr::slice_from_raw_parts_mut(self.ptr, self.len);
        // SAFETY: `ptr`/`len` came from `Box::into_raw` of a boxed slice, freed once here.
        drop(unsafe { Box::from_raw(raw) });
    }
}

/// Where a model's bytes live.
enum Backing {
    /// A memory-mapped file, unmapped on drop.
    File(#[allow(dead_code)] MappedFile),
    /// Memory the caller keeps alive ([`LoadedModel::from_static`]).
    Static,
}

/// A model with its file and tables, owned. Read-only once open, so one model can be shared by
/// any number of engines and threads (through an `Arc`).
pub struct LoadedModel {
    // Field order is drop order: the model borrows the tables and the file.
    model: Model<'static>,
    _tables: Buffer,
    _backing: Backing,
}

// Shared between threads as it is (its parts are Send and Sync): checked here.
const _: fn() = || {
    fn shareable<T: Send + Sync>() {}
    shareable::<LoadedModel>();
};

impl LoadedModel {
    /// Opens the GGUF model at `path` (memory-mapped; the file must not change while open).
    pub fn open(path: impl AsRef<Path>, kernels: Kernels) -> Result<Self> {
        let file = MappedFile::open(path)?;
        // SAFETY: the mapping lives in the returned value, with the model that borrows it,
        // which is dropped first (field order); moving the MappedFile does not move the mapping.
        let bytes: &'static [u8] =
            unsafe { core::slice::from_raw_parts(file.bytes().as_ptr(), file.bytes().len()) };
        Self::load(bytes, Backing::File(file), kernels)
    }

    /// A model read in place from `bytes` (nothing is copied).
    pub fn from_static(bytes: &'static [u8], kernels: Kernels) -> Result<Self> {
        Self::load(bytes, Backing::Static, kernels)
    }

    fn load(bytes: &'static [u8], backing: Backing, kernels: Kernels) -> Result<Self> {
        let g = Gguf::parse(bytes)?;
        let mut tables = Buffer::new(Model::memory_needed(&g)?, "model tables")?;
        // SAFETY: the one view of the tables, held by the model, which is dropped before them.
        let view = unsafe { tables.view() };
        let model = Model::load(g, &mut Arena::new(view), kernels)?;
        Ok(LoadedModel {
            model,
            _tables: tables,
            _backing: backing,
        })
    }

    /// The model.
    pub fn model(&self) -> &Model<'_> {
        &self.model
    }

    /// The model with the lifetime of its owner, for sessions whose owner keeps an `Arc` of
    /// this value alive longer than them.
    fn model_static(self: &Arc<Self>) -> &'static Model<'static> {
        // SAFETY: callers (Engine) hold a clone of the Arc for as long as the reference, and
        // drop the reference's users first (field order).
        unsafe { &*(&self.model as *const Model<'static>) }
    }
}

/// Everything a session is made with, checked against a model by [`Settings::check`]. The
/// defaults are every front end's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    /// Context in tokens (the KV ring's capacity), at most the model's training context.
    pub n_ctx: usize,
    /// Prompt tokens evaluated together.
    pub n_batch: usize,
    /// Leading tokens the ring cache never overwrites (fewer than `n_ctx`).
    pub sinks: usize,
    /// KV cache precision.
    pub kv_type: KvType,
    /// Threads for the forward pass; 0 = one per physical core.
    pub threads: usize,
    /// Sampling (greedy by default).
    pub sampler: SamplerConfig,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            n_ctx: DEFAULT_CTX,
            n_batch: SessionConfig::default().n_batch,
            sinks: session::DEFAULT_SINKS,
            kv_type: KvType::F16,
            threads: 0,
            sampler: SamplerConfig::default(),
        }
    }
}

impl Settings {
    /// The thread count these settings run with (0 resolved to the physical cores).
    pub fn threads(&self) -> usize {
        match self.threads {
            0 => crate::parallel::default_threads(),
            n => n,
        }
    }

    /// The session configuration for `model`, after checking every setting.
    pub fn check(&self, model: &Model<'_>) -> Result<SessionConfig> {
        let n_train = model.config.n_ctx_train;
        let range = |what, value: usize, min: usize, max: usize| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(Error::Setting {
                    what,
                    value: value as u64,
                    min: min as u64,
                    max: max as u64,
                })
            }
        };
        range("the context (n_ctx)", self.n_ctx, 1, n_train)?;
        range(
            "the attention sinks",
            self.sinks,
            0,
            self.n_ctx.saturating_sub(1),
        )?;
        range("the prompt batch", self.n_batch, 1, usize::MAX)?;
        range("the thread count", self.threads, 0, MAX_THREADS)?;
        self.sampler.validate()?;
        Ok(SessionConfig {
            n_ctx: self.n_ctx,
            n_batch: self.n_batch,
            sinks: self.sinks,
            kv_type: self.kv_type,
        })
    }

    /// A thread pool of [`Settings::threads`] threads.
    pub fn thread_pool(&self) -> Result<Arc<ThreadPool>> {
        ThreadPool::new(self.threads())
            .map(Arc::new)
            .map_err(|_| Error::InvalidArgument("the system refused to start the threads"))
    }
}

/// A grammar set on an engine: the compiled rules and the constraint over the vocabulary.
struct EngineGrammar {
    // Field order is drop order: the constraint borrows the memory and the grammar.
    constraint: Constraint<'static, 'static>,
    _mem: Buffer,
    _grammar: Box<OwnedGrammar>,
    /// The source it was compiled from.
    source: String,
}

/// Limits of one step-wise generation ([`Engine::begin`]).
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Stop when one of these appears (at most [`MAX_STOPS`]; the output ends before it).
    pub stop: Vec<String>,
    /// Keep going past end-of-generation tokens.
    pub ignore_eos: bool,
}

/// How one generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Why it ended.
    pub reason: StopReason,
    /// Its counters.
    pub stats: GenStats,
}

/// A step-wise generation in progress.
struct Active {
    prompt: Vec<TokenId>,
    generation: Generation,
    request: Request,
}

/// What [`Engine::advance`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Evaluated a batch of the prompt; this many prompt tokens are left.
    Prompt(usize),
    /// Generated a token (its text, if it completed any, went to the callback).
    Token,
    /// The generation ended (the engine is idle again).
    Done(Outcome),
}

/// One conversation's engine: a session and everything it runs with, owned.
pub struct Engine {
    // Field order is drop order: everything above `model` may borrow what follows it.
    active: Option<Active>,
    grammar: Option<EngineGrammar>,
    tools: Option<ToolSet>,
    conversation: Conversation,
    session: Session<'static, 'static>,
    sampler: Sampler<'static>,
    _session_mem: Buffer,
    _sampler_mem: Buffer,
    cancel: Arc<AtomicBool>,
    _pool: Arc<ThreadPool>,
    model: Arc<LoadedModel>,
    config: SessionConfig,
}

impl Engine {
    /// An engine over `model` with `settings` (checked), running on `pool` (`None`: a pool of
    /// its own with the settings' threads). Every buffer is allocated here.
    pub fn new(
        model: Arc<LoadedModel>,
        settings: &Settings,
        pool: Option<Arc<ThreadPool>>,
    ) -> Result<Self> {
        let m = model.model_static();
        let config = settings.check(m)?;
        let pool = match pool {
            Some(p) => p,
            None => settings.thread_pool()?,
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let mut session_mem = Buffer::new(Session::plan(m, &config)?.total, "session memory")?;
        // SAFETY: the one view of the session memory, held by the session, dropped before it.
        let mut session = Session::new(m, &mut Arena::new(unsafe { session_mem.view() }), &config)?;
        // SAFETY: the pool and the flag are `Arc`s this engine holds past the session (field
        // order), and an `Arc`'s value does not move.
        let (par, flag): (&'static ThreadPool, &'static AtomicBool) =
            unsafe { (&*Arc::as_ptr(&pool), &*Arc::as_ptr(&cancel)) };
        session.set_parallel(par);
        session.set_cancel(flag);
        let n_vocab = m.config.n_vocab;
        let mut sampler_mem = Buffer::new(
            Sampler::bytes_needed(n_vocab, &settings.sampler),
            "sampler memory",
        )?;
        // SAFETY: the one view of the sampler memory, held by the sampler, dropped before it.
        let sampler = Sampler::new(
            &mut Arena::new(unsafe { sampler_mem.view() }),
            n_vocab,
            settings.sampler,
        )?;
        Ok(Engine {
            active: None,
            grammar: None,
            tools: None,
            conversation: Conversation::new(m, None)?,
            session,
            sampler,
            _session_mem: session_mem,
            _sampler_mem: sampler_mem,
            cancel,
            _pool: pool,
            model,
            config,
        })
    }

    /// The model.
    pub fn model(&self) -> &Model<'_> {
        self.model.model()
    }

    /// The session (its cache, position and last logits).
    pub fn session(&self) -> &Session<'static, 'static> {
        &self.session
    }

    /// The session configuration in use.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Threads the forward pass uses.
    pub fn threads(&self) -> usize {
        self.session.threads()
    }

    /// The flag that stops the running call from any thread (see [`Engine::chat`]). The engine
    /// clears it when a call starts.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.cancel)
    }

    /// The conversation [`Engine::chat`] keeps.
    pub fn conversation(&mut self) -> &mut Conversation {
        &mut self.conversation
    }

    /// Forgets the context, the conversation and any step-wise generation.
    pub fn reset(&mut self) {
        self.active = None;
        self.session.reset();
        self.sampler.reset();
        self.conversation.reset();
    }

    /// The sampling settings in use.
    pub fn sampling(&self) -> &SamplerConfig {
        self.sampler.config()
    }

    /// New sampling settings (the penalty window may not exceed the one the engine was made
    /// with).
    pub fn set_sampling(&mut self, cfg: SamplerConfig) -> Result<()> {
        self.sampler.reconfigure(cfg)
    }

    /// Full-vocabulary masks the grammar has computed so far (`None` without a grammar).
    pub fn grammar_masks(&self) -> Option<u64> {
        self.grammar.as_ref().map(|g| g.constraint.masks)
    }

    /// Offers `tools` to the model in every later chat turn (`None`: no tools), in the format
    /// its template asks for, and keeps each reply to a call of one of them (or, with
    /// [`ToolChoice::Auto`](crate::chat::tools::ToolChoice), an answer): the tool set's grammar
    /// replaces any other. Starts a new conversation. Read a reply with
    /// [`ToolSet::parse_reply`] ([`Engine::tools`]) and send a call's result back with
    /// [`Engine::chat_as`] `("tool", …)`.
    pub fn set_tools(&mut self, tools: Option<ToolSet>) -> Result<()> {
        self.set_grammar(tools.as_ref().map(ToolSet::grammar))?;
        self.conversation.set_tools(tools.as_ref());
        self.tools = tools;
        self.reset();
        Ok(())
    }

    /// The tools offered ([`Engine::set_tools`]).
    pub fn tools(&self) -> Option<&ToolSet> {
        self.tools.as_ref()
    }

    /// Keeps every later reply inside the GBNF grammar `gbnf` (`None` removes it). A grammar
    /// that does not compile is an error, and the engine keeps the grammar it had. The same
    /// source again keeps the compiled grammar (a server's requests often repeat one).
    pub fn set_grammar(&mut self, gbnf: Option<&str>) -> Result<()> {
        let Some(src) = gbnf else {
            self.grammar = None;
            return Ok(());
        };
        if self.grammar.as_ref().is_some_and(|g| g.source == src) {
            return Ok(());
        }
        self.grammar = Some(self.compile_grammar(src)?);
        Ok(())
    }

    fn compile_grammar(&self, src: &str) -> Result<EngineGrammar> {
        let tok = &self.session.model().tokenizer;
        let lookup = |text: &str| {
            tok.find(text.as_bytes())
                .ok_or("no token of the model's vocabulary has this text")
        };
        let grammar = Box::new(Grammar::compile_owned_with_tokens(src, &lookup)?);
        // SAFETY: the compiled grammar is boxed in the EngineGrammar next to the constraint
        // that borrows it, which is declared (and so dropped) first; its vectors do not move.
        let g: &'static OwnedGrammar = unsafe { &*(grammar.as_ref() as *const OwnedGrammar) };
        let limits = MatcherLimits::default();
        let mut mem = Buffer::new(Constraint::bytes_needed(&limits, tok), "grammar memory")?;
        // SAFETY: the one view of the grammar memory, held by the constraint, dropped first.
        let constraint = Constraint::new(
            g.grammar(),
            &mut Arena::new(unsafe { mem.view() }),
            &limits,
            tok,
        )?;
        Ok(EngineGrammar {
            constraint,
            _mem: mem,
            _grammar: grammar,
            source: src.to_string(),
        })
    }

    /// Appends `prompt` (verbatim; special tokens recognised; BOS where the model wants one at
    /// the start of the context) to the context and generates, calling `on_text` with each
    /// piece; `on_text` returns false to stop. Text outside the conversation: the next chat
    /// turn feeds the whole conversation again.
    pub fn generate(
        &mut self,
        prompt: &str,
        opts: &GenOptions<'_>,
        on_prefill_done: &mut dyn FnMut(),
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Outcome> {
        self.start_call();
        let first = self.session.n_past() == 0;
        let ids = self
            .session
            .model()
            .tokenizer
            .encode_to_vec(prompt.as_bytes(), true, first)?;
        if ids.is_empty() && self.session.logits().is_none() {
            return Err(Error::InvalidArgument("the prompt is empty"));
        }
        self.conversation.reset_cache();
        self.run(&ids, opts, on_prefill_done, on_text)
    }

    /// One chat turn: `user` through the model's chat template (the conversation so far is
    /// kept, and only the tokens the cache lacks are fed), then the reply streamed to
    /// `on_text`. The policy every front end shares: the sampler and the grammar restart each
    /// turn; a turn stopped or failed before its message was in the cache is taken back (the
    /// conversation is as before it, the error returned); once the message is in, the reply is
    /// kept as far as it went, also when the callback or the cancel flag stopped it.
    pub fn chat(
        &mut self,
        user: &str,
        opts: &GenOptions<'_>,
        on_prefill_done: &mut dyn FnMut(),
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Outcome> {
        self.chat_as("user", user, opts, on_prefill_done, on_text)
    }

    /// [`Engine::chat`] with a message of another role the template knows (`tool`: the result
    /// of a call the last reply made).
    pub fn chat_as(
        &mut self,
        role: &str,
        text: &str,
        opts: &GenOptions<'_>,
        on_prefill_done: &mut dyn FnMut(),
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Outcome> {
        self.start_call();
        let ids = self.conversation.turn(&mut self.session, role, text)?;
        self.sampler.reset();
        let mut reply = String::new();
        let mut prompt_done = false;
        let mut prefilled = || {
            prompt_done = true;
            on_prefill_done();
        };
        let r = self.run(&ids, opts, &mut prefilled, &mut |piece| {
            reply.push_str(piece);
            on_text(piece)
        });
        if prompt_done {
            self.conversation.assistant_reply(&self.session, &reply);
        } else {
            self.conversation.cancel_turn();
        }
        r
    }

    /// A call begins: the cancel flag is cleared and any step-wise generation dropped.
    fn start_call(&mut self) {
        self.cancel.store(false, Ordering::SeqCst);
        self.active = None;
    }

    fn run(
        &mut self,
        ids: &[TokenId],
        opts: &GenOptions<'_>,
        on_prefill_done: &mut dyn FnMut(),
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Outcome> {
        let constraint = match self.grammar.as_mut() {
            Some(g) => {
                g.constraint.reset()?;
                Some(&mut g.constraint)
            }
            None => None,
        };
        let (reason, stats) = session::generate_constrained(
            &mut self.session,
            &mut self.sampler,
            constraint,
            ids,
            opts,
            on_prefill_done,
            on_text,
        )?;
        Ok(Outcome { reason, stats })
    }

    /// Tokens of `ids` the cache already holds, from the start (the common prefix).
    pub fn cached_prefix(&self, ids: &[TokenId]) -> usize {
        let s = &self.session;
        let n = s.n_past().min(ids.len());
        (0..n)
            .take_while(|&p| s.token_at(p) == Some(ids[p]))
            .count()
    }

    /// Starts a step-wise generation from the whole prompt `ids` (the context is replaced by
    /// it; the longest prefix the cache already holds is kept and not evaluated again).
    /// Returns the number of prompt tokens reused. Then call [`Engine::advance`] until it
    /// returns [`Progress::Done`]. The sampler and grammar restart.
    pub fn begin(&mut self, ids: Vec<TokenId>, request: Request) -> Result<usize> {
        self.start_call();
        if ids.is_empty() {
            return Err(Error::InvalidArgument("the prompt is empty"));
        }
        if request.stop.len() > MAX_STOPS {
            return Err(Error::InvalidArgument("at most 8 stop strings"));
        }
        // At least the last prompt token is evaluated, for its logits.
        let mut keep = self.cached_prefix(&ids).min(ids.len() - 1);
        if self.session.truncate(keep).is_err() {
            // The ring has overwritten part of the prefix: start over.
            self.session.reset();
            keep = 0;
        }
        if keep == 0 {
            self.session.reset();
        }
        self.conversation.reset_cache();
        self.sampler.reset();
        if let Some(g) = self.grammar.as_mut() {
            g.constraint.reset()?;
        }
        for &t in &ids[..keep] {
            self.sampler.accept(t);
        }
        let prompt = ids[keep..].to_vec();
        let generation = with_stops(&request, |opts| Generation::new(prompt.len(), opts))?;
        self.active = Some(Active {
            prompt,
            generation,
            request,
        });
        Ok(keep)
    }

    /// Stops the step-wise generation (the cache keeps what was evaluated).
    pub fn abort(&mut self) {
        self.active = None;
    }

    /// One step of the generation [`Engine::begin`] started: a batch of the prompt, or one
    /// token (whose text goes to `on_text`; returning false stops). An error ends the
    /// generation.
    pub fn advance(&mut self, on_text: &mut dyn FnMut(&str) -> bool) -> Result<Progress> {
        let Some(a) = self.active.as_mut() else {
            return Err(Error::InvalidArgument("no generation is running (begin)"));
        };
        let batch = self.config.n_batch;
        let (session, sampler) = (&mut self.session, &mut self.sampler);
        let constraint = self.grammar.as_mut().map(|g| &mut g.constraint);
        let r = if a.generation.prompt_left() > 0 {
            a.generation
                .feed_prompt(session, sampler, &a.prompt, batch)
                .map(|()| Progress::Prompt(a.generation.prompt_left()))
        } else {
            let (g, request) = (&mut a.generation, &a.request);
            with_stops(request, |opts| {
                g.step(session, sampler, constraint, opts, on_text)
            })
            .map(|done| match done {
                Some(reason) => Progress::Done(Outcome {
                    reason,
                    stats: g.stats(),
                }),
                None => Progress::Token,
            })
        };
        if !matches!(r, Ok(Progress::Prompt(_)) | Ok(Progress::Token)) {
            self.active = None;
        }
        r
    }
}

/// One step of each engine's step-wise generation, with the tokens of every engine that is
/// decoding evaluated together ([`Session::eval_each`]: one pass over the weights for all of
/// them, each engine's numbers bit for bit those of [`Engine::advance`]); an engine still in
/// its prompt evaluates a batch of it on its own. `on_text(i, piece)` gets engine `i`'s text
/// (returning false stops that engine). The engines share one model (and should share a thread
/// pool: the first decoding engine's runs the batch). Returns each engine's progress; an error
/// ends that engine's generation.
pub fn advance_together(
    engines: &mut [&mut Engine],
    on_text: &mut dyn FnMut(usize, &str) -> bool,
) -> Vec<Result<Progress>> {
    let mut out: Vec<Result<Progress>> = Vec::with_capacity(engines.len());
    let mut feed: Vec<(usize, TokenId)> = Vec::new();
    for (i, e) in engines.iter_mut().enumerate() {
        let Some(a) = e.active.as_mut() else {
            out.push(Err(Error::InvalidArgument(
                "no generation is running (begin)",
            )));
            continue;
        };
        if a.generation.prompt_left() > 0 {
            let r = e.advance(&mut |p| on_text(i, p));
            out.push(r);
            continue;
        }
        let (session, sampler) = (&mut e.session, &mut e.sampler);
        let constraint = e.grammar.as_mut().map(|g| &mut g.constraint);
        let (g, request) = (&mut a.generation, &a.request);
        let r = with_stops(request, |opts| {
            g.choose(session, sampler, constraint, opts, &mut |p| on_text(i, p))
        });
        match r {
            Ok(Step::Feed(t)) => {
                feed.push((i, t));
                out.push(Ok(Progress::Token));
            }
            Ok(Step::Done(reason)) => {
                out.push(Ok(Progress::Done(Outcome {
                    reason,
                    stats: g.stats(),
                })));
                e.active = None;
            }
            Err(err) => {
                out.push(Err(err));
                e.active = None;
            }
        }
    }
    if feed.is_empty() {
        return out;
    }
    let tokens: Vec<TokenId> = feed.iter().map(|&(_, t)| t).collect();
    let mut sessions: Vec<&mut Session<'static, 'static>> = engines
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| feed.iter().any(|&(j, _)| j == *i))
        .map(|(_, e)| &mut e.session)
        .collect();
    let r = Session::eval_each(&mut sessions, &tokens);
    for &(i, _) in &feed {
        let e = &mut engines[i];
        match &r {
            Ok(()) => {
                if let Some(a) = e.active.as_mut() {
                    a.generation.fed();
                }
            }
            Err(err) => {
                out[i] = Err(err.clone());
                e.active = None;
            }
        }
    }
    out
}

/// The tokens of `messages` (system first, if any) through `template`, with the generation
/// prompt, for generating outside an [`Engine`]'s conversation (a server request carries its
/// whole history). With `tools`, they are offered as the tool set's format says: through the
/// template, or joined to the system message.
pub fn chat_prompt(
    template: &ChatTemplate,
    model: &Model<'_>,
    messages: &[Message<'_>],
    tools: Option<&ToolSet>,
) -> Result<Vec<TokenId>> {
    let text = match tools.and_then(ToolSet::system_text) {
        Some(extra) => {
            let mut msgs = messages.to_vec();
            let joined = match msgs.first() {
                Some(m) if m.role == "system" => std::format!("{}\n\n{extra}", m.content),
                _ => extra,
            };
            let sys = Message {
                role: "system",
                content: &joined,
            };
            match msgs.first_mut() {
                Some(m) if m.role == "system" => *m = sys,
                _ => msgs.insert(0, sys),
            }
            template.render(&msgs, true)?
        }
        None => {
            let t = tools.and_then(ToolSet::template_tools);
            template.render_with_tools(messages, true, t.as_ref())?
        }
    };
    model.tokenizer.encode_to_vec(text.as_bytes(), true, false)
}

/// Runs `f` with `request` as generation options (the stop strings as `&str`s on the stack).
fn with_stops<R>(request: &Request, f: impl FnOnce(&GenOptions<'_>) -> R) -> R {
    let mut stops = [""; MAX_STOPS];
    let n = request.stop.len().min(MAX_STOPS);
    for (d, s) in stops.iter_mut().zip(&request.stop) {
        *d = s.as_str();
    }
    f(&GenOptions {
        max_tokens: request.max_tokens,
        ignore_eos: request.ignore_eos,
        stop: &stops[..n],
    })
}
