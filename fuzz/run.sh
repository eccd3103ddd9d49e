#!/usr/bin/env bash
# Seeds the fuzz corpora and runs every cargo-fuzz target for a bounded time.
#
#   fuzz/run.sh [SECONDS_PER_TARGET]     # default 60
#
# Needs a nightly toolchain (`rustup toolchain install nightly`) and cargo-fuzz (installed here
# from crates.io when missing). The seeds come from the real model (fetched when missing), the
# tiny checkpoint converted by `ember convert`, and the test fixtures. A crash stops the run with
# a non-zero status; its input is saved under fuzz/artifacts/TARGET/ (turn it into a regression
# test, then fix it).
set -euo pipefail
SECS="${1:-60}"
FUZZ="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$FUZZ/.." && pwd)"
cargo +nightly --version >/dev/null
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
export EMBER_MODEL="${EMBER_MODEL:-$("$ROOT/tools/fetch-model.sh")}"
(cd "$ROOT" && cargo build --release -q -p ember-cli)
EMBER="$ROOT/target/release/ember"

C="$FUZZ/corpus"
mkdir -p "$C"/{gguf_load,gguf_roundtrip,tokenizer,chat_template,serial_console,grammar,json_schema}
# Models: the tiny checkpoint in three encodings, and the real model's first 64 KiB (its header).
for t in q4_0 q8_0; do
  "$EMBER" convert "$ROOT/tests/fixtures/tiny-llama" "$C/gguf_load/tiny-$t.gguf" --type "$t" 2>/dev/null
  cp "$C/gguf_load/tiny-$t.gguf" "$C/gguf_roundtrip/"
done
head -c 65536 "$EMBER_MODEL" > "$C/gguf_load/real-header.gguf"
cp "$C/gguf_load/real-header.gguf" "$C/gguf_roundtrip/"
# Text: the tokenizer fixture corpus; chats: the chat-template fixture's conversations.
python3 - "$ROOT" "$C" <<'PY'
import json, os, sys
root, c = sys.argv[1], sys.argv[2]
for i, s in enumerate(json.load(open(f"{root}/tests/fixtures/tokenizer/corpus.json"))):
    s = s if isinstance(s, str) else s.get("text", "")
    open(f"{c}/tokenizer/seed-{i}", "wb").write(s.encode())
chats = json.load(open(f"{root}/tests/fixtures/chat/expected.json"))
cases = chats["cases"] if isinstance(chats, dict) else chats
for i, case in enumerate(cases):
    msgs = case.get("messages", [])
    flat = "\0".join(x for m in msgs for x in (m["role"], m["content"]))
    open(f"{c}/chat_template/chat-{i}", "wb").write(b"\x02" + flat.encode())
tmpl = open(f"{root}/tests/fixtures/chat/smollm2-135m-instruct.jinja", "rb").read()
open(f"{c}/chat_template/template", "wb").write(b"\x01" + tmpl)
# Hostile templates (issue 20): deep nesting, operator chains, data bombs, values nested at run time.
hostile = [
    "{{ " + "not " * 30000 + "true }}",
    "{{ 1" + "|abs" * 20000 + " }}",
    "{{ 1" + " + 1" * 20000 + " }}",
    "{{ messages" + ".x" * 40000 + " }}",
    "{{ " + "[" * 40000 + "1" + "]" * 40000 + "|tojson }}",
    "{% if true %}" * 5000 + "x" + "{% endif %}" * 5000,
    '{% set s = namespace(v="a") %}{% for i in range(27) %}{% set s.v = s.v ~ s.v %}{% endfor %}{{ s.v }}',
    "{% set ns = namespace(v=[]) %}{% for i in range(100000) %}{% set ns.v = [ns.v] %}{% endfor %}{{ ns.v }}",
    "{% set ns = namespace(v=[]) %}{% for i in range(050000) %}{% set ns.v = [ns.v] %}{% endfor %}{{ ns.v }}",
    "{% set ns = namespace(v=[]) %}{% for i in range(4) %}{% for j in range(1000) %}{% set ns.v = "
    + "[" * 64 + "ns.v" + "]" * 64 + " %}{% endfor %}{% endfor %}{{ ns.v }}",
    "{{ range(10**9)|list }}{{ 1/0 }}{{ 9223372036854775807 * 9223372036854775807 }}",
]
for i, t in enumerate(hostile):
    open(f"{c}/chat_template/hostile-{i}", "wb").write(b"\x01" + t.encode())
sessions = [b"\x90hello\r\xa5/help\r\xa5/temp 0.5\r", b"\x10ab\x7f\x08c\x1b[A\r\n\xa5\x03\xa5x\r",
            b"\x05" + b"y" * 100 + b"\r/stats\r", b"\x80\xff\xfe\x00\r/system be brief\r/reset\r",
            b"\x10a\x1b]0;title\x07b\r\xa5x\x9b\x85y\r\x1bPdcs\x1b\\z\r"]
for i, s in enumerate(sessions):
    open(f"{c}/serial_console/session-{i}", "wb").write(s)
# Grammars: a few shapes, each with a text after a NUL.
grammars = [
    (b'root ::= "a" [b-d]+ ("x" | "yz")? [^0-9]{2,3}', b"abbxqq"),
    (b'root ::= expr\nexpr ::= term ("+" term)*\nterm ::= [0-9]+ | "(" expr ")"', b"(1+2)+3"),
    (b'root ::= ( [x]* )*', b"xxx"),
    (b'root ::= "(" root ")" | "x"', b"(((x)))"),
]
for i, (g, t) in enumerate(grammars):
    open(f"{c}/grammar/seed-{i}", "wb").write(g + b"\0" + t)
# JSON Schemas: the shapes the converter knows.
schemas = [
    '{"type": "object", "properties": {"a": {"type": "string", "maxLength": 3}, "b": {"enum": [1, "x", null]}}, "required": ["a"]}',
    '{"$ref": "#/$defs/n", "$defs": {"n": {"type": "object", "properties": {"k": {"type": "array", "items": {"$ref": "#/$defs/n"}}}}}}',
    '{"anyOf": [{"type": "integer"}, {"type": ["string", "null"], "format": "date"}], "minItems": 1}',
    '{"allOf": [{"properties": {"x": true}}, {"anyOf": [{"properties": {"y": {"const": [1]}}}]}], "additionalProperties": {"type": "number"}}',
    '{"prefixItems": [{"type": "boolean"}, {}], "items": {"format": "uuid"}, "maxItems": 2}',
]
for i, sc in enumerate(schemas):
    open(f"{c}/json_schema/seed-{i}", "w").write(sc)
PY

cd "$FUZZ"
for target in gguf_load gguf_roundtrip tokenizer chat_template serial_console grammar json_schema; do
  echo "fuzz: $target for ${SECS}s" >&2
  cargo +nightly fuzz run -O "$target" "$C/$target" -- \
    -max_total_time="$SECS" -max_len=131072 -rss_limit_mb=4096 -timeout=30 -print_final_stats=1 2>&1 \
    | grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|==|SUMMARY|.*ERROR|.*panicked|Done)" || true
  if [ -n "$(ls -A "$FUZZ/artifacts/$target" 2>/dev/null)" ]; then
    echo "fuzz: $target found a crash: $(ls "$FUZZ/artifacts/$target")" >&2
    exit 1
  fi
done
echo "fuzz: no crashes" >&2
