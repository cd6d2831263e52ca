/*
 * kmalloc.c - blocks: sizes to classes, large blocks, pointers to blocks.
 *
 * A request of at most KHEAP_MAX_CLASS bytes is an object of its size
 * class (heap.c has the classes), a kheap_cache inside the heap
 * structure; a larger one is a large block: a page run of its own, found
 * in O(1) by the page layer; over-aligned ones are cut out of a longer
 * run.
 *
 * A pointer is mapped to its block in O(1): region (binary search over at
 * most KHEAP_MAX_REGIONS), page descriptor (index), slab head (offset in
 * the descriptor), slot (one multiply: kh_slot_start). Nothing is stored
 * in front of an object.
 *
 * kheap_alloc and kheap_free run the hit paths (kh_fast.h) with the
 * heap's own CPU states and window; everything else is here, out of line:
 * misses, large blocks, user caches, bad pointers, and the builds that
 * watch every object (KH_FAST 0), whose slow paths pop and push the
 * magazines themselves.
 */
#include "kh_internal.h"
#include "kh_fast.h"

/* A large block of `bytes` handed out (alloc) or given back; resize is a
 * change of bytes with no count. page_lock held. */
static void account_large(kheap_t *h, size_t bytes, bool alloc, bool count)
{
    if (alloc) {
        h->large_alloc_bytes += bytes;
        h->large_allocs += count;
    } else {
        h->large_free_bytes += bytes;
        h->large_frees += count;
    }
    kh_account_commit(h, bytes, alloc);
}

/* ------------------------------------------------------------------ */
/* Pointer -> block. */

/* The slab or large-block head owning ptr, or 0 and *why set. Reads the
 * descriptors without a lock: for a live block they were written before
 * the block was handed out and do not change until it is freed (a slab
 * with a live object is never given back). For a bad pointer the reading
 * may race with other operations; the verdict is confirmed under the
 * owning lock before the heap acts on it. */
static struct kh_page *block_of(kheap_t *h, const void *ptr,
                                enum kheap_report_kind *why)
{
    uintptr_t p = (uintptr_t)ptr;
    struct kh_page *d = kh_page_of(h, p);
    if (!d) {
        *why = KHEAP_REPORT_FOREIGN;
        return NULL;
    }
    switch (d->kind) {
    case KH_PG_SLAB:
        return d;
    case KH_PG_SLAB_PART:
        return kh_slab_head(d);
    case KH_PG_LARGE:
        if (d->internal) {
            *why = KHEAP_REPORT_WRONG_CACHE;
            return NULL;
        }
        if (kh_run_cached(h, d)) {
            /* Freed into a CPU's cache of them: free as far as the
             * program knows, reported as the page layer's free runs. */
            *why = KHEAP_REPORT_FREE_RUN;
            return NULL;
        }
        if (p & KH_PAGE_MASK) {
            *why = KHEAP_REPORT_INTERIOR;
            return NULL;
        }
        return d;
    default:
        kh_lock(&h->page_lock);
        *why = kh_diagnose(h, d, p);
        kh_unlock(&h->page_lock);
        return NULL;
    }
}

/* ------------------------------------------------------------------ */
/* Allocation. */

/* An object leaves kheap for its user / comes back (debug and valgrind
 * bookkeeping; nothing in a normal build). */
static inline void *obj_out(struct kheap_cache *c, void *p)
{
#if KH_POISON
    if (p && !c->ctor) {
        uintptr_t bad = kh_poison_bad(c, (uintptr_t)p);
        if (bad)
            kh_report(KHEAP_REPORT_CORRUPTION, (void *)bad, c, "kheap_alloc");
        __builtin_memset(p, KHEAP_POISON_ALLOC, kh_obj_span(c));
    }
#endif
#if KHEAP_REDZONE
    if (p && rz_cache(c))
        rz_cache_fill(c, p);
#endif
#if !KHEAP_VALGRIND
    if (p && c->guard)
        *kh_guard_word(p) = 0;
#endif
    if (p)
        kh_vg_alloc(p, c->size, c->ctor ? 1 : 0);
    return p;
}

/* The double-free guard of level 0 (KH_GUARD_KEY, kh_fast.h). Objects
 * of caches with a constructor (whose bytes kheap must not touch) and
 * small objects have no guard. The valgrind build, which may not read
 * freed bytes, looks in the magazines on every free instead of reading a
 * key. Might ptr be cached already? */
static inline bool guard_suspect(const struct kheap_cache *c, const void *ptr)
{
#if KHEAP_VALGRIND
    (void)ptr;
    return c->guard;
#else
    return c->guard && *kh_guard_word((void *)ptr) == KH_GUARD_KEY;
#endif
}

#if KHEAP_REDZONE
/* The first damaged byte of the redzones of c's object at p, or NULL;
 * *kind: UNDERFLOW (the left one) or OVERFLOW. */
static const void *rz_cache_damage(const struct kheap_cache *c, const void *p,
                                   enum kheap_report_kind *kind)
{
    const char *o = p;
    const void *bad = rz_damage(o - kh_obj_off(c), o, RZ_BYTE);
    *kind = KHEAP_REPORT_UNDERFLOW;
    if (!bad) {
        bad = rz_damage(o + c->size, o + kh_obj_span(c), RZ_BYTE);
        *kind = KHEAP_REPORT_OVERFLOW;
    }
    return bad;
}

/* A user cache's object being freed (fn): its redzones must be whole;
 * damage is reported (the object is freed all the same, as a debug
 * block with damaged canaries is) and the redzones made whole again. */
static void rz_cache_check(struct kheap_cache *c, void *p, const char *fn)
{
    enum kheap_report_kind kind;
    const void *bad = rz_cache_damage(c, p, &kind);
    if (kh_likely(!bad))
        return;
    kh_report_at(kind, p, c, fn, c->size, bad);
    rz_cache_fill(c, p);
}
#endif

static inline void obj_in(kheap_t *h, struct kheap_cache *c, void *p)
{
#if KH_POISON
    if (!c->ctor)
        __builtin_memset(p, KHEAP_POISON_FREE, kh_obj_span(c));
#endif
#if !KHEAP_VALGRIND
    if (c->guard)
        *kh_guard_word(p) = KH_GUARD_KEY;
#endif
    (void)h;
    (void)c;
    kh_vg_free(p);
}

/* Decay is driven from the slow paths, with no lock held: the paths that
 * move memory between the layers in the course of allocating and freeing
 * call here before they do (a magazine exchange, a bulk call past the
 * magazines, a large block's allocation, free or resize), which the quiet
 * stretch relies on (cache.c, kh_tick). A swap of a CPU's two magazines
 * moves nothing between layers and calls here once in KH_SWAP_POLL_EVERY
 * misses (alloc_miss), so a load whose misses are all swaps still ends
 * epochs and answers reclaim requests, at most that many misses of a
 * class late. Not the KHEAP_NOLOCK calls, nor
 * those that send memory down on request or at a CPU's end (kheap_reclaim,
 * kheap_cache_shrink and _destroy, kheap_cpu_flush): what they leave in a
 * layer was in use until then, and a quiet stretch ending within an epoch
 * after them gives it back sooner than decay would otherwise. The port's
 * clock is read here, never on a hit path. */
#if KHEAP_PORT_CLOCK
/* Whether kh_tick's look at the caller's CPU (kh_cpu_tick) may find
 * work: false only when the port names that CPU without entering it
 * (kheap_port_cpu_enter_fast: the hosted thread's own slot, which no
 * other thread enters) and it owes no answer to a reclaim and its cache
 * of large blocks and its stashes have seen the last epoch end. */
static inline bool cpu_tick_due(kheap_t *h)
{
#if KHEAP_PORT_CPU_ENTER_FAST
    unsigned cpu = kheap_port_cpu_enter_fast();
    if (cpu == KHEAP_CPU_NONE)
        return true;
    bool due = kh_cpu_owes(h, cpu);
#if KH_RUNS
    const struct kh_runcache *rc = kh_cpu_runs(h->cpu[cpu]);
    due = due || (rc && rc->epoch != __atomic_load_n(&h->decay_epochs, __ATOMIC_RELAXED));
#endif
#if KH_HOMES
    /* (its stashes, spares and gathered empties: cpu.c, kh_cpu_tick) */
    const struct kh_mail *mail = kh_cpu_mail(h->cpu[cpu]);
    due = due || (mail && mail->epoch != __atomic_load_n(&h->decay_epochs, __ATOMIC_RELAXED));
#endif
    kheap_port_cpu_exit_fast(cpu);
    return due;
#else
    (void)h;
    return true;
#endif
}
#endif

static inline void decay_poll(kheap_t *h)
{
#if KHEAP_PORT_CLOCK
    if (!__atomic_load_n(&h->decay_ms, __ATOMIC_RELAXED))
        return;
    uint64_t now = kheap_port_clock_ms();
    /* Most polls find nothing to do: the epoch runs on, the time is the
     * one a poll last noted (a coarse clock's tick is milliseconds long),
     * and this CPU is not asked. They stop here, without kh_tick's call
     * and its CPU's enter and exit. */
    if (now < __atomic_load_n(&h->decay_next, __ATOMIC_RELAXED) &&
        now <= __atomic_load_n(&h->decay_seen, __ATOMIC_RELAXED) && !cpu_tick_due(h))
        return;
    kh_tick(h, now, true);
#else
    (void)h;
#endif
}

/* The KHEAP_NOLOCK frees that found no room: taken by every miss of an
 * allocation and every slow free by address (below). */
static void deferred_drain(kheap_t *h);
#if KHEAP_REDZONE
static void *rz_alloc(kheap_t *h, size_t size, size_t align, unsigned kind, const char *fn);
static void rz_free(kheap_t *h, void *p, unsigned kind, size_t size_given, const char *fn);
#endif

/* Free pages fell below the low-water mark: a shrinker pass, and the
 * cached memory back to the page layer. No lock held. */
static kh_noinline void pressure_relief(kheap_t *h, struct kheap_cache *who)
{
    if (__atomic_exchange_n(&h->pressure, 0, __ATOMIC_RELAXED))
        kh_reclaim(h, who, true);
}

static inline void pressure_check(kheap_t *h, struct kheap_cache *who)
{
    if (kh_unlikely(__atomic_load_n(&h->pressure, __ATOMIC_RELAXED)))
        pressure_relief(h, who);
}

/* The loaded magazine missed: a swap with the previous one, else the
 * depot, the slabs, and at last the shrinkers and a reclaim of every
 * cache's cached memory before giving up. */
static kh_noinline void *alloc_miss(kheap_t *h, struct kheap_cache *c)
{
    /* A swap of the CPU's two magazines moves nothing between layers:
     * it polls once in KH_SWAP_POLL_EVERY misses (after, as nothing
     * moved), and takes the deferred frees as every miss does. */
    void *p;
    unsigned swapped = kh_cpu_alloc_swap(h, c, &p);
    if (swapped != KH_SWAP_DONE)
        decay_poll(h);
    deferred_drain(h);
    if (swapped)
        return p;
    p = kh_cpu_alloc_slow(h, c);
    if (!p && kh_reclaim(h, c, true))
        p = kh_cpu_alloc_slow(h, c);
    if (!p)
        kh_account_failure(h);
    else
        pressure_check(h, c);
    return p;
}

/* This CPU's front of c, or the sentinel's (KHEAP_CPU_NONE, or before
 * the CPU's first use of the heap), on which every pop and push misses. */
