/*
 * kheap_config.h - every build option of kheap, with its default.
 *
 * Set an option with -D on the compiler command line (the Makefile passes
 * its variables of the same name through). Each option is defined here
 * exactly once, so `#if` never sees an undefined macro (-Wundef).
 */
#ifndef KHEAP_CONFIG_H
#define KHEAP_CONFIG_H

/* The small-system profile, for a microcontroller's heap of 4 to 64 KiB
 * on one CPU (docs/PORTING.md, "A microcontroller"). 1 changes the
 * defaults of the options below that do not say otherwise (each can still
 * be set on its own with -D); 0, the default, leaves every option as
 * written. What 1 sets:
 *   KHEAP_PAGE_SHIFT 9          512-byte pages
 *   KHEAP_CLASS_SUB_SHIFT 1     2 classes per doubling above 64 B
 *   KHEAP_MAX_CLASS_SHIFT 10    slabs up to 1 KiB: 15 classes in all
 *   KHEAP_PERCPU 0              no per-CPU magazines unless a user cache
 *                               asks for them (kheap_cache_create_tuned)
 *   KHEAP_MAX_CPUS 1, KHEAP_MAX_REGIONS 4, KHEAP_LOCK_WORDS 2,
 *   KHEAP_CACHE_LINE 16, KHEAP_MAG_TYPES 1 (magazines of 4),
 *   KHEAP_BIN_SUB_SHIFT 1, KHEAP_EMPTY_SLABS_KEPT 1,
 *   KHEAP_DEPOT_MAX 2, KHEAP_DEPOT_BYTES 2048, KHEAP_DEPOT_GROW 1,
 *   KHEAP_MIN_REGION_SIZE 4096 on 32-bit targets with two-word locks and
 *   no guard pages (a bare-metal kernel), 5632 on such 64-bit ones, and
 *   8192 (32-bit) or 7680 (64-bit, up to 16 CPUs) with larger locks or
 *   guard pages (the hosted port): see KHEAP_MIN_REGION_SIZE below,
 *   KHEAP_MIN_ADD_REGION_SIZE 2048, KHEAP_DEFAULT_SIZE 16384. */
#ifndef KHEAP_PROFILE_SMALL
#define KHEAP_PROFILE_SMALL 0
#endif
#if KHEAP_PROFILE_SMALL
#ifndef KHEAP_PAGE_SHIFT
#define KHEAP_PAGE_SHIFT 9
#endif
#ifndef KHEAP_CLASS_SUB_SHIFT
#define KHEAP_CLASS_SUB_SHIFT 1
#endif
#ifndef KHEAP_MAX_CLASS_SHIFT
#define KHEAP_MAX_CLASS_SHIFT 10
#endif
#ifndef KHEAP_PERCPU
#define KHEAP_PERCPU 0
#endif
#ifndef KHEAP_MAX_CPUS
#define KHEAP_MAX_CPUS 1
#endif
#ifndef KHEAP_MAX_REGIONS
#define KHEAP_MAX_REGIONS 4
#endif
#ifndef KHEAP_LOCK_WORDS
#define KHEAP_LOCK_WORDS 2
#endif
#ifndef KHEAP_CACHE_LINE
#define KHEAP_CACHE_LINE 16
#endif
#ifndef KHEAP_MAG_TYPES
#define KHEAP_MAG_TYPES 1
#endif
#ifndef KHEAP_BIN_SUB_SHIFT
#define KHEAP_BIN_SUB_SHIFT 1
#endif
#ifndef KHEAP_EMPTY_SLABS_KEPT
#define KHEAP_EMPTY_SLABS_KEPT 1
#endif
#ifndef KHEAP_DEPOT_MAX
#define KHEAP_DEPOT_MAX 2
#endif
#ifndef KHEAP_DEPOT_BYTES
#define KHEAP_DEPOT_BYTES 2048u
#endif
#ifndef KHEAP_DEPOT_GROW
#define KHEAP_DEPOT_GROW 1u
#endif
#ifndef KHEAP_MIN_ADD_REGION_SIZE
#define KHEAP_MIN_ADD_REGION_SIZE 2048
#endif
#ifndef KHEAP_DEFAULT_SIZE
#define KHEAP_DEFAULT_SIZE 16384u
#endif
#endif /* KHEAP_PROFILE_SMALL */

/* log2 of the page size the heap carves regions into. 12 = 4 KiB pages.
 * Runs, slabs and large blocks are whole pages. */
