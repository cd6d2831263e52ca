/*
 * kernel.c - the demo kernel every architecture shares: kheap's default
 * heap (the static array in BSS, KHEAP_DEFAULT_SIZE bytes) is its heap.
 *
 * The boot CPU starts the others, which wait for work; it then runs the
 * port's own tests (interrupt masking, an interrupt handler that
 * allocates, the port's report line), the shared test bodies (tests/bodies.c, also run hosted)
 * with every CPU taking part in the SMP stress, prints the statistics and
 * the slabinfo table, and "N passed, N failed", and leaves QEMU with a
 * status that says whether everything passed.
 *
 * Work for the other CPUs: kernel_main publishes (fn, arg) and bumps
 * work_gen (release); each secondary that sees a new generation (acquire)
 * runs fn and bumps work_done (release); run_all waits for work_done
 * (acquire) to reach the number of secondaries, so everything they wrote
 * is visible to the boot CPU after run_all.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arch.h"
#include "bodies.h"
#include "kheap.h"
#include "kheap_baremetal.h"
#include "small.h"

#ifndef DEMO_MODEL_OPS
#define DEMO_MODEL_OPS 20000
#endif
#ifndef DEMO_STRESS_OPS
#define DEMO_STRESS_OPS 20000
#endif
#ifndef DEMO_SMALL
#define DEMO_SMALL 0 /* 1: also run the small-heap tests (tests/small.c) */
#endif
#ifndef DEMO_RUST
#define DEMO_RUST 0 /* 1: also run the Rust library (demo/rust) */
#endif
#ifndef DEMO_SEED
#define DEMO_SEED 0 /* 0: from the clock */
#endif

/* ------------------------------------------------------------------ */
/* Console: the port's console hook and halt. */

/* While capture is set, console output is also copied there (the
 * port_report_line test reads what the port printed). Only the boot CPU
 * sets it, while the other CPUs are idle. */
static char *capture;
static size_t capture_len, capture_cap;

void kheap_bm_console_write(const char *s, size_t n)
{
    for (size_t i = 0; i < n && capture; i++)
        if (capture_len + 1 < capture_cap) {
            capture[capture_len++] = s[i];
            capture[capture_len] = '\0';
        }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\n')
            arch_putc('\r');
        arch_putc(s[i]);
    }
}

void kheap_bm_halt(void)
{
    arch_exit(1);
}

static void puts_line(const char *s)
{
    kheap_bm_puts(s);
}

/* Print a multi-line text as whole lines. */
static void puts_text(char *text)
{
    char *line = text;
    for (char *p = text; *p; p++) {
        if (*p == '\n') {
            *p = '\0';
            kheap_bm_puts(line);
            line = p + 1;
        }
    }
    if (*line)
        kheap_bm_puts(line);
}

/* ------------------------------------------------------------------ */
/* CPUs. */

/* A secondary claims a slot (cpus_claimed), fills cpu_hw[slot], then
 * counts itself online (release); the boot CPU reads cpu_hw only for
 * slots below cpus_online (acquire), so it sees them filled. */
static unsigned cpus_claimed = 1, cpus_online = 1; /* boot CPU included */
static unsigned cpu_hw[DEMO_MAX_CPUS];             /* hardware index of each */
static void (*work_fn)(unsigned, void *);
static void *work_arg;
static unsigned work_gen, work_done;

void kernel_secondary(void)
{
    unsigned me = __atomic_fetch_add(&cpus_claimed, 1, __ATOMIC_RELAXED);
    cpu_hw[me] = kheap_bm_cpu_index();
    __atomic_fetch_add(&cpus_online, 1, __ATOMIC_RELEASE);
    unsigned seen = 0;
    for (;;) {
        unsigned gen;
        while ((gen = __atomic_load_n(&work_gen, __ATOMIC_ACQUIRE)) == seen)
            ;
        seen = gen;
        work_fn(me, work_arg);
        __atomic_fetch_add(&work_done, 1, __ATOMIC_RELEASE);
    }
}

