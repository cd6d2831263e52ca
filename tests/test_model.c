/*
 * test_model.c - model-based randomized test of one heap.
 *
 * A long random mix of kheap_alloc, kheap_alloc_aligned, kheap_calloc,
 * kheap_realloc, kheap_free and object-cache calls runs against a model
 * that knows every live block. After every operation the model checks
 * that no two blocks overlap, alignment, usable sizes (computed here from
 * the size-class rule, independently of the library), block contents and
 * the exact statistics; kheap_check runs every KHEAP_CHECK_EVERY ops.
 *
 * Environment: KHEAP_SEED (replay a run), KHEAP_TEST_OPS (default
 * 1000000), KHEAP_TEST_HEAP (bytes, default 256 MiB), KHEAP_CHECK_EVERY
 * (default 20000), KHEAP_TEST_LIVE (live-block cap, default 20000),
 * KHEAP_TEST_SMALL (nonzero: 32 MiB heap, 5000 live by default).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "harness.h"
#include "kheap.h"

/* Every failure message carries the seed and op number for replay. */
#define MCHECK(cond, fmt, ...)                                                \
    CHECK(cond, "[seed %" PRIu64 " op %lu] " fmt, g_seed, g_op, __VA_ARGS__)

#define PAGE KHEAP_PAGE_SIZE
#define MAX_LARGE ((size_t)4 << 20)
#define NUM_USER_CACHES 3
#define TEMP_CACHE NUM_USER_CACHES
#define NO_CACHE 0xff
#define MAGIC 0x6b686561704d4147ull

enum kind { K_ALLOC, K_ALIGNED, K_CALLOC, K_REALLOC, K_CACHE };

struct block {
    unsigned char *p;
    size_t size;    /* bytes asked for */
    size_t usable;  /* bytes the heap committed (model or library) */
    uint32_t seed;  /* pattern seed */
    uint8_t kind;
    uint8_t run;    /* RUN_NO: class object, RUN_YES: page run, RUN_MAYBE */
    uint8_t cache;  /* index into g_caches, or NO_CACHE */
};

/* Whether a block is a page run: known for plain allocations, not for
 * aligned ones (an aligned request may get a run of class-like size). */
enum { RUN_NO, RUN_YES, RUN_MAYBE };

struct mcache {
    kheap_cache_t *c;
    size_t size, align, objsize, slab_pages;
    bool has_ctor;
    size_t live;
    uint64_t ctor_calls, dtor_calls, dtor_bad;
};

/* A treap of live address ranges [lo, hi), for O(log n) overlap checks. */
struct tnode {
    uintptr_t lo, hi;
    uint32_t prio;
    int32_t l, r;
};

static uint64_t g_seed;
static unsigned long g_op;
static uint64_t g_rng;

static struct kt_heap g_region;
static kheap_t *g_heap;
static unsigned char *g_base;
static size_t g_heap_size;

static struct block *g_live;
static size_t g_nlive, g_cap;

static struct tnode *g_t;
static int32_t g_root = -1, g_tfree = -1;

static struct mcache g_caches[NUM_USER_CACHES + 1];
static bool g_temp_active;

/* The model of the statistics. */
static size_t m_used, m_max_used, m_last_peak;
/* Fragmentation: the most bytes the live set asked for, and the most
 * bytes of pages the heap held for it (heap_used less fixed metadata). */
static size_t m_req, m_max_req, m_max_held;
static uint64_t m_allocs, m_frees, m_failed, m_nulls;
static struct kheap_stats g_st; /* snapshot after the last op */
static bool g_filling = true;

/* ---- randomness ---- */

static uint64_t rnd(void)
{
    return kt_rand(&g_rng);
}

static size_t rnd_range(size_t lo, size_t hi) /* inclusive */
{
    return kt_rand_range(&g_rng, lo, hi);
}

static unsigned log2_floor(size_t x)
{
    unsigned k = 0;
    while (x >>= 1)
        k++;
    return k;
}

/* Pick a bit length uniformly, then a value of that length: log-uniform. */
static size_t log_uniform(size_t lo, size_t hi)
{
    unsigned k = (unsigned)rnd_range(log2_floor(lo), log2_floor(hi));
    size_t a = (size_t)1 << k, b = ((size_t)1 << (k + 1)) - 1;
    if (a < lo)
        a = lo;
    if (b > hi)
        b = hi;
    return rnd_range(a, b);
}

/* The size classes come from the rule (kt_class), not from the library. */


/* The alignment kheap_alloc promises for a block of usable size u. */

/* ---- block contents ---- */

static unsigned char pat(uint32_t seed, size_t i)
{
    return (unsigned char)(((seed ^ (uint32_t)i) * 0x9E3779B1u) >> 24);
}

static size_t sample_pos(uint32_t seed, unsigned k, size_t span)
{
    uint64_t h = ((uint64_t)seed << 8 | k) * 0x9E3779B97F4A7C15ull;
    return (size_t)((h >> 17) % span);
}

#define FULL_FILL 512
#define EDGE 64
#define SAMPLES 8

/* Write the pattern over [from, size): all of it when short, else the
 * head, the tail and a few sampled bytes (large blocks stay untouched). */
