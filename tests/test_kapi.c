/*
 * test_kapi.c - the kernel API around the caches: bulk allocation and
 * free, reserves and memory pools, per-cache tuning and the slabinfo
 * counters, shrinkers and the low-water mark, and KHEAP_NOLOCK
 * allocation from a signal handler standing in for an NMI.
 *
 * Every test makes its own heap over fresh memory and ends with
 * kheap_check_quiescent, so the counters and the structures must agree.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "harness.h"
#include "kheap.h"
#include "kheap_hosted.h"

/* Reports go to the test (kt_capture_reports, in main): how many since
 * the last reset, and the last one. */
#define g_reports kt_reports()
#define g_last kt_last_report()

static void *map(size_t size)
{
    void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return m == MAP_FAILED ? NULL : m;
}

/* A heap over size fresh bytes (unmapped by heap_end). */
static kheap_t *heap_new(size_t size, void **mem)
{
    kheap_t *h = NULL;
    *mem = map(size);
    CHECK(*mem, "mmap of %zu bytes failed", size);
    int e = kheap_init(&h, *mem, size);
    CHECK(e == KHEAP_OK, "kheap_init: %s", kheap_strerror(e));
    return h;
}

static void heap_end(kheap_t *h, void *mem, size_t size)
{
    const void *where = NULL;
    const char *bad = kheap_check_quiescent(h, &where);
    CHECK(!bad, "kheap_check_quiescent: %s at %p", bad, where);
    kheap_fini(h);
    munmap(mem, size);
}

static struct kheap_cache_info info_of(kheap_cache_t *c)
{
    struct kheap_cache_info i;
    kheap_cache_info(c, &i);
    return i;
}

static int cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

/* n objects of size bytes: distinct, not overlapping, each writable. */
static void check_distinct(void **objs, size_t n, size_t size)
{
    void **s = malloc(n * sizeof *s);
    CHECK(s, "malloc");
    memcpy(s, objs, n * sizeof *s);
    qsort(s, n, sizeof *s, cmp_ptr);
    for (size_t i = 0; i < n; i++) {
        CHECK(s[i], "object %zu is NULL", i);
        if (i)
            CHECK((uintptr_t)s[i] >= (uintptr_t)s[i - 1] + size, "objects %p and %p overlap",
                  s[i - 1], s[i]);
        memset(s[i], 0x5a, size);
    }
    free(s);
}

/* ---- bulk ---- */

static unsigned long g_ctor;
static void count_ctor(void *o)
{
    g_ctor++;
    *(uint64_t *)o = 0xc0ffee;
}

TEST(bulk_cache)
{
    void *mem;
    size_t hs = (size_t)16 << 20;
    kheap_t *h = heap_new(hs, &mem);
    kheap_cache_t *c = kheap_cache_create(h, "bulk", 72, 8, count_ctor, NULL);
    CHECK(c, "cache_create");
    enum { N = 3000 };
    static void *objs[N];
    g_ctor = 0;
    CHECK(kheap_cache_alloc_bulk(c, N, objs) == N, "bulk of %d", N);
    for (size_t i = 0; i < N; i++)
        CHECK(*(uint64_t *)objs[i] == 0xc0ffee, "object %zu not constructed", i);
    CHECK(g_ctor == N, "%lu constructor calls for %d fresh objects", g_ctor, N);
    struct kheap_cache_info ci = info_of(c);
    CHECK(ci.active_objs == N && ci.allocs == N, "active %zu allocs %" PRIu64, ci.active_objs,
          ci.allocs);
    CHECK(ci.bulk_allocs == N && ci.cpu_hits == 0, "bulk_allocs %" PRIu64 " cpu_hits %" PRIu64,
          ci.bulk_allocs, ci.cpu_hits);
    /* 60 freed fit this CPU's loaded magazine: the next bulk takes them
     * back, constructed as they were (no constructor call). */
    kheap_cache_free_bulk(c, 60, objs);
    CHECK(info_of(c).cached_objs == 60, "%zu cached after freeing 60",
          info_of(c).cached_objs);
    CHECK(kheap_cache_alloc_bulk(c, 60, objs) == 60, "second bulk");
    CHECK(g_ctor == N, "objects from magazines were constructed again (%lu)", g_ctor);
    kheap_cache_free_bulk(c, N / 2, objs);
    CHECK(kheap_cache_alloc_bulk(c, N / 2, objs) == N / 2, "third bulk");
    check_distinct(objs, N, 72);
    kheap_cache_free_bulk(c, N, objs);
    ci = info_of(c);
    CHECK(ci.active_objs == 0 && ci.bulk_frees == N + N / 2 + 60, "active %zu bulk_frees %" PRIu64,
          ci.active_objs, ci.bulk_frees);
    /* Bulk and single calls mix. */
    void *one = kheap_cache_alloc(c);
    CHECK(kheap_cache_alloc_bulk(c, 10, objs) == 10, "bulk after single");
    kheap_cache_free(c, one);
    kheap_cache_free_bulk(c, 10, objs);
    CHECK(kheap_cache_alloc_bulk(c, 0, objs) == 0 && kheap_cache_alloc_bulk(NULL, 3, objs) == 0,
          "n 0 or no cache must give 0");
    CHECK(kheap_cache_destroy(c) == KHEAP_OK, "destroy after bulk frees");
    heap_end(h, mem, hs);
}

