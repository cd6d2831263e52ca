/*
 * kheap.h - the whole public API of kheap, a kernel heap allocator.
 *
 * kheap manages memory regions the caller hands it and nothing else. It
 * carves them into pages; pages into runs (coalesced when freed); runs into
 * slabs of one size class; slabs feed object caches (Bonwick's kmem_cache),
 * and the kmalloc size classes are such caches. Sizes above the largest
 * class (KHEAP_MAX_CLASS) are page runs of their own.
 *
 * Conventions for every function below unless it says otherwise:
 *  - Thread safety: safe to call from any number of threads/CPUs at once on
 *    the same heap. The heap serialises through the port's locks (see
 *    kheap_port.h); a lock is never held while a user constructor or
 *    destructor runs.
 *  - Interrupt context: allowed when the port's lock masks interrupts
 *    (the bare-metal ports do), never with the hosted port.
 *  - Time: "O(1)" means bounded by a constant that does not grow with the
 *    heap size, the number of objects or the number of free runs; the
 *    constants are given in docs/DESIGN.md. Object constructors and
 *    destructors, copies and fills are extra, proportional to their size.
 *  - Misuse (a pointer that kheap did not hand out, an interior pointer, a
 *    double free) is reported (kheap_set_report_hook) with the address,
 *    the cache and the reason, and the heap is left as it was.
 *  - Failure to allocate returns NULL, counts a failure in the statistics
 *    and leaves the heap as it was.
 */
#ifndef KHEAP_H
#define KHEAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kheap_config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The release. The major number changes with every incompatible change of
 * this API or of libkheap.so's exports (its soname is libkheap.so.MAJOR);
 * the minor number with additions; the patch number with fixes. */
#define KHEAP_VERSION_MAJOR 0
#define KHEAP_VERSION_MINOR 1
#define KHEAP_VERSION_PATCH 0
#define KHEAP_VERSION "0.1.0"

/* Page size: runs, slabs and large blocks are multiples of it. */
#define KHEAP_PAGE_SIZE ((size_t)1 << KHEAP_PAGE_SHIFT)
/* Largest size served by a size-class slab; larger requests get a page
 * run of their own. */
#define KHEAP_MAX_CLASS ((size_t)1 << KHEAP_MAX_CLASS_SHIFT)
/* Number of kmalloc size classes (see docs/SIZE_CLASSES.md): 79 by
 * default, 15 in the small-system profile (docs/SIZE_CLASSES_SMALL.md). */
#define KHEAP_NUM_CLASSES (7 + ((KHEAP_MAX_CLASS_SHIFT - 6) << KHEAP_CLASS_SUB_SHIFT))
/* Longest cache name kept, including the terminating NUL. */
#define KHEAP_NAME_MAX 24

/* A heap. Opaque: it lives inside the first region given to kheap_init. */
typedef struct kheap kheap_t;
/* An object cache. Opaque: it lives inside its heap. */
typedef struct kheap_cache kheap_cache_t;

/* ------------------------------------------------------------------ */
/* Errors                                                              */

enum kheap_err {
    KHEAP_OK = 0,
    KHEAP_EINVAL = 1,    /* NULL argument, or a bad alignment/size */
    KHEAP_ETOOSMALL = 2, /* region below KHEAP_MIN_REGION_SIZE (first) or
                            KHEAP_MIN_ADD_REGION_SIZE (added) */
    KHEAP_ERANGE = 3,    /* region wraps around the address space */
    KHEAP_EOVERLAP = 4,  /* region overlaps one the heap already has */
    KHEAP_ETOOMANY = 5,  /* the heap already has KHEAP_MAX_REGIONS */
    KHEAP_EBUSY = 6,     /* cache still has allocated objects */
    KHEAP_ENOSYS = 7,    /* the port lacks a hook: pages (KHEAP_PORT_PAGES 0) or
                            page protection (KHEAP_PORT_PROTECT 0) */
    KHEAP_ENOMEM = 8,    /* the heap cannot give the objects asked for */
};

/* A constant English sentence for an error code; for KHEAP_ETOOSMALL it
 * states both minimum sizes in bytes. Never NULL. O(1). */
const char *kheap_strerror(int err);

/* Misuse reports. Every misuse kheap refuses (a bad free, a double free, a
 * wrong cache, a sized free of a size the block cannot have, poison found
 * overwritten, a busy cache destroyed) is
 * described by a struct kheap_report (kheap_port.h: kind, a constant
 * sentence, the address, the cache, the kheap function) and handed to the
 * hook, or, with no hook set, to the port's sink (hosted: one line on
 * stderr, then abort(), as glibc does; bare metal: one console line, and
 * the bad operation is ignored). The hook is called with no kheap lock
 * held and the heap consistent; when it returns, kheap carries on with the
 * bad operation ignored. One hook serves every heap. NULL restores the
 * port's sink. Returns the previous hook. Thread-safe (an atomic
 * exchange); a report racing with the change goes to either. A call that
 * walks the user caches holding their list's lock (kheap_reclaim,
 * kheap_tick, kheap_cpu_flush, kheap_cache_destroy) and finds double
 * frees in their magazines reports them after it has released it: the
 * first 4 as found, then, if there were more, one report of the first of
 * the rest whose size is how many the rest were. */
struct kheap_report;
typedef void (*kheap_report_fn)(const struct kheap_report *report);
kheap_report_fn kheap_set_report_hook(kheap_report_fn fn);

/* ------------------------------------------------------------------ */
/* Heaps and regions                                                   */

