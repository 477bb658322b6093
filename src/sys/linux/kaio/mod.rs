//! The kernel AIO engine (`io_setup` / `io_submit` / `io_getevents`), used where io_uring is
//! refused (Docker's default seccomp profile, `kernel.io_uring_disabled`, …).
//!
//! Each request becomes one `iocb`, stored next to its `Completion` in a [`KaioOp`] (so its
//! address is stable for `io_cancel`), whose `aio_data` is a leaked `Arc<KaioOp>`: the engine's
//! reference, given back when the request's event is reaped. Every iocb carries `IOCB_FLAG_RESFD` with the
//! driver's reaper eventfd, which the kernel signals straight from its completion path; the
//! reaper thread then calls [`Kaio::reap`], which records results and signals each operation's
//! own notifier from user space (`Completion::finish`).
//! The driver starts that thread before the engine takes its first request, and refuses to
//! submit without it.
//!
//! # Never blocking the submitter
//! Buffered I/O runs synchronously inside `io_submit` (a 64 MiB uncached read took 50-280 ms
//! inside the call on this kind of machine), so reads and writes are submitted with
//! `RWF_NOWAIT`. Whatever the kernel cannot do without blocking comes back (measured on Linux
//! 6.18, ext4) as a completion event with `-EAGAIN` (uncached pages; O_DIRECT writes that
//! extend the file or overlap cached pages) or `-EOPNOTSUPP` (ext4 buffered writes), or is
//! refused synchronously by `io_submit` with `EOPNOTSUPP` (files without `FMODE_NOWAIT`: tmpfs,
//! procfs, sysfs, FUSE, …). All of these are handed, as the same `Arc<KaioOp>`, to a private
//! [`ThreadPool`] whose workers run the plain blocking call and record its result. A NOWAIT read
//! can also come back *short* when only its beginning was cached; the pool then redoes it whole.
//! (A single read whose data is all cached never gets here: the driver does it with
//! `preadv2(RWF_NOWAIT)` first, see `nowait`.)
//! `FSYNC`/`FDSYNC` run truly asynchronously and take no `RWF_NOWAIT` (the kernel refuses it);
//! files without an fsync method refuse them synchronously (EINVAL), and the pool reports that.
//!
//! `io_submit` reports a synchronous failure only for the first iocb it could not start (it
//! returns the count started before it). `EAGAIN` there means the context is full (no request
//! slot); any other error belongs to that one iocb, which goes to the pool, and submission goes
//! on with the next.
//!
//! # Waiting and cancelling
//! `io_getevents` is thread-safe and delivers each event once, so any thread may reap. A
//! completion handed to the pool is remembered (by address, with a `Weak` that keeps the address
//! from being reused) so that [`Kaio::wait`] and [`Kaio::cancel`] know to ask the pool.
//! `io_cancel` cannot cancel file I/O (Linux only cancels `IOCB_CMD_POLL` and USB gadget
//! requests; reads get EINVAL), so a request in the kernel is reported as not cancelled. Reads
//! and writes on streams (pipes, sockets) that would block come back with EAGAIN and wait in the
//! pool, where they can be cancelled.
//!
//! The user-space completion ring (the context id is its address) is not read directly: every
//! consumer would have to advance its head with atomics, which the kernel's own `io_getevents`
//! (needed for blocking waits) does not use, so mixing the two could deliver an event twice.
//!
//! After `fork`, the child's use of the context fails with EINVAL; the driver makes a fresh
//! engine in a child, so the parent's is never used there.

use std::{
    any::Any,
    cell::UnsafeCell,
    collections::HashMap,
    io,
    ops::Deref,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, Weak,
    },
    time::Duration,
};

use nix::{errno::Errno, sys::aio::AioCancelStat};

use super::{
    config::{Backend, Config},
    engine::{
        address, answer_for_done, answer_within_bound, Answer, Completion, Engine, InFlight,
        OpKind, Signalling, Started, CANCEL_WAIT, WAIT_SLICE,
    },
    nowait,
    policy::Classifier,
    threads::ThreadPool,
};

