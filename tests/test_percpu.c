/*
 * test_percpu.c - the per-CPU magazine layer under threads that come and go.
 *
 * Hosted, a "CPU" is a slot a thread owns from its first kheap call until
 * it exits; at exit kheap_cpu_flush gives the slot's magazines back to every
 * heap. These tests aim at that layer (test_threads.c covers a fixed set of
 * four threads sharing one heap):
 *
 *   stress_cross_thread  2, 4 and 8 threads on one heap, every kind of
 *                        allocation, about half of the blocks freed by
 *                        another thread; counters exact per cache, and the
 *                        heap whole again after destroy + reclaim.
 *   producer_consumer    one thread only allocates, one only frees: the
 *                        slabs and the cached objects stay under a bound
 *                        derived from KHEAP_DEPOT_MAX and the magazine sizes.
 *   thread_churn         >= 1000 short-lived threads (8 alive at a time):
 *                        their magazines come back when they exit, nothing
 *                        stays stranded, every byte comes back.
 *   slot_reuse           KHEAP_MAX_CPUS + 8 threads alive at once: the ones
 *                        without a slot of their own borrow one of the lent
 *                        slots for each operation, most often the one of
 *                        the CPU they run on (or, all busy, take the
 *                        locked path) and all balances.
 *   slot_taken_after_borrowing
 *                        a thread that found every owned slot taken
 *                        borrows, and takes a slot given back within
 *                        KH_HOSTED_SLOT_RETRY operations.
 *   reclaim_reach        objects cached by the calling thread go back to the
 *                        page layer on kheap_reclaim.
 *   large_block_cache    freed large blocks up to KHEAP_RUN_CACHE_MAX stay
 *                        with the freeing thread for its next allocation of
 *                        the same page count, within KHEAP_RUN_CACHE_BYTES;
 *                        misuse of a cached block is reported as of a freed
 *                        one; reclaim, decay and thread exit give them back.
 *   reclaim_asks_running what running threads cache, which kheap_reclaim
 *                        cannot take, goes back when each answers the
 *                        request with kheap_cpu_poll or kheap_tick, once.
 *   homes                objects of the test thread's slabs that another
 *                        thread frees are not its next allocations, and
 *                        come back to the test thread once it exits; on a
 *                        heap below KHEAP_HOMES_MIN_HEAP, they are.
 *   heaps_end_while_threads_exit
 *                        a heap ended (kheap_fini, its memory unmapped)
 *                        while threads that used it exit and flush their
 *                        slots into every heap: no flush reaches it after
 *                        kheap_fini returns, and a heap that lives on
 *                        gets every object back.
 *   inboxes              the other thread's full magazines of them reach
 *                        the test thread's inbox while it runs, not the
 *                        depot; its allocations take them from there, and
 *                        the emptied magazines go back to the sender four
 *                        at a time, which takes them whole; a double free
 *                        of an object sent home is reported.
 *   inbox_returns        two senders: the empties gathered for one go to
 *                        it when one of the other's comes, and the last
 *                        at the decay epoch's end.
 *
 * Environment: KHEAP_SEED (replay the random choices; thread interleaving is
 * not replayed), KHEAP_TEST_OPS (default 1000000; scales every test),
 * KHEAP_TEST_SMALL (nonzero: fewer threads and objects, small heaps, for
 * valgrind and KHEAP_DEBUG=3), KHEAP_TEST_HEAP (heap bytes in small mode).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "kheap.h"
#include "kheap_hosted.h"
#include "kh_internal.h" /* KH_RUNS; the inboxes' counts and lists (TEST(inboxes)) */

#define PAGE KHEAP_PAGE_SIZE
#define MAGIC KT_CTOR_MAGIC /* what kt_ctor writes */
#define MAX_ROWS (KHEAP_NUM_CLASSES + 16)

static uint64_t g_seed;
static bool g_small;
static unsigned long g_ops;

/* ------------------------------------------------------------------ */
/* Messages: every failure names the seed. */

static char g_msgbuf[700];

static const char *msgf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *msgf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_msgbuf, sizeof g_msgbuf, fmt, ap);
    va_end(ap);
    return g_msgbuf;
}

/* CHECK in the main thread, the seed first. */
#define SCHECK(cond, ...)                                                     \
    CHECK(cond, "[seed %" PRIu64 "] %s", g_seed, msgf(__VA_ARGS__))

/* Failures in worker threads: the first one is kept, every thread stops. */
static pthread_mutex_t g_err_lock = PTHREAD_MUTEX_INITIALIZER;
static char g_err[700];
static atomic_int g_failed;

