/*
 * heap.c - the heap's own services, under every layer.
 *
 * What any layer may need of the heap as a whole, and that needs no layer
 * itself: error strings, the report hook and its reasons, the byte
 * accounting, the size-class geometry, the registry of heaps, and taking
 * every lock of a heap (kheap_check, fork). It calls only the port. The
 * walk over a heap's caches is inline (kh_cache_next, kh_internal.h), so
 * lock-all needs no layer above either.
 *
 * Accounting: the slab-level committed bytes, their peak and the internal
 * bytes are atomic counters, updated once per batch on slow paths (never
 * on a hit) while the lock guarding the change is held; failures are
 * counted under page_lock. Object counts per cache are kept by the
 * per-CPU layer (cpu.c). No lock is shared by all caches.
 *
 * The registry is a list of heaps under a port lock of its own, taken
 * only at heap creation and end, at thread exit / CPU offline
 * (kheap_cpu_flush) and around fork; it comes before every heap lock.
 */
#include "kh_internal.h"

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
        return "the port lacks the hook this needs (pages: KHEAP_PORT_PAGES; "
               "page protection: KHEAP_PORT_PROTECT)";
    case KHEAP_ENOMEM:
        return "the heap cannot give the objects asked for";
    default:
        return "unknown kheap error";
    }
}

/* v in decimal into buf, which has room for its digits (20 at most), no
 * terminator; returns the number of digits. For the text forms and the
 * kmalloc caches' names. */
size_t kh_decimal(char *buf, uint64_t v)
{
    char d[20];
    size_t n = 0, k = 0;
    do {
        d[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        buf[k++] = d[--n];
    return k;
}

#if KH_SPLIT
void kh_builtin_name(const struct kheap_cache *c, char *buf)
{
    static const char kmalloc[] = "kmalloc-", caches[] = "kheap_cache",
                      mags[] = "kheap_magazine-";
    const kheap_t *h = c->heap;
    __builtin_memset(buf, 0, KHEAP_NAME_MAX);
    if (c->flags & KH_CACHE_KMALLOC) {
        __builtin_memcpy(buf, kmalloc, sizeof kmalloc - 1);
        kh_decimal(buf + sizeof kmalloc - 1, kh_class_size(c->cls));
    } else if (c == &h->cache_cache) {
        __builtin_memcpy(buf, caches, sizeof caches - 1);
    } else {
        __builtin_memcpy(buf, mags, sizeof mags - 1);
        kh_decimal(buf + sizeof mags - 1, (uint64_t)4 << (c - h->mag_cache));
    }
}
#endif

/* ------------------------------------------------------------------ */
/* Reports: one hook for every heap, the port's sink until one is set. */

static kheap_report_fn report_hook;

kheap_report_fn kheap_set_report_hook(kheap_report_fn fn)
{
    return __atomic_exchange_n(&report_hook, fn, __ATOMIC_ACQ_REL);
}

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
        return "block is already free (double free)";
    case KHEAP_REPORT_WRONG_CACHE:
        return "object does not belong to this cache";
    case KHEAP_REPORT_CORRUPTION:
        return "freed object was written to after free (poison overwritten)";
    case KHEAP_REPORT_BUSY:
        return "cache destroyed while objects are still allocated";
    case KHEAP_REPORT_OVERFLOW:
        return "bytes after the block were overwritten (heap overflow)";
    case KHEAP_REPORT_UNDERFLOW:
        return "bytes before the block were overwritten (heap underflow)";
    case KHEAP_REPORT_USE_AFTER_FREE:
        return "freed block was written to while in quarantine (use after free)";
    case KHEAP_REPORT_KIND_MISMATCH:
        return "block freed as another kind than it was allocated as "
               "(free of new, delete of new[], ...)";
    case KHEAP_REPORT_SIZE_MISMATCH:
        return "sized free with a size that is not the block's";
    }
    return "unknown problem";
}

void kh_report_at(enum kheap_report_kind kind, const void *addr, const struct kheap_cache *c,
                  const char *function, size_t size, const void *where)
{
    kh_report_why(kind, NULL, addr, c, function, size, where);
}

/* A report to the hook, or to the port's sink. */
static void deliver(enum kheap_report_kind kind, const char *reason, const void *addr,
                    const char *cache, const char *function, size_t size, const void *where)
{
    struct kheap_report r = {
        .kind = kind,
        .reason = reason ? reason : kh_report_reason(kind),
        .addr = addr,
        .cache = cache,
        .function = function,
        .size = size,
        .where = where,
    };
    kheap_report_fn fn = __atomic_load_n(&report_hook, __ATOMIC_ACQUIRE);
    if (fn)
        fn(&r);
    else
        kheap_port_report(&r);
}

