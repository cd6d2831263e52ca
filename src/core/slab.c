/*
 * slab.c - slabs: a run of pages carved into objects of one cache.
 *
 * A slab is `pages` pages holding `objs` slots of `slot` bytes from its
 * first byte, then (for more than 32 objects) an allocation bitmap at
 * bitmap_off; with 32 objects or fewer the bitmap is the descriptor's
 * `bits` word and the slab holds no metadata at all. The slab's own
 * record is its first page's descriptor (out of line, Bonwick's "off-slab"
 * layout for every size): owner cache, free list head, counts.
 *
 * Slots are handed out lazily: first from the free list (threaded through
 * free objects at link_off), then by carving slot `carved` and counting it
 * up, so a new slab costs O(1) and untouched slots are never written. A
 * cache with a constructor keeps its link past the object (link_off ==
 * size rounded up), so the constructed bytes survive free and realloc.
 *
 * Invariants for each slab s (its cache's lock held):
 *   inuse == popcount(bitmap) <= carved <= objs
 *   length(free list) == carved - inuse, every member's bit clear
 *   s is on its cache's partial list iff 0 < inuse < objs, on the empty
 *   list iff inuse == 0, on no list iff inuse == objs
 *
 * Slab pages are chosen per cache so the bytes left over (tail plus
 * bitmap) are at most 1/8 of the slab (Bonwick 1994), with the fewest
 * pages that achieve it; a slab of more than one page takes up to
 * KH_SLAB_TIGHT_PAGES pages to leave at most 1/16, as SLUB's first pass
 * does.
 */
#include "kh_internal.h"

#define KH_INLINE_BITS 32u

static size_t bitmap_bytes_for(size_t n)
{
    return n <= KH_INLINE_BITS ? 0
                               : (n + KH_WORD_BITS - 1) / KH_WORD_BITS * sizeof(unsigned long);
}

/* Objects per slab of `pages` pages at `slot` bytes, `left` bytes before
 * the first (kh_obj_off) and the bitmap included. */
static size_t objs_for(size_t pages, size_t slot, size_t left)
{
    size_t bytes = pages * KH_PAGE - left, n = bytes / slot;
    while (n > KH_INLINE_BITS && n * slot + bitmap_bytes_for(n) > bytes)
        n--;
    return n > 65535 ? 65535 : n;
}

