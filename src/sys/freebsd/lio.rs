//! Batches: one `lio_listio(2)` over control blocks that live on the heap.
//!
//! Invariants that make the raw pointers below sound:
//!
//! * The control blocks live in a boxed slice that is never resized or reallocated, so their
//!   addresses stay fixed even when the `LioCb` is moved. The kernel holds such an address from
//!   the `lio_listio` that accepted the operation until our `aio_return` for it.
//! * An operation whose state is `State::Kernel` may have kernel state, and the kernel may
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
//! What the kernel's answers mean, and what a submission reports, is decided in
//! `crate::lio_book` (plain logic, unit-tested on every OS). In short: an entry whose control
//! block reads `EINPROGRESS` after the call was queued (even one that already failed), one that
//! reads `EAGAIN` waits for `resubmit`, any other was refused for good. A round carries at most
//! `vfs.aio.max_aio_queue_per_proc` entries (the kernel refuses a longer list as a whole); the
//! rest wait for `resubmit`, reported as `EINCOMPLETE`.
//!
//! The batch's event goes through a kqueue of the batch's own (`batch_event.rs`), so that the
//! user sees it once per submission although FreeBSD's `EVFILT_LIO` is level-triggered. When
//! the kernel sends no event (nothing was queued: an empty batch, all `LIO_NOP`, every entry
//! refused for good), the backend posts one there itself, so that a registered batch always
//! gets its event after `submit` or `resubmit` returns `Ok` or `EIO`.

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

use super::{
    aio_status,
    batch_event::{queue_limit, BatchKq},
    kevent_notify, wait_until_done,
};
use crate::{
    lio::{LioBuf, LioEntry, LioError, LioOpcode, LioResult},
    lio_book::{classify, needs_stand_in, outcome, round_len, Entry, State},
};

/// The offset of the private error word (`_aiocb_private.error`) in `struct aiocb`, which the
/// libc crate does not expose by name. `<aio.h>`: `aio_reqprio` (an `int`) is followed by
/// `struct __aiocb_private { long status; long error; void *kernelinfo; }`, then
/// `aio_sigevent`; the assertion below checks that layout.
const ERROR_WORD: usize = {
    let after_prio = mem::offset_of!(libc::aiocb, aio_reqprio) + mem::size_of::<libc::c_int>();
    let status =
        after_prio.div_ceil(mem::align_of::<libc::c_long>()) * mem::align_of::<libc::c_long>();
    status + mem::size_of::<libc::c_long>()
};
const _: () = assert!(
    ERROR_WORD + mem::size_of::<libc::c_long>() + mem::size_of::<*mut libc::c_void>()
        == mem::offset_of!(libc::aiocb, aio_sigevent)
);

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

    /// The control block's private error word, which `lio_listio` leaves `EINPROGRESS` exactly
    /// for an operation it queued (see `crate::lio_book`).
    fn error_word(&self) -> i64 {
        // SAFETY: `ERROR_WORD` is the offset of an aligned `long` inside the live control block
        // (checked against libc's layout at compile time); it was initialised (zeroed) by
        // `reset_cb` and since written only by the kernel, during the `lio_listio` call that
        // has returned.
        let word = unsafe {
            self.cb
                .get()
                .cast::<u8>()
                .add(ERROR_WORD)
                .cast::<libc::c_long>()
                .read()
        };
        // `long` is 32 bits on some FreeBSD targets.
        #[allow(clippy::useless_conversion)]
        i64::from(word)
    }

    fn in_progress(&self) -> bool {
        self.state == State::Kernel && self.kernel_status() == Err(Errno::EINPROGRESS)
    }

    /// Calls `aio_return` for a completed operation in the kernel's hands, freeing the kernel's
    /// state, and records its result.
    fn reap(&mut self) {
        if self.state == State::Kernel {
            // SAFETY: the control block is alive, and the caller checked that the operation is
            // complete.
            let r = syscall!(aio_return(self.cb.get()));
            self.state = State::Done(r);
        }
    }

    /// The status reported in [`LioError::EIO`].
    fn status(&self) -> Result<(), Errno> {
        self.state.status(|| self.kernel_status())
    }
}

