/*
 * test_cache.c - object cache semantics (Bonwick's kmem_cache).
 *
 * Constructors run once per object slot and their state survives
 * free/alloc (kheap never writes a constructed object's bytes);
 * destructors run only when slabs go back, as often as constructors in
 * the end; alignment; the kheap_cache_info and kheap_slabinfo figures; the
 * text of kheap_format_slabinfo and kheap_format_stats; name truncation;
 * and the arguments kheap_cache_create refuses.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "kh_internal.h" /* kh_tick: a poll of the slow paths, in tests' time */

#define PAGE KHEAP_PAGE_SIZE
#define HEAP_SIZE ((size_t)16 << 20)
#define MAGIC 0x436f6e7374727563ull
#define MAX_OBJS 8192

static struct kt_heap g_region;
static kheap_t *g_heap;
static unsigned char *g_mem;

/* ---- constructor bookkeeping: one flag per 8 bytes of the heap ---- */

struct obj {
    uint64_t magic;
    uint64_t serial; /* which constructor call made this state */
};

static uint8_t *g_constructed; /* 1 while an address holds a built object */
static uint64_t g_ctor_calls, g_dtor_calls, g_serial;
static unsigned long g_ctor_twice, g_dtor_unbuilt, g_dtor_bad_magic;

static size_t slot_of(const void *o)
{
    return (size_t)((const unsigned char *)o - g_mem) / 8;
}

static void ctor(void *o)
{
    struct obj *b = o;
    if (g_constructed[slot_of(o)])
        g_ctor_twice++;
    g_constructed[slot_of(o)] = 1;
    b->magic = MAGIC;
    b->serial = ++g_serial;
    g_ctor_calls++;
}

static void dtor(void *o)
{
    const struct obj *b = o;
    if (!g_constructed[slot_of(o)])
        g_dtor_unbuilt++;
    if (b->magic != MAGIC)
        g_dtor_bad_magic++;
    g_constructed[slot_of(o)] = 0;
    g_dtor_calls++;
}

static void reset_counters(void)
{
    g_ctor_calls = g_dtor_calls = 0;
    g_ctor_twice = g_dtor_unbuilt = g_dtor_bad_magic = 0;
}

static void check_counters(const char *when)
{
    CHECK(g_ctor_twice == 0, "%s: %lu objects constructed twice", when,
          g_ctor_twice);
    CHECK(g_dtor_unbuilt == 0, "%s: %lu destructor calls on unbuilt objects",
          when, g_dtor_unbuilt);
    CHECK(g_dtor_bad_magic == 0,
          "%s: %lu objects reached the dtor without the ctor's state", when,
          g_dtor_bad_magic);
    struct kheap_report last = kt_last_report();
    CHECK(kt_reports() == 0, "%s: unexpected report %s at %p (%s)", when,
          kt_report_kind_name((int)last.kind), last.addr, last.reason ? last.reason : "");
}

/* ---- fixture ---- */

static void check_heap(const char *when)
{
    const void *addr = NULL;
    const char *msg = kheap_check_quiescent(g_heap, &addr);
    CHECK(msg == NULL, "%s: kheap_check: %s at %p", when, msg, addr);
}

static void setup(void)
{
    kt_heap_open(&g_region, HEAP_SIZE);
    g_heap = g_region.h;
    g_mem = g_region.mem;
    g_constructed = kt_map(HEAP_SIZE / 8);
    CHECK(g_constructed != NULL, "mmap of flags failed%s", "");
    reset_counters();
    kt_reports_reset();
}

static void teardown(void)
{
    kheap_reclaim(g_heap);
    check_heap("teardown");
    struct kheap_stats s;
    kheap_get_stats(g_heap, &s);
    CHECK(s.used_bytes == 0 && s.slab_bytes == 0 &&
              s.heap_free == s.heap_total - s.metadata_bytes,
          "teardown: used %zu slab %zu, heap_free %zu != total %zu - "
          "metadata %zu",
          s.used_bytes, s.slab_bytes, s.heap_free, s.heap_total,
          s.metadata_bytes);
    kt_unmap(g_constructed, HEAP_SIZE / 8);
    kt_heap_close(&g_region);
}

static struct kheap_cache_info info(kheap_cache_t *c)
{
    struct kheap_cache_info ci;
    memset(&ci, 0xcd, sizeof ci);
    kheap_cache_info(c, &ci);
    return ci;
}

/* The invariants every row must satisfy. */
static void check_info(const struct kheap_cache_info *ci, const char *when)
{
    CHECK(memchr(ci->name, '\0', KHEAP_NAME_MAX) != NULL,
          "%s: cache name not NUL-terminated%s", when, "");
    CHECK(ci->objperslab > 0 && ci->pagesperslab > 0,
          "%s %s: objperslab %zu pagesperslab %zu", when, ci->name,
          ci->objperslab, ci->pagesperslab);
    CHECK(ci->objperslab * ci->objsize <= ci->pagesperslab * PAGE,
          "%s %s: %zu objects of %zu bytes exceed %zu pages", when, ci->name,
          ci->objperslab, ci->objsize, ci->pagesperslab);
    CHECK(ci->num_objs == ci->num_slabs * ci->objperslab,
          "%s %s: num_objs %zu != %zu slabs * %zu", when, ci->name,
          ci->num_objs, ci->num_slabs, ci->objperslab);
    /* Objects cached in per-CPU magazines are free to users but still
     * handed out as far as their slabs know. */
    size_t out = ci->active_objs + ci->cached_objs;
    CHECK(out <= ci->num_objs && ci->active_slabs <= ci->num_slabs &&
              out <= ci->active_slabs * ci->objperslab &&
              (out == 0) == (ci->active_slabs == 0),
          "%s %s: active_objs %zu cached %zu num_objs %zu active_slabs %zu num_slabs %zu",
          when, ci->name, ci->active_objs, ci->cached_objs, ci->num_objs,
          ci->active_slabs, ci->num_slabs);
    CHECK(ci->allocs - ci->frees == ci->active_objs,
          "%s %s: allocs %" PRIu64 " - frees %" PRIu64 " != active %zu", when,
          ci->name, ci->allocs, ci->frees, ci->active_objs);
}

/* ---- tests ---- */

