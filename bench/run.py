#!/usr/bin/env python3
"""kheap's benchmarks: build, run, record, write docs/BENCHMARKS.md.

    python3 bench/run.py            full run: results in bench/results/,
                                    report in docs/BENCHMARKS.md
    python3 bench/run.py --quick    reduced run (< 3 min): results and the
                                    report in bench/results/quick/

Allocators: kheap (its default heap through kmalloc/kfree, built with a
256 MiB default heap), glibc's malloc, and jemalloc, mimalloc and tcmalloc
put in front of it with LD_PRELOAD. The harness is bench/bench.c, compiled
once against libkheap.a (-DBENCH_KHEAP) and once against malloc.

The tests:
  hot   callgrind instruction counts for malloc(32)+free pairs, for
        malloc(32) alone and free alone (batches of 64); deterministic, so
        one run each
  tput  threads each replacing random blocks (16..512 B) in a ring of 64,
        1 and 2 threads; medians of interleaved runs
  pc    producer/consumer through a lock-free ring, 64 B and 16..256 B
        blocks; time and peak RSS; medians of interleaved runs
  suite the workloads of bench/workloads.c (bench/suite.py), kheap as
        libkheap.so; time and peak RSS
  real  real programs (bench/real.py), kheap as libkheap.so
  sizes callgrind instruction counts per malloc+free pair from 16 B to
        256 KiB, kheap three ways and the peers (bench/sizes.py)
  threads the tput loop with 2 and 256 threads: throughput and peak RSS
        (bench/threads.py)
  redis Redis loaded, emptied by FLUSHALL and left idle (bench/redis.py):
        SET requests/s and RSS over time (full run only)
  cpython
        CPython's regression tests (bench/cpython.py): time, peak RSS,
        the same results under every allocator (full run only)
  follow cycles of large blocks, Python's LZMA compressor and buffers
        shrunk by realloc (bench/follow.py): time, faults, RSS growth
The summary tables and charts put suite and real together: each test's
time and peak RSS over the best allocator's, and their geometric means.

Only the Python standard library is used.
"""
import argparse
import datetime
import os
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (BENCH, BUILD, CFLAGS, PEERS, ROOT, harness_peers, log,  # noqa: E402
                    make_env, run, run_harness, script_main, splice, wait_quiet, write_csv)
from common import section as common_section  # noqa: E402
import cpython  # noqa: E402
import follow  # noqa: E402
import real  # noqa: E402
import redis  # noqa: E402
import levels  # noqa: E402
import percpu  # noqa: E402
import sampled  # noqa: E402
import sizes  # noqa: E402
import suite  # noqa: E402
import threads  # noqa: E402

KHEAP_DEFAULT_SIZE = 268435456  # 256 MiB: the default heap the harness uses
SRC_ROOT = [ROOT]  # the kheap tree measured (the work tree or a snapshot)
HOT_SIZE = 32
HOT_BATCH = 64

CONFIGS = {
    # hot_n: measured pairs (callgrind); tput_steps: steps per thread;
    # pc_m: blocks handed over; reps: interleaved runs per timed config
    # max_wait: seconds a timed run may wait for the machine to be quiet;
    # wait_budget: seconds all of them together may wait
    # suite_*: bench/suite.py's scale and rounds; real_*: bench/real.py's
    # rounds and workloads (None: all); redis_reps, cpython_reps: rounds of
    # bench/redis.py and bench/cpython.py (0: not run, their sections kept);
    # follow_reps: rounds of bench/follow.py
    "full": dict(hot_n=1_000_000, tput_steps=20_000_000, pc_m=5_000_000, reps=5,
                 max_wait=10, wait_budget=120, suite_scale=1.0, suite_reps=5,
                 real_reps=5, real_only=None, redis_reps=3, cpython_reps=3,
                 follow_reps=5),
    "quick": dict(hot_n=200_000, tput_steps=8_000_000, pc_m=2_000_000, reps=3,
                  max_wait=2, wait_budget=20, suite_scale=0.2, suite_reps=2,
                  real_reps=2, real_only={"sqlite3", "gcc", "sort", "c++ maps"},
                  redis_reps=0, cpython_reps=0, follow_reps=1),
}

PEER_PACKAGES = {"glibc": "libc6", "jemalloc": "libjemalloc2",
                 "mimalloc": "libmimalloc2.0", "tcmalloc": "libtcmalloc-minimal4"}


# ---------------------------------------------------------------------------
# Build

def source_tree(rev):
    """The kheap tree to measure: the work tree, or a snapshot of commit rev
    (git archive) under bench/build/tree/. Returns (path, description)."""
    if not rev:
        return ROOT, git_commit()
    full = run(["git", "rev-parse", "--verify", rev + "^{commit}"]).strip()
    dest = os.path.join(BUILD, "tree")
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(dest)
    archive = subprocess.run(["git", "archive", "--format=tar", full], cwd=ROOT,
                             stdout=subprocess.PIPE, check=True).stdout
    subprocess.run(["tar", "-x", "-C", dest], input=archive, check=True)
    return dest, "%s (snapshot of `%s`, not the work tree)" % (full[:12], rev)


# The hot test's second kheap row: the hit path on a kheap_init heap.
INIT_NAME = "kheap, kheap_init heap"


