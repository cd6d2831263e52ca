/*
 * hosted.c - the POSIX port: pthread mutexes, mmap pages, stderr reports.
 *
 * Locks are pthread mutexes (sanitizers and valgrind's thread checkers
 * understand them), adaptive ones with glibc (they spin briefly first).
 * Pages come from anonymous mmap, zero-filled. Reports
 * print one line on stderr and abort, as glibc does for a bad free,
 * unless a hook is set (kheap_set_report_hook), which tests use to
 * make reports return.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "kheap.h"
#include "kheap_hosted.h"
#if KH_HOSTED_TX
#include <linux/membarrier.h>
#include <sys/rseq.h>
#endif
#ifdef __linux__
#include <sys/syscall.h>
#endif

#if KHEAP_VALGRIND
#include <valgrind/drd.h>
/* drd does not see the ordering atomics give: tell it that a slot's
 * release happens before its next owner takes it. */
#define slot_handover_before(p) ANNOTATE_HAPPENS_BEFORE(p)
#define slot_handover_after(p) ANNOTATE_HAPPENS_AFTER(p)
/* ... and that the lent slots' flags are only ever exchanged and
 * released: racing on them is what they are for. */
#define slot_flags_atomic(p, n) ANNOTATE_BENIGN_RACE_SIZED(p, n, "lent slot flags (atomic)")
#else
#define slot_handover_before(p) ((void)(p))
#define slot_handover_after(p) ((void)(p))
#define slot_flags_atomic(p, n) ((void)(p), (void)(n))
#endif

_Static_assert(sizeof(pthread_mutex_t) <= sizeof(kheap_lock_t),
               "kheap_lock_t cannot hold a pthread mutex: raise KHEAP_LOCK_WORDS");

/* With glibc, adaptive mutexes: a thread that finds a lock taken spins a
 * little before it sleeps. kheap holds its locks for a slow-path batch (a
 * magazine's worth of slab work, a few microseconds), so a waiter that
 * sleeps at once costs both threads a futex system call and a wake-up,
 * more than the wait: with two threads allocating and two freeing one
 * class (bench/workloads.c, xmalloc-test), a one-second run made 85 000
 * futex calls (mimalloc's, 5 000); spinning first, 2 000. */
void kheap_port_lock_init(kheap_lock_t *lock)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
#ifdef __GLIBC__
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ADAPTIVE_NP);
#endif
    pthread_mutex_init((pthread_mutex_t *)lock->word, &a);
    pthread_mutexattr_destroy(&a);
}

/* The idle hook (kheap_hosted_set_idle_hook): each thread counts the kheap
 * locks it holds; when it releases its last one, the hook runs, at most
 * once at a time per thread (the hook's own kheap calls do not call it
 * again). Only slow paths take locks, so the hit paths never see it. */
static kheap_idle_hook_fn idle_hook;
static __thread unsigned lock_depth __attribute__((tls_model("initial-exec")));
static __thread int in_idle_hook __attribute__((tls_model("initial-exec")));

kheap_idle_hook_fn kheap_hosted_set_idle_hook(kheap_idle_hook_fn fn)
{
    return __atomic_exchange_n(&idle_hook, fn, __ATOMIC_ACQ_REL);
}

void kheap_port_lock(kheap_lock_t *lock)
{
    lock_depth++;
    pthread_mutex_lock((pthread_mutex_t *)lock->word);
}

/* Locks taken by kheap_port_trylock and not yet released. kheap holds
 * such a lock alone (no other lock is taken or released meanwhile), so
 * while this is non-zero the next unlock on this thread is of that lock:
 * it must not run the idle hook, for the trylock may have been taken in
 * a signal handler. */
static __thread unsigned try_depth __attribute__((tls_model("initial-exec")));

int kheap_port_trylock(kheap_lock_t *lock)
{
    if (pthread_mutex_trylock((pthread_mutex_t *)lock->word) != 0)
        return 0; /* EBUSY, also when this thread holds it */
    try_depth++;
    return 1;
}

void kheap_port_unlock(kheap_lock_t *lock)
{
    pthread_mutex_unlock((pthread_mutex_t *)lock->word);
    if (try_depth) {
        try_depth--;
        return;
    }
    if (--lock_depth == 0 && !in_idle_hook) {
        kheap_idle_hook_fn fn = __atomic_load_n(&idle_hook, __ATOMIC_ACQUIRE);
        if (fn) {
            in_idle_hook = 1;
            fn();
            in_idle_hook = 0;
        }
    }
}

/* ------------------------------------------------------------------ */
/* Thread slots: the hosted "CPUs" of the per-CPU layer.
 *
 * slot_map has a bit per slot, set while a thread owns it; a thread takes
 * the lowest clear bit with a compare-and-swap (no lock, no system call)
 * on its first allocation, and a thread-specific-data destructor gives it
 * back at thread exit, after kheap_cpu_flush has returned the slot's
 * magazines to their depots. kh_hosted_slot holds the slot, or
 * KHEAP_CPU_NONE; after the destructor, slot_gone is set, so frees from
 * later destructors of other libraries borrow a lent slot (below) instead
 * of taking a new slot that nothing would give back.
 *
 * A thread that found every slot taken also gets the destructor (its
 * value then names no slot: SLOT_NONE_MARK), for the same reason: it
 * keeps trying for a slot (once in KH_HOSTED_SLOT_RETRY enters:
 * slot_retry), and the first owners to exit free theirs while it runs
 * its own exit. Without the destructor to set
 * slot_gone, a slow path of its exit after the destructors had run took
 * a freed slot that no destructor then gave back: with 256 threads on 2
 * busy CPUs, every slot leaked so, and from then on every thread
 * borrowed. A thread whose first slow path comes after its destructors
 * ran (one that never allocated, freeing blocks others made) can still
 * take a slot that no destructor gives back; glibc says nothing a library
 * could ask to tell that moment. Such a slot is adopted once its thread
 * has ended (slot_adopt, below).
 *
 * Reentrancy: taking a slot may allocate (pthread_once, pthread_atfork,
 * pthread_setspecific for a late key all may call malloc, which may be
 * kheap). slot_taking marks the thread as inside kh_hosted_slot_take; a
 * nested call returns KHEAP_CPU_NONE, so the nested allocation takes the
 * locked path instead of recursing (or waiting on its own pthread_once).
 *
 * fork: choosing the mode (the first kh_hosted_slot_take of the process)
 * also registers kheap's fork handlers (fork_prepare and friends below).
 *
 * Lent slots: a thread finds every owned slot taken (more threads than
 * KH_HOSTED_OWNED), or has given its own back (slot_gone): each
 * kheap_port_cpu_enter then borrows one of the KHEAP_HOSTED_SHARED_SLOTS
 * lent slots, taking its flag (lent_busy) with an exchange (no waiting:
 * a taken flag sends it to the next one), starting at the slot of the
 * CPU it runs on, and the matching exit gives it back (release). So its
 * slow paths use that slot's magazines, not the caches' locked path, on
 * which hundreds of threads on a few CPUs would queue behind a preempted
 * lock holder. Whoever holds a flag is alone in
 * that slot's per-CPU state, as an owner is; the release and the next
 * acquire order one holder's writes before the next's. A nested enter
 * (a signal handler inside an operation) gets the slot it already holds
 * (lent_depth). If every lent slot is busy (their holders preempted
 * inside an operation), it yields once and looks again; then
 * KHEAP_CPU_NONE: the locked path, as before. A lent slot is never
 * flushed: its magazines stay for the next borrower, so they are bounded
 * by the number of lent slots, as a CPU's are. */
