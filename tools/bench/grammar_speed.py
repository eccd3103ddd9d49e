#!/usr/bin/env python3
"""Decode speed with a grammar against without one (issue target: at least 0.85x).

    python3 tools/bench/grammar_speed.py [EMBER] [MODEL] [ROUNDS]

For each grammar (a JSON Schema of a record, any JSON value, and the worst case for the mask:
free text inside a JSON string, where most tokens pass the first-byte filter) and each prompt,
`ember run --chat` runs greedy with the grammar, then without it for exactly as many tokens
(`--ignore-eos -n <same>`), so both decode the same number of tokens from the same prompt.
Pairs alternate on one machine in one run; the ratio is constrained / plain decode tok/s per
pair, summarized by the median over pairs, at 1 and 2 threads. Prints one JSON object.
"""
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

EMBER = sys.argv[1] if len(sys.argv) > 1 else "target/release/ember"
MODEL = sys.argv[2] if len(sys.argv) > 2 else "models/SmolLM2-135M-Instruct.Q4_1.gguf"
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
STATS = re.compile(r"generated (\d+) tokens .*decode ([0-9.]+) tok/s.*grammar: (\d+) full")
STATS_PLAIN = re.compile(r"generated (\d+) tokens .*decode ([0-9.]+) tok/s")

SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 40}, "age": {"type": "integer"},
    "city": {"type": "string", "maxLength": 40},
    "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 30}, "maxItems": 4}},
    "required": ["name", "age", "city", "hobbies"]}
FREE_TEXT = 'root ::= "\\"" [^"\\\\\\n]{8,400} "\\""\n'
PROMPTS = [
    "Describe a person you know as JSON with name, age, city and hobbies.",
    "Write a short story about a robot who learns to paint.",
    "Explain how a bicycle works, in a few sentences.",
    "Give me a JSON record of a fictional scientist.",
]


def run(args):
    p = subprocess.run([EMBER, "run", "-m", MODEL, "--chat"] + args,
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        sys.exit(f"ember failed: {p.stderr}")
    return p.stderr


def main():
    tmp = tempfile.mkdtemp()
    schema = os.path.join(tmp, "schema.json")
    with open(schema, "w") as f:
        json.dump(SCHEMA, f)
    free = os.path.join(tmp, "free.gbnf")
    with open(free, "w") as f:
        f.write(FREE_TEXT)
    grammars = {"json_schema": ["--json-schema", schema], "json": ["--json"],
                "free_text_string": ["--grammar", free]}
    out = {}
    for threads in (1, 2):
        for name, gargs in grammars.items():
            ratios, masks, tokens = [], 0, 0
            for _ in range(ROUNDS):
                for prompt in PROMPTS:
                    base = ["-t", str(threads), "-n", "200", "-p", prompt]
                    m = STATS.search(run(base + gargs))
                    n, constrained, full = int(m.group(1)), float(m.group(2)), int(m.group(3))
                    if n < 16:
                        continue
                    m = STATS_PLAIN.search(run(["-t", str(threads), "-n", str(n), "--ignore-eos",
                                                "-p", prompt]))
                    ratios.append(constrained / float(m.group(2)))
                    masks += full
                    tokens += n
            out[f"{name}_t{threads}"] = {
                "median_ratio": round(statistics.median(ratios), 3),
                "min_ratio": round(min(ratios), 3),
                "pairs": len(ratios), "tokens": tokens, "full_masks": masks,
            }
            print(name, threads, out[f"{name}_t{threads}"], file=sys.stderr)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
