//! Batches: `LioCb`, the Linux side of `crate::LioCb`. Every entry becomes one request; the
//! batch's one event arrives when every entry that started has completed.

use std::{io, marker::PhantomData, os::fd::AsRawFd};

#[cfg(feature = "tokio")]
use std::os::fd::BorrowedFd;

use mio::{Registry, Token};
use nix::errno::Errno;

#[cfg(feature = "tokio")]
use super::registration::NotifyFd;
use super::{
    driver::Driver,
    engine::{io_errno, InFlight, OpKind, Request, Started},
    registration::{busy, epoll_fd, Registered},
};
use crate::lio::{LioBuf, LioEntry, LioError, LioOpcode, LioResult};

/// The state of one batch entry.
#[derive(Debug)]
enum Slot {
    /// Never submitted yet, or refused for lack of room (resubmit starts it).
    Waiting,
    /// Cannot be started at all.
    Invalid(Errno),
    /// Nothing to do (`LIO_NOP`).
    Nop,
    Started(Started),
}

/// A batch of operations, submitted together, reported by one event.
#[derive(Debug)]
pub struct LioCb<'a> {
    requests: Vec<Request>,
    slots: Vec<Slot>,
    submitted: bool,
    registration: Registered,
    _borrow: PhantomData<&'a mut [u8]>,
}

