//! JSON Schema → grammar against llama.cpp's own converter tests (`tests/test-json-schema-to-
//! grammar.cpp` of the sdist, read as data): for each case llama.cpp converts, ember's grammar
//! and llama.cpp's expected grammar must accept the same JSON texts. Both are compiled by
//! ember's GBNF compiler; sentences are drawn from each by a random walk of its matcher, and
//! every one that is valid JSON must be accepted by the other grammar. Cases llama.cpp refuses
//! must be refused; cases that use keywords ember refuses (`pattern`, `minimum`/`maximum`)
//! must be refused by name, and are counted.

use ember_runtime::arena::Arena;
use ember_runtime::grammar::{gbnf_from_schema, Grammar, Matcher, MatcherLimits, OwnedGrammar};

/// One case of llama.cpp's file.
struct Case {
    success: bool,
    name: String,
    schema: String,
    grammar: String,
}

/// The C++ string literal (plain or raw `R"""(...)"""`) at the start of `s`, and what follows.
fn literal(s: &str) -> Option<(String, &str)> {
    let s = s.trim_start();
    if let Some(rest) = s.strip_prefix("R\"\"\"(") {
        let end = rest.find(")\"\"\"")?;
        return Some((rest[..end].to_string(), &rest[end + 4..]));
    }
    let rest = s.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = rest.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &rest[i + 1..])),
            '\\' => {
                let (_, e) = chars.next()?;
                out.push(match e {
                    'n' => '\n',
                    't' => '\t',
                    other => other,
                });
            }
            c => out.push(c),
        }
    }
    None
}

fn cases(src: &str) -> Vec<Case> {
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(at) = rest.find("test({") {
        rest = &rest[at + 6..];
        let body = rest.trim_start();
        let success = if let Some(b) = body.strip_prefix("SUCCESS,") {
            rest = b;
            true
        } else if let Some(b) = body.strip_prefix("FAILURE,") {
            rest = b;
            false
        } else {
            continue;
        };
        let Some((name, r)) = literal(rest) else {
            continue;
        };
        let Some((schema, r)) = literal(r.trim_start().trim_start_matches(',')) else {
            continue;
        };
        let Some((grammar, r)) = literal(r.trim_start().trim_start_matches(',')) else {
            continue;
        };
        rest = r;
        out.push(Case {
            success,
            name,
            schema,
            grammar,
        });
    }
    out
}

/// A small deterministic generator.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Characters the random walks may write.
fn alphabet() -> Vec<char> {
    let mut a: Vec<char> = (0x20u8..0x7f).map(char::from).collect();
    a.extend(['\n', '\t', 'é', '中']);
    a
}

/// Up to `n` sentences of `g` that are valid JSON, by random walks.
fn samples(g: &OwnedGrammar, n: usize, rng: &mut Rng) -> Vec<String> {
    let limits = MatcherLimits::default();
    let mut mem = vec![0u8; Matcher::bytes_needed(&limits)];
    let mut arena = Arena::new(&mut mem);
    let mut m = Matcher::new(g.grammar(), &mut arena, &limits).expect("matcher");
    let abc = alphabet();
    let mut out = Vec::new();
    for _ in 0..40 * n {
        if out.len() == n {
            break;
        }
        m.reset().expect("reset");
        let mut text = String::new();
        loop {
            let len = text.chars().count();
            if m.is_complete() && (!m.can_continue() || rng.next() % 100 < 8 + len as u64) {
                if serde_json::from_str::<serde_json::Value>(&text).is_ok() {
                    out.push(text);
                }
                break;
            }
            if len > 160 {
                break;
            }
            let ok: Vec<char> = abc
                .iter()
                .copied()
                .filter(|&c| {
                    m.begin_trial();
                    let yes = m.accept_char(c as u32).unwrap_or(false);
                    m.end_trial();
                    yes
                })
                .collect();
            if ok.is_empty() {
                break;
            }
            // Closing characters are favoured as the text grows, so that walks end.
            let closing: Vec<char> = ok
                .iter()
                .copied()
                .filter(|c| matches!(c, '"' | '}' | ']'))
                .collect();
            let pick = if !closing.is_empty() && rng.next() % 100 < len as u64 {
                closing[(rng.next() % closing.len() as u64) as usize]
            } else {
                ok[(rng.next() % ok.len() as u64) as usize]
            };
            assert!(m.accept_char(pick as u32).expect("accept"));
            text.push(pick);
        }
    }
    out
}

