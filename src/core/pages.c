/*
 * pages.c - runs of pages: allocate, split, free, coalesce.
 *
 * A run is a span of whole pages of one region: free, a slab, or a large
 * block. Boundary descriptors (kh_internal.h) give each run's length at
 * both ends, so a freed run merges with a free neighbour on either side in
 * O(1) (Knuth's boundary tags). Free runs sit in KH_NBINS doubly linked
 * bins keyed by length: exact for 1..15 pages, then 8 bins per doubling
 * (TLSF's two-level index, Masmano et al. 2004). A bitmap of non-empty
 * bins and a summary word find the first bin at or above a length with
 * two find-first-set operations.
 *
 * Allocation of n pages takes the shortest run that holds n among the
 * first KH_BIN_PROBE runs of n's own bin, where runs of mixed length at or
 * above the bin's minimum sit (when n is the bin's minimum, every run
 * there holds it: its first run); failing that, the first non-empty bin
 * whose every run holds n (a good fit). O(1) either way. The leftover is
 * split off and binned again. Looking in n's own bin first keeps a
 * program that allocates blocks of a few sizes in turn on the runs it
 * freed: taking the next bin first split the longer free runs for the
 * shorter blocks, so each round's longest block found no run left and
 * went past them to fresh pages (Python's LZMA compressors, 13, 17 and
 * 64 MiB each, two alive at a time; what it changed, and what it does
 * not solve there: docs/DESIGN.md, "Pages").
 *
 * Purging (KHEAP_PORT_PURGE): each free run's head counts `dirty`, at
 * most how many of its pages may still be resident (touched since they
 * were last purged or given to the heap). A freed run adds its length; a
 * run that is split by an allocation assumes the allocation took its
 * dirty pages first (allocations come from a run's low end, where freed
 * blocks merge), so the pieces left keep what exceeds the allocation.
 * When more free pages are dirty than the slack allows, a freed run
 * (after coalescing) of at least KHEAP_PURGE_MIN bytes is purged whole
 * and becomes clean. The slack is KHEAP_PURGE_SLACK bytes (both figures
 * can be set per heap, kheap_set_purge), or twice the
 * pages in use at the recent peak if that is more: the hysteresis that
 * lets a program free and reallocate blocks of the sizes it works with
 * without faulting their pages in again each time (a fixed 64 MiB made a
 * program churning four blocks of up to 32 MiB fault 800 000 times where
 * it needed 42 000, and take 4.8 times tcmalloc's time: docs/BENCHMARKS.md,
 * "large"; with this rule it faults 89 000 times and is level). The recent
 * peak follows the pages in use up, and drops to them when they fall
 * below an eighth of it, so a program that frees most of what it used
 * goes back to the fixed slack: free memory stays resident only while it
 * is of the order of what the program uses. With decay on (kheap_tick,
 * cache.c) the peak is instead the higher of this decay epoch's and the
 * last one's, so cycles of any size keep their pages, and kh_pages_decay
 * purges, at an epoch's end, the free pages that stayed resident through
 * it (runs of any length). Each region's touched frontier keeps purges
 * off pages never touched or already purged (purge_run). Purged pages stay free heap pages: no figure
 * of the statistics changes, only the process's resident memory. The
 * count is an estimate (an allocation may take clean pages of a dirty
 * run), so resident free memory can exceed the slack by what such splits
 * misplace; it never leads to purging memory that is in use.
 *
 * With KHEAP_PORT_COMMIT the port's memory comes inaccessible and each
 * region's accessible frontier (kh_region.open) moves up, in doubling
 * steps, before pages past it are first handed out (open_run, below).
 *
 * The layer also takes in the pages of new regions (kheap_add_region,
 * growth through the port, kh_pages_add) and hands out page runs for
 * kheap's own structures (kh_internal_pages: per-CPU state, page tags),
 * which count as metadata.
 *
 * Invariants (page_lock held):
 *   free_pages == sum of the lengths of all runs in the bins
 *   dirty_pages == sum of the dirty counts of all runs in the bins
 *   dirty <= npages for every free run
 *   free_pages + slab_pages + large_pages == sum of regions' npages
 *   no two free runs are adjacent; every free run is in bin kh_bin_of(len)
 *   (KHEAP_PORT_COMMIT) every page below a region's open is accessible
 *   but those of free runs marked KH_FREE_SHUT; a page at or past it is
 *   accessible only if a live run opened alone holds it
 */
