/*
 * test_misuse.c - bad frees and bad calls are reported and ignored.
 *
 * With a report hook that records each report: foreign, interior and
 * free-run pointers, double frees, objects freed to the wrong cache,
 * destroying a busy cache, usable_size of a bad pointer and sized frees
 * of a size the block cannot have each give exactly one report of the
 * right kind and address, leave the statistics
 * and the heap as they were, and the heap keeps working. Impossible
 * allocations return NULL without a report. Without a hook, a bad free
 * prints the address on stderr and aborts (checked in a forked child).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ctype.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "kheap.h"
#include "kheap_hosted.h"

#define PAGE KHEAP_PAGE_SIZE
#define HEAP_SIZE ((size_t)16 << 20)

static struct kt_heap g_region;
static kheap_t *g_heap;
static unsigned char *g_mem;

static struct kheap_stats g_in_hook; /* stats read from inside the hook */

static void read_stats_in_hook(const struct kheap_report *r, unsigned long nth)
{
    (void)r;
    (void)nth;
    /* The hook runs with no kheap lock held: this must not deadlock. */
    kheap_get_stats(g_heap, &g_in_hook);
}

static void check_heap(const char *when)
{
    const void *addr = NULL;
    const char *msg = kheap_check_quiescent(g_heap, &addr);
    CHECK(msg == NULL, "%s: kheap_check: %s at %p", when, msg, addr);
}

static struct kheap_stats stats(void)
{
    struct kheap_stats s;
    kheap_get_stats(g_heap, &s);
    return s;
}

/* Before a misuse: remember the statistics and clear the report log. */
static struct kheap_stats g_before;

static void arm(void)
{
    kt_reports_reset();
    g_before = stats();
}

/* After a misuse: one report of kind at addr, statistics as they were, a
 * consistent heap that still allocates. */
static void expect_report(int kind, const void *addr, const char *what)
{
    struct kheap_report last = kt_last_report();
    CHECK(kt_reports() == 1, "%s: %lu reports, want exactly one %s", what,
          kt_reports(), kt_report_kind_name(kind));
    CHECK((int)last.kind == kind, "%s: report %s (%s), want %s", what,
          kt_report_kind_name((int)last.kind), last.reason ? last.reason : "",
          kt_report_kind_name(kind));
    CHECK(last.addr == addr, "%s: report address %p, want %p", what,
          last.addr, addr);
    CHECK(last.reason && last.reason[0],
          "%s: report has no reason sentence (%p)", what,
          (const void *)last.reason);
    CHECK(last.function && last.function[0],
          "%s: report names no function (%p)", what,
          (const void *)last.function);
    struct kheap_stats s = stats();
    CHECK(s.used_bytes == g_before.used_bytes &&
              s.free_count == g_before.free_count &&
              s.allocation_count == g_before.allocation_count,
          "%s changed the stats: used %zu -> %zu, frees %" PRIu64
          " -> %" PRIu64 ", allocs %" PRIu64 " -> %" PRIu64,
          what, g_before.used_bytes, s.used_bytes, g_before.free_count,
          s.free_count, g_before.allocation_count, s.allocation_count);
    CHECK(g_in_hook.used_bytes == g_before.used_bytes,
          "%s: the hook saw used_bytes %zu, before it was %zu", what,
          g_in_hook.used_bytes, g_before.used_bytes);
    check_heap(what);
    void *q = kheap_alloc(g_heap, 100);
    CHECK(q != NULL, "%s: kheap_alloc(100) fails afterwards", what);
    kheap_free(g_heap, q);
    CHECK(kt_reports() == 1, "%s: %lu reports after using the heap again", what,
          kt_reports());
}

static void expect_no_report(const char *what)
{
    struct kheap_report last = kt_last_report();
    CHECK(kt_reports() == 0, "%s: unexpected report %s at %p (%s)", what,
          kt_report_kind_name((int)last.kind), last.addr,
          last.reason ? last.reason : "");
}

/* Fresh heap per test, so one test's leftovers cannot hide another's. */
static void setup(void)
{
    kt_heap_open(&g_region, HEAP_SIZE);
    g_heap = g_region.h;
    g_mem = g_region.mem;
    kt_capture_reports(read_stats_in_hook);
    kt_reports_reset();
}

/* Everything freed: the heap is whole and no report is pending. */
static void teardown(void)
{
    kheap_reclaim(g_heap);
    check_heap("teardown");
    struct kheap_stats s = stats();
    CHECK(s.used_bytes == 0 && s.heap_free == s.heap_total - s.metadata_bytes,
          "teardown: used %zu, heap_free %zu != total %zu - metadata %zu",
          s.used_bytes, s.heap_free, s.heap_total, s.metadata_bytes);
    kt_heap_close(&g_region);
}

TEST(free_foreign)
{
    setup();
    int local;
    arm();
    kheap_free(g_heap, &local);
    expect_report(KHEAP_REPORT_FOREIGN, &local, "kheap_free(stack address)");

    void *m = malloc(64);
    CHECK(m != NULL, "malloc failed%s", "");
    arm();
    kheap_free(g_heap, m);
    expect_report(KHEAP_REPORT_FOREIGN, m, "kheap_free(malloc'd address)");
    free(m);

    /* Just past the end of the region, and just before it. */
    arm();
    kheap_free(g_heap, g_mem + HEAP_SIZE);
    expect_report(KHEAP_REPORT_FOREIGN, g_mem + HEAP_SIZE,
                  "kheap_free(region end)");

    arm();
    kheap_free(g_heap, NULL);
    expect_no_report("kheap_free(NULL)");
    teardown();
}

