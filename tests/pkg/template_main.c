/*
 * The port template of the single-file distribution, used as shipped:
 * built from dist/kheap.c, dist/kheap_port_template.c and this file only
 * (no libc header reaches kheap), with the two functions the template asks
 * the platform for. Checks that the default heap and a heap over a static
 * array work through it, and that a misuse report arrives on the
 * "console" naming the address.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kheap.h"

static char console[4096];
static size_t console_len;
static int failures;

void platform_console_write(const char *s, size_t n);
void platform_halt(void);

void platform_console_write(const char *s, size_t n)
{
    if (n > sizeof console - 1 - console_len)
        n = sizeof console - 1 - console_len;
    memcpy(console + console_len, s, n);
    console_len += n;
    console[console_len] = '\0';
}

void platform_halt(void)
{
    printf("not ok - the template port halted: %s", console);
    exit(1);
}

static void check(int cond, const char *what)
{
    printf("%s - template port: %s\n", cond ? "ok" : "not ok", what);
    if (!cond)
        failures++;
}

static unsigned char arena[1 << 20] __attribute__((aligned(4096)));

int main(void)
{
    /* The default heap (kmalloc names), set up at first use. */
    char *blocks[64];
    int fine = 1;
    for (int i = 0; i < 64; i++) {
        size_t n = (size_t)16 << (i % 12);
        blocks[i] = kmalloc(n);
        if (!blocks[i]) {
            fine = 0;
            break;
        }
        memset(blocks[i], i, n);
    }
    for (int i = 0; fine && i < 64; i++) {
        size_t n = (size_t)16 << (i % 12);
        fine = blocks[i][0] == (char)i && blocks[i][n - 1] == (char)i && ksize(blocks[i]) >= n;
    }
    for (int i = 0; fine && i < 64; i++)
        kfree(blocks[i]);
    check(fine, "kmalloc and kfree of 16 B to 32 KiB on the default heap");

    /* A heap of its own over a static array. */
    kheap_t *heap;
    int err = kheap_init(&heap, arena, sizeof arena);
    check(err == KHEAP_OK, "kheap_init over a 1 MiB array");
    if (err)
        return 1;
    void *p = kheap_alloc(heap, 100);
    void *q = kheap_alloc(heap, 5000);
    check(p && q && kheap_check(heap, NULL) == NULL, "kheap_alloc, then kheap_check finds the heap whole");

    /* A double free: reported on the console with the address, ignored. */
    char want[64];
    snprintf(want, sizeof want, "(%p): ", p);
    kheap_free(heap, p);
    console_len = 0;
    console[0] = '\0';
    kheap_free(heap, p);
    check(strstr(console, "kheap: kheap_free") && strstr(console, want),
          "a double free is reported on the console naming the address");
    printf("# console: %s", console);
    kheap_free(heap, q);
    check(kheap_check(heap, NULL) == NULL, "the heap is whole after the report");

    printf("%s\n", failures ? "# template port: failures" : "# template port: all passed");
    return failures != 0;
}
