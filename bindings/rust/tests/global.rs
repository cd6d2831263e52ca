//! kheap as the #[global_allocator] of a std program: collections, huge
//! and over-aligned blocks, zero-sized types, realloc chains, 8 threads
//! freeing each other's objects; exact statistics and a clean check().

mod common;

use common::ok;
use std::alloc::{GlobalAlloc, Layout};
use std::collections::{BTreeMap, HashMap};
use std::convert::TryInto;
use std::sync::mpsc;
use std::thread;

global_heap!(256 << 20);

#[repr(C, align(4096))]
struct Page([u8; 4096]);

#[repr(C, align(1048576))]
struct Mega([u8; 64]);

fn collections() {
    let mut v: Vec<u64> = Vec::new();
    for i in 0..200_000u64 {
        v.push(i * 3);
    }
    ok(v.iter().sum::<u64>() == 3 * 199_999 * 200_000 / 2 && v.len() == 200_000, "Vec grows to 200000 elements");

    let mut s = String::new();
    for i in 0..10_000 {
        s.push_str(&format!("{},", i));
    }
    ok(s.len() == 48_890 && s.starts_with("0,1,2,") && s.ends_with("9999,"), "String of 10000 formatted numbers");

    let mut bt = BTreeMap::new();
    for i in 0..50_000u32 {
        bt.insert(i.wrapping_mul(2_654_435_761), i);
    }
    for i in (0..50_000u32).step_by(2) {
        bt.remove(&i.wrapping_mul(2_654_435_761));
    }
    ok(bt.len() == 25_000 && bt.values().all(|v| v % 2 == 1), "BTreeMap: 50000 inserts, 25000 removes");

    let mut hm = HashMap::new();
    for i in 0..50_000u64 {
        hm.insert(format!("key{}", i), vec![i; (i % 7) as usize]);
    }
    let good = (0..50_000u64).all(|i| hm[&format!("key{}", i)].len() == (i % 7) as usize);
    ok(good && hm.len() == 50_000, "HashMap of 50000 String -> Vec");
}

fn big_and_aligned() {
    let mut b: Box<[u8; 1 << 20]> = vec![0u8; 1 << 20].into_boxed_slice().try_into().unwrap();
    ok(b.iter().all(|&x| x == 0), "Box<[u8; 1 << 20]> comes zeroed (alloc_zeroed)");
    for (i, x) in b.iter_mut().enumerate() {
        *x = i as u8;
    }
    ok(b.iter().enumerate().all(|(i, &x)| x == i as u8), "Box<[u8; 1 << 20]> holds what was written");

    let pages: Vec<Box<Page>> = (0..64).map(|i| Box::new(Page([i as u8; 4096]))).collect();
    ok(
        pages.iter().all(|p| (&**p as *const Page as usize) % 4096 == 0)
            && pages.iter().enumerate().all(|(i, p)| p.0.iter().all(|&x| x == i as u8)),
        "64 Box<align(4096)> aligned and intact",
    );
    let megas: Vec<Box<Mega>> = (0..8).map(|i| Box::new(Mega([i as u8; 64]))).collect();
    ok(
        megas.iter().all(|p| (&**p as *const Mega as usize) % (1 << 20) == 0),
        "8 Box<align(1 MiB)> aligned",
    );
    let mut vp: Vec<Page> = Vec::new();
    for i in 0..40 {
        vp.push(Page([i as u8; 4096]));
    }
    ok(
        (vp.as_ptr() as usize) % 4096 == 0 && vp.iter().enumerate().all(|(i, p)| p.0[4095] == i as u8),
        "Vec<align(4096)> grown by realloc stays aligned",
    );
}

fn zero_sized() {
    let before = HEAP.stats();
    let b = Box::new(());
    let v: Vec<()> = vec![(); 1_000_000];
    let e: Vec<u64> = Vec::new();
    let after = HEAP.stats();
    ok(
        after.allocation_count == before.allocation_count && v.len() == 1_000_000 && e.capacity() == 0,
        "zero-sized types allocate nothing",
    );
    drop((b, v, e));
    // A zero-size layout given to the allocator directly still gets a
    // unique block that must be freed.
    unsafe {
        let l = Layout::from_size_align(0, 1).unwrap();
        let p = HEAP.alloc(l);
        let q = HEAP.alloc(l);
        ok(!p.is_null() && !q.is_null() && p != q, "size 0 through GlobalAlloc gives unique blocks");
        HEAP.dealloc(p, l);
        HEAP.dealloc(q, l);
    }
}

fn realloc_chains() {
    for &align in &[8usize, 64, 4096] {
        unsafe {
            let mut size = 1usize;
            let mut p = HEAP.alloc(Layout::from_size_align(size, align).unwrap());
            *p = 0x5a;
            let mut intact = true;
            let mut in_place = 0;
            let mut steps = 0;
            while size < (8 << 20) {
                let new = size + size / 2 + 1;
                let q = HEAP.realloc(p, Layout::from_size_align(size, align).unwrap(), new);
                if q.is_null() {
                    intact = false;
                    break;
                }
                if q == p {
                    in_place += 1;
                }
                intact &= *q == 0x5a && *q.add(size - 1) == (size as u8 | 1) || size == 1;
                intact &= (q as usize) % align == 0;
                *q.add(new - 1) = new as u8 | 1;
                p = q;
                size = new;
                steps += 1;
            }
            // And back down.
            let small = HEAP.realloc(p, Layout::from_size_align(size, align).unwrap(), 100);
            intact &= !small.is_null() && *small == 0x5a && (small as usize) % align == 0;
            HEAP.dealloc(small, Layout::from_size_align(100, align).unwrap());
            ok(
                intact,
                &format!(
                    "realloc chain 1 B -> 8 MiB -> 100 B, align {}: {} steps, {} in place, contents kept",
                    align, steps, in_place
                ),
            );
        }
    }
}

