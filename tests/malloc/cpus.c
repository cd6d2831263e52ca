/*
 * cpus.c - the per-CPU layer of a malloc replacement (libkheap.so, or
 * libkheap-percpu.so) in the mode it chose at its first allocation.
 *
 *   cpus MODE    MODE: "auto" (per-CPU caches expected where glibc
 *                registered rseq on x86-64 Linux, else per-thread slots),
 *                "slots" (per-thread slots expected) or "any"
 *
 * run.sh runs it plainly (rseq where glibc registers it) and with
 * GLIBC_TUNABLES=glibc.pthread.rseq=0 (slots), so both modes pass the same
 * tests:
 *  - the mode is the one expected, and KHEAP_VERBOSE would say so;
 *  - threads moved from CPU to CPU (sched_setaffinity) while they
 *    allocate, write, check and free blocks of every kind of size get back
 *    only their own blocks intact, and the heap's counters count every
 *    malloc and free exactly;
 *  - threads on every CPU allocate and free large blocks, which the
 *    CPUs' caches of them take, while another thread calls malloc_trim
 *    every 0.2 ms: every block comes back intact, and every
 *    malloc and free is counted once;
 *  - 256 threads alive at once keep about as much in magazines as 2 do:
 *    per CPU, not per thread, with rseq;
 *  - malloc_trim empties the magazines of a CPU whose thread sleeps, with
 *    rseq (its caches are reached from another CPU);
 *  - blocks made on CPU 0 and freed on CPU 1 go home: CPU 1's next
 *    allocations are its own blocks, not those;
 *  - per thread, the slots of threads that ended without their
 *    destructors (the exit system call) come back: a thread started after
 *    256 of them owns a slot, which malloc_trim cannot empty;
 *  - per thread, a fork child keeps the slots of the parent's other
 *    threads: a thread of the child borrows, when every slot is taken.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <dlfcn.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__has_include)
#if __has_include(<sys/rseq.h>)
#include <sys/rseq.h>
#define HAVE_RSEQ_H 1
#endif
#endif
#ifndef HAVE_RSEQ_H
static const unsigned __rseq_size = 0; /* glibc < 2.35: not registered */
#endif
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

/* Looked up at run time (no header declares them): libkheap.so's. */
typedef int (*mallctl_fn)(const char *, void *, size_t *, void *, size_t);
typedef void (*print_fn)(void (*)(void *, const char *), void *, const char *);
static mallctl_fn ctl;
static print_fn print;

/* The figures of KHEAP_STATS (malloc_stats_print's text). */
struct figures {
    unsigned long long allocations, frees, magazines, depots, large_cached;
};
static char text[8192];
static size_t text_len;
static void take_text(void *arg, const char *s)
{
    (void)arg;
    size_t n = strlen(s);
    if (n > sizeof text - 1 - text_len)
        n = sizeof text - 1 - text_len;
    memcpy(text + text_len, s, n);
    text[text_len += n] = 0;
}
static struct figures figures(void)
{
    struct figures f = {0, 0, 0, 0, 0};
    text_len = 0;
    text[0] = 0;
    print(take_text, NULL, NULL);
    const char *c = strstr(text, "counts     allocations ");
    const char *m = strstr(text, "idle       magazines ");
    if (c)
        sscanf(c, "counts allocations %llu frees %llu", &f.allocations, &f.frees);
    if (m)
        sscanf(m, "idle magazines %llu depots %llu", &f.magazines, &f.depots);
    const char *l = strstr(text, " large_cached ");
    if (l)
        sscanf(l, " large_cached %llu", &f.large_cached);
    return f;
}

static const char *expect = "any";

