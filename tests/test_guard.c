/*
 * test_guard.c - the sampled guard blocks (src/core/guard.c,
 * kheap_set_sample): which allocations are sampled, where they are
 * placed, what a fault in the pool reports (kheap_guard_fault, called as
 * a fault handler would, and through a real fault in a child process),
 * what their free finds, and that they stay ordinary blocks otherwise.
 */
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "kheap_hosted.h"

#define PAGE ((uintptr_t)KHEAP_PAGE_SIZE)
#define HEAP_SIZE ((size_t)8 << 20)
#define kh_round_page(x) (((x) + PAGE - 1) & ~(PAGE - 1))

static void heap_whole(kheap_t *h, const char *when)
{
    const void *at = NULL;
    const char *msg = kheap_check(h, &at);
    CHECK(!msg, "%s: kheap_check: %s at %p", when, msg, at);
}

/* Was p sampled? Its usable size is exactly what was asked, and it is at
 * one end of its own page; the statistics count it. */
/* The alignment a block of size bytes has: its class's (the largest
 * power of two dividing the class size, kheap.h), at least 16, at most a
 * page. */
static uintptr_t class_align(size_t size)
{
    unsigned c = 0;
    while (c + 1 < KHEAP_NUM_CLASSES && kt_class[c] < size)
        c++;
    uintptr_t a = kt_class[c] & (~kt_class[c] + 1);
    return a < 16 ? 16 : a > PAGE ? PAGE : a;
}

/* Placed against its page's end: no other byte of its alignment fits
 * after it. */
static bool at_page_end(const void *p, size_t size)
{
    uintptr_t end = (uintptr_t)p + (size ? size : 1);
    uintptr_t page_end = ((uintptr_t)p & ~(PAGE - 1)) + PAGE;
    return end <= page_end && page_end - end < class_align(size);
}
/* A heap of HEAP_SIZE sampling every allocation that misses, with its
 * reports captured; close_sampled checks it is whole and ends it. */
static void open_sampled(struct kt_heap *t)
{
    kt_heap_open(t, HEAP_SIZE);
    kt_capture_reports(NULL);
    kt_reports_reset();
    CHECK(kheap_set_sample(t->h, 1) == 0, "sampling on");
}

static void close_sampled(struct kt_heap *t, const char *when)
{
    CHECK(kt_reports() == 0, "%s: %lu reports left, last %s", when, kt_reports(),
          kt_report_kind_name(kt_last_report().kind));
    heap_whole(t->h, when);
    kt_release_reports();
    kt_heap_close(t);
}

static void expect_report(int kind, const void *addr, size_t size, const void *where,
                          const char *what)
{
    struct kheap_report r = kt_last_report();
    CHECK(kt_reports() == 1, "%s: %lu reports, want one %s", what, kt_reports(),
          kt_report_kind_name(kind));
    CHECK((int)r.kind == kind, "%s: report %s, want %s (%s)", what, kt_report_kind_name(r.kind),
          kt_report_kind_name(kind), r.reason);
    CHECK(r.addr == addr, "%s: report names %p, want %p", what, r.addr, addr);
    CHECK(r.size == size, "%s: report gives %zu bytes, want %zu", what, r.size, size);
    CHECK(!where || r.where == where, "%s: damage at %p, want %p", what, r.where, where);
    kt_reports_reset();
}

/* A fault at addr, as the platform's handler would pass it: kheap's, and
 * reported as kind for the block at block (size bytes). */
static void expect_fault(kheap_t *h, const void *addr, int kind, const void *block,
                         size_t size, const char *what)
{
    CHECK(kheap_guard_fault(h, addr) == 1, "%s: the fault at %p is not the pool's", what, addr);
    expect_report(kind, block, size, addr, what);
}