static void run_all(void (*fn)(unsigned, void *), void *arg)
{
    unsigned n = __atomic_load_n(&cpus_online, __ATOMIC_ACQUIRE);
    work_fn = fn;
    work_arg = arg;
    __atomic_store_n(&work_done, 0, __ATOMIC_RELAXED);
    __atomic_fetch_add(&work_gen, 1, __ATOMIC_RELEASE);
    fn(0, arg);
    while (__atomic_load_n(&work_done, __ATOMIC_ACQUIRE) < n - 1)
        ;
}

/* ------------------------------------------------------------------ */
/* The port's own tests. */

static char why[200];

#define PCHECK(cond, ...)                                                     \
    do {                                                                      \
        if (!(cond)) {                                                        \
            kt_format(why, sizeof why, __VA_ARGS__);                          \
            return false;                                                     \
        }                                                                     \
    } while (0)

static void result(const char *name, bool ok)
{
    if (ok) {
        kt_printf("ok - %s", name);
        kt_passed++;
    } else {
        kt_printf("not ok - %s: %s", name, why);
        kt_failed++;
    }
}

/* Locks and the per-CPU layer mask interrupts, nest, and restore them
 * only at the outermost release, in any release order. */
static bool port_irq_masking(void)
{
    arch_irqs_enable();
    PCHECK(arch_irqs_on(), "interrupts did not come on");
    kheap_lock_t a, b;
    kheap_port_lock_init(&a);
    kheap_port_lock_init(&b);
    kheap_port_lock(&a);
    PCHECK(!arch_irqs_on(), "interrupts on while a kheap lock is held");
    unsigned cpu = kheap_port_cpu_enter();
    PCHECK(cpu == kheap_bm_cpu_index(), "cpu_enter gave %u, this CPU is %u", cpu,
           kheap_bm_cpu_index());
    kheap_port_lock(&b);
    kheap_port_unlock(&a); /* out of order, as kheap_check does */
    PCHECK(!arch_irqs_on(), "interrupts on after an inner release");
    kheap_port_cpu_exit(cpu);
    PCHECK(!arch_irqs_on(), "interrupts on with a lock still held");
    kheap_port_unlock(&b);
    PCHECK(arch_irqs_on(), "interrupts still masked after the last release");
    void *p = kmalloc(40);
    PCHECK(p && arch_irqs_on(), "kmalloc left interrupts masked");
    kfree(p);
    PCHECK(arch_irqs_on(), "kfree left interrupts masked");
    return true;
}

static bool contains(const char *hay, const char *needle)
{
    for (; *hay; hay++) {
        size_t i = 0;
        while (needle[i] && hay[i] == needle[i])
            i++;
        if (!needle[i])
            return true;
    }
    return false;
}

/* With no hook set, the port reports misuse as one console line naming
 * the entry point, the address and the reason, and returns. */
static int not_from_heap;

static bool port_report_line(void)
{
    static char seen[256];
    char want[48];
    kt_format(want, sizeof want, "kheap_free(%p)", (void *)&not_from_heap);
    struct kheap_stats before, after;
    kheap_get_stats(kheap_default(), &before);
    capture_len = 0;
    capture_cap = sizeof seen;
    seen[0] = '\0';
    capture = seen;
    kfree(&not_from_heap);
    capture = NULL;
    PCHECK(contains(seen, want), "the report line \"%s\" does not name %s", seen, want);
    PCHECK(contains(seen, "not in any region"), "the report line \"%s\" gives no reason",
           seen);
    kheap_get_stats(kheap_default(), &after);
    PCHECK(after.used_bytes == before.used_bytes && after.free_count == before.free_count,
           "the refused free changed the statistics: used %zu -> %zu, frees %llu -> %llu",
           before.used_bytes, after.used_bytes, (unsigned long long)before.free_count,
           (unsigned long long)after.free_count);
    const void *addr = NULL;
    const char *bad = kheap_check(kheap_default(), &addr);
    PCHECK(!bad, "kheap_check after the report: %s at %p", bad, addr);
    return true;
}

