//! Jinja chat templates with minijinja (std).
//!
//! A template comes from the model file, so it is untrusted input. Three bounds make any template
//! an error rather than a crash or a memory blow-up:
//! - **Nesting** ([`check_nesting`]): before minijinja sees the source, brackets, operator chains
//!   in one tag, and block statements are counted, and a template nested deeper than
//!   [`MAX_NESTING`] (or with more than [`MAX_CHAIN`] operators in one tag) is refused. Those
//!   shapes become deep syntax trees, and compiling, rendering and dropping a deep tree recurses.
//! - **Work and memory** (minijinja's fuel): every instruction costs one unit of fuel, and every
//!   64 bytes of data a template produces (strings, list slots, output, serialisation) another,
//!   so [`FUEL`] bounds both the time and the data of one rendering (about 12 MiB).
//! - **Stack**: templates are compiled and rendered on a thread of ember's own with a
//!   [`STACK`]-byte stack, whatever the caller's thread has (a C host's thread may have 128 KiB).
//!   Values nested at run time (a list wrapped in a list in a loop) are printed and dropped
//!   recursively by minijinja; the fuel bounds how deep they can get, and the stack is sized for
//!   that depth.

use super::{render_chatml, Message};
use crate::error::{Detail, Error, Result};
use core::fmt::Write as _;
use std::string::String;
use std::sync::Arc;
use std::vec::Vec;

/// Work allowed to one rendering: one unit per instruction, plus one per 64 bytes of data made
/// (so at most about 12 MiB of data). SmolLM2's template renders 6,000 messages of 120 bytes
/// within it (8,000 run out). It also bounds how deeply a template can nest values at run time
/// (every level costs at least one instruction): at most 200,000 levels; the deepest shape found,
/// 64 brackets per loop step, runs out below 128,000.
pub const FUEL: u64 = 200_000;
/// Largest rendered prompt, in bytes.
pub const MAX_OUTPUT: usize = 4 << 20;
/// Largest template source, in bytes (real templates are under 20 KiB).
pub const MAX_SOURCE: usize = 256 << 10;
/// Longest line (bytes) and most lines of a template source.
pub const MAX_LINE: usize = 65_535;
/// Deepest nesting of brackets and block statements in a template.
pub const MAX_NESTING: usize = 64;
/// Most operators, filters and attribute lookups in one `{{ }}` or `{% %}` tag.
pub const MAX_CHAIN: usize = 256;
/// Stack of the thread that compiles and renders templates: minijinja prints, serialises and
/// drops nested values recursively, at 335 to 420 bytes a level here (a 16 MiB stack renders a
/// list 40,000 deep and overflows at 50,000), so 128 MiB covers the fuel's 200,000 levels
/// with room to spare. It is reserved, not touched, until a template goes that deep. (Sanitizer
/// builds, whose frames are several times larger, get 1 GiB.)
#[cfg(not(fuzzing))]
pub const STACK: usize = 128 << 20;
/// Stack of the thread that compiles and renders templates (sanitizer builds).
#[cfg(fuzzing)]
pub const STACK: usize = 1 << 30;

/// A compiled chat template (or the built-in ChatML when the model has none).
pub struct ChatTemplate {
    env: Option<Arc<minijinja::Environment<'static>>>,
    /// The Jinja source (`None`: ChatML).
    source: Option<Arc<str>>,
    bos: String,
    eos: String,
    /// The date `strftime_now` formats (`None`: today, UTC).
    date: Option<Date>,
}

/// A calendar date and time of day (UTC), for `strftime_now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Date {
    /// Year.
    pub year: i64,
    /// Month, 1–12.
    pub month: u32,
    /// Day of the month, 1–31.
    pub day: u32,
    /// Seconds since midnight.
    pub secs: u32,
}

