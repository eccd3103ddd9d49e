//! A multi-turn conversation over one session (std): each turn renders the whole conversation
//! with the chat template and feeds the model only what its cache does not hold yet.

use super::{ChatTemplate, Message};
use crate::error::Result;
use crate::model::Model;
use crate::session::Session;
use crate::tokenizer::TokenId;
use std::string::String;
use std::vec::Vec;

/// The conversation so far, and the text the session's cache represents.
///
/// The cache holds the rendered prompt of the last turn plus the reply tokens evaluated since.
/// The next rendering normally extends that text (the template adds the reply's end-of-turn
/// marker and the new user message), so only the extension is tokenized and fed. When it does
/// not (a template that rewrites earlier turns, a reply cut by a stop string, a reply longer than
/// the ring), the session is reset and the whole conversation fed again; once the conversation
/// is longer than the context, the ring cache keeps the sinks and the most recent tokens.
pub struct Conversation {
    template: ChatTemplate,
    system: Option<String>,
    /// Tools: the template's `tools` variable, the generic format's text for the system
    /// message, and that message with it.
    tools: Option<serde_json::Value>,
    tools_text: Option<String>,
    tools_system: Option<String>,
    /// (role, content) of every message after the system one.
    turns: Vec<(String, String)>,
    /// The text the cache holds, when known.
    cached: Option<String>,
    /// Position after the last turn's prompt (where its reply starts).
    reply_start: usize,
}

impl Conversation {
    /// A new conversation with the model's own template (ChatML when it has none).
    pub fn new(model: &Model<'_>, system: Option<&str>) -> Result<Self> {
        Ok(Conversation {
            template: ChatTemplate::for_model(model)?,
            system: system.map(String::from),
            tools: None,
            tools_text: None,
            tools_system: None,
            turns: Vec::new(),
            cached: None,
            reply_start: 0,
        })
    }

    /// The template in use.
    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// Forgets every turn (the system message stays).
    pub fn reset(&mut self) {
        self.turns.clear();
        self.cached = None;
    }

    /// Sets (or clears) the system message and starts a new conversation.
    pub fn set_system(&mut self, system: Option<&str>) {
        self.system = system.map(String::from);
        self.join_system();
        self.reset();
    }

    fn join_system(&mut self) {
        self.tools_system = match (&self.system, &self.tools_text) {
            (Some(s), Some(t)) => Some(std::format!("{s}\n\n{t}")),
            (None, Some(t)) => Some(t.clone()),
            (_, None) => None,
        };
    }

    /// Offers `tools` (or none) to the model from now on: through the template's `tools`
    /// variable or the system message, as the tool set's format says. Starts a new
    /// conversation.
    pub fn set_tools(&mut self, tools: Option<&super::tools::ToolSet>) {
        self.tools = tools.and_then(|t| t.template_tools());
        self.tools_text = tools.and_then(|t| t.system_text());
        self.join_system();
        self.reset();
    }

    /// Messages so far, system first.
    pub fn messages(&self) -> Vec<Message<'_>> {
        let mut msgs = Vec::with_capacity(self.turns.len() + 1);
        if let Some(s) = self.tools_system.as_ref().or(self.system.as_ref()) {
            msgs.push(Message {
                role: "system",
                content: s,
            });
        }
        msgs.extend(self.turns.iter().map(|(r, c)| Message {
            role: r,
            content: c,
        }));
        msgs
    }

    /// Adds the user's message and returns the tokens to generate from: the new part of the
    /// rendered conversation when `session` already holds the rest, else all of it (after
    /// resetting `session`). On error the message is not added.
    pub fn user_turn(&mut self, session: &mut Session<'_, '_>, text: &str) -> Result<Vec<TokenId>> {
        self.turn(session, "user", text)
    }

    /// [`Conversation::user_turn`] for a message of any role the template knows (`tool`: a
    /// tool's result).
    pub fn turn(
        &mut self,
        session: &mut Session<'_, '_>,
        role: &str,
        text: &str,
    ) -> Result<Vec<TokenId>> {
        self.turns.push((role.into(), text.into()));
        let rendered = match self.render() {
            Ok(r) => r,
            Err(e) => {
                self.turns.pop();
                return Err(e);
            }
        };
        let tok = &session.model().tokenizer;
        let (ids, fresh) = match &self.cached {
            Some(c) if session.n_past() > 0 && rendered.starts_with(c.as_str()) => (
                tok.encode_to_vec(&rendered.as_bytes()[c.len()..], true, false),
                false,
            ),
            _ => (tok.encode_to_vec(rendered.as_bytes(), true, false), true),
        };
        let ids = match ids {
            Ok(ids) => ids,
            Err(e) => {
                self.turns.pop();
                return Err(e);
            }
        };
        if fresh {
            session.reset();
        }
        self.reply_start = session.n_past() + ids.len();
        self.cached = Some(rendered);
        Ok(ids)
    }

    /// Adds the user's message and returns the whole conversation's tokens, as fed from an
    /// empty cache, for generating outside this conversation's session (e.g. a beam search);
    /// record the reply with [`Conversation::push_reply`].
    pub fn user_turn_full(
        &mut self,
        tokenizer: &crate::tokenizer::Tokenizer<'_>,
        text: &str,
    ) -> Result<Vec<TokenId>> {
        self.turns.push(("user".into(), text.into()));
        let ids = self
            .render()
            .and_then(|r| tokenizer.encode_to_vec(r.as_bytes(), true, false));
        if ids.is_err() {
            self.turns.pop();
        }
        self.cached = None;
        ids
    }

    /// The conversation rendered, with the generation prompt (and the tools).
    fn render(&self) -> Result<String> {
        self.template
            .render_with_tools(&self.messages(), true, self.tools.as_ref())
    }

    /// Forgets what the session's cache holds (after feeding it text outside the conversation):
    /// the next turn resets the session and feeds the whole conversation.
    pub fn reset_cache(&mut self) {
        self.cached = None;
    }

    /// Takes back the user message of the last [`Conversation::user_turn`] when its tokens never
    /// made it into the cache (the prompt was cancelled or failed): the conversation is as before
    /// it, and the next turn feeds the whole conversation again.
    pub fn cancel_turn(&mut self) {
        if self.turns.last().is_some_and(|(r, _)| r != "assistant") {
            self.turns.pop();
        }
        self.cached = None;
    }

    /// Records a reply generated outside this conversation's session.
    pub fn push_reply(&mut self, reply: &str) {
        self.turns.push(("assistant".into(), reply.into()));
        self.cached = None;
    }

    /// Records the model's reply (the text shown to the user) after generating from the tokens
    /// [`Conversation::user_turn`] returned; `session` is the one generated with.
    pub fn assistant_reply(&mut self, session: &Session<'_, '_>, reply: &str) {
        self.turns.push(("assistant".into(), reply.into()));
        // Extend the cached text with the reply tokens the cache holds.
        let tok = &session.model().tokenizer;
        let mut bytes = Vec::new();
        for pos in self.reply_start..session.n_past() {
            match session.token_at(pos) {
                Some(t) => tok.decode_token(t, true, &mut |b| bytes.extend_from_slice(b)),
                None => {
                    self.cached = None;
                    return;
                }
            }
        }
        match (&mut self.cached, String::from_utf8(bytes)) {
            (Some(c), Ok(s)) => c.push_str(&s),
            _ => self.cached = None,
        }
    }
}