/* An interrupt handler that allocates while the interrupted code
 * allocates too, on the same CPU: the port's masking makes the handler
 * wait for the heap to be left, never the other way round. */
#define IRQ_ROUNDS 50
/* The handler's largest block: a large block (beyond the slab classes)
 * that a microcontroller-sized heap still holds. */
#define IRQ_BIG (KHEAP_DEFAULT_SIZE >= (1u << 20) ? 70000u : (unsigned)KHEAP_MAX_CLASS + 1u)
/* A heap of less than 64 KiB (the small-system profile's 16 KiB) has
 * about 10 KiB free: the handler's middle block and the interrupted
 * code's blocks (16 + IRQ_STEP * k bytes, k < 8) shrink to fit beside
 * the handler's. */
#define TINY_HEAP (KHEAP_DEFAULT_SIZE < (64u << 10))
#define IRQ_MID (TINY_HEAP ? 600u : 3000u)
#define IRQ_STEP (TINY_HEAP ? 100u : 700u)

static unsigned irq_count;
static void *irq_keep[4];
static int irq_bad;

/* NOLOCK mode of the handler (nolock_irq): the interrupted code holds
 * every heap lock; the handler allocates and frees with KHEAP_NOLOCK. */
#define NL_ROUNDS 40
static int irq_nolock;
static unsigned nl_ok, nl_null, nl_bad;
static void *nl_keep[8];

static void nolock_handler(void)
{
    static const size_t sizes[2] = {24, 200};
    kheap_t *h = kheap_default();
    for (unsigned j = 0; j < 2; j++) {
        unsigned k = (irq_count * 2 + j) % 8;
        if (nl_keep[k]) {
            if (*(unsigned *)nl_keep[k] != k + 100)
                nl_bad++;
            kheap_free_flags(h, nl_keep[k], KHEAP_NOLOCK);
        }
        nl_keep[k] = kheap_alloc_flags(h, sizes[j], KHEAP_NOLOCK);
        if (nl_keep[k]) {
            *(unsigned *)nl_keep[k] = k + 100;
            nl_ok++;
        } else {
            nl_null++;
        }
    }
    __atomic_store_n(&irq_count, irq_count + 1, __ATOMIC_RELEASE);
    if (irq_count < NL_ROUNDS)
        arch_timer_arm();
}

void demo_irq_handler(void)
{
    if (irq_nolock) {
        nolock_handler();
        return;
    }
    static const size_t sizes[4] = {24, 200, IRQ_MID, IRQ_BIG};
    unsigned k = irq_count % 4;
    if (irq_keep[k]) {
        if (*(unsigned *)irq_keep[k] != irq_count - 4)
            irq_bad = 1;
        kfree(irq_keep[k]);
    }
    irq_keep[k] = kmalloc(sizes[k]);
    if (!irq_keep[k])
        irq_bad = 1;
    else
        *(unsigned *)irq_keep[k] = irq_count;
    __atomic_store_n(&irq_count, irq_count + 1, __ATOMIC_RELEASE);
    if (irq_count < IRQ_ROUNDS)
        arch_timer_arm();
}

