/*
 * fuzz_misuse.c - libFuzzer harness: bad pointers and impossible sizes,
 * driven by the input, among ordinary allocations of a shadow model.
 *
 * Each input runs over a fresh heap of HEAP_BYTES with two user caches of
 * the same object size, one with a constructor. Ordinary operations
 * (kheap_alloc, _aligned, kheap_cache_alloc, frees) keep a live set whose
 * blocks carry a pattern. Between them the input picks misuses, each of a
 * kind kheap.h and docs/DESIGN.md ("Misuse: what is detected") promise to
 * report at KHEAP_DEBUG 0, as tests/test_misuse.c asserts them:
 *  - an interior pointer of a live block (any offset inside its usable
 *    size) to kheap_free, kheap_realloc, kheap_usable_size,
 *    kheap_cache_free: INTERIOR;
 *  - the second free of a block, at once or after kheap_reclaim has sent
 *    the magazines back (not of a constructor cache's object, which
 *    carries no double-free key): DOUBLE_FREE, or FREE_RUN when its pages
 *    were given back;
 *  - a pointer outside the heap (stack, a global, malloc'd memory, just
 *    before or past the buffer, any address the input names): FOREIGN;
 *  - any other address inside the buffer (metadata, free runs, free slots,
 *    kheap's own structures, odd alignment), after kheap_reclaim: one
 *    report of some kind, or INTERIOR when it lies inside a live block;
 *  - an object of one cache, or a kmalloc block, freed to another cache:
 *    WRONG_CACHE;
 *  - destroying a cache with live objects: KHEAP_EBUSY and BUSY;
 *  - a bulk free with one bad pointer among good ones: that one report,
 *    the good ones freed;
 *  - a sized free (kheap_free_aligned_as) of a kmalloc block with a size
 *    past its usable bytes: SIZE_MISMATCH (and half the good frees of
 *    kmalloc blocks are sized, with the size and alignment asked for:
 *    no report).
 * The report hook records (tests/support.c); after each misuse there must
 * be exactly one report, of an allowed kind, at the address given; the
 * statistics must be as before; kheap_check_quiescent must pass and every
 * live block must keep its pattern. Impossible sizes (near SIZE_MAX, over
 * the heap, overflowing calloc and aligned sizes, bad alignments, bad
 * cache parameters, a realloc too big) must give NULL, no report, no
 * change but failed_count, and leave the block realloc'd intact. At the
 * end everything is freed and the heap must be empty.
 */
#include <inttypes.h>
#include <string.h>

#include "fuzz.h"
#include "kheap_port.h"

#define HEAP_BYTES ((size_t)2 << 20)
#define MAX_REQ ((size_t)256 << 10)
#define MAX_LIVE 128
#define MAX_OPS 1000
#define OBJ_SIZE 48
#define MAGIC 0x6d69737573654f4bull
#define NONE (-1)

static _Alignas(4096) unsigned char g_mem[HEAP_BYTES];
static kheap_t *g_heap;
static kheap_cache_t *g_cache[2]; /* [0] plain, [1] with a constructor */
static unsigned long g_ctors, g_dtors, g_dtor_bad;
static int g_global;

struct block {
    unsigned char *p;
    size_t size, usable;
    uint32_t seed;
    int cache;    /* 0, 1 or NONE */
    size_t align; /* kheap_alloc_aligned's, or 0 */
};

static struct block g_live[MAX_LIVE];
static size_t g_nlive;
static uint32_t g_seed;
static unsigned g_op;
static struct kheap_stats g_before;

/* Report kinds as a bit set. */
#define K(kind) (1u << (kind))
#define ANY_KIND 0xffffffffu

static void ctor(void *o)
{
    uint64_t m = MAGIC;
    memcpy(o, &m, sizeof m);
    g_ctors++;
}

static void dtor(void *o)
{
    uint64_t m;
    memcpy(&m, o, sizeof m);
    g_dtor_bad += m != MAGIC;
    g_dtors++;
}

static uint32_t next_seed(void)
{
    g_seed = g_seed * 1664525u + 1013904223u;
    return g_seed;
}

static size_t pattern_from(const struct block *b)
{
    return b->cache == 1 ? 8 : 0;
}

