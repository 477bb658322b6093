//! The io_uring engine.
//!
//! A single read whose data is in the page cache never gets here: the driver does it at once
//! (`nowait`). Single operations go to a few shared rings (`ring.rs`), one per CPU: each thread
//! keeps to one ring, whose lock it holds while it pushes its SQEs and enters the kernel, so
//! that threads on different CPUs never wait for each other, and each thread submits exactly
//! its own requests: io_uring finishes a request with work run on the thread that submitted it,
//! which therefore waits for its requests before it exits (`thread_exit.rs`).
//!
//! Batches (`LioCb`) get a small ring of their own, taken from a pool. Their requests go in
//! unlinked, after an `IORING_OP_TIMEOUT` whose completion count is the batch's size, hard-linked
//! to one write to the batch's notifier: the kernel completes the timeout when the batch's last
//! CQE is posted, and the write wakes epoll once. The batch costs one `io_uring_enter`, with no
//! thread of ours (nor of io_uring's, as `IOSQE_IO_DRAIN` would) woken.
//!
//! Reads and writes of local `O_DIRECT` files (single ones, and batches made only of them) go
//! to kernel AIO instead (`direct.rs`), whose completions do not interrupt the submitting
//! thread's `epoll_wait`.

mod direct;
mod ring;
mod thread_exit;

use std::{
    cell::Cell,
    io,
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, OnceLock,
    },
};

use io_uring::{opcode, Probe};
use nix::{errno::Errno, sys::aio::AioCancelStat};

use self::{
    direct::{Direct, Route},
    ring::{Ring, UringOp},
};
use super::{
    config::{Backend, Config},
    engine::{Answer, Completion, Engine, InFlight, Request, Signalling, Started},
    kaio::KaioOp,
    notify::Notifier,
    policy::Classifier,
};

/// Submission queue entries: small, because every submission is pushed to the kernel at once.
const SQ_ENTRIES: u32 = 256;
/// io_uring's upper bound on completion queue entries.
const MAX_CQ_ENTRIES: u32 = 65536;

/// The engine: rings shared by single operations, and a pool of rings for batches.
pub(crate) struct Uring {
    /// The rings for single operations.
    /// Each thread submits to one of them, chosen at its first submission, round-robin: a
    /// ring's lock is held across `io_uring_enter`, in which the kernel runs cached reads
    /// inline, so threads sharing one ring would take turns (measured: two tokio workers
    /// reading from the page cache spent 40% of their time waiting for each other). As many
    /// as there are CPUs (at most `MAX_SHARDS`), created on first use; the first one always
    /// exists. One only with SQPOLL, which polls each ring with a kernel thread of its own.
    shards: Box<[OnceLock<Arc<Ring>>]>,
    /// Completion queue size of the shards after the first.
    shard_cq_entries: u32,
    batch_rings: Mutex<Vec<Arc<Ring>>>,
    /// `Config::uring_async`: every request to io_uring's workers.
    all_async: bool,
    /// Kernel AIO, for reads and writes of `O_DIRECT` files (see `direct`).
    direct: Direct,
}

/// The most rings for single operations.
const MAX_SHARDS: usize = 8;

