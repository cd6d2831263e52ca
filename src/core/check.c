/*
 * check.c - kheap_check: walk the whole heap and cross-check it.
 *
 * With every lock of the heap held (caches_lock, each cache's lock in the
 * documented order, page_lock) the walk visits the following.
 * The per-CPU magazines are used without locks, so kheap_check leaves them
 * out (it is safe at any time); kheap_check_quiescent, for a heap no CPU is
 * using, walks them too and checks live + cached == handed out.
 *   every region: its accessible frontier within it, its runs in address
 *     order, each run's boundary and interior descriptors, no two free
 *     runs adjacent;
 *   every slab met on the way (but one a take is making: KH_LIST_NEW,
 *     on no list yet): owner cache valid, page count, bitmap
 *     population == inuse, free list members inside the slab, on slot
 *     boundaries, marked free, as many as carved - inuse; on the list its
 *     state calls for;
 *   every bin: each member a free-run head of the bin's length range, the
 *     bitmap and summary words agreeing with the lists;
 *   every cache: its partial and empty lists, its counters against the
 *     slabs, its depot and every CPU's magazines (each object an allocated
 *     slot of the cache; live + cached == handed out by the slabs);
 *   the counters: pages, bitmap bytes, used bytes == the bytes of live
 *     objects and large blocks.
 * Time O(pages + objects); space O(1) (nothing is allocated).
 */
#include "kh_internal.h"

struct walk {
    const char *msg;
    const void *addr;
    size_t free_pages, free_runs, dirty_pages, slab_pages, large_pages, meta_pages, bitmap_bytes;
    size_t slabs, gone_slabs, user_bytes, internal_bytes, mags;
    size_t run_cached; /* pages of large blocks whose tags say cached */
    bool quiet; /* no CPU is inside an operation: per-CPU state is stable */
};

static bool fail(struct walk *w, const char *msg, uintptr_t addr)
{
    if (!w->msg) {
        w->msg = msg;
        w->addr = (const void *)addr;
    }
    return false;
}

/* Is c a cache of heap h? (It may be a garbage pointer read from a
 * corrupted descriptor, so test where it points before reading it.) */
static bool cache_valid(kheap_t *h, const struct kheap_cache *c)
{
    uintptr_t p = (uintptr_t)c;
    if (c == &h->cache_cache ||
        (p >= (uintptr_t)h->mag_cache && p < (uintptr_t)(h->mag_cache + KH_MAG_TYPES)))
        return true;
    if (p >= (uintptr_t)h->kmalloc && p < (uintptr_t)(h->kmalloc + KHEAP_NUM_CLASSES))
        return (p - (uintptr_t)h->kmalloc) % sizeof *c == 0;
    struct kh_page *d = kh_page_of(h, p);
    if (!kh_is_slab_page(d))
        return false;
    d = kh_slab_head(d);
    if (d->cache != &h->cache_cache)
        return false;
    return kh_slot_of(&h->cache_cache, p - kh_slab_base(h, d)) < h->cache_cache.objs &&
           c->magic == KH_CACHE_MAGIC && c->heap == h;
}

#if KHEAP_REDZONE
/* The first damaged byte of [from, to) outside [skip_lo, skip_hi) (pages
 * that are shut), or 0. */
static uintptr_t poison_damage(uintptr_t from, uintptr_t to, uintptr_t skip_lo, uintptr_t skip_hi)
{
    const void *bad = rz_damage((void *)from, (void *)(to < skip_lo ? to : skip_lo),
                                KHEAP_POISON_FREE);
    if (!bad && skip_hi < to)
        bad = rz_damage((void *)(skip_hi > from ? skip_hi : from), (void *)to, KHEAP_POISON_FREE);
    return (uintptr_t)bad;
}

/* The debug block cut out of raw (usable bytes; a page run if large), if
 * raw holds one, live or quarantined: its canaries, and a quarantined
 * one's poison, must be whole (kmalloc.c, "The debug build's blocks"). A
 * slot that holds no block's header (free, cached in a magazine, or
 * kheap's own) is left alone. The block's header is found from its run's
 * first word (a guarded run), or at raw + left - 16 for left 16 or a
 * larger power of two (the alignment asked for). */
