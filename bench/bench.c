/*
 * bench.c - kheap's benchmark harness: one source, compiled twice.
 *
 *   -DBENCH_KHEAP   calls kheap's default heap (kmalloc / kfree), linked
 *                   with libkheap.a built with a 256 MiB default heap;
 *   -DBENCH_KHEAP -DBENCH_KHEAP_INIT
 *                   calls kheap_alloc / kheap_free on a heap made with
 *                   kheap_init over 256 MiB of mapped memory (the path a
 *                   kernel's own heaps take);
 *   (otherwise)     calls malloc / free: glibc's, or the peer that
 *                   LD_PRELOAD puts in front (jemalloc, mimalloc, tcmalloc).
 *
 * Modes (bench/run.py drives them and collects the RESULT lines):
 *
 *   hot pair   N [SIZE]  N malloc(SIZE)+free pairs (SIZE 32 unless given),
 *                   after a warm-up, with 64 other blocks of SIZE live
 *   hot pair-alone N  the same with no other block live
 *   hot malloc N    N malloc(32) in batches of 64, frees not counted
 *   hot free   N    N free of 32-byte blocks, in batches of 64
 *   hot loop   N    the pair loop with no allocator call (harness cost)
 *   bulk WHAT  N    (kheap only) N objects of 64 bytes allocated and freed
 *                   in batches of 64 by the bulk calls (WHAT kmalloc-bulk,
 *                   cache-bulk) or by loops of single calls
 *                   (kmalloc-single, cache-single); per object, the
 *                   allocation and the free are collected
 *   tput T STEPS    T threads, each: a ring of 64 live blocks of 16..512
 *                   bytes; each step frees a random one and allocates a
 *                   new random size in its place
 *   tput-none T STEPS  the same loop without the allocator calls (each
 *                   step reads and writes the old block): how this
 *                   machine scales from 1 to T threads on its own
 *   pc SIZES M      producer/consumer: thread A allocates M blocks (SIZES
 *                   is "64" or "mixed" = 16..256 B) and hands them through
 *                   a lock-free single-producer/single-consumer ring to
 *                   thread B, which frees them
 *   live N [SIZE]   N blocks of SIZE (32) allocated and written, then all
 *                   freed: resident bytes added per block, and what stays
 *                   resident after the frees
 *
 * The hot modes are meant for valgrind --tool=callgrind --instr-atstart=no
 * --collect-atstart=no: instrumentation starts after the warm-up and only
 * the measured operations are collected (CALLGRIND_TOGGLE_COLLECT around
 * them), so the counts are per measured operation plus a few harness
 * instructions, which `hot loop` measures. Outside valgrind the client
 * requests cost a few instructions and do nothing.
 *
 * No allocation may be optimised away: every pointer is written through
 * and stored to a volatile sink, so it escapes and the compiler must keep
 * each malloc/free.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>

#include "rand.h"

#include <valgrind/callgrind.h>

#ifdef BENCH_KHEAP_INIT
#include "kheap.h"
#define ALLOCATOR_KIND "kheap_init"
static kheap_t *bench_heap;
#define bench_malloc(n) kheap_alloc(bench_heap, n)
#define bench_free(p) kheap_free(bench_heap, p)
#elif defined(BENCH_KHEAP)
#include "kheap.h"
#define ALLOCATOR_KIND "kheap"
#define bench_malloc(n) kmalloc(n)
#define bench_free(p) kfree(p)
#else
#define ALLOCATOR_KIND "malloc"
#define bench_malloc(n) malloc(n)
#define bench_free(p) free(p)
#endif

#define HOT_SIZE 32       /* the hot test's size, unless one is given */
#define HOT_BATCH 64
#define HOT_KEEP 64       /* blocks of the hot size live during the hot test */
#define HOT_WARMUP 1024   /* pairs, a multiple of HOT_BATCH */
#define RING_LIVE 64      /* live blocks per thread in tput */
#define SPSC_SLOTS 1024   /* handoff ring of the producer/consumer test */

/* Every pointer ends up here: the compiler must assume it is read. */
static void *volatile sink;
static volatile uint64_t sink_sum;

