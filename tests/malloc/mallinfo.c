/*
 * mallinfo.c - glibc's malloc extensions under libkheap.so report kheap's
 * figures: each check compares them with what this program allocated
 * (LD_PRELOAD; glibc's own versions would report its unused heap).
 *   mallinfo            every test
 *   mallinfo keepcost   only frees 4 x 32 MiB and prints "keepcost N"
 *   mallinfo guarded    frees 4 runs of 8 MiB kept apart by live blocks
 *                       and prints "keepcost N"
 * (tests/malloc/run.sh runs the last two under the purge environment
 * variables)
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

/* Blocks live here, so the compiler cannot drop a malloc/free pair. */
static void *volatile held[20000];

#define MIB ((size_t)1 << 20)

/* Write n bytes at p so that the stores stay (a memset right before a
 * free is otherwise dead to the compiler). */
static void touch(void *p, int c, size_t n)
{
    memset(p, c, n);
    __asm__ volatile("" : : "r"(p) : "memory");
}

/* 4 blocks of 32 MiB written and freed; returns keepcost after. */
static size_t free_128mib(void)
{
    for (int i = 0; i < 4; i++) {
        held[i] = malloc(32 * MIB);
        if (held[i])
            touch(held[i], i + 1, 32 * MIB);
    }
    for (int i = 0; i < 4; i++)
        free(held[i]);
    return mallinfo2().keepcost;
}

TEST(small_blocks_in_uordblks)
{
    enum { N = 2000, SIZE = 200, CLASS = 208 };
    printf("# stdout's buffer is allocated before the figures are taken\n");
    struct mallinfo2 a = mallinfo2();
    for (int i = 0; i < N; i++) {
        held[i] = malloc(SIZE);
        CHECK(held[i] != NULL, "malloc %d", i);
    }
    struct mallinfo2 b = mallinfo2();
    long d = (long)b.uordblks - (long)a.uordblks;
    printf("# %d blocks of %d bytes: uordblks +%ld (arena %zu, fordblks %zu)\n", N, SIZE, d,
           b.arena, b.fordblks);
    /* Usable sizes: each block holds its class, 208 bytes. */
    CHECK(d == (long)N * CLASS, "uordblks grew by %ld, expected %d", d, N * CLASS);
    CHECK(b.arena == b.uordblks + b.fordblks, "arena %zu != uordblks %zu + fordblks %zu", b.arena,
          b.uordblks, b.fordblks);
    CHECK(b.arena >= (size_t)N * CLASS, "arena %zu below the blocks' bytes", b.arena);
    CHECK(b.hblks == a.hblks && b.hblkhd == a.hblkhd, "small blocks counted as large");
    CHECK(b.usmblks >= b.uordblks, "usmblks (peak) %zu below uordblks %zu", b.usmblks, b.uordblks);
    for (int i = 0; i < N; i++)
        free(held[i]);
    struct mallinfo2 c = mallinfo2();
    CHECK(c.uordblks == a.uordblks, "uordblks %zu after freeing, %zu before", c.uordblks,
          a.uordblks);
    CHECK(c.smblks > 0 && c.fsmblks >= c.smblks * 16 && c.fsmblks <= c.smblks * 32768,
          "freed blocks cached: smblks %zu, fsmblks %zu", c.smblks, c.fsmblks);
}

TEST(large_blocks_in_hblks)
{
    struct mallinfo2 a = mallinfo2();
    for (int i = 0; i < 3; i++)
        held[i] = malloc(MIB + 100);
    struct mallinfo2 b = mallinfo2();
    /* 1 MiB + 100 bytes is 257 pages. */
    CHECK(b.hblks == a.hblks + 3, "hblks %zu -> %zu", a.hblks, b.hblks);
    CHECK(b.hblkhd == a.hblkhd + 3 * 257 * 4096, "hblkhd %zu -> %zu", a.hblkhd, b.hblkhd);
    CHECK(b.uordblks == a.uordblks, "large blocks counted in uordblks");
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    struct mallinfo m = mallinfo(); /* deprecated by glibc, still called */
#pragma GCC diagnostic pop
    CHECK(m.hblks == (int)b.hblks && m.hblkhd == (int)b.hblkhd && m.uordblks == (int)b.uordblks,
          "mallinfo %d %d %d, mallinfo2 %zu %zu %zu", m.hblks, m.hblkhd, m.uordblks, b.hblks,
          b.hblkhd, b.uordblks);
    for (int i = 0; i < 3; i++)
        free(held[i]);
    struct mallinfo2 c = mallinfo2();
    CHECK(c.hblks == a.hblks && c.hblkhd == a.hblkhd, "hblks %zu hblkhd %zu after free", c.hblks,
          c.hblkhd);
    CHECK(c.keepcost >= 3 * 257 * 4096, "freed pages not in keepcost: %zu", c.keepcost);
}

