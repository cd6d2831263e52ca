/*
 * malloc.c - the hosted malloc shim: the C and POSIX allocation API over
 * kheap's default heap, built into libkheap.so (LD_PRELOAD it, or link
 * with -lkheap).
 *
 * malloc and free are the default heap's inline hit paths
 * (kh_default_alloc / kh_default_free, src/core/kh_fast.h); every other call
 * goes through the public kheap_* API on kheap_default(). The default
 * heap sets itself up on its first allocation, whoever makes it (the
 * dynamic loader, a constructor of any priority, dlsym), so there is no
 * initialisation order to get right; this file's constructor only reads
 * the environment.
 *
 * Sizes: glibc promises 16-byte alignment (alignof(max_align_t)) for every
 * block, and kheap aligns a block to the largest power of two dividing its
 * class, so requests up to KHEAP_MAX_CLASS are rounded up to a multiple of
 * 16 (every such class is a multiple of 16, see docs/SIZE_CLASSES.md);
 * larger blocks are page-aligned runs. Alignments above 16 go to
 * kheap_alloc_aligned.
 *
 * Errors: every NULL return sets errno to ENOMEM, except the EINVAL cases
 * POSIX names. A bad pointer (foreign, interior, double free) is reported
 * by the hosted port, which names the address and aborts, as glibc does.
 *
 * Threads and fork: per-thread slots, their reentrancy guard and the fork
 * handlers are the hosted port's (src/port/hosted.c).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "kh_fast.h"

#define KH_EXPORT __attribute__((visibility("default")))

/* C23's, not yet in every libc's headers. */
void free_sized(void *p, size_t size);
void free_aligned_sized(void *p, size_t align, size_t size);

/* The alignment every block gets: what glibc gives on the same target. */
#define MALLOC_ALIGN ((size_t)_Alignof(max_align_t))
_Static_assert(MALLOC_ALIGN <= 16 && (16 % MALLOC_ALIGN) == 0,
               "classes that are multiples of 16 cover the malloc alignment");

/* Requests the classes serve are rounded to 16, so their class is a
 * multiple of 16 and its blocks 16-aligned; large blocks are page runs.
 * Never overflows: sizes near SIZE_MAX are not rounded. */
static inline size_t round_size(size_t n)
{
    return n <= KHEAP_MAX_CLASS ? (n + 15) & ~(size_t)15 : n;
}

static inline void *nomem(void)
{
    errno = ENOMEM;
    return NULL;
}

KH_EXPORT void *malloc(size_t n)
{
    void *p = kh_default_alloc(round_size(n));
    if (kh_unlikely(!p))
        return nomem();
    return p;
}

KH_EXPORT void free(void *p)
{
    kh_default_free(p);
}

/* C23: the size and alignment only restate what kheap knows. */
KH_EXPORT void free_sized(void *p, size_t size)
{
    (void)size;
    kh_default_free(p);
}

KH_EXPORT void free_aligned_sized(void *p, size_t align, size_t size)
{
    (void)align;
    (void)size;
    kh_default_free(p);
}

KH_EXPORT void *calloc(size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        return nomem();
    void *p = kheap_calloc(kheap_default(), 1, round_size(n * size));
    return p ? p : nomem();
}

/* glibc's rules: realloc(NULL, n) is malloc(n); realloc(p, 0) frees p and
 * returns NULL; on failure p is left as it was. */
KH_EXPORT void *realloc(void *p, size_t n)
{
    if (!p)
        return malloc(n);
    if (n == 0) {
        kh_default_free(p);
        return NULL;
    }
    void *q = kheap_realloc(kheap_default(), p, round_size(n));
    return q ? q : nomem();
}

KH_EXPORT void *reallocarray(void *p, size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        return nomem();
    return realloc(p, n * size);
}

/* A block of n bytes aligned to align (a power of two). */
static void *aligned(size_t align, size_t n)
{
    if (align <= MALLOC_ALIGN)
        return malloc(n);
    void *p = kheap_alloc_aligned(kheap_default(), round_size(n), align);
    return p ? p : nomem();
}

static inline int pow2(size_t x)
{
    return x && !(x & (x - 1));
}

