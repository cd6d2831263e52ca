//! The Rust part of the x86_64 demo kernel: `alloc`'s `Vec`, `BTreeMap`
//! and `Box` on every CPU, over kheap as `#[global_allocator]`, the seed
//! kernel's setting. The kernel (demo/kernel.c, built with DEMO_RUST)
//! calls these functions and prints their result as one of its `ok` lines.
//!
//! Built for the installed `x86_64-unknown-linux-gnu` core and alloc with
//! `panic = "abort"` and a static relocation model; no extra target.
//! Rust 1.68 or later; with 1.63 (Debian 12) see build.rs.

#![no_std]
#![allow(unknown_lints, unexpected_cfgs)]
#![cfg_attr(old_alloc_error_handler, feature(default_alloc_error_handler))]

extern crate alloc;

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt::Write;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

#[global_allocator]
static HEAP: kheap::KHeap = kheap::KHeap::new();
static HEAP_MEMORY: kheap::Region<{ 4 << 20 }> = kheap::Region::new();

extern "C" {
    fn kheap_bm_puts(s: *const u8);
    fn kheap_bm_halt() -> !;
}

/// A line on the kernel console (NUL added here).
fn puts(s: &str) {
    let mut buf = [0u8; 200];
    let n = core::cmp::min(s.len(), buf.len() - 1);
    buf[..n].copy_from_slice(&s.as_bytes()[..n]);
    // SAFETY: buf is NUL-terminated.
    unsafe { kheap_bm_puts(buf.as_ptr()) };
}

/// Formats into a fixed buffer (no allocation).
struct Line {
    buf: [u8; 200],
    len: usize,
}

