//! The driver: one per process, owning the chosen engine, the notifier pool and the count of
//! operations in flight. Operations reach it through [`Driver::get`].
//!
//! Completion state is shared between an operation and the engine through an
//! `Arc<Completion>`: the engine holds one reference for as long as the kernel (or a worker
//! thread) may still touch the operation's buffers, and drops it only after recording the result.

use std::{
    io,
    os::fd::RawFd,
    ptr,
    sync::{
        atomic::{AtomicBool, AtomicI64, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering},
        Arc, Once, OnceLock,
    },
    time::Duration,
};

use nix::{errno::Errno, sys::aio::AioCancelStat};

use super::{
    kaio::Kaio,
    notify::{Notifier, NotifierPool},
    nowait, stream,
    threads::ThreadPool,
    uring::{self, Uring},
    Backend,
};

/// What a request asks the kernel to do.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum OpKind {
    Read,
    Write,
    Readv,
    Writev,
    Fsync,
    Fdatasync,
    Nop,
}

/// One request as the engines see it: plain pointers into buffers that the owning operation
/// borrows for its whole life.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Request {
    pub kind: OpKind,
    pub fd: RawFd,
    pub offset: u64,
    /// The buffer (`Read`, `Write`) or the iovec array (`Readv`, `Writev`).
    pub addr: *mut u8,
    /// Bytes (`Read`, `Write`) or iovec count (`Readv`, `Writev`).
    pub len: usize,
}

// SAFETY: a Request is only plain data; the buffers it points to are borrowed (for reads,
// mutably) by the operation that owns the request for at least as long as any thread may use the
// pointers, because an operation's drop waits for its completion.
unsafe impl Send for Request {}
// SAFETY: as above; the request itself is never mutated while shared.
unsafe impl Sync for Request {}

const IN_FLIGHT: u8 = 0;
const DONE: u8 = 1;

/// Several operations that are reported by one event: a batch.
#[derive(Debug)]
pub(crate) struct Group {
    remaining: AtomicUsize,
    notifier: Option<Arc<Notifier>>,
}

impl Group {
    pub(crate) fn new(count: usize, notifier: Option<Arc<Notifier>>) -> Arc<Group> {
        Arc::new(Group {
            remaining: AtomicUsize::new(count),
            notifier,
        })
    }

    /// Counts `n` operations as done (or as never started); the last one signals.
    pub(crate) fn finished(&self, n: usize) {
        if n > 0 && self.remaining.fetch_sub(n, Ordering::AcqRel) == n {
            if let Some(n) = &self.notifier {
                n.signal();
            }
        }
    }
}

/// Whether the notifier of an operation that is done before `submit` returns is signalled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Announce {
    /// Always: the event is the caller's only news (a mio loop).
    Always,
    /// Only if the operation is still running when `submit` returns: the caller checks for
    /// completion right after `submit` (the tokio layer), and an unsignalled eventfd goes back
    /// to its pool without a `read` to reset it.
    IfStillRunning,
}

/// The shared state of one submitted request.
#[derive(Debug)]
pub(crate) struct Completion {
    pub request: Request,
    /// Notifier the kernel signals itself when the request completes (io_uring linked write,
    /// kernel AIO resfd).
    pub kernel_signal: Option<Arc<Notifier>>,
    /// Notifier signalled from user space when the result is recorded.
    pub user_signal: Option<Arc<Notifier>>,
    pub group: Option<Arc<Group>>,
    /// The io_uring ring the request went to: the submitting thread's shared ring, or a batch
    /// ring. `None` with the other engines.
    pub ring: Option<Arc<uring::Ring>>,
    pub driver: &'static Driver,
    /// io_uring: set while the linked write that signals `kernel_signal` has not posted its
    /// CQE, so that a submitting thread that exits can wait for it (`uring::thread_exit`).
    pub signal_write_pending: AtomicBool,
    state: AtomicU8,
    result: AtomicI64,
    /// Kernel AIO's control block, which must stay at a fixed address while in flight.
    pub iocb: std::cell::UnsafeCell<libc::iocb>,
}

// SAFETY: `iocb` is written only by the kernel-AIO engine before the completion is shared with the
// kernel, and read by the kernel; every other field is immutable or atomic.
unsafe impl Sync for Completion {}
// SAFETY: as above.
unsafe impl Send for Completion {}

