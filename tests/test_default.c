/*
 * test_default.c - the default heap behind kmalloc and kheap_default_*.
 *
 * No kheap_init: the first call sets the heap up, once, even when four
 * threads make it at the same moment. Every block lies inside the static
 * array that ends at kheap_default_end(), and the statistics of the default
 * heap follow the calls.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "kheap.h"

#define PAGE KHEAP_PAGE_SIZE
#define THREADS 4
#define PER_THREAD 1000

static uintptr_t g_end;
/* Inside the static array [end - KHEAP_DEFAULT_SIZE, end). */
static bool in_array(const void *p, size_t len)
{
    uintptr_t a = (uintptr_t)p;
    return a >= g_end - KHEAP_DEFAULT_SIZE && a + len <= g_end;
}

static void check_heap(const char *when)
{
    const void *addr = NULL;
    const char *msg = kheap_check(kheap_default(), &addr);
    CHECK(msg == NULL, "%s: kheap_check: %s at %p", when, msg, addr);
}

static struct kheap_stats stats(void)
{
    struct kheap_stats s;
    kheap_get_stats(kheap_default(), &s);
    return s;
}

TEST(heap_end_before_use)
{
    g_end = kheap_default_end();
    CHECK(g_end != 0 && g_end % 8 == 0, "kheap_default_end() = %#" PRIxPTR,
          g_end);
    CHECK(kheap_default_end() == g_end, "kheap_default_end changed %#" PRIxPTR
          " -> %#" PRIxPTR, g_end, kheap_default_end());
}

struct first_use {
    pthread_barrier_t *bar;
    void *p[PER_THREAD];
    size_t size[PER_THREAD];
    unsigned id;
    int bad; /* index of the first bad block + 1, or 0 */
};

static void *first_use_thread(void *arg)
{
    struct first_use *t = arg;
    pthread_barrier_wait(t->bar);
    for (unsigned i = 0; i < PER_THREAD; i++) {
        size_t size = 1 + (i * 37u + t->id * 11u) % 700;
        if (i % 100 == 7)
            size = 40000 + i; /* a page run now and then */
        void *p = i % 2 ? kmalloc(size) : kheap_default_alloc(size);
        t->p[i] = p;
        t->size[i] = size;
        if (!p) {
            if (!t->bad)
                t->bad = (int)i + 1;
            continue;
        }
        memset(p, (int)(t->id + 1), size);
    }
    return NULL;
}

struct span {
    uintptr_t lo, hi;
    unsigned owner;
};

static int span_cmp(const void *a, const void *b)
{
    uintptr_t x = ((const struct span *)a)->lo;
    uintptr_t y = ((const struct span *)b)->lo;
    return x < y ? -1 : x > y;
}

