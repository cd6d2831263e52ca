/*
 * churn.c - a program that allocates for a while, for the live statistics
 * checks of tests/malloc/run.sh (run under LD_PRELOAD=libkheap.so).
 *   churn SECONDS [fork]
 * Frees and allocates blocks of 16 B to 4 KiB (and a 100 000-byte block
 * every 100 rounds) for SECONDS, then allocates 1000 blocks of 1000 bytes
 * (class kmalloc-1024) that it holds to the end, and prints "held 1000".
 * With "fork", a child churns beside it and exits through exit(), so its
 * destructors run too.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void *volatile slots[4096];
static void *volatile held[1000];

static double since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

static void churn(double secs)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (unsigned i = 0; i % 1024 || since(&t0) < secs; i++) {
        unsigned k = (i * 2654435761u) >> 20 & 4095;
        free(slots[k]);
        slots[k] = malloc(16 + (i * 7919u) % 4080);
        if (i % 100 == 0)
            free(malloc(100000));
    }
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 1;
    pid_t child = -1;
    if (argc > 2) {
        fflush(stdout);
        child = fork();
        if (child == 0) {
            churn(secs / 2);
            exit(0);
        }
    }
    churn(secs);
    for (int i = 0; i < 1000; i++)
        held[i] = malloc(1000);
    if (child > 0)
        waitpid(child, NULL, 0);
    printf("held 1000\n");
    return 0;
}
