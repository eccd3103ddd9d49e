//! Chat templates: the model's own template with arbitrary message contents (split on NUL into
//! role, content, role, ...), and arbitrary template sources, rendered under the fuel and output
//! limits, also with a tool list (the `tools` variable, written by the Python-compatible
//! `tojson`). Rendering either succeeds or returns an error; it never panics or hangs.
#![no_main]

#[path = "common.rs"]
mod common;

use ember_runtime::chat::{ChatTemplate, Message};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    if mode & 1 == 0 {
        static T: OnceLock<ChatTemplate> = OnceLock::new();
        let t = T.get_or_init(|| ChatTemplate::for_model(common::model()).expect("template"));
        let parts: Vec<&str> = text.split('\0').collect();
        let msgs: Vec<Message<'_>> = parts
            .chunks(2)
            .map(|p| Message {
                role: p[0],
                content: p.get(1).copied().unwrap_or(""),
            })
            .collect();
        let _ = t.render(&msgs, mode & 2 != 0);
    } else if let Ok(t) = ChatTemplate::new(Some(&text), "<s>", "</s>") {
        let msgs = [
            Message {
                role: "system",
                content: "be brief",
            },
            Message {
                role: "user",
                content: "hi {{ 7*7 }}",
            },
        ];
        let _ = t.render(&msgs, true);
        let tools = serde_json::json!([{"type": "function", "function": {"name": "f",
            "description": "é\u{1}\"", "parameters": {"type": "object", "properties": {
            "x": {"type": "number", "minimum": -1.5e-7}, "y": {"enum": [1, 2.5, null, true]}}}}}]);
        let _ = t.render_with_tools(&msgs, true, Some(&tools));
    }
});