TEST(concurrent_first_use)
{
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, THREADS);
    static struct first_use t[THREADS];
    pthread_t tid[THREADS];
    for (unsigned i = 0; i < THREADS; i++) {
        t[i].bar = &bar;
        t[i].id = i;
        t[i].bad = 0;
        CHECK(pthread_create(&tid[i], NULL, first_use_thread, &t[i]) == 0,
              "pthread_create %u failed", i);
    }
    for (unsigned i = 0; i < THREADS; i++)
        pthread_join(tid[i], NULL);
    pthread_barrier_destroy(&bar);
    for (unsigned i = 0; i < THREADS; i++)
        CHECK(t[i].bad == 0, "thread %u: allocation #%d of %zu bytes failed",
              i, t[i].bad - 1, t[i].size[t[i].bad - 1]);

    /* One heap: every block inside the array, none overlapping, each
     * still holding its own thread's bytes. */
    static struct span s[THREADS * PER_THREAD];
    size_t n = 0;
    for (unsigned i = 0; i < THREADS; i++) {
        for (unsigned j = 0; j < PER_THREAD; j++) {
            const unsigned char *p = t[i].p[j];
            size_t len = t[i].size[j];
            CHECK(in_array(p, len), "block %p+%zu outside the default array "
                  "ending at %#" PRIxPTR, (const void *)p, len, g_end);
            CHECK(p[0] == i + 1 && p[len - 1] == i + 1,
                  "thread %u block %u overwritten (0x%02x, 0x%02x)", i, j,
                  p[0], p[len - 1]);
            s[n].lo = (uintptr_t)p;
            s[n].hi = (uintptr_t)p + ksize(p);
            s[n].owner = i;
            n++;
        }
    }
    qsort(s, n, sizeof *s, span_cmp);
    for (size_t i = 1; i < n; i++)
        CHECK(s[i - 1].hi <= s[i].lo,
              "block %#" PRIxPTR " (thread %u) overlaps %#" PRIxPTR
              " (thread %u)",
              s[i - 1].lo, s[i - 1].owner, s[i].lo, s[i].owner);
    struct kheap_stats st = stats();
    CHECK(st.allocation_count == THREADS * PER_THREAD,
          "allocation_count %" PRIu64 " after %d allocations (set up twice?)",
          st.allocation_count, THREADS * PER_THREAD);
    check_heap("after first use");
    for (unsigned i = 0; i < THREADS; i++)
        for (unsigned j = 0; j < PER_THREAD; j++)
            (j % 2 ? kfree : kheap_default_free)(t[i].p[j]);
    st = stats();
    CHECK(st.used_bytes == 0 && st.free_count == THREADS * PER_THREAD,
          "all freed: used %zu, free_count %" PRIu64, st.used_bytes,
          st.free_count);
}

TEST(same_heap)
{
    kheap_t *h = kheap_default();
    CHECK(h != NULL && kheap_default() == h, "kheap_default() not stable%s",
          "");
    CHECK(kheap_default_end() == g_end, "kheap_default_end moved to %#" PRIxPTR,
          kheap_default_end());
#if !KHEAP_DEFAULT_GROW
    CHECK(kheap_end(h) == g_end,
          "kheap_end(default) %#" PRIxPTR " != kheap_default_end() %#" PRIxPTR,
          kheap_end(h), g_end);
#endif
    struct kheap_stats st = stats();
    CHECK(st.heap_total <= KHEAP_DEFAULT_SIZE &&
              st.heap_total >= KHEAP_DEFAULT_SIZE / 2,
          "default heap_total %zu, array is %lu", st.heap_total,
          (unsigned long)KHEAP_DEFAULT_SIZE);
    CHECK(st.region_count == 1, "default heap has %zu regions",
          st.region_count);
    /* A block from one name is a block of the other. */
    void *p = kmalloc(100);
    CHECK(p != NULL && kheap_usable_size(h, p) == 104 &&
              kheap_default_usable_size(p) == 104 && ksize(p) == 104,
          "kmalloc(100) = %p, usable %zu", p, ksize(p));
    kheap_free(h, p);
    p = kheap_alloc(h, 100);
    CHECK(p != NULL && in_array(p, 100), "kheap_alloc(default) = %p", p);
    kfree(p);
}

