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
 * paths they share. kheap_reclaim and slabinfo walk every cache of the
 * heap (kh_each_cache).
 */
#include "kh_internal.h"

kheap_cache_t *kheap_cache_create(kheap_t *h, const char *name, size_t size,
                                  size_t align, kheap_ctor_fn ctor,
                                  kheap_ctor_fn dtor)
{
    return kheap_cache_create_tuned(h, name, size, align, ctor, dtor, NULL);
}

kheap_cache_t *kheap_cache_create_tuned(kheap_t *h, const char *name, size_t size,
                                        size_t align, kheap_ctor_fn ctor, kheap_ctor_fn dtor,
                                        const struct kheap_cache_tuning *tune)
{
    if (!h || size == 0 || size > KHEAP_MAX_CLASS ||
        (align && (!kh_is_pow2(align) || align > KH_PAGE)))
        return NULL;
    if (tune && ((tune->mag_cap != KHEAP_TUNE_DEFAULT && tune->mag_cap > 64) ||
                 (tune->depot_max != KHEAP_TUNE_DEFAULT && tune->depot_max > KHEAP_TUNE_DEPOT_MAX)))
        return NULL;
    struct kheap_cache *c;
    if (kh_cache_take(&h->cache_cache, (void **)&c, 1) == 0) {
        kh_account_failure(h);
        return NULL;
    }
    kh_cache_setup(h, c, name, size, align, ctor, dtor, 0);
    if (tune && tune->mag_cap != KHEAP_TUNE_DEFAULT) {
        /* Magazines come in the capacities of the magazine caches. */
        unsigned cap = tune->mag_cap;
        c->mag_cap = cap == 0 ? 0 : cap >= 64 ? 64 : cap >= 32 ? 32 : cap >= 16 ? 16 : cap >= 8 ? 8 : 4;
        if (c->mag_cap > KH_MAG_MAX)
            c->mag_cap = KH_MAG_MAX;
        if (c->mag_cap) /* the default depot bound for this capacity */
            KH_U(c)->depot_max = kh_depot_max_for(c->mag_cap, c->slot);
    }
    if (tune && tune->depot_max != KHEAP_TUNE_DEFAULT)
        KH_U(c)->depot_max = tune->depot_max;
    /* One cache line per CPU slot, and one for KHEAP_CPU_NONE, which
     * stays the sentinel. */
    KH_U(c)->percpu = kh_internal_pages(h, (KHEAP_MAX_CPUS + 1) * sizeof(struct kh_cc) +
                                         sizeof(struct kh_ucx), false);
    if (!KH_U(c)->percpu) {
        kh_cache_give(&h->cache_cache, c, kh_slab_of(h, (uintptr_t)c));
        kh_account_failure(h);
        return NULL;
    }
    for (unsigned k = 0; k <= KHEAP_MAX_CPUS; k++) {
        kh_cc_load(&KH_U(c)->percpu[k], &kh_mag_sentinel);
        KH_U(c)->percpu[k].prev = &kh_mag_sentinel;
        kh_vg_benign(&KH_U(c)->percpu[k].allocs, sizeof(uint64_t));
        kh_vg_benign(&KH_U(c)->percpu[k].frees, sizeof(uint64_t));
        kh_vg_benign(&KH_U(c)->percpu[k].miss, sizeof KH_U(c)->percpu[k].miss);
    }
    kh_vg_benign(kh_ucx_of(c), sizeof(struct kh_ucx));

    kh_lock(&h->caches_lock);
    KH_U(c)->prev = h->caches_tail;
    KH_U(c)->next = NULL;
    if (h->caches_tail)
        KH_U(h->caches_tail)->next = c;
    else
        h->caches = c;
    h->caches_tail = c;
    h->ncaches++;
    kh_unlock(&h->caches_lock);
    return c;
}

size_t kheap_cache_shrink(kheap_cache_t *c)
{
    size_t bytes = kh_cache_drain(c, false, NULL);
    bytes += kh_cache_release(c, 0, NULL);
    kh_debug_check(c->heap, "kheap_cache_shrink");
    return bytes;
}