static void verify_block(const struct block *b, const char *when)
{
    size_t bad = fz_find_bad(b->p, b->size, pattern_from(b), b->seed, SIZE_MAX);
    FZ_CHECK(bad == SIZE_MAX, "op %u %s: block %p (size %zu, cache %d) byte %zu is 0x%02x, "
             "want 0x%02x", g_op, when, (void *)b->p, b->size, b->cache, bad, b->p[bad],
             kt_pattern(b->seed, bad));
    if (b->cache == 1) {
        uint64_t m;
        memcpy(&m, b->p, sizeof m);
        FZ_CHECK(m == MAGIC, "op %u %s: object %p lost its constructor's magic", g_op, when,
                 (void *)b->p);
    }
}

static struct kheap_stats stats(void)
{
    struct kheap_stats s;
    kheap_get_stats(g_heap, &s);
    return s;
}

/* The live block containing addr (start included), or NULL. */
static struct block *block_at(uintptr_t addr)
{
    for (size_t i = 0; i < g_nlive; i++)
        if (addr >= (uintptr_t)g_live[i].p && addr < (uintptr_t)g_live[i].p + g_live[i].usable)
            return &g_live[i];
    return NULL;
}

/* ---- around each misuse ---- */

static void arm(void)
{
    kt_reports_reset();
    g_before = stats();
}

/* Exactly one report, of a kind in kinds, at addr (NULL: any address);
 * statistics as before; the heap consistent and every block intact. */
static void expect(unsigned kinds, const void *addr, const char *what)
{
    struct kheap_report r = kt_last_report();
    FZ_CHECK(kt_reports() == 1, "op %u %s at %p: %lu reports, want one (last %s: %s)", g_op, what,
             addr, kt_reports(), kt_report_kind_name((int)r.kind), r.reason ? r.reason : "-");
    FZ_CHECK(kinds & K(r.kind), "op %u %s at %p: report %s (%s), not an allowed kind (0x%x)", g_op,
             what, addr, kt_report_kind_name((int)r.kind), r.reason ? r.reason : "-", kinds);
    FZ_CHECK(!addr || r.addr == addr, "op %u %s: report at %p, want %p", g_op, what, r.addr, addr);
    FZ_CHECK(r.reason && r.reason[0] && r.function && r.function[0],
             "op %u %s: report without reason or function", g_op, what);
    struct kheap_stats s = stats();
    FZ_CHECK(s.used_bytes == g_before.used_bytes && s.free_count == g_before.free_count &&
                 s.allocation_count == g_before.allocation_count,
             "op %u %s changed the statistics: used %zu -> %zu, frees %" PRIu64 " -> %" PRIu64
             ", allocs %" PRIu64 " -> %" PRIu64, g_op, what, g_before.used_bytes, s.used_bytes,
             g_before.free_count, s.free_count, g_before.allocation_count, s.allocation_count);
    const void *at = NULL;
    const char *msg = kheap_check_quiescent(g_heap, &at);
    FZ_CHECK(msg == NULL, "op %u after %s: kheap_check_quiescent: %s at %p", g_op, what, msg, at);
    for (size_t i = 0; i < g_nlive; i++)
        verify_block(&g_live[i], what);
    kt_reports_reset();
}

static void expect_none(const char *what)
{
    struct kheap_report r = kt_last_report();
    FZ_CHECK(kt_reports() == 0, "op %u %s: unexpected report %s at %p (%s)", g_op, what,
             kt_report_kind_name((int)r.kind), r.addr, r.reason ? r.reason : "-");
}

/* One of the calls that take a block, on a bad pointer: each must refuse
 * it with one report and change nothing. */
/* A bad pointer that is a free slot of a slab: a free of it may be found
 * only when the magazine it went to goes back to the slab (a slot with no
 * double-free key: never handed out, or a constructor cache's), as a
 * double free; kheap_reclaim makes that happen now. */
static bool g_flush_ok;

