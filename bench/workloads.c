/*
 * workloads.c - the well-known allocator workloads, written for kheap's
 * benchmark suite. One program calling malloc/free/realloc; each allocator
 * (kheap through libkheap.so, jemalloc, mimalloc, tcmalloc) is put in front
 * of glibc's with LD_PRELOAD, so every allocator runs the same binary.
 *
 *   workloads TEST SCALE THREADS
 *
 * SCALE multiplies the work (1 is the full size; the smoke test in
 * `make check` runs 0.01). Each test prints one line
 *   RESULT test=TEST threads=T seconds=S ops=N check=C malloc_from=LIB
 * where C is a checksum of what the test read back from its blocks (a
 * test fails, exit 1, if a block did not hold what was written into it).
 * bench/suite.py runs the tests, interleaved, under /usr/bin/time -v.
 *
 * The tests (after the programs of the same purpose in the literature:
 * Larson and Krishnan's server benchmark, xmalloc-test, Hoard's
 * cache-scratch and cache-thrash, rpmalloc's rptest, mimalloc-bench's
 * mstress/mleak and malloc-large; the code here is our own):
 *
 *   larson      server-style: each thread replaces random blocks (16..1024
 *               B) in an array of 1000; every round the arrays move to new
 *               threads, which free what the old ones allocated
 *   xmalloc     producer/consumer: half the threads allocate batches of
 *               blocks (16..512 B) and queue them, the other half free them
 *   xmalloc-test  the same roles in the shape mimalloc-bench runs
 *               xmalloc-test (`-w 2 -s 64`): 64-byte blocks only, batches
 *               of 4096 (the batch itself a 32 KiB block), up to 100
 *               batches queued, so one class carries all the traffic and
 *               a third of a million blocks are in flight
 *   scratch     passive false sharing: each thread frees a block the main
 *               thread allocated next to the others', then allocates and
 *               writes small blocks hard
 *   thrash      active false sharing: each thread allocates, writes hard
 *               and frees small blocks
 *   rptest      random sizes (16 B..16 KiB, small ones likelier) with a
 *               bounded live set per thread; an eighth of the frees are of
 *               blocks another thread allocated
 *   mstress     many small objects (lists of 16..128 B nodes) with long
 *               lifetimes: each round keeps some lists, frees others, and
 *               leaks a few nodes for good (mleak)
 *   large       large blocks (256 KiB..32 MiB) allocated, touched,
 *               reallocated and freed, four live at a time (one thread,
 *               whatever THREADS says)
 *   kernel      kernel-style: a cache of 192-byte objects initialised by a
 *               "constructor" on allocation, churned in bursts of 64, and
 *               bursts of 64-byte blocks
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rand.h" /* kt_rand: xorshift64*, no division, no shared state */

static double scale = 1.0;
static unsigned nthreads = 1;

static void die(const char *msg)
{
    fprintf(stderr, "workloads: %s\n", msg);
    exit(2);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p)
        die("out of memory");
    return p;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The work of a test at SCALE, never below 1. */
static unsigned long scaled(unsigned long full)
{
    double v = (double)full * scale;
    return v < 1 ? 1 : (unsigned long)v;
}


/* Mark a block: its first and last bytes hold the low byte of its size. */
static inline void mark(unsigned char *p, size_t n)
{
    p[0] = (unsigned char)n;
    p[n - 1] = (unsigned char)n;
}

static atomic_ulong bad_blocks;
static atomic_ulong checksum;

/* Check a block's marks before freeing it. */
static inline void check(const unsigned char *p, size_t n)
{
    if (p[0] != (unsigned char)n || p[n - 1] != (unsigned char)n)
        atomic_fetch_add(&bad_blocks, 1);
}

struct threads {
    pthread_t id[256];
    unsigned n;
};

static void spawn(struct threads *t, void *(*fn)(void *), void *arg)
{
    if (t->n == 256 || pthread_create(&t->id[t->n], NULL, fn, arg))
        die("pthread_create failed");
    t->n++;
}

