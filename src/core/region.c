/*
 * region.c - regions: the memory a heap is given, and pointer -> page.
 *
 * A region [base, base+size) is laid out as
 *   [struct kheap (first region only)] [page descriptors] [pad] [pages]
 * with the descriptor array cache-line aligned and the pages page-aligned.
 * Everything before the first page counts as metadata:
 *   meta_bytes + npages * KHEAP_PAGE_SIZE == size.
 * The heap keeps up to KHEAP_MAX_REGIONS regions in a table that only
 * grows (a region is never removed), plus order[], the table's indices
 * sorted by address. Finding the region of an address is a binary search
 * over order[]: O(log KHEAP_MAX_REGIONS), a constant; finding the page
 * descriptor is then one subtraction and shift. No per-object header.
 *
 * Locking: the table and order[] are written under page_lock. Lookups
 * (every free) read them without a lock, as a sequence lock: the writer
 * makes region_seq odd, rewrites order[], makes it even again. A lookup
 * that finds a region is right whatever the writer did, because a
 * published region's fields never change and the hit is checked against
 * them; a lookup that misses retries if region_seq moved.
 */
#include "kh_fast.h"

#define KH_HEADER_ALIGN 64u

_Static_assert(KHEAP_MIN_REGION_SIZE >= sizeof(struct kheap) +
                                            KH_HEADER_ALIGN + KH_PAGE +
                                            8 * (KH_PAGE + sizeof(struct kh_page)),
               "KHEAP_MIN_REGION_SIZE cannot hold the heap and 8 pages");
_Static_assert(KHEAP_MIN_ADD_REGION_SIZE >= KH_HEADER_ALIGN + KH_PAGE +
                                                KH_PAGE + sizeof(struct kh_page),
               "KHEAP_MIN_ADD_REGION_SIZE cannot hold one page");
_Static_assert(KHEAP_MAX_REGIONS <= 255, "region index is a uint8_t");

#define KH_STR2(x) #x
#define KH_STR(x) KH_STR2(x)

const char *kheap_strerror(int err)
{
    switch (err) {
    case KHEAP_OK:
        return "success";
    case KHEAP_EINVAL:
        return "invalid argument: a NULL pointer, or a bad size or alignment";
    case KHEAP_ETOOSMALL:
        return "region too small: the first region needs at least " KH_STR(
            KHEAP_MIN_REGION_SIZE) " bytes (KHEAP_MIN_REGION_SIZE), an added "
                                   "region at least " KH_STR(
                                       KHEAP_MIN_ADD_REGION_SIZE) " bytes";
    case KHEAP_ERANGE:
        return "region wraps around the end of the address space";
    case KHEAP_EOVERLAP:
        return "region overlaps a region the heap already has";
    case KHEAP_ETOOMANY:
        return "heap already has KHEAP_MAX_REGIONS (" KH_STR(
            KHEAP_MAX_REGIONS) ") regions";
    case KHEAP_EBUSY:
        return "cache still has allocated objects";
    case KHEAP_ENOSYS:
        return "the port supplies no pages (built with KHEAP_PORT_PAGES 0)";
    default:
        return "unknown kheap error";
    }
}

static int check_range(const void *base, size_t size)
{
    if (!base)
        return KHEAP_EINVAL;
    if ((uintptr_t)base + size < (uintptr_t)base)
        return KHEAP_ERANGE;
    return KHEAP_OK;
}

/* Publish region idx in order[] (page_lock held). */
static void publish(kheap_t *h, unsigned idx)
{
    unsigned n = h->nregions, pos = n;
    /* Odd: a read-modify-write with acquire order, so none of the stores
     * below can be seen before it. */
    __atomic_fetch_add(&h->region_seq, 1, __ATOMIC_ACQ_REL);
    while (pos > 0 && h->regions[h->order[pos - 1]].start > h->regions[idx].start) {
        __atomic_store_n(&h->order[pos], h->order[pos - 1], __ATOMIC_RELEASE);
        pos--;
    }
    __atomic_store_n(&h->order[pos], (uint8_t)idx, __ATOMIC_RELEASE);
    __atomic_store_n(&h->nregions, n + 1, __ATOMIC_RELEASE);
    __atomic_store_n(&h->region_seq, h->region_seq + 1, __ATOMIC_RELEASE);
}

/*
 * Lay out a region over [base, base+size) whose first `skip` bytes are
 * taken (the heap structure): fill *r and clear its descriptors unless
 * the memory is known to be zero. Touches only the new memory, so it runs
 * without a lock.
 */