__thread struct kh_hosted_thread kh_hosted_me __attribute__((tls_model("initial-exec"))) = {
    .slot = KHEAP_CPU_NONE, .local = &kh_cpu_sentinel};
#if KH_HOSTED_TX
struct kh_hosted_cell kh_hosted_tbl[KH_TBL_NEG + KH_TBL_CPUS];
const uintptr_t kh_hosted_sb = (uintptr_t)&kh_cpu_sentinel;
/* The cell of CPU c (per CPU) or of owned slot c (per thread), once the
 * mode is chosen. */
#define cell_of(c) (&kh_hosted_cpus[kh_hosted_rseq ? (int)(c) : KH_TBL_SLOT(c)])
const int64_t kh_tx_pop_add[2] __attribute__((aligned(16))) = {-8, 1};
const int64_t kh_tx_push_add[2] __attribute__((aligned(16))) = {1, 8};
const int64_t kh_tx_run_pop_add[2] __attribute__((aligned(16))) = {0, 1};
const int64_t kh_tx_run_push_add[2] __attribute__((aligned(16))) = {1, 0};
#endif
int kh_hosted_rseq;
static __thread int slot_gone __attribute__((tls_model("initial-exec")));
static __thread int slot_taking __attribute__((tls_model("initial-exec")));
static __thread int slot_marked __attribute__((tls_model("initial-exec")));
/* A thread that found every owned slot taken: how many of its next
 * enters borrow a lent slot at once, before one looks for an owned slot
 * again (kh_hosted_slot_take). Each look scans the slots' bits and reads
 * the clock for the adopters' rate (slot_adopt): with 256 threads on 2
 * CPUs, the clock's reads alone took 5 % of the time, and the look 6 %
 * more. A slot given back is so taken within KH_HOSTED_SLOT_RETRY enters of
 * each thread that waits for one (hosted_cpu.h). */
static __thread unsigned slot_retry __attribute__((tls_model("initial-exec")));

#define SLOT_WORDS ((KHEAP_MAX_CPUS + 63) / 64)
static unsigned long long slot_map[SLOT_WORDS];
static pthread_key_t slot_key;
static pthread_once_t slot_once = PTHREAD_ONCE_INIT;
static int slot_key_ok;

/* The lent slots' flags, and where a borrower that cannot learn its CPU
 * starts: written by every borrower, so each on a cache line of its own,
 * apart from what every slow path only reads (the mode, mode_chosen),
 * which sharing a line with them would make every slow path fetch again
 * from the last borrower's CPU (with 256 threads on 2 CPUs, half of the
 * time of kh_hosted_slot_take went to that load). A borrower starts at
 * the lent slot of the CPU it runs on (slot_lend), so while the threads
 * of one CPU take turns on a slot, its flag's line and its magazines stay
 * in that CPU's cache. */
#define HOSTED_LINE KHEAP_CACHE_LINE
#define LENT_FLAGS (KHEAP_HOSTED_SHARED_SLOTS > 0 ? KHEAP_HOSTED_SHARED_SLOTS : 1)
static struct {
    struct {
        unsigned char busy;
    } __attribute__((aligned(HOSTED_LINE))) flag[LENT_FLAGS];
    unsigned next __attribute__((aligned(HOSTED_LINE)));
} lent __attribute__((aligned(HOSTED_LINE)));
#define lent_busy(i) (lent.flag[i].busy)
#define lent_next lent.next
static __thread unsigned lent_slot __attribute__((tls_model("initial-exec"))) = KHEAP_CPU_NONE;
static __thread unsigned lent_depth __attribute__((tls_model("initial-exec")));
static pthread_once_t lent_once = PTHREAD_ONCE_INIT;

static void lent_setup(void)
{
    slot_flags_atomic(lent.flag, sizeof lent.flag);
    slot_flags_atomic(&lent_next, sizeof lent_next);
}

#if KHEAP_HOSTED_SHARED_SLOTS > 0
/* Where a borrower starts looking: the CPU it runs on, else the next of a
 * shared count. glibc's sched_getcpu reads the thread's rseq area where
 * glibc registered one (2.35 and later), else asks the vDSO (x86-64) or
 * the kernel (a system call, on aarch64 and others): a borrow's cost
 * there. It leaves errno as it found it, as every successful malloc
 * does. */
static unsigned lent_start(void)
{
#if defined(__linux__) && defined(__GLIBC__)
    int saved = errno, cpu = sched_getcpu();
    errno = saved;
    if (cpu >= 0)
        return (unsigned)cpu;
#endif
    return __atomic_fetch_add(&lent_next, 1u, __ATOMIC_RELAXED);
}
#endif

