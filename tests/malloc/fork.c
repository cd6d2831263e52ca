/*
 * fork.c - fork() from a process whose other threads allocate and free
 * all the time, 100 rounds: each child allocates (from its only thread and
 * from a new one), frees and exits 0; a child that hangs is killed by its
 * alarm and counted as a failure.
 */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define WORKERS 3
#define ROUNDS 100

static volatile int stop;

static void *churn(void *arg)
{
    uint64_t rng = kt_rand_seed(0, (uintptr_t)arg);
    void *ring[64] = {0};
    while (!stop) {
        for (unsigned i = 0; i < 64; i++) {
            size_t n = kt_rand_range(&rng, 1, 3000);
            if (kt_rand_below(&rng, 97) == 0)
                n = kt_rand_range(&rng, 100000, 399999); /* a large block now and then */
            free(ring[i]);
            ring[i] = malloc(n);
            if (ring[i])
                memset(ring[i], (int)i, n < 64 ? n : 64);
        }
    }
    for (unsigned i = 0; i < 64; i++)
        free(ring[i]);
    return NULL;
}

static void *child_thread(void *arg)
{
    (void)arg;
    for (int i = 0; i < 1000; i++)
        free(malloc((size_t)i * 7 + 1));
    return malloc(32);
}

static int child(void)
{
    alarm(10);
    void *blocks[500];
    for (int i = 0; i < 500; i++) {
        blocks[i] = malloc((size_t)(i % 50) * 40 + 8);
        if (!blocks[i])
            return 2;
    }
    pthread_t t;
    void *r = NULL;
    if (pthread_create(&t, NULL, child_thread, NULL) || pthread_join(t, &r) || !r)
        return 3;
    free(r);
    for (int i = 0; i < 500; i++)
        free(blocks[i]);
    void *big = malloc(1 << 20);
    if (!big)
        return 4;
    memset(big, 1, 1 << 20);
    free(big);
    return 0;
}

TEST(fork_while_threads_allocate)
{
    pthread_t t[WORKERS];
    for (uintptr_t i = 0; i < WORKERS; i++)
        CHECK(pthread_create(&t[i], NULL, churn, (void *)i) == 0, "pthread_create %zu",
              (size_t)i);
    int bad = 0, first_status = 0, first_round = -1;
    for (int round = 0; round < ROUNDS; round++) {
        pid_t pid = fork();
        if (pid == 0)
            _exit(child());
        CHECK(pid > 0, "fork failed in round %d", round);
        int status = 0;
        waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            if (!bad++) {
                first_status = status;
                first_round = round;
            }
        }
    }
    stop = 1;
    for (int i = 0; i < WORKERS; i++)
        pthread_join(t[i], NULL);
    CHECK(bad == 0, "%d of %d children failed; first in round %d with wait status %#x "
          "(signal %d, exit %d)", bad, ROUNDS, first_round, first_status,
          WIFSIGNALED(first_status) ? WTERMSIG(first_status) : 0,
          WIFEXITED(first_status) ? WEXITSTATUS(first_status) : -1);
}

int main(void)
{
    RUN(fork_while_threads_allocate);
    return harness_done();
}
