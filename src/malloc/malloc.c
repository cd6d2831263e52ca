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
 * POSIX names. A bad pointer (foreign, interior, double free), and a sized
 * free whose size cannot be the block's (sized_free), is reported by the
 * hosted port, which names the address and aborts, as glibc does.
 *
 * Threads and fork: per-thread slots, their reentrancy guard and the fork
 * handlers are the hosted port's (src/port/hosted.c).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <mcheck.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kh_fast.h"
#include "kheap_hosted.h"

#define KH_EXPORT __attribute__((visibility("default")))

/* C23's, not yet in every libc's headers. */
void free_sized(void *p, size_t size);
void free_aligned_sized(void *p, size_t align, size_t size);
/* jemalloc's, which no libc header declares (below). */
int mallctl(const char *name, void *oldp, size_t *oldlenp, void *newp, size_t newlen);
void malloc_stats_print(void (*write_cb)(void *, const char *), void *cbopaque, const char *opts);

/* The alignment every block gets: what glibc gives on the same target. */
#define MALLOC_ALIGN ((size_t)_Alignof(max_align_t))
_Static_assert(MALLOC_ALIGN <= 16 && (16 % MALLOC_ALIGN) == 0,
               "classes that are multiples of 16 cover the malloc alignment");

/* Requests the classes serve are rounded to 16, so their class is a
 * multiple of 16 and its blocks 16-aligned; large blocks are page runs.
 * Above 1 KiB every class is a multiple of 16 (of 128 with the default
 * 8 classes per doubling), so only requests up to 1 KiB need it: the one
 * compare also picks the hit path's direct[] branch (kh_hit_alloc), and
 * the rounding stays off the larger ones'.
 * Never overflows: sizes near SIZE_MAX are not rounded. */
#define ROUND_MAX (KHEAP_MAX_CLASS < KH_DIRECT_MAX ? KHEAP_MAX_CLASS : KH_DIRECT_MAX)
_Static_assert(KHEAP_MAX_CLASS <= 1024 || (1024 >> KHEAP_CLASS_SUB_SHIFT) % 16 == 0,
               "classes above 1 KiB are multiples of 16");
static inline size_t round_size(size_t n)
{
#if KHEAP_REDZONE
    return n; /* the debug blocks keep the exact size: a redzone follows */
#else
    return n <= ROUND_MAX ? (n + 15) & ~(size_t)15 : n;
#endif
}

static inline void *nomem(void)
{
    errno = ENOMEM;
    return NULL;
}

/* malloc's miss, errno included, out of line: the hit path then ends in
 * a tail call, and saves no register for the call's result. */
static kh_noinline void *malloc_slow(size_t n)
{
    void *p = kh_default_alloc_slow(n);
    return kh_likely(p != NULL) ? p : nomem();
}

KH_EXPORT void *malloc(size_t n)
{
    void *p;
    n = round_size(n);
    if (kh_likely(kh_hit_alloc(KH_DEFAULT_CPUS, &kh_default_window, n, &p)))
        return p;
    return malloc_slow(n);
}

KH_EXPORT void free(void *p)
{
    kh_default_free(p);
}

/* A sized free (C23's free_sized and free_aligned_sized, C++'s sized
 * deletes) of a block asked for with n bytes aligned to al (0: not
 * aligned): kheap_free_aligned_as, which reports a size the block cannot
 * have. It sees the sizes the allocation saw: rounded as round_size
 * rounds them, and an alignment only above MALLOC_ALIGN. A size of the
 * block's class (of a large block a CPU may cache: of its pages) takes
 * the hit path; the debug build checks the exact size. */
static inline __attribute__((always_inline)) void sized_free(void *p, size_t n, size_t al,
                                                              enum kheap_block_kind kind)
{
#if KHEAP_REDZONE
    kheap_free_aligned_as(kheap_default(), p, n, al, kind);
#else
    /* Sizes up to KH_DIRECT_MAX on a branch of their own: rounded, they
     * stay there, so the hit path's test of the size folds into this
     * one. */
    if (kh_likely(n <= KH_DIRECT_MAX && al <= MALLOC_ALIGN)) {
        if (kh_likely(kh_hit_free_sized(KH_DEFAULT_CPUS, &kh_default_window, p,
                                        (n + 15) & ~(size_t)15)))
            return;
    } else if (al <= MALLOC_ALIGN) {
        if (kh_hit_free_sized(KH_DEFAULT_CPUS, &kh_default_window, p, round_size(n)))
            return;
    }
    kh_default_free_sized_slow(p, round_size(n), al <= MALLOC_ALIGN ? 0 : al, kind);
#endif
}

/* C23: for blocks of malloc, calloc and realloc (free_sized) and of
 * aligned_alloc (free_aligned_sized). */
KH_EXPORT void free_sized(void *p, size_t size)
{
    sized_free(p, size, 0, KHEAP_BLOCK_MALLOC);
}