static void fill(unsigned char *p, size_t size, size_t from, uint32_t seed)
{
    if (size <= from)
        return;
    size_t span = size - from;
    if (span <= FULL_FILL) {
        for (size_t i = from; i < size; i++)
            p[i] = pat(seed, i);
        return;
    }
    for (size_t i = from; i < from + EDGE; i++)
        p[i] = pat(seed, i);
    for (size_t i = size - EDGE; i < size; i++)
        p[i] = pat(seed, i);
    for (unsigned k = 0; k < SAMPLES; k++) {
        size_t i = from + sample_pos(seed, k, span);
        p[i] = pat(seed, i);
    }
}

/* Offset of the first pattern byte below limit that differs, or SIZE_MAX. */
static size_t verify(const unsigned char *p, size_t size, size_t from,
                     uint32_t seed, size_t limit)
{
    if (size <= from)
        return SIZE_MAX;
    size_t span = size - from;
    if (span <= FULL_FILL) {
        for (size_t i = from; i < size && i < limit; i++)
            if (p[i] != pat(seed, i))
                return i;
        return SIZE_MAX;
    }
    for (size_t i = from; i < from + EDGE && i < limit; i++)
        if (p[i] != pat(seed, i))
            return i;
    for (size_t i = size - EDGE; i < size && i < limit; i++)
        if (p[i] != pat(seed, i))
            return i;
    for (unsigned k = 0; k < SAMPLES; k++) {
        size_t i = from + sample_pos(seed, k, span);
        if (i < limit && p[i] != pat(seed, i))
            return i;
    }
    return SIZE_MAX;
}

/* Offset of the first nonzero byte of a calloc block, or SIZE_MAX. */
static size_t first_nonzero(const unsigned char *p, size_t n)
{
    if (n <= 65536) {
        for (size_t i = 0; i < n; i++)
            if (p[i])
                return i;
        return SIZE_MAX;
    }
    for (size_t i = 0; i < 4096; i++)
        if (p[i] || p[n - 1 - i])
            return p[i] ? i : n - 1 - i;
    for (unsigned k = 0; k < 64; k++) {
        size_t i = (size_t)(rnd() % n);
        if (p[i])
            return i;
    }
    return SIZE_MAX;
}

/* ---- treap of live ranges ---- */

static void t_split(int32_t t, uintptr_t key, int32_t *a, int32_t *b)
{
    if (t < 0) {
        *a = *b = -1;
    } else if (g_t[t].lo < key) {
        t_split(g_t[t].r, key, &g_t[t].r, b);
        *a = t;
    } else {
        t_split(g_t[t].l, key, a, &g_t[t].l);
        *b = t;
    }
}

static int32_t t_merge(int32_t a, int32_t b)
{
    if (a < 0)
        return b;
    if (b < 0)
        return a;
    if (g_t[a].prio > g_t[b].prio) {
        g_t[a].r = t_merge(g_t[a].r, b);
        return a;
    }
    g_t[b].l = t_merge(a, g_t[b].l);
    return b;
}

/* The node with the largest lo <= key, or -1. */
static int32_t t_floor(uintptr_t key)
{
    int32_t t = g_root, best = -1;
    while (t >= 0) {
        if (g_t[t].lo <= key) {
            best = t;
            t = g_t[t].r;
        } else {
            t = g_t[t].l;
        }
    }
    return best;
}

/* The node with the smallest lo > key, or -1. */
static int32_t t_above(uintptr_t key)
{
    int32_t t = g_root, best = -1;
    while (t >= 0) {
        if (g_t[t].lo > key) {
            best = t;
            t = g_t[t].l;
        } else {
            t = g_t[t].r;
        }
    }
    return best;
}

static int32_t t_erase(int32_t t, uintptr_t key, bool *found)
{
    if (t < 0)
        return -1;
    if (g_t[t].lo == key) {
        int32_t m = t_merge(g_t[t].l, g_t[t].r);
        g_t[t].l = g_tfree;
        g_tfree = t;
        *found = true;
        return m;
    }
    if (key < g_t[t].lo)
        g_t[t].l = t_erase(g_t[t].l, key, found);
    else
        g_t[t].r = t_erase(g_t[t].r, key, found);
    return t;
}

/* Record [p, p + len) as live; fails the test if it overlaps a live range
 * or leaves the heap's region. */
static void range_add(const unsigned char *p, size_t len)
{
    uintptr_t lo = (uintptr_t)p, hi = lo + len;
    MCHECK(lo >= (uintptr_t)g_base && hi <= (uintptr_t)g_base + g_heap_size,
           "block [%p,+%zu) lies outside the heap region [%p,+%zu)",
           (const void *)p, len, (void *)g_base, g_heap_size);
    int32_t f = t_floor(lo);
    MCHECK(f < 0 || g_t[f].hi <= lo,
           "new block [%p,+%zu) overlaps live block [%p,%p)", (const void *)p,
           len, (void *)g_t[f].lo, (void *)g_t[f].hi);
    int32_t a = t_above(lo);
    MCHECK(a < 0 || g_t[a].lo >= hi,
           "new block [%p,+%zu) overlaps live block [%p,%p)", (const void *)p,
           len, (void *)g_t[a].lo, (void *)g_t[a].hi);
    int32_t n = g_tfree;
    MCHECK(n >= 0, "treap pool exhausted at %zu live blocks", g_nlive);
    g_tfree = g_t[n].l;
    g_t[n].lo = lo;
    g_t[n].hi = hi;
    g_t[n].prio = (uint32_t)rnd();
    g_t[n].l = g_t[n].r = -1;
    int32_t x, y;
    t_split(g_root, lo, &x, &y);
    g_root = t_merge(t_merge(x, n), y);
}

