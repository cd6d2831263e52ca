/*
 * fuzz_api.c - libFuzzer harness: the public API of one heap, driven by
 * the input and held to a shadow model.
 *
 * Each input is a program over a fresh heap of HEAP_BYTES (kheap_init on
 * a static buffer): an opcode byte, then the operation's numbers (fuzz.h).
 * The operations are kheap_alloc, _aligned, _calloc, _realloc, _free, the
 * KHEAP_NOLOCK calls, user caches (created with and without constructor,
 * tuned or not; alloc, free, bulk calls, reserves, shrink, destroy), the
 * bulk calls of kmalloc, kheap_reclaim, kheap_purge, the low-water mark
 * with a shrinker that frees blocks of the model's, usable_size, stats,
 * kheap_check_quiescent, and sampled guard blocks at a rate the input
 * sets (kheap_set_sample).
 *
 * The model knows every live block: address, size asked, usable size,
 * alignment, cache, and a pattern seed. After every operation it checks
 * what kheap.h promises:
 *  - a new block is aligned as promised, has usable >= size (for plain
 *    allocations exactly the class rule, fz_usable, or, once sampling
 *    was on, exactly size for a block of at most a page), lies inside the
 *    buffer and overlaps no live block;
 *  - a block's pattern is intact whenever it is read (before a free or
 *    realloc, and every block at each check); calloc gives zeros;
 *    constructed objects carry their constructor's magic;
 *  - used_bytes, allocation_count and free_count are exactly the model's
 *    (KHEAP_NOLOCK frees that may still be deferred widen them to a
 *    range), failed_count counts each NULL once;
 *  - a NULL is allowed only when the heap could not have served it (a
 *    probe for the run it would have needed fails);
 *  - no report reaches the hook (the program makes no misuse);
 *  - kheap_check_quiescent every CHECK_EVERY operations and at the end;
 *    at the end, after every block is freed and every cache destroyed
 *    (each destructor seeing its constructor's magic), the heap is empty:
 *    no slab or large bytes, heap_free == heap_total - metadata_bytes.
 */
#include <inttypes.h>
#include <string.h>

#include "fuzz.h"
#include "kheap_port.h"

#define HEAP_BYTES ((size_t)4 << 20)
#define MAX_REQ ((size_t)1 << 20) /* largest request */
#define MAX_LIVE 384
#define MAX_SHRINKABLE 32
#define MAX_OPS 2000
#define CHECK_EVERY 64
#define NCACHES 4
#define MAGIC 0x6b686561707a7a66ull
#define NONE (-1)

static _Alignas(4096) unsigned char g_mem[HEAP_BYTES];
static kheap_t *g_heap;

/* Whether a block is a page run of its own: known for plain allocations,
 * not for aligned ones of class-like size. */
enum { RUN_NO, RUN_YES, RUN_MAYBE };

struct block {
    unsigned char *p;
    size_t size;   /* bytes asked for */
    size_t usable; /* bytes the heap committed */
    uint32_t seed;
    int cache;     /* index into g_caches, or NONE */
    int run;
};

struct fcache {
    kheap_cache_t *c;
    size_t size, align, objsize, slab_pages;
    bool ctor;
    size_t live; /* model blocks of this cache */
    size_t pend; /* of its frees, KHEAP_NOLOCK ones that may still be
                    deferred (allocated as far as kheap knows) */
    unsigned long ctors, dtors, dtor_bad;
    struct kheap_reserve r;
};

static struct block g_live[MAX_LIVE];
static size_t g_nlive;
/* Blocks only the shrinker frees (and the end). */
static struct block g_shrinkable[MAX_SHRINKABLE];
static size_t g_nshrinkable;
static struct fcache g_caches[NCACHES];

/* The model of the statistics. Frees made with KHEAP_NOLOCK may sit on
 * the CPU's deferred list, still counted as allocated, until the next miss
 * or kheap_reclaim: pend_* bound what may be pending. */
static size_t m_used;
static uint64_t m_allocs, m_frees, m_failed;
static size_t pend_bytes;
static uint64_t pend_n;
static uint32_t g_seed;
static unsigned g_op;

/* Pages of free run a new slab needs, per kmalloc class, and the most. */
static size_t g_slab_need[KHEAP_NUM_CLASSES], g_slab_need_max;

static uint32_t next_seed(void)
{
    g_seed = g_seed * 1664525u + 1013904223u;
    return g_seed;
}

/* ---- reports: none are expected ---- */

static void no_reports(const char *when)
{
    if (kt_reports()) {
        struct kheap_report r = kt_last_report();
        fz_fail("op %u %s: unexpected report %s at %p (%s) from %s", g_op, when,
                kt_report_kind_name((int)r.kind), r.addr, r.reason ? r.reason : "?",
                r.function ? r.function : "?");
    }
}

/* ---- constructors: one per cache slot, so each knows its magic ---- */

static void ctor_at(void *o, unsigned i)
{
    uint64_t m = MAGIC ^ i;
    memcpy(o, &m, sizeof m);
    g_caches[i].ctors++;
}

static void dtor_at(void *o, unsigned i)
{
    uint64_t m;
    memcpy(&m, o, sizeof m);
    if (m != (MAGIC ^ i))
        g_caches[i].dtor_bad++;
    g_caches[i].dtors++;
}

