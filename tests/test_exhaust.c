/*
 * test_exhaust.c - filling a heap to the last byte and emptying it again.
 *
 * For every size class, for large runs (plain and aligned) and for a mix,
 * allocate until NULL, check the blocks, free them all, reclaim, and check
 * that the heap is whole again. Also: kheap_init refusals, an unaligned
 * base, kheap_add_region, and that no byte outside the regions is written.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "kheap.h"
#include "kh_internal.h" /* struct kh_cpu */

#define PAGE KHEAP_PAGE_SIZE
#define HEAP_SIZE ((size_t)8 << 20)
#define GUARD 0x5a

static uint64_t g_rng = 0x853c49e6748fea9bull; /* fixed: the same fills every run */

static size_t round_page(size_t n)
{
    return (n + PAGE - 1) / PAGE * PAGE;
}

static size_t natural_align(size_t u)
{
    if (u > KHEAP_MAX_CLASS)
        return PAGE;
    size_t a = u & (~u + 1);
    return a < 8 ? 8 : a;
}

static void check_heap(kheap_t *h, const char *when)
{
    const void *addr = NULL;
    const char *msg = kheap_check_quiescent(h, &addr);
    CHECK(msg == NULL, "%s: kheap_check: %s at %p", when, msg, addr);
}

/* After everything is freed and reclaimed the heap must be as new. */
static void check_whole(kheap_t *h, const struct kheap_stats *fresh,
                        const char *when)
{
    kheap_reclaim(h);
    check_heap(h, when);
    struct kheap_stats s;
    kheap_get_stats(h, &s);
    CHECK(s.used_bytes == 0 && s.slab_bytes == 0 && s.large_bytes == 0,
          "%s: used %zu slab %zu large %zu after freeing all", when,
          s.used_bytes, s.slab_bytes, s.large_bytes);
    CHECK(s.heap_free == s.heap_total - s.metadata_bytes,
          "%s: heap_free %zu != heap_total %zu - metadata %zu", when,
          s.heap_free, s.heap_total, s.metadata_bytes);
    CHECK(s.allocation_count == s.free_count,
          "%s: allocation_count %" PRIu64 " != free_count %" PRIu64, when,
          s.allocation_count, s.free_count);
    /* The only metadata a heap adds for good is the per-CPU state of a
     * CPU (here: this thread) on its first use: struct kh_cpu, in whole
     * pages, and its cache of large blocks (a page) on its first large
     * free. */
    size_t cpu_state = (sizeof(struct kh_cpu) + KHEAP_PAGE_SIZE - 1) / KHEAP_PAGE_SIZE *
                       KHEAP_PAGE_SIZE +
                       (KH_RUNS ? (sizeof(struct kh_runcache) + KHEAP_PAGE_SIZE - 1) /
                                      KHEAP_PAGE_SIZE * KHEAP_PAGE_SIZE
                                : 0);
    if (fresh)
        CHECK(s.heap_free + s.metadata_bytes == fresh->heap_free + fresh->metadata_bytes &&
                  s.metadata_bytes <= fresh->metadata_bytes + cpu_state,
              "%s: heap_free %zu metadata %zu, fresh heap had %zu and %zu",
              when, s.heap_free, s.metadata_bytes, fresh->heap_free,
              fresh->metadata_bytes);
    CHECK(kt_reports() == 0, "%s: unexpected report %s at %p", when,
          kt_report_kind_name((int)kt_last_report().kind), kt_last_report().addr);
}

struct blk {
    uintptr_t p;
    size_t usable;
};

static int blk_cmp(const void *a, const void *b)
{
    uintptr_t x = ((const struct blk *)a)->p, y = ((const struct blk *)b)->p;
    return x < y ? -1 : x > y;
}

/* Sort the blocks and check that none overlaps the next and all lie in
 * [lo, hi). Sorting leaves the array in address order. */