TEST(kmalloc_family)
{
    struct kheap_stats s0 = stats(), s1;
    unsigned char *p = kmalloc(100);
    CHECK(p != NULL && in_array(p, 100), "kmalloc(100) = %p", (void *)p);
    CHECK(ksize(p) == 104, "ksize(kmalloc(100)) = %zu, class is 104",
          ksize(p));
    s1 = stats();
    CHECK(s1.used_bytes == s0.used_bytes + 104 &&
              s1.allocation_count == s0.allocation_count + 1,
          "kmalloc(100): used %zu -> %zu, allocs %" PRIu64 " -> %" PRIu64,
          s0.used_bytes, s1.used_bytes, s0.allocation_count,
          s1.allocation_count);
    memset(p, 0x42, 100);

    unsigned char *q = krealloc(p, 5000);
    CHECK(q != NULL && in_array(q, 5000), "krealloc(5000) = %p", (void *)q);
    for (int i = 0; i < 100; i++)
        CHECK(q[i] == 0x42, "krealloc lost byte %d (0x%02x)", i, q[i]);
    CHECK(ksize(q) == 5120, "ksize after krealloc(5000) = %zu, class 5120",
          ksize(q));
    q = krealloc(q, 50);
    CHECK(q != NULL && q[0] == 0x42 && q[49] == 0x42,
          "krealloc shrink lost data (%p)", (void *)q);
    CHECK(krealloc(q, 0) == NULL, "krealloc(p, 0) is not NULL%s", "");
    q = krealloc(NULL, 10);
    CHECK(q != NULL && ksize(q) == 16, "krealloc(NULL, 10) = %p", (void *)q);
    kfree(q);

    /* Zeroed memory, also where a dirty block was just freed. */
    unsigned char *d = kmalloc(3000);
    CHECK(d != NULL, "kmalloc(3000) failed%s", "");
    memset(d, 0xff, 3000);
    kfree(d);
    unsigned char *z = kzalloc(3000);
    CHECK(z != NULL, "kzalloc failed%s", "");
    for (int i = 0; i < 3000; i++)
        CHECK(z[i] == 0, "kzalloc byte %d is 0x%02x", i, z[i]);
    kfree(z);
    z = kcalloc(300, 10);
    CHECK(z != NULL, "kcalloc failed%s", "");
    for (int i = 0; i < 3000; i++)
        CHECK(z[i] == 0, "kcalloc byte %d is 0x%02x", i, z[i]);
    kfree(z);
    CHECK(kcalloc(SIZE_MAX / 2 + 1, 2) == NULL, "kcalloc overflow not NULL%s",
          "");
    z = kheap_default_calloc(7, 9);
    CHECK(z != NULL && ksize(z) >= 63, "kheap_default_calloc = %p",
          (void *)z);
    z = kheap_default_realloc(z, 7000);
    CHECK(z != NULL, "kheap_default_realloc failed%s", "");
    kheap_default_free(z);

    /* Aligned blocks, small and large. */
    static const size_t aligns[] = {8, 64, 4096, 65536, 1 << 20};
    for (unsigned i = 0; i < sizeof aligns / sizeof aligns[0]; i++) {
        void *a = kmalloc_aligned(100, aligns[i]);
        void *b = kheap_default_alloc_aligned(70000, aligns[i]);
        CHECK(a && (uintptr_t)a % aligns[i] == 0 && in_array(a, 100),
              "kmalloc_aligned(100, %zu) = %p", aligns[i], a);
        CHECK(b && (uintptr_t)b % aligns[i] == 0 && in_array(b, 70000),
              "kheap_default_alloc_aligned(70000, %zu) = %p", aligns[i], b);
        kfree(a);
        kfree(b);
    }

    /* A large block is a page run inside the array. */
    void *l = kmalloc(100000);
    CHECK(l && (uintptr_t)l % PAGE == 0 && in_array(l, 100000) &&
              ksize(l) == 102400,
          "kmalloc(100000) = %p, ksize %zu", l, ksize(l));
    kfree(l);
    CHECK(ksize(NULL) == 0, "ksize(NULL) != 0%s", "");
    kfree(NULL);

    s1 = stats();
    CHECK(s1.used_bytes == s0.used_bytes,
          "all freed: used %zu, was %zu", s1.used_bytes, s0.used_bytes);
    CHECK(s1.allocation_count - s0.allocation_count ==
              s1.free_count - s0.free_count,
          "%" PRIu64 " allocations, %" PRIu64 " frees",
          s1.allocation_count - s0.allocation_count,
          s1.free_count - s0.free_count);
    CHECK(s1.peak_bytes >= 102400, "peak_bytes %zu below a 100 KiB block",
          s1.peak_bytes);
    check_heap("kmalloc family");
}

