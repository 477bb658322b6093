//! Batches on the kqueue systems: every entry becomes one job of the worker pool, and the
//! batch's one event is triggered by the last of them to finish.

use std::{io, marker::PhantomData, os::fd::AsRawFd, sync::Arc};

#[cfg(feature = "tokio")]
use {super::registration::NotifyFd, std::os::fd::BorrowedFd};

use mio::{Registry, Token};
use nix::errno::Errno;

use super::{
    job::{Group, KqJob},
    notify::UserEvent,
    registration::{busy, kqueue_fd, Registered},
};
use crate::{
    lio::{LioBuf, LioEntry, LioError, LioOpcode, LioResult},
    sys::pool::{OpKind, Request},
};

/// The state of one batch entry.
#[derive(Debug)]
enum Slot {
    /// Never submitted yet, or refused for lack of workers (resubmit starts it).
    Waiting,
    /// Cannot be started at all.
    Invalid(Errno),
    /// Nothing to do (`LIO_NOP`).
    Nop,
    Started(Arc<KqJob>),
}

/// A batch of operations, submitted together, reported by one event.
#[derive(Debug)]
pub struct LioCb<'a> {
    requests: Vec<Request>,
    slots: Vec<Slot>,
    submitted: bool,
    registration: Registered,
    /// The events of the rounds started, disarmed when the batch is collected or dropped.
    events: Vec<Arc<UserEvent>>,
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
            events: Vec::new(),
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

    /// Starts every waiting entry as one round, reported by one event.
    fn start_waiting(&mut self) -> Result<(), LioError> {
        let waiting: Vec<usize> = (0..self.slots.len())
            .filter(|&i| matches!(self.slots[i], Slot::Waiting))
            .collect();
        let invalid = self.slots.iter().any(|s| matches!(s, Slot::Invalid(_)));
        let event = match self.registration.arm() {
            Ok(e) => e,
            Err(e) => return Err(self.all_failed(e)),
        };
        if waiting.is_empty() {
            if let Some(event) = event {
                if !invalid {
                    // Nothing to wait for: the batch is complete at once, and says so.
                    event.trigger();
                }
                self.events.push(event);
            }
            return self.outcome();
        }
        let requests: Vec<Request> = waiting.iter().map(|&i| self.requests[i]).collect();
        let group = Group::new(requests.len(), event.clone());
        // SAFETY: every request points into buffers this batch borrows for 'a; its `Drop` (and
        // `into_results`) waits until every started job is done, so the buffers outlive the
        // workers' use unless the batch is leaked in flight (the hole documented at the crate
        // root).
        match unsafe { KqJob::start(&requests, None, Some(group)) } {
            Ok(jobs) => {
                for (&i, j) in waiting.iter().zip(jobs) {
                    self.slots[i] = Slot::Started(j);
                }
                self.events.extend(event);
                self.outcome()
            }
            Err(Errno::EAGAIN) => Err(LioError::EAGAIN),
            Err(e) => Err(self.all_failed(e)),
        }
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

    fn outcome(&self) -> Result<(), LioError> {
        if self.slots.iter().any(|s| matches!(s, Slot::Invalid(_))) {
            Err(LioError::EIO(self.statuses()))
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
                Slot::Started(j) => j.result().map(drop),
            })
            .collect()
    }

    pub(crate) fn in_progress(&self) -> bool {
        self.slots
            .iter()
            .any(|s| matches!(s, Slot::Started(j) if !j.is_done()))
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
                    Slot::Started(j) => {
                        j.wait();
                        j.result().map(|n| n as isize)
                    }
                },
            })
            .collect();
        self.disarm();
        callback(Box::new(results.into_iter()))
    }

    fn disarm(&mut self) {
        for event in self.events.drain(..) {
            event.disarm();
        }
    }

    pub(crate) fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        if self.in_progress() {
            return Err(busy());
        }
        self.registration.register(kqueue_fd(registry), token.0)
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
            if let Slot::Started(j) = s {
                j.request_cancel();
            }
        }
        for s in &self.slots {
            if let Slot::Started(j) = s {
                j.wait();
            }
        }
        self.disarm();
    }
}
