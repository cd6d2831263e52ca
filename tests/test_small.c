/*
 * test_small.c - small heaps hosted (tests/small.c): kheap_init's minimum
 * region, the fixed metadata of small regions, blocks until NULL and the
 * smallest region that replays a kernel-like trace, in whatever profile
 * the build has (the small-system profile's figures in docs/PORTING.md
 * come from the Cortex-M kernel, a 32-bit build).
 *
 *   test_small            the tests
 *   test_small cg N [L [M]]  N kheap_alloc(32) + kheap_free pairs on a
 *                         64 KiB heap (the minimum region if larger), with
 *                         callgrind collecting only around them (run it
 *                         under valgrind --tool=callgrind
 *                         --collect-atstart=no); with L other 32-byte
 *                         blocks live (default 64, as in
 *                         docs/BENCHMARKS.md). M: pair (the default),
 *                         alloc or free: batches of 16 allocations then 16
 *                         frees, collecting only around the allocations or
 *                         only around the frees.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <valgrind/callgrind.h>

#include "bodies.h"
#include "small.h"

#define ARENA ((size_t)256 << 10)
static unsigned char arena[ARENA] __attribute__((aligned(65536)));

static void put_line(const char *s)
{
    printf("%s\n", s);
    fflush(stdout);
}

static void *volatile sink;

static int callgrind_pairs(long n, int live, const char *mode)
{
    size_t size = KHEAP_MIN_REGION_SIZE > 65536 ? KHEAP_MIN_REGION_SIZE : 65536;
    kheap_t *h;
    if (kheap_init(&h, arena, size) != KHEAP_OK)
        return 2;
    void *keep[256];
    if (live < 0 || live > 256)
        return 2;
    for (int i = 0; i < live; i++)
        keep[i] = kheap_alloc(h, 32);
    for (int i = 0; i < 1024; i++) { /* warm-up */
        void *p = kheap_alloc(h, 32);
        sink = p;
        kheap_free(h, p);
    }
    bool on_alloc = strcmp(mode, "alloc") == 0, on_free = strcmp(mode, "free") == 0;
    if (on_alloc || on_free) {
        void *batch[16];
        for (long i = 0; i < n; i += 16) {
            if (on_alloc)
                CALLGRIND_TOGGLE_COLLECT;
            for (int k = 0; k < 16; k++)
                batch[k] = kheap_alloc(h, 32);
            if (on_alloc)
                CALLGRIND_TOGGLE_COLLECT;
            for (int k = 0; k < 16; k++)
                *(long *)batch[k] = k;
            if (on_free)
                CALLGRIND_TOGGLE_COLLECT;
            for (int k = 0; k < 16; k++)
                kheap_free(h, batch[k]);
            if (on_free)
                CALLGRIND_TOGGLE_COLLECT;
        }
    } else {
        CALLGRIND_TOGGLE_COLLECT;
        for (long i = 0; i < n; i++) {
            void *p = kheap_alloc(h, 32);
            *(long *)p = i;
            sink = p;
            kheap_free(h, p);
        }
        CALLGRIND_TOGGLE_COLLECT;
    }
    for (int i = 0; i < live; i++)
        kheap_free(h, keep[i]);
    printf("# %ld kheap_alloc(32) + kheap_free (%s) on a %zu-byte heap, %d other blocks"
           " live\n", n, mode, size, live);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "cg") == 0)
        return callgrind_pairs(atol(argv[2]), argc > 3 ? atoi(argv[3]) : 64,
                               argc > 4 ? argv[4] : "pair");
    struct kt_env e = {.platform = "hosted", .puts = put_line, .ncpus = 1};
    kt_begin(&e);
    int failed = kt_run_small(arena, ARENA);
    printf("# %d passed, %d failed\n", kt_passed, kt_failed);
    return failed ? 1 : 0;
}
