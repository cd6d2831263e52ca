#!/usr/bin/env python3
"""CPython's own regression tests under kheap and its peers: wall time,
peak RSS, and whether every test case ends the same way.

    python3 bench/cpython.py [--reps N] [--only test_json,...] [--no-doc]

Each test module of TESTS runs as `/usr/bin/python3 -m test --junit-xml F
MODULE` under /usr/bin/time -v, with glibc's malloc and with LD_PRELOAD of
libkheap.so, jemalloc, mimalloc and tcmalloc, interleaved (every allocator
once, then again), --reps rounds (default 3), PYTHONMALLOC=malloc so that
Python's objects come from the allocator under test. The outcome of every
test case (passed, skipped, failure, error), read from the JUnit file, must
be the same under every allocator and in every round; the report says if
it is not. Results: bench/results/cpython.csv (every run) and the "CPython's
regression tests" section of docs/BENCHMARKS.md (medians and min-max),
which bench/run.py keeps when it rewrites the rest of that file.

The test suite is Debian's libpython3.X-testsuite (tools/deps.sh real).
Only the Python standard library is used.
"""
import math
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import suite  # noqa: E402

RESULTS = os.path.join(common.BENCH, "results")
BEGIN = "<!-- cpython: written by bench/cpython.py -->"
END = "<!-- end of cpython -->"
PYTHON = "/usr/bin/python3"

# Modules that allocate much and spend their time computing: about 50 s
# in all with glibc on 2 cores. test_io and test_subprocess are left out:
# most of their 20-30 s each is spent waiting (timeouts, sleeps, children).
TESTS = ["test_email", "test_compile", "test_lzma", "test_zipfile", "test_tarfile",
         "test_weakref", "test_pickle", "test_statistics", "test_decimal", "test_ast",
         "test_bz2", "test_gc", "test_itertools", "test_set", "test_long", "test_json",
         "test_bytes", "test_unicode", "test_dict", "test_list"]

FIELDS = ["round", "test", "allocator", "wall_s", "max_rss_kib", "exit", "cases",
          "passed", "skipped", "failed"]


def outcomes(path):
    """{test case: passed, skipped, failure or error} from a JUnit file."""
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        kinds = [c.tag for c in case if c.tag in ("failure", "error", "skipped")]
        out[case.get("name")] = kinds[0] if kinds else "passed"
    return out


def gnu_time(path):
    """(wall seconds, peak RSS KiB) from the file of /usr/bin/time -v -o."""
    with open(path) as f:
        text = f.read()
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", text)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if not wall or not rss:
        raise RuntimeError("no time or RSS from /usr/bin/time:\n" + text[-1000:])
    h, m, s = wall.groups()
    return int(h or 0) * 3600 + int(m) * 60 + float(s), int(rss.group(1))


