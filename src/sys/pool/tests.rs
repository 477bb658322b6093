//! The shared pool on its own, against real files and pipes: results, stream waits, cancel.

use std::{
    fs::File,
    io::Write,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        atomic::{AtomicI64, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use super::{Job, OpKind, Request, WorkerPool};

/// A job that records its result and counts how often it was finished.
#[derive(Debug)]
struct TestJob {
    request: Request,
    result: AtomicI64,
    finished: AtomicUsize,
}

impl Job for Arc<TestJob> {
    fn request(&self) -> &Request {
        &self.request
    }
    fn key(&self) -> usize {
        Arc::as_ptr(self) as usize
    }
    fn finish(&self, res: i64) {
        self.result.store(res, Ordering::Relaxed);
        self.finished.fetch_add(1, Ordering::Release);
    }
}

fn job(kind: OpKind, fd: i32, offset: u64, buf: &mut [u8]) -> Arc<TestJob> {
    Arc::new(TestJob {
        request: Request {
            kind,
            fd,
            offset,
            addr: buf.as_mut_ptr(),
            len: buf.len(),
        },
        result: AtomicI64::new(0),
        finished: AtomicUsize::new(0),
    })
}

/// Waits (at most 10 s) until `j` is finished; returns its result.
fn result(pool: &WorkerPool<Arc<TestJob>>, j: &Arc<TestJob>) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    while j.finished.load(Ordering::Acquire) == 0 {
        assert!(Instant::now() < deadline, "job never finished");
        pool.wait(
            || j.finished.load(Ordering::Acquire) > 0,
            Duration::from_millis(10),
        );
    }
    j.result.load(Ordering::Relaxed)
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [-1; 2];
    // SAFETY: `fds` is a local array of two ints, which pipe fills.
    syscall!(pipe(fds.as_mut_ptr())).unwrap();
    // SAFETY: pipe just returned these new descriptors, owned by nothing else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

#[test]
fn reads_writes_and_syncs_a_file() {
    let pool = WorkerPool::new(2);
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(b"0123456789").unwrap();
    let fd = f.as_raw_fd();
    let mut buf = [0u8; 4];
    let read = job(OpKind::Read, fd, 3, &mut buf);
    let mut wbuf = *b"ab";
    let write = job(OpKind::Write, fd, 10, &mut wbuf);
    let sync = job(OpKind::Fdatasync, fd, 0, &mut []);
    pool.queue(&[read.clone(), write.clone(), sync.clone()])
        .unwrap();
    assert_eq!(result(&pool, &read), 4);
    assert_eq!(result(&pool, &write), 2);
    assert_eq!(result(&pool, &sync), 0);
    assert_eq!(&buf, b"3456");
    assert_eq!(f.metadata().unwrap().len(), 12);
    for j in [&read, &write, &sync] {
        assert_eq!(
            j.finished.load(Ordering::Acquire),
            1,
            "finished exactly once"
        );
    }
}

#[test]
fn an_error_is_the_negative_errno() {
    let pool = WorkerPool::new(1);
    let mut buf = [0u8; 4];
    let bad = job(OpKind::Read, -1, 0, &mut buf);
    pool.queue(std::slice::from_ref(&bad)).unwrap();
    assert_eq!(result(&pool, &bad), -i64::from(libc::EBADF));
}

#[test]
fn a_stream_read_waits_for_data_and_is_cancellable() {
    let pool = WorkerPool::new(2);
    let (rx, tx) = pipe();
    let mut buf = [0u8; 8];
    let waiting = job(OpKind::Read, rx.as_raw_fd(), 0, &mut buf);
    pool.queue(std::slice::from_ref(&waiting)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        waiting.finished.load(Ordering::Acquire),
        0,
        "empty pipe: still waiting"
    );
    // The job reaches its stream wait soon; cancel until it is there (a probing job is not
    // cancellable yet).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pool.cancel(&waiting) {
        assert!(
            Instant::now() < deadline,
            "a stream wait was never cancelled"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(result(&pool, &waiting), -i64::from(libc::ECANCELED));

    // A second read gets the data once it is written.
    let mut buf2 = [0u8; 8];
    let reading = job(OpKind::Read, rx.as_raw_fd(), 0, &mut buf2);
    pool.queue(std::slice::from_ref(&reading)).unwrap();
    File::from(tx).write_all(b"hi").unwrap();
    assert_eq!(result(&pool, &reading), 2);
    assert_eq!(&buf2[..2], b"hi");
    assert_eq!(
        waiting.finished.load(Ordering::Acquire),
        1,
        "finished exactly once"
    );
}

#[test]
fn a_queued_job_is_cancelled_before_it_runs() {
    // One worker, busy with a stream wait: the next job stays queued.
    let pool = WorkerPool::new(1);
    let (rx, _tx) = pipe();
    let mut buf = [0u8; 8];
    let blocker = job(OpKind::Read, rx.as_raw_fd(), 0, &mut buf);
    let f = tempfile::tempfile().unwrap();
    let queued = job(OpKind::Fsync, f.as_raw_fd(), 0, &mut []);
    pool.queue(std::slice::from_ref(&blocker)).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    pool.queue(std::slice::from_ref(&queued)).unwrap();
    assert!(pool.cancel(&queued), "a queued job is cancelled");
    assert_eq!(result(&pool, &queued), -i64::from(libc::ECANCELED));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pool.cancel(&blocker) {
        assert!(
            Instant::now() < deadline,
            "a stream wait was never cancelled"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(result(&pool, &blocker), -i64::from(libc::ECANCELED));
    assert_eq!(
        queued.finished.load(Ordering::Acquire),
        1,
        "finished exactly once"
    );
}
