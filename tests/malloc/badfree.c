/*
 * badfree.c - a program that frees a pointer it does not own. Prints the
 * address it frees on stdout first; tests/malloc/run.sh checks that the
 * process aborts and that kheap's message names that address.
 * Argument: "interior" (a block's address + 16), "foreign" (the address
 * of a local variable) or "double" (a small block freed twice).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    const char *how = argc > 1 ? argv[1] : "interior";
    char local[32];
    char *p = malloc(100);
    char *bad = p + 16;
    if (strcmp(how, "foreign") == 0)
        bad = local;
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
