//! The driver: one per process, owning the chosen engine, the notifier pool, the count of
//! operations in flight and the reaper thread. Operations reach it through [`Driver::get`].
//!
//! It chooses the engine (from [`ENGINES`], with the settings of `config.rs`), decides who
//! signals each operation's notifier (from the engine's [`Signalling`]), and does a single read
//! whose data is all in the page cache itself, before any engine sees it (`nowait.rs`).

use std::{
    io, ptr,
    sync::{
        atomic::{AtomicPtr, AtomicUsize, Ordering},
        Arc, Mutex, OnceLock,
    },
};

use nix::errno::Errno;

use super::{
    config::{self, Backend, Config},
    engine::{io_errno, Completion, Engine, Group, Origin, Request, Signalling, Started},
    fork,
    kaio::Kaio,
    notify::{Loudness, Notifier, NotifierPool},
    nowait,
    threads::ThreadPool,
    uring::Uring,
};

/// Makes an engine with the driver's settings.
type MakeEngine = fn(&Config) -> io::Result<Box<dyn Engine>>;

/// Every engine, in the order the automatic choice tries them. A new engine is one entry here
/// (and its `Backend` variant).
const ENGINES: &[(Backend, MakeEngine)] = &[
    (Backend::IoUring, |c| Ok(Box::new(Uring::new(c)?))),
    (Backend::KernelAio, |c| Ok(Box::new(Kaio::new(c)?))),
    (Backend::ThreadPool, |c| {
        Ok(Box::new(ThreadPool::new(c.max_threads())))
    }),
];

/// The per-process state behind every operation.
#[derive(Debug)]
pub(crate) struct Driver {
    origin: Origin,
    pub pool: &'static NotifierPool,
    config: Config,
    /// Wakes the reaper thread; signalled by the kernel for batch operations (io_uring) or for
    /// every operation (kernel AIO), whose results are recorded from user space. Set only once
    /// the thread runs.
    reaper: OnceLock<Arc<Notifier>>,
    /// Held while the reaper thread is being started.
    starting_reaper: Mutex<()>,
}

/// A completion's notifiers: the one the kernel signals, the one signalled from user space.
type Signals = (Option<Arc<Notifier>>, Option<Arc<Notifier>>);

static CURRENT: AtomicPtr<Driver> = AtomicPtr::new(ptr::null_mut());