static bool check_rz(struct walk *w, uintptr_t raw, size_t usable, bool large)
{
    uintptr_t lo = raw, hi = raw + usable, p = 0;
#if RZ_GUARDED
    if (large) {
        lo += sizeof(void *);
        hi -= KH_PAGE;
        uintptr_t q = *(const uintptr_t *)raw;
        if (q >= lo + RZ_HEAD && q <= hi && rz_head((void *)q)->left == q - raw)
            p = q;
    }
#endif
    /* (A guarded run's block is found by its first word only: the pages
     * of a quarantined one are shut, so no other place in it is read.) */
    for (uintptr_t left = RZ_HEAD; !p && !(RZ_GUARDED && large) && left + RZ_TAIL <= hi - raw;
         left <<= 1)
        if (rz_head((void *)(raw + left))->left == left)
            p = raw + left;
    if (!p)
        return true;
    const struct rz_head *hd = rz_head((void *)p);
    bool live = hd->state == rz_state((void *)p, true);
    if (!live && hd->state != rz_state((void *)p, false))
        return true; /* no block: what looked like a header is not one */
    size_t size = (size_t)(hd->size_kind >> 2);
    if (size > hi - p)
        return fail(w, "a debug block's header gives a size past its slot", p);
    const void *bad = rz_damage((void *)lo, hd, RZ_BYTE);
    if (bad)
        return fail(w, "bytes before a debug block were overwritten (heap underflow)",
                    (uintptr_t)bad);
    bad = rz_damage((void *)(p + size), (void *)hi, RZ_BYTE);
    if (bad)
        return fail(w, "bytes after a debug block were overwritten (heap overflow)",
                    (uintptr_t)bad);
    if (!live) {
        uintptr_t shut_lo = p + size, shut_hi = p + size;
#if RZ_GUARDED
        if (large) /* not read: shut while it is quarantined */
            rz_shut_range((void *)p, size, &shut_lo, &shut_hi);
#endif
        uintptr_t where = poison_damage(p, p + size, shut_lo, shut_hi);
        if (where)
            return fail(w, "a quarantined debug block was written to (use after free)", where);
    }
    return true;
}
#endif