KH_EXPORT int posix_memalign(void **out, size_t align, size_t n)
{
    if (!pow2(align) || align % sizeof(void *))
        return EINVAL;
    int saved = errno;
    void *p = aligned(align, n);
    if (!p) {
        errno = saved; /* POSIX: the error is the return value */
        return ENOMEM;
    }
    *out = p;
    return 0;
}

/* C11; glibc accepts any power of two (and 0, as the default). */
KH_EXPORT void *aligned_alloc(size_t align, size_t n)
{
    if (align && !pow2(align)) {
        errno = EINVAL;
        return NULL;
    }
    return aligned(align, n);
}

/* glibc's memalign rounds an alignment that is not a power of two up to
 * one, and refuses one above half the address space. */
KH_EXPORT void *memalign(size_t align, size_t n)
{
    if (align <= MALLOC_ALIGN)
        return malloc(n);
    if (align > SIZE_MAX / 2 + 1) {
        errno = EINVAL;
        return NULL;
    }
    if (!pow2(align))
        align = (size_t)1 << (kh_log2(align) + 1);
    return aligned(align, n);
}

KH_EXPORT void *valloc(size_t n)
{
    return aligned(KHEAP_PAGE_SIZE, n);
}

/* Page-aligned, the size rounded up to whole pages (0 gives one page). */
KH_EXPORT void *pvalloc(size_t n)
{
    if (n > SIZE_MAX - KHEAP_PAGE_SIZE)
        return nomem();
    size_t pages = n ? (n + KHEAP_PAGE_SIZE - 1) / KHEAP_PAGE_SIZE : 1;
    return aligned(KHEAP_PAGE_SIZE, pages * KHEAP_PAGE_SIZE);
}

KH_EXPORT size_t malloc_usable_size(void *p)
{
    return p ? kheap_usable_size(kheap_default(), p) : 0;
}

/* ------------------------------------------------------------------ */
/* Environment: KHEAP_STATS=1 prints the statistics and slabinfo on
 * stderr at exit; KHEAP_VERBOSE=1 says at start where the heap is.
 * Output goes straight to file descriptor 2 from a static buffer: no
 * stdio, no allocation, so it works whatever state the program is in. */

static char report_buf[1 << 16];

/* Where the exit report goes: a copy of stderr made at start, because
 * some programs close stderr before they exit (coreutils do). */
static int report_fd = 2;

static void put_err(const char *s, size_t n)
{
    while (n) {
        ssize_t w = write(report_fd, s, n);
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

static size_t bounded(size_t need)
{
    return need < sizeof report_buf - 1 ? need : sizeof report_buf - 1;
}

static int env_on(const char *name)
{
    const char *v = getenv(name);
    return v && *v && *v != '0';
}

static int stats_at_exit;

__attribute__((constructor)) static void shim_start(void)
{
    stats_at_exit = env_on("KHEAP_STATS");
    if (stats_at_exit) {
        int fd = fcntl(2, F_DUPFD_CLOEXEC, 3);
        if (fd >= 0)
            report_fd = fd;
    }
    if (env_on("KHEAP_VERBOSE")) {
        kheap_t *h = kheap_default();
        struct kheap_stats s;
        kheap_get_stats(h, &s);
        int n = snprintf(report_buf, sizeof report_buf,
                         "kheap: libkheap.so: default heap %p, %zu MiB in %zu region(s) "
                         "(%zu pages), page size %zu, %u per-thread slots\n",
                         (void *)h, (size_t)(s.heap_total >> 20), (size_t)s.region_count,
                         s.heap_total / KHEAP_PAGE_SIZE, (size_t)KHEAP_PAGE_SIZE,
                         (unsigned)KHEAP_MAX_CPUS);
        if (n > 0)
            put_err(report_buf, bounded((size_t)n));
    }
}

__attribute__((destructor)) static void shim_end(void)
{
    if (!stats_at_exit)
        return;
    kheap_t *h = kheap_default();
    put_err("kheap: statistics at exit\n", 26);
    size_t n = kheap_format_stats(h, report_buf, sizeof report_buf);
    put_err(report_buf, bounded(n));
    put_err("kheap: slabinfo at exit\n", 24);
    n = bounded(kheap_format_slabinfo(h, report_buf, sizeof report_buf, false));
    put_err(report_buf, n);
    if (n && report_buf[n - 1] != '\n')
        put_err("\n", 1);
}
