/*
 * kh_internal.h - the heap's data structures, shared by the core's layers.
 *
 * Layers, bottom up; each file calls only files listed before it and the
 * port (tools/layers.sh checks the object files in make check):
 *   heap.c     the heap's own services: errors, reports, accounting, size
 *              classes, the registry of heaps, lock-all
 *   region.c   regions: layout, the region table, pointer -> page
 *   pages.c    runs of pages: bins, split, coalesce, purge; regions'
 *              pages, growth, pages for kheap's own structures
 *   slab.c     a run carved into the objects of one cache; cache setup
 *   cpu.c      per-CPU magazines and depots; kheap_cpu_flush; reclaim's
 *              requests to the CPUs and their answers
 *   check.c    kheap_check, kheap_check_quiescent, the debug check
 *   cache.c    object caches: create, shrink, destroy, reclaim, slabinfo
 *   kmalloc.c  size -> class, large blocks, pointer -> block, realloc,
 *              kheap_alloc/kheap_free and the caches' alloc/free
 *   stats.c    statistics and their text form
 *   init.c     kheap_init: a heap made out of every layer
 *   default.c  the default heap, kmalloc/kfree
 * kh_front.h holds what the hit paths touch (the per-CPU fronts, the
 * class map, magazine pop/push, the double-free key), kh_fast.h the hit
 * paths themselves.
 *
 * Lock order (a thread may take a lock only if it holds none listed
 * below it):
 *   0. the registry lock  - the list of heaps (heap.c); taken at heap
 *                           creation and end, by kheap_cpu_flush and
 *                           around fork, before any heap lock.
 *                           kheap_cpu_flush keeps the reports of its
 *                           flushes (struct kh_later) until it is
 *                           released.
 *   1. kheap.caches_lock  - the list of user caches (kheap.caches); held
 *                           across the user caches of a walk over every
 *                           cache (kh_each_cache_locking), never across the
 *                           built-in caches. A report found under it (a
 *                           double free met when a user cache's magazine
 *                           is flushed by kheap_reclaim, kheap_tick,
 *                           kheap_cpu_flush, kheap_cache_destroy) is kept
 *                           in the walker's struct kh_later and made once
 *                           the lock is released, because the hook may
 *                           call kheap_get_stats, which takes it. So are
 *                           the empty slabs of a user cache with a
 *                           destructor that such a walk gives back: the
 *                           destructors run, and the pages go back, after
 *                           it is released (kh_later_slabs_free).
 *   2. kheap_cache.lock   - one cache's slab lists, depot and counters; a
 *                           thread holds at most one, except lock-all
 *                           (kheap_check, fork), which takes them all in
 *                           the walk's order while holding 1.
 *   3. kheap.page_lock    - the page layer: bins, run boundary descriptors,
 *                           the region table, page counters, large-block and
 *                           failure counts.
 *   4. kheap.q_lock       - the quarantine of KHEAP_REDZONE builds; a leaf,
 *                           held over no call but a redzone check.
 *   5. kheap.g_lock       - the sampled guard blocks (guard.c); a leaf,
 *                           held over no call (the port's protection
 *                           hook runs with no kheap lock held).
 * The committed/peak/internal byte counters are atomics, updated on slow
 * paths only; no lock is shared by every cache.
 * No lock is held across a constructor, a destructor or a report.
 */
#ifndef KH_INTERNAL_H
#define KH_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kh_front.h"

#if KHEAP_VALGRIND
#include <valgrind/drd.h>
#include <valgrind/memcheck.h>
/* For drd, which sees relaxed atomics as plain accesses: mark the per-CPU
 * counters (written by one CPU, summed by any) and the lock-free
 * publication words as intended races, and the words that publish with
 * release and acquire as happening before their readers. */
#define kh_vg_benign(p, n) ANNOTATE_BENIGN_RACE_SIZED(p, n, "kheap per-CPU or published word")
#define kh_vg_before(p) ANNOTATE_HAPPENS_BEFORE(p)
#define kh_vg_after(p) ANNOTATE_HAPPENS_AFTER(p)
#define kh_vg_alloc(p, n, zeroed) VALGRIND_MALLOCLIKE_BLOCK(p, n, 0, zeroed)
#define kh_vg_free(p) VALGRIND_FREELIKE_BLOCK(p, 0)
#define kh_vg_resize(p, o, n) VALGRIND_RESIZEINPLACE_BLOCK(p, o, n, 0)
#define kh_vg_defined(p, n) VALGRIND_MAKE_MEM_DEFINED(p, n)
#define kh_vg_undefined(p, n) VALGRIND_MAKE_MEM_UNDEFINED(p, n)
#else
#define kh_vg_benign(p, n) ((void)(p), (void)(n))
#define kh_vg_before(p) ((void)(p))
#define kh_vg_after(p) ((void)(p))
#define kh_vg_alloc(p, n, zeroed) ((void)(p), (void)(n), (void)(zeroed))
#define kh_vg_free(p) ((void)(p))
#define kh_vg_resize(p, o, n) ((void)(p), (void)(o), (void)(n))
#define kh_vg_defined(p, n) ((void)(p), (void)(n))
#define kh_vg_undefined(p, n) ((void)(p), (void)(n))
#endif

#define KH_HEAP_MAGIC 0x6b686561u /* "khea" */
#define KH_CACHE_MAGIC 0x6b636163u /* "kcac" */

/* Slabs never span more pages than this (the page counts of every class
 * are computed at init; see slab.c). */
#define KH_SLAB_MAX_PAGES 64u
/* Slabs of up to this many pages may grow to leave at most 1/16 over
 * instead of 1/8 (kh_cache_setup). */
#define KH_SLAB_TIGHT_PAGES 8u

/* ------------------------------------------------------------------ */
/* Page descriptors.
 *
 * One per page of a region, in an array at the region's start. Only the
 * boundaries of runs carry meaning: a run's first page (head) and last page
 * (tail; for slabs every page). Every other descriptor is KH_PG_INTERIOR.
 * Invariants, for every run [i, i+n) of a region:
 *   desc[i].kind is FREE, LARGE or SLAB and desc[i].npages == n;
 *   n > 1: desc[i+n-1].kind is FREE_TAIL, LARGE_TAIL or SLAB_PART with
 *          npages == n (FREE_TAIL, LARGE_TAIL) or == n-1 (SLAB_PART);
 *   SLAB: desc[i+k].kind == SLAB_PART and desc[i+k].npages == k, 0<k<n;
 *   FREE and LARGE: desc[i+k].kind == INTERIOR, 0<k<n-1;
 *   no two free runs are adjacent (free runs coalesce).
 * So the run holding page p is found in O(1) from p or its neighbours, and
 * a freed run merges with free neighbours in O(1).
 */
enum kh_page_kind {
    KH_PG_INTERIOR = 0, /* inside a run; zero so cleared memory is valid */
    KH_PG_FREE,
    KH_PG_FREE_TAIL,
    KH_PG_LARGE,
    KH_PG_LARGE_TAIL,
    KH_PG_SLAB,
    KH_PG_SLAB_PART,
};

/* Which list of its cache a slab is on. */
enum kh_slab_list {
    KH_LIST_FULL = 0, /* on no list: every object allocated */
    KH_LIST_PARTIAL,
    KH_LIST_EMPTY,
    KH_LIST_GONE,     /* taken off its cache, on its way to the page layer */
    KH_LIST_NEW,      /* just made, on its way to its cache: its fields set,
                         its bitmap maybe not cleared yet (slab.c, slab_new) */
};

struct kheap_cache;

#define KH_FREE_SHUT 1u /* kh_page.list of a FREE head */

struct kh_page {
    uint8_t kind;     /* enum kh_page_kind; page_lock (stable while the run
                         is allocated: see kh_page_of) */
    uint8_t region;   /* index in kheap.regions; set on every boundary */
    uint16_t inuse;   /* SLAB: objects allocated from it; cache lock */
    uint16_t carved;  /* SLAB: objects ever carved (lazily); cache lock */
    uint8_t list;     /* SLAB: enum kh_slab_list; cache lock (but
                         KH_LIST_NEW: page_lock, slab.c slab_new). FREE head
                         (KHEAP_PORT_COMMIT): KH_FREE_SHUT if a purge may
                         have shut pages of the run below its region's
                         frontier (pages.c), else 0; page_lock */
    union {
        uint8_t internal; /* LARGE: 1 if it holds kheap's own structures
                             (per-CPU state), counted as metadata */
        uint8_t home;     /* SLAB head: the CPU whose refills take from it,
                             KH_HOME_NONE while none does (slab.c,
                             "Homes"); written under the cache lock, read
                             without it (cpu.c, mag_home) */
    };
    uint32_t npages;  /* see the invariants above */
    union {
        uint32_t bin;   /* FREE head: its bin; page_lock */
        uint32_t bits;  /* SLAB of <= 32 objects: allocation bitmap; cache
                           lock */
    };
    struct kh_page *prev, *next; /* FREE: bin list (page_lock);
                                    SLAB: cache list (cache lock) */
    union {
        void *freelist;   /* SLAB: first free object; cache lock */
        uintptr_t dirty;  /* FREE head: at most this many of the run's
                             pages may be resident (pages.c); page_lock */
    };
    struct kheap_cache *cache; /* SLAB: owner, fixed while the slab lives;
                                  LARGE: unused */
};
_Static_assert(sizeof(struct kh_page) == 16 + 4 * sizeof(void *),
               "page descriptor grew: metadata budget is 2% of the heap");