static void bad_call(unsigned how, void *p, unsigned kinds, const char *what)
{
    arm();
    switch (how % 4) {
    case 0:
        kheap_free(g_heap, p);
        break;
    case 1: {
        void *q = kheap_realloc(g_heap, p, 100);
        FZ_CHECK(q == NULL, "op %u kheap_realloc(%s %p) = %p, not NULL", g_op, what, p, q);
        break;
    }
    case 2: {
        size_t u = kheap_usable_size(g_heap, p);
        FZ_CHECK(u == 0, "op %u kheap_usable_size(%s %p) = %zu, not 0", g_op, what, p, u);
        break;
    }
    default: {
        /* To the block's own cache when it is one; a wrong cache may be
         * what is reported then. */
        struct block *b = block_at((uintptr_t)p);
        int c = b && b->cache != NONE ? b->cache : (int)(how / 4 % 2);
        if (!b || b->cache != c)
            kinds |= K(KHEAP_REPORT_WRONG_CACHE);
        kheap_cache_free(g_cache[c], p);
        break;
    }
    }
    if (g_flush_ok && kt_reports() == 0 && (how % 4 == 0 || how % 4 == 3)) {
        kheap_reclaim(g_heap);
        kinds = K(KHEAP_REPORT_DOUBLE_FREE);
    }
    g_flush_ok = false;
    expect(kinds, p, what);
}

/* ---- ordinary operations ---- */

static void add_block(unsigned char *p, size_t size, size_t u, int cache, size_t align)
{
    FZ_CHECK(u >= size && (uintptr_t)p >= (uintptr_t)g_mem &&
                 (uintptr_t)p + u <= (uintptr_t)g_mem + HEAP_BYTES,
             "op %u: block %p of usable %zu for %zu bytes", g_op, (void *)p, u, size);
    FZ_CHECK(!block_at((uintptr_t)p) && !block_at((uintptr_t)p + u - 1),
             "op %u: new block %p (+%zu) overlaps a live one", g_op, (void *)p, u);
    struct block *b = &g_live[g_nlive++];
    *b = (struct block){p, size, u, next_seed(), cache, align};
    fz_fill(p, size, pattern_from(b), b->seed);
}

static void op_alloc(struct fz_in *in)
{
    unsigned k = fz_u8(in);
    if (k % 4 == 3) {
        int c = (int)(k / 4 % 2);
        unsigned char *p = kheap_cache_alloc(g_cache[c]);
        if (p)
            add_block(p, OBJ_SIZE, OBJ_SIZE, c, 0);
        return;
    }
    size_t size = fz_size(in, MAX_REQ);
    size_t align = k % 4 == 2 ? (size_t)8 << (k / 4 % 12) : 0;
    unsigned char *p = align ? kheap_alloc_aligned(g_heap, size, align) : kheap_alloc(g_heap, size);
    if (p)
        add_block(p, size, kheap_usable_size(g_heap, p), NONE, align);
}

/* Free block i the right way; it leaves the model. Half the kmalloc
 * blocks (by their seed) go with the size and alignment they were asked
 * with, which must never be reported. */
static void *free_at(size_t i)
{
    struct block b = g_live[i];
    verify_block(&b, "before free");
    if (b.cache != NONE)
        kheap_cache_free(g_cache[b.cache], b.p);
    else if (b.seed & 1)
        kheap_free_aligned_as(g_heap, b.p, b.size, b.align,
                              b.seed & 2 ? KHEAP_BLOCK_NEW : KHEAP_BLOCK_MALLOC);
    else
        kheap_free(g_heap, b.p);
    g_live[i] = g_live[--g_nlive];
    expect_none("a good free");
    return b.p;
}

/* ---- misuses ---- */

static void op_interior(struct fz_in *in)
{
    unsigned how = fz_u8(in);
    uint32_t off = fz_u32(in);
    if (!g_nlive)
        return;
    struct block *b = &g_live[off % g_nlive];
    if (b->usable < 2)
        return;
    bad_call(how, b->p + 1 + fz_u32(in) % (b->usable - 1), K(KHEAP_REPORT_INTERIOR),
             "interior pointer");
}

static void op_double_free(struct fz_in *in)
{
    unsigned how = fz_u8(in);
    if (!g_nlive)
        return;
    size_t i = fz_u16(in) % g_nlive;
    /* Not a constructor cache's object: it carries no double-free key, so
     * a second free is found only when its magazine goes back to the slab
     * (docs/DESIGN.md), not when it is made. */
    if (g_live[i].cache == 1)
        return;
    void *p = free_at(i);
    if (how & 0x80)
        kheap_reclaim(g_heap);
    bad_call(how, p, K(KHEAP_REPORT_DOUBLE_FREE) | K(KHEAP_REPORT_FREE_RUN), "freed block");
}

