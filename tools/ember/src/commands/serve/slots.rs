//! The slots of `ember serve`: N engines made at start (their memory reserved then), and the
//! one thread that runs them. Requests wait in a bounded queue; a free slot takes the next one,
//! preferring the slot whose cache already holds the longest part of its prompt (a chat's next
//! turn then evaluates only the new tokens). Every busy slot advances once per round: a slot
//! in its prompt evaluates one batch of it, and the slots that are decoding evaluate their next
//! tokens together (one pass over the weights for all of them: the aggregate speed grows with
//! the streams). A request
//! whose client has gone (its event receiver dropped) is stopped at its next step and its slot
//! freed.

use super::api::ApiError;
use ember_runtime::engine::{advance_together, Engine, Progress, Request};
use ember_runtime::sampler::SamplerConfig;
use ember_runtime::session::StopReason;
use ember_runtime::tokenizer::TokenId;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// What a slot reports about a request.
pub enum Event {
    /// Text of the reply (whole characters).
    Piece(String),
    /// The reply ended.
    Done {
        reason: StopReason,
        prompt_tokens: usize,
        completion_tokens: usize,
        /// Prompt tokens the slot's cache already held.
        cached_tokens: usize,
        /// From taking the request to its first token.
        first_token: Duration,
    },
    /// The request failed in the engine (the error, as the API reports it).
    Failed(ApiError),
}

/// One request for a slot.
pub struct Job {
    pub prompt: Vec<TokenId>,
    pub request: Request,
    pub sampler: SamplerConfig,
    pub grammar: Option<String>,
    pub events: UnboundedSender<Event>,
}

/// The way in: a bounded queue in front of the slots.
#[derive(Clone)]
pub struct Queue {
    tx: SyncSender<Job>,
}

impl Queue {
    /// Queues `job`; false when the queue is full (or the slot thread is gone).
    pub fn submit(&self, job: Job) -> bool {
        match self.tx.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

/// A slot: an engine and what it runs.
struct Slot {
    engine: Engine,
    job: Option<Running>,
    last_used: Instant,
}

struct Running {
    events: UnboundedSender<Event>,
    started: Instant,
    first_token: Option<Duration>,
    cached: usize,
}

/// Starts the slot thread over `engines`, with a queue of `queue` waiting requests.
pub fn start(engines: Vec<Engine>, queue: usize) -> std::io::Result<Queue> {
    let (tx, rx) = std::sync::mpsc::sync_channel(queue);
    let slots = engines
        .into_iter()
        .map(|engine| Slot {
            engine,
            job: None,
            last_used: Instant::now(),
        })
        .collect();
    std::thread::Builder::new()
        .name("ember-slots".into())
        .spawn(move || run(slots, rx))?;
    Ok(Queue { tx })
}

fn run(mut slots: Vec<Slot>, rx: Receiver<Job>) {
    loop {
        // Take queued requests while a slot is free; wait for one when all are idle.
        while slots.iter().any(|s| s.job.is_none()) {
            let idle = slots.iter().all(|s| s.job.is_none());
            let job = if idle {
                match rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(j) => j,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            } else {
                match rx.try_recv() {
                    Ok(j) => j,
                    Err(_) => break,
                }
            };
            if job.events.is_closed() {
                continue;
            }
            let i = best_slot(&slots, &job.prompt);
            assign(&mut slots[i], job);
        }
        step_all(&mut slots);
    }
}

/// One step of every busy slot: the slots that are decoding evaluate their tokens together.
fn step_all(slots: &mut [Slot]) {
    // Clients that went away free their slots first.
    for slot in slots.iter_mut() {
        if slot.job.as_ref().is_some_and(|r| r.events.is_closed()) {
            slot.engine.abort();
            finish(slot);
        }
    }
    let busy: Vec<usize> = (0..slots.len())
        .filter(|&i| slots[i].job.is_some())
        .collect();
    if busy.is_empty() {
        return;
    }
    let senders: Vec<UnboundedSender<Event>> = busy
        .iter()
        .filter_map(|&i| slots[i].job.as_ref().map(|r| r.events.clone()))
        .collect();
    let mut gone = vec![false; busy.len()];
    let results = {
        let mut engines: Vec<&mut Engine> = slots
            .iter_mut()
            .filter(|s| s.job.is_some())
            .map(|s| &mut s.engine)
            .collect();
        advance_together(&mut engines, &mut |k, piece| {
            let ok = senders[k].send(Event::Piece(piece.to_string())).is_ok();
            gone[k] |= !ok;
            ok
        })
    };
    for ((&i, r), gone) in busy.iter().zip(results).zip(gone) {
        let slot = &mut slots[i];
        let Some(run) = slot.job.as_mut() else {
            continue;
        };
        let over = match r {
            Ok(Progress::Prompt(_)) => false,
            Ok(Progress::Token) => {
                run.first_token.get_or_insert_with(|| run.started.elapsed());
                if gone {
                    slot.engine.abort();
                }
                gone
            }
            Ok(Progress::Done(o)) => {
                let _ = run.events.send(Event::Done {
                    reason: o.reason,
                    prompt_tokens: o.stats.prompt_tokens + run.cached,
                    completion_tokens: o.stats.generated_tokens,
                    cached_tokens: run.cached,
                    first_token: run.first_token.unwrap_or_else(|| run.started.elapsed()),
                });
                true
            }
            Err(e) => {
                let _ = run.events.send(Event::Failed(failure(&e)));
                true
            }
        };
        if over {
            finish(slot);
        }
    }
}

/// Frees a slot whose request is over.
fn finish(slot: &mut Slot) {
    slot.job = None;
    slot.last_used = Instant::now();
}

/// The free slot whose cache holds the longest prefix of `prompt` (the least recently used
/// among equals).
fn best_slot(slots: &[Slot], prompt: &[TokenId]) -> usize {
    let mut best = (0usize, None::<Instant>, usize::MAX);
    for (i, s) in slots.iter().enumerate() {
        if s.job.is_some() {
            continue;
        }
        let shared = s.engine.cached_prefix(prompt);
        let better = best.2 == usize::MAX
            || shared > best.0
            || (shared == best.0 && Some(s.last_used) < best.1);
        if better {
            best = (shared, Some(s.last_used), i);
        }
    }
    best.2
}

/// Starts `job` on `slot`; on failure the client is told and the slot stays free.
fn assign(slot: &mut Slot, job: Job) {
    let e = &mut slot.engine;
    let started = Instant::now();
    let r = e
        .set_sampling(job.sampler)
        .and_then(|()| e.set_grammar(job.grammar.as_deref()))
        .and_then(|()| e.begin(job.prompt, job.request));
    match r {
        Ok(cached) => {
            slot.job = Some(Running {
                events: job.events,
                started,
                first_token: None,
                cached,
            });
        }
        Err(err) => {
            let _ = job.events.send(Event::Failed(failure(&err)));
        }
    }
}

/// How the API reports an engine error: a grammar the vocabulary cannot serve (a token it
/// does not have) is the request's fault, anything else the server's.
fn failure(e: &ember_runtime::Error) -> ApiError {
    match e {
        ember_runtime::Error::Grammar { .. } => ApiError::bad("grammar", e.to_string()),
        _ => ApiError::new(500, "server_error", e.to_string()),
    }
}
