//! The method shapes of the `tokio-file` crate (0.11), for code written against it.
//!
//! `tokio-file` runs POSIX AIO on FreeBSD only. Its `AioFileExt` methods return
//! `io::Result<impl Future>`: an error found before anything is submitted comes out of the
//! call itself, and the future then resolves to the operation's result. This module's
//! [`AioFileExt`] has those shapes, on Linux (io_uring, kernel AIO or threads) as on FreeBSD,
//! so such code builds here by changing one line:
//!
//! ```text
//! use tokio_file::AioFileExt;              // before
//! use mio_aio::tokio::compat::AioFileExt;  // after
//! ```
//!
//! The future types have the same names as `tokio-file`'s ([`ReadAt`], [`ReadvAt`],
//! [`WriteAt`], [`WritevAt`], [`SyncAll`]); they are this crate's [`AioFut`],
//! which follows the rules of the [parent module](super) (submitted at the first poll,
//! cancelled and waited for when dropped).
//!
//! ```
//! use std::io::{IoSlice, IoSliceMut};
//! use mio_aio::tokio::compat::AioFileExt;
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> std::io::Result<()> {
//!     let path = std::env::temp_dir().join(format!("mio-aio-compat-{}", std::process::id()));
//!     let file = tokio::fs::File::options()
//!         .read(true)
//!         .write(true)
//!         .create(true)
//!         .truncate(true)
//!         .open(&path)
//!         .await?;
//!     // The first `?` is an error found before submission, the second the operation's own.
//!     let bufs = [IoSlice::new(b"abcdef"), IoSlice::new(b"123456")];
//!     assert_eq!(file.writev_at(&bufs, 0)?.await?, 12);
//!     // `tokio::fs::File` has a `sync_all` of its own (on tokio's blocking pool): name the
//!     // trait to get this one.
//!     AioFileExt::sync_all(&file)?.await?;
//!
//!     let mut buf = [0u8; 4];
//!     assert_eq!(file.read_at(&mut buf, 2)?.await?, 4);
//!     assert_eq!(&buf, b"cdef");
//!
//!     let (mut a, mut b) = ([0u8; 3], [0u8; 3]);
//!     let mut bufs = [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)];
//!     assert_eq!(file.readv_at(&mut bufs, 3)?.await?, 6);
//!     assert_eq!((&a, &b), (b"def", b"123"));
//!
//!     // Writing through a read-only descriptor fails at once: nothing is submitted.
//!     let read_only = std::fs::File::open(&path)?;
//!     let early = read_only.write_at(b"x", 0).map(drop).unwrap_err();
//!     assert_eq!(early.raw_os_error(), Some(9)); // EBADF
//!     std::fs::remove_file(&path)
//! }
//! ```
//!
//! # What fails early
//!
//! Each method checks, without submitting anything, and returns `Err` for:
//!
//! * a call outside a tokio runtime (where the future could never be polled to completion);
//! * a descriptor that cannot do the operation: reading from a write-only one, or writing to a
//!   read-only one (`EBADF`), or, on Linux, an `O_PATH` descriptor (`EBADF`);
//! * a range that ends beyond `i64::MAX` (offset plus length: the kernel's file offsets are
//!   signed), and more than 1024 buffers for `readv_at`/`writev_at` (`EINVAL`).
//!
//! Everything else (a full disk, an I/O error, a pipe that refuses `fsync`) is the future's
//! result, as with `tokio-file`.
//!
//! # Differences from `tokio-file`
//!
//! * [`AioFileExt::readv_at`] keeps the list of buffers borrowed until the future is done
//!   (`&'a mut [IoSliceMut<'a>]`), so that the buffers cannot be written through the list
//!   while the kernel fills them. Code that lets the list go out of scope only after the
//!   future (as `tokio-file`'s own tests do) compiles unchanged.
//! * `tokio-file`'s deprecated `File` type is not provided: call these methods on
//!   `std::fs::File`, `tokio::fs::File` or any other [`AsFd`] type.
//! * With `std::fs::File`, `std::os::unix::fs::FileExt` also has `read_at` and `write_at`; if
//!   both traits are in scope, name ours: `AioFileExt::read_at(&file, buf, offset)`.

use std::{
    io::{self, IoSlice, IoSliceMut},
    os::fd::{AsFd, AsRawFd, BorrowedFd},
};

use nix::errno::Errno;

use super::{check_runtime, AioFut};
pub use super::{ReadAt, ReadvAt, SyncAll, WriteAt, WritevAt};
use crate::AioFsyncMode;

/// The most buffers one `readv_at` or `writev_at` takes (`IOV_MAX` on Linux and FreeBSD).
const MAX_BUFFERS: usize = 1024;

/// What an operation does with its descriptor.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum Access {
    Read,
    Write,
    Sync,
}

