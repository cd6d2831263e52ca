/*
 * hosted_cpu.h - the hosted port's per-CPU hooks, inline for the hit path.
 *
 * A "CPU" is a slot a thread owns from its first allocation to its exit
 * (src/port/hosted.c hands slots out and takes them back). The slot number
 * sits in an initial-exec TLS word: reading it is one load from the thread
 * pointer, no call, no lock. The first call of a thread takes a slot. Only the owning thread uses a slot, so nothing needs
 * disabling between enter and exit.
 *
 * kh_hosted_slot holds the slot itself, KHEAP_CPU_NONE until the thread
 * has one (the TLS initial value) and again after its exit hook, so the
 * hit paths read it with one load and use it as it is.
 *
 * When every slot is owned, a thread borrows one of the last
 * KHEAP_HOSTED_SHARED_SLOTS slots, which no thread owns, from its
 * kheap_port_cpu_enter to the matching exit (hosted.c): only the slow
 * paths see such a slot (enter_fast returns KHEAP_CPU_NONE to the hit
 * paths of a thread without a slot), so exit_fast has nothing to give
 * back and the hit paths pay nothing for it.
 */
#ifndef KHEAP_HOSTED_CPU_H
#define KHEAP_HOSTED_CPU_H

#ifndef KHEAP_HOSTED_SHARED_SLOTS
/* One slot in eight lent, at most 8 (none on builds of under 8 CPUs:
 * the small-system profile's one). */
#define KHEAP_HOSTED_SHARED_SLOTS (KHEAP_MAX_CPUS >= 64 ? 8 : KHEAP_MAX_CPUS / 8)
#endif
#if KHEAP_HOSTED_SHARED_SLOTS >= KHEAP_MAX_CPUS
#error "KHEAP_HOSTED_SHARED_SLOTS leaves no slot to own"
#endif
/* Slots threads own: 0 .. KH_HOSTED_OWNED - 1; the rest are lent. */
#define KH_HOSTED_OWNED ((unsigned)(KHEAP_MAX_CPUS - KHEAP_HOSTED_SHARED_SLOTS))

extern __thread unsigned kh_hosted_slot __attribute__((tls_model("initial-exec")));
unsigned kh_hosted_slot_take(void);
void kh_hosted_slot_lend_end(unsigned slot);

static inline unsigned kheap_port_cpu_enter(void)
{
    unsigned s = kh_hosted_slot;
    return __builtin_expect(s != KHEAP_CPU_NONE, 1) ? s : kh_hosted_slot_take();
}

/* For the hit paths: the slot, or KHEAP_CPU_NONE (a miss: the slow path
 * then calls kheap_port_cpu_enter, which takes a slot) if there is none
 * yet. Never calls out, so the hit paths save no registers. */
#define KHEAP_PORT_CPU_ENTER_FAST 1
static inline unsigned kheap_port_cpu_enter_fast(void)
{
    return kh_hosted_slot;
}

static inline void kheap_port_cpu_exit(unsigned cpu)
{
    if (__builtin_expect(cpu >= KH_HOSTED_OWNED && cpu != KHEAP_CPU_NONE, 0))
        kh_hosted_slot_lend_end(cpu);
}
static inline void kheap_port_cpu_exit_fast(unsigned cpu)
{
    (void)cpu;
}

/* The default heap's state for this thread's slot: &kh_cpu_sentinel
 * until the thread's first miss on the default heap, and again from its
 * exit hook on (hosted.c). */
#define KHEAP_PORT_CPU_LOCAL 1
extern __thread struct kh_cpu *kh_hosted_cpu_local __attribute__((tls_model("initial-exec")));
static inline struct kh_cpu *kheap_port_cpu_local(void)
{
    return kh_hosted_cpu_local;
}
static inline void kheap_port_cpu_local_set(struct kh_cpu *pc)
{
    kh_hosted_cpu_local = pc;
}

/* The lent slots no thread holds (hosted.c). */
#define KHEAP_PORT_CPU_REACH 1
void kheap_port_cpu_reach(void (*fn)(unsigned cpu, void *arg), void *arg);

/* kheap_port_trylock is in hosted.c. */
#define KHEAP_PORT_TRYLOCK 1

#endif /* KHEAP_HOSTED_CPU_H */
