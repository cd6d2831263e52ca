/*
 * kheap_port.h - what a platform supplies so kheap can run on it.
 *
 * The core (the files of src/) uses only these functions and the freestanding
 * headers. GCC and clang require even freestanding programs to provide
 * memcpy, memmove and memset; the core relies on that and on nothing else.
 * A port is one C file (src/port/<name>.c) defining the functions below.
 *
 * Ports shipped: hosted POSIX (src/port/hosted.c); bare metal for
 * RISC-V 64, AArch64 and x86_64 (src/port/baremetal.c, with the inline
 * per-CPU hooks in src/port/baremetal_cpu.h; docs/PORTING.md says how to
 * put kheap into a kernel).
 */
#ifndef KHEAP_PORT_H
#define KHEAP_PORT_H

#include <stddef.h>
#include <stdint.h>

#include "kheap_config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Storage for one lock. The port decides what the words mean (a spinlock
 * word and saved interrupt flags, a pthread mutex, ...). */
typedef struct kheap_lock {
    uintptr_t word[KHEAP_LOCK_WORDS];
} kheap_lock_t;

/* Make *lock an unlocked lock. Called once per lock before any other use,
 * from kheap_init, kheap_add_region-free paths and kheap_cache_create
 * (and once in the program's life for the registry of heaps, by its first
 * user), never concurrently with use of the same lock. Cannot fail. */
void kheap_port_lock_init(kheap_lock_t *lock);

/* Acquire *lock, waiting as long as needed. Pre: the caller does not hold
 * it (kheap never nests the same lock). Post: the caller holds it, and no
 * other thread or CPU does. A bare-metal port masks interrupts on the local
 * CPU before it spins and keeps them masked until unlock, so an interrupt
 * handler that allocates cannot deadlock against its own CPU. kheap holds
 * a lock only for O(1) work (or O(heap) inside kheap_check, and the
 * registry of heaps' across a CPU's flush, kheap_cpu_flush: with
 * interrupts masked throughout, on a bare-metal port), and never across a
 * constructor, a destructor or the report hook. */
void kheap_port_lock(kheap_lock_t *lock);

/* Release *lock. Pre: the caller holds it. Post: restores the interrupt
 * state saved by kheap_port_lock (bare metal). */
void kheap_port_unlock(kheap_lock_t *lock);

/* The per-CPU layer's two hooks.
 *
 * kheap_port_cpu_enter: return the index of the CPU the caller runs on,
 * in 0 .. KHEAP_MAX_CPUS - 1, and keep the caller on that CPU and alone in
 * its per-CPU state until kheap_port_cpu_exit: a bare-metal port disables
 * preemption, and interrupts too if interrupt handlers may allocate (an
 * interrupt on the same CPU would otherwise find a magazine half-updated).
 * Hosted, the "CPU" is a slot owned by the calling thread for its life,
 * and nothing needs disabling. May return KHEAP_CPU_NONE (no per-CPU state
 * for this caller: early boot, a thread beyond KHEAP_MAX_CPUS, a thread
 * after its exit hook): kheap then uses the cache's locked path.
 * kheap_port_cpu_exit(cpu): undo enter; cpu is what enter returned.
 * Between the two, kheap does O(1) work, takes no lock on the hit path,
 * and on a miss takes the cache's lock and page_lock as usual (a port that
 * masks interrupts must therefore allow those locks to be taken with
 * interrupts masked, which its spinlocks do).
 *
 * When a CPU stops (goes offline; hosted: a thread exits) the port calls
 * kheap_cpu_flush(cpu) from that CPU or after it has stopped, so its
 * cached objects go back to their caches in every heap.
 *
 * For speed the port may define both hooks as static inline functions in
 * a header named by KHEAP_PORT_CPU_HEADER (the hosted port does); else
 * they are ordinary functions. That header may also define
 * kheap_port_cpu_enter_fast() (and KHEAP_PORT_CPU_ENTER_FAST 1): like
 * enter, but it may return KHEAP_CPU_NONE rather than do slow work (the
 * hosted port's first-use slot claim); the hit paths use it, and a miss
 * then calls kheap_port_cpu_enter. With it, kheap_port_cpu_exit_fast(cpu)
 * undoes enter_fast (the hosted port's is nothing; its exit also gives
 * back a slot that enter only lent).
 *
 * Optionally (KHEAP_PORT_CPU_LOCAL 1 in that header), a word per CPU for
 * the default heap: kheap_port_cpu_local() returns the word of the CPU
 * the caller is on (read outside enter and exit too, only to compare it
 * with &kh_cpu_sentinel) and kheap_port_cpu_local_set(cpu, p) sets
 * cpu's, between enter and exit (cpu: what enter returned; a port that
 * keeps the hit paths off a CPU while a slow path has it shows the value
 * when that slow path exits). Its value
 * before the first set, and after the CPU stops, must be &kh_cpu_sentinel
 * (declared below; the hosted port's initial-exec TLS word is initialised
 * so). kheap keeps the default
 * heap's state of the CPU there, so kmalloc's and kfree's hit paths reach
 * it with one load from the thread pointer (a kernel port: a per-CPU
 * variable reached through its per-CPU base register).
 *
 * Optionally (KHEAP_PORT_CPU_REACH 1 in that header),
 * kheap_port_cpu_reach(fn, arg) calls fn(cpu, arg) for every CPU whose
 * per-CPU state the port can make the caller's alone for the length of
 * the call (as between enter and exit), and no other. kheap_reclaim then
 * takes back what those CPUs cache too, not only the caller's. The hosted
 * port reaches the slots it lends that no thread holds. */
