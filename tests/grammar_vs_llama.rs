//! ember's GBNF grammars against llama.cpp's own suite, read from the `llama-cpp-python` sdist
//! (`tools/fetch-llama-cpp-source.sh`): every `grammars/*.gbnf` compiles; every `test_grammar`
//! case of `tests/test-grammar-integration.cpp` (the grammar, the strings it must match, the
//! strings it must not) gives llama.cpp's verdicts; the grammars its `test_failure_*` functions
//! and `test-grammar-parser.cpp`'s `verify_failure` cases refuse are refused. Strings with
//! tokens in them (`token(10) + "text"`) are fed as llama.cpp's test feeds them: the token by its
//! id with the text `<[10]>`, each character of the text as a token of id 0.

use ember_runtime::arena::Arena;
use ember_runtime::grammar::{Grammar, Matcher, MatcherLimits};
use ember_tests::llama_cpp_source;

/// A cursor over C++ source that reads the literals of a call.
struct Cpp<'a> {
    s: &'a [u8],
    p: usize,
}

/// One operand of a `+` expression: text or a `token(N)` call.
enum Piece {
    Text(Vec<u8>),
    Token(u32),
}

impl Cpp<'_> {
    fn skip(&mut self) {
        loop {
            while self.p < self.s.len() && self.s[self.p].is_ascii_whitespace() {
                self.p += 1;
            }
            if self.s[self.p..].starts_with(b"//") {
                while self.p < self.s.len() && self.s[self.p] != b'\n' {
                    self.p += 1;
                }
            } else if self.s[self.p..].starts_with(b"/*") {
                let end = self.s[self.p..]
                    .windows(2)
                    .position(|w| w == b"*/")
                    .unwrap();
                self.p += end + 2;
            } else {
                return;
            }
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.skip();
        if self.s.get(self.p) == Some(&c) {
            self.p += 1;
            true
        } else {
            false
        }
    }

    /// A string literal (raw or escaped), if one is next.
    fn literal(&mut self) -> Option<Vec<u8>> {
        self.skip();
        if self.s[self.p..].starts_with(b"R\"") {
            let open = self.p + 2;
            let paren = open + self.s[open..].iter().position(|&c| c == b'(').unwrap();
            let delim = &self.s[open..paren];
            let mut close = Vec::from(&b")"[..]);
            close.extend_from_slice(delim);
            close.push(b'"');
            let body = paren + 1;
            let end = body
                + self.s[body..]
                    .windows(close.len())
                    .position(|w| w == close)
                    .unwrap();
            self.p = end + close.len();
            return Some(self.s[body..end].to_vec());
        }
        if self.s.get(self.p) != Some(&b'"') {
            return None;
        }
        self.p += 1;
        let mut out = Vec::new();
        while self.s[self.p] != b'"' {
            if self.s[self.p] == b'\\' {
                let e = self.s[self.p + 1];
                self.p += 2;
                match e {
                    b'n' => out.push(b'\n'),
                    b't' => out.push(b'\t'),
                    b'r' => out.push(b'\r'),
                    b'0' => out.push(0),
                    b'x' => {
                        let h = std::str::from_utf8(&self.s[self.p..self.p + 2]).unwrap();
                        out.push(u8::from_str_radix(h, 16).unwrap());
                        self.p += 2;
                    }
                    other => out.push(other),
                }
            } else {
                out.push(self.s[self.p]);
                self.p += 1;
            }
        }
        self.p += 1;
        Some(out)
    }

    /// `a + b + ...` where each operand is a literal (adjacent literals concatenate) or a
    /// `token(N)` call.
    fn expr(&mut self) -> Option<Vec<Piece>> {
        let mut out = Vec::new();
        loop {
            if let Some(l) = self.literal() {
                let mut text = l;
                while let Some(l) = self.literal() {
                    text.extend(l);
                }
                out.push(Piece::Text(text));
            } else {
                self.skip();
                if !self.s[self.p..].starts_with(b"token(") {
                    return None;
                }
                self.p += 6;
                let close = self.p + self.s[self.p..].iter().position(|&c| c == b')')?;
                let id = std::str::from_utf8(&self.s[self.p..close]).ok()?.trim();
                out.push(Piece::Token(id.parse().ok()?));
                self.p = close + 1;
            }
            if !self.eat(b'+') {
                break;
            }
        }
        Some(out)
    }

    /// `{ e, e, ... }`.
    fn list(&mut self) -> Vec<Vec<Piece>> {
        assert!(self.eat(b'{'), "expected a list at byte {}", self.p);
        let mut v = Vec::new();
        loop {
            if self.eat(b'}') {
                return v;
            }
            v.push(self.expr().expect("a list element"));
            self.eat(b',');
        }
    }
}

