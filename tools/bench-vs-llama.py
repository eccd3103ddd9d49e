#!/usr/bin/env python3
"""ember against llama.cpp on the same model file and thread counts, measured side by side.

For each thread count, it alternates `ember bench` and `llama-bench` (one repetition each, ROUNDS
times) so that both see the same machine state, then prints each engine's mean tokens/s and the
ratio ember / llama.cpp for pp (prompt of P tokens) and tg (N generated tokens), with
llama-bench's definitions. llama.cpp is built by tools/build-llama-cpp.sh.

    python3 tools/bench-vs-llama.py [--model M...] [--threads 1 2] [--rounds 5] [-p 512] [-n 128] [-d 0] [--busy]

With -d D, every test starts from a cache already holding D tokens (llama-bench's --n-depth,
`ember bench -d`): the speed deep into a conversation, where attention reads D cached tokens.

Each round also measures the memory bandwidth on the spot (`ember bench`'s streaming read with
the same threads); the tg rows give each engine's share of the decode bound it sets (bandwidth ÷
the bytes a decoded token reads: the weights, and the f16 cache up to its position, the mean
over the tg run, as `ember bench` counts them). Several models give one table; --busy runs one CPU-bound process beside both engines for the
whole measurement (a busy machine: a Pi running other services). The last line is the results
as JSON, with the geometric mean of the ratios.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout


def ember(binary, model, t, p, n, d):
    out = run([binary, "bench", "-m", model, "-t", str(t), "-p", str(p), "-n", str(n), "-d", str(d), "-r", "1",
               "--json", "--no-bandwidth"])
    o = json.loads(out.strip().splitlines()[-1])
    # (A test of 0 tokens is skipped, and has no figure.)
    read = o["weight_bytes_per_token"] + o.get("cache_bytes_per_token", 0)  # (none without tg)
    return o.get("pp_tokens_per_s"), o.get("tg_tokens_per_s"), o["kernels"], read


def bandwidth(binary, model, t):
    """The memory bandwidth measured on the spot by `ember bench` (a streaming read with t
    threads)."""
    out = run([binary, "bench", "-m", model, "-t", str(t), "-p", "0", "-n", "1", "-r", "1", "--json"])
    o = json.loads(out.strip().splitlines()[-1])
    return o["bandwidth_gb_per_s"]


def llama(bench, model, t, p, n, d):
    out = run([bench, "-m", model, "-t", str(t), "-p", str(p), "-n", str(n), "-d", str(d), "-r", "1", "-o", "json"])
    rows = [r for r in json.loads(out) if r.get("n_depth", 0) == d]
    pp = next((r["avg_ts"] for r in rows if p and r["n_prompt"] == p and r["n_gen"] == 0), None)
    tg = next((r["avg_ts"] for r in rows if n and r["n_gen"] == n and r["n_prompt"] == 0), None)
    return pp, tg


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", nargs="+", default=[os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("-p", type=int, default=512)
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("-d", type=int, default=0, help="tokens already in the cache when each test starts")
    ap.add_argument("--busy", action="store_true", help="one competing CPU-bound process")
    a = ap.parse_args()
    if a.p <= 0 and a.n <= 0:
        ap.error("-p and -n are both 0: nothing to measure")
    if a.d < 0:
        ap.error("-d must be 0 or more")

    bin_dir = run([os.path.join(ROOT, "tools", "build-llama-cpp.sh")]).strip().splitlines()[-1]
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "ember-cli"], check=True, cwd=ROOT)
    ember_bin = os.path.join(ROOT, "target", "release", "ember")
    bench = os.path.join(bin_dir, "llama-bench")

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; date: {time.strftime('%Y-%m-%d')}")
    print(f"{a.rounds} alternating rounds per file and thread count" + ("; one competing CPU-bound process" if a.busy else "") + "\n")
    print("| file | threads | test | ember tok/s | llama.cpp tok/s | ratio | share of the bandwidth bound: ember / llama.cpp |")
    print("|---|---|---|---|---|---|---|")
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if a.busy else None
    results = []
    try:
        for model in a.model:
            name = os.path.basename(model).removesuffix(".gguf")
            for t in a.threads:
                e_pp, e_tg, l_pp, l_tg, bws = [], [], [], [], []
                kernels = "?"
                read = 0
                for _ in range(a.rounds):
                    bws.append(bandwidth(ember_bin, model, t))
                    pp, tg, kernels, read = ember(ember_bin, model, t, a.p, a.n, a.d)
                    e_pp.append(pp)
                    e_tg.append(tg)
                    pp, tg = llama(bench, model, t, a.p, a.n, a.d)
                    l_pp.append(pp)
                    l_tg.append(tg)
                bw = statistics.mean(bws)
                # Decoding reads every weight once a token, and the cache: bandwidth / bytes is
                # its bound.
                limit = bw * 1e9 / read
                at = f" @ d{a.d}" if a.d else ""
                for test, e, l in ((f"pp{a.p}{at}", e_pp, l_pp), (f"tg{a.n}{at}", e_tg, l_tg)):
                    if None in e or None in l:
                        continue  # a test of 0 tokens (-p 0 or -n 0)
                    em, lm = statistics.mean(e), statistics.mean(l)
                    share = f"{100 * em / limit:.0f}% / {100 * lm / limit:.0f}% of {limit:.0f} tok/s ({bw:.1f} GB/s)" if test.startswith("tg") else ""
                    print(f"| {name} | {t} | {test} | {em:.1f} ± {statistics.pstdev(e):.1f} | {lm:.1f} ± {statistics.pstdev(l):.1f} | {em / lm:.2f}× | {share} |")
                    results.append({"file": name, "threads": t, "test": test, "ember": em, "llama": lm, "ratio": em / lm,
                                    "kernels": kernels, "bandwidth_gb_per_s": bw, "decode_bound_tok_s": limit})
                sys.stdout.flush()
    finally:
        if busy:
            busy.kill()
    geo = statistics.geometric_mean([r["ratio"] for r in results])
    print(f"\ngeometric mean of the ratios: {geo:.2f}×")
    print(json.dumps({"results": results, "geometric_mean": geo}))


if __name__ == "__main__":
    main()
