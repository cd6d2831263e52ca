/*
 * test_layers.c - unit tests of the core's layers through their internal
 * interfaces: size classes, bins, slab layouts, region lookup, page runs
 * (split, coalesce, aligned runs, in-place resize) and the metadata
 * budget.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <string.h>

#include "harness.h"
#include "kh_internal.h"
#include "kh_fast.h"


static void check_clean(kheap_t *h)
{
    const void *addr = NULL;
    const char *msg = kheap_check_quiescent(h, &addr);
    CHECK(msg == NULL, "kheap_check: %s at %p", msg, addr);
}

/* kheap_check must notice damage: break one thing at a time, expect the
 * walk to name it, repair, expect it clean again. */
static void expect_problem(kheap_t *h, const char *what)
{
    const void *addr = NULL;
    const char *msg = kheap_check_quiescent(h, &addr);
    CHECK(msg != NULL, "kheap_check missed: %s", what);
    printf("# %s -> \"%s\" at %p\n", what, msg, addr);
}

TEST(class_map_is_smallest_fitting_class)
{
    size_t prev = 0;
    for (unsigned i = 0; i < KHEAP_NUM_CLASSES; i++) {
        size_t c = kh_class_size(i);
        CHECK(c > prev, "class %u size %zu not above previous %zu", i, c, prev);
        CHECK(c % 8 == 0, "class %u size %zu not a multiple of 8", i, c);
        prev = c;
    }
    CHECK(prev == KHEAP_MAX_CLASS, "largest class %zu != %zu", prev, (size_t)KHEAP_MAX_CLASS);
    unsigned cls = 0;
    for (size_t n = 0; n <= KHEAP_MAX_CLASS; n++) {
        while (kh_class_size(cls) < (n ? n : 1))
            cls++;
        CHECK(kh_class_of(n) == cls, "size %zu maps to class %u, want %u", n, kh_class_of(n),
              cls);
    }
}

/* The sized free's hit path tests a size against kh_cc_bytes[k] and
 * [k + 1] for the front cc[k] a page's tag names: that must be the class
 * map's answer for every size, and no size of the front of no class, nor
 * of run_front (the tag of a large block). */
TEST(cc_bytes_bound_each_class)
{
    CHECK(kh_cc_bytes[0] == 0 && kh_cc_bytes[1] == 0, "kh_cc_bytes starts %zu %zu, want 0 0",
          kh_cc_bytes[0], kh_cc_bytes[1]);
    CHECK(KH_RUN_TAG / sizeof(struct kh_cc) == KH_CC_COUNT && kh_cc_bytes[KH_CC_COUNT + 1] == 0,
          "run_front's bound is %zu, want 0", kh_cc_bytes[KH_CC_COUNT + 1]);
    for (unsigned i = 0; i < KHEAP_NUM_CLASSES; i++)
        CHECK(kh_cc_bytes[KH_CC(i) + 1] == kh_class_size(i), "kh_cc_bytes for class %u: %zu, want %zu",
              i, kh_cc_bytes[KH_CC(i) + 1], kh_class_size(i));
    /* The bounds rise, so a size inside its class's front and outside
     * both neighbours is inside no other. */
    for (size_t n = 1; n <= KHEAP_MAX_CLASS + 1; n++) {
        unsigned want = n <= KHEAP_MAX_CLASS ? KH_CC(kh_class_of(n)) : KH_CC_COUNT;
        for (unsigned k = want > 0 ? want - 1 : 0; k <= want + 1 && k < KH_CC_COUNT; k++) {
            bool in = kh_cc_bytes[k] < n && n <= kh_cc_bytes[k + 1];
            CHECK(in == (k == want), "size %zu against front %u: %d, its class's front is %u", n,
                  k, in, want);
        }
    }
}

TEST(internal_waste_at_most_one_eighth_from_64)
{
    for (unsigned i = 1; i < KHEAP_NUM_CLASSES; i++) {
        size_t c = kh_class_size(i), below = kh_class_size(i - 1);
        if (c <= 64)
            continue;
        /* Worst request: one byte above the class below. */
        size_t worst = c - (below + 1);
        CHECK(worst * 8 <= c, "class %zu wastes %zu of %zu bytes (> 12.5%%)", c, worst, c);
    }
}