impl Date {
    /// The date of a Unix time (seconds since 1970-01-01 UTC).
    pub fn from_unix(t: i64) -> Date {
        let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400) as u32);
        // Civil date from the day count (Howard Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + (month <= 2) as i64;
        Date {
            year,
            month,
            day,
            secs,
        }
    }

    /// Today (UTC).
    pub fn now() -> Date {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        Date::from_unix(t)
    }

    /// Parses `YYYY-MM-DD`.
    pub fn parse(s: &str) -> Option<Date> {
        let mut it = s.splitn(3, '-');
        let year = it.next()?.parse().ok()?;
        let month = it.next()?.parse().ok().filter(|m| (1..=12).contains(m))?;
        let day = it.next()?.parse().ok().filter(|d| (1..=31).contains(d))?;
        Some(Date {
            year,
            month,
            day,
            secs: 0,
        })
    }

    /// Day of the week, 0 = Sunday.
    fn weekday(&self) -> usize {
        // Days since 1970-01-01 (a Thursday) by the inverse of `from_unix`.
        let (y, m) = if self.month <= 2 {
            (self.year - 1, self.month + 9)
        } else {
            (self.year, self.month - 3)
        };
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let doy = (153 * m as i64 + 2) / 5 + self.day as i64 - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        (days + 4).rem_euclid(7) as usize
    }

    /// Formats with C `strftime` specifiers (the common ones; others are an error naming them).
    pub fn format(&self, fmt: &str) -> core::result::Result<String, String> {
        const MONTHS: [&str; 12] = [
            "January",
            "February",
            "March",
            "April",
            "May",
            "June",
            "July",
            "August",
            "September",
            "October",
            "November",
            "December",
        ];
        const DAYS: [&str; 7] = [
            "Sunday",
            "Monday",
            "Tuesday",
            "Wednesday",
            "Thursday",
            "Friday",
            "Saturday",
        ];
        use core::fmt::Write;
        let mut out = String::new();
        let mut chars = fmt.chars();
        let (h, mi, s) = (self.secs / 3600, self.secs / 60 % 60, self.secs % 60);
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            // `%-d`: no padding (glibc's extension, used by some templates).
            let mut spec = chars.next().ok_or("a format that ends with '%'")?;
            let pad = spec != '-';
            if !pad {
                spec = chars.next().ok_or("a format that ends with '%-'")?;
            }
            let num = |out: &mut String, v: u32| {
                if pad {
                    let _ = write!(out, "{v:02}");
                } else {
                    let _ = write!(out, "{v}");
                }
            };
            let month = MONTHS[(self.month as usize - 1) % 12];
            let wd = DAYS[self.weekday()];
            match spec {
                'd' => num(&mut out, self.day),
                'm' => num(&mut out, self.month),
                'Y' => {
                    let _ = write!(out, "{}", self.year);
                }
                'y' => num(&mut out, self.year.rem_euclid(100) as u32),
                'B' => out.push_str(month),
                'b' | 'h' => out.push_str(&month[..3]),
                'A' => out.push_str(wd),
                'a' => out.push_str(&wd[..3]),
                'H' => num(&mut out, h),
                'M' => num(&mut out, mi),
                'S' => num(&mut out, s),
                'I' => num(&mut out, if h % 12 == 0 { 12 } else { h % 12 }),
                'p' => out.push_str(if h < 12 { "AM" } else { "PM" }),
                'e' => {
                    let _ = write!(out, "{:>2}", self.day);
                }
                '%' => out.push('%'),
                other => {
                    return Err(std::format!(
                        "the strftime specifier %{other} is not supported"
                    ))
                }
            }
        }
        Ok(out)
    }
}

fn template_error(reason: &'static str, e: &minijinja::Error) -> Error {
    // minijinja's message names the construct and where it is, e.g. "invalid operation: tried
    // to divide by zero (in chat:1)".
    let mut msg = e.to_string();
    if let Some(d) = e.detail() {
        if !msg.contains(d) {
            msg.push_str(": ");
            msg.push_str(d);
        }
    }
    Error::Template {
        reason,
        detail: Detail::one_line(&msg),
    }
}

/// Runs `f` on a thread with a [`STACK`]-byte stack and returns its result.
fn on_template_thread<T: Send>(f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("ember-template".into())
            .stack_size(STACK)
            .spawn_scoped(scope, f)
            .map_err(|_| Error::OutOfMemory {
                what: "chat template thread (stack)",
                bytes: STACK as u64,
            })?;
        handle.join().unwrap_or(Err(Error::Template {
            reason: "the template engine failed",
            detail: Detail::new("a panic while rendering"),
        }))
    })
}

impl ChatTemplate {
    /// The template of `model` (`tokenizer.chat_template`), with its BOS and EOS token texts.
    pub fn for_model(model: &crate::model::Model<'_>) -> Result<Self> {
        let src = model.gguf.get_str(crate::gguf::keys::CHAT_TEMPLATE)?;
        Self::for_model_with(model, src)
    }

