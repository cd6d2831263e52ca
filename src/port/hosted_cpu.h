/*
 * hosted_cpu.h - the hosted port's per-CPU hooks, inline for the hit path.
 *
 * Two ways to be a "CPU", chosen once at start-up (hosted.c):
 *
 *  - Per-CPU (x86-64 Linux, where glibc registered rseq for the thread):
 *    the machine's CPUs, whose magazines every thread running on them
 *    shares. The hit paths reach the CPU's state through kh_hosted_cpus
 *    inside a restartable sequence (hosted_tx.h); a slow path first
 *    claims its CPU's state (kh_hosted_slot_take), which then stays its
 *    own, wherever the thread runs, until kheap_port_cpu_exit. A thread
 *    owns nothing, so a thread's exit leaves no cache behind, and any
 *    number of threads share the CPUs' caches.
 *  - Per-thread slots (elsewhere, and as the fallback): a slot a thread
 *    owns from its first allocation to its exit. The slot number sits in
 *    an initial-exec TLS word (kh_hosted_slot); reading it is one load
 *    from the thread pointer, no call, no lock. Only the owning thread
 *    uses a slot, so nothing needs claiming between enter and exit.
 *
 * kh_hosted_slot holds an owned slot, else KHEAP_CPU_NONE (the TLS
 * initial value; always, per-CPU). The hit paths of user caches and of
 * kheap_init heaps read it with one load and use it as it is: per-CPU,
 * they miss, and their slow paths claim the CPU.
 *
 * When every slot is owned (or the CPU is claimed by a slow path of
 * another thread, preempted inside it), a thread borrows one of the last
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
/* A thread that found every owned slot taken looks for one again once in
 * this many enters, borrowing a lent slot for the others (hosted.c,
 * slot_retry). */
#define KH_HOSTED_SLOT_RETRY 64u

/* The thread's slot (kh_hosted_slot) and, per thread, the default heap's
 * state of it (kh_hosted_cpu_local: see below), in one initial-exec TLS
 * block, so that the free hit path, which reads both (kh_fast.h,
 * kh_cc_home), reaches both from one address. */
struct kh_hosted_thread {
    unsigned slot;
    struct kh_cpu *local; /* (unused with rseq: kh_hosted_cpus instead) */
};
extern __thread struct kh_hosted_thread kh_hosted_me __attribute__((tls_model("initial-exec")));
#define kh_hosted_slot (kh_hosted_me.slot)
unsigned kh_hosted_slot_take(void);
void kh_hosted_slot_give(unsigned slot);

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

/* Non-zero once the hosted port runs per-CPU caches (rseq), set before
 * the first slot or CPU is handed out and never changed (hosted.c). */
extern int kh_hosted_rseq __attribute__((visibility("hidden")));

static inline void kheap_port_cpu_exit(unsigned cpu)
{
    if (__builtin_expect(cpu != KHEAP_CPU_NONE && (cpu >= KH_HOSTED_OWNED || __atomic_load_n(&kh_hosted_rseq, __ATOMIC_RELAXED)), 0))
        kh_hosted_slot_give(cpu);
}
static inline void kheap_port_cpu_exit_fast(unsigned cpu)
{
    (void)cpu;
}

/* Per-CPU caches with restartable sequences (hosted_tx.h): built with
 * KHEAP_HOSTED_RSEQ (kheap_config.h) on x86-64 Linux with glibc, not
 * under ThreadSanitizer (which cannot see into the
 * sequences' asm, so would pair their objects' uses with no order).
 * Elsewhere the default heap's state of a thread's slot sits in an
 * initial-exec TLS word, as the slot does. */
#if KHEAP_HOSTED_RSEQ && defined(__x86_64__) && defined(__linux__) && defined(__GLIBC__) && \
    !defined(__SANITIZE_THREAD__) && defined(__has_include)
#if __has_include(<sys/rseq.h>) /* glibc >= 2.35 */
#define KH_HOSTED_TX 1
#else
#define KH_HOSTED_TX 0
#endif
#else
#define KH_HOSTED_TX 0
#endif

#define KHEAP_PORT_CPU_LOCAL 1
#if KH_HOSTED_TX
/* The default heap's state by the index in the cpu_id word of the
 * thread's rseq area (hosted_tx.h), signed: entry i of kh_hosted_cpus is
 * a cell, a word alone on its cache line that holds the state as its
 * distance from kh_cpu_sentinel (so 0, the sentinel, in every cell never
 * set, and the table is zero-filled memory the program never touches
 * beyond the cells in use). With rseq, the kernel keeps the CPU number
 * there: entry i is CPU i's cell, whose word is the CPU's state, or
 * kh_cpu_claimed while a slow path has the CPU (hosted.c); the kernel's
 * -1 (not yet registered) and glibc's -2 (registration failed) index
 * cells never set. Without rseq, the port writes KH_TBL_SLOT(slot) there
 * for a thread that owns a slot: negative, so glibc's sched_getcpu still
 * asks the kernel, and that entry is the slot's cell. The table has an
 * entry for every CPU number an x86-64 kernel may have (its NR_CPUS is at
 * most 8192), so the sequences index it with no bound check; only CPUs
 * below KH_HOSTED_OWNED (per CPU) or the owned slots (per thread) ever
 * have their cell set (hosted.c: mode_cpus). A cell is alone on its
 * cache line: claims write it, and a line shared by two CPUs' words
 * would be fetched again by every hit path of one after each claim of
 * the other (256 threads on 2 CPUs: 147 M pairs/s with a flat table of
 * words, 200 with cells). The cells are the table's entries, not reached
 * through it: one dependent load fewer on every hit path. */