#ifndef KHEAP_PAGE_SHIFT
#define KHEAP_PAGE_SHIFT 12
#endif

/* Debug level, 0 to 3.
 *  0  always-on checks only: foreign, interior, free-run and slab-level
 *     double frees are reported (they cost O(1) and no extra memory).
 *  1  plus internal invariant assertions on every slow-path step
 *     (counters, list membership, slab state transitions).
 *  2  plus poisoning: freed objects are filled with KHEAP_POISON_FREE and
 *     checked on reuse, so a write after free is reported at the next
 *     allocation of that object; new objects are filled with
 *     KHEAP_POISON_ALLOC so reads of uninitialised memory show. Objects of
 *     caches with a constructor are not poisoned (their constructed state
 *     must survive free).
 *  3  plus kheap_check() of the whole heap after every operation; O(heap)
 *     per call, for tests on small heaps only. */
#ifndef KHEAP_DEBUG
#define KHEAP_DEBUG 0
#endif

/* Most regions one heap can hold (the first one plus kheap_add_region or
 * growth). Pointer-to-region lookup is a binary search over this table. */
#ifndef KHEAP_MAX_REGIONS
#define KHEAP_MAX_REGIONS 64
#endif

/* CPUs (hosted: concurrently running threads) that get per-CPU magazine
 * caches. CPU indices from the port run 0 .. KHEAP_MAX_CPUS - 1; further
 * threads (hosted) use the locked path until a slot frees up. Each CPU
 * that uses a heap costs it one page of per-CPU state, and each user cache
 * 64 bytes per CPU. */
#ifndef KHEAP_MAX_CPUS
#define KHEAP_MAX_CPUS 64
#endif

/* Most full magazines one cache's depot keeps, and most bytes of objects
 * in them (whichever bound is lower, at least one magazine); a CPU that
 * frees beyond that sends whole magazines back to the slabs. */
#ifndef KHEAP_DEPOT_MAX
#define KHEAP_DEPOT_MAX 32
#endif
#ifndef KHEAP_DEPOT_BYTES
#define KHEAP_DEPOT_BYTES (128u * 1024u)
#endif

/* How far a kmalloc class's depot bound may grow, as a multiple of it, a
 * power of two up to 256 (1: not at all, the default, so KHEAP_DEPOT_MAX and KHEAP_DEPOT_BYTES
 * bound what a consumer caches). libkheap.so builds with 256: up to 32 MiB
 * per class. The bound doubles when an allocation has to refill from the
 * slabs after a free sent a magazine there (a producer and a consumer
 * the bound keeps apart, or one thread whose live blocks swing past it),
 * and halves every decay epoch; a grown depot is trimmed by decay (time)
 * only, and kheap_reclaim empties it and takes the growth back. */
#ifndef KHEAP_DEPOT_GROW
#define KHEAP_DEPOT_GROW 1u
#endif

/* Size in bytes of the static array behind the default heap (kmalloc,
 * kfree, ...). 8 MiB as in the AArch64/RISC-V seed build; pass
 * KHEAP_DEFAULT_SIZE=1073741824 for the seed's 1 GiB x86_64 heap. */
#ifndef KHEAP_DEFAULT_SIZE
#define KHEAP_DEFAULT_SIZE (8u * 1024u * 1024u)
#endif

/* 1: the default heap grows through the port's page hooks when its static
 * array is full (needs KHEAP_PORT_PAGES). 0: it is fixed-size. */
#ifndef KHEAP_DEFAULT_GROW
#define KHEAP_DEFAULT_GROW 0
#endif

/* 1: the port supplies kheap_port_pages_get/kheap_port_pages_put, so a heap
 * may grow (kheap_set_growable). 0: every heap is fixed-size. */
#ifndef KHEAP_PORT_PAGES
#define KHEAP_PORT_PAGES 0
#endif

/* 1: the kmalloc-style names (kmalloc, kfree, kzalloc, kcalloc, krealloc,
 * kmalloc_aligned, ksize) are defined over the default heap. 0: only the
 * kheap_default_* names are, for kernels that have their own kmalloc. */
#ifndef KHEAP_KMALLOC_API
#define KHEAP_KMALLOC_API 1
#endif

/* 1: tell valgrind's memcheck about every object (client requests), so
 * leaks and uses after free inside kheap objects are reported. Hosted
 * builds only; the requests are no-ops when not running under valgrind. */
