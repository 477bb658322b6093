//! Cancellable reads and writes on streams (pipes, FIFOs, sockets, terminals), as the thread
//! pool runs them.
//!
//! A plain blocking `read` on an empty pipe cannot be interrupted from another thread, so a
//! worker never makes one. It waits in `poll` on the stream and on a private wake-up descriptor
//! (an eventfd on Linux, a pipe elsewhere), and only when the stream is ready does it transfer,
//! holding the wait's lock: on Linux without blocking (`RWF_NOWAIT`); elsewhere with the plain
//! call, which `poll` said would not block (another reader of the same stream could still take
//! the data first: the transfer then waits for more, as a blocking read would). `cancel` takes the same lock: if the worker is still waiting, the request is
//! marked cancelled (the worker ends it with `ECANCELED`) and the eventfd wakes the worker;
//! otherwise the transfer has already happened and the request ends with its result. So the
//! decision is made in one place, and the answer is always true.

use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::Mutex,
};

use nix::errno::Errno;

use super::request::{OpKind, Request};

/// How often a wait without a wake-up descriptor (none could be made: `EMFILE`) looks for a
/// cancel.
const POLL_SLICE_MS: libc::c_int = 20;

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
    /// Wakes the worker's `poll` on cancel (`None` if none could be made: the worker then
    /// looks every [`POLL_SLICE_MS`]).
    wake: Option<Wake>,
}

/// The descriptor a cancel writes to wake the worker: `read` is what the worker polls, `write`
/// what a cancel writes to (one eventfd on Linux, so no `write`; the two ends of a pipe
/// elsewhere).
#[derive(Debug)]
struct Wake {
    read: OwnedFd,
    write: Option<OwnedFd>,
}

impl Wake {
    #[cfg(target_os = "linux")]
    fn new() -> Option<Wake> {
        Wake::eventfd()
    }

    #[cfg(not(target_os = "linux"))]
    fn new() -> Option<Wake> {
        Wake::pipe()
    }

    #[cfg(target_os = "linux")]
    fn eventfd() -> Option<Wake> {
        // SAFETY: eventfd takes no pointers.
        let fd = syscall!(eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK)).ok()?;
        Some(Wake {
            // SAFETY: `fd` was just returned by eventfd and is owned by nothing else.
            read: unsafe { OwnedFd::from_raw_fd(fd) },
            write: None,
        })
    }

    /// The wake-up of the systems without eventfd (also built on Linux, where its unit test
    /// runs).
    #[cfg_attr(all(target_os = "linux", not(test)), allow(dead_code))]
    fn pipe() -> Option<Wake> {
        let mut fds = [-1; 2];
        // SAFETY: `fds` is a local array of two ints, which pipe fills.
        syscall!(pipe(fds.as_mut_ptr())).ok()?;
        // SAFETY: pipe just returned these two new descriptors, owned by nothing else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        for fd in [&read, &write] {
            // SAFETY: fcntl with integer arguments on a descriptor we own.
            let _ = syscall!(fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC));
        }
        // SAFETY: as above. Non-blocking: a full pipe (many cancels) refuses more at once.
        let _ = syscall!(fcntl(write.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK));
        Some(Wake {
            read,
            write: Some(write),
        })
    }

    fn signal(&self) {
        let fd = self.write.as_ref().unwrap_or(&self.read).as_raw_fd();
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a local to a descriptor we own (an eventfd takes exactly
        // 8; a pipe takes them or, full, refuses without blocking: it is already readable).
        let _ = syscall!(write(fd, (&one as *const u64).cast(), 8));
    }
}

impl StreamWait {
    pub(crate) fn new() -> StreamWait {
        StreamWait::with_wake(Wake::new())
    }

