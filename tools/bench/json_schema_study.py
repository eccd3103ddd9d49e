#!/usr/bin/env python3
"""How often does a small model answer with JSON a schema accepts, with and without ember's
JSON Schema constraint?

    python3 -m pip install jsonschema
    python3 tools/bench/json_schema_study.py [EMBER] [MODEL]

Ten schemas of the kinds an on-device agent uses (tool arguments, records, lists, enums, nested
objects), five prompts each (50 in all). Every prompt runs twice through `ember run --chat`,
greedy: unconstrained, then with `--json-schema`. A reply counts when it parses as JSON and
Python's `jsonschema` validates it. Prints the shares, and the decode speed of the constrained
runs against the unconstrained ones (from ember's stats line), as one JSON object at the end.
"""
import json
import os
import re
import subprocess
import sys
import tempfile

import jsonschema

EMBER = sys.argv[1] if len(sys.argv) > 1 else "target/release/ember"
MODEL = sys.argv[2] if len(sys.argv) > 2 else "models/SmolLM2-135M-Instruct.Q4_1.gguf"
N_PREDICT = 256

S = {"type": "string", "maxLength": 40}
SCHEMAS = [
    ("set_light", {"type": "object", "properties": {
        "room": {"enum": ["kitchen", "bedroom", "living room", "bathroom"]},
        "on": {"type": "boolean"}}, "required": ["room", "on"]}),
    ("weather_query", {"type": "object", "properties": {
        "city": S, "unit": {"enum": ["celsius", "fahrenheit"]}}, "required": ["city", "unit"]}),
    ("person", {"type": "object", "properties": {
        "name": S, "age": {"type": "integer"}, "city": S}, "required": ["name", "age"]}),
    ("timer", {"type": "object", "properties": {
        "minutes": {"type": "integer"}, "label": S}, "required": ["minutes"]}),
    ("shopping_list", {"type": "object", "properties": {
        "items": {"type": "array", "items": S, "minItems": 1, "maxItems": 6}}, "required": ["items"]}),
    ("sentiment", {"type": "object", "properties": {
        "sentiment": {"enum": ["positive", "negative", "neutral"]},
        "confidence": {"type": "number"}}, "required": ["sentiment"]}),
    ("event", {"type": "object", "properties": {
        "title": S, "date": {"type": "string", "format": "date"},
        "attendees": {"type": "array", "items": S, "maxItems": 4}}, "required": ["title", "date"]}),
    ("book", {"type": "object", "properties": {
        "title": S, "author": S, "year": {"type": "integer"},
        "genres": {"type": "array", "items": {"enum": ["fiction", "science", "history", "poetry", "children"]}, "maxItems": 3}},
        "required": ["title", "author"]}),
    ("yes_no", {"type": "object", "properties": {
        "answer": {"enum": ["yes", "no"]}, "reason": S}, "required": ["answer"]}),
    ("tool_call", {"type": "object", "properties": {
        "name": {"enum": ["play_music", "send_message", "get_time"]},
        "arguments": {"type": "object", "properties": {"text": S}, "required": ["text"]}},
        "required": ["name", "arguments"]}),
]
PROMPTS = {
    "set_light": ["Turn on the kitchen light.", "Switch off the lights in the bedroom.",
                  "It's dark in the living room, light it up.", "Bathroom light off please.",
                  "Please turn the bedroom light on."],
    "weather_query": ["What's the weather in Paris in celsius?", "Weather for New York, fahrenheit.",
                      "Is it cold in Oslo? Use celsius.", "Tell me the temperature in Tokyo.",
                      "How hot is it in Phoenix in fahrenheit?"],
    "person": ["Ana is 31 and lives in Lisbon.", "Describe John, a 45-year-old from Boston.",
               "Make up a person.", "My grandmother Rosa is 88.", "Tom, 19, lives in Leeds."],
    "timer": ["Set a timer for 10 minutes for the pasta.", "Timer: 3 minutes.",
              "Remind me in half an hour.", "Set a 25 minute focus timer.", "Egg timer, 6 minutes."],
    "shopping_list": ["I need milk, eggs and bread.", "Add apples and coffee to my list.",
                      "What do I need for pancakes?", "Shopping list for a picnic.",
                      "Buy rice, beans and onions."],
    "sentiment": ["I love this phone!", "The food was cold and late.", "It is a chair.",
                  "Best day ever.", "I'm not sure how I feel about the movie."],
    "event": ["Dinner with Sam and Lee on 2027-03-14.", "Team meeting on 2026-12-05.",
              "Birthday party for Mia on 2027-01-20 with Ana and Joe.", "Dentist on 2026-12-10.",
              "Concert on 2027-06-01 with Kim."],
    "book": ["Tell me about Dune by Frank Herbert.", "A famous history book.",
             "Recommend a children's book.", "The Odyssey.", "A science book by Carl Sagan."],
    "yes_no": ["Is the sky blue?", "Can fish fly?", "Is 7 a prime number?",
               "Is Paris in Italy?", "Do cats sleep a lot?"],
    "tool_call": ["Play some jazz.", "Send a message to Mom saying I'll be late.",
                  "What time is it?", "Text Bob: see you at 8.", "Put on relaxing music."],
}
STATS = re.compile(r"generated (\d+) tokens .*decode ([0-9.]+) tok/s")


def run(prompt, schema_file):
    args = [EMBER, "run", "-m", MODEL, "--chat", "-n", str(N_PREDICT), "-p", prompt]
    if schema_file:
        args += ["--json-schema", schema_file]
    p = subprocess.run(args, capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise RuntimeError(p.stderr)
    m = STATS.search(p.stderr)
    return p.stdout, (int(m.group(1)), float(m.group(2))) if m else (0, 0.0)


def valid(text, schema):
    try:
        jsonschema.validate(json.loads(text), schema)
        return True
    except Exception:
        return False


def main():
    rows, speed = [], {"plain": [], "constrained": []}
    with tempfile.TemporaryDirectory() as d:
        for name, schema in SCHEMAS:
            path = os.path.join(d, name + ".json")
            with open(path, "w") as f:
                json.dump(schema, f)
            system = f"Reply with JSON only, following this JSON Schema: {json.dumps(schema)}"
            for prompt in PROMPTS[name]:
                full = f"{system}\n\n{prompt}"
                plain, sp = run(full, None)
                constrained, sc = run(full, path)
                speed["plain"].append(sp)
                speed["constrained"].append(sc)
                rows.append((name, valid(plain.strip(), schema), valid(constrained, schema)))
    n = len(rows)
    # Decode speed over runs that decoded at least 8 tokens, weighted by tokens.
    def rate(xs):
        xs = [(t, r) for t, r in xs if t >= 8 and r > 0]
        return sum(t for t, _ in xs) / sum(t / r for t, r in xs) if xs else 0.0
    out = {
        "prompts": n,
        "schemas": len(SCHEMAS),
        "plain_valid": sum(r[1] for r in rows),
        "constrained_valid": sum(r[2] for r in rows),
        "plain_decode_tok_s": round(rate(speed["plain"]), 1),
        "constrained_decode_tok_s": round(rate(speed["constrained"]), 1),
        "per_schema": {s: [sum(r[1] for r in rows if r[0] == s), sum(r[2] for r in rows if r[0] == s)]
                       for s, _ in SCHEMAS},
    }
    out["speed_ratio"] = round(out["constrained_decode_tok_s"] / max(out["plain_decode_tok_s"], 1e-9), 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
