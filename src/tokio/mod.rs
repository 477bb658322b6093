//! File operations and batches as futures on a [tokio](https://docs.rs/tokio) runtime.
//!
//! [`AioFileExt`] adds `read_at`, `readv_at`, `write_at`, `writev_at`, `sync_all` and
//! `sync_data` to every [`AsFd`] type (`std::fs::File`, `tokio::fs::File`, a `BorrowedFd`, …).
//! Each returns a future ([`AioFut`], named [`ReadAt`], [`WriteAt`], … per operation) that
//! resolves to the operation's result. [`LioFut`] does the same for a whole batch ([`LioCb`]).
//!
//! ```
//! use std::io::Write;
//! use mio_aio::tokio::AioFileExt;
//!
//! let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
//! rt.block_on(async {
//!     let file = tempfile::tempfile().unwrap();
//!     assert_eq!(file.write_at(b"hello, world", 0).await.unwrap(), 12);
//!     // `File` has a blocking `sync_all` of its own: name the trait.
//!     AioFileExt::sync_all(&file).await.unwrap();
//!     let mut buf = [0u8; 5];
//!     assert_eq!(file.read_at(&mut buf, 7).await.unwrap(), 5);
//!     assert_eq!(&buf, b"world");
//! });
//! ```
//!
//! A program's shape: a TCP echo and file reads on one runtime. The borrowed futures of
//! [`AioFileExt`] are awaited where their buffers live; the [`owned`] ones are `'static` and
//! run as tasks of their own. Every wait that depends on a peer is bounded.
//!
//! ```
//! use std::{io::Write, sync::Arc, time::Duration};
//! use mio_aio::tokio::{owned, AioFileExt};
//! use tokio::{
//!     io::{AsyncReadExt, AsyncWriteExt},
//!     net::{TcpListener, TcpStream},
//!     time::timeout,
//! };
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let mut file = tempfile::tempfile()?;
//!     file.write_all(b"the file's contents")?;
//!     let file = Arc::new(file);
//!
//!     // A server that echoes what one connection sends.
//!     let listener = TcpListener::bind("127.0.0.1:0").await?;
//!     let addr = listener.local_addr()?;
//!     let server = tokio::spawn(async move {
//!         let (mut conn, _) = listener.accept().await?;
//!         let mut msg = [0u8; 64];
//!         let n = conn.read(&mut msg).await?;
//!         conn.write_all(&msg[..n]).await
//!     });
//!     // A file read as a task of its own: owned futures are `'static`.
//!     let whole = tokio::spawn(owned::read_at(file.clone(), vec![0u8; 64], 0));
//!     // A borrowed read, awaited in place, meanwhile.
//!     let mut head = [0u8; 3];
//!     assert_eq!(file.read_at(&mut head, 0).await?, 3);
//!
//!     let mut client = TcpStream::connect(addr).await?;
//!     client.write_all(b"ping").await?;
//!     let mut reply = [0u8; 4];
//!     timeout(Duration::from_secs(10), client.read_exact(&mut reply)).await??;
//!     timeout(Duration::from_secs(10), server).await???;
//!
//!     let (result, buf) = whole.await?;
//!     let n = result?;
//!     assert_eq!((&head, &reply, &buf[..n]), (b"the", b"ping", &b"the file's contents"[..]));
//!     Ok(())
//! }
//! ```
//!
//! # How it works
//!
//! A future does nothing until it is first polled: that poll submits the operation. It then
//! waits for the operation's completion notice through tokio's reactor, and finally collects
//! the result with [`SourceApi::aio_return`] (or [`LioCb::into_results`]). Nothing runs on
//! tokio's blocking thread pool.
//!
//! * **Linux**: the operation gets an eventfd of its own, which the backend signals when the
//!   operation is done (with io_uring and kernel AIO, the kernel writes it; only the
//!   thread-pool backend uses worker threads). The eventfd is watched with tokio's
//!   [`AsyncFd`](::tokio::io::unix::AsyncFd). When the kernel finishes the operation while
//!   submitting it (a read from the page cache, typically), the future completes in that same
//!   poll without involving the reactor at all.
//! * **FreeBSD**: POSIX AIO posts its completion straight to tokio's kqueue, through
//!   [`tokio::io::bsd::Aio`](https://docs.rs/tokio/latest/tokio/io/bsd/struct.Aio.html)
//!   (the same mechanism as the `tokio-file` crate).
//!
//! Readiness is always confirmed with the operation itself before its result is taken, so a
//! spurious wake-up only costs another wait.
//!
//! # Rules
//!
//! * **Runtime**: poll the futures inside a tokio runtime with I/O enabled
//!   (`Builder::enable_io` or `enable_all`; `#[tokio::main]` does it; without it tokio panics,
//!   as for its own I/O types). Polled outside any runtime, a future fails with an error and
//!   submits nothing. They are `Send`: they may
//!   move between the worker threads of a multi-thread runtime, and complete on another
//!   worker than the one that submitted them.
//! * **Dropping** a future whose operation is in flight is safe: the operation is cancelled
//!   and the drop *waits*, blocking the thread, until the kernel has released the buffers
//!   (most file systems cannot cancel a read or write that has started, so this may last as
//!   long as the operation itself). What happens to the reactor registration differs: on
//!   Linux the operation's eventfd leaves tokio's reactor with the future. On FreeBSD the
//!   future holds a [`tokio::io::bsd::Aio`](https://docs.rs/tokio/latest/tokio/io/bsd/struct.Aio.html),
//!   which has no `Drop`: nothing is deregistered (the kernel's own event registration ends
//!   with the operation's `aio_return`, or with the batch's kqueue), and the reactor keeps its
//!   small bookkeeping slot for the future until the runtime shuts down, as for every
//!   `tokio::io::bsd::Aio`.
//! * **Do not leak** a future whose operation is in flight (`std::mem::forget` of a
//!   `Box::pin`ned future): like every [`Source`], it borrows its buffers, and only its drop
//!   makes sure that the kernel is done with them. A leaked operation keeps writing into
//!   memory that the borrow checker considers free again.
//! * The futures of [`owned`] own their file and buffers instead: `'static` (for
//!   `tokio::spawn`), dropped without blocking, and safe to leak.
//! * **Full queues**: if the system has no room for an operation (`EAGAIN`: FreeBSD's
//!   `vfs.aio` limits, or `MIO_AIO_MAX_IN_FLIGHT` on Linux), the future does not fail: it
//!   yields to the scheduler (waking itself) and tries again at its next poll, so that
//!   operations already in flight can complete. A batch does the same, and resubmits what
//!   was not started after a partial submission ([`LioError::EINCOMPLETE`]).
//! * **Threads (Linux, io_uring)**: an operation belongs to the thread that first polled its
//!   future (which submitted it); if that thread exits while the operation is in flight, the
//!   thread first waits for it when it is on a file (up to 10 s), and cancels it when it is on
//!   a pipe or socket, where the future then resolves to `ECANCELED` (see the crate's "Threads
//!   that exit"). tokio's worker threads live as long as the runtime; do not first poll stream
//!   futures on short-lived threads.
//! * **Cooperative scheduling**: each poll takes one unit of the task's tokio budget, so a loop
//!   of operations that complete at once still yields to other tasks now and then.
//! * **Name clashes**: `std::fs::File` and `tokio::fs::File` have inherent `sync_all` and
//!   `sync_data` methods, which method-call syntax picks before ours: write
//!   `AioFileExt::sync_all(&file)` (with `std::fs::File`, `file.sync_all().await` does not
//!   compile; with `tokio::fs::File` it runs tokio's version, on its blocking pool). Likewise,
//!   `std::os::unix::fs::FileExt` has `read_at` and `write_at`: with both traits imported, call
//!   ours as `AioFileExt::read_at(&file, buf, offset)`.
//!
//! # Errors
//!
//! Futures resolve to [`io::Error`]s made from the operation's [`Errno`] (so
//! [`io::Error::raw_os_error`] gives the errno), or from tokio (the reactor is gone, or the
//! future was polled outside a runtime).
//!
//! [`Source`]: crate::Source