TEST(trim_gives_memory_back)
{
    /* 20 MiB of 1000-byte objects, then 40 MiB in one block, all freed:
     * below the purge slack, so their pages (the emptied slabs go back to
     * the page layer) stay resident until malloc_trim. */
    enum { N = 20000 };
    for (int i = 0; i < N; i++) {
        held[i] = malloc(1000);
        touch(held[i], 1, 1000);
    }
    void *big = malloc(40 * MIB);
    CHECK(big != NULL, "malloc 40 MiB");
    touch(big, 2, 40 * MIB);
    held[0] = big;
    free(big);
    held[0] = NULL;
    for (int i = 1; i < N; i++)
        free(held[i]);
    struct mallinfo2 a = mallinfo2();
    long r0 = kt_rss_kib();
    /* Nothing allocates between the two calls: the second finds
     * nothing to give back. */
    int t1 = malloc_trim(0);
    struct mallinfo2 b = mallinfo2();
    int t2 = malloc_trim(0);
    long r1 = kt_rss_kib();
    printf("# before malloc_trim: RSS %ld KiB, arena %zu, keepcost %zu; after: RSS %ld KiB, "
           "arena %zu, keepcost %zu; returns %d then %d\n",
           r0, a.arena, a.keepcost, r1, b.arena, b.keepcost, t1, t2);
    CHECK(a.keepcost >= 40 * MIB, "keepcost %zu before trimming", a.keepcost);
    CHECK(t1 == 1, "malloc_trim returned %d with %zu bytes to give back", t1, a.keepcost);
    CHECK(r0 - r1 >= 50 * 1024, "RSS fell by only %ld KiB", r0 - r1);
    CHECK(b.arena <= a.arena, "arena grew: %zu -> %zu", a.arena, b.arena);
    CHECK(b.keepcost == 0, "keepcost %zu after trimming", b.keepcost);
    CHECK(t2 == 0, "second malloc_trim returned %d", t2);
}

TEST(mallopt_trim_threshold)
{
    CHECK(mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1, "M_TRIM_THRESHOLD 1 GiB refused");
    size_t kept = free_128mib();
    malloc_trim(0);
    CHECK(mallopt(M_TRIM_THRESHOLD, 0) == 1, "M_TRIM_THRESHOLD 0 refused");
    size_t purged = free_128mib();
    CHECK(mallopt(M_TRIM_THRESHOLD, 64 << 20) == 1, "M_TRIM_THRESHOLD 64 MiB refused");
    printf("# 128 MiB freed: keepcost %zu with a 1 GiB threshold, %zu with 0\n", kept, purged);
    CHECK(kept >= 128 * MIB, "1 GiB threshold: keepcost %zu", kept);
    CHECK(purged < MIB, "threshold 0: keepcost %zu", purged);
    CHECK(mallopt(M_TRIM_THRESHOLD, -1) == 0, "negative threshold accepted");
    CHECK(mallopt(M_TOP_PAD, 4096) == 0 && mallopt(M_MMAP_THRESHOLD, 1 << 20) == 0 &&
              mallopt(M_ARENA_MAX, 2) == 0 && mallopt(M_PERTURB, 1) == 0,
          "an option kheap does not honour returned 1");
}

/* The text of fd 2 while f runs. */
static void capture_stderr(void (*f)(void), char *buf, size_t len)
{
    char path[] = "/tmp/kheap-mallinfo-XXXXXX";
    int fd = mkstemp(path);
    unlink(path);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    f();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    ssize_t n = pread(fd, buf, len - 1, 0);
    buf[n > 0 ? n : 0] = 0;
    close(fd);
}