static void tfail(unsigned id, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tfail(unsigned id, const char *fmt, ...)
{
    pthread_mutex_lock(&g_err_lock);
    if (!atomic_load(&g_failed)) {
        int n = snprintf(g_err, sizeof g_err, "thread %u: ", id);
        va_list ap;
        va_start(ap, fmt);
        if (n > 0 && (size_t)n < sizeof g_err)
            vsnprintf(g_err + n, sizeof g_err - (size_t)n, fmt, ap);
        va_end(ap);
        atomic_store(&g_failed, 1);
    }
    pthread_mutex_unlock(&g_err_lock);
}

#define TCHECK(id, cond, ...)                                                 \
    do {                                                                      \
        if (!(cond)) {                                                        \
            tfail((id), __VA_ARGS__);                                         \
            return false;                                                     \
        }                                                                     \
    } while (0)

static void errors_reset(void)
{
    atomic_store(&g_failed, 0);
    g_err[0] = 0;
}

/* Plain functions for conditions of SCHECK, whose text is printed: a
 * macro such as atomic_load would print expanded. */
static bool threads_failed(void)
{
    return atomic_load(&g_failed) != 0;
}

static unsigned long get(atomic_ulong *a)
{
    return atomic_load(a);
}

/* Reports from the heap: counted, the text of the first one kept. */
static char g_first_report[300];

static void keep_first_report(const struct kheap_report *r, unsigned long nth)
{
    if (nth == 1)
        kheap_hosted_format_report(r, g_first_report, sizeof g_first_report);
}

/* ------------------------------------------------------------------ */
/* Random numbers (kt_rand), one state per test and thread. */

static uint64_t rng_for(unsigned test, unsigned thread)
{
    return kt_rand_seed(g_seed, (uint64_t)test << 32 | thread);
}

/* ------------------------------------------------------------------ */
/* Heaps: kt_heap_open; kt_heap_close only after a test passed (a failed
 * test leaves its heap mapped and registered, so threads that still exit
 * can flush into it safely). */

/* big bytes, or in small mode small bytes, or KHEAP_TEST_HEAP if that is
 * more: these tests count on no allocation failing, and with their
 * threads' magazines (which kheap_reclaim does not reach) and a partial
 * slab per class, each up to 7 pages, a smaller heap can run out of free
 * pages (a 4 MiB one did, in about one run in fifteen). */
static size_t heap_size_for(size_t big, size_t small)
{
    if (!g_small)
        return big;
    long env = kt_env_long("KHEAP_TEST_HEAP", 0);
    return env > 0 && (size_t)env > small ? (size_t)env : small;
}

/* Everything back: no slab, no large block, every page free except the
 * metadata. */
static void check_whole(kheap_t *h, const char *when)
{
    struct kheap_stats s;
    kheap_get_stats(h, &s);
    SCHECK(s.heap_free + s.metadata_bytes == s.heap_total && s.slab_bytes == 0 &&
               s.large_bytes == 0 && s.used_bytes == 0,
           "%s: heap not whole: free %zu + metadata %zu != total %zu, slab %zu, "
           "large %zu, used %zu",
           when, s.heap_free, s.metadata_bytes, s.heap_total, s.slab_bytes,
           s.large_bytes, s.used_bytes);
}

static void check_quiet(kheap_t *h, const char *when)
{
    const void *addr = NULL;
    const char *msg = kheap_check_quiescent(h, &addr);
    SCHECK(msg == NULL, "%s: kheap_check_quiescent: %s at %p", when, msg, addr);
}

static void check_no_reports(const char *when)
{
    SCHECK(kt_reports() == 0, "%s: %lu reports, first: %s", when, kt_reports(),
           g_first_report);
}

/* ------------------------------------------------------------------ */
/* Blocks with a pattern, and the caches used by the tests. */

enum { KIND_KM = 0, KIND_CTOR = 1, KIND_PLAIN = 2, KINDS = 3 };

struct item {
    unsigned char *p;
    size_t size;
    uint32_t tag;
    uint16_t owner; /* thread that allocated it (churn) */
    uint8_t kind;
};

#define EDGE 48

static kheap_t *g_h;                /* the heap of the running test */
static unsigned char *g_mem;        /* its memory */
static size_t g_mem_size;
static kheap_cache_t *g_cache[KINDS]; /* [KIND_CTOR], [KIND_PLAIN] */
static atomic_ulong g_kind_allocs[KINDS], g_kind_frees[KINDS];

/* g_cache[kind] of the running test: with kt_ctor/kt_dtor for KIND_CTOR. */
static void new_cache(int kind, const char *name, size_t size, size_t align)
{
    bool ctor = kind == KIND_CTOR;
    g_cache[kind] = kheap_cache_create(g_h, name, size, align, ctor ? kt_ctor : NULL,
                                       ctor ? kt_dtor : NULL);
    SCHECK(g_cache[kind] != NULL, "kheap_cache_create(%s) failed", name);
}

/* Every constructor call had its destructor call, on an object that
 * still held the constructor's magic (caches of kt_ctor/kt_dtor). */
static void check_ctors_balanced(const char *when)
{
    struct kt_ctor_counts n = kt_ctor_counts();
    SCHECK(n.ctor == n.dtor && n.dtor_bad == 0,
           "%s: %lu constructor calls, %lu destructor calls, %lu on objects without magic",
           when, n.ctor, n.dtor, n.dtor_bad);
}

/* The start of every test: a heap of its own of size bytes, and every
 * counter at 0. */
static void test_open_exact(struct kt_heap *t, size_t size)
{
    kt_heap_open(t, size);
    errors_reset();
    kt_reports_reset();
    g_first_report[0] = 0;
    g_h = t->h;
    g_mem = t->mem;
    g_mem_size = t->size;
    for (int k = 0; k < KINDS; k++) {
        g_cache[k] = NULL;
        atomic_store(&g_kind_allocs[k], 0);
        atomic_store(&g_kind_frees[k], 0);
    }
    kt_ctor_reset();
}

/* test_open_exact of big bytes, small bytes in small mode. */
static void test_open(struct kt_heap *t, size_t big, size_t small)
{
    test_open_exact(t, heap_size_for(big, small));
}

static size_t pat_from(const struct item *it)
{
    return it->kind == KIND_CTOR ? 8 : 0; /* the constructor's magic first */
}

static void fill(const struct item *it)
{
    kt_pattern_fill(it->p, it->size, pat_from(it), EDGE, it->tag);
}

/* First byte below limit that lost its pattern, or SIZE_MAX. */
static size_t verify(const struct item *it, size_t limit)
{
    return kt_pattern_find_bad(it->p, it->size, pat_from(it), EDGE, it->tag, limit);
}

static bool check_item(unsigned id, const struct item *it, const char *when)
{
    size_t bad = verify(it, SIZE_MAX);
    TCHECK(id, bad == SIZE_MAX,
           "%s: block %p (size %zu, kind %d, owner %u) byte %zu is 0x%02x, want 0x%02x",
           when, (void *)it->p, it->size, it->kind, it->owner, bad, it->p[bad],
           kt_pattern(it->tag, bad));
    if (it->kind == KIND_CTOR) {
        uint64_t m;
        memcpy(&m, it->p, sizeof m);
        TCHECK(id, m == MAGIC, "%s: object %p lost its constructor's magic", when,
               (void *)it->p);
    }
    return true;
}

/* Record a new block: inside the heap, usable size large enough, aligned;
 * write its pattern. */
static bool new_item(unsigned id, uint64_t *rng, struct item *it, void *p, size_t size,
                     uint8_t kind)
{
    it->p = p;
    it->size = size;
    it->tag = (uint32_t)kt_rand(rng);
    it->owner = (uint16_t)id;
    it->kind = kind;
    TCHECK(id, (uintptr_t)p >= (uintptr_t)g_mem &&
                   (uintptr_t)p + size <= (uintptr_t)g_mem + g_mem_size,
           "block %p+%zu outside the heap", p, size);
    TCHECK(id, (uintptr_t)p % 8 == 0, "block %p (size %zu) not 8-aligned", p, size);
    if (kind == KIND_CTOR) {
        uint64_t m;
        memcpy(&m, p, sizeof m);
        TCHECK(id, m == MAGIC, "cache object %p handed out without its magic", p);
    }
    size_t u = kheap_usable_size(g_h, p);
    TCHECK(id, u >= size, "usable_size(%p) = %zu < size %zu", p, u, size);
    fill(it);
    return true;
}

/* Verify and free through the block's cache or kheap_free (either is
 * allowed for a cache object). */
static bool free_item(unsigned id, uint64_t *rng, const struct item *it, const char *when)
{
    if (!check_item(id, it, when))
        return false;
    if (it->kind != KIND_KM && kt_rand(rng) % 2)
        kheap_cache_free(g_cache[it->kind], it->p);
    else
        kheap_free(g_h, it->p);
    atomic_fetch_add_explicit(&g_kind_frees[it->kind], 1, memory_order_relaxed);
    return true;
}

static struct kheap_cache_info cache_row(kheap_cache_t *c)
{
    struct kheap_cache_info r;
    kheap_cache_info(c, &r);
    return r;
}

/* ================================================================== */
/* 1. stress_cross_thread                                              */

#define T1_MAX_THREADS 8
#define T1_LIVE_MAX 512
#define T1_QLEN 128

struct inbox {
    pthread_mutex_t lock;
    struct item q[T1_QLEN];
    size_t head, n;
};

struct w1 {
    unsigned id, nthreads;
    uint64_t rng;
    unsigned long ops;
    size_t live_cap, nlive;
    struct item live[T1_LIVE_MAX];
    /* What this thread did. */
    uint64_t allocs, frees, nulls, handed, received;
    struct inbox box;
};

static struct w1 g_w1[T1_MAX_THREADS];
static atomic_uint g_t1_done;

static bool box_push(struct inbox *b, const struct item *it)
{
    bool ok = false;
    pthread_mutex_lock(&b->lock);
    if (b->n < T1_QLEN) {
        b->q[(b->head + b->n++) % T1_QLEN] = *it;
        ok = true;
    }
    pthread_mutex_unlock(&b->lock);
    return ok;
}

static bool box_pop(struct inbox *b, struct item *it)
{
    bool ok = false;
    pthread_mutex_lock(&b->lock);
    if (b->n) {
        *it = b->q[b->head];
        b->head = (b->head + 1) % T1_QLEN;
        b->n--;
        ok = true;
    }
    pthread_mutex_unlock(&b->lock);
    return ok;
}

/* 1 B .. 64 KiB, mostly small. */
static size_t t1_size(uint64_t *rng)
{
    unsigned r = (unsigned)(kt_rand(rng) % 100);
    if (r < 70)
        return 1 + (size_t)(kt_rand(rng) % 256);
    if (r < 93)
        return 257 + (size_t)(kt_rand(rng) % (4096 - 256));
    if (r < 98)
        return 4097 + (size_t)(kt_rand(rng) % (KHEAP_MAX_CLASS - 4096));
    return KHEAP_MAX_CLASS + 1 + (size_t)(kt_rand(rng) % (65536 - KHEAP_MAX_CLASS));
}

static bool t1_add(struct w1 *w, void *p, size_t size, uint8_t kind)
{
    w->allocs++;
    atomic_fetch_add_explicit(&g_kind_allocs[kind], 1, memory_order_relaxed);
    return new_item(w->id, &w->rng, &w->live[w->nlive++], p, size, kind);
}

static bool t1_alloc(struct w1 *w)
{
    if (w->nlive >= w->live_cap)
        return true;
    size_t size = t1_size(&w->rng);
    unsigned how = (unsigned)(kt_rand(&w->rng) % 20);
    unsigned char *p;
    if (how < 12) {
        p = kheap_alloc(g_h, size);
    } else if (how < 15) {
        size_t align = (size_t)8 << (kt_rand(&w->rng) % 10); /* 8 .. 4096 */
        p = kheap_alloc_aligned(g_h, size, align);
        TCHECK(w->id, !p || (uintptr_t)p % align == 0,
               "kheap_alloc_aligned(%zu, %zu) = %p", size, align, (void *)p);
    } else if (how < 18) {
        size_t n = 1 + (size_t)(kt_rand(&w->rng) % 4), each = (size + n - 1) / n;
        size = n * each;
        p = kheap_calloc(g_h, n, each);
        if (p) {
            /* All of it for small blocks; the ends and a stride for big. */
            size_t step = size <= 4096 ? 1 : 61;
            for (size_t i = 0; i < size; i += (i < 64 || i + 64 >= size) ? 1 : step)
                TCHECK(w->id, p[i] == 0, "kheap_calloc(%zu, %zu) = %p: byte %zu is 0x%02x",
                       n, each, (void *)p, i, p[i]);
        }
    } else {
        p = kheap_realloc(g_h, NULL, size);
    }
    if (!p) {
        w->nulls++;
        return true;
    }
    return t1_add(w, p, size, KIND_KM);
}

static bool t1_cache_alloc(struct w1 *w)
{
    if (w->nlive >= w->live_cap)
        return true;
    uint8_t kind = kt_rand(&w->rng) % 2 ? KIND_CTOR : KIND_PLAIN;
    unsigned char *p = kheap_cache_alloc(g_cache[kind]);
    if (!p) {
        w->nulls++;
        return true;
    }
    TCHECK(w->id, kind != KIND_PLAIN || (uintptr_t)p % 16 == 0,
           "object %p of the 16-aligned cache is not aligned", (void *)p);
    if (kt_rand(&w->rng) % 16 == 0) {
        struct kheap_cache_info r = cache_row(g_cache[kind]); /* racy read, exercised */
        (void)r;
    }
    return t1_add(w, p, kind == KIND_CTOR ? 200 : 48, kind);
}

static bool t1_realloc(struct w1 *w)
{
    if (!w->nlive)
        return true;
    size_t i = (size_t)(kt_rand(&w->rng) % w->nlive);
    struct item *it = &w->live[i];
    if (it->kind != KIND_KM)
        return true;
    if (!check_item(w->id, it, "before realloc"))
        return false;
    size_t size = kt_rand(&w->rng) % 2 ? t1_size(&w->rng) : it->size + (size_t)(kt_rand(&w->rng) % 64);
    unsigned char *q = kheap_realloc(g_h, it->p, size);
    if (!q) {
        w->nulls++;
        return check_item(w->id, it, "after failed realloc");
    }
    if (q != it->p) {
        w->allocs++;
        w->frees++;
        atomic_fetch_add_explicit(&g_kind_allocs[KIND_KM], 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&g_kind_frees[KIND_KM], 1, memory_order_relaxed);
    }
    struct item moved = *it;
    moved.p = q;
    size_t keep = size < it->size ? size : it->size;
    size_t bad = verify(&moved, keep);
    TCHECK(w->id, bad == SIZE_MAX, "realloc %zu -> %zu lost byte %zu (0x%02x, want 0x%02x)",
           it->size, size, bad, q[bad], kt_pattern(it->tag, bad));
    w->live[i] = w->live[--w->nlive];
    return new_item(w->id, &w->rng, &w->live[w->nlive++], q, size, KIND_KM);
}

static bool t1_receive(struct w1 *w, size_t max)
{
    struct item it;
    for (size_t k = 0; k < max && box_pop(&w->box, &it); k++) {
        w->received++;
        w->frees++;
        if (!free_item(w->id, &w->rng, &it, "received from another thread"))
            return false;
    }
    return true;
}

/* Free one block, or hand it to another thread to free (about half). */
static bool t1_release(struct w1 *w)
{
    if (!w->nlive)
        return true;
    size_t i = (size_t)(kt_rand(&w->rng) % w->nlive);
    struct item it = w->live[i];
    w->live[i] = w->live[--w->nlive];
    if (kt_rand(&w->rng) % 2) {
        /* A full inbox: its owner is not running just now; empty our own
         * meanwhile (every thread does while it waits, so this ends). */
        unsigned to = (w->id + 1 + (unsigned)(kt_rand(&w->rng) % (w->nthreads - 1))) % w->nthreads;
        while (!box_push(&g_w1[to].box, &it)) {
            if (atomic_load_explicit(&g_failed, memory_order_relaxed) ||
                !t1_receive(w, T1_QLEN))
                return false;
            sched_yield();
        }
        w->handed++;
        return true;
    }
    w->frees++;
    return free_item(w->id, &w->rng, &it, "before free");
}


static bool t1_stats(struct w1 *w)
{
    struct kheap_stats s;
    kheap_get_stats(g_h, &s);
    TCHECK(w->id, s.allocated_bytes - s.freed_bytes == s.used_bytes,
           "allocated %" PRIu64 " - freed %" PRIu64 " != used %zu", s.allocated_bytes,
           s.freed_bytes, s.used_bytes);
    TCHECK(w->id, s.heap_used + s.heap_free == s.heap_total,
           "heap_used %zu + heap_free %zu != heap_total %zu", s.heap_used, s.heap_free,
           s.heap_total);
    return true;
}

static bool t1_check(struct w1 *w)
{
    const void *addr = NULL;
    const char *msg = kheap_check(g_h, &addr);
    TCHECK(w->id, msg == NULL, "kheap_check while threads run: %s at %p", msg, addr);
    return true;
}

static void *t1_main(void *arg)
{
    struct w1 *w = arg;
    bool ok = true;
    for (unsigned long op = 0; ok && op < w->ops; op++) {
        if ((op & 255) == 0 && atomic_load_explicit(&g_failed, memory_order_relaxed))
            break;
        unsigned r = (unsigned)(kt_rand(&w->rng) % 1000);
        if (r < 280)
            ok = t1_alloc(w);
        else if (r < 430)
            ok = t1_cache_alloc(w);
        else if (r < 530)
            ok = t1_realloc(w);
        else if (r < 830)
            ok = t1_release(w);
        else if (r < 990)
            ok = t1_receive(w, 8);
        else if (r < 998)
            ok = t1_stats(w);
        else if (kt_rand(&w->rng) % 4 == 0)
            ok = t1_check(w);
    }
    /* Free what is left here; then keep emptying the inbox until no
     * thread can push any more. */
    while (ok && w->nlive) {
        struct item it = w->live[--w->nlive];
        w->frees++;
        ok = free_item(w->id, &w->rng, &it, "at the end");
    }
    atomic_fetch_add(&g_t1_done, 1);
    while (ok && atomic_load(&g_t1_done) < w->nthreads &&
           !atomic_load_explicit(&g_failed, memory_order_relaxed)) {
        ok = t1_receive(w, T1_QLEN);
        sched_yield();
    }
    if (ok)
        t1_receive(w, SIZE_MAX);
    return NULL;
}

static void t1_run(unsigned nthreads)
{
    struct kt_heap t;
    test_open(&t, (size_t)64 << 20, (size_t)8 << 20);
    size_t base_rows = kheap_slabinfo(g_h, NULL, 0);
    new_cache(KIND_CTOR, "pc-ctor", 200, 0);
    new_cache(KIND_PLAIN, "pc-plain", 48, 16);
    SCHECK(kheap_slabinfo(g_h, NULL, 0) == base_rows + 2, "slabinfo rows %zu, want %zu",
           kheap_slabinfo(g_h, NULL, 0), base_rows + 2);

    unsigned long ops = g_ops / (2 * nthreads);
    if (ops < 2000)
        ops = 2000;
    atomic_store(&g_t1_done, 0);
    pthread_t tid[T1_MAX_THREADS];
    for (unsigned i = 0; i < nthreads; i++) {
        struct w1 *w = &g_w1[i];
        memset(w, 0, sizeof *w);
        pthread_mutex_init(&w->box.lock, NULL);
        w->id = i;
        w->nthreads = nthreads;
        w->rng = rng_for(1 + nthreads, i);
        w->ops = ops;
        w->live_cap = g_small ? 48 : T1_LIVE_MAX;
    }
    for (unsigned i = 0; i < nthreads; i++)
        SCHECK(pthread_create(&tid[i], NULL, t1_main, &g_w1[i]) == 0,
               "pthread_create %u failed", i);
    for (unsigned i = 0; i < nthreads; i++)
        pthread_join(tid[i], NULL);
    SCHECK(!threads_failed(), "%u threads: %s", nthreads, g_err);

    uint64_t allocs = 0, frees = 0, nulls = 0, handed = 0, received = 0;
    for (unsigned i = 0; i < nthreads; i++) {
        SCHECK(g_w1[i].box.n == 0 && g_w1[i].nlive == 0,
               "thread %u left %zu blocks in its inbox, %zu live", i, g_w1[i].box.n,
               g_w1[i].nlive);
        allocs += g_w1[i].allocs;
        frees += g_w1[i].frees;
        nulls += g_w1[i].nulls;
        handed += g_w1[i].handed;
        received += g_w1[i].received;
        pthread_mutex_destroy(&g_w1[i].box.lock);
    }
    SCHECK(handed == received, "%" PRIu64 " handed over, %" PRIu64 " received", handed,
           received);
    struct kheap_stats s;
    kheap_get_stats(g_h, &s);
    SCHECK(s.allocation_count == allocs && s.free_count == frees && allocs == frees,
           "%u threads: allocation_count %" PRIu64 " free_count %" PRIu64
           ", threads counted %" PRIu64 " and %" PRIu64,
           nthreads, s.allocation_count, s.free_count, allocs, frees);
    SCHECK(s.failed_count == nulls && nulls == 0,
           "failed_count %" PRIu64 ", threads saw %" PRIu64 " NULLs in a %zu-byte heap",
           s.failed_count, nulls, t.size);
    SCHECK(s.used_bytes == 0 && s.allocated_bytes == s.freed_bytes,
           "all freed: used %zu, allocated %" PRIu64 " freed %" PRIu64, s.used_bytes,
           s.allocated_bytes, s.freed_bytes);
    check_quiet(g_h, "after join");
    for (int k = KIND_CTOR; k <= KIND_PLAIN; k++) {
        struct kheap_cache_info r = cache_row(g_cache[k]);
        SCHECK(r.active_objs == 0 && r.allocs == get(&g_kind_allocs[k]) &&
                   r.frees == get(&g_kind_frees[k]),
               "cache %s: active %zu allocs %" PRIu64 " frees %" PRIu64
               ", the test counted %lu and %lu",
               r.name, r.active_objs, r.allocs, r.frees, atomic_load(&g_kind_allocs[k]),
               atomic_load(&g_kind_frees[k]));
    }
    int e0 = kheap_cache_destroy(g_cache[KIND_CTOR]);
    int e1 = kheap_cache_destroy(g_cache[KIND_PLAIN]);
    SCHECK(e0 == KHEAP_OK && e1 == KHEAP_OK, "kheap_cache_destroy = %d, %d", e0, e1);
    check_ctors_balanced("stress");
    kheap_reclaim(g_h);
    check_whole(g_h, "after destroy and reclaim");
    check_quiet(g_h, "after reclaim");
    check_no_reports("stress");
    printf("# stress %u threads x %lu ops: %" PRIu64 " allocations (%lu + %lu from the "
           "caches), %" PRIu64 " freed by another thread\n",
           nthreads, ops, allocs, atomic_load(&g_kind_allocs[KIND_CTOR]),
           atomic_load(&g_kind_allocs[KIND_PLAIN]), handed);
    kt_heap_close(&t);
}

TEST(stress_cross_thread)
{
    t1_run(2);
    t1_run(4);
    if (!g_small)
        t1_run(8);
}

/* ================================================================== */
/* 2. producer_consumer                                                */

#define PC_SIZE 64
#define PC_STREAM 256      /* queue limit while streaming */
#define PC_BATCH 16        /* objects the producer pushes at once */
#define PC_POP 64          /* objects the consumer takes at once */
#define PC_BURST_MAX 16384 /* objects handed over in one go */
#define PC_Q (PC_BURST_MAX + PC_BATCH)
#define PC_SAMPLE 1024

static struct {
    pthread_mutex_t lock;
    pthread_cond_t nonempty, nonfull;
    void *q[PC_Q];
    size_t head, n;
    bool done;
} g_pc = {.lock = PTHREAD_MUTEX_INITIALIZER,
          .nonempty = PTHREAD_COND_INITIALIZER,
          .nonfull = PTHREAD_COND_INITIALIZER};

static void *g_pc_burst_buf[PC_BURST_MAX];
static uint64_t g_pc_total, g_pc_burst, g_pc_burst_every, g_pc_bursts;
static size_t g_pc_km_row;
/* Bounds: streaming (objects in flight) and quiet (the consumer idle,
 * nothing live). */
static size_t g_pc_cached_bound, g_pc_slab_bound, g_pc_quiet_cached_bound,
    g_pc_quiet_slab_bound;
static size_t g_pc_peak_slab, g_pc_peak_cached, g_pc_peak_quiet_slab, g_pc_peak_quiet_cached;
static uint64_t g_pc_samples;
static atomic_uint_fast64_t g_pc_freed; /* objects the consumer has freed */

static void pc_push(void *const *batch, size_t nb, size_t limit)
{
    pthread_mutex_lock(&g_pc.lock);
    while (g_pc.n + nb > limit)
        pthread_cond_wait(&g_pc.nonfull, &g_pc.lock);
    for (size_t k = 0; k < nb; k++)
        g_pc.q[(g_pc.head + g_pc.n++) % PC_Q] = batch[k];
    pthread_cond_signal(&g_pc.nonempty);
    pthread_mutex_unlock(&g_pc.lock);
}

static void pc_finish(void)
{
    pthread_mutex_lock(&g_pc.lock);
    g_pc.done = true;
    pthread_cond_broadcast(&g_pc.nonempty);
    pthread_mutex_unlock(&g_pc.lock);
}

/* Take up to max objects; 0 once the producer is done and all is taken. */
static size_t pc_pop(void **out, size_t max)
{
    size_t n = 0;
    pthread_mutex_lock(&g_pc.lock);
    while (!g_pc.n && !g_pc.done)
        pthread_cond_wait(&g_pc.nonempty, &g_pc.lock);
    while (n < max && g_pc.n) {
        out[n++] = g_pc.q[g_pc.head];
        g_pc.head = (g_pc.head + 1) % PC_Q;
        g_pc.n--;
    }
    pthread_cond_signal(&g_pc.nonfull);
    pthread_mutex_unlock(&g_pc.lock);
    return n;
}

/* Check slab_bytes and the cached objects of both caches against the
 * bounds. While the consumer frees, cached_objs (slab-active minus live,
 * live read first) can only come out low, so it is safe as an upper
 * bound. */
static bool pc_sample(bool quiet, uint64_t done)
{
    size_t slab_bound = quiet ? g_pc_quiet_slab_bound : g_pc_slab_bound;
    size_t cached_bound = quiet ? g_pc_quiet_cached_bound : g_pc_cached_bound;
    size_t *peak_slab = quiet ? &g_pc_peak_quiet_slab : &g_pc_peak_slab;
    size_t *peak_cached = quiet ? &g_pc_peak_quiet_cached : &g_pc_peak_cached;
    struct kheap_stats s;
    kheap_get_stats(g_h, &s);
    if (s.slab_bytes > *peak_slab)
        *peak_slab = s.slab_bytes;
    TCHECK(0, s.slab_bytes <= slab_bound,
           "producer/consumer (%s): slab_bytes %zu above the bound %zu after %" PRIu64
           " objects",
           quiet ? "consumer idle" : "streaming", s.slab_bytes, slab_bound, done);
    struct kheap_cache_info rows[MAX_ROWS];
    size_t nrows = kheap_slabinfo(g_h, rows, MAX_ROWS);
    TCHECK(0, nrows <= MAX_ROWS && g_pc_km_row < nrows, "slabinfo has %zu rows", nrows);
    struct kheap_cache_info uc = cache_row(g_cache[KIND_PLAIN]);
    const struct kheap_cache_info *row[2] = {&rows[g_pc_km_row], &uc};
    for (int k = 0; k < 2; k++) {
        if (row[k]->cached_objs > *peak_cached)
            *peak_cached = row[k]->cached_objs;
        TCHECK(0, row[k]->cached_objs <= cached_bound,
               "producer/consumer (%s): %s holds %zu cached objects after %" PRIu64
               " objects, above the bound %zu",
               quiet ? "consumer idle" : "streaming", row[k]->name, row[k]->cached_objs,
               done, cached_bound);
    }
    g_pc_samples++;
    return true;
}

/* Object i: kmalloc(64) when i is even, the user cache when odd. Its
 * first word is i, its last ~i. */
static void *pc_make(uint64_t i)
{
    uint64_t *p = i & 1 ? kheap_cache_alloc(g_cache[KIND_PLAIN]) : kheap_alloc(g_h, PC_SIZE);
    if (!p) {
        tfail(0, "producer: allocation %" PRIu64 " returned NULL", i);
        return NULL;
    }
    p[0] = i;
    p[PC_SIZE / 8 - 1] = ~i;
    return p;
}

/* Streams objects through the queue; every g_pc_burst_every objects it
 * allocates g_pc_burst at once, hands them over in one go and waits,
 * allocating nothing, while the consumer frees them all: its frees then
 * go to its magazines and the depot, with nobody taking them out. */
static void *pc_producer(void *arg)
{
    (void)arg;
    void *batch[PC_BATCH];
    size_t nb = 0;
    uint64_t i = 0;
    while (i < g_pc_total && !atomic_load(&g_failed)) {
        uint64_t seg_end = i + g_pc_burst_every - g_pc_burst;
        if (seg_end > g_pc_total)
            seg_end = g_pc_total;
        for (; i < seg_end; i++) {
            if (!(batch[nb++] = pc_make(i)))
                goto out;
            if (nb == PC_BATCH) {
                pc_push(batch, nb, PC_STREAM);
                nb = 0;
            }
            if (i % PC_SAMPLE == 0 && !pc_sample(false, i))
                goto out;
        }
        if (nb)
            pc_push(batch, nb, PC_STREAM);
        nb = 0;
        uint64_t burst = g_pc_total - i < g_pc_burst ? g_pc_total - i : g_pc_burst;
        for (uint64_t k = 0; k < burst; k++, i++)
            if (!(g_pc_burst_buf[k] = pc_make(i)))
                goto out;
        pc_push(g_pc_burst_buf, burst, PC_Q);
        while (atomic_load(&g_pc_freed) < i && !atomic_load(&g_failed))
            usleep(100);
        if (burst) {
            g_pc_bursts++;
            if (!pc_sample(true, i))
                goto out;
        }
    }
out:
    if (nb)
        pc_push(batch, nb, PC_Q);
    pc_finish();
    return NULL;
}

static void *pc_consumer(void *arg)
{
    (void)arg;
    void *got[PC_POP];
    uint64_t expect = 0;
    bool ok = true;
    for (size_t n; (n = pc_pop(got, PC_POP)) != 0;) {
        for (size_t k = 0; k < n; k++) {
            uint64_t *p = got[k];
            if (ok && (p[0] != expect || p[PC_SIZE / 8 - 1] != ~expect)) {
                tfail(1, "consumer: object %p holds %" PRIu64 "/%" PRIx64 ", want %" PRIu64,
                      (void *)p, p[0], p[PC_SIZE / 8 - 1], expect);
                ok = false;
            }
            if (!ok)
                continue; /* keep draining so the producer never blocks */
            if (expect & 1 && expect & 2)
                kheap_cache_free(g_cache[KIND_PLAIN], p);
            else
                kheap_free(g_h, p);
            expect++;
        }
        atomic_store(&g_pc_freed, expect);
    }
    return NULL;
}

TEST(producer_consumer)
{
    struct kt_heap t;
    test_open(&t, (size_t)64 << 20, (size_t)8 << 20);
    new_cache(KIND_PLAIN, "pc-fifo", PC_SIZE, 0);
    g_pc_total = 2 * (uint64_t)g_ops;
    /* Bursts of 8192 objects per cache, well above what a depot may keep
     * (except in the tiny KHEAP_DEBUG=3 run). */
    g_pc_burst = g_pc_total / 4 < PC_BURST_MAX ? g_pc_total / 4 : PC_BURST_MAX;
    g_pc_burst_every = g_pc_total / 8 > 8 * g_pc_burst ? g_pc_total / 8 : 8 * g_pc_burst;
    if (g_pc_burst_every > g_pc_total)
        g_pc_burst_every = g_pc_total; /* at least one burst, at the end */
    g_pc.head = g_pc.n = 0;
    g_pc.done = false;
    g_pc_peak_slab = g_pc_peak_cached = g_pc_peak_quiet_slab = g_pc_peak_quiet_cached = 0;
    g_pc_samples = g_pc_bursts = 0;
    atomic_store(&g_pc_freed, 0);

    /* The bounds. Per cache, the objects outside the slabs' free lists are
     * the live ones (streaming: the queue, a batch in the producer's
     * hands, a pop in the consumer's; after a burst is freed: none) and
     * the cached ones, in magazines: two per thread, at most
     * KHEAP_DEPOT_MAX full ones in the depot, and while the consumer
     * works one it is giving back (an overflow, or the depot's trimmed
     * surplus, which left the depot). Each slab holds at least one such
     * object, besides KHEAP_EMPTY_SLABS_KEPT empty ones; the magazines
     * themselves (full or empty: the depot's empties replace full ones
     * the producer took) take slabs of the kheap_magazine caches in the
     * same way. Worst case, every object on a slab of its own; a burst
     * left in a depot without a bound passes the cached bound 3 times
     * over. */
    struct kheap_cache_info rows[MAX_ROWS];
    size_t nrows = kheap_slabinfo(g_h, rows, MAX_ROWS);
    SCHECK(nrows <= MAX_ROWS, "slabinfo has %zu rows", nrows);
    g_pc_km_row = SIZE_MAX;
    size_t mag_pages = 0, base_pages = 0;
    for (size_t i = 0; i < nrows; i++) {
        if (i < KHEAP_NUM_CLASSES && rows[i].objsize == PC_SIZE)
            g_pc_km_row = i;
        if (!strncmp(rows[i].name, "kheap_magazine", 14) && rows[i].pagesperslab > mag_pages)
            mag_pages = rows[i].pagesperslab;
        base_pages += rows[i].num_slabs * rows[i].pagesperslab;
    }
    SCHECK(g_pc_km_row != SIZE_MAX && mag_pages, "no %d-byte kmalloc class or no magazine cache",
           PC_SIZE);
    struct kheap_cache_info uc = cache_row(g_cache[KIND_PLAIN]);
    size_t pages_per_obj = rows[g_pc_km_row].pagesperslab + uc.pagesperslab;
    size_t cap = rows[g_pc_km_row].mag_cap > uc.mag_cap ? rows[g_pc_km_row].mag_cap : uc.mag_cap;
    size_t mags = 2 + 2 + KHEAP_DEPOT_MAX + 1;
    size_t all_mags = 2 * (mags + KHEAP_DEPOT_MAX + 2) + 5 * KHEAP_EMPTY_SLABS_KEPT;
    size_t live = PC_STREAM + PC_BATCH + PC_POP;
    g_pc_cached_bound = mags * cap;
    g_pc_quiet_cached_bound = (mags - 1) * cap;
    g_pc_slab_bound = ((live + g_pc_cached_bound + KHEAP_EMPTY_SLABS_KEPT) * pages_per_obj +
                       all_mags * mag_pages + base_pages) *
                      PAGE;
    g_pc_quiet_slab_bound = ((g_pc_quiet_cached_bound + KHEAP_EMPTY_SLABS_KEPT) * pages_per_obj +
                             all_mags * mag_pages + base_pages) *
                            PAGE;
    printf("# producer/consumer: %" PRIu64 " objects of %d B, a burst of %" PRIu64
           " every %" PRIu64 "; bounds per cache: %zu cached objects streaming, %zu idle; "
           "slab_bytes <= %zu (%.1f MiB) streaming, %zu (%.1f MiB) idle [seed %" PRIu64 "]\n",
           g_pc_total, PC_SIZE, g_pc_burst, g_pc_burst_every, g_pc_cached_bound,
           g_pc_quiet_cached_bound, g_pc_slab_bound, g_pc_slab_bound / 1048576.0,
           g_pc_quiet_slab_bound, g_pc_quiet_slab_bound / 1048576.0, g_seed);
    fflush(stdout);

    pthread_t prod, cons;
    SCHECK(pthread_create(&cons, NULL, pc_consumer, NULL) == 0, "pthread_create failed");
    SCHECK(pthread_create(&prod, NULL, pc_producer, NULL) == 0, "pthread_create failed");
    pthread_join(prod, NULL);
    pthread_join(cons, NULL);
    SCHECK(!threads_failed(), "%s", g_err);
    uint64_t freed = atomic_load(&g_pc_freed);
    SCHECK(freed == g_pc_total, "consumer freed %" PRIu64 " of %" PRIu64, freed, g_pc_total);
    SCHECK(g_pc_bursts > 0, "no burst was handed over");

    struct kheap_stats s;
    kheap_get_stats(g_h, &s);
    SCHECK(s.allocation_count == g_pc_total && s.free_count == g_pc_total &&
               s.used_bytes == 0 && s.failed_count == 0,
           "allocation_count %" PRIu64 " free_count %" PRIu64 " (want %" PRIu64
           "), used %zu, failed %" PRIu64,
           s.allocation_count, s.free_count, g_pc_total, s.used_bytes, s.failed_count);
    uc = cache_row(g_cache[KIND_PLAIN]);
    SCHECK(uc.allocs == g_pc_total / 2 && uc.frees == g_pc_total / 2 && uc.active_objs == 0,
           "cache %s: allocs %" PRIu64 " frees %" PRIu64 " active %zu, want %" PRIu64,
           uc.name, uc.allocs, uc.frees, uc.active_objs, g_pc_total / 2);
    check_quiet(g_h, "after the run");
    SCHECK(kheap_cache_destroy(g_cache[KIND_PLAIN]) == KHEAP_OK, "kheap_cache_destroy failed");
    kheap_reclaim(g_h);
    check_whole(g_h, "after reclaim");
    check_no_reports("producer/consumer");
    printf("# producer/consumer: peaks streaming: slab_bytes %zu, cached %zu; after %" PRIu64
           " bursts: slab_bytes %zu, cached %zu; %" PRIu64 " samples\n",
           g_pc_peak_slab, g_pc_peak_cached, g_pc_bursts, g_pc_peak_quiet_slab,
           g_pc_peak_quiet_cached, g_pc_samples);
    kt_heap_close(&t);
}

/* ================================================================== */
/* 3. thread_churn                                                     */

#define CH_ALIVE 8
#define CH_OBJS 16   /* at most per thread */
#define CH_REAP 16   /* at most freed by a reaper thread */
#define CH_OBJSIZE 96 /* user cache object size */

struct w3 {
    unsigned id;
    uint64_t rng;
    uint64_t allocs, frees, nulls, reaped;
};

static struct {
    pthread_mutex_t lock;
    struct item *v;
    size_t head, tail, cap;
} g_left = {.lock = PTHREAD_MUTEX_INITIALIZER};

static size_t ch_size(uint64_t *rng)
{
    unsigned r = (unsigned)(kt_rand(rng) % 100);
    if (r < 60)
        return 1 + (size_t)(kt_rand(rng) % 256);
    if (r < 95)
        return 257 + (size_t)(kt_rand(rng) % (2048 - 256));
    if (r < 99)
        return 2049 + (size_t)(kt_rand(rng) % (8192 - 2048));
    return 8193 + (size_t)(kt_rand(rng) % 32000);
}

static bool ch_work(struct w3 *w)
{
    struct item mine[CH_OBJS];
    size_t n = 1 + (size_t)(kt_rand(&w->rng) % CH_OBJS), have = 0;
    for (size_t k = 0; k < n; k++) {
        bool cache = kt_rand(&w->rng) % 3 == 0;
        size_t size = cache ? CH_OBJSIZE : ch_size(&w->rng);
        void *p = cache ? kheap_cache_alloc(g_cache[KIND_CTOR]) : kheap_alloc(g_h, size);
        if (!p) {
            w->nulls++;
            continue;
        }
        uint8_t kind = cache ? KIND_CTOR : KIND_KM;
        w->allocs++;
        atomic_fetch_add_explicit(&g_kind_allocs[kind], 1, memory_order_relaxed);
        if (!new_item(w->id, &w->rng, &mine[have++], p, size, kind))
            return false;
    }
    /* A reaper frees blocks of threads that have exited (every thread at
     * least CH_ALIVE older than this one has been joined). */
    if (w->id % 8 == 7) {
        for (size_t k = 0; k < CH_REAP; k++) {
            struct item it;
            bool got = false;
            pthread_mutex_lock(&g_left.lock);
            if (g_left.head < g_left.tail && (unsigned)g_left.v[g_left.head].owner + CH_ALIVE <= w->id) {
                it = g_left.v[g_left.head++];
                got = true;
            }
            pthread_mutex_unlock(&g_left.lock);
            if (!got)
                break;
            w->reaped++;
            w->frees++;
            if (!free_item(w->id, &w->rng, &it, "reaped from an exited thread"))
                return false;
        }
    }
    /* Free about a third here, leave the rest to others. */
    for (size_t k = 0; k < have; k++) {
        if (kt_rand(&w->rng) % 3 == 0) {
            w->frees++;
            if (!free_item(w->id, &w->rng, &mine[k], "own block"))
                return false;
            continue;
        }
        pthread_mutex_lock(&g_left.lock);
        bool room = g_left.tail < g_left.cap;
        if (room)
            g_left.v[g_left.tail++] = mine[k];
        pthread_mutex_unlock(&g_left.lock);
        TCHECK(w->id, room, "shared list full (%zu)", g_left.cap);
    }
    return true;
}

static void *ch_main(void *arg)
{
    struct w3 *w = arg;
    if (!atomic_load_explicit(&g_failed, memory_order_relaxed))
        ch_work(w);
    return NULL;
}

TEST(thread_churn)
{
    struct kt_heap t;
    test_open(&t, (size_t)32 << 20, (size_t)8 << 20);
    new_cache(KIND_CTOR, "churn-obj", CH_OBJSIZE, 0);
    unsigned nthreads = g_small ? 128 : 1000;
    if (!g_small && g_ops > 1000000)
        nthreads = (unsigned)(g_ops / 1000);
    struct w3 *w = calloc(nthreads, sizeof *w);
    g_left.cap = (size_t)nthreads * CH_OBJS;
    g_left.v = calloc(g_left.cap, sizeof *g_left.v);
    g_left.head = g_left.tail = 0;
    SCHECK(w && g_left.v, "calloc failed");

    pthread_t tid[CH_ALIVE];
    unsigned created = 0;
    for (unsigned i = 0; i < nthreads; i++) {
        if (i >= CH_ALIVE)
            pthread_join(tid[i % CH_ALIVE], NULL);
        w[i].id = i;
        w[i].rng = rng_for(20, i);
        int err = pthread_create(&tid[i % CH_ALIVE], NULL, ch_main, &w[i]);
        if (err) {
            for (unsigned j = i > CH_ALIVE ? i - CH_ALIVE + 1 : 0; j < i; j++)
                pthread_join(tid[j % CH_ALIVE], NULL);
            SCHECK(0, "pthread_create of thread %u failed: %d", i, err);
        }
        created++;
    }
    for (unsigned j = created > CH_ALIVE ? created - CH_ALIVE : 0; j < created; j++)
        pthread_join(tid[j % CH_ALIVE], NULL);
    SCHECK(!threads_failed(), "%s", g_err);

    uint64_t allocs = 0, frees = 0, nulls = 0, reaped = 0;
    for (unsigned i = 0; i < nthreads; i++) {
        allocs += w[i].allocs;
        frees += w[i].frees;
        nulls += w[i].nulls;
        reaped += w[i].reaped;
    }
    SCHECK(nulls == 0, "%" PRIu64 " allocations failed", nulls);
    SCHECK(reaped > 0, "no reaper freed a block of an exited thread");

    /* Every thread has exited and the main thread has not touched this
     * heap: the threads' magazines went back at exit (to the depots or the
     * slabs), so the only cached objects are in the depots, at most
     * KHEAP_DEPOT_MAX magazines each. */
    struct kheap_cache_info rows[MAX_ROWS];
    size_t nrows = kheap_slabinfo(g_h, rows, MAX_ROWS);
    SCHECK(nrows <= MAX_ROWS, "slabinfo has %zu rows", nrows);
    size_t cached_at_exit = 0;
    for (size_t i = 0; i < nrows; i++) {
        if (!strncmp(rows[i].name, "kheap_", 6))
            continue;
        size_t bound = KHEAP_DEPOT_MAX * rows[i].mag_cap;
        SCHECK(rows[i].cached_objs <= bound,
               "after %u threads exited, cache %s holds %zu cached objects, more than "
               "its depot can (%zu): magazines stranded",
               nthreads, rows[i].name, rows[i].cached_objs, bound);
        cached_at_exit += rows[i].cached_objs;
    }
    struct kheap_cache_info uc = cache_row(g_cache[KIND_CTOR]);
    size_t uc_cached_at_exit = uc.cached_objs;
    check_quiet(g_h, "after all threads exited");

    /* The main thread frees the rest. */
    uint64_t main_frees = 0;
    uint64_t rng = rng_for(21, 0);
    for (size_t k = g_left.head; k < g_left.tail; k++) {
        const struct item *it = &g_left.v[k];
        SCHECK(free_item(9999, &rng, it, "left for the main thread"), "%s", g_err);
        main_frees++;
    }
    struct kheap_stats s;
    kheap_get_stats(g_h, &s);
    SCHECK(s.allocation_count == allocs && s.free_count == frees + main_frees &&
               allocs == frees + main_frees && s.failed_count == 0,
           "allocation_count %" PRIu64 " free_count %" PRIu64 ", threads %" PRIu64
           " allocs %" PRIu64 " frees, main %" PRIu64 " frees, failed %" PRIu64,
           s.allocation_count, s.free_count, allocs, frees, main_frees, s.failed_count);
    SCHECK(s.used_bytes == 0, "used_bytes %zu after all freed", s.used_bytes);
    uc = cache_row(g_cache[KIND_CTOR]);
    SCHECK(uc.active_objs == 0 && uc.allocs == get(&g_kind_allocs[KIND_CTOR]) &&
               uc.frees == get(&g_kind_frees[KIND_CTOR]),
           "cache %s: active %zu allocs %" PRIu64 " frees %" PRIu64 ", counted %lu, %lu",
           uc.name, uc.active_objs, uc.allocs, uc.frees,
           atomic_load(&g_kind_allocs[KIND_CTOR]), atomic_load(&g_kind_frees[KIND_CTOR]));
    check_quiet(g_h, "after the main thread freed the rest");

    /* kheap_reclaim reaches the depots and the main thread's own
     * magazines: with no other thread alive, nothing may stay cached (an
     * exited thread's magazines left in its slot would), and the user
     * cache, still there, keeps no slab. */
    kheap_reclaim(g_h);
    nrows = kheap_slabinfo(g_h, rows, MAX_ROWS);
    for (size_t i = 0; i < nrows && i < MAX_ROWS; i++) {
        if (!strncmp(rows[i].name, "kheap_", 6))
            continue;
        SCHECK(rows[i].cached_objs == 0 && rows[i].num_slabs == 0,
               "after %u threads exited and kheap_reclaim, cache %s still holds %zu cached "
               "objects and %zu slabs (an exited thread's magazines stranded, or reclaim "
               "missed the depot or the caller's own)",
               nthreads, rows[i].name, rows[i].cached_objs, rows[i].num_slabs);
    }
    check_quiet(g_h, "after reclaim");
    SCHECK(kheap_cache_destroy(g_cache[KIND_CTOR]) == KHEAP_OK, "kheap_cache_destroy failed");
    check_ctors_balanced("churn");
    kheap_reclaim(g_h);
    check_whole(g_h, "after reclaim");
    check_no_reports("churn");
    printf("# churn: %u threads (<= %d alive), %" PRIu64 " allocations, %" PRIu64
           " reaped from exited threads, %" PRIu64 " freed by main; cached after the exits: "
           "%zu (user cache %zu)\n",
           nthreads, CH_ALIVE, allocs, reaped, main_frees, cached_at_exit, uc_cached_at_exit);
    free(w);
    free(g_left.v);
    g_left.v = NULL;
    kt_heap_close(&t);
}

/* ================================================================== */
/* 4. slot_reuse                                                       */

#define SR_THREADS (KHEAP_MAX_CPUS + 8)
#define SR_K_MAX 64

struct w4 {
    unsigned id;
    uint64_t rng;
    struct item own[2 * SR_K_MAX];
    struct item in[SR_K_MAX]; /* written by the predecessor */
    size_t nin;
    uint64_t allocs, frees, nulls;
};

static struct w4 g_w4[SR_THREADS];
static pthread_barrier_t g_sr_first, g_sr_bar;
static unsigned g_sr_k, g_sr_rounds;

static bool sr_alloc(struct w4 *w, size_t j, bool cache)
{
    size_t size = cache ? 128 : 1 + (size_t)(kt_rand(&w->rng) % 512);
    void *p = cache ? kheap_cache_alloc(g_cache[KIND_CTOR]) : kheap_alloc(g_h, size);
    TCHECK(w->id, p != NULL, "allocation returned NULL");
    uint8_t kind = cache ? KIND_CTOR : KIND_KM;
    w->allocs++;
    atomic_fetch_add_explicit(&g_kind_allocs[kind], 1, memory_order_relaxed);
    return new_item(w->id, &w->rng, &w->own[j], p, size, kind);
}

/* A worker without a slot of its own (every owned one taken) looks at
 * the lent slot it borrows: the one of the CPU it runs on (hosted.c,
 * slot_lend), unless that slot's holder is inside an operation, or the
 * worker moved to another CPU between the two looks. Counted in
 * g_sr_looks, those on its CPU's slot in g_sr_on_cpu; looks that could
 * not learn the CPU (sched_getcpu failed: a sandbox that forbids getcpu)
 * in g_sr_blind. */
static atomic_ulong g_sr_looks, g_sr_on_cpu, g_sr_blind;

static void sr_lend_look(void)
{
#if KHEAP_HOSTED_SHARED_SLOTS > 0 && defined(__linux__) && defined(__GLIBC__)
    if (kh_hosted_slot != KHEAP_CPU_NONE || __atomic_load_n(&kh_hosted_rseq, __ATOMIC_RELAXED))
        return;
    for (int i = 0; i < 16; i++) {
        int cpu = sched_getcpu();
        unsigned slot = kheap_port_cpu_enter();
        kheap_port_cpu_exit(slot);
        if (cpu < 0)
            atomic_fetch_add(&g_sr_blind, 1);
        if (cpu < 0 || slot < KH_HOSTED_OWNED || slot == KHEAP_CPU_NONE)
            continue;
        atomic_fetch_add(&g_sr_looks, 1);
        if (slot == KH_HOSTED_OWNED + (unsigned)cpu % KHEAP_HOSTED_SHARED_SLOTS)
            atomic_fetch_add(&g_sr_on_cpu, 1);
    }
#endif
}

static void *sr_main(void *arg)
{
    struct w4 *w = arg;
    struct w4 *next = &g_w4[(w->id + 1) % SR_THREADS];
    unsigned k = g_sr_k;
    bool ok = true;
    for (unsigned r = 0; r < g_sr_rounds; r++) {
        /* k cache objects in own[0..k), k kmalloc blocks in own[k..2k). */
        for (size_t j = 0; ok && j < 2 * (size_t)k; j++) {
            ok = sr_alloc(w, j, j < k);
            if (r == 0 && j == 0) {
                pthread_barrier_wait(&g_sr_first); /* everybody alive, slot or not */
                /* The looks, with no other operation under way: a lent
                 * slot's holder preempted inside a long one (an asan
                 * build's) would send every look on its CPU elsewhere. */
                sr_lend_look();
                pthread_barrier_wait(&g_sr_first);
            }
        }
        /* The second half of each kind goes to the next thread. */
        if (ok) {
            size_t n = 0;
            for (size_t j = k / 2; j < k; j++)
                next->in[n++] = w->own[j];
            for (size_t j = k + k / 2; j < 2 * (size_t)k; j++)
                next->in[n++] = w->own[j];
            next->nin = n;
        }
        pthread_barrier_wait(&g_sr_bar);
        for (size_t j = 0; ok && j < k / 2; j++) {
            w->frees += 2;
            ok = free_item(w->id, &w->rng, &w->own[j], "own") &&
                 free_item(w->id, &w->rng, &w->own[k + j], "own");
        }
        for (size_t j = 0; ok && j < w->nin; j++) {
            w->frees++;
            ok = free_item(w->id, &w->rng, &w->in[j], "from the previous thread");
        }
        w->nin = 0;
        pthread_barrier_wait(&g_sr_bar); /* nobody exits before all are done */
    }
    return NULL;
}

/* TEST(slot_taken_after_borrowing): holders take every owned slot and
 * wait; a waiter borrows lent slots, then takes the slot a holder gives
 * back by exiting. */
static pthread_barrier_t g_st_bar;
static pthread_mutex_t g_st_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_st_cond = PTHREAD_COND_INITIALIZER;
static bool g_st_go[KHEAP_MAX_CPUS + 1];
static unsigned g_st_slot[KHEAP_MAX_CPUS + 1];

static void *st_holder(void *arg)
{
    unsigned i = (unsigned)(uintptr_t)arg;
    kheap_free(g_h, kheap_alloc(g_h, 64)); /* takes a slot, if one is left */
    g_st_slot[i] = kh_hosted_slot;
    pthread_barrier_wait(&g_st_bar); /* every holder has looked */
    pthread_mutex_lock(&g_st_lock);
    while (!g_st_go[i])
        pthread_cond_wait(&g_st_cond, &g_st_lock);
    pthread_mutex_unlock(&g_st_lock);
    return NULL; /* (its slot goes back at its exit) */
}

#define ST_BORROWS (4 * KH_HOSTED_SLOT_RETRY + 5)
struct st_waiter {
    pthread_barrier_t bar;
    unsigned borrowed_ops, slot_before, ops_after, slot_after;
};

static void *st_waiter(void *arg)
{
    struct st_waiter *w = arg;
    /* Every owned slot is taken: each operation borrows (a number of
     * them that leaves the next look for a slot some way off). */
    for (w->borrowed_ops = 0;
         w->borrowed_ops < ST_BORROWS && kh_hosted_slot == KHEAP_CPU_NONE;
         w->borrowed_ops++)
        kheap_free(g_h, kheap_alloc(g_h, 64));
    w->slot_before = kh_hosted_slot;
    pthread_barrier_wait(&w->bar); /* borrowed */
    pthread_barrier_wait(&w->bar); /* a holder has given its slot back */
    for (w->ops_after = 0;
         w->ops_after < 4 * KH_HOSTED_SLOT_RETRY && kh_hosted_slot == KHEAP_CPU_NONE;
         w->ops_after++)
        kheap_free(g_h, kheap_alloc(g_h, 64));
    w->slot_after = kh_hosted_slot;
    return NULL;
}

static void st_release(unsigned i)
{
    pthread_mutex_lock(&g_st_lock);
    g_st_go[i] = true;
    pthread_cond_broadcast(&g_st_cond);
    pthread_mutex_unlock(&g_st_lock);
}

TEST(slot_taken_after_borrowing)
{
    /* KH_HOSTED_OWNED holders and the main thread: one more than there
     * are owned slots, so every one is taken. */
    enum { HOLDERS = KH_HOSTED_OWNED };
    struct kt_heap t;
    test_open(&t, (size_t)32 << 20, (size_t)8 << 20);
    kheap_free(g_h, kheap_alloc(g_h, 64)); /* (the main thread's slot) */
    memset(g_st_go, 0, sizeof g_st_go);
    SCHECK(pthread_barrier_init(&g_st_bar, NULL, HOLDERS + 1) == 0, "pthread_barrier_init");
    pthread_t tid[HOLDERS], wt;
    for (unsigned i = 0; i < HOLDERS; i++) {
        int err = pthread_create(&tid[i], NULL, st_holder, (void *)(uintptr_t)i);
        if (err) { /* (a missing holder would leave the others on the barrier) */
            fprintf(stderr, "test_percpu: pthread_create %u of %d failed: %d\n", i, HOLDERS,
                    err);
            abort();
        }
    }
    pthread_barrier_wait(&g_st_bar);
    unsigned owners = 0, leaver = HOLDERS;
    for (unsigned i = 0; i < HOLDERS; i++)
        if (g_st_slot[i] != KHEAP_CPU_NONE) {
            owners++;
            leaver = i;
        }
    struct st_waiter w = {.slot_before = 0};
    SCHECK(pthread_barrier_init(&w.bar, NULL, 2) == 0, "pthread_barrier_init");
    SCHECK(pthread_create(&wt, NULL, st_waiter, &w) == 0, "pthread_create failed");
    pthread_barrier_wait(&w.bar); /* borrowed */
    if (leaver < HOLDERS) {
        st_release(leaver);
        pthread_join(tid[leaver], NULL);
    }
    pthread_barrier_wait(&w.bar); /* given back */
    SCHECK(pthread_join(wt, NULL) == 0, "pthread_join failed");
    for (unsigned i = 0; i < HOLDERS; i++)
        if (i != leaver) {
            st_release(i);
            pthread_join(tid[i], NULL);
        }
    pthread_barrier_destroy(&w.bar);
    pthread_barrier_destroy(&g_st_bar);
    printf("# slot_taken_after_borrowing: %u of %d holders took a slot; the waiter borrowed "
           "for %u operations, then took the slot given back after %u more\n",
           owners, HOLDERS, w.borrowed_ops, w.ops_after);
    SCHECK(leaver < HOLDERS && owners < HOLDERS && w.slot_before == KHEAP_CPU_NONE &&
               w.borrowed_ops == ST_BORROWS,
           "%u of %d holders took a slot (want some, not all); the waiter's slot after %u "
           "operations: %u (want none: %u)",
           owners, HOLDERS, w.borrowed_ops, w.slot_before, KHEAP_CPU_NONE);
    SCHECK(w.slot_after != KHEAP_CPU_NONE && w.slot_after < KH_HOSTED_OWNED &&
               w.ops_after <= KH_HOSTED_SLOT_RETRY,
           "after a holder gave its slot back, the waiter's slot is %u after %u operations "
           "(want an owned one within %u)",
           w.slot_after, w.ops_after, KH_HOSTED_SLOT_RETRY);
    kheap_reclaim(g_h); /* (the lent slots' magazines) */
    check_whole(g_h, "at the end");
    check_no_reports("slot_taken_after_borrowing");
    kt_heap_close(&t);
}

TEST(slot_reuse)
{
    struct kt_heap t;
    test_open(&t, (size_t)32 << 20, (size_t)8 << 20);
    new_cache(KIND_CTOR, "slot-obj", 128, 0);
    /* Small: drd's cost grows steeply with 72 threads running at once. */
    g_sr_k = g_small ? 4 : SR_K_MAX;
    g_sr_rounds = g_small ? 1 : 8;
    if (!g_small && g_ops < 1000000)
        g_sr_rounds = 4;

    /* The main thread holds a slot (it takes one now if it had none), so
     * KHEAP_MAX_CPUS - 1 are left for the workers. */
    void *o = kheap_cache_alloc(g_cache[KIND_CTOR]);
    SCHECK(o != NULL, "kheap_cache_alloc failed");
    kheap_cache_free(g_cache[KIND_CTOR], o);
    struct kheap_cache_info before = cache_row(g_cache[KIND_CTOR]);

    pthread_barrier_init(&g_sr_first, NULL, SR_THREADS);
    pthread_barrier_init(&g_sr_bar, NULL, SR_THREADS);
    pthread_t tid[SR_THREADS];
    for (unsigned i = 0; i < SR_THREADS; i++) {
        memset(&g_w4[i], 0, sizeof g_w4[i]);
        g_w4[i].id = i;
        g_w4[i].rng = rng_for(30, i);
    }
    for (unsigned i = 0; i < SR_THREADS; i++) {
        int err = pthread_create(&tid[i], NULL, sr_main, &g_w4[i]);
        /* A missing thread would leave the others on the barrier. */
        if (err) {
            fprintf(stderr, "test_percpu: pthread_create %u of %d failed: %d\n", i,
                    SR_THREADS, err);
            abort();
        }
    }
    for (unsigned i = 0; i < SR_THREADS; i++)
        pthread_join(tid[i], NULL);
    pthread_barrier_destroy(&g_sr_first);
    pthread_barrier_destroy(&g_sr_bar);
    SCHECK(!threads_failed(), "%s", g_err);

    uint64_t allocs = 0, frees = 0;
    for (unsigned i = 0; i < SR_THREADS; i++) {
        allocs += g_w4[i].allocs;
        frees += g_w4[i].frees;
    }
    uint64_t per_thread = 2ull * g_sr_k * g_sr_rounds; /* cache allocs + frees */
    SCHECK(allocs == frees && allocs == (uint64_t)SR_THREADS * 2 * g_sr_k * g_sr_rounds,
           "threads counted %" PRIu64 " allocs and %" PRIu64 " frees", allocs, frees);

    /* Operations on the per-CPU path count as CPU hits or misses; the
     * locked path (no slot) counts neither. Each worker did per_thread
     * cache operations. The workers that own a slot (all but the main
     * thread's of the owned ones) did all theirs there; the others
     * borrowed a lent slot for each operation, or took the locked path
     * when every lent slot was busy: with 8 lent slots and few CPUs, most
     * of theirs are on the per-CPU path. */
    struct kheap_cache_info uc = cache_row(g_cache[KIND_CTOR]);
    uint64_t cpu_ops = uc.cpu_hits + uc.cpu_misses - before.cpu_hits - before.cpu_misses;
    uint64_t owners = KH_HOSTED_OWNED - 1, lent_ops = cpu_ops - owners * per_thread;
    uint64_t borrowers_ops = (SR_THREADS - owners) * per_thread;
    SCHECK(cpu_ops >= owners * per_thread && lent_ops <= borrowers_ops &&
               lent_ops * 2 > borrowers_ops,
           "%" PRIu64 " cache operations on the per-CPU path; expected %" PRIu64
           " threads owning a slot x %" PRIu64 " each, and most of the other %" PRIu64
           " threads' %" PRIu64 " on lent slots",
           cpu_ops, owners, per_thread, (uint64_t)SR_THREADS - owners, borrowers_ops);
    SCHECK(uc.active_objs == 0 && uc.allocs == uc.frees &&
               uc.allocs == get(&g_kind_allocs[KIND_CTOR]) + 1 &&
               uc.frees == get(&g_kind_frees[KIND_CTOR]) + 1,
           "cache %s: active %zu allocs %" PRIu64 " frees %" PRIu64 ", counted %lu, %lu (+1)",
           uc.name, uc.active_objs, uc.allocs, uc.frees,
           atomic_load(&g_kind_allocs[KIND_CTOR]), atomic_load(&g_kind_frees[KIND_CTOR]));
    struct kheap_stats s;
    kheap_get_stats(g_h, &s);
    SCHECK(s.allocation_count == allocs + 1 && s.free_count == frees + 1 && s.used_bytes == 0 &&
               s.failed_count == 0,
           "allocation_count %" PRIu64 " free_count %" PRIu64 " (want %" PRIu64
           "), used %zu, failed %" PRIu64,
           s.allocation_count, s.free_count, allocs + 1, s.used_bytes, s.failed_count);
    check_quiet(g_h, "after the threads exited");
    SCHECK(kheap_cache_destroy(g_cache[KIND_CTOR]) == KHEAP_OK, "kheap_cache_destroy failed");
    check_ctors_balanced("slot_reuse");
    kheap_reclaim(g_h);
    check_whole(g_h, "after reclaim");
    check_no_reports("slot_reuse");
    printf("# slot_reuse: %d threads alive at once, %" PRIu64 " owning a slot; the others did "
           "%" PRIu64 " of their %" PRIu64 " operations on lent slots, the rest on the locked "
           "path\n",
           SR_THREADS, owners, lent_ops, borrowers_ops);
#if KHEAP_HOSTED_SHARED_SLOTS > 0 && defined(__linux__) && defined(__GLIBC__)
    /* Lent slots are taken by CPU: most looks find the slot of the CPU
     * the worker runs on (taken in turn from a shared count, as before,
     * about 1 in KHEAP_HOSTED_SHARED_SLOTS would). */
    unsigned long looks = atomic_load(&g_sr_looks), on_cpu = atomic_load(&g_sr_on_cpu);
    if (!looks && atomic_load(&g_sr_blind))
        printf("# slot_reuse: sched_getcpu failed %lu times: which lent slot a borrower "
               "takes not checked\n",
               atomic_load(&g_sr_blind));
    else if (!__atomic_load_n(&kh_hosted_rseq, __ATOMIC_RELAXED)) {
        SCHECK(looks > 0 && on_cpu * 2 > looks,
               "%lu of %lu lent slots were those of the borrower's CPU", on_cpu, looks);
        printf("# slot_reuse: %lu of %lu lent slots were those of the borrower's CPU\n",
               on_cpu, looks);
    }
#endif
    kt_heap_close(&t);
}

/* ================================================================== */
/* 5. reclaim_reach                                                    */

static size_t cached_total(kheap_t *h, bool kmalloc_only, size_t *slabs)
{
    struct kheap_cache_info rows[MAX_ROWS];
    size_t n = kheap_slabinfo(h, rows, MAX_ROWS), cached = 0;
    *slabs = 0;
    for (size_t i = 0; i < n && i < MAX_ROWS; i++) {
        if (!strncmp(rows[i].name, "kheap_", 6) || (kmalloc_only && i >= KHEAP_NUM_CLASSES))
            continue;
        cached += rows[i].cached_objs;
        *slabs += rows[i].num_slabs;
    }
    return cached;
}

TEST(reclaim_reach)
{
    struct kt_heap t;
    test_open(&t, (size_t)32 << 20, (size_t)8 << 20);
    size_t nobj = g_small ? 600 : 20000;
    void **v = calloc(nobj, sizeof *v);
    SCHECK(v != NULL, "calloc failed");
    uint64_t rng = rng_for(40, 0);
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < nobj; i++) {
            size_t size = 16 + (size_t)(kt_rand(&rng) % 1009);
            v[i] = kheap_alloc(g_h, size);
            SCHECK(v[i] != NULL, "kheap_alloc(%zu) #%zu failed", size, i);
            memset(v[i], 0x3c, size < 64 ? size : 64);
        }
        for (size_t i = nobj; i > 1; i--) { /* shuffle, then free */
            size_t j = (size_t)(kt_rand(&rng) % i);
            void *x = v[i - 1];
            v[i - 1] = v[j];
            v[j] = x;
        }
        for (size_t i = 0; i < nobj; i++)
            kheap_free(g_h, v[i]);
    }
    free(v);
    size_t slabs;
    size_t cached = cached_total(g_h, true, &slabs);
    SCHECK(cached > 0, "after %zu frees no object is cached", 3 * nobj);
    struct kheap_stats s;
    kheap_get_stats(g_h, &s);
    SCHECK(s.used_bytes == 0 && s.slab_bytes > 0, "before reclaim: used %zu slab %zu",
           s.used_bytes, s.slab_bytes);
    size_t slab_before = s.slab_bytes;
    size_t got = kheap_reclaim(g_h);
    SCHECK(got > 0, "kheap_reclaim returned 0 with %zu objects cached", cached);
    size_t cached_after = cached_total(g_h, false, &slabs);
    SCHECK(cached_after == 0 && slabs == 0,
           "after reclaim %zu objects cached, %zu slabs in the kmalloc caches", cached_after,
           slabs);
    check_whole(g_h, "after reclaim");
    check_quiet(g_h, "after reclaim");
    printf("# reclaim_reach: %zu objects were cached, slabs %zu bytes, reclaim gave back %zu\n",
           cached, slab_before, got);

    /* The same for a user cache that stays. */
    kheap_cache_t *c = kheap_cache_create(g_h, "reach-obj", 256, 0, kt_ctor, kt_dtor);
    SCHECK(c != NULL, "kheap_cache_create failed");
    void *o[512];
    size_t no = g_small ? 100 : 512;
    for (int round = 0; round < 4; round++) {
        for (size_t i = 0; i < no; i++)
            SCHECK((o[i] = kheap_cache_alloc(c)) != NULL, "kheap_cache_alloc #%zu failed", i);
        for (size_t i = 0; i < no; i++)
            kheap_cache_free(c, o[no - 1 - i]);
    }
    struct kheap_cache_info r = cache_row(c);
    SCHECK(r.cached_objs > 0 && r.active_objs == 0, "cache %s: %zu cached, %zu active", r.name,
           r.cached_objs, r.active_objs);
    got = kheap_reclaim(g_h);
    r = cache_row(c);
    SCHECK(got > 0 && r.cached_objs == 0 && r.num_slabs == 0,
           "reclaim gave back %zu; cache %s then has %zu cached, %zu slabs", got, r.name,
           r.cached_objs, r.num_slabs);
    check_ctors_balanced("after reclaim");
    SCHECK(kheap_cache_destroy(c) == KHEAP_OK, "kheap_cache_destroy failed");
    kheap_reclaim(g_h);
    check_whole(g_h, "after destroy and reclaim");
    check_quiet(g_h, "at the end");
    check_no_reports("reclaim_reach");
    kt_heap_close(&t);
}

