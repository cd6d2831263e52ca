/*
 * rss.c - freed memory goes back to the system: 1 GiB allocated in large
 * blocks, written, and freed leaves the resident size near where it
 * started; a loop that frees and allocates the same large size again
 * does not fault its pages in every round (the purge's hysteresis).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "harness.h"

static long rss_mib(void)
{
    return kt_rss_kib() / 1024;
}

static long minor_faults(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_minflt;
}

#define NBLOCKS 256
#define BLOCK (4u << 20)

TEST(gigabyte_freed_goes_back)
{
    static char *b[NBLOCKS];
    long start = rss_mib();
    for (int i = 0; i < NBLOCKS; i++) {
        b[i] = malloc(BLOCK);
        CHECK(b[i] != NULL, "malloc %d of 4 MiB", i);
        memset(b[i], i, BLOCK);
    }
    long peak = rss_mib();
    /* Free in an interleaved order, so runs coalesce late. */
    for (int i = 0; i < NBLOCKS; i += 2)
        free(b[i]);
    for (int i = 1; i < NBLOCKS; i += 2)
        free(b[i]);
    long end = rss_mib();
    printf("# RSS %ld MiB at start, %ld MiB with 1 GiB live, %ld MiB after freeing it\n",
           start, peak, end);
    CHECK(peak - start >= 1000, "1 GiB written but RSS rose only %ld MiB", peak - start);
    /* Once nearly everything is freed the purge keeps at most
     * KHEAP_PURGE_SLACK (64 MiB) of freed pages resident. */
    CHECK(end - start <= 80, "RSS still %ld MiB above the start after freeing", end - start);
}

TEST(same_size_loop_does_not_fault_each_round)
{
    const size_t size = 32u << 20;
    long faults_first = 0, faults_rest = 0;
    for (int round = 0; round < 20; round++) {
        long f0 = minor_faults();
        char *p = malloc(size);
        CHECK(p != NULL, "malloc(32 MiB) round %d", round);
        memset(p, round, size);
        free(p);
        long f = minor_faults() - f0;
        if (round == 0)
            faults_first = f;
        else
            faults_rest += f;
    }
    printf("# 32 MiB malloc/write/free: %ld faults in round 1, %ld in rounds 2-20\n",
           faults_first, faults_rest);
    /* A purge every round would fault 8192 pages per round. */
    CHECK(faults_rest < 8192, "%ld page faults over 19 rounds of the same size", faults_rest);
}

TEST(realloc_same_large_size_keeps_block)
{
    char *p = malloc(16u << 20);
    CHECK(p != NULL, "malloc(16 MiB)");
    memset(p, 3, 16u << 20);
    long f0 = minor_faults();
    for (int i = 0; i < 50; i++) {
        char *q = realloc(p, (16u << 20) + (size_t)(i % 2) * 4096);
        CHECK(q != NULL, "realloc round %d", i);
        q[i] = (char)i;
        p = q;
    }
    long f = minor_faults() - f0;
    free(p);
    printf("# 50 reallocs around 16 MiB: %ld faults\n", f);
    CHECK(f < 4096, "%ld faults for 50 reallocs of 16 MiB +- a page", f);
}

int main(void)
{
    RUN(gigabyte_freed_goes_back);
    RUN(same_size_loop_does_not_fault_each_round);
    RUN(realloc_same_large_size_keeps_block);
    return harness_done();
}