void kh_report_why(enum kheap_report_kind kind, const char *reason, const void *addr,
                   const struct kheap_cache *c, const char *function, size_t size,
                   const void *where)
{
#if KH_SPLIT
    char name[KHEAP_NAME_MAX];
    if (c && !kh_cache_whole(c)) {
        kh_builtin_name(c, name);
        deliver(kind, reason, addr, name, function, size, where);
        return;
    }
#endif
    deliver(kind, reason, addr, c ? KH_U(c)->name : NULL, function, size, where);
}

void kh_later_add(struct kh_later *l, enum kheap_report_kind kind, const void *addr,
                  const struct kheap_cache *c, const char *function)
{
    if (!l) {
        kh_report(kind, addr, c, function);
        return;
    }
    struct kh_later_item *it;
    if (l->n < KH_LATER_MAX)
        it = &l->item[l->n++];
    else if (l->more++ == 0)
        it = &l->item[KH_LATER_MAX];
    else
        return;
    it->addr = addr;
    it->function = function;
    it->kind = kind;
    it->cache[0] = '\0';
    if (c)
        kh_cache_name(c, it->cache);
}

/* The reports kept whole, in order; then, if more were found, the first of
 * those, with a reason that says so and their number as its size (so a
 * hook learns of every one, and of the first's address and cause). */
void kh_later_deliver(struct kh_later *l)
{
    KH_ASSERT(!l->slabs && !l->retire, l); /* kh_later_finish comes first */
    for (unsigned i = 0; i < l->n; i++) {
        const struct kh_later_item *it = &l->item[i];
        deliver(it->kind, NULL, it->addr, it->cache[0] ? it->cache : NULL, it->function, 0,
                NULL);
    }
    if (l->more) {
        const struct kh_later_item *it = &l->item[KH_LATER_MAX];
        deliver(it->kind,
                "misuse found while the cache list was locked, beyond the reports kept for "
                "later: this is the first of them, and size says how many there were",
                it->addr, it->cache[0] ? it->cache : NULL, it->function, l->more, NULL);
    }
    l->n = 0;
    l->more = 0;
}

void kh_report(enum kheap_report_kind kind, const void *addr,
               const struct kheap_cache *c, const char *function)
{
    kh_report_at(kind, addr, c, function, 0, NULL);
}

/* ------------------------------------------------------------------ */
/* Accounting. */

