/*
 * baremetal.c - the bare-metal port: interrupt-masking spinlocks, CPU
 * index from the hardware, reports and panics on the kernel's console.
 *
 * Lock word layout (kheap_lock_t, KHEAP_LOCK_WORDS >= 2 words):
 *   word[0]  0 free, 1 held; taken with an atomic exchange (acquire),
 *            released with a store (release).
 *   word[1]  index + 1 of the CPU holding it, 0 when free: written only by
 *            the holder, so a CPU that finds its own index there already
 *            holds the lock, and taking it again would spin forever; the
 *            port stops with a panic instead.
 * The interrupt state saved by the lock is not in the lock word but in
 * the CPU's nesting record (baremetal_cpu.h), so releases in any order
 * leave interrupts masked until the CPU's last lock is gone.
 *
 * Lock order outside kheap's own: console_lock is innermost; it is taken
 * with no other port lock needed and kheap never holds a lock across a
 * report (panics may: they print without the console lock).
 */
#include <stdbool.h>
#include <stdint.h>

#include "kheap.h"
#include "kheap_baremetal.h"

_Static_assert(KHEAP_LOCK_WORDS >= 2, "the spinlock needs two words");

struct kh_bm_cpu kh_bm_cpus[KHEAP_MAX_CPUS] = {
    [0 ... KHEAP_MAX_CPUS - 1] = {.local = &kh_cpu_sentinel},
};

static void put_hex(char *buf, size_t *n, size_t cap, uintptr_t v);
static void put_str(char *buf, size_t *n, size_t cap, const char *s);

static void emergency_line(const char *a, const char *b, uintptr_t addr)
{
    char line[160];
    size_t n = 0;
    put_str(line, &n, sizeof line, a);
    put_str(line, &n, sizeof line, b);
    put_str(line, &n, sizeof line, " (at ");
    put_hex(line, &n, sizeof line, addr);
    put_str(line, &n, sizeof line, ")\n");
    kheap_bm_console_write(line, n);
}

void kh_bm_bad_cpu(unsigned index)
{
    emergency_line("kheap: panic: ", "CPU index beyond KHEAP_MAX_CPUS", index);
    kheap_bm_halt();
}

void kheap_port_lock_init(kheap_lock_t *lock)
{
    lock->word[0] = 0;
    lock->word[1] = 0;
}

void kheap_port_lock(kheap_lock_t *lock)
{
    unsigned cpu = kh_bm_push();
    /* Racy read: another CPU may be writing word[1], but only this CPU
     * ever writes cpu + 1 there, and clears it before it releases. */
    if (__atomic_load_n(&lock->word[1], __ATOMIC_RELAXED) == cpu + 1u)
        kheap_port_panic("kheap lock taken twice on one CPU", lock);
    while (__atomic_exchange_n(&lock->word[0], 1, __ATOMIC_ACQUIRE))
        while (__atomic_load_n(&lock->word[0], __ATOMIC_RELAXED))
            kh_bm_relax();
    __atomic_store_n(&lock->word[1], cpu + 1u, __ATOMIC_RELAXED);
}

/* As kheap_port_lock, but a lock held by anyone (this CPU too: an
 * interrupt handler whose CPU holds it) is "busy" at once. */
int kheap_port_trylock(kheap_lock_t *lock)
{
    unsigned cpu = kh_bm_push();
    if (__atomic_load_n(&lock->word[1], __ATOMIC_RELAXED) == cpu + 1u ||
        __atomic_exchange_n(&lock->word[0], 1, __ATOMIC_ACQUIRE)) {
        kh_bm_pop(cpu);
        return 0;
    }
    __atomic_store_n(&lock->word[1], cpu + 1u, __ATOMIC_RELAXED);
    return 1;
}

void kheap_port_unlock(kheap_lock_t *lock)
{
    unsigned cpu = (unsigned)__atomic_load_n(&lock->word[1], __ATOMIC_RELAXED) - 1u;
    __atomic_store_n(&lock->word[1], 0, __ATOMIC_RELAXED);
    __atomic_store_n(&lock->word[0], 0, __ATOMIC_RELEASE);
    kh_bm_pop(cpu);
}

void kheap_bm_irq_push(void)
{
    (void)kh_bm_push();
}

void kheap_bm_irq_pop(void)
{
    /* Interrupts are masked, so this CPU's index is the one push read. */
    kh_bm_pop(kh_bm_hw_index());
}

unsigned kheap_bm_cpu_index(void)
{
    return kh_bm_hw_index();
}

/* ------------------------------------------------------------------ */
/* Console lines and reports. */

static kheap_lock_t console_lock;

