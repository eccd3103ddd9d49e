#!/usr/bin/env bash
# Builds the reference peer, llama.cpp, from the Python package index sdist of llama-cpp-python
# (which vendors llama.cpp), for this CPU, into $LLAMA_CPP_CACHE (default ~/.cache/ember-llama-cpp-ref).
# Prints the folder holding llama-bench, llama-tokenize, llama-simple, llama-perplexity,
# llama-quantize and llama-server (to compare `ember serve` with). About 10 minutes on 2
# cores; does nothing when already built.
#
# Not part of ember: a tool to make test fixtures and to benchmark against. No llama.cpp code is
# kept in this repository.
#
# The instruction sets come from /proc/cpuinfo rather than -march=native: some virtual machines
# advertise AMX but fault on its instructions (SIGILL in ggml's AMX matmul), so AMX stays off.
#
# LLAMA_CPP_ISA=avx2 builds a second copy (build-avx2/) with AVX-512 off: llama.cpp's own
# AVX2 build, to measure how far llama.cpp is from itself (README, weight types).
set -euo pipefail
V=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
C=${LLAMA_CPP_CACHE:-$HOME/.cache/ember-llama-cpp-ref}
ISA=${LLAMA_CPP_ISA:-native}
case "$ISA" in
  native) BUILD=build ;;
  avx2) BUILD=build-avx2 ;;
  *) echo "build-llama-cpp: LLAMA_CPP_ISA must be native or avx2, not $ISA" >&2; exit 2 ;;
esac
BIN="$C/llama.cpp/$BUILD/bin"
TARGETS="llama-bench llama-tokenize llama-simple llama-perplexity llama-quantize llama-server"
done_all() { for t in $TARGETS; do [ -x "$BIN/$t" ] || return 1; done; }
if done_all; then echo "$BIN"; exit 0; fi

"$(dirname "$0")/fetch-llama-cpp-source.sh" >/dev/null

flags=()
has() { grep -qw "$1" /proc/cpuinfo; }
if [ "$(uname -m)" = x86_64 ]; then
  flags+=(-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF)
  on() { if has "$1"; then flags+=("-D$2=ON"); else flags+=("-D$2=OFF"); fi; }
  on avx GGML_AVX; on avx2 GGML_AVX2; on fma GGML_FMA; on f16c GGML_F16C; on bmi2 GGML_BMI2
  on avx_vnni GGML_AVX_VNNI
  if [ "$ISA" = native ] && has avx512f && has avx512bw && has avx512vl && has avx512dq && has avx512cd; then
    flags+=(-DGGML_AVX512=ON); on avx512_vnni GGML_AVX512_VNNI; on avx512vbmi GGML_AVX512_VBMI
    on avx512_bf16 GGML_AVX512_BF16
  fi
else
  flags+=(-DGGML_NATIVE=ON)
fi
[ "$ISA" = avx2 ] && flags+=(-DGGML_AVX512=OFF -DGGML_AVX_VNNI=OFF)
cmake -S "$C/llama.cpp" -B "$C/llama.cpp/$BUILD" -DCMAKE_BUILD_TYPE=Release "${flags[@]}" \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_OPENSSL=OFF >&2
cmake --build "$C/llama.cpp/$BUILD" -j"$(nproc)" --target $TARGETS >&2
done_all || { echo "build-llama-cpp: build finished without every tool" >&2; exit 1; }
echo "$BIN"
