//! What io_uring needs from a thread that exits: to stay until the kernel is done with its
//! requests.
//!
//! io_uring ties each request to the thread that submitted it, and finishes parts of it as work
//! run on that thread: a completion from io_uring's workers, a buffered read retried once its
//! pages are read, the counting timeout of a batch, and the linked write that signals the
//! request's eventfd. Once the thread has exited, that work runs in a kernel thread, which
//! fails it instead (`EFAULT` for a retried read, with the buffer untouched) and posts the
//! failed write's CQE where no one may look: the operation's event never arrives.
//!
//! So each thread records (as weak references, pruned as they finish) the requests it submitted,
//! and its thread-local destructor, which runs before the thread exits, waits until the kernel
//! has posted every CQE they owe: the request's, and its signal write's (or, for a batch ring,
//! every CQE of the ring). The wait is bounded by the storage: requests on pipes, sockets and
//! other streams, which may wait forever for data, are cancelled first (they complete with
//! `ECANCELED`, as io_uring would cancel them itself); requests on files and block devices are
//! waited for, up to `STORAGE_WAIT`, after which the rest are cancelled and the thread leaves
//! after `CANCEL_WAIT` whatever happened. The process's main thread does not wait: its exit
//! ends the process.

use std::{
    cell::{Cell, RefCell},
    sync::{atomic::Ordering, Arc, Weak},
    time::{Duration, Instant},
};

use io_uring::types;

use super::{
    super::engine::{Started, WAIT_SLICE},
    ring::{Ring, UringOp},
};

/// How long an exiting thread waits for its requests on files and block devices.
const STORAGE_WAIT: Duration = Duration::from_secs(10);
/// How long it then waits for the requests it cancelled.
const CANCEL_WAIT: Duration = Duration::from_secs(1);
/// The list is pruned of finished requests when it grows to this length (and then to twice what
/// remained).
const PRUNE_AT: usize = 64;

/// The requests this thread submitted that the kernel may not be done with.
struct Submitted {
    /// Each request, and whether it went to a batch ring (whose every CQE is the batch's).
    requests: RefCell<Vec<(Weak<UringOp>, bool)>>,
    prune_at: Cell<usize>,
}

thread_local! {
    static SUBMITTED: Submitted = const {
        Submitted {
            requests: RefCell::new(Vec::new()),
            prune_at: Cell::new(PRUNE_AT),
        }
    };
}

/// Records requests this thread has just submitted to io_uring (`batch_ring`: to a ring of
/// their own). From a thread-local destructor, after this one ran, it records nothing.
pub(super) fn track(requests: &[Arc<UringOp>], batch_ring: bool) {
    let _ = SUBMITTED.try_with(|s| {
        let mut list = s.requests.borrow_mut();
        list.extend(requests.iter().map(|c| (Arc::downgrade(c), batch_ring)));
        if list.len() >= s.prune_at.get() {
            // Most are gone altogether (the kernel and the operation dropped their references).
            list.retain(|(c, batch)| {
                c.strong_count() > 0 && c.upgrade().is_some_and(|c| !kernel_done(&c, *batch))
            });
            s.prune_at.set((2 * list.len()).max(PRUNE_AT));
        }
    });
}

/// Whether the kernel has posted every CQE owed for `c`.
fn kernel_done(c: &UringOp, batch_ring: bool) -> bool {
    c.is_done()
        && !c.signal_write_pending.load(Ordering::Acquire)
        && !(batch_ring && c.ring.outstanding.load(Ordering::Acquire) > 0)
}

/// Whether `fd` is a stream (pipe, socket, terminal…) rather than a file or block device, or no
/// longer open: a request on it may wait forever.
fn is_stream(fd: std::os::fd::RawFd) -> bool {
    // SAFETY: `stat` is plain old data, for which all-zero bytes are a valid value.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat only writes into the local `stat`; a bad fd gives an error.
    if unsafe { libc::fstat(fd, &mut stat) } != 0 {
        return true;
    }
    !matches!(stat.st_mode & libc::S_IFMT, libc::S_IFREG | libc::S_IFBLK)
}

impl Drop for Submitted {
    fn drop(&mut self) {
        // SAFETY: getpid and gettid have no preconditions.
        if unsafe { libc::getpid() == libc::gettid() } {
            return;
        }
        // A request still referenced is still someone's (the kernel holds a reference until
        // each of its CQEs is reaped).
        let mut pending: Vec<(Arc<UringOp>, bool)> = self
            .requests
            .get_mut()
            .drain(..)
            .filter_map(|(c, batch)| Some((c.upgrade()?, batch)))
            .filter(|(c, batch)| c.is_ours() && !kernel_done(c, *batch))
            .collect();
        for (c, _) in &pending {
            if !c.is_done() && is_stream(c.request.fd) {
                (c.clone() as Started).request_cancel();
            }
        }
        let started = Instant::now();
        let mut cancelled = false;
        while !pending.is_empty() {
            if !cancelled && started.elapsed() >= STORAGE_WAIT {
                for (c, _) in &pending {
                    if !c.is_done() {
                        (c.clone() as Started).request_cancel();
                    }
                }
                cancelled = true;
            }
            if started.elapsed() >= STORAGE_WAIT + CANCEL_WAIT {
                return;
            }
            // Waiting in the kernel runs this thread's pending io_uring work, for every ring.
            let ts = types::Timespec::from(WAIT_SLICE);
            let args = types::SubmitArgs::new().timespec(&ts);
            // ETIME (the slice ended) and EINTR are expected; the loop checks progress.
            let _ = pending[0]
                .0
                .ring
                .ring
                .submitter()
                .submit_with_args(1, &args);
            let mut reaped: Vec<*const Ring> = Vec::new();
            for (c, _) in &pending {
                if !reaped.contains(&Arc::as_ptr(&c.ring)) {
                    c.ring.reap();
                    reaped.push(Arc::as_ptr(&c.ring));
                }
            }
            pending.retain(|(c, batch)| !kernel_done(c, *batch));
        }
    }
}
