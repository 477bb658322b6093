//! One io_uring instance, shared between threads, and the per-operation state of the io_uring
//! engine ([`UringOp`]).
//!
//! Each request becomes one SQE whose `user_data` is a leaked `Arc<UringOp>` (the engine's
//! reference, given back when its CQE is reaped). When the request has a notifier, the SQE is
//! followed by an `IORING_OP_WRITE` of the value 1 to that eventfd, linked with
//! `IOSQE_IO_HARDLINK` so that it runs after the request however the request ends (plain
//! `IO_LINK` would skip it after a short read or an error, and no event would ever arrive). The
//! kernel posts the request's CQE before it issues the linked write, so by the time the eventfd
//! wakes epoll the result is waiting in the completion queue.
//!
//! The linked write resolves its fd when it is issued, not when it is submitted. The write holds
//! a reference to the notifier (its own `user_data`, tagged: the request's `Arc<UringOp>`, or a
//! batch's `Arc<Notifier>`) until its CQE is reaped, so the eventfd is never closed or lent to
//! another operation while a write may still target its number.
//!
//! Rings are created without `IORING_SETUP_DEFER_TASKRUN` (the linked write would then only run
//! inside `io_uring_enter(GETEVENTS)`, and epoll would never wake) and with `dontfork`, so a
//! child process cannot touch its parent's queues.