#ifndef KHEAP_VALGRIND
#define KHEAP_VALGRIND 0
#endif

/* Words of storage reserved for one port lock (kheap_lock_t). The hosted
 * port checks that its mutex fits. */
#ifndef KHEAP_LOCK_WORDS
#define KHEAP_LOCK_WORDS 8
#endif

/* The kmalloc size classes: 16 to 64 bytes in steps of 8, then
 * 2^KHEAP_CLASS_SUB_SHIFT classes per doubling up to the largest,
 * 2^KHEAP_MAX_CLASS_SHIFT bytes (KHEAP_MAX_CLASS); larger requests are
 * page runs. A request just above a class boundary wastes under
 * 1 / (2^KHEAP_CLASS_SUB_SHIFT + 1) of its block from 64 bytes up:
 * 3 (8 per doubling, up to 32 KiB): 79 classes, under 11.1 %;
 * 1 (2 per doubling, up to 1 KiB): 15 classes, under 33.3 %
 * (docs/SIZE_CLASSES.md). */
#ifndef KHEAP_CLASS_SUB_SHIFT
#define KHEAP_CLASS_SUB_SHIFT 3
#endif
#ifndef KHEAP_MAX_CLASS_SHIFT
#define KHEAP_MAX_CLASS_SHIFT 15
#endif

/* 1: every cache gets per-CPU magazines (docs/DESIGN.md, "Per-CPU
 * magazines"), and kheap_alloc/kheap_free and kmalloc/kfree have their
 * lock-free hit paths. 0: no cache has them unless created with a
 * kheap_cache_tuning that asks (mag_cap > 0); every other operation takes
 * the cache's lock and goes to the slabs, and no per-CPU state is ever
 * allocated: the choice for one CPU and a small heap. */
#ifndef KHEAP_PERCPU
#define KHEAP_PERCPU 1
#endif

/* The hosted port on x86-64 Linux with glibc >= 2.35: 1 makes the "CPUs"
 * of the per-CPU layer the machine's CPUs, whose magazines every thread
 * running on them shares through restartable sequences (rseq), when
 * glibc has registered rseq for the process (else, and with 0, they are
 * slots each thread owns: src/port/hosted_cpu.h). For the malloc
 * replacement (libkheap-percpu.so is built with 1), whose only caches are
 * the default heap's kmalloc classes. Not supported yet with user caches, heaps made with kheap_init
 * or KHEAP_NOLOCK calls (their hit paths would miss, and
 * kheap_cache_destroy does not reach other CPUs' magazines): a program
 * that links kheap itself keeps 0. */
#ifndef KHEAP_HOSTED_RSEQ
#define KHEAP_HOSTED_RSEQ 0
#endif

/* Bytes structures are padded to so that what different CPUs write does
 * not share a cache line (a power of two, 16 or more). */
#ifndef KHEAP_CACHE_LINE
#define KHEAP_CACHE_LINE 64
#endif

/* Magazine capacities there are caches for: 4, 8, ... 4 << (types - 1);
 * from 1 to 5 (capacity 64). Larger kheap_cache_tuning.mag_cap values
 * round down to the largest. */
#ifndef KHEAP_MAG_TYPES
#define KHEAP_MAG_TYPES 5
#endif

/* Free-run bins per doubling of the run length, as a log2 (exact bins
 * below 2^(shift+1) pages): 3 gives 240 bins, 2 gives 124, 1 gives 64. */
#ifndef KHEAP_BIN_SUB_SHIFT
#define KHEAP_BIN_SUB_SHIFT 3
#endif

/* Smallest region kheap_add_region accepts, in bytes. */
#ifndef KHEAP_MIN_ADD_REGION_SIZE
#define KHEAP_MIN_ADD_REGION_SIZE 16384
#endif

/* Empty slabs a cache keeps (per cache) before it gives further empty
 * slabs back to the page layer: hysteresis against slab thrashing. */
#ifndef KHEAP_EMPTY_SLABS_KEPT
#define KHEAP_EMPTY_SLABS_KEPT 2
#endif

