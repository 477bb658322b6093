//! What a point is: a method, a regime, a workload and a queue depth; and what one run of it
//! measured.

use std::fmt;

/// Every operation moves one 4 KiB block, at a 4 KiB-aligned offset.
pub const BLOCK: usize = 4096;

/// How the file is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Regime {
    /// Buffered I/O on a file kept fully in the page cache: measures the software path.
    Cached,
    /// `O_DIRECT`, aligned buffers: measures the device (and how well each method keeps it busy).
    Direct,
}

impl Regime {
    pub const ALL: [Regime; 2] = [Regime::Cached, Regime::Direct];

    pub fn name(self) -> &'static str {
        match self {
            Regime::Cached => "cached",
            Regime::Direct => "direct",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Regime::Cached => "buffered, file fully in the page cache",
            Regime::Direct => "O_DIRECT",
        }
    }

    pub fn parse(s: &str) -> Option<Regime> {
        Regime::ALL.into_iter().find(|r| r.name() == s)
    }
}

/// What each operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Workload {
    RandRead,
    RandWrite,
}

impl Workload {
    pub const ALL: [Workload; 2] = [Workload::RandRead, Workload::RandWrite];

    /// Also fio's `--rw` value.
    pub fn name(self) -> &'static str {
        match self {
            Workload::RandRead => "randread",
            Workload::RandWrite => "randwrite",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Workload::RandRead => "4 KiB random reads",
            Workload::RandWrite => "4 KiB random writes",
        }
    }

    pub fn parse(s: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == s)
    }
}

/// A mio-aio backend. On Linux one of the three engines (one per process); elsewhere the
/// system's POSIX AIO.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MioBackend {
    IoUring,
    /// io_uring with `MIO_AIO_URING_SQPOLL=2`: a kernel thread polls the submission queue and
    /// spins for 2 ms after each burst.
    IoUringSqpoll,
    Kaio,
    Threads,
    PosixAio,
}

impl MioBackend {
    /// The backends this system has.
    pub fn available() -> &'static [MioBackend] {
        if cfg!(target_os = "linux") {
            &[MioBackend::IoUring, MioBackend::Kaio, MioBackend::Threads]
        } else {
            &[MioBackend::PosixAio]
        }
    }

    /// Also the value of `MIO_AIO_BACKEND` on Linux.
    pub fn name(self) -> &'static str {
        match self {
            MioBackend::IoUring => "io_uring",
            MioBackend::IoUringSqpoll => "io_uring+sqpoll",
            MioBackend::Kaio => "kaio",
            MioBackend::Threads => "threads",
            MioBackend::PosixAio => "posix",
        }
    }

    /// The environment a child process running this backend needs (`None`: removed).
    pub fn env(self) -> [(&'static str, Option<&'static str>); 2] {
        let sqpoll = (self == MioBackend::IoUringSqpoll).then_some("2");
        [("MIO_AIO_BACKEND", None), ("MIO_AIO_URING_SQPOLL", sqpoll)]
    }

    /// The backend this process must use, forced before its first operation.
    #[cfg(target_os = "linux")]
    pub fn select(self) -> std::io::Result<()> {
        let wanted = match self {
            MioBackend::IoUring | MioBackend::IoUringSqpoll => mio_aio::Backend::IoUring,
            MioBackend::Kaio => mio_aio::Backend::KernelAio,
            MioBackend::Threads => mio_aio::Backend::ThreadPool,
            MioBackend::PosixAio => {
                return Err(std::io::Error::other("POSIX AIO is not a Linux backend"))
            }
        };
        mio_aio::set_backend(wanted)?;
        let got = mio_aio::backend()?;
        if got != wanted {
            return Err(std::io::Error::other(format!(
                "asked for backend {wanted}, got {got}"
            )));
        }
        Ok(())
    }

    #[cfg(not(target_os = "linux"))]
    pub fn select(self) -> std::io::Result<()> {
        match self {
            MioBackend::PosixAio => Ok(()),
            other => Err(std::io::Error::other(format!(
                "backend {} exists only on Linux",
                other.name()
            ))),
        }
    }
}

/// How a mio-aio method keeps `QD` operations in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MioApi {
    /// One `Source` per operation, each with its own token; a finished one is replaced at once.
    PerOp,
    /// One `LioCb` of QD operations: submit, wait for its one event, build and submit the next.
    Batch,
    /// Two `LioCb`s of QD/2 operations each, pipelined: when one completes it is replaced while
    /// the other is in flight.
    HalfBatches,
    /// The async layer (`mio_aio::tokio::AioFileExt`) on a multi-thread tokio runtime: QD
    /// tasks, each awaiting one `read_at`/`write_at` after another. Needs `--features tokio`.
    Tokio,
}

