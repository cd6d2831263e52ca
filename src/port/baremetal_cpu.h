/*
 * baremetal_cpu.h - the bare-metal port's per-CPU hooks, inline for the
 * hit paths, and the three machine primitives they stand on: mask
 * interrupts and return what they were, restore them, read this CPU's
 * index. One set per architecture: RISC-V 64 in S-mode, AArch64 at EL1,
 * x86_64 in ring 0, Cortex-M (ARMv7-M, one CPU) in privileged mode.
 *
 * Masking nests per CPU (xv6's push_off/pop_off): kh_bm_cpus[cpu] holds
 * the depth and the interrupt state from before the outermost mask, and
 * interrupts come back only when the depth returns to 0. So locks may be
 * released in any order (kheap_check releases its locks in the order it
 * took them) and kheap_port_cpu_enter may be taken with or without locks
 * held, and interrupts are never unmasked while this CPU holds a kheap
 * lock or is inside the per-CPU layer.
 *
 * Why the per-CPU words need no lock: kh_bm_cpus[cpu] is read and written
 * only by CPU cpu, and only with its interrupts masked (the mask comes
 * first in push, the restore last in pop; kheap uses the local word only
 * between cpu_enter and cpu_exit), so nothing else runs on that CPU in
 * between; no other CPU touches the entry.
 */
#ifndef KHEAP_BAREMETAL_CPU_H
#define KHEAP_BAREMETAL_CPU_H

#include <stdint.h>

struct kh_bm_cpu {
    unsigned depth;       /* masks taken and not yet undone */
    uintptr_t saved;      /* interrupt state from before the outermost mask */
    struct kh_cpu *local; /* the default heap's state of this CPU
                             (kheap_port_cpu_local); &kh_cpu_sentinel
                             until kheap sets it */
} __attribute__((aligned(64)));
_Static_assert(sizeof(struct kh_bm_cpu) == 64, "one cache line per CPU");

extern struct kh_bm_cpu kh_bm_cpus[KHEAP_MAX_CPUS];
void kh_bm_bad_cpu(unsigned index) __attribute__((noreturn));

#if defined(__riscv) && __riscv_xlen == 64
/* sstatus.SIE (bit 1) gates supervisor interrupts. */
static inline uintptr_t kh_bm_irq_save(void)
{
    uintptr_t s;
    __asm__ volatile("csrrci %0, sstatus, 2" : "=r"(s) : : "memory");
    return s & 2;
}
static inline void kh_bm_irq_restore(uintptr_t s)
{
    if (s)
        __asm__ volatile("csrsi sstatus, 2" : : : "memory");
}
/* The boot code keeps the hart id in tp (nothing here uses TLS). */
static inline unsigned kh_bm_hw_index(void)
{
    uintptr_t t;
    __asm__ volatile("mv %0, tp" : "=r"(t));
    return (unsigned)t;
}
static inline void kh_bm_relax(void)
{
    __asm__ volatile("nop" : : : "memory");
}
#elif defined(__aarch64__)
/* DAIF: mask IRQ and FIQ (daifset #3); restore the whole saved DAIF. */
static inline uintptr_t kh_bm_irq_save(void)
{
    uintptr_t s;
    __asm__ volatile("mrs %0, daif\n\tmsr daifset, #3" : "=r"(s) : : "memory");
    return s;
}
static inline void kh_bm_irq_restore(uintptr_t s)
{
    __asm__ volatile("msr daif, %0" : : "r"(s) : "memory");
}
/* MPIDR_EL1: Aff0 + 16 * Aff1 (QEMU virt numbers its CPUs in Aff0). */
static inline unsigned kh_bm_hw_index(void)
{
    uintptr_t m;
    __asm__ volatile("mrs %0, mpidr_el1" : "=r"(m));
    return (unsigned)((m & 0xff) + 16 * ((m >> 8) & 0xff));
}
static inline void kh_bm_relax(void)
{
    __asm__ volatile("yield" : : : "memory");
}
#elif defined(__x86_64__)
/* RFLAGS.IF (bit 9). */
static inline uintptr_t kh_bm_irq_save(void)
{
    uintptr_t f;
    __asm__ volatile("pushfq\n\tpopq %0\n\tcli" : "=r"(f) : : "memory");
    return f & 0x200;
}
static inline void kh_bm_irq_restore(uintptr_t s)
{
    if (s)
        __asm__ volatile("sti" : : : "memory");
}
/* The initial APIC id, CPUID leaf 1, EBX bits 31..24. */
static inline unsigned kh_bm_hw_index(void)
{
    uint32_t a = 1, b, c = 0, d;
    __asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
    return b >> 24;
}
static inline void kh_bm_relax(void)
{
    __asm__ volatile("pause" : : : "memory");
}
#elif defined(__ARM_ARCH_PROFILE) && __ARM_ARCH_PROFILE == 'M'
/* PRIMASK (bit 0 set: every configurable-priority interrupt masked, so
 * SysTick and all NVIC interrupts; NMI and HardFault are not maskable and
 * must not call kheap). Saved and restored whole. Needs privileged code:
 * in unprivileged thread mode CPSID is ignored. */
