//! `reclaim` cannot empty the magazines of a thread that is running (its
//! "CPU" uses them without a lock): the thread gives them back itself when
//! it answers with `cpu_poll`, once per request.

mod common;

use common::ok;
use std::alloc::{GlobalAlloc, Layout};
use std::sync::{Arc, Barrier};

global_heap!(16 << 20);

static OWN: kheap::Region<{ 8 << 20 }> = kheap::Region::new();
static H: kheap::KHeap = kheap::KHeap::new();

fn main() {
    println!("# reclaim requests {}", common::port());
    // SAFETY: OWN serves nothing else.
    unsafe { H.init(OWN.as_mut_ptr(), OWN.len()) }.unwrap();
    let bar = Arc::new(Barrier::new(2));
    let b = bar.clone();
    let t = std::thread::spawn(move || {
        let l = Layout::from_size_align(200, 8).unwrap();
        let mut v = Vec::with_capacity(500);
        for _ in 0..500 {
            // SAFETY: a valid layout; freed below with the same one.
            v.push(unsafe { H.alloc(l) });
        }
        let all = v.iter().all(|p| !p.is_null());
        for &p in &v {
            unsafe { H.dealloc(p, l) };
        }
        let early = H.cpu_poll();
        b.wait(); // 1: filled
        b.wait(); // 2: main has reclaimed and looked
        let first = H.cpu_poll();
        let again = H.cpu_poll();
        b.wait(); // 3: answered
        b.wait(); // 4: main has looked; the thread exits
        (all, early, first, again)
    });
    bar.wait();
    let held = H.stats().magazine_bytes;
    let got = H.reclaim();
    let after_reclaim = H.stats().magazine_bytes;
    bar.wait();
    bar.wait();
    let after_poll = H.stats().magazine_bytes;
    bar.wait();
    let (all, early, first, again) = t.join().unwrap();
    println!(
        "# magazines {} bytes; after reclaim ({} back) {}; after the thread's cpu_poll ({} back) {}",
        held, got, after_reclaim, first, after_poll
    );
    ok(all && early == 0, "cpu_poll before any request gives back nothing");
    ok(held > 0 && after_reclaim == held, "reclaim leaves a running thread's magazines alone");
    ok(after_poll == 0, "the thread's cpu_poll gives its magazines back");
    ok(again == 0, "a second cpu_poll answers nothing");
    ok(H.check().is_ok(), "check() clean at the end");
    common::finish();
}