void kh_cache_setup(kheap_t *h, struct kheap_cache *c, const char *name,
                    size_t size, size_t align, kheap_ctor_fn ctor,
                    kheap_ctor_fn dtor, uint32_t flags)
{
    __builtin_memset(c, 0, sizeof *c);
    c->magic = KH_CACHE_MAGIC;
    c->flags = flags;
    c->heap = h;
    if (kh_cache_whole(c)) { /* a built-in cache of a split build makes its name */
        if (KH_SPLIT)
            __builtin_memset(KH_U(c), 0, sizeof *KH_U(c));
        size_t i = 0;
        for (; name && name[i] && i < KHEAP_NAME_MAX - 1; i++)
            KH_U(c)->name[i] = name[i];
        KH_U(c)->name[i] = 0;
    }
    if (!align) {
        /* Natural alignment: the largest power of two dividing the size,
         * at least 8, at most a page. Power-of-two kmalloc sizes are
         * aligned to themselves (a page-multiple slab start handles up to
         * a page; larger ones get slab_align below). */
        align = size & (~size + 1);
        if (align < 8)
            align = 8;
        if (align > KH_PAGE && !(flags & KH_CACHE_KMALLOC))
            align = KH_PAGE;
    }
    /* Free objects hold an aligned pointer. */
    if (align < sizeof(void *))
        align = sizeof(void *);
    size_t slot;
    c->align = (uint32_t)align;
    /* The debug build's redzones around a user cache's objects
     * (rz_cache): `left` before each (kh_obj_off), rz after it. */
    size_t left = kh_obj_off(c), rz = left ? RZ_CACHE : 0;
    if (ctor) {
        c->link_off = (uint32_t)kh_align_up(size, sizeof(void *));
        slot = kh_align_up(c->link_off + sizeof(void *) + rz, align);
    } else {
        c->link_off = 0;
        slot = kh_align_up((size < sizeof(void *) ? sizeof(void *) : size) + rz, align);
    }
    slot += left;
    c->size = (uint32_t)size;
    c->slot = (uint32_t)slot;
    c->slab_align = (uint32_t)(align > KH_PAGE ? align : KH_PAGE);
    c->ctor = ctor;
    if (kh_cache_whole(c))
        KH_U(c)->dtor = dtor;
    c->cls = KH_NO_CLASS;
    c->mag_cap = (flags & KH_CACHE_INTERNAL) ? 0 : kh_mag_cap_for(slot, h->mags_wide);
    if (c->mag_cap) /* (never a built-in cache of a split build) */
        KH_U(c)->depot_max = kh_depot_max_for(c->mag_cap, slot);
    /* The double-free key is a word inside the object: past a redzone's
     * start it would be taken for damage. */
    c->guard = !ctor && !(flags & KH_CACHE_INTERNAL) && (rz ? size : slot) >= 3 * sizeof(uint32_t);

    /* The fewest pages leaving at most 1/8 of the slab over (Bonwick),
     * else the least waste; but a slab that needs more than one page
     * anyway takes the fewest pages, up to KH_SLAB_TIGHT_PAGES, leaving
     * at most 1/16 (SLUB's first pass), if there are such. One-page slabs
     * stay one page, as they did when their frees took a shorter hit path
     * than a multi-page slab's (kh_fast.h, before the page table gave
     * every class one slot test): the layouts are kept as they were. */
    size_t tight = 0, loose = 0, best = 0, best_waste = (size_t)-1;
    for (size_t p = 1; p <= KH_SLAB_MAX_PAGES && !tight; p++) {
        size_t n = objs_for(p, slot, left);
        if (!n)
            continue;
        size_t bytes = p * KH_PAGE, waste = bytes - n * slot;
        if (p == 1 && waste * 8 <= bytes) {
            loose = 1;
            break;
        }
        if (waste * 16 <= bytes && p <= KH_SLAB_TIGHT_PAGES)
            tight = p;
        if (waste * 8 <= bytes && !loose)
            loose = p;
        if (loose && p >= KH_SLAB_TIGHT_PAGES)
            break;
        /* Compare waste fractions without division. */
        if (best == 0 || waste * (best * KH_PAGE) < best_waste * bytes) {
            best = p;
            best_waste = waste;
        }
    }
    best = tight ? tight : loose ? loose : best;
    c->pages = (uint32_t)best;
    c->objs = (uint32_t)objs_for(best, slot, left);
    c->bitmap_bytes = (uint32_t)bitmap_bytes_for(c->objs);
    /* from kh_slab_base, as the objects */
    c->bitmap_off = (uint32_t)(best * KH_PAGE - left - c->bitmap_bytes);
    /* floor(2^64 / slot) + 1: ceil(2^64 / slot) unless slot is a power of
     * two, where the + 1 keeps e below non-zero. Then k * slot * divtest
     * == k * e (mod 2^64) with e = slot * divtest - 2^64 in [1, slot], and
     * any off that is not a multiple of slot gives at least divtest
     * (Lemire, Kaser, Kurz 2019, for 32-bit off and slot); so off *
     * divtest < objs * e holds exactly for the slots, objs * e being far
     * below divtest. tests/test_layers.c checks it against division. */
#if !KH_SPLIT
    c->divtest = UINT64_MAX / slot + 1 + (kh_is_pow2(slot) ? 1 : 0);
    c->slot_lim = (uint64_t)c->objs * (uint64_t)(c->divtest * (uint64_t)slot);
#endif
    kheap_port_lock_init(&c->lock);
}

/* Set (set == true) or clear bit idx of slab s; returns its old value. */
static bool bit_flip(const struct kheap_cache *c, struct kh_page *s,
                     uintptr_t base, size_t idx, bool set)
{
    if (!c->bitmap_bytes) {
        uint32_t m = 1u << idx;
        bool old = s->bits & m;
        s->bits = set ? s->bits | m : s->bits & ~m;
        return old;
    }
    unsigned long *w = (unsigned long *)(base + c->bitmap_off) + idx / KH_WORD_BITS;
    unsigned long m = 1ul << (idx % KH_WORD_BITS);
    bool old = *w & m;
    *w = set ? *w | m : *w & ~m;
    return old;
}

bool kh_slab_obj_allocated(const struct kheap_cache *c, const struct kh_page *s,
                           uintptr_t base, size_t idx)
{
    if (!c->bitmap_bytes)
        return s->bits & (1u << idx);
    const unsigned long *w = (const unsigned long *)(base + c->bitmap_off);
    return w[idx / KH_WORD_BITS] & (1ul << (idx % KH_WORD_BITS));
}

static void **link_of(const struct kheap_cache *c, uintptr_t obj)
{
    return (void **)(obj + c->link_off);
}

static void list_add(struct kheap_cache *c, struct kh_page *s, uint8_t list)
{
    struct kh_page **head = list == KH_LIST_PARTIAL ? &c->partial : &c->empty;
    s->list = list;
    if (list == KH_LIST_FULL) {
        s->prev = s->next = NULL;
        c->nr_full++;
        return;
    }
    s->prev = NULL;
    s->next = *head;
    if (s->next)
        s->next->prev = s;
    *head = s;
    if (list == KH_LIST_PARTIAL)
        c->nr_partial++;
    else
        c->nr_empty++;
}