TEST(ctor_once_per_slot)
{
    setup();
    kheap_cache_t *c = kheap_cache_create(g_heap, "ctor-test", 100, 8, ctor,
                                          dtor);
    CHECK(c != NULL, "kheap_cache_create failed%s", "");
    struct kheap_cache_info ci = info(c);
    check_info(&ci, "new cache");
    CHECK(ci.num_slabs == 0 && ci.active_objs == 0 && g_ctor_calls == 0,
          "new cache: %zu slabs, %zu active, %" PRIu64 " ctor calls",
          ci.num_slabs, ci.active_objs, g_ctor_calls);
    CHECK(ci.objsize >= 100, "objsize %zu < 100", ci.objsize);
    size_t per = ci.objperslab;

    /* Two and a half slabs' worth. */
    size_t n = per * 2 + per / 2 + 1;
    CHECK(n <= MAX_OBJS, "objperslab %zu is absurd", per);
    static struct obj *o[MAX_OBJS];
    for (size_t i = 0; i < n; i++) {
        o[i] = kheap_cache_alloc(c);
        CHECK(o[i] != NULL, "kheap_cache_alloc #%zu failed", i);
        CHECK(o[i]->magic == MAGIC && g_constructed[slot_of(o[i])],
              "object #%zu %p handed out unconstructed", i, (void *)o[i]);
        ci = info(c);
        CHECK(ci.active_objs == i + 1, "active_objs %zu after %zu allocs",
              ci.active_objs, i + 1);
        CHECK(g_ctor_calls >= i + 1 && g_ctor_calls <= ci.num_objs,
              "%" PRIu64 " ctor calls for %zu objects in %zu slots",
              g_ctor_calls, i + 1, ci.num_objs);
        check_info(&ci, "allocating");
    }
    ci = info(c);
    CHECK(ci.num_slabs == 3 && ci.active_slabs == 3,
          "%zu objects of %zu per slab: num_slabs %zu active_slabs %zu", n,
          per, ci.num_slabs, ci.active_slabs);
    CHECK(ci.allocs == n && ci.frees == 0, "allocs %" PRIu64 " frees %" PRIu64,
          ci.allocs, ci.frees);

    /* User state written between ctor and free survives the round trip. */
    for (size_t i = 0; i < n; i++)
        memset((unsigned char *)o[i] + sizeof(struct obj), (int)(i & 0xff),
               100 - sizeof(struct obj));
    uint64_t ctor_before = g_ctor_calls;
    for (size_t i = 0; i < n; i++)
        kheap_cache_free(c, o[i]);
    ci = info(c);
    check_info(&ci, "all freed");
    /* Freed objects wait, constructed, in this thread's magazines and the
     * depot; no slab is given back while they hold it. */
    CHECK(ci.active_objs == 0 && ci.cached_objs <= ci.num_objs && ci.num_slabs <= 3,
          "all freed: active_objs %zu cached %zu of %zu, %zu slabs", ci.active_objs,
          ci.cached_objs, n, ci.num_slabs);
    CHECK(g_ctor_calls - g_dtor_calls <= ci.num_objs,
          "%" PRIu64 " objects constructed, %zu slots", g_ctor_calls -
          g_dtor_calls, ci.num_objs);

    /* Allocate the kept slabs' worth again: no object is built twice,
     * and each one is exactly as it was freed. */
    size_t again = ci.num_objs;
    for (size_t i = 0; i < again; i++) {
        o[i] = kheap_cache_alloc(c);
        CHECK(o[i] != NULL, "re-alloc #%zu failed", i);
        CHECK(o[i]->magic == MAGIC, "re-alloc #%zu %p lost the ctor state "
              "(magic %#" PRIx64 ")", i, (void *)o[i], o[i]->magic);
    }
    CHECK(g_ctor_calls == ctor_before ||
              g_ctor_calls - g_dtor_calls <= info(c).num_objs,
          "re-alloc ran %" PRIu64 " more ctors", g_ctor_calls - ctor_before);
    for (size_t i = 0; i < again; i++)
        kheap_cache_free(c, o[i]);
    check_counters("re-alloc");

    /* Shrink gives the kept slabs back with their destructors. */
    ci = info(c);
    size_t kept = ci.num_slabs * ci.pagesperslab * PAGE;
    size_t got = kheap_cache_shrink(c);
    CHECK(got == kept, "kheap_cache_shrink gave %zu bytes, %zu slabs held %zu",
          got, ci.num_slabs, kept);
    ci = info(c);
    CHECK(ci.num_slabs == 0 && ci.num_objs == 0,
          "after shrink: %zu slabs, %zu objects", ci.num_slabs, ci.num_objs);
    CHECK(g_dtor_calls == g_ctor_calls,
          "after shrink: %" PRIu64 " dtors for %" PRIu64 " ctors",
          g_dtor_calls, g_ctor_calls);
    CHECK(kheap_cache_shrink(c) == 0, "second shrink gave bytes back%s", "");

    int err = kheap_cache_destroy(c);
    CHECK(err == KHEAP_OK, "kheap_cache_destroy = %d", err);
    CHECK(g_dtor_calls == g_ctor_calls, "%" PRIu64 " dtors for %" PRIu64
          " ctors", g_dtor_calls, g_ctor_calls);
    check_counters("ctor test");
    teardown();
}

TEST(state_survives_exactly)
{
    setup();
    kheap_cache_t *c = kheap_cache_create(g_heap, "state", 64, 0, ctor, dtor);
    CHECK(c != NULL, "kheap_cache_create failed%s", "");
    struct obj *keep = kheap_cache_alloc(c); /* keeps the slab alive */
    struct obj *o = kheap_cache_alloc(c);
    CHECK(keep && o, "kheap_cache_alloc failed%s", "");
    unsigned char before[64];
    memset((unsigned char *)o + 16, 0x77, 48);
    memcpy(before, o, 64);
    kheap_cache_free(c, o);
    /* Take objects until o comes back; it must be byte for byte as left. */
    size_t per = info(c).objperslab * 2;
    static struct obj *got[MAX_OBJS];
    size_t n = 0;
    bool found = false;
    while (n < per && !found) {
        got[n] = kheap_cache_alloc(c);
        CHECK(got[n] != NULL, "alloc failed%s", "");
        found = got[n] == o;
        n++;
    }
    CHECK(found, "freed object %p not handed out in %zu allocations",
          (void *)o, n);
    CHECK(memcmp(o, before, 64) == 0,
          "object came back changed: serial %" PRIu64 " magic %#" PRIx64
          " byte 20 = 0x%02x",
          o->serial, o->magic, ((unsigned char *)o)[20]);
    for (size_t i = 0; i < n; i++)
        kheap_free(g_heap, got[i]); /* kheap_free finds the cache */
    kheap_cache_free(c, keep);
    CHECK(info(c).active_objs == 0, "active_objs %zu", info(c).active_objs);
    CHECK(kheap_cache_destroy(c) == KHEAP_OK, "destroy failed%s", "");
    CHECK(g_dtor_calls == g_ctor_calls, "%" PRIu64 " dtors for %" PRIu64
          " ctors", g_dtor_calls, g_ctor_calls);
    check_counters("state");
    teardown();
}

