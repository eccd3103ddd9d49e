//! The OpenAI-style request and response shapes of `ember serve`: requests read from JSON
//! values with every field checked (unknown fields ignored), responses written as JSON values.

use ember_runtime::chat::tools::{tools_from_openai, ToolChoice, ToolSet};
use ember_runtime::chat::ChatTemplate;
use ember_runtime::sampler::SamplerConfig;
use ember_runtime::session::{StopReason, MAX_STOPS, MAX_STOP_LEN};
use serde_json::{json, Map, Value};

/// A request the server refuses: HTTP status, OpenAI error type, message, and the parameter.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub kind: &'static str,
    pub message: String,
    pub param: Option<&'static str>,
}

impl ApiError {
    pub fn bad(param: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: 400,
            kind: "invalid_request_error",
            message: message.into(),
            param: Some(param),
        }
    }

    pub fn new(status: u16, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
            param: None,
        }
    }

    /// The body: `{"error": {"message", "type", "param", "code"}}`.
    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": Value::Null,
        }})
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A JSON object body.
pub fn object(body: &[u8]) -> ApiResult<Map<String, Value>> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad("body", "the request body is not UTF-8"))?;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad(
            "body",
            "the request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad(
            "body",
            format!("the request body is not valid JSON: {e}"),
        )),
    }
}

/// Field readers: absent and `null` are "not given"; a wrong type is a 400 naming the field.
pub struct Fields<'a>(pub &'a Map<String, Value>);

impl<'a> Fields<'a> {
    fn get(&self, k: &str) -> Option<&'a Value> {
        self.0.get(k).filter(|v| !v.is_null())
    }

    pub fn f32(&self, k: &'static str, lo: f32, hi: f32) -> ApiResult<Option<f32>> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => {
                let x = v
                    .as_f64()
                    .ok_or_else(|| ApiError::bad(k, format!("'{k}' must be a number")))?;
                if !(lo as f64..=hi as f64).contains(&x) {
                    return Err(ApiError::bad(
                        k,
                        format!("'{k}' must be between {lo} and {hi}, not {x}"),
                    ));
                }
                Ok(Some(x as f32))
            }
        }
    }

    pub fn uint(&self, k: &'static str, max: u64) -> ApiResult<Option<u64>> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => {
                let x = v.as_u64().ok_or_else(|| {
                    ApiError::bad(k, format!("'{k}' must be a non-negative integer"))
                })?;
                if x > max {
                    return Err(ApiError::bad(
                        k,
                        format!("'{k}' must be at most {max}, not {x}"),
                    ));
                }
                Ok(Some(x))
            }
        }
    }

    pub fn bool(&self, k: &'static str) -> ApiResult<Option<bool>> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ApiError::bad(k, format!("'{k}' must be true or false"))),
        }
    }

    pub fn str(&self, k: &'static str) -> ApiResult<Option<&'a str>> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ApiError::bad(k, format!("'{k}' must be a string"))),
        }
    }

    pub fn value(&self, k: &str) -> Option<&'a Value> {
        self.get(k)
    }
}

/// What every generating request shares.
#[derive(Clone, Debug)]
pub struct Generate {
    pub max_tokens: Option<usize>,
    pub sampler: SamplerConfig,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
    /// Keep going past end-of-generation tokens (llama-server's `ignore_eos`).
    pub ignore_eos: bool,
    /// A GBNF grammar the output must follow (`response_format` JSON, or `grammar`).
    pub grammar: Option<String>,
}