impl Completion {
    /// Records the result (`>= 0`, or `-errno`) and tells whoever waits. Called exactly once
    /// (or `record` instead).
    pub(crate) fn finish(&self, res: i64) {
        self.record(res);
        if let Some(n) = &self.user_signal {
            n.signal();
        }
        if let Some(g) = &self.group {
            g.finished(1);
        }
    }

    /// Records the result without telling anyone.
    fn record(&self, res: i64) {
        self.result.store(res, Ordering::Relaxed);
        self.state.store(DONE, Ordering::Release);
        self.driver.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn is_done(&self) -> bool {
        self.state.load(Ordering::Acquire) == DONE
    }

    /// The result, once done: bytes, or the error.
    pub(crate) fn result(&self) -> nix::Result<usize> {
        debug_assert!(self.is_done());
        let res = self.result.load(Ordering::Relaxed);
        if res < 0 {
            Err(Errno::from_raw(-res as i32))
        } else {
            Ok(res as usize)
        }
    }

    /// Whether this completion belongs to the driver of this process (not a parent's, across
    /// `fork`).
    pub(crate) fn is_ours(&self) -> bool {
        self.driver.generation == fork_generation()
    }

    /// Records finished results (of this request's ring or engine) without blocking.
    pub(crate) fn reap(&self) {
        match &self.ring {
            Some(r) => r.reap(),
            None => self.driver.engine.reap(),
        }
    }

    /// Blocks until done: used when an operation is dropped or its results are collected early.
    pub(crate) fn wait(&self) {
        if !self.is_ours() {
            return;
        }
        while !self.is_done() {
            match &self.ring {
                Some(r) => r.wait(self),
                None => self.driver.engine.wait(self),
            }
        }
    }

    /// Asks the engine to cancel the request, and reports what happened (see `stream`).
    pub(crate) fn cancel(self: &Arc<Self>) -> AioCancelStat {
        if !self.is_ours() {
            return AioCancelStat::AioAllDone;
        }
        self.reap();
        if self.is_done() {
            return stream::answer_for_done(self);
        }
        match &self.ring {
            Some(r) => r.cancel(self),
            None => self.driver.engine.cancel(self),
        }
    }
}

/// The mechanism that moves requests to the kernel and results back.
#[derive(Debug)]
pub(crate) enum Engine {
    Uring(Box<Uring>),
    Kaio(Kaio),
    Threads(ThreadPool),
}

impl Engine {
    /// Starts `batch`, all or a prefix: returns how many were accepted (0 with an error).
    ///
    /// # Safety
    /// As for [`Driver::submit_one`], for every request.
    unsafe fn submit(&self, batch: &[Arc<Completion>], announce: Announce) -> Result<usize, Errno> {
        if let [c] = batch {
            // A single read from the page cache is done here and now: kernel AIO would do
            // the same work inside `io_submit`, the pool on a worker (see `nowait`).
            // SAFETY: the caller's contract covers the request's buffers.
            if let Some(res) = unsafe { nowait::read_cached(&c.request) } {
                if announce == Announce::IfStillRunning && c.group.is_none() {
                    c.record(res);
                } else {
                    c.finish(res);
                    // io_uring's notifier is signalled by the kernel, which never saw this.
                    if let (Engine::Uring(_), Some(n)) = (self, &c.kernel_signal) {
                        n.signal();
                    }
                }
                return Ok(1);
            }
        }
        match self {
            Engine::Uring(e) => e.submit(batch),
            Engine::Kaio(e) => e.submit(batch),
            Engine::Threads(e) => e.submit(batch),
        }
    }

    /// Records the results of finished requests without blocking.
    pub(crate) fn reap(&self) {
        match self {
            Engine::Uring(e) => e.reap(),
            Engine::Kaio(e) => e.reap(),
            Engine::Threads(_) => {}
        }
    }

    /// Blocks for a while (until some request completes or a short timeout), recording results.
    fn wait(&self, c: &Completion) {
        match self {
            Engine::Uring(e) => e.wait(c),
            Engine::Kaio(e) => e.wait(c),
            Engine::Threads(e) => e.wait(c),
        }
    }

    fn cancel(&self, c: &Arc<Completion>) -> AioCancelStat {
        match self {
            Engine::Uring(e) => e.cancel(c),
            Engine::Kaio(e) => e.cancel(c),
            Engine::Threads(e) => e.cancel(c),
        }
    }

