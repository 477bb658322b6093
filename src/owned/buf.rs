//! The buffer traits of the owned-buffer operations, and their implementations for the
//! standard heap buffers.

/// A buffer that an owned operation can hand to the kernel to write out (`write_at`,
/// `writev_at`): its first [`bytes_len`](IoBuf::bytes_len) bytes are written.
///
/// # Safety
///
/// An implementation promises that, for as long as the value exists and is not used through
/// `&mut self` (nor through interior mutability):
///
/// * the `bytes_len()` bytes at `stable_ptr()` are initialized and readable, and belong to
///   this value (or are `'static` and immutable);
/// * *moving* the value does not move those bytes nor change `stable_ptr()` or `bytes_len()`:
///   they live on the heap (or in static memory), not inside the value itself. `Vec<u8>` and
///   `Box<[u8]>` qualify; `[u8; N]` does not;
/// * they are released only when the value is dropped.
///
/// The operations rely on this to let the kernel read the bytes while the value sits, moved,
/// inside the operation (or, after the operation was dropped, inside the crate's reaper).
pub unsafe trait IoBuf: Send + 'static {
    /// Where the bytes start.
    fn stable_ptr(&self) -> *const u8;
    /// How many bytes there are: the length of the buffer (not its capacity).
    fn bytes_len(&self) -> usize;
}

/// A buffer that an owned operation can hand to the kernel to fill (`read_at`, `readv_at`):
/// a read fills at most its [`bytes_len`](IoBuf::bytes_len) bytes, from the start, and the
/// operation's result says how many it filled. The length is not changed: a short read leaves
/// the rest of the buffer as it was.
///
/// # Safety
///
/// As for [`IoBuf`], and in addition the `bytes_len()` bytes at `stable_mut_ptr()` (the same
/// bytes as `stable_ptr()`) may be written through that pointer while the value is not used,
/// and no other value or reference reads or writes them meanwhile.
pub unsafe trait IoBufMut: IoBuf {
    /// Where the bytes start, for writing.
    fn stable_mut_ptr(&mut self) -> *mut u8;
}

// SAFETY: a `Vec`'s elements live in its heap allocation (or at a dangling, never-accessed
// address when empty), which moving the `Vec` does not move; it is freed only on drop.
unsafe impl IoBuf for Vec<u8> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_len(&self) -> usize {
        self.len()
    }
}

// SAFETY: as for `IoBuf`; the `Vec` owns its elements exclusively.
unsafe impl IoBufMut for Vec<u8> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
}

// SAFETY: a `Box<[u8]>` owns a heap allocation (dangling when empty) that moving the box does
// not move; it is freed only on drop.
unsafe impl IoBuf for Box<[u8]> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_len(&self) -> usize {
        self.len()
    }
}

// SAFETY: as for `IoBuf`; the box owns its bytes exclusively.
unsafe impl IoBufMut for Box<[u8]> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
}

// SAFETY: static, immutable bytes never move and are never freed.
unsafe impl IoBuf for &'static [u8] {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_len(&self) -> usize {
        self.len()
    }
}

// SAFETY: as for `&'static [u8]`.
unsafe impl IoBuf for &'static str {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_len(&self) -> usize {
        self.len()
    }
}

// SAFETY: `BytesMut` keeps its bytes in a heap allocation (shared with other handles only for
// ranges *outside* this handle's view, which `split_off` and friends hand out), so moving it
// does not move them, and its view is released only on drop.
#[cfg(feature = "bytes")]
unsafe impl IoBuf for bytes::BytesMut {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_len(&self) -> usize {
        self.len()
    }
}

// SAFETY: as for `IoBuf`; a `BytesMut` has exclusive access to the bytes of its view.
#[cfg(feature = "bytes")]
unsafe impl IoBufMut for bytes::BytesMut {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
}

// SAFETY: `Bytes` points to immutable heap or static memory that moving the handle does not
// move and that stays alive while any handle to it exists.
#[cfg(feature = "bytes")]
unsafe impl IoBuf for bytes::Bytes {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_len(&self) -> usize {
        self.len()
    }
}