static void die(const char *msg)
{
    fprintf(stderr, "bench: %s\n", msg);
    exit(2);
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double thread_cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A size line of /proc/self/status ("VmHWM:"), in KiB, or -1. */
static long status_kib(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    size_t len = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, key, len))
            kib = strtol(line + len, NULL, 10);
    if (f)
        fclose(f);
    return kib;
}

/* Peak resident set size of this process in KiB: VmHWM, which starts
 * afresh at exec (ru_maxrss does not: Linux carries it over from the
 * image before exec, here the runner's Python). */
static long peak_rss_kib(void)
{
    long kib = status_kib("VmHWM:");
    if (kib < 0) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        kib = ru.ru_maxrss;
    }
    return kib;
}

/* The shared object that defines the malloc this program calls, so the
 * runner can check that LD_PRELOAD took effect. */
static const char *malloc_origin(void)
{
#ifdef BENCH_KHEAP
    return "libkheap.a";
#else
    Dl_info info;
    void *(*fn)(size_t) = malloc;
    if (dladdr(*(void **)&fn, &info) && info.dli_fname)
        return info.dli_fname;
    return "?";
#endif
}

/* Random numbers: kt_rand (tests/rand.h, xorshift64*), a few
 * instructions and no division; each thread has its own state. lo..hi
 * inclusive from the high 32 bits of r. */
static inline size_t rng_range(uint64_t r, size_t lo, size_t hi)
{
    return lo + (size_t)kt_rand_scale(r, (uint64_t)(hi - lo + 1));
}

static void *must_alloc(size_t n)
{
    void *p = bench_malloc(n);
    if (!p)
        die("allocation failed");
    return p;
}

/* ------------------------------------------------------------------ */
/* Hot path: single thread, one size. */

static size_t hot_size = HOT_SIZE;

static void hot_pairs(unsigned long n)
{
    for (unsigned long i = 0; i < n; i++) {
        unsigned char *p = bench_malloc(hot_size);
        *(volatile unsigned char *)p = (unsigned char)i;
        sink = p;
        bench_free(p);
    }
}

/* The same loop with the allocator calls replaced by a static block: the
 * harness's own instructions per pair. */
static void hot_loop_only(unsigned long n)
{
    static unsigned char block[HOT_SIZE]; /* only its first byte is written */
    for (unsigned long i = 0; i < n; i++) {
        unsigned char *p = block;
        __asm__ volatile("" : "+r"(p));
        *(volatile unsigned char *)p = (unsigned char)i;
        sink = p;
        __asm__ volatile("" ::"r"(p) : "memory");
    }
}

/* What hot_batches collects. */
enum collect { COLLECT_NONE, COLLECT_MALLOC, COLLECT_FREE };

/* Batches of HOT_BATCH mallocs then HOT_BATCH frees (in allocation
 * order); collection is toggled on around the mallocs or the frees only. */
static void hot_batches(unsigned long n, enum collect what)
{
    void *batch[HOT_BATCH];
    for (unsigned long done = 0; done < n; done += HOT_BATCH) {
        if (what == COLLECT_MALLOC)
            CALLGRIND_TOGGLE_COLLECT;
        for (int j = 0; j < HOT_BATCH; j++) {
            unsigned char *p = bench_malloc(hot_size);
            *(volatile unsigned char *)p = (unsigned char)j;
            batch[j] = p;
        }
        if (what == COLLECT_MALLOC)
            CALLGRIND_TOGGLE_COLLECT;
        sink = batch[HOT_BATCH - 1];
        if (what == COLLECT_FREE)
            CALLGRIND_TOGGLE_COLLECT;
        for (int j = 0; j < HOT_BATCH; j++)
            bench_free(batch[j]);
        if (what == COLLECT_FREE)
            CALLGRIND_TOGGLE_COLLECT;
    }
}