impl<'a> LioCb<'a> {
    pub(crate) fn new(entries: Vec<LioEntry<'a>>) -> Self {
        let mut slots = Vec::with_capacity(entries.len());
        let requests = entries
            .into_iter()
            .map(|e| {
                slots.push(match (e.invalid(), e.opcode) {
                    (Some(errno), _) => Slot::Invalid(errno),
                    (None, LioOpcode::LIO_NOP) => Slot::Nop,
                    (None, _) => Slot::Waiting,
                });
                let (addr, len) = match e.buf {
                    LioBuf::Mut(b) => (b.as_mut_ptr(), b.len()),
                    // Only ever read through: `invalid()` refuses reads into shared buffers.
                    LioBuf::Shared(b) => (b.as_ptr() as *mut u8, b.len()),
                };
                let kind = match e.opcode {
                    LioOpcode::LIO_READ => OpKind::Read,
                    LioOpcode::LIO_WRITE => OpKind::Write,
                    LioOpcode::LIO_NOP => OpKind::Nop,
                };
                Request {
                    kind,
                    fd: e.fd.as_raw_fd(),
                    offset: e.offset,
                    addr,
                    len,
                }
            })
            .collect();
        LioCb {
            requests,
            slots,
            submitted: false,
            registration: Registered::default(),
            _borrow: PhantomData,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn submit(&mut self) -> Result<(), LioError> {
        if self.submitted {
            return Err(LioError::EIO(vec![Err(Errno::EBUSY); self.slots.len()]));
        }
        let outcome = self.start_waiting();
        // After EAGAIN nothing started: the batch may simply be submitted again.
        self.submitted = outcome != Err(LioError::EAGAIN);
        outcome
    }

    pub(crate) fn resubmit(&mut self) -> Result<(), LioError> {
        if !self.submitted {
            return self.submit();
        }
        self.start_waiting()
    }

    /// Starts every waiting entry in one engine submission, under one group.
    fn start_waiting(&mut self) -> Result<(), LioError> {
        // Record what earlier rounds finished, so their room in the queue counts again.
        self.reap_started();
        let waiting: Vec<usize> = (0..self.slots.len())
            .filter(|&i| matches!(self.slots[i], Slot::Waiting))
            .collect();
        let invalid = self.slots.iter().any(|s| matches!(s, Slot::Invalid(_)));
        let notifier = match self.registration.arm() {
            Ok(n) => n.cloned(),
            Err(e) => return Err(self.all_failed(e)),
        };
        if waiting.is_empty() {
            if !invalid {
                // Nothing to wait for: the batch is complete at once, and says so.
                if let Some(n) = notifier {
                    n.signal();
                }
            }
            return self.outcome(0, 0);
        }
        let driver = match Driver::get() {
            Ok(d) => d,
            Err(e) => return Err(self.all_failed(io_errno(e))),
        };
        let requests: Vec<Request> = waiting.iter().map(|&i| self.requests[i]).collect();
        // SAFETY: every request points into buffers this batch borrows for 'a; its `Drop` (and
        // `into_results`) waits until every started completion is done, so the buffers outlive
        // the kernel's use unless the batch is leaked in flight (the hole documented at the
        // crate root).
        let started = match unsafe { driver.submit_batch(&requests, notifier.as_ref()) } {
            Ok(started) => started,
            Err(Errno::EAGAIN) => Vec::new(),
            Err(e) => return Err(self.all_failed(e)),
        };
        let accepted = started.len();
        for (&i, c) in waiting.iter().zip(started) {
            self.slots[i] = Slot::Started(c);
        }
        self.outcome(accepted, waiting.len())
    }

    /// Marks every waiting entry as failed with `errno` and reports the statuses.
    fn all_failed(&mut self, errno: Errno) -> LioError {
        for s in &mut self.slots {
            if matches!(s, Slot::Waiting) {
                *s = Slot::Invalid(errno);
            }
        }
        LioError::EIO(self.statuses())
    }

    fn outcome(&self, accepted: usize, wanted: usize) -> Result<(), LioError> {
        if self.slots.iter().any(|s| matches!(s, Slot::Invalid(_))) {
            Err(LioError::EIO(self.statuses()))
        } else if accepted < wanted && accepted == 0 {
            Err(LioError::EAGAIN)
        } else if accepted < wanted {
            Err(LioError::EINCOMPLETE)
        } else {
            Ok(())
        }
    }

    fn statuses(&self) -> Vec<Result<(), Errno>> {
        self.slots
            .iter()
            .map(|s| match s {
                Slot::Waiting => Err(Errno::EAGAIN),
                Slot::Invalid(e) => Err(*e),
                Slot::Nop => Ok(()),
                Slot::Started(c) if c.is_done() => c.result().map(drop),
                Slot::Started(_) => Err(Errno::EINPROGRESS),
            })
            .collect()
    }

    /// Whether an entry started by this process is still running (in a forked child, the
    /// parent's entries never finish: `into_results` reports them `ECANCELED` at once).
    pub(crate) fn in_progress(&self) -> bool {
        self.reap_started();
        self.slots
            .iter()
            .any(|s| matches!(s, Slot::Started(c) if !c.is_done() && c.is_ours()))
    }

    /// Records what the started entries' engine has finished, each of its queues once. A forked
    /// child never reaps its parent's: io_uring's rings are not even mapped in the child.
    fn reap_started(&self) {
        let running: Vec<&dyn InFlight> = self
            .slots
            .iter()
            .filter_map(|s| match s {
                Slot::Started(c) if !c.is_done() && c.is_ours() => Some(&**c),
                _ => None,
            })
            .collect();
        if let Some(first) = running.first() {
            first.completion().engine().reap_for(&running);
        }
    }

    pub(crate) fn into_results<F, R>(mut self, callback: F) -> R
    where
        F: FnOnce(Box<dyn Iterator<Item = LioResult> + 'a>) -> R,
    {
        let slots = std::mem::take(&mut self.slots);
        let results: Vec<LioResult> = slots
            .iter()
            .map(|s| LioResult {
                result: match s {
                    Slot::Waiting => Err(Errno::EAGAIN),
                    Slot::Invalid(e) => Err(*e),
                    Slot::Nop => Ok(0),
                    Slot::Started(c) => {
                        c.wait();
                        if c.is_ours() {
                            c.result().map(|n| n as isize)
                        } else {
                            Err(Errno::ECANCELED)
                        }
                    }
                },
            })
            .collect();
        release(slots);
        callback(Box::new(results.into_iter()))
    }

    pub(crate) fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        if self.in_progress() {
            return Err(busy());
        }
        self.registration.register(epoll_fd(registry), token.0)
    }

    pub(crate) fn reregister(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        self.register(registry, token)
    }

    pub(crate) fn deregister(&mut self, _registry: &Registry) -> io::Result<()> {
        if self.in_progress() {
            return Err(busy());
        }
        self.registration.deregister();
        Ok(())
    }

    #[cfg(feature = "tokio")]
    pub(crate) fn register_raw(&mut self, kq: BorrowedFd, udata: usize) {
        if !self.in_progress() {
            self.registration.register_raw(kq, udata)
        }
    }

    #[cfg(feature = "tokio")]
    pub(crate) fn deregister_raw(&mut self) {
        if !self.in_progress() {
            self.registration.deregister()
        }
    }

    /// See `Operation::attach_notify_fd`.
    #[cfg(feature = "tokio")]
    pub(crate) fn attach_notify_fd(&mut self) -> io::Result<NotifyFd> {
        if self.in_progress() {
            return Err(busy());
        }
        self.registration.attach_private()
    }
}

impl Drop for LioCb<'_> {
    fn drop(&mut self) {
        for s in &self.slots {
            if let Slot::Started(c) = s {
                if !c.is_done() {
                    c.request_cancel();
                }
            }
        }
        for s in &self.slots {
            if let Slot::Started(c) = s {
                c.wait();
            }
        }
        release(std::mem::take(&mut self.slots));
        self.registration.deregister();
    }
}

/// Drops a batch's finished slots and gives what they used back to their engine.
fn release(slots: Vec<Slot>) {
    let mut started: Vec<Started> = Vec::new();
    for s in slots {
        if let Slot::Started(c) = s {
            if !c.is_ours() {
                // A parent's batch, in a forked child: nothing of it may be reused.
                return;
            }
            started.push(c);
        }
    }
    if let Some(first) = started.first() {
        first.completion().engine().release(started);
    }
}
