//! JSON Schema to GBNF (`std`): a schema becomes a grammar whose sentences are the JSON texts
//! the schema accepts, for output a program can parse and trust (`response_format` JSON
//! schemas, tool arguments).
//!
//! The texts follow the conventions of llama.cpp's converter, so that a schema gives the same
//! language from either tool: no white space around a top-level value; white space (nothing, a
//! space, or one or two newlines and up to 20 spaces or tabs) after `{`, `[`, `,` and `:`, and
//! before `}` and `]`, nowhere else; numbers with at most 16 digits in each part; object
//! members in the order of `properties` (required ones first, then the optional ones that are
//! present, then any additional ones); an object schema with `properties` and no
//! `additionalProperties` allows only its named members; an additional member's key does not
//! start with an escape. `tests/json_schema_vs_llama.rs` checks this against the
//! expected grammars of llama.cpp's own converter tests, by sampling sentences of each grammar
//! and having the other accept them.
//!
//! Supported: `type` (one or a list), `enum`, `const`, `properties`, `required`,
//! `additionalProperties` (schema, `true`, `false`), `items`, `prefixItems`, `minItems`,
//! `maxItems`, `minLength`, `maxLength`, `format` (`date`, `time`, `date-time`, `uuid`),
//! `anyOf`, `oneOf`, `allOf` of object schemas, `$ref` into the same document (`#`,
//! `#/definitions/…`, `#/$defs/…`, any JSON pointer), recursion through `$ref`, and schemas
//! with no type (any value). Annotations (`title`, `description`, `default`, `examples`, …)
//! are ignored. Refused with an error that names the keyword and where it is: `pattern`,
//! `minimum`/`maximum` (and their exclusive forms), `multipleOf`, `not`, `if`/`then`/`else`,
//! `patternProperties`, `uniqueItems`, `contains`, remote `$ref`s, and unknown types: a
//! grammar that ignored them would accept text the schema refuses.

use crate::error::{Detail, Error, Result};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::string::{String, ToString};
use std::vec::Vec;

/// Keywords the converter refuses rather than ignore (each would need text the grammar does
/// not yet constrain).
const REFUSED: &[&str] = &[
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "not",
    "if",
    "then",
    "else",
    "patternProperties",
    "uniqueItems",
    "contains",
    "minProperties",
    "maxProperties",
    "dependentRequired",
    "dependentSchemas",
    "propertyNames",
    "unevaluatedProperties",
    "unevaluatedItems",
];

/// Deepest nesting of schemas followed (bounds the work on hostile input).
const MAX_DEPTH: usize = 64;
/// Most rules a grammar may get.
const MAX_RULES: usize = 4096;
/// Most schemas visited (a type list or `anyOf` at every level would otherwise multiply them).
const MAX_VISITS: usize = 20_000;
/// Longest grammar text made.
const MAX_TEXT: usize = 4 << 20;

fn refuse(what: &'static str, detail: &str) -> Error {
    Error::Grammar {
        reason: what,
        detail: Detail::new(detail),
    }
}

/// The GBNF grammar (llama.cpp's syntax, rule `root`) of the JSON texts `schema` accepts.
pub fn gbnf_from_schema(schema: &str) -> Result<String> {
    gbnf_rules_from_schema(schema, "root")
}

/// The rules of [`gbnf_from_schema`] with the schema's own rule named `top` (a lowercase name
/// of letters, digits and `-`) instead of `root`, to use inside a grammar of one's own: with
/// `top` other than `root`, the text has no `root` rule.
pub fn gbnf_rules_from_schema(schema: &str, top: &str) -> Result<String> {
    if top.is_empty() || !top.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(refuse(
            "a grammar rule name must be letters, digits and -",
            top,
        ));
    }
    let root: Value = serde_json::from_str(schema)
        .map_err(|e| refuse("the JSON schema is not valid JSON", &e.to_string()))?;
    let mut c = Conv {
        root: &root,
        top,
        rules: BTreeMap::new(),
        refs: BTreeMap::new(),
        visits: 0,
        text: 0,
    };
    let body = c.visit(&root, top, "#", 0)?;
    c.set(top, body)?;
    let mut out = String::new();
    for (name, body) in &c.rules {
        let _ = writeln!(out, "{name} ::= {body}");
    }
    let check = if top == "root" {
        out.clone()
    } else {
        format!("root ::= {top}\n{out}")
    };
    // What the rules cannot show alone: `$ref`s that reach themselves before any text.
    crate::grammar::Grammar::compile_owned(&check).map_err(|e| {
        refuse(
            "the JSON schema refers to itself before any text (a $ref loop)",
            &e.to_string(),
        )
    })?;
    Ok(out)
}

