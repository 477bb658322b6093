//! One asynchronous file operation as a mio event source.

use std::{
    io::{self, IoSlice, IoSliceMut},
    os::fd::BorrowedFd,
    pin::Pin,
};

use mio::{event, Interest, Registry, Token};
use nix::sys::aio::{AioCancelStat, AioFsyncMode};

use crate::sys;

/// Return type of [`Source::read_at`].
pub type ReadAt<'a> = Source<sys::ReadOp<'a>>;
/// Return type of [`Source::readv_at`].
pub type ReadvAt<'a> = Source<sys::ReadvOp<'a>>;
/// Return type of [`Source::fsync`].
pub type Fsync<'a> = Source<sys::FsyncOp<'a>>;
/// Return type of [`Source::write_at`].
pub type WriteAt<'a> = Source<sys::WriteOp<'a>>;
/// Return type of [`Source::writev_at`].
pub type WritevAt<'a> = Source<sys::WritevOp<'a>>;

/// The methods every single-operation [`Source`] has.
///
/// # Example
/// ```
/// use std::{io::Write, os::fd::AsFd};
/// use mio_aio::{Errno, SourceApi, WriteAt};
///
/// let file = tempfile::tempfile().unwrap();
/// let mut op = Box::pin(WriteAt::write_at(file.as_fd(), 0, b"abcdef", 0));
/// // An operation need not be registered: it can also be polled.
/// op.as_mut().submit().unwrap();
/// while op.as_mut().error() == Err(Errno::EINPROGRESS) {
///     std::thread::yield_now();
/// }
/// assert_eq!(op.as_mut().aio_return().unwrap(), 6);
/// ```
pub trait SourceApi {
    /// Return type of [`SourceApi::aio_return`]: the byte count for reads and writes, `()` for
    /// fsync.
    type Output;

    /// Reads the final result of the operation.
    ///
    /// Call it once the operation's event has arrived (or [`SourceApi::in_progress`] is
    /// `false`). Before that it returns `Err(EINPROGRESS)`. After it, the operation may be
    /// submitted again.
    fn aio_return(self: Pin<&mut Self>) -> nix::Result<Self::Output>;

    /// Asks the operating system to cancel the operation.
    ///
    /// The operation's event arrives whether or not it was cancelled, and the answer is true,
    /// as FreeBSD's `aio_cancel` is:
    ///
    /// * [`AioCancelStat::AioCanceled`]: the operation was stopped: its
    ///   [`SourceApi::aio_return`] gives `Err(ECANCELED)`.
    /// * [`AioCancelStat::AioAllDone`]: it had already completed on its own: `aio_return` gives
    ///   its result (bytes, or the error it failed with), not `ECANCELED`. (Cancelling again an
    ///   operation that an earlier `cancel` stopped answers `AioCanceled` on Linux, and
    ///   `AioAllDone` on FreeBSD, as `aio_cancel` does.)
    /// * [`AioCancelStat::AioNotCanceled`]: it is still running and could not be stopped, or its
    ///   fate was not known within a short bounded wait (on Linux, 50 ms: io_uring's cancel of
    ///   a request that a kernel worker is running may still interrupt it). It goes on, and may
    ///   end in any way: normally, with an error, or with `ECANCELED` or `EINTR` if the kernel
    ///   interrupts it. Most file systems cannot cancel a read or write that has started.
    ///
    /// A read or write that waits on a stream (an empty pipe or FIFO, an idle socket, a full
    /// pipe) can always be cancelled, on every backend.
    fn cancel(self: Pin<&mut Self>) -> nix::Result<AioCancelStat>;

    /// Retrieves the status of an operation: `Err(EINPROGRESS)` while in flight, `Ok(())` once it
    /// succeeded, or the error it failed with.
    fn error(self: Pin<&mut Self>) -> nix::Result<()>;

    /// Does this operation currently have any in-kernel state? `true` from a successful
    /// [`SourceApi::submit`] until [`SourceApi::aio_return`] has collected the result (so it
    /// stays `true` after completion; poll [`SourceApi::error`] to see whether it is done).
    fn in_progress(&self) -> bool;

    /// Extra registration method needed by tokio: asks for completion to be delivered to the
    /// kqueue (FreeBSD) or epoll (Linux) instance `kq` with user data `udata`.
    #[cfg(feature = "tokio")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    fn register_raw(&mut self, kq: BorrowedFd, udata: usize);

    /// Extra registration method needed by tokio: undoes [`SourceApi::register_raw`].
    #[cfg(feature = "tokio")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    fn deregister_raw(&mut self);

    /// Starts the I/O operation.
    ///
    /// Register the operation first if its completion should be reported by `Poll::poll`.
    /// Submitting an operation that is already in flight fails with `EBUSY`; a full queue gives
    /// `EAGAIN` (try again once other operations have completed).
    fn submit(self: Pin<&mut Self>) -> nix::Result<()>;
}

