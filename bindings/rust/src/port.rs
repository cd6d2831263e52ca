//! The Rust port: what kheap's core asks of its platform
//! (`include/kheap_port.h`), built from hooks the kernel registers with
//! [`set_hooks`]. Compiled without the `std` and `extern-core` features.
//!
//! Locks are spinlocks. Once hooks are registered, a lock masks interrupts
//! on the local CPU (the kernel's [`Hooks::irq_save`]) before it spins and
//! keeps them masked until it is released; masking nests per CPU, so
//! interrupts come back only when the CPU's last lock is gone, whatever the
//! order of the releases. The per-CPU layer of kheap uses the CPU index the
//! kernel's [`Hooks::cpu_index`] gives. Before any hooks are registered
//! every allocation takes kheap's locked path (no per-CPU state), and the
//! spinlocks mask nothing: correct on any number of CPUs as long as no
//! interrupt handler allocates.

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use crate::ffi;

/// [`Hooks::pages_get`]: given a byte count, fresh memory (base, bytes).
pub type PagesGetFn = fn(bytes: usize) -> Option<(*mut u8, usize)>;

/// What the kernel tells kheap about its machine. Every function may be
/// called on any CPU, with interrupts masked, possibly while kheap holds
/// a lock: none may allocate from or call into a kheap heap.
pub struct Hooks {
    /// The index of the CPU the caller runs on, below 64
    /// (`KHEAP_MAX_CPUS`). Called only between `irq_save` and
    /// `irq_restore`, so the caller cannot move to another CPU meanwhile.
    /// 64 or more means "no CPU index" (early boot, a hosted thread past
    /// its exit): that call takes kheap's locked path, and its locks
    /// restore their own saved interrupt state when released.
    pub cpu_index: fn() -> usize,
    /// Mask interrupts (and with them preemption) on the local CPU and
    /// return the state to restore. A kernel whose interrupt handlers never
    /// allocate and that never preempts kernel code may return 0 and do
    /// nothing.
    pub irq_save: fn() -> usize,
    /// Restore the state `irq_save` returned.
    pub irq_restore: fn(state: usize),
    /// Misuse reports (a bad pointer given to `dealloc`, a double free):
    /// kheap has refused the operation and the heap is intact. `None`
    /// ignores them.
    pub report: Option<fn(&Report)>,
    /// Fresh memory for a heap that [`KHeap::set_growable`] lets grow: at
    /// least `bytes` bytes (a multiple of 4096) aligned to 4096, never
    /// memory a heap already has. Returns the base and the bytes given, or
    /// `None`. `None` here: heaps never grow.
    ///
    /// [`KHeap::set_growable`]: crate::KHeap::set_growable
    pub pages_get: Option<PagesGetFn>,
    /// Take back memory from `pages_get`, whole.
    pub pages_put: Option<fn(base: *mut u8, bytes: usize)>,
}

/// One misuse report: what kheap found and where.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    /// `enum kheap_report_kind` of `include/kheap_port.h` (1 foreign
    /// pointer, 2 interior pointer, 3 free run, 4 double free, 5 wrong
    /// cache, 6 corruption, 7 busy cache).
    pub kind: i32,
    /// A constant English sentence.
    pub reason: &'static str,
    /// The address concerned.
    pub addr: usize,
    /// The cache involved, or "".
    pub cache: &'static str,
    /// The kheap entry point that found it.
    pub function: &'static str,
}

static HOOKS: AtomicPtr<Hooks> = AtomicPtr::new(ptr::null_mut());

/// Register the kernel's hooks; from then on kheap masks interrupts in its
/// locks and uses per-CPU caches. Call it once, early (before other CPUs
/// start is simplest); a later call replaces the hooks and must not race
/// with allocation.
///
/// # Safety
/// The hooks must do what [`Hooks`] says: in particular `cpu_index` must
/// give each CPU (or each thread, in a program that has no preemption
/// control) its own index below 64, stable while interrupts are masked.
pub unsafe fn set_hooks(hooks: &'static Hooks) {
    HOOKS.store(hooks as *const Hooks as *mut Hooks, Ordering::Release);
}

/// CPU `cpu` stops using kheap (it goes offline; in a hosted test, its
/// thread exits): the objects its per-CPU caches hold go back to their
/// caches in every heap.
///
/// # Safety
/// Call it on that CPU, or after it has stopped; never while it may still
/// allocate.
pub unsafe fn cpu_flush(cpu: usize) {
    ffi::kheap_cpu_flush(cpu as u32);
}

fn hooks() -> Option<&'static Hooks> {
    let h = HOOKS.load(Ordering::Acquire);
    if h.is_null() {
        None
    } else {
        // SAFETY: set_hooks stored a &'static Hooks.
        Some(unsafe { &*h })
    }
}

/// Per-CPU nesting of interrupt masking (xv6's push_off/pop_off): touched
/// only by its own CPU, with interrupts masked.
struct CpuRec {
    depth: AtomicUsize,
    saved: AtomicUsize,
}

#[allow(clippy::declare_interior_mutable_const)]
const REC: CpuRec = CpuRec {
    depth: AtomicUsize::new(0),
    saved: AtomicUsize::new(0),
};
static CPUS: [CpuRec; ffi::MAX_CPUS] = [REC; ffi::MAX_CPUS];

