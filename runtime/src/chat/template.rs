//! Jinja chat templates with minijinja (std).

use super::{render_chatml, Message};
use crate::error::{Error, Result};
use std::string::String;

/// Work allowed to one rendering (minijinja fuel: roughly one unit per instruction). Real chat
/// templates use a few thousand per message.
const FUEL: u64 = 5_000_000;
/// Largest rendered prompt, in bytes.
pub const MAX_OUTPUT: usize = 4 << 20;

/// A compiled chat template (or the built-in ChatML when the model has none).
pub struct ChatTemplate {
    env: Option<minijinja::Environment<'static>>,
    bos: String,
    eos: String,
}

impl ChatTemplate {
    /// The template of `model` (`tokenizer.chat_template`), with its BOS and EOS token texts.
    pub fn for_model(model: &crate::model::Model<'_>) -> Result<Self> {
        let src = model.gguf.get_str(crate::gguf::keys::CHAT_TEMPLATE)?;
        let t = &model.tokenizer;
        let text = |id: Option<u32>| {
            id.and_then(|i| t.token_text(i))
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default()
        };
        Self::new(src, &text(t.bos()), &text(t.eos()))
    }

    /// Compiles `source` (a GGUF's `tokenizer.chat_template`); `None` means ChatML.
    pub fn new(source: Option<&str>, bos: &str, eos: &str) -> Result<Self> {
        let env = match source {
            None => None,
            Some(src) => {
                let mut env = minijinja::Environment::new();
                // transformers: jinja2 Environment(trim_blocks=True, lstrip_blocks=True).
                let syntax = minijinja::syntax::SyntaxConfig::builder()
                    .trim_blocks(true)
                    .lstrip_blocks(true)
                    .build()
                    .map_err(|_| Error::Tokenizer("chat template syntax settings"))?;
                env.set_syntax(syntax);
                env.set_fuel(Some(FUEL));
                env.set_unknown_method_callback(
                    minijinja_contrib::pycompat::unknown_method_callback,
                );
                env.add_function(
                    "raise_exception",
                    |msg: String| -> core::result::Result<String, minijinja::Error> {
                        Err(minijinja::Error::new(
                            minijinja::ErrorKind::InvalidOperation,
                            msg,
                        ))
                    },
                );
                env.add_template_owned("chat", src.to_owned())
                    .map_err(|_| Error::Tokenizer("the chat template is not valid Jinja"))?;
                Some(env)
            }
        };
        Ok(ChatTemplate {
            env,
            bos: bos.into(),
            eos: eos.into(),
        })
    }

    /// Whether the model's own template is used (false: built-in ChatML).
    pub fn is_model_template(&self) -> bool {
        self.env.is_some()
    }

    /// Renders the conversation as the prompt text.
    pub fn render(&self, messages: &[Message<'_>], add_generation_prompt: bool) -> Result<String> {
        let Some(env) = &self.env else {
            let mut s = String::new();
            render_chatml(messages, add_generation_prompt, &mut s)
                .map_err(|_| Error::InvalidArgument("rendering the conversation failed"))?;
            return Ok(s);
        };
        let msgs: Vec<minijinja::Value> = messages
            .iter()
            .map(|m| minijinja::context! { role => m.role, content => m.content })
            .collect();
        let tmpl = env
            .get_template("chat")
            .map_err(|_| Error::Tokenizer("the chat template is missing"))?;
        let out = tmpl
            .render(minijinja::context! {
                messages => msgs,
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos,
                eos_token => &self.eos,
            })
            .map_err(|e| match e.kind() {
                minijinja::ErrorKind::OutOfFuel => Error::Capacity {
                    what: "chat template work (fuel)",
                    needed: FUEL + 1,
                    available: FUEL,
                },
                minijinja::ErrorKind::InvalidOperation => {
                    Error::InvalidArgument("the chat template refused this conversation")
                }
                _ => Error::InvalidArgument("the chat template failed to render this conversation"),
            })?;
        if out.len() > MAX_OUTPUT {
            return Err(Error::Capacity {
                what: "rendered chat prompt (bytes)",
                needed: out.len() as u64,
                available: MAX_OUTPUT as u64,
            });
        }
        Ok(out)
    }
}
