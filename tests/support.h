/*
 * support.h - what kheap's tests share, in the part that runs everywhere:
 * hosted (tests/test_*.c) and on bare metal (tests/bodies.c in the demo
 * kernels). Freestanding: it needs kheap.h, kheap_port.h and compiler builtins
 * only.
 *
 *   random numbers   kt_rand and friends: one xorshift64* generator,
 *                    header-only (the benchmarks use it too)
 *   size classes     kt_class[], computed from the documented rule
 *   report capture   kt_capture_reports: the one place that installs
 *                    kheap's report hook for a test
 *   object caches    kt_ctor / kt_dtor: a counting constructor and
 *                    destructor pair that checks the constructed state
 *
 * The hosted part (the TAP harness, the environment, seeds, mapped
 * regions) is harness.h, which includes this file.
 */
#ifndef KHEAP_TEST_SUPPORT_H
#define KHEAP_TEST_SUPPORT_H

#include <stddef.h>
#include <stdint.h>

#include "kheap.h"
#include "kheap_port.h" /* struct kheap_report */

/* ---- random numbers: xorshift64* (Marsaglia's xorshift, multiplied) ----
 * A state must not be 0; kt_rand_seed never returns 0. One state per
 * thread: none of these touch shared data. */

static inline uint64_t kt_rand(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545f4914f6cdd1dull;
}

/* 0 .. n - 1 from the high 32 bits of r, by a multiply instead of a
 * division; n at most 2^32. */
static inline uint64_t kt_rand_scale(uint64_t r, uint64_t n)
{
    return ((r >> 32) * n) >> 32;
}

/* 0 .. n - 1 (n from 1 to 2^32). */
static inline uint64_t kt_rand_below(uint64_t *s, uint64_t n)
{
    return kt_rand_scale(kt_rand(s), n);
}

/* lo .. hi, both included (hi - lo below 2^32). */
static inline size_t kt_rand_range(uint64_t *s, size_t lo, size_t hi)
{
    return lo + (size_t)kt_rand_below(s, (uint64_t)(hi - lo) + 1);
}

/* The state of stream number `stream` (a test, a thread) of a run with
 * this seed: the two mixed by splitmix64's finalizer, never 0. */
static inline uint64_t kt_rand_seed(uint64_t seed, uint64_t stream)
{
    uint64_t z = seed + (stream + 1) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return z ? z : 0x853c49e6748fea9bull;
}

/* ---- size classes, from their documented rule (16 to 64 by 8, then 8
 * classes per doubling up to KHEAP_MAX_CLASS), not from the library, so
 * tests can hold the library to the rule. Filled by kt_make_classes. ---- */

extern size_t kt_class[KHEAP_NUM_CLASSES];
void kt_make_classes(void);

/* ---- report capture ----
 * kt_capture_reports routes kheap's reports to the test: each is counted
 * and kept as the last one, then `seen` (if not NULL) is called with it
 * and its number (1 for the first since kt_reports_reset). Any thread or
 * CPU may report; the count is atomic and the copy of the last report is
 * taken under a spin lock. kt_release_reports gives reports back to the
 * port's default sink. */

typedef void (*kt_report_seen_fn)(const struct kheap_report *r, unsigned long nth);

void kt_capture_reports(kt_report_seen_fn seen);
void kt_release_reports(void);
/* Count to 0 and the last report cleared. */
void kt_reports_reset(void);
/* Reports since the last reset. */
unsigned long kt_reports(void);
/* A copy of the last report (all zero if none). */
struct kheap_report kt_last_report(void);
/* Name of a report kind ("DOUBLE_FREE"), "?" for an unknown one. */
const char *kt_report_kind_name(int kind);

/* ---- a constructor/destructor pair for object caches ----
 * kt_ctor writes KT_CTOR_MAGIC into the first 8 bytes of the object (so
 * objects must have 8 bytes) and counts; kt_dtor counts, and counts the
 * objects that reach it without that magic as bad. Counters are atomic
 * and shared by every cache that uses the pair. */

#define KT_CTOR_MAGIC 0x6b7443746f724d67ull

struct kt_ctor_counts {
    unsigned long ctor, dtor, dtor_bad;
};

void kt_ctor(void *obj);
void kt_dtor(void *obj);
void kt_ctor_reset(void);
struct kt_ctor_counts kt_ctor_counts(void);

#endif /* KHEAP_TEST_SUPPORT_H */
