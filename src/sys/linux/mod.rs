//! Linux: operations go to io_uring, to kernel AIO where io_uring is refused, or to a thread
//! pool as the last resort (see [`Backend`]). Each registered operation owns an eventfd (a
//! `Notifier`) registered with the mio `Registry`'s epoll under the operation's token; the
//! backend signals it when the operation has completed.
//!
//! Where a read goes: `crate::Source::submit` → [`Op::submit`] (here) → `driver::Driver::submit`
//! → `uring::Uring::submit` (or `kaio`, `threads`).

mod driver;
mod kaio;
mod notify;
mod nowait;
mod parked;
mod policy;
mod stream;
mod threads;
mod uring;

use std::{
    io::{self, IoSlice, IoSliceMut},
    marker::PhantomData,
    os::fd::{AsRawFd, BorrowedFd, RawFd},
    pin::Pin,
    str::FromStr,
    sync::{atomic::Ordering, Arc},
};

use mio::{Interest, Registry, Token};
use nix::{
    errno::Errno,
    sys::aio::{AioCancelStat, AioFsyncMode},
};

use self::{
    driver::{io_errno, Announce, Completion, Driver, OpKind, Request},
    notify::Notifier,
};
use crate::lio::{LioBuf, LioEntry, LioError, LioOpcode, LioResult};

pub const AIO: Interest = Interest::READABLE;
pub const LIO: Interest = Interest::READABLE;

/// The Linux mechanism that carries out operations.
///
/// By default the first that works is used: io_uring, then kernel AIO (where io_uring is
/// refused, as under Docker's default seccomp profile or `kernel.io_uring_disabled`), then a
/// thread pool. Force one with [`set_backend`](crate::set_backend) before the first operation, or with the
/// environment variable `MIO_AIO_BACKEND` (`io_uring`, `kaio`, `threads` or `auto`).
///
/// Whatever the backend, a single read (or readv) whose data is all in the page cache is done
/// at once by `submit`, with `preadv2(RWF_NOWAIT)`, and its event is signalled from user space:
/// each backend would copy the data inline too, only at a higher cost. `MIO_AIO_CACHED_READS=0`
/// sends every read to the backend instead.
///
/// ```
/// # #[cfg(target_os = "linux")] {
/// let backend = mio_aio::backend().unwrap();
/// println!("file I/O goes through {backend}");
/// # }
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum Backend {
    /// io_uring (Linux 5.6 or later): each completion is signalled by a linked write to the
    /// operation's eventfd.
    ///
    /// Tuning, read when the ring is set up: `MIO_AIO_URING_SQPOLL=<idle ms>` lets a kernel
    /// thread pick up submissions (no system call per submission, and no interrupted polls, at
    /// the cost of a kernel thread that spins for `<idle ms>` after each burst);
    /// `MIO_AIO_URING_ASYNC=1` queues every request to io_uring's workers (for filesystems whose
    /// direct I/O is synchronous).
    IoUring,
    /// Linux kernel AIO (`io_submit`), with `RWF_NOWAIT` so that buffered I/O that would block
    /// is handed to worker threads instead of blocking the caller.
    KernelAio,
    /// Worker threads running `pread`, `pwrite` and `fsync`.
    ThreadPool,
}

impl Backend {
    /// The name used by `MIO_AIO_BACKEND`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::IoUring => "io_uring",
            Backend::KernelAio => "kaio",
            Backend::ThreadPool => "threads",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = io::Error;

    /// Parses `io_uring` (or `uring`), `kaio` (or `aio`), `threads`.
    fn from_str(s: &str) -> io::Result<Backend> {
        match s {
            "io_uring" | "uring" => Ok(Backend::IoUring),
            "kaio" | "aio" => Ok(Backend::KernelAio),
            "threads" | "thread_pool" => Ok(Backend::ThreadPool),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unknown mio-aio backend {s:?}"),
            )),
        }
    }
}

/// Public Linux-only functions, re-exported at the crate root.
pub mod linux_api {
    pub use super::Backend;
    use super::*;

    /// The backend this process uses, choosing it (and setting it up) if no operation has yet.
    ///
    /// Fails if the backend forced with [`set_backend`] or `MIO_AIO_BACKEND` cannot work here
    /// (for example io_uring refused by the kernel).
    pub fn backend() -> io::Result<Backend> {
        Driver::get().map(Driver::backend)
    }