static bool irq_alloc(void)
{
    if (!arch_timer_arm()) {
        kt_format(why, sizeof why, "no timer interrupt on this architecture");
        return false;
    }
    uint64_t t0 = arch_ticks(), limit = arch_tick_hz() * 20;
    unsigned long loops = 0;
    void *mine[8] = {0};
    while (__atomic_load_n(&irq_count, __ATOMIC_ACQUIRE) < IRQ_ROUNDS) {
        unsigned k = loops++ % 8;
        kfree(mine[k]);
        mine[k] = kmalloc(16 + IRQ_STEP * k);
        PCHECK(mine[k], "kmalloc(%u) failed between interrupts", 16 + IRQ_STEP * k);
        if (arch_ticks() - t0 > limit) {
            arch_timer_disarm();
            PCHECK(0, "%u of %d timer interrupts in 20 s", irq_count, IRQ_ROUNDS);
        }
    }
    arch_timer_disarm();
    for (unsigned k = 0; k < 8; k++)
        kfree(mine[k]);
    kheap_bm_irq_push(); /* no handler may run while we tidy up */
    for (unsigned k = 0; k < 4; k++) {
        kfree(irq_keep[k]);
        irq_keep[k] = NULL;
    }
    kheap_bm_irq_pop();
    PCHECK(!irq_bad, "an allocation in the handler (24, 200, %u or %u bytes) failed or was"
           " overwritten", IRQ_MID, IRQ_BIG);
    const void *addr = NULL;
    const char *bad = kheap_check(kheap_default(), &addr);
    PCHECK(!bad, "kheap_check: %s at %p", bad, addr);
    kt_printf("# irq: %d timer interrupts allocated and freed while the CPU ran "
              "%lu kmalloc/kfree pairs",
              IRQ_ROUNDS, loops);
    return true;
}

/* KHEAP_NOLOCK in the timer interrupt while the interrupted code holds
 * every lock of the heap (kheap_lock_all, then interrupts on by hand):
 * an ordinary kmalloc in the handler would find its own CPU holding the
 * lock (the port stops with "taken twice"); KHEAP_NOLOCK must neither
 * wait nor take it, and serve from this CPU's previous magazines. */
static bool nolock_irq(void)
{
    kheap_t *h = kheap_default();
    /* Objects in this CPU's previous magazines of both classes: a round
     * of allocations and frees leaves them full. */
    enum { WARM = TINY_HEAP ? 8 : 300 };
    static void *warm[WARM];
    for (unsigned j = 0; j < 2; j++) {
        for (unsigned i = 0; i < WARM; i++)
            warm[i] = kmalloc(j ? 200 : 24);
        for (unsigned i = 0; i < WARM; i++)
            kfree(warm[i]);
    }
    irq_count = 0;
    irq_nolock = 1;
    kheap_lock_all();
    arch_irqs_enable();
    bool armed = arch_timer_arm();
    uint64_t t0 = arch_ticks(), limit = arch_tick_hz() * 20;
    /* Interrupts on again at every turn: a handler's own masking is
     * undone by the exception return on RISC-V, AArch64 and x86_64, but
     * PRIMASK (Cortex-M) stays as the handler left it, and the port does
     * not unmask while this CPU holds a lock. */
    while (armed && __atomic_load_n(&irq_count, __ATOMIC_ACQUIRE) < NL_ROUNDS &&
           arch_ticks() - t0 <= limit)
        arch_irqs_enable();
    arch_timer_disarm();
    kheap_unlock_all();
    irq_nolock = 0;
    kheap_bm_irq_push();
    for (unsigned k = 0; k < 8; k++) {
        kfree(nl_keep[k]);
        nl_keep[k] = NULL;
    }
    kheap_bm_irq_pop();
    kheap_reclaim(h); /* frees deferred in the handler are taken now */
    PCHECK(armed, "no timer interrupt on this architecture");
    PCHECK(irq_count >= NL_ROUNDS, "%u of %d timer interrupts in 20 s", irq_count, NL_ROUNDS);
    /* Without the per-CPU layer (KHEAP_PERCPU 0) there are no magazines
     * to serve from while the locks are held: every NOLOCK allocation
     * must fail cleanly, and every free be deferred. */
    PCHECK((KHEAP_PERCPU ? nl_ok > 0 : nl_ok == 0) && !nl_bad,
           "%u NOLOCK allocations succeeded, %u overwritten", nl_ok, nl_bad);
    const void *addr = NULL;
    const char *bad = kheap_check(h, &addr);
    PCHECK(!bad, "kheap_check: %s at %p", bad, addr);
    kt_printf("# nolock_irq: %d timer interrupts with every heap lock held: %u KHEAP_NOLOCK "
              "allocations served, %u NULL",
              NL_ROUNDS, nl_ok, nl_null);
    return true;
}

