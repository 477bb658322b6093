//! The thread-pool engine: the last resort where the kernel offers no usable asynchronous
//! interface, and kernel AIO's helper for buffered I/O that would block inside `io_submit`.
//!
//! Workers run the plain blocking system calls (`pread`, `pwritev`, `fsync`, …), record the
//! result and signal the operation's notifier from user space. Workers start on demand, up to
//! `Config::max_threads`, and leave after a few idle seconds. The pool keeps no state of its own
//! per operation: a job is the shared `Completion` (or, for kernel AIO, its own wrapper).

use std::{
    collections::VecDeque,
    sync::{Arc, Condvar, Mutex},
    time::Duration,
};

use nix::{errno::Errno, sys::aio::AioCancelStat};

use super::{
    config::Backend,
    engine::{
        address, Completion, Engine, InFlight, OpKind, Request, Signalling, Started, WAIT_SLICE,
    },
};

const IDLE_EXIT: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct Queue {
    jobs: VecDeque<Started>,
    threads: usize,
    idle: usize,
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

    /// A job still queued is cancelled; a running one cannot be.
    pub(crate) fn cancel(&self, c: &Started) -> AioCancelStat {
        let mut q = self.shared.queue.lock().unwrap();
        if let Some(i) = q.jobs.iter().position(|j| address(&**j) == address(&**c)) {
            let job = q.jobs.remove(i).expect("found above");
            drop(q);
            job.completion().finish(-i64::from(libc::ECANCELED));
            self.shared.done.notify_all();
            AioCancelStat::AioCanceled
        } else if c.is_done() {
            AioCancelStat::AioAllDone
        } else {
            AioCancelStat::AioNotCanceled
        }
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

    fn cancel(&self, op: &Started) -> AioCancelStat {
        ThreadPool::cancel(self, op)
    }
}

fn worker(shared: Arc<Shared>) {
    let mut q = shared.queue.lock().unwrap();
    loop {
        if let Some(job) = q.jobs.pop_front() {
            q.idle -= 1;
            drop(q);
            let res = perform(&job.completion().request);
            job.completion().finish(res);
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

/// Runs one request with the blocking system call; returns bytes or `-errno`.
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
            // Like io_uring and FreeBSD's AIO, treat a pipe or socket as a stream.
            Err(Errno::ESPIPE) => return perform_stream(r),
            Err(errno) => return -(errno as i64),
        }
    }
}

/// Runs a read or write on a non-seekable file (pipe, socket), ignoring the offset.
fn perform_stream(r: &Request) -> i64 {
    let (addr, len) = (r.addr.cast(), r.len);
    loop {
        // SAFETY (every call): as in `perform`.
        let res = match r.kind {
            OpKind::Read => syscall!(read(r.fd, addr, len)),
            OpKind::Write => syscall!(write(r.fd, addr, len)),
            OpKind::Readv => syscall!(readv(r.fd, addr.cast(), len as i32)),
            OpKind::Writev => syscall!(writev(r.fd, addr.cast(), len as i32)),
            _ => return -i64::from(libc::ESPIPE),
        };
        match res {
            Ok(n) => return n as i64,
            Err(Errno::EINTR) => continue,
            Err(errno) => return -(errno as i64),
        }
    }
}
