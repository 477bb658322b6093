//! The driver's settings: one place that holds them, with their defaults, their environment
//! overrides and what the program set.
//!
//! A setting's value is, from weakest to strongest: the built-in default, the environment
//! variable named next to it (read when the driver is created), the value set from code
//! ([`ConfigBuilder::install`], [`set_backend`](crate::set_backend)). The driver reads the
//! result once, when the process's first operation (or a call to [`backend`](crate::backend))
//! creates it; a forked child that uses mio-aio creates its own and reads them again.

use std::{io, str::FromStr, sync::Mutex, time::Duration};

use super::fork;

/// The Linux mechanism that carries out operations.
///
/// By default the first that works is used: io_uring, then kernel AIO (where io_uring is
/// refused, as under Docker's default seccomp profile or `kernel.io_uring_disabled`), then a
/// thread pool. Force one with [`set_backend`](crate::set_backend) or
/// [`ConfigBuilder::backend`] before the first operation, or with the environment variable
/// `MIO_AIO_BACKEND` (`io_uring`, `kaio`, `threads` or `auto`).
///
/// Whatever the backend, a single read (or readv) whose data is all in the page cache is done
/// at once by `submit`, with `preadv2(RWF_NOWAIT)`, and its event is signalled from user space:
/// each backend would copy the data inline too, only at a higher cost
/// ([`ConfigBuilder::cached_reads`] turns this off).
///
/// ```
/// # #[cfg(target_os = "linux")] {
/// let backend = mio_aio::backend().unwrap();
/// println!("file I/O goes through {backend}");
/// # }
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum Backend {
    /// io_uring (Linux 5.6 or later): each completion is signalled by a linked write to the
    /// operation's eventfd. Tuned by [`ConfigBuilder::uring_sqpoll`] and
    /// [`ConfigBuilder::uring_async`].
    IoUring,
    /// Linux kernel AIO (`io_submit`), with `RWF_NOWAIT` so that buffered I/O that would block
    /// is handed to worker threads instead of blocking the caller.
    KernelAio,
    /// Worker threads running `pread`, `pwrite` and `fsync`.
    ThreadPool,
}

impl Backend {
    /// The name used by `MIO_AIO_BACKEND`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::IoUring => "io_uring",
            Backend::KernelAio => "kaio",
            Backend::ThreadPool => "threads",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = io::Error;

    /// Parses `io_uring` (or `uring`), `kaio` (or `aio`), `threads`.
    fn from_str(s: &str) -> io::Result<Backend> {
        match s {
            "io_uring" | "uring" => Ok(Backend::IoUring),
            "kaio" | "aio" => Ok(Backend::KernelAio),
            "threads" | "thread_pool" => Ok(Backend::ThreadPool),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unknown mio-aio backend {s:?}"),
            )),
        }
    }
}

/// The settings of mio-aio's Linux driver, as [`config`](crate::config) reads them back.
///
/// | setting | default | environment override | set from code |
/// |---|---|---|---|
/// | backend | the first that works: io_uring, kernel AIO, threads | `MIO_AIO_BACKEND` = `io_uring`, `kaio`, `threads` or `auto` | [`ConfigBuilder::backend`], [`set_backend`](crate::set_backend) |
/// | io_uring SQPOLL | off | `MIO_AIO_URING_SQPOLL` = idle time in ms | [`ConfigBuilder::uring_sqpoll`] |
/// | io_uring `IOSQE_ASYNC` on every request (not only on FUSE and network file systems) | off | `MIO_AIO_URING_ASYNC=1` | [`ConfigBuilder::uring_async`] |
/// | cached reads done inside `submit` | on | `MIO_AIO_CACHED_READS=0` | [`ConfigBuilder::cached_reads`] |
/// | operations in flight per process | 16384 | `MIO_AIO_MAX_IN_FLIGHT` | [`ConfigBuilder::max_in_flight`] |
/// | worker threads (thread pool, kernel AIO's helpers) | 64 | `MIO_AIO_THREADS` | [`ConfigBuilder::max_threads`] |
///
/// A number that does not parse leaves the default in place; an unknown backend name makes the
/// driver's creation (the first operation, or [`backend`](crate::backend)) fail with
/// [`io::ErrorKind::InvalidInput`].
///
/// ```
/// # #[cfg(target_os = "linux")] {
/// let config = mio_aio::config().unwrap();
/// println!("at most {} operations in flight", config.max_in_flight());
/// # }
/// ```
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Config {
    backend: Option<Backend>,
    uring_sqpoll: Option<Duration>,
    uring_async: bool,
    cached_reads: bool,
    max_in_flight: usize,
    max_threads: usize,
}