TEST(dtor_only_when_slabs_go)
{
    setup();
    kheap_cache_t *c = kheap_cache_create(g_heap, "dtor-test", 500, 0, ctor,
                                          dtor);
    CHECK(c != NULL, "kheap_cache_create failed%s", "");
    size_t per = info(c).objperslab;
    size_t n = per * 10;
    CHECK(n <= MAX_OBJS, "objperslab %zu", per);
    static struct obj *o[MAX_OBJS];
    for (size_t i = 0; i < n; i++) {
        o[i] = kheap_cache_alloc(c);
        CHECK(o[i] != NULL, "alloc #%zu failed", i);
    }
    CHECK(g_dtor_calls == 0, "%" PRIu64 " dtors before any free",
          g_dtor_calls);
    /* (the slabs of the refills: mag_cap / 2 objects each, rounded up) */
    size_t refill = (info(c).mag_cap + 1) / 2, slabs = 10;
    if (refill)
        slabs = ((n + refill - 1) / refill * refill + per - 1) / per;
    CHECK(info(c).num_slabs == slabs, "%zu slabs for 10 slabs' worth (want %zu: refills of %zu)",
          info(c).num_slabs, slabs, refill);
    /* Free slab by slab (in allocation order objects share slabs more
     * or less): destructors run only as slabs are given back. */
    size_t slabs_before = info(c).num_slabs;
    for (size_t i = 0; i < n; i++) {
        kheap_cache_free(c, o[i]);
        struct kheap_cache_info ci = info(c);
        size_t gone = slabs_before - ci.num_slabs;
        CHECK(g_dtor_calls <= gone * per,
              "%" PRIu64 " dtors with %zu slabs given back", g_dtor_calls,
              gone);
        CHECK(ci.num_slabs <= ci.active_slabs + KHEAP_EMPTY_SLABS_KEPT,
              "%zu slabs, %zu active: more than %d empty kept", ci.num_slabs,
              ci.active_slabs, KHEAP_EMPTY_SLABS_KEPT);
        CHECK(g_ctor_calls - g_dtor_calls <= ci.num_objs,
              "%" PRIu64 " built objects in %zu slots",
              g_ctor_calls - g_dtor_calls, ci.num_objs);
    }
    CHECK(info(c).active_objs == 0, "%zu objects active after freeing all",
          info(c).active_objs);
    /* Freed objects wait in this thread's magazines and the depot;
     * kheap_reclaim (it reaches user caches too) sends them and their
     * slabs back, running the destructors. */
    size_t held = info(c).num_slabs;
    size_t got = kheap_reclaim(g_heap);
    CHECK(got >= held * info(c).pagesperslab * PAGE,
          "kheap_reclaim gave back %zu bytes of %zu slabs", got, held);
    CHECK(info(c).num_slabs == 0 && g_dtor_calls == g_ctor_calls,
          "after reclaim: %zu slabs, %" PRIu64 " dtors for %" PRIu64 " ctors",
          info(c).num_slabs, g_dtor_calls, g_ctor_calls);
    CHECK(kheap_cache_destroy(c) == KHEAP_OK, "destroy failed%s", "");
    check_counters("dtor test");
    teardown();
}

TEST(alignment)
{
    setup();
    static const size_t sizes[] = {1, 8, 24, 100, 1000, 5000, 32768};
    for (size_t align = 8; align <= PAGE; align *= 2) {
        for (unsigned s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            size_t size = sizes[s];
            kheap_cache_t *c = kheap_cache_create(g_heap, "aligned", size,
                                                  align, NULL, NULL);
            CHECK(c != NULL, "kheap_cache_create(%zu, align %zu) failed",
                  size, align);
            struct kheap_cache_info ci = info(c);
            check_info(&ci, "aligned");
            CHECK(ci.objsize >= size, "objsize %zu < size %zu", ci.objsize,
                  size);
            void *o[40];
            for (int i = 0; i < 40; i++) {
                o[i] = kheap_cache_alloc(c);
                CHECK(o[i] != NULL, "alloc(size %zu align %zu) failed", size,
                      align);
                CHECK((uintptr_t)o[i] % align == 0,
                      "object %p of cache (size %zu, align %zu) misaligned",
                      o[i], size, align);
                CHECK(kheap_usable_size(g_heap, o[i]) == ci.objsize,
                      "usable_size %zu != objsize %zu",
                      kheap_usable_size(g_heap, o[i]), ci.objsize);
                memset(o[i], i, ci.objsize);
            }
            /* Objects do not overlap (each holds its own fill). */
            for (int i = 0; i < 40; i++) {
                const unsigned char *b = o[i];
                CHECK(b[0] == i && b[ci.objsize - 1] == i,
                      "object %d (size %zu align %zu) overwritten", i, size,
                      align);
            }
            for (int i = 0; i < 40; i++)
                kheap_cache_free(c, o[i]);
            CHECK(kheap_cache_destroy(c) == KHEAP_OK, "destroy failed%s", "");
        }
    }
    /* align 0 means 8, and small alignments are allowed. */
    for (size_t align = 0; align < 8; align = align ? align * 2 : 1) {
        kheap_cache_t *c = kheap_cache_create(g_heap, "small-align", 13,
                                              align, NULL, NULL);
        CHECK(c != NULL, "kheap_cache_create(13, align %zu) failed", align);
        void *o = kheap_cache_alloc(c);
        CHECK(o && (align ? (uintptr_t)o % align == 0
                          : (uintptr_t)o % 8 == 0),
              "align %zu: object %p", align, o);
        kheap_cache_free(c, o);
        CHECK(kheap_cache_destroy(c) == KHEAP_OK, "destroy failed%s", "");
    }
    check_counters("alignment");
    teardown();
}

/* The size classes, from the rule. */
static size_t class_size(unsigned i)
{
    if (i < 7)
        return 16 + 8 * i;
    size_t base = (size_t)64 << ((i - 7) / 8);
    return base + ((i - 7) % 8 + 1) * (base / 8);
}

/* The names of the user caches in a slabinfo table, in table order: rows
 * after the kmalloc classes whose names are not those of the built-in
 * caches a new heap lists (builtin[0 .. nb-1]). Joined by commas. */
static void user_rows(const struct kheap_cache_info *rows, size_t n,
                      const struct kheap_cache_info *builtin, size_t nb,
                      char *out, size_t len)
{
    out[0] = '\0';
    for (size_t i = KHEAP_NUM_CLASSES; i < n; i++) {
        bool is_builtin = false;
        for (size_t j = 0; j < nb; j++)
            is_builtin |= strcmp(rows[i].name, builtin[j].name) == 0;
        if (!is_builtin) {
            size_t used = strlen(out);
            snprintf(out + used, len - used, "%s%s", used ? "," : "",
                     rows[i].name);
        }
    }
}