TEST(off_until_asked)
{
    struct kt_heap t;
    kt_heap_open(&t, HEAP_SIZE);
    CHECK(kheap_get_sample(t.h) == KHEAP_SAMPLE_RATE, "sampling starts at %lu",
          kheap_get_sample(t.h));
    CHECK(kheap_set_sample(NULL, 5) == KHEAP_EINVAL, "NULL heap");
    CHECK(kheap_set_sample(t.h, 0) == 0, "turning it off");
    void *p = kheap_alloc(t.h, 100);
    struct kheap_stats s = kt_stats(t.h);
    CHECK(s.sampled_count == 0 && s.sampled_live == 0, "sampled %llu with sampling off",
          (unsigned long long)s.sampled_count);
    CHECK(kheap_guard_fault(t.h, p) == 0, "a fault on an ordinary block is not the pool's");
    int on_stack;
    CHECK(kheap_guard_fault(t.h, &on_stack) == 0, "nor one on the stack");
    CHECK(kheap_guard_fault(NULL, p) == 0, "nor one for no heap");
    kheap_free(t.h, p);
    kt_heap_close(&t);
}

/* With every miss sampled, each allocation of a class whose magazine is
 * empty gets a page; they alternate between the page's end and start. */
TEST(sampled_blocks)
{
    static const size_t sizes[] = {1, 8, 24, 100, 1000, 2048, 2500, 4000, (size_t)KHEAP_PAGE_SIZE};
    enum { N = sizeof sizes / sizeof sizes[0] };
    struct kt_heap t;
    kt_heap_open(&t, HEAP_SIZE);
    CHECK(kheap_set_sample(t.h, 1) == 0, "sampling on");
    CHECK(kheap_get_sample(t.h) == 1, "rate read back");
    struct kheap_stats before = kt_stats(t.h);
    unsigned char *p[N];
    int ends = 0, starts = 0;
    for (int i = 0; i < N; i++) {
        p[i] = kheap_alloc(t.h, sizes[i]);
        CHECK(p[i], "alloc %zu", sizes[i]);
        /* Aligned as its class: to the largest power of two dividing the
         * class size, at least 16 (kheap.h). */
        uintptr_t align = class_align(sizes[i]);
        CHECK(((uintptr_t)p[i] & (align - 1)) == 0, "sampled %zu at %p is not %zu-aligned",
              sizes[i], (void *)p[i], (size_t)align);
        CHECK(kheap_usable_size(t.h, p[i]) == sizes[i], "usable %zu of a sampled %zu",
              kheap_usable_size(t.h, p[i]), sizes[i]);
        for (size_t k = 0; k < sizes[i]; k++)
            CHECK(p[i][k] == 0, "sampled block of %zu has stale byte %zu", sizes[i], k);
        memset(p[i], 0x5a, sizes[i]);
        bool start = ((uintptr_t)p[i] & (PAGE - 1)) == 0;
        bool end = at_page_end(p[i], sizes[i]) && (!start || sizes[i] >= PAGE - 15);
        CHECK(start || end, "block of %zu at %p is at neither end of a page", sizes[i],
              (void *)p[i]);
        ends += end && !start;
        starts += start && !end;
    }
    CHECK(ends >= N / 2 - 1 && starts >= N / 2 - 1, "%d at the end, %d at the start", ends,
          starts);
    struct kheap_stats s = kt_stats(t.h);
    CHECK(s.sampled_live == N && s.sampled_count == N, "%zu live of %llu sampled, want %d",
          s.sampled_live, (unsigned long long)s.sampled_count, N);
    size_t want = 0;
    for (int i = 0; i < N; i++)
        want += sizes[i];
    CHECK(s.used_bytes - before.used_bytes == want, "used grew by %zu, want %zu",
          s.used_bytes - before.used_bytes, want);
    CHECK(s.allocation_count - before.allocation_count == N, "allocations counted");
    heap_whole(t.h, "sampled blocks live");
    /* Bigger than a page: never sampled. */
    void *big = kheap_alloc(t.h, KHEAP_PAGE_SIZE + 1);
    CHECK(big && kt_stats(t.h).sampled_count == N, "a block over a page was sampled");
    kheap_free(t.h, big);
    for (int i = 0; i < N; i++)
        kheap_free(t.h, p[i]);
    s = kt_stats(t.h);
    CHECK(s.sampled_live == 0 && s.used_bytes == before.used_bytes, "%zu live, used %zu",
          s.sampled_live, s.used_bytes);
    const void *at;
    const char *msg = kheap_check_quiescent(t.h, &at);
    CHECK(!msg, "quiescent: %s at %p", msg, at);
    kt_heap_close(&t);
}

