/*
 * kh_front.h - the per-CPU front of the caches: what the hit paths touch.
 *
 * A CPU's front of a cache (struct kh_cc) is its loaded and previous
 * magazine; struct kh_cpu holds a CPU's fronts of the kmalloc classes and
 * the size -> front map of small requests. With them here: the size-class
 * map, the magazine pop and push, the slot test and the double-free key,
 * which the hit paths (kh_fast.h) and the slow paths (cpu.c, kmalloc.c)
 * share. Nothing here knows the heap structure, so the hit-path header,
 * and what includes only it (the malloc shim), sees no more of kheap.
 */
#ifndef KH_FRONT_H
#define KH_FRONT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kheap.h"
#include "kheap_port.h"

/* Poisoning of freed objects (KHEAP_DEBUG >= 2; valgrind does better). */
#if KHEAP_DEBUG >= 2 && !KHEAP_VALGRIND
#define KH_POISON 1
#else
#define KH_POISON 0
#endif

#define KH_PAGE ((uintptr_t)KHEAP_PAGE_SIZE)
#define KH_PAGE_MASK (KH_PAGE - 1)

/* Smallest object slot: a free object holds a pointer. */
#define KH_MIN_SLOT 16u

#define kh_likely(x) __builtin_expect(!!(x), 1)
#define kh_unlikely(x) __builtin_expect(!!(x), 0)
#define kh_noinline __attribute__((noinline))

static inline uintptr_t kh_align_up(uintptr_t x, uintptr_t a)
{
    return (x + a - 1) & ~(a - 1);
}
static inline bool kh_is_pow2(size_t x)
{
    return x && !(x & (x - 1));
}
static inline unsigned kh_log2(size_t x) /* x > 0 */
{
    return (unsigned)(sizeof(long long) * 8 - 1) -
           (unsigned)__builtin_clzll((unsigned long long)x);
}

/* Builds that watch every object take the slow paths only. */
#if KH_POISON || KHEAP_VALGRIND || KHEAP_DEBUG >= 3
#define KH_FAST 0
#else
#define KH_FAST 1
#endif

/* ------------------------------------------------------------------ */
/* Per-CPU magazines (cpu.c). */

#define KH_CACHE_LINE ((unsigned)KHEAP_CACHE_LINE)

/* A magazine: a stack of up to cap constructed objects of one cache. */
struct kh_mag {
    uint32_t n;          /* objects held: obj[0 .. n) */
    uint32_t cap;        /* 0 only for kh_mag_sentinel */
    struct kh_mag *next; /* depot list link */
    void *obj[];
};

/* The operations that left a CPU's hit path, per cache (same writers and
 * readers as the kh_cc counters). */
struct kh_misses {
    uint64_t alloc, free;
};

/* One CPU's front of one cache, alone on its cache line. The loaded
 * magazine is held as a stack of pointers: its objects are [base, top),
 * and it has room up to limit, so a hit reads and writes top and nothing
 * else of the magazine header (its n is brought up to date only when the
 * magazine is unloaded: kh_cc_unload). Written only by its CPU (or by
 * kheap_cpu_flush once the CPU has stopped); the counters are read by any
 * CPU with relaxed atomic loads and summed. */
struct kh_cc {
    void **top;   /* one past the loaded magazine's last object */
    void **base;  /* loaded->obj: top == base when it is empty */
    void **limit; /* loaded->obj + loaded->cap: top == limit when full */
    struct kh_mag *prev;
    union {
        /* kmalloc classes (kh_cpu.cc): free's slot test (see
         * kheap_cache.divtest), copied from the class so the hit path of
         * free reads one line; both 0 (every test fails) in cc[0] and for
         * classes of multi-page slabs. Their miss counters are in
         * kh_cpu.miss. */
        struct {
            uint64_t divtest, slot_lim;
        };
        /* User caches (kheap_cache.percpu), which have no hit path for
         * free by address: their miss counters. */
        struct kh_misses miss;
    };
    uint64_t allocs, frees; /* every allocation / free on this CPU */
} __attribute__((aligned(KH_CACHE_LINE)));

