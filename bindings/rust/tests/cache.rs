//! ObjectCache<T>: construction once per slot, handles back to the cache on
//! drop, T dropped when the slabs go, handles sent between threads.

mod common;

use common::ok;
use kheap::ObjectCache;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};

global_heap!(64 << 20);

static BUILT: AtomicUsize = AtomicUsize::new(0);
static DROPPED: AtomicUsize = AtomicUsize::new(0);

struct Inode {
    ino: u64,
    name: String,
    magic: u32,
}

impl Drop for Inode {
    fn drop(&mut self) {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Counter {
    hits: u64,
    _pad: [u64; 7],
}

#[repr(align(256))]
struct Aligned(u8);

fn constructed_once() {
    let base = HEAP.stats();
    {
        let cache = ObjectCache::new(&HEAP, "inode", || {
            BUILT.fetch_add(1, Ordering::Relaxed);
            Inode { ino: 0, name: String::from("unnamed"), magic: 0x1a0de }
        })
        .unwrap();
        let mut slots = HashSet::new();
        for round in 0..5 {
            let mut live = Vec::new();
            for i in 0..(1000 + round * 300) {
                let mut o = cache.alloc().unwrap();
                slots.insert(kheap::CacheBox::as_ptr(&o) as usize);
                ok_silent(o.magic == 0x1a0de && o.name.starts_with("unnamed"));
                o.ino = i as u64;
                live.push(o);
            }
            for (i, o) in live.iter().enumerate() {
                ok_silent(o.ino == i as u64);
            }
            let info = cache.info();
            ok_silent(info.active_objs == live.len() && info.objsize >= std::mem::size_of::<Inode>());
            drop(live); // back to the cache, still constructed
        }
        ok(
            BUILT.load(Ordering::Relaxed) == slots.len() && slots.len() < 5 * 1000,
            &format!(
                "constructor ran once per slot: {} constructions for {} slots over 5 rounds of 1000..2200 allocations",
                BUILT.load(Ordering::Relaxed),
                slots.len()
            ),
        );
        ok(DROPPED.load(Ordering::Relaxed) == 0, "dropping a handle returns the object constructed, not dropped");
        ok(cache.info().active_objs == 0, "all handles back: no active objects");
        let before = DROPPED.load(Ordering::Relaxed);
        cache.shrink();
        let shrunk = DROPPED.load(Ordering::Relaxed) - before;
        ok(shrunk <= slots.len(), &format!("shrink dropped the {} objects of its empty slabs", shrunk));
    }
    ok(
        DROPPED.load(Ordering::Relaxed) == BUILT.load(Ordering::Relaxed),
        &format!("dropping the cache dropped every constructed object ({})", DROPPED.load(Ordering::Relaxed)),
    );
    let end = HEAP.stats();
    ok(end.used_bytes == base.used_bytes, "the cache's memory is all back in the heap");
    ok(HEAP.check().is_ok(), "check() clean");
}

static FAILS: AtomicUsize = AtomicUsize::new(0);
fn ok_silent(c: bool) {
    if !c {
        FAILS.fetch_add(1, Ordering::Relaxed);
    }
}

fn defaults_and_threads() {
    let cache: ObjectCache<Counter> = ObjectCache::with_default(&HEAP, "counter").unwrap();
    let handles: Vec<_> = (0..4000).map(|_| cache.alloc().unwrap()).collect();
    ok(handles.iter().all(|h| h.hits == 0), "with_default: objects built by Default");
    let cache = &cache;
    std::thread::scope(|s| {
        let mut rest = handles;
        for t in 0..8 {
            let mine: Vec<_> = rest.drain(..500).collect();
            s.spawn(move || {
                let mut mine = mine;
                for h in mine.iter_mut() {
                    h.hits += t + 1;
                }
                drop(mine); // freed on another thread
                for _ in 0..1000 {
                    let o = cache.alloc().unwrap();
                    drop(o);
                }
            });
        }
    });
    ok(cache.info().active_objs == 0 && cache.info().allocs == cache.info().frees, "8 threads dropped handles made on the main thread");

    let al = ObjectCache::new(&HEAP, "aligned", || Aligned(7)).unwrap();
    let xs: Vec<_> = (0..100).map(|_| al.alloc().unwrap()).collect();
    ok(
        xs.iter().all(|x| kheap::CacheBox::as_ptr(x) as usize % 256 == 0 && x.0 == 7),
        "objects of an align(256) type are aligned",
    );
    drop(xs);

    let names: Vec<String> = HEAP.slabinfo().map(|r| r.name().to_string()).collect();
    ok(
        names.iter().any(|n| n == "counter") && names.iter().any(|n| n == "aligned"),
        "slabinfo lists the caches by name",
    );

    let panicky = ObjectCache::new(&HEAP, "panicky", || -> u64 { panic!("constructor fails") }).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| panicky.alloc().map(|_| ())));
    ok(r.is_err() && panicky.info().active_objs == 0, "a panicking constructor gives its slot back");

    let huge = ObjectCache::new(&HEAP, "huge", || [0u8; 40_000]);
    ok(huge.err() == Some(kheap::Error::CacheCreate), "a type above MAX_CLASS: CacheCreate");
}

fn main() {
    println!("# ObjectCache {}", common::port());
    std::panic::set_hook(Box::new(|_| {}));
    constructed_once();
    defaults_and_threads();
    ok(FAILS.load(Ordering::Relaxed) == 0, "every object held its constructed state and its own values");
    ok(HEAP.check().is_ok(), "check() clean at the end");
    common::finish();
}