static void check_disjoint(struct blk *b, size_t n, uintptr_t lo,
                           uintptr_t hi, const char *what)
{
    qsort(b, n, sizeof *b, blk_cmp);
    for (size_t i = 0; i < n; i++) {
        CHECK(b[i].p >= lo && b[i].p + b[i].usable <= hi,
              "%s: block %#" PRIxPTR "+%zu outside [%#" PRIxPTR ",%#" PRIxPTR
              ")",
              what, b[i].p, b[i].usable, lo, hi);
        CHECK(i == 0 || b[i - 1].p + b[i - 1].usable <= b[i].p,
              "%s: block %#" PRIxPTR "+%zu overlaps %#" PRIxPTR, what,
              b[i - 1].p, b[i - 1].usable, b[i].p);
    }
}

static void shuffle(struct blk *b, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)kt_rand_below(&g_rng, i);
        struct blk t = b[i - 1];
        b[i - 1] = b[j];
        b[j] = t;
    }
}

struct fixture {
    struct kt_heap region;
    unsigned char *mem;
    size_t size;
    kheap_t *h;
    struct kheap_stats fresh;
    struct blk *blks;
    size_t max_blks;
};

static void fixture_open(struct fixture *f, size_t size)
{
    kt_heap_open(&f->region, size);
    f->mem = f->region.mem;
    f->size = size;
    f->h = f->region.h;
    kheap_get_stats(f->h, &f->fresh);
    CHECK(f->fresh.heap_total == size, "heap_total %zu, region was %zu",
          f->fresh.heap_total, size);
    CHECK(f->fresh.heap_free == f->fresh.heap_total - f->fresh.metadata_bytes,
          "fresh heap: heap_free %zu != total %zu - metadata %zu",
          f->fresh.heap_free, f->fresh.heap_total, f->fresh.metadata_bytes);
    f->max_blks = size / 16 + 1;
    f->blks = malloc(f->max_blks * sizeof *f->blks);
    CHECK(f->blks != NULL, "malloc of %zu block records failed", f->max_blks);
}

static void fixture_close(struct fixture *f)
{
    free(f->blks);
    kt_heap_close(&f->region);
}

/* Allocate size (aligned to align, 0 = plain kheap_alloc) until NULL;
 * check the count of failures, usable sizes, alignment and overlap; free
 * in random order and check the heap is whole. Returns the block count. */
static size_t fill_and_empty(struct fixture *f, size_t size, size_t align,
                             size_t want_usable, const char *what)
{
    struct kheap_stats s0, s1;
    kheap_get_stats(f->h, &s0);
    size_t n = 0;
    for (;;) {
        void *p = align ? kheap_alloc_aligned(f->h, size, align)
                        : kheap_alloc(f->h, size);
        if (!p)
            break;
        CHECK(n < f->max_blks, "%s(%zu): more than %zu blocks in %zu bytes",
              what, size, n, f->size);
        size_t u = kheap_usable_size(f->h, p);
        CHECK(want_usable ? u == want_usable : u >= size,
              "%s(%zu): usable_size %zu, expected %zu", what, size, u,
              want_usable ? want_usable : size);
        size_t a = align ? align : natural_align(u);
        CHECK((uintptr_t)p % a == 0, "%s(%zu) = %p not aligned to %zu", what,
              size, p, a);
        /* Touch both ends so a block outside the mapping faults here. */
        ((unsigned char *)p)[0] = 1;
        ((unsigned char *)p)[u - 1] = 2;
        f->blks[n].p = (uintptr_t)p;
        f->blks[n].usable = u;
        n++;
    }
    kheap_get_stats(f->h, &s1);
    CHECK(s1.failed_count == s0.failed_count + 1,
          "%s(%zu): failed_count went %" PRIu64 " -> %" PRIu64
          " for one NULL",
          what, size, s0.failed_count, s1.failed_count);
    CHECK(s1.allocation_count == s0.allocation_count + n,
          "%s(%zu): allocation_count went %" PRIu64 " -> %" PRIu64
          " for %zu blocks",
          what, size, s0.allocation_count, s1.allocation_count, n);
    size_t sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += f->blks[i].usable;
    CHECK(s1.used_bytes == sum, "%s(%zu): used_bytes %zu != %zu blocks' %zu",
          what, size, s1.used_bytes, n, sum);
    CHECK(n > 0, "%s(%zu): not one block fits a fresh %zu-byte heap", what,
          size, f->size);
    /* A fresh heap must hold at least half its free bytes in objects;
     * an aligned block may cost its alignment on top. */
    size_t cost = align ? n * (round_page(size) + align) : sum;
    CHECK(cost >= f->fresh.heap_free / 2,
          "%s(%zu, align %zu): only %zu blocks (%zu bytes) fit in %zu free "
          "bytes",
          what, size, align, n, sum, f->fresh.heap_free);
    check_heap(f->h, what);
    check_disjoint(f->blks, n, (uintptr_t)f->mem,
                   (uintptr_t)f->mem + f->size, what);
    shuffle(f->blks, n);
    for (size_t i = 0; i < n; i++)
        kheap_free(f->h, (void *)f->blks[i].p);
    kheap_get_stats(f->h, &s1);
    CHECK(s1.free_count == s0.free_count + n && s1.used_bytes == 0,
          "%s(%zu): after %zu frees free_count %" PRIu64 " -> %" PRIu64
          ", used %zu",
          what, size, n, s0.free_count, s1.free_count, s1.used_bytes);
    check_whole(f->h, &f->fresh, what);
    return n;
}

