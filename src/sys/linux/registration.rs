//! The eventfd through which an operation or a batch announces its completion to one epoll
//! set (a mio `Registry`), or to a caller that watches it itself (the tokio layer).

use std::{
    io,
    os::fd::{AsRawFd, RawFd},
    sync::Arc,
};

use mio::Registry;
use nix::errno::Errno;

use super::{
    driver::Driver,
    engine::io_errno,
    notify::{Loudness, Notifier},
};
#[cfg(feature = "tokio")]
use std::os::fd::BorrowedFd;

/// The notifier an operation or batch holds since its last submission: in the epoll set
/// `epfd`, or in none (`epfd < 0`, a private notifier: `attach_private`).
#[derive(Debug)]
struct Held {
    notifier: Arc<Notifier>,
    epfd: RawFd,
    /// The token it is armed for (edge-triggered: every signal is an event under it).
    token: u64,
    /// How the last submission used it, and so how it is parked: announced at once (loud), or
    /// signalled by an engine (quiet).
    used: Loudness,
}

/// The epoll registration shared by single operations and batches.
///
/// Registering only records where completions go, the epoll fd and the token: the system call
/// that puts a notifier there under that token comes with the submission, where it also says
/// whether the operation is done already ([`Registered::announce`]) or will be signalled
/// ([`Registered::arm`]). A registration therefore costs nothing until it is used, and changing
/// the token of an operation that is not in flight costs nothing either.
#[derive(Debug, Default)]
pub(crate) struct Registered {
    /// The epoll fd and token completions are reported to.
    target: Option<(RawFd, u64)>,
    held: Option<Held>,
    /// An error from `register_raw`, which cannot return one: `submit` reports it.
    deferred_error: Option<Errno>,
}

impl Registered {
    pub(crate) fn register(&mut self, epfd: RawFd, token: usize) -> io::Result<()> {
        // A backend that cannot work says so now, as registering any other source would.
        Driver::get()?;
        if self.held.as_ref().is_some_and(|h| h.epfd != epfd) {
            self.release();
        }
        self.target = Some((epfd, token as u64));
        self.deferred_error = None;
        Ok(())
    }

    pub(crate) fn deregister(&mut self) {
        self.target = None;
        self.release();
    }

    /// Gives the held notifier back: parked in its set if nothing can signal it any more,
    /// otherwise out of the set (to be closed once the last signaller lets go).
    fn release(&mut self) {
        let Some(h) = self.held.take() else { return };
        // In a forked child the epoll set is still the parent's: leave it alone. A private
        // notifier (`attach_private`) is in no set of ours.
        if !h.notifier.is_ours() || h.epfd < 0 {
            return;
        }
        if let Err(n) = h.notifier.pool().park(h.epfd, h.notifier, h.used) {
            // A signal may still be on its way: take it out of the set instead. A failure
            // means the set is gone, and the notifier will simply be closed.
            let _ = n.epoll_del(h.epfd);
        }
    }

    /// Whether a submission may go ahead: not across `fork` with the parent's notifier, and
    /// not after a registration that failed.
    pub(crate) fn check(&self) -> nix::Result<()> {
        if let Some(e) = self.deferred_error {
            return Err(e);
        }
        match &self.held {
            // Inherited across fork: the parent's eventfd, in the parent's epoll set.
            Some(h) if !h.notifier.is_ours() => Err(Errno::EBADF),
            _ => Ok(()),
        }
    }

    /// Reports an operation that is already done: its token comes out of the epoll set once.
    /// One `EPOLL_CTL_MOD` that arms a loud notifier (nothing without a registration).
    pub(crate) fn announce(&mut self) -> io::Result<()> {
        self.place(Loudness::Loud).map(drop)
    }

    /// A quiet notifier armed for the registration's token, for the engine to signal when the
    /// operation completes; `None` without a registration. A private notifier as it is.
    pub(crate) fn arm(&mut self) -> nix::Result<Option<&Arc<Notifier>>> {
        self.check()?;
        if self.is_private() {
            return Ok(self.held.as_ref().map(|h| &h.notifier));
        }
        self.place(Loudness::Quiet).map_err(io_errno)
    }