TEST(free_interior)
{
    setup();
    unsigned char *p = kheap_alloc(g_heap, 64);
    CHECK(p != NULL, "kheap_alloc(64) failed%s", "");
    arm();
    kheap_free(g_heap, p + 8);
    expect_report(KHEAP_REPORT_INTERIOR, p + 8, "kheap_free(small + 8)");
    arm();
    kheap_free(g_heap, p + 63);
    expect_report(KHEAP_REPORT_INTERIOR, p + 63, "kheap_free(small + 63)");

    unsigned char *l = kheap_alloc(g_heap, 64 * 1024);
    CHECK(l != NULL, "kheap_alloc(64 KiB) failed%s", "");
    arm();
    kheap_free(g_heap, l + PAGE);
    expect_report(KHEAP_REPORT_INTERIOR, l + PAGE, "kheap_free(large + 4096)");
    arm();
    kheap_free(g_heap, l + 1);
    expect_report(KHEAP_REPORT_INTERIOR, l + 1, "kheap_free(large + 1)");
    arm();
    kheap_free(g_heap, l + 64 * 1024 - 1);
    expect_report(KHEAP_REPORT_INTERIOR, l + 64 * 1024 - 1,
                  "kheap_free(large last byte)");

    /* A bad realloc is reported the same way and returns NULL. */
    arm();
    void *r = kheap_realloc(g_heap, p + 8, 200);
    CHECK(r == NULL, "kheap_realloc(interior) = %p, want NULL", r);
    expect_report(KHEAP_REPORT_INTERIOR, p + 8, "kheap_realloc(small + 8)");

    /* The blocks themselves are intact and free normally. */
    arm();
    kheap_free(g_heap, p);
    kheap_free(g_heap, l);
    expect_no_report("freeing the real blocks");
    CHECK(stats().free_count == g_before.free_count + 2,
          "two good frees counted %" PRIu64,
          stats().free_count - g_before.free_count);
    teardown();
}

TEST(free_run)
{
    setup();
    /* A live 100-byte object keeps its slab, so the checks' own
     * kheap_alloc(100) cannot take pages from the freed run. */
    void *warm = kheap_alloc(g_heap, 100);
    CHECK(warm != NULL, "kheap_alloc(100) failed%s", "");
    /* A neighbour keeps the freed run from merging with everything. */
    unsigned char *keep = kheap_alloc(g_heap, 64 * 1024);
    unsigned char *l = kheap_alloc(g_heap, 256 * 1024);
    unsigned char *keep2 = kheap_alloc(g_heap, 64 * 1024);
    CHECK(keep && l && keep2, "large allocations failed%s", "");
    kheap_free(g_heap, l);

    arm();
    kheap_free(g_heap, l + 64 * 1024);
    expect_report(KHEAP_REPORT_FREE_RUN, l + 64 * 1024,
                  "kheap_free(middle of a free run)");
    arm();
    kheap_free(g_heap, l);
    expect_report(KHEAP_REPORT_FREE_RUN, l, "double free of a large block");
    arm();
    CHECK(kheap_usable_size(g_heap, l) == 0,
          "usable_size of a freed large block is not 0%s", "");
    expect_report(KHEAP_REPORT_FREE_RUN, l, "kheap_usable_size(free run)");

    /* Free the neighbours too: the start may now lie inside a bigger run. */
    kheap_free(g_heap, keep);
    kheap_free(g_heap, keep2);
    arm();
    kheap_free(g_heap, l);
    expect_report(KHEAP_REPORT_FREE_RUN, l,
                  "double free of a large block after coalescing");
    arm();
    kheap_free(g_heap, keep2);
    expect_report(KHEAP_REPORT_FREE_RUN, keep2,
                  "double free of a coalesced neighbour");

    /* Pages in the middle of a big freed run are free-run pointers. */
    unsigned char *big = kheap_alloc(g_heap, HEAP_SIZE / 2);
    CHECK(big != NULL, "kheap_alloc(%zu) failed", HEAP_SIZE / 2);
    kheap_free(g_heap, big);
    arm();
    kheap_free(g_heap, big + HEAP_SIZE / 4 + PAGE);
    expect_report(KHEAP_REPORT_FREE_RUN, big + HEAP_SIZE / 4 + PAGE,
                  "kheap_free(page inside a freed 8 MiB run)");
    kheap_free(g_heap, warm);
    teardown();
}

/* n objects of 64 bytes, all in one or a few slabs. */
static void alloc_64s(unsigned char **o, int n)
{
    for (int i = 0; i < n; i++) {
        o[i] = kheap_alloc(g_heap, 64);
        CHECK(o[i] != NULL, "kheap_alloc(64) #%d failed", i);
    }
}

/* Free o[0 .. n - 1] except o[skip] (freed already), with no report. */
static void free_64s_but(unsigned char **o, int n, int skip)
{
    for (int i = 0; i < n; i++)
        if (i != skip)
            kheap_free(g_heap, o[i]);
    expect_no_report("freeing the rest");
}

/* Free p twice (with kheap_reclaim between the two if asked): the second
 * free is exactly one DOUBLE_FREE report. */
static void free_twice(unsigned char *p, bool reclaim_between, const char *what)
{
    kheap_free(g_heap, p);
    if (reclaim_between)
        kheap_reclaim(g_heap);
    arm();
    kheap_free(g_heap, p);
    expect_report(KHEAP_REPORT_DOUBLE_FREE, p, what);
}