/// The next shard to hand to a thread that has not submitted yet.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard number (modulo the number of shards), once it has submitted.
    static SHARD: Cell<Option<usize>> = const { Cell::new(None) };
}
/// The most requests a batch ring takes in one submission: io_uring's largest submission queue
/// (32,768 entries) less the batch's counting timeout and signal write. The driver submits a
/// larger batch in rounds (`EINCOMPLETE`), as it does past the in-flight limit.
const MAX_BATCH_RING: usize = 32766;
/// Idle batch rings kept for reuse.
const BATCH_POOL_MAX: usize = 8;
/// The pool keeps at most one batch ring larger than this (submission entries): a full-size
/// one holds 3 MiB of queues, but creating it costs more than submitting 16,384 cached reads.
const LARGE_RING_ENTRIES: usize = 4096;
impl std::fmt::Debug for Uring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shards: Vec<_> = self.shards.iter().filter_map(OnceLock::get).collect();
        f.debug_struct("Uring").field("shards", &shards).finish()
    }
}
impl Uring {
    /// Sets up the first ring, with room in the completion queue for every operation in flight
    /// (each may post two CQEs: its own and its notifier write's). Later rings share the room
    /// out: a thread that puts more in flight on its ring than the ring's completion queue
    /// holds makes the kernel keep the excess in its overflow list, which reaping flushes.
    pub(crate) fn new(config: &Config) -> io::Result<Uring> {
        let cq_entries = u32::try_from(config.max_in_flight().saturating_mul(2))
            .unwrap_or(MAX_CQ_ENTRIES)
            .clamp(2 * SQ_ENTRIES, MAX_CQ_ENTRIES)
            .next_power_of_two();
        let sqpoll_idle_ms = config
            .uring_sqpoll()
            .map(|idle| u32::try_from(idle.as_millis()).unwrap_or(u32::MAX));
        let all_async = config.uring_async();
        let first = Ring::new(SQ_ENTRIES, cq_entries, sqpoll_idle_ms, None, all_async)?;
        let unsupported = || io::Error::new(io::ErrorKind::Unsupported, "io_uring is too old");
        if !first.ring.params().is_feature_nodrop() {
            return Err(unsupported());
        }
        let mut probe = Probe::new();
        first.ring.submitter().register_probe(&mut probe)?;
        let needed = [
            opcode::Read::CODE,
            opcode::Write::CODE,
            opcode::Readv::CODE,
            opcode::Writev::CODE,
            opcode::Fsync::CODE,
            opcode::AsyncCancel::CODE,
            opcode::Nop::CODE,
        ];
        if !needed.iter().all(|&op| probe.is_supported(op)) {
            return Err(unsupported());
        }
        let count = if sqpoll_idle_ms.is_some() {
            1
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_SHARDS))
        };
        let shards: Box<[OnceLock<Arc<Ring>>]> = (0..count).map(|_| OnceLock::new()).collect();
        let _ = shards[0].set(Arc::new(first));
        Ok(Uring {
            shards,
            shard_cq_entries: (cq_entries / count as u32)
                .max(2 * SQ_ENTRIES)
                .next_power_of_two(),
            batch_rings: Mutex::new(Vec::new()),
            all_async,
            direct: Direct::new(config, sqpoll_idle_ms.is_none() && !all_async),
        })
    }

    fn first(&self) -> &Arc<Ring> {
        self.shards[0].get().expect("created by Uring::new")
    }

    /// The ring this thread submits single operations to. If a new ring cannot be created (no
    /// file descriptor left, say), the first ring serves.
    fn ring_for_this_thread(&self) -> Arc<Ring> {
        let n = SHARD
            .try_with(|s| match s.get() {
                Some(n) => n,
                None => {
                    let n = NEXT_SHARD.fetch_add(1, Ordering::Relaxed);
                    s.set(Some(n));
                    n
                }
            })
            // A thread-local destructor submitting: any ring will do.
            .unwrap_or(0);
        let slot = &self.shards[n % self.shards.len()];
        if let Some(ring) = slot.get() {
            return ring.clone();
        }
        let fd = self.first().ring.as_raw_fd();
        match Ring::new(
            SQ_ENTRIES,
            self.shard_cq_entries,
            None,
            Some(fd),
            self.all_async,
        ) {
            // If another thread created it meanwhile, `set` fails and drops this one unused.
            Ok(ring) => slot.get_or_init(|| Arc::new(ring)).clone(),
            Err(_) => self.first().clone(),
        }
    }

    /// A ring of its own for a batch of `len` requests (plus its signal), from the pool
    /// when one is big enough. It shares the first ring's kernel workers.
    fn batch_ring(&self, len: usize) -> io::Result<Arc<Ring>> {
        // The batch, plus its counting timeout and signal write.
        let needed = len + 2;
        {
            let mut pool = self.batch_rings.lock().unwrap_or_else(|e| e.into_inner());
            // The smallest that fits, so that a small batch leaves a large ring to large ones.
            let fitting = (0..pool.len()).filter(|&i| pool[i].capacity() >= needed);
            if let Some(i) = fitting.min_by_key(|&i| pool[i].capacity()) {
                return Ok(pool.swap_remove(i));
            }
        }
        let entries = needed.next_power_of_two().max(64) as u32;
        let first_fd = self.first().ring.as_raw_fd();
        Ring::new(entries, 2 * entries, None, Some(first_fd), self.all_async).map(Arc::new)
    }

    /// Takes back a batch ring once everything it was given has completed. The shared rings
    /// of single operations are never pooled (nor waited for).
    fn recycle(&self, ring: Arc<Ring>) {
        if self
            .shards
            .iter()
            .any(|s| s.get().is_some_and(|r| Arc::ptr_eq(r, &ring)))
        {
            return;
        }
        ring.settle();
        if Arc::strong_count(&ring) == 1 {
            let mut pool = self.batch_rings.lock().unwrap_or_else(|e| e.into_inner());
            let large = |r: &Ring| r.capacity() > LARGE_RING_ENTRIES;
            if pool.len() < BATCH_POOL_MAX && !(large(&ring) && pool.iter().any(|r| large(r))) {
                pool.push(ring);
            }
        }
    }
}

impl Uring {
    /// The kernel AIO engine, if `op` is one of its requests (see `direct`).
    fn kaio_of(&self, op: &dyn InFlight) -> Option<&super::kaio::Kaio> {
        op.as_any()
            .downcast_ref::<KaioOp>()
            .and(self.direct.existing())
    }
}

impl Engine for Uring {
    fn backend(&self) -> Backend {
        Backend::IoUring
    }

    fn signalling(&self) -> Signalling {
        Signalling::Kernel
    }

    /// A request that goes to kernel AIO is signalled as kernel AIO's are.
    fn signalling_for(&self, r: &Request) -> Signalling {
        if self.direct.decide(r) {
            Signalling::Reaper
        } else {
            Signalling::Kernel
        }
    }

    fn batch_capacity(&self) -> usize {
        MAX_BATCH_RING
    }

