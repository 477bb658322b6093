//! FreeBSD: POSIX AIO delivers completions straight to tokio's kqueue. The operation (or batch)
//! is wrapped in a type implementing tokio's `AioSource` and handed to `tokio::io::bsd::Aio`,
//! whose registration stores the kqueue and token in the control block (`register_raw`);
//! `Aio::poll_ready` then reports the `EVFILT_AIO` / `EVFILT_LIO` event.
//!
//! The `Aio` is created at the first poll (it needs the runtime), by moving the operation, not
//! yet submitted and never pinned, into the future's pinned slot, where it stays until dropped.
//! `Aio` has no `Drop` of its own and drops the operation in place: dropping an operation in
//! flight cancels it and waits there, at the address the kernel knows.

use std::{
    io,
    os::fd::BorrowedFd,
    pin::Pin,
    task::{ready, Context, Poll},
};

use ::tokio::{
    io::bsd::{Aio, AioSource},
    task::coop,
};
use nix::errno::Errno;

use super::{
    batch_results, check_runtime, errno, polled_after_completion, retry_later, submit_batch, Phase,
    Submitted,
};
use crate::{sys, LioCb, LioResult, Source, SourceApi};

/// A single operation as tokio's `AioSource`.
pub(super) struct OpSource<S>(pub(super) S);

impl<T: sys::Operation> AioSource for OpSource<Source<T>> {
    fn register_borrowed(&mut self, kq: BorrowedFd<'_>, token: usize) {
        self.0.register_raw(kq, token)
    }

    fn deregister(&mut self) {
        self.0.deregister_raw()
    }
}

/// The state of an `AioFut` on FreeBSD.
pub(super) struct OpState<S> {
    /// The operation until the first poll. Not structurally pinned: it is moved into `aio`.
    pending: Option<S>,
    /// Structurally pinned: the operation lives here from the first poll until dropped.
    aio: Option<Aio<OpSource<S>>>,
    phase: Phase,
    /// Set only for an operation that does not live in `aio` itself (an owned operation,
    /// boxed): takes `aio` on drop, so that the tokio registration can outlive the future
    /// until the kernel is done (a late kevent for a released registration would reach
    /// freed memory in tokio).
    release: Option<fn(Aio<OpSource<S>>)>,
}

impl<S> OpState<S> {
    pub(super) fn new(src: S) -> Self {
        OpState {
            pending: Some(src),
            aio: None,
            phase: Phase::Idle,
            release: None,
        }
    }

    /// Like `new`, for an operation whose `Aio` may be moved (its operation is boxed):
    /// `release` receives the `Aio` when the future is dropped.
    pub(super) fn with_release(src: S, release: fn(Aio<OpSource<S>>)) -> Self {
        OpState {
            pending: Some(src),
            aio: None,
            phase: Phase::Idle,
            release: Some(release),
        }
    }

    pub(super) fn phase(&self) -> Phase {
        self.phase
    }
}

impl<S> Drop for OpState<S> {
    fn drop(&mut self) {
        if let Some(release) = self.release {
            if let Some(aio) = self.aio.take() {
                release(aio);
            }
        }
    }
}

impl<T: sys::Operation> OpState<Source<T>> {
    /// The operation, pinned where it is (for the owned futures, to take their buffers back).
    pub(super) fn source(self: Pin<&mut Self>) -> Option<Pin<&mut Source<T>>> {
        // SAFETY: `aio` is structurally pinned (see `poll`). A source still in `pending` is
        // only moved (into `aio`) by a poll in the `Idle` phase; once `Done`, the future is
        // never polled again, so it stays where it is until dropped.
        unsafe {
            let this = self.get_unchecked_mut();
            match (&mut this.aio, &mut this.pending) {
                (Some(aio), _) => Some(Pin::new_unchecked(&mut aio.0)),
                (None, Some(src)) if this.phase == Phase::Done => Some(Pin::new_unchecked(src)),
                _ => None,
            }
        }
    }