/* The free path's slot test (one multiply and one compare: slab.c,
 * kh_fast.h) agrees with a division for every offset of every class's
 * slab and of the page after it, and for a spread of other slot sizes
 * and object counts. */
TEST(slot_test_matches_division)
{
    struct kt_heap t;
    kt_heap_open(&t, 4u << 20);
    kheap_t *h = t.h;
    for (unsigned i = 0; i < KHEAP_NUM_CLASSES; i++) {
        const struct kheap_cache *c = &h->kmalloc[i];
        for (uint32_t off = 0; off < ((uint32_t)c->pages + 1) * KH_PAGE; off++) {
            bool fast = kh_slot_start(c, off);
            bool slot = off % c->slot == 0 && off / c->slot < c->objs;
            CHECK(fast == slot, "class %u offset %u: test says %d", c->slot, off, fast);
        }
    }
    /* Fewer slot sizes in the slow (valgrind, check-everything) builds. */
    uint32_t step = kt_env_long("KHEAP_TEST_SMALL", 0) ? 1000 : 8;
    for (uint32_t size = 8; size <= 40000; size += step) {
        /* Every size, and the power of two at or below it. */
        uint32_t sizes[2] = {size, 1u << kh_log2(size)};
        for (int k = 0; k < 2; k++) {
            uint32_t slot = sizes[k], objs = 64 * 4096 / slot - (slot & 1);
            uint64_t divtest = UINT64_MAX / slot + 1 + (kh_is_pow2(slot) ? 1 : 0);
            uint64_t lim = (uint64_t)objs * (divtest * slot);
            for (uint32_t off = 0; off < 65 * 4096; off += 4) {
                bool fast = (uint64_t)off * divtest < lim;
                bool want = off % slot == 0 && off / slot < objs;
                CHECK(fast == want, "slot %u offset %u: test says %d", slot, off, fast);
            }
        }
    }
    kt_heap_close(&t);
}

TEST(bins_partition_lengths)
{
    for (size_t n = 1; n < (1u << 20); n++) {
        unsigned b = kh_bin_of(n);
        CHECK(b < KH_NBINS, "length %zu gets bin %u", n, b);
        CHECK(kh_bin_min(b) <= n && n < kh_bin_min(b + 1),
              "length %zu in bin %u [%zu, %zu)", n, b, kh_bin_min(b), kh_bin_min(b + 1));
    }
    CHECK(kh_bin_of(UINT32_MAX) < KH_NBINS, "largest run length bin %u", kh_bin_of(UINT32_MAX));
    for (unsigned b = 1; b + 1 < KH_NBINS; b++)
        CHECK(kh_bin_of(kh_bin_min(b)) == b, "bin %u minimum %zu maps to %u", b, kh_bin_min(b),
              kh_bin_of(kh_bin_min(b)));
}

TEST(slab_layouts_waste_at_most_one_eighth)
{
    struct kt_heap t;
    kt_heap_open(&t, 4u << 20);
    kheap_t *h = t.h;
    for (unsigned i = 0; i < KHEAP_NUM_CLASSES; i++) {
        struct kheap_cache *c = &h->kmalloc[i];
        size_t bytes = (size_t)c->pages * KH_PAGE;
        CHECK(c->objs >= 1, "class %u has no objects per slab", c->size);
        CHECK((size_t)c->objs * c->slot + c->bitmap_bytes <= bytes,
              "class %u: %u objects of %u + bitmap %u exceed %zu", c->size, c->objs, c->slot,
              c->bitmap_bytes, bytes);
        CHECK((bytes - (size_t)c->objs * c->slot) * 8 <= bytes,
              "class %u: slab of %u pages leaves %zu of %zu bytes", c->size, c->pages,
              bytes - (size_t)c->objs * c->slot, bytes);
        CHECK(c->slot == c->size, "kmalloc class %u has slot %u", c->size, c->slot);
    }
    kt_heap_close(&t);
}

/* The free hit path (kh_fast.h) takes a block of every kmalloc class,
 * one-page slabs and multi-page slabs alike, and refuses every pointer
 * inside a block, page boundaries inside blocks of multi-page slabs
 * included: those go to the slow path, which reports them. */
