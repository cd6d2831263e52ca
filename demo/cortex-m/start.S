/*
 * start.S - vector table and reset code of the Cortex-M demo kernel
 * (QEMU mps2-an385, a Cortex-M3, one CPU).
 *
 * QEMU loads the image and the CPU takes its initial stack pointer and
 * reset address from the vector table at 0 (VTOR resets to 0). Reset
 * masks interrupts (PRIMASK; the kernel starts with them masked), zeroes
 * the BSS and calls kernel_main on the main stack (MSP), the only stack:
 * handlers run on it too. Every fault goes to cm_fault, which hands the
 * exception frame and EXC_RETURN to cortex_m_fault (arch.c); SysTick to
 * cortex_m_systick. The hardware saves r0-r3, r12, lr, pc and xPSR on
 * entry, so handlers are ordinary C functions.
 */
    .syntax unified
    .cpu    cortex-m3
    .thumb

    .section .vectors, "a"
    .align  2
    .globl  __vectors
__vectors:
    .word   __stack_top         /* initial MSP */
    .word   _reset              /* 1 reset */
    .word   cm_fault            /* 2 NMI */
    .word   cm_fault            /* 3 HardFault */
    .word   cm_fault            /* 4 MemManage */
    .word   cm_fault            /* 5 BusFault */
    .word   cm_fault            /* 6 UsageFault */
    .word   0, 0, 0, 0          /* 7-10 reserved */
    .word   cm_fault            /* 11 SVCall */
    .word   cm_fault            /* 12 DebugMonitor */
    .word   0                   /* 13 reserved */
    .word   cm_fault            /* 14 PendSV */
    .word   cortex_m_systick    /* 15 SysTick */
    /* No external interrupt is enabled in the NVIC, so no entries
     * follow; an unexpected one would fault on the missing vector. */

    .text
    .thumb_func
    .globl  _reset
    .type   _reset, %function
_reset:
    cpsid   i
    ldr     r0, =__bss_start
    ldr     r1, =__bss_end
    movs    r2, #0
1:  cmp     r0, r1
    bhs     2f
    str     r2, [r0], #4
    b       1b
2:  bl      kernel_main
3:  wfi
    b       3b
    .size   _reset, . - _reset

    .thumb_func
    .type   cm_fault, %function
cm_fault:
    mrs     r0, msp
    mov     r1, lr
    b       cortex_m_fault
    .size   cm_fault, . - cm_fault