#include "kh_internal.h"

#define KH_BIN_PROBE 8u

unsigned kh_bin_of(size_t n)
{
    if (n < (2u << KH_BIN_SUB_SHIFT))
        return (unsigned)n;
    unsigned f = kh_log2(n);
    return ((f - KH_BIN_SUB_SHIFT + 1) << KH_BIN_SUB_SHIFT) +
           (unsigned)((n >> (f - KH_BIN_SUB_SHIFT)) & ((1u << KH_BIN_SUB_SHIFT) - 1));
}

size_t kh_bin_min(unsigned b)
{
    if (b < (2u << KH_BIN_SUB_SHIFT))
        return b;
    unsigned f = (b >> KH_BIN_SUB_SHIFT) + KH_BIN_SUB_SHIFT - 1;
    size_t sub = b & ((1u << KH_BIN_SUB_SHIFT) - 1);
    return (((size_t)1 << KH_BIN_SUB_SHIFT) + sub) << (f - KH_BIN_SUB_SHIFT);
}

void kh_bins_insert(kheap_t *h, struct kh_page *d)
{
    unsigned b = kh_bin_of(d->npages);
    d->bin = b;
    h->dirty_pages += d->dirty;
    d->prev = NULL;
    d->next = h->bins[b];
    if (d->next)
        d->next->prev = d;
    h->bins[b] = d;
    h->bin_map[b / KH_WORD_BITS] |= 1ul << (b % KH_WORD_BITS);
    h->bin_summary |= 1ul << (b / KH_WORD_BITS);
}

void kh_bins_remove(kheap_t *h, struct kh_page *d)
{
    unsigned b = d->bin;
    if (d->prev)
        d->prev->next = d->next;
    else
        h->bins[b] = d->next;
    if (d->next)
        d->next->prev = d->prev;
    if (!h->bins[b]) {
        h->bin_map[b / KH_WORD_BITS] &= ~(1ul << (b % KH_WORD_BITS));
        if (!h->bin_map[b / KH_WORD_BITS])
            h->bin_summary &= ~(1ul << (b / KH_WORD_BITS));
    }
    h->dirty_pages -= d->dirty;
    d->dirty = 0;
    d->prev = d->next = NULL;
}

/* First non-empty bin >= b, or KH_NBINS. */
static unsigned bins_find(const kheap_t *h, unsigned b)
{
    if (b >= KH_NBINS)
        return KH_NBINS;
    unsigned w = b / KH_WORD_BITS;
    unsigned long m = h->bin_map[w] & (~0ul << (b % KH_WORD_BITS));
    if (!m) {
        unsigned long s = (w + 1 < KH_WORD_BITS) ? h->bin_summary & (~0ul << (w + 1)) : 0;
        if (!s)
            return KH_NBINS;
        w = (unsigned)__builtin_ctzl(s);
        m = h->bin_map[w];
    }
    return w * (unsigned)KH_WORD_BITS + (unsigned)__builtin_ctzl(m);
}

/* Pages in the longest free run (0 if none): in the highest non-empty
 * bin, whose runs are walked when its lengths differ (bins above 16
 * pages), until one of the bin's longest length is met. page_lock held. */
size_t kh_pages_longest(const kheap_t *h)
{
    if (!h->bin_summary)
        return 0;
    unsigned w = (unsigned)(KH_WORD_BITS - 1) - (unsigned)__builtin_clzl(h->bin_summary);
    unsigned b = w * (unsigned)KH_WORD_BITS + (unsigned)(KH_WORD_BITS - 1) -
                 (unsigned)__builtin_clzl(h->bin_map[w]);
    size_t most = b + 1 < KH_NBINS ? kh_bin_min(b + 1) - 1 : (size_t)UINT32_MAX, n = 0;
    for (const struct kh_page *d = h->bins[b]; d && n < most; d = d->next)
        n = d->npages > n ? d->npages : n;
    return n;
}