TEST(slabinfo_rows)
{
    setup();
    enum { MAXROWS = KHEAP_NUM_CLASSES + 16 };
    static struct kheap_cache_info rows[MAXROWS];
    /* The kmalloc classes come first, then user caches in creation order.
     * A heap may also list built-in caches of its own (for cache
     * structures, say) after the kmalloc classes. */
    size_t base = kheap_slabinfo(g_heap, rows, MAXROWS);
    CHECK(base >= KHEAP_NUM_CLASSES && base <= KHEAP_NUM_CLASSES + 6,
          "a new heap lists %zu caches, want %d kmalloc classes (and at "
          "most a few built-in caches)",
          base, KHEAP_NUM_CLASSES);
    for (unsigned i = 0; i < KHEAP_NUM_CLASSES; i++) {
        CHECK(rows[i].objsize == class_size(i),
              "row %u (%s): objsize %zu, class rule says %zu", i,
              rows[i].name, rows[i].objsize, class_size(i));
        check_info(&rows[i], "kmalloc row");
    }
    static struct kheap_cache_info builtin[16];
    size_t nb = base - KHEAP_NUM_CLASSES;
    for (size_t i = 0; i < nb; i++) {
        builtin[i] = rows[KHEAP_NUM_CLASSES + i];
        printf("# built-in cache after the kmalloc classes: %s\n",
               builtin[i].name);
    }
    char names[256];
    CHECK(class_size(KHEAP_NUM_CLASSES - 1) == KHEAP_MAX_CLASS,
          "rule's last class %zu", class_size(KHEAP_NUM_CLASSES - 1));

    kheap_cache_t *a = kheap_cache_create(g_heap, "first", 10, 0, NULL, NULL);
    kheap_cache_t *b = kheap_cache_create(g_heap, "second", 20, 0, NULL, NULL);
    kheap_cache_t *c = kheap_cache_create(g_heap, "third", 30, 0, NULL, NULL);
    CHECK(a && b && c, "kheap_cache_create failed%s", "");
    size_t n = kheap_slabinfo(g_heap, rows, MAXROWS);
    CHECK(n == base + 3, "%zu caches listed, %zu before 3 creates", n, base);
    user_rows(rows, n, builtin, nb, names, sizeof names);
    CHECK(!strcmp(names, "first,second,third"),
          "user caches listed as '%s', want 'first,second,third'", names);

    /* A kmalloc row counts its blocks. */
    void *p[5];
    for (int i = 0; i < 5; i++)
        p[i] = kheap_alloc(g_heap, 200); /* class 208 */
    n = kheap_slabinfo(g_heap, rows, MAXROWS);
    unsigned k = 0;
    while (k < KHEAP_NUM_CLASSES && class_size(k) != 208)
        k++;
    /* (its slabs: those of one refill of mag_cap / 2 objects, or 1) */
    size_t refill = (rows[k].mag_cap + 1) / 2 > 5 ? (rows[k].mag_cap + 1) / 2 : 5;
    size_t slabs = (refill + rows[k].objperslab - 1) / rows[k].objperslab;
    CHECK(rows[k].active_objs == 5 && rows[k].active_slabs == slabs,
          "class 208 row: active_objs %zu active_slabs %zu (want 5 and %zu)",
          rows[k].active_objs, rows[k].active_slabs, slabs);
    for (int i = 0; i < 5; i++)
        kheap_free(g_heap, p[i]);

    /* Destroying the middle one keeps the others in creation order. */
    CHECK(kheap_cache_destroy(b) == KHEAP_OK, "destroy failed%s", "");
    kheap_cache_t *d = kheap_cache_create(g_heap, "fourth", 40, 0, NULL, NULL);
    CHECK(d != NULL, "kheap_cache_create failed%s", "");
    n = kheap_slabinfo(g_heap, rows, MAXROWS);
    user_rows(rows, n, builtin, nb, names, sizeof names);
    CHECK(n == base + 3 && !strcmp(names, "first,third,fourth"),
          "after destroying 'second': %zu rows, user caches '%s'", n, names);

    /* A short table is filled as far as it goes; the count is full. */
    memset(rows, 0xab, sizeof rows);
    n = kheap_slabinfo(g_heap, rows, 10);
    CHECK(n == base + 3, "with max 10: returned %zu", n);
    CHECK(rows[9].objsize == class_size(9), "row 9 objsize %zu",
          rows[9].objsize);
    const unsigned char *after = (const unsigned char *)&rows[10];
    CHECK(after[0] == 0xab && after[sizeof rows[10] - 1] == 0xab,
          "kheap_slabinfo(max 10) wrote row 10%s", "");
    n = kheap_slabinfo(g_heap, NULL, 0);
    CHECK(n == base + 3, "kheap_slabinfo(NULL, 0) = %zu", n);

    kheap_cache_destroy(a);
    kheap_cache_destroy(c);
    kheap_cache_destroy(d);
    teardown();
}

/* Check snprintf-like behaviour of a formatter on a few buffer sizes. */
static void check_format(size_t (*fmt)(kheap_t *, char *, size_t, bool),
                         bool all, const char *what, const char *must)
{
    static char full[65536];
    size_t n = fmt(g_heap, full, sizeof full, all);
    CHECK(n > 0 && n < sizeof full, "%s: needs %zu bytes", what, n);
    CHECK(strlen(full) == n, "%s: returned %zu, wrote %zu", what, n,
          strlen(full));
    if (must)
        CHECK(strstr(full, must) != NULL, "%s: text lacks '%s':\n%s", what,
              must, full);
    static const size_t lens[] = {1, 2, 10, 100};
    for (unsigned i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        char buf[128];
        size_t len = lens[i];
        memset(buf, 'Z', sizeof buf);
        size_t m = fmt(g_heap, buf, len, all);
        CHECK(m == n, "%s into %zu bytes returned %zu, full text %zu", what,
              len, m, n);
        size_t w = len - 1 < n ? len - 1 : n;
        CHECK(buf[w] == '\0' && memcmp(buf, full, w) == 0,
              "%s into %zu bytes: not the NUL-terminated prefix", what, len);
        CHECK(buf[len] == 'Z', "%s into %zu bytes wrote byte %zu", what, len,
              len);
    }
    char one = 'Z';
    size_t m = fmt(g_heap, &one, 0, all);
    CHECK(m == n && one == 'Z', "%s with len 0: returned %zu, byte 0x%02x",
          what, m, (unsigned char)one);
}

static size_t format_stats(kheap_t *h, char *buf, size_t len, bool all)
{
    (void)all;
    return kheap_format_stats(h, buf, len);
}

TEST(format_text)
{
    setup();
    kheap_cache_t *c = kheap_cache_create(g_heap, "fmt-cache", 72, 0, NULL,
                                          NULL);
    CHECK(c != NULL, "kheap_cache_create failed%s", "");
    /* With all, an empty cache is listed; without, only caches with slabs. */
    check_format(kheap_format_slabinfo, true, "slabinfo(all)", "fmt-cache");
    static char buf[65536];
    kheap_format_slabinfo(g_heap, buf, sizeof buf, false);
    CHECK(strstr(buf, "fmt-cache") == NULL,
          "slabinfo without all lists the empty cache:\n%s", buf);
    void *o = kheap_cache_alloc(c);
    CHECK(o != NULL, "alloc failed%s", "");
    check_format(kheap_format_slabinfo, false, "slabinfo", "fmt-cache");
    check_format(format_stats, false, "stats", NULL);
    kheap_cache_free(c, o);
    kheap_cache_destroy(c);
    kheap_format_slabinfo(g_heap, buf, sizeof buf, true);
    CHECK(strstr(buf, "fmt-cache") == NULL,
          "slabinfo lists a destroyed cache:\n%s", buf);
    teardown();
}

TEST(names)
{
    setup();
    const char *longname = "a-cache-name-much-longer-than-the-limit";
    kheap_cache_t *c = kheap_cache_create(g_heap, longname, 16, 0, NULL, NULL);
    CHECK(c != NULL, "kheap_cache_create failed%s", "");
    struct kheap_cache_info ci = info(c);
    CHECK(strlen(ci.name) == KHEAP_NAME_MAX - 1 &&
              strncmp(ci.name, longname, KHEAP_NAME_MAX - 1) == 0,
          "name '%s' (%zu chars), want the first %d of '%s'", ci.name,
          strlen(ci.name), KHEAP_NAME_MAX - 1, longname);
    kheap_cache_destroy(c);

    /* The name is copied, not referenced. */
    char name[16] = "copied";
    c = kheap_cache_create(g_heap, name, 16, 0, NULL, NULL);
    CHECK(c != NULL, "kheap_cache_create failed%s", "");
    strcpy(name, "changed");
    CHECK(strcmp(info(c).name, "copied") == 0, "name now '%s'",
          info(c).name);
    kheap_cache_destroy(c);
    teardown();
}

