//! Single operations on the kqueue systems: `ReadOp`, `ReadvOp`, `WriteOp`, `WritevOp` and
//! `FsyncOp`, each a thin wrapper around [`Op`], which holds the request, where its event goes
//! and, while in flight, its job.

use std::{
    io::{self, IoSlice, IoSliceMut},
    marker::PhantomData,
    os::fd::{AsRawFd, BorrowedFd, RawFd},
    pin::Pin,
    sync::Arc,
};

use mio::{Registry, Token};
use nix::errno::Errno;

use super::{
    job::KqJob,
    notify::UserEvent,
    registration::{busy, kqueue_fd, NotifyFd, Registered},
};
use crate::{
    sys::pool::{OpKind, Request},
    AioCancelStat, AioFsyncMode,
};

/// iovec arrays copied out of the caller's slice, so the workers read a stable copy. The field
/// is only read through `Request::addr`.
#[derive(Debug)]
struct IoVecs(#[allow(dead_code)] Box<[libc::iovec]>);
// SAFETY: the iovecs point into buffers the operation borrows (shared for writes, exclusively
// for reads) for its lifetime; moving or sharing the array itself across threads is harmless.
unsafe impl Send for IoVecs {}
// SAFETY: as above; the array is never mutated after construction.
unsafe impl Sync for IoVecs {}

/// One operation: the common part of `ReadOp`, `WriteOp`, … on the kqueue systems.
#[derive(Debug)]
pub struct Op<'a> {
    request: Request,
    /// Why the operation can never be submitted (for example an offset beyond `i64::MAX`).
    invalid: Option<Errno>,
    _iovecs: Option<IoVecs>,
    registration: Registered,
    /// The submission in flight (or finished but not yet returned), and its event.
    current: Option<(Arc<KqJob>, Option<Arc<UserEvent>>)>,
    _borrow: PhantomData<&'a mut [u8]>,
}

impl Op<'_> {
    fn new(kind: OpKind, fd: RawFd, offset: u64, addr: *mut u8, len: usize) -> Self {
        let invalid =
            (i64::try_from(offset).is_err() || len > isize::MAX as usize).then_some(Errno::EINVAL);
        Op {
            request: Request {
                kind,
                fd,
                offset,
                addr,
                len,
            },
            invalid,
            _iovecs: None,
            registration: Registered::default(),
            current: None,
            _borrow: PhantomData,
        }
    }

    fn vectored(kind: OpKind, fd: RawFd, offset: u64, iovecs: Box<[libc::iovec]>) -> Self {
        let mut op = Op::new(kind, fd, offset, std::ptr::null_mut(), iovecs.len());
        op.request.addr = iovecs.as_ptr() as *mut u8;
        let total = iovecs
            .iter()
            .try_fold(0usize, |t, v| t.checked_add(v.iov_len));
        if i32::try_from(iovecs.len()).is_err() || total.is_none_or(|t| t > isize::MAX as usize) {
            op.invalid = Some(Errno::EINVAL);
        }
        op._iovecs = Some(IoVecs(iovecs));
        op
    }

    fn submit(&mut self) -> nix::Result<()> {
        if self.current.is_some() {
            return Err(Errno::EBUSY);
        }
        if let Some(e) = self.invalid {
            return Err(e);
        }
        let event = self.registration.arm()?;
        // SAFETY: the request points into buffers this operation borrows for 'a, so they stay
        // valid and unaliased for as long as the operation exists; its `Drop` cancels and waits
        // until the job is done, so a dropped operation releases them only after the worker.
        // An operation leaked in flight (`mem::forget`) ends the borrow without that wait: the
        // hole documented at the crate root ("Rules that keep memory safe").
        let mut jobs = unsafe { KqJob::start(&[self.request], event.clone(), None) }?;
        self.current = Some((jobs.pop().expect("one request, one job"), event));
        Ok(())
    }

    fn job(&self) -> nix::Result<&Arc<KqJob>> {
        self.current.as_ref().map(|(j, _)| j).ok_or(Errno::EINVAL)
    }

    fn aio_return(&mut self) -> nix::Result<usize> {
        let res = self.job()?.result();
        if res != Err(Errno::EINPROGRESS) {
            if let Some((_, Some(event))) = self.current.take() {
                event.disarm();
            }
        }
        res
    }

    fn error(&self) -> nix::Result<()> {
        self.job()?.result().map(drop)
    }

    fn cancel(&self) -> AioCancelStat {
        match &self.current {
            None => AioCancelStat::AioAllDone,
            Some((j, _)) => j.cancel(),
        }
    }

    fn register(&mut self, kq: RawFd, token: usize) -> io::Result<()> {
        if self.current.is_some() {
            return Err(busy());
        }
        self.registration.register(kq, token)
    }

    fn deregister(&mut self) -> io::Result<()> {
        if self.current.is_some() {
            return Err(busy());
        }
        self.registration.deregister();
        Ok(())
    }
}

impl Op<'_> {
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    fn attach_private(&mut self) -> io::Result<NotifyFd> {
        if self.current.is_some() {
            return Err(busy());
        }
        self.registration.attach_private()
    }
}

impl Drop for Op<'_> {
    fn drop(&mut self) {
        if let Some((job, event)) = self.current.take() {
            job.request_cancel();
            job.wait();
            if let Some(event) = event {
                event.disarm();
            }
        }
    }
}