static void op_foreign(struct fz_in *in)
{
    unsigned how = fz_u8(in);
    int local = 0;
    uintptr_t lo = (uintptr_t)g_mem, hi = lo + HEAP_BYTES, a;
    void *m = NULL;
    switch (fz_u8(in) % 6) {
    case 0: a = (uintptr_t)&local; break;
    case 1: a = (uintptr_t)&g_global; break;
    case 2:
        m = malloc(64);
        FZ_CHECK(m != NULL, "malloc(64) failed");
        a = (uintptr_t)m;
        break;
    case 3: a = lo - 1 - fz_u16(in); break;
    case 4: a = hi + fz_u16(in); break;
    default:
        a = (uintptr_t)fz_u32(in) << 32 | fz_u32(in);
        if (a >= lo && a < hi)
            a = hi + (a - lo);
        if (!a)
            a = 1;
        break;
    }
    bad_call(how, (void *)a, K(KHEAP_REPORT_FOREIGN), "foreign pointer");
    free(m);
}

/* Anything in the buffer that is not a live block's start. Magazines are
 * emptied first: an object cached in one is allocated as far as its slab
 * knows, and a constructor cache's carries no key to tell it is free. */
static void op_wild(struct fz_in *in)
{
    unsigned how = fz_u8(in);
    uint32_t v = fz_u32(in);
    size_t off = how & 0x80 ? v % (64 << 10) : v % HEAP_BYTES; /* metadata is at the start */
    unsigned char *p = g_mem + off;
    struct block *b = block_at((uintptr_t)p);
    if (b && b->p == p)
        return;
    kheap_reclaim(g_heap);
    if (!b) {
        /* A free slot of a slab (kheap_usable_size, which looks in the
         * slab, tells) carries no double-free key if it was never handed
         * out or is a constructor cache's: a free of it, like a second
         * free of such an object (op_double_free), may be found only when
         * its magazine goes back to the slab (bad_call). */
        kt_reports_reset();
        (void)kheap_usable_size(g_heap, p);
        struct kheap_report r = kt_last_report();
        g_flush_ok = kt_reports() == 1 && r.kind == KHEAP_REPORT_DOUBLE_FREE;
        kt_reports_reset();
    }
    bad_call(how, p, b ? K(KHEAP_REPORT_INTERIOR) : ANY_KIND,
             b ? "pointer inside a live block" : "wild pointer into the heap");
}

static void op_wrong_cache(struct fz_in *in)
{
    unsigned how = fz_u8(in);
    if (!g_nlive)
        return;
    struct block *b = &g_live[fz_u16(in) % g_nlive];
    int c = b->cache == NONE ? (int)(how % 2) : 1 - b->cache;
    arm();
    kheap_cache_free(g_cache[c], b->p);
    expect(K(KHEAP_REPORT_WRONG_CACHE), b->p, "free to another cache");
}

/* A sized free of a kmalloc block with a size past its usable bytes: of
 * a class above the block's, or (a large block) of more pages. */
static void op_wrong_size(struct fz_in *in)
{
    unsigned how = fz_u8(in);
    if (!g_nlive)
        return;
    struct block *b = &g_live[fz_u16(in) % g_nlive];
    if (b->cache != NONE)
        return; /* an object of a user cache is freed as kheap_free frees it */
    size_t wrong = b->usable + 1 + (how & 0x80 ? fz_u16(in) : 0);
    arm();
    kheap_free_aligned_as(g_heap, b->p, wrong, b->align,
                          how & 1 ? KHEAP_BLOCK_NEW : KHEAP_BLOCK_MALLOC);
    expect(K(KHEAP_REPORT_SIZE_MISMATCH), b->p, "sized free of a wrong size");
}

static void op_busy(struct fz_in *in)
{
    int c = (int)(fz_u8(in) % 2);
    struct kheap_cache_info ci;
    kheap_cache_info(g_cache[c], &ci);
    if (!ci.active_objs)
        return;
    unsigned long dtors = g_dtors;
    arm();
    int err = kheap_cache_destroy(g_cache[c]);
    FZ_CHECK(err == KHEAP_EBUSY, "op %u: kheap_cache_destroy(busy cache %d) = %d", g_op, c, err);
    FZ_CHECK(g_dtors == dtors, "op %u: the refused destroy ran %lu destructors", g_op,
             g_dtors - dtors);
    expect(K(KHEAP_REPORT_BUSY), NULL, "destroy of a busy cache");
}

