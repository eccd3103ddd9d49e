//! The model's chat template rendered by ember (minijinja) against Python jinja2 renderings made
//! the way transformers' apply_chat_template makes them (fixtures/chat/make_chat_fixtures.py),
//! and hostile templates bounded.

use ember_runtime::chat::{ChatTemplate, Message};
use ember_runtime::gguf::{keys, Gguf};
use ember_tests::{fixture, fixture_json, model_bytes};

#[test]
fn renders_exactly_as_jinja2() {
    let g = Gguf::parse(model_bytes()).expect("model");
    let src = g
        .get_str(keys::CHAT_TEMPLATE)
        .expect("key")
        .expect("the model has a template");
    let committed =
        std::fs::read_to_string(fixture("chat/smollm2-135m-instruct.jinja")).expect("fixture");
    assert_eq!(src, committed, "the fixture's template is the model's");
    let t = ChatTemplate::new(Some(src), "<|im_start|>", "<|im_end|>").expect("compiles");
    let fx = fixture_json("chat/expected.json");
    let cases = fx["cases"].as_array().expect("cases");
    assert!(cases.len() >= 20);
    for c in cases {
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
        let got = t.render(&messages, gen).expect("renders");
        assert_eq!(got, c["rendered"].as_str().unwrap(), "{msgs:?} gen={gen}");
    }
}

#[test]
fn hostile_templates_are_bounded() {
    let user = [Message {
        role: "user",
        content: "x",
    }];
    // Endless work runs out of fuel.
    let t = ChatTemplate::new(
        Some("{% for i in range(100000000) %}{{ i }}{% endfor %}"),
        "",
        "",
    )
    .unwrap();
    assert!(t.render(&user, true).is_err());
    // Output that doubles in size: refused, not an out-of-memory.
    let t = ChatTemplate::new(
        Some("{% set s = namespace(v='ab') %}{% for i in range(40) %}{% set s.v = s.v ~ s.v %}{% endfor %}{{ s.v }}"),
        "",
        "",
    )
    .unwrap();
    assert!(t.render(&user, true).is_err());
    // A string that would be 100 MB (minijinja's own cap) never reaches the caller.
    let t = ChatTemplate::new(Some("{{ 'x' * 100000000 }}"), "", "").unwrap();
    assert!(t.render(&user, true).is_err());
    // raise_exception and broken syntax are errors with messages.
    let t = ChatTemplate::new(Some("{{ raise_exception('no system role') }}"), "", "").unwrap();
    assert!(t.render(&user, true).is_err());
    assert!(ChatTemplate::new(Some("{% for %}"), "", "").is_err());
    // No template: ChatML.
    let t = ChatTemplate::new(None, "", "").unwrap();
    assert_eq!(
        t.render(&user, true).unwrap(),
        "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n"
    );
}
