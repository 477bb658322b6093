//! Cancellable reads and writes on streams (pipes, FIFOs, sockets, terminals), as the thread
//! pool runs them.
//!
//! A plain blocking `read` on an empty pipe cannot be interrupted from another thread, so a
//! worker never makes one. It waits in `poll` on the stream and on a private eventfd, and only
//! when the stream is ready does it transfer, without blocking (`RWF_NOWAIT`), holding the
//! wait's lock. `cancel` takes the same lock: if the worker is still waiting, the request is
//! marked cancelled (the worker ends it with `ECANCELED`) and the eventfd wakes the worker;
//! otherwise the transfer has already happened and the request ends with its result. So the
//! decision is made in one place, and the answer is always true.
//!
//!
//! What `cancel()` answers, on every engine, is decided in `engine.rs` (`answer_for_done`).

use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::Mutex,
};

use nix::errno::Errno;

use super::engine::{OpKind, Request};

/// How often a wait without an eventfd (none could be made: `EMFILE`) looks for a cancel.
const POLL_SLICE_MS: libc::c_int = 20;

/// Whether a request of this kind moves data, so that on a stream it waits for readiness.
pub(crate) fn is_transfer(kind: OpKind) -> bool {
    matches!(
        kind,
        OpKind::Read | OpKind::Write | OpKind::Readv | OpKind::Writev
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Cancelled,
    Finished,
}

/// One stream request waiting on a worker, and the means to cancel it.
#[derive(Debug)]
pub(crate) struct StreamWait {
    /// Held by the worker while it transfers, and by `cancel` while it decides.
    state: Mutex<State>,
    /// Wakes the worker's `poll` on cancel (`None` if no eventfd could be made: the worker then
    /// looks every [`POLL_SLICE_MS`]).
    wake: Option<OwnedFd>,
}

impl StreamWait {
    pub(crate) fn new() -> StreamWait {
        // SAFETY: eventfd takes no pointers; a non-negative result is a new descriptor we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        StreamWait {
            state: Mutex::new(State::Waiting),
            // SAFETY: `fd` was just returned by eventfd and is owned by nothing else.
            wake: (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) }),
        }
    }

    /// Cancels the request if the worker has not transferred yet: returns whether it did (the
    /// request then ends with `ECANCELED`).
    pub(crate) fn cancel(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if *state != State::Waiting {
            return *state == State::Cancelled;
        }
        *state = State::Cancelled;
        if let Some(wake) = &self.wake {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a local to an eventfd we own.
            let _ = syscall!(write(wake.as_raw_fd(), (&one as *const u64).cast(), 8));
        }
        true
    }

    /// Runs a read or write on a stream (its offset ignored, as io_uring and FreeBSD do): waits
    /// until the stream is ready or the request is cancelled. Returns bytes or `-errno`.
    pub(crate) fn run(&self, r: &Request) -> i64 {
        let events = match r.kind {
            OpKind::Read | OpKind::Readv => libc::POLLIN,
            _ => libc::POLLOUT,
        };
        let wake_fd = self.wake.as_ref().map_or(-1, |w| w.as_raw_fd());
        let timeout = if wake_fd < 0 { POLL_SLICE_MS } else { -1 };
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: r.fd,
                    events,
                    revents: 0,
                },
                libc::pollfd {
                    fd: wake_fd,
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: `fds` is a local array of two pollfds (a negative fd is ignored).
            let n = syscall!(poll(fds.as_mut_ptr(), 2, timeout)).unwrap_or(0);
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if *state == State::Cancelled {
                return -i64::from(libc::ECANCELED);
            }
            if n <= 0 || fds[0].revents == 0 {
                continue; // EINTR, the time slice, or a spurious wake
            }
            // Ready (or closed, or failed: the transfer reports which).
            let res = transfer_nowait(r);
            if res == -i64::from(libc::EAGAIN) {
                continue; // another reader or writer got there first
            }
            *state = State::Finished;
            return res;
        }
    }
}

/// One read or write at the stream's position that does not block (`RWF_NOWAIT`); a stream
/// that does not support it (some character devices) gets the plain call, once poll said ready.
fn transfer_nowait(r: &Request) -> i64 {
    let one;
    let (iov, count) = match r.kind {
        OpKind::Read | OpKind::Write => {
            one = libc::iovec {
                iov_base: r.addr.cast(),
                iov_len: r.len,
            };
            (&one as *const libc::iovec, 1)
        }
        _ => (r.addr as *const libc::iovec, r.len as libc::c_int),
    };
    let write = matches!(r.kind, OpKind::Write | OpKind::Writev);
    loop {
        // SAFETY: the request's pointers describe buffers (or an iovec array) that its operation
        // borrows until its completion is recorded (the driver's contract); `one` outlives the
        // call. Offset -1 means the stream's own position.
        let res = if write {
            syscall!(pwritev2(r.fd, iov, count, -1, libc::RWF_NOWAIT))
        } else {
            syscall!(preadv2(r.fd, iov, count, -1, libc::RWF_NOWAIT))
        };
        let res = match res {
            Err(Errno::EOPNOTSUPP) => {
                // SAFETY: as above.
                if write {
                    syscall!(writev(r.fd, iov, count))
                } else {
                    syscall!(readv(r.fd, iov, count))
                }
            }
            other => other,
        };
        match res {
            Ok(n) => return n as i64,
            Err(Errno::EINTR) => continue,
            Err(errno) => return -(errno as i64),
        }
    }
}
