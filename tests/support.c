/*
 * support.c - the shared test support of support.h. Freestanding: built
 * into every hosted test program and into the bare-metal demo kernels.
 */
#include "support.h"

/* ---- size classes ---- */

size_t kt_class[KHEAP_NUM_CLASSES];

void kt_make_classes(void)
{
    size_t n = 0;
    for (size_t s = 16; s <= 64; s += 8)
        kt_class[n++] = s;
    /* 2^KHEAP_CLASS_SUB_SHIFT classes per doubling (kheap_config.h). */
    const size_t sub = (size_t)1 << KHEAP_CLASS_SUB_SHIFT;
    for (size_t base = 64; base < KHEAP_MAX_CLASS; base *= 2)
        for (size_t i = 1; i <= sub; i++)
            kt_class[n++] = base + i * (base / sub);
}

size_t kt_class_index(size_t n)
{
    size_t i = 0;
    while (i < KHEAP_NUM_CLASSES - 1 && kt_class[i] < n)
        i++;
    return i;
}

size_t kt_class_of(size_t n)
{
    return kt_class[kt_class_index(n)];
}

size_t kt_usable(size_t n)
{
    if (n <= KHEAP_MAX_CLASS)
        return kt_class_of(n);
    return (n + KHEAP_PAGE_SIZE - 1) / KHEAP_PAGE_SIZE * KHEAP_PAGE_SIZE;
}

bool kt_is_class(size_t u)
{
    return u <= KHEAP_MAX_CLASS && kt_class_of(u) == u;
}

size_t kt_natural_align(size_t u)
{
    if (u > KHEAP_MAX_CLASS)
        return KHEAP_PAGE_SIZE;
    size_t a = u & (~u + 1);
    return a < 8 ? 8 : a;
}

bool kt_run_available(kheap_t *h, size_t pages, uint64_t *allocs, uint64_t *frees,
                      uint64_t *failed)
{
    size_t n = pages * KHEAP_PAGE_SIZE;
    if (n <= KHEAP_MAX_CLASS)
        n = KHEAP_MAX_CLASS + 1;
    void *q = kheap_alloc(h, n);
    if (!q) {
        (*failed)++;
        return false;
    }
    kheap_free(h, q);
    (*allocs)++;
    (*frees)++;
    return true;
}

size_t kt_slab_needs(kheap_t *h, size_t need[KHEAP_NUM_CLASSES])
{
    static struct kheap_cache_info rows[KHEAP_NUM_CLASSES];
    kheap_slabinfo(h, rows, KHEAP_NUM_CLASSES);
    size_t most = 0;
    for (unsigned i = 0; i < KHEAP_NUM_CLASSES; i++) {
        size_t a = kt_natural_align(kt_class[i]);
        need[i] = rows[i].pagesperslab + (a > KHEAP_PAGE_SIZE ? a / KHEAP_PAGE_SIZE - 1 : 0);
        if (need[i] > most)
            most = need[i];
    }
    return most;
}

/* ---- report capture ---- */

static unsigned long r_count;
static struct kheap_report r_last;
static char r_last_cache[KHEAP_NAME_MAX]; /* r_last.cache, which lives only during the hook */
static char r_lock;
static kt_report_seen_fn r_seen;

static void lock_last(void)
{
    while (__atomic_test_and_set(&r_lock, __ATOMIC_ACQUIRE))
        ;
}

static void unlock_last(void)
{
    __atomic_clear(&r_lock, __ATOMIC_RELEASE);
}

static void capture(const struct kheap_report *r)
{
    unsigned long nth = __atomic_add_fetch(&r_count, 1, __ATOMIC_ACQ_REL);
    lock_last();
    r_last = *r;
    if (r->cache) {
        size_t i = 0;
        for (; i < sizeof r_last_cache - 1 && r->cache[i]; i++)
            r_last_cache[i] = r->cache[i];
        r_last_cache[i] = '\0';
        r_last.cache = r_last_cache;
    }
    unlock_last();
    kt_report_seen_fn seen = __atomic_load_n(&r_seen, __ATOMIC_ACQUIRE);
    if (seen)
        seen(r, nth);
}

void kt_capture_reports(kt_report_seen_fn seen)
{
    __atomic_store_n(&r_seen, seen, __ATOMIC_RELEASE);
    kheap_set_report_hook(capture);
}

void kt_release_reports(void)
{
    kheap_set_report_hook(NULL);
    __atomic_store_n(&r_seen, NULL, __ATOMIC_RELEASE);
}

