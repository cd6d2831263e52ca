/*
 * kh_fast.h - the hit paths: one allocation hit and one free hit (and
 * the sized free's, which also compares the size's class).
 *
 * Small static inline functions that pop an object from (push one onto)
 * the calling CPU's loaded magazine of a kmalloc class, with no lock and
 * no call. Every heap takes them: kheap_alloc/kheap_free (kmalloc.c) for
 * heaps made with kheap_init, kmalloc/kfree and the malloc shim for the
 * default heap. The two differ only in where the CPU's state comes from,
 * a parameter here:
 *   cpus != NULL  the heap's array of CPU states, indexed by the CPU
 *                 (kheap.cpu);
 *   cpus == NULL  the port's per-CPU word (KHEAP_PORT_CPU_LOCAL), which
 *                 holds the default heap's state of the CPU: one load from
 *                 the thread pointer; or, where the port supplies its own
 *                 commits (KHEAP_PORT_CPU_TX_HEADER: the hosted port's
 *                 restartable sequences), those, which find the state
 *                 themselves.
 * The page's class comes from the heap's window: its first region and
 * the page tags over it (struct kh_window), the same for every heap.
 * A miss returns false and the caller goes to its noinline slow path
 * (kmalloc.c, default.c). An allocation's slow path does not pop the
 * magazine the hit path found empty; a free's may push again (it cannot
 * tell a full magazine from a page the hit path does not serve).
 *
 * The free hit checks, in O(1) and with no lock, that the pointer is the
 * start of a slot of a slab of a kmalloc class in the heap's first region
 * (one multiply and compare for a one-page slab; a second for a slab of
 * several pages, with the page's index in it), and that it does not carry
 * the double-free key; any doubt is a miss, and the slow path decides
 * exactly. docs/DESIGN.md counts the instructions.
 */
#ifndef KH_FAST_H
#define KH_FAST_H

#include "kh_front.h"
#ifdef KHEAP_PORT_CPU_TX_HEADER
#include KHEAP_PORT_CPU_TX_HEADER
#endif

/* The state of the calling CPU (between enter and exit). */
static inline struct kh_cpu *kh_cpu_here(struct kh_cpu *const *cpus, unsigned cpu)
{
#if KHEAP_PORT_CPU_LOCAL
    if (!cpus)
        return kheap_port_cpu_local();
#endif
    return cpus[cpu];
}

/* Allocation hit: an object of size's class into *out, or false. Up to
 * KH_DIRECT_MAX bytes the class's front comes from the CPU's direct[]
 * table; larger classes find theirs (kh_class_of: a second table) on a
 * branch of their own, so the small requests' path is as it was; larger blocks up
 * to KHEAP_RUN_CACHE_MAX come from the CPU's cache of large blocks, on a
 * third branch (w: the window, whose page tags they set). */
static kh_always_inline bool kh_hit_alloc(struct kh_cpu *const *cpus, const struct kh_window *w,
                                          size_t size, void **out)
{
#if KH_FAST && KHEAP_PERCPU
#ifdef KHEAP_PORT_CPU_TX_HEADER
    /* The default heap, through the port's committed pops (the CPU may
     * change under the caller until the commit), from its cache of large
     * blocks too. */
    if (!cpus) {
        bool hit;
        if (kh_likely(size <= KH_DIRECT_MAX))
            hit = kh_tx_pop_direct(offsetof(struct kh_cpu, direct),
                                   ((size + 7) >> 3) * sizeof(struct kh_cc *), out);
        else if (size <= KHEAP_MAX_CLASS)
            hit = kh_tx_pop_at(offsetof(struct kh_cpu, cc[KH_CC(0)]),
                               (size_t)kh_class_of(size) * sizeof(struct kh_cc), out);
#if KH_RUNS
        else if (size <= KHEAP_RUN_CACHE_MAX) {
            /* The run is the caller's once popped: live again with its
             * tag, as kh_run_pop makes it. */
            size_t np = (size + KH_PAGE_MASK) >> KHEAP_PAGE_SHIFT;
            if (!kh_tx_run_pop(offsetof(struct kh_runcache, bin) +
                                   (np - KH_RUN_MIN_PAGES) * sizeof(struct kh_runbin),
                               out))
                return false;
            __atomic_store_n(&w->pt[((uintptr_t)*out - w->start) >> KHEAP_PAGE_SHIFT].tag,
                             (uint16_t)KH_RUN_TAG, __ATOMIC_RELEASE);
            return true;
        }
#endif
        else
            return false;
        if (kh_likely(hit)) {
            *kh_guard_word(*out) = 0;
            return true;
        }
        return false;
    }
#endif
    struct kh_cc *cc;
    unsigned cpu;
    if (kh_likely(size <= KH_DIRECT_MAX)) {
        cpu = kheap_port_cpu_enter_fast();
        cc = kh_cpu_here(cpus, cpu)->direct[(size + 7) >> 3];
    } else if (size <= KHEAP_MAX_CLASS) {
        cpu = kheap_port_cpu_enter_fast();
        /* &cc[KH_CC(class)], with the + 1 in the address's displacement */
        cc = (struct kh_cc *)((char *)&kh_cpu_here(cpus, cpu)->cc[KH_CC(0)] +
                              (size_t)kh_class_of(size) * sizeof(struct kh_cc));
    } else {
#if KH_RUNS
        if (size <= KHEAP_RUN_CACHE_MAX) {
            cpu = kheap_port_cpu_enter_fast();
            bool hit = kh_run_pop(kh_cpu_here(cpus, cpu), w, size, out);
            kheap_port_cpu_exit_fast(cpu);
            return hit;
        }
#endif
        (void)w;
        return false;
    }
    bool hit = kh_cc_pop(cc, out);
    kheap_port_cpu_exit_fast(cpu);
    if (kh_likely(hit)) {
        *kh_guard_word(*out) = 0;
        return true;
    }
#else
    (void)cpus, (void)w, (void)size, (void)out;
#endif
    return false;
}