TEST(free_hit_every_class)
{
#if KH_FAST && KHEAP_PERCPU
    struct kt_heap t;
    kt_heap_open(&t, 32u << 20);
    kheap_t *h = t.h;
    unsigned multi = 0, crossings = 0;
    for (unsigned i = 0; i < KHEAP_NUM_CLASSES; i++) {
        size_t size = kh_class_size(i);
        multi += h->kmalloc[i].pages > 1;
        kheap_free(h, kheap_alloc(h, size)); /* the CPU's magazine is loaded */
        for (int k = 0; k < 64; k++) {
            void *p = kheap_alloc(h, size);
            CHECK(p != NULL, "kheap_alloc(%zu) = NULL", size);
            /* The allocation popped one: the push has room. */
            CHECK(kh_hit_free(h->cpu, &h->window, p), "class %zu: free of %p missed the hit path",
                  size, p);
        }
        /* The sized free hit too, with the class's size; another class's
         * size misses (the slow path tells the two apart). */
        void *sp = kheap_alloc(h, size);
        CHECK(sp != NULL, "kheap_alloc(%zu) = NULL", size);
        if (i > 0)
            CHECK(!kh_hit_free_sized(h->cpu, &h->window, sp, kh_class_size(i - 1)),
                  "class %zu: a sized free of %p as %zu hit", size, sp, kh_class_size(i - 1));
        CHECK(kh_hit_free_sized(h->cpu, &h->window, sp, size),
              "class %zu: sized free of %p missed the hit path", size, sp);
        void *held[16];
        for (int k = 0; k < 16; k++) {
            unsigned char *p = held[k] = kheap_alloc(h, size);
            CHECK(p != NULL, "kheap_alloc(%zu) = NULL", size);
            CHECK(!kh_hit_free(h->cpu, &h->window, p + 8), "class %zu: interior %p hit",
                  size, (void *)(p + 8));
            uintptr_t b = kh_align_up((uintptr_t)p + 1, KH_PAGE);
            if (b - (uintptr_t)p < size) {
                crossings++;
                CHECK(!kh_hit_free(h->cpu, &h->window, (void *)b),
                      "class %zu: page boundary %p inside %p hit", size, (void *)b, (void *)p);
            }
        }
        for (int k = 0; k < 16; k++)
            kheap_free(h, held[k]);
    }
    CHECK(multi > 0 && crossings > 0, "%u classes of multi-page slabs, %u boundaries inside "
          "blocks", multi, crossings);
    kheap_reclaim(h);
    check_clean(h);
    kt_heap_close(&t);
#else
    printf("# no free hit path in this build\n");
#endif
}

/* kheap_check_quiescent reads the page table of the slabs of kmalloc
 * classes: a page whose tag names another class, or whose offset in its
 * slab is wrong (the free hit path's slot test would take the wrong
 * slots), is found. */
TEST(page_table_checked)
{
    struct kt_heap t;
    kt_heap_open(&t, 8u << 20);
    kheap_t *h = t.h;
    unsigned cls = 0;
    while (cls < KHEAP_NUM_CLASSES && h->kmalloc[cls].pages < 2)
        cls++;
    CHECK(cls < KHEAP_NUM_CLASSES, "no class of multi-page slabs%s", "");
    void *p = kheap_alloc(h, kh_class_size(cls));
    CHECK(p != NULL, "kheap_alloc(%zu) = NULL", kh_class_size(cls));
    struct kh_page *d = kh_slab_head(kh_page_of(h, (uintptr_t)p));
    size_t i = (size_t)(d - h->regions[0].pages) + 1; /* the slab's second page */
    CHECK(kheap_check_quiescent(h, NULL) == NULL, "the heap is damaged before%s", "");
    h->window.pt[i].rebase += KH_PAGE;
    expect_problem(h, "a slab page's offset in its slab wrong");
    h->window.pt[i].rebase -= KH_PAGE;
    h->window.pt[i].tag = (uint16_t)(h->window.pt[i].tag + sizeof(struct kh_cc));
    expect_problem(h, "a slab page tagged with another class");
    h->window.pt[i].tag = (uint16_t)(h->window.pt[i].tag - sizeof(struct kh_cc));
    kheap_free(h, p);
    kheap_reclaim(h);
    check_clean(h);
    kt_heap_close(&t);
}

