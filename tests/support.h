/*
 * support.h - what kheap's tests share, in the part that runs everywhere:
 * hosted (tests/test_*.c) and on bare metal (tests/bodies.c in the demo
 * kernels). Freestanding: it needs kheap.h, kheap_port.h and compiler
 * builtins only.
 *
 *   random numbers   kt_rand and friends (rand.h: one xorshift64*
 *                    generator, header-only; the benchmarks use it too)
 *   size classes     kt_class[], computed from the documented rule
 *   report capture   kt_capture_reports: the one place that installs
 *                    kheap's report hook for a test
 *   block contents   kt_pattern_fill / kt_pattern_find_bad
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
#include "rand.h"

/* ---- size classes, from their documented rule (16 to 64 by 8, then 8
 * classes per doubling up to KHEAP_MAX_CLASS), not from the library, so
 * tests can hold the library to the rule. Filled by kt_make_classes. ---- */

extern size_t kt_class[KHEAP_NUM_CLASSES];
void kt_make_classes(void);
/* By that rule (after kt_make_classes): the index of the class of a
 * request of n <= KHEAP_MAX_CLASS bytes, its size, the usable size of a
 * plain allocation of n bytes (its class, or whole pages above the
 * classes), and whether u is a class size. */
size_t kt_class_index(size_t n);
size_t kt_class_of(size_t n);
size_t kt_usable(size_t n);
bool kt_is_class(size_t u);
/* The alignment kheap.h promises a block of usable size u. */
size_t kt_natural_align(size_t u);

/* ---- probes a model of the heap makes ---- */

/* Can a run of `pages` pages (more than a class) be had from h now? Takes
 * one and gives it back, counting both in the model's *allocs and
 * *frees, or the failure in *failed. */
bool kt_run_available(kheap_t *h, size_t pages, uint64_t *allocs, uint64_t *frees,
                      uint64_t *failed);
/* Pages of free run a new slab of each kmalloc class needs (its slab's
 * pages plus the alignment a power-of-two class asks of the slab), from
 * kheap_slabinfo; returns the most any class needs. */
size_t kt_slab_needs(kheap_t *h, size_t need[KHEAP_NUM_CLASSES]);

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

/* ---- block contents: a pattern at both edges of a block ----
 * Byte i of a block tagged seed holds kt_pattern(seed, i). Only the first
 * `edge` bytes from `from` and the last `edge` bytes are written and
 * checked, so large blocks cost little; bytes below `from` (a
 * constructor's state) are left alone. */

static inline unsigned char kt_pattern(uint32_t seed, size_t i)
{
    return (unsigned char)(((seed ^ (uint32_t)i) * 0x9e3779b1u) >> 24);
}

void kt_pattern_fill(unsigned char *p, size_t n, size_t from, size_t edge, uint32_t seed);
/* The first byte below limit that lost its pattern, or SIZE_MAX. */
size_t kt_pattern_find_bad(const unsigned char *p, size_t n, size_t from, size_t edge,
                           uint32_t seed, size_t limit);

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
