//! The notifier on the kqueue systems: one `EVFILT_USER` event in the caller's kqueue per
//! submission, whose `udata` is the operation's token.
//!
//! A submission arms a fresh event ([`UserEvent::arm`]: `EV_ADD | EV_ONESHOT`, its ident the
//! `UserEvent`'s own address, never 0, the ident mio's `Waker` uses); the worker that finishes
//! the operation (or the last of a batch) triggers it (`NOTE_TRIGGER`); collecting or dropping
//! the operation disarms it (`EV_DELETE`). One-shot: at most one event per submission. The
//! trigger and the disarm take the same lock, so once disarmed nothing triggers the event: a
//! later submission, with a new event, never sees a stale one.

use std::{
    io,
    os::fd::{OwnedFd, RawFd},
    sync::{Arc, Mutex},
};

/// The type of `kevent.flags` (and of `EV_ADD` and friends).
#[cfg(target_os = "netbsd")]
type Flags = u32;
#[cfg(not(target_os = "netbsd"))]
type Flags = u16;

/// Where a registered operation's event goes: a kqueue and the token mio reports.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) struct Target {
    pub kq: RawFd,
    pub token: usize,
}

/// One armed `EVFILT_USER` event.
#[derive(Debug)]
pub(crate) struct UserEvent {
    /// `None` once disarmed.
    target: Mutex<Option<Target>>,
    /// A private kqueue (the tokio layer's), kept open while the event may be triggered, so
    /// that its number never names another descriptor meanwhile.
    _keep: Option<Arc<OwnedFd>>,
}

impl UserEvent {
    /// Adds a new event to `target.kq`, not yet triggered.
    pub(crate) fn arm(target: Target, keep: Option<Arc<OwnedFd>>) -> io::Result<Arc<UserEvent>> {
        let event = Arc::new(UserEvent {
            target: Mutex::new(Some(target)),
            _keep: keep,
        });
        event.change(target, libc::EV_ADD | libc::EV_ONESHOT, 0)?;
        Ok(event)
    }

    /// Posts the event (if still armed): the caller's poll reports the token once.
    pub(crate) fn trigger(&self) {
        let target = self.target.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = *target {
            // Fails only if the kqueue was closed (nobody to tell) or the event already fired.
            let _ = self.change(t, 0, libc::NOTE_TRIGGER);
        }
    }

    /// Removes the event (with a trigger not yet reported); it can never fire again.
    pub(crate) fn disarm(&self) {
        let mut target = self.target.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = target.take() {
            // ENOENT: it already fired (one-shot events leave once reported).
            let _ = self.change(t, libc::EV_DELETE, 0);
        }
    }

    fn ident(&self) -> usize {
        self as *const UserEvent as usize
    }

    fn change(&self, t: Target, flags: Flags, fflags: u32) -> io::Result<()> {
        // SAFETY: an all-zero kevent is a valid value of this plain C struct.
        let mut kev: libc::kevent = unsafe { std::mem::zeroed() };
        kev.ident = self.ident() as _;
        kev.filter = libc::EVFILT_USER as _;
        kev.flags = flags;
        kev.fflags = fflags;
        kev.udata = t.token as _;
        // SAFETY: one change from a valid local, no event list, no timeout pointer.
        syscall!(kevent(
            t.kq,
            &kev,
            1,
            std::ptr::null_mut(),
            0,
            std::ptr::null()
        ))?;
        Ok(())
    }
}

impl Drop for UserEvent {
    fn drop(&mut self) {
        self.disarm();
    }
}

/// A new kqueue, close-on-exec: the private queue of the tokio layer.
pub(crate) fn private_queue() -> io::Result<OwnedFd> {
    // SAFETY: kqueue takes no arguments.
    let kq = syscall!(kqueue())?;
    // SAFETY: kqueue just returned this new descriptor, owned by nothing else.
    let kq = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(kq) };
    // SAFETY: fcntl with integer arguments on a descriptor we own.
    syscall!(fcntl(
        std::os::fd::AsRawFd::as_raw_fd(&kq),
        libc::F_SETFD,
        libc::FD_CLOEXEC
    ))?;
    Ok(kq)
}

/// Checks that `kq` is a kqueue, so that `register` reports a bad one at once.
pub(crate) fn check_kqueue(kq: RawFd) -> io::Result<()> {
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: no changes, no event list; `zero` is a valid local timespec.
    syscall!(kevent(
        kq,
        std::ptr::null(),
        0,
        std::ptr::null_mut(),
        0,
        &zero
    ))?;
    Ok(())
}