mod ffi;

use ffi::{AioContext, IoEvent};

/// The largest context asked for. `/proc/sys/fs/aio-max-nr` (65536 by default) bounds the sum
/// over all contexts of the system, so one process should not take much of it. The kernel makes
/// room for at least this many requests in flight (in practice about twice as many).
const MAX_EVENTS: usize = 4096;
/// The smallest context tried when the system's AIO budget is nearly used up.
const MIN_EVENTS: usize = 16;
/// Events fetched per `io_getevents` call (a 2 KiB buffer on the stack).
const REAP_BATCH: usize = 64;
/// How often the handed-off table is swept at least (in entries).
const SWEEP_MIN: usize = 64;

/// One request in kernel AIO's hands: the shared completion and the engine's control block.
#[derive(Debug)]
pub(crate) struct KaioOp {
    completion: Completion,
    /// The control block, which must stay at a fixed address while in flight (`io_cancel`
    /// names the request by it).
    iocb: UnsafeCell<libc::iocb>,
}

// SAFETY: `iocb` is written only by `Kaio::prepare`, before the `KaioOp` is shared with the
// kernel or any other thread, and afterwards only read (by the kernel, and by `io_cancel`);
// every field of `completion` is immutable or atomic.
unsafe impl Sync for KaioOp {}
// SAFETY: as above.
unsafe impl Send for KaioOp {}

impl Deref for KaioOp {
    type Target = Completion;
    fn deref(&self) -> &Completion {
        &self.completion
    }
}

