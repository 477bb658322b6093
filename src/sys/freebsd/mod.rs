//! FreeBSD backend: POSIX AIO with completion delivered through kqueue.
//!
//! Single operations ([`ReadOp`], [`ReadvOp`], [`WriteOp`], [`WritevOp`], [`FsyncOp`]) wrap
//! nix's control blocks (`nix::sys::aio::AioRead` and friends) and submit them with
//! `aio_read(2)`, `aio_readv(2)`, `aio_write(2)`, `aio_writev(2)` and `aio_fsync(2)`.
//! Registering one stores a `SIGEV_KEVENT` notification (kqueue fd, token as `udata`,
//! `EV_ONESHOT`) in its control block, so that the kernel posts an `EVFILT_AIO` event when the
//! operation completes. A batch ([`LioCb`]) is submitted with `lio_listio(2)` in `LIO_NOWAIT`
//! mode (in rounds of at most `vfs.aio.max_aio_queue_per_proc` operations); its `EVFILT_LIO`
//! event, level-triggered in FreeBSD, goes to a kqueue of the batch's own, which the user's
//! kqueue reports once per submission (`batch_event.rs`), as readable.
//!
//! Differences from upstream mio-aio, which would panic or misbehave on misuse:
//!
//! * An fsync can be submitted again (after `EAGAIN`, or after `aio_return`): its control
//!   block is rebuilt before each submission (nix clears its mode at submission).
//! * Submitting, registering or deregistering an operation that is still in flight returns
//!   `EBUSY` instead of tripping nix's assertions; `register_raw`/`deregister_raw` (which cannot
//!   fail) do nothing in that case.
//! * An offset above `i64::MAX` makes `submit` fail with `EINVAL` instead of wrapping around.
//! * `aio_return` before completion returns `EINPROGRESS` without releasing the kernel's state.
//! * Dropping an operation or batch in flight cancels it and waits (`aio_suspend`) until the
//!   kernel has finished with its buffers, then calls `aio_return` to free the kernel's state.
//! * readv/writev copy the caller's scatter/gather list, which the kernel reads at submission.
//!
//! This module is compile-checked and linted on Linux (`--target x86_64-unknown-freebsd`) and
//! only runs on FreeBSD, in the GitHub workflow (`.github/workflows/ci.yml`). Its batch
//! bookkeeping is plain logic in `crate::lio_book`, unit-tested on every OS.

mod aio;
mod batch_event;
mod lio;
#[cfg(test)]
mod tests;

use std::{os::fd::BorrowedFd, ptr, thread, time::Duration};

use nix::{errno::Errno, libc, sys::event::EvFlags, sys::signal::SigevNotify};

pub use aio::{FsyncOp, ReadOp, ReadvOp, WriteOp, WritevOp};
pub use lio::LioCb;

/// The interest single operations register with.
pub const AIO: mio::Interest = mio::Interest::AIO;
/// The interest batches register with.
pub const LIO: mio::Interest = mio::Interest::LIO;

/// The notification that asks the kernel to post a one-shot event to kqueue `kq`, carrying
/// `udata` (the mio token), when an operation (or a batch) completes.
fn kevent_notify(kq: BorrowedFd<'_>, udata: usize) -> SigevNotify<'_> {
    SigevNotify::SigevKeventFlags {
        kq,
        // The kernel hands `udata` back unchanged; mio reads it as a `usize` token.
        udata: udata as isize,
        flags: EvFlags::EV_ONESHOT,
    }
}

/// `aio_error(2)` as a `Result`: `Err(EINPROGRESS)` while the operation runs.
///
/// # Safety
/// `cb` must point to a live `aiocb`.
unsafe fn aio_status(cb: *const libc::aiocb) -> nix::Result<()> {
    // SAFETY: the caller guarantees `cb` is valid; aio_error only reads it.
    // It returns the operation's errno (0 when done), or -1 and errno for its own failure.
    match syscall!(aio_error(cb))? {
        0 => Ok(()),
        e => Err(Errno::from_raw(e)),
    }
}

/// Blocks until the kernel has finished with the operation of `cb`, i.e. until `aio_error` no
/// longer reports `EINPROGRESS`. Afterwards the kernel no longer touches the operation's
/// buffers; `aio_return` must still be called to free its state.
///
/// # Safety
/// `cb` must point to a live `aiocb`.
unsafe fn wait_until_done(cb: *const libc::aiocb) {
    // SAFETY (both calls): the caller guarantees `cb` is valid.
    while unsafe { aio_status(cb) } == Err(Errno::EINPROGRESS) {
        let list = [cb];
        // SAFETY: `list` holds one valid pointer; a null timeout waits until it completes (or a
        // signal arrives).
        if let Err(errno) = syscall!(aio_suspend(list.as_ptr(), 1, ptr::null())) {
            match errno {
                Errno::EINTR | Errno::EAGAIN => (),
                // Not expected; avoid spinning hot, but never give up: the buffers must not be
                // released while the kernel may still write to them.
                _ => thread::sleep(Duration::from_millis(1)),
            }
        }
    }
}

/// Compile-time check: every type this backend hands to the portable layer is `Send + Sync`,
/// as mio-aio's have always been (tokio requires it).
#[allow(dead_code)]
fn assert_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<ReadOp<'static>>();
    check::<ReadvOp<'static>>();
    check::<WriteOp<'static>>();
    check::<WritevOp<'static>>();
    check::<FsyncOp<'static>>();
    check::<LioCb<'static>>();
}
