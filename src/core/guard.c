/*
 * guard.c - sampled guard blocks: a page of its own for about one
 * allocation in N, between pages that fault.
 *
 * The idea is KFENCE's and GWP-ASan's (docs/DESIGN.md, "Sampled guard
 * blocks", cites them): a few allocations, chosen at random intervals,
 * are placed where a stray access faults at once, so a production build
 * finds overflows and uses after free at no cost on its hit paths.
 *
 * The pool is one run of 2 * KHEAP_GUARD_SLOTS + 1 pages, taken from the
 * heap as metadata the first time sampling is turned on
 * (kheap_set_sample) and kept for the heap's life. Its even pages are
 * guard pages, inaccessible for ever; odd page 2k + 1 is slot k's data
 * page, accessible only while slot k holds a live block:
 *
 *     | guard | slot 0 | guard | slot 1 | guard | ... | slot S-1 | guard |
 *
 * A sampled block is placed against the end of its page or against its
 * start, in turn, so an overflow runs into the next guard page or an
 * underflow into the previous one. What the block does not use of its
 * page is filled with KH_GUARD_FILL and checked at free, which finds the
 * small overflows that stay inside the page. On free the data page is
 * made inaccessible and the slot joins the tail of a FIFO of free slots:
 * the slot freed longest ago is used next, so a freed block's page stays
 * inaccessible while every other slot is used once (a use after free
 * faults for that long).
 *
 * When: the miss paths count a countdown (kheap.g_left) down by the
 * allocations a magazine refill serves, and the allocation that takes it
 * to zero or below is sampled; the hit paths do not change. A block is
 * sampled only if it fits a page (up to KHEAP_PAGE_SIZE bytes) and a slot
 * is free; else it is allocated as usual.
 *
 * kheap_port_protect is called with no kheap lock held.
 *
 * A fault in the pool reaches kheap_guard_fault from the platform's
 * fault handler (hosted: kheap_hosted_catch_faults installs one), which
 * reports the block: an overflow, an underflow or a use after free.
 *
 * Pool pages are tagged as metadata (a run of kheap's own), so the free
 * hit path (kh_fast.h) misses on them, and the page layer and the checker
 * never read them.
 */
#include "kh_internal.h"

#define KH_LONG_MAX ((long)(~0ul >> 1))

#if KH_GUARDS

/* Reload the countdown for one sample in every allocations: every - 1 to
 * go, so that 1 samples every miss. */
static void countdown_reload(kheap_t *h, unsigned long every)
{
    long left = every > (unsigned long)KH_LONG_MAX ? KH_LONG_MAX : (long)every - 1;
    __atomic_store_n(&h->g_left, left, __ATOMIC_RELAXED);
}

#define KH_GUARD_PAGES (2u * KHEAP_GUARD_SLOTS + 1u)
/* What fills the unused part of a data page, checked at free. */
#define KH_GUARD_FILL 0xfc

static uintptr_t slot_page(const kheap_t *h, unsigned k)
{
    return h->g_start + (2u * k + 1u) * KH_PAGE;
}

static unsigned slot_state(const struct kh_gslot *s)
{
    return __atomic_load_n(&s->state, __ATOMIC_ACQUIRE);
}

/* Make the pool: its pages inaccessible, every slot free. Pages are taken
 * with no lock held and given back if another thread made the pool
 * first. */
int kh_guard_pool(kheap_t *h)
{
    if (__atomic_load_n(&h->g_end, __ATOMIC_ACQUIRE))
        return 0;
    size_t bytes = (size_t)KH_GUARD_PAGES * KH_PAGE;
    /* fresh: the pages are not zeroed (their contents never matter), so
     * the pool costs no memory until a block uses a slot. */
    void *pool = kh_internal_pages(h, bytes, true);
    if (!pool)
        return KHEAP_ENOMEM;
    if (kheap_port_protect(pool, bytes, 0)) {
        (void)kheap_port_protect(pool, bytes, 1);
        kh_internal_pages_free(h, pool);
        return KHEAP_ENOSYS;
    }
    kh_lock(&h->g_lock);
    bool mine = !h->g_end;
    if (mine) {
        h->g_start = (uintptr_t)pool;
        for (unsigned k = 0; k < KHEAP_GUARD_SLOTS; k++)
            h->g_ring[k] = (uint8_t)k;
        h->g_head = 0;
        h->g_nfree = KHEAP_GUARD_SLOTS;
        __atomic_store_n(&h->g_end, (uintptr_t)pool + bytes, __ATOMIC_RELEASE);
    }
    kh_unlock(&h->g_lock);
    if (!mine) {
        (void)kheap_port_protect(pool, bytes, 1);
        kh_internal_pages_free(h, pool);
    }
    return 0;
}

