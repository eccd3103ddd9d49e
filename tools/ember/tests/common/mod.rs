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