void kh_account_commit(kheap_t *h, size_t bytes, bool add)
{
    if (!add) {
        __atomic_fetch_sub(&h->committed_bytes, bytes, __ATOMIC_RELAXED);
        return;
    }
    size_t now = __atomic_add_fetch(&h->committed_bytes, bytes, __ATOMIC_RELAXED);
    size_t peak = __atomic_load_n(&h->peak_bytes, __ATOMIC_RELAXED);
    /* A failed exchange reloads peak; it ends when peak >= now. */
    while (peak < now && !__atomic_compare_exchange_n(&h->peak_bytes, &peak, now, true,
                                                      __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
}

void kh_account_internal(kheap_t *h, size_t bytes, bool add)
{
    if (add)
        __atomic_fetch_add(&h->internal_bytes, bytes, __ATOMIC_RELAXED);
    else
        __atomic_fetch_sub(&h->internal_bytes, bytes, __ATOMIC_RELAXED);
}

void kh_account_failure(kheap_t *h)
{
    kh_lock(&h->page_lock);
    h->failed_count++;
    kh_unlock(&h->page_lock);
}

void kh_account_recovered(kheap_t *h)
{
    kh_lock(&h->page_lock);
    h->failed_count--;
    kh_unlock(&h->page_lock);
}

/* ------------------------------------------------------------------ */
/* Size classes: 16 to 64 in steps of 8, then 2^KHEAP_CLASS_SUB_SHIFT
 * classes per doubling up to KHEAP_MAX_CLASS. By default 8 per doubling
 * to 32 KiB (72..128 by 8, 144..256 by 16, ..., 18432..32768 by 2048): a
 * request just above a class boundary wastes under 1/9 of its block, at
 * most 11.1% from 64 bytes up; the small-system profile has 2 per
 * doubling to 1 KiB (96, 128, 192, ..., 768, 1024): under 1/3
 * (docs/SIZE_CLASSES.md lists every class). The size -> class map is a
 * table by 8-byte block up to 1 KiB and one by 128-byte block above
 * (kh_class_of; a few shifts in builds whose classes the second does not
 * cover). */

#define KH_CLASS_SUB (1u << KHEAP_CLASS_SUB_SHIFT)
_Static_assert(KHEAP_NUM_CLASSES == 7 + KH_CLASS_SUB * (KHEAP_MAX_CLASS_SHIFT - 6),
               "class count");
_Static_assert(KHEAP_NUM_CLASSES <= KH_NO_CLASS, "class indices fit kheap_cache.cls");

/* kh_small_class[(n + 7) / 8] is the class of a request of n <= 1024
 * bytes: the smallest class of at least max(n, 1) bytes (checked against
 * that rule for every n by tests/test_layers.c). */
const uint8_t kh_small_class[129] = {
#if KHEAP_CLASS_SUB_SHIFT == 3
    0,  0,  0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 15,
    16, 16, 17, 17, 18, 18, 19, 19, 20, 20, 21, 21, 22, 22, 23, 23, 23, 23, 24,
    24, 24, 24, 25, 25, 25, 25, 26, 26, 26, 26, 27, 27, 27, 27, 28, 28, 28, 28,
    29, 29, 29, 29, 30, 30, 30, 30, 31, 31, 31, 31, 31, 31, 31, 31, 32, 32, 32,
    32, 32, 32, 32, 32, 33, 33, 33, 33, 33, 33, 33, 33, 34, 34, 34, 34, 34, 34,
    34, 34, 35, 35, 35, 35, 35, 35, 35, 35, 36, 36, 36, 36, 36, 36, 36, 36, 37,
    37, 37, 37, 37, 37, 37, 37, 38, 38, 38, 38, 38, 38, 38, 38,
#elif KHEAP_CLASS_SUB_SHIFT == 2
     0,  0,  0,  1,  2,  3,  4,  5,  6,  7,  7,  8,  8,  9,  9, 10, 10, 11,
    11, 11, 11, 12, 12, 12, 12, 13, 13, 13, 13, 14, 14, 14, 14, 15, 15, 15,
    15, 15, 15, 15, 15, 16, 16, 16, 16, 16, 16, 16, 16, 17, 17, 17, 17, 17,
    17, 17, 17, 18, 18, 18, 18, 18, 18, 18, 18, 19, 19, 19, 19, 19, 19, 19,
    19, 19, 19, 19, 19, 19, 19, 19, 19, 20, 20, 20, 20, 20, 20, 20, 20, 20,
    20, 20, 20, 20, 20, 20, 20, 21, 21, 21, 21, 21, 21, 21, 21, 21, 21, 21,
    21, 21, 21, 21, 21, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22,
    22, 22, 22,
#else
     0,  0,  0,  1,  2,  3,  4,  5,  6,  7,  7,  7,  7,  8,  8,  8,  8,  9,
     9,  9,  9,  9,  9,  9,  9, 10, 10, 10, 10, 10, 10, 10, 10, 11, 11, 11,
    11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 12, 12, 12, 12, 12,
    12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 13, 13, 13, 13, 13, 13, 13,
    13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13,
    13, 13, 13, 13, 13, 13, 13, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14,
    14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14,
    14, 14, 14,
#endif
};

#if KH_MID_TABLE
/* kh_mid_class (kh_front.h): for i = (n - 1) >> 7 with 1024 < n, n - 1
 * has log2 L + 7 where L = log2(i), and kh_class_of's arithmetic gives
 * 7 + ((L + 1) << KHEAP_CLASS_SUB_SHIFT) + ((i >> (L -
 * KHEAP_CLASS_SUB_SHIFT)) & (KH_CLASS_SUB - 1)); entries below 8 (n <=
 * 1024) are never read. tests/test_layers.c checks kh_class_of for every
 * n against the class sizes. */
#define KH_MC_L(i) ((i) >= 128u ? 7u : (i) >= 64u ? 6u : (i) >= 32u ? 5u : (i) >= 16u ? 4u : 3u)
#define KH_MC(i)                                                              \
    ((i) < 8u ? 0u                                                            \
              : 7u + ((KH_MC_L(i) + 1u) << KHEAP_CLASS_SUB_SHIFT) +           \
                    (((i) >> (KH_MC_L(i) - KHEAP_CLASS_SUB_SHIFT)) & (KH_CLASS_SUB - 1u)))
#define KH_MC4(i) KH_MC(i), KH_MC((i) + 1u), KH_MC((i) + 2u), KH_MC((i) + 3u)
#define KH_MC16(i) KH_MC4(i), KH_MC4((i) + 4u), KH_MC4((i) + 8u), KH_MC4((i) + 12u)
#define KH_MC64(i) KH_MC16(i), KH_MC16((i) + 16u), KH_MC16((i) + 32u), KH_MC16((i) + 48u)
const uint8_t kh_mid_class[KH_MID_COUNT] = {
#if KHEAP_MAX_CLASS_SHIFT == 15
    KH_MC64(0u), KH_MC64(64u), KH_MC64(128u), KH_MC64(192u),
#elif KHEAP_MAX_CLASS_SHIFT == 14
    KH_MC64(0u), KH_MC64(64u),
#elif KHEAP_MAX_CLASS_SHIFT == 13
    KH_MC64(0u),
#elif KHEAP_MAX_CLASS_SHIFT == 12
    KH_MC16(0u), KH_MC16(16u),
#else
    KH_MC16(0u),
#endif
};
#endif

/* kh_cc_bytes (kh_front.h): kh_class_size as a constant expression of
 * the table's index t (class t - 2), KHEAP_MAX_CLASS past the last
 * class. tests/test_layers.c checks it against kh_class_size. */
#define KH_CB_J(t) ((t) < 9u ? 0u : (t) - 9u)
/* (Masked so that the shifts of the entries past the last class, which
 * the conditional below never takes, stay within the type: clang checks
 * them. A class's own is at most KHEAP_MAX_CLASS_SHIFT - 6.) */
#define KH_CB_Q(t) ((KH_CB_J(t) >> KHEAP_CLASS_SUB_SHIFT) & 15u)
#define KH_CB(t)                                                              \
    ((t) < 2u                          ? (size_t)0                            \
     : (t) < 9u                        ? (size_t)(16u + 8u * ((t) - 2u))      \
     : (t) - 2u >= KHEAP_NUM_CLASSES ? (size_t)KHEAP_MAX_CLASS                \
                                       : (size_t)((64u << KH_CB_Q(t)) +       \
                                                  ((KH_CB_J(t) & (KH_CLASS_SUB - 1u)) + 1u) * \
                                                      ((64u >> KHEAP_CLASS_SUB_SHIFT) << KH_CB_Q(t))))
#define KH_CB4(t) KH_CB(t), KH_CB((t) + 1u), KH_CB((t) + 2u), KH_CB((t) + 3u)
#define KH_CB16(t) KH_CB4(t), KH_CB4((t) + 4u), KH_CB4((t) + 8u), KH_CB4((t) + 12u)
const size_t kh_cc_bytes[KH_CC_BYTES] = {KH_CB16(0u),  KH_CB16(16u), KH_CB16(32u),
                                         KH_CB16(48u), KH_CB16(64u), KH_CB(80u)};

size_t kh_class_size(unsigned i)
{
    if (i < 7)
        return 16 + 8 * (size_t)i;
    unsigned k = (i - 7) >> KHEAP_CLASS_SUB_SHIFT, j = (i - 7) & (KH_CLASS_SUB - 1);
    return ((size_t)64 << k) + (size_t)(j + 1) * ((size_t)(64 / KH_CLASS_SUB) << k);
}

/* ------------------------------------------------------------------ */
/* The registry of heaps.
 *
 * registry_lock, a port lock, protects registry and every heap's
 * next_heap. Lock order: it comes before every lock of every heap (heap
 * locks are taken under it by kheap_cpu_flush and kheap_lock_all; no heap
 * lock is held when it is taken). It is a port lock, not a spinlock of
 * kheap's own: kheap_cpu_flush holds it across a CPU's whole flush, whose
 * heap locks may sleep (hosted: pthread mutexes), and with a spinlock
 * every other thread that ended meanwhile spun on it for its whole time
 * slice (256 threads ending on 2 CPUs: 78 % of the process's CPU time in
 * the spin with a slot for each thread; docs/DESIGN.md, "Locks").
 *
 * On a bare-metal port the lock masks interrupts, so a CPU's flush runs
 * with them masked throughout (CPU offline), where the spinlock left them
 * open between the heap locks; in exchange an interrupt handler that makes
 * or ends a heap can no longer spin on a registry its own CPU holds.
 *
 * There is no static initialiser for a port lock, so the first caller
 * makes it (registry_made: 0 not made, 1 being made, 2 made, with
 * release and acquire); a caller that comes while it is being made spins
 * until kheap_port_lock_init returns, once in the program's life. Only a
 * signal handler that makes or ends a heap while its own thread is inside
 * that first kheap_port_lock_init, or the child of a fork made at that
 * moment, would spin forever. */
static kheap_t *registry;
static kheap_lock_t registry_lock;
static int registry_made;

static void registry_lock_make(void)
{
    int expect = 0;
    if (__atomic_load_n(&registry_made, __ATOMIC_ACQUIRE) == 2) {
        kh_vg_after(&registry_made);
        return;
    }
    if (__atomic_compare_exchange_n(&registry_made, &expect, 1, false, __ATOMIC_ACQUIRE,
                                    __ATOMIC_ACQUIRE)) {
        kheap_port_lock_init(&registry_lock);
        kh_vg_before(&registry_made);
        __atomic_store_n(&registry_made, 2, __ATOMIC_RELEASE);
        return;
    }
    while (__atomic_load_n(&registry_made, __ATOMIC_ACQUIRE) != 2)
        ;
    kh_vg_after(&registry_made);
}

kheap_t *kh_registry_acquire(void)
{
    registry_lock_make();
    kheap_port_lock(&registry_lock);
    return registry;
}

void kh_registry_release(void)
{
    kheap_port_unlock(&registry_lock);
}

void kh_registry_add(kheap_t *h)
{
    h->next_heap = kh_registry_acquire();
    registry = h;
    kh_registry_release();
}

void kheap_fini(kheap_t *h)
{
    if (!h)
        return;
    kh_registry_acquire();
    for (kheap_t **pp = &registry; *pp; pp = &(*pp)->next_heap) {
        if (*pp == h) {
            *pp = h->next_heap;
            break;
        }
    }
    kh_registry_release();
    /* A kheap_cpu_flush that walked h before it left the registry may
     * still be running destructors of h's user caches, with no lock held
     * (cpu.c), or giving back a cache destroyed meanwhile: h's memory may
     * be used for something else once this returns, so wait for them. No
     * new one starts (h is unlisted). */
    for (bool busy = true; busy;) {
        busy = __atomic_load_n(&h->caches_dying, __ATOMIC_ACQUIRE) != 0;
        kheap_port_lock(&h->caches_lock);
        for (const struct kheap_cache *c = h->caches; c && !busy; c = KH_U(c)->next)
            busy = __atomic_load_n(&kh_ucx_of(c)->slabs_later, __ATOMIC_ACQUIRE) != 0;
        kheap_port_unlock(&h->caches_lock);
    }
#if KH_GUARDS
    /* Pages kheap shut (the guard pool; in the debug build also the guard
     * pages of large blocks and the pages of quarantined ones) become
     * ordinary memory again, for whatever the heap's memory is used for
     * next: every region's pages are opened. */
    for (unsigned i = 0; i < h->nregions; i++)
        (void)kheap_port_protect((void *)h->regions[i].start,
                                 h->regions[i].npages * KH_PAGE, 1);
#endif
    h->magic = 0;
}

/* ------------------------------------------------------------------ */
/* Every lock of a heap, in the lock order: caches_lock, each cache's in
 * the walk's order (the only place two cache locks are held at once),
 * page_lock, q_lock, g_lock. */
void kh_heap_lock_all(kheap_t *h, bool lock)
{
    void (*op)(kheap_lock_t *) = lock ? kheap_port_lock : kheap_port_unlock;
    if (lock)
        op(&h->caches_lock);
    kh_each_cache(h, c)
        op(&c->lock);
    op(&h->page_lock);
#if KHEAP_REDZONE
    op(&h->q_lock);
#endif
#if KH_GUARDS
    op(&h->g_lock);
#endif
    if (!lock)
        op(&h->caches_lock);
}

/* Every lock of every heap, for fork: the registry first (heap locks are
 * taken under it elsewhere too), then each heap's in its lock order.
 * Heaps are independent, so their order does not matter: no thread holds
 * locks of two heaps at once, except kheap_cpu_flush, which holds the
 * registry, so it cannot run while we take them. */
void kheap_lock_all(void)
{
    for (kheap_t *h = kh_registry_acquire(); h; h = h->next_heap)
        kh_heap_lock_all(h, true);
}

void kheap_unlock_all(void)
{
    for (kheap_t *h = registry; h; h = h->next_heap)
        kh_heap_lock_all(h, false);
    kh_registry_release();
}
