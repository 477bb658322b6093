//! One event per batch on FreeBSD: each registered batch notifies a kqueue of its own, which is
//! watched from the user's kqueue with a one-shot `EVFILT_READ`.
//!
//! Why: `kern_lio_listio` registers the batch's `EVFILT_LIO` knote itself with
//! `EV_ADD | EV_ENABLE | EV_FLAG1`, ignoring the kevent flags of the sigevent, and `filt_lio`
//! keeps reporting the batch as done until its last entry's `aio_return`. Registered in the
//! user's kqueue directly, every `Poll::poll` would return the batch's token again until the
//! batch is collected. In a kqueue of the batch's own, that level-triggered knote only keeps
//! the inner kqueue readable; the user's kqueue sees the inner one through a knote added with
//! `EV_ONESHOT`, so it reports the batch once per submission (the knote is re-armed by every
//! `submit`/`resubmit`). mio reports that event as readable (`Event::is_readable`), and tokio
//! as ready, like the kernel's own `EVFILT_LIO`.
//!
//! The event the backend posts itself when the kernel sends none (see `lio.rs`) is an
//! `EVFILT_USER` knote triggered in the inner kqueue: the user sees the same kind of event.
//! It is deleted before each new round, and closing the inner kqueue (when the batch is
//! collected or dropped) removes it, the `EVFILT_LIO` knotes, and the user kqueue's knote on the
//! inner one (the kernel drops every knote on a descriptor that is closed), so nothing from a
//! finished batch can reach a token that has been reused since.

use std::{
    ffi::CStr,
    io, mem,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
    ptr,
};

use nix::libc;

/// The identifier of the backend's own `EVFILT_USER` event in the inner kqueue.
const STAND_IN: libc::uintptr_t = 1;

/// A batch's own kqueue (see the module documentation).
#[derive(Debug)]
pub(super) struct BatchKq {
    fd: OwnedFd,
}

impl BatchKq {
    pub(super) fn new() -> io::Result<Self> {
        // SAFETY: no arguments.
        let fd = syscall!(kqueue())?;
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // Not inherited by programs this process executes (kqueues are never inherited by
        // forked children anyway).
        // SAFETY: `fd` is open; F_SETFD only changes its flags.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
        Ok(BatchKq { fd })
    }

    /// The kqueue the batch's `lio_listio` notifies.
    pub(super) fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Asks `user_kq` for one event carrying `udata` (the token) once this kqueue has one.
    pub(super) fn arm(&self, user_kq: RawFd, udata: usize) -> io::Result<()> {
        let kev = change(
            self.fd.as_raw_fd() as libc::uintptr_t,
            libc::EVFILT_READ,
            libc::EV_ADD | libc::EV_ONESHOT,
            0,
            udata,
        );
        apply(user_kq, &kev)
    }

    /// Makes this kqueue readable (the batch is done) when the kernel sends no event.
    pub(super) fn post_stand_in(&self) {
        let kev = change(
            STAND_IN,
            libc::EVFILT_USER,
            libc::EV_ADD,
            libc::NOTE_TRIGGER,
            0,
        );
        // It cannot fail on a kqueue of our own but for lack of memory; the caller's wait is
        // then bounded by its own timeout, as for a lost event.
        let _ = apply(self.fd.as_raw_fd(), &kev);
    }

    /// Deletes the event `post_stand_in` posted, if any.
    pub(super) fn clear_stand_in(&self) {
        let kev = change(STAND_IN, libc::EVFILT_USER, libc::EV_DELETE, 0, 0);
        // ENOENT when there was none.
        let _ = apply(self.fd.as_raw_fd(), &kev);
    }
}

fn change(
    ident: libc::uintptr_t,
    filter: i16,
    flags: u16,
    fflags: u32,
    udata: usize,
) -> libc::kevent {
    // SAFETY: `kevent` is a plain C struct for which all zeroes is valid.
    let mut kev: libc::kevent = unsafe { mem::zeroed() };
    kev.ident = ident;
    kev.filter = filter;
    kev.flags = flags;
    kev.fflags = fflags;
    // Handed back unchanged, as mio's token.
    kev.udata = udata as *mut libc::c_void;
    kev
}

fn apply(kq: RawFd, kev: &libc::kevent) -> io::Result<()> {
    // SAFETY: one valid change record, no event list, no timeout.
    syscall!(kevent(kq, kev, 1, ptr::null_mut(), 0, ptr::null()))?;
    Ok(())
}

/// `vfs.aio.max_aio_queue_per_proc`: the most entries one `lio_listio` may carry (and the
/// most operations a process may have queued or completed but not returned). Read at every
/// round, since an administrator may change it; `usize::MAX` if it cannot be read (then the
/// kernel's answer decides).
pub(super) fn queue_limit() -> usize {
    const NAME: &CStr = c"vfs.aio.max_aio_queue_per_proc";
    let mut value: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>();
    // SAFETY: `NAME` is NUL-terminated; `value` and `len` are valid for writes of `len` bytes;
    // nothing is written to the kernel (null new value).
    let r = unsafe {
        libc::sysctlbyname(
            NAME.as_ptr(),
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
            ptr::null(),
            0,
        )
    };
    if r == 0 && len == mem::size_of::<libc::c_int>() {
        usize::try_from(value).unwrap_or(0)
    } else {
        usize::MAX
    }
}