/* ------------------------------------------------------------------ */
/* What a kmalloc hit and a kfree hit cost on this machine: HIT_ROUNDS
 * rounds of HIT_BATCH kmalloc(64) (all served by this CPU's magazine,
 * which a first round loads) and then their kfree (back into it), each
 * phase timed with the architecture's clock. The same loops calling an
 * empty function instead are timed too and taken off, so what remains is
 * kmalloc's or kfree's own code beyond a call of an empty function.
 * Printed in nanoseconds of the clock; under QEMU's -icount shift=0 the
 * virtual clock advances one nanosecond per guest instruction, so these
 * are instruction counts. Not a test: nothing here can fail. */
#define HIT_ROUNDS 2000
#define HIT_BATCH 16

__attribute__((noinline)) static void *empty_alloc(size_t n)
{
    __asm__ volatile("" : : "r"(n) : "memory");
    return NULL;
}

__attribute__((noinline)) static void empty_free(void *p)
{
    __asm__ volatile("" : : "r"(p) : "memory");
}

static void hit_loops(void *(*alloc)(size_t), void (*release)(void *), uint64_t *a,
                      uint64_t *f)
{
    static void *p[HIT_BATCH];
    *a = *f = 0;
    for (unsigned r = 0; r < HIT_ROUNDS; r++) {
        uint64_t t0 = arch_ticks();
        for (unsigned i = 0; i < HIT_BATCH; i++)
            p[i] = alloc(64);
        uint64_t t1 = arch_ticks();
        for (unsigned i = 0; i < HIT_BATCH; i++)
            release(p[i]);
        uint64_t t2 = arch_ticks();
        *a += t1 - t0;
        *f += t2 - t1;
    }
}

/* ticks / ops in ns, as an integer and hundredths. */
static void ns_per_op(uint64_t ticks, uint64_t base, char *out, size_t len)
{
    uint64_t ops = (uint64_t)HIT_ROUNDS * HIT_BATCH;
    uint64_t t = ticks > base ? ticks - base : 0;
    uint64_t c = t * 100000000000ull / arch_tick_hz() / ops; /* ns x 100 */
    kt_format(out, len, "%llu.%u%u", (unsigned long long)(c / 100), (unsigned)(c / 10 % 10),
              (unsigned)(c % 10));
}

static void hit_path_cost(void)
{
    uint64_t ka, kf, ea, ef;
    void *warm[HIT_BATCH];
    for (unsigned i = 0; i < HIT_BATCH; i++)
        warm[i] = kmalloc(64);
    for (unsigned i = 0; i < HIT_BATCH; i++)
        kfree(warm[i]);
    hit_loops(empty_alloc, empty_free, &ea, &ef);
    hit_loops(kmalloc, kfree, &ka, &kf);
    char a[32], f[32];
    ns_per_op(ka, ea, a, sizeof a);
    ns_per_op(kf, ef, f, sizeof f);
    kt_printf("# hit path: kmalloc(64) %s ns, kfree %s ns (means of %d, beyond an empty"
              " call; under QEMU -icount shift=0, instructions)",
              a, f, HIT_ROUNDS * HIT_BATCH);
}

#if KHEAP_PERCPU
/* ------------------------------------------------------------------ */
/* kheap_reclaim on the boot CPU cannot take what the other CPUs cache:
 * each uses its magazines without a lock. It leaves a request, which each
 * CPU answers itself with kheap_cpu_poll (or kheap_tick). A kernel would
 * make them answer with an IPI or from their idle loops; here each CPU
 * answers in turn, from the work loop (run_all), so that the magazines
 * can be looked at after each answer. */

#define ASK_SIZES 5
static unsigned ask_turn;                       /* whose turn to answer */
static size_t answered[DEMO_MAX_CPUS];          /* what each poll returned */
static size_t held_before[DEMO_MAX_CPUS], held_after[DEMO_MAX_CPUS];