/// A fio I/O engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FioEngine {
    IoUring,
    Libaio,
    /// Synchronous `pread`/`pwrite`: QD1 per job, so QD N runs N jobs (`--numjobs=N`).
    Psync,
    PosixAio,
}

impl FioEngine {
    pub fn name(self) -> &'static str {
        match self {
            FioEngine::IoUring => "io_uring",
            FioEngine::Libaio => "libaio",
            FioEngine::Psync => "psync",
            FioEngine::PosixAio => "posixaio",
        }
    }
}

/// One way of doing file I/O that the benchmark compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Mio(MioApi, MioBackend),
    Fio(FioEngine),
    /// `tokio::fs::File`, `seek` + `read`/`write`: one file handle per task, QD tasks.
    TokioFs,
    /// `tokio::task::spawn_blocking` + `pread`/`pwrite`: QD tasks.
    SpawnBlocking,
    /// QD plain threads, each a `pread`/`pwrite` loop.
    Threads,
}

impl Method {
    /// Every method of this system, in the order of the table rows.
    pub fn all() -> Vec<Method> {
        let mut v = Vec::new();
        for api in [MioApi::PerOp, MioApi::Batch] {
            for &b in MioBackend::available() {
                v.push(Method::Mio(api, b));
            }
            if cfg!(target_os = "linux") && api == MioApi::PerOp {
                v.push(Method::Mio(api, MioBackend::IoUringSqpoll));
            }
        }
        v.push(Method::Mio(MioApi::HalfBatches, MioBackend::available()[0]));
        for &b in MioBackend::available() {
            v.push(Method::Mio(MioApi::Tokio, b));
        }
        if cfg!(target_os = "linux") {
            v.push(Method::Fio(FioEngine::IoUring));
            v.push(Method::Fio(FioEngine::Libaio));
        }
        v.push(Method::Fio(FioEngine::Psync));
        v.push(Method::Fio(FioEngine::PosixAio));
        v.extend([Method::TokioFs, Method::SpawnBlocking, Method::Threads]);
        v
    }

    /// Every method of every system (to parse a child's arguments).
    fn everywhere() -> impl Iterator<Item = Method> {
        let backends = [
            MioBackend::IoUring,
            MioBackend::IoUringSqpoll,
            MioBackend::Kaio,
            MioBackend::Threads,
            MioBackend::PosixAio,
        ];
        let apis = [
            MioApi::PerOp,
            MioApi::Batch,
            MioApi::HalfBatches,
            MioApi::Tokio,
        ];
        let engines = [
            FioEngine::IoUring,
            FioEngine::Libaio,
            FioEngine::Psync,
            FioEngine::PosixAio,
        ];
        apis.into_iter()
            .flat_map(move |a| backends.into_iter().map(move |b| Method::Mio(a, b)))
            .chain(engines.into_iter().map(Method::Fio))
            .chain([Method::TokioFs, Method::SpawnBlocking, Method::Threads])
    }

    /// A short, stable name without spaces (the child process's argument).
    pub fn id(self) -> String {
        match self {
            Method::Mio(api, b) => {
                let api = match api {
                    MioApi::PerOp => "perop",
                    MioApi::Batch => "batch",
                    MioApi::HalfBatches => "halves",
                    MioApi::Tokio => "tokio",
                };
                format!("mio-{api}-{}", b.name())
            }
            Method::Fio(e) => format!("fio-{}", e.name()),
            Method::TokioFs => "tokio-fs".into(),
            Method::SpawnBlocking => "tokio-spawn-blocking".into(),
            Method::Threads => "threads-pread".into(),
        }
    }

    pub fn parse(id: &str) -> Option<Method> {
        Method::everywhere().find(|m| m.id() == id)
    }

    /// The row name in the tables.
    pub fn label(self) -> String {
        match self {
            Method::Mio(MioApi::PerOp, b) => format!("mio-aio per-op ({})", b.name()),
            Method::Mio(MioApi::Batch, b) => format!("mio-aio batch ({})", b.name()),
            Method::Mio(MioApi::HalfBatches, b) => format!("mio-aio 2×½ batches ({})", b.name()),
            Method::Mio(MioApi::Tokio, b) => format!("mio-aio tokio AioFileExt ({})", b.name()),
            Method::Fio(FioEngine::Psync) => "fio psync (numjobs=QD)".into(),
            Method::Fio(e) => format!("fio {}", e.name()),
            Method::TokioFs => "tokio::fs::File".into(),
            Method::SpawnBlocking => "tokio spawn_blocking+pread".into(),
            Method::Threads => "threads pread (QD threads)".into(),
        }
    }