static int region_layout(struct kh_region *r, uintptr_t base, size_t size, size_t skip,
                         bool zeroed)
{
    uintptr_t end = base + size;
    uintptr_t descs = kh_align_up(base + skip, KH_HEADER_ALIGN);
    if (descs >= end)
        return KHEAP_ETOOSMALL;
    size_t n = (end - descs) / (KH_PAGE + sizeof(struct kh_page));
    if (n > UINT32_MAX)
        n = UINT32_MAX;
    while (n > 0 &&
           kh_align_up(descs + n * sizeof(struct kh_page), KH_PAGE) + n * KH_PAGE > end)
        n--;
    if (n == 0)
        return KHEAP_ETOOSMALL;
    r->base = base;
    r->size = size;
    r->pages = (struct kh_page *)descs;
    r->start = kh_align_up(descs + n * sizeof(struct kh_page), KH_PAGE);
    r->npages = n;
    r->end = r->start + n * KH_PAGE;
    r->span = n * KH_PAGE;
    r->meta_bytes = size - n * KH_PAGE;
    r->grown = false;
    if (!zeroed)
        __builtin_memset(r->pages, 0, n * sizeof(struct kh_page));
    return KHEAP_OK;
}

/* Enter a laid-out region in the heap and give its pages to the page
 * layer. page_lock held (or the heap not yet shared). */
/* Can [base, base+size) join the heap? page_lock held. O(regions). */
static int admissible(const kheap_t *h, uintptr_t base, size_t size)
{
    for (unsigned i = 0; i < h->nregions; i++) {
        const struct kh_region *o = &h->regions[i];
        if (base < o->base + o->size && o->base < base + size)
            return KHEAP_EOVERLAP;
    }
    return h->nregions >= KHEAP_MAX_REGIONS ? KHEAP_ETOOMANY : KHEAP_OK;
}

static int region_enter(kheap_t *h, const struct kh_region *r)
{
    int err = admissible(h, r->base, r->size);
    if (err)
        return err;
    unsigned idx = h->nregions;
    h->regions[idx] = *r;
    publish(h, idx);
    h->total_bytes += r->size;
    h->region_meta += r->meta_bytes;
    kh_run_mark(h, &h->regions[idx], 0, r->npages, KH_PG_FREE);
    kh_bins_insert(h, &h->regions[idx].pages[0]);
    h->free_pages += r->npages;
    return KHEAP_OK;
}

/* Add memory from the port's page hook (page_lock held). */
int kh_region_add(kheap_t *h, uintptr_t base, size_t size, bool zeroed,
                  bool grown)
{
    struct kh_region r;
    int err = region_layout(&r, base, size, 0, zeroed);
    r.grown = grown;
    return err ? err : region_enter(h, &r);
}

int kheap_add_region(kheap_t *h, void *base, size_t size)
{
    int err = check_range(base, size);
    if (!h)
        return KHEAP_EINVAL;
    if (err)
        return err;
    if (size < KHEAP_MIN_ADD_REGION_SIZE)
        return KHEAP_ETOOSMALL;
    /* Refuse an overlap before writing anything into the memory. */
    kh_lock(&h->page_lock);
    err = admissible(h, (uintptr_t)base, size);
    kh_unlock(&h->page_lock);
    if (err)
        return err;
    struct kh_region r;
    err = region_layout(&r, (uintptr_t)base, size, 0, false);
    if (err)
        return err;
    kh_lock(&h->page_lock);
    err = region_enter(h, &r);
    kh_unlock(&h->page_lock);
    return err;
}

/* Set up the heap structure at the start of [base, base+size). zeroed: the
 * memory is known to be all zero (BSS), so descriptors need no clearing. */