/* The hit paths take large blocks up to KHEAP_RUN_CACHE_MAX in and out
 * of the CPU's cache of them, once its first large free made it; a second
 * free, or a pointer inside, misses (the slow path reports it). */
TEST(hit_paths_cache_large_blocks)
{
#if KH_RUNS
    /* Each CPU's cache holds KHEAP_RUN_CACHE_BYTES on a heap this large
     * (all of them together at most an eighth of it). */
    struct kt_heap t;
    kt_heap_open(&t, (size_t)KHEAP_RUN_CACHE_BYTES * 8 * KHEAP_MAX_CPUS);
    kheap_t *h = t.h;
    kheap_set_decay(h, 0);
    kheap_free(h, kheap_alloc(h, KHEAP_MAX_CLASS + 1)); /* the cache is made */
    size_t sizes[] = {KHEAP_MAX_CLASS + 1, 100000, KHEAP_RUN_CACHE_MAX};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        /* A bin's cap starts at 0: the first free of its page count on
         * a CPU takes the slow path, which raises the cap. */
        unsigned char *first = kheap_alloc(h, sizes[k]);
        CHECK(first != NULL, "kheap_alloc(%zu) = NULL", sizes[k]);
        CHECK(k == 0 || !kh_hit_free(h->cpu, &h->window, first),
              "%zu: the first free of its page count hit", sizes[k]);
        kheap_free(h, first);
        void *again = NULL;
        CHECK(kh_hit_alloc(h->cpu, &h->window, sizes[k], &again) && again == first,
              "%zu: the slow path did not cache the first free", sizes[k]);
        kheap_free(h, again);
        unsigned char *p = kheap_alloc(h, sizes[k]);
        CHECK(p != NULL, "kheap_alloc(%zu) = NULL", sizes[k]);
        CHECK(!kh_hit_free(h->cpu, &h->window, p + KH_PAGE), "%zu: inside the block hit",
              sizes[k]);
        CHECK(kh_hit_free(h->cpu, &h->window, p), "%zu: the free missed", sizes[k]);
        CHECK(!kh_hit_free(h->cpu, &h->window, p), "%zu: the second free hit", sizes[k]);
        void *q = NULL;
        CHECK(kh_hit_alloc(h->cpu, &h->window, sizes[k], &q) && q == p,
              "%zu: the allocation missed or took %p, not %p", sizes[k], q, (void *)p);
        CHECK(!kh_hit_alloc(h->cpu, &h->window, sizes[k], &q), "%zu: a second block hit",
              sizes[k]);
        /* The sized free too, with a size of the block's page count;
         * a size of another page count misses (the slow path reports
         * it), and so does a second free. */
        size_t other = sizes[k] - KH_PAGE > KHEAP_MAX_CLASS ? sizes[k] - KH_PAGE
                                                            : sizes[k] + KH_PAGE;
        CHECK(!kh_hit_free_sized(h->cpu, &h->window, p, other),
              "%zu: a sized free as %zu bytes hit", sizes[k], other);
        CHECK(kh_hit_free_sized(h->cpu, &h->window, p, sizes[k]), "%zu: the sized free missed",
              sizes[k]);
        CHECK(!kh_hit_free_sized(h->cpu, &h->window, p, sizes[k]),
              "%zu: the second sized free hit", sizes[k]);
        CHECK(kh_hit_alloc(h->cpu, &h->window, sizes[k], &q) && q == p,
              "%zu: the allocation after the sized free missed or took %p", sizes[k], q);
        kheap_free(h, p);
    }
    void *big = kheap_alloc(h, KHEAP_RUN_CACHE_MAX + 1);
    CHECK(big && !kh_hit_free(h->cpu, &h->window, big), "a block above the cached sizes hit%s",
          "");
    kheap_free(h, big);

    /* kheap_check_quiescent finds damage to a block in this CPU's cache
     * (its tag, its page count in the window) and to the cache's count. */
    void *cached = kheap_alloc(h, 50000);
    kheap_free(h, cached);
    struct kh_page *cd = kh_page_of(h, (uintptr_t)cached);
    size_t ci = (size_t)(cd - h->regions[0].pages);
    h->window.pt[ci].tag = KH_RUN_TAG;
    expect_problem(h, "cached large block tagged live");
    h->window.pt[ci].tag = 0;
    h->window.pt[ci].run++;
    expect_problem(h, "cached large block's page count wrong");
    h->window.pt[ci].run--;
    unsigned cpu = kheap_port_cpu_enter();
    struct kh_runcache *rc = h->cpu[cpu]->run_front.runs;
    kheap_port_cpu_exit(cpu);
    struct kh_runbin *bin = KH_RUN_BIN(rc, cd->npages);
    bin->frees++;
    expect_problem(h, "cache of large blocks miscounted");
    bin->frees--;
    uint64_t cap = bin->cap;
    bin->cap = 0;
    expect_problem(h, "bin of large blocks above its cap");
    bin->cap = cap;
    rc->capped += cd->npages;
    expect_problem(h, "caps of large blocks miscounted");
    rc->capped -= cd->npages;
    check_clean(h);

    kheap_reclaim(h);
    check_clean(h);
    kt_heap_close(&t);