static void join(struct threads *t)
{
    for (unsigned i = 0; i < t->n; i++)
        pthread_join(t->id[i], NULL);
    t->n = 0;
}

/* ------------------------------------------------------------------ */
/* larson */

#define LARSON_SLOTS 1000

struct larson_arr {
    unsigned char *p[LARSON_SLOTS];
    size_t n[LARSON_SLOTS];
    uint64_t seed;
    unsigned long ops, steps;
};

static void *larson_thread(void *arg)
{
    struct larson_arr *a = arg;
    for (unsigned long i = 0; i < a->steps; i++) {
        size_t k = (size_t)kt_rand_below(&a->seed, LARSON_SLOTS);
        check(a->p[k], a->n[k]);
        free(a->p[k]);
        a->n[k] = kt_rand_range(&a->seed, 16, 1024);
        a->p[k] = xmalloc(a->n[k]);
        mark(a->p[k], a->n[k]);
    }
    a->ops += a->steps;
    return NULL;
}

static unsigned long run_larson(void)
{
    unsigned rounds = 20;
    struct larson_arr *arr = xmalloc(nthreads * sizeof *arr);
    for (unsigned t = 0; t < nthreads; t++) {
        arr[t].seed = 0x9e3779b97f4a7c15ull * (t + 1);
        arr[t].ops = 0;
        arr[t].steps = scaled(20000000) / rounds;
        for (size_t k = 0; k < LARSON_SLOTS; k++) {
            arr[t].n[k] = kt_rand_range(&arr[t].seed, 16, 1024);
            arr[t].p[k] = xmalloc(arr[t].n[k]);
            mark(arr[t].p[k], arr[t].n[k]);
        }
    }
    struct threads th = {.n = 0};
    for (unsigned r = 0; r < rounds; r++) {
        /* Round r: thread t works on array (t + r) % T, whose blocks the
         * previous round's threads allocated. */
        for (unsigned t = 0; t < nthreads; t++)
            spawn(&th, larson_thread, &arr[(t + r) % nthreads]);
        join(&th);
    }
    unsigned long ops = 0;
    for (unsigned t = 0; t < nthreads; t++) {
        for (size_t k = 0; k < LARSON_SLOTS; k++) {
            check(arr[t].p[k], arr[t].n[k]);
            atomic_fetch_add(&checksum, arr[t].p[k][0]);
            free(arr[t].p[k]);
        }
        ops += arr[t].ops;
    }
    free(arr);
    return ops;
}

/* ------------------------------------------------------------------ */
/* xmalloc: producers allocate, consumers free */

#define XM_BATCH 64

struct xm_batch {
    struct xm_batch *next;
    unsigned char *p[XM_BATCH];
    size_t n[XM_BATCH];
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t more;
    struct xm_batch *head;
    unsigned producers_left;
    unsigned long queued, limit;
} xq = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, 0, 0, 0};

struct xm_arg {
    unsigned long batches;
    uint64_t seed;
};

static void *xm_producer(void *arg)
{
    struct xm_arg *a = arg;
    uint64_t seed = a->seed;
    for (unsigned long b = 0; b < a->batches; b++) {
        struct xm_batch *x = xmalloc(sizeof *x);
        for (int i = 0; i < XM_BATCH; i++) {
            x->n[i] = kt_rand_range(&seed, 16, 512);
            x->p[i] = xmalloc(x->n[i]);
            mark(x->p[i], x->n[i]);
        }
        pthread_mutex_lock(&xq.lock);
        /* Bounded queue: wait while the consumers are far behind. */
        while (xq.queued >= xq.limit)
            pthread_cond_wait(&xq.more, &xq.lock);
        x->next = xq.head;
        xq.head = x;
        xq.queued++;
        pthread_cond_broadcast(&xq.more);
        pthread_mutex_unlock(&xq.lock);
    }
    pthread_mutex_lock(&xq.lock);
    xq.producers_left--;
    pthread_cond_broadcast(&xq.more);
    pthread_mutex_unlock(&xq.lock);
    return NULL;
}

