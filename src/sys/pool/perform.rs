//! One request, run with the blocking system call on a worker.
//!
//! `fsync` modes: `Fsync` is `fsync(2)` everywhere except macOS. `Fdatasync` (`O_DSYNC`) is
//! `fdatasync(2)` where it exists (Linux, DragonFly, NetBSD, OpenBSD). On macOS neither mode
//! is `fsync(2)`, which only hands the data to the drive (whose cache may lose it on power
//! failure): both are `fcntl(F_FULLFSYNC)`, which is what makes data durable there, falling
//! back to `fsync(2)` on a file system that does not support it (`ENOTSUP`, `EINVAL`).

use nix::errno::Errno;

use super::request::{OpKind, Request};

/// Runs one request with the blocking system call; returns bytes or `-errno` (`-ESPIPE` for a
/// read or write on a stream, which the worker runs as a stream wait instead).
pub(crate) fn perform(r: &Request) -> i64 {
    let off = r.offset as libc::off_t;
    let (addr, len) = (r.addr.cast(), r.len);
    loop {
        // SAFETY (every call): the request's pointers and lengths describe buffers (or iovec
        // arrays) that its operation borrows until this job's result is recorded (the contract
        // of the engines' `submit`).
        let res = match r.kind {
            OpKind::Read => syscall!(pread(r.fd, addr, len, off)).map(|n| n as i64),
            OpKind::Write => syscall!(pwrite(r.fd, addr, len, off)).map(|n| n as i64),
            OpKind::Readv => syscall!(preadv(r.fd, addr.cast(), len as i32, off)).map(|n| n as i64),
            OpKind::Writev => {
                syscall!(pwritev(r.fd, addr.cast(), len as i32, off)).map(|n| n as i64)
            }
            OpKind::Fsync => sync(r.fd, false),
            OpKind::Fdatasync => sync(r.fd, true),
            OpKind::Nop => Ok(0),
        };
        match res {
            Ok(n) => return n,
            Err(Errno::EINTR) => continue,
            Err(errno) => return -(errno as i64),
        }
    }
}

#[cfg(not(target_os = "macos"))]
fn sync(fd: libc::c_int, data_only: bool) -> nix::Result<i64> {
    if data_only {
        syscall!(fdatasync(fd)).map(i64::from)
    } else {
        syscall!(fsync(fd)).map(i64::from)
    }
}

#[cfg(target_os = "macos")]
fn sync(fd: libc::c_int, _data_only: bool) -> nix::Result<i64> {
    match syscall!(fcntl(fd, libc::F_FULLFSYNC)) {
        Err(Errno::ENOTSUP | Errno::EINVAL) => syscall!(fsync(fd)).map(i64::from),
        res => res.map(i64::from),
    }
}
