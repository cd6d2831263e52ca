/*
 * test_threads.c - one heap shared by four threads.
 *
 * Each thread runs a random mix of kheap_alloc, kheap_alloc_aligned,
 * kheap_realloc, kheap_free, cache alloc/free on two shared caches,
 * statistics reads and the odd kheap_check, and hands blocks to the other
 * threads through a small locked queue; the receiver checks the contents
 * and frees or keeps them. Thread 0 also creates and destroys a private
 * cache while the others work. In the end every block is accounted for:
 * the counters match the threads' own tallies exactly, used_bytes is 0,
 * constructors and destructors balance and kheap_check is clean.
 *
 * Ops per thread: KHEAP_TEST_OPS / 5 (default 200000); KHEAP_SEED replays
 * the choices (thread interleaving is not replayed).
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

#include "harness.h"
#include "kheap.h"
#include "kheap_hosted.h"

#define PAGE KHEAP_PAGE_SIZE
#define THREADS 4
#define LIVE_CAP 1000
#define QUEUE_LEN 256
#define KMALLOC 0xff
#define MAGIC KT_CTOR_MAGIC /* what kt_ctor writes */
#define EDGE 32

static kheap_t *g_heap;
static unsigned char *g_mem;
static size_t g_heap_size;
static uint64_t g_seed;
static unsigned long g_ops;

static atomic_ulong g_priv_ctor, g_priv_dtor;

static void priv_ctor(void *o)
{
    (void)o;
    atomic_fetch_add(&g_priv_ctor, 1);
}

static void priv_dtor(void *o)
{
    (void)o;
    atomic_fetch_add(&g_priv_dtor, 1);
}

/* The shared caches: [0] with a constructor, [1] without. */
static kheap_cache_t *g_cache[2];
static size_t g_base_caches; /* caches listed before the test made any */
static const size_t g_cache_size[2] = {96, 1024};

struct item {
    unsigned char *p;
    size_t size;
    uint32_t seed;
    uint8_t cache; /* 0, 1 or KMALLOC */
};

/* A small locked queue of blocks handed from one thread to another. */
static struct {
    pthread_mutex_t lock;
    struct item q[QUEUE_LEN];
    size_t head, n;
} g_queue = {.lock = PTHREAD_MUTEX_INITIALIZER};

static bool queue_push(const struct item *it)
{
    bool ok = false;
    pthread_mutex_lock(&g_queue.lock);
    if (g_queue.n < QUEUE_LEN) {
        g_queue.q[(g_queue.head + g_queue.n++) % QUEUE_LEN] = *it;
        ok = true;
    }
    pthread_mutex_unlock(&g_queue.lock);
    return ok;
}

static bool queue_pop(struct item *it)
{
    bool ok = false;
    pthread_mutex_lock(&g_queue.lock);
    if (g_queue.n) {
        *it = g_queue.q[g_queue.head];
        g_queue.head = (g_queue.head + 1) % QUEUE_LEN;
        g_queue.n--;
        ok = true;
    }
    pthread_mutex_unlock(&g_queue.lock);
    return ok;
}

struct worker {
    unsigned id;
    uint64_t rng;
    struct item live[LIVE_CAP];
    size_t nlive;
    /* What this thread did, to compare with the heap's counters. */
    uint64_t allocs, frees, nulls, handed, received;
    char err[512]; /* first failure, or empty */
};

static uint64_t rnd(struct worker *w)
{
    return kt_rand(&w->rng);
}

/* Record the first failure and stop the thread's loop. */
#define WCHECK(w, cond, ...)                                                  \
    do {                                                                      \
        if (!(cond)) {                                                        \
            if (!(w)->err[0]) {                                               \
                int n_ = snprintf((w)->err, sizeof (w)->err,                  \
                                  "thread %u line %d: ", (w)->id, __LINE__);  \
                snprintf((w)->err + n_, sizeof (w)->err - (size_t)n_,         \
                         __VA_ARGS__);                                        \
            }                                                                 \
            return false;                                                     \
        }                                                                     \
    } while (0)

static size_t pattern_from(const struct item *it)
{
    return it->cache == 0 ? 8 : 0; /* the ctor's magic comes first */
}

static void fill(const struct item *it)
{
    kt_pattern_fill(it->p, it->size, pattern_from(it), EDGE, it->seed);
}

