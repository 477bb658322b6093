//! The kernel AIO ABI of `<linux/aio_abi.h>` that `libc` lacks (it has `struct iocb` and
//! `RWF_NOWAIT`), and thin wrappers around the raw system calls.

use nix::errno::Errno;

/// `aio_context_t` (`__kernel_ulong_t`): the address of the context's mmapped ring.
#[cfg(not(all(target_arch = "x86_64", target_pointer_width = "32")))]
pub(crate) type AioContext = libc::c_ulong;
/// `aio_context_t` on x32, where `__kernel_ulong_t` is 64 bits wide.
#[cfg(all(target_arch = "x86_64", target_pointer_width = "32"))]
pub(crate) type AioContext = u64;

/// `enum { IOCB_CMD_PREAD = 0, IOCB_CMD_PWRITE = 1, IOCB_CMD_FSYNC = 2, IOCB_CMD_FDSYNC = 3,
/// /* 4 POLL, 5 NOOP */ IOCB_CMD_PREADV = 7, IOCB_CMD_PWRITEV = 8 }`.
pub(crate) const IOCB_CMD_PREAD: u16 = 0;
pub(crate) const IOCB_CMD_PWRITE: u16 = 1;
pub(crate) const IOCB_CMD_FSYNC: u16 = 2;
pub(crate) const IOCB_CMD_FDSYNC: u16 = 3;
pub(crate) const IOCB_CMD_PREADV: u16 = 7;
pub(crate) const IOCB_CMD_PWRITEV: u16 = 8;

/// `aio_flags` bit: signal the eventfd in `aio_resfd` when the request completes.
pub(crate) const IOCB_FLAG_RESFD: u32 = 1 << 0;

/// `aio_rw_flags` (`__kernel_rwf_t`): fail with EAGAIN instead of blocking (Linux 4.14).
pub(crate) const RWF_NOWAIT: libc::c_int = libc::RWF_NOWAIT;

/// `struct io_event`: one completion, as `io_getevents` returns it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct IoEvent {
    /// The iocb's `aio_data`.
    pub data: u64,
    /// The iocb's user-space address.
    pub obj: u64,
    /// Bytes transferred, or `-errno`.
    pub res: i64,
    pub res2: i64,
}

/// `io_setup(nr, &ctx)`.
pub(crate) fn io_setup(nr: u32) -> Result<AioContext, Errno> {
    let mut ctx: AioContext = 0;
    // SAFETY: the kernel writes one aio_context_t to `ctx`, a local of that type which must
    // be zero on entry.
    syscall!(syscall(
        libc::SYS_io_setup,
        nr as libc::c_uint,
        &mut ctx as *mut AioContext,
    ))?;
    Ok(ctx)
}

/// `io_destroy(ctx)`: waits for the context's requests, then frees it.
pub(crate) fn io_destroy(ctx: AioContext) {
    // SAFETY: passes only a context id; a stale one gives EINVAL.
    let _ = syscall!(syscall(libc::SYS_io_destroy, ctx));
}

/// `io_submit(ctx, n, iocbs)`: how many of `iocbs` (a prefix) were started.
///
/// # Safety
/// Every pointer must point to a valid iocb whose buffers stay valid until its event is
/// reaped, and whose own memory stays valid while `io_cancel` may name it.
pub(crate) unsafe fn io_submit(
    ctx: AioContext,
    iocbs: &mut [*mut libc::iocb],
) -> Result<usize, Errno> {
    // SAFETY: the caller's contract; the kernel reads `iocbs.len()` pointers from the slice.
    syscall!(syscall(
        libc::SYS_io_submit,
        ctx,
        iocbs.len() as libc::c_long,
        iocbs.as_mut_ptr(),
    ))
    .map(|n| n as usize)
}

/// `io_getevents(ctx, min_nr, events.len(), events, timeout)`; `None` waits without limit.
pub(crate) fn io_getevents(
    ctx: AioContext,
    min_nr: usize,
    events: &mut [IoEvent],
    timeout: Option<std::time::Duration>,
) -> Result<usize, Errno> {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs() as libc::time_t,
        tv_nsec: t.subsec_nanos() as _,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: the kernel writes at most `events.len()` io_events into the slice and reads
    // the timespec, a local (or null).
    syscall!(syscall(
        libc::SYS_io_getevents,
        ctx,
        min_nr as libc::c_long,
        events.len() as libc::c_long,
        events.as_mut_ptr(),
        ts_ptr,
    ))
    .map(|n| n as usize)
}

/// `io_cancel(ctx, iocb, &result)`.
///
/// # Safety
/// `iocb` must point to readable memory (the kernel reads its `aio_key`).
pub(crate) unsafe fn io_cancel(ctx: AioContext, iocb: *mut libc::iocb) -> Result<(), Errno> {
    let mut result = IoEvent::default();
    // SAFETY: the caller's contract for `iocb`; the kernel may write one io_event to the
    // local `result` (kernels since 3.12 deliver the event through the ring instead).
    syscall!(syscall(
        libc::SYS_io_cancel,
        ctx,
        iocb,
        &mut result as *mut IoEvent
    ))
    .map(drop)
}