int kheap_set_sample(kheap_t *h, unsigned long every)
{
    if (!h)
        return KHEAP_EINVAL;
    if (KHEAP_REDZONE && every) /* every block there has redzones */
        return KHEAP_ENOSYS;
    if (every) {
        int err = kh_guard_pool(h);
        if (err)
            return err;
    }
    /* g_left: allocations to go before the next miss samples (so 1
     * samples every miss). Racing with a miss path that reloads the
     * countdown is harmless: the next sample comes after one interval or
     * the other. */
    countdown_reload(h, every);
    __atomic_store_n(&h->g_every, every, __ATOMIC_RELAXED);
    return 0;
}

unsigned long kheap_get_sample(kheap_t *h)
{
    return h ? __atomic_load_n(&h->g_every, __ATOMIC_RELAXED) : 0;
}

/* Give slot k back to the tail of the FIFO (g_lock held). */
static void slot_release(kheap_t *h, unsigned k)
{
    h->g_ring[(h->g_head + h->g_nfree) % KHEAP_GUARD_SLOTS] = (uint8_t)k;
    h->g_nfree++;
}

/* Take the free slot freed longest ago and place a block of size bytes
 * in it; NULL if every slot is in use (or its page will not open). */
static void *guard_alloc(kheap_t *h, size_t size)
{
    kh_lock(&h->g_lock);
    if (!h->g_nfree) {
        kh_unlock(&h->g_lock);
        return NULL;
    }
    unsigned k = h->g_ring[h->g_head];
    h->g_head = (h->g_head + 1) % KHEAP_GUARD_SLOTS;
    h->g_nfree--;
    bool at_end = (h->g_flip ^= 1u) != 0;
    struct kh_gslot *s = &h->g_slot[k];
    /* The slot is this thread's until it goes live: out of the FIFO, and
     * not counted yet; its page is still shut. */
    __atomic_store_n(&s->state, KH_GS_OPENING, __ATOMIC_RELAXED);
    kh_unlock(&h->g_lock);

    uintptr_t page = slot_page(h, k);
    /* A zero-size block keeps its page shut: any access through it
     * faults, a read as much as a write. */
    if (size && kh_unlikely(kheap_port_protect((void *)page, KH_PAGE, 1))) {
        /* A page the platform will not open: the slot is given up (it
         * would fail again), and the allocation takes the usual path. */
        kh_lock(&h->g_lock);
        __atomic_store_n(&s->state, KH_GS_RETIRED, __ATOMIC_RELEASE);
        kh_unlock(&h->g_lock);
        return NULL;
    }
    /* Aligned as the block's class is (kheap.h: to the largest power of
     * two dividing the class size, at least 16, at most a page). */
    size_t cls = kh_class_size(kh_class_of(size));
    uintptr_t align = (uintptr_t)(cls & (~cls + 1u));
    align = align < 16 ? 16 : align > KH_PAGE ? KH_PAGE : align;
    uintptr_t p = at_end && size ? (page + KH_PAGE - size) & ~(align - 1) : page;
    if (size) {
        __builtin_memset((void *)page, KH_GUARD_FILL, p - page);
        __builtin_memset((void *)p, 0, size); /* no stale data of the last user */
        __builtin_memset((void *)(p + size), KH_GUARD_FILL, page + KH_PAGE - p - size);
    }
    kh_lock(&h->g_lock);
    s->addr = p;
    s->size = size;
    h->g_allocs++;
    h->g_alloc_bytes += size;
    kh_account_commit(h, size, true);
    __atomic_store_n(&s->state, KH_GS_LIVE, __ATOMIC_RELEASE);
    kh_unlock(&h->g_lock);
    return (void *)p;
}

void *kh_guard_sample(kheap_t *h, size_t size)
{
    unsigned long every = __atomic_load_n(&h->g_every, __ATOMIC_RELAXED);
    if (!every || size > KH_PAGE || __atomic_load_n(&h->g_left, __ATOMIC_RELAXED) > 0)
        return NULL;
    /* Two threads may both find it run out: each reloads, and two blocks
     * are sampled close together, which only samples a little more. */
    countdown_reload(h, every);
    return guard_alloc(h, size);
}

