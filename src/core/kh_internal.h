/*
 * kh_internal.h - the heap's data structures, shared by the core's layers.
 *
 * Layers, bottom up (one file each): region.c (regions, pointer -> page
 * descriptor), pages.c (runs of pages: binned, split, coalesced), slab.c
 * (a run carved into objects of one size), cache.c (object caches over
 * slabs), kmalloc.c (size -> class -> cache, large blocks), stats.c,
 * check.c, format.c, default.c (the static default heap).
 *
 * Lock order (a thread may take a lock only if it holds none listed
 * below it):
 *   1. kheap.caches_lock  - the list of user caches (kheap.caches).
 *   2. kheap_cache.lock   - one cache's slab lists and counters; a thread
 *                           holds at most one, except kheap_check, which
 *                           takes them all in list order (kmalloc classes
 *                           first, then the list) while holding 1.
 *   3. kheap.page_lock    - the page layer: bins, run boundary descriptors,
 *                           the region table, page counters, large-block and
 *                           failure counts.
 * The committed/peak/internal byte counters are atomics, updated on slow
 * paths only; no lock is shared by every cache.
 * No lock is held across a constructor, destructor or report.
 */
#ifndef KH_INTERNAL_H
#define KH_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kheap.h"
#include "kheap_port.h"

#if KHEAP_VALGRIND
#include <valgrind/drd.h>
#include <valgrind/memcheck.h>
/* For drd, which sees relaxed atomics and kheap's own spinlock as plain
 * accesses: mark the per-CPU counters (written by one CPU, summed by any)
 * and the lock-free publication words as intended races, and describe the
 * registry spinlock as a lock. */
#define kh_vg_benign(p, n) ANNOTATE_BENIGN_RACE_SIZED(p, n, "kheap per-CPU or published word")
#define kh_vg_lock_created(l) ANNOTATE_RWLOCK_CREATE(l)
#define kh_vg_locked(l) ANNOTATE_RWLOCK_ACQUIRED(l, 1)
#define kh_vg_unlocked(l) ANNOTATE_RWLOCK_RELEASED(l, 1)
#define kh_vg_before(p) ANNOTATE_HAPPENS_BEFORE(p)
#define kh_vg_after(p) ANNOTATE_HAPPENS_AFTER(p)
#define kh_vg_alloc(p, n, zeroed) VALGRIND_MALLOCLIKE_BLOCK(p, n, 0, zeroed)
#define kh_vg_free(p) VALGRIND_FREELIKE_BLOCK(p, 0)
#define kh_vg_resize(p, o, n) VALGRIND_RESIZEINPLACE_BLOCK(p, o, n, 0)
#define kh_vg_defined(p, n) VALGRIND_MAKE_MEM_DEFINED(p, n)
#define kh_vg_undefined(p, n) VALGRIND_MAKE_MEM_UNDEFINED(p, n)
#else
#define kh_vg_benign(p, n) ((void)(p), (void)(n))
#define kh_vg_lock_created(l) ((void)(l))
#define kh_vg_locked(l) ((void)(l))
#define kh_vg_unlocked(l) ((void)(l))
#define kh_vg_before(p) ((void)(p))
#define kh_vg_after(p) ((void)(p))
#define kh_vg_alloc(p, n, zeroed) ((void)(p), (void)(n), (void)(zeroed))
#define kh_vg_free(p) ((void)(p))
#define kh_vg_resize(p, o, n) ((void)(p), (void)(o), (void)(n))
#define kh_vg_defined(p, n) ((void)(p), (void)(n))
#define kh_vg_undefined(p, n) ((void)(p), (void)(n))
#endif

/* Poisoning of freed objects (KHEAP_DEBUG >= 2; valgrind does better). */
#if KHEAP_DEBUG >= 2 && !KHEAP_VALGRIND
#define KH_POISON 1
#else
#define KH_POISON 0
#endif

#define KH_PAGE ((uintptr_t)KHEAP_PAGE_SIZE)
#define KH_PAGE_MASK (KH_PAGE - 1)
#define KH_HEAP_MAGIC 0x6b686561u /* "khea" */
#define KH_CACHE_MAGIC 0x6b636163u /* "kcac" */

/* Slabs never span more pages than this (the page counts of every class
 * are computed at init; see slab.c). */
#define KH_SLAB_MAX_PAGES 64u
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
};

struct kheap_cache;