/* Two blocks in a row: one against its page's end, one against its
 * start. */
static void two_blocks(kheap_t *h, size_t size, unsigned char **at_end, unsigned char **at_start)
{
    unsigned char *a = kheap_alloc(h, size), *b = kheap_alloc(h, size);
    CHECK(a && b, "alloc");
    if (((uintptr_t)a & (PAGE - 1)) == 0) {
        unsigned char *x = a;
        a = b;
        b = x;
    }
    CHECK(at_page_end(a, size) && ((uintptr_t)b & (PAGE - 1)) == 0,
          "blocks %p and %p are not one at each end", (void *)a, (void *)b);
    *at_end = a;
    *at_start = b;
}

TEST(faults_reported)
{
    struct kt_heap t;
    open_sampled(&t);
    unsigned char *e, *s;
    two_blocks(t.h, 200, &e, &s);
    /* Past the end of the block at its page's end: the next page. */
    uintptr_t next = kh_round_page((uintptr_t)e + 200);
    expect_fault(t.h, (void *)(next + 3), KHEAP_REPORT_OVERFLOW, e, 200, "overflow");
    /* Before the start of the block at its page's start. */
    expect_fault(t.h, s - 1, KHEAP_REPORT_UNDERFLOW, s, 200, "underflow");
    /* After free: the page itself. */
    kheap_free(t.h, e);
    CHECK(kt_reports() == 0, "a clean free reported %s", kt_report_kind_name(kt_last_report().kind));
    expect_fault(t.h, e + 10, KHEAP_REPORT_USE_AFTER_FREE, e, 200, "use after free");
    kheap_free(t.h, s);
    expect_fault(t.h, s + 199, KHEAP_REPORT_USE_AFTER_FREE, s, 200, "use after free at the start");
    close_sampled(&t, "after the faults");
}

/* A small overflow or underflow stays in the page: the fill finds it at
 * free, after the block is freed (the heap stays whole). A zero-size
 * block has no bytes to fill: its page is never opened. */
TEST(fill_checked_at_free)
{
    struct kt_heap t;
    open_sampled(&t);
    unsigned char *e, *s;
    two_blocks(t.h, 40, &e, &s);
    s[40] = 1; /* inside s's page, past its end */
    kheap_free(t.h, s);
    expect_report(KHEAP_REPORT_OVERFLOW, s, 40, s + 40, "overflow at free");
    e[-5] = 1; /* inside e's page, before its start */
    kheap_free(t.h, e);
    expect_report(KHEAP_REPORT_UNDERFLOW, e, 40, e - 5, "underflow at free");
    /* A zero-size block: live, of usable size 0, reallocated and freed
     * from any context like another; its page stays shut, so any access
     * through it faults. */
    unsigned char *z = kheap_alloc(t.h, 0);
    CHECK(z && kt_stats(t.h).sampled_live == 1, "malloc(0) not sampled");
    CHECK(kheap_usable_size(t.h, z) == 0 && kt_reports() == 0, "usable size of a sampled "
          "zero-size block: %zu, %lu reports", kheap_usable_size(t.h, z), kt_reports());
    unsigned char *z2 = kheap_realloc(t.h, z, 10);
    CHECK(z2 && z2 != z && kt_reports() == 0, "realloc of a sampled zero-size block");
    kheap_free(t.h, z2);
    z = kheap_alloc(t.h, 0);
    kheap_free_flags(t.h, z, KHEAP_NOLOCK);
    kheap_reclaim(t.h);
    CHECK(kt_stats(t.h).sampled_live == 0 && kt_reports() == 0,
          "KHEAP_NOLOCK free of a sampled zero-size block: %zu live, %lu reports",
          kt_stats(t.h).sampled_live, kt_reports());
    z = kheap_alloc(t.h, 0);
    expect_fault(t.h, z + 3, KHEAP_REPORT_OVERFLOW, z, 0, "access through a zero-size block");
    kheap_free(t.h, z);
    expect_fault(t.h, z, KHEAP_REPORT_USE_AFTER_FREE, z, 0, "access through a freed zero-size block");
    struct kheap_stats st = kt_stats(t.h);
    CHECK(st.sampled_live == 0, "%zu sampled blocks still live", st.sampled_live);
    close_sampled(&t, "after the damaged frees");
}