TEST(double_free_small)
{
    setup();
    /* Two objects of one slab: the slab stays while p is freed twice. */
    unsigned char *o[64];
    alloc_64s(o, 64);
    unsigned char *p = o[10];
    free_twice(p, false, "double free of a 64-byte object");
    arm();
    CHECK(kheap_usable_size(g_heap, p) == 0,
          "usable_size of a free object is not 0%s", "");
    expect_report(KHEAP_REPORT_DOUBLE_FREE, p,
                  "kheap_usable_size(free object)");
    arm();
    CHECK(kheap_realloc(g_heap, p, 10) == NULL,
          "kheap_realloc(free object) is not NULL%s", "");
    expect_report(KHEAP_REPORT_DOUBLE_FREE, p, "kheap_realloc(free object)");

    /* The free object is handed out once, not twice. */
    arm();
    unsigned char *a = kheap_alloc(g_heap, 64), *b = kheap_alloc(g_heap, 64);
    CHECK(a && b && a != b, "two allocations gave %p and %p", (void *)a,
          (void *)b);
    kheap_free(g_heap, a);
    kheap_free(g_heap, b);
    free_64s_but(o, 64, 10);
    teardown();
}

/* The second free comes after the first copy left the magazines for its
 * slab (kheap_reclaim sends it there): the slab's bitmap has it free. */
TEST(double_free_after_reclaim)
{
    setup();
    unsigned char *o[16];
    alloc_64s(o, 16);
    unsigned char *p = o[5];
    /* The slab stays over the reclaim: 15 objects are live. */
    free_twice(p, true, "double free of an object back in its slab");
    const void *addr = NULL;
    const char *msg = kheap_check_quiescent(g_heap, &addr);
    CHECK(msg == NULL, "after the reported double free: %s at %p", msg, addr);
    arm();
    free_64s_but(o, 16, 5);
    teardown();
}

static int g_ctor_calls, g_dtor_calls;
static void ctor(void *o) { memset(o, 0x11, 8); g_ctor_calls++; }
static void dtor(void *o) { (void)o; g_dtor_calls++; }

/* After a refused free: the cache is whole again, live its one live
 * object; then it goes. */
static void cache_done(kheap_cache_t *c, void *live, const char *what)
{
    struct kheap_cache_info ci;
    kheap_cache_info(c, &ci);
    CHECK(ci.active_objs == 1, "%s: the cache counts %zu active objects, want 1", what,
          ci.active_objs);
    check_heap(what);
    kt_reports_reset();
    kheap_cache_free(c, live);
    CHECK(kheap_cache_destroy(c) == KHEAP_OK, "%s: kheap_cache_destroy failed", what);
}

/* A cache with a constructor has no key word, so a double free of an
 * object its slab holds free is found when its magazine is flushed. The
 * refused free must not stay counted: afterwards the heap is whole and
 * the cache counts its one live object. */
TEST(double_free_ctor_cache)
{
#if KHEAP_VALGRIND
    /* The valgrind build tells memcheck of every free, so memcheck itself
     * reports the second one (and fails the run): nothing to test here. */
    return;
#endif
    setup();
    /* The report comes from kheap_reclaim's walk over the user caches,
     * which holds the cache list's lock while it flushes their magazines;
     * it is made after the walk has let the lock go, so setup's hook,
     * which reads the statistics (taking that lock), does not wait for
     * it. (A hang here ends in the alarm main sets.) */
    g_in_hook = (struct kheap_stats){0};
    kheap_cache_t *c = kheap_cache_create(g_heap, "misuse-ctor", 48, 0, ctor, dtor);
    CHECK(c != NULL, "kheap_cache_create failed%s", "");
    void *a = kheap_cache_alloc(c), *b = kheap_cache_alloc(c);
    CHECK(a && b, "kheap_cache_alloc failed%s", "");
    kheap_cache_free(c, a);
    kheap_reclaim(g_heap);
    kheap_cache_free(c, a);
    kheap_reclaim(g_heap);
    struct kheap_report last = kt_last_report();
    CHECK(kt_reports() == 1 && last.kind == KHEAP_REPORT_DOUBLE_FREE && last.addr == a,
          "%lu reports, last %s at %p (want one DOUBLE_FREE at %p)", kt_reports(),
          kt_report_kind_name((int)last.kind), last.addr, a);
    CHECK(last.cache && !strcmp(last.cache, "misuse-ctor"), "the report names cache '%s'",
          last.cache ? last.cache : "(none)");
    CHECK(g_in_hook.heap_total > 0 && g_in_hook.allocation_count > 0,
          "the hook read no statistics during kheap_reclaim (heap_total %zu)",
          g_in_hook.heap_total);
    cache_done(c, b, "after the refused free");
    CHECK(g_ctor_calls == g_dtor_calls, "destroy ran %d destructors for %d constructors",
          g_dtor_calls, g_ctor_calls);
    g_ctor_calls = g_dtor_calls = 0;
    teardown();
}

/* The reports a walk over the caches keeps for after it has released
 * the cache list's lock (reclaim, decay, thread exit): each one seen, and
 * the statistics read from inside the hook every time. */
#define SEEN_MAX 64
static struct kheap_report g_seen[SEEN_MAX];
static char g_seen_cache[SEEN_MAX][KHEAP_NAME_MAX]; /* r->cache lives only during the hook */

static void note_and_read_stats(const struct kheap_report *r, unsigned long nth)
{
    if (nth <= SEEN_MAX) {
        g_seen[nth - 1] = *r;
        if (r->cache) {
            strncpy(g_seen_cache[nth - 1], r->cache, KHEAP_NAME_MAX - 1);
            g_seen[nth - 1].cache = g_seen_cache[nth - 1];
        }
    }
    kheap_get_stats(g_heap, &g_in_hook);
}

/* n double frees, of the objects o[0 .. n), found by one walk: reported
 * one by one in the order found, or, past what the walk keeps, the rest
 * as one report of the first of them whose size is how many they were. */
