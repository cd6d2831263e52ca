/*
 * kmalloc.c - sizes to caches, large blocks, and the byte accounting.
 *
 * Size classes (KHEAP_NUM_CLASSES of them): 16 to 64 in steps of 8, then 8
 * classes per doubling up to KHEAP_MAX_CLASS (72..128 by 8, 144..256 by 16,
 * ..., 18432..32768 by 2048). With 8 steps per doubling a request just
 * above a class boundary wastes under 1/9 of its block: at most 12.5% from
 * 64 bytes up (docs/SIZE_CLASSES.md lists every class). Each class is a
 * kheap_cache inside the heap structure; the size -> class map is a few
 * shifts, no table and no search.
 *
 * Larger requests are large blocks: a page run of their own, found in O(1)
 * by the page layer; over-aligned ones are cut out of a longer run.
 *
 * A pointer is mapped to its block in O(1): region (binary search over at
 * most KHEAP_MAX_REGIONS), page descriptor (index), slab head (offset in
 * the descriptor), object index (one division). Nothing is stored in front
 * of an object.
 */
#include "kh_internal.h"

_Static_assert(KHEAP_NUM_CLASSES == 7 + 8 * 9, "class count");

unsigned kh_class_of(size_t n)
{
    if (n <= 64)
        return n <= 16 ? 0 : (unsigned)((n + 7) >> 3) - 2;
    unsigned f = kh_log2(n - 1);
    return 7 + ((f - 6) << 3) + (unsigned)(((n - 1) >> (f - 3)) & 7);
}

size_t kh_class_size(unsigned i)
{
    if (i < 7)
        return 16 + 8 * (size_t)i;
    unsigned k = (i - 7) / 8, j = (i - 7) % 8;
    return ((size_t)64 << k) + (size_t)(j + 1) * ((size_t)8 << k);
}

/* ------------------------------------------------------------------ */
/* Accounting (stats_lock). */

static void note_peak(kheap_t *h)
{
    if (h->used_bytes > h->peak_bytes)
        h->peak_bytes = h->used_bytes;
}

void kh_account_alloc(kheap_t *h, size_t bytes, size_t count)
{
    kh_lock(&h->stats_lock);
    h->allocated_bytes += bytes;
    h->used_bytes += bytes;
    h->allocation_count += count;
    note_peak(h);
    kh_unlock(&h->stats_lock);
}

void kh_account_free(kheap_t *h, size_t bytes, size_t count)
{
    kh_lock(&h->stats_lock);
    h->freed_bytes += bytes;
    h->used_bytes -= bytes;
    h->free_count += count;
    kh_unlock(&h->stats_lock);
}

void kh_account_internal(kheap_t *h, size_t bytes, bool add)
{
    kh_lock(&h->stats_lock);
    if (add)
        h->internal_bytes += bytes;
    else
        h->internal_bytes -= bytes;
    kh_unlock(&h->stats_lock);
}

void kh_account_failure(kheap_t *h)
{
    kh_lock(&h->stats_lock);
    h->failed_count++;
    kh_unlock(&h->stats_lock);
}

static void account_resize(kheap_t *h, size_t old, size_t new_size)
{
    kh_lock(&h->stats_lock);
    if (new_size > old) {
        h->allocated_bytes += new_size - old;
        h->used_bytes += new_size - old;
        note_peak(h);
    } else {
        h->freed_bytes += old - new_size;
        h->used_bytes -= old - new_size;
    }
    kh_unlock(&h->stats_lock);
}

/* ------------------------------------------------------------------ */
/* Reports. */

const char *kh_report_reason(enum kheap_report_kind kind)
{
    switch (kind) {
    case KHEAP_REPORT_FOREIGN:
        return "pointer is not in any region of this heap";
    case KHEAP_REPORT_INTERIOR:
        return "pointer is inside a block, not at its start";
    case KHEAP_REPORT_FREE_RUN:
        return "pointer is inside a free page run (double free of a large "
               "block, or a stale pointer)";
    case KHEAP_REPORT_DOUBLE_FREE:
        return "object is already free in its slab (double free)";
    case KHEAP_REPORT_WRONG_CACHE:
        return "object does not belong to this cache";
    case KHEAP_REPORT_CORRUPTION:
        return "freed object was written to after free (poison overwritten)";
    case KHEAP_REPORT_BUSY:
        return "cache destroyed while objects are still allocated";
    }
    return "unknown problem";
}

void kh_report(enum kheap_report_kind kind, const void *addr,
               const struct kheap_cache *c, const char *function)
{
    struct kheap_report r = {
        .kind = kind,
        .reason = kh_report_reason(kind),
        .addr = addr,
        .cache = c ? c->name : NULL,
        .function = function,
    };
    kheap_port_report(&r);
}

#if KHEAP_DEBUG >= 3
void kh_debug_check(kheap_t *h, const char *function)
{
    const void *addr = NULL;
    const char *msg = kheap_check(h, &addr);
    (void)function;
    if (msg)
        kheap_port_panic(msg, addr);
}
#endif

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
        return d - d->npages;
    case KH_PG_LARGE:
        if (!(p & KH_PAGE_MASK))
            return d;
        *why = KHEAP_REPORT_INTERIOR;
        return NULL;
    default:
        kh_lock(&h->page_lock);
        *why = kh_diagnose(h, d, p);
        kh_unlock(&h->page_lock);
        return NULL;
    }
}

/* ------------------------------------------------------------------ */
/* Allocation. */

static void *cache_alloc(struct kheap_cache *c, kheap_t *h)
{
    void *p;
    if (kh_unlikely(kh_cache_take(c, &p, 1) == 0)) {
        kh_account_failure(h);
        return NULL;
    }
    return p;
}