TEST(every_size_class)
{
    /* Slow variants (KHEAP_DEBUG=3 checks the heap after every call) get
     * a small heap: still many slabs per class. */
    size_t size = kt_env_long("KHEAP_TEST_SMALL", 0) ? (size_t)256 << 10
                                                          : HEAP_SIZE;
    struct fixture f;
    fixture_open(&f, size);
    for (unsigned i = 0; i < KHEAP_NUM_CLASSES; i++) {
        size_t c = kt_class[i];
        fill_and_empty(&f, c, 0, c, "kheap_alloc");
        /* One byte over the previous class lands in this one too. */
        size_t below = i ? kt_class[i - 1] + 1 : 1;
        if (i % 8 == 0)
            fill_and_empty(&f, below, 0, c, "kheap_alloc");
    }
    fixture_close(&f);
}

TEST(large_runs)
{
    static const size_t sizes[] = {
        33 * 1024, 64 * 1024, 1 << 20, (3 << 20) + 1, KHEAP_MAX_CLASS + 1,
    };
    struct fixture f;
    fixture_open(&f, HEAP_SIZE);
    for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t u = round_page(sizes[i]);
        size_t n = fill_and_empty(&f, sizes[i], 0, u, "kheap_alloc");
        /* Page runs lose nothing: all but less than one block is used. */
        CHECK((n + 1) * u > f.fresh.heap_free,
              "kheap_alloc(%zu): %zu runs of %zu bytes in %zu free bytes",
              sizes[i], n, u, f.fresh.heap_free);
    }
    fixture_close(&f);
}

/* A large block shrunk to a class size moves to the class if it can,
 * and so does a class block shrunk to a smaller class; on a full heap
 * both shrink in place, and that is no failure. The class block then
 * takes a sized free of its new size. */
