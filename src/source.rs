//! One asynchronous file operation as a mio event source.

use std::{
    io::{self, IoSlice, IoSliceMut},
    os::fd::BorrowedFd,
    pin::Pin,
};

use crate::{AioCancelStat, AioFsyncMode};
use mio::{event, Interest, Registry, Token};

use crate::sys;

/// A read into one borrowed buffer, made by [`ReadAt::read_at`]. (`ReadOp` is the platform's
/// private operation type: see [`Source`].)
pub type ReadAt<'a> = Source<sys::ReadOp<'a>>;
/// A read into several borrowed buffers, made by [`ReadvAt::readv_at`]. (`ReadvOp` is the
/// platform's private operation type: see [`Source`].)
pub type ReadvAt<'a> = Source<sys::ReadvOp<'a>>;
/// A sync of a file's data to storage, made by [`Fsync::fsync`]. (`FsyncOp` is the
/// platform's private operation type: see [`Source`].)
pub type Fsync<'a> = Source<sys::FsyncOp<'a>>;
/// A write from one borrowed buffer, made by [`WriteAt::write_at`]. (`WriteOp` is the
/// platform's private operation type: see [`Source`].)
pub type WriteAt<'a> = Source<sys::WriteOp<'a>>;
/// A write from several borrowed buffers, made by [`WritevAt::writev_at`]. (`WritevOp` is
/// the platform's private operation type: see [`Source`].)
pub type WritevAt<'a> = Source<sys::WritevOp<'a>>;

/// The methods every single-operation [`Source`] has.
///
/// The life of an operation: register it with a [`mio::Registry`] (interest [`crate::AIO`]),
/// pin it, [`submit`](SourceApi::submit) it, wait for its token in [`mio::Poll::poll`], then
/// collect the result with [`aio_return`](SourceApi::aio_return). The examples of this crate's
/// methods wait with the small `wait_for` function below (a bounded wait for one token).
///
/// # Example
/// ```
/// use std::os::fd::AsFd;
/// use mio::{Poll, Token};
/// use mio_aio::{SourceApi, WriteAt};
///
/// /// Polls until `token`'s event arrives, for at most 10 seconds.
/// fn wait_for(poll: &mut mio::Poll, token: mio::Token) -> std::io::Result<()> {
///     let mut events = mio::Events::with_capacity(8);
///     let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
///     loop {
///         let left = deadline.saturating_duration_since(std::time::Instant::now());
///         if left.is_zero() {
///             return Err(std::io::ErrorKind::TimedOut.into());
///         }
///         match poll.poll(&mut events, Some(left)) {
///             // io_uring may interrupt the wait: poll again.
///             Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
///             r => r?,
///         }
///         if events.iter().any(|e| e.token() == token) {
///             return Ok(());
///         }
///     }
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let file = tempfile::tempfile()?;
/// let mut poll = Poll::new()?;
/// let mut op = WriteAt::write_at(file.as_fd(), 0, b"abcdef", 0);
/// poll.registry().register(&mut op, Token(0), mio_aio::AIO)?;
/// let mut op = Box::pin(op);
/// op.as_mut().submit()?;
/// wait_for(&mut poll, Token(0))?;
/// assert_eq!(op.as_mut().aio_return()?, 6);
/// # Ok(())
/// # }
/// ```
pub trait SourceApi {
    /// Return type of [`SourceApi::aio_return`]: the byte count for reads and writes, `()` for
    /// fsync.
    type Output;

    /// Reads the final result of the operation.
    ///
    /// Call it once the operation's event has arrived (or once [`SourceApi::error`] no longer
    /// answers `Err(EINPROGRESS)`). Before that it returns `Err(EINPROGRESS)`. Call it once per
    /// submission: it releases the operation's kernel state (so [`SourceApi::in_progress`]
    /// turns `false`), and the operation may then be submitted again.
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
    ///
    /// The crate documentation has a runnable example,
    /// [Cancelling a read that waits](crate#cancelling-a-read-that-waits); the
    /// [guide](crate::guide#cancelling) sums the answers up in a table.
    fn cancel(self: Pin<&mut Self>) -> nix::Result<AioCancelStat>;

    /// Retrieves the status of an operation: `Err(EINPROGRESS)` while in flight, `Ok(())` once it
    /// succeeded, or the error it failed with.
    ///
    /// This is the way to ask "is it done?" without waiting for the event (not
    /// [`SourceApi::in_progress`], which stays `true` until [`SourceApi::aio_return`]).
    fn error(self: Pin<&mut Self>) -> nix::Result<()>;