fn matches(g: &Grammar<'_>, pieces: &[Piece]) -> bool {
    let limits = MatcherLimits {
        stacks: 4096,
        depth: 256,
    };
    let mut mem = vec![0u8; Matcher::bytes_needed(&limits)];
    let mut arena = Arena::new(&mut mem);
    let mut m = Matcher::new(*g, &mut arena, &limits).expect("matcher");
    let tokens = pieces.iter().any(|p| matches!(p, Piece::Token(_)));
    for p in pieces {
        let ok = match p {
            // Text alone is fed as bytes (ember's own path, invalid UTF-8 refused); with tokens
            // around it, a character at a time as a token of id 0 (llama.cpp's test).
            Piece::Text(t) if !tokens => m.accept_bytes(t).expect("within the bounds"),
            Piece::Text(t) => String::from_utf8_lossy(t).chars().all(|c| {
                let mut b = [0u8; 4];
                m.accept_token(0, c.encode_utf8(&mut b).as_bytes())
                    .expect("within the bounds")
            }),
            Piece::Token(id) => m
                .accept_token(*id, format!("<[{id}]>").as_bytes())
                .expect("within the bounds"),
        };
        if !ok {
            return false;
        }
    }
    m.is_complete()
}

fn describe(pieces: &[Piece]) -> String {
    pieces
        .iter()
        .map(|p| match p {
            Piece::Text(t) => format!("{:?}", text(t)),
            Piece::Token(id) => format!("token({id})"),
        })
        .collect::<Vec<_>>()
        .join(" + ")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn llama_cpp_grammar_suite() {
    let src = llama_cpp_source();
    // Every grammar file compiles.
    let mut files = 0;
    for e in std::fs::read_dir(src.join("grammars")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "gbnf") {
            let g = std::fs::read_to_string(&p).unwrap();
            Grammar::compile_owned(&g).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            files += 1;
        }
    }
    assert!(files >= 8, "{files} grammar files");

    // The integration cases.
    let cpp = std::fs::read(src.join("tests/test-grammar-integration.cpp")).unwrap();
    let mut c = Cpp { s: &cpp, p: 0 };
    let (mut cases, mut strings, mut with_tokens) = (0, 0, 0);
    let mut failures = Vec::new();
    while let Some(at) = c.s[c.p..].windows(13).position(|w| w == b"test_grammar(") {
        c.p += at + 13;
        let Some(desc) = c.literal() else {
            continue; // the definition of test_grammar itself
        };
        assert!(c.eat(b','));
        let Some(grammar) = c.literal() else {
            panic!("{}: grammar literal", text(&desc))
        };
        assert!(c.eat(b','));
        let pass = c.list();
        assert!(c.eat(b','));
        let fail = c.list();
        let grammar = text(&grammar);
        cases += 1;
        let g = Grammar::compile_owned(&grammar).unwrap_or_else(|e| panic!("{}: {e}", text(&desc)));
        for (want, list) in [(true, &pass), (false, &fail)] {
            for s in list.iter() {
                strings += 1;
                with_tokens += s.iter().any(|p| matches!(p, Piece::Token(_))) as usize;
                if matches(&g.grammar(), s) != want {
                    failures.push(format!(
                        "{}: {} should {}match",
                        text(&desc),
                        describe(s),
                        if want { "" } else { "not " }
                    ));
                }
            }
        }
    }
    // Grammars llama.cpp refuses.
    let mut refused = 0;
    let body = |name: &str| -> Vec<u8> {
        let start = cpp
            .windows(name.len())
            .position(|w| w == name.as_bytes())
            .unwrap();
        let end = start + cpp[start..].windows(2).position(|w| w == b"\n}").unwrap();
        cpp[start..end].to_vec()
    };
    for f in [
        "test_failure_missing_root()",
        "test_failure_missing_reference()",
        "test_failure_left_recursion()",
    ] {
        let b = body(f);
        let mut c = Cpp { s: &b, p: 0 };
        while let Some(at) = c.s[c.p..].windows(4).position(|w| w == b"R\"\"\"") {
            c.p += at;
            let g = text(&c.literal().unwrap());
            assert!(Grammar::compile_owned(&g).is_err(), "{f}: {g:?} compiles");
            refused += 1;
        }
    }
    let parser = std::fs::read(src.join("tests/test-grammar-parser.cpp")).unwrap();
    let mut c = Cpp { s: &parser, p: 0 };
    while let Some(at) = c.s[c.p..].windows(15).position(|w| w == b"verify_failure(") {
        c.p += at + 15;
        let Some(g) = c.literal() else { continue };
        let g = text(&g);
        assert!(
            Grammar::compile_owned(&g).is_err(),
            "verify_failure: {g:?} compiles"
        );
        refused += 1;
    }
    eprintln!("{files} grammar files compile; {cases} cases, {strings} strings checked ({with_tokens} with tokens); {refused} refused grammars refused");
    assert!(
        cases >= 10 && refused >= 10 && with_tokens >= 15,
        "{cases} cases, {refused} refusals, {with_tokens} strings with tokens"
    );
    assert!(
        failures.is_empty(),
        "{} differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
