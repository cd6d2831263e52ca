#!/usr/bin/env python3
"""Real programs under kheap and its peers: wall time and peak RSS.

    python3 bench/real.py [--reps N] [--only python3,sqlite3,...]

Each workload (the same programs and inputs as tests/real/, which checks
their output) runs under /usr/bin/time -v with glibc's malloc, and with
LD_PRELOAD of libkheap.so, jemalloc, mimalloc and tcmalloc, interleaved
(every allocator once, then again), --reps rounds (default 5). Results:
bench/results/real.csv (every run) and the "Real programs" section of
docs/BENCHMARKS.md (medians and min-max), which bench/run.py keeps when it
rewrites the rest of that file.

Peak RSS is GNU time's "Maximum resident set size": for a workload that
starts several processes (git, gcc, g++, sort), the largest of them.

Only the Python standard library is used.
"""
import argparse
import csv
import datetime
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (BENCH, ROOT, log, make_env, preloads, script_main, splice,  # noqa: E402
                    table_head, table_row)

BUILD = os.path.join(BENCH, "build", "real")
RESULTS = os.path.join(BENCH, "results")
DOC = os.path.join(ROOT, "docs", "BENCHMARKS.md")
T = os.path.join(ROOT, "tests", "real")
BEGIN = "<!-- real programs: written by bench/real.py -->"
END = "<!-- end of real programs -->"

GIT = """
export HOME=$PWD GIT_CONFIG_NOSYSTEM=1 GIT_AUTHOR_NAME=kheap GIT_AUTHOR_EMAIL=kheap@example.org
export GIT_COMMITTER_NAME=kheap GIT_COMMITTER_EMAIL=kheap@example.org
export GIT_AUTHOR_DATE=2026-01-01T00:00:00Z GIT_COMMITTER_DATE=2026-01-01T00:00:00Z
rm -rf repo && git init -q repo && cd repo &&
for i in $(seq 1 300); do seq $i $((i * 40)) >f$i.txt; done &&
git add . && git commit -q -m first &&
sed -i s/1/one/ f1*.txt && git commit -q -a -m second &&
git log --stat --format="%H %s" >/dev/null && git gc -q && git fsck --no-progress
"""
GCC = """
for f in slab pages cpu region check; do
  gcc -O2 -std=c11 -DKHEAP_PORT_PAGES=1 -I"$ROOT/include" -I"$ROOT/src" -I"$ROOT/src/core" -c "$ROOT/src/core/$f.c" -o $f.o || exit 1
done
"""
SORT = """
sort in.txt >/dev/null && sort -n -k1,1 in.txt >/dev/null && sort -u -k2 in.txt >/dev/null
"""

# name, what it is, command (argv), whether it needs a prepared directory
WORKLOADS = [
    ("python3", "build and sort 600 000 dicts, tuples and strings (PYTHONMALLOC=malloc)",
     ["python3", os.path.join(T, "objects.py")]),
    ("sqlite3", "100 000 rows: insert, two indexes, queries, update, delete (in memory)",
     ["sh", "-c", "sqlite3 :memory: <'%s'" % os.path.join(T, "db.sql")]),
    ("git", "init, add 300 files, two commits, log --stat, gc, fsck",
     ["sh", "-c", GIT]),
    ("gcc", "gcc -O2 -c of five kheap source files",
     ["sh", "-c", GCC]),
    ("perl", "300 000 words: hashes, sorts, regexes",
     ["perl", os.path.join(T, "words.pl")]),
    ("lua", "300 000 tables: sort, concatenation, grouping",
     ["lua5.4", os.path.join(T, "tables.lua")]),
    ("sort", "sort a 600 000-line file three ways",
     ["sh", "-c", SORT]),
    ("g++", "g++ -O1 of a C++17 program using std::map, std::string, std::unordered_map",
     ["g++", "-O1", "-std=c++17", "-o", "maps", os.path.join(T, "maps.cpp")]),
    ("c++ maps", "that program: 400 000 map/string/unordered_map operations",
     ["./maps"]),
]


