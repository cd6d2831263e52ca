/*
 * limits.c - run under an address-space limit (tests/malloc/run.sh sets
 * `ulimit -v`): malloc of large and small blocks runs into the limit,
 * returns NULL with errno ENOMEM, and the program carries on: it frees,
 * allocates again, and exits normally.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "harness.h"

#define MAXB 4096
static void *blocks[MAXB];

TEST(limit_is_set)
{
    struct rlimit rl;
    CHECK(getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY,
          "no address-space limit: run under `ulimit -v`");
}

/* Large blocks take the address space (each written on one page only, so
 * the test needs little memory); then small blocks fill what is left. */
static unsigned nlarge;

TEST(large_blocks_until_enomem)
{
    unsigned n = 0;
    errno = 0;
    while (n < MAXB && (blocks[n] = malloc(8 << 20)) != NULL) {
        memset(blocks[n], 1, 4096);
        n++;
    }
    CHECK(n < MAXB, "32 GiB fit under the limit");
    CHECK(errno == ENOMEM, "malloc returned NULL with errno %d", errno);
    printf("# %u blocks of 8 MiB before ENOMEM\n", n);
    CHECK(n >= 8, "only %u blocks of 8 MiB fit", n);
    /* Carry on: free half, allocate again. */
    for (unsigned i = 0; i < n; i += 2)
        free(blocks[i]), blocks[i] = NULL;
    for (unsigned i = 0; i < n; i += 2) {
        blocks[i] = malloc(8 << 20);
        CHECK(blocks[i] != NULL, "after freeing, malloc %u of 8 MiB failed", i);
    }
    nlarge = n;
}

TEST(small_blocks_until_enomem)
{
    /* A chain through the blocks keeps them without another array. */
    void **head = NULL;
    size_t count = 0;
    errno = 0;
    for (;;) {
        void **p = malloc(4000);
        if (!p)
            break;
        *p = head;
        head = p;
        count++;
    }
    CHECK(errno == ENOMEM, "small malloc returned NULL with errno %d", errno);
    printf("# then %zu blocks of 4000 bytes before ENOMEM\n", count);
    errno = 0;
    void *q = calloc(1000, 1000);
    CHECK(q == NULL && errno == ENOMEM, "calloc at the limit = %p errno %d", q, errno);
    errno = 0;
    q = realloc(head, 100 << 20);
    CHECK(q == NULL && errno == ENOMEM, "realloc at the limit = %p errno %d",
          q, errno);
    while (head) {
        void **next = *head;
        free(head);
        head = next;
    }
    for (unsigned i = 0; i < nlarge; i++)
        free(blocks[i]), blocks[i] = NULL;
    q = malloc(64 << 20);
    CHECK(q != NULL, "malloc after freeing everything failed");
    free(q);
}

int main(void)
{
    RUN(limit_is_set);
    RUN(large_blocks_until_enomem);
    RUN(small_blocks_until_enomem);
    return harness_done();
}