_Static_assert(sizeof(struct kh_cc) == KH_CACHE_LINE || KH_CACHE_LINE < 64,
               "kh_cc is one cache line");
_Static_assert(sizeof(struct kh_cc) % KH_CACHE_LINE == 0, "kh_cc is padded to lines");


/* Index of kmalloc class cls in kh_cpu.cc: entry 0 is a front that never
 * hits, for the hit path of free to land on when a page has no class. */
#define KH_CC(cls) ((cls) + 1u)
#define KH_CC_COUNT (KHEAP_NUM_CLASSES + 1u)
/* kh_cpu.direct covers requests up to this many bytes, by (n + 7) / 8. */
#define KH_DIRECT_MAX 1024u
#define KH_DIRECT_COUNT (KH_DIRECT_MAX / 8u + 1u)

/* One CPU's fronts of the kmalloc classes, allocated on the CPU's first
 * use of the heap. The whole structure belongs to one CPU. direct[] maps a
 * small request straight to its class's front (as mimalloc's
 * pages_free_direct does), so the hit path of allocation indexes one
 * table that is already in the CPU's own lines. */
struct kh_cpu {
    struct kh_cc cc[KH_CC_COUNT];
    struct kh_cc *direct[KH_DIRECT_COUNT];
    struct kh_misses miss[KHEAP_NUM_CLASSES];
    /* KHEAP_NOLOCK (cpu.c, kmalloc.c). busy: non-zero while this CPU runs
     * a slow path that changes its fronts of this heap's kmalloc classes
     * (previous magazines, loads, swaps), or a KHEAP_NOLOCK call that
     * uses one; a KHEAP_NOLOCK call that finds it non-zero leaves the
     * fronts alone. nlc: objects KHEAP_NOLOCK calls took from and gave to
     * the class on this CPU. Written only by this CPU, with atomic adds,
     * so an interrupt between any two of its instructions sees them
     * whole; the hit paths never touch them. */
    unsigned busy;
    struct kh_nlc {
        uint32_t allocs, frees; /* modulo 2^32 */
    } nlc[KHEAP_NUM_CLASSES];
} __attribute__((aligned(KH_CACHE_LINE)));
_Static_assert(sizeof(struct kh_cpu) <= 8192, "a CPU's state fits two pages");

_Static_assert(_Alignof(struct kh_cpu) == KH_CACHE_LINE,
               "a CPU's state starts on its own cache line");
_Static_assert(sizeof(struct kh_cc) * KH_CC_COUNT <= 0xffffu,
               "page tags (uint16_t) hold offsets of fronts in kh_cpu");

extern struct kh_mag kh_mag_sentinel;
extern struct kh_cpu kh_cpu_sentinel;

/* The loaded magazine of a front, and the objects it holds. */
static inline struct kh_mag *kh_cc_mag(const struct kh_cc *cc)
{
    return (struct kh_mag *)((char *)cc->base - offsetof(struct kh_mag, obj));
}
static inline uint32_t kh_cc_held(const struct kh_cc *cc)
{
    return (uint32_t)(cc->top - cc->base);
}
/* Make m the loaded magazine (its n objects count). */
static inline void kh_cc_load(struct kh_cc *cc, struct kh_mag *m)
{
    cc->base = m->obj;
    cc->top = m->obj + m->n;
    cc->limit = m->obj + m->cap;
}
/* The loaded magazine with its n brought up to date, for a caller that
 * is about to replace it. The sentinel is never written. */
static inline struct kh_mag *kh_cc_unload(struct kh_cc *cc)
{
    struct kh_mag *m = kh_cc_mag(cc);
    if (m != &kh_mag_sentinel)
        m->n = kh_cc_held(cc);
    return m;
}

/* The double-free key (the idea of glibc's tcache key): an object of a
 * guarded cache that enters a magazine gets KH_GUARD_KEY in bytes 8..11,
 * and leaves with them zero; a free that finds the key there goes to the
 * slow path, which looks for the object in this CPU's magazines and the
 * depot before caching it again (kmalloc.c). A live object that happens to
 * hold the key only costs that look. Every kmalloc class is guarded (no
 * constructor, at least 16 bytes), so its hit paths write the key
 * unconditionally. */
