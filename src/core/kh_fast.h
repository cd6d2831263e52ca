/*
 * kh_fast.h - the hit paths of kmalloc-class allocation and free.
 *
 * Small static inline functions, so kheap_alloc/kheap_free and the default
 * heap's kmalloc/kfree run them with no call: pop from (push onto) the
 * calling CPU's loaded magazine of the size class. Everything else, the
 * misses, large blocks, user caches, multi-page slabs, bad pointers and
 * the debug builds, goes to the noinline slow paths in kmalloc.c, which
 * do the same work with every check.
 *
 * The hit path of free checks, in O(1) and with no lock, that the pointer
 * is the start of a slot of a one-page slab of a kmalloc class in the
 * heap's first region, and that it does not carry the double-free key;
 * any doubt sends it to the slow path, which decides exactly.
 *
 * Two versions: kh_alloc_fast/kh_free_fast for any heap (the heap's first
 * region and page descriptors, the CPU's state through heap->cpu[]), and
 * kh_default_alloc/kh_default_free for the default heap, which reach the
 * CPU's state through the port's per-CPU word and the page through the
 * default heap's page tags (docs/DESIGN.md counts their instructions).
 */
#ifndef KH_FAST_H
#define KH_FAST_H

#include "kh_internal.h"

/* Builds that watch every object take the slow paths only. */
#if KH_POISON || KHEAP_VALGRIND || KHEAP_DEBUG >= 3
#define KH_FAST 0
#else
#define KH_FAST 1
#endif

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

/* Size class of a request of n <= KHEAP_MAX_CLASS bytes. */
static inline unsigned kh_class_of(size_t n)
{
    if (kh_likely(n <= 1024))
        return kh_small_class[(n + 7) >> 3];
    unsigned f = kh_log2(n - 1);
    return 7 + ((f - 6) << 3) + (unsigned)(((n - 1) >> (f - 3)) & 7);
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

void *kh_alloc_slow(kheap_t *h, size_t size);
void kh_free_slow(kheap_t *h, void *ptr);

static inline void *kh_alloc_fast(kheap_t *h, size_t size)
{
#if KH_FAST
    if (kh_likely(size <= KH_DIRECT_MAX)) {
        unsigned cpu = kheap_port_cpu_enter_fast();
        void *p;
        bool hit = kh_cc_pop(h->cpu[cpu]->direct[(size + 7) >> 3], &p);
        kheap_port_cpu_exit(cpu);
        if (kh_likely(hit)) {
            *kh_guard_word(p) = 0;
            return p;
        }
    }
#endif
    return kh_alloc_slow(h, size);
}

static inline void kh_free_fast(kheap_t *h, void *ptr)
{
#if KH_FAST
    uintptr_t p = (uintptr_t)ptr;
    const struct kh_region *r0 = &h->regions[0];
    uintptr_t off0 = p - r0->start;
    if (kh_likely(off0 < r0->span)) {
        const struct kh_page *d = &r0->pages[off0 >> KHEAP_PAGE_SHIFT];
        if (kh_likely(d->kind == KH_PG_SLAB)) {
            /* cc_off is 0 (a front whose slot test always fails) unless
             * the slab's cache is a kmalloc class of one-page slabs. */
            unsigned cpu = kheap_port_cpu_enter_fast();
            struct kh_cc *cc = (struct kh_cc *)((char *)h->cpu[cpu] + d->cache->cc_off);
            /* The slot test first: only then is the key word inside the
             * object, so inside the heap. */
            if (kh_likely(kh_cc_slot(cc, p & KH_PAGE_MASK) &&
                          *kh_guard_word(ptr) != KH_GUARD_KEY && kh_cc_push(cc, ptr))) {
                *kh_guard_word(ptr) = KH_GUARD_KEY;
                kheap_port_cpu_exit(cpu);
                return;
            }
            kheap_port_cpu_exit(cpu);
        }
    }
#endif
    kh_free_slow(h, ptr);
}

/* ------------------------------------------------------------------ */
/* The default heap (default.c), set up on first use. */
extern kheap_t *kh_default_heap;
kheap_t *kh_default_setup(void);

static inline kheap_t *kh_default(void)
{
    kheap_t *h = __atomic_load_n(&kh_default_heap, __ATOMIC_ACQUIRE);
    if (kh_likely(h != NULL)) {
        kh_vg_after(&kh_default_heap);
        return h;
    }
    return kh_default_setup();
}

/* The default heap's first region and its page tags, for kfree's hit
 * path: span is 0 until the heap is set up, and is stored last (release)
 * and loaded first (acquire), so a reader that sees it sees the rest. */
struct kh_window {
    uintptr_t start, span;
    const uint16_t *tags;
};
extern struct kh_window kh_default_window;

/* The default heap's malloc and free (kmalloc/kfree, and the hosted
 * malloc shim): the hit paths inline, everything else out of line. */
void *kh_default_alloc_slow(size_t size);
void kh_default_free_slow(void *ptr);

#if KH_FAST && KHEAP_PORT_CPU_LOCAL
/* The CPU's state of the default heap comes from the port's per-CPU word
 * (the sentinel, whose magazines are empty, until the CPU's first miss on
 * the default heap); a free's page tag gives the offset of its class's
 * front in that state, 0 (a front whose slot test always fails) for any
 * page that is not a one-page kmalloc slab. */
static inline void *kh_default_alloc(size_t size)
{
    if (kh_likely(size <= KH_DIRECT_MAX)) {
        unsigned cpu = kheap_port_cpu_enter_fast();
        void *p;
        bool hit = kh_cc_pop(kheap_port_cpu_local()->direct[(size + 7) >> 3], &p);
        kheap_port_cpu_exit(cpu);
        if (kh_likely(hit)) {
            *kh_guard_word(p) = 0;
            return p;
        }
    }
    return kh_default_alloc_slow(size);
}

static inline void kh_default_free(void *ptr)
{
    uintptr_t span = __atomic_load_n(&kh_default_window.span, __ATOMIC_ACQUIRE);
    uintptr_t off = (uintptr_t)ptr - kh_default_window.start;
    if (kh_likely(off < span)) {
        unsigned tag = __atomic_load_n(&kh_default_window.tags[off >> KHEAP_PAGE_SHIFT],
                                       __ATOMIC_RELAXED);
        unsigned cpu = kheap_port_cpu_enter_fast();
        struct kh_cc *cc = (struct kh_cc *)((char *)kheap_port_cpu_local() + tag);
        if (kh_likely(kh_cc_slot(cc, off & KH_PAGE_MASK) &&
                      *kh_guard_word(ptr) != KH_GUARD_KEY && kh_cc_push(cc, ptr))) {
            *kh_guard_word(ptr) = KH_GUARD_KEY;
            kheap_port_cpu_exit(cpu);
            return;
        }
        kheap_port_cpu_exit(cpu);
    }
    kh_default_free_slow(ptr);
}
#else
static inline void *kh_default_alloc(size_t size)
{
    kheap_t *h = __atomic_load_n(&kh_default_heap, __ATOMIC_ACQUIRE);
    if (kh_unlikely(!h))
        return kh_default_alloc_slow(size);
    kh_vg_after(&kh_default_heap);
    return kh_alloc_fast(h, size);
}

static inline void kh_default_free(void *ptr)
{
    kheap_t *h = __atomic_load_n(&kh_default_heap, __ATOMIC_ACQUIRE);
    if (kh_unlikely(!h)) {
        kh_default_free_slow(ptr);
        return;
    }
    kh_vg_after(&kh_default_heap);
    kh_free_fast(h, ptr);
}
#endif

#endif /* KH_FAST_H */
