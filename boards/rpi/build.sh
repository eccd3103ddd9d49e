#!/usr/bin/env bash
# Builds ember for a Raspberry Pi (aarch64) and packs what a Pi needs into one archive:
#   boards/rpi/build.sh            # -> target/rpi/ember-rpi-aarch64.tar.gz
# The archive holds bin/ember, the systemd unit and the notes; copy the model next to it
# (tools/fetch-model.sh on any machine with Python) or fetch it on the Pi.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# Debian's cross toolchain (installed on first use) and its environment.
eval "$("$ROOT/tools/cross-aarch64.sh" env)"
cd "$HERE"   # picks up .cargo/config.toml: target aarch64, cross linker
/usr/bin/cargo build --release -p ember-cli
BIN="$ROOT/target/aarch64/aarch64-unknown-linux-gnu/release/ember"
OUT="$ROOT/target/rpi"
rm -rf "$OUT/ember-rpi" && mkdir -p "$OUT/ember-rpi/bin"
cp "$BIN" "$OUT/ember-rpi/bin/ember"
cp "$HERE/ember-serial.service" "$HERE/ember-serve.service" "$HERE/README.md" "$OUT/ember-rpi/"
tar -C "$OUT" -czf "$OUT/ember-rpi-aarch64.tar.gz" ember-rpi
echo "build: $OUT/ember-rpi-aarch64.tar.gz" >&2