int kh_cache_destroy(kheap_cache_t *c)
{
    if (!c || c->magic != KH_CACHE_MAGIC)
        return KHEAP_EINVAL;
    if (c->flags & (KH_CACHE_KMALLOC | KH_CACHE_INTERNAL))
        return KHEAP_EINVAL;
    kheap_t *h = c->heap;
    struct kh_counts n;
    kh_cache_counts(h, c, &n);
    if (n.allocs != n.frees) {
        kh_report(KHEAP_REPORT_BUSY, c, c, "kheap_cache_destroy");
        return KHEAP_EBUSY;
    }
    /* Off the list first: a thread that exits meanwhile (kheap_cpu_flush
     * walks the list under caches_lock) then cannot hand this cache's
     * magazines back while they are emptied below. */
    kh_lock(&h->caches_lock);
    if (KH_U(c)->prev == c) {
        /* Off the list already: destroyed by another call, which a walk
         * may have yet to finish (below). */
        kh_unlock(&h->caches_lock);
        return KHEAP_EINVAL;
    }
    if (KH_U(c)->prev)
        KH_U(KH_U(c)->prev)->next = KH_U(c)->next;
    else
        h->caches = KH_U(c)->next;
    if (KH_U(c)->next)
        KH_U(KH_U(c)->next)->prev = KH_U(c)->prev;
    else
        h->caches_tail = KH_U(c)->prev;
    KH_U(c)->prev = c; /* the mark of a cache off the list (caches_lock) */
    h->ncaches--;
    /* Nothing is live: every object is cached or in a slab. The caller
     * promises no CPU uses the cache any more, so every CPU's magazines
     * may be emptied from here. caches_lock stays held while they are
     * (the cache's lock and the page lock come after it in the order):
     * kheap_check, which walks every slab holding the locks of the listed
     * caches only, then cannot read this cache's slabs while they
     * change. The empty slabs leave the cache's lists meanwhile, onto
     * later, and are given back, destructors run, once caches_lock is
     * released (a slab on no list is one kheap_check accepts); a double
     * free found in a magazine is reported then too. */
    struct kh_later later = {.n = 0};
    kh_cache_drain(c, true, &later);
    kh_cache_release(c, 0, &later);
    kh_unlock(&h->caches_lock);
    kh_later_finish(&later);
    kh_later_deliver(&later);
    kh_lock(&h->page_lock);
    h->retired_allocs += n.allocs;
    h->retired_frees += n.frees;
    h->retired_bytes += n.allocs * c->size;
    kh_unlock(&h->page_lock);
    /* A walk on another thread (kheap_reclaim, kheap_tick, a CPU flush)
     * that took empty slabs of c before c left the list may still be
     * running their destructors, with no lock held: c must outlive that.
     * No new one can start (c is off the list). Whoever ends last gives c
     * back: this call if no walk holds a slab of c now, else the walk
     * that frees the last (kh_later_finish), counted in caches_dying
     * until then for kheap_fini. So destroy never waits for a destructor
     * of another thread. */
    __atomic_add_fetch(&h->caches_dying, 1u, __ATOMIC_RELAXED);
    if (__atomic_fetch_or(&kh_ucx_of(c)->slabs_later, KH_LATER_DYING, __ATOMIC_ACQ_REL) == 0) {
        kh_cache_retire(c);
        __atomic_sub_fetch(&h->caches_dying, 1u, __ATOMIC_RELEASE);
    }
    kh_debug_check(h, "kheap_cache_destroy");
    return KHEAP_OK;
}

/* ------------------------------------------------------------------ */
/* Shrinkers. */

int kheap_shrinker_register(kheap_t *h, kheap_shrink_fn fn, void *arg)
{
    if (!h || !fn)
        return KHEAP_EINVAL;
    int e = KHEAP_ETOOMANY;
    kh_lock(&h->page_lock);
    if (h->nshrinkers < KHEAP_MAX_SHRINKERS) {
        h->shrinkers[h->nshrinkers].fn = fn;
        h->shrinkers[h->nshrinkers].arg = arg;
        h->nshrinkers++;
        e = KHEAP_OK;
    }
    kh_unlock(&h->page_lock);
    return e;
}