    /// Does this operation currently have any in-kernel state? `true` from a successful
    /// [`SourceApi::submit`] until [`SourceApi::aio_return`] has collected the result.
    ///
    /// **It stays `true` after the operation has finished** (the meaning it has in mio-aio
    /// 2.0), so `while op.in_progress() {}` never ends. To learn that the operation is done,
    /// wait for its event, or call [`SourceApi::error`], which answers `Err(EINPROGRESS)` only
    /// while it runs. Beware: [`LioCb::in_progress`](crate::LioCb::in_progress) means
    /// something else, "some operation of the batch still runs", and turns `false` when the
    /// batch is done.
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
    /// The event comes once per submission, **also when the operation is done before `submit`
    /// returns** (on Linux, a read of cached data is finished by `submit` itself): always wait
    /// for it.
    ///
    /// Errors: submitting an operation that is already in flight fails with `EBUSY`. `EAGAIN`
    /// means the system has no room now (Linux: 16,384 operations in flight per process by
    /// default, `MIO_AIO_MAX_IN_FLIGHT`; FreeBSD: the `vfs.aio` limits): nothing was started
    /// and no event will come; it is back-pressure, not a failure: submit again once other
    /// operations have completed (see [the guide][back-pressure]).
    /// On FreeBSD, an operation on a pipe fails with `EOPNOTSUPP` unless the sysctl
    /// `vfs.aio.enable_unsafe` is 1.
    ///
    /// [back-pressure]: crate::guide#how-many-operations-may-be-in-flight-eagain-is-back-pressure
    fn submit(self: Pin<&mut Self>) -> nix::Result<()>;
}

/// A mio event source made of one asynchronous file operation.
///
/// Use the aliases [`ReadAt`], [`ReadvAt`], [`WriteAt`], [`WritevAt`] and [`Fsync`] and their
/// constructors ([`ReadAt::read_at`], …). After creation, register it with a
/// [`mio::Registry`] (interest [`crate::AIO`]), pin it, then [`SourceApi::submit`] it. The
/// registered token is returned by `Poll::poll` exactly once per submission, when the
/// operation is complete; then [`SourceApi::aio_return`] gives the result.
///
/// # The type parameter `T`
/// `T` is the platform's own operation type (a read, a write, … as FreeBSD's POSIX AIO or the
/// Linux backends carry it out). These types are private and their trait (`Operation` in the
/// `impl`s below) is sealed: a program never names them, only the aliases above, and cannot
/// add operations of its own. That is why signatures show `Source<ReadOp<'a>>` or
/// `T: Operation` without a link.
///
/// # Pinning and registration
/// `Source` is `!Unpin`: the kernel holds its address while the operation is in flight, so pin
/// it before submitting. Register it *before* pinning: `Registry::register` (and
/// `deregister`) need `&mut Source`, which a `Pin<Box<Source>>` does not give, so
/// `registry.deregister(&mut *op)` on a pinned `op` does not compile. There is no need
/// for it: **dropping the operation deregisters it** (to deregister an operation that was
/// never pinned, call `deregister` as for any source). On Linux each registered operation
/// holds a descriptor (an eventfd) from its first submission until it is dropped: `submit`
/// fails with `EMFILE` when the process has none left (see [the guide][descriptors]).
///
/// [descriptors]: crate::guide#one-descriptor-per-registered-operation-linux
///
/// ```compile_fail
/// use std::os::fd::AsFd;
/// use mio::{Poll, Token};
/// use mio_aio::ReadAt;
/// let file = tempfile::tempfile().unwrap();
/// let poll = Poll::new().unwrap();
/// let mut buf = [0u8; 4];
/// let mut op = ReadAt::read_at(file.as_fd(), 0, &mut buf, 0);
/// poll.registry().register(&mut op, Token(0), mio_aio::AIO).unwrap();
/// let mut op = Box::pin(op);
/// // Does not compile (`Source` is `!Unpin`): drop `op` instead, which deregisters it.
/// poll.registry().deregister(&mut *op).unwrap();
/// ```
///
/// # Dropping and leaking
/// Dropping it while in flight cancels the operation and **blocks** until the kernel has
/// released the buffers. Leaking it in flight (`std::mem::forget`) is unsound: the kernel may
/// then write into memory that is freed; use [`crate::owned`] where an operation may be
/// leaked (see [the guide](crate::guide#leaking-a-borrowed-operation-is-unsound)).
#[derive(Debug)]
pub struct Source<T> {
    inner: T,
    /// Operations outside FreeBSD could move, but stay `!Unpin` like FreeBSD's (nix's control
    /// blocks are `!Unpin`), so that portable code pins them on every system.
    #[cfg(not(target_os = "freebsd"))]
    _pinned: std::marker::PhantomPinned,
}