static void list_del(struct kheap_cache *c, struct kh_page *s)
{
    if (s->list == KH_LIST_FULL) {
        c->nr_full--;
        return;
    }
    struct kh_page **head = s->list == KH_LIST_PARTIAL ? &c->partial : &c->empty;
    if (s->prev)
        s->prev->next = s->next;
    else
        *head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    if (s->list == KH_LIST_PARTIAL) {
        c->nr_partial--;
    } else {
        c->nr_empty--;
        if (c->nr_empty < c->slab_empty_min)
            c->slab_empty_min = c->nr_empty;
    }
    s->prev = s->next = NULL;
}

/* The page table entries of slab s (kheap.window.pt): on every page of a
 * slab of a kmalloc class in the first region, the offset of its class's
 * front in struct kh_cpu, for the free hit path (kh_fast.h), with the
 * page's rebase (minus the slab's offset in the window) first. Set
 * before any object of the slab is handed out (by the take making it,
 * with or without c's lock: slab_new), cleared
 * after the last came back and the slab left c's lists (by the thread
 * giving it back), so a free of a live object reads a stable entry; a
 * racing free of a bad pointer may read either tag, or one slab's tag with
 * another's rebase (a whole number of pages off), and either way meets a
 * slot test and the key. */
static void page_tag(struct kheap_cache *c, struct kh_page *s, bool on)
{
    kheap_t *h = c->heap;
    if (s->region != 0 || !c->cc_off)
        return;
    size_t first = (size_t)(s - h->regions[0].pages);
    uint32_t rebase = (uint32_t)0 - (uint32_t)(first << KHEAP_PAGE_SHIFT);
    for (size_t i = 0; i < c->pages; i++) {
        struct kh_ptag *e = &h->window.pt[first + i];
        if (on) {
            __atomic_store_n(&e->rebase, rebase, __ATOMIC_RELAXED);
            __atomic_store_n(&e->home, (uint16_t)s->home, __ATOMIC_RELAXED);
        }
        __atomic_store_n(&e->tag, on ? c->cc_off : 0, __ATOMIC_RELEASE);
    }
}

/* Make home the home of slab s (KH_HOME_NONE: none), in its descriptor
 * and, for the free hit path, in its pages' entries of the page table
 * (where page_tag put them). c's lock held. Relaxed: the readers without
 * the lock (the free hit path, cpu.c's mag_home) act on a home as a
 * preference only, and a stale one sends an object to the other front
 * or a magazine to another CPU first, nothing else. */
static void slab_home(struct kheap_cache *c, struct kh_page *s, uint8_t home)
{
    kheap_t *h = c->heap;
    __atomic_store_n(&s->home, home, __ATOMIC_RELAXED);
    if (s->region != 0 || !c->cc_off)
        return;
    size_t first = (size_t)(s - h->regions[0].pages);
    for (size_t i = 0; i < c->pages; i++)
        __atomic_store_n(&h->window.pt[first + i].home, (uint16_t)home, __ATOMIC_RELAXED);
}

/* Free pages a heap must keep, after a new slab of c took its run, for
 * slab_new to let c's lock go: KHEAP_MAX_CPUS + 1 slabs' worth. A refill
 * of c that finds no slab while this one is unlisted cannot carve it, and
 * makes its own: near the end of the heap it could fail for want of
 * pages while this slab has room. The margin makes that need that many
 * pages taken by others (slabs, large blocks) within the window; it
 * narrows the case, it does not close it. Without the margin the lock is
 * kept, as it always is on a heap that small, and such a refill waits
 * and carves this slab. */
#define KH_SLAB_LET_GO_PAGES(c) ((size_t)(KHEAP_MAX_CPUS + 1) * (c)->pages)

/* A new slab for c, on no list yet (KH_LIST_NEW until the caller puts it
 * on one), or NULL (no pages); c's lock held. Takes page_lock, and sets
 * the descriptor's fields under it. The clearing of the bitmap is the
 * first touch of the slab's pages, a page fault, during which the
 * class's other refills would wait on c's lock (two threads of mstress,
 * each making slabs, slept on futexes 9 475 times a run; docs/DESIGN.md,
 * "Slabs"), so the lock is let go around it and the page tags when
 * may_let_go and the heap has pages to spare (KH_SLAB_LET_GO_PAGES): c's
 * lists and counters may then have changed when it returns. may_let_go
 * is false for a take outside the port's per-CPU section: on a port
 * whose locks mask interrupts, c's may be the last lock held, and an
 * interrupt handler could then take from c in the window. Other paths
 * read the fields only once the slab is on a list of c, which needs c's
 * lock, but kheap_check, which holds every lock and passes over a
 * KH_LIST_NEW slab's bitmap and page tags, and a free of a stray pointer
 * into it, which finds nothing carved (carved is 0). spare_only: NULL
 * unless the heap has pages to spare (a refill that could carve another
 * CPU's partial slab instead: "Homes" below). */