int kheap_shrinker_unregister(kheap_t *h, kheap_shrink_fn fn, void *arg)
{
    if (!h || !fn)
        return KHEAP_EINVAL;
    int e = KHEAP_EINVAL;
    kh_lock(&h->page_lock);
    for (unsigned i = 0; i < h->nshrinkers; i++) {
        if (h->shrinkers[i].fn == fn && h->shrinkers[i].arg == arg) {
            for (unsigned k = i + 1; k < h->nshrinkers; k++)
                h->shrinkers[k - 1] = h->shrinkers[k];
            h->nshrinkers--;
            e = KHEAP_OK;
            break;
        }
    }
    kh_unlock(&h->page_lock);
    /* A pass that copied the list before the removal may still call fn:
     * wait for it (a shrinker never unregisters, so this ends). */
    while (e == KHEAP_OK && __atomic_load_n(&h->shrinking, __ATOMIC_ACQUIRE))
        ;
    return e;
}

int kheap_set_low_water(kheap_t *h, size_t bytes)
{
    if (!h)
        return KHEAP_EINVAL;
    kh_lock(&h->page_lock);
    h->low_water = (bytes + KH_PAGE - 1) / KH_PAGE;
    kh_unlock(&h->page_lock);
    return KHEAP_OK;
}

size_t kh_shrink(kheap_t *h, size_t want, struct kheap_cache *who)
{
    struct kh_shrinker list[KHEAP_MAX_SHRINKERS];
    if (__atomic_exchange_n(&h->shrinking, 1, __ATOMIC_ACQUIRE))
        return 0; /* one pass at a time: a nested or concurrent one is not run */
    kh_lock(&h->page_lock);
    unsigned n = h->nshrinkers;
    for (unsigned i = 0; i < n; i++)
        list[i] = h->shrinkers[i];
    kh_unlock(&h->page_lock);
    size_t got = 0;
    for (unsigned i = 0; i < n && got < want; i++) {
        size_t b = list[i].fn(h, want - got, list[i].arg);
        got = b > want - got ? want : got + b;
    }
    if (n) {
        __atomic_fetch_add(&h->shrink_passes, 1, __ATOMIC_RELAXED);
        struct kh_xc *x = who ? kh_xc_get(h, who) : NULL;
        if (x)
            __atomic_fetch_add(&x->shrink_calls, 1, __ATOMIC_RELAXED);
    }
    __atomic_store_n(&h->shrinking, 0, __ATOMIC_RELEASE);
    return got;
}

/* This CPU's magazines and cached large blocks, every depot and every
 * empty slab back to the page layer. */
static size_t reclaim_caches(kheap_t *h)
{
    size_t bytes = 0;
    /* The walk ends with the magazine caches: the magazines emptied
     * before them went back there. Double frees found in the user caches'
     * magazines, and the destructors of their empty slabs, wait in later
     * until the walk has left them, and with them caches_lock. */
    struct kh_later later = {.n = 0};
    kh_each_cache_locking(h, c) {
        bytes += kh_cache_drain(c, false, kh_walk_later(c, &later));
        bytes += kh_cache_release(c, 0, kh_walk_later(c, &later));
    }
    kh_later_finish(&later);
    kh_later_deliver(&later);
    bytes += kh_runs_flush_here(h);
    kh_debug_check(h, "kheap_reclaim");
    return bytes;
}

/* This CPU's answer to a request (cpu.c), then the depots and empty
 * slabs back to the page layer, as kheap_reclaim. */
static size_t answer(kheap_t *h)
{
    struct kh_later later = {.n = 0};
    size_t bytes = kh_cpu_answer(h, &later);
    kh_later_finish(&later);
    kh_later_deliver(&later);
    return bytes + reclaim_caches(h);
}