#if KH_RUNS && defined(KHEAP_PORT_CPU_TX_HEADER)
/* The free of the live large block whose first page ptr is in (its tag
 * KH_RUN_TAG when kh_tx_free read it), for the default heap: into the
 * CPU's cache of large blocks through the port's push (kh_tx_run_free),
 * else the slow path, with the tag taken or not (default.c). */
void kh_default_free_run(void *ptr);

/* The CPU's cache of large blocks through the port's committed push
 * (kh_tx_run_push), for kh_default_free_run. The tag is taken first,
 * with a compare-and-exchange from KH_RUN_TAG to 0 (as kh_run_push's
 * plain load and store, but atomic: of two frees of one block, on one
 * CPU or two, one takes it and the other misses, and the slow path
 * reports it); the sequence never touches it, so a restart costs
 * nothing. KH_TX_HIT: pushed. KH_TX_MISS: p is not the first byte of a
 * live large block the CPUs may cache (tag untouched: the slow path
 * finds out what it is). KH_TX_RUN: the tag is taken but the push missed
 * (no cache on this CPU yet, its bin at its cap, the CPU claimed): the
 * caller frees the block with the tag taken (kh_free_large_taken), so
 * that no other free can take it meanwhile. */
static inline int kh_tx_run_free(const struct kh_window *w, void *p)
{
    uintptr_t off = (uintptr_t)p - w->start, pg = off >> KHEAP_PAGE_SHIFT;
    uint16_t live = (uint16_t)KH_RUN_TAG;
    if (off >= __atomic_load_n(&w->span, __ATOMIC_ACQUIRE) || (off & KH_PAGE_MASK) ||
        !__atomic_compare_exchange_n(&w->pt[pg].tag, &live, (uint16_t)0, false, __ATOMIC_ACQUIRE,
                                     __ATOMIC_RELAXED))
        return KH_TX_MISS;
    size_t np = __atomic_load_n(&w->pt[pg].run, __ATOMIC_RELAXED);
    return kh_tx_run_push(offsetof(struct kh_runcache, bin) +
                              (np - KH_RUN_MIN_PAGES) * sizeof(struct kh_runbin),
                          p)
               ? KH_TX_HIT
               : KH_TX_RUN;
}
#endif

/* The front a free of an object whose slab is homed at home pushes onto,
 * on the CPU whose state is pc, whose front of the object's class is cc:
 * cc itself when home is the CPU's (pc->self), else its remote front (kh_front.h,
 * kh_cpu.remote), from which no allocation pops: the object goes home
 * through the home's inbox or the depot (cpu.c) rather than to this CPU's
 * next allocation. A
 * home changed since (a refill of another CPU took the slab) only sends
 * the object the other way: both fronts are this CPU's, and both take
 * the object as a free. Best effort, not a rule: the KHEAP_NOLOCK and
 * bulk frees keep what they free (a heap without homes always: its
 * remote fronts are its fronts). The hosted port's restartable
 * sequences make the same choice in their own code (kh_tx_free). */
static kh_always_inline struct kh_cc *kh_cc_home(struct kh_cc *cc, const struct kh_cpu *pc,
                                                 unsigned home)
{
#if KH_HOMES
    if (kh_unlikely(home != pc->self)) {
        cc = (struct kh_cc *)((char *)cc + pc->remote);
        /* (a branch, out of line: not a conditional move, one more
         * instruction on the path of every local free) */
        __asm__ volatile("" : "+r"(cc));
    }
#else
    (void)pc, (void)home;
#endif
    return cc;
}