/* Make a heap over [base, base + size). base is aligned up to 64 bytes for
 * the heap's control structure and the page array is aligned up to
 * KHEAP_PAGE_SIZE; the bytes skipped count as metadata. kheap writes only
 * inside that range, ever. On success *heap is set and KHEAP_OK returned.
 * Errors: KHEAP_EINVAL (heap or base NULL), KHEAP_ERANGE (range wraps),
 * KHEAP_ETOOSMALL (size < KHEAP_MIN_REGION_SIZE, or too little left after
 * alignment). On error *heap is untouched and so is the memory.
 * Time: O(size / KHEAP_PAGE_SIZE) once, to clear the page descriptors.
 * Not thread-safe against other use of the same memory, naturally. */
int kheap_init(kheap_t **heap, void *base, size_t size);

/* Give the heap another region. Same alignment rules as kheap_init; the
 * region must not overlap one the heap has. Its pages are usable at once.
 * Errors: KHEAP_EINVAL, KHEAP_ERANGE, KHEAP_ETOOSMALL (below
 * KHEAP_MIN_ADD_REGION_SIZE), KHEAP_EOVERLAP, KHEAP_ETOOMANY.
 * Time: O(size / KHEAP_PAGE_SIZE + KHEAP_MAX_REGIONS). Thread-safe. */
int kheap_add_region(kheap_t *heap, void *base, size_t size);

/* Let the heap grow through the port's kheap_port_pages_get when a request
 * cannot be met from its regions (each growth adds a region of at least
 * grow_bytes, rounded up to fit the request). grow_bytes 0 turns growth
 * off again. Errors: KHEAP_ENOSYS when the port has no page hooks. */
int kheap_set_growable(kheap_t *heap, size_t grow_bytes);

/* Forget the heap: it leaves the list kheap_cpu_flush walks, and every
 * later call on it is undefined. Call it before the heap's memory is used
 * for anything else while threads (hosted) that used the heap may still
 * exit. O(heaps). */
void kheap_fini(kheap_t *heap);

/* For ports: CPU cpu stops using kheap (hosted: its thread exits; bare
 * metal: it goes offline). Its magazines in every heap go back to their
 * caches. Call it on that CPU, or after it has stopped; never while it
 * may still allocate. O(heaps x caches). */
void kheap_cpu_flush(unsigned cpu);

/* For ports, around fork(): kheap_lock_all takes every lock of every heap
 * (in the documented order), so no heap is halfway through a locked
 * operation when the address space is copied; kheap_unlock_all releases
 * them, in the parent and in the child (whose only thread is the one that
 * called kheap_lock_all). Between the two the caller must not call kheap.
 * The per-CPU magazines of other threads are not locked: the child leaves
 * their CPUs' (hosted: slots') state untouched (src/port/hosted.c).
 * O(heaps x caches). */
void kheap_lock_all(void);
void kheap_unlock_all(void);

/* The address one past the last byte of the heap's highest region. */
uintptr_t kheap_end(const kheap_t *heap);

/* ------------------------------------------------------------------ */
/* Allocation                                                          */

/* A block of at least size bytes, or NULL. size 0 gives a unique minimal
 * block that must be freed like any other. Alignment: at least 8, and the
 * largest power of two dividing the block's size class (so a size that is
 * a multiple of 16 gets 16, and a power-of-two size up to KHEAP_MAX_CLASS
 * gets its own size); large blocks are page-aligned.
 * Time: O(1). */
void *kheap_alloc(kheap_t *heap, size_t size);

/* A block of at least size bytes aligned to align, which must be a power
 * of two (any size, also above the page size); align 0 means default.
 * Returns NULL if align is not a power of two or size + align overflows.
 * Time: O(1). */
void *kheap_alloc_aligned(kheap_t *heap, size_t size, size_t align);

/* n * size zeroed bytes, or NULL when the product overflows. O(1) plus
 * the clearing. */
void *kheap_calloc(kheap_t *heap, size_t n, size_t size);

/* Resize. ptr NULL acts as kheap_alloc; size 0 frees ptr and returns NULL.
 * Stays in place when the new size is of the block's size class, when a
 * large block shrinks (giving the tail of its run back) to a size above
 * KHEAP_MAX_CLASS or to one whose class rounds to whole pages, or when a
 * large block grows into a free run right after it. A block shrunk to a
 * smaller class's size moves to that class, so it keeps the class
 * rounding of the new size, unless that class has no memory even after a
 * reclaim (an allocation's miss path): then it shrinks in place. A
 * sampled block always moves. Otherwise allocates, copies the smaller of
 * the two sizes and frees. On failure returns NULL and ptr is
 * left allocated and unchanged. A bad ptr is reported as kheap_free does
 * and NULL is returned. Time: O(1) plus the copy. */
void *kheap_realloc(kheap_t *heap, void *ptr, size_t size);

/* Free a block from kheap_alloc*, kheap_calloc, kheap_realloc or
 * kheap_cache_alloc (an object goes back to its own cache). NULL is a
 * no-op. Reported and ignored: a pointer outside the heap's regions, an
 * interior pointer, a pointer into a free run, an object its slab already
 * holds free (double free). Time: O(1). */
void kheap_free(kheap_t *heap, void *ptr);

/* Bytes usable at ptr (the size class, the cache's object size, or the
 * run's pages). 0 for NULL; a bad pointer (also an object its slab holds
 * free) is reported and 0 returned. Takes the object's cache lock.
 * Time: O(1). */
size_t kheap_usable_size(kheap_t *heap, const void *ptr);

/* What a block was allocated as. A build with KHEAP_REDZONE (the debug
 * build, libkheap-debug.so) records it and reports a free as another kind
 * (KHEAP_REPORT_KIND_MISMATCH); other builds ignore it. */
