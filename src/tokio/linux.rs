//! Linux and the kqueue systems (macOS, DragonFly, NetBSD, OpenBSD): every operation (or
//! batch) gets a private notifier descriptor (`attach_notify_fd`: an eventfd on Linux, a kqueue
//! of its own elsewhere), which the backend signals on completion and tokio's reactor watches
//! through `AsyncFd`.
//!
//! A single operation's eventfd is registered with tokio only when the operation is still
//! running after its submission: an operation the kernel completed inline (a cached read
//! through io_uring or kernel AIO) costs no `epoll_ctl` at all. On Linux the registration then
//! outlives the operation: the future's eventfd, still in tokio's epoll set, goes to a pool of
//! the thread (`watch_pool`) and serves the next operation polled there, so that steady state
//! costs no `epoll_ctl` either.
//!
//! Teardown order of an operation: the operation first (its drop cancels and waits), then its
//! `Watch`, which is pooled only once nothing else refers to the eventfd, and otherwise dropped
//! (`EPOLL_CTL_DEL`). A batch's `AsyncFd` is declared before the batch, so it leaves tokio's
//! set before the batch's drop cancels and waits. Either way, the eventfd is closed or returned
//! to the crate's own pool only when its last reference goes, after its deregistration: an
//! eventfd in that pool is never in tokio's set.

use std::{
    io,
    pin::Pin,
    task::{ready, Context, Poll},
};

use ::tokio::{
    io::{unix::AsyncFd, Interest},
    task::coop,
};
use nix::errno::Errno;

use super::{
    batch_results, check_runtime, errno, polled_after_completion, retry_later, submit_batch,
    watch_pool::{self, Watch},
    Phase, Submitted,
};
use crate::{sys, LioCb, LioResult, Source, SourceApi};

/// Registers an operation's eventfd with tokio's reactor, for reading.
fn register(fd: sys::NotifyFd) -> io::Result<AsyncFd<sys::NotifyFd>> {
    // SAFETY: a `NotifyFd` owns (a reference to) its eventfd, which stays open, with the same
    // number, for as long as the `NotifyFd` exists; `as_raw_fd` always returns that number.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(io::Error::from)
}

/// Registers an operation's eventfd with the current runtime's reactor, to be pooled after.
fn watch(fd: sys::NotifyFd) -> io::Result<Watch> {
    let runtime = check_runtime()?;
    Ok(Watch::new(register(fd)?, runtime))
}

/// The state of an `AioFut` on Linux.
pub(super) struct OpState<S> {
    /// A fresh eventfd between `attach_notify_fd` and its registration with tokio.
    notify: Option<sys::NotifyFd>,
    phase: Phase,
    /// Structurally pinned: never moved once the future is pinned.
    src: S,
    /// The eventfd attached to the operation, registered with tokio: from this thread's pool,
    /// or registered once the operation turned out to be still running after `submit`.
    /// Declared after `src`: the operation goes first, so that the eventfd is found idle and
    /// pooled for the next operation (see `watch_pool`).
    watch: Option<Watch>,
}

impl<S> OpState<S> {
    pub(super) fn new(src: S) -> Self {
        OpState {
            notify: None,
            phase: Phase::Idle,
            src,
            watch: None,
        }
    }

    pub(super) fn phase(&self) -> Phase {
        self.phase
    }
}

impl<T: sys::Operation> OpState<Source<T>> {
    /// The operation, pinned where it is (for the owned futures, to take their buffers back).
    pub(super) fn source(self: Pin<&mut Self>) -> Option<Pin<&mut Source<T>>> {
        // SAFETY: `src` is structurally pinned (see `poll`).
        Some(unsafe { self.map_unchecked_mut(|s| &mut s.src) })
    }

