/*
 * arch.c - AArch64 for the demo kernel: QEMU virt at EL1. PL011 UART at
 * 0x09000000; CPUs started with PSCI CPU_ON over HVC (QEMU's own PSCI
 * when it boots a kernel at EL1); MMU on over an identity map of the
 * first 4 GiB in 1 GiB blocks (device memory below 1 GiB, normal
 * write-back memory above); the virtual timer through the GICv2; exit
 * through semihosting SYS_EXIT (QEMU -semihosting exits with the code).
 */
#include <stdint.h>

#include "arch.h"
#include "kheap_baremetal.h"

const char arch_name[] = "aarch64";
const char arch_machine[] = "QEMU virt, EL1, CPUs started with PSCI CPU_ON";
const char arch_cpu_id[] = "MPIDR_EL1 affinity";

#define UART ((volatile uint32_t *)0x09000000)
#define UART_FR 6 /* flag register, in words */
#define UART_TXFF 0x20
#define GICD ((volatile uint32_t *)0x08000000)
#define GICC ((volatile uint32_t *)0x08010000)
#define TIMER_PPI 27 /* the EL1 virtual timer */

#define PSCI_CPU_ON 0xc4000003ul

void _secondary(void);
void aarch64_build_map(void);
void aarch64_mmu_on(void);
void aarch64_trap(unsigned long kind);

/* Level-1 table of 4 x 1 GiB blocks. Block descriptor: bits 1:0 = 01,
 * AttrIndx bits 4:2, SH bits 9:8 (3: inner shareable), AF bit 10. */
static uint64_t l1_table[512] __attribute__((aligned(4096)));

void aarch64_build_map(void)
{
    for (uint64_t i = 0; i < 4; i++) {
        uint64_t attr = i == 0 ? (1u << 2) /* device */ : (0u << 2) | (3u << 8);
        l1_table[i] = (i << 30) | attr | (1u << 10) | 1u;
    }
}

/* MAIR: Attr0 normal write-back read/write-allocate, Attr1 device
 * nGnRnE. TCR: T0SZ 32 (4 GiB), write-back walks, inner shareable, 4 KiB
 * granule, no TTBR1 walks (EPD1). SCTLR: MMU, data and instruction
 * caches on; alignment checks off. */
void aarch64_mmu_on(void)
{
    uint64_t mair = 0xffull | (0x00ull << 8);
    uint64_t tcr = 32ull | (1ull << 8) | (1ull << 10) | (3ull << 12) | (1ull << 23);
    __asm__ volatile("msr mair_el1, %0\n\t"
                     "msr tcr_el1, %1\n\t"
                     "msr ttbr0_el1, %2\n\t"
                     "isb\n\t"
                     "tlbi vmalle1\n\t"
                     "dsb ish\n\t"
                     "isb" : : "r"(mair), "r"(tcr), "r"(l1_table) : "memory");
    uint64_t sctlr;
    __asm__ volatile("mrs %0, sctlr_el1" : "=r"(sctlr));
    sctlr |= (1u << 0) | (1u << 2) | (1u << 12);
    sctlr &= ~(uint64_t)(1u << 1);
    __asm__ volatile("msr sctlr_el1, %0\n\tisb" : : "r"(sctlr) : "memory");
}

static long psci(unsigned long fn, unsigned long a, unsigned long b, unsigned long c)
{
    register unsigned long x0 __asm__("x0") = fn;
    register unsigned long x1 __asm__("x1") = a;
    register unsigned long x2 __asm__("x2") = b;
    register unsigned long x3 __asm__("x3") = c;
    __asm__ volatile("hvc #0" : "+r"(x0) : "r"(x1), "r"(x2), "r"(x3) : "memory");
    return (long)x0;
}

void arch_init(void)
{
    /* GICv2: distributor and CPU interface on, the timer PPI enabled at a
     * priority the mask lets through. */
    GICD[0] = 1;
    GICD[0x100 / 4] = 1u << TIMER_PPI;
    ((volatile uint8_t *)GICD)[0x400 + TIMER_PPI] = 0x80;
    GICC[0x004 / 4] = 0xff;
    GICC[0] = 1;
}

void arch_putc(char c)
{
    while (UART[UART_FR] & UART_TXFF)
        ;
    UART[0] = (uint8_t)c;
}

unsigned arch_start_cpus(void)
{
    unsigned me = kheap_bm_cpu_index(), asked = 0;
    for (unsigned long aff0 = 0; aff0 < DEMO_MAX_CPUS; aff0++) {
        if (aff0 == me)
            continue;
        asked += psci(PSCI_CPU_ON, aff0, (unsigned long)(uintptr_t)_secondary, 0) == 0;
    }
    return asked;
}

void arch_exit(int failed)
{
    /* SYS_EXIT with ADP_Stopped_ApplicationExit and the exit code. */
    static volatile uint64_t block[2];
    block[0] = 0x20026;
    block[1] = failed ? 1 : 0;
    register uint64_t x0 __asm__("x0") = 0x18;
    register uint64_t x1 __asm__("x1") = (uint64_t)(uintptr_t)block;
    __asm__ volatile("hlt #0xf000" : : "r"(x0), "r"(x1) : "memory");
    for (;;)
        __asm__ volatile("wfe");
}

uint64_t arch_ticks(void)
{
    uint64_t t;
    __asm__ volatile("isb\n\tmrs %0, cntvct_el0" : "=r"(t));
    return t;
}

uint64_t arch_tick_hz(void)
{
    uint64_t f;
    __asm__ volatile("mrs %0, cntfrq_el0" : "=r"(f));
    return f;
}

bool arch_irqs_on(void)
{
    uint64_t d;
    __asm__ volatile("mrs %0, daif" : "=r"(d));
    return !(d & (1u << 7));
}

void arch_irqs_enable(void)
{
    __asm__ volatile("msr daifclr, #3" : : : "memory");
}

bool arch_timer_arm(void)
{
    uint64_t tval = arch_tick_hz() / 1000;
    __asm__ volatile("msr cntv_tval_el0, %0\n\t"
                     "msr cntv_ctl_el0, %1\n\t"
                     "isb" : : "r"(tval), "r"(1ul) : "memory");
    return true;
}

void arch_timer_disarm(void)
{
    __asm__ volatile("msr cntv_ctl_el0, %0\n\tisb" : : "r"(0ul) : "memory");
}

void aarch64_trap(unsigned long kind)
{
    if (kind == 5) { /* IRQ from EL1 */
        uint32_t iar = GICC[0x00c / 4];
        if ((iar & 0x3ff) == TIMER_PPI) {
            /* The PPI is level-triggered: stop the timer before EOI; the
             * handler arms it again if it wants another round. */
            arch_timer_disarm();
            demo_irq_handler();
        }
        GICC[0x010 / 4] = iar;
        return;
    }
    uint64_t esr, elr, far;
    __asm__ volatile("mrs %0, esr_el1" : "=r"(esr));
    __asm__ volatile("mrs %0, elr_el1" : "=r"(elr));
    __asm__ volatile("mrs %0, far_el1" : "=r"(far));
    char line[128];
    static const char hex[] = "0123456789abcdef";
    const char *msg = "trap: unexpected exception kind/esr/elr/far ";
    unsigned n = 0;
    while (*msg)
        line[n++] = *msg++;
    uint64_t v[4] = {kind, esr, elr, far};
    for (int k = 0; k < 4; k++) {
        for (int b = 60; b >= 0; b -= 4)
            line[n++] = hex[(v[k] >> b) & 15];
        line[n++] = ' ';
    }
    line[n] = '\0';
    kheap_bm_puts(line);
    arch_exit(1);
}