enum kheap_block_kind {
    KHEAP_BLOCK_MALLOC = 0, /* kheap_alloc, malloc, ... */
    KHEAP_BLOCK_NEW,        /* C++ new */
    KHEAP_BLOCK_NEW_ARRAY,  /* C++ new[] */
};
/* kheap_alloc_aligned (align 0: none) of a block of the given kind. */
void *kheap_alloc_as(kheap_t *heap, size_t size, size_t align, enum kheap_block_kind kind);
/* kheap_free of a block of the given kind; size: the size the caller
 * allocated (a sized free, C++ sized delete), or 0 for none. A size the
 * block cannot have is reported (KHEAP_REPORT_SIZE_MISMATCH, with the
 * block's usable bytes as the report's size) and the free refused: in
 * every build, a size whose class is not the block's (for a large block,
 * a size that does not round up to its pages); for a block of
 * KHEAP_BLOCK_MALLOC freed with no alignment, any smaller size passes too
 * (kheap_realloc keeps a shrinking block in place when the smaller class
 * has no memory). A KHEAP_REDZONE build checks the exact size asked for, and
 * the kind (KHEAP_REPORT_KIND_MISMATCH). Objects of caches made with
 * kheap_cache_create are freed as kheap_free frees them. A block
 * allocated with an alignment above 8 is freed with
 * kheap_free_aligned_as and the same alignment (here it would be taken
 * for a block of no alignment). Time: O(1); a size of the block's class
 * takes the free hit path. */
void kheap_free_as(kheap_t *heap, void *ptr, size_t size, enum kheap_block_kind kind);
/* kheap_free_as of a block allocated with align (kheap_alloc_aligned,
 * kheap_alloc_as; 0 or up to 8: none). */
void kheap_free_aligned_as(kheap_t *heap, void *ptr, size_t size, size_t align,
                           enum kheap_block_kind kind);
/* KHEAP_REDZONE builds: check and free every block in the quarantine
 * now; returns how many. 0 in other builds. */
size_t kheap_quarantine_drain(kheap_t *heap);

/* Sampled guard blocks (KFENCE and GWP-ASan's idea; docs/DESIGN.md):
 * about one allocation in `every` of at most KHEAP_PAGE_SIZE bytes gets
 * a page of its own between inaccessible pages, against the page's end or
 * its start in turn. An access past either end faults at once, and so
 * does an access after its free while the page waits to be reused (the
 * least recently freed of KHEAP_GUARD_SLOTS pages is reused first); a
 * smaller overflow inside the page is found at free. The sampling costs
 * nothing on the hit paths: a countdown is checked when a magazine runs
 * empty, so allocations served by a magazine that never runs empty are
 * not sampled. A sampled block behaves as any other (free, realloc,
 * usable size: its exact size; KHEAP_NOLOCK frees defer it).
 *
 * kheap_set_sample: 0 turns sampling off; the first non-zero call takes
 * the pool, 2 * KHEAP_GUARD_SLOTS + 1 pages of the heap's address space
 * (metadata in the statistics; only the pages of live sampled blocks are
 * touched), for the heap's life. Errors: KHEAP_EINVAL (heap NULL),
 * KHEAP_ENOSYS (the port cannot protect pages: KHEAP_PORT_PROTECT 0, a
 * KHEAP_REDZONE build, or the platform refused), KHEAP_ENOMEM (no room
 * for the pool). Heaps start with KHEAP_SAMPLE_RATE (default 0);
 * libkheap.so reads KHEAP_SAMPLE_RATE from the environment.
 *
 * kheap_guard_fault: for the platform's fault handler. If addr is in the
 * heap's guard pool, reports the access (KHEAP_REPORT_OVERFLOW,
 * _UNDERFLOW or _USE_AFTER_FREE, with the block's address and size, and
 * addr as `where`) through the report hook and returns 1; the caller must
 * not retry the access (the hosted default hook aborts). Returns 0 for an
 * address that is not the pool's. Takes no lock: safe in a signal or
 * exception handler. */
int kheap_set_sample(kheap_t *heap, unsigned long every);
unsigned long kheap_get_sample(kheap_t *heap);
int kheap_guard_fault(kheap_t *heap, const void *addr);

/* ------------------------------------------------------------------ */
/* Allocation from any context                                         */

/* Flags of the *_flags calls. */
#define KHEAP_NOLOCK 1u

/* kheap_alloc with flags; flags 0 is kheap_alloc. With KHEAP_NOLOCK the
 * call may be made from any context: an NMI, a tracing hook, a signal
 * handler (hosted), an interrupt handler that interrupted this CPU
 * anywhere, also inside kheap with a heap lock held. Such a call
 *  - never spins or waits on a lock: it takes locks only with the port's
 *    trylock (kheap_port.h), and gives up when one is busy;
 *  - takes an object from this CPU's previous magazine of size's class
 *    (refilled from the depot under a trylock), or else from a slab the
 *    class already has (trylock; no new slab, so no page lock);
 *  - returns NULL rather than waiting: when the magazine is empty and a
 *    lock busy, when this CPU was interrupted inside a slow path of the
 *    heap (docs/DESIGN.md, "Allocation from any context", says why that
 *    is the one case the magazine cannot be used), for sizes above
 *    KHEAP_MAX_CLASS, and for unknown flags.
 * It does not run shrinkers, reclaim, constructors, the report hook or
 * the KHEAP_DEBUG 3 check, and does not check the free poison. A NULL
 * is counted in slabinfo's nolock_fails, not in failed_count.
 * Time: O(1), bounded: no loop waits for anything. */
void *kheap_alloc_flags(kheap_t *heap, size_t size, unsigned flags);

/* kheap_free with flags; flags 0 is kheap_free. With KHEAP_NOLOCK, safe
 * in the same contexts as kheap_alloc_flags: the block goes onto this
 * CPU's previous magazine when there is room (or a trylock gets an empty
 * one from the depot); otherwise (no room, a lock busy, a large block,
 * an object that may be a double free) it is pushed on a per-CPU list of
 * deferred frees with one compare-and-swap, and freed, with every
 * check of kheap_free, by the CPU's next miss of the hit path or
 * kheap_reclaim; until then it counts as allocated. Misuse found without
 * a lock (a foreign, interior or already-deferred pointer) is not freed
 * and is reported at that same later point, since the report hook may
 * not be safe in the caller's context. Time: O(1), plus a scan of at most
 * 4096 blocks already deferred on this CPU (the double-free check). */
