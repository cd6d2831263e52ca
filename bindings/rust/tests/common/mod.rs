//! Shared by the test programs: a global kheap over a static region,
//! initialised from `.init_array` before the Rust runtime allocates, the
//! kernel hooks of the Rust port (without the `std` feature), and TAP-style
//! result lines ("ok - ..." / "not ok - ...") that `make check` counts.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

/// The program's global heap over a static region of `$size` bytes.
#[macro_export]
macro_rules! global_heap {
    ($size:expr) => {
        #[global_allocator]
        static HEAP: kheap::KHeap = kheap::KHeap::new();
        static MEMORY: kheap::Region<{ $size }> = kheap::Region::new();

        extern "C" fn init_heap() {
            common::register_hooks();
            // SAFETY: MEMORY serves nothing else; this runs once, before
            // the runtime's first allocation.
            if unsafe { HEAP.init(MEMORY.as_mut_ptr(), MEMORY.len()) }.is_err() {
                // No allocation possible yet: write the message raw.
                common::raw_stderr("kheap init failed\n");
                std::process::abort();
            }
        }
        #[used]
        #[link_section = ".init_array"]
        static INIT_HEAP: extern "C" fn() = init_heap;
    };
}

pub fn raw_stderr(s: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(s.as_bytes());
}

static FAILED: AtomicUsize = AtomicUsize::new(0);

/// One result line.
pub fn ok(cond: bool, what: &str) {
    if cond {
        println!("ok - rust {}: {}", port(), what);
    } else {
        println!("not ok - rust {}: {}", port(), what);
        FAILED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Exit with failure when any line failed.
pub fn finish() {
    let f = FAILED.load(Ordering::Relaxed);
    if f != 0 {
        eprintln!("{} failed", f);
        std::process::exit(1);
    }
}

pub fn port() -> &'static str {
    if cfg!(feature = "std") {
        "(hosted port)"
    } else {
        "(rust port)"
    }
}

/// Without `std`: the crate's Rust port, with a kernel's hooks played by
/// threads. Each thread takes a "CPU" slot (a bit of SLOTS) at its first
/// allocation and gives it back at exit, after kheap_cpu_flush; interrupt
/// masking is a no-op (no interrupts here, and a slot is its thread's
/// alone, so nothing else runs on that "CPU").
#[cfg(not(feature = "std"))]
mod hooks {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64, Ordering};

    static SLOTS: AtomicU64 = AtomicU64::new(0);
    const NONE: usize = usize::MAX - 1;
    const GONE: usize = usize::MAX;

    thread_local! {
        static SLOT: Cell<usize> = const { Cell::new(NONE) };
        static RELEASE: Release = const { Release };
    }

    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            let s = SLOT.with(|c| c.replace(GONE));
            if s < 64 {
                // SAFETY: this thread is the slot's only user and stops
                // using it now.
                unsafe { kheap::cpu_flush(s) };
                SLOTS.fetch_and(!(1u64 << s), Ordering::Release);
            }
        }
    }

    fn cpu_index() -> usize {
        SLOT.try_with(|c| {
            let s = c.get();
            if s != NONE {
                return s; // a slot, or GONE (locked path)
            }
            let mut map = SLOTS.load(Ordering::Relaxed);
            loop {
                if map == u64::MAX {
                    return 64; // every slot taken: locked path
                }
                let bit = (!map).trailing_zeros() as usize;
                match SLOTS.compare_exchange(map, map | (1 << bit), Ordering::Acquire, Ordering::Relaxed) {
                    Ok(_) => {
                        c.set(bit);
                        // Registers the exit hook (may allocate: by then
                        // this thread has its slot, and the nested call
                        // finds it).
                        let _ = RELEASE.try_with(|_| ());
                        return bit;
                    }
                    Err(m) => map = m,
                }
            }
        })
        .unwrap_or(64)
    }

    fn irq_save() -> usize {
        0
    }
    fn irq_restore(_: usize) {}

    pub static HOOKS: kheap::Hooks = kheap::Hooks {
        cpu_index,
        irq_save,
        irq_restore,
        report: None,
        pages_get: None,
        pages_put: None,
    };
}

pub fn register_hooks() {
    #[cfg(not(feature = "std"))]
    // SAFETY: each thread gets its own index (see hooks).
    unsafe {
        kheap::set_hooks(&hooks::HOOKS)
    };
}
