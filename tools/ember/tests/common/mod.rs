//! Helpers shared by the CLI's end-to-end tests.
#![allow(dead_code)] // each test binary uses its own subset

use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// The `ember` binary under test, with the real model as its default (`$EMBER_MODEL`).
pub fn ember() -> Command {
    let mut c = ember_bare();
    c.env("EMBER_MODEL", ember_tests::model_path());
    c
}

/// The `ember` binary with no default model (`inspect MODEL` refuses both a path and
/// `$EMBER_MODEL`).
pub fn ember_bare() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ember"));
    c.env_remove("EMBER_MODEL");
    c
}

/// Waits for `child` to exit; kills it and returns `None` after `limit` (a hang).
pub fn wait_or_kill(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("waiting for ember") {
            return Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A directory from which the Python package `module` imports, installed there with pip
/// (`spec`) on first use (under this build's temporary directory, not the system's packages).
pub fn python_package(module: &str, spec: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("python-{module}"));
    let importable = |d: &std::path::Path| {
        Command::new("python3")
            .args(["-c", &format!("import {module}")])
            .env("PYTHONPATH", d)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !importable(&dir) {
        let st = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-warn-conflicts",
                "--target",
            ])
            .arg(&dir)
            .arg(spec)
            .status()
            .expect("running pip");
        assert!(
            st.success() && importable(&dir),
            "pip could not install {spec}"
        );
    }
    dir
}