#else
    printf("# no caches of large blocks in this build\n");
#endif
}

TEST(power_of_two_classes_aligned_to_size)
{
    struct kt_heap t;
    kt_heap_open(&t, 8u << 20);
    kheap_t *h = t.h;
    for (size_t sz = 16; sz <= KHEAP_MAX_CLASS; sz *= 2) {
        void *p[4];
        for (int k = 0; k < 4; k++) {
            p[k] = kheap_alloc(h, sz);
            CHECK(p[k] && ((uintptr_t)p[k] & (sz - 1)) == 0, "kheap_alloc(%zu) = %p", sz, p[k]);
        }
        for (int k = 0; k < 4; k++)
            kheap_free(h, p[k]);
    }
    kheap_reclaim(h);
    check_clean(h);
    kt_heap_close(&t);
}

TEST(region_lookup_bounds_and_many_regions)
{
    struct kt_heap t;
    kt_heap_open(&t, 1u << 20);
    kheap_t *h = t.h;
    struct kh_region *r0 = &h->regions[0];
    CHECK(kh_region_of(h, r0->start) == r0, "first page not found");
    CHECK(kh_region_of(h, r0->end - 1) == r0, "last byte not found");
    CHECK(kh_region_of(h, r0->end) == NULL, "byte past the end found");
    CHECK(kh_region_of(h, r0->start - 1) == NULL, "metadata byte found as a page");
    /* Regions added out of address order are still found. */
    char *big = kt_map(40u << 20);
    CHECK(big != NULL, "mmap of 40 MiB failed%s", "");
    for (int k = 7; k >= 0; k--) {
        int err = kheap_add_region(h, big + (size_t)k * (5u << 20), 4u << 20);
        CHECK(err == KHEAP_OK, "add_region %d: %s", k, kheap_strerror(err));
    }
    CHECK(h->nregions == 9, "nregions %u", h->nregions);
    for (int k = 0; k < 8; k++) {
        uintptr_t a = (uintptr_t)big + (size_t)k * (5u << 20) + (2u << 20);
        struct kh_region *r = kh_region_of(h, a);
        CHECK(r && r->start <= a && a < r->end, "address in region %d not found", k);
        CHECK(kh_region_of(h, (uintptr_t)big + (size_t)k * (5u << 20) + (4u << 20) + 100) == NULL,
              "gap after region %d found", k);
    }
    CHECK(kheap_add_region(h, big + 1000, 1u << 20) == KHEAP_EOVERLAP, "overlap accepted");
    check_clean(h);
    kt_unmap(big, 40u << 20);
    kt_heap_close(&t);
}

/* Run operations straight on the page layer. */
static struct kh_page *run_alloc(kheap_t *h, size_t n, size_t align)
{
    kh_lock(&h->page_lock);
    struct kh_page *d = kh_run_alloc(h, n, align, KH_PG_LARGE, false);
    kh_unlock(&h->page_lock);
    return d;
}
static void run_free(kheap_t *h, struct kh_page *d)
{
    kh_lock(&h->page_lock);
    kh_run_free(h, d);
    kh_unlock(&h->page_lock);
}
static size_t free_runs(kheap_t *h)
{
    size_t n = 0;
    for (unsigned b = 0; b < KH_NBINS; b++)
        for (struct kh_page *d = h->bins[b]; d; d = d->next)
            n++;
    return n;
}