static void *xm_consumer(void *arg)
{
    unsigned long *freed = arg;
    for (;;) {
        pthread_mutex_lock(&xq.lock);
        while (!xq.head && xq.producers_left)
            pthread_cond_wait(&xq.more, &xq.lock);
        struct xm_batch *x = xq.head;
        if (x) {
            xq.head = x->next;
            xq.queued--;
            pthread_cond_broadcast(&xq.more);
        }
        pthread_mutex_unlock(&xq.lock);
        if (!x)
            return NULL;
        for (int i = 0; i < XM_BATCH; i++) {
            check(x->p[i], x->n[i]);
            free(x->p[i]);
        }
        free(x);
        *freed += XM_BATCH;
    }
}

/* The producer/consumer tests' producers: half the threads, at least one. */
static unsigned producers(void)
{
    return nthreads > 1 ? nthreads / 2 : 1;
}

/* Run prod producers, producer with the args[i * arg_size] each, and the
 * other threads (at least one) as consumers, each adding up the blocks it
 * frees; wait for them all. Returns the blocks freed, which must be all
 * that were made (the test fails otherwise). */
static unsigned long run_producers_consumers(unsigned prod, void *(*producer)(void *),
                                             void *args, size_t arg_size,
                                             void *(*consumer)(void *), unsigned long made)
{
    unsigned cons = nthreads > 1 ? nthreads - prod : 1;
    unsigned long freed[256] = {0};
    struct threads th = {.n = 0};
    for (unsigned i = 0; i < prod; i++)
        spawn(&th, producer, (char *)args + i * arg_size);
    for (unsigned i = 0; i < cons; i++)
        spawn(&th, consumer, &freed[i]);
    join(&th);
    unsigned long ops = 0;
    for (unsigned i = 0; i < cons; i++)
        ops += freed[i];
    if (ops != made)
        atomic_fetch_add(&bad_blocks, 1);
    atomic_fetch_add(&checksum, ops);
    return ops;
}

static unsigned long run_xmalloc(void)
{
    unsigned prod = producers();
    unsigned long batches = scaled(4000000) / XM_BATCH / prod;
    struct xm_arg args[256];
    for (unsigned i = 0; i < prod; i++)
        args[i] = (struct xm_arg){batches, 0x9e3779b97f4a7c15ull * (i + 1)};
    xq.producers_left = prod;
    xq.limit = 64;
    return run_producers_consumers(prod, xm_producer, args, sizeof args[0], xm_consumer,
                                   batches * prod * XM_BATCH);
}

/* ------------------------------------------------------------------ */
/* xmalloc-test: the producer/consumer shape of the public test */

/* Half the threads fill batches of XT_BATCH blocks of XT_SIZE bytes, each
 * written whole, and push them on a stack of at most XT_QUEUED batches;
 * the other half pop batches and free every block and the batch. Unlike
 * xmalloc above, every block is of one class and a batch is 64 of its
 * magazines, so the blocks in flight (up to XT_QUEUED * XT_BATCH) dwarf
 * any per-thread or per-class cache: the allocator's path from a free on
 * one thread to an allocation on another is what is timed. Consumers read
 * only the first and last block of a batch, as the public test reads
 * none. */
#define XT_BATCH 4096
#define XT_QUEUED 100
#define XT_SIZE 64

struct xt_batch {
    struct xt_batch *next;
    unsigned char *p[XT_BATCH];
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t not_full, not_empty;
    struct xt_batch *top;
    unsigned queued, producers_left;
} xt = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, 0,
        0};