static int run_hot(const char *what, unsigned long n)
{
    if (n % HOT_BATCH)
        die("hot: N must be a multiple of 64");
    if (strcmp(what, "pair") && strcmp(what, "pair-alone") && strcmp(what, "loop") &&
        strcmp(what, "malloc") && strcmp(what, "free"))
        die("hot: pair, pair-alone, malloc, free or loop");
    /* Other blocks of the size stay live through the measurement, as in
     * a program: then no free empties a page or a slab (which would send
     * some allocators, mimalloc among them, down a page-retire path on
     * every pair). "pair-alone" keeps none, to show that case. */
    void *keep[HOT_KEEP];
    int alone = !strcmp(what, "pair-alone");
    for (int i = 0; i < HOT_KEEP; i++)
        keep[i] = alone ? NULL : must_alloc(hot_size);
    /* Warm-up outside the measurement: the allocator sets itself up and
     * its caches for this size and this thread are loaded. */
    hot_pairs(HOT_WARMUP);
    hot_batches(HOT_WARMUP, COLLECT_NONE);
    hot_pairs(HOT_WARMUP);

    double t0 = now_seconds();
    CALLGRIND_START_INSTRUMENTATION;
    if (!strcmp(what, "pair") || alone) {
        CALLGRIND_TOGGLE_COLLECT;
        hot_pairs(n);
        CALLGRIND_TOGGLE_COLLECT;
    } else if (!strcmp(what, "loop")) {
        CALLGRIND_TOGGLE_COLLECT;
        hot_loop_only(n);
        CALLGRIND_TOGGLE_COLLECT;
    } else if (!strcmp(what, "malloc")) {
        hot_batches(n, COLLECT_MALLOC);
    } else {
        hot_batches(n, COLLECT_FREE);
    }
    CALLGRIND_STOP_INSTRUMENTATION;
    double t = now_seconds() - t0;
    for (int i = 0; i < HOT_KEEP; i++)
        bench_free(keep[i]);
    printf("RESULT mode=hot what=%s n=%lu size=%zu seconds=%.6f ns_per_op=%.3f "
           "maxrss_kib=%ld allocator=%s malloc_from=%s\n",
           what, n, hot_size, t, t * 1e9 / (double)n, peak_rss_kib(), ALLOCATOR_KIND,
           malloc_origin());
    return 0;
}

/* ------------------------------------------------------------------ */
/* Bulk calls against loops of single calls (kheap only). */

#if defined(BENCH_KHEAP)
#ifndef BENCH_KHEAP_INIT
#define bench_heap_handle() kheap_default()
#else
#define bench_heap_handle() bench_heap
#endif
#define BULK_SIZE 64
/* bulk WHAT N: N objects of BULK_SIZE bytes allocated and freed in batches
 * of HOT_BATCH, with HOT_KEEP others live; collected: the allocations and
 * the frees. WHAT: kmalloc-bulk (kheap_alloc_bulk / kheap_free_bulk),
 * kmalloc-single (the same with kheap_alloc / kheap_free in a loop),
 * cache-bulk (kheap_cache_alloc_bulk / kheap_cache_free_bulk) and
 * cache-single (kheap_cache_alloc / kheap_cache_free), the cache one of
 * BULK_SIZE-byte objects. */
static int run_bulk(const char *what, unsigned long n)
{
    kheap_t *h = bench_heap_handle();
    int cache = !strncmp(what, "cache-", 6);
    int bulk = strstr(what, "-bulk") != NULL;
    if (n % HOT_BATCH || (strcmp(what, "kmalloc-bulk") && strcmp(what, "kmalloc-single") &&
                          strcmp(what, "cache-bulk") && strcmp(what, "cache-single")))
        die("bulk: kmalloc-bulk|kmalloc-single|cache-bulk|cache-single, N a multiple of 64");
    kheap_cache_t *c = kheap_cache_create(h, "bench", BULK_SIZE, 0, NULL, NULL);
    if (!c)
        die("kheap_cache_create failed");
    void *keep[HOT_KEEP], *batch[HOT_BATCH];
    for (int i = 0; i < HOT_KEEP; i++)
        keep[i] = cache ? kheap_cache_alloc(c) : kheap_alloc(h, BULK_SIZE);
    double t0 = 0;
    for (int measured = 0; measured < 2; measured++) {
        unsigned long rounds = measured ? n : HOT_WARMUP;
        if (measured) {
            t0 = now_seconds();
            CALLGRIND_START_INSTRUMENTATION;
            CALLGRIND_TOGGLE_COLLECT;
        }
        for (unsigned long done = 0; done < rounds; done += HOT_BATCH) {
            if (bulk) {
                size_t got = cache ? kheap_cache_alloc_bulk(c, HOT_BATCH, batch)
                                   : kheap_alloc_bulk(h, BULK_SIZE, HOT_BATCH, batch);
                if (got != HOT_BATCH)
                    die("bulk allocation failed");
            } else {
                for (int j = 0; j < HOT_BATCH; j++)
                    if (!(batch[j] = cache ? kheap_cache_alloc(c) : kheap_alloc(h, BULK_SIZE)))
                        die("allocation failed");
            }
            for (int j = 0; j < HOT_BATCH; j++)
                *(volatile unsigned char *)batch[j] = (unsigned char)j;
            sink = batch[HOT_BATCH - 1];
            if (bulk) {
                if (cache)
                    kheap_cache_free_bulk(c, HOT_BATCH, batch);
                else
                    kheap_free_bulk(h, HOT_BATCH, batch);
            } else {
                for (int j = 0; j < HOT_BATCH; j++) {
                    if (cache)
                        kheap_cache_free(c, batch[j]);
                    else
                        kheap_free(h, batch[j]);
                }
            }
        }
    }
    CALLGRIND_TOGGLE_COLLECT;
    CALLGRIND_STOP_INSTRUMENTATION;
    double t = now_seconds() - t0;
    for (int i = 0; i < HOT_KEEP; i++) {
        if (cache)
            kheap_cache_free(c, keep[i]);
        else
            kheap_free(h, keep[i]);
    }
    printf("RESULT mode=bulk what=%s n=%lu seconds=%.6f ns_per_op=%.3f "
           "maxrss_kib=%ld allocator=%s malloc_from=%s\n",
           what, n, t, t * 1e9 / (double)n, peak_rss_kib(), ALLOCATOR_KIND, malloc_origin());
    return 0;
}
#endif

