#!/usr/bin/env python3
"""Redis under kheap and its peers: SET throughput, and what the server
keeps resident once its data is gone.

    python3 bench/redis.py [--reps N] [--modes sync,async] [--no-doc]

For each allocator a fresh redis-server (no persistence, on a unix socket
of its own) is loaded by redis-benchmark with about 316 000 keys, emptied
by FLUSHALL, left idle, asked INFO once, and loaded again a little; its
VmRSS (and at the end its peak, VmHWM) is read from /proc between the
steps. Allocators: glibc, libkheap.so, jemalloc, mimalloc, tcmalloc, each
put in front with LD_PRELOAD, interleaved (every allocator once, then
again), --reps rounds (default 3). Results: bench/results/redis.csv (every
run) and the "Redis: memory after FLUSHALL" section of docs/BENCHMARKS.md
(medians and min-max), which bench/run.py keeps when it rewrites the rest
of that file.

Debian's redis-server is linked with libjemalloc.so.2, so without a preload
its malloc is jemalloc's: glibc's is reached by preloading libc.so.6 itself.
Each run checks that the allocator named is the one that served the data
(jemalloc's own count of allocated bytes, from INFO, is either most of
Redis's or next to none of it).

Only the Python standard library is used.
"""
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import suite  # noqa: E402

RESULTS = os.path.join(common.BENCH, "results")
BEGIN = "<!-- redis: written by bench/redis.py -->"
END = "<!-- end of redis -->"

# About 316 000 distinct keys: 1 000 000 SETs of keys drawn from 333 000
# leave 333000 * (1 - exp(-1000000 / 333000)), 316 500 on average.
LOAD = ["-t", "set", "-n", "1000000", "-r", "333000", "-d", "3"]
SMALL = ["-t", "set", "-n", "30000", "-r", "10000", "-d", "3"]
SERVER = ["--port", "0", "--save", "", "--appendonly", "no", "--daemonize", "no"]
MODES = {"sync": ["FLUSHALL"], "async": ["FLUSHALL", "ASYNC"]}
# When VmRSS is read after FLUSHALL's reply, in seconds (INFO follows the
# last), and how long after INFO the small load starts: more than one
# decay epoch of libkheap.so (KHEAP_DECAY_MS, 1000 ms by default).
AFTER = (1, 10)
SMALL_AFTER_INFO = 2

FIELDS = ["round", "mode", "allocator", "busy_before", "set_rps", "keys",
          "used_memory_loaded", "rss_start_kib", "rss_loaded_kib", "flush_ms",
          "rss_1s_kib", "rss_10s_kib", "used_memory_flushed", "jemalloc_resident",
          "rss_info_kib", "small_rps", "small_keys", "rss_small_kib", "hwm_kib"]


def allocators():
    """[(name, preload)] and the names not found: glibc's malloc is
    reached by preloading libc.so.6."""
    out, missing = common.preloads(suite.kheap_so())
    libc = common.find_lib("libc.so.6")
    if not libc:
        raise RuntimeError("libc.so.6 not found")
    return [(n, p or libc) for n, p in out], missing