use std::{
    fmt,
    future::Future,
    io::{self, IoSlice, IoSliceMut},
    os::fd::AsFd,
    pin::Pin,
    task::{Context, Poll},
};

use nix::errno::Errno;

use crate::{
    lio_book::{next_step, Next},
    sys, AioFsyncMode, LioCb, LioResult, Source,
};
#[allow(unused_imports)] // for the documentation
use crate::{LioCbBuilder, LioError, SourceApi};

pub mod compat;
pub mod owned;

#[cfg(target_os = "freebsd")]
mod freebsd;
#[cfg(target_os = "freebsd")]
use freebsd as imp;
/// The mode of `sync_data`: `O_DSYNC`, except on DragonFly, where nix's `AioFsyncMode` has
/// only `O_SYNC` (a full `fsync`, which makes the data durable too).
#[cfg(not(target_os = "dragonfly"))]
const DATA_SYNC: AioFsyncMode = AioFsyncMode::O_DSYNC;
#[cfg(target_os = "dragonfly")]
const DATA_SYNC: AioFsyncMode = AioFsyncMode::O_SYNC;

// Linux's layer (a private notifier descriptor watched with `AsyncFd`) serves the kqueue
// systems too: there the descriptor is a private kqueue.
#[cfg(not(target_os = "freebsd"))]
mod linux;
#[cfg(not(target_os = "freebsd"))]
mod watch_pool;
#[cfg(not(target_os = "freebsd"))]
use linux as imp;

