//! Single operations: nix's control blocks behind a wrapper that reports misuse as errors and
//! makes dropping an operation in flight safe.

#[cfg(feature = "tokio")]
use std::os::fd::BorrowedFd;
use std::{
    fmt,
    io::{self, IoSlice, IoSliceMut},
    marker::PhantomPinned,
    os::fd::{AsFd, AsRawFd, BorrowedFd as Fd, RawFd},
    pin::Pin,
};

use mio::{Registry, Token};
use nix::{
    errno::Errno,
    libc,
    sys::{
        aio::{Aio, AioCancelStat, AioFsync, AioFsyncMode, AioRead, AioReadv, AioWrite, AioWritev},
        signal::SigevNotify,
    },
};

use super::{kevent_notify, wait_until_done};
use crate::sys::Operation;

/// A read (`aio_read`).
pub type ReadOp<'a> = PosixOp<AioRead<'a>>;
/// A vectored read (`aio_readv`, FreeBSD 13 and later).
pub type ReadvOp<'a> = PosixOp<AioReadv<'a>>;
/// A write (`aio_write`).
pub type WriteOp<'a> = PosixOp<AioWrite<'a>>;
/// A vectored write (`aio_writev`, FreeBSD 13 and later).
pub type WritevOp<'a> = PosixOp<AioWritev<'a>>;
/// An fsync (`aio_fsync`).
pub type FsyncOp<'a> = PosixOp<AioFsync<'a>>;

/// One POSIX AIO operation: one of nix's control blocks, plus what makes it safe to misuse.
///
/// The nix type is structurally pinned: `crate::Source` pins the `PosixOp`, and the kernel
/// keeps the control block's address from `submit` until `aio_return`.
pub struct PosixOp<T: Aio + AsRef<libc::aiocb>> {
    inner: T,
    /// fsync only: rebuilds the control block before each submission (see `rebuild_fsync`),
    /// with the mode kept here.
    rebuild: Option<(Rebuild<T>, AioFsyncMode)>,
    /// The registration (kqueue, token), re-applied by `rebuild`.
    notify: Option<(RawFd, usize)>,
    /// readv/writev only: our copy of the scatter/gather list, which the control block points to.
    iovecs: IoVecs,
    /// The offset given did not fit in an `off_t`: `submit` fails with `EINVAL`.
    offset_overflow: bool,
    _pin: PhantomPinned,
}

/// The offset as an `off_t`, and whether it did not fit (then the operation must never run).
fn offset(offs: u64) -> (libc::off_t, bool) {
    match libc::off_t::try_from(offs) {
        Ok(o) => (o, false),
        Err(_) => (0, true),
    }
}

impl<T: Aio + AsRef<libc::aiocb>> PosixOp<T> {
    fn wrap(inner: T, offset_overflow: bool, iovecs: IoVecs) -> Self {
        PosixOp {
            inner,
            rebuild: None,
            notify: None,
            iovecs,
            offset_overflow,
            _pin: PhantomPinned,
        }
    }

    fn inner(self: Pin<&mut Self>) -> Pin<&mut T> {
        // SAFETY: `inner` is structurally pinned: `PosixOp` never moves it out, its `Drop` only
        // uses it in place (through a pin), `PosixOp` is not `Unpin` (PhantomPinned), and it is
        // not `repr(packed)`.
        unsafe { self.map_unchecked_mut(|s| &mut s.inner) }
    }

    /// Changes the completion notification (a kevent to kqueue `kq` carrying `udata`, or none),
    /// which the kernel has copied if the operation is in flight: refuse then (nix would panic).
    fn set_notify(&mut self, notify: Option<(RawFd, usize)>) -> io::Result<()> {
        if self.inner.in_progress() {
            Err(Errno::EBUSY.into())
        } else {
            self.inner.set_sigev_notify(sigev_notify(notify));
            self.notify = notify;
            Ok(())
        }
    }
}

impl<'a> ReadOp<'a> {
    /// See `Source::read_at`.
    pub fn new(fd: Fd<'a>, offs: u64, buf: &'a mut [u8], prio: i32) -> Self {
        let (off, overflow) = offset(offs);
        let inner = AioRead::new(fd, off, buf, prio, SigevNotify::SigevNone);
        PosixOp::wrap(inner, overflow, IoVecs::none())
    }
}

