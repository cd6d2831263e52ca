/*
 * test_frontier.c - memory the port gives inaccessible (KHEAP_PORT_COMMIT,
 * the hosted port): a region added by growth is opened a step at a time
 * as the page layer hands its pages out (src/core/pages.c, the accessible
 * frontier) and has a gap that is never opened before and after it. A
 * write just past the frontier, or off either end of the region, faults
 * (in a child: SIGSEGV), and ordinary use of every page the heap hands
 * out never does.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "kh_internal.h"

#define PAGE ((size_t)KHEAP_PAGE_SIZE)
#define FIRST ((size_t)4 << 20)
#define GROW ((size_t)16 << 20)
#define BIG ((size_t)8 << 20)



static void whole(kheap_t *h, const char *when)
{
    const void *at = NULL;
    const char *msg = kheap_check(h, &at);
    CHECK(!msg, "%s: kheap_check: %s at %p", when, msg, at);
}

/* A heap on a fixed first region (t), then a block too big for it: the
 * heap grows by a region from the port, which comes inaccessible. */
static struct kh_region *grown(struct kt_heap *t, unsigned char **big)
{
    kt_heap_open(t, FIRST);
    kheap_t *h = t->h;
    CHECK(kheap_set_growable(h, GROW) == KHEAP_OK, "kheap_set_growable%s", "");
    *big = kheap_alloc(h, BIG);
    CHECK(*big != NULL, "a block of %zu bytes after growth", BIG);
    struct kh_region *r = kh_region_of(h, (uintptr_t)*big);
    CHECK(r && r != &h->regions[0] && r->grown, "the block is in a grown region (%p)",
          (void *)r);
    return r;
}

TEST(grown_region_opens_as_used)
{
    struct kt_heap t;
    unsigned char *big;
    struct kh_region *r = grown(&t, &big);
    uintptr_t open_end = r->start + (uintptr_t)r->open * PAGE;
    printf("# grown region: %zu pages, %u open, the block at page %zu\n", r->npages, r->open,
           (size_t)((uintptr_t)big - r->start) / PAGE);
    CHECK(r->open < r->npages, "the whole region is open (%u of %zu pages)", r->open,
          r->npages);
    CHECK(open_end >= (uintptr_t)big + BIG, "the frontier %#lx is below the block's end %#lx",
          (unsigned long)open_end, (unsigned long)((uintptr_t)big + BIG));
    /* Every byte handed out is usable, in this process. */
    memset(big, 0xa5, BIG);
#if KHEAP_VALGRIND
    printf("# faults skipped: a fork under valgrind\n");
#else
    int st = kt_child_write((volatile unsigned char *)open_end);
    CHECK(kt_faulted(st), "a write at the frontier did not fault (status %#x)", st);
    st = kt_child_write((volatile unsigned char *)(open_end - 1));
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "a write below the frontier faulted (%#x)",
          st);
    st = kt_child_write((volatile unsigned char *)(r->base + r->size));
    CHECK(kt_faulted(st), "a write just past the region's end did not fault (status %#x)", st);
    st = kt_child_write((volatile unsigned char *)(r->base - 1));
    CHECK(kt_faulted(st), "a write just before the region did not fault (status %#x)", st);
#endif
    kheap_free(t.h, big);
    whole(t.h, "after the big block");
    kt_heap_close(&t);
}

/* Ordinary use of a grown region to its end: every block written whole,
 * no fault; the frontier moves up in steps and ends at most at the
 * region's end; freed and allocated again. */
