//! Single operations on the kqueue systems: `ReadOp`, `ReadvOp`, `WriteOp`, `WritevOp` and
//! `FsyncOp`, each a thin wrapper around [`Op`], which holds the request, where its event goes
//! and, while in flight, its job.

use std::{
    io,
    marker::PhantomData,
    os::fd::{BorrowedFd, RawFd},
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
    sys::pool::{Described, IoVecs, Request},
    AioCancelStat,
};

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
    fn from_described(d: Described) -> Self {
        Op {
            request: d.request,
            invalid: d.invalid,
            _iovecs: d.iovecs,
            registration: Registered::default(),
            current: None,
            _borrow: PhantomData,
        }
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

crate::sys::pool::constructors!();