#if KHEAP_REDZONE
void *kh_guard_zero(kheap_t *h)
{
    return __atomic_load_n(&h->g_end, __ATOMIC_ACQUIRE) ? guard_alloc(h, 0) : NULL;
}
#endif

void kh_guard_count(kheap_t *h, size_t served)
{
    __atomic_sub_fetch(&h->g_left, (long)served, __ATOMIC_RELAXED);
}

/* The first byte of [from, to) that is not the fill, or NULL. */
static const void *fill_damage(uintptr_t from, uintptr_t to)
{
    for (const unsigned char *q = (const unsigned char *)from; (uintptr_t)q < to; q++)
        if (*q != KH_GUARD_FILL)
            return q;
    return NULL;
}

/* Slot k's block at p, if p is one and it is live; else NULL and *why.
 * Reads the slot with no lock: callers that act on it take g_lock. */
static struct kh_gslot *slot_of(kheap_t *h, const void *p, unsigned *k,
                                enum kheap_report_kind *why)
{
    uintptr_t idx = ((uintptr_t)p - h->g_start) >> KHEAP_PAGE_SHIFT;
    if (!(idx & 1u)) {
        *why = KHEAP_REPORT_FREE_RUN; /* a guard page: never a block */
        return NULL;
    }
    *k = (unsigned)(idx >> 1);
    struct kh_gslot *s = &h->g_slot[*k];
    unsigned st = slot_state(s);
    if (s->addr != (uintptr_t)p || st == KH_GS_UNUSED || st == KH_GS_RETIRED) {
        *why = KHEAP_REPORT_INTERIOR;
        return NULL;
    }
    if (st != KH_GS_LIVE) {
        *why = KHEAP_REPORT_DOUBLE_FREE;
        return NULL;
    }
    return s;
}

bool kh_guard_live(kheap_t *h, const void *p, size_t *size, enum kheap_report_kind *why)
{
    unsigned k;
    struct kh_gslot *s = slot_of(h, p, &k, why);
    if (s)
        *size = s->size;
    return s != NULL;
}

void **kh_guard_link(kheap_t *h, const void *p)
{
    return &h->g_slot[((uintptr_t)p - h->g_start) >> (KHEAP_PAGE_SHIFT + 1)].link;
}

void kh_guard_free(kheap_t *h, void *ptr, const char *fn)
{
    unsigned k = 0;
    enum kheap_report_kind why = 0;
    kh_lock(&h->g_lock);
    struct kh_gslot *s = slot_of(h, ptr, &k, &why);
    if (s)
        __atomic_store_n(&s->state, KH_GS_FREEING, __ATOMIC_RELAXED);
    kh_unlock(&h->g_lock);
    if (!s) {
        kh_report(why, ptr, NULL, fn);
        return;
    }
    /* Only this thread frees the block now (a second free finds FREEING
     * and is refused): check its fill, then shut its page. */
    uintptr_t page = slot_page(h, k), p = (uintptr_t)ptr;
    size_t size = s->size;
    const void *under = NULL, *over = NULL;
    bool shut = true; /* a zero-size block's page never opened */
    if (size) {
        under = fill_damage(page, p);
        over = fill_damage(p + size, page + KH_PAGE);
        /* A page the platform will not shut again (hosted: mprotect out
         * of memory for its mappings) stays open: its slot is given up. */
        shut = kheap_port_protect((void *)page, KH_PAGE, 0) == 0;
    }
    kh_lock(&h->g_lock);
    __atomic_store_n(&s->state, shut ? KH_GS_FREED : KH_GS_RETIRED, __ATOMIC_RELEASE);
    if (shut)
        slot_release(h, k);
    h->g_frees++;
    h->g_free_bytes += size;
    kh_account_commit(h, size, false);
    kh_unlock(&h->g_lock);
    /* Reported once the block is freed: the heap is whole whatever the
     * hook does. */
    if (over)
        kh_report_at(KHEAP_REPORT_OVERFLOW, ptr, NULL, fn, size, over);
    else if (under)
        kh_report_at(KHEAP_REPORT_UNDERFLOW, ptr, NULL, fn, size, under);
}

