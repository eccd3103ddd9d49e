//! [`ChatAssistant`]: a multi-turn conversation over one session, its KV cache kept between turns,
//! in ChatML written into fixed buffers (no `std`; with `std`, the console runs on the engine
//! instead: `EngineAssistant`).

use super::{Assistant, ReplyEnd};
use crate::arena::Arena;
use crate::error::{Error, Result};
use crate::grammar::{Constraint, Grammar, GrammarLimits, MatcherLimits, JSON};
use crate::sampler::Sampler;
use crate::session::{self, GenOptions, Session, StopReason};
use crate::tokenizer::{EncodeScratch, TokenId, Tokenizer};
use core::fmt;

/// A clock for `/stats` speeds: microseconds from any fixed origin.
pub type Clock = fn() -> u64;

/// How each turn becomes text.
enum Turns<'s> {
    /// ChatML written into fixed buffers: no allocation, works without `std` (the format
    /// SmolLM2's and many other templates produce).
    Chatml {
        system: &'s mut [u8],
        system_len: usize,
        text: &'s mut [u8],
        scratch: EncodeScratch<'s>,
    },
}

/// A conversation with the model: each user line becomes a turn through the chat format, only
/// the new tokens are fed (the cache keeps the earlier turns), and the ring cache keeps a long
/// conversation going past the context.
pub struct ChatAssistant<'m, 's> {
    session: Session<'m, 's>,
    sampler: Sampler<'s>,
    turns: Turns<'s>,
    /// The tokens of the current turn (ChatML).
    tokens: &'s mut [TokenId],
    max_reply: usize,
    /// The last reply's final token when the cache ends just before it.
    unfed: Option<TokenId>,
    n_turns: usize,
    last_tokens: usize,
    last_micros: u64,
    clock: Option<Clock>,
    /// The built-in JSON grammar's constraint, when `/json` was made available
    /// ([`ChatAssistant::enable_json`]), and whether replies use it.
    json: Option<Constraint<'s, 's>>,
    json_on: bool,
}

/// Markup around a user message in ChatML, and the longest text one turn adds around it.
const CHATML_OVERHEAD: usize = 128;

impl<'m, 's> ChatAssistant<'m, 's> {
    /// Arena bytes [`ChatAssistant::chatml`] needs for lines (and a system message) of up to
    /// `max_line` bytes.
    pub const fn chatml_bytes_needed(max_line: usize) -> usize {
        let text = 2 * max_line + CHATML_OVERHEAD;
        Arena::size_of::<u8>(max_line)
            + Arena::size_of::<u8>(text)
            + Arena::size_of::<TokenId>(text)
            + EncodeScratch::bytes_needed(text)
    }

    /// A ChatML conversation (no allocation; buffers from `arena`, sized for `max_line`-byte
    /// messages). Replies stop after `max_reply` tokens.
    pub fn chatml(
        session: Session<'m, 's>,
        sampler: Sampler<'s>,
        arena: &mut Arena<'s>,
        max_line: usize,
        max_reply: usize,
    ) -> Result<Self> {
        let text = 2 * max_line + CHATML_OVERHEAD;
        let turns = Turns::Chatml {
            system: arena.alloc(max_line, "console system message")?,
            system_len: 0,
            text: arena.alloc(text, "console turn text")?,
            scratch: EncodeScratch::new(arena, text)?,
        };
        let tokens = arena.alloc(text, "console turn tokens")?;
        Ok(Self::with(session, sampler, turns, tokens, max_reply))
    }

    fn with(
        session: Session<'m, 's>,
        sampler: Sampler<'s>,
        turns: Turns<'s>,
        tokens: &'s mut [TokenId],
        max_reply: usize,
    ) -> Self {
        ChatAssistant {
            session,
            sampler,
            turns,
            tokens,
            max_reply,
            unfed: None,
            n_turns: 0,
            last_tokens: 0,
            last_micros: 0,
            clock: None,
            json: None,
            json_on: false,
        }
    }

    /// Arena bytes [`ChatAssistant::enable_json`] needs for the vocabulary of `tok`.
    pub fn json_bytes_needed(tok: &Tokenizer<'_>) -> usize {
        Grammar::bytes_needed(&GrammarLimits::for_source(JSON.len()))
            + Constraint::bytes_needed(&MatcherLimits::default(), tok)
    }

    /// Makes `/json on` available: the built-in JSON grammar ([`crate::grammar::JSON`]) and its
    /// constraint, compiled once into `arena` ([`ChatAssistant::json_bytes_needed`] bytes).
    /// Replies stay free text until it is turned on.
    pub fn enable_json(&mut self, arena: &mut Arena<'s>) -> Result<()> {
        let g = Grammar::compile(JSON, arena, &GrammarLimits::for_source(JSON.len()))?;
        let tok = &self.session.model().tokenizer;
        self.json = Some(Constraint::new(g, arena, &MatcherLimits::default(), tok)?);
        Ok(())
    }