static bool check_slab(kheap_t *h, struct walk *w, struct kh_page *s)
{
    struct kheap_cache *c = s->cache;
    if (!cache_valid(h, c))
        return fail(w, "slab's owner is not a cache of this heap", kh_page_addr(h, s));
    uintptr_t base = kh_slab_base(h, s); /* (reads the owner in a debug build) */
    if (s->npages != c->pages)
        return fail(w, "slab's page count differs from its cache's", base);
    if (s->list == KH_LIST_NEW) {
        /* Made by a take that let c's lock go and may be clearing its
         * bitmap or tagging its pages now (slab.c, slab_new): on no
         * list, nothing carved; its bitmap and tags are not read. */
        if (s->inuse || s->carved || s->home != KH_HOME_NONE)
            return fail(w, "a slab on its way to its cache has objects or a home", base);
        w->gone_slabs++;
        w->slabs++;
        w->bitmap_bytes += c->bitmap_bytes;
        return true;
    }
    if (s->inuse > s->carved || s->carved > c->objs)
        return fail(w, "slab counts inconsistent (inuse > carved > objs)", base);
    size_t set = 0;
    for (size_t i = 0; i < c->objs; i++) {
        bool on = kh_slab_obj_allocated(c, s, base, i);
        if (on && i >= s->carved)
            return fail(w, "slab bitmap marks a never-carved object", base + i * c->slot);
        set += on;
    }
    if (set != s->inuse)
        return fail(w, "slab bitmap population differs from inuse", base);
#if KHEAP_REDZONE
    if (c->flags & KH_CACHE_KMALLOC)
        for (size_t i = 0; i < s->carved; i++)
            if (kh_slab_obj_allocated(c, s, base, i) && !check_rz(w, base + i * c->slot, c->size,
                                                                   false))
                return false;
    /* A user cache's allocated object lies between its redzones
     * (rz_cache): the left one whole from the object's leaving its slab
     * on, but for its first word, where a reserve or the deferred
     * KHEAP_NOLOCK frees may link it (kh_held_link; an underflow reaches
     * it only through the rest); the right one whole too (a constructed
     * object gets it as it leaves its slab), or, for an object of a cache
     * without a constructor cached in a magazine, poisoned with the
     * object. */
    if (rz_cache(c))
        for (size_t i = 0; i < s->carved; i++) {
            if (!kh_slab_obj_allocated(c, s, base, i))
                continue;
            const char *o = (const char *)(base + i * c->slot), *end = o + kh_obj_span(c);
            const void *bad = rz_damage(o - kh_obj_off(c) + sizeof(void *), o, RZ_BYTE);
            if (bad)
                return fail(w, "bytes before an object of a cache were written (its redzone)",
                            (uintptr_t)bad);
            bad = rz_damage(o + c->size, end, RZ_BYTE);
            if (bad && !c->ctor && !rz_damage(o + c->size, end, KHEAP_POISON_FREE))
                bad = NULL;
            if (bad)
                return fail(w, "bytes after an object of a cache were written (its redzone)",
                            (uintptr_t)bad);
        }
#endif
    size_t n = 0;
    for (void *o = s->freelist; o; n++) {
        uintptr_t p = (uintptr_t)o;
        size_t idx = kh_slot_of(c, p - base);
        if (n >= (size_t)(s->carved - s->inuse))
            return fail(w, "slab free list is longer than carved - inuse", base);
        if (idx >= s->carved)
            return fail(w, "slab free list holds a pointer that is not a free slot", p);
        if (kh_slab_obj_allocated(c, s, base, idx))
            return fail(w, "slab free list holds an allocated object", p);
        kh_vg_defined((void *)(p + c->link_off), sizeof(void *));
        o = *(void **)(p + c->link_off);
    }
    if (n != (size_t)(s->carved - s->inuse))
        return fail(w, "slab free list is shorter than carved - inuse", base);
    /* A kmalloc class's slab in the first region, on a list of its
     * class: every page's entry names the class's front and the slab's
     * offset (the free hit path's slot test, kh_fast.h). One on its way
     * back (KH_LIST_GONE) may be half cleared (slab.c, page_tag). */
    if (s->region == 0 && c->cc_off && s->list != KH_LIST_GONE) {
        size_t first = (size_t)(s - h->regions[0].pages);
        uint32_t rebase = (uint32_t)0 - (uint32_t)(first << KHEAP_PAGE_SHIFT);
        for (size_t k = 0; k < c->pages; k++) {
            const struct kh_ptag *e = &h->window.pt[first + k];
            if (__atomic_load_n(&e->tag, __ATOMIC_RELAXED) != c->cc_off)
                return fail(w, "a slab page's tag does not name its class", base + k * KH_PAGE);
            if (__atomic_load_n(&e->rebase, __ATOMIC_RELAXED) != rebase)
                return fail(w, "a slab page's offset in the page table is wrong", base + k * KH_PAGE);
            if (__atomic_load_n(&e->home, __ATOMIC_RELAXED) != s->home)
                return fail(w, "a slab page's home in the page table is not its slab's",
                            base + k * KH_PAGE);
        }
    }
    /* Homes (slab.c): a CPU, or none; none on an empty slab. */
    if (s->home != KH_HOME_NONE && (s->home >= KHEAP_MAX_CPUS || s->inuse == 0))
        return fail(w, "a slab's home is no CPU, or an empty slab has one", base);
    uint8_t want = s->inuse == 0 ? KH_LIST_EMPTY
                   : s->inuse == c->objs ? KH_LIST_FULL
                                         : KH_LIST_PARTIAL;
    if (s->list == KH_LIST_GONE && s->inuse == 0)
        w->gone_slabs++;
    else if (s->list != want)
        return fail(w, "slab is on the wrong list of its cache", base);
    w->slabs++;
    w->bitmap_bytes += c->bitmap_bytes;
    if (c->flags & KH_CACHE_INTERNAL)
        w->internal_bytes += (size_t)s->inuse * c->size;
    else
        w->user_bytes += (size_t)s->inuse * c->size;
    return true;
}

/* The page tag of a user large block (kh_front.h): KH_RUN_TAG while one
 * CPUs may cache is live, 0 while a CPU caches it (counted), 0 for one
 * they may not; the page count in its entry while it is live or cached. */