/// Reads the sampling and limit fields, over the server's defaults `base`. `fresh_seed` is
/// used when the request samples (temperature above 0) without a seed of its own.
pub fn generate(f: &Fields<'_>, base: &SamplerConfig, fresh_seed: u64) -> ApiResult<Generate> {
    if let Some(n) = f.uint("n", u64::MAX)? {
        if n != 1 {
            return Err(ApiError::bad("n", "only n = 1 is supported"));
        }
    }
    let max_tokens = match f.uint("max_completion_tokens", u32::MAX as u64)? {
        Some(n) => Some(n),
        None => f.uint("max_tokens", u32::MAX as u64)?,
    }
    .map(|n| n as usize);
    let mut s = *base;
    if let Some(t) = f.f32("temperature", 0.0, 2.0)? {
        s.temperature = t;
    }
    if let Some(p) = f.f32("top_p", 0.0, 1.0)? {
        if p == 0.0 {
            return Err(ApiError::bad("top_p", "'top_p' must be above 0"));
        }
        s.top_p = p;
    }
    if let Some(k) = f.uint("top_k", 1 << 20)? {
        s.top_k = k as usize;
    }
    if let Some(p) = f.f32("min_p", 0.0, 1.0)? {
        s.min_p = p;
    }
    if let Some(p) = f.f32("presence_penalty", -2.0, 2.0)? {
        s.presence_penalty = p;
    }
    if let Some(p) = f.f32("frequency_penalty", -2.0, 2.0)? {
        s.frequency_penalty = p;
    }
    if let Some(p) = f.f32("repeat_penalty", 0.0, 10.0)? {
        if p == 0.0 {
            return Err(ApiError::bad(
                "repeat_penalty",
                "'repeat_penalty' must be above 0",
            ));
        }
        s.repeat_penalty = p;
    }
    match f.value("seed") {
        None => {
            if s.temperature > 0.0 {
                s.seed = fresh_seed;
            }
        }
        Some(v) => {
            s.seed = v
                .as_i64()
                .map(|x| x as u64)
                .or_else(|| v.as_u64())
                .ok_or_else(|| ApiError::bad("seed", "'seed' must be an integer"))?;
        }
    }
    let stop = match f.value("stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str().map(String::from).ok_or_else(|| {
                    ApiError::bad("stop", "'stop' must be a string or a list of strings")
                })
            })
            .collect::<ApiResult<_>>()?,
        Some(_) => {
            return Err(ApiError::bad(
                "stop",
                "'stop' must be a string or a list of strings",
            ))
        }
    };
    if stop.len() > MAX_STOPS || stop.iter().any(|s| s.len() > MAX_STOP_LEN) {
        return Err(ApiError::bad(
            "stop",
            format!("at most {MAX_STOPS} stop strings of at most {MAX_STOP_LEN} bytes each"),
        ));
    }
    let stream = f.bool("stream")?.unwrap_or(false);
    let ignore_eos = f.bool("ignore_eos")?.unwrap_or(false);
    let include_usage = match f.value("stream_options") {
        None => false,
        Some(Value::Object(o)) => Fields(o).bool("include_usage")?.unwrap_or(false),
        Some(_) => {
            return Err(ApiError::bad(
                "stream_options",
                "'stream_options' must be an object",
            ))
        }
    };
    // A GBNF grammar is checked here; the converter's grammars (JSON Schemas) compile by
    // construction.
    let mut grammar = f.str("grammar")?.map(String::from);
    if let Some(src) = &grammar {
        // Token names are looked up when a slot compiles it with the model's vocabulary.
        ember_runtime::grammar::Grammar::compile_owned_with_tokens(src, &|_| Ok(0))
            .map_err(|e| ApiError::bad("grammar", e.to_string()))?;
    }
    match f.value("response_format") {
        None => {}
        Some(Value::Object(o)) => match Fields(o).str("type")? {
            None | Some("text") => {}
            Some(t @ ("json_object" | "json_schema")) => {
                if grammar.is_some() {
                    return Err(ApiError::bad(
                        "response_format",
                        "give either 'grammar' or a JSON 'response_format', not both",
                    ));
                }
                // OpenAI's {"json_schema": {"schema": …}} (llama-server also takes "schema").
                let schema = match (t, o.get("json_schema"), o.get("schema")) {
                    ("json_object", _, s) => s,
                    (_, Some(Value::Object(js)), _) => js.get("schema"),
                    (_, _, s) => s,
                };
                grammar = Some(match schema {
                    None if t == "json_object" => ember_runtime::grammar::JSON.to_string(),
                    None => {
                        return Err(ApiError::bad(
                            "response_format",
                            "a json_schema response_format needs json_schema.schema",
                        ))
                    }
                    Some(s) => schema_grammar(s, "response_format")?,
                });
            }
            Some(t) => {
                return Err(ApiError::bad(
                    "response_format",
                    format!(
                    "response_format type '{t}' is not supported (text, json_object, json_schema)"
                ),
                ))
            }
        },
        Some(_) => {
            return Err(ApiError::bad(
                "response_format",
                "'response_format' must be an object",
            ))
        }
    }
    if let Some(schema) = f.value("json_schema") {
        if grammar.is_some() {
            return Err(ApiError::bad(
                "json_schema",
                "give one of 'grammar', 'json_schema' and a JSON 'response_format'",
            ));
        }
        grammar = Some(schema_grammar(schema, "json_schema")?);
    }
    s.validate()
        .map_err(|e| ApiError::bad("temperature", format!("sampling settings: {e}")))?;
    Ok(Generate {
        max_tokens,
        sampler: s,
        stop,
        stream,
        include_usage,
        ignore_eos,
        grammar,
    })
}