TEST(create_refusals)
{
    setup();
    struct kheap_stats s0, s1;
    kheap_get_stats(g_heap, &s0);
    size_t base = kheap_slabinfo(g_heap, NULL, 0);
    static const size_t bad[][2] = {
        {0, 8},
        {KHEAP_MAX_CLASS + 1, 8},
        {SIZE_MAX, 8},
        {64, 3},
        {64, 24},
        {64, PAGE * 2},
        {64, SIZE_MAX},
    };
    for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kheap_cache_t *c = kheap_cache_create(g_heap, "bad", bad[i][0],
                                              bad[i][1], NULL, NULL);
        CHECK(c == NULL, "kheap_cache_create(size %zu, align %zu) = %p",
              bad[i][0], bad[i][1], (void *)c);
    }
    kheap_get_stats(g_heap, &s1);
    CHECK(s1.metadata_bytes == s0.metadata_bytes &&
              s1.used_bytes == s0.used_bytes,
          "refused creates changed metadata %zu -> %zu, used %zu -> %zu",
          s0.metadata_bytes, s1.metadata_bytes, s0.used_bytes, s1.used_bytes);
    CHECK(kheap_slabinfo(g_heap, NULL, 0) == base,
          "refused creates are listed: %zu caches, %zu before",
          kheap_slabinfo(g_heap, NULL, 0), base);
    CHECK(kt_reports() == 0, "refusals made %lu reports", kt_reports());

    /* The limits themselves are fine; a cache structure is metadata. */
    kheap_cache_t *c = kheap_cache_create(g_heap, "max", KHEAP_MAX_CLASS, PAGE,
                                          ctor, dtor);
    CHECK(c != NULL, "kheap_cache_create(KHEAP_MAX_CLASS, PAGE) failed%s",
          "");
    kheap_get_stats(g_heap, &s1);
    CHECK(s1.metadata_bytes > s0.metadata_bytes,
          "a cache structure is not counted in metadata (%zu -> %zu)",
          s0.metadata_bytes, s1.metadata_bytes);
    CHECK(s1.used_bytes == s0.used_bytes,
          "a cache structure is counted in used_bytes (%zu -> %zu)",
          s0.used_bytes, s1.used_bytes);
    struct obj *o = kheap_cache_alloc(c);
    CHECK(o && (uintptr_t)o % PAGE == 0 && o->magic == MAGIC,
          "object %p of the largest cache", (void *)o);
    kheap_cache_free(c, o);
    CHECK(kheap_cache_destroy(c) == KHEAP_OK, "destroy failed%s", "");
    CHECK(g_dtor_calls == g_ctor_calls, "%" PRIu64 " dtors, %" PRIu64
          " ctors", g_dtor_calls, g_ctor_calls);
    kheap_reclaim(g_heap);
    kheap_get_stats(g_heap, &s1);
    CHECK(s1.metadata_bytes == s0.metadata_bytes,
          "destroyed cache left metadata %zu -> %zu", s0.metadata_bytes,
          s1.metadata_bytes);
    check_counters("refusals");
    teardown();
}

/* The bytes decay works on: in depots, empty slabs and free resident
 * pages. */
static size_t held_below_magazines(void)
{
    struct kheap_stats s;
    kheap_get_stats(g_heap, &s);
    return s.depot_bytes + s.empty_slab_bytes + s.dirty_bytes;
}

/* 20000 small blocks of four classes and one of big bytes (written),
 * allocated and freed: they end in magazines, depots, slabs and pages. */
static void fill_and_free_mixed(size_t big)
{
    enum { N = 20000 };
    static void *objs[N];
    for (int i = 0; i < N; i++) {
        objs[i] = kheap_alloc(g_heap, 64 + (size_t)(i % 4) * 64);
        CHECK(objs[i] != NULL, "alloc %d", i);
    }
    for (int i = 0; i < N; i++)
        kheap_free(g_heap, objs[i]);
    void *b = kheap_alloc(g_heap, big);
    CHECK(b != NULL, "alloc of %zu bytes", big);
    memset(b, 1, big);
    kheap_free(g_heap, b);
}

/* Decay driven by kheap_tick, as a kernel without a port clock drives it
 * (the times are far past the real clock the hosted slow paths read, so
 * only these calls end epochs): memory idle for an epoch goes down every
 * layer, memory reused in every epoch stays. */
TEST(decay_by_tick)
{
    setup();
    enum { BIG = 8u << 20 };
    const uint64_t t0 = (uint64_t)1 << 62;
    CHECK(kheap_set_decay(g_heap, 1000) == KHEAP_OK, "kheap_set_decay%s", "");
    fill_and_free_mixed(BIG);
    void *big;
    struct kheap_stats s0, s1;
    kheap_get_stats(g_heap, &s0);
    CHECK(s0.dirty_bytes >= BIG && s0.depot_bytes + s0.empty_slab_bytes > 0,
          "before: dirty %zu, depots %zu, empty slabs %zu", s0.dirty_bytes, s0.depot_bytes,
          s0.empty_slab_bytes);
    size_t back = 0;
    for (uint64_t k = 0; k < 4; k++)
        back += kheap_tick(g_heap, t0 + k * 1000);
    CHECK(kheap_tick(g_heap, t0 + 3500) == 0, "a tick within the epoch did work%s", "");
    kheap_get_stats(g_heap, &s1);
    printf("# idle: depots %zu -> %zu, empty slabs %zu -> %zu, resident free %zu -> %zu, "
           "purged %zu -> %zu bytes; %zu bytes given back, %llu epochs\n",
           s0.depot_bytes, s1.depot_bytes, s0.empty_slab_bytes, s1.empty_slab_bytes,
           s0.dirty_bytes, s1.dirty_bytes, s0.purged_bytes, s1.purged_bytes, back,
           (unsigned long long)s1.decay_epochs);
    CHECK(s1.depot_bytes == 0 && s1.empty_slab_bytes == 0 && s1.dirty_bytes == 0,
          "after 3 idle epochs: depots %zu, empty slabs %zu, resident free %zu",
          s1.depot_bytes, s1.empty_slab_bytes, s1.dirty_bytes);
    CHECK(s1.decay_epochs >= 3 && s1.purged_total >= BIG, "epochs %llu, purged %llu",
          (unsigned long long)s1.decay_epochs, (unsigned long long)s1.purged_total);
    CHECK(s1.heap_free == s1.dirty_bytes + s1.purged_bytes, "free %zu != %zu + %zu",
          s1.heap_free, s1.dirty_bytes, s1.purged_bytes);
    /* Hysteresis: a block freed and allocated again in every epoch keeps
     * its pages resident. */
    for (uint64_t k = 4; k < 8; k++) {
        big = kheap_alloc(g_heap, BIG);
        CHECK(big != NULL, "alloc of 8 MiB, epoch %d", (int)k);
        memset(big, 2, BIG);
        kheap_free(g_heap, big);
        kheap_tick(g_heap, t0 + k * 1000);
    }
    kheap_get_stats(g_heap, &s1);
    CHECK(s1.dirty_bytes >= BIG, "a block reused every epoch was purged (resident free %zu)",
          s1.dirty_bytes);
    CHECK(kheap_set_decay(g_heap, 0) == KHEAP_OK && kheap_tick(g_heap, t0 + 100000) == 0,
          "decay off still ticks%s", "");
    check_heap("decay");
    teardown();
}

