//! The parser's rewrites and errors, and the matcher on small grammars.

use super::*;
use std::string::ToString;
use std::vec;

fn matches(src: &str, text: &str) -> bool {
    let g = Grammar::compile_owned(src).unwrap_or_else(|e| panic!("{src}: {e}"));
    let limits = MatcherLimits::default();
    let mut mem = vec![0u8; Matcher::bytes_needed(&limits)];
    let mut arena = Arena::new(&mut mem);
    let mut m = Matcher::new(g.grammar(), &mut arena, &limits).unwrap();
    m.accept_bytes(text.as_bytes()).unwrap() && m.is_complete()
}

fn error(src: &str) -> std::string::String {
    match Grammar::compile_owned(src) {
        Ok(_) => panic!("{src:?} compiles"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn literals_classes_groups_and_repetitions() {
    let g = r#"root ::= "a" [b-d]+ ("x" | "yz")? [^0-9]{2,3} "!""#;
    for ok in ["abxqq!", "acdyzqqq!", "abbqq!", "aczz!"] {
        assert!(matches(g, ok), "{ok}");
    }
    for bad in ["a!", "abx1q!", "abqqqqq!", "abxqq", "ab1qq!"] {
        assert!(!matches(g, bad), "{bad}");
    }
    // {m}, {m,}, {0}
    assert!(matches(r#"root ::= "ab"{3}"#, "ababab"));
    assert!(!matches(r#"root ::= "ab"{3}"#, "abab"));
    assert!(matches(r#"root ::= [a]{2,}"#, "aaaaa") && !matches(r#"root ::= [a]{2,}"#, "a"));
    assert!(matches(r#"root ::= "x" [a]{0} "y""#, "xy"));
    // Escapes, any character, UTF-8, comments and continuation lines.
    let g = "root ::= \"\\x41\\u00e9\\n\" . [\\]\\-] ( # comment\n \"ω\" |\n [α-γ]\n )";
    assert!(matches(g, "Aé\nZ]ω") && matches(g, "Aé\n日-β"));
    assert!(!matches(g, "Aé\nZ]δ"));
}

#[test]
fn recursion_and_nesting() {
    let g = "root ::= expr\nexpr ::= term (\"+\" term)*\nterm ::= [0-9]+ | \"(\" expr \")\"";
    for ok in ["1", "1+2", "(1+2)+3", "((((7))))"] {
        assert!(matches(g, ok), "{ok}");
    }
    for bad in ["", "1+", "(1", "1)"] {
        assert!(!matches(g, bad), "{bad}");
    }
}

#[test]
fn errors_name_the_line_and_column() {
    let e = error("root ::= \"a\"\nfoo ::= [a-z\n");
    assert!(
        e.contains("unterminated character class") && e.contains("line 2, column 9"),
        "{e}"
    );
    let e = error("root ::= a\n");
    assert!(e.contains("never defined") && e.contains(": a"), "{e}");
    let e = error("rot ::= \"a\"");
    assert!(e.contains("no 'root' rule"), "{e}");
    let e = error("root ::= \"a\" ) \"b\"");
    assert!(e.contains("line 1, column 14"), "{e}");
    let e = error("root ::= \"\\q\"");
    assert!(e.contains("unknown escape"), "{e}");
    let e = error("root ::= \"a\"{3,1}");
    assert!(e.contains("below its minimum"), "{e}");
    let e = error("root ::= \"a\"{2001}");
    assert!(e.contains("2000"), "{e}");
    let e = error("root ::= *");
    assert!(e.contains("expecting an item"), "{e}");
    let e = error("root ::= \"a\" <|im_end|>");
    assert!(
        e.contains("needs the model's vocabulary") && e.contains("column 14: <|im_end|>"),
        "{e}"
    );
    for (g, want) in [
        ("root ::= <[12", "expecting ']>'"),
        ("root ::= <[]>", "expecting an integer"),
        ("root ::= <[4294967296]>", "above 4294967295"),
        ("root ::= !\"a\"", "expecting '<'"),
        ("root ::= <abc", "expecting '>'"),
    ] {
        let e = error(g);
        assert!(e.contains(want), "{g}: {e}");
    }
    let e = error("root ::= \"a\"\nroot ::= \"b\"");
    assert!(e.contains("defined twice"), "{e}");
}

/// Feeds (token id, text) pairs; true when every one is taken and the grammar is complete.
fn takes_tokens(g: &Grammar<'_>, toks: &[(u32, &str)]) -> bool {
    let limits = MatcherLimits::default();
    let mut mem = vec![0u8; Matcher::bytes_needed(&limits)];
    let mut arena = Arena::new(&mut mem);
    let mut m = Matcher::new(*g, &mut arena, &limits).unwrap();
    toks.iter()
        .all(|&(id, t)| m.accept_token(id, t.as_bytes()).unwrap())
        && m.is_complete()
}

#[test]
fn token_references_take_whole_tokens_by_id() {
    // As llama.cpp compiles `<[1000]> !<[1001]> <[1001]>`.
    let g = Grammar::compile_owned("root ::= <[1000]> !<[1001]> <[1001]>").unwrap();
    let g = g.grammar();
    let kinds: std::vec::Vec<_> = (0..g.elem_count() as u32)
        .map(|p| (g.elem(p).kind(), g.elem(p).value))
        .collect();
    assert_eq!(
        kinds,
        [
            (Kind::Token, 1000),
            (Kind::TokenNot, 1001),
            (Kind::Token, 1001),
            (Kind::End, 0)
        ]
    );
    assert_eq!(g.max_token_ref(), Some(1001));
    assert!(takes_tokens(&g, &[(1000, ""), (7, "x"), (1001, "")]));
    assert!(!takes_tokens(&g, &[(1000, ""), (1001, ""), (1001, "")]));
    assert!(!takes_tokens(&g, &[(1000, ""), (7, "x")]));
    // A reference does not look at the text, and text does not stand for a reference.
    assert!(!takes_tokens(&g, &[(1000, ""), (7, "x"), (5, "<[1001]>")]));
    // Text and references mixed; a control token with no text passes only a reference.
    let g = Grammar::compile_owned("root ::= \"a\" <[3]> [0-9]+ | \"ab\"").unwrap();
    let g = g.grammar();
    assert!(takes_tokens(&g, &[(9, "a"), (3, ""), (4, "12")]));
    assert!(takes_tokens(&g, &[(9, "a"), (4, "b")]));
    assert!(!takes_tokens(&g, &[(9, "a"), (2, ""), (4, "12")]));
    assert!(!takes_tokens(&g, &[(3, ""), (4, "12")]));
    // Both ways at once: token 3 is also the text "b".
    assert!(takes_tokens(&g, &[(9, "a"), (3, "b")]));
    assert!(takes_tokens(&g, &[(9, "a"), (3, "b"), (4, "1")]));
    // Never in the middle of a character.
    let g = Grammar::compile_owned("root ::= [é] | [\\xC3] <[5]>").unwrap();
    let limits = MatcherLimits::default();
    let mut mem = vec![0u8; Matcher::bytes_needed(&limits)];
    let mut arena = Arena::new(&mut mem);
    let mut m = Matcher::new(g.grammar(), &mut arena, &limits).unwrap();
    assert!(m.accept_token(1, &[0xC3]).unwrap());
    assert!(!m.token_allowed(5));
    // Names are looked up, with the angle brackets.
    let look = |t: &str| match t {
        "<|im_end|>" => Ok(2),
        "<think>" => Ok(40),
        _ => Err("unknown"),
    };
    let g = Grammar::compile_owned_with_tokens("root ::= <think> !<|im_end|>* <|im_end|>", &look)
        .unwrap();
    let g = g.grammar();
    assert!(takes_tokens(
        &g,
        &[(40, "<think>"), (8, "hm"), (9, "."), (2, "")]
    ));
    assert!(!takes_tokens(&g, &[(41, "<think>"), (2, "")]));
    let e = Grammar::compile_owned_with_tokens("root ::= <nope>", &look)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("unknown") && e.contains("<nope>"), "{e}");
}

#[test]
fn left_recursion_is_refused() {
    for src in [
        "root ::= root \"a\" | \"b\"",
        "root ::= a\na ::= b \"x\"\nb ::= \"c\"? a",
        "root ::= (root)*",
        "root ::= x\nx ::= \"y\"? x",
    ] {
        let e = error(src);
        assert!(e.contains("left recursion"), "{src}: {e}");
    }
    // Right recursion is fine.
    assert!(matches("root ::= \"a\" root | \"b\"", "aaab"));
}

#[test]
fn bounds_are_errors_not_hangs() {
    // Deep nesting of parentheses.
    let deep = std::format!("root ::= {}\"a\"{}", "(".repeat(100), ")".repeat(100));
    assert!(error(&deep).contains("nested too deeply"));
    // A text that nests deeper than the matcher's stacks.
    let g = Grammar::compile_owned("root ::= \"(\" root \")\" | \"x\"").unwrap();
    let limits = MatcherLimits {
        stacks: 16,
        depth: 8,
    };
    let mut mem = vec![0u8; Matcher::bytes_needed(&limits)];
    let mut arena = Arena::new(&mut mem);
    let mut m = Matcher::new(g.grammar(), &mut arena, &limits).unwrap();
    let r = m.accept_bytes(&[b'('; 64]);
    assert!(matches!(r, Err(Error::Capacity { .. })), "{r:?}");
    // Exploding ambiguity.
    let g = Grammar::compile_owned("root ::= (\"a\" | \"a\" \"a\")*").unwrap();
    let limits = MatcherLimits {
        stacks: 4,
        depth: 16,
    };
    let mut mem = vec![0u8; Matcher::bytes_needed(&limits)];
    let mut arena = Arena::new(&mut mem);
    let r = Matcher::new(g.grammar(), &mut arena, &limits).and_then(|mut m| {
        for _ in 0..64 {
            m.accept_bytes(b"a")?;
        }
        Ok(())
    });
    assert!(matches!(r, Err(Error::Capacity { .. })), "{:?}", r.err());
}

#[test]
fn utf8_split_across_calls_and_invalid_bytes() {
    let g = Grammar::compile_owned("root ::= \"é\" [a-z]").unwrap();
    let limits = MatcherLimits::default();
    let mut mem = vec![0u8; Matcher::bytes_needed(&limits)];
    let mut arena = Arena::new(&mut mem);
    let mut m = Matcher::new(g.grammar(), &mut arena, &limits).unwrap();
    assert!(m.accept_bytes(&[0xC3]).unwrap());
    assert!(!m.is_complete());
    assert!(m.accept_bytes(&[0xA9, b'q']).unwrap());
    assert!(m.is_complete());
    m.reset().unwrap();
    // A lead byte of a character the grammar cannot take here is refused at once.
    assert!(!m.accept_bytes(&[0xE2]).unwrap());
    m.reset().unwrap();
    assert!(!m.accept_bytes(&[0xFF]).unwrap());
    m.reset().unwrap();
    assert!(!m.accept_bytes(b"e").unwrap());
}

#[test]
fn the_json_grammar_takes_json_and_nothing_else() {
    for ok in [
        r#"{"a": [1, 2.5, -0.5e10, true, false, null, "x\n\u00e9"], "b": {}}"#,
        "[]",
        "\"plain\"",
        "0",
        "{\"k\":\n  [ ]}",
    ] {
        assert!(matches(JSON, ok), "{ok}");
    }
    for bad in [
        "{",
        "{\"a\":}",
        "[1,]",
        "01",
        "'x'",
        "{\"a\" 1}",
        "\"tab\there\"",
        "nul",
    ] {
        assert!(!matches(JSON, bad), "{bad}");
    }
}