/* Write the boundary descriptors of run [i, i+n) of region r. */
void kh_run_mark(kheap_t *h, struct kh_region *r, size_t i, size_t n,
                 enum kh_page_kind kind)
{
    struct kh_page *d = &r->pages[i];
    uint8_t ri = (uint8_t)(r - h->regions);
    d->kind = (uint8_t)kind;
    d->region = ri;
    d->npages = (uint32_t)n;
    if (kind == KH_PG_SLAB) {
        for (size_t k = 1; k < n; k++) {
            d[k].kind = KH_PG_SLAB_PART;
            d[k].region = ri;
            d[k].npages = (uint32_t)k;
        }
    } else if (n > 1) {
        struct kh_page *t = &r->pages[i + n - 1];
        t->kind = (uint8_t)(kind == KH_PG_FREE ? KH_PG_FREE_TAIL : KH_PG_LARGE_TAIL);
        t->region = ri;
        t->npages = (uint32_t)n;
    }
}

/* Bin the free run [i, i+n) of r, of which at most dirty pages may be
 * resident; its neighbours are not free. */
static void put_free(kheap_t *h, struct kh_region *r, size_t i, size_t n, size_t dirty,
                     uint8_t shut)
{
    kh_run_mark(h, r, i, n, KH_PG_FREE);
    r->pages[i].list = shut;
    /* Pages at or past the region's touched frontier are clean. */
    size_t touched = r->touched > i ? r->touched - i : 0;
    if (touched > n)
        touched = n;
    r->pages[i].dirty = dirty < touched ? dirty : touched;
    kh_bins_insert(h, &r->pages[i]);
}

/* A decay epoch's working set of resident free pages: the least there
 * were at any moment of the epoch (page_lock held). */
static inline void note_dirty_min(kheap_t *h)
{
    if (h->dirty_pages < h->dirty_min)
        h->dirty_min = h->dirty_pages;
}

static struct kh_page *find_run(kheap_t *h, size_t need)
{
    unsigned b = kh_bin_of(need);
    if (kh_bin_min(b) < need) {
        /* A bin of mixed lengths: the best fit among its first
         * KH_BIN_PROBE runs, before any longer bin is split. */
        struct kh_page *best = NULL;
        unsigned probe = 0;
        for (struct kh_page *d = h->bins[b]; d && probe < KH_BIN_PROBE; d = d->next, probe++)
            if (d->npages >= need && (!best || d->npages < best->npages)) {
                best = d;
                if (d->npages == need)
                    break; /* none is shorter */
            }
        if (best)
            return best;
        b++;
    }
    unsigned found = bins_find(h, b);
    return found < KH_NBINS ? h->bins[found] : NULL;
}

#if KHEAP_PORT_COMMIT
/* The accessible frontier (kh_region.open) of memory the port gives
 * inaccessible. Pages [0, open) are accessible, except pages a purge
 * shut (below). Past it, a free page is
 * not, and the only accessible pages are those of live runs opened alone:
 * kheap's own blocks carved at a run's high end (which must not drag the
 * frontier to the top of a 64 GiB reservation) and blocks taken from a
 * free run that lies wholly past it (a freed block of that kind). A run
 * that needs pages past the frontier out of the free run the frontier is
 * in moves it up: by the frontier's own length (doubling), at least
 * KH_OPEN_MIN and at most KH_OPEN_MAX pages, never past that free run's
 * end (so it sweeps over free pages only, never over a live block opened
 * alone, whose pages the sampler may have shut). A heap that grows to G
 * bytes so opens its pages in about log2(G / 1 MiB) calls, plus one per
 * block opened alone. A run freed past the frontier is shut again (its
 * pages dropped). The frontier never moves down. A purge of the port's
 * memory shuts the pages instead of only dropping them (the same one
 * call) and marks the free run KH_FREE_SHUT; the first allocation from
 * such a run (or from a piece of a run it merged into) opens all of it
 * below the frontier again, one call, so the purged pages fault until
 * the heap hands memory out of their run again. page_lock held. */