static unsigned slot_lend(void)
{
#if KHEAP_HOSTED_SHARED_SLOTS == 0 /* builds of under 8 CPUs lend none */
    return KHEAP_CPU_NONE;
#else
    if (lent_depth) {
        lent_depth++;
        return lent_slot;
    }
    pthread_once(&lent_once, lent_setup);
    unsigned start = lent_start();
    /* Every lent slot busy means their holders were preempted inside an
     * operation: yield to them once and look again before the locked
     * path, on which the threads would queue behind preempted holders of
     * the caches' locks instead. */
    for (int pass = 0; pass < 2; pass++) {
        for (unsigned k = 0; k < KHEAP_HOSTED_SHARED_SLOTS; k++) {
            unsigned i = (start + k) % KHEAP_HOSTED_SHARED_SLOTS;
            if (!__atomic_exchange_n(&lent_busy(i), 1, __ATOMIC_ACQUIRE)) {
                slot_handover_after(&lent_busy(i));
                lent_depth = 1;
                return lent_slot = KH_HOSTED_OWNED + i;
            }
        }
        if (!pass)
            sched_yield();
    }
    return KHEAP_CPU_NONE;
#endif
}

static void slot_lend_end(unsigned slot)
{
    if (--lent_depth)
        return;
    lent_slot = KHEAP_CPU_NONE;
    slot_handover_before(&lent_busy(slot - KH_HOSTED_OWNED));
    __atomic_store_n(&lent_busy(slot - KH_HOSTED_OWNED), 0, __ATOMIC_RELEASE);
}

static unsigned mode_cpus; /* CPUs indexed, per-CPU mode (below) */
#if KH_HOSTED_TX
static bool cpu_claim_fenced(unsigned c);
#endif

/* kheap_reclaim's reach: each lent slot no thread holds, taken as a
 * borrower takes it for the length of fn (a busy one is skipped: its
 * holder is inside an operation); per CPU, each CPU's state no slow path
 * holds, claimed from here with a fence (cpu_claim_fenced). */
void kheap_port_cpu_reach(void (*fn)(unsigned cpu, void *arg), void *arg)
{
#if KH_HOSTED_TX
    if (__atomic_load_n(&kh_hosted_rseq, __ATOMIC_ACQUIRE))
        for (unsigned c = 0; c < mode_cpus; c++)
            if (cpu_claim_fenced(c)) {
                fn(c, arg);
                kh_hosted_slot_give(c);
            }
#endif
    pthread_once(&lent_once, lent_setup);
#if KHEAP_HOSTED_SHARED_SLOTS > 0
    for (unsigned i = 0; i < KHEAP_HOSTED_SHARED_SLOTS; i++) {
        if (__atomic_exchange_n(&lent_busy(i), 1, __ATOMIC_ACQUIRE))
            continue;
        slot_handover_after(&lent_busy(i));
        fn(KH_HOSTED_OWNED + i, arg);
        slot_handover_before(&lent_busy(i));
        __atomic_store_n(&lent_busy(i), 0, __ATOMIC_RELEASE);
    }
#else
    (void)fn, (void)arg;
#endif
}

/* ------------------------------------------------------------------ */
/* Per-CPU mode (KH_HOSTED_TX, hosted_cpu.h).
 *
 * Chosen once, by the first kh_hosted_slot_take of the process (before
 * any slot or CPU is handed out, so every cell of kh_hosted_cpus still
 * holds the sentinel and every hit path misses until then): per-CPU if
 * glibc registered rseq for this thread (__rseq_size > 0 and the kernel
 * has written a CPU number); else per-thread slots. glibc registers every
 * thread of a process alike (GLIBC_TUNABLES glibc.pthread.rseq=0 turns it
 * off for all), so the choice holds for threads started later. Per CPU,
 * CPUs numbered KH_HOSTED_OWNED and up (a machine with more than 56)
 * never get a state: their threads' hit paths miss, their claims fail,
 * and their slow paths borrow lent slots (slower, and correct). The
 * port never writes a registered thread's rseq area (the kernel owns its
 * cpu_id; a kernel built with CONFIG_DEBUG_RSEQ checks it).
 *
 * Claims: a slow path on CPU i swaps the word of CPU i's cell from the CPU's
 * state (or the sentinel, if the default heap has none yet) to
 * kh_cpu_claimed, whose fronts make every hit path miss, and keeps what it
 * replaced in cpu_saved(i). The swap is a locked compare-and-exchange
 * that is itself the commit of a restartable sequence which read the CPU
 * number: so it happens on CPU i, and every other thread's sequence on
 * CPU i that read the old entry was preempted by this one and restarts
 * (it then reads kh_cpu_claimed and misses). From the swap to
 * kh_hosted_slot_give the CPU's state in every heap is the claimer's
 * alone, wherever it runs, as an owned slot is its owner's. A slow path
 * that finds its CPU claimed (its claimer preempted inside a slow path)
 * borrows a lent slot instead. */
static pthread_once_t mode_once = PTHREAD_ONCE_INIT;
static int mode_chosen;              /* mode_choose has returned */
static const char *mode_why = "";    /* why per-thread slots, or what per-CPU
                                        mode leaves out, else "" */
#if KH_HOSTED_TX
static int mode_fence;                           /* membarrier's rseq fence registered */
/* What a claim replaced, by CPU: written by each claimer, so a line each. */
static struct {
    struct kh_cpu *pc;
} __attribute__((aligned(HOSTED_LINE))) cpu_saved_at[KHEAP_MAX_CPUS];
#define cpu_saved(c) (cpu_saved_at[c].pc)
static bool fork_claimed[KHEAP_MAX_CPUS];        /* claimed by fork_prepare */
#endif

static void fork_prepare(void);
static void fork_release(void);
static void fork_child(void);
static void slot_pid_set(void);
static bool mode_ensure(void);
/* A slow path that finds its CPU claimed yields and tries again this
 * many times before it borrows a lent slot: the claimer is most often a
 * thread preempted on this very CPU inside its slow path, which the
 * yields let finish, where borrowing would send every thread on the CPU
 * to the few lent slots until it runs again (bench/workloads.c
 * xmalloc-test, 4 threads on 2 CPUs: 0.97-1.15 s with no yield, 0.47-0.50
 * with 8, 0.50-0.56 with 32; bench.c tput with 256 threads: 58, 186 and
 * 158 M pairs/s). */
#ifndef CLAIM_YIELDS
#define CLAIM_YIELDS 8
#endif

#if KH_HOSTED_TX
/* The highest CPU number the system may bring online, plus one: from
 * /sys/devices/system/cpu/possible ("0-3", "0,2-5"), else the count of
 * configured CPUs (numbers may have gaps, so the count alone can be too
 * low). */
