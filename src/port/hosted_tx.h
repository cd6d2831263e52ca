/*
 * hosted_tx.h - the hosted port's hit-path commits on x86-64 Linux: a
 * pop from or a push onto a front of the default heap's state of the CPU
 * the caller runs on, or onto a bin of its cache of large blocks, made
 * whole or not at all, with no lock and no atomic instruction (the free
 * of a large block takes its page tag with a compare-and-exchange before
 * its sequence: kh_tx_run_free, kh_fast.h).
 *
 * Each is a restartable sequence (Linux rseq(2), registered for every
 * thread by glibc >= 2.35): from reading the CPU number to the one store
 * that commits, the kernel restarts the sequence from the top if the
 * thread is preempted, migrated or signalled inside it. So a thread
 * changes a front of the CPU it runs on only if no other thread ran on
 * that CPU in between, and the CPU's magazines serve every thread on it.
 *
 * The one store: a pop writes top and allocs, a push frees and top, as
 * one 16-byte store (struct kh_cc keeps the three words adjacent); so the
 * counters stay exact, where an increment after the commit could be made
 * on the next CPU after a migration, racing that CPU's own. The pair is
 * loaded as two 8-byte halves (movq, movhps; a pop's top is already in
 * a register), each within the last commit's store whichever it was: a 16-byte load across the other
 * operation's store (a pop's after a push's) cannot be forwarded from it
 * and waits for the store to reach the cache (a malloc(32)/free pair:
 * 14.9 ns with one load, 9.7 with the halves; per-thread slots 6.4).
 *
 * Where the index comes from (kh_hosted_cpus, hosted_cpu.h): the cpu_id
 * word of glibc's rseq area, signed. With rseq registered, the kernel
 * keeps the CPU number there, and the table holds each CPU's state.
 * Where it is not (an old kernel, valgrind, glibc.pthread.rseq=0), the
 * kernel never writes the area, and the port writes a negative index for
 * the thread's slot there itself (KH_TBL_SLOT; -1 and -2, a thread with
 * no slot, index the sentinel): the same code then reaches the thread's
 * own slot, the sequence never restarts, and the hit path is one path in
 * both modes. The descriptor and abort macros are in hosted_cpu.h.
 *
 * What the sequences know of the core: struct kh_cc's words (frees, top,
 * allocs adjacent: kh_front.h asserts it), the front's slot-test
 * constants, the double-free key's value and offset (KH_GUARD_KEY,
 * KH_GUARD_OFF), the page tag of a live large block (KH_RUN_TAG), where
 * a CPU's state holds its cache of large blocks (kh_cc.runs of
 * kh_cpu.run_front) and struct kh_runbin's words (frees, head, allocs,
 * cap, in that order: asserted there too), and with homes the state's
 * self (4 bytes, compared with the page's home) and remote (8 bytes, the
 * distance to an array of fronts laid out as cc[]; 0 in the static
 * states, whose self is KH_HOME_NONE), all taken from kh_front.h here
 * (the sizes asserted below). kh_fast.h takes KH_TX_MISS, KH_TX_HIT and KH_TX_RUN from here.
 */
#ifndef KHEAP_HOSTED_TX_H
#define KHEAP_HOSTED_TX_H

#include <stddef.h>
#include <stdint.h>

/* {-8, 1} and {1, 8}: what a pop adds to {top, allocs} and a push to
 * {frees, top} (hosted.c). */
extern const int64_t kh_tx_pop_add[2] __attribute__((visibility("hidden")));
extern const int64_t kh_tx_push_add[2] __attribute__((visibility("hidden")));
/* {0, 1} and {1, 0}: what a pop from a bin of the CPU's cache of large
 * blocks adds to {head, allocs} (head is replaced), and a push to
 * {frees, head}. */
extern const int64_t kh_tx_run_pop_add[2] __attribute__((visibility("hidden")));
extern const int64_t kh_tx_run_push_add[2] __attribute__((visibility("hidden")));