static void range_remove(const unsigned char *p)
{
    bool found = false;
    g_root = t_erase(g_root, (uintptr_t)p, &found);
    MCHECK(found, "model lost the range of block %p", (const void *)p);
}

/* ---- object caches ---- */

static uint64_t obj_magic(unsigned idx)
{
    return MAGIC ^ idx;
}

static void ctor_common(void *obj, unsigned idx)
{
    uint64_t m = obj_magic(idx);
    memcpy(obj, &m, sizeof m);
    g_caches[idx].ctor_calls++;
}

static void dtor_common(void *obj, unsigned idx)
{
    uint64_t m;
    memcpy(&m, obj, sizeof m);
    if (m != obj_magic(idx))
        g_caches[idx].dtor_bad++;
    g_caches[idx].dtor_calls++;
}

static void ctor0(void *o) { ctor_common(o, 0); }
static void ctor1(void *o) { ctor_common(o, 1); }
static void ctor3(void *o) { ctor_common(o, 3); }
static void dtor0(void *o) { dtor_common(o, 0); }
static void dtor1(void *o) { dtor_common(o, 1); }
static void dtor3(void *o) { dtor_common(o, 3); }

static const kheap_ctor_fn g_ctors[NUM_USER_CACHES + 1] = {ctor0, ctor1, NULL,
                                                           ctor3};
static const kheap_ctor_fn g_dtors[NUM_USER_CACHES + 1] = {dtor0, dtor1, NULL,
                                                           dtor3};

static void cache_open(unsigned idx, const char *name, size_t size,
                       size_t align, bool ctor)
{
    struct mcache *mc = &g_caches[idx];
    memset(mc, 0, sizeof *mc);
    mc->size = size;
    mc->align = align ? align : 8;
    mc->has_ctor = ctor;
    mc->c = kheap_cache_create(g_heap, name, size, align,
                               ctor ? g_ctors[idx] : NULL,
                               ctor ? g_dtors[idx] : NULL);
    MCHECK(mc->c != NULL, "kheap_cache_create(%s, %zu, %zu) failed", name,
           size, align);
    struct kheap_cache_info ci;
    kheap_cache_info(mc->c, &ci);
    mc->objsize = ci.objsize;
    mc->slab_pages = ci.pagesperslab;
    MCHECK(ci.objsize >= size, "cache %s objsize %zu < size %zu", name,
           ci.objsize, size);
    MCHECK(strncmp(ci.name, name, KHEAP_NAME_MAX - 1) == 0,
           "cache name '%s', created as '%s'", ci.name, name);
}

/* Destroy an empty cache; every constructed object must be destructed. */
static void cache_close(unsigned idx)
{
    struct mcache *mc = &g_caches[idx];
    MCHECK(mc->live == 0, "model closes cache %u with %zu live", idx,
           mc->live);
    int err = kheap_cache_destroy(mc->c);
    MCHECK(err == KHEAP_OK, "kheap_cache_destroy(cache %u) = %d (%s)", idx,
           err, kheap_strerror(err));
    MCHECK(mc->dtor_calls == mc->ctor_calls,
           "cache %u destroyed: %" PRIu64 " dtor calls != %" PRIu64
           " ctor calls",
           idx, mc->dtor_calls, mc->ctor_calls);
    MCHECK(mc->dtor_bad == 0,
           "cache %u: %" PRIu64 " objects reached the dtor without the "
           "ctor's magic",
           idx, mc->dtor_bad);
    mc->c = NULL;
}

/* ---- statistics ---- */

