//! Notifiers: the eventfd through which one operation (or batch) wakes a mio `Poll`.
//!
//! epoll reports readiness per file descriptor, so an operation that must come back from
//! `Poll::poll` with its own `Token` needs an fd of its own. A `Notifier` is an eventfd in the
//! operation's epoll set, watched with `EPOLLIN | EPOLLET` under the operation's token
//! ([`ARMED`]): an event comes when the eventfd becomes readable, at each signal, and when it is
//! armed (`EPOLL_CTL_MOD`) while readable.
//!
//! * An operation that goes to an engine gets a *quiet* notifier (counter zero), which the
//!   engine signals when it completes: the kernel itself (a linked io_uring write, kernel AIO's
//!   `IOCB_FLAG_RESFD`) or a worker thread.
//! * An operation done inside `submit` (a read from the page cache) gets a *loud* one (counter
//!   nonzero): arming it (one `EPOLL_CTL_MOD`) queues its event at once. That replaces the
//!   `write` that would signal a quiet one and the `read` that would reset it afterwards.
//!
//! Every signal makes an event, so a notifier that several signallers share (the rounds of a
//! batch resubmitted while earlier ones still run) reports each of them; a signal that comes
//! after its operation was collected only makes a spurious event, which mio allows.
//!
//! Eventfds are pooled, because creating and closing one per operation costs four system calls.
//! * idle: eventfds in no epoll set; a notifier goes there only when nothing can signal it any
//!   more (every engine that may signal it holds an `Arc` to it) and it was removed from its set.
//! * parked, per epoll fd, quiet and loud apart: notifiers of finished operations that stay in
//!   their epoll set, unable to report anything: a quiet one because nothing can signal it and
//!   its counter is zero (a queued event is dropped by epoll, which rechecks readiness before
//!   reporting), a loud one because it is disarmed (watched for no event). The next operation
//!   with the same epoll fd arms one with a single `EPOLL_CTL_MOD` instead of `EPOLL_CTL_ADD` +
//!   `EPOLL_CTL_DEL`. If the fd number now names another epoll set (the old one was closed and
//!   the number reused), `MOD` fails with `ENOENT`: the notifier may still be in the old set (a
//!   registry clone keeps it open), so it is closed with every notifier parked under that
//!   number, never added to the new set (see `parked`).

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use super::parked::Parked;

/// The events a notifier is watched for while its operation runs.
pub(crate) const ARMED: u32 = (libc::EPOLLIN | libc::EPOLLET) as u32;
/// The events a parked loud notifier is watched for: none.
const DISARMED: u32 = 0;

/// The most idle eventfds the pool keeps; more are closed. Enough for a loop that replaces
/// finished operations with new ones at a depth of a few hundred; a larger burst only costs
/// `EPOLL_CTL_ADD`/`DEL` again. (Parked ones have a bound of their own, `parked::PARKED_MAX`.)
const POOL_MAX: usize = 256;

/// Whether a notifier's counter is zero (quiet) or may not be (loud).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Loudness {
    Quiet,
    Loud,
}

/// Idle eventfds, not in any epoll set, and parked ones, still in their set.
#[derive(Debug, Default)]
pub(crate) struct NotifierPool {
    /// With each, whether its counter may be nonzero (see `Notifier::dirty`).
    idle: Mutex<Vec<(OwnedFd, bool)>>,
    quiet: Mutex<Parked<Arc<Notifier>>>,
    loud: Mutex<Parked<Arc<Notifier>>>,
}

impl NotifierPool {
    /// An eventfd with the counter `loudness` asks for, from the pool or new, and whether its
    /// counter is nonzero. Out of descriptors, the pools give theirs back to the process first.
    fn take(&self, loudness: Loudness) -> io::Result<(OwnedFd, bool)> {
        let pooled = self.idle.lock().unwrap().pop();
        if let Some((fd, dirty)) = pooled {
            return Ok(match (loudness, dirty) {
                (Loudness::Quiet, true) => {
                    drain(fd.as_raw_fd());
                    (fd, false)
                }
                // A loud one left quiet costs a signal when armed; still cheaper than a new fd.
                (_, dirty) => (fd, dirty),
            });
        }
        let initial = u32::from(loudness == Loudness::Loud);
        // SAFETY: eventfd takes no pointers.
        let fd = self.retry_on_emfile(|| {
            Ok(syscall!(eventfd(
                initial,
                libc::EFD_CLOEXEC | libc::EFD_NONBLOCK
            ))?)
        })?;
        // SAFETY: eventfd just returned this new fd, and nothing else owns it.
        Ok((unsafe { OwnedFd::from_raw_fd(fd) }, initial != 0))
    }

