//! `Owning`: a borrowed-buffer operation together with the file and buffers it borrows, which
//! is what makes the owned operations safe.
//!
//! # Safety: why lending `'static` borrows is sound
//!
//! The constructors below are the only place where the crate's borrowed operations
//! (`Source<ReadOp<'a>>`, …) are given borrows that the compiler cannot check: the file
//! descriptor of `file` and the bytes of `bufs`, both claimed to live for `'static`. That
//! holds because of how `Owning` keeps them:
//!
//! * the borrows are created from values that `Owning` then owns, and are handed only to the
//!   operation stored in the same `Owning`; nothing else ever sees them;
//! * the bytes live on the heap and do not move when their owner moves (the contract of the
//!   `unsafe` traits [`IoBuf`] and [`IoBufMut`]); the descriptor stays open as long as `file`
//!   exists;
//! * `bufs` and `file` are released only after the operation: `Owning` returns the buffers
//!   (`take_bufs`) only once the operation is not in flight and has been dropped; its `Drop`
//!   drops the operation first when it is done, and otherwise moves all three, together, to
//!   the orphanage, which drops them in the same order once the kernel is done;
//! * if an `Owning` (or whatever holds it) is leaked with `mem::forget`, nothing is dropped:
//!   the buffers and the file leak with the operation and stay valid for the kernel forever.
//!   Leaking costs memory; it never frees memory the kernel still uses.
//!
//! While in flight, the buffers are not touched by anyone but the kernel: `Owning` gives no
//! access to them until `take_bufs`.

use std::{
    io::{IoSlice, IoSliceMut},
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    pin::Pin,
};

use mio::{Registry, Token};
use nix::errno::Errno;

use crate::AioCancelStat;

use super::{
    buf::{IoBuf, IoBufMut},
    orphanage::{self, Orphan},
};
use crate::{sys, AioFsyncMode, Source, SourceApi};

/// A borrowed operation, its buffers and its file, kept together (see the module's safety
/// argument). `Unpin`: the operation itself is boxed.
pub(crate) struct Owning<T: Kind, B: Send + 'static, F: Send + 'static> {
    /// `None` once the buffers have been taken back. Declared (and always dropped) first.
    op: Option<Pin<Box<Source<T>>>>,
    bufs: Option<B>,
    file: Option<F>,
}

// Nothing of `Owning` is ever pinned in place: the operation is pinned in its own box.
impl<T: Kind, B: Send + 'static, F: Send + 'static> Unpin for Owning<T, B, F> {}

/// The operations an [`OwnedSource`](super::OwnedSource) can run: the crate's own (read,
/// readv, write, writev, fsync), with their borrows `'static` (they point into the owned
/// state). Sealed: it is implemented by the crate only. Name it to write code that is generic
/// over the owned operations; `T::Output` is the result type (`usize`, or `()` for fsync).
pub trait Kind: sys::Operation + Send + 'static {}
impl<T: sys::Operation + Send + 'static> Kind for T {}

/// The descriptor of `file`, claimed to live for `'static`. Only for the constructors below.
fn lend_fd<F: AsFd>(file: &F) -> BorrowedFd<'static> {
    // SAFETY: see the module documentation: the result is handed only to an operation stored
    // beside `file` in an `Owning`, which releases `file` only after that operation.
    unsafe { BorrowedFd::borrow_raw(file.as_fd().as_raw_fd()) }
}

/// The bytes of `buf`, for the kernel to fill. Only for the constructors below.
fn lend_mut<B: IoBufMut>(buf: &mut B) -> &'static mut [u8] {
    let (ptr, len) = (buf.stable_mut_ptr(), buf.bytes_len());
    // SAFETY: `IoBufMut` promises `len` writable bytes at `ptr`, owned by `buf`, which do not
    // move with it and which nothing else touches while `buf` is not used; the module
    // documentation explains why `buf` is neither used nor freed while the borrow lives.
    unsafe { std::slice::from_raw_parts_mut(ptr, len) }
}

/// The bytes of `buf`, for the kernel to read. Only for the constructors below.
fn lend<B: IoBuf>(buf: &B) -> &'static [u8] {
    let (ptr, len) = (buf.stable_ptr(), buf.bytes_len());
    // SAFETY: as in `lend_mut`, for reading: `IoBuf` promises `len` initialized bytes at `ptr`.
    unsafe { std::slice::from_raw_parts(ptr, len) }
}