TEST(bad_frees)
{
    struct kt_heap t;
    open_sampled(&t);
    unsigned char *e, *s;
    two_blocks(t.h, 64, &e, &s);
    struct kheap_stats before = kt_stats(t.h);
    kheap_free(t.h, e + 16);
    expect_report(KHEAP_REPORT_INTERIOR, e + 16, 0, NULL, "interior");
    kheap_free(t.h, (void *)kh_round_page((uintptr_t)e + 64));
    CHECK(kt_reports() == 1, "a guard page's address freed: %lu reports", kt_reports());
    kt_reports_reset();
    CHECK(kheap_usable_size(t.h, s + 8) == 0, "usable size of an interior pointer");
    expect_report(KHEAP_REPORT_INTERIOR, s + 8, 0, NULL, "usable size, interior");
    struct kheap_stats mid = kt_stats(t.h);
    CHECK(mid.free_count == before.free_count && mid.sampled_live == 2, "refused frees counted");
    kheap_free(t.h, e);
    CHECK(kt_reports() == 0, "good free reported");
    kheap_free(t.h, e);
    expect_report(KHEAP_REPORT_DOUBLE_FREE, e, 0, NULL, "double free");
    CHECK(kheap_realloc(t.h, e, 10) == NULL, "realloc of a freed sampled block");
    expect_report(KHEAP_REPORT_DOUBLE_FREE, e, 0, NULL, "realloc after free");
    /* A cache's free of a sampled kmalloc block. */
    kheap_cache_t *c = kheap_cache_create(t.h, "guard-test", 64, 0, NULL, NULL);
    CHECK(c, "cache");
    kheap_cache_free(c, s);
    CHECK(kt_reports() == 1 && kt_last_report().kind == KHEAP_REPORT_WRONG_CACHE,
          "cache free of a sampled block: %lu reports, %s", kt_reports(),
          kt_report_kind_name(kt_last_report().kind));
    kt_reports_reset();
    kheap_free(t.h, s);
    CHECK(kt_reports() == 0, "good free reported");
    CHECK(kheap_cache_destroy(c) == 0, "destroy");
    struct kheap_stats after = kt_stats(t.h);
    CHECK(after.sampled_live == 0 && after.free_count == before.free_count + 2,
          "%zu live, %llu frees", after.sampled_live,
          (unsigned long long)(after.free_count - before.free_count));
    close_sampled(&t, "after the bad frees");
}

TEST(realloc_moves)
{
    struct kt_heap t;
    open_sampled(&t);
    unsigned char *p = kheap_alloc(t.h, 300);
    CHECK(p && kheap_usable_size(t.h, p) == 300, "sampled");
    for (int i = 0; i < 300; i++)
        p[i] = (unsigned char)i;
    unsigned char *q = kheap_realloc(t.h, p, 200);
    CHECK(q && q != p, "a sampled block shrunk in place");
    for (int i = 0; i < 200; i++)
        CHECK(q[i] == (unsigned char)i, "byte %d lost", i);
    expect_fault(t.h, p, KHEAP_REPORT_USE_AFTER_FREE, p, 300, "stale pointer after realloc");
    unsigned char *r = kheap_realloc(t.h, q, 5000);
    CHECK(r && r != q, "realloc to 5000");
    for (int i = 0; i < 200; i++)
        CHECK(r[i] == (unsigned char)i, "byte %d lost growing", i);
    kheap_free(t.h, r);
    close_sampled(&t, "after realloc");
}