static void expect_walk_reports(void *const *o, size_t n, const char *what)
{
    unsigned long got = kt_reports();
    CHECK(got >= 2 && got <= n, "%s: %lu reports for %zu double frees", what, got, n);
    if (got < 2 || got > n)
        return;
    for (unsigned long i = 0; i < got; i++) {
        const struct kheap_report *r = &g_seen[i];
        bool summary = i == got - 1 && got < n;
        CHECK(r->kind == KHEAP_REPORT_DOUBLE_FREE && r->addr == o[i],
              "%s: report %lu is %s at %p, want DOUBLE_FREE at %p", what, i + 1,
              kt_report_kind_name((int)r->kind), r->addr, o[i]);
        CHECK(r->cache && !strcmp(r->cache, "misuse-walk"), "%s: report %lu names cache '%s'",
              what, i + 1, r->cache ? r->cache : "(none)");
        CHECK(r->size == (summary ? n - i : 0), "%s: report %lu has size %zu, want %zu", what,
              i + 1, r->size, summary ? n - (size_t)i : (size_t)0);
    }
    CHECK(g_in_hook.heap_total > 0, "%s: the hook read no statistics", what);
}

/* The cache's objects o[0 .. n) are freed twice each into this CPU's
 * magazine (a cache with a constructor has no double-free key), and
 * o[n] stays live. */
static kheap_cache_t *double_free_into_magazine(void **o, size_t n)
{
    kheap_cache_t *c = kheap_cache_create(g_heap, "misuse-walk", 48, 0, ctor, NULL);
    CHECK(c != NULL, "kheap_cache_create failed%s", "");
    for (size_t i = 0; i <= n; i++)
        o[i] = kheap_cache_alloc(c);
    for (size_t i = 0; i < n; i++) {
        kheap_cache_free(c, o[i]);
        kheap_cache_free(c, o[i]);
    }
    return c;
}

/* A walk test's heap: setup's, with the hook that keeps every report. */
static void walk_setup(void)
{
    setup();
    kt_capture_reports(note_and_read_stats);
}

/* After the walk: its reports were the n double frees of o[0 .. n), and
 * the cache is whole again with o[n] its one live object; then the cache
 * and the heap go. */
static void walk_done(kheap_cache_t *c, void *const *o, size_t n, const char *walk)
{
    char what[64];
    expect_walk_reports(o, n, walk);
    snprintf(what, sizeof what, "after %s", walk);
    cache_done(c, o[n], what);
    g_ctor_calls = g_dtor_calls = 0;
    teardown();
}

TEST(reports_after_reclaim_walk)
{
#if KHEAP_VALGRIND
    return; /* memcheck reports the second frees itself */
#endif
    walk_setup();
    enum { N = 12 };
    void *o[N + 1];
    kheap_cache_t *c = double_free_into_magazine(o, N);
    g_in_hook = (struct kheap_stats){0};
    kheap_reclaim(g_heap);
    walk_done(c, o, N, "kheap_reclaim");
}

/* A thread frees objects twice into its magazine and exits: its
 * magazines go to the depot (kheap_cpu_flush). Decay, two or three epochs
 * later, flushes them to the slabs, under the cache list's lock. */
struct walk_thread {
    void **o;
    size_t n;
    kheap_cache_t *c;
};

static void *double_free_and_exit(void *arg)
{
    struct walk_thread *t = arg;
    t->c = double_free_into_magazine(t->o, t->n);
    return NULL;
}

TEST(reports_after_decay_walk)
{
#if KHEAP_VALGRIND
    return;
#endif
    walk_setup();
    enum { N = 3 };
    void *o[N + 1];
    struct walk_thread t = {o, N, NULL};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, double_free_and_exit, &t) == 0, "pthread_create%s", "");
    pthread_join(th, NULL);
    CHECK(kt_reports() == 0, "the thread's exit reported %lu", kt_reports());
    g_in_hook = (struct kheap_stats){0};
    /* Times far past the port clock's, a second apart: each ends an
     * epoch (the first may only start one). */
    kheap_set_decay(g_heap, 1000);
    uint64_t t0 = (uint64_t)1 << 50;
    for (int i = 0; i < 4 && kt_reports() == 0; i++)
        kheap_tick(g_heap, t0 + 1000 * (uint64_t)i);
    walk_done(t.c, o, N, "kheap_tick");
}

