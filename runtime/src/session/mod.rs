//! A session: one conversation's state (KV cache and forward buffers) over a shared model, and
//! the generation loop.

use crate::arena::Arena;
use crate::error::{Error, Result};
use crate::kv::{KvCache, KvConfig, KvType};
use crate::model::{forward, Logits, Model, State};
use crate::parallel::{Parallel, Serial};
use crate::sampler::Sampler;
use crate::tokenizer::{TokenId, Utf8Stream};
use core::sync::atomic::{AtomicBool, Ordering};

/// Sizes fixed when a session is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SessionConfig {
    /// Context: tokens the KV cache holds.
    pub n_ctx: usize,
    /// Largest batch of prompt tokens evaluated together. The default, 512, is llama.cpp's
    /// micro-batch: its attention takes another (tiled) path for batches of 64 tokens or more,
    /// which ember mirrors, so batching prompts as llama.cpp does gives its bits.
    pub n_batch: usize,
    /// Leading tokens the ring cache never overwrites (attention sinks).
    pub sinks: usize,
    /// Precision of the KV cache.
    pub kv_type: KvType,
}

/// Most sessions [`Session::eval_each`] evaluates together.
pub const MAX_EACH: usize = 64;

/// Attention sinks kept by default.
pub const DEFAULT_SINKS: usize = 4;

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            n_ctx: 4096,
            n_batch: 512,
            sinks: DEFAULT_SINKS,
            kv_type: KvType::F16,
        }
    }
}

impl SessionConfig {
    fn kv(&self) -> KvConfig {
        KvConfig {
            capacity: self.n_ctx,
            sinks: self.sinks,
            ty: self.kv_type,
        }
    }

    /// The batch actually used: at most the ring part of the context.
    fn batch(&self) -> usize {
        self.n_batch
            .min(self.n_ctx.saturating_sub(self.sinks))
            .max(1)
    }
}

/// Every buffer of a session, in bytes, computed before anything is allocated. The weights are
/// not in it: they stay in the (memory-mapped) model file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MemoryPlan {
    /// KV cache cells and the staging rows of one batch.
    pub kv_cache: usize,
    /// Forward-pass working buffers (activations of one batch, logits rows).
    pub scratch: usize,
    /// The last logits kept between calls, and the token of each cache cell.
    pub logits: usize,
    /// Total: the size of the one buffer a session is built in.
    pub total: usize,
}

/// One conversation: KV cache, buffers, and the last logits.
pub struct Session<'m, 's> {
    model: &'m Model<'m>,
    par: &'m dyn Parallel,
    state: State<'s>,
    kv: KvCache<'s>,
    logits: &'s mut [f32],
    has_logits: bool,
    /// The token of each KV cell (same ring mapping), `[n_ctx]`.
    tokens: &'s mut [TokenId],
    /// Set from any thread to stop a prompt evaluation or a generation (see [`Session::set_cancel`]).
    cancel: Option<&'m AtomicBool>,
}

impl<'m, 's> Session<'m, 's> {
    /// The memory plan of a session with `sc` for `model` (after checking `sc`).
    pub fn plan(model: &Model<'_>, sc: &SessionConfig) -> Result<MemoryPlan> {
        let c = &model.config;
        sc.kv().validate(&c.kv_shape())?;
        if sc.n_batch == 0 {
            return Err(Error::InvalidArgument("the batch size must be at least 1"));
        }
        let kv_cache = KvCache::bytes_needed(&c.kv_shape(), &sc.kv(), sc.batch());
        let scratch = State::bytes_needed(c, sc.batch());
        let logits = Arena::size_of::<f32>(c.n_vocab) + Arena::size_of::<TokenId>(sc.n_ctx);
        Ok(MemoryPlan {
            kv_cache,
            scratch,
            logits,
            total: kv_cache + scratch + logits,
        })
    }

    /// Arena bytes a session with `sc` needs for `model` (0 when `sc` is invalid).
    pub fn bytes_needed(model: &Model<'_>, sc: &SessionConfig) -> usize {
        Self::plan(model, sc).map_or(0, |p| p.total)
    }