fn accepts(g: &OwnedGrammar, text: &str) -> bool {
    let limits = MatcherLimits::default();
    let mut mem = vec![0u8; Matcher::bytes_needed(&limits)];
    let mut arena = Arena::new(&mut mem);
    let mut m = Matcher::new(g.grammar(), &mut arena, &limits).expect("matcher");
    m.accept_bytes(text.as_bytes()).unwrap_or(false) && m.is_complete()
}

#[test]
fn schemas_give_the_languages_of_llama_cpps_converter() {
    let src = ember_tests::llama_cpp_source().join("tests/test-json-schema-to-grammar.cpp");
    let text = std::fs::read_to_string(&src).expect("llama.cpp's converter tests");
    let all = cases(&text);
    assert!(all.len() >= 60, "{} cases read", all.len());
    // Cases whose expected grammar in llama.cpp's file is not the schema's language.
    let diverge = [(
        "optional props with empty name",
        "its expected grammar names the object root0 and makes root the integer of the \"\" \
         property (a name clash in llama.cpp's converter)",
    )];
    let mut rng = Rng(0x5eed_1234_5678_9abc);
    let (mut same, mut refused_ok, mut unsupported) = (0, 0, Vec::new());
    for c in &all {
        let ours = gbnf_from_schema(&c.schema);
        if !c.success {
            assert!(
                ours.is_err(),
                "{}: llama.cpp refuses it, ember gave\n{:?}",
                c.name,
                ours
            );
            refused_ok += 1;
            continue;
        }
        let ours = match ours {
            Ok(g) => g,
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    ["pattern", "minimum", "maximum", "exclusiveM"]
                        .iter()
                        .any(|k| msg.contains(k)),
                    "{}: refused for another reason: {msg}",
                    c.name
                );
                unsupported.push(c.name.clone());
                continue;
            }
        };
        if let Some((_, why)) = diverge.iter().find(|(n, _)| *n == c.name) {
            eprintln!("json schema: '{}' not compared: {why}", c.name);
            continue;
        }
        let mine = Grammar::compile_owned(&ours).unwrap_or_else(|e| {
            panic!("{}: ember's grammar does not compile: {e}\n{ours}", c.name)
        });
        let theirs = Grammar::compile_owned(&c.grammar)
            .unwrap_or_else(|e| panic!("{}: llama.cpp's grammar does not compile: {e}", c.name));
        let from_theirs = samples(&theirs, 25, &mut rng);
        let from_mine = samples(&mine, 25, &mut rng);
        assert!(
            from_theirs.len() >= 5 && from_mine.len() >= 5,
            "{}: too few samples ({} / {})",
            c.name,
            from_theirs.len(),
            from_mine.len()
        );
        for t in &from_theirs {
            assert!(
                accepts(&mine, t),
                "{}: ember refuses {t:?} (llama.cpp's sentence)\n{ours}",
                c.name
            );
        }
        for t in &from_mine {
            assert!(
                accepts(&theirs, t),
                "{}: llama.cpp refuses {t:?} (ember's sentence)\n{ours}",
                c.name
            );
        }
        same += 1;
    }
    eprintln!(
        "json schema: {same} cases with the same language, {refused_ok} refused as llama.cpp refuses them, {} unsupported ({})",
        unsupported.len(),
        unsupported.join(", ")
    );
    assert!(same >= 30, "only {same} cases compared");
}
