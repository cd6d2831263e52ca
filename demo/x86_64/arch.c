/*
 * arch.c - x86_64 for the demo kernel: QEMU pc, booted as a multiboot
 * image, long mode with an identity map. COM1 UART at 0x3f8; the 8259
 * PIC remapped to vectors 32..47 with only the PIT's line unmasked while
 * the timer test runs; the TSC, calibrated against the PIT, as the clock;
 * secondary CPUs (APIC ids 1 .. n - 1, n from QEMU's fw_cfg) started
 * with INIT and two SIPIs through the local APIC;
 * exit through QEMU's isa-debug-exit device at port 0xf4 (QEMU exits
 * with (value << 1) | 1: 1 means passed here).
 */
#include <stdint.h>

#include "arch.h"
#include "kheap_baremetal.h"

const char arch_name[] = "x86_64";
const char arch_machine[] = "QEMU pc, multiboot, long mode, CPUs started with INIT/SIPI";
const char arch_cpu_id[] = "initial APIC id";

#define COM1 0x3f8
#define PIT_HZ 1193182u

#define LAPIC ((volatile uint32_t *)0xfee00000)
#define AP_TRAMP 0x8000u

void irq0_entry(void);
extern const char ap_tramp[], ap_tramp_end[];
void x86_ap_main(void) __attribute__((noreturn));
extern const char fault_stubs[];
void x86_irq(void);
void x86_fault(uint64_t vector, const uint64_t *frame);

static inline void outb(uint16_t port, uint8_t v)
{
    __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port) : "memory");
}

static inline uint8_t inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port) : "memory");
    return v;
}

struct idt_gate {
    uint16_t off_lo, selector;
    uint8_t ist, type;
    uint16_t off_mid;
    uint32_t off_hi, zero;
};
_Static_assert(sizeof(struct idt_gate) == 16, "64-bit IDT gate");

static struct idt_gate idt[48];
static uint64_t tsc_hz;
static struct __attribute__((packed)) {
    uint16_t limit;
    uint64_t base;
} idtr;

static void set_gate(unsigned v, uintptr_t fn)
{
    idt[v] = (struct idt_gate){(uint16_t)fn, 0x08, 0, 0x8e, (uint16_t)(fn >> 16),
                               (uint32_t)(fn >> 32), 0};
}

/* TSC ticks in 10 ms of PIT channel 2 (gate on port 0x61). */
static uint64_t calibrate_tsc(void)
{
    uint16_t count = PIT_HZ / 100;
    outb(0x61, (uint8_t)((inb(0x61) & ~0x02) | 0x01));
    outb(0x43, 0xb0); /* channel 2, low then high byte, mode 0 */
    outb(0x42, (uint8_t)count);
    outb(0x42, (uint8_t)(count >> 8));
    uint8_t g = inb(0x61);
    outb(0x61, (uint8_t)(g & ~0x01));
    outb(0x61, (uint8_t)(g | 0x01));
    uint64_t t0 = arch_ticks();
    while (!(inb(0x61) & 0x20))
        ;
    return (arch_ticks() - t0) * 100;
}

void arch_init(void)
{
    for (unsigned v = 0; v < 48; v++)
        set_gate(v, (uintptr_t)(fault_stubs + 16 * v));
    set_gate(32, (uintptr_t)irq0_entry);
    idtr.limit = sizeof idt - 1;
    idtr.base = (uint64_t)(uintptr_t)idt;
    __asm__ volatile("lidt %0" : : "m"(idtr));
    /* 8259 PICs: vectors 32..47, every line masked. */
    outb(0x20, 0x11);
    outb(0xa0, 0x11);
    outb(0x21, 32);
    outb(0xa1, 40);
    outb(0x21, 4);
    outb(0xa1, 2);
    outb(0x21, 1);
    outb(0xa1, 1);
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
    tsc_hz = calibrate_tsc();
}

void arch_putc(char c)
{
    while (!(inb(COM1 + 5) & 0x20))
        ;
    outb(COM1, (uint8_t)c);
}

