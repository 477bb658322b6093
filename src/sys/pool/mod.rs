//! The worker-thread engine's platform-neutral core, shared by Linux (`linux::threads`, whose
//! notifier is the operation's eventfd in the caller's epoll set) and the kqueue systems
//! (`kqueue`, whose notifier is an `EVFILT_USER` event in the caller's kqueue).
//!
//! Workers run the plain blocking system calls (`pread`, `pwritev`, `fsync`, …) and hand the
//! result to the job ([`Job::finish`]), which records it and signals whatever notifier it
//! carries: the pool knows nothing of notifiers. A read or write on a stream (pipe, socket)
//! waits in `poll` instead, so that a cancel can end it (`stream`).
//!
//! The modules, each depending only on those listed after it: `workers` (the queue, the
//! threads, cancel), `stream` (cancellable stream waits), `perform` (one blocking call),
//! `request` (what a job asks for).

mod described;
mod perform;
mod request;
mod stream;
mod workers;

pub(crate) use self::{
    described::{constructors, Described, IoVecs},
    request::{OpKind, Request},
    workers::{Job, WorkerPool},
};

#[cfg(test)]
mod tests;