/* A region: [start, end) are its pages, described by pages[0 .. npages). */
struct kh_region {
    uintptr_t base;    /* as handed to the heap */
    size_t size;       /* as handed to the heap */
    uintptr_t start;   /* first page */
    uintptr_t end;     /* one past the last page */
    uintptr_t span;    /* end - start */
    size_t npages;
    struct kh_page *pages;
    size_t meta_bytes; /* size - npages * page: header, descriptors, skips */
    bool grown;        /* obtained from kheap_port_pages_get */
    bool shuttable;    /* the port's memory (KHEAP_PORT_COMMIT): its free
                          pages are shut when purged */
    uint32_t open;     /* KHEAP_PORT_COMMIT: pages [0, open) are
                          accessible (but pages a purge shut: free runs
                          marked KH_FREE_SHUT); past it only kheap's own blocks
                          carved at a run's high end and blocks taken
                          from a free run wholly past it are, each opened
                          alone and shut again when freed (pages.c).
                          npages for memory that came accessible (a
                          region has at most UINT32_MAX pages; in the
                          padding after grown); page_lock */
    size_t touched;    /* pages [touched, npages) that are free were never
                          touched since the region was added or were
                          purged since (pages.c); page_lock */
};

#define KH_NO_CLASS 0xffu
#define KH_MAG_TYPES ((unsigned)KHEAP_MAG_TYPES)
/* The largest magazine: tuned capacities round down to it. */
#define KH_MAG_MAX (4u << (KH_MAG_TYPES - 1))

/* Objects per magazine of a cache of slot-byte objects on a heap with
 * wide magazines or not (kheap.mags_wide; cpu.c says why); 0 without the
 * per-CPU layer (KHEAP_PERCPU 0). */
static inline unsigned kh_mag_cap_for(size_t slot, bool wide)
{
    if (!KHEAP_PERCPU)
        return 0;
    unsigned cap = slot <= (wide ? 512u : 128u)    ? 64
                   : slot <= (wide ? 1024u : 512u) ? 32
                   : slot <= 2048                  ? 16
                   : slot <= 8192                  ? 8
                                                   : 4;
    return cap < KH_MAG_MAX ? cap : KH_MAG_MAX;
}

/* The depot's plain bound for magazines of cap objects of slot bytes:
 * KHEAP_DEPOT_MAX full magazines, or fewer so they hold at most
 * KHEAP_DEPOT_BYTES, but at least one. */
static inline uint32_t kh_depot_max_for(unsigned cap, size_t slot)
{
    size_t by_bytes = KHEAP_DEPOT_BYTES / ((size_t)cap * slot);
    return (uint32_t)(by_bytes < 1 ? 1 : by_bytes > KHEAP_DEPOT_MAX ? KHEAP_DEPOT_MAX : by_bytes);
}

/* ------------------------------------------------------------------ */
/* Object caches. */

enum {
    KH_CACHE_KMALLOC = 1u << 0,  /* a kmalloc size class: not destroyable */
    KH_CACHE_INTERNAL = 1u << 1, /* holds kheap's own structures: its
                                    objects count as metadata */
};

/* A slab's geometry (bytes and counts within one slab): 16 bits when
 * the largest slab, KH_SLAB_MAX_PAGES pages, is under 64 KiB (pages of
 * 512 bytes or less), which saves 18 bytes a cache. */
#if KHEAP_PAGE_SHIFT <= 9
typedef uint16_t kh_geom_t;
#else
typedef uint32_t kh_geom_t;
#endif
_Static_assert(((uint64_t)KH_SLAB_MAX_PAGES << KHEAP_PAGE_SHIFT) - 1 <= (kh_geom_t)-1,
               "a slab's bytes fit kh_geom_t");

/* Without a per-CPU layer for the built-in caches (KHEAP_PERCPU 0), the
 * kmalloc classes, the cache of cache structures and the magazine caches
 * never have magazines, a depot, a name of their own, a destructor or a
 * place on the list of user caches: struct kheap embeds them as the slab
 * part of a cache only, and a user cache is that part followed by the
 * rest (struct kh_ucache). The split is what makes the small-system
 * profile's heap structure fit a 4 KiB region (docs/PORTING.md). With
 * the per-CPU layer every cache is one struct kheap_cache, as below. */
#define KH_SPLIT (!KHEAP_PERCPU)

#if !KH_SPLIT
struct kheap_cache {
    /* Fixed at creation; read without a lock. */
    uint32_t magic;
    uint32_t flags;
    kheap_t *heap;
    char name[KHEAP_NAME_MAX];
    kh_geom_t size;       /* usable bytes of an object */
    kh_geom_t slot;       /* bytes between objects */
    kh_geom_t link_off;   /* free-list link offset in a free object */
    kh_geom_t align;      /* alignment of every object */
    kh_geom_t objs;       /* objects per slab */
    kh_geom_t pages;      /* pages per slab */
    kh_geom_t slab_align; /* alignment of the slab's first page, bytes */
    kh_geom_t bitmap_off; /* offset of the allocation bitmap in the slab */
    kh_geom_t bitmap_bytes; /* 0: the bitmap is kh_page.bits (objs <= 32) */
    uint8_t cls;         /* kmalloc class index, or KH_NO_CLASS */
    uint8_t guard;       /* 1: freed objects carry the double-free key in
                            bytes 8..11 (no ctor; kh_fast.h) */
    uint16_t cc_off;     /* offset of the class's kh_cc in struct kh_cpu
                            for a kmalloc class (free has a hit path for
                            it: kh_fast.h), else 0 */
    uint64_t divtest;    /* floor(2^64 / slot) + 1 */
    uint64_t slot_lim;   /* objs * (slot * divtest mod 2^64): for any
                            32-bit off, off * divtest (mod 2^64) < slot_lim
                            iff off is the offset of one of the slab's
                            slots (slab.c; Lemire, Kaser, Kurz 2019) */
    kheap_ctor_fn ctor, dtor;
    uint32_t mag_cap;    /* objects per magazine (0: no per-CPU layer) */
    uint32_t depot_max;  /* full magazines the depot may hold */
    struct kh_cc *percpu; /* user caches: [KHEAP_MAX_CPUS + 1], a line each */
    /* (These fields fill two cache lines on 64-bit: a new one costs a
     * line per cache, 85 of them in every heap.) */

    /* The lock starts a cache line: the fields above, read on every free,
     * must not share a line with what slow paths on other CPUs write. */
    kheap_lock_t lock __attribute__((aligned(KH_CACHE_LINE)));
    /* Protected by lock. Every slab of the cache is on exactly one list:
     * partial (0 < inuse < objs), empty (inuse == 0), or none (full).
     *   active_objs == sum of inuse over its slabs
     *   nr_slabs == nr_partial + nr_empty + nr_full */
    struct kh_page *partial;
    struct kh_page *empty;
    uint32_t nr_partial, nr_empty, nr_full; /* run lengths are 32-bit */
    size_t active_objs;
    uint64_t allocs, frees; /* objects taken from / given to slabs */
    /* The depot (Bonwick): full and empty magazines, and the working-set
     * minima of the current epoch (cpu.c). */
    struct kh_mag *depot_full, *depot_empty;
    uint32_t nr_full_mags, nr_empty_mags, full_min, empty_min;
    uint16_t depot_ops;
    /* The depot may hold depot_max << depot_shift full magazines (a
     * kmalloc class's bound grows when what it sent to the slabs comes
     * back: cpu.c, depot_grow); overflowed is 1 if a free sent a magazine
     * to the slabs since an allocation last refilled from them. Bytes, so
     * the cache stays five cache lines. */
    uint8_t depot_shift;
    uint8_t overflowed;
    uint32_t slab_empty_min; /* least nr_empty in this decay epoch */
    /* User operations that bypassed the per-CPU layer. */
    uint64_t nocpu_allocs, nocpu_frees;

    /* Protected by kheap.caches_lock. */
    struct kheap_cache *next, *prev;
};

#define KH_U(c) (c)
#else /* KH_SPLIT */
/* The slab part of a cache: all a built-in cache has. Fields as in the
 * struct above; those it lacks are in struct kh_cache_user. The lock does
 * not start a cache line: with no per-CPU layer every operation takes it,
 * so the fixed fields are read next to it anyway. 88 bytes on 32-bit. */
struct kheap_cache {
    /* Fixed at creation; read without a lock. */
    kheap_t *heap;
    kheap_ctor_fn ctor;
    uint32_t magic;
    kh_geom_t size, slot, link_off, align, objs, pages, slab_align, bitmap_off, bitmap_bytes;
    uint8_t cls;         /* kmalloc class index, or KH_NO_CLASS */
    uint8_t guard;       /* freed objects carry the double-free key */
    uint8_t flags;       /* KH_CACHE_* */
    uint8_t mag_cap;     /* objects per magazine; 0 for every built-in cache */
    uint16_t cc_off;     /* as above (unused without the per-CPU layer) */

