/*
 * cpu.c - per-CPU magazines in front of every cache, and their depots.
 *
 * Bonwick and Adams, "Magazines and Vmem" (USENIX 2001): each CPU (each
 * thread slot when hosted) holds, for each cache, a *loaded* and a
 * *previous* magazine: stacks of up to mag_cap constructed objects. An
 * allocation pops from loaded, a free pushes onto it; that is the whole hit
 * path (kh_fast.h, and kmalloc.c's cache_alloc/cache_free): no lock, no atomic
 * read-modify-write, and only the CPU's own cache lines are written (its
 * kh_cc, padded to a cache line, and its magazines). When loaded is empty
 * (or full) and previous is full (or empty) the two swap (kh_cpu_alloc_swap,
 * kh_cpu_free_swap: the miss paths try that before anything else); only when both
 * miss does the CPU go to the cache's *depot*, a list of full and a list of
 * empty magazines under the cache's lock, and exchange one whole magazine,
 * so the lock is taken at most once per mag_cap/2 operations in the worst
 * alternating pattern. A depot with no full magazine refills the loaded
 * one with mag_cap/2 objects from the slabs in one lock hold. On a heap
 * with homes (slab.c, "Homes") the depot's full magazines carry the home
 * of their objects, and a CPU takes its own first.
 *
 * Magazine sizes are tuned per class, not adapted at run time: 64 objects
 * up to 128 B, 32 up to 512 B, 16 up to 2 KiB, 8 up to 8 KiB, 4 above; on
 * a heap of KHEAP_MAG_WIDE_MIN_HEAP or more (the hosted default heap's),
 * 64 up to 512 B and 32 up to 1 KiB. A magazine then holds at most 32 KiB
 * up to 2 KiB (64 KiB at 8 KiB), so small hot objects get long runs of
 * hits while big objects do not pin much memory (Bonwick sizes his
 * magazine types by object size too; his run-time growth on lock
 * contention is not built: with 2 exchanges per mag_cap operations the
 * depot lock is rarely contended). A program whose uses of a class go up
 * and down at random swaps its two magazines about once per mag_cap
 * operations of the class (a swap leaves the loaded one one object from
 * the end it left): the wider ones took larson 6 % less time, and a small
 * heap shared by several CPUs cannot spare what they hold
 * (docs/DESIGN.md, "Magazine size").
 *
 * The depot trims itself: every KH_DEPOT_EPOCH exchanges it gives back as
 * many full and empty magazines as it held at the least during the epoch
 * (Bonwick's working-set rule, counted in exchanges instead of seconds),
 * and it never keeps more than depot_max full magazines (KHEAP_DEPOT_MAX,
 * or fewer so they hold at most KHEAP_DEPOT_BYTES): a CPU that only frees
 * (a consumer) sends its overflow straight to the slabs, so it cannot grow
 * without bound. A kmalloc class's bound grows (depot_grow, up to
 * KHEAP_DEPOT_GROW times) when the overflow comes back: an allocation
 * that finds no full magazine after a free sent one to the slabs means
 * the objects went the costly way, through the slabs and back (a
 * producer that wants what a consumer frees, or one thread whose live
 * objects swing by more than the depot holds). A grown depot is trimmed
 * by decay (time) only, which also halves the growth every epoch (it
 * doubles back at once while the swings go on): its exchanges come in
 * bursts, longer than an epoch of KH_DEPOT_EPOCH exchanges.
 *
 * Objects in magazines and depots are allocated as far as their slabs know
 * (bit set, counted in inuse); they are *cached*, not live. The hit path
 * counts only in its CPU's own counters, so the number cached is derived
 * on read, not kept. Invariant per cache, when no CPU is inside its hit
 * path:
 *   active_objs (slab view) == live objects + objects in magazines
 *   live objects == sum over CPUs of (allocs - frees) + nocpu_allocs -
 *                   nocpu_frees
 *
 * What reaches what: the CPU's own kh_cc is written only by that CPU (or
 * by kheap_cpu_flush for a CPU/thread that has stopped, which hands its
 * magazines to the depots). kheap_reclaim drains the depots and the
 * calling CPU's own magazines into the slabs; it cannot take objects out
 * of another running CPU's magazines (that CPU uses them without a lock),
 * so up to 2 * mag_cap objects per cache per other running CPU stay
 * cached, and on a heap with homes up to mag_cap more per kmalloc class
 * in the CPU's remote front (slab.c, "Homes").
 */
#include "kh_internal.h"

#define KH_DEPOT_EPOCH 256u
_Static_assert(KH_DEPOT_EPOCH <= UINT16_MAX, "depot_ops is 16 bits");
_Static_assert(KHEAP_DEPOT_GROW >= 1 && KHEAP_DEPOT_GROW <= 256 &&
                   (KHEAP_DEPOT_GROW & (KHEAP_DEPOT_GROW - 1)) == 0,
               "KHEAP_DEPOT_GROW is a power of two from 1 to 256");

struct kh_mag kh_mag_sentinel = {
    .n = 0, .cap = 0, .home = KH_HOME_NONE, .origin = KH_HOME_NONE, .next = NULL};

/* Every CPU slot of a heap starts at this: its magazines are the sentinel,
 * whose capacity 0 makes both hit paths miss, so the first operation on a
 * CPU falls into the slow path, which sets the CPU up. Never written. */
#define KH_CC_EMPTY                                                           \
    {                                                                         \
        .top = kh_mag_sentinel.obj, .base = kh_mag_sentinel.obj,              \
        .limit = kh_mag_sentinel.obj, .prev = &kh_mag_sentinel                \
    }
#define KH_CPU_NEVER(self)                                                    \
    {                                                                         \
        .cc = {[0 ... KH_CC_COUNT - 1] = KH_CC_EMPTY},                        \
        .direct = {[0 ... KH_DIRECT_COUNT - 1] = &(self).cc[0]},              \
        KH_CPU_NEVER_RUNS KH_CPU_NEVER_SELF                                   \
    }
#if KH_RUNS
struct kh_runcache kh_runcache_none;
#define KH_CPU_NEVER_RUNS .run_front = {.runs = &kh_runcache_none},
#else
#define KH_CPU_NEVER_RUNS
#endif
#if KH_HOMES
#define KH_CPU_NEVER_SELF .self = KH_HOME_NONE, .remote = 0,
#else
#define KH_CPU_NEVER_SELF
#endif
struct kh_cpu kh_cpu_sentinel = KH_CPU_NEVER(kh_cpu_sentinel);
struct kh_cpu kh_cpu_claimed = KH_CPU_NEVER(kh_cpu_claimed);

static unsigned mag_type(unsigned cap)
{
    unsigned t = cap >= 64 ? 4 : cap >= 32 ? 3 : cap >= 16 ? 2 : cap >= 8 ? 1 : 0;
    KH_ASSERT(t < KH_MAG_TYPES, (void *)0);
    return t;
}

static struct kh_mag *mag_new(kheap_t *h, unsigned cap)
{
    struct kh_mag *m;
    if (kh_cache_take(&h->mag_cache[mag_type(cap)], (void **)&m, 1) == 0)
        return NULL;
    m->n = 0;
    m->cap = (uint16_t)cap;
    m->home = KH_HOME_NONE;
    m->origin = KH_HOME_NONE;
    m->next = NULL;
    return m;
}

static void mag_free(kheap_t *h, struct kh_mag *m)
{
    if (m == &kh_mag_sentinel)
        return;
    struct kheap_cache *mc = &h->mag_cache[mag_type(m->cap)];
    enum kheap_report_kind bad = kh_cache_give(mc, m, kh_slab_of(h, (uintptr_t)m));
    KH_ASSERT(!bad, m);
    (void)bad;
}

/* Give a magazine's objects back to their slabs; it is empty after.
 * Returns the bytes of slabs that went back to the page layer. Refused
 * objects are reported into later (NULL: at once). */
static size_t mag_flush(struct kheap_cache *c, struct kh_mag *m, struct kh_later *later)
{
    size_t bytes = 0;
    if (m->n) {
        bytes = kh_cache_give_n(c, m->obj, m->n, later);
        m->n = 0;
    }
    return bytes;
}

/* ------------------------------------------------------------------ */
/* The per-CPU state of a cache. */

/* KH_CC_COUNT fronts at cc, each on the sentinel (every pop and push
 * misses), their counters read by other CPUs (benign for valgrind). */
static void fronts_empty(struct kh_cc *cc)
{
    for (unsigned i = 0; i < KH_CC_COUNT; i++) {
        cc[i] = (struct kh_cc)KH_CC_EMPTY;
        kh_vg_benign(&cc[i].allocs, sizeof(uint64_t));
        kh_vg_benign(&cc[i].frees, sizeof(uint64_t));
    }
}

/* This CPU's state of h (its fronts of the kmalloc classes), set up if
 * it is not yet (cpu != NONE); NULL if there is no memory for it.
 * Runs on cpu (kheap_port_cpu_enter held). */
static struct kh_cpu *cpu_setup(kheap_t *h, unsigned cpu)
{
    struct kh_cpu *pc = h->cpu[cpu];
    if (pc == &kh_cpu_sentinel) {
        pc = kh_internal_pages(h, sizeof *pc, false);
        if (!pc)
            return NULL;
        fronts_empty(pc->cc);
#if KH_HOMES
        /* (none yet; a heap without homes never has any: its remote
         * fronts are the fronts, 0 bytes away) */
        pc->remote = h->homes ? (char *)&kh_cpu_sentinel - (char *)pc : 0;
        kh_vg_benign(&pc->remote, sizeof pc->remote);
        pc->self = cpu;
        pc->mail = NULL; /* (made by the first send to it, or its own: mail_make) */
#endif
        pc->run_front = (struct kh_cc)KH_CC_EMPTY;
        pc->run_front.limit = NULL;
#if KH_RUNS
        pc->run_front.runs = &kh_runcache_none;
#endif
        /* Free's slot test (kh_fast.h), over the offset in the slab
         * (kh_pt_read). */
#if !KH_SPLIT /* (a split build has no hit paths) */
        for (unsigned i = 0; i < KHEAP_NUM_CLASSES; i++) {
            pc->cc[KH_CC(i)].divtest = h->kmalloc[i].divtest;
            pc->cc[KH_CC(i)].slot_lim = h->kmalloc[i].slot_lim;
        }
#endif
        for (unsigned k = 0; k < KH_DIRECT_COUNT; k++)
            pc->direct[k] = &pc->cc[KH_CC(kh_small_class[k])];
        kh_vg_benign(pc->miss, sizeof pc->miss);
        kh_vg_benign(&pc->busy, sizeof pc->busy);
        kh_vg_benign(pc->nlc, sizeof pc->nlc);
        /* Readers on other CPUs (stats, check, flush) see either the
         * sentinel or the initialised structure. */
        __atomic_store_n(&h->cpu[cpu], pc, __ATOMIC_RELEASE);
    }
    return pc;
}

/* This CPU's front of cache c, its state set up if it is not yet (cpu !=
 * NONE); NULL if there is no memory for it.
 * Runs on cpu (kheap_port_cpu_enter held). */
static struct kh_cc *cc_setup(kheap_t *h, struct kheap_cache *c, unsigned cpu)
{
    if (c->cls != KH_NO_CLASS && !cpu_setup(h, cpu))
        return NULL;
    return kh_cc_of(h, c, cpu);
}

/* The miss counters that go with CPU cpu's front of c (the CPU has
 * used the heap: its front is not the sentinel's). */
static struct kh_misses *miss_of(kheap_t *h, struct kheap_cache *c, unsigned cpu)
{
    return c->cls != KH_NO_CLASS ? &h->cpu[cpu]->miss[c->cls] : &kh_cc_of(h, c, cpu)->miss;
}


/* A depot list: pop its first magazine (NULL if empty), push one. Cache
 * lock held. */
