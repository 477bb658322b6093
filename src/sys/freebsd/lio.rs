//! Batches: one `lio_listio(2)` over control blocks that live on the heap.
//!
//! Invariants that make the raw pointers below sound:
//!
//! * The control blocks live in a boxed slice that is never resized or reallocated, so their
//!   addresses stay fixed even when the `LioCb` is moved. The kernel holds such an address from
//!   the `lio_listio` that accepted the operation until our `aio_return` for it.
//! * An operation whose state is [`State::Kernel`] may have kernel state, and the kernel may
//!   write into its buffer; it leaves that state only through `aio_return`, which is called only
//!   once `aio_error` no longer reports `EINPROGRESS`. Dropping the batch (or `into_results`)
//!   first waits for every such operation, so buffers and control blocks outlive the kernel's use
//!   (unless the batch is leaked in flight, with `mem::forget`: see the crate root).
//! * Every pointer array handed to `lio_listio` is kept until the batch is gone: FreeBSD uses its
//!   address as the identifier of the batch's `EVFILT_LIO` kevent, which must not collide with
//!   another batch in flight on the same kqueue.
//! * Buffers are borrowed for `'a` (`&'a mut [u8]` for reads), so nothing else touches them
//!   while the kernel may.
//!
//! `nix::sys::aio::lio_listio` is not used: it is deprecated (nix issue #2017), and it hands the
//! kernel its slice of `Pin<&mut dyn AsMut<aiocb>>`, whose elements are fat pointers, where the
//! kernel reads an array of plain `aiocb` pointers. We call `libc::lio_listio` on such an array.
//!
//! How results map to `LioError` (as mio-aio 0.7 did, from every operation's state, but never
//! panicking): `EIO` (with every status) as long as any operation of the batch could not be
//! started at all, else `EINCOMPLETE` if some operations were refused for lack of resources
//! while this call started others, `EAGAIN` if this call started none, and `EIO` for any other
//! failure of `lio_listio` itself.
//!
//! FreeBSD sends no `EVFILT_LIO` event for a `lio_listio` that queued nothing (the batch is
//! empty, all `LIO_NOP`, or every operation was refused). So that a registered batch always
//! gets its one event after `submit` or `resubmit` returns `Ok` or `EIO`, we then post it
//! ourselves: a one-shot, already triggered `EVFILT_USER` kevent with the batch's token, which
//! mio reports as readable and tokio as ready.

#[cfg(feature = "tokio")]
use std::os::fd::BorrowedFd;
use std::{
    cell::UnsafeCell,
    fmt, io,
    marker::PhantomData,
    mem,
    os::fd::{AsFd, AsRawFd, RawFd},
};

use mio::{Registry, Token};
use nix::{
    errno::Errno,
    libc,
    sys::signal::{SigEvent, SigevNotify},
};

use super::{aio_status, kevent_notify, wait_until_done};
use crate::lio::{LioBuf, LioEntry, LioError, LioOpcode, LioResult};

/// Where one operation of a batch stands.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum State {
    /// Never handed to the kernel yet.
    Fresh,
    /// Refused by the kernel for lack of resources (`EAGAIN`); `resubmit` hands it over again.
    Again,
    /// `LIO_NOP`: never handed to the kernel; its result is `Ok(0)`.
    Nop,
    /// Refused before reaching the kernel (`LioEntry::invalid`).
    Rejected(Errno),
    /// Handed to the kernel, which may hold state for it until `aio_return`. The error is the
    /// one the kernel reported at submission, if it refused the operation.
    Kernel(Option<Errno>),
    /// Refused by the kernel at submission, and `aio_return` has been called.
    Refused(Errno),
    /// Accepted by the kernel, and `aio_return` has been called: the final result.
    Done(nix::Result<isize>),
}