KH_EXPORT void free_aligned_sized(void *p, size_t align, size_t size)
{
    sized_free(p, size, align, KHEAP_BLOCK_MALLOC);
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
/* Output without stdio and without allocation: reports, the exit
 * statistics and the live statistics writer run inside malloc, or in a
 * program whose stdio is in any state. */

static char report_buf[1 << 16];

/* ------------------------------------------------------------------ */
/* C++'s allocation functions, defined here so that new and delete reach
 * the hit paths directly instead of through libstdc++'s operator new and a
 * second call to malloc. The names are the Itanium C++ ABI's manglings
 * (size_t is "m" where it is unsigned long, "j" where it is unsigned int).
 * When kheap cannot meet a request, the C++ library's own function of the
 * same name is asked (dlsym RTLD_NEXT): it calls this malloc again in its
 * new_handler loop and throws std::bad_alloc (or returns NULL for the
 * nothrow forms), so the standard's failure rules hold without C++ code
 * here. A program without a C++ library never calls these. A sized
 * delete's size is checked against the block (sized_free). */
#if __SIZEOF_SIZE_T__ == __SIZEOF_LONG__
#define KH_SZ "m"
#else
#define KH_SZ "j"
#endif
#define KH_NEW(name) KH_EXPORT void *name
#define KH_DEL(name) KH_EXPORT void name

static void put_err(const char *s, size_t n);

/* The C++ library's function called sym, for a request kheap refused,
 * called with the arguments of its own form: al is 0 for the forms
 * without alignment, nt NULL for the throwing ones. */
static kh_noinline void *cxx_fallback(const char *sym, size_t n, size_t al, const void *nt)
{
    void *next = dlsym(RTLD_NEXT, sym);
    if (!next) {
        static const char msg[] = "kheap: libkheap.so: out of memory in operator new, and "
                                  "no C++ library to throw std::bad_alloc\n";
        put_err(msg, sizeof msg - 1);
        abort();
    }
    if (al && nt)
        return ((void *(*)(size_t, size_t, const void *))next)(n, al, nt);
    if (al)
        return ((void *(*)(size_t, size_t))next)(n, al);
    if (nt)
        return ((void *(*)(size_t, const void *))next)(n, nt);
    return ((void *(*)(size_t))next)(n);
}

/* The debug build records whether a block came from new or new[] (the
 * symbol's fourth letter: _Znw, _Zna) and checks it at delete, with the
 * size of a sized delete. */
#if KHEAP_REDZONE
static inline enum kheap_block_kind cxx_kind(const char *sym)
{
    return sym[3] == 'a' ? KHEAP_BLOCK_NEW_ARRAY : KHEAP_BLOCK_NEW;
}
#endif

#if !KHEAP_REDZONE
/* new's miss out of line, as malloc's (malloc_slow). */
static kh_noinline void *cxx_new_slow(size_t n, const char *sym, const void *nt)
{
    void *p = kh_default_alloc_slow(round_size(n));
    return kh_likely(p != NULL) ? p : cxx_fallback(sym, n, 0, nt);
}
#endif

static inline void *cxx_new(size_t n, const char *sym, const void *nt)
{
#if KHEAP_REDZONE
    void *p = kheap_alloc_as(kheap_default(), n, 0, cxx_kind(sym));
    return kh_likely(p != NULL) ? p : cxx_fallback(sym, n, 0, nt);
#else
    void *p;
    if (kh_likely(kh_hit_alloc(KH_DEFAULT_CPUS, &kh_default_window, round_size(n), &p)))
        return p;
    return cxx_new_slow(n, sym, nt);
#endif
}

static inline void *cxx_new_aligned(size_t n, size_t al, const char *sym, const void *nt)
{
#if KHEAP_REDZONE
    void *p = kheap_alloc_as(kheap_default(), n, al, cxx_kind(sym));
#else
    void *p = al <= MALLOC_ALIGN ? kh_default_alloc(round_size(n))
                                 : kheap_alloc_aligned(kheap_default(), round_size(n), al);
#endif
    return p ? p : cxx_fallback(sym, n, al ? al : 1, nt);
}

/* An unsized delete is free (the debug build checks the kind). */
static inline void cxx_delete(void *p, enum kheap_block_kind kind)
{
#if KHEAP_REDZONE
    kheap_free_as(kheap_default(), p, 0, kind);
#else
    (void)kind;
    kh_default_free(p);
#endif
}

#define KH_SYM(s) __asm__(s)
KH_NEW(kh_new)(size_t n) KH_SYM("_Znw" KH_SZ);
KH_NEW(kh_new_array)(size_t n) KH_SYM("_Zna" KH_SZ);
KH_NEW(kh_new_nothrow)(size_t n, const void *nt) KH_SYM("_Znw" KH_SZ "RKSt9nothrow_t");
KH_NEW(kh_new_array_nothrow)(size_t n, const void *nt) KH_SYM("_Zna" KH_SZ "RKSt9nothrow_t");
KH_NEW(kh_new_al)(size_t n, size_t al) KH_SYM("_Znw" KH_SZ "St11align_val_t");
KH_NEW(kh_new_array_al)(size_t n, size_t al) KH_SYM("_Zna" KH_SZ "St11align_val_t");
KH_NEW(kh_new_al_nothrow)(size_t n, size_t al, const void *nt)
    KH_SYM("_Znw" KH_SZ "St11align_val_tRKSt9nothrow_t");
KH_NEW(kh_new_array_al_nothrow)(size_t n, size_t al, const void *nt)
    KH_SYM("_Zna" KH_SZ "St11align_val_tRKSt9nothrow_t");
KH_DEL(kh_delete)(void *p) KH_SYM("_ZdlPv");
KH_DEL(kh_delete_array)(void *p) KH_SYM("_ZdaPv");
KH_DEL(kh_delete_sized)(void *p, size_t n) KH_SYM("_ZdlPv" KH_SZ);
KH_DEL(kh_delete_array_sized)(void *p, size_t n) KH_SYM("_ZdaPv" KH_SZ);
KH_DEL(kh_delete_nothrow)(void *p, const void *nt) KH_SYM("_ZdlPvRKSt9nothrow_t");
KH_DEL(kh_delete_array_nothrow)(void *p, const void *nt) KH_SYM("_ZdaPvRKSt9nothrow_t");
KH_DEL(kh_delete_al)(void *p, size_t al) KH_SYM("_ZdlPvSt11align_val_t");
KH_DEL(kh_delete_array_al)(void *p, size_t al) KH_SYM("_ZdaPvSt11align_val_t");
KH_DEL(kh_delete_sized_al)(void *p, size_t n, size_t al) KH_SYM("_ZdlPv" KH_SZ "St11align_val_t");
KH_DEL(kh_delete_array_sized_al)(void *p, size_t n, size_t al)
    KH_SYM("_ZdaPv" KH_SZ "St11align_val_t");
KH_DEL(kh_delete_al_nothrow)(void *p, size_t al, const void *nt)
    KH_SYM("_ZdlPvSt11align_val_tRKSt9nothrow_t");
KH_DEL(kh_delete_array_al_nothrow)(void *p, size_t al, const void *nt)
    KH_SYM("_ZdaPvSt11align_val_tRKSt9nothrow_t");

KH_NEW(kh_new)(size_t n)
{
    return cxx_new(n, "_Znw" KH_SZ, NULL);
}
KH_NEW(kh_new_array)(size_t n)
{
    return cxx_new(n, "_Zna" KH_SZ, NULL);
}
KH_NEW(kh_new_nothrow)(size_t n, const void *nt)
{
    return cxx_new(n, "_Znw" KH_SZ "RKSt9nothrow_t", nt);
}
KH_NEW(kh_new_array_nothrow)(size_t n, const void *nt)
{
    return cxx_new(n, "_Zna" KH_SZ "RKSt9nothrow_t", nt);
}
KH_NEW(kh_new_al)(size_t n, size_t al)
{
    return cxx_new_aligned(n, al, "_Znw" KH_SZ "St11align_val_t", NULL);
}
KH_NEW(kh_new_array_al)(size_t n, size_t al)
{
    return cxx_new_aligned(n, al, "_Zna" KH_SZ "St11align_val_t", NULL);
}
KH_NEW(kh_new_al_nothrow)(size_t n, size_t al, const void *nt)
{
    return cxx_new_aligned(n, al, "_Znw" KH_SZ "St11align_val_tRKSt9nothrow_t", nt);
}
KH_NEW(kh_new_array_al_nothrow)(size_t n, size_t al, const void *nt)
{
    return cxx_new_aligned(n, al, "_Zna" KH_SZ "St11align_val_tRKSt9nothrow_t", nt);
}
/* An unsized delete is free: kheap finds the block's class from its
 * address; a sized one checks that the size can be the block's (the
 * debug build: its exact size), and both forms of the debug build check
 * the kind. An aligned form passes its alignment on (cxx_new_aligned
 * gave an alignment of up to MALLOC_ALIGN no special block). */
KH_DEL(kh_delete)(void *p)
{
    cxx_delete(p, KHEAP_BLOCK_NEW);
}
KH_DEL(kh_delete_array)(void *p)
{
    cxx_delete(p, KHEAP_BLOCK_NEW_ARRAY);
}
KH_DEL(kh_delete_sized)(void *p, size_t n)
{
    sized_free(p, n, 0, KHEAP_BLOCK_NEW);
}
KH_DEL(kh_delete_array_sized)(void *p, size_t n)
{
    sized_free(p, n, 0, KHEAP_BLOCK_NEW_ARRAY);
}
KH_DEL(kh_delete_nothrow)(void *p, const void *nt)
{
    (void)nt;
    cxx_delete(p, KHEAP_BLOCK_NEW);
}
KH_DEL(kh_delete_array_nothrow)(void *p, const void *nt)
{
    (void)nt;
    cxx_delete(p, KHEAP_BLOCK_NEW_ARRAY);
}
KH_DEL(kh_delete_al)(void *p, size_t al)
{
    (void)al;
    cxx_delete(p, KHEAP_BLOCK_NEW);
}
KH_DEL(kh_delete_array_al)(void *p, size_t al)
{
    (void)al;
    cxx_delete(p, KHEAP_BLOCK_NEW_ARRAY);
}
KH_DEL(kh_delete_sized_al)(void *p, size_t n, size_t al)
{
    sized_free(p, n, al, KHEAP_BLOCK_NEW);
}
KH_DEL(kh_delete_array_sized_al)(void *p, size_t n, size_t al)
{
    sized_free(p, n, al, KHEAP_BLOCK_NEW_ARRAY);
}
KH_DEL(kh_delete_al_nothrow)(void *p, size_t al, const void *nt)
{
    (void)al, (void)nt;
    cxx_delete(p, KHEAP_BLOCK_NEW);
}
KH_DEL(kh_delete_array_al_nothrow)(void *p, size_t al, const void *nt)
{
    (void)al, (void)nt;
    cxx_delete(p, KHEAP_BLOCK_NEW_ARRAY);
}

/* Where reports go: a copy of stderr made at start when KHEAP_STATS is
 * set, because some programs close stderr before they exit (coreutils
 * do). */
static int report_fd = 2;

static void put_fd(int fd, const char *s, size_t n)
{
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

static void put_err(const char *s, size_t n)
{
    put_fd(report_fd, s, n);
}

static size_t bounded(size_t need)
{
    return need < sizeof report_buf - 1 ? need : sizeof report_buf - 1;
}

/* A growing line of text in a fixed buffer; what does not fit is cut. */
struct text {
    char *buf;
    size_t len, pos;
};

static void t_str(struct text *t, const char *s)
{
    for (; *s; s++)
        if (t->pos < t->len)
            t->buf[t->pos++] = *s;
}

static void t_u64(struct text *t, uint64_t v)
{
    char d[24];
    size_t n = 0;
    do {
        d[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n && t->pos < t->len)
        t->buf[t->pos++] = d[--n];
}

/* One line on stderr naming an environment variable, its value and why
 * it was ignored. Each variable is read once, at start: once per value. */
static void bad_option(const char *name, const char *value, const char *why)
{
    char line[512];
    struct text t = {line, sizeof line - 1, 0};
    t_str(&t, "kheap: ignoring ");
    t_str(&t, name);
    t_str(&t, "=");
    t_str(&t, value);
    t_str(&t, ": ");
    t_str(&t, why);
    line[t.pos++] = '\n';
    put_fd(2, line, t.pos);
}

/* ------------------------------------------------------------------ */
/* Parsing the environment's values. */

static int env_on(const char *name)
{
    const char *v = getenv(name);
    return v && *v && *v != '0';
}

static int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

static int same_word(const char *a, const char *b)
{
    while (*a && *b && lower(*a) == lower(*b))
        a++, b++;
    return !*a && !*b;
}

/* A byte count: decimal digits, optionally followed by k, m or g (each
 * 1024 times the one before; "KiB", "MiB", "GiB", "KB", "M"... alike).
 * false for anything else and for overflow. */
static bool parse_bytes(const char *s, size_t *out)
{
    size_t v = 0;
    const char *p = s;
    if (*p < '0' || *p > '9')
        return false;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > (SIZE_MAX - (size_t)(*p - '0')) / 10)
            return false;
        v = v * 10 + (size_t)(*p - '0');
    }
    unsigned shift = 0;
    if (*p) {
        switch (lower(*p)) {
        case 'k': shift = 10; break;
        case 'm': shift = 20; break;
        case 'g': shift = 30; break;
        default: return false;
        }
        p++;
        if (*p && !same_word(p, "ib") && !same_word(p, "b"))
            return false;
        if (v > (SIZE_MAX >> shift))
            return false;
    }
    *out = v << shift;
    return true;
}

/* Seconds with at most three decimals ("2", "0.5"), as milliseconds, at
 * most a day. */
static bool parse_seconds(const char *s, uint64_t *ms)
{
    uint64_t whole = 0, frac = 0;
    unsigned nfrac = 0;
    const char *p = s;
    if (*p < '0' || *p > '9')
        return false;
    for (; *p >= '0' && *p <= '9'; p++) {
        whole = whole * 10 + (uint64_t)(*p - '0');
        if (whole > 86400)
            return false;
    }
    if (*p == '.') {
        for (p++; *p >= '0' && *p <= '9'; p++) {
            if (++nfrac > 3)
                return false;
            frac = frac * 10 + (uint64_t)(*p - '0');
        }
        if (!nfrac)
            return false;
    }
    if (*p)
        return false;
    while (nfrac++ < 3)
        frac *= 10;
    *ms = whole * 1000 + frac;
    return *ms <= 86400000;
}

/* A signal the user may name for the statistics: USR1, USR2, HUP, WINCH
 * (with or without "SIG"), RTMIN+n, or a number that is none of the
 * signals a program cannot or should not catch. 0 if none. */
static int parse_signal(const char *s)
{
    static const struct {
        const char *name;
        int sig;
    } names[] = {{"usr1", SIGUSR1}, {"usr2", SIGUSR2}, {"hup", SIGHUP}, {"winch", SIGWINCH}};
    if (lower(s[0]) == 's' && lower(s[1]) == 'i' && lower(s[2]) == 'g')
        s += 3;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (same_word(s, names[i].name))
            return names[i].sig;
    int base = 0, n = 0;
    const char *p = s;
    if (lower(p[0]) == 'r' && lower(p[1]) == 't' && lower(p[2]) == 'm' &&
        lower(p[3]) == 'i' && lower(p[4]) == 'n') {
        base = SIGRTMIN;
        p += 5;
        if (!*p)
            return base;
        if (*p++ != '+')
            return 0;
    }
    if (*p < '0' || *p > '9')
        return 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        n = n * 10 + (*p - '0');
        if (n > 1000)
            return 0;
    }
    if (*p)
        return 0;
    n += base;
    if (n <= 0 || n >= NSIG || (base && n > SIGRTMAX))
        return 0;
    switch (n) {
    case SIGKILL: case SIGSTOP: case SIGSEGV: case SIGBUS: case SIGILL:
    case SIGFPE: case SIGABRT: case SIGTRAP: case SIGSYS:
        return 0;
    default:
        return n;
    }
}