static bool check_run_tag(kheap_t *h, struct walk *w, const struct kh_page *d)
{
#if KH_RUNS
    if (d->region != 0)
        return true;
    size_t i = (size_t)(d - h->regions[0].pages);
    unsigned tag = __atomic_load_n(&h->window.pt[i].tag, __ATOMIC_RELAXED);
    uintptr_t addr = kh_page_addr(h, d);
    if (!kh_run_eligible(h, d))
        return tag == 0 || fail(w, "a large block no CPU may cache has a page tag", addr);
    if (tag != KH_RUN_TAG && tag != 0)
        return fail(w, "a large block's page tag is neither live nor cached", addr);
    if (h->window.pt[i].run != d->npages)
        return fail(w, "a large block's page count in the window is wrong", addr);
    if (!tag)
        w->run_cached += d->npages;
#else
    (void)h, (void)w, (void)d;
#endif
    return true;
}

/* Every CPU's cache of large blocks (quiet heap only): each run a user
 * large block of its bin's page count, tagged cached; together the pages
 * whose tags say cached and the pages the caches count. */
static bool check_run_caches(kheap_t *h, struct walk *w)
{
#if KH_RUNS
    struct kh_run_counts rc;
    kh_runs_counts(h, &rc);
    size_t found = 0;
    for (unsigned cpu = 0; cpu < KHEAP_MAX_CPUS; cpu++) {
        const struct kh_runcache *c = kh_cpu_runs(h->cpu[cpu]);
        uint64_t capped = 0;
        for (unsigned b = 0; c && b < KH_RUN_BINS; b++) {
            const struct kh_runbin *bin = &c->bin[b];
            uint64_t runs = 0;
            for (void *p = bin->head; p; p = *(void **)p) {
                struct kh_page *d = kh_page_of(h, (uintptr_t)p);
                if (!d || d->kind != KH_PG_LARGE || d->internal ||
                    kh_page_addr(h, d) != (uintptr_t)p || d->npages != KH_RUN_MIN_PAGES + b)
                    return fail(w, "a CPU's cache of large blocks holds something else",
                                (uintptr_t)p);
                if (!kh_run_cached(h, d))
                    return fail(w, "a CPU's cache of large blocks holds a live block",
                                (uintptr_t)p);
                found += d->npages;
                if (found > w->run_cached)
                    return fail(w, "a large block is in the CPUs' caches twice", (uintptr_t)p);
                runs++;
            }
            if (runs != bin->frees - bin->allocs)
                return fail(w, "a bin of a CPU's cache of large blocks holds other than it counts",
                            (uintptr_t)bin);
            if (runs > bin->cap)
                return fail(w, "a bin of a CPU's cache of large blocks holds more than its cap",
                            (uintptr_t)bin);
            capped += bin->cap * (KH_RUN_MIN_PAGES + b);
        }
        if (c && (capped != c->capped || capped > c->limit))
            return fail(w, "the caps of a CPU's cache of large blocks exceed its bound",
                        (uintptr_t)c);
    }
    if (found != w->run_cached || found != rc.held)
        return fail(w, "the CPUs' caches of large blocks differ from the blocks tagged cached",
                    (uintptr_t)h);
#else
    (void)h, (void)w;
#endif
    return true;
}