    pub(super) fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<T::Output>> {
        if self.phase == Phase::Done {
            polled_after_completion();
        }
        let budget = ready!(coop::poll_proceed(cx));
        // SAFETY: only `aio` is structurally pinned. It is filled once, while empty, and its
        // operation is only used pinned (below) or through `register_raw` (at registration,
        // before submission), which does not move it. `pending` is never pinned.
        let this = unsafe { self.get_unchecked_mut() };
        let result = loop {
            match this.phase {
                Phase::Idle => {
                    if this.aio.is_none() {
                        if let Err(e) = check_runtime() {
                            break Err(e);
                        }
                        let src = this.pending.take().expect("present until registered");
                        match Aio::new_for_aio(OpSource(src)) {
                            Ok(aio) => this.aio = Some(aio),
                            Err(e) => break Err(e),
                        }
                    }
                    let aio = this.aio.as_mut().expect("registered above");
                    // SAFETY: see above; the operation stays inside `aio` until dropped.
                    let src = unsafe { Pin::new_unchecked(&mut aio.0) };
                    match src.submit() {
                        Ok(()) => this.phase = Phase::Running,
                        // No room now, and no event will come: try again at the next poll.
                        Err(Errno::EAGAIN) => return retry_later(cx),
                        Err(e) => break Err(errno(e)),
                    }
                }
                Phase::Running => {
                    let aio = this.aio.as_mut().expect("registered when submitted");
                    let event = match aio.poll_ready(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(event)) => event,
                        Poll::Ready(Err(e)) => break Err(e),
                    };
                    // SAFETY: see above.
                    let mut src = unsafe { Pin::new_unchecked(&mut aio.0) };
                    if src.as_mut().error() == Err(Errno::EINPROGRESS) {
                        // Spurious: wait for the real event.
                        aio.clear_ready(event);
                        continue;
                    }
                    break src.aio_return().map_err(errno);
                }
                Phase::Done => polled_after_completion(),
            }
        };
        this.phase = Phase::Done;
        budget.made_progress();
        Poll::Ready(result)
    }
}

/// A batch as tokio's `AioSource`.
pub(super) struct LioSource<'a>(LioCb<'a>);

impl AioSource for LioSource<'_> {
    fn register_borrowed(&mut self, kq: BorrowedFd<'_>, token: usize) {
        self.0.register_raw(kq, token)
    }

    fn deregister(&mut self) {
        self.0.deregister_raw()
    }
}

/// The state of a `LioFut` on FreeBSD.
pub(super) struct LioState<'a> {
    /// The batch until the first poll.
    pending: Option<LioCb<'a>>,
    /// The batch, registered, from the first poll until done.
    aio: Option<Aio<LioSource<'a>>>,
    phase: Phase,
    /// Whether `submit` was called (afterwards, only `resubmit`).
    submitted: bool,
    /// Whether some operations wait to be resubmitted (`EINCOMPLETE`).
    partial: bool,
}

impl<'a> LioState<'a> {
    pub(super) fn new(batch: LioCb<'a>) -> Self {
        LioState {
            pending: Some(batch),
            aio: None,
            phase: Phase::Idle,
            submitted: false,
            partial: false,
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
            match self.phase {
                Phase::Idle => {
                    if self.aio.is_none() {
                        if let Err(e) = check_runtime() {
                            break Err(e);
                        }
                        let batch = self.pending.take().expect("present until registered");
                        match Aio::new_for_lio(LioSource(batch)) {
                            Ok(aio) => self.aio = Some(aio),
                            Err(e) => break Err(e),
                        }
                    }
                    let aio = self.aio.as_mut().expect("registered above");
                    let submitted = submit_batch(&mut aio.0, !self.submitted);
                    self.submitted = true;
                    match submitted {
                        Submitted::Nothing => return retry_later(cx),
                        Submitted::Part => self.partial = true,
                        Submitted::All => self.partial = false,
                    }
                    self.phase = Phase::Running;
                }
                Phase::Running => {
                    let aio = self.aio.as_mut().expect("registered until done");
                    if aio.0.in_progress() {
                        let event = match aio.poll_ready(cx) {
                            Poll::Pending => return Poll::Pending,
                            Poll::Ready(Ok(event)) => event,
                            Poll::Ready(Err(e)) => break Err(e),
                        };
                        // Cleared before anything is resubmitted, so that the next completion
                        // is a new event; and cleared if the event was early or spurious.
                        aio.clear_ready(event);
                        continue;
                    }
                    if self.partial {
                        self.phase = Phase::Idle;
                        continue;
                    }
                    let aio = self.aio.take().expect("registered until done");
                    break Ok(batch_results(aio.into_inner().0));
                }
                Phase::Done => polled_after_completion(),
            }
        };
        self.phase = Phase::Done;
        budget.made_progress();
        Poll::Ready(result)
    }
}