impl Line {
    fn new() -> Line {
        Line { buf: [0; 200], len: 0 }
    }
    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = core::cmp::min(s.len(), self.buf.len() - 1 - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let mut l = Line::new();
    let _ = write!(l, "rust panic: {}", info);
    puts(l.as_str());
    // SAFETY: the kernel's halt never returns.
    unsafe { kheap_bm_halt() }
}

/// The precompiled core was built for unwinding; with panic = "abort"
/// nothing unwinds, but its landing pads still name this symbol.
#[no_mangle]
pub extern "C" fn _Unwind_Resume() -> ! {
    puts("rust: _Unwind_Resume called with panic = abort");
    // SAFETY: the kernel's halt never returns.
    unsafe { kheap_bm_halt() }
}

/// Set up the Rust heap over its static region. Boot CPU, once, before
/// any Rust code allocates. Returns false (with a console line) on error.
#[no_mangle]
pub extern "C" fn rust_heap_init() -> bool {
    let before = Vec::<u8>::new().try_reserve(16).is_err();
    // SAFETY: HEAP_MEMORY serves nothing else.
    match unsafe { HEAP.init(HEAP_MEMORY.as_mut_ptr(), HEAP_MEMORY.len()) } {
        Ok(()) => before,
        Err(e) => {
            let mut l = Line::new();
            let _ = write!(l, "rust: kheap init: {}", e);
            puts(l.as_str());
            false
        }
    }
}

const MAX: usize = 8;
static HANDOFF: [AtomicPtr<BTreeMap<u32, Box<[u64; 16]>>>; MAX] = [
    AtomicPtr::new(core::ptr::null_mut()),
    AtomicPtr::new(core::ptr::null_mut()),
    AtomicPtr::new(core::ptr::null_mut()),
    AtomicPtr::new(core::ptr::null_mut()),
    AtomicPtr::new(core::ptr::null_mut()),
    AtomicPtr::new(core::ptr::null_mut()),
    AtomicPtr::new(core::ptr::null_mut()),
    AtomicPtr::new(core::ptr::null_mut()),
];
static BAD: AtomicUsize = AtomicUsize::new(0);

/// Phase 0 on CPU `cpu` of `n`: collections of its own, then a BTreeMap of
/// boxes left for the next CPU. Phase 1: free the map the previous CPU
/// left (frees that cross CPUs).
#[no_mangle]
pub extern "C" fn rust_heap_work(cpu: u32, n: u32, phase: u32) {
    let me = cpu as usize % MAX;
    if phase == 0 {
        for round in 0..20u64 {
            let mut v: Vec<u64> = Vec::new();
            for i in 0..5000 {
                v.push(i ^ round);
            }
            let mut m = BTreeMap::new();
            for i in 0..1000u32 {
                m.insert(i.wrapping_mul(2_654_435_761), Box::new([u64::from(i); 16]));
            }
            let big = Box::new([cpu as u8; 3000]);
            let ok = v.iter().enumerate().all(|(i, &x)| x == i as u64 ^ round)
                && m.values().all(|b| b[0] == b[15])
                && big.iter().all(|&b| b == cpu as u8);
            if !ok {
                BAD.fetch_add(1, Ordering::Relaxed);
            }
        }
        let mut keep = BTreeMap::new();
        for i in 0..500u32 {
            keep.insert(i, Box::new([u64::from(i) + u64::from(cpu); 16]));
        }
        HANDOFF[me].store(Box::into_raw(Box::new(keep)), Ordering::Release);
    } else {
        let from = (cpu + n - 1) % n;
        let p = HANDOFF[from as usize % MAX].swap(core::ptr::null_mut(), Ordering::Acquire);
        if p.is_null() {
            BAD.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // SAFETY: CPU `from` left this map with Box::into_raw.
        let map = unsafe { Box::from_raw(p) };
        let ok = map.len() == 500 && map.iter().all(|(k, b)| b[0] == u64::from(*k) + u64::from(from));
        if !ok {
            BAD.fetch_add(1, Ordering::Relaxed);
        }
        drop(map);
    }
}

/// After both phases on every CPU: nothing live, the statistics add up,
/// kheap's check is clean. Writes a summary into buf (NUL-terminated).
#[no_mangle]
pub extern "C" fn rust_heap_result(buf: *mut u8, len: usize) -> bool {
    let s = HEAP.stats();
    let check = HEAP.check();
    let ok = BAD.load(Ordering::Relaxed) == 0
        && s.used_bytes == 0
        && s.allocation_count == s.free_count
        && s.allocated_bytes == s.freed_bytes
        && s.peak_bytes > 0
        && check.is_ok();
    let mut l = Line::new();
    let _ = write!(
        l,
        "{} allocations, {} frees, peak {} B, heap end {:#x}, check {}",
        s.allocation_count,
        s.free_count,
        s.peak_bytes,
        HEAP.heap_end_vaddr(),
        match check {
            Ok(()) => "clean",
            Err(_) => "FAILED",
        }
    );
    if let Err(e) = check {
        let _ = write!(l, ": {}", e);
    }
    if len > 0 {
        let n = core::cmp::min(l.len, len - 1);
        // SAFETY: the caller gives len writable bytes at buf.
        unsafe {
            core::ptr::copy_nonoverlapping(l.buf.as_ptr(), buf, n);
            *buf.add(n) = 0;
        }
    }
    ok
}

/// Named by the precompiled core's unwind tables; never called with
/// panic = "abort".
#[no_mangle]
pub extern "C" fn rust_eh_personality() {
    puts("rust: rust_eh_personality called with panic = abort");
    // SAFETY: the kernel's halt never returns.
    unsafe { kheap_bm_halt() }
}

/// Rust before 1.68: alloc's (unused) `__rg_oom` names the `oom` lang item,
/// `rust_oom`, which only an `#[alloc_error_handler]` would define. The
/// default handler this library uses (`__rdl_oom`, a panic) never calls it.
#[cfg(old_alloc_error_handler)]
#[no_mangle]
pub fn rust_oom(_layout: core::alloc::Layout) -> ! {
    panic!("rust_oom called")
}