static struct kh_page *slab_new(struct kheap_cache *c, bool may_let_go, bool spare_only)
{
    kheap_t *h = c->heap;
    kh_lock(&h->page_lock);
    if (spare_only && h->free_pages < KH_SLAB_LET_GO_PAGES(c)) {
        kh_unlock(&h->page_lock);
        return NULL;
    }
    struct kh_page *s = kh_run_alloc(h, c->pages, c->slab_align, KH_PG_SLAB, false);
    if (s) {
        h->bitmap_bytes += c->bitmap_bytes;
        s->cache = c;
        s->inuse = 0;
        s->carved = 0;
        s->bits = 0;
        s->home = KH_HOME_NONE;
        s->freelist = NULL;
        s->list = KH_LIST_NEW;
    }
    bool let_go =
        may_let_go && s && c->bitmap_bytes && h->free_pages >= KH_SLAB_LET_GO_PAGES(c);
    kh_unlock(&h->page_lock);
    if (!s)
        return NULL;
    if (let_go)
        kh_unlock(&c->lock);
    page_tag(c, s, true);
    if (c->bitmap_bytes) {
        void *bm = (void *)(kh_slab_base(h, s) + c->bitmap_off);
        kh_vg_defined(bm, c->bitmap_bytes);
        __builtin_memset(bm, 0, c->bitmap_bytes);
    }
    if (let_go)
        kh_lock(&c->lock);
    return s;
}

#if KH_POISON
/* First byte of a freed object that lost its poison, or 0 (the link word
 * excepted). */
uintptr_t kh_poison_bad(const struct kheap_cache *c, uintptr_t obj)
{
    const unsigned char *p = (const unsigned char *)obj;
    for (size_t k = 0; k < kh_obj_span(c); k++) {
        if (k >= c->link_off && k < c->link_off + sizeof(void *))
            continue;
        if (c->guard && k >= 2 * sizeof(uint32_t) && k < 3 * sizeof(uint32_t))
            continue; /* the double-free key */
        if (p[k] != KHEAP_POISON_FREE)
            return obj + k;
    }
    return 0;
}
#endif

/*
 * Homes. A CPU caches what it frees, and without more the objects of one
 * slab end up used by every CPU in turn, their lines and pages moving
 * between the CPUs' caches: Larson's server test (bench/workloads.c) ran
 * no faster on two CPUs than with both threads on one, where mimalloc,
 * whose pages belong to threads, ran 1.7 times faster (docs/DESIGN.md,
 * "Homes"). So each slab has a home, the CPU whose refills carve it, and
 * on a heap with homes (kheap.homes) a refill (kh_cache_take_home) takes,
 * in this order:
 *   - among the first KH_HOME_SCAN slabs of the partial list, the first
 *     homed at the CPU, else the first with no home;
 *   - if the list is no longer than that (the scan saw every partial
 *     slab, and each is another CPU's): an empty slab, else a new one if
 *     the heap has pages to spare (KH_SLAB_LET_GO_PAGES free ones), else
 *     the first partial slab after all.
 *     Taking another's would make the objects that CPU still holds of it
 *     foreign to it, so each of its frees of them a remote one: two
 *     threads on two CPUs that share a few partial slabs so traded them
 *     back and forth, and their objects with them (bench/workloads.c
 *     kernel on 2 threads: 1.3 M front misses against 0.4 M on a heap
 *     without homes, and 0.278 s against 0.226 when a short list is left
 *     alone; docs/DESIGN.md, "Homes");
 *   - else (a longer list: a heap past its peak, whose partial slabs a
 *     scan cannot see to the end) the first partial slab, homed
 *     elsewhere: there homes never cost a slab (making one rather than
 *     take another CPU's ran larson no faster, and cost a 4-CPU kernel on
 *     an 8 MiB heap so many pages that 128 KiB blocks found no run; such
 *     a heap now has no homes at all: KHEAP_HOMES_MIN_HEAP);
 *   - then an empty slab, then a new one.
 * The slab it takes becomes the CPU's; a slab loses its home when it
 * empties. On a heap without homes the first partial slab is taken, as
 * before, and homes are kept all the same (the free hit path compares
 * them, and a CPU's own frees then go to its front). Objects come home
 * through the layers above: freed on a CPU that is not their home, they
 * go to that CPU's remote front (kh_fast.h), whose full magazines wait
 * in the depot tagged with their home, and a refill takes its own CPU's
 * first (cpu.c). The page table holds each slab page's home for the free
 * hit path (slab_home).
 */