#define KH_OPEN_MIN (((size_t)1 << 20) / KH_PAGE)
#define KH_OPEN_MAX (((size_t)1 << 30) / KH_PAGE)

static bool pages_commit(const struct kh_region *r, size_t from, size_t to, int commit)
{
    return kheap_port_pages_commit((void *)(r->start + (from << KHEAP_PAGE_SHIFT)),
                                   (to - from) * KH_PAGE, commit) == 0;
}

/* Open pages [a, b) of r, about to be handed out of the free run
 * [i, end) (high: kheap's own block at the run's high end). False if
 * the port cannot: nothing changed. */
static bool open_run(struct kh_region *r, size_t i, size_t end, size_t a, size_t b,
                     bool high)
{
    size_t open = r->open;
    if (b <= open)
        return true;
    if (high || i > open)
        return pages_commit(r, a > open ? a : open, b, 1);
    size_t step = open < KH_OPEN_MIN ? KH_OPEN_MIN : open > KH_OPEN_MAX ? KH_OPEN_MAX : open;
    size_t to = end - open > step ? open + step : end;
    if (to < b)
        to = b;
    /* (A failed step may still leave room for just the run.) */
    if (!pages_commit(r, open, to, 1) && (to == b || !pages_commit(r, open, to = b, 1)))
        return false;
    r->open = (uint32_t)to;
    return true;
}

/* The free run [i, end) of r, which a purge may have shut pages of
 * (KH_FREE_SHUT): every page of it below the frontier accessible again. */
static bool reopen(struct kh_region *r, size_t i, size_t end)
{
    if (end > r->open)
        end = r->open;
    if (end > i && !pages_commit(r, i, end, 1))
        return false;
    r->pages[i].list = 0;
    return true;
}
#endif

#if KHEAP_PORT_PAGES
/* Add a region from the port big enough for a run of need pages. */
static bool grow(kheap_t *h, size_t need)
{
    if (!h->grow_bytes)
        return false;
    size_t meta = kh_align_up((need + 2) * sizeof(struct kh_page) + 64, KH_PAGE);
    if (need > (SIZE_MAX - meta) / KH_PAGE)
        return false;
    size_t bytes = need * KH_PAGE + meta;
    if (bytes < h->grow_bytes)
        bytes = h->grow_bytes;
    size_t got = 0;
    void *p = kheap_port_pages_get(bytes, &got);
    if (!p)
        return false;
    struct kh_region r, *in;
    if (kh_region_prepare(&r, p, got, 0, false, true, KHEAP_PORT_COMMIT) != KHEAP_OK ||
        kh_region_enter(h, &r, &in) != KHEAP_OK) {
        kheap_port_pages_put(p, got);
        return false;
    }
    in->grown = true;
    kh_pages_add(h, in);
    return true;
}
#endif

struct kh_page *kh_run_alloc(kheap_t *h, size_t npages, size_t align,
                             enum kh_page_kind kind, bool high)
{
    size_t extra = align > KH_PAGE ? align / KH_PAGE - 1 : 0;
    if (npages == 0 || npages > UINT32_MAX || extra > UINT32_MAX - npages)
        return NULL;
    size_t need = npages + extra;
    struct kh_page *d = find_run(h, need);
#if KHEAP_PORT_PAGES
    if (!d && grow(h, need))
        d = find_run(h, need);
#endif
    if (!d)
        return NULL;