use std::{
    any::Any,
    io,
    ops::Deref,
    os::fd::{AsRawFd, RawFd},
    sync::{
        atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use io_uring::{opcode, squeue, types, IoUring};
use nix::{errno::Errno, sys::aio::AioCancelStat};

use super::super::{
    engine::{
        answer_within_bound, Answer, Completion, InFlight, OpKind, Request, CANCEL_REPLY_WAIT,
        WAIT_SLICE,
    },
    notify::Notifier,
    policy::Classifier,
};

/// The low bits of `user_data` say what a CQE belongs to (the pointers are 8-aligned).
const TAG_MASK: u64 = 0b111;
const TAG_OP: u64 = 0;
const TAG_SIGNAL: u64 = 1;
const TAG_CANCEL: u64 = 2;
/// A CQE with nothing to record (a batch's counting timeout).
const TAG_IGNORE: u64 = 3;
/// The linked write that signals one request's notifier (`user_data`: the request's `UringOp`).
const TAG_OP_SIGNAL: u64 = 4;

/// The time limit of a batch's counting timeout: never reached in practice (136 years).
static NEVER: types::Timespec = types::Timespec::new().sec(1 << 32);

/// The value the linked write adds to an eventfd. It must outlive every write: it is static.
static ONE: u64 = 1;

/// The most a single read or write may ask for (Linux's `MAX_RW_COUNT`); longer ones complete
/// short, as `pread` would.
const MAX_RW: usize = 0x7fff_f000;

const PENDING: i32 = i32::MIN;

/// A cancellation request waiting for its own CQE.
#[derive(Debug)]
struct CancelState {
    res: AtomicI32,
}

/// One request in io_uring's hands: the shared completion and the ring it went to.
#[derive(Debug)]
pub(crate) struct UringOp {
    completion: Completion,
    pub ring: Arc<Ring>,
    /// Set while the linked write that signals `kernel_signal` has not posted its CQE, so that
    /// a submitting thread that exits can wait for it (`thread_exit`).
    pub signal_write_pending: AtomicBool,
}

impl UringOp {
    pub(crate) fn new(completion: Completion, ring: &Arc<Ring>) -> Arc<UringOp> {
        Arc::new(UringOp {
            completion,
            ring: ring.clone(),
            signal_write_pending: AtomicBool::new(false),
        })
    }
}

impl Deref for UringOp {
    type Target = Completion;
    fn deref(&self) -> &Completion {
        &self.completion
    }
}

impl InFlight for UringOp {
    fn completion(&self) -> &Completion {
        &self.completion
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// One io_uring instance and the locks that share it between threads.
pub(crate) struct Ring {
    pub ring: IoUring,
    /// Serialises submissions: pushes to the submission queue and the `io_uring_enter` that
    /// passes them to the kernel, so that each thread submits exactly the SQEs it pushed.
    /// io_uring ties a request to the thread that entered it, and cancels what is still
    /// pending (sockets, pipes, work queued to its workers) when that thread exits: a thread
    /// must not adopt another's requests, or its exit would cancel them (seen as
    /// `ECANCELED` on a socket read when another test's thread ended).
    ///
    /// Only code holding it may create a `SubmissionQueue` handle, even just to read the
    /// queue's flags: a handle reads the tail when it is made and stores it back when dropped,
    /// so a handle made without this lock stores a stale tail over another thread's submissions
    /// (that bug lost SQEs and replayed stale ones, with freed buffers). The `Submitter` (used
    /// to enter the kernel) reads the tail atomically and needs no lock.
    sq: Mutex<()>,
    /// Serialises reaping of the completion queue. Lock order: `cq`, then `sq`.
    cq: Mutex<()>,
    /// CQEs still to come for the SQEs pushed so far: a batch ring is reused only at zero, so no
    /// completion of one batch can reach the next. Incremented under `sq`, before the push.
    pub(super) outstanding: AtomicUsize,
    /// Set (under `sq`) when `outstanding` exceeded the completion queue's size, the only way
    /// the queue can overflow into the kernel's overflow list; cleared (under `sq`) once the
    /// list is known to be empty again. While it is clear, reaping need not look at the
    /// submission queue's overflow flag, so reapers never wait for submitters.
    overflow_risk: AtomicBool,
    /// Every request goes to io_uring's workers (`IOSQE_ASYNC`), whatever its file
    /// (`Config::uring_async`); otherwise the file's policy decides (`policy`).
    all_async: bool,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("fd", &self.ring.as_raw_fd())
            .field("sq_entries", &self.ring.params().sq_entries())
            .finish()
    }
}

impl Ring {
    pub(super) fn new(
        sq_entries: u32,
        cq_entries: u32,
        sqpoll_idle_ms: Option<u32>,
        attach_wq: Option<RawFd>,
        all_async: bool,
    ) -> io::Result<Ring> {
        let mut builder = IoUring::builder();
        builder
            .dontfork()
            .setup_cqsize(cq_entries)
            .setup_submit_all();
        match sqpoll_idle_ms {
            Some(idle) => builder.setup_sqpoll(idle),
            // Completions need not interrupt this thread while it runs in user space.
            None => builder.setup_coop_taskrun(),
        };
        if let Some(fd) = attach_wq {
            builder.setup_attach_wq(fd);
        }
        let ring = builder.build(sq_entries).or_else(|_| {
            // Kernels before 5.19 know neither SUBMIT_ALL nor COOP_TASKRUN.
            IoUring::builder()
                .dontfork()
                .setup_cqsize(cq_entries)
                .build(sq_entries)
        })?;
        Ok(Ring {
            ring,
            sq: Mutex::new(()),
            cq: Mutex::new(()),
            outstanding: AtomicUsize::new(0),
            overflow_risk: AtomicBool::new(false),
            all_async,
        })
    }

    pub(super) fn capacity(&self) -> usize {
        self.ring.params().sq_entries() as usize
    }

    /// Pushes every request (with its linked notifier write) and enters the kernel once per
    /// full submission queue. io_uring accepts every SQE it is given, so all are accepted; a
    /// request that cannot start (bad fd, …) reports its error in its CQE. With `batch_signal`
    /// (batch rings only, which hold one batch at a time), that notifier is signalled once every
    /// request of the batch has completed. `files` may already know the first request's file.
    pub(crate) fn submit(
        &self,
        batch: &[Arc<UringOp>],
        batch_signal: Option<&Arc<Notifier>>,
        mut files: Classifier,
    ) -> Result<usize, Errno> {
        // Requests the kernel might run inside the enter below, for as long as their file's
        // server takes (see `policy`), go straight to a kernel worker. Decided before the lock.
        let to_worker: Vec<bool> = batch
            .iter()
            .map(|c| self.all_async || files.uring_async(c.request.fd))
            .collect();
        // Held until after the enter below: see `Ring::sq`.
        let _submitting = lock_briefly_held(&self.sq);
        // SAFETY: `self.sq` is held, so this is the only live handle on the submission queue.
        let mut sq = unsafe { self.ring.submission_shared() };
        if let Some(n) = batch_signal {
            // First a timeout that completes once `batch.len()` more CQEs have been posted (its
            // time limit is never reached), hard-linked to the write that signals the batch. The
            // kernel counts the completions inline: no worker thread is woken.
            self.make_room(&mut sq, 2)?;
            let count = opcode::Timeout::new(&NEVER)
                .count(batch.len() as u32)
                .build()
                .flags(squeue::Flags::IO_HARDLINK)
                .user_data(TAG_IGNORE);
            self.owe(2);
            // SAFETY: the timeout reads the static `NEVER`; the write reads the static `ONE` and
            // holds the notifier until its CQE.
            unsafe { sq.push_multiple(&[count, signal_entry(n)]) }.expect("room was made above");
        }
        for (pushed, c) in batch.iter().enumerate() {
            let data = data_entry(&c.request);
            let signal = c.kernel_signal.as_ref();
            let needed = 1 + usize::from(signal.is_some());
            if sq.capacity().saturating_sub(sq.len()) < needed {
                sq.sync();
                if let Err(e) = self.make_room(&mut sq, needed) {
                    // What was pushed stays queued (any later enter consumes it): report it as
                    // accepted, so its buffers stay borrowed until it completes.
                    return if pushed == 0 { Err(e) } else { Ok(pushed) };
                }
            }
            let mut data = data.user_data(Arc::into_raw(c.clone()) as u64 | TAG_OP);
            self.owe(needed);
            if to_worker[pushed] {
                data = data.flags(squeue::Flags::ASYNC);
            }
            // SAFETY: the request's buffers stay valid until its CQE is reaped (the driver's
            // contract); the engine's `Arc` keeps the completion alive until then.
            unsafe {
                match signal {
                    None => sq.push(&data),
                    Some(n) => sq.push_multiple(&[
                        data.flags(squeue::Flags::IO_HARDLINK),
                        op_signal_entry(c, n),
                    ]),
                }
                .expect("room was made above")
            };
        }
        sq.sync();
        let pending = sq.len();
        drop(sq);
        // Everything is pushed, so everything counts as accepted even if this enter fails: the
        // next enter (a later submit, or any wait) consumes it.
        let _ = self.enter_all(pending);
        Ok(batch.len())
    }

    /// Waits until the submission queue has room for `needed` entries. The kernel may consume
    /// only part of what one enter offers (and with SQPOLL consumes on its own time), so this
    /// enters again until there is room, instead of trusting a single enter.
    fn make_room(
        &self,
        sq: &mut io_uring::squeue::SubmissionQueue<'_>,
        needed: usize,
    ) -> Result<(), Errno> {
        sq.sync();
        while sq.capacity().saturating_sub(sq.len()) < needed {
            self.enter_all(sq.len())?;
            if self.ring.params().is_setup_sqpoll() {
                let _ = self.ring.submitter().squeue_wait();
            } else {
                std::thread::yield_now();
            }
            sq.sync();
        }
        Ok(())
    }

    /// Enters the kernel until it has consumed the `pending` SQEs in the submission queue. An
    /// enter may consume only some of them: without `IORING_SETUP_SUBMIT_ALL` (kernels before
    /// 5.18) the kernel stops at an SQE that fails (its CQE reports the error), and it may run
    /// short of memory; the rest stays queued, so this enters again for it. With SQPOLL the
    /// kernel's thread consumes the queue on its own, and one call (which wakes it if needed)
    /// is enough. A count of 0 means the queue is empty (`Ring::wait` of another thread may
    /// have entered it meanwhile).
    fn enter_all(&self, mut pending: usize) -> Result<(), Errno> {
        let sqpoll = self.ring.params().is_setup_sqpoll();
        loop {
            match self.ring.submitter().submit() {
                Ok(n) if n == 0 || n >= pending || sqpoll => return Ok(()),
                Ok(n) => pending -= n,
                Err(e) => match e.raw_os_error() {
                    // Transient: the SQEs stay queued and are consumed by the retry.
                    Some(libc::EINTR | libc::EAGAIN | libc::EBUSY) => {
                        std::thread::sleep(std::time::Duration::from_micros(100))
                    }
                    _ => return Err(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))),
                },
            }
        }
    }

    /// Counts `n` more CQEs to come. Called with `self.sq` held, before the SQEs are pushed.
    fn owe(&self, n: usize) {
        let owed = self.outstanding.fetch_add(n, Ordering::SeqCst) + n;
        if owed > self.ring.params().cq_entries() as usize {
            self.overflow_risk.store(true, Ordering::SeqCst);
        }
    }

    /// Records every result waiting in the completion queue (and in the kernel's overflow
    /// list). Never blocks on I/O.
    pub(crate) fn reap(&self) {
        let _cq = lock(&self.cq);
        loop {
            // SAFETY: `self.cq` is held, so this is the only live handle on the completion queue.
            let mut cq = unsafe { self.ring.completion_shared() };
            if cq.is_empty() {
                drop(cq);
                if self.overflow_risk.load(Ordering::SeqCst) && self.flush_overflow() {
                    continue;
                }
                return;
            }
            let mut reaped = 0;
            for cqe in &mut cq {
                reaped += 1;
                dispatch(cqe.user_data(), cqe.result());
            }
            // Give the slots back to the kernel before they stop counting as owed: otherwise
            // a submitter could see room (`owe`) in a queue the kernel still sees full, and
            // the kernel would overflow it with `overflow_risk` clear.
            cq.sync();
            self.outstanding.fetch_sub(reaped, Ordering::SeqCst);
        }
    }

    /// Moves the kernel's overflow list (CQEs that found the completion queue full) into the
    /// queue; returns whether there was one. Called with `self.cq` held and the queue empty.
    fn flush_overflow(&self) -> bool {
        let _sq = lock(&self.sq);
        // SAFETY: `self.sq` is held; the handle only reads the queue's flags and is dropped
        // (storing the tail it read) before the lock is released.
        let sq = unsafe { self.ring.submission_shared() };
        let overflowed = sq.cq_overflow();
        drop(sq);
        if overflowed {
            let _ = self.ring.submitter().submit_and_wait(0);
        } else if self.outstanding.load(Ordering::SeqCst)
            <= self.ring.params().cq_entries() as usize
        {
            // No overflow list, and no room for one: `outstanding` only grows under `self.sq`,
            // which is held, so no submitter can raise it past the size meanwhile.
            self.overflow_risk.store(false, Ordering::SeqCst);
        }
        overflowed
    }

    /// Waits up to one time slice for completions (running the kernel's pending task work for
    /// this thread) and records them.
    pub(crate) fn wait(&self, c: &Completion) {
        self.reap();
        if c.is_done() {
            return;
        }
        let ts = types::Timespec::from(WAIT_SLICE);
        let args = types::SubmitArgs::new().timespec(&ts);
        // ETIME (the slice ended) and EINTR are expected; anything else shows up as no progress
        // and the caller waits again.
        let _ = self.ring.submitter().submit_with_args(1, &args);
        self.reap();
    }

    /// Waits until every CQE this ring owes has been reaped.
    pub(super) fn settle(&self) {
        loop {
            self.reap();
            if self.outstanding.load(Ordering::Relaxed) == 0 {
                return;
            }
            let ts = types::Timespec::from(WAIT_SLICE);
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
        }
    }

    /// Sends `IORING_OP_ASYNC_CANCEL` for the request and waits for the kernel's answer.
    pub(crate) fn cancel(&self, c: &UringOp, answer: Answer) -> AioCancelStat {
        let state = Arc::new(CancelState {
            res: AtomicI32::new(PENDING),
        });
        {
            let _submitting = lock_briefly_held(&self.sq);
            // SAFETY: `self.sq` is held, so this is the only live handle on the submission queue.
            let mut sq = unsafe { self.ring.submission_shared() };
            if self.make_room(&mut sq, 1).is_err() {
                return AioCancelStat::AioNotCanceled;
            }
            let entry = opcode::AsyncCancel::new(c as *const UringOp as u64 | TAG_OP)
                .build()
                .user_data(Arc::into_raw(state.clone()) as u64 | TAG_CANCEL);
            // SAFETY: an async-cancel SQE refers to no memory of ours (only a user_data value);
            // the state it reports to is kept alive by the leaked `Arc` until its CQE.
            if unsafe { sq.push(&entry) }.is_err() {
                return AioCancelStat::AioNotCanceled;
            }
            self.owe(1);
            sq.sync();
            let pending = sq.len();
            drop(sq);
            if self.enter_all(pending).is_err() {
                return AioCancelStat::AioNotCanceled;
            }
        }
        // The kernel answers a cancel at once; the bound only keeps a broken ring from hanging
        // the caller (the state then stays with its SQE until its CQE, if ever).
        let deadline = std::time::Instant::now() + CANCEL_REPLY_WAIT;
        while state.res.load(Ordering::Acquire) == PENDING {
            if std::time::Instant::now() >= deadline {
                return AioCancelStat::AioNotCanceled;
            }
            let ts = types::Timespec::from(WAIT_SLICE);
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            self.reap();
        }
        match -state.res.load(Ordering::Acquire) {
            // Found and stopped: the request ends with ECANCELED.
            0 => AioCancelStat::AioCanceled,
            // ENOENT: finished, or between the kernel's queues; EALREADY: running on a kernel
            // worker, which the cancel may still interrupt (ending it with ECANCELED). Either
            // way, the result decides the answer, if it comes within the bound.
            _ if answer == Answer::NotWanted => AioCancelStat::AioNotCanceled,
            _ => answer_within_bound(c, || self.wait(c)).unwrap_or(AioCancelStat::AioNotCanceled),
        }
    }
}

/// Locks the submission queue's mutex, which is held for a few microseconds at a time (the
/// kernel runs a cached read inline during the enter). A contended `Mutex::lock` puts the
/// waiter to sleep on a futex and makes the owner wake it with another system call, which cost
/// more than the wait itself (a third of the CPU time of 2 threads reading from the page cache,
/// measured with perf): spin for up to `SPIN_LIMIT` first, then sleep as usual (the owner may be
/// blocked in the kernel for long, by a file system that completes reads inline).
fn lock_briefly_held(m: &Mutex<()>) -> std::sync::MutexGuard<'_, ()> {
    const SPIN_LIMIT: std::time::Duration = std::time::Duration::from_micros(30);
    let mut started = None;
    loop {
        match m.try_lock() {
            Ok(guard) => return guard,
            Err(std::sync::TryLockError::Poisoned(e)) => return e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {}
        }
        let started = *started.get_or_insert_with(std::time::Instant::now);
        if started.elapsed() > SPIN_LIMIT {
            return lock(m);
        }
        for _ in 0..32 {
            std::hint::spin_loop();
        }
    }
}

