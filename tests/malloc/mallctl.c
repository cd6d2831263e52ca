/*
 * mallctl.c - jemalloc's control interface under libkheap.so (LD_PRELOAD):
 * the names libkheap.so answers report kheap's figures, a purge gives the
 * free pages back, and every other name or misuse gets jemalloc's error.
 * The functions are looked up at run time, as no header declares them:
 * run without libkheap.so in front (and without jemalloc) the test says
 * so and fails.
 */
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

typedef int (*mallctl_fn)(const char *, void *, size_t *, void *, size_t);
typedef void (*print_fn)(void (*)(void *, const char *), void *, const char *);
static mallctl_fn ctl;
static print_fn print;

static void *volatile held[4096];

#define MIB ((size_t)1 << 20)

static void touch(void *p, int c, size_t n)
{
    memset(p, c, n);
    __asm__ volatile("" : : "r"(p) : "memory");
}

/* A statistic from a fresh snapshot (an epoch written first, as
 * jemalloc's statistics need). */
static size_t stat_of(const char *name)
{
    uint64_t e = 1;
    CHECK(ctl("epoch", NULL, NULL, &e, sizeof e) == 0, "epoch refused");
    size_t v = 0, len = sizeof v;
    int rc = ctl(name, &v, &len, NULL, 0);
    CHECK(rc == 0 && len == sizeof v, "%s: returned %d, length %zu", name, rc, len);
    return v;
}

TEST(stats_follow_allocations)
{
    uint64_t epoch = 1, before = 0;
    size_t len = sizeof epoch;
    CHECK(ctl("epoch", &before, &len, NULL, 0) == 0, "epoch not readable");
    CHECK(ctl("epoch", &epoch, &len, &epoch, sizeof epoch) == 0 && epoch == before + 1,
          "epoch written: %llu after %llu", (unsigned long long)epoch,
          (unsigned long long)before);
    /* The statistics hold still until the next epoch. */
    size_t s0 = 0, s1 = 0, sl = sizeof s0;
    CHECK(ctl("stats.allocated", &s0, &sl, NULL, 0) == 0, "stats.allocated");
    void *extra = malloc(100000);
    CHECK(ctl("stats.allocated", &s1, &sl, NULL, 0) == 0 && s1 == s0,
          "stats.allocated moved without an epoch: %zu -> %zu", s0, s1);
    free(extra);
    unsigned narenas = 0;
    len = sizeof narenas;
    CHECK(ctl("arenas.narenas", &narenas, &len, NULL, 0) == 0 && narenas == 1,
          "arenas.narenas %u", narenas);
    size_t a0 = stat_of("stats.allocated");
    enum { N = 2000, SIZE = 496 };
    for (int i = 0; i < N; i++) {
        held[i] = malloc(SIZE);
        CHECK(held[i] != NULL, "malloc %d", i);
    }
    size_t a1 = stat_of("stats.allocated"), act = stat_of("stats.active");
    size_t res = stat_of("stats.resident"), map = stat_of("stats.mapped");
    printf("# %d blocks of %d bytes: allocated %zu -> %zu, active %zu, resident %zu, mapped %zu\n",
           N, SIZE, a0, a1, act, res, map);
    CHECK(a1 - a0 >= (size_t)N * SIZE && a1 - a0 < (size_t)N * SIZE + 64 * 1024,
          "allocated grew by %zu for %d bytes", a1 - a0, N * SIZE);
    CHECK(a1 <= act && act <= res && res <= map, "allocated %zu, active %zu, resident %zu, "
          "mapped %zu: not in jemalloc's order", a1, act, res, map);
    for (int i = 0; i < N; i++)
        free(held[i]);
    size_t a2 = stat_of("stats.allocated");
    CHECK(a2 + (size_t)N * SIZE <= a1, "allocated %zu after the frees (%zu before)", a2, a1);
}

