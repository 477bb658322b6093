//! Operations that own their file and buffers: `'static`, `Send`, `Unpin`, safe to leak, and
//! never blocking when dropped.
//!
//! The operations of the crate root ([`crate::ReadAt`], …) borrow their buffers, which suits a
//! read whose buffer lives in the enclosing scope. A server starts operations as requests
//! arrive and finishes them in any order, across iterations of its loop: for that, the types
//! here take the file (anything [`AsFd`] that can move to another thread: a `File`, an
//! `Arc<File>`, an `OwnedFd`, …) and the buffers *by value*, and give the buffers back with
//! the result. The file is kept, so its descriptor stays open, until the kernel is done.
//!
//! ```
//! use std::{io::Write, sync::Arc};
//! use mio::{Events, Poll, Token};
//! use mio_aio::owned;
//!
//! let mut file = tempfile::tempfile().unwrap();
//! file.write_all(b"abcdef123456").unwrap();
//! let file = Arc::new(file);
//!
//! let mut poll = Poll::new().unwrap();
//! let mut events = Events::with_capacity(16);
//! let mut op = owned::ReadAt::read_at(file.clone(), 2, vec![0u8; 4], 0);
//! poll.registry().register(&mut op, Token(7), mio_aio::AIO).unwrap();
//! op.submit().unwrap(); // no pinning: the operation is `Unpin`
//! let (result, buf) = loop {
//!     match poll.poll(&mut events, None) {
//!         Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
//!         r => r.unwrap(),
//!     }
//!     if events.iter().any(|ev| ev.token() == Token(7)) {
//!         // `None` would mean a spurious event: the read is still running.
//!         if let Some(done) = op.take_result() {
//!             break done;
//!         }
//!     }
//! };
//! assert_eq!(result.unwrap(), 4);
//! assert_eq!(buf, b"cdef");
//! ```
//!
//! # Buffers
//! An operation takes any buffer implementing [`IoBuf`] (to write from) or [`IoBufMut`] (to
//! read into): `Vec<u8>`, `Box<[u8]>`, [`AlignedBuf`] (aligned for `O_DIRECT`),
//! `&'static [u8]` and `&'static str` (writes only), and with the `bytes` feature
//! `bytes::BytesMut` (and `bytes::Bytes`, writes only). A read fills the buffer's *length*
//! (`Vec::len`, not its capacity) from the start and returns how many bytes it filled; the
//! buffer comes back with its length unchanged.
//!
//! # Dropping an operation in flight
//! Dropping an owned operation never blocks. If it is still in flight, the drop asks the
//! system to cancel it ([`crate::SourceApi::cancel`]) and hands it, with its buffers and
//! file, to the crate, which keeps them until the kernel is done and then frees them (on
//! FreeBSD also collecting the result with `aio_return`). A background thread does that,
//! checking all such operations with a bounded sleep between checks (1 to 50 ms), never
//! waiting on one of them, so one that never ends (a read from an idle pipe) holds only its
//! own memory. [`orphan_count`] says how many are waiting. Memory stays bounded by the number
//! of operations the system lets be in flight at once.
//!
//! A dropped operation's token may still come back from `Poll::poll` once, when the kernel
//! finishes it: as with any mio source, a program ignores events for tokens it no longer
//! knows. If it already reused the token for a new operation, the event is spurious for that
//! operation, whose [`OwnedSource::take_result`] then returns `None`: wait for the next event.
//!
//! # Leaking
//! [`std::mem::forget`] on an owned operation in flight leaks its memory (and keeps its file
//! open), and nothing else: the buffers leak with it, so the kernel never writes into freed
//! memory.
//!
//! # tokio
#![cfg_attr(
    feature = "tokio",
    doc = "The same operations as `'static` futures are in [`crate::tokio::owned`]."
)]
#![cfg_attr(
    not(feature = "tokio"),
    doc = "The same operations as `'static` futures are in `mio_aio::tokio::owned` (feature `tokio`)."
)]

mod aligned;
mod buf;
mod orphanage;
mod state;

use std::{fmt, io, os::fd::AsFd};

use crate::AioCancelStat;
use mio::{event, Interest, Registry, Token};

#[cfg(all(feature = "tokio", target_os = "freebsd"))]
pub(crate) use self::orphanage::{adopt, Orphan};
pub use self::state::Kind;
pub(crate) use self::state::Owning;
pub use self::{
    aligned::{AlignedBuf, DEFAULT_DIO_ALIGNMENT},
    buf::{IoBuf, IoBufMut},
    orphanage::orphan_count,
};
use crate::{source::check_interest, sys, AioFsyncMode};

