//! Tool calls (std): the tools a model may call, the grammar that keeps its reply to a valid
//! call, and the call read back from the reply.
//!
//! Three formats, chosen from the chat template as llama.cpp's chat handlers choose them:
//! - [`ToolFormat::Hermes`], for templates that describe the tools themselves and ask for
//!   `<tool_call>\n{"name": …, "arguments": …}\n</tool_call>` (Qwen2.5, Qwen3, Hermes): the
//!   tools go to the template's `tools` variable;
//! - [`ToolFormat::Llama3`], for templates that ask for `{"name": …, "parameters": …}` (Llama
//!   3.1, 3.2, 3.3): the same, with that reply;
//! - [`ToolFormat::Generic`] for every other template (SmolLM2's, Gemma 3's): llama.cpp's
//!   generic format, the tools described in the system message and the reply constrained to
//!   `{"tool_call": {"name": …, "arguments": …}}` or, when the model may answer, `{"response":
//!   "…"}`.
//!
//! In every format the name is one of the offered tools and the arguments are JSON that tool's
//! `parameters` schema accepts (a grammar made by [`crate::grammar::gbnf_rules_from_schema`]).
//! With [`ToolChoice::Auto`] the native formats let the model write plain text instead of a call
//! (not starting with the call's opening: `<` or `{`), after a `<think>` block when the
//! template has them.

use crate::error::{Error, Result};
use crate::grammar::gbnf_rules_from_schema;
use serde_json::{json, Value};
use std::format;
use std::string::{String, ToString};
use std::vec::Vec;

/// One tool: its name, what it does, and the JSON Schema of its arguments.
#[derive(Clone, Debug, PartialEq)]
pub struct Tool {
    /// What the model calls it.
    pub name: String,
    /// What it does, for the model.
    pub description: Option<String>,
    /// The JSON Schema of its arguments (an object).
    pub parameters: Value,
}

/// Whether the reply must be a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToolChoice {
    /// A call or a plain answer, as the model decides.
    Auto,
    /// A call.
    Required,
}

/// How a model is told about tools and how it writes a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToolFormat {
    /// Tools in the system message, the reply a JSON envelope (llama.cpp's generic format).
    Generic,
    /// Tools through the template; a call is `<tool_call>\n{"name", "arguments"}\n</tool_call>`.
    Hermes,
    /// Tools through the template; a call is `{"name", "parameters"}`.
    Llama3,
}

impl ToolFormat {
    /// The format a chat template (its Jinja source; `None`: built-in ChatML) asks for.
    pub fn of_template(src: Option<&str>) -> ToolFormat {
        let Some(src) = src else {
            return ToolFormat::Generic;
        };
        if src.contains("<tool_call>")
            && src.contains("arguments")
            && !src.contains("<function=")
            && !src.contains("<arg_key>")
        {
            ToolFormat::Hermes
        } else if src.contains("\"parameters\": dictionary of argument") {
            ToolFormat::Llama3
        } else {
            ToolFormat::Generic
        }
    }

    /// Its name (for messages and logs).
    pub fn name(self) -> &'static str {
        match self {
            ToolFormat::Generic => "generic",
            ToolFormat::Hermes => "hermes",
            ToolFormat::Llama3 => "llama3",
        }
    }

    /// The key a call's arguments go under.
    fn arguments_key(self) -> &'static str {
        match self {
            ToolFormat::Llama3 => "parameters",
            _ => "arguments",
        }
    }
}

/// A reply read back: a call (the tool's name and its arguments as JSON text) or an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolReply {
    /// A call of tool `name` with `arguments` (JSON text).
    Call {
        /// The tool.
        name: String,
        /// Its arguments, as JSON text.
        arguments: String,
    },
    /// An answer.
    Text(String),
}

/// The tools of a conversation in one format: what the prompt gets and the reply's grammar.
#[derive(Clone, Debug)]
pub struct ToolSet {
    format: ToolFormat,
    choice: ToolChoice,
    tools: Vec<Tool>,
    /// Whether the template writes `<think>` blocks before a reply.
    thinks: bool,
    grammar: String,
}

