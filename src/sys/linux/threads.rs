//! The thread-pool engine: the last resort where the kernel offers no usable asynchronous
//! interface, and kernel AIO's helper for buffered I/O that would block inside `io_submit`.
//!
//! The workers, their queue, the blocking calls and the cancellable stream waits are the
//! platform-neutral `crate::sys::pool`, shared with the kqueue systems. A job here is the
//! shared `Completion` (or, for kernel AIO, its own wrapper): finishing it records the result
//! and signals the operation's eventfd from user space.

use nix::{errno::Errno, sys::aio::AioCancelStat};

use super::{
    config::Backend,
    engine::{
        address, answer_within_bound, Answer, Completion, Engine, InFlight, Signalling, Started,
        WAIT_SLICE,
    },
};
use crate::sys::pool::{Job, Request, WorkerPool};

impl Job for Started {
    fn request(&self) -> &Request {
        &self.completion().request
    }
    fn key(&self) -> usize {
        address(&**self)
    }
    fn finish(&self, res: i64) {
        self.completion().finish(res)
    }
}

#[derive(Debug)]
pub(crate) struct ThreadPool {
    workers: WorkerPool<Started>,
}

impl ThreadPool {
    pub(crate) fn new(max_threads: usize) -> ThreadPool {
        ThreadPool {
            workers: WorkerPool::new(max_threads),
        }
    }

    /// Queues every request; fails with EAGAIN only when no worker exists and none can start.
    pub(crate) fn queue(&self, batch: &[Started]) -> Result<(), Errno> {
        self.workers.queue(batch)
    }

    /// Waits up to one time slice for some job to finish.
    pub(crate) fn wait(&self, c: &dyn InFlight) {
        self.workers.wait(|| c.is_done(), WAIT_SLICE)
    }

    /// A job still queued, or waiting for a stream, is cancelled; one in a blocking call on a
    /// file cannot be (see `engine` for the answer given then).
    pub(crate) fn cancel(&self, c: &Started, answer: Answer) -> AioCancelStat {
        if self.workers.cancel(c) {
            return AioCancelStat::AioCanceled;
        }
        if answer == Answer::NotWanted {
            return AioCancelStat::AioNotCanceled;
        }
        answer_within_bound(c.completion(), || self.wait(&**c))
            .unwrap_or(AioCancelStat::AioNotCanceled)
    }
}

impl Engine for ThreadPool {
    fn backend(&self) -> Backend {
        Backend::ThreadPool
    }

    fn signalling(&self) -> Signalling {
        Signalling::User
    }

    unsafe fn submit_one(&self, c: Completion) -> Result<Started, Errno> {
        let started: Started = std::sync::Arc::new(c);
        self.queue(std::slice::from_ref(&started))?;
        Ok(started)
    }

    unsafe fn submit(&self, batch: Vec<Completion>) -> Result<Vec<Started>, Errno> {
        let started: Vec<Started> = batch
            .into_iter()
            .map(|c| std::sync::Arc::new(c) as Started)
            .collect();
        self.queue(&started)?;
        Ok(started)
    }

    /// Workers record results as they go: nothing to collect.
    fn reap(&self) {}

    fn wait(&self, op: &dyn InFlight) {
        ThreadPool::wait(self, op)
    }

    fn cancel(&self, op: &Started, answer: Answer) -> AioCancelStat {
        ThreadPool::cancel(self, op, answer)
    }
}