#define KHEAP_CPU_NONE ((unsigned)KHEAP_MAX_CPUS)
struct kh_cpu;
extern struct kh_cpu kh_cpu_sentinel;
/* Another state whose every front misses, for a port that shows a CPU's
 * state to lockless hit paths through a word it swaps: what the word holds
 * while a slow path has the CPU (the hosted port's per-CPU mode). */
extern struct kh_cpu kh_cpu_claimed;
#ifdef KHEAP_PORT_CPU_HEADER
#include KHEAP_PORT_CPU_HEADER
#else
unsigned kheap_port_cpu_enter(void);
void kheap_port_cpu_exit(unsigned cpu);
#endif
#ifndef KHEAP_PORT_CPU_ENTER_FAST
#define KHEAP_PORT_CPU_ENTER_FAST 0
#define kheap_port_cpu_enter_fast() kheap_port_cpu_enter()
#define kheap_port_cpu_exit_fast(cpu) kheap_port_cpu_exit(cpu)
#endif
#ifndef KHEAP_PORT_CPU_LOCAL
#define KHEAP_PORT_CPU_LOCAL 0
#endif
#ifndef KHEAP_PORT_CPU_REACH
#define KHEAP_PORT_CPU_REACH 0
#endif

/* Optional: try to acquire *lock without waiting (KHEAP_PORT_TRYLOCK 1 in
 * the port's CPU header, which the hosted and bare-metal ports set).
 * Returns non-zero with the lock held, as kheap_port_lock would leave it
 * (released with kheap_port_unlock), or 0 at once when the lock is held
 * by anyone, this CPU included (an interrupt handler whose CPU holds the
 * lock gets 0, never a deadlock and never a "taken twice" panic). Must
 * be callable from any context kheap_alloc_flags(KHEAP_NOLOCK) is used
 * in: an interrupt handler, an NMI, a signal handler (hosted:
 * pthread_mutex_trylock, which is a single atomic operation on
 * glibc). Between a successful trylock and its unlock kheap does O(1)
 * work and takes no other lock. A port without it gets the fallback
 * below: always "busy", so KHEAP_NOLOCK calls use only the CPU's own
 * magazines. */
#ifndef KHEAP_PORT_TRYLOCK
#define KHEAP_PORT_TRYLOCK 0
#endif
#if KHEAP_PORT_TRYLOCK
int kheap_port_trylock(kheap_lock_t *lock);
#else
static inline int kheap_port_trylock(kheap_lock_t *lock)
{
    (void)lock;
    return 0;
}
#endif

/* What went wrong, for the report hook. */
enum kheap_report_kind {
    KHEAP_REPORT_FOREIGN = 1,   /* pointer is in no region of the heap */
    KHEAP_REPORT_INTERIOR,      /* pointer is inside a block, not its start */
    KHEAP_REPORT_FREE_RUN,      /* pointer is inside a free page run */
    KHEAP_REPORT_DOUBLE_FREE,   /* object is already free in its slab */
    KHEAP_REPORT_WRONG_CACHE,   /* object freed to a cache it is not from */
    KHEAP_REPORT_CORRUPTION,    /* poison or metadata found overwritten */
    KHEAP_REPORT_BUSY,          /* cache destroyed with objects allocated */
    /* Found by the redzones and the quarantine (KHEAP_REDZONE builds): */
    KHEAP_REPORT_OVERFLOW,      /* bytes after the block were written */
    KHEAP_REPORT_UNDERFLOW,     /* bytes before the block were written */
    KHEAP_REPORT_USE_AFTER_FREE, /* the block was written after its free */
    KHEAP_REPORT_KIND_MISMATCH, /* freed as another kind (free of new[], ...) */
    KHEAP_REPORT_SIZE_MISMATCH, /* sized free with a size not the block's */
};

struct kheap_report {
    enum kheap_report_kind kind;
    const char *reason;         /* a constant English sentence */
    const void *addr;           /* the address concerned */
    const char *cache;          /* the cache involved, or NULL; valid
                                   while the hook runs (a report made
                                   after a walk over the caches names a
                                   copy: the cache may be gone since) */
    const char *function;       /* the kheap entry point that found it */
    /* KHEAP_REDZONE builds fill these for the reports of the debug
     * blocks, and the sampled blocks' reports too: the block's size as
     * asked for, and the first damaged byte (a redzone's or the freed
     * block's, or the faulting address). A SIZE_MISMATCH of the other
     * builds gives the block's usable bytes as size. 0 elsewhere. */
    size_t size;
    const void *where;
};