impl<'a> ReadvOp<'a> {
    /// See `Source::readv_at`. The list `bufs` is copied; the buffers stay borrowed for `'a`.
    pub fn new(fd: Fd<'a>, offs: u64, bufs: &mut [IoSliceMut<'a>], prio: i32) -> Self {
        let (off, overflow) = offset(offs);
        let mut iovecs: Box<[libc::iovec]> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        let mut inner = AioReadv::new(fd, off, bufs, prio, SigevNotify::SigevNone);
        // nix points the control block at the caller's list, which may be a temporary that is
        // gone by the time the operation is submitted (the kernel reads the list then). Point it
        // at our heap copy instead: same length and contents, and it lives as long as `self`
        // (moving `self` does not move the boxed slice).
        AsMut::<libc::aiocb>::as_mut(&mut inner).aio_buf = iovecs.as_mut_ptr().cast();
        PosixOp::wrap(inner, overflow, IoVecs(iovecs))
    }
}

impl<'a> WriteOp<'a> {
    /// See `Source::write_at`.
    pub fn new(fd: Fd<'a>, offs: u64, buf: &'a [u8], prio: i32) -> Self {
        let (off, overflow) = offset(offs);
        let inner = AioWrite::new(fd, off, buf, prio, SigevNotify::SigevNone);
        PosixOp::wrap(inner, overflow, IoVecs::none())
    }
}

impl<'a> WritevOp<'a> {
    /// See `Source::writev_at`. The list `bufs` is copied; the buffers stay borrowed for `'a`.
    pub fn new(fd: Fd<'a>, offs: u64, bufs: &[IoSlice<'a>], prio: i32) -> Self {
        let (off, overflow) = offset(offs);
        let mut iovecs: Box<[libc::iovec]> = bufs
            .iter()
            .map(|b| libc::iovec {
                // The kernel only reads through this pointer (a write).
                iov_base: b.as_ptr().cast_mut().cast(),
                iov_len: b.len(),
            })
            .collect();
        let mut inner = AioWritev::new(fd, off, bufs, prio, SigevNotify::SigevNone);
        // As for `ReadvOp::new`: use our own copy of the list.
        AsMut::<libc::aiocb>::as_mut(&mut inner).aio_buf = iovecs.as_mut_ptr().cast();
        PosixOp::wrap(inner, overflow, IoVecs(iovecs))
    }
}

impl<'a> FsyncOp<'a> {
    /// See `Source::fsync`.
    pub fn new(fd: Fd<'a>, mode: AioFsyncMode, prio: i32) -> Self {
        let inner = AioFsync::new(fd, mode, prio, SigevNotify::SigevNone);
        let mut op = PosixOp::wrap(inner, false, IoVecs::none());
        op.rebuild = Some((rebuild_fsync, mode));
        op
    }
}

/// Makes a control block ready for another submission.
type Rebuild<T> = fn(Pin<&mut T>, AioFsyncMode, Option<(RawFd, usize)>);

/// nix's `AioFsync::submit` moves the mode out of the control block (`aio_lio_opcode` becomes
/// 0) before calling `aio_fsync`, and never puts it back, even when the call fails with
/// `EAGAIN`; FreeBSD refuses any mode but `O_SYNC`/`O_DSYNC` with `EINVAL`. So before each
/// submission the control block is rebuilt from the mode kept in `PosixOp`, and the
/// registration is applied to it again. Only for an fsync the kernel holds nothing for.
fn rebuild_fsync(
    mut fsync: Pin<&mut AioFsync<'_>>,
    mode: AioFsyncMode,
    notify: Option<(RawFd, usize)>,
) {
    let (fd, prio) = (fsync.fd().as_raw_fd(), fsync.priority());
    // SAFETY: `fd` is the descriptor the operation borrows for its whole lifetime (`'a` of
    // `FsyncOp<'a>`), so it is open for as long as the new control block lives.
    let fd = unsafe { Fd::borrow_raw(fd) };
    // Replaces the old control block in place (it is not in flight: nix drops it quietly).
    fsync.set(AioFsync::new(fd, mode, prio, sigev_notify(notify)));
}

/// The notification for a registration (kqueue, token), or none.
fn sigev_notify(notify: Option<(RawFd, usize)>) -> SigevNotify<'static> {
    match notify {
        // SAFETY: the kqueue is only named here: nix copies the raw number into the control
        // block, and the kernel checks it at submission (`EBADF` if it was closed since).
        Some((kq, udata)) => kevent_notify(unsafe { Fd::borrow_raw(kq) }, udata),
        None => SigevNotify::SigevNone,
    }
}

impl<T: Aio + AsRef<libc::aiocb>> Operation for PosixOp<T> {
    type Output = T::Output;

