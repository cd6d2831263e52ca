/*
 * small.c - small heaps: the figures of docs/PORTING.md section 8 and the
 * checks behind them. Freestanding, like bodies.c: the Cortex-M kernel
 * runs it on its own arena (small-system profile, 32-bit), tests/test_small.c
 * hosted (whatever profile the build has).
 *
 *   small_regions    kheap_init refuses a region one byte below
 *                    KHEAP_MIN_REGION_SIZE and takes one of that size, in
 *                    which a block of every class is allocated in turn
 *                    (and one large block if it has the pages) and which
 *                    kheap_check passes; the fixed metadata of regions of
 *                    the minimum, 4, 16 and 64 KiB (those at or above the
 *                    minimum)
 *   small_fill       16-byte, 64-byte and mixed-size blocks until NULL in
 *                    16 and 64 KiB regions; everything comes back
 *   small_trace      a kernel-like trace (below) replays in a 64 KiB
 *                    region; the smallest region, in steps of 256 bytes,
 *                    in which it replays
 *
 * The trace: 3000 steps drawn from a fixed seed, so every replay is the
 * same sequence. A step allocates (with probability 0.55, or when nothing
 * is live; never beyond 24 live blocks) or frees a random live block. Sizes
 * model a small kernel: 45 % 16..40 B (list nodes, timers, names), 30 %
 * 48..128 B (file and socket records), 15 % 192..256 B (task records),
 * 7 % 512 B (I/O buffers), 3 % 1500 B (a network frame: a large block
 * in the small profile). Every block is written whole and checked when
 * freed.
 */
#include "bodies.h"
#include "small.h"

#define TRACE_STEPS 3000
#define TRACE_LIVE 24
#define TRACE_SEED 0x6b686561736d6c6cull

static void *s_arena;
static size_t s_arena_size;
static int s_failed;

#define SCHECK(cond, ...)                                                     \
    do {                                                                      \
        if (!(cond)) {                                                        \
            char line_[200];                                                  \
            size_t n_ = kt_format(line_, sizeof line_, "not ok - %s: ", test); \
            if (n_ < sizeof line_)                                            \
                kt_format(line_ + n_, sizeof line_ - n_, __VA_ARGS__);        \
            kt_printf("%s", line_);                                           \
            kt_failed++;                                                      \
            s_failed++;                                                       \
            return;                                                           \
        }                                                                     \
    } while (0)

static uint64_t next_rand(uint64_t *s)
{
    /* xorshift64* */
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545f4914f6cdd1dull;
}

static unsigned below(uint64_t *s, unsigned n)
{
    return (unsigned)((next_rand(s) >> 33) % n);
}

static struct kheap_stats heap_stats(kheap_t *h)
{
    struct kheap_stats st;
    kheap_get_stats(h, &st);
    return st;
}

/* A heap over the first size bytes of the arena, or NULL (err set). */
static kheap_t *make(size_t size, int *err)
{
    kheap_t *h = NULL;
    *err = kheap_init(&h, s_arena, size);
    return *err == KHEAP_OK ? h : NULL;
}

static void fill(unsigned char *p, size_t n, unsigned tag)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(tag + i);
}

static bool intact(const unsigned char *p, size_t n, unsigned tag)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(tag + i))
            return false;
    return true;
}

/* ------------------------------------------------------------------ */

/* The size of kmalloc class i (include/kheap_config.h: 16 to 64 B by 8,
 * then 2^KHEAP_CLASS_SUB_SHIFT classes per doubling). */
static size_t class_size(unsigned i)
{
    if (i < 7)
        return 16 + 8 * (size_t)i;
    unsigned j = i - 7, per = 1u << KHEAP_CLASS_SUB_SHIFT;
    size_t base = (size_t)64 << (j / per);
    return base + (base >> KHEAP_CLASS_SUB_SHIFT) * (j % per + 1);
}

/* In a fresh heap: a block of every class in turn, written whole and
 * freed, then, if the heap has the pages, a block of the smallest large
 * size. With strict every allocation must succeed (a page-aligned minimum
 * region holds the largest slab: static assert in src/core/region.c);
 * without, a class whose slab does not fit is skipped. Returns NULL or
 * what went wrong; *classes: the classes served, *large: the large
 * block's size or 0. */
