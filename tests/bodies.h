/*
 * bodies.h - kheap test bodies that run both hosted (tests/test_bodies.c,
 * in every configuration of `make check`) and on bare metal (the demo
 * kernels under QEMU). Freestanding: they see kheap only through
 * kheap.h, and the platform only through struct kt_env.
 *
 * Each test prints "ok - <name>" or "not ok - <name>: <first failure>",
 * the lines the test runner counts.
 */
#ifndef KHEAP_TEST_BODIES_H
#define KHEAP_TEST_BODIES_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "kheap.h"
#include "kheap_port.h"

struct kt_env {
    const char *platform;     /* printed in the first line */
    /* Print one line (a newline is added). Any CPU may call it. */
    void (*puts)(const char *line);
    /* CPUs (hosted: threads) run_all runs on. */
    unsigned ncpus;
    /* Run fn(index, arg) for index 0 .. ncpus - 1 at the same time, each
     * on its own CPU, and return when every call has returned. */
    void (*run_all)(void (*fn)(unsigned index, void *arg), void *arg);
    uint64_t seed;            /* random seed (printed, to replay) */
    unsigned long model_ops;  /* operations of the randomized model test */
    unsigned long stress_ops; /* operations per CPU of the SMP stress */
    /* Optional (NULL: not available, e.g. hosted): mask this CPU's
     * interrupts (nesting) and undo it, for the sections that must not
     * fail (the reserve body). */
    void (*irq_off)(void);
    void (*irq_on)(void);
};

/* Use env for printing (kt_printf) before kt_run_bodies, which sets it
 * too. */
void kt_begin(const struct kt_env *env);

/* Run every test body; returns the number that failed. */
int kt_run_bodies(const struct kt_env *env);

/* Results so far, and how many of the tests run scaled down (smaller
 * or fewer blocks on a heap below 4 MiB, one CPU), each with a
 * "# scaled <test>: <why>" line. */
extern int kt_passed, kt_failed, kt_scaled;

/* snprintf for the formats the tests use: %s %c %d %u %x %p %%, with the
 * l, ll and z length modifiers. Returns the length the full text needs. */
size_t kt_vformat(char *buf, size_t len, const char *fmt, va_list ap);
size_t kt_format(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Format and print one line through the environment's puts. */
void kt_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif /* KHEAP_TEST_BODIES_H */