/// Locks a mutex that guards no data of its own (only access to a queue), ignoring poisoning.
fn lock(m: &Mutex<()>) -> std::sync::MutexGuard<'_, ()> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Hands one CQE to whatever its `user_data` names, giving back the engine's reference.
fn dispatch(user_data: u64, res: i32) {
    let ptr = user_data & !TAG_MASK;
    match user_data & TAG_MASK {
        TAG_OP => {
            // SAFETY: made by `Arc::into_raw` in `submit`; each SQE yields exactly one CQE.
            let c = unsafe { Arc::from_raw(ptr as *const UringOp) };
            c.finish(i64::from(res));
        }
        TAG_SIGNAL => {
            // SAFETY: made by `Arc::into_raw` in `signal_entry`; exactly one CQE per write.
            let n = unsafe { Arc::from_raw(ptr as *const Notifier) };
            if res < 0 {
                // The kernel could not signal: do it from here so the event is not lost.
                n.signal();
            }
        }
        TAG_OP_SIGNAL => {
            // SAFETY: made by `Arc::into_raw` in `op_signal_entry`; exactly one CQE per write.
            let c = unsafe { Arc::from_raw(ptr as *const UringOp) };
            if res < 0 {
                if let Some(n) = &c.kernel_signal {
                    n.signal();
                }
            }
            c.signal_write_pending.store(false, Ordering::Release);
        }
        TAG_CANCEL => {
            // SAFETY: made by `Arc::into_raw` in `cancel`; exactly one CQE per cancel.
            let state = unsafe { Arc::from_raw(ptr as *const CancelState) };
            state.res.store(res, Ordering::Release);
        }
        _ => {} // TAG_IGNORE
    }
}