void kheap_free_flags(kheap_t *heap, void *ptr, unsigned flags);

/* ------------------------------------------------------------------ */
/* Object caches                                                       */

/* A constructor runs on an object the first time it is carved from a slab;
 * a destructor runs when the object's slab goes back to the page layer.
 * In between, kheap never writes to the object's bytes: it is handed out
 * again as it was when freed (Bonwick's rule: free objects in their
 * constructed state). The free-list link of such caches lies past the
 * object. Both run with no kheap lock held, so they may read statistics
 * (kheap_get_stats) and use other caches and the heap; neither may call
 * into the same cache, and a destructor may not destroy a cache (it may
 * run inside a walk that still holds that cache's slabs). */
typedef void (*kheap_ctor_fn)(void *obj);

/* A cache of objects of size bytes aligned to align (a power of two no
 * larger than KHEAP_PAGE_SIZE; 0 means 8). name is copied (truncated to
 * KHEAP_NAME_MAX - 1). ctor and dtor may be NULL. Returns NULL when size
 * is 0 or above KHEAP_MAX_CLASS, align is bad, or the cache structure
 * cannot be allocated. Time: O(1). */
kheap_cache_t *kheap_cache_create(kheap_t *heap, const char *name, size_t size,
                                  size_t align, kheap_ctor_fn ctor,
                                  kheap_ctor_fn dtor);

/* Per-cache tuning of the per-CPU layer, for kheap_cache_create_tuned.
 * KHEAP_TUNE_DEFAULT in a field keeps kheap_cache_create's choice. */
#define KHEAP_TUNE_DEFAULT 0xffffffffu
#define KHEAP_TUNE_DEPOT_MAX 65536u
struct kheap_cache_tuning {
    /* Objects per magazine: 0 turns the per-CPU layer off (every
     * operation takes the cache's lock); 1 .. 64 round down to 4, 8, 16,
     * 32 or 64 (at least 4; at most 4 << (KHEAP_MAG_TYPES - 1): 4 in the
     * small-system profile). Default: by object size, 64 objects up to
     * 128 bytes (512 on a heap of KHEAP_MAG_WIDE_MIN_HEAP or more) down to
     * 4 above 8 KiB; 0 with KHEAP_PERCPU 0. */
    unsigned mag_cap;
    /* Full magazines the depot may hold, 0 .. KHEAP_TUNE_DEPOT_MAX (0:
     * overflowing magazines go straight back to the slabs). Default:
     * KHEAP_DEPOT_MAX, or fewer so they hold at most KHEAP_DEPOT_BYTES. */
    unsigned depot_max;
};

/* kheap_cache_create with the per-CPU layer tuned by *tune (NULL: the
 * defaults). Returns NULL also when a field is out of range. The
 * values show in slabinfo (mag_cap, depot_max). Time: O(1). */
kheap_cache_t *kheap_cache_create_tuned(kheap_t *heap, const char *name, size_t size,
                                        size_t align, kheap_ctor_fn ctor, kheap_ctor_fn dtor,
                                        const struct kheap_cache_tuning *tune);

/* An object, constructed, or NULL. Time: O(1) plus at most one ctor. */
void *kheap_cache_alloc(kheap_cache_t *cache);

/* kheap_cache_alloc / kheap_cache_free with flags, as kheap_alloc_flags
 * and kheap_free_flags (KHEAP_NOLOCK: no constructor runs, so only
 * objects constructed before can be handed out: a fresh slot of a cache
 * with a constructor is never carved). A cache created with mag_cap 0
 * serves KHEAP_NOLOCK only from its slabs. */
void *kheap_cache_alloc_flags(kheap_cache_t *cache, unsigned flags);
void kheap_cache_free_flags(kheap_cache_t *cache, void *obj, unsigned flags);

/* Give obj back to cache. obj must come from this cache: an object of
 * another cache or heap block is reported, as are the kheap_free misuses.
 * Time: O(1) (plus destructors when this frees a slab beyond the
 * KHEAP_EMPTY_SLABS_KEPT kept empty). */
void kheap_cache_free(kheap_cache_t *cache, void *obj);

/* ------------------------------------------------------------------ */
/* Bulk allocation and free                                            */

/* n objects of cache into out[0 .. n-1], constructed, or none. They come
 * from this CPU's magazines first (no lock), then the depot's full
 * magazines (one hold of the cache's lock), then the slabs (one hold per
 * 64 objects). All or nothing: when the heap cannot give n objects, even
 * after kheap_reclaim, every object taken goes back, out[] holds nothing
 * usable, one failure is counted and 0 is returned; the heap's
 * statistics are then as before (slabs made meanwhile may remain as
 * kept empty slabs). Returns n on success, 0 when n is 0 or cache or out
 * is NULL. Counted in slabinfo's bulk_allocs (and in allocs, not in
 * cpu_hits). Time: O(n) plus at most one ctor per object. */
size_t kheap_cache_alloc_bulk(kheap_cache_t *cache, size_t n, void **out);

/* Free objs[0 .. n-1] (NULL entries are skipped) to cache: each is
 * checked as kheap_cache_free checks it (misuse reported, that object
 * skipped, the rest freed). Valid objects go into this CPU's magazines
 * while there is room, the rest to their slabs, up to 64 per hold of the
 * cache's lock. Time: O(n) (plus destructors of slabs given back). */
void kheap_cache_free_bulk(kheap_cache_t *cache, size_t n, void **objs);

