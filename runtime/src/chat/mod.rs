//! Conversations as prompts: the model's own chat template.
//!
//! With `std`, the GGUF's `tokenizer.chat_template` (Jinja) is rendered with minijinja the way
//! Hugging Face transformers' `apply_chat_template` renders it: `trim_blocks` and `lstrip_blocks`,
//! the variables `messages`, `add_generation_prompt`, `bos_token`, `eos_token`, the functions
//! `raise_exception` and `strftime_now` (today, or a fixed date), and Python string methods
//! (`.strip()`, `.split()`, ...). Every template of llama.cpp's suite renders as jinja2 renders it
//! (tests/chat_templates_vs_jinja2.rs). Rendering is
//! bounded: a fuel limit on the work, and a cap on the output. [`render_chatml`] is the built-in
//! fallback (no template in the file) and the renderer of `no_std` builds.

#[cfg(feature = "std")]
mod template;
#[cfg(feature = "std")]
pub use template::ChatTemplate;
#[cfg(feature = "std")]
mod conversation;
#[cfg(feature = "std")]
pub mod tools;
#[cfg(feature = "std")]
pub use conversation::Conversation;

use core::fmt::{self, Write};

/// One message of a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// `system`, `user` or `assistant` (any role the template knows).
    pub role: &'a str,
    /// The text.
    pub content: &'a str,
}

/// Renders `messages` in ChatML (`<|im_start|>role\ncontent<|im_end|>\n`), adding the assistant
/// prompt when `add_generation_prompt` is set.
pub fn render_chatml(
    messages: &[Message<'_>],
    add_generation_prompt: bool,
    out: &mut dyn Write,
) -> fmt::Result {
    for m in messages {
        write!(out, "<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content)?;
    }
    if add_generation_prompt {
        out.write_str("<|im_start|>assistant\n")?;
    }
    Ok(())
}
