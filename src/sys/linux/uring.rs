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
//! a reference to the notifier (its own `user_data`, tagged: the request's `Arc<Completion>`,
//! or a batch's `Arc<Notifier>`) until its CQE is reaped, so the eventfd is never closed or
//! lent to another operation while a write may still target its number.
//!
//! A single read whose data is in the page cache never gets here: the driver does it at once
//! (`nowait`). Single operations go to a few shared rings, one per CPU: each thread keeps to
//! one ring, whose lock it holds while it pushes its SQEs and enters the kernel, so that
//! threads on different CPUs never wait for each other, and each thread submits exactly its
//! own requests: io_uring finishes a request with work run on the thread that submitted it,
//! which therefore waits for its requests before it exits (`thread_exit`).
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
    cell::Cell,
    io,
    os::fd::{AsRawFd, RawFd},
    sync::{
        atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering},
        Arc, Mutex, OnceLock,
    },
};

use io_uring::{opcode, squeue, types, IoUring, Probe};
use nix::{errno::Errno, sys::aio::AioCancelStat};

use super::driver::{Completion, OpKind, Request, WAIT_SLICE};
use super::notify::Notifier;
use super::policy::Classifier;
use super::stream;

mod thread_exit;

/// The low bits of `user_data` say what a CQE belongs to (the pointers are 8-aligned).
const TAG_MASK: u64 = 0b111;
const TAG_OP: u64 = 0;
const TAG_SIGNAL: u64 = 1;
const TAG_CANCEL: u64 = 2;
/// A CQE with nothing to record (a batch's counting timeout).
const TAG_IGNORE: u64 = 3;
/// The linked write that signals one request's notifier (`user_data`: the request's completion).
const TAG_OP_SIGNAL: u64 = 4;

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
    outstanding: AtomicUsize,
    /// Set (under `sq`) when `outstanding` exceeded the completion queue's size, the only way
    /// the queue can overflow into the kernel's overflow list; cleared (under `sq`) once the
    /// list is known to be empty again. While it is clear, reaping need not look at the
    /// submission queue's overflow flag, so reapers never wait for submitters.
    overflow_risk: AtomicBool,
}

/// The engine: rings shared by single operations, and a pool of rings for batches.
pub(crate) struct Uring {
    /// The rings for single operations.
    /// Each thread submits to one of them, chosen at its first submission, round-robin: a
    /// ring's lock is held across `io_uring_enter`, in which the kernel runs cached reads
    /// inline, so threads sharing one ring would take turns (measured: two tokio workers
    /// reading from the page cache spent 40% of their time waiting for each other). As many
    /// as there are CPUs (at most `MAX_SHARDS`), created on first use; the first one always
    /// exists. One only with SQPOLL, which polls each ring with a kernel thread of its own.
    shards: Box<[OnceLock<Arc<Ring>>]>,
    /// Completion queue size of the shards after the first.
    shard_cq_entries: u32,
    batch_rings: Mutex<Vec<Arc<Ring>>>,
}

/// The most rings for single operations.
const MAX_SHARDS: usize = 8;

/// The next shard to hand to a thread that has not submitted yet.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard number (modulo the number of shards), once it has submitted.
    static SHARD: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The most requests a batch ring takes in one submission: io_uring's largest submission queue
/// (32,768 entries) less the batch's counting timeout and signal write. The driver submits a
/// larger batch in rounds (`EINCOMPLETE`), as it does past the in-flight limit.
pub(crate) const MAX_BATCH_RING: usize = 32766;
/// Idle batch rings kept for reuse.
const BATCH_POOL_MAX: usize = 8;
/// The pool keeps at most one batch ring larger than this (submission entries): a full-size
/// one holds 3 MiB of queues, but creating it costs more than submitting 16,384 cached reads.
const LARGE_RING_ENTRIES: usize = 4096;

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
        let shards: Vec<_> = self.shards.iter().filter_map(OnceLock::get).collect();
        f.debug_struct("Uring").field("shards", &shards).finish()
    }
}

