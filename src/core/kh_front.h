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
/* The hit paths: inlined into every caller however many there are (the
 * malloc shim calls them from a dozen functions). */
#define kh_always_inline inline __attribute__((always_inline))

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
    uint16_t cap;        /* 0 only for kh_mag_sentinel */
    uint8_t home;        /* in the depot's full list: the home of its
                            top object's slab (cpu.c, mag_home), or
                            KH_HOME_NONE; a refill takes its own first */
    uint8_t origin;      /* the CPU that sent it to an inbox, which it
                            goes back to empty (cpu.c, "Inboxes"), or
                            KH_HOME_NONE */
    struct kh_mag *next; /* depot, inbox, stash, spare and gathered
                            empties' list link */
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
    /* frees, top and allocs in this order: a hit path that must commit
     * with one store (the hosted port's restartable sequences) writes
     * top with allocs, or frees with top, as one 16-byte store. */
    uint64_t frees; /* every free on this CPU */
    void **top;     /* one past the loaded magazine's last object */
    uint64_t allocs; /* every allocation on this CPU */
    void **base;  /* loaded->obj: top == base when it is empty */
    void **limit; /* loaded->obj + loaded->cap: top == limit when full;
                     NULL only in kh_cpu.run_front */
    union {
        struct kh_mag *prev;
        struct kh_runcache *runs; /* kh_cpu.run_front: the CPU's cache of
                                     large blocks, kh_runcache_none until
                                     its first large free */
    };
    union {
        /* kmalloc classes (kh_cpu.cc): free's slot test (see
         * kheap_cache.divtest), copied from the class so the hit path of
         * free reads one line; both 0 (every test fails) in cc[0] and
         * in kh_cpu.run_front. Their miss counters are in
         * kh_cpu.miss. */
        struct {
            uint64_t divtest, slot_lim;
        };
        /* User caches (kheap_cache.percpu), which have no hit path for
         * free by address: their miss counters. */
        struct kh_misses miss;
    };
} __attribute__((aligned(KH_CACHE_LINE)));

_Static_assert(sizeof(struct kh_cc) == KH_CACHE_LINE || KH_CACHE_LINE < 64,
               "kh_cc is one cache line");
_Static_assert(sizeof(struct kh_cc) % KH_CACHE_LINE == 0, "kh_cc is padded to lines");
_Static_assert(sizeof(void *) != 8 ||
                   (offsetof(struct kh_cc, top) == 8 && offsetof(struct kh_cc, allocs) == 16),
               "frees, top, allocs are adjacent words (kh_cc)");


/* Index of kmalloc class cls in kh_cpu.cc: entry 0 is a front that never
 * hits, for the hit path of free to land on when a page has no class. */
#define KH_CC(cls) ((cls) + 1u)
#define KH_CC_COUNT (KHEAP_NUM_CLASSES + 1u)

/* Homes (slab.c, "Homes"; KHEAP_HOMES): built where the free hit path is
 * and a heap may have more than one CPU, the port's committed free too
 * (the hosted port's restartable sequences: hosted_tx.h, kh_tx_free).
 * A CPU's state then has a remote
 * front per class (kh_cpu.remote), where the free hit path pushes the
 * objects of slabs homed at other CPUs (kh_fast.h); allocations never pop
 * from it, and its full magazines go to their objects' home's inbox, or
 * to the depot tagged with that home (cpu.c, "Inboxes"). A home is a CPU
 * number, KH_HOME_NONE for none. */
#if KH_FAST && KHEAP_PERCPU && KHEAP_HOMES && KHEAP_MAX_CPUS > 1
#define KH_HOMES 1
#else
#define KH_HOMES 0
#endif
#define KH_HOME_NONE 0xffu
_Static_assert(KHEAP_MAX_CPUS < KH_HOME_NONE, "a home (a CPU number) fits a byte below KH_HOME_NONE");