static void ctor0(void *o) { ctor_at(o, 0); }
static void ctor1(void *o) { ctor_at(o, 1); }
static void ctor2(void *o) { ctor_at(o, 2); }
static void ctor3(void *o) { ctor_at(o, 3); }
static void dtor0(void *o) { dtor_at(o, 0); }
static void dtor1(void *o) { dtor_at(o, 1); }
static void dtor2(void *o) { dtor_at(o, 2); }
static void dtor3(void *o) { dtor_at(o, 3); }
static const kheap_ctor_fn g_ctor[NCACHES] = {ctor0, ctor1, ctor2, ctor3};
static const kheap_ctor_fn g_dtor[NCACHES] = {dtor0, dtor1, dtor2, dtor3};

/* ---- the live set ---- */

static size_t pattern_from(const struct block *b)
{
    return b->cache != NONE && g_caches[b->cache].ctor ? 8 : 0;
}

static void verify_block(const struct block *b, const char *when)
{
    size_t bad = fz_find_bad(b->p, b->size, pattern_from(b), b->seed, SIZE_MAX);
    FZ_CHECK(bad == SIZE_MAX,
             "op %u %s: block %p (size %zu, usable %zu, cache %d) byte %zu is 0x%02x, "
             "want 0x%02x",
             g_op, when, (void *)b->p, b->size, b->usable, b->cache, bad, b->p[bad],
             kt_pattern(b->seed, bad));
    if (pattern_from(b)) {
        uint64_t m;
        memcpy(&m, b->p, sizeof m);
        FZ_CHECK(m == (MAGIC ^ (unsigned)b->cache),
                 "op %u %s: object %p of cache %d lost its constructor's magic (0x%" PRIx64 ")",
                 g_op, when, (void *)b->p, b->cache, m);
    }
}

static void check_range(const unsigned char *p, size_t len, const char *what)
{
    uintptr_t lo = (uintptr_t)p, hi = lo + len;
    FZ_CHECK(lo >= (uintptr_t)g_mem && hi <= (uintptr_t)g_mem + HEAP_BYTES,
             "op %u %s: block [%p,+%zu) outside the heap's buffer", g_op, what, (const void *)p,
             len);
    for (size_t i = 0; i < g_nlive + g_nshrinkable; i++) {
        const struct block *b = i < g_nlive ? &g_live[i] : &g_shrinkable[i - g_nlive];
        uintptr_t blo = (uintptr_t)b->p, bhi = blo + b->usable;
        FZ_CHECK(hi <= blo || lo >= bhi,
                 "op %u %s: new block [%p,+%zu) overlaps live block [%p,+%zu)", g_op, what,
                 (const void *)p, len, (void *)b->p, b->usable);
    }
}

/* A new block at p of usable u for a request of size, aligned to align:
 * checked, filled with a fresh pattern, and made live (in the shrinkable
 * pool if asked). The caller counts it in the statistics. */
static struct block *add_block(unsigned char *p, size_t size, size_t u, size_t align, int cache,
                               int run, bool shrinkable, const char *what)
{
    FZ_CHECK(u >= size, "op %u %s(%zu): usable %zu < size", g_op, what, size, u);
    FZ_CHECK((uintptr_t)p % align == 0, "op %u %s(%zu): %p not aligned to %zu", g_op, what, size,
             (void *)p, align);
    check_range(p, u, what);
    struct block *b = shrinkable ? &g_shrinkable[g_nshrinkable++] : &g_live[g_nlive++];
    b->p = p;
    b->size = size;
    b->usable = u;
    b->seed = next_seed();
    b->cache = cache;
    b->run = run;
    if (cache != NONE)
        g_caches[cache].live++;
    fz_fill(p, size, pattern_from(b), b->seed);
    return b;
}

static void drop_block(size_t i)
{
    if (g_live[i].cache != NONE)
        g_caches[g_live[i].cache].live--;
    g_live[i] = g_live[--g_nlive];
}

/* ---- NULL returns ---- */


/* An allocation returned NULL (counted as one failure): allowed only when
 * the run it needed (a slab's, or the block's own pages plus alignment)
 * cannot be had now, or, for a small one, when the heap is nearly full. */
static void null_return(const char *what, size_t size, size_t align, size_t slab_pages)
{
    m_failed++;
    bool small = size <= KHEAP_MAX_CLASS && align <= FZ_PAGE;
    size_t pages;
    if (small && slab_pages)
        pages = slab_pages;
    else if (small)
        pages = align > 8 ? g_slab_need_max : g_slab_need[kt_class_index(size)];
    else
        pages = (size ? size + FZ_PAGE - 1 : FZ_PAGE) / FZ_PAGE +
                (align > FZ_PAGE ? align / FZ_PAGE - 1 : 0);
    struct kheap_stats s;
    kheap_get_stats(g_heap, &s);
    bool allowed = (small && s.heap_free < s.heap_total / 32) ||
                   !kt_run_available(g_heap, pages, &m_allocs, &m_frees, &m_failed);
    FZ_CHECK(allowed,
             "op %u %s(size %zu, align %zu) returned NULL, yet a run of %zu pages was free "
             "(heap_free %zu of %zu, used %zu)",
             g_op, what, size, align, pages, s.heap_free, s.heap_total, m_used);
}

/* ---- statistics ---- */