static inline struct kh_cc *cc_here(kheap_t *h, struct kheap_cache *c, unsigned cpu)
{
    struct kh_cc *cc = kh_cc_of(h, c, cpu);
    return cc ? cc : &kh_cpu_sentinel.cc[0];
}

/* An object of c: a pop from this CPU's loaded magazine, unless the hit
 * path (kh_fast.h) has just found it empty (tried), else the miss path. */
static inline void *cache_alloc(kheap_t *h, struct kheap_cache *c, bool tried)
{
    void *p = NULL;
    if (!tried) {
        unsigned cpu = kheap_port_cpu_enter();
        struct kh_cc *cc = cc_here(h, c, cpu);
        if (kh_cc_pop(cc, &p)) {
#if KHEAP_VALGRIND
            *cc->top = NULL; /* a stale copy would hide a leak from memcheck */
#endif
        }
        kheap_port_cpu_exit(cpu);
    }
    if (kh_unlikely(!p))
        p = alloc_miss(h, c);
    return obj_out(c, p);
}

/* The large block whose head is d is live (page_lock held, or the block
 * is the caller's): if CPUs may cache it, its page count and then its tag
 * KH_RUN_TAG, which the free hit path looks for (kh_front.h,
 * kh_run_push); else its tag 0 (after an in-place resize made it
 * ineligible). */
static void large_live(kheap_t *h, struct kh_page *d)
{
#if KH_RUNS
    if (d->region != 0)
        return;
    size_t i = (size_t)(d - h->regions[0].pages);
    if (kh_run_eligible(h, d)) {
        __atomic_store_n(&h->window.pt[i].run, (uint16_t)d->npages, __ATOMIC_RELAXED);
        __atomic_store_n(&h->window.pt[i].tag, (uint16_t)KH_RUN_TAG, __ATOMIC_RELEASE);
    } else {
        __atomic_store_n(&h->window.pt[i].tag, (uint16_t)0, __ATOMIC_RELAXED);
    }
#else
    (void)h, (void)d;
#endif
}

static void *large_alloc(kheap_t *h, size_t size, size_t align)
{
    if (size > SIZE_MAX - KH_PAGE) {
        kh_account_failure(h);
        return NULL;
    }
    size_t npages = size ? (size + KH_PAGE - 1) / KH_PAGE : 1;
#if KH_RUNS && defined(KHEAP_PORT_CPU_TX_HEADER)
    /* The port's pop from the CPU's cache of large blocks misses while
     * another slow path holds the CPU, and the calls that take no hit
     * path (aligned, calloc, realloc) come here: look there first, under
     * the CPU held, before the miss below empties it. */
    if (align <= KH_PAGE && size > KHEAP_MAX_CLASS && size <= KHEAP_RUN_CACHE_MAX) {
        void *p = kh_runs_get(h, size);
        if (p)
            return p;
    }
#endif
    decay_poll(h);
    /* A miss of this CPU's cache of large blocks: what it holds goes back
     * to the pages first, where this allocation may reuse it, rather than
     * stay resident beside fresh pages (a program whose large sizes vary
     * would otherwise keep up to a cache's bound more than it uses). */
    kh_runs_flush_here(h);
    for (int attempt = 0; attempt < 2; attempt++) {
        kh_lock(&h->page_lock);
        struct kh_page *d = kh_run_alloc(h, npages, align, KH_PG_LARGE, false);
        void *p = d ? (void *)kh_page_addr(h, d) : NULL;
        if (p) {
            account_large(h, npages * KH_PAGE, true, true);
            large_live(h, d);
        }
        kh_unlock(&h->page_lock);
        if (p) {
            kh_vg_alloc(p, npages * KH_PAGE, 0);
            pressure_check(h, NULL);
            return p;
        }
        /* Pages may sit in depots and kept empty slabs, or be freed by the
         * shrinkers: get them back. */
        if (attempt || !kh_reclaim(h, NULL, true))
            break;
    }
    kh_account_failure(h);
    return NULL;
}

#if KH_GUARDS && !KHEAP_REDZONE
/* The miss path with sampling on (guard.c): a sampled block when the
 * countdown has run out; else the usual allocation, which counts down the
 * allocations it serves: those of the refill this miss made (what this
 * CPU's magazine now holds, and this one), or 1 where every allocation
 * takes the slow path (no hit path, no CPU state). */
static kh_noinline void *sampled_alloc(kheap_t *h, struct kheap_cache *c, size_t size)
{
    void *p = kh_guard_sample(h, size);
    if (p) {
        kh_debug_check(h, "kheap_alloc");
        return p;
    }
    p = cache_alloc(h, c, KH_FAST);
    if (p) {
        size_t served = 1;
        if (KH_FAST) {
            unsigned cpu = kheap_port_cpu_enter();
            struct kh_cc *cc = kh_cc_of(h, c, cpu);
            served += cc ? kh_cc_held(cc) : 0;
            kheap_port_cpu_exit(cpu);
        }
        kh_guard_count(h, served);
    }
    kh_debug_check(h, "kheap_alloc");
    return p;
}
#endif

void *kheap_alloc(kheap_t *h, size_t size)
{
    void *p;
    if (kh_likely(kh_hit_alloc(h->cpu, &h->window, size, &p)))
        return p;
    return kh_alloc_slow(h, size);
}

/* Everything the allocation hit does not do. A miss of the hit path comes
 * straight to the miss path: the hit path tried every class in a build
 * that has it. */
kh_noinline void *kh_alloc_slow(kheap_t *h, size_t size)
{
    void *p;
#if KHEAP_REDZONE
    return rz_alloc(h, size, 16, KHEAP_BLOCK_MALLOC, "kheap_alloc");
#endif
    if (kh_likely(size <= KHEAP_MAX_CLASS)) {
        struct kheap_cache *c = &h->kmalloc[kh_class_of(size)];
#if KH_GUARDS && !KHEAP_REDZONE
        if (kh_unlikely(__atomic_load_n(&h->g_every, __ATOMIC_RELAXED)))
            return sampled_alloc(h, c, size);
#endif
        p = cache_alloc(h, c, KH_FAST);
    } else {
        p = large_alloc(h, size, KH_PAGE);
    }
    kh_debug_check(h, "kheap_alloc");
    return p;
}

/* The largest alignment a class's block is given (aligned_class): a page,
 * or the largest class if that is smaller. */
#define KH_CLASS_ALIGN_MAX (KH_PAGE < KHEAP_MAX_CLASS ? KH_PAGE : (size_t)KHEAP_MAX_CLASS)

/* The class of a block of size <= KHEAP_MAX_CLASS bytes aligned to align
 * (a power of two from 8 to KH_CLASS_ALIGN_MAX): the smallest class of at
 * least size bytes whose size is a multiple of align (its objects are
 * aligned to it: slabs start on a page boundary; at most 8 steps, the
 * next power of two is one). */
static unsigned aligned_class(size_t size, size_t align)
{
    unsigned cls = kh_class_of(size > align ? size : align);
    while (kh_class_size(cls) & (align - 1))
        cls++;
    return cls;
}

/* A block of at least size bytes aligned to align (a power of two above
 * 8): an object of aligned_class, or a large block. Sets *usable to the
 * bytes it has. */
static void *block_alloc(kheap_t *h, size_t size, size_t align, size_t *usable)
{
    if (align <= KH_CLASS_ALIGN_MAX && size <= KHEAP_MAX_CLASS) {
        unsigned cls = aligned_class(size, align);
        *usable = kh_class_size(cls);
        return cache_alloc(h, &h->kmalloc[cls], false);
    }
    *usable = size <= SIZE_MAX - KH_PAGE ? kh_align_up(size, KH_PAGE) : 0;
    return large_alloc(h, size, align > KH_PAGE ? align : KH_PAGE);
}

void *kheap_alloc_aligned(kheap_t *h, size_t size, size_t align)
{
    void *p;
    if (align <= 8) {
        if (align && !kh_is_pow2(align)) {
            kh_account_failure(h);
            return NULL;
        }
        return kheap_alloc(h, size);
    }
    if (!kh_is_pow2(align) || size > SIZE_MAX - align) {
        kh_account_failure(h);
        return NULL;
    }
#if KHEAP_REDZONE
    return rz_alloc(h, size, align, KHEAP_BLOCK_MALLOC, "kheap_alloc_aligned");
#endif
    size_t usable;
    p = block_alloc(h, size, align, &usable);
    kh_debug_check(h, "kheap_alloc_aligned");
    return p;
}

void *kheap_calloc(kheap_t *h, size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size) {
        kh_account_failure(h);
        return NULL;
    }
    void *p = kheap_alloc(h, n * size);
    if (p)
        __builtin_memset(p, 0, n * size);
    return p;
}

/* Is ptr, a slot of c in slab s (base: its first byte), allocated as far
 * as the slab knows? The bitmap word is shared with the slab's other
 * objects: read it under c's lock. */
static bool slab_holds(struct kheap_cache *c, const struct kh_page *s, uintptr_t base,
                       const void *ptr)
{
    size_t idx = kh_slot_of(c, (uintptr_t)ptr - base);
    kh_lock(&c->lock);
    bool live = s->kind == KH_PG_SLAB && s->cache == c && idx < s->carved &&
                kh_slab_obj_allocated(c, s, base, idx);
    kh_unlock(&c->lock);
    return live;
}

/* A free that found the double-free key: the object is free already if a
 * magazine of this CPU or the depot holds it, or if its slab has it (it
 * was freed and went back, carrying the key). */
static kh_noinline bool freed_already(kheap_t *h, struct kheap_cache *c, void *ptr)
{
    if (kh_cpu_cached(h, c, ptr))
        return true;
    struct kh_page *s = kh_slab_of(h, (uintptr_t)ptr);
    return !slab_holds(c, s, kh_slab_base(h, s), ptr);
}

/* The hit path of free: push onto this CPU's loaded magazine, or for an
 * object of slab s homed at another CPU, onto its remote front. */
static inline void cache_free(kheap_t *h, struct kheap_cache *c, const struct kh_page *s,
                              void *ptr, const char *fn)
{
    if (kh_unlikely(guard_suspect(c, ptr)) && freed_already(h, c, ptr)) {
        kh_report(KHEAP_REPORT_DOUBLE_FREE, ptr, c, fn);
        return;
    }
#if KHEAP_REDZONE
    if (rz_cache(c))
        rz_cache_check(c, ptr, fn);
#endif
    obj_in(h, c, ptr);
#if KH_HOMES
    unsigned remote = kh_cpu_free_remote(h, c, ptr, __atomic_load_n(&s->home, __ATOMIC_RELAXED));
    if (remote == KH_REMOTE_SENT)
        decay_poll(h);
    if (remote)
        return;
#else
    (void)s;
#endif
    unsigned cpu = kheap_port_cpu_enter();
    struct kh_cc *cc = cc_here(h, c, cpu);
    if (kh_likely(kh_cc_push(cc, ptr))) {
        kheap_port_cpu_exit(cpu);
        return;
    }
    kheap_port_cpu_exit(cpu);
    unsigned swapped = kh_cpu_free_swap(h, c, ptr); /* (as alloc_miss) */
    if (swapped != KH_SWAP_DONE)
        decay_poll(h);
    if (!swapped)
        kh_cpu_free_slow(h, c, ptr);
}

/* Free the large block whose head is d, whose tag the caller took if
 * CPUs may cache it (taken): this CPU's cache of large blocks if it has
 * room, else the page layer. Returns 0 or why not. */