/* KHEAP_GUARD_SLOTS blocks at most; the slot freed longest ago is the
 * next one used, so a freed page stays shut while the others are used. */
TEST(slots_and_reuse)
{
    struct kt_heap t;
    kt_heap_open(&t, HEAP_SIZE);
    CHECK(kheap_set_sample(t.h, 1) == 0, "sampling on");
    enum { N = KHEAP_GUARD_SLOTS };
    void *p[N];
    /* Sampled blocks fill no magazine: each of these misses. */
    for (int i = 0; i < N; i++)
        CHECK((p[i] = kheap_alloc(t.h, 48)) != NULL, "alloc %d", i);
    CHECK(kt_stats(t.h).sampled_live == N, "%zu live sampled blocks, want %d",
          kt_stats(t.h).sampled_live, N);
    uintptr_t page0 = (uintptr_t)p[0] & ~(PAGE - 1), page1 = (uintptr_t)p[1] & ~(PAGE - 1);
    kheap_free(t.h, p[0]);
    p[0] = kheap_alloc(t.h, 48); /* the only free slot: p[0]'s */
    CHECK(((uintptr_t)p[0] & ~(PAGE - 1)) == page0, "the one free slot was not reused");
    /* Every slot taken: allocations go on as usual. */
    void *more[16];
    for (int i = 0; i < 16; i++)
        CHECK((more[i] = kheap_alloc(t.h, 48)) != NULL, "alloc past the slots");
    CHECK(kt_stats(t.h).sampled_live == N, "%zu live sampled blocks with the slots full",
          kt_stats(t.h).sampled_live);
    for (int i = 0; i < 16; i++)
        kheap_free(t.h, more[i]);
    for (int i = 0; i < N; i++)
        kheap_free(t.h, p[i]);
    /* The slot freed longest ago comes first (p[0]'s, then p[1]'s); a
     * class whose magazine is empty misses, so is sampled. */
    void *a = kheap_alloc(t.h, 200), *b = kheap_alloc(t.h, 200);
    CHECK(a && ((uintptr_t)a & ~(PAGE - 1)) == page0, "not the slot freed first");
    CHECK(b && ((uintptr_t)b & ~(PAGE - 1)) == page1, "not the slot freed second");
    kheap_free(t.h, a);
    kheap_free(t.h, b);
    CHECK(kt_stats(t.h).sampled_live == 0, "live after freeing all");
    heap_whole(t.h, "after the slots cycle");
    kt_heap_close(&t);
}

/* One allocation in N: the countdown runs on misses, so the count is
 * about allocations / N (deterministic for one thread). */
TEST(rate)
{
    struct kt_heap t;
    kt_heap_open(&t, HEAP_SIZE);
    CHECK(kheap_set_sample(t.h, 500) == 0, "sampling on");
    static void *p[256];
    size_t allocs = 0;
    for (int round = 0; round < 400; round++) {
        size_t size = 16 + (size_t)(round % 7) * 48;
        for (int i = 0; i < 256; i++, allocs++)
            CHECK((p[i] = kheap_alloc(t.h, size)) != NULL, "alloc");
        for (int i = 0; i < 256; i++)
            kheap_free(t.h, p[i]);
    }
    struct kheap_stats s = kt_stats(t.h);
    printf("# %llu of %zu allocations sampled at one in 500\n",
           (unsigned long long)s.sampled_count, allocs);
    CHECK(s.sampled_count >= allocs / 500 / 4 && s.sampled_count <= allocs / 500 * 4,
          "%llu sampled of %zu at one in 500", (unsigned long long)s.sampled_count, allocs);
    CHECK(kheap_set_sample(t.h, 0) == 0, "off");
    uint64_t was = s.sampled_count;
    for (int i = 0; i < 2000; i++)
        kheap_free(t.h, kheap_alloc(t.h, 16 + (size_t)(i % 100) * 16));
    CHECK(kt_stats(t.h).sampled_count == was, "sampled with sampling off");
    kt_heap_close(&t);
}

