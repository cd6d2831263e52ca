/*
 * misuse - one heap misuse per run, for the table of what each malloc
 * finds (tests/malloc/run.sh runs it under glibc, libkheap.so and
 * libkheap-debug.so).
 *   misuse CASE
 * Does the misuse, then ends normally: a malloc that finds it reports and
 * aborts first. Prints "survived" when nothing stopped it. The C++ cases
 * and free_sized call the functions by their symbols, found at run time
 * (skipped, exit 77, when no library defines them).
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every case is a misuse on purpose. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic ignored "-Wuse-after-free"
#endif

/* Out of the compiler's sight, so it cannot drop or warn about them. */
static void *volatile sink;
/* memcpy called as a program calls it, not expanded inline. */
static void *(*volatile copy)(void *, const void *, size_t) = memcpy;
static void *launder(void *p)
{
    void *volatile v = p;
    return v;
}
static void poke(void *p, long off, int v)
{
    ((volatile unsigned char *)p)[off] = (unsigned char)v;
}
static int peek(const void *p, long off)
{
    return ((const volatile unsigned char *)p)[off];
}

/* Frees and allocations enough to push a block out of a quarantine. */
static void churn(void)
{
    for (int i = 0; i < 4096; i++) {
        void *p = launder(malloc(48 + (size_t)(i % 7) * 16));
        sink = p;
        free(p);
    }
}

/* A free on another thread, while the first free of the block sits in
 * this thread's magazine. */
static void *free_there(void *p)
{
    free(p);
    return NULL;
}

/* Big enough to run 1 MiB past a 300000-byte block. */
static char big[300000 + (1 << 20)];

/* The overflows and underflows: a block of size bytes written len bytes
 * from offset at (negative: before it), by memcpy or a byte at a time. */
static const struct bad_write {
    const char *name;
    size_t size;
    long at;
    size_t len;
    int by_copy;
} bad_writes[] = {
    {"overflow-1", 24, 24, 1, 0},
    {"overflow-32-memcpy", 100, 0, 132, 1},
    {"overflow-medium", 3000, 3000, 1, 0},
    {"overflow-32-medium", 3000, 0, 3000 + 32, 1},
    {"overflow-large", 300000, 300000, 1, 0},
    {"overflow-32-large", 300000, 0, 300000 + 32, 1},
    {"overflow-1mib-large", 300000, 0, sizeof big, 1},
    {"underflow-1", 40, -1, 1, 0},
    {"underflow-medium", 3000, -1, 1, 0},
    {"underflow-large", 300000, -1, 1, 0},
    {"underflow-large-13", 300000, -13, 13, 0},
};

typedef void *(*new_fn)(size_t);
typedef void (*del_fn)(void *);
typedef void (*sdel_fn)(void *, size_t);
static void *sym(const char *name)
{
    void *f = dlsym(RTLD_DEFAULT, name);
    if (!f) {
        printf("skip: no %s\n", name);
        exit(77);
    }
    return f;
}
#if __SIZEOF_SIZE_T__ == 8
#define SZ "m"
#else
#define SZ "j"
#endif

