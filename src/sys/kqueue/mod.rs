//! macOS, DragonFly, NetBSD and OpenBSD: worker threads that complete through the caller's
//! kqueue.
//!
//! Operations run on the worker pool shared with Linux's thread-pool engine
//! (`crate::sys::pool`): plain `pread`/`pwrite`/`preadv`/`pwritev`/`fsync` calls on worker
//! threads, with cancellable `poll` waits for pipes and sockets. Each submission of a
//! registered operation or batch arms one `EVFILT_USER` event in the kqueue behind the mio
//! `Registry` (`udata` = the token); the worker that finishes the operation (or the batch's
//! last entry) triggers it with `NOTE_TRIGGER`; collecting (`aio_return`, `into_results`) or
//! dropping the operation deletes it. The event is one-shot, so exactly one arrives per
//! submission. mio reports `EVFILT_USER` events as readable (it uses the filter for its own
//! `Waker`), so [`AIO`] and [`LIO`] are [`Interest::READABLE`] here.
//!
//! # Why worker threads, not POSIX AIO
//! macOS has POSIX AIO, but no way for it to post a kqueue event per operation (no
//! `SIGEV_KEVENT`): one thread would have to sit in `aio_suspend` over every operation in
//! flight and relay completions, and the whole system shares `kern.aiomax` (90 by default)
//! operations, so a busy program would see `EAGAIN` from other programs' I/O. DragonFly's,
//! NetBSD's and OpenBSD's AIO (where it exists) runs the calls synchronously or in kernel
//! threads with no kqueue notification either. Worker threads cost one context switch per
//! operation and have no system-wide limit, and the same engine is tested on Linux on every
//! CI run.
//!
//! # `fsync` modes
//! `AioFsyncMode::O_SYNC` is `fsync(2)`, `O_DSYNC` `fdatasync(2)` on DragonFly, NetBSD and
//! OpenBSD. On macOS both are `fcntl(F_FULLFSYNC)`: `fsync(2)` there only hands the data to
//! the drive, whose cache may lose it on power failure, and durability is what a caller of
//! `fsync` asks for. It costs more (a drive cache flush); file systems without it fall back to
//! `fsync(2)`.
//!
//! # Limits
//! A read or write on a stream transfers once `poll` says it is ready, with the plain call (no
//! `RWF_NOWAIT` here): another reader of the same stream taking the data first makes the
//! worker block until more comes, and a cancel cannot end that. `fork` is not handled as on
//! Linux: a child must not touch operations its parent submitted.
//!
//! `EVFILT_USER` is recent on some of these systems (NetBSD 10; OpenBSD only in recent
//! releases): where the kernel lacks it, arming the event fails and `submit` of a registered
//! operation returns that error (an unregistered one, polled with `error()`, still works).

mod aio;
mod job;
mod lio;
// On Linux this module is only built for the unit tests, with an epoll stand-in for
// `EVFILT_USER`, so that its logic runs on every Linux test run.
#[cfg_attr(target_os = "linux", path = "notify_epoll.rs")]
mod notify;
mod registration;
#[cfg(test)]
mod tests;

use mio::Interest;

#[cfg(feature = "tokio")]
pub use self::registration::NotifyFd;
pub use self::{
    aio::{FsyncOp, ReadOp, ReadvOp, WriteOp, WritevOp},
    lio::LioCb,
};

/// mio reports `EVFILT_USER` events as readable.
pub const AIO: Interest = Interest::READABLE;
/// mio reports `EVFILT_USER` events as readable.
pub const LIO: Interest = Interest::READABLE;

/// Operations and batches are `Send + Sync`, as mio-aio's have always been (tokio needs it).
const _: fn() = || {
    fn check<T: Send + Sync>() {}
    check::<ReadOp<'static>>();
    check::<LioCb<'static>>();
};