    /// `source` (another template, say from a file; `None`: ChatML) with `model`'s BOS and EOS
    /// token texts.
    pub fn for_model_with(model: &crate::model::Model<'_>, src: Option<&str>) -> Result<Self> {
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
                check_nesting(src)?;
                check_lines(src)?;
                let src = src.to_owned();
                Some(Arc::new(on_template_thread(move || compile(src))?))
            }
        };
        Ok(ChatTemplate {
            env,
            source: source.map(Arc::from),
            bos: bos.into(),
            eos: eos.into(),
            date: None,
        })
    }

    /// Renders with `date` (`YYYY-MM-DD`) as the day `strftime_now` sees, instead of today:
    /// the same prompt whatever day it is rendered.
    pub fn with_date(mut self, date: &str) -> Result<Self> {
        self.date = Some(Date::parse(date).ok_or(Error::InvalidArgument(
            "the template date must be YYYY-MM-DD",
        ))?);
        Ok(self)
    }

    /// The template's Jinja source (`None`: built-in ChatML).
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    /// Whether the model's own template is used (false: built-in ChatML).
    pub fn is_model_template(&self) -> bool {
        self.env.is_some()
    }

    /// Renders the conversation as the prompt text.
    pub fn render(&self, messages: &[Message<'_>], add_generation_prompt: bool) -> Result<String> {
        self.render_with_tools(messages, add_generation_prompt, None)
    }

    /// Renders the conversation with `tools` (OpenAI's list of `{"type": "function",
    /// "function": {name, description, parameters}}`) as the template's `tools` variable, as
    /// transformers passes it (templates that take tools describe them in their own words).
    /// Built-in ChatML ignores them.
    pub fn render_with_tools(
        &self,
        messages: &[Message<'_>],
        add_generation_prompt: bool,
        tools: Option<&serde_json::Value>,
    ) -> Result<String> {
        let Some(env) = &self.env else {
            let mut s = String::new();
            render_chatml(messages, add_generation_prompt, &mut s)
                .map_err(|_| Error::InvalidArgument("rendering the conversation failed"))?;
            return Ok(s);
        };
        let env = Arc::clone(env);
        let (bos, eos) = (self.bos.as_str(), self.eos.as_str());
        let date = self.date.unwrap_or_else(Date::now);
        let out = on_template_thread(move || {
            let strftime_now = minijinja::Value::from_function(
                move |fmt: String| -> core::result::Result<String, minijinja::Error> {
                    date.format(&fmt).map_err(|e| {
                        minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e)
                    })
                },
            );
            let msgs: Vec<minijinja::Value> = messages
                .iter()
                .map(|m| minijinja::context! { role => m.role, content => m.content })
                .collect();
            let tmpl = env
                .get_template("chat")
                .map_err(|e| template_error("the compiled template is missing", &e))?;
            let base = minijinja::context! {
                messages => msgs,
                add_generation_prompt => add_generation_prompt,
                bos_token => bos,
                eos_token => eos,
                strftime_now => strftime_now,
            };
            // Without tools the variable stays undefined (as the suite's fixtures render it).
            let ctx = match tools {
                Some(t) => minijinja::context! { tools => jinja_value(t), ..base },
                None => base,
            };
            tmpl.render(ctx).map_err(|e| match e.kind() {
                minijinja::ErrorKind::OutOfFuel => Error::Capacity {
                    what: "chat template work and data (fuel)",
                    needed: FUEL + 1,
                    available: FUEL,
                },
                minijinja::ErrorKind::InvalidOperation => {
                    template_error("it refused this conversation", &e)
                }
                _ => template_error("it failed to render this conversation", &e),
            })
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

/// transformers' `tojson` filter: Python's `json.dumps(value, ensure_ascii=False, indent=None,
/// separators=None, sort_keys=False)`, its keyword arguments and its text (`", "` and `": "`
/// between items, floats as Python writes them, no HTML escaping), a plain string. Values
/// json.dumps cannot write (undefined, a lazy iterator, a function) are refused as it refuses
/// them; the text is bounded by [`MAX_OUTPUT`].
fn tojson(
    value: minijinja::Value,
    kwargs: minijinja::value::Kwargs,
) -> core::result::Result<String, minijinja::Error> {
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let indent: Option<minijinja::Value> = kwargs.get("indent")?;
    let separators: Option<minijinja::Value> = kwargs.get("separators")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let bad = |m: String| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, m);
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => Some(match v.as_str() {
            Some(s) => s.to_string(),
            None => " ".repeat(
                i64::try_from(v.clone())
                    .map_err(|_| bad(std::format!("tojson: indent must be a number, not {v}")))?
                    .clamp(0, 64) as usize,
            ),
        }),
    };
    let (item_sep, key_sep) = match separators {
        Some(v) if !v.is_none() => {
            let part = |i: usize| {
                v.get_item_by_index(i)
                    .ok()
                    .and_then(|x| x.as_str().map(String::from))
                    .ok_or_else(|| bad("tojson: separators must be two strings".into()))
            };
            (part(0)?, part(1)?)
        }
        _ if indent.is_some() => (",".to_string(), ": ".to_string()),
        _ => (", ".to_string(), ": ".to_string()),
    };
    let mut w = JsonWriter {
        out: String::new(),
        ascii: ensure_ascii.unwrap_or(false),
        indent,
        item_sep,
        key_sep,
        sort_keys: sort_keys.unwrap_or(false),
    };
    w.value(&value, 0).map_err(bad)?;
    Ok(w.out)
}

struct JsonWriter {
    out: String,
    ascii: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

impl JsonWriter {
    fn newline(&mut self, level: usize) {
        if let Some(ind) = &self.indent {
            self.out.push('\n');
            for _ in 0..level {
                self.out.push_str(ind);
            }
        }
    }

    fn value(&mut self, v: &minijinja::Value, level: usize) -> core::result::Result<(), String> {
        use minijinja::value::ValueKind as K;
        if self.out.len() > MAX_OUTPUT {
            return Err(std::format!("tojson: more than {MAX_OUTPUT} bytes"));
        }
        match v.kind() {
            K::None => self.out.push_str("null"),
            K::Bool => self
                .out
                .push_str(if v.is_true() { "true" } else { "false" }),
            K::Number => match (i64::try_from(v.clone()), f64::try_from(v.clone())) {
                (Ok(i), _) if v.is_integer() => {
                    let _ = write!(self.out, "{i}");
                }
                (_, Ok(f)) => python_float(f, &mut self.out),
                _ => {
                    let _ = write!(self.out, "{v}");
                }
            },
            K::String => self.string(v.as_str().unwrap_or_default()),
            K::Seq => {
                let items: Vec<minijinja::Value> =
                    v.try_iter().map_err(|e| e.to_string())?.collect();
                if items.is_empty() {
                    self.out.push_str("[]");
                    return Ok(());
                }
                self.out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        let sep = core::mem::take(&mut self.item_sep);
                        self.out.push_str(&sep);
                        self.item_sep = sep;
                    }
                    self.newline(level + 1);
                    self.value(item, level + 1)?;
                }
                self.newline(level);
                self.out.push(']');
            }
            K::Map => {
                let mut keys: Vec<minijinja::Value> =
                    v.try_iter().map_err(|e| e.to_string())?.collect();
                if self.sort_keys {
                    keys.sort();
                }
                if keys.is_empty() {
                    self.out.push_str("{}");
                    return Ok(());
                }
                self.out.push('{');
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        let sep = core::mem::take(&mut self.item_sep);
                        self.out.push_str(&sep);
                        self.item_sep = sep;
                    }
                    self.newline(level + 1);
                    // Python writes non-string keys as their JSON text, in quotes.
                    match k.as_str() {
                        Some(s) => self.string(s),
                        None if k.is_none() => self.string("null"),
                        None if k.kind() == K::Bool => {
                            self.string(if k.is_true() { "true" } else { "false" })
                        }
                        None => self.string(&k.to_string()),
                    }
                    let sep = core::mem::take(&mut self.key_sep);
                    self.out.push_str(&sep);
                    self.key_sep = sep;
                    let item = v.get_item(k).map_err(|e| e.to_string())?;
                    self.value(&item, level + 1)?;
                }
                self.newline(level);
                self.out.push('}');
            }
            K::Undefined => return Err("Object of type Undefined is not JSON serializable".into()),
            K::Iterable => return Err("Object of type generator is not JSON serializable".into()),
            _ => return Err(std::format!("Object {v} is not JSON serializable")),
        }
        Ok(())
    }

    fn string(&mut self, s: &str) {
        self.out.push('"');
        for c in s.chars() {
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                '\r' => self.out.push_str("\\r"),
                '\t' => self.out.push_str("\\t"),
                '\u{8}' => self.out.push_str("\\b"),
                '\u{c}' => self.out.push_str("\\f"),
                c if (c as u32) < 0x20 || (self.ascii && !c.is_ascii()) => {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        let _ = write!(self.out, "\\u{u:04x}");
                    }
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }
}

