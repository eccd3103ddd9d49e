//! Regression tests for the red-team findings (issue 20), each as a user or an attacker would
//! meet it: hostile chat templates on every front end, memory limits, failing stdout, Ctrl-C
//! during a long prompt, beams against a board's budget, FIFOs, the environment, and messages.
#![cfg(target_os = "linux")]

mod common;

use common::{ember, ember_bare, wait_or_kill};
use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const HANG: Duration = Duration::from_secs(180);

/// Runs `cmd` with `input` on stdin (stdout piped unless `cmd` sets it).
fn run_with_input(cmd: Command, input: &[u8]) -> Output {
    run_with(cmd, input, true)
}

fn run_with(mut cmd: Command, input: &[u8], pipe_stdout: bool) -> Output {
    if pipe_stdout {
        cmd.stdout(Stdio::piped());
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

/// Exit status 0; else the failure with its stderr.
fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A one-line error and exit status 1: not a signal, not a panic (101).
fn assert_clean_error(out: &Output, what: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what}: status {:?} (signal {:?}): {err}",
        out.status,
        out.status.signal()
    );
    assert!(err.contains("ember: error: "), "{what}: {err}");
    assert!(!err.contains("panicked"), "{what}: {err}");
    err
}

/// Limits the child's address space to `bytes` (like `ulimit -v`).
fn with_address_limit(cmd: &mut Command, bytes: u64) {
    // SAFETY: setrlimit is async-signal-safe; it only changes the child's own limit.
    unsafe {
        cmd.pre_exec(move || {
            let l = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &l) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn messages_file() -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("ember-red-team-msgs-{}.json", std::process::id()));
    std::fs::write(&p, br#"[{"role": "user", "content": "hi"}]"#).unwrap();
    p
}

#[test]
fn hostile_templates_are_errors_on_every_front_end() {
    let nested = ember_tests::model_with_template(
        "red-team-nested",
        &format!("{{{{ {}true }}}}", "not ".repeat(30_000)),
    );
    let bomb = ember_tests::model_with_template(
        "red-team-bomb",
        r#"{% set s = namespace(v="a") %}{% for i in range(27) %}{% set s.v = s.v ~ s.v %}{% endfor %}{{ s.v }}"#,
    );
    let msgs = messages_file();
    for (model, what) in [(&nested, "nested"), (&bomb, "memory bomb")] {
        let m = model.to_str().unwrap();
        let mut t = ember_bare();
        t.args(["template", "-m", m, "--messages", msgs.to_str().unwrap()]);
        // 350 MB of address space: the model's mapping and the template thread's stack fit, a
        // 400 MB template does not.
        with_address_limit(&mut t, 350 << 20);
        let err = assert_clean_error(&t.output().unwrap(), what);
        assert!(err.contains("chat template"), "{what}: {err}");

        let mut r = ember_bare();
        r.args(["run", "-m", m, "--chat", "-p", "hi", "-n", "4", "-t", "1"]);
        assert_clean_error(&r.output().unwrap(), what);

        let mut c = ember_bare();
        c.args(["chat", "-m", m, "-n", "4", "-t", "1"]);
        assert_clean_error(&run_with_input(c, b"hi\n"), what);

        // The serial console: a template that does not compile stops it before its banner;
        // one that fails to render is an error line for that turn, and the console goes on.
        let mut s = ember_bare();
        s.args(["serial", "--stdio", "-m", m, "-n", "4", "-t", "1"]);
        let out = run_with_input(s, b"hi\r\n/help\r\n");
        let text = String::from_utf8_lossy(&out.stdout);
        if out.status.success() {
            assert!(text.contains("error: chat template"), "{what}: {text:?}");
            assert!(
                text.contains("/reset"),
                "{what}: the console did not go on: {text:?}"
            );
        } else {
            assert_clean_error(&out, what);
            assert!(!text.contains("> "), "{what}: {text:?}");
        }
    }
    std::fs::remove_file(msgs).ok();
}

#[test]
fn allocation_failures_are_errors_not_aborts() {
    let cases: [(&[&str], u64); 3] = [
        (
            &["run", "-p", "hi", "-c", "2048", "-t", "1", "-n", "2"],
            150 << 20,
        ),
        (
            &["run", "-p", "hi", "-c", "8192", "-t", "1", "-n", "2"],
            200 << 20,
        ),
        (
            &[
                "run", "--chat", "-p", "hi", "--beam", "16", "-t", "1", "-n", "8",
            ],
            300 << 20,
        ),
    ];
    for (args, limit) in cases {
        let mut c = ember();
        c.args(args);
        with_address_limit(&mut c, limit);
        let err = assert_clean_error(&c.output().unwrap(), &format!("{args:?}"));
        assert!(err.contains("out of memory"), "{args:?}: {err}");
    }
}

#[test]
fn a_failing_stdout_is_an_error_not_a_panic() {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let dir = std::env::temp_dir().join(format!("ember-red-team-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = dir.join("text.txt");
    std::fs::write(
        &text,
        "The quick brown fox jumps over the lazy dog. ".repeat(40),
    )
    .unwrap();
    let msgs = messages_file();
    let cases: [&[&str]; 7] = [
        &["tokenize", "hello world"],
        &["inspect"],
        &["run", "-p", "hi", "-n", "4", "-t", "1"],
        &["template", "--messages", msgs.to_str().unwrap()],
        &[
            "perplexity",
            "-f",
            text.to_str().unwrap(),
            "-c",
            "128",
            "--chunks",
            "1",
            "-t",
            "1",
        ],
        &["bench", "-p", "8", "-n", "4", "-r", "1", "-t", "1"],
        &["chat", "-n", "4", "-t", "1"],
    ];
    for args in cases {
        let mut c = ember();
        c.args(args).stdout(full.try_clone().unwrap());
        let out = run_with(c, b"hi\n", false);
        let err = assert_clean_error(&out, &format!("{args:?}"));
        assert!(err.contains("No space left on device"), "{args:?}: {err}");
    }
    std::fs::remove_dir_all(dir).ok();
    std::fs::remove_file(msgs).ok();
}

#[test]
fn ctrl_c_stops_a_long_prompt_and_the_chat_goes_on() {
    // A 1 MB line (a quarter of a million tokens: many minutes of prompt), then a question.
    let mut c = ember();
    c.args(["chat", "-c", "2048", "-n", "16", "-t", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut line = "the quick brown fox jumps over the lazy dog ".repeat(23_000);
    line.push('\n');
    stdin.write_all(line.as_bytes()).unwrap();
    // Let it start on the prompt, then Ctrl-C.
    std::thread::sleep(Duration::from_secs(3));
    // SAFETY: sending SIGINT to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    stdin
        .write_all(b"What is the capital of France?\n")
        .unwrap();
    drop(stdin);
    let status = wait_or_kill(&mut child, HANG).expect("the prompt was not stopped");
    let mut out = String::new();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{status:?}: {err}");
    assert!(err.contains("stopped before the reply"), "{err}");
    // The dropped message left nothing behind: the answer is a fresh chat's.
    let mut fresh = ember();
    fresh.args(["chat", "-c", "2048", "-n", "16", "-t", "1"]);
    let fresh = run_with_input(fresh, b"What is the capital of France?\n");
    assert_eq!(out, String::from_utf8_lossy(&fresh.stdout), "{err}");
}

#[test]
fn the_board_budget_counts_every_beam() {
    let out = ember()
        .args([
            "run",
            "--chat",
            "-p",
            "hi",
            "--beam",
            "16",
            "--board",
            "pi-zero-2w",
            "-n",
            "8",
        ])
        .output()
        .unwrap();
    let err = assert_clean_error(&out, "beam 16 on a pi-zero-2w");
    assert!(err.contains("16 beams") && err.contains("budget"), "{err}");
    // One beam fits.
    let out = ember()
        .args([
            "run",
            "--chat",
            "-p",
            "hi",
            "--beam",
            "1",
            "--board",
            "pi-zero-2w",
            "-n",
            "2",
            "-t",
            "1",
        ])
        .output()
        .unwrap();
    assert_ok(&out);
}

#[test]
fn a_fifo_is_refused_without_blocking() {
    let p = std::env::temp_dir().join(format!("ember-red-team-fifo-{}", std::process::id()));
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: a valid C path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let mut child = ember_bare()
        .args(["inspect", p.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_or_kill(&mut child, Duration::from_secs(30)).expect("inspect blocked");
    std::fs::remove_file(&p).ok();
    assert_eq!(status.code(), Some(1));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("not a regular file"), "{err}");
}

#[test]
fn an_explicit_model_wins_over_the_environment() {
    let model = ember_tests::model_path();
    let out = ember_bare()
        .env("EMBER_MODEL", "/nonexistent/env-model.gguf")
        .args(["inspect", model.to_str().unwrap()])
        .output()
        .unwrap();
    assert_ok(&out);
    // And the environment still serves when nothing is given.
    let out = ember_bare()
        .env("EMBER_MODEL", "/nonexistent/env-model.gguf")
        .args(["inspect"])
        .output()
        .unwrap();
    let err = assert_clean_error(&out, "env model");
    assert!(err.contains("env-model.gguf"), "{err}");
}

#[test]
fn messages_say_what_is_wrong() {
    let dir = std::env::temp_dir().join(format!("ember-red-team-msg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = dir.join("text.txt");
    std::fs::write(&text, "Some text to score. ".repeat(200)).unwrap();
    let t = text.to_str().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (
            &["perplexity", "-f", t, "--chunks", "0"],
            "--chunks must be at least 1",
        ),
        (&["perplexity", "-f", t, "-c", "2"], "at least 3 tokens"),
        (&["run", "-p", "hi", "--temp", "-1"], "temperature"),
        (&["run", "-p", "hi", "--temp=-1"], "temperature"),
        (&["chat", "--temp", "-0.5"], "temperature"),
        (&["serial", "--stdio", "--temp", "-1"], "temperature"),
    ];
    for (args, want) in cases {
        let out = run_with_input(
            {
                let mut c = ember();
                c.args(args);
                c
            },
            b"",
        );
        let err = assert_clean_error(&out, &format!("{args:?}"));
        assert!(err.contains(want), "{args:?}: {err}");
    }
    std::fs::remove_dir_all(dir).ok();
    // A template that fails says which construct and why.
    let m = ember_tests::model_with_template("red-team-div", "{{ 1 / 0 }}");
    let out = ember_bare()
        .args(["run", "-m", m.to_str().unwrap(), "--chat", "-p", "hi"])
        .output()
        .unwrap();
    let err = assert_clean_error(&out, "1/0 template");
    assert!(err.contains("unable to calculate 1 / 0"), "{err}");
}

#[test]
fn special_ids_outside_the_vocabulary_are_ignored_with_a_warning() {
    let m = ember_tests::model_with_metadata("red-team-pad", |meta| {
        meta.retain(|kv| kv.key != "tokenizer.ggml.padding_token_id");
        meta.push(ember_quant::writer::MetaKv::u32(
            "tokenizer.ggml.padding_token_id",
            9_999_999,
        ));
    });
    let out = ember_bare()
        .args(["inspect", m.to_str().unwrap()])
        .output()
        .unwrap();
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "warning:       tokenizer.ggml.padding_token_id = 9999999 is outside the vocabulary"
        ),
        "{text}"
    );
    // And the model runs.
    let out = ember_bare()
        .args([
            "run",
            "-m",
            m.to_str().unwrap(),
            "-p",
            "hi",
            "-n",
            "2",
            "-t",
            "1",
        ])
        .output()
        .unwrap();
    assert_ok(&out);
}