/* Runs allocated directly are not accounted as user bytes; kheap_check
 * would flag that, so these tests compare free_pages and runs instead. */
TEST(runs_split_and_coalesce_both_sides)
{
    struct kt_heap t;
    kt_heap_open(&t, 4u << 20);
    kheap_t *h = t.h;
    size_t all = h->free_pages;
    CHECK(free_runs(h) == 1, "fresh heap has %zu free runs", free_runs(h));
    struct kh_page *a = run_alloc(h, 3, 0), *b = run_alloc(h, 5, 0), *c = run_alloc(h, 7, 0);
    CHECK(a && b && c, "runs of 3, 5, 7 pages: %p %p %p", (void *)a, (void *)b, (void *)c);
    CHECK(h->free_pages == all - 15, "free pages %zu, want %zu", h->free_pages, all - 15);
    run_free(h, b);
    CHECK(free_runs(h) == 2, "hole + rest: %zu runs", free_runs(h));
    run_free(h, a); /* merges right with b's hole */
    CHECK(free_runs(h) == 2, "a+b merged: %zu runs", free_runs(h));
    run_free(h, c); /* merges left with a+b and right with the rest */
    CHECK(free_runs(h) == 1 && h->free_pages == all, "all merged: %zu runs, %zu pages",
          free_runs(h), h->free_pages);
    kt_heap_close(&t);
}

/* A run takes the shortest free run of its own bin that holds it before
 * it splits a longer one (pages.c: a program allocating blocks of a few
 * sizes in turn otherwise walks up into fresh pages), and a run of its
 * bin too short for it is left alone. */
static size_t page_of(kheap_t *h, const struct kh_page *d)
{
    return (size_t)(d - h->regions[0].pages);
}

TEST(runs_fit_in_their_own_bin_first)
{
    struct kt_heap t;
    kt_heap_open(&t, 4u << 20);
    kheap_t *h = t.h;
    size_t all = h->free_pages;
    CHECK(kh_bin_min(kh_bin_of(17)) < 17 && kh_bin_of(16) == kh_bin_of(17) &&
              kh_bin_of(70) == kh_bin_of(71) && kh_bin_of(17) != kh_bin_of(70),
          "bins: 16 and 17 pages share one, 70 and 71 another");
    /* Runs of 17, 70, 71 and 16 pages, each followed by a live page that
     * keeps the free ones apart. */
    static const size_t len[4] = {17, 70, 71, 16};
    struct kh_page *r[4], *sep[4];
    for (int k = 0; k < 4; k++) {
        r[k] = run_alloc(h, len[k], 0);
        sep[k] = run_alloc(h, 1, 0);
        CHECK(r[k] && sep[k], "run of %zu pages and its separator: %p %p", len[k],
              (void *)r[k], (void *)sep[k]);
    }
    run_free(h, r[1]);
    run_free(h, r[0]);
    struct kh_page *c = run_alloc(h, 17, 0);
    CHECK(c == r[0], "17 pages came from page %zu (%s), not from the free run of 17",
          page_of(h, c), c == r[1] ? "the free run of 70" : "elsewhere");
    /* The run of 71 is the bin's first; 70 takes the shortest. */
    run_free(h, r[2]);
    struct kh_page *d = run_alloc(h, 70, 0);
    CHECK(d == r[1], "70 pages came from page %zu (%s), not from the free run of 70",
          page_of(h, d), d == r[2] ? "the bin's first run, of 71" : "elsewhere");
    /* A free run of 16 in 17's bin does not hold 17: the good fit does. */
    run_free(h, r[3]);
    struct kh_page *e = run_alloc(h, 17, 0);
    CHECK(e && e != r[3], "17 pages from page %zu, the free run of 16",
          e ? page_of(h, e) : (size_t)0);
    run_free(h, c);
    run_free(h, d);
    run_free(h, e);
    for (int k = 0; k < 4; k++)
        run_free(h, sep[k]);
    CHECK(free_runs(h) == 1 && h->free_pages == all, "all merged: %zu runs, %zu pages",
          free_runs(h), h->free_pages);
    kt_heap_close(&t);
}

/* kheap_largest_free is the longest free run, even when it is not the
 * first of its bin (70 and 71 pages share one); the heap's rest is long
 * enough for a bin past the bitmap's first word. */