const DEFAULT_MAX_IN_FLIGHT: usize = 16384;
const DEFAULT_MAX_THREADS: usize = 64;

impl Default for Config {
    /// The built-in defaults, without environment overrides.
    fn default() -> Config {
        Config {
            backend: None,
            uring_sqpoll: None,
            uring_async: false,
            cached_reads: true,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_threads: DEFAULT_MAX_THREADS,
        }
    }
}

impl Config {
    /// A builder with nothing set: what it does not set keeps its current value.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// The backend: once the driver is in use, the one it uses; before, the one asked for
    /// (`None`: the first that works).
    pub fn backend(&self) -> Option<Backend> {
        self.backend
    }

    /// io_uring with a kernel thread polling for submissions, which stays awake this long after
    /// each burst; `None` (the default): no polling thread.
    pub fn uring_sqpoll(&self) -> Option<Duration> {
        self.uring_sqpoll
    }

    /// Whether every io_uring request is queued to io_uring's workers (`IOSQE_ASYNC`).
    pub fn uring_async(&self) -> bool {
        self.uring_async
    }

    /// Whether a single read whose data is all in the page cache is done inside `submit`.
    pub fn cached_reads(&self) -> bool {
        self.cached_reads
    }

    /// The most operations in flight in the process; `submit` fails with `EAGAIN` beyond it.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// The most worker threads of the thread pool (and of kernel AIO's helper pool).
    pub fn max_threads(&self) -> usize {
        self.max_threads
    }

    /// The defaults with the environment's overrides applied.
    fn from_env() -> io::Result<Config> {
        let mut c = Config::default();
        if let Ok(name) = std::env::var("MIO_AIO_BACKEND") {
            if !name.is_empty() && name != "auto" {
                c.backend = Some(name.parse().map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "MIO_AIO_BACKEND={name:?}: expected io_uring, kaio, threads or auto"
                        ),
                    )
                })?);
            }
        }
        if let Some(ms) = env_number("MIO_AIO_URING_SQPOLL") {
            c.uring_sqpoll = Some(Duration::from_millis(ms));
        }
        if std::env::var("MIO_AIO_URING_ASYNC").is_ok_and(|v| v == "1") {
            c.uring_async = true;
        }
        if std::env::var("MIO_AIO_CACHED_READS").is_ok_and(|v| v == "0") {
            c.cached_reads = false;
        }
        if let Some(n) = env_number("MIO_AIO_MAX_IN_FLIGHT") {
            c.max_in_flight = usize::try_from(n).unwrap_or(usize::MAX).max(1);
        }
        if let Some(n) = env_number("MIO_AIO_THREADS") {
            c.max_threads = usize::try_from(n).unwrap_or(usize::MAX).max(1);
        }
        Ok(c)
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

/// Sets the driver's settings from code, before the first operation, in the style of
/// `tokio::runtime::Builder`: set what you need, then [`install`](ConfigBuilder::install).
///
/// ```
/// # #[cfg(target_os = "linux")] {
/// use mio_aio::{Backend, Config};
/// let installed = Config::builder()
///     .backend(Backend::ThreadPool)
///     .max_threads(8)
///     .install();
/// match installed {
///     Ok(()) => assert_eq!(mio_aio::config().unwrap().max_threads(), 8),
///     Err(e) => println!("mio-aio is already in use with other settings: {e}"),
/// }
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct ConfigBuilder {
    backend: Option<Backend>,
    uring_sqpoll: Option<Option<Duration>>,
    uring_async: Option<bool>,
    cached_reads: Option<bool>,
    max_in_flight: Option<usize>,
    max_threads: Option<usize>,
}

impl ConfigBuilder {
    /// Forces a backend (see [`Backend`]).
    pub fn backend(&mut self, backend: Backend) -> &mut Self {
        self.backend = Some(backend);
        self
    }

    /// Lets a kernel thread pick up io_uring submissions (no system call per submission, and no
    /// interrupted polls), at the cost of a kernel thread that spins for `idle` after each
    /// burst; `None` turns it off.
    pub fn uring_sqpoll(&mut self, idle: Option<Duration>) -> &mut Self {
        self.uring_sqpoll = Some(idle);
        self
    }

    /// Queues every io_uring request to io_uring's workers (`IOSQE_ASYNC`), not only those on
    /// FUSE and network file systems, which the per-file policy sends there anyway.
    pub fn uring_async(&mut self, on: bool) -> &mut Self {
        self.uring_async = Some(on);
        self
    }