static long cpus_possible(void)
{
    long top = sysconf(_SC_NPROCESSORS_CONF);
    FILE *f = fopen("/sys/devices/system/cpu/possible", "re");
    if (f) {
        long a = -1, b;
        int c;
        while (fscanf(f, "%ld", &b) == 1) {
            if (b + 1 > a)
                a = b + 1;
            if ((c = fgetc(f)) != '-' && c != ',')
                break;
        }
        fclose(f);
        if (a > top)
            top = a;
    }
    return top;
}
#endif

static void mode_choose(void)
{
    slot_pid_set();
    pthread_atfork(fork_prepare, fork_release, fork_child);
#if KH_HOSTED_TX
    if (__rseq_size == 0 || __atomic_load_n(kh_hosted_index_word(), __ATOMIC_RELAXED) < 0) {
        mode_why = "rseq is not registered";
    } else {
        long n = cpus_possible();
        mode_cpus = n < 1 ? 1 : n > (long)KH_HOSTED_OWNED ? KH_HOSTED_OWNED : (unsigned)n;
        if (n > (long)KH_HOSTED_OWNED) {
            static char note[64];
            snprintf(note, sizeof note, "CPUs %u and up borrow lent slots", KH_HOSTED_OWNED);
            mode_why = note;
        }
        mode_fence = syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ, 0,
                             0) == 0;
    }
    /* The cells in use (cell_of: the CPUs' per CPU, else the owned
     * slots') hold the sentinel until their CPU or slot has a state. */
    if (mode_cpus > 0)
        __atomic_store_n(&kh_hosted_rseq, 1, __ATOMIC_RELEASE);
#else
    mode_why = "no restartable sequences in this build";
#endif
    __atomic_store_n(&mode_chosen, 1, __ATOMIC_RELEASE);
}

#if KH_HOSTED_TX
/* Per-thread slots: the index the hit paths read (KH_TBL_SLOT(slot), or
 * RSEQ_CPU_ID_REGISTRATION_FAILED, what glibc left there). */
static void tx_index_set(int idx)
{
    /* Never a word the kernel keeps: a thread registered (cpu_id >= 0)
     * while the process chose slots finds only sentinels at its CPU's
     * entry, and misses, rather than corrupt anything. */
    int *cpu_id = kh_hosted_index_word();
    if (!kh_hosted_rseq && __atomic_load_n(cpu_id, __ATOMIC_RELAXED) < 0)
        __atomic_store_n(cpu_id, idx, __ATOMIC_RELAXED);
}
#endif

#if KH_HOSTED_TX
/* Claim the state of the CPU this thread runs on; KHEAP_CPU_NONE if a
 * slow path of another thread (or of this one, under a signal handler)
 * has it, CLAIM_NEVER if the CPU has no state (numbered from mode_cpus on,
 * or the thread's rseq registration failed). */
#define CLAIM_NEVER (KHEAP_CPU_NONE + 1u)
static unsigned cpu_claim(void)
{
    uintptr_t t, cell;
    uintptr_t old;
    __asm__ __volatile__ goto(KH_TX_ARM("[rs]", "[t]")
                 "movslq %%fs:4(%[rs]), %[t]\n\t"
                 "cmp %[n], %[t]\n\t" /* unsigned: a negative index too */
                 "jae %l[never]\n\t"
                 "mov %[t], %[cell]\n\t"
                 "shl %[cs], %[cell]\n\t"
                 "add %[tbl], %[cell]\n\t"
                 "mov (%[cell]), %[old]\n\t"
                 "cmp %[cl], %[old]\n\t"
                 "je %l[busy]\n\t"
                 "lock cmpxchg %[cl], (%[cell])\n"
                 "2:\n\t"
                 "jne %l[busy]\n\t" KH_TX_ABORT
                 : [t] "=&r"(t), [old] "=&a"(old), [cell] "=&r"(cell)
                 : [rs] "r"(__rseq_offset), [tbl] "r"(kh_hosted_cpus), [cs] "i"(KH_CELL_SHIFT),
                   [cl] "r"(kh_cell_word(&kh_cpu_claimed)), [n] "r"((uintptr_t)mode_cpus)
                 : "memory", "cc"
                 : busy, never);
    cpu_saved(t) = kh_cell_state(old);
    return (unsigned)t;
busy:
    return KHEAP_CPU_NONE;
never:
    return CLAIM_NEVER;
}

/* Claim CPU c's state from wherever this thread runs (no fence: a
 * sequence on CPU c that read the old entry may still commit to it);
 * false if it is claimed. */
static bool cpu_claim_at(unsigned c)
{
    uintptr_t claimed = kh_cell_word(&kh_cpu_claimed);
    uintptr_t old = __atomic_load_n(&cell_of(c)->off, __ATOMIC_RELAXED);
    if (old == claimed || !__atomic_compare_exchange_n(&cell_of(c)->off, &old, claimed, false,
                                                       __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
        return false;
    cpu_saved(c) = kh_cell_state(old);
    return true;
}

/* Claim CPU c's state from another CPU, then fence: membarrier makes
 * every thread running on CPU c (its sequences included) pass through the
 * kernel, which restarts a sequence it interrupts, so none that read the
 * old entry can commit after it returns; from then on CPU c's state is
 * this thread's, as after a claim on CPU c itself. False if it is claimed
 * or the fence is not there (registering it failed: Linux < 5.10). The
 * fence for every CPU is the fallback if the one-CPU form is refused. */
static bool cpu_claim_fenced(unsigned c)
{
    if (!mode_fence || !cpu_claim_at(c))
        return false;
    if (syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ,
                MEMBARRIER_CMD_FLAG_CPU, (int)c) != 0 &&
        syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ, 0, 0) != 0) {
        kh_hosted_slot_give(c);
        return false;
    }
    return true;
}

#endif

void kh_hosted_slot_give(unsigned slot)
{
    if (slot >= KH_HOSTED_OWNED) {
        slot_lend_end(slot);
        return;
    }
#if KH_HOSTED_TX
    /* A claimed CPU: its state back to the hit paths. */
    __atomic_store_n(&cell_of(slot)->off, kh_cell_word(cpu_saved(slot)), __ATOMIC_RELEASE);
#endif
}