TEST(realloc_shrink_when_full)
{
    struct fixture f;
    fixture_open(&f, HEAP_SIZE);
    unsigned char *big = kheap_alloc(f.h, 64 * 1024);
    CHECK(big != NULL, "64 KiB block");
    memset(big, 0x5a, 3000);
    unsigned char *mid = kheap_alloc(f.h, 2000); /* class 2048 */
    CHECK(mid != NULL, "2000-byte block");
    memset(mid, 0x3c, 2000);
    /* Fill every page: the smallest page runs until NULL, then one-page
     * slabs of the class of a page until NULL (two failures), so no
     * class can make a slab. */
    size_t n = 0;
    void *b;
    while (n < f.max_blks && (b = kheap_alloc(f.h, KHEAP_MAX_CLASS + 1)) != NULL)
        f.blks[n++].p = (uintptr_t)b;
    while (n < f.max_blks && (b = kheap_alloc(f.h, KHEAP_PAGE_SIZE)) != NULL)
        f.blks[n++].p = (uintptr_t)b;
    struct kheap_stats s0, s1;
    kheap_get_stats(f.h, &s0);
    CHECK(s0.failed_count == 2, "%" PRIu64 " failures filling the heap", s0.failed_count);
    unsigned char *r = kheap_realloc(f.h, mid, 100); /* class 104: no slab yet */
    kheap_get_stats(f.h, &s1);
    CHECK(r == mid && kheap_usable_size(f.h, r) == 2048,
          "realloc of a 2048-byte block to 100 on a full heap: %p (was %p), usable %zu",
          (void *)r, (void *)mid, kheap_usable_size(f.h, r));
    for (int i = 0; i < 100; i++)
        CHECK(r[i] == 0x3c, "byte %d of the class block lost", i);
    CHECK(s1.failed_count == s0.failed_count, "a class block's shrink counted a failure "
          "(%" PRIu64 " -> %" PRIu64 ")", s0.failed_count, s1.failed_count);
    unsigned char *q = kheap_realloc(f.h, big, 3000);
    kheap_get_stats(f.h, &s1);
    CHECK(q == big, "realloc to 3000 on a full heap moved (%p -> %p)", (void *)big, (void *)q);
    for (int i = 0; i < 3000; i++)
        CHECK(q[i] == 0x5a, "byte %d lost", i);
    CHECK(s1.failed_count == s0.failed_count, "a realloc that succeeded counted a failure "
          "(%" PRIu64 " -> %" PRIu64 ")", s0.failed_count, s1.failed_count);
    kt_reports_reset();
    kheap_free_as(f.h, r, 100, KHEAP_BLOCK_MALLOC);
    CHECK(kt_reports() == 0, "a sized free of the size realloc gave was reported%s", "");
    kheap_free(f.h, q);
    while (n)
        kheap_free(f.h, (void *)f.blks[--n].p);
    fixture_close(&f);
}

TEST(large_aligned)
{
    static const size_t cases[][2] = {
        {40 * 1024, 64 * 1024}, {64 * 1024, 64 * 1024}, {100, 64 * 1024},
        {1 << 20, 1 << 20},     {300 * 1024, 1 << 20},  {5000, 1 << 20},
        {100, 8192},            {40000, 8192},
    };
    struct fixture f;
    fixture_open(&f, HEAP_SIZE);
    for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++)
        fill_and_empty(&f, cases[i][0], cases[i][1], 0,
                       "kheap_alloc_aligned");
    fixture_close(&f);
}

TEST(mixed_fill)
{
    struct fixture f;
    fixture_open(&f, HEAP_SIZE);
    for (int round = 0; round < 3; round++) {
        struct kheap_stats s0, s1;
        kheap_get_stats(f.h, &s0);
        size_t n = 0;
        uint64_t nulls = 0;
        unsigned run_of_nulls = 0;
        /* Alternate small and large until 64 NULLs in a row. */
        for (unsigned k = 0; run_of_nulls < 64; k++) {
            size_t size = k % 2 ? 1 + (size_t)kt_rand_below(&g_rng, KHEAP_MAX_CLASS)
                                : KHEAP_MAX_CLASS + 1 +
                                      (size_t)kt_rand_below(&g_rng, (512 * 1024));
            void *p = kt_rand_below(&g_rng, 8) ? kheap_alloc(f.h, size)
                                : kheap_alloc_aligned(f.h, size, 16384);
            if (!p) {
                nulls++;
                run_of_nulls++;
                continue;
            }
            run_of_nulls = 0;
            CHECK(n < f.max_blks, "more than %zu blocks", n);
            size_t u = kheap_usable_size(f.h, p);
            CHECK(u >= size, "usable_size(%zu) = %zu < size", size, u);
            f.blks[n].p = (uintptr_t)p;
            f.blks[n].usable = u;
            n++;
        }
        kheap_get_stats(f.h, &s1);
        CHECK(s1.failed_count - s0.failed_count == nulls,
              "failed_count rose by %" PRIu64 " for %" PRIu64 " NULLs",
              s1.failed_count - s0.failed_count, nulls);
        CHECK(s1.heap_free < f.fresh.heap_free / 2,
              "mixed fill stopped with heap_free %zu of %zu", s1.heap_free,
              f.fresh.heap_free);
        check_heap(f.h, "mixed fill");
        check_disjoint(f.blks, n, (uintptr_t)f.mem,
                       (uintptr_t)f.mem + HEAP_SIZE, "mixed fill");
        shuffle(f.blks, n);
        for (size_t i = 0; i < n; i++) {
            kheap_free(f.h, (void *)f.blks[i].p);
            if (i == n / 2)
                check_heap(f.h, "mixed half freed");
        }
        check_whole(f.h, &f.fresh, "mixed fill");
    }
    fixture_close(&f);
}

