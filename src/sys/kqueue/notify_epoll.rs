//! Linux only, for the unit tests: the kqueue backend's notifier (`notify.rs`) rebuilt on
//! epoll, so that the backend's own logic (operations, batches, jobs, registration, cancel,
//! drop) runs on every Linux test run. The same contract: one event per submission, armed
//! by `arm`, reported once by `trigger`, gone after `disarm`; the event is an eventfd in the
//! epoll set (`EPOLLONESHOT`) instead of an `EVFILT_USER` knote. What only the real `kevent`
//! calls can show runs on the kqueue systems themselves.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    sync::{Arc, Mutex},
};

/// Where a registered operation's event goes: an epoll set here, and the token mio reports.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) struct Target {
    pub kq: RawFd,
    pub token: usize,
}

/// One armed event: an eventfd in the target's epoll set.
#[derive(Debug)]
pub(crate) struct UserEvent {
    /// `None` once disarmed.
    armed: Mutex<Option<(Target, OwnedFd)>>,
    _keep: Option<Arc<OwnedFd>>,
}

impl UserEvent {
    pub(crate) fn arm(target: Target, keep: Option<Arc<OwnedFd>>) -> io::Result<Arc<UserEvent>> {
        // SAFETY: eventfd takes no pointers.
        let fd = syscall!(eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK))?;
        // SAFETY: eventfd just returned this new descriptor, owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET | libc::EPOLLONESHOT) as u32,
            u64: target.token as u64,
        };
        // SAFETY: epoll_ctl only reads `ev`, a valid local.
        syscall!(epoll_ctl(
            target.kq,
            libc::EPOLL_CTL_ADD,
            fd.as_raw_fd(),
            &mut ev
        ))?;
        Ok(Arc::new(UserEvent {
            armed: Mutex::new(Some((target, fd))),
            _keep: keep,
        }))
    }

    pub(crate) fn trigger(&self) {
        let armed = self.armed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, fd)) = &*armed {
            let one = 1u64;
            // SAFETY: writes 8 bytes from a local to an eventfd we own.
            let _ = syscall!(write(fd.as_raw_fd(), (&one as *const u64).cast(), 8));
        }
    }

    pub(crate) fn disarm(&self) {
        let mut armed = self.armed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((t, fd)) = armed.take() {
            // SAFETY: a null event is allowed for EPOLL_CTL_DEL.
            let _ = syscall!(epoll_ctl(
                t.kq,
                libc::EPOLL_CTL_DEL,
                fd.as_raw_fd(),
                std::ptr::null_mut()
            ));
        }
    }
}

impl Drop for UserEvent {
    fn drop(&mut self) {
        self.disarm();
    }
}

/// Checks that `kq` is an open descriptor (an epoll set, here).
pub(crate) fn check_kqueue(kq: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    syscall!(fcntl(kq, libc::F_GETFD))?;
    Ok(())
}

/// A new private queue (an epoll set here), close-on-exec.
pub(crate) fn private_queue() -> io::Result<OwnedFd> {
    // SAFETY: epoll_create1 takes no pointers.
    let fd = syscall!(epoll_create1(libc::EPOLL_CLOEXEC))?;
    // SAFETY: epoll_create1 just returned this new descriptor, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