def build(tree):
    """libkheap.a with the big default heap, through the Makefile's own
    release rules in a build directory of ours; then the two harnesses."""
    cc = os.environ.get("CC", "gcc")
    b = "bench/build/kheap" if tree == ROOT else "build"
    libdir = os.path.join(tree, b)
    # Rebuilt every time: the Makefile's rules do not track option changes,
    # and src/ may have changed under us.
    shutil.rmtree(libdir, ignore_errors=True)
    # Nothing from the caller's make or environment may change the build:
    # not its command-line variables, not OPT, not a KHEAP_* option.
    env = make_env()
    lib = os.path.join(libdir, "release", "libkheap.a")
    log("build: %s (KHEAP_DEFAULT_SIZE=%d)" % (os.path.relpath(lib, ROOT), KHEAP_DEFAULT_SIZE))
    run(["make", "--no-print-directory", "-f", "Makefile", "-j%d" % (os.cpu_count() or 1),
         "B=" + b, "KHEAP_DEFAULT_SIZE=%d" % KHEAP_DEFAULT_SIZE,
         os.path.join(b, "release", "libkheap.a")], env=env, cwd=tree)
    flags = CFLAGS + ["-g", "-Wstrict-prototypes"]
    src = os.path.join(BENCH, "bench.c")
    out_malloc = os.path.join(BUILD, "bench-malloc")
    out_kheap = os.path.join(BUILD, "bench-kheap")
    out_init = os.path.join(BUILD, "bench-kheap-init")
    log("build: %s, %s, %s" % (os.path.relpath(out_malloc, ROOT), os.path.relpath(out_kheap, ROOT),
                               os.path.relpath(out_init, ROOT)))
    run([cc] + flags + [src, "-o", out_malloc, "-lpthread"])
    kheap_flags = ["-DBENCH_KHEAP", "-I" + os.path.join(tree, "include"),
                   "-I" + os.path.join(tree, "src"), "-DKHEAP_PORT_PAGES=1",
                   '-DKHEAP_PORT_CPU_HEADER="port/hosted_cpu.h"',
                   "-DKHEAP_DEFAULT_SIZE=%d" % KHEAP_DEFAULT_SIZE]
    run([cc] + flags + kheap_flags + [src, lib, "-o", out_kheap, "-lpthread"])
    # The same hit path on a heap made with kheap_init (kheap_alloc and
    # kheap_free), for the hot test only.
    run([cc] + flags + kheap_flags + ["-DBENCH_KHEAP_INIT", src, lib, "-o", out_init,
                                      "-lpthread"])
    return out_kheap, out_malloc, out_init


def allocators(bin_kheap, bin_malloc):
    """[(name, binary, preload or None, origin substring)], and the peers
    that are missing."""
    peers, missing = harness_peers(bin_malloc)
    libs = {name: lib for name, lib, _ in PEERS}
    for name in missing:
        log("warning: %s not found (%s); `tools/deps.sh bench` installs it" % (libs[name], name))
    return [("kheap", bin_kheap, None, "libkheap.a")] + peers, missing


# ---------------------------------------------------------------------------
# callgrind output

def parse_callgrind(path):
    """Self cost (Ir) per function and per (file, line) from a callgrind
    output written with --compress-strings=no --compress-pos=no."""
    per_fn, per_line = {}, {}
    fl = fi = fn = None
    total = None
    after_call = False
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            if line.startswith("totals:"):
                total = int(line.split()[1])
                continue
            if line[0].isdigit() or line[0] in "+-*":
                if after_call:  # the inclusive cost of the call just named
                    after_call = False
                    continue
                parts = line.split()
                if len(parts) < 2 or not parts[0].isdigit():
                    continue
                cost = int(parts[1])
                per_fn[fn] = per_fn.get(fn, 0) + cost
                key = (fi or fl, int(parts[0]))
                per_line[key] = per_line.get(key, 0) + cost
                continue
            key, _, value = line.partition("=")
            if key == "fl":
                fl, fi = value, None
            elif key in ("fi", "fe"):
                fi = value
            elif key == "fn":
                fn, fi = value, None
            elif key == "calls":
                after_call = True
    if total is None:
        total = sum(per_fn.values())
    return total, per_fn, per_line


def source_line(path, lineno):
    try:
        with open(path, errors="replace") as f:
            for i, text in enumerate(f, 1):
                if i == lineno:
                    return text.strip()
    except OSError:
        pass
    return ""


# ---------------------------------------------------------------------------
# The tests

def test_hot(allocs, cfg, results):
    n = cfg["hot_n"]
    cgdir = os.path.join(BUILD, "callgrind")
    os.makedirs(cgdir, exist_ok=True)
    rows = []
    loop = {}
    for alloc in allocs:
        name = alloc[0]
        modes = ["pair", "pair-alone", "malloc", "free"]
        if alloc[1] not in loop:
            modes.append("loop")
        for mode in modes:
            out = os.path.join(cgdir, "%s-%s.out" % (name, mode))
            wrapper = ["valgrind", "-q", "--tool=callgrind", "--instr-atstart=no",
                       "--collect-atstart=no", "--compress-strings=no", "--compress-pos=no",
                       "--callgrind-out-file=" + out]
            run_harness(alloc, ["hot", mode, n], wrapper=wrapper)
            total, per_fn, per_line = parse_callgrind(out)
            if mode == "loop":
                loop[alloc[1]] = total / n
                continue
            rows.append(dict(allocator=name, test=mode, n=n, instructions=total,
                             per_op=round(total / n, 2),
                             harness_per_op=None))
            log("hot: %-9s %-10s %7.1f instructions per %s" % (
                name, mode, total / n, "pair" if mode.startswith("pair") else "call"))
            if name == "kheap" and mode == "pair":
                kheap_profile(out, per_fn, per_line, n, results)
        for r in rows:
            if r["allocator"] == name:
                r["harness_per_op"] = round(loop[alloc[1]], 2)
    write_csv(os.path.join(results, "hotpath.csv"), rows,
              ["allocator", "test", "n", "instructions", "per_op", "harness_per_op"])
    return rows


def test_bulk(allocs, cfg, results):
    """kheap's bulk calls against loops of single calls: callgrind
    instructions per object (its allocation and its free), 64-byte objects
    in batches of 64, kmalloc classes and a kheap_cache."""
    n = cfg["hot_n"]
    cgdir = os.path.join(BUILD, "callgrind")
    os.makedirs(cgdir, exist_ok=True)
    rows = []
    alloc = [a for a in allocs if a[0] == "kheap"][0]
    for what in ["kmalloc-single", "kmalloc-bulk", "cache-single", "cache-bulk"]:
        out = os.path.join(cgdir, "kheap-bulk-%s.out" % what)
        wrapper = ["valgrind", "-q", "--tool=callgrind", "--instr-atstart=no",
                   "--collect-atstart=no", "--callgrind-out-file=" + out]
        run_harness(alloc, ["bulk", what, n], wrapper=wrapper)
        total, _, _ = parse_callgrind(out)
        rows.append(dict(test=what, n=n, instructions=total, per_object=round(total / n, 2)))
        log("bulk: %-15s %7.1f instructions per object" % (what, total / n))
    write_csv(os.path.join(results, "bulk.csv"), rows, ["test", "n", "instructions", "per_object"])
    return rows