struct kh_page {
    uint8_t kind;     /* enum kh_page_kind; page_lock (stable while the run
                         is allocated: see kh_page_of) */
    uint8_t region;   /* index in kheap.regions; set on every boundary */
    uint16_t inuse;   /* SLAB: objects allocated from it; cache lock */
    uint16_t carved;  /* SLAB: objects ever carved (lazily); cache lock */
    uint8_t list;     /* SLAB: enum kh_slab_list; cache lock */
    uint8_t internal; /* LARGE: 1 if it holds kheap's own structures
                         (per-CPU state), counted as metadata */
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
};

/* ------------------------------------------------------------------ */
/* Per-CPU magazines (cpu.c). */

/* A magazine: a stack of up to cap constructed objects of one cache. */
struct kh_mag {
    uint32_t n;          /* objects held: obj[0 .. n) */
    uint32_t cap;        /* 0 only for kh_mag_sentinel */
    struct kh_mag *next; /* depot list link */
    void *obj[];
};

/* One CPU's front of one cache, alone on its cache line. The loaded
 * magazine is held as a stack of pointers: its objects are [base, top),
 * and it has room up to limit, so a hit reads and writes top and nothing
 * else of the magazine header (its n is brought up to date only when the
 * magazine is unloaded: kh_cc_unload). Written only by its CPU (or by
 * kheap_cpu_flush once the CPU has stopped); the counters are read by any
 * CPU with relaxed atomic loads and summed. */
/* The operations that left a CPU's hit path, per cache (same writers and
 * readers as the kh_cc counters). */
struct kh_misses {
    uint64_t alloc, free;
};

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
} __attribute__((aligned(64)));

#define KH_CACHE_LINE 64u
_Static_assert(sizeof(struct kh_cc) == KH_CACHE_LINE, "kh_cc is one cache line");


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
} __attribute__((aligned(KH_CACHE_LINE)));

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

#define KH_NO_CLASS 0xffu
#define KH_MAG_TYPES 5u

/* ------------------------------------------------------------------ */
/* Object caches. */

enum {
    KH_CACHE_KMALLOC = 1u << 0,  /* a kmalloc size class: not destroyable */
    KH_CACHE_INTERNAL = 1u << 1, /* holds kheap's own structures: its
                                    objects count as metadata */
};

struct kheap_cache {
    /* Fixed at creation; read without a lock. */
    uint32_t magic;
    uint32_t flags;
    kheap_t *heap;
    char name[KHEAP_NAME_MAX];
    uint32_t size;       /* usable bytes of an object */
    uint32_t slot;       /* bytes between objects */
    uint32_t link_off;   /* free-list link offset in a free object */
    uint32_t align;      /* alignment of every object */
    uint32_t objs;       /* objects per slab */
    uint32_t pages;      /* pages per slab */
    uint32_t slab_align; /* alignment of the slab's first page, bytes */
    uint32_t bitmap_off; /* offset of the allocation bitmap in the slab */
    uint32_t bitmap_bytes; /* 0: the bitmap is kh_page.bits (objs <= 32) */
    uint8_t cls;         /* kmalloc class index, or KH_NO_CLASS */
    uint8_t guard;       /* 1: freed objects carry the double-free key in
                            bytes 8..11 (no ctor; kh_fast.h) */
    uint16_t cc_off;     /* offset of the class's kh_cc in struct kh_cpu
                            if free has a hit path for it (a kmalloc class
                            of one-page slabs), else 0 */
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
    uint32_t depot_ops;
    /* User operations that bypassed the per-CPU layer. */
    uint64_t nocpu_allocs, nocpu_frees;

    /* Protected by kheap.caches_lock. */
    struct kheap_cache *next, *prev;
};

/* ------------------------------------------------------------------ */
/* The heap. Lives at the start of its first region. */

/* Bins of free runs: two-level (8 sub-bins per doubling of the length in
 * pages, exact below 16 pages), a bitmap of non-empty bins and a summary
 * word, as TLSF does, so the first bin that can hold a length is found in
 * O(1) (docs/DESIGN.md). Run lengths are uint32_t. */