/* The first instructions of every sequence: t the CPU number (the
 * cpu_id word of the rseq area, at %fs:__rseq_offset + 4), cc the state
 * of the default heap its cell holds (kh_hosted_sb + the cell's word).
 * The asm operands rs, cs, tbl, sb, t and cc are the sequences' own. */
#define KH_TX_STATE                                                                 \
    "movslq %%fs:4(%[rs]), %[t]\n\t"                                                 \
    "shl %[cs], %[t]\n\t"                                                            \
    "lea %[tbl], %[cc]\n\t"                                                          \
    "mov (%[cc], %[t]), %[cc]\n\t"                                                   \
    "add %[sb], %[cc]\n\t"
/* The input operands KH_TX_STATE (and KH_TX_ARM's rs) read, first in
 * every sequence's input list. */
#define KH_TX_STATE_IN                                                              \
    [rs] "r"(__rseq_offset), [tbl] "m"(kh_hosted_cpus[0]), [cs] "i"(KH_CELL_SHIFT),  \
        [sb] "m"(kh_hosted_sb)

/* Pop into *out from the front at state + D + x (direct false) or from
 * the front a direct[] entry there names (direct true: D is direct[]'s
 * offset); false if its magazine is empty. D and direct are constants. */
#define kh_tx_pop_direct(D, x, out) kh_tx_pop(x, out, D, true)
#define kh_tx_pop_at(D, x, out) kh_tx_pop(x, out, D, false)
static kh_always_inline bool kh_tx_pop(size_t x, void **out, const size_t D, const bool direct)
{
    void *obj;
    uintptr_t t, cc;
    __asm__ __volatile__ goto(KH_TX_ARM("[rs]", "[t]")
                 KH_TX_STATE
                 ".if %c[direct]\n\t"
                 "mov %c[D](%[cc], %[x]), %[cc]\n\t"
                 ".else\n\t"
                 "lea %c[D](%[cc], %[x]), %[cc]\n\t"
                 ".endif\n\t"
                 "mov 8(%[cc]), %[t]\n\t"
                 "cmp %c[base](%[cc]), %[t]\n\t"
                 "je %l[empty]\n\t"
                 "movq %[t], %%xmm0\n\t"
                 "movhps 16(%[cc]), %%xmm0\n\t"
                 "mov -8(%[t]), %[obj]\n\t"
                 "paddq %[add], %%xmm0\n\t"
                 "movdqu %%xmm0, 8(%[cc])\n"
                 "2:\n\t" KH_TX_ABORT
                 : [t] "=&r"(t), [cc] "=&r"(cc), [obj] "=&r"(obj)
                 : KH_TX_STATE_IN, [x] "r"(x), [D] "i"(D),
                   [direct] "i"(direct ? 1 : 0), [base] "i"(offsetof(struct kh_cc, base)),
                   [add] "m"(kh_tx_pop_add)
                 : "xmm0", "memory", "cc"
                 : empty);
    *out = obj;
    return true;
empty:
    return false;
}

/* The free hit: push p onto the front at state + tag, marking it with
 * the double-free key. In the sequence, in this order: the slot test
 * (off: p's offset in its slab, from its page's entry: kh_pt_entry; the
 * tag of a large block or of no class names a front whose test always
 * fails); then the key (found: a miss), the room (none: a miss), and the
 * key stored just before the commit, so that no other thread on the CPU
 * can pop p before it is stored, nor a miss leave it stored. A sequence
 * restarted after storing it meets its own key and misses: the slow
 * path, which finds p in no magazine, frees it. With homes (KH_HOMES),
 * the room and the push are those of the class's remote front when home,
 * the page's, is not the state's self (kh_cc_home, kh_fast.h): the
 * distance to it (kh_cpu.remote, which leads to kh_cpu_sentinel's fronts,
 * full, until the CPU has remote fronts) is picked with a conditional
 * move from the state, read in the sequence as the state is, and added
 * after the slot test, which the class's own front holds the constants
 * of. The static states' self is KH_HOME_NONE and their distance 0, so a
 * claimed CPU misses either way. KH_TX_HIT when pushed,
 * KH_TX_MISS for the slow path, and KH_TX_RUN for the first page of a
 * live large block (tag KH_RUN_TAG, which names kh_cpu.run_front), which
 * leaves once its slot test failed, before reading anything more, for
 * the caller's push of runs (kh_tx_run_push): the compare that tells it
 * apart is out of line, off every hit. */
