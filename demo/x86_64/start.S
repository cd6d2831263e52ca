/*
 * start.S - entry of the x86_64 demo kernel, booted by QEMU as a
 * multiboot (version 1) image: QEMU enters _start in 32-bit protected
 * mode with paging off. The boot code identity-maps the first 4 GiB with
 * 2 MiB pages, enters long mode, clears BSS and calls kernel_main on
 * stack 0 (stack n belongs to the CPU of APIC id n, as on the other
 * architectures).
 */
    .section .multiboot, "a"
    .align  4
    .long   0x1badb002              /* magic */
    .long   0x00000003              /* flags: page-align modules, memory map */
    .long   -(0x1badb002 + 0x00000003)

    .section .text.boot, "ax"
    .code32
    .globl  _start
_start:
    cli
    movl    $__stacks_start + 16384, %esp
    /* Clear the six table pages: PML4, PDPT, four page directories. */
    movl    $pml4, %edi
    xorl    %eax, %eax
    movl    $6 * 1024, %ecx
    rep stosl
    movl    $pdpt + 0x003, %eax     /* present, writable */
    movl    %eax, pml4
    movl    $pdpt, %edi
    movl    $pd0 + 0x003, %eax
    movl    $4, %ecx
1:  movl    %eax, (%edi)
    addl    $4096, %eax
    addl    $8, %edi
    loop    1b
    /* 2048 entries of 2 MiB: present, writable, page size. */
    movl    $pd0, %edi
    movl    $0x083, %eax
    xorl    %edx, %edx
    movl    $2048, %ecx
2:  movl    %eax, (%edi)
    movl    %edx, 4(%edi)
    addl    $0x200000, %eax
    adcl    $0, %edx
    addl    $8, %edi
    loop    2b
    /* The fourth GiB holds the local APIC and other devices: uncached
     * (PCD | PWT). */
    movl    $pd0 + 3 * 4096, %edi
    movl    $512, %ecx
5:  orl     $0x18, (%edi)
    addl    $8, %edi
    loop    5b
    movl    $pml4, %eax
    movl    %eax, %cr3
    movl    %cr4, %eax
    orl     $0x620, %eax            /* PAE; OSFXSR, OSXMMEXCPT: SSE usable
                                       (Rust's precompiled core uses it) */
    movl    %eax, %cr4
    movl    $0xc0000080, %ecx       /* EFER */
    rdmsr
    orl     $0x100, %eax            /* LME */
    wrmsr
    movl    %cr0, %eax
    andl    $~4, %eax               /* no x87 emulation (EM) */
    orl     $0x80000003, %eax       /* PG, PE, MP */
    movl    %eax, %cr0
    lgdt    gdt_ptr
    ljmp    $0x08, $long_entry

    .code64
long_entry:
    movw    $0x10, %ax
    movw    %ax, %ds
    movw    %ax, %es
    movw    %ax, %ss
    xorw    %ax, %ax
    movw    %ax, %fs
    movw    %ax, %gs
    movq    $__bss_start, %rdi
    movq    $__bss_end, %rcx
    subq    %rdi, %rcx
    shrq    $3, %rcx
    xorl    %eax, %eax
    rep stosq
    movq    $__stacks_start + 16384, %rsp
    call    kernel_main
3:  hlt
    jmp     3b

/* Secondary CPUs. arch_start_cpus copies ap_tramp..ap_tramp_end to
 * AP_TRAMP (0x8000) and sends INIT, SIPI, SIPI with vector 0x08: the CPU
 * starts there in real mode. It goes straight to long mode (PAE, the
 * boot CPU's page tables, EFER.LME, then PE and PG at once), jumps to
 * ap_long_entry through the shared GDT, takes stack n for APIC id n and
 * calls x86_ap_main. Only addresses inside the trampoline are
 * relocated by hand (label - ap_tramp + AP_TRAMP). */
    .set    AP_TRAMP, 0x8000
    .code16
    .globl  ap_tramp, ap_tramp_end
ap_tramp:
    cli
    xorw    %ax, %ax
    movw    %ax, %ds
    lgdtl   (ap_tramp_gdtr - ap_tramp + AP_TRAMP)
    movl    $pml4, %eax
    movl    %eax, %cr3
    movl    %cr4, %eax
    orl     $0x620, %eax
    movl    %eax, %cr4
    movl    $0xc0000080, %ecx
    rdmsr
    orl     $0x100, %eax
    wrmsr
    movl    %cr0, %eax
    andl    $~4, %eax
    orl     $0x80000003, %eax
    movl    %eax, %cr0
    ljmpl   $0x08, $ap_long_entry
    .align  4
ap_tramp_gdtr:
    .word   gdt_end - gdt - 1
    .long   gdt
ap_tramp_end:

    .code64
ap_long_entry:
    movw    $0x10, %ax
    movw    %ax, %ds
    movw    %ax, %es
    movw    %ax, %ss
    xorw    %ax, %ax
    movw    %ax, %fs
    movw    %ax, %gs
    movl    $1, %eax
    cpuid
    shrl    $24, %ebx               /* initial APIC id */
    cmpl    $8, %ebx
    jae     6f
    leaq    1(%rbx), %rax
    shlq    $14, %rax
    addq    $__stacks_start, %rax
    movq    %rax, %rsp
    call    x86_ap_main
6:  cli
    hlt
    jmp     6b

/* Interrupt 32 (the PIT through the remapped PIC): save the registers a
 * C call may change, call x86_irq, return. The CPU left RSP 16-aligned
 * minus the 40-byte frame; nine pushes make it 16-aligned again. */
    .globl  irq0_entry
irq0_entry:
    pushq   %rax
    pushq   %rcx
    pushq   %rdx
    pushq   %rsi
    pushq   %rdi
    pushq   %r8
    pushq   %r9
    pushq   %r10
    pushq   %r11
    cld
    call    x86_irq
    popq    %r11
    popq    %r10
    popq    %r9
    popq    %r8
    popq    %rdi
    popq    %rsi
    popq    %rdx
    popq    %rcx
    popq    %rax
    iretq

/* Vectors 0..47 otherwise: 16-byte stubs that push their number and stop
 * the machine through x86_fault(vector, frame). */
    .align  16
    .globl  fault_stubs
fault_stubs:
    .set    vec, 0
    .rept   48
    .align  16
    pushq   $vec
    jmp     fault_common
    .set    vec, vec + 1
    .endr
fault_common:
    popq    %rdi
    movq    %rsp, %rsi
    andq    $-16, %rsp
    call    x86_fault
4:  hlt
    jmp     4b

    .section .rodata
    .align  8
gdt:
    .quad   0
    .quad   0x00af9a000000ffff      /* 0x08: 64-bit code */
    .quad   0x00cf92000000ffff      /* 0x10: data */
gdt_end:
gdt_ptr:
    .word   gdt_end - gdt - 1
    .long   gdt

    .section .pagetables, "aw", @nobits
    .align  4096
pml4:   .skip 4096
pdpt:   .skip 4096
pd0:    .skip 4 * 4096

    .section .note.GNU-stack, "", @progbits
