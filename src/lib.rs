//! Asynchronous file I/O as [`mio`] event sources.
//!
//! `mio` gives one event loop for sockets, pipes and timers, but a regular file is always
//! "ready": a read that misses the page cache blocks the whole loop. With `mio-aio`, each file
//! operation (read, write, readv, writev, fsync, or a batch of them) is an event source of its
//! own. Register it with a [`mio::Registry`] under its own [`mio::Token`], submit it, and the
//! token comes back from [`mio::Poll::poll`] when the operation has finished, like any socket
//! event; then [`SourceApi::aio_return`] yields the result.
//!
//! | Platform | Mechanism | Completion delivered through |
//! |---|---|---|
//! | FreeBSD | POSIX AIO (`aio_read`, `lio_listio`, …) | kqueue (`SIGEV_KEVENT`) |
//! | Linux | io_uring; kernel AIO (`io_submit`) where io_uring is refused; a thread pool as the last resort | an eventfd per operation, registered with epoll |
//!
//! The API is the same on both systems: a portable program needs no `cfg`. Register with
//! [`AIO`] (single operations) or [`LIO`] (batches), which name the right [`mio::Interest`] on
//! each system.
//!
//! # Example
//! ```
//! use std::{io::Write, os::fd::AsFd};
//! use mio::{Events, Poll, Token};
//! use mio_aio::{SourceApi, ReadAt};
//!
//! let mut file = tempfile::tempfile().unwrap();
//! file.write_all(b"abcdef123456").unwrap();
//!
//! let mut poll = Poll::new().unwrap();
//! let mut events = Events::with_capacity(16);
//! let mut buf = [0u8; 4];
//! let mut op = ReadAt::read_at(file.as_fd(), 2, &mut buf, 0);
//! // Register first, then pin: the operation must not move once submitted.
//! poll.registry().register(&mut op, Token(7), mio_aio::AIO).unwrap();
//! let mut op = Box::pin(op);
//! op.as_mut().submit().unwrap();
//! loop {
//!     // A completion may also interrupt the wait (see "Interrupted waits" below).
//!     match poll.poll(&mut events, None) {
//!         Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
//!         r => r.unwrap(),
//!     }
//!     if events.iter().any(|ev| ev.token() == Token(7)) {
//!         break;
//!     }
//! }
//! assert_eq!(op.as_mut().aio_return().unwrap(), 4);
//! drop(op);
//! assert_eq!(&buf, b"cdef");
//! ```
//!
//! # Rules that keep memory safe
//! * A [`Source`] borrows its buffers for its whole life, and is `!Unpin`: register it, then pin
//!   it (for example with `Box::pin`) before [`SourceApi::submit`].
//! * Dropping an operation that is still in flight is safe: the drop asks the kernel to cancel
//!   it and then waits until the kernel has finished with the buffer. That wait may be as long
//!   as the operation itself.
//!
//! # Pipes and sockets
//! Pipes, FIFOs and sockets have no file position: give operations on them offset 0, and they
//! read or write the stream in order, as FreeBSD's AIO and Linux's io_uring do natively (the
//! other Linux backends do the same). With another offset the result depends on the system:
//! some refuse it with `ESPIPE`, others ignore the offset.
//!
//! # Interrupted waits (Linux, io_uring)
//! With io_uring, the kernel may finish an operation by running a small piece of work on the
//! thread that submitted it. If that thread is blocked in `Poll::poll`, the wait returns
//! [`std::io::ErrorKind::Interrupted`], which mio passes to the caller. Handle it as mio's own
//! examples do: ignore it and poll again. Kernel AIO and the thread pool never cause it.
//!
//! # Threads that exit (Linux, io_uring)
//! io_uring ties each request to the thread that submitted it: the kernel finishes parts of
//! it (completions from its workers, reads retried once their pages arrive, the write that
//! signals the operation's event) as work run on that thread. So a thread that exits with
//! operations in flight first waits, in its thread-local destructors, until the kernel is done
//! with them:
//! * operations on files and block devices complete normally, with their event; the thread
//!   waits as long as the storage takes, at most 10 seconds, then cancels what is left;
//! * reads and writes of pipes, sockets and other streams, which may wait forever for data,
//!   are cancelled at once: they complete with [`Errno::ECANCELED`], and their event arrives.
//!
//! The process's main thread does not wait (its exit ends the process). Submit stream
//! operations from threads that live as long as they do (an event loop, a tokio worker), or use
//! the kernel AIO or thread-pool backend, which have no such tie (nor has FreeBSD).
//!
//! # Feature flags
#![cfg_attr(
    feature = "tokio",
    doc = "* `tokio` - adds the [`tokio`](mod@crate::tokio) module: file operations and batches as
  futures on a tokio runtime (`AioFileExt::read_at(..).await`, `LioFut`), and
  [`tokio::compat`](mod@crate::tokio::compat) with the method shapes of the `tokio-file`
  crate. It also adds [`SourceApi::register_raw`] and [`SourceApi::deregister_raw`], which consumers need to
  implement tokio's `AioSource` trait."
)]
#![cfg_attr(
    not(feature = "tokio"),
    doc = "* `tokio` - adds the `tokio` module: file operations and batches as futures on a tokio
  runtime (`AioFileExt::read_at(..).await`, `LioFut`), and `tokio::compat` with the method
  shapes of the `tokio-file` crate. It also adds `SourceApi::register_raw`
  and `SourceApi::deregister_raw`, which consumers need to implement tokio's `AioSource`
  trait."
)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod lio;
#[cfg_attr(not(target_os = "freebsd"), allow(dead_code))]
mod lio_book;
pub mod owned;
mod source;
mod sys;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod tokio;