#define KH_BIN_SUB_SHIFT 3u
#define KH_NBINS 240u
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

    kheap_lock_t caches_lock __attribute__((aligned(KH_CACHE_LINE)));
    /* Protected by caches_lock: user caches in creation order. */
    struct kheap_cache *caches, *caches_tail;
    size_t ncaches;

    /* Per-CPU state of the kmalloc classes: cpu[k] is CPU k's, or
     * &kh_cpu_sentinel until CPU k first uses the heap; written once by
     * CPU k (release), read by others (acquire). cpu[KHEAP_CPU_NONE] stays
     * the sentinel. */
    struct kh_cpu *cpu[KHEAP_MAX_CPUS + 1] __attribute__((aligned(KH_CACHE_LINE)));
    kheap_t *next_heap; /* registry of heaps (cpu.c) */
    /* Page tags of the first region, or NULL: for each page, the offset
     * in struct kh_cpu of the front of the kmalloc class whose one-page
     * slab it is, else 0 (kh_fast.h). Written by the cache that makes or
     * unmakes the slab, under its lock, before any object of the slab is
     * handed out and after the last comes back. */
    uint16_t *tags;

    /* Fixed after init. */
    struct kheap_cache cache_cache; /* holds user kheap_cache structures */
    struct kheap_cache mag_cache[KH_MAG_TYPES]; /* magazines by capacity */
    struct kheap_cache kmalloc[KHEAP_NUM_CLASSES];
};

/* ------------------------------------------------------------------ */
/* Between the layers. */

/* region.c */
void kh_registry_add(kheap_t *h);
int kh_region_add(kheap_t *h, uintptr_t base, size_t size, bool zeroed,
                  bool grown);
struct kh_region *kh_region_of(kheap_t *h, uintptr_t addr);
int kh_heap_create(kheap_t **out, void *base, size_t size, bool zeroed);
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

/* check.c: take (lock true) or release every lock of h in the lock
 * order; for kheap_check and for fork (kheap_lock_all). */
void kh_heap_lock_all(kheap_t *h, bool lock);

/* pages.c (all with page_lock held unless said) */
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

/* The slab head of the slab page holding addr (a live object). */
static inline struct kh_page *kh_slab_of(kheap_t *h, uintptr_t addr)
{
    struct kh_page *d = kh_page_of(h, addr);
    return d->kind == KH_PG_SLAB_PART ? d - d->npages : d;
}

/* Pages for kheap's own structures (zeroed; metadata), or NULL. fresh:
 * the caller knows the pages were never used and read as zero (the heap
 * was just made over zeroed memory), so they are not written, and cost no
 * memory until touched. */
void *kh_internal_pages(kheap_t *h, size_t bytes, bool fresh);
void kh_internal_pages_free(kheap_t *h, void *p);

/* cpu.c */
unsigned kh_mag_cap_for(size_t size);
void *kh_cpu_alloc_slow(kheap_t *h, struct kheap_cache *c);
void kh_cpu_free_slow(kheap_t *h, struct kheap_cache *c, void *p);
size_t kh_cache_drain(struct kheap_cache *c, bool all);
bool kh_cpu_cached(kheap_t *h, struct kheap_cache *c, void *p);
struct kh_counts {
    uint64_t allocs, frees, hits, misses;
    size_t active; /* objects handed out of slabs: live + cached */
};
void kh_cache_counts(kheap_t *h, struct kheap_cache *c, struct kh_counts *out);

/* slab.c */
#if KH_POISON
uintptr_t kh_poison_bad(const struct kheap_cache *c, uintptr_t obj);
#endif
void kh_cache_setup(kheap_t *h, struct kheap_cache *c, const char *name,
                    size_t size, size_t align, kheap_ctor_fn ctor,
                    kheap_ctor_fn dtor, uint32_t flags);
size_t kh_cache_take(struct kheap_cache *c, void **objs, size_t n);
enum kheap_report_kind kh_cache_give(struct kheap_cache *c, void *obj,
                                     struct kh_page *slab);
size_t kh_cache_give_n(struct kheap_cache *c, void **objs, size_t n);
size_t kh_cache_release(struct kheap_cache *c, size_t keep);
static inline uintptr_t kh_slab_base(kheap_t *h, const struct kh_page *s)
{
    return kh_page_addr(h, s);
}
bool kh_slab_obj_allocated(const struct kheap_cache *c, const struct kh_page *s,
                           uintptr_t base, size_t idx);

/* kmalloc.c (kh_class_of is in kh_fast.h) */
size_t kh_class_size(unsigned cls);

/* Accounting (kmalloc.c). Called with the lock that guards the change
 * (the cache's, or page_lock for large blocks) still held, so
 * kheap_check, holding every lock, sees counters and structures agree. */
void kh_account_commit(kheap_t *h, size_t bytes, bool add);
void kh_account_failure(kheap_t *h);
void kh_account_internal(kheap_t *h, size_t bytes, bool add);

/* reports */
void kh_report(enum kheap_report_kind kind, const void *addr,
               const struct kheap_cache *c, const char *function);
const char *kh_report_reason(enum kheap_report_kind kind);

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

#if KHEAP_DEBUG >= 3
void kh_debug_check(kheap_t *h, const char *function);
#else
#define kh_debug_check(h, f) ((void)0)
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
