"""What kheap's benchmark scripts share (bench/run.py, bench/suite.py,
bench/real.py, bench/redis.py, bench/cpython.py, bench/sizes.py,
bench/threads.py, bench/sampled.py, bench/levels.py, bench/follow.py): paths, the peer allocators, running
commands and the harnesses, waiting for a quiet machine, interleaved
rounds, CSV output, the build environment, result tables, their sections
of docs/BENCHMARKS.md.
Only the Python standard library is used.
"""
import argparse
import contextlib
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
BUILD = os.path.join(BENCH, "build")
# How the harnesses (bench/bench.c, bench/workloads.c) are compiled; tests/
# holds rand.h, the random generator they share with the tests.
CFLAGS = ["-std=c11", "-O2", "-Wall", "-Wextra", "-Wshadow", "-Werror",
          "-I" + os.path.join(ROOT, "tests")]

# name, harness, library to preload (None: no preload), what dladdr must
# report as the origin of malloc
PEERS = [
    ("glibc", None, "libc.so"),
    ("jemalloc", "libjemalloc.so.2", "libjemalloc"),
    ("mimalloc", "libmimalloc.so.2", "libmimalloc"),
    ("tcmalloc", "libtcmalloc_minimal.so.4", "libtcmalloc_minimal"),
]


def log(msg):
    print(msg, flush=True)


def run(cmd, env=None, timeout=900, cwd=ROOT):
    """Run cmd, return stdout; raise with its stderr on failure."""
    p = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError("command failed (%d): %s\n%s%s" % (
            p.returncode, " ".join(cmd), p.stdout[-2000:], p.stderr[-4000:]))
    return p.stdout


def libdirs():
    dirs = []
    try:
        multiarch = run(["gcc", "-print-multiarch"]).strip()
        if multiarch:
            dirs += ["/usr/lib/" + multiarch, "/lib/" + multiarch]
    except (RuntimeError, OSError):
        pass
    return dirs + ["/usr/lib64", "/usr/lib", "/usr/local/lib"]


def find_lib(name):
    for d in libdirs():
        path = os.path.join(d, name)
        if os.path.exists(path):
            return path
    return None


def peer_libs():
    """[(name, library to preload or None for glibc, origin)] of the PEERS
    whose library is found, in their order, and the names of the others."""
    out, missing = [], []
    for name, lib, origin in PEERS:
        path = find_lib(lib) if lib else None
        if lib and not path:
            missing.append(name)
        else:
            out.append((name, path, origin))
    return out, missing


def harness_peers(binary):
    """The peers found, as run_harness takes them: [(name, binary, library
    to preload or None, origin)]; and the names of those not found."""
    found, missing = peer_libs()
    return [(name, binary, path, origin) for name, path, origin in found], missing


def preloads(kheap_so):
    """[(name, library to preload, None for glibc)] in the order of the
    real-program tables (glibc, kheap, jemalloc, mimalloc, tcmalloc), and
    the names of those not found. kheap_so: libkheap.so's path or None."""
    found, missing = peer_libs()
    out = [("glibc", None)]
    if kheap_so:
        out.append(("kheap", kheap_so))
    else:
        missing.insert(0, "kheap")
    return out + [(name, path) for name, path, _ in found if path], missing


def require(tools, hint="tools/deps.sh real"):
    """Stop at the first of tools (a path, or a name on PATH) that is not
    installed."""
    for tool in tools:
        if not (os.path.exists(tool) or shutil.which(tool)):
            raise RuntimeError("%s is not installed: run %s" % (tool, hint))


@contextlib.contextmanager
def scratch(name):
    """A directory for one script's runs, removed after them."""
    work = tempfile.mkdtemp(prefix="kheap-%s-" % name)
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def rounds(what, reps, t0=None):
    """The rounds 1 .. reps, the end of each logged (with the seconds since
    t0, if given)."""
    for rnd in range(1, reps + 1):
        yield rnd
        if t0 is None:
            log("%s: round %d of %d" % (what, rnd, reps))
        else:
            log("%s: round %d of %d done (%.0f s)" % (what, rnd, reps, time.time() - t0))


def utc_now():
    """The time for a report: "YYYY-MM-DD HH:MM", UTC."""
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime())


def kheap_commit():
    """The last commit that changed kheap itself (src/, include/, the
    Makefile), and whether the work tree has changed them since."""
    try:
        head = run(["git", "log", "-1", "--format=%h", "--abbrev=12", "--",
                    "src", "include", "Makefile"]).strip()
        dirty = run(["git", "status", "--porcelain", "--", "src", "include", "Makefile"]).strip()
        return head + (" with uncommitted changes" if dirty else "")
    except (RuntimeError, OSError):
        return "unknown"


def make_env():
    """The environment for building kheap through its Makefile: nothing from
    the caller's make or environment may change the build (not its
    command-line variables, not OPT, not a KHEAP_* option)."""
    return {k: v for k, v in os.environ.items()
            if k not in ("MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES", "MAKELEVEL", "OPT")
            and not k.startswith("KHEAP_")}


def cpu_times():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
    return sum(v), idle


def busy_fraction(interval=0.25):
    """Share of all CPUs busy over interval seconds (this process sleeps)."""
    t0, i0 = cpu_times()
    time.sleep(interval)
    t1, i1 = cpu_times()
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