static void verify_stats(void)
{
    struct kheap_stats s;
    kheap_get_stats(g_heap, &s);
    FZ_CHECK(s.used_bytes >= m_used && s.used_bytes <= m_used + pend_bytes,
             "op %u: used_bytes %zu, model %zu (+ up to %zu deferred)", g_op, s.used_bytes,
             m_used, pend_bytes);
    FZ_CHECK(s.allocation_count == m_allocs,
             "op %u: allocation_count %" PRIu64 " != model %" PRIu64, g_op, s.allocation_count,
             m_allocs);
    FZ_CHECK(s.free_count <= m_frees && s.free_count + pend_n >= m_frees,
             "op %u: free_count %" PRIu64 ", model %" PRIu64 " (up to %" PRIu64 " deferred)",
             g_op, s.free_count, m_frees, pend_n);
    FZ_CHECK(s.failed_count == m_failed, "op %u: failed_count %" PRIu64 " != model %" PRIu64,
             g_op, s.failed_count, m_failed);
    FZ_CHECK(s.allocated_bytes - s.freed_bytes == s.used_bytes,
             "op %u: allocated_bytes %" PRIu64 " - freed_bytes %" PRIu64 " != used_bytes %zu",
             g_op, s.allocated_bytes, s.freed_bytes, s.used_bytes);
    FZ_CHECK(s.peak_bytes >= s.used_bytes, "op %u: peak_bytes %zu < used_bytes %zu", g_op,
             s.peak_bytes, s.used_bytes);
    FZ_CHECK(s.heap_used + s.heap_free == s.heap_total,
             "op %u: heap_used %zu + heap_free %zu != heap_total %zu", g_op, s.heap_used,
             s.heap_free, s.heap_total);
    no_reports("(stats)");
}

static void check_heap(const char *when)
{
    const void *addr = NULL;
    const char *msg = kheap_check_quiescent(g_heap, &addr);
    FZ_CHECK(msg == NULL, "op %u %s: kheap_check_quiescent: %s at %p", g_op, when, msg, addr);
    for (size_t i = 0; i < g_nlive; i++)
        verify_block(&g_live[i], when);
    for (size_t i = 0; i < g_nshrinkable; i++)
        verify_block(&g_shrinkable[i], when);
    for (unsigned i = 0; i < NCACHES; i++) {
        struct fcache *fc = &g_caches[i];
        if (!fc->c)
            continue;
        struct kheap_cache_info ci;
        kheap_cache_info(fc->c, &ci);
        FZ_CHECK(ci.active_objs >= fc->live + fc->r.count &&
                     ci.active_objs <= fc->live + fc->r.count + fc->pend,
                 "op %u %s: cache %u active_objs %zu != model %zu live + %zu in reserve "
                 "(+ up to %zu deferred)",
                 g_op, when, i, ci.active_objs, fc->live, fc->r.count, fc->pend);
    }
}

/* ---- operations ---- */

static size_t pick(struct fz_in *in, size_t n)
{
    return n ? fz_u16(in) % n : 0;
}

static void free_at(size_t i, int how)
{
    struct block *b = &g_live[i];
    verify_block(b, "before free");
    size_t u = kheap_usable_size(g_heap, b->p);
    FZ_CHECK(u == b->usable, "op %u: usable_size(%p) %zu, was %zu", g_op, (void *)b->p, u,
             b->usable);
    if (how == 1 && b->cache != NONE) {
        kheap_cache_free(g_caches[b->cache].c, b->p);
    } else if (how == 2) {
        kheap_free_flags(g_heap, b->p, KHEAP_NOLOCK);
        pend_bytes += b->usable;
        pend_n++;
        if (b->cache != NONE)
            g_caches[b->cache].pend++;
    } else if (how == 3 && b->cache != NONE) {
        kheap_cache_free_flags(g_caches[b->cache].c, b->p, KHEAP_NOLOCK);
        pend_bytes += b->usable;
        pend_n++;
        g_caches[b->cache].pend++;
    } else {
        kheap_free(g_heap, b->p); /* an object goes back to its own cache */
    }
    m_frees++;
    m_used -= b->usable;
    drop_block(i);
}

/* Sampled guard blocks (kheap_set_sample): once sampling was on, a
 * plain allocation of at most a page may be a sampled block, whose usable
 * size is exactly the size asked for, and which realloc always moves. */
static bool g_sampled_ever;

static bool usable_ok(size_t size, size_t u)
{
    return u == fz_usable(size) || (g_sampled_ever && size <= FZ_PAGE && u == size);
}

/* The block's run, for realloc's rules: unknown if it may be sampled. */
static int run_of(size_t size, size_t u)
{
    if (u > KHEAP_MAX_CLASS)
        return RUN_YES;
    return g_sampled_ever && size <= FZ_PAGE && u == size ? RUN_MAYBE : RUN_NO;
}

static void op_sample(struct fz_in *in)
{
    static const unsigned long rates[] = {0, 1, 2, 5, 50};
    unsigned long every = rates[fz_u8(in) % 5];
    int err = kheap_set_sample(g_heap, every);
    /* The pool's pages may not be there (a full heap). */
    FZ_CHECK(err == KHEAP_OK || (every && err == KHEAP_ENOMEM),
             "op %u: kheap_set_sample(%lu) = %d (%s)", g_op, every, err, kheap_strerror(err));
    if (!err && every)
        g_sampled_ever = true;
}