TEST(largest_free_is_the_longest_run)
{
    struct kt_heap t;
    kt_heap_open(&t, 16u << 20);
    kheap_t *h = t.h;
    size_t all = h->free_pages;
    CHECK(kheap_largest_free(h) == all * KH_PAGE, "a fresh heap: %zu bytes, %zu pages free",
          kheap_largest_free(h), all);
    static const size_t len[3] = {17, 70, 71};
    struct kh_page *r[3], *sep[3];
    for (int k = 0; k < 3; k++) {
        r[k] = run_alloc(h, len[k], 0);
        sep[k] = run_alloc(h, 1, 0);
        CHECK(r[k] && sep[k], "run of %zu pages and its separator", len[k]);
    }
    size_t rest_len = h->free_pages;
    CHECK(kh_bin_of(rest_len) >= KH_WORD_BITS, "the rest's bin %u is in the bitmap's first word",
          kh_bin_of(rest_len));
    struct kh_page *rest = run_alloc(h, rest_len, 0);
    CHECK(rest && kheap_largest_free(h) == 0, "a full heap: %zu bytes in the longest run",
          kheap_largest_free(h));
    run_free(h, r[2]);
    run_free(h, r[1]); /* the bin's first, shorter than the 71 behind it */
    run_free(h, r[0]);
    CHECK(kheap_largest_free(h) == 71 * KH_PAGE, "free runs of 17, 70, 71 pages: %zu bytes",
          kheap_largest_free(h));
    run_free(h, sep[1]); /* 70 + 1 + 71 */
    CHECK(kheap_largest_free(h) == 142 * KH_PAGE, "70 and 71 merged: %zu bytes",
          kheap_largest_free(h));
    run_free(h, rest);
    CHECK(rest_len > 142 && kheap_largest_free(h) == rest_len * KH_PAGE,
          "the rest of %zu pages free: %zu bytes", rest_len, kheap_largest_free(h));
    run_free(h, sep[2]);
    CHECK(kheap_largest_free(h) == (142 + 1 + rest_len) * KH_PAGE,
          "the 142 merged with the rest: %zu bytes, want %zu pages", kheap_largest_free(h),
          142 + 1 + rest_len);
    run_free(h, sep[0]);
    CHECK(kheap_largest_free(h) == all * KH_PAGE, "all free: %zu bytes", kheap_largest_free(h));
    CHECK(kheap_largest_free(NULL) == 0, "a NULL heap: %zu", kheap_largest_free(NULL));
    kt_heap_close(&t);
}

TEST(aligned_runs_and_in_place_resize)
{
    struct kt_heap t;
    kt_heap_open(&t, 16u << 20);
    kheap_t *h = t.h;
    size_t all = h->free_pages;
    struct kh_page *pad = run_alloc(h, 1, 0);
    struct kh_page *a = run_alloc(h, 4, 1u << 20);
    CHECK(a && (kh_page_addr(h, a) & ((1u << 20) - 1)) == 0, "1 MiB-aligned run at %#lx",
          a ? (unsigned long)kh_page_addr(h, a) : 0ul);
    kh_lock(&h->page_lock);
    bool grown = kh_large_resize(h, a, 40);
    kh_unlock(&h->page_lock);
    CHECK(grown && a->npages == 40, "grow in place to 40 pages: %d, %u", grown, a->npages);
    kh_lock(&h->page_lock);
    bool shrunk = kh_large_resize(h, a, 2);
    kh_unlock(&h->page_lock);
    CHECK(shrunk && a->npages == 2, "shrink in place to 2 pages: %d, %u", shrunk, a->npages);
    CHECK(h->free_pages == all - 3, "free pages %zu, want %zu", h->free_pages, all - 3);
    struct kh_page *blocker = run_alloc(h, 1, 0);
    (void)blocker;
    run_free(h, a);
    run_free(h, pad);
    run_free(h, blocker);
    CHECK(free_runs(h) == 1 && h->free_pages == all, "whole again: %zu runs", free_runs(h));
    kt_heap_close(&t);
}