static inline void outw(uint16_t port, uint16_t v)
{
    __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port) : "memory");
}

/* CPUs of the machine: QEMU's fw_cfg item 0x05 (FW_CFG_NB_CPUS), two
 * bytes little-endian through the data port 0x511. */
static unsigned machine_cpus(void)
{
    outw(0x510, 0x05);
    unsigned lo = inb(0x511), hi = inb(0x511);
    return lo | hi << 8;
}

static void delay_us(uint64_t us)
{
    uint64_t t0 = arch_ticks(), n = arch_tick_hz() / 1000000 * us;
    while (arch_ticks() - t0 < n)
        __asm__ volatile("pause");
}

/* Interrupt command: destination APIC id, then the command; wait until
 * the APIC has sent it. */
static void ipi(unsigned apic_id, uint32_t cmd)
{
    LAPIC[0x310 / 4] = apic_id << 24;
    LAPIC[0x300 / 4] = cmd;
    while (LAPIC[0x300 / 4] & (1u << 12))
        __asm__ volatile("pause");
}

unsigned arch_start_cpus(void)
{
    unsigned n = machine_cpus(), me = kheap_bm_cpu_index(), asked = 0;
    if (n > DEMO_MAX_CPUS)
        n = DEMO_MAX_CPUS;
    if (n < 2)
        return 0;
    volatile char *dst = (volatile char *)(uintptr_t)AP_TRAMP;
    for (const char *p = ap_tramp; p < ap_tramp_end; p++)
        *dst++ = *p;
    LAPIC[0xf0 / 4] |= 0x100 | 0xff; /* APIC software enable, spurious vector */
    for (unsigned id = 0; id < n; id++) {
        if (id == me)
            continue;
        ipi(id, 0x4500);                     /* INIT, level assert */
        delay_us(10000);
        for (int k = 0; k < 2; k++) {
            ipi(id, 0x4600 | (AP_TRAMP >> 12)); /* start-up at 0x8000 */
            delay_us(200);
        }
        asked++;
    }
    return asked;
}

void x86_ap_main(void)
{
    __asm__ volatile("lidt %0" : : "m"(idtr));
    kernel_secondary();
}

void arch_exit(int failed)
{
    outb(0xf4, failed ? 1 : 0);
    for (;;)
        __asm__ volatile("cli; hlt");
}

uint64_t arch_ticks(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

uint64_t arch_tick_hz(void)
{
    return tsc_hz ? tsc_hz : 1000000000u;
}

bool arch_irqs_on(void)
{
    uint64_t f;
    __asm__ volatile("pushfq; popq %0" : "=r"(f));
    return f & 0x200;
}

void arch_irqs_enable(void)
{
    __asm__ volatile("sti" : : : "memory");
}

/* PIT channel 0, mode 0: one interrupt after about 1 ms. */
bool arch_timer_arm(void)
{
    uint16_t count = PIT_HZ / 1000;
    outb(0x43, 0x30);
    outb(0x40, (uint8_t)count);
    outb(0x40, (uint8_t)(count >> 8));
    outb(0x21, 0xfe);
    return true;
}

void arch_timer_disarm(void)
{
    outb(0x21, 0xff);
}

void x86_irq(void)
{
    outb(0x20, 0x20); /* end of interrupt */
    demo_irq_handler();
}

void x86_fault(uint64_t vector, const uint64_t *frame)
{
    char line[128];
    static const char hex[] = "0123456789abcdef";
    const char *msg = "trap: unexpected vector/frame[0]/frame[1]/cr2 ";
    unsigned n = 0;
    uint64_t cr2;
    __asm__ volatile("movq %%cr2, %0" : "=r"(cr2));
    while (*msg)
        line[n++] = *msg++;
    uint64_t v[4] = {vector, frame[0], frame[1], cr2};
    for (int k = 0; k < 4; k++) {
        for (int b = 60; b >= 0; b -= 4)
            line[n++] = hex[(v[k] >> b) & 15];
        line[n++] = ' ';
    }
    line[n] = '\0';
    kheap_bm_puts(line);
    arch_exit(1);
}