static void op_alloc(struct fz_in *in, bool shrinkable)
{
    size_t size = fz_size(in, MAX_REQ);
    unsigned char *p = kheap_alloc(g_heap, size);
    if (!p) {
        null_return("kheap_alloc", size, 0, 0);
        return;
    }
    size_t u = kheap_usable_size(g_heap, p);
    FZ_CHECK(usable_ok(size, u), "op %u: kheap_alloc(%zu): usable %zu, the rule says %zu", g_op,
             size, u, fz_usable(size));
    m_allocs++;
    m_used += u;
    add_block(p, size, u, kt_natural_align(u), NONE, run_of(size, u), shrinkable, "kheap_alloc");
}

static void op_aligned(struct fz_in *in)
{
    unsigned a = fz_u8(in);
    size_t align = a % 32 == 31 ? 0 : (size_t)1 << (a % 21);
    size_t size = fz_size(in, MAX_REQ);
    unsigned char *p = kheap_alloc_aligned(g_heap, size, align);
    if (!p) {
        null_return("kheap_alloc_aligned", size, align, 0);
        return;
    }
    size_t u = kheap_usable_size(g_heap, p);
    FZ_CHECK(fz_is_class(u) || (u > KHEAP_MAX_CLASS && u % FZ_PAGE == 0) ||
                 (align <= 8 && usable_ok(size, u)), /* kheap_alloc's block */
             "op %u: kheap_alloc_aligned(%zu, %zu): usable %zu is neither a class nor pages", g_op,
             size, align, u);
    m_allocs++;
    m_used += u;
    add_block(p, size, u, align ? align : 8, NONE, u > KHEAP_MAX_CLASS ? RUN_YES : RUN_MAYBE,
              false, "kheap_alloc_aligned");
}

static void op_calloc(struct fz_in *in)
{
    size_t n = fz_u8(in) % 17, size = fz_size(in, MAX_REQ / 16);
    unsigned char *p = kheap_calloc(g_heap, n, size);
    if (!p) {
        null_return("kheap_calloc", n * size, 0, 0);
        return;
    }
    size_t u = kheap_usable_size(g_heap, p);
    FZ_CHECK(usable_ok(n * size, u), "op %u: kheap_calloc(%zu, %zu): usable %zu, rule %zu",
             g_op, n, size, u, fz_usable(n * size));
    for (size_t i = 0; i < n * size; i++)
        FZ_CHECK(p[i] == 0, "op %u: kheap_calloc(%zu, %zu) = %p: byte %zu is 0x%02x", g_op, n,
                 size, (void *)p, i, p[i]);
    m_allocs++;
    m_used += u;
    add_block(p, n * size, u, kt_natural_align(u), NONE, run_of(n * size, u), false,
              "kheap_calloc");
}

/* A kmalloc block of the model (not a cache object), or SIZE_MAX. */
static size_t pick_kmalloc(struct fz_in *in)
{
    if (!g_nlive)
        return SIZE_MAX;
    size_t i = pick(in, g_nlive);
    for (size_t k = 0; k < g_nlive; k++, i = (i + 1) % g_nlive)
        if (g_live[i].cache == NONE)
            return i;
    return SIZE_MAX;
}