/// Implements `sys::Operation` for one operation type, converting the byte count.
macro_rules! operation {
    ($name:ident, $output:ty, $convert:expr) => {
        impl crate::sys::Operation for $name<'_> {
            type Output = $output;

            fn submit(self: Pin<&mut Self>) -> nix::Result<()> {
                self.get_mut().0.submit()
            }
            fn aio_return(self: Pin<&mut Self>) -> nix::Result<$output> {
                self.get_mut().0.aio_return().map($convert)
            }
            fn error(self: Pin<&mut Self>) -> nix::Result<()> {
                self.0.error()
            }
            fn cancel(self: Pin<&mut Self>) -> nix::Result<AioCancelStat> {
                Ok(self.0.cancel())
            }
            fn request_cancel(self: Pin<&mut Self>) {
                if let Some((j, _)) = &self.0.current {
                    j.request_cancel();
                }
            }
            fn in_progress(&self) -> bool {
                self.0.current.is_some()
            }
            fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
                self.0.register(kqueue_fd(registry), token.0)
            }
            fn reregister(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
                self.0.register(kqueue_fd(registry), token.0)
            }
            fn deregister(&mut self, _registry: &Registry) -> io::Result<()> {
                self.0.deregister()
            }
            #[cfg(feature = "tokio")]
            fn register_raw(&mut self, kq: BorrowedFd, udata: usize) {
                if self.0.current.is_none() {
                    self.0.registration.register_raw(kq, udata)
                }
            }
            #[cfg(feature = "tokio")]
            fn deregister_raw(&mut self) {
                if self.0.current.is_none() {
                    self.0.registration.deregister()
                }
            }
            #[cfg(all(feature = "tokio", not(target_os = "linux")))]
            fn attach_notify_fd(&mut self) -> io::Result<NotifyFd> {
                self.0.attach_private()
            }
            /// The Linux test build (see `notify_epoll.rs`) has no tokio layer of its own.
            #[cfg(all(feature = "tokio", target_os = "linux"))]
            fn attach_notify_fd(&mut self) -> io::Result<crate::sys::NotifyFd> {
                Err(io::ErrorKind::Unsupported.into())
            }
        }
    };
}

/// A read (`pread`) in flight or ready to submit.
#[derive(Debug)]
pub struct ReadOp<'a>(Op<'a>);
/// A vectored read (`preadv`).
#[derive(Debug)]
pub struct ReadvOp<'a>(Op<'a>);
/// A write (`pwrite`).
#[derive(Debug)]
pub struct WriteOp<'a>(Op<'a>);
/// A vectored write (`pwritev`).
#[derive(Debug)]
pub struct WritevOp<'a>(Op<'a>);
/// An `fsync`, `fdatasync` or, on macOS, `fcntl(F_FULLFSYNC)` (see the module docs).
#[derive(Debug)]
pub struct FsyncOp<'a>(Op<'a>);

operation!(ReadOp, usize, |n| n);
operation!(ReadvOp, usize, |n| n);
operation!(WriteOp, usize, |n| n);
operation!(WritevOp, usize, |n| n);
operation!(FsyncOp, (), drop);

impl<'a> ReadOp<'a> {
    pub(crate) fn new(fd: BorrowedFd<'a>, offs: u64, buf: &'a mut [u8], _prio: i32) -> Self {
        ReadOp(Op::new(
            OpKind::Read,
            fd.as_raw_fd(),
            offs,
            buf.as_mut_ptr(),
            buf.len(),
        ))
    }
}

impl<'a> WriteOp<'a> {
    pub(crate) fn new(fd: BorrowedFd<'a>, offs: u64, buf: &'a [u8], _prio: i32) -> Self {
        // The pointer is only ever read through (the kernel writes from it).
        let addr = buf.as_ptr() as *mut u8;
        WriteOp(Op::new(
            OpKind::Write,
            fd.as_raw_fd(),
            offs,
            addr,
            buf.len(),
        ))
    }
}

impl<'a> ReadvOp<'a> {
    pub(crate) fn new(
        fd: BorrowedFd<'a>,
        offs: u64,
        bufs: &mut [IoSliceMut<'a>],
        _prio: i32,
    ) -> Self {
        let iovecs = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        ReadvOp(Op::vectored(OpKind::Readv, fd.as_raw_fd(), offs, iovecs))
    }
}

impl<'a> WritevOp<'a> {
    pub(crate) fn new(fd: BorrowedFd<'a>, offs: u64, bufs: &[IoSlice<'a>], _prio: i32) -> Self {
        let iovecs = bufs
            .iter()
            .map(|b| libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            })
            .collect();
        WritevOp(Op::vectored(OpKind::Writev, fd.as_raw_fd(), offs, iovecs))
    }
}

impl<'a> FsyncOp<'a> {
    pub(crate) fn new(fd: BorrowedFd<'a>, mode: AioFsyncMode, _prio: i32) -> Self {
        // DragonFly's `AioFsyncMode` (nix's) has only `O_SYNC`.
        #[cfg(not(target_os = "dragonfly"))]
        let kind = match mode {
            AioFsyncMode::O_DSYNC => OpKind::Fdatasync,
            _ => OpKind::Fsync,
        };
        #[cfg(target_os = "dragonfly")]
        let kind = {
            let _: AioFsyncMode = mode;
            OpKind::Fsync
        };
        FsyncOp(Op::new(kind, fd.as_raw_fd(), 0, std::ptr::null_mut(), 0))
    }
}
