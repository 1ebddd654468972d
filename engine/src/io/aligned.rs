//! [`AlignedBytes`]: a fixed-capacity byte buffer whose start is aligned to [`BUFFER_ALIGN`].
//!
//! `O_DIRECT` writes need a buffer address aligned to the device's logical block size; a `Vec<u8>`
//! only promises alignment 1. Every pool buffer ([`super::IoBuf`]) is allocated here, so any queue
//! may hand its buffers to the kernel for a direct write. The buffer never reallocates: its
//! address is stable for the whole of its life, which registered io_uring buffers rely on.
//!
//! This is the engine's aligned-buffer helper, one of the few places allowed `unsafe`.

use std::alloc::{self, Layout};
use std::fmt;
use std::ptr::NonNull;

/// Alignment of every pool buffer: 4096 covers the logical block size of every common device
/// (512 or 4096) and the page size, so the same buffers serve buffered and direct writes.
pub const BUFFER_ALIGN: usize = 4096;

/// A byte buffer of fixed capacity, aligned to [`BUFFER_ALIGN`]. Bytes `[0, len)` are initialized.
pub struct AlignedBytes {
    ptr: NonNull<u8>,
    len: usize,
    capacity: usize,
}

// SAFETY: the buffer owns its allocation outright (no aliasing pointer leaves it except through
// `&self`/`&mut self` borrows, or `base_ptr` whose users uphold their own contracts), like a
// `Vec<u8>`, which is `Send` and `Sync`.
#[allow(unsafe_code)]
unsafe impl Send for AlignedBytes {}
// SAFETY: as above; shared access only reads.
#[allow(unsafe_code)]
unsafe impl Sync for AlignedBytes {}

impl AlignedBytes {
    /// An empty buffer that can hold `capacity` bytes.
    ///
    /// # Panics
    /// If `capacity` rounded up to the alignment overflows `isize`, or the allocation fails (as
    /// `Vec::with_capacity` would).
    pub fn with_capacity(capacity: usize) -> AlignedBytes {
        if capacity == 0 {
            // A dangling, aligned pointer: nothing is ever read or written through it.
            let ptr = NonNull::new(BUFFER_ALIGN as *mut u8).expect("non-zero constant");
            return AlignedBytes {
                ptr,
                len: 0,
                capacity,
            };
        }
        let layout = Self::layout(capacity);
        #[allow(unsafe_code)]
        // SAFETY: `layout` has a non-zero size (capacity > 0) and a valid power-of-two alignment.
        let raw = unsafe { alloc::alloc(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout);
        };
        AlignedBytes {
            ptr,
            len: 0,
            capacity,
        }
    }

    fn layout(capacity: usize) -> Layout {
        Layout::from_size_align(capacity, BUFFER_ALIGN).expect("buffer capacity fits in isize")
    }

    /// The initialized bytes.
    pub fn as_slice(&self) -> &[u8] {
        #[allow(unsafe_code)]
        // SAFETY: `ptr` is valid for `capacity >= len` bytes and `[0, len)` is initialized; the
        // borrow of `self` keeps the allocation alive and unaliased by writers.
        unsafe {
            std::slice::from_raw_parts(self.ptr.as_ptr(), self.len)
        }
    }

    /// Bytes initialized.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if no byte is initialized.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Fixed capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Appends bytes.
    ///
    /// # Panics
    /// If they do not fit.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        assert!(
            bytes.len() <= self.capacity - self.len,
            "AlignedBytes overflow: {} bytes into {} remaining",
            bytes.len(),
            self.capacity - self.len
        );
        #[allow(unsafe_code)]
        // SAFETY: the destination `[len, len + bytes.len())` lies within the allocation (checked
        // above), and `bytes` cannot overlap it: `&mut self` guarantees no other borrow of it.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.ptr.as_ptr().add(self.len),
                bytes.len(),
            );
        }
        self.len += bytes.len();
    }

    /// Appends `count` zero bytes.
    ///
    /// # Panics
    /// If they do not fit.
    pub fn extend_zeros(&mut self, count: usize) {
        assert!(
            count <= self.capacity - self.len,
            "AlignedBytes overflow: {count} zeros into {} remaining",
            self.capacity - self.len
        );
        #[allow(unsafe_code)]
        // SAFETY: `[len, len + count)` lies within the allocation (checked above).
        unsafe {
            std::ptr::write_bytes(self.ptr.as_ptr().add(self.len), 0, count);
        }
        self.len += count;
    }

    /// The initialized bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        #[allow(unsafe_code)]
        // SAFETY: `ptr` is valid for `capacity >= len` bytes and `[0, len)` is initialized;
        // `&mut self` makes this the only borrow of the allocation.
        unsafe {
            std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len)
        }
    }

    /// Keeps the first `len` bytes (no-op if there are fewer).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Forgets the contents, keeping the allocation.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Start of the allocation.
    pub fn base_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for AlignedBytes {
    fn drop(&mut self) {
        if self.capacity == 0 {
            return;
        }
        #[allow(unsafe_code)]
        // SAFETY: `ptr` came from `alloc::alloc` with exactly this layout and is freed once.
        unsafe {
            alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.capacity));
        }
    }
}

impl fmt::Debug for AlignedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlignedBytes")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_and_keep_their_bytes() {
        for capacity in [0, 1, 100, 4096, 4097, 1 << 20] {
            let mut b = AlignedBytes::with_capacity(capacity);
            assert_eq!(
                b.base_ptr() as usize % BUFFER_ALIGN,
                0,
                "capacity={capacity}"
            );
            let data: Vec<u8> = (0..capacity).map(|i| (i * 7) as u8).collect();
            let half = capacity / 2;
            b.extend_from_slice(&data[..half]);
            b.extend_zeros(capacity - half);
            assert_eq!(b.len(), capacity);
            assert_eq!(&b.as_slice()[..half], &data[..half]);
            assert!(b.as_slice()[half..].iter().all(|&x| x == 0));
            b.clear();
            assert!(b.is_empty());
        }
    }

    #[test]
    #[should_panic(expected = "overflow")]
    fn overflow_panics() {
        let mut b = AlignedBytes::with_capacity(4);
        b.extend_from_slice(b"hello");
    }
}