static void verify_stats(void)
{
    struct kheap_stats s;
    kheap_get_stats(g_heap, &s);
    struct kheap_report last = kt_last_report();
    MCHECK(kt_reports() == 0,
           "unexpected report %s addr %p (%s) in %s",
           kt_report_kind_name((int)last.kind), last.addr,
           last.reason ? last.reason : "?",
           last.function ? last.function : "?");
    MCHECK(s.used_bytes == m_used, "used_bytes %zu != model %zu (%zu live)",
           s.used_bytes, m_used, g_nlive);
    MCHECK(s.allocation_count == m_allocs,
           "allocation_count %" PRIu64 " != model %" PRIu64,
           s.allocation_count, m_allocs);
    MCHECK(s.free_count == m_frees, "free_count %" PRIu64 " != model %" PRIu64,
           s.free_count, m_frees);
    MCHECK(s.failed_count == m_failed,
           "failed_count %" PRIu64 " != model %" PRIu64, s.failed_count,
           m_failed);
    MCHECK(s.allocated_bytes - s.freed_bytes == s.used_bytes,
           "allocated_bytes %" PRIu64 " - freed_bytes %" PRIu64
           " != used_bytes %zu",
           s.allocated_bytes, s.freed_bytes, s.used_bytes);
    if (m_used > m_max_used)
        m_max_used = m_used;
    MCHECK(s.peak_bytes >= m_max_used && s.peak_bytes >= m_last_peak,
           "peak_bytes %zu < max used %zu or previous peak %zu",
           s.peak_bytes, m_max_used, m_last_peak);
    m_last_peak = s.peak_bytes;
    if (m_req > m_max_req)
        m_max_req = m_req;
    if (s.heap_used > m_max_held)
        m_max_held = s.heap_used;
    MCHECK(s.heap_total == g_st.heap_total,
           "heap_total changed from %zu to %zu", g_st.heap_total,
           s.heap_total);
    MCHECK(s.heap_used + s.heap_free == s.heap_total,
           "heap_used %zu + heap_free %zu != heap_total %zu", s.heap_used,
           s.heap_free, s.heap_total);
    g_st = s;
}


/* Pages of free run a new slab needs, per kmalloc class (its slab's pages
 * plus the alignment a power-of-two class asks of the slab), and the most
 * any class needs. Read from kheap_slabinfo at the start. */
static size_t g_slab_need[KHEAP_NUM_CLASSES], g_slab_need_max;

static void read_slab_needs(void)
{
    g_slab_need_max = kt_slab_needs(g_heap, g_slab_need);
}

/* An allocation returned NULL: fine only when the heap could not serve
 * it, which a probe checks (free runs are not visible otherwise). A large
 * or page-aligned request needs a free run of its pages plus its alignment
 * less a page; a small one at most a new slab (slab_pages, 0 = that of its
 * class, or of any class when aligned). Such a run must not be available
 * now, or the heap must be nearly full (under 1/32 free) for small ones. */
static void count_null(const char *what, size_t size, size_t align,
                       size_t slab_pages)
{
    m_failed++;
    m_nulls++;
    g_filling = false;
    bool small = size <= KHEAP_MAX_CLASS && align <= PAGE;
    size_t pages;
    if (small && slab_pages)
        pages = slab_pages;
    else if (small)
        pages = align > 8 ? g_slab_need_max
                          : g_slab_need[kt_class_index(size)];
    else
        pages = (size ? size + PAGE - 1 : PAGE) / PAGE +
                (align > PAGE ? align / PAGE - 1 : 0);
    bool allowed = (small && g_st.heap_free < g_st.heap_total / 32) ||
                   !kt_run_available(g_heap, pages, &m_allocs, &m_frees, &m_failed);
    MCHECK(allowed,
           "%s(size %zu, align %zu) returned NULL, yet a run of %zu pages "
           "was free (heap_free %zu of %zu, %zu live, used %zu)",
           what, size, align, pages, g_st.heap_free, g_st.heap_total, g_nlive,
           m_used);
}

/* ---- the live set ---- */

static struct block *live_push(unsigned char *p, size_t size, size_t usable,
                               uint8_t kind, uint8_t cache)
{
    range_add(p, usable);
    struct block *b = &g_live[g_nlive++];
    m_req += size;
    b->p = p;
    b->size = size;
    b->usable = usable;
    b->seed = (uint32_t)rnd();
    b->kind = kind;
    b->cache = cache;
    if (kind == K_ALIGNED)
        b->run = usable > KHEAP_MAX_CLASS ? RUN_YES : RUN_MAYBE;
    else
        b->run = kind != K_CACHE && usable > KHEAP_MAX_CLASS ? RUN_YES : RUN_NO;
    return b;
}

static size_t pattern_from(const struct block *b)
{
    return b->cache != NO_CACHE && g_caches[b->cache].has_ctor ? 8 : 0;
}

static void verify_block(const struct block *b, const char *when)
{
    size_t bad = verify(b->p, b->size, pattern_from(b), b->seed, SIZE_MAX);
    MCHECK(bad == SIZE_MAX,
           "%s: block %p (size %zu, kind %d) byte %zu is 0x%02x, "
           "pattern 0x%02x",
           when, (void *)b->p, b->size, b->kind, bad, b->p[bad],
           pat(b->seed, bad));
    if (pattern_from(b)) {
        uint64_t m;
        memcpy(&m, b->p, sizeof m);
        MCHECK(m == obj_magic(b->cache),
               "%s: object %p of cache %u lost its ctor magic (0x%" PRIx64
               ")",
               when, (void *)b->p, b->cache, m);
    }
}

static void live_remove(size_t i)
{
    range_remove(g_live[i].p);
    m_req -= g_live[i].size;
    g_live[i] = g_live[--g_nlive];
}

/* ---- operations ---- */

