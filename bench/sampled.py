#!/usr/bin/env python3
"""What the sampled guard blocks cost (kheap_set_sample; libkheap.so's
KHEAP_SAMPLE_RATE): two workloads of bench/workloads.c under libkheap.so
with sampling off and at one allocation in 10000, 1000 and 100, rounds
interleaved (every rate once, then again), medians of the rounds. Reports
wall time relative to sampling off in the same run, peak RSS, and how many
blocks were sampled (the libkheap.so statistics printed at exit).

    python3 bench/sampled.py [--reps N] [--scale S]   write the section
                                                      into docs/BENCHMARKS.md
bench/run.py calls measure() and report() for `make bench`.
"""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import suite  # noqa: E402

BEGIN = "<!-- sampled guard blocks: written by bench/sampled.py -->"
END = "<!-- end of sampled guard blocks -->"
RATES = [0, 10000, 1000, 100]
TESTS = [("larson", 2), ("rptest", 1), ("mstress", 1)]


def run_once(so, test, threads, rate, scale):
    """(seconds, peak RSS in KiB, sampled blocks) of one run."""
    env = dict(os.environ, LD_PRELOAD=so, KHEAP_STATS="1", KHEAP_SAMPLE_RATE=str(rate))
    r, w = os.pipe()
    t0 = time.time()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.dup2(w, 1)
        os.dup2(w, 2)
        os.execve(suite.WORKLOADS, [suite.WORKLOADS, test, str(scale), str(threads)], env)
    os.close(w)
    out = b""
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        out += chunk
    os.close(r)
    _, status, ru = os.wait4(pid, 0)
    secs = time.time() - t0
    text = out.decode(errors="replace")
    if status != 0 or "RESULT" not in text:
        raise RuntimeError("%s at rate %d failed (status %d): %s" % (test, rate, status, text[-800:]))
    m = re.search(r"sampled (\d+)", text)
    return secs, ru.ru_maxrss, int(m.group(1)) if m else 0


def measure(reps=5, scale=1.0):
    suite.build()
    so = suite.kheap_so()
    if not so:
        raise RuntimeError("no libkheap.so")
    rows = common.interleaved("sampled", reps,
                              [(test, threads, rate) for test, threads in TESTS for rate in RATES],
                              lambda config, busy: run_once(so, *config, scale))
    return rows, reps, scale


def report(measured):
    rows, reps, scale = measured
    L = [BEGIN, "## Sampled guard blocks (KHEAP_SAMPLE_RATE)", "",
         "`bench/sampled.py` (part of `make bench`): workloads of `bench/workloads.c` at scale %g "
         "under libkheap.so, with sampling off and at one allocation in 10000, 1000 and 100 "
         "(`KHEAP_SAMPLE_RATE`), %d interleaved rounds; medians, and the time relative to sampling "
         "off in the same run. \"sampled\" is how many blocks got a guard page (the statistics "
         "libkheap.so prints at exit with `KHEAP_STATS=1`). The hit paths do not change with the "
         "rate (the count is taken on magazine refills), so what grows is the cost of the sampled "
         "blocks themselves: two `mprotect` calls and a page written and checked each." % (scale, reps),
         "",
         "- Date: %s UTC; commit %s; nproc %s; load average at the end %.2f."
         % (common.utc_now(),
            common.run(["git", "rev-parse", "--short=12", "HEAD"]).strip(),
            os.cpu_count(), os.getloadavg()[0]),
         "",
         "| workload | threads | rate | seconds (median, min-max) | vs off | peak RSS MiB | sampled |",
         "|---|---|---|---|---|---|---|"]
    for test, threads in TESTS:
        base = common.median(rows[(test, threads, 0)], 0)
        for rate in RATES:
            rs = rows[(test, threads, rate)]
            L.append("| %s | %d | %s | %s | %.2f | %.1f | %d |" % (
                test, threads, "off" if rate == 0 else "1 in %d" % rate,
                common.spread([r[0] for r in rs], "%.3f", "-"), common.median(rs, 0) / base,
                common.median(rs, 1) / 1024.0, int(common.median(rs, 2))))
    L += ["", END]
    return "\n".join(L)



def main():
    ap = common.section_parser(__doc__)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--scale", type=float, default=1.0)
    args = ap.parse_args()
    return common.show_section(args, report(measure(args.reps, args.scale)), BEGIN, END)


if __name__ == "__main__":
    main()