/// Reads OpenAI's tool list: `[{"type": "function", "function": {"name", "description",
/// "parameters"}}, …]` (entries may also be the bare `{"name", …}` object). The error names the
/// entry.
pub fn tools_from_openai(list: &Value) -> core::result::Result<Vec<Tool>, String> {
    let list = list.as_array().ok_or("the tools must be a list")?;
    let mut out: Vec<Tool> = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        let f = match t.get("function") {
            Some(f)
                if t.get("type").and_then(Value::as_str).unwrap_or("function") == "function" =>
            {
                f
            }
            Some(_) => return Err(format!("tools[{i}] is not a function")),
            None => t,
        };
        let f = f.as_object().ok_or_else(|| {
            format!("tools[{i}] must be {{\"type\": \"function\", \"function\": {{…}}}}")
        })?;
        let name = f
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("tools[{i}] has no name"))?;
        if out.iter().any(|t| t.name == name) {
            return Err(format!("tools[{i}]: a second tool named '{name}'"));
        }
        let description = match f.get("description") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(format!("tools[{i}].description must be a string")),
        };
        let parameters = match f.get("parameters") {
            None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
            Some(p @ Value::Object(_)) => p.clone(),
            Some(_) => {
                return Err(format!(
                    "tools[{i}].parameters must be a JSON Schema object"
                ))
            }
        };
        out.push(Tool {
            name: name.to_string(),
            description,
            parameters,
        });
    }
    Ok(out)
}

/// Free text that does not begin like a call, and a `<think>` block.
const TEXT_RULES: &str =
    "tool-think ::= \"<think>\" ( [^<] | \"<\" [^/] )* \"</think>\" [\\n]{0,2}\n";

impl ToolSet {
    /// The tools in `format` (from [`ToolFormat::of_template`]); `template_src` tells whether
    /// replies begin with a `<think>` block. Errors when a tool's parameters are a schema the
    /// grammar converter refuses (naming the tool).
    pub fn new(
        tools: Vec<Tool>,
        choice: ToolChoice,
        format: ToolFormat,
        template_src: Option<&str>,
    ) -> Result<ToolSet> {
        if tools.is_empty() {
            return Err(Error::InvalidArgument("a tool set needs at least one tool"));
        }
        let key = format.arguments_key();
        let calls: Vec<Value> = tools
            .iter()
            .map(|t| {
                json!({"type": "object", "properties": {"name": {"const": t.name}, key: t.parameters},
                       "required": ["name", key]})
            })
            .collect();
        let call = json!({"anyOf": calls});
        let thinks =
            format != ToolFormat::Generic && template_src.is_some_and(|s| s.contains("<think>"));
        let grammar = match format {
            ToolFormat::Generic => {
                let envelope = json!({"type": "object", "properties": {"tool_call": call}, "required": ["tool_call"]});
                let schema = match choice {
                    ToolChoice::Required => envelope,
                    ToolChoice::Auto => json!({"anyOf": [envelope, {"type": "object",
                        "properties": {"response": {"type": "string"}}, "required": ["response"]}]}),
                };
                gbnf_rules_from_schema(&schema.to_string(), "root")?
            }
            ToolFormat::Hermes | ToolFormat::Llama3 => {
                let rules = gbnf_rules_from_schema(&call.to_string(), "tool-call")?;
                let (call, text) = if format == ToolFormat::Hermes {
                    (
                        "\"<tool_call>\\n\" tool-call \"\\n</tool_call>\"",
                        "[^<] .*",
                    )
                } else {
                    ("tool-call", "[^{] .*")
                };
                let body = match choice {
                    ToolChoice::Required => call.to_string(),
                    ToolChoice::Auto => format!("{call} | {text}"),
                };
                let think = if thinks { "tool-think? " } else { "" };
                format!("root ::= {think}( {body} )\n{TEXT_RULES}{rules}")
            }
        };
        Ok(ToolSet {
            format,
            choice,
            tools,
            thinks,
            grammar,
        })
    }

    /// The tools in the format `template` asks for ([`ToolFormat::of_template`]).
    pub fn for_template(
        tools: Vec<Tool>,
        choice: ToolChoice,
        template: &super::ChatTemplate,
    ) -> Result<ToolSet> {
        let src = template.source();
        Self::new(tools, choice, ToolFormat::of_template(src), src)
    }

    /// The format in use.
    pub fn format(&self) -> ToolFormat {
        self.format
    }

    /// The tools.
    pub fn tools(&self) -> &[Tool] {
        &self.tools
    }

