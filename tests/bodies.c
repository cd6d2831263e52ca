/*
 * bodies.c - the test bodies shared by the hosted suite and the bare-metal
 * kernels (see bodies.h). All of them use the default heap (kmalloc and
 * friends), the heap a kernel built with kheap actually runs on, and
 * leave it as they found it:
 *
 *   default_heap       the static array is the heap: its size, its end,
 *                      a clean kheap_check.
 *   model_random       a random mix of kmalloc, kmalloc_aligned, kcalloc,
 *                      krealloc, kfree and ksize against a shadow model
 *                      of every live block: no overlap, alignment, usable
 *                      sizes from the documented class rule, contents,
 *                      exact statistics, kheap_check as it goes.
 *   exhaustion         a share of the heap at each of five sizes, then
 *                      each size until NULL; free all: every free page
 *                      is back and the heap works.
 *   misuse_reports     foreign, interior, free-run, double and wrong-cache
 *                      frees and a busy destroy each reported once through
 *                      the port with the right kind and address; the
 *                      heap unchanged after each.
 *   object_caches      constructors run once per object, constructed
 *                      state kept across free and alloc, destructors run
 *                      when slabs go back, slabinfo rows agree.
 *   smp_stress         every CPU allocates and frees at once, and passes
 *                      objects to the next CPU, which checks and frees
 *                      them; kheap_check_quiescent and the statistics after.
 *
 * On a default heap smaller than KT_FULL_HEAP (a microcontroller's) the
 * tests that hold much memory at once, or need several CPUs, run scaled
 * down: each such test prints "# scaled <name>: <what and why>" before
 * its result and counts in kt_scaled. At KT_FULL_HEAP and above every
 * test runs at its full size.
 */
#include "bodies.h"

#include <stdbool.h>

#include "support.h"

#if __STDC_HOSTED__
#include <setjmp.h>
static jmp_buf kt_jmp;
#define KT_SETJMP() setjmp(kt_jmp)
#define KT_LONGJMP() longjmp(kt_jmp, 1)
#else
/* GCC's own setjmp: no libc needed. */
static void *kt_jmp[5];
#define KT_SETJMP() __builtin_setjmp(kt_jmp)
#define KT_LONGJMP() __builtin_longjmp(kt_jmp, 1)
#endif

#define KT_MAX_CPUS 16

int kt_passed, kt_failed, kt_scaled;
static const struct kt_env *env;
static char fail_msg[320];

/* ------------------------------------------------------------------ */
/* Formatting, freestanding. */

struct out {
    char *buf;
    size_t len, n;
};

static void out_c(struct out *o, char c)
{
    if (o->n + 1 < o->len)
        o->buf[o->n] = c;
    o->n++;
}

