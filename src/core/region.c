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
#include "kh_internal.h"


/* Pages a first region of KHEAP_MIN_REGION_SIZE holds at least wherever
 * it starts (the worst start loses KH_HEADER_ALIGN and KH_PAGE bytes to
 * alignment), and when it starts on a page boundary. The small-system
 * profile's 4 KiB region (32-bit) has 2 and 3: 3 pages hold a slab of any
 * of its classes (the largest slabs, of the 384 and 768-byte classes,
 * are 3 pages) or a large block of up to 1.5 KiB. */
#define KH_MIN_REGION_PAGES (KHEAP_PROFILE_SMALL ? 2u : 8u)
#define KH_MIN_ALIGNED_PAGES (KHEAP_PROFILE_SMALL ? 3u : 8u)
#define KH_FIRST_PER_PAGE (sizeof(struct kh_page) + sizeof(struct kh_ptag))
_Static_assert(KHEAP_MIN_REGION_SIZE >= sizeof(struct kheap) + KH_HEADER_ALIGN + KH_PAGE +
                                            KH_MIN_REGION_PAGES * (KH_PAGE + KH_FIRST_PER_PAGE),
               "KHEAP_MIN_REGION_SIZE cannot hold the heap and its minimum of pages");
#define KH_ROUND_UP(x, a) (((x) + (a) - 1) / (a) * (a))
_Static_assert(KHEAP_MIN_REGION_SIZE >=
                   KH_ROUND_UP(KH_ROUND_UP(sizeof(struct kheap), KH_HEADER_ALIGN) +
                                   KH_MIN_ALIGNED_PAGES * KH_FIRST_PER_PAGE,
                               KH_PAGE) +
                       KH_MIN_ALIGNED_PAGES * KH_PAGE,
               "KHEAP_MIN_REGION_SIZE at a page boundary cannot hold the heap and its pages");
_Static_assert(KHEAP_MIN_ADD_REGION_SIZE >= KH_HEADER_ALIGN + KH_PAGE +
                                                KH_PAGE + sizeof(struct kh_page),
               "KHEAP_MIN_ADD_REGION_SIZE cannot hold one page");
_Static_assert(KHEAP_MAX_REGIONS <= 255, "region index is a uint8_t");

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
 * the memory is known to be zero. With tags (the first region), the page
 * table (a struct kh_ptag per page) follows the descriptors:
 * kh_region_ptags. Touches only the new memory, so it runs without a
 * lock.
 */
static int region_layout(struct kh_region *r, uintptr_t base, size_t size, size_t skip,
                         bool zeroed, bool tags, bool shut)
{
    uintptr_t end = base + size;
    uintptr_t descs = kh_align_up(base + skip, KH_HEADER_ALIGN);
    size_t per_page = sizeof(struct kh_page) + (tags ? sizeof(struct kh_ptag) : 0);
    if (descs >= end)
        return KHEAP_ETOOSMALL;
    size_t n = (end - descs) / (KH_PAGE + per_page);
    if (n > UINT32_MAX)
        n = UINT32_MAX;
    while (n > 0 && kh_align_up(descs + n * per_page, KH_PAGE) + n * KH_PAGE > end)
        n--;
    if (n == 0)
        return KHEAP_ETOOSMALL;
#if KHEAP_PORT_COMMIT
    /* Memory the port gave inaccessible: the metadata opens now, whole
     * (address space: its pages cost memory only where descriptors are
     * written), the pages as the page layer hands them out (r->open). */
    uintptr_t meta_end = kh_align_up(descs + n * per_page, KH_PAGE);
    if (shut && kheap_port_pages_commit((void *)base, meta_end - base, 1))
        return KHEAP_ENOMEM;
    r->open = shut ? 0 : (uint32_t)n;
    r->shuttable = shut;
#else
    (void)shut;
    r->open = (uint32_t)n;
    r->shuttable = false;
#endif
    r->base = base;
    r->size = size;
    r->pages = (struct kh_page *)descs;
    r->start = kh_align_up(descs + n * per_page, KH_PAGE);
    r->npages = n;
    r->end = r->start + n * KH_PAGE;
    r->span = n * KH_PAGE;
    r->meta_bytes = size - n * KH_PAGE;
    r->grown = false;
    if (!zeroed)
        __builtin_memset(r->pages, 0, n * per_page);
    return KHEAP_OK;
}

/* Can [base, base+size) join the heap? page_lock held. O(regions). */
int kh_region_admissible(const kheap_t *h, uintptr_t base, size_t size)
{
    for (unsigned i = 0; i < h->nregions; i++) {
        const struct kh_region *o = &h->regions[i];
        if (base < o->base + o->size && o->base < base + size)
            return KHEAP_EOVERLAP;
    }
    return h->nregions >= KHEAP_MAX_REGIONS ? KHEAP_ETOOMANY : KHEAP_OK;
}

/* Enter a laid-out region in the heap (page_lock held, or the heap not
 * yet shared); *out is its entry in the table. Its pages are in no run
 * yet: the page layer takes them (kh_pages_add). */
int kh_region_enter(kheap_t *h, const struct kh_region *r, struct kh_region **out)
{
    int err = kh_region_admissible(h, r->base, r->size);
    if (err)
        return err;
    unsigned idx = h->nregions;
    h->regions[idx] = *r;
    publish(h, idx);
    h->total_bytes += r->size;
    h->region_meta += r->meta_bytes;
    *out = &h->regions[idx];
    return KHEAP_OK;
}

/* Can [base, base+size) be a region at all (first: the heap's first,
 * with its own minimum size)? Looks at the arguments only. */
int kh_region_check(const void *base, size_t size, bool first)
{
    if (!base)
        return KHEAP_EINVAL;
    if ((uintptr_t)base + size < (uintptr_t)base)
        return KHEAP_ERANGE;
    if (size < (first ? KHEAP_MIN_REGION_SIZE : KHEAP_MIN_ADD_REGION_SIZE))
        return KHEAP_ETOOSMALL;
    return KHEAP_OK;
}

/* Check and lay out [base, base+size) as a region that skips its first
 * `skip` bytes (the heap structure of a first region); the first region
 * also gets the heap's page table (kh_region_ptags). shut: the memory is
 * the port's, inaccessible until opened (KHEAP_PORT_COMMIT; zero too):
 * the metadata is opened here, the pages by the page layer. Writes only
 * into the new memory, and nothing on error; the caller has made sure
 * the memory is not the heap's already (kh_region_admissible). */
int kh_region_prepare(struct kh_region *r, void *base, size_t size, size_t skip, bool first,
                      bool zeroed, bool shut)
{
    int err = kh_region_check(base, size, first);
    return err ? err : region_layout(r, (uintptr_t)base, size, skip, zeroed, first, shut);
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
