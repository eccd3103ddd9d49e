//! GBNF grammars (llama.cpp's syntax), compiled once into caller memory, and a matcher that
//! follows text through them without allocating.
//!
//! **Syntax**: `name ::= alternatives` rules (one per line; a rule may continue on the next lines
//! inside parentheses or after `|`), sequences of `"literals"`, `[character classes]` with
//! ranges and `^` negation, `.` (any character), rule references, `( groups )`, the repetitions
//! `*`, `+`, `?`, `{m}`, `{m,}`, `{m,n}`, escapes `\n \t \r \\ \" \[ \] \- \xHH \uHHHH
//! \UHHHHHHHH`, and `#` comments. A grammar needs a `root` rule. Token references match one
//! whole token by its id, as llama.cpp has them: `<[id]>` that token, `!<[id]>` any token but
//! that one (never end-of-generation, which only comes where the grammar may end), and
//! `<text>` / `!<text>` the token whose text that is (`<|im_end|>`, `<think>`), looked up in
//! the model's vocabulary ([`Grammar::compile_with_tokens`]).
//!
//! **Compiled form** (as llama.cpp compiles it): every rule is a run of [`Elem`]s, its
//! alternatives separated by [`Kind::Alt`] and closed by [`Kind::End`]; groups and repetitions
//! become generated rules (`S* → S' ::= S S' |`, `S{m,n}` → m copies then n − m nested optional
//! rules). Rules that can reach themselves without consuming a character (left recursion) are
//! refused at compile time, so matching always terminates.
//!
//! **Matching** ([`Matcher`]): the state is a set of pushdown stacks of element positions, each
//! topped by a terminal. A character keeps the stacks whose top accepts it, advanced and expanded
//! through rule references into their alternatives. The text is in the grammar while some stack
//! is left; it is complete when an empty stack is among them. Every bound (rules, elements, stack
//! depth, number of stacks) is fixed when the memory is sized, and exceeding one is an error, not
//! a hang or a growth.

mod constrain;
mod matcher;
#[cfg(feature = "std")]
mod schema;
pub use constrain::Constraint;
pub use matcher::{Matcher, MatcherLimits};
#[cfg(feature = "std")]
pub use schema::{gbnf_from_schema, gbnf_rules_from_schema};

use crate::arena::Arena;
use crate::error::{Detail, Error, Result};

/// What an element is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Kind {
    /// End of a rule's last alternative.
    End = 0,
    /// Separates alternatives.
    Alt = 1,
    /// A reference to rule `value`.
    RuleRef = 2,
    /// A character class that starts with the character `value` (more may follow as
    /// [`Kind::CharAlt`] and [`Kind::CharRngUpper`]).
    Char = 3,
    /// A negated character class starting with `value`.
    CharNot = 4,
    /// The upper bound of a range whose lower bound is the element before.
    CharRngUpper = 5,
    /// Another character (or range start) of the class before.
    CharAlt = 6,
    /// Any character.
    CharAny = 7,
    /// The one token whose id is `value`.
    Token = 8,
    /// Any one token but `value` (and but end-of-generation).
    TokenNot = 9,
}

/// One element of a compiled grammar.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct Elem {
    kind: u32,
    /// A codepoint or a rule id.
    pub value: u32,
}

impl Elem {
    const fn new(kind: Kind, value: u32) -> Elem {
        Elem {
            kind: kind as u32,
            value,
        }
    }

    /// The element's kind.
    pub fn kind(&self) -> Kind {
        match self.kind {
            1 => Kind::Alt,
            2 => Kind::RuleRef,
            3 => Kind::Char,
            4 => Kind::CharNot,
            5 => Kind::CharRngUpper,
            6 => Kind::CharAlt,
            7 => Kind::CharAny,
            8 => Kind::Token,
            9 => Kind::TokenNot,
            _ => Kind::End,
        }
    }

    /// End of an alternative (or of the rule).
    pub fn ends_sequence(&self) -> bool {
        matches!(self.kind(), Kind::End | Kind::Alt)
    }
}

