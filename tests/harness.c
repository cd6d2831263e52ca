/*
 * harness.c - the hosted part of the test support (harness.h) that needs
 * no kheap: the harness state, the environment, seeds, mappings, RSS.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <inttypes.h>
#include <stdarg.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

jmp_buf harness_jmp;
int harness_failed_tests, harness_passed_tests;
char harness_msg[1024];

void harness_fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
    int n = snprintf(harness_msg, sizeof harness_msg, "%s:%d: %s: ", file, line, cond);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof harness_msg)
        vsnprintf(harness_msg + n, sizeof harness_msg - (size_t)n, fmt, ap);
    va_end(ap);
    longjmp(harness_jmp, 1);
}

int harness_done(void)
{
    return harness_failed_tests ? 1 : 0;
}

long kt_env_long(const char *name, long dflt)
{
    const char *s = getenv(name);
    return s && *s ? strtol(s, NULL, 0) : dflt;
}

uint64_t kt_seed(void)
{
    uint64_t seed;
    long env = kt_env_long("KHEAP_SEED", -1);
    if (env >= 0) {
        seed = (uint64_t)env;
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = ((uint64_t)ts.tv_sec * 1000003u ^ (uint64_t)ts.tv_nsec ^
                (uint64_t)getpid() << 32) & 0x7fffffffffffffffull;
    }
    printf("# seed %" PRIu64 "\n", seed);
    return seed;
}

void *kt_map(size_t n)
{
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void kt_unmap(void *p, size_t n)
{
    munmap(p, n);
}

long kt_rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, res = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &size, &res) != 2)
            res = 0;
        fclose(f);
    }
    return res * (sysconf(_SC_PAGESIZE) / 1024);
}

/* The child's exit status when its access faulted (kt_child_write). */
#define KT_FAULTED 42

static void kt_on_fault(int sig)
{
    (void)sig;
    _exit(KT_FAULTED);
}

int kt_child_write(volatile unsigned char *p)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = kt_on_fault;
        sigaction(SIGSEGV, &sa, NULL);
        sigaction(SIGBUS, &sa, NULL);
        *p = 1;
        _exit(0);
    }
    int st;
    return waitpid(pid, &st, 0) == pid ? st : -1;
}

bool kt_faulted(int st)
{
    return st != -1 && ((WIFEXITED(st) && WEXITSTATUS(st) == KT_FAULTED) ||
                        (WIFSIGNALED(st) && (WTERMSIG(st) == SIGSEGV || WTERMSIG(st) == SIGBUS)));
}