TEST(wrong_cache)
{
    setup();
    kheap_cache_t *c1 = kheap_cache_create(g_heap, "misuse-one", 48, 0, ctor,
                                           dtor);
    kheap_cache_t *c2 = kheap_cache_create(g_heap, "misuse-two", 48, 0, NULL,
                                           NULL);
    CHECK(c1 && c2, "kheap_cache_create failed: %p %p", (void *)c1,
          (void *)c2);
    unsigned char *o = kheap_cache_alloc(c1);
    unsigned char *o2 = kheap_cache_alloc(c2);
    unsigned char *k = kheap_alloc(g_heap, 48);
    CHECK(o && o2 && k, "allocations failed%s", "");

    arm();
    kheap_cache_free(c2, o);
    expect_report(KHEAP_REPORT_WRONG_CACHE, o, "object of one cache freed to "
                  "another of the same size");
    arm();
    kheap_cache_free(c1, k);
    expect_report(KHEAP_REPORT_WRONG_CACHE, k, "kmalloc block freed to a "
                  "user cache");
    arm();
    kheap_cache_free(c1, o + 8);
    expect_report(KHEAP_REPORT_INTERIOR, o + 8, "kheap_cache_free(interior)");
    int local;
    arm();
    kheap_cache_free(c1, &local);
    expect_report(KHEAP_REPORT_FOREIGN, &local, "kheap_cache_free(stack)");

    /* A busy cache is not destroyed. */
    arm();
    int err = kheap_cache_destroy(c1);
    CHECK(err == KHEAP_EBUSY, "kheap_cache_destroy(busy) = %d, want EBUSY",
          err);
    struct kheap_report last = kt_last_report();
    expect_report(KHEAP_REPORT_BUSY, last.addr, "destroying a busy cache");
    CHECK(last.cache && strstr(last.cache, "misuse-one"),
          "busy report names cache '%s'", last.cache ? last.cache : "");
    CHECK(g_dtor_calls == 0, "refused destroy ran %d destructors",
          g_dtor_calls);
    struct kheap_cache_info ci;
    kheap_cache_info(c1, &ci);
    CHECK(ci.active_objs == 1, "busy cache has %zu active objects",
          ci.active_objs);
    unsigned char *o3 = kheap_cache_alloc(c1);
    CHECK(o3 != NULL, "the busy cache no longer allocates%s", "");

    /* Objects go back properly; then the caches go. */
    arm();
    kheap_cache_free(c1, o);
    kheap_free(g_heap, o3); /* kheap_free finds the object's cache */
    kheap_cache_free(c2, o2);
    kheap_free(g_heap, k);
    expect_no_report("good frees");
    kheap_cache_info(c1, &ci);
    CHECK(ci.active_objs == 0, "c1 has %zu active after freeing all",
          ci.active_objs);
    err = kheap_cache_destroy(c1);
    CHECK(err == KHEAP_OK, "kheap_cache_destroy(c1) = %d", err);
    CHECK(g_dtor_calls == g_ctor_calls, "destroy ran %d dtors for %d ctors",
          g_dtor_calls, g_ctor_calls);
    err = kheap_cache_destroy(c2);
    CHECK(err == KHEAP_OK, "kheap_cache_destroy(c2) = %d", err);
    expect_no_report("destroying empty caches");
    teardown();
}

TEST(usable_size_bad)
{
    setup();
    int local;
    arm();
    size_t u = kheap_usable_size(g_heap, &local);
    CHECK(u == 0, "kheap_usable_size(stack) = %zu", u);
    expect_report(KHEAP_REPORT_FOREIGN, &local, "kheap_usable_size(stack)");
    unsigned char *p = kheap_alloc(g_heap, 100);
    CHECK(p != NULL, "kheap_alloc failed%s", "");
    arm();
    u = kheap_usable_size(g_heap, p + 16);
    CHECK(u == 0, "kheap_usable_size(interior) = %zu", u);
    expect_report(KHEAP_REPORT_INTERIOR, p + 16, "kheap_usable_size(p + 16)");
    arm();
    CHECK(kheap_usable_size(g_heap, NULL) == 0, "usable_size(NULL) != 0%s",
          "");
    expect_no_report("kheap_usable_size(NULL)");
    /* kheap's own structures (a user cache's is an object of kheap's
     * internal cache of caches) are no blocks: usable_size and realloc
     * refuse them as free does, naming the cache. */
    kheap_cache_t *c = kheap_cache_create(g_heap, "misuse-own", 64, 0, NULL, NULL);
    CHECK(c != NULL, "kheap_cache_create failed%s", "");
    arm();
    u = kheap_usable_size(g_heap, c);
    CHECK(u == 0, "kheap_usable_size(a cache structure) = %zu", u);
    expect_report(KHEAP_REPORT_WRONG_CACHE, c, "kheap_usable_size(a cache structure)");
    CHECK(kt_last_report().cache && !strcmp(kt_last_report().cache, "kheap_cache"),
          "the report names cache '%s'", kt_last_report().cache ? kt_last_report().cache : "");
    arm();
    void *q = kheap_realloc(g_heap, c, 10);
    CHECK(q == NULL, "kheap_realloc(a cache structure) = %p", q);
    expect_report(KHEAP_REPORT_WRONG_CACHE, c, "kheap_realloc(a cache structure)");
    arm();
    CHECK(kheap_cache_destroy(c) == KHEAP_OK, "the cache was harmed%s", "");
    expect_no_report("destroying the cache");
    kheap_free(g_heap, p);
    teardown();
}

/* A sized free (kheap_free_as, kheap_free_aligned_as) of a size the
 * block cannot have is one SIZE_MISMATCH report, naming the block's class
 * and usable bytes, and the block stays allocated; a size of the block's
 * class frees it. */
static void expect_size_report(const void *p, const char *cache, size_t bytes, const char *what)
{
    struct kheap_report r = kt_last_report();
    expect_report(KHEAP_REPORT_SIZE_MISMATCH, p, what);
    CHECK(r.size == bytes, "%s: the report gives %zu bytes, want the block's %zu", what, r.size,
          bytes);
    CHECK(cache ? r.cache && !strcmp(r.cache, cache) : !r.cache,
          "%s: the report names cache '%s', want '%s'", what, r.cache ? r.cache : "(none)",
          cache ? cache : "(none)");
}

/* kheap_free_as(p, size) with no report, and one free counted. */
static void sized_free_ok(void *p, size_t size, size_t align, enum kheap_block_kind kind,
                          const char *what)
{
    arm();
    kheap_free_aligned_as(g_heap, p, size, align, kind);
    expect_no_report(what);
    CHECK(stats().free_count == g_before.free_count + 1, "%s: %" PRIu64 " frees counted, want 1",
          what, stats().free_count - g_before.free_count);
}

