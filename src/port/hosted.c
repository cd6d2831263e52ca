/*
 * hosted.c - the POSIX port: pthread mutexes, mmap pages, stderr reports.
 *
 * Locks are pthread mutexes (sanitizers and valgrind's thread checkers
 * understand them). Pages come from anonymous mmap, zero-filled. Reports
 * print one line on stderr and abort, as glibc does for a bad free,
 * unless a hook is set (kheap_hosted_set_report_hook), which tests use to
 * make reports return.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kheap_hosted.h"

_Static_assert(sizeof(pthread_mutex_t) <= sizeof(kheap_lock_t),
               "kheap_lock_t cannot hold a pthread mutex: raise KHEAP_LOCK_WORDS");

void kheap_port_lock_init(kheap_lock_t *lock)
{
    pthread_mutex_init((pthread_mutex_t *)lock->word, NULL);
}

void kheap_port_lock(kheap_lock_t *lock)
{
    pthread_mutex_lock((pthread_mutex_t *)lock->word);
}

void kheap_port_unlock(kheap_lock_t *lock)
{
    pthread_mutex_unlock((pthread_mutex_t *)lock->word);
}

static kheap_report_hook_fn report_hook;

kheap_report_hook_fn kheap_hosted_set_report_hook(kheap_report_hook_fn fn)
{
    return __atomic_exchange_n(&report_hook, fn, __ATOMIC_ACQ_REL);
}

void kheap_hosted_format_report(const struct kheap_report *r, char *buf, size_t len)
{
    snprintf(buf, len, "kheap: %s(%p): %s%s%s%s", r->function ? r->function : "kheap",
             r->addr, r->reason, r->cache ? " [cache " : "", r->cache ? r->cache : "",
             r->cache ? "]" : "");
}

/* Write without stdio's buffers or locks: the report may come from a
 * malloc replacement inside stdio. */
static void put_line(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    while (n) {
        ssize_t w = write(2, s, n);
        if (w <= 0)
            break;
        s += w;
        n -= (size_t)w;
    }
    if (write(2, "\n", 1) < 0)
        return;
}

void kheap_port_report(const struct kheap_report *r)
{
    kheap_report_hook_fn fn = __atomic_load_n(&report_hook, __ATOMIC_ACQUIRE);
    if (fn) {
        fn(r);
        return;
    }
    char line[512];
    kheap_hosted_format_report(r, line, sizeof line);
    put_line(line);
    abort();
}

void kheap_port_panic(const char *msg, const void *addr)
{
    char line[512];
    snprintf(line, sizeof line, "kheap: panic: %s (at %p)", msg, addr);
    put_line(line);
    abort();
}

#if KHEAP_PORT_PAGES
void *kheap_port_pages_get(size_t bytes, size_t *got)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    *got = bytes;
    return p;
}

void kheap_port_pages_put(void *base, size_t bytes)
{
    munmap(base, bytes);
}
#endif
