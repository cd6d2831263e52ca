/*
 * redzone.c - the debug build's redzones around object-cache objects
 * (KHEAP_REDZONE; built only in that configuration, as build/redzone/).
 *
 * Every object of a user cache, with or without a constructor, lies
 * between two redzones of at least 16 bytes (the left one at least the
 * cache's alignment) that hold KHEAP_REDZONE_BYTE while it is allocated.
 * A write past the object's end or before its start is reported when the
 * object is freed (OVERFLOW or UNDERFLOW, naming the object, its cache,
 * its size and the first damaged byte), and found by kheap_check while
 * the object lives; the free still goes through, and the redzones are
 * whole again after. KHEAP_NOLOCK frees of damaged objects are reported
 * when the deferred list is taken. Objects that are used correctly,
 * cached in magazines, taken in bulk, held in reserves or returned to
 * their slabs are never reported.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdint.h>
#include <string.h>

#include "harness.h"
#include "kheap.h"
#include "support.h"

#if !KHEAP_REDZONE
#error "tests/redzone.c is built with KHEAP_REDZONE=1 (Makefile: the redzone build)"
#endif

#define HEAP_SIZE ((size_t)16 << 20)
#define SIZE 40u

static struct kt_heap g_region;
static kheap_t *g_heap;
static unsigned long g_ctor_runs;

static void ctor40(void *o)
{
    memset(o, 0xab, SIZE);
    g_ctor_runs++;
}

static kheap_cache_t *make_aligned(const char *name, bool constructed, size_t align)
{
    kheap_cache_t *c = kheap_cache_create(g_heap, name, SIZE, align,
                                          constructed ? ctor40 : NULL, NULL);
    CHECK(c != NULL, "kheap_cache_create(%s)", name);
    return c;
}

static kheap_cache_t *make(const char *name, bool constructed)
{
    return make_aligned(name, constructed, 0);
}

static void check_quiet(const char *when)
{
    const void *at = NULL;
    const char *why = kheap_check(g_heap, &at);
    CHECK(why == NULL, "%s: kheap_check: %s at %p", when, why, at);
    CHECK(kt_reports() == 0, "%s: %lu reports, the last %s at %p", when, kt_reports(),
          kt_report_kind_name(kt_last_report().kind), kt_last_report().addr);
}

/* The report one damaged object must give: its kind, the object, the
 * first damaged byte, its size and its cache's name. */
static void report_is(const char *name, enum kheap_report_kind kind, const void *p,
                      const void *first)
{
    CHECK(kt_reports() == 1, "%s: %lu reports for one damaged object", name, kt_reports());
    struct kheap_report r = kt_last_report();
    CHECK(r.kind == kind && r.addr == p && r.where == first && r.size == SIZE && r.cache &&
              strcmp(r.cache, name) == 0,
          "%s: report %s at %p (want %s at %p), first damaged byte %p (want %p), size %zu, "
          "cache %s",
          name, kt_report_kind_name(r.kind), r.addr, kt_report_kind_name(kind), p, r.where,
          first, r.size, r.cache ? r.cache : "none");
    kt_reports_reset();
}

/* A new object of c, with len bytes written from offset `at` (negative:
 * before it; SIZE and above: past its end); no report yet. */
static unsigned char *damaged(kheap_cache_t *c, const char *name, long at, size_t len)
{
    kt_reports_reset();
    unsigned char *p = kheap_cache_alloc(c);
    CHECK(p != NULL, "%s: alloc", name);
    memset(p, 0x11, SIZE);
    memset(p + at, 0x22, len);
    return p;
}

/* Such an object freed: one report naming it, OVERFLOW or UNDERFLOW.
 * `left` is the cache's left redzone: kheap_check does not read its first
 * word (a reserve's link may be there), so it finds an underflow that
 * deep at the word after. */
static void damage_reported_left(kheap_cache_t *c, const char *name, long at, size_t len,
                                 long left)
{
    unsigned char *p = damaged(c, name, at, len);
    bool under = at < 0;
    /* Found while the object lives. */
    const void *where = NULL;
    const char *why = kheap_check(g_heap, &where);
    const unsigned char *seen = p + (at < 8 - left ? 8 - left : at);
    CHECK(why && strstr(why, "redzone") && strstr(why, under ? "before" : "after") &&
              where == seen,
          "%s: kheap_check with %zu bytes written at %ld: %s at %p (want %p)", name, len, at,
          why ? why : "nothing", where, (const void *)seen);
    kheap_cache_free(c, p);
    report_is(name, under ? KHEAP_REPORT_UNDERFLOW : KHEAP_REPORT_OVERFLOW, p, p + at);
    /* The redzones are whole again: the object can be used and freed. */
    check_quiet("after the reported free");
}

