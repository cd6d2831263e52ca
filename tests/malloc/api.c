/*
 * api.c - the malloc API of libkheap.so, linked with -lkheap: every
 * function's result, alignment, errno and edge cases, against what glibc
 * documents for the same call.
 */
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

void free_sized(void *p, size_t size);
void free_aligned_sized(void *p, size_t align, size_t size);

/* Keep the compiler from folding calls whose result it thinks it knows. */
static size_t volatile opaque_zero;
static size_t big(size_t n)
{
    return n + opaque_zero;
}

TEST(malloc_comes_from_libkheap)
{
    Dl_info info;
    void *(*volatile fn)(size_t) = malloc;
    CHECK(dladdr((void *)fn, &info) && info.dli_fname, "dladdr found no object for malloc");
    CHECK(strstr(info.dli_fname, "libkheap.so") != NULL, "malloc comes from %s",
          info.dli_fname);
}

TEST(malloc_sizes_aligned_usable)
{
    for (size_t n = 0; n <= 70000; n += n < 256 ? 1 : n < 4096 ? 7 : 997) {
        unsigned char *p = malloc(big(n));
        CHECK(p != NULL, "malloc(%zu) failed", n);
        CHECK(((uintptr_t)p & 15) == 0, "malloc(%zu) = %p is not 16-aligned", n, (void *)p);
        size_t u = malloc_usable_size(p);
        CHECK(u >= n, "malloc_usable_size(malloc(%zu)) = %zu", n, u);
        memset(p, 0xa5, u);
        free(p);
    }
}

TEST(malloc_huge_fails_with_enomem)
{
    size_t sizes[] = {SIZE_MAX, SIZE_MAX - 15, SIZE_MAX / 2, (size_t)1 << 50};
    for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        errno = 0;
        void *p = malloc(big(sizes[i]));
        CHECK(p == NULL && errno == ENOMEM, "malloc(%zu) = %p, errno %d", sizes[i], p, errno);
    }
    free(NULL);
}

TEST(calloc_zeroes_and_checks_overflow)
{
    for (size_t n = 1; n < 200000; n = n * 3 + 1) {
        unsigned char *p = malloc(big(n));
        CHECK(p != NULL, "malloc(%zu)", n);
        memset(p, 0xff, n);
        free(p);
        unsigned char *q = calloc(big(n), 1);
        CHECK(q != NULL, "calloc(%zu, 1)", n);
        for (size_t i = 0; i < n; i++)
            CHECK(q[i] == 0, "calloc(%zu, 1)[%zu] = %#x", n, i, q[i]);
        free(q);
    }
    errno = 0;
    void *p = calloc(big(SIZE_MAX / 2), 3);
    CHECK(p == NULL && errno == ENOMEM, "calloc overflow = %p errno %d", p, errno);
    errno = 0;
    p = calloc(big((size_t)1 << 33), (size_t)1 << 33);
    CHECK(p == NULL && errno == ENOMEM, "calloc 2^33 x 2^33 = %p errno %d", p, errno);
    p = calloc(0, big(0));
    CHECK(p != NULL, "calloc(0, 0) returned NULL");
    free(p);
}

TEST(realloc_as_glibc)
{
    char *p = realloc(NULL, big(10));
    CHECK(p != NULL, "realloc(NULL, 10)");
    memcpy(p, "kheap-123", 10);
    for (size_t n = 16; n < 300000; n = n * 2 + 3) {
        p = realloc(p, big(n));
        CHECK(p != NULL && ((uintptr_t)p & 15) == 0, "realloc to %zu = %p", n, (void *)p);
        CHECK(memcmp(p, "kheap-123", 10) == 0, "realloc to %zu lost the contents", n);
    }
    p = realloc(p, big(12));
    CHECK(p != NULL && memcmp(p, "kheap-123", 10) == 0, "shrink lost the contents");
    errno = 0;
    char *q = realloc(p, big(SIZE_MAX - 4096));
    CHECK(q == NULL && errno == ENOMEM, "huge realloc = %p errno %d", (void *)q, errno);
    CHECK(memcmp(p, "kheap-123", 10) == 0, "failed realloc changed the block");
    q = realloc(p, big(0));
    CHECK(q == NULL, "realloc(p, 0) = %p, glibc frees and returns NULL", (void *)q);
}

