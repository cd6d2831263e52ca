/*
 * default.c - the default heap: a static array, set up on first use.
 *
 * kheap_default_memory is the seed's HEAP_MEMORY: KHEAP_DEFAULT_SIZE bytes
 * in BSS (8 MiB unless the build says otherwise), so the heap's end is
 * known before the heap is first used (kheap_heap_end, the seed's
 * heap_end_vaddr). Because BSS is zero, setting the heap up writes only
 * the heap structure and two descriptors, whatever the array's size.
 *
 * First use from several threads at once: one wins the state word (0 ->
 * 1) and sets the heap up; the others wait for the pointer to be
 * published (release/acquire), which takes O(1) time. A thread that finds
 * the heap set up pays one acquire load.
 *
 * With KHEAP_DEFAULT_RESERVE (the malloc shim), the first region is
 * instead address space the port reserves at first use (zero-filled, so
 * setup is as cheap); the static array is the fallback when the port
 * cannot reserve even KHEAP_DEFAULT_SIZE bytes.
 */
#include "kh_fast.h"

static unsigned char kheap_default_memory[KHEAP_DEFAULT_SIZE]
    __attribute__((aligned(KHEAP_PAGE_SIZE)));
kheap_t *kh_default_heap;
static int default_state; /* 0 unset, 1 being set up, 2 set up */
struct kh_window kh_default_window;

/* Page tags for the first region, and the window kfree's hit path reads
 * them through (kh_fast.h). Before the heap is published: no other thread
 * makes slabs yet. Without memory for the tags the heap works, with every
 * free on the slow path. */
static void window_setup(kheap_t *h)
{
#if KH_FAST && KHEAP_PORT_CPU_LOCAL
    const struct kh_region *r0 = &h->regions[0];
    /* The first region was zeroed (BSS, or the port's reservation) and
     * nothing is allocated yet: the tags cost memory only where slabs are
     * made. */
    h->tags = kh_internal_pages(h, r0->npages * sizeof *h->tags, true);
    if (!h->tags)
        return;
    kh_default_window.start = r0->start;
    kh_default_window.tags = h->tags;
    __atomic_store_n(&kh_default_window.span, r0->span, __ATOMIC_RELEASE);
#else
    (void)h;
#endif
}

/* Make the default heap over its first region. */
static int reserve_first(kheap_t **h)
{
#if KHEAP_DEFAULT_RESERVE
    size_t got = 0;
    void *m = kheap_port_pages_reserve(KHEAP_DEFAULT_RESERVE, KHEAP_DEFAULT_SIZE, &got);
    if (m && kh_heap_create(h, m, got, true) == KHEAP_OK)
        return KHEAP_OK;
#endif
    return kh_heap_create(h, kheap_default_memory, sizeof kheap_default_memory, true);
}

kh_noinline kheap_t *kh_default_setup(void)
{
    int expect = 0;
    if (__atomic_compare_exchange_n(&default_state, &expect, 1, false,
                                    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        kheap_t *h = NULL;
        int err = reserve_first(&h);
        if (err)
            kheap_port_panic(kheap_strerror(err), kheap_default_memory);
        window_setup(h);
#if KHEAP_DEFAULT_GROW && KHEAP_PORT_PAGES
        kheap_set_growable(h, KHEAP_DEFAULT_SIZE);
#endif
        kh_vg_benign(&kh_default_heap, sizeof kh_default_heap);
        kh_vg_before(&kh_default_heap);
        __atomic_store_n(&kh_default_heap, h, __ATOMIC_RELEASE);
        __atomic_store_n(&default_state, 2, __ATOMIC_RELEASE);
        return h;
    }
    kheap_t *h;
    while (!(h = __atomic_load_n(&kh_default_heap, __ATOMIC_ACQUIRE)))
        ;
    kh_vg_after(&kh_default_heap);
    return h;
}

kheap_t *kheap_default(void)
{
    return kh_default();
}

uintptr_t kheap_heap_end(void)
{
    return (uintptr_t)(kheap_default_memory + sizeof kheap_default_memory);
}

void *kheap_default_alloc(size_t size)
{
    return kheap_alloc(kheap_default(), size);
}
void *kheap_default_alloc_aligned(size_t size, size_t align)
{
    return kheap_alloc_aligned(kheap_default(), size, align);
}
void *kheap_default_calloc(size_t n, size_t size)
{
    return kheap_calloc(kheap_default(), n, size);
}
void *kheap_default_realloc(void *ptr, size_t size)
{
    return kheap_realloc(kheap_default(), ptr, size);
}
void kheap_default_free(void *ptr)
{
    kheap_free(kheap_default(), ptr);
}
size_t kheap_default_usable_size(const void *ptr)
{
    return kheap_usable_size(kheap_default(), ptr);
}

/* After a miss: point the port's per-CPU word at this CPU's state of the
 * default heap, which the miss may have just made, so the next hit path
 * finds it. */
static void local_sync(kheap_t *h)
{
#if KHEAP_PORT_CPU_LOCAL
    unsigned cpu = kheap_port_cpu_enter();
    if (cpu != KHEAP_CPU_NONE)
        kheap_port_cpu_local_set(h->cpu[cpu]);
    kheap_port_cpu_exit(cpu);
#else
    (void)h;
#endif
}

/* Everything kh_default_alloc/kh_default_free do not do themselves,
 * including the first call, which sets the heap up. Apart so the hit
 * paths make no call and save no register. */
kh_noinline void *kh_default_alloc_slow(size_t size)
{
    kheap_t *h = kh_default();
    void *p = kheap_alloc(h, size);
    local_sync(h);
    return p;
}
kh_noinline void kh_default_free_slow(void *ptr)
{
    kheap_t *h = kh_default();
    kheap_free(h, ptr);
    local_sync(h);
}

#if KHEAP_KMALLOC_API
void *kmalloc(size_t size)
{
    return kh_default_alloc(size);
}
void *kzalloc(size_t size)
{
    return kheap_calloc(kheap_default(), 1, size);
}
void *kcalloc(size_t n, size_t size)
{
    return kheap_calloc(kheap_default(), n, size);
}
void *krealloc(void *ptr, size_t size)
{
    return kheap_realloc(kheap_default(), ptr, size);
}
void *kmalloc_aligned(size_t size, size_t align)
{
    return kheap_alloc_aligned(kheap_default(), size, align);
}
void kfree(void *ptr)
{
    kh_default_free(ptr);
}
size_t ksize(const void *ptr)
{
    return kheap_usable_size(kheap_default(), ptr);
}
#endif