/* n blocks of size bytes each (alignment as kheap_alloc) into out, or
 * none: as kheap_cache_alloc_bulk on size's class. Above KHEAP_MAX_CLASS
 * the blocks are page runs allocated one by one (one page-lock hold
 * each); on failure those already made are freed again (the allocation
 * and free counts then show them). Returns n or 0. Time: O(n). */
size_t kheap_alloc_bulk(kheap_t *heap, size_t size, size_t n, void **out);

/* Free ptrs[0 .. n-1], each as kheap_free would (NULL skipped, misuse
 * reported); consecutive objects of one cache are freed as one batch, as
 * kheap_cache_free_bulk does. Time: O(n). */
void kheap_free_bulk(kheap_t *heap, size_t n, void **ptrs);

/* ------------------------------------------------------------------ */
/* Reserves: objects set aside for a section that must not fail         */

/* A reserve: allocated objects of one cache, held for its owner. Start
 * it zeroed (KHEAP_RESERVE_INIT). It belongs to the caller: kheap never
 * touches it but in these calls, and the caller must not use one reserve
 * from two places at once. */
struct kheap_reserve {
    kheap_cache_t *cache; /* set by the first fill */
    void *head;           /* the objects, linked through a word of each */
    size_t count;         /* objects held */
};
#define KHEAP_RESERVE_INIT {0, 0, 0}

/* Top r up to n objects of cache (a reserve holding n or more is left as
 * it is). The objects are allocated as by kheap_cache_alloc_bulk (they
 * count as allocated, in bulk_allocs). All or nothing: if the heap cannot
 * give them, even after kheap_reclaim, r is left as it was and
 * KHEAP_ENOMEM returned. Errors: KHEAP_EINVAL (cache or r NULL, or r
 * already holds objects of another cache). Takes locks: call it where
 * allocation may wait, before the section. Time: O(n). */
int kheap_reserve_fill(kheap_cache_t *cache, size_t n, struct kheap_reserve *r);

/* One object of r's cache, constructed, or NULL only when r is empty: it
 * cannot fail while r holds objects. Takes no lock, calls nothing,
 * touches only r and the object (and one relaxed atomic counter,
 * slabinfo's reserve_allocs): safe with interrupts off, with any kheap
 * lock held, in an interrupt handler (if that handler is r's only user
 * meanwhile). The object's first word (for a cache with a constructor,
 * a word past the object) holds a link while it is in r. Free it as any
 * object of the cache. Time: O(1). */
void *kheap_reserve_alloc(struct kheap_reserve *r);

/* Free the objects r still holds (kheap_cache_free_bulk) and empty it;
 * r can be filled again. Returns how many. Time: O(objects held). */
size_t kheap_reserve_return(struct kheap_reserve *r);

/* A memory pool (Linux's mempool): a cache plus a reserve kept at min
 * objects, so that min allocations can always be met. mempool_alloc asks
 * the cache first and takes from the reserve only when the cache fails;
 * mempool_free refills the reserve first (after the checks
 * kheap_cache_free makes: misuse is reported and ignored) and frees to
 * the cache once it holds min. Like a reserve it belongs to its caller,
 * who serialises its use. */
struct kheap_mempool {
    struct kheap_reserve r;
    size_t min;
};
/* Errors as kheap_reserve_fill; on error the pool is empty and unusable. */
int kheap_mempool_init(struct kheap_mempool *pool, kheap_cache_t *cache, size_t min);
void *kheap_mempool_alloc(struct kheap_mempool *pool);
void kheap_mempool_free(struct kheap_mempool *pool, void *obj);
/* Return the reserve's objects to the cache. The pool is unusable after. */
void kheap_mempool_destroy(struct kheap_mempool *pool);

/* Give every empty slab back to the page layer, running the destructor on
 * each constructed object first. Returns the bytes given back.
 * Time: O(empty slabs + their objects). */
size_t kheap_cache_shrink(kheap_cache_t *cache);

/* Destroy an empty cache: its slabs go back (with destructors) and the
 * cache structure is freed. KHEAP_EBUSY, and the cache is left intact, if
 * it still has allocated objects. The kmalloc caches cannot be destroyed
 * (KHEAP_EINVAL). Time: as kheap_cache_shrink. */
int kheap_cache_destroy(kheap_cache_t *cache);

/* The heap's shrinkers (below), then kheap_cache_shrink on every cache of
 * the heap. Returns bytes given back to the page layer.
 * The calling CPU's magazines go back too, and those of the CPUs the port
 * can reach (hosted per-CPU mode: every CPU no slow path holds at that
 * moment). A CPU that is running holds
 * its magazines without a lock, so reclaim cannot take them: it leaves a
 * request instead, which each CPU answers by giving back its own
 * magazines and cached large blocks at its next kheap_tick(heap) or
 * kheap_cpu_poll(heap) (hosted per-thread slots: the thread's next slow
 * path, with decay on). The reclaim an allocation runs before it fails
 * (below) asks too, when every CPU answered the last request, or else
 * once per decay epoch. A CPU answers while it holds itself (bare metal:
 * interrupts masked), for a walk over the heap's caches. */
size_t kheap_reclaim(kheap_t *heap);

/* On the calling CPU: answer the heap's reclaim request (above) if this
 * CPU has not answered it yet, giving back its magazines and cached
 * large blocks as kheap_reclaim would (with every depot and empty slab);
 * else return at once. Returns the bytes that reached the page layer
 * (slabs that became empty, runs). A kernel has each CPU call it from its
 * idle loop, its timer, or a cross-call (IPI) it makes after
 * kheap_reclaim; unlike kheap_tick it runs no decay and needs no clock.
 * It answers for the CPU it finds itself on. It takes the heap's locks,
 * so never with a kheap lock held; an interrupt handler may call it where
 * the port's locks mask interrupts (the bare-metal port's do), and the
 * destructors of user caches' empty slabs and the report hook then run
 * there. Time: O(1) when nothing was asked, else O(caches). */