/// The SQE for a request (without `user_data`).
fn data_entry(r: &Request) -> squeue::Entry {
    let fd = types::Fd(r.fd);
    match r.kind {
        OpKind::Read => opcode::Read::new(fd, r.addr, r.len.min(MAX_RW) as u32)
            .offset(r.offset)
            .build(),
        OpKind::Write => opcode::Write::new(fd, r.addr, r.len.min(MAX_RW) as u32)
            .offset(r.offset)
            .build(),
        OpKind::Readv => opcode::Readv::new(fd, r.addr.cast(), r.len as u32)
            .offset(r.offset)
            .build(),
        OpKind::Writev => opcode::Writev::new(fd, r.addr.cast(), r.len as u32)
            .offset(r.offset)
            .build(),
        OpKind::Fsync => opcode::Fsync::new(fd).build(),
        OpKind::Fdatasync => opcode::Fsync::new(fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build(),
        OpKind::Nop => opcode::Nop::new().build(),
    }
}

/// The linked write that signals a notifier; it holds a reference to the notifier until its CQE.
fn signal_entry(n: &Arc<Notifier>) -> squeue::Entry {
    n.will_be_signalled();
    opcode::Write::new(types::Fd(n.fd()), (&ONE as *const u64).cast(), 8)
        .build()
        .user_data(Arc::into_raw(n.clone()) as u64 | TAG_SIGNAL)
}

/// The linked write that signals the notifier of request `c`. Its `user_data` holds a reference
/// to the request (which holds the notifier) until its CQE, which clears `signal_write_pending`.
fn op_signal_entry(c: &Arc<UringOp>, n: &Arc<Notifier>) -> squeue::Entry {
    n.will_be_signalled();
    c.signal_write_pending.store(true, Ordering::Relaxed);
    opcode::Write::new(types::Fd(n.fd()), (&ONE as *const u64).cast(), 8)
        .build()
        .user_data(Arc::into_raw(c.clone()) as u64 | TAG_OP_SIGNAL)
}