TEST(sized_free)
{
    setup();
    /* Every size freed with the size it was allocated with, as new and
     * as malloc, aligned or not: never a report. */
    static const size_t sizes[] = {1,    8,    16,   17,    24,    40,    100,   128,    1000,
                                   1024, 1025, 2000, 4096,  5000,  32767, 32768, 32769, 300000};
    static const size_t aligns[] = {0, 16, 64, 4096, 16384};
    for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        for (unsigned a = 0; a < sizeof aligns / sizeof aligns[0]; a++) {
            char what[96];
            snprintf(what, sizeof what, "kheap_free_aligned_as(%zu, align %zu)", sizes[i],
                     aligns[a]);
            void *p = kheap_alloc_as(g_heap, sizes[i], aligns[a], KHEAP_BLOCK_NEW);
            CHECK(p != NULL, "kheap_alloc_as(%zu, %zu) failed", sizes[i], aligns[a]);
            sized_free_ok(p, sizes[i], aligns[a], KHEAP_BLOCK_NEW, what);
            p = kheap_alloc_aligned(g_heap, sizes[i], aligns[a]);
            sized_free_ok(p, sizes[i], aligns[a], KHEAP_BLOCK_MALLOC, what);
        }
    }

    /* A 40-byte block (class 40): any size of class 40 is its own; 0 is
     * no size. */
    unsigned char *p = kheap_alloc(g_heap, 40);
    arm();
    kheap_free_as(g_heap, p, 200, KHEAP_BLOCK_NEW);
    expect_size_report(p, "kmalloc-40", 40, "a 40-byte block freed as 200 bytes");
    arm();
    kheap_free_as(g_heap, p, 32, KHEAP_BLOCK_NEW_ARRAY);
    expect_size_report(p, "kmalloc-40", 40, "a 40-byte block freed as 32 bytes");
    arm();
    kheap_free_as(g_heap, p, 100000, KHEAP_BLOCK_NEW);
    expect_size_report(p, "kmalloc-40", 40, "a 40-byte block freed as 100000 bytes");
    arm();
    kheap_free_as(g_heap, p, SIZE_MAX, KHEAP_BLOCK_NEW);
    expect_size_report(p, "kmalloc-40", 40, "a 40-byte block freed as SIZE_MAX bytes");
    sized_free_ok(p, 33, 0, KHEAP_BLOCK_NEW, "a 40-byte block freed as 33 bytes");
    p = kheap_alloc(g_heap, 40);
    sized_free_ok(p, 0, 0, KHEAP_BLOCK_NEW, "a 40-byte block freed with no size");

    /* Aligned blocks take a larger class: freed with their alignment they
     * are fine, without it they are not. */
    p = kheap_alloc_as(g_heap, 40, 64, KHEAP_BLOCK_NEW);
    arm();
    kheap_free_as(g_heap, p, 40, KHEAP_BLOCK_NEW);
    expect_size_report(p, "kmalloc-64", 64, "a 64-aligned 40-byte block freed unaligned");
    sized_free_ok(p, 40, 64, KHEAP_BLOCK_NEW, "a 64-aligned 40-byte block freed aligned");

    /* A large block: the size must round up to its pages. */
    unsigned char *l = kheap_alloc(g_heap, 100000);
    size_t lbytes = (100000 + PAGE - 1) / PAGE * PAGE;
    arm();
    kheap_free_as(g_heap, l, 50000, KHEAP_BLOCK_NEW);
    expect_size_report(l, NULL, lbytes, "a 100000-byte block freed as 50000 bytes");
    arm();
    kheap_free_as(g_heap, l, 40, KHEAP_BLOCK_NEW);
    expect_size_report(l, NULL, lbytes, "a 100000-byte block freed as 40 bytes");
    arm();
    kheap_free_as(g_heap, l, lbytes + 1, KHEAP_BLOCK_NEW);
    expect_size_report(l, NULL, lbytes, "a 100000-byte block freed as a page more");
    sized_free_ok(l, lbytes - PAGE + 1, 0, KHEAP_BLOCK_NEW, "a 100000-byte block, same pages");

    /* realloc keeps a block in place for a size of its class and moves
     * it to the class of a smaller one. A block of malloc's kind may hold
     * any smaller size (a shrink stays in place when the smaller class
     * has no memory); not a larger one, and a block of new's kind only
     * sizes of its class. */
    p = kheap_alloc(g_heap, 64);
    CHECK(kheap_realloc(g_heap, p, 57) == p, "realloc(64 -> 57) moved the block%s", "");
    unsigned char *moved = kheap_realloc(g_heap, p, 40);
    CHECK(moved != p && kheap_usable_size(g_heap, moved) == 40,
          "realloc(64 -> 40) kept %p (usable %zu), want a block of class 40", (void *)moved,
          kheap_usable_size(g_heap, moved));
    kheap_free(g_heap, moved);
    p = kheap_alloc(g_heap, 64);
    arm();
    kheap_free_as(g_heap, p, 65, KHEAP_BLOCK_MALLOC);
    expect_size_report(p, "kmalloc-64", 64, "a 64-byte block freed as 65 bytes");
    arm();
    kheap_free_as(g_heap, p, 40, KHEAP_BLOCK_NEW);
    expect_size_report(p, "kmalloc-64", 64, "a 64-byte new block freed as 40 bytes");
    sized_free_ok(p, 20, 0, KHEAP_BLOCK_MALLOC, "a 64-byte block freed as 20 bytes");

    /* The graver misuse is the one reported: a double free, an interior
     * pointer, a pointer in no region. */
    unsigned char *keep = kheap_alloc(g_heap, 40);
    p = kheap_alloc(g_heap, 40);
    kheap_free(g_heap, p);
    arm();
    kheap_free_as(g_heap, p, 300, KHEAP_BLOCK_NEW);
    expect_report(KHEAP_REPORT_DOUBLE_FREE, p, "a double free with a wrong size");
    arm();
    kheap_free_as(g_heap, keep + 8, 300, KHEAP_BLOCK_NEW);
    expect_report(KHEAP_REPORT_INTERIOR, keep + 8, "an interior pointer with a wrong size");
    int local;
    arm();
    kheap_free_as(g_heap, &local, 4, KHEAP_BLOCK_NEW);
    expect_report(KHEAP_REPORT_FOREIGN, &local, "a stack address with its size");
    arm();
    kheap_free_as(g_heap, NULL, 40, KHEAP_BLOCK_NEW);
    expect_no_report("NULL with a size");
    kheap_free(g_heap, keep);

    /* A sampled block (of a class no allocation used yet, so its
     * magazine misses) stands for its size's class, 320. */
    if (kheap_set_sample(g_heap, 1) == KHEAP_OK) {
        p = kheap_alloc(g_heap, 300);
        CHECK(stats().sampled_live == 1, "the 300-byte block was not sampled (%zu live)",
              stats().sampled_live);
        arm();
        kheap_free_as(g_heap, p, 100, KHEAP_BLOCK_NEW);
        expect_size_report(p, NULL, 300, "a sampled 300-byte block freed as 100 bytes");
        sized_free_ok(p, 290, 0, KHEAP_BLOCK_NEW, "a sampled 300-byte block freed as 290 bytes");
        kheap_set_sample(g_heap, 0);
    }
    teardown();
}