static struct kh_mag *mag_pop(struct kh_mag **list, uint32_t *count)
{
    struct kh_mag *m = *list;
    if (m) {
        *list = m->next;
        (*count)--;
    }
    return m;
}

static void mag_push(struct kh_mag **list, uint32_t *count, struct kh_mag *m)
{
    m->next = *list;
    *list = m;
    (*count)++;
}

/* The home of a full magazine bound for the depot (slab.c, "Homes"): its
 * top object's slab's, that of the last object freed into it. No lock:
 * the object is cached, so its slab lives, and a home that changes
 * meanwhile only sends the magazine to another CPU first. */
static uint8_t mag_home(kheap_t *h, const struct kh_mag *m)
{
    if (!m->n || !h->homes)
        return KH_HOME_NONE;
    const struct kh_page *s = kh_slab_of(h, (uintptr_t)m->obj[m->n - 1]);
    return __atomic_load_n(&s->home, __ATOMIC_RELAXED);
}

/* The first of the depot's first KH_HOME_SCAN full magazines homed at
 * cpu or at none, taken off the list, or NULL. Cache lock held. */
static struct kh_mag *depot_take_home(struct kheap_cache *c, unsigned cpu)
{
    struct kh_mag **at = &KH_U(c)->depot_full;
    for (unsigned q = 0; *at && q < KH_HOME_SCAN; q++, at = &(*at)->next) {
        struct kh_mag *m = *at;
        if (m->home == cpu || m->home == KH_HOME_NONE) {
            *at = m->next;
            KH_U(c)->nr_full_mags--;
            return m;
        }
    }
    return NULL;
}

/* The working-set rule: take off the depot as many full and empty
 * magazines as it held at the least since the last trim (idle all that
 * time), and start a new count. Cache lock held. Returns them as a list
 * (linked through next) for the caller to flush and free after unlocking. */
static struct kh_mag *depot_trim(struct kheap_cache *c)
{
    struct kh_mag *out = NULL, *m;
    uint32_t n = 0;
    for (size_t k = KH_U(c)->full_min;
         k && (m = mag_pop(&KH_U(c)->depot_full, &KH_U(c)->nr_full_mags)); k--)
        mag_push(&out, &n, m);
    for (size_t k = KH_U(c)->empty_min;
         k && (m = mag_pop(&KH_U(c)->depot_empty, &KH_U(c)->nr_empty_mags)); k--)
        mag_push(&out, &n, m);
    KH_U(c)->depot_ops = 0;
    KH_U(c)->full_min = KH_U(c)->nr_full_mags;
    KH_U(c)->empty_min = KH_U(c)->nr_empty_mags;
    return out;
}

/* Account the epoch and trim the depot (cache lock held). Returns a list of
 * magazines (linked through next) for the caller to flush and free after
 * unlocking. */
static struct kh_mag *depot_tick(struct kheap_cache *c)
{
    if (KH_U(c)->nr_full_mags < KH_U(c)->full_min)
        KH_U(c)->full_min = KH_U(c)->nr_full_mags;
    if (KH_U(c)->nr_empty_mags < KH_U(c)->empty_min)
        KH_U(c)->empty_min = KH_U(c)->nr_empty_mags;
    if (++KH_U(c)->depot_ops < KH_DEPOT_EPOCH)
        return NULL;
    if (KH_U(c)->depot_shift) { /* trimmed by decay only (above) */
        KH_U(c)->depot_ops = 0;
        KH_U(c)->full_min = KH_U(c)->nr_full_mags;
        KH_U(c)->empty_min = KH_U(c)->nr_empty_mags;
        return NULL;
    }
    return depot_trim(c);
}

/* The depot's bound now, in full magazines. Cache lock held. */
static uint32_t depot_room(const struct kheap_cache *c)
{
    /* (depot_shift is written with atomic stores under the lock, so that
     * the inboxes' senders may read it without: inbox_send) */
    return KH_U(c)->depot_max << __atomic_load_n(&KH_U(c)->depot_shift, __ATOMIC_RELAXED);
}

/* An allocation found no full magazine in the depot and refills from the
 * slabs. If a free sent a magazine to the slabs since the last such
 * refill (overflowed), the bound made the objects take the costly way
 * through the slabs and back (a bitmap, a list and a descriptor per
 * object, mag_cap/2 objects a lock hold): a kmalloc class's depot may then
 * hold twice as many, up to KHEAP_DEPOT_GROW times depot_max (user caches
 * keep the bound they were given). Whoever freed: a consumer's frees that
 * a producer wants, or one thread whose live objects of the class swing
 * by more than the depot holds (random sizes: rptest took one lock hold
 * per 9 operations on blocks of 4 to 16 KiB with the plain bound). A
 * grown depot is trimmed by decay, which halves the growth each epoch.
 * Cache lock held. */
static void depot_grow(struct kheap_cache *c)
{
    if (!KH_U(c)->overflowed)
        return;
    KH_U(c)->overflowed = 0;
    if (c->cls != KH_NO_CLASS && (2u << KH_U(c)->depot_shift) <= KHEAP_DEPOT_GROW)
        __atomic_store_n(&KH_U(c)->depot_shift, (uint8_t)(KH_U(c)->depot_shift + 1),
                         __ATOMIC_RELAXED);
}

static size_t mags_release(kheap_t *h, struct kheap_cache *c, struct kh_mag *list,
                           struct kh_later *later)
{
    size_t bytes = 0;
    while (list) {
        struct kh_mag *m = list;
        list = m->next;
        bytes += mag_flush(c, m, later);
        mag_free(h, m);
    }
    return bytes;
}

#if KH_HOMES
static void inboxes_take(kheap_t *h, struct kheap_cache *c, struct kh_mag **full,
                         uint32_t *nfull, struct kh_mag **empty, uint32_t *nempty);
#endif
static void depot_put(struct kheap_cache *c, struct kh_mag **full, uint32_t *nfull,
                      struct kh_mag **empty, uint32_t *nempty);

/* The working-set rule of depot_tick, at the end of a decay epoch (time)
 * rather than of KH_DEPOT_EPOCH exchanges: a depot that saw no exchange
 * all epoch gives back every magazine. */
size_t kh_depot_decay(kheap_t *h, struct kheap_cache *c, struct kh_later *later)
{
    if (!c->mag_cap)
        return 0;
    /* Every CPU's inboxes go to the depot, whose working-set rule gives
     * back what then stays idle a whole epoch. */
    struct kh_mag *full = NULL, *empty = NULL;
    uint32_t nfull = 0, nempty = 0;
#if KH_HOMES
    inboxes_take(h, c, &full, &nfull, &empty, &nempty);
#endif
    kh_lock(&c->lock);
    depot_put(c, &full, &nfull, &empty, &nempty);
    struct kh_mag *out = depot_trim(c);
    if (KH_U(c)->depot_shift)
        __atomic_store_n(&KH_U(c)->depot_shift, (uint8_t)(KH_U(c)->depot_shift - 1),
                         __ATOMIC_RELAXED);
    kh_unlock(&c->lock);
    return out ? mags_release(h, c, out, later) : 0;
}

/* An object straight from the slabs, for a caller with no CPU slot (or no
 * memory for magazines), or of a cache with no per-CPU layer: one hold
 * of the cache's lock. */
static void *alloc_direct(struct kheap_cache *c)
{
    void *p;
    return kh_cache_take_counted(c, &p, 1, kh_cache_whole(c) ? &KH_U(c)->nocpu_allocs : NULL)
               ? p
               : NULL;
}

/* The CPU's busy word of c's front (kh_busy_of): marked around every
 * change of the front by a slow path. Acquire on entry and release on
 * exit keep the compiler from moving the changes out of the marked
 * stretch; an interrupt on this CPU sees the word whole. The front is set
 * up (the caller has a kh_cc for it). */
static inline void busy_on(kheap_t *h, struct kheap_cache *c, unsigned cpu)
{
    __atomic_fetch_add(kh_busy_of(h, c, cpu), 1, __ATOMIC_ACQUIRE);
}
static inline void busy_off(kheap_t *h, struct kheap_cache *c, unsigned cpu)
{
    __atomic_fetch_sub(kh_busy_of(h, c, cpu), 1, __ATOMIC_RELEASE);
}

/* Reverse n objects in place. */
static void objs_reverse(void **o, uint32_t n)
{
    for (uint32_t i = 0, j = n; i + 1 < j; i++, j--) {
        void *t = o[i];
        o[i] = o[j - 1];
        o[j - 1] = t;
    }
}

/* The order in which a magazine just filled from the slabs hands its
 * objects out (it pops from the top, m->obj[n - 1] first). The slabs give
 * free-list objects first, then runs of fresh slots, each run upward.
 * - A run comes out upward too, so objects allocated one after another
 *   lie one after another upward in memory, as glibc's, mimalloc's and
 *   tcmalloc's fresh blocks do. A program that walks its objects in
 *   allocation order (a garbage collector's list, a chain it built) then
 *   walks memory upward, which hardware prefetchers follow best: such a
 *   walk over 300,000 488-byte blocks took 2.5 times as long downward.
 * - A run's first slots, those on the cache line of the slot before it
 *   (another CPU's object, maybe), come out last, after the rest of the
 *   run: a CPU's first allocations after a refill are slots nobody else
 *   uses ("Passive false sharing" in docs/DESIGN.md).
 * - Runs come out before the free-list objects, the last taken first. */
static void mag_order(struct kh_mag *m, size_t slot)
{
    uint32_t n = m->n;
    for (uint32_t i = 0; i < n;) {
        uint32_t j = i + 1;
        while (j < n && (uintptr_t)m->obj[j] == (uintptr_t)m->obj[j - 1] + slot)
            j++;
        /* [i, k): the run's slots on the line of the byte before it */
        uintptr_t shared = ((uintptr_t)m->obj[i] - 1) / KH_CACHE_LINE;
        uint32_t k = i;
        while (k < j && (uintptr_t)m->obj[k] / KH_CACHE_LINE == shared)
            k++;
        /* Out first [k, j) upward, then [i, k) upward: read from the
         * top, [i, k) reversed and then [k, j) reversed. */
        objs_reverse(m->obj + i, k - i);
        objs_reverse(m->obj + k, j - k);
        i = j;
    }
}

/* Bonwick's exchange of the loaded and previous magazines: an empty
 * loaded one and a full previous one (or full and empty) trade places. */
static inline void front_swap(struct kh_cc *cc)
{
    struct kh_mag *m = cc->prev;
    cc->prev = kh_cc_unload(cc);
    kh_cc_load(cc, m);
}

/* This CPU's front of c if the CPU has used the heap and c has
 * magazines, else NULL; sets nothing up (cc_setup does). */
static struct kh_cc *cc_ready(kheap_t *h, struct kheap_cache *c, unsigned cpu)
{
    return cpu == KHEAP_CPU_NONE || !c->mag_cap ? NULL : kh_cc_of(h, c, cpu);
}

/* The swaps on their own (kh_internal.h): the most frequent misses (in
 * a program whose uses of a class go up and down at random, about 9 in
 * 10 of its misses; docs/DESIGN.md), which then skip what the rest of
 * the miss path does first (kmalloc.c: the decay poll, but for one miss
 * in KH_SWAP_POLL_EVERY, and the front's set-up). *obj is what to push,
 * or where the pop goes. busy is marked before the front is first read
 * and until its last write, as alloc_front's and free_front's callers
 * mark it, so a KHEAP_NOLOCK call that interrupts them leaves the front
 * alone. */
