#!/usr/bin/env python3
"""Instructions per malloc+free pair at every size from 16 B to 256 KiB:
kheap through LD_PRELOAD (a PLT call, as a program calls it), kheap's
default heap called directly (kmalloc/kfree), a kheap_init heap
(kheap_alloc/kheap_free), glibc, jemalloc, mimalloc and tcmalloc.

    python3 bench/sizes.py [--n N]      write the section into
                                        docs/BENCHMARKS.md

Each figure is one callgrind run of `bench/bench.c hot pair N SIZE`: N
pairs of malloc(SIZE)+free after a warm-up, with 64 other blocks of SIZE
live, so no free empties a page or a slab. Counts include the harness
loop (`hot loop`, a few instructions, given in the section). Callgrind
counts are deterministic, so one run each. bench/run.py calls measure()
and report() for `make bench` (its `hot` test).

Only the Python standard library is used.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import suite  # noqa: E402

BEGIN = "<!-- sizes: written by bench/sizes.py -->"
END = "<!-- end of sizes -->"
# The class boundaries of the default classes (docs/SIZE_CLASSES.md) and
# sizes between them; then page runs up to 256 KiB.
SIZES = [16, 32, 48, 64, 128, 256, 512, 1024, 1100, 1536, 2048, 3072, 4096, 5000,
         6144, 8192, 12288, 16384, 24576, 32768, 49152, 65536, 131072, 262144]
KHEAP_ROWS = ["kheap (LD_PRELOAD)", "kheap (kmalloc)", "kheap (kheap_init heap)",
              "kheap per-CPU (LD_PRELOAD)"]


def allocators(bin_kheap, bin_malloc, bin_init):
    so = suite.kheap_so()
    if not so:
        raise RuntimeError("no build/libkheap.so")
    peers, missing = common.harness_peers(bin_malloc)
    percpu = suite.kheap_so(name="libkheap-percpu.so")
    rows = [(KHEAP_ROWS[0], bin_malloc, so, "libkheap.so"),
            (KHEAP_ROWS[1], bin_kheap, None, "libkheap.a"),
            (KHEAP_ROWS[2], bin_init, None, "libkheap.a")]
    if percpu:
        rows.append((KHEAP_ROWS[3], bin_malloc, percpu, "libkheap-percpu.so"))
    return rows + peers, missing


def callgrind(alloc, args, out, extra_env=None):
    wrapper = ["valgrind", "-q", "--tool=callgrind", "--instr-atstart=no",
               "--collect-atstart=no", "--callgrind-out-file=" + out]
    common.run_harness(alloc, args, wrapper=wrapper, extra_env=extra_env)
    with open(out) as f:
        for line in f:
            if line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError("%s: no totals in %s" % (alloc[0], out))


def measure(binaries, n=64000, sizes=SIZES):
    """{(allocator, size): instructions per pair}, the harness loop's
    count, and the peers that are missing."""
    allocs, missing = allocators(*binaries)
    cgdir = os.path.join(common.BUILD, "callgrind")
    os.makedirs(cgdir, exist_ok=True)
    per = {}
    for alloc in allocs:
        for size in sizes:
            slug = "".join(c if c.isalnum() else "-" for c in alloc[0])
            out = os.path.join(cgdir, "sizes-%s-%d.out" % (slug, size))
            per[(alloc[0], size)] = callgrind(alloc, ["hot", "pair", n, size], out) / n
        common.log("sizes: %-24s %s" % (alloc[0], " ".join(
            "%.0f" % per[(alloc[0], s)] for s in sizes)))
    loop = callgrind(allocs[1], ["hot", "loop", n], os.path.join(cgdir, "sizes-loop.out")) / n
    return dict(per=per, names=[a[0] for a in allocs], sizes=list(sizes), loop=loop, n=n,
                missing=missing)


def fmt_size(s):
    if s >= 1024 and s % 1024 == 0:
        return "%d KiB" % (s // 1024)
    return "%d B" % s


def report(m):
    per, names, sizes = m["per"], m["names"], m["sizes"]
    peers = [x for x in names if x not in KHEAP_ROWS]
    L = [BEGIN, "## Instructions per malloc+free pair, by size", "",
         "`bench/sizes.py` (part of `make bench`): callgrind, %d pairs of malloc(size)+free "
         "after a warm-up, with 64 other blocks of the size live; the counts include the "
         "harness loop (%.1f instructions). kheap four ways: through `LD_PRELOAD` of "
         "libkheap.so (a PLT call, as programs call malloc), its default heap called "
         "directly (kmalloc/kfree), a heap made with kheap_init (kheap_alloc/kheap_free), "
         "and through `LD_PRELOAD` of libkheap-percpu.so (per-CPU caches through restartable "
         "sequences; valgrind does not support rseq, so callgrind runs its per-thread "
         "fallback, whose instructions are the same). "
         "The peers are put in front of glibc with `LD_PRELOAD`. The last columns are "
         "kheap through `LD_PRELOAD` over the best peer at that size." % (m["n"], m["loop"]),
         ""]
    head = ["size"] + names + ["best peer", "kheap / best"]
    L.append("| " + " | ".join(head) + " |")
    L.append("|" + "---|" + "---:|" * (len(head) - 1))
    worst = (0, None)
    for s in sizes:
        best = min(peers, key=lambda x: per[(x, s)]) if peers else None
        ratio = per[(names[0], s)] / per[(best, s)] if best else None
        if ratio and ratio > worst[0]:
            worst = (ratio, s)
        L.append("| %s | %s | %s | %s |" % (
            fmt_size(s), " | ".join("%.0f" % per[(x, s)] for x in names),
            best or "-", "%.2f" % ratio if ratio else "-"))
    L.append("")
    if worst[1]:
        L.append("Largest ratio: %.2f at %s." % (worst[0], fmt_size(worst[1])))
    if m["missing"]:
        L.append("Missing peers: %s (`tools/deps.sh bench` installs them)." %
                 ", ".join(m["missing"]))
    L += ["", END]
    return "\n".join(L)



def main():
    ap = common.section_parser(__doc__)
    ap.add_argument("--n", type=int, default=64000, help="pairs per run (a multiple of 64)")
    ap.add_argument("--sizes", help="comma-separated sizes (default: the table's)")
    args = ap.parse_args()
    import run  # the harnesses are built as for the hot test
    binaries = run.build(common.ROOT)
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else SIZES
    return common.show_section(args, report(measure(binaries, args.n, sizes)), BEGIN, END)


if __name__ == "__main__":
    common.script_main(main, "sizes")