/// One operation of a batch.
struct Slot {
    /// The control block the kernel reads and updates; its address is what the kernel knows.
    cb: UnsafeCell<libc::aiocb>,
    fd: RawFd,
    offset: libc::off_t,
    buf: *mut libc::c_void,
    nbytes: usize,
    opcode: libc::c_int,
    prio: libc::c_int,
    state: State,
}

impl Slot {
    fn new(entry: LioEntry<'_>) -> Self {
        let state = match (entry.invalid(), entry.opcode) {
            (Some(e), _) => State::Rejected(e),
            (None, LioOpcode::LIO_NOP) => State::Nop,
            (None, _) => State::Fresh,
        };
        let opcode = match entry.opcode {
            LioOpcode::LIO_NOP => libc::LIO_NOP,
            LioOpcode::LIO_READ => libc::LIO_READ,
            LioOpcode::LIO_WRITE => libc::LIO_WRITE,
        };
        let (buf, nbytes) = match entry.buf {
            LioBuf::Mut(b) => (b.as_mut_ptr().cast(), b.len()),
            // Only ever written from: a read into a shared buffer is `Rejected`.
            LioBuf::Shared(b) => (b.as_ptr().cast_mut().cast(), b.len()),
        };
        let mut slot = Slot {
            cb: UnsafeCell::new(Self::zeroed_cb()),
            fd: entry.fd.as_raw_fd(),
            // An offset that does not fit is `Rejected`, so this value is never used then.
            offset: libc::off_t::try_from(entry.offset).unwrap_or(libc::off_t::MAX),
            buf,
            nbytes,
            opcode,
            prio: entry.prio,
            state,
        };
        slot.reset_cb();
        slot
    }

    fn zeroed_cb() -> libc::aiocb {
        // SAFETY: `aiocb` is a plain C struct (integers, raw pointers, padding) for which all
        // zeroes is a valid value; the kernel requires the reserved fields to be zeroed.
        unsafe { mem::zeroed() }
    }

    /// Rewrites the control block from the operation's parameters. Only for an operation the
    /// kernel holds no state for: this also clears the status words an earlier refusal left.
    fn reset_cb(&mut self) {
        let cb = self.cb.get_mut();
        *cb = Self::zeroed_cb();
        cb.aio_fildes = self.fd;
        cb.aio_offset = self.offset;
        cb.aio_buf = self.buf;
        cb.aio_nbytes = self.nbytes;
        cb.aio_lio_opcode = self.opcode;
        cb.aio_reqprio = self.prio;
        // Each operation notifies nobody; the batch as a whole notifies the kqueue.
        cb.aio_sigevent = SigEvent::new(SigevNotify::SigevNone).sigevent();
    }

    /// `aio_error` for an operation in the kernel's hands.
    fn kernel_status(&self) -> nix::Result<()> {
        // SAFETY: the control block is alive (it is part of `self`).
        unsafe { aio_status(self.cb.get()) }
    }

    fn in_progress(&self) -> bool {
        matches!(self.state, State::Kernel(_)) && self.kernel_status() == Err(Errno::EINPROGRESS)
    }

    /// Calls `aio_return` for a completed operation in the kernel's hands, freeing the kernel's
    /// state, and records its result.
    fn reap(&mut self) {
        if let State::Kernel(err) = self.state {
            // SAFETY: the control block is alive, and the caller checked that the operation is
            // complete (or was never accepted, then the kernel just reports EINVAL).
            let r = syscall!(aio_return(self.cb.get()));
            self.state = match err {
                Some(e) => State::Refused(e),
                None => State::Done(r),
            };
        }
    }

    /// The status reported in [`LioError::EIO`].
    fn status(&self) -> Result<(), Errno> {
        match self.state {
            State::Fresh | State::Again => Err(Errno::EAGAIN),
            State::Nop => Ok(()),
            State::Rejected(e) | State::Kernel(Some(e)) | State::Refused(e) => Err(e),
            State::Kernel(None) => self.kernel_status(),
            State::Done(r) => r.map(drop),
        }
    }