static kh_always_inline unsigned swap_settle(kheap_t *h, struct kheap_cache *c, bool alloc,
                                             void **obj)
{
    unsigned cpu = kheap_port_cpu_enter();
    struct kh_cc *cc = cc_ready(h, c, cpu);
    unsigned done = 0;
    if (cc) {
        busy_on(h, c, cpu);
        /* For a free, a full loaded magazine that is not the sentinel
         * (full at capacity 0) means this CPU has cached frees of c
         * before: free_front's rule for a CPU's first touch of c does not
         * apply. */
        bool settles = alloc ? cc->top == cc->base && cc->prev->n
                             : cc->top == cc->limit && cc->limit != cc->base &&
                                   cc->prev->n == 0 && cc->prev != &kh_mag_sentinel;
        if (settles) {
            struct kh_misses *m = miss_of(h, c, cpu);
            uint64_t *misses = alloc ? &m->alloc : &m->free;
            kh_bump(misses);
            front_swap(cc);
            bool done_op = alloc ? kh_cc_pop(cc, obj) : kh_cc_push(cc, *obj);
            KH_ASSERT(done_op, cc);
            (void)done_op;
#if KHEAP_VALGRIND
            if (alloc)
                *cc->top = NULL; /* as alloc_front */
#endif
            done = *misses % KH_SWAP_POLL_EVERY ? KH_SWAP_DONE : KH_SWAP_POLL;
        }
        busy_off(h, c, cpu);
    }
    kheap_port_cpu_exit(cpu);
    return done;
}

unsigned kh_cpu_alloc_swap(kheap_t *h, struct kheap_cache *c, void **out)
{
    return swap_settle(h, c, true, out);
}

unsigned kh_cpu_free_swap(kheap_t *h, struct kheap_cache *c, void *p)
{
    return swap_settle(h, c, false, &p);
}

/* ------------------------------------------------------------------ */
/* Inboxes (KH_HOMES): how a remote front's full magazine reaches its
 * home with no lock.
 *
 * A full magazine a remote front sends (remote_send) goes onto the
 * inbox of its home CPU for its class (struct kh_inbox, kh_front.h), one
 * compare-and-exchange, rather than into the depot under the cache's
 * lock. The home's allocation miss takes its whole inbox with one
 * exchange when its stash (what it took before) is empty, loads the first
 * magazine and keeps the rest in its stash; and the magazine it trades
 * for it (empty) goes back onto the inbox of the CPU that sent it
 * (kh_mag.origin), gathered first KH_RET_MAX at a time (kh_mail.ret);
 * that CPU's next send that finds no spare takes its empties whole the
 * same way into its spares. A producer and a consumer so pass magazines
 * back and forth with a few atomic operations a magazine and no lock.
 * With the depot, four threads on two CPUs passing 64-byte blocks
 * (bench/workloads.c, xmalloc-test) made up to 8 000 futex calls a run,
 * nearly all waits for the depot's lock and their wake-ups, and took a
 * quarter more time than with inboxes (docs/BENCHMARKS.md). Keeping at most two
 * magazines in the stash and four spares, the rest to the depot and to
 * the magazine cache, took twice the time: a consumer sends a burst of
 * magazines at a time, and each went through a lock twice.
 *
 * Bounds: a sender finds the depot's bound (depot_room) in the count of
 * full magazines in inboxes and stashes (kheap.mailed), and then takes
 * the depot's way, as before (its overflow to the slabs, and the depot's
 * growth when a producer misses what a consumer sent there); the
 * depot's own overflow test counts them with its own. So a stash holds
 * at most what its inbox held; the spares are magazines the CPU sent
 * that came back. Each CPU adds its sends and loads to that count
 * KH_DUE_MAX at a time (kh_mail.due): added one by one, the count's
 * cache line went back and forth between a producer's CPU and a
 * consumer's twice a magazine, and xmalloc-test took 6 % more time
 * (docs/DESIGN.md, "Inboxes"). The count, and so the bound, is exact
 * to within KH_DUE_MAX - 1 magazines a CPU. Decay moves every inbox
 * into the depot (kh_depot_decay), whose working-set rule then gives
 * back what stays idle, and at each epoch's end a CPU's tick moves its
 * stashes there too, frees its spares and sends on the empties it
 * gathers (kh_cpu_tick); kheap_reclaim empties every inbox, and a CPU's
 * flush (heap_cpu_flush: a thread's exit, kheap_cpu_flush, or the CPU's
 * next slow path when kheap_reclaim asks it) gives back its stash,
 * spares and gathered empties with its magazines, and marks
 * it away: senders then use the depot until it sends or loads again, so
 * a thread's exit does not leave others' frees waiting in its inbox. A magazine that is not
 * the CPU's to return (from its refills, or sent by itself) joins its
 * spares, up to KH_SPARE_MAX, or the depot. The double-free look-up
 * (kh_cpu_cached) moves every inbox into the depot first, and so finds
 * what this CPU sent home. */

/* The full magazines in the CPUs' inboxes and stashes of c, as far as
 * the heap's count knows (0 without homes: a user cache, or a build
 * without). */
static uint32_t mailed(const struct kheap_cache *c)
{
#if KH_HOMES
    if (c->cls != KH_NO_CLASS) {
        int32_t n = __atomic_load_n(&c->heap->mailed[c->cls], __ATOMIC_RELAXED);
        return n > 0 ? (uint32_t)n : 0; /* (below 0 for a moment: kheap.mailed) */
    }
#endif
    (void)c;
    return 0;
}

#if KH_HOMES
#define KH_SPARE_MAX 4u

/* A change of that count by n, for any CPU's magazines. */
static void mailed_add(struct kheap_cache *c, int32_t n)
{
    __atomic_fetch_add(&c->heap->mailed[c->cls], n, __ATOMIC_RELAXED);
}

/* The change by n (+1 a send, -1 a load) of the CPU whose inboxes are
 * mail, which the caller holds: into its due, and from there into the
 * count once it reaches KH_DUE_MAX either way. */
static void mailed_due(struct kheap_cache *c, struct kh_mail *mail, int32_t n)
{
    int32_t due = __atomic_load_n(&mail->due[c->cls], __ATOMIC_RELAXED) + n;
    if (due >= KH_DUE_MAX || due <= -KH_DUE_MAX) {
        mailed_add(c, due);
        due = 0;
    }
    __atomic_store_n(&mail->due[c->cls], due, __ATOMIC_RELAXED);
}

/* All of that CPU's due of c into the count (its flush, an epoch's end). */
static void mailed_settle(struct kheap_cache *c, struct kh_mail *mail)
{
    int32_t due = __atomic_load_n(&mail->due[c->cls], __ATOMIC_RELAXED);
    if (due) {
        mailed_add(c, due);
        __atomic_store_n(&mail->due[c->cls], 0, __ATOMIC_RELAXED);
    }
}

/* The same, made if there are none yet (by any CPU: the first to send to
 * it, or its own first send), so a CPU that neither sends nor receives
 * pays nothing; NULL if there is no memory (its magazines then go
 * through the depot). A page of their own, counted as metadata. */
static struct kh_mail *mail_make(kheap_t *h, struct kh_cpu *pc)
{
    struct kh_mail *m = kh_cpu_mail(pc), *none = NULL;
    if (m || pc == &kh_cpu_sentinel)
        return m;
    if (!(m = kh_internal_pages(h, sizeof *m, false)))
        return NULL;
    __builtin_memset(m, 0, sizeof *m);
    /* (the inboxes' words: atomic operations of any CPU; the dues: read
     * by any) */
    kh_vg_benign(m->inbox, sizeof m->inbox);
    kh_vg_benign(m->due, sizeof m->due);
    /* Release: who sees the pointer sees them empty. Two CPUs making
     * them at once: the second gives its page back. */
    if (!__atomic_compare_exchange_n(&pc->mail, &none, m, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE)) {
        kh_internal_pages_free(h, m);
        return none;
    }
    return m;
}

/* CPU cpu's inbox of kmalloc class cls, if that CPU has inboxes. */
static struct kh_inbox *inbox_of(kheap_t *h, unsigned cpu, unsigned cls)
{
    if (cpu >= KHEAP_MAX_CPUS)
        return NULL;
    struct kh_mail *m = kh_cpu_mail(__atomic_load_n(&h->cpu[cpu], __ATOMIC_ACQUIRE));
    return m ? &m->inbox[cls] : NULL;
}

/* Push the chain first..last (through next) onto an inbox's list (any
 * CPU). Release: the taker sees what was written into them before. */
static void inbox_push_chain(struct kh_mag **list, struct kh_mag *first, struct kh_mag *last)
{
    struct kh_mag *head = __atomic_load_n(list, __ATOMIC_RELAXED);
    kh_vg_before(list);
    do
        last->next = head;
    while (!__atomic_compare_exchange_n(list, &head, first, true, __ATOMIC_RELEASE,
                                        __ATOMIC_RELAXED));
}

static void inbox_push(struct kh_mag **list, struct kh_mag *m)
{
    inbox_push_chain(list, m, m);
}

/* Take an inbox's whole list (any CPU). */
static struct kh_mag *inbox_take(struct kh_mag **list)
{
    if (!__atomic_load_n(list, __ATOMIC_RELAXED))
        return NULL;
    struct kh_mag *m = __atomic_exchange_n(list, (struct kh_mag *)NULL, __ATOMIC_ACQUIRE);
    kh_vg_after(list);
    return m;
}


/* Ask for the lines of magazine m, the next of a stash or of the spares,
 * that the next send or load reads first: its header (next, n, cap), and
 * with full its top objects (a full magazine of c: mag_cap of them).
 * Another CPU wrote them last, so each read missed the cache, and the
 * next send or load comes a magazine's worth of hits later: the misses of
 * those two reads took 36 % of kh_cpu_alloc_slow's samples and 44 % of
 * kh_cpu_free_remote's in xmalloc-test, which the prefetches made 4 to
 * 11 % faster (docs/DESIGN.md, "Inboxes"). A prefetch never faults, so a
 * magazine of another size than mag_cap does no harm. */
static inline void mag_prefetch(const struct kheap_cache *c, struct kh_mag *m, bool full)
{
    __builtin_prefetch(m, 1);
    if (full)
        __builtin_prefetch(&m->obj[c->mag_cap - 1], 0);
}

/* An empty magazine for the remote front of c of the CPU whose inboxes
 * are mail: a spare, else its inbox's empties (taken whole: the rest
 * become spares), else a new one; NULL if there is no memory. */
static struct kh_mag *spare_take(kheap_t *h, struct kheap_cache *c, struct kh_mail *mail)
{
    unsigned k = c->cls;
    struct kh_mag *m = mail->spare[k];
    if (!m)
        m = inbox_take(&mail->inbox[k].empty);
    if (!m)
        return mag_new(h, c->mag_cap);
    mail->spare[k] = m->next;
    if (m->next)
        mag_prefetch(c, m->next, false);
    m->next = NULL;
    m->origin = KH_HOME_NONE;
    return m;
}

/* Send cc's full magazine full (unloaded; its home set) to its home's
 * inbox, loading an empty one in its place; false (nothing changed) if
 * its home is this CPU or none or away, the inboxes and stashes hold the
 * depot's bound, or there is no empty magazine. The CPU entered, busy
 * marked. */
static bool inbox_send(kheap_t *h, struct kheap_cache *c, struct kh_cc *cc, unsigned cpu,
                       struct kh_mag *full)
{
    if (full->home == cpu || full->home >= KHEAP_MAX_CPUS || mailed(c) >= depot_room(c))
        return false;
    struct kh_mail *home = mail_make(h, __atomic_load_n(&h->cpu[full->home], __ATOMIC_ACQUIRE));
    struct kh_mail *mine = mail_make(h, h->cpu[cpu]);
    if (!home || !mine || __atomic_load_n(&home->away, __ATOMIC_RELAXED))
        return false;
    if (__atomic_load_n(&mine->away, __ATOMIC_RELAXED))
        __atomic_store_n(&mine->away, (uint8_t)0, __ATOMIC_RELAXED); /* (back) */
    struct kh_mag *empty = spare_take(h, c, mine);
    if (!empty)
        return false;
    full->origin = (uint8_t)cpu;
    mailed_due(c, mine, 1);
    inbox_push(&home->inbox[c->cls].full, full);
    kh_cc_load(cc, empty);
    return true;
}

