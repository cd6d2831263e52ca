/*
 * arch.h - what each demo kernel's architecture file (demo/<arch>/arch.c
 * and start.S) gives the shared kernel (demo/kernel.c).
 *
 * Boot: start.S runs the boot CPU with interrupts masked, on its own
 * stack, BSS zeroed, and calls kernel_main(); every secondary CPU that
 * arch_start_cpus starts calls kernel_secondary() on a stack of its own.
 */
#ifndef KHEAP_DEMO_ARCH_H
#define KHEAP_DEMO_ARCH_H

#include <stdbool.h>
#include <stdint.h>

#define DEMO_MAX_CPUS 8          /* stacks are reserved for this many */
#define DEMO_STACK_SIZE 16384

extern const char arch_name[];   /* "riscv64", ... */
extern const char arch_machine[];/* how the CPUs are found and started */
extern const char arch_cpu_id[]; /* what the port's CPU index is read from */

void arch_init(void);            /* boot CPU, first thing */
void arch_putc(char c);          /* one byte on the UART */
/* Start every other CPU the machine has (at most DEMO_MAX_CPUS in all);
 * returns how many were asked to start. */
unsigned arch_start_cpus(void);
/* Leave QEMU with a status that says whether failed is 0. */
void arch_exit(int failed) __attribute__((noreturn));
/* A free-running counter for the seed and timings, and its frequency. */
uint64_t arch_ticks(void);
uint64_t arch_tick_hz(void);
/* Whether interrupts are enabled on this CPU, and turn them on (no source
 * is set up to interrupt, so this only exercises the port's masking). */
bool arch_irqs_on(void);
void arch_irqs_enable(void);
/* An interrupt that allocates: arm a one-shot timer on this CPU whose
 * handler calls demo_irq_handler(); returns false if the arch has none. */
bool arch_timer_arm(void);
void arch_timer_disarm(void);

/* Called by the architecture code. */
void kernel_main(void) __attribute__((noreturn));
void kernel_secondary(void) __attribute__((noreturn));
void demo_irq_handler(void);

#endif /* KHEAP_DEMO_ARCH_H */
