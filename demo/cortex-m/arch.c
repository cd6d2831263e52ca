/*
 * arch.c - Cortex-M for the demo kernel: QEMU mps2-an385 (a Cortex-M3 at
 * 25 MHz, one CPU). The CMSDK APB UART0 at 0x40004000 is the console;
 * the CMSDK APB timer 0 at 0x40000000, free-running down from
 * 0xffffffff, is the clock; SysTick (system exception 15, no NVIC set-up)
 * is the interrupt that allocates; semihosting SYS_EXIT_EXTENDED leaves
 * QEMU with the status (QEMU needs -semihosting-config enable=on).
 */
#include <stdint.h>

#include "arch.h"
#include "kheap_baremetal.h"

const char arch_name[] = "cortex-m";
const char arch_machine[] = "QEMU mps2-an385, Cortex-M3, one CPU";
const char arch_cpu_id[] = "always 0 on one CPU";

#define SYSCLK_HZ 25000000u

/* CMSDK APB UART: DATA, STATE (bit 0: TX buffer full), CTRL (bit 0: TX
 * enable), INTSTATUS, BAUDDIV (at least 16). */
#define UART ((volatile uint32_t *)0x40004000)
#define UART_DATA 0
#define UART_STATE 1
#define UART_CTRL 2
#define UART_BAUDDIV 4
/* CMSDK APB timer: CTRL (bit 0: enable), VALUE (counts down at the
 * system clock), RELOAD. */
#define TIMER ((volatile uint32_t *)0x40000000)
#define TIMER_CTRL 0
#define TIMER_VALUE 1
#define TIMER_RELOAD 2
/* SysTick: CSR (bit 0 enable, bit 1 interrupt, bit 2 processor clock),
 * RVR (24-bit reload), CVR (a write clears it). */
#define SYST ((volatile uint32_t *)0xe000e010)
#define SYST_CSR 0
#define SYST_RVR 1
#define SYST_CVR 2
/* System control block: CCR (bit 9: 8-byte stack alignment on
 * exception entry), CFSR, HFSR, MMFAR, BFAR. */
#define SCB_CCR (*(volatile uint32_t *)0xe000ed14)
#define SCB_CFSR (*(volatile uint32_t *)0xe000ed28)
#define SCB_HFSR (*(volatile uint32_t *)0xe000ed2c)
#define SCB_MMFAR (*(volatile uint32_t *)0xe000ed34)
#define SCB_BFAR (*(volatile uint32_t *)0xe000ed38)

void cortex_m_systick(void);
void cortex_m_fault(const uint32_t *frame, uint32_t exc_return);

void arch_init(void)
{
    SCB_CCR |= 1u << 9;
    UART[UART_BAUDDIV] = 16;
    UART[UART_CTRL] = 1;
    TIMER[TIMER_CTRL] = 0;
    TIMER[TIMER_RELOAD] = 0xffffffffu;
    TIMER[TIMER_VALUE] = 0xffffffffu;
    TIMER[TIMER_CTRL] = 1;
}

void arch_putc(char c)
{
    while (UART[UART_STATE] & 1)
        ;
    UART[UART_DATA] = (uint8_t)c;
}

unsigned arch_start_cpus(void)
{
    return 0;
}

void arch_exit(int failed)
{
    /* SYS_EXIT_EXTENDED (0x20): r1 points at {reason, status};
     * ADP_Stopped_ApplicationExit (0x20026) makes QEMU exit with status. */
    static volatile uint32_t block[2];
    block[0] = 0x20026;
    block[1] = failed ? 1 : 0;
    register uint32_t r0 __asm__("r0") = 0x20;
    register uint32_t r1 __asm__("r1") = (uint32_t)(uintptr_t)block;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    for (;;)
        __asm__ volatile("wfi");
}

/* The 32-bit timer wraps every 172 s at 25 MHz; the high word counts
 * wraps seen between two calls, which the kernel makes far more often
 * than that. Only thread code calls it (never the handler). */
uint64_t arch_ticks(void)
{
    static uint32_t last, high;
    uint32_t now = ~TIMER[TIMER_VALUE]; /* counting up from 0 */
    if (now < last)
        high++;
    last = now;
    return ((uint64_t)high << 32) | now;
}

uint64_t arch_tick_hz(void)
{
    return SYSCLK_HZ;
}

bool arch_irqs_on(void)
{
    uint32_t m;
    __asm__ volatile("mrs %0, primask" : "=r"(m));
    return !(m & 1);
}

void arch_irqs_enable(void)
{
    __asm__ volatile("cpsie i" : : : "memory");
}

/* One shot 1 ms from now: the handler stops the timer first. */
bool arch_timer_arm(void)
{
    SYST[SYST_CSR] = 0;
    SYST[SYST_RVR] = SYSCLK_HZ / 1000 - 1;
    SYST[SYST_CVR] = 0;
    SYST[SYST_CSR] = 7;
    return true;
}

void arch_timer_disarm(void)
{
    SYST[SYST_CSR] = 0;
}

void cortex_m_systick(void)
{
    /* Entry cleared the pending bit; with the counter stopped no second
     * one comes until demo_irq_handler arms it again. */
    arch_timer_disarm();
    demo_irq_handler();
}

static void put_hex32(char *line, unsigned *n, uint32_t v)
{
    for (int b = 28; b >= 0; b -= 4)
        line[(*n)++] = "0123456789abcdef"[(v >> b) & 15];
    line[(*n)++] = ' ';
}

/* frame: r0, r1, r2, r3, r12, lr, pc, xPSR as the hardware stacked them. */
void cortex_m_fault(const uint32_t *frame, uint32_t exc_return)
{
    uint32_t ipsr;
    __asm__ volatile("mrs %0, ipsr" : "=r"(ipsr));
    char line[160];
    const char *msg = "trap: exception/pc/lr/cfsr/hfsr/mmfar/bfar/exc_return ";
    unsigned n = 0;
    while (*msg)
        line[n++] = *msg++;
    uint32_t v[8] = {ipsr & 0x1ff, frame[6], frame[5], SCB_CFSR, SCB_HFSR,
                     SCB_MMFAR,    SCB_BFAR, exc_return};
    for (int k = 0; k < 8; k++)
        put_hex32(line, &n, v[k]);
    line[n] = '\0';
    kheap_bm_puts(line);
    arch_exit(1);
}