static void damage_reported(kheap_cache_t *c, const char *name, long at, size_t len)
{
    damage_reported_left(c, name, at, len, 16);
}

static void overflow_reported(kheap_cache_t *c, const char *name, size_t at, size_t len)
{
    damage_reported(c, name, (long)(SIZE + at), len);
}

static void setup(void)
{
    kt_heap_open(&g_region, HEAP_SIZE);
    g_heap = g_region.h;
    kt_capture_reports(NULL);
    kt_reports_reset();
}

static void teardown(void)
{
    kt_release_reports();
    kt_heap_close(&g_region);
}

TEST(objects_have_redzones)
{
    setup();
    kheap_cache_t *c = make("rz_plain", false), *k = make("rz_ctor", true);
    struct kheap_cache_info ci, ki;
    kheap_cache_info(c, &ci);
    kheap_cache_info(k, &ki);
    /* objsize is the size asked for; the slot has the redzones around it. */
    void *a = kheap_cache_alloc(c), *b = kheap_cache_alloc(c);
    CHECK(a && b, "alloc");
    size_t gap = (size_t)((uintptr_t)b > (uintptr_t)a ? (uintptr_t)b - (uintptr_t)a
                                                      : (uintptr_t)a - (uintptr_t)b);
    CHECK(ci.objsize == SIZE && gap >= SIZE + 32, "objects %zu bytes apart for %zu bytes",
          gap, (size_t)ci.objsize);
    const unsigned char *o = a;
    for (int i = 1; i <= 16; i++)
        CHECK(o[-i] == KHEAP_REDZONE_BYTE, "byte %d before the start is %#x", i, o[-i]);
    for (size_t i = SIZE; i < SIZE + 16; i++)
        CHECK(o[i] == KHEAP_REDZONE_BYTE, "byte %zu past the start is %#x", i, o[i]);
    kheap_cache_free(c, a);
    kheap_cache_free(c, b);
    check_quiet("two objects");
    kheap_cache_destroy(c);
    kheap_cache_destroy(k);
    teardown();
}

TEST(overflow_found_at_free_and_by_check)
{
    setup();
    kheap_cache_t *c = make("rz_plain", false), *k = make("rz_ctor", true);
    overflow_reported(c, "rz_plain", 0, 1);  /* one byte */
    overflow_reported(c, "rz_plain", 15, 1); /* the last byte of 16 */
    overflow_reported(c, "rz_plain", 0, 16); /* all of them, as a memcpy would */
    overflow_reported(k, "rz_ctor", 0, 1);
    overflow_reported(k, "rz_ctor", 8, 8); /* where the free-list link goes */
    CHECK(kheap_cache_destroy(c) == KHEAP_OK && kheap_cache_destroy(k) == KHEAP_OK, "destroy");
    check_quiet("destroyed");
    teardown();
}

/* KHEAP_NOLOCK allocations get their redzone as the others do, and a
 * KHEAP_NOLOCK free deferred with every lock held (its list's link lies in
 * or over the redzone) is checked without a false report when the list is
 * taken. */
TEST(nolock_objects_have_redzones)
{
    setup();
    kheap_cache_t *c = make("rz_plain", false), *k = make("rz_ctor", true);
    for (int round = 0; round < 2; round++) {
        kheap_cache_t *x = round ? k : c;
        /* This CPU's previous magazine, the one KHEAP_NOLOCK calls use,
         * with objects in it: more frees than a magazine holds. */
        static void *warm[300];
        for (int i = 0; i < 300; i++)
            warm[i] = kheap_cache_alloc(x);
        for (int i = 0; i < 300; i++)
            kheap_cache_free(x, warm[i]);
        unsigned char *p = kheap_cache_alloc_flags(x, KHEAP_NOLOCK);
        CHECK(p != NULL, "NOLOCK alloc, round %d", round);
        for (size_t i = SIZE; i < SIZE + 16; i++)
            CHECK(p[i] == KHEAP_REDZONE_BYTE, "byte %zu of a NOLOCK object is %#x", i, p[i]);
        check_quiet("a NOLOCK object live");
        kheap_cache_free(x, p);
        check_quiet("a NOLOCK object freed");
        /* Deferred: freed with every lock of the heap held. */
        p = kheap_cache_alloc(x);
        CHECK(p != NULL, "alloc, round %d", round);
        kheap_lock_all();
        kheap_cache_free_flags(x, p, KHEAP_NOLOCK);
        kheap_unlock_all();
        kheap_reclaim(g_heap); /* takes the deferred list */
        check_quiet("a deferred free taken");
    }
    CHECK(kheap_cache_destroy(c) == KHEAP_OK && kheap_cache_destroy(k) == KHEAP_OK, "destroy");
    teardown();
}