static void put_str(char *buf, size_t *n, size_t cap, const char *s)
{
    while (s && *s && *n + 1 < cap)
        buf[(*n)++] = *s++;
}

static void put_hex(char *buf, size_t *n, size_t cap, uintptr_t v)
{
    char tmp[2 + 2 * sizeof v];
    size_t k = sizeof tmp;
    do {
        tmp[--k] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v);
    tmp[--k] = 'x';
    tmp[--k] = '0';
    while (k < sizeof tmp && *n + 1 < cap)
        buf[(*n)++] = tmp[k++];
}

void kheap_bm_puts(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    kheap_port_lock(&console_lock);
    kheap_bm_console_write(s, n);
    if (!n || s[n - 1] != '\n')
        kheap_bm_console_write("\n", 1);
    kheap_port_unlock(&console_lock);
}

/* The default sink (kheap_set_report_hook replaces it). */
void kheap_port_report(const struct kheap_report *r)
{
    char line[200];
    size_t n = 0;
    put_str(line, &n, sizeof line, "kheap: ");
    put_str(line, &n, sizeof line, r->function ? r->function : "kheap");
    put_str(line, &n, sizeof line, "(");
    put_hex(line, &n, sizeof line, (uintptr_t)r->addr);
    put_str(line, &n, sizeof line, "): ");
    put_str(line, &n, sizeof line, r->reason);
    if (r->cache) {
        put_str(line, &n, sizeof line, " [cache ");
        put_str(line, &n, sizeof line, r->cache);
        put_str(line, &n, sizeof line, "]");
    }
    line[n] = '\0';
    kheap_bm_puts(line);
}

/* Without the console lock: the panicking CPU may hold it. */
void kheap_port_panic(const char *msg, const void *addr)
{
    emergency_line("kheap: panic: ", msg, (uintptr_t)addr);
    kheap_bm_halt();
}

#if defined(__ARM_ARCH_PROFILE) && __ARM_ARCH_PROFILE == 'M'
/* ------------------------------------------------------------------ */
/* 8-byte atomics on Cortex-M. ARMv7-M has LDREX/STREX for 1, 2 and 4
 * bytes but no LDREXD/STREXD, so GCC calls these library functions for
 * the core's 64-bit counters (there is no libatomic here). On one CPU an
 * operation is atomic when no interrupt splits it: each masks interrupts
 * around its plain accesses (which is also as strong as any memory order
 * asked for). Not valid for memory shared with another bus master. */
uint64_t __atomic_load_8(const volatile void *mem, int order);
void __atomic_store_8(volatile void *mem, uint64_t val, int order);
uint64_t __atomic_fetch_add_8(volatile void *mem, uint64_t val, int order);
uint64_t __atomic_exchange_8(volatile void *mem, uint64_t val, int order);
bool __atomic_compare_exchange_8(volatile void *mem, void *expected, uint64_t desired,
                                 bool weak, int success, int failure);

uint64_t __atomic_load_8(const volatile void *mem, int order)
{
    (void)order;
    uintptr_t s = kh_bm_irq_save();
    uint64_t v = *(const volatile uint64_t *)mem;
    kh_bm_irq_restore(s);
    return v;
}

void __atomic_store_8(volatile void *mem, uint64_t val, int order)
{
    (void)order;
    uintptr_t s = kh_bm_irq_save();
    *(volatile uint64_t *)mem = val;
    kh_bm_irq_restore(s);
}

uint64_t __atomic_fetch_add_8(volatile void *mem, uint64_t val, int order)
{
    (void)order;
    uintptr_t s = kh_bm_irq_save();
    uint64_t old = *(volatile uint64_t *)mem;
    *(volatile uint64_t *)mem = old + val;
    kh_bm_irq_restore(s);
    return old;
}

uint64_t __atomic_exchange_8(volatile void *mem, uint64_t val, int order)
{
    (void)order;
    uintptr_t s = kh_bm_irq_save();
    uint64_t old = *(volatile uint64_t *)mem;
    *(volatile uint64_t *)mem = val;
    kh_bm_irq_restore(s);
    return old;
}

bool __atomic_compare_exchange_8(volatile void *mem, void *expected, uint64_t desired,
                                 bool weak, int success, int failure)
{
    (void)weak;
    (void)success;
    (void)failure;
    uintptr_t s = kh_bm_irq_save();
    uint64_t cur = *(volatile uint64_t *)mem;
    bool ok = cur == *(uint64_t *)expected;
    if (ok)
        *(volatile uint64_t *)mem = desired;
    else
        *(uint64_t *)expected = cur;
    kh_bm_irq_restore(s);
    return ok;
}
#endif