    kheap_lock_t lock;
    /* Protected by lock; the same invariants as above. */
    struct kh_page *partial;
    struct kh_page *empty;
    uint32_t nr_partial, nr_empty, nr_full;
    uint32_t slab_empty_min;
    size_t active_objs;
    uint64_t allocs, frees;
};

/* What only a user cache has, after its slab part (kh_cache_user says
 * which caches those are). */
struct kh_cache_user {
    /* Fixed at creation. */
    char name[KHEAP_NAME_MAX];
    kheap_ctor_fn dtor;
    uint32_t depot_max;
    struct kh_cc *percpu;

    /* Protected by the cache's lock. */
    struct kh_mag *depot_full, *depot_empty;
    uint32_t nr_full_mags, nr_empty_mags, full_min, empty_min;
    uint16_t depot_ops;
    uint8_t depot_shift;
    uint8_t overflowed;
    uint64_t nocpu_allocs, nocpu_frees;

    /* Protected by kheap.caches_lock. */
    struct kheap_cache *next, *prev;
};

/* A user cache: the object of the cache of cache structures. */
struct kh_ucache {
    struct kheap_cache c;
    struct kh_cache_user u;
};
#define KH_U(c) kh_u(c)
_Static_assert(sizeof(void *) > 4 || KHEAP_PAGE_SHIFT > 9 || KHEAP_LOCK_WORDS > 2 ||
                   sizeof(struct kheap_cache) == 88,
               "a built-in cache is 88 bytes on 32-bit (docs/PORTING.md's figures)");
#endif /* KH_SPLIT */

/* Is c a user cache (made by kheap_cache_create)? */
static inline bool kh_cache_user(const struct kheap_cache *c)
{
    return !(c->flags & (KH_CACHE_KMALLOC | KH_CACHE_INTERNAL));
}
/* KH_U(c)->name: a field of cache c that only a user cache has in a split
 * build (c->name in one that is not). A debug build checks that c has it. */
#if KH_SPLIT
static inline struct kh_cache_user *kh_u(const struct kheap_cache *c)
{
#if KHEAP_DEBUG >= 1
    if (!kh_cache_user(c))
        kheap_port_panic("kheap assertion failed: a built-in cache has no user part", c);
#endif
    return &((struct kh_ucache *)c)->u;
}
#endif
/* Does c have the fields of KH_U(c)? Every cache does unless split. */
static inline bool kh_cache_whole(const struct kheap_cache *c)
{
    return !KH_SPLIT || kh_cache_user(c);
}
/* Does c count the operations that bypass the per-CPU layer in
 * nocpu_allocs and nocpu_frees? A built-in cache of a split build has no
 * magazines, so every object it hands out or takes back goes through its
 * slabs: its statistics are allocs and frees (cpu.c: kh_cache_counts).
 * (The one difference: the objects of a bulk allocation that failed,
 * taken from the slabs and given back, count there as allocated and
 * freed.) */
static inline bool kh_cache_nocpu(const struct kheap_cache *c)
{
    return KH_SPLIT ? kh_cache_user(c) : !(c->flags & KH_CACHE_INTERNAL);
}
/* c's destructor (NULL for a built-in cache). */
static inline kheap_ctor_fn kh_cache_dtor(const struct kheap_cache *c)
{
    return kh_cache_whole(c) ? KH_U(c)->dtor : NULL;
}
#if KH_SPLIT
/* The name of a built-in cache, as init.c gives it, into buf
 * (KHEAP_NAME_MAX bytes, zero-padded): a split build keeps none in them
 * (heap.c). */
void kh_builtin_name(const struct kheap_cache *c, char *buf);
#endif
/* c's name into buf (KHEAP_NAME_MAX bytes). */
static inline void kh_cache_name(const struct kheap_cache *c, char *buf)
{
#if KH_SPLIT
    if (!kh_cache_whole(c)) {
        kh_builtin_name(c, buf);
        return;
    }
#endif
    __builtin_memcpy(buf, KH_U(c)->name, KHEAP_NAME_MAX);
}
/* Bytes of the objects of the cache of cache structures. */
#if KH_SPLIT
#define KH_UCACHE_SIZE sizeof(struct kh_ucache)
#else
#define KH_UCACHE_SIZE sizeof(struct kheap_cache)
#endif

/* The sampled guard blocks (guard.c) are built when the port can protect
 * pages. The debug build (KHEAP_REDZONE) samples nothing (every block
 * has redzones) but makes its zero-size blocks there. */
#if KHEAP_PORT_PROTECT && KHEAP_GUARD_SLOTS > 0
#define KH_GUARDS 1
#else
#define KH_GUARDS 0
#endif
/* A guard slot's states (kheap.g_slot). */
enum {
    KH_GS_UNUSED = 0, /* never held a block; in the FIFO of free slots */
    KH_GS_OPENING,    /* taken by one thread, its page being opened; not
                         counted, not in the FIFO */
    KH_GS_LIVE,       /* holds a live block: its page is accessible */
    KH_GS_FREEING,    /* being freed by one thread; still counted */
    KH_GS_FREED,      /* freed: its page is inaccessible; in the FIFO */
    KH_GS_RETIRED,    /* its page could not be opened or shut: never used
                         again */
};

/* ------------------------------------------------------------------ */
/* The heap. Lives at the start of its first region. */

/* Bins of free runs: two-level (8 sub-bins per doubling of the length in
 * pages, exact below 16 pages), a bitmap of non-empty bins and a summary
 * word, as TLSF does, so the first bin that can hold a length is found in
 * O(1) (docs/DESIGN.md). Run lengths are uint32_t. */
#define KH_BIN_SUB_SHIFT ((unsigned)KHEAP_BIN_SUB_SHIFT)
#define KH_NBINS ((33u - KH_BIN_SUB_SHIFT) << KH_BIN_SUB_SHIFT) /* 240, 124, 64 */
#define KH_WORD_BITS (sizeof(unsigned long) * 8u)
#define KH_BIN_WORDS ((KH_NBINS + KH_WORD_BITS - 1) / KH_WORD_BITS)
_Static_assert(KH_BIN_WORDS <= sizeof(unsigned long) * 8u,
               "bin summary must fit a word");

struct kheap {
    uint32_t magic;

    kheap_lock_t page_lock __attribute__((aligned(KH_CACHE_LINE)));
    /* Protected by page_lock. regions[] entries are written once, before
     * being published in order[] (see region.c: lookups read without the
     * lock). */
    struct kh_region regions[KHEAP_MAX_REGIONS] __attribute__((aligned(KH_CACHE_LINE)));
    uint8_t order[KHEAP_MAX_REGIONS]; /* region indices by address */
    bool homes; /* KH_HOMES and a first region of KHEAP_HOMES_MIN_HEAP or
                   more (slab.c, "Homes"); fixed by kheap_init */
    bool mags_wide; /* a first region of KHEAP_MAG_WIDE_MIN_HEAP or more:
                       bigger magazines (kh_mag_cap_for); fixed by
                       kheap_init */
#if KH_HOMES
    /* Per kmalloc class, the full magazines in the CPUs' inboxes and
     * stashes (cpu.c, "Inboxes"), which the depot's bound covers with its
     * own (counted with the depot's by kheap_cache_info), less what the
     * CPUs' sends and loads have not added yet (kh_mail.due): so below the
     * true count by at most KH_DUE_MAX - 1 magazines per CPU, or above it
     * by as many, and for a moment below 0. Atomic adds, by any CPU, with
     * or without the cache's lock. Here rather than in the caches, which
     * stay five cache lines. */
    int32_t mailed[KHEAP_NUM_CLASSES] __attribute__((aligned(KH_CACHE_LINE)));
#endif
    unsigned nregions;
    unsigned region_seq;              /* odd while order[] is rewritten */
    struct kh_page *bins[KH_NBINS] __attribute__((aligned(KH_CACHE_LINE)));
    unsigned long bin_map[KH_BIN_WORDS];
    unsigned long bin_summary;
    size_t free_pages;   /* pages in free runs */
    size_t slab_pages;   /* pages held by slabs */
    size_t large_pages;  /* pages held by large blocks */
    size_t bitmap_bytes; /* slab allocation bitmaps of live slabs */
    size_t meta_pages;   /* pages of kheap's own structures (per-CPU) */
    size_t total_bytes;  /* sum of region sizes */
    size_t region_meta;  /* sum of region meta_bytes */
    size_t grow_bytes;   /* 0: fixed size */
    size_t dirty_pages;  /* sum of the free runs' dirty counts */
    size_t purge_peak;   /* pages in use at the recent peak (pages.c) */
    size_t purge_slack;  /* pages: kheap_set_purge (default KHEAP_PURGE_SLACK) */
    size_t purge_min;    /* pages: kheap_set_purge (default KHEAP_PURGE_MIN) */
    size_t purge_peak_prev; /* purge_peak of the previous decay epoch */
    size_t dirty_min;    /* least dirty_pages in this decay epoch */
    bool decay_driven;   /* a decay epoch has ended (pages.c) */
    uint64_t purged_pages; /* pages handed to kheap_port_pages_purge */