/* A quiet stretch (cache.c, kh_tick): a poll of the slow paths that
 * comes two epochs or more after the last gives back at once what the
 * depots, empty slabs and free pages hold, since every path that moves
 * memory between the layers would have polled in between. Polls that
 * keep coming keep the hysteresis (what was freed within the epoch stays
 * until an epoch has passed without its use), and so does a gap of under
 * two epochs. kh_tick(.., true) stands for the polls, in times far past
 * the real clock of this process's own slow paths (whose polls therefore
 * leave decay_seen alone); kheap_tick, a kernel's call, never ends a
 * quiet stretch. */
TEST(decay_after_quiet_stretch)
{
    setup();
    const size_t BIG = 8u << 20;
    const uint64_t t0 = (uint64_t)1 << 62;
    CHECK(kheap_set_decay(g_heap, 1000) == KHEAP_OK, "kheap_set_decay%s", "");
    kh_tick(g_heap, t0, true);
    kh_tick(g_heap, t0 + 1000, true);
    /* Frees within an epoch, then polls every half epoch: the epoch that
     * saw them in use keeps them. */
    fill_and_free_mixed(BIG);
    size_t before = held_below_magazines();
    kh_tick(g_heap, t0 + 1500, true);
    size_t back = kh_tick(g_heap, t0 + 2000, true);
    size_t kept = held_below_magazines();
    printf("# polls every 500 ms: held %zu, after the epoch's end %zu (%zu given back)\n",
           before, kept, back);
    CHECK(before >= BIG && kept >= BIG, "an epoch that saw the frees gave them back: held %zu, "
          "then %zu", before, kept);
    /* The same frees, then 1.9 epochs without a poll: an epoch's end as
     * any other. */
    kh_tick(g_heap, t0 + 2500, true);
    kh_tick(g_heap, t0 + 3000, true);
    fill_and_free_mixed(BIG);
    struct kheap_stats s0, s1;
    kheap_get_stats(g_heap, &s0);
    kh_tick(g_heap, t0 + 4900, true);
    kheap_get_stats(g_heap, &s1);
    kept = held_below_magazines();
    CHECK(kept >= BIG && s1.decay_epochs - s0.decay_epochs == 1,
          "1.9 epochs without a poll: %zu bytes kept, %llu epochs ended", kept,
          (unsigned long long)(s1.decay_epochs - s0.decay_epochs));
    /* The same, then 2.1 epochs without a poll. */
    kh_tick(g_heap, t0 + 5400, true);
    kh_tick(g_heap, t0 + 5900, true);
    fill_and_free_mixed(BIG);
    before = held_below_magazines();
    kheap_get_stats(g_heap, &s0);
    back = kh_tick(g_heap, t0 + 8000, true);
    kheap_get_stats(g_heap, &s1);
    printf("# one poll after 2.1 epochs without one: held %zu, after it %zu (%zu given back, "
           "%llu epochs)\n",
           before, held_below_magazines(), back,
           (unsigned long long)(s1.decay_epochs - s0.decay_epochs));
    CHECK(before >= BIG && held_below_magazines() == 0,
          "a poll after a quiet stretch left %zu of %zu bytes below the magazines",
          held_below_magazines(), before);
    CHECK(s1.decay_epochs - s0.decay_epochs == 2, "%llu epochs ended (want the due one and the "
          "quiet stretch)", (unsigned long long)(s1.decay_epochs - s0.decay_epochs));
    /* A kernel's kheap_tick after as long a gap ends one epoch only. */
    kh_tick(g_heap, t0 + 8500, true);
    kh_tick(g_heap, t0 + 9000, true);
    fill_and_free_mixed(BIG);
    kheap_get_stats(g_heap, &s0);
    kheap_tick(g_heap, t0 + 11100);
    kheap_get_stats(g_heap, &s1);
    CHECK(held_below_magazines() >= BIG && s1.decay_epochs - s0.decay_epochs == 1,
          "kheap_tick after 2.1 epochs: %zu bytes kept, %llu epochs ended",
          held_below_magazines(), (unsigned long long)(s1.decay_epochs - s0.decay_epochs));
    /* The process's own slow paths poll with the real clock. */
    CHECK(kheap_set_decay(g_heap, 1000) == KHEAP_OK, "kheap_set_decay%s", "");
    uint64_t seen0 = __atomic_load_n(&g_heap->decay_seen, __ATOMIC_RELAXED);
    __atomic_store_n(&g_heap->decay_seen, (uint64_t)0, __ATOMIC_RELAXED);
    fill_and_free_mixed(1u << 20);
    uint64_t seen = __atomic_load_n(&g_heap->decay_seen, __ATOMIC_RELAXED);
    CHECK(seen != 0 && seen < t0, "the slow paths' polls left decay_seen at %llu (it was %llu)",
          (unsigned long long)seen, (unsigned long long)seen0);
    CHECK(kheap_set_decay(g_heap, 0) == KHEAP_OK, "kheap_set_decay 0%s", "");
    check_heap("quiet stretch");
    teardown();
}

/* A miss that the CPU's two magazines settle between them (loaded full
 * and previous empty, or the reverse) swaps them (cpu.c,
 * kh_cpu_alloc_swap and kh_cpu_free_swap): counted as a miss, nothing
 * taken from or given to the depot or the slabs, and one such miss in
 * KH_SWAP_POLL_EVERY polls the clock, so a load whose misses are all
 * swaps still ends decay epochs. */
static struct kh_cc *swap_front(kheap_cache_t *c)
{
    unsigned cpu = kheap_port_cpu_enter();
    struct kh_cc *cc = kh_cc_of(g_heap, c, cpu);
    kheap_port_cpu_exit(cpu);
    return cc;
}

