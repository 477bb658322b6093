//! What a job asks for: one request, as plain pointers into buffers its operation borrows.

use std::os::fd::RawFd;

/// What a request asks the kernel to do.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum OpKind {
    Read,
    Write,
    Readv,
    Writev,
    Fsync,
    /// Never asked for on DragonFly, whose `AioFsyncMode` (nix's) has no `O_DSYNC`.
    #[cfg_attr(target_os = "dragonfly", allow(dead_code))]
    Fdatasync,
    Nop,
}

impl OpKind {
    /// Whether a request of this kind moves data, so that on a stream it waits for readiness.
    pub(crate) fn is_transfer(self) -> bool {
        matches!(
            self,
            OpKind::Read | OpKind::Write | OpKind::Readv | OpKind::Writev
        )
    }
}

/// One request as the engines see it: plain pointers into buffers that the owning operation
/// borrows for its whole life.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Request {
    pub kind: OpKind,
    pub fd: RawFd,
    pub offset: u64,
    /// The buffer (`Read`, `Write`) or the iovec array (`Readv`, `Writev`).
    pub addr: *mut u8,
    /// Bytes (`Read`, `Write`) or iovec count (`Readv`, `Writev`).
    pub len: usize,
}

// SAFETY: a Request is only plain data. Whoever submits it promises (the `# Safety` contract of
// the engines' `submit`) that the memory it points to stays valid and unaliased until its
// completion is done, whichever thread the engine uses it from.
unsafe impl Send for Request {}
// SAFETY: as above; the request itself is never mutated while shared.
unsafe impl Sync for Request {}
