//! kheap, a kernel heap allocator, as Rust's global allocator.
//!
//! kheap's core is freestanding C (pages, coalescing page runs, slabs of 79
//! size classes, object caches with constructors, per-CPU magazines); this
//! crate compiles it (`build.rs`) and gives it a Rust face:
//!
//! - [`KHeap`]: a heap over memory the program hands over ([`KHeap::init`],
//!   [`KHeap::add_region`]), usable as `#[global_allocator]`
//!   ([`GlobalAlloc`] complete: any power-of-two alignment, `alloc_zeroed`
//!   through kheap's calloc, `realloc` in place where kheap can). It uses
//!   only the regions it was given unless [`KHeap::set_growable`] says
//!   otherwise, so running out returns null.
//! - The statistics and checks of the seed kernel's heap module as methods:
//!   [`KHeap::heap_end_vaddr`], [`KHeap::get_heap_stats`], [`KHeap::stats`]
//!   ([`HeapStats`]), [`KHeap::check`], [`KHeap::slabinfo`].
//! - [`ObjectCache`]: a typed object cache (Bonwick's kmem_cache) whose
//!   handles go back to the cache when dropped.
//!
//! # Ports
//!
//! - Default (`#![no_std]` + `alloc`): the Rust port (`port` module). The
//!   kernel registers its CPU index and interrupt masking with
//!   [`set_hooks`]; until then kheap takes its locked path everywhere.
//! - Feature `std`: kheap's hosted POSIX port (`src/port/hosted.c`):
//!   pthread mutexes, each thread its own "CPU", mmap for growth.
//! - Feature `extern-core`: no C is compiled; the program links kheap's
//!   core and a port itself (a kernel that already has kheap in C, e.g.
//!   with the bare-metal port `src/port/baremetal.c`, which reads the CPU
//!   index from the hardware).
//!
//! # A kernel
//!
//! ```ignore
//! #[global_allocator]
//! static HEAP: kheap::KHeap = kheap::KHeap::new();
//! static HEAP_MEMORY: kheap::Region<{ 8 << 20 }> = kheap::Region::new();
//!
//! pub fn init() -> Result<(), kheap::Error> {
//!     // SAFETY: HEAP_MEMORY is used for nothing else.
//!     unsafe { HEAP.init(HEAP_MEMORY.as_mut_ptr(), HEAP_MEMORY.len()) }
//! }
//! ```
//!
//! Allocations before `init` return null (and so reach
//! `handle_alloc_error`); they never touch memory.
//!
//! # A `std` program
//!
//! The Rust runtime allocates before `main`, so a `std` program whose global
//! allocator is a `KHeap` must initialise it earlier, from a constructor in
//! `.init_array` (which the C runtime runs before Rust's `main` wrapper):
//!
//! ```ignore
//! #[global_allocator]
//! static HEAP: kheap::KHeap = kheap::KHeap::new();
//! static MEMORY: kheap::Region<{ 64 << 20 }> = kheap::Region::new();
//!
//! extern "C" fn init_heap() {
//!     // SAFETY: MEMORY is used for nothing else; this runs once, first.
//!     unsafe { HEAP.init(MEMORY.as_mut_ptr(), MEMORY.len()) }.unwrap();
//! }
//! #[used]
//! #[link_section = ".init_array"]
//! static INIT_HEAP: extern "C" fn() = init_heap;
//! ```
//!
//! # Toolchains
//!
//! MSRV 1.63 (Debian 12's rustc and cargo); tested with it and with current
//! stable. No dependencies; build with `--offline`.

#![no_std]
#![deny(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod cache;
mod ffi;
#[cfg(not(any(feature = "std", feature = "extern-core")))]
mod port;

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::fmt;
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

pub use cache::{CacheBox, ObjectCache};
#[cfg(not(any(feature = "std", feature = "extern-core")))]
pub use port::{cpu_flush, set_hooks, Hooks, PagesGetFn, Report};

/// kheap's page size: regions are carved into pages of this many bytes.
pub const PAGE_SIZE: usize = 4096;
/// The largest size served from a size-class slab; larger blocks are page
/// runs of their own.
pub const MAX_CLASS: usize = ffi::MAX_CLASS;
/// The smallest first region [`KHeap::init`] accepts
/// (`KHEAP_MIN_REGION_SIZE`).
pub const MIN_REGION_SIZE: usize = 131072;
/// The smallest region [`KHeap::add_region`] accepts
/// (`KHEAP_MIN_ADD_REGION_SIZE`).
pub const MIN_ADD_REGION_SIZE: usize = 16384;

