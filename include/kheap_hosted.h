/*
 * kheap_hosted.h - extras of the hosted POSIX port (src/port/hosted.c).
 * Not part of the freestanding core.
 */
#ifndef KHEAP_HOSTED_H
#define KHEAP_HOSTED_H

#include "kheap_port.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef void (*kheap_idle_hook_fn)(void);

/* Call fn whenever a thread releases the last kheap lock it holds: on
 * kheap's slow paths (magazine misses, slabs, large blocks, statistics,
 * thread exit, the end of fork's handlers), never on the hit paths, which
 * take no lock. fn runs on that thread with no kheap lock held, so it may
 * call kheap (its own calls do not call fn again); it must not allocate
 * through a libc that may be kheap, must keep errno, and should be short:
 * it delays the allocation that called it. libkheap.so's live statistics
 * writer is such a hook (src/malloc/malloc.c). NULL removes the hook.
 * Returns the previous one. Thread-safe; read with acquire ordering. */
kheap_idle_hook_fn kheap_hosted_set_idle_hook(kheap_idle_hook_fn fn);

/* Format a report as the default hook prints it (no trailing newline). */
void kheap_hosted_format_report(const struct kheap_report *report, char *buf,
                                size_t len);

#ifdef __cplusplus
}
#endif

#endif /* KHEAP_HOSTED_H */