    /* Protected by page_lock. */
    uint64_t large_allocs, large_frees, large_alloc_bytes, large_free_bytes;
    /* Object counts of destroyed caches, so the totals do not shrink. */
    uint64_t retired_allocs, retired_frees, retired_bytes;
    uint64_t failed_count;
    /* Atomic counters: bytes of objects handed out of slabs (live or
     * cached in magazines) plus large blocks, their highest value, and the
     * objects of KH_CACHE_INTERNAL caches. Each on its own cache line: the
     * slow paths of every cache update them. */
    size_t committed_bytes __attribute__((aligned(KH_CACHE_LINE)));
    size_t peak_bytes;
    size_t internal_bytes __attribute__((aligned(KH_CACHE_LINE)));
    /* Decay (cache.c: kh_tick). Atomics: read on slow paths, written
     * once an epoch (decay_seen: about once per tick of a coarse clock). */
    uint64_t decay_next __attribute__((aligned(KH_CACHE_LINE))); /* ms */
    uint64_t decay_seen; /* the latest time a poll with the port's clock
                            passed (kmalloc.c, decay_poll), ms */
    uint32_t decay_ms;   /* epoch length; 0: no decay */
    uint32_t decay_busy; /* 1 while a thread runs the decay */
    uint64_t decay_epochs;
    /* Reclaim's requests to the CPUs it cannot reach (cpu.c: kh_cpu_ask).
     * flush_asked counts the requests (atomic, bumped by every reclaim);
     * flush_seen[cpu] is the count CPU cpu last answered, written only by
     * a thread that holds the CPU (entered, or reaching it), so never by
     * two at once; read with relaxed atomics. The CPUs keep the count's
     * low 16 bits: a CPU that misses exactly a multiple of 65536 requests
     * answers the next one. ask_epoch: 1 + the decay epoch of the last
     * request a failing or pressed allocation made (cache.c, kh_reclaim;
     * an atomic, a hint). */
    uint32_t flush_asked, ask_epoch;
    uint16_t flush_seen[KHEAP_MAX_CPUS];

#if KHEAP_REDZONE
    /* The quarantine of freed debug blocks (kmalloc.c): q_ring holds
     * q_count user pointers from q_head on, oldest first, q_bytes bytes
     * of blocks in all, at most q_limit. q_lock protects them; it is taken
     * with no other kheap lock held, and the blocks it lets go are freed
     * after it is released. */
    kheap_lock_t q_lock __attribute__((aligned(KH_CACHE_LINE)));
    unsigned q_head, q_count;
    size_t q_bytes, q_limit;
    void *q_ring[KHEAP_QUARANTINE_COUNT];
#endif

#if KH_GUARDS
    /* Sampled guard blocks (guard.c). g_every (one allocation in g_every
     * is sampled; 0: off) and g_left (the countdown to the next) are
     * atomics, read and counted down on the miss paths. The pool
     * [g_start, g_end) is made once, under g_lock, and g_end is stored
     * last (release): a reader that loads g_end (acquire) and finds it
     * non-zero may use g_start, which never changes again. g_lock
     * protects the rest: the slots, the FIFO of free slots (g_ring:
     * g_nfree slot numbers from g_head on, the longest free first), the
     * placement toggle and the counters. */
    unsigned long g_every;
    long g_left;
    uintptr_t g_start, g_end;
    kheap_lock_t g_lock __attribute__((aligned(KH_CACHE_LINE)));
    struct kh_gslot {
        uintptr_t addr; /* the block; 0: the slot was never used */
        size_t size;    /* bytes asked for */
        void *link;     /* a deferred KHEAP_NOLOCK free's list link
                           (kmalloc.c: defer_link) */
        unsigned state; /* KH_GS_*, below; atomic: the fault handler
                           reads it without the lock */
    } g_slot[KHEAP_GUARD_SLOTS];
    uint8_t g_ring[KHEAP_GUARD_SLOTS];
    unsigned g_head, g_nfree, g_flip;
    uint64_t g_allocs, g_frees, g_alloc_bytes, g_free_bytes;
#endif

    kheap_lock_t caches_lock __attribute__((aligned(KH_CACHE_LINE)));
    /* Protected by caches_lock (lock 1 of the order above; no report is
     * made while it is held: struct kh_later): user caches in creation
     * order. */
    struct kheap_cache *caches, *caches_tail;
    size_t ncaches;
    /* Atomic: user caches kheap_cache_destroy took off the list while a
     * walk still held their empty slabs, which that walk gives back
     * (kh_later_finish); kheap_fini waits for 0. */
    unsigned caches_dying;

    /* Per-CPU state of the kmalloc classes: cpu[k] is CPU k's, or
     * &kh_cpu_sentinel until CPU k first uses the heap; written once by
     * CPU k (release), read by others (acquire). cpu[KHEAP_CPU_NONE] stays
     * the sentinel. */
    struct kh_cpu *cpu[KHEAP_MAX_CPUS + 1] __attribute__((aligned(KH_CACHE_LINE)));
    kheap_t *next_heap; /* registry of heaps (heap.c) */
    /* KHEAP_NOLOCK frees that found no room and no lock (kmalloc.c): per
     * CPU (index KHEAP_CPU_NONE: threads with no CPU slot), a stack of
     * blocks linked through their link word (their cache's link_off; 0
     * for a large block; a sampled block's slot), pushed with a
     * compare-and-swap by any context of that CPU, taken whole with an
     * exchange by its slow paths, by kheap_reclaim, and (every CPU's) by
     * kheap_cache_destroy. A deferred block counts as allocated until
     * taken. */
    void *deferred[KHEAP_MAX_CPUS + 1];
    /* Pushes onto deferred[i] under way (each scans the list it found):
     * a thread that takes a list it does not own waits for 0 before it
     * frees what it took, so no scan follows a freed block's link. */
    unsigned deferring[KHEAP_MAX_CPUS + 1];
    /* A pointer a KHEAP_NOLOCK free refused (misuse), and why; reported
     * when deferred frees are next taken. A later one replaces it. */
    void *nolock_bad;
    unsigned nolock_bad_kind;
    /* The kmalloc classes' counters of bulk, reserve and KHEAP_NOLOCK
     * calls and shrinker passes (struct kh_xc): made on first need by a
     * call that may allocate (cpu.c: kh_xc_get), NULL until then. What
     * happens before (a KHEAP_NOLOCK failure or deferral) counts in
     * xc_early. Written once (release), read with acquire. */
    struct kh_xc *kxc;
    struct kh_xc {
        uint64_t bulk_allocs, bulk_frees, reserve_allocs;
        uint64_t nolock_fails, nolock_deferred, shrink_calls;
    } xc_early;
    /* Shrinkers (cache.c): registered callbacks in registration order,
     * and the low-water mark; page_lock. */
    struct kh_shrinker {
        kheap_shrink_fn fn;
        void *arg;
    } shrinkers[KHEAP_MAX_SHRINKERS];
    unsigned nshrinkers;
    size_t low_water;       /* pages; 0: none (kheap_set_low_water) */
    unsigned pressure;      /* atomic: an allocation took free pages below
                               low_water (pages.c); cleared by the pass */
    unsigned shrinking;     /* atomic: a shrinker pass is running */
    uint64_t shrink_passes; /* atomic: passes run */
    /* The first region and its page table (laid out after its
     * descriptors: kh_region_ptags). A slab page's entry is written by the
     * cache that makes or unmakes the slab, under its lock, before any
     * object of the slab is handed out and after the last comes back
     * (slab.c); a large block's first page's by kmalloc.c. Fixed after
     * init otherwise. */
    struct kh_window window;

    /* Fixed after init. */
    struct kheap_cache cache_cache; /* holds user kheap_cache structures */
    struct kheap_cache mag_cache[KH_MAG_TYPES]; /* magazines by capacity */
    struct kheap_cache kmalloc[KHEAP_NUM_CLASSES];
};

/* ------------------------------------------------------------------ */
/* Between the layers, bottom up. */

#define KH_HEADER_ALIGN KH_CACHE_LINE

/* heap.c */
void kh_report(enum kheap_report_kind kind, const void *addr,
               const struct kheap_cache *c, const char *function);
/* Reports kept for later: misuse found while caches_lock is held, which
 * the hook must not see then (it may call kheap_get_stats, which takes
 * that lock). The walks that hold it over the user caches (kheap_reclaim,
 * kheap_tick, kheap_cpu_flush, kheap_cache_destroy) pass one, on their
 * own stack, down to the magazine flushes that find refused objects and
 * to the slab releases (whose destructors wait the same way: slabs,
 * below), and deliver it once they have released the lock. Bounded: the first
 * KH_LATER_MAX reports are kept whole, in the order found (the cache's
 * name copied, since the cache may be destroyed before delivery); of the
 * rest only the first and their number are, and they are delivered as
 * one report (kh_later_deliver says how). No allocation. Start one with
 * {.n = 0}; one thread uses it. A report names an address that was
 * refused, not a block kept for it: by delivery the slot may be handed
 * out again, as it may after any report of a flushed double free. */