/// A future that runs one file operation: a [`Source`] driven by tokio.
///
/// Made by the methods of [`AioFileExt`] (see the aliases [`ReadAt`], [`ReadvAt`],
/// [`WriteAt`], [`WritevAt`] and [`SyncAll`]) or, for an operation built by hand (with a
/// FreeBSD priority, say), by [`AioFut::new`]. It resolves to the operation's result: the
/// number of bytes for reads and writes, `()` for syncs.
///
/// The operation is submitted when the future is first polled; dropping the future cancels
/// it (see the [module documentation](self)). `AioFut` is `!Unpin`, because the kernel holds
/// its address while the operation runs: `.await` it, or pin it (`Box::pin`,
/// `std::pin::pin!`) to poll it by hand.
///
/// `S` is a [`Source`]; the `T: Operation` of its `impl`s is the platform's private, sealed
/// operation type, as explained in [`Source`'s documentation](Source#the-type-parameter-t).
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct AioFut<S> {
    inner: imp::OpState<S>,
}

impl<T: sys::Operation> AioFut<Source<T>> {
    /// Wraps an operation that has not been submitted yet.
    ///
    /// Any registration of `source` with a mio `Registry` is replaced by tokio's.
    ///
    /// ```
    /// use std::os::fd::AsFd;
    /// use mio_aio::{tokio::AioFut, WriteAt};
    ///
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// let file = tempfile::tempfile().unwrap();
    /// // Priority 0; FreeBSD lowers the priority of operations given a positive one.
    /// let op = WriteAt::write_at(file.as_fd(), 0, b"abc", 0);
    /// assert_eq!(rt.block_on(AioFut::new(op)).unwrap(), 3);
    /// ```
    pub fn new(source: Source<T>) -> Self {
        AioFut {
            inner: imp::OpState::new(source),
        }
    }
}

impl<T: sys::Operation> Future for AioFut<Source<T>> {
    type Output = io::Result<T::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `inner` is structurally pinned: it is never moved out of `self`.
        unsafe { self.map_unchecked_mut(|f| &mut f.inner) }.poll(cx)
    }
}

impl<S> fmt::Debug for AioFut<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AioFut")
            .field("phase", &self.inner.phase())
            .finish_non_exhaustive()
    }
}

/// The future of [`AioFileExt::read_at`]: resolves to the number of bytes read.
pub type ReadAt<'a> = AioFut<crate::ReadAt<'a>>;
/// The future of [`AioFileExt::readv_at`]: resolves to the number of bytes read.
pub type ReadvAt<'a> = AioFut<crate::ReadvAt<'a>>;
/// The future of [`AioFileExt::write_at`]: resolves to the number of bytes written.
pub type WriteAt<'a> = AioFut<crate::WriteAt<'a>>;
/// The future of [`AioFileExt::writev_at`]: resolves to the number of bytes written.
pub type WritevAt<'a> = AioFut<crate::WritevAt<'a>>;
/// The future of [`AioFileExt::sync_all`] and [`AioFileExt::sync_data`].
pub type SyncAll<'a> = AioFut<crate::Fsync<'a>>;