/* Per-CPU caches of large blocks (kh_runcache): built where the hit paths
 * are, not in the debug build (whose large blocks are not page runs of
 * their own). Runs of KH_RUN_MIN_PAGES to KH_RUN_MAX_PAGES pages. */
#if KH_FAST && KHEAP_PERCPU && !KHEAP_REDZONE && KHEAP_RUN_CACHE_BYTES > 0 && \
    KHEAP_RUN_CACHE_MAX > (1L << KHEAP_MAX_CLASS_SHIFT)
#define KH_RUNS 1
#else
#define KH_RUNS 0
#endif
#define KH_RUN_MIN_PAGES ((KHEAP_MAX_CLASS >> KHEAP_PAGE_SHIFT) + 1u)
#define KH_RUN_MAX_PAGES ((unsigned)(KHEAP_RUN_CACHE_MAX >> KHEAP_PAGE_SHIFT))
#define KH_RUN_BINS (KH_RUN_MAX_PAGES >= KH_RUN_MIN_PAGES ? KH_RUN_MAX_PAGES - KH_RUN_MIN_PAGES + 1u : 1u)
#if KH_RUNS
_Static_assert(KH_RUN_MAX_PAGES <= 0xffff, "a run's page count fits kh_ptag.run");
#endif

/* One CPU's cache of large blocks: freed page runs of KH_RUN_MIN_PAGES +
 * i pages in bin[i], a stack linked through the runs' first words, for
 * the CPU's next allocations of that many pages. A cached run is a large
 * block as far as the page layer knows (committed, counted in
 * large_bytes), free as far as the program knows: its page tag is 0,
 * where a live one's is KH_RUN_TAG. Made by the CPU's first large free
 * (cpu.c), kept with the CPU's state; read and written only by its CPU,
 * or by one that flushes it once the CPU has stopped (as its magazines).
 * Until then the CPU's state points at kh_runcache_none, whose bins are
 * empty and whose caps are 0, so that both hit paths miss on it with no
 * test of their own (kh_cpu_runs tells it from a cache).
 *
 * A bin is laid out as a front of the kmalloc classes is (frees, head,
 * allocs adjacent), so that a hit path that must commit with one store
 * (the hosted port's restartable sequences) pops by writing head with
 * allocs, and pushes by writing frees with head. Everything else is
 * derived from the bins: the runs a bin holds are frees - allocs (a run
 * flushed to the page layer is taken out of frees again, so the heap
 * counts its free once: cpu.c, runs_flush), its pages that times its page
 * count, and the counters of kheap_stats sums over the bins. The bound
 * is per bin, a count of runs (cap), which a push compares with what the
 * bin holds: the slow path raises a bin's cap while the caps' pages
 * together (capped) stay within limit, taking back caps other bins do not
 * use first (cpu.c, runs_room). The counters are read by any CPU with
 * relaxed loads. */
struct kh_runbin {
    uint64_t frees; /* the program's frees this bin served, less flushed */
    void *head;     /* the last run pushed, or NULL */
    uint64_t allocs; /* the program's allocations this bin served */
    uint64_t cap;    /* runs the bin may hold; set by the slow path */
};
_Static_assert(sizeof(void *) != 8 ||
                   (offsetof(struct kh_runbin, frees) == 0 && offsetof(struct kh_runbin, head) == 8 &&
                    offsetof(struct kh_runbin, allocs) == 16 &&
                    offsetof(struct kh_runbin, cap) == 24 && sizeof(struct kh_runbin) == 32),
               "frees, head, allocs, cap are adjacent words (kh_runbin)");
struct kh_runcache {
    struct kh_runbin bin[KH_RUN_BINS];
    uint64_t limit;  /* pages the bins' caps may add up to (cpu.c) */
    uint64_t capped; /* pages the bins' caps add up to */
    uint64_t epoch, epoch_allocs; /* decay: the epoch last looked at, and
                                     the bins' allocs then (cpu.c) */
};
#if KH_RUNS
/* The cache of large blocks of a CPU that has none (cpu.c): never
 * written. */
