/*
 * kheap_baremetal.h - extras of the bare-metal port (src/port/baremetal.c)
 * for RISC-V 64 (S-mode), AArch64 (EL1), x86_64 (long mode, ring 0) and
 * Cortex-M (ARMv7-M, privileged, one CPU). Not part of the freestanding
 * core.
 *
 * What the port does:
 *  - Locks are spinlocks that mask interrupts on the local CPU from before
 *    they spin until after they are released (RISC-V: sstatus.SIE;
 *    AArch64: DAIF.I and DAIF.F; x86_64: RFLAGS.IF; Cortex-M: PRIMASK,
 *    which leaves NMI and HardFault, so those handlers must not call
 *    kheap). The masking nests per CPU: interrupts come back on when the
 *    CPU's last lock is released and it has left the per-CPU layer,
 *    whatever the order of the releases.
 *  - kheap_port_cpu_enter masks interrupts too (preemption = interrupts
 *    masked) and returns the CPU index from the hardware: RISC-V the hart
 *    id, which the kernel keeps in the tp register (S-mode cannot read
 *    mhartid; the SBI passes it in a0 at entry); AArch64 MPIDR_EL1
 *    (Aff0 + 16 * Aff1); x86_64 the initial APIC id (CPUID leaf 1);
 *    Cortex-M 0 (one CPU: build with KHEAP_MAX_CPUS=1). On one CPU a lock
 *    is never contended: an interrupt handler that finds a kheap lock held
 *    cannot run, since the holder masked interrupts; taking a lock twice
 *    (a handler not masked by PRIMASK, or a bug) is a panic, not a spin.
 *  - Cortex-M: ARMv7-M has no 8-byte exclusive loads and stores, so GCC
 *    calls __atomic_load_8, __atomic_store_8, __atomic_fetch_add_8,
 *    __atomic_exchange_8 and __atomic_compare_exchange_8 for the core's
 *    64-bit counters; the port defines them, masking interrupts around
 *    plain accesses (atomic on one CPU, not against DMA or another
 *    master). A kernel that links libatomic must leave them out.
 *  - Reports print one line on the console and return (the bad operation
 *    is ignored), unless kheap_set_report_hook (kheap.h) routes them
 *    elsewhere; panics print and stop the machine through the kernel's
 *    kheap_bm_halt.
 *
 * What the kernel supplies (ordinary functions it defines):
 */
#ifndef KHEAP_BAREMETAL_H
#define KHEAP_BAREMETAL_H

#include <stddef.h>

#include "kheap_port.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Write n bytes to the console. Called from any CPU, with interrupts
 * masked; the port serialises calls with its own console lock. */
void kheap_bm_console_write(const char *s, size_t n);

/* Stop the machine after a panic; never returns. */
void kheap_bm_halt(void) __attribute__((noreturn));

/* What the port offers. */

/* One console line, made whole under the console lock: lines from
 * several CPUs do not interleave. s need not end in a newline (one is
 * added). Usable from interrupt context. */
void kheap_bm_puts(const char *s);

/* Mask interrupts on this CPU (nesting), and undo it: what the port's
 * locks and kheap_port_cpu_enter do, for kernel code of its own. */
void kheap_bm_irq_push(void);
void kheap_bm_irq_pop(void);

/* The calling CPU's index as kheap sees it (see above). */
unsigned kheap_bm_cpu_index(void);

#ifdef __cplusplus
}
#endif

#endif /* KHEAP_BAREMETAL_H */
