#!/usr/bin/env python3
"""The workload suite: bench/workloads.c under every allocator.

    python3 bench/suite.py [--quick] [--reps N] [--only larson,rptest,...]
    python3 bench/suite.py --smoke [--lib build/libkheap.so]
                                       every workload once, tiny, under kheap
                                       and glibc, and every mode of
                                       bench/bench.c once under kheap

One binary, bench/build/workloads, runs each test with glibc's malloc and
with LD_PRELOAD of libkheap.so, jemalloc, mimalloc and tcmalloc,
interleaved (for each round: every test, and within it every allocator
once), under /usr/bin/time so the peak RSS of the whole process is known.
bench/run.py calls run_suite() and report() for `make bench`; run alone,
this script prints its tables.

Only the Python standard library is used (gnuplot draws the charts).
"""
import argparse
import math
import os
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (bench/common.py: what the benchmark scripts share)

ROOT = common.ROOT
BUILD = os.path.join(common.BUILD, "suite")
WORKLOADS = os.path.join(BUILD, "workloads")

# name in the tables, test, threads, what it is
TESTS = [
    ("larson", "larson", 2, "server: threads replace random blocks, arrays move between threads"),
    ("xmalloc", "xmalloc", 2, "one thread allocates batches, the other frees them"),
    ("xmalloc-test", "xmalloc-test", 4,
     "xmalloc-test -w 2 -s 64: 2 threads allocate 64 B blocks in batches of 4096, 2 free them"),
    ("scratch", "scratch", 2, "passive false sharing: small blocks written hard"),
    ("thrash", "thrash", 2, "active false sharing: small blocks written hard"),
    ("rptest-1", "rptest", 1, "random sizes 16 B..16 KiB, 4096 live, one thread"),
    ("rptest-2", "rptest", 2, "the same on two threads, an eighth freed by the other"),
    ("mstress", "mstress", 2, "long-lived lists of small nodes, a slow leak"),
    ("large", "large", 1, "blocks of 256 KiB..32 MiB: touched, reallocated, freed"),
    ("kernel-1", "kernel", 1, "constructed 192-byte objects and 64-byte bursts"),
    ("kernel-2", "kernel", 2, "the same on two threads"),
]

CONFIGS = {
    "full": dict(scale=1.0, reps=5),
    "quick": dict(scale=0.3, reps=3),
    "smoke": dict(scale=0.01, reps=1),
}


def build():
    os.makedirs(BUILD, exist_ok=True)
    src = os.path.join(common.BENCH, "workloads.c")
    common.run(["gcc"] + common.CFLAGS + ["-g", src, "-o", WORKLOADS, "-lpthread", "-ldl"])
    return WORKLOADS


def kheap_so(path=None, name="libkheap.so"):
    """build/NAME (libkheap.so, or libkheap-percpu.so), made by the
    Makefile's release rules (or path, if given and built)."""
    if path:
        return path if os.path.exists(path) else None
    try:
        common.run(["make", "--no-print-directory", "-j%d" % (os.cpu_count() or 1),
                    "build/" + name], env=common.make_env())
    except RuntimeError as e:
        common.log("suite: no %s (%s)" % (name, str(e).splitlines()[0]))
        return None
    path = os.path.join(ROOT, "build", name)
    return path if os.path.exists(path) else None


def allocators(smoke=False, lib=None):
    """[(name, preload or None, origin substring)] and the names missing."""
    out, missing = [], []
    so = kheap_so(lib)
    if so:
        out.append(("kheap", so, "libkheap"))
    else:
        missing.append("kheap")
    for name, lib, origin in common.PEERS:
        if smoke and lib is not None:
            continue
        if lib is None:
            out.append((name, None, origin))
            continue
        path = common.find_lib(lib)
        if path:
            out.append((name, path, origin))
        else:
            missing.append(name)
    return out, missing


def parse_time(path):
    """(wall seconds, peak RSS KiB) from /usr/bin/time -f '%e %M'."""
    with open(path) as f:
        lines = [ln for ln in f.read().split("\n") if ln.strip()]
    wall, rss = lines[-1].split()
    return float(wall), int(rss)


def run_one(alloc, test, threads, scale):
    name, preload, origin = alloc
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    if preload:
        env["LD_PRELOAD"] = preload
    tf = os.path.join(BUILD, "time.out")
    cmd = ["/usr/bin/time", "-o", tf, "-f", "%e %M", WORKLOADS, test, repr(scale), str(threads)]
    out = common.run(cmd, env=env, timeout=900)
    res = common.parse_result(out)
    if origin not in res.get("malloc_from", ""):
        raise RuntimeError("%s: malloc came from %s, not %s" % (name, res.get("malloc_from"), origin))
    wall, rss = parse_time(tf)
    return dict(seconds=float(res["seconds"]), wall=wall, rss_kib=rss, ops=int(res["ops"]),
                check=res["check"])


