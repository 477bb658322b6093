//! The io_uring engine.
//!
//! Each request becomes one SQE whose `user_data` is a leaked `Arc<Completion>` (the engine's
//! reference, given back when its CQE is reaped). When the request has a notifier, the SQE is
//! followed by an `IORING_OP_WRITE` of the value 1 to that eventfd, linked with
//! `IOSQE_IO_HARDLINK` so that it runs after the request however the request ends (plain
//! `IO_LINK` would skip it after a short read or an error, and no event would ever arrive). The
//! kernel posts the request's CQE before it issues the linked write, so by the time the eventfd
//! wakes epoll the result is waiting in the completion queue.
//!
//! The linked write resolves its fd when it is issued, not when it is submitted. The write holds
//! an `Arc<Notifier>` (its own `user_data`, tagged) until its CQE is reaped, so the eventfd is
//! never closed or lent to another operation while a write may still target its number.
//!
//! Batches (`LioCb`) get a small ring of their own, taken from a pool. Their requests go in
//! unlinked, after an `IORING_OP_TIMEOUT` whose completion count is the batch's size, hard-linked
//! to one write to the batch's notifier: the kernel completes the timeout when the batch's last
//! CQE is posted, and the write wakes epoll once. The batch costs one `io_uring_enter`, with no
//! thread of ours (nor of io_uring's, as `IOSQE_IO_DRAIN` would) woken.
//!
//! Rings are created without `IORING_SETUP_DEFER_TASKRUN` (the linked write would then only run
//! inside `io_uring_enter(GETEVENTS)`, and epoll would never wake) and with `dontfork`, so a
//! child process cannot touch its parent's queues.

use std::{
    io,
    os::fd::{AsRawFd, RawFd},
    sync::{
        atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use io_uring::{opcode, squeue, types, IoUring, Probe};
use nix::{errno::Errno, sys::aio::AioCancelStat};

use super::driver::{Completion, OpKind, Request, WAIT_SLICE};
use super::notify::Notifier;

/// The low bits of `user_data` say what a CQE belongs to (the pointers are 8-aligned).
const TAG_MASK: u64 = 0b11;
const TAG_OP: u64 = 0;
const TAG_SIGNAL: u64 = 1;
const TAG_CANCEL: u64 = 2;
/// A CQE with nothing to record (a batch's counting timeout).
const TAG_IGNORE: u64 = 3;

/// The time limit of a batch's counting timeout: never reached in practice (136 years).
static NEVER: types::Timespec = types::Timespec::new().sec(1 << 32);

/// The value the linked write adds to an eventfd. It must outlive every write: it is static.
static ONE: u64 = 1;

/// The most a single read or write may ask for (Linux's `MAX_RW_COUNT`); longer ones complete
/// short, as `pread` would.
const MAX_RW: usize = 0x7fff_f000;

/// Submission queue entries: small, because every submission is pushed to the kernel at once.
const SQ_ENTRIES: u32 = 256;
/// io_uring's upper bound on completion queue entries.
const MAX_CQ_ENTRIES: u32 = 65536;

const PENDING: i32 = i32::MIN;

/// A cancellation request waiting for its own CQE.
#[derive(Debug)]
struct CancelState {
    res: AtomicI32,
}

/// One io_uring instance and the locks that share it between threads.
pub(crate) struct Ring {
    ring: IoUring,
    /// Serialises every use of the ring's queues: pushes to the submission queue and reaping
    /// of the completion queue. (Separate locks for the two queues let concurrent submitters
    /// and reapers corrupt submissions: SQEs ran with stale buffers and others never ran, seen
    /// as heap corruption and hangs with three threads sharing the ring.)
    sq: Mutex<()>,
    /// CQEs still to come for the SQEs pushed so far: a batch ring is reused only at zero, so no
    /// completion of one batch can reach the next.
    outstanding: AtomicUsize,
}

/// The engine: a ring shared by single operations, and a pool of rings for batches.
pub(crate) struct Uring {
    main: Ring,
    batch_rings: Mutex<Vec<Arc<Ring>>>,
}

/// Set `IOSQE_ASYNC` on every request: see `BLOCKED_SUBMIT`.
static FORCE_ASYNC: AtomicBool = AtomicBool::new(false);

/// The largest batch that gets a ring of its own; larger ones share the main ring.
pub(crate) const MAX_BATCH_RING: usize = 4095;
/// Idle batch rings kept for reuse.
const BATCH_POOL_MAX: usize = 8;

/// A submission that takes this long probably ran a request inline instead of queueing it:
/// some files (a FUSE file served with direct I/O but without `FUSE_ASYNC_DIO`, for example) do
/// that, for as long as the filesystem takes. After `BLOCKED_STRIKES` such submissions, every
/// later request is queued to io_uring's workers with `IOSQE_ASYNC`, so the caller's thread is
/// not blocked again. One strike is not enough: on a loaded machine a thread can be preempted in
/// the middle of a submission for tens of milliseconds (seen at load 11), and queueing every
/// request to workers halves the throughput of cached reads. `MIO_AIO_URING_ASYNC=1` queues
/// them from the start.
const BLOCKED_SUBMIT: std::time::Duration = std::time::Duration::from_millis(50);
const BLOCKED_STRIKES: usize = 2;
static STRIKES: AtomicUsize = AtomicUsize::new(0);

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("fd", &self.ring.as_raw_fd())
            .field("sq_entries", &self.ring.params().sq_entries())
            .finish()
    }
}