static bool check_region(kheap_t *h, struct walk *w, unsigned ri)
{
    struct kh_region *r = &h->regions[ri];
    bool prev_free = false;
    if (r->open > r->npages)
        return fail(w, "region's accessible frontier is past its last page", r->start);
    for (size_t i = 0; i < r->npages;) {
        struct kh_page *d = &r->pages[i];
        uintptr_t addr = r->start + i * KH_PAGE;
        size_t n = d->npages;
        if (d->region != ri)
            return fail(w, "run head records the wrong region", addr);
        if (n == 0 || n > r->npages - i)
            return fail(w, "run length runs past its region", addr);
        struct kh_page *t = &r->pages[i + n - 1];
        switch (d->kind) {
        case KH_PG_FREE:
            if (prev_free)
                return fail(w, "two free runs are adjacent (not coalesced)", addr);
            if (n > 1 && (t->kind != KH_PG_FREE_TAIL || t->npages != n))
                return fail(w, "free run's tail descriptor is wrong", addr);
            if (d->bin != kh_bin_of(n))
                return fail(w, "free run is in the wrong bin", addr);
            if (d->dirty > n)
                return fail(w, "free run counts more dirty pages than it has", addr);
            w->free_pages += n;
            w->dirty_pages += d->dirty;
            w->free_runs++;
            break;
        case KH_PG_LARGE:
            if (n > 1 && (t->kind != KH_PG_LARGE_TAIL || t->npages != n))
                return fail(w, "large block's tail descriptor is wrong", addr);
            if (d->internal) {
                w->meta_pages += n;
            } else {
                w->large_pages += n;
                w->user_bytes += n * KH_PAGE;
                if (!check_run_tag(h, w, d))
                    return false;
#if KHEAP_REDZONE
                if (!check_rz(w, addr, n * KH_PAGE, true))
                    return false;
#endif
            }
            break;
        case KH_PG_SLAB:
            for (size_t k = 1; k < n; k++)
                if (d[k].kind != KH_PG_SLAB_PART || d[k].npages != k)
                    return fail(w, "slab page descriptor does not lead to its head",
                                addr + k * KH_PAGE);
            if (!check_slab(h, w, d))
                return false;
            w->slab_pages += n;
            break;
        default:
            return fail(w, "page descriptor at a run start is not a run head", addr);
        }
        if (d->kind != KH_PG_SLAB)
            for (size_t k = 1; k + 1 < n; k++)
                if (d[k].kind != KH_PG_INTERIOR)
                    return fail(w, "boundary descriptor inside a run", addr + k * KH_PAGE);
        prev_free = d->kind == KH_PG_FREE;
        i += n;
    }
    return true;
}

static bool check_bins(kheap_t *h, struct walk *w)
{
    size_t runs = 0;
    for (unsigned b = 0; b < KH_NBINS; b++) {
        bool bit = h->bin_map[b / KH_WORD_BITS] & (1ul << (b % KH_WORD_BITS));
        if (bit != (h->bins[b] != NULL))
            return fail(w, "bin bitmap disagrees with the bin's list", (uintptr_t)&h->bins[b]);
        struct kh_page *prev = NULL;
        for (struct kh_page *d = h->bins[b]; d; prev = d, d = d->next) {
            uintptr_t addr = kh_page_addr(h, d);
            if (++runs > w->free_runs)
                return fail(w, "bins hold more runs than the regions have free",
                            addr);
            if (d->kind != KH_PG_FREE || d->bin != b || kh_bin_of(d->npages) != b)
                return fail(w, "bin holds a run that is not a free run of its size", addr);
            if (d->prev != prev)
                return fail(w, "bin list back link is wrong", addr);
        }
    }
    for (unsigned k = 0; k < KH_BIN_WORDS; k++)
        if (((h->bin_summary >> k) & 1) != (h->bin_map[k] != 0))
            return fail(w, "bin summary word disagrees with the bitmap", (uintptr_t)h->bin_map);
    if (runs != w->free_runs)
        return fail(w, "a free run is missing from the bins", (uintptr_t)h->bins);
    return true;
}

static bool check_list(kheap_t *h, struct walk *w, struct kheap_cache *c,
                       struct kh_page *head, uint8_t list, size_t count,
                       size_t *inuse)
{
    size_t n = 0;
    struct kh_page *prev = NULL;
    for (struct kh_page *s = head; s; prev = s, s = s->next) {
        uintptr_t addr = kh_page_addr(h, s);
        if (++n > count)
            return fail(w, "cache slab list is longer than its count", addr);
        if (s->kind != KH_PG_SLAB || s->cache != c || s->list != list || s->prev != prev)
            return fail(w, "cache slab list holds a slab that is not its own", addr);
        *inuse += s->inuse;
    }
    if (n != count)
        return fail(w, "cache slab list is shorter than its count", (uintptr_t)c);
    return true;
}

/* One magazine of cache c holding n objects (its n, unless it is a
 * CPU's loaded one): they must be allocated slots of c. */