int main(int argc, char **argv)
{
    const char *c = argc > 1 ? argv[1] : "";
    memset(big, 'x', sizeof big);
    /* Writes past the end of a block or before its start (table above). */
    for (size_t i = 0; i < sizeof bad_writes / sizeof *bad_writes; i++) {
        const struct bad_write *w = &bad_writes[i];
        if (strcmp(c, w->name))
            continue;
        char *p = launder(malloc(w->size));
        if (w->by_copy)
            sink = copy(p + w->at, big, w->len);
        else
            for (size_t k = 0; k < w->len; k++)
                poke(p, w->at + (long)k, 1);
        free(p);
        printf("survived\n");
        return 0;
    }
    if (!strcmp(c, "use-after-free-write")) {
        char *p = launder(malloc(64)), *stale = launder(p);
        free(p);
        poke(stale, 8, 1);
        churn();
    } else if (!strcmp(c, "use-after-free-write-realloc") ||
               !strcmp(c, "use-after-free-write-realloc-smaller") ||
               !strcmp(c, "use-after-free-write-realloc-moved")) {
        /* realloc to the same size, a smaller one, or one it must move for */
        char *p = launder(malloc(64)), *stale = launder(p);
        char *q = realloc(p, strstr(c, "smaller") ? 24 : strstr(c, "moved") ? 64 * 1024 : 64);
        sink = q;
        if (q != stale)
            poke(stale, 20, 1); /* the old block, which realloc let go */
        churn();
        free(q);
    } else if (!strcmp(c, "use-after-free-write-medium")) {
        char *p = launder(malloc(3000)), *stale = launder(p);
        free(p);
        poke(stale, 1000, 1);
        churn();
    } else if (!strcmp(c, "use-after-free-read")) {
        char *p = launder(malloc(64)), *stale = launder(p);
        free(p);
        sink = (void *)(size_t)(unsigned char)*(volatile char *)(stale + 8);
        churn();
    } else if (!strcmp(c, "use-after-free-write-large")) {
        char *p = launder(malloc(200000)), *stale = launder(p);
        free(p);
        poke(stale, 100, 1);
        churn();
        for (int i = 0; i < 64; i++) {
            void *q = launder(malloc(200000));
            free(q);
        }
    } else if (!strcmp(c, "free-inside-freed-large")) {
        char *p = launder(malloc(300000)), *stale = launder(p);
        free(p);
        free(launder(stale + 8192)); /* a pointer into the freed block's pages */
    } else if (!strcmp(c, "use-after-free-read-large")) {
        char *p = launder(malloc(300000)), *stale = launder(p);
        free(p);
        sink = (void *)(size_t)(unsigned char)*(volatile char *)(stale + 150000);
        churn();
    } else if (!strcmp(c, "zero-size-write")) {
        char *p = launder(malloc(0));
        poke(p, 0, 1);
        free(p);
    } else if (!strcmp(c, "zero-size-read")) {
        char *p = launder(malloc(0));
        sink = (void *)(size_t)(unsigned char)*(volatile char *)p;
        free(p);
    } else if (!strcmp(c, "zero-size-write-after-free")) {
        char *p = launder(malloc(0));
        free(p);
        poke(p, 0, 1);
        churn();
    } else if (!strcmp(c, "zero-size-read-after-free")) {
        char *p = launder(malloc(0));
        free(p);
        sink = (void *)(size_t)(unsigned char)*(volatile char *)p;
        churn();
    } else if (!strcmp(c, "double-free")) {
        char *p = launder(malloc(32));
        free(p);
        free(launder(p));
    } else if (!strcmp(c, "double-free-delayed")) {
        char *p = launder(malloc(32));
        free(p);
        for (int i = 0; i < 100; i++)
            free(launder(malloc(32)));
        free(launder(p));
    } else if (!strcmp(c, "double-free-after-reuse")) {
        char *p = launder(malloc(32));
        free(p);
        void *q = launder(malloc(32));
        sink = q;
        free(launder(p));
    } else if (!strcmp(c, "double-free-interleaved")) {
        char *p = launder(malloc(32)), *q = launder(malloc(32));
        free(p);
        free(q);
        free(launder(p));
    } else if (!strcmp(c, "double-free-other-thread")) {
        char *p = launder(malloc(32));
        free(p);
        pthread_t t;
        if (pthread_create(&t, NULL, free_there, launder(p)) == 0)
            pthread_join(t, NULL);
    } else if (!strcmp(c, "double-free-cached-large")) {
        /* twice, so that a CPU's cache of large blocks holds the first
         * block of this page count when it is freed again */
        char *q = launder(malloc(100000));
        free(q);
        char *p = launder(malloc(100000));
        if (p != q) { /* the cache did not give it back: not the case */
            printf("the first block was not cached\n");
            return 3;
        }
        free(p);
        free(launder(p));
    } else if (!strcmp(c, "sized-delete-cached-large") ||
               !strcmp(c, "sized-delete-cached-wrong-size")) {
        /* C++ sized delete of a large block a CPU's cache of them takes
         * (its hit path): twice, the second a double free; or once with
         * a size of another page count. The block is cached first, as in
         * double-free-cached-large, so the cache holds its page count. */
        void *q = ((new_fn)sym("_Znw" SZ))(100000);
        ((sdel_fn)sym("_ZdlPv" SZ))(q, 100000);
        void *p = ((new_fn)sym("_Znw" SZ))(100000);
        if (p != q) {
            printf("the first block was not cached\n");
            return 3;
        }
        if (!strcmp(c, "sized-delete-cached-wrong-size")) {
            ((sdel_fn)sym("_ZdlPv" SZ))(p, 50000);
        } else {
            ((sdel_fn)sym("_ZdlPv" SZ))(p, 100000);
            ((sdel_fn)sym("_ZdlPv" SZ))(launder(p), 100000);
        }
    } else if (!strcmp(c, "double-free-large")) {
        char *p = launder(malloc(300000));
        free(p);
        free(launder(p));
    } else if (!strcmp(c, "new-array-delete")) {
        void *p = ((new_fn)sym("_Zna" SZ))(40);
        ((del_fn)sym("_ZdlPv"))(p);
    } else if (!strcmp(c, "new-delete-array")) {
        void *p = ((new_fn)sym("_Znw" SZ))(40);
        ((del_fn)sym("_ZdaPv"))(p);
    } else if (!strcmp(c, "malloc-delete")) {
        void *p = launder(malloc(40));
        ((del_fn)sym("_ZdlPv"))(p);
    } else if (!strcmp(c, "sized-delete-wrong-size")) {
        void *p = ((new_fn)sym("_Znw" SZ))(40);
        ((sdel_fn)sym("_ZdlPv" SZ))(p, 48);
    } else if (!strcmp(c, "sized-delete-other-class")) {
        void *p = ((new_fn)sym("_Znw" SZ))(40);
        ((sdel_fn)sym("_ZdlPv" SZ))(p, 200);
    } else if (!strcmp(c, "sized-delete-large")) {
        void *p = ((new_fn)sym("_Zna" SZ))(300000);
        ((sdel_fn)sym("_ZdaPv" SZ))(p, 100000);
    } else if (!strcmp(c, "free-sized-wrong-size")) {
        void *p = launder(malloc(100));
        ((void (*)(void *, size_t))sym("free_sized"))(p, 1000);
    } else if (!strcmp(c, "check-clean")) {
        /* No misuse: blocks of many sizes and alignments, live and freed
         * (quarantined), pass the whole-heap check. */
        void *keep[64];
        for (int i = 0; i < 64; i++) {
            size_t n = (size_t)(i * 977) % 70000;
            keep[i] = i % 4 == 3 ? aligned_alloc((size_t)64 << (i % 7), n + 1) : malloc(n);
            memset(keep[i], i, n);
            if (i % 3 == 0) {
                free(keep[i]);
                keep[i] = NULL;
            }
        }
        ((void (*)(void))sym("mcheck_check_all"))();
        for (int i = 0; i < 64; i++)
            free(keep[i]);
    } else if (!strcmp(c, "check-overflow") || !strcmp(c, "check-use-after-free")) {
        /* Found by a check of the whole heap (glibc's mcheck_check_all)
         * while the block lives or waits in the quarantine, before any
         * free or reuse of it. */
        char *p = launder(malloc(100));
        if (c[6] == 'o')
            poke(p, 100, 1);
        else {
            free(p);
            poke(p, 10, 1);
        }
        ((void (*)(void))sym("mcheck_check_all"))();
    } else if (!strcmp(c, "stale-data")) {
        /* Not a report: the next owner of freed memory must not see its
         * contents. Exit 3 if it does. */
        for (int i = 0; i < 64; i++) {
            char *p = launder(malloc(256));
            memset(p, 0x5c, 256);
            free(p);
            char *q = launder(malloc(256));
            for (int k = 16; k < 256; k++)
                if (peek(q, k) == 0x5c) {
                    printf("stale byte at %d\n", k);
                    return 3;
                }
            free(q);
        }
        printf("no stale data\n");
        return 0;
    } else {
        fprintf(stderr, "misuse: unknown case '%s'\n", c);
        return 2;
    }
    printf("survived\n");
    return 0;
}
