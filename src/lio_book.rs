//! The bookkeeping of a FreeBSD batch, as plain logic: what `lio_listio(LIO_NOWAIT)`'s return
//! value and each entry's control block say about the entry (accepted, refused for lack of
//! resources, failed), what [`crate::LioCb::resubmit`] hands over again, and what a submission
//! reports; and what the tokio layer's `LioFut` does next ([`next_step`], on every OS). The
//! FreeBSD backend acts on the rest, but it compiles on every OS so that its unit tests, written
//! against the behaviour of FreeBSD's `kern_lio_listio` and `aio_aqueue`, run on every CI
//! machine, including those that cannot run FreeBSD.
//!
//! What the kernel does (FreeBSD 14/15, `sys/kern/vfs_aio.c`), and what follows from it:
//!
//! * `lio_listio` first refuses the whole call (`EINVAL` when `nent` exceeds
//!   `vfs.aio.max_aio_queue_per_proc`; an error registering the batch's kevent): no entry is
//!   looked at. Otherwise it hands every entry to `aio_aqueue`, never stopping early, and returns
//!   0 if every entry was queued, `EIO` if some entry failed for another reason than a full
//!   queue, else `EAGAIN` if some were refused for lack of room.
//! * `aio_aqueue` first sets the entry's private status word to -1 and its error word to 0; a
//!   full queue then stores `EAGAIN`; other refusals store their error (a few, such as an
//!   oversized `aio_nbytes`, store none and leave 0); an entry it queues gets `EINPROGRESS`,
//!   which stays in the caller's control block until `aio_return` (completion updates the
//!   kernel's copy only). So after the call, **the error word is `EINPROGRESS` exactly for
//!   the entries the kernel accepted**, even one that has already finished or failed; it alone
//!   owes an `aio_return`. (`aio_error` cannot tell: it reports a queued entry's final error
//!   and a refused entry's stored error alike.)
//! * The batch's kevent is posted only if at least one entry was queued; with none, the kernel
//!   drops the batch and no event comes, so the backend posts one itself, unless the outcome is
//!   `EAGAIN` (documented as "no event").

use nix::errno::Errno;

use crate::lio::LioError;

/// Where one entry of a batch stands.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum State {
    /// Never handed to the kernel yet.
    Fresh,
    /// Refused by the kernel for lack of resources, or left out of a round (see
    /// [`round_len`]); `resubmit` hands it over again.
    Again,
    /// `LIO_NOP`: never handed to the kernel; its result is `Ok(0)`.
    Nop,
    /// Never queued, for good: refused before reaching the kernel (`LioEntry::invalid`) or by
    /// the kernel. The kernel holds nothing for it.
    Rejected(Errno),
    /// Queued by the kernel, which holds a job (and may use the buffer) until `aio_return`.
    Kernel,
    /// `aio_return` has been called: the final result.
    Done(nix::Result<isize>),
}

/// What one `lio_listio` call made of one entry it was handed.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Entry {
    /// Queued (it may have completed, even failed, already): it owes an `aio_return`.
    Accepted,
    /// Not queued, for lack of resources (`EAGAIN`).
    Refused,
    /// Not queued, for good.
    Failed(Errno),
}

/// Reads one entry after `lio_listio` returned `call`: `error_word` is the error word of the
/// entry's control block (`_aiocb_private.error`), which the caller zeroed before the call.
pub(crate) fn classify(call: Result<(), Errno>, error_word: i64) -> Entry {
    match call {
        // 0 only when every entry was queued.
        Ok(()) => Entry::Accepted,
        // Entries were looked at one by one.
        Err(Errno::EIO | Errno::EAGAIN) => match error_word {
            w if w == Errno::EINPROGRESS as i64 => Entry::Accepted,
            w if w == Errno::EAGAIN as i64 => Entry::Refused,
            // Refused without a stored error (`aio_nbytes` too large, a bad signal number).
            0 => Entry::Failed(Errno::EINVAL),
            w => Entry::Failed(i32::try_from(w).map_or(Errno::EINVAL, Errno::from_raw)),
        },
        // The call failed as a whole before looking at any entry.
        Err(e) => Entry::Failed(e),
    }
}

impl From<Entry> for State {
    fn from(entry: Entry) -> State {
        match entry {
            Entry::Accepted => State::Kernel,
            Entry::Refused => State::Again,
            Entry::Failed(e) => State::Rejected(e),
        }
    }
}

impl State {
    /// Whether the next `submit` (the first) or `resubmit` hands this entry to the kernel.
    pub(crate) fn to_start(self) -> bool {
        matches!(self, State::Fresh | State::Again)
    }

    /// Whether the entry could not be started at all (reported with [`LioError::EIO`]).
    pub(crate) fn failed(self) -> bool {
        matches!(self, State::Rejected(_))
    }