/* The slab a take for CPU cpu (KHEAP_CPU_NONE: the first partial slab)
 * carves from next, on the partial list, or NULL when c has neither a
 * partial nor an empty slab (take then makes one: slab_new). Cache lock
 * held. */
static struct kh_page *slab_pick(struct kheap_cache *c, unsigned cpu, bool *others_only)
{
    struct kh_page *s = c->partial;
    bool others = false; /* every partial slab is another CPU's */
    if (s && cpu != KHEAP_CPU_NONE && c->heap->homes) {
        struct kh_page *none = NULL, *t = s;
        unsigned q = 0;
        for (; t && q < KH_HOME_SCAN; t = t->next, q++) {
            if (t->home == cpu)
                return t;
            if (t->home == KH_HOME_NONE && !none)
                none = t;
        }
        if (none)
            return none;
        /* (a longer list: the first, homed elsewhere, a partial slab
         * before an empty or a new one, as without homes) */
        others = !t;
    }
    *others_only = others;
    if (s && !others)
        return s;
    s = c->empty;
    if (s) {
        list_del(c, s);
        list_add(c, s, KH_LIST_PARTIAL);
    }
    return s;
}

/* An object leaving its slab for a caller (cache lock held). With
 * redzones (rz_cache) they are in place from now on while the object is
 * cached or handed out: a constructed object's both (the right one held
 * the free-list link, or nothing yet), another's left one (its right one
 * is poisoned until it is handed out, obj_out). */
static inline void take_prepare(const struct kheap_cache *c, uintptr_t obj)
{
#if KHEAP_REDZONE
    if (rz_cache(c)) {
        if (c->ctor)
            rz_cache_fill(c, (void *)obj);
        else
            rz_cache_fill_left(c, (void *)obj);
    }
#else
    (void)c;
    (void)obj;
#endif
}

/* n more objects of slab s are out: it leaves the partial list when it
 * has none left. Cache lock held. */
static void slab_taken(struct kheap_cache *c, struct kh_page *s, size_t n)
{
    s->inuse = (uint16_t)(s->inuse + n);
    if (s->inuse == c->objs) {
        list_del(c, s);
        list_add(c, s, KH_LIST_FULL);
    }
}

/* Set the allocation bits of slots [first, first + cnt) of slab s, none
 * of them set (fresh slots: take). Cache lock held. */
static void bits_set(const struct kheap_cache *c, struct kh_page *s, uintptr_t base,
                     size_t first, size_t cnt)
{
    if (!c->bitmap_bytes) {
        uint32_t m = (cnt < 32 ? (1u << cnt) - 1 : UINT32_MAX) << first;
        KH_ASSERT(!(s->bits & m), s);
        s->bits |= m;
        return;
    }
    unsigned long *w = (unsigned long *)(base + c->bitmap_off);
    while (cnt) {
        size_t i = first / KH_WORD_BITS, b = first % KH_WORD_BITS;
        size_t here = KH_WORD_BITS - b < cnt ? KH_WORD_BITS - b : cnt;
        unsigned long m = (here < KH_WORD_BITS ? (1ul << here) - 1 : ~0ul) << b;
        KH_ASSERT(!(w[i] & m), s);
        w[i] |= m;
        first += here;
        cnt -= here;
    }
}

/* n more objects of c handed out by take: its counters, the heap's bytes
 * in use, and *count if given. Cache lock held. */
static void take_count(struct kheap_cache *c, size_t n, uint64_t *count)
{
    c->active_objs += n;
    c->allocs += n;
    if (count)
        *count += n;
    if (n && (c->flags & KH_CACHE_INTERNAL))
        kh_account_internal(c->heap, n * c->size, true);
    else if (n)
        kh_account_commit(c->heap, n * c->size, true);
}

/*
 * Take up to n (<= 64) objects out of c's slabs into objs, constructed;
 * returns how many (fewer only when no page is left for a new slab). A
 * refill of CPU cpu's magazine carves from the CPU's own slabs first on
 * a heap with homes, and the slabs it takes from become the CPU's ("Homes"
 * above); cpu KHEAP_CPU_NONE takes from the first partial slab and leaves
 * homes as they are. At KHEAP_DEBUG >= 2 objects leave still carrying the
 * free poison (fresh ones get it here), which the layer above checks and
 * replaces.
 */