#define KH_GUARD_KEY 0xf4eeb10cu
_Static_assert(KH_MIN_SLOT >= 12, "kmalloc slots hold the key");

static inline uint32_t *kh_guard_word(void *p)
{
    return (uint32_t *)p + 2;
}

extern const uint8_t kh_small_class[129];

/* The bytes of the kmalloc classes by front: kh_cc_bytes[k + 1] is the
 * size of the class whose front is kh_cpu.cc[k] (k = KH_CC(class)), and
 * kh_cc_bytes[0] and [1] are 0 (below class 0, and the front cc[0] of no
 * class). A request of n bytes is of that class iff
 * kh_cc_bytes[k] < n <= kh_cc_bytes[k + 1]: the sized free's hit path
 * (kh_fast.h) tests its size against the front a page's tag names. */
#define KH_CC_BYTES 81u
extern const size_t kh_cc_bytes[KH_CC_BYTES];
_Static_assert(KH_CC_COUNT + 1 <= KH_CC_BYTES, "kh_cc_bytes covers every front");

/* Size class of a request of n <= KHEAP_MAX_CLASS bytes. */
static inline unsigned kh_class_of(size_t n)
{
    if (kh_likely(n <= 1024))
        return kh_small_class[(n + 7) >> 3];
    unsigned f = kh_log2(n - 1);
    return 7 + ((f - 6) << KHEAP_CLASS_SUB_SHIFT) +
           (unsigned)(((n - 1) >> (f - KHEAP_CLASS_SUB_SHIFT)) &
                      ((1u << KHEAP_CLASS_SUB_SHIFT) - 1));
}

/* Count one operation in a per-CPU counter: only its CPU writes it, other
 * CPUs only read it. x86-64 adds in memory with one (unlocked) instruction,
 * whose 8-byte store a reader sees whole; elsewhere, and where a thread
 * checker must see the store, a relaxed atomic load, add and store. */
static inline void kh_bump(uint64_t *ctr)
{
#if defined(__x86_64__) && !defined(__SANITIZE_THREAD__) && !KHEAP_VALGRIND
    __asm__("incq %0" : "+m"(*ctr));
#else
    __atomic_store_n(ctr, *ctr + 1, __ATOMIC_RELAXED);
#endif
}

/* Pop an object from cc's loaded magazine into *out; false if it is
 * empty. (Not "NULL if empty": the callers would test the object again.) */
static inline bool kh_cc_pop(struct kh_cc *cc, void **out)
{
    void **t = cc->top;
    if (kh_unlikely(t == cc->base))
        return false;
    *out = *--t;
    cc->top = t;
    kh_bump(&cc->allocs);
    return true;
}

/* Push p onto cc's loaded magazine; false if it is full. */
static inline bool kh_cc_push(struct kh_cc *cc, void *p)
{
    void **t = cc->top;
    if (kh_unlikely(t >= cc->limit))
        return false;
    *t = p;
    cc->top = t + 1;
    kh_bump(&cc->frees);
    return true;
}

/* Is off (bytes from the start of a one-page slab) a slot of the class
 * whose constants cc holds? One multiply and one compare. */
static inline bool kh_cc_slot(const struct kh_cc *cc, uintptr_t off)
{
    return (uint64_t)(uint32_t)off * cc->divtest < cc->slot_lim;
}

/* A heap's first region and its page tags, for the free hit (kh_fast.h): tags[i] is
 * the offset in struct kh_cpu of the front of the kmalloc class whose
 * one-page slab page i is, else 0 (a front whose slot test always fails).
 * span is 0 (every pointer misses) until the window is set up; it is
 * stored last (release) and loaded first (acquire), so a reader that sees
 * it sees the rest. */
struct kh_window {
    uintptr_t start, span;
    uint16_t *tags; /* written by the slab layer (slab.c) */
};

#endif /* KH_FRONT_H */
