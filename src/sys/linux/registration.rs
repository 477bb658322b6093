//! The eventfd through which an operation or a batch announces its completion to one epoll
//! set (a mio `Registry`), or to a caller that watches it itself (the tokio layer).

use std::{
    io,
    os::fd::{AsRawFd, RawFd},
    sync::Arc,
};

use mio::Registry;
use nix::errno::Errno;

use super::{driver::Driver, notify::Notifier};
#[cfg(feature = "tokio")]
use {super::engine::io_errno, std::os::fd::BorrowedFd};

/// Where an operation's or batch's completion is announced: an eventfd in one epoll set.
#[derive(Debug)]
struct Registration {
    notifier: Arc<Notifier>,
    epfd: RawFd,
}

/// The epoll registration shared by single operations and batches.
#[derive(Debug, Default)]
pub(crate) struct Registered {
    current: Option<Registration>,
    /// An error from `register_raw`, which cannot return one: `submit` reports it.
    deferred_error: Option<Errno>,
}

impl Registered {
    pub(crate) fn register(&mut self, epfd: RawFd, token: usize) -> io::Result<()> {
        if let Some(r) = &self.current {
            // A forked child leaves its parent's notifier (and the set it is in) alone.
            if r.epfd == epfd && r.notifier.is_ours() {
                match r.notifier.epoll_mod(epfd, token as u64) {
                    // The number names another epoll set now; the old one may live on (a
                    // registry clone), so the notifier is closed, not added here.
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                        r.notifier.pool().forget(epfd);
                        self.current = None;
                    }
                    result => return result,
                }
            } else {
                self.deregister();
            }
        }
        let driver = Driver::get()?;
        let notifier = match driver.pool.unpark(epfd, token as u64)? {
            Some(n) => n,
            None => {
                let n = Arc::new(driver.notifier()?);
                n.epoll_add(epfd, token as u64)?;
                n
            }
        };
        self.current = Some(Registration { notifier, epfd });
        self.deferred_error = None;
        Ok(())
    }

    pub(crate) fn deregister(&mut self) {
        if let Some(r) = self.current.take() {
            // In a forked child the epoll set is still the parent's: leave it alone. A private
            // notifier (`attach_private`) is in no set of ours.
            if !r.notifier.is_ours() || r.epfd < 0 {
                return;
            }
            if let Err(n) = r.notifier.pool().park(r.epfd, r.notifier) {
                // A signal may still be on its way: take it out of the set instead. A failure
                // means the set is gone, and the notifier will simply be closed.
                let _ = n.epoll_del(r.epfd);
            }
        }
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
        let notifier = Arc::new(Driver::get()?.notifier()?);
        self.current = Some(Registration {
            notifier: notifier.clone(),
            epfd: -1,
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
        self.current = Some(Registration {
            notifier: fd.0.clone(),
            epfd: -1,
        });
        self.deferred_error = None;
        Ok(())
    }

    /// Whether the notifier is a private one (`attach_private`).
    pub(crate) fn is_private(&self) -> bool {
        self.current.as_ref().is_some_and(|r| r.epfd < 0)
    }

    pub(crate) fn notifier(&self) -> nix::Result<Option<&Arc<Notifier>>> {
        match (self.deferred_error, &self.current) {
            (Some(e), _) => Err(e),
            // Inherited across fork: the parent's eventfd, in the parent's epoll set.
            (None, Some(r)) if !r.notifier.is_ours() => Err(Errno::EBADF),
            (None, current) => Ok(current.as_ref().map(|r| &r.notifier)),
        }
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