    /// A session in `arena` (which should hold [`Session::bytes_needed`] bytes). The context may
    /// not exceed the model's training context; the sinks must be fewer than the context.
    pub fn new(model: &'m Model<'m>, arena: &mut Arena<'s>, sc: &SessionConfig) -> Result<Self> {
        let c = &model.config;
        let plan = Self::plan(model, sc)?;
        #[cfg(feature = "log")]
        log::debug!(
            "session: context {} ({} sinks, {} KV), batch {}: {} bytes (KV cache {}, scratch {})",
            sc.n_ctx,
            sc.sinks,
            sc.kv_type.name(),
            sc.batch(),
            plan.total,
            plan.kv_cache,
            plan.scratch + plan.logits
        );
        if arena.remaining() < plan.total {
            return Err(Error::Capacity {
                what: "session memory",
                needed: plan.total as u64,
                available: arena.remaining() as u64,
            });
        }
        Ok(Session {
            model,
            par: &Serial,
            kv: KvCache::new(arena, &c.kv_shape(), &sc.kv(), sc.batch())?,
            state: State::new(arena, c, sc.batch())?,
            logits: arena.alloc(c.n_vocab, "logits")?,
            has_logits: false,
            tokens: arena.alloc(sc.n_ctx, "session token log")?,
            cancel: None,
        })
    }

    /// Watches `flag`: once another thread (or a signal handler) sets it, [`Session::eval`]
    /// stops between prompt batches and between layers, and [`generate`] before the next token,
    /// with [`Error::Cancelled`]. A batch stopped half-way is not kept: the cache holds what it
    /// held before, except when that batch had begun to overwrite ring cells, in which case the
    /// context is dropped. The caller clears the flag before the next call.
    pub fn set_cancel(&mut self, flag: &'m AtomicBool) {
        self.cancel = Some(flag);
    }

    /// True when the cancel flag is set.
    pub fn cancelled(&self) -> bool {
        self.cancel.is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// Runs the forward pass on `par`'s threads from now on (a [`ThreadPool`](crate::parallel)).
    pub fn set_parallel(&mut self, par: &'m dyn Parallel) {
        self.par = par;
    }

    /// Threads the forward pass uses.
    pub fn threads(&self) -> usize {
        self.par.threads()
    }

    /// The model.
    pub fn model(&self) -> &'m Model<'m> {
        self.model
    }

    /// Tokens evaluated since the last reset (the position of the next token; may exceed the
    /// context once the ring cache has wrapped).
    pub fn n_past(&self) -> usize {
        self.kv.n_pos()
    }

    /// Context capacity.
    pub fn n_ctx(&self) -> usize {
        self.kv.capacity()
    }

    /// The KV cache.
    pub fn kv(&self) -> &KvCache<'s> {
        &self.kv
    }

    /// Keeps only the first `n` evaluated tokens (to continue from a common prefix). Fails once
    /// the ring cache has overwritten tokens.
    pub fn truncate(&mut self, n: usize) -> Result<()> {
        if n < self.kv.n_pos() {
            self.kv.truncate(n)?;
            self.has_logits = false;
        }
        Ok(())
    }

    /// The token at position `pos`, while the cache still holds it.
    pub fn token_at(&self, pos: usize) -> Option<TokenId> {
        self.kv.holds(pos).then(|| self.tokens[self.kv.cell(pos)])
    }

    /// Records the tokens of a batch just evaluated.
    fn log(&mut self, chunk: &[TokenId]) {
        let start = self.kv.n_pos() - chunk.len();
        for (i, &t) in chunk.iter().enumerate() {
            let cell = self.kv.cell(start + i);
            self.tokens[cell] = t;
        }
    }