#define KH_LATER_MAX 4u
struct kh_later {
    /* Empty slabs of user caches with a destructor, given back while
     * caches_lock was held: their destructors run, and their pages go
     * back, after it is released (slab.c: kh_later_slabs_free), since a
     * destructor may call kheap_get_stats too. Linked through next (a
     * slab on KH_LIST_GONE is on no list of its cache). */
    struct kh_page *slabs;
    /* Destroyed caches whose last held slab kh_later_slabs_free gave
     * back: kh_later_finish gives them back too. Linked through
     * KH_U(c)->next, unused once a cache is off the list. */
    struct kheap_cache *retire;
    unsigned n;  /* reports kept whole: item[0 .. n) */
    size_t more; /* reports found with item[] full; the first is item[KH_LATER_MAX] */
    struct kh_later_item {
        const void *addr;
        const char *function;
        enum kheap_report_kind kind;
        char cache[KHEAP_NAME_MAX]; /* "" for none */
    } item[KH_LATER_MAX + 1];
};
/* Keep a report in l: no lock taken, nothing called, so any lock may be
 * held. With l NULL, make it at once (no lock may be held). */
void kh_later_add(struct kh_later *l, enum kheap_report_kind kind, const void *addr,
                  const struct kheap_cache *c, const char *function);
/* Make the reports l keeps, then empty it. Call with no kheap lock held. */
void kh_later_deliver(struct kh_later *l);
/* The same, with the block's size and the first damaged byte. */
void kh_report_at(enum kheap_report_kind kind, const void *addr, const struct kheap_cache *c,
                  const char *function, size_t size, const void *where);
/* The same, with a reason other than the kind's (NULL: the kind's). */
void kh_report_why(enum kheap_report_kind kind, const char *reason, const void *addr,
                   const struct kheap_cache *c, const char *function, size_t size,
                   const void *where);
const char *kh_report_reason(enum kheap_report_kind kind);
/* Accounting. Called with the lock that guards the change (the cache's,
 * or page_lock for large blocks) still held, so kheap_check, holding
 * every lock, sees counters and structures agree. */
void kh_account_commit(kheap_t *h, size_t bytes, bool add);
void kh_account_failure(kheap_t *h);
/* An allocation kheap tried for itself failed (counted), and the call it
 * was made for succeeded another way: it is no failure. (A reader of the
 * statistics in between sees it counted.) */
void kh_account_recovered(kheap_t *h);
void kh_account_internal(kheap_t *h, size_t bytes, bool add);
size_t kh_class_size(unsigned cls);
size_t kh_decimal(char *buf, uint64_t v);
/* The registry: acquire returns the first heap, the lock held. */
kheap_t *kh_registry_acquire(void);
void kh_registry_release(void);
void kh_registry_add(kheap_t *h);
/* Take (lock true) or release every lock of h in the lock order. */
void kh_heap_lock_all(kheap_t *h, bool lock);

/* Every cache of a heap, in one order: the kmalloc classes, the user
 * caches (creation order), the cache of cache structures, the magazine
 * caches (by capacity).
 *   kh_each_cache(h, c)          the caller holds caches_lock, which
 *                                guards the user caches' list (or every
 *                                lock: kheap_check, fork);
 *   kh_each_cache_locking(h, c)  the walk takes caches_lock itself while
 *                                it is among the user caches, and only
 *                                then, so the built-in caches are visited
 *                                with no lock held; the user caches'
 *                                reports and slabs to destroy go into a
 *                                struct kh_later (kh_walk_later), handled
 *                                after the loop, so both run lock-free,
 *                                as kheap.h promises. The loop must run to
 *                                its end.
 */
static inline struct kheap_cache *kh_cache_next(kheap_t *h, const struct kheap_cache *c,
                                                bool locking)
{
    struct kheap_cache *next;
    if (!c)
        return &h->kmalloc[0];
    if (c->flags & KH_CACHE_KMALLOC) {
        if (c != &h->kmalloc[KHEAP_NUM_CLASSES - 1])
            return (struct kheap_cache *)c + 1;
        if (locking)
            kheap_port_lock(&h->caches_lock);
        if (h->caches)
            return h->caches;
        next = &h->cache_cache;
    } else if (!(c->flags & KH_CACHE_INTERNAL)) {
        if (KH_U(c)->next)
            return KH_U(c)->next;
        next = &h->cache_cache;
    } else if (c == &h->cache_cache) {
        return &h->mag_cache[0];
    } else {
        return c == &h->mag_cache[KH_MAG_TYPES - 1] ? NULL : (struct kheap_cache *)c + 1;
    }
    if (locking)
        kheap_port_unlock(&h->caches_lock);
    return next;
}
#define kh_each_cache(h, c)                                                   \
    for (struct kheap_cache *c = kh_cache_next(h, NULL, false); c;           \
         c = kh_cache_next(h, c, false))
#define kh_each_cache_locking(h, c)                                           \
    for (struct kheap_cache *c = kh_cache_next(h, NULL, true); c;            \
         c = kh_cache_next(h, c, true))
/* Where a walk with kh_each_cache_locking sends the reports it finds in
 * cache c, and the empty slabs it gives back: into later while the walk
 * holds caches_lock (c is a user cache), else NULL, at once. */
static inline struct kh_later *kh_walk_later(const struct kheap_cache *c, struct kh_later *later)
{
    return c->flags & (KH_CACHE_KMALLOC | KH_CACHE_INTERNAL) ? NULL : later;
}

/* region.c */
int kh_region_admissible(const kheap_t *h, uintptr_t base, size_t size);
int kh_region_check(const void *base, size_t size, bool first);
int kh_region_prepare(struct kh_region *r, void *base, size_t size, size_t skip, bool first,
                      bool zeroed, bool shut);
int kh_region_enter(kheap_t *h, const struct kh_region *r, struct kh_region **out);
struct kh_region *kh_region_of(kheap_t *h, uintptr_t addr);
/* The page table of the first region (kh_window): after its
 * descriptors, counted in its meta_bytes. */
static inline struct kh_ptag *kh_region_ptags(const struct kh_region *r0)
{
    return (struct kh_ptag *)(r0->pages + r0->npages);
}
_Static_assert(_Alignof(struct kh_page) >= _Alignof(struct kh_ptag) &&
                   sizeof(struct kh_page) % _Alignof(struct kh_ptag) == 0,
               "the page table after the descriptors is aligned");
_Static_assert(((uint64_t)KH_SLAB_MAX_PAGES << KHEAP_PAGE_SHIFT) <= UINT32_MAX,
               "an offset in a slab fits kh_ptag.rebase's 32 bits");
static inline uintptr_t kh_page_addr(kheap_t *h, const struct kh_page *d)
{
    const struct kh_region *r = &h->regions[d->region];
    return r->start + ((uintptr_t)(d - r->pages) << KHEAP_PAGE_SHIFT);
}
/* The descriptor of the page holding addr, or NULL if no region has it.
 * The first region (never changed after kheap_init) is tried first. */
static inline struct kh_page *kh_page_of(kheap_t *h, uintptr_t addr)
{
    const struct kh_region *r0 = &h->regions[0];
    if (kh_likely(addr - r0->start < r0->span))
        return &r0->pages[(addr - r0->start) >> KHEAP_PAGE_SHIFT];
    struct kh_region *r = kh_region_of(h, addr);
    return r ? &r->pages[(addr - r->start) >> KHEAP_PAGE_SHIFT] : NULL;
}
/* Is d (NULL: no page) a page of a slab? */
static inline bool kh_is_slab_page(const struct kh_page *d)
{
    return d && (d->kind == KH_PG_SLAB || d->kind == KH_PG_SLAB_PART);
}
/* The head of the slab that the slab page d belongs to. */
static inline struct kh_page *kh_slab_head(struct kh_page *d)
{
    return d->kind == KH_PG_SLAB_PART ? d - d->npages : d;
}
/* The slab head of the slab page holding addr (a live object). */
static inline struct kh_page *kh_slab_of(kheap_t *h, uintptr_t addr)
{
    return kh_slab_head(kh_page_of(h, addr));
}

/* pages.c (page_lock held unless said) */
struct kh_page *kh_run_alloc(kheap_t *h, size_t npages, size_t align,
                             enum kh_page_kind kind, bool high);
void kh_run_free(kheap_t *h, struct kh_page *head);
void kh_run_mark(kheap_t *h, struct kh_region *r, size_t i, size_t n,
                 enum kh_page_kind kind);
void kh_bins_insert(kheap_t *h, struct kh_page *head);
void kh_bins_remove(kheap_t *h, struct kh_page *head);
unsigned kh_bin_of(size_t npages);
size_t kh_bin_min(unsigned bin);
bool kh_large_resize(kheap_t *h, struct kh_page *head, size_t npages);
enum kheap_report_kind kh_diagnose(kheap_t *h, struct kh_page *d,
                                   uintptr_t addr);