/* ------------------------------------------------------------------ */
/* Summaries of the default heap for the glibc extensions and the live
 * statistics: the statistics plus every slabinfo row, in one static
 * buffer under sum_lock (mallinfo and friends wait for it; the live
 * writer, which runs inside malloc, only tries it). In a forked child the
 * lock starts over (shim_fork_child). */

#define MAX_ROWS 256
static struct kheap_cache_info rows[MAX_ROWS];
static pthread_mutex_t sum_lock = PTHREAD_MUTEX_INITIALIZER;

struct summary {
    struct kheap_stats st;
    size_t nrows;           /* rows in rows[] (at most MAX_ROWS) */
    size_t free_slots;      /* free object slots of the kmalloc classes' slabs */
    size_t free_slot_bytes;
    size_t cached_objs;     /* objects cached in per-CPU magazines and depots */
    size_t cached_bytes;
};

/* Fill *s and rows[]; sum_lock held. Only the kmalloc classes' rows count
 * in the free figures: kheap's own caches hold its metadata. */
static void summarise(struct summary *s)
{
    kheap_t *h = kheap_default();
    __builtin_memset(s, 0, sizeof *s);
    kheap_get_stats(h, &s->st);
    size_t n = kheap_slabinfo(h, rows, MAX_ROWS);
    s->nrows = n < MAX_ROWS ? n : MAX_ROWS;
    for (size_t i = 0; i < s->nrows && i < KHEAP_NUM_CLASSES; i++) {
        const struct kheap_cache_info *r = &rows[i];
        size_t slots = r->num_objs >= r->active_objs ? r->num_objs - r->active_objs : 0;
        s->free_slots += slots;
        s->free_slot_bytes += slots * r->objsize;
        s->cached_objs += r->cached_objs;
        s->cached_bytes += r->cached_objs * r->objsize;
    }
}

