#!/usr/bin/env bash
# KL divergence of ember from llama.cpp on the same files, next to llama.cpp's own AVX2 build
# from its AVX-512 build: how far ember's numerics are from the peer's, against how far the peer
# is from itself. For each GGUF file given, llama-perplexity (the native build) saves its
# log-probabilities over 4 chunks of 512 tokens of the GPL-3 text, then ember and llama.cpp's
# AVX2 build (LLAMA_CPP_ISA=avx2 tools/build-llama-cpp.sh) are each scored against them. ember
# runs twice: with its default kernels (its own numerics) and with `--kernels exact` (llama.cpp's
# order for Q4_0 / Q4_1 / Q8_0).
#
#   tools/kld-vs-llama.sh FILE.gguf...
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NATIVE="$("$ROOT/tools/build-llama-cpp.sh")"
AVX2="$(LLAMA_CPP_ISA=avx2 "$ROOT/tools/build-llama-cpp.sh")"
cargo build --release -q -p ember-cli --manifest-path "$ROOT/Cargo.toml"
EMBER="$ROOT/target/release/ember"
TEXT="$ROOT/tests/fixtures/perplexity/gpl-3.0.txt"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
field() { grep -E "$1" | head -1 | sed -E 's/.*[:=] *([0-9.]+).*/\1/'; }
echo "| file | ember KLD | ember same top | ember exact KLD | llama.cpp AVX2 KLD | AVX2 same top |"
echo "|---|---|---|---|---|---|"
for f in "$@"; do
  "$NATIVE/llama-perplexity" -m "$f" -f "$TEXT" -c 512 --chunks 4 -t 2 \
    --kl-divergence-base "$TMP/base" >/dev/null 2>&1
  e="$("$EMBER" perplexity -m "$f" --kl-divergence-base "$TMP/base" --kl-divergence -t 2 2>/dev/null)"
  x="$("$EMBER" perplexity -m "$f" --kernels exact --kl-divergence-base "$TMP/base" --kl-divergence -t 2 2>/dev/null)"
  l="$("$AVX2/llama-perplexity" -m "$f" --kl-divergence-base "$TMP/base" --kl-divergence -t 2 2>&1)"
  echo "| $(basename "$f" .gguf) | $(echo "$e" | field '^Mean KLD') | $(echo "$e" | field '^Same top p') % |" \
    "$(echo "$x" | field '^Mean KLD') |" \
    "$(echo "$l" | field 'Mean +KLD') | $(echo "$l" | field '^Same top p') % |"
done
