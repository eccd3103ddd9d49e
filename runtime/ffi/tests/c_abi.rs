//! The C test program (`tests/c/test_ember.c`) compiled with the system `cc` against
//! `include/ember.h` and both libraries, run on the real model; its greedy text must equal the
//! engine's (what `ember run` prints). With `EMBER_VALGRIND=1` (as `.ci/run` sets it) the
//! program also runs under AddressSanitizer and UndefinedBehaviorSanitizer (with the compiler's
//! support), and under valgrind's memcheck (no errors, no definite leaks), with a short
//! prompt, 3 tokens per generation and the core calls only (`EMBER_C_TEST_SAMPLED`: no grammar
//! replies, small-stack thread or concurrent sessions, which the sanitizers cover): valgrind runs
//! the SIMD kernels some 450 times slower.

use ember_runtime::arena::Arena;
use ember_runtime::gguf::{Gguf, MappedFile};
use ember_runtime::kernels::Kernels;
use ember_runtime::model::Model;
use ember_runtime::sampler::{Sampler, SamplerConfig};
use ember_runtime::session::{self, GenOptions, Session, SessionConfig};
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::model_path;

const PROMPT: &str =
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";

/// Where cargo built libember.so and libember.a for this test: `target/<profile>/deps/`, next to
/// the test (`cargo build` copies them up to `target/<profile>/`, which `cargo test` does not
/// refresh).
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test path");
    let dir = exe.parent().expect("target/<profile>/deps");
    assert!(
        dir.join("libember.so").exists() && dir.join("libember.a").exists(),
        "libember.so/.a not in {} (cargo test builds them with the test)",
        dir.display()
    );
    dir.to_path_buf()
}

/// The engine's greedy text for PROMPT with the C defaults (n_ctx 512 as the C test sets).
fn engine_text(model: &Path) -> String {
    let file = MappedFile::open(model).expect("model");
    let g = Gguf::parse(file.bytes()).expect("gguf");
    let mut tables = vec![0u8; Model::memory_needed(&g).expect("plan")];
    let m = Model::load(g, &mut Arena::new(&mut tables), Kernels::best()).expect("load");
    let sc = SessionConfig {
        n_ctx: 512,
        ..SessionConfig::default()
    };
    let mut mem = vec![0u8; Session::bytes_needed(&m, &sc)];
    let mut s = Session::new(&m, &mut Arena::new(&mut mem), &sc).expect("session");
    let cfg = SamplerConfig::default();
    let mut smem = vec![0u8; Sampler::bytes_needed(m.config.n_vocab, &cfg)];
    let mut sampler =
        Sampler::new(&mut Arena::new(&mut smem), m.config.n_vocab, cfg).expect("sampler");
    let ids = m
        .tokenizer
        .encode_to_vec(PROMPT.as_bytes(), true, true)
        .expect("encode");
    let mut text = String::new();
    let opts = GenOptions {
        max_tokens: 24,
        ignore_eos: false,
        stop: &[],
    };
    session::generate(&mut s, &mut sampler, &ids, &opts, &mut || {}, &mut |p| {
        text.push_str(p);
        true
    })
    .expect("generate");
    text
}

fn compile(out: &Path, link: &[&str]) {
    compile_with(out, &[], link)
}

fn compile_with(out: &Path, flags: &[&str], link: &[&str]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args([
            "-std=c11", "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-pthread",
        ])
        .args(flags)
        .arg("-I")
        .arg(dir.join("include"))
        .arg(dir.join("tests/c/test_ember.c"))
        .arg("-o")
        .arg(out)
        .args(link)
        .status()
        .expect("running cc (a C compiler is needed)");
    assert!(status.success(), "cc failed");
}

