//! The contract between the driver and its engines, and the types both sides share.
//!
//! An engine (io_uring, kernel AIO, worker threads) moves requests to the kernel and results
//! back; it implements [`Engine`]. The driver (`driver.rs`) chooses one engine per process and
//! hands it [`Completion`]s: a [`Request`] plus who to tell when it ends. The engine wraps each
//! one it accepts in a type of its own, holding whatever it needs per operation (io_uring: the
//! ring it went to; kernel AIO: its `iocb`; the thread pool: nothing), and gives it back as a
//! [`Started`], an `Arc<dyn InFlight>`.
//!
//! The engine keeps one reference to each `Started` for as long as the kernel (or a worker
//! thread) may still touch the operation's buffers, and drops it only after recording the
//! result. Everything an operation asks of its engine afterwards (reap, wait, cancel) goes
//! through [`Completion::engine`], the one route from an operation to the engine that runs it.
//!
//! # What `cancel()` answers (every engine)
//! Once a request is done, the answer comes from its result: `ECANCELED` gives `AioCanceled`,
//! anything else `AioAllDone`. A request whose fate the engine cannot decide at once (io_uring's
//! `-EALREADY`: running on a kernel worker, which the cancel may still interrupt; a pool job that
//! has not yet shown whether it is a stream) is waited for, at most [`CANCEL_WAIT`]; if it is
//! still running then, the answer is `AioNotCanceled`, and the request may still end in any way,
//! `ECANCELED` included.