/* ------------------------------------------------------------------ */
/* Homes (slab.c, "Homes"). */

struct hthread {
    kheap_t *h;
    void **theirs; /* objects the test thread allocated: freed here */
    void **mine;   /* then this thread's own allocations */
    size_t n, size;
};

/* A magazine of the calling thread's own with room, so that its next
 * frees of size take the hit path, which sends objects of other threads'
 * slabs to its remote front. */
static void warm_front(kheap_t *h, size_t size)
{
    void *warm[8];
    for (size_t i = 0; i < 8; i++)
        warm[i] = kheap_alloc(h, size);
    for (size_t i = 0; i < 8; i++)
        kheap_free(h, warm[i]);
}

static void *hthread_main(void *arg)
{
    struct hthread *t = arg;
    warm_front(t->h, t->size);
    for (size_t i = 0; i < t->n; i++)
        kheap_free(t->h, t->theirs[i]);
    for (size_t i = 0; i < t->n; i++)
        t->mine[i] = kheap_alloc(t->h, t->size);
    for (size_t i = 0; i < t->n; i++)
        kheap_free(t->h, t->mine[i]);
    return NULL;
}

static size_t count_in(void *const *v, size_t n, void *const *set, size_t m)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < m; j++)
            if (v[i] && v[i] == set[j]) {
                k++;
                break;
            }
    return k;
}