TEST(bulk_kmalloc)
{
    void *mem;
    size_t hs = (size_t)32 << 20;
    kheap_t *h = heap_new(hs, &mem);
    static const size_t sizes[] = {1, 32, 200, 1000, 5000, 32768, 40000, 300000};
    static void *objs[600];
    struct kheap_stats s0, s1;
    kheap_get_stats(h, &s0);
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t n = sizes[k] > 32768 ? 20 : 600;
        CHECK(kheap_alloc_bulk(h, sizes[k], n, objs) == n, "bulk of %zu x %zu", n, sizes[k]);
        for (size_t i = 0; i < n; i++)
            CHECK(kheap_usable_size(h, objs[i]) >= sizes[k], "block %zu too small", i);
        check_distinct(objs, n, sizes[k]);
        kheap_free(h, objs[n / 2]);
        objs[n / 2] = NULL; /* skipped by the free */
        kheap_free(h, objs[n / 2 + 1]);
        objs[n / 2 + 1] = NULL;
        kheap_free_bulk(h, n, objs);
        kheap_free(h, NULL);
    }
    /* Mixed sizes in one free_bulk. */
    for (size_t i = 0; i < 600; i++)
        objs[i] = kheap_alloc(h, sizes[i % 8]);
    kheap_free_bulk(h, 600, objs);
    kheap_get_stats(h, &s1);
    CHECK(s1.used_bytes == s0.used_bytes, "used %zu after, %zu before", s1.used_bytes,
          s0.used_bytes);
    CHECK(s1.allocation_count == s1.free_count, "allocations %" PRIu64 " frees %" PRIu64,
          s1.allocation_count, s1.free_count);
    heap_end(h, mem, hs);
}

TEST(bulk_exhaustion)
{
    void *mem;
    size_t hs = (size_t)2 << 20;
    kheap_t *h = heap_new(hs, &mem);
    kheap_cache_t *c = kheap_cache_create(h, "ex", 256, 0, NULL, NULL);
    CHECK(c, "cache_create");
    size_t n = hs / 64; /* more than the heap can hold */
    static void *objs[((size_t)2 << 20) / 64];
    void *keep = kheap_cache_alloc(c);
    struct kheap_stats s0, s1;
    kheap_get_stats(h, &s0);
    struct kheap_cache_info i0 = info_of(c), i1;
    CHECK(kheap_cache_alloc_bulk(c, n / 4, objs) == 0, "bulk of %zu x 256 B fit in 2 MiB",
          n / 4);
    CHECK(kheap_alloc_bulk(h, 100, n, objs) == 0, "kmalloc bulk of %zu x 100 B fit", n);
    CHECK(kheap_alloc_bulk(h, 100000, 64, objs) == 0, "64 large blocks of 100 kB fit");
    kheap_get_stats(h, &s1);
    i1 = info_of(c);
    CHECK(s1.used_bytes == s0.used_bytes, "used %zu after failed bulk, %zu before",
          s1.used_bytes, s0.used_bytes);
    CHECK(s1.failed_count >= s0.failed_count + 3, "failures %" PRIu64 " -> %" PRIu64,
          s0.failed_count, s1.failed_count);
    CHECK(i1.active_objs == i0.active_objs && i1.allocs == i0.allocs,
          "cache changed by a failed bulk: active %zu -> %zu", i0.active_objs, i1.active_objs);
    const char *bad = kheap_check(h, NULL);
    CHECK(!bad, "check after failed bulk: %s", bad);
    /* What does fit still comes all at once. */
    CHECK(kheap_cache_alloc_bulk(c, 1000, objs) == 1000, "1000 x 256 B after the failure");
    kheap_cache_free_bulk(c, 1000, objs);
    kheap_cache_free(c, keep);
    heap_end(h, mem, hs);
}

TEST(bulk_misuse)
{
    void *mem;
    size_t hs = (size_t)8 << 20;
    kheap_t *h = heap_new(hs, &mem);
    kheap_cache_t *a = kheap_cache_create(h, "a", 48, 0, NULL, NULL);
    kheap_cache_t *b = kheap_cache_create(h, "b", 48, 0, NULL, NULL);
    CHECK(a && b, "cache_create");
    void *objs[8];
    CHECK(kheap_cache_alloc_bulk(a, 6, objs) == 6, "bulk");
    void *other = kheap_cache_alloc(b);
    static char not_heap[64];
    objs[6] = other;          /* wrong cache */
    objs[7] = not_heap;       /* foreign */
    void *dup[3] = {objs[0], objs[1], objs[0]};
    kt_reports_reset();
    kheap_cache_free_bulk(a, 8, objs);
    CHECK(g_reports == 2, "%lu reports for a wrong-cache and a foreign pointer", g_reports);
    kt_reports_reset();
    kheap_cache_free_bulk(a, 3, dup);
    CHECK(g_reports >= 2 && g_last.kind == KHEAP_REPORT_DOUBLE_FREE,
          "%lu reports (last kind %d) for three frees of freed objects", g_reports,
          (int)g_last.kind);
    CHECK(info_of(a).active_objs == 0, "a still has %zu objects", info_of(a).active_objs);
    kheap_cache_free(b, other);
    heap_end(h, mem, hs);
}

/* ---- reserves and memory pools ---- */