size_t kheap_cpu_poll(kheap_t *h)
{
    size_t bytes = 0;
    if (h && kh_cpu_tick(h, false, &bytes))
        bytes += answer(h);
    return bytes;
}

/* ------------------------------------------------------------------ */
/* Decay: memory idle for a whole epoch goes down a layer at its end.
 * Bonwick's working-set rule at every layer: each layer counts the least
 * it held during the epoch (depot magazines, empty slabs, resident free
 * pages) and gives back that many, which were idle all epoch. A program
 * that frees and reallocates within an epoch never reaches a minimum
 * above what it reuses, so it keeps its memory (hysteresis); one that
 * stops gives it all back one to three epochs later: the magazines go to
 * the slabs before the slabs are looked at, and the slabs to the pages
 * before the pages, but what one layer sends down at an epoch's end was
 * not idle in the next layer during that epoch, so it goes on down at
 * the next end (or at once after a quiet stretch: kh_tick). */

int kheap_set_decay(kheap_t *h, unsigned ms)
{
    if (!h)
        return KHEAP_EINVAL;
    __atomic_store_n(&h->decay_ms, (uint32_t)ms, __ATOMIC_RELAXED);
    __atomic_store_n(&h->decay_next, (uint64_t)0, __ATOMIC_RELAXED);
    if (!ms) {
        /* Back to the immediate purge rule of pages.c. */
        kh_lock(&h->page_lock);
        h->decay_driven = false;
        h->purge_peak_prev = 0;
        kh_unlock(&h->page_lock);
    }
    return KHEAP_OK;
}

/* One epoch's end at every layer: what each held through the whole
 * epoch goes down one layer, and each starts counting again. Returns the
 * bytes given back. */
static size_t decay_walk(kheap_t *h)
{
    size_t bytes = 0;
    struct kh_later later = {.n = 0};
    kh_each_cache_locking(h, c) {
        bytes += kh_depot_decay(h, c, kh_walk_later(c, &later));
        bytes += kh_cache_decay(c, kh_walk_later(c, &later));
    }
    kh_later_finish(&later);
    kh_later_deliver(&later);
    return bytes + kh_pages_decay(h);
}

size_t kheap_tick(kheap_t *h, uint64_t now_ms)
{
    return kh_tick(h, now_ms, false);
}