/// Why a kheap call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// An error code of kheap's C API (`enum kheap_err`); its text is
    /// `kheap_strerror`'s.
    Code(i32),
    /// [`KHeap::init`] on a heap that is already initialised.
    AlreadyInitialised,
    /// A call that needs an initialised heap, before [`KHeap::init`].
    NotInitialised,
    /// [`KHeap::check`] found an inconsistency: kheap's sentence naming it,
    /// and the address it concerns.
    Corrupt {
        /// What is wrong (a constant sentence of kheap's).
        reason: &'static str,
        /// The address concerned.
        addr: usize,
    },
    /// [`ObjectCache::new`] could not make the cache: the object (with
    /// the crate's constructed-flag word) is larger than [`MAX_CLASS`], its
    /// alignment above [`PAGE_SIZE`], or the heap has no room for the cache.
    CacheCreate,
}

impl Error {
    /// kheap's `EINVAL`: a null argument or a bad alignment or size.
    pub const EINVAL: i32 = 1;
    /// kheap's `ETOOSMALL`: the region is below the minimum size.
    pub const ETOOSMALL: i32 = 2;
    /// kheap's `ERANGE`: the region wraps around the address space.
    pub const ERANGE: i32 = 3;
    /// kheap's `EOVERLAP`: the region overlaps one the heap has.
    pub const EOVERLAP: i32 = 4;
    /// kheap's `ETOOMANY`: the heap has its maximum number of regions.
    pub const ETOOMANY: i32 = 5;
    /// kheap's `EBUSY`: the cache still has allocated objects.
    pub const EBUSY: i32 = 6;
    /// kheap's `ENOSYS`: the port cannot give the heap more memory.
    pub const ENOSYS: i32 = 7;

