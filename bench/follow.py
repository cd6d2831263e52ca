#!/usr/bin/env python3
"""Memory that follows use: cycles of large blocks, Python's LZMA
compressor, and buffers shrunk by realloc, under kheap and its peers.

    python3 bench/follow.py [--reps N] [--print]

Four programs, each run under glibc's malloc and with LD_PRELOAD of
libkheap.so, jemalloc, mimalloc and tcmalloc, interleaved (every allocator
once, then again), --reps rounds (default 5):

  cycles   tests/malloc/shrink.c `cycles`: 20 rounds of allocating 13, 17
           and 64 MiB, writing every page, freeing them (liblzma's encoder
           does this for each compressor). Wall time of the process, and
           the minor faults of rounds 2..20 (what it prints).
  lzma     20 cycles of Python's lzma.LZMACompressor (preset 6) over
           256 KiB of text each. Wall time, minor faults and peak RSS of
           the process.
  realloc  tests/malloc/shrink.c `realloc`: 20 000 blocks of 32 KiB + 33
           bytes written and shrunk to 10 bytes by realloc, all kept (as
           Python's os.read(fd, 32768) does). The resident memory they add.
  large    bench/workloads.c `large` (blocks of 256 KiB..32 MiB touched,
           reallocated and freed; the workload suite times it): the
           process's minor faults, wall time and peak RSS.

These are the shapes where an allocator that purges too eagerly faults its
pages in again each round, and one that keeps a shrunk block whole grows
by its old size. tests/malloc/shrink.c checks the faults and the growth
in `make check` (behaviour, not time); this script gives the figures,
with time, against the peers. Each program runs under /usr/bin/time,
which gives its wall time, minor faults and peak RSS. Results: bench/results/follow.csv and the
"Memory that follows use" section of docs/BENCHMARKS.md, which bench/run.py
keeps when it rewrites the rest of that file.

Only the Python standard library is used.
"""
import os
import shutil
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import suite  # noqa: E402

RESULTS = os.path.join(common.BENCH, "results")
BEGIN = "<!-- follow: written by bench/follow.py -->"
END = "<!-- end of follow -->"
SHRINK = os.path.join(common.ROOT, "build", "malloc", "shrink")
# The distribution's Python (as bench/cpython.py), else the one on PATH.
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else (
    shutil.which("python3") or sys.executable)
TIME = "/usr/bin/time"

# 20 compressors, each fed 256 KiB of generated text (words from a fixed
# seed, so every run compresses the same bytes) and flushed.
LZMA = """
import lzma, random
r = random.Random(7)
words = [bytes(r.choice(b"etaoinshrdlucmfwyp") for _ in range(r.randint(2, 9)))
         for _ in range(2000)]
data = b" ".join(r.choice(words) for _ in range(50000))[:1 << 18]
for _ in range(20):
    c = lzma.LZMACompressor()
    out = c.compress(data) + c.flush()
    assert lzma.decompress(out) == data
"""

PROGRAMS = [
    ("cycles", [SHRINK, "cycles"]),
    ("lzma", [PYTHON, "-c", LZMA]),
    ("realloc", [SHRINK, "realloc"]),
    ("large", [suite.WORKLOADS, "large", "1", "1"]),
]
# What the workload must report as the origin of malloc, by allocator
# (common.PEERS'; kheap's is libkheap.so).
ORIGINS = {name: origin for name, _, origin in common.PEERS}
FIELDS = ["round", "program", "allocator", "busy_before", "wall_s", "minflt", "maxrss_kib",
          "printed"]


def build():
    common.require([TIME, PYTHON])
    common.run(["make", "--no-print-directory", "build/malloc/shrink"], env=common.make_env())
    suite.build()
    common.require([SHRINK, suite.WORKLOADS])


def measure(reps=5):
    build()
    allocs, missing = common.preloads(suite.kheap_so())
    names = [a[0] for a in allocs]
    by_name = dict(allocs)
    rows = []

    def run_one(config, busy):
        prog, name = config
        preload = by_name[name]
        origin = ORIGINS.get(name, "libkheap")
        wall, minflt, rss, printed = one_run(prog, dict(PROGRAMS)[prog], preload, origin)
        r = dict(program=prog, allocator=name, busy_before=busy, wall_s=wall, minflt=minflt,
                 maxrss_kib=rss, printed=printed)
        rows.append(r)
        return r

    res = common.interleaved("follow", reps, [(p, n) for p, _ in PROGRAMS for n in names],
                             run_one)
    for (prog, name), runs in res.items():
        for i, r in enumerate(runs):
            r["round"] = i + 1
    os.makedirs(RESULTS, exist_ok=True)
    common.write_csv(os.path.join(RESULTS, "follow.csv"), rows, FIELDS)
    return rows, names, missing