void kt_reports_reset(void)
{
    lock_last();
    r_last = (struct kheap_report){0};
    unlock_last();
    __atomic_store_n(&r_count, 0, __ATOMIC_RELEASE);
}

unsigned long kt_reports(void)
{
    return __atomic_load_n(&r_count, __ATOMIC_ACQUIRE);
}

struct kheap_report kt_last_report(void)
{
    lock_last();
    struct kheap_report r = r_last;
    unlock_last();
    return r;
}

const char *kt_report_kind_name(int kind)
{
    static const char *const names[] = {
        "?", "FOREIGN", "INTERIOR", "FREE_RUN", "DOUBLE_FREE", "WRONG_CACHE",
        "CORRUPTION", "BUSY", "OVERFLOW", "UNDERFLOW", "USE_AFTER_FREE", "KIND_MISMATCH",
        "SIZE_MISMATCH",
    };
    return kind >= 0 && kind <= KHEAP_REPORT_SIZE_MISMATCH ? names[kind] : "?";
}

/* ---- block contents ---- */

/* The start of the tail edge: never below from. */
static size_t tail_start(size_t n, size_t from, size_t edge)
{
    return n > from + edge ? n - edge : from;
}

void kt_pattern_fill(unsigned char *p, size_t n, size_t from, size_t edge, uint32_t seed)
{
    for (size_t i = from; i < n && i < from + edge; i++)
        p[i] = kt_pattern(seed, i);
    for (size_t i = tail_start(n, from, edge); i < n; i++)
        p[i] = kt_pattern(seed, i);
}

size_t kt_pattern_find_bad(const unsigned char *p, size_t n, size_t from, size_t edge,
                           uint32_t seed, size_t limit)
{
    for (size_t i = from; i < n && i < from + edge && i < limit; i++)
        if (p[i] != kt_pattern(seed, i))
            return i;
    for (size_t i = tail_start(n, from, edge); i < n && i < limit; i++)
        if (p[i] != kt_pattern(seed, i))
            return i;
    return SIZE_MAX;
}

/* ---- the counting constructor/destructor pair ---- */

static unsigned long c_ctor, c_dtor, c_dtor_bad;

void kt_ctor(void *obj)
{
    uint64_t m = KT_CTOR_MAGIC;
    __builtin_memcpy(obj, &m, sizeof m);
    __atomic_fetch_add(&c_ctor, 1, __ATOMIC_RELAXED);
}

void kt_dtor(void *obj)
{
    uint64_t m;
    __builtin_memcpy(&m, obj, sizeof m);
    if (m != KT_CTOR_MAGIC)
        __atomic_fetch_add(&c_dtor_bad, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&c_dtor, 1, __ATOMIC_RELAXED);
}

void kt_ctor_reset(void)
{
    __atomic_store_n(&c_ctor, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&c_dtor, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&c_dtor_bad, 0, __ATOMIC_RELAXED);
}

struct kt_ctor_counts kt_ctor_counts(void)
{
    return (struct kt_ctor_counts){
        __atomic_load_n(&c_ctor, __ATOMIC_ACQUIRE),
        __atomic_load_n(&c_dtor, __ATOMIC_ACQUIRE),
        __atomic_load_n(&c_dtor_bad, __ATOMIC_ACQUIRE),
    };
}

#if __STDC_HOSTED__
/* ---- hosted: a heap on a region of its own (declared in harness.h) ---- */
#include "harness.h"

void kt_heap_open(struct kt_heap *t, size_t size)
{
    t->size = size;
    t->h = NULL;
    t->mem = kt_map(size);
    CHECK(t->mem != NULL, "mmap(%zu) failed", size);
    int err = kheap_init(&t->h, t->mem, size);
    CHECK(err == KHEAP_OK, "kheap_init(%zu) = %d (%s)", size, err, kheap_strerror(err));
}

void kt_heap_close(struct kt_heap *t)
{
    kheap_fini(t->h);
    kt_unmap(t->mem, t->size);
    t->h = NULL;
    t->mem = NULL;
}

struct kheap_stats kt_stats(kheap_t *h)
{
    struct kheap_stats s;
    kheap_get_stats(h, &s);
    return s;
}

void kt_check_quiet(kheap_t *h, const char *when)
{
    const void *addr = NULL;
    const char *msg = kheap_check_quiescent(h, &addr);
    CHECK(msg == NULL, "%s: kheap_check: %s at %p", when, msg, addr);
}
#endif
