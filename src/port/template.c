/*
 * A kheap port to start from: copy this file into your kernel, fill in the
 * four places marked PORT, and build it with kheap.c.
 *
 * As it stands the file is a complete, correct port for one CPU whose
 * interrupt handlers never allocate (a bare-metal loop, a boot loader,
 * early boot of a kernel): locks are spinlocks that never have to wait,
 * the CPU index is always 0, interrupts are left alone. Reports and panics
 * go to two functions your platform defines:
 *
 *     void platform_console_write(const char *s, size_t n);
 *     void platform_halt(void);                    (must not return)
 *
 * For several CPUs, or interrupt handlers that allocate, fill in
 * port_irq_save/port_irq_restore (mask and restore interrupts on this
 * CPU) and port_cpu_index (this CPU's index, below KHEAP_MAX_CPUS); the
 * rest follows. include/kheap_port.h (kheap_port.h in the single-file
 * distribution) states the contract of every hook; src/port/baremetal.c
 * in the kheap sources is a finished port for RISC-V 64, AArch64 and
 * x86_64 built the same way as this one.
 *
 * Lock word layout (KHEAP_LOCK_WORDS >= 2 words):
 *   word[0]  0 free, 1 held (atomic exchange to take, release store to free)
 *   word[1]  index + 1 of the CPU holding it, 0 when free, so a CPU that
 *            takes a lock it already holds stops with a panic instead of
 *            spinning forever.
 * Interrupt masking nests per CPU (struct port_cpu): interrupts come back
 * when the CPU's last lock is released and it has left the per-CPU layer,
 * whatever the order of the releases.
 */
#include <stddef.h>
#include <stdint.h>

#include "kheap.h"
#include "kheap_port.h"

/* What the platform supplies (PORT: or replace the two calls below). */
void platform_console_write(const char *s, size_t n);
void platform_halt(void) __attribute__((noreturn));

_Static_assert(KHEAP_LOCK_WORDS >= 2, "the spinlock needs two words");

/* PORT 1: mask interrupts on this CPU and return the previous state.
 * RISC-V S-mode: csrrci sstatus, SIE; AArch64: mrs daif + msr daifset, #3;
 * x86_64: pushf; cli; Cortex-M: mrs primask + cpsid i. Leave it as is if
 * no interrupt handler ever calls kheap. */
static inline uintptr_t port_irq_save(void)
{
    return 0;
}

/* PORT 2: restore the state port_irq_save returned. */
static inline void port_irq_restore(uintptr_t state)
{
    (void)state;
}

/* PORT 3: the index of the CPU running this code, 0 .. KHEAP_MAX_CPUS - 1
 * (a hart id, MPIDR affinity, APIC id, or a per-CPU variable). Called with
 * interrupts masked, so the caller cannot migrate. */
static inline unsigned port_cpu_index(void)
{
    return 0;
}

/* PORT 4: what a CPU does while it waits for a lock held by another CPU
 * (pause, yield, wfe, or nothing). */
static inline void port_relax(void)
{
}

/* ------------------------------------------------------------------ */
/* Nothing below needs changing. */

struct port_cpu {
    unsigned depth;       /* masks taken and not yet undone */
    uintptr_t saved;      /* interrupt state before the outermost mask */
};
static struct port_cpu port_cpus[KHEAP_MAX_CPUS];

static void port_put(char *buf, size_t *n, size_t cap, const char *s)
{
    while (s && *s && *n + 1 < cap)
        buf[(*n)++] = *s++;
}

static void port_put_hex(char *buf, size_t *n, size_t cap, uintptr_t v)
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

/* Mask interrupts (nesting) and return this CPU's index. */
static unsigned port_push(void)
{
    uintptr_t s = port_irq_save();
    unsigned cpu = port_cpu_index();
    if (cpu >= KHEAP_MAX_CPUS)
        kheap_port_panic("CPU index beyond KHEAP_MAX_CPUS", (const void *)(uintptr_t)cpu);
    struct port_cpu *c = &port_cpus[cpu];
    if (c->depth++ == 0)
        c->saved = s;
    return cpu;
}

/* Undo one port_push on CPU cpu (the caller's own). */
static void port_pop(unsigned cpu)
{
    struct port_cpu *c = &port_cpus[cpu];
    if (--c->depth == 0)
        port_irq_restore(c->saved);
}

void kheap_port_lock_init(kheap_lock_t *lock)
{
    lock->word[0] = 0;
    lock->word[1] = 0;
}

void kheap_port_lock(kheap_lock_t *lock)
{
    unsigned cpu = port_push();
    if (__atomic_load_n(&lock->word[1], __ATOMIC_RELAXED) == cpu + 1u)
        kheap_port_panic("kheap lock taken twice on one CPU", lock);
    while (__atomic_exchange_n(&lock->word[0], 1, __ATOMIC_ACQUIRE))
        while (__atomic_load_n(&lock->word[0], __ATOMIC_RELAXED))
            port_relax();
    __atomic_store_n(&lock->word[1], cpu + 1u, __ATOMIC_RELAXED);
}

