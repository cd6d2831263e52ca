/*
 * small.h - the small-heap figures and checks (tests/small.c), run by the
 * Cortex-M kernel and by tests/test_small.c. Freestanding.
 */
#ifndef KHEAP_TEST_SMALL_H
#define KHEAP_TEST_SMALL_H

#include <stddef.h>

/* Run small_regions, small_fill and small_trace on heaps made in
 * [arena, arena + arena_size) (aligned to KHEAP_PAGE_SIZE; nothing else
 * may use it), printing ok/not ok lines and "# small:" figures through the
 * environment of kt_begin. Returns the number of tests that failed. */
int kt_run_small(void *arena, size_t arena_size);

#endif /* KHEAP_TEST_SMALL_H */