    fn from_code(code: i32) -> Result<(), Error> {
        if code == 0 {
            Ok(())
        } else {
            Err(Error::Code(code))
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            // SAFETY: kheap_strerror returns a constant string, never null.
            Error::Code(c) => f.write_str(unsafe { ffi::static_str(ffi::kheap_strerror(c)) }),
            Error::AlreadyInitialised => f.write_str("the heap is already initialised"),
            Error::NotInitialised => f.write_str("the heap is not initialised"),
            Error::Corrupt { reason, addr } => write!(f, "{} (at {:#x})", reason, addr),
            Error::CacheCreate => f.write_str(
                "cannot create the cache: object too large, alignment above a page, or no memory",
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}

/// Memory for a heap in a `static`: `N` bytes aligned to a page, in BSS
/// (no bytes in the image). The seed's `HEAP_MEMORY` array, without a
/// `static mut`.
#[repr(C, align(4096))]
pub struct Region<const N: usize>(UnsafeCell<[u8; N]>);

// SAFETY: the bytes are only reached through the raw pointer, whose user
// (the heap) synchronises.
unsafe impl<const N: usize> Sync for Region<N> {}

impl<const N: usize> Default for Region<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Region<N> {
    /// Zeroed memory (in BSS when the `Region` is a static).
    pub const fn new() -> Self {
        Region(UnsafeCell::new([0; N]))
    }
    /// The first byte, for [`KHeap::init`] or [`KHeap::add_region`].
    pub const fn as_mut_ptr(&self) -> *mut u8 {
        self.0.get() as *mut u8
    }
    /// `N`.
    #[allow(clippy::len_without_is_empty)]
    pub const fn len(&self) -> usize {
        N
    }
}

/// The seed's `HeapStats` (its six public fields first, as there) plus
/// kheap's own figures. Every figure is exact when read. Byte figures of
/// blocks are usable sizes (the size class, or the pages of a large block),
/// not the sizes asked for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeapStats {
    /// Total bytes allocated (usable sizes ever handed out).
    pub allocated_bytes: usize,
    /// Total bytes freed.
    pub freed_bytes: usize,
    /// Current bytes in use: `allocated_bytes - freed_bytes`.
    pub used_bytes: usize,
    /// Peak bytes used.
    pub peak_bytes: usize,
    /// Number of allocations (a `realloc` counts one when it moves, none in
    /// place).
    pub allocation_count: u64,
    /// Number of frees.
    pub free_count: u64,
    /// Bytes of every region given to the heap (`get_heap_stats`' total).
    pub heap_total: usize,
    /// `heap_total - heap_free`.
    pub heap_used: usize,
    /// Bytes in free page runs.
    pub heap_free: usize,
    /// Allocations that returned null.
    pub failed_count: u64,
    /// Bytes not usable for objects: alignment skipped, the heap's control
    /// structure, page descriptors, slab bitmaps, cache structures.
    pub metadata_bytes: usize,
    /// Bytes in pages held by slabs.
    pub slab_bytes: usize,
    /// Bytes in pages held by large blocks.
    pub large_bytes: usize,
    /// Regions the heap manages.
    pub region_count: usize,
    /// Large blocks (page runs of their own) allocated now; their bytes
    /// are `large_bytes`.
    pub large_count: usize,
    /// Bytes of free pages that may still be resident (an upper estimate;
    /// 0 when the port cannot purge pages, as the Rust port).
    pub dirty_bytes: usize,
    /// Free objects in the CPUs' own magazines.
    pub magazine_bytes: usize,
    /// Free objects in the caches' depots.
    pub depot_bytes: usize,
    /// Pages of empty slabs the caches keep.
    pub empty_slab_bytes: usize,
    /// Free pages not resident: purged, or never touched.
    pub purged_bytes: usize,
    /// Bytes ever handed to the port's purge.
    pub purged_total: u64,
    /// Decay epochs ended (`kheap_tick`).
    pub decay_epochs: u64,
    /// Freed large blocks the CPUs keep for their next allocations of the
    /// same page count (part of `large_bytes`).
    pub large_cache_bytes: usize,
}

/// One row of kheap's slabinfo table: a cache (the kmalloc size classes
/// are caches named `kmalloc-<size>`), as `/proc/slabinfo` shows it plus
/// counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlabInfo {
    name: [u8; ffi::NAME_MAX],
    /// Objects allocated now.
    pub active_objs: usize,
    /// Object slots in all slabs of the cache.
    pub num_objs: usize,
    /// Usable bytes per object.
    pub objsize: usize,
    /// Object slots per slab.
    pub objperslab: usize,
    /// Pages per slab.
    pub pagesperslab: usize,
    /// Slabs with at least one object allocated.
    pub active_slabs: usize,
    /// All slabs, empty ones kept included.
    pub num_slabs: usize,
    /// Successful allocations from the cache.
    pub allocs: u64,
    /// Frees to the cache.
    pub frees: u64,
    /// Free objects held in per-CPU magazines and the depot.
    pub cached_objs: usize,
    /// Allocations and frees served by a CPU's own magazines.
    pub cpu_hits: u64,
    /// Those that went to the depot or the slabs.
    pub cpu_misses: u64,
    /// Of `cached_objs`, those in the depot's magazines and in full
    /// magazines sent home (the CPUs' inboxes and stashes).
    pub depot_objs: usize,
    /// Slabs with no object allocated, kept.
    pub empty_slabs: usize,
}

impl SlabInfo {
    /// The cache's name.
    pub fn name(&self) -> &str {
        let n = self.name.iter().position(|&b| b == 0).unwrap_or(self.name.len());
        core::str::from_utf8(&self.name[..n]).unwrap_or("?")
    }

