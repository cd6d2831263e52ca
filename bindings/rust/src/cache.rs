//! Typed object caches over `kheap_cache_*`.

use core::ffi::c_void;
use core::fmt;
use core::marker::PhantomData;
use core::mem::{align_of, size_of};
use core::ops::{Deref, DerefMut};
use core::ptr::{self, NonNull};

use crate::{ffi, Error, KHeap, SlabInfo};

/// A cache of constructed `T`s (Bonwick's kmem_cache, kheap's
/// `kheap_cache_*`).
///
/// The constructor runs once per slot: the first time kheap carves that
/// slot from a slab. A [`CacheBox`] dropped goes back to the cache *as it
/// is*, without dropping the `T`, and the next [`alloc`](ObjectCache::alloc)
/// may hand that same object out again: put an object back in its
/// constructed state before dropping its handle if later users must find
/// it so (Bonwick's rule). `T`'s destructor runs when kheap gives the slot's
/// slab back to the page layer ([`shrink`](ObjectCache::shrink), or when
/// the cache is dropped), and must not panic.
///
/// Each slot holds a word before the `T` that says whether the `T` is
/// constructed; kheap never writes to a free object, so it survives.
pub struct ObjectCache<'h, T, F = fn() -> T>
where
    F: Fn() -> T,
{
    cache: NonNull<ffi::kheap_cache_t>,
    ctor: F,
    _heap: PhantomData<&'h KHeap>,
    _t: PhantomData<T>,
}

// SAFETY: kheap's caches are thread-safe; objects move between threads
// (T: Send), and the constructor is called from any thread (F: Sync).
unsafe impl<'h, T: Send, F: Fn() -> T + Sync> Sync for ObjectCache<'h, T, F> {}
// SAFETY: as above; dropping the cache on another thread drops Ts there.
unsafe impl<'h, T: Send, F: Fn() -> T + Send> Send for ObjectCache<'h, T, F> {}

const UNCONSTRUCTED: usize = 0;
const CONSTRUCTED: usize = 0x6b68_6561; // "khea"

/// Bytes from the slot's start to the T: the flag word, padded to T's
/// alignment.
const fn header<T>() -> usize {
    let a = align_of::<T>();
    if a > size_of::<usize>() {
        a
    } else {
        size_of::<usize>()
    }
}

/// kheap's constructor for every slot: not yet a T.
unsafe extern "C" fn mark_unconstructed(obj: *mut c_void) {
    ptr::write(obj as *mut usize, UNCONSTRUCTED);
}

/// kheap's destructor: drop the T if the slot holds one.
unsafe extern "C" fn drop_slot<T>(obj: *mut c_void) {
    let flag = obj as *mut usize;
    if ptr::read(flag) == CONSTRUCTED {
        ptr::write(flag, UNCONSTRUCTED);
        ptr::drop_in_place((obj as *mut u8).add(header::<T>()) as *mut T);
    }
}

impl<'h, T: Default> ObjectCache<'h, T, fn() -> T> {
    /// A cache whose objects are built with `T::default()`.
    pub fn with_default(heap: &'h KHeap, name: &str) -> Result<Self, Error> {
        ObjectCache::new(heap, name, T::default as fn() -> T)
    }
}

impl<'h, T, F: Fn() -> T> ObjectCache<'h, T, F> {
    /// A cache named `name` (truncated to 23 bytes) in `heap`, whose
    /// objects are built by `ctor`, once per slot.
    ///
    /// Errors: [`Error::NotInitialised`]; [`Error::CacheCreate`] when the
    /// slot (the `T` plus a word) is above [`MAX_CLASS`](crate::MAX_CLASS)
    /// bytes, `T`'s alignment is above a page, or the heap has no room.
    pub fn new(heap: &'h KHeap, name: &str, ctor: F) -> Result<Self, Error> {
        let h = heap.initialised()?;
        let mut cname = [0u8; ffi::NAME_MAX];
        let n = core::cmp::min(name.len(), ffi::NAME_MAX - 1);
        cname[..n].copy_from_slice(&name.as_bytes()[..n]);
        let size = header::<T>() + size_of::<T>();
        // SAFETY: h is an initialised heap; cname is NUL-terminated; the
        // constructor and destructor only touch the slot's own bytes.
        let c = unsafe {
            ffi::kheap_cache_create(
                h,
                cname.as_ptr(),
                size,
                header::<T>(),
                Some(mark_unconstructed),
                Some(drop_slot::<T>),
            )
        };
        match NonNull::new(c) {
            Some(cache) => Ok(ObjectCache {
                cache,
                ctor,
                _heap: PhantomData,
                _t: PhantomData,
            }),
            None => Err(Error::CacheCreate),
        }
    }