    /// Forces the backend, overriding `MIO_AIO_BACKEND`. Call it before the first operation:
    /// once a backend is in use it cannot change, and asking for another fails with
    /// [`io::ErrorKind::AlreadyExists`].
    ///
    /// ```
    /// # #[cfg(target_os = "linux")] {
    /// use mio_aio::Backend;
    /// // The thread pool works everywhere.
    /// match mio_aio::set_backend(Backend::ThreadPool) {
    ///     Ok(()) => assert_eq!(mio_aio::backend().unwrap(), Backend::ThreadPool),
    ///     Err(e) => println!("another backend is already in use: {e}"),
    /// }
    /// # }
    /// ```
    pub fn set_backend(backend: Backend) -> io::Result<()> {
        driver::request_backend(backend)
    }
}

/// Where an operation's or batch's completion is announced: an eventfd in one epoll set.
#[derive(Debug)]
struct Registration {
    notifier: Arc<Notifier>,
    epfd: RawFd,
}

/// The epoll registration shared by single operations and batches.
#[derive(Debug, Default)]
struct Registered {
    current: Option<Registration>,
    /// An error from `register_raw`, which cannot return one: `submit` reports it.
    deferred_error: Option<Errno>,
}

impl Registered {
    fn register(&mut self, epfd: RawFd, token: usize) -> io::Result<()> {
        if let Some(r) = &self.current {
            // A forked child leaves its parent's notifier (and the set it is in) alone.
            if r.epfd == epfd && r.notifier.is_ours() {
                match r.notifier.epoll_mod(epfd, token as u64) {
                    // The number names another epoll set now; the old one may live on (a
                    // registry clone), so the notifier is closed, not added here.
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                        r.notifier.pool().forget(epfd);
                        self.current = None;
                    }
                    result => return result,
                }
            } else {
                self.deregister();
            }
        }
        let driver = Driver::get()?;
        let notifier = match driver.pool.unpark(epfd, token as u64)? {
            Some(n) => n,
            None => {
                let n = Arc::new(driver.notifier()?);
                n.epoll_add(epfd, token as u64)?;
                n
            }
        };
        self.current = Some(Registration { notifier, epfd });
        self.deferred_error = None;
        Ok(())
    }

    fn deregister(&mut self) {
        if let Some(r) = self.current.take() {
            // In a forked child the epoll set is still the parent's: leave it alone. A private
            // notifier (`attach_private`) is in no set of ours.
            if !r.notifier.is_ours() || r.epfd < 0 {
                return;
            }
            if let Err(n) = r.notifier.pool().park(r.epfd, r.notifier) {
                // A signal may still be on its way: take it out of the set instead. A failure
                // means the set is gone, and the notifier will simply be closed.
                let _ = n.epoll_del(r.epfd);
            }
        }
    }

    #[cfg(feature = "tokio")]
    fn register_raw(&mut self, kq: BorrowedFd, udata: usize) {
        if let Err(e) = self.register(kq.as_raw_fd(), udata) {
            self.deferred_error = Some(io_errno(e));
        }
    }

    /// Gives the operation a notifier in no epoll set and returns it, for a caller that watches
    /// the eventfd itself (the tokio layer registers it with tokio's reactor).
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    fn attach_private(&mut self) -> io::Result<NotifyFd> {
        self.deregister();
        let notifier = Arc::new(Driver::get()?.notifier()?);
        self.current = Some(Registration {
            notifier: notifier.clone(),
            epfd: -1,
        });
        self.deferred_error = None;
        Ok(NotifyFd(notifier))
    }

    /// Whether the notifier is a private one (`attach_private`).
    fn is_private(&self) -> bool {
        self.current.as_ref().is_some_and(|r| r.epfd < 0)
    }

    fn notifier(&self) -> nix::Result<Option<&Arc<Notifier>>> {
        match (self.deferred_error, &self.current) {
            (Some(e), _) => Err(e),
            // Inherited across fork: the parent's eventfd, in the parent's epoll set.
            (None, Some(r)) if !r.notifier.is_ours() => Err(Errno::EBADF),
            (None, current) => Ok(current.as_ref().map(|r| &r.notifier)),
        }
    }
}