    pub fn is_mio(self) -> bool {
        matches!(self, Method::Mio(..))
    }

    /// Whether `--verify` can check this method's bytes: the ones that read into and write from
    /// buffers of ours (fio and `tokio::fs::File` use their own).
    pub fn verifiable(self) -> bool {
        matches!(
            self,
            Method::Mio(..) | Method::SpawnBlocking | Method::Threads
        )
    }

    /// Whether this method has a point at queue depth `qd`.
    pub fn runs_at(self, qd: usize) -> bool {
        match self {
            Method::Mio(MioApi::HalfBatches, _) => qd >= 2 && qd % 2 == 0,
            _ => true,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

/// One measurement to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Point {
    pub method: Method,
    pub regime: Regime,
    pub workload: Workload,
    pub qd: usize,
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} QD{}",
            self.method,
            self.regime.name(),
            self.workload.name(),
            self.qd
        )
    }
}

/// What one run of a point measured, over its timed window (warm-up excluded).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// Operations completed in the window.
    pub ops: u64,
    /// The window's length.
    pub secs: f64,
    /// User + system CPU time of the process(es) doing the I/O, in the window.
    pub cpu_secs: f64,
    /// Per-operation latency percentiles (recorded at QD1), nanoseconds.
    pub p50_ns: Option<u64>,
    pub p99_ns: Option<u64>,
    /// mio-aio only: `Poll::poll` calls that returned `Interrupted`, and events that arrived
    /// while their operation was still in flight.
    pub interrupted: Option<u64>,
    pub spurious: Option<u64>,
    /// Every operation the process completed: warm-up, window and the drain after it (to
    /// divide whole-process counts such as system calls by).
    pub all_ops: Option<u64>,
    /// With `--verify`: operations whose bytes were checked.
    pub verified: Option<u64>,
    /// Set when the page cache lost part of the file during a cached point on every retry.
    pub evicted: bool,
}

impl Sample {
    pub fn iops(&self) -> f64 {
        self.ops as f64 / self.secs
    }

    pub fn cpu_us_per_op(&self) -> f64 {
        self.cpu_secs * 1e6 / self.ops.max(1) as f64
    }

    /// The child's one line of result, parsed back by [`Sample::from_line`].
    pub fn to_line(&self) -> String {
        let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        format!(
            "RESULT {} {} {} {} {} {} {} {} {}",
            self.ops,
            self.secs,
            self.cpu_secs,
            opt(self.p50_ns),
            opt(self.p99_ns),
            opt(self.interrupted),
            opt(self.spurious),
            opt(self.all_ops),
            opt(self.verified)
        )
    }

    pub fn from_line(line: &str) -> Option<Sample> {
        let mut it = line.strip_prefix("RESULT ")?.split(' ');
        let mut next = || it.next();
        let opt = |s: Option<&str>| -> Option<Option<u64>> {
            match s? {
                "-" => Some(None),
                v => v.parse().ok().map(Some),
            }
        };
        Some(Sample {
            ops: next()?.parse().ok()?,
            secs: next()?.parse().ok()?,
            cpu_secs: next()?.parse().ok()?,
            p50_ns: opt(next())?,
            p99_ns: opt(next())?,
            interrupted: opt(next())?,
            spurious: opt(next())?,
            all_ops: opt(next())?,
            verified: opt(next())?,
            evicted: false,
        })
    }
}

/// The result of one run of a point.
#[derive(Clone, Debug)]
pub enum Outcome {
    Measured(Sample),
    /// The method cannot do this point here (tokio::fs with O_DIRECT, a fio engine this fio
    /// lacks): shown as "n/a (reason)".
    NotApplicable(String),
    /// Something that should have worked did not.
    Failed(String),
}

/// Why an in-process method did not measure a point.
#[derive(Debug)]
pub enum RunError {
    /// The method cannot do this point (reported as "n/a (reason)").
    NotApplicable(String),
    Io(std::io::Error),
}

impl From<std::io::Error> for RunError {
    fn from(e: std::io::Error) -> Self {
        RunError::Io(e)
    }
}

/// The file every point works on, how long each point runs, and whether it checks bytes.
#[derive(Clone, Debug)]
pub struct RunParams {
    pub file: std::path::PathBuf,
    pub size: u64,
    pub warmup: f64,
    pub secs: f64,
    /// `--verify`: check every operation's bytes (see `verify`).
    pub verify: bool,
    /// The test hook of `verify` (set from the environment in the child, with `verify` only).
    pub fault: Option<super::verify::Fault>,
}

impl RunParams {
    pub fn layout(&self) -> super::data::Layout {
        super::data::Layout::of(self.size)
    }
}
