/*
 * start.S - entry of the RISC-V 64 demo kernel, in S-mode under the SBI
 * firmware (QEMU's default OpenSBI), loaded at 0x80200000.
 *
 * The firmware enters _start on one hart, the boot hart, with a0 = its
 * hart id and a1 = the device tree; the other harts wait in the SBI's
 * HSM "stopped" state until arch_start_cpus starts them at _secondary
 * (a0 = hart id). Every hart keeps its hart id in tp (the port's CPU
 * index: S-mode cannot read mhartid) and runs on stack hart id + 1.
 *
 * One hart boots: the first to swap boot_lottery. A second hart was seen
 * entering _start as well (once in many boots with the host's CPUs
 * busy): two kernels then ran on one memory, each clearing the other's
 * BSS. Any later hart here waits until the boot hart has cleared the BSS
 * (boot_ready) and joins as a secondary, as Linux's head.S holds a
 * lottery for firmware that sends every hart to the entry.
 */
    .section .text.boot, "ax"
    .globl _start
_start:
    csrw    sie, zero
    csrci   sstatus, 2
    la      t0, boot_lottery
    li      t1, 1
    amoswap.w t1, t1, (t0)
    bnez    t1, 6f
    mv      tp, a0
    la      t0, __bss_start
    la      t1, __bss_end
1:  bgeu    t0, t1, 2f
    sd      zero, 0(t0)
    addi    t0, t0, 8
    j       1b
2:  fence   rw, w
    la      t0, boot_ready
    li      t1, 1
    sw      t1, 0(t0)
    call    set_stack
    la      t0, trap_entry
    csrw    stvec, t0
    call    kernel_main
3:  wfi
    j       3b

    /* Not the boot hart: once the BSS is clear, a secondary. */
6:  la      t0, boot_ready
7:  lw      t1, 0(t0)
    beqz    t1, 7b
    fence   r, rw

    .globl _secondary
_secondary:
    csrw    sie, zero
    csrci   sstatus, 2
    mv      tp, a0
    call    set_stack
    la      t0, trap_entry
    csrw    stvec, t0
    call    kernel_secondary
4:  wfi
    j       4b

/* sp = __stacks_start + (tp + 1) * 16384; a hart id beyond the stacks
 * stops here. Leaf: returns through ra, touches t0 and t1 only. */
set_stack:
    li      t0, 8
    bgeu    tp, t0, 5f
    addi    t0, tp, 1
    slli    t0, t0, 14
    la      t1, __stacks_start
    add     sp, t1, t0
    ret
5:  wfi
    j       5b

/* Traps: save the registers a C call may change, call riscv_trap, and
 * return to where the trap hit (the handler runs with SIE clear). */
    .align  4
trap_entry:
    addi    sp, sp, -144
    sd      ra, 0(sp)
    sd      t0, 8(sp)
    sd      t1, 16(sp)
    sd      t2, 24(sp)
    sd      t3, 32(sp)
    sd      t4, 40(sp)
    sd      t5, 48(sp)
    sd      t6, 56(sp)
    sd      a0, 64(sp)
    sd      a1, 72(sp)
    sd      a2, 80(sp)
    sd      a3, 88(sp)
    sd      a4, 96(sp)
    sd      a5, 104(sp)
    sd      a6, 112(sp)
    sd      a7, 120(sp)
    call    riscv_trap
    ld      ra, 0(sp)
    ld      t0, 8(sp)
    ld      t1, 16(sp)
    ld      t2, 24(sp)
    ld      t3, 32(sp)
    ld      t4, 40(sp)
    ld      t5, 48(sp)
    ld      t6, 56(sp)
    ld      a0, 64(sp)
    ld      a1, 72(sp)
    ld      a2, 80(sp)
    ld      a3, 88(sp)
    ld      a4, 96(sp)
    ld      a5, 104(sp)
    ld      a6, 112(sp)
    ld      a7, 120(sp)
    addi    sp, sp, 144
    sret

    .section .data
    .balign 4
boot_lottery:
    .word   0
boot_ready:
    .word   0