fn impossible() {
    unsafe {
        let cases = [
            Layout::from_size_align(isize::MAX as usize - 4096, 4096).unwrap(),
            Layout::from_size_align(1 << 40, 8).unwrap(),
            Layout::from_size_align(8, 1 << 40).unwrap(),
            Layout::from_size_align(512 << 20, 1 << 20).unwrap(),
        ];
        let failed_before = HEAP.stats().failed_count;
        let all_null = cases.iter().all(|&l| HEAP.alloc(l).is_null() && HEAP.alloc_zeroed(l).is_null());
        let failed = HEAP.stats().failed_count - failed_before;
        ok(all_null && failed == 8, "layouts that cannot be met return null and count as failures");
        let l = Layout::from_size_align(64, 8).unwrap();
        let p = HEAP.alloc(l);
        *p = 0x77;
        let q = HEAP.realloc(p, l, 1 << 40);
        ok(q.is_null() && *p == 0x77 && HEAP.usable_size(p) >= 64, "realloc that cannot be met returns null, block kept");
        HEAP.dealloc(p, l);
    }
}

fn threads() {
    // Thread i sends its objects to thread (i + 1) % 8, which frees them.
    const T: usize = 8;
    const N: usize = 20_000;
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..T).map(|_| mpsc::channel::<Vec<Box<[u8]>>>()).unzip();
    type Batch = Vec<Box<[u8]>>;
    let mut txs: Vec<Option<mpsc::Sender<Batch>>> = txs.into_iter().map(Some).collect();
    let handles: Vec<_> = rxs
        .into_iter()
        .enumerate()
        .map(|(i, rx)| {
            let tx = txs[(i + 1) % T].take().unwrap();
            thread::spawn(move || {
                let mut freed = 0usize;
                let mut good = true;
                let mut batch = Vec::new();
                for k in 0..N {
                    let size = 16 + (k * 37 + i * 101) % 700 + if k % 97 == 0 { 9000 } else { 0 };
                    let mut b = vec![0u8; size].into_boxed_slice();
                    b[0] = i as u8;
                    b[size - 1] = k as u8;
                    batch.push(b);
                    if batch.len() == 64 {
                        tx.send(std::mem::take(&mut batch)).unwrap();
                    }
                    while let Ok(got) = rx.try_recv() {
                        good &= got.iter().all(|b| b[0] as usize == (i + T - 1) % T);
                        freed += got.len();
                    }
                }
                tx.send(batch).unwrap();
                drop(tx);
                for got in rx {
                    good &= got.iter().all(|b| b[0] as usize == (i + T - 1) % T);
                    freed += got.len();
                }
                (good, freed)
            })
        })
        .collect();
    let results: Vec<(bool, usize)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    ok(
        results.iter().all(|&(g, f)| g && f == N),
        "8 threads, each frees the 20000 objects of another",
    );
}

fn main() {
    println!("# kheap as #[global_allocator] {}", common::port());
    ok(HEAP.is_initialised(), "the heap was initialised from .init_array before main");
    let start = HEAP.stats();
    ok(start.allocation_count > 0, "the runtime's allocations before main went to kheap");
    collections();
    big_and_aligned();
    zero_sized();
    realloc_chains();
    impossible();
    threads();

    // Exactness: one block moves the figures by exactly its usable size.
    let s0 = HEAP.stats();
    let b: Box<[u8; 100_000]> = vec![7u8; 100_000].into_boxed_slice().try_into().unwrap();
    let usable = unsafe { HEAP.usable_size(&*b as *const [u8; 100_000] as *const u8) };
    let s1 = HEAP.stats();
    drop(b);
    let s2 = HEAP.stats();
    ok(
        usable >= 100_000
            && s1.used_bytes == s0.used_bytes + usable
            && s1.allocated_bytes == s0.allocated_bytes + usable
            && s1.allocation_count == s0.allocation_count + 1
            && s2.used_bytes == s0.used_bytes
            && s2.freed_bytes == s0.freed_bytes + usable
            && s2.free_count == s0.free_count + 1,
        &format!("stats move by exactly the block's usable size ({} B)", usable),
    );

    let end = HEAP.stats();
    ok(
        end.used_bytes == start.used_bytes
            && end.allocation_count - end.free_count == start.allocation_count - start.free_count
            && end.allocated_bytes - end.freed_bytes == end.used_bytes
            && end.peak_bytes >= 8 << 20,
        &format!(
            "at the end the live bytes are back to the start ({} B), allocated - freed = used",
            start.used_bytes
        ),
    );
    let (total, used, free) = HEAP.get_heap_stats();
    ok(total == end.heap_total && used + free == total && total <= 256 << 20, "get_heap_stats: total = used + free");
    let longest = HEAP.largest_free();
    ok(longest > 0 && longest <= free && longest % 4096 == 0, "largest_free: a run of pages, at most the free bytes");
    ok(
        HEAP.heap_end_vaddr() == MEMORY.as_mut_ptr() as u64 + MEMORY.len() as u64,
        "heap_end_vaddr is the end of the static region",
    );
    let rows: Vec<kheap::SlabInfo> = HEAP.slabinfo().collect();
    ok(
        rows.len() >= 79 && rows[0].name().starts_with("kmalloc-") && rows.iter().all(|r| r.active_objs <= r.num_objs),
        &format!("slabinfo: {} rows, kmalloc classes first", rows.len()),
    );
    match HEAP.check() {
        Ok(()) => ok(true, "check() is clean at the end"),
        Err(e) => ok(false, &format!("check(): {}", e)),
    }
    common::finish();
}