/* kmalloc class of size bytes in h (size a class size; 0 if none): its
 * slots per slab, and its objects per magazine (src/core/cpu.c says how
 * they are chosen). */
static size_t class_objs(kheap_t *h, size_t size);
static size_t mag_cap(kheap_t *h, size_t size);

/* A heap with homes for TEST(homes) and TEST(inboxes), whose size-byte
 * objects are 32 to a one-page slab and 64 to a magazine (a refill takes
 * half a magazine: 32); false, the heap closed, if this build's are
 * not. */
static bool homes_open(struct kt_heap *t, const char *test, size_t size)
{
    test_open_exact(t, KHEAP_HOMES_MIN_HEAP);
    if (class_objs(g_h, size) == 32 && mag_cap(g_h, size) == 64)
        return true;
    printf("# %s: %zu-byte objects are not 32 to a slab and 64 to a magazine in this build: "
           "skipped\n", test, size);
    kt_heap_close(t);
    return false;
}

/* The slabinfo row of h's kmalloc class of size bytes, all 0 if none. */
static struct kheap_cache_info class_row(kheap_t *h, size_t size)
{
    struct kheap_cache_info rows[MAX_ROWS];
    size_t n = kheap_slabinfo(h, rows, MAX_ROWS);
    char name[32];
    snprintf(name, sizeof name, "kmalloc-%zu", size);
    for (size_t i = 0; i < n && i < MAX_ROWS; i++)
        if (strcmp(rows[i].name, name) == 0)
            return rows[i];
    return (struct kheap_cache_info){0};
}