/// A mio event source made of one asynchronous file operation.
///
/// The type parameter says which operation it is; use the aliases [`ReadAt`], [`ReadvAt`],
/// [`WriteAt`], [`WritevAt`] and [`Fsync`] and their constructors. After creation, register it
/// with a [`mio::Registry`] (interest [`crate::AIO`]), then [`SourceApi::submit`] it. The
/// registered token is returned by `Poll::poll` exactly once, when the operation is complete.
///
/// `Source` is `!Unpin`: the kernel holds its address while the operation is in flight, so pin it
/// before submitting. Dropping it while in flight cancels the operation and waits for the kernel
/// to release the buffers.
#[derive(Debug)]
pub struct Source<T> {
    inner: T,
    /// Linux's operations could move, but stay `!Unpin` like FreeBSD's (nix's control blocks
    /// are `!Unpin`), so that portable code pins them on both systems.
    #[cfg(target_os = "linux")]
    _pinned: std::marker::PhantomPinned,
}

impl<T> Source<T> {
    pub(crate) fn new(inner: T) -> Self {
        Source {
            inner,
            #[cfg(target_os = "linux")]
            _pinned: std::marker::PhantomPinned,
        }
    }

    pub(crate) fn inner(self: Pin<&mut Self>) -> Pin<&mut T> {
        // SAFETY: `inner` is structurally pinned: `Source` never moves it out, and `Source`'s own
        // drop glue only drops it in place.
        unsafe { self.map_unchecked_mut(|s| &mut s.inner) }
    }
}

impl<T: sys::Operation> SourceApi for Source<T> {
    type Output = T::Output;

    fn aio_return(self: Pin<&mut Self>) -> nix::Result<Self::Output> {
        self.inner().aio_return()
    }

    fn cancel(self: Pin<&mut Self>) -> nix::Result<AioCancelStat> {
        self.inner().cancel()
    }

    fn error(self: Pin<&mut Self>) -> nix::Result<()> {
        self.inner().error()
    }

    fn in_progress(&self) -> bool {
        self.inner.in_progress()
    }

    #[cfg(feature = "tokio")]
    fn register_raw(&mut self, kq: BorrowedFd, udata: usize) {
        self.inner.register_raw(kq, udata)
    }

    #[cfg(feature = "tokio")]
    fn deregister_raw(&mut self) {
        self.inner.deregister_raw()
    }

    fn submit(self: Pin<&mut Self>) -> nix::Result<()> {
        self.inner().submit()
    }
}

#[cfg(all(feature = "tokio", target_os = "linux"))]
impl<T: sys::Operation> Source<T> {
    /// For the tokio layer: see `sys::Operation::attach_notify_fd`.
    #[allow(dead_code)]
    pub(crate) fn attach_notify_fd(&mut self) -> io::Result<sys::NotifyFd> {
        self.inner.attach_notify_fd()
    }
}

/// Checks the interest a source is registered with: it must contain `expected` (as mio-aio 2.0,
/// which accepts `AIO | READABLE` and the like); extra interests are ignored. One without it is
/// a caller's mistake, reported as `InvalidInput` rather than a panic.
pub(crate) fn check_interest(interests: Interest, expected: Interest) -> io::Result<()> {
    if interests.add(expected) == interests {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("mio-aio sources need an interest containing {expected:?}, not {interests:?}"),
        ))
    }
}

impl<T: sys::Operation> event::Source for Source<T> {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        check_interest(interests, crate::AIO)?;
        self.inner.register(registry, token)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        check_interest(interests, crate::AIO)?;
        self.inner.reregister(registry, token)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.inner.deregister(registry)
    }
}

impl<'a> Source<sys::FsyncOp<'a>> {
    /// Asynchronously syncs a file's data (and, with [`AioFsyncMode::O_SYNC`], its metadata) to
    /// storage, like `fsync` (`O_SYNC`) or `fdatasync` (`O_DSYNC`).
    ///
    /// ```
    /// use std::os::fd::AsFd;
    /// use mio_aio::{AioFsyncMode, Errno, Fsync, SourceApi};
    /// let file = tempfile::tempfile().unwrap();
    /// let mut op = Box::pin(Fsync::fsync(file.as_fd(), AioFsyncMode::O_SYNC, 0));
    /// op.as_mut().submit().unwrap();
    /// while op.as_mut().error() == Err(Errno::EINPROGRESS) { std::thread::yield_now(); }
    /// op.as_mut().aio_return().unwrap();
    /// ```
    pub fn fsync(fd: BorrowedFd<'a>, mode: AioFsyncMode, prio: i32) -> Self {
        Source::new(sys::FsyncOp::new(fd, mode, prio))
    }
}