impl std::fmt::Debug for Uring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uring").field("main", &self.main).finish()
    }
}

impl Uring {
    /// Sets up the main ring, with room in the completion queue for every operation in flight
    /// (each may post two CQEs: its own and its notifier write's).
    pub(crate) fn new(max_in_flight: usize) -> io::Result<Uring> {
        let cq_entries = u32::try_from(max_in_flight.saturating_mul(2))
            .unwrap_or(MAX_CQ_ENTRIES)
            .clamp(2 * SQ_ENTRIES, MAX_CQ_ENTRIES)
            .next_power_of_two();
        let sqpoll_idle_ms: Option<u32> = std::env::var("MIO_AIO_URING_SQPOLL")
            .ok()
            .and_then(|v| v.parse().ok());
        let main = Ring::new(SQ_ENTRIES, cq_entries, sqpoll_idle_ms, None)?;
        let unsupported = || io::Error::new(io::ErrorKind::Unsupported, "io_uring is too old");
        if !main.ring.params().is_feature_nodrop() {
            return Err(unsupported());
        }
        let mut probe = Probe::new();
        main.ring.submitter().register_probe(&mut probe)?;
        let needed = [
            opcode::Read::CODE,
            opcode::Write::CODE,
            opcode::Readv::CODE,
            opcode::Writev::CODE,
            opcode::Fsync::CODE,
            opcode::AsyncCancel::CODE,
            opcode::Nop::CODE,
        ];
        if !needed.iter().all(|&op| probe.is_supported(op)) {
            return Err(unsupported());
        }
        if std::env::var("MIO_AIO_URING_ASYNC").is_ok_and(|v| v == "1") {
            FORCE_ASYNC.store(true, Ordering::Relaxed);
        }
        Ok(Uring {
            main,
            batch_rings: Mutex::new(Vec::new()),
        })
    }

    /// Starts single operations on the main ring.
    pub(crate) fn submit(&self, batch: &[Arc<Completion>]) -> Result<usize, Errno> {
        self.main.submit(batch, None)
    }

    /// A ring of its own for a batch of `len` requests (plus its signal), from the pool
    /// when one is big enough. It shares the main ring's kernel workers.
    pub(crate) fn batch_ring(&self, len: usize) -> io::Result<Arc<Ring>> {
        // The batch, plus its counting timeout and signal write.
        let needed = len + 2;
        {
            let mut pool = self.batch_rings.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = pool.iter().position(|r| r.capacity() >= needed) {
                return Ok(pool.swap_remove(i));
            }
        }
        let entries = needed.next_power_of_two().max(64) as u32;
        let main_fd = self.main.ring.as_raw_fd();
        Ring::new(entries, 2 * entries, None, Some(main_fd)).map(Arc::new)
    }

    /// Takes back a batch ring once everything it was given has completed.
    pub(crate) fn recycle(&self, ring: Arc<Ring>) {
        ring.settle();
        if Arc::strong_count(&ring) == 1 {
            let mut pool = self.batch_rings.lock().unwrap_or_else(|e| e.into_inner());
            if pool.len() < BATCH_POOL_MAX {
                pool.push(ring);
            }
        }
    }

    pub(crate) fn reap(&self) {
        self.main.reap()
    }

    pub(crate) fn wait(&self, c: &Completion) {
        self.main.wait(c)
    }

    pub(crate) fn cancel(&self, c: &Arc<Completion>) -> AioCancelStat {
        self.main.cancel(c)
    }
}

