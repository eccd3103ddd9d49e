//! Shared by the FFI tests: the real model.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The real model (`$EMBER_MODEL`, else `models/…`), fetched when missing as the other tests do.
pub fn model_path() -> PathBuf {
    if let Some(p) = std::env::var_os("EMBER_MODEL") {
        return PathBuf::from(p);
    }
    let p = repo().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !p.exists() {
        let ok = Command::new(repo().join("tools/fetch-model.sh"))
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "tools/fetch-model.sh failed: this test needs the model");
    }
    p
}