TEST(purge_gives_pages_back)
{
    /* 48 MiB in blocks of 1 MiB, written and freed: below the purge
     * slack and with decay off (run.sh), so they stay resident until
     * someone purges. Redis asks for "arena.<narenas>.purge". */
    enum { N = 48 };
    for (int i = 0; i < N; i++) {
        held[i] = malloc(MIB);
        CHECK(held[i] != NULL, "malloc %d", i);
        touch(held[i], i, MIB);
    }
    for (int i = 0; i < N; i++)
        free(held[i]);
    size_t r0 = stat_of("stats.resident"), ret0 = stat_of("stats.retained");
    long rss0 = kt_rss_kib();
    CHECK(ctl("arena.1.purge", NULL, NULL, NULL, 0) == 0, "arena.1.purge refused");
    size_t r1 = stat_of("stats.resident"), ret1 = stat_of("stats.retained");
    long rss1 = kt_rss_kib();
    printf("# 48 MiB freed: resident %zu -> %zu, retained %zu -> %zu, RSS %ld -> %ld KiB\n",
           r0, r1, ret0, ret1, rss0, rss1);
    CHECK(r1 < r0 && r0 - r1 >= 40 * MIB, "resident %zu -> %zu", r0, r1);
    CHECK(ret1 > ret0 && ret1 - ret0 >= 40 * MIB, "retained %zu -> %zu", ret0, ret1);
    CHECK(rss0 - rss1 >= 40 * 1024, "RSS fell by %ld KiB", rss0 - rss1);
    CHECK(ctl("arena.4096.purge", NULL, NULL, NULL, 0) == 0, "arena.4096.purge refused");
    CHECK(ctl("arena.0.decay", NULL, NULL, NULL, 0) == 0, "arena.0.decay refused");
}

TEST(errors_as_jemalloc)
{
    size_t v = 0, len = sizeof v;
    CHECK(ctl("opt.narenas", &v, &len, NULL, 0) == ENOENT, "unknown name answered");
    CHECK(ctl("stats.nothing", &v, &len, NULL, 0) == ENOENT, "unknown statistic answered");
    CHECK(ctl("arena.7.purge", NULL, NULL, NULL, 0) == ENOENT, "arena 7 purged");
    CHECK(ctl("arena.x.purge", NULL, NULL, NULL, 0) == ENOENT, "arena x purged");
    CHECK(ctl("arena.0.reset", NULL, NULL, NULL, 0) == ENOENT, "arena.0.reset answered");
    CHECK(ctl("stats.allocated", &v, &len, &v, sizeof v) == EPERM, "statistic written");
    CHECK(ctl("arena.0.purge", &v, &len, NULL, 0) == EPERM, "purge read");
    /* A short read: as jemalloc, what fits is copied and the length
     * says how much. */
    size_t whole = 0;
    len = sizeof whole;
    CHECK(ctl("stats.active", &whole, &len, NULL, 0) == 0, "stats.active");
    uint32_t small = 0;
    len = sizeof small;
    CHECK(ctl("stats.active", &small, &len, NULL, 0) == EINVAL && len == sizeof small &&
              memcmp(&small, &whole, sizeof small) == 0,
          "4-byte read: length %zu, bytes %#x of %#zx", len, small, whole);
    CHECK(ctl("epoch", NULL, NULL, &small, sizeof small) == EINVAL, "4-byte epoch written");
    CHECK(ctl(NULL, NULL, NULL, NULL, 0) == EINVAL, "NULL name answered");
}

static void collect(void *arg, const char *s)
{
    size_t *n = arg;
    if (strstr(s, "used"))
        (*n)++;
}

TEST(stats_print_through_callback)
{
    size_t seen = 0;
    print(collect, &seen, NULL);
    CHECK(seen > 0, "malloc_stats_print's text names no used bytes");
}

int main(void)
{
    ctl = (mallctl_fn)(uintptr_t)dlsym(RTLD_DEFAULT, "mallctl");
    print = (print_fn)(uintptr_t)dlsym(RTLD_DEFAULT, "malloc_stats_print");
    if (!ctl || !print) {
        printf("not ok - mallctl or malloc_stats_print not found: libkheap.so is not in front\n");
        return 1;
    }
    RUN(stats_follow_allocations);
    RUN(purge_gives_pages_back);
    RUN(errors_as_jemalloc);
    RUN(stats_print_through_callback);
    return harness_done();
}