TEST(mode_is_the_expected_one)
{
    unsigned cpus = 0;
    size_t len = sizeof cpus;
    CHECK(ctl("kheap.cpus", &cpus, &len, NULL, 0) == 0, "mallctl kheap.cpus refused");
    long conf = sysconf(_SC_NPROCESSORS_CONF);
    printf("# mode: %s (%u CPUs), glibc rseq size %u\n", cpus ? "per-CPU" : "per-thread", cpus,
           __rseq_size);
    if (strcmp(expect, "auto") == 0)
#if defined(__x86_64__)
        expect = __rseq_size > 0 ? "rseq" : "slots";
#else
        expect = "slots";
#endif
    if (strcmp(expect, "rseq") == 0) {
        /* every CPU that may come online (at least those online), up to
         * the 56 that can have caches */
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        CHECK(cpus >= (unsigned)(online < 56 ? online : 56) && cpus <= 56,
              "per-CPU mode on %ld (online) to 56 CPUs expected, got %u (configured: %ld)", online,
              cpus, conf);
    } else if (strcmp(expect, "slots") == 0) {
        CHECK(cpus == 0, "per-thread slots expected, got per-CPU on %u CPUs", cpus);
    }
}

/* ---- threads moved between CPUs ---- */

#define MOVERS 8
#define ROUNDS 60000
#define KEEP 48

static pthread_barrier_t start_line, finish_line;
static int ncpu;
static int mover_bad[MOVERS];

/* The calling thread onto CPU cpu alone. */
static void move_to(unsigned cpu)
{
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    sched_setaffinity(0, sizeof s, &s);
}

/* Sizes of every kind: direct classes, multi-page classes, the CPU's
 * cache of large blocks, large blocks past it. */
static size_t mover_size(unsigned id, unsigned i)
{
    static const size_t sizes[] = {16, 24, 40, 64, 100, 256, 500, 1024, 1100, 2048, 3000,
                                   4096, 9000, 20000, 32768, 40000, 70000, 200000, 300000};
    return sizes[(i * 7 + id * 3) % (sizeof sizes / sizeof sizes[0])];
}

static void *mover(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg;
    unsigned char *keep[KEEP] = {0};
    size_t size[KEEP] = {0};
    pthread_barrier_wait(&start_line);
    for (unsigned i = 0; i < ROUNDS; i++) {
        if (i % 500 == 0)
            move_to((i / 500 + id) % (unsigned)ncpu);
        unsigned k = (i * 13 + id) % KEEP;
        if (keep[k]) {
            unsigned char want = (unsigned char)(id * 31 + size[k]);
            /* the first, some middle and the last bytes */
            if (keep[k][0] != want || keep[k][size[k] / 2] != want || keep[k][size[k] - 1] != want)
                mover_bad[id]++;
            free(keep[k]);
        }
        size[k] = mover_size(id, i);
        keep[k] = malloc(size[k]);
        if (!keep[k]) {
            mover_bad[id]++;
            continue;
        }
        memset(keep[k], (unsigned char)(id * 31 + size[k]), size[k]);
    }
    for (unsigned k = 0; k < KEEP; k++)
        free(keep[k]);
    pthread_barrier_wait(&finish_line);
    return NULL;
}

TEST(threads_moved_between_cpus)
{
    ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
    pthread_t t[MOVERS];
    pthread_barrier_init(&start_line, NULL, MOVERS + 1);
    pthread_barrier_init(&finish_line, NULL, MOVERS + 1);
    for (unsigned i = 0; i < MOVERS; i++)
        CHECK(pthread_create(&t[i], NULL, mover, (void *)(uintptr_t)i) == 0, "pthread_create");
    struct figures a = figures();
    pthread_barrier_wait(&start_line);
    /* Only the movers allocate between the two barriers. */
    pthread_barrier_wait(&finish_line);
    struct figures b = figures();
    for (unsigned i = 0; i < MOVERS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&start_line);
    pthread_barrier_destroy(&finish_line);
    int bad = 0;
    for (unsigned i = 0; i < MOVERS; i++)
        bad += mover_bad[i];
    CHECK(bad == 0, "%d blocks came back damaged or not at all", bad);
    uint64_t n = (uint64_t)MOVERS * ROUNDS;
    CHECK(b.allocations - a.allocations == n,
          "%llu allocations counted for %llu mallocs",
          (unsigned long long)(b.allocations - a.allocations), (unsigned long long)n);
    CHECK(b.frees - a.frees == n, "%llu frees counted for %llu frees",
          (unsigned long long)(b.frees - a.frees), (unsigned long long)n);
    printf("# %u threads moved across %d CPUs every 500 operations: %llu mallocs, %llu frees "
           "counted\n",
           MOVERS, ncpu, (unsigned long long)(b.allocations - a.allocations),
           (unsigned long long)(b.frees - a.frees));
}