/// The eventfd that signals an operation's completion, for a caller that watches it itself.
/// Readable once the operation (or the whole batch) has completed, except for a single
/// operation already done when `submit` returned, which is not signalled: check `error()` right
/// after `submit`. Dropping it after the operation is harmless.
#[derive(Debug)]
pub struct NotifyFd(Arc<Notifier>);

impl std::os::fd::AsRawFd for NotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.fd()
    }
}

fn busy() -> io::Error {
    io::Error::new(
        io::ErrorKind::ResourceBusy,
        "a mio-aio operation cannot be (de)registered while it is in flight",
    )
}

/// iovec arrays copied out of the caller's slice, so the kernel reads a stable copy. The field
/// is only read by the kernel, through `Request::addr`.
#[derive(Debug)]
struct IoVecs(#[allow(dead_code)] Box<[libc::iovec]>);
// SAFETY: the iovecs point into buffers the operation borrows (shared for writes, exclusively
// for reads) for its lifetime; moving or sharing the array itself across threads is harmless.
unsafe impl Send for IoVecs {}
// SAFETY: as above; the array is never mutated after construction.
unsafe impl Sync for IoVecs {}

/// One operation: the common part of `ReadOp`, `WriteOp`, … on Linux.
#[derive(Debug)]
pub struct Op<'a> {
    request: Request,
    /// Why the operation can never be submitted (for example an offset beyond `i64::MAX`).
    invalid: Option<Errno>,
    _iovecs: Option<IoVecs>,
    registration: Registered,
    /// The submission in flight (or finished but not yet returned).
    current: Option<Arc<Completion>>,
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
        if iovecs.len() > libc::UIO_MAXIOV as usize || total.is_none_or(|t| t > isize::MAX as usize)
        {
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
        let notifier = self.registration.notifier()?;
        // A private notifier's watcher (the tokio layer) checks for completion after `submit`.
        let announce = if self.registration.is_private() {
            Announce::IfStillRunning
        } else {
            Announce::Always
        };
        let driver = Driver::get().map_err(io_errno)?;
        // SAFETY: the request points into buffers borrowed for 'a by this operation, and the
        // operation cannot be dropped (nor its buffers released) before the completion is done:
        // `Drop` cancels and waits.
        self.current = Some(unsafe { driver.submit_one(self.request, notifier, announce) }?);
        Ok(())
    }

    /// The completion, once done (reaping first); `EINPROGRESS` before.
    fn finished(&self) -> nix::Result<&Arc<Completion>> {
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
}

impl Drop for Op<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.current.take() {
            if !c.is_done() {
                c.cancel();
                c.wait();
            }
        }
        self.registration.deregister();
    }
}

/// Implements `sys::Operation` for one operation type, converting the byte count.
macro_rules! operation {
    ($name:ident, $output:ty, $convert:expr) => {
        impl super::Operation for $name<'_> {
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
        }
    };
}

fn epoll_fd(registry: &Registry) -> RawFd {
    use std::os::fd::AsFd;
    registry.as_fd().as_raw_fd()
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
        let kind = match mode {
            AioFsyncMode::O_DSYNC => OpKind::Fdatasync,
            _ => OpKind::Fsync,
        };
        FsyncOp(Op::new(kind, fd.as_raw_fd(), 0, std::ptr::null_mut(), 0))
    }
}

/// The state of one batch entry.
#[derive(Debug)]
enum Slot {
    /// Never submitted yet, or refused for lack of room (resubmit starts it).
    Waiting,
    /// Cannot be started at all.
    Invalid(Errno),
    /// Nothing to do (`LIO_NOP`).
    Nop,
    Started(Arc<Completion>),
}

/// A batch of operations, submitted together, reported by one event.
#[derive(Debug)]
pub struct LioCb<'a> {
    requests: Vec<Request>,
    slots: Vec<Slot>,
    submitted: bool,
    registration: Registered,
    _borrow: PhantomData<&'a mut [u8]>,
}