/* ------------------------------------------------------------------ */
/* glibc's malloc extensions, from kheap's figures (README: "mallinfo"):
 *   arena     slab_bytes: pages held by slabs (kmalloc classes and
 *             kheap's own caches), the analogue of glibc's sbrk heap
 *   ordblks   free object slots in the kmalloc classes' slabs
 *   smblks    objects cached in per-CPU magazines and depots (glibc's
 *             fastbins and tcache are its free caches)
 *   hblks     large blocks allocated now (glibc: mmapped chunks)
 *   hblkhd    bytes of those large blocks
 *   usmblks   peak_bytes (glibc always reports 0 here)
 *   fsmblks   bytes of the cached objects
 *   uordblks  bytes of live objects in slabs (used_bytes - large_bytes)
 *   fordblks  arena - uordblks: slab bytes not holding a live object
 *             (free slots, cached objects, kheap's own objects, slab
 *             leftovers)
 *   keepcost  dirty_bytes: free pages still resident, what malloc_trim
 *             can give back
 * So uordblks + hblkhd is what the program holds, in usable sizes, and
 * arena + hblkhd what the heap has in pages for it, as with glibc. */

static struct mallinfo2 info_of(const struct summary *s)
{
    struct mallinfo2 m;
    __builtin_memset(&m, 0, sizeof m);
    size_t live_small = s->st.used_bytes > s->st.large_bytes ? s->st.used_bytes - s->st.large_bytes : 0;
    m.arena = s->st.slab_bytes;
    m.ordblks = s->free_slots;
    m.smblks = s->cached_objs;
    m.hblks = s->st.large_count;
    m.hblkhd = s->st.large_bytes;
    m.usmblks = s->st.peak_bytes;
    m.fsmblks = s->cached_bytes;
    m.uordblks = live_small;
    m.fordblks = m.arena > live_small ? m.arena - live_small : 0;
    m.keepcost = s->st.dirty_bytes;
    return m;
}

KH_EXPORT struct mallinfo2 mallinfo2(void)
{
    struct summary s;
    pthread_mutex_lock(&sum_lock);
    summarise(&s);
    pthread_mutex_unlock(&sum_lock);
    return info_of(&s);
}

/* The int version: each figure saturates at INT_MAX (glibc's wraps). */
static int clamp_int(size_t v)
{
    return v > INT_MAX ? INT_MAX : (int)v;
}

KH_EXPORT struct mallinfo mallinfo(void)
{
    struct mallinfo2 m2 = mallinfo2();
    struct mallinfo m;
    m.arena = clamp_int(m2.arena);
    m.ordblks = clamp_int(m2.ordblks);
    m.smblks = clamp_int(m2.smblks);
    m.hblks = clamp_int(m2.hblks);
    m.hblkhd = clamp_int(m2.hblkhd);
    m.usmblks = clamp_int(m2.usmblks);
    m.fsmblks = clamp_int(m2.fsmblks);
    m.uordblks = clamp_int(m2.uordblks);
    m.fordblks = clamp_int(m2.fordblks);
    m.keepcost = clamp_int(m2.keepcost);
    return m;
}

/* glibc's layout on stderr. kheap keeps no maxima of large blocks: the
 * last two lines give the large blocks now. */
KH_EXPORT void malloc_stats(void)
{
    struct summary s;
    pthread_mutex_lock(&sum_lock);
    summarise(&s);
    pthread_mutex_unlock(&sum_lock);
    struct mallinfo2 m = info_of(&s);
    fprintf(stderr, "Arena 0:\n");
    fprintf(stderr, "system bytes     = %10zu\n", m.arena);
    fprintf(stderr, "in use bytes     = %10zu\n", m.uordblks);
    fprintf(stderr, "Total (incl. mmap):\n");
    fprintf(stderr, "system bytes     = %10zu\n", m.arena + m.hblkhd);
    fprintf(stderr, "in use bytes     = %10zu\n", m.uordblks + m.hblkhd);
    fprintf(stderr, "large blocks     = %10zu\n", m.hblks);
    fprintf(stderr, "large bytes      = %10zu\n", m.hblkhd);
}

/* Empty slabs of every cache go back to the page layer, then every free
 * run still resident beyond pad bytes is purged. 1 if memory went back to
 * the system, as glibc. The objects cached in magazines stay. */
KH_EXPORT int malloc_trim(size_t pad)
{
    kheap_t *h = kheap_default();
    kheap_reclaim(h);
    return kheap_purge(h, pad) > 0;
}