/// A read into an owned buffer: [`OwnedSource::read_at`].
pub type ReadAt<F, B> = OwnedSource<sys::ReadOp<'static>, B, F>;
/// A scattered read into owned buffers: [`OwnedSource::readv_at`].
pub type ReadvAt<F, B> = OwnedSource<sys::ReadvOp<'static>, Vec<B>, F>;
/// A write from an owned buffer: [`OwnedSource::write_at`].
pub type WriteAt<F, B> = OwnedSource<sys::WriteOp<'static>, B, F>;
/// A gathered write from owned buffers: [`OwnedSource::writev_at`].
pub type WritevAt<F, B> = OwnedSource<sys::WritevOp<'static>, Vec<B>, F>;
/// A sync of an owned file: [`OwnedSource::fsync`].
pub type Fsync<F> = OwnedSource<sys::FsyncOp<'static>, (), F>;

/// One asynchronous file operation that owns its file `F` and its buffers `B`, as a mio event
/// source.
///
/// Use the aliases [`ReadAt`], [`ReadvAt`], [`WriteAt`], [`WritevAt`] and [`Fsync`] and their
/// constructors. Register it with a [`mio::Registry`] (interest [`crate::AIO`]), call
/// [`OwnedSource::submit`], and when its token comes back, [`OwnedSource::take_result`] gives
/// the result and the buffers. It is `'static`, `Send` and `Unpin`; see the
/// [module documentation](self) for what dropping or leaking it does.
///
/// `T` says which operation it is: one of the crate's own, sealed operation types (see
/// [`Kind`]); signatures show them, without a link, as `ReadOp<'static>` and the like.
pub struct OwnedSource<T: Kind, B: Send + 'static, F: Send + 'static> {
    state: Owning<T, B, F>,
}

impl<B: IoBufMut, F: AsFd + Send + 'static> ReadAt<F, B> {
    /// Reads from `file` at `offset` into `buf` (its whole length), like `pread`. `prio` lowers
    /// the operation's priority on FreeBSD; Linux ignores it.
    pub fn read_at(file: F, offset: u64, buf: B, prio: i32) -> Self {
        OwnedSource::from(Owning::read_at(file, offset, buf, prio))
    }
}

impl<B: IoBufMut, F: AsFd + Send + 'static> ReadvAt<F, B> {
    /// Reads from `file` at `offset` into `bufs`, in order, like `preadv`. On FreeBSD this
    /// needs FreeBSD 13 or later.
    ///
    /// ```
    /// use std::io::Write;
    /// use mio::{Poll, Token};
    /// use mio_aio::owned;
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
    /// let bufs: Vec<Box<[u8]>> = vec![Box::new([0; 4]), Box::new([0; 2])];
    /// let mut op = owned::ReadvAt::readv_at(file, 2, bufs, 0);
    /// poll.registry().register(&mut op, Token(0), mio_aio::AIO)?;
    /// op.submit()?;
    /// wait_for(&mut poll, Token(0))?; // a bounded wait for the token: see `SourceApi`
    /// let (result, bufs) = op.take_result().ok_or("still running")?;
    /// assert_eq!(result?, 6);
    /// assert_eq!((&*bufs[0], &*bufs[1]), (&b"cdef"[..], &b"12"[..]));
    /// # Ok(())
    /// # }
    /// ```
    pub fn readv_at(file: F, offset: u64, bufs: Vec<B>, prio: i32) -> Self {
        OwnedSource::from(Owning::readv_at(file, offset, bufs, prio))
    }
}

impl<B: IoBuf, F: AsFd + Send + 'static> WriteAt<F, B> {
    /// Writes `buf` to `file` at `offset`, like `pwrite`.
    ///
    /// ```
    /// use mio::{Poll, Token};
    /// use mio_aio::owned;
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
    /// let mut op = owned::WriteAt::write_at(file, 0, b"abc".to_vec(), 0);
    /// poll.registry().register(&mut op, Token(0), mio_aio::AIO)?;
    /// op.submit()?;
    /// wait_for(&mut poll, Token(0))?; // a bounded wait for the token: see `SourceApi`
    /// let (result, buf) = op.take_result().ok_or("still running")?;
    /// assert_eq!((result?, buf), (3, b"abc".to_vec()));
    /// # Ok(())
    /// # }
    /// ```
    pub fn write_at(file: F, offset: u64, buf: B, prio: i32) -> Self {
        OwnedSource::from(Owning::write_at(file, offset, buf, prio))
    }
}

impl<B: IoBuf, F: AsFd + Send + 'static> WritevAt<F, B> {
    /// Writes `bufs`, in order, to `file` at `offset`, like `pwritev`. On FreeBSD this needs
    /// FreeBSD 13 or later.
    pub fn writev_at(file: F, offset: u64, bufs: Vec<B>, prio: i32) -> Self {
        OwnedSource::from(Owning::writev_at(file, offset, bufs, prio))
    }
}