    /// Makes this session a copy of `src` (same model and configuration), copying only the
    /// positions from `shared` on: the two must already hold the same tokens before `shared`
    /// (e.g. the same prompt). Used to fork beams without copying the whole cache.
    pub fn fork_from(&mut self, src: &Session<'_, '_>, shared: usize) -> Result<()> {
        if !core::ptr::eq(self.model, src.model) || self.tokens.len() != src.tokens.len() {
            return Err(Error::InvalidArgument("forking between different sessions"));
        }
        let shared = shared.min(src.n_past());
        self.kv.copy_positions_from(&src.kv, shared)?;
        for pos in shared..self.kv.n_pos() {
            if self.kv.holds(pos) {
                let c = self.kv.cell(pos);
                self.tokens[c] = src.tokens[c];
            }
        }
        self.logits.copy_from_slice(src.logits);
        self.has_logits = src.has_logits;
        Ok(())
    }

    /// Forgets the context.
    pub fn reset(&mut self) {
        self.kv.clear();
        self.has_logits = false;
    }

    /// Appends `tokens` to the context in batches, keeping the last token's logits.
    pub fn eval(&mut self, tokens: &[TokenId]) -> Result<()> {
        let n_batch = self.state.batch();
        for (ci, chunk) in tokens.chunks(n_batch).enumerate() {
            if self.cancelled() {
                self.has_logits = false;
                return Err(Error::Cancelled);
            }
            let logits = &mut *self.logits;
            let last = (ci + 1) * n_batch >= tokens.len();
            let want = if last { Logits::Last } else { Logits::None };
            if let Err(e) = forward::forward(
                self.model,
                self.par,
                &mut self.state,
                &mut self.kv,
                chunk,
                want,
                self.cancel,
                &mut |_, l| logits.copy_from_slice(l),
            ) {
                self.has_logits = false;
                return Err(e);
            }
            self.log(chunk);
        }
        if !tokens.is_empty() {
            self.has_logits = true;
        }
        Ok(())
    }

    /// Evaluates one token for each session at once (`tokens[i]` appended to `sessions[i]`),
    /// reading every weight matrix once for all of them: a server's slots decoding together.
    /// Each session then holds its token's logits, bit for bit those `eval(&[tokens[i]])` would
    /// give. The sessions share one model; the first one's scratch and threads are used. At most
    /// [`MAX_EACH`] sessions.
    pub fn eval_each(sessions: &mut [&mut Session<'m, 's>], tokens: &[TokenId]) -> Result<()> {
        let n = sessions.len();
        if n != tokens.len() || n > MAX_EACH {
            return Err(Error::InvalidArgument(
                "one token per session, for at most 64 sessions",
            ));
        }
        let Some((first, rest)) = sessions.split_first_mut() else {
            return Ok(());
        };
        if rest.iter().any(|s| !core::ptr::eq(s.model, first.model)) {
            return Err(Error::InvalidArgument(
                "sessions evaluated together must share a model",
            ));
        }
        let (model, par) = (first.model, first.par);
        let state = &mut first.state;
        let mut kvs: [Option<&mut KvCache<'s>>; MAX_EACH] = core::array::from_fn(|_| None);
        let mut outs: [Option<&mut [f32]>; MAX_EACH] = core::array::from_fn(|_| None);
        kvs[0] = Some(&mut first.kv);
        outs[0] = Some(&mut *first.logits);
        for (i, s) in rest.iter_mut().enumerate() {
            kvs[i + 1] = Some(&mut s.kv);
            outs[i + 1] = Some(&mut *s.logits);
        }
        let r = forward::forward_each(model, par, state, &mut kvs, tokens, &mut |i, l| {
            if let Some(o) = outs[i].as_deref_mut() {
                o.copy_from_slice(l)
            }
        });
        for (i, s) in sessions.iter_mut().enumerate() {
            s.has_logits = r.is_ok();
            if r.is_ok() {
                s.log(&tokens[i..i + 1]);
            }
        }
        r
    }

    /// Appends `tokens` and calls `on_logits(i, logits)` for every one of them (scoring).
    pub fn eval_all(
        &mut self,
        tokens: &[TokenId],
        on_logits: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<()> {
        let n_batch = self.state.batch();
        self.has_logits = false;
        for (ci, chunk) in tokens.chunks(n_batch).enumerate() {
            if self.cancelled() {
                return Err(Error::Cancelled);
            }
            let base = ci * n_batch;
            forward::forward(
                self.model,
                self.par,
                &mut self.state,
                &mut self.kv,
                chunk,
                Logits::All,
                self.cancel,
                &mut |i, l| on_logits(base + i, l),
            )?;
            self.log(chunk);
        }
        self.has_logits = false;
        Ok(())
    }

    /// Logits after the last evaluated token, if any.
    pub fn logits(&self) -> Option<&[f32]> {
        self.has_logits.then_some(&*self.logits)
    }
}

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// An end-of-generation token was sampled (it is not part of the output).
    EndOfGeneration,
    /// A stop string appeared (it and everything after it are not part of the output).
    StopString,
    /// The token limit was reached.
    MaxTokens,
    /// The callback asked to stop.
    Stopped,
}

/// Counters of one generation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenStats {
    /// Prompt tokens evaluated.
    pub prompt_tokens: usize,
    /// Tokens generated (not counting an end-of-generation token).
    pub generated_tokens: usize,
    /// The last generated token when generation ended without feeding it to the model (token
    /// limit, or stopped by the callback): the cache ends just before it. A caller continuing
    /// the same text feeds it first.
    pub unfed: Option<TokenId>,
}