/* ------------------------------------------------------------------ */
/* Throughput: T threads, each with its own ring of live blocks. */

struct tput_arg {
    pthread_barrier_t *start;
    unsigned long steps;
    uint64_t seed;
    double end;       /* when this thread finished */
    double cpu;       /* CPU seconds this thread spent in its steps */
    uint64_t checksum;
    int none;         /* tput-none: the loop without allocator calls */
};

static void *tput_thread(void *varg)
{
    struct tput_arg *a = varg;
    uint64_t s = a->seed;
    unsigned char *live[RING_LIVE];
    for (int i = 0; i < RING_LIVE; i++) {
        size_t n = rng_range(kt_rand(&s), 16, 512);
        live[i] = must_alloc(n);
        live[i][0] = (unsigned char)n;
    }
    pthread_barrier_wait(a->start);
    double cpu0 = thread_cpu_seconds();
    uint64_t sum = 0;
    for (unsigned long i = 0; i < a->steps; i++) {
        uint64_t r = kt_rand(&s);
        unsigned k = (unsigned)r & (RING_LIVE - 1);
        size_t n = rng_range(r, 16, 512);
        unsigned char *old = live[k], *p = old;
        sum += old[0];
        if (!a->none) {
            bench_free(old);
            p = bench_malloc(n);
            if (__builtin_expect(!p, 0))
                die("allocation failed");
        }
        p[0] = (unsigned char)n;
        live[k] = p;
    }
    a->end = now_seconds();
    a->cpu = thread_cpu_seconds() - cpu0;
    for (int i = 0; i < RING_LIVE; i++) {
        sum += live[i][0];
        bench_free(live[i]);
    }
    a->checksum = sum;
    return NULL;
}

#define TPUT_MAX_THREADS 1024

static int run_tput(unsigned threads, unsigned long steps, int none)
{
    if (threads < 1 || threads > TPUT_MAX_THREADS)
        die("tput: 1..1024 threads");
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, threads + 1);
    static pthread_t tid[TPUT_MAX_THREADS];
    static struct tput_arg arg[TPUT_MAX_THREADS];
    for (unsigned t = 0; t < threads; t++) {
        arg[t] = (struct tput_arg){&start, steps, 0x9e3779b97f4a7c15ull * (t + 1) | 1, 0, 0, 0,
                                   none};
        if (pthread_create(&tid[t], NULL, tput_thread, &arg[t]))
            die("pthread_create");
    }
    pthread_barrier_wait(&start);
    double t0 = now_seconds(), t1 = t0;
    uint64_t sum = 0;
    double cpu_rate = 0; /* sum over threads of steps per CPU second */
    for (unsigned t = 0; t < threads; t++) {
        pthread_join(tid[t], NULL);
        if (arg[t].end > t1)
            t1 = arg[t].end;
        cpu_rate += (double)steps / arg[t].cpu;
        sum += arg[t].checksum;
    }
    sink_sum = sum;
    pthread_barrier_destroy(&start);
    double secs = t1 - t0, ops = (double)steps * threads;
    printf("RESULT mode=tput threads=%u steps=%lu ops=%.0f seconds=%.6f ops_per_s=%.0f "
           "ops_per_cpu_s=%.0f maxrss_kib=%ld allocator=%s malloc_from=%s\n",
           threads, steps, ops, secs, ops / secs, cpu_rate, peak_rss_kib(),
           none ? "none" : ALLOCATOR_KIND, malloc_origin());
    return 0;
}