TEST(init_refusals)
{
    size_t size = KHEAP_MIN_REGION_SIZE;
    unsigned char *mem = kt_map(size);
    CHECK(mem != NULL, "mmap(%zu) failed", size);
    memset(mem, GUARD, size);
    kheap_t *sentinel = (kheap_t *)(uintptr_t)0x1234;
    kheap_t *h = sentinel;

    int err = kheap_init(&h, mem, size - 1);
    CHECK(err == KHEAP_ETOOSMALL, "kheap_init(%zu bytes) = %d, want "
          "KHEAP_ETOOSMALL", size - 1, err);
    CHECK(h == sentinel, "failed kheap_init changed *heap to %p", (void *)h);
    err = kheap_init(&h, mem, 0);
    CHECK(err == KHEAP_ETOOSMALL, "kheap_init(0 bytes) = %d", err);
    err = kheap_init(&h, NULL, size);
    CHECK(err == KHEAP_EINVAL, "kheap_init(NULL base) = %d, want EINVAL",
          err);
    err = kheap_init(NULL, mem, size);
    CHECK(err == KHEAP_EINVAL, "kheap_init(NULL heap) = %d, want EINVAL",
          err);
    /* A range that wraps past the top of the address space. */
    err = kheap_init(&h, (void *)(UINTPTR_MAX - 4095), size);
    CHECK(err == KHEAP_ERANGE, "kheap_init(wrapping range) = %d, want "
          "KHEAP_ERANGE", err);
    CHECK(h == sentinel, "failed kheap_init changed *heap to %p", (void *)h);
    for (size_t i = 0; i < size; i++)
        CHECK(mem[i] == GUARD, "failed kheap_init wrote byte %zu (0x%02x)", i,
              mem[i]);

    const char *msg = kheap_strerror(KHEAP_ETOOSMALL);
    char num[32];
    snprintf(num, sizeof num, "%lu", (unsigned long)KHEAP_MIN_REGION_SIZE);
    CHECK(msg && strstr(msg, num), "kheap_strerror(ETOOSMALL) '%s' lacks %s",
          msg ? msg : "(null)", num);
    snprintf(num, sizeof num, "%lu", (unsigned long)KHEAP_MIN_ADD_REGION_SIZE);
    CHECK(strstr(msg, num), "kheap_strerror(ETOOSMALL) '%s' lacks %s", msg,
          num);
    for (int e = 0; e <= KHEAP_ENOSYS + 1; e++)
        CHECK(kheap_strerror(e) != NULL && kheap_strerror(e)[0] != '\0',
              "kheap_strerror(%d) is empty", e);
    CHECK(kheap_strerror(-1) != NULL, "kheap_strerror(-1) is NULL%s", "");

    /* Exactly the minimum works and gives at least one page. */
    err = kheap_init(&h, mem, size);
    CHECK(err == KHEAP_OK, "kheap_init(KHEAP_MIN_REGION_SIZE) = %d (%s)", err,
          kheap_strerror(err));
    void *p = kheap_alloc(h, PAGE);
    CHECK(p != NULL, "minimum heap cannot give a %zu-byte block", PAGE);
    kheap_free(h, p);
    check_whole(h, NULL, "minimum heap");
    kt_unmap(mem, size);
}

struct range {
    uintptr_t lo, hi;
};