static void out_u(struct out *o, unsigned long long v, unsigned base, int width)
{
    char tmp[24];
    int k = 0;
    do {
        tmp[k++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    while (width-- > k)
        out_c(o, base == 16 ? '0' : ' ');
    while (k)
        out_c(o, tmp[--k]);
}

size_t kt_vformat(char *buf, size_t len, const char *fmt, va_list ap)
{
    struct out o = {buf, len, 0};
    for (const char *f = fmt; *f; f++) {
        if (*f != '%') {
            out_c(&o, *f);
            continue;
        }
        f++;
        int width = 0, longs = 0, sized = 0;
        while (*f >= '0' && *f <= '9')
            width = width * 10 + (*f++ - '0');
        while (*f == 'l' || *f == 'z') {
            /* z: size_t, which is not long long on 32-bit targets */
            longs += *f == 'l';
            sized |= *f == 'z';
            f++;
        }
        switch (*f) {
        case 's': {
            const char *s = va_arg(ap, const char *);
            int k = 0;
            for (s = s ? s : "(null)"; *s; s++, k++)
                out_c(&o, *s);
            while (width-- > k)
                out_c(&o, ' ');
            break;
        }
        case 'c':
            out_c(&o, (char)va_arg(ap, int));
            break;
        case 'd': {
            long long v = sized ? va_arg(ap, ptrdiff_t)
                          : longs >= 2 ? va_arg(ap, long long)
                          : longs ? va_arg(ap, long) : va_arg(ap, int);
            if (v < 0) {
                out_c(&o, '-');
                out_u(&o, 0ull - (unsigned long long)v, 10, width);
            } else {
                out_u(&o, (unsigned long long)v, 10, width);
            }
            break;
        }
        case 'u':
        case 'x': {
            unsigned long long v = sized ? va_arg(ap, size_t)
                                   : longs >= 2 ? va_arg(ap, unsigned long long)
                                   : longs ? va_arg(ap, unsigned long)
                                           : va_arg(ap, unsigned);
            out_u(&o, v, *f == 'x' ? 16 : 10, width);
            break;
        }
        case 'p':
            out_c(&o, '0');
            out_c(&o, 'x');
            out_u(&o, (uintptr_t)va_arg(ap, void *), 16, 0);
            break;
        case '%':
            out_c(&o, '%');
            break;
        default:
            out_c(&o, '?');
            break;
        }
        if (!*f)
            break;
    }
    if (len)
        buf[o.n < len ? o.n : len - 1] = '\0';
    return o.n;
}

size_t kt_format(char *buf, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t n = kt_vformat(buf, len, fmt, ap);
    va_end(ap);
    return n;
}

void kt_printf(const char *fmt, ...)
{
    char line[320];
    va_list ap;
    va_start(ap, fmt);
    kt_vformat(line, sizeof line, fmt, ap);
    va_end(ap);
    env->puts(line);
}

/* ------------------------------------------------------------------ */
/* Harness: CHECK ends the test on the main CPU with a message. */

__attribute__((noreturn, format(printf, 3, 4))) static void
fail_at(int line, const char *cond, const char *fmt, ...)
{
    size_t n = kt_format(fail_msg, sizeof fail_msg, "bodies.c:%d: %s: ", line, cond);
    if (n < sizeof fail_msg) {
        va_list ap;
        va_start(ap, fmt);
        kt_vformat(fail_msg + n, sizeof fail_msg - n, fmt, ap);
        va_end(ap);
    }
    KT_LONGJMP();
    __builtin_unreachable();
}

#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        if (!(cond))                                                          \
            fail_at(__LINE__, #cond, __VA_ARGS__);                            \
    } while (0)

/* What a test that fails leaves live, given back by its cleanup (set by
 * the test, run once after a failure if the heap is intact), so that its
 * blocks do not fail the tests after it for want of memory. */
static void (*fail_cleanup)(void);

static void run_test(const char *name, void (*fn)(void))
{
    fail_cleanup = NULL;
    if (KT_SETJMP() == 0) {
        fn();
        kt_printf("ok - %s", name);
        kt_passed++;
    } else {
        kt_printf("not ok - %s: %s", name, fail_msg);
        kt_failed++;
        /* Not into a damaged heap, whose frees could fault and lose the
         * report of every test after this one. */
        const void *addr;
        if (fail_cleanup && kheap_check(kheap_default(), &addr) == NULL)
            fail_cleanup();
    }
    fail_cleanup = NULL;
    kt_release_reports();
}

static void check_heap(const char *when)
{
    const void *addr = NULL;
    const char *why = kheap_check(kheap_default(), &addr);
    CHECK(why == NULL, "kheap_check %s: %s at %p", when, why, addr);
}

static struct kheap_stats stats(void)
{
    struct kheap_stats st;
    kheap_get_stats(kheap_default(), &st);
    return st;
}

/* ------------------------------------------------------------------ */
/* Scaling to small heaps. */

#define KT_FULL_HEAP ((size_t)4 << 20)

/* The default heap's size, set by kt_run_bodies. */
static size_t kt_heap;

/* Below this, a heap's fixed metadata is a large part of it (the
 * small-system profile's 16 KiB heap): a few tests scale further. */
#define TINY_HEAP ((size_t)64 << 10)

static bool small_heap(void)
{
    return kt_heap < KT_FULL_HEAP;
}

/* Say that the running test is scaled, and why (once per test). */
static const char *scaled_test;

__attribute__((format(printf, 2, 3))) static void note_scaled(const char *test,
                                                              const char *fmt, ...)
{
    char line[256];
    size_t n = kt_format(line, sizeof line, "# scaled %s: ", test);
    if (n < sizeof line) {
        va_list ap;
        va_start(ap, fmt);
        kt_vformat(line + n, sizeof line - n, fmt, ap);
        va_end(ap);
    }
    env->puts(line);
    if (scaled_test != test) {
        scaled_test = test;
        kt_scaled++;
    }
}

/* ------------------------------------------------------------------ */
/* Random numbers and contents. */

/* A size from lo to hi, uniform in its logarithm (many small, some big). */
static size_t rnd_size(uint64_t *s, size_t lo, size_t hi)
{
    unsigned bits = 0;
    while (((size_t)1 << (bits + 1)) <= hi)
        bits++;
    size_t top = (size_t)1 << kt_rand_below(s, bits + 1);
    size_t v = top + (size_t)kt_rand_below(s, top);
    return v < lo ? lo : v > hi ? hi : v;
}

static unsigned char pat(uint32_t seed, size_t i)
{
    return (unsigned char)((seed >> ((i & 3) * 8)) + i * 157u + (i >> 8));
}

/* Contents: the first and the last 128 bytes of a block (whole if short);
 * overlap itself is checked against the model's address ranges. */
#define EDGE 128

static void fill(unsigned char *p, size_t size, uint32_t seed)
{
    for (size_t i = 0; i < size && i < EDGE; i++)
        p[i] = pat(seed, i);
    for (size_t i = size > EDGE ? size - EDGE : 0; i < size; i++)
        p[i] = pat(seed, i);
}

/* Offset of the first wrong byte of the filled parts among the first
 * upto bytes (upto <= size), or upto if all are right. */
static size_t verify(const unsigned char *p, size_t size, size_t upto, uint32_t seed)
{
    for (size_t i = 0; i < size && i < EDGE && i < upto; i++)
        if (p[i] != pat(seed, i))
            return i;
    for (size_t i = size > EDGE ? size - EDGE : 0; i < upto; i++)
        if (p[i] != pat(seed, i))
            return i;
    return upto;
}

static size_t lowbit(size_t v)
{
    return v & (~v + 1);
}

/* Usable size the documented rule gives kmalloc(n). */
static size_t rule_usable(size_t n)
{
    if (n > KHEAP_MAX_CLASS)
        return (n + KHEAP_PAGE_SIZE - 1) & ~(KHEAP_PAGE_SIZE - 1);
    for (unsigned i = 0; i < KHEAP_NUM_CLASSES; i++)
        if (kt_class[i] >= n)
            return kt_class[i];
    return 0;
}

/* ------------------------------------------------------------------ */
/* default_heap */

static void t_default_heap(void)
{
    kheap_t *h = kheap_default();
    CHECK(h != NULL, "kheap_default() returned %p", (void *)h);
    struct kheap_stats st = stats();
    CHECK(st.heap_total == KHEAP_DEFAULT_SIZE, "heap_total %zu, static array %zu",
          st.heap_total, (size_t)KHEAP_DEFAULT_SIZE);
    CHECK(kheap_end(h) == kheap_default_end(), "kheap_end %p, kheap_default_end %p",
          (void *)kheap_end(h), (void *)kheap_default_end());
    CHECK(st.region_count == 1, "region_count %zu", st.region_count);
    void *p = kmalloc(100);
    uintptr_t start = kheap_default_end() - KHEAP_DEFAULT_SIZE;
    CHECK(p && (uintptr_t)p >= start && (uintptr_t)p < kheap_default_end(),
          "kmalloc(100) = %p, outside the static array [%p, %p)", p, (void *)start,
          (void *)kheap_default_end());
    kfree(p);
    check_heap("on the default heap");
}

/* ------------------------------------------------------------------ */
/* model_random */

#define MODEL_LIVE 256
#define MODEL_MAX ((size_t)96 << 10)

enum { M_KMALLOC, M_ALIGNED, M_CALLOC };

struct mblock {
    unsigned char *p;
    size_t size, usable;
    uint32_t seed;
    uint8_t kind;
};

static struct mblock m_live[MODEL_LIVE];
static unsigned m_cap;        /* live blocks at most (MODEL_LIVE unscaled) */
static size_t m_max;          /* largest size asked (MODEL_MAX unscaled) */
static unsigned m_align_steps;/* alignments 8 << 0 .. 8 << (steps - 1) */
static unsigned m_n;
static size_t m_sum;          /* sum of usable sizes of live blocks */
static unsigned long m_op;
static uint64_t m_rng;
static unsigned char *m_pending; /* the block m_add checks, not yet in m_live[] */

#define MCHECK(cond, fmt, ...)                                                \
    CHECK(cond, "[seed %llu op %lu] " fmt, (unsigned long long)env->seed, m_op,   \
          __VA_ARGS__)

static void m_no_overlap(const unsigned char *p, size_t usable, unsigned skip)
{
    for (unsigned j = 0; j < m_n; j++) {
        const struct mblock *b = &m_live[j];
        if (j == skip)
            continue;
        MCHECK(!(p < b->p + b->usable && b->p < p + usable),
               "block %p+%zu overlaps live block %p+%zu", (const void *)p, usable,
               (const void *)b->p, b->usable);
    }
}

static void m_add(unsigned char *p, size_t size, size_t align, uint8_t kind)
{
    m_pending = p;
    size_t usable = ksize(p);
    MCHECK(usable >= size, "ksize %zu < %zu asked (kind %u)", usable, size, kind);
    if (kind == M_ALIGNED) {
        MCHECK((uintptr_t)p % align == 0, "%p not aligned to %zu", (void *)p, align);
    } else {
        size_t want = rule_usable(size);
        MCHECK(usable == want, "ksize(kmalloc(%zu)) = %zu, the class rule says %zu",
               size, usable, want);
        size_t a = usable > KHEAP_MAX_CLASS ? KHEAP_PAGE_SIZE : lowbit(usable);
        MCHECK((uintptr_t)p % (a < 8 ? 8 : a) == 0, "%p of class %zu not aligned to %zu",
               (void *)p, usable, a);
    }
    m_no_overlap(p, usable, MODEL_LIVE);
    if (kind == M_CALLOC)
        for (size_t i = 0; i < size; i++)
            MCHECK(p[i] == 0, "kcalloc block %p byte %zu is %u", (void *)p, i, p[i]);
    struct mblock *b = &m_live[m_n++];
    b->p = p;
    b->size = size;
    b->usable = usable;
    b->seed = (uint32_t)kt_rand(&m_rng);
    b->kind = kind;
    fill(p, size, b->seed);
    m_sum += usable;
    m_pending = NULL;
}

static void m_check_contents(const struct mblock *b, size_t upto, const char *when)
{
    size_t bad = verify(b->p, b->size, upto, b->seed);
    MCHECK(bad == upto, "%s: block %p (%zu bytes) byte %zu is %u, wrote %u", when,
           (void *)b->p, b->size, bad, b->p[bad], pat(b->seed, bad));
}

static void m_remove(unsigned i)
{
    m_sum -= m_live[i].usable;
    m_live[i] = m_live[--m_n];
}

static void m_stats(size_t base_used, uint64_t base_net)
{
    struct kheap_stats st = stats();
    MCHECK(st.used_bytes == base_used + m_sum, "used_bytes %zu, model %zu", st.used_bytes,
           base_used + m_sum);
    uint64_t net = st.allocation_count - st.free_count;
    MCHECK(net == base_net + m_n, "allocations - frees %llu, model %llu",
           (unsigned long long)net, (unsigned long long)(base_net + m_n));
}

/* The blocks a failed model test leaves live. */
static void m_free_all(void)
{
    if (m_pending)
        kfree(m_pending);
    m_pending = NULL;
    while (m_n)
        kfree(m_live[--m_n].p);
    m_sum = 0;
}

/* How a request of size bytes aligned to align (0 up to 8: kmalloc's own)
 * is served, as kmalloc.c's block_alloc chooses: an object of the
 * smallest class of at least max(size, align) bytes whose size is a
 * multiple of align, while both fit a class (align up to a page), else a
 * large block. Returns the length of free run it needs: its class's slab,
 * with the pages before the slab's alignment (its size's lowest set bit)
 * when that is beyond a page; or the block's pages with those before an
 * alignment beyond a page. *free_slots: the class's slots free in its
 * slabs (0 for a large block). */
static size_t m_need_pages(size_t size, size_t align, size_t *free_slots)
{
    const size_t pg = KHEAP_PAGE_SIZE, amax = pg < KHEAP_MAX_CLASS ? pg : KHEAP_MAX_CLASS;
    size_t n = size ? size : 1;
    *free_slots = 0;
    if (n <= KHEAP_MAX_CLASS && align <= amax) {
        size_t i = kt_class_index(n > align ? n : align);
        while (align > 8 && (kt_class[i] & (align - 1)))
            i++;
        static struct kheap_cache_info rows[KHEAP_NUM_CLASSES];
        kheap_slabinfo(kheap_default(), rows, i + 1);
        size_t held = rows[i].active_objs + rows[i].cached_objs;
        *free_slots = rows[i].num_objs > held ? rows[i].num_objs - held : 0;
        size_t lead = lowbit(kt_class[i]) > pg ? lowbit(kt_class[i]) / pg - 1 : 0;
        return rows[i].pagesperslab + lead;
    }
    return (n + pg - 1) / pg + (align > pg ? align / pg - 1 : 0);
}

/* An allocation of the model returned NULL. On a heap below
 * KT_FULL_HEAP the model's blocks may pin slabs of many classes, up to
 * eight pages each, and cut the free pages into runs too short for one
 * more slab: a NULL is then the right answer, if no free run is long
 * enough for the request (kheap_largest_free, after the allocator's own
 * reclaim) and, for a class, its slabs have no free slot. Anywhere else
 * it fails the test. The heap must be intact either way. */
static unsigned long m_refusals;
static void m_refused(const char *call, size_t size, size_t align)
{
    size_t longest = kheap_largest_free(kheap_default()) / KHEAP_PAGE_SIZE, free_slots;
    size_t need = m_need_pages(size, align, &free_slots);
    MCHECK(small_heap() && longest < need && free_slots == 0,
           "%s(%zu, align %zu) returned NULL with %zu pages in the longest free run and %zu"
           " slots free in its class; it needs a run of %zu (a %zu KiB heap, %u blocks live)",
           call, size, align, longest, free_slots, need, kt_heap >> 10, m_n);
    m_refusals++;
    check_heap("after a refused allocation");
}

static void t_model_random(void)
{
    kt_make_classes();
    m_rng = kt_rand_seed(env->seed, 0);
    m_n = 0;
    m_sum = 0;
    m_refusals = 0;
    m_pending = NULL;
    fail_cleanup = m_free_all;
    m_cap = MODEL_LIVE;
    m_max = MODEL_MAX;
    m_align_steps = 14;
    if (small_heap()) {
        /* Random sizes touch most size classes, each holding a slab of
         * one to eight pages: live blocks and sizes shrink with the heap,
         * so the model's blocks fit with room for those slabs. */
        m_cap = (unsigned)(MODEL_LIVE * (kt_heap >> 10) / (KT_FULL_HEAP >> 10));
        m_cap = m_cap < 32 ? 32 : m_cap;
        m_max = kt_heap / 64;
        if (kt_heap < TINY_HEAP) {
            m_cap = 12; /* 15 classes' slabs take much of what is free */
            m_max = kt_heap / 128;
        }
        while (m_align_steps > 1 && ((size_t)8 << (m_align_steps - 1)) > kt_heap / 32)
            m_align_steps--;
        note_scaled("model_random",
                    "%u live blocks (%d), sizes up to %zu (%zu), alignment up to %zu (65536):"
                    " a %zu KiB heap",
                    m_cap, MODEL_LIVE, m_max, MODEL_MAX, (size_t)8 << (m_align_steps - 1),
                    kt_heap >> 10);
    }
    struct kheap_stats st0 = stats();
    uint64_t base_net = st0.allocation_count - st0.free_count, reallocs = 0, moved = 0;
    for (m_op = 0; m_op < env->model_ops; m_op++) {
        unsigned r = (unsigned)kt_rand_below(&m_rng, 100);
        if (m_n == m_cap || (m_n > 0 && r < 35)) { /* free */
            unsigned i = (unsigned)kt_rand_below(&m_rng, m_n);
            m_check_contents(&m_live[i], m_live[i].size, "before kfree");
            kfree(m_live[i].p);
            m_remove(i);
        } else if (m_n > 0 && r < 50) { /* realloc */
            unsigned i = (unsigned)kt_rand_below(&m_rng, m_n);
            struct mblock *b = &m_live[i];
            size_t n = rnd_size(&m_rng, 1, m_max);
            unsigned char *q = krealloc(b->p, n);
            if (!q) { /* the block stays as it was */
                m_refused("krealloc", n, 0);
                m_check_contents(b, b->size, "after a refused krealloc");
            } else {
                reallocs++;
                moved += q != b->p;
                size_t old_size = b->size;
                b->p = q;
                m_check_contents(b, n < old_size ? n : old_size, "after krealloc");
                m_sum -= b->usable;
                b->usable = ksize(q);
                MCHECK(b->usable >= n, "ksize %zu after krealloc to %zu", b->usable, n);
                m_no_overlap(q, b->usable, i);
                b->size = n;
                m_sum += b->usable;
                fill(q, n, b->seed);
            }
        } else if (r < 60) { /* aligned */
            /* 8 .. 64 KiB unscaled */
            size_t align = (size_t)8 << kt_rand_below(&m_rng, m_align_steps);
            size_t n = rnd_size(&m_rng, 1, m_max / 2);
            unsigned char *p = kmalloc_aligned(n, align);
            if (p)
                m_add(p, n, align, M_ALIGNED);
            else
                m_refused("kmalloc_aligned", n, align);
        } else if (r < 68) { /* calloc */
            size_t k = 1 + kt_rand_below(&m_rng, kt_heap < TINY_HEAP ? 4 : 16), each = rnd_size(&m_rng, 1, m_max < 256 ? m_max : 256);
            unsigned char *p = kcalloc(k, each);
            if (p)
                m_add(p, k * each, 0, M_CALLOC);
            else
                m_refused("kcalloc", k * each, 0);
        } else if (r < 72 && m_n > 0) { /* usable size */
            unsigned i = (unsigned)kt_rand_below(&m_rng, m_n);
            MCHECK(ksize(m_live[i].p) == m_live[i].usable, "ksize(%p) %zu, was %zu",
                   (void *)m_live[i].p, ksize(m_live[i].p), m_live[i].usable);
        } else {
            size_t n = rnd_size(&m_rng, 0, m_max);
            unsigned char *p = kmalloc(n);
            if (p)
                m_add(p, n, 0, M_KMALLOC);
            else
                m_refused("kmalloc", n, 0);
        }
        if (m_op % 64 == 0)
            m_stats(st0.used_bytes, base_net);
        if (m_op % 1024 == 0)
            check_heap("during the model test");
    }
    m_stats(st0.used_bytes, base_net);
    check_heap("with the model's blocks live");
    size_t peak = m_n;
    while (m_n) {
        m_check_contents(&m_live[m_n - 1], m_live[m_n - 1].size, "at the end");
        kfree(m_live[m_n - 1].p);
        m_remove(m_n - 1);
    }
    m_stats(st0.used_bytes, base_net);
    check_heap("after the model test");
    /* Each refusal was right (m_refused); many would say the page
     * layer places slabs badly, which the test bounds. */
    MCHECK(m_refusals * 100 <= m_op, "%lu of %lu operations refused for want of a free run",
           m_refusals, m_op);
    kt_printf("# model: %lu ops, seed %llu, %llu reallocs (%llu moved), %zu live at the end,"
              " %lu refused (no free run long enough)",
              m_op, (unsigned long long)env->seed, (unsigned long long)reallocs,
              (unsigned long long)moved, peak, m_refusals);
}

/* ------------------------------------------------------------------ */
/* exhaustion */

/* Allocate blocks of size until NULL or until they hold budget bytes,
 * each linked to the previous one through its first word; returns the
 * chain's head, counts in *n. */
static void **exhaust(void **head, size_t size, size_t budget, size_t *n)
{
    void **p;
    for (size_t held = 0; held < budget && (p = kmalloc(size)) != NULL; held += size) {
        *p = head;
        head = p;
        (*n)++;
    }
    return head;
}

#define NSIZES 5

static void t_exhaustion(void)
{
    kheap_t *h = kheap_default();
    kheap_reclaim(h);
    struct kheap_stats st0 = stats();
    size_t sizes[NSIZES] = {(size_t)256 << 10, 40000, 4096, 256, 16};
    if (small_heap()) {
        /* Every size must fit once in a share of the free memory. */
        sizes[0] = kt_heap / 4;
        sizes[1] = KHEAP_MAX_CLASS + 1 + KHEAP_PAGE_SIZE / 2;
        if (kt_heap < TINY_HEAP) {
            /* The heap's metadata takes a third of it: a share is not
             * much more than 1 KiB. */
            sizes[0] = kt_heap / 16;
            sizes[2] = kt_heap / 32;
        }
        note_scaled("exhaustion", "blocks of %zu, %zu and %zu bytes (262144, 40000 and 4096):"
                    " a %zu KiB heap", sizes[0], sizes[1], sizes[2], kt_heap >> 10);
    }
    void **chain = NULL;
    size_t count[NSIZES] = {0}, total = 0;
    /* First a share of the free memory at each size, so every size gets
     * blocks; then every size until NULL. */
    for (unsigned k = 0; k < NSIZES; k++)
        chain = exhaust(chain, sizes[k], st0.heap_free / (NSIZES + 1), &count[k]);
    for (unsigned k = 0; k < NSIZES; k++)
        chain = exhaust(chain, sizes[k], SIZE_MAX, &count[k]);
    for (unsigned k = 0; k < NSIZES; k++)
        total += count[k];
    struct kheap_stats st1 = stats();
    const void *bad_addr = NULL;
    const char *bad = kheap_check(h, &bad_addr);
    void *more = kmalloc(16);
    /* Give everything back before judging, so a failure here does not
     * leave the heap full for the tests after it. */
    kfree(more);
    while (chain) {
        void **next = *chain;
        kfree(chain);
        chain = next;
    }
    CHECK(bad == NULL, "kheap_check when full: %s at %p", bad, bad_addr);
    CHECK(more == NULL, "kmalloc(16) gave %p after it had failed", more);
    for (unsigned k = 0; k < NSIZES; k++)
        CHECK(count[k] > 0, "no block of %zu bytes before the heap was full", sizes[k]);
    CHECK(st1.failed_count >= st0.failed_count + NSIZES,
          "failed_count %llu after %d NULLs, was %llu", (unsigned long long)st1.failed_count,
          NSIZES, (unsigned long long)st0.failed_count);
    CHECK(st1.heap_free < 64 * KHEAP_PAGE_SIZE, "heap_free %zu when kmalloc(16) fails",
          st1.heap_free);
    CHECK(st1.used_bytes >= st0.used_bytes + total * 16, "used_bytes %zu for %zu blocks",
          st1.used_bytes, total);
    kheap_reclaim(h);
    struct kheap_stats st2 = stats();
    CHECK(st2.used_bytes == st0.used_bytes, "used_bytes %zu after freeing all, was %zu",
          st2.used_bytes, st0.used_bytes);
    CHECK(st2.heap_free == st0.heap_free, "heap_free %zu after freeing all, was %zu",
          st2.heap_free, st0.heap_free);
    check_heap("after recovery");
    size_t big = st2.heap_free / (kt_heap < TINY_HEAP ? 4 : 2);
    void *p = kmalloc(big);
    CHECK(p != NULL, "kmalloc(%zu) failed after recovery", big);
    kfree(p);
    kt_printf("# exhaustion: %zu + %zu + %zu + %zu + %zu blocks of %zu/%zu/%zu/256/16 B"
              " until NULL (%zu bytes free then), %zu bytes free after",
              count[0], count[1], count[2], count[3], count[4], sizes[0], sizes[1],
              sizes[2], st1.heap_free, st2.heap_free);
}

/* ------------------------------------------------------------------ */
/* misuse_reports */

static char r_line[200];

/* Every report captured is printed as a comment line. */
static void print_report(const struct kheap_report *r, unsigned long nth)
{
    (void)nth;
    kt_format(r_line, sizeof r_line, "# report: %s(%p): %s%s%s%s",
              r->function ? r->function : "?", r->addr, r->reason,
              r->cache ? " [cache " : "", r->cache ? r->cache : "", r->cache ? "]" : "");
    env->puts(r_line);
}

/* Expect exactly one report of kind about addr from what just ran, and
 * the heap's used bytes and integrity unchanged. */
static void expect_report(const char *what, enum kheap_report_kind kind, const void *addr,
                          unsigned long before, size_t used_before)
{
    unsigned long count = kt_reports();
    struct kheap_report r_last = kt_last_report();
    CHECK(count == before + 1, "%s: %lu reports, want 1", what, count - before);
    CHECK(r_last.kind == kind, "%s: report kind %d, want %d", what, (int)r_last.kind,
          (int)kind);
    CHECK(r_last.addr == addr, "%s: report names %p, want %p", what, r_last.addr, addr);
    CHECK(r_last.reason && r_last.reason[0], "%s: report without a reason", what);
    size_t used = stats().used_bytes;
    CHECK(used == used_before, "%s: used_bytes %zu, was %zu", what, used, used_before);
    check_heap(what);
}

static int not_heap_object;

static void t_misuse_reports(void)
{
    kheap_t *h = kheap_default();
    kt_capture_reports(print_report);
    unsigned long c0;
    size_t u0;
#define MISUSE(what, kind, addr, stmt)                                        \
    do {                                                                      \
        c0 = kt_reports();                                                    \
        u0 = stats().used_bytes;                                              \
        stmt;                                                                 \
        expect_report(what, kind, addr, c0, u0);                              \
    } while (0)

    MISUSE("free of a static variable", KHEAP_REPORT_FOREIGN, &not_heap_object,
           kfree(&not_heap_object));
    unsigned char *small = kmalloc(64);
    CHECK(small, "kmalloc(64) failed");
    MISUSE("free inside a small object", KHEAP_REPORT_INTERIOR, small + 8, kfree(small + 8));
    size_t large_size = 100000;
    if (small_heap()) {
        large_size = KHEAP_MAX_CLASS + 1;
        note_scaled("misuse_reports", "the large block is %zu bytes (100000): a %zu KiB heap",
                    large_size, kt_heap >> 10);
    }
    unsigned char *large = kmalloc(large_size);
    CHECK(large, "kmalloc(%zu) failed", large_size);
    MISUSE("free inside a large block", KHEAP_REPORT_INTERIOR, large + KHEAP_PAGE_SIZE,
           kfree(large + KHEAP_PAGE_SIZE));
    kfree(large);
    MISUSE("second free of a large block", KHEAP_REPORT_FREE_RUN, large, kfree(large));
    kfree(small);
    MISUSE("second free of a cached object", KHEAP_REPORT_DOUBLE_FREE, small, kfree(small));
    kheap_cache_t *a = kheap_cache_create(h, "kt_misuse_a", 40, 0, NULL, NULL);
    kheap_cache_t *b = kheap_cache_create(h, "kt_misuse_b", 40, 0, NULL, NULL);
    CHECK(a && b, "kheap_cache_create failed");
    void *o = kheap_cache_alloc(a);
    CHECK(o, "kheap_cache_alloc failed");
    MISUSE("free to the wrong cache", KHEAP_REPORT_WRONG_CACHE, o, kheap_cache_free(b, o));
    int err = 0;
    MISUSE("destroy of a busy cache", KHEAP_REPORT_BUSY, (const void *)a,
           err = kheap_cache_destroy(a));
    CHECK(err == KHEAP_EBUSY, "kheap_cache_destroy of a busy cache: %d", err);
    kheap_cache_free(a, o);
    CHECK(kt_reports() == c0 + 1, "a good free was reported: %s", r_line);
    CHECK(kheap_cache_destroy(a) == KHEAP_OK && kheap_cache_destroy(b) == KHEAP_OK,
          "destroy of empty caches failed");
    kt_release_reports();
    check_heap("after the misuse reports");
#undef MISUSE
}

/* ------------------------------------------------------------------ */
/* object_caches */

#define INODE_MAGIC 0x696e6f64u
struct kt_inode {
    uint32_t magic;
    uint32_t uses;
    void *self;
    unsigned char body[176];
};

static unsigned long ctor_runs, dtor_runs;

static void inode_ctor(void *obj)
{
    struct kt_inode *i = obj;
    i->magic = INODE_MAGIC;
    i->uses = 0;
    i->self = obj;
    __atomic_fetch_add(&ctor_runs, 1, __ATOMIC_RELAXED);
}

static void inode_dtor(void *obj)
{
    struct kt_inode *i = obj;
    if (i->magic == INODE_MAGIC && i->self == obj)
        i->magic = 0;
    __atomic_fetch_add(&dtor_runs, 1, __ATOMIC_RELAXED);
}

#define NOBJ 300

static void t_object_caches(void)
{
    kheap_t *h = kheap_default();
    static struct kt_inode *objs[NOBJ];
    unsigned nobj = NOBJ, nbuf = 64;
    if (small_heap()) {
        size_t per = kt_heap < TINY_HEAP ? 2048 : 1024; /* bytes of heap per inode */
        nobj = kt_heap / per < NOBJ ? (unsigned)(kt_heap / per) : NOBJ;
        nbuf = (unsigned)(kt_heap / 16384);
        note_scaled("object_caches", "%u inodes (%d) and %u buffers of 3000 bytes (64): a %zu"
                    " KiB heap", nobj, NOBJ, nbuf, kt_heap >> 10);
    }
    ctor_runs = dtor_runs = 0;
    kheap_cache_t *c = kheap_cache_create(h, "kt_inode", sizeof(struct kt_inode), 64,
                                          inode_ctor, inode_dtor);
    CHECK(c, "kheap_cache_create(kt_inode) failed");
    if (kt_heap < TINY_HEAP) {
        /* Reuse keeps the constructed state only in slabs the cache keeps
         * empty (KHEAP_EMPTY_SLABS_KEPT); a tiny heap has room for few. */
        struct kheap_cache_info i0;
        kheap_cache_info(c, &i0);
        size_t fit = i0.objperslab * KHEAP_EMPTY_SLABS_KEPT;
        if (fit < nobj)
            nobj = (unsigned)fit;
        note_scaled("object_caches", "%u inodes: what %d kept empty slabs hold",
                    nobj, KHEAP_EMPTY_SLABS_KEPT);
    }
    for (unsigned i = 0; i < nobj; i++) {
        objs[i] = kheap_cache_alloc(c);
        CHECK(objs[i], "kheap_cache_alloc %u failed", i);
        CHECK((uintptr_t)objs[i] % 64 == 0, "object %p not 64-aligned", (void *)objs[i]);
        CHECK(objs[i]->magic == INODE_MAGIC && objs[i]->self == objs[i],
              "object %p not constructed", (void *)objs[i]);
        objs[i]->uses++;
    }
    unsigned long built = ctor_runs;
    CHECK(built >= nobj, "%lu constructor runs for %u objects", built, nobj);
    struct kheap_cache_info info;
    kheap_cache_info(c, &info);
    CHECK(info.objsize >= sizeof(struct kt_inode) && info.active_objs >= nobj,
          "slabinfo objsize %zu active_objs %zu", info.objsize, info.active_objs);
    for (unsigned i = 0; i < nobj; i++)
        kheap_cache_free(c, objs[i]);
    /* Bonwick: freed objects keep their constructed state, so the second
     * round finds them constructed and used once, with no new ctor run. */
    unsigned reused = 0;
    for (unsigned i = 0; i < nobj; i++) {
        objs[i] = kheap_cache_alloc(c);
        CHECK(objs[i], "kheap_cache_alloc %u failed (second round)", i);
        CHECK(objs[i]->magic == INODE_MAGIC && objs[i]->self == objs[i],
              "object %p lost its constructed state", (void *)objs[i]);
        reused += objs[i]->uses == 1;
        objs[i]->uses++;
    }
    CHECK(ctor_runs == built, "constructors ran %lu more times on reuse", ctor_runs - built);
    CHECK(reused == nobj, "%u of %u objects came back with their state", reused, nobj);

    /* A cache without constructor, objects of 3000 bytes across slabs
     * (or of the largest class's size less a bit, where that is less). */
    const size_t bsz = KHEAP_MAX_CLASS - 24 < 3000 ? KHEAP_MAX_CLASS - 24 : 3000;
    kheap_cache_t *d = kheap_cache_create(h, "kt_buf3000", bsz, 0, NULL, NULL);
    CHECK(d, "kheap_cache_create(kt_buf3000) failed");
    static unsigned char *bufs[64];
    for (unsigned i = 0; i < nbuf; i++) {
        bufs[i] = kheap_cache_alloc(d);
        CHECK(bufs[i], "kt_buf3000 alloc %u failed", i);
        fill(bufs[i], bsz, i);
    }
    for (unsigned i = 0; i < nbuf; i++) {
        size_t bad = verify(bufs[i], bsz, bsz, i);
        CHECK(bad == bsz, "kt_buf3000 object %u byte %zu overwritten", i, bad);
        kheap_cache_free(d, bufs[i]);
    }
    check_heap("with two user caches");

    for (unsigned i = 0; i < nobj; i++)
        kheap_cache_free(c, objs[i]);
    CHECK(kheap_cache_destroy(c) == KHEAP_OK, "destroy of kt_inode failed");
    CHECK(dtor_runs == ctor_runs, "%lu destructor runs for %lu constructed objects",
          dtor_runs, ctor_runs);
    CHECK(kheap_cache_destroy(d) == KHEAP_OK, "destroy of kt_buf3000 failed");
    check_heap("after destroying the caches");
    kt_printf("# object caches: %lu objects constructed, %lu destroyed", ctor_runs,
              dtor_runs);
}

/* ------------------------------------------------------------------ */
/* smp_stress */

#define RING 256
#define LOCAL 48
#define MSG_MAGIC 0x6d736721u

/* The inbox of one CPU: only the previous CPU (index - 1, mod n) puts,
 * only its owner takes. head is written by the owner, tail by the
 * sender; each reads the other's word with acquire, and the slot was
 * written before the tail that publishes it (release). */
struct ring {
    uintptr_t head __attribute__((aligned(64)));
    uintptr_t tail __attribute__((aligned(64)));
    void *slot[RING];
};

struct msg {
    uint32_t magic;
    uint32_t from;
    uint32_t seed;
    uint32_t cached; /* 1: from the shared cache */
    size_t size;
};

struct worker {
    uint64_t allocs, sent, received, frees;
    int failed;
    char why[160];
} __attribute__((aligned(64)));

static struct ring s_ring[KT_MAX_CPUS];
static struct worker s_res[KT_MAX_CPUS];
static unsigned s_n, s_done;
static size_t s_big_lo = 32768, s_big_hi = 131072; /* 1 in 32 messages */
/* Other messages' largest size, messages a CPU holds, messages an inbox
 * holds. */
static size_t s_max = 4096;
static unsigned s_local = LOCAL, s_ring_cap = RING;
static kheap_cache_t *s_cache;

static bool ring_put(struct ring *r, void *p)
{
    uintptr_t t = r->tail, h = __atomic_load_n(&r->head, __ATOMIC_ACQUIRE);
    if (t - h == s_ring_cap)
        return false;
    r->slot[t % RING] = p;
    __atomic_store_n(&r->tail, t + 1, __ATOMIC_RELEASE);
    return true;
}

static void *ring_take(struct ring *r)
{
    uintptr_t h = r->head, t = __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE);
    if (h == t)
        return NULL;
    void *p = r->slot[h % RING];
    __atomic_store_n(&r->head, h + 1, __ATOMIC_RELEASE);
    return p;
}

#define WCHECK(w, cond, ...)                                                  \
    do {                                                                      \
        if (!(cond)) {                                                        \
            if (!(w)->failed)                                                 \
                kt_format((w)->why, sizeof (w)->why, __VA_ARGS__);            \
            (w)->failed = 1;                                                  \
            return false;                                                     \
        }                                                                     \
    } while (0)

static bool msg_new(struct worker *w, unsigned idx, uint64_t *rng, struct msg **out)
{
    struct msg *m;
    size_t size;
    bool cached = kt_rand_below(rng, 4) == 0;
    if (cached) {
        size = 96;
        m = kheap_cache_alloc(s_cache);
    } else {
        size = kt_rand_below(rng, 32) == 0 ? rnd_size(rng, s_big_lo, s_big_hi)
                                       : rnd_size(rng, sizeof *m, s_max);
        m = kmalloc(size);
    }
    WCHECK(w, m != NULL, "CPU %u: allocation of %zu bytes failed", idx, size);
    w->allocs++;
    unsigned char *b = (unsigned char *)m;
    m->magic = MSG_MAGIC;
    m->from = idx;
    m->seed = (uint32_t)kt_rand(rng);
    m->cached = cached;
    m->size = size;
    for (size_t i = sizeof *m; i < size && i < sizeof *m + 64; i++)
        b[i] = pat(m->seed, i);
    for (size_t i = size > 64 ? size - 64 : 0; i < size; i++)
        if (i >= sizeof *m)
            b[i] = pat(m->seed, i);
    *out = m;
    return true;
}

static bool msg_free(struct worker *w, unsigned idx, struct msg *m)
{
    const unsigned char *b = (const unsigned char *)m;
    WCHECK(w, m->magic == MSG_MAGIC && m->from < s_n, "CPU %u: object %p header overwritten",
           idx, (void *)m);
    for (size_t i = sizeof *m; i < m->size && i < sizeof *m + 64; i++)
        WCHECK(w, b[i] == pat(m->seed, i), "CPU %u: object %p from CPU %u byte %zu overwritten",
               idx, (void *)m, (unsigned)m->from, i);
    for (size_t i = m->size > 64 ? m->size - 64 : 0; i < m->size; i++)
        WCHECK(w, i < sizeof *m || b[i] == pat(m->seed, i),
               "CPU %u: object %p from CPU %u byte %zu overwritten", idx, (void *)m,
               (unsigned)m->from, i);
    m->magic = 0;
    if (m->cached)
        kheap_cache_free(s_cache, m);
    else
        kfree(m);
    w->frees++;
    return true;
}

static bool drain_inbox(struct worker *w, unsigned idx, unsigned max)
{
    struct msg *m;
    while (max-- && (m = ring_take(&s_ring[idx])) != NULL) {
        w->received++;
        if (!msg_free(w, idx, m))
            return false;
    }
    return true;
}

static bool stress_run(unsigned idx)
{
    struct worker *w = &s_res[idx];
    struct msg *local[LOCAL];
    unsigned nlocal = 0;
    uint64_t rng = kt_rand_seed(env->seed, 1 + idx);
    struct ring *next = &s_ring[(idx + 1) % s_n];
    for (unsigned long op = 0; op < env->stress_ops; op++) {
        unsigned r = (unsigned)kt_rand_below(&rng, 100);
        if (r < 40 || nlocal == 0) {
            if (nlocal == s_local) {
                if (!msg_free(w, idx, local[--nlocal]))
                    return false;
            }
            if (!msg_new(w, idx, &rng, &local[nlocal]))
                return false;
            nlocal++;
        } else if (r < 60) {
            unsigned i = (unsigned)kt_rand_below(&rng, nlocal);
            struct msg *m = local[i];
            local[i] = local[--nlocal];
            if (!msg_free(w, idx, m))
                return false;
        } else if (r < 85) {
            unsigned i = (unsigned)kt_rand_below(&rng, nlocal);
            struct msg *m = local[i];
            local[i] = local[--nlocal];
            if (ring_put(next, m))
                w->sent++;
            else if (!msg_free(w, idx, m))
                return false;
        } else if (!drain_inbox(w, idx, 16)) {
            return false;
        }
    }
    while (nlocal)
        if (!msg_free(w, idx, local[--nlocal]))
            return false;
    return true;
}

static void stress_worker(unsigned idx, void *arg)
{
    (void)arg;
    bool ok = stress_run(idx);
    __atomic_fetch_add(&s_done, 1, __ATOMIC_RELEASE);
    /* What the previous CPU sends until it is done is still ours to free;
     * its last put happens before its increment of s_done. */
    while (ok && __atomic_load_n(&s_done, __ATOMIC_ACQUIRE) < s_n)
        ok = drain_inbox(&s_res[idx], idx, RING);
    if (ok)
        drain_inbox(&s_res[idx], idx, RING + 1);
}

static void msg_ctor(void *obj)
{
    ((struct msg *)obj)->magic = 0;
}

static void t_smp_stress(void)
{
    kheap_t *h = kheap_default();
    s_n = env->ncpus < KT_MAX_CPUS ? env->ncpus : KT_MAX_CPUS;
    s_done = 0;
    s_big_lo = 32768;
    s_big_hi = 131072;
    if (small_heap()) {
        s_big_lo = kt_heap / 128;
        s_big_hi = kt_heap / 32;
        note_scaled("smp_stress", "big messages of %zu to %zu bytes (32768 to 131072): a %zu"
                    " KiB heap", s_big_lo, s_big_hi, kt_heap >> 10);
    }
    s_max = 4096;
    s_local = LOCAL;
    s_ring_cap = RING;
    if (kt_heap < TINY_HEAP) {
        s_max = kt_heap / 128;
        s_local = 3;
        s_ring_cap = 3;
        s_big_hi = kt_heap / 64;
        note_scaled("smp_stress", "messages up to %zu bytes (4096), %u held and %u in an"
                    " inbox (%d, %d)", s_max, s_local, s_ring_cap, LOCAL, RING);
    }
    if (s_n == 1)
        note_scaled("smp_stress", "one CPU: it hands objects to its own inbox, so nothing is"
                    " freed on another CPU and nothing runs concurrently");
    for (unsigned i = 0; i < KT_MAX_CPUS; i++) {
        s_ring[i].head = s_ring[i].tail = 0;
        s_res[i] = (struct worker){0};
    }
    s_cache = kheap_cache_create(h, "kt_msg", 96, 0, msg_ctor, NULL);
    CHECK(s_cache, "kheap_cache_create(kt_msg) failed");
    struct kheap_stats st0 = stats();
    env->run_all(stress_worker, NULL);
    uint64_t allocs = 0, frees = 0, sent = 0, received = 0;
    for (unsigned i = 0; i < s_n; i++) {
        CHECK(!s_res[i].failed, "%s", s_res[i].why);
        allocs += s_res[i].allocs;
        frees += s_res[i].frees;
        sent += s_res[i].sent;
        received += s_res[i].received;
    }
    CHECK(sent == received, "%llu objects sent to another CPU, %llu received",
          (unsigned long long)sent, (unsigned long long)received);
    CHECK(allocs == frees, "%llu allocations, %llu frees", (unsigned long long)allocs,
          (unsigned long long)frees);
    const void *addr = NULL;
    const char *why = kheap_check_quiescent(h, &addr);
    CHECK(why == NULL, "kheap_check_quiescent after the stress: %s at %p", why, addr);
    struct kheap_stats st1 = stats();
    CHECK(st1.used_bytes == st0.used_bytes, "used_bytes %zu after the stress, was %zu",
          st1.used_bytes, st0.used_bytes);
    CHECK(st1.allocation_count - st0.allocation_count == allocs,
          "allocation_count grew by %llu, the CPUs made %llu",
          (unsigned long long)(st1.allocation_count - st0.allocation_count),
          (unsigned long long)allocs);
    int err = kheap_cache_destroy(s_cache);
    CHECK(err == KHEAP_OK, "kheap_cache_destroy(kt_msg): %d", err);
    kt_printf("# smp stress: %u CPUs, %llu allocations and frees, %llu objects handed to"
              " the next CPU (index + 1 mod CPUs) and freed there",
              s_n, (unsigned long long)allocs, (unsigned long long)received);
}

/* ------------------------------------------------------------------ */

void kt_begin(const struct kt_env *e)
{
    env = e;
}

/* ------------------------------------------------------------------ */
/* Bulk calls and a reserve used with interrupts off (bare metal: the
 * port's masking; hosted: no masking, the same calls). */

static void t_bulk_and_reserve(void)
{
    kheap_t *h = kheap_default();
    kheap_cache_t *c = kheap_cache_create(h, "kt_reserve", 96, 0, NULL, NULL);
    CHECK(c, "kheap_cache_create");
    enum { NMAX = 48 };
    static void *objs[NMAX];
    /* 48 objects of 96 and of 200 bytes do not fit beside a tiny heap's
     * metadata. */
    const unsigned N = kt_heap < TINY_HEAP ? 12 : NMAX;
    if (N < NMAX)
        note_scaled("bulk_and_reserve", "%u objects (%d): a %zu KiB heap", N, (int)NMAX,
                    kt_heap >> 10);
    struct kheap_stats s0 = stats();
    CHECK(kheap_cache_alloc_bulk(c, N, objs) == N, "bulk of %u", N);
    for (unsigned i = 0; i < N; i++)
        fill(objs[i], 96, i);
    for (unsigned i = 0; i < N; i++)
        CHECK(verify(objs[i], 96, 96, i) == 96, "bulk object %u overwritten", i);
    kheap_cache_free_bulk(c, N, objs);
    CHECK(kheap_alloc_bulk(h, 200, N, objs) == N, "kmalloc bulk of %u", N);
    kheap_free_bulk(h, N, objs);
    /* A reserve filled where allocation may wait, used where it may not. */
    struct kheap_reserve r = KHEAP_RESERVE_INIT;
    CHECK(kheap_reserve_fill(c, N, &r) == KHEAP_OK, "reserve_fill %u", N);
    unsigned got = 0;
    if (env->irq_off)
        env->irq_off();
    for (unsigned i = 0; i < N; i++) {
        objs[i] = kheap_reserve_alloc(&r);
        got += objs[i] != NULL;
        if (objs[i])
            fill(objs[i], 96, 1000 + i);
    }
    void *extra = kheap_reserve_alloc(&r);
    if (env->irq_on)
        env->irq_on();
    CHECK(got == N && extra == NULL, "%u of %u from the reserve, one more %p", got, N, extra);
    for (unsigned i = 0; i < N; i++)
        CHECK(verify(objs[i], 96, 96, 1000 + i) == 96, "reserved object %u overwritten", i);
    kheap_cache_free_bulk(c, N, objs);
    CHECK(kheap_cache_destroy(c) == KHEAP_OK, "destroy");
    struct kheap_stats s1 = stats();
    CHECK(s1.used_bytes == s0.used_bytes, "used %zu, was %zu", s1.used_bytes, s0.used_bytes);
    check_heap("after bulk and reserve");
}

int kt_run_bodies(const struct kt_env *e)
{
    env = e;
    kt_heap = stats().heap_total;
    kt_printf("# kheap test bodies on %s: %u CPUs, seed %llu, %lu model ops,"
              " %lu stress ops per CPU",
              e->platform, e->ncpus, (unsigned long long)e->seed, e->model_ops,
              e->stress_ops);
    int before = kt_failed;
    run_test("default_heap", t_default_heap);
    run_test("model_random", t_model_random);
    run_test("exhaustion", t_exhaustion);
    run_test("misuse_reports", t_misuse_reports);
    run_test("bulk_and_reserve", t_bulk_and_reserve);
    run_test("object_caches", t_object_caches);
    run_test("smp_stress", t_smp_stress);
    run_test("default_heap_after", t_default_heap);
    if (kt_scaled)
        kt_printf("# %d tests scaled down (see the \"# scaled\" lines): a %zu KiB heap is below"
                  " the %zu KiB of the full tests, or one CPU", kt_scaled, kt_heap >> 10,
                  KT_FULL_HEAP >> 10);
    return kt_failed - before;
}