fn run(cmd: &mut Command) -> String {
    // cargo's LD_LIBRARY_PATH would win over the rpath and could load a stale libember.so.
    let out = cmd
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("running the C test");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "the C test failed ({}): {stderr}",
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let text = stdout
        .split_once("TEXT:")
        .map(|(_, t)| t.strip_suffix('\n').unwrap_or(t).to_string())
        .expect("a TEXT: line");
    text
}

#[test]
fn c_program_against_shared_and_static_libraries() {
    let model = model_path();
    let want = engine_text(&model);
    let libs = lib_dir();
    let tmp = std::env::temp_dir().join(format!("ember-c-abi-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let shared = tmp.join("test_shared");
    let rpath = format!("-Wl,--disable-new-dtags,-rpath,{}", libs.display());
    let libdir = format!("-L{}", libs.display());
    compile(&shared, &[&libdir, &rpath, "-lember", "-lm"]);
    let a = libs.join("libember.a");
    let stat = tmp.join("test_static");
    compile(&stat, &[a.to_str().unwrap(), "-lpthread", "-ldl", "-lm"]);

    // A model whose chat template nests 30,000 levels deep.
    let hostile = ember_tests::model_with_template(
        "c-abi-nested-template",
        &format!("{{{{ {}true }}}}", "not ".repeat(30_000)),
    );
    for exe in [&shared, &stat] {
        let got = run(Command::new(exe)
            .env("EMBER_C_TEST_RLIMIT", "1")
            .arg(&model)
            .arg(PROMPT)
            .arg(&hostile));
        assert_eq!(
            got,
            want,
            "{}: C text differs from the engine's",
            exe.display()
        );
    }

    // AddressSanitizer and UndefinedBehaviorSanitizer on the C side (every allocation the
    // library makes goes through the intercepted malloc, so its misuse would show too), with
    // LeakSanitizer at exit; where the C compiler supports them.
    let asan = tmp.join("test_asan");
    let probe = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-fsanitize=address,undefined", "-x", "c", "-", "-o"])
        .arg(tmp.join("probe"))
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .unwrap()
                .write_all(b"int main(void){return 0;}")?;
            c.wait()
        })
        .is_ok_and(|s| s.success());
    if probe {
        compile_with(
            &asan,
            &[
                "-fsanitize=address,undefined",
                "-fno-omit-frame-pointer",
                "-fno-sanitize-recover=all",
            ],
            &[a.to_str().unwrap(), "-lpthread", "-ldl", "-lm"],
        );
        let got = run(Command::new(&asan)
            .env(
                "ASAN_OPTIONS",
                "detect_leaks=1:abort_on_error=0:exitcode=98",
            )
            .env("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1")
            .arg(&model)
            .arg(PROMPT));
        assert_eq!(got, want, "under AddressSanitizer");
        eprintln!("AddressSanitizer + UndefinedBehaviorSanitizer: clean");
    } else {
        eprintln!("AddressSanitizer: not available with this C compiler; skipped");
    }

    if std::env::var_os("EMBER_VALGRIND").is_some() {
        let have = Command::new("valgrind").arg("--version").output().is_ok();
        assert!(have, "EMBER_VALGRIND is set but valgrind is not installed");
        // A short prompt, fewer tokens and the core calls only under valgrind (it runs some
        // 450x slower): the grammar-constrained replies, the small-stack thread and the
        // concurrent sessions run natively and under the sanitizers above.
        let got = run(Command::new("valgrind")
            .env("EMBER_C_TEST_QUICK", "1")
            .env("EMBER_C_TEST_SAMPLED", "1")
            .args([
                "--tool=memcheck",
                "--leak-check=full",
                "--errors-for-leak-kinds=definite",
            ])
            .args(["--error-exitcode=99", "--quiet"])
            .arg(&shared)
            .arg(&model)
            .arg("Hello world"));
        assert!(!got.is_empty(), "under valgrind: {got:?}");
        eprintln!("valgrind: clean (no errors, no definite leaks)");
    }
    std::fs::remove_dir_all(&tmp).ok();
}