/* ------------------------------------------------------------------ */
/* Producer/consumer through a single-producer/single-consumer ring.
 *
 * head counts pushes (written by the producer only), tail counts pops
 * (written by the consumer only); each side keeps a private copy of the
 * other's counter and rereads it (acquire) only when the ring looks full
 * or empty. A slot is written before head is published (release) and read
 * after head is seen (acquire), and reused only after tail says the
 * consumer is past it. */

struct spsc {
    _Alignas(64) atomic_size_t head;
    _Alignas(64) size_t tail_seen; /* producer's copy of tail */
    _Alignas(64) atomic_size_t tail;
    _Alignas(64) size_t head_seen; /* consumer's copy of head */
    _Alignas(64) void *slot[SPSC_SLOTS];
};

static void spin_pause(unsigned *spins)
{
    if (++*spins < 128) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    } else {
        /* Two shared cores: let the other side run. */
        *spins = 0;
        sched_yield();
    }
}

static void spsc_push(struct spsc *q, void *p)
{
    size_t h = atomic_load_explicit(&q->head, memory_order_relaxed);
    unsigned spins = 0;
    while (h - q->tail_seen == SPSC_SLOTS) {
        q->tail_seen = atomic_load_explicit(&q->tail, memory_order_acquire);
        if (h - q->tail_seen == SPSC_SLOTS)
            spin_pause(&spins);
    }
    q->slot[h & (SPSC_SLOTS - 1)] = p;
    atomic_store_explicit(&q->head, h + 1, memory_order_release);
}

static void *spsc_pop(struct spsc *q)
{
    size_t t = atomic_load_explicit(&q->tail, memory_order_relaxed);
    unsigned spins = 0;
    while (t == q->head_seen) {
        q->head_seen = atomic_load_explicit(&q->head, memory_order_acquire);
        if (t == q->head_seen)
            spin_pause(&spins);
    }
    void *p = q->slot[t & (SPSC_SLOTS - 1)];
    atomic_store_explicit(&q->tail, t + 1, memory_order_release);
    return p;
}

struct pc_arg {
    struct spsc *q;
    unsigned long m;
    int mixed;
    pthread_barrier_t *start;
    uint64_t checksum;
};

static void *producer(void *varg)
{
    struct pc_arg *a = varg;
    uint64_t s = 0x243f6a8885a308d3ull;
    pthread_barrier_wait(a->start);
    for (unsigned long i = 0; i < a->m; i++) {
        size_t n = a->mixed ? rng_range(kt_rand(&s), 16, 256) : 64;
        uint64_t *p = bench_malloc(n);
        if (__builtin_expect(!p, 0))
            die("allocation failed");
        p[0] = i;
        spsc_push(a->q, p);
    }
    return NULL;
}

static void *consumer(void *varg)
{
    struct pc_arg *a = varg;
    uint64_t sum = 0;
    pthread_barrier_wait(a->start);
    for (unsigned long i = 0; i < a->m; i++) {
        uint64_t *p = spsc_pop(a->q);
        sum += p[0];
        bench_free(p);
    }
    a->checksum = sum;
    return NULL;
}