def run_suite(allocs, cfg, only=None, results=None):
    rows = []
    tests = [t for t in TESTS if not only or t[0] in only or t[1] in only]
    quiet = dict(max_wait=10, wait_budget=120)
    for rep in range(1, cfg["reps"] + 1):
        for label, test, threads, _ in tests:
            for alloc in allocs:
                busy = common.wait_quiet(quiet)
                r = run_one(alloc, test, threads, cfg["scale"])
                r.update(rep=rep, test=label, allocator=alloc[0], busy_before=busy)
                rows.append(r)
                common.log("suite: rep %d %-9s %-9s %8.3f s  peak RSS %7.1f MiB" % (
                    rep, label, alloc[0], r["seconds"], r["rss_kib"] / 1024.0))
    if results:
        common.write_csv(os.path.join(results, "suite.csv"), rows,
                       ["rep", "test", "allocator", "seconds", "wall", "rss_kib", "ops", "check",
                        "busy_before"])
    return rows


def medians(rows, names, key):
    """{test: {allocator: (median, min, max)}} of key."""
    out = {}
    for label, _, _, _ in TESTS:
        for n in names:
            v = [r[key] for r in rows if r["test"] == label and r["allocator"] == n]
            if v:
                out.setdefault(label, {})[n] = (statistics.median(v), min(v), max(v))
    return out


def geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def table(med, names, unit, fmt):
    """Markdown: median (min-max) per test and allocator, then the same as
    ratios to the best allocator of the test, and a geometric-mean row."""
    L = ["| test | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    ratios = {n: [] for n in names}
    for test, by in med.items():
        best = min(v[0] for v in by.values())
        cells = []
        for n in names:
            if n not in by:
                cells.append("—")
                continue
            m, lo, hi = by[n]
            r = m / best if best > 0 else float("nan")
            ratios[n].append(r)
            cells.append("%s (%s–%s) **%.2f**" % (fmt(m), fmt(lo), fmt(hi), r))
        L.append("| %s | %s |" % (test, " | ".join(cells)))
    L.append("| geometric mean of the ratios | " +
             " | ".join("**%.2f**" % geomean(ratios[n]) for n in names) + " |")
    L.append("")
    L.append("Each cell: median %s (min–max), and in bold the median over the best "
             "allocator's median for that test (1.00 is the best; lower is better)." % unit)
    return L, {n: geomean(ratios[n]) for n in names}, ratios


def charts(med_t, med_r, names, outdir):
    """Two PNG bar charts (time and peak RSS, relative to the best per test)
    with gnuplot; returns the file names written, or [] without gnuplot."""
    if not shutil.which("gnuplot"):
        common.log("suite: no gnuplot, no charts")
        return []
    written = []
    for med, stem, title in ((med_t, "bench-time", "time relative to the best allocator"),
                             (med_r, "bench-rss", "peak RSS relative to the best allocator")):
        dat = os.path.join(BUILD, stem + ".dat")
        with open(dat, "w") as f:
            f.write("test " + " ".join(names) + "\n")
            for test, by in med.items():
                best = min(v[0] for v in by.values())
                f.write('"%s" ' % test + " ".join(
                    "%.4f" % (by[n][0] / best) if n in by and best > 0 else "NaN"
                    for n in names) + "\n")
        png = os.path.join(outdir, stem + ".png")
        script = "\n".join([
            "set terminal pngcairo size 1100,480 font ',10'" if "pngcairo" in
            common.run(["gnuplot", "-e", "set terminal"]) else "set terminal png size 1100,480",
            "set output '%s'" % png,
            "set title '%s (lower is better)'" % title,
            "set style data histogram", "set style histogram cluster gap 1",
            "set style fill solid border -1", "set boxwidth 0.9",
            "set key outside right top", "set yrange [0:*]", "set grid ytics",
            "set xtics rotate by -30",
            "plot " + ", ".join("'%s' using %d:xtic(1) title columnheader(%d)" % (dat, i + 2, i + 2)
                                for i in range(len(names))),
        ])
        subprocess.run(["gnuplot"], input=script, text=True, check=True)
        written.append(os.path.basename(png))
    return written


def report(rows, names, missing, cfg, chart_files):
    med_t = medians(rows, names, "seconds")
    med_r = medians(rows, names, "rss_kib")
    L = ["## Workloads", ""]
    L.append("`bench/workloads.c`, one binary, each allocator put in front of glibc's by "
             "`LD_PRELOAD` (kheap as `build/libkheap.so`); %d rounds, interleaved (every test, "
             "and within a test every allocator once, per round); time is the test's own "
             "clock (from its first allocation to its last free), peak RSS is "
             "`/usr/bin/time`'s maximum resident set size of the whole process. Scale %.2f." %
             (cfg["reps"], cfg["scale"]))
    if missing:
        L.append("")
        L.append("Not measured (not installed or not built): %s." % ", ".join(missing))
    L.append("")
    L.append("| test | threads | what it does |")
    L.append("|---|---:|---|")
    for label, _, threads, what in TESTS:
        if label in med_t:
            L.append("| %s | %d | %s |" % (label, threads, what))
    L.append("")
    L.append("### Time (seconds)")
    L.append("")
    lt, gm_t, rt = table(med_t, names, "seconds", lambda x: "%.3f" % x)
    L += lt
    L.append("")
    L.append("### Peak RSS (MiB)")
    L.append("")
    lr, gm_r, rr = table(med_r, names, "MiB", lambda x: "%.1f" % (x / 1024.0))
    L += lr
    L.append("")
    for f in chart_files:
        L.append("![%s](%s)" % (f[:-4], f))
    if chart_files:
        L.append("")
    if "kheap" in names and "mimalloc" in names:
        L.append("### Against the targets")
        L.append("")
        peers = [n for n in names if n != "kheap"]
        worst = []
        for test, by in med_t.items():
            if "kheap" in by and any(p in by for p in peers):
                best_peer = min(by[p][0] for p in peers if p in by)
                worst.append((by["kheap"][0] / best_peer, test))
        worst.sort(reverse=True)
        L.append("- Geometric mean of time: kheap %.2f, mimalloc %.2f: kheap/mimalloc = "
                 "**%.2f** (target ≤ 0.90)." % (gm_t["kheap"], gm_t["mimalloc"],
                                                 gm_t["kheap"] / gm_t["mimalloc"]))
        if worst:
            L.append("- Slowest test against the best peer: %s, **%.2f×** (target ≤ 1.5); "
                     "over 1.5: %s." % (worst[0][1], worst[0][0],
                                        ", ".join("%s %.2f" % (t, r) for r, t in worst if r > 1.5)
                                        or "none"))
        L.append("- Geometric mean of peak RSS: kheap %.2f, mimalloc %.2f: kheap/mimalloc = "
                 "**%.2f** (target ≤ 1.00)." % (gm_r["kheap"], gm_r["mimalloc"],
                                                 gm_r["kheap"] / gm_r["mimalloc"]))
        L.append("")
    return L


def smoke_harness(kheap):
    """bench/bench.c's modes, once each with tiny counts, under kheap's
    libkheap.so. Returns the number of failures."""
    out = os.path.join(BUILD, "bench-malloc")
    common.run(["gcc"] + common.CFLAGS + [os.path.join(common.BENCH, "bench.c"), "-o", out,
                                          "-lpthread", "-ldl"])
    alloc = ("kheap", out, kheap[1], kheap[2])
    failed = 0
    for args in (["hot", "pair", 6400], ["hot", "pair-alone", 6400], ["hot", "malloc", 6400],
                 ["hot", "free", 6400], ["hot", "loop", 6400], ["tput", 1, 20000],
                 ["tput", 2, 20000], ["tput-none", 2, 20000], ["pc", "64", 20000],
                 ["pc", "mixed", 20000], ["live", 2000, 32]):
        what = " ".join(str(a) for a in args)
        try:
            common.run_harness(alloc, args)
            print("ok - bench.c %s under kheap" % what)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            print("not ok - bench.c %s under kheap: %s" % (what, e))
            failed += 1
    return failed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--reps", type=int)
    ap.add_argument("--only")
    ap.add_argument("--lib", help="with --smoke: the libkheap.so to test")
    args = ap.parse_args()
    cfg = dict(CONFIGS["smoke" if args.smoke else "quick" if args.quick else "full"])
    if args.reps:
        cfg["reps"] = args.reps
    only = set(args.only.split(",")) if args.only else None
    build()
    allocs, missing = allocators(smoke=args.smoke, lib=args.lib)
    if args.smoke:
        # make check: every test once, tiny, under kheap and glibc; a
        # failure (bad block, crash, wrong malloc) is a failed check.
        failed = 0
        if "kheap" in missing:
            print("not ok - suite smoke: libkheap.so is not built")
            failed += 1
        else:
            failed += smoke_harness(allocs[0])
        for label, test, threads, _ in TESTS:
            for alloc in allocs:
                try:
                    r = run_one(alloc, test, threads, cfg["scale"])
                    print("ok - suite %s under %s (%.3f s, %d KiB)" % (
                        label, alloc[0], r["seconds"], r["rss_kib"]))
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    print("not ok - suite %s under %s: %s" % (label, alloc[0], e))
                    failed += 1
        return 1 if failed else 0
    t0 = time.time()
    rows = run_suite(allocs, cfg, only)
    names = [a[0] for a in allocs]
    print("\n".join(report(rows, names, missing, cfg, [])))
    common.log("suite: %.0f s" % (time.time() - t0))
    return 0


if __name__ == "__main__":
    common.script_main(main, "suite")