extern struct kh_runcache kh_runcache_none;
#endif
/* kh_cpu.direct covers requests up to this many bytes, by (n + 7) / 8. */
#define KH_DIRECT_MAX 1024u
#define KH_DIRECT_COUNT (KH_DIRECT_MAX / 8u + 1u)

#if KH_HOMES
/* A CPU's inbox of one kmalloc class (cpu.c, "Inboxes"): full magazines
 * whose objects are homed at the CPU, which other CPUs' remote fronts
 * send it, and the empty magazines it sent others, which come back.
 * Lists linked through kh_mag.next, pushed by any CPU with a
 * compare-and-exchange (release) and taken whole with an exchange
 * (acquire), by the CPU or by a drain; no magazine is ever taken off
 * alone, so a list has no ABA problem. */
struct kh_inbox {
    struct kh_mag *full, *empty;
};
/* How far a CPU's count of the magazines it sent home and loaded may run
 * before it is added to the heap's (kh_mail.due, kheap.mailed). */
#define KH_DUE_MAX 4
/* How many empty magazines of one class a CPU gathers for the CPU that
 * sent them before giving them back to its inbox, one
 * compare-and-exchange for them all (kh_mail.ret). */
#define KH_RET_MAX 4
/* A CPU's inboxes, and per kmalloc class its stash (full magazines taken
 * from the inbox and not loaded yet), spares (empty magazines for its
 * remote front), the empties on their way back (ret: up to KH_RET_MAX,
 * every one of the same origin, ret_n of them) and its due: these its
 * own alone, as its fronts. */
struct kh_mail {
    struct kh_mag *stash[KHEAP_NUM_CLASSES], *spare[KHEAP_NUM_CLASSES];
    struct kh_mag *ret[KHEAP_NUM_CLASSES];
    uint8_t ret_n[KHEAP_NUM_CLASSES];
    uint64_t epoch; /* the decay epoch whose end gave back the stashes,
                       spares and gathered empties last (cpu.c,
                       kh_cpu_tick) */
    /* What this CPU's sends (+1 each) and loads (-1 each) changed the
     * count of full magazines sent home by (kheap.mailed), not added
     * there yet: added once it reaches KH_DUE_MAX either way, at the
     * CPU's flush and at each decay epoch's end (cpu.c, mailed_due).
     * Written by whoever holds the CPU (the CPU, or the flush of one that
     * stopped), read by the checker and kheap_cache_info: relaxed atomic
     * stores and loads. */
    int32_t due[KHEAP_NUM_CLASSES];
    /* (written by other CPUs: on lines of their own) */
    /* Non-zero from the CPU's flush (its thread's exit, kheap_cpu_flush,
     * an answer to kheap_reclaim) to its next send or inbox load: senders
     * then take the depot's way, so what they free does not wait in the
     * inbox of a CPU that may not come back. Atomic stores and loads. */
    uint8_t away __attribute__((aligned(KH_CACHE_LINE)));
    struct kh_inbox inbox[KHEAP_NUM_CLASSES] __attribute__((aligned(KH_CACHE_LINE)));
};
#endif

/* One CPU's fronts of the kmalloc classes, allocated on the CPU's first
 * use of the heap. The whole structure belongs to one CPU. direct[] maps a
 * small request straight to its class's front (as mimalloc's
 * pages_free_direct does), so the hit path of allocation indexes one
 * table that is already in the CPU's own lines. */