    pub(super) fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<T::Output>> {
        if self.phase == Phase::Done {
            polled_after_completion();
        }
        let budget = ready!(coop::poll_proceed(cx));
        // SAFETY: `src` is the only structurally pinned field, and it is only ever used through
        // `src` below (pinned) or through `attach_notify_fd*`, which do not move it. The other
        // fields are never pinned.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: as above: `src` stays where it is until the future is dropped.
        let mut src = unsafe { Pin::new_unchecked(&mut this.src) };
        let result = loop {
            match this.phase {
                Phase::Idle => {
                    if this.notify.is_none() && this.watch.is_none() {
                        let runtime = match check_runtime() {
                            Ok(id) => id,
                            Err(e) => break Err(e),
                        };
                        // SAFETY: attaching an eventfd does not move the operation.
                        let op = unsafe { src.as_mut().get_unchecked_mut() };
                        if let Some(watch) = watch_pool::take(runtime) {
                            // Fails only where eventfds are not reused: then `watch` is dropped.
                            if op.attach_notify_fd_again(watch.notify_fd()).is_ok() {
                                this.watch = Some(watch);
                            }
                        }
                        if this.watch.is_none() {
                            match op.attach_notify_fd() {
                                Ok(fd) => this.notify = Some(fd),
                                Err(e) => break Err(e),
                            }
                        }
                    }
                    match src.as_mut().submit() {
                        Ok(()) => this.phase = Phase::Running,
                        // No room now, and no event will come: try again at the next poll.
                        Err(Errno::EAGAIN) => return retry_later(cx),
                        Err(e) => break Err(errno(e)),
                    }
                    if src.as_mut().error() != Err(Errno::EINPROGRESS) {
                        // Completed during submission: the reactor is not involved.
                        break src.as_mut().aio_return().map_err(errno);
                    }
                    // Still running: watch the eventfd. If it was signalled meanwhile, the
                    // registration reports it at once.
                    if let Some(fd) = this.notify.take() {
                        match watch(fd) {
                            Ok(watch) => this.watch = Some(watch),
                            Err(e) => break Err(e),
                        }
                    }
                }
                Phase::Running => {
                    let watch = this.watch.as_mut().expect("registered when submitted");
                    let mut guard = match watch.wait_on().poll_read_ready(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(guard)) => guard,
                        Poll::Ready(Err(e)) => break Err(e),
                    };
                    if src.as_mut().error() == Err(Errno::EINPROGRESS) {
                        // Spurious (or left from the eventfd's previous operation): clearing is
                        // safe, a later signal is a new event.
                        guard.clear_ready();
                        continue;
                    }
                    break src.as_mut().aio_return().map_err(errno);
                }
                Phase::Done => polled_after_completion(),
            }
        };
        this.phase = Phase::Done;
        budget.made_progress();
        Poll::Ready(result)
    }
}

/// The state of a `LioFut` on Linux.
pub(super) struct LioState<'a> {
    /// Declared first: dropped (deregistered) before the batch is cancelled and waited for.
    watch: Option<AsyncFd<sys::NotifyFd>>,
    notify: Option<sys::NotifyFd>,
    phase: Phase,
    /// Whether `submit` was called (afterwards, only `resubmit`).
    submitted: bool,
    /// Whether some operations wait to be resubmitted (`EINCOMPLETE`).
    partial: bool,
    batch: Option<LioCb<'a>>,
}

impl<'a> LioState<'a> {
    pub(super) fn new(batch: LioCb<'a>) -> Self {
        LioState {
            watch: None,
            notify: None,
            phase: Phase::Idle,
            submitted: false,
            partial: false,
            batch: Some(batch),
        }
    }

    pub(super) fn phase(&self) -> Phase {
        self.phase
    }

    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Vec<LioResult>>> {
        if self.phase == Phase::Done {
            polled_after_completion();
        }
        let budget = ready!(coop::poll_proceed(cx));
        let result = loop {
            let batch = self.batch.as_mut().expect("present until done");
            match self.phase {
                Phase::Idle => {
                    if !self.submitted && self.notify.is_none() && self.watch.is_none() {
                        if let Err(e) = check_runtime() {
                            break Err(e);
                        }
                        match batch.attach_notify_fd() {
                            Ok(fd) => self.notify = Some(fd),
                            Err(e) => break Err(e),
                        }
                    }
                    let submitted = submit_batch(batch, !self.submitted);
                    self.submitted = true;
                    match submitted {
                        Submitted::Nothing => return retry_later(cx),
                        Submitted::Part => self.partial = true,
                        Submitted::All => self.partial = false,
                    }
                    self.phase = Phase::Running;
                    if batch.in_progress() && self.watch.is_none() {
                        let fd = self.notify.take().expect("attached above");
                        match register(fd) {
                            Ok(watch) => self.watch = Some(watch),
                            Err(e) => break Err(e),
                        }
                    }
                    // Loop: `Running` checks again whether the batch is done.
                }
                Phase::Running => {
                    if batch.in_progress() {
                        let watch = self.watch.as_ref().expect("registered when in progress");
                        let mut guard = match watch.poll_read_ready(cx) {
                            Poll::Pending => return Poll::Pending,
                            Poll::Ready(Ok(guard)) => guard,
                            Poll::Ready(Err(e)) => break Err(e),
                        };
                        // Cleared before anything is resubmitted, so that the next completion
                        // is a new event; and cleared if the wake-up was spurious.
                        guard.clear_ready();
                        continue;
                    }
                    if self.partial {
                        self.phase = Phase::Idle;
                        continue;
                    }
                    let batch = self.batch.take().expect("present until done");
                    break Ok(batch_results(batch));
                }
                Phase::Done => polled_after_completion(),
            }
        };
        self.phase = Phase::Done;
        budget.made_progress();
        Poll::Ready(result)
    }
}