/* A block shrunk by realloc keeps no more than a new block of the new
 * size would have: a slab block moves to the smaller class, a large one
 * to its class or to fewer pages. */
TEST(realloc_shrink_keeps_only_the_new_size)
{
    for (size_t n = 24; n <= 100000; n += n / 3 + 5) {
        size_t to[] = {1, n / 4, n / 2 + 1, n - 1};
        for (unsigned k = 0; k < sizeof to / sizeof to[0]; k++) {
            size_t m = to[k] ? to[k] : 1;
            unsigned char *p = malloc(big(n));
            CHECK(p != NULL, "malloc(%zu) failed", n);
            for (size_t i = 0; i < n; i++)
                p[i] = (unsigned char)(i * 7 + n);
            unsigned char *q = realloc(p, big(m));
            CHECK(q != NULL, "realloc(%zu -> %zu) failed", n, m);
            size_t bad = m;
            for (size_t i = 0; i < m && bad == m; i++)
                if (q[i] != (unsigned char)(i * 7 + n))
                    bad = i;
            CHECK(bad == m, "realloc(%zu -> %zu) lost byte %zu", n, m, bad);
            void *f = malloc(big(m));
            CHECK(f != NULL, "malloc(%zu) failed", m);
            CHECK(malloc_usable_size(q) <= malloc_usable_size(f),
                  "realloc(%zu -> %zu) keeps %zu usable bytes; malloc(%zu) has %zu", n, m,
                  malloc_usable_size(q), m, malloc_usable_size(f));
            free(f);
            free(q);
        }
    }
}

TEST(reallocarray_checks_overflow)
{
    int *p = reallocarray(NULL, big(100), sizeof(int));
    CHECK(p != NULL, "reallocarray(NULL, 100, 4)");
    p[99] = 7;
    p = reallocarray(p, big(1000), sizeof(int));
    CHECK(p != NULL && p[99] == 7, "reallocarray grow");
    errno = 0;
    int *q = reallocarray(p, big(SIZE_MAX / 2), 4);
    CHECK(q == NULL && errno == ENOMEM, "reallocarray overflow = %p errno %d", (void *)q, errno);
    CHECK(p[99] == 7, "failed reallocarray changed the block");
    free(p);
}

TEST(posix_memalign_rules)
{
    void *p = (void *)0x1;
    size_t bad[] = {0, 1, 2, 4, 12, 24, 48, 3 * sizeof(void *)};
    for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (bad[i] >= sizeof(void *) && !(bad[i] & (bad[i] - 1)))
            continue;
        int rc = posix_memalign(&p, bad[i], 16);
        CHECK(rc == EINVAL && p == (void *)0x1, "posix_memalign(align %zu) = %d", bad[i], rc);
    }
    for (size_t a = sizeof(void *); a <= ((size_t)1 << 22); a <<= 1) {
        for (size_t n = 0; n < 100000; n = n * 5 + 1) {
            int rc = posix_memalign(&p, a, big(n));
            CHECK(rc == 0 && ((uintptr_t)p & (a - 1)) == 0, "posix_memalign(%zu, %zu) = %d, %p",
                  a, n, rc, p);
            CHECK(malloc_usable_size(p) >= n, "usable %zu < %zu", malloc_usable_size(p), n);
            memset(p, 1, n);
            free(p);
        }
    }
    p = (void *)0x1;
    int rc = posix_memalign(&p, 64, big(SIZE_MAX - 100));
    CHECK(rc == ENOMEM && p == (void *)0x1, "huge posix_memalign = %d", rc);
}