static int run_pc(const char *sizes, unsigned long m)
{
    int mixed;
    if (!strcmp(sizes, "64"))
        mixed = 0;
    else if (!strcmp(sizes, "mixed"))
        mixed = 1;
    else
        die("pc: sizes are 64 or mixed");
    static struct spsc q; /* zero: empty */
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 3);
    struct pc_arg a = {&q, m, mixed, &start, 0};
    pthread_t tp, tc;
    if (pthread_create(&tc, NULL, consumer, &a) || pthread_create(&tp, NULL, producer, &a))
        die("pthread_create");
    pthread_barrier_wait(&start);
    double t0 = now_seconds();
    pthread_join(tp, NULL);
    pthread_join(tc, NULL);
    double secs = now_seconds() - t0;
    pthread_barrier_destroy(&start);
    /* Every block carried its index: the consumer saw each exactly once. */
    if (a.checksum != (uint64_t)m * (m - 1) / 2)
        die("pc: checksum mismatch");
    printf("RESULT mode=pc sizes=%s m=%lu seconds=%.6f ops_per_s=%.0f maxrss_kib=%ld "
           "allocator=%s malloc_from=%s\n",
           sizes, m, secs, (double)m / secs, peak_rss_kib(), ALLOCATOR_KIND,
           malloc_origin());
    return 0;
}

/* ------------------------------------------------------------------ */

static unsigned long arg_ul(const char *s)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (*end || end == s)
        die("bad number");
    return v;
}

/* live N: N blocks of hot_size allocated and written, then freed. The
 * resident memory they add, per block (data, rounding and metadata), and
 * what stays resident after they are all freed. The array of pointers
 * is mapped and written before the first measure, so it is not counted. */
static int run_live(unsigned long n)
{
    if (!n)
        die("live: N must be at least 1");
    void **blocks = mmap(NULL, n * sizeof *blocks, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (blocks == MAP_FAILED)
        die("live: no memory for the array");
    memset(blocks, 0, n * sizeof *blocks);
    bench_free(must_alloc(hot_size)); /* the allocator sets itself up */
    long before = status_kib("VmRSS:");
    for (unsigned long i = 0; i < n; i++)
        memset(blocks[i] = must_alloc(hot_size), (int)(i & 0xff), hot_size);
    long live = status_kib("VmRSS:");
    for (unsigned long i = 0; i < n; i++)
        bench_free(blocks[i]);
    long after = status_kib("VmRSS:");
    printf("RESULT mode=live n=%lu size=%zu bytes_per_block=%.1f live_kib=%ld "
           "held_after_free_kib=%ld maxrss_kib=%ld allocator=%s malloc_from=%s\n",
           n, hot_size, (double)(live - before) * 1024.0 / (double)n, live - before,
           after - before, peak_rss_kib(), ALLOCATOR_KIND, malloc_origin());
    munmap(blocks, n * sizeof *blocks);
    return 0;
}

int main(int argc, char **argv)
{
#ifdef BENCH_KHEAP_INIT
    size_t bytes = (size_t)256 << 20;
    void *region = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int err = region == MAP_FAILED ? KHEAP_EINVAL : kheap_init(&bench_heap, region, bytes);
    if (err)
        die(kheap_strerror(err));
#endif
    if ((argc == 4 || argc == 5) && !strcmp(argv[1], "hot")) {
        if (argc == 5 && !(hot_size = arg_ul(argv[4])))
            die("hot: SIZE must be at least 1");
        return run_hot(argv[2], arg_ul(argv[3]));
    }
#if defined(BENCH_KHEAP)
    if (argc == 4 && !strcmp(argv[1], "bulk"))
        return run_bulk(argv[2], arg_ul(argv[3]));
#endif
    if (argc == 4 && !strcmp(argv[1], "tput"))
        return run_tput((unsigned)arg_ul(argv[2]), arg_ul(argv[3]), 0);
    if (argc == 4 && !strcmp(argv[1], "tput-none"))
        return run_tput((unsigned)arg_ul(argv[2]), arg_ul(argv[3]), 1);
    if (argc == 4 && !strcmp(argv[1], "pc"))
        return run_pc(argv[2], arg_ul(argv[3]));
    if ((argc == 3 || argc == 4) && !strcmp(argv[1], "live")) {
        if (argc == 4 && !(hot_size = arg_ul(argv[3])))
            die("live: SIZE must be at least 1");
        return run_live(arg_ul(argv[2]));
    }
    fprintf(stderr,
            "usage: %s hot pair|pair-alone|malloc|free|loop N [SIZE]\n"
            "       %s tput|tput-none THREADS STEPS\n"
            "       %s pc 64|mixed M\n"
            "       %s live N [SIZE]\n",
            argv[0], argv[0], argv[0], argv[0]);
    return 2;
}
