/*
 * hosted_cpu.h - the hosted port's per-CPU hooks, inline for the hit path.
 *
 * A "CPU" is a slot a thread owns from its first allocation to its exit
 * (src/port/hosted.c hands slots out and takes them back). The slot number
 * plus one sits in an initial-exec TLS word: reading it is one load from
 * the thread pointer, no call, no lock. 0 means no slot yet; the first
 * call takes one. Only the owning thread uses a slot, so nothing needs
 * disabling between enter and exit.
 */
#ifndef KHEAP_HOSTED_CPU_H
#define KHEAP_HOSTED_CPU_H

extern __thread unsigned kh_hosted_slot __attribute__((tls_model("initial-exec")));
unsigned kh_hosted_slot_take(void);

static inline unsigned kheap_port_cpu_enter(void)
{
    unsigned s = kh_hosted_slot;
    return __builtin_expect(s != 0, 1) ? s - 1 : kh_hosted_slot_take();
}

/* For the hit paths: the slot, or KHEAP_CPU_NONE (a miss: the slow path
 * then calls kheap_port_cpu_enter, which takes a slot) if there is none
 * yet. Never calls out, so the hit paths save no registers. */
#define KHEAP_PORT_CPU_ENTER_FAST 1
static inline unsigned kheap_port_cpu_enter_fast(void)
{
    unsigned s = kh_hosted_slot;
    return __builtin_expect(s != 0, 1) ? s - 1 : KHEAP_CPU_NONE;
}

static inline void kheap_port_cpu_exit(unsigned cpu)
{
    (void)cpu;
}

#endif /* KHEAP_HOSTED_CPU_H */