static void *xt_producer(void *arg)
{
    unsigned long batches = *(unsigned long *)arg;
    for (unsigned long b = 0; b < batches; b++) {
        struct xt_batch *x = xmalloc(sizeof *x);
        for (unsigned i = 0; i < XT_BATCH; i++) {
            x->p[i] = xmalloc(XT_SIZE);
            memset(x->p[i], (int)(i & 0xff), XT_SIZE);
        }
        pthread_mutex_lock(&xt.lock);
        while (xt.queued == XT_QUEUED)
            pthread_cond_wait(&xt.not_full, &xt.lock);
        x->next = xt.top;
        xt.top = x;
        xt.queued++;
        pthread_cond_signal(&xt.not_empty);
        pthread_mutex_unlock(&xt.lock);
    }
    pthread_mutex_lock(&xt.lock);
    xt.producers_left--;
    pthread_cond_broadcast(&xt.not_empty); /* consumers may stop now */
    pthread_mutex_unlock(&xt.lock);
    return NULL;
}

static void *xt_consumer(void *arg)
{
    unsigned long *freed = arg;
    for (;;) {
        pthread_mutex_lock(&xt.lock);
        while (!xt.top && xt.producers_left)
            pthread_cond_wait(&xt.not_empty, &xt.lock);
        struct xt_batch *x = xt.top;
        if (x) {
            xt.top = x->next;
            xt.queued--;
            pthread_cond_signal(&xt.not_full);
        }
        pthread_mutex_unlock(&xt.lock);
        if (!x)
            return NULL;
        if (x->p[0][0] != 0 || x->p[XT_BATCH - 1][XT_SIZE - 1] != ((XT_BATCH - 1) & 0xff))
            atomic_fetch_add(&bad_blocks, 1);
        for (unsigned i = 0; i < XT_BATCH; i++)
            free(x->p[i]);
        free(x);
        *freed += XT_BATCH;
    }
}

static unsigned long run_xmalloc_test(void)
{
    unsigned prod = producers();
    unsigned long batches = scaled(32000000) / XT_BATCH / prod;
    if (!batches)
        batches = 1;
    xt.producers_left = prod;
    /* Every producer reads the same count. */
    return run_producers_consumers(prod, xt_producer, &batches, 0, xt_consumer,
                                   batches * prod * XT_BATCH);
}

/* ------------------------------------------------------------------ */
/* scratch and thrash: false sharing */

#define FS_SIZE 8
#define FS_WRITES 200

struct fs_arg {
    unsigned char *given; /* scratch: a block the main thread allocated */
    unsigned long rounds;
    unsigned long sum;
};

static void *fs_thread(void *arg)
{
    struct fs_arg *a = arg;
    if (a->given)
        free(a->given);
    for (unsigned long r = 0; r < a->rounds; r++) {
        volatile unsigned char *p = xmalloc(FS_SIZE);
        for (int w = 0; w < FS_WRITES; w++)
            p[w % FS_SIZE] = (unsigned char)(p[(w + 1) % FS_SIZE] + w);
        a->sum += p[0];
        free((void *)p);
    }
    return NULL;
}

static unsigned long run_false_sharing(int scratch)
{
    struct fs_arg args[256];
    struct threads th = {.n = 0};
    unsigned long rounds = scaled(2000000);
    for (unsigned t = 0; t < nthreads; t++) {
        args[t].given = scratch ? xmalloc(FS_SIZE) : NULL;
        args[t].rounds = rounds;
        args[t].sum = 0;
    }
    for (unsigned t = 0; t < nthreads; t++)
        spawn(&th, fs_thread, &args[t]);
    join(&th);
    for (unsigned t = 0; t < nthreads; t++)
        atomic_fetch_add(&checksum, args[t].sum);
    return rounds * nthreads;
}

/* ------------------------------------------------------------------ */
/* rptest: random sizes, bounded live set, some cross-thread frees */

#define RP_SLOTS 4096
#define RP_HANDOFF 256

struct rp_box { /* blocks on their way to another thread */
    _Atomic(unsigned char *) p[RP_HANDOFF];
};