def kheap_profile(out, per_fn, per_line, n, results):
    """kheap's hot path by function and by source line, and
    callgrind_annotate's own view of it, into results/."""
    fn_rows = [dict(function=fn, instructions=c, per_pair=round(c / n, 2))
               for fn, c in sorted(per_fn.items(), key=lambda kv: -kv[1]) if c >= n / 100]
    write_csv(os.path.join(results, "hotpath_kheap_functions.csv"), fn_rows,
              ["function", "instructions", "per_pair"])
    line_rows = []
    for (path, lineno), c in sorted(per_line.items(), key=lambda kv: -kv[1]):
        if c < n / 100:
            continue
        rel = path
        for base in (SRC_ROOT[0], ROOT):
            if path and path.startswith(base + "/"):
                rel = os.path.relpath(path, base)
                break
        line_rows.append(dict(file=rel, line=lineno, instructions=c,
                              per_pair=round(c / n, 2),
                              source=source_line(path, lineno) if path else ""))
    write_csv(os.path.join(results, "hotpath_kheap_lines.csv"), line_rows,
              ["file", "line", "instructions", "per_pair", "source"])
    with open(os.path.join(results, "callgrind_kheap_pair.txt"), "w") as f:
        f.write("# callgrind_annotate of kheap's hot test: %d malloc(32)+free pairs;\n"
                "# divide every count by %d for instructions per pair.\n\n" % (n, n))
        for extra in (["--inclusive=yes"], ["--auto=yes", "--threshold=100"]):
            try:
                text = run(["callgrind_annotate"] + extra + [out])
                # Paths relative to the tree: the file speaks of kheap only.
                for base in (SRC_ROOT[0], ROOT):
                    text = text.replace(base + "/", "")
                f.write(text)
            except (RuntimeError, OSError) as e:
                f.write("callgrind_annotate failed: %s\n" % e)
    kheap_profile.fns = fn_rows
    kheap_profile.lines = line_rows


kheap_profile.fns = []
kheap_profile.lines = []


def test_tput(allocs, cfg, results):
    steps, reps = cfg["tput_steps"], cfg["reps"]
    rows = []
    # Each round also runs the loop without allocator calls ("none", in
    # kheap's binary): how the machine itself scales from 1 to 2 threads.
    runs = [(a, "tput") for a in allocs] + [(("none",) + tuple(allocs[0][1:]), "tput-none")]
    for rep in range(1, reps + 1):
        for alloc, mode in runs:
            for threads in (1, 2):
                busy = wait_quiet(cfg)
                r = run_harness(alloc, [mode, threads, steps])
                rows.append(dict(rep=rep, allocator=alloc[0], threads=threads, steps=steps,
                                 busy_before=busy,
                                 ops=int(float(r["ops"])), seconds=float(r["seconds"]),
                                 ops_per_s=int(r["ops_per_s"]),
                                 ops_per_cpu_s=int(r["ops_per_cpu_s"]),
                                 maxrss_kib=int(r["maxrss_kib"])))
                log("tput: rep %d %-9s %dT %6.1f M pairs/s" % (
                    rep, alloc[0], threads, int(r["ops_per_s"]) / 1e6))
    write_csv(os.path.join(results, "throughput.csv"), rows,
              ["rep", "allocator", "threads", "steps", "ops", "seconds", "ops_per_s",
               "ops_per_cpu_s", "maxrss_kib", "busy_before"])
    return rows


def test_pc(allocs, cfg, results):
    m, reps = cfg["pc_m"], cfg["reps"]
    rows = []
    for rep in range(1, reps + 1):
        for alloc in allocs:
            for sizes in ("64", "mixed"):
                busy = wait_quiet(cfg)
                r = run_harness(alloc, ["pc", sizes, m])
                rows.append(dict(rep=rep, allocator=alloc[0], sizes=sizes, m=m,
                                 busy_before=busy,
                                 seconds=float(r["seconds"]), ops_per_s=int(r["ops_per_s"]),
                                 maxrss_kib=int(r["maxrss_kib"])))
                log("pc:   rep %d %-9s %-5s %7.3f s  peak RSS %6.1f MiB" % (
                    rep, alloc[0], sizes, float(r["seconds"]), int(r["maxrss_kib"]) / 1024))
    write_csv(os.path.join(results, "prodcons.csv"), rows,
              ["rep", "allocator", "sizes", "m", "seconds", "ops_per_s", "maxrss_kib",
               "busy_before"])
    return rows


# ---------------------------------------------------------------------------
# Summaries and the report

def spread(values):
    return statistics.median(values), min(values), max(values)


def machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    nproc = run(["nproc"]).strip()
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        mem = ", %.0f GiB RAM" % mem
    except (ValueError, OSError):
        mem = ""
    return "%s, nproc %s%s" % (model, nproc, mem)


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[0]
    except OSError:
        return "?"


def git_commit():
    try:
        head = run(["git", "rev-parse", "--short=12", "HEAD"]).strip()
        dirty = run(["git", "status", "--porcelain", "--", "src", "include", "Makefile"]).strip()
        return head + (" with uncommitted changes in src/, include/ or Makefile" if dirty else "")
    except (RuntimeError, OSError):
        return "unknown"


def versions():
    out = []
    try:
        out.append("gcc " + run(["gcc", "-dumpfullversion"]).strip())
    except (RuntimeError, OSError):
        pass
    for name, pkg in PEER_PACKAGES.items():
        try:
            v = run(["dpkg-query", "-W", "-f=${Version}", pkg]).strip()
            out.append("%s %s (Debian %s)" % (name, v, pkg))
        except (RuntimeError, OSError):
            pass
    try:
        out.append(run(["valgrind", "--version"]).strip())
    except (RuntimeError, OSError):
        pass
    return ", ".join(out)