/* ---- large blocks while malloc_trim empties the CPUs' caches ---- */

/* Threads (moved from CPU to CPU) allocate and free large blocks of a
 * few page counts, one at a time, all within the CPUs' caches of them, while
 * another thread calls malloc_trim every 0.2 ms: in per-CPU mode each
 * trim claims every CPU and empties its cache of large blocks under the
 * threads' pops and pushes. A block handed to two holders, a push lost
 * or made twice, shows as a block whose marks another overwrote (a run's
 * first word links it in its bin while it is cached), or as the heap's
 * counts off by one. */
#define LARGE_THREADS 6
#define LARGE_ROUNDS 150000
#define LARGE_KEEP 4

static atomic_int large_done;
static int large_bad[LARGE_THREADS];

static void *large_user(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg;
    static const size_t sizes[] = {36 * 1024, 64 * 1024, 64 * 1024 + 1, 100000, 256 * 1024};
    unsigned char *keep[LARGE_KEEP] = {0};
    size_t size[LARGE_KEEP] = {0};
    pthread_barrier_wait(&start_line);
    for (unsigned i = 0; i < LARGE_ROUNDS; i++) {
        if (i % 300 == 0)
            move_to((i / 300 + id) % (unsigned)ncpu);
        unsigned k = (i * 5 + id) % LARGE_KEEP;
        if (keep[k]) {
            unsigned char mark = keep[k][size[k] - 1];
            /* the first 16 bytes, a middle one and the last carry the mark */
            for (unsigned b = 0; b < 16; b++)
                if (keep[k][b] != mark)
                    large_bad[id]++;
            if (keep[k][size[k] / 2] != mark || mark / 8 != id + 1)
                large_bad[id]++;
            free(keep[k]);
        }
        /* one size at a time for every thread (a miss of a CPU's cache
         * empties it, so mixed sizes would seldom hit) */
        size[k] = sizes[(i / 10000) % (sizeof sizes / sizeof sizes[0])];
        keep[k] = malloc(size[k]);
        if (!keep[k]) {
            large_bad[id]++;
            continue;
        }
        unsigned char mark = (unsigned char)((id + 1) * 8 + i % 8);
        memset(keep[k], mark, 16);
        keep[k][size[k] / 2] = mark;
        keep[k][size[k] - 1] = mark;
    }
    for (unsigned k = 0; k < LARGE_KEEP; k++)
        free(keep[k]);
    pthread_barrier_wait(&finish_line);
    return NULL;
}

static void *large_trimmer(void *arg)
{
    (void)arg;
    pthread_barrier_wait(&start_line);
    unsigned long trims = 0;
    /* Every 0.2 ms: the caches fill between two trims. */
    struct timespec pause = {0, 200000};
    while (!atomic_load(&large_done)) {
        malloc_trim(0);
        trims++;
        nanosleep(&pause, NULL);
    }
    return (void *)(uintptr_t)trims;
}