size_t kheap_cpu_poll(kheap_t *heap);

/* ------------------------------------------------------------------ */
/* Shrinkers and memory pressure                                       */

/* A shrinker: a callback of the heap's user that frees memory it holds
 * in the heap (caches of its own objects, say) when the heap runs short.
 * want_bytes is how much the heap would like back (SIZE_MAX: as much as
 * it can spare); it returns about how many bytes it freed (0 if none).
 * Rules:
 *  - It runs with no kheap lock held, on the thread whose allocation or
 *    reclaim started the pass.
 *  - It may free into the heap (kheap_free, kheap_cache_free, bulk frees)
 *    and allocate from other caches, but must not allocate from the
 *    cache whose failing allocation is being retried (that allocation
 *    would fail again: no new pass starts while one runs), and must not
 *    register or unregister shrinkers.
 *  - One pass at a time per heap: an allocation that fails while a pass
 *    runs (on any CPU, also inside a shrinker) fails without waiting for
 *    it and without starting another.
 *  - A pass calls the shrinkers in registration order until they report
 *    want_bytes freed in all.
 * When passes run: (1) before an allocation fails (kheap_alloc*,
 * kheap_cache_alloc, the bulk calls, reserve fills): the pass, then
 * kheap_reclaim's return of cached memory, then one retry; (2) from
 * kheap_reclaim; (3) when an allocation takes the heap's free pages
 * below the low-water mark (kheap_set_low_water), right after that
 * allocation, with want_bytes SIZE_MAX, followed by the reclaim of cached
 * memory; once per crossing of the mark downwards. */
typedef size_t (*kheap_shrink_fn)(kheap_t *heap, size_t want_bytes, void *arg);
#define KHEAP_MAX_SHRINKERS 8

/* Add fn (called with arg) to the heap's shrinkers. Errors: KHEAP_EINVAL
 * (heap or fn NULL), KHEAP_ETOOMANY (KHEAP_MAX_SHRINKERS registered).
 * The same fn may be registered with different args. O(1). */
int kheap_shrinker_register(kheap_t *heap, kheap_shrink_fn fn, void *arg);

/* Remove the shrinker registered with fn and arg. When it returns, no
 * pass is still calling it (it waits for a running pass to end, so it
 * must not be called from a shrinker). KHEAP_EINVAL if there is no such
 * shrinker. O(KHEAP_MAX_SHRINKERS) plus the wait. */
int kheap_shrinker_unregister(kheap_t *heap, kheap_shrink_fn fn, void *arg);

/* Set the low-water mark: when an allocation takes the heap's free page
 * runs from at least bytes to below it, a shrinker pass runs (see above).
 * Rounded up to whole pages; 0 (the default) turns it off. O(1). */
int kheap_set_low_water(kheap_t *heap, size_t bytes);

/* ------------------------------------------------------------------ */
/* Purging: handing free pages' memory back to the platform
 * (KHEAP_PORT_PURGE; hosted: madvise(MADV_DONTNEED)). Purged pages stay
 * free pages of the heap: no figure of the statistics changes except
 * dirty_bytes. */

/* Set the heap's purge rule: when a free leaves more than slack_bytes of
 * free pages possibly resident (or twice the pages recently in use, if
 * that is more: with decay on, the peak of this decay epoch and the last;
 * kheap_set_decay), the coalesced free run is purged if it is at least
 * min_bytes long. slack_bytes is rounded down and min_bytes up to whole
 * pages; slack 0 purges at every free of a run of min_bytes or more.
 * Both apply from the next free on. Defaults: KHEAP_PURGE_SLACK and
 * KHEAP_PURGE_MIN (kheap_config.h). Errors: KHEAP_EINVAL (heap NULL),
 * KHEAP_ENOSYS (the port has no purge hook; nothing changes).
 * Time: O(1). Thread-safe (takes the page lock). */
int kheap_set_purge(kheap_t *heap, size_t slack_bytes, size_t min_bytes);

/* Purge free runs now, the longest first, until at most keep_bytes of free
 * pages may still be resident (whatever their length: min_bytes does not
 * apply). Returns the bytes of pages purged that may have been resident
 * (0 when nothing was, or without KHEAP_PORT_PURGE). Call kheap_reclaim
 * first to turn empty slabs into free runs too (malloc_trim does both).
 * Time: O(free runs + bins), plus the port's purge calls, all under the
 * page lock. Thread-safe. */
size_t kheap_purge(kheap_t *heap, size_t keep_bytes);

/* ------------------------------------------------------------------ */
/* Statistics. Every figure is exact at the moment it is read, taken under
 * the heap's locks. Byte figures for objects are usable sizes: the size
 * class (or cache object size, or run bytes) that the heap commits to each
 * block, not the size asked for. */

