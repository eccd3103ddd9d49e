//! The `ember` command end to end: chat against run --chat, and its error contract.

use std::io::Write;
use std::process::{Command, Stdio};

fn ember() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ember"));
    c.env("EMBER_MODEL", ember_tests::model_path());
    c
}

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
    let mut chat = ember()
        .args(["chat", "-n", "24", "-t", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ember chat");
    chat.stdin
        .take()
        .unwrap()
        .write_all(format!("{q}\n/quit\n").as_bytes())
        .unwrap();
    let out = chat.wait_with_output().unwrap();
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

#[test]
fn a_second_turn_reuses_the_cache_and_answers() {
    let mut chat = ember()
        .args(["chat", "-n", "12", "-t", "1", "--system", "You are brief."])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ember chat");
    chat.stdin
        .take()
        .unwrap()
        .write_all(b"Hi!\nWhat did I just say?\n/reset\n/help\n/bogus\n")
        .unwrap();
    let out = chat.wait_with_output().unwrap();
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
    let cases: [&[&str]; 5] = [
        &["run", "-m", "/nonexistent/model.gguf", "-p", "hi"],
        &["run", "-p", ""],
        &["run", "--kernels", "no-such-set", "-p", "hi"],
        &["run", "-p", "hi", "-c", "0"],
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