/// Asynchronous positioned I/O on any file descriptor, as tokio futures.
///
/// Implemented for every [`AsFd`] type. Each method only builds a future (nothing is
/// submitted until it is polled), which borrows the file and the buffers until it is done or
/// dropped. Reads and writes at an offset behave like `pread`/`pwrite`, and can be short at
/// the end of a file, just like those.
///
/// ```
/// use std::io::{IoSlice, IoSliceMut};
/// use mio_aio::tokio::AioFileExt;
///
/// #[tokio::main(flavor = "current_thread")]
/// async fn main() -> std::io::Result<()> {
///     let dir = tempfile::tempdir()?;
///     let file = std::fs::File::options()
///         .read(true)
///         .write(true)
///         .create(true)
///         .open(dir.path().join("data"))?;
///     let bufs = [IoSlice::new(b"abcdef"), IoSlice::new(b"123456")];
///     assert_eq!(file.writev_at(&bufs, 0).await?, 12);
///     // Not `file.sync_data()`: that is `File`'s own, blocking method.
///     AioFileExt::sync_data(&file).await?;
///
///     let (mut a, mut b) = ([0u8; 4], [0u8; 2]);
///     let mut bufs = [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)];
///     assert_eq!(file.readv_at(&mut bufs, 2).await?, 6);
///     assert_eq!((&a, &b), (b"cdef", b"12"));
///     Ok(())
/// }
/// ```
pub trait AioFileExt: AsFd {
    /// Reads into `buf` from `offset`, like `pread`; resolves to the number of bytes read (0 at
    /// or beyond the end of the file).
    ///
    /// ```
    /// # use std::io::Write;
    /// use mio_aio::tokio::AioFileExt;
    /// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// # rt.block_on(async {
    /// let mut file = tempfile::tempfile().unwrap();
    /// file.write_all(b"abcdef").unwrap();
    /// let mut buf = [0u8; 8];
    /// let n = file.read_at(&mut buf, 2).await.unwrap();
    /// assert_eq!(&buf[..n], b"cdef");
    /// # });
    /// ```
    fn read_at<'a>(&'a self, buf: &'a mut [u8], offset: u64) -> ReadAt<'a> {
        AioFut::new(crate::ReadAt::read_at(self.as_fd(), offset, buf, 0))
    }