TEST(fill_default)
{
    /* The fixed array runs out: NULL, a counted failure, no growth. */
    kheap_reclaim(kheap_default()); /* no kept slab splits the free pages */
    struct kheap_stats s0 = stats();
    enum { MAX = 512 };
    const size_t blk = KHEAP_DEFAULT_SIZE / 128;
    static void *p[MAX];
    size_t n = 0;
    while (n < MAX && (p[n] = kmalloc(blk)) != NULL) {
        CHECK(in_array(p[n], blk), "block %p outside the array", p[n]);
        n++;
    }
    struct kheap_stats s1 = stats();
#if !KHEAP_DEFAULT_GROW
    CHECK(n < MAX, "%zu blocks of %zu bytes from a %lu-byte array", n, blk,
          (unsigned long)KHEAP_DEFAULT_SIZE);
    CHECK((n + 2) * blk >= s0.heap_free,
          "only %zu blocks of %zu bytes in %zu free bytes", n, blk,
          s0.heap_free);
    CHECK(s1.failed_count == s0.failed_count + 1,
          "failed_count %" PRIu64 " -> %" PRIu64, s0.failed_count,
          s1.failed_count);
#endif
    for (size_t i = 0; i < n; i++)
        kfree(p[i]);
    kheap_reclaim(kheap_default());
    s1 = stats();
    CHECK(s1.used_bytes == 0 && s1.heap_free == s1.heap_total -
                                                    s1.metadata_bytes,
          "emptied default heap: used %zu, free %zu, total %zu, metadata %zu",
          s1.used_bytes, s1.heap_free, s1.heap_total, s1.metadata_bytes);
    check_heap("filled and emptied");
    CHECK(kt_reports() == 0, "%lu unexpected reports", kt_reports());
}


/* The kmalloc-32 row of the default heap's slabinfo. */
/* The slabinfo row of the kmalloc class of size bytes. */
static struct kheap_cache_info class_row(size_t size)
{
    static struct kheap_cache_info rows[KHEAP_NUM_CLASSES + 6];
    char name[32];
    snprintf(name, sizeof name, "kmalloc-%zu", kt_class_of(size));
    kheap_slabinfo(kheap_default(), rows, KHEAP_NUM_CLASSES + 6);
    for (size_t i = 0; i < KHEAP_NUM_CLASSES; i++)
        if (!strcmp(rows[i].name, name))
            return rows[i];
    CHECK(0, "no %s row", name);
    return rows[0];
}

/* Expect ptr's kfree to be reported as kind, at ptr, and the heap to be
 * the same after. */
static void expect_report(void *ptr, enum kheap_report_kind kind, const char *what)
{
    struct kheap_stats s0 = stats();
    unsigned long n = kt_reports();
    kfree(ptr);
    struct kheap_stats s1 = stats();
    CHECK(kt_reports() == n + 1, "%s: %lu reports, want 1", what, kt_reports() - n);
    struct kheap_report last = kt_last_report();
    CHECK(last.kind == kind && last.addr == ptr, "%s: report %d at %p (\"%s\"), want %d at %p",
          what, (int)last.kind, last.addr, last.reason, (int)kind, ptr);
    CHECK(s1.used_bytes == s0.used_bytes && s1.free_count == s0.free_count,
          "%s: used %zu -> %zu, frees %" PRIu64 " -> %" PRIu64, what, s0.used_bytes,
          s1.used_bytes, s0.free_count, s1.free_count);
    check_heap(what);
}

/* kmalloc/kfree's own hit paths (the per-CPU word and the page tags):
 * they hit, for classes of one-page and of multi-page slabs, and every
 * bad pointer they see still reaches the exact checks of the slow path. */