struct Conv<'s> {
    root: &'s Value,
    /// The top rule's name (reserved, as `root` is).
    top: &'s str,
    /// Rule name → body.
    rules: BTreeMap<String, String>,
    /// `$ref` target → the rule made for it.
    refs: BTreeMap<String, String>,
    /// Schemas visited so far, and bytes of rules made (both bounded).
    visits: usize,
    text: usize,
}

/// A GBNF string literal of `s`.
fn literal(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `c` inside a GBNF character class.
fn class_char(c: char) -> String {
    match c {
        ']' | '[' | '\\' | '^' | '-' | '"' => format!("\\{c}"),
        '\n' => "\\n".into(),
        '\r' => "\\r".into(),
        '\t' => "\\t".into(),
        c if (c as u32) < 0x20 || c as u32 == 0x7f => format!("\\x{:02X}", c as u32),
        c => c.to_string(),
    }
}

/// A rule name from free text (letters, digits and dashes).
fn rule_name(s: &str) -> String {
    let n: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    if n.is_empty() {
        "empty".into()
    } else {
        n
    }
}

const SPACE: &str = r#"| " " | "\n"{1,2} [ \t]{0,20}"#;
const CHAR: &str = r#"[^"\\\x7F\x00-\x1F] | [\\] (["\\bfnrt] | "u" [0-9a-fA-F]{4})"#;

impl<'s> Conv<'s> {
    /// Sets rule `name` (an existing one must have the same body).
    fn set(&mut self, name: &str, body: String) -> Result<()> {
        self.text += name.len() + body.len();
        if self.rules.len() >= MAX_RULES || self.text > MAX_TEXT {
            return Err(refuse("the JSON schema makes too large a grammar", name));
        }
        self.rules.insert(name.to_string(), body);
        Ok(())
    }

    /// A rule with `body`, named `hint` (or `hint-N` when that name holds another body).
    fn add(&mut self, hint: &str, body: String) -> Result<String> {
        let base = rule_name(hint);
        let mut name = base.clone();
        let mut i = 0;
        loop {
            match self.rules.get(&name) {
                Some(b) if *b == body => return Ok(name),
                None if name != "root" && name != self.top => {
                    self.set(&name, body)?;
                    return Ok(name);
                }
                _ => {
                    i += 1;
                    name = format!("{base}-{i}");
                }
            }
        }
    }

    /// A primitive rule (and those it uses), by name.
    fn prim(&mut self, name: &str) -> Result<String> {
        if self.rules.contains_key(name) {
            return Ok(name.to_string());
        }
        let (body, deps): (String, &[&str]) = match name {
            "space" => (SPACE.into(), &[]),
            "char" => (CHAR.into(), &[]),
            "string" => (r#""\"" char* "\"""#.into(), &["char"]),
            "integral-part" => ("[0] | [1-9] [0-9]{0,15}".into(), &[]),
            "decimal-part" => ("[0-9]{1,16}".into(), &[]),
            "integer" => (r#"("-"? integral-part)"#.into(), &["integral-part"]),
            "number" => (
                r#"("-"? integral-part) ("." decimal-part)? ([eE] [-+]? integral-part)?"#.into(),
                &["integral-part", "decimal-part"],
            ),
            "boolean" => (r#"("true" | "false")"#.into(), &[]),
            "null" => (r#""null""#.into(), &[]),
            "value" => (
                "object | array | string | number | boolean | null".into(),
                &["object", "array", "string", "number", "boolean", "null"],
            ),
            "object" => (
                r#""{" space ( string ":" space value ("," space string ":" space value)* )? space "}""#.into(),
                &["space", "string", "value"],
            ),
            "array" => (
                r#""[" space ( value ("," space value)* )? space "]""#.into(),
                &["space", "value"],
            ),
            "date" => (
                r#"[0-9]{4} "-" ( "0" [1-9] | "1" [0-2] ) "-" ( "0" [1-9] | [1-2] [0-9] | "3" [0-1] )"#.into(),
                &[],
            ),
            "time" => (
                r#"([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{3} )? ( "Z" | ( "+" | "-" ) ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )"#.into(),
                &[],
            ),
            "date-time" => (r#"date "T" time"#.into(), &["date", "time"]),
            "uuid" => (
                r#""\"" [0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{12} "\"""#.into(),
                &[],
            ),
            "date-string" => (r#""\"" date "\"""#.into(), &["date"]),
            "time-string" => (r#""\"" time "\"""#.into(), &["time"]),
            "date-time-string" => (r#""\"" date-time "\"""#.into(), &["date-time"]),
            _ => return Err(refuse("an unknown primitive", name)),
        };
        // Set before the rules it uses, which may use it in turn (value, object, array).
        self.set(name, body)?;
        for d in deps {
            self.prim(d)?;
        }
        Ok(name.to_string())
    }

    /// The schema at JSON pointer `ptr` ("#/a/b") in the document.
    fn resolve(&self, ptr: &str) -> Result<&'s Value> {
        let Some(path) = ptr.strip_prefix('#') else {
            return Err(refuse(
                "only $refs into the same schema (#...) are supported",
                ptr,
            ));
        };
        if !path.is_empty() && !path.starts_with('/') {
            return Err(refuse("a $ref that is not a JSON pointer (#/...)", ptr));
        }
        let mut v = self.root;
        for part in path.split('/').skip(1) {
            let key = part.replace("~1", "/").replace("~0", "~");
            v = match v {
                Value::Object(m) => m.get(&key),
                Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get(i)),
                _ => None,
            }
            .ok_or_else(|| refuse("a $ref points nowhere", ptr))?;
        }
        Ok(v)
    }

    /// The expression of schema `s` (at `at`, for messages), naming new rules after `name`.
    fn visit(&mut self, s: &Value, name: &str, at: &str, depth: usize) -> Result<String> {
        if depth > MAX_DEPTH {
            return Err(refuse("the JSON schema is nested too deeply", at));
        }
        self.visits += 1;
        if self.visits > MAX_VISITS {
            return Err(refuse(
                "the JSON schema is too complex to turn into a grammar",
                at,
            ));
        }
        let m = match s {
            Value::Bool(true) => return self.prim("value"),
            Value::Bool(false) => return Err(refuse("the schema `false` accepts nothing", at)),
            Value::Object(m) => m,
            _ => return Err(refuse("a schema must be an object or a boolean", at)),
        };
        if let Some(k) = REFUSED.iter().find(|k| m.contains_key(**k)) {
            return Err(refuse(
                "a JSON Schema keyword ember cannot yet turn into a grammar",
                &format!("{k} at {at}"),
            ));
        }
        if let Some(r) = m.get("$ref") {
            let r = r
                .as_str()
                .ok_or_else(|| refuse("$ref must be a string", at))?;
            if let Some(rule) = self.refs.get(r) {
                return Ok(rule.clone());
            }
            let target = self.resolve(r)?;
            // Named before it is visited, so that a schema may refer to itself.
            let hint = r.rsplit('/').next().unwrap_or("ref");
            let rule = self.add(hint, "\"\"".into())?;
            self.refs.insert(r.to_string(), rule.clone());
            let body = self.visit(target, &rule, r, depth + 1)?;
            self.set(&rule, body)?;
            return Ok(rule);
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(alts) = m.get(key) {
                let alts = alts
                    .as_array()
                    .filter(|a| !a.is_empty())
                    .ok_or_else(|| refuse("anyOf/oneOf must be a non-empty list", at))?;
                let mut out = Vec::new();
                for (i, a) in alts.iter().enumerate() {
                    let sub = format!("{at}/{key}/{i}");
                    let e = self.visit(a, &format!("{name}-{i}"), &sub, depth + 1)?;
                    out.push(self.add(&format!("{name}-{i}"), e)?);
                }
                return Ok(format!("({})", out.join(" | ")));
            }
        }
        if let Some(all) = m.get("allOf") {
            let merged = self.merge_all(all, at)?;
            return self.visit(&merged, name, at, depth + 1);
        }
        if let Some(c) = m.get("const") {
            return Ok(literal(&c.to_string()));
        }
        if let Some(e) = m.get("enum") {
            let e = e
                .as_array()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| refuse("enum must be a non-empty list", at))?;
            let alts: Vec<String> = e.iter().map(|v| literal(&v.to_string())).collect();
            return Ok(format!("({})", alts.join(" | ")));
        }
        match m.get("type") {
            Some(Value::Array(types)) => {
                if types.is_empty() {
                    return Err(refuse("type must not be an empty list", at));
                }
                let mut out = Vec::new();
                for t in types {
                    let mut one = m.clone();
                    one.insert("type".into(), t.clone());
                    let one = Value::Object(one);
                    let hint = if types.len() == 1 {
                        name.to_string()
                    } else {
                        format!("{name}-{}", t.as_str().unwrap_or("alt"))
                    };
                    let e = self.visit(&one, &hint, at, depth + 1)?;
                    out.push(self.add(&hint, e)?);
                }
                Ok(format!("({})", out.join(" | ")))
            }
            Some(Value::String(t)) => self.typed(t, m, name, at, depth),
            Some(_) => Err(refuse("type must be a string or a list", at)),
            None => {
                if ["properties", "additionalProperties", "required"]
                    .iter()
                    .any(|k| m.contains_key(*k))
                {
                    self.typed("object", m, name, at, depth)
                } else if ["items", "prefixItems", "minItems", "maxItems"]
                    .iter()
                    .any(|k| m.contains_key(*k))
                {
                    self.typed("array", m, name, at, depth)
                } else if m.contains_key("format")
                    || m.contains_key("minLength")
                    || m.contains_key("maxLength")
                {
                    self.typed("string", m, name, at, depth)
                } else {
                    self.prim("value")
                }
            }
        }
    }

    /// The expression of a schema of type `t`.
    fn typed(
        &mut self,
        t: &str,
        m: &Map<String, Value>,
        name: &str,
        at: &str,
        depth: usize,
    ) -> Result<String> {
        let count = |k: &str| -> Result<Option<u64>> {
            match m.get(k) {
                None => Ok(None),
                Some(v) => v
                    .as_u64()
                    .filter(|&n| n <= crate::grammar::MAX_REPETITION)
                    .map(Some)
                    .ok_or_else(|| refuse("a count that is not a small non-negative integer", k)),
            }
        };
        match t {
            "string" => {
                if let Some(f) = m.get("format") {
                    let f = f.as_str().unwrap_or("");
                    return match f {
                        "date" | "time" | "date-time" => self.prim(&format!("{f}-string")),
                        "uuid" => self.prim("uuid"),
                        // Formats that are only annotations for a grammar: any string.
                        _ => self.prim("string"),
                    };
                }
                let (lo, hi) = (count("minLength")?, count("maxLength")?);
                if lo.is_none() && hi.is_none() {
                    return self.prim("string");
                }
                self.prim("char")?;
                let lo = lo.unwrap_or(0);
                let rep = match hi {
                    Some(h) if h < lo => {
                        return Err(refuse("maxLength is below minLength", at));
                    }
                    Some(h) if h == lo => format!("{{{lo}}}"),
                    Some(h) => format!("{{{lo},{h}}}"),
                    None => format!("{{{lo},}}"),
                };
                Ok(format!(r#""\"" char{rep} "\"""#))
            }
            "number" => self.prim("number"),
            "integer" => self.prim("integer"),
            "boolean" => self.prim("boolean"),
            "null" => self.prim("null"),
            "object" => self.object(m, name, at, depth),
            "array" => self.array(m, name, at, depth, count("minItems")?, count("maxItems")?),
            other => Err(refuse("an unknown JSON Schema type", other)),
        }
    }

    fn object(
        &mut self,
        m: &Map<String, Value>,
        name: &str,
        at: &str,
        depth: usize,
    ) -> Result<String> {
        self.prim("space")?;
        let empty = Map::new();
        let props = match m.get("properties") {
            None => &empty,
            Some(Value::Object(p)) => p,
            Some(_) => return Err(refuse("properties must be an object", at)),
        };
        let required: Vec<&str> = match m.get("required") {
            None => Vec::new(),
            Some(Value::Array(r)) => r
                .iter()
                .map(|v| {
                    v.as_str()
                        .ok_or_else(|| refuse("required must list strings", at))
                })
                .collect::<Result<_>>()?,
            Some(_) => return Err(refuse("required must be a list", at)),
        };
        // Members, in `properties` order; a required member without a schema there may be any
        // value (it comes after them).
        let any = Value::Bool(true);
        let mut members: Vec<(&str, &Value)> = props.iter().map(|(k, v)| (k.as_str(), v)).collect();
        for r in &required {
            if !props.contains_key(*r) && !members.iter().any(|(k, _)| k == r) {
                members.push((r, &any));
            }
        }
        // Members: each kv rule, required ones first, each group in `properties` order.
        let mut kv = BTreeMap::new();
        for &(k, v) in &members {
            let sub = format!("{at}/properties/{k}");
            let hint = format!("{name}-{k}");
            let value = self.visit(v, &hint, &sub, depth + 1)?;
            let body = format!(
                "{} space \":\" space {value}",
                literal(&Value::String(k.to_string()).to_string())
            );
            kv.insert(k, self.add(&format!("{k}-kv"), body)?);
        }
        let req: Vec<&str> = members
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| required.contains(k))
            .collect();
        let opt: Vec<&str> = members
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| !required.contains(k))
            .collect();
        // Without `additionalProperties`, an object with `properties` (even none) gets only
        // its named members (as llama.cpp's converter decides: the output stays valid, and the
        // model does not invent members); one without is any object.
        let additional = match m.get("additionalProperties") {
            None if !members.is_empty() || m.contains_key("properties") => None,
            None | Some(Value::Bool(true)) => Some(None),
            Some(Value::Bool(false)) => None,
            Some(v @ Value::Object(_)) => Some(Some(v)),
            Some(_) => return Err(refuse("additionalProperties must be a schema", at)),
        };
        // With no named member, an open object is any object.
        if members.is_empty() && matches!(additional, Some(None)) {
            return self.prim("object");
        }
        let add_kv = match additional {
            None => None,
            Some(schema) => {
                let value = match schema {
                    None => self.prim("value")?,
                    Some(v) => {
                        let sub = format!("{at}/additionalProperties");
                        let e =
                            self.visit(v, &format!("{name}-additional-value"), &sub, depth + 1)?;
                        self.add("additional-value", e)?
                    }
                };
                let key = if members.is_empty() {
                    self.prim("string")?
                } else {
                    let keys: Vec<&str> = members.iter().map(|(k, _)| *k).collect();
                    let body = format!("\"\\\"\" {} \"\\\"\"", self.other_key(&keys, "")?);
                    self.add("additional-k", body)?
                };
                Some(self.add("additional-kv", format!("{key} \":\" space {value}"))?)
            }
        };
        let tail = add_kv
            .as_ref()
            .map(|a| format!("( \",\" space {a} )*"))
            .unwrap_or_default();
        // The optional members: any of them, in order, then the additional ones.
        let mut rests = vec![String::new(); opt.len()];
        for i in (0..opt.len()).rev() {
            let body = if i + 1 < opt.len() {
                format!("( \",\" space {} )? {}", kv[opt[i + 1]], rests[i + 1])
            } else {
                tail.clone()
            };
            rests[i] = if body.trim().is_empty() {
                String::new()
            } else {
                self.add(&format!("{}-rest", opt[i]), body)?
            };
        }
        let mut starts: Vec<String> = opt
            .iter()
            .zip(&rests)
            .map(|(k, r)| format!("{} {r}", kv[k]).trim_end().to_string())
            .collect();
        if let Some(a) = &add_kv {
            starts.push(format!("{a} {tail}"));
        }
        let rest = if starts.is_empty() {
            String::new()
        } else {
            format!("({})", starts.join(" | "))
        };
        let body = if req.is_empty() {
            if rest.is_empty() {
                String::new()
            } else {
                format!("{rest}?")
            }
        } else {
            let named: Vec<&str> = req.iter().map(|k| kv[k].as_str()).collect();
            let mut b = named.join(" \",\" space ");
            if !rest.is_empty() {
                let _ = write!(b, " ( \",\" space {rest} )?");
            }
            b
        };
        if body.is_empty() {
            return Ok("\"{\" space \"}\"".into());
        }
        Ok(format!("\"{{\" space {body} space \"}}\""))
    }

    /// The characters of a key that is none of `keys` (all sharing `prefix`), after `prefix`:
    /// a trie of the keys, each node allowing any character but its children's.
    fn other_key(&mut self, keys: &[&str], prefix: &str) -> Result<String> {
        self.prim("char")?;
        let ends_here = keys.contains(&prefix);
        let mut next: Vec<char> = keys
            .iter()
            .filter_map(|k| k.strip_prefix(prefix).and_then(|r| r.chars().next()))
            .collect();
        next.sort_unstable();
        next.dedup();
        let mut alts = Vec::new();
        for &c in &next {
            let p = format!("{prefix}{c}");
            let inner = self.other_key(keys, &p)?;
            alts.push(
                format!("[{}] {inner}", class_char(c))
                    .trim_end()
                    .to_string(),
            );
        }
        let kids: String = next.iter().map(|&c| class_char(c)).collect();
        // Any other character, then anything (as in llama.cpp's grammars, that character is a
        // plain one: an additional key does not start with an escape).
        alts.push(format!(r#"[^"\\\x7F\x00-\x1F{kids}] char*"#));
        let body = format!("({})", alts.join(" | "));
        Ok(if ends_here { body } else { format!("{body}?") })
    }

    fn array(
        &mut self,
        m: &Map<String, Value>,
        name: &str,
        at: &str,
        depth: usize,
        lo: Option<u64>,
        hi: Option<u64>,
    ) -> Result<String> {
        self.prim("space")?;
        // A tuple: `prefixItems` as a list, or `items` as one (the older drafts' form).
        let tuple = match (m.get("prefixItems"), m.get("items")) {
            (Some(Value::Array(t)), _) | (_, Some(Value::Array(t))) => Some(t),
            _ => None,
        };
        if let Some(t) = tuple {
            let mut items = Vec::new();
            for (i, s) in t.iter().enumerate() {
                let sub = format!("{at}/prefixItems/{i}");
                let e = self.visit(s, &format!("{name}-tuple-{i}"), &sub, depth + 1)?;
                items.push(self.add(&format!("tuple-{i}"), e)?);
            }
            return Ok(format!(
                "\"[\" space {} space \"]\"",
                items.join(" \",\" space ")
            ));
        }
        let item_schema = m
            .get("items")
            .or_else(|| m.get("prefixItems").filter(|v| v.is_object()));
        let item = match item_schema {
            None => self.prim("value")?,
            Some(s) => {
                let e = self.visit(
                    s,
                    &format!("{name}-item"),
                    &format!("{at}/items"),
                    depth + 1,
                )?;
                self.add("item", e)?
            }
        };
        let lo = lo.unwrap_or(0);
        let list = match hi {
            Some(h) if h < lo => return Err(refuse("maxItems is below minItems", at)),
            Some(0) => String::new(),
            Some(h) if lo == 0 => format!("({item} (\",\" space {item}){{0,{}}})?", h - 1),
            Some(h) => format!("{item} (\",\" space {item}){{{},{}}}", lo - 1, h - 1),
            None if lo == 0 => format!("({item} (\",\" space {item})*)?"),
            None => format!("{item} (\",\" space {item}){{{},}}", lo - 1),
        };
        Ok(format!("\"[\" space {list} space \"]\""))
    }

    /// `s` with its `$ref`s followed.
    fn deref<'v>(&self, mut s: &'v Value, at: &str) -> Result<&'v Value>
    where
        's: 'v,
    {
        let mut hops = 0;
        while let Some(r) = s.get("$ref").and_then(Value::as_str) {
            s = self.resolve(r)?;
            hops += 1;
            if hops > MAX_DEPTH {
                return Err(refuse("$refs that go round", at));
            }
        }
        Ok(s)
    }

    /// One schema from the parts of an `allOf`, merged as llama.cpp's converter merges them:
    /// the members of each object part are required (those its own `required` lists, when it
    /// has one), the members of the alternatives of an `anyOf` part are optional, and `enum`s
    /// intersect.
    fn merge_all(&self, all: &Value, at: &str) -> Result<Value> {
        let list = all
            .as_array()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| refuse("allOf must be a non-empty list", at))?;
        let mut props = Map::new();
        let mut required: Vec<Value> = Vec::new();
        let mut closed = false;
        let mut enums: Option<Vec<Value>> = None;
        let mut object = false;
        for part in list {
            let part = self.deref(part, at)?;
            let Some(m) = part.as_object() else {
                return Err(refuse("allOf of something that is not a schema object", at));
            };
            if let Some(k) = m.keys().find(|k| {
                !matches!(
                    k.as_str(),
                    "type"
                        | "properties"
                        | "required"
                        | "additionalProperties"
                        | "anyOf"
                        | "enum"
                        | "title"
                        | "description"
                        | "$comment"
                        | "default"
                        | "examples"
                )
            }) {
                return Err(refuse(
                    "allOf is supported for object and enum parts only",
                    &format!("{k} at {at}"),
                ));
            }
            if let Some(Value::Array(e)) = m.get("enum") {
                enums = Some(match enums {
                    None => e.clone(),
                    Some(prev) => prev.into_iter().filter(|v| e.contains(v)).collect(),
                });
            }
            let own_required: Option<Vec<&str>> = m
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect());
            if let Some(Value::Object(p)) = m.get("properties") {
                object = true;
                for (k, v) in p {
                    props.insert(k.clone(), v.clone());
                    if own_required
                        .as_ref()
                        .is_none_or(|r| r.contains(&k.as_str()))
                    {
                        required.push(Value::String(k.clone()));
                    }
                }
            }
            if let Some(Value::Array(alts)) = m.get("anyOf") {
                object = true;
                for alt in alts {
                    let alt = self.deref(alt, at)?;
                    if let Some(Value::Object(p)) = alt.get("properties") {
                        for (k, v) in p {
                            props.entry(k.clone()).or_insert_with(|| v.clone());
                        }
                    }
                }
            }
            object |= m.get("type").is_some_and(|t| t == "object");
            closed |= matches!(m.get("additionalProperties"), Some(Value::Bool(false)));
        }
        let mut out = Map::new();
        if let Some(e) = enums {
            if object {
                return Err(refuse("allOf of objects and enums together", at));
            }
            if e.is_empty() {
                return Err(refuse("the enums of an allOf have no value in common", at));
            }
            out.insert("enum".into(), Value::Array(e));
            return Ok(Value::Object(out));
        }
        out.insert("type".into(), "object".into());
        out.insert("properties".into(), Value::Object(props));
        out.insert("required".into(), Value::Array(required));
        if closed {
            out.insert("additionalProperties".into(), false.into());
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_schemas_are_refused_quickly_not_expanded() {
        // Seven types and two children at each of 12 levels (a 400 KB schema) would be 14^12
        // visits.
        let mut s = String::from("{}");
        for _ in 0..12 {
            s = format!(
                r#"{{"type": ["object", "array", "string", "number", "integer", "boolean", "null"], "properties": {{"a": {s}}}, "items": {s}}}"#
            );
        }
        let t0 = std::time::Instant::now();
        assert!(gbnf_from_schema(&s).is_err());
        assert!(t0.elapsed() < std::time::Duration::from_secs(5));
        // Deep nesting, a $ref loop, a pointer to nowhere, not JSON, `false`.
        let deep = format!(
            "{}{}",
            r#"{"items":"#.repeat(100),
            "{}".to_string() + &"}".repeat(100)
        );
        assert!(gbnf_from_schema(&deep).is_err());
        // A $ref to itself before any text is a loop, not a grammar.
        assert!(gbnf_from_schema(
            r##"{"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/a"}}}"##
        )
        .is_err());
        assert!(
            gbnf_from_schema(r##"{"allOf": [{"$ref": "#/x"}], "x": {"$ref": "#/x"}}"##).is_err()
        );
        assert!(gbnf_from_schema(r##"{"$ref": "#/nowhere"}"##).is_err());
        assert!(gbnf_from_schema(r##"{"$ref": "http://example.invalid/s.json"}"##).is_err());
        assert!(gbnf_from_schema("{").is_err());
        assert!(gbnf_from_schema("false").is_err());
    }

    #[test]
    fn a_recursive_schema_makes_a_recursive_grammar() {
        let g = gbnf_from_schema(
            r##"{"$ref": "#/$defs/node", "$defs": {"node": {"type": "object",
                "properties": {"v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
                "required": ["v"]}}}"##,
        )
        .unwrap();
        let owned = crate::grammar::Grammar::compile_owned(&g).unwrap();
        let limits = crate::grammar::MatcherLimits::default();
        let mut mem = std::vec![0u8; crate::grammar::Matcher::bytes_needed(&limits)];
        let mut arena = crate::arena::Arena::new(&mut mem);
        let mut m = crate::grammar::Matcher::new(owned.grammar(), &mut arena, &limits).unwrap();
        for (text, ok) in [
            (
                r#"{"v": 1, "kids": [{"v": 2}, {"v": 3, "kids": []}]}"#,
                true,
            ),
            (r#"{"v": 1, "kids": [{"w": 2}]}"#, false),
            (r#"{"kids": []}"#, false),
        ] {
            m.reset().unwrap();
            let took = m.accept_bytes(text.as_bytes()).unwrap() && m.is_complete();
            assert_eq!(took, ok, "{text}\n{g}");
        }
    }
}
