/*
 * init.c - making a heap: the top of the core's layers.
 *
 * kheap_init lays the heap structure (struct kheap) at the start of its
 * first region, enters the region and gives its pages to the page layer,
 * sets up the kmalloc classes and the internal caches (the cache of user
 * cache structures, the magazines by capacity), points every CPU slot at
 * the sentinel state and enters the heap in the registry. Only this file
 * builds a heap out of every layer; nothing below calls it.
 */
#include "kh_internal.h"

/* The window the free hit path reads (kh_fast.h): the first region and
 * its page table, which its layout placed after the descriptors (zero in
 * zeroed memory, cleared otherwise, so it costs memory only where slabs
 * are made). */
static void window_setup(kheap_t *h)
{
    const struct kh_region *r0 = &h->regions[0];
    h->window.pt = kh_region_ptags(r0);
    h->window.start = r0->start;
    h->window.span = r0->span;
}

/* Set up the heap structure at the start of [base, base+size). zeroed: the
 * memory is known to be all zero (BSS), so descriptors need no clearing;
 * shut: it is the port's reservation, inaccessible until opened
 * (KHEAP_PORT_COMMIT: kh_region_prepare). */
int kh_heap_create(kheap_t **out, void *base, size_t size, bool zeroed, bool shut)
{
    if (!out)
        return KHEAP_EINVAL;
    uintptr_t hb = kh_align_up((uintptr_t)base, KH_HEADER_ALIGN);
    struct kh_region r, *r0;
    int err = kh_region_prepare(&r, base, size, hb - (uintptr_t)base + sizeof(struct kheap),
                                true, zeroed, shut);
    if (err)
        return err;
    kheap_t *h = (kheap_t *)hb;
    __builtin_memset(h, 0, sizeof *h);
    h->magic = KH_HEAP_MAGIC;
    h->purge_slack = KHEAP_PURGE_SLACK / KH_PAGE;
    h->purge_min = KHEAP_PURGE_MIN / KH_PAGE;
    h->decay_ms = KHEAP_DECAY_MS;
    kheap_port_lock_init(&h->page_lock);
    kheap_port_lock_init(&h->caches_lock);
#if KH_GUARDS
    kheap_port_lock_init(&h->g_lock);
    /* The sampler's atomics: read on miss paths and by the fault handler
     * without the lock (guard.c says why that is safe). */
    kh_vg_benign(&h->g_every, sizeof h->g_every);
    kh_vg_benign(&h->g_left, sizeof h->g_left);
    kh_vg_benign(&h->g_end, sizeof h->g_end);
    kh_vg_benign(h->g_slot, sizeof h->g_slot);
#endif
#if KHEAP_REDZONE
    kheap_port_lock_init(&h->q_lock);
    h->q_limit = size / 8 < KHEAP_QUARANTINE_BYTES ? size / 8 : KHEAP_QUARANTINE_BYTES;
#endif
    err = kh_region_enter(h, &r, &r0); /* the first region: cannot fail */
    KH_ASSERT(!err, base);
    h->homes = KH_HOMES && size >= KHEAP_HOMES_MIN_HEAP;
    h->mags_wide = size >= KHEAP_MAG_WIDE_MIN_HEAP;
    kh_pages_add(h, r0);
    for (unsigned i = 0; i < KHEAP_NUM_CLASSES; i++) {
        _Static_assert(KHEAP_MAX_CLASS <= 9999999 && KHEAP_NAME_MAX >= 8 + 7 + 1,
                       "\"kmalloc-\" and the class size fit a cache name");
        char name[KHEAP_NAME_MAX] = "kmalloc-";
        name[8 + kh_decimal(name + 8, kh_class_size(i))] = 0;
        kh_cache_setup(h, &h->kmalloc[i], name, kh_class_size(i), 0, NULL,
                       NULL, KH_CACHE_KMALLOC);
    }
    for (unsigned i = 0; i < KHEAP_NUM_CLASSES; i++) {
        struct kheap_cache *c = &h->kmalloc[i];
        c->cls = (uint8_t)i;
        c->cc_off = (uint16_t)offsetof(struct kh_cpu, cc[KH_CC(i)]);
    }
    kh_cache_setup(h, &h->cache_cache, "kheap_cache",
                   KH_UCACHE_SIZE, KH_HEADER_ALIGN, NULL, NULL,
                   KH_CACHE_INTERNAL);
    for (unsigned t = 0; t < KH_MAG_TYPES; t++) {
        char name[KHEAP_NAME_MAX] = "kheap_magazine-";
        name[15 + kh_decimal(name + 15, (uint64_t)4 << t)] = 0;
        kh_cache_setup(h, &h->mag_cache[t], name,
                       sizeof(struct kh_mag) + ((size_t)4 << t) * sizeof(void *),
                       KH_CACHE_LINE, NULL, NULL, KH_CACHE_INTERNAL);
    }
    for (unsigned k = 0; k <= KHEAP_MAX_CPUS; k++)
        h->cpu[k] = &kh_cpu_sentinel;
    kh_vg_benign(h->cpu, sizeof h->cpu);
    kh_vg_benign(&h->region_seq, sizeof h->region_seq);
    kh_vg_benign(&h->nregions, sizeof h->nregions);
    /* Decay's atomics: read on slow paths, written once an epoch. */
    kh_vg_benign(&h->decay_next, sizeof h->decay_next);
    kh_vg_benign(&h->decay_seen, sizeof h->decay_seen);
    kh_vg_benign(&h->decay_ms, sizeof h->decay_ms);
    kh_vg_benign(&h->decay_busy, sizeof h->decay_busy);
    kh_vg_benign(&h->decay_epochs, sizeof h->decay_epochs);
    kh_vg_benign(h->order, sizeof h->order);
    /* Atomics of the KHEAP_NOLOCK, counter and shrinker words. */
    kh_vg_benign(h->deferred, sizeof h->deferred);
    kh_vg_benign(h->deferring, sizeof h->deferring);
    kh_vg_benign(&h->nolock_bad, sizeof h->nolock_bad + sizeof h->nolock_bad_kind);
    kh_vg_benign(&h->kxc, sizeof h->kxc);
    kh_vg_benign(&h->xc_early, sizeof h->xc_early);
    kh_vg_benign(&h->pressure, sizeof h->pressure);
    kh_vg_benign(&h->shrinking, sizeof h->shrinking);
    kh_vg_benign(&h->shrink_passes, sizeof h->shrink_passes);
    window_setup(h);
    kh_registry_add(h);
    if (KHEAP_SAMPLE_RATE) /* the sampler is best effort: no pool, no sampling */
        (void)kheap_set_sample(h, KHEAP_SAMPLE_RATE);
#if KH_GUARDS && KHEAP_REDZONE
    (void)kh_guard_pool(h); /* for zero-size blocks that fault; best effort too */
#endif
    *out = h;
    return KHEAP_OK;
}

int kheap_init(kheap_t **heap, void *base, size_t size)
{
    return kh_heap_create(heap, base, size, false, false);
}