impl<'a> LioCb<'a> {
    pub(crate) fn new(entries: Vec<LioEntry<'a>>) -> Self {
        let mut slots = Vec::with_capacity(entries.len());
        let requests = entries
            .into_iter()
            .map(|e| {
                slots.push(match (e.invalid(), e.opcode) {
                    (Some(errno), _) => Slot::Invalid(errno),
                    (None, LioOpcode::LIO_NOP) => Slot::Nop,
                    (None, _) => Slot::Waiting,
                });
                let (addr, len) = match e.buf {
                    LioBuf::Mut(b) => (b.as_mut_ptr(), b.len()),
                    // Only ever read through: `invalid()` refuses reads into shared buffers.
                    LioBuf::Shared(b) => (b.as_ptr() as *mut u8, b.len()),
                };
                let kind = match e.opcode {
                    LioOpcode::LIO_READ => OpKind::Read,
                    LioOpcode::LIO_WRITE => OpKind::Write,
                    LioOpcode::LIO_NOP => OpKind::Nop,
                };
                Request {
                    kind,
                    fd: e.fd.as_raw_fd(),
                    offset: e.offset,
                    addr,
                    len,
                }
            })
            .collect();
        LioCb {
            requests,
            slots,
            submitted: false,
            registration: Registered::default(),
            _borrow: PhantomData,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn submit(&mut self) -> Result<(), LioError> {
        if self.submitted {
            return Err(LioError::EIO(vec![Err(Errno::EBUSY); self.slots.len()]));
        }
        let outcome = self.start_waiting();
        // After EAGAIN nothing started: the batch may simply be submitted again.
        self.submitted = outcome != Err(LioError::EAGAIN);
        outcome
    }

    pub(crate) fn resubmit(&mut self) -> Result<(), LioError> {
        if !self.submitted {
            return self.submit();
        }
        self.start_waiting()
    }

    /// Starts every waiting entry in one engine submission, under one group.
    fn start_waiting(&mut self) -> Result<(), LioError> {
        // Record what earlier rounds finished, so their room in the queue counts again.
        self.reap_started();
        let waiting: Vec<usize> = (0..self.slots.len())
            .filter(|&i| matches!(self.slots[i], Slot::Waiting))
            .collect();
        let invalid = self.slots.iter().any(|s| matches!(s, Slot::Invalid(_)));
        let notifier = match self.registration.notifier() {
            Ok(n) => n.cloned(),
            Err(e) => return Err(self.all_failed(e)),
        };
        if waiting.is_empty() {
            if !invalid {
                // Nothing to wait for: the batch is complete at once, and says so.
                if let Some(n) = notifier {
                    n.signal();
                }
            }
            return self.outcome(0, 0);
        }
        let driver = match Driver::get() {
            Ok(d) => d,
            Err(e) => return Err(self.all_failed(io_errno(e))),
        };
        let requests: Vec<Request> = waiting.iter().map(|&i| self.requests[i]).collect();
        // SAFETY: every request points into buffers borrowed for 'a by this batch, and the batch
        // cannot be dropped before its completions are done: `Drop` cancels and waits.
        let started = match unsafe { driver.submit_batch(&requests, notifier.as_ref()) } {
            Ok(started) => started,
            Err(Errno::EAGAIN) => Vec::new(),
            Err(e) => return Err(self.all_failed(e)),
        };
        let accepted = started.len();
        for (&i, c) in waiting.iter().zip(started) {
            self.slots[i] = Slot::Started(c);
        }
        self.outcome(accepted, waiting.len())
    }

    /// Marks every waiting entry as failed with `errno` and reports the statuses.
    fn all_failed(&mut self, errno: Errno) -> LioError {
        for s in &mut self.slots {
            if matches!(s, Slot::Waiting) {
                *s = Slot::Invalid(errno);
            }
        }
        LioError::EIO(self.statuses())
    }

    fn outcome(&self, accepted: usize, wanted: usize) -> Result<(), LioError> {
        if self.slots.iter().any(|s| matches!(s, Slot::Invalid(_))) {
            Err(LioError::EIO(self.statuses()))
        } else if accepted < wanted && accepted == 0 {
            Err(LioError::EAGAIN)
        } else if accepted < wanted {
            Err(LioError::EINCOMPLETE)
        } else {
            Ok(())
        }
    }

    fn statuses(&self) -> Vec<Result<(), Errno>> {
        self.slots
            .iter()
            .map(|s| match s {
                Slot::Waiting => Err(Errno::EAGAIN),
                Slot::Invalid(e) => Err(*e),
                Slot::Nop => Ok(()),
                Slot::Started(c) if c.is_done() => c.result().map(drop),
                Slot::Started(_) => Err(Errno::EINPROGRESS),
            })
            .collect()
    }

    /// Whether an entry started by this process is still running (in a forked child, the
    /// parent's entries never finish: `into_results` reports them `ECANCELED` at once).
    pub(crate) fn in_progress(&self) -> bool {
        self.reap_started();
        self.slots
            .iter()
            .any(|s| matches!(s, Slot::Started(c) if !c.is_done() && c.is_ours()))
    }

    /// Records what the started entries' rings (or engine) have finished: one reap per distinct
    /// place, each batch round having gone to a ring of its own. A forked child never reaps its
    /// parent's: the rings are not even mapped in the child.
    fn reap_started(&self) {
        let mut reaped: Vec<Option<*const uring::Ring>> = Vec::new();
        for s in &self.slots {
            if let Slot::Started(c) = s {
                let place = c.ring.as_ref().map(Arc::as_ptr);
                if !c.is_done() && c.is_ours() && !reaped.contains(&place) {
                    c.reap();
                    reaped.push(place);
                }
            }
        }
    }

    pub(crate) fn into_results<F, R>(mut self, callback: F) -> R
    where
        F: FnOnce(Box<dyn Iterator<Item = LioResult> + 'a>) -> R,
    {
        let slots = std::mem::take(&mut self.slots);
        let results: Vec<LioResult> = slots
            .iter()
            .map(|s| LioResult {
                result: match s {
                    Slot::Waiting => Err(Errno::EAGAIN),
                    Slot::Invalid(e) => Err(*e),
                    Slot::Nop => Ok(0),
                    Slot::Started(c) => {
                        c.wait();
                        if c.is_ours() {
                            c.result().map(|n| n as isize)
                        } else {
                            Err(Errno::ECANCELED)
                        }
                    }
                },
            })
            .collect();
        release(slots);
        callback(Box::new(results.into_iter()))
    }

    pub(crate) fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        if self.in_progress() {
            return Err(busy());
        }
        self.registration.register(epoll_fd(registry), token.0)
    }

    pub(crate) fn reregister(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        self.register(registry, token)
    }

    pub(crate) fn deregister(&mut self, _registry: &Registry) -> io::Result<()> {
        if self.in_progress() {
            return Err(busy());
        }
        self.registration.deregister();
        Ok(())
    }

    #[cfg(feature = "tokio")]
    pub(crate) fn register_raw(&mut self, kq: BorrowedFd, udata: usize) {
        if !self.in_progress() {
            self.registration.register_raw(kq, udata)
        }
    }

    #[cfg(feature = "tokio")]
    pub(crate) fn deregister_raw(&mut self) {
        if !self.in_progress() {
            self.registration.deregister()
        }
    }

    /// See `Operation::attach_notify_fd`.
    #[cfg(feature = "tokio")]
    pub(crate) fn attach_notify_fd(&mut self) -> io::Result<NotifyFd> {
        if self.in_progress() {
            return Err(busy());
        }
        self.registration.attach_private()
    }
}

impl Drop for LioCb<'_> {
    fn drop(&mut self) {
        for s in &self.slots {
            if let Slot::Started(c) = s {
                if !c.is_done() {
                    c.cancel();
                }
            }
        }
        for s in &self.slots {
            if let Slot::Started(c) = s {
                c.wait();
            }
        }
        release(std::mem::take(&mut self.slots));
        self.registration.deregister();
    }
}

/// Drops a batch's finished slots and gives their batch rings back to the driver.
fn release(slots: Vec<Slot>) {
    let mut rings: Vec<Arc<uring::Ring>> = Vec::new();
    let mut driver = None;
    for s in &slots {
        if let Slot::Started(c) = s {
            if !c.is_ours() {
                return;
            }
            driver = Some(c.driver);
            if let Some(r) = &c.ring {
                if !rings.iter().any(|x| Arc::ptr_eq(x, r)) {
                    rings.push(r.clone());
                }
            }
        }
    }
    drop(slots);
    if let Some(driver) = driver {
        for r in rings {
            driver.recycle(r);
        }
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<Op<'static>>();
    check::<LioCb<'static>>();
    let _ = Ordering::Relaxed;
}