/* First byte below limit that lost its pattern, or SIZE_MAX. */
static size_t verify(const struct item *it, size_t limit)
{
    return kt_pattern_find_bad(it->p, it->size, pattern_from(it), EDGE, it->seed, limit);
}

static bool check_item(struct worker *w, const struct item *it,
                       const char *when)
{
    size_t bad = verify(it, SIZE_MAX);
    WCHECK(w, bad == SIZE_MAX,
           "%s: block %p (size %zu, cache %d) byte %zu is 0x%02x, want 0x%02x",
           when, (void *)it->p, it->size, it->cache, bad, it->p[bad],
           kt_pattern(it->seed, bad));
    if (it->cache == 0) {
        uint64_t m;
        memcpy(&m, it->p, sizeof m);
        WCHECK(w, m == MAGIC, "%s: object %p lost its ctor magic", when,
               (void *)it->p);
    }
    return true;
}

static size_t pick_size(struct worker *w)
{
    unsigned r = (unsigned)(rnd(w) % 100);
    if (r < 70)
        return 1 + (size_t)(rnd(w) % 256);
    if (r < 95)
        return 1 + (size_t)(rnd(w) % 8192);
    if (r < 98)
        return 1 + (size_t)(rnd(w) % KHEAP_MAX_CLASS);
    return KHEAP_MAX_CLASS + (size_t)(rnd(w) % (256 * 1024));
}

static bool free_item(struct worker *w, const struct item *it)
{
    if (!check_item(w, it, "before free"))
        return false;
    if (it->cache != KMALLOC && rnd(w) % 2)
        kheap_cache_free(g_cache[it->cache], it->p);
    else
        kheap_free(g_heap, it->p);
    w->frees++;
    return true;
}

static bool add_live(struct worker *w, unsigned char *p, size_t size,
                     uint8_t cache)
{
    struct item *it = &w->live[w->nlive++];
    it->p = p;
    it->size = size;
    it->seed = (uint32_t)rnd(w);
    it->cache = cache;
    WCHECK(w, (uintptr_t)p >= (uintptr_t)g_mem &&
                  (uintptr_t)p + size <= (uintptr_t)g_mem + g_heap_size,
           "block %p+%zu outside the heap", (void *)p, size);
    size_t u = kheap_usable_size(g_heap, p);
    WCHECK(w, u >= size, "usable_size(%p) = %zu < size %zu", (void *)p, u,
           size);
    fill(it);
    return true;
}

static bool op_alloc(struct worker *w)
{
    if (w->nlive >= LIVE_CAP)
        return true;
    size_t size = pick_size(w);
    size_t align = rnd(w) % 8 == 0 ? (size_t)8 << (rnd(w) % 10) : 0;
    unsigned char *p = align ? kheap_alloc_aligned(g_heap, size, align)
                             : kheap_alloc(g_heap, size);
    if (!p) {
        w->nulls++;
        return true;
    }
    WCHECK(w, !align || (uintptr_t)p % align == 0,
           "kheap_alloc_aligned(%zu, %zu) = %p", size, align, (void *)p);
    w->allocs++;
    return add_live(w, p, size, KMALLOC);
}

static bool op_cache_alloc(struct worker *w)
{
    if (w->nlive >= LIVE_CAP)
        return true;
    uint8_t c = (uint8_t)(rnd(w) % 2);
    unsigned char *p = kheap_cache_alloc(g_cache[c]);
    if (!p) {
        w->nulls++;
        return true;
    }
    if (c == 0) {
        uint64_t m;
        memcpy(&m, p, sizeof m);
        WCHECK(w, m == MAGIC, "cache object %p handed out without its magic",
               (void *)p);
    }
    w->allocs++;
    return add_live(w, p, g_cache_size[c], c);
}

static bool op_free(struct worker *w)
{
    if (!w->nlive)
        return true;
    size_t i = (size_t)(rnd(w) % w->nlive);
    struct item it = w->live[i];
    w->live[i] = w->live[--w->nlive];
    return free_item(w, &it);
}