/// Most stop strings, and the longest one, [`generate`] accepts.
pub const MAX_STOPS: usize = 8;
/// Longest stop string in bytes.
pub const MAX_STOP_LEN: usize = 128;

/// Options of [`generate`].
#[derive(Clone, Copy, Debug)]
pub struct GenOptions<'a> {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Keep going past end-of-generation tokens.
    pub ignore_eos: bool,
    /// Stop when any of these appears in the output (which then ends just before it).
    pub stop: &'a [&'a str],
}

/// Text held back while it could still be the start of a stop string.
struct StopFilter {
    held: [u8; 2 * MAX_STOP_LEN + 64],
    len: usize,
}

impl StopFilter {
    const fn new() -> Self {
        StopFilter {
            held: [0; 2 * MAX_STOP_LEN + 64],
            len: 0,
        }
    }

    /// Adds `text`; emits what can no longer belong to one of `stops`. Returns (a stop string
    /// was found, `emit` never asked to stop); after a hit, the text before the stop string has
    /// been emitted and the rest dropped.
    fn push(
        &mut self,
        stops: &[&str],
        mut text: &str,
        emit: &mut dyn FnMut(&str) -> bool,
    ) -> (bool, bool) {
        let mut keep_going = true;
        while !text.is_empty() {
            // Take as much as fits, on a character boundary.
            let room = self.held.len() - self.len;
            let mut take = text.len().min(room);
            while !text.is_char_boundary(take) {
                take -= 1;
            }
            if take == 0 {
                // Cannot happen (held text is always shorter than a stop string plus one
                // character), but never loop forever: flush.
                keep_going &= self.flush(emit);
                continue;
            }
            self.held[self.len..self.len + take].copy_from_slice(&text.as_bytes()[..take]);
            self.len += take;
            text = &text[take..];
            let held = &self.held[..self.len];
            // A complete stop string: emit what precedes the earliest one, drop the rest.
            let hit = stops
                .iter()
                .filter(|s| !s.is_empty())
                .filter_map(|s| held.windows(s.len()).position(|w| w == s.as_bytes()))
                .min();
            if let Some(at) = hit {
                if at > 0 {
                    keep_going &= emit(core::str::from_utf8(&held[..at]).unwrap_or(""));
                }
                self.len = 0;
                return (true, keep_going);
            }
            // Keep the shortest tail that is still a prefix of some stop string.
            let cut = (0..=held.len())
                .find(|&i| {
                    stops
                        .iter()
                        .any(|s| !s.is_empty() && s.as_bytes().starts_with(&held[i..]))
                        || i == held.len()
                })
                .unwrap_or(held.len());
            if cut > 0 {
                keep_going &= emit(core::str::from_utf8(&held[..cut]).unwrap_or(""));
                self.held.copy_within(cut..self.len, 0);
                self.len -= cut;
            }
        }
        (false, keep_going)
    }