struct kh_cpu {
    struct kh_cc cc[KH_CC_COUNT];
    /* A front that never hits (its slot test constants 0, limit NULL):
     * its offset is the page tag of the first page of a live large block
     * a CPU may cache (KH_RUN_TAG), and it holds the CPU's cache of them
     * (runs), so the free hit finds that cache from the front the tag
     * names. */
    struct kh_cc run_front; /* (runs: kh_runcache_none until the first) */
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
#if KH_HOMES
    /* The remote fronts (KH_HOMES), as the distance in bytes from each
     * front to its class's remote front, which takes the frees on this
     * CPU of the class's objects homed elsewhere: an array laid out as
     * cc[] (struct kh_remote), made on the CPU's first such free (cpu.c),
     * so a CPU that never frees another's objects costs no more. Until
     * then the distance leads to kh_cpu_sentinel's fronts, on which every
     * push misses. Written by this CPU (release), read by others for the
     * walks (acquire). */
    ptrdiff_t remote;
    /* The CPU's inboxes (cpu.c, "Inboxes"), NULL until the first send to
     * it or by it on a heap with homes (mail_make: any CPU, with a
     * compare-and-exchange), then never changed. */
    struct kh_mail *mail;
    /* The CPU's number (cpu_setup), the home its refills give slabs: the
     * free hit path compares a page's home with it (kh_fast.h,
     * kh_cc_home), which saves it a load of the CPU's number where that
     * is not in a register (the default heap's). KH_HOME_NONE in the
     * static states, whose fronts never hit. Never changed. */
    unsigned self;
#endif
} __attribute__((aligned(KH_CACHE_LINE)));
_Static_assert(sizeof(struct kh_cpu) <= 8192, "a CPU's state fits two pages");
#if KH_HOMES
/* A CPU's remote fronts: only their loaded and previous magazines and
 * their frees are used (allocs and the slot test constants stay 0). */
struct kh_remote {
    struct kh_cc cc[KH_CC_COUNT];
};
#endif

_Static_assert(_Alignof(struct kh_cpu) == KH_CACHE_LINE,
               "a CPU's state starts on its own cache line");
_Static_assert(sizeof(struct kh_cc) * (KH_CC_COUNT + 1) <= 0xffffu,
               "page tags (uint16_t) hold offsets of fronts in kh_cpu");
/* The page tag of the first page of a live large block a CPU may cache. */
#define KH_RUN_TAG ((unsigned)offsetof(struct kh_cpu, run_front))
_Static_assert(offsetof(struct kh_cpu, run_front) == sizeof(struct kh_cc) * KH_CC_COUNT,
               "run_front follows the classes' fronts");

extern struct kh_mag kh_mag_sentinel;
extern struct kh_cpu kh_cpu_sentinel;

#if KH_HOMES
/* pc's remote fronts, or NULL if it has none yet (any CPU). */
static inline struct kh_remote *kh_cpu_remote(const struct kh_cpu *pc)
{
    char *r = (char *)pc + __atomic_load_n(&pc->remote, __ATOMIC_ACQUIRE);
    /* (0 in the static states, kh_cpu_sentinel's and kh_cpu_claimed's) */
    return r == (char *)&kh_cpu_sentinel || r == (char *)pc ? NULL : (struct kh_remote *)r;
}

/* pc's inboxes, or NULL if it has none yet (any CPU). */
static inline struct kh_mail *kh_cpu_mail(const struct kh_cpu *pc)
{
    return __atomic_load_n(&pc->mail, __ATOMIC_ACQUIRE);
}
#endif

#if KH_RUNS
/* pc's cache of large blocks, or NULL if it has none yet (any CPU). */
static inline struct kh_runcache *kh_cpu_runs(const struct kh_cpu *pc)
{
    struct kh_runcache *rc = __atomic_load_n(&pc->run_front.runs, __ATOMIC_ACQUIRE);
    return rc == &kh_runcache_none ? NULL : rc;
}
#endif

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

#define KH_GUARD_OFF 8u /* the key's offset in the object */
static inline uint32_t *kh_guard_word(void *p)
{
    return (uint32_t *)((char *)p + KH_GUARD_OFF);
}

extern const uint8_t kh_small_class[129];