/* Fill a heap whose regions are r[0..nr-1] with a mix of blocks, writing
 * every usable byte, then free them. */
static void heavy_use(kheap_t *h, const struct range *r, size_t nr,
                      struct blk *b, size_t max)
{
    size_t n = 0;
    for (int pass = 0; pass < 2; pass++) {
        unsigned nulls = 0;
        while (nulls < 32 && n < max) {
            size_t size = kt_rand_below(&g_rng, 4) ? (size_t)kt_rand_below(&g_rng, 3000)
                                    : (size_t)kt_rand_below(&g_rng, 200000);
            size_t align = (size_t)64 << kt_rand_below(&g_rng, 12);
            void *p = kt_rand_below(&g_rng, 4) ? kheap_alloc(h, size)
                                : kheap_alloc_aligned(h, size, align);
            if (!p) {
                nulls++;
                continue;
            }
            size_t u = kheap_usable_size(h, p);
            uintptr_t a = (uintptr_t)p;
            bool inside = false;
            for (size_t i = 0; i < nr; i++)
                inside |= a >= r[i].lo && a + u <= r[i].hi;
            CHECK(inside, "block %p+%zu is in none of the heap's %zu regions",
                  p, u, nr);
            memset(p, 0xee, u);
            b[n].p = a;
            b[n].usable = u;
            n++;
        }
        check_disjoint(b, n, 0, UINTPTR_MAX, "heavy use");
        /* Free half, then refill, then all. */
        shuffle(b, n);
        size_t keep = pass == 0 ? n / 2 : 0;
        while (n > keep)
            kheap_free(h, (void *)b[--n].p);
    }
}

TEST(unaligned_base_and_guards)
{
    size_t size = (size_t)2 << 20;
    size_t total = PAGE + size + PAGE;
    unsigned char *m = kt_map(total);
    CHECK(m != NULL, "mmap(%zu) failed", total);
    memset(m, GUARD, total);
    /* An odd base and an odd size. */
    unsigned char *base = m + PAGE + 1;
    size_t len = size - 1 - 7;
    kheap_t *h;
    int err = kheap_init(&h, base, len);
    CHECK(err == KHEAP_OK, "kheap_init(base+1, %zu) = %d (%s)", len, err,
          kheap_strerror(err));
    CHECK((uintptr_t)h >= (uintptr_t)base &&
              (uintptr_t)h < (uintptr_t)base + len,
          "heap structure %p outside its region [%p,+%zu)", (void *)h,
          (void *)base, len);
    CHECK(kheap_end(h) == (uintptr_t)base + len,
          "kheap_end %#" PRIxPTR " != base + size %#" PRIxPTR, kheap_end(h),
          (uintptr_t)base + len);
    size_t max = len / 16;
    struct blk *b = malloc(max * sizeof *b);
    CHECK(b != NULL, "malloc failed%s", "");
    struct range r = {(uintptr_t)base, (uintptr_t)base + len};
    heavy_use(h, &r, 1, b, max);
    free(b);
    check_whole(h, NULL, "unaligned base");
    for (size_t i = 0; i < PAGE + 1; i++)
        CHECK(m[i] == GUARD, "byte %zu before the region was written (0x%02x)",
              PAGE + 1 - i, m[i]);
    for (size_t i = PAGE + 1 + len; i < total; i++)
        CHECK(m[i] == GUARD, "byte %zu after the region was written (0x%02x)",
              i - (PAGE + 1 + len), m[i]);
    kt_unmap(m, total);
}

