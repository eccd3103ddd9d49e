#!/usr/bin/env python3
"""Static cycle counts of the Arm decode kernels, ember's and llama.cpp's, with llvm-mca.

    python3 tools/mca-arm.py [--llama-src DIR] [--markdown]

No Raspberry Pi is at hand, and qemu's timings mean nothing, so this estimates instead: it
compiles ember's NEON kernels for aarch64 (Debian's cross toolchain, `tools/cross-aarch64.sh
env`) and llama.cpp's `ggml-cpu/arch/arm/quants.c` with `aarch64-linux-gnu-gcc -O3 -mcpu=CPU`,
takes each decode kernel's innermost hot loop out of the assembly (the innermost loop with the
most vector instructions), and has llvm-mca (Debian's `llvm-22`, else `llvm`) simulate it on the
CPU's scheduling model: Cortex-A53 (Pi 3, Zero 2 W), A72 (Pi 4), A76 (Pi 5; ember runs its SDOT
kernels there, llama.cpp its dotprod code). The cycles are per 32 weights of one row: ember's
decode kernels do a block of 4 rows at a time (built with `--cfg ember_mca`, which puts llvm-mca
markers around that block's code and changes nothing else), llama.cpp's `ggml_vec_dot_*` a
block or two of one row per loop trip.

From cycles to a decode-speed bound: a block of one row costs `cycles / clock` seconds on one core;
a token of a model reads all its blocks once. The table gives what four cores could stream
(GB/s of weights, compute-bound) next to each board's memory bandwidth: whichever is lower bounds
decoding. An estimate: llvm-mca models the core in isolation, with every load hitting L1 and no
stalls from memory, and its scheduling models are approximations (LLVM maps the Cortex-A72 onto
its A57 model and the A76 onto Neoverse N1's).
"""
import argparse
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (board, cpu, clock in GHz, memory bandwidth in GB/s or None when not known here)
BOARDS = [
    ("Pi 3 / Zero 2 W", "cortex-a53", 1.4, None),
    ("Pi 4", "cortex-a72", 1.8, None),
    ("Pi 5", "cortex-a76", 2.4, 10.0),
]
# (type, bytes per block, elements per block, ember kernel (v0-mangled name part), llama.cpp
# function)
# Q4_0 / Q4_1 / Q8_0 twice: the default kernels (the block table's, ember's numerics) and the
# `exact` tiles (llama.cpp's order).
TYPES = [
    ("Q4_0", 18, 32, "blocks8dispatchNtB2_4Sdot/type2", "ggml_vec_dot_q4_0_q8_0"),
    ("Q4_1", 20, 32, "blocks8dispatchNtB2_4Sdot/type3", "ggml_vec_dot_q4_1_q8_1"),
    ("Q8_0", 34, 32, "blocks8dispatchNtB2_4Sdot/type8", "ggml_vec_dot_q8_0_q8_0"),
    ("Q4_0 exact", 18, 32, "4sdot9tile_q4_0Kj4_Kj1_", "ggml_vec_dot_q4_0_q8_0"),
    ("Q4_1 exact", 20, 32, "4sdot9tile_q4_1Kj4_Kj1_", "ggml_vec_dot_q4_1_q8_1"),
    ("Q8_0 exact", 34, 32, "4sdot9tile_q8_0Kj4_Kj1_", "ggml_vec_dot_q8_0_q8_0"),
    ("Q4_K", 144, 256, "blocks8dispatchNtB2_4Sdot/type12", "ggml_vec_dot_q4_K_q8_K"),
    ("Q5_K", 176, 256, "blocks8dispatchNtB2_4Sdot/type13", "ggml_vec_dot_q5_K_q8_K"),
    ("Q6_K", 210, 256, "blocks8dispatchNtB2_4Sdot/type14", "ggml_vec_dot_q6_K_q8_K"),
]
EMBER_ROWS = 4  # rows of ember's decode tiles

COND = "eq|ne|cs|hs|cc|lo|mi|pl|vs|vc|hi|ls|ge|lt|gt|le"
BRANCH = re.compile(rf"^\s+(b(?:\.?(?:{COND}))?|cbn?z|tbn?z)\s+(?:.*,\s*)?(\.?L\w+)\s*$")
LABEL = re.compile(r"^(\.?L\w+):")


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"mca-arm: {' '.join(cmd[:3])}...: {r.stderr.strip()[-2000:]}")
    return r.stdout


def functions(asm):
    """name -> list of lines, for every function in an assembly file."""
    out, name, body = {}, None, []
    for line in asm.splitlines():
        m = re.match(r"^([A-Za-z_$][\w$.]*):", line)
        if m and not line.startswith(".L"):
            if name:
                out[name] = body
            name, body = m.group(1), []
            continue
        if name:
            if line.startswith(".Lfunc_end") or line.strip().startswith(".size\t" + name):
                out[name], name = body, None
            else:
                body.append(line)
    return out