/* Homes (docs/DESIGN.md, "Homes"): 1 makes each slab the home of the CPU
 * whose refills carve it, and a free of a kmalloc object on another CPU
 * sends the object home (through the freeing CPU's remote front and the
 * depot) instead of keeping it, so each CPU's objects stay on its own
 * pages. It costs four instructions on the free hit path (five in
 * libkheap-percpu.so's), a remote front per class (two pages) on each CPU
 * that frees another's objects, and a slab of its own per class for a
 * CPU whose refill finds only others' on a short partial list, while the
 * heap has pages to spare (docs/DESIGN.md, "A short list left alone").
 * 0 keeps every freed object with the CPU that freed it. Meaningful with
 * the per-CPU layer's hit paths (not KHEAP_DEBUG 3, valgrind or redzone
 * builds) and more than one CPU only; with KHEAP_HOSTED_RSEQ
 * (libkheap-percpu.so) the free's restartable sequence looks at homes in
 * its own code. A heap below KHEAP_HOMES_MIN_HEAP still pays the
 * free hit path's look at the home (one compare that finds its own). */
#ifndef KHEAP_HOMES
#define KHEAP_HOMES 1
#endif
/* A heap whose first region is smaller does without homes: they hold up
 * to one magazine per class more on each CPU that frees others' objects,
 * which a small heap shared by several CPUs cannot spare (a 4-CPU kernel
 * on an 8 MiB heap fragmented its pages until 128 KiB blocks found no
 * run: docs/DESIGN.md, "Homes"). */
#ifndef KHEAP_HOMES_MIN_HEAP
#define KHEAP_HOMES_MIN_HEAP (64u << 20)
#endif
/* Magazines of 64 objects up to 512 B and 32 up to 1 KiB, on a heap whose
 * first region is at least this size; a smaller heap keeps 64 up to 128 B,
 * 32 up to 512 B and 16 up to 2 KiB (src/core/cpu.c). The bigger ones
 * halve the swaps of a class whose uses go up and down at random (larson:
 * 6 % of its time), and hold twice the memory per CPU: a 4-CPU kernel on
 * an 8 MiB heap ran out of 128 KiB runs with them (docs/DESIGN.md,
 * "Magazine size"). */
#ifndef KHEAP_MAG_WIDE_MIN_HEAP
#define KHEAP_MAG_WIDE_MIN_HEAP (64u << 20)
#endif

/* Per-CPU caches of large blocks (docs/DESIGN.md, "Large blocks on the
 * hit path"): each CPU keeps freed page runs of KHEAP_MAX_CLASS to
 * KHEAP_RUN_CACHE_MAX bytes, at most KHEAP_RUN_CACHE_BYTES of them, for
 * its next allocations of the same page count. KHEAP_RUN_CACHE_MAX at or
 * below KHEAP_MAX_CLASS, or KHEAP_RUN_CACHE_BYTES 0, turns them off. They
 * exist with the per-CPU layer only. */
#ifndef KHEAP_RUN_CACHE_MAX
#define KHEAP_RUN_CACHE_MAX (256 * 1024)
#endif
#ifndef KHEAP_RUN_CACHE_BYTES
#define KHEAP_RUN_CACHE_BYTES (1024 * 1024)
#endif

/* Bytes written into freed and new objects at KHEAP_DEBUG >= 2. */
#ifndef KHEAP_POISON_FREE
#define KHEAP_POISON_FREE 0x6b
#endif
#ifndef KHEAP_POISON_ALLOC
#define KHEAP_POISON_ALLOC 0xa5
#endif

/* Redzones and a quarantine around every block of the kmalloc API
 * (kheap_alloc, kheap_realloc, ..., the malloc shim), and a redzone after
 * every object of a user cache (checked at its free and by kheap_check):
 * a 16-byte header (size, kind, state) and canary bytes before
 * and after each block, checked when it is freed or reallocated; freed
 * blocks wait in a FIFO of at most KHEAP_QUARANTINE_COUNT blocks and
 * KHEAP_QUARANTINE_BYTES bytes (at most an eighth of the heap's first
 * region), filled with KHEAP_POISON_FREE, and are checked for writes when
 * they leave it. Needs KHEAP_DEBUG >= 2; libkheap-debug.so is built with
 * it. KHEAP_NOLOCK allocations of the kmalloc classes fail (NULL) in such
 * a build: the quarantine takes a lock. */
#ifndef KHEAP_REDZONE
#define KHEAP_REDZONE 0
#endif
#ifndef KHEAP_REDZONE_BYTE
#define KHEAP_REDZONE_BYTE 0xfd
#endif
#ifndef KHEAP_QUARANTINE_COUNT
#define KHEAP_QUARANTINE_COUNT 1024
#endif
#ifndef KHEAP_QUARANTINE_BYTES
#define KHEAP_QUARANTINE_BYTES (4u << 20)
#endif

