//! Where an operation's or batch's event goes: a kqueue (a mio `Registry`, or the kqueue fd of
//! `register_raw`) and a token. Registering checks the kqueue; each submission then arms an
//! event of its own there (`notify`).

use std::{
    io,
    os::fd::{AsRawFd, OwnedFd, RawFd},
    sync::Arc,
};

use mio::Registry;
use nix::errno::Errno;

use super::notify::{check_kqueue, private_queue, Target, UserEvent};
#[cfg(feature = "tokio")]
use std::os::fd::BorrowedFd;

/// The registration shared by single operations and batches.
#[derive(Debug, Default)]
pub(crate) struct Registered {
    target: Option<Target>,
    /// The private kqueue `target` names, for a caller that watches it itself (the tokio
    /// layer); `None` for a mio `Registry`'s.
    private: Option<Arc<OwnedFd>>,
    /// An error from `register_raw`, which cannot return one: `submit` reports it.
    deferred_error: Option<Errno>,
}

impl Registered {
    pub(crate) fn register(&mut self, kq: RawFd, token: usize) -> io::Result<()> {
        check_kqueue(kq)?;
        self.target = Some(Target { kq, token });
        self.private = None;
        self.deferred_error = None;
        Ok(())
    }

    pub(crate) fn deregister(&mut self) {
        self.target = None;
        self.private = None;
        self.deferred_error = None;
    }

    /// Gives the operation a kqueue of its own and returns it: it becomes readable when a
    /// submission completes. Replaces any registration.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn attach_private(&mut self) -> io::Result<NotifyFd> {
        let kq = Arc::new(private_queue()?);
        self.target = Some(Target {
            kq: kq.as_raw_fd(),
            token: 0,
        });
        self.private = Some(kq.clone());
        self.deferred_error = None;
        Ok(NotifyFd(kq))
    }

    #[cfg(feature = "tokio")]
    pub(crate) fn register_raw(&mut self, kq: BorrowedFd, udata: usize) {
        if let Err(e) = self.register(kq.as_raw_fd(), udata) {
            self.deferred_error = Some(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)));
        }
    }

    /// A new event for one submission, if registered.
    pub(crate) fn arm(&self) -> nix::Result<Option<Arc<UserEvent>>> {
        if let Some(e) = self.deferred_error {
            return Err(e);
        }
        self.target
            .map(|t| UserEvent::arm(t, self.private.clone()))
            .transpose()
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
    }
}

/// A kqueue of the operation's own, for a caller that watches it itself: readable once the
/// operation (or the whole batch) has completed, until it is collected.
#[derive(Debug)]
pub struct NotifyFd(Arc<OwnedFd>);

/// The kqueue systems do not reuse an operation's kqueue: the tokio layer's pool of watched
/// descriptors (Linux) finds none idle.
#[cfg(feature = "tokio")]
impl NotifyFd {
    pub(crate) fn is_idle(&self) -> bool {
        false
    }

    pub(crate) fn is_ours(&self) -> bool {
        true
    }
}

impl AsRawFd for NotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

pub(crate) fn busy() -> io::Error {
    io::Error::new(
        io::ErrorKind::ResourceBusy,
        "a mio-aio operation cannot be (de)registered while it is in flight",
    )
}

/// The kqueue fd behind a mio `Registry`.
pub(crate) fn kqueue_fd(registry: &Registry) -> RawFd {
    use std::os::fd::AsFd;
    registry.as_fd().as_raw_fd()
}