/* The bytes of the kmalloc classes by front: kh_cc_bytes[k + 1] is the
 * size of the class whose front is kh_cpu.cc[k] (k = KH_CC(class)), and
 * kh_cc_bytes[0] and [1] are 0 (below class 0, and the front cc[0] of no
 * class). A request of n bytes is of that class iff
 * kh_cc_bytes[k] < n <= kh_cc_bytes[k + 1]: the sized free's hit path
 * (kh_fast.h) tests its size against the front a page's tag names. The
 * entry after the last class's is 0, so no size is of kh_cpu.run_front's
 * "class" (a large block's tag). */
#define KH_CC_BYTES 82u
extern const size_t kh_cc_bytes[KH_CC_BYTES];
_Static_assert(KH_CC_COUNT + 2 <= KH_CC_BYTES, "kh_cc_bytes covers every front and run_front");

/* kh_mid_class[(n - 1) >> 7] is the class of a request of 1024 < n <=
 * KHEAP_MAX_CLASS bytes (heap.c). Above 1 KiB classes are at least 128
 * bytes apart (at most 8 per doubling), so n's class depends on its
 * 128-byte block alone: one load on the multi-page classes' allocation
 * hit instead of a bit scan and seven shifts, adds and moves. Builds with
 * classes past 32 KiB (or closer than 128 bytes) compute it. */
#if KHEAP_MAX_CLASS_SHIFT > 10 && KHEAP_MAX_CLASS_SHIFT <= 15 && KHEAP_CLASS_SUB_SHIFT <= 3
#define KH_MID_TABLE 1
#define KH_MID_COUNT ((size_t)KHEAP_MAX_CLASS >> 7)
extern const uint8_t kh_mid_class[KH_MID_COUNT];
#else
#define KH_MID_TABLE 0
#endif