TEST(kfree_hit_path_and_misuse)
{
    /* 1100 and 20000 bytes: classes whose slabs have several pages. */
    static const size_t hit_sizes[] = {32, 1100, 2048, 20000, KHEAP_MAX_CLASS};
    for (size_t k = 0; k < sizeof hit_sizes / sizeof hit_sizes[0]; k++) {
        size_t size = hit_sizes[k];
        void *warm = kmalloc(size);
        kfree(warm);
        struct kheap_cache_info r0 = class_row(size);
        for (int i = 0; i < 1000; i++) {
            void *p = kmalloc(size);
            CHECK(p != NULL, "kmalloc(%zu) = NULL", size);
            *(volatile char *)p = 1;
            kfree(p);
        }
        struct kheap_cache_info r1 = class_row(size);
        CHECK(r1.cpu_hits - r0.cpu_hits >= 1990 && r1.cpu_misses - r0.cpu_misses <= 10,
              "1000 pairs of %zu bytes: %" PRIu64 " hits, %" PRIu64 " misses", size,
              r1.cpu_hits - r0.cpu_hits, r1.cpu_misses - r0.cpu_misses);
        CHECK(r1.allocs - r0.allocs == 1000 && r1.frees - r0.frees == 1000,
              "1000 pairs of %zu bytes counted as %" PRIu64 " allocations and %" PRIu64
              " frees", size, r1.allocs - r0.allocs, r1.frees - r0.frees);
    }

    /* A page boundary inside an object of a multi-page slab is no slot,
     * though it starts a page: the slab-wide test refuses it. */
    void *held[16];
    unsigned boundaries = 0;
    for (int i = 0; i < 16; i++) {
        unsigned char *p = held[i] = kmalloc(1100);
        CHECK(p != NULL, "kmalloc(1100) = NULL%s", "");
        uintptr_t b = ((uintptr_t)p + KHEAP_PAGE_SIZE) & ~(uintptr_t)(KHEAP_PAGE_SIZE - 1);
        if (b - (uintptr_t)p < kt_usable(1100)) {
            expect_report((void *)b, KHEAP_REPORT_INTERIOR, "page boundary inside a block");
            boundaries++;
        }
    }
    CHECK(boundaries > 0, "no 1100-byte block crossed a page in 16%s", "");
    for (int i = 0; i < 16; i++)
        kfree(held[i]);

    static const size_t sizes[] = {16, 24, 48, 64, 96, 200, 512, 1000, 1100, 3000, 5000, 20000};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        char what[64];
        unsigned char *p = kmalloc(sizes[k]), *q = kmalloc(sizes[k]);
        CHECK(p && q, "kmalloc(%zu) = NULL", sizes[k]);
        snprintf(what, sizeof what, "interior pointer of %zu bytes", sizes[k]);
        expect_report(p + 8, KHEAP_REPORT_INTERIOR, what);
        /* A live object holding the key is freed, not reported. */
        memset(p, 0, sizes[k]);
        memcpy(p + 8, &(uint32_t){0xf4eeb10cu}, 4);
        unsigned long n = kt_reports();
        kfree(p);
        CHECK(kt_reports() == n, "a live %zu-byte object holding the key was reported",
              sizes[k]);
        snprintf(what, sizeof what, "double free of %zu bytes", sizes[k]);
        expect_report(p, KHEAP_REPORT_DOUBLE_FREE, what);
        kfree(q);
        snprintf(what, sizeof what, "second double free of %zu bytes", sizes[k]);
        expect_report(q, KHEAP_REPORT_DOUBLE_FREE, what);
    }
    int local;
    expect_report(&local, KHEAP_REPORT_FOREIGN, "pointer to the stack");
    /* The heap's own structure sits at the start of the array. */
    void *own = (void *)kheap_default();
    unsigned long n = kt_reports();
    kfree(own);
    CHECK(kt_reports() == n + 1 && kt_last_report().addr == own, "kfree of the heap structure: %lu reports",
          kt_reports() - n);
    check_heap("after kfree of the heap structure");
    kt_reports_reset();
}

int main(void)
{
    kt_capture_reports(NULL);
    kt_make_classes();
    /* Order matters: the first two run before anything touches the heap. */
    RUN(heap_end_before_use);
    RUN(concurrent_first_use);
    RUN(same_heap);
    RUN(kmalloc_family);
    RUN(fill_default);
    RUN(kfree_hit_path_and_misuse);
    return harness_done();
}