    /// An object: one the cache holds constructed, or a new slot built by
    /// the constructor now. `None` when the heap is out of memory. O(1)
    /// plus at most one construction. If the constructor panics, the slot
    /// goes back to the cache unconstructed.
    pub fn alloc(&self) -> Option<CacheBox<'_, T, F>> {
        // SAFETY: self.cache is a live cache.
        let slot = unsafe { ffi::kheap_cache_alloc(self.cache.as_ptr()) } as *mut u8;
        let slot = NonNull::new(slot)?;
        let flag = slot.as_ptr() as *mut usize;
        // SAFETY: the slot is ours until freed; its first word is the flag.
        unsafe {
            if ptr::read(flag) != CONSTRUCTED {
                let guard = FreeOnUnwind(self.cache.as_ptr(), slot.as_ptr());
                let value = (self.ctor)();
                core::mem::forget(guard);
                ptr::write(slot.as_ptr().add(header::<T>()) as *mut T, value);
                ptr::write(flag, CONSTRUCTED);
            }
        }
        Some(CacheBox { slot, cache: self })
    }

    /// Give the cache's empty slabs back to the page layer, dropping their
    /// objects; returns the bytes given back.
    pub fn shrink(&self) -> usize {
        // SAFETY: self.cache is a live cache.
        unsafe { ffi::kheap_cache_shrink(self.cache.as_ptr()) }
    }

    /// The cache's slabinfo row.
    pub fn info(&self) -> SlabInfo {
        let mut r = ffi::kheap_cache_info::default();
        // SAFETY: self.cache is a live cache; r is a valid out pointer.
        unsafe { ffi::kheap_cache_info(self.cache.as_ptr(), &mut r) };
        SlabInfo::from_ffi(&r)
    }
}

struct FreeOnUnwind(*mut ffi::kheap_cache_t, *mut u8);

impl Drop for FreeOnUnwind {
    fn drop(&mut self) {
        // SAFETY: the slot came from this cache and is unconstructed.
        unsafe { ffi::kheap_cache_free(self.0, self.1 as *mut c_void) };
    }
}

impl<'h, T, F: Fn() -> T> Drop for ObjectCache<'h, T, F> {
    /// Destroys the cache: every slab goes back to the heap, each
    /// constructed object dropped. No handle can be alive (they borrow the
    /// cache), so kheap's destroy cannot find the cache busy.
    fn drop(&mut self) {
        // SAFETY: self.cache is a live cache with no objects allocated.
        let r = unsafe { ffi::kheap_cache_destroy(self.cache.as_ptr()) };
        debug_assert_eq!(r, 0, "kheap_cache_destroy");
    }
}

impl<'h, T, F: Fn() -> T> fmt::Debug for ObjectCache<'h, T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectCache").field("info", &self.info()).finish()
    }
}

/// An object of an [`ObjectCache`], owned like a `Box`: it derefs to the
/// `T` and goes back to its cache when dropped (the `T` stays constructed
/// in the cache; see [`ObjectCache`]).
pub struct CacheBox<'c, T, F: Fn() -> T = fn() -> T> {
    slot: NonNull<u8>,
    cache: &'c ObjectCache<'c, T, F>,
}

// SAFETY: a CacheBox owns its T; freeing to the cache is thread-safe.
unsafe impl<'c, T: Send, F: Fn() -> T + Sync> Send for CacheBox<'c, T, F> {}
// SAFETY: &CacheBox gives only &T.
unsafe impl<'c, T: Sync, F: Fn() -> T + Sync> Sync for CacheBox<'c, T, F> {}

impl<'c, T, F: Fn() -> T> CacheBox<'c, T, F> {
    /// The object's address (for statistics and tests).
    pub fn as_ptr(this: &Self) -> *const T {
        // SAFETY: the T lies header bytes into the slot.
        unsafe { this.slot.as_ptr().add(header::<T>()) as *const T }
    }
}

impl<'c, T, F: Fn() -> T> Deref for CacheBox<'c, T, F> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the slot holds a constructed T that this handle owns.
        unsafe { &*CacheBox::as_ptr(self) }
    }
}

impl<'c, T, F: Fn() -> T> DerefMut for CacheBox<'c, T, F> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for deref, and the handle is borrowed mutably.
        unsafe { &mut *(CacheBox::as_ptr(self) as *mut T) }
    }
}

impl<'c, T, F: Fn() -> T> Drop for CacheBox<'c, T, F> {
    fn drop(&mut self) {
        // SAFETY: the slot came from this cache and is allocated.
        unsafe { ffi::kheap_cache_free(self.cache.cache.as_ptr(), self.slot.as_ptr() as *mut c_void) };
    }
}

impl<'c, T: fmt::Debug, F: Fn() -> T> fmt::Debug for CacheBox<'c, T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}
