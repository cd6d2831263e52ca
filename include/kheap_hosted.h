/*
 * kheap_hosted.h - extras of the hosted POSIX port (src/port/hosted.c).
 * Not part of the freestanding core.
 */
#ifndef KHEAP_HOSTED_H
#define KHEAP_HOSTED_H

#include "kheap.h"
#include "kheap_port.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef void (*kheap_idle_hook_fn)(void);

/* Call fn whenever a thread releases the last kheap lock it holds: on
 * kheap's slow paths (magazine misses, slabs, large blocks, statistics,
 * thread exit, the end of fork's handlers), never on the hit paths, which
 * take no lock. fn runs on that thread with no kheap lock held, so it may
 * read kheap (kheap_get_stats and the other statistics, kheap_check; its
 * own calls do not call fn again), but it may run in the middle of a slow
 * path, between two of its locks, with the thread's per-CPU magazines
 * half changed (a refill that lets its cache's lock go while it makes a
 * slab, or one between the depot and the slabs): it must not allocate,
 * free, reclaim or flush in any kheap heap, nor allocate through a libc
 * that may be kheap. It must keep errno, and should be short: it delays
 * the allocation that called it. libkheap.so's live statistics writer is
 * such a hook (src/malloc/malloc.c). NULL removes the hook. Returns the
 * previous one. Thread-safe; read with acquire ordering. */
kheap_idle_hook_fn kheap_hosted_set_idle_hook(kheap_idle_hook_fn fn);

/* How the per-CPU layer runs, chosen at the first allocation: the number
 * of CPUs whose magazines every thread shares (restartable sequences,
 * x86-64 Linux with glibc >= 2.35), or 0 for per-thread slots. *why (if
 * why is not NULL) says why slots, or, per CPU, which CPUs are left out
 * (a machine with more than 56); "" when every CPU has caches. */
unsigned kheap_hosted_cpu_mode(const char **why);

/* Format a report as the default hook prints it (no trailing newline). */
void kheap_hosted_format_report(const struct kheap_report *report, char *buf,
                                size_t len);

#if KHEAP_PORT_PROTECT
/* Pass the faults in heap's guard pool (kheap_set_sample) to
 * kheap_guard_fault, through a SIGSEGV handler installed on the first
 * call (SA_ONSTACK: it runs on the thread's alternate stack if it has
 * one). A reported fault ends the process as the report hook decides
 * (the default hook aborts; if the hook returns, the access faults again
 * with the default action, SIGSEGV). Faults elsewhere go to the handler
 * that was installed before, or get the default action. A program that
 * installs its own SIGSEGV handler later replaces this one (it may call
 * kheap_guard_fault itself). Up to 8 heaps. Returns 0, KHEAP_EINVAL,
 * KHEAP_ETOOMANY or KHEAP_ENOSYS (sigaction failed). libkheap.so calls
 * it for the default heap when KHEAP_SAMPLE_RATE is set.
 * kheap_hosted_forget_faults: take the heap out again; call it before
 * kheap_fini or before the heap's memory goes, with no fault of the heap
 * being handled (the handler reads the heap). */
int kheap_hosted_catch_faults(kheap_t *heap);
void kheap_hosted_forget_faults(kheap_t *heap);
#endif

#ifdef __cplusplus
}
#endif

#endif /* KHEAP_HOSTED_H */
