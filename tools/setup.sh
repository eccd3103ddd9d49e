#!/usr/bin/env bash
# Prepares a fresh machine for ember: installs Python 3 with pip (needed to fetch the model) when
# missing, checks for a Rust toolchain, and builds ember in release mode.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUDO=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO=sudo
if ! command -v python3 >/dev/null || ! python3 -m pip --version >/dev/null 2>&1; then
  echo "setup: installing python3 and pip" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3 python3-pip >/dev/null
fi
command -v cargo >/dev/null || { echo "setup: a Rust toolchain (cargo) is needed: see https://rustup.rs" >&2; exit 1; }
cd "$ROOT"
cargo build --release --workspace
echo "setup: built $ROOT/target/release/ember" >&2
