/*
 * ctorlib.c - a library preloaded after libkheap.so whose constructor
 * allocates, frees and calls dlsym before any constructor of the program
 * runs. ctor.c checks what it saw.
 */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

/* Set by the constructor: 1 all went well, else a negative step number. */
int ctorlib_state;
void *ctorlib_block;

__attribute__((constructor(101))) static void ctorlib_start(void)
{
    char *p = malloc(100);
    if (!p) {
        ctorlib_state = -1;
        return;
    }
    strcpy(p, "allocated before main");
    void *sym = dlsym(RTLD_DEFAULT, "free"); /* dlsym may allocate */
    void *next = dlsym(RTLD_NEXT, "malloc");
    if (!sym || !next) {
        ctorlib_state = -2;
        return;
    }
    void *q = calloc(3, 1000);
    free(q);
    ctorlib_block = p; /* freed by the program */
    ctorlib_state = 1;
}