size_t kh_tick(kheap_t *h, uint64_t now_ms, bool polled)
{
    if (!h)
        return 0;
    uint32_t ms = __atomic_load_n(&h->decay_ms, __ATOMIC_RELAXED);
    uint64_t next = __atomic_load_n(&h->decay_next, __ATOMIC_RELAXED);
    /* A poll (kmalloc.c, decay_poll: the port's clock) moves decay_seen
     * up to its time, and keeps the time it replaced: the last poll's, in
     * the same clock. A compare-and-swap, so racing polls leave the
     * latest; a store a millisecond or so (a coarse clock's tick). The
     * kernel's or a program's own calls of kheap_tick may use another
     * clock, and leave it alone. */
    uint64_t last = 0;
    if (polled) {
        uint64_t seen = __atomic_load_n(&h->decay_seen, __ATOMIC_RELAXED);
        while (now_ms > seen) {
            if (__atomic_compare_exchange_n(&h->decay_seen, &seen, now_ms, true,
                                            __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
                last = seen;
                break;
            }
        }
    }
    /* On every call, since only this CPU may empty its caches while it
     * runs (cpu.c): its answer to a reclaim that could not reach it, and
     * its cache of large blocks back to the pages if the CPU took none
     * from it since the last epoch end it saw. */
    size_t bytes = 0;
    if (kh_cpu_tick(h, ms != 0, &bytes))
        bytes += answer(h);
    if (!ms || now_ms < next || __atomic_exchange_n(&h->decay_busy, 1u, __ATOMIC_ACQUIRE))
        return bytes;
    __atomic_store_n(&h->decay_next, now_ms + ms, __ATOMIC_RELAXED);
    if (next) { /* the first call only starts the first epoch */
        bytes += decay_walk(h);
        __atomic_add_fetch(&h->decay_epochs, 1u, __ATOMIC_RELAXED);
        /* A quiet stretch: no poll came for two epochs or more before
         * this one. The paths that move memory between the layers as a
         * program allocates and frees poll before they do (kmalloc.c,
         * decay_poll), so the depots, slabs and pages held through the
         * stretch what they hold now, idle all that time. The stretch
         * ends as an epoch of its own, whose walks give it all back at
         * this call (each walk sends down a layer what the walk before
         * sent into it: depot magazines, then the slabs they emptied,
         * then those slabs' pages), not one to three epochs later, which
         * a server woken by one request after a long idle time may be
         * slow to reach. Two epochs, not one: a program that works in
         * bursts less than two epochs apart keeps its memory from one
         * burst to the next. Only with a port clock, whose polls the
         * slow paths make: the kernel's calls say nothing of the slow
         * paths between them. A racing poll that ended a stretch a moment
         * before this one (its store not yet seen) at worst has what it
         * had just put in a layer sent down with the rest, to be taken
         * again from the layer below. */
        if (KHEAP_PORT_CLOCK && last && now_ms - last >= 2 * (uint64_t)ms) {
            for (int walk = 0; walk < 3; walk++)
                bytes += decay_walk(h);
            __atomic_add_fetch(&h->decay_epochs, 1u, __ATOMIC_RELAXED);
        }
    } else {
        kh_pages_decay(h); /* sets the minima: nothing was idle before */
    }
    __atomic_store_n(&h->decay_busy, 0u, __ATOMIC_RELEASE);
    kh_debug_check(h, "kheap_tick");
    return bytes;
}

#if KHEAP_PORT_CPU_REACH
static void reach_one(unsigned cpu, void *h)
{
    kh_cpu_flush_heap(h, cpu); /* (which counts as its answer) */
}
#endif

/* Whether a reclaim of a failing or pressed allocation (count_shrunk)
 * should ask the other CPUs: when every CPU that has used the heap has
 * answered the last request, or else once per decay epoch. So a program
 * whose allocations keep failing makes each CPU empty its caches at most
 * once per answer it gave, not at every slow path, and a CPU that never
 * answers (asleep, never ticked) holds back at most an epoch's requests.
 * Reads only: flush_seen and the CPUs' states change under the reader,
 * which then asks once too often or too seldom; ask_epoch is a hint, and
 * two reclaims that race both ask (one request more). */
static bool ask_due(kheap_t *h)
{
    uint32_t e = (uint32_t)__atomic_load_n(&h->decay_epochs, __ATOMIC_RELAXED) + 1u;
    if (__atomic_load_n(&h->ask_epoch, __ATOMIC_RELAXED) != e) {
        __atomic_store_n(&h->ask_epoch, e, __ATOMIC_RELAXED);
        return true;
    }
    for (unsigned cpu = 0; cpu < KHEAP_MAX_CPUS; cpu++)
        if (__atomic_load_n(&h->cpu[cpu], __ATOMIC_ACQUIRE) != &kh_cpu_sentinel &&
            kh_cpu_owes(h, cpu))
            return false;
    return true;
}

size_t kh_reclaim(kheap_t *h, struct kheap_cache *who, bool count_shrunk)
{
    size_t got = kh_shrink(h, SIZE_MAX, who);
    /* The caller's CPU gives back at once, the CPUs the port reaches
     * below too, and the others at their next tick or poll (cpu.c:
     * kh_cpu_ask). */
    if (!count_shrunk || ask_due(h))
        kh_cpu_ask(h);
#if KHEAP_PORT_CPU_REACH
    /* The CPUs the port can hand the caller for a moment (hosted: the
     * lent slots no thread holds): their magazines to the depots, which
     * the walk below empties. */
    kheap_port_cpu_reach(reach_one, h);
#endif
    return (count_shrunk ? got : 0) + reclaim_caches(h);
}

void kheap_cache_info(kheap_cache_t *c, struct kheap_cache_info *out)
{
    struct kh_counts n;
    kh_cache_counts(c->heap, c, &n);
    kh_cache_name(c, out->name);
    out->objsize = c->size;
    out->objperslab = c->objs;
    out->pagesperslab = c->pages;
    out->allocs = n.allocs;
    out->frees = n.frees;
    out->cpu_hits = n.hits;
    out->cpu_misses = n.misses;
    /* The bypass counters: the cache's own, or the kmalloc classes' once
     * made (zero before); the KHEAP_NOLOCK objects from the per-CPU
     * counts. */
    struct kh_xc *x = kh_xc_of(c->heap, c), none = {0, 0, 0, 0, 0, 0};
    if (!x)
        x = &none;
    out->bulk_allocs = __atomic_load_n(&x->bulk_allocs, __ATOMIC_RELAXED);
    out->bulk_frees = __atomic_load_n(&x->bulk_frees, __ATOMIC_RELAXED);
    out->reserve_allocs = __atomic_load_n(&x->reserve_allocs, __ATOMIC_RELAXED);
    out->shrink_calls = __atomic_load_n(&x->shrink_calls, __ATOMIC_RELAXED);
    out->nolock_fails = __atomic_load_n(&x->nolock_fails, __ATOMIC_RELAXED);
    out->nolock_deferred = __atomic_load_n(&x->nolock_deferred, __ATOMIC_RELAXED);
    out->nolock_allocs = out->nolock_frees = 0;
    for (unsigned cpu = 0; cpu < KHEAP_MAX_CPUS && !(c->flags & KH_CACHE_INTERNAL); cpu++) {
        const struct kh_nlc *nl = kh_nlc_of(c->heap, c, cpu);
        if (nl) {
            out->nolock_allocs += __atomic_load_n(&nl->allocs, __ATOMIC_RELAXED);
            out->nolock_frees += __atomic_load_n(&nl->frees, __ATOMIC_RELAXED);
        }
    }
    out->mag_cap = c->mag_cap;
    out->depot_max = kh_cache_whole(c) ? KH_U(c)->depot_max : 0;
    kh_lock(&c->lock);
    out->num_slabs = c->nr_partial + c->nr_empty + c->nr_full;
    out->active_slabs = c->nr_partial + c->nr_full;
    out->empty_slabs = c->nr_empty;
    out->depot_objs = 0;
    for (const struct kh_mag *m = kh_cache_whole(c) ? KH_U(c)->depot_full : NULL; m; m = m->next)
        out->depot_objs += m->n;
    kh_unlock(&c->lock);
#if KH_HOMES
    /* (and the full magazines sent home, in the CPUs' inboxes and
     * stashes: the heap's count and the CPUs' dues, cpu.c, "Inboxes") */
    if (c->cls != KH_NO_CLASS) {
        int64_t mailed = __atomic_load_n(&c->heap->mailed[c->cls], __ATOMIC_RELAXED);
        for (unsigned cpu = 0; cpu < KHEAP_MAX_CPUS; cpu++) {
            const struct kh_mail *mail =
                kh_cpu_mail(__atomic_load_n(&c->heap->cpu[cpu], __ATOMIC_ACQUIRE));
            if (mail)
                mailed += __atomic_load_n(&mail->due[c->cls], __ATOMIC_RELAXED);
        }
        if (mailed > 0)
            out->depot_objs += (size_t)mailed * c->mag_cap;
    }
#endif
    out->num_objs = out->num_slabs * c->objs;
    /* Counters read a moment apart may disagree while other CPUs work;
     * when the cache is quiet they are exact. */
    out->active_objs = n.allocs - n.frees;
    out->cached_objs = n.active > out->active_objs ? n.active - out->active_objs : 0;
    if (out->depot_objs > out->cached_objs)
        out->depot_objs = out->cached_objs; /* read a moment apart */
}

size_t kheap_slabinfo(kheap_t *h, struct kheap_cache_info *rows, size_t max)
{
    size_t n = 0;
    kh_each_cache_locking(h, c) {
        if (n < max)
            kheap_cache_info(c, &rows[n]);
        n++;
    }
    return n;
}
