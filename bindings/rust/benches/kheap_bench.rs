//! kheap through Rust's GlobalAlloc: (1) ns per alloc+dealloc against
//! Rust's System allocator (glibc malloc) in the same run, medians of
//! interleaved rounds; (2) replays of kernel-like traces (mostly 16-512 B,
//! some pages, a few large blocks) at 10^3 .. 10^6 live objects, through a
//! KHeap on a static region and through a first-fit free list like the
//! seed's (linked_list_allocator's algorithm, written below), with ns/op
//! and peak memory held / peak bytes live.
//!
//!   cargo bench --offline [--features std]      (make bench-rust runs both)
//!
//! Environment: KHEAP_BENCH_ROUNDS (default 5), KHEAP_BENCH_QUICK=1 (small
//! counts, for a smoke run).

use std::alloc::{GlobalAlloc, Layout, System};
use std::time::{Duration, Instant};

static REGION: kheap::Region<{ 1 << 30 }> = kheap::Region::new();
static HEAP: kheap::KHeap = kheap::KHeap::new();

#[cfg(not(feature = "std"))]
mod hooks {
    // Single-threaded: every caller is CPU 0; no interrupts to mask.
    fn cpu() -> usize {
        0
    }
    fn save() -> usize {
        0
    }
    fn restore(_: usize) {}
    pub static HOOKS: kheap::Hooks = kheap::Hooks {
        cpu_index: cpu,
        irq_save: save,
        irq_restore: restore,
        report: None,
        pages_get: None,
        pages_put: None,
    };
}

fn port() -> &'static str {
    if cfg!(feature = "std") {
        "hosted port (feature std)"
    } else {
        "Rust port, one CPU registered"
    }
}