/// The grammar of a JSON Schema given in a request.
fn schema_grammar(schema: &Value, param: &'static str) -> ApiResult<String> {
    ember_runtime::grammar::gbnf_from_schema(&schema.to_string())
        .map_err(|e| ApiError::bad(param, format!("the JSON schema: {e}")))
}

/// Chat messages as (role, content) pairs. `content` is a string or a list of text parts; an
/// assistant's earlier tool call becomes the text the model wrote for it (in `tools`' format).
pub fn messages(f: &Fields<'_>, tools: Option<&ToolSet>) -> ApiResult<Vec<(String, String)>> {
    let list = match f.value("messages") {
        Some(Value::Array(a)) => a,
        Some(_) => return Err(ApiError::bad("messages", "'messages' must be a list")),
        None => return Err(ApiError::bad("messages", "'messages' is required")),
    };
    if list.is_empty() {
        return Err(ApiError::bad("messages", "'messages' must not be empty"));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let Value::Object(o) = m else {
            return Err(ApiError::bad(
                "messages",
                format!("messages[{i}] must be an object"),
            ));
        };
        let f = Fields(o);
        let role = f
            .str("role")?
            .ok_or_else(|| ApiError::bad("messages", format!("messages[{i}] has no 'role'")))?;
        if !matches!(role, "system" | "developer" | "user" | "assistant" | "tool") {
            return Err(ApiError::bad(
                "messages",
                format!("messages[{i}]: unknown role '{role}'"),
            ));
        }
        let role = if role == "developer" { "system" } else { role };
        let content = match f.value("content") {
            None => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => {
                let mut text = String::new();
                for p in parts {
                    let kind = p.get("type").and_then(Value::as_str);
                    match (kind, p.get("text").and_then(Value::as_str)) {
                        (Some("text"), Some(t)) => text.push_str(t),
                        _ => {
                            return Err(ApiError::bad(
                                "messages",
                                format!("messages[{i}]: only text content parts are supported"),
                            ))
                        }
                    }
                }
                text
            }
            Some(_) => {
                return Err(ApiError::bad(
                    "messages",
                    format!("messages[{i}].content must be a string or a list of parts"),
                ))
            }
        };
        // An assistant's earlier tool call, as the JSON the model wrote for it.
        let content = match f
            .value("tool_calls")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
        {
            Some(call) if role == "assistant" => {
                let func = call.get("function").cloned().unwrap_or(Value::Null);
                let args = match func.get("arguments") {
                    Some(Value::String(a)) => serde_json::from_str(a).unwrap_or(Value::Null),
                    Some(v) => v.clone(),
                    None => json!({}),
                };
                let name = func.get("name").and_then(Value::as_str).unwrap_or_default();
                match tools {
                    Some(t) => t.call_text(name, &args),
                    None => json!({"tool_call": {"name": name, "arguments": args}}).to_string(),
                }
            }
            _ => content,
        };
        out.push((role.to_string(), content));
    }
    Ok(out)
}

