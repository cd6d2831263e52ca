/*
 * libc.c - the four functions GCC may call even in a freestanding
 * program (memset, memcpy, memmove, memcmp), for the demo kernels, and
 * the two more Rust's core and alloc call (bcmp, strlen). Built
 * with -fno-tree-loop-distribute-patterns, so the loops below are not
 * turned back into calls to themselves.
 */
#include <stddef.h>
#include <stdint.h>

void *memset(void *dst, int c, size_t n);
void *memcpy(void *restrict dst, const void *restrict src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
int memcmp(const void *a, const void *b, size_t n);
int bcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);

void *memset(void *dst, int c, size_t n)
{
    unsigned char *d = dst;
    uintptr_t w = (unsigned char)c * (UINTPTR_MAX / 255);
    while (n && ((uintptr_t)d & (sizeof w - 1))) {
        *d++ = (unsigned char)c;
        n--;
    }
    for (; n >= sizeof w; n -= sizeof w, d += sizeof w)
        *(uintptr_t *)(void *)d = w;
    while (n--)
        *d++ = (unsigned char)c;
    return dst;
}

void *memcpy(void *restrict dst, const void *restrict src, size_t n)
{
    unsigned char *d = dst;
    const unsigned char *s = src;
    if ((((uintptr_t)d | (uintptr_t)s) & (sizeof(uintptr_t) - 1)) == 0)
        for (; n >= sizeof(uintptr_t); n -= sizeof(uintptr_t)) {
            *(uintptr_t *)(void *)d = *(const uintptr_t *)(const void *)s;
            d += sizeof(uintptr_t);
            s += sizeof(uintptr_t);
        }
    while (n--)
        *d++ = *s++;
    return dst;
}

void *memmove(void *dst, const void *src, size_t n)
{
    unsigned char *d = dst;
    const unsigned char *s = src;
    if (d <= s || d >= s + n)
        return memcpy(dst, src, n);
    while (n--)
        d[n] = s[n];
    return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const unsigned char *x = a, *y = b;
    for (size_t i = 0; i < n; i++)
        if (x[i] != y[i])
            return x[i] < y[i] ? -1 : 1;
    return 0;
}

int bcmp(const void *a, const void *b, size_t n)
{
    return memcmp(a, b, n);
}

size_t strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

#if defined(__riscv)
/* Without the Zbb extension GCC calls these for __builtin_clzl and
 * __builtin_ctzl; the cross libgcc is built for another float ABI, so
 * the kernel brings its own. Undefined for 0, as the builtins are. */
int __clzdi2(unsigned long x);
int __ctzdi2(unsigned long x);

int __clzdi2(unsigned long x)
{
    int n = 0;
    for (int s = 32; s; s >>= 1) {
        if ((x >> (64 - s)) == 0) {
            n += s;
            x <<= s;
        }
    }
    return n;
}

int __ctzdi2(unsigned long x)
{
    int n = 0;
    for (int s = 32; s; s >>= 1) {
        if ((x & ((1ul << s) - 1)) == 0) {
            n += s;
            x >>= s;
        }
    }
    return n;
}
#endif
