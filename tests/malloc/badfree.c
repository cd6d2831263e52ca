/*
 * badfree.c - a program that frees a pointer it does not own. Prints the
 * address it frees on stdout first; tests/malloc/run.sh checks that the
 * process aborts and that kheap's message names that address.
 * Argument: "interior" (a block's address + 16), "foreign" (the address
 * of a local variable), "static" (of a static one), "alloca" (of alloca's
 * memory), "unaligned" (a block's address + 1), "far" (1 TiB past a
 * block), "unmapped" (a page mapped and unmapped again) or "double" (a
 * small block freed twice).
 */
#include <alloca.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static char in_data[64];

int main(int argc, char **argv)
{
    const char *how = argc > 1 ? argv[1] : "interior";
    char local[32];
    char *volatile on_stack = alloca(48);
    char *p = malloc(100);
    char *bad = p + 16;
    if (strcmp(how, "foreign") == 0)
        bad = local;
    if (strcmp(how, "static") == 0)
        bad = in_data;
    if (strcmp(how, "alloca") == 0)
        bad = on_stack;
    if (strcmp(how, "unaligned") == 0)
        bad = p + 1;
    if (strcmp(how, "far") == 0)
        bad = (char *)((uintptr_t)p + ((uintptr_t)1 << 40));
    if (strcmp(how, "unmapped") == 0) {
        bad = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        munmap(bad, 4096);
    }
    if (strcmp(how, "double") == 0) {
        bad = p;
        free(p);
    }
    printf("%p\n", (void *)bad);
    fflush(stdout);
    free(bad);
    printf("free returned\n");
    return 0;
}