    /// The reply's grammar (GBNF).
    pub fn grammar(&self) -> &str {
        &self.grammar
    }

    /// The tools as the template's `tools` variable (OpenAI's list), in the native formats;
    /// `None` in the generic one (the system message describes them).
    pub fn template_tools(&self) -> Option<Value> {
        (self.format != ToolFormat::Generic).then(|| {
            Value::Array(
                self.tools
                    .iter()
                    .map(|t| {
                        json!({"type": "function", "function": {"name": t.name,
                            "description": t.description, "parameters": t.parameters}})
                    })
                    .collect(),
            )
        })
    }

    /// What the generic format adds to the system message (`None` in the native formats).
    pub fn system_text(&self) -> Option<String> {
        if self.format != ToolFormat::Generic {
            return None;
        }
        let described: Vec<Value> = self
            .tools
            .iter()
            .map(|t| json!({"name": t.name, "description": t.description, "parameters": t.parameters}))
            .collect();
        let mut s = format!(
            "You can call these tools:\n{}\n\nTo call a tool, reply with JSON: {{\"tool_call\": {{\"name\": <tool name>, \"arguments\": <its arguments>}}}}.",
            serde_json::to_string_pretty(&described).unwrap_or_default()
        );
        if self.choice == ToolChoice::Auto {
            s.push_str(
                " To answer without a tool, reply with JSON: {\"response\": <your answer>}.",
            );
        }
        Some(s)
    }

    /// An earlier call as the model writes it (for an assistant message in the history).
    pub fn call_text(&self, name: &str, arguments: &Value) -> String {
        match self.format {
            ToolFormat::Generic => {
                json!({"tool_call": {"name": name, "arguments": arguments}}).to_string()
            }
            ToolFormat::Hermes => format!(
                "<tool_call>\n{}\n</tool_call>",
                json!({"name": name, "arguments": arguments})
            ),
            ToolFormat::Llama3 => json!({"name": name, "parameters": arguments}).to_string(),
        }
    }