static void fill_caches(unsigned cpu, void *arg)
{
    static const size_t sizes[ASK_SIZES] = {32, 200, 1000, 3000, 12000};
    void *p[32];
    (void)cpu, (void)arg;
    for (unsigned k = 0; k < ASK_SIZES; k++) {
        for (unsigned i = 0; i < 32; i++)
            p[i] = kmalloc(sizes[k]);
        for (unsigned i = 0; i < 32; i++)
            kfree(p[i]);
    }
}

/* Each CPU in turn (acquire on ask_turn sees the previous CPU's answer
 * whole; release hands the turn on). */
static void answer(unsigned cpu, void *arg)
{
    struct kheap_stats s;
    (void)arg;
    while (__atomic_load_n(&ask_turn, __ATOMIC_ACQUIRE) != cpu)
        ;
    kheap_get_stats(kheap_default(), &s);
    held_before[cpu] = s.magazine_bytes;
    answered[cpu] = kheap_cpu_poll(kheap_default());
    kheap_get_stats(kheap_default(), &s);
    held_after[cpu] = s.magazine_bytes;
    __atomic_store_n(&ask_turn, cpu + 1, __ATOMIC_RELEASE);
}

static bool reclaim_asks_cpus(unsigned n)
{
    kheap_t *h = kheap_default();
    struct kheap_stats s0, s1;
    run_all(fill_caches, NULL);
    kheap_get_stats(h, &s0);
    size_t got = kheap_reclaim(h);
    kheap_get_stats(h, &s1);
    __atomic_store_n(&ask_turn, 0, __ATOMIC_RELEASE);
    run_all(answer, NULL);
    size_t before[DEMO_MAX_CPUS], after[DEMO_MAX_CPUS], backs = 0;
    for (unsigned c = 0; c < n; c++) {
        before[c] = held_before[c];
        after[c] = held_after[c];
        backs += answered[c];
    }
    __atomic_store_n(&ask_turn, 0, __ATOMIC_RELEASE);
    run_all(answer, NULL); /* a second time: nothing more asked */
    kt_printf("# reclaim_asks_cpus: %u CPUs hold %zu bytes in their magazines; after "
              "kheap_reclaim on CPU 0 (%zu bytes back) %zu; after each CPU's kheap_cpu_poll "
              "in turn (%zu bytes back to the pages) %zu, %zu, %zu, %zu",
              n, s0.magazine_bytes, got, s1.magazine_bytes, backs, after[0],
              n > 1 ? after[1] : 0, n > 2 ? after[2] : 0, n > 3 ? after[3] : 0);
    PCHECK(s0.magazine_bytes > 0, "no magazine held anything after the fill");
    PCHECK(n < 2 || s1.magazine_bytes > 0,
           "kheap_reclaim on CPU 0 emptied the other CPUs' magazines (%zu bytes left)",
           s1.magazine_bytes);
    PCHECK(before[0] == after[0], "CPU 0 answered a request its own reclaim met (%zu -> %zu)",
           before[0], after[0]);
    for (unsigned c = 1; c < n; c++)
        PCHECK(after[c] < before[c], "CPU %u's answer left the magazines at %zu bytes", c,
               after[c]);
    PCHECK(after[n - 1] == 0, "after every CPU answered: magazines %zu bytes", after[n - 1]);
    for (unsigned c = 0; c < n; c++)
        PCHECK(answered[c] == 0 && held_after[c] == 0,
               "CPU %u answered one request twice (%zu bytes)", c, answered[c]);
    return true;
}

/* Decay on bare metal, where the port has no clock: the kernel drives it
 * by calling kheap_tick with a clock of its own, from a timer or its idle
 * loop. Here CPU 0 calls it at most once a millisecond of the
 * architecture's clock, with 20 ms epochs, after freeing blocks it will
 * not use again: what stays idle goes down the layers with no
 * kheap_reclaim, depot magazines to their slabs, then the slabs they
 * empty to the page layer.
 * (The CPUs' own magazines stay theirs: kheap_reclaim and kheap_cpu_poll
 * take those, above.) */