impl Driver {
    /// The driver of this process, created on first use (and again in a forked child). Fails
    /// if the engine cannot work without a reaper thread and none could be started.
    pub(crate) fn get() -> io::Result<&'static Driver> {
        let current = CURRENT.load(Ordering::Acquire);
        // SAFETY: CURRENT only ever holds null or a leaked, never freed `Driver`.
        if let Some(d) = unsafe { current.as_ref() } {
            if d.origin.generation == fork::generation() {
                if d.reaper.get().is_none() && d.needs_reaper_always() {
                    d.reaper()?;
                }
                return Ok(d);
            }
        }
        Self::create(current)
    }

    #[cold]
    fn create(seen: *mut Driver) -> io::Result<&'static Driver> {
        fork::watch();
        let generation = fork::generation();
        let config = config::resolve()?;
        let engine = match config.backend() {
            Some(backend) => {
                let (_, make) = ENGINES
                    .iter()
                    .find(|(b, _)| *b == backend)
                    .expect("every backend has an engine");
                make(&config)?
            }
            None => {
                let mut last = None;
                let chosen = ENGINES.iter().find_map(|(_, make)| match make(&config) {
                    Ok(e) => Some(e),
                    Err(e) => {
                        last = Some(e);
                        None
                    }
                });
                match chosen {
                    Some(e) => e,
                    None => return Err(last.expect("at least one engine was tried")),
                }
            }
        };
        let pool: &'static NotifierPool = Box::leak(Box::default());
        let driver = Box::into_raw(Box::new(Driver {
            origin: Origin {
                engine,
                in_flight: AtomicUsize::new(0),
                generation,
            },
            pool,
            config,
            reaper: OnceLock::new(),
            starting_reaper: Mutex::new(()),
        }));
        match CURRENT.compare_exchange(seen, driver, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                // SAFETY: just published; never freed from now on.
                let driver: &'static Driver = unsafe { &*driver };
                config::mark_in_use(&driver.config, driver.backend());
                if driver.needs_reaper_always() {
                    // Start it now, while descriptors and threads are available. Should it fail,
                    // every later `get` (each registration) and submission tries again, and
                    // fails as clearly, rather than accept operations that would never complete.
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
                if winner.origin.generation == generation {
                    Self::get()
                } else {
                    Self::create(winner as *const Driver as *mut Driver)
                }
            }
        }
    }

    pub(crate) fn backend(&self) -> Backend {
        self.engine().backend()
    }

    fn engine(&self) -> &dyn Engine {
        &*self.origin.engine
    }

    /// Whether no operation can complete without the reaper thread.
    fn needs_reaper_always(&self) -> bool {
        self.engine().signalling() == Signalling::Reaper
    }

    /// A fresh notifier for one operation or batch.
    pub(crate) fn notifier(&'static self, loudness: Loudness) -> io::Result<Notifier> {
        Notifier::new(self.pool, self.origin.generation, loudness)
    }

    /// The notifier the kernel signals to wake the reaper thread, which starts on first use.
    fn reaper(&'static self) -> io::Result<Arc<Notifier>> {
        if let Some(n) = self.reaper.get() {
            return Ok(n.clone());
        }
        let _starting = self
            .starting_reaper
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = self.reaper.get() {
            return Ok(n.clone());
        }
        let n = Arc::new(Notifier::private(self.pool)?);
        let wake = n.clone();
        std::thread::Builder::new()
            .name("mio-aio-reaper".into())
            .spawn(move || loop {
                wake.wait();
                self.engine().reap();
            })
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "mio-aio cannot start the reaper thread that completes {} operations: {e}",
                        self.backend()
                    ),
                )
            })?;
        let _ = self.reaper.set(n.clone());
        Ok(n)
    }

    /// Operations that may still start before the queue is full.
    fn room(&self) -> usize {
        self.config
            .max_in_flight()
            .saturating_sub(self.origin.in_flight.load(Ordering::Relaxed))
    }

    /// The notifiers a completion carries, given who signals it: the one the kernel signals,
    /// and the one signalled from user space when the result is recorded. A batch's
    /// completions signal no notifier of the batch's own: their `Group` does, once.
    fn signals(
        &'static self,
        signalling: Signalling,
        notifier: Option<&Arc<Notifier>>,
        batch: bool,
    ) -> Result<Signals, Errno> {
        let reaper = || self.reaper().map_err(io_errno);
        Ok(match (signalling, batch) {
            (Signalling::Kernel, false) => (notifier.cloned(), None),
            (Signalling::Kernel, true) | (Signalling::Reaper, true) => (Some(reaper()?), None),
            (Signalling::Reaper, false) => (Some(reaper()?), notifier.cloned()),
            (Signalling::User, false) => (None, notifier.cloned()),
            (Signalling::User, true) => (None, None),
        })
    }

    /// A single read from the page cache, done here and now: kernel AIO would do the same work
    /// inside `io_submit`, io_uring inside its enter, the pool on a worker (see `nowait`).
    /// `None` means "submit it to the engine"; `EAGAIN`, that the queue is full.
    ///
    /// # Safety
    /// As for [`Driver::submit_one`].
    pub(crate) unsafe fn read_now(&'static self, request: Request) -> nix::Result<Option<Started>> {
        if self.room() == 0 {
            return Err(Errno::EAGAIN);
        }
        // SAFETY: this function's contract.
        Ok(unsafe { self.read_cached(request) })
    }

    /// # Safety
    /// As for [`Driver::submit_one`].
    unsafe fn read_cached(&'static self, request: Request) -> Option<Started> {
        if !self.config.cached_reads() {
            return None;
        }
        // SAFETY: the caller's contract covers the request's buffers.
        let res = unsafe { nowait::read_cached(&request) }?;
        Some(Arc::new(Completion::done(request, res, &self.origin)))
    }

    /// Starts one operation on the engine; `notifier` (if any) is signalled when it completes.
    ///
    /// # Safety
    /// The request's buffers must stay valid, and not otherwise accessed, until its completion
    /// is done.
    pub(crate) unsafe fn submit_one(
        &'static self,
        request: Request,
        notifier: Option<&Arc<Notifier>>,
    ) -> Result<Started, Errno> {
        if self.room() == 0 {
            return Err(Errno::EAGAIN);
        }
        let signalling = self.engine().signalling_for(&request);
        let (kernel_signal, user_signal) = self.signals(signalling, notifier, false)?;
        let c = Completion::new(request, kernel_signal, user_signal, None, &self.origin);
        self.origin.in_flight.fetch_add(1, Ordering::Relaxed);
        // SAFETY: this function's contract.
        unsafe { self.engine().submit_one(c) }.inspect_err(|_| {
            self.origin.in_flight.fetch_sub(1, Ordering::Relaxed);
        })
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
    ) -> Result<Vec<Started>, Errno> {
        let mut count = requests.len().min(self.room());
        if count == 0 {
            return Err(Errno::EAGAIN);
        }
        let in_flight = &self.origin.in_flight;
        let capacity = self.engine().batch_capacity_for(&requests[..count]);
        if capacity > 0 {
            // What does not fit is left for another round (`EINCOMPLETE`).
            count = count.min(capacity);
            let batch = || {
                requests[..count]
                    .iter()
                    .map(|&r| Completion::new(r, None, None, None, &self.origin))
                    .collect()
            };
            in_flight.fetch_add(count, Ordering::Relaxed);
            // Out of descriptors for the batch's ring, the pooled eventfds go first (nothing was
            // submitted: the ring is made before any request goes in).
            let started = self.pool.retry_on_emfile(|| {
                // SAFETY: this function's contract.
                Ok(unsafe { self.engine().submit_signalled_batch(batch(), notifier) }?)
            });
            return started.map_err(io_errno).inspect_err(|_| {
                in_flight.fetch_sub(count, Ordering::Relaxed);
            });
        }
        if let [request] = requests {
            // SAFETY: this function's contract.
            if let Some(done) = unsafe { self.read_cached(*request) } {
                if let Some(n) = notifier {
                    n.signal();
                }
                return Ok(vec![done]);
            }
        }
        let group = Group::new(requests.len(), notifier.cloned());
        let (kernel_signal, _) = self.signals(self.engine().signalling(), None, true)?;
        let batch = requests[..count]
            .iter()
            .map(|&r| {
                Completion::new(
                    r,
                    kernel_signal.clone(),
                    None,
                    Some(group.clone()),
                    &self.origin,
                )
            })
            .collect();
        in_flight.fetch_add(count, Ordering::Relaxed);
        // SAFETY: this function's contract.
        let started = match unsafe { self.engine().submit(batch) } {
            Ok(started) if !started.is_empty() => started,
            other => {
                in_flight.fetch_sub(count, Ordering::Relaxed);
                return Err(other.err().unwrap_or(Errno::EAGAIN));
            }
        };
        let accepted = started.len();
        in_flight.fetch_sub(count - accepted, Ordering::Relaxed);
        // The batch's event must wait only for the operations that were started.
        group.finished(requests.len() - accepted);
        Ok(started)
    }
}