static bool op_realloc(struct worker *w)
{
    if (!w->nlive)
        return true;
    size_t i = (size_t)(rnd(w) % w->nlive);
    struct item *it = &w->live[i];
    if (it->cache != KMALLOC)
        return true;
    if (!check_item(w, it, "before realloc"))
        return false;
    size_t size = rnd(w) % 2 ? pick_size(w) : it->size + rnd(w) % 64;
    unsigned char *q = kheap_realloc(g_heap, it->p, size);
    if (!q) {
        w->nulls++;
        return check_item(w, it, "after failed realloc");
    }
    if (q != it->p) {
        w->allocs++;
        w->frees++;
    }
    struct item moved = *it;
    moved.p = q;
    size_t keep = size < it->size ? size : it->size;
    size_t bad = verify(&moved, keep);
    WCHECK(w, bad == SIZE_MAX,
           "realloc %zu -> %zu lost byte %zu (0x%02x, want 0x%02x)", it->size,
           size, bad, q[bad], kt_pattern(it->seed, bad));
    w->live[i] = w->live[--w->nlive];
    return add_live(w, q, size, KMALLOC);
}

static bool op_hand_over(struct worker *w)
{
    if (!w->nlive)
        return true;
    size_t i = (size_t)(rnd(w) % w->nlive);
    if (!queue_push(&w->live[i]))
        return true;
    w->live[i] = w->live[--w->nlive];
    w->handed++;
    return true;
}

static bool op_receive(struct worker *w)
{
    struct item it;
    if (!queue_pop(&it))
        return true;
    w->received++;
    if (!check_item(w, &it, "received"))
        return false;
    if (w->nlive < LIVE_CAP && rnd(w) % 2) {
        w->live[w->nlive++] = it; /* adopt it */
        return true;
    }
    return free_item(w, &it);
}

static bool op_stats(struct worker *w)
{
    struct kheap_stats s;
    kheap_get_stats(g_heap, &s);
    WCHECK(w, s.allocated_bytes - s.freed_bytes == s.used_bytes,
           "allocated %" PRIu64 " - freed %" PRIu64 " != used %zu",
           s.allocated_bytes, s.freed_bytes, s.used_bytes);
    WCHECK(w, s.peak_bytes >= s.used_bytes, "peak %zu < used %zu",
           s.peak_bytes, s.used_bytes);
    WCHECK(w, s.heap_used + s.heap_free == s.heap_total,
           "heap_used %zu + heap_free %zu != heap_total %zu", s.heap_used,
           s.heap_free, s.heap_total);
    return true;
}

static bool op_check(struct worker *w)
{
    const void *addr = NULL;
    const char *msg = kheap_check(g_heap, &addr);
    WCHECK(w, msg == NULL, "kheap_check: %s at %p", msg, addr);
    return true;
}

static bool op_slabinfo(struct worker *w)
{
    struct kheap_cache_info rows[KHEAP_NUM_CLASSES + 8];
    size_t n = kheap_slabinfo(g_heap, rows, KHEAP_NUM_CLASSES + 8);
    /* The shared caches, and thread 0's private one now and then. */
    WCHECK(w, n >= g_base_caches + 2 && n <= g_base_caches + 3,
           "kheap_slabinfo lists %zu caches, %zu before the test's", n,
           g_base_caches);
    return true;
}

/* A private cache born and destroyed while the others run. */
static bool op_private_cache(struct worker *w)
{
    size_t size = 8 + (size_t)(rnd(w) % 2000);
    kheap_cache_t *c = kheap_cache_create(g_heap, "thr-private", size, 64,
                                          priv_ctor, priv_dtor);
    WCHECK(w, c != NULL, "kheap_cache_create(%zu) failed", size);
    void *o[16];
    for (int i = 0; i < 16; i++) {
        o[i] = kheap_cache_alloc(c);
        WCHECK(w, o[i] != NULL && (uintptr_t)o[i] % 64 == 0,
               "private cache object %p", o[i]);
        memset(o[i], 0x5c, size);
    }
    for (int i = 0; i < 16; i++)
        kheap_cache_free(c, o[i]);
    w->allocs += 16;
    w->frees += 16;
    int err = kheap_cache_destroy(c);
    WCHECK(w, err == KHEAP_OK, "kheap_cache_destroy = %d", err);
    return true;
}