static size_t pick_size(void)
{
    unsigned r = (unsigned)(rnd() % 1000);
    if (r < 550)
        return log_uniform(1, 256);
    if (r < 800)
        return log_uniform(257, KHEAP_MAX_CLASS);
    if (r < 880) /* a class boundary, or one off it */
        return kt_class[rnd() % KHEAP_NUM_CLASSES] + rnd_range(0, 2) - 1;
    if (r < 950) /* a page multiple, or one off it */
        return rnd_range(1, 64) * PAGE + rnd_range(0, 2) - 1;
    if (r < 985)
        return log_uniform(KHEAP_MAX_CLASS + 1, MAX_LARGE);
    if (r < 990)
        return 0;
    return KHEAP_MAX_CLASS + rnd_range(0, 2) - 1;
}

static void check_new_block(const unsigned char *p, size_t size,
                            size_t usable, size_t align, const char *what)
{
    MCHECK(usable >= size, "%s: usable_size(%zu)=%zu < size", what, size,
           usable);
    MCHECK((uintptr_t)p % align == 0, "%s(%zu): %p not aligned to %zu", what,
           size, (const void *)p, align);
}

static void op_alloc(void)
{
    size_t size = pick_size();
    unsigned char *p = kheap_alloc(g_heap, size);
    if (!p) {
        count_null("kheap_alloc", size, 0, 0);
        return;
    }
    size_t u = kheap_usable_size(g_heap, p);
    size_t want = kt_usable(size);
    MCHECK(u == want, "kheap_alloc(%zu): usable_size %zu, size class rule "
           "says %zu", size, u, want);
    check_new_block(p, size, u, kt_natural_align(u), "kheap_alloc");
    m_allocs++;
    m_used += u;
    struct block *b = live_push(p, size, u, K_ALLOC, NO_CACHE);
    fill(p, size, 0, b->seed);
}

static void op_aligned(void)
{
    size_t align = (size_t)1 << rnd_range(3, 20);
    size_t size = rnd() % 4 ? pick_size() : rnd_range(0, 2 * align);
    if (rnd() % 64 == 0)
        align = 0; /* the default */
    unsigned char *p = kheap_alloc_aligned(g_heap, size, align);
    if (!p) {
        count_null("kheap_alloc_aligned", size, align, 0);
        return;
    }
    size_t u = kheap_usable_size(g_heap, p);
    check_new_block(p, size, u, align ? align : 8, "kheap_alloc_aligned");
    MCHECK(kt_is_class(u) || (u > KHEAP_MAX_CLASS && u % PAGE == 0),
           "kheap_alloc_aligned(%zu, %zu): usable %zu is neither a class "
           "nor a page multiple",
           size, align, u);
    m_allocs++;
    m_used += u;
    struct block *b = live_push(p, size, u, K_ALIGNED, NO_CACHE);
    fill(p, size, 0, b->seed);
}

static void op_calloc(void)
{
    if (rnd() % 200 == 0) {
        /* Overflowing products must give NULL; counting it is optional. */
        static const size_t bad[][2] = {
            {SIZE_MAX / 2 + 1, 2}, {SIZE_MAX, SIZE_MAX}, {2, SIZE_MAX / 2 + 1},
            {(size_t)1 << (sizeof(size_t) * 4),
             (size_t)1 << (sizeof(size_t) * 4)},
        };
        unsigned k = (unsigned)(rnd() % 4);
        void *p = kheap_calloc(g_heap, bad[k][0], bad[k][1]);
        MCHECK(p == NULL, "kheap_calloc(%zu, %zu) overflows but gave %p",
               bad[k][0], bad[k][1], p);
        struct kheap_stats s;
        kheap_get_stats(g_heap, &s);
        MCHECK(s.failed_count == m_failed || s.failed_count == m_failed + 1,
               "calloc overflow moved failed_count from %" PRIu64
               " to %" PRIu64,
               m_failed, s.failed_count);
        m_failed = s.failed_count;
        return;
    }
    size_t total = rnd() % 8 ? log_uniform(1, 4096) : log_uniform(1, 262144);
    size_t n = rnd_range(1, 16), size = total / n;
    if (rnd() % 32 == 0)
        n = 0;
    unsigned char *p = kheap_calloc(g_heap, n, size);
    if (!p) {
        count_null("kheap_calloc", n * size, 0, 0);
        return;
    }
    size_t u = kheap_usable_size(g_heap, p);
    size_t want = kt_usable(n * size);
    MCHECK(u == want, "kheap_calloc(%zu, %zu): usable_size %zu, rule says %zu",
           n, size, u, want);
    check_new_block(p, n * size, u, kt_natural_align(u), "kheap_calloc");
    size_t nz = first_nonzero(p, n * size);
    MCHECK(nz == SIZE_MAX, "kheap_calloc(%zu, %zu) = %p: byte %zu is 0x%02x",
           n, size, (void *)p, nz, p[nz]);
    m_allocs++;
    m_used += u;
    struct block *b = live_push(p, n * size, u, K_CALLOC, NO_CACHE);
    fill(p, n * size, 0, b->seed);
}

static size_t pick_live(bool kmalloc_only)
{
    for (int tries = 0; tries < 8; tries++) {
        size_t i = (size_t)(rnd() % g_nlive);
        if (!kmalloc_only || g_live[i].cache == NO_CACHE)
            return i;
    }
    return SIZE_MAX;
}