    fn backend(&self) -> Backend {
        match self {
            Engine::Uring(_) => Backend::IoUring,
            Engine::Kaio(_) => Backend::KernelAio,
            Engine::Threads(_) => Backend::ThreadPool,
        }
    }

    /// Whether the kernel signals notifiers itself; otherwise the engine signals them from user
    /// space when it records a result.
    fn kernel_signals(&self) -> bool {
        matches!(self, Engine::Uring(_))
    }
}

/// The default bound on operations in flight per process; `MIO_AIO_MAX_IN_FLIGHT` overrides it.
const DEFAULT_MAX_IN_FLIGHT: usize = 16384;

/// The per-process state behind every operation.
#[derive(Debug)]
pub(crate) struct Driver {
    pub engine: Engine,
    pub pool: &'static NotifierPool,
    pub in_flight: AtomicUsize,
    pub max_in_flight: usize,
    /// The fork generation this driver was made in.
    pub generation: u64,
    /// Wakes the reaper thread; signalled by the kernel for batch operations (io_uring) or for
    /// every operation (kernel AIO), whose results are recorded from user space.
    reaper: OnceLock<Arc<Notifier>>,
}

static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);
static CURRENT: AtomicPtr<Driver> = AtomicPtr::new(ptr::null_mut());
static REQUESTED: AtomicU8 = AtomicU8::new(0);
static ATFORK: Once = Once::new();

extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// Counts `fork`s into child processes, so that a child never uses its parent's rings.
pub(crate) fn fork_generation() -> u64 {
    FORK_GENERATION.load(Ordering::Relaxed)
}

fn backend_code(b: Option<Backend>) -> u8 {
    match b {
        None => 0,
        Some(Backend::IoUring) => 1,
        Some(Backend::KernelAio) => 2,
        Some(Backend::ThreadPool) => 3,
    }
}

/// Forces the backend for drivers created from now on (see `crate::set_backend`).
pub(crate) fn request_backend(backend: Backend) -> io::Result<()> {
    let current = CURRENT.load(Ordering::Acquire);
    // SAFETY: CURRENT only ever holds null or a leaked, never freed `Driver`.
    match unsafe { current.as_ref() } {
        Some(d) if d.generation == fork_generation() && d.backend() != backend => {
            Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("mio-aio already uses the {} backend", d.backend()),
            ))
        }
        _ => {
            REQUESTED.store(backend_code(Some(backend)), Ordering::Relaxed);
            Ok(())
        }
    }
}