    fn flush(&mut self, emit: &mut dyn FnMut(&str) -> bool) -> bool {
        let ok = self.len == 0 || emit(core::str::from_utf8(&self.held[..self.len]).unwrap_or(""));
        self.len = 0;
        ok
    }
}

/// Evaluates `prompt`, then generates with `sampler`, calling `on_text` with each piece of text
/// (whole UTF-8 characters) as it is produced; `on_text` returns false to stop.
/// `on_prefill_done` is called once the prompt is in the cache (for timing).
pub fn generate(
    session: &mut Session<'_, '_>,
    sampler: &mut Sampler<'_>,
    prompt: &[TokenId],
    opts: &GenOptions<'_>,
    on_prefill_done: &mut dyn FnMut(),
    on_text: &mut dyn FnMut(&str) -> bool,
) -> Result<(StopReason, GenStats)> {
    generate_constrained(
        session,
        sampler,
        None,
        prompt,
        opts,
        on_prefill_done,
        on_text,
    )
}

/// [`generate`] with every token kept inside `grammar` (when given): the output is a sentence
/// of the grammar (or a prefix of one, when the token limit comes first), and generation ends
/// at end-of-generation only where the grammar may end, or when it allows no further token.
pub fn generate_constrained(
    session: &mut Session<'_, '_>,
    sampler: &mut Sampler<'_>,
    mut grammar: Option<&mut crate::grammar::Constraint<'_, '_>>,
    prompt: &[TokenId],
    opts: &GenOptions<'_>,
    on_prefill_done: &mut dyn FnMut(),
    on_text: &mut dyn FnMut(&str) -> bool,
) -> Result<(StopReason, GenStats)> {
    let mut g = Generation::new(prompt.len(), opts)?;
    while g.prompt_left() > 0 {
        g.feed_prompt(session, sampler, prompt, usize::MAX)?;
    }
    on_prefill_done();
    loop {
        if let Some(reason) = g.step(session, sampler, grammar.as_deref_mut(), opts, on_text)? {
            return Ok((reason, g.stats()));
        }
    }
}

/// One generation, a step at a time: the loop of [`generate_constrained`] for callers that
/// interleave several sessions (a server's slots) or do other work between tokens. Make it
/// with [`Generation::new`], feed the prompt with [`Generation::feed_prompt`] until
/// [`Generation::prompt_left`] is 0, then call [`Generation::step`] until it returns the reason
/// generation ended. The same session, sampler, grammar and options go to every call.
pub struct Generation {
    stats: GenStats,
    prompt_fed: usize,
    stream: Utf8Stream,
    filter: StopFilter,
    keep_going: bool,
    stopped_by_string: bool,
    done: Option<StopReason>,
    /// A chosen token waits to be evaluated ([`Generation::choose`]).
    pending: bool,
}

/// What [`Generation::choose`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Generation ended.
    Done(StopReason),
    /// Evaluate this token, then call [`Generation::fed`].
    Feed(TokenId),
}

impl Generation {
    /// A generation from a prompt of `prompt_len` tokens (checks `opts`).
    pub fn new(prompt_len: usize, opts: &GenOptions<'_>) -> Result<Self> {
        if opts.stop.len() > MAX_STOPS || opts.stop.iter().any(|s| s.len() > MAX_STOP_LEN) {
            return Err(Error::InvalidArgument(
                "at most 8 stop strings of at most 128 bytes each",
            ));
        }
        Ok(Generation {
            stats: GenStats {
                prompt_tokens: prompt_len,
                generated_tokens: 0,
                unfed: None,
            },
            prompt_fed: 0,
            stream: Utf8Stream::new(),
            filter: StopFilter::new(),
            keep_going: true,
            stopped_by_string: false,
            done: None,
            pending: false,
        })
    }