def one_run(prog, argv, preload, origin):
    """Run argv under preload (None: glibc's malloc) and /usr/bin/time.
    Returns wall seconds, minor faults, peak RSS (KiB) and the figure the
    program printed, if it prints one (its last line)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("KHEAP_") and k != "LD_PRELOAD"}
    if preload:
        env["LD_PRELOAD"] = preload
    tf = os.path.join(common.BUILD, "follow-time.out")
    os.makedirs(common.BUILD, exist_ok=True)
    # A session of its own, so that a timeout stops the program measured
    # and not only /usr/bin/time.
    p = subprocess.Popen([TIME, "-o", tf, "-f", "%e %R %M"] + argv, env=env, cwd=common.ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        raise
    p.stdout, p.stderr = out, err
    if "cannot be preloaded" in p.stderr:
        raise RuntimeError("%s: %s" % (preload, p.stderr.strip()))
    if p.returncode:
        raise RuntimeError("%s failed under %s (exit %d): %s%s" % (
            prog, preload or "glibc", p.returncode, p.stdout[-500:], p.stderr[-500:]))
    with open(tf) as f:
        wall, minflt, rss = f.read().split()[-3:]
    printed = ""
    if prog == "large":
        # The workload names where its malloc came from: the preload must
        # have taken.
        res = common.parse_result(p.stdout)
        if origin not in res["malloc_from"]:
            raise RuntimeError("large: malloc comes from %s, not %s: preload failed"
                               % (res["malloc_from"], origin))
    elif prog != "lzma":
        lines = p.stdout.split()
        printed = lines[-1] if lines else ""
        if not printed.lstrip("-").isdigit():
            raise RuntimeError("%s printed no figure: %s" % (prog, p.stdout[-500:]))
    return float(wall), int(minflt), int(rss), printed


# What each program's table reports: (title, value of a run, format,
# whether it has a target: at most 1.5 times glibc's).
FIGURES = {
    "cycles": [("wall time, s", lambda r: r["wall_s"], "%.2f", True),
               ("minor faults, rounds 2-20", lambda r: int(r["printed"]), "%d", True)],
    "lzma": [("wall time, s", lambda r: r["wall_s"], "%.2f", True),
             ("minor faults", lambda r: r["minflt"], "%d", True),
             ("peak RSS, MiB", lambda r: r["maxrss_kib"] / 1024, "%.1f", False)],
    "realloc": [("RSS growth, KiB", lambda r: int(r["printed"]), "%d", True)],
    "large": [("minor faults", lambda r: r["minflt"], "%d", False),
              ("wall time, s", lambda r: r["wall_s"], "%.2f", False),
              ("peak RSS, MiB", lambda r: r["maxrss_kib"] / 1024, "%.1f", False)],
}


def report(rows, names, missing, reps):
    version = common.run([PYTHON, "-c", "import platform; print(platform.python_version())"])
    version = version.strip()
    L = [BEGIN, "## Memory that follows use", "",
         "Generated by `bench/follow.py` (part of `make bench`); %s UTC, kheap at %s, "
         "%d interleaved rounds; medians (min–max), and kheap's median over glibc's. Wall time, "
         "minor faults and peak RSS are `/usr/bin/time`'s for the whole process, except the "
         "figures the programs print themselves (cycles' faults after the first round, "
         "realloc's RSS growth). "
         "kheap is libkheap.so through `LD_PRELOAD` with its defaults (decay after "
         "`KHEAP_DECAY_MS`, 1000 ms)." % (common.utc_now(), common.kheap_commit(), reps),
         "",
         "- **cycles**: tests/malloc/shrink.c `cycles`, 20 rounds of allocating 13, 17 and "
         "64 MiB, writing every page and freeing them, as liblzma's encoder does for each "
         "compressor. The faults are those of rounds 2–20: an allocator that purges the "
         "freed blocks each round faults them in again (24 000 pages a round).",
         "- **lzma**: 20 `lzma.LZMACompressor` objects (preset 6), each compressing 256 KiB "
         "of generated text, in Python %s; the process's faults and peak RSS (kheap's peak "
         "RSS here varies from run to run: docs/DESIGN.md, \"Pages\", says why)." % version,
         "- **realloc**: tests/malloc/shrink.c `realloc`, 20 000 blocks of 32 KiB + 33 bytes, "
         "each written and shrunk to 10 bytes by `realloc` and kept, as Python's "
         "`os.read(fd, 32768)` does; the resident memory they add.",
         "- **large**: the workload suite's `large` (`bench/workloads.c`, one thread: blocks "
         "of 256 KiB to 32 MiB touched, reallocated and freed); the process's faults, which "
         "purging without hysteresis would multiply.",
         ""]
    if missing:
        L += ["Not measured (library not found): %s." % ", ".join(missing), ""]
    L += common.table_head("program: figure", names, "kheap vs glibc")
    ratios = []
    for prog, _ in PROGRAMS:
        for title, get, fmt, target in FIGURES[prog]:
            vals = {n: [get(r) for r in rows if r["program"] == prog and r["allocator"] == n]
                    for n in names}
            line, med = common.table_row("%s: %s" % (prog, title), names, vals, fmt)
            L.append(line)
            if target and "kheap" in med and med.get("glibc"):
                ratios.append(("%s %s" % (prog, title.split(",")[0]),
                               med["kheap"] / med["glibc"]))
    busy = max(r["busy_before"] for r in rows)
    L += ["", "Against the targets (each at most 1.5 times glibc's): %s." % ", ".join(
        "%s **%.2f**" % (k, v) for k, v in ratios),
        "", "The machine was busy at most %.0f %% before a run (other work on it)." %
        (100 * busy), "", END, ""]
    return "\n".join(L)


def main():
    ap = common.section_parser(__doc__)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    rows, names, missing = measure(args.reps)
    return common.show_section(args, report(rows, names, missing, args.reps), BEGIN, END)


if __name__ == "__main__":
    common.script_main(main, "bench/follow.py")