static size_t class_objs(kheap_t *h, size_t size)
{
    return class_row(h, size).objperslab;
}

static size_t mag_cap(kheap_t *h, size_t size)
{
    return class_row(h, size).mag_cap;
}

/* Objects the test thread's refills carved (their slabs its home), which
 * another thread frees, are not that thread's next allocations: they wait
 * in its remote front. When it exits they reach the depot tagged with
 * their home, below the other thread's own magazines, and the test
 * thread's next refill takes them first. Every step leaves the heap whole
 * (kheap_check_quiescent). Without homes the other thread would hand the
 * same objects straight out again, as it does on a heap below
 * KHEAP_HOMES_MIN_HEAP. */
TEST(homes)
{
    if (!KH_HOMES) {
        printf("# homes: this build has none (KHEAP_HOMES 0, one CPU, or no hit path)\n");
        return;
    }
    /* 128-byte objects: 32 to a one-page slab and 32 to a refill (half a
     * magazine of 64), so the test thread's N fill two slabs whole and
     * leave no partial slab, which the other thread's refill would take
     * over (a partial slab goes to the first CPU that needs one). */
    enum { N = 64 };
    const size_t size = 128;
    struct kt_heap t;
    if (!homes_open(&t, "homes", size))
        return;
    void *mine[N], *theirs[N], *back[2 * N];
    for (size_t i = 0; i < N; i++)
        SCHECK((mine[i] = kheap_alloc(g_h, size)) != NULL, "kheap_alloc #%zu failed", i);
    struct hthread ht = {g_h, mine, theirs, N, size};
    pthread_t th;
    SCHECK(pthread_create(&th, NULL, hthread_main, &ht) == 0, "pthread_create failed");
    SCHECK(pthread_join(th, NULL) == 0, "pthread_join failed");
    check_quiet(g_h, "after the other thread");
    size_t reused = count_in(theirs, N, mine, N);
    SCHECK(reused == 0,
           "the other thread's allocations returned %zu of the %d objects it freed, "
           "which were homed at the test thread",
           reused, N);
    /* The depot holds the other thread's own magazines on top of the one
     * of the test thread's objects; the test thread's magazines are
     * empty, and its next N allocations are its own objects back. */
    for (size_t i = 0; i < 2 * N; i++)
        SCHECK((back[i] = kheap_alloc(g_h, size)) != NULL, "kheap_alloc #%zu failed", i);
    size_t home = count_in(back, N, mine, N);
    SCHECK(home == N,
           "after the other thread exited, the test thread's first %d allocations returned "
           "%zu of the %d objects the other thread freed (want all: a refill takes its "
           "own magazine from the depot first)",
           N, home, N);
    for (size_t i = 0; i < 2 * N; i++)
        kheap_free(g_h, back[i]);
    printf("# homes: %zu of %d objects freed on another thread came home\n", home, N);
    kheap_reclaim(g_h);
    check_whole(g_h, "at the end");
    check_quiet(g_h, "at the end");
    check_no_reports("homes");
    kt_heap_close(&t);

    /* A heap below KHEAP_HOMES_MIN_HEAP has none: the other thread keeps
     * what it frees, and hands it out again. */
    test_open_exact(&t, KHEAP_HOMES_MIN_HEAP / 2);
    for (size_t i = 0; i < N; i++)
        SCHECK((mine[i] = kheap_alloc(g_h, size)) != NULL, "kheap_alloc #%zu failed", i);
    ht = (struct hthread){g_h, mine, theirs, N, size};
    SCHECK(pthread_create(&th, NULL, hthread_main, &ht) == 0, "pthread_create failed");
    SCHECK(pthread_join(th, NULL) == 0, "pthread_join failed");
    reused = count_in(theirs, N, mine, N);
    SCHECK(reused > 0, "a heap of %zu bytes has homes: the other thread reused none of the %d "
           "objects it freed", (size_t)KHEAP_HOMES_MIN_HEAP / 2, N);
    check_quiet(g_h, "a heap without homes");
    printf("# homes: on a heap of %zu bytes (none) the other thread reused %zu of %d\n",
           (size_t)KHEAP_HOMES_MIN_HEAP / 2, reused, N);
    kheap_reclaim(g_h);
    check_whole(g_h, "without homes, at the end");
    check_no_reports("homes, a heap without");
    kt_heap_close(&t);
}