static void free_at(size_t i)
{
    struct block *b = &g_live[i];
    verify_block(b, "before free");
    size_t u = kheap_usable_size(g_heap, b->p);
    MCHECK(u == b->usable, "usable_size(%p) changed from %zu to %zu",
           (void *)b->p, b->usable, u);
    if (b->cache != NO_CACHE && rnd() % 4)
        kheap_cache_free(g_caches[b->cache].c, b->p);
    else
        kheap_free(g_heap, b->p); /* objects go back to their own cache */
    if (b->cache != NO_CACHE)
        g_caches[b->cache].live--;
    m_frees++;
    m_used -= b->usable;
    live_remove(i);
}

static void op_free(void)
{
    if (g_nlive)
        free_at((size_t)(rnd() % g_nlive));
}

static void op_realloc(void)
{
    if (g_nlive == 0 || rnd() % 32 == 0) {
        /* realloc(NULL, n) acts as kheap_alloc. */
        size_t size = pick_size();
        unsigned char *p = kheap_realloc(g_heap, NULL, size);
        if (!p) {
            count_null("kheap_realloc(NULL)", size, 0, 0);
            return;
        }
        size_t u = kheap_usable_size(g_heap, p);
        MCHECK(u == kt_usable(size),
               "kheap_realloc(NULL, %zu): usable %zu, rule says %zu", size, u,
               kt_usable(size));
        check_new_block(p, size, u, kt_natural_align(u), "kheap_realloc(NULL)");
        m_allocs++;
        m_used += u;
        struct block *b = live_push(p, size, u, K_REALLOC, NO_CACHE);
        fill(p, size, 0, b->seed);
        return;
    }
    size_t i = pick_live(true);
    if (i == SIZE_MAX)
        return;
    struct block *b = &g_live[i];
    verify_block(b, "before realloc");
    size_t old = b->size, old_u = b->usable;
    size_t size;
    switch (rnd() % 6) {
    case 0: size = pick_size(); break;
    case 1: size = old + old / 2 + 1; break;
    case 2: size = old / 2; break;
    case 3: size = old + rnd_range(0, 16); break;
    case 4: size = old > 16 ? old - rnd_range(0, 16) : old; break;
    default: size = rnd() % 16 ? rnd_range(old_u / 2, old_u) : 0; break;
    }
    if (size > MAX_LARGE)
        size = MAX_LARGE;
    unsigned char *q = kheap_realloc(g_heap, b->p, size);
    if (size == 0) {
        MCHECK(q == NULL, "kheap_realloc(%p, 0) returned %p, not NULL",
               (void *)b->p, (void *)q);
        m_frees++;
        m_used -= old_u;
        live_remove(i);
        return;
    }
    if (!q) {
        count_null("kheap_realloc", size, 0, 0);
        verify_block(b, "after failed realloc");
        size_t u = kheap_usable_size(g_heap, b->p);
        MCHECK(u == old_u, "failed realloc changed usable_size %zu -> %zu",
               old_u, u);
        return;
    }
    size_t u = kheap_usable_size(g_heap, q);
    MCHECK(u >= size, "kheap_realloc(%zu -> %zu): usable %zu < size", old,
           size, u);
    /* A class object stays where it is when size is of its class, and
     * moves to the smaller class of a smaller size, unless that class has
     * no memory: then an allocation of size fails now too. */
    bool small_fits = b->run == RUN_NO && size <= old_u &&
                      kt_usable(size) == old_u;
    MCHECK(!small_fits || q == b->p,
           "kheap_realloc(%p, %zu) moved a block of class %zu to %p",
           (void *)b->p, size, old_u, (void *)q);
    if (b->run == RUN_NO && size < old_u && !small_fits && q == b->p) {
        void *probe = kheap_alloc(g_heap, size);
        MCHECK(probe == NULL,
               "kheap_realloc(%p, %zu) kept a block of class %zu, though class %zu has memory",
               (void *)b->p, size, old_u, kt_usable(size));
        if (probe)
            kheap_free(g_heap, probe);
        else
            count_null("kheap_alloc", size, 0, 0);
    }
    bool large_shrinks = b->run == RUN_YES && size > KHEAP_MAX_CLASS &&
                         size <= old_u;
    MCHECK(!large_shrinks || q == b->p,
           "kheap_realloc(%p, %zu) moved a shrinking large block (%zu) to %p",
           (void *)b->p, size, old_u, (void *)q);
    if (q == b->p) {
        MCHECK(b->run != RUN_NO || u == old_u,
               "in-place realloc of class %zu object to %zu changed usable to "
               "%zu",
               old_u, size, u);
        MCHECK(b->run != RUN_YES || u % PAGE == 0,
               "in-place realloc of a run to %zu: usable %zu not a page "
               "multiple",
               size, u);
    } else {
        MCHECK(u == kt_usable(size),
               "kheap_realloc moved %zu -> %zu: usable %zu, rule says %zu", old,
               size, u, kt_usable(size));
        MCHECK((uintptr_t)q % kt_natural_align(u) == 0,
               "kheap_realloc(%zu) moved to %p, not aligned to %zu", size,
               (void *)q, kt_natural_align(u));
        m_allocs++;
        m_frees++;
    }
    /* Contents are kept up to the smaller size. */
    size_t keep = old < size ? old : size;
    size_t bad = verify(q, old, 0, b->seed, keep);
    MCHECK(bad == SIZE_MAX,
           "kheap_realloc(%zu -> %zu) %p -> %p: byte %zu is 0x%02x, was 0x%02x",
           old, size, (void *)b->p, (void *)q, bad, q[bad], pat(b->seed, bad));
    range_remove(b->p);
    m_used = m_used - old_u + u;
    if (q != b->p) {
        b->kind = K_REALLOC;
        b->run = u > KHEAP_MAX_CLASS ? RUN_YES : RUN_NO;
    }
    b->p = q;
    m_req = m_req - b->size + size;
    b->size = size;
    b->usable = u;
    b->seed = (uint32_t)rnd();
    range_add(q, u);
    fill(q, size, 0, b->seed);
}