/// Mask interrupts (nesting per CPU) and return this CPU's index, or
/// `Err(state)` for a caller with no CPU index, with the state to restore.
fn push(h: &Hooks) -> Result<usize, usize> {
    let s = (h.irq_save)();
    let cpu = (h.cpu_index)();
    if cpu >= ffi::MAX_CPUS {
        return Err(s);
    }
    let r = &CPUS[cpu];
    let d = r.depth.load(Ordering::Relaxed);
    if d == 0 {
        r.saved.store(s, Ordering::Relaxed);
    }
    r.depth.store(d + 1, Ordering::Relaxed);
    Ok(cpu)
}

fn pop(h: &Hooks, cpu: usize) {
    let r = &CPUS[cpu];
    let d = r.depth.load(Ordering::Relaxed) - 1;
    r.depth.store(d, Ordering::Relaxed);
    if d == 0 {
        (h.irq_restore)(r.saved.load(Ordering::Relaxed));
    }
}

/// Lock words: [0] 0 free / 1 held; [1] who holds it: 0 no hooks were
/// registered when it was taken, CPU + 1 (masking nested in the CPU's
/// record), or NO_CPU (a caller without a CPU index: [2] holds the state
/// to restore).
const NO_CPU: usize = usize::MAX;

fn words(lock: *mut ffi::kheap_lock_t) -> &'static [AtomicUsize; 3] {
    // SAFETY: kheap_lock_t is 8 aligned words that kheap never touches
    // itself; AtomicUsize has the layout of usize.
    unsafe { &*((*lock).word.as_mut_ptr() as *const [AtomicUsize; 3]) }
}

#[no_mangle]
extern "C" fn kheap_port_lock_init(lock: *mut ffi::kheap_lock_t) {
    for w in words(lock) {
        w.store(0, Ordering::Relaxed);
    }
}

#[no_mangle]
extern "C" fn kheap_port_lock(lock: *mut ffi::kheap_lock_t) {
    let w = words(lock);
    let (who, saved) = match hooks().map(push) {
        None => (0, 0),
        Some(Ok(cpu)) => {
            // Racy read: only this CPU ever writes cpu + 1 here, and clears
            // it before it releases.
            if w[1].load(Ordering::Relaxed) == cpu + 1 {
                kheap_port_panic(b"kheap lock taken twice on one CPU\0".as_ptr(), lock as *const c_void);
            }
            (cpu + 1, 0)
        }
        Some(Err(state)) => (NO_CPU, state),
    };
    while w[0]
        .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        while w[0].load(Ordering::Relaxed) != 0 {
            core::hint::spin_loop();
        }
    }
    w[1].store(who, Ordering::Relaxed);
    w[2].store(saved, Ordering::Relaxed);
}

#[no_mangle]
extern "C" fn kheap_port_unlock(lock: *mut ffi::kheap_lock_t) {
    let w = words(lock);
    let who = w[1].load(Ordering::Relaxed);
    let saved = w[2].load(Ordering::Relaxed);
    w[1].store(0, Ordering::Relaxed);
    w[0].store(0, Ordering::Release);
    if let Some(h) = hooks() {
        match who {
            0 => {}
            NO_CPU => (h.irq_restore)(saved),
            cpu => pop(h, cpu - 1),
        }
    }
}

#[no_mangle]
extern "C" fn kheap_port_cpu_enter() -> u32 {
    // KHEAP_CPU_NONE (MAX_CPUS): no per-CPU state, the locked path.
    match hooks() {
        Some(h) => match push(h) {
            Ok(cpu) => cpu as u32,
            Err(state) => {
                (h.irq_restore)(state);
                ffi::MAX_CPUS as u32
            }
        },
        None => ffi::MAX_CPUS as u32,
    }
}

#[no_mangle]
extern "C" fn kheap_port_cpu_exit(cpu: u32) {
    if (cpu as usize) < ffi::MAX_CPUS {
        if let Some(h) = hooks() {
            pop(h, cpu as usize);
        }
    }
}

#[no_mangle]
unsafe extern "C" fn kheap_port_report(r: *const ffi::kheap_report) {
    if let Some(f) = hooks().and_then(|h| h.report) {
        let r = &*r;
        f(&Report {
            kind: r.kind,
            reason: ffi::static_str(r.reason),
            addr: r.addr as usize,
            cache: ffi::static_str(r.cache),
            function: ffi::static_str(r.function),
        });
    }
}

#[no_mangle]
extern "C" fn kheap_port_panic(msg: *const u8, addr: *const c_void) -> ! {
    // SAFETY: kheap passes a constant sentence.
    let msg = unsafe { ffi::static_str(msg) };
    panic!("kheap: panic: {} (at {:p})", msg, addr);
}

#[no_mangle]
unsafe extern "C" fn kheap_port_pages_get(bytes: usize, got: *mut usize) -> *mut c_void {
    if let Some(f) = hooks().and_then(|h| h.pages_get) {
        if let Some((p, n)) = f(bytes) {
            if !p.is_null() && n >= bytes {
                *got = n;
                return p as *mut c_void;
            }
        }
    }
    ptr::null_mut()
}

#[no_mangle]
unsafe extern "C" fn kheap_port_pages_put(base: *mut c_void, bytes: usize) {
    if let Some(f) = hooks().and_then(|h| h.pages_put) {
        f(base as *mut u8, bytes);
    }
}