/* The other thread of TEST(short_partial_list_left_alone): n
 * allocations of size (its first refill). */
enum { SHORT_N = 32 };
struct pthread_some {
    kheap_t *h;
    size_t size;
    void *p[SHORT_N];
};

static void *some_alloc_main(void *arg)
{
    struct pthread_some *o = arg;
    for (size_t i = 0; i < SHORT_N; i++)
        o->p[i] = kheap_alloc(o->h, o->size);
    return NULL;
}

/* A refill on a CPU none of whose slabs is partial, when the partial
 * list is short and every slab on it is another CPU's, carves an empty
 * slab (or a new one) rather than take that CPU's partial slab, whose
 * objects the other CPU still holds would then be homed away from it
 * (slab.c, "Homes"). 64-byte objects, 63 to a one-page slab: the test
 * thread's first allocation refills half a magazine (32) from a new
 * slab, which stays partial and its own. The other thread's first 32
 * allocations (its first refill) then come from another slab; taking the
 * test thread's would have given it the 31 slots left there. */
TEST(short_partial_list_left_alone)
{
    if (!KH_HOMES) {
        printf("# short_partial_list_left_alone: this build has no homes\n");
        return;
    }
    const size_t size = 64;
    struct kt_heap t;
    test_open_exact(&t, KHEAP_HOMES_MIN_HEAP);
    size_t objs = class_objs(g_h, size);
    if (objs <= (mag_cap(g_h, size) + 1) / 2 || mag_cap(g_h, size) / 2 != SHORT_N) {
        printf("# short_partial_list_left_alone: a refill of %zu-byte objects is not %d, or "
               "fills a slab (%zu), in this build: skipped\n", size, SHORT_N, objs);
        kt_heap_close(&t);
        return;
    }
    void *mine = kheap_alloc(g_h, size);
    SCHECK(mine != NULL, "kheap_alloc failed");
    const struct kh_page *my_slab = kh_slab_of(g_h, (uintptr_t)mine);
    struct pthread_some o = {.h = g_h, .size = size};
    pthread_t th;
    SCHECK(pthread_create(&th, NULL, some_alloc_main, &o) == 0, "pthread_create failed");
    SCHECK(pthread_join(th, NULL) == 0, "pthread_join failed");
    size_t on = 0;
    for (size_t i = 0; i < SHORT_N; i++) {
        SCHECK(o.p[i] != NULL, "the other thread's kheap_alloc #%zu failed", i);
        on += kh_slab_of(g_h, (uintptr_t)o.p[i]) == my_slab;
    }
    printf("# short_partial_list_left_alone: %zu of the other thread's first %d objects are on "
           "the test thread's partial slab\n",
           on, SHORT_N);
    SCHECK(on == 0,
           "the other thread's refill took the test thread's partial slab, the only one on "
           "the list: %zu of its %d objects are on the slab of %p",
           on, SHORT_N, mine);
    kheap_free(g_h, mine);
    for (size_t i = 0; i < SHORT_N; i++)
        kheap_free(g_h, o.p[i]);
    kheap_reclaim(g_h);
    check_whole(g_h, "at the end");
    check_quiet(g_h, "at the end");
    check_no_reports("short_partial_list_left_alone");
    kt_heap_close(&t);
}

/* The other thread of TEST(short_partial_list_without_pages): its state
 * set up (an allocation of another class), then, once the heap is full,
 * SHORT_N allocations of size. */
struct pthread_late {
    struct pthread_some some;
    void *warm;
    pthread_barrier_t *bar;
};

static void *late_alloc_main(void *arg)
{
    struct pthread_late *l = arg;
    l->warm = kheap_alloc(l->some.h, 256);
    pthread_barrier_wait(l->bar); /* 1: set up */
    pthread_barrier_wait(l->bar); /* 2: the heap is full */
    return some_alloc_main(&l->some);
}

/* The same with no pages to spare (fewer free than KH_SLAB_LET_GO_PAGES):
 * the other thread's refill carves the test thread's partial slab after
 * all, rather than spend the heap's last pages (or grow it) on a slab of
 * its own. */
TEST(short_partial_list_without_pages)
{
    if (!KH_HOMES || KHEAP_MAX_CPUS < 4) {
        printf("# short_partial_list_without_pages: this build has no homes, or under 4 CPUs\n");
        return;
    }
    const size_t size = 64;
    struct kt_heap t;
    test_open_exact(&t, KHEAP_HOMES_MIN_HEAP);
    if (class_objs(g_h, size) <= (mag_cap(g_h, size) + 1) / 2 || mag_cap(g_h, size) / 2 != SHORT_N) {
        printf("# short_partial_list_without_pages: a refill of %zu-byte objects is not %d, or "
               "fills a slab, in this build: skipped\n", size, SHORT_N);
        kt_heap_close(&t);
        return;
    }
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, 2);
    struct pthread_late l = {.some = {.h = g_h, .size = size}, .bar = &bar};
    void *warm = kheap_alloc(g_h, 256);
    SCHECK(warm != NULL, "kheap_alloc failed");
    pthread_t th;
    SCHECK(pthread_create(&th, NULL, late_alloc_main, &l) == 0, "pthread_create failed");
    pthread_barrier_wait(&bar); /* 1 */
    /* Large blocks until KHEAP_MAX_CPUS / 2 + 4 pages are left: under the
     * margin (KHEAP_MAX_CPUS + 1 one-page slabs) once the test thread's
     * slab and magazines are made, and enough for another slab. */
    enum { FILL = 64 };
    void *fill[FILL];
    size_t nfill = 0;
    const size_t leave = KHEAP_MAX_CPUS / 2 + 4;
    for (;;) {
        struct kheap_stats st;
        kheap_get_stats(g_h, &st);
        size_t free_pages = st.heap_free / KHEAP_PAGE_SIZE;
        if (free_pages <= leave || nfill == FILL)
            break;
        size_t want = free_pages - leave;
        void *b = NULL;
        while (want && !(b = kheap_alloc(g_h, want * KHEAP_PAGE_SIZE)))
            want /= 2;
        if (!b)
            break;
        fill[nfill++] = b;
    }
    void *mine = kheap_alloc(g_h, size);
    SCHECK(mine != NULL, "kheap_alloc failed");
    const struct kh_page *my_slab = kh_slab_of(g_h, (uintptr_t)mine);
    struct kheap_stats st;
    kheap_get_stats(g_h, &st);
    pthread_barrier_wait(&bar); /* 2 */
    SCHECK(pthread_join(th, NULL) == 0, "pthread_join failed");
    size_t on = 0, got = 0;
    for (size_t i = 0; i < SHORT_N; i++) {
        got += l.some.p[i] != NULL;
        on += l.some.p[i] && kh_slab_of(g_h, (uintptr_t)l.some.p[i]) == my_slab;
    }
    printf("# short_partial_list_without_pages: %zu pages free, %zu of the other thread's %zu "
           "objects on the test thread's partial slab\n",
           (size_t)(st.heap_free / KHEAP_PAGE_SIZE), on, got);
    SCHECK(on > 0,
           "with %zu pages free the other thread's refill took none of the test thread's "
           "partial slab (%zu objects had)",
           (size_t)(st.heap_free / KHEAP_PAGE_SIZE), got);
    kheap_free(g_h, mine);
    kheap_free(g_h, warm);
    kheap_free(g_h, l.warm);
    for (size_t i = 0; i < SHORT_N; i++)
        kheap_free(g_h, l.some.p[i]);
    for (size_t i = 0; i < nfill; i++)
        kheap_free(g_h, fill[i]);
    pthread_barrier_destroy(&bar);
    kheap_reclaim(g_h);
    check_whole(g_h, "at the end");
    check_quiet(g_h, "at the end");
    check_no_reports("short_partial_list_without_pages");
    kt_heap_close(&t);
}

/* The other thread of TEST(inboxes): frees what it is given (objects of
 * the test thread's slabs) while the test thread waits, then waits itself
 * until the test thread has looked, so its magazines stay where they
 * went. */
#if KH_HOMES
struct ithread {
    kheap_t *h;
    void **theirs;
    size_t n, size;
    pthread_barrier_t *bar;
    void *one; /* another of the test thread's objects, given at 2 */
};

static void *ithread_main(void *arg)
{
    struct ithread *t = arg;
    warm_front(t->h, t->size);
    for (size_t i = 0; i < t->n; i++)
        kheap_free(t->h, t->theirs[i]);
    pthread_barrier_wait(t->bar); /* 1: freed */
    pthread_barrier_wait(t->bar); /* 2: the test thread has looked */
    /* Its remote front is full (the last magazine of theirs): this free
     * sends it to the test thread's inbox; then one of them freed again,
     * a double free the look-up must find in that inbox. */
    kheap_free(t->h, t->one);
    kheap_free(t->h, t->theirs[t->n - 1]);
    pthread_barrier_wait(t->bar); /* 3: freed twice */
    pthread_barrier_wait(t->bar); /* 4: the test thread has looked again */
    return NULL;
}
#endif

#if KH_HOMES
/* The magazines on a list through next. */
static unsigned mags_on(const struct kh_mag *m)
{
    unsigned n = 0;
    for (; m; m = m->next)
        n++;
    return n;
}

/* The full magazines of class c in the CPUs' inboxes (inboxes), or in
 * their inboxes and stashes as the heap counts them (its count and the
 * CPUs' dues: cpu.c, "Inboxes"). The heap quiet. */
static int64_t mailed_in(const struct kheap_cache *c, bool inboxes)
{
    int64_t n = inboxes ? 0 : __atomic_load_n(&g_h->mailed[c->cls], __ATOMIC_RELAXED);
    for (unsigned k = 0; k < KHEAP_MAX_CPUS; k++) {
        const struct kh_mail *mail = __atomic_load_n(&g_h->cpu[k]->mail, __ATOMIC_ACQUIRE);
        if (mail && inboxes)
            n += mags_on(mail->inbox[c->cls].full);
        else if (mail)
            n += __atomic_load_n(&mail->due[c->cls], __ATOMIC_RELAXED);
    }
    return n;
}
#endif

TEST(inboxes)
{
#if !KH_HOMES
    printf("# inboxes: this build has no homes\n");
#else
    /* As TEST(homes): 128-byte objects, a refill of 32 from the slabs and
     * magazines of 64. The other thread frees 7 magazines' worth: its
     * remote front sends six (the 65th, 129th, ... 321st free) and holds
     * the seventh. */
    enum { N = 64, SENT = 6 };
    const size_t size = 128;
    struct kt_heap t;
    if (!homes_open(&t, "inboxes", size))
        return;
    kheap_set_decay(g_h, 0); /* (as TEST(inbox_returns)) */
    struct kheap_cache *c = &g_h->kmalloc[kh_small_class[(size + 7) >> 3]];
    void *mine[(SENT + 1) * N], *back[SENT * N];
    for (size_t i = 0; i < (SENT + 1) * N; i++)
        SCHECK((mine[i] = kheap_alloc(g_h, size)) != NULL, "kheap_alloc #%zu failed", i);
    pthread_barrier_t bar;
    SCHECK(pthread_barrier_init(&bar, NULL, 2) == 0, "pthread_barrier_init failed");
    struct ithread it = {g_h, mine, (SENT + 1) * N, size, &bar, NULL};
    pthread_t th;
    SCHECK(pthread_create(&th, NULL, ithread_main, &it) == 0, "pthread_create failed");
    pthread_barrier_wait(&bar); /* 1 */
    /* (the other thread waits at the barrier, outside kheap) */
    check_quiet(g_h, "with six magazines in the inbox");
    int64_t inboxed = mailed_in(c, true), counted = mailed_in(c, false);
    uint32_t depot = c->nr_full_mags;
    SCHECK(inboxed == SENT && counted == SENT && depot == 0,
           "the other thread's remote front sent %lld magazines to the test thread's inbox "
           "(counted: %lld) and %u to the depot (want %d, %d and 0)", (long long)inboxed,
           (long long)counted, depot, SENT, SENT);
    /* The test thread's loaded magazine is empty (its allocations were
     * refills of 32) and its previous the sentinel: its next allocations
     * take the inbox whole, load one magazine (A) and stash five (B to
     * F); then load B, which makes A the previous one, and C, which
     * trades A, empty: A waits to go back to the other thread with the
     * next empties for it (kh_mail.ret). Loading D, E and F trades B, C
     * and D, and the four go back together. */
    unsigned gathered[2], returned[2];
    for (size_t round = 0; round < 2; round++) {
        for (size_t i = round * 3 * N; i < (round + 1) * 3 * N; i++)
            SCHECK((back[i] = kheap_alloc(g_h, size)) != NULL, "kheap_alloc #%zu failed", i);
        gathered[round] = returned[round] = 0;
        for (unsigned k = 0; k < KHEAP_MAX_CPUS; k++) {
            const struct kh_mail *mail = __atomic_load_n(&g_h->cpu[k]->mail, __ATOMIC_ACQUIRE);
            returned[round] += mail ? mags_on(mail->inbox[c->cls].empty) : 0;
            gathered[round] += mail ? mags_on(mail->ret[c->cls]) : 0;
        }
        check_quiet(g_h, round ? "after six loads" : "after three loads");
    }
    size_t home = count_in(back, SENT * N, mine, SENT * N);
    SCHECK(home == SENT * N,
           "the test thread's %d allocations returned %zu of the first %d objects the other "
           "thread freed (want all: its inbox's six magazines)", SENT * N, home, SENT * N);
    int64_t left = mailed_in(c, false);
    SCHECK(left == 0 && gathered[0] == 1 && returned[0] == 0 && gathered[1] == 0 &&
               returned[1] == KH_RET_MAX,
           "after the test thread's allocations: %lld magazines left in inboxes and stashes "
           "(want 0); after three loads %u empties gathered for the other thread and %u sent "
           "back (want 1 and 0), after six %u and %u (want 0 and %d)", (long long)left,
           gathered[0], returned[0], gathered[1], returned[1], KH_RET_MAX);
    check_quiet(g_h, "after the test thread took its inbox");
    SCHECK((it.one = kheap_alloc(g_h, size)) != NULL, "kheap_alloc failed%s", "");
    pthread_barrier_wait(&bar); /* 2 */
    pthread_barrier_wait(&bar); /* 3 */
    /* The other thread's seventh send took the four empties whole: one
     * loaded, three its spares (with the test thread's one: its own
     * refill magazine, traded for B). */
    unsigned spares = 0;
    for (unsigned k = 0; k < KHEAP_MAX_CPUS; k++) {
        const struct kh_mail *mail = __atomic_load_n(&g_h->cpu[k]->mail, __ATOMIC_ACQUIRE);
        spares += mail ? mags_on(mail->spare[c->cls]) : 0;
    }
    SCHECK(spares == KH_RET_MAX - 1 + 1,
           "after the other thread's seventh send: %u spare magazines (want %d: all but one "
           "of the %d it had back, and the test thread's own)", spares, KH_RET_MAX - 1 + 1,
           KH_RET_MAX);
    pthread_barrier_wait(&bar); /* 4 */
    struct kheap_report r = kt_last_report();
    SCHECK(kt_reports() == 1 && r.kind == KHEAP_REPORT_DOUBLE_FREE &&
               r.addr == mine[(SENT + 1) * N - 1],
           "a double free on the other thread of an object its remote front had sent to the "
           "test thread's inbox: %lu reports, the last %d at %p (want one DOUBLE_FREE at %p)",
           kt_reports(), (int)r.kind, r.addr, mine[(SENT + 1) * N - 1]);
    kt_reports_reset();
    SCHECK(pthread_join(th, NULL) == 0, "pthread_join failed");
    pthread_barrier_destroy(&bar);
    printf("# inboxes: %lld magazines reached the inbox, %zu of %d objects came home from it, "
           "%u magazines went back empty together; a double free of an object sent home was "
           "reported\n",
           (long long)inboxed, home, SENT * N, returned[1]);
    for (size_t i = 0; i < SENT * N; i++)
        kheap_free(g_h, back[i]);
    kheap_reclaim(g_h);
    check_whole(g_h, "at the end");
    check_quiet(g_h, "at the end");
    check_no_reports("inboxes");
    kt_heap_close(&t);
#endif
}