def wait_quiet(cfg):
    """Before a timed run: wait (up to cfg["max_wait"] s, and no more than
    cfg["wait_budget"] s over the whole run) until other work on the machine
    uses under a fifth of its CPUs. Returns the busy share seen last, which
    the CSVs record."""
    start = time.time()
    deadline = start + min(cfg["max_wait"], cfg["wait_budget"])
    while True:
        b = busy_fraction()
        if b < 0.2 or time.time() >= deadline:
            cfg["wait_budget"] = max(0.0, cfg["wait_budget"] - (time.time() - start))
            return round(b, 2)
        time.sleep(0.5)


def interleaved(what, reps, configs, run_one):
    """reps rounds, each running every config once in turn, after waiting
    for a quiet machine (wait_quiet: up to 10 s before a run, 120 s in
    all). run_one(config, busy share seen) returns one run's result;
    returns {config: [its results, one a round]}."""
    rows = {}
    quiet = dict(max_wait=10, wait_budget=120)
    for _ in rounds(what, reps):
        for config in configs:
            busy = wait_quiet(quiet)
            rows.setdefault(config, []).append(run_one(config, busy))
    return rows


def median(runs, k):
    """The median of field k over runs (tuples)."""
    return statistics.median(r[k] for r in runs)


def spread(vals, fmt, dash="–"):
    """The median of vals and their range, each in fmt: "m (lo–hi)"."""
    return "%s (%s%s%s)" % (fmt % statistics.median(vals), fmt % min(vals), dash,
                            fmt % max(vals))


def table_head(first, names, last):
    """The head of a results table: first, a column per allocator, last."""
    return ["| %s | %s | %s |" % (first, " | ".join(names), last),
            "|---|" + "---:|" * (len(names) + 1)]


def table_row(label, names, vals, fmt, bold=False):
    """A row of a results table: label, each allocator's vals[name] as
    spread() ("—" if it has none), and kheap's median over glibc's (in
    bold if asked); and {name: median}."""
    med, cells = {}, []
    for name in names:
        v = vals.get(name)
        if v:
            med[name] = statistics.median(v)
            cells.append(spread(v, fmt))
        else:
            cells.append("—")
    ratio = "%.2f" % (med["kheap"] / med["glibc"]) if "kheap" in med and med.get("glibc") else "—"
    return "| %s | %s | %s |" % (label, " | ".join(cells),
                                 "**%s**" % ratio if bold else ratio), med


def parse_result(text):
    for line in text.splitlines():
        if line.startswith("RESULT "):
            return dict(kv.split("=", 1) for kv in line.split()[1:])
    raise RuntimeError("no RESULT line in:\n" + text)


def run_harness(alloc, args, wrapper=(), timeout=900, extra_env=None):
    name, binary, preload, origin = alloc
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    env.update(extra_env or {})
    if preload:
        env["LD_PRELOAD"] = preload
    res = parse_result(run(list(wrapper) + [binary] + [str(a) for a in args],
                           env=env, timeout=timeout))
    if origin not in res["malloc_from"]:
        raise RuntimeError("%s: malloc comes from %s, not %s: preload failed"
                           % (name, res["malloc_from"], origin))
    return res


def write_csv(path, rows, fields):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)


def splice(text, section, begin, end):
    """text with section in place of the part from begin to end (markers
    included); with no such part, section goes before the Reproducing
    section, or at the end."""
    if begin in text and end in text:
        a = text.index(begin)
        b = text.index(end) + len(end)
        return text[:a] + section.rstrip("\n") + text[b:]
    marker = "## Reproducing"
    if marker in text:
        i = text.index(marker)
        return text[:i] + section + "\n" + text[i:]
    return text.rstrip("\n") + "\n\n" + section


def section(path, begin, end):
    """The part of the file at path from begin to end (markers included),
    or None."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    if begin not in text or end not in text:
        return None
    return text[text.index(begin):text.index(end) + len(end)]


def script_main(main, name, errors=(RuntimeError, subprocess.TimeoutExpired,
                                    subprocess.CalledProcessError)):
    """Run a script's main(); its errors end it with one line on stderr
    and status 1, its return value is the exit status."""
    try:
        sys.exit(main())
    except errors as e:
        print("%s: %s" % (name, e), file=sys.stderr)
        sys.exit(1)


def write_section(section, begin, end, what=None):
    """Put section (marked by begin and end) into docs/BENCHMARKS.md; what
    names it in the log."""
    doc = os.path.join(ROOT, "docs", "BENCHMARKS.md")
    with open(doc) as f:
        text = f.read()
    with open(doc, "w") as f:
        f.write(splice(text, section if section.endswith("\n") else section + "\n", begin, end))
    log("wrote %s%s" % ("the %s section of " % what if what else "", os.path.relpath(doc, ROOT)))


def parser(doc):
    """A script's command line, its docstring for --help."""
    return argparse.ArgumentParser(description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def section_parser(doc):
    """The command line of a script that writes a section of its own:
    its docstring, and --print (print the section, write no file)."""
    ap = parser(doc)
    ap.add_argument("--print", action="store_true", help="print the section, do not write it")
    return ap


def show_section(args, section, begin, end):
    """Print section (--print) or put it into docs/BENCHMARKS.md."""
    if args.print:
        print(section)
    else:
        write_section(section, begin, end)
    return 0