pub use lio::{LioCb, LioCbBuilder, LioError, LioOpcode, LioResult};
/// The error type of this crate's operations: the system's `errno` values, from [`nix`].
///
/// [`SourceApi::submit`], [`SourceApi::aio_return`], [`SourceApi::error`] and
/// [`SourceApi::cancel`] return `Result<_, Errno>`; an operation still running reports
/// `Err(Errno::EINPROGRESS)` from [`SourceApi::error`]. The values that matter most here:
/// `EAGAIN` (no room to start the operation now: retry later), `EINPROGRESS` (not done yet),
/// `ECANCELED` (cancelled before it finished), `EBADF`/`EINVAL` (a bad descriptor, offset or
/// buffer), `ENOSPC`/`EIO` (the file system's own errors), `EMFILE` (out of descriptors, on
/// Linux where each registered operation holds one). [`Errno::desc`] gives the message, and
/// `std::io::Error::from(errno)` converts it for `?` in functions returning `io::Result`.
pub use nix::errno::Errno;
/// Whether [`SourceApi::cancel`] removed an operation before it ran
/// ([`AioCanceled`](AioCancelStat::AioCanceled)), found it already running
/// ([`AioNotCanceled`](AioCancelStat::AioNotCanceled): wait for its event as usual) or already
/// finished ([`AioAllDone`](AioCancelStat::AioAllDone)). [`SourceApi::cancel`] returns it.
///
/// nix's own type, re-exported as mio-aio 2.0 does (so `use mio_aio::AioCancelStat::*` works).
#[doc(no_inline)]
pub use nix::sys::aio::AioCancelStat;
/// What [`Fsync::fsync`] makes durable: `O_SYNC` the data and the metadata (like `fsync(2)`),
/// `O_DSYNC` only what is needed to read the data back (like `fdatasync(2)`). [`Fsync::fsync`]
/// takes it.
///
/// nix's own type, re-exported as mio-aio 2.0 does.
#[doc(no_inline)]
pub use nix::sys::aio::AioFsyncMode;
pub use source::{Fsync, ReadAt, ReadvAt, Source, SourceApi, WriteAt, WritevAt};

#[cfg(target_os = "linux")]
#[cfg_attr(docsrs, doc(cfg(target_os = "linux")))]
pub use sys::linux_api::{backend, set_backend, Backend};

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The [`mio::Interest`] to register a single operation ([`Source`]) with.
///
/// On FreeBSD this is `Interest::AIO`; on Linux, where an operation's completion is signalled
/// through an eventfd, it is `Interest::READABLE`. Registering with any other interest fails
/// with [`std::io::ErrorKind::InvalidInput`].
pub const AIO: mio::Interest = sys::AIO;

/// The [`mio::Interest`] to register a batch ([`LioCb`]) with.
///
/// On FreeBSD this is `Interest::LIO`; on Linux it is `Interest::READABLE`.
pub const LIO: mio::Interest = sys::LIO;