static bool check_mag(kheap_t *h, struct walk *w, struct kheap_cache *c,
                      const struct kh_mag *m, uint32_t n, size_t *cached)
{
    if (m == &kh_mag_sentinel)
        return n == 0 || fail(w, "the empty magazine holds objects", (uintptr_t)m);
    if (m->cap != c->mag_cap || n > m->cap)
        return fail(w, "magazine capacity or count is wrong", (uintptr_t)m);
    for (uint32_t i = 0; i < n; i++) {
        uintptr_t p = (uintptr_t)m->obj[i];
        struct kh_page *d = kh_page_of(h, p);
        if (!kh_is_slab_page(d))
            return fail(w, "magazine holds a pointer outside every slab", p);
        struct kh_page *s = kh_slab_head(d);
        bool ok = s->cache == c; /* first: a debug build's base reads the owner */
        if (ok) {
            uintptr_t base = kh_slab_base(h, s);
            size_t idx = kh_slot_of(c, p - base);
            ok = idx < s->carved && kh_slab_obj_allocated(c, s, base, idx);
        }
        if (!ok)
            return fail(w, "magazine holds an object that is not an allocated slot of its cache",
                        p);
    }
    *cached += n;
    w->mags++;
    return true;
}

/* The depot and every CPU's magazines of c; their objects plus the live
 * ones must be the objects the slabs have handed out. */
static bool check_mags(kheap_t *h, struct walk *w, struct kheap_cache *c)
{
    size_t cached = 0, n = 0;
    for (struct kh_mag *m = KH_U(c)->depot_full; m; m = m->next, n++)
        if (n >= KH_U(c)->nr_full_mags || !check_mag(h, w, c, m, m->n, &cached))
            return fail(w, w->msg ? w->msg : "depot full list is longer than its count",
                        (uintptr_t)c);
    if (n != KH_U(c)->nr_full_mags)
        return fail(w, "depot full list is shorter than its count", (uintptr_t)c);
    n = 0;
    for (struct kh_mag *m = KH_U(c)->depot_empty; m; m = m->next, n++)
        if (n >= KH_U(c)->nr_empty_mags || m->n || !check_mag(h, w, c, m, m->n, &cached))
            return fail(w, w->msg ? w->msg : "depot empty list holds a non-empty magazine",
                        (uintptr_t)c);
    if (n != KH_U(c)->nr_empty_mags)
        return fail(w, "depot empty list is shorter than its count", (uintptr_t)c);
    if (!w->quiet)
        return true;
    uint64_t live = KH_U(c)->nocpu_allocs - KH_U(c)->nocpu_frees;
#if KH_HOMES
    /* (magazines in the inboxes and stashes, and the count of them: the
     * heap's plus the CPUs' dues) */
    uint64_t mailed = 0, counted =
        c->cls != KH_NO_CLASS
            ? (uint64_t)(int64_t)__atomic_load_n(&h->mailed[c->cls], __ATOMIC_RELAXED)
            : 0;
    size_t made = 0; /* (magazines there are: a longer list has a cycle) */
    for (unsigned t = 0; t < KH_MAG_TYPES; t++)
        made += h->mag_cache[t].active_objs;
#endif
    for (unsigned cpu = 0; cpu <= KHEAP_MAX_CPUS; cpu++) {
        const struct kh_cc *cc = kh_cc_of(h, c, cpu);
        if (!cc)
            continue;
        if (cpu == KHEAP_CPU_NONE && c->cls != KH_NO_CLASS)
            return fail(w, "the no-CPU slot has per-CPU state", (uintptr_t)cc);
        if (cc->top < cc->base || cc->top > cc->limit ||
            cc->limit != kh_cc_mag(cc)->obj + kh_cc_mag(cc)->cap)
            return fail(w, "a CPU's loaded magazine bounds are wrong", (uintptr_t)cc);
        if (!check_mag(h, w, c, kh_cc_mag(cc), kh_cc_held(cc), &cached) ||
            !check_mag(h, w, c, cc->prev, cc->prev->n, &cached))
            return false;
        live += cc->allocs - cc->frees;
        /* Its remote front (KH_HOMES): frees only, into its magazines. */
        const struct kh_cc *rcc = kh_rcc_of(h, c, cpu);
        if (rcc) {
            if (rcc->top < rcc->base || rcc->top > rcc->limit ||
                rcc->limit != kh_cc_mag(rcc)->obj + kh_cc_mag(rcc)->cap || rcc->allocs)
                return fail(w, "a CPU's remote front is wrong", (uintptr_t)rcc);
            if (!check_mag(h, w, c, kh_cc_mag(rcc), kh_cc_held(rcc), &cached) ||
                !check_mag(h, w, c, rcc->prev, rcc->prev->n, &cached))
                return false;
            live -= rcc->frees;
        }
#if KH_HOMES
        /* Its inbox and stash (full magazines) and its inbox's empties,
         * its spares and the empties it gathers for another CPU (cpu.c,
         * "Inboxes"). A list longer than the magazines the magazine caches
         * handed out does not end. */
        const struct kh_mail *mail = cpu < KHEAP_MAX_CPUS && c->cls != KH_NO_CLASS
                                         ? __atomic_load_n(&h->cpu[cpu]->mail, __ATOMIC_ACQUIRE)
                                         : NULL;
        if (mail) {
            const struct kh_mag *lists[5] = {mail->inbox[c->cls].full, mail->stash[c->cls],
                                             mail->inbox[c->cls].empty, mail->spare[c->cls],
                                             mail->ret[c->cls]};
            for (int i = 0; i < 5; i++) {
                size_t len = 0;
                for (const struct kh_mag *m = lists[i]; m; m = m->next) {
                    if (++len > made || (i < 2 ? m->n != m->cap : m->n != 0))
                        return fail(w, "a CPU's inbox, stash, spares or gathered empties hold "
                                       "a wrong magazine",
                                    (uintptr_t)m);
                    if (i == 4 && (m->origin != lists[4]->origin || m->origin == cpu ||
                                   m->origin >= KHEAP_MAX_CPUS))
                        return fail(w, "a CPU gathers an empty magazine for the wrong CPU",
                                    (uintptr_t)m);
                    if (!check_mag(h, w, c, m, m->n, &cached))
                        return false;
                    mailed += i < 2;
                }
                if (i == 4 && (len != mail->ret_n[c->cls] || len >= KH_RET_MAX))
                    return fail(w, "a CPU's count of the empties it gathers is wrong",
                                (uintptr_t)mail);
            }
            counted += (uint64_t)(int64_t)__atomic_load_n(&mail->due[c->cls], __ATOMIC_RELAXED);
        }
#endif
        const struct kh_nlc *nl = kh_nlc_of(h, c, cpu);
        if (nl && cpu != KHEAP_CPU_NONE)
            live += (uint64_t)nl->allocs - nl->frees;
    }
#if KH_HOMES
    if (mailed != counted)
        return fail(w, "the CPUs' inboxes and stashes hold other than their count of magazines",
                    (uintptr_t)c);
#endif
    /* (KHEAP_NOLOCK counts are kept modulo 2^32: compare modulo 2^32.) */
    if ((uint32_t)(live + cached) != (uint32_t)c->active_objs)
        return fail(w, "live plus cached objects differ from the objects the slabs handed out",
                    (uintptr_t)c);
    return true;
}