impl Uring {
    /// Sets up the first ring, with room in the completion queue for every operation in flight
    /// (each may post two CQEs: its own and its notifier write's). Later rings share the room
    /// out: a thread that puts more in flight on its ring than the ring's completion queue
    /// holds makes the kernel keep the excess in its overflow list, which reaping flushes.
    pub(crate) fn new(max_in_flight: usize) -> io::Result<Uring> {
        let cq_entries = u32::try_from(max_in_flight.saturating_mul(2))
            .unwrap_or(MAX_CQ_ENTRIES)
            .clamp(2 * SQ_ENTRIES, MAX_CQ_ENTRIES)
            .next_power_of_two();
        let sqpoll_idle_ms: Option<u32> = std::env::var("MIO_AIO_URING_SQPOLL")
            .ok()
            .and_then(|v| v.parse().ok());
        let first = Ring::new(SQ_ENTRIES, cq_entries, sqpoll_idle_ms, None)?;
        let unsupported = || io::Error::new(io::ErrorKind::Unsupported, "io_uring is too old");
        if !first.ring.params().is_feature_nodrop() {
            return Err(unsupported());
        }
        let mut probe = Probe::new();
        first.ring.submitter().register_probe(&mut probe)?;
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
        let count = if sqpoll_idle_ms.is_some() {
            1
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_SHARDS))
        };
        let shards: Box<[OnceLock<Arc<Ring>>]> = (0..count).map(|_| OnceLock::new()).collect();
        let _ = shards[0].set(Arc::new(first));
        Ok(Uring {
            shards,
            shard_cq_entries: (cq_entries / count as u32)
                .max(2 * SQ_ENTRIES)
                .next_power_of_two(),
            batch_rings: Mutex::new(Vec::new()),
        })
    }

    fn first(&self) -> &Arc<Ring> {
        self.shards[0].get().expect("created by Uring::new")
    }

    /// The ring this thread submits single operations to. If a new ring cannot be created (no
    /// file descriptor left, say), the first ring serves.
    pub(crate) fn ring_for_this_thread(&self) -> Arc<Ring> {
        let n = SHARD
            .try_with(|s| match s.get() {
                Some(n) => n,
                None => {
                    let n = NEXT_SHARD.fetch_add(1, Ordering::Relaxed);
                    s.set(Some(n));
                    n
                }
            })
            // A thread-local destructor submitting: any ring will do.
            .unwrap_or(0);
        let slot = &self.shards[n % self.shards.len()];
        if let Some(ring) = slot.get() {
            return ring.clone();
        }
        let fd = self.first().ring.as_raw_fd();
        match Ring::new(SQ_ENTRIES, self.shard_cq_entries, None, Some(fd)) {
            // If another thread created it meanwhile, `set` fails and drops this one unused.
            Ok(ring) => slot.get_or_init(|| Arc::new(ring)).clone(),
            Err(_) => self.first().clone(),
        }
    }

    /// Starts single operations, all made for the same ring (`Completion::ring`).
    pub(crate) fn submit(&self, batch: &[Arc<Completion>]) -> Result<usize, Errno> {
        let ring = batch.first().and_then(|c| c.ring.as_ref());
        ring.unwrap_or_else(|| self.first()).submit(batch, None)
    }

    /// A ring of its own for a batch of `len` requests (plus its signal), from the pool
    /// when one is big enough. It shares the first ring's kernel workers.
    pub(crate) fn batch_ring(&self, len: usize) -> io::Result<Arc<Ring>> {
        // The batch, plus its counting timeout and signal write.
        let needed = len + 2;
        {
            let mut pool = self.batch_rings.lock().unwrap_or_else(|e| e.into_inner());
            // The smallest that fits, so that a small batch leaves a large ring to large ones.
            let fitting = (0..pool.len()).filter(|&i| pool[i].capacity() >= needed);
            if let Some(i) = fitting.min_by_key(|&i| pool[i].capacity()) {
                return Ok(pool.swap_remove(i));
            }
        }
        let entries = needed.next_power_of_two().max(64) as u32;
        let first_fd = self.first().ring.as_raw_fd();
        Ring::new(entries, 2 * entries, None, Some(first_fd)).map(Arc::new)
    }

    /// Takes back a batch ring once everything it was given has completed. The shared rings
    /// of single operations are never pooled (nor waited for).
    pub(crate) fn recycle(&self, ring: Arc<Ring>) {
        if self
            .shards
            .iter()
            .any(|s| s.get().is_some_and(|r| Arc::ptr_eq(r, &ring)))
        {
            return;
        }
        ring.settle();
        if Arc::strong_count(&ring) == 1 {
            let mut pool = self.batch_rings.lock().unwrap_or_else(|e| e.into_inner());
            let large = |r: &Ring| r.capacity() > LARGE_RING_ENTRIES;
            if pool.len() < BATCH_POOL_MAX && !(large(&ring) && pool.iter().any(|r| large(r))) {
                pool.push(ring);
            }
        }
    }

    /// Records what every shared ring has finished (the reaper thread's job, for batches
    /// larger than a batch ring).
    pub(crate) fn reap(&self) {
        for ring in self.shards.iter().filter_map(OnceLock::get) {
            ring.reap();
        }
    }

    /// Only for completions without a ring (there are none: see `Uring::submit`).
    pub(crate) fn wait(&self, c: &Completion) {
        self.first().wait(c)
    }

    /// Only for completions without a ring (there are none: see `Uring::submit`).
    pub(crate) fn cancel(&self, c: &Arc<Completion>) -> AioCancelStat {
        self.first().cancel(c)
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
            cq: Mutex::new(()),
            outstanding: AtomicUsize::new(0),
            overflow_risk: AtomicBool::new(false),
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
        // Requests the kernel might run inside the enter below, for as long as their file's
        // server takes (see `policy`), go straight to a kernel worker. Decided before the lock.
        let mut files = Classifier::default();
        let to_worker: Vec<bool> = batch
            .iter()
            .map(|c| files.uring_async(c.request.fd))
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
                    thread_exit::track(&batch[..pushed], batch_signal.is_some());
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
        drop(sq);
        thread_exit::track(batch, batch_signal.is_some());
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
            match self.ring.submitter().submit() {
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
            let _submitting = lock_briefly_held(&self.sq);
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
            self.owe(1);
            sq.sync();
            drop(sq);
            if self.enter_all().is_err() {
                return AioCancelStat::AioNotCanceled;
            }
        }
        // The kernel answers a cancel at once; the bound only keeps a broken ring from hanging
        // the caller (the state then stays with its SQE until its CQE, if ever).
        let deadline = std::time::Instant::now() + stream::CANCEL_REPLY_WAIT;
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
            _ => stream::answer_within_bound(c, || self.wait(c))
                .unwrap_or(AioCancelStat::AioNotCanceled),
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
        TAG_OP_SIGNAL => {
            // SAFETY: made by `Arc::into_raw` in `op_signal_entry`; exactly one CQE per write.
            let c = unsafe { Arc::from_raw(ptr as *const Completion) };
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
/// to the completion (which holds the notifier) until its CQE, which clears
/// `signal_write_pending`.
fn op_signal_entry(c: &Arc<Completion>, n: &Arc<Notifier>) -> squeue::Entry {
    n.will_be_signalled();
    c.signal_write_pending.store(true, Ordering::Relaxed);
    opcode::Write::new(types::Fd(n.fd()), (&ONE as *const u64).cast(), 8)
        .build()
        .user_data(Arc::into_raw(c.clone()) as u64 | TAG_OP_SIGNAL)
}
