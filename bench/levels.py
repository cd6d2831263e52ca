#!/usr/bin/env python3
"""What each level of checking costs: libkheap.so at KHEAP_DEBUG 0 (the
default), with sampled guard blocks, at levels 1, 2 and 3, and
libkheap-debug.so (level 2 with redzones, the quarantine and block
kinds), each put in front of glibc with LD_PRELOAD.

    python3 bench/levels.py     write the section into docs/BENCHMARKS.md

Per configuration:
- instructions per malloc(32)+free pair: one callgrind run of
  `bench/bench.c hot pair N 32` (64 other blocks live, the harness loop
  included), as bench/sizes.py counts;
- memory: `bench/bench.c live 20000 32`, resident bytes added per live
  32-byte block (data, rounding, metadata, what the caches keep), and
  what stays resident once all are freed (the quarantine's and caches'
  hold).
Callgrind counts and these resident sizes are deterministic, so one run
each. Level 3 runs kheap_check over the whole heap on every call, too
slow for callgrind or 20000 blocks: it gets the time per pair of a
native `hot pair 64 32` run instead (its memory is level 2's). The levels 1 to 3 libraries are built here, into bench/build/,
with the Makefile's rules for libkheap.so and KHEAP_DEBUG set.
bench/run.py calls measure() and report() for `make bench` (its
`levels` test).

Only the Python standard library is used.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import sizes  # noqa: E402
import suite  # noqa: E402

BEGIN = "<!-- levels: written by bench/levels.py -->"
END = "<!-- end of levels -->"
LIVE = 20000
PAIRS = 64000
# name, library (None: the release build, a level: built here), extra
# environment, whether callgrind and the live test can run it
CONFIGS = [
    ("0 (libkheap.so)", None, {}, True),
    ("0, sampled 1 in 1000", None, {"KHEAP_SAMPLE_RATE": "1000"}, True),
    ("0, sampled 1 in 10", None, {"KHEAP_SAMPLE_RATE": "10"}, True),
    ("1", 1, {}, True),
    ("2", 2, {}, True),
    ("debug (libkheap-debug.so)", "debug", {}, True),
    ("3", 3, {}, False),
]


def library(which):
    """The path of a configuration's libkheap.so, built if needed."""
    env = common.make_env()
    jobs = "-j%d" % (os.cpu_count() or 1)
    if which is None:
        so = suite.kheap_so()
        if not so:
            raise RuntimeError("no build/libkheap.so")
        return so
    if which == "debug":
        common.run(["make", "--no-print-directory", jobs, "build/libkheap-debug.so"], env=env)
        return os.path.join(common.ROOT, "build", "libkheap-debug.so")
    b = os.path.join("bench", "build", "level%d" % which)
    so = os.path.join(b, "libkheap.so")
    common.run(["make", "--no-print-directory", jobs, "B=" + b, "KHEAP_DEBUG=%d" % which, so],
               env=env)
    return os.path.join(common.ROOT, so)


def measure(bin_malloc):
    """[(name, instructions per pair, bytes per live block, KiB held
    after the frees, native ns per pair)]; None where not measured."""
    cgdir = os.path.join(common.BUILD, "callgrind")
    os.makedirs(cgdir, exist_ok=True)
    rows = []
    for i, (name, which, env, full) in enumerate(CONFIGS):
        alloc = (name, bin_malloc, library(which), "libkheap")
        if full:
            per = sizes.callgrind(alloc, ["hot", "pair", PAIRS, 32],
                                  os.path.join(cgdir, "levels-%d.out" % i), env) / PAIRS
            live = common.run_harness(alloc, ["live", LIVE, 32], extra_env=env)
            rows.append((name, per, float(live["bytes_per_block"]),
                         int(live["held_after_free_kib"]), None))
            common.log("levels: %-28s %7.0f instructions, %6.1f bytes/block, %d KiB held"
                       % rows[-1][:4])
        else:
            hot = common.run_harness(alloc, ["hot", "pair", 64, 32], extra_env=env)
            rows.append((name, None, None, None, float(hot["ns_per_op"])))
            common.log("levels: %-28s %.0f ns per pair" % (name, rows[-1][4]))
    return rows


def report(rows):
    L = [BEGIN, "## What each level of checking costs", "",
         "`bench/levels.py` (part of `make bench`): libkheap.so at each `KHEAP_DEBUG` level "
         "and libkheap-debug.so, through `LD_PRELOAD`. Instructions: callgrind over "
         "`bench/bench.c hot pair N 32` (malloc(32)+free pairs with 64 other blocks live, the "
         "harness loop included; level 3, which checks the whole heap on every call, is timed "
         "natively instead, below). The sampled rows sample at the rate given; how many "
         "blocks are sampled at once is bounded by the guard pool (`KHEAP_GUARD_SLOTS`), so "
         "their memory stays small at any rate. Memory: `bench/bench.c live %d 32`, the resident bytes %d live 32-byte blocks "
         "add, per block, and what stays resident once they are all freed. docs/DESIGN.md "
         "(\"Misuse: what is detected, at which level\") says what each finds." % (LIVE, LIVE),
         "",
         "- Date: %s UTC; commit %s." % (common.utc_now(), common.kheap_commit()),
         "",
         "| level | instructions per pair | vs level 0 | bytes per live 32-byte block | "
         "KiB resident after all are freed |",
         "|---|---:|---:|---:|---:|"]
    base = rows[0][1]
    notes = []
    for name, per, bpb, held, ns in rows:
        if per is None:
            L.append("| %s | — | — | as level 2 | as level 2 |" % name)
            notes.append("Level %s: %.1f ms per pair, natively (`hot pair 64 32`): a whole "
                         "`kheap_check` of the default heap on every call." % (name, ns / 1e6))
            continue
        L.append("| %s | %.0f | %.1f | %.1f | %d |" % (name, per, per / base, bpb, held))
    L += [""] + notes + ["", END]
    return "\n".join(L)


def main():
    args = common.section_parser(__doc__).parse_args()
    import run  # the harnesses are built as for the hot test
    _, bin_malloc, _ = run.build(common.ROOT)
    return common.show_section(args, report(measure(bin_malloc)), BEGIN, END)


if __name__ == "__main__":
    common.script_main(main, "levels")