#define DECAY_EPOCH_MS 20u
#define DECAY_BLOCKS 4000u
static void *decay_blocks[DECAY_BLOCKS];

static bool tick_decays_idle_memory(void)
{
    kheap_t *h = kheap_default();
    struct kheap_stats s0, s1;
    kheap_get_stats(h, &s0);
    size_t n = s0.heap_total / 8 / 256;
    if (n > DECAY_BLOCKS)
        n = DECAY_BLOCKS;
    size_t got = 0;
    while (got < n && (decay_blocks[got] = kmalloc(256)))
        got++;
    for (size_t i = 0; i < got; i++)
        kfree(decay_blocks[i]);
    PCHECK(got == n, "kmalloc(256) %zu of %zu failed", got, n);
    kheap_get_stats(h, &s0);
    PCHECK(s0.depot_bytes > 0, "%zu blocks of 256 bytes freed, and the depots hold nothing", n);
    PCHECK(kheap_set_decay(h, DECAY_EPOCH_MS) == KHEAP_OK, "kheap_set_decay refused");
    uint64_t hz = arch_tick_hz(), t0 = arch_ticks(), ms = 0;
    size_t back = 0;
    unsigned ticks = 0;
    s1 = s0;
    while ((s1.depot_bytes || s1.empty_slab_bytes) && ms < 2000) {
        uint64_t now = (arch_ticks() - t0) * 1000 / hz;
        if (now == ms && ticks)
            continue; /* once a millisecond */
        ms = now;
        back += kheap_tick(h, ms);
        ticks++;
        kheap_get_stats(h, &s1);
    }
    /* Back to the build's epoch, decay as it was before the first tick
     * (0 first: the purge's peaks start again). */
    kheap_set_decay(h, 0);
    kheap_set_decay(h, KHEAP_DECAY_MS);
    kt_printf("# tick_decays_idle_memory: %zu blocks of 256 bytes freed; depots %zu -> %zu, "
              "empty slabs %zu -> %zu bytes after %u calls of kheap_tick over %llu ms "
              "(%u ms epochs, %zu bytes given back)",
              n, s0.depot_bytes, s1.depot_bytes, s0.empty_slab_bytes, s1.empty_slab_bytes,
              ticks, (unsigned long long)ms, DECAY_EPOCH_MS, back);
    PCHECK(s1.depot_bytes == 0 && s1.empty_slab_bytes == 0,
           "after %llu ms of ticks the depots hold %zu bytes and empty slabs %zu",
           (unsigned long long)ms, s1.depot_bytes, s1.empty_slab_bytes);
    PCHECK(ms >= 2 * DECAY_EPOCH_MS,
           "idle memory went back after %llu ms, before two epochs had ended: "
           "no hysteresis", (unsigned long long)ms);
    return true;
}
#endif

/* ------------------------------------------------------------------ */

static char text[16384];

#if DEMO_RUST
/* The Rust library of demo/rust: kheap::KHeap as its #[global_allocator]
 * over a static region of its own (kheap's core and this port are the
 * kernel's, linked once). */
bool rust_heap_init(void);
void rust_heap_work(unsigned cpu, unsigned n, unsigned phase);
bool rust_heap_result(char *buf, size_t len);

static unsigned rust_ncpus;

static void rust_phase(unsigned cpu, void *arg)
{
    /* Rust's precompiled core uses the red zone below the stack pointer,
     * which an interrupt on this stack would overwrite: none meanwhile. */
    kheap_bm_irq_push();
    rust_heap_work(cpu, rust_ncpus, (unsigned)(uintptr_t)arg);
    kheap_bm_irq_pop();
}

static bool rust_alloc(unsigned n)
{
    char line[200];
    PCHECK(rust_heap_init(), "the Rust heap did not initialise, or allocated before init");
    rust_ncpus = n;
    run_all(rust_phase, (void *)0); /* Vec, BTreeMap, Box on every CPU */
    run_all(rust_phase, (void *)1); /* each frees what the previous left */
    bool ok = rust_heap_result(line, sizeof line);
    kt_printf("# rust on %u CPUs: %s", n, line);
    PCHECK(ok, "%s", line);
    return true;
}
#endif