    /// Whether the kernel has (or had) accepted the entry: a second `submit` refuses to run
    /// the batch again.
    pub(crate) fn started(self) -> bool {
        matches!(self, State::Kernel | State::Done(_))
    }

    /// The entry's status in [`LioError::EIO`]; `kernel` is `aio_error`, asked only for an
    /// entry the kernel holds. `Err(EAGAIN)` marks an entry `resubmit` hands over again.
    pub(crate) fn status(self, kernel: impl FnOnce() -> Result<(), Errno>) -> Result<(), Errno> {
        match self {
            State::Fresh | State::Again => Err(Errno::EAGAIN),
            State::Nop => Ok(()),
            State::Rejected(e) => Err(e),
            State::Kernel => kernel(),
            State::Done(r) => r.map(drop),
        }
    }

    /// The entry's result for [`crate::LioCb::into_results`], for one the kernel no longer
    /// holds (`None` for [`State::Kernel`]: wait for it and `aio_return` it first).
    pub(crate) fn result(self) -> Option<nix::Result<isize>> {
        match self {
            // Never submitted: what `aio_return` reports for an unknown control block.
            State::Fresh => Some(Err(Errno::EINVAL)),
            State::Again => Some(Err(Errno::EAGAIN)),
            State::Nop => Some(Ok(0)),
            State::Rejected(e) => Some(Err(e)),
            State::Done(r) => Some(r),
            State::Kernel => None,
        }
    }
}

/// How many of `pending` entries one `lio_listio` may carry: the kernel refuses a call with
/// more than `vfs.aio.max_aio_queue_per_proc` entries as a whole (`EINVAL`, nothing started),
/// so a larger batch goes in rounds; the entries left out are [`State::Again`] and the
/// submission reports [`LioError::EINCOMPLETE`], as for a full queue.
pub(crate) fn round_len(pending: usize, limit: usize) -> usize {
    pending.min(limit)
}

/// What a submission reports, from every entry's state after it, and how many entries this
/// call got queued.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Outcome {
    /// Everything that can run was started.
    Ok,
    /// Nothing was started for lack of room; no event comes.
    Again,
    /// Some entries were started, others wait for `resubmit`.
    Incomplete,
    /// Some entries could not be started at all. Entries waiting for `resubmit` (for lack of
    /// room) show `EAGAIN` in the statuses.
    Io,
}

/// The outcome of a submission: `states` after it, `accepted` the entries it got queued.
pub(crate) fn outcome(states: impl IntoIterator<Item = State>, accepted: usize) -> Outcome {
    let (mut failed, mut waiting) = (0, 0);
    for s in states {
        failed += usize::from(s.failed());
        waiting += usize::from(s.to_start());
    }
    if failed > 0 {
        Outcome::Io
    } else if waiting > 0 && accepted > 0 {
        Outcome::Incomplete
    } else if waiting > 0 {
        Outcome::Again
    } else {
        Outcome::Ok
    }
}

/// Whether the backend must post the batch's event itself: the kernel posts it only when the
/// call queued something, and after [`Outcome::Again`] no event is promised.
pub(crate) fn needs_stand_in(outcome: Outcome, accepted: usize) -> bool {
    accepted == 0 && outcome != Outcome::Again
}

impl Outcome {
    /// As the public error, with `statuses` (computed only for [`Outcome::Io`]).
    pub(crate) fn into_result(
        self,
        statuses: impl FnOnce() -> Vec<Result<(), Errno>>,
    ) -> Result<(), LioError> {
        match self {
            Outcome::Ok => Ok(()),
            Outcome::Again => Err(LioError::EAGAIN),
            Outcome::Incomplete => Err(LioError::EINCOMPLETE),
            Outcome::Io => Err(LioError::EIO(statuses())),
        }
    }
}

#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
/// What a caller that waits for the whole batch (the tokio layer's `LioFut`) does after a
/// submission returned `result`, `in_flight` telling whether any entry is still running.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Next {
    /// Wait for the event, then collect the results: nothing is left to start.
    Collect,
    /// Wait for the event, then `resubmit` what was refused for lack of room.
    Resubmit,
    /// Nothing is running and no event will come: yield, then `resubmit`.
    RetryLater,
}

#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
/// See [`Next`]. Entries refused for lack of room are resubmitted whatever happened to the
/// others, including when some failed for good (`EIO` whose statuses hold `EAGAIN`).
pub(crate) fn next_step(result: &Result<(), LioError>, in_flight: bool) -> Next {
    let waiting = match result {
        Ok(()) => false,
        Err(LioError::EAGAIN | LioError::EINCOMPLETE) => true,
        Err(LioError::EIO(statuses)) => statuses.contains(&Err(Errno::EAGAIN)),
    };
    match (waiting, in_flight) {
        (false, _) => Next::Collect,
        // The event of what is running comes; there may be room then.
        (true, true) => Next::Resubmit,
        (true, false) => Next::RetryLater,
    }
}

#[cfg(test)]
mod tests;