    struct kh_region *r = &h->regions[d->region];
    size_t i = (size_t)(d - r->pages), len = d->npages;
    size_t dirty = d->dirty;
    /* Trim the pages before the alignment boundary and after the run. Both
     * pieces border only non-free runs (the run they came from was free and
     * free runs are never adjacent), so they need no coalescing. */
    uintptr_t addr = r->start + i * KH_PAGE;
    size_t lead = extra ? (kh_align_up(addr, align) - addr) / KH_PAGE : 0;
    /* Blocks that stay for the heap's life go at the run's end, so they do
     * not cut the rest of it in two. */
    if (high && !extra)
        lead = len - npages;
#if KHEAP_PORT_COMMIT
    /* Accessible before anything changes, so a refusal leaves the heap
     * as it was (the allocation fails as if no run were found). A run a
     * purge shut pages of is opened whole below the frontier, once: its
     * pieces are accessible again. */
    if (d->list == KH_FREE_SHUT && !reopen(r, i, i + len))
        return NULL;
    if (!open_run(r, i, i + len, i + lead, i + lead + npages, high && !extra))
        return NULL;
#endif
    kh_bins_remove(h, d);
    d->kind = KH_PG_INTERIOR;
    if (len > 1)
        r->pages[i + len - 1].kind = KH_PG_INTERIOR;
    size_t tail = len - lead - npages;
    /* The allocation is taken to hold the dirty pages first; what it
     * cannot hold stays with the pieces. */
    dirty = dirty > npages ? dirty - npages : 0;
    if (lead)
        put_free(h, r, i, lead, dirty, 0);
    if (tail)
        put_free(h, r, i + lead + npages, tail, dirty > lead ? dirty - lead : 0, 0);
    /* Blocks for the heap's life at a run's high end do not move the
     * frontier (the 64 GiB reservation would become "touched" to its
     * end); kh_run_free purges them at once if they are ever freed. */
    if (!(high && !extra) && i + lead + npages > r->touched)
        r->touched = i + lead + npages;
    note_dirty_min(h);
    /* Crossing the low-water mark downwards asks for a shrinker pass
     * (kmalloc.c runs it once no lock is held). */
    if (kh_unlikely(h->free_pages >= h->low_water && h->free_pages - npages < h->low_water))
        __atomic_store_n(&h->pressure, 1, __ATOMIC_RELAXED);
    h->free_pages -= npages;
    if (kind == KH_PG_SLAB)
        h->slab_pages += npages;
    else
        h->large_pages += npages;
    kh_run_mark(h, r, i + lead, npages, kind);
    return &r->pages[i + lead];
}

#if KHEAP_PORT_PURGE
/* Purge the free run at d: only the part below its region's touched
 * frontier (past it, pages were never touched or were purged already),
 * and only if it may hold resident pages. A run that reaches the
 * frontier moves it down to the run's start. page_lock held: the run
 * must not be handed out while its pages are being dropped. Returns the
 * pages it counted as resident. */
static size_t purge_run(kheap_t *h, struct kh_region *r, struct kh_page *d)
{
    size_t i = (size_t)(d - r->pages), n = d->npages, was = d->dirty;
    if (!was)
        return 0;
    size_t end = i + n < r->touched ? i + n : r->touched;
    if (end > i) {
#if KHEAP_PORT_COMMIT
        /* The port's memory: shut, so an access to the purged pages
         * faults until they are handed out again (kh_run_alloc opens the
         * run). The same one call as a purge: its pages are dropped. */
        if (r->shuttable && pages_commit(r, i, end, 0))
            d->list = KH_FREE_SHUT;
        else
#endif
            kheap_port_pages_purge((void *)(r->start + (i << KHEAP_PAGE_SHIFT)),
                                   (end - i) * KH_PAGE);
        h->purged_pages += end - i;
        if (end == r->touched)
            r->touched = i;
    }
    h->dirty_pages -= was;
    d->dirty = 0;
    note_dirty_min(h);
    return was;
}

/* Purge the free run at d (just binned) if dirty free pages exceed the
 * slack: KHEAP_PURGE_SLACK, or twice the pages in use at the recent peak
 * if that is more (see the top of the file). */