/// The backend asked for by `set_backend` or `MIO_AIO_BACKEND`, if any.
fn requested_backend() -> io::Result<Option<Backend>> {
    match REQUESTED.load(Ordering::Relaxed) {
        1 => return Ok(Some(Backend::IoUring)),
        2 => return Ok(Some(Backend::KernelAio)),
        3 => return Ok(Some(Backend::ThreadPool)),
        _ => {}
    }
    match std::env::var("MIO_AIO_BACKEND") {
        Err(_) => Ok(None),
        Ok(name) if name.is_empty() || name == "auto" => Ok(None),
        Ok(name) => name.parse().map(Some).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("MIO_AIO_BACKEND={name:?}: expected io_uring, kaio, threads or auto"),
            )
        }),
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl Driver {
    /// The driver of this process, created on first use (and again in a forked child).
    pub(crate) fn get() -> io::Result<&'static Driver> {
        let current = CURRENT.load(Ordering::Acquire);
        // SAFETY: CURRENT only ever holds null or a leaked, never freed `Driver`.
        if let Some(d) = unsafe { current.as_ref() } {
            if d.generation == fork_generation() {
                return Ok(d);
            }
        }
        Self::create(current)
    }

    #[cold]
    fn create(seen: *mut Driver) -> io::Result<&'static Driver> {
        ATFORK.call_once(|| {
            // SAFETY: registers a child handler that only touches an atomic.
            unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
        });
        let generation = fork_generation();
        let max_in_flight = env_usize("MIO_AIO_MAX_IN_FLIGHT", DEFAULT_MAX_IN_FLIGHT).max(1);
        let pool: &'static NotifierPool = Box::leak(Box::default());
        let engine = match requested_backend()? {
            Some(Backend::IoUring) => Engine::Uring(Box::new(Uring::new(max_in_flight)?)),
            Some(Backend::KernelAio) => Engine::Kaio(Kaio::new(max_in_flight)?),
            Some(Backend::ThreadPool) => Engine::Threads(ThreadPool::new()),
            None => match Uring::new(max_in_flight) {
                Ok(u) => Engine::Uring(Box::new(u)),
                Err(_) => match Kaio::new(max_in_flight) {
                    Ok(k) => Engine::Kaio(k),
                    Err(_) => Engine::Threads(ThreadPool::new()),
                },
            },
        };
        let driver = Box::into_raw(Box::new(Driver {
            engine,
            pool,
            in_flight: AtomicUsize::new(0),
            max_in_flight,
            generation,
            reaper: OnceLock::new(),
        }));
        match CURRENT.compare_exchange(seen, driver, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                // SAFETY: just published; never freed from now on.
                let driver: &'static Driver = unsafe { &*driver };
                if matches!(driver.engine, Engine::Kaio(_)) {
                    // Kernel AIO needs the reaper for every operation: start it now, while
                    // descriptors and threads are available, rather than fail a later submit.
                    driver.reaper()?;
                }
                Ok(driver)
            }
            Err(winner) => {
                // Another thread created one first: ours was never shared, so free it.
                // SAFETY: `driver` came from Box::into_raw above and nothing else saw it.
                drop(unsafe { Box::from_raw(driver) });
                // SAFETY: CURRENT only ever holds leaked drivers.
                let winner = unsafe { &*winner };
                if winner.generation == generation {
                    Ok(winner)
                } else {
                    Self::create(winner as *const Driver as *mut Driver)
                }
            }
        }
    }

    pub(crate) fn backend(&self) -> Backend {
        self.engine.backend()
    }

    /// A fresh notifier for one operation or batch.
    pub(crate) fn notifier(&'static self) -> io::Result<Notifier> {
        Notifier::new(self.pool, self.generation)
    }

    /// The notifier the kernel signals to wake the reaper thread, which starts on first use.
    fn reaper(&'static self) -> io::Result<Arc<Notifier>> {
        if let Some(n) = self.reaper.get() {
            return Ok(n.clone());
        }
        let n = Arc::new(Notifier::private(self.pool, false)?);
        if self.reaper.set(n.clone()).is_ok() {
            let wake = n.clone();
            std::thread::Builder::new()
                .name("mio-aio-reaper".into())
                .spawn(move || loop {
                    wake.wait();
                    self.engine.reap();
                })?;
        }
        Ok(self.reaper.get().expect("set above").clone())
    }

    /// Starts one operation; `notifier` (if any) is signalled when it completes (see
    /// [`Announce`]).
    ///
    /// # Safety
    /// The request's buffers must stay valid, and not otherwise accessed, until its completion
    /// is done.
    pub(crate) unsafe fn submit_one(
        &'static self,
        request: Request,
        notifier: Option<&Arc<Notifier>>,
        announce: Announce,
    ) -> Result<Arc<Completion>, Errno> {
        let mut started = self.start(&[request], notifier, None, announce)?;
        Ok(started.pop().expect("one request, accepted"))
    }

    /// Starts a batch: `notifier` (if any) is signalled once, when all of the started requests
    /// have completed. Returns the completions of the accepted prefix (all of them, unless the
    /// queue is too full) or, when none was accepted, the error.
    ///
    /// # Safety
    /// As for [`Driver::submit_one`], for every request.
    pub(crate) unsafe fn submit_batch(
        &'static self,
        requests: &[Request],
        notifier: Option<&Arc<Notifier>>,
    ) -> Result<Vec<Arc<Completion>>, Errno> {
        if let Engine::Uring(u) = &self.engine {
            let count = requests.len().min(self.room()).min(uring::MAX_BATCH_RING);
            if count > 0 {
                // A ring of the batch's own: the kernel signals the notifier after the last
                // request (a counting timeout), without waking any thread of ours. What does not
                // fit is left for another round (`EINCOMPLETE`).
                let ring = (self.pool)
                    .retry_on_emfile(|| u.batch_ring(count))
                    .map_err(io_errno)?;
                let completions =
                    self.completions(&requests[..count], None, None, None, Some(&ring));
                self.in_flight.fetch_add(count, Ordering::Relaxed);
                return match ring.submit(&completions, notifier) {
                    // A batch ring has room for the whole batch, so all of it is queued (only a
                    // failing io_uring_enter could stop it half way, and what is queued runs).
                    Ok(_) => Ok(completions),
                    Err(e) => {
                        self.in_flight.fetch_sub(count, Ordering::Relaxed);
                        Err(e)
                    }
                };
            }
        }
        let group = Group::new(requests.len(), notifier.cloned());
        self.start(requests, None, Some(&group), Announce::Always)
    }

    /// Operations that may still start before the queue is full.
    fn room(&self) -> usize {
        self.max_in_flight
            .saturating_sub(self.in_flight.load(Ordering::Relaxed))
    }

    fn completions(
        &'static self,
        requests: &[Request],
        kernel_signal: Option<&Arc<Notifier>>,
        user_signal: Option<&Arc<Notifier>>,
        group: Option<&Arc<Group>>,
        ring: Option<&Arc<uring::Ring>>,
    ) -> Vec<Arc<Completion>> {
        requests
            .iter()
            .map(|&request| {
                Arc::new(Completion {
                    request,
                    kernel_signal: kernel_signal.cloned(),
                    user_signal: user_signal.cloned(),
                    group: group.cloned(),
                    ring: ring.cloned(),
                    driver: self,
                    signal_write_pending: AtomicBool::new(false),
                    state: AtomicU8::new(IN_FLIGHT),
                    result: AtomicI64::new(0),
                    // SAFETY: iocb is plain old data; all-zero is its empty value.
                    iocb: std::cell::UnsafeCell::new(unsafe { std::mem::zeroed() }),
                })
            })
            .collect()
    }

    /// Starts `requests` on the engine, one completion each: `notifier` is signalled for each
    /// (single operations) or, with `group`, once for all (batches).
    ///
    /// # Safety
    /// As for [`Driver::submit_one`], for every request.
    unsafe fn start(
        &'static self,
        requests: &[Request],
        notifier: Option<&Arc<Notifier>>,
        group: Option<&Arc<Group>>,
        announce: Announce,
    ) -> Result<Vec<Arc<Completion>>, Errno> {
        let count = requests.len().min(self.room());
        if count == 0 {
            return Err(Errno::EAGAIN);
        }
        // Who signals: the kernel, straight to the operation's notifier (io_uring, single
        // operation), or user space after recording the result; for kernel AIO and for batches
        // the kernel wakes the reaper thread, which records results and signals.
        let needs_reaper = matches!(self.engine, Engine::Kaio(_))
            || (self.engine.kernel_signals() && group.is_some());
        let reaper = if needs_reaper {
            Some(self.reaper().map_err(io_errno)?)
        } else {
            None
        };
        let kernel_signal = match &reaper {
            Some(r) => Some(r),
            None if self.engine.kernel_signals() => notifier,
            None => None,
        };
        let kernel_signals_op = kernel_signal.is_some() && reaper.is_none();
        let user_signal = notifier.filter(|_| group.is_none() && !kernel_signals_op);
        let ring = match &self.engine {
            Engine::Uring(u) => Some(u.ring_for_this_thread()),
            _ => None,
        };
        let completions = self.completions(
            &requests[..count],
            kernel_signal,
            user_signal,
            group,
            ring.as_ref(),
        );
        self.in_flight.fetch_add(count, Ordering::Relaxed);
        // SAFETY: this function's contract covers every request.
        let accepted = match unsafe { self.engine.submit(&completions, announce) } {
            Ok(n) => n,
            Err(e) => {
                self.in_flight.fetch_sub(count, Ordering::Relaxed);
                return Err(e);
            }
        };
        self.in_flight
            .fetch_sub(count - accepted, Ordering::Relaxed);
        if let (Some(g), true) = (group, accepted > 0) {
            // The batch's event must wait only for the operations that were started.
            g.finished(requests.len() - accepted);
        }
        let mut completions = completions;
        completions.truncate(accepted);
        if accepted == 0 {
            return Err(Errno::EAGAIN);
        }
        Ok(completions)
    }

    /// Gives back the batch rings of finished batches.
    pub(crate) fn recycle(&self, ring: Arc<uring::Ring>) {
        if let Engine::Uring(u) = &self.engine {
            u.recycle(ring);
        }
    }
}

/// The errno inside an `io::Error` (EIO when it has none).
pub(crate) fn io_errno(e: io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// How long one blocking wait inside the engines lasts before it rechecks: short enough that a
/// result recorded by another thread is noticed promptly.
pub(crate) const WAIT_SLICE: Duration = Duration::from_millis(10);
