/*
 * cache.c - object caches: creation, shrinking, destruction, slabinfo.
 *
 * An object cache (Bonwick's kmem_cache) is a size, an alignment, an
 * optional constructor/destructor pair and the slabs holding its objects
 * (slab.c). The kmalloc size classes are caches built into the heap
 * structure; caches made with kheap_cache_create have their structure
 * allocated from the internal cache "kheap_cache", whose bytes count as
 * metadata. User caches are kept, in creation order, on the heap's list
 * under caches_lock, for slabinfo, reclaim and kheap_check.
 *
 * Allocation and free of objects are in kmalloc.c, next to the kmalloc
 * paths they share.
 */
#include "kh_internal.h"

kheap_cache_t *kheap_cache_create(kheap_t *h, const char *name, size_t size,
                                  size_t align, kheap_ctor_fn ctor,
                                  kheap_ctor_fn dtor)
{
    if (!h || size == 0 || size > KHEAP_MAX_CLASS ||
        (align && (!kh_is_pow2(align) || align > KH_PAGE)))
        return NULL;
    struct kheap_cache *c;
    if (kh_cache_take(&h->cache_cache, (void **)&c, 1) == 0) {
        kh_account_failure(h);
        return NULL;
    }
    kh_cache_setup(h, c, name, size, align, ctor, dtor, 0);

    kh_lock(&h->caches_lock);
    c->prev = h->caches_tail;
    c->next = NULL;
    if (h->caches_tail)
        h->caches_tail->next = c;
    else
        h->caches = c;
    h->caches_tail = c;
    h->ncaches++;
    kh_unlock(&h->caches_lock);
    return c;
}

size_t kheap_cache_shrink(kheap_cache_t *c)
{
    size_t bytes = kh_cache_release(c, 0);
    kh_debug_check(c->heap, "kheap_cache_shrink");
    return bytes;
}

int kheap_cache_destroy(kheap_cache_t *c)
{
    if (!c || c->magic != KH_CACHE_MAGIC)
        return KHEAP_EINVAL;
    if (c->flags & (KH_CACHE_KMALLOC | KH_CACHE_INTERNAL))
        return KHEAP_EINVAL;
    kheap_t *h = c->heap;
    kh_lock(&h->caches_lock);
    kh_lock(&c->lock);
    size_t live = c->active_objs;
    if (!live) {
        if (c->prev)
            c->prev->next = c->next;
        else
            h->caches = c->next;
        if (c->next)
            c->next->prev = c->prev;
        else
            h->caches_tail = c->prev;
        h->ncaches--;
    }
    kh_unlock(&c->lock);
    kh_unlock(&h->caches_lock);
    if (live) {
        kh_report(KHEAP_REPORT_BUSY, c, c, "kheap_cache_destroy");
        return KHEAP_EBUSY;
    }
    /* No slab is partial or full (no object is allocated): all are empty. */
    kh_cache_release(c, 0);
    c->magic = 0;
    struct kh_page *s = kh_page_of(h, (uintptr_t)c);
    if (s->kind == KH_PG_SLAB_PART)
        s -= s->npages;
    enum kheap_report_kind bad = kh_cache_give(&h->cache_cache, c, s);
    KH_ASSERT(!bad, c);
    (void)bad;
    kh_debug_check(h, "kheap_cache_destroy");
    return KHEAP_OK;
}

size_t kheap_reclaim(kheap_t *h)
{
    size_t bytes = 0;
    for (unsigned i = 0; i < KHEAP_NUM_CLASSES; i++)
        bytes += kh_cache_release(&h->kmalloc[i], 0);
    kh_lock(&h->caches_lock);
    for (struct kheap_cache *c = h->caches; c; c = c->next)
        bytes += kh_cache_release(c, 0);
    kh_unlock(&h->caches_lock);
    bytes += kh_cache_release(&h->cache_cache, 0);
    kh_debug_check(h, "kheap_reclaim");
    return bytes;
}

void kheap_cache_info(kheap_cache_t *c, struct kheap_cache_info *out)
{
    __builtin_memcpy(out->name, c->name, KHEAP_NAME_MAX);
    out->objsize = c->size;
    out->objperslab = c->objs;
    out->pagesperslab = c->pages;
    kh_lock(&c->lock);
    out->active_objs = c->active_objs;
    out->num_slabs = c->nr_partial + c->nr_empty + c->nr_full;
    out->active_slabs = c->nr_partial + c->nr_full;
    out->allocs = c->allocs;
    out->frees = c->frees;
    kh_unlock(&c->lock);
    out->num_objs = out->num_slabs * c->objs;
}

size_t kheap_slabinfo(kheap_t *h, struct kheap_cache_info *rows, size_t max)
{
    size_t n = 0;
    for (unsigned i = 0; i < KHEAP_NUM_CLASSES; i++, n++)
        if (n < max)
            kheap_cache_info(&h->kmalloc[i], &rows[n]);
    kh_lock(&h->caches_lock);
    for (struct kheap_cache *c = h->caches; c; c = c->next, n++)
        if (n < max)
            kheap_cache_info(c, &rows[n]);
    kh_unlock(&h->caches_lock);
    if (n < max)
        kheap_cache_info(&h->cache_cache, &rows[n]);
    return n + 1;
}