/// The prompt of `/v1/completions`: a string, a one-string list, or a list of token ids.
pub enum Prompt {
    Text(String),
    Tokens(Vec<u32>),
}

pub fn prompt(f: &Fields<'_>, n_vocab: usize) -> ApiResult<Prompt> {
    let bad = || {
        ApiError::bad(
            "prompt",
            "'prompt' must be a string, a list of one string, or a list of token ids",
        )
    };
    match f.value("prompt") {
        None => Err(ApiError::bad("prompt", "'prompt' is required")),
        Some(Value::String(s)) => Ok(Prompt::Text(s.clone())),
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
            Ok(Prompt::Text(a[0].as_str().unwrap_or_default().to_string()))
        }
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_u64) => {
            let ids: Vec<u32> = a
                .iter()
                .filter_map(Value::as_u64)
                .map(|x| x.min(u32::MAX as u64) as u32)
                .collect();
            if let Some(&t) = ids.iter().find(|&&t| t as usize >= n_vocab) {
                return Err(ApiError::bad(
                    "prompt",
                    format!("token {t} is outside the vocabulary of {n_vocab}"),
                ));
            }
            Ok(Prompt::Tokens(ids))
        }
        Some(_) => Err(bad()),
    }
}

/// OpenAI's `finish_reason`.
pub fn finish_reason(r: StopReason) -> &'static str {
    match r {
        StopReason::MaxTokens => "length",
        _ => "stop",
    }
}

pub fn usage(prompt: usize, completion: usize) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