/* Sampled guard blocks (src/core/guard.c), as KFENCE and GWP-ASan do:
 * about one allocation in N of at most a page gets a page of its own
 * between inaccessible pages, placed against the page's end or its start
 * in turn; a stray access past either end, or after its free, faults and
 * is reported (kheap_guard_fault). N is set per heap at run time
 * (kheap_set_sample; libkheap.so: KHEAP_SAMPLE_RATE) and starts at
 * KHEAP_SAMPLE_RATE; 0 turns sampling off. Needs the port's page
 * protection hook (KHEAP_PORT_PROTECT 1: hosted has it). The decision
 * costs nothing on the hit paths: a countdown checked when a magazine
 * runs empty. KHEAP_GUARD_SLOTS blocks, live and recently freed, can hold
 * a guard page at once; the pool takes 2 * KHEAP_GUARD_SLOTS + 1 pages of
 * the heap's address space (only the pages of live blocks are touched),
 * and is made on the first kheap_set_sample that turns sampling on.
 * KHEAP_GUARD_SLOTS 0 leaves the sampler out of the build. */
#ifndef KHEAP_PORT_PROTECT
#define KHEAP_PORT_PROTECT 0
#endif
#ifndef KHEAP_GUARD_SLOTS
#define KHEAP_GUARD_SLOTS 32
#endif
#ifndef KHEAP_SAMPLE_RATE
#define KHEAP_SAMPLE_RATE 0
#endif

/* Smallest region kheap_init accepts, in bytes. It holds the heap's own
 * control structure, the descriptors and at least 8 pages; in the
 * small-system profile at least 2 pages wherever the region starts, and
 * 3 (the largest slab of its classes) when it starts on a page boundary.
 * The core checks at build time that this value is enough. The small
 * profile's value depends on the heap structure's size, which the locks
 * (KHEAP_LOCK_WORDS) and the sampled guard blocks (KHEAP_PORT_PROTECT)
 * change, and on 64-bit KHEAP_MAX_CPUS: 4096 for a 32-bit kernel with
 * two-word locks and 8192 with a hosted port's locks or guards; 5632 and
 * 7680 (12288 above 16 CPUs) on 64-bit. */
#if KHEAP_PROFILE_SMALL && !defined(KHEAP_MIN_REGION_SIZE)
#if KHEAP_LOCK_WORDS <= 2 && !(KHEAP_PORT_PROTECT && KHEAP_GUARD_SLOTS > 0)
#if __SIZEOF_POINTER__ == 4
#define KHEAP_MIN_REGION_SIZE 4096
#else
#define KHEAP_MIN_REGION_SIZE 5632
#endif
#elif __SIZEOF_POINTER__ == 4
#define KHEAP_MIN_REGION_SIZE 8192
#elif KHEAP_MAX_CPUS <= 16
#define KHEAP_MIN_REGION_SIZE 7680
#else
#define KHEAP_MIN_REGION_SIZE 12288
#endif
#endif
#ifndef KHEAP_MIN_REGION_SIZE
#define KHEAP_MIN_REGION_SIZE 131072
#endif

/* Bytes of address space the default heap's first region reserves from
 * the port (kheap_port_pages_reserve) on first use, instead of using its
 * static array: one large first region keeps every free on the hit path.
 * The port may give less (the hosted port halves the size until the
 * reservation succeeds, so `ulimit -v` still works); if it gives nothing,
 * the static array is used. 0: always the static array. Needs
 * KHEAP_PORT_PAGES. The malloc shim (libkheap.so) uses 64 GiB. */
#ifndef KHEAP_DEFAULT_RESERVE
#define KHEAP_DEFAULT_RESERVE 0
#endif

/* 1: the memory the port gives for growth and for the default heap's
 * reservation (kheap_port_pages_get, kheap_port_pages_reserve) comes
 * inaccessible, and the port supplies kheap_port_pages_commit, through
 * which the page layer opens it a step at a time (each region keeps an
 * accessible frontier that grows by doubling, 1 MiB to 1 GiB a step) and
 * shuts its own blocks past the frontier again when they are freed, and
 * the free pages it purges (until their run is handed out again). So a
 * stray access into address space the heap has not used yet, or into
 * purged free pages, faults.
 * No hit path changes. 0: the port's memory is accessible when given.
 * Needs KHEAP_PORT_PAGES. */
