#!/usr/bin/env python3
"""Per-CPU caches against thread slots: the workload suite
(bench/workloads.c) under libkheap.so (each thread owns a slot of
magazines) and libkheap-percpu.so (every thread on a CPU shares the CPU's,
through restartable sequences), interleaved; wall time and peak RSS,
medians (min-max), and the per-CPU library over the per-thread one.

    python3 bench/percpu.py [--reps N] [--scale S]   write the section
                                                     into docs/BENCHMARKS.md

bench/run.py keeps the section when it rewrites the rest of the file.
Only the Python standard library is used.
"""
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import suite  # noqa: E402

BEGIN = "<!-- percpu: written by bench/percpu.py -->"
END = "<!-- end of percpu -->"
NAMES = ["libkheap.so", "libkheap-percpu.so"]


def measure(reps=3, scale=1.0):
    allocs = []
    for name in NAMES:
        so = suite.kheap_so(name=name)
        if not so:
            raise RuntimeError("no build/" + name)
        allocs.append((name, so, name))
    suite.build()
    rows = suite.run_suite(allocs, dict(reps=reps, scale=scale))
    return dict(rows=rows, reps=reps, scale=scale)


def report(m):
    rows = m["rows"]
    L = [BEGIN, "## Per-CPU caches against thread slots", "",
         "`bench/percpu.py`: the workload suite (scale %g) under libkheap.so (a slot of "
         "magazines per thread) and libkheap-percpu.so (per-CPU magazines shared through "
         "restartable sequences), %d interleaved rounds; medians (min-max) and the per-CPU "
         "library's over the per-thread one's. docs/DESIGN.md (\"Hosted, per CPU\") says why "
         "the per-CPU library is slower where threads share a CPU." % (m["scale"], m["reps"]),
         "",
         "| test | seconds, slots | seconds, per-CPU | ratio | peak RSS MiB, slots | "
         "peak RSS MiB, per-CPU | ratio |",
         "|---|---:|---:|---:|---:|---:|---:|"]
    for label, _, threads, _ in suite.TESTS:
        cells, med = [], {}
        for key, div, fmt in (("seconds", 1.0, "%.3f"), ("rss_kib", 1024.0, "%.1f")):
            for n in NAMES:
                v = [r[key] / div for r in rows if r["test"] == label and r["allocator"] == n]
                med[(key, n)] = statistics.median(v)
                cells.append("%s (%s–%s)" % (fmt % med[(key, n)], fmt % min(v), fmt % max(v)))
            cells.append("**%.2f**" % (med[(key, NAMES[1])] / med[(key, NAMES[0])]))
        L.append("| %s (%d threads) | %s |" % (label, threads, " | ".join(cells)))
    L += ["", END]
    return "\n".join(L)


def main():
    ap = common.section_parser(__doc__)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1.0)
    args = ap.parse_args()
    return common.show_section(args, report(measure(args.reps, args.scale)), BEGIN, END)


if __name__ == "__main__":
    common.script_main(main, "percpu")
