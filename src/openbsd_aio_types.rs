//! OpenBSD: nix has no `sys::aio` there (OpenBSD has no POSIX AIO), so the two types of its
//! that mio-aio's API names are defined here, with nix's names and variants.

/// Whether [`crate::SourceApi::cancel`] removed an operation before it ran, found it already
/// running (wait for its event as usual) or already finished. Elsewhere this is nix's
/// `nix::sys::aio::AioCancelStat`.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum AioCancelStat {
    /// The operation was cancelled.
    AioCanceled,
    /// The operation is running and was not cancelled.
    AioNotCanceled,
    /// The operation had already finished.
    AioAllDone,
}

/// What [`crate::Fsync::fsync`] makes durable: `O_SYNC` the data and the metadata (`fsync(2)`),
/// `O_DSYNC` what is needed to read the data back (`fdatasync(2)`). Elsewhere this is nix's
/// `nix::sys::aio::AioFsyncMode`.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
#[non_exhaustive]
pub enum AioFsyncMode {
    /// Like `fsync`.
    O_SYNC,
    /// Like `fdatasync`.
    O_DSYNC,
}
