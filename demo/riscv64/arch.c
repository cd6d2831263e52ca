/*
 * arch.c - RISC-V 64 for the demo kernel: QEMU virt, S-mode under
 * OpenSBI. NS16550A UART at 0x10000000; harts started with the SBI HSM
 * extension; timer through the SBI TIME extension; exit through the
 * SiFive test device at 0x100000 (0x5555: pass; code << 16 | 0x3333:
 * fail, QEMU exits with that code).
 */
#include <stdint.h>

#include "arch.h"
#include "kheap_baremetal.h"

const char arch_name[] = "riscv64";
const char arch_machine[] = "QEMU virt, S-mode under OpenSBI, harts started with SBI HSM";
const char arch_cpu_id[] = "hart id";

#define UART ((volatile uint8_t *)0x10000000)
#define UART_LSR 5
#define UART_THRE 0x20
#define TEST_DEVICE ((volatile uint32_t *)0x100000)
#define TIMEBASE_HZ 10000000u /* QEMU virt's timebase-frequency */

#define SBI_EXT_TIME 0x54494d45
#define SBI_EXT_HSM 0x48534d

struct sbiret {
    long error, value;
};

static struct sbiret sbi_call(long ext, long fid, long a0, long a1, long a2)
{
    register long r0 __asm__("a0") = a0;
    register long r1 __asm__("a1") = a1;
    register long r2 __asm__("a2") = a2;
    register long r6 __asm__("a6") = fid;
    register long r7 __asm__("a7") = ext;
    __asm__ volatile("ecall" : "+r"(r0), "+r"(r1) : "r"(r2), "r"(r6), "r"(r7) : "memory");
    return (struct sbiret){r0, r1};
}

void _secondary(void);
void riscv_trap(void);

void arch_init(void)
{
}

void arch_putc(char c)
{
    while (!(UART[UART_LSR] & UART_THRE))
        ;
    UART[0] = (uint8_t)c;
}

unsigned arch_start_cpus(void)
{
    unsigned me = kheap_bm_cpu_index(), asked = 0;
    for (unsigned hart = 0; hart < DEMO_MAX_CPUS; hart++) {
        if (hart == me)
            continue;
        struct sbiret r = sbi_call(SBI_EXT_HSM, 0, (long)hart, (long)(uintptr_t)_secondary, 0);
        asked += r.error == 0;
    }
    return asked;
}

void arch_exit(int failed)
{
    *TEST_DEVICE = failed ? (1u << 16) | 0x3333 : 0x5555;
    for (;;)
        __asm__ volatile("wfi");
}

uint64_t arch_ticks(void)
{
    uint64_t t;
    __asm__ volatile("rdtime %0" : "=r"(t));
    return t;
}

uint64_t arch_tick_hz(void)
{
    return TIMEBASE_HZ;
}

bool arch_irqs_on(void)
{
    uintptr_t s;
    __asm__ volatile("csrr %0, sstatus" : "=r"(s));
    return s & 2;
}

void arch_irqs_enable(void)
{
    __asm__ volatile("csrsi sstatus, 2" : : : "memory");
}

/* sie.STIE is bit 5; the SBI clears the pending timer when it is set
 * again. */
bool arch_timer_arm(void)
{
    sbi_call(SBI_EXT_TIME, 0, (long)(arch_ticks() + TIMEBASE_HZ / 1000), 0, 0);
    __asm__ volatile("csrs sie, %0" : : "r"(1ul << 5) : "memory");
    return true;
}

void arch_timer_disarm(void)
{
    __asm__ volatile("csrc sie, %0" : : "r"(1ul << 5) : "memory");
    sbi_call(SBI_EXT_TIME, 0, -1, 0, 0);
}

void riscv_trap(void)
{
    uintptr_t cause, epc, tval;
    __asm__ volatile("csrr %0, scause" : "=r"(cause));
    __asm__ volatile("csrr %0, sepc" : "=r"(epc));
    __asm__ volatile("csrr %0, stval" : "=r"(tval));
    if (cause == ((1ul << 63) | 5)) { /* supervisor timer interrupt */
        sbi_call(SBI_EXT_TIME, 0, -1, 0, 0);
        demo_irq_handler();
        return;
    }
    char line[128];
    static const char hex[] = "0123456789abcdef";
    const char *msg = "trap: unexpected scause/sepc/stval ";
    unsigned n = 0;
    while (*msg)
        line[n++] = *msg++;
    uintptr_t v[3] = {cause, epc, tval};
    for (int k = 0; k < 3; k++) {
        for (int b = 60; b >= 0; b -= 4)
            line[n++] = hex[(v[k] >> b) & 15];
        line[n++] = ' ';
    }
    line[n] = '\0';
    kheap_bm_puts(line);
    arch_exit(1);
}