#if KH_HOMES
/* A sender of TEST(inbox_returns): at each of its phases, frees its
 * range of the test thread's objects between two barriers, then waits
 * until the test thread has looked (its magazines stay where they went). */
enum { RET_PHASES = 4 };
struct rsender {
    kheap_t *h;
    void **objs;
    size_t from[RET_PHASES], to[RET_PHASES];
    pthread_barrier_t *bar;
};

static void *rsender_main(void *arg)
{
    struct rsender *t = arg;
    warm_front(t->h, 128);
    for (int ph = 0; ph < RET_PHASES; ph++) {
        pthread_barrier_wait(t->bar); /* go */
        for (size_t i = t->from[ph]; i < t->to[ph]; i++)
            kheap_free(t->h, t->objs[i]);
        pthread_barrier_wait(t->bar); /* freed */
    }
    pthread_barrier_wait(t->bar); /* the test thread has looked */
    return NULL;
}
#endif

TEST(inbox_returns)
{
#if !KH_HOMES
    printf("# inbox_returns: this build has no homes\n");
#else
    /* Two senders, Y and Z, free the test thread's 128-byte objects; a
     * remote front of 64 sends its full magazine at the free after it
     * filled. Phase by phase (the test thread loads a magazine for each
     * N of its allocations, trading the empty one loaded before last):
     *   0: Y sends two (Y1, Y2); the test thread loads both, trading its
     *      own magazine, which is no one's to return;
     *   1: Z sends Z1; loading it trades one of Y's: gathered for Y;
     *   2: Z sends Z2; loading it trades Y's other: two gathered for Y;
     *   3: Y sends Y3; loading it trades Z1, of another origin: the two
     *      go to Y's inbox together, and Z1 waits for Z;
     * then the decay epoch's end sends Z1 on. */
    enum { N = 64, ALLOCS = 11 * 32 };
    const size_t size = 128;
    struct kt_heap t;
    if (!homes_open(&t, "inbox_returns", size))
        return;
    /* (no decay but the epochs ticked below: an epoch's end between the
     * phases, a slow build's or a busy machine's, would move the inboxes
     * to the depot and send the gathered empties on early) */
    kheap_set_decay(g_h, 0);
    struct kheap_cache *c = &g_h->kmalloc[kh_small_class[(size + 7) >> 3]];
    /* (a multiple of the refill: the test thread's loaded magazine ends empty) */
    static void *mine[ALLOCS], *back[5 * N];
    for (size_t i = 0; i < ALLOCS; i++)
        SCHECK((mine[i] = kheap_alloc(g_h, size)) != NULL, "kheap_alloc #%zu failed", i);
    pthread_barrier_t bar;
    SCHECK(pthread_barrier_init(&bar, NULL, 3) == 0, "pthread_barrier_init failed");
    /* Y: 2N+1 at phase 0, N at 3; Z: N+1 at 1, N at 2. */
    struct rsender y = {g_h, mine, {0, 0, 0, 4 * N + 2}, {2 * N + 1, 0, 0, 5 * N + 2}, &bar};
    struct rsender z = {g_h, mine, {0, 2 * N + 1, 3 * N + 2, 0}, {0, 3 * N + 2, 4 * N + 2, 0},
                        &bar};
    pthread_t ty, tz;
    SCHECK(pthread_create(&ty, NULL, rsender_main, &y) == 0, "pthread_create failed");
    SCHECK(pthread_create(&tz, NULL, rsender_main, &z) == 0, "pthread_create failed");
    /* Per phase: the test thread's gathered empties, their origin, and
     * the empties in the inbox of Y (known from phase 1 on). */
    unsigned gathered[RET_PHASES], at_y[RET_PHASES], origin[RET_PHASES], me = KHEAP_MAX_CPUS,
        cpu_y = KHEAP_MAX_CPUS;
    static const unsigned loads[RET_PHASES] = {2, 1, 1, 1};
    size_t done = 0;
    for (int ph = 0; ph < RET_PHASES; ph++) {
        pthread_barrier_wait(&bar); /* go */
        pthread_barrier_wait(&bar); /* freed */
        for (size_t i = 0; i < loads[ph] * N; i++, done++)
            SCHECK((back[done] = kheap_alloc(g_h, size)) != NULL, "kheap_alloc #%zu failed",
                   done);
        gathered[ph] = 0;
        origin[ph] = KHEAP_MAX_CPUS;
        for (unsigned k = 0; k < KHEAP_MAX_CPUS; k++) {
            const struct kh_mail *mail = __atomic_load_n(&g_h->cpu[k]->mail, __ATOMIC_ACQUIRE);
            if (mail && mail->ret[c->cls]) {
                me = k;
                gathered[ph] = mags_on(mail->ret[c->cls]);
                origin[ph] = mail->ret[c->cls]->origin;
            }
        }
        if (ph == 1)
            cpu_y = origin[ph];
        const struct kh_mail *ymail =
            cpu_y < KHEAP_MAX_CPUS ? __atomic_load_n(&g_h->cpu[cpu_y]->mail, __ATOMIC_ACQUIRE)
                                   : NULL;
        at_y[ph] = ymail ? mags_on(ymail->inbox[c->cls].empty) : 0;
        check_quiet(g_h, "after a phase of inbox_returns");
    }
    SCHECK(gathered[0] == 0 && gathered[1] == 1 && gathered[2] == 2 && gathered[3] == 1 &&
               at_y[1] == 0 && at_y[2] == 0 && at_y[3] == 2 && origin[1] == cpu_y &&
               origin[2] == cpu_y && origin[3] != cpu_y && origin[3] != me &&
               origin[3] < KHEAP_MAX_CPUS,
           "empties gathered by the test thread per phase: %u %u %u %u (want 0 1 2 1), of "
           "CPU %u %u %u %u (want -, Y, Y, Z; Y is %u, the test thread %u); in Y's inbox: "
           "%u %u %u (want 0 0 2)",
           gathered[0], gathered[1], gathered[2], gathered[3], origin[0], origin[1], origin[2],
           origin[3], cpu_y, me, at_y[1], at_y[2], at_y[3]);
    /* The decay epoch's end: the test thread's tick sends Z1 on. */
    kheap_set_decay(g_h, 1000);
    uint64_t now = (uint64_t)1 << 40; /* far past the port's clock: only these ticks count */
    for (int i = 0; i < 3; i++, now += 1000)
        kheap_tick(g_h, now);
    kheap_set_decay(g_h, 0);
    const struct kh_mail *mail = __atomic_load_n(&g_h->cpu[me]->mail, __ATOMIC_ACQUIRE);
    SCHECK(!mail->ret[c->cls] && !mail->ret_n[c->cls],
           "after three decay epochs the test thread still gathers %u empties (want 0)",
           mags_on(mail->ret[c->cls]));
    check_quiet(g_h, "after the decay epochs");
    pthread_barrier_wait(&bar); /* looked */
    SCHECK(pthread_join(ty, NULL) == 0 && pthread_join(tz, NULL) == 0, "pthread_join failed");
    pthread_barrier_destroy(&bar);
    printf("# inbox_returns: gathered %u, %u, %u, %u empties after each phase; a change of "
           "origin sent %u together; the decay epoch's end sent the last on\n",
           gathered[0], gathered[1], gathered[2], gathered[3], at_y[3]);
    for (size_t i = 0; i < done; i++)
        kheap_free(g_h, back[i]);
    for (size_t i = 5 * N + 2; i < ALLOCS; i++)
        kheap_free(g_h, mine[i]);
    kheap_reclaim(g_h);
    check_whole(g_h, "at the end");
    check_quiet(g_h, "at the end");
    check_no_reports("inbox_returns");
    kt_heap_close(&t);
#endif
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------------ */
/* The CPUs' caches of large blocks. */

/* One misuse of a cached block: exactly one report, FREE_RUN, at addr. */
static void lmisuse(unsigned long before, const void *addr, const char *what)
{
    struct kheap_report r = kt_last_report();
    CHECK(kt_reports() == before + 1 && r.kind == KHEAP_REPORT_FREE_RUN && r.addr == addr,
          "%s: %lu reports, last %d at %p (want one FREE_RUN at %p)", what, kt_reports() - before,
          (int)r.kind, r.addr, addr);
}

struct lthread {
    kheap_t *h;
    void *free_this; /* freed by the thread, then it allocates and frees its own */
    size_t cached;   /* large_cache_bytes the thread saw before exiting */
};

static void *lthread_main(void *arg)
{
    struct lthread *t = arg;
    kheap_free(t->h, t->free_this);
    void *p = kheap_alloc(t->h, 100000);
    kheap_free(t->h, p);
    t->cached = kt_stats(t->h).large_cache_bytes;
    return NULL;
}

TEST(large_block_cache)
{
    /* Large enough for each CPU's cache to hold KHEAP_RUN_CACHE_BYTES:
     * all of them together hold at most an eighth of the heap. */
    struct kt_heap t;
    kt_heap_open(&t, (size_t)KHEAP_RUN_CACHE_BYTES * 8 * KHEAP_MAX_CPUS);
    kheap_t *h = t.h;
    kheap_set_decay(h, 0); /* decay is driven by hand below */
    const size_t np = (100000 + PAGE - 1) / PAGE;
    unsigned char *p = kheap_alloc(h, 100000);
    CHECK(p != NULL, "kheap_alloc(100000) = NULL%s", "");
    struct kheap_stats s0 = kt_stats(h);
    CHECK(s0.large_count == 1 && s0.used_bytes == np * PAGE, "one block live: count %zu used %zu",
          s0.large_count, s0.used_bytes);
    kheap_free(h, p);
    struct kheap_stats s1 = kt_stats(h);
    size_t want = KH_RUNS ? np * PAGE : 0;
    CHECK(s1.large_cache_bytes == want && s1.large_count == 0 && s1.used_bytes == 0 &&
              s1.free_count == s0.free_count + 1,
          "after the free: cached %zu (want %zu), count %zu, used %zu, frees %" PRIu64,
          s1.large_cache_bytes, want, s1.large_count, s1.used_bytes, s1.free_count);
    CHECK(s1.large_bytes == want, "large_bytes %zu with %zu cached", s1.large_bytes, want);
    kt_check_quiet(h, "a block cached");
    if (!KH_RUNS) {
        printf("# no caches of large blocks in this build: freed blocks go to the pages\n");
        kt_heap_close(&t);
        return;
    }

    /* The next allocation of that page count takes it, whatever its size. */
    unsigned char *q = kheap_alloc(h, np * PAGE - 100);
    struct kheap_stats s2 = kt_stats(h);
    CHECK(q == p && s2.large_cache_bytes == 0 && s2.large_count == 1 &&
              s2.allocation_count == s1.allocation_count + 1 && s2.used_bytes == np * PAGE,
          "reallocated %p (freed %p): cached %zu, count %zu, used %zu", (void *)q, (void *)p,
          s2.large_cache_bytes, s2.large_count, s2.used_bytes);
    CHECK(kheap_usable_size(h, q) == np * PAGE, "usable size %zu", kheap_usable_size(h, q));
    memset(q, 0x5a, np * PAGE);

    /* Misuse of a cached block: as of any freed large block. */
    kheap_free(h, q);
    unsigned long n = kt_reports();
    kheap_free(h, q);
    lmisuse(n, q, "second free of a cached block");
    n = kt_reports();
    kheap_free(h, q + 3 * PAGE);
    lmisuse(n, q + 3 * PAGE, "free inside a cached block");
    n = kt_reports();
    kheap_free(h, q + (np - 1) * PAGE);
    lmisuse(n, q + (np - 1) * PAGE, "free in a cached block's last page");
    n = kt_reports();
    CHECK(kheap_usable_size(h, q) == 0, "usable size of a cached block%s", "");
    lmisuse(n, q, "usable size of a cached block");
    n = kt_reports();
    CHECK(kheap_realloc(h, q, 10) == NULL, "realloc of a cached block%s", "");
    lmisuse(n, q, "realloc of a cached block");
    CHECK(kt_stats(h).large_cache_bytes == np * PAGE, "the misuse changed the cache (%zu)",
          kt_stats(h).large_cache_bytes);
    kt_check_quiet(h, "after the misuse");

    /* The bound: KHEAP_RUN_CACHE_BYTES per CPU; the rest to the pages. */
    kheap_reclaim(h);
    CHECK(kt_stats(h).large_cache_bytes == 0 && kt_stats(h).large_bytes == 0,
          "reclaim left %zu cached", kt_stats(h).large_cache_bytes);
    enum { NB = 12 };
    void *b[NB];
    for (int i = 0; i < NB; i++) {
        b[i] = kheap_alloc(h, KHEAP_RUN_CACHE_MAX);
        CHECK(b[i] != NULL, "block %d of %d bytes", i, (int)KHEAP_RUN_CACHE_MAX);
    }
    for (int i = 0; i < NB; i++)
        kheap_free(h, b[i]);
    size_t bound = KHEAP_RUN_CACHE_BYTES / KHEAP_RUN_CACHE_MAX * KHEAP_RUN_CACHE_MAX;
    struct kheap_stats s3 = kt_stats(h);
    CHECK(s3.large_cache_bytes == bound && s3.large_bytes == bound && s3.used_bytes == 0,
          "%d blocks of %d bytes freed: cached %zu (want %zu), large %zu", NB,
          (int)KHEAP_RUN_CACHE_MAX, s3.large_cache_bytes, bound, s3.large_bytes);
    kt_check_quiet(h, "cache full");
    /* Above KHEAP_RUN_CACHE_MAX, blocks are never cached. */
    void *big = kheap_alloc(h, KHEAP_RUN_CACHE_MAX + 1);
    CHECK(big != NULL, "a block above the cached sizes%s", "");
    kheap_reclaim(h);
    kheap_free(h, big);
    CHECK(kt_stats(h).large_cache_bytes == 0 && kt_stats(h).large_bytes == 0,
          "a block of %d bytes was cached", (int)KHEAP_RUN_CACHE_MAX + 1);

    /* In-place resizes keep the page count the cache files it under.
     * (The bin of KHEAP_RUN_CACHE_MAX's page count took every cap above,
     * and holds nothing since the reclaim: the cache takes its caps back
     * for the bin the shrunk block needs.) */
    unsigned char *r = kheap_alloc(h, 400 * 1024); /* too large to cache */
    CHECK(r != NULL, "400 KiB%s", "");
    unsigned char *r2 = kheap_realloc(h, r, 60 * 1024); /* shrinks in place */
    CHECK(r2 == r, "realloc to 60 KiB moved%s", "");
    kheap_free(h, r2);
    CHECK(kt_stats(h).large_cache_bytes == 60 * 1024, "a block shrunk to 60 KiB: cached %zu",
          kt_stats(h).large_cache_bytes);
    unsigned char *r3 = kheap_alloc(h, 60 * 1024);
    CHECK(r3 == r, "60 KiB came from the cache (%p, cached %p)", (void *)r3, (void *)r);
    unsigned char *r4 = kheap_realloc(h, r3, 400 * 1024);
    CHECK(r4 != NULL, "realloc to 400 KiB%s", "");
    kheap_free(h, r4);
    CHECK(kt_stats(h).large_cache_bytes == 0, "a block grown past the cached sizes was cached"
          " (%zu)", kt_stats(h).large_cache_bytes);
    kt_check_quiet(h, "after the resizes");

    /* Decay: a cache this CPU took nothing from for an epoch goes back. */
    void *d = kheap_alloc(h, 100000);
    kheap_free(h, d);
    CHECK(kt_stats(h).large_cache_bytes == np * PAGE, "cached before decay%s", "");
    kheap_set_decay(h, 1000);
    uint64_t now = (uint64_t)1 << 40; /* far past the port's clock: only these ticks count */
    int ticks = 0;
    while (kt_stats(h).large_cache_bytes && ticks < 8) {
        kheap_tick(h, now);
        now += 1000;
        ticks++;
    }
    CHECK(kt_stats(h).large_cache_bytes == 0 && ticks >= 3,
          "decay: %zu bytes cached after %d epoch ticks (want 0 after 3 or more)",
          kt_stats(h).large_cache_bytes, ticks);
    kheap_set_decay(h, 0);

    /* Threads: a block freed by another thread goes to that thread's
     * cache, and its cache goes back to the pages when it exits. */
    struct lthread lt = {h, kheap_alloc(h, 100000), 0};
    CHECK(lt.free_this != NULL, "block for the thread%s", "");
    pthread_t th;
    CHECK(pthread_create(&th, NULL, lthread_main, &lt) == 0, "pthread_create%s", "");
    pthread_join(th, NULL);
    struct kheap_stats s4 = kt_stats(h);
    CHECK(lt.cached == np * PAGE && s4.large_cache_bytes == 0 && s4.large_bytes == 0,
          "thread: cached %zu before it exited, %zu after (large %zu)", lt.cached,
          s4.large_cache_bytes, s4.large_bytes);
    kheap_reclaim(h);
    struct kheap_stats s5 = kt_stats(h);
    CHECK(s5.used_bytes == 0 && s5.allocation_count == s5.free_count,
          "balance: used %zu, %" PRIu64 " allocations, %" PRIu64 " frees", s5.used_bytes,
          s5.allocation_count, s5.free_count);
    kt_check_quiet(h, "at the end");
    kt_reports_reset();
    kt_heap_close(&t);
}

/* ================================================================== */
/* 7. reclaim_asks_running                                             */

/* Two threads fill their magazines (kmalloc classes, a user cache) and
 * their caches of large blocks, then stay alive, each holding its slot,
 * which kheap_reclaim on another thread cannot empty. Each step waits at
 * the barrier for the main thread. */
struct asker {
    kheap_cache_t *c;
    bool by_tick;  /* answer with kheap_tick (else kheap_cpu_poll) */
    size_t early;  /* what an answer before any request gave back */
    size_t answer; /* what the answer to the request gave back */
    size_t again;  /* what a second answer gave back */
    char err[200];
};
static pthread_barrier_t g_ask_bar;

static size_t ask_answer(struct asker *a)
{
    return a->by_tick ? kheap_tick(g_h, 0) : kheap_cpu_poll(g_h);
}

static void *asker_main(void *arg)
{
    struct asker *a = arg;
    enum { N = 300, NU = 64 };
    static const size_t sizes[] = {24, 100, 500, 1500, 5000};
    void *v[N], *u[NU];
    for (int round = 0; round < 3 && !a->err[0]; round++) {
        for (int i = 0; i < N; i++)
            if (!(v[i] = kheap_alloc(g_h, sizes[i % 5])))
                snprintf(a->err, sizeof a->err, "kheap_alloc(%zu) failed", sizes[i % 5]);
        for (int i = 0; i < NU; i++)
            if (!(u[i] = kheap_cache_alloc(a->c)))
                snprintf(a->err, sizeof a->err, "kheap_cache_alloc failed");
        for (int i = 0; i < N && !a->err[0]; i++)
            kheap_free(g_h, v[i]);
        for (int i = 0; i < NU && !a->err[0]; i++)
            kheap_cache_free(a->c, u[i]);
    }
    void *big = kheap_alloc(g_h, 100000); /* to this thread's cache of large blocks */
    kheap_free(g_h, big);
    a->early = ask_answer(a); /* nothing asked yet */
    pthread_barrier_wait(&g_ask_bar); /* 1: filled */
    pthread_barrier_wait(&g_ask_bar); /* 2: main has reclaimed */
    if (!a->by_tick) {
        a->answer = ask_answer(a);
        a->again = ask_answer(a);
    }
    pthread_barrier_wait(&g_ask_bar); /* 3: the poller answered */
    pthread_barrier_wait(&g_ask_bar); /* 4: main has looked */
    if (a->by_tick) {
        a->answer = ask_answer(a);
        a->again = ask_answer(a);
    }
    pthread_barrier_wait(&g_ask_bar); /* 5: the ticker answered */
    pthread_barrier_wait(&g_ask_bar); /* 6: main has looked; exit */
    return NULL;
}

TEST(reclaim_asks_running)
{
    /* Each CPU may cache up to an eighth of the heap over KHEAP_MAX_CPUS
     * in large blocks: room for the 100000-byte one. */
    struct kt_heap t;
    test_open(&t, (size_t)128 << 20, (size_t)64 << 20);
    kheap_set_decay(g_h, 0); /* only the answers give back here */
    kheap_cache_t *c = kheap_cache_create(g_h, "asked-obj", 192, 0, kt_ctor, kt_dtor);
    SCHECK(c != NULL, "kheap_cache_create failed");
    struct asker a[2] = {{.c = c, .by_tick = false}, {.c = c, .by_tick = true}};
    pthread_t th[2];
    SCHECK(pthread_barrier_init(&g_ask_bar, NULL, 3) == 0, "pthread_barrier_init failed");
    for (int i = 0; i < 2; i++)
        SCHECK(pthread_create(&th[i], NULL, asker_main, &a[i]) == 0, "pthread_create failed");
    pthread_barrier_wait(&g_ask_bar); /* 1 */
    size_t slabs0, slabs1, slabs2, slabs3;
    size_t cached0 = cached_total(g_h, false, &slabs0);
    struct kheap_stats s0 = kt_stats(g_h);
    size_t got = kheap_reclaim(g_h);
    size_t cached1 = cached_total(g_h, false, &slabs1);
    struct kheap_stats s1 = kt_stats(g_h);
    pthread_barrier_wait(&g_ask_bar); /* 2 */
    pthread_barrier_wait(&g_ask_bar); /* 3 */
    size_t cached2 = cached_total(g_h, false, &slabs2);
    struct kheap_stats s2 = kt_stats(g_h);
    pthread_barrier_wait(&g_ask_bar); /* 4 */
    pthread_barrier_wait(&g_ask_bar); /* 5 */
    size_t cached3 = cached_total(g_h, false, &slabs3);
    struct kheap_stats s3 = kt_stats(g_h);
    pthread_barrier_wait(&g_ask_bar); /* 6 */
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&g_ask_bar);
    printf("# reclaim_asks_running: cached objects %zu, after kheap_reclaim %zu, after the "
           "poll %zu, after the tick %zu; magazine bytes %zu, %zu, %zu, %zu; large cached %zu, "
           "%zu, %zu, %zu; slabs %zu, %zu, %zu, %zu; answers gave back %zu and %zu bytes\n",
           cached0, cached1, cached2, cached3, s0.magazine_bytes, s1.magazine_bytes,
           s2.magazine_bytes, s3.magazine_bytes, s0.large_cache_bytes, s1.large_cache_bytes,
           s2.large_cache_bytes, s3.large_cache_bytes, slabs0, slabs1, slabs2, slabs3,
           a[0].answer, a[1].answer);
    for (int i = 0; i < 2; i++)
        SCHECK(!a[i].err[0], "thread %d: %s", i, a[i].err);
    SCHECK(a[0].early == 0 && a[1].early == 0,
           "an answer before any request gave back %zu and %zu bytes", a[0].early, a[1].early);
    SCHECK(s0.used_bytes == 0 && s0.magazine_bytes > 0 && cached0 > 0,
           "filled: used %zu, magazines %zu bytes, %zu objects cached", s0.used_bytes,
           s0.magazine_bytes, cached0);
    SCHECK(s1.magazine_bytes == s0.magazine_bytes && (s0.large_cache_bytes > 0 || !KH_RUNS) &&
               s1.large_cache_bytes == s0.large_cache_bytes,
           "kheap_reclaim took from running threads' magazines: %zu -> %zu bytes, large %zu "
           "-> %zu (got %zu)",
           s0.magazine_bytes, s1.magazine_bytes, s0.large_cache_bytes, s1.large_cache_bytes,
           got);
    /* (What an answer returns counts only slabs that became empty, so
     * the figures to judge are what stays cached.) */
    SCHECK(s2.magazine_bytes > 0 && s2.magazine_bytes < s1.magazine_bytes &&
               (s2.large_cache_bytes < s1.large_cache_bytes || !KH_RUNS),
           "the poll gave back %zu: magazines %zu -> %zu, large %zu -> %zu", a[0].answer,
           s1.magazine_bytes, s2.magazine_bytes, s1.large_cache_bytes, s2.large_cache_bytes);
    SCHECK(s3.magazine_bytes == 0 && s3.large_cache_bytes == 0 && cached3 == 0 && slabs3 == 0,
           "after the tick (%zu back): magazines %zu, large %zu, %zu objects cached, %zu slabs",
           a[1].answer, s3.magazine_bytes, s3.large_cache_bytes, cached3, slabs3);
    SCHECK(a[0].again == 0 && a[1].again == 0,
           "a second answer to one request gave back %zu and %zu", a[0].again, a[1].again);
    check_ctors_balanced("after the answers");
    SCHECK(kheap_cache_destroy(c) == KHEAP_OK, "kheap_cache_destroy failed");
    kheap_reclaim(g_h);
    check_whole(g_h, "at the end");
    check_quiet(g_h, "at the end");
    check_no_reports("reclaim_asks_running");
    kt_heap_close(&t);
}