static size_t field(const char *text, const char *label, int nth)
{
    const char *p = text;
    for (int i = 0; i <= nth && p; i++) {
        p = strstr(p, label);
        if (p && i < nth)
            p += strlen(label);
    }
    if (!p)
        return (size_t)-1;
    p = strchr(p, '=');
    return p ? strtoul(p + 1, NULL, 10) : (size_t)-1;
}

TEST(malloc_stats_on_stderr)
{
    for (int i = 0; i < 100; i++)
        held[i] = malloc(3000);
    held[100] = malloc(5 * MIB);
    char text[4096];
    struct mallinfo2 m = mallinfo2();
    capture_stderr(malloc_stats, text, sizeof text);
    size_t inuse = field(text, "in use bytes", 0), total = field(text, "in use bytes", 1);
    size_t sys = field(text, "system bytes", 0);
    CHECK(strncmp(text, "Arena 0:\n", 9) == 0, "output: %s", text);
    CHECK(inuse == m.uordblks && total == m.uordblks + m.hblkhd && sys == m.arena,
          "in use %zu / %zu, system %zu; mallinfo2 %zu %zu %zu", inuse, total, sys, m.uordblks,
          m.hblkhd, m.arena);
    CHECK(inuse >= 100 * 3000 && total >= 100 * 3000 + 5 * MIB, "in use %zu, total %zu", inuse,
          total);
    for (int i = 0; i <= 100; i++)
        free(held[i]);
}

TEST(malloc_info_xml)
{
    for (int i = 0; i < 7; i++)
        held[i] = malloc(2 * MIB);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    CHECK(f != NULL, "open_memstream");
    CHECK(malloc_info(0, f) == 0, "malloc_info failed");
    fclose(f);
    struct mallinfo2 m = mallinfo2();
    char mmap_line[128];
    snprintf(mmap_line, sizeof mmap_line, "<total type=\"mmap\" count=\"%zu\" size=\"%zu\"/>",
             m.hblks, m.hblkhd);
    CHECK(strncmp(buf, "<malloc version=\"1\">\n<heap nr=\"0\">\n<sizes>\n", 41) == 0,
          "start: %.60s", buf);
    CHECK(len > 10 && strcmp(buf + len - 10, "</malloc>\n") == 0, "end: %s", buf + len - 20);
    CHECK(m.hblks >= 7 && strstr(buf, mmap_line), "no '%s' in %s", mmap_line, buf);
    /* The <size> counts add up to the "rest" total. */
    size_t count = 0, rest = 0;
    for (const char *p = strstr(buf, "<size "); p; p = strstr(p + 1, "<size "))
        count += strtoul(strstr(p, "count=\"") + 7, NULL, 10);
    const char *r = strstr(buf, "<total type=\"rest\" count=\"");
    CHECK(r != NULL, "no rest total");
    rest = strtoul(r + 26, NULL, 10);
    CHECK(count == rest && rest > 0, "sizes count %zu, rest %zu", count, rest);
    free(buf);
    for (int i = 0; i < 7; i++)
        free(held[i]);
    errno = 0;
    CHECK(malloc_info(1, stdout) == -1 && errno == EINVAL, "options 1 accepted");
}

/* 4 runs of 8 MiB, each followed by a live 64 KiB block so the freed
 * runs cannot coalesce, written and freed; returns keepcost after. */
static size_t free_guarded(void)
{
    for (int i = 0; i < 4; i++) {
        held[2 * i] = malloc(8 * MIB);
        held[2 * i + 1] = malloc(64 << 10);
        if (held[2 * i])
            touch(held[2 * i], 1, 8 * MIB);
    }
    for (int i = 0; i < 4; i++)
        free(held[2 * i]);
    return mallinfo2().keepcost;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "keepcost") == 0) {
        printf("keepcost %zu\n", free_128mib());
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "guarded") == 0) {
        printf("keepcost %zu\n", free_guarded());
        return 0;
    }
    RUN(small_blocks_in_uordblks);
    RUN(large_blocks_in_hblks);
    RUN(mallopt_trim_threshold);
    RUN(trim_gives_memory_back);
    RUN(malloc_stats_on_stderr);
    RUN(malloc_info_xml);
    return harness_done();
}