impl<T> Source<T> {
    pub(crate) fn new(inner: T) -> Self {
        Source {
            inner,
            #[cfg(not(target_os = "freebsd"))]
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

impl<T: sys::Operation> Source<T> {
    /// Asks for cancellation without waiting for the answer: see `sys::Operation`.
    pub(crate) fn request_cancel(self: Pin<&mut Self>) {
        self.inner().request_cancel()
    }
}

#[cfg(all(feature = "tokio", not(target_os = "freebsd")))]
impl<T: sys::Operation> Source<T> {
    /// For the tokio layer: see `sys::Operation::attach_notify_fd`.
    #[allow(dead_code)]
    pub(crate) fn attach_notify_fd(&mut self) -> io::Result<sys::NotifyFd> {
        self.inner.attach_notify_fd()
    }

    /// For the tokio layer: see `sys::Operation::attach_notify_fd_again`.
    #[allow(dead_code)]
    pub(crate) fn attach_notify_fd_again(&mut self, fd: &sys::NotifyFd) -> io::Result<()> {
        self.inner.attach_notify_fd_again(fd)
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
    /// use mio::{Poll, Token};
    /// use mio_aio::{AioFsyncMode, Fsync, SourceApi};
    /// # fn wait_for(poll: &mut mio::Poll, token: mio::Token) -> std::io::Result<()> {
    /// #     let mut events = mio::Events::with_capacity(8);
    /// #     let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    /// #     loop {
    /// #         let left = deadline.saturating_duration_since(std::time::Instant::now());
    /// #         if left.is_zero() {
    /// #             return Err(std::io::ErrorKind::TimedOut.into());
    /// #         }
    /// #         match poll.poll(&mut events, Some(left)) {
    /// #             // io_uring may interrupt the wait: poll again.
    /// #             Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
    /// #             r => r?,
    /// #         }
    /// #         if events.iter().any(|e| e.token() == token) {
    /// #             return Ok(());
    /// #         }
    /// #     }
    /// # }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let file = tempfile::tempfile()?;
    /// let mut poll = Poll::new()?;
    /// let mut op = Fsync::fsync(file.as_fd(), AioFsyncMode::O_SYNC, 0);
    /// poll.registry().register(&mut op, Token(0), mio_aio::AIO)?;
    /// let mut op = Box::pin(op);
    /// op.as_mut().submit()?;
    /// wait_for(&mut poll, Token(0))?; // a bounded wait for the token: see `SourceApi`
    /// op.as_mut().aio_return()?;
    /// # Ok(())
    /// # }
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
    /// use mio::{Poll, Token};
    /// use mio_aio::{ReadAt, SourceApi};
    /// # fn wait_for(poll: &mut mio::Poll, token: mio::Token) -> std::io::Result<()> {
    /// #     let mut events = mio::Events::with_capacity(8);
    /// #     let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    /// #     loop {
    /// #         let left = deadline.saturating_duration_since(std::time::Instant::now());
    /// #         if left.is_zero() {
    /// #             return Err(std::io::ErrorKind::TimedOut.into());
    /// #         }
    /// #         match poll.poll(&mut events, Some(left)) {
    /// #             // io_uring may interrupt the wait: poll again.
    /// #             Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
    /// #             r => r?,
    /// #         }
    /// #         if events.iter().any(|e| e.token() == token) {
    /// #             return Ok(());
    /// #         }
    /// #     }
    /// # }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut file = tempfile::tempfile()?;
    /// file.write_all(b"abcdef123456")?;
    /// let mut poll = Poll::new()?;
    /// let mut buf = [0u8; 4];
    /// let mut op = ReadAt::read_at(file.as_fd(), 2, &mut buf, 0);
    /// poll.registry().register(&mut op, Token(0), mio_aio::AIO)?;
    /// let mut op = Box::pin(op);
    /// op.as_mut().submit()?;
    /// wait_for(&mut poll, Token(0))?; // a bounded wait for the token: see `SourceApi`
    /// assert_eq!(op.as_mut().aio_return()?, 4);
    /// drop(op); // ends the borrow of `buf`
    /// assert_eq!(&buf, b"cdef");
    /// # Ok(())
    /// # }
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
    /// use mio::{Poll, Token};
    /// use mio_aio::{ReadvAt, SourceApi};
    /// # fn wait_for(poll: &mut mio::Poll, token: mio::Token) -> std::io::Result<()> {
    /// #     let mut events = mio::Events::with_capacity(8);
    /// #     let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    /// #     loop {
    /// #         let left = deadline.saturating_duration_since(std::time::Instant::now());
    /// #         if left.is_zero() {
    /// #             return Err(std::io::ErrorKind::TimedOut.into());
    /// #         }
    /// #         match poll.poll(&mut events, Some(left)) {
    /// #             // io_uring may interrupt the wait: poll again.
    /// #             Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
    /// #             r => r?,
    /// #         }
    /// #         if events.iter().any(|e| e.token() == token) {
    /// #             return Ok(());
    /// #         }
    /// #     }
    /// # }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut file = tempfile::tempfile()?;
    /// file.write_all(b"abcdef123456")?;
    /// let mut poll = Poll::new()?;
    /// let (mut a, mut b) = ([0u8; 4], [0u8; 2]);
    /// let mut bufs = [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)];
    /// let mut op = ReadvAt::readv_at(file.as_fd(), 2, &mut bufs, 0);
    /// poll.registry().register(&mut op, Token(0), mio_aio::AIO)?;
    /// let mut op = Box::pin(op);
    /// op.as_mut().submit()?;
    /// wait_for(&mut poll, Token(0))?; // a bounded wait for the token: see `SourceApi`
    /// assert_eq!(op.as_mut().aio_return()?, 6);
    /// drop(op);
    /// assert_eq!((&a, &b), (b"cdef", b"12"));
    /// # Ok(())
    /// # }
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
    /// use mio::{Poll, Token};
    /// use mio_aio::{SourceApi, WriteAt};
    /// # fn wait_for(poll: &mut mio::Poll, token: mio::Token) -> std::io::Result<()> {
    /// #     let mut events = mio::Events::with_capacity(8);
    /// #     let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    /// #     loop {
    /// #         let left = deadline.saturating_duration_since(std::time::Instant::now());
    /// #         if left.is_zero() {
    /// #             return Err(std::io::ErrorKind::TimedOut.into());
    /// #         }
    /// #         match poll.poll(&mut events, Some(left)) {
    /// #             // io_uring may interrupt the wait: poll again.
    /// #             Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
    /// #             r => r?,
    /// #         }
    /// #         if events.iter().any(|e| e.token() == token) {
    /// #             return Ok(());
    /// #         }
    /// #     }
    /// # }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let file = tempfile::tempfile()?;
    /// let mut poll = Poll::new()?;
    /// let mut op = WriteAt::write_at(file.as_fd(), 0, b"abcdef", 0);
    /// poll.registry().register(&mut op, Token(0), mio_aio::AIO)?;
    /// let mut op = Box::pin(op);
    /// op.as_mut().submit()?;
    /// wait_for(&mut poll, Token(0))?; // a bounded wait for the token: see `SourceApi`
    /// assert_eq!(op.as_mut().aio_return()?, 6);
    /// # Ok(())
    /// # }
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
    /// use mio::{Poll, Token};
    /// use mio_aio::{SourceApi, WritevAt};
    /// # fn wait_for(poll: &mut mio::Poll, token: mio::Token) -> std::io::Result<()> {
    /// #     let mut events = mio::Events::with_capacity(8);
    /// #     let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    /// #     loop {
    /// #         let left = deadline.saturating_duration_since(std::time::Instant::now());
    /// #         if left.is_zero() {
    /// #             return Err(std::io::ErrorKind::TimedOut.into());
    /// #         }
    /// #         match poll.poll(&mut events, Some(left)) {
    /// #             // io_uring may interrupt the wait: poll again.
    /// #             Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
    /// #             r => r?,
    /// #         }
    /// #         if events.iter().any(|e| e.token() == token) {
    /// #             return Ok(());
    /// #         }
    /// #     }
    /// # }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let file = tempfile::tempfile()?;
    /// let mut poll = Poll::new()?;
    /// let bufs = [IoSlice::new(b"abcde"), IoSlice::new(b"fghi")];
    /// let mut op = WritevAt::writev_at(file.as_fd(), 0, &bufs, 0);
    /// poll.registry().register(&mut op, Token(0), mio_aio::AIO)?;
    /// let mut op = Box::pin(op);
    /// op.as_mut().submit()?;
    /// wait_for(&mut poll, Token(0))?; // a bounded wait for the token: see `SourceApi`
    /// assert_eq!(op.as_mut().aio_return()?, 9);
    /// # Ok(())
    /// # }
    /// ```
    pub fn writev_at(fd: BorrowedFd<'a>, offs: u64, bufs: &[IoSlice<'a>], prio: i32) -> Self {
        Source::new(sys::WritevOp::new(fd, offs, bufs, prio))
    }
}
