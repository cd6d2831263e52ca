/*
 * A program that uses installed kheap the way a user would: built only
 * with the flags pkg-config or CMake give it. Prints "ok - " lines.
 * Argument: the version expected (include/kheap.h of the source tree).
 * Prints the page size it was compiled with, so the caller can check
 * that build options reach users.
 */
#include <stdio.h>
#include <string.h>

#include <kheap.h>

struct node {
    struct node *next;
    int value;
};

static int constructed;

static void node_ctor(void *obj)
{
    struct node *n = obj;
    n->next = NULL;
    n->value = -1;
    constructed++;
}

static unsigned char arena[4u << 20] __attribute__((aligned(4096)));

static int failures;

static void check(int cond, const char *what)
{
    printf("%s - consumer: %s\n", cond ? "ok" : "not ok", what);
    failures += !cond;
}

int main(int argc, char **argv)
{
    check(argc < 2 || strcmp(argv[1], KHEAP_VERSION) == 0,
          "the installed kheap.h is this version");

    printf("# page size %zu\n", (size_t)KHEAP_PAGE_SIZE);
    kheap_t *heap;
    int err = kheap_init(&heap, arena, sizeof arena);
    check(err == KHEAP_OK, "kheap_init over a 4 MiB array");
    if (err) {
        printf("# %s\n", kheap_strerror(err));
        return 1;
    }
    kheap_cache_t *nodes = kheap_cache_create(heap, "node", sizeof(struct node), 0,
                                              node_ctor, NULL);
    struct node *list = NULL;
    for (int i = 0; nodes && i < 1000; i++) {
        struct node *n = kheap_cache_alloc(nodes);
        if (!n || n->value != -1)
            break;
        n->value = i;
        n->next = list;
        list = n;
    }
    int count = 0;
    while (list) {
        struct node *next = list->next;
        count += list->value >= 0;
        list->next = NULL;
        list->value = -1;
        kheap_cache_free(nodes, list);
        list = next;
    }
    check(nodes && count == 1000 && constructed >= 1000,
          "an object cache with a constructor: 1000 objects");
    check(nodes && kheap_cache_destroy(nodes) == KHEAP_OK, "the cache is destroyed");

    char *p = kmalloc(300);
    check(p && ksize(p) >= 300, "kmalloc on the default heap");
    kfree(p);

    struct kheap_stats st;
    kheap_get_stats(heap, &st);
    check(st.used_bytes == 0 && kheap_check(heap, NULL) == NULL,
          "statistics and kheap_check agree the heap is empty and whole");
    return failures != 0;
}