struct rp_arg {
    unsigned id;
    unsigned long steps;
    struct rp_box *boxes; /* one per thread: blocks for it to free */
};

/* Small sizes likelier: a power-of-two band picked uniformly, then a size
 * in it (16..31, 32..63, ... 8192..16384). */
static size_t rp_size(uint64_t *s)
{
    unsigned band = (unsigned)kt_rand_below(s, 10);
    size_t lo = (size_t)16 << band;
    return kt_rand_range(s, lo, 2 * lo - 1);
}

static void *rp_thread(void *arg)
{
    struct rp_arg *a = arg;
    uint64_t seed = 0x2545f4914f6cdd1dull * (a->id + 1);
    unsigned char **p = xmalloc(RP_SLOTS * sizeof *p);
    size_t *n = xmalloc(RP_SLOTS * sizeof *n);
    for (size_t k = 0; k < RP_SLOTS; k++) {
        n[k] = rp_size(&seed);
        p[k] = xmalloc(n[k]);
        mark(p[k], n[k]);
    }
    struct rp_box *mine = &a->boxes[a->id], *next = &a->boxes[(a->id + 1) % nthreads];
    for (unsigned long i = 0; i < a->steps; i++) {
        size_t k = (size_t)kt_rand_below(&seed, RP_SLOTS);
        check(p[k], n[k]);
        uint64_t r = kt_rand(&seed);
        if (nthreads > 1 && (r & 7) == 0) {
            /* Hand the block to the next thread, which frees it; free
             * whatever was waiting in the slot. */
            size_t slot = (size_t)((r >> 8) % RP_HANDOFF);
            unsigned char *old = atomic_exchange(&next->p[slot], p[k]);
            if (old)
                free(old);
        } else {
            free(p[k]);
        }
        /* Free one block other threads handed to us. */
        size_t in = (size_t)((r >> 16) % RP_HANDOFF);
        unsigned char *q = atomic_exchange(&mine->p[in], NULL);
        if (q)
            free(q);
        n[k] = rp_size(&seed);
        p[k] = xmalloc(n[k]);
        mark(p[k], n[k]);
    }
    unsigned long sum = 0;
    for (size_t k = 0; k < RP_SLOTS; k++) {
        check(p[k], n[k]);
        sum += p[k][0];
        free(p[k]);
    }
    atomic_fetch_add(&checksum, sum);
    free(p);
    free(n);
    return NULL;
}

static unsigned long run_rptest(void)
{
    struct rp_box *boxes = calloc(nthreads, sizeof *boxes);
    struct rp_arg args[256];
    struct threads th = {.n = 0};
    if (!boxes)
        die("out of memory");
    unsigned long steps = scaled(3000000) / nthreads;
    for (unsigned t = 0; t < nthreads; t++) {
        args[t] = (struct rp_arg){.id = t, .steps = steps, .boxes = boxes};
        spawn(&th, rp_thread, &args[t]);
    }
    join(&th);
    for (unsigned t = 0; t < nthreads; t++)
        for (size_t s = 0; s < RP_HANDOFF; s++)
            free(atomic_load(&boxes[t].p[s]));
    free(boxes);
    return steps * nthreads;
}

/* ------------------------------------------------------------------ */
/* mstress / mleak: long-lived lists of small nodes, a slow leak */

struct node {
    struct node *next;
    uint32_t size;
    uint32_t value;
};

#define MS_LISTS 512