static void op_realloc(struct fz_in *in)
{
    unsigned how = fz_u8(in);
    size_t i = pick_kmalloc(in);
    if (how % 16 == 0 || i == SIZE_MAX) {
        size_t size = fz_size(in, MAX_REQ);
        unsigned char *p = kheap_realloc(g_heap, NULL, size);
        if (!p) {
            null_return("kheap_realloc(NULL)", size, 0, 0);
            return;
        }
        size_t u = kheap_usable_size(g_heap, p);
        FZ_CHECK(usable_ok(size, u), "op %u: kheap_realloc(NULL, %zu): usable %zu, rule %zu",
                 g_op, size, u, fz_usable(size));
        m_allocs++;
        m_used += u;
        add_block(p, size, u, kt_natural_align(u), NONE, run_of(size, u), false,
                  "kheap_realloc(NULL)");
        return;
    }
    struct block *b = &g_live[i];
    verify_block(b, "before realloc");
    size_t old = b->size, old_u = b->usable, size;
    switch (how % 8) {
    case 0: size = 0; break;
    case 1: size = old + old / 2 + 1; break;
    case 2: size = old / 2; break;
    case 3: size = old + fz_u8(in) % 17; break;
    case 4: size = old > 16 ? old - fz_u8(in) % 17 : old; break;
    default: size = fz_size(in, MAX_REQ); break;
    }
    if (size > MAX_REQ)
        size = MAX_REQ;
    unsigned char *q = kheap_realloc(g_heap, b->p, size);
    if (size == 0) {
        FZ_CHECK(q == NULL, "op %u: kheap_realloc(%p, 0) = %p, not NULL", g_op, (void *)b->p,
                 (void *)q);
        m_frees++;
        m_used -= old_u;
        drop_block(i);
        return;
    }
    if (!q) {
        null_return("kheap_realloc", size, 0, 0);
        verify_block(b, "after a failed realloc");
        size_t u = kheap_usable_size(g_heap, b->p);
        FZ_CHECK(u == old_u, "op %u: failed realloc changed usable %zu -> %zu", g_op, old_u, u);
        return;
    }
    size_t u = kheap_usable_size(g_heap, q);
    FZ_CHECK(u >= size, "op %u: kheap_realloc(%zu -> %zu): usable %zu < size", g_op, old, size, u);
    /* In place for a size of the block's class; a smaller class's size
     * moves, unless that class has no memory (an allocation of it then
     * fails too). */
    bool class_fits = b->run == RUN_NO && size <= old_u && fz_usable(size) == old_u;
    FZ_CHECK(!class_fits || q == b->p, "op %u: kheap_realloc(%p, %zu) moved a class-%zu object",
             g_op, (void *)b->p, size, old_u);
    if (b->run == RUN_NO && size < old_u && !class_fits && q == b->p && !g_sampled_ever) {
        void *probe = kheap_alloc(g_heap, size);
        FZ_CHECK(probe == NULL,
                 "op %u: kheap_realloc(%p, %zu) kept a class-%zu object, though class %zu has "
                 "memory", g_op, (void *)b->p, size, old_u, fz_usable(size));
        if (probe)
            kheap_free(g_heap, probe);
        else
            null_return("kheap_alloc", size, 0, 0);
    }
    bool run_shrinks = b->run == RUN_YES && size > KHEAP_MAX_CLASS && size <= old_u;
    FZ_CHECK(!run_shrinks || q == b->p, "op %u: kheap_realloc(%p, %zu) moved a shrinking run",
             g_op, (void *)b->p, size);
    size_t keep = old < size ? old : size;
    size_t bad = fz_find_bad(q, old, 0, b->seed, keep);
    FZ_CHECK(bad == SIZE_MAX, "op %u: kheap_realloc(%zu -> %zu) %p -> %p: byte %zu is 0x%02x, "
             "was 0x%02x", g_op, old, size, (void *)b->p, (void *)q, bad, q[bad],
             kt_pattern(b->seed, bad));
    if (q == b->p) {
        FZ_CHECK(b->run != RUN_NO || u == old_u,
                 "op %u: in-place realloc of a class-%zu object to %zu: usable %zu", g_op, old_u,
                 size, u);
        FZ_CHECK(b->run != RUN_YES || u % FZ_PAGE == 0,
                 "op %u: in-place realloc of a run to %zu: usable %zu not whole pages", g_op, size,
                 u);
    } else {
        FZ_CHECK(usable_ok(size, u), "op %u: kheap_realloc moved %zu -> %zu: usable %zu, rule %zu",
                 g_op, old, size, u, fz_usable(size));
        m_allocs++;
        m_frees++;
    }
    /* Out of the live set while its new range is checked against it. */
    struct block nb = *b;
    drop_block(i);
    m_used = m_used - old_u + u;
    int run = q == nb.p ? nb.run : run_of(size, u);
    /* add_block refills from byte 0: the kept bytes were checked above. */
    add_block(q, size, u, q == nb.p ? 1 : kt_natural_align(u), NONE, run, false, "kheap_realloc");
}

static void op_free(struct fz_in *in)
{
    unsigned how = fz_u8(in) % 8;
    if (g_nlive)
        free_at(pick(in, g_nlive), how < 4 ? 0 : how < 6 ? 1 : how == 6 ? 2 : 3);
}

static void op_nolock_alloc(struct fz_in *in)
{
    unsigned k = fz_u8(in);
    struct fcache *fc = &g_caches[k % NCACHES];
    if (k & 0x80 && fc->c) {
        unsigned char *p = kheap_cache_alloc_flags(fc->c, KHEAP_NOLOCK);
        if (!p)
            return; /* allowed; not a failure of failed_count */
        m_allocs++;
        m_used += fc->objsize;
        struct block *b = add_block(p, fc->size, fc->objsize, fc->align, (int)(k % NCACHES),
                                    RUN_NO, false, "kheap_cache_alloc_flags");
        verify_block(b, "after kheap_cache_alloc_flags");
        return;
    }
    size_t size = fz_size(in, MAX_REQ);
    unsigned char *p = kheap_alloc_flags(g_heap, size, KHEAP_NOLOCK);
    if (!p)
        return;
    size_t u = kheap_usable_size(g_heap, p);
    FZ_CHECK(size <= KHEAP_MAX_CLASS && u == fz_usable(size),
             "op %u: kheap_alloc_flags(%zu, NOLOCK): usable %zu, rule %zu", g_op, size, u,
             fz_usable(size));
    m_allocs++;
    m_used += u;
    add_block(p, size, u, kt_natural_align(u), NONE, RUN_NO, false, "kheap_alloc_flags");
}

