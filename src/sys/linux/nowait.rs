//! Reads and writes that must not block (`RWF_NOWAIT`): what a NOWAIT result means, and the
//! single cached read done in the submitting thread.
//!
//! Kernel AIO runs a buffered read inside `io_submit`, so mio-aio submits reads and writes with
//! `RWF_NOWAIT` and hands what would block to a thread pool (see `kaio`). For a single read
//! whose data is all in the page cache that is the whole work, done synchronously: doing it
//! with `preadv2(RWF_NOWAIT)` in the submitting thread gives the same result without the
//! context's event, its `io_getevents` and the reaper thread's wake-up. io_uring's submission
//! would likewise copy the block inline, plus an SQE, a linked eventfd write run as task work
//! and a CQE; the thread pool would hand it to a worker. So the driver tries this for a single
//! read before any engine sees it; the operation's notifier is then signalled from user space.
//!
//! Measured (4 KiB random reads, 1 GiB file in the page cache, QD32, same build, interleaved,
//! 3 runs each; `Config::cached_reads`, `MIO_AIO_CACHED_READS=0`, turns this off): per-operation mio loop, io_uring
//! 212-239k → 291-301k operations/s (CPU 4.2-4.7 → 3.3-3.4 µs each), kernel AIO 149-155k →
//! 274-286k, thread pool 178-187k → 272-292k; tokio layer, io_uring 548-576k → 679-718k,
//! kernel AIO 297-306k → 647-702k. (fio io_uring at QD32, minutes later: 380-399k.) CI runs
//! the io_uring suite both ways, so that the engine's own read path stays tested.

use std::os::fd::RawFd;

use super::engine::{OpKind, Request};

/// The most bytes one read or write transfers (Linux's `MAX_RW_COUNT`: `INT_MAX` rounded down
/// to a page); longer ones complete short, as they do with `pread`.
fn max_rw() -> u64 {
    static MAX_RW: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *MAX_RW.get_or_init(|| {
        // SAFETY: sysconf only reads a configuration value.
        let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            p if p > 0 => p as u64,
            _ => 4096,
        };
        i32::MAX as u64 & !(page - 1)
    })
}

/// The bytes a read or write asks for, as the kernel clamps them.
fn wanted(r: &Request) -> u64 {
    let total = match r.kind {
        OpKind::Readv | OpKind::Writev => {
            // SAFETY: the iovec array (`len` entries at `addr`) belongs to the operation, which
            // keeps it unchanged until its completion is done.
            let iovecs = unsafe { std::slice::from_raw_parts(r.addr as *const libc::iovec, r.len) };
            iovecs
                .iter()
                .fold(0u64, |t, v| t.saturating_add(v.iov_len as u64))
        }
        _ => r.len as u64,
    };
    total.min(max_rw())
}

/// Whether the NOWAIT result `res` (bytes, or `-errno`) of a read or write means "would have
/// blocked", so that the request must run again as a plain, blocking call.
pub(super) fn needs_blocking_call(r: &Request, res: i64) -> bool {
    let write = match r.kind {
        OpKind::Read | OpKind::Readv => false,
        OpKind::Write | OpKind::Writev => true,
        OpKind::Fsync | OpKind::Fdatasync | OpKind::Nop => return false,
    };
    if res == -i64::from(libc::EAGAIN) || res == -i64::from(libc::EOPNOTSUPP) {
        return true;
    }
    if res < 0 || res as u64 >= wanted(r) {
        return false;
    }
    // Short. A NOWAIT read stops where the cached pages end; with nothing at all cached it
    // fails with EAGAIN, so 0 bytes means end of file.
    if !write && res == 0 {
        return false;
    }
    short_may_continue(r.fd, r.offset.saturating_add(res as u64), write)
}

/// Whether a short NOWAIT transfer that ended at `end` may have stopped only because the rest
/// would have blocked (so it must be redone whole), rather than for a reason a blocking call
/// would give too: end of file, or a pipe, socket or character device returning what it had.
///
/// Only reached on short results, and only for files that support NOWAIT (local filesystems,
/// block devices, pipes), for which `fstat` and `F_GETFL` do not wait on storage.
fn short_may_continue(fd: RawFd, end: u64, write: bool) -> bool {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes one `struct stat` into the buffer, which is read only on success.
    if syscall!(fstat(fd, st.as_mut_ptr())).is_err() {
        // Let the blocking call find out what is wrong.
        return true;
    }
    // SAFETY: fstat succeeded, so it filled `st`.
    let st = unsafe { st.assume_init() };
    let kind = st.st_mode & libc::S_IFMT;
    if kind != libc::S_IFREG && kind != libc::S_IFBLK {
        return false;
    }
    if write {
        // Redoing an O_APPEND write would append its beginning twice: keep the short count.
        // SAFETY: F_GETFL only reads the descriptor's flags.
        syscall!(fcntl(fd, libc::F_GETFL)).is_ok_and(|flags| flags & libc::O_APPEND == 0)
    } else {
        // A block device's size is not in `st_size`: always redo there.
        kind == libc::S_IFBLK || end < st.st_size as u64
    }
}

/// Does a read (or readv) now, in the calling thread, if it can complete without blocking:
/// returns its result, final as a blocking `pread` would give it. `None` means "start it the
/// usual way": `O_DIRECT` files (a synchronous direct read waits for the device), data not all
/// cached (`EAGAIN`, or a short read with more to come), files without `RWF_NOWAIT`
/// (`EOPNOTSUPP`: FUSE, …), pipes and sockets (`ESPIPE`), and every error, which the usual way
/// reports.
///
/// # Safety
/// The request's buffers (and, for readv, its iovec array) must be valid for writes and not
/// otherwise accessed during the call: the driver's contract for any submitted request.
pub(super) unsafe fn read_cached(r: &Request) -> Option<i64> {
    if !matches!(r.kind, OpKind::Read | OpKind::Readv) {
        return None;
    }
    // SAFETY: F_GETFL only reads the descriptor's flags.
    let flags = syscall!(fcntl(r.fd, libc::F_GETFL)).ok()?;
    if flags & libc::O_DIRECT != 0 {
        return None;
    }
    let one;
    let (iov, count) = if r.kind == OpKind::Read {
        one = libc::iovec {
            iov_base: r.addr.cast(),
            iov_len: r.len,
        };
        (&one as *const libc::iovec, 1)
    } else {
        (r.addr as *const libc::iovec, r.len)
    };
    let count = libc::c_int::try_from(count).ok()?;
    let offset = libc::off_t::try_from(r.offset).ok()?;
    // SAFETY: the caller guarantees the buffers; `one` (for a plain read) outlives the call.
    let res = syscall!(preadv2(r.fd, iov, count, offset, libc::RWF_NOWAIT)).ok()? as i64;
    if needs_blocking_call(r, res) {
        return None;
    }
    Some(res)
}