void kh_pages_add(kheap_t *h, struct kh_region *r);
/* Pages in the longest free run; page_lock held (pages.c). */
size_t kh_pages_longest(const kheap_t *h);
/* Pages for kheap's own structures (zeroed; metadata), or NULL; no lock
 * held. fresh: the caller knows the pages were never used and read as
 * zero (the heap was just made over zeroed memory), so they are not
 * written, and cost no memory until touched. */
void *kh_internal_pages(kheap_t *h, size_t bytes, bool fresh);
void kh_internal_pages_free(kheap_t *h, void *p);
/* End of a decay epoch: purge the free pages that stayed resident and
 * idle through it; no lock held. Returns the bytes purged. */
size_t kh_pages_decay(kheap_t *h);

/* slab.c */
#if KH_POISON
uintptr_t kh_poison_bad(const struct kheap_cache *c, uintptr_t obj);
#endif
void kh_cache_setup(kheap_t *h, struct kheap_cache *c, const char *name,
                    size_t size, size_t align, kheap_ctor_fn ctor,
                    kheap_ctor_fn dtor, uint32_t flags);
/* Take up to n objects of c (returns how many), or give n back (returns
 * the bytes of slabs that went to the page layer), under one hold of c's
 * lock; the _counted forms also add the number to *count (a counter c's
 * lock protects, or NULL) in the same hold. An object its slab holds free
 * already is refused and reported: into later if not NULL (the caller
 * holds caches_lock), else at once. */
size_t kh_cache_take_counted(struct kheap_cache *c, void **objs, size_t n, uint64_t *count);
size_t kh_cache_give_counted(struct kheap_cache *c, void **objs, size_t n, uint64_t *count,
                             struct kh_later *later);
static inline size_t kh_cache_take(struct kheap_cache *c, void **objs, size_t n)
{
    return kh_cache_take_counted(c, objs, n, NULL);
}
/* A refill of CPU cpu's magazine (cpu.c): as kh_cache_take, from the
 * CPU's own slabs first on a heap with homes; the slabs it takes from
 * become the CPU's (slab.c, "Homes"). */
size_t kh_cache_take_home(struct kheap_cache *c, void **objs, size_t n, unsigned cpu);
/* How far a refill looks for its CPU's own along a partial list or the
 * depot's full magazines (slab.c, "Homes"). */
#define KH_HOME_SCAN 8u
static inline size_t kh_cache_give_n(struct kheap_cache *c, void **objs, size_t n,
                                     struct kh_later *later)
{
    return kh_cache_give_counted(c, objs, n, NULL, later);
}
enum kheap_report_kind kh_cache_give(struct kheap_cache *c, void *obj,
                                     struct kh_page *slab);
size_t kh_cache_take_try(struct kheap_cache *c, void **obj);
/* Give back c's empty slabs beyond keep; their destructors run, and their
 * pages go back, at once with later NULL (no lock held), else once the
 * caller has released caches_lock (kh_later_slabs_free). Returns their
 * bytes. */
size_t kh_cache_release(struct kheap_cache *c, size_t keep, struct kh_later *later);
/* End of a decay epoch: empty slabs that stayed empty through it go back
 * to the page layer (later as kh_cache_release). Returns their bytes. */
size_t kh_cache_decay(struct kheap_cache *c, struct kh_later *later);
/* The empty slabs a walk kept in l: destructors run, pages back to the
 * page layer, each cache's slabs_later counted down, and a destroyed
 * cache whose last held slab this was put on l->retire. Callers above
 * the slab layer call kh_later_finish (cpu.c), which does this and gives
 * those caches back, with no kheap lock held, before kh_later_deliver. */
#define KH_LATER_DYING (1u << 31) /* in kh_ucx.slabs_later */
void kh_later_slabs_free(struct kh_later *l);
/* Objects of user caches in the debug build (KHEAP_REDZONE) have a left
 * redzone: a slab's objects start this many bytes in (a multiple of the
 * alignment, at least RZ_CACHE), and each slot ends with the next
 * object's left redzone. 0 for every other cache and build. */
#define RZ_CACHE 16u
static inline bool rz_cache(const struct kheap_cache *c)
{
    return !(c->flags & (KH_CACHE_KMALLOC | KH_CACHE_INTERNAL));
}
static inline size_t kh_obj_off(const struct kheap_cache *c)
{
#if KHEAP_REDZONE
    if (!rz_cache(c))
        return 0;
    return c->align > RZ_CACHE ? c->align : RZ_CACHE;
#else
    (void)c;
    return 0;
#endif
}
/* The bytes of a slot that belong to its object: the object and its
 * right redzone, not the next object's left one. */
static inline size_t kh_obj_span(const struct kheap_cache *c)
{
    return c->slot - kh_obj_off(c);
}
/* Where s's objects start: its first page, past a left redzone. */
static inline uintptr_t kh_slab_base(kheap_t *h, const struct kh_page *s)
{
    return kh_page_addr(h, s) + kh_obj_off(s->cache);
}
bool kh_slab_obj_allocated(const struct kheap_cache *c, const struct kh_page *s,
                           uintptr_t base, size_t idx);
/* Is off (bytes from kh_slab_base of a slab of c) the start of one of
 * its slots? One multiply and one compare (kheap_cache.divtest); a split
 * build, which has no divtest, divides. */
static inline bool kh_slot_start(const struct kheap_cache *c, uintptr_t off)
{
#if KH_SPLIT /* no divtest: a division and a multiply (slow paths only) */
    uint32_t o = (uint32_t)off, k = o / c->slot;
    return k < c->objs && k * c->slot == o;
#else
    return (uint64_t)(uint32_t)off * c->divtest < c->slot_lim;
#endif
}
/* The index of the slot of c that starts off bytes past one of its
 * slabs' base, or c->objs if no slot starts there (off may be anything). */
static inline size_t kh_slot_of(const struct kheap_cache *c, uintptr_t off)
{
#if KH_SPLIT
    if (off >= ((uintptr_t)c->pages << KHEAP_PAGE_SHIFT))
        return c->objs;
    uint32_t o = (uint32_t)off, k = o / c->slot;
    return k < c->objs && k * c->slot == o ? k : c->objs;
#else
    return off < ((uintptr_t)c->pages << KHEAP_PAGE_SHIFT) && kh_slot_start(c, off)
               ? off / c->slot
               : c->objs;
#endif
}

/* guard.c (KH_GUARDS), below kmalloc.c */
/* kheap_guard_fault for the pool: 1 and a report if addr is in it. No
 * lock (a signal handler). Defined in every build (0 without a pool). */
int kh_guard_fault(kheap_t *h, const void *addr);
#if KH_GUARDS
/* Is p in h's pool of guard pages? O(1), no lock. */
static inline bool kh_guard_owns(kheap_t *h, const void *p)
{
    uintptr_t end = __atomic_load_n(&h->g_end, __ATOMIC_ACQUIRE);
    return end && (uintptr_t)p - h->g_start < end - h->g_start;
}
/* The miss path of an allocation of size bytes: a guarded block if the
 * countdown has run out (and a slot is free), else NULL. */
void *kh_guard_sample(kheap_t *h, size_t size);
/* A miss was served from a magazine refill that serves `served`
 * allocations in all: count them down. */
void kh_guard_count(kheap_t *h, size_t served);
/* Make the pool now, if it is not made (0, or KHEAP_ENOMEM/ENOSYS). */
int kh_guard_pool(kheap_t *h);
#if KHEAP_REDZONE
/* A zero-size block whose page stays shut (any access faults), or NULL
 * if there is no pool or no free slot. */
void *kh_guard_zero(kheap_t *h);
#endif
/* Free the block at p, which kh_guard_owns; reports misuse. */
void kh_guard_free(kheap_t *h, void *p, const char *fn);
/* Is p a live guarded block? Its size in *size; else *why. */
bool kh_guard_live(kheap_t *h, const void *p, size_t *size, enum kheap_report_kind *why);
/* Where a deferred free of the block at p (kh_guard_live) keeps its link:
 * in its slot, which stays readable when the block's page is shut. */
void **kh_guard_link(kheap_t *h, const void *p);
/* Sampled blocks ever allocated and freed, and their bytes. */
void kh_guard_stats(kheap_t *h, uint64_t *allocs, uint64_t *frees, uint64_t *abytes,
                    uint64_t *fbytes);
#else /* no sampler: nothing is in the pool, and these are never called */
static inline bool kh_guard_owns(kheap_t *h, const void *p)
{
    (void)h, (void)p;
    return false;
}
static inline void kh_guard_free(kheap_t *h, void *p, const char *fn)
{
    (void)h, (void)p, (void)fn;
}
static inline bool kh_guard_live(kheap_t *h, const void *p, size_t *size,
                                 enum kheap_report_kind *why)
{
    (void)h, (void)p, (void)size, (void)why;
    return false;
}
static inline void **kh_guard_link(kheap_t *h, const void *p)
{
    (void)h;
    return (void **)p;
}
#endif