/* Writes before an object: reported as its UNDERFLOW, not as the
 * previous object's overflow; also with a left redzone as wide as a
 * 64-byte alignment. */
TEST(underflow_found_at_free_and_by_check)
{
    setup();
    kheap_cache_t *c = make("rz_plain", false), *k = make("rz_ctor", true);
    kheap_cache_t *a = make_aligned("rz_align64", false, 64);
    damage_reported(c, "rz_plain", -1, 1);   /* one byte */
    damage_reported(c, "rz_plain", -8, 1);   /* the first kheap_check reads */
    damage_reported(c, "rz_plain", -16, 16); /* all of them */
    damage_reported(k, "rz_ctor", -1, 1);
    damage_reported(k, "rz_ctor", -16, 16);
    damage_reported_left(a, "rz_align64", -64, 64, 64);
    damage_reported_left(a, "rz_align64", SIZE, 24, 64); /* to the slot's end */
    unsigned char *p = kheap_cache_alloc(a);
    CHECK(p && (uintptr_t)p % 64 == 0, "rz_align64 object at %p", (void *)p);
    kheap_cache_free(a, p);
    CHECK(kheap_cache_destroy(c) == KHEAP_OK && kheap_cache_destroy(k) == KHEAP_OK &&
              kheap_cache_destroy(a) == KHEAP_OK,
          "destroy");
    check_quiet("destroyed");
    teardown();
}

/* A KHEAP_NOLOCK free (which may not report) of a damaged object:
 * reported, with the object and the first damaged byte, when the deferred
 * list is next taken (kheap_reclaim here). The object is freed then, or,
 * refused (damage where the list's link would go), left allocated as it
 * was: mended here, and freed. */
static void nolock_damage_reported(kheap_cache_t *c, const char *name, long at, size_t len,
                                   bool refused)
{
    unsigned char *p = damaged(c, name, at, len);
    kheap_cache_free_flags(c, p, KHEAP_NOLOCK);
    CHECK(kt_reports() == 0, "%s: the NOLOCK free reported (%lu)", name, kt_reports());
    kheap_reclaim(g_heap);
    report_is(name, at < 0 ? KHEAP_REPORT_UNDERFLOW : KHEAP_REPORT_OVERFLOW, p, p + at);
    if (refused) {
        const void *where = NULL;
        CHECK(kheap_check(g_heap, &where) != NULL, "%s: a refused object's damage is gone",
              name);
        memset(p + at, KHEAP_REDZONE_BYTE, len);
        kheap_cache_free(c, p);
    }
    check_quiet("after the deferred report");
}

TEST(nolock_free_of_damaged_objects)
{
    setup();
    kheap_cache_t *c = make("rz_plain", false), *k = make("rz_ctor", true);
    for (int round = 0; round < 2; round++) {
        kheap_cache_t *x = round ? k : c;
        const char *name = round ? "rz_ctor" : "rz_plain";
        nolock_damage_reported(x, name, SIZE, 1, false); /* deferred, checked when taken */
        nolock_damage_reported(x, name, -1, 1, false);   /* deferred, checked when taken */
        nolock_damage_reported(x, name, -16, 16, true);  /* under the list's link: refused */
    }
    /* Freed twice with KHEAP_NOLOCK while every lock is held: the second
     * finds the first's list link in the left redzone, and is reported
     * as the double free it is, the object freed once. */
    for (int round = 0; round < 2; round++) {
        kheap_cache_t *x = round ? k : c;
        kt_reports_reset();
        void *p = kheap_cache_alloc(x);
        CHECK(p != NULL, "alloc, round %d", round);
        kheap_lock_all();
        kheap_cache_free_flags(x, p, KHEAP_NOLOCK);
        kheap_cache_free_flags(x, p, KHEAP_NOLOCK);
        kheap_unlock_all();
        kheap_reclaim(g_heap);
        CHECK(kt_reports() == 1 && kt_last_report().kind == KHEAP_REPORT_DOUBLE_FREE &&
                  kt_last_report().addr == p,
              "a second NOLOCK free of a deferred object, round %d: %lu reports, the last %s at "
              "%p",
              round, kt_reports(), kt_report_kind_name(kt_last_report().kind),
              kt_last_report().addr);
        kt_reports_reset();
        check_quiet("a deferred object freed twice");
    }
    CHECK(kheap_cache_destroy(c) == KHEAP_OK && kheap_cache_destroy(k) == KHEAP_OK, "destroy");
    teardown();
}