impl<T: Kind, B: Send + 'static, F: Send + 'static> Owning<T, B, F> {
    fn new(op: Source<T>, bufs: B, file: F) -> Self {
        Owning {
            op: Some(Box::pin(op)),
            bufs: Some(bufs),
            file: Some(file),
        }
    }
}

impl<B: IoBufMut, F: AsFd + Send + 'static> Owning<sys::ReadOp<'static>, B, F> {
    pub(crate) fn read_at(file: F, offset: u64, mut buf: B, prio: i32) -> Self {
        let op = Source::read_at(lend_fd(&file), offset, lend_mut(&mut buf), prio);
        Owning::new(op, buf, file)
    }
}

impl<B: IoBufMut, F: AsFd + Send + 'static> Owning<sys::ReadvOp<'static>, Vec<B>, F> {
    pub(crate) fn readv_at(file: F, offset: u64, mut bufs: Vec<B>, prio: i32) -> Self {
        let mut slices: Vec<IoSliceMut<'static>> = bufs
            .iter_mut()
            .map(|b| IoSliceMut::new(lend_mut(b)))
            .collect();
        // The operation copies the list; `slices` itself may go.
        let op = Source::readv_at(lend_fd(&file), offset, &mut slices, prio);
        Owning::new(op, bufs, file)
    }
}

impl<B: IoBuf, F: AsFd + Send + 'static> Owning<sys::WriteOp<'static>, B, F> {
    pub(crate) fn write_at(file: F, offset: u64, buf: B, prio: i32) -> Self {
        let op = Source::write_at(lend_fd(&file), offset, lend(&buf), prio);
        Owning::new(op, buf, file)
    }
}

impl<B: IoBuf, F: AsFd + Send + 'static> Owning<sys::WritevOp<'static>, Vec<B>, F> {
    pub(crate) fn writev_at(file: F, offset: u64, bufs: Vec<B>, prio: i32) -> Self {
        let slices: Vec<IoSlice<'static>> = bufs.iter().map(|b| IoSlice::new(lend(b))).collect();
        let op = Source::writev_at(lend_fd(&file), offset, &slices, prio);
        Owning::new(op, bufs, file)
    }
}

impl<F: AsFd + Send + 'static> Owning<sys::FsyncOp<'static>, (), F> {
    pub(crate) fn fsync(file: F, mode: AioFsyncMode, prio: i32) -> Self {
        Owning::new(Source::fsync(lend_fd(&file), mode, prio), (), file)
    }
}

/// Whether `op` is still in flight: submitted, and the kernel not done with it.
fn running<T: Kind>(op: &mut Pin<Box<Source<T>>>) -> bool {
    op.in_progress() && op.as_mut().error() == Err(Errno::EINPROGRESS)
}

impl<T: Kind, B: Send + 'static, F: Send + 'static> Owning<T, B, F> {
    /// Whether the operation is still in flight.
    pub(crate) fn running(&mut self) -> bool {
        self.op.as_mut().is_some_and(running)
    }

    /// Drops the operation if it is not in flight (on FreeBSD this collects its result with
    /// `aio_return` if nobody did). Returns whether it is gone.
    pub(crate) fn release_op(&mut self) -> bool {
        if self.running() {
            return false;
        }
        self.op = None;
        true
    }

    /// The buffers, once the operation is not in flight (done, or never submitted); `None`
    /// while it is, or once taken. Taking them ends the operation: later calls to the other
    /// methods fail with `EINVAL`.
    pub(crate) fn take_bufs(&mut self) -> Option<B> {
        if !self.release_op() {
            return None;
        }
        self.bufs.take()
    }

    fn op(&mut self) -> nix::Result<Pin<&mut Source<T>>> {
        self.op.as_mut().map(Pin::as_mut).ok_or(Errno::EINVAL)
    }

    /// The operation unpinned, for registration only.
    fn op_for_registration(&mut self) -> Option<&mut Source<T>> {
        // SAFETY: callers only (de)register the operation or attach a notifier to it, which
        // never moves it.
        self.op
            .as_mut()
            .map(|op| unsafe { op.as_mut().get_unchecked_mut() })
    }
}