int kh_heap_create(kheap_t **out, void *base, size_t size, bool zeroed)
{
    int err = check_range(base, size);
    if (!out)
        return KHEAP_EINVAL;
    if (err)
        return err;
    if (size < KHEAP_MIN_REGION_SIZE)
        return KHEAP_ETOOSMALL;
    uintptr_t hb = kh_align_up((uintptr_t)base, KH_HEADER_ALIGN);
    kheap_t *h = (kheap_t *)hb;
    __builtin_memset(h, 0, sizeof *h);
    h->magic = KH_HEAP_MAGIC;
    h->purge_slack = KHEAP_PURGE_SLACK / KH_PAGE;
    h->purge_min = KHEAP_PURGE_MIN / KH_PAGE;
    kheap_port_lock_init(&h->page_lock);
    kheap_port_lock_init(&h->caches_lock);
    struct kh_region r;
    err = region_layout(&r, (uintptr_t)base, size, hb - (uintptr_t)base + sizeof *h, zeroed);
    if (!err)
        err = region_enter(h, &r);
    if (err) {
        h->magic = 0;
        return err;
    }
    for (unsigned i = 0; i < KHEAP_NUM_CLASSES; i++) {
        char name[KHEAP_NAME_MAX] = "kmalloc-";
        size_t sz = kh_class_size(i), len = 8;
        char digits[12];
        unsigned nd = 0;
        do {
            digits[nd++] = (char)('0' + sz % 10);
            sz /= 10;
        } while (sz);
        while (nd)
            name[len++] = digits[--nd];
        name[len] = 0;
        kh_cache_setup(h, &h->kmalloc[i], name, kh_class_size(i), 0, NULL,
                       NULL, KH_CACHE_KMALLOC);
    }
    for (unsigned i = 0; i < KHEAP_NUM_CLASSES; i++) {
        h->kmalloc[i].cls = (uint8_t)i;
        if (h->kmalloc[i].pages == 1)
            h->kmalloc[i].cc_off = (uint16_t)offsetof(struct kh_cpu, cc[KH_CC(i)]);
    }
    kh_cache_setup(h, &h->cache_cache, "kheap_cache",
                   sizeof(struct kheap_cache), KH_HEADER_ALIGN, NULL, NULL,
                   KH_CACHE_INTERNAL);
    static const char *const mag_names[KH_MAG_TYPES] = {
        "kheap_magazine-4", "kheap_magazine-8", "kheap_magazine-16",
        "kheap_magazine-32", "kheap_magazine-64"};
    for (unsigned t = 0; t < KH_MAG_TYPES; t++)
        kh_cache_setup(h, &h->mag_cache[t], mag_names[t],
                       sizeof(struct kh_mag) + ((size_t)4 << t) * sizeof(void *),
                       KH_CACHE_LINE, NULL, NULL, KH_CACHE_INTERNAL);
    for (unsigned k = 0; k <= KHEAP_MAX_CPUS; k++)
        h->cpu[k] = &kh_cpu_sentinel;
    kh_vg_benign(h->cpu, sizeof h->cpu);
    kh_vg_benign(&h->region_seq, sizeof h->region_seq);
    kh_vg_benign(&h->nregions, sizeof h->nregions);
    kh_vg_benign(h->order, sizeof h->order);
    kh_registry_add(h);
    *out = h;
    return KHEAP_OK;
}

int kheap_init(kheap_t **heap, void *base, size_t size)
{
    return kh_heap_create(heap, base, size, false);
}

struct kh_region *kh_region_of(kheap_t *h, uintptr_t addr)
{
    for (;;) {
        unsigned seq = __atomic_load_n(&h->region_seq, __ATOMIC_ACQUIRE);
        unsigned lo = 0, hi = __atomic_load_n(&h->nregions, __ATOMIC_ACQUIRE);
        while (lo < hi) {
            unsigned mid = (lo + hi) / 2;
            unsigned idx = __atomic_load_n(&h->order[mid], __ATOMIC_ACQUIRE);
            struct kh_region *r = &h->regions[idx];
            if (addr < r->start)
                hi = mid;
            else if (addr >= r->end)
                lo = mid + 1;
            else
                return r;
        }
        /* The loads above were acquire loads, so this one cannot be
         * satisfied before them. */
        if (!(seq & 1) && __atomic_load_n(&h->region_seq, __ATOMIC_ACQUIRE) == seq)
            return NULL;
    }
}

uintptr_t kheap_end(const kheap_t *h)
{
    uintptr_t end = 0;
    unsigned n = __atomic_load_n(&h->nregions, __ATOMIC_ACQUIRE);
    for (unsigned i = 0; i < n; i++) {
        uintptr_t e = h->regions[i].base + h->regions[i].size;
        if (e > end)
            end = e;
    }
    return end;
}

int kheap_set_growable(kheap_t *h, size_t grow_bytes)
{
    if (!h)
        return KHEAP_EINVAL;
#if KHEAP_PORT_PAGES
    kh_lock(&h->page_lock);
    h->grow_bytes = kh_align_up(grow_bytes, KH_PAGE);
    kh_unlock(&h->page_lock);
    return KHEAP_OK;
#else
    (void)grow_bytes;
    return KHEAP_ENOSYS;
#endif
}