def is_insn(line):
    s = line.strip()
    return bool(s) and not s.startswith((".", "//", "#", "@")) and not LABEL.match(s)


def loops_at(body):
    """Contiguous loops: (label line, branch line) for each branch back to a label above it."""
    labels = {}
    for i, line in enumerate(body):
        m = LABEL.match(line.strip())
        if m:
            labels[m.group(1)] = i
    out = []
    for i, line in enumerate(body):
        m = BRANCH.match(line)
        if m and m.group(2) in labels and labels[m.group(2)] <= i:
            out.append((labels[m.group(2)], i))
    return out


def marked(body, tag=""):
    """One trip of each loop holding an llvm-mca BEGIN marker (the innermost contiguous loop
    around it: the compiler rotates loops, so the markers may sit anywhere in the trip), as
    (straight-line part, [loops nested in it])."""
    out = []
    ls = loops_at(body)
    want = "BEGIN" + (" " + tag if tag else "")
    for i, line in enumerate(body):
        if "LLVM-MCA-BEGIN" in line and line.rstrip().endswith(want):
            around = [l for l in ls if l[0] <= i <= l[1]]
            if not around:
                continue
            a, b = min(around, key=lambda l: l[1] - l[0])
            # The block's END marker must be in the same loop: otherwise the loop found is not
            # the block's (the compiler may place a copy of the markers in shared code).
            end = "END" + (" " + tag if tag else "")
            if not any("LLVM-MCA-END" in x and x.rstrip().endswith(end) for x in body[a : b + 1]):
                continue
            nested = [l for l in ls if a <= l[0] and l[1] <= b and l != (a, b)]
            top = [l for l in nested if not any(o != l and o[0] <= l[0] and l[1] <= o[1] for o in nested)]
            inside = lambda j: any(x <= j <= y for x, y in top)
            straight = [x for j, x in enumerate(body[a : b + 1], a) if is_insn(x) and not inside(j)]
            loops = [[x for x in body[x0 : y0 + 1] if is_insn(x)] for x0, y0 in top]
            out.append((straight, loops))
    return out


def hot_loop(body):
    """gcc's loops are laid out contiguously: a label and a branch back to it. The innermost such
    loop with the most vector instructions."""
    ls = loops_at(body)
    inner = [l for l in ls if not any(o != l and l[0] <= o[0] and o[1] <= l[1] for o in ls)]
    best = max(inner, key=lambda l: vector_count(body[l[0] : l[1] + 1]))
    return [l for l in body[best[0] : best[1] + 1] if is_insn(l)]


def vector_count(lines):
    return sum(1 for l in lines if is_insn(l) and re.search(r"\bv\d+\.", l))


def count(lines, mnemonic):
    return sum(1 for l in lines if l.split() and l.split()[0] == mnemonic)


def mul_elems(lines):
    """Products of 8-bit integers the instructions form: 16 per SDOT, 8 per widening multiply."""
    return 16 * count(lines, "sdot") + 8 * sum(
        count(lines, m) for m in ("smull", "smull2", "smlal", "smlal2"))


def asm_text(lines):
    return "\n".join(re.sub(r"//.*$", "", l) for l in lines) + "\n"


def mca(tool, cpu, text):
    """Cycles per iteration of `text` on `cpu` (steady state over 500 iterations)."""
    with tempfile.NamedTemporaryFile("w", suffix=".s", delete=False) as f:
        f.write(text)
    try:
        out = run([tool, "-mtriple=aarch64-linux-gnu", f"-mcpu={cpu}", "-iterations=500",
                   "-skip-unsupported-instructions=any", f.name])
    finally:
        os.unlink(f.name)
    it = int(re.search(r"Iterations:\s+(\d+)", out).group(1))
    cyc = int(re.search(r"Total Cycles:\s+(\d+)", out).group(1))
    return cyc / it


def ember_asm():
    env = dict(os.environ)
    for line in run([os.path.join(ROOT, "tools/cross-aarch64.sh"), "env"]).splitlines():
        words = shlex.split(line)
        if words[:1] == ["export"]:
            for w in words[1:]:
                k, _, v = w.partition("=")
                env[k] = re.sub(r"\$\{\w+:-(.*)\}", r"\1", v)
    tdir = os.path.join(ROOT, "target/aarch64-mca")
    env["RUSTFLAGS"] = "--cfg ember_mca"
    run(["/usr/bin/cargo", "rustc", "--release", "--target", "aarch64-unknown-linux-gnu",
         "--target-dir", tdir, "-p", "ember-runtime", "--lib", "--", "--emit", "asm",
         "-C", "codegen-units=1", "-C", "symbol-mangling-version=v0"], cwd=ROOT, env=env)
    deps = os.path.join(tdir, "aarch64-unknown-linux-gnu/release/deps")
    s = max((os.path.join(deps, f) for f in os.listdir(deps)
             if f.startswith("ember_runtime-") and f.endswith(".s")), key=os.path.getmtime)
    return functions(open(s).read())