TEST(reserve)
{
    void *mem;
    size_t hs = (size_t)8 << 20;
    kheap_t *h = heap_new(hs, &mem);
    kheap_cache_t *c = kheap_cache_create(h, "res", 100, 0, count_ctor, NULL);
    kheap_cache_t *other = kheap_cache_create(h, "other", 100, 0, NULL, NULL);
    CHECK(c && other, "cache_create");
    struct kheap_reserve r = KHEAP_RESERVE_INIT;
    CHECK(kheap_reserve_fill(c, 200, &r) == KHEAP_OK && r.count == 200, "fill 200: %zu",
          r.count);
    CHECK(kheap_reserve_fill(c, 150, &r) == KHEAP_OK && r.count == 200,
          "fill to 150 must keep 200: %zu", r.count);
    CHECK(kheap_reserve_fill(other, 10, &r) == KHEAP_EINVAL, "fill from another cache");
    CHECK(kheap_reserve_fill(NULL, 10, &r) == KHEAP_EINVAL, "fill from NULL");
    struct kheap_cache_info i0 = info_of(c);
    CHECK(i0.active_objs == 200, "reserved objects count as allocated: %zu", i0.active_objs);
    /* 200 allocations that cannot fail; constructed objects, distinct. */
    static void *got[200];
    for (int i = 0; i < 200; i++) {
        got[i] = kheap_reserve_alloc(&r);
        CHECK(got[i], "reserve_alloc %d of 200 failed", i);
        CHECK(*(uint64_t *)got[i] == 0xc0ffee, "reserved object %d not constructed", i);
    }
    check_distinct(got, 200, 100);
    CHECK(kheap_reserve_alloc(&r) == NULL && r.count == 0, "an empty reserve gave an object");
    CHECK(info_of(c).reserve_allocs == 200 && info_of(c).active_objs == 200,
          "reserve_allocs %" PRIu64, info_of(c).reserve_allocs);
    kheap_cache_free_bulk(c, 200, got);
    /* Return hands back what is left. */
    CHECK(kheap_reserve_fill(c, 50, &r) == KHEAP_OK, "refill");
    void *one = kheap_reserve_alloc(&r);
    CHECK(kheap_reserve_return(&r) == 49 && r.count == 0, "return");
    kheap_cache_free(c, one);
    CHECK(info_of(c).active_objs == 0, "%zu left", info_of(c).active_objs);
    /* A reserve larger than the heap can give: refused whole. */
    struct kheap_stats s0, s1;
    kheap_get_stats(h, &s0);
    struct kheap_reserve big = KHEAP_RESERVE_INIT;
    CHECK(kheap_reserve_fill(c, hs / 100, &big) == KHEAP_ENOMEM, "fill of %zu fit", hs / 100);
    CHECK(big.count == 0 && big.head == NULL, "a failed fill left %zu objects", big.count);
    CHECK(kheap_reserve_fill(c, 10, &big) == KHEAP_OK, "fill 10");
    CHECK(kheap_reserve_fill(c, hs / 100, &big) == KHEAP_ENOMEM && big.count == 10,
          "a failed top-up changed the reserve: %zu", big.count);
    kheap_reserve_return(&big);
    kheap_get_stats(h, &s1);
    CHECK(s1.used_bytes == s0.used_bytes, "used %zu, was %zu", s1.used_bytes, s0.used_bytes);
    heap_end(h, mem, hs);
}

TEST(mempool)
{
    void *mem;
    size_t hs = (size_t)2 << 20;
    kheap_t *h = heap_new(hs, &mem);
    kheap_cache_t *c = kheap_cache_create(h, "pool", 512, 0, NULL, NULL);
    CHECK(c, "cache_create");
    struct kheap_mempool pool;
    CHECK(kheap_mempool_init(&pool, c, 16) == KHEAP_OK, "mempool_init");
    /* Exhaust the heap through the pool: the last 16 come from the reserve. */
    static void *objs[8192];
    size_t n = 0;
    while (n < 8192 && (objs[n] = kheap_mempool_alloc(&pool)))
        n++;
    CHECK(n > 16 && n < 8192, "%zu objects", n);
    CHECK(pool.r.count == 0, "the reserve was not used up: %zu", pool.r.count);
    CHECK(kheap_cache_alloc(c) == NULL, "the heap was not full");
    /* Frees refill the reserve first, then go to the cache. */
    for (size_t i = 0; i < 20; i++)
        kheap_mempool_free(&pool, objs[--n]);
    CHECK(pool.r.count == 16, "reserve holds %zu after 20 frees", pool.r.count);
    kt_reports_reset();
    kheap_mempool_free(&pool, objs[n - 1]);
    kheap_mempool_free(&pool, objs[n - 1]); /* the cache has it now */
    CHECK(g_reports == 1 && g_last.kind == KHEAP_REPORT_DOUBLE_FREE, "%lu reports", g_reports);
    n--;
    /* A double free into the reserve itself is refused too. */
    struct kheap_mempool p2;
    CHECK(kheap_mempool_init(&p2, c, 0) == KHEAP_OK, "second pool");
    p2.min = 4;
    void *x = objs[--n];
    kheap_mempool_free(&p2, x);
    kt_reports_reset();
    kheap_mempool_free(&p2, x);
    CHECK(g_reports == 1 && p2.r.count == 1, "double free into a reserve: %lu reports",
          g_reports);
    kheap_mempool_destroy(&p2);
    while (n)
        kheap_mempool_free(&pool, objs[--n]);
    kheap_mempool_destroy(&pool);
    CHECK(info_of(c).active_objs == 0, "%zu left", info_of(c).active_objs);
    heap_end(h, mem, hs);
}

/* ---- per-cache tuning ---- */