impl<F: AsFd + Send + 'static> Fsync<F> {
    /// Syncs `file` to storage, like `fsync` ([`AioFsyncMode::O_SYNC`]) or `fdatasync`
    /// ([`AioFsyncMode::O_DSYNC`]). Its result is `()`, and its "buffers" are `()`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use mio::{Poll, Token};
    /// use mio_aio::{owned, AioFsyncMode};
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
    /// let file = Arc::new(tempfile::tempfile()?);
    /// let mut poll = Poll::new()?;
    /// let mut op = owned::Fsync::fsync(file.clone(), AioFsyncMode::O_DSYNC, 0);
    /// poll.registry().register(&mut op, Token(0), mio_aio::AIO)?;
    /// op.submit()?;
    /// wait_for(&mut poll, Token(0))?; // a bounded wait for the token: see `SourceApi`
    /// let (result, ()) = op.take_result().ok_or("still running")?;
    /// result?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn fsync(file: F, mode: AioFsyncMode, prio: i32) -> Self {
        OwnedSource::from(Owning::fsync(file, mode, prio))
    }
}

impl<T: Kind, B: Send + 'static, F: Send + 'static> From<Owning<T, B, F>> for OwnedSource<T, B, F> {
    fn from(state: Owning<T, B, F>) -> Self {
        OwnedSource { state }
    }
}

impl<T: Kind, B: Send + 'static, F: Send + 'static> OwnedSource<T, B, F> {
    /// Starts the operation, as [`crate::SourceApi::submit`]: `EBUSY` if it is in flight,
    /// `EAGAIN` if the system has no room now (try again once others have completed),
    /// `EINVAL` once its result was taken.
    pub fn submit(&mut self) -> nix::Result<()> {
        sys::Operation::submit(std::pin::Pin::new(&mut self.state))
    }

    /// Asks the system to cancel the operation, as [`crate::SourceApi::cancel`]; its event
    /// still arrives.
    pub fn cancel(&mut self) -> nix::Result<AioCancelStat> {
        sys::Operation::cancel(std::pin::Pin::new(&mut self.state))
    }

    /// `Err(EINPROGRESS)` while in flight, then `Ok(())` or the operation's error, as
    /// [`crate::SourceApi::error`].
    pub fn error(&mut self) -> nix::Result<()> {
        sys::Operation::error(std::pin::Pin::new(&mut self.state))
    }

    /// Whether the operation is in flight: submitted, and the kernel not done with it yet.
    pub fn is_running(&mut self) -> bool {
        self.state.running()
    }

    /// The result and the buffers, once the operation is not in flight; `None` while it is
    /// (a spurious event), or once they were taken.
    ///
    /// The result is the byte count (`()` for fsync) or the error. An operation that was never
    /// submitted gives `EINVAL` and its buffers back. Afterwards the operation is spent: its
    /// other methods fail with `EINVAL`, and dropping it frees only the file.
    pub fn take_result(&mut self) -> Option<(io::Result<T::Output>, B)> {
        if self.state.running() {
            return None;
        }
        let pinned = std::pin::Pin::new(&mut self.state);
        let result = if sys::Operation::in_progress(&*pinned) {
            sys::Operation::aio_return(pinned).map_err(io::Error::from)
        } else {
            Err(io::Error::from(nix::errno::Errno::EINVAL))
        };
        let bufs = self.state.take_bufs()?;
        Some((result, bufs))
    }
}

impl<T: Kind, B: Send + 'static, F: Send + 'static> event::Source for OwnedSource<T, B, F> {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        check_interest(interests, crate::AIO)?;
        sys::Operation::register(&mut self.state, registry, token)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        check_interest(interests, crate::AIO)?;
        sys::Operation::reregister(&mut self.state, registry, token)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        sys::Operation::deregister(&mut self.state, registry)
    }
}

impl<T: Kind, B: Send + 'static, F: Send + 'static> fmt::Debug for OwnedSource<T, B, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedSource")
            .field("in_progress", &sys::Operation::in_progress(&self.state))
            .finish_non_exhaustive()
    }
}

#[allow(dead_code)]
fn _assert_send_unpin() {
    fn check<T: Send + Unpin + 'static>() {}
    check::<ReadAt<std::fs::File, Vec<u8>>>();
    check::<ReadvAt<std::sync::Arc<std::fs::File>, Box<[u8]>>>();
    check::<WriteAt<std::fs::File, AlignedBuf>>();
    check::<WritevAt<std::fs::File, &'static [u8]>>();
    check::<Fsync<std::fs::File>>();
}
