//! The thread-pool engine: the last resort where the kernel offers no usable asynchronous
//! interface, and kernel AIO's helper for buffered I/O that would block inside `io_submit`.
//!
//! Workers run the plain blocking system calls (`pread`, `pwritev`, `fsync`, …), record the
//! result and signal the operation's notifier from user space. Workers start on demand, up to
//! `MIO_AIO_THREADS` (default 64), and leave after a few idle seconds. A read or write on a
//! stream (pipe, socket) waits in `poll` instead, so that `cancel` can end it (see `stream`).

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Condvar, Mutex},
    time::Duration,
};

use nix::{errno::Errno, sys::aio::AioCancelStat};

use super::driver::{Completion, OpKind, Request, WAIT_SLICE};
use super::stream::{self, StreamWait};

const DEFAULT_MAX_THREADS: usize = 64;
const IDLE_EXIT: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct Queue {
    jobs: VecDeque<Arc<Completion>>,
    threads: usize,
    idle: usize,
    /// The jobs workers are running, by the address of their completion (kept alive by the
    /// worker until its entry is removed), so that `cancel` can reach a stream wait.
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

fn key(c: &Completion) -> usize {
    c as *const Completion as usize
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
    pub(crate) fn new() -> ThreadPool {
        let max_threads = std::env::var("MIO_AIO_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_MAX_THREADS)
            .max(1);
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
    pub(crate) fn submit(&self, batch: &[Arc<Completion>]) -> Result<usize, Errno> {
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
        Ok(batch.len())
    }

    /// Waits up to one time slice for some job to finish.
    pub(crate) fn wait(&self, c: &Completion) {
        let q = self.shared.queue.lock().unwrap();
        if !c.is_done() {
            let _ = self.shared.done.wait_timeout(q, WAIT_SLICE).unwrap();
        }
    }

    /// A job still queued, or waiting for a stream, is cancelled; one in a blocking call on a
    /// file cannot be (see `stream` for the answer given then).
    pub(crate) fn cancel(&self, c: &Arc<Completion>) -> AioCancelStat {
        let mut q = self.shared.queue.lock().unwrap();
        if let Some(i) = q.jobs.iter().position(|j| Arc::ptr_eq(j, c)) {
            let job = q.jobs.remove(i).expect("found above");
            drop(q);
            job.finish(-i64::from(libc::ECANCELED));
            self.shared.done.notify_all();
            return AioCancelStat::AioCanceled;
        }
        match q.running.get_mut(&key(c)) {
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
        stream::answer_within_bound(c, || self.wait(c)).unwrap_or(AioCancelStat::AioNotCanceled)
    }
}

fn worker(shared: Arc<Shared>) {
    let mut q = shared.queue.lock().unwrap();
    loop {
        if let Some(job) = q.jobs.pop_front() {
            q.idle -= 1;
            let job_key = key(&job);
            q.running.insert(
                job_key,
                Running::Probing {
                    cancel_requested: false,
                },
            );
            drop(q);
            let res = run_job(&shared, &job);
            job.finish(res);
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
fn run_job(shared: &Shared, job: &Arc<Completion>) -> i64 {
    let res = perform(&job.request);
    if res != -i64::from(libc::ESPIPE) || !stream::is_transfer(job.request.kind) {
        return res;
    }
    let wait = Arc::new(StreamWait::new());
    {
        let mut q = shared.queue.lock().unwrap();
        match q.running.get_mut(&key(job)) {
            Some(Running::Probing {
                cancel_requested: true,
            }) => return -i64::from(libc::ECANCELED),
            Some(entry) => *entry = Running::Stream(wait.clone()),
            None => {}
        }
    }
    wait.run(&job.request)
}

/// Runs one request with the blocking system call; returns bytes or `-errno` (`-ESPIPE` for a
/// read or write on a stream, which `run_job` does instead).
pub(crate) fn perform(r: &Request) -> i64 {
    loop {
        let off = r.offset as libc::off_t;
        // SAFETY: the request's pointers and lengths describe buffers (or iovec arrays) that its
        // operation borrows until this job's completion is recorded (the driver's contract).
        let res = unsafe {
            match r.kind {
                OpKind::Read => libc::pread(r.fd, r.addr.cast(), r.len, off) as i64,
                OpKind::Write => libc::pwrite(r.fd, r.addr.cast(), r.len, off) as i64,
                OpKind::Readv => libc::preadv(r.fd, r.addr.cast(), r.len as i32, off) as i64,
                OpKind::Writev => libc::pwritev(r.fd, r.addr.cast(), r.len as i32, off) as i64,
                OpKind::Fsync => i64::from(libc::fsync(r.fd)),
                OpKind::Fdatasync => i64::from(libc::fdatasync(r.fd)),
                OpKind::Nop => 0,
            }
        };
        if res >= 0 {
            return res;
        }
        match Errno::last_raw() {
            libc::EINTR => continue,
            errno => return -i64::from(errno),
        }
    }
}
