/*
 * harness.h - the hosted part of kheap's test support: the TAP-style
 * harness the runner counts, the environment, seeds, mapped regions and
 * heaps on them, the resident size. Includes support.h (the part that also
 * runs on bare metal).
 *
 *   TEST(name) { ... CHECK(cond, "fmt", ...); ... }
 *   int main(void) { RUN(name); ...; return harness_done(); }
 *
 * Each test prints "ok - name" or "not ok - name: <first failure>". A
 * failed CHECK prints the file, line, the condition and the message with
 * its values, and ends the test. harness_done() returns nonzero if any
 * test failed.
 *
 * harness.c holds what needs no kheap (the malloc shim's tests link it
 * alone); kt_heap_open and kt_heap_close are in support.c.
 */
#ifndef KHEAP_TEST_HARNESS_H
#define KHEAP_TEST_HARNESS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "support.h"

/* ---- the harness ---- */

extern jmp_buf harness_jmp;
extern int harness_failed_tests, harness_passed_tests;
extern char harness_msg[1024];

/* Record the failure and end the running test (longjmp to RUN). */
_Noreturn void harness_fail(const char *file, int line, const char *cond,
                            const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define TEST(name) static void test_##name(void)

#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        if (!(cond))                                                          \
            harness_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);             \
    } while (0)

#define RUN(name)                                                             \
    do {                                                                      \
        fflush(stdout);                                                       \
        if (setjmp(harness_jmp) == 0) {                                       \
            test_##name();                                                    \
            printf("ok - %s\n", #name);                                       \
            harness_passed_tests++;                                           \
        } else {                                                              \
            printf("not ok - %s: %s\n", #name, harness_msg);                  \
            harness_failed_tests++;                                           \
        }                                                                     \
        fflush(stdout);                                                       \
    } while (0)

/* Nonzero if any test failed: main's return value. */
int harness_done(void);

/* ---- the environment ---- */

/* Integer from the environment (strtol base 0), dflt if unset or empty. */
long kt_env_long(const char *name, long dflt);

/* The run's random seed: KHEAP_SEED if set (to replay a run), otherwise
 * from the clock and the process id; below 2^63. Printed as "# seed N". */
uint64_t kt_seed(void);

/* ---- memory ---- */

/* n bytes of anonymous read-write memory, reserved lazily (no swap
 * reservation), or NULL. */
void *kt_map(size_t n);
void kt_unmap(void *p, size_t n);

/* A heap on a region of its own: kt_heap_open maps size bytes and runs
 * kheap_init on them, failing the running test (CHECK) if either fails;
 * kt_heap_close runs kheap_fini and unmaps. */
struct kt_heap {
    kheap_t *h;
    unsigned char *mem;
    size_t size;
};
void kt_heap_open(struct kt_heap *t, size_t size);
void kt_heap_close(struct kt_heap *t);
/* h's statistics; kheap_check_quiescent of h, failing the running test
 * (naming when) if it finds anything. */
struct kheap_stats kt_stats(kheap_t *h);
void kt_check_quiet(kheap_t *h, const char *when);

/* The process's resident set size in KiB (0 if /proc is not there). */
long kt_rss_kib(void);

/* Write one byte at p in a forked child, whose own SIGSEGV/SIGBUS handler
 * turns a fault into an exit status (a sanitizer's handler in the parent
 * would end it its own way); returns the child's wait status, -1 if fork
 * or waitpid failed. kt_faulted(status): the write faulted. */
int kt_child_write(volatile unsigned char *p);
bool kt_faulted(int status);

#endif /* KHEAP_TEST_HARNESS_H */