/* Size class of a request of n <= KHEAP_MAX_CLASS bytes. */
static inline unsigned kh_class_of(size_t n)
{
    if (kh_likely(n <= 1024))
        return kh_small_class[(n + 7) >> 3];
#if KH_MID_TABLE
    return kh_mid_class[(n - 1) >> 7];
#endif
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

/* Add n to a per-CPU counter (as kh_bump). */
static inline void kh_add(uint64_t *ctr, uint64_t n)
{
#if defined(__x86_64__) && !defined(__SANITIZE_THREAD__) && !KHEAP_VALGRIND
    __asm__("addq %1, %0" : "+m"(*ctr) : "r"(n));
#else
    __atomic_store_n(ctr, *ctr + n, __ATOMIC_RELAXED);
#endif
}

/* Pop an object from cc's loaded magazine into *out; false if it is
 * empty. (Not "NULL if empty": the callers would test the object again.)
 * The object is read last, once cc is no longer needed, so that the
 * compiler may load it into the register cc was in, the one it returns
 * (one move fewer). The caller runs between kheap_port_cpu_enter and
 * exit, so nothing else uses cc meanwhile, and the order of the stores
 * and the load does not matter. */
static inline bool kh_cc_pop(struct kh_cc *cc, void **out)
{
    void **t = cc->top;
    if (kh_unlikely(t == cc->base))
        return false;
    cc->top = --t;
    kh_bump(&cc->allocs);
    *out = *t;
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

/* Is off (bytes from the start of a slab, below 2^32: kh_pt_read) a
 * slot of the class whose constants cc holds? One multiply and one
 * compare. */
static inline bool kh_cc_slot(const struct kh_cc *cc, uint64_t off)
{
    return off * cc->divtest < cc->slot_lim;
}

/* The page table of a heap's first region, one entry per page, for the
 * hit paths (kh_fast.h). tag is the offset in struct kh_cpu of the front
 * of the kmalloc class whose slab the page is part of, KH_RUN_TAG on the
 * first page of a live large block a CPU may cache, else 0 (a front whose
 * slot test always fails). rebase, added to the 32-bit offset in the
 * window of an address on a slab page, gives the address's offset in its
 * slab: minus the slab's first page's offset, modulo 2^32 (a slab is far
 * smaller than 4 GiB). So free's one slot test (kh_cc_slot) serves the
 * classes of one page and of several alike, with no branch between them.
 * run is the page count of the large block whose first page it is (live
 * or cached). Both are written before the tag (release) and fixed while
 * it is set; stale otherwise, and then never used: a page with tag 0
 * fails every test. On a slab page the half-word of run is home instead,
 * which changes while the tag is set: a stale home only sends a free to
 * the other front (kh_fast.h). */
struct kh_ptag {
    uint16_t tag; /* written by the slab layer (slab.c) and kmalloc.c */
    union {
        uint16_t run;  /* written before a KH_RUN_TAG */
        uint16_t home; /* a slab page's: its slab's home (kh_page.home),
                          KH_HOME_NONE before its first refill; written
                          under the cache's lock, read by the free hit
                          path with no lock (kh_fast.h) */
    };
    uint32_t rebase; /* written before a slab's tag */
};
_Static_assert(sizeof(struct kh_ptag) == 8 && offsetof(struct kh_ptag, tag) == 0 &&
                   offsetof(struct kh_ptag, rebase) == 4,
               "a page table entry is 8 bytes, tag first, rebase at 4 (kh_pt_read)");

/* A heap's first region and its page table, for the free hit (kh_fast.h).
 * span is 0 (every pointer misses) until the window is set up; it is
 * stored last (release) and loaded first (acquire), so a reader that sees
 * it sees the rest. */
struct kh_window {
    uintptr_t start, span;
    struct kh_ptag *pt;
};

/* The tag of the page of the window offset off, from the page table pt,
 * and in *soff off's offset in its slab, below 2^32 (meaningful only
 * where the tag names a class). For the free hit paths (kh_fast.h). */
static kh_always_inline size_t kh_pt_read(const struct kh_ptag *pt, uintptr_t off, uint64_t *soff)
{
    uintptr_t pg = off >> KHEAP_PAGE_SHIFT;
#if defined(__x86_64__)
    /* Both loads indexed off the table, and one add from memory: a 32-bit
     * add clears the upper half, which the compiler would clear again, and
     * it would make the entry's address first. (Plain loads of 16 and 32
     * bits are atomic here, as the relaxed loads below.) */
    size_t tag;
    __asm__("movzwl (%[pt], %[pg], 8), %k[tag]\n\t"
            "addl 4(%[pt], %[pg], 8), %k[off]"
            : [tag] "=&r"(tag), [off] "+r"(off)
            : [pt] "r"(pt), [pg] "r"(pg), "m"(pt[pg]));
    *soff = off;
    return tag;
#else
    const struct kh_ptag *e = &pt[pg];
    *soff = (uint32_t)((uint32_t)off + __atomic_load_n(&e->rebase, __ATOMIC_RELAXED));
    return __atomic_load_n(&e->tag, __ATOMIC_RELAXED);
#endif
}

#if KH_HOMES
/* kh_pt_read, and in *home the page's home (kh_ptag.home, meaningful
 * only where the tag names a class), for the plain hit paths of free
 * (kh_fast.h, kh_cc_home). */
static kh_always_inline size_t kh_pt_read_home(const struct kh_ptag *pt, uintptr_t off,
                                               uint64_t *soff, unsigned *home)
{
    uintptr_t pg = off >> KHEAP_PAGE_SHIFT;
#if defined(__x86_64__)
    /* (as kh_pt_read, with the home's load off the same index) */
    size_t tag;
    unsigned hm;
    __asm__("movzwl (%[pt], %[pg], 8), %k[tag]\n\t"
            "movzwl 2(%[pt], %[pg], 8), %[hm]\n\t"
            "addl 4(%[pt], %[pg], 8), %k[off]"
            : [tag] "=&r"(tag), [hm] "=&r"(hm), [off] "+r"(off)
            : [pt] "r"(pt), [pg] "r"(pg), "m"(pt[pg]));
    *soff = off;
    *home = hm;
    return tag;
#else
    *home = __atomic_load_n(&pt[pg].home, __ATOMIC_RELAXED);
    return kh_pt_read(pt, off, soff);
#endif
}
#endif

#if KH_RUNS
/* The bin of rc (a struct kh_runcache) for runs of np pages. */
#define KH_RUN_BIN(rc, np) (&(rc)->bin[(np) - KH_RUN_MIN_PAGES])
/* The same for the hit paths: the address made once, in a register that
 * every access then offsets (the compiler would otherwise fold the bin's
 * first page count into the accesses' displacements in two ways, and
 * scale the index twice). */
static inline struct kh_runbin *kh_run_bin(struct kh_runcache *rc, size_t np)
{
    struct kh_runbin *b = KH_RUN_BIN(rc, np);
    __asm__("" : "+r"(b));
    return b;
}

/* Allocation from the cache of large blocks of the CPU whose state is pc:
 * a run of size's page count (KHEAP_MAX_CLASS < size <=
 * KHEAP_RUN_CACHE_MAX) into *out, or false. The run is live again once
 * its tag is KH_RUN_TAG (its page count in kh_ptag.run stayed as the
 * free that cached it found it). */
static inline bool kh_run_pop(struct kh_cpu *pc, const struct kh_window *w, size_t size,
                              void **out)
{
    struct kh_runbin *b =
        kh_run_bin(pc->run_front.runs, (size + KH_PAGE_MASK) >> KHEAP_PAGE_SHIFT);
    void *p = b->head;
    if (!p)
        return false;
    b->head = *(void **)p;
    kh_bump(&b->allocs);
    __atomic_store_n(&w->pt[((uintptr_t)p - w->start) >> KHEAP_PAGE_SHIFT].tag,
                     (uint16_t)KH_RUN_TAG, __ATOMIC_RELEASE);
    *out = p;
    return true;
}

/* Free of p (in the window, on a page tagged KH_RUN_TAG when it was
 * looked at) into the CPU's cache of large blocks rc, if p is the first
 * byte of the live large block (kh_ptag.run holds its page count) and its bin
 * holds fewer runs than its cap; else false. The tag is cleared, so a
 * second free of the block misses and the slow path reports it. Two
 * frees of one block racing on two CPUs could both see the tag (a plain
 * load and store: 16-bit atomic exchanges are not native everywhere), as
 * two racing frees of one object can both pass the double-free key; a
 * double free within one CPU, or after the other completed, is always
 * seen. It recomputes p's offset, hidden from the compiler, and loads
 * the window's start again, so that the first test keeps nothing alive
 * for it. */
static inline bool kh_run_push(struct kh_runcache *rc, const struct kh_window *w, void *p)
{
    uintptr_t a = (uintptr_t)p;
    __asm__("" : "+r"(a));
    uintptr_t off = a - __atomic_load_n(&w->start, __ATOMIC_RELAXED), pg = off >> KHEAP_PAGE_SHIFT;
    if ((off & KH_PAGE_MASK) ||
        __atomic_load_n(&w->pt[pg].tag, __ATOMIC_ACQUIRE) != KH_RUN_TAG)
        return false;
    struct kh_runbin *b = kh_run_bin(rc, __atomic_load_n(&w->pt[pg].run, __ATOMIC_RELAXED));
    if (b->frees - b->allocs >= b->cap)
        return false;
    __atomic_store_n(&w->pt[pg].tag, (uint16_t)0, __ATOMIC_RELAXED);
    *(void **)p = b->head;
    b->head = p;
    kh_bump(&b->frees);
    return true;
}
#endif

#endif /* KH_FRONT_H */