/* Optional: kheap_port_trylock (kheap_port.h), for KHEAP_NOLOCK calls. A
 * port with a CPU header defines KHEAP_PORT_TRYLOCK 1 there and this:
 *     int kheap_port_trylock(kheap_lock_t *lock)
 * as kheap_port_lock, but "busy" (0) at once, with interrupts restored,
 * when word[1] holds this CPU or the exchange finds the lock taken. Without
 * it kheap_port.h supplies a fallback that always says busy. */

void kheap_port_unlock(kheap_lock_t *lock)
{
    unsigned cpu = (unsigned)__atomic_load_n(&lock->word[1], __ATOMIC_RELAXED) - 1u;
    __atomic_store_n(&lock->word[1], 0, __ATOMIC_RELAXED);
    __atomic_store_n(&lock->word[0], 0, __ATOMIC_RELEASE);
    port_pop(cpu);
}

/* The per-CPU layer: interrupts stay masked between enter and exit, so
 * the caller stays on its CPU and alone in its per-CPU state. (Without a
 * KHEAP_PORT_CPU_HEADER these are ordinary functions; a port may move
 * them into such a header as static inline for speed, see kheap_port.h.) */
unsigned kheap_port_cpu_enter(void)
{
    return port_push();
}

void kheap_port_cpu_exit(unsigned cpu)
{
    port_pop(cpu);
}

/* One line: "kheap: kheap_free(0x1234): reason [cache name]". Returns, so
 * the bad operation is ignored; call platform_halt() here instead to stop
 * at the first misuse. */
void kheap_port_report(const struct kheap_report *r)
{
    char line[200];
    size_t n = 0;
    port_put(line, &n, sizeof line, "kheap: ");
    port_put(line, &n, sizeof line, r->function ? r->function : "kheap");
    port_put(line, &n, sizeof line, "(");
    port_put_hex(line, &n, sizeof line, (uintptr_t)r->addr);
    port_put(line, &n, sizeof line, "): ");
    port_put(line, &n, sizeof line, r->reason);
    if (r->cache) {
        port_put(line, &n, sizeof line, " [cache ");
        port_put(line, &n, sizeof line, r->cache);
        port_put(line, &n, sizeof line, "]");
    }
    line[n++] = '\n';
    platform_console_write(line, n);
}

/* kheap found its own metadata broken: print and stop. Must not return
 * and must not call into kheap (locks may be held). */
void kheap_port_panic(const char *msg, const void *addr)
{
    char line[160];
    size_t n = 0;
    port_put(line, &n, sizeof line, "kheap: panic: ");
    port_put(line, &n, sizeof line, msg);
    port_put(line, &n, sizeof line, " (at ");
    port_put_hex(line, &n, sizeof line, (uintptr_t)addr);
    port_put(line, &n, sizeof line, ")\n");
    platform_console_write(line, n);
    platform_halt();
}

/* Optional: growth (KHEAP_PORT_PAGES 1) and returning free pages
 * (KHEAP_PORT_PURGE 1). Define the macro with -D and the functions here;
 * kheap_port.h has their contracts. Left out, every heap is fixed-size
 * (kheap_set_growable returns KHEAP_ENOSYS) and free pages stay resident. */
#if KHEAP_PORT_PAGES
#error "KHEAP_PORT_PAGES: define kheap_port_pages_get and kheap_port_pages_put here"
#endif
#if KHEAP_PORT_PURGE
#error "KHEAP_PORT_PURGE: define kheap_port_pages_purge here"
#endif
/* Optional: memory given inaccessible and opened as the heap uses it
 * (KHEAP_PORT_COMMIT 1, with KHEAP_PORT_PAGES), so stray accesses into
 * address space the heap has not used fault. */
#if KHEAP_PORT_COMMIT
#error "KHEAP_PORT_COMMIT: define kheap_port_pages_commit here"
#endif
/* Optional: a monotonic millisecond clock (KHEAP_PORT_CLOCK 1) that the
 * slow paths read to drive decay; without it, call kheap_tick from the
 * kernel's timer or idle loop. */
#if KHEAP_PORT_CLOCK
#error "KHEAP_PORT_CLOCK: define kheap_port_clock_ms here"
#endif
/* Optional: page protection (KHEAP_PORT_PROTECT 1) for the sampled guard
 * blocks (kheap_set_sample); then pass the faults your page-fault handler
 * takes in heap memory to kheap_guard_fault. */
#if KHEAP_PORT_PROTECT
#error "KHEAP_PORT_PROTECT: define kheap_port_protect here"
#endif
