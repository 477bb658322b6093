//! The thread-pool engine: the last resort where the kernel offers no usable asynchronous
//! interface, and kernel AIO's helper for buffered I/O that would block inside `io_submit`.
//!
//! Workers run the plain blocking system calls (`pread`, `pwritev`, `fsync`, …), record the
//! result and signal the operation's notifier from user space. Workers start on demand, up to
//! `Config::max_threads`, and leave after a few idle seconds. A read or write on a stream (pipe,
//! socket) waits in `poll` instead, so that `cancel` can end it (see `stream`). The pool keeps no state of its own
//! per operation: a job is the shared `Completion` (or, for kernel AIO, its own wrapper).

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Condvar, Mutex},
    time::Duration,
};

use nix::{errno::Errno, sys::aio::AioCancelStat};

use super::{
    config::Backend,
    engine::{
        address, answer_within_bound, Answer, Completion, Engine, InFlight, OpKind, Request,
        Signalling, Started, WAIT_SLICE,
    },
    stream::{self, StreamWait},
};

const IDLE_EXIT: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct Queue {
    jobs: VecDeque<Started>,
    threads: usize,
    idle: usize,
    /// The jobs workers are running, by address (kept alive by the worker until its entry is
    /// removed), so that `cancel` can reach a stream wait.
    running: HashMap<usize, Running>,
}

/// A job on a worker, as `cancel` sees it.
#[derive(Debug)]
enum Running {
    /// Its first system call is running or about to: it may turn out to be a stream.
    /// `cancel_requested` makes a stream job end with ECANCELED before it waits.
    Probing { cancel_requested: bool },
    /// Waiting for a stream to be ready: cancellable.
    Stream(Arc<StreamWait>),
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    /// Wakes idle workers.
    work: Condvar,
    /// Wakes threads waiting for some job to finish.
    done: Condvar,
    max_threads: usize,
}

#[derive(Debug)]
pub(crate) struct ThreadPool {
    shared: Arc<Shared>,
}

impl ThreadPool {
    pub(crate) fn new(max_threads: usize) -> ThreadPool {
        ThreadPool {
            shared: Arc::new(Shared {
                queue: Mutex::default(),
                work: Condvar::new(),
                done: Condvar::new(),
                max_threads,
            }),
        }
    }

    /// Queues every request; fails with EAGAIN only when no worker exists and none can start.
    pub(crate) fn queue(&self, batch: &[Started]) -> Result<(), Errno> {
        let mut q = self.shared.queue.lock().unwrap();
        q.jobs.extend(batch.iter().cloned());
        while q.idle < q.jobs.len() && q.threads < self.shared.max_threads {
            let shared = self.shared.clone();
            let spawned = std::thread::Builder::new()
                .name("mio-aio-worker".into())
                .spawn(move || worker(shared));
            match spawned {
                Ok(_) => {
                    q.threads += 1;
                    q.idle += 1;
                }
                Err(_) if q.threads > 0 => break,
                Err(_) => {
                    let len = q.jobs.len();
                    q.jobs.truncate(len - batch.len());
                    return Err(Errno::EAGAIN);
                }
            }
        }
        drop(q);
        if batch.len() == 1 {
            self.shared.work.notify_one();
        } else {
            self.shared.work.notify_all();
        }
        Ok(())
    }

    /// Waits up to one time slice for some job to finish.
    pub(crate) fn wait(&self, c: &dyn InFlight) {
        let q = self.shared.queue.lock().unwrap();
        if !c.is_done() {
            let _ = self.shared.done.wait_timeout(q, WAIT_SLICE).unwrap();
        }
    }