/* Reserves and memory pools link their objects through the left
 * redzone's first word, restored as they leave: no false report. */
TEST(reserves_are_quiet)
{
    setup();
    kheap_cache_t *c = make("rz_plain", false), *k = make("rz_ctor", true);
    for (int round = 0; round < 2; round++) {
        kheap_cache_t *x = round ? k : c;
        struct kheap_reserve r = KHEAP_RESERVE_INIT;
        CHECK(kheap_reserve_fill(x, 100, &r) == KHEAP_OK, "fill");
        check_quiet("a reserve held");
        void *o[50];
        for (int i = 0; i < 50; i++)
            CHECK((o[i] = kheap_reserve_alloc(&r)) != NULL, "reserve_alloc %d", i);
        check_quiet("taken from the reserve");
        for (int i = 0; i < 50; i++)
            kheap_cache_free(x, o[i]);
        CHECK(kheap_reserve_return(&r) == 50, "return");
        check_quiet("reserve returned");
        struct kheap_mempool pool;
        CHECK(kheap_mempool_init(&pool, x, 8) == KHEAP_OK, "mempool_init");
        void *m = kheap_mempool_alloc(&pool);
        CHECK(m != NULL, "mempool_alloc");
        ((unsigned char *)m)[SIZE] = 0x44; /* found as it goes back to the pool */
        kheap_mempool_free(&pool, m);
        report_is(round ? "rz_ctor" : "rz_plain", KHEAP_REPORT_OVERFLOW, m,
                  (unsigned char *)m + SIZE);
        kheap_mempool_destroy(&pool);
        check_quiet("mempool destroyed");
    }
    CHECK(kheap_cache_destroy(c) == KHEAP_OK && kheap_cache_destroy(k) == KHEAP_OK, "destroy");
    teardown();
}

TEST(correct_use_is_quiet)
{
    setup();
    kheap_cache_t *c = make("rz_plain", false), *k = make("rz_ctor", true);
    enum { N = 3000 };
    static void *o[N];
    /* Through magazines, depots and slabs, in bulk and one by one, with
     * kheap_check between: objects cached in magazines (poisoned, or
     * constructed) and objects back in their slabs (their link in the
     * redzone) pass. */
    for (int round = 0; round < 3; round++) {
        kheap_cache_t *x = round & 1 ? k : c;
        for (int i = 0; i < N; i++) {
            o[i] = kheap_cache_alloc(x);
            CHECK(o[i] != NULL, "alloc %d", i);
            memset(o[i], 0x5a, SIZE);
        }
        check_quiet("all live");
        for (int i = 0; i < N; i += 2)
            kheap_cache_free(x, o[i]);
        check_quiet("half freed");
        for (int i = 1; i < N; i += 2)
            kheap_cache_free(x, o[i]);
        check_quiet("all freed");
        size_t got = kheap_cache_alloc_bulk(x, 64, o);
        CHECK(got == 64, "bulk alloc got %zu", got);
        for (size_t i = 0; i < got; i++)
            memset(o[i], 0x6b, SIZE);
        kheap_cache_free_bulk(x, got, o);
        check_quiet("bulk");
        kheap_reclaim(g_heap);
        check_quiet("reclaimed");
    }
    CHECK(g_ctor_runs > 0, "no constructor ran");
    CHECK(kheap_cache_destroy(c) == KHEAP_OK && kheap_cache_destroy(k) == KHEAP_OK, "destroy");
    teardown();
}

int main(void)
{
    RUN(objects_have_redzones);
    RUN(overflow_found_at_free_and_by_check);
    RUN(nolock_objects_have_redzones);
    RUN(underflow_found_at_free_and_by_check);
    RUN(nolock_free_of_damaged_objects);
    RUN(reserves_are_quiet);
    RUN(correct_use_is_quiet);
    return harness_done();
}