static const char *every_class(kheap_t *h, bool strict, size_t *classes, size_t *large)
{
    static char why[120];
    *classes = *large = 0;
    size_t pages = heap_stats(h).heap_free / KHEAP_PAGE_SIZE;
    for (unsigned i = 0; i < KHEAP_NUM_CLASSES; i++) {
        size_t n = class_size(i);
        unsigned char *p = kheap_alloc(h, n);
        if (!p && !strict)
            continue;
        if (!p) {
            kt_format(why, sizeof why, "kheap_alloc(%zu) failed after %zu classes", n, *classes);
            return why;
        }
        size_t u = kheap_usable_size(h, p);
        fill(p, n, (unsigned)n);
        bool ok = intact(p, n, (unsigned)n);
        kheap_free(h, p);
        if (!ok || u != n) {
            kt_format(why, sizeof why, "a block of class %u (%zu B, usable %zu) was not intact",
                      i, n, u);
            return why;
        }
        (*classes)++;
    }
    size_t big = KHEAP_MAX_CLASS + 1;
    if (pages >= (big + KHEAP_PAGE_SIZE - 1) / KHEAP_PAGE_SIZE) {
        unsigned char *p = kheap_alloc(h, big);
        if (!p) {
            kt_format(why, sizeof why, "kheap_alloc(%zu) failed in a heap of %zu pages", big,
                      pages);
            return why;
        }
        fill(p, big, 7);
        bool ok = intact(p, big, 7);
        kheap_free(h, p);
        if (!ok)
            return "the large block was not intact";
        *large = big;
    }
    const void *addr;
    return kheap_check(h, &addr);
}

static void t_regions(void)
{
    const char *test = "small_regions";
    int err;
    SCHECK(KHEAP_MIN_REGION_SIZE <= s_arena_size, "arena of %zu bytes below the minimum %zu",
           s_arena_size, (size_t)KHEAP_MIN_REGION_SIZE);
    kheap_t *h = make(KHEAP_MIN_REGION_SIZE - 1, &err);
    SCHECK(!h && err == KHEAP_ETOOSMALL, "kheap_init of %zu bytes gave %d, want ETOOSMALL",
           (size_t)KHEAP_MIN_REGION_SIZE - 1, err);
    h = make(KHEAP_MIN_REGION_SIZE, &err);
    SCHECK(h, "kheap_init of the minimum, %zu bytes, failed: %d", (size_t)KHEAP_MIN_REGION_SIZE,
           err);
    size_t classes, large;
    const char *bad = every_class(h, true, &classes, &large);
    SCHECK(!bad, "a %zu-byte heap: %s", (size_t)KHEAP_MIN_REGION_SIZE, bad);
    SCHECK(classes == KHEAP_NUM_CLASSES, "a %zu-byte heap served %zu classes, not %d",
           (size_t)KHEAP_MIN_REGION_SIZE, classes, KHEAP_NUM_CLASSES);
    if (large)
        kt_printf("# small: a %zu-byte region (the minimum) serves a block of each of the %zu"
                  " classes in turn and a large block of %zu bytes; kheap_check passes",
                  (size_t)KHEAP_MIN_REGION_SIZE, classes, large);
    else
        kt_printf("# small: a %zu-byte region (the minimum) serves a block of each of the %zu"
                  " classes in turn (no room for a large block); kheap_check passes",
                  (size_t)KHEAP_MIN_REGION_SIZE, classes);
    kheap_fini(h);
    /* Wherever it starts, the minimum region holds 2 pages (8 in the
     * default profile): here 64 bytes past a page boundary. What it
     * serves then: the classes whose slabs fit. */
    size_t want = KHEAP_PROFILE_SMALL ? 2 : 8;
    SCHECK(kheap_init(&h, (char *)s_arena + 64, KHEAP_MIN_REGION_SIZE) == KHEAP_OK,
           "kheap_init of %zu bytes 64 bytes past a page failed", (size_t)KHEAP_MIN_REGION_SIZE);
    size_t pages = heap_stats(h).heap_free / KHEAP_PAGE_SIZE;
    bad = every_class(h, false, &classes, &large);
    kheap_fini(h);
    SCHECK(pages >= want, "a %zu-byte region 64 bytes past a page has %zu pages, want %zu",
           (size_t)KHEAP_MIN_REGION_SIZE, pages, want);
    SCHECK(!bad, "a %zu-byte heap 64 bytes past a page: %s", (size_t)KHEAP_MIN_REGION_SIZE, bad);
    kt_printf("# small: a %zu-byte region 64 bytes past a page boundary has %zu pages: it serves"
              " %zu of the %d classes in turn%s; kheap_check passes",
              (size_t)KHEAP_MIN_REGION_SIZE, pages, classes, KHEAP_NUM_CLASSES,
              large ? " and a large block" : "");
    static const size_t sizes[] = {KHEAP_MIN_REGION_SIZE, 4096, 16384, 65536};
    for (unsigned k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t size = sizes[k];
        if (k && size == KHEAP_MIN_REGION_SIZE)
            continue; /* shown already */
        if (size > s_arena_size || (k && size < KHEAP_MIN_REGION_SIZE)) {
            kt_printf("# small: a %zu-byte region: %s", size,
                      size < KHEAP_MIN_REGION_SIZE ? "below KHEAP_MIN_REGION_SIZE" : "no room");
            continue;
        }
        h = make(size, &err);
        SCHECK(h, "kheap_init of %zu bytes failed: %d", size, err);
        struct kheap_stats st = heap_stats(h);
        SCHECK(st.heap_total == size && st.metadata_bytes + st.heap_free == size,
               "%zu-byte region: total %zu, metadata %zu + free %zu", size, st.heap_total,
               st.metadata_bytes, st.heap_free);
        void *p = kheap_alloc(h, 16);
        SCHECK(p, "kheap_alloc(16) failed in a %zu-byte region", size);
        kheap_free(h, p);
        kt_printf("# small: a %zu-byte region: %zu bytes of fixed metadata (%zu.%zu %%), %zu free"
                  " (%zu pages of %zu)",
                  size, st.metadata_bytes, st.metadata_bytes * 100 / size,
                  st.metadata_bytes * 1000 / size % 10, st.heap_free,
                  st.heap_free / KHEAP_PAGE_SIZE, (size_t)KHEAP_PAGE_SIZE);
        kheap_fini(h);
    }
    kt_printf("ok - %s", test);
    kt_passed++;
}