static void purge(kheap_t *h, struct kh_region *r, struct kh_page *d, size_t freed)
{
    size_t slack = h->purge_slack, used = h->slab_pages + h->large_pages;
    if (used + freed > h->purge_peak)
        h->purge_peak = used + freed; /* in use just before this free */
    else if (!h->decay_driven && used < h->purge_peak / 8)
        h->purge_peak = used;
    size_t peak = h->purge_peak > h->purge_peak_prev ? h->purge_peak : h->purge_peak_prev;
    if (slack < 2 * peak)
        slack = 2 * peak;
    if (h->dirty_pages <= slack || !d->dirty || (size_t)d->npages < h->purge_min)
        return;
    purge_run(h, r, d);
}

/* Purge free runs, the longest bins first, until at most keep pages may
 * be resident. Returns the pages purged. page_lock held. */
static size_t purge_down(kheap_t *h, size_t keep)
{
    size_t dropped = 0;
    for (unsigned b = KH_NBINS; b-- > 0 && h->dirty_pages > keep;)
        for (struct kh_page *d = h->bins[b]; d && h->dirty_pages > keep; d = d->next)
            dropped += purge_run(h, &h->regions[d->region], d);
    return dropped;
}
#endif

size_t kh_pages_decay(kheap_t *h)
{
    size_t dropped = 0;
    kh_lock(&h->page_lock);
    /* The peak of use the purge rule keeps room for is the higher of this
     * epoch's and the last one's: a program that stops using memory gives
     * it back one to two epochs later, not at its first free. (A quiet
     * stretch, cache.c: kh_tick, calls here four times, so both become
     * the use of the moment: the stretch was idle.) */
    h->decay_driven = true;
    h->purge_peak_prev = h->purge_peak;
    h->purge_peak = h->slab_pages + h->large_pages;
#if KHEAP_PORT_PURGE
    /* Pages that stayed free and resident through the whole epoch. */
    size_t idle = h->dirty_min < h->dirty_pages ? h->dirty_min : h->dirty_pages;
    dropped = purge_down(h, h->dirty_pages - idle);
#endif
    h->dirty_min = h->dirty_pages;
    kh_unlock(&h->page_lock);
    return dropped * KH_PAGE;
}

int kheap_set_purge(kheap_t *h, size_t slack_bytes, size_t min_bytes)
{
#if KHEAP_PORT_PURGE
    if (!h)
        return KHEAP_EINVAL;
    kh_lock(&h->page_lock);
    h->purge_slack = slack_bytes / KH_PAGE;
    h->purge_min = (min_bytes + KH_PAGE - 1) / KH_PAGE;
    kh_unlock(&h->page_lock);
    return KHEAP_OK;
#else
    (void)h;
    (void)slack_bytes;
    (void)min_bytes;
    return KHEAP_ENOSYS;
#endif
}

/* Purge free runs, the longest bins first, until at most keep_bytes of
 * free pages may be resident. */
size_t kheap_purge(kheap_t *h, size_t keep_bytes)
{
#if KHEAP_PORT_PURGE
    kh_lock(&h->page_lock);
    size_t dropped = purge_down(h, keep_bytes / KH_PAGE);
    kh_unlock(&h->page_lock);
    return dropped * KH_PAGE;
#else
    (void)h;
    (void)keep_bytes;
    return 0;
#endif
}