    /// Measures reply speed for `/stats` with `clock`.
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = Some(clock);
    }

    /// The session (e.g. to see what the cache holds).
    pub fn session(&self) -> &Session<'m, 's> {
        &self.session
    }

    /// The tokens to feed for the user's `line`.
    fn turn_tokens(&mut self, line: &str) -> Result<TurnTokens> {
        match &mut self.turns {
            Turns::Chatml {
                system,
                system_len,
                text,
                scratch,
            } => {
                let tokens = &mut *self.tokens;
                let fresh = self.session.n_past() == 0;
                // The last reply's final token, shown but not fed, goes first (as text, so the
                // turn tokenizes as the whole rendered conversation would).
                let mut len = 0;
                if let (false, Some(t)) = (fresh, self.unfed) {
                    let model = self.session.model();
                    model.tokenizer.decode_token(t, true, &mut |b| {
                        if let Some(dst) = text.get_mut(len..len + b.len()) {
                            dst.copy_from_slice(b);
                            len += b.len();
                        }
                    });
                }
                let mut w = SliceWriter { buf: text, len };
                let written = if fresh {
                    let sys = core::str::from_utf8(&system[..*system_len]).unwrap_or("");
                    let messages = [
                        crate::chat::Message {
                            role: "system",
                            content: sys,
                        },
                        crate::chat::Message {
                            role: "user",
                            content: line,
                        },
                    ];
                    let from = if sys.is_empty() { 1 } else { 0 };
                    crate::chat::render_chatml(&messages[from..], true, &mut w)
                } else {
                    // The cache ends with the last reply, without its end-of-turn token (the
                    // generation loop does not feed it): close that turn, then this one.
                    fmt::Write::write_str(&mut w, "<|im_end|>\n").and_then(|_| {
                        crate::chat::render_chatml(
                            &[crate::chat::Message {
                                role: "user",
                                content: line,
                            }],
                            true,
                            &mut w,
                        )
                    })
                };
                if written.is_err() {
                    return Err(Error::Capacity {
                        what: "console turn text (bytes)",
                        needed: (line.len() + *system_len + CHATML_OVERHEAD) as u64,
                        available: w.buf.len() as u64,
                    });
                }
                let n_text = w.len;
                let mut n = 0;
                let model = self.session.model();
                model
                    .tokenizer
                    .encode(&text[..n_text], true, false, scratch, &mut |t| {
                        let slot = tokens.get_mut(n).ok_or(Error::Capacity {
                            what: "console turn tokens",
                            needed: n as u64 + 1,
                            available: n as u64,
                        })?;
                        *slot = t;
                        n += 1;
                        Ok(())
                    })?;
                Ok(TurnTokens::Buffer(n))
            }
        }
    }
}

/// Where [`ChatAssistant::turn_tokens`] put the turn's tokens.
enum TurnTokens {
    /// The first n of `tokens`.
    Buffer(usize),
}

/// `fmt::Write` into a byte slice; fails when full.
struct SliceWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl fmt::Write for SliceWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len.checked_add(s.len()).ok_or(fmt::Error)?;
        self.buf
            .get_mut(self.len..end)
            .ok_or(fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl Assistant for ChatAssistant<'_, '_> {
    fn reply(&mut self, line: &str, emit: &mut dyn FnMut(&str) -> bool) -> Result<ReplyEnd> {
        let where_ = self.turn_tokens(line)?;
        let ChatAssistant {
            session,
            sampler,
            tokens,
            max_reply,
            clock,
            ..
        } = self;
        let ids: &[TokenId] = match where_ {
            TurnTokens::Buffer(n) => &tokens[..n],
        };
        if session.n_past() == 0 {
            sampler.reset();
        }
        let opts = GenOptions {
            max_tokens: *max_reply,
            ignore_eos: false,
            stop: &[],
        };
        let grammar = match (self.json_on, self.json.as_mut()) {
            (true, Some(c)) => {
                c.reset()?;
                Some(c)
            }
            _ => None,
        };
        let mut t_start = 0;
        let result = session::generate_constrained(
            session,
            sampler,
            grammar,
            ids,
            &opts,
            &mut || t_start = clock.map_or(0, |c| c()),
            &mut |piece| emit(piece),
        );
        let t_end = clock.map_or(0, |c| c());
        let (reason, stats) = match result {
            Ok(r) => r,
            Err(e) => {
                // The cache may hold half a turn: start over next time.
                self.reset();
                return Err(e);
            }
        };
        self.n_turns += 1;
        self.unfed = stats.unfed;
        self.last_tokens = stats.generated_tokens;
        self.last_micros = t_end.saturating_sub(t_start);
        Ok(if reason == StopReason::Stopped {
            ReplyEnd::Stopped
        } else {
            ReplyEnd::Finished
        })
    }

    fn reset(&mut self) {
        self.session.reset();
        self.unfed = None;
        self.sampler.reset();
        self.n_turns = 0;
    }

    fn set_system(&mut self, text: &str) -> Result<()> {
        match &mut self.turns {
            Turns::Chatml {
                system, system_len, ..
            } => {
                let available = system.len() as u64;
                let dst = system.get_mut(..text.len()).ok_or(Error::Capacity {
                    what: "system message (bytes)",
                    needed: text.len() as u64,
                    available,
                })?;
                dst.copy_from_slice(text.as_bytes());
                *system_len = text.len();
            }
        }
        self.reset();
        Ok(())
    }

    fn set_temperature(&mut self, t: f32) -> Result<()> {
        if t < 0.0 {
            return Err(Error::InvalidArgument("the temperature must be at least 0"));
        }
        self.sampler.set_temperature(t)
    }

    fn set_json(&mut self, on: bool) -> Result<()> {
        if on && self.json.is_none() {
            return Err(Error::InvalidArgument(
                "JSON replies were not given memory in this console",
            ));
        }
        self.json_on = on;
        Ok(())
    }

    fn write_stats(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        let rate = (self.clock.is_some() && self.last_micros > 0)
            .then(|| self.last_tokens as f64 * 1e6 / self.last_micros as f64);
        super::write_stats_line(
            out,
            self.n_turns,
            &self.session,
            self.last_tokens,
            rate,
            self.sampler.config().temperature,
            self.json_on,
        )
    }
}