    /// Runs `open`, and once more after closing every pooled eventfd if the process (or
    /// system) is out of descriptors.
    pub(crate) fn retry_on_emfile<T>(&self, open: impl Fn() -> io::Result<T>) -> io::Result<T> {
        match open() {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                self.release_all();
                open()
            }
            r => r,
        }
    }

    /// Closes every pooled eventfd (parked ones leave their epoll sets as they close).
    fn release_all(&self) {
        self.idle.lock().unwrap().clear();
        drop(std::mem::take(&mut *self.quiet.lock().unwrap()));
        drop(std::mem::take(&mut *self.loud.lock().unwrap()));
    }

    fn parked(&self, loudness: Loudness) -> &Mutex<Parked<Arc<Notifier>>> {
        match loudness {
            Loudness::Quiet => &self.quiet,
            Loudness::Loud => &self.loud,
        }
    }

    /// Closes the notifiers parked under `epfd`, a number found to name another epoll set now.
    pub(crate) fn forget(&self, epfd: RawFd) {
        let quiet = self.quiet.lock().unwrap().forget(epfd);
        let loud = self.loud.lock().unwrap().forget(epfd);
        drop((quiet, loud));
    }

    /// Parks a notifier that is still in the epoll set `epfd`, if nothing can signal it any
    /// more, as `loudness` says the next operation will likely want it: a loud one is
    /// disarmed, a quiet one reset. Otherwise hands it back for removal from the set.
    pub(crate) fn park(
        &self,
        epfd: RawFd,
        n: Arc<Notifier>,
        loudness: Loudness,
    ) -> Result<(), Arc<Notifier>> {
        // Only this operation holds it: no engine can signal it any more (engines hold an `Arc`
        // while a signal may be pending, and never take a new one).
        if Arc::strong_count(&n) != 1 || !n.is_ours() {
            return Err(n);
        }
        let loudness = if !n.dirty.load(Ordering::Relaxed) {
            Loudness::Quiet
        } else if loudness == Loudness::Loud {
            // A pending event of its operation must not come out later under that token.
            if n.epoll_ctl(epfd, libc::EPOLL_CTL_MOD, DISARMED, 0).is_err() {
                return Err(n);
            }
            Loudness::Loud
        } else {
            // A completion event it may have queued is dropped by epoll once the counter is zero.
            n.reset();
            Loudness::Quiet
        };
        // Disarming a parked notifier checks its set and reports nothing, whatever its counter.
        let still_there =
            |epfd, n: &Arc<Notifier>| n.epoll_ctl(epfd, libc::EPOLL_CTL_MOD, DISARMED, 0).is_ok();
        let closing = self
            .parked(loudness)
            .lock()
            .unwrap()
            .park(epfd, n, still_there);
        // Closing an eventfd removes it from its set.
        drop(closing);
        Ok(())
    }

    /// A parked notifier of `epfd` as loud or quiet as asked, armed for `token`, if there is
    /// one. `None` too if the number names another set now: then every notifier parked under
    /// it is closed.
    pub(crate) fn unpark(
        &self,
        epfd: RawFd,
        token: u64,
        loudness: Loudness,
    ) -> io::Result<Option<Arc<Notifier>>> {
        let Some(n) = self.parked(loudness).lock().unwrap().unpark(epfd) else {
            return Ok(None);
        };
        match n.arm(epfd, token) {
            Ok(()) => Ok(Some(n)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                self.forget(epfd);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn give_back(&self, fd: OwnedFd, dirty: bool) {
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < POOL_MAX {
            idle.push((fd, dirty));
        }
    }
}

/// Resets an eventfd's counter to zero, so that adding it to an epoll set does not report a
/// stale completion.
fn drain(fd: RawFd) {
    let mut count = 0u64;
    // SAFETY: reads 8 bytes into a local u64; the fd is a nonblocking eventfd we own, so this
    // returns at once (EAGAIN when the counter is already zero, which is fine).
    let _ = syscall!(read(fd, (&mut count as *mut u64).cast(), 8));
}

/// One eventfd, lent to one operation or batch at a time.
#[derive(Debug)]
pub(crate) struct Notifier {
    fd: Option<OwnedFd>,
    pool: &'static NotifierPool,
    /// Set when the eventfd is out of every epoll set, so it may be pooled once dropped.
    reusable: AtomicBool,
    /// Whether the counter may be nonzero: set before every signal (from user space, or
    /// queued to the kernel), cleared when the counter is reset. A clean eventfd is pooled
    /// without the `read` that resets it: an operation the tokio layer saw done inside
    /// `submit` never signals its eventfd at all.
    dirty: AtomicBool,
    /// The fork generation of the pool: a child process must not touch its parent's pool.
    generation: u64,
}

impl Notifier {
    /// A notifier in no epoll set, quiet or loud as asked.
    pub(crate) fn new(
        pool: &'static NotifierPool,
        generation: u64,
        loudness: Loudness,
    ) -> io::Result<Notifier> {
        let (fd, dirty) = pool.take(loudness)?;
        let n = Notifier {
            fd: Some(fd),
            pool,
            reusable: AtomicBool::new(true),
            dirty: AtomicBool::new(dirty),
            generation,
        };
        if loudness == Loudness::Loud && !dirty {
            n.signal();
        }
        Ok(n)
    }

    /// A blocking eventfd that is never pooled: the reaper thread's wake-up channel.
    pub(crate) fn private(pool: &'static NotifierPool) -> io::Result<Notifier> {
        // SAFETY: eventfd takes no pointers.
        let fd = syscall!(eventfd(0, libc::EFD_CLOEXEC))?;
        Ok(Notifier {
            // SAFETY: eventfd just returned this new fd, and nothing else owns it.
            fd: Some(unsafe { OwnedFd::from_raw_fd(fd) }),
            pool,
            reusable: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
            generation: u64::MAX,
        })
    }

    pub(crate) fn pool(&self) -> &'static NotifierPool {
        self.pool
    }

    /// Whether this process made the notifier (not a parent, across `fork`).
    pub(crate) fn is_ours(&self) -> bool {
        self.generation == super::fork::generation()
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_ref().map_or(-1, |fd| fd.as_raw_fd())
    }

    /// Whether the counter may be nonzero (so arming it reports an event at once).
    pub(crate) fn is_loud(&self) -> bool {
        self.dirty.load(Ordering::Relaxed)
    }

    /// Wakes whoever watches the eventfd.
    pub(crate) fn signal(&self) {
        self.will_be_signalled();
        let one = 1u64;
        // SAFETY: writes 8 bytes from a local u64 to an eventfd this notifier owns. It cannot
        // fail short of counter overflow, which 2^64 - 2 signals would take.
        let _ = syscall!(write(self.fd(), (&one as *const u64).cast(), 8));
    }

    /// Records that the kernel has been asked to signal the eventfd (a linked io_uring write, a
    /// kernel AIO `aio_resfd`). Call it before the request can reach the kernel.
    pub(crate) fn will_be_signalled(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Resets the counter to zero (nothing may signal the notifier meanwhile).
    pub(crate) fn reset(&self) {
        if self.dirty.swap(false, Ordering::Relaxed) {
            drain(self.fd());
        }
    }

    /// Blocks until the (blocking) eventfd is signalled, and resets it.
    pub(crate) fn wait(&self) {
        let mut count = 0u64;
        // SAFETY: reads 8 bytes into a local u64 from an eventfd this notifier owns.
        let _ = syscall!(read(self.fd(), (&mut count as *mut u64).cast(), 8));
    }

    /// Adds the eventfd to the epoll set `epfd`, armed for `token`: a loud one reports at once.
    pub(crate) fn epoll_add(&self, epfd: RawFd, token: u64) -> io::Result<()> {
        self.reusable.store(false, Ordering::Relaxed);
        self.epoll_ctl(epfd, libc::EPOLL_CTL_ADD, ARMED, token)
    }

    /// Arms the eventfd, already in the set `epfd`, for `token`: a loud one reports at once
    /// (epoll rechecks readiness on `EPOLL_CTL_MOD`, edge-triggered or not), a quiet one when
    /// signalled. An event still queued from an earlier arming now carries `token`.
    pub(crate) fn arm(&self, epfd: RawFd, token: u64) -> io::Result<()> {
        self.epoll_ctl(epfd, libc::EPOLL_CTL_MOD, ARMED, token)
    }

    /// Removes the eventfd from `epfd`. Only when that succeeds may it be pooled: if `epfd` no
    /// longer names the set it was added to, it is closed instead, which removes it from every
    /// set once the last reference goes.
    pub(crate) fn epoll_del(&self, epfd: RawFd) -> io::Result<()> {
        self.epoll_ctl(epfd, libc::EPOLL_CTL_DEL, 0, 0)?;
        self.reusable.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn epoll_ctl(&self, epfd: RawFd, op: libc::c_int, events: u32, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event { events, u64: token };
        // SAFETY: epoll_ctl only reads `event`, a valid local; bad fds give an error.
        syscall!(epoll_ctl(epfd, op, self.fd(), &mut event))?;
        Ok(())
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        let Some(fd) = self.fd.take() else { return };
        // Only a notifier known to be out of every epoll set, in the process that made it, goes
        // back to the pool; otherwise closing it is the safe choice.
        if self.reusable.load(Ordering::Relaxed) && self.is_ours() {
            // Every signaller held an `Arc` to this notifier, so their marks are visible.
            self.pool.give_back(fd, self.dirty.load(Ordering::Relaxed));
        }
    }
}