/// A grammar of any JSON value (RFC 8259), with whitespace only inside objects and arrays and
/// bounded to a few characters there, so that a model cannot pad forever and the output ends
/// with the value.
pub const JSON: &str = r#"root ::= value
value ::= object | array | string | number | "true" | "false" | "null"
object ::= "{" ws ( member ( ws "," ws member )* ws )? "}"
member ::= string ws ":" ws value
array ::= "[" ws ( value ( ws "," ws value )* ws )? "]"
string ::= "\"" char* "\""
char ::= [^"\\\x00-\x1f] | "\\" ( ["\\/bfnrt] | "u" hex hex hex hex )
hex ::= [0-9a-fA-F]
number ::= "-"? ( "0" | [1-9] [0-9]{0,15} ) ( "." [0-9]{1,16} )? ( [eE] [-+]? [0-9]{1,3} )?
ws ::= [ \t\n]{0,4}
"#;

/// Largest repetition count accepted in `{m,n}` (as llama.cpp's bound).
pub const MAX_REPETITION: u64 = 2000;
/// Deepest nesting of parentheses.
pub const MAX_NESTING: usize = 64;
/// Most memory [`Grammar::compile_owned`] grows to.
pub const MAX_OWNED_BYTES: usize = 64 << 20;

const TOO_LARGE: &str = "the grammar is too large for its memory";
const TOO_MANY_RULES: &str = "too many rules for the grammar's memory";

/// A compiled grammar: its rules, in memory the caller provided.
#[derive(Clone, Copy, Debug)]
pub struct Grammar<'a> {
    elems: &'a [Elem],
    /// Start of each rule in `elems`.
    rules: &'a [u32],
    root: u32,
}

/// Capacities of a grammar's compiled form, from its source length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrammarLimits {
    /// Elements, over every rule.
    pub elems: usize,
    /// Rules (named and generated).
    pub rules: usize,
}

impl GrammarLimits {
    /// Enough for any grammar of `src_len` bytes without large repetition counts (`{m,n}` copies
    /// its item: a grammar that needs more is refused, naming the bound).
    pub const fn for_source(src_len: usize) -> GrammarLimits {
        GrammarLimits {
            elems: 8 * src_len + 256,
            rules: src_len + 16,
        }
    }
}

impl<'a> Grammar<'a> {
    /// Arena bytes [`Grammar::compile`] needs with `limits`.
    pub const fn bytes_needed(limits: &GrammarLimits) -> usize {
        // Output elements, a build stack as large, rule starts, rule names and flags.
        Arena::size_of::<Elem>(limits.elems) * 2
            + Arena::size_of::<u32>(limits.rules) * 3
            + Arena::size_of::<u8>(limits.rules) * 2
    }

    /// Compiles GBNF `src` into `arena` (which should hold [`Grammar::bytes_needed`] bytes).
    /// Errors name the line and column. Token references by text (`<|im_end|>`) need a
    /// vocabulary ([`Grammar::compile_with_tokens`]) and are refused here; by id they are not.
    pub fn compile(src: &str, arena: &mut Arena<'a>, limits: &GrammarLimits) -> Result<Self> {
        Self::compile_with_tokens(src, arena, limits, &|_| Err(NO_VOCABULARY))
    }