TEST(large_blocks_under_trims)
{
    ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
    pthread_t t[LARGE_THREADS], trimmer;
    atomic_store(&large_done, 0);
    pthread_barrier_init(&start_line, NULL, LARGE_THREADS + 2);
    pthread_barrier_init(&finish_line, NULL, LARGE_THREADS + 1);
    for (unsigned i = 0; i < LARGE_THREADS; i++)
        CHECK(pthread_create(&t[i], NULL, large_user, (void *)(uintptr_t)i) == 0,
              "pthread_create");
    CHECK(pthread_create(&trimmer, NULL, large_trimmer, NULL) == 0, "pthread_create");
    struct figures a = figures();
    pthread_barrier_wait(&start_line);
    /* Only the users allocate between the two barriers (malloc_trim
     * allocates nothing). */
    pthread_barrier_wait(&finish_line);
    struct figures b = figures();
    atomic_store(&large_done, 1);
    void *trims = NULL;
    pthread_join(trimmer, &trims);
    for (unsigned i = 0; i < LARGE_THREADS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&start_line);
    pthread_barrier_destroy(&finish_line);
    int bad = 0;
    for (unsigned i = 0; i < LARGE_THREADS; i++)
        bad += large_bad[i];
    CHECK(bad == 0, "%d large blocks came back damaged or not at all", bad);
    uint64_t n = (uint64_t)LARGE_THREADS * LARGE_ROUNDS;
    CHECK(b.allocations - a.allocations == n && b.frees - a.frees == n,
          "%llu allocations and %llu frees counted for %llu of each",
          (unsigned long long)(b.allocations - a.allocations),
          (unsigned long long)(b.frees - a.frees), (unsigned long long)n);
    /* The caches were there to be raced with: once malloc_trim emptied
     * them, a block freed now stays in this thread's (or its CPU's). */
    CHECK(trims != NULL, "no malloc_trim ran beside the users%s", "");
    void *volatile one = malloc(64 * 1024);
    malloc_trim(0);
    struct figures e = figures();
    free(one);
    struct figures c = figures();
    CHECK(c.large_cached - e.large_cached == 64 * 1024,
          "a freed block of 64 KiB: %llu bytes cached before its free, %llu after",
          e.large_cached, c.large_cached);
    printf("# %u threads on %d CPUs, large blocks of 36 to 256 KiB, %lu malloc_trim calls "
           "meanwhile: %llu mallocs, %llu frees counted\n",
           LARGE_THREADS, ncpu, (unsigned long)(uintptr_t)trims,
           (unsigned long long)(b.allocations - a.allocations),
           (unsigned long long)(b.frees - a.frees));
}

/* ---- many threads ---- */

#define MANY 256

static pthread_barrier_t many_line;

static void *many_thread(void *arg)
{
    (void)arg;
    void *p[64];
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < 64; i++)
            p[i] = malloc((size_t)(16 + 16 * (i % 32)));
        for (int i = 0; i < 64; i++)
            free(p[i]);
    }
    /* All alive at once before any exits: 256 threads at the same time. */
    pthread_barrier_wait(&many_line);
    return NULL;
}

/* n threads alive at once, each having used 32 classes; the bytes in
 * magazines while they are. */
static size_t magazines_with(unsigned n, pthread_t *t)
{
    pthread_barrier_init(&many_line, NULL, n + 1);
    unsigned made = 0;
    for (; made < n; made++)
        if (pthread_create(&t[made], NULL, many_thread, NULL) != 0) {
            /* the barrier would never open: fail the whole program */
            printf("not ok - many_threads_share_the_cpus: thread %u of %u did not start\n", made,
                   n);
            exit(1);
        }
    pthread_barrier_wait(&many_line);
    struct figures f = figures();
    for (unsigned i = 0; i < made; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&many_line);
    return (size_t)f.magazines;
}

TEST(many_threads_share_the_cpus)
{
    unsigned cpus = 0;
    size_t len = sizeof cpus;
    ctl("kheap.cpus", &cpus, &len, NULL, 0);
    static pthread_t t[MANY];
    size_t two = magazines_with(2, t);
    size_t many = magazines_with(MANY, t);
    printf("# bytes in magazines with 2 threads alive: %zu; with %u: %zu (%.2f times)\n", two,
           MANY, many, (double)many / (double)two);
    /* Per CPU, the second run finds the magazines the first filled: as
     * many threads again as CPUs add nothing, 256 add at most what the
     * lent slots take (a slow path that finds its CPU claimed). Per
     * thread, 256 threads fill every slot's. */
    if (cpus)
        CHECK(many <= 2 * two + 65536, "%zu bytes in magazines with %u threads, %zu with 2", many,
              MANY, two);
}

/* ---- malloc_trim reaches other CPUs ---- */

static pthread_barrier_t trim_line;