/// `f` as Python's `repr(float)` writes it: the shortest digits that read back, in positional
/// notation for exponents from -4 to 15, else as `1e+16` / `1.5e-07`.
fn python_float(f: f64, out: &mut String) {
    if f.is_nan() {
        out.push_str("NaN");
        return;
    }
    if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    // Rust's `{:e}` gives the shortest round-trip digits: d.ddd e exp.
    let e = std::format!("{f:e}");
    let (mantissa, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    out.push_str(sign);
    if (-4..16).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            for _ in 0..(-exp - 1) {
                out.push('0');
            }
            out.push_str(&digits);
        } else {
            let point = exp as usize + 1;
            if digits.len() > point {
                out.push_str(&digits[..point]);
                out.push('.');
                out.push_str(&digits[point..]);
            } else {
                out.push_str(&digits);
                for _ in digits.len()..point {
                    out.push('0');
                }
                out.push_str(".0");
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
}

/// A JSON value as a template value (objects keep their key order). serde_json parses no
/// deeper than 128 levels, which bounds the recursion.
fn jinja_value(v: &serde_json::Value) -> minijinja::Value {
    use serde_json::Value as J;
    match v {
        J::Null => minijinja::Value::from(()),
        J::Bool(b) => minijinja::Value::from(*b),
        J::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => minijinja::Value::from(i),
            (None, Some(u)) => minijinja::Value::from(u),
            _ => minijinja::Value::from(n.as_f64().unwrap_or(0.0)),
        },
        J::String(s) => minijinja::Value::from(s.as_str()),
        J::Array(a) => minijinja::Value::from(a.iter().map(jinja_value).collect::<Vec<_>>()),
        J::Object(o) => {
            minijinja::Value::from_pairs(o.iter().map(|(k, v)| (k.as_str(), jinja_value(v))))
        }
    }
}

/// Compiles a checked template source the way transformers' `apply_chat_template` does.
fn compile(src: String) -> Result<minijinja::Environment<'static>> {
    let mut env = minijinja::Environment::new();
    // transformers: jinja2 Environment(trim_blocks=True, lstrip_blocks=True).
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
        .map_err(|e| template_error("syntax settings", &e))?;
    env.set_syntax(syntax);
    env.set_fuel(Some(FUEL));
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> core::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    env.add_filter("tojson", tojson);
    env.add_template_owned("chat", src)
        .map_err(|e| template_error("it is not valid Jinja", &e))?;
    Ok(env)
}

