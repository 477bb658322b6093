//! Eventfds that stay registered with tokio's reactor between operations (Linux; on the kqueue
//! systems no descriptor is ever idle, so nothing is pooled).
//!
//! Registering an operation's eventfd with tokio (`AsyncFd`, one `EPOLL_CTL_ADD`) and taking it
//! out again (`EPOLL_CTL_DEL`) would cost two system calls per operation. Instead, once an
//! operation's future is gone, its [`Watch`] (the eventfd with its `AsyncFd`) goes back to a
//! pool of this thread, and the next operation polled on this thread in the same runtime
//! attaches that eventfd again (`attach_notify_fd_again`): no `epoll_ctl` at all.
//!
//! What holds:
//! * A watch is pooled only when nothing else refers to its eventfd (`NotifyFd::is_idle`): the
//!   operation is gone and no engine can signal it any more. tokio's readiness is then
//!   cleared, so that the next operation is woken by its own completion. The counter is not
//!   reset (a `read` per operation saved): the registration is edge-triggered, and epoll
//!   reports every signal as a new event whatever the count. The crate's own pool resets it
//!   before any other use (the notifier stays marked as signalled). A watch whose eventfd is
//!   still referred to when its future goes (a worker thread that recorded the result and is
//!   still signalling) waits among the unsettled ones, and is reused only once idle.
//! * A wake-up that slips through (tokio's reactor thread may have read the old event just
//!   before the readiness was cleared) is harmless: the future checks its operation before
//!   taking a result, and waits again if it is still running.
//! * An `AsyncFd` belongs to one runtime's reactor, so the pool is keyed by runtime id: a thread
//!   that polls in another runtime drops what it pooled for the previous one. A runtime that
//!   shuts down leaves its watches here until this thread polls in another runtime or exits;
//!   they hold its epoll set open meanwhile, but no event of theirs is waited for.
//! * In a forked child, inherited watches are leaked, never dropped: dropping one would take
//!   the eventfd out of the parent's epoll set, which the child shares.

use std::{
    cell::RefCell,
    sync::{Arc, LazyLock},
    task::{Context, Poll, Wake, Waker},
};

use ::tokio::{io::unix::AsyncFd, runtime::Id};

use crate::sys::NotifyFd;

/// The most idle watches one thread keeps (each is an open eventfd in tokio's epoll set).
/// Enough for 128 operations in flight per thread; beyond, the surplus pays `EPOLL_CTL_ADD`
/// and `DEL` again.
const PER_THREAD_MAX: usize = 128;

/// An operation's eventfd, registered with the reactor of one runtime. Dropped (after the
/// operation), it goes back to this thread's pool if it is idle.
pub(super) struct Watch(Option<Registered>);

struct Registered {
    fd: AsyncFd<NotifyFd>,
    runtime: Id,
    /// Whether tokio may hold readiness for it (it was waited on).
    waited: bool,
}

impl Watch {
    pub(super) fn new(fd: AsyncFd<NotifyFd>, runtime: Id) -> Self {
        Watch(Some(Registered {
            fd,
            runtime,
            waited: false,
        }))
    }

    /// The eventfd, to attach to an operation.
    pub(super) fn notify_fd(&self) -> &NotifyFd {
        self.registered().fd.get_ref()
    }

    /// The eventfd's registration, to wait on: its readiness is cleared before reuse.
    pub(super) fn wait_on(&mut self) -> &AsyncFd<NotifyFd> {
        let r = self.0.as_mut().expect("present until dropped");
        r.waited = true;
        &r.fd
    }

    fn registered(&self) -> &Registered {
        self.0.as_ref().expect("present until dropped")
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(r) = self.0.take() {
            give_back(r);
        }
    }
}