    /// Whether a single read whose data is all in the page cache is done inside `submit`
    /// (`preadv2(RWF_NOWAIT)`), instead of going to the backend.
    pub fn cached_reads(&mut self, on: bool) -> &mut Self {
        self.cached_reads = Some(on);
        self
    }

    /// The most operations in flight in the process (at least 1); `submit` fails with `EAGAIN`
    /// beyond it, and a batch starts only a prefix.
    pub fn max_in_flight(&mut self, n: usize) -> &mut Self {
        self.max_in_flight = Some(n.max(1));
        self
    }

    /// The most worker threads (at least 1) of the thread pool and of kernel AIO's helpers.
    pub fn max_threads(&mut self, n: usize) -> &mut Self {
        self.max_threads = Some(n.max(1));
        self
    }

    /// Makes these settings (on top of earlier ones) the driver's. Call it before the first
    /// operation: once the driver is in use its settings cannot change, and asking for others
    /// fails with [`io::ErrorKind::AlreadyExists`] (asking for the ones in use succeeds).
    pub fn install(&self) -> io::Result<()> {
        let mut code = lock(&FROM_CODE);
        let mut merged = code.clone();
        merged.merge(self);
        if let Some(in_use) = in_use() {
            let mut wanted = merged.apply(Config::from_env()?);
            if wanted.backend.is_none() {
                // Nothing asked for: the backend the driver chose is as good as any.
                wanted.backend = in_use.backend;
            }
            if wanted != in_use {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("mio-aio is already in use with {in_use:?}"),
                ));
            }
        }
        *code = merged;
        Ok(())
    }

    fn merge(&mut self, other: &ConfigBuilder) {
        self.backend = other.backend.or(self.backend);
        self.uring_sqpoll = other.uring_sqpoll.or(self.uring_sqpoll);
        self.uring_async = other.uring_async.or(self.uring_async);
        self.cached_reads = other.cached_reads.or(self.cached_reads);
        self.max_in_flight = other.max_in_flight.or(self.max_in_flight);
        self.max_threads = other.max_threads.or(self.max_threads);
    }

    fn apply(&self, mut c: Config) -> Config {
        c.backend = self.backend.or(c.backend);
        c.uring_sqpoll = self.uring_sqpoll.unwrap_or(c.uring_sqpoll);
        c.uring_async = self.uring_async.unwrap_or(c.uring_async);
        c.cached_reads = self.cached_reads.unwrap_or(c.cached_reads);
        c.max_in_flight = self.max_in_flight.unwrap_or(c.max_in_flight);
        c.max_threads = self.max_threads.unwrap_or(c.max_threads);
        c
    }
}

/// What the program set, on top of the environment.
static FROM_CODE: Mutex<ConfigBuilder> = Mutex::new(ConfigBuilder {
    backend: None,
    uring_sqpoll: None,
    uring_async: None,
    cached_reads: None,
    max_in_flight: None,
    max_threads: None,
});

/// The settings of the driver in use, with the fork generation it was made in.
static IN_USE: Mutex<Option<(u64, Config)>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn in_use() -> Option<Config> {
    match &*lock(&IN_USE) {
        Some((generation, c)) if *generation == fork::generation() => Some(c.clone()),
        _ => None,
    }
}

/// The settings a driver created now would use: defaults, environment, code.
pub(crate) fn resolve() -> io::Result<Config> {
    Ok(lock(&FROM_CODE).apply(Config::from_env()?))
}

/// Records the settings of the driver just published for this process, with the backend it
/// chose.
pub(crate) fn mark_in_use(c: &Config, backend: Backend) {
    let c = Config {
        backend: Some(backend),
        ..c.clone()
    };
    *lock(&IN_USE) = Some((fork::generation(), c));
}

/// The settings in use, or those a driver created now would use.
pub(crate) fn current() -> io::Result<Config> {
    match in_use() {
        Some(c) => Ok(c),
        None => resolve(),
    }
}

/// Forces the backend (see `crate::set_backend`).
pub(crate) fn set_backend(backend: Backend) -> io::Result<()> {
    if let Some(c) = in_use() {
        // Only the backend matters here: asking again for the one in use is fine.
        return match c.backend {
            Some(b) if b != backend => Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("mio-aio already uses the {b} backend"),
            )),
            _ => Ok(()),
        };
    }
    Config::builder().backend(backend).install()
}