TEST(tuning)
{
    void *mem;
    size_t hs = (size_t)8 << 20;
    kheap_t *h = heap_new(hs, &mem);
    kheap_cache_t *dflt = kheap_cache_create(h, "dflt", 64, 0, NULL, NULL);
    struct kheap_cache_tuning off = {0, KHEAP_TUNE_DEFAULT}, small = {10, 0};
    struct kheap_cache_tuning bad1 = {65, KHEAP_TUNE_DEFAULT}, bad2 = {8, KHEAP_TUNE_DEPOT_MAX + 1};
    kheap_cache_t *c0 = kheap_cache_create_tuned(h, "nomag", 64, 0, NULL, NULL, &off);
    kheap_cache_t *c8 = kheap_cache_create_tuned(h, "mag8", 64, 0, NULL, NULL, &small);
    CHECK(dflt && c0 && c8, "create_tuned");
    CHECK(!kheap_cache_create_tuned(h, "x", 64, 0, NULL, NULL, &bad1) &&
              !kheap_cache_create_tuned(h, "x", 64, 0, NULL, NULL, &bad2),
          "out-of-range tuning accepted");
    struct kheap_cache_info i = info_of(dflt);
    CHECK(i.mag_cap == 64 && i.depot_max > 0, "default mag_cap %u depot_max %u", i.mag_cap,
          i.depot_max);
    CHECK(info_of(c0).mag_cap == 0, "mag_cap 0 became %u", info_of(c0).mag_cap);
    CHECK(info_of(c8).mag_cap == 8 && info_of(c8).depot_max == 0, "10 -> mag_cap %u, depot %u",
          info_of(c8).mag_cap, info_of(c8).depot_max);
    static void *objs[500];
    kheap_cache_t *cs[3] = {dflt, c0, c8};
    for (int k = 0; k < 3; k++) {
        for (int round = 0; round < 3; round++) {
            for (int j = 0; j < 500; j++)
                CHECK(objs[j] = kheap_cache_alloc(cs[k]), "alloc");
            for (int j = 0; j < 500; j++)
                kheap_cache_free(cs[k], objs[j]);
        }
        i = info_of(cs[k]);
        CHECK(i.active_objs == 0 && i.allocs == 1500 && i.frees == 1500,
              "%s: active %zu allocs %" PRIu64, i.name, i.active_objs, i.allocs);
    }
    CHECK(info_of(c0).cached_objs == 0 && info_of(c0).cpu_hits == 0,
          "no magazines, yet %zu cached and %" PRIu64 " hits", info_of(c0).cached_objs,
          info_of(c0).cpu_hits);
    /* Two magazines of 8 and no depot: at most 16 cached. */
    CHECK(info_of(c8).cached_objs <= 16 && info_of(c8).cpu_hits > 0, "mag8: %zu cached",
          info_of(c8).cached_objs);
    CHECK(info_of(dflt).cached_objs > 16, "default: only %zu cached", info_of(dflt).cached_objs);
    /* Bulk calls honour the tuning too. */
    CHECK(kheap_cache_alloc_bulk(c0, 300, objs) == 300, "bulk without magazines");
    kheap_cache_free_bulk(c0, 300, objs);
    CHECK(info_of(c0).cached_objs == 0, "bulk cached %zu without magazines",
          info_of(c0).cached_objs);
    heap_end(h, mem, hs);
}

/* ---- shrinkers ---- */

/* A user's cache of objects it could drop: the shrinker frees them. */
struct hoard {
    kheap_t *h;
    void *objs[65536];
    size_t n;
    unsigned long calls, depth, max_depth;
    size_t last_want;
    int mode; /* 0 frees all, 1 frees nothing, 2 frees and allocates */
    kheap_cache_t *other, *failing;
    unsigned long nested_ok;
};
static struct hoard g_hoard;

static size_t hoard_shrink(kheap_t *h, size_t want, void *arg)
{
    struct hoard *o = arg;
    size_t freed = 0;
    o->calls++;
    o->last_want = want;
    if (++o->depth > o->max_depth)
        o->max_depth = o->depth;
    if (h == o->h && o->mode != 1) {
        freed = o->n * 1024;
        kheap_free_bulk(h, o->n, o->objs);
        o->n = 0;
    }
    if (o->mode == 2) {
        /* Allocating from another cache is allowed. */
        void *x = kheap_cache_alloc(o->other);
        if (x) {
            o->nested_ok++;
            kheap_cache_free(o->other, x);
        }
    }
    o->depth--;
    return freed;
}

/* Fill the heap with droppable objects (the shrinker holds back meanwhile,
 * or it would make room forever). */
static void hoard_fill(struct hoard *o, size_t max)
{
    int mode = o->mode;
    unsigned long calls = o->calls;
    o->mode = 1;
    while (o->n < max && o->n < 65536 && (o->objs[o->n] = kheap_alloc(o->h, 1024)))
        o->n++;
    o->mode = mode;
    o->calls = calls;
}

TEST(shrinker_frees_enough)
{
    void *mem;
    size_t hs = (size_t)4 << 20;
    kheap_t *h = heap_new(hs, &mem);
    struct hoard *o = &g_hoard;
    memset(o, 0, sizeof *o);
    o->h = h;
    hoard_fill(o, 65536); /* the heap is full of droppable objects */
    CHECK(kheap_alloc(h, 1024) == NULL, "heap not full");
    uint64_t fails0;
    struct kheap_stats st;
    kheap_get_stats(h, &st);
    fails0 = st.failed_count;
    CHECK(kheap_shrinker_register(h, hoard_shrink, o) == KHEAP_OK, "register");
    /* A large block: the shrinker frees everything, the retry succeeds. */
    void *big = kheap_alloc(h, (size_t)1 << 20);
    CHECK(big, "allocation failed although the shrinker freed %zu objects", o->n);
    CHECK(o->calls == 1 && o->n == 0 && o->last_want == SIZE_MAX, "calls %lu", o->calls);
    kheap_get_stats(h, &st);
    CHECK(st.failed_count == fails0 && st.shrink_passes == 1, "failures %" PRIu64
          " passes %" PRIu64, st.failed_count, st.shrink_passes);
    kheap_free(h, big);
    /* A small object of a full user cache: counted in its shrink_calls. */
    kheap_cache_t *c = kheap_cache_create(h, "victim", 2000, 0, NULL, NULL);
    CHECK(c, "cache_create");
    hoard_fill(o, 65536);
    static void *vs[4096];
    size_t nv = 0;
    while (nv < 4096 && (vs[nv] = kheap_cache_alloc(c)))
        nv++;
    /* Pass 2 made room; pass 3 (the last failure) found nothing left. */
    CHECK(nv > 0 && nv < 4096 && o->calls == 3 && o->n == 0,
          "%zu objects, %lu calls: the shrinker made room once", nv, o->calls);
    CHECK(info_of(c).shrink_calls >= 1, "shrink_calls %" PRIu64, info_of(c).shrink_calls);
    kheap_cache_free_bulk(c, nv, vs);
    /* kheap_reclaim calls it too. */
    hoard_fill(o, 10);
    kheap_reclaim(h);
    CHECK(o->calls == 4 && o->n == 0, "reclaim did not call the shrinker (%lu)", o->calls);
    CHECK(kheap_shrinker_unregister(h, hoard_shrink, o) == KHEAP_OK, "unregister");
    CHECK(kheap_shrinker_unregister(h, hoard_shrink, o) == KHEAP_EINVAL, "unregister twice");
    kheap_reclaim(h);
    CHECK(o->calls == 4, "called after unregister");
    heap_end(h, mem, hs);
}