    /// Like [`Grammar::compile`], with `token` finding the id of a token by its text (for
    /// `<text>`: it gets the text with its angle brackets, as the vocabulary spells special
    /// tokens, and says why when there is no such token).
    pub fn compile_with_tokens(
        src: &str,
        arena: &mut Arena<'a>,
        limits: &GrammarLimits,
        token: TokenLookup<'_>,
    ) -> Result<Self> {
        let elems = arena.alloc::<Elem>(limits.elems, "grammar elements")?;
        let build = arena.alloc::<Elem>(limits.elems, "grammar build stack")?;
        let starts = arena.alloc::<u32>(limits.rules, "grammar rule table")?;
        let names = arena.alloc::<u32>(limits.rules * 2, "grammar rule names")?;
        let flags = arena.alloc::<u8>(limits.rules * 2, "grammar rule flags")?;
        starts.fill(u32::MAX);
        let mut p = Parser {
            src: src.as_bytes(),
            pos: 0,
            elems,
            n_elems: 0,
            build,
            top: 0,
            starts,
            names,
            n_rules: 0,
            depth: 0,
            token,
        };
        p.parse()?;
        let root = p
            .find("root")
            .ok_or(grammar_error(src, 0, "no 'root' rule", ""))?;
        // Every referenced rule is defined.
        for id in 0..p.n_rules {
            if p.starts[id] == u32::MAX {
                let (off, len) = (p.names[2 * id] as usize, p.names[2 * id + 1] as usize);
                let name = src.get(off..off + len).unwrap_or("");
                return Err(grammar_error(
                    src,
                    off,
                    "a rule is used but never defined",
                    name,
                ));
            }
        }
        let Parser {
            elems,
            n_elems,
            starts,
            n_rules,
            names,
            ..
        } = p;
        let elems: &'a [Elem] = &elems[..n_elems];
        let rules: &'a [u32] = &starts[..n_rules];
        let g = Grammar { elems, rules, root };
        let (nullable, visiting) = flags.split_at_mut(limits.rules);
        if let Some(id) = g.left_recursive(&mut nullable[..n_rules], &mut visiting[..n_rules]) {
            let (off, len) = (names[2 * id], names[2 * id + 1] as usize);
            let (off, name) = if off == NO_NAME {
                (0, "")
            } else {
                let off = off as usize;
                (off, src.get(off..off + len).unwrap_or(""))
            };
            return Err(grammar_error(
                src,
                off,
                "left recursion (a rule that can reach itself before any character)",
                name,
            ));
        }
        Ok(g)
    }

    /// Compiles into vectors of its own, with memory doubled as often as the grammar needs
    /// (repetitions copy their item), up to [`MAX_OWNED_BYTES`].
    #[cfg(feature = "alloc")]
    pub fn compile_owned(src: &str) -> Result<OwnedGrammar> {
        Self::compile_owned_with_tokens(src, &|_| Err(NO_VOCABULARY))
    }