TEST(aligned_alloc_memalign_valloc_pvalloc)
{
    long page = sysconf(_SC_PAGESIZE);
    for (size_t a = 1; a <= 65536; a <<= 1) {
        void *p = aligned_alloc(a, big(a * 3));
        CHECK(p && ((uintptr_t)p & (a - 1)) == 0, "aligned_alloc(%zu) = %p", a, p);
        free(p);
        p = memalign(a, big(100));
        CHECK(p && ((uintptr_t)p & (a - 1)) == 0, "memalign(%zu) = %p", a, p);
        free(p);
    }
    errno = 0;
    void *p = aligned_alloc(big(24), 10);
    CHECK(p == NULL && errno == EINVAL, "aligned_alloc(24) = %p errno %d", p, errno);
    p = memalign(big(24), 10); /* glibc rounds the alignment up to 32 */
    CHECK(p && ((uintptr_t)p & 31) == 0, "memalign(24) = %p", p);
    free(p);
    errno = 0;
    p = memalign(big(SIZE_MAX / 2 + 2), 10);
    CHECK(p == NULL && errno == EINVAL, "memalign(huge) = %p errno %d", p, errno);
    p = valloc(big(10));
    CHECK(p && ((uintptr_t)p & (size_t)(page - 1)) == 0, "valloc = %p", p);
    free(p);
    p = pvalloc(big(0));
    CHECK(p && ((uintptr_t)p & (size_t)(page - 1)) == 0 && malloc_usable_size(p) >= (size_t)page,
          "pvalloc(0) = %p usable %zu", p, p ? malloc_usable_size(p) : 0);
    free(p);
    p = pvalloc(big((size_t)page + 1));
    CHECK(p && malloc_usable_size(p) >= 2 * (size_t)page, "pvalloc(page+1) usable %zu",
          p ? malloc_usable_size(p) : 0);
    free(p);
    errno = 0;
    p = pvalloc(big(SIZE_MAX - 10));
    CHECK(p == NULL && errno == ENOMEM, "pvalloc(huge) = %p errno %d", p, errno);
}

TEST(usable_size_and_sized_frees)
{
    CHECK(malloc_usable_size(NULL) == 0, "malloc_usable_size(NULL) = %zu",
          malloc_usable_size(NULL));
    for (size_t n = 1; n < 1 << 20; n = n * 2 + 1) {
        void *p = malloc(big(n));
        size_t u = malloc_usable_size(p);
        CHECK(u >= n && u <= n + n / 8 + 4096, "usable size %zu for %zu", u, n);
        free_sized(p, n);
        p = aligned_alloc(256, big(n));
        CHECK(p != NULL, "aligned_alloc(256, %zu)", n);
        free_aligned_sized(p, 256, n);
    }
    /* free_sized takes the size realloc gave (also when the block stayed
     * where it was, in a larger class) and calloc's product: libkheap.so
     * would report and abort on a size it takes for the wrong one. */
    for (size_t n = 1; n <= 70000; n += n / 4 + 7) {
        void *p = malloc(n);
        void *q = realloc(p, n / 2 + 1);
        CHECK(q != NULL, "realloc(%zu -> %zu)", n, n / 2 + 1);
        free_sized(q, n / 2 + 1);
        q = calloc(n, 3);
        CHECK(q != NULL, "calloc(%zu, 3)", n);
        free_sized(q, n * 3);
    }
}

int main(void)
{
    RUN(malloc_comes_from_libkheap);
    RUN(malloc_sizes_aligned_usable);
    RUN(malloc_huge_fails_with_enomem);
    RUN(calloc_zeroes_and_checks_overflow);
    RUN(realloc_as_glibc);
    RUN(realloc_shrink_keeps_only_the_new_size);
    RUN(reallocarray_checks_overflow);
    RUN(posix_memalign_rules);
    RUN(aligned_alloc_memalign_valloc_pvalloc);
    RUN(usable_size_and_sized_frees);
    return harness_done();
}