static void *ms_thread(void *arg)
{
    unsigned long *ops = arg;
    uint64_t seed = (uintptr_t)arg | 1;
    struct node *list[MS_LISTS] = {0};
    struct node *leaked = NULL;
    unsigned rounds = (unsigned)scaled(400);
    unsigned long n_ops = 0;
    for (unsigned r = 0; r < rounds; r++) {
        for (unsigned l = 0; l < MS_LISTS; l++) {
            uint64_t x = kt_rand(&seed);
            if (list[l] && (x & 3) != 0)
                continue; /* three lists in four live on */
            while (list[l]) {
                struct node *nx = list[l]->next;
                if (list[l]->value != (uint32_t)(uintptr_t)list[l])
                    atomic_fetch_add(&bad_blocks, 1);
                if (((x >>= 1) & 127) == 0) { /* leak one node in 128 */
                    list[l]->next = leaked;
                    leaked = list[l];
                } else {
                    free(list[l]);
                }
                n_ops++;
                list[l] = nx;
            }
            unsigned len = (unsigned)kt_rand_range(&seed, 20, 200);
            for (unsigned i = 0; i < len; i++) {
                size_t sz = kt_rand_range(&seed, 16, 128);
                struct node *nd = xmalloc(sz);
                nd->size = (uint32_t)sz;
                nd->value = (uint32_t)(uintptr_t)nd;
                nd->next = list[l];
                list[l] = nd;
                n_ops++;
            }
        }
    }
    unsigned long sum = 0;
    for (unsigned l = 0; l < MS_LISTS; l++)
        while (list[l]) {
            struct node *nx = list[l]->next;
            sum += list[l]->size;
            free(list[l]);
            list[l] = nx;
        }
    /* The leak ends with the program, as a leak does; its memory counts
     * in the peak RSS. */
    for (struct node *nd = leaked; nd; nd = nd->next)
        sum += nd->size;
    atomic_fetch_add(&checksum, sum);
    *ops = n_ops;
    return NULL;
}

/* THREADS threads of fn, each counting its operations in its argument;
 * returns their sum. */
static unsigned long run_counted(void *(*fn)(void *))
{
    unsigned long ops[256];
    struct threads th = {.n = 0};
    for (unsigned t = 0; t < nthreads; t++)
        spawn(&th, fn, &ops[t]);
    join(&th);
    unsigned long sum = 0;
    for (unsigned t = 0; t < nthreads; t++)
        sum += ops[t];
    return sum;
}

static unsigned long run_mstress(void)
{
    return run_counted(ms_thread);
}

/* ------------------------------------------------------------------ */
/* large: big blocks, touched, reallocated, freed */

static void touch(unsigned char *p, size_t n, unsigned char v)
{
    for (size_t i = 0; i < n; i += 4096)
        p[i] = v;
    p[n - 1] = v;
}

static unsigned long run_large(void)
{
    uint64_t seed = 42;
    unsigned char *live[4] = {0};
    size_t size[4] = {0};
    unsigned long rounds = scaled(600), sum = 0;
    for (unsigned long r = 0; r < rounds; r++) {
        unsigned k = (unsigned)(r & 3);
        if (live[k]) {
            if (live[k][0] != (unsigned char)size[k] || live[k][size[k] - 1] != (unsigned char)size[k])
                atomic_fetch_add(&bad_blocks, 1);
            if (kt_rand(&seed) & 1) {
                size_t n = kt_rand_range(&seed, 256 << 10, 32 << 20);
                unsigned char *q = realloc(live[k], n);
                if (!q)
                    die("out of memory");
                live[k] = q;
                size[k] = n;
                touch(q, n, (unsigned char)n);
                sum += q[0];
                continue;
            }
            free(live[k]);
        }
        size[k] = kt_rand_range(&seed, 256 << 10, 32 << 20);
        live[k] = xmalloc(size[k]);
        touch(live[k], size[k], (unsigned char)size[k]);
        sum += live[k][0];
    }
    for (unsigned k = 0; k < 4; k++)
        free(live[k]);
    atomic_fetch_add(&checksum, sum);
    return rounds;
}

/* ------------------------------------------------------------------ */
/* kernel: a constructed-object cache, bursts of 64-byte blocks */

