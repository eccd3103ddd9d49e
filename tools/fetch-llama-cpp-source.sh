#!/usr/bin/env bash
# Fetches the llama.cpp sources vendored by the Python package index sdist of llama-cpp-python
# into $LLAMA_CPP_CACHE (default ~/.cache/ember-llama-cpp-ref) and prints the llama.cpp folder.
# Does nothing when already there. The tests read llama.cpp's own suites from it (vocabularies
# with their expected ids, chat templates, grammars); tools/build-llama-cpp.sh builds it.
#
# Not part of ember: no llama.cpp code is kept in this repository.
set -euo pipefail
V=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
C=${LLAMA_CPP_CACHE:-$HOME/.cache/ember-llama-cpp-ref}
if [ -f "$C/llama.cpp/.extracted-$V" ]; then echo "$C/llama.cpp"; exit 0; fi

SUDO=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO=sudo
# The sdist's metadata step needs its build backend and cmake: give it Debian's cmake and the
# backend's wheel, rather than letting pip build cmake itself from source.
if ! command -v cmake >/dev/null || ! command -v c++ >/dev/null; then
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq cmake g++ >/dev/null; } >&2
fi
mkdir -p "$C/dl"
if [ ! -f "$C/dl/llama_cpp_python-$V.tar.gz" ]; then
  python3 -m pip install -q scikit-build-core >&2
  python3 -m pip download -q --no-deps --no-binary :all: --no-build-isolation -d "$C/dl" "llama-cpp-python==$V" >&2
fi
rm -rf "$C/src" "$C/llama.cpp" && mkdir -p "$C/src"
tar xzf "$C/dl/llama_cpp_python-$V.tar.gz" -C "$C/src"
mv "$C/src/llama_cpp_python-$V/vendor/llama.cpp" "$C/llama.cpp" && rm -rf "$C/src"
touch "$C/llama.cpp/.extracted-$V"
echo "$C/llama.cpp"