struct kh_hosted_cell {
    uintptr_t off; /* the state's address less kh_cpu_sentinel's */
} __attribute__((aligned(KHEAP_CACHE_LINE)));
/* The sequences index the table by shifting (a cell is a power of two:
 * KHEAP_CACHE_LINE is one). */
#define KH_CELL_SHIFT __builtin_ctz(sizeof(struct kh_hosted_cell))
_Static_assert(sizeof(struct kh_hosted_cell) == 1u << KH_CELL_SHIFT,
               "a cell's size is a power of two");
#define KH_TBL_NEG (KH_HOSTED_OWNED + 2u)
#define KH_TBL_CPUS 8192u
#define KH_TBL_SLOT(slot) (-(int)(slot) - 3)
extern struct kh_hosted_cell kh_hosted_tbl[KH_TBL_NEG + KH_TBL_CPUS]
    __attribute__((visibility("hidden")));
#define kh_hosted_cpus (kh_hosted_tbl + KH_TBL_NEG)
/* &kh_cpu_sentinel, which the sequences add to a cell's word from
 * memory: a load whose address is known from the start, off the chain of
 * loads that leads to the front, where a register would be one more
 * the free's sequence does not have to spare. */
extern const uintptr_t kh_hosted_sb __attribute__((visibility("hidden")));
/* A cell's word for state pc, and the state a word holds. */
static inline uintptr_t kh_cell_word(const struct kh_cpu *pc)
{
    return (uintptr_t)pc - (uintptr_t)&kh_cpu_sentinel;
}
static inline struct kh_cpu *kh_cell_state(uintptr_t w)
{
    return (struct kh_cpu *)((uintptr_t)&kh_cpu_sentinel + w);
}
extern const ptrdiff_t __rseq_offset; /* glibc >= 2.35 */
/* The cpu_id word of this thread's rseq area. */
static inline int *kh_hosted_index_word(void)
{
    return (int *)((char *)__builtin_thread_pointer() + __rseq_offset) + 1;
}
static inline int kh_hosted_index(void)
{
    return __atomic_load_n(kh_hosted_index_word(), __ATOMIC_RELAXED);
}
/* A look at the state of the CPU the caller is on, or was on a moment
 * ago: for knowing whether it is set (default.c, local_sync), never for a
 * front's contents. */
static inline struct kh_cpu *kheap_port_cpu_local(void)
{
    return kh_cell_state(__atomic_load_n(&kh_hosted_cpus[kh_hosted_index()].off, __ATOMIC_RELAXED));
}
#define KHEAP_PORT_CPU_TX_HEADER "port/hosted_tx.h"

/* A restartable sequence in asm (hosted_tx.h, hosted.c): its descriptor
 * (struct rseq_cs: version, flags, start, length, abort address) goes into
 * section __rseq_cs; its abort handler, preceded by the signature glibc
 * registered (RSEQ_SIG, 0x53053053 on x86), jumps back to where the
 * descriptor is armed. */
#define KH_TX_SIG ".byte 0x0f, 0xb9, 0x3d\n\t.long 0x53053053\n\t"

/* Arm the sequence whose descriptor is label 3, starting at label 1 and
 * committed by the instruction before label 2, aborting to label 4. */
#define KH_TX_ARM(rs, t)                                                             \
    ".pushsection __rseq_cs, \"aw\"\n\t"                                             \
    ".balign 32\n"                                                                   \
    "3:\n\t"                                                                         \
    ".long 0, 0\n\t"                                                                 \
    ".quad 1f, 2f - 1f, 4f\n\t"                                                      \
    ".popsection\n"                                                                  \
    "0:\n\t"                                                                         \
    "lea 3b(%%rip), %" t "\n\t"                                                      \
    "mov %" t ", %%fs:8(%" rs ")\n"                                                  \
    "1:\n\t"
#define KH_TX_ABORT                                                                  \
    ".pushsection .text.unlikely, \"ax\"\n\t" KH_TX_SIG "4:\n\t"                    \
    "jmp 0b\n\t"                                                                     \
    ".popsection\n\t"

#else
#define kh_hosted_cpu_local (kh_hosted_me.local)
static inline struct kh_cpu *kheap_port_cpu_local(void)
{
    return kh_hosted_cpu_local;
}
#endif
/* Publish pc as the default heap's state of cpu (entered) to the hit
 * paths; a lent slot is never published (hosted.c). */
void kheap_port_cpu_local_set(unsigned cpu, struct kh_cpu *pc);

/* The lent slots no thread holds (hosted.c). */
#define KHEAP_PORT_CPU_REACH 1
void kheap_port_cpu_reach(void (*fn)(unsigned cpu, void *arg), void *arg);

/* kheap_port_trylock is in hosted.c. */
#define KHEAP_PORT_TRYLOCK 1

#endif /* KHEAP_HOSTED_CPU_H */