/* Keep the empty magazine m, which is no other CPU's to have back, for
 * the remote front of c of the CPU whose inboxes are mail: in its spares,
 * up to KH_SPARE_MAX, else in the depot. */
static void spare_keep(struct kheap_cache *c, struct kh_mail *mail, struct kh_mag *m)
{
    unsigned n = 0;
    for (const struct kh_mag *q = mail->spare[c->cls]; q; q = q->next)
        n++;
    m->origin = KH_HOME_NONE;
    if (n < KH_SPARE_MAX) {
        m->next = mail->spare[c->cls];
        mail->spare[c->cls] = m;
        return;
    }
    kh_lock(&c->lock);
    mag_push(&KH_U(c)->depot_empty, &KH_U(c)->nr_empty_mags, m);
    kh_unlock(&c->lock);
}

/* Give the empties gathered for one CPU (mail's ret of c) back to that
 * CPU's inbox, all with one compare-and-exchange (else, if it has no
 * inboxes, keep them). The CPU whose inboxes are mail entered. */
static void ret_flush(kheap_t *h, struct kheap_cache *c, struct kh_mail *mail)
{
    unsigned k = c->cls;
    struct kh_mag *first = mail->ret[k], *last = first;
    if (!first)
        return;
    while (last->next)
        last = last->next;
    mail->ret[k] = NULL;
    mail->ret_n[k] = 0;
    struct kh_inbox *in = inbox_of(h, first->origin, k);
    if (in) {
        inbox_push_chain(&in->empty, first, last);
        return;
    }
    while (first) {
        struct kh_mag *m = first;
        first = m->next;
        spare_keep(c, mail, m);
    }
}

/* Give back the empty magazine m that CPU cpu's front of c traded for a
 * full one of its inbox: to the CPU that sent it, KH_RET_MAX at a time
 * (a return one by one took a compare-and-exchange on the sender's
 * inbox for each, and its line went back and forth between a consumer's
 * CPU and a producer's once a magazine: xmalloc-test took 3 to 4 % more time,
 * docs/DESIGN.md, "Inboxes"); else to this CPU's spares or the depot. */
static void inbox_return(kheap_t *h, struct kheap_cache *c, unsigned cpu, struct kh_mag *m)
{
    if (m == &kh_mag_sentinel)
        return;
    struct kh_mail *mail = kh_cpu_mail(h->cpu[cpu]); /* (the caller loaded from it) */
    unsigned k = c->cls;
    if (m->origin == cpu || m->origin >= KHEAP_MAX_CPUS) {
        spare_keep(c, mail, m);
        return;
    }
    if (mail->ret[k] && mail->ret[k]->origin != m->origin)
        ret_flush(h, c, mail); /* (a chain goes to one CPU) */
    m->next = mail->ret[k];
    mail->ret[k] = m;
    if (++mail->ret_n[k] >= KH_RET_MAX)
        ret_flush(h, c, mail);
}

/* The allocation miss of CPU cpu on its front cc of c, both magazines
 * empty: load a full magazine of its stash, or of its inbox (taken
 * whole: the rest go to the stash); false if both are empty. The CPU
 * entered, busy marked. */
static bool inbox_load(kheap_t *h, struct kheap_cache *c, struct kh_cc *cc, unsigned cpu)
{
    struct kh_mail *mail = kh_cpu_mail(h->cpu[cpu]);
    unsigned k = c->cls;
    if (!mail)
        return false;
    struct kh_mag *m = mail->stash[k];
    if (!m && !(m = inbox_take(&mail->inbox[k].full)))
        return false;
    mailed_due(c, mail, -1);
    if (__atomic_load_n(&mail->away, __ATOMIC_RELAXED))
        __atomic_store_n(&mail->away, (uint8_t)0, __ATOMIC_RELAXED); /* (back) */
    mail->stash[k] = m->next;
    if (m->next)
        mag_prefetch(c, m->next, true);
    m->next = NULL;
    struct kh_mag *empty = cc->prev;
    cc->prev = kh_cc_unload(cc);
    kh_cc_load(cc, m);
    inbox_return(h, c, cpu, empty);
    return true;
}

/* Every magazine of CPU pc's inboxes, stash, spares and gathered empties
 * of class c, taken off them: the full ones into *full, the empty ones
 * into *empty (lists through next, with their counts). own: the stash,
 * spares and gathered empties too (the caller is the CPU, or it has
 * stopped). */
static void inbox_drain(struct kh_cpu *pc, struct kheap_cache *c, bool own, struct kh_mag **full,
                        uint32_t *nfull, struct kh_mag **empty, uint32_t *nempty)
{
    unsigned k = c->cls;
    struct kh_mail *mail = kh_cpu_mail(pc);
    if (!mail)
        return;
    struct kh_mag *lists[5] = {inbox_take(&mail->inbox[k].full), NULL,
                               inbox_take(&mail->inbox[k].empty), NULL, NULL};
    if (own) {
        lists[1] = mail->stash[k];
        lists[3] = mail->spare[k];
        lists[4] = mail->ret[k];
        mail->stash[k] = mail->spare[k] = mail->ret[k] = NULL;
        mail->ret_n[k] = 0;
    }
    int32_t n = 0;
    for (int i = 0; i < 5; i++)
        while (lists[i]) {
            struct kh_mag *m = lists[i];
            lists[i] = m->next;
            m->origin = KH_HOME_NONE; /* (no longer anyone's to return) */
            n += i < 2;
            if (m->n)
                mag_push(full, nfull, m);
            else
                mag_push(empty, nempty, m);
        }
    if (own)
        mailed_settle(c, mail);
    if (n)
        mailed_add(c, -n);
}

/* Every CPU's inboxes of c, taken off them into the lists full and empty
 * (with their counts) for the depot: by decay, and by the double-free
 * look-up (kh_cpu_cached), which then finds there what was sent home. */
static void inboxes_take(kheap_t *h, struct kheap_cache *c, struct kh_mag **full,
                         uint32_t *nfull, struct kh_mag **empty, uint32_t *nempty)
{
    for (unsigned k = 0; k < KHEAP_MAX_CPUS && c->cls != KH_NO_CLASS && h->homes; k++)
        inbox_drain(__atomic_load_n(&h->cpu[k], __ATOMIC_ACQUIRE), c, false, full, nfull, empty,
                    nempty);
}
#endif

/* Put the lists full and empty into c's depot (lock held). */
static void depot_put(struct kheap_cache *c, struct kh_mag **full, uint32_t *nfull,
                      struct kh_mag **empty, uint32_t *nempty)
{
    for (struct kh_mag *m; (m = mag_pop(full, nfull));)
        mag_push(&KH_U(c)->depot_full, &KH_U(c)->nr_full_mags, m);
    for (struct kh_mag *m; (m = mag_pop(empty, nempty));)
        mag_push(&KH_U(c)->depot_empty, &KH_U(c)->nr_empty_mags, m);
}

/* Trade cc's previous magazine (empty, or the sentinel), its loaded one
 * being empty, for a full magazine of the depot: the first homed at cpu
 * (KH_HOME_SCAN deep), or with KHEAP_CPU_NONE the first. Cache lock
 * held; *trim gets what the depot's trim took off it, for the caller to
 * release once unlocked. Returns whether one was loaded. */
static bool depot_load(struct kheap_cache *c, struct kh_cc *cc, unsigned cpu,
                       struct kh_mag **trim)
{
    struct kh_mag *full = cpu != KHEAP_CPU_NONE
                              ? depot_take_home(c, cpu)
                              : mag_pop(&KH_U(c)->depot_full, &KH_U(c)->nr_full_mags);
    if (!full)
        return false;
    if (cc->prev != &kh_mag_sentinel)
        mag_push(&KH_U(c)->depot_empty, &KH_U(c)->nr_empty_mags, cc->prev);
    cc->prev = kh_cc_unload(cc);
    kh_cc_load(cc, full);
    *trim = depot_tick(c);
    return true;
}

/* The miss path of allocation on this CPU's front cc (busy marked).
 * Returns the object, or NULL with *direct set when the caller should go
 * to the slabs directly (no memory for a magazine), or NULL. */
static void *alloc_front(kheap_t *h, struct kheap_cache *c, struct kh_cc *cc, unsigned cpu,
                         bool *direct)
{
    kh_bump(&miss_of(h, c, cpu)->alloc);
    /* Loaded is empty (or the sentinel), unless the hit path looked at
     * another front: the port's per-CPU word was still the sentinel's
     * while this CPU's state of the heap was set up (default.c). */
    if (cc->top != cc->base) {
        /* A hit after all: the pop below takes it. */
    } else if (cc->prev->n) {
        front_swap(cc);
#if KH_HOMES
    } else if (h->homes && c->cls != KH_NO_CLASS && inbox_load(h, c, cc, cpu)) {
        /* Both empty: a full magazine of the CPU's inbox is loaded (no
         * lock). */
#endif
    } else {
        /* Both empty: trade previous for a full magazine of the depot,
         * one whose objects are this CPU's first (slab.c, "Homes"), else
         * fill loaded from the slabs, this CPU's first. (An object of
         * another CPU's that this one takes from the depot goes home when
         * this CPU frees it: the free hit path sends it there.) */
        struct kh_mag *spare = NULL, *trim = NULL;
        /* (a user cache's frees do not go home: it has no remote
         * fronts, and its refills take no side) */
        unsigned mine = h->homes && c->cls != KH_NO_CLASS ? cpu : KHEAP_CPU_NONE;
        kh_lock(&c->lock);
        if (!depot_load(c, cc, mine, &trim) &&
            !(mine != KHEAP_CPU_NONE && depot_load(c, cc, KHEAP_CPU_NONE, &trim))) {
            depot_grow(c);
            if (kh_cc_mag(cc) == &kh_mag_sentinel)
                spare = mag_pop(&KH_U(c)->depot_empty, &KH_U(c)->nr_empty_mags);
        }
        kh_unlock(&c->lock);
        mags_release(h, c, trim, NULL);
        if (cc->top == cc->base) {
            /* The depot had none: fill loaded from the slabs. */
            struct kh_mag *m = kh_cc_mag(cc);
            if (m == &kh_mag_sentinel) {
                m = spare ? spare : mag_new(h, c->mag_cap);
                if (!m) {
                    *direct = true;
                    return NULL;
                }
            }
            m->n = (uint32_t)kh_cache_take_home(c, m->obj, (m->cap + 1u) / 2u,
                                                c->cls != KH_NO_CLASS ? cpu : KHEAP_CPU_NONE);
            mag_order(m, c->slot);
            kh_cc_load(cc, m);
            if (!m->n)
                return NULL;
        }
    }
    void *p = NULL;
    bool hit = kh_cc_pop(cc, &p);
    KH_ASSERT(hit, cc);
    (void)hit;
#if KHEAP_VALGRIND
    *cc->top = NULL; /* a stale copy would hide a leak from memcheck */
#endif
    return p;
}

void *kh_cpu_alloc_slow(kheap_t *h, struct kheap_cache *c)
{
    if (!c->mag_cap) /* no per-CPU layer (KHEAP_PERCPU 0, or tuned off) */
        return alloc_direct(c);
    unsigned cpu = kheap_port_cpu_enter();
    struct kh_cc *cc = cpu == KHEAP_CPU_NONE || !c->mag_cap ? NULL : cc_setup(h, c, cpu);
    bool direct = !cc;
    void *p = NULL;
    if (cc) {
        busy_on(h, c, cpu);
        p = alloc_front(h, c, cc, cpu, &direct);
        busy_off(h, c, cpu);
    }
    kheap_port_cpu_exit(cpu);
    return direct ? alloc_direct(c) : p;
}

/* The miss path of free on this CPU's front cc (busy marked). False: the
 * caller gives p to its slab. */
