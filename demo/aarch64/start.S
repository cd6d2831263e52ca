/*
 * start.S - entry of the AArch64 demo kernel at EL1 on QEMU virt (loaded
 * as an ELF at 0x40200000; no firmware, PSCI answered by QEMU over HVC).
 *
 * The boot CPU clears BSS and calls kernel_main; CPUs started with PSCI
 * CPU_ON enter at _secondary. Each CPU runs on stack Aff0 + 1, turns its
 * MMU on over the shared identity map (aarch64_mmu_on, arch.c), installs
 * the vector table and calls into C with IRQ and FIQ masked.
 */
    .section .text.boot, "ax"
    .globl _start
_start:
    msr     daifset, #0xf
    ldr     x1, =__bss_start
    ldr     x2, =__bss_end
1:  cmp     x1, x2
    b.hs    2f
    str     xzr, [x1], #8
    b       1b
2:  bl      set_stack
    bl      aarch64_build_map
    bl      aarch64_mmu_on
    ldr     x0, =vectors
    msr     vbar_el1, x0
    isb
    bl      kernel_main
3:  wfe
    b       3b

    .globl _secondary
_secondary:
    msr     daifset, #0xf
    bl      set_stack
    bl      aarch64_mmu_on
    ldr     x0, =vectors
    msr     vbar_el1, x0
    isb
    bl      kernel_secondary
4:  wfe
    b       4b

/* sp = __stacks_start + (Aff0 + 1) * 16384; Aff0 beyond the 8 stacks
 * stops here. Leaf: x9, x10 only. */
set_stack:
    mrs     x9, mpidr_el1
    and     x9, x9, #0xff
    cmp     x9, #8
    b.hs    5f
    add     x9, x9, #1
    lsl     x9, x9, #14
    ldr     x10, =__stacks_start
    add     x10, x10, x9
    mov     sp, x10
    ret
5:  wfe
    b       5b

/* Exception vectors: every entry saves the registers a C call may change
 * and calls aarch64_trap(kind); kind = entry index (5 = IRQ at EL1 with
 * SP_EL1, the only one expected). */
    .macro  vent kind
    .align  7
    sub     sp, sp, #192
    stp     x0, x1, [sp, #0]
    mov     x0, #\kind
    b       trap_common
    .endm

    .align  11
vectors:
    vent 0
    vent 1
    vent 2
    vent 3
    vent 4
    vent 5
    vent 6
    vent 7
    vent 8
    vent 9
    vent 10
    vent 11
    vent 12
    vent 13
    vent 14
    vent 15

trap_common:
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x29, [sp, #144]
    str     x30, [sp, #160]
    bl      aarch64_trap
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x29, [sp, #144]
    ldr     x30, [sp, #160]
    ldp     x0, x1, [sp, #0]
    add     sp, sp, #192
    eret