static void *filler(void *arg)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET((int)(uintptr_t)arg, &set);
    sched_setaffinity(0, sizeof set, &set);
    enum { N = 4000 };
    static void *p[N];
    for (int i = 0; i < N; i++)
        p[i] = malloc(200);
    for (int i = 0; i < N; i++)
        free(p[i]);
    pthread_barrier_wait(&trim_line); /* filled */
    pthread_barrier_wait(&trim_line); /* trimmed */
    /* A slow path (a large block; decay is on): where the trim could not
     * reach this thread's magazines (thread slots), its request is
     * answered here. */
    void *volatile big = malloc(100000); /* (volatile: not optimised away) */
    free(big);
    pthread_barrier_wait(&trim_line); /* answered */
    pthread_barrier_wait(&trim_line); /* looked at: may exit */
    return NULL;
}

/* A filler thread on CPU cpu fills its magazines; this thread trims:
 * the figures with them filled, after the trim, and after the filler's
 * next slow path. */
struct trimmed {
    struct figures before, after, answered;
};
static struct trimmed trim_around_filler(int cpu)
{
    struct trimmed r;
    malloc_trim(0);
    pthread_t t;
    pthread_barrier_init(&trim_line, NULL, 2);
    CHECK(pthread_create(&t, NULL, filler, (void *)(uintptr_t)cpu) == 0, "pthread_create");
    pthread_barrier_wait(&trim_line);
    r.before = figures();
    malloc_trim(0);
    r.after = figures();
    pthread_barrier_wait(&trim_line);
    pthread_barrier_wait(&trim_line);
    r.answered = figures();
    pthread_barrier_wait(&trim_line);
    pthread_join(t, NULL);
    pthread_barrier_destroy(&trim_line);
    return r;
}

TEST(trim_reaches_other_cpus)
{
    unsigned cpus = 0;
    size_t len = sizeof cpus;
    ctl("kheap.cpus", &cpus, &len, NULL, 0);
    if (ncpu < 2) {
        printf("# one CPU: nothing to reach\n");
        return;
    }
    /* This thread on CPU 0, the filler on CPU 1. */
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(0, &set);
    sched_setaffinity(0, sizeof set, &set);
    struct trimmed r = trim_around_filler(1);
    struct figures before = r.before, after = r.after, answered = r.answered;
    CPU_ZERO(&set);
    for (int c = 0; c < ncpu; c++)
        CPU_SET(c, &set);
    sched_setaffinity(0, sizeof set, &set);
    printf("# bytes in magazines with CPU 1's filled: %llu; after malloc_trim on CPU 0: %llu; "
           "after the filler's next slow path: %llu\n",
           before.magazines, after.magazines, answered.magazines);
    if (cpus >= 2) /* CPU 1 has caches */
        CHECK(after.magazines * 4 < before.magazines,
              "malloc_trim on CPU 0 left %llu of %llu bytes in magazines", after.magazines,
              before.magazines);
    else /* thread slots: the filler's own slow path gives them back */
        CHECK(after.magazines * 4 >= before.magazines * 3 &&
                  answered.magazines * 4 < before.magazines,
              "thread slots: magazines %llu, after malloc_trim %llu (it cannot reach the "
              "filler's), after the filler's slow path %llu",
              before.magazines, after.magazines, answered.magazines);
}

/* ---- a producer and a consumer on one CPU ---- */

/* Two threads on CPU 0 take turns: one allocates a batch of 64-byte
 * blocks, the other frees it. The batch is larger than a depot holds
 * unless its bound grows (KHEAP_DEPOT_GROW): the consumer's frees
 * overflow to the slabs and the producer refills from them. In per-CPU
 * mode both threads share CPU 0's magazines, so they look like one
 * thread that frees and allocates again: the depot must grow for that
 * too. */
enum { PAIR_BATCH = 16384, PAIR_ROUNDS = 6 };
static void *pair_blocks[PAIR_BATCH];
static pthread_barrier_t pair_line;

static void *pair_consumer(void *arg)
{
    (void)arg;
    move_to(0);
    for (int r = 0; r < PAIR_ROUNDS; r++) {
        pthread_barrier_wait(&pair_line); /* produced */
        for (int i = 0; i < PAIR_BATCH; i++)
            free(pair_blocks[i]);
        pthread_barrier_wait(&pair_line); /* consumed */
    }
    pthread_barrier_wait(&pair_line); /* looked at: may exit */
    return NULL;
}