/* Blocks of size (0: the mixed cycle) until NULL; returns the count, or
 * 0 with *bad set. */
static size_t fill_up(kheap_t *h, size_t size, const char **bad)
{
    static const size_t mixed[] = {16, 24, 40, 64, 96, 128, 200, 256, 512, 1500};
    void **chain = NULL;
    size_t count = 0;
    for (;;) {
        size_t n = size ? size : mixed[count % (sizeof mixed / sizeof mixed[0])];
        void **p = kheap_alloc(h, n);
        if (!p)
            break;
        *p = chain;
        chain = p;
        count++;
    }
    const void *addr;
    *bad = kheap_check(h, &addr);
    while (chain) {
        void **next = *chain;
        kheap_free(h, chain);
        chain = next;
    }
    return count;
}

static void t_fill(void)
{
    const char *test = "small_fill";
    static const size_t regions[] = {16384, 65536};
    size_t last = 0;
    for (unsigned r = 0; r < 2; r++) {
        size_t size = regions[r] < KHEAP_MIN_REGION_SIZE ? KHEAP_MIN_REGION_SIZE : regions[r];
        if (size > s_arena_size || size == last)
            continue;
        last = size;
        size_t count[3];
        for (unsigned k = 0; k < 3; k++) {
            int err;
            kheap_t *h = make(size, &err);
            SCHECK(h, "kheap_init of %zu bytes failed: %d", size, err);
            struct kheap_stats st0 = heap_stats(h);
            const char *bad = NULL;
            count[k] = fill_up(h, k == 0 ? 16 : k == 1 ? 64 : 0, &bad);
            kheap_reclaim(h);
            struct kheap_stats st1 = heap_stats(h);
            SCHECK(!bad, "kheap_check of a full %zu-byte heap: %s", size, bad);
            SCHECK(count[k] > 0, "no block fits a fresh %zu-byte heap", size);
            /* Per-CPU state made on first use (default profile) stays:
             * it is metadata now. */
            size_t grown = st1.metadata_bytes - st0.metadata_bytes;
            SCHECK(st1.heap_free + grown == st0.heap_free && st1.used_bytes == 0,
                   "%zu-byte heap after freeing all: free %zu + %zu more metadata (was %zu"
                   " free), used %zu",
                   size, st1.heap_free, grown, st0.heap_free, st1.used_bytes);
            kheap_fini(h);
        }
        kt_printf("# small: a %zu-byte region holds %zu blocks of 16 B, %zu of 64 B, %zu of"
                  " mixed sizes (16 to 1500 B) before NULL",
                  size, count[0], count[1], count[2]);
    }
    kt_printf("ok - %s", test);
    kt_passed++;
}