static unsigned pick_cache(void)
{
    unsigned n = g_temp_active ? NUM_USER_CACHES + 1 : NUM_USER_CACHES;
    return (unsigned)(rnd() % n);
}

static void op_cache_alloc(void)
{
    unsigned idx = pick_cache();
    struct mcache *mc = &g_caches[idx];
    unsigned char *p = kheap_cache_alloc(mc->c);
    if (!p) {
        count_null("kheap_cache_alloc", mc->objsize, mc->align,
                   mc->slab_pages);
        return;
    }
    check_new_block(p, mc->size, mc->objsize, mc->align, "kheap_cache_alloc");
    if (mc->has_ctor) {
        /* Free objects keep their constructed state. */
        uint64_t m;
        memcpy(&m, p, sizeof m);
        MCHECK(m == obj_magic(idx),
               "cache %u object %p handed out without its ctor magic "
               "(0x%" PRIx64 ")",
               idx, (void *)p, m);
    }
    size_t u = kheap_usable_size(g_heap, p);
    MCHECK(u == mc->objsize, "usable_size of cache %u object %zu != objsize "
           "%zu", idx, u, mc->objsize);
    m_allocs++;
    m_used += mc->objsize;
    mc->live++;
    struct block *b = live_push(p, mc->size, mc->objsize, K_CACHE,
                                (uint8_t)idx);
    fill(p, mc->size, pattern_from(b), b->seed);
    if (rnd() % 16 == 0) {
        struct kheap_cache_info ci;
        kheap_cache_info(mc->c, &ci);
        MCHECK(ci.active_objs == mc->live,
               "cache %u active_objs %zu != model %zu", idx, ci.active_objs,
               mc->live);
    }
}

static void op_usable(void)
{
    if (!g_nlive)
        return;
    struct block *b = &g_live[rnd() % g_nlive];
    size_t u = kheap_usable_size(g_heap, b->p);
    MCHECK(u == b->usable, "usable_size(%p) is %zu, was %zu at allocation",
           (void *)b->p, u, b->usable);
}

static void op_reclaim(void)
{
    uint64_t before[NUM_USER_CACHES + 1];
    for (unsigned i = 0; i <= NUM_USER_CACHES; i++)
        before[i] = g_caches[i].dtor_calls;
    size_t got = kheap_reclaim(g_heap);
    MCHECK(got % PAGE == 0, "kheap_reclaim gave back %zu bytes, not pages",
           got);
    for (unsigned i = 0; i <= NUM_USER_CACHES; i++)
        MCHECK(g_caches[i].dtor_calls >= before[i] &&
                   (!g_caches[i].has_ctor ||
                    g_caches[i].ctor_calls - g_caches[i].dtor_calls >=
                        g_caches[i].live),
               "cache %u after reclaim: ctor %" PRIu64 " dtor %" PRIu64
               " live %zu",
               i, g_caches[i].ctor_calls, g_caches[i].dtor_calls,
               g_caches[i].live);
}

/* Create or tear down the temporary cache. */
static void op_temp_cache(void)
{
    if (!g_temp_active) {
        size_t align = rnd() % 8 ? (size_t)1 << rnd_range(0, 12) : 0;
        size_t size = log_uniform(1, 8192);
        bool ctor = rnd() % 2;
        if (ctor && size < 8)
            size = 8;
        cache_open(TEMP_CACHE, "model-temp", size, align, ctor);
        g_temp_active = true;
        return;
    }
    /* Free its objects, then destroy it. */
    for (size_t i = 0; i < g_nlive;) {
        if (g_live[i].cache == TEMP_CACHE)
            free_at(i);
        else
            i++;
    }
    cache_close(TEMP_CACHE);
    g_temp_active = false;
}

static void heap_check(void)
{
    const void *addr = NULL;
    const char *msg = kheap_check_quiescent(g_heap, &addr);
    MCHECK(msg == NULL, "kheap_check: %s at %p", msg, addr);
}