    /// Reads into several buffers, in order, from `offset`, like `preadv`; resolves to the
    /// total number of bytes read. On FreeBSD this needs FreeBSD 13 or later.
    ///
    /// The list `bufs` stays borrowed until the future is done or dropped, so that the
    /// buffers cannot be touched through it while the kernel writes into them.
    ///
    /// ```
    /// # use std::io::{IoSliceMut, Write};
    /// use mio_aio::tokio::AioFileExt;
    /// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// # rt.block_on(async {
    /// let mut file = tempfile::tempfile().unwrap();
    /// file.write_all(b"abcdef").unwrap();
    /// let (mut a, mut b) = ([0u8; 2], [0u8; 3]);
    /// let mut bufs = [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)];
    /// assert_eq!(file.readv_at(&mut bufs, 1).await.unwrap(), 5);
    /// assert_eq!((&a, &b), (b"bc", b"def"));
    /// # });
    /// ```
    fn readv_at<'a>(&'a self, bufs: &'a mut [IoSliceMut<'a>], offset: u64) -> ReadvAt<'a> {
        AioFut::new(crate::ReadvAt::readv_at(self.as_fd(), offset, bufs, 0))
    }

    /// Writes `buf` at `offset`, like `pwrite`; resolves to the number of bytes written.
    ///
    /// ```
    /// use mio_aio::tokio::AioFileExt;
    /// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// # rt.block_on(async {
    /// let file = tempfile::tempfile().unwrap();
    /// assert_eq!(file.write_at(b"abc", 10).await.unwrap(), 3);
    /// assert_eq!(file.metadata().unwrap().len(), 13);
    /// # });
    /// ```
    fn write_at<'a>(&'a self, buf: &'a [u8], offset: u64) -> WriteAt<'a> {
        AioFut::new(crate::WriteAt::write_at(self.as_fd(), offset, buf, 0))
    }

    /// Writes several buffers, in order, at `offset`, like `pwritev`; resolves to the total
    /// number of bytes written. On FreeBSD this needs FreeBSD 13 or later.
    ///
    /// ```
    /// # use std::io::IoSlice;
    /// use mio_aio::tokio::AioFileExt;
    /// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// # rt.block_on(async {
    /// let file = tempfile::tempfile().unwrap();
    /// let bufs = [IoSlice::new(b"ab"), IoSlice::new(b"cde")];
    /// assert_eq!(file.writev_at(&bufs, 0).await.unwrap(), 5);
    /// # });
    /// ```
    fn writev_at<'a>(&'a self, bufs: &[IoSlice<'a>], offset: u64) -> WritevAt<'a> {
        AioFut::new(crate::WritevAt::writev_at(self.as_fd(), offset, bufs, 0))
    }

    /// Flushes the file's data and metadata to storage, like `fsync`.
    ///
    /// `std::fs::File` and `tokio::fs::File` have an inherent `sync_all`, which `file.sync_all()`
    /// would call: name the trait.
    ///
    /// ```
    /// use mio_aio::tokio::AioFileExt;
    /// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// # rt.block_on(async {
    /// let file = tempfile::tempfile().unwrap();
    /// AioFileExt::sync_all(&file).await.unwrap();
    /// # });
    /// ```
    fn sync_all(&self) -> SyncAll<'_> {
        AioFut::new(crate::Fsync::fsync(self.as_fd(), AioFsyncMode::O_SYNC, 0))
    }

    /// Flushes the file's data (and only the metadata needed to read it back) to storage, like
    /// `fdatasync`. As for [`AioFileExt::sync_all`], name the trait when calling it on a `File`.
    ///
    /// ```
    /// use std::os::fd::AsFd;
    /// use mio_aio::tokio::AioFileExt;
    /// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// # rt.block_on(async {
    /// let file = tempfile::tempfile().unwrap();
    /// AioFileExt::sync_data(&file).await.unwrap();
    /// // A `BorrowedFd` has no method of that name.
    /// file.as_fd().sync_data().await.unwrap();
    /// # });
    /// ```
    fn sync_data(&self) -> SyncAll<'_> {
        AioFut::new(crate::Fsync::fsync(self.as_fd(), DATA_SYNC, 0))
    }
}

impl<F: AsFd + ?Sized> AioFileExt for F {}

/// A future that runs a batch of operations ([`LioCb`]) and resolves to every operation's
/// result, in order.
///
/// The batch is submitted (with one `lio_listio` on FreeBSD, one engine submission on Linux)
/// when the future is first polled. The future resolves once every operation has completed:
///
/// * each [`LioResult`] holds its operation's byte count or error, including the operations
///   that could not be started at all ([`LioError::EIO`]: a bad fd, a read into a shared
///   buffer, an offset out of range);
/// * operations the system had no room for ([`LioError::EINCOMPLETE`], [`LioError::EAGAIN`],
///   or `EAGAIN` among the statuses of an [`LioError::EIO`]) are not errors: they are
///   resubmitted once the others have completed, or after a yield to the scheduler if nothing
///   is in flight, also when other operations of the batch failed;
/// * the future itself fails only when it cannot wait (polled outside a runtime, the reactor
///   gone, no eventfd available).
///
/// Dropping it while the batch is in flight cancels the batch and waits for it, like dropping
/// a [`LioCb`].
///
/// ```
/// use std::{io::Write, os::fd::AsFd};
/// use mio_aio::{tokio::LioFut, LioCbBuilder, LioOpcode};
///
/// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
/// let mut file = tempfile::tempfile().unwrap();
/// file.write_all(b"abcdef123456").unwrap();
/// let (mut a, mut b) = ([0u8; 4], [0u8; 2]);
/// let batch = LioCbBuilder::with_capacity(3)
///     .emplace_mut_slice(file.as_fd(), 2, &mut a, 0, LioOpcode::LIO_READ)
///     .emplace_mut_slice(file.as_fd(), 6, &mut b, 0, LioOpcode::LIO_READ)
///     .emplace_slice(file.as_fd(), 12, b"!", 0, LioOpcode::LIO_WRITE)
///     .finish();
/// let results = rt.block_on(LioFut::new(batch)).unwrap();
/// let counts: Vec<isize> = results.into_iter().map(|r| r.result.unwrap()).collect();
/// assert_eq!(counts, [4, 2, 1]);
/// assert_eq!((&a, &b), (b"cdef", b"12"));
/// ```
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct LioFut<'a> {
    inner: imp::LioState<'a>,
}

