/*
 * class_rule.h - kheap's size classes computed from their documented rule
 * (16 to 64 by 8, then 8 classes per doubling up to KHEAP_MAX_CLASS), not
 * from the library, so tests can hold the library to the rule.
 */
#ifndef KHEAP_TEST_CLASS_RULE_H
#define KHEAP_TEST_CLASS_RULE_H

#include <stddef.h>

#include "kheap.h"

static size_t g_class[KHEAP_NUM_CLASSES];

static void make_classes(void)
{
    size_t n = 0;
    for (size_t s = 16; s <= 64; s += 8)
        g_class[n++] = s;
    for (size_t base = 64; base < KHEAP_MAX_CLASS; base *= 2)
        for (size_t i = 1; i <= 8; i++)
            g_class[n++] = base + i * (base / 8);
}

#endif /* KHEAP_TEST_CLASS_RULE_H */