TEST(shrinker_frees_nothing)
{
    void *mem;
    size_t hs = (size_t)4 << 20;
    kheap_t *h = heap_new(hs, &mem);
    struct hoard *o = &g_hoard;
    memset(o, 0, sizeof *o);
    o->h = h;
    o->mode = 1;
    hoard_fill(o, 65536);
    CHECK(kheap_shrinker_register(h, hoard_shrink, o) == KHEAP_OK, "register");
    struct kheap_stats s0, s1;
    kheap_get_stats(h, &s0);
    CHECK(kheap_alloc(h, (size_t)1 << 20) == NULL, "allocation met from nothing");
    CHECK(kheap_alloc(h, 1024) == NULL, "small allocation met from nothing");
    kheap_get_stats(h, &s1);
    CHECK(o->calls == 2, "one pass per failing allocation: %lu", o->calls);
    CHECK(s1.failed_count == s0.failed_count + 2 && s1.used_bytes == s0.used_bytes,
          "failures %" PRIu64 " -> %" PRIu64, s0.failed_count, s1.failed_count);
    /* Registration limits. */
    for (int i = 1; i < KHEAP_MAX_SHRINKERS; i++)
        CHECK(kheap_shrinker_register(h, hoard_shrink, (char *)o + i) == KHEAP_OK, "reg %d", i);
    CHECK(kheap_shrinker_register(h, hoard_shrink, o) == KHEAP_ETOOMANY, "9th register");
    CHECK(kheap_shrinker_register(h, NULL, o) == KHEAP_EINVAL, "NULL fn");
    for (int i = 1; i < KHEAP_MAX_SHRINKERS; i++)
        kheap_shrinker_unregister(h, hoard_shrink, (char *)o + i);
    kheap_shrinker_unregister(h, hoard_shrink, o);
    kheap_free_bulk(h, o->n, o->objs);
    o->n = 0;
    heap_end(h, mem, hs);
}

/* A second shrinker that frees into the heap and allocates from the
 * failing cache: no nested pass, no recursion. */
static size_t greedy_shrink(kheap_t *h, size_t want, void *arg)
{
    struct hoard *o = arg;
    (void)want;
    o->calls++;
    if (++o->depth > o->max_depth)
        o->max_depth = o->depth;
    void *x = kheap_cache_alloc(o->failing); /* the rule says: don't */
    if (x)
        kheap_cache_free(o->failing, x);
    void *y = kheap_alloc(h, 64);
    if (y) {
        o->nested_ok++;
        kheap_free(h, y);
    }
    o->depth--;
    return 0;
}

TEST(shrinker_frees_into_heap)
{
    void *mem;
    size_t hs = (size_t)4 << 20;
    kheap_t *h = heap_new(hs, &mem);
    struct hoard *o = &g_hoard;
    memset(o, 0, sizeof *o);
    o->h = h;
    o->mode = 2;
    o->other = kheap_cache_create(h, "other", 32, 0, NULL, NULL);
    o->failing = kheap_cache_create(h, "failing", 3000, 0, NULL, NULL);
    CHECK(o->other && o->failing, "cache_create");
    static struct hoard g2;
    memset(&g2, 0, sizeof g2);
    g2.h = h;
    g2.failing = o->failing;
    CHECK(kheap_shrinker_register(h, greedy_shrink, &g2) == KHEAP_OK, "register greedy");
    CHECK(kheap_shrinker_register(h, hoard_shrink, o) == KHEAP_OK, "register hoard");
    hoard_fill(o, 65536);
    void *x = kheap_cache_alloc(o->failing);
    CHECK(x, "the hoard's frees did not make room");
    /* greedy ran once at the end of the fill and once for x; its own
     * allocation from the failing cache started no nested pass. */
    CHECK(g2.calls == 2 && o->calls == 1 && g2.max_depth == 1 && o->max_depth == 1,
          "calls %lu/%lu depth %lu/%lu", g2.calls, o->calls, g2.max_depth, o->max_depth);
    kheap_cache_free(o->failing, x);
    kheap_shrinker_unregister(h, greedy_shrink, &g2);
    kheap_shrinker_unregister(h, hoard_shrink, o);
    heap_end(h, mem, hs);
}