/* The page table's entry for the window offset off: its tag, in *soff
 * the offset in its slab, and with homes in *home the slab's home. */
static kh_always_inline size_t kh_pt_entry(const struct kh_ptag *pt, uintptr_t off, uint64_t *soff,
                                           unsigned *home)
{
#if KH_HOMES
    return kh_pt_read_home(pt, off, soff, home);
#else
    *home = 0;
    return kh_pt_read(pt, off, soff);
#endif
}

/* Free hit: ptr pushed onto this CPU's magazine of its class, or false. */
static kh_always_inline bool kh_hit_free(struct kh_cpu *const *cpus, const struct kh_window *w,
                                         void *ptr)
{
#if KH_FAST && KHEAP_PERCPU
    uintptr_t span = __atomic_load_n(&w->span, __ATOMIC_ACQUIRE);
    uintptr_t off = (uintptr_t)ptr - w->start;
#ifdef KHEAP_PORT_CPU_TX_HEADER
    /* The default heap: the tests below, in the port's committed push
     * (kh_tx_free, its slot test), with the CPU's state at the
     * commit; a large block through the port's push of runs
     * (kh_default_free_run). */
    if (!cpus) {
        if (kh_likely(off < span)) {
            uint64_t soff;
            unsigned home;
            size_t tag = kh_pt_entry(w->pt, off, &soff, &home);
            int r = kh_tx_free(tag, soff, home, ptr);
            if (kh_likely(r == KH_TX_HIT))
                return true;
#if KH_RUNS
            if (r == KH_TX_RUN) {
                /* (a call of its own, which the free hit jumps to as it
                 * does to its slow path: its registers stay as they were) */
                kh_default_free_run(ptr);
                return true;
            }
#endif
        }
        return false;
    }
#endif
    if (kh_likely(off < span)) {
        uint64_t soff;
        unsigned home;
        size_t tag = kh_pt_entry(w->pt, off, &soff, &home);
        unsigned cpu = kheap_port_cpu_enter_fast();
        struct kh_cpu *pc = kh_cpu_here(cpus, cpu);
        struct kh_cc *cc = (struct kh_cc *)((char *)pc + tag);
        /* The slot test first: only then is the key word inside the
         * object, so inside the heap. The page's entry gives the offset
         * in the slab, whatever its page count (kh_ptag). Its rebase was
         * stored before its tag: a free of a live object reads both as
         * its slab's maker left them; a racing free of a bad pointer may
         * pair one slab's tag with another's rebase (a whole number of
         * pages off), and either way meets the slot test of a class and
         * the key, as with the tag alone. */
        bool slot = kh_cc_slot(cc, soff);
#if KH_RUNS
        if (kh_unlikely(!slot)) {
            /* The first page of a large block: its tag names the front
             * that holds the CPU's cache of them, the only one whose
             * limit is NULL. */
            if (!cc->limit) {
                bool hit = kh_run_push(cc->runs, w, ptr);
                kheap_port_cpu_exit_fast(cpu);
                return hit;
            }
        }
#endif
        if (kh_likely(slot && *kh_guard_word(ptr) != KH_GUARD_KEY &&
                      kh_cc_push(kh_cc_home(cc, pc, home), ptr))) {
            *kh_guard_word(ptr) = KH_GUARD_KEY;
            kheap_port_cpu_exit_fast(cpu);
            return true;
        }
        kheap_port_cpu_exit_fast(cpu);
    }
#else
    (void)cpus, (void)w, (void)ptr;
#endif
    return false;
}

#if KH_RUNS
/* Is size, given to a sized free of the large block whose first page is
 * at off in the window (tag KH_RUN_TAG when looked at), of the block's
 * page count, and one the CPUs' caches of large blocks take? (Read
 * before the push, which takes the tag and reads the count again.) */
static inline bool kh_run_sized(const struct kh_window *w, uintptr_t off, size_t size)
{
    return size > KHEAP_MAX_CLASS && size <= KHEAP_RUN_CACHE_MAX &&
           __atomic_load_n(&w->pt[off >> KHEAP_PAGE_SHIFT].run, __ATOMIC_RELAXED) ==
               (size + KH_PAGE_MASK) >> KHEAP_PAGE_SHIFT;
}
#endif

/* Sized free hit (C++ sized delete, C23 free_sized): kh_hit_free, when
 * also size is of the class whose front the page's tag names. Up to
 * KH_DIRECT_MAX bytes that front must be the one the allocation hit of
 * size pops from (direct[]); above, size must lie between the class's
 * bytes and the class's below it (kh_cc_bytes), which no size above
 * every class does. The first page of a large block a CPU may cache
 * (tag KH_RUN_TAG) takes a size of its page count to the CPU's cache of
 * them, as the plain free does (kh_run_sized). Any other size is a miss:
 * the slow path (kh_free_sized_slow) tells a misuse from a block the hit
 * path does not serve. The plain free hit is not touched. */