/// The tools of a chat request, in the format the model's template asks for (`None` without
/// tools, or with `tool_choice: "none"`).
pub fn tools(f: &Fields<'_>, template: &ChatTemplate) -> ApiResult<Option<ToolSet>> {
    let list = match f.value("tools") {
        None => return Ok(None),
        Some(Value::Array(a)) if a.is_empty() => return Ok(None),
        Some(v @ Value::Array(_)) => v,
        Some(_) => return Err(ApiError::bad("tools", "'tools' must be a list")),
    };
    let mut fns = tools_from_openai(list).map_err(|e| ApiError::bad("tools", e))?;
    let choice = match f.value("tool_choice") {
        None => ToolChoice::Auto,
        Some(Value::String(s)) if s == "auto" => ToolChoice::Auto,
        Some(Value::String(s)) if s == "required" => ToolChoice::Required,
        Some(Value::String(s)) if s == "none" => return Ok(None),
        Some(Value::Object(o)) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ApiError::bad("tool_choice", "tool_choice.function.name is required")
                })?;
            if !fns.iter().any(|t| t.name == name) {
                return Err(ApiError::bad(
                    "tool_choice",
                    format!("no tool named '{name}'"),
                ));
            }
            fns.retain(|t| t.name == name);
            ToolChoice::Required
        }
        Some(_) => {
            return Err(ApiError::bad(
                "tool_choice",
                "'tool_choice' must be auto, none, required or {\"type\": \"function\", …}",
            ))
        }
    };
    ToolSet::for_template(fns, choice, template)
        .map(Some)
        .map_err(|e| ApiError::bad("tools", format!("a tool's parameters: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator of hostile request bodies.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn value(&mut self, depth: u32) -> Value {
            let keys = [
                "messages",
                "role",
                "content",
                "prompt",
                "max_tokens",
                "temperature",
                "top_p",
                "top_k",
                "min_p",
                "seed",
                "stop",
                "stream",
                "stream_options",
                "include_usage",
                "response_format",
                "type",
                "grammar",
                "n",
                "presence_penalty",
                "text",
                "x",
            ];
            match self.next() % if depth > 3 { 6 } else { 8 } {
                0 => Value::Null,
                1 => Value::Bool(self.next().is_multiple_of(2)),
                2 => json!(self.next() as i64 >> (self.next() % 64)),
                3 => json!(f64::from_bits(self.next()).clamp(-1e30, 1e30)),
                4 => json!((self.next() % 7) as f64 / 3.0 - 1.0),
                5 => {
                    let words = [
                        "user",
                        "system",
                        "json_object",
                        "text",
                        "root ::= \"a\"",
                        "",
                        "\u{0}",
                        "é",
                    ];
                    json!(words[(self.next() % words.len() as u64) as usize])
                }
                6 => Value::Array(
                    (0..self.next() % 4)
                        .map(|_| self.value(depth + 1))
                        .collect(),
                ),
                _ => {
                    let mut m = Map::new();
                    for _ in 0..self.next() % 6 {
                        let k = keys[(self.next() % keys.len() as u64) as usize];
                        m.insert(k.to_string(), self.value(depth + 1));
                    }
                    Value::Object(m)
                }
            }
        }
    }

    #[test]
    fn hostile_bodies_get_a_4xx_or_a_request_never_a_panic() {
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        let base = SamplerConfig::default();
        for i in 0..20_000 {
            let body: Vec<u8> = if i % 5 == 0 {
                (0..g.next() % 64).map(|_| g.next() as u8).collect()
            } else {
                g.value(0).to_string().into_bytes()
            };
            match object(&body) {
                Err(e) => assert_eq!(e.status, 400),
                Ok(o) => {
                    let f = Fields(&o);
                    for r in [
                        generate(&f, &base, 1).map(|_| ()),
                        messages(&f, None).map(|_| ()),
                        prompt(&f, 1000).map(|_| ()),
                    ] {
                        if let Err(e) = r {
                            assert_eq!(e.status, 400, "{}", e.message);
                            assert!(e.body()["error"]["message"].is_string());
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn fields_are_read_as_openai_defines_them() {
        let o = object(br#"{"messages": [{"role": "developer", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}, {"role": "user", "content": "hi"}],
            "max_completion_tokens": 7, "max_tokens": 99, "stop": "x", "temperature": 0.5, "seed": -1,
            "response_format": {"type": "json_object"}, "unknown": {"deep": [1, 2]}}"#).unwrap();
        let f = Fields(&o);
        let g = generate(&f, &SamplerConfig::default(), 42).unwrap();
        assert_eq!(g.max_tokens, Some(7));
        assert_eq!(g.stop, vec!["x".to_string()]);
        assert_eq!(g.sampler.temperature, 0.5);
        assert_eq!(g.sampler.seed, u64::MAX);
        assert_eq!(g.grammar.as_deref(), Some(ember_runtime::grammar::JSON));
        let m = messages(&f, None).unwrap();
        assert_eq!(m[0], ("system".to_string(), "ab".to_string()));
        assert_eq!(m[1], ("user".to_string(), "hi".to_string()));
        // Sampling without a seed takes the fresh one; greedy keeps the default.
        let o = object(br#"{"temperature": 1}"#).unwrap();
        assert_eq!(
            generate(&Fields(&o), &SamplerConfig::default(), 42)
                .unwrap()
                .sampler
                .seed,
            42
        );
        let o = object(br#"{"temperature": 0}"#).unwrap();
        assert_eq!(
            generate(&Fields(&o), &SamplerConfig::default(), 42)
                .unwrap()
                .sampler
                .seed,
            SamplerConfig::default().seed
        );
    }
}