/* KHEAP_DEBUG >= 2 poisons freed objects and checks the poison when the
 * object is handed out again; below that level nothing is detected and
 * the test says so. */
TEST(write_after_free)
{
#if KHEAP_DEBUG >= 2 && !KHEAP_VALGRIND
    setup();
    unsigned char *p = kheap_alloc(g_heap, 96);
    CHECK(p != NULL, "kheap_alloc(96) failed%s", "");
    kheap_free(g_heap, p);
    arm();
    p[50] = 0x42; /* the bug: a write through a stale pointer */
    unsigned char *q = kheap_alloc(g_heap, 96);
    CHECK(q == p, "the freed object was not reused first: %p, then %p", (void *)p, (void *)q);
    struct kheap_report last = kt_last_report();
    CHECK(kt_reports() == 1 && last.kind == KHEAP_REPORT_CORRUPTION,
          "write after free: %lu reports, last %s", kt_reports(), kt_report_kind_name((int)last.kind));
    CHECK(last.addr == p + 50, "write after free reported at %p, want %p", last.addr,
          (void *)(p + 50));
    kheap_free(g_heap, q);
    check_heap("after write-after-free");
    teardown();
#else
    printf("# write-after-free detection needs KHEAP_DEBUG >= 2 without valgrind\n");
#endif
}

TEST(impossible_allocations)
{
    setup();
    unsigned char *keep = kheap_alloc(g_heap, 1000);
    CHECK(keep != NULL, "kheap_alloc failed%s", "");
    memset(keep, 0x3c, 1000);

    arm();
    void *p = kheap_alloc(g_heap, SIZE_MAX);
    CHECK(p == NULL, "kheap_alloc(SIZE_MAX) = %p", p);
    struct kheap_stats s = stats();
    CHECK(s.failed_count == g_before.failed_count + 1,
          "kheap_alloc(SIZE_MAX): failed_count %" PRIu64 " -> %" PRIu64,
          g_before.failed_count, s.failed_count);
    p = kheap_alloc(g_heap, HEAP_SIZE);
    CHECK(p == NULL, "kheap_alloc(whole heap) = %p", p);
    p = kheap_alloc(g_heap, SIZE_MAX - PAGE + 2); /* rounds past zero */
    CHECK(p == NULL, "kheap_alloc(SIZE_MAX - PAGE + 2) = %p", p);
    p = kheap_alloc_aligned(g_heap, SIZE_MAX - 100, 4096);
    CHECK(p == NULL, "kheap_alloc_aligned(SIZE_MAX - 100, 4096) = %p", p);
    p = kheap_alloc_aligned(g_heap, 100, (size_t)1 << (sizeof(size_t) * 8 - 1));
    CHECK(p == NULL, "kheap_alloc_aligned(100, 2^63) = %p", p);
    static const size_t bad_align[] = {3, 24, 48, 100, 4097, 3 << 20};
    for (unsigned i = 0; i < sizeof bad_align / sizeof bad_align[0]; i++) {
        p = kheap_alloc_aligned(g_heap, 100, bad_align[i]);
        CHECK(p == NULL, "kheap_alloc_aligned(100, %zu) = %p", bad_align[i],
              p);
    }
    p = kheap_calloc(g_heap, SIZE_MAX / 2 + 1, 2);
    CHECK(p == NULL, "kheap_calloc(SIZE_MAX/2+1, 2) = %p", p);
    p = kheap_calloc(g_heap, 2, SIZE_MAX / 2 + 1);
    CHECK(p == NULL, "kheap_calloc(2, SIZE_MAX/2+1) = %p", p);
    p = kheap_calloc(g_heap, SIZE_MAX, SIZE_MAX);
    CHECK(p == NULL, "kheap_calloc(SIZE_MAX, SIZE_MAX) = %p", p);

    /* A failed realloc leaves the block as it was. */
    void *r = kheap_realloc(g_heap, keep, SIZE_MAX);
    CHECK(r == NULL, "kheap_realloc(p, SIZE_MAX) = %p", r);
    r = kheap_realloc(g_heap, keep, HEAP_SIZE);
    CHECK(r == NULL, "kheap_realloc(p, whole heap) = %p", r);
    for (int i = 0; i < 1000; i++)
        CHECK(keep[i] == 0x3c, "failed realloc changed byte %d to 0x%02x", i,
              keep[i]);
    expect_no_report("impossible allocations");

    s = stats();
    CHECK(s.used_bytes == g_before.used_bytes &&
              s.allocation_count == g_before.allocation_count,
          "failed allocations changed used %zu -> %zu, allocs %" PRIu64
          " -> %" PRIu64,
          g_before.used_bytes, s.used_bytes, g_before.allocation_count,
          s.allocation_count);
    /* Each NULL counts at most once; the plain size failures exactly. */
    CHECK(s.failed_count >= g_before.failed_count + 5 &&
              s.failed_count <= g_before.failed_count + 16,
          "16 NULL returns moved failed_count by %" PRIu64,
          s.failed_count - g_before.failed_count);
    check_heap("after impossible allocations");

    /* align 0 means the default; a size of 0 is a real block. */
    p = kheap_alloc_aligned(g_heap, 100, 0);
    CHECK(p != NULL && (uintptr_t)p % 8 == 0, "kheap_alloc_aligned(100, 0) = "
          "%p", p);
    void *z1 = kheap_alloc(g_heap, 0), *z2 = kheap_alloc(g_heap, 0);
    CHECK(z1 && z2 && z1 != z2, "kheap_alloc(0) twice gave %p and %p", z1,
          z2);
    kheap_free(g_heap, z1);
    kheap_free(g_heap, z2);
    kheap_free(g_heap, p);
    kheap_free(g_heap, keep);
    expect_no_report("frees after impossible allocations");
    teardown();
}

