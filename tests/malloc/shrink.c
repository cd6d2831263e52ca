/*
 * shrink.c - memory that follows use, measured against the C library's
 * malloc in the same run (tests/malloc/run.sh runs each mode twice: once
 * plain, which prints the figure of the C library's allocator, then under
 * LD_PRELOAD with that figure as an argument, which checks). Behaviour,
 * not time: sizes from malloc_usable_size, resident memory from
 * /proc/self/statm, faults from getrusage.
 *
 *   shrink realloc [GLIBC_KIB]  20 000 blocks of 32 KiB + 33 bytes, each
 *       written and shrunk to 10 bytes by realloc, kept: what does it cost?
 *       (Python's os.read(fd, 32768) shrinks its buffer this way.)
 *   shrink cycles [GLIBC_FAULTS]  20 rounds of allocating 13, 17 and 64 MB,
 *       writing every page and freeing them (liblzma's encoder does this):
 *       minor faults of rounds 2..20.
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "harness.h"

static long minor_faults(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_minflt;
}

#define NREADS 20000
#define READ_SIZE (32768 + 33)

static int realloc_mode(long glibc_kib)
{
    static char *keep[NREADS];
    size_t max_usable = 0;
    long before = kt_rss_kib();
    for (int i = 0; i < NREADS; i++) {
        char *p = malloc(READ_SIZE);
        if (!p) {
            printf("not ok - realloc: malloc %d failed\n", i);
            return 1;
        }
        memset(p, 'a' + i % 26, READ_SIZE);
        char *q = realloc(p, 10);
        if (!q || q[9] != 'a' + i % 26) {
            printf("not ok - realloc: shrink %d lost the block or its bytes\n", i);
            return 1;
        }
        size_t u = malloc_usable_size(q);
        if (u > max_usable)
            max_usable = u;
        keep[i] = q;
    }
    long growth = kt_rss_kib() - before;
    for (int i = 0; i < NREADS; i++)
        free(keep[i]);
    if (glibc_kib < 0) {
        printf("%ld\n", growth);
        return 0;
    }
    /* The smallest class that holds 10 bytes is 16 bytes. */
    int ok = max_usable <= 16 && growth <= glibc_kib * 3 / 2 + 256;
    printf("%s - 20000 blocks of 32 KiB shrunk to 10 bytes: usable size at most %zu "
           "(want <= 16), RSS grew %ld KiB (C library %ld KiB; want <= 1.5x + 256)\n",
           ok ? "ok" : "not ok", max_usable, growth, glibc_kib);
    return !ok;
}

#define ROUNDS 20

static int cycles_mode(long glibc_faults)
{
    static const size_t sizes[3] = {13u << 20, 17u << 20, 64u << 20};
    long start = 0;
    size_t pages = 0;
    long page = sysconf(_SC_PAGESIZE);
    for (int r = 0; r < ROUNDS; r++) {
        if (r == 1)
            start = minor_faults();
        char *b[3];
        for (int i = 0; i < 3; i++) {
            b[i] = malloc(sizes[i]);
            if (!b[i]) {
                printf("not ok - cycles: malloc of %zu failed\n", sizes[i]);
                return 1;
            }
            for (size_t o = 0; o < sizes[i]; o += (size_t)page)
                b[i][o] = (char)r;
            if (r == 1)
                pages += sizes[i] / (size_t)page;
        }
        for (int i = 3; i-- > 0;)
            free(b[i]);
    }
    long faults = minor_faults() - start;
    if (glibc_faults < 0) {
        printf("%ld\n", faults);
        return 0;
    }
    /* Rounds after the first reuse the pages of the first: a fault per 100
     * pages written would be churn (before the decay rule, kheap purged
     * and faulted back 17 MB or more a round). */
    long limit = (long)(pages * (ROUNDS - 1) / 100);
    int ok = faults <= limit && faults <= glibc_faults * 3 / 2 + 1000;
    printf("%s - %d rounds of 13+17+64 MB written and freed: %ld minor faults after the first "
           "(C library %ld; want <= %ld and <= 1.5x the C library's)\n",
           ok ? "ok" : "not ok", ROUNDS, faults, glibc_faults, limit);
    return !ok;
}

int main(int argc, char **argv)
{
    long figure = argc > 2 ? atol(argv[2]) : -1;
    if (argc > 1 && !strcmp(argv[1], "realloc"))
        return realloc_mode(figure);
    if (argc > 1 && !strcmp(argv[1], "cycles"))
        return cycles_mode(figure);
    fprintf(stderr, "usage: shrink realloc|cycles [C library figure]\n");
    return 2;
}