    /// Could this operation not be started at all?
    fn failed(&self) -> bool {
        matches!(
            self.state,
            State::Rejected(_) | State::Kernel(Some(_)) | State::Refused(_)
        )
    }
}

/// A batch of operations submitted with `lio_listio`; see `crate::LioCb`.
pub struct LioCb<'a> {
    /// Never resized: the control blocks must not move while the kernel knows them.
    slots: Box<[Slot]>,
    /// Every pointer array passed to `lio_listio` (see the module doc).
    lists: Vec<Box<[*mut libc::aiocb]>>,
    /// The notification for the batch's completion: none, or a kevent.
    sigev: SigEvent,
    /// With a kevent notification: the kqueue and the token, for `post_event`.
    kevent: Option<(RawFd, usize)>,
    /// Its address identifies our `EVFILT_USER` kevent (see `post_event`); allocated on first use.
    marker: Option<Box<u8>>,
    _bufs: PhantomData<&'a mut [u8]>,
}

// SAFETY: the raw pointers point into our own heap allocations (`slots`, `lists`) and into
// buffers borrowed for `'a` as `&'a mut [u8]` or `&'a [u8]`, which are `Send`; the sigevent only
// carries integers (kqueue fd, token). The kernel state belongs to the process, not the thread.
unsafe impl Send for LioCb<'_> {}
// SAFETY: as above; `&self` methods only read (`len`, and `in_progress` through `aio_error`,
// which does not write the control block); all mutation goes through `&mut self`.
unsafe impl Sync for LioCb<'_> {}

impl<'a> LioCb<'a> {
    /// Builds a batch from the builder's entries. Nothing reaches the kernel yet.
    pub fn new(entries: Vec<LioEntry<'a>>) -> Self {
        LioCb {
            slots: entries.into_iter().map(Slot::new).collect(),
            lists: Vec::new(),
            sigev: SigEvent::new(SigevNotify::SigevNone),
            kevent: None,
            marker: None,
            _bufs: PhantomData,
        }
    }

    /// Starts every operation that can be started, with one `lio_listio`.
    ///
    /// A second `submit` after the kernel accepted operations fails with `LioError::EIO`, in
    /// which those operations have the status `EBUSY`: nothing is started again (use
    /// `resubmit` for operations refused with `EAGAIN`). After `LioError::EAGAIN`, when
    /// nothing was accepted, `submit` may simply be called again.
    pub fn submit(&mut self) -> Result<(), LioError> {
        let started = |s: &Slot| {
            matches!(
                s.state,
                State::Kernel(_) | State::Refused(_) | State::Done(_)
            )
        };
        if self.slots.iter().any(started) {
            let statuses = self
                .slots
                .iter()
                .map(|s| match s.state {
                    State::Kernel(None) | State::Done(Ok(_)) => Err(Errno::EBUSY),
                    _ => s.status(),
                })
                .collect();
            return Err(LioError::EIO(statuses));
        }
        self.start()
    }

    /// Starts the operations the kernel refused for lack of resources, with one new
    /// `lio_listio`. Operations that were accepted before are not run again; those already
    /// complete have their results collected first (`aio_return`), which frees the resources
    /// they held in the kernel.
    pub fn resubmit(&mut self) -> Result<(), LioError> {
        for slot in self.slots.iter_mut() {
            if matches!(slot.state, State::Kernel(_)) && !slot.in_progress() {
                slot.reap();
            }
        }
        self.start()
    }