TEST(add_region)
{
    size_t size1 = (size_t)1 << 20, size2 = (size_t)4 << 20;
    size_t total2 = PAGE + size2 + PAGE;
    unsigned char *m1 = kt_map(size1);
    unsigned char *m2 = kt_map(total2);
    CHECK(m1 && m2, "mmap failed%s", "");
    memset(m2, GUARD, total2);
    unsigned char *r2 = m2 + PAGE + 8; /* 8-aligned, not page-aligned */
    kheap_t *h;
    int err = kheap_init(&h, m1, size1);
    CHECK(err == KHEAP_OK, "kheap_init = %d", err);

    struct kheap_stats s0, s1;
    kheap_get_stats(h, &s0);
    CHECK(s0.region_count == 1, "region_count %zu for a new heap",
          s0.region_count);
    size_t big = (size_t)2 << 20;
    void *p = kheap_alloc(h, big);
    CHECK(p == NULL, "%zu bytes from a %zu-byte heap: %p", big, size1, p);

    err = kheap_add_region(h, r2, size2);
    CHECK(err == KHEAP_OK, "kheap_add_region(%zu) = %d (%s)", size2, err,
          kheap_strerror(err));
    kheap_get_stats(h, &s1);
    CHECK(s1.heap_total == s0.heap_total + size2,
          "heap_total %zu -> %zu after adding %zu", s0.heap_total,
          s1.heap_total, size2);
    CHECK(s1.region_count == 2, "region_count %zu after adding one",
          s1.region_count);
    CHECK(s1.heap_free > s0.heap_free + size2 / 2,
          "heap_free %zu -> %zu after adding %zu", s0.heap_free, s1.heap_free,
          size2);
    CHECK(kheap_end(h) == (uintptr_t)r2 + size2 ||
              kheap_end(h) == (uintptr_t)m1 + size1,
          "kheap_end %#" PRIxPTR " is neither region's end", kheap_end(h));
    if ((uintptr_t)r2 > (uintptr_t)m1)
        CHECK(kheap_end(h) == (uintptr_t)r2 + size2,
              "kheap_end %#" PRIxPTR ", highest region ends at %p",
              kheap_end(h), (void *)(r2 + size2));

    p = kheap_alloc(h, big);
    CHECK(p != NULL, "%zu bytes still fail after adding %zu", big, size2);
    CHECK((unsigned char *)p >= r2 && (unsigned char *)p + big <= r2 + size2,
          "block %p+%zu not inside the added region [%p,+%zu)", p, big,
          (void *)r2, size2);
    kheap_free(h, p);

    /* Overlaps with either region are refused, and change nothing. */
    err = kheap_add_region(h, m1 + size1 / 2, size1);
    CHECK(err == KHEAP_EOVERLAP, "overlapping the first region: %d", err);
    err = kheap_add_region(h, r2 - PAGE / 2, PAGE);
    CHECK(err == KHEAP_ETOOSMALL || err == KHEAP_EOVERLAP,
          "small overlapping region: %d", err);
    err = kheap_add_region(h, r2 + size2 - KHEAP_MIN_ADD_REGION_SIZE,
                           KHEAP_MIN_ADD_REGION_SIZE * 2);
    CHECK(err == KHEAP_EOVERLAP, "overlapping the added region's end: %d",
          err);
    err = kheap_add_region(h, r2 - 4, KHEAP_MIN_ADD_REGION_SIZE * 2);
    CHECK(err == KHEAP_EOVERLAP, "overlapping the added region's start: %d",
          err);
    err = kheap_add_region(h, m2, total2);
    CHECK(err == KHEAP_EOVERLAP, "region containing another: %d", err);
    err = kheap_add_region(h, NULL, size2);
    CHECK(err == KHEAP_EINVAL, "kheap_add_region(NULL) = %d", err);
    err = kheap_add_region(h, m2, KHEAP_MIN_ADD_REGION_SIZE - 1);
    CHECK(err == KHEAP_ETOOSMALL || err == KHEAP_EOVERLAP,
          "kheap_add_region(%d bytes) = %d", KHEAP_MIN_ADD_REGION_SIZE - 1,
          err);
    struct kheap_stats s2;
    kheap_get_stats(h, &s2);
    CHECK(s2.heap_total == s1.heap_total && s2.region_count == 2,
          "refused regions changed heap_total %zu -> %zu, regions %zu",
          s1.heap_total, s2.heap_total, s2.region_count);

    size_t max = (size1 + size2) / 16;
    struct blk *b = malloc(max * sizeof *b);
    CHECK(b != NULL, "malloc failed%s", "");
    struct range r[2] = {{(uintptr_t)m1, (uintptr_t)m1 + size1},
                         {(uintptr_t)r2, (uintptr_t)r2 + size2}};
    heavy_use(h, r, 2, b, max);
    free(b);
    check_whole(h, NULL, "two regions");
    for (size_t i = 0; i < PAGE + 8; i++)
        CHECK(m2[i] == GUARD, "byte %zu before the added region was written",
              PAGE + 8 - i);
    for (size_t i = PAGE + 8 + size2; i < total2; i++)
        CHECK(m2[i] == GUARD, "byte %zu after the added region was written",
              i - (PAGE + 8 + size2));
    kt_unmap(m1, size1);
    kt_unmap(m2, total2);
}