def build():
    env = make_env()
    b = os.path.relpath(BUILD, ROOT)
    subprocess.run(["make", "--no-print-directory", "-j%d" % (os.cpu_count() or 1), "B=" + b,
                    os.path.join(b, "libkheap.so")], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return os.path.join(BUILD, "libkheap.so")


def prepare(work):
    """Inputs the workloads share: the sort file, the C++ binary."""
    with open(os.path.join(work, "in.txt"), "w") as f:
        for i in range(1, 600001):
            f.write("%d line %d\n" % ((i * 7919) % 1000003, i))
    subprocess.run(["g++", "-O1", "-std=c++17", "-o", os.path.join(work, "maps"),
                    os.path.join(T, "maps.cpp")], check=True)


def timed(argv, preload, work):
    env = dict(os.environ, ROOT=ROOT, T=T, PYTHONMALLOC="malloc")
    env.pop("LD_PRELOAD", None)
    if preload:
        env["LD_PRELOAD"] = preload
    p = subprocess.run(["/usr/bin/time", "-v"] + argv, cwd=work, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise RuntimeError("%s exited %d under %s:\n%s" % (argv, p.returncode, preload,
                                                          p.stderr[-2000:]))
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", p.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    h, m, s = wall.groups()
    return (int(h or 0) * 3600 + int(m) * 60 + float(s)), int(rss.group(1))


def report(rows, allocs, reps, elapsed, missing):
    L = [BEGIN, "## Real programs", ""]
    L.append("Generated by `bench/real.py` (`make bench-real`); %s UTC, %d interleaved rounds, "
             "%.0f s in all. Each workload is one of `tests/real/` (which `make check` runs to "
             "compare the output with glibc's): `/usr/bin/time -v` of the program with glibc's "
             "malloc, and with `LD_PRELOAD` of `libkheap.so`, jemalloc, mimalloc or tcmalloc, "
             "each allocator once per round in turn. Figures are the median and the min–max "
             "over the rounds; *vs glibc* divides kheap's median by glibc's (below 1: kheap "
             "is faster or smaller). Peak RSS is GNU time's maximum resident set size: for "
             "the workloads that start several processes (git, gcc, sort), that of the "
             "largest. Python runs with `PYTHONMALLOC=malloc`, so its objects come from "
             "the allocator under test rather than Python's own arenas. The machine has 2 "
             "shared cores: other work adds noise, which the min–max shows."
             % (datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M"), reps, elapsed))
    if missing:
        L.append("")
        L.append("Not measured (library not found): %s." % ", ".join(missing))
    for metric, title, fmt, key in (("wall", "Wall time, seconds", "%.2f", 0),
                                    ("rss", "Peak RSS, MiB", "%.1f", 1)):
        L += ["", "### " + title, ""] + table_head("workload", allocs, "kheap vs glibc")
        for name, what, _ in WORKLOADS:
            vals = {a: [r[key] if key == 0 else r[key] / 1024.0 for r in rows.get((name, a), [])]
                    for a in allocs}
            L.append(table_row(name, allocs, vals, fmt)[0])
    L += ["", "Workloads:", ""]
    for name, what, _ in WORKLOADS:
        L.append("- **%s**: %s." % (name, what))
    L += ["", END, ""]
    return "\n".join(L)


def measure(reps, only=None):
    """Run the workloads (all, or those named in only) reps rounds.
    Returns (rows, allocator names, missing peers, seconds): rows maps
    (workload, allocator) to [(wall s, peak RSS KiB)]; bench/results/
    real.csv gets every run."""
    global WORKLOADS
    if only:
        WORKLOADS = [w for w in WORKLOADS if w[0] in only]
    for tool in ("/usr/bin/time", "g++", "sqlite3", "git", "perl", "lua5.4", "python3"):
        if not (os.path.exists(tool) or shutil.which(tool)):
            raise RuntimeError("%s is not installed: run tools/deps.sh" % tool)
    t0 = time.time()
    allocs, missing = preloads(build())
    work = tempfile.mkdtemp(prefix="kheap-real-")
    rows = {}
    csv_rows = []
    try:
        prepare(work)
        for rep in range(reps):
            for name, _, argv in WORKLOADS:
                for a, pre in allocs:
                    wall, rss = timed(argv, pre, work)
                    rows.setdefault((name, a), []).append((wall, rss))
                    csv_rows.append(dict(round=rep + 1, workload=name, allocator=a,
                                         wall_s="%.3f" % wall, max_rss_kib=rss))
            log("real: round %d of %d done (%.0f s)" % (rep + 1, reps, time.time() - t0))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "real.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["round", "workload", "allocator", "wall_s", "max_rss_kib"])
        w.writeheader()
        w.writerows(csv_rows)
    return rows, [a for a, _ in allocs], missing, time.time() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--only", help="comma-separated workload names")
    ap.add_argument("--no-doc", action="store_true", help="do not touch docs/BENCHMARKS.md")
    args = ap.parse_args()
    rows, names, missing, elapsed = measure(args.reps, set(args.only.split(",")) if args.only else None)
    section = report(rows, names, args.reps, elapsed, missing)
    if args.no_doc:
        print(section)
        return
    with open(DOC) as f:
        text = f.read()
    with open(DOC, "w") as f:
        f.write(splice(text, section, BEGIN, END))
    log("wrote the real-program section of %s" % os.path.relpath(DOC, ROOT))


if __name__ == "__main__":
    script_main(main, "bench/real.py", (RuntimeError, subprocess.CalledProcessError))