    /// Prompt tokens not yet evaluated.
    pub fn prompt_left(&self) -> usize {
        self.stats.prompt_tokens - self.prompt_fed
    }

    /// Counters so far.
    pub fn stats(&self) -> GenStats {
        self.stats
    }

    /// Evaluates up to `max` more tokens of `prompt` (the whole prompt, the same slice every
    /// call), recording them for the sampler's penalties.
    pub fn feed_prompt(
        &mut self,
        session: &mut Session<'_, '_>,
        sampler: &mut Sampler<'_>,
        prompt: &[TokenId],
        max: usize,
    ) -> Result<()> {
        if prompt.len() != self.stats.prompt_tokens {
            return Err(Error::InvalidArgument(
                "the prompt changed during a generation",
            ));
        }
        let end = self.prompt_fed.saturating_add(max).min(prompt.len());
        let part = &prompt[self.prompt_fed..end];
        session.eval(part)?;
        for &t in part {
            sampler.accept(t);
        }
        self.prompt_fed = end;
        Ok(())
    }

    /// Chooses the next token and calls `on_text` with the text it completes. Returns why
    /// generation ended, once it has (then again on every later call); `None` while it goes on.
    pub fn step(
        &mut self,
        session: &mut Session<'_, '_>,
        sampler: &mut Sampler<'_>,
        grammar: Option<&mut crate::grammar::Constraint<'_, '_>>,
        opts: &GenOptions<'_>,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Option<StopReason>> {
        match self.choose(session, sampler, grammar, opts, on_text)? {
            Step::Done(r) => Ok(Some(r)),
            Step::Feed(t) => {
                session.eval(&[t])?;
                self.fed();
                Ok(None)
            }
        }
    }

    /// [`Generation::step`] without evaluating the chosen token: [`Step::Feed`] asks the caller
    /// to evaluate it (alone, or with other sessions' tokens through [`Session::eval_each`]) and
    /// then call [`Generation::fed`] before the next step.
    pub fn choose(
        &mut self,
        session: &mut Session<'_, '_>,
        sampler: &mut Sampler<'_>,
        grammar: Option<&mut crate::grammar::Constraint<'_, '_>>,
        opts: &GenOptions<'_>,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Step> {
        if let Some(r) = self.done {
            return Ok(Step::Done(r));
        }
        if self.prompt_left() > 0 {
            return Err(Error::InvalidArgument(
                "the prompt is not yet evaluated (feed_prompt)",
            ));
        }
        if self.pending {
            return Err(Error::InvalidArgument(
                "the last token is not yet evaluated (fed)",
            ));
        }
        let reason = match self.token(session, sampler, grammar, opts, on_text)? {
            Step::Feed(t) => {
                self.pending = true;
                return Ok(Step::Feed(t));
            }
            Step::Done(r) => r,
        };
        if !self.stopped_by_string && self.keep_going {
            let (filter, stopped) = (&mut self.filter, &mut self.stopped_by_string);
            self.stream.finish(&mut |s| {
                let (hit, _) = filter.push(opts.stop, s, on_text);
                *stopped |= hit;
            });
            if !self.stopped_by_string {
                self.filter.flush(on_text);
            }
        }
        self.done = Some(reason);
        Ok(Step::Done(reason))
    }

    /// The token [`Generation::choose`] asked for has been evaluated.
    pub fn fed(&mut self) {
        if self.pending {
            self.pending = false;
            self.stats.unfed = None;
        }
    }