static inline uintptr_t kh_bm_irq_save(void)
{
    uint32_t m;
    __asm__ volatile("mrs %0, primask\n\tcpsid i" : "=r"(m) : : "memory");
    return m;
}
static inline void kh_bm_irq_restore(uintptr_t s)
{
    __asm__ volatile("msr primask, %0" : : "r"((uint32_t)s) : "memory");
}
/* One CPU: its index is 0. A lock found held on one CPU is held by the
 * code it interrupted, which the port reports as taken twice rather than
 * spinning (kheap_port_lock). */
static inline unsigned kh_bm_hw_index(void)
{
    return 0;
}
static inline void kh_bm_relax(void)
{
    __asm__ volatile("nop" : : : "memory");
}
#else
#error "the bare-metal port knows riscv64, aarch64, x86_64 and Cortex-M"
#endif

/* Mask interrupts (nesting) and return this CPU's index. */
static inline unsigned kh_bm_push(void)
{
    uintptr_t s = kh_bm_irq_save();
    unsigned cpu = kh_bm_hw_index();
    if (cpu >= KHEAP_MAX_CPUS)
        kh_bm_bad_cpu(cpu);
    struct kh_bm_cpu *c = &kh_bm_cpus[cpu];
    if (c->depth++ == 0)
        c->saved = s;
    return cpu;
}

/* Undo one kh_bm_push on CPU cpu (the caller's own CPU). */
static inline void kh_bm_pop(unsigned cpu)
{
    struct kh_bm_cpu *c = &kh_bm_cpus[cpu];
    if (--c->depth == 0)
        kh_bm_irq_restore(c->saved);
}

/* Preemption is interrupts masked: the kernels that use this port switch
 * tasks only from interrupts. Never returns KHEAP_CPU_NONE. */
static inline unsigned kheap_port_cpu_enter(void)
{
    return kh_bm_push();
}

static inline void kheap_port_cpu_exit(unsigned cpu)
{
    kh_bm_pop(cpu);
}

/* The per-CPU word of the default heap, in this CPU's record. Called
 * between enter and exit, so the CPU cannot change under the caller and
 * only this CPU reads or writes its word. */
#define KHEAP_PORT_CPU_LOCAL 1
static inline struct kh_cpu *kheap_port_cpu_local(void)
{
    return kh_bm_cpus[kh_bm_hw_index()].local;
}
static inline void kheap_port_cpu_local_set(unsigned cpu, struct kh_cpu *pc)
{
    kh_bm_cpus[cpu].local = pc;
}

/* kheap_port_trylock is in baremetal.c. */
#define KHEAP_PORT_TRYLOCK 1

#endif /* KHEAP_BAREMETAL_CPU_H */
