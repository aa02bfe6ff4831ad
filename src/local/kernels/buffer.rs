//! The repacked weights' memory: zeroed, aligned to 2 MiB (from 2 MiB up) and, on Linux, marked
//! for transparent
//! huge pages (`madvise(MADV_HUGEPAGE)`, which takes effect where the system's setting is
//! `madvise` or `always`). Decoding streams every weight once per token; with 4 KiB pages a
//! 1 GB model is 260 000 pages whose translations miss the TLB on the way, with 2 MiB pages
//! about 500.

use std::alloc::{alloc, dealloc, Layout};

/// Alignment of buffers of at least this size: one huge page. Smaller ones are aligned to a
/// cache line (a huge page each would only add address space).
const HUGE: usize = 2 << 20;

/// A zeroed byte buffer of a fixed length (see the module's documentation).
pub struct WeightBuf {
    ptr: std::ptr::NonNull<u8>,
    layout: Layout,
}

// SAFETY: the buffer is plain owned memory, like a `Vec<u8>`.
unsafe impl Send for WeightBuf {}
unsafe impl Sync for WeightBuf {}

impl WeightBuf {
    /// `len` zero bytes, or `None` when the allocation fails or `len` is 0.
    pub fn zeroed(len: usize) -> Option<WeightBuf> {
        if len == 0 {
            return None;
        }
        let align = if len >= HUGE { HUGE } else { 64 };
        let layout = Layout::from_size_align(len, align).ok()?;
        // SAFETY: `layout` has a non-zero size.
        let ptr = std::ptr::NonNull::new(unsafe { alloc(layout) })?;
        // The advice goes before the first write: pages are backed when first touched.
        #[cfg(target_os = "linux")]
        if align == HUGE {
            // SAFETY: the range is this allocation, which starts on a page. Advice only: a
            // failure changes nothing.
            unsafe {
                libc::madvise(ptr.as_ptr().cast(), len, libc::MADV_HUGEPAGE);
            }
        }
        // SAFETY: `len` bytes from `ptr` are this allocation.
        unsafe { std::ptr::write_bytes(ptr.as_ptr(), 0, len) };
        Some(WeightBuf { ptr, layout })
    }
}

impl std::ops::Deref for WeightBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `layout.size()` initialised (zeroed) bytes owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl std::ops::DerefMut for WeightBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as `deref`, borrowed mutably through `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl Drop for WeightBuf {
    fn drop(&mut self) {
        // SAFETY: allocated by `alloc` with this layout.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}