static size_t take(struct kheap_cache *c, void **objs, size_t n, uint64_t *count, unsigned cpu)
{
    kheap_t *h = c->heap;
    uint64_t fresh = 0;
    uintptr_t corrupt = 0;
    size_t k = 0;
    KH_ASSERT(n <= 64, objs);
    size_t counted = 0; /* objs[0 .. counted) are in c's counters */
    kh_lock(&c->lock);
    struct kh_page *s = NULL;
    while (k < n) {
        if (!s || s->list != KH_LIST_PARTIAL) {
            bool others_only;
            if (!(s = slab_pick(c, cpu, &others_only))) {
                /* None to carve from: a new slab. slab_new may let c's
                 * lock go meanwhile, so the objects taken so far are
                 * counted first: c's counters then agree with its slabs
                 * for kheap_check. Another take may add slabs to c in
                 * the while: this one carves its own all the same. */
                take_count(c, k - counted, count);
                counted = k;
                s = slab_new(c, cpu != KHEAP_CPU_NONE, others_only);
                if (s)
                    list_add(c, s, KH_LIST_PARTIAL);
                else if (!(s = c->partial))
                    break;
                /* (no new slab: another CPU's partial one, which
                 * slab_pick left alone. For that, a new slab only from
                 * pages to spare, KH_SLAB_LET_GO_PAGES or more free ones,
                 * so the rule neither fails an allocation nor spends a
                 * heap's last pages; free pages too cut up for a run of
                 * the slab's can still make a growable heap grow) */
            }
            if (cpu != KHEAP_CPU_NONE && s->home != cpu)
                slab_home(c, s, (uint8_t)cpu);
        }
        uintptr_t base = kh_slab_base(h, s);
        size_t got;
        if (s->freelist) {
            uintptr_t obj = (uintptr_t)s->freelist;
            s->freelist = *link_of(c, obj);
#if KH_POISON
            if (!c->ctor && !corrupt)
                corrupt = kh_poison_bad(c, obj);
#endif
            take_prepare(c, obj);
            size_t idx = (obj - base) / c->slot;
            bool was = bit_flip(c, s, base, idx, true);
            KH_ASSERT(!was, obj);
            (void)was;
            objs[k] = (void *)obj;
            got = 1;
        } else {
            /* Never-used slots, carved in order: as many as are wanted
             * and left, their bits set a word at a time (a slab of fresh
             * objects costs no division and no bit per object). */
            size_t left = (size_t)c->objs - s->carved;
            got = left < n - k ? left : n - k;
            KH_ASSERT(got, s); /* (a slab with none left is full, on no list) */
            if (!got)
                break;
            for (size_t i = 0; i < got; i++) {
                uintptr_t obj = base + (uintptr_t)(s->carved + i) * c->slot;
                /* The slot may lie where a freed block of an earlier slab
                 * was: writable again for valgrind. */
                kh_vg_undefined((void *)obj, kh_obj_span(c));
#if KH_POISON
                if (!c->ctor)
                    __builtin_memset((void *)obj, KHEAP_POISON_FREE, kh_obj_span(c));
#endif
                take_prepare(c, obj);
                objs[k + i] = (void *)obj;
            }
            bits_set(c, s, base, s->carved, got);
            if (got < 64)
                fresh |= (((uint64_t)1 << got) - 1) << k;
            else
                fresh = UINT64_MAX;
            s->carved = (uint16_t)(s->carved + got);
        }
        slab_taken(c, s, got);
        k += got;
    }
    take_count(c, k - counted, count);
    kh_unlock(&c->lock);

    if (corrupt)
        kh_report(KHEAP_REPORT_CORRUPTION, (void *)corrupt, c, "kheap_alloc");
    if (c->ctor)
        for (size_t i = 0; i < k; i++)
            if (fresh & ((uint64_t)1 << i))
                c->ctor(objs[i]);
    return k;
}

size_t kh_cache_take_counted(struct kheap_cache *c, void **objs, size_t n, uint64_t *count)
{
    return take(c, objs, n, count, KHEAP_CPU_NONE);
}

size_t kh_cache_take_home(struct kheap_cache *c, void **objs, size_t n, unsigned cpu)
{
    return take(c, objs, n, NULL, cpu);
}

/* For KHEAP_NOLOCK: one object of c from a slab it already has, if c's
 * lock can be had without waiting; 0 if not (busy, or no slab with a
 * free slot, or the only slot would need the constructor). Takes no other
 * lock (no new slab: that needs page_lock) and calls nothing: no
 * constructor, no report (the poison of the object is not checked). */