def status(pid, field):
    """A field of /proc/pid/status in KiB (VmRSS, VmHWM)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError("no %s in /proc/%d/status" % (field, pid))


def cli(sock, *args):
    out = common.run(["redis-cli", "-s", sock] + list(args), timeout=120).strip()
    if out.startswith("ERR") or out.startswith("(error)"):
        raise RuntimeError("redis-cli %s: %s" % (" ".join(args), out))
    return out


def info_memory(sock):
    d = {}
    for line in cli(sock, "INFO", "memory").splitlines():
        k, _, v = line.strip().partition(":")
        if v:
            d[k] = v
    return d


def benchmark(sock, args):
    """Requests per second of one redis-benchmark run (its --csv line)."""
    out = common.run(["redis-benchmark", "-s", sock, "--csv"] + args, timeout=900)
    for line in out.splitlines():
        cells = [c.strip('"') for c in line.split(",")]
        if cells[0] == "SET":
            return float(cells[1])
    raise RuntimeError("no SET line from redis-benchmark:\n" + out[-1000:])


def check_allocator(name, preload, pid, mem):
    """The data must have come from the allocator named. INFO's
    allocator_* figures are what mallctl answers: jemalloc's own (linked
    into redis-server, so always there), or, under libkheap.so, which
    answers jemalloc's statistics names itself, kheap's. The allocator
    answering holds most of Redis's bytes; under glibc, mimalloc and
    tcmalloc jemalloc answers and holds next to none of them."""
    used = int(mem["used_memory"])
    je = int(mem.get("allocator_allocated", 0))
    if name in ("jemalloc", "kheap") and je < used // 2:
        raise RuntimeError("%s: it holds %d of Redis's %d bytes" % (name, je, used))
    if name not in ("jemalloc", "kheap") and je > used // 10:
        raise RuntimeError("%s: jemalloc still holds %d of Redis's %d bytes: preload "
                           "failed" % (name, je, used))
    with open("/proc/%d/maps" % pid) as f:
        if os.path.realpath(preload) not in f.read():
            raise RuntimeError("%s: %s is not mapped" % (name, preload))


def wait_until(t):
    d = t - time.monotonic()
    if d > 0:
        time.sleep(d)


def one_run(name, preload, mode, work, quiet):
    """Start a server under preload, run the steps, stop it. Returns the
    CSV fields of the run (sizes in KiB, as /proc gives them)."""
    sock = os.path.join(work, "redis.sock")
    log = os.path.join(work, "redis.log")
    env = dict(os.environ, LD_PRELOAD=preload)
    for k in [k for k in env if k.startswith("KHEAP_")]:
        del env[k]
    p = subprocess.Popen(["redis-server"] + SERVER + ["--unixsocket", sock, "--dir", work,
                                                      "--logfile", log],
                         env=env, cwd=work, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = dict(mode=mode, allocator=name)
    try:
        deadline = time.monotonic() + 15
        while True:
            if p.poll() is not None:
                with open(log, errors="replace") as f:
                    raise RuntimeError("redis-server under %s exited %d:\n%s"
                                       % (name, p.returncode, f.read()[-2000:]))
            if os.path.exists(sock):
                try:
                    if cli(sock, "PING") == "PONG":
                        break
                except RuntimeError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server under %s did not answer" % name)
            time.sleep(0.05)
        r["rss_start_kib"] = status(p.pid, "VmRSS")
        r["busy_before"] = common.wait_quiet(quiet)
        r["set_rps"] = benchmark(sock, LOAD)
        r["keys"] = int(cli(sock, "DBSIZE"))
        r["rss_loaded_kib"] = status(p.pid, "VmRSS")
        mem = info_memory(sock)
        check_allocator(name, preload, p.pid, mem)
        r["used_memory_loaded"] = int(mem["used_memory"])
        t0 = time.monotonic()
        if cli(sock, *MODES[mode]) != "OK":
            raise RuntimeError("%s did not answer OK" % " ".join(MODES[mode]))
        t1 = time.monotonic()
        r["flush_ms"] = round((t1 - t0) * 1000)
        for s in AFTER:
            wait_until(t1 + s)
            r["rss_%ds_kib" % s] = status(p.pid, "VmRSS")
        mem = info_memory(sock)
        r["used_memory_flushed"] = int(mem["used_memory"])
        r["jemalloc_resident"] = int(mem.get("allocator_resident", 0))
        r["rss_info_kib"] = status(p.pid, "VmRSS")
        wait_until(time.monotonic() + SMALL_AFTER_INFO)
        r["small_rps"] = benchmark(sock, SMALL)
        r["small_keys"] = int(cli(sock, "DBSIZE"))
        r["rss_small_kib"] = status(p.pid, "VmRSS")
        # The kernel updates VmHWM lazily: it can be below a VmRSS read
        # before.
        r["hwm_kib"] = max([status(p.pid, "VmHWM")] +
                           [v for k, v in r.items() if k.startswith("rss_")])
        cli(sock, "SHUTDOWN", "NOSAVE")
        if p.wait(timeout=30) != 0:
            raise RuntimeError("redis-server under %s exited %d" % (name, p.returncode))
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return r


def measure(reps, modes):
    """reps interleaved rounds of every mode and allocator. Returns (rows,
    allocator names, missing, seconds); bench/results/redis.csv gets every
    run."""
    common.require(("redis-server", "redis-benchmark", "redis-cli"))
    t0 = time.time()
    allocs, missing = allocators()
    quiet = dict(max_wait=10, wait_budget=120)
    rows = []
    with common.scratch("redis") as work:
        for rnd in common.rounds("redis", reps, t0):
            for mode in modes:
                for name, preload in allocs:
                    r = one_run(name, preload, mode, work, quiet)
                    r["round"] = rnd
                    rows.append(r)
    common.write_csv(os.path.join(RESULTS, "redis.csv"), rows, FIELDS)
    return rows, [a for a, _ in allocs], missing, time.time() - t0


def version():
    try:
        return common.run(["dpkg-query", "-W", "-f=${Version}", "redis-server"]).strip()
    except (RuntimeError, OSError):
        return "?"


def report(rows, names, missing, reps, elapsed):
    L = [BEGIN, "## Redis: memory after FLUSHALL", ""]
    L.append("Generated by `bench/redis.py` (`make bench-redis`); %s UTC, redis-server %s "
             "(Debian), kheap at %s, %d interleaved rounds, %.0f s in all. For each "
             "allocator a fresh "
             "`redis-server %s --unixsocket S` is started with `LD_PRELOAD` of the allocator, "
             "loaded with `redis-benchmark -s S %s` (about 316 000 keys of 3-byte values), "
             "emptied with `FLUSHALL` (or `FLUSHALL ASYNC`), left idle, asked `INFO memory` "
             "once at 10 s and, %d s later, loaded with `redis-benchmark -s S %s` (about "
             "9 500 keys). "
             "VmRSS is read from `/proc` between the steps; *peak* is VmHWM at the end (or "
             "the highest VmRSS read, if more: the kernel updates VmHWM lazily). "
             "Figures are the median and the min–max over the rounds, sizes in MiB. The %d "
             "CPUs are shared: other work adds noise, which the min–max shows (busy share of "
             "the CPUs just before each load: median %.2f, the CSV's `busy_before`); "
             "redis-benchmark runs on the same CPUs."
             % (common.utc_now(), version(),
                common.kheap_commit(), reps, elapsed,
                " ".join(a if a else '""' for a in SERVER), " ".join(LOAD), SMALL_AFTER_INFO,
                " ".join(SMALL), os.cpu_count() or 1,
                statistics.median(r["busy_before"] for r in rows)))
    L.append("")
    others = [r["jemalloc_resident"] / 1048576 for r in rows
              if r["allocator"] not in ("jemalloc", "kheap")]
    L.append("Debian's `redis-server` is linked with `libjemalloc.so.2`: without a preload its "
             "`malloc` is jemalloc's, so glibc's is reached by preloading `libc.so.6` itself. "
             "Redis also calls jemalloc's `mallctl` (for its options at start, the "
             "`allocator_*` figures of `INFO` and purges) and `malloc_stats_print`. "
             "libkheap.so answers these itself (README, \"jemalloc's mallctl\"); under "
             "glibc, mimalloc and tcmalloc they reach jemalloc, which is then initialised "
             "and holds its own metadata%s. A synchronous `FLUSHALL` ends with Redis asking "
             "its allocator to purge every arena (`mallctl` `arena.<all>.purge`): jemalloc "
             "and libkheap.so give their free pages back then, and that is why their RSS "
             "falls at once; under the other allocators the call goes to the idle jemalloc, "
             "which has nothing to purge. `FLUSHALL ASYNC` frees the keys on a background "
             "thread and asks for no purge, so there what each allocator gives back while "
             "idle is its own doing. Each run checks, from the `allocator_allocated` figure "
             "of `INFO`, that the data came from the allocator named." %
             (" (%.1f MiB resident by its own count)" % statistics.median(others)
              if others else ""))
    L.append("")
    L.append("libkheap.so gives idle memory back by decay (`KHEAP_DECAY_MS`, 1000 ms by "
             "default): at the end of an epoch each layer returns what it held unused through "
             "the whole epoch. An epoch ends only when a slow path (a magazine exchange "
             "with the depot, a large block) reads the clock; a server that receives nothing makes "
             "none, and `INFO` may make one. The epoch that saw the keys freed had them in "
             "use, but the first slow path after an epoch or more with none finds the "
             "layers as they were all that time, idle, and gives back what they hold at "
             "once (docs/DESIGN.md, \"Decay\", a quiet stretch). The small load starts %d s "
             "after `INFO` so that the column after it shows what decay does once traffic "
             "comes back, not how soon the load follows." % SMALL_AFTER_INFO)
    if missing:
        L += ["", "Not measured (library not found): %s." % ", ".join(missing)]
    cols = [("SET req/s (k)", "set_rps", 1e-3, "%.1f"),
            ("keys (k)", "keys", 1e-3, "%.1f"),
            ("start", "rss_start_kib", 1 / 1024, "%.1f"),
            ("loaded", "rss_loaded_kib", 1 / 1024, "%.1f"),
            ("peak", "hwm_kib", 1 / 1024, "%.1f"),
            ("1 s after", "rss_1s_kib", 1 / 1024, "%.1f"),
            ("10 s after", "rss_10s_kib", 1 / 1024, "%.1f"),
            ("after INFO", "rss_info_kib", 1 / 1024, "%.1f"),
            ("after small load", "rss_small_kib", 1 / 1024, "%.1f")]
    med = {}

    def m(mode, a, key):
        return statistics.median(med[(mode, a, key)])

    for r in rows:
        for _, key, scale, _ in cols:
            med.setdefault((r["mode"], r["allocator"], key), []).append(r[key] * scale)
    for mode in MODES:
        sel = [r for r in rows if r["mode"] == mode]
        if not sel:
            continue
        title = "FLUSHALL" if mode == "sync" else "FLUSHALL ASYNC"
        L += ["", "### %s" % title, ""]
        L.append("| allocator | " + " | ".join(c[0] for c in cols) + " | 10 s after vs jemalloc |")
        L.append("|---|" + "---:|" * (len(cols) + 1))
        for a in names:
            mine = [r for r in sel if r["allocator"] == a]
            if not mine:
                continue
            cells = [common.spread(med[(mode, a, key)], fmt) for _, key, _, fmt in cols]
            je = med.get((mode, "jemalloc", "rss_10s_kib"))
            ratio = "%.2f" % (m(mode, a, "rss_10s_kib") / statistics.median(je)) if je else "—"
            L.append("| %s | %s | %s |" % (a, " | ".join(cells), ratio))
    for mode in MODES:
        if not all((mode, a, "rss_10s_kib") in med for a in ("kheap", "jemalloc")):
            continue
        rss = m(mode, "kheap", "rss_10s_kib") / m(mode, "jemalloc", "rss_10s_kib")
        rps = m(mode, "kheap", "set_rps")
        peers = [a for a in names if a != "kheap" and (mode, a, "set_rps") in med]
        L += ["", "Against the targets, `%s`: kheap's RSS 10 s after it over jemalloc's is "
              "**%.2f** (target at most 1.25); kheap's SET requests per second over %s "
              "(target: not below 1)." % (
                  " ".join(MODES[mode]), rss,
                  ", ".join("%s's **%.2f**" % (a, rps / m(mode, a, "set_rps")) for a in peers))]
    L += ["", END, ""]
    return "\n".join(L)


def main():
    ap = common.parser(__doc__)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--modes", default="sync,async",
                    help="comma-separated: sync (FLUSHALL), async (FLUSHALL ASYNC)")
    ap.add_argument("--no-doc", action="store_true", help="do not touch docs/BENCHMARKS.md")
    args = ap.parse_args()
    modes = args.modes.split(",")
    for m in modes:
        if m not in MODES:
            raise RuntimeError("unknown mode %r (sync, async)" % m)
    rows, names, missing, elapsed = measure(args.reps, modes)
    section = report(rows, names, missing, args.reps, elapsed)
    if args.no_doc:
        print(section)
    else:
        common.write_section(section, BEGIN, END, "Redis")


if __name__ == "__main__":
    common.script_main(main, "bench/redis.py")
