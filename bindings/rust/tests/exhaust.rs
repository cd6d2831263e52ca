//! Running out: a small heap returns null and stays whole; the global heap's
//! failure reaches handle_alloc_error; errors of init and add_region; an
//! uninitialised heap allocates nothing.

mod common;

use common::ok;
use std::alloc::{GlobalAlloc, Layout};

global_heap!(16 << 20);

static SMALL: kheap::Region<{ 256 << 10 }> = kheap::Region::new();
static EXTRA: kheap::Region<{ 64 << 10 }> = kheap::Region::new();

fn before_init() {
    let h = kheap::KHeap::new();
    let l = Layout::from_size_align(64, 8).unwrap();
    let p = unsafe { h.alloc(l) };
    let z = unsafe { h.alloc_zeroed(l) };
    ok(p.is_null() && z.is_null() && !h.is_initialised(), "alloc before init returns null");
    ok(h.stats() == kheap::HeapStats::default() && h.heap_end_vaddr() == 0, "stats are zero before init");
    ok(h.check() == Err(kheap::Error::NotInitialised), "check() before init: NotInitialised");
    let mut tiny = [0u8; 1000];
    let e = unsafe { h.init(tiny.as_mut_ptr(), tiny.len()) };
    let msg = e.map_err(|e| e.to_string()).err().unwrap_or_default();
    ok(
        e == Err(kheap::Error::Code(kheap::Error::ETOOSMALL)) && msg.contains("131072") && tiny.iter().all(|&b| b == 0),
        &format!("init over 1000 bytes: ETOOSMALL, memory untouched (\"{}\")", msg),
    );
}

fn small_heap() {
    let h = kheap::KHeap::new();
    unsafe { h.init(SMALL.as_mut_ptr(), SMALL.len()) }.unwrap();
    ok(
        unsafe { h.init(SMALL.as_mut_ptr(), SMALL.len()) } == Err(kheap::Error::AlreadyInitialised),
        "a second init: AlreadyInitialised",
    );
    let e = unsafe { h.add_region(SMALL.as_mut_ptr().add(4096), 32 << 10) };
    ok(
        e == Err(kheap::Error::Code(kheap::Error::EOVERLAP)),
        &format!("add_region over the heap's own region: {}", e.unwrap_err()),
    );
    let fresh = h.stats();
    let mut blocks = Vec::new();
    let mut failed_at = [0usize; 3];
    for (k, &(size, align)) in [(64usize, 8usize), (4096, 4096), (40_000, 8)].iter().enumerate() {
        let l = Layout::from_size_align(size, align).unwrap();
        loop {
            let p = unsafe { h.alloc(l) };
            if p.is_null() {
                failed_at[k] = blocks.len();
                break;
            }
            unsafe { p.write_bytes(k as u8 + 1, size) };
            blocks.push((p, l, k as u8 + 1));
        }
    }
    let full = h.stats();
    ok(
        failed_at[0] > 1000 && full.failed_count == fresh.failed_count + 3,
        &format!("256 KiB heap: null after {} blocks, 3 failures counted", blocks.len()),
    );
    ok(h.check().is_ok(), "check() clean when full");
    let intact = blocks.iter().all(|&(p, l, v)| unsafe { std::slice::from_raw_parts(p, l.size()) }.iter().all(|&b| b == v));
    ok(intact, "every block intact after the failures");

    let l = Layout::from_size_align(64, 8).unwrap();
    let grew = h.set_growable(1 << 20);
    let p = unsafe { h.alloc(Layout::from_size_align(40_000, 8).unwrap()) };
    if cfg!(feature = "std") {
        ok(grew.is_ok() && !p.is_null() && h.stats().region_count == 2, "set_growable: the heap grows (mmap)");
    } else {
        ok(grew.is_ok() && p.is_null() && h.stats().region_count == 1, "set_growable without a pages hook: still null");
    }
    if !p.is_null() {
        unsafe { h.dealloc(p, l) };
    }
    h.set_growable(0).unwrap();

    for &(p, l, _) in &blocks {
        unsafe { h.dealloc(p, l) };
    }
    h.reclaim();
    let after = h.stats();
    ok(
        after.used_bytes == 0 && after.allocation_count == after.free_count,
        "after freeing everything nothing is live",
    );
    ok(h.check().is_ok(), "check() clean after freeing");
    let again = (0..failed_at[0])
        .map(|_| unsafe { h.alloc(l) })
        .collect::<Vec<_>>();
    ok(again.iter().all(|p| !p.is_null()), &format!("the heap is whole: {} blocks of 64 B again", failed_at[0]));
    for p in again {
        unsafe { h.dealloc(p, l) };
    }
    let add = unsafe { h.add_region(EXTRA.as_mut_ptr(), EXTRA.len()) };
    ok(add.is_ok() && h.stats().region_count >= 2, "add_region of a second static region");
    ok(h.check().is_ok(), "check() clean at the end");
}

fn global_exhaustion_child() {
    // Through the global allocator API: null, nothing corrupted.
    let l = Layout::from_size_align(64 << 20, 8).unwrap();
    let p = unsafe { std::alloc::alloc(l) };
    println!("direct alloc null: {}", p.is_null());
    println!("check: {:?}", HEAP.check());
    let v: Vec<u8> = Vec::with_capacity(64 << 20); // handle_alloc_error
    println!("not reached {}", v.capacity());
}

fn global_exhaustion() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env("KHEAP_TEST_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ok(
        stdout.contains("direct alloc null: true") && stdout.contains("check: Ok(())"),
        "global heap of 16 MiB: a 64 MiB alloc returns null, check() clean",
    );
    ok(
        !out.status.success() && stderr.contains("memory allocation of 67108864 bytes failed") && !stdout.contains("not reached"),
        "Vec::with_capacity(64 MiB) reaches handle_alloc_error",
    );
}

fn main() {
    if std::env::var_os("KHEAP_TEST_CHILD").is_some() {
        global_exhaustion_child();
        return;
    }
    println!("# exhaustion and errors {}", common::port());
    before_init();
    small_heap();
    global_exhaustion();
    common::finish();
}