void kheap_port_cpu_local_set(unsigned cpu, struct kh_cpu *pc)
{
    if (cpu >= KH_HOSTED_OWNED)
        return; /* lent: never the hit paths' */
#if KH_HOSTED_TX
    if (kh_hosted_rseq)
        cpu_saved(cpu) = pc; /* published when the claim ends */
    else
        __atomic_store_n(&cell_of(cpu)->off, kh_cell_word(pc), __ATOMIC_RELEASE);
#else
    kh_hosted_cpu_local = pc;
#endif
}

unsigned kheap_hosted_cpu_mode(const char **why)
{
    mode_ensure();
    if (why)
        *why = mode_why;
    return kh_hosted_rseq ? mode_cpus : 0;
}

/* The thread-specific value of a thread that has no slot (slot_take). */
#define SLOT_NONE_MARK ((uintptr_t)KHEAP_CPU_NONE + 1)

/* Slots whose owner is gone. A thread that ends without its destructors
 * (one whose first slow path came after them, above; one that called the
 * exit system call itself) keeps its slot for good. So each owned slot
 * records its owner, and a thread that finds every slot taken looks (one
 * look per SLOT_SWEEP_MS in the whole process) for an owner the kernel no
 * longer knows (tgkill with signal 0: ESRCH), and adopts that slot as it
 * is, magazines and all, as a borrower takes a lent slot's. That assumes
 * a thread ends inside no operation of kheap's: one that makes the exit
 * system call from a signal handler that interrupted kheap leaves a
 * state halfway, as it would leave any lock it held.
 *
 * The record is a word of a generation (one more at every taking or
 * adoption) and the thread id, so a tid the kernel gives again to a new
 * thread never matches a record read before. The adopter claims the slot
 * by a compare-and-swap of the whole word (of two adopters one wins); the
 * slot's bit stays set throughout, so no taker comes between. An owner
 * records its word after taking the bit (a compare-and-swap from 0, which
 * a fork child's marking below may win) and writes 0 before giving the
 * bit back, so a free slot, or one being taken, shows 0 and is passed
 * over. The dead owner's writes to the slot's state come before its exit
 * and the kernel's forgetting of its tid; the acquire fence after the
 * claim orders the adopter's reads after that answer.
 *
 * A thread id that a new thread of the process holds again looks alive,
 * so its predecessor's slot stays lost until that thread ends; a main
 * thread ended by the exit system call stays a zombie the kernel knows.
 * Only the process that chose the mode adopts (slot_pid): a child made
 * without the fork handlers (_Fork, clone, vfork) sees every parent's
 * thread as gone while their slots may be in use. A fork child marks the
 * slots of the parent's other threads SLOT_OWNER_KEPT (their state may be
 * halfway through an operation: fork_child) and gives the pid anew.
 * Linux only (thread ids, tgkill); left out under valgrind and
 * ThreadSanitizer, whose thread checkers cannot see the order that the
 * kernel's answer gives. */
/* The coarse monotonic clock in milliseconds: a read of the vDSO's page,
 * no system call, at the timer tick's resolution (1-10 ms). Decay's
 * (kheap_port_clock_ms) and the adopters' rate. */
