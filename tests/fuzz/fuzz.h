/*
 * fuzz.h - what the libFuzzer harnesses (fuzz_api.c, fuzz_misuse.c)
 * share: the input read as a stream of numbers, sizes drawn from it, the
 * size-class rule, block contents, and failing loudly.
 *
 * Reading past the end of the input gives zeros, so every input, however
 * short, is a valid program; the harnesses stop when the input is used up.
 * A failed FZ_CHECK prints what went wrong, with the values, and calls
 * abort(): libFuzzer then saves the input as a crash file.
 */
#ifndef KHEAP_FUZZ_H
#define KHEAP_FUZZ_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "kheap.h"
#include "support.h"

/* libFuzzer's entry point (the harness defines it). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_PAGE KHEAP_PAGE_SIZE

__attribute__((noreturn, format(printf, 1, 2))) static inline void fz_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("fuzz: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

#define FZ_CHECK(cond, ...)                                                   \
    do {                                                                      \
        if (!(cond))                                                          \
            fz_fail(__VA_ARGS__);                                             \
    } while (0)

/* ---- the input ---- */

struct fz_in {
    const uint8_t *p;
    size_t n;
};

static inline bool fz_more(const struct fz_in *in)
{
    return in->n > 0;
}

static inline unsigned fz_u8(struct fz_in *in)
{
    if (!in->n)
        return 0;
    in->n--;
    return *in->p++;
}

static inline unsigned fz_u16(struct fz_in *in)
{
    unsigned lo = fz_u8(in);
    return lo | fz_u8(in) << 8;
}

static inline uint32_t fz_u32(struct fz_in *in)
{
    uint32_t lo = fz_u16(in);
    return lo | (uint32_t)fz_u16(in) << 16;
}

/* Once per process, before the first input: the class rule and the
 * capture of reports (every report is the harness's to judge). */
static inline void fz_start(void)
{
    static bool once;
    if (!once) {
        kt_make_classes();
        kt_capture_reports(NULL);
        once = true;
    }
}

/* ---- the size-class rule (docs/SIZE_CLASSES.md), computed from the
 * rule in tests/support.c, not taken from the library: the usable size of
 * a plain allocation, and class sizes ---- */
#define fz_usable kt_usable
#define fz_is_class kt_is_class


/* A request size up to max: mostly small, often on or next to a class or
 * page boundary, sometimes large. kt_make_classes must have run. */
static inline size_t fz_size(struct fz_in *in, size_t max)
{
    unsigned sel = fz_u8(in);
    uint32_t v = fz_u16(in);
    int off = (int)(sel >> 3) % 3 - 1;
    size_t n;
    switch (sel & 7) {
    case 0: case 1: case 2: n = v % 257; break;
    case 3: n = v % 4097; break;
    case 4: n = v % (KHEAP_MAX_CLASS + 1); break;
    case 5: n = (size_t)((long)kt_class[v % KHEAP_NUM_CLASSES] + off); break;
    case 6: n = (size_t)((long)((v % 64 + 1) * FZ_PAGE) + off); break;
    default: n = KHEAP_MAX_CLASS + ((size_t)v << 4 | (sel >> 4)); break;
    }
    return n > max ? n % (max + 1) : n;
}

/* ---- block contents: kt_pattern over the first and last FZ_EDGE bytes
 * from `from` (bytes below it are a constructor's) ---- */

#define FZ_EDGE 256

static inline void fz_fill(unsigned char *p, size_t n, size_t from, uint32_t seed)
{
    kt_pattern_fill(p, n, from, FZ_EDGE, seed);
}

/* The first byte below limit that lost its pattern, or SIZE_MAX. */
static inline size_t fz_find_bad(const unsigned char *p, size_t n, size_t from, uint32_t seed,
                                 size_t limit)
{
    return kt_pattern_find_bad(p, n, from, FZ_EDGE, seed, limit);
}

#endif /* KHEAP_FUZZ_H */
