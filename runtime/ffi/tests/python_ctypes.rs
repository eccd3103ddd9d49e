//! The Python ctypes example (`python/ember_ctypes.py`) and its test, against the libember.so
//! built for this test, on the real model.

use std::path::Path;
use std::process::Command;

mod common;

#[test]
fn python_ctypes_example_works() {
    let model = common::model_path();
    let exe = std::env::current_exe().expect("test path");
    let lib = exe.parent().expect("deps").join("libember.so");
    assert!(lib.exists(), "{}", lib.display());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("python");
    let out = Command::new("python3")
        .arg(dir.join("test_ember_ctypes.py"))
        .arg(&lib)
        .arg(&model)
        .current_dir(&dir)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("python3 (needed for this test)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "{text}");
    assert!(text.contains("checks passed"));
}