/// Refuses a template with a line longer than [`MAX_LINE`] bytes or more lines than that:
/// minijinja keeps line and column numbers in 16 bits (past them its error spans overflow).
/// Real templates are far from either.
pub fn check_lines(src: &str) -> Result<()> {
    if let Some(at) = src.split('\n').position(|l| l.len() > MAX_LINE) {
        return Err(size_error("line", at + 1));
    }
    let lines = src.bytes().filter(|&c| c == b'\n').count() + 1;
    if lines > MAX_LINE {
        return Err(size_error("lines", lines));
    }
    Ok(())
}

fn size_error(what: &str, n: usize) -> Error {
    let mut d = String::new();
    use core::fmt::Write;
    let _ = match what {
        "line" => write!(d, "line {n} is longer than {MAX_LINE} bytes"),
        _ => write!(d, "{n} lines, more than {MAX_LINE}"),
    };
    Error::Template {
        reason: "its lines are too long or too many",
        detail: Detail::new(&d),
    }
}

fn nesting_error(what: &str, line: usize, limit: usize) -> Error {
    let mut d = String::new();
    use core::fmt::Write;
    let _ = write!(d, "{what} at line {line} (the limit is {limit})");
    Error::Template {
        reason: "it is nested too deeply",
        detail: Detail::new(&d),
    }
}