def busy_summary(rows):
    b = [r["busy_before"] for r in rows if "busy_before" in r]
    if not b:
        return "no timed runs"
    quiet = sum(1 for x in b if x < 0.2)
    return "%d of %d runs started quiet; median %.2f, max %.2f" % (
        quiet, len(b), statistics.median(b), max(b))


def fmt_mops(x):
    return "%.1f" % (x / 1e6)


def fmt_ratio(x):
    return "%.2f" % x if x is not None else "–"


def report(args, cfg, names, missing, hot, tput, pc, meta, results, bulk=()):
    elapsed = meta["elapsed"]
    L = []
    L.append("# kheap benchmarks")
    L.append("")
    if args.quick:
        L.append("**Quick run (`make bench-quick`): fewer repetitions and smaller counts "
                 "than the full run; `make bench` writes docs/BENCHMARKS.md.**")
        L.append("")
    L.append("Generated by `bench/run.py%s` (`make %s`); do not edit by hand. "
             "Raw numbers: `%s/`." % (" --quick" if args.quick else "",
                                      "bench-quick" if args.quick else "bench",
                                      os.path.relpath(results, ROOT)))
    L.append("")
    L.append("- Machine: %s" % machine())
    L.append("- Date: %s" % datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"))
    L.append("- kheap commit: %s" % meta["commit"])
    L.append("- Peers: %s" % versions())
    if missing:
        L.append("- Not measured (library not installed): %s" % ", ".join(missing))
    L.append("- This run took %.0f s; load average (1 min) %s at its start, %s at its end." % (
        elapsed, meta["load"][0], meta["load"][1]))
    L.append("")
    L.append("## Method")
    L.append("")
    L.append("One harness, `bench/bench.c`, compiled twice with `-O2 -g`: with "
             "`-DBENCH_KHEAP` it calls `kmalloc`/`kfree` on kheap's default heap, "
             "linked with a `libkheap.a` built by the Makefile's release rules "
             "(`-O2 -g`, `KHEAP_DEBUG=0`) into `bench/build/kheap/` with "
             "`KHEAP_DEFAULT_SIZE=%d` (256 MiB instead of 8 MiB, so every test fits; the "
             "array is BSS, so untouched pages cost no RSS); without it it calls "
             "`malloc`/`free`, which are glibc's or, through `LD_PRELOAD`, a peer's (the "
             "harness checks with `dladdr` where `malloc` came from). Every block is "
             "written and its pointer stored to a volatile sink, so no allocation can be "
             "optimised away. In these three tests kheap serves only the harness's own "
             "calls, while the peers also serve libc's; in the workloads and the real "
             "programs kheap is `libkheap.so`, put in front of glibc's malloc like the "
             "peers." % KHEAP_DEFAULT_SIZE)
    L.append("")
    L.append("The machine's cores are shared with other work, so timed tests run "
             "interleaved (every allocator once, then again: A B C D E A B C D E ...), "
             "%d rounds; tables give the median and the min–max, and ratios compare "
             "medians from the same run. Before each timed run the runner waits (up to %d s, "
             "%d s in all) until other work uses under a fifth of the CPUs; the share it "
             "saw last is the CSVs' `busy_before` (%s). With 2 CPUs, the 2-thread runs have no idle "
             "core: noise from elsewhere lands on them directly." % (
                 cfg["reps"], cfg["max_wait"], CONFIGS["quick" if args.quick else "full"]
                 ["wait_budget"], busy_summary(tput + pc)))
    L.append("")

    # --- bulk calls
    if bulk:
        bb = {r["test"]: r for r in bulk}
        L.append("## Bulk calls: instructions per object")
        L.append("")
        L.append("kheap only (`bench/bench.c bulk`, callgrind as for the hot path): %d objects "
                 "of 64 bytes allocated and freed in batches of 64, with 64 others live; each "
                 "object's allocation and free are collected, harness included. *single*: a "
                 "loop of `kheap_alloc`/`kheap_free` (or `kheap_cache_alloc`/"
                 "`kheap_cache_free`); *bulk*: one `kheap_alloc_bulk` and one "
                 "`kheap_free_bulk` (or the cache's) per batch." % bulk[0]["n"])
        L.append("")
        L.append("| objects from | single calls | bulk calls | bulk / single |")
        L.append("|---|---:|---:|---:|")
        for kind, label in (("kmalloc", "a kmalloc class (64 B)"), ("cache", "a kheap_cache (64 B)")):
            s1, b1 = bb["%s-single" % kind]["per_object"], bb["%s-bulk" % kind]["per_object"]
            L.append("| %s | %.1f | %.1f | %.2f |" % (label, s1, b1, b1 / s1))
        L.append("")

    # --- hot path
    by = {(r["allocator"], r["test"]): r for r in hot}
    n = cfg["hot_n"]
    L.append("## Hot path: instructions per malloc(32) + free")
    L.append("")
    L.append("valgrind `--tool=callgrind --instr-atstart=no --collect-atstart=no`: after a "
             "warm-up (1024 pairs, 1024 in batches, 1024 pairs) instrumentation starts and "
             "exactly %d operations are collected (`CALLGRIND_TOGGLE_COLLECT` around "
             "them), with 64 other 32-byte blocks live throughout. Instruction counts are "
             "deterministic, so each figure is one run. *pair*: `p = malloc(32); *p = i; "
             "sink = p; free(p)` in a loop. *malloc* / *free*: batches of 64 `malloc(32)` "
             "then 64 `free` in allocation order, collection on only around the mallocs or "
             "only around the frees. *nothing else live*: the pair loop with no other "
             "block allocated, so each free empties its page or slab. Figures include the "
             "harness's loop: the pair loop without allocator calls costs %s instructions "
             "per pair, subtracted in *pair, net*; the batch loops' own cost per call is "
             "of the same order, not subtracted." % (
                 n, " / ".join(sorted({"%.1f" % r["harness_per_op"] for r in hot})) or "?"))
    L.append("")
    L.append("| allocator | pair | pair, net | malloc(32) | free | pair, nothing else live "
             "| pair vs mimalloc | pair vs best peer |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    peers = [a for a in names if a != "kheap"]
    best_peer = min((by[(a, "pair")]["per_op"] for a in peers if (a, "pair") in by),
                    default=None)
    mi = by.get(("mimalloc", "pair"))
    for a in names[:1] + [INIT_NAME] + names[1:]:
        if (a, "pair") not in by:
            continue
        p = by[(a, "pair")]
        L.append("| %s | %.1f | %.1f | %.1f | %.1f | %.1f | %s | %s |" % (
            a, p["per_op"], p["per_op"] - p["harness_per_op"],
            by[(a, "malloc")]["per_op"], by[(a, "free")]["per_op"],
            by[(a, "pair-alone")]["per_op"],
            fmt_ratio(p["per_op"] / mi["per_op"]) if mi else "–",
            fmt_ratio(p["per_op"] / best_peer) if best_peer else "–"))
    L.append("")
    L.append("Ratios are instruction counts over the other's: below 1 is fewer "
             "instructions. glibc's and the peers' counts include the PLT jump into the "
             "shared library; kheap is linked statically. *kheap, kheap_init heap*: "
             "the same hit path through `kheap_alloc`/`kheap_free` on a heap made with "
             "`kheap_init` (the harness loads the heap pointer for each call, and the "
             "CPU's state comes from the heap's array instead of the port's per-CPU "
             "word).")
    L.append("")
    if kheap_profile.fns:
        L.append("### Where kheap's pair goes")
        L.append("")
        L.append("Self instructions per pair by function (code inlined into a function "
                 "counts in it), from the same callgrind run; "
                 "`%s/callgrind_kheap_pair.txt` has callgrind_annotate's inclusive "
                 "and line-by-line views." % os.path.relpath(results, ROOT))
        L.append("")
        L.append("| function | instructions per pair |")
        L.append("|---|---:|")
        for r in kheap_profile.fns[:12]:
            L.append("| `%s` | %.1f |" % (r["function"], r["per_pair"]))
        L.append("")
        L.append("Costliest source lines (inlined code counts at its own line):")
        L.append("")
        L.append("| file:line | per pair | source |")
        L.append("|---|---:|---|")
        for r in kheap_profile.lines[:20]:
            src = r["source"].replace("|", "\\|")
            if len(src) > 90:
                src = src[:87] + "..."
            L.append("| %s:%d | %.1f | `%s` |" % (r["file"], r["line"], r["per_pair"], src))
        L.append("")

    # --- throughput
    if tput:
        L.append("## Throughput: random sizes, 1 and 2 threads")
        L.append("")
        L.append("Each thread keeps a ring of 64 live blocks; a step frees a random one and "
                 "allocates a random size of 16..512 B in its place (xorshift, no "
                 "division), writing its first byte. %d steps per thread after the ring is "
                 "filled; the clock runs from a barrier to the last thread's end. One "
                 "*pair* is one free plus one malloc; with 2 threads each has its own ring "
                 "and does the same number of steps. Millions of pairs per second, median "
                 "(min–max) of %d." % (cfg["tput_steps"], cfg["reps"]))
        L.append("")
        L.append("| allocator | 1 thread | 2 threads | 2T/1T | 2T/1T per round "
                 "| 2T/1T by CPU time, per round | 1T vs mimalloc | 2T vs mimalloc |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        med, per_round, cpu_round = {}, {}, {}
        for a in names:
            for t in (1, 2):
                rs = [r for r in tput if r["allocator"] == a and r["threads"] == t]
                if rs:
                    med[(a, t)] = spread([r["ops_per_s"] for r in rs])
            one = {r["rep"]: r for r in tput if r["allocator"] == a and r["threads"] == 1}
            two = {r["rep"]: r for r in tput if r["allocator"] == a and r["threads"] == 2}
            reps = sorted(set(one) & set(two))
            if reps:
                per_round[a] = spread([two[k]["ops_per_s"] / one[k]["ops_per_s"] for k in reps])
                cpu_round[a] = spread([two[k]["ops_per_cpu_s"] / one[k]["ops_per_cpu_s"]
                                       for k in reps])
        for a in names:
            if (a, 1) not in med or (a, 2) not in med:
                continue
            m1, m2 = med[(a, 1)], med[(a, 2)]

            def vs(t):
                if ("mimalloc", t) not in med:
                    return "–"
                return fmt_ratio(med[(a, t)][0] / med[("mimalloc", t)][0])
            L.append("| %s | %s (%s–%s) | %s (%s–%s) | %.2f | %.2f (%.2f–%.2f) "
                     "| %.2f (%.2f–%.2f) | %s | %s |" % (
                         a, fmt_mops(m1[0]), fmt_mops(m1[1]), fmt_mops(m1[2]),
                         fmt_mops(m2[0]), fmt_mops(m2[1]), fmt_mops(m2[2]),
                         m2[0] / m1[0], per_round[a][0], per_round[a][1], per_round[a][2],
                         cpu_round[a][0], cpu_round[a][1], cpu_round[a][2], vs(1), vs(2)))
        L.append("")
        L.append("*2T/1T* is the 2-thread median over the 1-thread median. *Per round*: "
                 "the ratio of each round's 2-thread run to the 1-thread run just before "
                 "it, median (min–max) over rounds; pairing runs close in time cancels "
                 "the slow drifts of this machine's speed. *By CPU time*: each thread's "
                 "steps over the CPU time that thread used (`CLOCK_THREAD_CPUTIME_ID`), "
                 "summed over threads: time a thread spends descheduled drops out, while "
                 "cache-line sharing or spinning on a lock still shows (a thread sleeping "
                 "on a lock would not, so read it next to the wall-clock figures).")
        L.append("")
        one = {r["rep"]: r for r in tput if r["allocator"] == "none" and r["threads"] == 1}
        two = {r["rep"]: r for r in tput if r["allocator"] == "none" and r["threads"] == 2}
        reps = sorted(set(one) & set(two))
        if reps:
            m = spread([two[k]["ops_per_s"] / one[k]["ops_per_s"] for k in reps])
            c = spread([two[k]["ops_per_cpu_s"] / one[k]["ops_per_cpu_s"] for k in reps])
            L.append("The machine itself: the same loop with the allocator calls left out "
                     "(`tput-none`, each step reads and writes the old block) scaled %.2f "
                     "(%.2f–%.2f) per round by the clock and %.2f (%.2f–%.2f) by CPU time, "
                     "in the same rounds. An allocator cannot scale better than that here; "
                     "the wall-clock columns above are bounded by it." % (
                         m[0], m[1], m[2], c[0], c[1], c[2]))
            L.append("")
        if ("kheap", 1) in med:
            bp1 = max((med[(a, 1)][0], a) for a in peers if (a, 1) in med)
            bp2 = max((med[(a, 2)][0], a) for a in peers if (a, 2) in med)
            L.append("kheap over the best peer: %.2f at 1 thread (best: %s), %.2f at 2 "
                     "threads (best: %s). kheap's scaling target is at least 1.9: "
                     "measured %.2f (ratio of medians), %.2f (per round), %.2f (by CPU "
                     "time, per round)." % (
                         med[("kheap", 1)][0] / bp1[0], bp1[1],
                         med[("kheap", 2)][0] / bp2[0], bp2[1],
                         med[("kheap", 2)][0] / med[("kheap", 1)][0],
                         per_round["kheap"][0], cpu_round["kheap"][0]))
            L.append("")

    # --- producer/consumer
    if pc:
        L.append("## Producer/consumer")
        L.append("")
        L.append("Thread A allocates %d blocks (64 B, or 16..256 B at random), writes its "
                 "index into each and passes it through a lock-free single-producer/"
                 "single-consumer ring of 1024 slots (C11 atomics, acquire/release) to "
                 "thread B, which reads it and frees it: every free is of a block another "
                 "thread allocated. Time from a start barrier to both threads' end; peak "
                 "RSS is the process's `VmHWM` at the end (harness and libraries included; "
                 "a process that allocates nothing is about 1.5 MiB). Median (min–max) "
                 "of %d." % (cfg["pc_m"], cfg["reps"]))
        L.append("")
        L.append("| allocator | 64 B: time (s) | 64 B: peak RSS (MiB) | 16..256 B: time (s) "
                 "| 16..256 B: peak RSS (MiB) | glibc time / this, 64 B | "
                 "glibc time / this, 16..256 B |")
        L.append("|---|---:|---:|---:|---:|---:|---:|")
        med = {}
        for a in names:
            for s in ("64", "mixed"):
                v = [r for r in pc if r["allocator"] == a and r["sizes"] == s]
                if v:
                    med[(a, s)] = (spread([r["seconds"] for r in v]),
                                   spread([r["maxrss_kib"] / 1024 for r in v]))
        for a in names:
            if (a, "64") not in med:
                continue
            cells = []
            for s in ("64", "mixed"):
                (t, tlo, thi), (rss, rlo, rhi) = med[(a, s)]
                cells.append("%.3f (%.3f–%.3f)" % (t, tlo, thi))
                cells.append("%.1f (%.1f–%.1f)" % (rss, rlo, rhi))
            for s in ("64", "mixed"):
                g = med.get(("glibc", s))
                cells.append(fmt_ratio(g[0][0] / med[(a, s)][0][0]) if g else "–")
            L.append("| %s | %s |" % (a, " | ".join(cells)))
        L.append("")
        L.append("The last two columns are speed-ups over glibc: above 1 is faster.")
        L.append("")

    L.append("## Reproducing")
    L.append("")
    L.append("`make bench` runs everything above and rewrites this file; `make "
             "bench-quick` runs smaller counts and writes `bench/results/quick/`. Both "
             "install what they need through `tools/deps.sh` and call `bench/run.sh`, "
             "which passes its arguments to `bench/run.py` (`--only hot,tput,pc`, "
             "`--reps N`, `--rev COMMIT` to measure a commit instead of the work tree). "
             "`make bench-real`, `make bench-follow`, `make bench-redis` and `make "
             "bench-cpython` rerun one section alone (`bench/real.py`, `bench/follow.py`, "
             "`bench/redis.py`, `bench/cpython.py`). "
             "Build products go to `bench/build/`.")
    L.append("")
    return "\n".join(L)


def insert_before(text, heading, section):
    """section, placed before the first line starting with heading (or at
    the end)."""
    i = text.find("\n" + heading)
    if i < 0:
        return text.rstrip("\n") + "\n\n" + section
    return text[:i + 1] + section + "\n" + text[i + 1:]


def summary(suite, suite_rows, suite_names, real_rows, chart_dir):
    """The summary: every workload and real program, time and peak RSS
    relative to the best allocator of each, geometric means, the targets,
    and two charts (docs/bench-time.png, docs/bench-rss.png)."""
    med_t = suite.medians(suite_rows, suite_names, "seconds") if suite_rows else {}
    med_r = suite.medians(suite_rows, suite_names, "rss_kib") if suite_rows else {}
    names = list(suite_names)
    if real_rows:
        rows, rnames, _, _ = real_rows
        for n in rnames:
            if n not in names:
                names.append(n)
        for (w, a), vals in rows.items():
            for med, k in ((med_t, 0), (med_r, 1)):
                v = [x[k] for x in vals]
                med.setdefault("real: " + w, {})[a] = spread(v)
    order = [n for n in ("kheap", "glibc", "jemalloc", "mimalloc", "tcmalloc") if n in names]
    L = ["## Summary: workloads and real programs", ""]
    L.append("Every workload of `bench/workloads.c` and every real program, kheap as "
             "`libkheap.so`; each cell is the allocator's median over the best allocator's "
             "median for that test (1.00 is the best, lower is better); the last row is the "
             "geometric mean over the tests. Medians with their min–max are in the "
             "sections *Workloads* and *Real programs* below.")
    L.append("")
    for title, med in (("Time", med_t), ("Peak RSS", med_r)):
        L.append("### %s, relative to the best" % title)
        L.append("")
        L.append("| test | " + " | ".join(order) + " |")
        L.append("|---|" + "---:|" * len(order))
        ratios = {n: [] for n in order}
        for test, by in med.items():
            best = min(v[0] for v in by.values())
            cells = []
            for n in order:
                if n in by and best > 0:
                    ratios[n].append(by[n][0] / best)
                    cells.append("%.2f" % (by[n][0] / best))
                else:
                    cells.append("—")
            L.append("| %s | %s |" % (test, " | ".join(cells)))
        gm = {n: suite.geomean(ratios[n]) for n in order}
        L.append("| **geometric mean** | " + " | ".join("**%.2f**" % gm[n] for n in order) + " |")
        L.append("")
        if title == "Time":
            gm_t = gm
        else:
            gm_r = gm
    if "kheap" in order and "mimalloc" in order:
        peers = [n for n in order if n != "kheap"]
        worst = sorted(((by["kheap"][0] / min(by[p][0] for p in peers if p in by), t)
                        for t, by in med_t.items()
                        if "kheap" in by and any(p in by for p in peers)), reverse=True)
        L.append("Targets: geometric mean of time ≤ 0.9 × mimalloc's: kheap/mimalloc = "
                 "**%.2f**; no test slower than 1.5 × the best peer: worst %s at **%.2f** "
                 "(over 1.5: %s); geometric mean of peak RSS ≤ mimalloc's: kheap/mimalloc = "
                 "**%.2f**." % (gm_t["kheap"] / gm_t["mimalloc"], worst[0][1], worst[0][0],
                                ", ".join("%s %.2f" % (t, r) for r, t in worst if r > 1.5)
                                or "none", gm_r["kheap"] / gm_r["mimalloc"]))
        L.append("")
    charts = suite.charts(med_t, med_r, order, chart_dir)
    for f in charts:
        L.append("![%s](%s)" % (f[:-4], f))
    if charts:
        L.append("")
    return L


def keep_real_section(doc, text):
    """The sections other scripts wrote into doc survive this rewrite: the
    real programs (bench/real.py) and the Rust crate (make bench-rust, via
    bench/rust_doc.py) go back in before the Reproducing section."""
    try:
        with open(doc) as f:
            old = f.read()
    except OSError:
        return text
    for begin, end in (("<!-- real programs: written by bench/real.py -->",
                        "<!-- end of real programs -->"),
                       ("<!-- rust crate: written by make bench-rust -->",
                        "<!-- end of rust crate -->"),
                       (sampled.BEGIN, sampled.END)):
        if begin not in old or end not in old:
            continue
        section = old[old.index(begin):old.index(end) + len(end)] + "\n\n"
        marker = "## Reproducing"
        if marker in text:
            i = text.index(marker)
            text = text[:i] + section + text[i:]
        else:
            text = text + "\n" + section
    return text


# The sections report() and summary() write, and the tests each needs:
# a run with --only that leaves one out keeps the section the file had.
PRODUCED = (("## Bulk calls", {"hot"}), ("## Hot path", {"hot"}),
            ("## Throughput", {"tput"}), ("## Producer/consumer", {"pc"}),
            ("## Summary", {"suite", "real"}), ("## Workloads", {"suite"}))
ALL_TESTS = ("hot,sizes,levels,tput,threads,pc,suite,real,sampled,follow,redis,cpython")


def split_sections(text):
    """text as [(title, chunk)]: the part before the first "## " heading
    (title None), then each "## " section up to the next. A marker line
    right before a heading (the "<!-- ...: written by ... -->" of the
    sections other scripts write) starts that heading's chunk, so that a
    section moves with its markers."""
    lines = text.splitlines(keepends=True)
    out, title, cur = [], None, []
    for i, line in enumerate(lines):
        starts = line.startswith("## ") and not (
            i > 0 and lines[i - 1].startswith("<!--") and cur and cur[-1] is lines[i - 1])
        marker = (line.startswith("<!--") and i + 1 < len(lines) and
                  lines[i + 1].startswith("## "))
        if starts or marker:
            out.append((title, "".join(cur)))
            title = (lines[i + 1] if marker else line).rstrip("\n")
            cur = []
        cur.append(line)
    out.append((title, "".join(cur)))
    return out


def keep_unrun_sections(doc, text, only, meta):
    """For a run with --only: the sections of text whose tests did not run
    are the ones the file had (a run of the workloads alone keeps the hot
    path's tables), in their place; the preamble is the file's, with a line
    naming what this run measured."""
    try:
        with open(doc) as f:
            old = f.read()
    except OSError:
        return text
    olds, news = split_sections(old), split_sections(text)
    keep = [p for p, need in PRODUCED if not need <= only]
    def pick(title):
        return next((c for t, c in olds if t and t.startswith(title)), None)
    out = []
    for title, chunk in news:
        if title is None:
            pre = olds[0][1].rstrip("\n")
            pre += ("\n- Rerun on %s, kheap commit %s (`bench/run.py --only %s`, %.0f s): "
                    "the sections it measured; the others are from earlier runs.\n\n" % (
                        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), meta["commit"],
                        ",".join(sorted(only)), meta["elapsed"]))
            out.append(pre)
            continue
        p = next((p for p in keep if title.startswith(p)), None)
        if p is None:
            out.append(chunk)
        elif pick(p) is not None:
            out.append(pick(p))
    have = "".join(out)
    # Sections this run left out altogether, back before the section that
    # followed them in the file.
    for i, (title, chunk) in enumerate(olds):
        p = next((p for p in keep if title and title.startswith(p)), None)
        if p is None or ("\n" + title + "\n") in ("\n" + have):
            continue
        nxt = next((t for t, _ in olds[i + 1:] if t and ("\n" + t + "\n") in ("\n" + have)),
                   "## Reproducing")
        have = insert_before(have, nxt, chunk.rstrip("\n") + "\n")
    return have


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="reduced run, results in bench/results/quick/")
    ap.add_argument("--only", default=ALL_TESTS,
                    help="comma-separated subset of hot,sizes,levels,tput,threads,pc,suite,real,"
                    "sampled,follow,redis,cpython")
    ap.add_argument("--reps", type=int, help="override the number of interleaved rounds")
    ap.add_argument("--rev", help="measure this commit (a git archive snapshot) instead "
                    "of the work tree")
    args = ap.parse_args()
    cfg = dict(CONFIGS["quick" if args.quick else "full"])
    if args.reps:
        cfg["reps"] = args.reps
    only = set(args.only.split(","))
    results = os.path.join(BENCH, "results", "quick") if args.quick else os.path.join(BENCH, "results")
    doc = os.path.join(results, "BENCHMARKS.md") if args.quick else os.path.join(ROOT, "docs", "BENCHMARKS.md")
    os.makedirs(BUILD, exist_ok=True)
    os.makedirs(results, exist_ok=True)

    t0 = time.time()
    load0 = loadavg()
    tree, commit = source_tree(args.rev)
    SRC_ROOT[0] = tree
    bin_kheap, bin_malloc, bin_init = build(tree)
    allocs, missing = allocators(bin_kheap, bin_malloc)
    names = [a[0] for a in allocs]
    init_alloc = (INIT_NAME, bin_init, None, "libkheap.a")
    hot = test_hot([allocs[0], init_alloc] + allocs[1:], cfg, results) if "hot" in only else []
    bulk = test_bulk(allocs, cfg, results) if "hot" in only else []
    sizes_m = None
    if "sizes" in only:
        sizes_m = sizes.measure((bin_kheap, bin_malloc, bin_init), 64000 if not args.quick else 6400,
                                sizes.SIZES if not args.quick else [16, 1100, 8192, 65536])
    levels_rows = levels.measure(bin_malloc) if "levels" in only and not args.quick else None
    tput = test_tput(allocs, cfg, results) if "tput" in only else []
    threads_m = None
    if "threads" in only:
        threads_m = threads.measure(bin_malloc, cfg["reps"] if not args.quick else 1,
                                    64_000_000 if not args.quick else 4_000_000)
    pc = test_pc(allocs, cfg, results) if "pc" in only else []
    suite_rows, suite_names, suite_missing = [], [], []
    if "suite" in only:
        suite.build()
        sallocs, suite_missing = suite.allocators()
        suite_names = [a[0] for a in sallocs]
        suite_rows = suite.run_suite(sallocs, dict(scale=cfg["suite_scale"],
                                                   reps=cfg["suite_reps"]), None, results)
    sampled_rows = None
    if "sampled" in only:
        sampled_rows = sampled.measure(cfg["reps"], 0.1 if args.quick else 1.0)
    real_rows = None
    if "real" in only:
        real.RESULTS = results
        real_rows = real.measure(cfg["real_reps"], cfg["real_only"])
    follow_rows = None
    if "follow" in only:
        follow.RESULTS = results
        follow_rows = follow.measure(cfg["follow_reps"])
    redis_rows = cpython_rows = None
    if "redis" in only and cfg["redis_reps"]:
        redis.RESULTS = results
        redis_rows = redis.measure(cfg["redis_reps"], list(redis.MODES))
    if "cpython" in only and cfg["cpython_reps"]:
        cpython.RESULTS = results
        cpython_rows = cpython.measure(cfg["cpython_reps"])
    elapsed = time.time() - t0
    meta = dict(commit=commit, load=(load0, loadavg()), elapsed=elapsed)
    text = report(args, cfg, names, missing, hot, tput, pc, meta, results, bulk)
    extra = []
    # The summary (and its charts) from a run asked for both: a run of one
    # keeps the file's (keep_unrun_sections).
    if (suite_rows or real_rows) and {"suite", "real"} <= only:
        extra = summary(suite, suite_rows, suite_names, real_rows,
                        os.path.dirname(doc) if not args.quick else results)
    if suite_rows:
        extra += suite.report(suite_rows, suite_names, suite_missing,
                              dict(scale=cfg["suite_scale"], reps=cfg["suite_reps"]), [])
    text = insert_before(text, "## Hot path", "\n".join(extra) + "\n") if extra else text
    if real_rows:
        rows, rnames, rmissing, rsecs = real_rows
        text = insert_before(text, "## Reproducing",
                             real.report(rows, rnames, cfg["real_reps"], rsecs, rmissing) + "\n")
    else:
        text = keep_real_section(doc, text)
    # The scripts that write sections of their own: this run's section, or
    # the one the file had.
    fresh = [
        (sizes, sizes.report(sizes_m) if sizes_m else None),
        (levels, levels.report(levels_rows) if levels_rows else None),
        (threads, threads.report(threads_m) if threads_m else None),
        (sampled, sampled.report(sampled_rows) if sampled_rows else None),
        (follow, follow.report(*follow_rows, cfg["follow_reps"]) if follow_rows else None),
        (redis, redis.report(*redis_rows[:3], cfg["redis_reps"], redis_rows[3])
         if redis_rows else None),
        (cpython, cpython.report(*cpython_rows[:4], cfg["cpython_reps"], cpython_rows[4])
         if cpython_rows else None),
        (percpu, None),  # bench/percpu.py's, kept
    ]
    for mod, sec in fresh:
        sec = sec or common_section(doc, mod.BEGIN, mod.END)
        if sec:
            text = splice(text, sec + "\n", mod.BEGIN, mod.END)
    if only != set(ALL_TESTS.split(",")):
        text = keep_unrun_sections(doc, text, only, meta)
    with open(doc, "w") as f:
        f.write(text)
    log("wrote %s (%.0f s)" % (os.path.relpath(doc, ROOT), elapsed))


if __name__ == "__main__":
    script_main(main, "bench")