static enum kheap_report_kind large_release(kheap_t *h, struct kh_page *d, void *ptr, bool taken)
{
    enum kheap_report_kind bad = 0;
#if KH_RUNS
    if (taken && kh_runs_put(h, ptr, d->npages))
        return 0;
#else
    (void)taken;
#endif
    kh_lock(&h->page_lock);
    if (d->kind == KH_PG_LARGE && !d->internal) {
        account_large(h, (size_t)d->npages * KH_PAGE, false, true);
        kh_vg_free(ptr);
        kh_run_free(h, d);
    } else {
        /* Freed by another thread since the caller looked. */
        bad = kh_diagnose(h, d, (uintptr_t)ptr);
    }
    kh_unlock(&h->page_lock);
    return bad;
}

/* Free the large block whose head is d. Returns 0 or why not. */
static enum kheap_report_kind large_free(kheap_t *h, struct kh_page *d, void *ptr)
{
    decay_poll(h);
    bool taken = false;
#if KH_RUNS
    /* One a CPU may cache: take its tag, as the hit path does (so that a
     * second free misses it), then large_release. Where the port's own
     * commits free large blocks (kh_tx_run_free) the tag is taken with
     * a compare-and-exchange there, and so here too: of two frees racing
     * for it, one takes it. Elsewhere a plain load and store, as the hit
     * path's (kh_run_push: 16-bit atomics are not native everywhere). */
    if (kh_run_eligible(h, d)) {
        uint16_t *tag = &h->window.pt[d - h->regions[0].pages].tag;
#ifdef KHEAP_PORT_CPU_TX_HEADER
        uint16_t live = (uint16_t)KH_RUN_TAG;
        if (!__atomic_compare_exchange_n(tag, &live, (uint16_t)0, false, __ATOMIC_ACQUIRE,
                                         __ATOMIC_RELAXED))
            return KHEAP_REPORT_FREE_RUN; /* cached since block_of looked */
#else
        if (__atomic_load_n(tag, __ATOMIC_ACQUIRE) != KH_RUN_TAG)
            return KHEAP_REPORT_FREE_RUN; /* cached since block_of looked */
        __atomic_store_n(tag, (uint16_t)0, __ATOMIC_RELAXED);
#endif
        taken = true;
    }
#endif
    return large_release(h, d, ptr, taken);
}

#if KH_RUNS && defined(KHEAP_PORT_CPU_TX_HEADER)
void kh_free_large_taken(kheap_t *h, void *ptr)
{
    struct kh_page *d = kh_page_of(h, (uintptr_t)ptr);
    decay_poll(h);
    enum kheap_report_kind why = large_release(h, d, ptr, true);
    if (why)
        kh_report(why, ptr, NULL, "kheap_free");
    kh_debug_check(h, "kheap_free");
    deferred_drain(h);
}
#endif

/* Does realloc leave a block of a class of `bytes` where it is when it is
 * resized to size? When size is of that class. A smaller size moves to
 * its own class (unless that class has no memory: kheap_realloc), so a
 * block keeps no more than the class rounding of its size, as a large
 * block keeps no more than its pages: a string built in an over-allocated
 * buffer and shrunk to fit, as Python's are, then costs its size, not up
 * to twice it. The copy is of the new size. */
static inline bool slab_keeps(size_t bytes, size_t size)
{
    return size <= bytes && kh_class_size(kh_class_of(size)) >= bytes;
}

/* Free ptr, which must belong to `only` if that is not NULL. */
static void block_free(kheap_t *h, void *ptr, struct kheap_cache *only, const char *fn)
{
    uintptr_t p = (uintptr_t)ptr;
    struct kh_page *d = kh_page_of(h, p);
    enum kheap_report_kind why = 0;
    const struct kheap_cache *who = only;
    if (kh_likely(kh_is_slab_page(d))) {
        struct kh_page *s = kh_slab_head(d);
        struct kheap_cache *c = s->cache;
        bool slot = kh_slot_of(c, p - kh_slab_base(h, s)) < c->objs;
        if (kh_likely(slot && !(c->flags & KH_CACHE_INTERNAL) && (!only || c == only))) {
            cache_free(h, c, s, ptr, fn);
            kh_debug_check(h, fn);
            return;
        }
        who = c;
        why = slot ? KHEAP_REPORT_WRONG_CACHE : KHEAP_REPORT_INTERIOR;
    } else if (kh_guard_owns(h, ptr)) {
        if (!only) {
            kh_guard_free(h, ptr, fn);
            kh_debug_check(h, fn);
            return;
        }
        why = KHEAP_REPORT_WRONG_CACHE;
    } else {
        d = block_of(h, ptr, &why);
        if (d && only)
            why = KHEAP_REPORT_WRONG_CACHE;
        else if (d)
            why = large_free(h, d, ptr);
    }
    if (why)
        kh_report(why, ptr, who, fn);
    kh_debug_check(h, fn);
}

void kheap_free(kheap_t *h, void *ptr)
{
    if (kh_likely(kh_hit_free(h->cpu, &h->window, ptr)))
        return;
    kh_free_slow(h, ptr);
}

/* The slow path of every free by address: ptr (NULL fails the hit
 * path's region test and lands here), then the deferred frees. */
static void free_slow(kheap_t *h, void *ptr, const char *fn)
{
    if (ptr)
        block_free(h, ptr, NULL, fn);
    deferred_drain(h);
}

kh_noinline void kh_free_slow(kheap_t *h, void *ptr)
{
#if KHEAP_REDZONE
    if (ptr)
        rz_free(h, ptr, KHEAP_BLOCK_MALLOC, 0, "kheap_free");
    else
        deferred_drain(h);
    return;
#endif
    free_slow(h, ptr, "kheap_free");
}

/* ------------------------------------------------------------------ */
/* Sized frees (kheap_free_aligned_as; the malloc shim's sized deletes and
 * free_sized). The size given must be one the block can have been
 * allocated with: its class must be the one that size and alignment take
 * (kheap_alloc, kheap_alloc_aligned), a large block's pages the size
 * rounded up to pages. A block of malloc's kind may also hold any
 * smaller size (class_fits). A sized free whose size's
 * class is the block's, or of a large block a CPU may cache whose size
 * rounds up to its pages, takes the free hit (kh_hit_free_sized); the
 * rest come here. The debug build checks the exact size it recorded
 * (rz_free). */

static const char sized_class_reason[] =
    "sized free with a size of another size class than the block's";
static const char sized_pages_reason[] =
    "sized free with a size that does not round up to the large block's pages";

/* Can a block of class cls (bytes) have been allocated as kind with size
 * bytes aligned to align (0: not aligned)? A block of malloc's kind freed
 * with no alignment (free_sized) may hold any smaller size: realloc moves
 * one to the size's class, but keeps it in place when that class has no
 * memory (kheap_realloc). */
static bool class_fits(unsigned cls, size_t bytes, size_t size, size_t align,
                       enum kheap_block_kind kind)
{
    if (size <= KHEAP_MAX_CLASS &&
        (align <= 8 || (kh_is_pow2(align) && align <= KH_CLASS_ALIGN_MAX)) &&
        cls == (align <= 8 ? kh_class_of(size) : aligned_class(size, align)))
        return true;
    return kind == KHEAP_BLOCK_MALLOC && align <= 8 && size <= bytes;
}

/* Can ptr's block have been allocated with size bytes aligned to align,
 * as kind? If not, a SIZE_MISMATCH report (the block's usable bytes as
 * its size) and false. True also when ptr is no live block of the kmalloc
 * API: block_free reports what it is (or frees an object of a user cache,
 * whose size is the cache's business). Reads the descriptors as block_of
 * does, without a lock. */
static bool size_fits(kheap_t *h, void *ptr, size_t size, size_t align,
                      enum kheap_block_kind kind)
{
    uintptr_t p = (uintptr_t)ptr;
    struct kh_page *d = kh_page_of(h, p);
    const struct kheap_cache *who = NULL;
    const char *why = sized_class_reason;
    size_t bytes = 0;
    if (kh_is_slab_page(d)) {
        struct kh_page *s = kh_slab_head(d);
        struct kheap_cache *c = s->cache;
        if (!(c->flags & KH_CACHE_KMALLOC) || kh_slot_of(c, p - kh_slab_base(h, s)) >= c->objs ||
            class_fits(c->cls, c->size, size, align, kind))
            return true;
        /* A double free is the graver misuse: block_free reports it. */
        if (guard_suspect(c, ptr) && freed_already(h, c, ptr))
            return true;
        who = c;
        bytes = c->size;
    } else if (kh_guard_owns(h, ptr)) {
        /* A sampled block: checked as the block of its size's class it
         * stands for. */
        enum kheap_report_kind dead;
        if (!kh_guard_live(h, ptr, &bytes, &dead) || bytes > KHEAP_MAX_CLASS)
            return true;
        unsigned cls = kh_class_of(bytes);
        if (class_fits(cls, kh_class_size(cls), size, align, kind))
            return true;
    } else if (d && d->kind == KH_PG_LARGE && !d->internal && !(p & KH_PAGE_MASK)) {
        bytes = (size_t)d->npages * KH_PAGE;
        if (size <= SIZE_MAX - KH_PAGE && kh_align_up(size, KH_PAGE) == bytes)
            return true;
        why = sized_pages_reason;
    } else {
        return true;
    }
    kh_report_why(KHEAP_REPORT_SIZE_MISMATCH, why, ptr, who, "kheap_free_as", bytes, NULL);
    return false;
}

kh_noinline void kh_free_sized_slow(kheap_t *h, void *ptr, size_t size, size_t align,
                                    enum kheap_block_kind kind)
{
#if KHEAP_REDZONE
    (void)align;
    if (ptr)
        rz_free(h, ptr, kind, size, "kheap_free_as");
    else
        deferred_drain(h);
    return;
#endif
    if (ptr && size && !size_fits(h, ptr, size, align, kind)) {
        deferred_drain(h);
        kh_debug_check(h, "kheap_free_as");
        return;
    }
    free_slow(h, ptr, "kheap_free_as");
}

/* Usable bytes of the block at ptr, or 0 (and *why) if ptr is not one. */
static size_t block_size(kheap_t *h, const void *ptr, struct kh_page **head,
                         enum kheap_report_kind *why)
{
    struct kh_page *d = block_of(h, ptr, why);
    *head = d;
    if (!d)
        return 0;
    if (d->kind == KH_PG_LARGE)
        return (size_t)d->npages * KH_PAGE;
    struct kheap_cache *c = d->cache;
    uintptr_t base = kh_slab_base(h, d);
    if (kh_slot_of(c, (uintptr_t)ptr - base) >= c->objs) {
        *why = KHEAP_REPORT_INTERIOR;
        return 0;
    }
    if (c->flags & KH_CACHE_INTERNAL) { /* kheap's own structure, as block_free says */
        *why = KHEAP_REPORT_WRONG_CACHE;
        return 0;
    }
    /* Freed and cached in a magazine (the slab cannot tell)? */
    if (guard_suspect(c, ptr) && kh_cpu_cached(h, c, (void *)ptr)) {
        *why = KHEAP_REPORT_DOUBLE_FREE;
        return 0;
    }
    if (!slab_holds(c, d, base, ptr)) {
        *why = KHEAP_REPORT_DOUBLE_FREE;
        return 0;
    }
    return c->size;
}

