//! Linux: operations go to io_uring, to kernel AIO where io_uring is refused, or to a thread
//! pool as the last resort (see [`Backend`]). Each registered operation owns an eventfd (a
//! `Notifier`) registered with the mio `Registry`'s epoll under the operation's token; the
//! engine signals it when the operation has completed.
//!
//! The modules, each depending only on those listed after it:
//! * `aio` (single operations), `lio` (batches), `registration` (their eventfd in an epoll set):
//!   what `crate::Source` and `crate::LioCb` wrap;
//! * `driver`: one per process; chooses the engine, decides who signals what, does cached
//!   reads at once (`nowait`), and hands everything else to the engine;
//! * the engines, behind the `engine::Engine` trait: `uring` (io_uring), `kaio` (kernel AIO)
//!   and `threads` (worker threads, also kernel AIO's helper: `crate::sys::pool`, shared with
//!   the kqueue systems, with its cancellable waits on pipes and sockets), each asking `policy`
//!   how to run a file's requests;
//! * `engine` (the trait, the request and completion types every engine shares, and what
//!   `cancel()` answers), `notify` and `parked` (the eventfds), `config` (the settings), `fork`
//!   (fork detection).
//!
//! Where a read goes: `crate::Source::submit` → `aio::Op::submit` → `driver::Driver::submit_one`
//! → done at once if cached (`nowait`), else `Engine::submit_one` of `uring`, `kaio` or
//! `threads`.

mod aio;
mod config;
mod driver;
mod engine;
mod fork;
mod kaio;
mod lio;
mod notify;
mod nowait;
mod parked;
mod policy;
mod registration;
mod threads;
mod uring;

use mio::Interest;

#[cfg(feature = "tokio")]
pub use self::registration::NotifyFd;
pub use self::{
    aio::{FsyncOp, ReadOp, ReadvOp, WriteOp, WritevOp},
    lio::LioCb,
};

pub const AIO: Interest = Interest::READABLE;
pub const LIO: Interest = Interest::READABLE;

/// Public Linux-only functions, re-exported at the crate root.
pub mod linux_api {
    use std::io;

    pub use super::config::{Backend, Config, ConfigBuilder};
    use super::{config, driver::Driver};

    /// The backend this process uses, choosing it (and setting it up) if no operation has yet.
    ///
    /// Fails if the backend forced with [`set_backend`] or `MIO_AIO_BACKEND` cannot work here
    /// (for example io_uring refused by the kernel).
    pub fn backend() -> io::Result<Backend> {
        Driver::get().map(Driver::backend)
    }

    /// Forces the backend, overriding `MIO_AIO_BACKEND`: a shorthand for
    /// [`Config::builder`]`().backend(backend).install()`. Call it before the first operation:
    /// once a backend is in use it cannot change, and asking for another fails with
    /// [`io::ErrorKind::AlreadyExists`].
    ///
    /// ```
    /// # #[cfg(target_os = "linux")] {
    /// use mio_aio::Backend;
    /// // The thread pool works everywhere.
    /// match mio_aio::set_backend(Backend::ThreadPool) {
    ///     Ok(()) => assert_eq!(mio_aio::backend().unwrap(), Backend::ThreadPool),
    ///     Err(e) => println!("another backend is already in use: {e}"),
    /// }
    /// # }
    /// ```
    pub fn set_backend(backend: Backend) -> io::Result<()> {
        config::set_backend(backend)
    }

    /// The driver's settings: those in use once an operation has run (or [`backend`] was
    /// called), with the backend it chose; before that, those it would start with. See
    /// [`Config`] for each setting, its default and its environment variable.
    ///
    /// Fails if `MIO_AIO_BACKEND` names no backend.
    pub fn config() -> io::Result<Config> {
        config::current()
    }
}

/// Operations and batches are `Send + Sync`, as mio-aio's have always been (tokio needs it).
const _: fn() = || {
    fn check<T: Send + Sync>() {}
    check::<aio::ReadOp<'static>>();
    check::<LioCb<'static>>();
};
