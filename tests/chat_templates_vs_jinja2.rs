//! Every chat template of llama.cpp's suite (`models/templates/*.jinja`, read from the sdist)
//! rendered by ember against Python jinja2 as transformers calls it
//! (`fixtures/chat-templates/make_template_fixtures.py`): multi-turn conversations with a system
//! message, with and without the generation prompt. Where jinja2 renders, ember must give the
//! same text; where jinja2 refuses (a template that rejects a system message, say), ember must
//! refuse too, with an error.

use ember_runtime::chat::{ChatTemplate, Message};
use ember_tests::{fixture_json, llama_cpp_source};

#[test]
fn every_llama_cpp_template_renders_as_jinja2() {
    let fx = fixture_json("chat-templates/expected.json");
    let dir = llama_cpp_source().join("models").join("templates");
    let templates = fx["templates"].as_object().expect("templates");
    assert!(
        templates.len() >= 60,
        "the suite has {} templates",
        templates.len()
    );
    let date = fx["date"].as_str().unwrap();
    let (mut same, mut total, mut refused) = (0, 0, 0);
    let mut failures = Vec::new();
    for (name, t) in templates {
        let src = std::fs::read_to_string(dir.join(name)).expect("template");
        let Some(cases) = t["cases"].as_array() else {
            // jinja2 could not compile it: ember must refuse it too.
            assert!(
                ChatTemplate::new(Some(&src), "<s>", "</s>").is_err(),
                "{name} compiles"
            );
            continue;
        };
        let tmpl = match ChatTemplate::new(Some(&src), "<s>", "</s>") {
            Ok(t) => t.with_date(date).expect("date"),
            Err(e) => {
                failures.push(format!("{name}: does not compile: {e}"));
                total += cases.len();
                continue;
            }
        };
        for c in cases {
            total += 1;
            let msgs: Vec<(String, String)> = c["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    (
                        m["role"].as_str().unwrap().into(),
                        m["content"].as_str().unwrap().into(),
                    )
                })
                .collect();
            let messages: Vec<Message<'_>> = msgs
                .iter()
                .map(|(r, c)| Message {
                    role: r,
                    content: c,
                })
                .collect();
            let gen = c["add_generation_prompt"].as_bool().unwrap();
            let got = tmpl.render(&messages, gen);
            match (c["rendered"].as_str(), got) {
                (Some(want), Ok(got)) if got == want => same += 1,
                (Some(want), Ok(got)) => failures.push(format!(
                    "{name} (generation prompt {gen}, {} messages):\n  jinja2: {want:?}\n  ember:  {got:?}",
                    msgs.len()
                )),
                (Some(_), Err(e)) => failures.push(format!("{name}: ember refuses: {e}")),
                (None, Err(_)) => {
                    same += 1;
                    refused += 1;
                }
                (None, Ok(got)) => failures.push(format!(
                    "{name}: jinja2 refuses ({}) but ember renders {got:?}",
                    c["error"]
                )),
            }
        }
    }
    eprintln!("{same} of {total} renderings as jinja2 ({refused} refused by both)");
    assert!(
        failures.is_empty(),
        "{} differ:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