/* A bulk free of good blocks with one bad pointer among them. */
static void op_bulk_bad(struct fz_in *in)
{
    unsigned how = fz_u8(in);
    void *ptrs[16];
    size_t n = 0, bad_at = fz_u8(in) % 16;
    uintptr_t bad;
    int local = 0;
    /* The bad one: inside a block kept live, or on the stack. */
    struct block *inside = g_nlive > 1 && g_live[0].usable > 1 ? &g_live[0] : NULL;
    if (inside && how & 1)
        bad = (uintptr_t)inside->p + 1 + fz_u16(in) % (inside->usable - 1);
    else
        bad = (uintptr_t)&local;
    unsigned kinds = bad == (uintptr_t)&local ? K(KHEAP_REPORT_FOREIGN) : K(KHEAP_REPORT_INTERIOR);
    int c = (int)(how / 2 % 2);
    bool cache_bulk = how & 4;
    if (cache_bulk)
        kinds |= K(KHEAP_REPORT_WRONG_CACHE);
    arm();
    size_t good = 0, good_bytes = 0;
    for (size_t i = 1; i < g_nlive && n < 15;) {
        bool fits = !cache_bulk || g_live[i].cache == c;
        if (fits && fz_u8(in) & 1) {
            if (n == bad_at)
                ptrs[n++] = (void *)bad;
            verify_block(&g_live[i], "before a bulk free");
            ptrs[n++] = g_live[i].p;
            good++;
            good_bytes += g_live[i].usable;
            g_live[i] = g_live[--g_nlive];
        } else {
            i++;
        }
    }
    if (n <= bad_at)
        ptrs[n++] = (void *)bad;
    if (cache_bulk)
        kheap_cache_free_bulk(g_cache[c], n, ptrs);
    else
        kheap_free_bulk(g_heap, n, ptrs);
    g_before.used_bytes -= good_bytes;
    g_before.free_count += good;
    expect(kinds, (void *)bad, cache_bulk ? "kheap_cache_free_bulk" : "kheap_free_bulk");
}

static void op_impossible(struct fz_in *in)
{
    unsigned how = fz_u8(in);
    size_t k = fz_u16(in);
    arm();
    void *p = NULL;
    const char *what;
    switch (how % 9) {
    case 0:
        what = "kheap_alloc(near SIZE_MAX)";
        p = kheap_alloc(g_heap, SIZE_MAX - k);
        break;
    case 1:
        what = "kheap_alloc(over the heap)";
        p = kheap_alloc(g_heap, HEAP_BYTES + k * FZ_PAGE);
        break;
    case 2: {
        what = "kheap_calloc(overflowing)";
        size_t size = k + 2, n = SIZE_MAX / size + 1 + fz_u16(in);
        p = how & 0x80 ? kheap_calloc(g_heap, size, n) : kheap_calloc(g_heap, n, size);
        break;
    }
    case 3:
        what = "kheap_alloc_aligned(near SIZE_MAX)";
        p = kheap_alloc_aligned(g_heap, SIZE_MAX - k, (size_t)1 << (how / 9 % 24));
        break;
    case 4: {
        what = "kheap_alloc_aligned(bad alignment)";
        size_t a = k | 1;
        if (a == 1)
            a = 3;
        p = kheap_alloc_aligned(g_heap, k, a << (how / 9 % 20));
        break;
    }
    case 5:
        what = "kheap_alloc_aligned(huge alignment)";
        p = kheap_alloc_aligned(g_heap, k, (size_t)1 << (63 - how / 9 % 8));
        break;
    case 6: {
        what = "kheap_cache_create(bad size or alignment)";
        size_t size = how & 0x40 ? 0 : KHEAP_MAX_CLASS + 1 + k;
        size_t align = how & 0x20 ? (k | 1) + 2 : (size_t)FZ_PAGE << (1 + how / 9 % 4);
        if (how & 0x10)
            size = k % 1000 + 1; /* fine size, bad alignment */
        kheap_cache_t *c = kheap_cache_create(g_heap, "bad", size, align, NULL, NULL);
        FZ_CHECK(c == NULL, "op %u: kheap_cache_create(%zu, %zu) = %p", g_op, size, align,
                 (void *)c);
        break;
    }
    default: {
        what = "kheap_realloc(too big)";
        if (!g_nlive)
            return;
        struct block *b = &g_live[fz_u16(in) % g_nlive];
        size_t size = how & 0x80 ? SIZE_MAX - k : HEAP_BYTES + k * FZ_PAGE;
        if (b->cache != NONE)
            return; /* realloc is for kmalloc blocks */
        p = kheap_realloc(g_heap, b->p, size);
        FZ_CHECK(kheap_usable_size(g_heap, b->p) == b->usable,
                 "op %u: a failed realloc changed the usable size", g_op);
        break;
    }
    }
    FZ_CHECK(p == NULL, "op %u: %s gave %p", g_op, what, p);
    expect_none(what);
    struct kheap_stats s = stats();
    FZ_CHECK(s.used_bytes == g_before.used_bytes &&
                 s.allocation_count == g_before.allocation_count &&
                 s.free_count == g_before.free_count &&
                 s.failed_count <= g_before.failed_count + 1,
             "op %u: %s changed the statistics: used %zu -> %zu, allocs %" PRIu64 " -> %" PRIu64
             ", failed %" PRIu64 " -> %" PRIu64, g_op, what, g_before.used_bytes, s.used_bytes,
             g_before.allocation_count, s.allocation_count, g_before.failed_count,
             s.failed_count);
    for (size_t i = 0; i < g_nlive; i++)
        verify_block(&g_live[i], what);
}