/// Refuses a template whose source nests deeper than [`MAX_NESTING`] (brackets, block
/// statements) or chains more than [`MAX_CHAIN`] operators in one tag, or is longer than
/// [`MAX_SOURCE`]. A lexical scan, not a parse: it over-counts rather than under-counts (an
/// operator inside a string literal is skipped, a `-` is always counted), which real templates
/// are far from.
pub fn check_nesting(src: &str) -> Result<()> {
    if src.len() > MAX_SOURCE {
        return Err(Error::Capacity {
            what: "chat template source (bytes)",
            needed: src.len() as u64,
            available: MAX_SOURCE as u64,
        });
    }
    let b = src.as_bytes();
    let mut i = 0;
    let mut line = 1;
    let mut blocks = 0usize;
    while i < b.len() {
        if b[i] == b'\n' {
            line += 1;
        }
        if b[i] != b'{' || i + 1 >= b.len() || !matches!(b[i + 1], b'{' | b'%' | b'#') {
            i += 1;
            continue;
        }
        let kind = b[i + 1];
        i += 2;
        if kind == b'#' {
            // A comment: skip to `#}`.
            while i < b.len() && !(b[i] == b'#' && b.get(i + 1) == Some(&b'}')) {
                line += (b[i] == b'\n') as usize;
                i += 1;
            }
            i += 2;
            continue;
        }
        let close = if kind == b'{' { b'}' } else { b'%' };
        // Scan the tag: brackets, operators, strings; note its first word for block statements.
        let start = i;
        let (mut depth, mut ops) = (0usize, 0usize);
        let mut ended = false;
        while i < b.len() {
            let c = b[i];
            match c {
                b'\n' => line += 1,
                b'\'' | b'"' => {
                    i += 1;
                    while i < b.len() && b[i] != c {
                        if b[i] == b'\\' {
                            i += 1;
                        }
                        line += (b.get(i) == Some(&b'\n')) as usize;
                        i += 1;
                    }
                }
                b'(' | b'[' | b'{' => {
                    depth += 1;
                    ops += 1;
                    if depth > MAX_NESTING {
                        return Err(nesting_error(
                            "brackets nested too deeply",
                            line,
                            MAX_NESTING,
                        ));
                    }
                }
                b')' | b']' | b'}' if !(c == b'}' && depth == 0) => depth = depth.saturating_sub(1),
                b'.' | b'|' | b'+' | b'-' | b'*' | b'/' | b'%' | b'~' | b'<' | b'>' | b'='
                | b'!' => ops += 1,
                _ => {}
            }
            if depth == 0 && c == close && b.get(i + 1) == Some(&b'}') {
                ended = true;
                break;
            }
            i += 1;
        }
        // (Every stop above is at an ASCII byte or the end, so this is a character boundary.)
        let body = src.get(start..i.min(b.len())).unwrap_or("");
        // Word operators (`not`, `and`, `or`, `is`, `in`, `if`, `else`) count too.
        ops += body
            .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .filter(|w| matches!(*w, "not" | "and" | "or" | "is" | "in" | "if" | "else"))
            .count();
        if ops > MAX_CHAIN {
            return Err(nesting_error(
                "too many operators in one tag",
                line,
                MAX_CHAIN,
            ));
        }
        if kind == b'%' {
            let words = body.trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
            let first = words
                .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                .next()
                .unwrap_or("");
            let opens = match first {
                "if" | "for" | "macro" | "call" | "filter" | "with" | "block" | "autoescape" => {
                    true
                }
                // `{% set x %}…{% endset %}` is a block; `{% set x = … %}` is not.
                "set" => !words.contains('='),
                _ => false,
            };
            if opens {
                blocks += 1;
                if blocks > MAX_NESTING {
                    return Err(nesting_error(
                        "block statements nested too deeply",
                        line,
                        MAX_NESTING,
                    ));
                }
            } else if first.starts_with("end") {
                blocks = blocks.saturating_sub(1);
            } else if first == "raw" {
                // Raw text up to `{% endraw %}` is not Jinja.
                let rest = src.get(i.min(src.len())..).unwrap_or("");
                match rest.find("endraw") {
                    Some(off) => {
                        line += rest[..off].matches('\n').count();
                        i += off;
                    }
                    None => return Ok(()),
                }
            }
        }
        if ended {
            i += 2;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format_like_strftime() {
        let d = Date::from_unix(0);
        assert_eq!((d.year, d.month, d.day, d.weekday()), (1970, 1, 1, 4));
        // 2024-07-26 10:30:00 UTC, a Friday; 2000-02-29, a Tuesday.
        let d = Date::from_unix(1_721_989_800);
        assert_eq!(
            d.format("%d %b %Y, %A %H:%M:%S %p %-m/%e %%").unwrap(),
            "26 Jul 2024, Friday 10:30:00 AM 7/26 %"
        );
        assert_eq!(
            Date::parse("2000-02-29")
                .unwrap()
                .format("%a %B %y")
                .unwrap(),
            "Tue February 00"
        );
        assert_eq!(
            Date::parse("2024-07-26")
                .unwrap()
                .format("%d %b %Y")
                .unwrap(),
            "26 Jul 2024"
        );
        assert!(Date::parse("2024-13-01").is_none() && Date::parse("x").is_none());
        assert!(d.format("%Q").unwrap_err().contains("%Q"));
        assert!(d.format("100%").is_err());
    }

    fn render(src: &str) -> Result<String> {
        let t = ChatTemplate::new(Some(src), "<s>", "</s>")?;
        t.render(
            &[Message {
                role: "user",
                content: "hi",
            }],
            true,
        )
    }

    #[test]
    fn lines_past_16_bit_positions_are_refused() {
        // The fuzzer's find: a line past 65,535 columns made minijinja's error span overflow.
        let long = std::format!("{{{{ '{}' }}}}%", "x".repeat(70_000));
        let e = ChatTemplate::new(Some(&long), "<s>", "</s>")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("line 1 is longer than 65535 bytes"), "{e}");
        let many = "a\n".repeat(70_000);
        let e = ChatTemplate::new(Some(&many), "<s>", "</s>")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("70001 lines"), "{e}");
        // A long template of short lines still compiles.
        let ok = "{{ 'x' }}\n".repeat(20_000);
        assert!(ChatTemplate::new(Some(&ok), "<s>", "</s>").is_ok());
    }

    #[test]
    fn tojson_writes_what_pythons_json_dumps_writes() {
        // The expected texts are Python 3's json.dumps of the same values.
        let cases = [
            (
                r#"{{ [1, 2.5, 1e20, 0.0001, 1e-05, 123456789.125, -0.0, none, true, "é\n\"\x01", {"b": 1, "a": []}] | tojson }}"#,
                r#"[1, 2.5, 1e+20, 0.0001, 1e-05, 123456789.125, -0.0, null, true, "é\n\"\u0001", {"b": 1, "a": []}]"#,
            ),
            (
                r#"{{ {"é": ["x", {}], "a": 1} | tojson(ensure_ascii=true, indent=2, sort_keys=true) }}"#,
                "{\n  \"a\": 1,\n  \"\\u00e9\": [\n    \"x\",\n    {}\n  ]\n}",
            ),
            (
                r#"{{ [1, [2]] | tojson(separators=[",", ":"]) }}"#,
                "[1,[2]]",
            ),
            // No HTML escaping (jinja2's own tojson would write \u003c).
            (r#"{{ "<a href='x'>&" | tojson }}"#, r#""<a href='x'>&""#),
        ];
        for (src, want) in cases {
            assert_eq!(render(src).unwrap(), want, "{src}");
        }
        for (src, why) in [
            ("{{ nothing | tojson }}", "Undefined"),
            ("{{ [1] | tojson(bogus=1) }}", "bogus"),
        ] {
            let e = render(src).unwrap_err().to_string();
            assert!(e.contains(why), "{src}: {e}");
        }
    }

    /// Runs `f` on a thread with a 256 KiB stack, as a C host might.
    fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap()
    }

    fn hostile() -> Vec<(&'static str, String)> {
        let rep = |s: &str, n: usize| s.repeat(n);
        vec![
            (
                "not chain",
                format!("{{{{ {}true }}}}", rep("not ", 30_000)),
            ),
            (
                "filter chain",
                format!("{{{{ 1{} }}}}", rep("|abs", 30_000)),
            ),
            ("plus chain", format!("{{{{ 1{} }}}}", rep(" + 1", 30_000))),
            (
                "attribute chain",
                format!("{{{{ messages{} }}}}", rep(".x", 100_000)),
            ),
            (
                "nested list literal",
                format!("{{{{ {}1{} }}}}", rep("[", 100_000), rep("]", 100_000)),
            ),
            (
                "nested list tojson",
                format!(
                    "{{{{ {}1{}|tojson }}}}",
                    rep("[", 100_000),
                    rep("]", 100_000)
                ),
            ),
            (
                "nested ifs",
                format!(
                    "{}x{}",
                    rep("{% if true %}", 5_000),
                    rep("{% endif %}", 5_000)
                ),
            ),
            (
                "parens",
                format!("{{{{ {}1{} }}}}", rep("(", 50_000), rep(")", 50_000)),
            ),
        ]
    }

    #[test]
    fn deeply_nested_templates_are_errors_not_stack_overflows_on_a_256k_thread() {
        for (what, src) in hostile() {
            let r = on_small_stack(move || render(&src).map(|s| s.len()));
            match r {
                Err(Error::Template { reason, .. }) => {
                    assert_eq!(reason, "it is nested too deeply", "{what}")
                }
                other => panic!("{what}: {other:?}"),
            }
        }
    }

    #[test]
    fn values_nested_at_run_time_are_bounded_by_fuel_and_the_template_stack() {
        // A list wrapped in a list n times, then printed, serialised, measured or just dropped:
        // each recurses once per level inside minijinja. Up to the fuel's depth they render on
        // the template thread's stack; past it the fuel stops them. Never a crash.
        let mut rendered_deep = false;
        for n in [1_000, 20_000, 60_000, 200_000, 10_000_000] {
            for tail in ["{{ ns.v }}", "{{ ns.v|tojson }}", "{{ ns.v|length }}", ""] {
                let src = std::format!(
                    "{{% set ns = namespace(v=[]) %}}{{% for i in range({n}) %}}{{% set ns.v = [ns.v] %}}{{% endfor %}}{tail}"
                );
                let r = on_small_stack(move || render(&src).map(|s| s.len()));
                match r {
                    Ok(_) => rendered_deep |= n >= 20_000,
                    Err(Error::Capacity { .. }) | Err(Error::Template { .. }) => {}
                    Err(e) => panic!("{n} {tail}: {e:?}"),
                }
            }
        }
        assert!(
            rendered_deep,
            "the deep cases never reached the printing code"
        );
        // The deepest shapes per unit of fuel: 64 brackets per step, in nested loops (a fuzzer's
        // find, from the single-bracket seed), printed or only dropped.
        for k in [1, 2, 4] {
            for tail in ["{{ ns.v }}", ""] {
                let src = std::format!(
                    "{{% set ns = namespace(v=[]) %}}{{% for i in range({k}) %}}{{% for j in range(1000) %}}{{% set ns.v = {o}ns.v{c} %}}{{% endfor %}}{{% endfor %}}{tail}",
                    o = "[".repeat(64),
                    c = "]".repeat(64)
                );
                let r = on_small_stack(move || render(&src).map(|s| s.len()));
                assert!(
                    matches!(r, Ok(_) | Err(Error::Capacity { .. })),
                    "{k} {tail}: {r:?}"
                );
            }
        }
        let found = "{% set ns = namespace(v=[]) %}{% for i in range(050000) %}{% set ns.v = [ns.v] %}{% endfor %}{{ ns.v }}";
        let r = on_small_stack(move || render(found).map(|s| s.len()));
        assert!(matches!(r, Ok(_) | Err(Error::Capacity { .. })), "{r:?}");
    }

    #[test]
    fn data_a_template_makes_is_bounded() {
        // 107 bytes that double a string 27 times (128 MiB) stop at the fuel's data bound.
        let src = r#"{% set s = namespace(v="a") %}{% for i in range(27) %}{% set s.v = s.v ~ s.v %}{% endfor %}{{ s.v|length }}"#;
        let e = render(src).unwrap_err();
        assert!(matches!(e, Error::Capacity { .. }), "{e:?}");
        // Without a loop too.
        let src = format!(
            "{{% set x = 'ab' %}}{}{{{{ x|length }}}}",
            "{% set x = x ~ x %}".repeat(30)
        );
        assert!(matches!(render(&src), Err(Error::Capacity { .. })));
        let e = render("{{ 'a' * 99999999 }}").unwrap_err();
        assert!(matches!(e, Error::Capacity { .. }), "{e:?}");
    }

    #[test]
    fn template_errors_say_which_construct_and_why() {
        let msg = |src: &str| render(src).unwrap_err().to_string();
        let m = msg("{{ 1/0 }}");
        assert!(m.contains("unable to calculate 1 / 0"), "{m}");
        let m = msg("{{ 9223372036854775807 * 9223372036854775807 * 99999999999999 }}");
        assert!(
            m.contains("unable to calculate") || m.contains("overflow"),
            "{m}"
        );
        let m = msg("{{ raise_exception('Only user and assistant roles') }}");
        assert!(m.contains("Only user and assistant roles"), "{m}");
        let m = msg("{% for x in range(1000000000) %}{% endfor %}");
        assert!(m.contains("range") || m.contains("fuel"), "{m}");
        let m = msg("{% if %}");
        assert!(
            m.starts_with("chat template: it is not valid Jinja: "),
            "{m}"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Random mixes of the shapes that nest (brackets, `not`, filters, attributes,
        /// operators, blocks), at random depths on both sides of the limits, on a 256 KiB
        /// thread: a result or an error, never a crash.
        /// The lexical scan takes any text without panicking (a fuzzer found an index past the
        /// end after an escape at the end of an unterminated string, before a raw block).
        #[test]
        fn the_nesting_check_takes_any_text(s in "(\\{[%{#]|[%}#]\\}|raw|endraw|[\"'\\\\\\[\\](){}]|.){0,64}") {
            let _ = check_nesting(&s);
        }

        #[test]
        fn random_nesting_is_a_result_or_an_error(
            parts in proptest::collection::vec((0usize..8, 1usize..3000), 1..6)
        ) {
            let mut open = String::new();
            let mut close = String::new();
            for (kind, n) in parts {
                let (o, c) = match kind {
                    0 => ("[", "]"),
                    1 => ("(", ")"),
                    2 => ("not ", ""),
                    3 => ("", "|abs"),
                    4 => ("", ".x"),
                    5 => ("", " ~ 'a'"),
                    6 => ("{'k': ", "}"),
                    _ => ("-", ""),
                };
                open.push_str(&o.repeat(n));
                close = c.repeat(n) + &close;
            }
            let src = std::format!("{{% if true %}}{{{{ {open}1{close} }}}}{{% endif %}}");
            let r = on_small_stack(move || render(&src).map(|s| s.len()));
            if let Err(e) = &r {
                proptest::prop_assert!(
                    matches!(e, Error::Template { .. } | Error::Capacity { .. }),
                    "{e:?}"
                );
            }
        }
    }

    #[test]
    fn the_fuzzers_find_in_the_nesting_check_is_an_error_or_a_result() {
        // An escape at the very end of an unterminated string, then a raw block.
        for src in [
            "{% raw 'abc\\",
            "{{ 'x\\",
            "{% raw %}{{ \"a\\",
            "{% if \"\\",
        ] {
            let _ = check_nesting(src);
            let _ = render(src);
        }
    }

    #[test]
    fn real_shapes_pass_the_nesting_check() {
        // Operators inside strings, comments, raw blocks and long flat templates are fine.
        let flat =
            "{% for m in messages %}{{ m.role ~ ': ' ~ m.content }}\n{% endfor %}".repeat(200);
        check_nesting(&flat).unwrap();
        check_nesting("{# [[[[[[[[ #}{{ '((((((((((((((((((((((((((((((' }}").unwrap();
        let deep_string = format!("{{{{ '{}' }}}}", "[".repeat(10_000));
        check_nesting(&deep_string).unwrap();
        let raw = format!("{{% raw %}}{}{{% endraw %}}", "{% if %}".repeat(1000));
        check_nesting(&raw).unwrap();
        assert_eq!(
            render("{% if messages[0]['role'] == 'user' and not (1 > 2) %}{{ messages[0].content|upper }}{% endif %}").unwrap(),
            "HI"
        );
    }
}