static bool free_front(kheap_t *h, struct kheap_cache *c, struct kh_cc *cc, unsigned cpu,
                       void *p)
{
    /* This CPU's first touch of the cache is a free: the object came from
     * another CPU. Cached here, it would be this CPU's next allocation,
     * sharing its cache lines with the other CPU's objects (the passive
     * false sharing of Hoard's cache-scratch test). It goes to its slab
     * instead, so this CPU's first allocations come from a refill of its
     * own, whose last objects (popped first) are slots nobody else uses.
     * Once per CPU and cache: a CPU that only frees caches the rest. */
    struct kh_misses *miss = miss_of(h, c, cpu);
    bool first = cc->allocs == 0 && miss->alloc == 0 && miss->free == 0;
    kh_bump(&miss->free); /* counted, so the next free is not the first */
    if (first)
        return false;
    /* Loaded is full (or the sentinel). */
    if (cc->prev->n == 0 && cc->prev != &kh_mag_sentinel) {
        front_swap(cc);
    } else {
        /* Loaded is full (or the sentinel), previous full too: previous
         * goes to the depot and an empty magazine comes in, in one lock
         * hold when the depot has an empty one. Over the depot's bound,
         * previous goes back to the slabs instead and is itself the
         * empty magazine: one more lock hold, and no magazine is freed
         * and made again (a consumer does this once per mag_cap frees
         * while the allocating CPUs are behind). */
        struct kh_mag *old = cc->prev, *empty = NULL, *trim = NULL, *overflow = NULL;
        bool full = old != &kh_mag_sentinel;
        if (full)
            old->home = mag_home(h, old); /* (this CPU's until it is pushed) */
        kh_lock(&c->lock);
        if (full && KH_U(c)->nr_full_mags + mailed(c) >= depot_room(c)) {
            KH_U(c)->overflowed = 1;
            empty = old;
        } else {
            empty = mag_pop(&KH_U(c)->depot_empty, &KH_U(c)->nr_empty_mags);
            if (empty && full) {
                mag_push(&KH_U(c)->depot_full, &KH_U(c)->nr_full_mags, old);
                trim = depot_tick(c);
                full = false;
            }
        }
        kh_unlock(&c->lock);
        if (empty == old) {
            /* Off the front while it empties, so no walk of this CPU's
             * magazines sees its objects both there and in the slabs. */
            cc->prev = &kh_mag_sentinel;
            mag_flush(c, old, NULL);
            full = false;
        } else if (!empty && !(empty = mag_new(h, c->mag_cap))) {
            /* No lock held here: mag_new takes another cache's. */
            return false;
        }
        cc->prev = kh_cc_unload(cc);
        kh_cc_load(cc, empty);
        if (full) {
            /* old is still to place: the depot had no empty magazine. */
            kh_lock(&c->lock);
            if (KH_U(c)->nr_full_mags + mailed(c) < depot_room(c)) {
                mag_push(&KH_U(c)->depot_full, &KH_U(c)->nr_full_mags, old);
                trim = depot_tick(c);
            } else {
                KH_U(c)->overflowed = 1;
                overflow = old;
                overflow->next = NULL;
            }
            kh_unlock(&c->lock);
        }
        mags_release(h, c, overflow, NULL);
        mags_release(h, c, trim, NULL);
    }
    bool pushed = kh_cc_push(cc, p);
    KH_ASSERT(pushed, p);
    (void)pushed;
    return true;
}

void kh_cpu_free_slow(kheap_t *h, struct kheap_cache *c, void *p)
{
    if (!c->mag_cap) { /* no per-CPU layer */
        kh_cache_give_counted(c, &p, 1, kh_cache_whole(c) ? &KH_U(c)->nocpu_frees : NULL, NULL);
        return;
    }
    unsigned cpu = kheap_port_cpu_enter();
    struct kh_cc *cc = cpu == KHEAP_CPU_NONE || !c->mag_cap ? NULL : cc_setup(h, c, cpu);
    bool cached = false;
    if (cc) {
        busy_on(h, c, cpu);
        cached = free_front(h, c, cc, cpu, p);
        busy_off(h, c, cpu);
    }
    kheap_port_cpu_exit(cpu);
    if (!cached) /* (c has magazines, so it has KH_U(c) in any build) */
        kh_cache_give_counted(c, &p, 1, &KH_U(c)->nocpu_frees, NULL);
}

#if KH_HOMES
/* CPU cpu's remote front of kmalloc class c, its remote fronts made on
 * first need (set up state; the CPU entered); NULL if there is no memory
 * for them. */
static struct kh_cc *remote_setup(kheap_t *h, struct kheap_cache *c, unsigned cpu)
{
    struct kh_cpu *pc = h->cpu[cpu];
    struct kh_remote *r = kh_cpu_remote(pc);
    if (!r) {
        r = kh_internal_pages(h, sizeof *r, false);
        if (!r)
            return NULL;
        fronts_empty(r->cc);
        /* Release: a walk on another CPU that sees the distance sees the
         * fronts it leads to. */
        __atomic_store_n(&pc->remote, (char *)r - (char *)pc, __ATOMIC_RELEASE);
    }
    return &r->cc[KH_CC(c->cls)];
}

/* A free of p onto CPU cpu's remote front cc of c, whose loaded magazine
 * is full (or the sentinel; busy marked): the full one goes to its
 * home's inbox ("Inboxes", above), else to the depot, tagged with its
 * home, where that CPU's refills take it first; over the depot's bound
 * to the slabs, and is itself the empty one then.
 * A remote front keeps one magazine (a CPU's fronts, two): the objects of
 * other CPUs that a CPU holds for them are one magazine per class more.
 * Returns whether p was pushed (not: no memory for a magazine). */
static bool remote_send(kheap_t *h, struct kheap_cache *c, struct kh_cc *cc, unsigned cpu, void *p)
{
    struct kh_mag *full = kh_cc_unload(cc), *empty = NULL, *trim = NULL;
    /* Off the front while it is handed on or emptied, so no walk of this
     * CPU's magazines sees its objects both there and elsewhere. */
    kh_cc_load(cc, &kh_mag_sentinel);
    bool spill = false;
    if (full != &kh_mag_sentinel) {
        full->home = mag_home(h, full);
        /* To its home's inbox, with no lock; else to the depot. */
        if (inbox_send(h, c, cc, cpu, full)) {
            bool pushed = kh_cc_push(cc, p);
            KH_ASSERT(pushed, p);
            return pushed;
        }
    }
    kh_lock(&c->lock);
    if (full != &kh_mag_sentinel && KH_U(c)->nr_full_mags + mailed(c) >= depot_room(c)) {
        KH_U(c)->overflowed = 1;
        spill = true;
    } else {
        if (full != &kh_mag_sentinel) {
            mag_push(&KH_U(c)->depot_full, &KH_U(c)->nr_full_mags, full);
            trim = depot_tick(c);
        }
        empty = mag_pop(&KH_U(c)->depot_empty, &KH_U(c)->nr_empty_mags);
    }
    kh_unlock(&c->lock);
    if (spill) {
        mag_flush(c, full, NULL);
        empty = full;
    }
    mags_release(h, c, trim, NULL);
    if (!empty && !(empty = mag_new(h, c->mag_cap)))
        return false;
    kh_cc_load(cc, empty);
    bool pushed = kh_cc_push(cc, p);
    KH_ASSERT(pushed, p);
    return pushed;
}
#endif

unsigned kh_cpu_free_remote(kheap_t *h, struct kheap_cache *c, void *p, unsigned home)
{
#if KH_HOMES
    if (c->cls == KH_NO_CLASS || !c->mag_cap || !h->homes)
        return 0;
    unsigned cpu = kheap_port_cpu_enter();
    struct kh_cc *cc = NULL;
    if (cpu != KHEAP_CPU_NONE && cpu != home && cc_setup(h, c, cpu))
        cc = remote_setup(h, c, cpu);
    bool cached = false, sent = false;
    if (cc) {
        busy_on(h, c, cpu);
        kh_bump(&miss_of(h, c, cpu)->free);
        cached = kh_cc_push(cc, p);
        if (!cached) {
            sent = true;
            cached = remote_send(h, c, cc, cpu, p);
        }
        busy_off(h, c, cpu);
    }
    kheap_port_cpu_exit(cpu);
    if (cc && !cached)
        kh_cache_give_counted(c, &p, 1, &KH_U(c)->nocpu_frees, NULL);
    return !cc ? 0 : sent ? KH_REMOTE_SENT : KH_REMOTE_PUSHED;
#else
    (void)h, (void)c, (void)p, (void)home;
    return 0;
#endif
}

/* Is p in this CPU's magazines of c (its fronts, its remote front, its
 * stash) or in c's depot, where every CPU's inboxes go first (so what
 * this CPU sent home is found)? O(magazine size x (3 + stash + depot +
 * inboxes)); asked only by the double-free guard. */
bool kh_cpu_cached(kheap_t *h, struct kheap_cache *c, void *p)
{
    bool found = false;
    unsigned cpu = kheap_port_cpu_enter();
    if (cpu != KHEAP_CPU_NONE && c->mag_cap) {
        struct kh_cc *fronts[2] = {cc_setup(h, c, cpu), NULL};
        if (fronts[0]) {
            fronts[1] = kh_rcc_of(h, c, cpu);
            busy_on(h, c, cpu);
            for (int f = 0; f < 2 && fronts[f]; f++) {
                const struct kh_cc *cc = fronts[f];
                for (void **q = cc->base; q < cc->top && !found; q++)
                    found = *q == p;
                for (uint32_t i = 0; i < cc->prev->n && !found; i++)
                    found = cc->prev->obj[i] == p;
            }
#if KH_HOMES
            /* (and its stash: full magazines of its inbox not loaded yet) */
            const struct kh_mail *mail = c->cls != KH_NO_CLASS ? kh_cpu_mail(h->cpu[cpu]) : NULL;
            if (mail)
                for (const struct kh_mag *m = mail->stash[c->cls]; m && !found; m = m->next)
                    for (uint32_t i = 0; i < m->n && !found; i++)
                        found = m->obj[i] == p;
#endif
            busy_off(h, c, cpu);
        }
    }
    kheap_port_cpu_exit(cpu);
    if (!found && kh_cache_whole(c)) {
        struct kh_mag *full = NULL, *empty = NULL;
        uint32_t nfull = 0, nempty = 0;
#if KH_HOMES
        inboxes_take(h, c, &full, &nfull, &empty, &nempty);
#endif
        kh_lock(&c->lock);
        depot_put(c, &full, &nfull, &empty, &nempty);
        for (const struct kh_mag *m = KH_U(c)->depot_full; m && !found; m = m->next)
            for (uint32_t i = 0; i < m->n && !found; i++)
                found = m->obj[i] == p;
        kh_unlock(&c->lock);
    }
    return found;
}

/* ------------------------------------------------------------------ */
/* Draining. */

/* Empty CPU cpu's magazines of cache c into the slabs (the caller is that
 * CPU, or the CPU has stopped). */
static size_t cc_drain(kheap_t *h, struct kheap_cache *c, struct kh_cc *cc,
                       struct kh_later *later)
{
    struct kh_mag *mags[2] = {kh_cc_unload(cc), cc->prev};
    size_t bytes = mag_flush(c, mags[0], later) + mag_flush(c, mags[1], later);
    kh_cc_load(cc, &kh_mag_sentinel);
    cc->prev = &kh_mag_sentinel;
    mag_free(h, mags[0]);
    mag_free(h, mags[1]);
    return bytes;
}

/* Give back the depot's magazines and the calling CPU's own; with all,
 * every CPU's (the caller promises no other CPU uses c meanwhile). */