static pthread_barrier_t g_start;

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    pthread_barrier_wait(&g_start);
    bool ok = true;
    for (unsigned long op = 0; ok && op < g_ops; op++) {
        unsigned r = (unsigned)(rnd(w) % 1000);
        if (r < 300)
            ok = op_alloc(w);
        else if (r < 400)
            ok = op_cache_alloc(w);
        else if (r < 680)
            ok = op_free(w);
        else if (r < 780)
            ok = op_realloc(w);
        else if (r < 860)
            ok = op_hand_over(w);
        else if (r < 950)
            ok = op_receive(w);
        else if (r < 990)
            ok = op_stats(w);
        else if (r < 999)
            ok = w->id == 1 ? op_slabinfo(w) : true;
        else if (rnd(w) % 10 == 0)
            ok = op_check(w);
        if (ok && w->id == 0 && op % 5000 == 4999)
            ok = op_private_cache(w);
    }
    /* Free what this thread still holds. */
    while (ok && w->nlive)
        ok = op_free(w);
    return NULL;
}

TEST(shared_heap)
{
    /* Room for the live sets and what four threads' magazines cache. */
    g_heap_size = (size_t)64 << 20;
    g_ops = (unsigned long)kt_env_long("KHEAP_TEST_OPS", 1000000) / 5;
    struct kt_heap region;
    kt_heap_open(&region, g_heap_size);
    g_heap = region.h;
    g_mem = region.mem;
    g_base_caches = kheap_slabinfo(g_heap, NULL, 0);
    g_cache[0] = kheap_cache_create(g_heap, "thr-obj", g_cache_size[0], 0,
                                    kt_ctor, kt_dtor);
    g_cache[1] = kheap_cache_create(g_heap, "thr-big", g_cache_size[1], 256,
                                    NULL, NULL);
    CHECK(g_cache[0] && g_cache[1], "kheap_cache_create failed%s", "");

    static struct worker w[THREADS];
    pthread_t tid[THREADS];
    pthread_barrier_init(&g_start, NULL, THREADS);
    for (unsigned i = 0; i < THREADS; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].id = i;
        w[i].rng = kt_rand_seed(g_seed, i);
        CHECK(pthread_create(&tid[i], NULL, worker_main, &w[i]) == 0,
              "pthread_create %u failed", i);
    }
    for (unsigned i = 0; i < THREADS; i++)
        pthread_join(tid[i], NULL);
    pthread_barrier_destroy(&g_start);
    for (unsigned i = 0; i < THREADS; i++)
        CHECK(!w[i].err[0], "[seed %" PRIu64 "] %s", g_seed, w[i].err);

    /* Blocks still in the queue are freed here. */
    struct item it;
    uint64_t drained = 0;
    while (queue_pop(&it)) {
        CHECK(verify(&it, SIZE_MAX) == SIZE_MAX,
              "queued block %p lost its pattern", (void *)it.p);
        kheap_free(g_heap, it.p);
        drained++;
    }

    uint64_t allocs = 0, frees = drained, nulls = 0, handed = 0, received = 0;
    for (unsigned i = 0; i < THREADS; i++) {
        allocs += w[i].allocs;
        frees += w[i].frees;
        nulls += w[i].nulls;
        handed += w[i].handed;
        received += w[i].received;
    }
    CHECK(handed == received + drained,
          "%" PRIu64 " blocks handed over, %" PRIu64 " received, %" PRIu64
          " left in the queue",
          handed, received, drained);
    struct kheap_stats s;
    kheap_get_stats(g_heap, &s);
    CHECK(s.allocation_count == allocs && s.free_count == frees &&
              allocs == frees,
          "allocation_count %" PRIu64 " free_count %" PRIu64
          ", threads counted %" PRIu64 " and %" PRIu64,
          s.allocation_count, s.free_count, allocs, frees);
    CHECK(s.failed_count == nulls, "failed_count %" PRIu64 ", threads saw %"
          PRIu64 " NULLs", s.failed_count, nulls);
    CHECK(nulls == 0, "%" PRIu64 " allocations failed in a %zu-byte heap",
          nulls, g_heap_size);
    CHECK(s.used_bytes == 0 && s.allocated_bytes == s.freed_bytes,
          "all freed: used %zu, allocated %" PRIu64 " freed %" PRIu64,
          s.used_bytes, s.allocated_bytes, s.freed_bytes);
    const void *addr = NULL;
    const char *msg = kheap_check_quiescent(g_heap, &addr);
    CHECK(msg == NULL, "kheap_check: %s at %p", msg, addr);

    CHECK(kheap_cache_destroy(g_cache[0]) == KHEAP_OK &&
              kheap_cache_destroy(g_cache[1]) == KHEAP_OK,
          "destroying the shared caches failed%s", "");
    struct kt_ctor_counts n = kt_ctor_counts();
    CHECK(n.ctor == n.dtor && n.dtor_bad == 0,
          "shared cache: %lu ctors, %lu dtors, %lu without magic", n.ctor, n.dtor,
          n.dtor_bad);
    CHECK(atomic_load(&g_priv_ctor) == atomic_load(&g_priv_dtor),
          "private caches: %lu ctors, %lu dtors", atomic_load(&g_priv_ctor),
          atomic_load(&g_priv_dtor));
    CHECK(kt_reports() == 0, "%lu reports, the first %s at %p", kt_reports(),
          kt_report_kind_name((int)kt_last_report().kind), kt_last_report().addr);
    kheap_reclaim(g_heap);
    kheap_get_stats(g_heap, &s);
    CHECK(s.heap_free == s.heap_total - s.metadata_bytes && s.slab_bytes == 0,
          "emptied heap: free %zu, total %zu, metadata %zu, slab %zu",
          s.heap_free, s.heap_total, s.metadata_bytes, s.slab_bytes);
    printf("# %d threads x %lu ops: %" PRIu64 " allocations, %" PRIu64
           " blocks handed over\n",
           THREADS, g_ops, allocs, handed);
    kt_heap_close(&region);
}

