/*
 * rand.h - the one pseudo-random generator of kheap's tests and
 * benchmarks: xorshift64* (Marsaglia's xorshift, then a multiply), a few
 * instructions, no division, no shared state. Header-only and
 * freestanding; needs nothing from kheap.
 */
#ifndef KHEAP_TEST_RAND_H
#define KHEAP_TEST_RAND_H

#include <stddef.h>
#include <stdint.h>

/* A state must not be 0; kt_rand_seed never returns 0. One state per
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

#endif /* KHEAP_TEST_RAND_H */