struct kheap_stats {
    /* The seed's HeapStats. */
    uint64_t allocated_bytes;  /* sum of usable sizes ever handed out */
    uint64_t freed_bytes;      /* sum of usable sizes ever given back */
    size_t used_bytes;         /* allocated_bytes - freed_bytes: live now */
    size_t peak_bytes;         /* highest used_bytes ever */
    uint64_t allocation_count; /* successful allocations (realloc counts
                                  one when it moves, none in place) */
    uint64_t free_count;       /* successful frees */
    /* The seed's get_heap_stats triple. */
    size_t heap_total;         /* bytes of every region handed to the heap */
    size_t heap_used;          /* heap_total - heap_free */
    size_t heap_free;          /* bytes in free page runs */
    /* More. */
    uint64_t failed_count;     /* allocations that returned NULL */
    size_t metadata_bytes;     /* bytes not usable for objects: alignment
                                  skipped, control structure, page
                                  descriptors, slab bitmaps, cache
                                  structures */
    size_t slab_bytes;         /* bytes in pages held by slabs */
    size_t large_bytes;        /* bytes in pages held by large blocks
                                  (those the CPUs cache included:
                                  large_cache_bytes) */
    size_t region_count;       /* regions the heap manages */
    size_t large_count;        /* large blocks (page runs of their own)
                                  allocated now; their bytes are
                                  large_bytes */
    size_t dirty_bytes;        /* bytes of free pages that may still be
                                  resident: touched since they were last
                                  purged or given to the heap (an upper
                                  estimate, see kheap_purge); 0 without
                                  KHEAP_PORT_PURGE */
    /* Where the memory the program does not use is (so a user can see why
     * the resident size is what it is). Free objects, allocated as far as
     * their slabs know (part of slab_bytes): */
    size_t magazine_bytes;     /* in the CPUs' (hosted: threads') magazines */
    size_t depot_bytes;        /* in the caches' depots, and in magazines
                                  sent home (depot_objs) */
    size_t empty_slab_bytes;   /* pages of empty slabs the caches keep */
    /* Free pages (heap_free == dirty_bytes + purged_bytes): */
    size_t purged_bytes;       /* not resident: purged, or never touched */
    uint64_t purged_total;     /* bytes ever handed to the port's purge */
    uint64_t decay_epochs;     /* decay epochs ended (kheap_tick) */
    uint64_t shrink_passes;    /* shrinker passes run (kheap_shrinker_*) */
    uint64_t nolock_fails;     /* KHEAP_NOLOCK allocations that returned
                                  NULL (every cache; also those made before
                                  the kmalloc classes' rows count them) */
    uint64_t nolock_deferred;  /* KHEAP_NOLOCK frees deferred (the same) */
    uint64_t sampled_count;    /* blocks ever given a guard page
                                  (kheap_set_sample) */
    size_t sampled_live;       /* of which allocated now */
    size_t large_cache_bytes;  /* freed large blocks the CPUs keep for
                                  their next allocations of the same page
                                  count (KHEAP_RUN_CACHE_BYTES per CPU; part
                                  of large_bytes) */
};

/* Decay (the default length of an epoch is KHEAP_DECAY_MS, 1000 ms).
 * Memory that stays idle for a whole epoch goes down a layer when the
 * epoch ends: depot magazines beyond the epoch's working set to their
 * slabs, empty slabs that stayed empty to the page layer, free pages that
 * stayed resident and free through the epoch (runs of any length) to the
 * platform (kheap_port_pages_purge). Each layer gives back only the least
 * it held during the epoch, so a program that frees and reallocates within
 * an epoch keeps its memory, and one that stops gives it back one to
 * three epochs later (the slabs its depot magazines empty at one epoch's
 * end go back at the next, and their pages at the one after). While
 * decay runs, the immediate purge of kheap_set_purge keeps room for twice
 * the peak use of this epoch and the last (not only of the moment), so
 * alloc/free cycles of any size reuse their pages.
 *
 * kheap_set_decay: set the epoch length; 0 turns decay off (memory then
 * stays in the magazines, depots and slabs until kheap_reclaim, and the
 * purge follows its immediate rule alone). Returns KHEAP_OK, or
 * KHEAP_EINVAL for a NULL heap. Thread-safe; O(1).
 *
 * kheap_tick: end the epoch if now_ms (a monotonic millisecond clock, any
 * origin) is at or past its end, and do the decay; otherwise return at
 * once. The first call starts the first epoch. Every call also answers
 * a kheap_reclaim request (above) this CPU has not answered yet. Returns
 * the bytes given back to the layer below (slabs and pages freed, pages
 * purged). With a port clock (KHEAP_PORT_CLOCK: hosted) the slow paths
 * poll it themselves with that clock, so a program never needs to; a
 * poll that comes two epochs or more after the last (a quiet stretch, in
 * which no slow path polled) then also gives back everything the depots,
 * empty slabs and free pages hold, idle all that time. A call of
 * kheap_tick itself (any clock) never ends a quiet stretch. Without a
 * port clock, a kernel calls it from its timer or idle loop. Nothing runs
 * on a thread of kheap's own. Only one thread decays a heap at a time (others return 0 at
 * once). Takes the heap's locks in order: call it with none held. Time:
 * O(caches + free runs purged), plus the port's purge calls. */
int kheap_set_decay(kheap_t *heap, unsigned ms);
size_t kheap_tick(kheap_t *heap, uint64_t now_ms);

/* Fill *out. O(KHEAP_MAX_REGIONS + caches). */
void kheap_get_stats(kheap_t *heap, struct kheap_stats *out);

/* The seed's get_heap_stats: (total, used, free) as in struct kheap_stats.
 * Any pointer may be NULL. */
void kheap_get_heap_stats(kheap_t *heap, size_t *total, size_t *used,
                          size_t *free_bytes);

/* Bytes in the heap's longest run of free pages: the largest block it can
 * hand out now without growing or reclaiming (heap_free may be larger, in
 * pieces). An allocation needing a longer run first reclaims the memory
 * the caches and CPUs keep, which may free a longer one, and fails if
 * none appears and the port cannot grow the heap: a large block of more
 * pages, or an object of a class whose slabs are all full and whose slab
 * (pagesperslab) is longer. A block aligned beyond a page, and the slab
 * of a class whose size's lowest set bit is beyond a page, also need the
 * pages before that boundary. 0 for a NULL heap. Takes the page lock;
 * O(free runs in the longest length's bin), O(1) below 16 pages. */
size_t kheap_largest_free(kheap_t *heap);