/// A batch of operations submitted with `lio_listio`; see `crate::LioCb`.
pub struct LioCb<'a> {
    /// Never resized: the control blocks must not move while the kernel knows them.
    slots: Box<[Slot]>,
    /// Every pointer array passed to `lio_listio` (see the module doc).
    lists: Vec<Box<[*mut libc::aiocb]>>,
    /// The registration: the user's kqueue and the token.
    kevent: Option<(RawFd, usize)>,
    /// The batch's own kqueue (`batch_event.rs`), from the first registered submission until
    /// the batch is gone. Declared after `slots`, and only dropped after every operation has
    /// been returned (`finish`).
    kq: Option<BatchKq>,
    _bufs: PhantomData<&'a mut [u8]>,
}

// SAFETY: the raw pointers point into our own heap allocations (`slots`, `lists`) and into
// buffers borrowed for `'a` as `&'a mut [u8]` or `&'a [u8]`, which are `Send`; the rest are
// descriptors and integers. The kernel state belongs to the process, not the thread.
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
            kevent: None,
            kq: None,
            _bufs: PhantomData,
        }
    }

    /// Starts every operation that can be started, with one `lio_listio` (or several rounds,
    /// see the module doc).
    ///
    /// A second `submit` after the kernel accepted operations fails with `LioError::EIO`, in
    /// which those operations have the status `EBUSY`: nothing is started again (use
    /// `resubmit` for operations refused with `EAGAIN`). After `LioError::EAGAIN`, when
    /// nothing was accepted, `submit` may simply be called again.
    pub fn submit(&mut self) -> Result<(), LioError> {
        if self.slots.iter().any(|s| s.state.started()) {
            let statuses = self
                .slots
                .iter()
                .map(|s| match s.state {
                    State::Kernel | State::Done(Ok(_)) => Err(Errno::EBUSY),
                    _ => s.status(),
                })
                .collect();
            return Err(LioError::EIO(statuses));
        }
        self.start()
    }

    /// Starts the operations the kernel refused for lack of resources (or left for a later
    /// round), with one new `lio_listio`. Operations that were accepted before are not run
    /// again; those already complete have their results collected first (`aio_return`), which
    /// frees the resources they held in the kernel.
    pub fn resubmit(&mut self) -> Result<(), LioError> {
        for slot in self.slots.iter_mut() {
            if slot.state == State::Kernel && !slot.in_progress() {
                slot.reap();
            }
        }
        self.start()
    }

    /// Hands the next round of `Fresh` or `Again` operations to the kernel and sorts out what
    /// it accepted.
    fn start(&mut self) -> Result<(), LioError> {
        let pending: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].state.to_start())
            .collect();
        let n = round_len(pending.len(), queue_limit());
        for &i in &pending[n..] {
            self.slots[i].state = State::Again;
        }
        let round = &pending[..n];
        let accepted = match self.notification() {
            Ok(_) if round.is_empty() => 0,
            Ok(mut sigev) => self.listio(round, &mut sigev),
            Err(e) => {
                // No event could be arranged (no kqueue left, the user's kqueue closed): the
                // round fails as a whole, as `lio_listio` would with a bad kqueue.
                let e = e.raw_os_error().map_or(Errno::EINVAL, Errno::from_raw);
                for &i in round {
                    self.slots[i].state = Entry::Failed(e).into();
                }
                0
            }
        };
        let result = outcome(self.slots.iter().map(|s| s.state), accepted);
        if needs_stand_in(result, accepted) {
            if let Some(kq) = &self.kq {
                kq.post_stand_in();
            }
        }
        result.into_result(|| self.slots.iter().map(Slot::status).collect())
    }

    /// The notification of the next `lio_listio`: none, or a kevent to the batch's own kqueue,
    /// which the user's kqueue is (re)armed to report once.
    fn notification(&mut self) -> io::Result<libc::sigevent> {
        let Some((user_kq, udata)) = self.kevent else {
            return Ok(SigEvent::new(SigevNotify::SigevNone).sigevent());
        };
        let kq = match self.kq.take() {
            Some(kq) => kq,
            None => BatchKq::new()?,
        };
        // A stand-in posted for an earlier round must not report this one.
        kq.clear_stand_in();
        let armed = kq.arm(user_kq, udata);
        let sigev = SigEvent::new(kevent_notify(kq.as_fd(), udata)).sigevent();
        self.kq = Some(kq);
        armed.map(|()| sigev)
    }

    /// One `lio_listio` for the operations `round` (indices of `Fresh` or `Again` slots);
    /// returns how many the kernel queued.
    fn listio(&mut self, round: &[usize], sigev: &mut libc::sigevent) -> usize {
        let mut list = Vec::with_capacity(round.len());
        for &i in round {
            let slot = &mut self.slots[i];
            slot.reset_cb();
            list.push(slot.cb.get());
        }
        let list = list.into_boxed_slice();
        let nent = libc::c_int::try_from(list.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `list` holds `nent` pointers to live, initialised control blocks that the
        // kernel holds no state for (`Fresh` or `Again`). They stay at the same address until
        // `aio_return` (see the module doc), and so do their buffers. The kernel copies `sigev`
        // and the array itself before returning; we keep the array anyway for its address.
        let call = syscall!(lio_listio(libc::LIO_NOWAIT, list.as_ptr(), nent, sigev)).map(drop);
        self.lists.push(list);
        let mut accepted = 0;
        for &i in round {
            let slot = &mut self.slots[i];
            let entry = classify(call, slot.error_word());
            accepted += usize::from(entry == Entry::Accepted);
            slot.state = entry.into();
        }
        accepted
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
        // Every kernel state is released: dropping `self` now has nothing left to wait for,
        // and closes the batch's kqueue with any event not yet delivered.
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
                if slot.state == State::Kernel {
                    // SAFETY: the control block is alive (it is part of `slot`).
                    unsafe { wait_until_done(slot.cb.get()) };
                    slot.reap();
                }
                let result = slot.state.result().expect("reaped above");
                LioResult { result }
            })
            .collect()
    }

    fn set_notify(&mut self, kevent: Option<(RawFd, usize)>) {
        // Operations in flight keep notifying the batch's kqueue; the user's kqueue is (re)armed
        // with this registration at the next `submit`/`resubmit`.
        self.kevent = kevent;
    }

    /// Asks for the batch's completion event on `registry`'s kqueue, from the next
    /// `submit`/`resubmit` on. Never fails.
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        self.set_notify(Some((registry.as_fd().as_raw_fd(), usize::from(token))));
        Ok(())
    }

    /// Like `register`.
    pub fn reregister(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        self.register(registry, token)
    }

    /// Asks for no completion event, from the next `submit`/`resubmit` on.
    pub fn deregister(&mut self, _registry: &Registry) -> io::Result<()> {
        self.set_notify(None);
        Ok(())
    }

    /// Like `register`, for tokio.
    #[cfg(feature = "tokio")]
    pub fn register_raw(&mut self, kq: BorrowedFd, udata: usize) {
        self.set_notify(Some((kq.as_raw_fd(), udata)));
    }

    /// Like `deregister`, for tokio.
    #[cfg(feature = "tokio")]
    pub fn deregister_raw(&mut self) {
        self.set_notify(None);
    }
}

impl Drop for LioCb<'_> {
    /// Operations in flight are cancelled and waited for, so that the kernel is done with the
    /// buffers and control blocks before they are released.
    fn drop(&mut self) {
        if self.slots.iter().any(|s| s.state == State::Kernel) {
            self.finish(true);
        }
        // Then `kq` closes, with any event the user has not received yet.
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