enum { KH_TX_MISS, KH_TX_HIT, KH_TX_RUN };
#if KH_HOMES
_Static_assert(sizeof(((struct kh_cpu *)0)->self) == 4, "kh_tx_free compares self as 32 bits");
_Static_assert(sizeof(((struct kh_cpu *)0)->remote) == 8, "kh_tx_free moves remote as 64 bits");
#endif
static kh_always_inline int kh_tx_free(size_t tag, uint64_t off, unsigned home, void *p)
{
    uintptr_t t, cc;
#if KH_HOMES
    uintptr_t rd;
#else
    (void)home;
#endif
    __asm__ __volatile__ goto(KH_TX_ARM("[rs]", "[t]")
                 KH_TX_STATE
#if KH_HOMES
                 "xor %k[rd], %k[rd]\n\t"
                 "cmp %k[home], %c[self](%[cc])\n\t"
                 "cmovne %c[remote](%[cc]), %[rd]\n\t"
#endif
                 "add %[tag], %[cc]\n\t"
                 "mov %[off], %[t]\n\t"
                 "imul %c[div](%[cc]), %[t]\n\t"
                 "cmp %c[lim](%[cc]), %[t]\n\t"
                 ".if %c[runs_on]\n\t"
                 "jae 6f\n\t"
                 ".else\n\t"
                 "jae %l[miss]\n\t"
                 ".endif\n\t"
                 "cmpl %[key], %c[kw](%[p])\n\t"
                 "je %l[miss]\n\t"
#if KH_HOMES
                 "add %[rd], %[cc]\n\t"
#endif
                 "mov 8(%[cc]), %[t]\n\t"
                 "cmp %c[limit](%[cc]), %[t]\n\t"
                 "jae %l[miss]\n\t"
                 "movl %[key], %c[kw](%[p])\n\t"
                 "movq (%[cc]), %%xmm0\n\t"
                 "movhps 8(%[cc]), %%xmm0\n\t"
                 "mov %[p], (%[t])\n\t"
                 "paddq %[add], %%xmm0\n\t"
                 "movdqu %%xmm0, (%[cc])\n"
                 "2:\n\t" KH_TX_ABORT
                 ".if %c[runs_on]\n\t"
                 ".pushsection .text.unlikely, \"ax\"\n"
                 "6:\n\t"
                 "cmp %[runtag], %[tag]\n\t"
                 "je %l[run]\n\t"
                 "jmp %l[miss]\n\t"
                 ".popsection\n\t"
                 ".endif\n\t"
                 : [t] "=&r"(t), [cc] "=&r"(cc)
#if KH_HOMES
                   , [rd] "=&r"(rd)
#endif
                 : KH_TX_STATE_IN, [tag] "r"(tag), [off] "r"(off), [p] "r"(p),
#if KH_HOMES
                   [home] "r"(home), [self] "i"(offsetof(struct kh_cpu, self)),
                   [remote] "i"(offsetof(struct kh_cpu, remote)),
#endif
                   [div] "i"(offsetof(struct kh_cc, divtest)),
                   [lim] "i"(offsetof(struct kh_cc, slot_lim)),
                   [limit] "i"(offsetof(struct kh_cc, limit)), [key] "i"(KH_GUARD_KEY),
                   [kw] "i"(KH_GUARD_OFF), [add] "m"(kh_tx_push_add),
                   [runs_on] "i"(KH_RUNS), [runtag] "i"(KH_RUN_TAG)
                 : "xmm0", "memory", "cc"
                 : miss, run);
    return KH_TX_HIT;
miss:
    return KH_TX_MISS;
run:
    return KH_TX_RUN;
}