static kh_always_inline bool kh_hit_free_sized(struct kh_cpu *const *cpus,
                                               const struct kh_window *w, void *ptr,
                                               size_t size)
{
#if KH_FAST && KHEAP_PERCPU
    uintptr_t span = __atomic_load_n(&w->span, __ATOMIC_ACQUIRE);
    uintptr_t off = (uintptr_t)ptr - w->start;
#ifdef KHEAP_PORT_CPU_TX_HEADER
    /* The default heap: the class test with the tables every CPU shares
     * (up to KH_DIRECT_MAX bytes, the front of size's class is where the
     * allocation hit of size pops), then kh_hit_free's committed push. */
    if (!cpus) {
        if (kh_likely(off < span)) {
            uint64_t soff;
            unsigned home;
            size_t tag = kh_pt_entry(w->pt, off, &soff, &home);
            const size_t *bytes = &kh_cc_bytes[tag / sizeof(struct kh_cc)];
            bool of_class =
                kh_likely(size <= KH_DIRECT_MAX)
                    ? tag == KH_CC(kh_small_class[(size + 7) >> 3]) * sizeof(struct kh_cc)
                    : bytes[0] < size && size <= bytes[1];
            if (kh_likely(of_class))
                return kh_tx_free(tag, soff, home, ptr) == KH_TX_HIT;
#if KH_RUNS
            if (tag == KH_RUN_TAG && kh_run_sized(w, off, size)) {
                kh_default_free_run(ptr);
                return true;
            }
#endif
        }
        return false;
    }
#endif
    if (kh_likely(off < span)) {
        uint64_t soff;
        unsigned home;
        size_t tag = kh_pt_entry(w->pt, off, &soff, &home);
        unsigned cpu = kheap_port_cpu_enter_fast();
        struct kh_cpu *pc = kh_cpu_here(cpus, cpu);
        struct kh_cc *cc = (struct kh_cc *)((char *)pc + tag);
        const size_t *bytes = &kh_cc_bytes[tag / sizeof(struct kh_cc)];
        bool of_class = kh_likely(size <= KH_DIRECT_MAX) ? pc->direct[(size + 7) >> 3] == cc
                                                         : bytes[0] < size && size <= bytes[1];
        if (kh_likely(of_class && kh_cc_slot(cc, soff) && *kh_guard_word(ptr) != KH_GUARD_KEY &&
                      kh_cc_push(kh_cc_home(cc, pc, home), ptr))) {
            *kh_guard_word(ptr) = KH_GUARD_KEY;
            kheap_port_cpu_exit_fast(cpu);
            return true;
        }
#if KH_RUNS
        if (tag == KH_RUN_TAG && kh_run_sized(w, off, size)) {
            bool hit = kh_run_push(cc->runs, w, ptr);
            kheap_port_cpu_exit_fast(cpu);
            return hit;
        }
#endif
        kheap_port_cpu_exit_fast(cpu);
    }
#else
    (void)cpus, (void)w, (void)ptr, (void)size;
#endif
    return false;
}

/* ------------------------------------------------------------------ */
/* The default heap's malloc and free (kmalloc/kfree, and the hosted
 * malloc shim), through the hit paths with the default heap's window
 * (default.c). Until the heap is set up the window's span is 0 and the
 * CPU states are the sentinel's, so the first calls miss and the slow
 * path sets the heap up. */
extern struct kh_window kh_default_window;
#if KHEAP_PORT_CPU_LOCAL
#define KH_DEFAULT_CPUS ((struct kh_cpu *const *)0)
#else
extern struct kh_cpu *const *kh_default_cpus;
#define KH_DEFAULT_CPUS __atomic_load_n(&kh_default_cpus, __ATOMIC_ACQUIRE)
#endif
void *kh_default_alloc_slow(size_t size);
void kh_default_free_slow(void *ptr);
/* kheap_free_aligned_as on the default heap (the shim's sized frees,
 * after kh_hit_free_sized). */
void kh_default_free_sized_slow(void *ptr, size_t size, size_t align, unsigned kind);

static kh_always_inline void *kh_default_alloc(size_t size)
{
    void *p;
    if (kh_likely(kh_hit_alloc(KH_DEFAULT_CPUS, &kh_default_window, size, &p)))
        return p;
    return kh_default_alloc_slow(size);
}

static kh_always_inline void kh_default_free(void *ptr)
{
    if (kh_likely(kh_hit_free(KH_DEFAULT_CPUS, &kh_default_window, ptr)))
        return;
    kh_default_free_slow(ptr);
}

#endif /* KH_FAST_H */