/* A refill makes a new slab with its cache's lock let go while it clears
 * the slab's bitmap and tags its pages (slab.c, slab_new: slabs with a
 * bitmap, on a heap with pages to spare), so kheap_check, which takes
 * every lock, may meet a slab that is on no list of its cache yet
 * (KH_LIST_NEW), its bitmap and page tags half written: the refill then
 * waits on the cache's lock until the walk is done. The walk must pass
 * over it and still count its pages. One thread makes slabs without end,
 * of a user cache and of a kmalloc class (whose pages carry tags), both
 * of 64-byte objects, 32 slabs of each a round (every round's objects go
 * back and kheap_reclaim gives the empty slabs back), while this one
 * checks. */
static atomic_bool g_maker_stop, g_maker_failed;
static atomic_ulong g_maker_rounds;

static void *slab_maker(void *arg)
{
    kheap_cache_t *c = arg;
    enum { N = 2048 };
    static void *objs[N], *blocks[N];
    while (!atomic_load(&g_maker_stop)) {
        for (unsigned i = 0; i < N; i++) {
            objs[i] = kheap_cache_alloc(c);
            blocks[i] = kheap_alloc(g_heap, 64);
            if (!objs[i] || !blocks[i]) {
                atomic_store(&g_maker_failed, true); /* (ends the checks) */
                return NULL;
            }
        }
        for (unsigned i = 0; i < N; i++) {
            kheap_cache_free(c, objs[i]);
            kheap_free(g_heap, blocks[i]);
        }
        kheap_reclaim(g_heap);
        atomic_fetch_add(&g_maker_rounds, 1);
        sched_yield(); /* (lets the checker in under valgrind) */
    }
    return NULL;
}

