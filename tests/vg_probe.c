/*
 * vg_probe.c - proves that memcheck sees kheap objects (KHEAP_VALGRIND=1
 * build): it leaks one object and reads one freed object on purpose. The
 * runner checks that valgrind reports exactly those (tests/run.sh).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>

#include "harness.h"

/* In a function of its own so no register or live stack slot of main
 * keeps the pointer. */
static __attribute__((noinline)) void leak_one(kheap_t *h)
{
    char *leak = kheap_alloc(h, 100);
    memset(leak, 1, 100);
}

static __attribute__((noinline)) void scrub_stack(void)
{
    volatile char junk[4096];
    memset((char *)junk, 0, sizeof junk);
}

int main(void)
{
    size_t bytes = 1u << 20;
    void *mem = kt_map(bytes);
    kheap_t *h;
    if (!mem || kheap_init(&h, mem, bytes))
        return 2;
    /* The region's first page address is in the region table, a pointer
     * memcheck would follow: keep the leak off that page. */
    void *first = kheap_alloc(h, 100000);
    leak_one(h); /* lost: memcheck must call it definitely lost */
    scrub_stack();
    char *gone = kheap_alloc(h, 64);
    memset(gone, 2, 64);
    kheap_free(h, gone);
    volatile char c = gone[40]; /* use after free: an invalid read */
    (void)c;
    char *big = kheap_alloc(h, 100000);
    kheap_free(h, big);
    volatile char d = big[5000]; /* use after free of a large block */
    (void)d;
    kheap_free(h, first);
    printf("probe done\n");
    return 0;
}