size_t kh_cache_drain(struct kheap_cache *c, bool all, struct kh_later *later)
{
    kheap_t *h = c->heap;
    size_t bytes = 0;
    if ((c->flags & KH_CACHE_INTERNAL) || !kh_cache_whole(c))
        return 0; /* no magazines, no depot */
    /* Every CPU's inboxes, and with all every CPU's stash, spares and
     * gathered empties, else the calling CPU's (the others', as their
     * magazines, go when they answer: kh_cpu_owes): into this list. */
    struct kh_mag *taken = NULL;
    uint32_t ntaken = 0;
    (void)ntaken; /* (a count inbox_drain keeps; none without homes) */
    if (all) {
        for (unsigned cpu = 0; cpu < KHEAP_MAX_CPUS; cpu++) {
            struct kh_cc *cc = kh_cc_of(h, c, cpu), *rcc = kh_rcc_of(h, c, cpu);
            if (cc)
                bytes += cc_drain(h, c, cc, later);
            if (rcc)
                bytes += cc_drain(h, c, rcc, later);
#if KH_HOMES
            if (cc && c->cls != KH_NO_CLASS)
                inbox_drain(h->cpu[cpu], c, true, &taken, &ntaken, &taken, &ntaken);
#endif
        }
    } else {
        unsigned cpu = kheap_port_cpu_enter();
        struct kh_cc *cc = cpu == KHEAP_CPU_NONE ? NULL : kh_cc_of(h, c, cpu);
        if (cc) {
            struct kh_cc *rcc = kh_rcc_of(h, c, cpu);
            busy_on(h, c, cpu);
            bytes += cc_drain(h, c, cc, later);
            if (rcc)
                bytes += cc_drain(h, c, rcc, later);
#if KH_HOMES
            if (c->cls != KH_NO_CLASS)
                inbox_drain(h->cpu[cpu], c, true, &taken, &ntaken, &taken, &ntaken);
#endif
            busy_off(h, c, cpu);
        }
        kheap_port_cpu_exit(cpu);
        /* The other CPUs' inboxes, as the depot: anyone may take them
         * (not their stashes, spares and gathered empties). */
#if KH_HOMES
        inboxes_take(h, c, &taken, &ntaken, &taken, &ntaken);
#endif
    }
    bytes += mags_release(h, c, taken, later);
    kh_lock(&c->lock);
    struct kh_mag *list = KH_U(c)->depot_full, *empties = KH_U(c)->depot_empty;
    while (empties) {
        struct kh_mag *m = empties;
        empties = m->next;
        m->next = list;
        list = m;
    }
    KH_U(c)->depot_full = KH_U(c)->depot_empty = NULL;
    KH_U(c)->nr_full_mags = KH_U(c)->nr_empty_mags = 0;
    KH_U(c)->full_min = KH_U(c)->empty_min = 0;
    __atomic_store_n(&KH_U(c)->depot_shift, (uint8_t)0, __ATOMIC_RELAXED);
    KH_U(c)->overflowed = 0; /* reclaim: back to the plain bound */
    kh_unlock(&c->lock);
    return bytes + mags_release(h, c, list, later);
}

/* Hand a stopped CPU's magazines of c to the depot, where other CPUs
 * find their objects; what the depot has no room for goes to the slabs. */
static size_t cc_return(kheap_t *h, struct kheap_cache *c, struct kh_cc *cc,
                        struct kh_later *later)
{
    struct kh_mag *mags[2] = {kh_cc_unload(cc), cc->prev}, *rest = NULL;
    kh_cc_load(cc, &kh_mag_sentinel);
    cc->prev = &kh_mag_sentinel;
    for (int i = 0; i < 2; i++)
        if (mags[i] != &kh_mag_sentinel)
            mags[i]->home = mag_home(h, mags[i]);
    kh_lock(&c->lock);
    for (int i = 0; i < 2; i++) {
        struct kh_mag *m = mags[i];
        if (m == &kh_mag_sentinel)
            continue;
        uint32_t spill = 0;
        if (m->n && KH_U(c)->nr_full_mags < KH_U(c)->depot_max)
            mag_push(&KH_U(c)->depot_full, &KH_U(c)->nr_full_mags, m);
        else if (!m->n && KH_U(c)->nr_empty_mags < KH_U(c)->depot_max)
            mag_push(&KH_U(c)->depot_empty, &KH_U(c)->nr_empty_mags, m);
        else
            mag_push(&rest, &spill, m);
    }
    kh_unlock(&c->lock);
    return mags_release(h, c, rest, later);
}

/* ------------------------------------------------------------------ */
/* The CPUs' caches of large blocks (struct kh_runcache, kh_front.h): the
 * slow paths. The hit paths pop and push in kh_fast.h. */

#if KH_RUNS
/* The allocations the bins of rc served. */
static uint64_t runs_allocs(const struct kh_runcache *rc)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < KH_RUN_BINS; i++)
        n += __atomic_load_n(&rc->bin[i].allocs, __ATOMIC_RELAXED);
    return n;
}

/* Room in rc for one more run of np pages: the bin's cap raised if it is
 * reached and the caps' pages allow, after taking back what the other
 * bins' caps hold above their runs. A cap grows by half (at least one
 * run), so a program that frees many blocks of one size at once takes
 * the slow path a logarithmic number of times. Runs on rc's CPU, which
 * the caller holds: no hit path of it runs meanwhile. */
static bool runs_room(struct kh_runcache *rc, size_t np)
{
    struct kh_runbin *b = KH_RUN_BIN(rc, np);
    if (b->frees - b->allocs < b->cap)
        return true;
    if (rc->capped + np > rc->limit) {
        for (unsigned i = 0; i < KH_RUN_BINS; i++) {
            struct kh_runbin *o = &rc->bin[i];
            rc->capped -= (o->cap - (o->frees - o->allocs)) * (KH_RUN_MIN_PAGES + i);
            o->cap = o->frees - o->allocs;
        }
        if (rc->capped + np > rc->limit)
            return false;
    }
    uint64_t grow = b->cap / 2 ? b->cap / 2 : 1;
    if (grow > (rc->limit - rc->capped) / np)
        grow = (rc->limit - rc->capped) / np;
    b->cap += grow;
    rc->capped += grow * np;
    return true;
}

/* Link the run p of np pages onto rc (its tag already taken). Runs on rc's
 * CPU (or one flushing it after it stopped). */
static void runs_link(struct kh_runcache *rc, void *p, size_t np)
{
    struct kh_runbin *b = KH_RUN_BIN(rc, np);
    *(void **)p = b->head;
    b->head = p;
    kh_bump(&b->frees);
}

/* Every run of rc back to the page layer, in one page_lock hold. Each
 * was a free of the program's, counted in its bin's frees; from now on
 * the page layer counts it (large_frees), so the bin takes it out of its
 * own frees. The caps stay: the runs' pages are the page layer's, and
 * caps no bin uses are taken back when another bin needs them. Runs on
 * rc's CPU (or one flushing it after it stopped). */
static size_t runs_flush(kheap_t *h, struct kh_runcache *rc)
{
    size_t pages = 0, runs = 0;
    bool any = false;
    for (unsigned i = 0; i < KH_RUN_BINS && !any; i++)
        any = rc->bin[i].head != NULL;
    if (!any)
        return 0;
    uint32_t n[KH_RUN_BINS];
    kh_lock(&h->page_lock);
    for (unsigned i = 0; i < KH_RUN_BINS; i++) {
        struct kh_runbin *b = &rc->bin[i];
        n[i] = 0;
        while (b->head) {
            void *p = b->head;
            b->head = *(void **)p;
            kh_run_free(h, kh_page_of(h, (uintptr_t)p));
            n[i]++;
        }
        runs += n[i];
        pages += n[i] * (size_t)(KH_RUN_MIN_PAGES + i);
    }
    h->large_free_bytes += pages * KH_PAGE;
    h->large_frees += runs;
    /* In the same hold as the page layer counts them: kheap_get_stats
     * reads the bins' counts and the page layer's in one hold, so it
     * counts each flushed run's free once, never twice nor not at all. */
    for (unsigned i = 0; i < KH_RUN_BINS; i++)
        __atomic_store_n(&rc->bin[i].frees, rc->bin[i].frees - n[i], __ATOMIC_RELAXED);
    /* In the same hold as the runs go back, as large frees do: kheap_check
     * (every lock held) sees committed bytes and the runs agree. */
    kh_account_commit(h, pages * KH_PAGE, false);
    kh_unlock(&h->page_lock);
    return pages * KH_PAGE;
}
#endif

bool kh_runs_put(kheap_t *h, void *p, size_t npages)
{
#if KH_RUNS
    bool ok = false;
    unsigned cpu = kheap_port_cpu_enter();
    struct kh_cpu *pc = cpu == KHEAP_CPU_NONE ? NULL : cpu_setup(h, cpu);
    if (pc) {
        struct kh_runcache *rc = kh_cpu_runs(pc);
        if (!rc) {
            /* The CPU's first large free: its cache (a page of its own,
             * counted as metadata), published to this CPU's hit paths
             * only, which run on this CPU. */
            rc = kh_internal_pages(h, sizeof *rc, false);
            if (rc) {
                __builtin_memset(rc, 0, sizeof *rc);
                /* KHEAP_RUN_CACHE_BYTES, or less on a small heap: every
                 * CPU's cache together holds at most an eighth of it (as
                 * large as it is now). */
                kh_lock(&h->page_lock);
                size_t bytes = h->total_bytes / (8 * (size_t)KHEAP_MAX_CPUS);
                kh_unlock(&h->page_lock);
                if (bytes > KHEAP_RUN_CACHE_BYTES)
                    bytes = KHEAP_RUN_CACHE_BYTES;
                rc->limit = bytes / KH_PAGE;
                rc->epoch = __atomic_load_n(&h->decay_epochs, __ATOMIC_RELAXED);
                kh_vg_benign(rc, sizeof *rc);
                __atomic_store_n(&pc->run_front.runs, rc, __ATOMIC_RELEASE);
            }
        }
        if (rc && runs_room(rc, npages)) {
            runs_link(rc, p, npages);
            ok = true;
        }
    }
    kheap_port_cpu_exit(cpu);
    return ok;
#else
    (void)h, (void)p, (void)npages;
    return false;
#endif
}

/* An allocation of size bytes (a large block's, up to
 * KHEAP_RUN_CACHE_MAX) from this CPU's cache of large blocks, as the hit
 * path's kh_run_pop, for the slow path of a port whose hit paths commit
 * with one store (the hosted port's per-CPU mode: its pop misses while
 * another slow path holds the CPU, and this one looks again once it holds
 * it); NULL if it holds none of that size. */
void *kh_runs_get(kheap_t *h, size_t size)
{
    void *p = NULL;
#if KH_RUNS
    unsigned cpu = kheap_port_cpu_enter();
    if (cpu != KHEAP_CPU_NONE && !kh_run_pop(h->cpu[cpu], &h->window, size, &p))
        p = NULL;
    kheap_port_cpu_exit(cpu);
#else
    (void)h, (void)size;
#endif
    return p;
}

size_t kh_runs_flush_here(kheap_t *h)
{
    size_t bytes = 0;
#if KH_RUNS
    unsigned cpu = kheap_port_cpu_enter();
    struct kh_runcache *rc = cpu == KHEAP_CPU_NONE ? NULL : kh_cpu_runs(h->cpu[cpu]);
    if (rc)
        bytes = runs_flush(h, rc);
    kheap_port_cpu_exit(cpu);
#else
    (void)h;
#endif
    return bytes;
}

