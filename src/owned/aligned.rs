//! [`AlignedBuf`]: a heap buffer aligned for direct I/O (`O_DIRECT`).

use std::{
    alloc::{self, Layout},
    fmt, io,
    ops::{Deref, DerefMut},
    os::fd::AsFd,
    ptr::NonNull,
};

use super::buf::{IoBuf, IoBufMut};

/// The alignment used where the system does not report one: 4096 bytes, a multiple of the
/// logical block size of nearly every storage device (512 or 4096 bytes).
pub const DEFAULT_DIO_ALIGNMENT: usize = 4096;

/// A zero-filled heap buffer whose address and length are multiples of an alignment, as
/// direct I/O (`O_DIRECT` on Linux and FreeBSD) requires of the memory it transfers.
///
/// [`AlignedBuf::for_file`] asks the system for the file's alignment; [`AlignedBuf::new`]
/// takes one. It derefs to `[u8]` and implements [`IoBuf`] and [`IoBufMut`], so it can be
/// handed to the owned operations (the file offset must be aligned too).
///
/// ```
/// use mio_aio::owned::AlignedBuf;
/// let buf = AlignedBuf::new(1000, 512).unwrap();
/// assert_eq!(buf.len(), 1024); // rounded up to the alignment
/// assert_eq!(buf.as_ptr() as usize % 512, 0);
/// assert!(buf.iter().all(|&b| b == 0));
/// ```
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    align: usize,
}

// SAFETY: an `AlignedBuf` owns its allocation exclusively, like a `Box<[u8]>`; the raw pointer
// is only dereferenced through `&self`/`&mut self`.
unsafe impl Send for AlignedBuf {}
// SAFETY: as above: shared access only reads.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// Allocates `len` bytes, rounded up to a multiple of `align`, at an address that is a
    /// multiple of `align`, all zero.
    ///
    /// Fails with [`io::ErrorKind::InvalidInput`] unless `align` is a power of two, and with
    /// [`io::ErrorKind::OutOfMemory`] if the allocation fails.
    pub fn new(len: usize, align: usize) -> io::Result<Self> {
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_owned());
        if !align.is_power_of_two() {
            return Err(invalid("AlignedBuf: the alignment must be a power of two"));
        }
        let len = len
            .checked_next_multiple_of(align)
            .ok_or_else(|| invalid("AlignedBuf: length too large"))?;
        let layout = Layout::from_size_align(len, align)
            .map_err(|_| invalid("AlignedBuf: length too large"))?;
        let ptr = if len == 0 {
            // No allocation; a well-aligned dangling pointer that is never dereferenced for
            // more than zero bytes.
            NonNull::new(align as *mut u8).expect("a power of two is not zero")
        } else {
            // SAFETY: `layout` has a non-zero size.
            let raw = unsafe { alloc::alloc_zeroed(layout) };
            NonNull::new(raw).ok_or_else(|| {
                io::Error::new(io::ErrorKind::OutOfMemory, "AlignedBuf: allocation failed")
            })?
        };
        Ok(AlignedBuf { ptr, len, align })
    }

    /// Allocates a buffer of at least `len` bytes suited to direct I/O on `file`: aligned to
    /// [`AlignedBuf::alignment_for`]`(file)`.
    ///
    /// ```
    /// use mio_aio::owned::AlignedBuf;
    /// let file = tempfile::tempfile().unwrap();
    /// let buf = AlignedBuf::for_file(&file, 100).unwrap();
    /// assert_eq!(buf.len() % buf.alignment(), 0);
    /// assert!(buf.len() >= 100);
    /// ```
    pub fn for_file(file: &impl AsFd, len: usize) -> io::Result<Self> {
        AlignedBuf::new(len, AlignedBuf::alignment_for(file)?)
    }

    /// The alignment that direct I/O on `file` needs for memory addresses, lengths and file
    /// offsets.
    ///
    /// On Linux this is what `statx` reports (`STATX_DIOALIGN`, Linux 6.1; the larger of the
    /// memory and offset alignments), else for a block device its logical block size
    /// (`BLKSSZGET`), else [`DEFAULT_DIO_ALIGNMENT`]. On FreeBSD it is
    /// [`DEFAULT_DIO_ALIGNMENT`].
    pub fn alignment_for(file: &impl AsFd) -> io::Result<usize> {
        dio_alignment(file)
    }

    /// The alignment of the address and length.
    pub fn alignment(&self) -> usize {
        self.align
    }
}

#[cfg(target_os = "linux")]
fn dio_alignment(file: &impl AsFd) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let fd = file.as_fd().as_raw_fd();
    // SAFETY: `statx` is plain data, for which all zeroes is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open (borrowed), the path is an empty C string used with AT_EMPTY_PATH,
    // and `stx` is a valid place for the result.
    let r = syscall!(statx(
        fd,
        c"".as_ptr(),
        libc::AT_EMPTY_PATH,
        libc::STATX_DIOALIGN | libc::STATX_TYPE,
        &mut stx,
    ));
    if r.is_ok() && stx.stx_mask & libc::STATX_DIOALIGN != 0 && stx.stx_dio_offset_align != 0 {
        let align = stx.stx_dio_offset_align.max(stx.stx_dio_mem_align) as usize;
        return Ok(align.next_power_of_two());
    }
    if r.is_ok() && u32::from(stx.stx_mode) & libc::S_IFMT == libc::S_IFBLK {
        let mut size: libc::c_int = 0;
        // SAFETY: BLKSSZGET writes one int to the pointer given.
        if syscall!(ioctl(fd, libc::BLKSSZGET, &mut size)).is_ok() && size > 0 {
            return Ok((size as usize).next_power_of_two());
        }
    }
    match r {
        // Kernels before 4.11 have no statx: use the default. A bad fd is the caller's error.
        Err(e) if e != nix::errno::Errno::ENOSYS => return Err(e.into()),
        _ => {}
    }
    Ok(DEFAULT_DIO_ALIGNMENT)
}

#[cfg(not(target_os = "linux"))]
fn dio_alignment(file: &impl AsFd) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    // A closed descriptor is still an error, as on Linux.
    // SAFETY: F_GETFD takes no argument and touches no memory.
    syscall!(fcntl(file.as_fd().as_raw_fd(), libc::F_GETFD))?;
    Ok(DEFAULT_DIO_ALIGNMENT)
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.len != 0 {
            // SAFETY: allocated in `new` with exactly this layout (checked there), freed once.
            unsafe {
                alloc::dealloc(
                    self.ptr.as_ptr(),
                    Layout::from_size_align_unchecked(self.len, self.align),
                )
            }
        }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` points to `len` initialized (zeroed at allocation) bytes owned by
        // `self`, or is dangling with `len == 0`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("alignment", &self.align)
            .finish_non_exhaustive()
    }
}

// SAFETY: the bytes are in a heap allocation owned by the value (or none, with length 0),
// which moving the value does not move; freed only on drop.
unsafe impl IoBuf for AlignedBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }
    fn bytes_len(&self) -> usize {
        self.len
    }
}

// SAFETY: as above; the value owns the bytes exclusively.
unsafe impl IoBufMut for AlignedBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}