    fn from_ffi(r: &ffi::kheap_cache_info) -> SlabInfo {
        SlabInfo {
            name: r.name,
            active_objs: r.active_objs,
            num_objs: r.num_objs,
            objsize: r.objsize,
            objperslab: r.objperslab,
            pagesperslab: r.pagesperslab,
            active_slabs: r.active_slabs,
            num_slabs: r.num_slabs,
            allocs: r.allocs,
            frees: r.frees,
            cached_objs: r.cached_objs,
            cpu_hits: r.cpu_hits,
            cpu_misses: r.cpu_misses,
            depot_objs: r.depot_objs,
            empty_slabs: r.empty_slabs,
        }
    }
}

/// The rows of [`KHeap::slabinfo`]: a snapshot taken when it was called.
pub struct SlabInfoIter {
    rows: alloc::vec::IntoIter<SlabInfo>,
}

impl Iterator for SlabInfoIter {
    type Item = SlabInfo;
    fn next(&mut self) -> Option<SlabInfo> {
        self.rows.next()
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.rows.size_hint()
    }
}

impl ExactSizeIterator for SlabInfoIter {}

/// A kheap heap, for `#[global_allocator]` or for use of its own.
///
/// `KHeap::new()` is a `const fn`; the heap takes memory at
/// [`init`](KHeap::init). All methods may be called from any number of
/// threads or CPUs at once. Before `init`, allocations return null and the
/// statistics are zero.
pub struct KHeap {
    heap: AtomicPtr<ffi::kheap_t>,
}

impl Default for KHeap {
    fn default() -> Self {
        Self::new()
    }
}

impl KHeap {
    /// A heap with no memory yet.
    pub const fn new() -> Self {
        KHeap {
            heap: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// Make the heap over `[start, start + size)`. kheap keeps its control
    /// structure and page descriptors inside the region and writes nowhere
    /// else, ever.
    ///
    /// Errors: [`Error::AlreadyInitialised`]; [`Error::Code`] with
    /// `EINVAL` (null `start`), `ERANGE` (the range wraps) or `ETOOSMALL`
    /// (below [`MIN_REGION_SIZE`] or too little left after alignment). On
    /// error the memory is untouched.
    ///
    /// # Safety
    /// The region must be valid for reads and writes, and used by nothing
    /// else for as long as the heap (or any block from it) is in use.
    pub unsafe fn init(&self, start: *mut u8, size: usize) -> Result<(), Error> {
        if !self.raw().is_null() {
            return Err(Error::AlreadyInitialised);
        }
        let mut h: *mut ffi::kheap_t = ptr::null_mut();
        Error::from_code(ffi::kheap_init(&mut h, start as *mut c_void, size))?;
        match self
            .heap
            .compare_exchange(ptr::null_mut(), h, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Ok(()),
            Err(_) => {
                ffi::kheap_fini(h);
                Err(Error::AlreadyInitialised)
            }
        }
    }

    /// Give the heap another region (at least [`MIN_ADD_REGION_SIZE`]
    /// bytes, not overlapping one it has); its pages are usable at once.
    ///
    /// Errors: [`Error::NotInitialised`]; [`Error::Code`] with `EINVAL`,
    /// `ERANGE`, `ETOOSMALL`, `EOVERLAP`, `ETOOMANY`.
    ///
    /// # Safety
    /// As for [`init`](KHeap::init).
    pub unsafe fn add_region(&self, start: *mut u8, size: usize) -> Result<(), Error> {
        let h = self.initialised()?;
        Error::from_code(ffi::kheap_add_region(h, start as *mut c_void, size))
    }

    /// Let the heap grow when a request cannot be met from its regions: it
    /// asks the port for at least `grow_bytes` more (with `std`: `mmap`;
    /// without: [`Hooks::pages_get`](crate::Hooks), if the kernel
    /// registered one). `0` turns growth off again, which is how a heap
    /// starts: it uses only the regions it was given.
    ///
    /// Errors: [`Error::NotInitialised`]; `Error::Code(Error::ENOSYS)`
    /// when the port cannot give pages.
    pub fn set_growable(&self, grow_bytes: usize) -> Result<(), Error> {
        let h = self.initialised()?;
        // SAFETY: h is an initialised heap.
        Error::from_code(unsafe { ffi::kheap_set_growable(h, grow_bytes) })
    }

    /// The seed's `heap_end_vaddr`: the address one past the last byte of
    /// the heap's highest region (with one static region: the end of that
    /// array). 0 before `init`.
    pub fn heap_end_vaddr(&self) -> u64 {
        let h = self.raw();
        if h.is_null() {
            return 0;
        }
        // SAFETY: h is an initialised heap.
        unsafe { ffi::kheap_end(h) as u64 }
    }

    /// The seed's `get_heap_stats`: `(total, used, free)` bytes, where
    /// total is every region given to the heap, free the bytes in free page
    /// runs and used the rest (live blocks, partly used slabs, metadata).
    pub fn get_heap_stats(&self) -> (usize, usize, usize) {
        let s = self.stats();
        (s.heap_total, s.heap_used, s.heap_free)
    }

    /// Bytes in the longest run of free pages: the largest block the heap
    /// can hand out now without growing or reclaiming (`get_heap_stats`'
    /// free bytes may be more, in pieces). 0 before `init`.
    pub fn largest_free(&self) -> usize {
        let h = self.raw();
        if h.is_null() {
            return 0;
        }
        // SAFETY: h is an initialised heap.
        unsafe { ffi::kheap_largest_free(h) }
    }

    /// The heap's statistics, exact, taken under its locks.
    pub fn stats(&self) -> HeapStats {
        let h = self.raw();
        if h.is_null() {
            return HeapStats::default();
        }
        let mut s = ffi::kheap_stats::default();
        // SAFETY: h is an initialised heap; s is a valid out pointer.
        unsafe { ffi::kheap_get_stats(h, &mut s) };
        HeapStats {
            allocated_bytes: s.allocated_bytes as usize,
            freed_bytes: s.freed_bytes as usize,
            used_bytes: s.used_bytes,
            peak_bytes: s.peak_bytes,
            allocation_count: s.allocation_count,
            free_count: s.free_count,
            heap_total: s.heap_total,
            heap_used: s.heap_used,
            heap_free: s.heap_free,
            failed_count: s.failed_count,
            metadata_bytes: s.metadata_bytes,
            slab_bytes: s.slab_bytes,
            large_bytes: s.large_bytes,
            region_count: s.region_count,
            large_count: s.large_count,
            dirty_bytes: s.dirty_bytes,
            magazine_bytes: s.magazine_bytes,
            depot_bytes: s.depot_bytes,
            empty_slab_bytes: s.empty_slab_bytes,
            purged_bytes: s.purged_bytes,
            purged_total: s.purged_total,
            decay_epochs: s.decay_epochs,
            large_cache_bytes: s.large_cache_bytes,
        }
    }

    /// kheap's integrity checker: walks every region, run, slab, free list,
    /// cache and depot and cross-checks them and the statistics. Safe while
    /// other CPUs allocate (it takes every lock of the heap); the per-CPU
    /// magazines are not walked. Time: O(pages + objects).
    ///
    /// Errors: [`Error::Corrupt`] with the first inconsistency;
    /// [`Error::NotInitialised`].
    pub fn check(&self) -> Result<(), Error> {
        let h = self.initialised()?;
        let mut addr: *const c_void = ptr::null();
        // SAFETY: h is an initialised heap.
        let r = unsafe { ffi::kheap_check(h, &mut addr) };
        if r.is_null() {
            Ok(())
        } else {
            Err(Error::Corrupt {
                // SAFETY: a constant sentence of kheap's.
                reason: unsafe { ffi::static_str(r) },
                addr: addr as usize,
            })
        }
    }

    /// kheap's slabinfo rows, one per cache: the kmalloc size classes
    /// first, then caches in creation order, then kheap's own caches. The
    /// snapshot is taken now; its buffer comes from the global allocator.
    /// Empty before `init`.
    pub fn slabinfo(&self) -> SlabInfoIter {
        let mut out = alloc::vec::Vec::new();
        let h = self.raw();
        if !h.is_null() {
            let empty = ffi::kheap_cache_info::default();
            let mut rows = alloc::vec::Vec::new();
            // Caches may be created between the count and the copy.
            loop {
                rows.resize(rows.len() + 16, empty);
                // SAFETY: rows has rows.len() valid slots.
                let n = unsafe { ffi::kheap_slabinfo(h, rows.as_mut_ptr(), rows.len()) };
                if n <= rows.len() {
                    rows.truncate(n);
                    break;
                }
                rows.resize(n, empty);
            }
            out = rows.iter().map(SlabInfo::from_ffi).collect();
        }
        SlabInfoIter {
            rows: out.into_iter(),
        }
    }

    /// Give every empty slab of every cache back to the page layer;
    /// returns the bytes given back. 0 before `init`.
    pub fn reclaim(&self) -> usize {
        let h = self.raw();
        if h.is_null() {
            return 0;
        }
        // SAFETY: h is an initialised heap.
        unsafe { ffi::kheap_reclaim(h) }
    }

    /// Answer, on the calling CPU (thread, when hosted), a `reclaim` made
    /// on another one: `reclaim` cannot empty the magazines of a CPU that
    /// is running, so each CPU gives its own back when it calls this (a
    /// kernel: from its idle loop, timer or a cross-call). Returns the
    /// bytes given back; 0 when nothing was asked since this CPU last
    /// answered, or before `init`.
    pub fn cpu_poll(&self) -> usize {
        let h = self.raw();
        if h.is_null() {
            return 0;
        }
        // SAFETY: h is an initialised heap.
        unsafe { ffi::kheap_cpu_poll(h) }
    }

    /// Bytes usable in the block at `ptr` (its size class, or the pages of
    /// a large block). 0 for null or before `init`; a pointer kheap did not
    /// hand out is reported through the port and 0 returned.
    ///
    /// # Safety
    /// `ptr` is null or a live block of this heap.
    pub unsafe fn usable_size(&self, ptr: *const u8) -> usize {
        let h = self.raw();
        if h.is_null() {
            return 0;
        }
        ffi::kheap_usable_size(h, ptr as *const c_void)
    }

    /// Forget the heap: it is uninitialised again (allocations return
    /// null) and may be [`init`](KHeap::init)ed anew, over the same memory
    /// or other memory. Nothing is written to the regions.
    ///
    /// # Safety
    /// No block of the heap may be used afterwards, no other thread or CPU
    /// may be inside a call on it, and it must not be the global allocator
    /// of a program that still runs.
    pub unsafe fn fini(&self) {
        let h = self.heap.swap(ptr::null_mut(), Ordering::AcqRel);
        if !h.is_null() {
            ffi::kheap_fini(h);
        }
    }

    /// Whether [`init`](KHeap::init) has succeeded.
    pub fn is_initialised(&self) -> bool {
        !self.raw().is_null()
    }

    fn raw(&self) -> *mut ffi::kheap_t {
        self.heap.load(Ordering::Acquire)
    }

    fn initialised(&self) -> Result<*mut ffi::kheap_t, Error> {
        let h = self.raw();
        if h.is_null() {
            Err(Error::NotInitialised)
        } else {
            Ok(h)
        }
    }
}

/// kheap's default alignment: every block is aligned to at least this.
const MIN_ALIGN: usize = 8;

unsafe impl GlobalAlloc for KHeap {
    /// A block for `layout`, or null (before `init`, when the heap is out
    /// of memory, or when no block of that size and alignment can exist).
    /// Any power-of-two alignment is met, also above a page. O(1).
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let h = self.raw();
        if h.is_null() {
            return ptr::null_mut();
        }
        if layout.align() <= MIN_ALIGN {
            ffi::kheap_alloc(h, layout.size()) as *mut u8
        } else {
            ffi::kheap_alloc_aligned(h, layout.size(), layout.align()) as *mut u8
        }
    }

    /// Free the block. O(1). A pointer this heap did not hand out is
    /// reported through the port and ignored.
    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        let h = self.raw();
        if !h.is_null() {
            ffi::kheap_free(h, ptr as *mut c_void);
        }
    }