TEST(swaps_settle_misses)
{
    setup();
    enum { CAP = 4, CYCLES = 64, MAXO = 64 };
    struct kheap_cache_tuning tune = {.mag_cap = CAP, .depot_max = 4};
    kheap_cache_t *c = kheap_cache_create_tuned(g_heap, "swaps", 64, 0, NULL, NULL, &tune);
    CHECK(c != NULL, "kheap_cache_create_tuned%s", "");
    void *o[MAXO];
    int n = 0;
    /* Make the previous magazine a real one: more frees than a magazine
     * holds. */
    for (; n < 3 * CAP; n++)
        o[n] = kheap_cache_alloc(c);
    while (n > 0)
        kheap_cache_free(c, o[--n]);
    /* Both magazines empty, then one refill from the slabs, then frees
     * until loaded is full: loaded full and previous empty. */
    struct kh_cc *cc = swap_front(c);
    CHECK(cc != NULL && cc->prev != &kh_mag_sentinel, "the CPU's front of the cache%s", "");
    while (n < MAXO && (kh_cc_held(cc) || cc->prev->n))
        o[n++] = kheap_cache_alloc(c);
    o[n++] = kheap_cache_alloc(c);
    while (n > 1 && kh_cc_held(cc) < CAP)
        kheap_cache_free(c, o[--n]);
    CHECK(kh_cc_held(cc) == CAP && cc->prev->n == 0 && cc->prev != &kh_mag_sentinel,
          "loaded holds %u, previous %u (want %u and 0)", kh_cc_held(cc), cc->prev->n, CAP);
    struct kheap_cache_info i0, i1;
    kheap_cache_info(c, &i0);
    uint32_t full0 = KH_U(c)->nr_full_mags, empty0 = KH_U(c)->nr_empty_mags;
    CHECK(kheap_set_decay(g_heap, 1000) == KHEAP_OK, "kheap_set_decay%s", "");
    __atomic_store_n(&g_heap->decay_seen, (uint64_t)0, __ATOMIC_RELAXED);
    /* Each cycle: a free that swaps (loaded full, previous empty), an
     * allocation that hits, one that swaps back, a free that hits. */
    void *q = o[--n];
    for (int k = 0; k < CYCLES; k++) {
        kheap_cache_free(c, q);
        q = kheap_cache_alloc(c);
        void *x = kheap_cache_alloc(c);
        CHECK(q != NULL && x != NULL && q != x, "cycle %d: allocations %p %p", k, q, x);
        kheap_cache_free(c, x);
    }
    kheap_cache_info(c, &i1);
    uint64_t seen = __atomic_load_n(&g_heap->decay_seen, __ATOMIC_RELAXED);
    printf("# %d cycles: %llu misses, %llu hits, depot %u full and %u empty magazines before "
           "and %u and %u after, decay_seen %s\n",
           CYCLES, (unsigned long long)(i1.cpu_misses - i0.cpu_misses),
           (unsigned long long)(i1.cpu_hits - i0.cpu_hits), full0, empty0,
           KH_U(c)->nr_full_mags, KH_U(c)->nr_empty_mags, seen ? "moved" : "not moved");
    CHECK(i1.cpu_misses - i0.cpu_misses == 2 * CYCLES && i1.cpu_hits - i0.cpu_hits == 2 * CYCLES,
          "%llu misses and %llu hits (want %d of each)",
          (unsigned long long)(i1.cpu_misses - i0.cpu_misses),
          (unsigned long long)(i1.cpu_hits - i0.cpu_hits), 2 * CYCLES);
    CHECK(KH_U(c)->nr_full_mags == full0 && KH_U(c)->nr_empty_mags == empty0 &&
              i1.active_objs == i0.active_objs && i1.num_slabs == i0.num_slabs,
          "a swap moved memory: depot %u/%u -> %u/%u, active %zu -> %zu", full0, empty0,
          KH_U(c)->nr_full_mags, KH_U(c)->nr_empty_mags, i0.active_objs, i1.active_objs);
    CHECK(kh_cc_held(cc) == CAP && cc->prev->n == 0, "loaded %u, previous %u after the cycles",
          kh_cc_held(cc), cc->prev->n);
    CHECK(seen != 0, "%d swaps and no poll of the clock", 2 * CYCLES);
    CHECK(kheap_set_decay(g_heap, 0) == KHEAP_OK, "kheap_set_decay 0%s", "");
    kheap_cache_free(c, q);
    while (n > 0)
        kheap_cache_free(c, o[--n]);
    check_heap("swaps");
    kheap_cache_destroy(c);
    teardown();
}

/* A destructor may call kheap_get_stats (kheap.h: no lock is held while
 * it runs), which takes the heap's cache-list lock: whether its slab goes
 * back through kheap_reclaim, the decay walk (kheap_tick) or
 * kheap_cache_destroy, all of which walk the user caches holding that
 * lock. A deadlock ends in the alarm, reported as such. */
static uint64_t g_stats_dtors;
static size_t g_stats_seen;

static void stats_dtor(void *o)
{
    dtor(o);
    struct kheap_stats s;
    kheap_get_stats(g_heap, &s);
    g_stats_seen = s.heap_total;
    g_stats_dtors++;
}

static const char *g_alarm_phase = "";

static void dtor_deadlock(int sig)
{
    static const char a[] = "not ok - dtor_may_read_stats: a destructor calling kheap_get_stats "
                            "did not return within 30 s (deadlock) in ";
    (void)sig;
    if (write(1, a, sizeof a - 1) < 0 ||
        write(1, g_alarm_phase, strlen(g_alarm_phase)) < 0 || write(1, "\n", 1) < 0)
        _exit(2);
    _exit(1);
}

/* Fill, then free, slabs' worth of objects of c: the objects wait in the
 * magazines and the depot, their slabs hold nothing live. */
static void fill_and_free(kheap_cache_t *c, size_t slabs)
{
    static void *o[MAX_OBJS];
    size_t n = info(c).objperslab * slabs;
    CHECK(n <= MAX_OBJS, "%zu objects", n);
    for (size_t i = 0; i < n; i++) {
        o[i] = kheap_cache_alloc(c);
        CHECK(o[i] != NULL, "alloc #%zu failed", i);
    }
    for (size_t i = 0; i < n; i++)
        kheap_cache_free(c, o[i]);
}

TEST(dtor_may_read_stats)
{
    setup();
    signal(SIGALRM, dtor_deadlock);
    g_stats_dtors = 0;
    kheap_cache_t *c = kheap_cache_create(g_heap, "dtor-stats", 500, 0, ctor, stats_dtor);
    CHECK(c != NULL, "kheap_cache_create failed%s", "");

    g_alarm_phase = "kheap_reclaim";
    alarm(30);
    fill_and_free(c, 64);
    kheap_reclaim(g_heap);
    alarm(0);
    CHECK(g_stats_dtors > 0 && g_stats_dtors == g_dtor_calls && info(c).num_slabs == 0,
          "reclaim: %" PRIu64 " destructors read the statistics, %" PRIu64
          " ran, %zu slabs left",
          g_stats_dtors, g_dtor_calls, info(c).num_slabs);

    /* Decay: idle epochs take the depot's magazines to the slabs, then
     * the empty slabs to the pages (kheap_tick with times far past the
     * clock, as in decay_by_tick). */
    g_alarm_phase = "kheap_tick";
    const uint64_t t0 = (uint64_t)1 << 62;
    uint64_t before = g_stats_dtors;
    CHECK(kheap_set_decay(g_heap, 1000) == KHEAP_OK, "kheap_set_decay%s", "");
    alarm(30);
    fill_and_free(c, 64);
    for (uint64_t k = 0; k < 4; k++)
        kheap_tick(g_heap, t0 + k * 1000);
    alarm(0);
    CHECK(kheap_set_decay(g_heap, 0) == KHEAP_OK, "kheap_set_decay 0%s", "");
    CHECK(g_stats_dtors > before, "decay ran no destructor (%" PRIu64 " before and after)",
          before);

    g_alarm_phase = "kheap_cache_destroy";
    before = g_stats_dtors;
    alarm(30);
    fill_and_free(c, 64);
    CHECK(kheap_cache_destroy(c) == KHEAP_OK, "destroy failed%s", "");
    alarm(0);
    signal(SIGALRM, SIG_DFL);
    CHECK(g_stats_dtors > before && g_dtor_calls == g_ctor_calls && g_stats_seen > 0,
          "destroy: %" PRIu64 " destructors read the statistics (before %" PRIu64
          "), %" PRIu64 " dtors for %" PRIu64 " ctors, heap_total %zu",
          g_stats_dtors, before, g_dtor_calls, g_ctor_calls, g_stats_seen);
    check_counters("dtor_may_read_stats");
    teardown();
}