/* One slabinfo row (the /proc/slabinfo columns, plus counters). */
struct kheap_cache_info {
    char name[KHEAP_NAME_MAX];
    size_t active_objs;   /* objects allocated now */
    size_t num_objs;      /* object slots in all slabs of the cache */
    size_t objsize;       /* usable bytes per object */
    size_t objperslab;    /* object slots per slab */
    size_t pagesperslab;  /* pages per slab */
    size_t active_slabs;  /* slabs with at least one object allocated */
    size_t num_slabs;     /* all slabs, empty ones kept included */
    uint64_t allocs;      /* successful allocations from this cache */
    uint64_t frees;       /* frees to this cache */
    size_t cached_objs;   /* free objects held in per-CPU magazines and the
                             depot (allocated as far as the slabs know) */
    uint64_t cpu_hits;    /* allocations and frees served by a CPU's own
                             magazines, no lock taken */
    uint64_t cpu_misses;  /* those that did not: a swap of the CPU's
                             loaded and previous magazines, or the depot
                             or the slabs */
    size_t depot_objs;    /* of cached_objs, those in the depot's magazines
                             and in full magazines sent home, in the
                             CPUs' inboxes and stashes (the rest are in
                             the CPUs' loaded, previous and remote
                             magazines) */
    size_t empty_slabs;   /* slabs with no object allocated, kept */
    uint64_t bulk_allocs; /* objects allocated by the bulk calls (counted
                             in allocs, not in cpu_hits) */
    uint64_t bulk_frees;  /* objects freed by the bulk calls */
    uint64_t reserve_allocs; /* objects taken from reserves (allocated,
                                as bulk_allocs, when the reserve filled) */
    uint64_t shrink_calls; /* shrinker passes run for this cache's
                              allocations (failing, or under the
                              low-water mark) */
    uint64_t nolock_allocs; /* KHEAP_NOLOCK allocations that succeeded
                               (this and the next are kept modulo 2^32 per
                               CPU) */
    uint64_t nolock_frees;  /* KHEAP_NOLOCK frees cached at once */
    uint64_t nolock_fails;  /* KHEAP_NOLOCK allocations that returned NULL
                               (not in the heap's failed_count) */
    uint64_t nolock_deferred; /* KHEAP_NOLOCK frees deferred to the CPU's
                                 list (counted in frees once taken)
                               (nolock_fails and nolock_deferred of a
                               kmalloc class count from the heap's first
                               bulk call, shrinker pass or deferred free
                               taken, which make the kmalloc classes'
                               counters; kheap_stats has the totals) */
    unsigned mag_cap;     /* objects per magazine (0: no per-CPU layer) */
    unsigned depot_max;   /* full magazines the depot may hold */
};

/* Fill rows[0 .. max-1] with one row per cache: the KHEAP_NUM_CLASSES
 * kmalloc classes first, then caches in creation order, then kheap's own
 * caches, whose bytes count as metadata: "kheap_cache" (the structures of
 * created caches) and the "kheap_magazine-N" caches of the per-CPU layer.
 * Returns the number of rows there are (which may exceed max), so a new
 * heap has KHEAP_NUM_CLASSES + 1 + KHEAP_MAG_TYPES (+ 6 by default, + 2 in
 * the small-system profile). O(caches x CPUs). */
size_t kheap_slabinfo(kheap_t *heap, struct kheap_cache_info *rows,
                      size_t max);

/* One cache's row. */
void kheap_cache_info(kheap_cache_t *cache, struct kheap_cache_info *out);

/* Write the statistics / the slabinfo table (caches with no slabs are
 * skipped unless all is true) as text into buf (always NUL-terminated when
 * len > 0). Returns the length the full text needs, excluding the NUL, as
 * snprintf does. Freestanding: usable on a UART. */
size_t kheap_format_stats(kheap_t *heap, char *buf, size_t len);
size_t kheap_format_slabinfo(kheap_t *heap, char *buf, size_t len, bool all);

/* ------------------------------------------------------------------ */
/* Integrity                                                           */

/* Walk every region, run, slab, free list, cache and depot and
 * cross-check them and the statistics. Returns NULL when all is
 * consistent, else a constant sentence naming the first inconsistency
 * found, and sets *addr (if not NULL) to the address it concerns. Takes
 * every lock of the heap; safe while other CPUs work. The per-CPU
 * magazines, which their CPUs use without locks, are not walked.
 * Time: O(pages + objects). */
const char *kheap_check(kheap_t *heap, const void **addr);

/* kheap_check plus every CPU's magazines (each object an allocated slot of
 * its cache) and the identity live + cached == handed out by the slabs.
 * Only for a quiescent heap: no other CPU or thread may be inside a kheap
 * call on it. */
const char *kheap_check_quiescent(kheap_t *heap, const void **addr);

/* ------------------------------------------------------------------ */
/* The default heap: a static array of KHEAP_DEFAULT_SIZE bytes, set up on
 * first use (no init call). Same contracts as the kheap_* functions. */

kheap_t *kheap_default(void);
void *kheap_default_alloc(size_t size);
void *kheap_default_alloc_aligned(size_t size, size_t align);
void *kheap_default_calloc(size_t n, size_t size);
void *kheap_default_realloc(void *ptr, size_t size);
void kheap_default_free(void *ptr);
size_t kheap_default_usable_size(const void *ptr);
/* The address one past the default heap's static array: the seed's
 * heap_end_vaddr(). Valid before the heap is first used. (kheap_end(h) is
 * the end of any heap's highest region.) */
uintptr_t kheap_default_end(void);

#if KHEAP_KMALLOC_API
void *kmalloc(size_t size);
void *kzalloc(size_t size);
void *kcalloc(size_t n, size_t size);
void *krealloc(void *ptr, size_t size);
void *kmalloc_aligned(size_t size, size_t align);
void kfree(void *ptr);
size_t ksize(const void *ptr);
#endif

#ifdef __cplusplus
}
#endif

#endif /* KHEAP_H */