static void run_op(struct fz_in *in)
{
    unsigned op = fz_u8(in);
    switch (op % 14) {
    case 0: case 1: case 2: case 3:
        if (g_nlive < MAX_LIVE)
            op_alloc(in);
        break;
    case 4:
        if (g_nlive)
            free_at(fz_u16(in) % g_nlive);
        break;
    case 5: op_interior(in); break;
    case 6: op_double_free(in); break;
    case 7: op_foreign(in); break;
    case 8: op_wild(in); break;
    case 9: op_wrong_cache(in); break;
    case 10: op_busy(in); break;
    case 11: op_bulk_bad(in); break;
    case 12: op_wrong_size(in); break;
    default: op_impossible(in); break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_start();
    struct fz_in in = {data, size};
    g_nlive = 0;
    g_seed = (uint32_t)size;
    g_op = 0;
    g_ctors = g_dtors = g_dtor_bad = 0;
    kt_reports_reset();
    int err = kheap_init(&g_heap, g_mem, HEAP_BYTES);
    FZ_CHECK(err == KHEAP_OK, "kheap_init(%zu) = %d (%s)", HEAP_BYTES, err, kheap_strerror(err));
    kheap_set_decay(g_heap, 0);
    g_cache[0] = kheap_cache_create(g_heap, "misuse-plain", OBJ_SIZE, 0, NULL, NULL);
    g_cache[1] = kheap_cache_create(g_heap, "misuse-ctor", OBJ_SIZE, 0, ctor, dtor);
    FZ_CHECK(g_cache[0] && g_cache[1], "kheap_cache_create failed");

    while (fz_more(&in) && g_op < MAX_OPS) {
        g_op++;
        run_op(&in);
        expect_none("an operation");
    }

    while (g_nlive)
        free_at(g_nlive - 1);
    for (int c = 0; c < 2; c++) {
        err = kheap_cache_destroy(g_cache[c]);
        FZ_CHECK(err == KHEAP_OK, "kheap_cache_destroy(empty cache %d) = %d", c, err);
    }
    FZ_CHECK(g_ctors == g_dtors && g_dtor_bad == 0,
             "%lu constructed, %lu destructed, %lu without the magic", g_ctors, g_dtors,
             g_dtor_bad);
    kheap_reclaim(g_heap);
    expect_none("the end");
    const void *at = NULL;
    const char *msg = kheap_check_quiescent(g_heap, &at);
    FZ_CHECK(msg == NULL, "at the end: kheap_check_quiescent: %s at %p", msg, at);
    struct kheap_stats s = stats();
    FZ_CHECK(s.used_bytes == 0 && s.slab_bytes == 0 && s.large_bytes == 0 &&
                 s.heap_free == s.heap_total - s.metadata_bytes &&
                 s.allocation_count == s.free_count,
             "all freed: used %zu, slab %zu, large %zu, heap_free %zu of %zu - metadata %zu, "
             "allocs %" PRIu64 " frees %" PRIu64, s.used_bytes, s.slab_bytes, s.large_bytes,
             s.heap_free, s.heap_total, s.metadata_bytes, s.allocation_count, s.free_count);
    kheap_fini(g_heap);
    return 0;
}
