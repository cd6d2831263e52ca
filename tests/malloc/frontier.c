/*
 * frontier.c - libkheap.so's 64 GiB reservation stays inaccessible where
 * the heap has not used it (KHEAP_PORT_COMMIT): a block's address plus
 * 4 GiB lies inside the reservation, in a mapping with no access, and a
 * write there faults (in a child: SIGSEGV) instead of landing in memory
 * the heap would hand out later; blocks of every size written whole do
 * not. Heap memory is never executable: blocks of every size, and the
 * memory of a grown heap, lie in mappings without x. Run under LD_PRELOAD
 * of libkheap.so (tests/malloc/run.sh).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define FAR ((uintptr_t)4 << 30)

/* The permissions and bounds of the mapping holding addr, from
 * /proc/self/maps; 0 if none holds it. */
static int mapping_of(uintptr_t addr, char perms[5], uintptr_t *lo, uintptr_t *hi)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return 0;
    char line[512];
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) {
        unsigned long a, b;
        if (sscanf(line, "%lx-%lx %4s", &a, &b, perms) == 3 && addr >= a && addr < b) {
            *lo = a;
            *hi = b;
            found = 1;
        }
    }
    fclose(f);
    return found;
}

TEST(far_write_into_the_reservation_faults)
{
    unsigned char *p = malloc(64);
    CHECK(p != NULL, "malloc(64)%s", "");
    /* Some use first: slabs, a large block, all written. */
    void *keep[64];
    for (int i = 0; i < 64; i++) {
        size_t n = (size_t)1 << (4 + i % 18);
        keep[i] = malloc(n);
        CHECK(keep[i] != NULL, "malloc(%zu)", n);
        memset(keep[i], i, n);
    }
    char perms[5] = "", far_perms[5] = "";
    uintptr_t lo = 0, hi = 0, flo = 0, fhi = 0;
    CHECK(mapping_of((uintptr_t)p, perms, &lo, &hi), "no mapping holds %p", (void *)p);
    uintptr_t far = (uintptr_t)p + FAR;
    int in = mapping_of(far, far_perms, &flo, &fhi);
    printf("# block %p in %lx-%lx %s; +4 GiB in %lx-%lx %s\n", (void *)p, (unsigned long)lo,
           (unsigned long)hi, perms, (unsigned long)flo, (unsigned long)fhi,
           in ? far_perms : "(none)");
    CHECK(in && !strcmp(far_perms, "---p"),
          "4 GiB past a block is %s, not address space with no access",
          in ? far_perms : "unmapped");
    int st = kt_child_write((volatile unsigned char *)far);
    CHECK(kt_faulted(st),
          "a write 4 GiB past a block did not fault (status %#x)", st);
    for (int i = 0; i < 64; i++)
        free(keep[i]);
    free(p);
}

TEST(heap_memory_is_never_executable)
{
    static const size_t sizes[] = {0, 32, 3000, 40000, 300000, (size_t)8 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        void *p = malloc(sizes[i]);
        CHECK(p != NULL, "malloc(%zu)", sizes[i]);
        char perms[5] = "";
        uintptr_t lo = 0, hi = 0;
        CHECK(mapping_of((uintptr_t)p, perms, &lo, &hi), "no mapping holds %p", p);
        CHECK(perms[2] != 'x', "a block of %zu bytes at %p is in %lx-%lx %s", sizes[i], p,
              (unsigned long)lo, (unsigned long)hi, perms);
        free(p);
    }
}

int main(void)
{
    RUN(far_write_into_the_reservation_faults);
    RUN(heap_memory_is_never_executable);
    return harness_done();
}