/* ------------------------------------------------------------------ */
/* Faults. Called from a fault handler, maybe a signal handler: it takes
 * no lock (the faulting thread may hold one), and reads the slots with
 * atomic loads. A slot that changes while it reads (another thread
 * allocating or freeing it) can only make the report name the wrong
 * block of two neighbours; the fault itself was real. */

int kh_guard_fault(kheap_t *h, const void *addr)
{
    if (!kh_guard_owns(h, addr))
        return 0;
    uintptr_t a = (uintptr_t)addr;
    uintptr_t idx = (a - h->g_start) >> KHEAP_PAGE_SHIFT;
    const struct kh_gslot *s = NULL;
    enum kheap_report_kind kind = KHEAP_REPORT_FOREIGN;
    const char *why = "access to a guard page next to no sampled block";
    if (idx & 1u) {
        s = &h->g_slot[idx >> 1];
        if (slot_state(s) == KH_GS_UNUSED || !s->addr)
            s = NULL;
        kind = KHEAP_REPORT_USE_AFTER_FREE;
        why = "access to a sampled block after its free (use after free)";
        if (s && slot_state(s) == KH_GS_LIVE) { /* only a zero-size one's page is shut */
            kind = KHEAP_REPORT_OVERFLOW;
            why = "access through a zero-size block (heap overflow)";
        } else if (!s) {
            kind = KHEAP_REPORT_FOREIGN;
            why = "access to a guard page that never held a block";
        }
    } else {
        /* A guard page: past the end of the block on its left, or before
         * the start of the one on its right; the nearer of the two that
         * ever held a block, a live one if they are as near. */
        const struct kh_gslot *left = idx ? &h->g_slot[(idx >> 1) - 1] : NULL;
        const struct kh_gslot *right = idx < 2u * KHEAP_GUARD_SLOTS ? &h->g_slot[idx >> 1] : NULL;
        unsigned ls = left ? slot_state(left) : KH_GS_UNUSED;
        unsigned rs = right ? slot_state(right) : KH_GS_UNUSED;
        bool l_used = ls != KH_GS_UNUSED && ls != KH_GS_RETIRED && left->addr;
        bool r_used = rs != KH_GS_UNUSED && rs != KH_GS_RETIRED && right->addr;
        uintptr_t ld = l_used ? a - (left->addr + left->size) : ~(uintptr_t)0;
        uintptr_t rd = r_used ? right->addr - a : ~(uintptr_t)0;
        bool pick_left = ld < rd || (ld == rd && ls == KH_GS_LIVE);
        s = pick_left ? (l_used ? left : NULL) : (r_used ? right : NULL);
        if (s && slot_state(s) != KH_GS_LIVE) {
            kind = KHEAP_REPORT_USE_AFTER_FREE;
            why = pick_left ? "access past the end of a freed sampled block "
                              "(use after free and overflow)"
                            : "access before the start of a freed sampled block "
                              "(use after free and underflow)";
        } else if (s) {
            kind = pick_left ? KHEAP_REPORT_OVERFLOW : KHEAP_REPORT_UNDERFLOW;
            why = pick_left ? "access past the end of a sampled block hit its guard page "
                              "(heap overflow)"
                            : "access before the start of a sampled block hit its guard "
                              "page (heap underflow)";
        }
    }
    kh_report_why(kind, why, s ? (const void *)s->addr : addr, NULL, "kheap_guard_fault",
                  s ? s->size : 0, addr);
    return 1;
}

void kh_guard_stats(kheap_t *h, uint64_t *allocs, uint64_t *frees, uint64_t *abytes,
                    uint64_t *fbytes)
{
    kh_lock(&h->g_lock);
    *allocs = h->g_allocs;
    *frees = h->g_frees;
    *abytes = h->g_alloc_bytes;
    *fbytes = h->g_free_bytes;
    kh_unlock(&h->g_lock);
}

#else /* !KH_GUARDS */

int kheap_set_sample(kheap_t *h, unsigned long every)
{
    if (!h)
        return KHEAP_EINVAL;
    return every ? KHEAP_ENOSYS : 0;
}

unsigned long kheap_get_sample(kheap_t *h)
{
    (void)h;
    return 0;
}

int kh_guard_fault(kheap_t *h, const void *addr)
{
    (void)h, (void)addr;
    return 0;
}

#endif /* KH_GUARDS */