/* Replay the trace in a fresh size-byte heap. Returns true if every
 * allocation succeeded; *peak: the most bytes live at once. */
static bool replay(size_t size, size_t *peak, const char **bad)
{
    int err;
    kheap_t *h = make(size, &err);
    *bad = NULL;
    if (!h)
        return false;
    uint64_t rng = TRACE_SEED;
    unsigned char *live[TRACE_LIVE];
    size_t len[TRACE_LIVE];
    unsigned tag[TRACE_LIVE];
    unsigned nlive = 0;
    size_t bytes = 0;
    bool ok = true;
    *peak = 0;
    for (unsigned step = 0; step < TRACE_STEPS && ok; step++) {
        if (nlive == 0 || (nlive < TRACE_LIVE && below(&rng, 100) < 55)) {
            unsigned r = below(&rng, 100);
            size_t n = r < 45   ? 16 + 8 * below(&rng, 4)
                       : r < 75 ? 48 + 16 * below(&rng, 6)
                       : r < 90 ? 192 + 32 * below(&rng, 3)
                       : r < 97 ? 512
                                : 1500;
            unsigned char *p = kheap_alloc(h, n);
            if (!p) {
                ok = false;
                break;
            }
            fill(p, n, step);
            live[nlive] = p;
            len[nlive] = n;
            tag[nlive] = step;
            nlive++;
            bytes += n;
            if (bytes > *peak)
                *peak = bytes;
        } else {
            unsigned i = below(&rng, nlive);
            if (!intact(live[i], len[i], tag[i]))
                *bad = "a live block was overwritten";
            kheap_free(h, live[i]);
            bytes -= len[i];
            nlive--;
            live[i] = live[nlive];
            len[i] = len[nlive];
            tag[i] = tag[nlive];
        }
    }
    while (nlive) {
        nlive--;
        if (!intact(live[nlive], len[nlive], tag[nlive]))
            *bad = "a live block was overwritten";
        kheap_free(h, live[nlive]);
    }
    const void *addr;
    const char *chk = kheap_check(h, &addr);
    if (chk && !*bad)
        *bad = chk;
    kheap_fini(h);
    return ok;
}

static void t_trace(void)
{
    const char *test = "small_trace";
    size_t top = KHEAP_MIN_REGION_SIZE > 65536 ? KHEAP_MIN_REGION_SIZE : 65536, peak = 0;
    top = top < s_arena_size ? top : s_arena_size;
    const char *bad = NULL;
    bool ok = replay(top, &peak, &bad);
    SCHECK(!bad, "replay in %zu bytes: %s", top, bad);
    SCHECK(ok, "the trace does not replay in %zu bytes (%zu bytes live at most)", top, peak);
    /* Smallest region, in 256-byte steps: the heap's fit is not monotonic
     * in the region size in principle, so scan up from the minimum. */
    size_t smallest = 0;
    for (size_t size = KHEAP_MIN_REGION_SIZE; size <= top; size += 256) {
        size_t pk;
        if (replay(size, &pk, &bad)) {
            smallest = size;
            break;
        }
        SCHECK(!bad, "replay in %zu bytes: %s", size, bad);
    }
    SCHECK(smallest, "no region up to %zu bytes replays the trace", top);
    kt_printf("# small: the trace (%d steps, at most %d blocks and %zu bytes live) replays in"
              " a region of %zu bytes and up",
              TRACE_STEPS, TRACE_LIVE, peak, smallest);
    kt_printf("ok - %s", test);
    kt_passed++;
}

int kt_run_small(void *arena, size_t arena_size)
{
    s_arena = arena;
    s_arena_size = arena_size;
    s_failed = 0;
    kt_printf("# small heaps: %zu-byte pages, %d size classes up to %zu B, minimum region %zu"
              " bytes, %s",
              (size_t)KHEAP_PAGE_SIZE, KHEAP_NUM_CLASSES, (size_t)KHEAP_MAX_CLASS,
              (size_t)KHEAP_MIN_REGION_SIZE,
              KHEAP_PROFILE_SMALL ? "small-system profile" : "default profile");
    t_regions();
    t_fill();
    t_trace();
    return s_failed;
}