TEST(low_water)
{
    void *mem;
    size_t hs = (size_t)8 << 20;
    kheap_t *h = heap_new(hs, &mem);
    struct hoard *o = &g_hoard;
    memset(o, 0, sizeof *o);
    o->h = h;
    o->mode = 1; /* only count */
    CHECK(kheap_shrinker_register(h, hoard_shrink, o) == KHEAP_OK, "register");
    CHECK(kheap_set_low_water(h, (size_t)2 << 20) == KHEAP_OK, "set_low_water");
    static void *blk[64];
    size_t n = 0;
    struct kheap_stats st;
    do {
        blk[n] = kheap_alloc(h, (size_t)256 << 10);
        CHECK(blk[n], "block %zu", n);
        n++;
        kheap_get_stats(h, &st);
    } while (st.heap_free >= ((size_t)2 << 20) && n < 64);
    CHECK(o->calls == 1 && o->last_want == SIZE_MAX, "%lu calls after crossing the mark",
          o->calls);
    blk[n] = kheap_alloc(h, (size_t)256 << 10);
    CHECK(blk[n++] && o->calls == 1, "called again below the mark (%lu)", o->calls);
    /* Back above, then below again: one more pass. */
    while (n)
        kheap_free(h, blk[--n]);
    for (n = 0; n < 64; n++) {
        blk[n] = kheap_alloc(h, (size_t)256 << 10);
        kheap_get_stats(h, &st);
        if (st.heap_free < ((size_t)2 << 20))
            break;
    }
    CHECK(o->calls == 2, "second crossing: %lu calls", o->calls);
    for (size_t i = 0; i <= n && i < 64; i++)
        kheap_free(h, blk[i]);
    kheap_set_low_water(h, 0);
    kheap_shrinker_unregister(h, hoard_shrink, o);
    heap_end(h, mem, hs);
}

/* ---- KHEAP_NOLOCK ---- */

TEST(nolock_basic)
{
    void *mem;
    size_t hs = (size_t)8 << 20;
    kheap_t *h = heap_new(hs, &mem);
    /* A new heap: no magazine, no slab of the class: nothing to give
     * without a lock. */
    CHECK(kheap_alloc_flags(h, 100, KHEAP_NOLOCK) == NULL, "NOLOCK from nothing");
    CHECK(kheap_alloc_flags(h, 100000, KHEAP_NOLOCK) == NULL, "NOLOCK large block");
    CHECK(kheap_alloc_flags(h, 100, 0x80) == NULL, "unknown flag accepted");
    /* Once the class has a slab and this CPU magazines, it works. */
    static void *objs[300];
    for (int i = 0; i < 300; i++)
        objs[i] = kheap_alloc(h, 100);
    for (int i = 0; i < 300; i++)
        kheap_free(h, objs[i]);
    size_t got = 0;
    for (int i = 0; i < 300; i++)
        if ((objs[i] = kheap_alloc_flags(h, 100, KHEAP_NOLOCK)))
            got++;
    CHECK(got >= 64, "only %zu of 300 NOLOCK allocations with objects cached", got);
    check_distinct(objs, got, 100);
    for (int i = 0; i < 300; i++)
        kheap_free_flags(h, objs[i], KHEAP_NOLOCK);
    struct kheap_cache_info ci;
    struct kheap_cache_info rows[KHEAP_NUM_CLASSES + 8];
    size_t nrows = kheap_slabinfo(h, rows, KHEAP_NUM_CLASSES + 8);
    uint64_t na = 0, nf = 0, nd = 0;
    for (size_t i = 0; i < nrows && i < KHEAP_NUM_CLASSES + 8; i++) {
        na += rows[i].nolock_allocs;
        nf += rows[i].nolock_frees;
        nd += rows[i].nolock_deferred;
    }
    struct kheap_stats st0;
    kheap_get_stats(h, &st0);
    nd = st0.nolock_deferred;
    CHECK(na == got && nf + nd == got, "nolock allocs %" PRIu64 " frees %" PRIu64
          " deferred %" PRIu64 " for %zu", na, nf, nd, got);
    /* (The large and the bad-flag calls have no class to count in.) */
    CHECK(st0.nolock_fails == 300 - got + 1, "nolock_fails %" PRIu64, st0.nolock_fails);
    /* A user cache with a constructor: only constructed objects. */
    kheap_cache_t *c = kheap_cache_create(h, "ctor", 40, 0, count_ctor, NULL);
    /* (NOLOCK uses the previous magazine, which 100 allocations and 100
     * frees leave full.) */
    for (int i = 0; i < 100; i++)
        objs[i] = kheap_cache_alloc(c);
    for (int i = 0; i < 100; i++)
        kheap_cache_free(c, objs[i]);
    void *y = kheap_cache_alloc_flags(c, KHEAP_NOLOCK);
    CHECK(y && *(uint64_t *)y == 0xc0ffee, "NOLOCK cache object %p not constructed", y);
    kheap_cache_free_flags(c, y, KHEAP_NOLOCK);
    ci = info_of(c);
    CHECK(ci.nolock_allocs == 1 && ci.nolock_frees + ci.nolock_deferred == 1,
          "cache counters %" PRIu64 "/%" PRIu64, ci.nolock_allocs, ci.nolock_frees);
    kheap_reclaim(h);
    struct kheap_stats st;
    kheap_get_stats(h, &st);
    CHECK(st.used_bytes == 0, "%zu bytes used after the deferred frees were taken",
          st.used_bytes);
    /* A cache whose last object's free is still deferred is empty: its
     * destroy takes the deferred frees first, whichever CPU's list holds
     * them (a large object of a new cache has no magazine to go to). */
    kheap_cache_t *big = kheap_cache_create(h, "deferred", 6000, 0, NULL, NULL);
    void *o = big ? kheap_cache_alloc(big) : NULL;
    CHECK(o, "cache of 6000-byte objects");
    uint64_t deferred = st.nolock_deferred;
    kheap_cache_free_flags(big, o, KHEAP_NOLOCK);
    kheap_get_stats(h, &st);
    printf("# the free %s deferred\n", st.nolock_deferred > deferred ? "was" : "was not");
    kt_reports_reset();
    int err = kheap_cache_destroy(big);
    CHECK(err == KHEAP_OK && kt_reports() == 0,
          "destroy of a cache with a deferred free: %d (%s), %lu reports", err,
          kheap_strerror(err), kt_reports());
    heap_end(h, mem, hs);
}

