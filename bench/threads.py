#!/usr/bin/env python3
"""Many threads on few CPUs: bench/bench.c's throughput loop (each thread
replaces random blocks of 16..512 B in a ring of 64) with 2 threads and
with 256, under kheap (libkheap.so through LD_PRELOAD), glibc, jemalloc,
mimalloc and tcmalloc. Reports throughput and peak RSS, medians of
interleaved rounds (every allocator and thread count once, then again),
and each allocator's 256-thread figures over its own 2-thread ones: an
allocator whose caches belong to CPUs keeps both near 1, one whose caches
belong to threads grows its RSS with the threads.

    python3 bench/threads.py [--reps N] [--pairs N]   write the section
                                                      into docs/BENCHMARKS.md

Every run does the same total work: --pairs (default 64 000 000) split
over the threads; throughput is the pairs over the process's wall time
(thread creation included: with 256 threads the harness's own clock,
started at a barrier, measures too little to be steady). bench/run.py
calls measure() and report() for `make bench`.

Only the Python standard library is used.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import suite  # noqa: E402

BEGIN = "<!-- threads: written by bench/threads.py -->"
END = "<!-- end of threads -->"
THREADS = [2, 256]


def allocators(bin_malloc):
    so = suite.kheap_so()
    if not so:
        raise RuntimeError("no build/libkheap.so")
    peers, missing = common.harness_peers(bin_malloc)
    rows = [("kheap", bin_malloc, so, "libkheap.so")]
    percpu = suite.kheap_so(name="libkheap-percpu.so")
    if percpu:
        rows.append(("kheap per-CPU", bin_malloc, percpu, "libkheap-percpu.so"))
    return rows + peers, missing


def measure(bin_malloc, reps=3, pairs=64_000_000):
    allocs, missing = allocators(bin_malloc)
    by_name = {a[0]: a for a in allocs}

    def one(config, busy):
        name, t = config
        t0 = time.time()
        r = common.run_harness(by_name[name], ["tput", t, pairs // t])
        return (pairs // t * t / (time.time() - t0), int(r["maxrss_kib"]), busy)

    rows = common.interleaved("threads", reps, [(a[0], t) for a in allocs for t in THREADS], one)
    # The floor: the same threads running the loop without allocator calls
    # (tput-none), under the C library's malloc: their stacks and the C
    # library's own, which no allocator can go below.
    plain = ("glibc", bin_malloc, None, "libc")
    floor = {t: int(common.run_harness(plain, ["tput-none", t, pairs // t])["maxrss_kib"])
             for t in THREADS}
    return dict(rows=rows, names=[a[0] for a in allocs], reps=reps, pairs=pairs,
                missing=missing, floor=floor)


def report(m):
    rows, names = m["rows"], m["names"]

    def med(name, t, k):
        return common.median(rows[(name, t)], k)

    L = [BEGIN, "## Many threads on few CPUs", "",
         "`bench/threads.py` (part of `make bench`): bench/bench.c's throughput loop with "
         "%s threads, %d pairs in all split over the threads (pairs over the process's wall "
         "time), %d interleaved rounds; medians (min-max). kheap is libkheap.so through "
         "`LD_PRELOAD`, kheap per-CPU libkheap-percpu.so (caches per CPU through "
         "restartable sequences). The last two columns are each allocator's 256-thread "
         "figures over its own 2-thread ones. The same threads without allocator calls "
         "(`tput-none`, the C library's malloc) peak at %s KiB: their stacks and the C "
         "library's own, the floor under every row." % (
             " and ".join(str(t) for t in THREADS), m["pairs"], m["reps"],
             " and ".join("%d" % m["floor"][t] for t in THREADS)), "",
         "| allocator | M pairs/s, 2 threads | M pairs/s, 256 threads | peak RSS KiB, 2 | "
         "peak RSS KiB, 256 | throughput 256/2 | RSS 256/2 |",
         "|---|---:|---:|---:|---:|---:|---:|"]
    for n in names:
        cells = []
        for t in THREADS:
            cells.append(common.spread([r[0] / 1e6 for r in rows[(n, t)]], "%.1f", "-"))
        for t in THREADS:
            cells.append("%d" % med(n, t, 1))
        cells.append("%.2f" % (med(n, 256, 0) / med(n, 2, 0)))
        cells.append("%.2f" % (med(n, 256, 1) / med(n, 2, 1)))
        L.append("| %s | %s |" % (n, " | ".join(cells)))
    busy = [r[2] for v in rows.values() for r in v]
    L += ["", "The machine was busy at most %.0f %% before a run (other work on it)." %
          (100 * max(busy))]
    if m["missing"]:
        L.append("Missing peers: %s." % ", ".join(m["missing"]))
    L += ["", END]
    return "\n".join(L)


def main():
    ap = common.section_parser(__doc__)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--pairs", type=int, default=64_000_000)
    args = ap.parse_args()
    import run  # the harnesses are built as for the other tests
    _, bin_malloc, _ = run.build(common.ROOT)
    return common.show_section(args, report(measure(bin_malloc, args.reps, args.pairs)),
                               BEGIN, END)


if __name__ == "__main__":
    common.script_main(main, "threads")