use std::{
    any::Any,
    fmt::Debug,
    sync::{
        atomic::{AtomicI64, AtomicU8, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use nix::{errno::Errno, sys::aio::AioCancelStat};

use super::{config::Backend, fork, notify::Notifier};

pub(crate) use crate::sys::pool::{OpKind, Request};

/// How long one blocking wait inside the engines lasts before it rechecks: short enough that a
/// result recorded by another thread is noticed promptly.
pub(crate) const WAIT_SLICE: Duration = Duration::from_millis(10);

/// The errno inside an `io::Error`; for one made with a message, the errno of its kind where
/// there is an obvious one (`WouldBlock`: EAGAIN), else EIO.
pub(crate) fn io_errno(e: std::io::Error) -> Errno {
    match e.raw_os_error() {
        Some(errno) => Errno::from_raw(errno),
        None if e.kind() == std::io::ErrorKind::WouldBlock => Errno::EAGAIN,
        None => Errno::EIO,
    }
}

/// How long `cancel()` waits, at most, for a request whose fate is not yet known.
pub(crate) const CANCEL_WAIT: Duration = Duration::from_millis(50);

/// The longest io_uring's `cancel` waits for the CQE of its own cancel request.
pub(crate) const CANCEL_REPLY_WAIT: Duration = Duration::from_secs(1);

/// The answer `cancel()` gives about a request that is done.
pub(crate) fn answer_for_done(c: &Completion) -> AioCancelStat {
    match c.result() {
        Err(Errno::ECANCELED) => AioCancelStat::AioCanceled,
        _ => AioCancelStat::AioAllDone,
    }
}

/// Waits at most [`CANCEL_WAIT`] for `c` to be done, calling `progress` (which must return
/// within a few milliseconds) between checks; returns the answer for the done request, or
/// `None` if it is still running.
pub(crate) fn answer_within_bound(
    c: &Completion,
    mut progress: impl FnMut(),
) -> Option<AioCancelStat> {
    let deadline = Instant::now() + CANCEL_WAIT;
    loop {
        if c.is_done() {
            return Some(answer_for_done(c));
        }
        if Instant::now() >= deadline {
            return None;
        }
        progress();
    }
}

/// Several operations that are reported by one event: a batch.
#[derive(Debug)]
pub(crate) struct Group {
    remaining: AtomicUsize,
    notifier: Option<Arc<Notifier>>,
}

impl Group {
    pub(crate) fn new(count: usize, notifier: Option<Arc<Notifier>>) -> Arc<Group> {
        Arc::new(Group {
            remaining: AtomicUsize::new(count),
            notifier,
        })
    }

    /// Counts `n` operations as done (or as never started); the last one signals.
    pub(crate) fn finished(&self, n: usize) {
        if n > 0 && self.remaining.fetch_sub(n, Ordering::AcqRel) == n {
            if let Some(n) = &self.notifier {
                n.signal();
            }
        }
    }
}

/// Who signals an operation's notifier when it completes.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Signalling {
    /// The kernel writes each single operation's eventfd itself (io_uring's linked write). A
    /// batch that the engine does not signal itself wakes the driver's reaper thread instead.
    Kernel,
    /// The kernel can signal one eventfd for all operations, the reaper thread's, which records
    /// results and signals each notifier from user space (kernel AIO).
    Reaper,
    /// The engine's own threads record results and signal from user space (the thread pool).
    User,
}

/// Where a completion comes from: its engine, the count of operations in flight that it is part
/// of, and the fork generation it was made in. One per driver, which lives for the whole process.
#[derive(Debug)]
pub(crate) struct Origin {
    pub engine: Box<dyn Engine>,
    pub in_flight: AtomicUsize,
    pub generation: u64,
}

const IN_FLIGHT: u8 = 0;
const DONE: u8 = 1;

/// The state of one submitted request that every engine shares.
#[derive(Debug)]
pub(crate) struct Completion {
    pub request: Request,
    /// Notifier the kernel signals itself when the request completes (io_uring linked write,
    /// kernel AIO resfd).
    pub kernel_signal: Option<Arc<Notifier>>,
    /// Notifier signalled from user space when the result is recorded.
    pub user_signal: Option<Arc<Notifier>>,
    pub group: Option<Arc<Group>>,
    origin: &'static Origin,
    state: AtomicU8,
    result: AtomicI64,
}

impl Completion {
    /// A request about to be handed to `origin`'s engine, counted as in flight until its result
    /// is recorded.
    pub(crate) fn new(
        request: Request,
        kernel_signal: Option<Arc<Notifier>>,
        user_signal: Option<Arc<Notifier>>,
        group: Option<Arc<Group>>,
        origin: &'static Origin,
    ) -> Completion {
        Completion {
            request,
            kernel_signal,
            user_signal,
            group,
            origin,
            state: AtomicU8::new(IN_FLIGHT),
            result: AtomicI64::new(0),
        }
    }

    /// A request that was done before it reached any engine (never counted as in flight).
    pub(crate) fn done(request: Request, res: i64, origin: &'static Origin) -> Completion {
        Completion {
            request,
            kernel_signal: None,
            user_signal: None,
            group: None,
            origin,
            state: AtomicU8::new(DONE),
            result: AtomicI64::new(res),
        }
    }

    /// The engine that runs this request.
    pub(crate) fn engine(&self) -> &'static dyn Engine {
        &*self.origin.engine
    }

    /// Records the result (`>= 0`, or `-errno`) and tells whoever waits. Called exactly once.
    pub(crate) fn finish(&self, res: i64) {
        self.result.store(res, Ordering::Relaxed);
        self.state.store(DONE, Ordering::Release);
        self.origin.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Some(n) = &self.user_signal {
            n.signal();
        }
        if let Some(g) = &self.group {
            g.finished(1);
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.state.load(Ordering::Acquire) == DONE
    }

    /// The result, once done: bytes, or the error.
    pub(crate) fn result(&self) -> nix::Result<usize> {
        debug_assert!(self.is_done());
        let res = self.result.load(Ordering::Relaxed);
        if res < 0 {
            Err(Errno::from_raw(-res as i32))
        } else {
            Ok(res as usize)
        }
    }

    /// Whether this completion belongs to this process (not a parent's, across `fork`).
    pub(crate) fn is_ours(&self) -> bool {
        self.origin.generation == fork::generation()
    }
}

/// A request an engine has accepted, wrapped in the engine's own per-operation state.
pub(crate) trait InFlight: Debug + Send + Sync + Any {
    fn completion(&self) -> &Completion;
    /// For the engine that made it, to get its own type back.
    fn as_any(&self) -> &dyn Any;
}

/// The handle an operation keeps on its submitted request.
pub(crate) type Started = Arc<dyn InFlight>;

/// A request with no per-operation engine state (the thread pool's, or one done at once).
impl InFlight for Completion {
    fn completion(&self) -> &Completion {
        self
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl dyn InFlight {
    pub(crate) fn is_done(&self) -> bool {
        self.completion().is_done()
    }

    pub(crate) fn result(&self) -> nix::Result<usize> {
        self.completion().result()
    }

    pub(crate) fn is_ours(&self) -> bool {
        self.completion().is_ours()
    }

    /// Records finished results (of this request's queue) without blocking.
    pub(crate) fn reap(&self) {
        self.completion().engine().reap_for(&[self]);
    }

    /// Blocks until done: used when an operation is dropped or its results are collected early.
    pub(crate) fn wait(&self) {
        if !self.is_ours() {
            return;
        }
        let engine = self.completion().engine();
        while !self.is_done() {
            engine.wait(self);
        }
    }

    /// Asks the engine to cancel the request, and reports what happened (see the module doc).
    pub(crate) fn cancel(self: &Arc<Self>) -> AioCancelStat {
        self.cancel_with(Answer::Wanted)
    }

    /// Asks the engine to cancel the request without waiting to learn whether it did: for a
    /// drop, which waits for the request itself (or, for an owned operation, must not block).
    pub(crate) fn request_cancel(self: &Arc<Self>) {
        self.cancel_with(Answer::NotWanted);
    }

    fn cancel_with(self: &Arc<Self>, answer: Answer) -> AioCancelStat {
        if !self.is_ours() {
            return AioCancelStat::AioAllDone;
        }
        self.reap();
        if self.is_done() {
            return answer_for_done(self.completion());
        }
        self.completion().engine().cancel(self, answer)
    }
}

/// Whether a cancel waits (a bounded time) to learn the request's fate, to answer truthfully.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Answer {
    Wanted,
    NotWanted,
}

/// The address that identifies a started request (its data, without the vtable).
pub(crate) fn address(op: &dyn InFlight) -> usize {
    op as *const dyn InFlight as *const () as usize
}

/// What every engine implements. The driver holds one as a `Box<dyn Engine>` for the life of
/// the process.
pub(crate) trait Engine: Debug + Send + Sync {
    /// Which backend this is.
    fn backend(&self) -> Backend;

    /// Who signals a completed operation's notifier: decides which notifiers the driver puts in
    /// each `Completion`.
    fn signalling(&self) -> Signalling;

    /// Who signals the notifier of the single request `r`, for an engine that hands some files
    /// to another mechanism (io_uring gives `O_DIRECT` files to kernel AIO, see
    /// `uring/direct.rs`). Decided just before [`Engine::submit_one`] takes the same request.
    fn signalling_for(&self, _r: &Request) -> Signalling {
        self.signalling()
    }

    /// The most requests of a batch the engine takes in one round and signals itself, with one
    /// notifier for the whole round ([`Engine::submit_signalled_batch`]); 0 if it cannot (the
    /// driver then counts completions in a `Group`).
    fn batch_capacity(&self) -> usize {
        0
    }

    /// [`Engine::batch_capacity`] for a batch of these requests: an engine that hands some
    /// files to another mechanism takes a batch of them as separate completions (0), which
    /// [`Engine::submit`] on the same thread then receives.
    fn batch_capacity_for(&self, _requests: &[Request]) -> usize {
        self.batch_capacity()
    }

    /// Starts one request.
    ///
    /// # Safety
    /// The request's buffers (and iovec array) must stay valid, and not otherwise accessed,
    /// until its completion is done.
    unsafe fn submit_one(&self, c: Completion) -> Result<Started, Errno>;

    /// Starts `batch`, all or a prefix: returns the accepted ones (fails, with EAGAIN when the
    /// queue is full, only if none was accepted).
    ///
    /// # Safety
    /// As for [`Engine::submit_one`], for every request.
    unsafe fn submit(&self, batch: Vec<Completion>) -> Result<Vec<Started>, Errno>;

    /// Starts a whole batch of at most [`Engine::batch_capacity`] requests, whose completions
    /// carry no notifier: the engine signals `notifier` once, when all have completed.
    ///
    /// # Safety
    /// As for [`Engine::submit_one`], for every request.
    unsafe fn submit_signalled_batch(
        &self,
        _batch: Vec<Completion>,
        _notifier: Option<&Arc<Notifier>>,
    ) -> Result<Vec<Started>, Errno> {
        Err(Errno::ENOTSUP)
    }

    /// Records the results of finished requests without blocking (the reaper thread's job).
    fn reap(&self);

    /// Records the results of finished requests among those of `ops`' queues, without blocking.
    fn reap_for(&self, _ops: &[&dyn InFlight]) {
        self.reap()
    }

    /// Blocks for a while (until some request completes or about [`WAIT_SLICE`]), recording
    /// results. `op` is one of this engine's, not yet done.
    fn wait(&self, op: &dyn InFlight);

    /// Tries to cancel `op`, one of this engine's, not yet done. With `Answer::NotWanted` it
    /// never waits for a fate it cannot tell at once (and then answers `AioNotCanceled`).
    fn cancel(&self, op: &Started, answer: Answer) -> AioCancelStat;

    /// Takes back what a finished batch used (every one of `ops` is done).
    fn release(&self, _ops: Vec<Started>) {}
}
