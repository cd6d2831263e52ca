/*
 * default.c - the default heap: a static array, set up on first use.
 *
 * kheap_default_memory is the seed's HEAP_MEMORY: KHEAP_DEFAULT_SIZE bytes
 * in BSS (8 MiB unless the build says otherwise), so the heap's end is
 * known before the heap is first used (kheap_default_end, the seed's
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
 *
 * kmalloc and kfree run the same hit paths as every heap (kh_fast.h),
 * with the default heap's window copied into kh_default_window and, where
 * the port has a per-CPU word, the CPU's state read from it. Their misses
 * come here and go straight to kmalloc.c's slow paths.
 */
#include "kh_internal.h"
#include "kh_fast.h"

static unsigned char kheap_default_memory[KHEAP_DEFAULT_SIZE]
    __attribute__((aligned(KHEAP_PAGE_SIZE)));
static kheap_t *default_heap;
static int default_state; /* 0 unset, 1 being set up, 2 set up */

/* The hit paths' view of the default heap (kh_fast.h): a copy of its
 * window, published once set up (span last), and, for a port without a
 * per-CPU word, its CPU states: the sentinel's until then, so the first
 * calls miss and come here. */
struct kh_window kh_default_window;
#if !KHEAP_PORT_CPU_LOCAL
static struct kh_cpu *const no_cpus[KHEAP_MAX_CPUS + 1] = {
    [0 ... KHEAP_MAX_CPUS] = &kh_cpu_sentinel};
struct kh_cpu *const *kh_default_cpus = no_cpus;
#endif

/* Before the heap is published, by the thread that set it up. */
static void publish_window(kheap_t *h)
{
    kh_default_window.start = h->window.start;
    kh_default_window.pt = h->window.pt;
    __atomic_store_n(&kh_default_window.span, h->window.span, __ATOMIC_RELEASE);
#if !KHEAP_PORT_CPU_LOCAL
    __atomic_store_n(&kh_default_cpus, (struct kh_cpu *const *)h->cpu, __ATOMIC_RELEASE);
#endif
}

/* Make the default heap over its first region. */
static int reserve_first(kheap_t **h)
{
#if KHEAP_DEFAULT_RESERVE
    size_t got = 0;
    void *m = kheap_port_pages_reserve(KHEAP_DEFAULT_RESERVE, KHEAP_DEFAULT_SIZE, &got);
    if (m && kh_heap_create(h, m, got, true, KHEAP_PORT_COMMIT) == KHEAP_OK)
        return KHEAP_OK;
#endif
    return kh_heap_create(h, kheap_default_memory, sizeof kheap_default_memory, true, false);
}

/* First use: one caller sets the heap up, the others wait for it. */
static kh_noinline kheap_t *setup(void)
{
    int expect = 0;
    if (__atomic_compare_exchange_n(&default_state, &expect, 1, false,
                                    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        kheap_t *h = NULL;
        int err = reserve_first(&h);
        if (err)
            kheap_port_panic(kheap_strerror(err), kheap_default_memory);
        publish_window(h);
#if KHEAP_DEFAULT_GROW && KHEAP_PORT_PAGES
        kheap_set_growable(h, KHEAP_DEFAULT_SIZE);
#endif
        kh_vg_benign(&default_heap, sizeof default_heap);
        kh_vg_before(&default_heap);
        __atomic_store_n(&default_heap, h, __ATOMIC_RELEASE);
        __atomic_store_n(&default_state, 2, __ATOMIC_RELEASE);
        return h;
    }
    kheap_t *h;
    while (!(h = __atomic_load_n(&default_heap, __ATOMIC_ACQUIRE)))
        ;
    kh_vg_after(&default_heap);
    return h;
}

kheap_t *kheap_default(void)
{
    kheap_t *h = __atomic_load_n(&default_heap, __ATOMIC_ACQUIRE);
    if (kh_likely(h != NULL)) {
        kh_vg_after(&default_heap);
        return h;
    }
    return setup();
}

uintptr_t kheap_default_end(void)
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
 * finds it. The CPU is the one the hit paths see (enter_fast): a CPU the
 * port only lent for the slow path (hosted: a lent slot) must not stay in
 * the word after the slow path gave it back. Where the port's own
 * commits reach the state (KHEAP_PORT_CPU_TX_HEADER), the hit paths use
 * no enter_fast: the word is looked at (one load when it is set, the
 * usual case) and set between enter and exit, and the port never shows
 * the hit paths a lent slot. */
static void local_sync(kheap_t *h)
{
#if KHEAP_PORT_CPU_LOCAL && defined(KHEAP_PORT_CPU_TX_HEADER)
    if (kh_likely(kheap_port_cpu_local() != &kh_cpu_sentinel))
        return;
    unsigned cpu = kheap_port_cpu_enter();
    if (cpu != KHEAP_CPU_NONE)
        kheap_port_cpu_local_set(cpu, h->cpu[cpu]);
    kheap_port_cpu_exit(cpu);
#elif KHEAP_PORT_CPU_LOCAL
    unsigned cpu = kheap_port_cpu_enter_fast();
    if (cpu != KHEAP_CPU_NONE)
        kheap_port_cpu_local_set(cpu, h->cpu[cpu]);
    kheap_port_cpu_exit_fast(cpu);
#else
    (void)h;
#endif
}

kh_noinline void *kh_default_alloc_slow(size_t size)
{
    kheap_t *h = kheap_default();
    void *p = kh_alloc_slow(h, size);
    local_sync(h);
    return p;
}
kh_noinline void kh_default_free_slow(void *ptr)
{
    kheap_t *h = kheap_default();
    kh_free_slow(h, ptr);
    local_sync(h);
}
#if KH_RUNS && defined(KHEAP_PORT_CPU_TX_HEADER)
kh_noinline void kh_default_free_run(void *ptr)
{
    int r = kh_tx_run_free(&kh_default_window, ptr);
    if (r == KH_TX_HIT)
        return;
    if (r == KH_TX_MISS) {
        kh_default_free_slow(ptr);
        return;
    }
    kheap_t *h = kheap_default();
    kh_free_large_taken(h, ptr);
    local_sync(h);
}
#endif
kh_noinline void kh_default_free_sized_slow(void *ptr, size_t size, size_t align, unsigned kind)
{
    kheap_t *h = kheap_default();
    kh_free_sized_slow(h, ptr, size, align, (enum kheap_block_kind)kind);
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
