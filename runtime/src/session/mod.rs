//! A session: one conversation's state (KV cache and forward buffers) over a shared model, and
//! the generation loop.

use crate::arena::Arena;
use crate::error::{Error, Result};
use crate::kv::KvCache;
use crate::model::{forward, Logits, Model, State};
use crate::parallel::{Parallel, Serial};
use crate::sampler;
use crate::tokenizer::{TokenId, Utf8Stream};

/// Sizes fixed when a session is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// Context: tokens the KV cache holds.
    pub n_ctx: usize,
    /// Largest batch of prompt tokens evaluated together.
    pub n_batch: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            n_ctx: 4096,
            n_batch: 64,
        }
    }
}

/// One conversation: KV cache, buffers, and the last logits.
pub struct Session<'m, 's> {
    model: &'m Model<'m>,
    par: &'m dyn Parallel,
    state: State<'s>,
    kv: KvCache<'s>,
    logits: &'s mut [f32],
    has_logits: bool,
}

impl<'m, 's> Session<'m, 's> {
    /// Arena bytes a session with `sc` needs for `model`.
    pub fn bytes_needed(model: &Model<'_>, sc: &SessionConfig) -> usize {
        let c = &model.config;
        KvCache::bytes_needed(c, sc.n_ctx)
            + State::bytes_needed(c, sc.n_batch)
            + Arena::size_of::<f32>(c.n_vocab)
    }

    /// A session in `arena`. The context may not exceed the model's training context.
    pub fn new(model: &'m Model<'m>, arena: &mut Arena<'s>, sc: &SessionConfig) -> Result<Self> {
        let c = &model.config;
        if sc.n_ctx == 0 || sc.n_ctx > c.n_ctx_train {
            return Err(Error::InvalidArgument(
                "context size must be between 1 and the model's context_length",
            ));
        }
        if sc.n_batch == 0 {
            return Err(Error::InvalidArgument("batch size must be at least 1"));
        }
        let n_batch = sc.n_batch.min(sc.n_ctx);
        Ok(Session {
            model,
            par: &Serial,
            kv: KvCache::new(arena, c, sc.n_ctx)?,
            state: State::new(arena, c, n_batch)?,
            logits: arena.alloc(c.n_vocab, "logits")?,
            has_logits: false,
        })
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

    /// Tokens in the context.
    pub fn n_past(&self) -> usize {
        self.kv.len()
    }

    /// Context capacity.
    pub fn n_ctx(&self) -> usize {
        self.kv.capacity()
    }

    /// Forgets the context.
    pub fn reset(&mut self) {
        self.kv.clear();
        self.has_logits = false;
    }

    /// Appends `tokens` to the context in batches, keeping the last token's logits.
    pub fn eval(&mut self, tokens: &[TokenId]) -> Result<()> {
        let n_batch = self.state.batch();
        let logits = &mut *self.logits;
        for (ci, chunk) in tokens.chunks(n_batch).enumerate() {
            let last = (ci + 1) * n_batch >= tokens.len();
            let want = if last { Logits::Last } else { Logits::None };
            forward::forward(
                self.model,
                self.par,
                &mut self.state,
                &mut self.kv,
                chunk,
                want,
                &mut |_, l| logits.copy_from_slice(l),
            )?;
        }
        if !tokens.is_empty() {
            self.has_logits = true;
        }
        Ok(())
    }

    /// Appends `tokens` and calls `on_logits(i, logits)` for every one of them (scoring).
    pub fn eval_all(
        &mut self,
        tokens: &[TokenId],
        on_logits: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<()> {
        let n_batch = self.state.batch();
        for (ci, chunk) in tokens.chunks(n_batch).enumerate() {
            let base = ci * n_batch;
            forward::forward(
                self.model,
                self.par,
                &mut self.state,
                &mut self.kv,
                chunk,
                Logits::All,
                &mut |i, l| on_logits(base + i, l),
            )?;
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
}

/// Options of [`generate`].
#[derive(Clone, Copy, Debug)]
pub struct GenOptions {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Keep going past end-of-generation tokens.
    pub ignore_eos: bool,
}

/// Evaluates `prompt`, then generates greedily, calling `on_text` with each piece of text (whole
/// UTF-8 characters) as it is produced; `on_text` returns false to stop. `on_prefill_done` is
/// called once the prompt is in the cache (for timing).
pub fn generate(
    session: &mut Session<'_, '_>,
    prompt: &[TokenId],
    opts: &GenOptions,
    on_prefill_done: &mut dyn FnMut(),
    on_text: &mut dyn FnMut(&str) -> bool,
) -> Result<(StopReason, GenStats)> {
    let mut stats = GenStats {
        prompt_tokens: prompt.len(),
        generated_tokens: 0,
    };
    session.eval(prompt)?;
    on_prefill_done();
    let tok = &session.model().tokenizer;
    let mut stream = Utf8Stream::new();
    let mut keep_going = true;
    let mut reason = StopReason::MaxTokens;
    while stats.generated_tokens < opts.max_tokens {
        let Some(logits) = session.logits() else {
            return Err(Error::InvalidArgument(
                "nothing to continue from: the prompt is empty",
            ));
        };
        let next = sampler::argmax(logits);
        if tok.is_eog(next) && !opts.ignore_eos {
            reason = StopReason::EndOfGeneration;
            break;
        }
        stats.generated_tokens += 1;
        tok.decode_token(next, true, &mut |bytes| {
            stream.push(bytes, &mut |s| {
                if keep_going && !on_text(s) {
                    keep_going = false;
                }
            })
        });
        if !keep_going {
            reason = StopReason::Stopped;
            break;
        }
        if stats.generated_tokens == opts.max_tokens {
            break;
        }
        session.eval(&[next])?;
    }
    stream.finish(&mut |s| {
        if keep_going {
            on_text(s);
        }
    });
    Ok((reason, stats))
}