/* The default sink of misuse reports: kheap calls it for a report when no
 * hook is set (kheap_set_report_hook, kheap.h). Called with no kheap lock
 * held, after the heap has refused the operation (the heap is consistent
 * when this is called). It may return (kheap then carries on: the bad operation is
 * ignored) or not return (abort, panic). Hosted default: one line on
 * stderr, then abort(), as glibc does. */
void kheap_port_report(const struct kheap_report *report);

/* Stop: kheap found its own metadata inconsistent (a KHEAP_DEBUG >= 1
 * assertion failed), which only a kheap bug or a wild write into the
 * heap's metadata can cause. Called possibly with kheap locks held; must
 * not return and must not call into kheap. msg is a constant sentence, addr
 * the address concerned. Hosted: one line on stderr, then abort(). */
void kheap_port_panic(const char *msg, const void *addr)
    __attribute__((noreturn));

#if KHEAP_PORT_PAGES
/* Fresh memory for a heap to grow into: at least bytes bytes (a multiple
 * of KHEAP_PAGE_SIZE), aligned to KHEAP_PAGE_SIZE, never overlapping
 * memory the heap already has. Returns NULL when there is none. Sets *got
 * to the bytes actually given (>= bytes). May be called with the heap's
 * page lock held: it must not call into kheap. */
void *kheap_port_pages_get(size_t bytes, size_t *got);

/* Give back memory obtained from kheap_port_pages_get (whole, as got). */
void kheap_port_pages_put(void *base, size_t bytes);
#endif

#if KHEAP_PORT_PAGES && KHEAP_DEFAULT_RESERVE
/* Address space for the default heap's first region, asked once, at its
 * first use: zero-filled, aligned to KHEAP_PAGE_SIZE, of at most max and at
 * least min bytes (the port gives what it can in between, e.g. halving on
 * failure), with pages that cost nothing until touched. Sets *got. Returns
 * NULL when it cannot give min: the heap then uses its static array. Must
 * not call into kheap (it runs inside the first allocation). */
void *kheap_port_pages_reserve(size_t max, size_t min, size_t *got);
#endif

#if KHEAP_PORT_COMMIT
/* With KHEAP_PORT_COMMIT, kheap_port_pages_get and kheap_port_pages_reserve
 * give address space that is inaccessible (any access faults) and reads
 * as zero once opened. commit 1: make [addr, addr + bytes) (page-aligned,
 * whole pages, inside such memory) readable and writable, keeping what
 * is there (pages opened before stay as they are); commit 0: make it
 * inaccessible again, its contents dropped (it reads as zero when next
 * opened). Returns 0, or non-zero if the platform cannot (then nothing
 * changed as far as the heap knows: an allocation that needed the pages
 * fails; free pages it meant to shut are purged instead). The page layer
 * calls it with the heap's page_lock held, rarely (an accessible frontier
 * per region grows in steps; free pages are shut in place of a purge and
 * opened again when their run is next allocated: pages.c): it must not
 * call into kheap. Hosted: mprotect (and madvise to drop). Absent
 * (KHEAP_PORT_COMMIT 0): the port's memory is accessible when given. */
int kheap_port_pages_commit(void *addr, size_t bytes, int commit);
#endif

#if KHEAP_PORT_PURGE
/* The pages [addr, addr + bytes) (page-aligned, whole pages) are free and
 * their contents are no longer needed: the platform may take their
 * physical memory back. They stay part of the heap: they must remain
 * mapped and readable and writable, and read as anything afterwards (the
 * heap never assumes free pages hold zero). Called with the heap's
 * page_lock held: must not call into kheap. Hosted: madvise(MADV_DONTNEED).
 * (With KHEAP_PORT_COMMIT, free pages of the port's own memory are shut
 * through kheap_port_pages_commit instead, which drops them too.)
 * Absent (KHEAP_PORT_PURGE 0): freed pages stay resident. */
void kheap_port_pages_purge(void *addr, size_t bytes);
#endif

#if KHEAP_PORT_PROTECT
/* Make the pages [addr, addr + bytes) (page-aligned, whole pages, all
 * inside the heap) inaccessible (access 0: any read or write faults) or
 * readable and writable again (access 1). Returns 0, or non-zero if the
 * platform cannot (the hosted port refuses when its pages are larger
 * than KHEAP_PAGE_SIZE). Used only by the sampled guard blocks
 * (kheap_set_sample), on their slow paths, with no kheap lock held; must
 * not call into kheap. Hosted: mprotect. A kernel's
 * page-fault handler then passes faults in such pages to
 * kheap_guard_fault. */
int kheap_port_protect(void *addr, size_t bytes, int access);
#endif

#if KHEAP_PORT_CLOCK
/* Milliseconds on a monotonic clock (any origin; it must never go back).
 * Read on slow paths only, never on a hit path, to drive decay; may be
 * called with kheap locks held, so it must not call into kheap. A coarse
 * clock is enough (hosted: CLOCK_MONOTONIC_COARSE). Without it
 * (KHEAP_PORT_CLOCK 0) the kernel drives decay with kheap_tick. */
uint64_t kheap_port_clock_ms(void);
#endif

#ifdef __cplusplus
}
#endif

#endif /* KHEAP_PORT_H */