/// The checks made before an operation is built (see the module documentation).
///
/// `lens` are the lengths of the buffers.
fn check_start(
    fd: BorrowedFd<'_>,
    access: Access,
    offset: u64,
    mut lens: impl ExactSizeIterator<Item = usize>,
) -> io::Result<()> {
    check_runtime()?;
    if lens.len() > MAX_BUFFERS {
        return Err(Errno::EINVAL.into());
    }
    // The kernel refuses a range whose end does not fit its signed file offset.
    let end = lens.try_fold(offset, |end, len| end.checked_add(len as u64));
    if end.is_none_or(|end| i64::try_from(end).is_err()) {
        return Err(Errno::EINVAL.into());
    }
    // SAFETY: F_GETFL only reads the status flags of `fd`, which is open: it is borrowed.
    let flags = syscall!(fcntl(fd.as_raw_fd(), libc::F_GETFL))?;
    #[cfg(target_os = "linux")]
    if flags & libc::O_PATH != 0 {
        return Err(Errno::EBADF.into());
    }
    let mode = flags & libc::O_ACCMODE;
    let refused = match access {
        Access::Read => mode == libc::O_WRONLY,
        Access::Write => mode == libc::O_RDONLY,
        Access::Sync => false,
    };
    if refused {
        return Err(Errno::EBADF.into());
    }
    Ok(())
}

/// Asynchronous positioned I/O with `tokio-file` 0.11's method shapes: each method returns
/// `Ok(future)`, or the error found before submission (see the [module documentation](self)).
///
/// Implemented for every [`AsFd`] type.
pub trait AioFileExt: AsFd {
    /// Reads into `buf` from `offset`, like `pread`; the future resolves to the number of
    /// bytes read (0 at or beyond the end of the file).
    fn read_at<'a>(&'a self, buf: &'a mut [u8], offset: u64) -> io::Result<ReadAt<'a>> {
        check_start(self.as_fd(), Access::Read, offset, [buf.len()].into_iter())?;
        Ok(AioFut::new(crate::ReadAt::read_at(
            self.as_fd(),
            offset,
            buf,
            0,
        )))
    }

    /// Reads into several buffers, in order, from `offset`, like `preadv`; the future resolves
    /// to the total number of bytes read. `bufs` stays borrowed until the future is done or
    /// dropped.
    fn readv_at<'a>(
        &'a self,
        bufs: &'a mut [IoSliceMut<'a>],
        offset: u64,
    ) -> io::Result<ReadvAt<'a>> {
        check_start(
            self.as_fd(),
            Access::Read,
            offset,
            bufs.iter().map(|b| b.len()),
        )?;
        Ok(AioFut::new(crate::ReadvAt::readv_at(
            self.as_fd(),
            offset,
            bufs,
            0,
        )))
    }

    /// Writes `buf` at `offset`, like `pwrite`; the future resolves to the number of bytes
    /// written.
    fn write_at<'a>(&'a self, buf: &'a [u8], offset: u64) -> io::Result<WriteAt<'a>> {
        check_start(self.as_fd(), Access::Write, offset, [buf.len()].into_iter())?;
        Ok(AioFut::new(crate::WriteAt::write_at(
            self.as_fd(),
            offset,
            buf,
            0,
        )))
    }

    /// Writes several buffers, in order, at `offset`, like `pwritev`; the future resolves to
    /// the total number of bytes written.
    fn writev_at<'a>(&'a self, bufs: &[IoSlice<'a>], offset: u64) -> io::Result<WritevAt<'a>> {
        check_start(
            self.as_fd(),
            Access::Write,
            offset,
            bufs.iter().map(|b| b.len()),
        )?;
        Ok(AioFut::new(crate::WritevAt::writev_at(
            self.as_fd(),
            offset,
            bufs,
            0,
        )))
    }

    /// Flushes the file's data and metadata to storage, like `fsync`. `std::fs::File` and
    /// `tokio::fs::File` have an inherent `sync_all`: call this one as
    /// `AioFileExt::sync_all(&file)`.
    fn sync_all(&self) -> io::Result<SyncAll<'_>> {
        check_start(self.as_fd(), Access::Sync, 0, std::iter::empty())?;
        Ok(AioFut::new(crate::Fsync::fsync(
            self.as_fd(),
            AioFsyncMode::O_SYNC,
            0,
        )))
    }
}

impl<F: AsFd + ?Sized> AioFileExt for F {}