impl<T: Kind, B: Send + 'static, F: Send + 'static> sys::Operation for Owning<T, B, F> {
    type Output = T::Output;

    fn submit(self: Pin<&mut Self>) -> nix::Result<()> {
        self.get_mut().op()?.submit()
    }
    fn aio_return(self: Pin<&mut Self>) -> nix::Result<T::Output> {
        self.get_mut().op()?.aio_return()
    }
    fn error(self: Pin<&mut Self>) -> nix::Result<()> {
        self.get_mut().op()?.error()
    }
    fn cancel(self: Pin<&mut Self>) -> nix::Result<AioCancelStat> {
        self.get_mut().op()?.cancel()
    }
    fn in_progress(&self) -> bool {
        self.op.as_ref().is_some_and(|op| op.in_progress())
    }
    fn register(&mut self, registry: &Registry, token: Token) -> std::io::Result<()> {
        match self.op_for_registration() {
            Some(op) => mio::event::Source::register(op, registry, token, crate::AIO),
            None => Err(Errno::EINVAL.into()),
        }
    }
    fn reregister(&mut self, registry: &Registry, token: Token) -> std::io::Result<()> {
        match self.op_for_registration() {
            Some(op) => mio::event::Source::reregister(op, registry, token, crate::AIO),
            None => Err(Errno::EINVAL.into()),
        }
    }
    fn deregister(&mut self, registry: &Registry) -> std::io::Result<()> {
        match self.op_for_registration() {
            Some(op) => mio::event::Source::deregister(op, registry),
            None => Ok(()),
        }
    }
    #[cfg(feature = "tokio")]
    fn register_raw(&mut self, kq: BorrowedFd, udata: usize) {
        if let Some(op) = self.op_for_registration() {
            op.register_raw(kq, udata)
        }
    }
    #[cfg(feature = "tokio")]
    fn deregister_raw(&mut self) {
        if let Some(op) = self.op_for_registration() {
            op.deregister_raw()
        }
    }
    #[cfg(all(feature = "tokio", not(target_os = "freebsd")))]
    fn attach_notify_fd(&mut self) -> std::io::Result<sys::NotifyFd> {
        match self.op_for_registration() {
            Some(op) => op.attach_notify_fd(),
            None => Err(Errno::EINVAL.into()),
        }
    }
    #[cfg(all(feature = "tokio", not(target_os = "freebsd")))]
    fn attach_notify_fd_again(&mut self, fd: &sys::NotifyFd) -> std::io::Result<()> {
        match self.op_for_registration() {
            Some(op) => op.attach_notify_fd_again(fd),
            None => Err(Errno::EINVAL.into()),
        }
    }
}

/// What is left of an `Owning` dropped in flight. Fields drop in order: the operation (done by
/// then) before the buffers and the file it borrows.
struct Orphaned<T, B, F> {
    op: Pin<Box<Source<T>>>,
    /// Whether the reaper has asked to cancel it yet.
    cancel_requested: bool,
    _bufs: Option<B>,
    _file: Option<F>,
}

impl<T: Kind, B: Send, F: Send> Orphan for Orphaned<T, B, F> {
    /// The first check, on the reaper's thread, asks to cancel the operation, without waiting
    /// for the answer (`cancel` may wait briefly for it, which neither a drop nor the reaper,
    /// which checks every orphan in turn, should do).
    fn is_done(&mut self) -> bool {
        if !std::mem::replace(&mut self.cancel_requested, true) {
            self.op.as_mut().request_cancel();
        }
        !running(&mut self.op)
    }
}

impl<T: Kind, B: Send + 'static, F: Send + 'static> Drop for Owning<T, B, F> {
    /// Never blocks: an operation in flight is handed to the orphanage with its buffers and
    /// file (whose thread cancels it); otherwise the operation is dropped before them.
    fn drop(&mut self) {
        if let Some(mut op) = self.op.take() {
            if running(&mut op) {
                orphanage::adopt(Box::new(Orphaned {
                    op,
                    cancel_requested: false,
                    _bufs: self.bufs.take(),
                    _file: self.file.take(),
                }));
            }
        }
    }
}
