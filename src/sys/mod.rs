//! The platform backends, behind one small contract.
//!
//! Every platform module provides:
//!
//! * `AIO` and `LIO`: the [`mio::Interest`]s that single operations and batches register with.
//! * `ReadOp<'a>`, `ReadvOp<'a>`, `WriteOp<'a>`, `WritevOp<'a>`, `FsyncOp<'a>`: one operation
//!   each, built by `new` with the arguments of the matching `Source` constructor, and
//!   implementing [`Operation`]. Dropping one while it is in flight cancels it and waits until
//!   the kernel has released its buffers.
//! * `LioCb<'a>`: a batch, built by `LioCb::new(Vec<LioEntry>)`, with `submit`, `resubmit`,
//!   `into_results`, `in_progress`, `len` and the same registration methods as an operation;
//!   its event arrives once, when every operation it submitted has completed.
//!
//! Everything else (how submission and completion work, worker threads, fds) is the platform's
//! own business: `freebsd` (POSIX AIO and kqueue), `linux` (io_uring, kernel AIO or worker
//! threads, and epoll), `kqueue` (macOS, DragonFly, NetBSD, OpenBSD: worker threads and
//! `EVFILT_USER`); `pool` is the worker pool that `linux` and `kqueue` share. `crate::source` and `crate::lio` hold the public, portable types.

#[cfg(feature = "tokio")]
use std::os::fd::BorrowedFd;
use std::{io, pin::Pin};

use crate::AioCancelStat;
use mio::{Registry, Token};

/// What every platform's single-operation type implements; `crate::Source` forwards to it.
///
/// The methods have the meaning documented on [`crate::SourceApi`]. `register` and friends get
/// the interest already checked.
pub trait Operation {
    /// The result type of `aio_return`.
    type Output;
    fn submit(self: Pin<&mut Self>) -> nix::Result<()>;
    fn aio_return(self: Pin<&mut Self>) -> nix::Result<Self::Output>;
    fn error(self: Pin<&mut Self>) -> nix::Result<()>;
    fn cancel(self: Pin<&mut Self>) -> nix::Result<AioCancelStat>;
    /// Asks for cancellation without waiting to learn whether it happened (`cancel` may wait a
    /// bounded moment for a truthful answer): for a caller that must not wait, such as the
    /// orphanage of owned operations. Where `cancel` never waits (FreeBSD's `aio_cancel`), it
    /// is `cancel`.
    fn request_cancel(self: Pin<&mut Self>) {
        let _ = self.cancel();
    }
    fn in_progress(&self) -> bool;
    fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()>;
    fn reregister(&mut self, registry: &Registry, token: Token) -> io::Result<()>;
    fn deregister(&mut self, registry: &Registry) -> io::Result<()>;
    #[cfg(feature = "tokio")]
    fn register_raw(&mut self, kq: BorrowedFd, udata: usize);
    #[cfg(feature = "tokio")]
    fn deregister_raw(&mut self);
    /// Linux: gives the operation an eventfd of its own, in no epoll set, and returns it; it
    /// becomes readable when the operation completes. The kqueue systems: a kqueue of its own,
    /// readable while its completion event is pending. Replaces any registration. Fails with
    /// `ResourceBusy` while the operation is in flight.
    #[cfg(all(feature = "tokio", not(target_os = "freebsd")))]
    fn attach_notify_fd(&mut self) -> io::Result<NotifyFd>;
    /// Like `attach_notify_fd`, with a descriptor that an earlier operation's
    /// `attach_notify_fd` returned and that is idle now (Linux: `NotifyFd::is_idle`; else
    /// `ResourceBusy`), so that its watcher can keep watching it. `Unsupported` where
    /// descriptors are not reused.
    #[cfg(all(feature = "tokio", not(target_os = "freebsd")))]
    fn attach_notify_fd_again(&mut self, fd: &NotifyFd) -> io::Result<()> {
        let _ = fd;
        Err(io::ErrorKind::Unsupported.into())
    }
}

#[cfg(target_os = "freebsd")]
mod freebsd;
#[cfg(target_os = "freebsd")]
pub use freebsd::*;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(not(target_os = "freebsd"))]
mod pool;

#[cfg(any(
    target_os = "macos",
    target_os = "dragonfly",
    target_os = "netbsd",
    target_os = "openbsd",
    all(test, target_os = "linux")
))]
#[cfg_attr(target_os = "linux", allow(dead_code, unused_imports))]
mod kqueue;
#[cfg(any(
    target_os = "macos",
    target_os = "dragonfly",
    target_os = "netbsd",
    target_os = "openbsd"
))]
pub use kqueue::*;
#[cfg(target_os = "linux")]
pub use linux::*;

#[cfg(not(any(
    target_os = "freebsd",
    target_os = "linux",
    target_os = "macos",
    target_os = "dragonfly",
    target_os = "netbsd",
    target_os = "openbsd"
)))]
compile_error!("mio-aio supports FreeBSD, Linux, macOS, DragonFly, NetBSD and OpenBSD");