static void *large_alloc(kheap_t *h, size_t size, size_t align)
{
    if (size > SIZE_MAX - KH_PAGE) {
        kh_account_failure(h);
        return NULL;
    }
    size_t npages = size ? (size + KH_PAGE - 1) / KH_PAGE : 1;
    kh_lock(&h->page_lock);
    struct kh_page *d = kh_run_alloc(h, npages, align, KH_PG_LARGE);
    void *p = d ? (void *)kh_page_addr(h, d) : NULL;
    if (p)
        kh_account_alloc(h, npages * KH_PAGE, 1);
    kh_unlock(&h->page_lock);
    if (!p) {
        kh_account_failure(h);
        return NULL;
    }
    kh_vg_alloc(p, npages * KH_PAGE, 0);
    return p;
}

void *kheap_alloc(kheap_t *h, size_t size)
{
    void *p = size <= KHEAP_MAX_CLASS ? cache_alloc(&h->kmalloc[kh_class_of(size)], h)
                                      : large_alloc(h, size, KH_PAGE);
    kh_debug_check(h, "kheap_alloc");
    return p;
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
    if (align <= KH_PAGE && size <= KHEAP_MAX_CLASS) {
        /* The smallest class at or above size whose size is a multiple of
         * align: its objects are aligned to align (slabs start on a page
         * boundary). At most 8 steps: the next power of two is one. */
        unsigned cls = kh_class_of(size > align ? size : align);
        while (kh_class_size(cls) & (align - 1))
            cls++;
        p = cache_alloc(&h->kmalloc[cls], h);
    } else {
        p = large_alloc(h, size, align > KH_PAGE ? align : KH_PAGE);
    }
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

/* Free the block whose head is d; ptr is its address as the caller gave
 * it. Returns 0 or the reason it was refused. */
static enum kheap_report_kind block_free(kheap_t *h, struct kh_page *d, void *ptr,
                                         const struct kheap_cache **who)
{
    if (d->kind == KH_PG_SLAB) {
        struct kheap_cache *c = d->cache;
        *who = c;
        if (c->flags & KH_CACHE_INTERNAL)
            return KHEAP_REPORT_WRONG_CACHE;
        return kh_cache_give(c, ptr, d);
    }
    enum kheap_report_kind bad = 0;
    kh_lock(&h->page_lock);
    if (d->kind == KH_PG_LARGE) {
        kh_account_free(h, (size_t)d->npages * KH_PAGE, 1);
        kh_vg_free(ptr);
        kh_run_free(h, d);
    } else {
        /* Freed by another thread since block_of looked. */
        bad = kh_diagnose(h, d, (uintptr_t)ptr);
    }
    kh_unlock(&h->page_lock);
    return bad;
}

void kheap_free(kheap_t *h, void *ptr)
{
    if (!ptr)
        return;
    enum kheap_report_kind why = 0;
    const struct kheap_cache *who = NULL;
    struct kh_page *d = block_of(h, ptr, &why);
    if (d)
        why = block_free(h, d, ptr, &who);
    if (why)
        kh_report(why, ptr, who, "kheap_free");
    kh_debug_check(h, "kheap_free");
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
    uintptr_t base = kh_slab_base(h, d), off = (uintptr_t)ptr - base;
    if (off % c->slot || off / c->slot >= c->objs) {
        *why = KHEAP_REPORT_INTERIOR;
        return 0;
    }
    /* The bitmap word is shared with the slab's other objects: read it
     * under the cache's lock. */
    kh_lock(&c->lock);
    bool live = d->kind == KH_PG_SLAB && d->cache == c &&
                off / c->slot < d->carved && kh_slab_obj_allocated(c, d, base, off / c->slot);
    kh_unlock(&c->lock);
    if (!live) {
        *why = KHEAP_REPORT_DOUBLE_FREE;
        return 0;
    }
    return c->size;
}

size_t kheap_usable_size(kheap_t *h, const void *ptr)
{
    if (!ptr)
        return 0;
    struct kh_page *d;
    enum kheap_report_kind why = 0;
    size_t n = block_size(h, ptr, &d, &why);
    if (!n)
        kh_report(why, ptr, NULL, "kheap_usable_size");
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
    struct kh_page *d;
    enum kheap_report_kind why = 0;
    size_t old = block_size(h, ptr, &d, &why);
    if (!old) {
        kh_report(why, ptr, NULL, "kheap_realloc");
        return NULL;
    }
    if (d->kind == KH_PG_SLAB) {
        if (size <= old && (size >= old / 2 || old <= 2 * KH_MIN_SLOT))
            return ptr;
    } else if (size <= SIZE_MAX - KH_PAGE) {
        size_t npages = (size + KH_PAGE - 1) / KH_PAGE;
        kh_lock(&h->page_lock);
        bool ok = d->kind == KH_PG_LARGE && kh_large_resize(h, d, npages);
        if (ok)
            account_resize(h, old, npages * KH_PAGE);
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
    void *p = cache_alloc(c, c->heap);
    kh_debug_check(c->heap, "kheap_cache_alloc");
    return p;
}

void kheap_cache_free(kheap_cache_t *c, void *ptr)
{
    if (!ptr)
        return;
    kheap_t *h = c->heap;
    enum kheap_report_kind why = 0;
    const struct kheap_cache *who = c;
    struct kh_page *d = block_of(h, ptr, &why);
    if (d && (d->kind != KH_PG_SLAB || d->cache != c))
        why = KHEAP_REPORT_WRONG_CACHE;
    else if (d)
        why = block_free(h, d, ptr, &who);
    if (why)
        kh_report(why, ptr, c, "kheap_cache_free");
    kh_debug_check(h, "kheap_cache_free");
}