fn fresh_heap() {
    unsafe {
        HEAP.fini();
        HEAP.init(REGION.as_mut_ptr(), REGION.len()).unwrap();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Keeps the optimiser from removing the work.
fn sink(p: *mut u8) {
    unsafe { std::ptr::write_volatile(p, 1) };
}

/// ns per alloc+dealloc pair: `pairs` pairs of alloc then dealloc, and
/// batches of 1000 allocs then 1000 deallocs.
fn pair_ns<A: GlobalAlloc>(a: &A, l: Layout, pairs: usize, batch: bool) -> f64 {
    let t = Instant::now();
    if batch {
        let mut ps = Vec::with_capacity(1000);
        for _ in 0..pairs / 1000 {
            for _ in 0..1000 {
                let p = unsafe { a.alloc(l) };
                sink(p);
                ps.push(p);
            }
            for &p in ps.iter() {
                unsafe { a.dealloc(p, l) };
            }
            ps.clear();
        }
    } else {
        for _ in 0..pairs {
            let p = unsafe { a.alloc(l) };
            sink(p);
            unsafe { a.dealloc(p, l) };
        }
    }
    t.elapsed().as_nanos() as f64 / pairs as f64
}

fn global_alloc_table(rounds: usize, quick: bool) {
    println!("## GlobalAlloc: ns per alloc+dealloc pair ({}), medians of {} interleaved rounds", port(), rounds);
    println!();
    println!("| size | align | pattern | kheap ns | System (glibc) ns | kheap / System |");
    println!("|---:|---:|---|---:|---:|---:|");
    fresh_heap();
    let pairs = if quick { 20_000 } else { 2_000_000 };
    for &(size, align) in &[(16usize, 8usize), (64, 8), (256, 8), (1024, 8), (4096, 8), (65536, 8), (64, 64), (4096, 4096)] {
        for &batch in &[false, true] {
            let l = Layout::from_size_align(size, align).unwrap();
            let n = if size >= 4096 { pairs / 20 } else { pairs };
            let (mut k, mut s) = (Vec::new(), Vec::new());
            pair_ns(&HEAP, l, n / 10, batch); // warm both
            pair_ns(&System, l, n / 10, batch);
            for _ in 0..rounds {
                k.push(pair_ns(&HEAP, l, n, batch));
                s.push(pair_ns(&System, l, n, batch));
            }
            let (k, s) = (median(k), median(s));
            println!(
                "| {} | {} | {} | {:.1} | {:.1} | {:.2} |",
                size,
                align,
                if batch { "1000 allocs, 1000 frees" } else { "alloc, free" },
                k,
                s,
                k / s
            );
        }
    }
    println!();
}

// ---------------------------------------------------------------------------
// A first-fit free list, as the seed's linked_list_allocator keeps it: holes
// in address order, each {size, next} in its own first bytes; allocation
// walks the list for the first hole that fits (splitting it), free walks it
// to the block's place and merges with the neighbours. No block headers: the
// caller gives the size back, as GlobalAlloc does.

struct Hole {
    size: usize,
    next: *mut Hole,
}

struct FirstFit {
    head: Hole, // dummy: head.next is the first hole
    size: usize,
    free: usize,
}

const FF_MIN: usize = 16;

fn up(x: usize, a: usize) -> usize {
    (x + a - 1) & !(a - 1)
}

impl FirstFit {
    unsafe fn new(base: *mut u8, size: usize) -> FirstFit {
        let b = up(base as usize, FF_MIN);
        let size = (size - (b - base as usize)) & !(FF_MIN - 1);
        let h = b as *mut Hole;
        (*h).size = size;
        (*h).next = std::ptr::null_mut();
        FirstFit { head: Hole { size: 0, next: h }, size, free: size }
    }

    unsafe fn alloc(&mut self, size: usize, align: usize) -> *mut u8 {
        let size = up(size.max(FF_MIN), FF_MIN);
        let align = align.max(FF_MIN);
        let mut prev: *mut Hole = &mut self.head;
        let mut cur = self.head.next;
        while !cur.is_null() {
            let start = cur as usize;
            let end = start + (*cur).size;
            let mut a = up(start, align);
            if a != start && a - start < FF_MIN {
                a = up(start + FF_MIN, align); // the front piece must hold a hole
            }
            if a + size <= end {
                let next = (*cur).next;
                let back = end - (a + size);
                // The back piece becomes a hole (or is absorbed if tiny).
                let after = if back >= FF_MIN {
                    let h = (a + size) as *mut Hole;
                    (*h).size = back;
                    (*h).next = next;
                    h
                } else {
                    next
                };
                let taken = (a + size + if back >= FF_MIN { 0 } else { back }) - a;
                if a != start {
                    (*cur).size = a - start;
                    (*cur).next = after;
                } else {
                    (*prev).next = after;
                }
                self.free -= taken;
                let _ = taken;
                return a as *mut u8;
            }
            prev = cur;
            cur = (*cur).next;
        }
        std::ptr::null_mut()
    }

    unsafe fn dealloc(&mut self, p: *mut u8, size: usize) {
        // A tiny back piece absorbed at allocation is lost to the hole list
        // until a neighbour merges over it, as in linked_list_allocator.
        let size = up(size.max(FF_MIN), FF_MIN);
        let addr = p as usize;
        let mut prev: *mut Hole = &mut self.head;
        let mut cur = self.head.next;
        while !cur.is_null() && (cur as usize) < addr {
            prev = cur;
            cur = (*cur).next;
        }
        let h = addr as *mut Hole;
        (*h).size = size;
        (*h).next = cur;
        if !cur.is_null() && addr + size == cur as usize {
            (*h).size += (*cur).size;
            (*h).next = (*cur).next;
        }
        if !std::ptr::eq(prev, &self.head) && prev as usize + (*prev).size == addr {
            (*prev).size += (*h).size;
            (*prev).next = (*h).next;
        } else {
            (*prev).next = h;
        }
        self.free += size;
    }

    fn held(&self) -> usize {
        self.size - self.free
    }
}

// ---------------------------------------------------------------------------
// Kernel-like traces.

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// 97.9 %: 16..512 B, log-uniform; 2 %: 1..4 pages (page-aligned half the
/// time); 0.1 %: 64 KiB .. 256 KiB.
fn draw(r: &mut Rng) -> (usize, usize) {
    let x = r.below(1000);
    if x < 979 {
        let shift = 4 + r.below(5); // 16 .. 256
        let s = (1u64 << shift) + r.below(1u64 << shift);
        (s as usize, 8)
    } else if x < 999 {
        let pages = 1 + r.below(4) as usize;
        (pages * 4096, if r.below(2) == 0 { 4096 } else { 8 })
    } else {
        ((64 << 10) + r.below(192 << 10) as usize, 8)
    }
}

struct TraceResult {
    ns_per_op: f64,
    ops: usize,
    peak_held: usize,
    peak_live: usize,
}

trait Replay {
    unsafe fn a(&mut self, size: usize, align: usize) -> *mut u8;
    unsafe fn f(&mut self, p: *mut u8, size: usize, align: usize);
    fn held(&self) -> usize;
}

struct KH;
impl Replay for KH {
    unsafe fn a(&mut self, size: usize, align: usize) -> *mut u8 {
        HEAP.alloc(Layout::from_size_align_unchecked(size, align))
    }
    unsafe fn f(&mut self, p: *mut u8, size: usize, align: usize) {
        HEAP.dealloc(p, Layout::from_size_align_unchecked(size, align))
    }
    fn held(&self) -> usize {
        HEAP.stats().heap_used
    }
}

/// Rust's System allocator (glibc malloc); it has no exact held figure.
struct Sys;
impl Replay for Sys {
    unsafe fn a(&mut self, size: usize, align: usize) -> *mut u8 {
        System.alloc(Layout::from_size_align_unchecked(size, align))
    }
    unsafe fn f(&mut self, p: *mut u8, size: usize, align: usize) {
        System.dealloc(p, Layout::from_size_align_unchecked(size, align))
    }
    fn held(&self) -> usize {
        0
    }
}

/// The empty allocator for the loop's own cost: hands out one scratch
/// block (large enough for every size) and frees nothing.
struct Null(*mut u8);
impl Replay for Null {
    unsafe fn a(&mut self, _size: usize, _align: usize) -> *mut u8 {
        self.0
    }
    unsafe fn f(&mut self, _p: *mut u8, _size: usize, _align: usize) {}
    fn held(&self) -> usize {
        0
    }
}

impl Replay for FirstFit {
    unsafe fn a(&mut self, size: usize, align: usize) -> *mut u8 {
        self.alloc(size, align)
    }
    unsafe fn f(&mut self, p: *mut u8, size: usize, _align: usize) {
        self.dealloc(p, size)
    }
    fn held(&self) -> usize {
        FirstFit::held(self)
    }
}

/// 1024 steps of the steady state: free a random live object, allocate a
/// new one. Not inlined, so callgrind can count its instructions alone
/// (`make bench-rust-callgrind`).
#[inline(never)]
fn steady_state<R: Replay>(r: &mut R, rng: &mut Rng, objs: &mut Vec<(*mut u8, usize, usize)>, live_bytes: &mut usize) {
    for _ in 0..1024 {
        let i = rng.below(objs.len() as u64) as usize;
        let (p, s, a) = objs.swap_remove(i);
        unsafe { r.f(p, s, a) };
        *live_bytes -= s;
        let (s, a) = draw(rng);
        let p = unsafe { r.a(s, a) };
        assert!(!p.is_null(), "out of memory in the replay");
        unsafe { *p = 1 };
        objs.push((p, s, a));
        *live_bytes += s;
    }
}

/// Build `live` objects, then replace a random one per step (one free, one
/// alloc: 2 ops) for up to `steps` steps or `limit` of time. Peaks are
/// sampled every 1024 steps and at the end of the build.
fn replay<R: Replay>(r: &mut R, live: usize, steps: usize, limit: Duration, seed: u64) -> TraceResult {
    let mut rng = Rng(seed);
    let mut objs: Vec<(*mut u8, usize, usize)> = Vec::with_capacity(live);
    let mut live_bytes = 0usize;
    let (mut peak_held, mut peak_live) = (0usize, 0usize);
    unsafe {
        for _ in 0..live {
            let (s, a) = draw(&mut rng);
            let p = r.a(s, a);
            assert!(!p.is_null(), "out of memory building the live set: {} B align {} after {} objects, {} B live, {} B held", s, a, objs.len(), live_bytes, r.held());
            *p = 1;
            objs.push((p, s, a));
            live_bytes += s;
        }
        peak_held = peak_held.max(r.held());
        peak_live = peak_live.max(live_bytes);
        let t = Instant::now();
        let mut done = 0;
        while done < steps {
            steady_state(r, &mut rng, &mut objs, &mut live_bytes);
            done += 1024;
            peak_held = peak_held.max(r.held());
            peak_live = peak_live.max(live_bytes);
            if t.elapsed() > limit {
                break;
            }
        }
        let ns = t.elapsed().as_nanos() as f64 / (2 * done) as f64;
        for (p, s, a) in objs {
            r.f(p, s, a);
        }
        TraceResult { ns_per_op: ns, ops: 2 * done, peak_held, peak_live }
    }
}

fn trace_table(rounds: usize, quick: bool) {
    println!(
        "## Kernel-like trace replay ({}): ns per operation (one alloc or one free), medians of {} rounds",
        port(),
        rounds
    );
    println!();
    println!("Sizes: 97.9 % 16-511 B log-uniform, 2 % 1-4 pages (half page-aligned), 0.1 % 64-256 KiB.");
    println!("Build the live set, then replace a random live object per step. Region: a static 1 GiB array.");
    println!();
    println!("Memory held: kheap's heap_used (pages out of its free runs, including its metadata: the page");
    println!("descriptors of the whole 1 GiB region are a fixed {:.1} MiB of it); first-fit: bytes not in its hole list.", {
        fresh_heap();
        HEAP.stats().metadata_bytes as f64 / (1 << 20) as f64
    });
    println!("First-fit runs up to 10^5 live objects (one round there, at most 4 s of steps): building 10^6");
    println!("objects alone walks a hole list that grows with the page-aligned blocks' front pieces.");
    println!();
    println!("System is glibc's malloc on the same trace; \"loop\" is the replay loop with an allocator that does");
    println!("nothing (random choice of the victim, the live array, the write to each new block): the cost of the");
    println!("harness, which grows with the live set through cache and TLB misses like every column.");
    println!();
    println!("| live objects | kheap ns/op | System ns/op | loop ns/op | first-fit ns/op | first-fit / kheap | kheap peak held / peak live | first-fit peak held / peak live | first-fit ops measured |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let sizes: &[usize] = if quick { &[1_000, 10_000] } else { &[1_000, 10_000, 100_000, 1_000_000] };
    for &live in sizes {
        let steps = if quick { 10_000 } else { 1_000_000 };
        let (mut kn, mut fnn, mut sn, mut nn) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut kr, mut fr) = (None, None);
        // First-fit gets fewer rounds and a time limit at large live sets:
        // its cost grows with the number of holes.
        let ff_rounds = if live > 100_000 { 0 } else if live == 100_000 { 1 } else { rounds };
        for round in 0..rounds {
            fresh_heap();
            let k = replay(&mut KH, live, steps, Duration::from_secs(60), 42 + round as u64);
            kn.push(k.ns_per_op);
            kr = Some(k);
            unsafe { HEAP.fini() };
            sn.push(replay(&mut Sys, live, steps, Duration::from_secs(60), 42 + round as u64).ns_per_op);
            nn.push(replay(&mut Null(REGION.as_mut_ptr()), live, steps, Duration::from_secs(60), 42 + round as u64).ns_per_op);
            if round < ff_rounds {
                unsafe { HEAP.fini() };
                let mut ff = unsafe { FirstFit::new(REGION.as_mut_ptr(), REGION.len()) };
                let f = replay(&mut ff, live, steps, Duration::from_secs(if quick { 1 } else { 4 }), 42 + round as u64);
                fnn.push(f.ns_per_op);
                fr = Some(f);
            }
        }
        let k = kr.unwrap();
        let km = median(kn);
        let (sm, nm) = (median(sn), median(nn));
        match fr {
            Some(f) => {
                let fm = median(fnn);
                println!(
                    "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.3} | {:.3} | {} |",
                    live,
                    km,
                    sm,
                    nm,
                    fm,
                    fm / km,
                    k.peak_held as f64 / k.peak_live as f64,
                    f.peak_held as f64 / f.peak_live as f64,
                    f.ops
                );
            }
            None => println!(
                "| {} | {:.1} | {:.1} | {:.1} | not run | | {:.3} | | |",
                live,
                km,
                sm,
                nm,
                k.peak_held as f64 / k.peak_live as f64
            ),
        }
    }
    println!();
}

/// Under callgrind (`make bench-rust-callgrind`): one replay, chosen by
/// KHEAP_BENCH_ALLOC (kheap, firstfit, system, loop) and KHEAP_BENCH_LIVE,
/// 20480 steps; callgrind counts steady_state alone.
fn callgrind_one(which: &str) {
    let live: usize = std::env::var("KHEAP_BENCH_LIVE").ok().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let steps = 20 * 1024;
    let lim = Duration::from_secs(3600);
    match which {
        "kheap" => {
            fresh_heap();
            replay(&mut KH, live, steps, lim, 42);
        }
        "firstfit" => {
            let mut ff = unsafe { FirstFit::new(REGION.as_mut_ptr(), REGION.len()) };
            replay(&mut ff, live, steps, lim, 42);
        }
        "system" => {
            replay(&mut Sys, live, steps, lim, 42);
        }
        _ => {
            replay(&mut Null(REGION.as_mut_ptr()), live, steps, lim, 42);
        }
    }
    println!("{} {} live: {} operations", which, live, 2 * steps);
}

fn main() {
    #[cfg(not(feature = "std"))]
    unsafe {
        kheap::set_hooks(&hooks::HOOKS)
    };
    if let Ok(which) = std::env::var("KHEAP_BENCH_ALLOC") {
        callgrind_one(&which);
        return;
    }
    // cargo bench passes --bench; ignore arguments.
    let quick = std::env::var_os("KHEAP_BENCH_QUICK").is_some();
    let rounds = std::env::var("KHEAP_BENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(if quick { 1 } else { 5 });
    global_alloc_table(rounds, quick);
    trace_table(rounds, quick);
}