void kernel_main(void)
{
    arch_init();
    uint64_t t0 = arch_ticks();
    unsigned asked = arch_start_cpus();
    /* Wait (bounded) for the CPUs that were started to come up. */
    while (__atomic_load_n(&cpus_online, __ATOMIC_ACQUIRE) < asked + 1 &&
           arch_ticks() - t0 < arch_tick_hz() * 5)
        ;
    unsigned n = __atomic_load_n(&cpus_online, __ATOMIC_ACQUIRE);
    cpu_hw[0] = kheap_bm_cpu_index();
    uintptr_t end = kheap_default_end();
    kt_format(text, sizeof text,
              "# kheap demo kernel, %s: %u CPUs online (%s), heap: static array of %u KiB "
              "at [%p, %p)",
              arch_name, n, arch_machine, (unsigned)(KHEAP_DEFAULT_SIZE >> 10),
              (void *)(end - KHEAP_DEFAULT_SIZE), (void *)end);
    kheap_bm_puts(text);
    char *s = text;
    s += kt_format(s, 96, "# CPU indices (%s):", arch_cpu_id);
    for (unsigned i = 0; i < n; i++)
        s += kt_format(s, 16, " %u", cpu_hw[i]);
    kheap_bm_puts(text);

    /* The fixed cost: what the heap takes for itself before any
     * allocation (control structure, page descriptors, the caches). */
    struct kheap_stats st;
    kheap_get_stats(kheap_default(), &st);
    kt_format(text, sizeof text,
              "# at init: %zu bytes of metadata, %zu of %zu bytes free (%zu-byte pages)",
              st.metadata_bytes, st.heap_free, st.heap_total, (size_t)KHEAP_PAGE_SIZE);
    kheap_bm_puts(text);

    uint64_t seed = DEMO_SEED ? (uint64_t)DEMO_SEED : arch_ticks();
    struct kt_env env = {
        .platform = arch_name,
        .puts = puts_line,
        .ncpus = n,
        .run_all = run_all,
        .seed = seed,
        .model_ops = DEMO_MODEL_OPS,
        .stress_ops = DEMO_STRESS_OPS,
        .irq_off = kheap_bm_irq_push,
        .irq_on = kheap_bm_irq_pop,
    };
    kt_begin(&env);
    result("port_irq_masking", port_irq_masking());
    result("irq_alloc", irq_alloc());
    result("nolock_irq", nolock_irq());
    result("port_report_line", port_report_line());
#if DEMO_RUST
    result("rust_global_alloc_every_cpu", rust_alloc(n));
#else
    kt_run_bodies(&env);
#endif
#if KHEAP_PERCPU /* (a heap with no magazines has nothing to ask for) */
    result("reclaim_asks_cpus", reclaim_asks_cpus(n));
    result("tick_decays_idle_memory", tick_decays_idle_memory());
#endif
#if DEMO_SMALL
    /* Heaps of their own (kheap_init) over an arena of 64 KiB, apart from
     * the default heap. */
    static unsigned char small_arena[64 << 10] __attribute__((aligned(KHEAP_PAGE_SIZE)));
    kt_run_small(small_arena, sizeof small_arena);
#endif
    hit_path_cost();

    kheap_bm_puts("# statistics of the default heap:");
    kheap_format_stats(kheap_default(), text, sizeof text);
    puts_text(text);
    kheap_bm_puts("# slabinfo (caches with slabs):");
    kheap_format_slabinfo(kheap_default(), text, sizeof text, false);
    puts_text(text);
    uint64_t ms = (arch_ticks() - t0) * 1000 / arch_tick_hz();
    kt_printf("# %s: %u CPUs, %lu ms", arch_name, n, (unsigned long)ms);
    kt_printf("%d passed, %d failed", kt_passed, kt_failed);
    arch_exit(kt_failed);
}