void kh_runs_counts(kheap_t *h, struct kh_run_counts *out)
{
    __builtin_memset(out, 0, sizeof *out);
#if KH_RUNS
    for (unsigned cpu = 0; cpu < KHEAP_MAX_CPUS; cpu++) {
        struct kh_cpu *pc = __atomic_load_n(&h->cpu[cpu], __ATOMIC_ACQUIRE);
        const struct kh_runcache *rc = kh_cpu_runs(pc);
        if (!rc)
            continue;
        for (unsigned i = 0; i < KH_RUN_BINS; i++) {
            const struct kh_runbin *b = &rc->bin[i];
            uint64_t allocs = __atomic_load_n(&b->allocs, __ATOMIC_RELAXED);
            uint64_t frees = __atomic_load_n(&b->frees, __ATOMIC_RELAXED);
            out->allocs += allocs;
            out->frees += frees;
            out->alloc_pages += allocs * (KH_RUN_MIN_PAGES + i);
            out->free_pages += frees * (KH_RUN_MIN_PAGES + i);
            /* (each word read once: what it held at some moment) */
            out->held += (frees - allocs) * (KH_RUN_MIN_PAGES + i);
        }
    }
#else
    (void)h;
#endif
}

/* CPU cpu, which the caller holds (entered, reached) or which has
 * stopped, gives back what it caches of h: its magazines go to the
 * depots, its cached large blocks to the page layer. Reports of every
 * cache's flushes, and the user caches' empty slabs to destroy, go into
 * later (kheap_cpu_flush holds the registry lock throughout, and the walk
 * caches_lock for the user caches). Nothing can fill the CPU's caches
 * again meanwhile, so it has then answered every request made so far
 * (below). Returns the bytes that reached the page layer. */
static size_t heap_cpu_flush(kheap_t *h, unsigned cpu, struct kh_later *later)
{
    size_t bytes = 0;
#if KH_HOMES
    /* Away until its next send or inbox load (first: a sender that sees
     * it takes the depot's way; one that looked just before may still
     * leave a magazine, which decay or kheap_reclaim then take). */
    struct kh_mail *mail = kh_cpu_mail(h->cpu[cpu]);
    if (mail)
        __atomic_store_n(&mail->away, (uint8_t)1, __ATOMIC_RELAXED);
#endif
#if KH_RUNS
    struct kh_runcache *rc = kh_cpu_runs(h->cpu[cpu]);
    if (rc)
        bytes += runs_flush(h, rc);
#endif
    kh_each_cache_locking(h, c) {
        struct kh_cc *cc = (c->flags & KH_CACHE_INTERNAL) ? NULL : kh_cc_of(h, c, cpu);
        if (cc) {
            struct kh_cc *rcc = kh_rcc_of(h, c, cpu);
            /* A signal on an exiting thread leaves its fronts be. */
            busy_on(h, c, cpu);
            /* (the remote front's first: the CPU's own magazines then lie
             * above it in the depot, for the next CPU that takes from it) */
            if (rcc)
                bytes += cc_return(h, c, rcc, later);
            bytes += cc_return(h, c, cc, later);
#if KH_HOMES
            /* Its inbox, stash, spares and gathered empties: to the
             * slabs (what others sent it, and what it kept). */
            if (c->cls != KH_NO_CLASS) {
                struct kh_mag *taken = NULL;
                uint32_t ntaken = 0;
                inbox_drain(h->cpu[cpu], c, true, &taken, &ntaken, &taken, &ntaken);
                bytes += mags_release(h, c, taken, later);
            }
#endif
            busy_off(h, c, cpu);
        }
    }
    /* (flush_seen[cpu] is written only by whoever holds the CPU.) */
    __atomic_store_n(&h->flush_seen[cpu],
                     (uint16_t)__atomic_load_n(&h->flush_asked, __ATOMIC_ACQUIRE),
                     __ATOMIC_RELAXED);
    return bytes;
}

void kh_cpu_flush_heap(kheap_t *h, unsigned cpu)
{
    struct kh_later later = {.n = 0};
    heap_cpu_flush(h, cpu, &later);
    kh_later_finish(&later);
    kh_later_deliver(&later);
}

/* ------------------------------------------------------------------ */
/* Requests to give back. kheap_reclaim empties its own CPU's magazines
 * and every depot, and those CPUs the port can reach; a CPU that runs
 * (or a thread that holds its slot) uses its magazines without a lock, so
 * nobody else may empty them. Instead reclaim leaves a request: it bumps
 * flush_asked. Each CPU answers at its next kheap_tick or kheap_cpu_poll
 * (a kernel calls one from its timer, its idle loop or an IPI's handler):
 * it sees its flush_seen behind, gives back its magazines as kheap_reclaim
 * would have, and marks the count answered, all while it holds the CPU
 * (heap_cpu_flush), so the CPU marked is the CPU emptied. Why no request
 * is lost: nothing fills the CPU's caches while it is held, so when the
 * give-back ends every request made so far, also one made meanwhile, has
 * what it asked for. A CPU that stops answers in kheap_cpu_flush. The
 * low 16 bits are compared: a CPU that misses exactly a multiple of 65536
 * requests answers the next one. */

void kh_cpu_ask(kheap_t *h)
{
    struct kh_later later = {.n = 0};
    __atomic_add_fetch(&h->flush_asked, 1u, __ATOMIC_RELEASE);
    /* The caller's own CPU answers at once. */
    unsigned cpu = kheap_port_cpu_enter();
    if (cpu != KHEAP_CPU_NONE)
        heap_cpu_flush(h, cpu, &later);
    kheap_port_cpu_exit(cpu);
    kh_later_finish(&later);
    kh_later_deliver(&later);
}

bool kh_cpu_tick(kheap_t *h, bool decay, size_t *bytes)
{
    unsigned cpu = kheap_port_cpu_enter();
    bool asked = cpu != KHEAP_CPU_NONE && kh_cpu_owes(h, cpu);
#if KH_RUNS
    struct kh_runcache *rc = cpu == KHEAP_CPU_NONE ? NULL : kh_cpu_runs(h->cpu[cpu]);
    if (rc && decay && !asked) {
        /* Decay: the runs stayed idle if the CPU took none between the
         * last epoch end it saw and this one. (Asked: the answer gives
         * them all back.) */
        uint64_t e = __atomic_load_n(&h->decay_epochs, __ATOMIC_RELAXED);
        if (e != rc->epoch) {
            uint64_t allocs = runs_allocs(rc);
            if (allocs == rc->epoch_allocs)
                *bytes += runs_flush(h, rc);
            rc->epoch = e;
            rc->epoch_allocs = allocs;
        }
    }
#else
    (void)bytes;
#endif
#if KH_HOMES
    struct kh_mail *mail = cpu == KHEAP_CPU_NONE ? NULL : kh_cpu_mail(h->cpu[cpu]);
    uint64_t e = __atomic_load_n(&h->decay_epochs, __ATOMIC_RELAXED);
    if (mail && decay && !asked && mail->epoch != e) {
        /* Decay: at each epoch's end the stashes go to the depot (what
         * they held counts against its bound; its working-set rule then
         * gives back what stays idle), the spares are freed, and the
         * empties gathered for another CPU go back to it. */
        mail->epoch = e;
        for (unsigned k = 0; k < KHEAP_NUM_CLASSES; k++) {
            struct kheap_cache *c = &h->kmalloc[k];
            struct kh_mag *full = mail->stash[c->cls], *empty = mail->spare[c->cls];
            mailed_settle(c, mail);
            if (!full && !empty && !mail->ret[c->cls])
                continue;
            busy_on(h, c, cpu);
            mail->stash[c->cls] = mail->spare[c->cls] = NULL;
            ret_flush(h, c, mail);
            busy_off(h, c, cpu);
            int32_t n = 0;
            for (struct kh_mag *m = full; m; m = m->next)
                n++, m->origin = KH_HOME_NONE;
            mailed_add(c, -n);
            uint32_t nf = (uint32_t)n, ne = 0;
            if (full) {
                kh_lock(&c->lock);
                depot_put(c, &full, &nf, &empty, &ne);
                kh_unlock(&c->lock);
            }
            while (empty) {
                struct kh_mag *m = empty;
                empty = m->next;
                mag_free(h, m);
            }
        }
    }
#endif
    (void)decay;
    kheap_port_cpu_exit(cpu);
    return asked;
}

size_t kh_cpu_answer(kheap_t *h, struct kh_later *later)
{
    size_t bytes = 0;
    unsigned cpu = kheap_port_cpu_enter();
    /* (Looked at again: the caller may be on another CPU than when it
     * asked kh_cpu_tick, which then answers at its own next tick.) */
    if (cpu != KHEAP_CPU_NONE && kh_cpu_owes(h, cpu))
        bytes = heap_cpu_flush(h, cpu, later);
    kheap_port_cpu_exit(cpu);
    return bytes;
}

void kheap_cpu_flush(unsigned cpu)
{
    if (cpu >= KHEAP_CPU_NONE)
        return;
    /* Heaps are not removed while we walk (kheap_fini waits for the lock);
     * flushing takes heap locks, which never wait for the registry. The
     * reports wait until the registry is released, so the hook runs with
     * no kheap lock held. */
    struct kh_later later = {.n = 0};
    for (kheap_t *h = kh_registry_acquire(); h; h = h->next_heap)
        heap_cpu_flush(h, cpu, &later);
    kh_registry_release();
    /* The destructors of the empty slabs the flushes gave back run now,
     * with no lock held. A kheap_fini of their heap meanwhile waits for
     * them (heap.c). */
    kh_later_finish(&later);
    kh_later_deliver(&later);
}

void kh_cache_retire(struct kheap_cache *c)
{
    kheap_t *h = c->heap;
    KH_ASSERT(c->active_objs == 0 && c->nr_partial == 0 && c->nr_full == 0 &&
                  c->nr_empty == 0,
              c);
    kh_internal_pages_free(h, KH_U(c)->percpu);
    c->magic = 0;
    enum kheap_report_kind bad = kh_cache_give(&h->cache_cache, c, kh_slab_of(h, (uintptr_t)c));
    KH_ASSERT(!bad, c);
    (void)bad;
}

void kh_later_finish(struct kh_later *l)
{
    kh_later_slabs_free(l);
    while (l->retire) {
        struct kheap_cache *c = l->retire;
        kheap_t *h = c->heap;
        l->retire = KH_U(c)->next;
        kh_cache_retire(c);
        /* (release: kheap_fini may end the heap once it reads 0) */
        __atomic_sub_fetch(&h->caches_dying, 1u, __ATOMIC_RELEASE);
    }
}

/* ------------------------------------------------------------------ */
/* Reading the per-CPU counters (any CPU; relaxed loads). */

void kh_cache_counts(kheap_t *h, struct kheap_cache *c, struct kh_counts *out)
{
    __builtin_memset(out, 0, sizeof *out);
    if (!kh_cache_nocpu(c))
        goto slab_view;
    for (unsigned cpu = 0; cpu < KHEAP_MAX_CPUS; cpu++) {
        const struct kh_cc *cc = kh_cc_of(h, c, cpu);
        if (!cc)
            continue;
        const struct kh_misses *ms = miss_of(h, c, cpu);
        const struct kh_cc *rcc = kh_rcc_of(h, c, cpu);
        out->allocs += __atomic_load_n(&cc->allocs, __ATOMIC_RELAXED);
        out->frees += __atomic_load_n(&cc->frees, __ATOMIC_RELAXED);
        if (rcc)
            out->frees += __atomic_load_n(&rcc->frees, __ATOMIC_RELAXED);
        out->misses += __atomic_load_n(&ms->alloc, __ATOMIC_RELAXED) +
                       __atomic_load_n(&ms->free, __ATOMIC_RELAXED);
    }
    /* A miss that found no object (the heap full) counts as a miss and
     * not as an allocation: hits cannot go below 0. */
    out->hits = out->allocs + out->frees > out->misses ? out->allocs + out->frees - out->misses
                                                       : 0;
    /* KHEAP_NOLOCK objects count as allocations and frees, not as hits. */
    for (unsigned cpu = 0; cpu < KHEAP_MAX_CPUS; cpu++) {
        const struct kh_nlc *nl = kh_nlc_of(h, c, cpu);
        if (nl) {
            out->allocs += __atomic_load_n(&nl->allocs, __ATOMIC_RELAXED);
            out->frees += __atomic_load_n(&nl->frees, __ATOMIC_RELAXED);
        }
    }
slab_view:
    kh_lock(&c->lock);
    if (!kh_cache_nocpu(c)) {
        out->allocs = c->allocs;
        out->frees = c->frees;
    } else {
        out->allocs += KH_U(c)->nocpu_allocs;
        out->frees += KH_U(c)->nocpu_frees;
    }
    out->active = c->active_objs;
    kh_unlock(&c->lock);
}