void kh_run_free(kheap_t *h, struct kh_page *head)
{
    struct kh_region *r = &h->regions[head->region];
    size_t i = (size_t)(head - r->pages), n = head->npages, freed = n;
    size_t dirty = n; /* every page of the run may have been touched */
#if KHEAP_PORT_COMMIT
    if (i + n > r->open) {
        /* Pages past the frontier were opened for this run alone: shut
         * again, their contents dropped (if the port refuses, they stay
         * accessible and resident, which the frontier tolerates). */
        size_t from = i > r->open ? i : r->open;
        if (pages_commit(r, from, i + n, 0) && from == i) {
            h->purged_pages += n;
            dirty = 0; /* clean: the frontier of touched pages stays */
        }
    }
    if (dirty && i + n > r->touched) {
#else
    if (i + n > r->touched) {
#endif
#if KHEAP_PORT_PURGE
        if (i >= r->touched) {
            /* Past the frontier (kheap's own blocks at a run's high end):
             * purged now, so every free page past the frontier stays
             * clean. */
            kheap_port_pages_purge((void *)(r->start + (i << KHEAP_PAGE_SHIFT)), n * KH_PAGE);
            h->purged_pages += n;
            dirty = 0;
        } else
#endif
            r->touched = i + n;
    }
    h->free_pages += n;
    /* Clear the run's boundaries: every page of a slab, the head and tail
     * of a large block (whose interior is clear already). */
    if (head->kind == KH_PG_SLAB) {
        h->slab_pages -= n;
        for (size_t k = 0; k < n; k++)
            r->pages[i + k].kind = KH_PG_INTERIOR;
    } else {
        h->large_pages -= n;
        r->pages[i].kind = KH_PG_INTERIOR;
        r->pages[i + n - 1].kind = KH_PG_INTERIOR;
    }

    uint8_t shut = 0; /* the merged run holds pages a purge shut */
    if (i > 0) {
        struct kh_page *l = &r->pages[i - 1];
        if (l->kind == KH_PG_FREE || l->kind == KH_PG_FREE_TAIL) {
            size_t ln = l->npages;
            struct kh_page *lh = &r->pages[i - ln];
            dirty += lh->dirty;
            shut |= lh->list;
            kh_bins_remove(h, lh);
            lh->kind = KH_PG_INTERIOR;
            l->kind = KH_PG_INTERIOR;
            i -= ln;
            n += ln;
        }
    }
    if (i + n < r->npages) {
        struct kh_page *rh = &r->pages[i + n];
        if (rh->kind == KH_PG_FREE) {
            size_t rn = rh->npages;
            dirty += rh->dirty;
            shut |= rh->list;
            kh_bins_remove(h, rh);
            rh->kind = KH_PG_INTERIOR;
            r->pages[i + n + rn - 1].kind = KH_PG_INTERIOR;
            n += rn;
        }
    }
    put_free(h, r, i, n, dirty, shut);
#if KHEAP_PORT_PURGE
    purge(h, r, &r->pages[i], freed);
#else
    (void)freed;
#endif
}

/*
 * Resize the large block at head to npages in place: shrink by freeing its
 * tail, or grow into the free run right after it. Returns false (nothing
 * changed) when the next run is not free or too short.
 */
bool kh_large_resize(kheap_t *h, struct kh_page *head, size_t npages)
{
    struct kh_region *r = &h->regions[head->region];
    size_t i = (size_t)(head - r->pages), n = head->npages;
    if (npages == n)
        return true;
    if (npages == 0 || npages > UINT32_MAX)
        return false;
    if (npages < n) {
        r->pages[i + n - 1].kind = KH_PG_INTERIOR;
        kh_run_mark(h, r, i, npages, KH_PG_LARGE);
        kh_run_mark(h, r, i + npages, n - npages, KH_PG_LARGE);
        kh_run_free(h, &r->pages[i + npages]);
        return true;
    }
    if (i + n >= r->npages)
        return false;
    struct kh_page *next = &r->pages[i + n];
    size_t more = npages - n;
    if (next->kind != KH_PG_FREE || next->npages < more)
        return false;
    size_t nn = next->npages, dirty = next->dirty;
#if KHEAP_PORT_COMMIT
    if ((next->list == KH_FREE_SHUT && !reopen(r, i + n, i + n + nn)) ||
        !open_run(r, i + n, i + n + nn, i + n, i + npages, false))
        return false;
#endif
    kh_bins_remove(h, next);
    next->kind = KH_PG_INTERIOR;
    r->pages[i + n + nn - 1].kind = KH_PG_INTERIOR;
    if (n > 1)
        r->pages[i + n - 1].kind = KH_PG_INTERIOR;
    if (nn > more)
        put_free(h, r, i + npages, nn - more, dirty > more ? dirty - more : 0, 0);
    kh_run_mark(h, r, i, npages, KH_PG_LARGE);
    if (i + npages > r->touched)
        r->touched = i + npages;
    note_dirty_min(h);
    h->free_pages -= more;
    h->large_pages += more;
    return true;
}

/*
 * Why is addr, whose page descriptor d is not a slab page nor a large
 * block's head, not a block? Only called to explain a bad pointer, so it
 * may walk back to the run's head: O(length of that run). page_lock held.
 */
enum kheap_report_kind kh_diagnose(kheap_t *h, struct kh_page *d, uintptr_t addr)
{
    struct kh_region *r = &h->regions[kh_region_of(h, addr) - h->regions];
    struct kh_page *p = d;
    while (p->kind == KH_PG_INTERIOR && p > r->pages)
        p--;
    switch (p->kind) {
    case KH_PG_FREE:
    case KH_PG_FREE_TAIL:
        return KHEAP_REPORT_FREE_RUN;
    case KH_PG_LARGE_TAIL:
        p -= p->npages - 1;
        /* fall through */
    case KH_PG_LARGE:
        /* A large block a CPU caches is free as far as the program
         * knows (kh_run_cached: its page tag). */
        return kh_run_cached(h, p) ? KHEAP_REPORT_FREE_RUN : KHEAP_REPORT_INTERIOR;
    default:
        return KHEAP_REPORT_INTERIOR;
    }
}

/* ------------------------------------------------------------------ */
/* Regions' pages, and growth. */

/* A region just entered (kh_region_enter): its pages become one free
 * run. page_lock held, or the heap not yet shared. */
void kh_pages_add(kheap_t *h, struct kh_region *r)
{
    kh_run_mark(h, r, 0, r->npages, KH_PG_FREE);
    r->touched = 0;
    r->pages[0].dirty = 0;
    r->pages[0].list = 0;
    kh_bins_insert(h, &r->pages[0]);
    h->free_pages += r->npages;
}

int kheap_add_region(kheap_t *h, void *base, size_t size)
{
    if (!h)
        return KHEAP_EINVAL;
    int err = kh_region_check(base, size, false);
    if (err)
        return err;
    /* Refuse an overlap before writing anything into the memory. */
    kh_lock(&h->page_lock);
    err = kh_region_admissible(h, (uintptr_t)base, size);
    kh_unlock(&h->page_lock);
    struct kh_region r, *in;
    if (!err)
        err = kh_region_prepare(&r, base, size, 0, false, false, false);
    if (err)
        return err;
    kh_lock(&h->page_lock);
    err = kh_region_enter(h, &r, &in);
    if (!err)
        kh_pages_add(h, in);
    kh_unlock(&h->page_lock);
    return err;
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

/* ------------------------------------------------------------------ */
/* Pages for kheap's own structures. */

void *kh_internal_pages(kheap_t *h, size_t bytes, bool fresh)
{
    size_t npages = (bytes + KH_PAGE - 1) / KH_PAGE;
    kh_lock(&h->page_lock);
    struct kh_page *d = kh_run_alloc(h, npages, KH_PAGE, KH_PG_LARGE, true);
    void *p = NULL;
    if (d) {
        d->internal = 1;
        h->large_pages -= npages;
        h->meta_pages += npages;
        p = (void *)kh_page_addr(h, d);
    }
    kh_unlock(&h->page_lock);
    if (p && fresh) {
        kh_vg_defined(p, npages * KH_PAGE);
    } else if (p) {
        kh_vg_undefined(p, npages * KH_PAGE);
        __builtin_memset(p, 0, npages * KH_PAGE);
    }
    return p;
}

void kh_internal_pages_free(kheap_t *h, void *p)
{
    struct kh_page *d = kh_page_of(h, (uintptr_t)p);
    kh_lock(&h->page_lock);
    KH_ASSERT(d->kind == KH_PG_LARGE && d->internal, p);
    d->internal = 0;
    h->meta_pages -= d->npages;
    h->large_pages += d->npages;
    kh_run_free(h, d);
    kh_unlock(&h->page_lock);
}
