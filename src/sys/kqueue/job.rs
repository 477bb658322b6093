//! A submitted request on the kqueue systems, as the shared worker pool runs it, and the one
//! pool per process.
//!
//! A job records its result, marks itself done and then triggers its event: that of its
//! operation, or, through its batch's [`Group`], the batch's once the last entry is done. So
//! an event is only ever reported for an operation whose result is already readable.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering},
        Arc, OnceLock,
    },
    time::{Duration, Instant},
};

use nix::errno::Errno;

use super::notify::UserEvent;
use crate::{
    sys::pool::{Job, Request, WorkerPool},
    AioCancelStat,
};

/// The most worker threads (as Linux's default `max_threads`); they start on demand and leave
/// after a few idle seconds.
const MAX_THREADS: usize = 64;

/// How long one wait for a job lasts before it rechecks.
const WAIT_SLICE: Duration = Duration::from_millis(10);

/// How long `cancel()` waits, at most, for a job whose fate is not yet known (running on a
/// worker: it may still turn out to be a cancellable stream wait).
const CANCEL_WAIT: Duration = Duration::from_millis(50);

/// The process's worker pool.
fn pool() -> &'static WorkerPool<Arc<KqJob>> {
    static POOL: OnceLock<WorkerPool<Arc<KqJob>>> = OnceLock::new();
    POOL.get_or_init(|| WorkerPool::new(MAX_THREADS))
}

/// Several jobs reported by one event: a batch's round.
#[derive(Debug)]
pub(crate) struct Group {
    remaining: AtomicUsize,
    event: Option<Arc<UserEvent>>,
}

impl Group {
    pub(crate) fn new(count: usize, event: Option<Arc<UserEvent>>) -> Arc<Group> {
        Arc::new(Group {
            remaining: AtomicUsize::new(count),
            event,
        })
    }

    fn finished(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Some(e) = &self.event {
                e.trigger();
            }
        }
    }
}

/// One request handed to the pool, and who to tell when it is done.
#[derive(Debug)]
pub(crate) struct KqJob {
    request: Request,
    result: AtomicI64,
    done: AtomicBool,
    event: Option<Arc<UserEvent>>,
    group: Option<Arc<Group>>,
}

impl Job for Arc<KqJob> {
    fn request(&self) -> &Request {
        &self.request
    }
    fn key(&self) -> usize {
        Arc::as_ptr(self) as usize
    }
    fn finish(&self, res: i64) {
        self.result.store(res, Ordering::Relaxed);
        self.done.store(true, Ordering::Release);
        if let Some(e) = &self.event {
            e.trigger();
        }
        if let Some(g) = &self.group {
            g.finished();
        }
    }
}

impl KqJob {
    /// Queues jobs for `requests`, all or none (EAGAIN: no worker could start).
    ///
    /// # Safety
    /// Every request's buffers (and iovec array) must stay valid, and not otherwise accessed,
    /// until its job is done.
    pub(crate) unsafe fn start(
        requests: &[Request],
        event: Option<Arc<UserEvent>>,
        group: Option<Arc<Group>>,
    ) -> Result<Vec<Arc<KqJob>>, Errno> {
        let jobs: Vec<Arc<KqJob>> = requests
            .iter()
            .map(|r| {
                Arc::new(KqJob {
                    request: *r,
                    result: AtomicI64::new(0),
                    done: AtomicBool::new(false),
                    event: event.clone(),
                    group: group.clone(),
                })
            })
            .collect();
        pool().queue(&jobs)?;
        Ok(jobs)
    }

    pub(crate) fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// The result, once done: bytes, or the error; `EINPROGRESS` before.
    pub(crate) fn result(&self) -> nix::Result<usize> {
        if !self.is_done() {
            return Err(Errno::EINPROGRESS);
        }
        let res = self.result.load(Ordering::Relaxed);
        if res < 0 {
            Err(Errno::from_raw(-res as i32))
        } else {
            Ok(res as usize)
        }
    }

    fn answer_for_done(&self) -> AioCancelStat {
        match self.result() {
            Err(Errno::ECANCELED) => AioCancelStat::AioCanceled,
            _ => AioCancelStat::AioAllDone,
        }
    }

    /// Cancels the job if it is queued or waiting for a stream; otherwise waits at most
    /// [`CANCEL_WAIT`] to learn its fate (`AioNotCanceled` if it is still running then).
    pub(crate) fn cancel(self: &Arc<Self>) -> AioCancelStat {
        if self.is_done() {
            return self.answer_for_done();
        }
        if pool().cancel(self) {
            return AioCancelStat::AioCanceled;
        }
        let deadline = Instant::now() + CANCEL_WAIT;
        while !self.is_done() {
            if Instant::now() >= deadline {
                return AioCancelStat::AioNotCanceled;
            }
            pool().wait(|| self.is_done(), WAIT_SLICE);
        }
        self.answer_for_done()
    }

    /// Asks for cancellation without waiting.
    pub(crate) fn request_cancel(self: &Arc<Self>) {
        if !self.is_done() {
            pool().cancel(self);
        }
    }

    /// Blocks until done (a cancelled or file job ends within its system call; a stream wait
    /// must have been cancelled first).
    pub(crate) fn wait(&self) {
        while !self.is_done() {
            pool().wait(|| self.is_done(), WAIT_SLICE);
        }
    }
}