    /// [`Grammar::compile_owned`] with a token lookup ([`Grammar::compile_with_tokens`]).
    #[cfg(feature = "alloc")]
    pub fn compile_owned_with_tokens(src: &str, token: TokenLookup<'_>) -> Result<OwnedGrammar> {
        let mut limits = GrammarLimits::for_source(src.len());
        loop {
            let mut mem = alloc::vec![0u8; Self::bytes_needed(&limits)];
            let mut arena = Arena::new(&mut mem);
            match Grammar::compile_with_tokens(src, &mut arena, &limits, token) {
                Ok(g) => {
                    return Ok(OwnedGrammar {
                        elems: g.elems.to_vec(),
                        rules: g.rules.to_vec(),
                        root: g.root,
                    })
                }
                Err(Error::Grammar { reason, .. })
                    if (reason == TOO_LARGE || reason == TOO_MANY_RULES)
                        && Self::bytes_needed(&limits) < MAX_OWNED_BYTES =>
                {
                    limits = GrammarLimits {
                        elems: limits.elems * 2,
                        rules: limits.rules * 2,
                    };
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The root rule's id.
    pub fn root(&self) -> u32 {
        self.root
    }

    /// Number of rules (named and generated).
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Number of elements.
    pub fn elem_count(&self) -> usize {
        self.elems.len()
    }

    /// The largest token id a token reference names, if there is one.
    pub fn max_token_ref(&self) -> Option<u32> {
        self.elems
            .iter()
            .filter(|e| matches!(e.kind(), Kind::Token | Kind::TokenNot))
            .map(|e| e.value)
            .max()
    }

    /// The element at `pos`.
    pub fn elem(&self, pos: u32) -> Elem {
        self.elems.get(pos as usize).copied().unwrap_or_default()
    }

    /// Where rule `id` starts.
    pub fn rule_start(&self, id: u32) -> u32 {
        self.rules.get(id as usize).copied().unwrap_or(0)
    }

    /// The ranges of the character class at `pos` (a single character is a range of one;
    /// `.` is every codepoint), and the position after the class.
    fn class(&self, start: u32) -> (impl Iterator<Item = (u32, u32)> + '_, u32) {
        let mut end = start;
        loop {
            end += if self.elem(end + 1).kind() == Kind::CharRngUpper {
                2
            } else {
                1
            };
            if self.elem(end).kind() != Kind::CharAlt {
                break;
            }
        }
        let mut pos = start;
        let ranges = core::iter::from_fn(move || {
            (pos < end).then(|| {
                let e = self.elem(pos);
                if e.kind() == Kind::CharAny {
                    pos += 1;
                    (0, u32::MAX)
                } else if self.elem(pos + 1).kind() == Kind::CharRngUpper {
                    pos += 2;
                    (e.value, self.elem(pos - 1).value)
                } else {
                    pos += 1;
                    (e.value, e.value)
                }
            })
        });
        (ranges, end)
    }

    /// Whether `cp` matches the character class at `pos`; returns the position after the class.
    pub fn match_char(&self, pos: u32, cp: u32) -> (bool, u32) {
        let negated = self.elem(pos).kind() == Kind::CharNot;
        let (mut ranges, end) = self.class(pos);
        let found = ranges.any(|(a, b)| a <= cp && cp <= b);
        (found != negated, end)
    }

    /// Whether some codepoint in `lo..=hi` (the characters a begun UTF-8 sequence may still
    /// become) could match the character class at `pos`. A negated class refuses the span only
    /// when one excluded range covers all of it.
    pub fn match_range(&self, pos: u32, lo: u32, hi: u32) -> bool {
        let negated = self.elem(pos).kind() == Kind::CharNot;
        let (mut ranges, _) = self.class(pos);
        if negated {
            !ranges.any(|(a, b)| a <= lo && hi <= b)
        } else {
            ranges.any(|(a, b)| a <= hi && lo <= b)
        }
    }

    /// A rule that reaches itself in first position, if there is one, as llama.cpp decides it:
    /// through leftmost references, and past a reference whose rule has an empty alternative.
    /// (Cycles through rules that only derive the empty text, such as `( [x]* )*`, are left to
    /// the matcher, which skips stacks it has already expanded.) `nullable` and `visiting` are
    /// scratch flags, one per rule.
    fn left_recursive(&self, nullable: &mut [u8], visiting: &mut [u8]) -> Option<usize> {
        for (id, n) in nullable.iter_mut().enumerate().take(self.rules.len()) {
            *n = self.alternatives(id).any(|a| self.elem(a).ends_sequence()) as u8;
        }
        // Rules reachable in first position (after nullable prefixes), depth-first with an
        // explicit bound: a rule on the current path reached again is left recursion.
        for start in 0..self.rules.len() {
            visiting.fill(0);
            if self.reaches(start, start, nullable, visiting, 0) {
                return Some(start);
            }
        }
        None
    }

    fn reaches(
        &self,
        from: usize,
        target: usize,
        nullable: &[u8],
        seen: &mut [u8],
        depth: usize,
    ) -> bool {
        if depth > self.rules.len() {
            return false;
        }
        for a in self.alternatives(from) {
            let mut pos = a;
            loop {
                let e = self.elem(pos);
                if e.ends_sequence() {
                    break;
                }
                if e.kind() != Kind::RuleRef {
                    break;
                }
                let r = e.value as usize;
                if r == target {
                    return true;
                }
                if seen[r] == 0 {
                    seen[r] = 1;
                    if self.reaches(r, target, nullable, seen, depth + 1) {
                        return true;
                    }
                }
                if nullable[r] == 0 {
                    break;
                }
                pos += 1;
            }
        }
        false
    }

    /// The start of each alternative of rule `id`.
    pub(crate) fn alternatives(&self, id: usize) -> impl Iterator<Item = u32> + '_ {
        let mut next = Some(self.rules[id]);
        core::iter::from_fn(move || {
            let start = next?;
            let mut pos = start;
            while !self.elem(pos).ends_sequence() {
                pos += 1;
            }
            next = (self.elem(pos).kind() == Kind::Alt).then_some(pos + 1);
            Some(start)
        })
    }
}

/// A grammar compiled into vectors of its own.
#[cfg(feature = "alloc")]
pub struct OwnedGrammar {
    elems: alloc::vec::Vec<Elem>,
    rules: alloc::vec::Vec<u32>,
    root: u32,
}

#[cfg(feature = "alloc")]
impl OwnedGrammar {
    /// The compiled grammar.
    pub fn grammar(&self) -> Grammar<'_> {
        Grammar {
            elems: &self.elems,
            rules: &self.rules,
            root: self.root,
        }
    }
}

/// Finds a token's id by its text (`Err`: why there is none).
pub type TokenLookup<'t> = &'t dyn Fn(&str) -> core::result::Result<u32, &'static str>;

const NO_VOCABULARY: &str = "a token named by its text (<...>) needs the model's vocabulary";

/// "No name" in the rule-name table (a generated rule).
const NO_NAME: u32 = u32::MAX;

/// An error at byte `off` of `src`: the reason, then line and column (1-based, columns in
/// characters) and the rule's name when there is one.
fn grammar_error(src: &str, off: usize, reason: &'static str, name: &str) -> Error {
    let off = off.min(src.len());
    let before = &src.as_bytes()[..off];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let col = src[line_start..]
        .char_indices()
        .take_while(|(i, _)| line_start + i < off)
        .count()
        + 1;
    use core::fmt::Write;
    let mut detail = Detail::new("");
    let _ = write!(detail, "line {line}, column {col}");
    if !name.is_empty() {
        let _ = write!(detail, ": {name}");
    }
    Error::Grammar { reason, detail }
}

struct Parser<'s, 'a> {
    token: TokenLookup<'s>,
    src: &'s [u8],
    pos: usize,
    /// Finished rules, appended whole.
    elems: &'a mut [Elem],
    n_elems: usize,
    /// Rules being built (nested groups build above their parent).
    build: &'a mut [Elem],
    top: usize,
    starts: &'a mut [u32],
    /// (offset, length) of each rule's name in the source (offset [`NO_NAME`]: generated).
    names: &'a mut [u32],
    n_rules: usize,
    depth: usize,
}

impl Parser<'_, '_> {
    fn err(&self, reason: &'static str) -> Error {
        let src = core::str::from_utf8(self.src).unwrap_or("");
        grammar_error(src, self.pos, reason, "")
    }

    fn peek(&self) -> u8 {
        self.src.get(self.pos).copied().unwrap_or(0)
    }

    fn at(&self, k: usize) -> u8 {
        self.src.get(self.pos + k).copied().unwrap_or(0)
    }

    fn space(&mut self, newline_ok: bool) {
        loop {
            match self.peek() {
                b' ' | b'\t' => self.pos += 1,
                b'\r' | b'\n' if newline_ok => self.pos += 1,
                b'#' => {
                    while !matches!(self.peek(), 0 | b'\r' | b'\n') {
                        self.pos += 1;
                    }
                }
                _ => return,
            }
        }
    }

    fn word_char(c: u8) -> bool {
        c.is_ascii_alphanumeric() || c == b'-'
    }

    fn name(&mut self) -> Result<(usize, usize)> {
        let start = self.pos;
        while Self::word_char(self.peek()) {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.err("expecting a rule name"));
        }
        Ok((start, self.pos - start))
    }

    /// The id of the named rule, if known.
    fn find(&self, name: &str) -> Option<u32> {
        (0..self.n_rules)
            .find(|&id| {
                let off = self.names[2 * id];
                off != NO_NAME
                    && &self.src[off as usize..(off + self.names[2 * id + 1]) as usize]
                        == name.as_bytes()
            })
            .map(|id| id as u32)
    }

    fn new_rule(&mut self, name: Option<(usize, usize)>) -> Result<u32> {
        if self.n_rules == self.starts.len() {
            return Err(self.err(TOO_MANY_RULES));
        }
        let id = self.n_rules;
        let (off, len) = name.map_or((NO_NAME, 0), |(o, l)| (o as u32, l as u32));
        self.names[2 * id] = off;
        self.names[2 * id + 1] = len;
        self.n_rules += 1;
        Ok(id as u32)
    }

    fn symbol(&mut self, off: usize, len: usize) -> Result<u32> {
        let name = core::str::from_utf8(&self.src[off..off + len]).unwrap_or("");
        match self.find(name) {
            Some(id) => Ok(id),
            None => self.new_rule(Some((off, len))),
        }
    }

    fn push(&mut self, e: Elem) -> Result<()> {
        if self.top == self.build.len() {
            return Err(self.err(TOO_LARGE));
        }
        self.build[self.top] = e;
        self.top += 1;
        Ok(())
    }

    /// Moves the build stack's elements from `from` into rule `id`.
    fn finish_rule(&mut self, id: u32, from: usize) -> Result<()> {
        let n = self.top - from;
        if self.n_elems + n > self.elems.len() {
            return Err(self.err(TOO_LARGE));
        }
        if self.starts[id as usize] != u32::MAX {
            return Err(self.err("a rule is defined twice"));
        }
        self.elems[self.n_elems..self.n_elems + n].copy_from_slice(&self.build[from..self.top]);
        self.starts[id as usize] = self.n_elems as u32;
        self.n_elems += n;
        self.top = from;
        Ok(())
    }

    fn parse(&mut self) -> Result<()> {
        if core::str::from_utf8(self.src).is_err() {
            return Err(self.err("the grammar is not UTF-8"));
        }
        self.space(true);
        while self.peek() != 0 {
            self.rule()?;
        }
        Ok(())
    }

    fn rule(&mut self) -> Result<()> {
        let (off, len) = self.name()?;
        self.space(false);
        let id = self.symbol(off, len)?;
        if !(self.peek() == b':' && self.at(1) == b':' && self.at(2) == b'=') {
            return Err(self.err("expecting ::="));
        }
        self.pos += 3;
        self.space(true);
        self.alternates(id, false)?;
        match self.peek() {
            b'\r' => self.pos += if self.at(1) == b'\n' { 2 } else { 1 },
            b'\n' => self.pos += 1,
            0 => {}
            _ => return Err(self.err("expecting a newline or the end")),
        }
        self.space(true);
        Ok(())
    }

    fn alternates(&mut self, id: u32, nested: bool) -> Result<()> {
        let from = self.top;
        self.sequence(nested)?;
        while self.peek() == b'|' {
            self.push(Elem::new(Kind::Alt, 0))?;
            self.pos += 1;
            self.space(true);
            self.sequence(nested)?;
        }
        self.push(Elem::new(Kind::End, 0))?;
        self.finish_rule(id, from)
    }

    fn char_at(&mut self) -> Result<u32> {
        let c = self.peek();
        if c == 0 && self.pos >= self.src.len() {
            return Err(self.err("unexpected end of the grammar"));
        }
        if c == b'\\' {
            let e = self.at(1);
            self.pos += 2;
            let hex = |p: &mut Self, n: usize| -> Result<u32> {
                let mut v = 0u32;
                for _ in 0..n {
                    let d = (p.peek() as char)
                        .to_digit(16)
                        .ok_or_else(|| p.err("expecting hex digits after \\x, \\u or \\U"))?;
                    v = v.wrapping_mul(16) | d;
                    p.pos += 1;
                }
                Ok(v)
            };
            return match e {
                b'x' => hex(self, 2),
                b'u' => hex(self, 4),
                b'U' => hex(self, 8),
                b't' => Ok('\t' as u32),
                b'r' => Ok('\r' as u32),
                b'n' => Ok('\n' as u32),
                b'\\' | b'"' | b'[' | b']' | b'-' => Ok(e as u32),
                _ => {
                    self.pos -= 2;
                    Err(self.err("unknown escape"))
                }
            };
        }
        // One UTF-8 character (the source is valid UTF-8).
        let rest = core::str::from_utf8(&self.src[self.pos..]).unwrap_or("");
        let ch = rest
            .chars()
            .next()
            .ok_or_else(|| self.err("unexpected end of the grammar"))?;
        self.pos += ch.len_utf8();
        Ok(ch as u32)
    }

    fn sequence(&mut self, nested: bool) -> Result<()> {
        let mut last_start = self.top;
        // Rules the last item stands for (llama.cpp's bound on nested repetitions).
        let mut n_prev: u64 = 1;
        loop {
            let c = self.peek();
            if c == b'"' {
                let open = self.pos;
                self.pos += 1;
                last_start = self.top;
                n_prev = 1;
                while self.peek() != b'"' {
                    if self.pos >= self.src.len() {
                        self.pos = open;
                        return Err(self.err("unterminated string literal"));
                    }
                    let ch = self.char_at()?;
                    self.push(Elem::new(Kind::Char, ch))?;
                }
                self.pos += 1;
                self.space(nested);
            } else if c == b'[' {
                let open = self.pos;
                self.pos += 1;
                let mut kind = Kind::Char;
                if self.peek() == b'^' {
                    self.pos += 1;
                    kind = Kind::CharNot;
                }
                last_start = self.top;
                n_prev = 1;
                while self.peek() != b']' {
                    if self.pos >= self.src.len() {
                        self.pos = open;
                        return Err(self.err("unterminated character class"));
                    }
                    let ch = self.char_at()?;
                    let k = if self.top > last_start {
                        Kind::CharAlt
                    } else {
                        kind
                    };
                    self.push(Elem::new(k, ch))?;
                    if self.peek() == b'-' && self.at(1) != b']' {
                        if self.pos + 1 >= self.src.len() {
                            self.pos = open;
                            return Err(self.err("unterminated character class"));
                        }
                        self.pos += 1;
                        let hi = self.char_at()?;
                        self.push(Elem::new(Kind::CharRngUpper, hi))?;
                    }
                }
                self.pos += 1;
                self.space(nested);
            } else if c == b'<' || c == b'!' {
                let kind = if c == b'!' {
                    self.pos += 1;
                    Kind::TokenNot
                } else {
                    Kind::Token
                };
                let id = self.token_ref()?;
                last_start = self.top;
                n_prev = 1;
                self.push(Elem::new(kind, id))?;
                self.space(nested);
            } else if Self::word_char(c) {
                let (off, len) = self.name()?;
                let id = self.symbol(off, len)?;
                self.space(nested);
                last_start = self.top;
                n_prev = 1;
                self.push(Elem::new(Kind::RuleRef, id))?;
            } else if c == b'(' {
                if self.depth == MAX_NESTING {
                    return Err(self.err("parentheses nested too deeply"));
                }
                self.pos += 1;
                self.space(true);
                let rules_before = self.n_rules;
                let sub = self.new_rule(None)?;
                self.depth += 1;
                self.alternates(sub, true)?;
                self.depth -= 1;
                n_prev = ((self.n_rules - rules_before) as u64).max(1);
                last_start = self.top;
                self.push(Elem::new(Kind::RuleRef, sub))?;
                if self.peek() != b')' {
                    return Err(self.err("expecting ')'"));
                }
                self.pos += 1;
                self.space(nested);
            } else if c == b'.' {
                last_start = self.top;
                n_prev = 1;
                self.push(Elem::new(Kind::CharAny, 0))?;
                self.pos += 1;
                self.space(nested);
            } else if c == b'*' || c == b'+' || c == b'?' {
                self.pos += 1;
                self.space(nested);
                let (min, max) = match c {
                    b'*' => (0, None),
                    b'+' => (1, None),
                    _ => (0, Some(1)),
                };
                self.repeat(last_start, min, max, &mut n_prev)?;
            } else if c == b'{' {
                self.pos += 1;
                self.space(nested);
                let min = self.int()?;
                self.space(nested);
                let max = if self.peek() == b'}' {
                    Some(min)
                } else if self.peek() == b',' {
                    self.pos += 1;
                    self.space(nested);
                    let max = if self.peek().is_ascii_digit() {
                        let m = self.int()?;
                        self.space(nested);
                        Some(m)
                    } else {
                        None
                    };
                    if self.peek() != b'}' {
                        return Err(self.err("expecting '}'"));
                    }
                    max
                } else {
                    return Err(self.err("expecting ',' or '}'"));
                };
                self.pos += 1;
                self.space(nested);
                if min > MAX_REPETITION || max.is_some_and(|m| m > MAX_REPETITION) {
                    return Err(self.err("a repetition count above 2000"));
                }
                if max.is_some_and(|m| m < min) {
                    return Err(self.err("a repetition whose maximum is below its minimum"));
                }
                self.repeat(
                    last_start,
                    min as usize,
                    max.map(|m| m as usize),
                    &mut n_prev,
                )?;
            } else {
                return Ok(());
            }
        }
    }

    /// `<[id]>` or `<text>`: the token's id.
    fn token_ref(&mut self) -> Result<u32> {
        if self.peek() != b'<' {
            return Err(self.err("expecting '<' after '!'"));
        }
        let open = self.pos;
        if self.at(1) == b'[' {
            self.pos += 2;
            let id = self.int()?;
            if self.peek() != b']' || self.at(1) != b'>' {
                return Err(self.err("expecting ']>'"));
            }
            if id > u32::MAX as u64 {
                self.pos = open;
                return Err(self.err("a token id above 4294967295"));
            }
            self.pos += 2;
            return Ok(id as u32);
        }
        let Some(len) = self.src[open..].iter().position(|&b| b == b'>') else {
            return Err(self.err("expecting '>' to close the token"));
        };
        let text = core::str::from_utf8(&self.src[open..open + len + 1]).unwrap_or("");
        match (self.token)(text) {
            Ok(id) => {
                self.pos = open + len + 1;
                Ok(id)
            }
            Err(why) => {
                let src = core::str::from_utf8(self.src).unwrap_or("");
                Err(grammar_error(src, open, why, text))
            }
        }
    }

    fn int(&mut self) -> Result<u64> {
        let start = self.pos;
        let mut v = 0u64;
        while self.peek().is_ascii_digit() {
            v = v
                .saturating_mul(10)
                .saturating_add((self.peek() - b'0') as u64);
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.err("expecting an integer"));
        }
        Ok(v)
    }