TEST(check_passes_slabs_being_made)
{
    struct kt_heap region;
    kt_heap_open(&region, (size_t)16 << 20);
    g_heap = region.h;
    kheap_cache_t *c = kheap_cache_create(g_heap, "thr-new", 64, 0, NULL, NULL);
    CHECK(c != NULL, "kheap_cache_create failed%s", "");
    /* The rounds and checks wanted follow KHEAP_TEST_OPS (100 rounds and
     * 4000 checks in a release build, 8 and 160 under valgrind). Neither
     * side's lock is fair, so the checker yields when no round ended since
     * its last walk (the maker is starved) and not otherwise (then the
     * checker would be). */
    unsigned long ops = (unsigned long)kt_env_long("KHEAP_TEST_OPS", 1000000);
    unsigned long want = ops / 10000, want_checks = ops / 250;
    want = want < 8 ? 8 : want > 100 ? 100 : want;
    want_checks = want_checks < 16 ? 16 : want_checks > 4000 ? 4000 : want_checks;
    atomic_store(&g_maker_stop, false);
    atomic_store(&g_maker_failed, false);
    atomic_store(&g_maker_rounds, 0);
    pthread_t tid;
    CHECK(pthread_create(&tid, NULL, slab_maker, c) == 0, "pthread_create failed%s", "");
    unsigned long checks = 0, bad = 0, seen = 0;
    const char *first = NULL;
    const void *first_at = NULL;
    while ((checks < want_checks || atomic_load(&g_maker_rounds) < want) &&
           !atomic_load(&g_maker_failed)) {
        const void *addr = NULL;
        const char *msg = kheap_check(g_heap, &addr);
        if (msg && !bad++) {
            first = msg;
            first_at = addr;
        }
        checks++;
        unsigned long now = atomic_load(&g_maker_rounds);
        if (now == seen)
            sched_yield();
        seen = now;
    }
    atomic_store(&g_maker_stop, true);
    pthread_join(tid, NULL);
    printf("# %lu checks while %lu rounds of 2 x 32 slabs were made and given back\n", checks,
           atomic_load(&g_maker_rounds));
    CHECK(!atomic_load(&g_maker_failed), "an allocation of the slab maker failed%s", "");
    CHECK(bad == 0, "%lu of %lu checks failed, the first: %s at %p", bad, checks, first,
          first_at);
    CHECK(atomic_load(&g_maker_rounds) >= want, "only %lu of %lu rounds made",
          atomic_load(&g_maker_rounds), want);
    const void *addr = NULL;
    const char *msg = kheap_check_quiescent(g_heap, &addr);
    CHECK(msg == NULL, "kheap_check: %s at %p", msg, addr);
    CHECK(kheap_cache_destroy(c) == KHEAP_OK, "destroy failed%s", "");
    kt_heap_close(&region);
}

/* The same window met every time, on one thread: the port's idle hook
 * runs whenever a thread lets its last kheap lock go, so also inside a
 * refill that let its cache's lock go while it makes a slab, and a
 * kheap_check there meets the slab on no list. Every refill of 64-byte
 * objects (a user cache's and a kmalloc class's) makes one here. */
static kheap_t *g_hook_heap;
static unsigned long g_hook_checks, g_hook_bad;
static const char *g_hook_first;
static const void *g_hook_at;

static void check_hook(void)
{
    if (!g_hook_heap)
        return;
    const void *addr = NULL;
    const char *msg = kheap_check(g_hook_heap, &addr);
    g_hook_checks++;
    if (msg && !g_hook_bad++) {
        g_hook_first = msg;
        g_hook_at = addr;
    }
}

TEST(check_in_a_refills_window)
{
    struct kt_heap region;
    kt_heap_open(&region, (size_t)16 << 20);
    kheap_t *h = region.h;
    kheap_cache_t *c = kheap_cache_create(h, "thr-hook", 64, 0, NULL, NULL);
    CHECK(c != NULL, "kheap_cache_create failed%s", "");
    enum { N = 512 }; /* 8 slabs of each */
    static void *objs[N], *blocks[N];
    g_hook_checks = g_hook_bad = 0;
    kheap_idle_hook_fn old = kheap_hosted_set_idle_hook(check_hook);
    g_hook_heap = h;
    size_t got = 0;
    for (; got < N; got++) {
        objs[got] = kheap_cache_alloc(c);
        blocks[got] = kheap_alloc(h, 64);
        if (!objs[got] || !blocks[got])
            break;
    }
    g_hook_heap = NULL;
    kheap_hosted_set_idle_hook(old);
    printf("# %lu checks from the idle hook while %zu objects and %zu blocks were taken\n",
           g_hook_checks, got, got);
    CHECK(got == N, "allocation %zu failed", got);
    CHECK(g_hook_checks > 0, "the idle hook never ran%s", "");
    CHECK(g_hook_bad == 0, "%lu of %lu checks failed, the first: %s at %p", g_hook_bad,
          g_hook_checks, g_hook_first, g_hook_at);
    for (size_t i = 0; i < N; i++) {
        kheap_cache_free(c, objs[i]);
        kheap_free(h, blocks[i]);
    }
    kheap_reclaim(h);
    const void *addr = NULL;
    const char *msg = kheap_check_quiescent(h, &addr);
    CHECK(msg == NULL, "kheap_check: %s at %p", msg, addr);
    CHECK(kheap_cache_destroy(c) == KHEAP_OK, "destroy failed%s", "");
    kt_heap_close(&region);
}

int main(void)
{
    g_seed = kt_seed();
    kt_capture_reports(NULL);
    RUN(shared_heap);
    RUN(check_passes_slabs_being_made);
    RUN(check_in_a_refills_window);
    return harness_done();
}