static void *pair_producer(void *arg)
{
    (void)arg;
    move_to(0);
    for (int r = 0; r < PAIR_ROUNDS; r++) {
        for (int i = 0; i < PAIR_BATCH; i++)
            pair_blocks[i] = malloc(64);
        pthread_barrier_wait(&pair_line); /* produced */
        pthread_barrier_wait(&pair_line); /* consumed */
    }
    pthread_barrier_wait(&pair_line); /* looked at: may exit */
    return NULL;
}

TEST(pair_on_one_cpu_grows_the_depot)
{
    malloc_trim(0); /* depots empty, bounds back to the plain one */
    pthread_t t[2];
    pthread_barrier_init(&pair_line, NULL, 3);
    CHECK(pthread_create(&t[0], NULL, pair_producer, NULL) == 0, "pthread_create");
    CHECK(pthread_create(&t[1], NULL, pair_consumer, NULL) == 0, "pthread_create");
    for (int r = 0; r < PAIR_ROUNDS; r++) {
        pthread_barrier_wait(&pair_line);
        pthread_barrier_wait(&pair_line);
    }
    struct figures f = figures();
    pthread_barrier_wait(&pair_line);
    pthread_join(t[0], NULL);
    pthread_join(t[1], NULL);
    pthread_barrier_destroy(&pair_line);
    /* The plain bound: KHEAP_DEPOT_BYTES (128 KiB) of each class. */
    printf("# %d rounds of %d blocks of 64 B made on CPU 0 by one thread and freed there by "
           "another: %llu bytes in depots\n",
           PAIR_ROUNDS, PAIR_BATCH, f.depots);
    CHECK(f.depots > 2 * 131072, "the depots hold %llu bytes: the bound did not grow", f.depots);
}

/* ---- frees on another CPU go home ---- */

/* A thread on CPU 0 allocates a batch of 64-byte blocks. A thread on
 * CPU 1 allocates and frees twice as many of its own, then frees CPU 0's
 * batch and allocates a batch. The batch's slabs are CPU 0's (its home),
 * so CPU 1's frees of it go to CPU 1's remote front, on their way to
 * CPU 0, and CPU 1's allocations take its own blocks, which its
 * magazines hold: none, or few, of CPU 0's. A free that kept them (no
 * homes: the per-CPU commits before they looked at homes) hands all of
 * them back, the last freed first. Homes are a preference, not a rule:
 * a CPU with nothing of its own takes another's (cpu.c, alloc_front),
 * hence CPU 1's own blocks first. In both modes: per CPU the two CPUs'
 * caches, per thread the two threads' slots. */
enum { HOME_BATCH = 128 };
static void *home_made[HOME_BATCH];
static pthread_barrier_t home_line;
static atomic_int home_unpinned; /* a thread is not on its CPU */

/* (alive until the freer is done: per thread, a thread that ended would
 * leave its slot to the next, which would then be the blocks' home) */
static void *home_maker(void *arg)
{
    (void)arg;
    move_to(0);
    if (sched_getcpu() != 0)
        atomic_store(&home_unpinned, 1);
    for (int i = 0; i < HOME_BATCH; i++)
        home_made[i] = malloc(64);
    pthread_barrier_wait(&home_line); /* made */
    pthread_barrier_wait(&home_line); /* freed and looked at */
    return NULL;
}

static void *home_freer(void *arg)
{
    unsigned *again = arg;
    void *mine[2 * HOME_BATCH];
    pthread_barrier_wait(&home_line); /* made */
    move_to(1);
    if (sched_getcpu() != 1)
        atomic_store(&home_unpinned, 1);
    for (int i = 0; i < 2 * HOME_BATCH; i++)
        mine[i] = malloc(64);
    for (int i = 0; i < 2 * HOME_BATCH; i++)
        free(mine[i]);
    for (int i = 0; i < HOME_BATCH; i++)
        free(home_made[i]);
    for (int i = 0; i < HOME_BATCH; i++)
        mine[i] = malloc(64);
    *again = 0;
    for (int i = 0; i < HOME_BATCH; i++)
        for (int k = 0; k < HOME_BATCH; k++)
            if (mine[i] == home_made[k]) {
                ++*again;
                break;
            }
    for (int i = 0; i < HOME_BATCH; i++)
        free(mine[i]);
    pthread_barrier_wait(&home_line); /* freed and looked at */
    return NULL;
}

