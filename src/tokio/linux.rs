//! Linux and the kqueue systems (macOS, DragonFly, NetBSD, OpenBSD): every operation (or
//! batch) gets a private notifier descriptor (`attach_notify_fd`: an eventfd on Linux, a kqueue
//! of its own elsewhere), which the backend signals on completion and tokio's reactor watches
//! through `AsyncFd`.
//!
//! The eventfd is registered with tokio only when the operation is still running after its
//! submission: an operation the kernel completed inline (a cached read through io_uring or
//! kernel AIO) costs no `epoll_ctl` at all.
//!
//! Teardown order: the `AsyncFd` is declared before the operation, so it is dropped first and
//! takes the eventfd out of tokio's epoll set (`EPOLL_CTL_DEL`) before the operation's drop
//! cancels and waits. The eventfd itself is closed or pooled only when its last reference goes,
//! which is after that deregistration (the `AsyncFd` holds one): a pooled eventfd is never in
//! tokio's set.

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
    batch_results, check_runtime, errno, polled_after_completion, retry_later, submit_batch, Phase,
    Submitted,
};
use crate::{sys, LioCb, LioResult, Source, SourceApi};

/// Registers an operation's eventfd with tokio's reactor, for reading.
fn watch(fd: sys::NotifyFd) -> io::Result<AsyncFd<sys::NotifyFd>> {
    // SAFETY: a `NotifyFd` owns (a reference to) its eventfd, which stays open, with the same
    // number, for as long as the `NotifyFd` exists; `as_raw_fd` always returns that number.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(io::Error::from)
}

/// The state of an `AioFut` on Linux.
pub(super) struct OpState<S> {
    /// The eventfd, once registered with tokio. Declared first: dropped first.
    watch: Option<AsyncFd<sys::NotifyFd>>,
    /// The eventfd between `attach_notify_fd` and its registration with tokio.
    notify: Option<sys::NotifyFd>,
    phase: Phase,
    /// Structurally pinned: never moved once the future is pinned.
    src: S,
}

impl<S> OpState<S> {
    pub(super) fn new(src: S) -> Self {
        OpState {
            watch: None,
            notify: None,
            phase: Phase::Idle,
            src,
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
        // `src` below (pinned) or through `attach_notify_fd`, which does not move it. The other
        // fields are never pinned.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: as above: `src` stays where it is until the future is dropped.
        let mut src = unsafe { Pin::new_unchecked(&mut this.src) };
        let result = loop {
            match this.phase {
                Phase::Idle => {
                    if this.notify.is_none() {
                        if let Err(e) = check_runtime() {
                            break Err(e);
                        }
                        // SAFETY: attaching an eventfd does not move the operation.
                        match unsafe { src.as_mut().get_unchecked_mut() }.attach_notify_fd() {
                            Ok(fd) => this.notify = Some(fd),
                            Err(e) => break Err(e),
                        }
                    }
                    match src.as_mut().submit() {
                        Ok(()) => this.phase = Phase::Running,
                        // No room now, and no event will come: try again at the next poll.
                        Err(Errno::EAGAIN) => return retry_later(cx),
                        Err(e) => break Err(errno(e)),
                    }
                    if src.as_mut().error() == Err(Errno::EINPROGRESS) {
                        // Still running: watch the eventfd. If it was signalled meanwhile, the
                        // registration reports it at once.
                        let fd = this.notify.take().expect("attached above");
                        match watch(fd) {
                            Ok(watch) => this.watch = Some(watch),
                            Err(e) => break Err(e),
                        }
                    } else {
                        // Completed during submission.
                        break src.as_mut().aio_return().map_err(errno);
                    }
                }
                Phase::Running => {
                    let watch = this.watch.as_ref().expect("registered when submitted");
                    let mut guard = match watch.poll_read_ready(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(guard)) => guard,
                        Poll::Ready(Err(e)) => break Err(e),
                    };
                    if src.as_mut().error() == Err(Errno::EINPROGRESS) {
                        // Spurious: clearing is safe, a later signal is a new event.
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
                        match watch(fd) {
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