#if KHEAP_REDZONE
/* ------------------------------------------------------------------ */
/* The debug build's blocks (KHEAP_REDZONE).
 *
 * A block of the kmalloc API is cut out of a longer one, raw:
 *
 *   raw                       p = raw + left
 *   | canary ... | header 16 | size bytes | canary ... to raw's end |
 *
 * left is 16, or the alignment asked for if larger, so p keeps it; at
 * least RZ_TAIL canary bytes follow the block. The header holds the size
 * asked for, the kind (malloc, new, new[]) and a state word, derived from
 * p, that tells a live block from a quarantined one; its last bytes are
 * the first an underflow reaches. A free checks the header and both
 * canaries, fills the block with KHEAP_POISON_FREE and puts it in the
 * quarantine; when it leaves the quarantine (the oldest first) the poison
 * and canaries are checked again before the block really goes back. A
 * second free of a quarantined block finds its state word: exact, however
 * many CPUs are involved.
 *
 * Where the port can protect pages (RZ_GUARDED), a large block (a page
 * run) ends against a guard page instead, which stays shut while the
 * block lives, and starts with a pointer to the block (for rz_fault):
 *
 *   raw                                          p          guard page
 *   | &p | canary ...... | header 16 |  size bytes  | < 16 | shut page |
 *
 * so an overflow faults at its first byte; while the block waits in the
 * quarantine, its pages that hold nothing but the block are shut too, so
 * any access to it faults (rz_shut). */
/* The layout (struct rz_head, rz_state, ...) is in kh_internal.h: the
 * checker (check.c) walks these blocks too. */

#if RZ_GUARDED
/* The first byte of the large run (not kheap's own) that holds a, and its
 * bytes in *bytes; 0 if a is in none. Reads the descriptors with no lock
 * (rz_fault runs in a signal handler): those of a live run do not change.
 * O(pages of the run) from an interior page: a debug build's large block
 * costs O(its bytes) at every free anyway (poison written and checked). */
static uintptr_t rz_run_of(kheap_t *h, uintptr_t a, size_t *bytes)
{
    struct kh_region *r = h->regions[0].span && a - h->regions[0].start < h->regions[0].span
                              ? &h->regions[0]
                              : kh_region_of(h, a);
    if (!r)
        return 0;
    size_t i = (a - r->start) >> KHEAP_PAGE_SHIFT;
    if (r->pages[i].kind == KH_PG_LARGE_TAIL && r->pages[i].npages)
        i -= r->pages[i].npages - 1;
    while (i && r->pages[i].kind == KH_PG_INTERIOR)
        i--;
    const struct kh_page *d = &r->pages[i];
    uintptr_t raw = r->start + (i << KHEAP_PAGE_SHIFT);
    if (d->kind != KH_PG_LARGE || d->internal || d->npages < 2 ||
        a - raw >= (uintptr_t)d->npages * KH_PAGE)
        return 0;
    *bytes = (size_t)d->npages * KH_PAGE;
    return raw;
}

/* The block a guarded run at raw (bytes long) holds, from its first word
 * (raw's page is never shut), or 0. */
static uintptr_t rz_run_block(uintptr_t raw, size_t bytes)
{
    uintptr_t p = *(const uintptr_t *)raw;
    return p >= raw + sizeof(void *) + RZ_HEAD && p <= raw + bytes - KH_PAGE ? p : 0;
}

/* A large debug block: a run one page longer than the block needs, the
 * block against its last page, which is shut. p keeps the alignment
 * asked for (left: 16 or that alignment; raw + left is aligned to it). */
static void *rz_alloc_run(kheap_t *h, size_t size, size_t left, unsigned kind, const char *fn)
{
    size_t usable;
    unsigned char *raw = block_alloc(h, left + size + RZ_TAIL + KH_PAGE, left, &usable);
    if (!raw)
        return NULL;
    unsigned char *guard = raw + usable - KH_PAGE;
    unsigned char *p = (unsigned char *)(((uintptr_t)guard - size) & ~(uintptr_t)(left - 1));
    *(unsigned char **)raw = p;
    __builtin_memset(raw + sizeof(void *), RZ_BYTE, (size_t)(p - RZ_HEAD - raw) - sizeof(void *));
    struct rz_head *hd = rz_head(p);
    hd->size_kind = (uint64_t)size << 2 | kind;
    hd->left = (uint32_t)(p - raw);
    hd->state = rz_state(p, true);
    __builtin_memset(p + size, RZ_BYTE, (size_t)(guard - p) - size);
    /* A page the platform will not shut stays open: never read (rz_span),
     * the block is only watched less. */
    (void)kheap_port_protect(guard, KH_PAGE, 0);
    kh_debug_check(h, fn);
    (void)fn;
    return p;
}

/* Shut (access 0) or open (1) the pages of a large block at p that hold
 * nothing else: its header's page and the guard page stay as they are. */
static void rz_shut(const void *p, size_t size, int access)
{
    uintptr_t lo, hi;
    rz_shut_range(p, size, &lo, &hi);
    if (lo < hi)
        (void)kheap_port_protect((void *)lo, hi - lo, access);
}
#endif

/* The canaries of the block at p cut out of raw (usable bytes) are
 * [*lo, header) and [p + size, *hi): a guarded run's first word and its
 * guard page are not (rz_alloc_run). */
static void rz_span(kheap_t *h, const unsigned char *raw, size_t usable,
                    const unsigned char **lo, const unsigned char **hi)
{
    *lo = raw;
    *hi = raw + usable;
#if RZ_GUARDED
    if (!kh_is_slab_page(kh_page_of(h, (uintptr_t)raw))) {
        *lo += sizeof(void *);
        *hi -= KH_PAGE;
    }
#else
    (void)h;
#endif
}

static void *rz_alloc(kheap_t *h, size_t size, size_t align, unsigned kind, const char *fn)
{
#if KH_GUARDS
    /* A zero-size block on a page that stays shut, while slots last: a
     * read through it faults too (its kind is not kept). */
    void *z = size || align > KH_PAGE ? NULL : kh_guard_zero(h);
    if (z)
        return z;
#endif
    size_t left = align > RZ_HEAD ? align : RZ_HEAD;
    if (size > (SIZE_MAX >> 2) - left - RZ_TAIL - KH_PAGE) {
        kh_account_failure(h);
        return NULL;
    }
    size_t usable, need = left + size + RZ_TAIL;
#if RZ_GUARDED
    if (!(left <= KH_PAGE && need <= KHEAP_MAX_CLASS)) /* a page run */
        return rz_alloc_run(h, size, left, kind, fn);
#endif
    unsigned char *raw = block_alloc(h, need, left, &usable);
    if (!raw)
        return NULL;
    unsigned char *p = raw + left;
    __builtin_memset(raw, RZ_BYTE, left - RZ_HEAD);
    struct rz_head *hd = rz_head(p);
    hd->size_kind = (uint64_t)size << 2 | kind;
    hd->left = (uint32_t)left;
    hd->state = rz_state(p, true);
    __builtin_memset(p + size, RZ_BYTE, usable - left - size);
    kh_debug_check(h, fn);
    (void)fn;
    return p;
}

/* The raw block under the debug block at p, if p is one (live or
 * quarantined): its header, with *raw and *usable set. Else NULL, with
 * *why, *who, *where (an underflow's first damaged byte) and *size (the
 * size an underflow left readable in the header, if it fits the slot or
 * run, else 0) set. */
static struct rz_head *rz_find(kheap_t *h, void *p, unsigned char **raw, size_t *usable,
                               enum kheap_report_kind *why, struct kheap_cache **who,
                               const void **where, size_t *size)
{
    *size = 0;
    uintptr_t a = (uintptr_t)p;
    struct kh_page *d = kh_page_of(h, a);
    uintptr_t r = 0;
    struct kheap_cache *c = NULL;
    if (d && kh_is_slab_page(d)) {
        struct kh_page *s = kh_slab_head(d);
        c = s->cache;
        *who = c;
        uintptr_t base = kh_slab_base(h, s);
        size_t idx = (a - base) / c->slot;
        if (!(c->flags & KH_CACHE_KMALLOC) || idx >= c->objs) {
            *why = idx >= c->objs ? KHEAP_REPORT_INTERIOR : KHEAP_REPORT_WRONG_CACHE;
            return NULL;
        }
        r = base + idx * c->slot;
        *usable = c->size;
#if RZ_GUARDED
    } else if (d) {
        /* A large block: its run from the descriptors, the block from the
         * run's first word. p's header is read only if p is the block: a
         * pointer into a quarantined block may lie 16 bytes past a shut
         * page's start. */
        size_t bytes;
        uintptr_t run = rz_run_of(h, a, &bytes);
        if (run && a == rz_run_block(run, bytes)) {
            r = run;
            *usable = bytes;
        } else if (run) {
            *why = KHEAP_REPORT_INTERIOR;
            return NULL;
        }
    }
#else
    } else if (d && d->kind == KH_PG_LARGE && !d->internal && (a & KH_PAGE_MASK)) {
        r = kh_page_addr(h, d); /* left is below a page */
        *usable = (size_t)d->npages * KH_PAGE;
    } else if (d && kh_page_of(h, a - RZ_HEAD)) {
        /* Aligned to a page or more: the header says how far back raw is. */
        uintptr_t left = rz_head(p)->left;
        struct kh_page *hd = left <= a ? kh_page_of(h, a - left) : NULL;
        if (hd && hd->kind == KH_PG_LARGE && !hd->internal && !((a - left) & KH_PAGE_MASK) &&
            a + RZ_TAIL <= kh_page_addr(h, hd) + (size_t)hd->npages * KH_PAGE) {
            r = a - left;
            *usable = (size_t)hd->npages * KH_PAGE;
        }
    }
#endif
    if (!r) {
        if (!block_of(h, p, why)) /* a foreign pointer, a free run, ... */
            return NULL;
        *why = KHEAP_REPORT_INTERIOR;
        return NULL;
    }
    struct rz_head *hd = rz_head(p);
    if (a - r >= RZ_HEAD && hd->left == a - r &&
        (hd->state == rz_state(p, true) || hd->state == rz_state(p, false))) {
        *raw = (unsigned char *)r;
        return hd;
    }
    /* No header of a block for p: a block already gone back (double
     * free), a header overwritten from below (underflow), or a pointer
     * into a block. */
    if (c && freed_already(h, c, (void *)r))
        *why = KHEAP_REPORT_DOUBLE_FREE;
    else if (a - r == RZ_HEAD || (a - r >= RZ_HEAD && hd->left == a - r) ||
             (RZ_GUARDED && !c)) { /* (a guarded run's block, by its first word) */
        /* The damaged byte nearest the block: the state word's bytes as
         * they should read, from the last down. */
        uint32_t want = rz_state(p, true);
        const unsigned char *w = (const unsigned char *)&want, *g = (const unsigned char *)&hd->state;
        *why = KHEAP_REPORT_UNDERFLOW;
        *where = &hd->state;
        for (int i = 3; i >= 0; i--)
            if (w[i] != g[i]) {
                *where = g + i;
                break;
            }
        size_t n = (size_t)(hd->size_kind >> 2);
        if (n <= *usable && a + n <= r + *usable)
            *size = n;
    } else
        *why = KHEAP_REPORT_INTERIOR;
    return NULL;
}

/* The bytes a debug block at p holds in the quarantine: its whole raw
 * block (slot, or run with its guard page). Taken when it goes in and
 * when it comes out, from the descriptors, which do not change while it
 * waits. */
static size_t rz_cost(kheap_t *h, const void *p)
{
    uintptr_t raw = (uintptr_t)p - rz_head(p)->left;
    struct kh_page *d = kh_page_of(h, raw);
    return kh_is_slab_page(d) ? kh_slab_head(d)->cache->size : (size_t)d->npages * KH_PAGE;
}