TEST(nolock_free_deferred)
{
    struct kt_heap t;
    open_sampled(&t);
    void *p = kheap_alloc(t.h, 3), *q = kheap_alloc(t.h, 700);
    CHECK(kt_stats(t.h).sampled_live == 2, "sampled");
    kheap_free_flags(t.h, p, KHEAP_NOLOCK);
    kheap_free_flags(t.h, q, KHEAP_NOLOCK);
    kheap_free_flags(t.h, q, KHEAP_NOLOCK); /* a double free, found later */
    kheap_reclaim(t.h);
    CHECK(kt_stats(t.h).sampled_live == 0, "deferred sampled blocks not freed");
    CHECK(kt_reports() == 1 && kt_last_report().kind == KHEAP_REPORT_DOUBLE_FREE &&
              kt_last_report().addr == q,
          "%lu reports, %s at %p", kt_reports(), kt_report_kind_name(kt_last_report().kind),
          kt_last_report().addr);
    kt_reports_reset();
    close_sampled(&t, "after deferred frees");
}

/* Threads allocating and freeing with sampling on: every block keeps its
 * contents, the heap stays whole, and the counts come back to zero. */
struct worker {
    kheap_t *h;
    uint64_t seed;
    int bad;
};
static void *work(void *arg)
{
    struct worker *w = arg;
    uint64_t r = w->seed;
    enum { LIVE = 64 };
    unsigned char *p[LIVE] = {0};
    size_t n[LIVE] = {0};
    long ops = kt_env_long("KHEAP_TEST_SMALL", 0) ? 3000 : 30000;
    for (long op = 0; op < ops; op++) {
        int i = (int)kt_rand_below(&r, LIVE);
        if (p[i]) {
            for (size_t k = 0; k < n[i]; k += 61)
                w->bad += p[i][k] != (unsigned char)(k ^ (size_t)i);
            kheap_free(w->h, p[i]);
            p[i] = NULL;
        } else {
            n[i] = 1 + kt_rand_below(&r, 4096);
            p[i] = kheap_alloc(w->h, n[i]);
            if (!p[i]) {
                w->bad++;
                continue;
            }
            for (size_t k = 0; k < n[i]; k += 61)
                p[i][k] = (unsigned char)(k ^ (size_t)i);
        }
    }
    for (int i = 0; i < LIVE; i++)
        kheap_free(w->h, p[i]);
    return NULL;
}

TEST(threads)
{
    struct kt_heap t;
    kt_heap_open(&t, (size_t)32 << 20);
    CHECK(kheap_set_sample(t.h, 7) == 0, "sampling on");
    pthread_t th[4];
    struct worker w[4];
    uint64_t seed = kt_seed();
    for (int i = 0; i < 4; i++) {
        w[i] = (struct worker){t.h, kt_rand_seed(seed, (uint64_t)i), 0};
        CHECK(pthread_create(&th[i], NULL, work, &w[i]) == 0, "thread");
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(!w[i].bad, "thread %d saw %d bad blocks", i, w[i].bad);
    }
    struct kheap_stats s = kt_stats(t.h);
    CHECK(s.sampled_count > 0 && s.sampled_live == 0, "%llu sampled, %zu live",
          (unsigned long long)s.sampled_count, s.sampled_live);
    kheap_reclaim(t.h);
    const void *at;
    const char *msg = kheap_check_quiescent(t.h, &at);
    CHECK(!msg, "quiescent: %s at %p", msg, at);
    kt_heap_close(&t);
}

/* kheap_fini opens the pool's pages again: the memory is the caller's. */
TEST(fini_opens_the_pool)
{
    struct kt_heap t;
    kt_heap_open(&t, HEAP_SIZE);
    CHECK(kheap_set_sample(t.h, 1) == 0, "sampling on");
    void *p = kheap_alloc(t.h, 64);
    kheap_free(t.h, p);
    kheap_fini(t.h);
    memset(t.mem, 0, t.size); /* faults if a page stayed shut */
    kt_unmap(t.mem, t.size);
}

/* A real fault, in a child: kheap_hosted_catch_faults's handler reports
 * it through the hook, which ends the child with a code; a fault outside
 * the pool still kills with SIGSEGV. */
