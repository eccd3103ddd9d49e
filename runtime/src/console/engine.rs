//! The console on an [`Engine`] (std): each line is one chat turn with the engine's turn
//! policy, its template and its grammar (`/json`). `ember serial` runs this; a board without
//! `std` runs [`super::ChatAssistant`].

use super::{Assistant, ReplyEnd};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::grammar::JSON;
use crate::session::{GenOptions, StopReason};
use core::fmt;
use std::time::Instant;

/// An [`Engine`] as the console's conversation.
pub struct EngineAssistant {
    engine: Engine,
    max_reply: usize,
    json: bool,
    turns: usize,
    last_tokens: usize,
    /// Decode speed of the last reply (tokens after the first, per second).
    last_rate: Option<f64>,
}

impl EngineAssistant {
    /// The console over `engine` (its system message, sampling and context as set); replies
    /// stop after `max_reply` tokens.
    pub fn new(engine: Engine, max_reply: usize) -> Self {
        EngineAssistant {
            engine,
            max_reply,
            json: false,
            turns: 0,
            last_tokens: 0,
            last_rate: None,
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

impl Assistant for EngineAssistant {
    fn reply(&mut self, line: &str, emit: &mut dyn FnMut(&str) -> bool) -> Result<ReplyEnd> {
        let opts = GenOptions {
            max_tokens: self.max_reply,
            ignore_eos: false,
            stop: &[],
        };
        let mut start = None;
        let out = self
            .engine
            .chat(line, &opts, &mut || start = Some(Instant::now()), emit)?;
        self.turns += 1;
        self.last_tokens = out.stats.generated_tokens;
        self.last_rate = start.map(|t| t.elapsed().as_secs_f64()).and_then(|s| {
            (s > 0.0 && out.stats.generated_tokens > 0)
                .then(|| out.stats.generated_tokens as f64 / s)
        });
        Ok(if out.reason == StopReason::Stopped {
            ReplyEnd::Stopped
        } else {
            ReplyEnd::Finished
        })
    }

    fn reset(&mut self) {
        self.engine.reset();
        self.turns = 0;
    }

    fn set_system(&mut self, text: &str) -> Result<()> {
        self.engine
            .conversation()
            .set_system((!text.is_empty()).then_some(text));
        self.reset();
        Ok(())
    }

    fn set_temperature(&mut self, t: f32) -> Result<()> {
        if t < 0.0 {
            return Err(Error::InvalidArgument("the temperature must be at least 0"));
        }
        let mut cfg = *self.engine.sampling();
        cfg.temperature = t;
        self.engine.set_sampling(cfg)
    }

    fn set_json(&mut self, on: bool) -> Result<()> {
        self.engine.set_grammar(on.then_some(JSON))?;
        self.json = on;
        Ok(())
    }

    fn write_stats(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        super::write_stats_line(
            out,
            self.turns,
            self.engine.session(),
            self.last_tokens,
            self.last_rate,
            self.engine.sampling().temperature,
            self.json,
        )
    }
}