    /// Hands every `Fresh` or `Again` operation to the kernel and sorts out what it accepted.
    fn start(&mut self) -> Result<(), LioError> {
        let mut list = Vec::new();
        let mut submitted = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if matches!(slot.state, State::Fresh | State::Again) {
                slot.reset_cb();
                list.push(slot.cb.get());
                submitted.push(i);
            }
        }
        if list.is_empty() {
            // Nothing to start: no lio_listio, and `outcome` posts the event.
            return self.outcome(None, 0);
        }
        let list = list.into_boxed_slice();
        let mut sigev = self.sigev.sigevent();
        let nent = libc::c_int::try_from(list.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `list` holds `nent` pointers to live, initialised control blocks that the
        // kernel holds no state for (`Fresh` or `Again`). They stay at the same address until
        // `aio_return` (see the module doc), and so do their buffers. The kernel copies `sigev`
        // and the array itself before returning; we keep the array anyway for its address.
        let call_err = syscall!(lio_listio(
            libc::LIO_NOWAIT,
            list.as_ptr(),
            nent,
            &mut sigev
        ))
        .err();
        self.lists.push(list);

        let mut accepted = 0;
        for i in submitted {
            let slot = &mut self.slots[i];
            slot.state = match call_err {
                None => State::Kernel(None),
                Some(err) => match slot.kernel_status() {
                    Ok(()) | Err(Errno::EINPROGRESS) => State::Kernel(None),
                    Err(Errno::EAGAIN) => State::Again,
                    // FreeBSD reports per-operation failures as EIO (EAGAIN if only resources
                    // ran short); the operation's own error is in its control block.
                    Err(e) if matches!(err, Errno::EIO | Errno::EAGAIN | Errno::EINTR) => {
                        State::Kernel(Some(e))
                    }
                    // The call failed as a whole (bad kqueue, too many operations...): report
                    // its error. `Kernel` keeps the `aio_return`, harmless if nothing started.
                    Err(_) => State::Kernel(Some(err)),
                },
            };
            if slot.state == State::Kernel(None) {
                accepted += 1;
            }
        }
        self.outcome(call_err, accepted)
    }

    /// Maps the result of `lio_listio` like mio-aio 0.7 did, from the state of every operation,
    /// but never panics: an unexpected combination is reported as `EIO` with every status.
    ///
    /// `accepted` is the number of operations this call started: if it is 0, the kernel sends
    /// no event, and one is posted here unless the result is `EAGAIN` (documented as "no
    /// event").
    fn outcome(&mut self, call_err: Option<Errno>, accepted: usize) -> Result<(), LioError> {
        let failed = self.slots.iter().filter(|s| s.failed()).count();
        let again = self
            .slots
            .iter()
            .filter(|s| s.state == State::Again)
            .count();
        let result = if failed > 0 {
            Err(LioError::EIO(self.slots.iter().map(Slot::status).collect()))
        } else if again > 0 && accepted > 0 {
            Err(LioError::EINCOMPLETE)
        } else if again > 0 {
            Err(LioError::EAGAIN)
        } else if call_err.is_some() {
            Err(LioError::EIO(self.slots.iter().map(Slot::status).collect()))
        } else {
            Ok(())
        };
        if accepted == 0 && result != Err(LioError::EAGAIN) {
            self.post_event();
        }
        result
    }

    /// Posts the batch's completion event ourselves (see the module doc), if it is registered.
    /// Errors (a kqueue closed meanwhile) are ignored: nobody could receive the event.
    fn post_event(&mut self) {
        let Some((kq, udata)) = self.kevent else {
            return;
        };
        let marker = self.marker.get_or_insert_with(|| Box::new(0));
        // SAFETY: `kevent` is a plain C struct for which all zeroes is valid.
        let mut kev: libc::kevent = unsafe { mem::zeroed() };
        // Unique among live batches: the address of our own allocation.
        kev.ident = &**marker as *const u8 as libc::uintptr_t;
        kev.filter = libc::EVFILT_USER;
        kev.flags = libc::EV_ADD | libc::EV_ONESHOT;
        kev.fflags = libc::NOTE_TRIGGER;
        // The token, handed back unchanged like the `udata` of the kernel's own events.
        kev.udata = udata as *mut libc::c_void;
        // SAFETY: one valid change record, no event list, no timeout.
        unsafe { libc::kevent(kq, &kev, 1, std::ptr::null_mut(), 0, std::ptr::null()) };
    }