static void op_cache_create(struct fz_in *in)
{
    unsigned k = fz_u8(in), idx = k % NCACHES;
    struct fcache *fc = &g_caches[idx];
    if (fc->c)
        return;
    bool ctor = k & 0x10;
    size_t size = fz_u16(in) % 8192 + 1;
    if (ctor && size < 8)
        size = 8;
    unsigned a = fz_u8(in);
    size_t align = a % 16 > 12 ? 0 : (size_t)1 << (a % 16);
    memset(fc, 0, sizeof *fc);
    if (k & 0x20) {
        struct kheap_cache_tuning t = {fz_u8(in) % 80, fz_u8(in) % 8};
        if (t.mag_cap >= 65)
            t.mag_cap = KHEAP_TUNE_DEFAULT;
        fc->c = kheap_cache_create_tuned(g_heap, "fuzz-tuned", size, align,
                                         ctor ? g_ctor[idx] : NULL, ctor ? g_dtor[idx] : NULL, &t);
    } else {
        fc->c = kheap_cache_create(g_heap, "fuzz", size, align, ctor ? g_ctor[idx] : NULL,
                                   ctor ? g_dtor[idx] : NULL);
    }
    if (!fc->c) {
        /* Only for want of memory for the cache structure; it may count. */
        struct kheap_stats s;
        kheap_get_stats(g_heap, &s);
        FZ_CHECK(s.heap_free < 16 * FZ_PAGE,
                 "op %u: kheap_cache_create(%zu, %zu) failed with %zu bytes of free pages", g_op,
                 size, align, s.heap_free);
        m_failed = s.failed_count;
        return;
    }
    struct kheap_cache_info ci;
    kheap_cache_info(fc->c, &ci);
    FZ_CHECK(ci.objsize >= size && ci.active_objs == 0,
             "op %u: new cache of %zu bytes: objsize %zu, active %zu", g_op, size, ci.objsize,
             ci.active_objs);
    fc->size = size;
    fc->align = align ? align : 8;
    fc->objsize = ci.objsize;
    fc->slab_pages = ci.pagesperslab;
    fc->ctor = ctor;
}

/* A new object of cache idx: checked and made live. */
static void cache_obj(unsigned idx, unsigned char *p, const char *what)
{
    struct fcache *fc = &g_caches[idx];
    if (fc->ctor) {
        uint64_t m;
        memcpy(&m, p, sizeof m);
        FZ_CHECK(m == (MAGIC ^ idx), "op %u %s: object %p without its constructor's magic", g_op,
                 what, (void *)p);
    }
    add_block(p, fc->size, fc->objsize, fc->align, (int)idx, RUN_NO, false, what);
}

static void op_cache_alloc(struct fz_in *in)
{
    unsigned idx = fz_u8(in) % NCACHES;
    struct fcache *fc = &g_caches[idx];
    if (!fc->c || g_nlive >= MAX_LIVE)
        return;
    unsigned char *p = kheap_cache_alloc(fc->c);
    if (!p) {
        null_return("kheap_cache_alloc", fc->objsize, fc->align, fc->slab_pages);
        return;
    }
    size_t u = kheap_usable_size(g_heap, p);
    FZ_CHECK(u == fc->objsize, "op %u: usable_size of a cache object %zu != objsize %zu", g_op, u,
             fc->objsize);
    m_allocs++;
    m_used += fc->objsize;
    cache_obj(idx, p, "kheap_cache_alloc");
}

static void op_cache_bulk(struct fz_in *in)
{
    unsigned k = fz_u8(in), idx = k % NCACHES;
    struct fcache *fc = &g_caches[idx];
    if (!fc->c)
        return;
    void *objs[64];
    size_t n = fz_u8(in) % 65;
    if (k & 0x80) { /* free: this cache's objects, and some NULLs */
        size_t m = 0;
        for (size_t i = 0; i < g_nlive && m < n;) {
            if (g_live[i].cache == (int)idx && fz_u8(in) & 1) {
                verify_block(&g_live[i], "before kheap_cache_free_bulk");
                objs[m++] = g_live[i].p;
                m_frees++;
                m_used -= fc->objsize;
                drop_block(i);
                if (m < n && fz_u8(in) % 8 == 0)
                    objs[m++] = NULL;
            } else {
                i++;
            }
        }
        kheap_cache_free_bulk(fc->c, m, objs);
        return;
    }
    if (g_nlive + n > MAX_LIVE)
        n = MAX_LIVE - g_nlive;
    size_t got = kheap_cache_alloc_bulk(fc->c, n, objs);
    if (got == 0) {
        if (n)
            m_failed++; /* all or nothing: the statistics stay */
        return;
    }
    FZ_CHECK(got == n, "op %u: kheap_cache_alloc_bulk(%zu) gave %zu", g_op, n, got);
    m_allocs += n;
    m_used += n * fc->objsize;
    for (size_t i = 0; i < n; i++)
        cache_obj(idx, objs[i], "kheap_cache_alloc_bulk");
}