TEST(nolock_locks_held)
{
    void *mem;
    size_t hs = (size_t)8 << 20;
    kheap_t *h = heap_new(hs, &mem);
    kheap_cache_t *c = kheap_cache_create(h, "held", 128, 0, NULL, NULL);
    static void *objs[200];
    for (int i = 0; i < 200; i++)
        objs[i] = kheap_alloc(h, 48);
    for (int i = 0; i < 200; i++)
        kheap_free(h, objs[i]);
    for (int i = 0; i < 200; i++)
        objs[i] = kheap_cache_alloc(c);
    for (int i = 0; i < 200; i++)
        kheap_cache_free(c, objs[i]);
    /* Every lock of every heap held by this thread: a NOLOCK call must
     * neither wait nor take one. */
    kheap_lock_all();
    size_t got = 0, cgot = 0;
    for (int i = 0; i < 100; i++) {
        objs[i] = kheap_alloc_flags(h, 48, KHEAP_NOLOCK);
        got += objs[i] != NULL;
        objs[100 + i] = kheap_cache_alloc_flags(c, KHEAP_NOLOCK);
        cgot += objs[100 + i] != NULL;
    }
    for (int i = 0; i < 100; i++) {
        kheap_free_flags(h, objs[i], KHEAP_NOLOCK);
        kheap_cache_free_flags(c, objs[100 + i], KHEAP_NOLOCK);
    }
    kheap_unlock_all();
    CHECK(got > 0 && got < 100 && cgot > 0 && cgot < 100,
          "%zu and %zu of 100 with every lock held: from the magazines only", got, cgot);
    kheap_reclaim(h);
    CHECK(info_of(c).active_objs == 0, "%zu left", info_of(c).active_objs);
    heap_end(h, mem, hs);
}

TEST(nolock_misuse)
{
    void *mem;
    size_t hs = (size_t)8 << 20;
    kheap_t *h = heap_new(hs, &mem);
    static char foreign[64];
    void *p = kheap_alloc(h, 200);
    kt_reports_reset();
    kheap_free_flags(h, foreign, KHEAP_NOLOCK);
    CHECK(g_reports == 0, "a report from a NOLOCK call");
    kheap_reclaim(h);
    CHECK(g_reports == 1 && g_last.kind == KHEAP_REPORT_FOREIGN && g_last.addr == foreign,
          "%lu reports, kind %d", g_reports, (int)g_last.kind);
    kt_reports_reset();
    kheap_free_flags(h, (char *)p + 8, KHEAP_NOLOCK);
    kheap_reclaim(h);
    CHECK(g_reports == 1 && g_last.kind == KHEAP_REPORT_INTERIOR, "interior: %lu", g_reports);
    /* Double free: the second is found, now or when the list is taken. */
    kt_reports_reset();
    kheap_free_flags(h, p, KHEAP_NOLOCK);
    kheap_free_flags(h, p, KHEAP_NOLOCK);
    kheap_reclaim(h);
    CHECK(g_reports == 1 && g_last.kind == KHEAP_REPORT_DOUBLE_FREE, "double: %lu reports",
          g_reports);
    /* Wrong cache. */
    kheap_cache_t *a = kheap_cache_create(h, "a", 64, 0, NULL, NULL);
    kheap_cache_t *b = kheap_cache_create(h, "b", 64, 0, NULL, NULL);
    void *q = kheap_cache_alloc(a);
    kt_reports_reset();
    kheap_cache_free_flags(b, q, KHEAP_NOLOCK);
    kheap_reclaim(h);
    CHECK(g_reports == 1 && g_last.kind == KHEAP_REPORT_WRONG_CACHE, "wrong cache: %lu",
          g_reports);
    kheap_cache_free(a, q);
    /* A large block is deferred (it needs the page lock). */
    void *big = kheap_alloc(h, 100000);
    kheap_free_flags(h, big, KHEAP_NOLOCK);
    struct kheap_stats st;
    kheap_get_stats(h, &st);
    CHECK(st.large_count == 1, "large block freed at once without its lock?");
    kheap_reclaim(h);
    kheap_get_stats(h, &st);
    CHECK(st.large_count == 0 && st.used_bytes == 0, "large %zu used %zu", st.large_count,
          st.used_bytes);
    heap_end(h, mem, hs);
}

/* The stress: a worker thread allocates and frees without pause; another
 * thread interrupts it with signals; the handler, standing in for an NMI,
 * allocates and frees with KHEAP_NOLOCK on the worker's CPU slot while
 * the worker is anywhere, often inside kheap (hit paths, slow paths,
 * holding locks). Every block carries a pattern checked before it is
 * freed, so a block handed out twice shows. */
static kheap_t *s_heap;
static kheap_cache_t *s_cache;
static int s_stop;
static unsigned long s_sig_ok, s_sig_null, s_sig_bad, s_work_bad;
static unsigned long s_signals;
static void *s_keep[16];
static unsigned s_keep_i;

static void stamp(void *p, size_t n, unsigned v)
{
    unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        b[i] = (unsigned char)(v + i);
}
static bool stamped(const void *p, size_t n, unsigned v)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != (unsigned char)(v + i))
            return false;
    return true;
}