size_t kh_cache_take_try(struct kheap_cache *c, void **obj)
{
    kheap_t *h = c->heap;
    if (!kheap_port_trylock(&c->lock))
        return 0;
    struct kh_page *s = c->partial ? c->partial : c->empty;
    uintptr_t o = 0;
    if (s) {
        uintptr_t base = kh_slab_base(h, s);
        if (s->freelist) {
            o = (uintptr_t)s->freelist;
            s->freelist = *link_of(c, o);
        } else if (!c->ctor && s->carved < c->objs) {
            o = base + (uintptr_t)s->carved * c->slot;
            s->carved++;
            kh_vg_undefined((void *)o, kh_obj_span(c));
        }
        if (o) {
            /* Its redzones, as take fills them, before the bit says
             * allocated (kheap_check reads them then). */
            take_prepare(c, o);
            if (s->list == KH_LIST_EMPTY) {
                list_del(c, s);
                list_add(c, s, KH_LIST_PARTIAL);
            }
            bool was = bit_flip(c, s, base, (o - base) / c->slot, true);
            KH_ASSERT(!was, o);
            (void)was;
            slab_taken(c, s, 1);
            take_count(c, 1, NULL);
        }
    }
    kh_unlock(&c->lock);
    *obj = (void *)o;
    return o != 0;
}

/* Destroy and give back one empty slab of c (on no list; no lock held). */
static size_t slab_free(struct kheap_cache *c, struct kh_page *s)
{
    kheap_t *h = c->heap;
    uintptr_t base = kh_slab_base(h, s);
    if (kh_cache_whole(c) && KH_U(c)->dtor) {
        for (size_t i = 0; i < s->carved; i++) {
            kh_vg_defined((void *)(base + i * c->slot), kh_obj_span(c));
            KH_U(c)->dtor((void *)(base + i * c->slot));
        }
    }
    page_tag(c, s, false);
    kh_lock(&h->page_lock);
    /* The byte that was the slab's home is a large block's internal flag
     * again, 0 but on kheap's own pages (kh_page); under page_lock, with
     * the run's kind, as a walk of the pages reads both. */
    s->internal = 0;
    h->bitmap_bytes -= c->bitmap_bytes;
    kh_run_free(h, s);
    kh_unlock(&h->page_lock);
    return (size_t)c->pages * KH_PAGE;
}

/* Give back a list of empty slabs of c linked through next: at once with
 * later NULL (no lock held) or if c has no destructor; else kept in later
 * (the caller holds caches_lock, under which no destructor may run:
 * kheap.h), counted in c's slabs_later before caches_lock is released, so
 * that kheap_cache_destroy, which unlinks c under that lock, sees every
 * slab it must wait for. Only user caches have destructors. Returns the
 * bytes either way. */
static size_t slabs_free(struct kheap_cache *c, struct kh_page *list, struct kh_later *later)
{
    size_t bytes = 0;
    while (list) {
        struct kh_page *s = list;
        list = s->next;
        if (!later || !kh_cache_dtor(c)) {
            bytes += slab_free(c, s);
            continue;
        }
        __atomic_add_fetch(&kh_ucx_of(c)->slabs_later, 1u, __ATOMIC_RELAXED);
        s->next = later->slabs;
        later->slabs = s;
        bytes += (size_t)c->pages * KH_PAGE;
    }
    return bytes;
}

void kh_later_slabs_free(struct kh_later *l)
{
    while (l->slabs) {
        struct kh_page *s = l->slabs;
        struct kheap_cache *c = s->cache;
        l->slabs = s->next;
        slab_free(c, s);
        /* The last touch of c, unless c was destroyed meanwhile and this
         * was the last of its slabs any walk held: then this walk gives c
         * back (kh_later_finish). Destroy set KH_LATER_DYING with c off
         * the list, so no walk can raise the count again. */
        if (__atomic_sub_fetch(&kh_ucx_of(c)->slabs_later, 1u, __ATOMIC_ACQ_REL) ==
            KH_LATER_DYING) {
            KH_U(c)->next = l->retire;
            l->retire = c;
        }
    }
}

/* Put obj back into slab s (c's lock held). Returns 0, or why not; sets
 * *release to s when s became an empty slab beyond those kept. */