impl Registered {
    /// Makes the registration ready for another operation, or gives it back as unfit.
    fn make_reusable(mut self) -> Result<Self, Self> {
        if !self.fd.get_ref().is_idle() {
            return Err(self);
        }
        // The counter is left as it is: tokio's registration is edge-triggered, and epoll
        // reports every signal of the eventfd as a new event, whatever its count.
        if self.waited {
            let mut cx = Context::from_waker(&NOOP);
            match self.fd.poll_read_ready(&mut cx) {
                Poll::Ready(Ok(mut guard)) => guard.clear_ready(),
                Poll::Pending => {}
                // The reactor is gone: useless.
                Poll::Ready(Err(_)) => return Err(self),
            }
            self.waited = false;
        }
        Ok(self)
    }
}

/// Drops a registration that will not be reused.
fn discard(r: Registered) {
    if r.fd.get_ref().is_ours() {
        drop(r);
    } else {
        // Inherited across fork: see the module documentation.
        std::mem::forget(r);
    }
}

/// Whether eventfds are reused at all (not on the kqueue systems, whose private kqueues are
/// never idle).
const REUSED: bool = cfg!(target_os = "linux");

/// The watches this thread keeps for one runtime.
#[derive(Default)]
struct Pool {
    runtime: Option<Id>,
    idle: Vec<Registered>,
    /// Watches whose eventfd something else still referred to when their future went (an
    /// engine that had recorded the result but not yet let go, typically): taken once idle.
    unsettled: Vec<Registered>,
}

impl Pool {
    /// Serves `runtime` from now on; returns the watches of the previous runtime.
    fn switch_to(&mut self, runtime: Id) -> Vec<Registered> {
        self.runtime = Some(runtime);
        let mut stale = std::mem::take(&mut self.idle);
        stale.append(&mut self.unsettled);
        stale
    }

    fn len(&self) -> usize {
        self.idle.len() + self.unsettled.len()
    }

    /// An unsettled watch that has become idle, if any.
    fn settled(&mut self) -> Option<Registered> {
        let i = self
            .unsettled
            .iter()
            .position(|r| r.fd.get_ref().is_idle())?;
        Some(self.unsettled.swap_remove(i))
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.idle.drain(..).for_each(discard);
        self.unsettled.drain(..).for_each(discard);
    }
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::default();
}

/// A waker for the poll that clears a pooled watch's readiness: nobody waits on it then.
static NOOP: LazyLock<Waker> = LazyLock::new(|| Waker::from(Arc::new(NoopWake)));

struct NoopWake;

impl Wake for NoopWake {
    fn wake(self: Arc<Self>) {}
}

/// An idle watch of `runtime` kept by this thread, if there is one.
pub(super) fn take(runtime: Id) -> Option<Watch> {
    if !REUSED {
        return None;
    }
    let (found, settled, stale) = POOL
        .try_with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.runtime != Some(runtime) {
                (None, None, pool.switch_to(runtime))
            } else if let Some(r) = pool.idle.pop() {
                (Some(r), None, Vec::new())
            } else {
                (None, pool.settled(), Vec::new())
            }
        })
        .ok()?;
    // Dropped outside the borrow.
    stale.into_iter().for_each(discard);
    let found = match settled.map(Registered::make_reusable) {
        Some(Ok(r)) => Some(r),
        Some(Err(r)) => {
            discard(r);
            None
        }
        None => found,
    };
    found.map(|r| Watch(Some(r)))
}

/// Keeps `r` for a later operation if this thread's pool serves its runtime (or is empty) and
/// has room: with the idle ones if it is idle, else with the unsettled ones. Drops it otherwise.
fn give_back(r: Registered) {
    if !REUSED {
        return discard(r);
    }
    let (r, idle) = match r.make_reusable() {
        Ok(r) => (r, true),
        // Not idle yet (or its reactor is gone: then it is dropped when found idle).
        Err(r) => (r, false),
    };
    let mut r = Some(r);
    let _ = POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        let runtime = r.as_ref().expect("set above").runtime;
        if pool.runtime != Some(runtime) && pool.len() == 0 {
            pool.runtime = Some(runtime);
        }
        if pool.runtime == Some(runtime) && pool.len() < PER_THREAD_MAX {
            let kept = if idle {
                &mut pool.idle
            } else {
                &mut pool.unsettled
            };
            kept.extend(r.take());
        }
    });
    if let Some(r) = r {
        discard(r);
    }
}