#ifndef KHEAP_PORT_COMMIT
#define KHEAP_PORT_COMMIT 0
#endif

/* 1: the port supplies kheap_port_pages_purge, and the page layer hands
 * the pages of large free runs back to the platform (hosted: madvise) once
 * more than KHEAP_PURGE_SLACK bytes of freed pages may still be resident.
 * 0: free pages stay as they are. */
#ifndef KHEAP_PORT_PURGE
#define KHEAP_PORT_PURGE 0
#endif

/* Purge hysteresis: bytes of freed, possibly resident pages the heap keeps
 * before it purges (so a program that frees and reallocates the same large
 * size does not fault its pages in every round; the page layer keeps twice
 * the pages recently in use if that is more: src/core/pages.c), and the
 * smallest free run worth a purge. */
#ifndef KHEAP_PURGE_SLACK
#define KHEAP_PURGE_SLACK (64u * 1024u * 1024u)
#endif
#ifndef KHEAP_PURGE_MIN
#define KHEAP_PURGE_MIN (256u * 1024u)
#endif

/* 1: the port supplies kheap_port_clock_ms (a monotonic clock), which the
 * slow paths read to drive decay (kheap_set_decay). 0: decay runs only when
 * the kernel calls kheap_tick. */
#ifndef KHEAP_PORT_CLOCK
#define KHEAP_PORT_CLOCK 0
#endif

/* Decay: the length in milliseconds of a decay epoch. Memory that stays
 * idle for a whole epoch (free objects in depot magazines, empty slabs,
 * free resident pages) goes down a layer at the epoch's end, so it returns
 * to the platform one to three epochs after its last use (at once, with a
 * port clock, at the first slow path after two epochs with none), while
 * a program that frees and reallocates within an epoch keeps it. Settable
 * per heap at run time (kheap_set_decay; libkheap.so: KHEAP_DECAY_MS).
 * 0: no decay (memory stays where it is until kheap_reclaim/kheap_purge,
 * and the purge follows the immediate rule of src/core/pages.c). */
#ifndef KHEAP_DECAY_MS
#define KHEAP_DECAY_MS 1000
#endif

#if KHEAP_REDZONE && (KHEAP_DEBUG < 2 || KHEAP_VALGRIND)
#error "KHEAP_REDZONE needs KHEAP_DEBUG >= 2 and no KHEAP_VALGRIND"
#endif
#if KHEAP_PORT_COMMIT && !KHEAP_PORT_PAGES
#error "KHEAP_PORT_COMMIT needs KHEAP_PORT_PAGES"
#endif
#if KHEAP_DEBUG < 0 || KHEAP_DEBUG > 3
#error "KHEAP_DEBUG must be 0, 1, 2 or 3"
#endif
#if KHEAP_PAGE_SHIFT < 9 || KHEAP_PAGE_SHIFT > 16
#error "KHEAP_PAGE_SHIFT must be between 9 and 16"
#endif
#if KHEAP_MAX_CLASS_SHIFT < 10 || KHEAP_MAX_CLASS_SHIFT > 15
#error "KHEAP_MAX_CLASS_SHIFT must be between 10 and 15"
#endif
#if KHEAP_CLASS_SUB_SHIFT < 1 || KHEAP_CLASS_SUB_SHIFT > 3
#error "KHEAP_CLASS_SUB_SHIFT must be 1, 2 or 3"
#endif
#if KHEAP_BIN_SUB_SHIFT < 1 || KHEAP_BIN_SUB_SHIFT > 3
#error "KHEAP_BIN_SUB_SHIFT must be 1, 2 or 3"
#endif
#if KHEAP_MAG_TYPES < 1 || KHEAP_MAG_TYPES > 5
#error "KHEAP_MAG_TYPES must be between 1 and 5"
#endif
#if KHEAP_CACHE_LINE < 16 || (KHEAP_CACHE_LINE & (KHEAP_CACHE_LINE - 1))
#error "KHEAP_CACHE_LINE must be a power of two, at least 16"
#endif
#if KHEAP_GUARD_SLOTS < 0 || KHEAP_GUARD_SLOTS > 255
#error "KHEAP_GUARD_SLOTS must be between 0 and 255"
#endif
#if KHEAP_DEFAULT_RESERVE && !KHEAP_PORT_PAGES
#error "KHEAP_DEFAULT_RESERVE needs KHEAP_PORT_PAGES"
#endif

#endif /* KHEAP_CONFIG_H */