impl<'a> LioFut<'a> {
    /// Wraps a batch that has not been submitted yet. Any registration of `batch` with a mio
    /// `Registry` is replaced by tokio's.
    pub fn new(batch: LioCb<'a>) -> Self {
        LioFut {
            inner: imp::LioState::new(batch),
        }
    }
}

impl<'a> From<LioCb<'a>> for LioFut<'a> {
    fn from(batch: LioCb<'a>) -> Self {
        LioFut::new(batch)
    }
}

impl Future for LioFut<'_> {
    type Output = io::Result<Vec<LioResult>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut().inner.poll(cx)
    }
}

impl fmt::Debug for LioFut<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LioFut")
            .field("phase", &self.inner.phase())
            .finish_non_exhaustive()
    }
}

/// Where a future stands.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum Phase {
    /// Not submitted yet (or refused with `EAGAIN`, to be tried again).
    Idle,
    /// Submitted; waiting for the completion notice.
    Running,
    /// The result has been returned (or the future failed).
    Done,
}

/// The current runtime's id; fails outside a tokio runtime (tokio's own constructors would
/// panic).
fn check_runtime() -> io::Result<::tokio::runtime::Id> {
    match ::tokio::runtime::Handle::try_current() {
        Ok(handle) => Ok(handle.id()),
        Err(e) => Err(io::Error::other(format!(
            "mio_aio::tokio futures must be polled inside a tokio runtime: {e}"
        ))),
    }
}

/// Asks to be polled again soon: the retry after `EAGAIN`, when no event will come.
fn retry_later<T>(cx: &mut Context<'_>) -> Poll<T> {
    cx.waker().wake_by_ref();
    Poll::Pending
}

fn errno(e: Errno) -> io::Error {
    io::Error::from(e)
}

fn polled_after_completion() -> ! {
    panic!("a mio_aio::tokio future was polled after it completed")
}

/// What a batch (re)submission left to do.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum Submitted {
    /// Everything that can run was started (some operations may have failed to start: their
    /// results say so).
    All,
    /// Some operations were started; the others must be resubmitted once those are done.
    Part,
    /// Nothing was started for lack of room, and no event will come: try again later.
    Nothing,
}

/// Submits `batch` for the first time, or resubmits what it has left. Operations refused for
/// lack of room are resubmitted later whatever happened to the others, also when some failed
/// for good (`EIO` whose statuses hold `EAGAIN`); see `crate::lio_book::next_step`.
fn submit_batch(batch: &mut LioCb<'_>, first: bool) -> Submitted {
    let result = if first {
        batch.submit()
    } else {
        batch.resubmit()
    };
    match next_step(&result, batch.in_progress()) {
        Next::Collect => Submitted::All,
        Next::Resubmit => Submitted::Part,
        Next::RetryLater => Submitted::Nothing,
    }
}

/// The collected results of a finished batch.
fn batch_results(batch: LioCb<'_>) -> Vec<LioResult> {
    batch.into_results(|results| results.collect())
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<ReadAt<'static>>();
    check::<ReadvAt<'static>>();
    check::<WriteAt<'static>>();
    check::<WritevAt<'static>>();
    check::<SyncAll<'static>>();
    check::<LioFut<'static>>();
}