struct kobj { /* 192 bytes, as a small kernel structure */
    uint64_t magic;
    struct kobj *next, *prev;
    uint32_t refcount, flags;
    unsigned char payload[160];
};
_Static_assert(sizeof(struct kobj) == 192, "kobj size");

#define KOBJ_MAGIC 0x6b6f626aull

static struct kobj *kobj_new(void)
{
    struct kobj *o = xmalloc(sizeof *o);
    /* The constructor a kernel cache would run once per slot: here every
     * allocation pays it, as it does with any malloc. */
    o->magic = KOBJ_MAGIC;
    o->next = o->prev = o;
    o->refcount = 1;
    o->flags = 0;
    memset(o->payload, 0, sizeof o->payload);
    return o;
}

static void *kernel_thread(void *arg)
{
    unsigned long *ops = arg;
    uint64_t seed = (uintptr_t)arg | 1;
    unsigned long rounds = scaled(200000), n = 0, sum = 0;
    struct kobj *objs[64];
    void *small[64];
    for (unsigned long r = 0; r < rounds; r++) {
        unsigned burst = 1 + (unsigned)kt_rand_below(&seed, 64);
        for (unsigned i = 0; i < burst; i++)
            objs[i] = kobj_new();
        for (unsigned i = 0; i < burst; i++) {
            small[i] = xmalloc(64);
            memset(small[i], (int)i, 64);
        }
        for (unsigned i = 0; i < burst; i++) {
            if (objs[i]->magic != KOBJ_MAGIC || ((unsigned char *)small[i])[63] != (unsigned char)i)
                atomic_fetch_add(&bad_blocks, 1);
            sum += objs[i]->refcount;
            free(small[i]);
            free(objs[i]);
        }
        n += 4 * burst;
    }
    atomic_fetch_add(&checksum, sum);
    *ops = n;
    return NULL;
}

static unsigned long run_kernel(void)
{
    return run_counted(kernel_thread);
}

/* ------------------------------------------------------------------ */

static const char *malloc_origin(void)
{
    Dl_info info;
    void *(*fn)(size_t) = malloc;
    if (dladdr(*(void **)&fn, &info) && info.dli_fname)
        return info.dli_fname;
    return "?";
}

static const struct {
    const char *name;
    unsigned long (*run)(void);
} tests[] = {
    {"larson", run_larson},   {"xmalloc", run_xmalloc}, {"xmalloc-test", run_xmalloc_test},
    {"rptest", run_rptest},   {"mstress", run_mstress}, {"large", run_large},
    {"kernel", run_kernel},
};

static unsigned long run_scratch(void)
{
    return run_false_sharing(1);
}
static unsigned long run_thrash(void)
{
    return run_false_sharing(0);
}

int main(int argc, char **argv)
{
    if (argc != 4)
        goto usage;
    scale = strtod(argv[2], NULL);
    nthreads = (unsigned)strtoul(argv[3], NULL, 10);
    if (!(scale > 0) || nthreads < 1 || nthreads > 256)
        goto usage;
    unsigned long (*run)(void) = NULL;
    if (!strcmp(argv[1], "scratch"))
        run = run_scratch;
    else if (!strcmp(argv[1], "thrash"))
        run = run_thrash;
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++)
        if (!strcmp(argv[1], tests[i].name))
            run = tests[i].run;
    if (!run)
        goto usage;
    double t0 = now();
    unsigned long ops = run();
    double t1 = now();
    printf("RESULT test=%s threads=%u seconds=%.6f ops=%lu check=%lu bad=%lu malloc_from=%s\n",
           argv[1], nthreads, t1 - t0, ops, atomic_load(&checksum), atomic_load(&bad_blocks),
           malloc_origin());
    return atomic_load(&bad_blocks) ? 1 : 0;
usage:
    fprintf(stderr, "usage: %s larson|xmalloc|xmalloc-test|scratch|thrash|rptest|mstress|large|kernel "
                    "SCALE THREADS\n",
            argv[0]);
    return 2;
}