    /// A job still queued, or waiting for a stream, is cancelled; one in a blocking call on a
    /// file cannot be (see `engine` for the answer given then).
    pub(crate) fn cancel(&self, c: &Started, answer: Answer) -> AioCancelStat {
        let mut q = self.shared.queue.lock().unwrap();
        if let Some(i) = q.jobs.iter().position(|j| address(&**j) == address(&**c)) {
            let job = q.jobs.remove(i).expect("found above");
            drop(q);
            job.completion().finish(-i64::from(libc::ECANCELED));
            self.shared.done.notify_all();
            return AioCancelStat::AioCanceled;
        }
        match q.running.get_mut(&address(&**c)) {
            Some(Running::Stream(wait)) => {
                let wait = wait.clone();
                drop(q);
                if wait.cancel() {
                    return AioCancelStat::AioCanceled;
                }
            }
            Some(Running::Probing { cancel_requested }) => {
                *cancel_requested = true;
                drop(q);
            }
            None => drop(q),
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
        let started: Started = Arc::new(c);
        self.queue(std::slice::from_ref(&started))?;
        Ok(started)
    }

    unsafe fn submit(&self, batch: Vec<Completion>) -> Result<Vec<Started>, Errno> {
        let started: Vec<Started> = batch.into_iter().map(|c| Arc::new(c) as Started).collect();
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

fn worker(shared: Arc<Shared>) {
    let mut q = shared.queue.lock().unwrap();
    loop {
        if let Some(job) = q.jobs.pop_front() {
            q.idle -= 1;
            let job_key = address(&*job);
            q.running.insert(
                job_key,
                Running::Probing {
                    cancel_requested: false,
                },
            );
            drop(q);
            let res = run_job(&shared, &*job);
            job.completion().finish(res);
            // The entry goes before the job's reference: its address names it until then.
            shared.queue.lock().unwrap().running.remove(&job_key);
            drop(job);
            q = shared.queue.lock().unwrap();
            q.idle += 1;
            shared.done.notify_all();
            continue;
        }
        let (guard, timeout) = shared.work.wait_timeout(q, IDLE_EXIT).unwrap();
        q = guard;
        if timeout.timed_out() && q.jobs.is_empty() {
            q.idle -= 1;
            q.threads -= 1;
            return;
        }
    }
}

/// Runs one job: the blocking system call, or, on a stream, a cancellable wait for readiness
/// (a blocking read on an empty pipe could never be interrupted).
fn run_job(shared: &Shared, job: &dyn InFlight) -> i64 {
    let r = &job.completion().request;
    let res = perform(r);
    if res != -i64::from(libc::ESPIPE) || !stream::is_transfer(r.kind) {
        return res;
    }
    let wait = Arc::new(StreamWait::new());
    {
        let mut q = shared.queue.lock().unwrap();
        match q.running.get_mut(&address(job)) {
            Some(Running::Probing {
                cancel_requested: true,
            }) => return -i64::from(libc::ECANCELED),
            Some(entry) => *entry = Running::Stream(wait.clone()),
            None => {}
        }
    }
    wait.run(r)
}

/// Runs one request with the blocking system call; returns bytes or `-errno` (`-ESPIPE` for a
/// read or write on a stream, which `run_job` does instead).
fn perform(r: &Request) -> i64 {
    let off = r.offset as libc::off_t;
    let (addr, len) = (r.addr.cast(), r.len);
    loop {
        // SAFETY (every call): the request's pointers and lengths describe buffers (or iovec
        // arrays) that its operation borrows until this job's completion is recorded (the
        // contract of `Engine::submit`).
        let res = match r.kind {
            OpKind::Read => syscall!(pread(r.fd, addr, len, off)).map(|n| n as i64),
            OpKind::Write => syscall!(pwrite(r.fd, addr, len, off)).map(|n| n as i64),
            OpKind::Readv => syscall!(preadv(r.fd, addr.cast(), len as i32, off)).map(|n| n as i64),
            OpKind::Writev => {
                syscall!(pwritev(r.fd, addr.cast(), len as i32, off)).map(|n| n as i64)
            }
            OpKind::Fsync => syscall!(fsync(r.fd)).map(i64::from),
            OpKind::Fdatasync => syscall!(fdatasync(r.fd)).map(i64::from),
            OpKind::Nop => Ok(0),
        };
        match res {
            Ok(n) => return n,
            Err(Errno::EINTR) => continue,
            Err(errno) => return -(errno as i64),
        }
    }
}
