//! `include/ember.h` is what cbindgen makes of `src/lib.rs` today: this fails when the committed
//! header is stale. `EMBER_BLESS=1 cargo test -p ember-ffi --test header` rewrites it.

#[test]
fn committed_header_is_up_to_date() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let config =
        cbindgen::Config::from_file(format!("{dir}/cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen")
        .write(&mut generated);
    let path = format!("{dir}/include/ember.h");
    if std::env::var_os("EMBER_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write header");
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/ember.h is stale: run EMBER_BLESS=1 cargo test -p ember-ffi --test header"
    );
}