/* kheap_cache_destroy on one thread while another runs kheap_reclaim
 * over and over: a reclaim that took empty slabs of the cache before it
 * left the list runs their destructors after letting the list go, and
 * the cache must outlive that (under ASan or TSan a freed cache read by
 * the destructors' walk shows): whichever ends last gives it back. */
static unsigned g_reclaiming;

static void slow_dtor(void *o)
{
    (void)o;
    __atomic_fetch_add(&g_dtor_calls, 1, __ATOMIC_RELAXED);
#if KHEAP_VALGRIND
    /* valgrind runs one thread at a time: a yield here would hand each
     * destructor's turn to destroy's wait, a whole time slice each. */
    for (volatile int i = 0; i < 100; i++)
        ;
#else
    sched_yield();
#endif
}

static void *reclaim_loop(void *arg)
{
    (void)arg;
    while (__atomic_load_n(&g_reclaiming, __ATOMIC_ACQUIRE))
        kheap_reclaim(g_heap);
    return NULL;
}

TEST(destroy_during_reclaim)
{
    setup();
    pthread_t t;
    __atomic_store_n(&g_reclaiming, 1u, __ATOMIC_RELEASE);
    CHECK(pthread_create(&t, NULL, reclaim_loop, NULL) == 0, "pthread_create%s", "");
    uint64_t made = 0;
    /* Under valgrind, which runs one thread at a time, fewer rounds. */
    int rounds = KHEAP_VALGRIND ? 20 : 200;
    for (int round = 0; round < rounds; round++) {
        kheap_cache_t *c = kheap_cache_create(g_heap, "dtor-race", 200, 0, NULL, slow_dtor);
        CHECK(c != NULL, "create, round %d", round);
        static void *o[512];
        size_t n = info(c).objperslab * 8;
        if (n > 512)
            n = 512;
        for (size_t i = 0; i < n; i++) {
            o[i] = kheap_cache_alloc(c);
            CHECK(o[i] != NULL, "alloc #%zu, round %d", i, round);
        }
        made += info(c).num_slabs * info(c).objperslab;
        for (size_t i = 0; i < n; i++)
            kheap_cache_free(c, o[i]);
        CHECK(kheap_cache_destroy(c) == KHEAP_OK, "destroy, round %d", round);
    }
    __atomic_store_n(&g_reclaiming, 0u, __ATOMIC_RELEASE);
    pthread_join(t, NULL);
    /* (No constructor: a destructor runs on each carved slot; at least
     * the slots of the slabs counted at their fullest.) */
    CHECK(__atomic_load_n(&g_dtor_calls, __ATOMIC_RELAXED) > 0,
          "no destructor ran for %" PRIu64 " slots", made);
    reset_counters();
    teardown();
}

/* kheap_cache_destroy while another thread's kheap_reclaim runs a
 * destructor of the cache that waits for destroy to return: destroy must
 * not wait for the walk (it would never end, the alarm says so); it
 * hands the cache's end to the walk, which gives the cache back after
 * its last destructor. */
static pthread_t g_walker;
static unsigned g_in_dtor, g_destroyed, g_armed;

static void waiting_dtor(void *o)
{
    (void)o;
    __atomic_fetch_add(&g_dtor_calls, 1, __ATOMIC_RELAXED);
    if (!__atomic_load_n(&g_armed, __ATOMIC_ACQUIRE) || !pthread_equal(pthread_self(), g_walker))
        return;
    __atomic_store_n(&g_in_dtor, 1u, __ATOMIC_RELEASE);
    while (!__atomic_load_n(&g_destroyed, __ATOMIC_ACQUIRE))
        sched_yield();
}

static void *reclaim_once(void *arg)
{
    (void)arg;
    kheap_reclaim(g_heap);
    return NULL;
}

static void destroy_waited(int sig)
{
    static const char a[] = "not ok - destroy_hands_over_to_a_walk: kheap_cache_destroy "
                            "waited for another thread's destructor (30 s)\n";
    (void)sig;
    if (write(1, a, sizeof a - 1) < 0)
        _exit(2);
    _exit(1);
}

TEST(destroy_hands_over_to_a_walk)
{
    setup();
    __atomic_store_n(&g_in_dtor, 0u, __ATOMIC_RELAXED);
    __atomic_store_n(&g_destroyed, 0u, __ATOMIC_RELAXED);
    __atomic_store_n(&g_armed, 0u, __ATOMIC_RELAXED);
    kheap_cache_t *c = kheap_cache_create(g_heap, "dtor-handover", 200, 0, NULL, waiting_dtor);
    CHECK(c != NULL, "kheap_cache_create failed%s", "");
    /* Objects in this thread's magazines and the depot, whose slabs a
     * reclaim on the other thread gives back, destructors and all. */
    fill_and_free(c, 64);
    __atomic_store_n(&g_armed, 1u, __ATOMIC_RELEASE);
    CHECK(pthread_create(&g_walker, NULL, reclaim_once, NULL) == 0, "pthread_create%s", "");
    while (!__atomic_load_n(&g_in_dtor, __ATOMIC_ACQUIRE))
        sched_yield();
    signal(SIGALRM, destroy_waited);
    alarm(30);
    CHECK(kheap_cache_destroy(c) == KHEAP_OK, "destroy failed%s", "");
    alarm(0);
    signal(SIGALRM, SIG_DFL);
    CHECK(kheap_cache_destroy(c) == KHEAP_EINVAL,
          "a second destroy of a cache a walk has yet to give back was not refused%s", "");
    __atomic_store_n(&g_destroyed, 1u, __ATOMIC_RELEASE);
    pthread_join(g_walker, NULL);
    __atomic_store_n(&g_armed, 0u, __ATOMIC_RELEASE);
    const void *at = NULL;
    const char *why = kheap_check(g_heap, &at);
    CHECK(why == NULL, "kheap_check after the walk gave the cache back: %s at %p", why, at);
    reset_counters();
    teardown(); /* kheap_fini: no cache left for a walk to give back */
}

int main(void)
{
    kt_capture_reports(NULL);
    RUN(ctor_once_per_slot);
    RUN(state_survives_exactly);
    RUN(dtor_only_when_slabs_go);
    RUN(alignment);
    RUN(slabinfo_rows);
    RUN(format_text);
    RUN(names);
    RUN(create_refusals);
    RUN(decay_by_tick);
    RUN(decay_after_quiet_stretch);
    RUN(swaps_settle_misses);
    RUN(dtor_may_read_stats);
    RUN(destroy_during_reclaim);
    RUN(destroy_hands_over_to_a_walk);
    return harness_done();
}