/* ------------------------------------------------------------------ */
/* jemalloc's control interface, for programs linked with jemalloc and run
 * with libkheap.so in front (Debian's redis-server is one): without these
 * their mallctl and malloc_stats_print calls reach the idle jemalloc,
 * which answers about memory it does not hold, and a purge they ask for
 * gives nothing back. The names answered (README, "jemalloc's mallctl"):
 *   arenas.narenas                     unsigned: 1 (kheap has one heap)
 *   arena.<i>.purge, arena.<i>.decay   i 0, 1 (jemalloc's "all" alias
 *                                      arenas.narenas) or 4096
 *                                      (MALLCTL_ARENAS_ALL): malloc_trim(0)
 *   epoch                              uint64_t: writing it takes a new
 *                                      snapshot of the statistics, which
 *                                      the stats.* names read until the
 *                                      next write (as jemalloc's epoch);
 *                                      reads the number of snapshots
 *   stats.allocated                    size_t: used_bytes
 *   stats.active                       size_t: slab_bytes + large_bytes
 *   stats.resident                     size_t: active plus the free pages
 *                                      that may still be resident
 *                                      (dirty_bytes); kheap's metadata is
 *                                      left out: its page descriptors
 *                                      cover the whole reservation, and
 *                                      the untouched ones take no memory
 *   stats.mapped                       size_t: heap_total (the whole
 *                                      reservation, 64 GiB or less)
 *   stats.retained                     size_t: purged_bytes (free pages
 *                                      not resident: purged or never
 *                                      touched, most of the reservation)
 * Anything else: ENOENT, as jemalloc answers a name it does not know. A
 * read whose *oldlenp is not the value's size: as jemalloc, the first
 * min(*oldlenp, size) bytes copied, *oldlenp set to that, EINVAL; a write
 * to a read-only name: EPERM. jemalloc's other functions (mallocx,
 * nallocx and the rest) are not defined here: they stay jemalloc's, and a
 * block from its mallocx must go back through its dallocx, never free. */

static int ctl_read(void *oldp, size_t *oldlenp, const void *v, size_t size)
{
    if (!oldp || !oldlenp)
        return 0;
    if (*oldlenp != size) {
        size_t n = *oldlenp < size ? *oldlenp : size;
        __builtin_memcpy(oldp, v, n);
        *oldlenp = n;
        return EINVAL;
    }
    __builtin_memcpy(oldp, v, size);
    return 0;
}

/* The snapshot the stats.* names read, and how many were taken (epoch);
 * under ctl_lock. */
static struct kheap_stats ctl_snap;
static uint64_t ctl_epoch;
static pthread_mutex_t ctl_lock = PTHREAD_MUTEX_INITIALIZER;

static void ctl_refresh(void)
{
    kheap_get_stats(kheap_default(), &ctl_snap);
    ctl_epoch++;
}

/* The arena index of "arena.<i>.<op>": 1 if name is that shape with an
 * index naming every arena or the only one, and *op points at <op>. */
static int ctl_arena(const char *name, const char **op)
{
    const char *p = name + 6; /* past "arena." */
    unsigned long i = 0;
    if (*p < '0' || *p > '9')
        return 0;
    for (; *p >= '0' && *p <= '9' && i < 100000; p++)
        i = i * 10 + (unsigned long)(*p - '0');
    if (*p != '.' || (i > 1 && i != 4096))
        return 0;
    *op = p + 1;
    return 1;
}

KH_EXPORT int mallctl(const char *name, void *oldp, size_t *oldlenp, void *newp, size_t newlen)
{
    if (!name)
        return EINVAL;
    const char *op;
    if (!strncmp(name, "arena.", 6) && ctl_arena(name, &op) &&
        (!strcmp(op, "purge") || !strcmp(op, "decay"))) {
        if (oldp || newp)
            return EPERM;
        malloc_trim(0);
        return 0;
    }
    if (!strcmp(name, "epoch")) {
        if (newp && newlen != sizeof(uint64_t))
            return EINVAL;
        pthread_mutex_lock(&ctl_lock);
        if (newp || !ctl_epoch)
            ctl_refresh();
        uint64_t e = ctl_epoch;
        pthread_mutex_unlock(&ctl_lock);
        return ctl_read(oldp, oldlenp, &e, sizeof e);
    }
    if (newp)
        return strcmp(name, "arenas.narenas") && strcmp(name, "kheap.cpus") &&
                       strncmp(name, "stats.", 6)
                   ? ENOENT
                   : EPERM;
    if (!strcmp(name, "arenas.narenas")) {
        unsigned one = 1;
        return ctl_read(oldp, oldlenp, &one, sizeof one);
    }
    if (!strcmp(name, "kheap.cpus")) { /* kheap's own: the per-CPU mode */
        unsigned cpus = kheap_hosted_cpu_mode(NULL);
        return ctl_read(oldp, oldlenp, &cpus, sizeof cpus);
    }
    if (strncmp(name, "stats.", 6))
        return ENOENT;
    const char *k = name + 6;
    size_t v;
    pthread_mutex_lock(&ctl_lock);
    if (!ctl_epoch) /* no epoch written yet: a first snapshot */
        ctl_refresh();
    const struct kheap_stats *st = &ctl_snap;
    size_t active = st->slab_bytes + st->large_bytes;
    int known = 1;
    if (!strcmp(k, "allocated"))
        v = st->used_bytes;
    else if (!strcmp(k, "active"))
        v = active;
    else if (!strcmp(k, "resident"))
        v = active + st->dirty_bytes;
    else if (!strcmp(k, "mapped"))
        v = st->heap_total;
    else if (!strcmp(k, "retained"))
        v = st->purged_bytes;
    else
        known = 0;
    pthread_mutex_unlock(&ctl_lock);
    return known ? ctl_read(oldp, oldlenp, &v, sizeof v) : ENOENT;
}

/* malloc_stats_print's buffer (a forked child starts it over). */
static pthread_mutex_t print_lock = PTHREAD_MUTEX_INITIALIZER;

/* jemalloc's statistics printer: kheap_format_stats's text (the figures
 * of KHEAP_STATS), through write_cb, or on stderr when it is NULL; opts is
 * ignored. */
KH_EXPORT void malloc_stats_print(void (*write_cb)(void *, const char *), void *cbopaque,
                                  const char *opts)
{
    (void)opts;
    static char buf[8192];
    pthread_mutex_lock(&print_lock);
    size_t n = kheap_format_stats(kheap_default(), buf, sizeof buf);
    if (n >= sizeof buf)
        n = sizeof buf - 1;
    buf[n] = 0;
    if (write_cb)
        write_cb(cbopaque, buf);
    else
        put_err(buf, n);
    pthread_mutex_unlock(&print_lock);
}

/* glibc's <mcheck.h>: check every block now. kheap_check walks the whole
 * heap (in libkheap-debug.so also every block's redzones and the
 * quarantine's poison); an inconsistency is reported on stderr, naming
 * where it is, and the process aborts, as glibc does. Works without
 * mcheck() having been called (glibc's needs it). */