static void nmi_handler(int sig)
{
    (void)sig;
    __atomic_store_n(&s_signals, s_signals + 1, __ATOMIC_RELAXED);
    static const size_t sz[4] = {24, 100, 700, 3000};
    for (int k = 0; k < 4; k++) {
        size_t n = sz[(s_signals + (unsigned)k) & 3];
        void *p = kheap_alloc_flags(s_heap, n, KHEAP_NOLOCK);
        if (!p) {
            s_sig_null++;
            continue;
        }
        s_sig_ok++;
        stamp(p, n, 0xa0);
        /* Keep some for a while: their frees come in later signals. */
        unsigned i = s_keep_i++ & 15;
        void *old = s_keep[i];
        s_keep[i] = p;
        if (old) {
            /* (Only KHEAP_NOLOCK calls here: kheap_usable_size takes a
             * lock the worker may hold.) */
            if (!stamped(old, 24, 0xa0))
                s_sig_bad++;
            kheap_free_flags(s_heap, old, KHEAP_NOLOCK);
        }
    }
    void *o = kheap_cache_alloc_flags(s_cache, KHEAP_NOLOCK);
    if (o) {
        stamp(o, 56, 0x33);
        if (!stamped(o, 56, 0x33))
            s_sig_bad++;
        kheap_cache_free_flags(s_cache, o, KHEAP_NOLOCK);
    }
}

static pthread_t s_worker;
static void *worker_main(void *arg)
{
    (void)arg;
    enum { LIVE = 256 };
    void *live[LIVE] = {0};
    size_t lsz[LIVE] = {0};
    uint64_t x = 88172645463325252ull;
    while (!__atomic_load_n(&s_stop, __ATOMIC_RELAXED)) {
        for (int r = 0; r < 1000; r++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            unsigned i = (unsigned)(x % LIVE);
            if (live[i]) {
                if (!stamped(live[i], lsz[i] < 32 ? lsz[i] : 32, (unsigned)i))
                    s_work_bad++;
                if (lsz[i] == 56)
                    kheap_cache_free(s_cache, live[i]);
                else if ((x >> 20) & 1)
                    kheap_free(s_heap, live[i]);
                else
                    kheap_free_bulk(s_heap, 1, &live[i]);
                live[i] = NULL;
            } else {
                size_t n = (x >> 32) % 8 == 0 ? 56 : 8 + (x >> 40) % 4000;
                live[i] = n == 56 ? kheap_cache_alloc(s_cache) : kheap_alloc(s_heap, n);
                lsz[i] = n;
                if (live[i])
                    stamp(live[i], n < 32 ? n : 32, i);
            }
        }
        if ((x & 0xff) == 0)
            kheap_reclaim(s_heap);
    }
    for (unsigned i = 0; i < LIVE; i++)
        if (live[i])
            lsz[i] == 56 ? kheap_cache_free(s_cache, live[i]) : kheap_free(s_heap, live[i]);
    /* Signals are blocked from here: the handler's kept blocks go. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    for (unsigned i = 0; i < 16; i++)
        kheap_free(s_heap, s_keep[i]);
    kheap_reclaim(s_heap);
    return NULL;
}

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

TEST(nolock_signal_stress)
{
    void *mem;
    size_t hs = (size_t)32 << 20;
    s_heap = heap_new(hs, &mem);
    s_cache = kheap_cache_create(s_heap, "nmi", 56, 0, NULL, NULL);
    CHECK(s_cache, "cache_create");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = nmi_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    s_stop = 0;
    CHECK(pthread_create(&s_worker, NULL, worker_main, NULL) == 0, "pthread_create");
    long rounds = kt_env_long("KHEAP_TEST_OPS", 1000000) / 20;
    if (rounds < 2000)
        rounds = 2000;
    if (rounds > 10000)
        rounds = 10000;
    /* One signal at a time (a pending signal is not queued twice): wait
     * until the handler has run before sending the next. Valgrind delivers
     * a signal to a thread that makes no system calls only when it next
     * schedules it, which can take a long time on a loaded machine: the
     * signals stop after 20 s, however many were sent (the checks below
     * need one). */
    double start = seconds();
    long sent = 0;
    bool late = false;
    for (; sent < rounds && !late; sent++) {
        unsigned long before = __atomic_load_n(&s_signals, __ATOMIC_RELAXED);
        pthread_kill(s_worker, SIGUSR1);
        for (long spin = 0; __atomic_load_n(&s_signals, __ATOMIC_RELAXED) == before; spin++) {
            if (spin < 100)
                continue;
            sched_yield();
            if (seconds() - start > 20) {
                late = true;
                break;
            }
        }
    }
    __atomic_store_n(&s_stop, 1, __ATOMIC_RELAXED);
    pthread_join(s_worker, NULL);
    signal(SIGUSR1, SIG_DFL);
    printf("# nolock stress: %ld of %ld signals sent, %lu handled, %lu NOLOCK allocations, "
           "%lu NULL\n", sent, rounds, s_signals, s_sig_ok, s_sig_null);
    CHECK(s_signals > 0 && s_sig_ok > 0, "%lu signals, %lu allocations in them", s_signals,
          s_sig_ok);
    CHECK(!s_sig_bad && !s_work_bad, "blocks overwritten: %lu in handlers, %lu in the worker",
          s_sig_bad, s_work_bad);
    kheap_reclaim(s_heap);
    struct kheap_stats st;
    kheap_get_stats(s_heap, &st);
    CHECK(st.used_bytes == 0, "%zu bytes still used", st.used_bytes);
    heap_end(s_heap, mem, hs);
}

int main(void)
{
    kt_capture_reports(NULL);
    RUN(bulk_cache);
    RUN(bulk_kmalloc);
    RUN(bulk_exhaustion);
    RUN(bulk_misuse);
    RUN(reserve);
    RUN(mempool);
    RUN(tuning);
    RUN(shrinker_frees_enough);
    RUN(shrinker_frees_nothing);
    RUN(shrinker_frees_into_heap);
    RUN(low_water);
    RUN(nolock_basic);
    RUN(nolock_locks_held);
    RUN(nolock_misuse);
    RUN(nolock_signal_stress);
    return harness_done();
}