    /// A batch of `O_DIRECT` reads and writes goes to kernel AIO, as separate completions.
    fn batch_capacity_for(&self, requests: &[Request]) -> usize {
        if self.direct.decide_batch(requests) {
            0
        } else {
            MAX_BATCH_RING
        }
    }

    unsafe fn submit_one(&self, c: Completion) -> Result<Started, Errno> {
        let (c, files) = match self.direct.take(&c.request) {
            // SAFETY: this function's contract.
            Route::Kaio(kaio, files) => match unsafe { kaio.submit_classified(c, files, false) } {
                Ok(op) => return Ok(op),
                // Kernel AIO's context is full (it holds fewer requests than io_uring may
                // have in flight): io_uring runs this one, as it runs either signalling.
                Err((Errno::EAGAIN, Some(c))) => (c, Classifier::default()),
                Err((e, _)) => return Err(e),
            },
            Route::Uring(files) => (c, files),
        };
        let op = UringOp::new(c, &self.ring_for_this_thread());
        op.ring.submit(std::slice::from_ref(&op), None, files)?;
        thread_exit::track(std::slice::from_ref(&op), false);
        Ok(op)
    }

    unsafe fn submit(&self, batch: Vec<Completion>) -> Result<Vec<Started>, Errno> {
        if let Some(kaio) = self.direct.take_batch(&batch) {
            // SAFETY: this function's contract.
            return unsafe { kaio.submit(batch) };
        }
        let ring = self.ring_for_this_thread();
        let ops: Vec<Arc<UringOp>> = batch.into_iter().map(|c| UringOp::new(c, &ring)).collect();
        let accepted = ring.submit(&ops, None, Classifier::default())?;
        thread_exit::track(&ops[..accepted], false);
        Ok(ops
            .into_iter()
            .take(accepted)
            .map(|op| op as Started)
            .collect())
    }

    /// A ring of the batch's own: the kernel signals the notifier after the last request (a
    /// counting timeout), without waking any thread of ours.
    unsafe fn submit_signalled_batch(
        &self,
        batch: Vec<Completion>,
        notifier: Option<&Arc<Notifier>>,
    ) -> Result<Vec<Started>, Errno> {
        let ring = self
            .batch_ring(batch.len())
            .map_err(super::engine::io_errno)?;
        let ops: Vec<Arc<UringOp>> = batch.into_iter().map(|c| UringOp::new(c, &ring)).collect();
        // A batch ring has room for the whole batch, so all of it is queued (only a failing
        // io_uring_enter could stop it half way, and what is queued runs).
        let accepted = ring.submit(&ops, notifier, Classifier::default())?;
        thread_exit::track(&ops[..accepted], true);
        Ok(ops.into_iter().map(|op| op as Started).collect())
    }

    /// Records what every shared ring has finished (the reaper thread's job, for batches
    /// larger than a batch ring).
    fn reap(&self) {
        for ring in self.shards.iter().filter_map(OnceLock::get) {
            ring.reap();
        }
        if let Some(kaio) = self.direct.existing() {
            kaio.reap();
        }
    }

    /// Reaps each distinct ring of `ops` once.
    fn reap_for(&self, ops: &[&dyn InFlight]) {
        let mut reaped: Vec<*const Ring> = Vec::new();
        let mut kaio_reaped = false;
        for op in ops {
            if let Some(op) = op.as_any().downcast_ref::<UringOp>() {
                if !reaped.contains(&Arc::as_ptr(&op.ring)) {
                    op.ring.reap();
                    reaped.push(Arc::as_ptr(&op.ring));
                }
            } else if let (false, Some(kaio)) = (kaio_reaped, self.kaio_of(*op)) {
                kaio.reap();
                kaio_reaped = true;
            }
        }
    }

    fn wait(&self, op: &dyn InFlight) {
        if let Some(uring_op) = op.as_any().downcast_ref::<UringOp>() {
            uring_op.ring.wait(uring_op.completion());
        } else if let Some(kaio) = self.kaio_of(op) {
            kaio.wait(op);
        }
    }

    fn cancel(&self, op: &Started, answer: Answer) -> AioCancelStat {
        if let Some(uring_op) = op.as_any().downcast_ref::<UringOp>() {
            uring_op.ring.cancel(uring_op, answer)
        } else if let Some(kaio) = self.kaio_of(&**op) {
            kaio.cancel(op, answer)
        } else {
            AioCancelStat::AioNotCanceled
        }
    }

    /// Gives the batch rings of a finished batch back to the pool.
    fn release(&self, ops: Vec<Started>) {
        let mut rings: Vec<Arc<Ring>> = Vec::new();
        for op in &ops {
            if let Some(op) = op.as_any().downcast_ref::<UringOp>() {
                if !rings.iter().any(|r| Arc::ptr_eq(r, &op.ring)) {
                    rings.push(op.ring.clone());
                }
            }
        }
        // The operations hold the rings too: only a ring nothing else holds is pooled.
        drop(ops);
        for ring in rings {
            self.recycle(ring);
        }
    }
}
