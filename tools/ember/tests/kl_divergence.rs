//! `ember perplexity --kl-divergence-base / --kl-divergence`: a base written and read back in
//! llama-perplexity's file layout, another kernel set against it, and hostile base files.

mod common;

use common::ember;
use std::path::{Path, PathBuf};

const N_VOCAB: usize = 49152;

fn text() -> String {
    ember_tests::fixture("perplexity/gpl-3.0.txt")
        .to_string_lossy()
        .into_owned()
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ember-kld-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Runs ember perplexity with `args`; stdout on success, else panics with stderr.
fn run(args: &[&str]) -> String {
    let out = ember().arg("perplexity").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The one-line error of a refused run.
fn refused(args: &[&str]) -> String {
    let out = ember().arg("perplexity").args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{args:?}");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    assert!(out.stdout.is_empty());
    err
}

fn field(out: &str, name: &str) -> f64 {
    let line = out
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no '{name}' in {out}"));
    line[name.len()..]
        .trim_start_matches([' ', '=', ':'])
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn make_base(path: &Path, kernels: &str) -> String {
    let p = path.to_str().unwrap();
    let t = text();
    run(&[
        "-f",
        &t,
        "-c",
        "128",
        "--chunks",
        "2",
        "--kernels",
        kernels,
        "--kl-divergence-base",
        p,
    ])
}

#[test]
fn a_base_read_back_has_no_divergence_and_the_layout_is_llama_perplexity_s() {
    let base = tmp("self.kld");
    let first = make_base(&base, "scalar");
    let nv = 2 * N_VOCAB.div_ceil(2) + 4;
    let len = std::fs::metadata(&base).unwrap().len() as usize;
    assert_eq!(len, 20 + 2 * 128 * 4 + 2 * (128 - 1 - 64) * nv * 2);
    let bytes = std::fs::read(&base).unwrap();
    assert_eq!(&bytes[..8], b"_logits_");
    let int = |i: usize| i32::from_le_bytes(bytes[i..i + 4].try_into().unwrap());
    assert_eq!((int(8), int(12), int(16)), (128, N_VOCAB as i32, 2));

    let p = base.to_str().unwrap();
    // The same kernels, and the fastest set: each computes the scalar spec's bits, so both read
    // back the base up to its 16-bit storage of log-probabilities.
    for kernels in ["scalar", "auto"] {
        let mut args = vec!["--kl-divergence-base", p, "--kl-divergence"];
        if kernels != "auto" {
            args.extend(["--kernels", kernels]);
        }
        let out = run(&args);
        assert!(field(&out, "Mean KLD") < 1e-6, "{kernels}: {out}");
        assert_eq!(field(&out, "Same top p"), 100.0, "{kernels}: {out}");
        assert_eq!(field(&out, "PPL"), field(&first, "PPL"), "{kernels}: {out}");
    }
    // Another cache precision is a (small) divergence, and is measured as one.
    let out = run(&[
        "--kl-divergence-base",
        p,
        "--kl-divergence",
        "--kv-type",
        "q8_0",
    ]);
    let kld = field(&out, "Mean KLD");
    assert!(kld > 1e-6 && kld < 0.05, "{out}");
    std::fs::remove_file(&base).ok();
}

#[test]
fn hostile_base_files_are_one_line_errors() {
    let base = tmp("good.kld");
    make_base(&base, "auto");
    let good = std::fs::read(&base).unwrap();
    let variants: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "too short"),
        (
            "magic",
            [b"_logitz_".as_slice(), &good[8..]].concat(),
            "not a log-probability file",
        ),
        ("truncated", good[..good.len() - 1].to_vec(), "needs"),
        ("longer", [good.as_slice(), &[0]].concat(), "needs"),
        ("vocab", patch(&good, 12, 32000), "vocabulary of 32000"),
        ("chunks", patch(&good, 16, i32::MAX), "needs"),
        ("ctx", patch(&good, 8, 2), "invalid header"),
        (
            "token",
            patch(&good, 20 + 4 * 5, 60000),
            "outside the vocabulary",
        ),
        (
            "negative token",
            patch(&good, 20, -1),
            "outside the vocabulary",
        ),
    ];
    for (what, bytes, expect) in variants {
        let path = tmp(&format!("{what}.kld"));
        std::fs::write(&path, bytes).unwrap();
        let p = path.to_str().unwrap();
        let err = refused(&["--kl-divergence-base", p, "--kl-divergence"]);
        assert!(err.contains(expect), "{what}: {err}");
        std::fs::remove_file(&path).ok();
    }
    let p = base.to_str().unwrap();
    let err = refused(&["--kl-divergence-base", p, "--kl-divergence", "-c", "256"]);
    assert!(err.contains("chunks of 128"), "{err}");
    // A usage error (clap's: status 2).
    let out = ember()
        .args(["perplexity", "--kl-divergence"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--kl-divergence-base"));
    let t = text();
    let err = refused(&["-f", &t, "--stream", "--kl-divergence-base", p]);
    assert!(err.contains("--stream"), "{err}");
    let err = refused(&["-c", "128"]);
    assert!(err.contains("-f FILE"), "{err}");
    std::fs::remove_file(&base).ok();
}

/// `bytes` with the i32 at `at` replaced.
fn patch(bytes: &[u8], at: usize, v: i32) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    b
}