TEST(grown_region_used_whole)
{
    struct kt_heap t;
    unsigned char *big;
    struct kh_region *r = grown(&t, &big);
    kheap_free(t.h, big);
    enum { N = 4096 };
    static unsigned char *blk[N];
    size_t n = 0, in_r = 0, sizes[] = {40000, 3000, 100, 300000, 64};
    for (int round = 0; round < 2; round++) {
        /* Until the heap grows again: the first region and the grown one
         * are full. */
        for (n = 0, in_r = 0; n < N; n++) {
            size_t sz = sizes[n % 5];
            blk[n] = kheap_alloc(t.h, sz);
            CHECK(blk[n] != NULL, "round %d: block %zu of %zu bytes", round, n, sz);
            struct kh_region *q = kh_region_of(t.h, (uintptr_t)blk[n]);
            if (q != r && q != &t.h->regions[0]) {
                kheap_free(t.h, blk[n]);
                break;
            }
            memset(blk[n], (int)n, sz);
            in_r += q == r;
        }
        CHECK(in_r > 10, "round %d: %zu blocks in the grown region", round, in_r);
        CHECK(r->open <= r->npages, "frontier %u past the region's %zu pages", r->open,
              r->npages);
        whole(t.h, "grown region used");
        for (size_t i = 0; i < n; i++)
            kheap_free(t.h, blk[i]);
        kheap_reclaim(t.h);
        whole(t.h, "grown region freed");
    }
    printf("# %zu blocks in the grown region, frontier at %u of %zu pages\n", in_r, r->open,
           r->npages);
    kt_heap_close(&t);
}

/* kheap's own blocks are carved at a run's high end (the top of a grown
 * region here, as of the 64 GiB reservation): opened alone, without
 * moving the frontier up to them; the free pages between stay shut; the
 * block is shut again when freed. */
TEST(own_blocks_at_the_top_open_alone)
{
    struct kt_heap t;
    unsigned char *big;
    struct kh_region *r = grown(&t, &big);
    size_t own = (size_t)6 << 20; /* more than the first region holds */
    unsigned char *p = kh_internal_pages(t.h, own, false); /* written whole: zeroed */
    CHECK(p != NULL && kh_region_of(t.h, (uintptr_t)p) == r, "kheap's own pages %p", (void *)p);
    uintptr_t open_end = r->start + (uintptr_t)r->open * PAGE;
    printf("# own block at page %zu of %zu, frontier at %u\n",
           (size_t)((uintptr_t)p - r->start) / PAGE, r->npages, r->open);
    CHECK((uintptr_t)p >= open_end, "the frontier %#lx moved up to kheap's block at %p",
          (unsigned long)open_end, (void *)p);
    memset(p, 0x77, own);
#if !KHEAP_VALGRIND
    int st = kt_child_write(p - 1);
    CHECK(p - 1 < (unsigned char *)open_end || kt_faulted(st),
          "a write into the free pages below kheap's block did not fault (status %#x)", st);
#endif
    kh_internal_pages_free(t.h, p);
#if !KHEAP_VALGRIND
    st = kt_child_write(p + own / 2);
    CHECK(kt_faulted(st), "a write into kheap's freed block did not fault (status %#x)", st);
#endif
    kheap_free(t.h, big);
    whole(t.h, "after kheap's own block");
    kt_heap_close(&t);
}

/* A purge of a grown region's free pages shuts them (the same call as
 * the purge): a write into a purged block's pages faults; the next
 * allocation out of them opens them again. */
TEST(purged_pages_shut_until_reused)
{
    struct kt_heap t;
    unsigned char *big;
    struct kh_region *r = grown(&t, &big);
    memset(big, 0x5a, BIG);
    kheap_free(t.h, big);
    kheap_reclaim(t.h);
    size_t purged = kheap_purge(t.h, 0);
    CHECK(purged >= BIG, "kheap_purge gave back %zu bytes, want %zu at least", purged, BIG);
#if !KHEAP_VALGRIND
    int st = kt_child_write(big + BIG / 2);
    CHECK(kt_faulted(st), "a write into a purged block did not fault (status %#x)", st);
#endif
    unsigned char *again = kheap_alloc(t.h, BIG);
    CHECK(again != NULL, "the block again%s", "");
    memset(again, 0x3c, BIG); /* opened again: no fault */
    CHECK(again[BIG - 1] == 0x3c, "the block again holds what was written%s", "");
    CHECK(kh_region_of(t.h, (uintptr_t)again) == r, "the block again is elsewhere%s", "");
    kheap_free(t.h, again);
    whole(t.h, "after purge and reuse");
    kt_heap_close(&t);
}

int main(void)
{
    RUN(grown_region_opens_as_used);
    RUN(grown_region_used_whole);
    RUN(own_blocks_at_the_top_open_alone);
    RUN(purged_pages_shut_until_reused);
    return harness_done();
}