impl InFlight for KaioOp {
    fn completion(&self) -> &Completion {
        &self.completion
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl KaioOp {
    fn new(completion: Completion) -> Arc<KaioOp> {
        Arc::new(KaioOp {
            completion,
            // SAFETY: iocb is plain old data; all-zero is its empty value.
            iocb: UnsafeCell::new(unsafe { std::mem::zeroed() }),
        })
    }
}

/// Completions handed to the thread pool, by address. The `Weak` keeps the allocation (not the
/// value) alive, so an address in the table can never name a newer completion. The flag says
/// whether the kernel had already moved some bytes (a short `RWF_NOWAIT` transfer that the pool
/// redoes whole): such a request has started and is never cancelled, so that `ECANCELED` always
/// means that no byte moved.
#[derive(Debug, Default)]
struct HandedOff {
    map: HashMap<usize, (Weak<KaioOp>, bool)>,
    /// Sweep finished entries when the table grows to this size.
    sweep_at: usize,
}

#[derive(Debug)]
pub(crate) struct Kaio {
    /// The context, set up for `nr` requests: the kernel accepts at least that many in flight
    /// (with `nr` = 1, 16, 64, 256 it took 120, 120, 248, 632), then `io_submit` fails with
    /// EAGAIN, which is the only synchronous EAGAIN it gives.
    ctx: AioContext,
    /// Requests the kernel accepted whose events have not been fetched yet.
    in_kernel: AtomicUsize,
    /// Runs what the kernel would block on (and what it refuses).
    pool: ThreadPool,
    handed: Mutex<HandedOff>,
}

impl Kaio {
    /// Sets up a context for `max_in_flight` requests (at most [`MAX_EVENTS`]), smaller if the
    /// system's AIO budget is short. Fails, so that the driver can fall back to the thread pool,
    /// if no context can be made or the AIO system calls are refused (seccomp, `CONFIG_AIO=n`).
    pub(crate) fn new(config: &Config) -> io::Result<Kaio> {
        let mut nr = config.max_in_flight().clamp(1, MAX_EVENTS);
        let ctx = loop {
            match ffi::io_setup(nr as u32) {
                Ok(ctx) => break ctx,
                // EAGAIN: `aio-max-nr` would be exceeded; ENOMEM: no memory for the ring.
                Err(Errno::EAGAIN | Errno::ENOMEM) if nr > MIN_EVENTS => {
                    nr = (nr / 2).max(MIN_EVENTS)
                }
                Err(e) => return Err(e.into()),
            }
        };
        let kaio = Kaio {
            ctx,
            in_kernel: AtomicUsize::new(0),
            pool: ThreadPool::new(config.max_threads()),
            handed: Mutex::new(HandedOff {
                map: HashMap::new(),
                sweep_at: SWEEP_MIN,
            }),
        };
        // A filter may allow io_setup but refuse the others: try each once (dropping `kaio`
        // destroys the context on failure).
        // SAFETY: an empty submission names no iocb.
        unsafe { ffi::io_submit(ctx, &mut []) }?;
        ffi::io_getevents(ctx, 0, &mut [IoEvent::default()], Some(Duration::ZERO))?;
        Ok(kaio)
    }

    /// Starts a prefix of `batch`: each request goes to the kernel (or, where the kernel refuses
    /// it, to the pool); `Nop`s finish at once. Stops when the context is full; fails with EAGAIN
    /// only when not even the first request could start.
    /// `reap_inline`: record what completed inside `io_submit` before returning (see below).
    fn start(
        &self,
        batch: &[Arc<KaioOp>],
        mut files: Classifier,
        reap_inline: bool,
    ) -> Result<usize, Errno> {
        let mut accepted = 0;
        // Files whose server the kernel may wait for despite RWF_NOWAIT go to the pool.
        while accepted < batch.len() {
            let rest = &batch[accepted..];
            if rest[0].request.kind == OpKind::Nop {
                rest[0].finish(0);
                accepted += 1;
                continue;
            }
            if files.kaio_worker(rest[0].request.fd) {
                if self.hand_off(rest[0].clone(), false).is_err() {
                    break;
                }
                accepted += 1;
                continue;
            }
            let run = rest
                .iter()
                .position(|c| c.request.kind == OpKind::Nop || files.kaio_worker(c.request.fd))
                .unwrap_or(rest.len());
            let (started, full) = self.submit_run(&rest[..run]);
            accepted += started;
            if full {
                break;
            }
        }
        // Cached reads complete inside io_submit, and so do NOWAIT requests that would block
        // (their EAGAIN event): record the former and hand the latter to the pool now, from this
        // thread, rather than after the reaper thread has woken up (3x the QD1 rate of cached
        // 4 KiB reads here). A caller whose requests are all O_DIRECT skips it: they hardly
        // ever complete inside the call, and the reaper thread, which their events wake,
        // records what does.
        if reap_inline {
            self.reap_some();
        }
        if accepted == 0 && !batch.is_empty() {
            Err(Errno::EAGAIN)
        } else {
            Ok(accepted)
        }
    }

    /// Submits requests that all need the kernel. Returns how many were started (a prefix) and
    /// whether submission had to stop there.
    fn submit_run(&self, run: &[Arc<KaioOp>]) -> (usize, bool) {
        let mut iocbs: Vec<*mut libc::iocb> = run.iter().map(|c| self.prepare(c)).collect();
        // Counted before the kernel can complete any of them, so the count never underflows.
        self.in_kernel.fetch_add(run.len(), Ordering::AcqRel);
        let mut done = 0;
        let mut reaped_for_room = false;
        while done < run.len() {
            // SAFETY: every iocb was filled by `prepare` from a request whose buffers stay valid
            // until its completion is done (the contract of `Engine::submit`), and lives
            // inside its `KaioOp`, which the leaked `Arc` in `aio_data` keeps alive until its event.
            match unsafe { ffi::io_submit(self.ctx, &mut iocbs[done..]) } {
                Ok(n) if n > 0 => {
                    done += n;
                    reaped_for_room = false;
                }
                Ok(_) | Err(Errno::EAGAIN) => {
                    // The context is full. Events already in its ring still hold their slots:
                    // reaping frees them, so try once more after that.
                    if !reaped_for_room && self.reap_some() > 0 {
                        reaped_for_room = true;
                        continue;
                    }
                    self.unsubmitted(&iocbs[done..]);
                    return (done, true);
                }
                Err(Errno::EINTR) => {}
                Err(_) => {
                    // The kernel refused this one iocb by itself (no RWF_NOWAIT support, no
                    // fsync method, bad fd, …): the pool runs the plain system call, which
                    // either works or reports the real error.
                    let c = self.take_back(iocbs[done]);
                    if let Err(c) = self.hand_off(c, false) {
                        // No worker can start: treat it like a full queue.
                        drop(c);
                        self.unsubmitted(&iocbs[done + 1..]);
                        return (done, true);
                    }
                    done += 1;
                }
            }
        }
        (done, false)
    }

    /// Fills the completion's iocb and leaks one `Arc` into its `aio_data`.
    fn prepare(&self, c: &Arc<KaioOp>) -> *mut libc::iocb {
        let r = &c.request;
        let (opcode, nowait) = match r.kind {
            OpKind::Read => (ffi::IOCB_CMD_PREAD, true),
            OpKind::Write => (ffi::IOCB_CMD_PWRITE, true),
            OpKind::Readv => (ffi::IOCB_CMD_PREADV, true),
            OpKind::Writev => (ffi::IOCB_CMD_PWRITEV, true),
            OpKind::Fsync => (ffi::IOCB_CMD_FSYNC, false),
            OpKind::Fdatasync => (ffi::IOCB_CMD_FDSYNC, false),
            OpKind::Nop => unreachable!("Nops never reach the kernel"),
        };
        let iocb = c.iocb.get();
        // SAFETY: the `KaioOp` was just made for this submission and no other thread or kernel
        // request has seen it, so this is the only access to its iocb (zeroed by
        // `KaioOp::new`). After io_submit the kernel has copied what it needs and only
        // `io_cancel` reads the iocb again (its `aio_key`, left 0 as the kernel requires).
        unsafe {
            let cb = &mut *iocb;
            cb.aio_data = Arc::into_raw(c.clone()) as u64;
            cb.aio_lio_opcode = opcode;
            cb.aio_fildes = r.fd as u32;
            if opcode != ffi::IOCB_CMD_FSYNC && opcode != ffi::IOCB_CMD_FDSYNC {
                // fsync iocbs must leave buf, nbytes, offset and rw_flags zero (else EINVAL).
                cb.aio_buf = r.addr as u64;
                cb.aio_nbytes = r.len as u64;
                cb.aio_offset = r.offset as i64;
            }
            if nowait {
                cb.aio_rw_flags = ffi::RWF_NOWAIT;
            }
            if let Some(n) = &c.kernel_signal {
                cb.aio_flags = ffi::IOCB_FLAG_RESFD;
                cb.aio_resfd = n.fd() as u32;
                n.will_be_signalled();
            }
        }
        iocb
    }

    /// Gives back the `Arc` leaked into an iocb the kernel did not take.
    fn take_back(&self, iocb: *mut libc::iocb) -> Arc<KaioOp> {
        self.in_kernel.fetch_sub(1, Ordering::AcqRel);
        // SAFETY: `iocb` lies inside a `KaioOp` kept alive by the `Arc` leaked into its
        // `aio_data` by `prepare`; the kernel did not accept it, so nothing else reads or gives
        // back that `Arc`, and the kernel no longer touches the iocb.
        unsafe { Arc::from_raw((*iocb).aio_data as *const KaioOp) }
    }

    /// Gives back the `Arc`s of iocbs that were never submitted.
    fn unsubmitted(&self, iocbs: &[*mut libc::iocb]) {
        for &iocb in iocbs {
            drop(self.take_back(iocb));
        }
    }

    /// Hands a request to the pool (remembering that it did), or gives it back if no worker
    /// can start.
    /// `started`: the kernel already moved some of its bytes.
    fn hand_off(&self, c: Arc<KaioOp>, started: bool) -> Result<(), Arc<KaioOp>> {
        let key = Arc::as_ptr(&c) as usize;
        {
            let mut h = self.handed.lock().unwrap();
            h.map.insert(key, (Arc::downgrade(&c), started));
            if h.map.len() >= h.sweep_at {
                h.map
                    .retain(|_, (w, _)| w.upgrade().is_some_and(|c| !c.is_done()));
                h.sweep_at = (2 * h.map.len()).max(SWEEP_MIN);
            }
        }
        let job: Started = c.clone();
        match self.pool.queue(std::slice::from_ref(&job)) {
            Ok(()) => Ok(()),
            Err(_) => {
                self.handed.lock().unwrap().map.remove(&key);
                Err(c)
            }
        }
    }

    fn is_handed_off(&self, c: &dyn InFlight) -> bool {
        self.handed_off(c).is_some()
    }

    /// Whether `c` was handed to the pool, and if so whether it had started (see `HandedOff`).
    fn handed_off(&self, c: &dyn InFlight) -> Option<bool> {
        self.handed
            .lock()
            .unwrap()
            .map
            .get(&address(c))
            .map(|&(_, started)| started)
    }

    /// Cancels a request handed to the pool, unless it had already started.
    fn cancel_handed_off(&self, c: &Started, started: bool, answer: Answer) -> AioCancelStat {
        if !started {
            self.pool.cancel(c, answer)
        } else if answer == Answer::Wanted {
            answer_within_bound(c.completion(), || self.wait_for(&**c))
                .unwrap_or(AioCancelStat::AioNotCanceled)
        } else {
            AioCancelStat::AioNotCanceled
        }
    }

    /// Fetches and records every event waiting in the ring; returns how many.
    fn reap_some(&self) -> usize {
        let mut total = 0;
        loop {
            let n = self.fetch(0, Duration::ZERO);
            total += n;
            if n < REAP_BATCH {
                return total;
            }
        }
    }

    /// Fetches up to [`REAP_BATCH`] events, waiting up to `timeout` for at least `min_nr`, and
    /// records them; returns how many.
    fn fetch(&self, min_nr: usize, timeout: Duration) -> usize {
        let mut events = [IoEvent::default(); REAP_BATCH];
        // EINTR, or EINVAL in a forked child (never reached: the child makes its own engine),
        // count as no events.
        let n = ffi::io_getevents(self.ctx, min_nr, &mut events, Some(timeout)).unwrap_or(0);
        if n > 0 {
            self.in_kernel.fetch_sub(n, Ordering::AcqRel);
        }
        for ev in &events[..n] {
            self.complete(ev);
        }
        n
    }

    /// Records one event, or hands its request to the pool when the kernel could not do it
    /// without blocking.
    fn complete(&self, ev: &IoEvent) {
        // SAFETY: `data` was made by `Arc::into_raw` in `prepare`, and the kernel delivers each
        // accepted iocb's event exactly once, so this gives back that one reference.
        let c = unsafe { Arc::from_raw(ev.data as *const KaioOp) };
        if nowait::needs_blocking_call(&c.request, ev.res) {
            if let Err(c) = self.hand_off(c, ev.res > 0) {
                c.finish(ev.res);
            }
            return;
        }
        c.finish(ev.res);
    }

    /// Waits up to one time slice for progress, recording results: in the kernel's queue, or in
    /// the pool's if the request was handed to it.
    fn wait_for(&self, c: &dyn InFlight) {
        self.reap_some();
        if c.is_done() {
            return;
        }
        if self.is_handed_off(c) {
            self.pool.wait(c);
        } else if self.in_kernel.load(Ordering::Acquire) == 0 {
            // Another thread has fetched its event and is recording it or handing it off.
            std::thread::sleep(Duration::from_micros(50));
        } else {
            // Another thread may fetch our event first: that is why the wait is bounded.
            self.fetch(1, WAIT_SLICE);
        }
    }

    /// Cancels a request still queued in the pool; one in the kernel cannot be cancelled.
    fn cancel_op(&self, c: &Started, answer: Answer) -> AioCancelStat {
        let Some(op) = c.as_any().downcast_ref::<KaioOp>() else {
            return AioCancelStat::AioNotCanceled;
        };
        if c.is_done() {
            return answer_for_done(c.completion());
        }
        if let Some(started) = self.handed_off(&**c) {
            return self.cancel_handed_off(c, started, answer);
        }
        // SAFETY: the iocb lives inside `op`, which the caller's `Arc` keeps alive; the kernel
        // only reads its `aio_key`.
        match unsafe { ffi::io_cancel(self.ctx, op.iocb.get()) } {
            // The kernel called the file's cancel method (none of the files this crate is meant
            // for has one): the event still comes through the ring, with whatever result that
            // method chose, which need not be ECANCELED. So report it as still in progress.
            Ok(()) | Err(Errno::EINPROGRESS) => AioCancelStat::AioNotCanceled,
            // EINVAL: not cancellable, or no longer in the kernel (perhaps handed off since).
            // Its event may be on its way to the pool (a stream that would block comes back
            // with EAGAIN, and whoever fetched it hands it off): wait a bounded time for that.
            Err(_) => {
                let deadline = std::time::Instant::now() + CANCEL_WAIT;
                loop {
                    self.reap_some();
                    if c.is_done() {
                        return answer_for_done(c.completion());
                    }
                    if let Some(started) = self.handed_off(&**c) {
                        return self.cancel_handed_off(c, started, answer);
                    }
                    if answer == Answer::NotWanted || std::time::Instant::now() >= deadline {
                        return AioCancelStat::AioNotCanceled;
                    }
                    self.wait_for(&**c);
                }
            }
        }
    }
}

impl Kaio {
    /// Starts one request whose file `files` may already know (io_uring's hand-over of
    /// `O_DIRECT` files, `uring/direct.rs`, classified it; `reap_inline` as for `start`). If it
    /// could not start, gives the completion back with the error where nothing else holds it
    /// (always, for EAGAIN: the context is full), so that the caller can run it elsewhere.
    ///
    /// # Safety
    /// As for [`Engine::submit_one`].
    pub(crate) unsafe fn submit_classified(
        &self,
        c: Completion,
        files: Classifier,
        reap_inline: bool,
    ) -> Result<Started, (Errno, Option<Completion>)> {
        let op = KaioOp::new(c);
        match self.start(std::slice::from_ref(&op), files, reap_inline) {
            Ok(_) => Ok(op),
            Err(e) => Err((e, Arc::try_unwrap(op).ok().map(|op| op.completion))),
        }
    }
}

impl Engine for Kaio {
    fn backend(&self) -> Backend {
        Backend::KernelAio
    }

    fn signalling(&self) -> Signalling {
        Signalling::Reaper
    }

    unsafe fn submit_one(&self, c: Completion) -> Result<Started, Errno> {
        // SAFETY: this function's contract.
        unsafe { self.submit_classified(c, Classifier::default(), true) }.map_err(|(e, _)| e)
    }

    unsafe fn submit(&self, batch: Vec<Completion>) -> Result<Vec<Started>, Errno> {
        let ops: Vec<Arc<KaioOp>> = batch.into_iter().map(KaioOp::new).collect();
        let accepted = self.start(&ops, Classifier::default(), true)?;
        Ok(ops
            .into_iter()
            .take(accepted)
            .map(|op| op as Started)
            .collect())
    }

    fn reap(&self) {
        self.reap_some();
    }

    fn wait(&self, op: &dyn InFlight) {
        self.wait_for(op)
    }

    fn cancel(&self, op: &Started, answer: Answer) -> AioCancelStat {
        self.cancel_op(op, answer)
    }
}

impl Drop for Kaio {
    /// Only a driver that lost a creation race is ever dropped, before any submission; drivers
    /// in use are leaked for the life of the process.
    fn drop(&mut self) {
        ffi::io_destroy(self.ctx);
    }
}