/* ================================================================== */
/* heaps_end_while_threads_exit                                        */

#define HE_WORKERS 4

static kheap_t *g_he_short; /* the heap of this round, ended under the workers */
static pthread_barrier_t g_he_bar;
static atomic_uint g_he_ready;
static atomic_ulong g_he_nulls;

/* Use both heaps, so the slot has state and magazines in each, tell the
 * main thread, and exit at once: the slot's flush at exit walks every
 * heap while the main thread ends the short one. */
static void *he_main(void *arg)
{
    kheap_t *lasting = arg;
    void *p[2 * KHEAP_NUM_CLASSES];
    /* A block of every class in each heap, freed: a magazine of each
     * class in the slot, which its flush gives back one by one (a flush
     * long enough for kheap_fini to meet it). */
    for (unsigned i = 0; i < 2 * KHEAP_NUM_CLASSES; i++) {
        p[i] = kheap_alloc(i & 1 ? lasting : g_he_short, kh_class_size(i / 2));
        if (!p[i])
            atomic_fetch_add(&g_he_nulls, 1);
    }
    for (unsigned i = 0; i < 2 * KHEAP_NUM_CLASSES; i++)
        kheap_free(i & 1 ? lasting : g_he_short, p[i]);
    /* All done with the short heap before any counts itself ready, so
     * that every worker's exit meets the main thread's kheap_fini, not
     * only the last one's. */
    pthread_barrier_wait(&g_he_bar);
    atomic_fetch_add(&g_he_ready, 1);
    return NULL;
}

TEST(heaps_end_while_threads_exit)
{
    struct kt_heap t;
    test_open(&t, (size_t)32 << 20, (size_t)32 << 20);
    unsigned rounds = g_small ? 8 : 100;
    pthread_barrier_init(&g_he_bar, NULL, HE_WORKERS);
    for (unsigned r = 0; r < rounds; r++) {
        struct kt_heap s;
        kt_heap_open(&s, (size_t)16 << 20);
        g_he_short = s.h;
        atomic_store(&g_he_ready, 0);
        pthread_t tid[HE_WORKERS];
        for (unsigned i = 0; i < HE_WORKERS; i++) {
            int err = pthread_create(&tid[i], NULL, he_main, t.h);
            /* (A worker missing would leave the others on the barrier.) */
            if (err) {
                fprintf(stderr, "test_percpu: pthread_create %u of %d failed: %d\n", i,
                        HE_WORKERS, err);
                abort();
            }
        }
        /* Every worker done with the short heap (its magazines of it
         * still in its slot): end the heap and unmap its memory while
         * they exit, as a program may once it no longer uses it. A flush
         * that reached it after kheap_fini returned would fault. */
        while (atomic_load(&g_he_ready) < HE_WORKERS)
            sched_yield();
        kt_heap_close(&s);
        for (unsigned i = 0; i < HE_WORKERS; i++)
            pthread_join(tid[i], NULL);
    }
    pthread_barrier_destroy(&g_he_bar);
    unsigned long nulls = atomic_load(&g_he_nulls);
    SCHECK(nulls == 0, "%lu allocations failed", nulls);
    kheap_reclaim(t.h);
    check_whole(t.h, "after the workers exited and reclaim");
    check_no_reports("heaps_end_while_threads_exit");
    printf("# heaps_end_while_threads_exit: %u heaps ended while %d threads that used them "
           "exited\n",
           rounds, HE_WORKERS);
    kt_heap_close(&t);
}

int main(void)
{
    g_seed = kt_seed();
    g_small = kt_env_long("KHEAP_TEST_SMALL", 0) != 0;
    long ops = kt_env_long("KHEAP_TEST_OPS", 1000000);
    g_ops = ops > 0 ? (unsigned long)ops : 1000000;
    kt_capture_reports(keep_first_report);
#define TIMED_RUN(name)                                                       \
    do {                                                                      \
        double t0_ = now();                                                   \
        RUN(name);                                                            \
        printf("# %s: %.2f s\n", #name, now() - t0_);                         \
    } while (0)
    TIMED_RUN(stress_cross_thread);
    TIMED_RUN(producer_consumer);
    TIMED_RUN(thread_churn);
    TIMED_RUN(large_block_cache);
    TIMED_RUN(slot_reuse);
    TIMED_RUN(slot_taken_after_borrowing);
    TIMED_RUN(reclaim_reach);
    TIMED_RUN(reclaim_asks_running);
    TIMED_RUN(homes);
    TIMED_RUN(short_partial_list_left_alone);
    TIMED_RUN(short_partial_list_without_pages);
    TIMED_RUN(inboxes);
    TIMED_RUN(inbox_returns);
    TIMED_RUN(heaps_end_while_threads_exit);
    return harness_done();
}