static void op_kmalloc_bulk(struct fz_in *in)
{
    unsigned k = fz_u8(in);
    void *ptrs[64];
    size_t n = fz_u8(in) % 65;
    if (k & 1) { /* free any live blocks, cache objects too */
        size_t m = 0;
        for (size_t i = 0; i < g_nlive && m < n;) {
            if (fz_u8(in) & 1) {
                verify_block(&g_live[i], "before kheap_free_bulk");
                ptrs[m++] = g_live[i].p;
                m_frees++;
                m_used -= g_live[i].usable;
                drop_block(i);
            } else {
                i++;
            }
        }
        kheap_free_bulk(g_heap, m, ptrs);
        return;
    }
    size_t size = fz_size(in, k & 2 ? MAX_REQ / 8 : 2048);
    if (g_nlive + n > MAX_LIVE)
        n = MAX_LIVE - g_nlive;
    size_t got = kheap_alloc_bulk(g_heap, size, n, ptrs);
    if (got == 0) {
        if (!n)
            return;
        /* Large blocks made before the failure were freed again and
         * counted both ways. */
        struct kheap_stats s;
        kheap_get_stats(g_heap, &s);
        uint64_t extra = s.allocation_count - m_allocs;
        FZ_CHECK(s.free_count - m_frees == extra && (size > KHEAP_MAX_CLASS || extra == 0),
                 "op %u: failed kheap_alloc_bulk(%zu, %zu): allocs +%" PRIu64 ", frees +%" PRIu64,
                 g_op, size, n, extra, s.free_count - m_frees);
        m_allocs += extra;
        m_frees += extra;
        m_failed++;
        return;
    }
    FZ_CHECK(got == n, "op %u: kheap_alloc_bulk(%zu, %zu) gave %zu", g_op, size, n, got);
    m_allocs += n;
    size_t u = fz_usable(size);
    m_used += n * u;
    for (size_t i = 0; i < n; i++) {
        size_t ui = kheap_usable_size(g_heap, ptrs[i]);
        FZ_CHECK(ui == u, "op %u: kheap_alloc_bulk(%zu) block %zu: usable %zu, rule %zu", g_op,
                 size, i, ui, u);
        add_block(ptrs[i], size, u, kt_natural_align(u), NONE,
                  u > KHEAP_MAX_CLASS ? RUN_YES : RUN_NO, false, "kheap_alloc_bulk");
    }
}

static void op_reserve(struct fz_in *in)
{
    unsigned k = fz_u8(in), idx = k % NCACHES;
    struct fcache *fc = &g_caches[idx];
    if (!fc->c)
        return;
    switch ((k >> 2) % 4) {
    case 0: {
        size_t n = fz_u8(in) % 33, had = fc->r.count;
        int err = kheap_reserve_fill(fc->c, n, &fc->r);
        if (err == KHEAP_ENOMEM) {
            FZ_CHECK(fc->r.count == had, "op %u: failed reserve fill changed its count %zu -> %zu",
                     g_op, had, fc->r.count);
            struct kheap_stats s;
            kheap_get_stats(g_heap, &s);
            FZ_CHECK(s.failed_count <= m_failed + 1, "op %u: failed reserve fill counted %" PRIu64
                     " failures", g_op, s.failed_count - m_failed);
            m_failed = s.failed_count;
            return;
        }
        FZ_CHECK(err == KHEAP_OK && fc->r.count == (had > n ? had : n),
                 "op %u: kheap_reserve_fill(%zu) = %d, held %zu, now %zu", g_op, n, err, had,
                 fc->r.count);
        m_allocs += fc->r.count - had;
        m_used += (fc->r.count - had) * fc->objsize;
        break;
    }
    case 1:
    case 2: {
        if (g_nlive >= MAX_LIVE)
            return;
        size_t had = fc->r.count;
        unsigned char *p = kheap_reserve_alloc(&fc->r);
        FZ_CHECK((p != NULL) == (had > 0), "op %u: kheap_reserve_alloc with %zu held = %p", g_op,
                 had, (void *)p);
        if (p)
            cache_obj(idx, p, "kheap_reserve_alloc");
        break;
    }
    default: {
        size_t had = fc->r.count;
        size_t n = kheap_reserve_return(&fc->r);
        FZ_CHECK(n == had && fc->r.count == 0, "op %u: kheap_reserve_return gave %zu of %zu", g_op,
                 n, had);
        m_frees += n;
        m_used -= n * fc->objsize;
        break;
    }
    }
}

static void cache_close(unsigned idx)
{
    struct fcache *fc = &g_caches[idx];
    for (size_t i = 0; i < g_nlive;) {
        if (g_live[i].cache == (int)idx)
            free_at(i, 1);
        else
            i++;
    }
    size_t n = kheap_reserve_return(&fc->r);
    m_frees += n;
    m_used -= n * fc->objsize;
    int err = kheap_cache_destroy(fc->c);
    FZ_CHECK(err == KHEAP_OK, "op %u: kheap_cache_destroy(empty cache %u) = %d (%s)", g_op, idx,
             err, kheap_strerror(err));
    FZ_CHECK(fc->dtors == fc->ctors && fc->dtor_bad == 0,
             "op %u: cache %u destroyed: %lu constructed, %lu destructed, %lu without the magic",
             g_op, idx, fc->ctors, fc->dtors, fc->dtor_bad);
    fc->c = NULL;
}

static void no_pending(void)
{
    pend_bytes = 0;
    pend_n = 0;
    for (unsigned i = 0; i < NCACHES; i++)
        g_caches[i].pend = 0;
}

static void op_reclaim(struct fz_in *in)
{
    unsigned k = fz_u8(in);
    size_t got;
    if (k % 4 == 0) {
        got = kheap_purge(g_heap, (size_t)fz_u16(in) * FZ_PAGE / 16);
    } else if (k % 4 == 1 && g_caches[k / 4 % NCACHES].c) {
        got = kheap_cache_shrink(g_caches[k / 4 % NCACHES].c);
    } else {
        got = kheap_reclaim(g_heap);
        no_pending(); /* the deferred frees are done */
    }
    FZ_CHECK(got % FZ_PAGE == 0, "op %u: reclaim/purge op %u gave back %zu bytes, not pages",
             g_op, k % 4, got);
}