impl Ring {
    fn new(
        sq_entries: u32,
        cq_entries: u32,
        sqpoll_idle_ms: Option<u32>,
        attach_wq: Option<RawFd>,
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
            outstanding: AtomicUsize::new(0),
        })
    }

    fn capacity(&self) -> usize {
        self.ring.params().sq_entries() as usize
    }

    /// Pushes every request (with its linked notifier write) and enters the kernel once per
    /// full submission queue. io_uring accepts every SQE it is given, so all are accepted; a
    /// request that cannot start (bad fd, …) reports its error in its CQE. With `batch_signal`
    /// (batch rings only, which hold one batch at a time), that notifier is signalled once every
    /// request of the batch has completed.
    pub(crate) fn submit(
        &self,
        batch: &[Arc<Completion>],
        batch_signal: Option<&Arc<Notifier>>,
    ) -> Result<usize, Errno> {
        let _sq = lock(&self.sq);
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
            self.outstanding.fetch_add(2, Ordering::Relaxed);
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
            self.outstanding.fetch_add(needed, Ordering::Relaxed);
            if FORCE_ASYNC.load(Ordering::Relaxed) {
                data = data.flags(squeue::Flags::ASYNC);
            }
            // SAFETY: the request's buffers stay valid until its CQE is reaped (the driver's
            // contract); the engine's `Arc` keeps the completion alive until then.
            unsafe {
                match signal {
                    None => sq.push(&data),
                    Some(n) => {
                        sq.push_multiple(&[data.flags(squeue::Flags::IO_HARDLINK), signal_entry(n)])
                    }
                }
                .expect("room was made above")
            };
        }
        sq.sync();
        drop(sq);
        // Everything is pushed, so everything counts as accepted even if this enter fails: the
        // next enter (a later submit, or any wait) consumes it.
        let _ = self.enter_all();
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
            self.enter_all()?;
            if self.ring.params().is_setup_sqpoll() {
                let _ = self.ring.submitter().squeue_wait();
            } else {
                std::thread::yield_now();
            }
            sq.sync();
        }
        Ok(())
    }

    /// Enters the kernel until it has consumed every pushed SQE.
    fn enter_all(&self) -> Result<(), Errno> {
        loop {
            let start = std::time::Instant::now();
            let res = self.ring.submitter().submit();
            if start.elapsed() >= BLOCKED_SUBMIT
                && STRIKES.fetch_add(1, Ordering::Relaxed) + 1 >= BLOCKED_STRIKES
            {
                FORCE_ASYNC.store(true, Ordering::Relaxed);
            }
            match res {
                Ok(_) => return Ok(()),
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

    /// Records every result waiting in the completion queue (and in the kernel's overflow
    /// list). Never blocks on I/O.
    pub(crate) fn reap(&self) {
        // One lock for both queues: see `Ring::sq`.
        let _guard = lock(&self.sq);
        loop {
            // SAFETY: `self.cq` is held, so this is the only live handle on the completion queue.
            let mut cq = unsafe { self.ring.completion_shared() };
            if cq.is_empty() {
                drop(cq);
                if self.cq_overflowed() {
                    // Flushes the kernel's overflow list into the now empty queue.
                    let _ = self.ring.submitter().submit_and_wait(0);
                    continue;
                }
                return;
            }
            for cqe in &mut cq {
                self.outstanding.fetch_sub(1, Ordering::Relaxed);
                dispatch(cqe.user_data(), cqe.result());
            }
        }
    }

    /// Called with `self.sq` held.
    fn cq_overflowed(&self) -> bool {
        // SAFETY: the caller holds `self.sq`; the handle only reads the queue's flags. It is a
        // named local so that it is dropped (its Drop stores the tail it read) here, while the
        // lock is certainly held: as a temporary in a tail expression it would outlive a guard
        // taken in this function (edition 2021), and store a stale tail after the unlock.
        let sq = unsafe { self.ring.submission_shared() };
        sq.cq_overflow()
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
    fn settle(&self) {
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
    pub(crate) fn cancel(&self, c: &Arc<Completion>) -> AioCancelStat {
        let state = Arc::new(CancelState {
            res: AtomicI32::new(PENDING),
        });
        {
            let _sq = lock(&self.sq);
            // SAFETY: `self.sq` is held, so this is the only live handle on the submission queue.
            let mut sq = unsafe { self.ring.submission_shared() };
            if self.make_room(&mut sq, 1).is_err() {
                return AioCancelStat::AioNotCanceled;
            }
            let entry = opcode::AsyncCancel::new(Arc::as_ptr(c) as u64 | TAG_OP)
                .build()
                .user_data(Arc::into_raw(state.clone()) as u64 | TAG_CANCEL);
            // SAFETY: an async-cancel SQE refers to no memory of ours (only a user_data value);
            // the state it reports to is kept alive by the leaked `Arc` until its CQE.
            if unsafe { sq.push(&entry) }.is_err() {
                return AioCancelStat::AioNotCanceled;
            }
            self.outstanding.fetch_add(1, Ordering::Relaxed);
            sq.sync();
            drop(sq);
            if self.enter_all().is_err() {
                return AioCancelStat::AioNotCanceled;
            }
        }
        while state.res.load(Ordering::Acquire) == PENDING {
            let ts = types::Timespec::from(WAIT_SLICE);
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            self.reap();
        }
        match -state.res.load(Ordering::Acquire) {
            0 => AioCancelStat::AioCanceled,
            libc::ENOENT => {
                // Already finished: make sure its result is recorded before saying so.
                self.reap();
                AioCancelStat::AioAllDone
            }
            _ => AioCancelStat::AioNotCanceled,
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
            let c = unsafe { Arc::from_raw(ptr as *const Completion) };
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
    opcode::Write::new(types::Fd(n.fd()), (&ONE as *const u64).cast(), 8)
        .build()
        .user_data(Arc::into_raw(n.clone()) as u64 | TAG_SIGNAL)
}