    /// Reads a reply generated under [`ToolSet::grammar`]: the call, or the answer's text.
    pub fn parse_reply(&self, text: &str) -> ToolReply {
        let body = match text.rfind("</think>") {
            Some(i) if self.thinks => text[i + "</think>".len()..].trim_start(),
            _ => text,
        };
        let call = |v: &Value, key: &str| {
            let name = v.get("name").and_then(Value::as_str)?;
            let args = v.get(key).cloned().unwrap_or(json!({}));
            Some(ToolReply::Call {
                name: name.to_string(),
                arguments: args.to_string(),
            })
        };
        let parsed = match self.format {
            ToolFormat::Generic => serde_json::from_str::<Value>(body).ok().and_then(|v| {
                if let Some(c) = v.get("tool_call") {
                    return call(c, "arguments");
                }
                v.get("response")
                    .and_then(Value::as_str)
                    .map(|s| ToolReply::Text(s.to_string()))
            }),
            ToolFormat::Hermes => body
                .trim()
                .strip_prefix("<tool_call>")
                .and_then(|r| r.trim_end().strip_suffix("</tool_call>"))
                .and_then(|j| serde_json::from_str::<Value>(j.trim()).ok())
                .and_then(|v| call(&v, "arguments")),
            ToolFormat::Llama3 => serde_json::from_str::<Value>(body.trim())
                .ok()
                .and_then(|v| call(&v, "parameters")),
        };
        parsed.unwrap_or_else(|| ToolReply::Text(body.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arena::Arena;
    use crate::grammar::{Grammar, Matcher, MatcherLimits};

    fn light() -> Vec<Tool> {
        tools_from_openai(
            &json!([{"type": "function", "function": {"name": "set_light",
            "description": "Turn a light on or off", "parameters": {"type": "object",
            "properties": {"room": {"enum": ["kitchen", "hall"]}, "on": {"type": "boolean"}},
            "required": ["room", "on"]}}}, {"name": "get_time"}]),
        )
        .unwrap()
    }

    fn accepts(g: &str, text: &str) -> bool {
        let g = Grammar::compile_owned(g).unwrap();
        let limits = MatcherLimits::default();
        let mut mem = std::vec![0u8; Matcher::bytes_needed(&limits)];
        let mut m = Matcher::new(g.grammar(), &mut Arena::new(&mut mem), &limits).unwrap();
        m.accept_bytes(text.as_bytes()).unwrap() && m.is_complete()
    }

    #[test]
    fn each_format_constrains_to_its_calls_and_reads_them_back() {
        let qwen = "{% if tools %}<tool_call>\\n{\"name\": <function-name>, \"arguments\": <args-json-object>}{% endif %}<think>";
        let llama = "Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.";
        assert_eq!(ToolFormat::of_template(Some(qwen)), ToolFormat::Hermes);
        assert_eq!(ToolFormat::of_template(Some(llama)), ToolFormat::Llama3);
        assert_eq!(
            ToolFormat::of_template(Some("{{ messages }}")),
            ToolFormat::Generic
        );
        assert_eq!(ToolFormat::of_template(None), ToolFormat::Generic);
        let call = json!({"room": "kitchen", "on": true});
        for (format, src) in [
            (ToolFormat::Generic, None),
            (ToolFormat::Hermes, Some(qwen)),
            (ToolFormat::Llama3, Some(llama)),
        ] {
            for choice in [ToolChoice::Auto, ToolChoice::Required] {
                let t = ToolSet::new(light(), choice, format, src).unwrap();
                let text = t.call_text("set_light", &call);
                assert!(accepts(t.grammar(), &text), "{format:?} {choice:?}: {text}");
                assert_eq!(
                    t.parse_reply(&text),
                    ToolReply::Call {
                        name: "set_light".into(),
                        arguments: call.to_string()
                    }
                );
                // A wrong tool, wrong arguments: refused.
                let bad = t.call_text("set_fire", &call);
                assert!(!accepts(t.grammar(), &bad), "{format:?}: {bad}");
                let bad = t.call_text("set_light", &json!({"room": "attic", "on": true}));
                assert!(!accepts(t.grammar(), &bad), "{format:?}: {bad}");
                let empty = t.call_text("get_time", &json!({}));
                assert!(accepts(t.grammar(), &empty), "{format:?}: {empty}");
                // A plain answer only with auto.
                let answer = match format {
                    ToolFormat::Generic => json!({"response": "Hello."}).to_string(),
                    _ => "Hello.".to_string(),
                };
                assert_eq!(
                    accepts(t.grammar(), &answer),
                    choice == ToolChoice::Auto,
                    "{format:?}"
                );
                if choice == ToolChoice::Auto {
                    assert_eq!(t.parse_reply(&answer), ToolReply::Text("Hello.".into()));
                }
                assert_eq!(t.template_tools().is_some(), format != ToolFormat::Generic);
                assert_eq!(t.system_text().is_some(), format == ToolFormat::Generic);
            }
        }
        // A <think> block first, where the template has them.
        let t = ToolSet::new(
            light(),
            ToolChoice::Required,
            ToolFormat::Hermes,
            Some(qwen),
        )
        .unwrap();
        let text = format!(
            "<think>\nThe user wants light.\n</think>\n\n{}",
            t.call_text("get_time", &json!({}))
        );
        assert!(accepts(t.grammar(), &text));
        assert!(matches!(t.parse_reply(&text), ToolReply::Call { name, .. } if name == "get_time"));
    }

    #[test]
    fn bad_tool_lists_are_refused_by_entry() {
        for (list, want) in [
            (json!({"a": 1}), "must be a list"),
            (
                json!([{"type": "function", "function": {"description": "x"}}]),
                "tools[0] has no name",
            ),
            (
                json!([{"name": "a"}, {"name": "a"}]),
                "tools[1]: a second tool",
            ),
            (
                json!([{"name": "a", "parameters": 3}]),
                "tools[0].parameters",
            ),
            (
                json!([{"type": "retrieval", "function": {"name": "a"}}]),
                "not a function",
            ),
        ] {
            let e = tools_from_openai(&list).unwrap_err();
            assert!(e.contains(want), "{list}: {e}");
        }
        let t = tools_from_openai(
            &json!([{"name": "a", "parameters": {"type": "string", "pattern": "x+"}}]),
        )
        .unwrap();
        let e = ToolSet::new(t, ToolChoice::Auto, ToolFormat::Generic, None).unwrap_err();
        assert!(e.to_string().contains("pattern"), "{e}");
    }
}