static enum kheap_report_kind give_locked(struct kheap_cache *c, uintptr_t obj,
                                          struct kh_page *s, struct kh_page **release)
{
    kheap_t *h = c->heap;
    /* The caller found s without c's lock; under misuse (a racing double
     * free) the slab may have gone: check again now that it is stable. */
    if (s->kind != KH_PG_SLAB || s->cache != c)
        return KHEAP_REPORT_DOUBLE_FREE;
    uintptr_t base = kh_slab_base(h, s);
    size_t idx = kh_slot_of(c, obj - base);
    if (idx >= c->objs)
        return KHEAP_REPORT_INTERIOR;
    if (idx >= s->carved || !bit_flip(c, s, base, idx, false))
        return KHEAP_REPORT_DOUBLE_FREE;
#if KH_POISON
    if (!c->ctor)
        __builtin_memset((void *)obj, KHEAP_POISON_FREE, kh_obj_span(c));
    /* A freed object keeps its key in the slab, so a second free finds
     * it (kmalloc.c: freed_already). */
    if (c->guard)
        *kh_guard_word((void *)obj) = KH_GUARD_KEY;
#endif
    kh_vg_defined(link_of(c, obj), sizeof(void *));
    *link_of(c, obj) = s->freelist;
    s->freelist = (void *)obj;
    s->inuse--;
    if (s->inuse == 0) {
        slab_home(c, s, KH_HOME_NONE);
        list_del(c, s);
        if (c->nr_empty < KHEAP_EMPTY_SLABS_KEPT) {
            list_add(c, s, KH_LIST_EMPTY);
        } else {
            s->list = KH_LIST_GONE;
            s->next = *release;
            *release = s;
        }
    } else if (s->list == KH_LIST_FULL) {
        list_del(c, s);
        list_add(c, s, KH_LIST_PARTIAL);
    }
    c->active_objs--;
    c->frees++;
    return 0;
}

/* The heap's byte counters for n objects of c given back (c's lock held,
 * as when they were taken, so the peak never counts a slot twice): one
 * atomic update per batch, not per object (the counters are shared by
 * every CPU, and a flush gives a whole magazine). */
static void give_account(struct kheap_cache *c, size_t n)
{
    if (!n)
        return;
    if (c->flags & KH_CACHE_INTERNAL)
        kh_account_internal(c->heap, n * c->size, false);
    else
        kh_account_commit(c->heap, n * c->size, false);
}

enum kheap_report_kind kh_cache_give(struct kheap_cache *c, void *ptr,
                                     struct kh_page *s)
{
    struct kh_page *release = NULL;
    kh_lock(&c->lock);
    enum kheap_report_kind bad = give_locked(c, (uintptr_t)ptr, s, &release);
    give_account(c, !bad);
    kh_unlock(&c->lock);
    slabs_free(c, release, NULL);
    return bad;
}

/* Give n objects of c back to their slabs under one lock hold; returns the
 * bytes of slabs that went back to the page layer. An object its slab
 * already holds free (a double free that sat in a magazine) is reported
 * and skipped: into later (kept under c's lock, delivered by the caller
 * once it holds no lock), or after c's lock is released, the first 8 of
 * this call. */
size_t kh_cache_give_counted(struct kheap_cache *c, void **objs, size_t n, uint64_t *count,
                             struct kh_later *later)
{
    static const char flushed[] = "kheap_free (found when its magazine was flushed)";
    kheap_t *h = c->heap;
    struct kh_page *release = NULL;
    void *bad_obj[8];
    enum kheap_report_kind bad_why[8];
    size_t nbad = 0, refused = 0;
    kh_lock(&c->lock);
    for (size_t i = 0; i < n; i++) {
        enum kheap_report_kind why =
            give_locked(c, (uintptr_t)objs[i], kh_slab_of(h, (uintptr_t)objs[i]), &release);
        refused += why != 0;
        /* A refused object was counted as freed by whoever freed it (a
         * CPU's counter, or nocpu_frees): that free did not happen, so it
         * is taken back here, keeping live + cached == active_objs. */
        if (why && kh_cache_nocpu(c))
            KH_U(c)->nocpu_frees--;
        if (why && later) {
            kh_later_add(later, why, objs[i], c, flushed);
        } else if (why && nbad < 8) {
            bad_obj[nbad] = objs[i];
            bad_why[nbad++] = why;
        }
    }
    if (count)
        *count += n;
    give_account(c, n - refused);
    kh_unlock(&c->lock);
    size_t bytes = slabs_free(c, release, later);
    for (size_t i = 0; i < nbad; i++)
        kh_report(bad_why[i], bad_obj[i], c, flushed);
    return bytes;
}

size_t kh_cache_decay(struct kheap_cache *c, struct kh_later *later)
{
    kh_lock(&c->lock);
    size_t idle = c->slab_empty_min < c->nr_empty ? c->slab_empty_min : c->nr_empty;
    size_t keep = c->nr_empty - idle;
    kh_unlock(&c->lock);
    size_t bytes = idle ? kh_cache_release(c, keep, later) : 0;
    kh_lock(&c->lock);
    c->slab_empty_min = c->nr_empty;
    kh_unlock(&c->lock);
    return bytes;
}

size_t kh_cache_release(struct kheap_cache *c, size_t keep, struct kh_later *later)
{
    struct kh_page *list = NULL;
    kh_lock(&c->lock);
    while (c->nr_empty > keep) {
        struct kh_page *s = c->empty;
        list_del(c, s);
        s->list = KH_LIST_GONE;
        s->next = list;
        list = s;
    }
    kh_unlock(&c->lock);
    return slabs_free(c, list, later);
}