/* ------------------------------------------------------------------ */
/* Bulk: many objects through the magazines and the depot at once. */

/* Up to n objects of c into out: first this CPU's loaded and previous
 * magazines (no lock), then the depot's full magazines (one hold of the
 * cache lock; the magazines emptied go to the depot's empty list). Returns
 * how many; the caller takes the rest from the slabs. */
size_t kh_cpu_take_n(kheap_t *h, struct kheap_cache *c, void **out, size_t n, size_t *from_mags)
{
    size_t k = 0;
    unsigned cpu = kheap_port_cpu_enter();
    struct kh_cc *cc = cpu == KHEAP_CPU_NONE || !c->mag_cap ? NULL : cc_setup(h, c, cpu);
    if (cc) {
        busy_on(h, c, cpu);
        size_t m = kh_cc_held(cc);
        if (m > n)
            m = n;
        cc->top -= m;
        __builtin_memcpy(out, cc->top, m * sizeof(void *));
#if KHEAP_VALGRIND
        __builtin_memset(cc->top, 0, m * sizeof(void *));
#endif
        k = m;
        struct kh_mag *pm = cc->prev;
        if (k < n && pm->n) {
            m = pm->n < n - k ? pm->n : n - k;
            pm->n -= (uint32_t)m;
            __builtin_memcpy(out + k, pm->obj + pm->n, m * sizeof(void *));
#if KHEAP_VALGRIND
            __builtin_memset(pm->obj + pm->n, 0, m * sizeof(void *));
#endif
            k += m;
        }
        busy_off(h, c, cpu);
    }
    kheap_port_cpu_exit(cpu);
    *from_mags = k;
    if (k < n && cc) {
        kh_lock(&c->lock);
        struct kh_mag *full;
        while (k < n && (full = KH_U(c)->depot_full)) {
            size_t m = full->n < n - k ? full->n : n - k;
            full->n -= (uint32_t)m;
            __builtin_memcpy(out + k, full->obj + full->n, m * sizeof(void *));
            k += m;
            if (!full->n) {
                full = mag_pop(&KH_U(c)->depot_full, &KH_U(c)->nr_full_mags);
                mag_push(&KH_U(c)->depot_empty, &KH_U(c)->nr_empty_mags, full);
            }
        }
        if (KH_U(c)->full_min > KH_U(c)->nr_full_mags)
            KH_U(c)->full_min = KH_U(c)->nr_full_mags;
        kh_unlock(&c->lock);
    }
    return k;
}

/* Put up to n objects of c from objs into this CPU's loaded and previous
 * magazines (no lock). Returns how many went in; the caller gives the rest
 * to the slabs. */
size_t kh_cpu_put_n(kheap_t *h, struct kheap_cache *c, void **objs, size_t n)
{
    size_t k = 0;
    unsigned cpu = kheap_port_cpu_enter();
    struct kh_cc *cc = cpu == KHEAP_CPU_NONE || !c->mag_cap ? NULL : cc_setup(h, c, cpu);
    if (cc)
        busy_on(h, c, cpu);
    if (cc && kh_cc_mag(cc) == &kh_mag_sentinel) {
        /* No magazine loaded yet (this CPU's first use of c, or after a
         * drain): load an empty one, as the free slow path would. */
        kh_lock(&c->lock);
        struct kh_mag *m = mag_pop(&KH_U(c)->depot_empty, &KH_U(c)->nr_empty_mags);
        kh_unlock(&c->lock);
        if (m || (m = mag_new(h, c->mag_cap)))
            kh_cc_load(cc, m);
    }
    if (cc) {
        size_t m = (size_t)(cc->limit - cc->top);
        if (m > n)
            m = n;
        __builtin_memcpy(cc->top, objs, m * sizeof(void *));
        cc->top += m;
        k = m;
        struct kh_mag *pm = cc->prev;
        if (k < n && pm->n < pm->cap) {
            m = pm->cap - pm->n < n - k ? pm->cap - pm->n : n - k;
            __builtin_memcpy(pm->obj + pm->n, objs + k, m * sizeof(void *));
            pm->n += (uint32_t)m;
            k += m;
        }
        busy_off(h, c, cpu);
    }
    kheap_port_cpu_exit(cpu);
    return k;
}

/* ------------------------------------------------------------------ */
/* KHEAP_NOLOCK: the previous magazine, from any context.
 *
 * A KHEAP_NOLOCK call may run in an interrupt (bare metal: an NMI, or a
 * handler that interrupts code with interrupts on; hosted: a signal
 * handler) that interrupted this very CPU anywhere, also in the middle of
 * a magazine operation. Why what it does cannot break the interrupted
 * code, case by case:
 *
 *  - The hit paths (kh_fast.h, cache_alloc/cache_free) touch only the
 *    front's top pointer, the loaded magazine's slots and the front's two
 *    counters. A hit interrupted between its load of top and its store
 *    would lose any change made meanwhile to those. KHEAP_NOLOCK never
 *    touches them: it uses only the *previous* magazine (cc->prev, its n
 *    and its slots), which no hit path reads or writes, and counts in the
 *    cache's atomic counters. So the hit path needs no marking and costs
 *    not one instruction more.
 *  - The slow paths (alloc_front, free_front, the bulk moves, drains,
 *    kh_cpu_cached) do change prev, and swap the loaded and previous
 *    magazines. They run marked: the CPU's busy word is non-zero from
 *    before their first access to a front to after their last. A
 *    KHEAP_NOLOCK call takes the word with an atomic add and backs off
 *    (leaving the fronts alone) unless it was zero. As the interrupt runs
 *    to its end before the interrupted code resumes, a zero word means no
 *    slow path of this CPU is between its first and last front access,
 *    and the interrupted code cannot see prev change under it. The add
 *    also guards against a nested interrupt running a second
 *    KHEAP_NOLOCK call on the same front.
 *  - Locks: a KHEAP_NOLOCK call takes a lock only with kheap_port_trylock,
 *    which fails at once if anyone holds it, this CPU included. So it
 *    never waits, never deadlocks against the code it interrupted, and
 *    what it changes under the lock (the depot's lists; a slab's free
 *    list in kh_cache_take_try) no one else is changing.
 *  - Other CPUs never touch this CPU's prev, except kheap_cpu_flush and
 *    kh_cache_drain(all), which run only once the CPU has stopped using
 *    the heap or the cache.
 * The one thing a marked slow path costs a KHEAP_NOLOCK call is its
 * magazines: it then tries the slabs (trylock) or fails/defers.
 */

/* The previous magazine of this CPU's front of c, if it has an object
 * (alloc) or room for one (free), swapping it with a depot magazine
 * under a trylock if need be; NULL if none or if the front is busy. On
 * success the front stays marked busy and the CPU entered:
 * kh_nolock_end undoes both. */
struct kh_mag *kh_nolock_begin(kheap_t *h, struct kheap_cache *c, bool alloc, unsigned *cpup)
{
    unsigned cpu = kheap_port_cpu_enter_fast();
    *cpup = cpu;
    struct kh_cc *cc = cpu == KHEAP_CPU_NONE || !c->mag_cap ? NULL : kh_cc_of(h, c, cpu);
    if (cc) {
        if (__atomic_fetch_add(kh_busy_of(h, c, cpu), 1, __ATOMIC_ACQUIRE) == 0) {
            struct kh_mag *m = cc->prev;
            bool ok = alloc ? m->n > 0 : m != &kh_mag_sentinel && m->n < m->cap;
            if (!ok && kheap_port_trylock(&c->lock)) {
                struct kh_mag *x = NULL;
                if (alloc) {
                    x = mag_pop(&KH_U(c)->depot_full, &KH_U(c)->nr_full_mags);
                    if (x && m != &kh_mag_sentinel)
                        mag_push(&KH_U(c)->depot_empty, &KH_U(c)->nr_empty_mags, m);
                } else if (m == &kh_mag_sentinel || KH_U(c)->nr_full_mags < KH_U(c)->depot_max) {
                    x = mag_pop(&KH_U(c)->depot_empty, &KH_U(c)->nr_empty_mags);
                    if (x && m != &kh_mag_sentinel) {
                        /* No home looked up (mag_home may look a region
                         * up, which this call must not wait for): any
                         * CPU's refill takes it after its own. */
                        m->home = KH_HOME_NONE;
                        mag_push(&KH_U(c)->depot_full, &KH_U(c)->nr_full_mags, m);
                    }
                }
                kh_unlock(&c->lock);
                if (x) {
                    cc->prev = m = x;
                    ok = true;
                }
            }
            if (ok)
                return m;
        }
        __atomic_fetch_sub(kh_busy_of(h, c, cpu), 1, __ATOMIC_RELEASE);
    }
    kheap_port_cpu_exit(cpu);
    return NULL;
}

void kh_nolock_end(kheap_t *h, struct kheap_cache *c, unsigned cpu)
{
    __atomic_fetch_sub(kh_busy_of(h, c, cpu), 1, __ATOMIC_RELEASE);
    kheap_port_cpu_exit(cpu);
}

/* Count n objects of a bulk call (from_mags of them through this CPU's
 * magazines) as allocations (alloc) or frees on this CPU: in the front's
 * counters, the rest also as misses, so cpu_hits counts only what the
 * magazines served; with no front, in the cache's no-CPU counters. */
void kh_cpu_account(kheap_t *h, struct kheap_cache *c, size_t n, size_t from_mags, bool alloc)
{
    unsigned cpu = kheap_port_cpu_enter();
    struct kh_cc *cc = cpu == KHEAP_CPU_NONE || !c->mag_cap ? NULL : kh_cc_of(h, c, cpu);
    if (cc) {
        busy_on(h, c, cpu);
        uint64_t *ctr = alloc ? &cc->allocs : &cc->frees;
        struct kh_misses *ms = miss_of(h, c, cpu);
        uint64_t *mctr = alloc ? &ms->alloc : &ms->free;
        __atomic_store_n(ctr, *ctr + n, __ATOMIC_RELAXED);
        __atomic_store_n(mctr, *mctr + (n - from_mags), __ATOMIC_RELAXED);
        busy_off(h, c, cpu);
    }
    kheap_port_cpu_exit(cpu);
    if (!cc && kh_cache_whole(c)) {
        kh_lock(&c->lock);
        if (alloc)
            KH_U(c)->nocpu_allocs += n;
        else
            KH_U(c)->nocpu_frees += n;
        kh_unlock(&c->lock);
    }
}

/* c's counters of bulk, reserve and KHEAP_NOLOCK calls, made for the
 * kmalloc classes on first need (internal pages; no lock held). NULL only
 * if there is no memory for them. */
struct kh_xc *kh_xc_get(kheap_t *h, struct kheap_cache *c)
{
    struct kh_xc *x = kh_xc_of(h, c);
    if (x || c->cls == KH_NO_CLASS || (c->flags & KH_CACHE_INTERNAL))
        return x;
    struct kh_xc *arr = kh_internal_pages(h, KHEAP_NUM_CLASSES * sizeof *arr, false);
    if (!arr)
        return NULL;
    kh_vg_benign(arr, KHEAP_NUM_CLASSES * sizeof *arr);
    struct kh_xc *none = NULL;
    if (!__atomic_compare_exchange_n(&h->kxc, &none, arr, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE))
        kh_internal_pages_free(h, arr); /* another CPU made them first */
    return kh_xc_of(h, c);
}
