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

/* Format a report as the default hook prints it (no trailing newline). */
void kheap_hosted_format_report(const struct kheap_report *report, char *buf,
                                size_t len);

#ifdef __cplusplus
}
#endif

#endif /* KHEAP_HOSTED_H */