#if KHEAP_REDZONE
/* The debug build's blocks (kmalloc.c, "The debug build's blocks", says
 * how they are laid out; check.c walks them too). */
#define RZ_GUARDED KH_GUARDS
#define RZ_HEAD 16u
#define RZ_TAIL 16u
#define RZ_BYTE ((unsigned char)KHEAP_REDZONE_BYTE)

struct rz_head {
    uint64_t size_kind; /* size << 2 | kind */
    uint32_t left;      /* bytes from raw to p */
    uint32_t state;     /* rz_state(p, live) */
};
_Static_assert(sizeof(struct rz_head) == RZ_HEAD, "the header is 16 bytes");

/* The state word of the block at p: live, or freed (quarantined). */
static inline uint32_t rz_state(const void *p, bool live)
{
    uint32_t m = (uint32_t)((uintptr_t)p >> 4) * 0x9e3779b1u;
    return m ^ (live ? 0x4c495645u : 0x46524545u);
}

static inline struct rz_head *rz_head(const void *p)
{
    return (struct rz_head *)((uintptr_t)p - RZ_HEAD);
}

/* The first byte of [from, to) that is not b, or NULL. */
static inline const void *rz_damage(const void *from, const void *to, unsigned char b)
{
    for (const unsigned char *q = from; q < (const unsigned char *)to; q++)
        if (*q != b)
            return q;
    return NULL;
}

/* Objects of user caches (not the kmalloc classes, whose blocks are the
 * debug blocks above, nor kheap's own) have a redzone on each side: at
 * least RZ_CACHE bytes before them (kh_obj_off) and after them (their
 * slot is that much longer, kh_cache_setup). While an object is
 * allocated, or cached in a magazine, its left redzone holds RZ_BYTE;
 * while it is allocated, its right one does too. Both are checked when
 * it is freed and by kheap_check. For a cache with a constructor the
 * free-list link lies in the right one: it is written only while the
 * object is free in its slab, and an object carved again gets its
 * redzone back. Lists of allocated objects (reserves, deferred
 * KHEAP_NOLOCK frees) link through the left one (kh_held_link). The
 * rule (rz_cache, kh_obj_off) is with kh_slab_base. */

/* Fill the left redzone of c's object at p (rz_cache(c) true). */
static inline void rz_cache_fill_left(const struct kheap_cache *c, void *p)
{
    size_t left = kh_obj_off(c);
    __builtin_memset((char *)p - left, RZ_BYTE, left);
}

/* Fill both redzones of c's object at p (rz_cache(c) true). */
static inline void rz_cache_fill(const struct kheap_cache *c, void *p)
{
    rz_cache_fill_left(c, p);
    __builtin_memset((char *)p + c->size, RZ_BYTE, kh_obj_span(c) - c->size);
}

/* The pages of a large block at p that hold nothing else, shut while it
 * is quarantined: [*lo, *hi), possibly empty. */
static inline void rz_shut_range(const void *p, size_t size, uintptr_t *lo, uintptr_t *hi)
{
    *lo = kh_align_up((uintptr_t)p, KH_PAGE);
    *hi = ((uintptr_t)p + size) & ~KH_PAGE_MASK;
}
#endif

/* The word through which a list of allocated objects of c (a reserve,
 * the deferred KHEAP_NOLOCK frees) links them: c's link word (the
 * object's first word, or past a constructed object's bytes), or in the
 * debug build the first word of the object's left redzone, so that
 * neither constructed bytes nor the right redzone are written. */
static inline void **kh_held_link(const struct kheap_cache *c, void *obj)
{
#if KHEAP_REDZONE
    if (rz_cache(c))
        return (void **)((char *)obj - kh_obj_off(c));
#endif
    return (void **)((char *)obj + c->link_off);
}

/* obj left such a list: the redzone's bytes under the link back. */
static inline void kh_held_unlink(const struct kheap_cache *c, void *obj)
{
#if KHEAP_REDZONE
    if (rz_cache(c))
        __builtin_memset((char *)obj - kh_obj_off(c), RZ_BYTE, sizeof(void *));
#else
    (void)c, (void)obj;
#endif
}

/* cpu.c */
/* kh_later_slabs_free, then every cache on l->retire given back. */
void kh_later_finish(struct kh_later *l);
/* Give back destroyed user cache c: off the list, drained, counted as
 * retired, and no walk holds its slabs (kh_ucx.slabs_later). */
void kh_cache_retire(struct kheap_cache *c);
void *kh_cpu_alloc_slow(kheap_t *h, struct kheap_cache *c);
void kh_cpu_free_slow(kheap_t *h, struct kheap_cache *c, void *p);
/* A free of p, an object of c whose slab is homed at home, on the CPU the
 * caller runs on (KH_HOMES): when the heap has homes, c is a kmalloc class
 * and home is not that CPU (or is none), p goes to this CPU's remote
 * front of c (or its slab), as the free hit path sends it:
 * KH_REMOTE_PUSHED, or KH_REMOTE_SENT when the front's magazine went on
 * to the depot (a miss: the caller polls, as after any other); 0, with
 * nothing done, for the caller's usual free. */
#define KH_REMOTE_PUSHED 1u
#define KH_REMOTE_SENT 2u
unsigned kh_cpu_free_remote(kheap_t *h, struct kheap_cache *c, void *p, unsigned home);
/* The misses this CPU's two magazines of c settle between them: loaded
 * empty and previous full (loaded full and previous empty) swap, and the
 * pop (push) is made, as kh_cpu_alloc_slow (kh_cpu_free_slow) would, with
 * no lock taken and nothing moved between layers. 0, and nothing
 * changed, for every other miss; else KH_SWAP_DONE, or KH_SWAP_POLL when
 * the CPU's count of its misses of c (allocations or frees) is a multiple
 * of KH_SWAP_POLL_EVERY: the caller then polls the clock as the rest of the
 * miss path would, so that a load whose misses are all swaps still ends
 * decay epochs and answers reclaim requests (kmalloc.c, decay_poll). */
#define KH_SWAP_DONE 1u
#define KH_SWAP_POLL 2u
#define KH_SWAP_POLL_EVERY 16u
unsigned kh_cpu_alloc_swap(kheap_t *h, struct kheap_cache *c, void **out);
unsigned kh_cpu_free_swap(kheap_t *h, struct kheap_cache *c, void *p);
/* later: where the flushes' reports go (kh_cache_give_counted). */
size_t kh_cache_drain(struct kheap_cache *c, bool all, struct kh_later *later);
bool kh_cpu_cached(kheap_t *h, struct kheap_cache *c, void *p);
/* End of a decay epoch: depot magazines beyond the epoch's working set go
 * back to the slabs. Returns the bytes of slabs that went to the pages. */
size_t kh_depot_decay(kheap_t *h, struct kheap_cache *c, struct kh_later *later);
size_t kh_cpu_take_n(kheap_t *h, struct kheap_cache *c, void **out, size_t n, size_t *from_mags);
size_t kh_cpu_put_n(kheap_t *h, struct kheap_cache *c, void **objs, size_t n);
struct kh_mag *kh_nolock_begin(kheap_t *h, struct kheap_cache *c, bool alloc, unsigned *cpu);
void kh_nolock_end(kheap_t *h, struct kheap_cache *c, unsigned cpu);
/* The CPUs' caches of large blocks (kh_runcache, kh_front.h). May a CPU
 * cache the large block whose head is d (a user block in the first region
 * of KH_RUN_MIN_PAGES to KH_RUN_MAX_PAGES pages)? Is it cached now (its
 * tag taken: freed, as far as the program knows)? Stable while the block
 * is live or cached. */
static inline bool kh_run_eligible(kheap_t *h, const struct kh_page *d)
{
    (void)h;
    return KH_RUNS && d->region == 0 && !d->internal && d->npages >= KH_RUN_MIN_PAGES &&
           d->npages <= KH_RUN_MAX_PAGES;
}
static inline bool kh_run_cached(kheap_t *h, const struct kh_page *d)
{
    return kh_run_eligible(h, d) &&
           __atomic_load_n(&h->window.pt[d - h->regions[0].pages].tag, __ATOMIC_ACQUIRE) !=
               KH_RUN_TAG;
}
/* CPU cpu's magazines of h's caches to the depots and its cached large
 * blocks to the pages, for a CPU the caller holds alone (no lock held);
 * the CPU has then answered every request to give back. */
void kh_cpu_flush_heap(kheap_t *h, unsigned cpu);
/* Cache the block p of npages pages, whose tag the caller took, in this
 * CPU's cache (made on first use); false if there is none or no room. */
bool kh_runs_put(kheap_t *h, void *p, size_t npages);
void *kh_runs_get(kheap_t *h, size_t size);
/* The slow free of the live large block ptr of the first region, whose
 * tag the caller took with a compare-and-exchange (kh_tx_run_free, whose
 * push missed): this CPU's cache or the page layer, then the deferred
 * frees, as any slow free (kmalloc.c). */
void kh_free_large_taken(kheap_t *h, void *ptr);
/* This CPU's cached runs back to the page layer, all of them. No lock
 * held. Returns the bytes. */