    fn submit(mut self: Pin<&mut Self>) -> nix::Result<()> {
        if self.inner.in_progress() {
            // Submitting the same control block twice would corrupt the kernel's bookkeeping.
            return Err(Errno::EBUSY);
        }
        if self.offset_overflow {
            return Err(Errno::EINVAL);
        }
        if let Some((rebuild, mode)) = self.rebuild {
            let notify = self.notify;
            rebuild(self.as_mut().inner(), mode, notify);
        }
        self.inner().submit()
    }

    fn aio_return(self: Pin<&mut Self>) -> nix::Result<T::Output> {
        let mut inner = self.inner();
        // FreeBSD's aio_return fails (EINVAL) for an operation still running, but nix would
        // then forget that it is in flight, and dropping it would no longer wait for the
        // kernel. Keep the state instead.
        if inner.in_progress() && inner.as_mut().error() == Err(Errno::EINPROGRESS) {
            return Err(Errno::EINPROGRESS);
        }
        inner.aio_return()
    }

    fn error(self: Pin<&mut Self>) -> nix::Result<()> {
        self.inner().error()
    }

    fn cancel(self: Pin<&mut Self>) -> nix::Result<AioCancelStat> {
        self.inner().cancel()
    }

    fn in_progress(&self) -> bool {
        // As upstream: true from a successful submit until aio_return, because the kernel holds
        // state (and may use the buffers) until then.
        self.inner.in_progress()
    }

    fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        self.set_notify(Some((registry.as_fd().as_raw_fd(), usize::from(token))))
    }

    fn reregister(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        self.register(registry, token)
    }

    fn deregister(&mut self, _registry: &Registry) -> io::Result<()> {
        self.set_notify(None)
    }

    /// Does nothing while the operation is in flight: the kernel has already copied its
    /// notification settings, and this method cannot report an error.
    #[cfg(feature = "tokio")]
    fn register_raw(&mut self, kq: BorrowedFd, udata: usize) {
        let _ = self.set_notify(Some((kq.as_raw_fd(), udata)));
    }

    /// Does nothing while the operation is in flight, like `register_raw`.
    #[cfg(feature = "tokio")]
    fn deregister_raw(&mut self) {
        let _ = self.set_notify(None);
    }
}

impl<T: Aio + AsRef<libc::aiocb>> Drop for PosixOp<T> {
    /// An operation in flight is cancelled and waited for, so that the kernel is done with its
    /// buffers before they are released; then `aio_return` frees the kernel's state (and keeps
    /// nix's own drop from panicking).
    fn drop(&mut self) {
        if !self.inner.in_progress() {
            return;
        }
        // SAFETY: `inner` is structurally pinned (see `PosixOp::inner`) and is never moved: it
        // is used in place here and dropped in place right after.
        let mut inner = unsafe { Pin::new_unchecked(&mut self.inner) };
        if inner.as_mut().error() == Err(Errno::EINPROGRESS) {
            // Most file systems cannot cancel; then this waits for the operation to finish.
            let _ = inner.as_mut().cancel();
            let cb: *const libc::aiocb = AsRef::<libc::aiocb>::as_ref(&*inner);
            // SAFETY: `cb` points to the live control block inside `self`.
            unsafe { wait_until_done(cb) };
        }
        let _ = inner.as_mut().aio_return();
    }
}

impl<T: Aio + AsRef<libc::aiocb> + fmt::Debug> fmt::Debug for PosixOp<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PosixOp")
            .field("inner", &self.inner)
            .field("iovecs", &self.iovecs)
            .field("offset_overflow", &self.offset_overflow)
            .finish()
    }
}

/// Our own copy of a readv/writev scatter/gather list (empty for other operations).
///
/// The kernel reads the list when the operation is submitted, so it must live as long as the
/// operation, which a caller's temporary array need not do.
struct IoVecs(Box<[libc::iovec]>);

impl IoVecs {
    fn none() -> Self {
        IoVecs(Box::new([]))
    }
}

// SAFETY: the iovecs point into buffers that the enclosing operation borrows for its lifetime
// (`&'a mut [u8]` for reads, `&'a [u8]` for writes, both `Send + Sync`); this type never
// dereferences them, it only hands their addresses to the kernel.
unsafe impl Send for IoVecs {}
// SAFETY: as above; there is no interior mutability.
unsafe impl Sync for IoVecs {}

impl fmt::Debug for IoVecs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IoVecs({} buffers)", self.0.len())
    }
}
