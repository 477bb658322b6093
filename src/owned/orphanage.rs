//! The reaper of dropped owned operations ("orphans").
//!
//! Dropping an owned operation that is still in flight must not block, yet its buffers and
//! control block must live until the kernel is done with them (and on FreeBSD someone must
//! still `aio_return` it). So the drop hands the operation, with its buffers and file, to this
//! module, whose thread asks the kernel to cancel it (a truthful `cancel` may wait briefly for
//! the system's answer, which the dropping thread must not). One background thread, started at the first
//! orphan, checks every orphan without ever waiting on any single one (a read from a pipe may
//! never end): it checks them all, frees those that are done, sleeps for a bounded time (1 ms
//! after progress, doubling to at most 50 ms while nothing ends, and at least four times as
//! long as the checks took, so that thousands of never-ending orphans cost little CPU), and
//! starts over; with no orphans left it sleeps until the next one arrives.
//!
//! Memory is bounded by the number of operations in flight, which the kernel and the Linux
//! driver already bound. If the thread cannot be started, each new orphan checks the others
//! on the spot instead, so that memory is still reclaimed as operations end. A child of `fork`
//! (which inherits the list but not the thread) starts a reaper of its own at its first
//! orphan; the parent's operations are not the child's, and count as done there.

use std::{
    mem,
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{
        atomic::{AtomicU32, AtomicUsize, Ordering},
        Condvar, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

/// An operation whose owner is gone, with everything the kernel may still use.
pub(crate) trait Orphan: Send {
    /// Whether the kernel is done with it. It must not wait for the operation to end (that may
    /// never happen); the first call also requests cancellation, which may wait a bounded
    /// moment for the system's answer.
    fn is_done(&mut self) -> bool;

    /// Releases it, once done. The default drops it; an orphan whose parts must go in a
    /// particular order does that here.
    fn finish(self: Box<Self>) {}
}

const MIN_SLEEP: Duration = Duration::from_millis(1);
const MAX_SLEEP: Duration = Duration::from_millis(50);

static ORPHANS: Mutex<Vec<Box<dyn Orphan>>> = Mutex::new(Vec::new());
static ARRIVED: Condvar = Condvar::new();
/// The process that started the reaper thread (0: none). A child of `fork` has no such
/// thread, and starts its own at its first orphan.
static REAPER_PID: AtomicU32 = AtomicU32::new(0);
/// Orphans not yet freed (including those being checked right now).
static PENDING: AtomicUsize = AtomicUsize::new(0);

fn orphans() -> MutexGuard<'static, Vec<Box<dyn Orphan>>> {
    // A panic while holding the lock cannot leave the list inconsistent (pushes and swaps only).
    ORPHANS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Takes `orphan` into care. Never blocks on the kernel.
pub(crate) fn adopt(orphan: Box<dyn Orphan>) {
    PENDING.fetch_add(1, Ordering::Relaxed);
    orphans().push(orphan);
    let pid = std::process::id();
    let running = REAPER_PID.load(Ordering::Acquire);
    if running != pid
        && REAPER_PID
            .compare_exchange(running, pid, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    {
        let spawned = std::thread::Builder::new()
            .name("mio-aio-reaper".into())
            .spawn(reap_forever);
        if spawned.is_err() {
            REAPER_PID.store(0, Ordering::Release);
        }
    }
    if REAPER_PID.load(Ordering::Acquire) == pid {
        ARRIVED.notify_one();
    } else {
        sweep();
    }
}

/// How many dropped operations are still waiting for the kernel to finish with them.
///
/// Each holds its buffers (and its file) until then. See the [module documentation](super)
/// ("Dropping an operation in flight").
pub fn orphan_count() -> usize {
    PENDING.load(Ordering::Relaxed)
}

/// Checks every orphan once and frees those that are done; returns how many were freed.
fn sweep() -> usize {
    let mut checking = mem::take(&mut *orphans());
    let mut done = Vec::new();
    let mut i = 0;
    while i < checking.len() {
        if checking[i].is_done() {
            done.push(checking.swap_remove(i));
        } else {
            i += 1;
        }
    }
    orphans().append(&mut checking);
    let freed = done.len();
    for orphan in done {
        // A buffer's or file's `Drop` that panics must not stop the reaper.
        let _ = catch_unwind(AssertUnwindSafe(|| orphan.finish()));
        PENDING.fetch_sub(1, Ordering::Relaxed);
    }
    freed
}

fn reap_forever() {
    let mut sleep = MIN_SLEEP;
    loop {
        {
            let mut list = orphans();
            while list.is_empty() {
                list = ARRIVED.wait(list).unwrap_or_else(|e| e.into_inner());
            }
        }
        let started = Instant::now();
        let freed = sweep();
        sleep = if freed > 0 {
            MIN_SLEEP
        } else {
            (sleep * 2).min(MAX_SLEEP)
        };
        // Many orphans that never end must not keep a CPU busy: rest at least four times as
        // long as the checks took.
        std::thread::sleep(sleep.max(started.elapsed() * 4));
    }
}