size_t kh_runs_flush_here(kheap_t *h);
/* Requests to give back (cpu.c; kheap_reclaim to the CPUs it cannot
 * reach). kh_cpu_ask makes one, which the calling CPU answers at once.
 * kh_cpu_tick, on this CPU at a tick: whether a request came since it
 * last answered, and with decay, its cached runs back to the page layer
 * (adding to *bytes) if it took none since it last saw an epoch end.
 * kh_cpu_answer: this CPU's answer, if it owes one (its magazines to the
 * depots, its runs to the pages; reports into later); the caller then
 * empties the depots. No lock held for any. */
void kh_cpu_ask(kheap_t *h);
/* Whether CPU cpu has a request to answer (its count behind the heap's;
 * both read relaxed: a request made meanwhile is seen next time). */
static inline bool kh_cpu_owes(kheap_t *h, unsigned cpu)
{
    return __atomic_load_n(&h->flush_seen[cpu], __ATOMIC_RELAXED) !=
           (uint16_t)__atomic_load_n(&h->flush_asked, __ATOMIC_ACQUIRE);
}
bool kh_cpu_tick(kheap_t *h, bool decay, size_t *bytes);
/* kheap_tick (cache.c), and with polled, a poll of the slow paths with
 * the port's clock (kmalloc.c, decay_poll), which alone moves decay_seen
 * and may end a quiet stretch. */
size_t kh_tick(kheap_t *h, uint64_t now_ms, bool polled);
size_t kh_cpu_answer(kheap_t *h, struct kh_later *later);
struct kh_run_counts {
    uint64_t allocs, frees, alloc_pages, free_pages;
    uint64_t held; /* pages cached now */
};
/* Takes no lock; kheap_get_stats calls it holding page_lock, under which
 * a flush moves runs from these counts to the page layer's. */
void kh_runs_counts(kheap_t *h, struct kh_run_counts *out);
struct kh_counts {
    uint64_t allocs, frees, hits, misses;
    size_t active; /* objects handed out of slabs: live + cached */
};
void kh_cache_counts(kheap_t *h, struct kheap_cache *c, struct kh_counts *out);
/* CPU cpu's front of cache c: in the CPU's state for a kmalloc class
 * (NULL if that CPU never used the heap), in the cache's own array for a
 * user cache. */
static inline struct kh_cc *kh_cc_of(kheap_t *h, struct kheap_cache *c, unsigned cpu)
{
    if (c->cls == KH_NO_CLASS)
        return &KH_U(c)->percpu[cpu];
    struct kh_cpu *pc = __atomic_load_n(&h->cpu[cpu], __ATOMIC_ACQUIRE);
    return pc == &kh_cpu_sentinel ? NULL : &pc->cc[KH_CC(c->cls)];
}
/* CPU cpu's remote front of c (KH_HOMES: a kmalloc class's, once the CPU
 * freed another CPU's object), else NULL. */
static inline struct kh_cc *kh_rcc_of(kheap_t *h, struct kheap_cache *c, unsigned cpu)
{
#if KH_HOMES
    if (c->cls == KH_NO_CLASS || cpu >= KHEAP_MAX_CPUS)
        return NULL;
    struct kh_cpu *pc = __atomic_load_n(&h->cpu[cpu], __ATOMIC_ACQUIRE);
    struct kh_remote *r = pc == &kh_cpu_sentinel ? NULL : kh_cpu_remote(pc);
    return r ? &r->cc[KH_CC(c->cls)] : NULL;
#else
    (void)h, (void)c, (void)cpu;
    return NULL;
#endif
}
/* What a user cache keeps after its fronts, in the same allocation
 * (c->percpu[KHEAP_MAX_CPUS + 1]): per CPU its busy word and KHEAP_NOLOCK
 * counts (the kmalloc classes have theirs in struct kh_cpu), and the
 * cache's counters of the calls that bypass the hit path. */
struct kh_ucx {
    unsigned busy[KHEAP_MAX_CPUS + 1];
    struct kh_nlc nlc[KHEAP_MAX_CPUS + 1];
    struct kh_xc xc;
    /* Atomic: empty slabs of the cache kept in some walk's struct
     * kh_later, their destructors yet to run (slab.c). Raised while the
     * walk holds caches_lock with the cache listed; lowered (acquire and
     * release) after the walker's last touch of the slab. Its top bit,
     * KH_LATER_DYING, is set by kheap_cache_destroy once the cache is off
     * the list, drained and counted as retired: whichever of destroy and
     * those walks leaves the count at 0 with the bit set gives the cache
     * back (kh_cache_retire), so destroy never waits for a walk. */
    unsigned slabs_later;
};
static inline struct kh_ucx *kh_ucx_of(const struct kheap_cache *c)
{
    return (struct kh_ucx *)(KH_U(c)->percpu + KHEAP_MAX_CPUS + 1);
}
/* CPU cpu's busy word for c's front, or NULL when the front is not set
 * up (a kmalloc class on a CPU that never used the heap). */
static inline unsigned *kh_busy_of(kheap_t *h, struct kheap_cache *c, unsigned cpu)
{
    if (c->cls == KH_NO_CLASS)
        return &kh_ucx_of(c)->busy[cpu];
    struct kh_cpu *pc = __atomic_load_n(&h->cpu[cpu], __ATOMIC_ACQUIRE);
    return pc == &kh_cpu_sentinel ? NULL : &pc->busy;
}
/* CPU cpu's KHEAP_NOLOCK counts of c (same condition). */
static inline struct kh_nlc *kh_nlc_of(kheap_t *h, struct kheap_cache *c, unsigned cpu)
{
    if (c->cls == KH_NO_CLASS)
        return &kh_ucx_of(c)->nlc[cpu];
    struct kh_cpu *pc = __atomic_load_n(&h->cpu[cpu], __ATOMIC_ACQUIRE);
    return pc == &kh_cpu_sentinel ? NULL : &pc->nlc[c->cls];
}
/* c's counters of bulk, reserve and KHEAP_NOLOCK calls, or NULL if not
 * yet made (a kmalloc class: kh_xc_get makes them) or c is one of
 * kheap's own caches. */
static inline struct kh_xc *kh_xc_of(kheap_t *h, struct kheap_cache *c)
{
    if (c->flags & KH_CACHE_INTERNAL)
        return NULL; /* kheap's own caches: no per-CPU layer, no counters */
    if (c->cls == KH_NO_CLASS)
        return &kh_ucx_of(c)->xc;
    struct kh_xc *x = __atomic_load_n(&h->kxc, __ATOMIC_ACQUIRE);
    return x ? &x[c->cls] : NULL;
}
struct kh_xc *kh_xc_get(kheap_t *h, struct kheap_cache *c);
void kh_cpu_account(kheap_t *h, struct kheap_cache *c, size_t n, size_t from_mags, bool alloc);

/* check.c */
#if KHEAP_DEBUG >= 3
void kh_debug_check(kheap_t *h, const char *function);
#else
#define kh_debug_check(h, f) ((void)0)
#endif

/* cache.c */
/* kheap_cache_destroy once deferred frees are taken (kmalloc.c). */
int kh_cache_destroy(kheap_cache_t *c);
/* A shrinker pass (no lock held): each registered shrinker is asked, in
 * registration order, until they report want bytes freed. Counted in
 * who's shrink_calls when who is not NULL. Returns the bytes reported;
 * 0 at once when a pass is already running (on any CPU). */
size_t kh_shrink(kheap_t *h, size_t want, struct kheap_cache *who);
/* A shrinker pass (counted in who's shrink_calls), then every cache's
 * cached memory back to the page layer (kheap_reclaim, in kmalloc.c,
 * also takes the deferred KHEAP_NOLOCK frees first). Returns the bytes
 * given back, plus those the shrinkers reported if count_shrunk (then 0
 * means retrying an allocation is pointless). */
size_t kh_reclaim(kheap_t *h, struct kheap_cache *who, bool count_shrunk);

/* kmalloc.c */
void *kh_alloc_slow(kheap_t *h, size_t size);
void kh_free_slow(kheap_t *h, void *ptr);
/* A sized free that missed kh_hit_free_sized: ptr freed if size (asked
 * with align, 0 for none) can be its block's, else reported. */
void kh_free_sized_slow(kheap_t *h, void *ptr, size_t size, size_t align,
                        enum kheap_block_kind kind);

/* init.c */
int kh_heap_create(kheap_t **out, void *base, size_t size, bool zeroed, bool shut);

#if KHEAP_DEBUG >= 1
#define KH_ASSERT(cond, addr)                                                 \
    do {                                                                      \
        if (kh_unlikely(!(cond)))                                             \
            kheap_port_panic("kheap assertion failed: " #cond,                \
                             (const void *)(addr));                           \
    } while (0)
#else
#define KH_ASSERT(cond, addr) ((void)0)
#endif

/* Lock helpers. */
static inline void kh_lock(kheap_lock_t *l)
{
    kheap_port_lock(l);
}
static inline void kh_unlock(kheap_lock_t *l)
{
    kheap_port_unlock(l);
}

#endif /* KH_INTERNAL_H */