/* The shrinker gives back blocks of the shrinkable pool until want_bytes
 * are freed. */
static size_t shrinker(kheap_t *heap, size_t want_bytes, void *arg)
{
    FZ_CHECK(heap == g_heap && arg == (void *)g_shrinkable,
             "op %u: shrinker called with heap %p arg %p", g_op, (void *)heap, arg);
    size_t freed = 0;
    while (g_nshrinkable && freed < want_bytes) {
        struct block *b = &g_shrinkable[--g_nshrinkable];
        verify_block(b, "in the shrinker");
        kheap_free(heap, b->p);
        m_frees++;
        m_used -= b->usable;
        freed += b->usable;
    }
    return freed;
}

/* Keep the last round's objects for the next round. */
static void op_shrinkable(struct fz_in *in)
{
    unsigned k = fz_u8(in);
    if (k % 4 == 0)
        kheap_set_low_water(g_heap, (size_t)fz_u16(in) % (HEAP_BYTES / FZ_PAGE) * FZ_PAGE);
    else if (g_nshrinkable < MAX_SHRINKABLE)
        op_alloc(in, true);
}

static void op_usable(struct fz_in *in)
{
    if (!g_nlive)
        return;
    struct block *b = &g_live[pick(in, g_nlive)];
    size_t u = kheap_usable_size(g_heap, b->p);
    FZ_CHECK(u == b->usable, "op %u: usable_size(%p) %zu, was %zu", g_op, (void *)b->p, u,
             b->usable);
}

static void run_op(struct fz_in *in)
{
    unsigned op = fz_u8(in);
    bool room = g_nlive < MAX_LIVE;
    switch (op % 20) {
    case 0: case 1: case 2: if (room) op_alloc(in, false); break;
    case 3: if (room) op_aligned(in); break;
    case 4: if (room) op_calloc(in); break;
    case 5: case 6: if (room) op_realloc(in); break;
    case 7: case 8: case 9: op_free(in); break;
    case 10: if (room) op_nolock_alloc(in); break;
    case 11: op_cache_create(in); break;
    case 12: {
        unsigned idx = fz_u8(in) % NCACHES;
        if (g_caches[idx].c)
            cache_close(idx);
        break;
    }
    case 13: case 14: op_cache_alloc(in); break;
    case 15: op_cache_bulk(in); break;
    case 16: op_kmalloc_bulk(in); break;
    case 17: op_reserve(in); break;
    case 18: op_reclaim(in); break;
    default:
        if (op & 0x80)
            op_usable(in);
        else if (op & 0x40)
            check_heap("on request");
        else if (op & 0x20)
            op_sample(in);
        else
            op_shrinkable(in);
        break;
    }
}

static void read_slab_needs(void)
{
    g_slab_need_max = kt_slab_needs(g_heap, g_slab_need);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_start();
    struct fz_in in = {data, size};
    g_nlive = g_nshrinkable = 0;
    memset(g_caches, 0, sizeof g_caches);
    m_used = 0;
    m_allocs = m_frees = m_failed = pend_n = 0;
    g_sampled_ever = false;
    pend_bytes = 0;
    g_seed = (uint32_t)size;
    g_op = 0;
    kt_reports_reset();

    int err = kheap_init(&g_heap, g_mem, HEAP_BYTES);
    FZ_CHECK(err == KHEAP_OK, "kheap_init(%zu) = %d (%s)", HEAP_BYTES, err, kheap_strerror(err));
    /* Decay runs on the clock: off, so that an input replays exactly. */
    kheap_set_decay(g_heap, 0);
    err = kheap_shrinker_register(g_heap, shrinker, g_shrinkable);
    FZ_CHECK(err == KHEAP_OK, "kheap_shrinker_register = %d", err);
    read_slab_needs();

    while (fz_more(&in) && g_op < MAX_OPS) {
        g_op++;
        run_op(&in);
        verify_stats();
        if (g_op % CHECK_EVERY == 0)
            check_heap("periodic");
    }

    /* Free everything, destroy the caches: the heap must be empty. */
    while (g_nlive)
        free_at(g_nlive - 1, 0);
    for (unsigned i = 0; i < NCACHES; i++)
        if (g_caches[i].c)
            cache_close(i);
    shrinker(g_heap, SIZE_MAX, g_shrinkable);
    kheap_reclaim(g_heap);
    no_pending();
    verify_stats();
    check_heap("at the end");
    struct kheap_stats s;
    kheap_get_stats(g_heap, &s);
    FZ_CHECK(s.used_bytes == 0 && s.slab_bytes == 0 && s.large_bytes == 0 && s.large_count == 0,
             "all freed: used %zu, slab %zu, large %zu in %zu blocks", s.used_bytes, s.slab_bytes,
             s.large_bytes, s.large_count);
    FZ_CHECK(s.heap_free == s.heap_total - s.metadata_bytes,
             "all freed: heap_free %zu != heap_total %zu - metadata %zu", s.heap_free,
             s.heap_total, s.metadata_bytes);
    FZ_CHECK(s.allocation_count == s.free_count,
             "all freed: %" PRIu64 " allocations, %" PRIu64 " frees", s.allocation_count,
             s.free_count);
    kheap_shrinker_unregister(g_heap, shrinker, g_shrinkable);
    kheap_fini(g_heap);
    return 0;
}