TEST(frees_on_another_cpu_go_home)
{
    if (sysconf(_SC_NPROCESSORS_ONLN) < 2) {
        printf("# one CPU online: nothing to test\n");
        return;
    }
    pthread_t t[2];
    unsigned again = 0;
    pthread_barrier_init(&home_line, NULL, 2);
    CHECK(pthread_create(&t[0], NULL, home_maker, NULL) == 0, "pthread_create");
    CHECK(pthread_create(&t[1], NULL, home_freer, &again) == 0, "pthread_create");
    pthread_join(t[0], NULL);
    pthread_join(t[1], NULL);
    pthread_barrier_destroy(&home_line);
    if (atomic_load(&home_unpinned)) {
        printf("# CPUs 0 and 1 are not both this process's to run on: nothing to test\n");
        return;
    }
    printf("# %d blocks of 64 B made on CPU 0, freed on CPU 1 after %d of its own: %u of CPU "
           "1's next %d allocations were among them\n",
           HOME_BATCH, 2 * HOME_BATCH, again, HOME_BATCH);
    CHECK(again < HOME_BATCH / 4, "CPU 1 kept %u of %d blocks homed at CPU 0 for itself", again,
          HOME_BATCH);
}

/* ---- one thread whose blocks of a class swing past the depot ---- */

/* One thread allocates 64 blocks of 16 KiB and frees them all, six times.
 * Its frees overflow the plain bound (KHEAP_DEPOT_BYTES: two magazines of
 * four) to the slabs, and its next allocations refill from them: the
 * depot grows for that (KHEAP_DEPOT_GROW), though no other thread wants
 * the blocks, so the last round's frees stay cached. */
enum { SWING_BLOCKS = 64, SWING_ROUNDS = 6 };

static void *swing(void *arg)
{
    struct figures *out = arg;
    move_to(0);
    static void *b[SWING_BLOCKS];
    for (int r = 0; r < SWING_ROUNDS; r++) {
        for (int i = 0; i < SWING_BLOCKS; i++)
            b[i] = malloc(16384);
        for (int i = 0; i < SWING_BLOCKS; i++)
            free(b[i]);
    }
    *out = figures();
    return NULL;
}

TEST(one_thread_swinging_grows_the_depot)
{
    malloc_trim(0); /* depots empty, bounds back to the plain one */
    struct figures f;
    pthread_t t;
    CHECK(pthread_create(&t, NULL, swing, &f) == 0, "pthread_create");
    pthread_join(t, NULL);
    printf("# %d rounds of %d blocks of 16 KiB made and freed by one thread: %llu bytes in "
           "depots\n",
           SWING_ROUNDS, SWING_BLOCKS, f.depots);
    CHECK(f.depots > 2 * 131072, "the depots hold %llu bytes: the bound did not grow", f.depots);
}

/* ---- slots of threads gone without their destructors ---- */

/* Per CPU (rseq), there are no thread slots to test: say so. */
static bool per_cpu_mode(void)
{
    unsigned cpus = 0;
    size_t len = sizeof cpus;
    ctl("kheap.cpus", &cpus, &len, NULL, 0);
    if (cpus)
        printf("# per CPU: no thread slots\n");
    return cpus != 0;
}

static void *vanisher(void *arg)
{
    (void)arg;
    void *volatile p = malloc(100); /* takes a slot */
    free(p);
    syscall(SYS_exit, 0); /* ends the thread: no destructor gives it back */
    return NULL;
}