TEST(too_many_regions)
{
    /* Twice the smallest region, so the one that receives the per-CPU
     * state (two pages) still has pages for blocks. */
    size_t each = 2 * KHEAP_MIN_ADD_REGION_SIZE;
    size_t n = KHEAP_MAX_REGIONS; /* one more than the heap takes */
    size_t size = KHEAP_MIN_REGION_SIZE + n * (each + PAGE);
    unsigned char *m = kt_map(size);
    CHECK(m != NULL, "mmap(%zu) failed", size);
    kheap_t *h;
    int err = kheap_init(&h, m, KHEAP_MIN_REGION_SIZE);
    CHECK(err == KHEAP_OK, "kheap_init = %d", err);
    /* Separate the added regions by a page so none touches another. */
    unsigned char *r = m + KHEAP_MIN_REGION_SIZE + PAGE;
    for (size_t i = 1; i < KHEAP_MAX_REGIONS; i++, r += each + PAGE) {
        err = kheap_add_region(h, r, each);
        CHECK(err == KHEAP_OK, "kheap_add_region #%zu = %d (%s)", i, err,
              kheap_strerror(err));
    }
    err = kheap_add_region(h, r, each);
    CHECK(err == KHEAP_ETOOMANY, "region #%d: %d, want KHEAP_ETOOMANY",
          KHEAP_MAX_REGIONS + 1, err);
    struct kheap_stats s;
    kheap_get_stats(h, &s);
    CHECK(s.region_count == KHEAP_MAX_REGIONS, "region_count %zu",
          s.region_count);
    /* Every region serves blocks: fill with pages and count regions hit. */
    size_t max = s.heap_total / PAGE;
    struct blk *b = malloc(max * sizeof *b);
    CHECK(b != NULL, "malloc failed%s", "");
    size_t nb = 0;
    void *p;
    while (nb < max && (p = kheap_alloc(h, PAGE)) != NULL) {
        b[nb].p = (uintptr_t)p;
        b[nb].usable = PAGE;
        nb++;
    }
    check_disjoint(b, nb, (uintptr_t)m, (uintptr_t)m + size, "64 regions");
    size_t last_region = SIZE_MAX, regions_hit = 0;
    for (size_t i = 0; i < nb; i++) {
        size_t off = b[i].p - (uintptr_t)m;
        size_t region = off < KHEAP_MIN_REGION_SIZE
                            ? 0
                            : 1 + (off - KHEAP_MIN_REGION_SIZE - PAGE) /
                                      (each + PAGE);
        if (region != last_region)
            regions_hit++;
        last_region = region;
    }
    CHECK(regions_hit == KHEAP_MAX_REGIONS,
          "page blocks came from %zu of %d regions", regions_hit,
          KHEAP_MAX_REGIONS);
    for (size_t i = 0; i < nb; i++)
        kheap_free(h, (void *)b[i].p);
    free(b);
    check_whole(h, NULL, "64 regions");
    kt_unmap(m, size);
}

int main(void)
{
    kt_make_classes();
    kt_capture_reports(NULL);
    RUN(init_refusals);
    RUN(every_size_class);
    RUN(large_runs);
    RUN(large_aligned);
    RUN(realloc_shrink_when_full);
    RUN(mixed_fill);
    RUN(unaligned_base_and_guards);
    RUN(add_region);
    RUN(too_many_regions);
    return harness_done();
}