static int report_pipe = -1;
static void report_to_parent(const struct kheap_report *r, unsigned long nth)
{
    (void)nth;
    char line[128];
    int n = snprintf(line, sizeof line, "%s %p %zu %p", kt_report_kind_name(r->kind), r->addr,
                     r->size, r->where);
    if (write(report_pipe, line, (size_t)n) != n)
        _exit(2);
    _exit(3);
}

static int child_fault(kheap_t *h, int how, char *out, size_t len)
{
    int fd[2];
    CHECK(pipe(fd) == 0, "pipe");
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        close(fd[0]);
        report_pipe = fd[1];
        kt_capture_reports(report_to_parent);
        if (kheap_hosted_catch_faults(h))
            _exit(4);
        volatile unsigned char *e, *s;
        two_blocks(h, 128, (unsigned char **)&e, (unsigned char **)&s);
        if (how == 0)
            e[128 + 20] = 1; /* past the page: the guard page */
        else if (how == 1)
            (void)s[-16];
        else if (how == 2) {
            kheap_free(h, (void *)e);
            (void)e[0];
        } else if (how == 3) {
            volatile uintptr_t nowhere = 8; /* not the heap's */
            *(volatile int *)nowhere = 1;
        } else if (how == 4) {
            raise(SIGSEGV); /* sent, not a fault: still the default action */
        } else {
            kheap_hosted_forget_faults(h); /* no longer kheap's to report */
            e[128 + 20] = 1;
        }
        _exit(0);
    }
    close(fd[1]);
    ssize_t n = read(fd[0], out, len - 1);
    out[n > 0 ? n : 0] = 0;
    close(fd[0]);
    int st;
    CHECK(waitpid(pid, &st, 0) == pid, "wait");
    return st;
}

TEST(real_faults)
{
#if KHEAP_VALGRIND
    printf("# skipped: a fork under valgrind\n");
    return;
#endif
    struct kt_heap t;
    kt_heap_open(&t, HEAP_SIZE);
    CHECK(kheap_set_sample(t.h, 1) == 0, "sampling on");
    static const char *const want[] = {"OVERFLOW", "UNDERFLOW", "USE_AFTER_FREE"};
    for (int how = 0; how < 3; how++) {
        char out[256];
        int st = child_fault(t.h, how, out, sizeof out);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 3, "case %d: child status %#x, report '%s'",
              how, st, out);
        CHECK(!strncmp(out, want[how], strlen(want[how])) && out[strlen(want[how])] == ' ',
              "case %d: reported '%s', want %s", how, out, want[how]);
        printf("# fault case %d: %s\n", how, out);
    }
    char out[256];
    int st;
    /* Not kheap's: a fault outside the pool, a SIGSEGV sent by raise, a
     * fault in the pool of a heap taken out again. The handler that was
     * there before gets them: none (the default action, SIGSEGV), or a
     * sanitizer's, which ends the process its own way. */
    static const char *const other[] = {"a fault outside the pool", "raise(SIGSEGV)",
                                        "a fault after kheap_hosted_forget_faults"};
    for (int how = 3; how <= 5; how++) {
        st = child_fault(t.h, how, out, sizeof out);
        CHECK(!out[0] && !(WIFEXITED(st) && (WEXITSTATUS(st) == 0 || WEXITSTATUS(st) == 3)),
              "%s: status %#x, report '%s'", other[how - 3], st, out);
        printf("# %s: %s %d\n", other[how - 3], WIFSIGNALED(st) ? "signal" : "exit",
               WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
    }
    kt_heap_close(&t);
}

int main(void)
{
    kt_make_classes();
    RUN(off_until_asked);
    RUN(sampled_blocks);
    RUN(faults_reported);
    RUN(fill_checked_at_free);
    RUN(bad_frees);
    RUN(realloc_moves);
    RUN(slots_and_reuse);
    RUN(rate);
    RUN(nolock_free_deferred);
    RUN(threads);
    RUN(fini_opens_the_pool);
    RUN(real_faults);
    return harness_done();
}