    /// Whether any operation of the batch is still running.
    pub fn in_progress(&self) -> bool {
        self.slots.iter().any(Slot::in_progress)
    }

    /// The number of operations.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Consumes the batch and hands each operation's result, in order, to `f`, after waiting
    /// for any operation still in flight.
    pub fn into_results<F, R>(mut self, f: F) -> R
    where
        F: FnOnce(Box<dyn Iterator<Item = LioResult> + 'a>) -> R,
    {
        let results = self.finish(false);
        // Every kernel state is released: dropping `self` now has nothing left to wait for.
        drop(self);
        f(Box::new(results.into_iter()))
    }

    /// Waits for (after cancelling, if `cancel`) every operation in the kernel's hands, calls
    /// `aio_return` for it, and returns every operation's result.
    fn finish(&mut self, cancel: bool) -> Vec<LioResult> {
        if cancel {
            for slot in self.slots.iter_mut().filter(|s| s.in_progress()) {
                // SAFETY: the control block is alive. Most file systems cannot cancel; the
                // wait below then lasts until the operation completes.
                unsafe { libc::aio_cancel(slot.fd, slot.cb.get()) };
            }
        }
        self.slots
            .iter_mut()
            .map(|slot| {
                if matches!(slot.state, State::Kernel(_)) {
                    // SAFETY: the control block is alive (it is part of `slot`).
                    unsafe { wait_until_done(slot.cb.get()) };
                    slot.reap();
                }
                let result = match slot.state {
                    // Never submitted: what `aio_return` reports for an unknown control block.
                    State::Fresh => Err(Errno::EINVAL),
                    State::Again => Err(Errno::EAGAIN),
                    State::Nop => Ok(0),
                    State::Rejected(e) | State::Refused(e) => Err(e),
                    State::Done(r) => r,
                    State::Kernel(_) => unreachable!("reaped above"),
                };
                LioResult { result }
            })
            .collect()
    }

    fn set_notify(&mut self, sev: SigevNotify) {
        // The kernel copies the notification at `lio_listio`, so changing it while operations
        // are in flight only affects a later `resubmit`.
        self.kevent = match sev {
            SigevNotify::SigevKeventFlags { kq, udata, .. } => {
                Some((kq.as_raw_fd(), udata as usize))
            }
            _ => None,
        };
        self.sigev = SigEvent::new(sev);
    }

    /// Asks for the batch's completion event on `registry`'s kqueue, from the next
    /// `submit`/`resubmit` on. Never fails.
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        self.set_notify(kevent_notify(registry.as_fd(), usize::from(token)));
        Ok(())
    }

    /// Like `register`.
    pub fn reregister(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        self.register(registry, token)
    }

    /// Asks for no completion event, from the next `submit`/`resubmit` on.
    pub fn deregister(&mut self, _registry: &Registry) -> io::Result<()> {
        self.set_notify(SigevNotify::SigevNone);
        Ok(())
    }

    /// Like `register`, for tokio.
    #[cfg(feature = "tokio")]
    pub fn register_raw(&mut self, kq: BorrowedFd, udata: usize) {
        self.set_notify(kevent_notify(kq, udata));
    }

    /// Like `deregister`, for tokio.
    #[cfg(feature = "tokio")]
    pub fn deregister_raw(&mut self) {
        self.set_notify(SigevNotify::SigevNone);
    }
}

impl Drop for LioCb<'_> {
    /// Operations in flight are cancelled and waited for, so that the kernel is done with the
    /// buffers and control blocks before they are released.
    fn drop(&mut self) {
        if self
            .slots
            .iter()
            .any(|s| matches!(s.state, State::Kernel(_)))
        {
            self.finish(true);
        }
    }
}

impl fmt::Debug for LioCb<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let states: Vec<State> = self.slots.iter().map(|s| s.state).collect();
        f.debug_struct("LioCb")
            .field("states", &states)
            .field("lists", &self.lists.len())
            .finish()
    }
}