TEST(metadata_budget)
{
    struct kt_heap t;
    size_t bytes = 64u << 20;
    kt_heap_open(&t, bytes);
    kheap_t *h = t.h;
    struct kheap_stats s;
    kheap_get_stats(h, &s);
    CHECK(s.metadata_bytes * 100 <= s.heap_total * 2, "metadata %zu of %zu bytes (> 2%%)",
          s.metadata_bytes, s.heap_total);
    CHECK(sizeof(struct kh_page) * 1000 / KH_PAGE <= 12, "descriptor of %zu bytes per page",
          sizeof(struct kh_page));
    /* A heap full of the smallest objects: descriptors + bitmaps. Four
     * million allocations: too many for the valgrind and check-every-
     * operation builds, which run the rest of this test. */
    if (kt_env_long("KHEAP_TEST_SMALL", 0)) {
        printf("# full-heap metadata figure skipped in this build\n");
        kt_heap_close(&t);
        return;
    }
    size_t n = 0;
    while (kheap_alloc(h, 16))
        n++;
    kheap_get_stats(h, &s);
    /* 2% for descriptors, bitmaps and the CPU's state, plus the page
     * table of the first region (8 bytes a page, 0.2%) that gives the free
     * hit path its class and the offset in the slab in one line on every
     * heap, with the rest of the page it ends in (the pages start on a
     * page boundary after it). */
    size_t tags = kh_align_up(h->regions[0].npages * sizeof *h->window.pt, KH_PAGE);
    CHECK((s.metadata_bytes - tags) * 100 <= s.heap_total * 2,
          "full of 16-byte objects: metadata %zu (tags %zu) of %zu bytes (> 2%% + tags)",
          s.metadata_bytes, tags, s.heap_total);
    printf("# %zu objects of 16 bytes, metadata %.2f%% of the heap\n", n,
           100.0 * (double)s.metadata_bytes / (double)s.heap_total);
    kt_heap_close(&t);
}

TEST(check_finds_damage)
{
    struct kt_heap t;
    kt_heap_open(&t, 4u << 20);
    kheap_t *h = t.h;
    void *small[8], *big = kheap_alloc(h, 100000);
    for (int i = 0; i < 8; i++)
        small[i] = kheap_alloc(h, 200);
    kheap_free(h, small[3]);
    kheap_free(h, small[5]);
    kheap_reclaim(h); /* out of the magazines, onto the slab's free list */
    check_clean(h);

    struct kh_page *slab = kh_page_of(h, (uintptr_t)small[0]);
    slab->inuse++;
    expect_problem(h, "slab inuse off by one");
    slab->inuse--;

    void **link = (void **)small[5];
    void *saved = *link;
    *link = (char *)small[0] + 7;
    expect_problem(h, "free-list link into the middle of an object");
    *link = saved;

    struct kh_page *run = kh_page_of(h, (uintptr_t)big);
    run[run->npages - 1].npages++;
    expect_problem(h, "large block tail length wrong");
    run[run->npages - 1].npages--;

    h->committed_bytes += 8;
    expect_problem(h, "committed bytes drifted");
    h->committed_bytes -= 8;

    struct kh_region *r = &h->regions[0];
    struct kh_page *last = &r->pages[r->npages - 1];
    uint8_t kind = last->kind;
    last->kind = KH_PG_FREE;
    expect_problem(h, "free-run tail marked as a head");
    last->kind = kind;

    check_clean(h);
    for (int i = 0; i < 8; i++)
        if (i != 3 && i != 5)
            kheap_free(h, small[i]);
    kheap_free(h, big);
    kt_heap_close(&t);
}

int main(void)
{
    RUN(class_map_is_smallest_fitting_class);
    RUN(cc_bytes_bound_each_class);
    RUN(internal_waste_at_most_one_eighth_from_64);
    RUN(slot_test_matches_division);
    RUN(bins_partition_lengths);
    RUN(slab_layouts_waste_at_most_one_eighth);
    RUN(free_hit_every_class);
    RUN(page_table_checked);
    RUN(hit_paths_cache_large_blocks);
    RUN(power_of_two_classes_aligned_to_size);
    RUN(region_lookup_bounds_and_many_regions);
    RUN(runs_split_and_coalesce_both_sides);
    RUN(runs_fit_in_their_own_bin_first);
    RUN(largest_free_is_the_longest_run);
    RUN(aligned_runs_and_in_place_resize);
    RUN(metadata_budget);
    RUN(check_finds_damage);
    return harness_done();
}