def one_run(test, preload, work):
    """(wall s, peak RSS KiB, exit status, outcomes) of one test module."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("KHEAP_") and not k.startswith("PYTHON") and k != "LD_PRELOAD"}
    env["PYTHONMALLOC"] = "malloc"
    if preload:
        env["LD_PRELOAD"] = preload
    junit = os.path.join(work, "junit.xml")
    times = os.path.join(work, "time.txt")
    for f in (junit, times):
        if os.path.exists(f):
            os.unlink(f)
    p = subprocess.run(["/usr/bin/time", "-v", "-o", times, PYTHON, "-m", "test",
                        "--junit-xml", junit, test], cwd=work, env=env,
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=900)
    if not os.path.exists(junit):
        raise RuntimeError("%s under %s wrote no JUnit file (exit %d):\n%s"
                           % (test, preload or "glibc", p.returncode, p.stdout[-2000:]))
    wall, rss = gnu_time(times)
    return wall, rss, p.returncode, outcomes(junit)


def measure(reps, only=None):
    """reps interleaved rounds of TESTS (or those in only). Returns (rows,
    allocator names, missing, differences, seconds): rows are the CSV
    rows; differences lists the test cases whose outcome was not the same
    in every run."""
    common.require(("/usr/bin/time", PYTHON))
    tests = [t for t in TESTS if not only or t in only]
    libdir = common.run([PYTHON, "-c", "import os, test; print(os.path.dirname(test.__file__))"])
    for t in tests:
        d = os.path.join(libdir.strip(), t)
        if not (os.path.exists(d + ".py") or os.path.isdir(d)):
            raise RuntimeError("%s has no %s: run tools/deps.sh real (libpython3.X-testsuite)"
                               % (PYTHON, t))
    t0 = time.time()
    allocs, missing = common.preloads(suite.kheap_so())
    rows, seen = [], {}
    with common.scratch("cpython") as work:
        for rnd in common.rounds("cpython", reps, t0):
            for t in tests:
                for name, preload in allocs:
                    wall, rss, status, res = one_run(t, preload, work)
                    for case, how in res.items():
                        seen.setdefault((t, case), {}).setdefault(how, []).append(name)
                    n = {k: sum(1 for v in res.values() if v == k)
                         for k in ("passed", "skipped", "failure", "error")}
                    rows.append(dict(round=rnd, test=t, allocator=name,
                                     wall_s=round(wall, 3), max_rss_kib=rss, exit=status,
                                     cases=len(res), passed=n["passed"], skipped=n["skipped"],
                                     failed=n["failure"] + n["error"]))
    runs = reps * len(allocs)
    diff = []
    for (t, case), by in sorted(seen.items()):
        if len(by) > 1 or sum(len(v) for v in by.values()) != runs:
            diff.append("%s: %s" % (case, "; ".join(
                "%s under %s" % (how, ", ".join(sorted(set(who)))) for how, who in by.items())))
    common.write_csv(os.path.join(RESULTS, "cpython.csv"), rows, FIELDS)
    return rows, [a for a, _ in allocs], missing, diff, time.time() - t0


def geomean(xs):
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else None


def report(rows, names, missing, diff, reps, elapsed):
    L = [BEGIN, "## CPython's regression tests", ""]
    version = common.run([PYTHON, "-c", "import platform; print(platform.python_version())"])
    tests = list(dict.fromkeys(r["test"] for r in rows))
    L.append("Generated by `bench/cpython.py` (`make bench-cpython`); %s UTC, Debian's Python "
             "%s, kheap at %s, %d interleaved rounds, %.0f s in all. Each module runs alone as "
             "`/usr/bin/time -v %s -m test --junit-xml F MODULE` with glibc's malloc, and "
             "with `LD_PRELOAD` of `libkheap.so`, jemalloc, mimalloc or tcmalloc, each "
             "allocator once per round in turn, with `PYTHONMALLOC=malloc` so that Python's "
             "objects come from the allocator under test. Figures are the median and the "
             "min–max over the rounds; *vs glibc* divides kheap's median by glibc's (below 1: "
             "kheap is faster or smaller). The *all* row of the times adds up each round's "
             "(median and min–max of the sums); that of the peak RSS is each allocator's "
             "geometric mean, over the tests, of its median over glibc's. The %d CPUs are "
             "shared: other work adds noise, which the min–max shows. `test_io` and "
             "`test_subprocess` are left out: they spend most of their 20–30 s waiting."
             % (common.utc_now(), version.strip(),
                common.kheap_commit(), reps, elapsed, PYTHON, os.cpu_count() or 1))
    if missing:
        L += ["", "Not measured (library not found): %s." % ", ".join(missing)]
    by, meds = {}, {}
    for r in rows:
        by.setdefault((r["test"], r["allocator"]), []).append(r)
    for title, key, scale, fmt in (("Wall time, seconds", "wall_s", 1, "%.2f"),
                                   ("Peak RSS, MiB", "max_rss_kib", 1 / 1024, "%.1f")):
        L += ["", "### " + title, ""] + common.table_head("test", names, "kheap vs glibc")
        med = meds[key] = {}
        for t in tests:
            line, m = common.table_row(t, names, {a: [r[key] * scale for r in by.get((t, a), [])]
                                                  for a in names}, fmt)
            med.update(((t, a), v) for a, v in m.items())
            L.append(line)
        if key == "wall_s":
            # Each round's total, then their median.
            sums = {a: {} for a in names}
            for r in rows:
                if r["allocator"] in sums:
                    s = sums[r["allocator"]]
                    s[r["round"]] = s.get(r["round"], 0) + r[key]
            line, m = common.table_row("**all**", names,
                                       {a: list(s.values()) for a, s in sums.items()}, fmt, True)
            med.update((("all", a), v) for a, v in m.items())
            L.append(line)
        else:
            # Each allocator's geometric mean over the tests of its median
            # over glibc's.
            gm = {a: geomean([med[(t, a)] / med[(t, "glibc")] for t in tests
                              if (t, a) in med and med.get((t, "glibc"))]) for a in names}
            med.update((("all", a), v) for a, v in gm.items())
            L.append("| **all**, geometric mean vs glibc | %s | **%s** |" % (
                " | ".join("%.2f" % gm[a] if gm[a] else "—" for a in names),
                "%.2f" % gm["kheap"] if gm.get("kheap") else "—"))
    t, r = meds["wall_s"], meds["max_rss_kib"]
    if t.get(("all", "kheap")) and t.get(("all", "glibc")) and r.get(("all", "kheap")):
        above = ["%s %.2f" % (x, r[(x, "kheap")] / r[(x, "glibc")]) for x in tests
                 if (x, "kheap") in r and (x, "glibc") in r and r[(x, "kheap")] > r[(x, "glibc")]]
        L += ["", "Against the targets (kheap's peak RSS at most glibc's, its time no worse): "
              "kheap's total time over glibc's is **%.2f**; its peak RSS over glibc's, "
              "geometric mean **%.2f**; tests where kheap's peak RSS is above glibc's: %s."
              % (t[("all", "kheap")] / t[("all", "glibc")], r[("all", "kheap")],
                 ", ".join(above) or "none")]
    first = [r for r in rows if r["round"] == 1 and r["allocator"] == names[0]]
    counts = {k: sum(r[k] for r in first) for k in ("cases", "passed", "skipped", "failed")}
    L.append("")
    if diff:
        L.append("Test results: **not the same** under every allocator. Test cases whose "
                 "outcome differed:")
        L.append("")
        L += ["- " + d for d in diff]
    else:
        L.append("Test results: **the same under every allocator and in every round**: "
                 "%(cases)d test cases, %(passed)d passed, %(skipped)d skipped (resources "
                 "not enabled, or not for this platform), %(failed)d failed." % counts)
    L += ["", END, ""]
    return "\n".join(L)


def main():
    ap = common.parser(__doc__)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", help="comma-separated test modules (of TESTS)")
    ap.add_argument("--no-doc", action="store_true", help="do not touch docs/BENCHMARKS.md")
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else None
    rows, names, missing, diff, elapsed = measure(args.reps, only)
    section = report(rows, names, missing, diff, args.reps, elapsed)
    if args.no_doc:
        print(section)
    else:
        common.write_section(section, BEGIN, END, "CPython")
    return 1 if diff else 0


if __name__ == "__main__":
    common.script_main(main, "bench/cpython.py")
