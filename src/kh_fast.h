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
 * heap's first region, and that it does not carry the double-free key
 * (kmalloc.c); any doubt sends it to the slow path.
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

/* Every kmalloc class has room for the double-free key (its second word)
 * and no constructor, so its hit paths write the key unconditionally. */
_Static_assert(KH_MIN_SLOT >= 2 * sizeof(void *), "kmalloc slots hold the key");

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
 * CPUs only read it (relaxed atomics: a plain load, add and store). */
static inline void kh_bump(uint64_t *ctr)
{
    __atomic_store_n(ctr, *ctr + 1, __ATOMIC_RELAXED);
}

void *kh_alloc_slow(kheap_t *h, size_t size);
void kh_free_slow(kheap_t *h, void *ptr);

static inline void *kh_alloc_fast(kheap_t *h, size_t size)
{
#if KH_FAST
    if (kh_likely(size <= KHEAP_MAX_CLASS)) {
        unsigned cls = kh_class_of(size);
        unsigned cpu = kheap_port_cpu_enter_fast();
        struct kh_cc *cc = &h->cpu[cpu]->cc[cls];
        struct kh_mag *m = cc->loaded;
        uint32_t n = m->n;
        if (kh_likely(n != 0)) {
            void *p = m->obj[n - 1];
            m->n = n - 1;
            ((uintptr_t *)p)[1] = 0; /* no stale double-free key */
            kh_bump(&cc->allocs);
            kheap_port_cpu_exit(cpu);
            return p;
        }
        kheap_port_cpu_exit(cpu);
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
            const struct kheap_cache *c = d->cache;
            uint32_t off = (uint32_t)(p & KH_PAGE_MASK);
            uintptr_t key = h->guard_key;
            if (kh_likely(c->cls != KH_NO_CLASS && (uint64_t)off * c->divtest < c->divtest &&
                          off < c->span && ((uintptr_t *)ptr)[1] != key)) {
                unsigned cpu = kheap_port_cpu_enter_fast();
                struct kh_cc *cc = &h->cpu[cpu]->cc[c->cls];
                struct kh_mag *m = cc->loaded;
                uint32_t n = m->n;
                if (kh_likely(n < m->cap)) {
                    ((uintptr_t *)ptr)[1] = key;
                    m->obj[n] = ptr;
                    m->n = n + 1;
                    kh_bump(&cc->frees);
                    kheap_port_cpu_exit(cpu);
                    return;
                }
                kheap_port_cpu_exit(cpu);
            }
        }
    }
#endif
    kh_free_slow(h, ptr);
}

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

/* The default heap's malloc and free (kmalloc/kfree, and the hosted
 * malloc shim): the hit paths inline, everything else out of line. */
void *kh_default_alloc_first(size_t size);
void kh_default_free_first(void *ptr);

static inline void *kh_default_alloc(size_t size)
{
    kheap_t *h = __atomic_load_n(&kh_default_heap, __ATOMIC_ACQUIRE);
    if (kh_unlikely(!h))
        return kh_default_alloc_first(size);
    kh_vg_after(&kh_default_heap);
    return kh_alloc_fast(h, size);
}

static inline void kh_default_free(void *ptr)
{
    kheap_t *h = __atomic_load_n(&kh_default_heap, __ATOMIC_ACQUIRE);
    if (kh_unlikely(!h)) {
        kh_default_free_first(ptr);
        return;
    }
    kh_vg_after(&kh_default_heap);
    kh_free_fast(h, ptr);
}

#endif /* KH_FAST_H */
