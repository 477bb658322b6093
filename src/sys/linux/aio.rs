//! Single operations: `ReadOp`, `ReadvOp`, `WriteOp`, `WritevOp` and `FsyncOp`, each a thin
//! wrapper around [`Op`], which holds the request, its registration and, while in flight, the
//! engine's handle on it.

use std::{
    io,
    marker::PhantomData,
    os::fd::{BorrowedFd, RawFd},
    pin::Pin,
};

use mio::{Registry, Token};
use nix::{errno::Errno, sys::aio::AioCancelStat};

use crate::sys::pool::{Described, IoVecs};

use super::{
    driver::Driver,
    engine::{io_errno, Request, Started},
    registration::{busy, epoll_fd, NotifyFd, Registered},
};

/// One operation: the common part of `ReadOp`, `WriteOp`, … on Linux.
#[derive(Debug)]
pub struct Op<'a> {
    request: Request,
    /// Why the operation can never be submitted (for example an offset beyond `i64::MAX`).
    invalid: Option<Errno>,
    _iovecs: Option<IoVecs>,
    registration: Registered,
    /// The submission in flight (or finished but not yet returned).
    current: Option<Started>,
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
        self.registration.check()?;
        let driver = Driver::get().map_err(io_errno)?;
        // SAFETY (both calls): the request points into buffers this operation borrows for 'a,
        // so they stay valid and unaliased for as long as the operation exists; its `Drop`
        // cancels and waits until the completion is done, so a dropped operation releases them
        // only after the kernel. An operation leaked in flight (`mem::forget`) ends the borrow
        // without that wait: the hole documented at the crate root ("Rules that keep memory
        // safe").
        if let Some(done) = unsafe { driver.read_now(self.request) }? {
            // A private notifier's watcher (the tokio layer) checks for completion after
            // `submit`: it needs no event.
            if !self.registration.is_private() {
                self.registration.announce().map_err(io_errno)?;
            }
            self.current = Some(done);
            return Ok(());
        }
        let notifier = self.registration.arm()?.cloned();
        // SAFETY: as above.
        self.current = Some(unsafe { driver.submit_one(self.request, notifier.as_ref()) }?);
        Ok(())
    }

    /// The completion, once done (reaping first); `EINPROGRESS` before.
    fn finished(&self) -> nix::Result<&Started> {
        let c = self.current.as_ref().ok_or(Errno::EINVAL)?;
        if !c.is_done() {
            if !c.is_ours() {
                // Inherited across fork: the parent's kernel queue owns it, not ours.
                return Err(Errno::ECANCELED);
            }
            c.reap();
            if !c.is_done() {
                return Err(Errno::EINPROGRESS);
            }
        }
        Ok(c)
    }

    fn aio_return(&mut self) -> nix::Result<usize> {
        let res = match self.finished() {
            Ok(c) => c.result(),
            Err(Errno::EINPROGRESS) => return Err(Errno::EINPROGRESS),
            Err(e) => Err(e),
        };
        self.current = None;
        res
    }

    fn error(&self) -> nix::Result<()> {
        self.finished()?.result().map(drop)
    }

    fn cancel(&self) -> AioCancelStat {
        match &self.current {
            None => AioCancelStat::AioAllDone,
            Some(c) => c.cancel(),
        }
    }

    fn register(&mut self, epfd: RawFd, token: usize) -> io::Result<()> {
        if self.current.is_some() {
            return Err(busy());
        }
        self.registration.register(epfd, token)
    }

    fn deregister(&mut self) -> io::Result<()> {
        if self.current.is_some() {
            return Err(busy());
        }
        self.registration.deregister();
        Ok(())
    }

    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    fn attach_private(&mut self) -> io::Result<NotifyFd> {
        if self.current.is_some() {
            return Err(busy());
        }
        self.registration.attach_private()
    }

    #[cfg(feature = "tokio")]
    fn attach_private_again(&mut self, fd: &NotifyFd) -> io::Result<()> {
        if self.current.is_some() {
            return Err(busy());
        }
        self.registration.attach_private_again(fd)
    }
}

impl Drop for Op<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.current.take() {
            if !c.is_done() {
                c.request_cancel();
                c.wait();
            }
        }
        self.registration.deregister();
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
                if let Some(c) = &self.0.current {
                    c.request_cancel();
                }
            }
            fn in_progress(&self) -> bool {
                self.0.current.is_some()
            }
            fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
                self.0.register(epoll_fd(registry), token.0)
            }
            fn reregister(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
                self.0.register(epoll_fd(registry), token.0)
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
            #[cfg(feature = "tokio")]
            fn attach_notify_fd(&mut self) -> io::Result<NotifyFd> {
                self.0.attach_private()
            }
            #[cfg(feature = "tokio")]
            fn attach_notify_fd_again(&mut self, fd: &NotifyFd) -> io::Result<()> {
                self.0.attach_private_again(fd)
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
/// An `fsync` or `fdatasync`.
#[derive(Debug)]
pub struct FsyncOp<'a>(Op<'a>);

operation!(ReadOp, usize, |n| n);
operation!(ReadvOp, usize, |n| n);
operation!(WriteOp, usize, |n| n);
operation!(WritevOp, usize, |n| n);
operation!(FsyncOp, (), drop);

crate::sys::pool::constructors!();