KH_EXPORT void mcheck_check_all(void)
{
    const void *at = NULL;
    const char *msg = kheap_check(kheap_default(), &at);
    if (!msg)
        return;
    char line[256];
    int n = snprintf(line, sizeof line, "kheap: mcheck_check_all(%p): %s\n", at, msg);
    if (n > 0)
        put_err(line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    abort();
}

/* The purge settings in force (KHEAP_PURGE_SLACK/MIN, mallopt). */
static size_t purge_slack = KHEAP_PURGE_SLACK, purge_min = KHEAP_PURGE_MIN;
static pthread_mutex_t purge_lock = PTHREAD_MUTEX_INITIALIZER;

static int set_purge(size_t slack, size_t min)
{
    pthread_mutex_lock(&purge_lock);
    int err = kheap_set_purge(kheap_default(), slack, min);
    if (!err) {
        purge_slack = slack;
        purge_min = min;
    }
    pthread_mutex_unlock(&purge_lock);
    return err;
}

/* M_TRIM_THRESHOLD (bytes, >= 0) sets the purge slack: free memory kept
 * resident before freed runs are given back; the rest have no meaning
 * for kheap and return 0 (README: "mallopt"). 1 on success, as glibc. */
KH_EXPORT int mallopt(int param, int value)
{
    switch (param) {
    case M_TRIM_THRESHOLD:
        if (value < 0)
            return 0;
        return set_purge((size_t)value, purge_min) == 0;
    default:
        return 0;
    }
}

/* glibc's XML (version 1), one heap: the kheap default heap. <sizes> lists
 * the kmalloc classes with free slots (from/to: the class's size range,
 * count and total: its free slots). "fast" is the cached objects, "rest"
 * the free slots, "mmap" the large blocks; system "current" is arena +
 * large bytes, "max" the peak of live bytes (kheap keeps no peak of its
 * pages); aspace is every region's bytes (all read-write). */
KH_EXPORT int malloc_info(int options, FILE *fp)
{
    if (options != 0) {
        errno = EINVAL;
        return -1;
    }
    struct summary s;
    struct {
        size_t size, free;
    } cls[KHEAP_NUM_CLASSES];
    size_t ncls = 0;
    pthread_mutex_lock(&sum_lock);
    summarise(&s);
    for (size_t i = 0; i < s.nrows && i < KHEAP_NUM_CLASSES; i++) {
        cls[ncls].size = rows[i].objsize;
        cls[ncls].free = rows[i].num_objs >= rows[i].active_objs
                             ? rows[i].num_objs - rows[i].active_objs : 0;
        ncls++;
    }
    pthread_mutex_unlock(&sum_lock);
    struct mallinfo2 m = info_of(&s);
    size_t current = m.arena + m.hblkhd;
    size_t max = s.st.peak_bytes > current ? s.st.peak_bytes : current;
    fprintf(fp, "<malloc version=\"1\">\n<heap nr=\"0\">\n<sizes>\n");
    size_t from = 1;
    for (size_t i = 0; i < ncls; i++) {
        if (cls[i].free)
            fprintf(fp, "  <size from=\"%zu\" to=\"%zu\" total=\"%zu\" count=\"%zu\"/>\n",
                    from, cls[i].size, cls[i].free * cls[i].size, cls[i].free);
        from = cls[i].size + 1;
    }
    fprintf(fp, "</sizes>\n");
    fprintf(fp, "<total type=\"fast\" count=\"%zu\" size=\"%zu\"/>\n", s.cached_objs, s.cached_bytes);
    fprintf(fp, "<total type=\"rest\" count=\"%zu\" size=\"%zu\"/>\n", s.free_slots, s.free_slot_bytes);
    fprintf(fp, "<system type=\"current\" size=\"%zu\"/>\n", m.arena);
    fprintf(fp, "<system type=\"max\" size=\"%zu\"/>\n", max);
    fprintf(fp, "<aspace type=\"total\" size=\"%zu\"/>\n", s.st.heap_total);
    fprintf(fp, "<aspace type=\"mprotect\" size=\"%zu\"/>\n", s.st.heap_total);
    fprintf(fp, "</heap>\n");
    fprintf(fp, "<total type=\"fast\" count=\"%zu\" size=\"%zu\"/>\n", s.cached_objs, s.cached_bytes);
    fprintf(fp, "<total type=\"rest\" count=\"%zu\" size=\"%zu\"/>\n", s.free_slots, s.free_slot_bytes);
    fprintf(fp, "<total type=\"mmap\" count=\"%zu\" size=\"%zu\"/>\n", m.hblks, m.hblkhd);
    fprintf(fp, "<system type=\"current\" size=\"%zu\"/>\n", current);
    fprintf(fp, "<system type=\"max\" size=\"%zu\"/>\n", max);
    fprintf(fp, "<aspace type=\"total\" size=\"%zu\"/>\n", s.st.heap_total);
    fprintf(fp, "<aspace type=\"mprotect\" size=\"%zu\"/>\n", s.st.heap_total);
    fprintf(fp, "</malloc>\n");
    return 0;
}

/* ------------------------------------------------------------------ */
/* Live statistics (README: "Live statistics"; docs/DESIGN.md says why).
 *
 * A record (format below) goes to KHEAP_STATS_FILE at start, every
 * KHEAP_STATS_INTERVAL seconds, when KHEAP_STATS_SIGNAL arrives, and at
 * exit. kheap runs no thread of its own: the signal handler only sets a
 * flag, and the hosted port's idle hook (kheap_hosted_set_idle_hook),
 * which runs when a thread leaves a slow path holding no kheap lock,
 * writes the record when the flag is set or the interval has passed. So
 * the writer never waits for a lock its own thread holds, never
 * allocates, and runs in one thread at a time (live_busy); a thread that
 * finds it busy goes on. A program that makes no slow-path call (blocked,
 * or only hitting its magazines) writes nothing until it does.
 *
 * Snapshot mode writes the record to PATH.PID.tmp and renames it over
 * PATH, so readers see whole records; KHEAP_STATS_APPEND=1 appends each
 * record to PATH with one write(2), a history for charts (a reader may
 * see the last record cut short: it ends with its "end" line). */

static struct {
    bool on, append;
    int signo;
    pid_t pid;
    uint64_t interval_ms;
    char path[1024], tmp[1100];
} live;
static uint64_t live_seq, live_next_ms;
static int live_busy, live_requested;
static char live_buf[1 << 16];

static uint64_t now_ms(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void t_kv(struct text *t, const char *key, uint64_t v)
{
    t_str(t, " ");
    t_str(t, key);
    t_str(t, " ");
    t_u64(t, v);
}

/* A name as one word: spaces and control characters become '_'. */
static void t_word(struct text *t, const char *s)
{
    for (; *s; s++)
        if (t->pos < t->len)
            t->buf[t->pos++] = (*s <= ' ' || *s == 127) ? '_' : *s;
}

/*
 * The record, one fact per line, fields separated by single spaces:
 *   kheap-stats 1
 *   time <unix seconds>.<ms> pid <pid> seq <n> reason <start|interval|signal|exit>
 *   heap <name> <value> ... (every field of struct kheap_stats, then
 *        cached_bytes, free_slot_bytes)
 *   columns name active_objs num_objs objsize objperslab pagesperslab
 *           active_slabs num_slabs allocs frees cached_objs cpu_hits cpu_misses
 *   cache <the columns' values>      (every slabinfo row)
 *   end <n>
 * sum_lock held.
 */
static size_t live_format(const char *reason)
{
    struct summary s;
    summarise(&s);
    const struct kheap_stats *st = &s.st;
    uint64_t t_ms = now_ms(CLOCK_REALTIME);
    struct text t = {live_buf, sizeof live_buf - 16, 0};
    uint64_t seq = ++live_seq;
    t_str(&t, "kheap-stats 1\ntime ");
    t_u64(&t, t_ms / 1000);
    t_str(&t, ".");
    char ms[4] = {(char)('0' + t_ms % 1000 / 100), (char)('0' + t_ms % 100 / 10),
                  (char)('0' + t_ms % 10), 0};
    t_str(&t, ms);
    t_kv(&t, "pid", (uint64_t)live.pid);
    t_kv(&t, "seq", seq);
    t_str(&t, " reason ");
    t_str(&t, reason);
    t_str(&t, "\nheap");
    t_kv(&t, "allocated_bytes", st->allocated_bytes);
    t_kv(&t, "freed_bytes", st->freed_bytes);
    t_kv(&t, "used_bytes", st->used_bytes);
    t_kv(&t, "peak_bytes", st->peak_bytes);
    t_kv(&t, "allocation_count", st->allocation_count);
    t_kv(&t, "free_count", st->free_count);
    t_kv(&t, "heap_total", st->heap_total);
    t_kv(&t, "heap_used", st->heap_used);
    t_kv(&t, "heap_free", st->heap_free);
    t_kv(&t, "failed_count", st->failed_count);
    t_kv(&t, "metadata_bytes", st->metadata_bytes);
    t_kv(&t, "slab_bytes", st->slab_bytes);
    t_kv(&t, "large_bytes", st->large_bytes);
    t_kv(&t, "region_count", st->region_count);
    t_kv(&t, "large_count", st->large_count);
    t_kv(&t, "dirty_bytes", st->dirty_bytes);
    t_kv(&t, "cached_bytes", s.cached_bytes);
    t_kv(&t, "free_slot_bytes", s.free_slot_bytes);
    t_str(&t, "\ncolumns name active_objs num_objs objsize objperslab pagesperslab "
              "active_slabs num_slabs allocs frees cached_objs cpu_hits cpu_misses\n");
    for (size_t i = 0; i < s.nrows; i++) {
        const struct kheap_cache_info *r = &rows[i];
        /* A row is written whole or not at all, so "end" always fits. */
        if (t.len - t.pos < 512)
            break;
        t_str(&t, "cache ");
        t_word(&t, r->name);
        const uint64_t v[] = {r->active_objs, r->num_objs, r->objsize, r->objperslab,
                              r->pagesperslab, r->active_slabs, r->num_slabs, r->allocs,
                              r->frees, r->cached_objs, r->cpu_hits, r->cpu_misses};
        for (size_t k = 0; k < sizeof v / sizeof v[0]; k++) {
            t_str(&t, " ");
            t_u64(&t, v[k]);
        }
        t_str(&t, "\n");
    }
    t.len = sizeof live_buf;
    t_str(&t, "end ");
    t_u64(&t, seq);
    t_str(&t, "\n");
    return t.pos;
}

/* Write one record; sum_lock held. On an error the writer stops, after
 * one line on stderr. */
static void live_write(const char *reason)
{
    size_t n = live_format(reason);
    int fd;
    if (live.append)
        fd = open(live.path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    else
        fd = open(live.tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    bool ok = fd >= 0;
    if (ok) {
        ok = write(fd, live_buf, n) == (ssize_t)n;
        ok = close(fd) == 0 && ok;
    }
    if (ok && !live.append)
        ok = rename(live.tmp, live.path) == 0;
    if (!ok) {
        char num[24];
        struct text t = {num, sizeof num - 1, 0};
        t_u64(&t, (uint64_t)errno);
        num[t.pos] = 0;
        live.on = false;
        char line[1300];
        struct text l = {line, sizeof line - 1, 0};
        t_str(&l, "kheap: KHEAP_STATS_FILE=");
        t_str(&l, live.path);
        t_str(&l, ": cannot write it (errno ");
        t_str(&l, num);
        t_str(&l, "); live statistics stop\n");
        put_fd(2, line, l.pos);
    }
}

static void live_signal(int sig)
{
    (void)sig;
    __atomic_store_n(&live_requested, 1, __ATOMIC_RELAXED);
}

/* The idle hook: cheap unless a record is due. */
static void live_hook(void)
{
    bool asked = __atomic_load_n(&live_requested, __ATOMIC_RELAXED);
    if (!asked && (!live.interval_ms ||
                   now_ms(CLOCK_MONOTONIC_COARSE) < __atomic_load_n(&live_next_ms, __ATOMIC_RELAXED)))
        return;
    if (__atomic_exchange_n(&live_busy, 1, __ATOMIC_ACQUIRE))
        return;
    int saved = errno;
    if (!live.on || getpid() != live.pid) {
        /* A forked child: the file is its parent's. */
        live.on = false;
        kheap_hosted_set_idle_hook(NULL);
    } else if (pthread_mutex_trylock(&sum_lock) == 0) {
        asked = __atomic_exchange_n(&live_requested, 0, __ATOMIC_RELAXED);
        uint64_t now = now_ms(CLOCK_MONOTONIC_COARSE);
        bool due = live.interval_ms && now >= live_next_ms;
        if (due)
            __atomic_store_n(&live_next_ms, now + live.interval_ms, __ATOMIC_RELAXED);
        if (asked || due)
            live_write(asked ? "signal" : "interval");
        pthread_mutex_unlock(&sum_lock);
    }
    __atomic_store_n(&live_busy, 0, __ATOMIC_RELEASE);
    errno = saved;
}

static void live_start(void)
{
    const char *path = getenv("KHEAP_STATS_FILE");
    const char *iv = getenv("KHEAP_STATS_INTERVAL");
    const char *sg = getenv("KHEAP_STATS_SIGNAL");
    if (!path || !*path) {
        if (iv && *iv)
            bad_option("KHEAP_STATS_INTERVAL", iv, "needs KHEAP_STATS_FILE");
        if (sg && *sg)
            bad_option("KHEAP_STATS_SIGNAL", sg, "needs KHEAP_STATS_FILE");
        return;
    }
    size_t len = strlen(path);
    if (len >= sizeof live.path) {
        bad_option("KHEAP_STATS_FILE", path, "path longer than 1023 bytes");
        return;
    }
    memcpy(live.path, path, len + 1);
    live.pid = getpid();
    {
        struct text t = {live.tmp, sizeof live.tmp - 1, 0};
        t_str(&t, live.path);
        t_str(&t, ".");
        t_u64(&t, (uint64_t)live.pid);
        t_str(&t, ".tmp");
        live.tmp[t.pos] = 0;
    }
    live.append = env_on("KHEAP_STATS_APPEND");
    live.interval_ms = sg && *sg ? 0 : 1000;
    if (iv && *iv) {
        uint64_t ms;
        if (!parse_seconds(iv, &ms))
            bad_option("KHEAP_STATS_INTERVAL", iv,
                       "not a number of seconds from 0 to 86400 with at most 3 decimals");
        else if (ms && ms < 10)
            bad_option("KHEAP_STATS_INTERVAL", iv, "below 0.01 seconds");
        else
            live.interval_ms = ms;
    }
    if (sg && *sg) {
        int sig = parse_signal(sg);
        struct sigaction sa;
        __builtin_memset(&sa, 0, sizeof sa);
        sa.sa_handler = live_signal;
        sa.sa_flags = SA_RESTART;
        sigemptyset(&sa.sa_mask);
        if (!sig)
            bad_option("KHEAP_STATS_SIGNAL", sg,
                       "not USR1, USR2, HUP, WINCH, RTMIN+n or a catchable signal number");
        else if (sigaction(sig, &sa, NULL) != 0)
            bad_option("KHEAP_STATS_SIGNAL", sg, "sigaction refused it");
        else
            live.signo = sig;
    }
    live.on = true;
    pthread_mutex_lock(&sum_lock);
    live_write("start");
    pthread_mutex_unlock(&sum_lock);
    if (!live.on)
        return;
    live_next_ms = now_ms(CLOCK_MONOTONIC_COARSE) + live.interval_ms;
    if (live.interval_ms || live.signo)
        kheap_hosted_set_idle_hook(live_hook);
}

/* ------------------------------------------------------------------ */
/* Run-time options (README: "Environment"), read once at start. A bad
 * value is reported on stderr, naming the variable and the value, and the
 * default stays. */

/* The decay epoch set at start (KHEAP_DECAY_MS), for KHEAP_VERBOSE. */
static unsigned decay_ms = KHEAP_DECAY_MS;

static void options_start(void)
{
    size_t slack = KHEAP_PURGE_SLACK, min = KHEAP_PURGE_MIN;
    bool set = false;
    const char *v = getenv("KHEAP_PURGE_SLACK");
    if (v && *v) {
        if (parse_bytes(v, &slack))
            set = true;
        else {
            bad_option("KHEAP_PURGE_SLACK", v, "not a byte count (digits, optional k, m or g)");
            slack = KHEAP_PURGE_SLACK;
        }
    }
    v = getenv("KHEAP_PURGE_MIN");
    if (v && *v) {
        if (parse_bytes(v, &min) && min > 0)
            set = true;
        else {
            bad_option("KHEAP_PURGE_MIN", v, "not a byte count above 0 (digits, optional k, m or g)");
            min = KHEAP_PURGE_MIN;
        }
    }
    if (set)
        set_purge(slack, min);
    /* The decay epoch in milliseconds, 0 for none (at most a day). */
    v = getenv("KHEAP_DECAY_MS");
    if (v && *v) {
        size_t ms = 0;
        const char *p = v;
        while (*p >= '0' && *p <= '9' && ms <= 86400000u)
            ms = ms * 10 + (size_t)(*p++ - '0');
        if (p != v && !*p && ms <= 86400000u) {
            kheap_set_decay(kheap_default(), (unsigned)ms);
            decay_ms = (unsigned)ms;
        } else
            bad_option("KHEAP_DECAY_MS", v, "not a count of milliseconds up to 86400000");
    }
#if KHEAP_REDZONE
    /* libkheap-debug.so: its zero-size blocks sit on shut pages of the
     * guard pool; a fault through one is reported. It samples nothing. */
    (void)kheap_hosted_catch_faults(kheap_default());
    v = getenv("KHEAP_SAMPLE_RATE");
    if (v && *v)
        bad_option("KHEAP_SAMPLE_RATE", v, "libkheap-debug.so checks every block; it does not sample");
#else
    /* Sampled guard blocks: about one allocation in N, 0 for none. */
    v = getenv("KHEAP_SAMPLE_RATE");
    if (v && *v) {
        unsigned long n = 0;
        const char *p = v;
        while (*p >= '0' && *p <= '9' && n <= 1000000000ul)
            n = n * 10 + (unsigned long)(*p++ - '0');
        int err;
        if (p == v || *p || n > 1000000000ul)
            bad_option("KHEAP_SAMPLE_RATE", v, "not a count of allocations up to 1000000000");
        else if ((err = kheap_set_sample(kheap_default(), n)) != 0)
            bad_option("KHEAP_SAMPLE_RATE", v, kheap_strerror(err));
        else if (n && (err = kheap_hosted_catch_faults(kheap_default())) != 0) {
            /* No handler, no sampling: a fault would go unexplained. */
            kheap_set_sample(kheap_default(), 0);
            bad_option("KHEAP_SAMPLE_RATE", v, kheap_strerror(err));
        }
    }
#endif
}

static void shim_fork_child(void)
{
    pthread_mutex_init(&sum_lock, NULL);
    pthread_mutex_init(&purge_lock, NULL);
    pthread_mutex_init(&ctl_lock, NULL);
    pthread_mutex_init(&print_lock, NULL);
}

static int stats_at_exit;

__attribute__((constructor)) static void shim_start(void)
{
    pthread_atfork(NULL, NULL, shim_fork_child);
    options_start();
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
        const char *why;
        unsigned cpus = kheap_hosted_cpu_mode(&why);
        char mode[128];
        if (cpus)
            snprintf(mode, sizeof mode, "per-CPU caches on %u CPUs (restartable sequences%s%s)",
                     cpus, why[0] ? "; " : "", why);
        else
            snprintf(mode, sizeof mode, "%u per-thread slots (%s)", (unsigned)KHEAP_MAX_CPUS, why);
        char decay[40] = "decay off";
        if (decay_ms)
            snprintf(decay, sizeof decay, "decay epoch %u ms", decay_ms);
        int n = snprintf(report_buf, sizeof report_buf,
                         "kheap: %s: default heap %p, %zu MiB in %zu region(s) "
                         "(%zu pages), page size %zu, %s, purge slack %zu, "
                         "purge minimum %zu, %s\n",
                         KHEAP_HOSTED_RSEQ ? "libkheap-percpu.so" : "libkheap.so", (void *)h,
                         (size_t)(s.heap_total >> 20), (size_t)s.region_count,
                         s.heap_total / KHEAP_PAGE_SIZE, (size_t)KHEAP_PAGE_SIZE, mode,
                         purge_slack, purge_min, decay);
        if (n > 0)
            put_err(report_buf, bounded((size_t)n));
    }
    live_start();
}

__attribute__((destructor)) static void shim_end(void)
{
    if (live.on && getpid() == live.pid) {
        kheap_hosted_set_idle_hook(NULL);
        while (__atomic_exchange_n(&live_busy, 1, __ATOMIC_ACQUIRE))
            sched_yield();
        pthread_mutex_lock(&sum_lock);
        live_write("exit");
        pthread_mutex_unlock(&sum_lock);
        __atomic_store_n(&live_busy, 0, __ATOMIC_RELEASE);
    }
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
