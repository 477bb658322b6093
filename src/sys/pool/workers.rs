//! The job queue and its worker threads.
//!
//! Workers start on demand, up to `max_threads`, and leave after a few idle seconds. The pool
//! keeps no state of its own per job beyond what `cancel` needs to reach a running one: a job is
//! the engine's own handle ([`Job`]), which records the result and signals the notifier.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Condvar, Mutex},
    time::Duration,
};

use nix::errno::Errno;

use super::{perform::perform, request::Request, stream::StreamWait};

const IDLE_EXIT: Duration = Duration::from_secs(5);

/// What the pool runs: a cheap handle (an `Arc`) on one request of an engine's.
pub(crate) trait Job: Clone + Send + 'static {
    fn request(&self) -> &Request;
    /// Names the job among those queued or running (its address: stable while it lives).
    fn key(&self) -> usize;
    /// Records the result (`>= 0`, or `-errno`) and signals. Called exactly once per job.
    fn finish(&self, res: i64);
}

#[derive(Debug)]
struct Queue<J> {
    jobs: VecDeque<J>,
    threads: usize,
    idle: usize,
    /// The jobs workers are running, by key (kept alive by the worker until its entry is
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
struct Shared<J> {
    queue: Mutex<Queue<J>>,
    /// Wakes idle workers.
    work: Condvar,
    /// Wakes threads waiting for some job to finish.
    done: Condvar,
    max_threads: usize,
}

/// A pool of worker threads running [`Job`]s.
#[derive(Debug)]
pub(crate) struct WorkerPool<J> {
    shared: Arc<Shared<J>>,
}

impl<J: Job> WorkerPool<J> {
    pub(crate) fn new(max_threads: usize) -> WorkerPool<J> {
        WorkerPool {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue {
                    jobs: VecDeque::new(),
                    threads: 0,
                    idle: 0,
                    running: HashMap::new(),
                }),
                work: Condvar::new(),
                done: Condvar::new(),
                max_threads,
            }),
        }
    }

    /// Queues every job; fails with EAGAIN (queuing none) only when no worker exists and none
    /// can start.
    pub(crate) fn queue(&self, batch: &[J]) -> Result<(), Errno> {
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

    /// Waits up to `slice` for some job to finish, unless `is_done` already holds.
    pub(crate) fn wait(&self, is_done: impl Fn() -> bool, slice: Duration) {
        let q = self.shared.queue.lock().unwrap();
        if !is_done() {
            let _ = self.shared.done.wait_timeout(q, slice).unwrap();
        }
    }

    /// Cancels `job` if it is still queued (it ends with ECANCELED at once) or waiting for a
    /// stream; returns whether it did. One in a blocking call on a file cannot be cancelled;
    /// one whose first call is running is marked, so that it ends with ECANCELED if it turns
    /// out to be a stream.
    pub(crate) fn cancel(&self, job: &J) -> bool {
        let key = job.key();
        let mut q = self.shared.queue.lock().unwrap();
        if let Some(i) = q.jobs.iter().position(|j| j.key() == key) {
            let job = q.jobs.remove(i).expect("found above");
            drop(q);
            job.finish(-i64::from(libc::ECANCELED));
            self.shared.done.notify_all();
            return true;
        }
        match q.running.get_mut(&key) {
            Some(Running::Stream(wait)) => {
                let wait = wait.clone();
                drop(q);
                wait.cancel()
            }
            Some(Running::Probing { cancel_requested }) => {
                *cancel_requested = true;
                false
            }
            None => false,
        }
    }
}

fn worker<J: Job>(shared: Arc<Shared<J>>) {
    let mut q = shared.queue.lock().unwrap();
    loop {
        if let Some(job) = q.jobs.pop_front() {
            q.idle -= 1;
            let job_key = job.key();
            q.running.insert(
                job_key,
                Running::Probing {
                    cancel_requested: false,
                },
            );
            drop(q);
            let res = run_job(&shared, job.request(), job_key);
            job.finish(res);
            // The entry goes before the job's reference: its key names it until then.
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
fn run_job<J>(shared: &Shared<J>, r: &Request, key: usize) -> i64 {
    let res = perform(r);
    if res != -i64::from(libc::ESPIPE) || !r.kind.is_transfer() {
        return res;
    }
    let wait = Arc::new(StreamWait::new());
    {
        let mut q = shared.queue.lock().unwrap();
        match q.running.get_mut(&key) {
            Some(Running::Probing {
                cancel_requested: true,
            }) => return -i64::from(libc::ECANCELED),
            Some(entry) => *entry = Running::Stream(wait.clone()),
            None => {}
        }
    }
    wait.run(r)
}