impl<'a> Source<sys::ReadOp<'a>> {
    /// Asynchronously reads from a file at offset `offs` into `buf`, like `pread`.
    ///
    /// `prio` lowers the operation's priority on FreeBSD; Linux ignores it.
    ///
    /// ```
    /// use std::{io::Write, os::fd::AsFd};
    /// use mio_aio::{Errno, ReadAt, SourceApi};
    /// let mut file = tempfile::tempfile().unwrap();
    /// file.write_all(b"abcdef123456").unwrap();
    /// let mut buf = [0u8; 4];
    /// let mut op = Box::pin(ReadAt::read_at(file.as_fd(), 2, &mut buf, 0));
    /// op.as_mut().submit().unwrap();
    /// while op.as_mut().error() == Err(Errno::EINPROGRESS) { std::thread::yield_now(); }
    /// assert_eq!(op.as_mut().aio_return().unwrap(), 4);
    /// drop(op);
    /// assert_eq!(&buf, b"cdef");
    /// ```
    pub fn read_at(fd: BorrowedFd<'a>, offs: u64, buf: &'a mut [u8], prio: i32) -> Self {
        Source::new(sys::ReadOp::new(fd, offs, buf, prio))
    }
}

impl<'a> Source<sys::ReadvOp<'a>> {
    /// Asynchronously reads from a file at offset `offs` into a scatter list of buffers, like
    /// `preadv`. The list itself is copied; the buffers stay borrowed.
    ///
    /// On FreeBSD this requires FreeBSD 13.0 or later.
    ///
    /// The buffers must not be touched through `bufs` (which is only borrowed for this call, as
    /// in mio-aio 2.0) while the operation is in flight: the kernel writes into them.
    ///
    /// ```
    /// use std::{io::{IoSliceMut, Write}, os::fd::AsFd};
    /// use mio_aio::{Errno, ReadvAt, SourceApi};
    /// let mut file = tempfile::tempfile().unwrap();
    /// file.write_all(b"abcdef123456").unwrap();
    /// let (mut a, mut b) = ([0u8; 4], [0u8; 2]);
    /// let mut bufs = [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)];
    /// let mut op = Box::pin(ReadvAt::readv_at(file.as_fd(), 2, &mut bufs, 0));
    /// op.as_mut().submit().unwrap();
    /// while op.as_mut().error() == Err(Errno::EINPROGRESS) { std::thread::yield_now(); }
    /// assert_eq!(op.as_mut().aio_return().unwrap(), 6);
    /// drop(op);
    /// assert_eq!((&a, &b), (b"cdef", b"12"));
    /// ```
    pub fn readv_at(fd: BorrowedFd<'a>, offs: u64, bufs: &mut [IoSliceMut<'a>], prio: i32) -> Self {
        Source::new(sys::ReadvOp::new(fd, offs, bufs, prio))
    }
}

impl<'a> Source<sys::WriteOp<'a>> {
    /// Asynchronously writes `buf` to a file at offset `offs`, like `pwrite`.
    ///
    /// ```
    /// use std::os::fd::AsFd;
    /// use mio_aio::{Errno, SourceApi, WriteAt};
    /// let file = tempfile::tempfile().unwrap();
    /// let mut op = Box::pin(WriteAt::write_at(file.as_fd(), 0, b"abcdef", 0));
    /// op.as_mut().submit().unwrap();
    /// while op.as_mut().error() == Err(Errno::EINPROGRESS) { std::thread::yield_now(); }
    /// assert_eq!(op.as_mut().aio_return().unwrap(), 6);
    /// ```
    pub fn write_at(fd: BorrowedFd<'a>, offs: u64, buf: &'a [u8], prio: i32) -> Self {
        Source::new(sys::WriteOp::new(fd, offs, buf, prio))
    }
}

impl<'a> Source<sys::WritevOp<'a>> {
    /// Asynchronously writes a gather list of buffers to a file at offset `offs`, like
    /// `pwritev`. The list itself is copied; the buffers stay borrowed.
    ///
    /// On FreeBSD this requires FreeBSD 13.0 or later.
    ///
    /// ```
    /// use std::{io::IoSlice, os::fd::AsFd};
    /// use mio_aio::{Errno, SourceApi, WritevAt};
    /// let file = tempfile::tempfile().unwrap();
    /// let bufs = [IoSlice::new(b"abcde"), IoSlice::new(b"fghi")];
    /// let mut op = Box::pin(WritevAt::writev_at(file.as_fd(), 0, &bufs, 0));
    /// op.as_mut().submit().unwrap();
    /// while op.as_mut().error() == Err(Errno::EINPROGRESS) { std::thread::yield_now(); }
    /// assert_eq!(op.as_mut().aio_return().unwrap(), 9);
    /// ```
    pub fn writev_at(fd: BorrowedFd<'a>, offs: u64, bufs: &[IoSlice<'a>], prio: i32) -> Self {
        Source::new(sys::WritevOp::new(fd, offs, bufs, prio))
    }
}