#if KH_RUNS

/* The CPU's state's cache of large blocks (kh_cpu.run_front.runs). */
#define KH_TX_RUNS (offsetof(struct kh_cpu, run_front) + offsetof(struct kh_cc, runs))

/* Pop into *out a run from the bin at x bytes into the cache of large
 * blocks of the CPU the caller runs on; false if the bin is empty (as
 * all are in kh_runcache_none, the cache of a CPU that has none yet, and
 * of the claimed state). The run's first word, the next one in the bin, is
 * read inside the sequence: the runs of a bin are the CPU's, and one that
 * empties them (a flush) first claims the CPU and restarts every
 * sequence on it. The commit writes head with allocs. */
static kh_always_inline bool kh_tx_run_pop(size_t x, void **out)
{
    void *obj;
    uintptr_t t, cc;
    __asm__ __volatile__ goto(KH_TX_ARM("[rs]", "[t]")
                 KH_TX_STATE
                 "mov %c[runs](%[cc]), %[cc]\n\t"
                 "add %[x], %[cc]\n\t"
                 "mov 8(%[cc]), %[obj]\n\t"
                 "test %[obj], %[obj]\n\t"
                 "jz %l[empty]\n\t"
                 "movq (%[obj]), %%xmm0\n\t"
                 "movhps 16(%[cc]), %%xmm0\n\t"
                 "paddq %[add], %%xmm0\n\t"
                 "movdqu %%xmm0, 8(%[cc])\n"
                 "2:\n\t" KH_TX_ABORT
                 : [t] "=&r"(t), [cc] "=&r"(cc), [obj] "=&r"(obj)
                 : KH_TX_STATE_IN, [x] "r"(x), [runs] "i"(KH_TX_RUNS),
                   [add] "m"(kh_tx_run_pop_add)
                 : "xmm0", "memory", "cc"
                 : empty);
    *out = obj;
    return true;
empty:
    return false;
}


/* Push the run p, whose tag the caller took, onto the bin at x bytes
 * into the cache of large blocks of the CPU the caller runs on; false if
 * the bin holds its cap of runs (0 in every bin of kh_runcache_none, the
 * cache of a CPU that has none yet, and of the claimed state). p's first word is linked to the bin's head inside the sequence
 * (p is the caller's until the commit, so a restart writes it again); the
 * commit writes the bin's frees with its head. */
static kh_always_inline bool kh_tx_run_push(size_t x, void *p)
{
    uintptr_t t, cc;
    __asm__ __volatile__ goto(KH_TX_ARM("[rs]", "[t]")
                 KH_TX_STATE
                 "mov %c[runs](%[cc]), %[cc]\n\t"
                 "add %[x], %[cc]\n\t"
                 "mov (%[cc]), %[t]\n\t"
                 "sub 16(%[cc]), %[t]\n\t"
                 "cmp 24(%[cc]), %[t]\n\t"
                 "jae %l[miss]\n\t"
                 "mov 8(%[cc]), %[t]\n\t"
                 "mov %[t], (%[p])\n\t"
                 "movq (%[cc]), %%xmm0\n\t"
                 "movq %[p], %%xmm1\n\t"
                 "punpcklqdq %%xmm1, %%xmm0\n\t"
                 "paddq %[add], %%xmm0\n\t"
                 "movdqu %%xmm0, (%[cc])\n"
                 "2:\n\t" KH_TX_ABORT
                 : [t] "=&r"(t), [cc] "=&r"(cc)
                 : KH_TX_STATE_IN, [x] "r"(x), [p] "r"(p), [runs] "i"(KH_TX_RUNS),
                   [add] "m"(kh_tx_run_push_add)
                 : "xmm0", "xmm1", "memory", "cc"
                 : miss);
    return true;
miss:
    return false;
}
#endif

#endif /* KHEAP_HOSTED_TX_H */