TEST(model)
{
    unsigned long ops = (unsigned long)kt_env_long("KHEAP_TEST_OPS",
                                                        1000000);
    unsigned long check_every =
        (unsigned long)kt_env_long("KHEAP_CHECK_EVERY", 20000);
    /* KHEAP_TEST_SMALL: slow variants (valgrind, debug) get smaller
     * defaults. */
    bool small = kt_env_long("KHEAP_TEST_SMALL", 0) != 0;
    g_heap_size = (size_t)kt_env_long("KHEAP_TEST_HEAP",
                                           small ? 32L << 20 : 256L << 20);
    g_cap = (size_t)kt_env_long("KHEAP_TEST_LIVE", small ? 5000 : 20000);
    if (check_every == 0)
        check_every = 1;

    g_live = kt_map(g_cap * sizeof *g_live);
    g_t = kt_map(g_cap * sizeof *g_t);
    MCHECK(g_live && g_t, "mmap of the model (%zu live) failed", g_cap);
    for (size_t i = 0; i < g_cap; i++)
        g_t[i].l = i + 1 < g_cap ? (int32_t)(i + 1) : -1;
    g_tfree = 0;

    kt_heap_open(&g_region, g_heap_size);
    g_heap = g_region.h;
    g_base = g_region.mem;
    kheap_get_stats(g_heap, &g_st);
    MCHECK(g_st.used_bytes == 0 && g_st.allocation_count == 0,
           "fresh heap: used %zu allocs %" PRIu64, g_st.used_bytes,
           g_st.allocation_count);

    read_slab_needs();
    cache_open(0, "model-small", 40, 8, true);
    cache_open(1, "model-mid", 200, 64, true);
    cache_open(2, "model-page", 3000, 4096, false);
    verify_stats();

    for (g_op = 1; g_op <= ops; g_op++) {
        /* Fill until the cap or a NULL, then drain to an eighth of the
         * cap (or a quarter of the heap used), and again. */
        if (g_filling && g_nlive >= g_cap)
            g_filling = false;
        if (!g_filling && g_nlive < g_cap && (g_nlive <= g_cap / 8 ||
                           g_st.heap_free >= g_st.heap_total / 4 * 3))
            g_filling = true;
        unsigned grow = g_filling ? 450 : 150;
        unsigned frees = g_filling ? 250 : 600;
        unsigned r = (unsigned)(rnd() % 1000);
        /* At the cap an allocating draw becomes a free (the next branch). */
        if (r < grow && g_nlive < g_cap) {
            unsigned k = (unsigned)(rnd() % 100);
            if (k < 55)
                op_alloc();
            else if (k < 70)
                op_aligned();
            else if (k < 80)
                op_calloc();
            else
                op_cache_alloc();
        } else if (r < grow + frees) {
            op_free();
        } else if (r < 950) {
            op_realloc();
        } else if (r < 997) {
            op_usable();
        } else if (r < 999) {
            if (rnd() % 20 == 0)
                op_reclaim();
        } else if (rnd() % 40 == 0) {
            op_temp_cache();
        }
        verify_stats();
        if (g_op % check_every == 0)
            heap_check();
    }

    /* Free everything, destroy the caches: the heap must be whole. */
    while (g_nlive)
        free_at(g_nlive - 1);
    verify_stats();
    if (g_temp_active)
        cache_close(TEMP_CACHE);
    for (unsigned i = 0; i < NUM_USER_CACHES; i++)
        cache_close(i);
    kheap_reclaim(g_heap);
    heap_check();
    struct kheap_stats s;
    kheap_get_stats(g_heap, &s);
    MCHECK(s.used_bytes == 0 && s.slab_bytes == 0 && s.large_bytes == 0,
           "all freed: used %zu slab %zu large %zu", s.used_bytes,
           s.slab_bytes, s.large_bytes);
    MCHECK(s.heap_free == s.heap_total - s.metadata_bytes,
           "all freed: heap_free %zu != heap_total %zu - metadata %zu",
           s.heap_free, s.heap_total, s.metadata_bytes);
    MCHECK(s.allocation_count == m_allocs && s.free_count == m_frees &&
               s.allocation_count == s.free_count,
           "all freed: allocs %" PRIu64 " frees %" PRIu64 " (model %" PRIu64
           "/%" PRIu64 ")",
           s.allocation_count, s.free_count, m_allocs, m_frees);
    printf("# %lu ops, %" PRIu64 " allocations, %" PRIu64
           " NULL returns at a full heap, peak %zu bytes\n",
           ops, m_allocs, m_nulls, s.peak_bytes);
    /* heap_used counts the fixed metadata too; with everything freed it
     * is exactly that, so subtract it for the pages held for objects. */
    size_t fixed = s.heap_used;
    printf("# fragmentation: peak pages held %zu / peak bytes requested %zu = %.3f\n",
           m_max_held - fixed, m_max_req,
           m_max_req ? (double)(m_max_held - fixed) / (double)m_max_req : 0.0);

    kt_heap_close(&g_region);
    kt_unmap(g_live, g_cap * sizeof *g_live);
    kt_unmap(g_t, g_cap * sizeof *g_t);
}

int main(void)
{
    g_seed = kt_seed();
    g_rng = kt_rand_seed(g_seed, 0);
    kt_make_classes();
    kt_capture_reports(NULL);
    RUN(model);
    return harness_done();
}