    /// A zeroed block: kheap's calloc when the alignment is kheap's
    /// default, else an aligned block cleared here.
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let h = self.raw();
        if h.is_null() {
            return ptr::null_mut();
        }
        if layout.align() <= MIN_ALIGN {
            ffi::kheap_calloc(h, 1, layout.size()) as *mut u8
        } else {
            let p = ffi::kheap_alloc_aligned(h, layout.size(), layout.align()) as *mut u8;
            if !p.is_null() {
                ptr::write_bytes(p, 0, layout.size());
            }
            p
        }
    }

    /// Resize. In place when kheap can (the new size is of the block's
    /// size class, a large block shrinks, or it grows into the free run
    /// after it); else a new block, a copy, and the old block freed, so a
    /// block shrunk to a smaller class moves there (it stays in place if
    /// that class has no memory). On failure returns null and the old
    /// block is untouched.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let h = self.raw();
        if h.is_null() {
            return ptr::null_mut();
        }
        let align = layout.align();
        // kheap_realloc's result has kheap's default alignment, and a large
        // block's (a page) when the new size is above MAX_CLASS; in place it
        // keeps the block's address.
        if align <= MIN_ALIGN || (align <= PAGE_SIZE && new_size > MAX_CLASS) {
            if new_size == 0 {
                // kheap_realloc(p, 0) frees; GlobalAlloc wants a block.
                let q = self.alloc(Layout::from_size_align_unchecked(0, align));
                if !q.is_null() {
                    ffi::kheap_free(h, ptr as *mut c_void);
                }
                return q;
            }
            return ffi::kheap_realloc(h, ptr as *mut c_void, new_size) as *mut u8;
        }
        // Over-aligned and small: as kheap_realloc, the block stays only
        // where the new size's block would be no smaller, or where a
        // shrink finds no memory for one.
        let usable = ffi::kheap_usable_size(h, ptr as *const c_void);
        let q = ffi::kheap_alloc_aligned(h, new_size, align) as *mut u8;
        if new_size <= usable
            && (q.is_null() || ffi::kheap_usable_size(h, q as *const c_void) >= usable)
        {
            if !q.is_null() {
                ffi::kheap_free(h, q as *mut c_void);
            }
            return ptr;
        }
        if !q.is_null() {
            ptr::copy_nonoverlapping(ptr, q, core::cmp::min(layout.size(), new_size));
            ffi::kheap_free(h, ptr as *mut c_void);
        }
        q
    }
}