static inline uint64_t hosted_clock_ms(void)
{
    struct timespec ts = {0, 0};
#ifdef CLOCK_MONOTONIC_COARSE
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
#else
    clock_gettime(CLOCK_MONOTONIC, &ts);
#endif
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

#define SLOT_OWNER_KEPT UINT64_MAX
#ifndef SLOT_SWEEP_MS
#define SLOT_SWEEP_MS 100
#endif
#if defined(__SANITIZE_THREAD__)
#define SLOT_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SLOT_TSAN 1
#endif
#endif
#if defined(__linux__) && !KHEAP_VALGRIND && !defined(SLOT_TSAN)
static uint64_t slot_owner[KH_HOSTED_OWNED];
static uint64_t slot_swept_ms;
static unsigned slot_gen;
static int slot_pid;

/* The record of this thread as a new owner. */
static uint64_t slot_word(void)
{
    uint32_t gen = __atomic_add_fetch(&slot_gen, 1u, __ATOMIC_RELAXED);
    return (uint64_t)gen << 32 | (uint32_t)syscall(SYS_gettid);
}

static void slot_owner_clear(unsigned slot)
{
    __atomic_store_n(&slot_owner[slot], (uint64_t)0, __ATOMIC_RELAXED);
}

/* A slot this thread has just taken by its bit. */
static void slot_owner_taken(unsigned slot)
{
    uint64_t none = 0;
    __atomic_compare_exchange_n(&slot_owner[slot], &none, slot_word(), false,
                                __ATOMIC_RELAXED, __ATOMIC_RELAXED);
}

static unsigned slot_adopt(void)
{
    uint64_t now = hosted_clock_ms() + 1; /* (0: never looked) */
    uint64_t last = __atomic_load_n(&slot_swept_ms, __ATOMIC_RELAXED);
    if ((last && (int64_t)(now - last) < SLOT_SWEEP_MS) ||
        !__atomic_compare_exchange_n(&slot_swept_ms, &last, now, false, __ATOMIC_RELAXED,
                                     __ATOMIC_RELAXED))
        return KHEAP_CPU_NONE;
    int saved = errno, pid = getpid();
    if (pid != __atomic_load_n(&slot_pid, __ATOMIC_RELAXED))
        return KHEAP_CPU_NONE;
    unsigned got = KHEAP_CPU_NONE;
    for (unsigned slot = 0; slot < KH_HOSTED_OWNED && got == KHEAP_CPU_NONE; slot++) {
        uint64_t w = __atomic_load_n(&slot_owner[slot], __ATOMIC_RELAXED);
        int tid = (int)(uint32_t)w;
        if (!w || w == SLOT_OWNER_KEPT || tid <= 0 || syscall(SYS_tgkill, pid, tid, 0) == 0 ||
            errno != ESRCH)
            continue;
        if (__atomic_compare_exchange_n(&slot_owner[slot], &w, slot_word(), false,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
            __atomic_thread_fence(__ATOMIC_ACQUIRE);
            got = slot;
        }
    }
    errno = saved;
    return got;
}

/* At the mode's choice, and in a fork child: this process adopts. */
static void slot_pid_set(void)
{
    __atomic_store_n(&slot_pid, (int)getpid(), __ATOMIC_RELAXED);
}

/* In a fork child: the slots of the parent's other threads are kept as
 * they are (fork_child); the forking thread's own gets a new record. */
static void slot_owners_after_fork(void)
{
    slot_pid_set();
    for (unsigned slot = 0; slot < KH_HOSTED_OWNED; slot++)
        if (__atomic_load_n(&slot_map[slot / 64], __ATOMIC_RELAXED) & (1ull << (slot % 64)))
            __atomic_store_n(&slot_owner[slot],
                             slot == kh_hosted_slot ? slot_word() : SLOT_OWNER_KEPT,
                             __ATOMIC_RELAXED);
}
#else
static void slot_owner_clear(unsigned slot)
{
    (void)slot;
}
static void slot_owner_taken(unsigned slot)
{
    (void)slot;
}
static unsigned slot_adopt(void)
{
    return KHEAP_CPU_NONE;
}
static void slot_pid_set(void)
{
}
static void slot_owners_after_fork(void)
{
}
#endif

static void slot_release(void *arg)
{
    slot_gone = 1;
    unsigned slot = (unsigned)(uintptr_t)arg - 1;
    /* No slot (SLOT_NONE_MARK), or not this thread's: a value left in a
     * thread descriptor that glibc reuses, after a thread that ended by
     * the exit system call (its destructors never ran), names that
     * thread's slot, which another thread may have adopted since. The
     * slot in this thread's own (initial-exec, so re-made) TLS is the
     * truth. */
    if ((uintptr_t)arg == SLOT_NONE_MARK || slot != kh_hosted_slot)
        return;
    kh_hosted_slot = KHEAP_CPU_NONE;
#if KH_HOSTED_TX
    tx_index_set(RSEQ_CPU_ID_REGISTRATION_FAILED); /* the slot is no longer ours */
#else
    kh_hosted_cpu_local = &kh_cpu_sentinel;
#endif
    kheap_cpu_flush(slot);
    slot_owner_clear(slot);
    slot_handover_before(&slot_map[slot / 64]);
    __atomic_fetch_and(&slot_map[slot / 64], ~(1ull << (slot % 64)), __ATOMIC_RELEASE);
}

/* fork() while other threads use kheap: the forking thread takes every
 * kheap lock first, so the child never inherits a heap halfway through a
 * locked operation, and both sides release them after. (But one: a
 * refill lets its cache's lock go while it clears a new slab's bitmap,
 * slab.c slab_new. The child of a fork in that moment keeps that slab on
 * no list, and the objects the refill took before it stay counted as
 * handed out, as do the objects in the other threads' magazines, below.)
 *
 * The child's only thread is the one that forked. The slots of the other
 * threads stay taken in the child, with their magazines as they were:
 * those threads may have been inside a hit path, which runs without a
 * lock, so their per-CPU state may be half-updated and must not be reused
 * or flushed. The child thus has KHEAP_MAX_CPUS minus those slots; its
 * further threads beyond that use the locked path. The objects in those
 * magazines stay allocated in the child (at most two magazines per class
 * per thread that was running, and with homes one more per kmalloc class
 * in its remote front, and what its stash and spares held: cpu.c,
 * "Inboxes"; what the dead threads' inboxes hold goes to the depot at the
 * next decay). */
static void fork_prepare(void)
{
#if KH_HOSTED_TX
    /* Per CPU: every CPU's state claimed first, waiting for the slow path
     * holding one to end (it holds no kheap lock the wait could need:
     * none is taken yet), so the child inherits none halfway through a
     * slow path; the hit paths' commits leave a state whole at every
     * instruction. */
    if (kh_hosted_rseq)
        for (unsigned c = 0; c < mode_cpus; c++) {
            /* The wait is bounded: the holder may be this very thread (a
             * fork from a signal handler inside a slow path), or one of
             * lower priority that this one keeps off the CPU. A CPU still
             * claimed when fork goes ahead stays claimed in the child
             * (its state may be halfway through a slow path): the child's
             * threads on it borrow lent slots, unless this thread was the
             * holder and gives it back when its slow path ends. */
            fork_claimed[c] = 0;
            for (int i = 0; i < 1000 && !(fork_claimed[c] = cpu_claim_at(c)); i++)
                sched_yield();
        }
#endif
    kheap_lock_all();
}

static void fork_release(void)
{
    kheap_unlock_all();
#if KH_HOSTED_TX
    if (kh_hosted_rseq)
        for (unsigned c = 0; c < mode_cpus; c++)
            if (fork_claimed[c])
                kh_hosted_slot_give(c);
#endif
}

/* The child: as the parent, and the slots' owners as the child has them
 * (slot_owners_after_fork). */
static void fork_child(void)
{
    fork_release();
    slot_owners_after_fork();
}

static void slot_key_create(void)
{
    slot_key_ok = pthread_key_create(&slot_key, slot_release) == 0;
}

static unsigned slot_take(void);

/* The mode chosen, by this call if need be; false if this thread is
 * inside the choice (an allocation made by it: it takes the locked path). */
static bool mode_ensure(void)
{
    if (slot_taking)
        return false;
    if (!__atomic_load_n(&mode_chosen, __ATOMIC_ACQUIRE)) {
        slot_taking = 1; /* pthread_atfork and fopen allocate */
        pthread_once(&mode_once, mode_choose);
        slot_taking = 0;
    }
    return true;
}

unsigned kh_hosted_slot_take(void)
{
    if (!mode_ensure())
        return KHEAP_CPU_NONE;
#if KH_HOSTED_TX
    if (kh_hosted_rseq) {
        unsigned cpu = cpu_claim();
        for (int i = 0; cpu == KHEAP_CPU_NONE && i < CLAIM_YIELDS; i++) {
            sched_yield();
            cpu = cpu_claim();
        }
        return cpu < KHEAP_CPU_NONE ? cpu : slot_lend();
    }
#endif
    if (slot_gone)
        return slot_lend();
    if (slot_retry) {
        slot_retry--;
        return slot_lend();
    }
    slot_taking = 1;
    unsigned slot = slot_take();
    slot_taking = 0;
    if (slot != KHEAP_CPU_NONE)
        return slot;
    slot_retry = KH_HOSTED_SLOT_RETRY - 1;
    return slot_lend();
}

/* This thread now owns slot: its bit taken by this thread (taken), or
 * adopted (its record already this thread's). */
static unsigned slot_own(unsigned slot, bool taken)
{
    slot_handover_after(&slot_map[slot / 64]);
    /* For a key made early, glibc keeps the value in the thread
     * descriptor: setting it allocates nothing. */
    pthread_setspecific(slot_key, (void *)(uintptr_t)(slot + 1));
    kh_hosted_slot = slot;
#if KH_HOSTED_TX
    tx_index_set(KH_TBL_SLOT(slot));
#endif
    if (taken)
        slot_owner_taken(slot);
    return slot;
}

static unsigned slot_take(void)
{
    pthread_once(&slot_once, slot_key_create);
    if (!slot_key_ok)
        return KHEAP_CPU_NONE;
    for (unsigned w = 0; w < SLOT_WORDS; w++) {
        unsigned long long m = __atomic_load_n(&slot_map[w], __ATOMIC_RELAXED);
        while (~m) {
            unsigned b = (unsigned)__builtin_ctzll(~m), slot = w * 64 + b;
            if (slot >= KH_HOSTED_OWNED)
                break;
            if (__atomic_compare_exchange_n(&slot_map[w], &m, m | (1ull << b), false,
                                            __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
                return slot_own(slot, true);
        }
    }
    unsigned orphan = slot_adopt();
    if (orphan != KHEAP_CPU_NONE)
        return slot_own(orphan, false);
    /* Every slot taken: a lent slot (or the locked path), and a later
     * enter tries again (slot_retry). The destructor is set once, so that a slot
     * taken later, at this thread's exit, is never one that the
     * destructors have already been run for (the comment above). */
    if (!slot_marked) {
        slot_marked = 1;
        pthread_setspecific(slot_key, (void *)SLOT_NONE_MARK);
    }
    return KHEAP_CPU_NONE;
}

/* ------------------------------------------------------------------ */
/* Reports. */

void kheap_hosted_format_report(const struct kheap_report *r, char *buf, size_t len)
{
    int n = snprintf(buf, len, "kheap: %s(%p): %s%s%s%s", r->function ? r->function : "kheap",
                     r->addr, r->reason, r->cache ? " [cache " : "", r->cache ? r->cache : "",
                     r->cache ? "]" : "");
    if (r->where && n > 0 && (size_t)n < len)
        snprintf(buf + n, len - (size_t)n, " [block %p, %zu bytes; damage at %p, offset %td]",
                 r->addr, r->size, r->where, (const char *)r->where - (const char *)r->addr);
}

/* Write without stdio's buffers or locks: the report may come from a
 * malloc replacement inside stdio. */
static void put_line(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    while (n) {
        ssize_t w = write(2, s, n);
        if (w <= 0)
            break;
        s += w;
        n -= (size_t)w;
    }
    if (write(2, "\n", 1) < 0)
        return;
}

/* The default sink (kheap_set_report_hook replaces it). */
void kheap_port_report(const struct kheap_report *r)
{
    char line[512];
    kheap_hosted_format_report(r, line, sizeof line);
    put_line(line);
    abort();
}

void kheap_port_panic(const char *msg, const void *addr)
{
    char line[512];
    snprintf(line, sizeof line, "kheap: panic: %s (at %p)", msg, addr);
    put_line(line);
    abort();
}

#if KHEAP_PORT_PAGES
#if KHEAP_PORT_COMMIT
/* The platform's page size, once. */
static size_t os_page(void)
{
    static size_t pg;
    size_t p = __atomic_load_n(&pg, __ATOMIC_RELAXED);
    if (!p) {
        long v = sysconf(_SC_PAGESIZE);
        p = v > 0 ? (size_t)v : (size_t)KHEAP_PAGE_SIZE;
        __atomic_store_n(&pg, p, __ATOMIC_RELAXED);
    }
    return p;
}

/* The memory of growth and of the reservation comes inaccessible
 * (PROT_NONE) and is opened by the page layer as it uses it
 * (kheap_port_pages_commit), so a stray access into what the heap has
 * not used yet faults. Each mapping also keeps an inaccessible gap of a
 * page (kheap's or the platform's, the larger) before and after what it
 * gives, never opened, so running off either end of a region faults
 * instead of landing in a neighbouring mapping. MAP_NORESERVE with
 * PROT_NONE costs address space only; opening charges the pages to the
 * overcommit account, where the policy is strict, as they are opened. */
#define MAP_PROT PROT_NONE
#define MAP_FLAGS (MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE)
static size_t gap(void)
{
    size_t pg = os_page();
    return pg > (size_t)KHEAP_PAGE_SIZE ? pg : (size_t)KHEAP_PAGE_SIZE;
}

int kheap_port_pages_commit(void *addr, size_t bytes, int commit)
{
    size_t pg = os_page();
    uintptr_t lo = (uintptr_t)addr, hi = lo + bytes;
    if (commit) {
        /* Platform pages larger than kheap's: open the ones that hold the
         * range (opening more than asked is harmless). */
        lo &= ~(uintptr_t)(pg - 1);
        hi = (hi + pg - 1) & ~(uintptr_t)(pg - 1);
        return mprotect((void *)lo, hi - lo, PROT_READ | PROT_WRITE);
    }
    /* Shut only whole platform pages inside the range (a neighbour's
     * kheap page must stay open); a new inaccessible mapping over them
     * drops their contents in the same call. */
    lo = (lo + pg - 1) & ~(uintptr_t)(pg - 1);
    hi &= ~(uintptr_t)(pg - 1);
    if (hi <= lo)
        return -1;
    void *p = mmap((void *)lo, hi - lo, PROT_NONE, MAP_FLAGS | MAP_FIXED, -1, 0);
    return p == MAP_FAILED ? -1 : 0;
}
#else
#define MAP_PROT (PROT_READ | PROT_WRITE)
#define MAP_FLAGS (MAP_PRIVATE | MAP_ANONYMOUS)
static size_t gap(void)
{
    return 0;
}
#endif

void *kheap_port_pages_get(size_t bytes, size_t *got)
{
    size_t g = gap();
    if (bytes > SIZE_MAX - 2 * g)
        return NULL;
    char *p = mmap(NULL, bytes + 2 * g, MAP_PROT, MAP_FLAGS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    *got = bytes;
    return p + g;
}

void kheap_port_pages_put(void *base, size_t bytes)
{
    munmap((char *)base - gap(), bytes + 2 * gap());
}
#endif

#if KHEAP_PORT_PAGES && KHEAP_DEFAULT_RESERVE
/* MAP_NORESERVE: the reservation is address space only; pages cost memory
 * when first touched. Halving finds the largest power-of-two fraction of
 * max that the address-space limit (ulimit -v) or the overcommit policy
 * allows. With KHEAP_PORT_COMMIT it comes inaccessible, between two gaps,
 * as growth does. */
void *kheap_port_pages_reserve(size_t max, size_t min, size_t *got)
{
    size_t g = gap();
    for (size_t bytes = max; bytes >= min && bytes >= (size_t)KHEAP_PAGE_SIZE; bytes /= 2) {
        char *p = mmap(NULL, bytes + 2 * g, MAP_PROT, MAP_FLAGS | MAP_NORESERVE, -1, 0);
        if (p != MAP_FAILED) {
            *got = bytes;
            return p + g;
        }
    }
    return NULL;
}
#endif

#if KHEAP_PORT_PURGE
/* Private anonymous pages read as zero after MADV_DONTNEED and come back
 * on the next touch; the range stays mapped. */
void kheap_port_pages_purge(void *addr, size_t bytes)
{
    madvise(addr, bytes, MADV_DONTNEED);
}
#endif

#if KHEAP_PORT_CLOCK
/* Decay's clock (hosted_clock_ms), whose tick resolution its epochs of a
 * second do not notice. */
uint64_t kheap_port_clock_ms(void)
{
    return hosted_clock_ms();
}
#endif

#if KHEAP_PORT_PROTECT
/* mprotect, on whole pages of the platform: it must not be larger than
 * kheap's page, or protecting one of kheap's pages would take its
 * neighbours too (a 16 or 64 KiB page kernel: the sampler stays off). */
int kheap_port_protect(void *addr, size_t bytes, int access)
{
    static long os_page;
    long pg = __atomic_load_n(&os_page, __ATOMIC_RELAXED);
    if (!pg) {
        pg = sysconf(_SC_PAGESIZE);
        __atomic_store_n(&os_page, pg, __ATOMIC_RELAXED);
    }
    if (pg <= 0 || (unsigned long)pg > KHEAP_PAGE_SIZE || (uintptr_t)addr % (unsigned long)pg)
        return -1;
    return mprotect(addr, bytes, access ? PROT_READ | PROT_WRITE : PROT_NONE);
}

/* The SIGSEGV handler of kheap_hosted_catch_faults: a fault in the guard
 * pool of one of the heaps is reported (kheap_guard_fault); any other goes
 * to the handler that was there before, or kills the process as the
 * default action does. The handler reads the table with atomic loads and
 * no lock (a signal handler may not wait); kheap_hosted_forget_faults
 * takes a heap out before its memory goes. */
#include <signal.h>

#define FAULT_HEAPS 8
static kheap_t *fault_heaps[FAULT_HEAPS];
static struct sigaction fault_prev;
static int fault_installed;
static pthread_mutex_t fault_lock = PTHREAD_MUTEX_INITIALIZER;

/* The default action, for a fault (returning repeats the access, which
 * faults again) or a SIGSEGV sent by kill or raise (si_code <= 0, not
 * repeated by returning: sent again). */
static void fault_default(int sig, const siginfo_t *si)
{
    signal(sig, SIG_DFL);
    if (si->si_code <= 0)
        raise(sig);
}

static void on_fault(int sig, siginfo_t *si, void *ctx)
{
    for (unsigned i = 0; i < FAULT_HEAPS && si->si_code > 0; i++) {
        kheap_t *h = __atomic_load_n(&fault_heaps[i], __ATOMIC_ACQUIRE);
        if (h && kheap_guard_fault(h, si->si_addr)) {
            /* Reported, and the hook returned: the access must not be
             * retried as if nothing happened. Returning with the default
             * action set repeats the fault, which now ends the process
             * with SIGSEGV, the signal the bug deserved. */
            fault_default(sig, si);
            return;
        }
    }
    /* Called as the kernel would have called it (its mask and flags are
     * not applied: the common way to chain, as crash reporters do). */
    if ((fault_prev.sa_flags & SA_SIGINFO) && fault_prev.sa_sigaction)
        fault_prev.sa_sigaction(sig, si, ctx);
    else if (fault_prev.sa_handler == SIG_IGN && si->si_code <= 0)
        return; /* a sent SIGSEGV the program ignored */
    else if (fault_prev.sa_handler != SIG_DFL && fault_prev.sa_handler != SIG_IGN)
        fault_prev.sa_handler(sig);
    else
        fault_default(sig, si);
}

int kheap_hosted_catch_faults(kheap_t *h)
{
    int err = 0;
    if (!h)
        return KHEAP_EINVAL;
    pthread_mutex_lock(&fault_lock);
    unsigned i, free_i = FAULT_HEAPS;
    for (i = 0; i < FAULT_HEAPS && fault_heaps[i] != h; i++)
        if (!fault_heaps[i] && free_i == FAULT_HEAPS)
            free_i = i;
    if (i == FAULT_HEAPS) {
        if (free_i == FAULT_HEAPS)
            err = KHEAP_ETOOMANY;
        if (!err && !fault_installed) {
            /* The previous action is read before ours goes in, so a fault
             * on another thread in between finds it. */
            struct sigaction sa;
            if (sigaction(SIGSEGV, NULL, &fault_prev))
                err = KHEAP_ENOSYS;
            sa.sa_sigaction = on_fault;
            sigemptyset(&sa.sa_mask);
            sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
            if (!err && sigaction(SIGSEGV, &sa, NULL))
                err = KHEAP_ENOSYS;
            fault_installed = !err;
        }
        if (!err)
            __atomic_store_n(&fault_heaps[free_i], h, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&fault_lock);
    return err;
}

void kheap_hosted_forget_faults(kheap_t *h)
{
    pthread_mutex_lock(&fault_lock);
    for (unsigned i = 0; i < FAULT_HEAPS; i++)
        if (fault_heaps[i] == h)
            __atomic_store_n(&fault_heaps[i], NULL, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&fault_lock);
}
#endif
