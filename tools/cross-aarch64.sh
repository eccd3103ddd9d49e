#!/usr/bin/env bash
# Cross-builds ember for aarch64 (Raspberry Pi 3/4/5, Zero 2 W) and tests it under qemu-user.
#
#   tools/cross-aarch64.sh test     # runtime tests as Cortex-A72 (Pi 4, NEON) and Cortex-A76
#                                   # (Pi 5, NEON+SDOT); the no_std core's generation test as
#                                   # Cortex-A53 (Pi Zero 2 W, Pi 3); then one greedy generation on
#                                   # A72 and A76 that must equal the host's text byte for byte
#   tools/cross-aarch64.sh env      # print the environment to eval for your own cargo commands
#
# rustup cannot add targets on these machines, so this uses Debian's Rust (rustc-web, cargo-web)
# with the arm64 standard library, the aarch64 GNU linker and qemu-user-static, installed on
# first use (as root, or with sudo). Its own target directory keeps it apart from rustup's builds.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUDO=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO=sudo

install() {
  if command -v qemu-aarch64-static >/dev/null && [ -d /usr/lib/rustlib/aarch64-unknown-linux-gnu ] \
     && [ -x /usr/bin/cargo ] && command -v aarch64-linux-gnu-gcc >/dev/null; then
    return
  fi
  echo "cross-aarch64: installing Debian's Rust for arm64, the aarch64 linker and qemu-user" >&2
  $SUDO dpkg --add-architecture arm64
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq rustc-web cargo-web \
    libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static >/dev/null
}

ENVIRONMENT='export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=qemu-aarch64-static
export QEMU_CPU=${QEMU_CPU:-cortex-a72}'

case "${1:-test}" in
  env)
    install
    echo "$ENVIRONMENT"
    ;;
  test)
    install
    eval "$ENVIRONMENT"
    cd "$ROOT"
    CARGO=(/usr/bin/cargo)
    T=(--release --target aarch64-unknown-linux-gnu --target-dir target/aarch64)
    MODEL="$("$ROOT/tools/fetch-model.sh")"
    export EMBER_MODEL="$MODEL"
    for cpu in cortex-a72 cortex-a76; do
      echo "cross-aarch64: runtime tests as $cpu" >&2
      QEMU_CPU=$cpu "${CARGO[@]}" test "${T[@]}" -p ember-runtime -- --skip generation_from_one_buffer_without_std \
        --skip console_replies_like_llama_cpp_without_std
    done
    # The core without std or alloc: it builds, and generates (compile-time NEON kernels) as the
    # Pi Zero 2 W / Pi 3's Cortex-A53. Sampled (EMBER_SAMPLE: one greedy prompt, a shorter ring
    # run; ~5 min less under qemu); the serial console test builds here and runs natively in CI.
    "${CARGO[@]}" build "${T[@]}" -p ember-runtime --no-default-features
    echo "cross-aarch64: no_std generation as cortex-a53 (sampled)" >&2
    QEMU_CPU=cortex-a53 EMBER_SAMPLE=1 "${CARGO[@]}" test "${T[@]}" -p ember-runtime \
      --no-default-features --test no_std_generation --test no_std_console -- \
      --skip console_replies_like_llama_cpp_without_std
    "${CARGO[@]}" build "${T[@]}" -p ember-cli
    PROMPT="$(printf '<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n')"
    cargo build --release -q -p ember-cli
    want="$("$ROOT/target/release/ember" run -m "$MODEL" -t 1 -n 16 -p "$PROMPT" 2>/dev/null)"
    for cpu in cortex-a72 cortex-a76; do
      got="$(QEMU_CPU=$cpu qemu-aarch64-static target/aarch64/aarch64-unknown-linux-gnu/release/ember \
        run -m "$MODEL" -t 1 -n 16 -p "$PROMPT" 2>/tmp/ember-aarch64-stats)"
      stats="$(tail -n1 /tmp/ember-aarch64-stats)"
      if [ "$got" != "$want" ]; then
        echo "cross-aarch64: $cpu greedy text differs from the host's" >&2
        echo "  host:    $want" >&2
        echo "  aarch64: $got" >&2
        exit 1
      fi
      echo "cross-aarch64: $cpu greedy text equals the host's (${stats##*| })" >&2
    done
    echo "1 passed, 0 failed: aarch64 greedy generation equals x86-64 on cortex-a72 and cortex-a76"
    ;;
  *)
    echo "usage: tools/cross-aarch64.sh [test|env]" >&2
    exit 2
    ;;
esac