    /// Rewrites the symbol at `build[start..top]` as `min` copies followed by optional ones
    /// (llama.cpp's rewrite; `max` None: unbounded).
    fn repeat(
        &mut self,
        start: usize,
        min: usize,
        max: Option<usize>,
        n_prev: &mut u64,
    ) -> Result<()> {
        let n = self.top - start;
        if n == 0 {
            return Err(self.err("expecting an item before */+/?/{"));
        }
        let total = match max {
            Some(m) if m > 0 => m as u64,
            _ if min > 0 => min as u64,
            _ => 1,
        };
        if n_prev.saturating_mul(total) > MAX_REPETITION {
            return Err(self.err("nested repetitions would make more than 2000 rules"));
        }
        *n_prev *= total;
        // The symbol stays at build[start..start+n] as the template; copies go after it.
        // Build the optional tail rules above the current top, using the template.
        let n_opt = match max {
            None => 1,
            Some(m) => m - min,
        };
        let mut last_rule = 0u32;
        for i in 0..n_opt {
            let id = self.new_rule(None)?;
            let from = self.top;
            for k in 0..n {
                let e = self.build[start + k];
                self.push(e)?;
            }
            if max.is_none() {
                self.push(Elem::new(Kind::RuleRef, id))?;
            } else if i > 0 {
                self.push(Elem::new(Kind::RuleRef, last_rule))?;
            }
            self.push(Elem::new(Kind::Alt, 0))?;
            self.push(Elem::new(Kind::End, 0))?;
            self.finish_rule(id, from)?;
            last_rule = id;
        }
        // The sequence: min copies of the symbol (the template is the first), then the tail.
        if min == 0 {
            self.top = start;
        } else {
            for _ in 1..min {
                for k in 0..n {
                    let e = self.build[start + k];
                    self.push(e)?;
                }
            }
        }
        if n_opt > 0 {
            self.push(Elem::new(Kind::RuleRef, last_rule))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