def llama_asm(src, cpu):
    cdir = os.path.join(src, "ggml/src/ggml-cpu")
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "q.s")
        run(["aarch64-linux-gnu-gcc", "-O3", f"-mcpu={cpu}", "-std=gnu11", "-DNDEBUG",
             "-I", cdir, "-I", os.path.join(src, "ggml/src"), "-I", os.path.join(src, "ggml/include"),
             "-S", os.path.join(cdir, "arch/arm/quants.c"), "-o", out])
        return functions(open(out).read())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llama-src", default=os.path.expanduser("~/.cache/ember-llama-cpp-ref/llama.cpp"),
                    help="llama.cpp source (tools/build-llama-cpp.sh unpacks it here)")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    a = ap.parse_args()
    tool = shutil.which("llvm-mca-22") or shutil.which("llvm-mca")
    if not tool:
        sys.exit("mca-arm: llvm-mca is missing (Debian: apt-get install llvm)")
    if not os.path.isdir(a.llama_src):
        sys.exit(f"mca-arm: no llama.cpp source at {a.llama_src} (run tools/build-llama-cpp.sh)")
    ember = ember_asm()
    rows = []
    for board, cpu, ghz, bw in BOARDS:
        llama = llama_asm(a.llama_src, cpu)
        for ty, bytes_per_block, elems, kernel, vec_dot in TYPES:
            per32 = elems // 32
            # ember: NEON+SDOT where the CPU has it (A76), plain NEON otherwise.
            if cpu != "cortex-a76":
                kernel = kernel.replace("4sdot", "5plain").replace("4Sdot", "5Plain")
            kernel, _, tag = kernel.partition("/")
            name = next((n for n in ember if kernel in n), None)
            if name is None:
                sys.exit(f"mca-arm: ember's {kernel} not found in the assembly")
            # One block of the 4-row tile between llvm-mca markers (`--cfg ember_mca`); the
            # compiler may lay out several copies (even and odd blocks differ in prefetching):
            # their mean.
            regions = marked(ember[name], tag)
            if not regions:
                sys.exit(f"mca-arm: no marked block in {name}")
            # The block's code must be straight: a loop nested in it would need its trip count,
            # which the assembly does not say (the kernels write such loops out).
            if any(ls for _, ls in regions):
                sys.exit(f"mca-arm: a loop inside the marked block of {ty} in {name}: "
                         "its trip count is not known here")
            cyc = [mca(tool, cpu, asm_text(st)) for st, _ in regions]
            e = sum(cyc) / len(cyc) / EMBER_ROWS / per32
            lbody = llama.get(vec_dot)
            if lbody is None:
                sys.exit(f"mca-arm: {vec_dot} not found in llama.cpp's assembly")
            llines = hot_loop(lbody)
            # Blocks per trip: the products the loop forms over the block's weights (a few more
            # go to the K formats' minimums: rounded to a power of two).
            trips_per_block = 2.0 ** -round(math.log2(mul_elems(llines) / elems))
            l = mca(tool, cpu, asm_text(llines)) * trips_per_block / per32
            # GB/s of weights four cores could multiply (compute-bound).
            gbs = lambda c: 4 * bytes_per_block / per32 * ghz / c
            rows.append((board, cpu, ty, e, l, gbs(e), gbs(l), bw))
    if a.markdown:
        print("| board | CPU | type | ember cycles/block | llama.cpp cycles/block | ember ÷ llama.cpp "
              "| 4 cores could stream, ember | llama.cpp | memory |")
        print("|---|---|---|---|---|---|---|---|---|")
        for board, cpu, ty, e, l, ge, gl, bw in rows:
            mem = f"{bw:.0f} GB/s" if bw else "not measured here"
            print(f"| {board} | {cpu} | {ty} | {e:.2f} | {l:.2f} | {e / l:.2f} | {ge:.1f} GB/s "
                  f"| {gl:.1f} GB/s | {mem} |")
    else:
        for board, cpu, ty, e, l, ge, gl, bw in rows:
            print(f"{board:16} {cpu:11} {ty:10} ember {e:6.2f}  llama.cpp {l:6.2f} cycles/block "
                  f"({e / l:.2f}x)  4 cores: {ge:5.1f} vs {gl:5.1f} GB/s"
                  + (f"  memory {bw:.0f} GB/s" if bw else ""))


if __name__ == "__main__":
    main()