    /// One token of the loop: [`Step::Done`] when generation ends with it, else the token to
    /// evaluate.
    fn token(
        &mut self,
        session: &mut Session<'_, '_>,
        sampler: &mut Sampler<'_>,
        mut grammar: Option<&mut crate::grammar::Constraint<'_, '_>>,
        opts: &GenOptions<'_>,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Step> {
        if self.stats.generated_tokens >= opts.max_tokens {
            return Ok(Step::Done(StopReason::MaxTokens));
        }
        let Some(logits) = session.logits() else {
            return Err(Error::InvalidArgument(
                "nothing to continue from: the prompt is empty",
            ));
        };
        let tok = &session.model().tokenizer;
        let next = match grammar.as_deref_mut() {
            None => sampler.sample(logits),
            Some(g) => match g.sample(sampler, tok, logits)? {
                Some(t) => t,
                // The grammar allows nothing more.
                None => return Ok(Step::Done(StopReason::EndOfGeneration)),
            },
        };
        // Under a grammar, end-of-generation is chosen only where the grammar may end.
        if tok.is_eog(next) && (!opts.ignore_eos || grammar.is_some()) {
            return Ok(Step::Done(StopReason::EndOfGeneration));
        }
        if let Some(g) = grammar {
            g.accept(tok, next)?;
        }
        self.stats.generated_tokens += 1;
        sampler.accept(next);
        let (filter, stream) = (&mut self.filter, &mut self.stream);
        let (keep_going, stopped) = (&mut self.keep_going, &mut self.stopped_by_string);
        tok.decode_token(next, true, &mut |bytes| {
            stream.push(bytes, &mut |s| {
                if *keep_going && !*stopped {
                    let (hit, ok) = filter.push(opts.stop, s, on_text);
                    *stopped |= hit;
                    *keep_going &= ok;
                }
            })
        });
        if self.stopped_by_string {
            return Ok(Step::Done(StopReason::StopString));
        }
        self.stats.unfed = Some(next);
        if !self.keep_going {
            return Ok(Step::Done(StopReason::Stopped));
        }
        if self.stats.generated_tokens == opts.max_tokens {
            return Ok(Step::Done(StopReason::MaxTokens));
        }
        if session.cancelled() {
            return Ok(Step::Done(StopReason::Stopped));
        }
        Ok(Step::Feed(next))
    }
}

mod beam;
pub use beam::{beam_search, BeamOptions, BeamResult, BeamScratch, MAX_BEAM};

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (std::string::String, bool) {
        let mut f = StopFilter::new();
        let mut out = std::string::String::new();
        let mut emit = |s: &str| {
            out.push_str(s);
            true
        };
        for p in pieces {
            let (hit, _) = f.push(stops, p, &mut emit);
            if hit {
                return (out, true);
            }
        }
        f.flush(&mut emit);
        (out, false)
    }

    #[test]
    fn stop_strings_split_across_pieces_are_found_and_never_printed() {
        assert_eq!(
            run(&["o w"], &["Hel", "lo", " wo", "rld"]),
            ("Hell".into(), true)
        );
        assert_eq!(
            run(&["<|end|>"], &["abc<|", "end", "|>tail"]),
            ("abc".into(), true)
        );
        assert_eq!(
            run(&["xyz"], &["ab", "cx", "y", "q"]),
            ("abcxyq".into(), false)
        );
        // Earliest of several stops wins; a stop at the very start prints nothing.
        assert_eq!(run(&["b", "a"], &["xab"]), ("x".into(), true));
        assert_eq!(run(&["ab"], &["ab"]), ("".into(), true));
        // Multi-byte characters pass whole.
        assert_eq!(
            run(&["é!"], &["caf", "é", " é", "!"]),
            ("café ".into(), true)
        );
        assert_eq!(run(&[], &["plain ", "text"]), ("plain text".into(), false));
    }

    #[test]
    fn held_text_is_emitted_as_soon_as_it_cannot_start_a_stop() {
        let mut f = StopFilter::new();
        let mut out = std::string::String::new();
        f.push(&["STOP"], "abc ST", &mut |s: &str| {
            out.push_str(s);
            true
        });
        assert_eq!(out, "abc ");
        f.push(&["STOP"], "AR", &mut |s: &str| {
            out.push_str(s);
            true
        });
        assert_eq!(out, "abc STAR");
    }
}