TEST(slots_of_vanished_threads_come_back)
{
    if (per_cpu_mode())
        return;
    /* More threads than slots, ended by the exit system call: each that
     * took a free slot (or adopted one) leaves it taken. */
    for (int i = 0; i < 256; i++) {
        pthread_t v;
        CHECK(pthread_create(&v, NULL, vanisher, NULL) == 0, "pthread_create");
        pthread_join(v, NULL);
    }
    usleep(300 * 1000); /* past the interval between two looks for them */
    /* A new thread then owns one of their slots: as in
     * trim_reaches_other_cpus, a trim from here cannot empty its
     * magazines (a borrowed slot's it would). */
    struct trimmed r = trim_around_filler(ncpu >= 2);
    struct figures before = r.before, after = r.after;
    printf("# after 256 threads gone without their destructors: a new thread's magazines %llu "
           "bytes, after malloc_trim %llu\n",
           before.magazines, after.magazines);
    /* The filler's 4000 frees of 200 bytes leave two full magazines of
     * 32 blocks of 208 (13 312 bytes); the vanished threads' own stay in
     * their slots, which no trim reaches either way. */
    CHECK(after.magazines + 13312 / 2 > before.magazines,
          "the new thread borrowed a slot (magazines %llu, after malloc_trim %llu): the "
          "vanished threads' slots were not adopted",
          before.magazines, after.magazines);
}

/* ---- a fork child and the parent's slots ---- */

/* Fill every slot a thread can own: threads that take one (or adopt a
 * vanished one) and end by the exit system call, so each slot stays
 * taken. */
static void fill_slots_with_vanished(void)
{
    for (int i = 0; i < 80; i++) {
        pthread_t v;
        CHECK(pthread_create(&v, NULL, vanisher, NULL) == 0, "pthread_create");
        pthread_join(v, NULL);
    }
}

TEST(fork_child_keeps_the_parents_slots)
{
    if (per_cpu_mode())
        return;
    fill_slots_with_vanished();
    /* In a fork child the parent's other threads are gone, and tgkill's
     * answer for their ids (ESRCH) would make their slots look free to
     * adopt; but their state may have been halfway through an operation
     * at the fork, so the child keeps them (marked, hosted.c:
     * fork_child). A thread of the child then finds every slot taken and
     * borrows one, whose magazines a trim empties. */
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        /* The child reports by its exit status alone: a CHECK failing in
         * it comes back here, not to the parent's RUN, and a hang ends
         * by the alarm. */
        alarm(60);
        volatile int ok = 0; /* read after a longjmp */
        if (setjmp(harness_jmp) == 0) {
            usleep(300 * 1000); /* past the interval between two looks */
            struct trimmed r = trim_around_filler(ncpu >= 2);
            printf("# fork child, every slot taken by the parent's threads: a new thread's "
                   "magazines %llu bytes, after malloc_trim %llu\n",
                   r.before.magazines, r.after.magazines);
            ok = r.after.magazines + 13312 / 2 <= r.before.magazines;
            if (!ok)
                printf("# the child's thread owned a slot of the parent's threads (magazines "
                       "%llu, after malloc_trim %llu)\n",
                       r.before.magazines, r.after.magazines);
        } else {
            printf("# in the fork child: %s\n", harness_msg);
        }
        fflush(stdout);
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "the fork child adopted a slot of the parent's threads, or failed (status %#x)",
          status);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        expect = argv[1];
    ctl = (mallctl_fn)(uintptr_t)dlsym(RTLD_DEFAULT, "mallctl");
    print = (print_fn)(uintptr_t)dlsym(RTLD_DEFAULT, "malloc_stats_print");
    if (!ctl || !print) {
        printf("not ok - libkheap.so is not in front (no mallctl)\n");
        return 1;
    }
    RUN(mode_is_the_expected_one);
    RUN(threads_moved_between_cpus);
    RUN(large_blocks_under_trims);
    RUN(many_threads_share_the_cpus);
    RUN(trim_reaches_other_cpus);
    RUN(frees_on_another_cpu_go_home);
    RUN(pair_on_one_cpu_grows_the_depot);
    RUN(one_thread_swinging_grows_the_depot);
    RUN(slots_of_vanished_threads_come_back);
    RUN(fork_child_keeps_the_parents_slots);
    return harness_done();
}