    fn with_wake(wake: Option<Wake>) -> StreamWait {
        StreamWait {
            state: Mutex::new(State::Waiting),
            wake,
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
            wake.signal();
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
        let wake_fd = self.wake.as_ref().map_or(-1, |w| w.read.as_raw_fd());
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
#[cfg(target_os = "linux")]
fn transfer_nowait(r: &Request) -> i64 {
    let mut one = EMPTY_IOVEC;
    let (iov, count) = iovecs(r, &mut one);
    let write = matches!(r.kind, OpKind::Write | OpKind::Writev);
    loop {
        // SAFETY: the request's pointers describe buffers (or an iovec array) that its operation
        // borrows until its completion is recorded (the engines' contract); `iov` points into
        // `one` or that array. Offset -1 means the stream's own position.
        let res = if write {
            syscall!(pwritev2(r.fd, iov, count, -1, libc::RWF_NOWAIT))
        } else {
            syscall!(preadv2(r.fd, iov, count, -1, libc::RWF_NOWAIT))
        };
        let res = match res {
            Err(Errno::EOPNOTSUPP) => plain_transfer(r.fd, write, iov, count),
            other => other,
        };
        match res {
            Ok(n) => return n as i64,
            Err(Errno::EINTR) => continue,
            Err(errno) => return -(errno as i64),
        }
    }
}

/// One read or write at the stream's position, once `poll` said it would not block (the BSDs
/// and macOS have no per-call `RWF_NOWAIT`).
#[cfg(not(target_os = "linux"))]
fn transfer_nowait(r: &Request) -> i64 {
    transfer_plain(r)
}

/// One read or write at the stream's position with the plain call (built on Linux too, where
/// its unit test runs).
#[cfg_attr(all(target_os = "linux", not(test)), allow(dead_code))]
fn transfer_plain(r: &Request) -> i64 {
    let mut one = EMPTY_IOVEC;
    let (iov, count) = iovecs(r, &mut one);
    let write = matches!(r.kind, OpKind::Write | OpKind::Writev);
    loop {
        match plain_transfer(r.fd, write, iov, count) {
            Ok(n) => return n as i64,
            Err(Errno::EINTR) => continue,
            Err(errno) => return -(errno as i64),
        }
    }
}

const EMPTY_IOVEC: libc::iovec = libc::iovec {
    iov_base: std::ptr::null_mut(),
    iov_len: 0,
};

/// The request as an iovec array: its own, or `one`, filled with its buffer (the caller keeps
/// `one` alive while it uses the pointer).
fn iovecs(r: &Request, one: &mut libc::iovec) -> (*const libc::iovec, libc::c_int) {
    match r.kind {
        OpKind::Read | OpKind::Write => {
            one.iov_base = r.addr.cast();
            one.iov_len = r.len;
            (one as *const libc::iovec, 1)
        }
        _ => (r.addr as *const libc::iovec, r.len as libc::c_int),
    }
}

fn plain_transfer(
    fd: libc::c_int,
    write: bool,
    iov: *const libc::iovec,
    count: libc::c_int,
) -> nix::Result<isize> {
    // SAFETY: `iov` and `count` describe an iovec array valid for the call (see the callers).
    if write {
        syscall!(writev(fd, iov, count))
    } else {
        syscall!(readv(fd, iov, count))
    }
}

#[cfg(test)]
mod tests {
    //! The parts only the systems without eventfd and `RWF_NOWAIT` use, run here on Linux too.

    use std::{
        os::fd::{AsRawFd, FromRawFd, OwnedFd},
        sync::Arc,
        time::Duration,
    };

    use super::{transfer_plain, StreamWait, Wake};
    use crate::sys::pool::{OpKind, Request};

    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [-1; 2];
        // SAFETY: `fds` is a local array of two ints, which pipe fills.
        syscall!(pipe(fds.as_mut_ptr())).unwrap();
        // SAFETY: pipe just returned these new descriptors, owned by nothing else.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    #[test]
    fn a_pipe_wake_ends_a_stream_wait() {
        let (rx, _tx) = pipe();
        let mut buf = [0u8; 4];
        let r = Request {
            kind: OpKind::Read,
            fd: rx.as_raw_fd(),
            offset: 0,
            addr: buf.as_mut_ptr(),
            len: buf.len(),
        };
        let wait = Arc::new(StreamWait::with_wake(Some(Wake::pipe().unwrap())));
        let waiter = {
            let wait = wait.clone();
            std::thread::spawn(move || wait.run(&r))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished(), "an empty pipe: still waiting");
        assert!(wait.cancel());
        // A wake that does not wake would leave the worker in `poll` for good: bounded here.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !waiter.is_finished() {
            assert!(
                std::time::Instant::now() < deadline,
                "the pipe wake did not wake"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(waiter.join().unwrap(), -i64::from(libc::ECANCELED));
    }

    #[test]
    fn plain_transfers_read_and_write_a_pipe() {
        let (rx, tx) = pipe();
        let mut out = *b"data";
        let w = Request {
            kind: OpKind::Write,
            fd: tx.as_raw_fd(),
            offset: 0,
            addr: out.as_mut_ptr(),
            len: out.len(),
        };
        assert_eq!(transfer_plain(&w), 4);
        let mut a = [0u8; 2];
        let mut b = [0u8; 2];
        let iov = [
            libc::iovec {
                iov_base: a.as_mut_ptr().cast(),
                iov_len: 2,
            },
            libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: 2,
            },
        ];
        let r = Request {
            kind: OpKind::Readv,
            fd: rx.as_raw_fd(),
            offset: 0,
            addr: iov.as_ptr() as *mut u8,
            len: iov.len(),
        };
        assert_eq!(transfer_plain(&r), 4);
        assert_eq!((&a, &b), (b"da", b"ta"));
    }
}
