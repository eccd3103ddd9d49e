#!/usr/bin/env python3
"""Compare ember's tensor trace with llama.cpp's, tensor by tensor, in graph order.

    EMBER_TRACE=A ember run ... (built with --features trace)
    llama-dump-tensors MODEL PROMPT N B   (tools/llama-dump-tensors.cpp: llama.cpp's tensors)
    python3 tools/compare-trace.py A B [--calls N]

For each forward call and each tensor both runs have, prints how many elements are bit-identical
and the largest absolute difference, so the first operation whose results part is plain.
"""
import argparse, os, re, struct, sys

ORDER = ["embd", "attn_norm", "Qcur", "Kcur", "Vcur", "kqv_out", "attn_out", "ffn_inp",
         "ffn_norm", "ffn_up", "ffn_swiglu", "ffn_out", "l_out", "result_norm", "result_output"]


def load(path):
    with open(path, "rb") as f:
        b = f.read()
    return struct.unpack(f"<{len(b) // 4}f", b), b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ember")
    ap.add_argument("llama")
    ap.add_argument("--calls", type=int, default=1)
    ap.add_argument("--layers", type=int, default=30)
    a = ap.parse_args()
    # llama.cpp: keep the last tensor of each name per call (Qcur/Kcur after RoPE).
    ref = {}
    for f in sorted(os.listdir(a.llama)):
        m = re.match(r"(\d+)-(\d+)-(.+)-f32\.bin$", f)
        if m:
            ref[(int(m.group(1)), m.group(3))] = os.path.join(a.llama, f)
    for call in range(a.calls):
        for layer in list(range(a.layers)) + [None]:
            for name in ORDER:
                full = name if layer is None else f"{name}-{layer}"
                e = os.path.join(a.ember, f"{call}-{full}.bin")
                r = ref.get((call, full))
                if not os.path.exists(e) or r is None:
                    continue
                (ev, eb), (rv, rb) = load(e), load(r)
                if len(ev) != len(rv):
                    print(f"{call} {full:16} sizes differ: {len(ev)} vs {len(rv)}")
                    continue
                same = sum(1 for i in range(0, len(eb), 4) if eb[i:i + 4] == rb[i:i + 4])
                diff = max((abs(x - y) for x, y in zip(ev, rv)), default=0.0)
                print(f"{call} {full:16} identical {same:7}/{len(ev):<7} max|diff| {diff:.3g}")


if __name__ == "__main__":
    sys.exit(main())
