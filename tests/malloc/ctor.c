/*
 * ctor.c - malloc before any constructor runs: from a constructor(101) of
 * the program and of a preloaded library (ctorlib.so), with dlsym calls
 * in between. Run under LD_PRELOAD="libkheap.so ctorlib.so".
 */
#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static char *early;
static int early_ok;

__attribute__((constructor(101))) static void program_start(void)
{
    early = malloc(64);
    if (!early)
        return;
    strcpy(early, "program constructor");
    void *p = dlsym(RTLD_DEFAULT, "malloc");
    void *q = realloc(malloc(10), 5000);
    early_ok = p != NULL && q != NULL && malloc_usable_size(q) >= 5000;
    free(q);
}

TEST(program_constructor_allocates)
{
    CHECK(early_ok, "the program's constructor(101) could not allocate or dlsym");
    CHECK(strcmp(early, "program constructor") == 0, "early block changed: %s", early);
    free(early);
}

TEST(preloaded_library_constructor_allocates)
{
    int *state = dlsym(RTLD_DEFAULT, "ctorlib_state");
    char **block = dlsym(RTLD_DEFAULT, "ctorlib_block");
    CHECK(state && block, "ctorlib.so is not loaded (run with LD_PRELOAD)");
    CHECK(*state == 1, "ctorlib's constructor failed at step %d", *state);
    CHECK(strcmp(*block, "allocated before main") == 0, "ctorlib's block changed: %s", *block);
    free(*block);
}

TEST(malloc_is_kheap)
{
    Dl_info info;
    void *(*volatile fn)(size_t) = malloc;
    CHECK(dladdr((void *)fn, &info) && info.dli_fname && strstr(info.dli_fname, "libkheap.so"),
          "malloc comes from %s", info.dli_fname ? info.dli_fname : "?");
}

int main(void)
{
    RUN(program_constructor_allocates);
    RUN(preloaded_library_constructor_allocates);
    RUN(malloc_is_kheap);
    return harness_done();
}
