/*
 * harness.h - the test harness: TAP-style lines the runner counts.
 *
 *   TEST(name) { ... CHECK(cond, "fmt", ...); ... }
 *   int main(void) { RUN(name); ...; return harness_done(); }
 *
 * Each test prints "ok - name" or "not ok - name: <first failure>". A
 * failed CHECK prints the file, line, the condition and the message with
 * its values, and ends the test. harness_done() returns nonzero if any
 * test failed.
 */
#ifndef KHEAP_TEST_HARNESS_H
#define KHEAP_TEST_HARNESS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static jmp_buf harness_jmp;
static int harness_failed_tests;
static int harness_passed_tests;
static char harness_msg[1024];

static inline void harness_fail(const char *file, int line, const char *cond,
                                const char *fmt, ...)
{
    int n = snprintf(harness_msg, sizeof harness_msg, "%s:%d: %s: ", file,
                     line, cond);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof harness_msg)
        vsnprintf(harness_msg + n, sizeof harness_msg - (size_t)n, fmt, ap);
    va_end(ap);
    longjmp(harness_jmp, 1);
}

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

static inline int harness_done(void)
{
    return harness_failed_tests ? 1 : 0;
}

/* Integer from the environment, for sizes of randomized runs. */
static inline long harness_env_long(const char *name, long dflt)
{
    const char *s = getenv(name);
    return s && *s ? strtol(s, NULL, 0) : dflt;
}

#endif /* KHEAP_TEST_HARNESS_H */