static bool check_cache(kheap_t *h, struct walk *w, struct kheap_cache *c, size_t *slabs)
{
    size_t inuse = 0;
    if (c->magic != KH_CACHE_MAGIC || c->heap != h)
        return fail(w, "cache structure is overwritten", (uintptr_t)c);
    if (!check_list(h, w, c, c->partial, KH_LIST_PARTIAL, c->nr_partial, &inuse) ||
        !check_list(h, w, c, c->empty, KH_LIST_EMPTY, c->nr_empty, &inuse))
        return false;
    if (c->active_objs != inuse + c->nr_full * c->objs)
        return fail(w, "cache active_objs differs from its slabs", (uintptr_t)c);
    if (c->allocs - c->frees != c->active_objs)
        return fail(w, "cache allocs - frees differs from active_objs", (uintptr_t)c);
    if (kh_cache_nocpu(c) && !check_mags(h, w, c))
        return false;
    *slabs += c->nr_partial + c->nr_empty + c->nr_full;
    return true;
}

static void check_all(kheap_t *h, struct walk *w)
{
    size_t total = 0, meta = 0, slabs = 0, mag_objs = 0;
    for (unsigned k = 0; k < h->nregions; k++) {
        const struct kh_region *r = &h->regions[h->order[k]];
        if (k && h->regions[h->order[k - 1]].end > r->start) {
            fail(w, "region table is out of order", r->start);
            return;
        }
    }
    for (unsigned ri = 0; ri < h->nregions; ri++) {
        total += h->regions[ri].size;
        meta += h->regions[ri].meta_bytes;
        if (!check_region(h, w, ri))
            return;
    }
    if (!check_bins(h, w))
        return;
    size_t ncaches = 0;
    kh_each_cache(h, c) {
        bool user = !(c->flags & (KH_CACHE_KMALLOC | KH_CACHE_INTERNAL));
        if (user && ncaches++ >= h->ncaches)
            return (void)fail(w, "cache list is longer than its count", (uintptr_t)c);
        if (!check_cache(h, w, c, &slabs))
            return;
    }
    for (unsigned t = 0; t < KH_MAG_TYPES; t++)
        mag_objs += h->mag_cache[t].active_objs;
    uintptr_t hp = (uintptr_t)h;
#if KH_GUARDS
    /* Sampled blocks: their bytes are committed; the FIFO of free slots
     * holds each unused or freed slot once and no other, and the live
     * slots (being freed included) are the counted ones. */
    size_t held = 0;
    unsigned char seen[KHEAP_GUARD_SLOTS] = {0};
    for (unsigned i = 0; i < h->g_nfree; i++)
        seen[h->g_ring[(h->g_head + i) % KHEAP_GUARD_SLOTS]]++;
    for (unsigned k = 0; k < KHEAP_GUARD_SLOTS && h->g_end; k++) {
        unsigned st = h->g_slot[k].state;
        held += st == KH_GS_LIVE || st == KH_GS_FREEING;
        if (seen[k] != (st == KH_GS_UNUSED || st == KH_GS_FREED))
            return (void)fail(w, "a guard slot is in the FIFO of free slots wrongly",
                              h->g_start);
    }
    if (h->g_end && held != h->g_allocs - h->g_frees)
        return (void)fail(w, "live sampled blocks differ from their counts", h->g_start);
    w->user_bytes += (size_t)(h->g_alloc_bytes - h->g_free_bytes);
#endif
    if (w->quiet && !check_run_caches(h, w))
        return;
    if (w->quiet && w->mags != mag_objs)
        fail(w, "magazines found differ from the magazines allocated", hp);
    else if (ncaches != h->ncaches)
        fail(w, "cache list is shorter than its count", hp);
    else if (slabs + w->gone_slabs != w->slabs)
        fail(w, "caches count a different number of slabs than the regions hold", hp);
    else if (total != h->total_bytes || meta != h->region_meta)
        fail(w, "region byte totals differ from the regions", hp);
    else if (w->free_pages != h->free_pages || w->slab_pages != h->slab_pages ||
             w->large_pages != h->large_pages || w->meta_pages != h->meta_pages)
        fail(w, "page counters differ from the runs", hp);
    else if (w->dirty_pages != h->dirty_pages)
        fail(w, "dirty page count differs from the free runs", hp);
    else if (w->bitmap_bytes != h->bitmap_bytes)
        fail(w, "slab bitmap byte count differs from the slabs", hp);
    else if (h->committed_bytes != w->user_bytes)
        fail(w, "committed bytes differ from the objects and large blocks handed out", hp);
    else if (h->large_alloc_bytes - h->large_free_bytes != w->large_pages * KH_PAGE)
        fail(w, "large block byte counts differ from the large blocks", hp);
    else if (h->peak_bytes < h->committed_bytes)
        fail(w, "peak_bytes is below the committed bytes", hp);
    else if (h->internal_bytes != w->internal_bytes)
        fail(w, "internal byte count differs from the internal objects", hp);
}

static const char *check(kheap_t *h, const void **addr, bool quiet)
{
    struct walk w = {0};
    w.quiet = quiet;
    if (!h || h->magic != KH_HEAP_MAGIC) {
        if (addr)
            *addr = h;
        return "not a kheap heap (bad magic)";
    }
    kh_heap_lock_all(h, true);
    check_all(h, &w);
    kh_heap_lock_all(h, false);
    if (w.msg && addr)
        *addr = w.addr;
    return w.msg;
}

const char *kheap_check(kheap_t *h, const void **addr)
{
    return check(h, addr, false);
}

const char *kheap_check_quiescent(kheap_t *h, const void **addr)
{
    return check(h, addr, true);
}

#if KHEAP_DEBUG >= 3
/* After every operation of a KHEAP_DEBUG 3 build: the whole heap, or a
 * panic naming the first inconsistency. */
void kh_debug_check(kheap_t *h, const char *function)
{
    const void *addr = NULL;
    const char *msg = kheap_check(h, &addr);
    (void)function;
    if (msg)
        kheap_port_panic(msg, addr);
}
#endif