/* Lower-case hex of addr without leading zeros, as text to look for. */
static void hex_of(const void *addr, char *buf, size_t len)
{
    snprintf(buf, len, "%" PRIxPTR, (uintptr_t)addr);
}

static bool contains_ci(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; *hay; hay++) {
        size_t i = 0;
        while (i < n && hay[i] &&
               tolower((unsigned char)hay[i]) ==
                   tolower((unsigned char)needle[i]))
            i++;
        if (i == n)
            return true;
    }
    return false;
}

TEST(format_report)
{
    struct kheap_report r = {.kind = KHEAP_REPORT_INTERIOR,
                             .reason = "pointer inside a block",
                             .addr = (const void *)(uintptr_t)0xdeadbeef0ull,
                             .cache = "kmalloc-64",
                             .function = "kheap_free"};
    char buf[256], hex[32];
    kheap_hosted_format_report(&r, buf, sizeof buf);
    hex_of(r.addr, hex, sizeof hex);
    CHECK(contains_ci(buf, hex), "formatted report '%s' lacks address %s",
          buf, hex);
    CHECK(strstr(buf, "kheap_free"), "formatted report '%s' lacks the "
          "function", buf);
    /* A redzone report also names the block's size and the damage. */
    struct kheap_report o = r;
    o.kind = KHEAP_REPORT_OVERFLOW;
    o.size = 24;
    o.where = (const char *)r.addr + 24;
    kheap_hosted_format_report(&o, buf, sizeof buf);
    CHECK(strstr(buf, "24 bytes") && strstr(buf, "offset 24"),
          "formatted overflow report '%s' lacks the size or the offset", buf);
    char small[8];
    memset(small, 'Z', sizeof small);
    kheap_hosted_format_report(&r, small, 5);
    CHECK(small[4] == '\0' && small[5] == 'Z',
          "format into 5 bytes: byte 4 = 0x%02x, byte 5 = 0x%02x",
          (unsigned char)small[4], (unsigned char)small[5]);
}

/* The default hook: a line on stderr with the address, then abort(). */
TEST(default_hook_aborts)
{
    setup();
    unsigned char *p = kheap_alloc(g_heap, 64);
    CHECK(p != NULL, "kheap_alloc failed%s", "");
    const void *bad = p + 8;
    int fds[2];
    CHECK(pipe(fds) == 0, "pipe failed%s", "");
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork failed%s", "");
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        kt_release_reports();
        kheap_free(g_heap, (void *)bad);
        _exit(0); /* the default hook should not return */
    }
    close(fds[1]);
    char out[4096];
    size_t n = 0;
    ssize_t got;
    while ((got = read(fds[0], out + n, sizeof out - 1 - n)) > 0)
        n += (size_t)got;
    out[n] = '\0';
    close(fds[0]);
    int status;
    CHECK(waitpid(pid, &status, 0) == pid, "waitpid failed%s", "");
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
          "child with a bad free: status %#x, want death by SIGABRT; "
          "stderr '%s'",
          status, out);
    char hex[32];
    hex_of(bad, hex, sizeof hex);
    CHECK(contains_ci(out, hex), "stderr '%s' lacks the address %s", out,
          hex);
    /* The parent's hook is untouched by the child. */
    arm();
    kheap_free(g_heap, (void *)bad);
    expect_report(KHEAP_REPORT_INTERIOR, bad, "interior free in the parent");
    kheap_free(g_heap, p);
    teardown();
}

int main(void)
{
    /* A hook that deadlocks on a held lock would hang: fail instead. */
    alarm(300);
    RUN(free_foreign);
    RUN(free_interior);
    RUN(free_run);
    RUN(double_free_small);
    RUN(double_free_after_reclaim);
    RUN(double_free_ctor_cache);
    RUN(reports_after_reclaim_walk);
    RUN(reports_after_decay_walk);
    RUN(wrong_cache);
    RUN(usable_size_bad);
    RUN(sized_free);
    RUN(write_after_free);
    RUN(impossible_allocations);
    RUN(format_report);
    RUN(default_hook_aborts);
    return harness_done();
}
