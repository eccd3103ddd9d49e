//! The `ember` command end to end: chat against run --chat, and its error contract.

mod common;

use common::ember;
use std::io::Write;
use std::process::Stdio;

#[test]
fn first_chat_turn_equals_run_chat() {
    let q = "Name three colors.";
    let run = ember()
        .args(["run", "--chat", "-n", "24", "-t", "1", "-p", q])
        .output()
        .expect("ember run");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let out = chat(
        &["chat", "-n", "24", "-t", "1"],
        format!("{q}\n/quit\n").as_bytes(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first_turn = String::from_utf8_lossy(&out.stdout);
    let reply = first_turn.strip_suffix('\n').unwrap_or(&first_turn);
    assert_eq!(reply, String::from_utf8_lossy(&run.stdout));
    assert!(!reply.is_empty());
}

/// Runs `ember ARGS` with `input` on stdin (one line per chat turn).
fn chat(args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = ember()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ember chat");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_second_turn_reuses_the_cache_and_answers() {
    let out = chat(
        &["chat", "-n", "12", "-t", "1", "--system", "You are brief."],
        b"Hi!\nWhat did I just say?\n/reset\n/help\n/bogus\n",
    );
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 2, "two replies: {stdout:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("new conversation") && stderr.contains("unknown command"),
        "{stderr}"
    );
}

#[test]
fn errors_are_one_line_and_a_failure_status() {
    let cases: [&[&str]; 12] = [
        &["run", "-m", "/nonexistent/model.gguf", "-p", "hi"],
        &["run", "-p", ""],
        &["run", "--kernels", "no-such-set", "-p", "hi"],
        &["run", "--kernels", "+exact", "-p", "hi"],
        &["run", "-p", "hi", "-c", "0"],
        &["run", "-p", "hi", "-c", "8193"],
        &["run", "-p", "hi", "-c", "64", "--sinks", "64"],
        &["run", "-p", "hi", "--kv-type", "q4_0"],
        &["run", "-p", "hi", "--board", "pi-6"],
        &[
            "run",
            "-p",
            "hi",
            "--board",
            "pi-zero-2w",
            "-c",
            "8192",
            "--kv-type",
            "f32",
        ],
        &[
            "chat",
            "--board",
            "pi-zero-2w",
            "-c",
            "8192",
            "--kv-type",
            "f32",
        ],
        &["run", "-p", "hi", "--top-p", "0"],
    ];
    for args in cases {
        let out = ember().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("ember: error: "), "{args:?}: {err}");
        assert!(out.stdout.is_empty());
    }
    // Not a GGUF file.
    let dir = std::env::temp_dir().join(format!("ember-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.gguf");
    std::fs::write(&bad, b"definitely not a model").unwrap();
    let out = ember()
        .args(["inspect", "-m", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a GGUF file"));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn tokenize_prints_one_json_array() {
    let out = ember().args(["tokenize", "Hello world"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[19556,905]");
}

/// The stats line's figures: generated tokens and peak RSS in MiB.
fn run_stats(stderr: &str) -> (usize, f64) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("ember: prompt"))
        .unwrap_or_else(|| panic!("no stats line: {stderr}"));
    let generated = line
        .split("generated ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("generated count");
    let rss = line
        .split("peak RSS ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("peak RSS");
    (generated, rss)
}

#[test]
fn generation_goes_on_through_the_ring_in_constant_memory() {
    let run = |n: &str| {
        let out = ember()
            .args(["run", "-p", "Once upon a time", "--ctx", "256", "-n", n])
            .args(["--ignore-eos", "-t", "2", "--temp", "0.8", "--seed", "7"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            run_stats(&stderr),
        )
    };
    let (short_text, (short_n, short_rss)) = run("300");
    let (long_text, (long_n, long_rss)) = run("2560");
    assert_eq!((short_n, long_n), (300, 2560));
    // Same seed: the long run starts with the short one's text, then keeps writing.
    assert!(long_text.starts_with(&short_text));
    let tail = &long_text[long_text.len() * 9 / 10..];
    assert!(tail.trim().len() > 50, "text after ten wraps: {tail:?}");
    eprintln!("peak RSS: 300 tokens {short_rss} MiB, 2560 tokens {long_rss} MiB");
    assert!(
        (long_rss - short_rss).abs() <= 2.0,
        "peak RSS grew from {short_rss} to {long_rss} MiB"
    );
}

#[test]
fn kernels_exact_names_llama_cpps_order() {
    for (arg, want) in [("exact", "+exact"), ("scalar+exact", "scalar+exact")] {
        let out = ember()
            .args(["inspect", "--kernels", arg])
            .output()
            .unwrap();
        assert!(out.status.success(), "{arg}");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().find(|l| l.starts_with("kernels:")).unwrap();
        assert!(line.trim_end().ends_with(want), "{arg}: {line}");
    }
}

#[test]
fn inspect_prints_the_memory_plan_and_boards_refuse_what_does_not_fit() {
    let plan = |args: &[&str]| {
        let out = ember().arg("inspect").args(args).output().unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mib = |text: &str, what: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(what))
            .unwrap_or_else(|| panic!("no {what} line: {text}"));
        line.split_whitespace()
            .find_map(|w| w.parse().ok())
            .expect("a number")
    };
    let f16 = plan(&["--ctx", "4096"]);
    let q8 = plan(&["--ctx", "4096", "--kv-type", "q8_0"]);
    let f32 = plan(&["--ctx", "4096", "--kv-type", "f32"]);
    // 30 layers × 2 × 192 values per token: 90 MiB of f16 for 4096 tokens.
    let kv16 = mib(&f16, "KV cache");
    assert!((kv16 - 90.0).abs() < 0.5, "{f16}");
    assert!((mib(&f32, "KV cache") / kv16 - 2.0).abs() < 0.01);
    assert!((mib(&q8, "KV cache") / kv16 - 34.0 / 64.0).abs() < 0.01);
    assert!(f16.contains("mapped from the file"));
    // Every board's own profile fits it with the real model.
    for board in ["pi-zero-2w", "pi-3b", "pi-4", "pi-5"] {
        let p = plan(&["--board", board]);
        assert!(p.contains(&format!("board {board}")), "{p}");
        assert!(!p.contains("fails"), "{board}: {p}");
    }
    // Over budget: refused, saying what would fit; that suggestion then fits.
    let out = ember()
        .args([
            "run",
            "-p",
            "hi",
            "--board",
            "pi-zero-2w",
            "-c",
            "8192",
            "--kv-type",
            "f32",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("budget of 256 MiB") && err.contains("would fit"),
        "{err}"
    );
    let ctx: String = err
        .split("(-c ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .expect("a suggested context")
        .to_string();
    let p = plan(&["--board", "pi-zero-2w", "-c", &ctx, "--kv-type", "f32"]);
    assert!(!p.contains("fails"), "{p}");
}

#[test]
fn beam_search_of_width_one_is_greedy_and_chat_takes_beams() {
    let prompt = "<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\n";
    let run = |extra: &[&str]| {
        let out = ember()
            .args(["run", "-n", "20", "-t", "1", "-p", prompt])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let greedy = run(&[]);
    assert_eq!(run(&["--beam", "1"]), greedy);
    let beam = run(&["--beam", "3"]);
    assert!(!beam.is_empty());
    let out = ember()
        .args(["run", "-p", "hi", "--beam", "17"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "clap refuses a width over 16");

    let out = chat(
        &["chat", "-n", "12", "-t", "1", "--beam", "2"],
        b"Hi!\nWhat is 2+2?\n",
    );
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
}

#[test]
fn a_chat_longer_than_the_context_goes_on_through_the_ring() {
    // A 96-token context: the system prompt and the first turn already fill most of it. Each
    // reply ends at its first line break (so a reply is one line of stdout).
    let out = chat(
        &[
            "chat",
            "-c",
            "96",
            "-n",
            "24",
            "-t",
            "1",
            "--system",
            "You are brief.",
            "--stop",
            "\n",
        ],
        b"Tell me about the sea.\nAnd the mountains?\nAnd rivers?\nAnd deserts?\nThanks!\n",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 5, "five replies: {stdout:?}");
    assert!(!stderr.contains("no longer fits"), "{stderr}");
}

#[test]
fn grammars_keep_the_output_inside_them() {
    let chat = |q: &str| format!("<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n");
    let dir = std::env::temp_dir().join(format!("ember-grammar-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A closed choice: the whole output is one of the alternatives.
    let yn = dir.join("yn.gbnf");
    std::fs::write(&yn, "root ::= \"yes\" | \"no\"\n").unwrap();
    for q in ["Is the sky blue? Answer yes or no.", "Is fire cold?"] {
        let out = ember()
            .args(["run", "-n", "16", "--grammar"])
            .arg(&yn)
            .args(["-p", &chat(q)])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text == "yes" || text == "no", "{q}: {text:?}");
    }
    // --json: every output parses as JSON, with sampling too.
    for (q, extra) in [
        ("Describe a cat as a JSON object with name and age.", vec![]),
        ("List three colors.", vec!["--temp", "0.8", "--seed", "7"]),
        (
            "Give a JSON object for a light in the kitchen that is on.",
            vec!["--temp", "1.0", "--seed", "3"],
        ),
    ] {
        let out = ember()
            .args(["run", "-n", "64", "--json"])
            .args(&extra)
            .args(["-p", &chat(q)])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // Cut short by -n, the text is a prefix of JSON; otherwise it is JSON.
        let (generated, _) = run_stats(&String::from_utf8_lossy(&out.stderr));
        if generated < 64 {
            serde_json::from_str::<serde_json::Value>(&text)
                .unwrap_or_else(|e| panic!("{q}: {text:?} is not JSON: {e}"));
        }
    }
    // Token references: a control token (no text: only a reference reaches it), then text,
    // then any three tokens but <|endoftext|> (id 0) and end-of-generation.
    let toks = dir.join("tokens.gbnf");
    std::fs::write(&toks, "root ::= \"a\" <|im_start|> \"b\" (!<[0]>){3}\n").unwrap();
    let out = ember()
        .args(["run", "-n", "16", "--grammar"])
        .arg(&toks)
        .args(["-p", &chat("Hi")])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("a<|im_start|>b"), "{text:?}");
    assert_eq!(run_stats(&stderr).0, 6, "{stderr}");
    // A token the vocabulary lacks, or an id past it: one error line naming it.
    for (g, want) in [
        ("root ::= \"x\" <|nope|>\n", "column 14: <|nope|>"),
        (
            "root ::= <[99999]>\n",
            "<[99999]>, in a vocabulary of 49152 tokens",
        ),
    ] {
        std::fs::write(&toks, g).unwrap();
        let out = ember()
            .args(["run", "-p", "x", "--grammar"])
            .arg(&toks)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    // A broken grammar is one error line that names where.
    let bad = dir.join("bad.gbnf");
    std::fs::write(&bad, "root ::= \"a\"\nitem ::= [a-z\n").unwrap();
    let out = ember()
        .args(["run", "-p", "x", "--grammar"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unterminated character class") && err.contains("line 2"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn chat_with_tools_prints_calls_and_sends_results_back() {
    let dir = std::env::temp_dir().join(format!("ember-tools-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tools = dir.join("tools.json");
    std::fs::write(
        &tools,
        r#"[{"type": "function", "function": {"name": "set_light", "description": "Turn a room light on or off",
              "parameters": {"type": "object", "properties": {"room": {"enum": ["kitchen", "bedroom"]},
                             "on": {"type": "boolean"}}, "required": ["room", "on"]}}},
            {"type": "function", "function": {"name": "get_time", "description": "The current time"}}]"#,
    )
    .unwrap();
    // SmolLM2's own template (the generic format), then Qwen2.5's (<tool_call> JSON) on the
    // same weights.
    let qwen = std::fs::read_to_string(
        ember_tests::llama_cpp_source().join("models/templates/Qwen-Qwen2.5-7B-Instruct.jinja"),
    )
    .unwrap();
    let qwen_model = ember_tests::model_with_template("cli-tools-qwen.gguf", &qwen);
    for model in [None, Some(qwen_model)] {
        let mut cmd = ember();
        cmd.args(["chat", "--tools"]).arg(&tools);
        cmd.args(["--tool-choice", "required", "-n", "96"]);
        if let Some(m) = &model {
            cmd.arg("-m").arg(m);
        }
        let out = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin
                    .take()
                    .unwrap()
                    .write_all(b"Turn on the kitchen light.\n{\"ok\": true}\n")?;
                c.wait_with_output()
            })
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let first = stdout.lines().next().unwrap_or_default();
        let call = first
            .strip_prefix("[tool call] ")
            .unwrap_or_else(|| panic!("{model:?}: {stdout:?}"));
        let (name, args) = call.split_once(' ').unwrap();
        let args: serde_json::Value = serde_json::from_str(args).unwrap();
        match name {
            "set_light" => {
                assert!(["kitchen", "bedroom"].contains(&args["room"].as_str().unwrap()));
                assert!(args["on"].is_boolean(), "{args}");
            }
            "get_time" => assert_eq!(args, serde_json::json!({})),
            other => panic!("{other} was not offered"),
        }
        // The result went back and the model replied to it (a call or an answer).
        assert!(stdout.lines().count() >= 2, "{stdout:?}");
    }
    // A bad tool list: one error line naming the file and the entry.
    std::fs::write(&tools, r#"[{"type": "function", "function": {}}]"#).unwrap();
    let out = ember()
        .args(["chat", "--tools"])
        .arg(&tools)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("tools[0] has no name"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Runs `ember bench [-m MODEL] ARGS --json` (ARGS split at spaces), which must succeed, and
/// returns its output and its JSON last line.
fn bench(model: Option<&std::path::Path>, args: &str) -> (String, serde_json::Value) {
    let mut cmd = ember();
    cmd.arg("bench");
    if let Some(m) = model {
        cmd.arg("-m").arg(m);
    }
    let out = cmd
        .args(args.split_whitespace())
        .arg("--json")
        .output()
        .expect("ember bench");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let o = serde_json::from_str(text.lines().last().unwrap_or("")).expect("JSON last line");
    (text, o)
}

/// `ember bench --json` reports the decode speed, the bandwidth measured on the spot and the
/// share of the decode bound it sets, consistently with each other.
#[test]
fn bench_reports_its_share_of_the_bandwidth_bound() {
    let (text, o) = bench(None, "-p 0 -n 4 -r 1 -t 1");
    let tg = o["tg_tokens_per_s"].as_f64().unwrap();
    let bw = o["bandwidth_gb_per_s"].as_f64().unwrap();
    let bytes = o["weight_bytes_per_token"].as_f64().unwrap();
    let cache = o["cache_bytes_per_token"].as_f64().unwrap();
    let share = o["tg_share_of_bandwidth"].as_f64().unwrap();
    // The default model's matrices: 96 MB (of its 103 MB file; the rest is the vocabulary).
    assert!((90e6..100e6).contains(&bytes), "{bytes}");
    // The cache of tokens 0..4 (keys of 1 to 4 positions), the mean: 30 layers × 3 KV heads ×
    // 64 values, keys and values in f16.
    assert_eq!(
        cache,
        ((1 + 2 + 3 + 4) * 30 * 3 * 64 * 2 * 2 / 4) as f64,
        "{text}"
    );
    assert!(bw > 0.1 && tg > 0.0, "{bw} {tg}");
    assert!(
        (share - tg * (bytes + cache) / 1e9 / bw).abs() < 1e-9,
        "{share}"
    );
    assert!(text.contains("% of the bandwidth"), "{text}");
    // Every decoded token is a forward pass (a warm-up repetition and one timed: 2 × 4); one
    // thread never runs on fewer.
    assert_eq!(o["passes"].as_u64(), Some(8), "{text}");
    assert_eq!(o["passes_on_fewer_threads"].as_u64(), Some(0), "{text}");
    // --no-bandwidth skips it.
    let out = ember()
        .args([
            "bench",
            "-p",
            "0",
            "-n",
            "2",
            "-r",
            "1",
            "-t",
            "1",
            "--json",
            "--no-bandwidth",
        ])
        .output()
        .expect("ember bench");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("bandwidth_gb_per_s"), "{text}");
}

/// `ember bench -d D` starts every test from a cache holding D tokens (llama-bench's
/// `--n-depth`): labelled "@ dD", the depth evaluated before each repetition (in batches of up
/// to 512, so 600 tokens are two passes), and refused past the model's context.
#[test]
fn bench_measures_at_a_depth() {
    let (text, o) = bench(None, "-p 8 -n 4 -d 600 -r 1 -t 1 --no-bandwidth");
    assert!(
        text.contains("| pp8 @ d600 |") && text.contains("| tg4 @ d600 |"),
        "{text}"
    );
    assert_eq!(o["n_depth"].as_u64(), Some(600), "{text}");
    // The cache a decoded token reads, the mean over tg's positions 600..604 (keys of 601 to
    // 604 positions): SmolLM2's 30 layers × 3 KV heads × 64 values, keys and values in f16.
    let row = 30 * 3 * 64 * 2 * 2;
    assert_eq!(
        o["cache_bytes_per_token"].as_u64(),
        Some((601 + 602 + 603 + 604) * row / 4),
        "{text}"
    );
    // Each of 2 repetitions (warm-up and timed) of each test: the depth's 2 passes, then pp's 1
    // or tg's 4.
    assert_eq!(
        o["passes"].as_u64(),
        Some(2 * (2 + 1) + 2 * (2 + 4)),
        "{text}"
    );
    for d in ["8190", "18446744073709551615"] {
        let out = ember()
            .args(["bench", "-p", "8", "-n", "4", "-d", d, "-r", "1", "-t", "1"])
            .output()
            .expect("ember bench");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("tokens per test, depth included"),
            "-d {d}: {err}"
        );
    }
    // Without tg no token is decoded: no cache bytes a token.
    let (text, o) = bench(None, "-p 8 -n 0 -r 1 -t 1");
    assert!(o.get("pp_tokens_per_s").is_some(), "{text}");
    assert!(o.get("cache_bytes_per_token").is_none(), "{text}");
}

/// A sliding-window model's decoded token reads each windowed layer's cache within its window
/// only: Gemma 3 270M past its 512-token window.
#[test]
fn bench_counts_a_windowed_layers_cache_within_its_window() {
    let gemma = ember_tests::named_model_path("gemma3-270m", "gemma-3-270m-q4_k_m.gguf");
    let (text, o) = bench(Some(&gemma), "-p 1 -n 2 -d 600 -r 1 -t 1 --no-bandwidth");
    // 18 layers, every sixth global (3) and the others within 512 positions (15); one KV head
    // of 256 values, keys and values in f16. tg's positions 600 and 601 see 601 and 602.
    let row = 256 * 2 * 2;
    let per = |seen: u64| (3 * seen + 15 * seen.min(512)) * row;
    assert_eq!(
        o["cache_bytes_per_token"].as_u64(),
        Some((per(601) + per(602)) / 2),
        "{text}"
    );
}
