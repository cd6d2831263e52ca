/*
 * test_bodies.c - the shared test bodies (bodies.c) run hosted, with
 * threads standing in for CPUs. The bare-metal kernels run the same
 * bodies under QEMU (demo/kernel.c).
 *
 * Environment: KHEAP_SEED, KHEAP_TEST_OPS (the model test and each
 * thread of the SMP stress run KHEAP_TEST_OPS / 20 operations, 1000 to
 * 50000), KHEAP_TEST_THREADS (default 4).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "bodies.h"
#include "harness.h"

static void put_line(const char *s)
{
    printf("%s\n", s);
    fflush(stdout);
}

struct job {
    void (*fn)(unsigned, void *);
    void *arg;
    unsigned index;
};

static void *thread_main(void *p)
{
    struct job *j = p;
    j->fn(j->index, j->arg);
    return NULL;
}

static unsigned g_threads;

static void run_all(void (*fn)(unsigned, void *), void *arg)
{
    pthread_t t[64];
    struct job jobs[64];
    for (unsigned i = 1; i < g_threads; i++) {
        jobs[i] = (struct job){fn, arg, i};
        if (pthread_create(&t[i], NULL, thread_main, &jobs[i]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            exit(2);
        }
    }
    fn(0, arg);
    for (unsigned i = 1; i < g_threads; i++)
        pthread_join(t[i], NULL);
}

int main(void)
{
    long ops = kt_env_long("KHEAP_TEST_OPS", 1000000) / 20;
    g_threads = (unsigned)kt_env_long("KHEAP_TEST_THREADS", 4);
    if (g_threads < 1 || g_threads > 64)
        g_threads = 4;
    struct kt_env e = {
        .platform = "hosted (threads as CPUs)",
        .puts = put_line,
        .ncpus = g_threads,
        .run_all = run_all,
        .seed = kt_seed(),
        .model_ops = (unsigned long)(ops < 1000 ? 1000 : ops > 50000 ? 50000 : ops),
        .stress_ops = (unsigned long)(ops < 1000 ? 1000 : ops > 50000 ? 50000 : ops),
    };
    int failed = kt_run_bodies(&e);
    printf("# %d passed, %d failed\n", kt_passed, kt_failed);
    return failed ? 1 : 0;
}
