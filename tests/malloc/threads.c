/*
 * threads.c - threads under libkheap.so: frees and allocations from a TSD
 * destructor that runs after kheap's own thread-exit cleanup, blocks
 * freed by another thread than the one that allocated them, and thousands
 * of threads created and exited, whose cached blocks must go back (the
 * resident size stays bounded).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static pthread_key_t late_key;
static int late_ok, late_runs;
static pthread_mutex_t late_lock = PTHREAD_MUTEX_INITIALIZER;

/* Runs at thread exit; the key was made after kheap's (kheap makes its
 * key at the process's first allocation), so glibc runs this destructor
 * after kheap has flushed the thread's caches and given its slot back. */
static void late_destructor(void *arg)
{
    char **blocks = arg;
    int ok = 1;
    for (int i = 0; i < 100; i++) {
        if (strcmp(blocks[i], "tsd") != 0)
            ok = 0;
        free(blocks[i]);
    }
    free(blocks);
    for (int i = 0; i < 100; i++) { /* allocate after the cleanup, too */
        char *p = malloc((size_t)i * 13 + 1);
        if (!p)
            ok = 0;
        else
            p[0] = 1;
        free(p);
    }
    pthread_mutex_lock(&late_lock);
    late_ok += ok;
    late_runs++;
    pthread_mutex_unlock(&late_lock);
}

static void *tsd_thread(void *arg)
{
    (void)arg;
    free(malloc(10)); /* take a kheap slot first */
    char **blocks = malloc(100 * sizeof *blocks);
    for (int i = 0; i < 100; i++) {
        blocks[i] = malloc((size_t)i * 7 + 4);
        strcpy(blocks[i], "tsd");
    }
    pthread_setspecific(late_key, blocks);
    return NULL;
}

TEST(free_from_late_tsd_destructor)
{
    free(malloc(1)); /* kheap's key exists before ours */
    CHECK(pthread_key_create(&late_key, late_destructor) == 0, "pthread_key_create");
    for (int round = 0; round < 20; round++) {
        pthread_t t[8];
        for (int i = 0; i < 8; i++)
            CHECK(pthread_create(&t[i], NULL, tsd_thread, NULL) == 0, "pthread_create");
        for (int i = 0; i < 8; i++)
            pthread_join(t[i], NULL);
    }
    CHECK(late_runs == 160 && late_ok == 160, "%d destructors ran, %d found their blocks intact",
          late_runs, late_ok);
}

/* Producer/consumer through a mutex-protected queue: every block is freed
 * by another thread than the one that made it. */
#define QCAP 1024
static void *queue[QCAP];
static unsigned qhead, qtail;
static pthread_mutex_t qlock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t qcond = PTHREAD_COND_INITIALIZER;
static int bad_blocks;

static void *producer(void *arg)
{
    uintptr_t id = (uintptr_t)arg;
    for (unsigned i = 0; i < 40000; i++) {
        size_t n = 32 + (i * 37 + id * 101) % 2000;
        unsigned char *p = malloc(n);
        memset(p, (int)(id & 0xff), n);
        p[0] = (unsigned char)id;
        *(size_t *)(p + 8) = n;
        pthread_mutex_lock(&qlock);
        while (qtail - qhead == QCAP)
            pthread_cond_wait(&qcond, &qlock);
        queue[qtail++ % QCAP] = p;
        pthread_cond_broadcast(&qcond);
        pthread_mutex_unlock(&qlock);
    }
    return NULL;
}

static void *consumer(void *arg)
{
    unsigned want = (unsigned)(uintptr_t)arg;
    for (unsigned got = 0; got < want; got++) {
        pthread_mutex_lock(&qlock);
        while (qtail == qhead)
            pthread_cond_wait(&qcond, &qlock);
        unsigned char *p = queue[qhead++ % QCAP];
        pthread_cond_broadcast(&qcond);
        pthread_mutex_unlock(&qlock);
        size_t n = *(size_t *)(p + 8);
        if (p[n - 1] != p[0])
            __atomic_fetch_add(&bad_blocks, 1, __ATOMIC_RELAXED);
        free(p);
    }
    return NULL;
}

TEST(blocks_freed_by_other_threads)
{
    pthread_t p[2], c[2];
    for (uintptr_t i = 0; i < 2; i++)
        CHECK(pthread_create(&p[i], NULL, producer, (void *)(i + 1)) == 0, "producer");
    for (uintptr_t i = 0; i < 2; i++)
        CHECK(pthread_create(&c[i], NULL, consumer, (void *)(uintptr_t)40000) == 0, "consumer");
    for (int i = 0; i < 2; i++) {
        pthread_join(p[i], NULL);
        pthread_join(c[i], NULL);
    }
    CHECK(bad_blocks == 0, "%d blocks arrived changed", bad_blocks);
}

static void *short_thread(void *arg)
{
    void **mine = malloc(300 * sizeof *mine);
    for (int i = 0; i < 300; i++)
        mine[i] = malloc((size_t)(i % 60) * 48 + 16);
    for (int i = 0; i < 300; i++)
        free(mine[i]);
    free(mine);
    return arg;
}

TEST(many_threads_return_their_caches)
{
    long before = 0;
    for (int round = 0; round < 250; round++) {
        if (round == 10)
            before = kt_rss_kib();
        pthread_t t[16];
        for (int i = 0; i < 16; i++)
            CHECK(pthread_create(&t[i], NULL, short_thread, NULL) == 0, "pthread_create");
        for (int i = 0; i < 16; i++)
            pthread_join(t[i], NULL);
    }
    long after = kt_rss_kib();
    printf("# 4000 threads: RSS %ld KiB after 160 threads, %ld KiB after 4000\n", before, after);
    /* Each thread caches up to ~300 KiB in its magazines; 3840 threads
     * that kept them would add about a gigabyte. */
    CHECK(after - before < 16 * 1024, "RSS grew by %ld KiB over 3840 threads", after - before);
}

int main(void)
{
    RUN(free_from_late_tsd_destructor);
    RUN(blocks_freed_by_other_threads);
    RUN(many_threads_return_their_caches);
    return harness_done();
}
