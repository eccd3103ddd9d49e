#!/usr/bin/env python3
"""Aggregate decode speed of an OpenAI-compatible server with N concurrent streams.

    serve_load.py URL N [MAX_TOKENS] [ROUNDS]

Sends N streamed /v1/completions requests at once (different prompts, greedy, max_tokens each)
and prints one JSON line: streams, generated tokens, wall seconds, aggregate tokens/s, mean time
to first token. Works against `ember serve` and `llama-server` alike (standard library only).
"""
import json
import sys
import threading
import time
import urllib.request

url, n = sys.argv[1].rstrip("/"), int(sys.argv[2])
max_tokens = int(sys.argv[3]) if len(sys.argv) > 3 else 128
rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 1
PROMPTS = [
    "Once upon a time, in a small village by the sea,",
    "The history of the printing press begins",
    "Here is a recipe for a simple tomato soup:",
    "The three laws of thermodynamics say",
    "A short story about a robot who learns to paint:",
    "In the year 2150, the first city on Mars",
    "The best way to learn a new language is",
    "Photosynthesis is the process by which",
]


def one(i, out):
    body = json.dumps({"prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": max_tokens,
                       "temperature": 0, "stream": True, "ignore_eos": True,
                       "stream_options": {"include_usage": True}}).encode()
    req = urllib.request.Request(url + "/v1/completions", data=body,
                                 headers={"content-type": "application/json"})
    t0 = time.perf_counter()
    first, pieces, used = None, 0, None
    with urllib.request.urlopen(req, timeout=600) as r:
        for line in r:
            line = line.strip()
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            ev = json.loads(line[6:])
            if ev.get("usage"):
                used = ev["usage"].get("completion_tokens")
            if ev.get("choices") and ev["choices"][0].get("text"):
                pieces += 1
                if first is None:
                    first = time.perf_counter() - t0
    # Generated tokens as the server counts them (its usage chunk), else the text chunks.
    out[i] = (used if used is not None else pieces, first or 0.0)


best = None
for _ in range(rounds):
    out = [None] * n
    threads = [threading.Thread(target=one, args=(i, out)) for i in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    tokens = sum(o[0] for o in out)
    res = {"streams": n, "tokens": tokens, "seconds": round(wall, 3),
           "tokens_per_s": round(tokens / wall, 1),
           "first_token_s": round(sum(o[1] for o in out) / n, 3)}
    if best is None or res["tokens_per_s"] > best["tokens_per_s"]:
        best = res
print(json.dumps(best))