/* Check the canaries of a block: report an overflow or underflow.
 * cause: the report when the damage is found after free. */
static void rz_check(kheap_t *h, const unsigned char *raw, size_t usable, const void *p,
                     size_t size, const char *fn, bool freed)
{
    const unsigned char *lo, *hi;
    rz_span(h, raw, usable, &lo, &hi);
    const void *under = rz_damage(lo, rz_head(p), RZ_BYTE);
    const void *over = rz_damage((const unsigned char *)p + size, hi, RZ_BYTE);
    if (under)
        kh_report_at(freed ? KHEAP_REPORT_USE_AFTER_FREE : KHEAP_REPORT_UNDERFLOW, p, NULL, fn,
                     size, under);
    if (over)
        kh_report_at(freed ? KHEAP_REPORT_USE_AFTER_FREE : KHEAP_REPORT_OVERFLOW, p, NULL, fn,
                     size, over);
}

/* A block leaves the quarantine: its poison, header and canaries are
 * checked, then the raw block is freed. */
static void rz_release(kheap_t *h, void *p, const char *fn)
{
    struct rz_head *hd = rz_head(p);
    size_t size = (size_t)(hd->size_kind >> 2);
    unsigned char *raw = (unsigned char *)p - hd->left;
    struct kh_page *d = kh_page_of(h, (uintptr_t)raw);
    size_t usable = kh_is_slab_page(d) ? kh_slab_head(d)->cache->size
                                       : (size_t)d->npages * KH_PAGE;
#if RZ_GUARDED
    if (!kh_is_slab_page(d))
        rz_shut(p, size, 1);
#endif
    const void *bad = rz_damage(p, (unsigned char *)p + size, KHEAP_POISON_FREE);
    if (bad)
        kh_report_at(KHEAP_REPORT_USE_AFTER_FREE, p, NULL, fn, size, bad);
    rz_check(h, raw, usable, p, size, fn, true);
#if RZ_GUARDED
    if (!kh_is_slab_page(d)) /* the run goes back whole and open */
        (void)kheap_port_protect(raw + usable - KH_PAGE, KH_PAGE, 1);
#endif
    block_free(h, raw, NULL, fn);
}

/* Free the debug block at p as kind (size: the size a sized free gave,
 * or 0). Misuse is reported and the free refused, except damaged
 * canaries: reported, and the block freed. */