    /// Puts a notifier of `loudness` in the target set, armed for the target token.
    fn place(&mut self, loudness: Loudness) -> io::Result<Option<&Arc<Notifier>>> {
        let Some((epfd, token)) = self.target else {
            return Ok(None);
        };
        if let Some(h) = &mut self.held {
            let n = &h.notifier;
            // `register` let go of a notifier of another set; a private one is in none.
            debug_assert_eq!(h.epfd, epfd);
            // A signaller may still hold it: an earlier round of a batch, still running, or a
            // linked io_uring write not yet run. Its signal must not be drained away (it may
            // be the last one); it makes an event of its own (`notify`), spurious at worst.
            let idle = Arc::strong_count(n) == 1;
            if loudness == Loudness::Quiet {
                if idle {
                    // A stale event of the last submission, collected already, is dropped.
                    n.reset();
                }
                if h.token == token {
                    // Still armed for this token: its next signal is the event.
                    h.used = loudness;
                    return Ok(self.held.as_ref().map(|h| &h.notifier));
                }
            } else if !n.is_loud() {
                n.signal();
            }
            match n.arm(epfd, token) {
                Ok(()) => {
                    h.used = loudness;
                    h.token = token;
                    return Ok(self.held.as_ref().map(|h| &h.notifier));
                }
                // The number names another epoll set now; the old one may live on (a registry
                // clone), so the notifier is closed, not added here.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    n.pool().forget(epfd);
                    self.held = None;
                }
                Err(e) => return Err(e),
            }
        }
        let driver = Driver::get()?;
        let notifier = match driver.pool.unpark(epfd, token, loudness)? {
            Some(n) => n,
            None => {
                let n = Arc::new(driver.notifier(loudness)?);
                n.epoll_add(epfd, token)?;
                n
            }
        };
        self.held = Some(Held {
            notifier,
            epfd,
            token,
            used: loudness,
        });
        Ok(self.held.as_ref().map(|h| &h.notifier))
    }

    #[cfg(feature = "tokio")]
    pub(crate) fn register_raw(&mut self, kq: BorrowedFd, udata: usize) {
        if let Err(e) = self.register(kq.as_raw_fd(), udata) {
            self.deferred_error = Some(io_errno(e));
        }
    }

    /// Gives the operation a notifier in no epoll set and returns it, for a caller that watches
    /// the eventfd itself (the tokio layer registers it with tokio's reactor).
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn attach_private(&mut self) -> io::Result<NotifyFd> {
        self.deregister();
        let notifier = Arc::new(Driver::get()?.notifier(Loudness::Quiet)?);
        self.held = Some(Held {
            notifier: notifier.clone(),
            epfd: -1,
            token: 0,
            used: Loudness::Quiet,
        });
        self.deferred_error = None;
        Ok(NotifyFd(notifier))
    }

    /// Gives the operation the private notifier behind `fd`, which its caller already watches
    /// (an idle one, kept from an earlier operation: see [`NotifyFd::is_idle`]).
    #[cfg(feature = "tokio")]
    pub(crate) fn attach_private_again(&mut self, fd: &NotifyFd) -> io::Result<()> {
        if !fd.is_idle() {
            return Err(busy());
        }
        self.deregister();
        self.held = Some(Held {
            notifier: fd.0.clone(),
            epfd: -1,
            token: 0,
            used: Loudness::Quiet,
        });
        self.deferred_error = None;
        Ok(())
    }

    /// Whether the notifier is a private one (`attach_private`).
    pub(crate) fn is_private(&self) -> bool {
        self.held.as_ref().is_some_and(|h| h.epfd < 0)
    }
}

/// The eventfd that signals an operation's completion, for a caller that watches it itself.
/// Readable once the operation (or the whole batch) has completed, except for a single
/// operation already done when `submit` returned, which is not signalled: check `error()` right
/// after `submit`. Dropping it after the operation is harmless.
#[derive(Debug)]
pub struct NotifyFd(Arc<Notifier>);

#[cfg(feature = "tokio")]
impl NotifyFd {
    /// Whether nothing but this `NotifyFd` refers to the eventfd, in the process that made it:
    /// no operation holds it, and no signal can still be on its way (every signaller holds a
    /// reference while one may be). An idle one may serve another operation.
    pub(crate) fn is_idle(&self) -> bool {
        let idle = Arc::strong_count(&self.0) == 1 && self.0.is_ours();
        // Pairs with the release of the signallers' references: their marks are visible.
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        idle
    }

    /// Whether the eventfd was made by this process (not inherited across `fork`).
    pub(crate) fn is_ours(&self) -> bool {
        self.0.is_ours()
    }
}

impl std::os::fd::AsRawFd for NotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.fd()
    }
}

pub(crate) fn busy() -> io::Error {
    io::Error::new(
        io::ErrorKind::ResourceBusy,
        "a mio-aio operation cannot be (de)registered while it is in flight",
    )
}

/// The epoll fd behind a mio `Registry`.
pub(crate) fn epoll_fd(registry: &Registry) -> RawFd {
    use std::os::fd::AsFd;
    registry.as_fd().as_raw_fd()
}
