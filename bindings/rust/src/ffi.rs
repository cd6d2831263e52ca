//! The C API of kheap (`include/kheap.h`), as far as the crate uses it.
//! Layouts follow the header exactly; char pointers are `*const u8`.
//! build.rs checks the two structures' field lists (names, order, sizes,
//! nothing after the last) against the header with the C compiler, so a
//! change there stops the build instead of corrupting memory.

#![allow(non_camel_case_types, dead_code)]

use core::ffi::c_void;

/// `kheap_t`: opaque, lives inside its first region.
#[repr(C)]
pub struct kheap_t {
    _opaque: [u8; 0],
}

/// `kheap_cache_t`: opaque, lives inside its heap.
#[repr(C)]
pub struct kheap_cache_t {
    _opaque: [u8; 0],
}

/// `KHEAP_NAME_MAX`.
pub const NAME_MAX: usize = 24;
/// `KHEAP_MAX_CLASS`.
pub const MAX_CLASS: usize = 32768;
/// `KHEAP_MAX_CPUS` (include/kheap_config.h).
pub const MAX_CPUS: usize = 64;

/// `struct kheap_stats`.
#[repr(C)]
#[derive(Default, Clone, Copy)]
pub struct kheap_stats {
    pub allocated_bytes: u64,
    pub freed_bytes: u64,
    pub used_bytes: usize,
    pub peak_bytes: usize,
    pub allocation_count: u64,
    pub free_count: u64,
    pub heap_total: usize,
    pub heap_used: usize,
    pub heap_free: usize,
    pub failed_count: u64,
    pub metadata_bytes: usize,
    pub slab_bytes: usize,
    pub large_bytes: usize,
    pub region_count: usize,
    pub large_count: usize,
    pub dirty_bytes: usize,
    pub magazine_bytes: usize,
    pub depot_bytes: usize,
    pub empty_slab_bytes: usize,
    pub purged_bytes: usize,
    pub purged_total: u64,
    pub decay_epochs: u64,
    pub shrink_passes: u64,
    pub nolock_fails: u64,
    pub nolock_deferred: u64,
    pub sampled_count: u64,
    pub sampled_live: usize,
    pub large_cache_bytes: usize,
}

/// `struct kheap_cache_info`.
#[repr(C)]
#[derive(Default, Clone, Copy)]
pub struct kheap_cache_info {
    pub name: [u8; NAME_MAX],
    pub active_objs: usize,
    pub num_objs: usize,
    pub objsize: usize,
    pub objperslab: usize,
    pub pagesperslab: usize,
    pub active_slabs: usize,
    pub num_slabs: usize,
    pub allocs: u64,
    pub frees: u64,
    pub cached_objs: usize,
    pub cpu_hits: u64,
    pub cpu_misses: u64,
    pub depot_objs: usize,
    pub empty_slabs: usize,
    pub bulk_allocs: u64,
    pub bulk_frees: u64,
    pub reserve_allocs: u64,
    pub shrink_calls: u64,
    pub nolock_allocs: u64,
    pub nolock_frees: u64,
    pub nolock_fails: u64,
    pub nolock_deferred: u64,
    pub mag_cap: u32,
    pub depot_max: u32,
}

/// `struct kheap_report` (include/kheap_port.h).
#[repr(C)]
pub struct kheap_report {
    pub kind: i32,
    pub reason: *const u8,
    pub addr: *const c_void,
    pub cache: *const u8,
    pub function: *const u8,
    pub size: usize,
    pub where_: *const c_void,
}

/// `kheap_lock_t`: KHEAP_LOCK_WORDS (8) words.
#[repr(C)]
pub struct kheap_lock_t {
    pub word: [usize; 8],
}

pub type kheap_ctor_fn = Option<unsafe extern "C" fn(obj: *mut c_void)>;

extern "C" {
    pub fn kheap_strerror(err: i32) -> *const u8;
    pub fn kheap_init(heap: *mut *mut kheap_t, base: *mut c_void, size: usize) -> i32;
    pub fn kheap_add_region(heap: *mut kheap_t, base: *mut c_void, size: usize) -> i32;
    pub fn kheap_set_growable(heap: *mut kheap_t, grow_bytes: usize) -> i32;
    pub fn kheap_fini(heap: *mut kheap_t);
    pub fn kheap_cpu_flush(cpu: u32);
    pub fn kheap_end(heap: *const kheap_t) -> usize;
    pub fn kheap_alloc(heap: *mut kheap_t, size: usize) -> *mut c_void;
    pub fn kheap_alloc_aligned(heap: *mut kheap_t, size: usize, align: usize) -> *mut c_void;
    pub fn kheap_calloc(heap: *mut kheap_t, n: usize, size: usize) -> *mut c_void;
    pub fn kheap_realloc(heap: *mut kheap_t, ptr: *mut c_void, size: usize) -> *mut c_void;
    pub fn kheap_free(heap: *mut kheap_t, ptr: *mut c_void);
    pub fn kheap_usable_size(heap: *mut kheap_t, ptr: *const c_void) -> usize;
    pub fn kheap_cache_create(
        heap: *mut kheap_t,
        name: *const u8,
        size: usize,
        align: usize,
        ctor: kheap_ctor_fn,
        dtor: kheap_ctor_fn,
    ) -> *mut kheap_cache_t;
    pub fn kheap_cache_alloc(cache: *mut kheap_cache_t) -> *mut c_void;
    pub fn kheap_cache_free(cache: *mut kheap_cache_t, obj: *mut c_void);
    pub fn kheap_cache_shrink(cache: *mut kheap_cache_t) -> usize;
    pub fn kheap_cache_destroy(cache: *mut kheap_cache_t) -> i32;
    pub fn kheap_reclaim(heap: *mut kheap_t) -> usize;
    pub fn kheap_cpu_poll(heap: *mut kheap_t) -> usize;
    pub fn kheap_get_stats(heap: *mut kheap_t, out: *mut kheap_stats);
    pub fn kheap_largest_free(heap: *mut kheap_t) -> usize;
    pub fn kheap_slabinfo(heap: *mut kheap_t, rows: *mut kheap_cache_info, max: usize) -> usize;
    pub fn kheap_cache_info(cache: *mut kheap_cache_t, out: *mut kheap_cache_info);
    pub fn kheap_check(heap: *mut kheap_t, addr: *mut *const c_void) -> *const u8;
}

/// The bytes of a NUL-terminated constant C string (kheap's messages are
/// ASCII). Null gives "".
///
/// # Safety
/// `s` is null or points to a NUL-terminated string that lives forever.
pub unsafe fn static_str(s: *const u8) -> &'static str {
    if s.is_null() {
        return "";
    }
    let mut n = 0;
    while *s.add(n) != 0 {
        n += 1;
    }
    let bytes = core::slice::from_raw_parts(s, n);
    core::str::from_utf8(bytes).unwrap_or("(message not UTF-8)")
}