static void rz_free(kheap_t *h, void *p, unsigned kind, size_t size_given, const char *fn)
{
    if (kh_guard_owns(h, p)) { /* a zero-size block (rz_alloc) */
        kh_guard_free(h, p, fn);
        deferred_drain(h);
        return;
    }
    unsigned char *raw;
    size_t usable;
    enum kheap_report_kind why = 0;
    struct kheap_cache *who = NULL;
    const void *where = NULL;
    size_t size;
    struct rz_head *hd = rz_find(h, p, &raw, &usable, &why, &who, &where, &size);
    if (!hd) {
        kh_report_at(why, p, who, fn, size, where);
        return;
    }
    size = (size_t)(hd->size_kind >> 2);
    uint32_t live = rz_state(p, true);
    if (hd->state != live) {
        kh_report_at(KHEAP_REPORT_DOUBLE_FREE, p, NULL, fn, size, NULL);
        return;
    }
    if ((hd->size_kind & 3) != kind) {
        kh_report_at(KHEAP_REPORT_KIND_MISMATCH, p, NULL, fn, size, NULL);
        return;
    }
    if (size_given && size_given != size) {
        kh_report_at(KHEAP_REPORT_SIZE_MISMATCH, p, NULL, fn, size, NULL);
        return;
    }
    /* Two frees of one block racing: one turns the state word, the
     * other finds it turned and reports. */
    if (!__atomic_compare_exchange_n(&hd->state, &live, rz_state(p, false), false,
                                     __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        kh_report_at(KHEAP_REPORT_DOUBLE_FREE, p, NULL, fn, size, NULL);
        return;
    }
    rz_check(h, raw, usable, p, size, fn, false);
    __builtin_memset(p, KHEAP_POISON_FREE, size);
#if RZ_GUARDED
    /* Shut before the quarantine holds it: once there, another thread
     * may let it go (rz_release opens it first). */
    if (!kh_is_slab_page(kh_page_of(h, (uintptr_t)raw)))
        rz_shut(p, size, 0);
#endif
    /* Into the quarantine; the oldest blocks leave it while it is over
     * its bounds (taken out under q_lock, freed after it). */
    void *out[8];
    unsigned nout = 0;
    size_t cost = rz_cost(h, p);
    kh_lock(&h->q_lock);
    for (;;) {
        bool full = h->q_count == KHEAP_QUARANTINE_COUNT ||
                    (h->q_count && h->q_bytes + cost > h->q_limit);
        if (!full || nout == sizeof out / sizeof out[0])
            break;
        void *old = h->q_ring[h->q_head];
        h->q_head = (h->q_head + 1) % KHEAP_QUARANTINE_COUNT;
        h->q_count--;
        h->q_bytes -= rz_cost(h, old);
        out[nout++] = old;
    }
    bool kept = h->q_count < KHEAP_QUARANTINE_COUNT && cost <= h->q_limit;
    if (kept) {
        h->q_ring[(h->q_head + h->q_count) % KHEAP_QUARANTINE_COUNT] = p;
        h->q_count++;
        h->q_bytes += cost;
    }
    kh_unlock(&h->q_lock);
    for (unsigned i = 0; i < nout; i++)
        rz_release(h, out[i], fn);
    if (!kept) /* larger than the whole quarantine */
        rz_release(h, p, fn);
    deferred_drain(h);
}

/* Let every quarantined block go (kheap_reclaim, kheap_check_quiescent). */
static size_t rz_flush(kheap_t *h)
{
    size_t n = 0;
    for (;;) {
        kh_lock(&h->q_lock);
        void *p = NULL;
        if (h->q_count) {
            p = h->q_ring[h->q_head];
            h->q_head = (h->q_head + 1) % KHEAP_QUARANTINE_COUNT;
            h->q_count--;
            h->q_bytes -= rz_cost(h, p);
        }
        kh_unlock(&h->q_lock);
        if (!p)
            return n;
        rz_release(h, p, "kheap_reclaim");
        n++;
    }
}

/* The live debug block at p for realloc and usable_size: its header, or
 * NULL after a report. */
/* For a KHEAP_NOLOCK free (no lock, no report): 0 if p is a live debug
 * block, else why not. Reads p's header only where it cannot be on a shut
 * page: in a slab's slot, or at a guarded run's block. */
static enum kheap_report_kind rz_nolock_check(kheap_t *h, void *p)
{
    uintptr_t a = (uintptr_t)p, r;
    size_t size;
    enum kheap_report_kind why = KHEAP_REPORT_INTERIOR;
    if (kh_guard_owns(h, p))
        return kh_guard_live(h, p, &size, &why) ? 0 : why;
    struct kh_page *d = kh_page_of(h, a);
    if (kh_is_slab_page(d)) {
        struct kh_page *sl = kh_slab_head(d);
        struct kheap_cache *c = sl->cache;
        uintptr_t base = kh_slab_base(h, sl);
        if (!(c->flags & KH_CACHE_KMALLOC) || a - base >= (uintptr_t)c->objs * c->slot)
            return KHEAP_REPORT_WRONG_CACHE;
        r = base + (a - base) / c->slot * c->slot;
    } else {
#if RZ_GUARDED
        size_t bytes;
        r = rz_run_of(h, a, &bytes);
        if (!r || a != rz_run_block(r, bytes))
            return r ? KHEAP_REPORT_INTERIOR : KHEAP_REPORT_FREE_RUN;
#else
        r = d && d->kind == KH_PG_LARGE && !d->internal ? kh_page_addr(h, d) : 0;
        if (!r)
            return KHEAP_REPORT_INTERIOR;
#endif
    }
    const struct rz_head *hd = rz_head(p);
    if (a - r < RZ_HEAD || hd->left != a - r)
        return KHEAP_REPORT_INTERIOR;
    if (hd->state == rz_state(p, false))
        return KHEAP_REPORT_DOUBLE_FREE;
    return hd->state == rz_state(p, true) ? 0 : KHEAP_REPORT_INTERIOR;
}

static struct rz_head *rz_live(kheap_t *h, void *p, unsigned char **raw, size_t *usable,
                               const char *fn)
{
    enum kheap_report_kind why = 0;
    struct kheap_cache *who = NULL;
    const void *where = NULL;
    size_t size;
    struct rz_head *hd = rz_find(h, p, raw, usable, &why, &who, &where, &size);
    if (!hd)
        kh_report_at(why, p, who, fn, size, where);
    else if (hd->state != rz_state(p, true))
        kh_report_at(KHEAP_REPORT_DOUBLE_FREE, p, NULL, fn, (size_t)(hd->size_kind >> 2), NULL);
    else
        return hd;
    return NULL;
}

/* realloc always moves a debug block, so a stale pointer to the old one
 * finds it in the quarantine. */
static void *rz_realloc(kheap_t *h, void *p, size_t size)
{
    enum kheap_report_kind why = 0;
    size_t old = 0;
    if (kh_guard_owns(h, p)) { /* a zero-size block: nothing to copy */
        if (!kh_guard_live(h, p, &old, &why)) {
            kh_report(why, p, NULL, "kheap_realloc");
            return NULL;
        }
        void *q = rz_alloc(h, size, 16, KHEAP_BLOCK_MALLOC, "kheap_realloc");
        if (q)
            rz_free(h, p, KHEAP_BLOCK_MALLOC, 0, "kheap_realloc");
        return q;
    }
    unsigned char *raw;
    size_t usable;
    struct rz_head *hd = rz_live(h, p, &raw, &usable, "kheap_realloc");
    if (!hd)
        return NULL;
    old = (size_t)(hd->size_kind >> 2);
    if ((hd->size_kind & 3) != KHEAP_BLOCK_MALLOC) {
        kh_report_at(KHEAP_REPORT_KIND_MISMATCH, p, NULL, "kheap_realloc", old, NULL);
        return NULL;
    }
    rz_check(h, raw, usable, p, old, "kheap_realloc", false);
    void *q = rz_alloc(h, size, 16, KHEAP_BLOCK_MALLOC, "kheap_realloc");
    if (!q)
        return NULL;
    __builtin_memcpy(q, p, old < size ? old : size);
    rz_free(h, p, KHEAP_BLOCK_MALLOC, 0, "kheap_realloc");
    return q;
}
#if RZ_GUARDED
/* kheap_guard_fault for the large debug blocks: a fault in a guard page
 * (an overflow) or in a quarantined block's shut pages (a use after
 * free). Takes no lock (a signal handler): the descriptors of a live run
 * and its first word do not change while the block lives or waits. */
static int rz_fault(kheap_t *h, uintptr_t a)
{
    size_t bytes;
    uintptr_t raw = rz_run_of(h, a, &bytes);
    uintptr_t p = raw ? rz_run_block(raw, bytes) : 0;
    if (!p || rz_head((void *)p)->left != p - raw)
        return 0;
    uintptr_t guard = raw + bytes - KH_PAGE;
    const struct rz_head *hd = rz_head((void *)p);
    size_t size = (size_t)(hd->size_kind >> 2);
    if (a >= guard && p + size <= guard) {
        kh_report_why(KHEAP_REPORT_OVERFLOW,
                      "access past the end of a large block hit its guard page (heap overflow)",
                      (void *)p, NULL, "kheap_guard_fault", size, (void *)a);
        return 1;
    }
    if (a >= p && a - p < size && hd->state == rz_state((void *)p, false)) {
        kh_report_why(KHEAP_REPORT_USE_AFTER_FREE,
                      "access to a freed block while in quarantine (use after free)", (void *)p,
                      NULL, "kheap_guard_fault", size, (void *)a);
        return 1;
    }
    return 0;
}
#endif
#endif /* KHEAP_REDZONE */

int kheap_guard_fault(kheap_t *h, const void *addr)
{
    if (!h)
        return 0;
    if (kh_guard_fault(h, addr))
        return 1;
#if KHEAP_REDZONE && RZ_GUARDED
    return rz_fault(h, (uintptr_t)addr);
#else
    return 0;
#endif
}

size_t kheap_usable_size(kheap_t *h, const void *ptr)
{
    if (!ptr)
        return 0;
#if KHEAP_REDZONE
    if (!kh_guard_owns(h, ptr)) {
        unsigned char *raw;
        size_t usable;
        struct rz_head *hd = rz_live(h, (void *)ptr, &raw, &usable, "kheap_usable_size");
        return hd ? (size_t)(hd->size_kind >> 2) : 0;
    }
#endif
    struct kh_page *d = NULL;
    enum kheap_report_kind why = 0;
    size_t n = 0;
    if (kh_guard_owns(h, ptr)) {
        if (!kh_guard_live(h, ptr, &n, &why)) /* a live one may have size 0 */
            kh_report(why, ptr, NULL, "kheap_usable_size");
        return n;
    }
    n = block_size(h, ptr, &d, &why);
    if (!n) /* naming the slab's cache when the pointer is in one */
        kh_report(why, ptr, kh_is_slab_page(d) ? d->cache : NULL, "kheap_usable_size");
    return n;
}

void *kheap_realloc(kheap_t *h, void *ptr, size_t size)
{
    if (!ptr)
        return kheap_alloc(h, size);
    if (size == 0) {
        kheap_free(h, ptr);
        return NULL;
    }
#if KHEAP_REDZONE
    return rz_realloc(h, ptr, size);
#endif
    struct kh_page *d;
    enum kheap_report_kind why = 0;
    if (kh_guard_owns(h, ptr)) {
        /* A sampled block always moves: a stale pointer to it faults. */
        size_t had = 0;
        if (!kh_guard_live(h, ptr, &had, &why)) {
            kh_report(why, ptr, NULL, "kheap_realloc");
            return NULL;
        }
        void *q = kheap_alloc(h, size);
        if (q) {
            __builtin_memcpy(q, ptr, had < size ? had : size);
            kheap_free(h, ptr);
        }
        return q;
    }
    size_t old = block_size(h, ptr, &d, &why);
    if (!old) {
        kh_report(why, ptr, NULL, "kheap_realloc");
        return NULL;
    }
    /* A shrink moves to the new size's class when that keeps less: a
     * class block shrunk to a smaller class (slab_keeps), a large block
     * shrunk to a class that rounds size to less than whole pages do (at
     * most KHEAP_MAX_CLASS bytes are copied), not a page for a few bytes.
     * If the class has no memory, the block shrinks in place instead
     * (a class block as it is, a large one below): no failure. */
    bool slab = d->kind == KH_PG_SLAB;
    if (slab && slab_keeps(old, size))
        return ptr;
    bool to_class = slab || (size <= KHEAP_MAX_CLASS &&
                             kh_class_size(kh_class_of(size)) < kh_align_up(size, KH_PAGE));
    if (size < old && to_class) {
        void *q = kheap_alloc(h, size);
        if (q) {
            __builtin_memcpy(q, ptr, size);
            kheap_free(h, ptr);
            return q;
        }
        kh_account_recovered(h);
        if (slab)
            return ptr;
    }
    if (!slab && size <= SIZE_MAX - KH_PAGE) {
        size_t npages = (size + KH_PAGE - 1) / KH_PAGE;
        decay_poll(h);
        kh_lock(&h->page_lock);
        bool ok = d->kind == KH_PG_LARGE && kh_large_resize(h, d, npages);
        if (ok)
            large_live(h, d);
        if (ok && npages * KH_PAGE != old)
            account_large(h, npages * KH_PAGE > old ? npages * KH_PAGE - old
                                                    : old - npages * KH_PAGE,
                          npages * KH_PAGE > old, false);
        kh_unlock(&h->page_lock);
        if (ok) {
            kh_vg_resize(ptr, old, npages * KH_PAGE);
            kh_debug_check(h, "kheap_realloc");
            return ptr;
        }
    }
    void *q = kheap_alloc(h, size);
    if (!q)
        return NULL;
    __builtin_memcpy(q, ptr, old < size ? old : size);
    kheap_free(h, ptr);
    return q;
}

/* ------------------------------------------------------------------ */
/* Object caches: allocation and free (creation is in cache.c). */

void *kheap_cache_alloc(kheap_cache_t *c)
{
    kheap_t *h = c->heap;
    void *p = cache_alloc(h, c, false);
    kh_debug_check(h, "kheap_cache_alloc");
    return p;
}

void kheap_cache_free(kheap_cache_t *c, void *ptr)
{
    if (ptr)
        block_free(c->heap, ptr, c, "kheap_cache_free");
}

/* ------------------------------------------------------------------ */
/* Bulk allocation and free. */

static void xc_add(uint64_t *ctr, uint64_t n)
{
    __atomic_fetch_add(ctr, n, __ATOMIC_RELAXED);
}

/* n objects of c into out from the magazines, the depot and the slabs
 * (in that order; one hold of each lock per batch, KH_BULK_SLAB objects
 * per hold of the slab lock). All or nothing: what was taken goes back
 * to the magazines and slabs when the heap cannot give n, even after a
 * reclaim. Objects are not yet handed out (obj_out). */
#define KH_BULK_SLAB 64u
static bool bulk_take(kheap_t *h, struct kheap_cache *c, size_t n, void **out)
{
    size_t from_mags;
    size_t k = kh_cpu_take_n(h, c, out, n, &from_mags);
    if (k < n)
        decay_poll(h); /* before the slabs (the next layer) are touched */
    for (int attempt = 0; k < n; attempt++) {
        size_t want = n - k < KH_BULK_SLAB ? n - k : KH_BULK_SLAB;
        size_t got = kh_cache_take(c, out + k, want);
        k += got;
        if (got == want)
            continue;
        if (attempt || !kh_reclaim(h, c, true)) {
            size_t put = kh_cpu_put_n(h, c, out, k);
            if (put < k)
                kh_cache_give_n(c, out + put, k - put, NULL);
            kh_account_failure(h);
            return false;
        }
    }
    kh_cpu_account(h, c, n, from_mags, true);
    struct kh_xc *x = kh_xc_get(h, c);
    if (x)
        xc_add(&x->bulk_allocs, n);
    pressure_check(h, c);
    return true;
}

size_t kheap_cache_alloc_bulk(kheap_cache_t *c, size_t n, void **out)
{
    if (!c || !out || n == 0)
        return 0;
    kheap_t *h = c->heap;
    if (!bulk_take(h, c, n, out))
        return 0;
    for (size_t i = 0; i < n; i++)
        obj_out(c, out[i]);
    kh_debug_check(h, "kheap_cache_alloc_bulk");
    return n;
}

/* Objects of c that passed block_free's checks, gathered for one
 * batch: into the magazines, the rest to the slabs in one lock hold. */
static void bulk_give(kheap_t *h, struct kheap_cache *c, void **objs, size_t n)
{
    if (!n)
        return;
    size_t put = kh_cpu_put_n(h, c, objs, n);
    /* Counted before the slabs see the rest, so no reader finds more
     * objects in the slabs than the counts allow. */
    kh_cpu_account(h, c, n, put, false);
    struct kh_xc *x = kh_xc_get(h, c);
    if (x)
        xc_add(&x->bulk_frees, n);
    if (put < n) {
        decay_poll(h);
        kh_cache_give_n(c, objs + put, n - put, NULL);
    }
}

/* Free n blocks, each as kheap_free (or kheap_cache_free to `only`)
 * would, reports included; consecutive objects of one cache go in
 * batches of up to 64. */
static void free_bulk(kheap_t *h, struct kheap_cache *only, size_t n, void **objs,
                      const char *fn)
{
    void *batch[64];
    size_t nb = 0;
    struct kheap_cache *bc = NULL;
    for (size_t i = 0; i < n; i++) {
        void *ptr = objs[i];
        if (!ptr)
            continue;
        uintptr_t p = (uintptr_t)ptr;
        struct kh_page *d = kh_page_of(h, p);
        struct kheap_cache *c = NULL;
        if (kh_likely(d && (d->kind == KH_PG_SLAB || d->kind == KH_PG_SLAB_PART))) {
            uintptr_t skip = d->kind == KH_PG_SLAB_PART ? d->npages : 0;
            struct kheap_cache *sc = (d - skip)->cache;
            uintptr_t base = kh_slab_base(h, d - skip);
            if (kh_slot_start(sc, p - base) && !(sc->flags & KH_CACHE_INTERNAL) &&
                (!only || sc == only))
                c = sc;
        }
        if (c && guard_suspect(c, ptr)) {
            /* Maybe freed already: in this batch, in a magazine, or in
             * its slab. The batch so far goes first, so a second free of
             * one object in it is found where the first put it. */
            if (bc) {
                bulk_give(h, bc, batch, nb);
                nb = 0;
            }
            if (freed_already(h, c, ptr)) {
                kh_report(KHEAP_REPORT_DOUBLE_FREE, ptr, c, fn);
                continue;
            }
        }
        if (!c) {
            /* Large blocks and misuse: one at a time, as block_free. */
            if (bc)
                bulk_give(h, bc, batch, nb);
            nb = 0;
            bc = NULL;
            block_free(h, ptr, only, fn);
            continue;
        }
        if (c != bc || nb == 64) {
            if (bc)
                bulk_give(h, bc, batch, nb);
            nb = 0;
            bc = c;
        }
#if KHEAP_REDZONE
        if (rz_cache(c))
            rz_cache_check(c, ptr, fn);
#endif
        obj_in(h, c, ptr);
        batch[nb++] = ptr;
    }
    if (bc)
        bulk_give(h, bc, batch, nb);
    kh_debug_check(h, fn);
}

void kheap_cache_free_bulk(kheap_cache_t *c, size_t n, void **objs)
{
    if (c && objs)
        free_bulk(c->heap, c, n, objs, "kheap_cache_free_bulk");
}

size_t kheap_alloc_bulk(kheap_t *h, size_t size, size_t n, void **out)
{
    if (!h || !out || n == 0)
        return 0;
#if KHEAP_REDZONE
    for (size_t i = 0; i < n; i++) {
        out[i] = rz_alloc(h, size, 16, KHEAP_BLOCK_MALLOC, "kheap_alloc_bulk");
        if (!out[i]) {
            while (i--)
                rz_free(h, out[i], KHEAP_BLOCK_MALLOC, 0, "kheap_alloc_bulk");
            return 0;
        }
    }
    return n;
#endif
    if (size <= KHEAP_MAX_CLASS) {
        struct kheap_cache *c = &h->kmalloc[kh_class_of(size)];
        if (!bulk_take(h, c, n, out))
            return 0;
        for (size_t i = 0; i < n; i++)
            obj_out(c, out[i]);
        kh_debug_check(h, "kheap_alloc_bulk");
        return n;
    }
    /* Large blocks: page runs one by one; all or nothing. */
    for (size_t i = 0; i < n; i++) {
        out[i] = large_alloc(h, size, KH_PAGE);
        if (!out[i]) {
            while (i--)
                kheap_free(h, out[i]);
            return 0;
        }
    }
    return n;
}

void kheap_free_bulk(kheap_t *h, size_t n, void **ptrs)
{
#if KHEAP_REDZONE
    for (size_t i = 0; h && ptrs && i < n; i++)
        if (ptrs[i])
            rz_free(h, ptrs[i], KHEAP_BLOCK_MALLOC, 0, "kheap_free_bulk");
    return;
#endif
    if (h && ptrs)
        free_bulk(h, NULL, n, ptrs, "kheap_free_bulk");
}

/* ------------------------------------------------------------------ */
/* Reserves and memory pools.
 *
 * A reserve holds allocated objects of one cache, linked through
 * kh_held_link (the cache's link word: the object's first word, or past
 * the object for caches with a constructor, so constructed bytes stay as
 * they are; in the debug build the left redzone's first word). Taking
 * one is an unlink: no lock, no call, no failure while any is left. The
 * reserve belongs to its caller, who serialises its use. */

/* The reserve's first object, unlinked (its redzone whole again). */
static void *reserve_pop(struct kheap_reserve *r)
{
    void *p = r->head;
    r->head = *kh_held_link(r->cache, p);
    kh_held_unlink(r->cache, p);
    return p;
}

int kheap_reserve_fill(kheap_cache_t *c, size_t n, struct kheap_reserve *r)
{
    if (!c || !r || (r->cache && r->cache != c) || c->magic != KH_CACHE_MAGIC)
        return KHEAP_EINVAL;
    r->cache = c;
    void *batch[64];
    size_t added = 0;
    while (r->count < n) {
        size_t want = n - r->count < 64 ? n - r->count : 64;
        if (kheap_cache_alloc_bulk(c, want, batch) != want) {
            /* All or nothing: the objects added by this call go back. */
            while (added) {
                size_t k = added < 64 ? added : 64;
                for (size_t i = 0; i < k; i++)
                    batch[i] = reserve_pop(r);
                r->count -= k;
                added -= k;
                kheap_cache_free_bulk(c, k, batch);
            }
            return KHEAP_ENOMEM;
        }
        for (size_t i = 0; i < want; i++) {
            *kh_held_link(c, batch[i]) = r->head;
            r->head = batch[i];
        }
        r->count += want;
        added += want;
    }
    return KHEAP_OK;
}

void *kheap_reserve_alloc(struct kheap_reserve *r)
{
    void *p = r->head;
    if (kh_unlikely(!p))
        return NULL;
    struct kheap_cache *c = r->cache;
    reserve_pop(r);
    r->count--;
    __atomic_fetch_add(&kh_ucx_of(c)->xc.reserve_allocs, 1, __ATOMIC_RELAXED);
    return p;
}

size_t kheap_reserve_return(struct kheap_reserve *r)
{
    size_t n = 0;
    if (!r || !r->cache)
        return 0;
    struct kheap_cache *c = r->cache;
    void *batch[64];
    while (r->head) {
        size_t k = 0;
        while (r->head && k < 64)
            batch[k++] = reserve_pop(r);
        kheap_cache_free_bulk(c, k, batch);
        n += k;
    }
    r->count = 0;
    return n;
}

int kheap_mempool_init(struct kheap_mempool *pool, kheap_cache_t *c, size_t min)
{
    if (!pool)
        return KHEAP_EINVAL;
    pool->r.cache = NULL;
    pool->r.head = NULL;
    pool->r.count = 0;
    pool->min = min;
    int e = kheap_reserve_fill(c, min, &pool->r);
    if (e)
        pool->r.cache = NULL;
    return e;
}

void *kheap_mempool_alloc(struct kheap_mempool *pool)
{
    struct kheap_cache *c = pool->r.cache;
    void *p = kheap_cache_alloc(c);
    return p ? p : kheap_reserve_alloc(&pool->r);
}

void kheap_mempool_free(struct kheap_mempool *pool, void *obj)
{
    struct kheap_cache *c = pool->r.cache;
    if (!obj)
        return;
    if (pool->r.count >= pool->min) {
        kheap_cache_free(c, obj);
        return;
    }
    /* Refill the reserve with it, after the checks a free makes. */
    kheap_t *h = c->heap;
    struct kh_page *d = kh_page_of(h, (uintptr_t)obj);
    enum kheap_report_kind why = 0;
    if (!d || (d->kind != KH_PG_SLAB && d->kind != KH_PG_SLAB_PART)) {
        why = d ? KHEAP_REPORT_WRONG_CACHE : KHEAP_REPORT_FOREIGN;
    } else {
        struct kh_page *s = kh_slab_head(d);
        uintptr_t base = kh_slab_base(h, s);
        if (s->cache != c)
            why = KHEAP_REPORT_WRONG_CACHE;
        else if (kh_slot_of(c, (uintptr_t)obj - base) >= c->objs)
            why = KHEAP_REPORT_INTERIOR;
        else if (!slab_holds(c, s, base, obj) || (guard_suspect(c, obj) && kh_cpu_cached(h, c, obj)))
            why = KHEAP_REPORT_DOUBLE_FREE;
        for (void *q = pool->r.head; q && !why; q = *kh_held_link(c, q))
            if (q == obj)
                why = KHEAP_REPORT_DOUBLE_FREE;
    }
    if (why) {
        kh_report(why, obj, c, "kheap_mempool_free");
        return;
    }
#if KHEAP_REDZONE
    if (rz_cache(c))
        rz_cache_check(c, obj, "kheap_mempool_free");
#endif
    *kh_held_link(c, obj) = pool->r.head;
    pool->r.head = obj;
    pool->r.count++;
}

void kheap_mempool_destroy(struct kheap_mempool *pool)
{
    if (pool && pool->r.cache)
        kheap_reserve_return(&pool->r);
}

/* ------------------------------------------------------------------ */
/* KHEAP_NOLOCK: allocation and free from any context (cpu.c explains
 * why touching the previous magazine is safe). Nothing here waits, takes
 * a lock other than by trylock, calls a constructor or the report hook. */

/* The word a deferred block is linked through: its cache's
 * (kh_held_link), the first word of a large block, or a sampled block's
 * slot. Pre: ptr is a block the heap handed out (checked by the caller),
 * so its descriptors are stable. */
static void **defer_link(kheap_t *h, void *ptr)
{
    if (kh_guard_owns(h, ptr)) /* its page is shut once it is freed */
        return kh_guard_link(h, ptr);
    struct kh_page *d = kh_page_of(h, (uintptr_t)ptr);
    if (d->kind == KH_PG_SLAB || d->kind == KH_PG_SLAB_PART)
        return kh_held_link(kh_slab_head(d)->cache, ptr);
    return (void **)ptr;
}

/* Remember a refused pointer for a report when the list is next taken
 * (a KHEAP_NOLOCK context may not call the hook). One per heap: a
 * second before the first is reported replaces it. */
static void nolock_refuse(kheap_t *h, void *ptr, enum kheap_report_kind why)
{
    __atomic_store_n(&h->nolock_bad_kind, (unsigned)why, __ATOMIC_RELAXED);
    __atomic_store_n(&h->nolock_bad, ptr, __ATOMIC_RELEASE);
}

/* Push ptr (validated) on list idx; a block already on it is refused as a
 * double free. The scan follows links only to blocks of the heap and at
 * most KH_DEFER_SCAN steps, so even a list another thread is taking
 * (index KHEAP_CPU_NONE) cannot lead it astray for long. */
#define KH_DEFER_SCAN 4096u
static void defer_push(kheap_t *h, unsigned idx, void *ptr)
{
    void **head = &h->deferred[idx];
    /* In flight from before the head is read to after the push: a taker
     * that exchanged the head and then sees 0 here knows no scan still
     * walks what it took (sequentially consistent on both sides: this
     * add before the load of the head, its exchange before its load). */
    __atomic_fetch_add(&h->deferring[idx], 1, __ATOMIC_SEQ_CST);
    void *old = __atomic_load_n(head, __ATOMIC_SEQ_CST);
    unsigned steps = 0;
    for (void *q = old; q && steps < KH_DEFER_SCAN; steps++) {
        if (q == ptr) {
            nolock_refuse(h, ptr, KHEAP_REPORT_DOUBLE_FREE);
            __atomic_fetch_sub(&h->deferring[idx], 1, __ATOMIC_RELEASE);
            return;
        }
        if (!kh_page_of(h, (uintptr_t)q))
            break;
        q = *defer_link(h, q);
    }
    void **link = defer_link(h, ptr);
    do
        *link = old;
    while (!__atomic_compare_exchange_n(head, &old, ptr, true, __ATOMIC_RELEASE,
                                        __ATOMIC_ACQUIRE));
    __atomic_fetch_sub(&h->deferring[idx], 1, __ATOMIC_RELEASE);
}

/* Take list idx and free its blocks as kheap_free would (reports
 * included), and report a refused pointer. Normal context only. */
static void deferred_take(kheap_t *h, unsigned idx)
{
    void *p = __atomic_exchange_n(&h->deferred[idx], NULL, __ATOMIC_SEQ_CST);
    /* A push that read the old head may still scan it (another CPU's
     * interrupt, a thread with no CPU slot): wait for it, a bounded scan
     * (KH_DEFER_SCAN steps), before anything taken is freed. On the
     * owner's own list nothing can be in flight but an interrupted push
     * of this very CPU, which cannot run until this returns: skip it. */
    unsigned cpu = kheap_port_cpu_enter_fast();
    kheap_port_cpu_exit(cpu);
    if (p && (idx != cpu || idx == KHEAP_CPU_NONE))
        while (__atomic_load_n(&h->deferring[idx], __ATOMIC_ACQUIRE))
            ;
    /* From here on the kmalloc classes count their own deferrals. */
    (void)kh_xc_get(h, &h->kmalloc[0]);
    while (p) {
        void **link = defer_link(h, p);
        void *next = *link;
#if KHEAP_REDZONE
        struct kh_page *d = kh_page_of(h, (uintptr_t)p);
        if (!kh_is_slab_page(d) || (kh_slab_head(d)->cache->flags & KH_CACHE_KMALLOC)) {
            rz_free(h, p, KHEAP_BLOCK_MALLOC, 0, "kheap_free_flags (KHEAP_NOLOCK, deferred)");
            p = next;
            continue;
        }
        /* The list's link lay in the object's left redzone: its bytes
         * again, so the free's check sees only the program's writes. */
        kh_held_unlink(kh_slab_head(d)->cache, p);
#endif
        block_free(h, p, NULL, "kheap_free_flags (KHEAP_NOLOCK, deferred)");
        p = next;
    }
}

/* The calling CPU's list and the list of threads with no CPU, if they
 * hold anything: on the miss paths, one load each when they are empty. */
static void deferred_drain(kheap_t *h)
{
    unsigned cpu = kheap_port_cpu_enter_fast();
    kheap_port_cpu_exit(cpu);
    if (kh_unlikely(__atomic_load_n(&h->deferred[cpu], __ATOMIC_RELAXED) != NULL))
        deferred_take(h, cpu);
    if (cpu != KHEAP_CPU_NONE &&
        kh_unlikely(__atomic_load_n(&h->deferred[KHEAP_CPU_NONE], __ATOMIC_RELAXED) != NULL))
        deferred_take(h, KHEAP_CPU_NONE);
    if (kh_unlikely(__atomic_load_n(&h->nolock_bad, __ATOMIC_RELAXED) != NULL)) {
        unsigned why = __atomic_load_n(&h->nolock_bad_kind, __ATOMIC_RELAXED);
        void *bad = __atomic_exchange_n(&h->nolock_bad, NULL, __ATOMIC_ACQUIRE);
#if KHEAP_REDZONE
        /* An object free_nolock refused for damage under its left
         * redzone's first word: an underflow, or the link of a deferred
         * list it was on already (a double free; its list has been taken
         * and the object freed since). Reported with what is found now,
         * and not freed: a refused free leaves the object as it was. */
        struct kh_page *d = bad && why == KHEAP_REPORT_UNDERFLOW ? kh_page_of(h, (uintptr_t)bad)
                                                                : NULL;
        if (d && kh_is_slab_page(d) && rz_cache(kh_slab_head(d)->cache)) {
            struct kheap_cache *c = kh_slab_head(d)->cache;
            enum kheap_report_kind kind;
            const void *where = freed_already(h, c, bad) ? NULL : rz_cache_damage(c, bad, &kind);
            if (where)
                kh_report_at(kind, bad, c, "kheap_free_flags (KHEAP_NOLOCK)", c->size, where);
            else
                kh_report(KHEAP_REPORT_DOUBLE_FREE, bad, c, "kheap_free_flags (KHEAP_NOLOCK)");
            bad = NULL;
        }
#endif
        if (bad)
            kh_report((enum kheap_report_kind)why, bad, NULL, "kheap_free_flags (KHEAP_NOLOCK)");
    }
}

/* Every CPU's list: a cache may be destroyed only when none of its
 * objects is still deferred (they count as allocated until taken). A
 * list is taken with an exchange, so taking another CPU's races with its
 * pushes as safely as taking the list of threads with no CPU does. */
static void deferred_drain_all(kheap_t *h)
{
    for (unsigned i = 0; i <= KHEAP_MAX_CPUS; i++)
        if (__atomic_load_n(&h->deferred[i], __ATOMIC_RELAXED) != NULL)
            deferred_take(h, i);
    deferred_drain(h); /* and a refused pointer's report */
}

int kheap_cache_destroy(kheap_cache_t *c)
{
    if (c && c->magic == KH_CACHE_MAGIC && !(c->flags & (KH_CACHE_KMALLOC | KH_CACHE_INTERNAL)))
        deferred_drain_all(c->heap);
    return kh_cache_destroy(c);
}

size_t kheap_reclaim(kheap_t *h)
{
    deferred_drain(h);
    return kh_reclaim(h, NULL, false);
}

/* obj_out without the poison check, which may report. */
static inline void *obj_out_nolock(struct kheap_cache *c, void *p)
{
#if KH_POISON
    if (!c->ctor)
        __builtin_memset(p, KHEAP_POISON_ALLOC, kh_obj_span(c));
#endif
#if KHEAP_REDZONE
    if (rz_cache(c)) /* as obj_out */
        rz_cache_fill(c, p);
#endif
#if !KHEAP_VALGRIND
    if (c->guard)
        *kh_guard_word(p) = 0;
#endif
    kh_vg_alloc(p, c->size, c->ctor ? 1 : 0);
    return p;
}

/* c's KHEAP_NOLOCK failures and deferrals: in its counters, or (a kmalloc
 * class whose counters are not made yet) in the heap's early ones. */
static struct kh_xc *xc_nolock(kheap_t *h, struct kheap_cache *c)
{
    struct kh_xc *x = kh_xc_of(h, c);
    return x ? x : &h->xc_early;
}

static void *alloc_nolock(struct kheap_cache *c)
{
    kheap_t *h = c->heap;
    void *p = NULL;
    unsigned cpu;
    /* Counted on this CPU: a caller with no CPU slot (or, for a kmalloc
     * class, a CPU that never used the heap) gets nothing. */
    unsigned here = kheap_port_cpu_enter_fast();
    kheap_port_cpu_exit(here);
    struct kh_nlc *nl = here == KHEAP_CPU_NONE ? NULL : kh_nlc_of(h, c, here);
    struct kh_mag *m = nl ? kh_nolock_begin(h, c, true, &cpu) : NULL;
    if (m) {
        p = m->obj[--m->n];
#if KHEAP_VALGRIND
        m->obj[m->n] = NULL;
#endif
        __atomic_fetch_add(&nl->allocs, 1, __ATOMIC_RELAXED);
        kh_nolock_end(h, c, cpu);
    } else if (nl && kh_cache_take_try(c, &p)) {
        __atomic_fetch_add(&nl->allocs, 1, __ATOMIC_RELAXED);
    } else {
        __atomic_fetch_add(&xc_nolock(h, c)->nolock_fails, 1, __ATOMIC_RELAXED);
        return NULL;
    }
    return obj_out_nolock(c, p);
}

/* Free ptr (to `only` if not NULL) from any context. */
static void free_nolock(kheap_t *h, void *ptr, struct kheap_cache *only)
{
    unsigned cpu = kheap_port_cpu_enter_fast();
    kheap_port_cpu_exit(cpu);
    uintptr_t p = (uintptr_t)ptr;
    struct kh_page *d = kh_page_of(h, p);
    if (d && (d->kind == KH_PG_SLAB || d->kind == KH_PG_SLAB_PART)) {
        struct kh_page *s = kh_slab_head(d);
        struct kheap_cache *c = s->cache;
        uintptr_t base = kh_slab_base(h, s);
        if (!kh_slot_start(c, p - base) || (c->flags & KH_CACHE_INTERNAL) ||
            (only && c != only)) {
            nolock_refuse(h, ptr,
                          !kh_slot_start(c, p - base) ? KHEAP_REPORT_INTERIOR
                                                      : KHEAP_REPORT_WRONG_CACHE);
            return;
        }
        bool defer = guard_suspect(c, ptr);
#if KHEAP_REDZONE
        /* Damaged redzones are reported by the deferred free, which
         * links through the left one's first word (kh_held_link): damage
         * there would be lost under the link, and may be the link of a
         * deferred list the object is on already, so such an object is
         * refused (reported when the list is next taken, deferred_drain)
         * and left as it is. */
        enum kheap_report_kind kind;
        const void *bad = rz_cache(c) ? rz_cache_damage(c, ptr, &kind) : NULL;
        if (bad && (uintptr_t)bad < (uintptr_t)kh_held_link(c, ptr) + sizeof(void *)) {
            nolock_refuse(h, ptr, KHEAP_REPORT_UNDERFLOW);
            return;
        }
        defer |= bad != NULL;
#endif
        /* An object carrying the key may be free already: only the
         * deferred free (block_free, which can look) may decide. */
        if (!defer) {
            unsigned fcpu;
            struct kh_mag *m = kh_nolock_begin(h, c, false, &fcpu);
            if (m) {
                obj_in(h, c, ptr);
                m->obj[m->n++] = ptr;
                __atomic_fetch_add(&kh_nlc_of(h, c, fcpu)->frees, 1, __ATOMIC_RELAXED);
                kh_nolock_end(h, c, fcpu);
                return;
            }
        }
        __atomic_fetch_add(&xc_nolock(h, c)->nolock_deferred, 1, __ATOMIC_RELAXED);
        defer_push(h, cpu, ptr);
        return;
    }
    if (d && d->kind == KH_PG_LARGE && !d->internal && !(p & KH_PAGE_MASK) && !only) {
        defer_push(h, cpu, ptr); /* a page run: the page lock is needed */
        return;
    }
#if KH_GUARDS
    if (kh_guard_owns(h, ptr) && !only) {
        /* A sampled block: the guard lock is needed. Its slot is read
         * without the lock; only a double free racing with this one could
         * change it, and the deferred free decides again. */
        enum kheap_report_kind why = 0;
        size_t size;
        if (kh_guard_live(h, ptr, &size, &why))
            defer_push(h, cpu, ptr);
        else
            nolock_refuse(h, ptr, why);
        return;
    }
#endif
    nolock_refuse(h, ptr,
                  !d ? KHEAP_REPORT_FOREIGN
                     : d->kind == KH_PG_LARGE || d->kind == KH_PG_INTERIOR ? KHEAP_REPORT_INTERIOR
                     : only ? KHEAP_REPORT_WRONG_CACHE
                            : KHEAP_REPORT_FREE_RUN);
}

void *kheap_alloc_flags(kheap_t *h, size_t size, unsigned flags)
{
    if (!(flags & KHEAP_NOLOCK))
        return flags ? NULL : kheap_alloc(h, size);
    if (flags & ~(unsigned)KHEAP_NOLOCK || size > KHEAP_MAX_CLASS || KHEAP_REDZONE)
        return NULL;
    return alloc_nolock(&h->kmalloc[kh_class_of(size)]);
}

void kheap_free_flags(kheap_t *h, void *ptr, unsigned flags)
{
    if (!(flags & KHEAP_NOLOCK)) {
        kheap_free(h, ptr);
        return;
    }
#if KHEAP_REDZONE
    /* The block's checks and the quarantine take locks: later. Only a
     * live block is linked (the link is written into it; a quarantined
     * large block's pages may be shut). */
    if (ptr && kh_page_of(h, (uintptr_t)ptr)) {
        unsigned cpu = kheap_port_cpu_enter_fast();
        kheap_port_cpu_exit(cpu);
        enum kheap_report_kind why = rz_nolock_check(h, ptr);
        if (why)
            nolock_refuse(h, ptr, why);
        else
            defer_push(h, cpu, ptr);
        return;
    }
#endif
    if (ptr)
        free_nolock(h, ptr, NULL);
}

void *kheap_cache_alloc_flags(kheap_cache_t *c, unsigned flags)
{
    if (!(flags & KHEAP_NOLOCK))
        return flags ? NULL : kheap_cache_alloc(c);
    if (flags & ~(unsigned)KHEAP_NOLOCK)
        return NULL;
    return alloc_nolock(c);
}

void kheap_cache_free_flags(kheap_cache_t *c, void *ptr, unsigned flags)
{
    if (!(flags & KHEAP_NOLOCK)) {
        kheap_cache_free(c, ptr);
        return;
    }
    if (ptr)
        free_nolock(c->heap, ptr, c);
}

/* ------------------------------------------------------------------ */
/* Blocks of a kind (the C++ operators, sized frees). */

void *kheap_alloc_as(kheap_t *h, size_t size, size_t align, enum kheap_block_kind kind)
{
#if KHEAP_REDZONE
    if ((unsigned)kind > KHEAP_BLOCK_NEW_ARRAY || (align > 16 && !kh_is_pow2(align)) ||
        size > SIZE_MAX - align) {
        kh_account_failure(h);
        return NULL;
    }
    return rz_alloc(h, size, align, kind, "kheap_alloc_as");
#else
    (void)kind;
    return kheap_alloc_aligned(h, size, align);
#endif
}

void kheap_free_aligned_as(kheap_t *h, void *ptr, size_t size, size_t align,
                           enum kheap_block_kind kind)
{
    if (align <= 8 && kh_likely(kh_hit_free_sized(h->cpu, &h->window, ptr, size)))
        return;
    kh_free_sized_slow(h, ptr, size, align, kind);
}

void kheap_free_as(kheap_t *h, void *ptr, size_t size, enum kheap_block_kind kind)
{
    kheap_free_aligned_as(h, ptr, size, 0, kind);
}

size_t kheap_quarantine_drain(kheap_t *h)
{
#if KHEAP_REDZONE
    return rz_flush(h);
#else
    (void)h;
    return 0;
#endif
}
