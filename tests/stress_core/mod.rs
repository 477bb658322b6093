//! The engine of the randomized stress test, shared by `tests/stress.rs` (CI mode) and
//! `examples/stress.rs` (long mode). It lives in a directory so that cargo treats it as neither
//! a test nor an example; the example includes it with `#[path]`.
//!
//! # Design
//! * Each worker thread has its own `mio::Poll` (kept across the warm-up and the measured run, as
//!   a long-running program would), its own files, and its own deterministic op generator (a
//!   splitmix64 seeded from the seed and the thread index).
//! * Operations are generated independently of what is in flight, so **the sequence of
//!   operations (kinds, files, offsets, lengths, data, cancel/drop/repeat decisions) is a
//!   function of the seed alone**. Their timing and interleaving (which ops overlap in time,
//!   whether a cancel finds an op still queued) are not reproducible.
//! * A per-file interval lock keeps operations on overlapping bytes out of flight at the same
//!   time (reads share, writes are exclusive). A read or write that reaches beyond the current
//!   end of file locks everything from `min(offset, size)` to infinity, so at most one
//!   size-changing operation runs at a time and a read's expected length is known.
//! * The model is, per file, the bytes and the size. Files start at `file_size` bytes and may
//!   grow up to `file_size + tail` through writes that cross the end of file (including ones
//!   that start beyond it and leave a hole of zeros). Reads may cross the end of file and must
//!   then be short exactly there.
//! * A write whose outcome is unknown (dropped in flight, or an unexpected result) makes each of
//!   its bytes *uncertain*: the byte keeps its candidate values (old and new). A later read
//!   must see one of the candidates, and then that value becomes certain; a later write makes
//!   the bytes certain again. A dropped write that crossed the end of file is resolved with
//!   `fstat` once the drop (which waits) is over.
//! * Cancels, drops and repeats (a second `submit` of the same source) are decided at
//!   generation time and carried out a given number of submissions later, if the operation is
//!   still in flight.
#![allow(dead_code)]

use std::{
    collections::{HashMap, VecDeque},
    fmt::Write as _,
    fs::File,
    io::{IoSlice, IoSliceMut},
    os::fd::{AsRawFd, BorrowedFd},
    path::{Path, PathBuf},
    pin::Pin,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use mio::{Events, Poll, Token};
use mio_aio::{
    AioCancelStat, AioFsyncMode, Errno, Fsync, LioCb, LioCbBuilder, LioError, LioOpcode, ReadAt,
    ReadvAt, SourceApi, WriteAt, WritevAt,
};

/// `O_DSYNC`, where the system has it (DragonFly's nix does not: there it is `O_SYNC`).
#[cfg(not(target_os = "dragonfly"))]
const DSYNC: AioFsyncMode = AioFsyncMode::O_DSYNC;
#[cfg(target_os = "dragonfly")]
const DSYNC: AioFsyncMode = AioFsyncMode::O_SYNC;

/// The byte read buffers are filled with before submission: bytes past a read's count must
/// still hold it afterwards.
const POISON: u8 = 0xA5;
/// How many ops are generated ahead of submission, so one blocked by a lock does not stop the
/// others.
const WINDOW: usize = 16;
/// After the oldest pending op has been passed over this often, nothing newer starts until it
/// does (no starvation).
const MAX_SKIPS: u32 = 64;
/// Completed ops remembered per file for failure reports.
const HISTORY: usize = 2048;
/// Failure messages kept (per thread); all are counted.
const MAX_MESSAGES: usize = 20;
/// A completed op whose event has not come after this long is a lost event.
const LOST_EVENT: Duration = Duration::from_secs(3);
/// No progress at all for this long is a hang.
const HANG: Duration = Duration::from_secs(20);
/// No completion in the whole process for this long: a worker is stuck inside the crate (for
/// example dropping an operation that never completes); the watchdog reports and exits.
const WATCHDOG: Duration = Duration::from_secs(45);

/// Completions handled by every worker, for the watchdog.
static PROGRESS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// splitmix64: small, fast and good enough to drive a workload.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 if `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }
}

/// The seed from `MIO_AIO_STRESS_SEED` (decimal or `0x` hex), else a random one.
pub fn seed_from_env() -> u64 {
    match std::env::var("MIO_AIO_STRESS_SEED") {
        Ok(s) => parse_u64(&s).unwrap_or_else(|| panic!("MIO_AIO_STRESS_SEED={s:?}: not a u64")),
        Err(_) => random_seed(),
    }
}

pub fn parse_u64(s: &str) -> Option<u64> {
    let s = s.trim().replace('_', "");
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn random_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let local = 0u8;
    let mut r = Rng::new(t ^ (u64::from(std::process::id()) << 32) ^ (&local as *const u8 as u64));
    r.next_u64()
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub seed: u64,
    pub threads: usize,
    /// Operations in the measured run, over all threads (a batch counts as one).
    pub ops: u64,
    /// Operations in the warm-up run (same concurrency), after which fds and RSS are measured.
    pub warmup_ops: u64,
    /// The most operations in flight per thread.
    pub depth: usize,
    pub files_per_thread: usize,
    pub file_size: u64,
    /// How far writes may extend a file.
    pub tail: u64,
    /// Where the files go (a temporary directory inside it); the system's default if `None`.
    pub dir: Option<PathBuf>,
    /// Allowed growth of the fd count from the warm-up to the end.
    pub fd_slack: usize,
    /// Allowed growth of the RSS, in KiB.
    pub rss_slack_kib: u64,
    /// The measured run is split into this many rounds, with resources measured after each.
    pub rounds: u32,
    /// Print progress lines (long mode).
    pub progress: bool,
    /// Features left out, to narrow a failure down: any of `batch`, `vectored`, `fsync`,
    /// `cancel`, `drop`, `repeat` (from `MIO_AIO_STRESS_NO`, comma-separated). The generator
    /// draws the same random numbers either way, then replaces what is left out.
    pub without: Vec<String>,
}

impl Config {
    /// The CI configuration: 50,000 operations over 2 threads, 64 in flight each, 4 files of
    /// 1 MiB.
    pub fn new(seed: u64) -> Config {
        Config {
            seed,
            threads: 2,
            ops: 50_000,
            warmup_ops: 10_000,
            depth: 64,
            files_per_thread: 2,
            file_size: 1 << 20,
            tail: 256 << 10,
            dir: None,
            fd_slack: 0,
            rss_slack_kib: 8 << 10,
            rounds: 1,
            progress: false,
            without: std::env::var("MIO_AIO_STRESS_NO")
                .unwrap_or_default()
                .split(',')
                .map(|w| w.trim().to_owned())
                .filter(|w| !w.is_empty())
                .collect(),
        }
    }
}

/// Counters, per thread and summed.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub ops: u64,
    pub read: u64,
    pub readv: u64,
    pub write: u64,
    pub writev: u64,
    pub fsync_sync: u64,
    pub fsync_dsync: u64,
    pub batch: u64,
    pub batch_read: u64,
    pub batch_write: u64,
    pub batch_nop: u64,
    pub zero_len: u64,
    pub short_at_eof: u64,
    pub extending_writes: u64,
    pub repeats: u64,
    pub cancel_canceled: u64,
    pub cancel_not_canceled: u64,
    pub cancel_all_done: u64,
    pub ecanceled: u64,
    /// `AioNotCanceled`, then `ECANCELED`: allowed by `SourceApi::cancel`'s docs (the kernel
    /// may still interrupt a running operation), counted.
    pub notcanceled_ecanceled: u64,
    /// `AioAllDone`, then `ECANCELED`: always a failure.
    pub alldone_ecanceled: u64,
    pub drops: u64,
    pub drops_batch: u64,
    pub drops_not_started: u64,
    pub drop_wait_max_us: u64,
    pub eagain: u64,
    pub batch_eagain: u64,
    pub batch_eincomplete: u64,
    pub resubmits: u64,
    pub interrupted: u64,
    pub polls: u64,
    pub events: u64,
    pub max_in_flight: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub bytes_verified: u64,
    pub uncertain_bytes: u64,
    pub uncertain_resolved: u64,
    pub failures: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        macro_rules! sum {
            ($($f:ident),*) => { $( self.$f += o.$f; )* };
        }
        sum!(
            ops,
            read,
            readv,
            write,
            writev,
            fsync_sync,
            fsync_dsync,
            batch,
            batch_read,
            batch_write,
            batch_nop,
            zero_len,
            short_at_eof,
            extending_writes,
            repeats,
            cancel_canceled,
            cancel_not_canceled,
            cancel_all_done,
            ecanceled,
            notcanceled_ecanceled,
            alldone_ecanceled,
            drops,
            drops_batch,
            drops_not_started,
            eagain,
            batch_eagain,
            batch_eincomplete,
            resubmits,
            interrupted,
            polls,
            events,
            bytes_read,
            bytes_written,
            bytes_verified,
            uncertain_bytes,
            uncertain_resolved,
            failures
        );
        self.drop_wait_max_us = self.drop_wait_max_us.max(o.drop_wait_max_us);
        self.max_in_flight = self.max_in_flight.max(o.max_in_flight);
    }
}

/// Resources of the process at one point.
#[derive(Clone, Debug, Default)]
pub struct Resources {
    pub fds: usize,
    /// Of which eventfds (Linux): the crate's pooled notifiers.
    pub eventfds: usize,
    /// The open fds by kind (Linux), e.g. `eventfd=70 file=4 eventpoll=2`.
    pub fd_kinds: String,
    /// Resident set in KiB (Linux: current; elsewhere: the peak, from `getrusage`).
    pub rss_kib: u64,
    /// Threads of the process, where known.
    pub threads: Option<u64>,
}

impl Resources {
    pub fn now() -> Resources {
        trim_heap();
        let (fd_kinds, eventfds) = fd_kinds();
        Resources {
            fds: fd_count(),
            eventfds,
            fd_kinds,
            rss_kib: rss_kib(),
            threads: thread_count(),
        }
    }
}

impl std::fmt::Display for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fds={}", self.fds)?;
        if !self.fd_kinds.is_empty() {
            write!(f, " ({})", self.fd_kinds)?;
        }
        write!(f, " rss={} KiB", self.rss_kib)?;
        if let Some(t) = self.threads {
            write!(f, " threads={t}")?;
        }
        Ok(())
    }
}

/// Gives the allocator's free memory back to the system, so that the RSS measures live memory
/// rather than the high-water mark of the workload's buffers.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_heap() {
    // SAFETY: malloc_trim only releases free memory.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() {}

#[cfg(target_os = "linux")]
fn fd_kinds() -> (String, usize) {
    let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        for e in dir.flatten() {
            let Ok(target) = std::fs::read_link(e.path()) else {
                continue; // the directory's own fd, closed by now
            };
            let t = target.to_string_lossy();
            let kind = if let Some(k) = t.strip_prefix("anon_inode:") {
                k.trim_matches(|c| c == '[' || c == ']').to_owned()
            } else if t.starts_with('/') {
                "file".to_owned()
            } else {
                t.split(':').next().unwrap_or("other").to_owned()
            };
            *kinds.entry(kind).or_default() += 1;
        }
    }
    let eventfds = kinds.get("eventfd").copied().unwrap_or(0);
    let text = kinds
        .iter()
        .map(|(k, n)| format!("{k}={n}"))
        .collect::<Vec<_>>()
        .join(" ");
    (text, eventfds)
}

#[cfg(not(target_os = "linux"))]
fn fd_kinds() -> (String, usize) {
    (String::new(), 0)
}

#[cfg(target_os = "linux")]
fn fd_count() -> usize {
    // The directory's own fd is listed too.
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count().saturating_sub(1))
}

#[cfg(not(target_os = "linux"))]
fn fd_count() -> usize {
    // SAFETY: getrlimit writes one rlimit into a local.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        (lim.rlim_cur as u64).min(1 << 20) as i32
    } else {
        4096
    };
    // SAFETY: F_GETFD only asks whether the number is an open descriptor.
    (0..max)
        .filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1)
        .count()
}

#[cfg(target_os = "linux")]
fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf only reads a configuration value.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    pages * page / 1024
}

#[cfg(not(target_os = "linux"))]
fn rss_kib() -> u64 {
    // SAFETY: getrusage writes one rusage into a local.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ru.ru_maxrss as u64
}

#[cfg(target_os = "linux")]
fn thread_count() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(not(target_os = "linux"))]
fn thread_count() -> Option<u64> {
    None
}

/// What the kernel says about this process's io_uring instances and threads: for a report
/// on a hang (Linux; empty elsewhere).
#[cfg(target_os = "linux")]
pub fn diagnostics() -> String {
    let mut o = String::new();
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        for e in dir.flatten() {
            let is_ring = std::fs::read_link(e.path())
                .is_ok_and(|t| t.to_string_lossy() == "anon_inode:[io_uring]");
            if is_ring {
                let name = e.file_name().to_string_lossy().into_owned();
                let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{name}"))
                    .unwrap_or_default();
                let info: Vec<&str> = info
                    .lines()
                    .filter(|l| {
                        [
                            "SqHead",
                            "SqTail",
                            "CachedSqHead",
                            "CqHead",
                            "CqTail",
                            "CachedCqTail",
                            "SQEs",
                            "CQEs",
                            "SqThread",
                            "PollList",
                            "CqOverflowList",
                        ]
                        .iter()
                        .any(|k| l.trim_start().starts_with(k))
                    })
                    .collect();
                let _ = writeln!(o, "  io_uring fd {name}: {}", info.join(" | "));
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for e in dir.flatten() {
            let p = e.path();
            let read = |f: &str| std::fs::read_to_string(p.join(f)).unwrap_or_default();
            let stat = read("stat");
            // "pid (comm) S ...": the state follows the last ')'.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .unwrap_or("?")
                .to_owned();
            let stack: Vec<String> = read("stack")
                .lines()
                .take(12)
                .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_owned())
                .collect();
            let _ = writeln!(
                o,
                "  task {} {:?} state={state} wchan={} stack={}",
                e.file_name().to_string_lossy(),
                read("comm").trim(),
                read("wchan").trim(),
                stack.join("<")
            );
        }
    }
    o
}

#[cfg(not(target_os = "linux"))]
pub fn diagnostics() -> String {
    String::new()
}

/// The name of the backend in use.
pub fn backend_name() -> String {
    #[cfg(target_os = "linux")]
    {
        match mio_aio::backend() {
            Ok(b) => b.to_string(),
            Err(e) => format!("unavailable ({e})"),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        "posix-aio".to_owned()
    }
}

/// One round of a run (the warm-up is round 0) and the resources after it.
#[derive(Clone, Debug)]
pub struct Round {
    pub ops: u64,
    pub failures: u64,
    pub time: Duration,
    pub after: Resources,
}

/// The outcome of a whole run.
#[derive(Clone, Debug)]
pub struct Report {
    pub config: Config,
    pub backend: String,
    pub warmup: Stats,
    pub stats: Stats,
    pub messages: Vec<String>,
    pub start: Resources,
    /// The warm-up, then each measured round.
    pub rounds: Vec<Round>,
}

impl Report {
    /// Resources after the warm-up.
    pub fn before(&self) -> &Resources {
        self.rounds.first().map_or(&self.start, |r| &r.after)
    }

    /// Resources at the end.
    pub fn after(&self) -> &Resources {
        self.rounds.last().map_or(&self.start, |r| &r.after)
    }

    /// The measured run's duration.
    pub fn time(&self) -> Duration {
        self.rounds.iter().skip(1).map(|r| r.time).sum()
    }

    /// The most eventfds the crate may keep at this concurrency: every operation in flight
    /// holds one notifier (an eventfd), which may outlive it briefly inside the engine (hence
    /// twice the depth), and finished ones go back to the pools, which keep them. The bound
    /// does not grow with the number of operations: a leak does.
    pub fn eventfd_bound(&self) -> usize {
        2 * self.config.threads * self.config.depth + 8
    }

    /// Everything that makes the run a failure (empty when it passed).
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let failures = self.stats.failures + self.warmup.failures;
        if failures > 0 {
            p.push(format!(
                "{failures} verification failures or unexpected results"
            ));
        }
        if self.stats.ops < self.config.ops {
            p.push(format!(
                "only {} of {} operations ran",
                self.stats.ops, self.config.ops
            ));
        }
        let (before, after) = (self.before(), self.after());
        let (others_before, others_after) =
            (before.fds - before.eventfds, after.fds - after.eventfds);
        if others_after > others_before + self.config.fd_slack {
            p.push(format!(
                "fds other than eventfds grew from {others_before} to {others_after} after the \
                 warm-up (slack {})",
                self.config.fd_slack
            ));
        }
        let bound = self.eventfd_bound();
        if after.eventfds > before.eventfds.max(bound) {
            p.push(format!(
                "eventfds grew from {} to {} after the warm-up, beyond what the notifier pools \
                 may keep at this concurrency ({bound})",
                before.eventfds, after.eventfds
            ));
        }
        if after.rss_kib > before.rss_kib + self.config.rss_slack_kib {
            p.push(format!(
                "RSS grew from {} KiB to {} KiB after the warm-up (slack {} KiB)",
                before.rss_kib, after.rss_kib, self.config.rss_slack_kib
            ));
        }
        p
    }

    pub fn render(&self) -> String {
        let c = &self.config;
        let s = &self.stats;
        let time = self.time();
        let mut o = String::new();
        let _ = writeln!(o, "seed={}", c.seed);
        if !c.without.is_empty() {
            let _ = writeln!(o, "without: {}", c.without.join(","));
        }
        let _ = writeln!(
            o,
            "backend={} threads={} depth={} files={}x{} (+{} tail) MIO_AIO_MAX_IN_FLIGHT={}",
            self.backend,
            c.threads,
            c.depth,
            c.threads * c.files_per_thread,
            c.file_size,
            c.tail,
            std::env::var("MIO_AIO_MAX_IN_FLIGHT").unwrap_or_else(|_| "unset".into())
        );
        let _ = writeln!(
            o,
            "warm-up: {} ops in {:.2?} ({} failures)",
            self.warmup.ops,
            self.rounds.first().map(|r| r.time).unwrap_or_default(),
            self.warmup.failures
        );
        let _ = writeln!(
            o,
            "run: {} ops in {:.2?} ({:.0} ops/s) in {} round(s); max in flight per thread {}",
            s.ops,
            time,
            s.ops as f64 / time.as_secs_f64().max(1e-9),
            self.rounds.len().saturating_sub(1),
            s.max_in_flight
        );
        let _ = writeln!(
            o,
            "  by type: read={} readv={} write={} writev={} fsync(O_SYNC)={} fsync(O_DSYNC)={} \
             batch={} (entries: read={} write={} nop={})",
            s.read,
            s.readv,
            s.write,
            s.writev,
            s.fsync_sync,
            s.fsync_dsync,
            s.batch,
            s.batch_read,
            s.batch_write,
            s.batch_nop
        );
        let _ = writeln!(
            o,
            "  zero-length={} short-at-EOF reads={} extending writes={} repeated submits={}",
            s.zero_len, s.short_at_eof, s.extending_writes, s.repeats
        );
        let _ = writeln!(
            o,
            "  cancels: AioCanceled={} AioNotCanceled={} AioAllDone={} (ECANCELED results: {}, of \
             which after AioNotCanceled: {}, after AioAllDone: {})",
            s.cancel_canceled,
            s.cancel_not_canceled,
            s.cancel_all_done,
            s.ecanceled,
            s.notcanceled_ecanceled,
            s.alldone_ecanceled
        );
        let _ = writeln!(
            o,
            "  drops: in flight ops={} batches={}; never started={}; longest drop {} us",
            s.drops, s.drops_batch, s.drops_not_started, s.drop_wait_max_us
        );
        let _ = writeln!(
            o,
            "  EAGAIN retries: submit={} batch EAGAIN={} batch EINCOMPLETE={} resubmits={}",
            s.eagain, s.batch_eagain, s.batch_eincomplete, s.resubmits
        );
        let _ = writeln!(
            o,
            "  polls={} events={} interrupted polls={}",
            s.polls, s.events, s.interrupted
        );
        let _ = writeln!(
            o,
            "  bytes: read={} written={} verified={} uncertain={} resolved-by-reads={}",
            s.bytes_read,
            s.bytes_written,
            s.bytes_verified,
            s.uncertain_bytes,
            s.uncertain_resolved
        );
        let _ = writeln!(
            o,
            "  errors (failures): {}",
            s.failures + self.warmup.failures
        );
        let _ = writeln!(
            o,
            "resources (eventfds are pooled notifiers, allowed up to {}; other fds must not grow; \
             RSS slack {} KiB):",
            self.eventfd_bound(),
            self.config.rss_slack_kib
        );
        let _ = writeln!(o, "resources at start:    {}", self.start);
        for (i, r) in self.rounds.iter().enumerate() {
            let name = if i == 0 {
                "after warm-up:".to_owned()
            } else {
                format!("after round {i}:")
            };
            let _ = writeln!(o, "resources {name:<12} {} ({} ops)", r.after, r.ops);
        }
        for m in &self.messages {
            let _ = writeln!(o, "FAILURE: {m}");
        }
        let problems = self.problems();
        if problems.is_empty() {
            let _ = writeln!(o, "result: PASS");
        } else {
            let _ = writeln!(o, "result: FAIL: {}", problems.join("; "));
        }
        o
    }
}

/// Runs the warm-up and the measured rounds, and reports.
///
/// Each worker thread keeps its `Poll`, its files and its model from the warm-up to the end, as a
/// long-running program would; between rounds every worker is idle (nothing in flight) while
/// the resources are measured.
pub fn run(config: &Config) -> Report {
    let start = Resources::now();
    let backend = backend_name();
    let tmp = match &config.dir {
        Some(d) => tempfile::Builder::new()
            .prefix("mio-aio-stress")
            .tempdir_in(d),
        None => tempfile::Builder::new().prefix("mio-aio-stress").tempdir(),
    }
    .expect("cannot make a temporary directory");
    let threads = config.threads.max(1);
    let rounds = config.rounds.max(1);
    // Operations of thread `t` in round `r` (0 is the warm-up).
    let quota = |r: u32, t: usize| {
        let (total, parts) = if r == 0 {
            (config.warmup_ops, 1)
        } else {
            (config.ops, u64::from(rounds))
        };
        let per_round = total / parts + u64::from(u64::from(r.max(1) - 1) < total % parts);
        let per_thread = per_round / threads as u64;
        per_thread + u64::from((t as u64) < per_round % threads as u64)
    };
    let (tx, rx) = std::sync::mpsc::channel::<(Stats, Vec<String>)>();
    let barrier = std::sync::Barrier::new(threads + 1);
    let dir = tmp.path();
    let mut report = Report {
        config: config.clone(),
        backend,
        warmup: Stats::default(),
        stats: Stats::default(),
        messages: Vec::new(),
        start,
        rounds: Vec::new(),
    };
    std::thread::scope(|s| {
        for t in 0..threads {
            let tx = tx.clone();
            let barrier = &barrier;
            std::thread::Builder::new()
                .name(format!("stress-{t}"))
                .spawn_scoped(s, move || {
                    worker_thread(config, t, dir, rounds, &quota, &tx, barrier)
                })
                .expect("spawn a worker thread");
        }
        for r in 0..=rounds {
            let t0 = Instant::now();
            let mut round = Stats::default();
            let mut received = 0;
            let mut seen = (PROGRESS.load(Ordering::Relaxed), Instant::now());
            while received < threads {
                match rx.recv_timeout(Duration::from_secs(1)) {
                    Ok((stats, messages)) => {
                        received += 1;
                        round.add(&stats);
                        report.messages.extend(messages);
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        let now = PROGRESS.load(Ordering::Relaxed);
                        if now != seen.0 {
                            seen = (now, Instant::now());
                        } else if seen.1.elapsed() >= WATCHDOG {
                            report.messages.push(format!(
                                "WATCHDOG: no operation completed in the process for {WATCHDOG:?} \
                                 (round {r}); a worker is stuck\n{}",
                                diagnostics()
                            ));
                            report.stats.add(&round);
                            report.stats.failures += 1;
                            // Straight to the process's stderr: libtest's capture would lose it at
                            // exit.
                            let text = format!(
                                "{}\nstress: watchdog: giving up (exit status 3)\n",
                                report.render()
                            );
                            let _ =
                                std::io::Write::write_all(&mut std::io::stderr(), text.as_bytes());
                            std::process::exit(3);
                        }
                    }
                    Err(e) => panic!("a worker thread is gone: {e}"),
                }
            }
            let time = t0.elapsed();
            let after = Resources::now();
            if config.progress {
                eprintln!(
                    "[{}] {} ops in {time:.2?}, {} failures; {after}",
                    if r == 0 {
                        "warm-up".to_owned()
                    } else {
                        format!("round {r}/{rounds}")
                    },
                    round.ops,
                    round.failures
                );
            }
            report.rounds.push(Round {
                ops: round.ops,
                failures: round.failures,
                time,
                after,
            });
            if r == 0 {
                report.warmup = round;
            } else {
                report.stats.add(&round);
            }
            barrier.wait();
        }
    });
    report
}

/// One worker thread: its own `Poll` and `Worker`, one `run` per round, reporting each round
/// then waiting until the resources are measured.
fn worker_thread(
    cfg: &Config,
    t: usize,
    dir: &Path,
    rounds: u32,
    quota: &dyn Fn(u32, usize) -> u64,
    tx: &std::sync::mpsc::Sender<(Stats, Vec<String>)>,
    barrier: &std::sync::Barrier,
) {
    let panic_text = |e: Box<dyn std::any::Any + Send>| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    };
    let failed = |msg: String| {
        let stats = Stats {
            failures: 1,
            ..Stats::default()
        };
        (stats, vec![format!("seed={} thread={t}: {msg}", cfg.seed)])
    };
    let made = std::panic::catch_unwind(|| (Poll::new(), Worker::new(cfg, t, dir)));
    let (mut poll, mut worker, mut broken) = match made {
        Ok((Ok(poll), w)) => (Some(poll), Some(w), None),
        Ok((Err(e), _)) => (None, None, Some(format!("Poll::new: {e}"))),
        Err(e) => (
            None,
            None,
            Some(format!("setup panicked: {}", panic_text(e))),
        ),
    };
    for r in 0..=rounds {
        let result = match (&mut poll, &mut worker, &broken) {
            (Some(poll), Some(w), None) => {
                let name = if r == 0 { "warm-up" } else { "run" };
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    w.run(poll, name, quota(r, t))
                }));
                match ran {
                    Ok(res) => res,
                    Err(e) => {
                        let msg = format!("round {r} panicked: {}", panic_text(e));
                        broken = Some(msg.clone());
                        failed(msg)
                    }
                }
            }
            _ => failed(format!(
                "round {r} skipped: {}",
                broken.as_deref().unwrap_or("no worker")
            )),
        };
        tx.send(result).expect("the main thread waits for it");
        barrier.wait();
    }
    if broken.is_some() || worker.as_ref().is_some_and(|w| w.aborted) {
        // Operations may still be in the kernel: leak them (and their buffers and files)
        // rather than block in their drops.
        std::mem::forget(worker);
    }
}

/// A heap buffer lent to an operation as a `'static` slice. It is freed only when dropped, and
/// whoever holds it makes sure that the operation that borrows it is gone (or idle) first.
struct RawBuf(*mut [u8]);

impl RawBuf {
    fn new(data: Vec<u8>) -> RawBuf {
        RawBuf(Box::into_raw(data.into_boxed_slice()))
    }

    /// # Safety
    /// The slice must not be used after `self` is dropped, and not alongside `get`.
    unsafe fn lend_mut(&mut self) -> &'static mut [u8] {
        // SAFETY: the allocation lives until `self` is dropped (the caller's contract).
        unsafe { &mut *self.0 }
    }

    /// # Safety
    /// The slice must not be used after `self` is dropped.
    unsafe fn lend(&self) -> &'static [u8] {
        // SAFETY: as above.
        unsafe { &*self.0 }
    }

    /// # Safety
    /// No operation may be writing into the buffer.
    unsafe fn get(&self) -> &[u8] {
        // SAFETY: the caller's contract.
        unsafe { &*self.0 }
    }

    /// # Safety
    /// No operation may be using the buffer.
    unsafe fn fill(&mut self, v: u8) {
        // SAFETY: the caller's contract.
        unsafe { (*self.0).fill(v) }
    }
}

impl Drop for RawBuf {
    fn drop(&mut self) {
        // SAFETY: made by Box::into_raw in `new`; owners drop the borrowing operation first.
        drop(unsafe { Box::from_raw(self.0) });
    }
}

#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum PartOp {
    Read,
    Write,
    Nop,
}

/// One operation of a plan: the only one of a single op, or one entry of a batch.
#[derive(Clone, Debug)]
struct Part {
    file: usize,
    off: u64,
    len: usize,
    op: PartOp,
    /// Lengths of the buffers (several for readv/writev); they add up to `len`.
    chunks: Vec<usize>,
    /// Where in the thread's data pool a write's bytes come from.
    data: usize,
    /// Batch writes: from a shared (`emplace_slice`) or a mutable buffer.
    shared: bool,
}

#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum Kind {
    Read,
    Readv,
    Write,
    Writev,
    Fsync(AioFsyncMode),
    Batch,
}

#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum Action {
    None,
    /// Cancel this many submissions after this op's.
    Cancel(u64),
    /// Drop this many submissions after this op's.
    Drop(u64),
}

#[derive(Clone, Debug)]
struct Planned {
    seq: u64,
    kind: Kind,
    parts: Vec<Part>,
    action: Action,
    repeat: bool,
    skipped: u32,
}

/// One operation or batch, registered and pinned.
enum Live {
    Read(Pin<Box<ReadAt<'static>>>),
    Readv(Pin<Box<ReadvAt<'static>>>),
    Write(Pin<Box<WriteAt<'static>>>),
    Writev(Pin<Box<WritevAt<'static>>>),
    Fsync(Pin<Box<Fsync<'static>>>),
    Batch(LioCb<'static>),
}

/// What a submission (or resubmission) gave.
#[derive(Debug)]
enum Submitted {
    Ok,
    Again,
    Incomplete,
    Failed(String),
}

macro_rules! single {
    ($live:expr, $op:ident => $e:expr, $b:ident => $be:expr) => {
        match $live {
            Live::Read($op) => $e,
            Live::Readv($op) => $e,
            Live::Write($op) => $e,
            Live::Writev($op) => $e,
            Live::Fsync($op) => $e,
            Live::Batch($b) => $be,
        }
    };
}

impl Live {
    fn submit(&mut self, resubmit: bool) -> Submitted {
        fn lio(r: Result<(), LioError>) -> Submitted {
            match r {
                Ok(()) => Submitted::Ok,
                Err(LioError::EAGAIN) => Submitted::Again,
                Err(LioError::EINCOMPLETE) => Submitted::Incomplete,
                Err(e) => Submitted::Failed(format!("{e:?}")),
            }
        }
        single!(self,
            op => match op.as_mut().submit() {
                Ok(()) => Submitted::Ok,
                Err(Errno::EAGAIN) => Submitted::Again,
                Err(e) => Submitted::Failed(format!("submit: {e}")),
            },
            b => lio(if resubmit { b.resubmit() } else { b.submit() })
        )
    }

    fn cancel(&mut self) -> Option<nix_result::Result<AioCancelStat>> {
        single!(self, op => Some(op.as_mut().cancel()), _b => None)
    }

    fn aio_return(&mut self) -> nix_result::Result<usize> {
        match self {
            Live::Read(op) => op.as_mut().aio_return(),
            Live::Readv(op) => op.as_mut().aio_return(),
            Live::Write(op) => op.as_mut().aio_return(),
            Live::Writev(op) => op.as_mut().aio_return(),
            Live::Fsync(op) => op.as_mut().aio_return().map(|()| 0),
            Live::Batch(_) => unreachable!("batches use into_results"),
        }
    }

    /// Whether the operation (every started operation of a batch) has completed.
    fn done(&mut self) -> bool {
        single!(self, op => op.as_mut().error() != Err(Errno::EINPROGRESS), b => !b.in_progress())
    }
}

/// `nix::Result`, named through the re-exported `Errno` (the tests do not depend on nix).
mod nix_result {
    pub type Result<T> = std::result::Result<T, mio_aio::Errno>;
}

#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum State {
    /// Submission refused with EAGAIN: retried; no event pending.
    Again,
    /// Submitted; its event is awaited.
    Running,
    /// A batch partly started: its event is awaited, then `resubmit`.
    Incomplete,
}

struct InFlight {
    /// Declared before `bufs`, so it is dropped (waiting for the kernel) before they are freed.
    live: Option<Live>,
    bufs: Vec<Vec<RawBuf>>,
    plan: Planned,
    state: State,
    /// Whether the kernel may have seen it (a batch after EAGAIN may have no started entry).
    started: bool,
    cancel: Option<AioCancelStat>,
    since: Instant,
    done_without_event: Option<Instant>,
}

#[derive(Clone, Copy, Debug)]
struct Lock {
    start: u64,
    end: u64,
    excl: bool,
    seq: u64,
}

/// What happened to an op, for failure reports.
#[derive(Clone, Debug)]
struct Hist {
    seq: u64,
    what: &'static str,
    off: u64,
    len: usize,
    /// Bytes, `-errno`, or `DROPPED`.
    res: i64,
    data: usize,
    cancel: Option<AioCancelStat>,
}

const DROPPED: i64 = i64::MIN;

/// The data of a write whose outcome is unknown: each byte of `[off, off + data.len())` may
/// hold its value here instead of the model's.
#[derive(Clone, Debug)]
struct Layer {
    off: u64,
    data: Vec<u8>,
}

impl Layer {
    fn end(&self) -> u64 {
        self.off + self.data.len() as u64
    }
}

struct FileModel {
    path: PathBuf,
    file: File,
    content: Vec<u8>,
    size: u64,
    /// Uncertain writes: other possible values of their bytes (the model's own is in
    /// `content`).
    layers: Vec<Layer>,
    locks: Vec<Lock>,
    hist: VecDeque<Hist>,
}

impl FileModel {
    fn conflicts(&self, start: u64, end: u64, excl: bool) -> bool {
        self.locks
            .iter()
            .any(|l| l.start < end && start < l.end && (excl || l.excl))
    }

    fn remember(&mut self, h: Hist) {
        if self.hist.len() == HISTORY {
            self.hist.pop_front();
        }
        self.hist.push_back(h);
    }

    /// Makes `[off, off + data.len())` certain with `data` (a completed write).
    fn write(&mut self, off: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = off + data.len() as u64;
        self.content[off as usize..end as usize].copy_from_slice(data);
        self.make_certain(off, end);
        self.size = self.size.max(end);
    }

    /// Bytes of `[off, end)` that are uncertain.
    fn uncertain_in(&self, off: u64, end: u64) -> u64 {
        self.layers
            .iter()
            .map(|l| l.end().min(end).saturating_sub(l.off.max(off)))
            .sum()
    }

    /// Forgets the other candidates of `[off, end)`: the model's bytes are the truth there.
    fn make_certain(&mut self, off: u64, end: u64) {
        if !self.layers.iter().any(|l| l.off < end && off < l.end()) {
            return;
        }
        let mut kept = Vec::with_capacity(self.layers.len() + 1);
        for l in self.layers.drain(..) {
            if l.end() <= off || end <= l.off {
                kept.push(l);
                continue;
            }
            if l.off < off {
                kept.push(Layer {
                    off: l.off,
                    data: l.data[..(off - l.off) as usize].to_vec(),
                });
            }
            if end < l.end() {
                kept.push(Layer {
                    off: end,
                    data: l.data[(end - l.off) as usize..].to_vec(),
                });
            }
        }
        self.layers = kept;
    }

    /// Whether `v` is a possible value of the byte at `pos`.
    fn possible(&self, pos: u64, v: u8) -> bool {
        self.content[pos as usize] == v
            || self
                .layers
                .iter()
                .any(|l| l.off <= pos && pos < l.end() && l.data[(pos - l.off) as usize] == v)
    }

    /// The other possible values of the byte at `pos`.
    fn candidates(&self, pos: u64) -> Vec<u8> {
        self.layers
            .iter()
            .filter(|l| l.off <= pos && pos < l.end())
            .map(|l| l.data[(pos - l.off) as usize])
            .collect()
    }

    /// A write whose outcome is unknown: each byte below `new_size` may now hold the old or the
    /// new value. Returns how many bytes became uncertain.
    fn maybe_written(&mut self, off: u64, data: &[u8], new_size: u64) -> u64 {
        let n = (data.len() as u64).min(new_size.saturating_sub(off)) as usize;
        self.size = new_size;
        if n == 0 || self.content[off as usize..off as usize + n] == data[..n] {
            return 0;
        }
        self.layers.push(Layer {
            off,
            data: data[..n].to_vec(),
        });
        n as u64
    }
}

/// The length a read of `len` bytes at `off` must return from a file of `size` bytes.
fn expected_read(size: u64, off: u64, len: usize) -> usize {
    if off >= size {
        0
    } else {
        (len as u64).min(size - off) as usize
    }
}

/// The range an op part locks, given the file's size: `None` for nothing.
fn lock_range(size: u64, off: u64, len: usize) -> Option<(u64, u64)> {
    if len == 0 {
        return None;
    }
    let end = off + len as u64;
    if end > size {
        Some((off.min(size), u64::MAX))
    } else {
        Some((off, end))
    }
}

fn errno_of(r: &nix_result::Result<usize>) -> i64 {
    match r {
        Ok(n) => *n as i64,
        Err(e) => -(*e as i64),
    }
}

fn fmt_res(res: i64) -> String {
    if res == DROPPED {
        "dropped".into()
    } else if res < 0 {
        format!("Err({})", Errno::from_raw(-res as i32))
    } else {
        format!("Ok({res})")
    }
}

struct Worker<'c> {
    cfg: &'c Config,
    phase: &'static str,
    t: usize,
    quota: u64,
    gen: Rng,
    pool: Vec<u8>,
    files: Vec<FileModel>,
    inflight: HashMap<u64, InFlight>,
    pending: VecDeque<Planned>,
    /// (submission count, seq, action)
    scheduled: Vec<(u64, u64, Action)>,
    generated: u64,
    submissions: u64,
    stats: Stats,
    messages: Vec<String>,
    last_progress: Instant,
    aborted: bool,
}

impl<'c> Worker<'c> {
    fn new(cfg: &'c Config, t: usize, dir: &Path) -> Worker<'c> {
        let mut setup = Rng::new(cfg.seed.wrapping_add(0x1000 + t as u64));
        let gen = Rng::new(cfg.seed.wrapping_add(t as u64));
        let mut pool = vec![0u8; 2 << 20];
        setup.fill(&mut pool);
        let cap = (cfg.file_size + cfg.tail) as usize;
        let files = (0..cfg.files_per_thread)
            .map(|i| {
                let path = dir.join(format!("t{t}-f{i}"));
                let mut content = vec![0u8; cap];
                setup.fill(&mut content[..cfg.file_size as usize]);
                std::fs::write(&path, &content[..cfg.file_size as usize]).expect("write file");
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .expect("open file");
                FileModel {
                    path,
                    file,
                    content,
                    size: cfg.file_size,
                    layers: Vec::new(),
                    locks: Vec::new(),
                    hist: VecDeque::new(),
                }
            })
            .collect();
        Worker {
            cfg,
            phase: "setup",
            t,
            quota: 0,
            gen,
            pool,
            files,
            inflight: HashMap::new(),
            pending: VecDeque::new(),
            scheduled: Vec::new(),
            generated: 0,
            submissions: 0,
            stats: Stats::default(),
            messages: Vec::new(),
            last_progress: Instant::now(),
            aborted: false,
        }
    }

    fn fail(&mut self, msg: String) {
        self.stats.failures += 1;
        let full = format!(
            "seed={} backend={} {} thread={}: {msg}",
            self.cfg.seed,
            backend_name(),
            self.phase,
            self.t
        );
        // Each failure is printed once: by the report if it keeps the message, else here.
        if self.messages.len() < MAX_MESSAGES {
            self.messages.push(full);
        } else {
            eprintln!("FAILURE: {full}");
        }
    }

    // ---- generation: depends only on the RNG, never on what is in flight ----

    /// An extent: offset and length, sometimes page-aligned, sometimes empty.
    fn gen_extent(&mut self, write: bool, max_len: u64) -> (u64, usize) {
        let r = &mut self.gen;
        let size0 = self.cfg.file_size;
        let cap = size0 + self.cfg.tail;
        let aligned = r.chance(100);
        let len = match r.below(100) {
            0..=3 => 0,
            4..=33 => r.between(1, 512),
            34..=69 => r.between(513, 8192),
            _ => r.between(8193, 65536),
        }
        .min(max_len);
        let len = if aligned {
            (len / 4096).max(1) * 4096
        } else {
            len
        }
        .min(max_len);
        let off = if write {
            // Mostly inside the initial size; sometimes anywhere up to the cap (extending the
            // file, perhaps leaving a hole).
            let limit = if r.chance(850) { size0 } else { cap };
            r.below(limit - len + 1)
        } else {
            r.below(cap + 16384)
        };
        let off = if aligned { off & !4095 } else { off };
        (off, len as usize)
    }

    /// Splits `len` into 1 to 8 chunks (some may be empty).
    fn gen_chunks(&mut self, len: usize) -> Vec<usize> {
        let k = self.gen.between(1, 8) as usize;
        let mut cuts: Vec<usize> = (1..k)
            .map(|_| self.gen.below(len as u64 + 1) as usize)
            .collect();
        cuts.push(0);
        cuts.push(len);
        cuts.sort_unstable();
        cuts.windows(2).map(|w| w[1] - w[0]).collect()
    }

    fn gen_part(&mut self, op: PartOp, vectored: bool, max_len: u64) -> Part {
        let file = self.gen.below(self.files.len() as u64) as usize;
        let (off, len) = match op {
            PartOp::Nop => (0, self.gen.below(64) as usize),
            _ => self.gen_extent(op == PartOp::Write, max_len),
        };
        let chunks = if vectored {
            self.gen_chunks(len)
        } else {
            vec![len]
        };
        let data = self.gen.below((self.pool.len() - len) as u64 + 1) as usize;
        let shared = self.gen.chance(500);
        Part {
            file,
            off,
            len,
            op,
            chunks,
            data,
            shared,
        }
    }

    fn generate(&mut self) -> Planned {
        let seq = self.generated;
        self.generated += 1;
        let roll = self.gen.below(1000);
        let (kind, parts) = match roll {
            0..=279 => (Kind::Read, vec![self.gen_part(PartOp::Read, false, 65536)]),
            280..=419 => (Kind::Readv, vec![self.gen_part(PartOp::Read, true, 65536)]),
            420..=699 => (
                Kind::Write,
                vec![self.gen_part(PartOp::Write, false, 65536)],
            ),
            700..=839 => (
                Kind::Writev,
                vec![self.gen_part(PartOp::Write, true, 65536)],
            ),
            840..=869 => {
                let mode = if self.gen.chance(500) {
                    AioFsyncMode::O_SYNC
                } else {
                    DSYNC
                };
                let mut p = self.gen_part(PartOp::Nop, false, 0);
                p.len = 0;
                p.chunks = vec![0];
                (Kind::Fsync(mode), vec![p])
            }
            _ => {
                let n = self.gen.between(1, 16);
                let mut parts: Vec<Part> = Vec::new();
                for _ in 0..n {
                    let op = match self.gen.below(100) {
                        0..=39 => PartOp::Read,
                        40..=84 => PartOp::Write,
                        _ => PartOp::Nop,
                    };
                    let mut p = self.gen_part(op, false, 16384);
                    // Entries of one batch run concurrently: one that overlaps an earlier one
                    // (as the locks would see it, whatever the file's size by then) becomes a
                    // no-op.
                    let size0 = self.cfg.file_size;
                    if p.op != PartOp::Nop {
                        if let Some((s, e)) = lock_range(size0, p.off, p.len) {
                            let clash = parts.iter().any(|q| {
                                q.file == p.file
                                    && q.op != PartOp::Nop
                                    && (q.op == PartOp::Write || p.op == PartOp::Write)
                                    && lock_range(size0, q.off, q.len)
                                        .is_some_and(|(qs, qe)| qs < e && s < qe)
                            });
                            if clash {
                                p.op = PartOp::Nop;
                            }
                        }
                    }
                    parts.push(p);
                }
                (Kind::Batch, parts)
            }
        };
        let a = self.gen.below(1000);
        let delay = self.gen.below(5);
        let action = match (kind, a) {
            (Kind::Batch, 0..=39) => Action::Drop(delay),
            (Kind::Batch, _) => Action::None,
            (_, 0..=59) => Action::Cancel(delay),
            (_, 60..=89) => Action::Drop(delay),
            _ => Action::None,
        };
        let repeat = kind != Kind::Batch && self.gen.chance(30);
        let mut plan = Planned {
            seq,
            kind,
            parts,
            action,
            repeat,
            skipped: 0,
        };
        if !self.cfg.without.is_empty() {
            self.leave_out(&mut plan);
        }
        plan
    }

    /// Replaces the features of `plan` that the configuration leaves out.
    fn leave_out(&self, plan: &mut Planned) {
        let without = |f: &str| self.cfg.without.iter().any(|w| w == f);
        let single = |p: &Part| {
            let mut p = p.clone();
            p.chunks = vec![p.len];
            p
        };
        if without("batch") && plan.kind == Kind::Batch {
            let mut p = single(&plan.parts[0]);
            plan.kind = match p.op {
                PartOp::Write => Kind::Write,
                _ => Kind::Read,
            };
            if p.op == PartOp::Nop {
                p.op = PartOp::Read;
                p.len = 0;
                p.chunks = vec![0];
            }
            plan.parts = vec![p];
        }
        if without("vectored") {
            match plan.kind {
                Kind::Readv => plan.kind = Kind::Read,
                Kind::Writev => plan.kind = Kind::Write,
                _ => {}
            }
            if matches!(plan.kind, Kind::Read | Kind::Write) {
                plan.parts[0] = single(&plan.parts[0]);
            }
        }
        if without("fsync") && matches!(plan.kind, Kind::Fsync(_)) {
            plan.kind = Kind::Read;
            plan.parts[0].op = PartOp::Read;
        }
        match plan.action {
            Action::Cancel(_) if without("cancel") => plan.action = Action::None,
            Action::Drop(_) if without("drop") => plan.action = Action::None,
            _ => {}
        }
        if without("repeat") {
            plan.repeat = false;
        }
    }

    // ---- the event loop ----

    /// Runs `ops` more operations, until none is in flight, then checks the files; returns
    /// (and resets) the counters and failure messages.
    fn run(&mut self, poll: &mut Poll, phase: &'static str, ops: u64) -> (Stats, Vec<String>) {
        self.phase = phase;
        self.quota += ops;
        if self.aborted {
            self.fail("not run: an earlier round was aborted".into());
            return (
                std::mem::take(&mut self.stats),
                std::mem::take(&mut self.messages),
            );
        }
        if phase == "run"
            && self.t == 0
            && std::env::var("MIO_AIO_STRESS_INJECT").is_ok_and(|v| v == "1")
        {
            self.inject_fault();
        }
        let mut events = Events::with_capacity(256);
        let mut last_event = Instant::now();
        loop {
            while self.pending.len() < WINDOW && self.generated < self.quota {
                let p = self.generate();
                self.pending.push_back(p);
            }
            self.retry_again();
            self.start_pending(poll);
            self.run_actions();
            self.stats.max_in_flight = self.stats.max_in_flight.max(self.inflight.len() as u64);
            if self.inflight.is_empty() && self.pending.is_empty() {
                break;
            }
            if self.aborted {
                break;
            }
            self.progress();
            let again = self.inflight.values().any(|f| f.state == State::Again);
            let timeout = if again {
                Duration::from_millis(1)
            } else {
                Duration::from_secs(1)
            };
            self.stats.polls += 1;
            match poll.poll(&mut events, Some(timeout)) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                    self.stats.interrupted += 1;
                    continue;
                }
                Err(e) => {
                    self.fail(format!("Poll::poll failed: {e}"));
                    self.aborted = true;
                    break;
                }
                Ok(()) => {}
            }
            if events.is_empty() {
                if !again {
                    self.check_stuck(last_event);
                }
                continue;
            }
            last_event = Instant::now();
            PROGRESS.fetch_add(1, Ordering::Relaxed);
            for ev in events.iter() {
                self.stats.events += 1;
                self.on_event(ev.token().0 as u64, false);
            }
        }
        if self.aborted {
            // Ops may still be in the kernel: leak them (and their buffers and files) rather
            // than block in their drops.
            self.fail(format!(
                "aborted with {} ops in flight: {:?}",
                self.inflight.len(),
                self.inflight.keys().take(16).collect::<Vec<_>>()
            ));
            for (_, f) in self.inflight.drain() {
                std::mem::forget(f);
            }
            std::mem::forget(std::mem::take(&mut self.files));
        } else {
            if phase == "run"
                && self.t == 0
                && std::env::var("MIO_AIO_STRESS_INJECT").is_ok_and(|v| v == "1")
            {
                // Once more, where only the final check can see it.
                self.inject_fault();
            }
            self.final_check();
        }
        (
            std::mem::take(&mut self.stats),
            std::mem::take(&mut self.messages),
        )
    }

    /// Self-test of the checker (`MIO_AIO_STRESS_INJECT=1`): changes one byte of file 0 behind
    /// the model's back, as a lost or misplaced write would; reads of it must then fail.
    fn inject_fault(&mut self) {
        use std::os::unix::fs::FileExt;
        let pos = 12_345;
        let f = &self.files[0];
        let v = !f.content[pos];
        eprintln!("stress: injecting a fault: file 0, offset {pos}: {v:#04x} behind the model");
        f.file
            .write_all_at(&[v], pos as u64)
            .expect("inject a fault");
    }

    fn progress(&mut self) {
        if self.cfg.progress
            && self.t == 0
            && self.last_progress.elapsed() >= Duration::from_secs(10)
        {
            self.last_progress = Instant::now();
            eprintln!(
                "[{}] thread 0: {} of {} ops, {} in flight, {} failures",
                self.phase,
                self.stats.ops,
                self.quota,
                self.inflight.len(),
                self.stats.failures
            );
        }
    }

    /// After a poll that timed out: completed ops without an event are lost events; ops that
    /// never complete are a hang.
    fn check_stuck(&mut self, last_event: Instant) {
        let now = Instant::now();
        let mut lost = Vec::new();
        for (&seq, f) in self.inflight.iter_mut() {
            if f.state == State::Again {
                continue;
            }
            let live = f.live.as_mut().expect("live op");
            if live.done() {
                match f.done_without_event {
                    None => f.done_without_event = Some(now),
                    Some(t) if now - t >= LOST_EVENT => lost.push(seq),
                    Some(_) => {}
                }
            }
        }
        for seq in lost {
            let f = &self.inflight[&seq];
            let msg = format!(
                "LOST EVENT: op seq={} {:?} ({:?}) completed but its token never came back from \
                 Poll::poll (waited {:?}); parts: {:?}",
                seq,
                f.plan.kind,
                f.state,
                f.done_without_event.map(|t| t.elapsed()),
                f.plan.parts
            );
            self.fail(msg);
            self.on_event(seq, true);
        }
        if now - last_event >= HANG && !self.inflight.is_empty() {
            let oldest: Vec<String> = self
                .inflight
                .values()
                .filter(|f| f.since.elapsed() >= HANG)
                .take(8)
                .map(|f| {
                    format!(
                        "seq={} {:?} state={:?} cancel={:?} for {:?} parts={:?} buffer={:?}",
                        f.plan.seq,
                        f.plan.kind,
                        f.state,
                        f.cancel,
                        f.since.elapsed(),
                        f.plan.parts,
                        f.bufs
                            .first()
                            .and_then(|b| b.first())
                            .map(|b| b.0 as *const u8)
                    )
                })
                .collect();
            if !oldest.is_empty() {
                self.fail(format!(
                    "HANG: no event for {HANG:?}; ops in flight that long: {oldest:?}\n{}",
                    diagnostics()
                ));
                self.aborted = true;
            }
        }
    }

    /// Resubmits whatever got EAGAIN.
    fn retry_again(&mut self) {
        let mut again: Vec<u64> = self
            .inflight
            .iter()
            .filter(|(_, f)| f.state == State::Again)
            .map(|(&s, _)| s)
            .collect();
        again.sort_unstable();
        for seq in again {
            let f = self.inflight.get_mut(&seq).expect("in flight");
            let batch = f.plan.kind == Kind::Batch;
            // A batch that never started is submitted again; one that started in part is
            // resubmitted (which starts whatever has not started yet).
            let r = f.live.as_mut().expect("live").submit(batch && f.started);
            if batch {
                self.stats.resubmits += 1;
            }
            self.after_submit(seq, r);
            if self
                .inflight
                .get(&seq)
                .is_some_and(|f| f.state == State::Again)
            {
                // The queue is still full: later ones would fail too.
                break;
            }
        }
    }

    /// Starts pending ops that no in-flight op blocks, oldest first.
    fn start_pending(&mut self, poll: &mut Poll) {
        let mut i = 0;
        while i < self.pending.len() && self.inflight.len() < self.cfg.depth {
            if self.blocked(&self.pending[i]) {
                self.pending[i].skipped += 1;
                if i == 0 && self.pending[0].skipped > MAX_SKIPS {
                    // Let the oldest through before anything newer.
                    return;
                }
                i += 1;
                continue;
            }
            let plan = self.pending.remove(i).expect("index checked");
            self.start(poll, plan);
        }
    }

    fn blocked(&self, plan: &Planned) -> bool {
        plan.parts.iter().any(|p| {
            if p.op == PartOp::Nop {
                return false;
            }
            let f = &self.files[p.file];
            lock_range(f.size, p.off, p.len)
                .is_some_and(|(s, e)| f.conflicts(s, e, p.op == PartOp::Write))
        })
    }

    fn start(&mut self, poll: &mut Poll, plan: Planned) {
        let seq = plan.seq;
        // Locks first (the op's ranges are free: `blocked` said so).
        for p in &plan.parts {
            if p.op == PartOp::Nop {
                continue;
            }
            let f = &mut self.files[p.file];
            if let Some((start, end)) = lock_range(f.size, p.off, p.len) {
                f.locks.push(Lock {
                    start,
                    end,
                    excl: p.op == PartOp::Write,
                    seq,
                });
            }
        }
        self.count(&plan);
        let mut bufs: Vec<Vec<RawBuf>> = plan
            .parts
            .iter()
            .map(|p| match p.op {
                PartOp::Read => p
                    .chunks
                    .iter()
                    .map(|&c| RawBuf::new(vec![POISON; c]))
                    .collect(),
                PartOp::Write => {
                    let mut at = p.data;
                    p.chunks
                        .iter()
                        .map(|&c| {
                            let b = RawBuf::new(self.pool[at..at + c].to_vec());
                            at += c;
                            b
                        })
                        .collect()
                }
                PartOp::Nop => vec![RawBuf::new(vec![0; p.len])],
            })
            .collect();
        let live = match self.build(poll, &plan, &mut bufs) {
            Ok(l) => l,
            Err(e) => {
                self.fail(format!(
                    "seq={seq}: registering {:?} failed: {e}",
                    plan.kind
                ));
                self.release(seq, &plan);
                return;
            }
        };
        let action = plan.action;
        self.inflight.insert(
            seq,
            InFlight {
                live: Some(live),
                bufs,
                plan,
                state: State::Again,
                started: false,
                cancel: None,
                since: Instant::now(),
                done_without_event: None,
            },
        );
        let r = self
            .inflight
            .get_mut(&seq)
            .expect("just inserted")
            .live
            .as_mut()
            .expect("live")
            .submit(false);
        self.after_submit(seq, r);
        match action {
            Action::None => {}
            Action::Cancel(d) | Action::Drop(d) => {
                self.scheduled.push((self.submissions + d, seq, action))
            }
        }
    }

    fn count(&mut self, plan: &Planned) {
        let s = &mut self.stats;
        s.ops += 1;
        match plan.kind {
            Kind::Read => s.read += 1,
            Kind::Readv => s.readv += 1,
            Kind::Write => s.write += 1,
            Kind::Writev => s.writev += 1,
            Kind::Fsync(mode) if mode == DSYNC => s.fsync_dsync += 1,
            Kind::Fsync(_) => s.fsync_sync += 1,
            Kind::Batch => {
                s.batch += 1;
                for p in &plan.parts {
                    match p.op {
                        PartOp::Read => s.batch_read += 1,
                        PartOp::Write => s.batch_write += 1,
                        PartOp::Nop => s.batch_nop += 1,
                    }
                }
            }
        }
        for p in &plan.parts {
            if p.op != PartOp::Nop && p.len == 0 {
                s.zero_len += 1;
            }
            if p.op == PartOp::Write && p.off + p.len as u64 > self.files[p.file].size {
                s.extending_writes += 1;
            }
        }
    }

    /// Makes the operation, registers it (before pinning) and pins it.
    fn build(
        &self,
        poll: &mut Poll,
        plan: &Planned,
        bufs: &mut [Vec<RawBuf>],
    ) -> std::io::Result<Live> {
        let token = Token(plan.seq as usize);
        let fd = |file: usize| {
            // SAFETY: the files outlive every operation: a worker drains (or, when it gives
            // up, leaks) its operations before its files are closed.
            unsafe { BorrowedFd::borrow_raw(self.files[file].file.as_raw_fd()) }
        };
        let reg = poll.registry();
        let p = &plan.parts[0];
        // SAFETY (all `lend*` calls): the buffers are kept in the same `InFlight` as the
        // operation, which is declared (hence dropped) first; the dropped operation has waited
        // for the kernel to finish with them.
        Ok(match plan.kind {
            Kind::Read => {
                let mut op =
                    ReadAt::read_at(fd(p.file), p.off, unsafe { bufs[0][0].lend_mut() }, 0);
                reg.register(&mut op, token, mio_aio::AIO)?;
                Live::Read(Box::pin(op))
            }
            Kind::Readv => {
                let mut slices: Vec<IoSliceMut<'static>> = bufs[0]
                    .iter_mut()
                    .map(|b| IoSliceMut::new(unsafe { b.lend_mut() }))
                    .collect();
                let mut op = ReadvAt::readv_at(fd(p.file), p.off, &mut slices, 0);
                reg.register(&mut op, token, mio_aio::AIO)?;
                Live::Readv(Box::pin(op))
            }
            Kind::Write => {
                let mut op = WriteAt::write_at(fd(p.file), p.off, unsafe { bufs[0][0].lend() }, 0);
                reg.register(&mut op, token, mio_aio::AIO)?;
                Live::Write(Box::pin(op))
            }
            Kind::Writev => {
                let slices: Vec<IoSlice<'static>> = bufs[0]
                    .iter()
                    .map(|b| IoSlice::new(unsafe { b.lend() }))
                    .collect();
                let mut op = WritevAt::writev_at(fd(p.file), p.off, &slices, 0);
                reg.register(&mut op, token, mio_aio::AIO)?;
                Live::Writev(Box::pin(op))
            }
            Kind::Fsync(mode) => {
                let mut op = Fsync::fsync(fd(p.file), mode, 0);
                reg.register(&mut op, token, mio_aio::AIO)?;
                Live::Fsync(Box::pin(op))
            }
            Kind::Batch => {
                let mut b = LioCbBuilder::with_capacity(plan.parts.len());
                for (p, buf) in plan.parts.iter().zip(bufs.iter_mut()) {
                    let buf = &mut buf[0];
                    b = match (p.op, p.shared) {
                        (PartOp::Read, _) => b.emplace_mut_slice(
                            fd(p.file),
                            p.off,
                            unsafe { buf.lend_mut() },
                            0,
                            LioOpcode::LIO_READ,
                        ),
                        (PartOp::Write, true) => b.emplace_slice(
                            fd(p.file),
                            p.off,
                            unsafe { buf.lend() },
                            0,
                            LioOpcode::LIO_WRITE,
                        ),
                        (PartOp::Write, false) => b.emplace_mut_slice(
                            fd(p.file),
                            p.off,
                            unsafe { buf.lend_mut() },
                            0,
                            LioOpcode::LIO_WRITE,
                        ),
                        (PartOp::Nop, _) => b.emplace_slice(
                            fd(p.file),
                            p.off,
                            unsafe { buf.lend() },
                            0,
                            LioOpcode::LIO_NOP,
                        ),
                    };
                }
                let mut lio = b.finish();
                reg.register(&mut lio, token, mio_aio::LIO)?;
                Live::Batch(lio)
            }
        })
    }

    /// Bookkeeping after `submit`/`resubmit`.
    fn after_submit(&mut self, seq: u64, r: Submitted) {
        let f = self.inflight.get_mut(&seq).expect("in flight");
        let batch = f.plan.kind == Kind::Batch;
        match r {
            Submitted::Ok => {
                f.state = State::Running;
                f.started = true;
                f.since = Instant::now();
                self.submissions += 1;
            }
            Submitted::Again => {
                f.state = State::Again;
                if batch {
                    self.stats.batch_eagain += 1;
                } else {
                    self.stats.eagain += 1;
                }
            }
            Submitted::Incomplete => {
                f.state = State::Incomplete;
                f.started = true;
                f.since = Instant::now();
                self.stats.batch_eincomplete += 1;
                self.submissions += 1;
            }
            Submitted::Failed(e) => {
                // Every op we make is valid: any refusal other than EAGAIN is a failure. A
                // batch refused with EIO still delivers its event for the started entries.
                let kind = f.plan.kind;
                f.state = State::Running;
                f.started = true;
                let parts = f.plan.parts.clone();
                self.fail(format!(
                    "seq={seq} {kind:?}: unexpected submission error {e}; parts {parts:?}"
                ));
                if !batch {
                    // No event will come: forget the op (it is not in flight).
                    self.finish_removed(seq);
                }
            }
        }
    }

    /// Removes an op that is not in flight, releasing its locks.
    fn finish_removed(&mut self, seq: u64) {
        if let Some(f) = self.inflight.remove(&seq) {
            let plan = f.plan.clone();
            drop(f);
            self.release(seq, &plan);
        }
    }

    fn release(&mut self, seq: u64, plan: &Planned) {
        for p in &plan.parts {
            self.files[p.file].locks.retain(|l| l.seq != seq);
        }
    }

    /// Carries out the cancels and drops whose time has come.
    fn run_actions(&mut self) {
        if self.scheduled.is_empty() {
            return;
        }
        let now = self.submissions;
        let due: Vec<(u64, u64, Action)> = {
            let (due, later): (Vec<_>, Vec<_>) =
                self.scheduled.drain(..).partition(|&(at, _, _)| at <= now);
            self.scheduled = later;
            due
        };
        for (_, seq, action) in due {
            if !self.inflight.contains_key(&seq) {
                continue; // already complete
            }
            match action {
                Action::Cancel(_) => self.cancel(seq),
                Action::Drop(_) => self.drop_op(seq),
                Action::None => {}
            }
        }
    }

    fn cancel(&mut self, seq: u64) {
        let f = self.inflight.get_mut(&seq).expect("in flight");
        if f.state != State::Running {
            return;
        }
        let Some(r) = f.live.as_mut().expect("live").cancel() else {
            return;
        };
        match r {
            Ok(stat) => {
                f.cancel = Some(stat);
                match stat {
                    AioCancelStat::AioCanceled => self.stats.cancel_canceled += 1,
                    AioCancelStat::AioNotCanceled => self.stats.cancel_not_canceled += 1,
                    AioCancelStat::AioAllDone => self.stats.cancel_all_done += 1,
                }
            }
            Err(e) => {
                let kind = f.plan.kind;
                self.fail(format!("seq={seq} {kind:?}: cancel() failed: {e}"));
            }
        }
    }

    /// Drops an op in flight (or waiting to be resubmitted), then accounts for what its writes
    /// may have done.
    fn drop_op(&mut self, seq: u64) {
        let mut f = self.inflight.remove(&seq).expect("in flight");
        let batch = f.plan.kind == Kind::Batch;
        if !f.started {
            self.stats.drops_not_started += 1;
        } else if batch {
            self.stats.drops_batch += 1;
        } else {
            self.stats.drops += 1;
        }
        let t = Instant::now();
        drop(f.live.take());
        let waited = t.elapsed().as_micros() as u64;
        self.stats.drop_wait_max_us = self.stats.drop_wait_max_us.max(waited);
        let certain_nothing = !f.started
            || (f.state == State::Again && !batch)
            || f.cancel == Some(AioCancelStat::AioCanceled);
        for p in &f.plan.parts {
            if p.op != PartOp::Write {
                continue;
            }
            let data = self.pool[p.data..p.data + p.len].to_vec();
            let what = if batch { "batch-write" } else { "write" };
            if !certain_nothing {
                self.uncertain_write(seq, p, &data);
            }
            self.files[p.file].remember(Hist {
                seq,
                what,
                off: p.off,
                len: p.len,
                res: DROPPED,
                data: p.data,
                cancel: f.cancel,
            });
        }
        let plan = f.plan.clone();
        drop(f);
        self.release(seq, &plan);
    }

    /// A write that may or may not have happened (in whole or in part).
    fn uncertain_write(&mut self, seq: u64, p: &Part, data: &[u8]) {
        let size = self.files[p.file].size;
        let end = p.off + p.len as u64;
        let mut new_size = size;
        if end > size {
            // It held the lock to infinity: nothing else changed the size meanwhile.
            match self.files[p.file].file.metadata() {
                Ok(m) => new_size = m.len(),
                Err(e) => self.fail(format!("fstat after dropping seq={seq}: {e}")),
            }
        }
        if new_size < size || new_size > size.max(end) {
            self.fail(format!(
                "file {} size is {new_size} after op seq={seq} (write off={} len={}) ended \
                 uncertainly; expected {size} or {}",
                p.file,
                p.off,
                p.len,
                size.max(end)
            ));
        }
        let new_size = new_size.clamp(size, size.max(end));
        let n = self.files[p.file].maybe_written(p.off, data, new_size);
        self.stats.uncertain_bytes += n;
    }

    // ---- completions ----

    /// The event of op `seq` (or, with `forced`, a lost one found by polling its status).
    fn on_event(&mut self, seq: u64, forced: bool) {
        let Some(f) = self.inflight.get_mut(&seq) else {
            self.fail(format!(
                "event for token {seq}, which has no operation in flight (duplicate or stale \
                 event)"
            ));
            return;
        };
        f.done_without_event = None;
        match f.state {
            State::Again => {
                let kind = f.plan.kind;
                self.fail(format!(
                    "seq={seq} {kind:?}: event for an op whose submission was refused (EAGAIN)"
                ));
            }
            State::Incomplete => {
                let live = f.live.as_mut().expect("live");
                if !live.done() {
                    self.fail(format!(
                        "seq={seq}: spurious event: batch (EINCOMPLETE) still in progress"
                    ));
                    return;
                }
                self.stats.resubmits += 1;
                let r = live.submit(true);
                self.after_submit(seq, r);
            }
            State::Running => {
                if f.plan.kind == Kind::Batch {
                    if f.live.as_mut().expect("live").done() {
                        self.complete_batch(seq);
                    } else {
                        self.fail(format!(
                            "seq={seq}: spurious event: batch still in progress"
                        ));
                    }
                    return;
                }
                let res = f.live.as_mut().expect("live").aio_return();
                if res == Err(Errno::EINPROGRESS) {
                    let kind = f.plan.kind;
                    self.fail(format!(
                        "seq={seq} {kind:?}: spurious event{}: aio_return gives EINPROGRESS",
                        if forced { " (forced)" } else { "" }
                    ));
                    return;
                }
                self.complete_single(seq, res);
            }
        }
    }

    fn complete_single(&mut self, seq: u64, res: nix_result::Result<usize>) {
        let f = self.inflight.get_mut(&seq).expect("in flight");
        let kind = f.plan.kind;
        let stat = f.cancel;
        let p = f.plan.parts[0].clone();
        let repeat = f.plan.repeat;
        if f.live
            .as_ref()
            .is_some_and(|l| single!(l, op => op.in_progress(), _b => false))
        {
            self.fail(format!(
                "seq={seq} {kind:?}: in_progress() is still true after aio_return"
            ));
        }
        // Cancel consistency, as `SourceApi::cancel` documents it: AioCanceled means the
        // result is ECANCELED; AioAllDone that the op completed on its own (never ECANCELED);
        // AioNotCanceled that it went on and may end in any way, ECANCELED included (counted).
        // Without a cancel, nothing may end with ECANCELED.
        match (stat, &res) {
            (Some(AioCancelStat::AioCanceled), r) if *r != Err(Errno::ECANCELED) => {
                self.fail(format!(
                    "seq={seq} {kind:?}: cancel() said AioCanceled but the op completed with \
                     {res:?}"
                ))
            }
            (Some(AioCancelStat::AioNotCanceled), Err(Errno::ECANCELED)) => {
                self.stats.notcanceled_ecanceled += 1;
            }
            (Some(AioCancelStat::AioAllDone) | None, Err(Errno::ECANCELED)) => {
                if stat.is_some() {
                    self.stats.alldone_ecanceled += 1;
                }
                self.fail(format!(
                    "seq={seq} {kind:?}: result ECANCELED but cancel() said {stat:?} (the docs: \
                     AioAllDone means the operation completed on its own)"
                ))
            }
            _ => {}
        }
        if res == Err(Errno::ECANCELED) {
            self.stats.ecanceled += 1;
        }
        let what = match kind {
            Kind::Read => "read",
            Kind::Readv => "readv",
            Kind::Write => "write",
            Kind::Writev => "writev",
            Kind::Fsync(_) => "fsync",
            Kind::Batch => unreachable!(),
        };
        match kind {
            Kind::Read | Kind::Readv => match res {
                Ok(n) => self.check_read(seq, what, &p, 0, n),
                Err(Errno::ECANCELED) => {}
                Err(e) => self.fail(format!(
                    "seq={seq} {what} file={} off={} len={}: unexpected error {e}",
                    p.file, p.off, p.len
                )),
            },
            Kind::Write | Kind::Writev => self.check_write(seq, what, &p, &res),
            Kind::Fsync(_) => match res {
                Ok(_) | Err(Errno::ECANCELED) => {}
                Err(e) => self.fail(format!("seq={seq} fsync file={}: {e}", p.file)),
            },
            Kind::Batch => unreachable!(),
        }
        if kind != Kind::Write && kind != Kind::Writev {
            self.files[p.file].remember(Hist {
                seq,
                what,
                off: p.off,
                len: p.len,
                res: errno_of(&res),
                data: p.data,
                cancel: stat,
            });
        }
        if repeat && res.is_ok() {
            // Submit the same source again: its buffers are reused.
            let f = self.inflight.get_mut(&seq).expect("in flight");
            f.plan.repeat = false;
            f.cancel = None;
            if p.op == PartOp::Read {
                for b in &mut f.bufs[0] {
                    // SAFETY: the op has completed and been returned: it is idle.
                    unsafe { b.fill(POISON) };
                }
            }
            self.stats.repeats += 1;
            let r = f.live.as_mut().expect("live").submit(false);
            f.state = State::Again;
            self.after_submit(seq, r);
            return;
        }
        self.finish_removed(seq);
    }

    /// Checks a completed write's result and updates the model.
    fn check_write(
        &mut self,
        seq: u64,
        what: &'static str,
        p: &Part,
        res: &nix_result::Result<usize>,
    ) {
        let data = self.pool[p.data..p.data + p.len].to_vec();
        let f = self.inflight.get(&seq).expect("in flight");
        let stat = f.cancel;
        match res {
            Ok(n) if *n == p.len => {
                self.files[p.file].write(p.off, &data);
                self.stats.bytes_written += p.len as u64;
            }
            Err(Errno::ECANCELED) => {}
            _ => {
                self.fail(format!(
                    "seq={seq} {what} file={} off={} len={}: result {res:?} (cancel: {stat:?}); \
                     expected Ok({})",
                    p.file, p.off, p.len, p.len
                ));
                self.uncertain_write(seq, p, &data);
            }
        }
        self.files[p.file].remember(Hist {
            seq,
            what,
            off: p.off,
            len: p.len,
            res: errno_of(res),
            data: p.data,
            cancel: stat,
        });
    }

    /// Checks a completed read (part `idx` of op `seq`) that returned `n` bytes.
    fn check_read(&mut self, seq: u64, what: &'static str, p: &Part, idx: usize, n: usize) {
        let f = self.inflight.get(&seq).expect("in flight");
        // SAFETY: the read has completed (its result was collected): the kernel is done with
        // the buffers.
        let mut data = Vec::with_capacity(p.len);
        for b in &f.bufs[idx] {
            data.extend_from_slice(unsafe { b.get() });
        }
        let stat = f.cancel;
        let file = &self.files[p.file];
        let expected = expected_read(file.size, p.off, p.len);
        self.stats.bytes_read += n as u64;
        if n != expected {
            let msg = format!(
                "seq={seq} {what} file={} off={} len={}: returned {n} bytes, expected {expected} \
                 (file size {}; cancel: {stat:?})\n{}",
                p.file,
                p.off,
                p.len,
                file.size,
                self.history(p.file, p.off.min(file.size), p.off + p.len as u64)
            );
            self.fail(msg);
        } else if n < p.len {
            self.stats.short_at_eof += 1;
        }
        let n = n.min(p.len);
        if let Some(i) = data[n..].iter().position(|&b| b != POISON) {
            self.fail(format!(
                "seq={seq} {what} file={} off={} len={}: returned {n} bytes but buffer byte {} \
                 (beyond the count) was written",
                p.file,
                p.off,
                p.len,
                n + i
            ));
        }
        let valid = n.min(expected);
        self.verify(seq, what, p.file, p.off, &data[..valid]);
    }

    /// Compares bytes read at `off` with the model, learning uncertain bytes.
    fn verify(&mut self, seq: u64, what: &str, fi: usize, off: u64, actual: &[u8]) {
        if actual.is_empty() {
            return;
        }
        let end = off + actual.len() as u64;
        let file = &mut self.files[fi];
        self.stats.bytes_verified += actual.len() as u64;
        // What was read is the truth from now on (in the bad case too, so that one fault is
        // reported once): the uncertain bytes it covers become certain.
        self.stats.uncertain_resolved += file.uncertain_in(off, end);
        let model = &file.content[off as usize..end as usize];
        if model == actual {
            file.make_certain(off, end);
            return;
        }
        // Compare by chunks; only differing chunks are looked at byte by byte.
        let mut bad = Vec::new();
        const CHUNK: usize = 64;
        for (c, (m, a)) in model.chunks(CHUNK).zip(actual.chunks(CHUNK)).enumerate() {
            if m == a {
                continue;
            }
            for (j, (&mb, &ab)) in m.iter().zip(a).enumerate() {
                let i = c * CHUNK + j;
                if mb != ab && !file.possible(off + i as u64, ab) {
                    bad.push(i);
                }
            }
        }
        if bad.is_empty() {
            file.content[off as usize..end as usize].copy_from_slice(actual);
            file.make_certain(off, end);
            return;
        }
        let i = bad[0];
        let pos = off + i as u64;
        let cands = file.candidates(pos);
        let model_byte = file.content[pos as usize];
        let show = |s: &[u8]| {
            s.iter()
                .take(16)
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let model_run =
            show(&file.content[pos as usize..(pos as usize + 16).min(file.content.len())]);
        let actual_run = show(&actual[i..]);
        let path = file.path.display().to_string();
        let size = file.size;
        let msg = format!(
            "MISMATCH: op seq={} {what} file={fi} ({path}) off={off} len={}: {} bad bytes in \
             [{}, {}]; first at file offset {pos} (byte {i} of the read): read {:#04x}, model \
             {model_byte:#04x}, other candidates {cands:?}; file size {size}\n  read : \
             {actual_run}\n  model: {model_run}\n{}",
            if seq == u64::MAX {
                "-".to_owned()
            } else {
                seq.to_string()
            },
            actual.len(),
            bad.len(),
            off + bad[0] as u64,
            off + *bad.last().expect("not empty") as u64,
            actual[i],
            self.history_at(fi, pos, &actual[i..])
        );
        self.fail(msg);
        let file = &mut self.files[fi];
        file.content[off as usize..end as usize].copy_from_slice(actual);
        file.make_certain(off, end);
    }

    /// The recent ops on `fi` that touched `[start, end)`.
    fn history(&self, fi: usize, start: u64, end: u64) -> String {
        let mut o = String::new();
        let hits: Vec<&Hist> = self.files[fi]
            .hist
            .iter()
            .filter(|h| h.off < end && start < h.off + h.len.max(1) as u64)
            .collect();
        let _ = writeln!(
            o,
            "  last ops on file {fi} touching [{start}, {end}) (oldest first):"
        );
        for h in hits.iter().skip(hits.len().saturating_sub(12)) {
            let _ = writeln!(
                o,
                "    seq={} {} off={} len={} -> {} cancel={:?}",
                h.seq,
                h.what,
                h.off,
                h.len,
                fmt_res(h.res),
                h.cancel
            );
        }
        o
    }

    /// The recent ops on `fi` that touched `pos`, saying which write's data the bytes read
    /// there (`actual`, from `pos` on) match.
    fn history_at(&self, fi: usize, pos: u64, actual: &[u8]) -> String {
        let mut o = String::new();
        let hits: Vec<&Hist> = self.files[fi]
            .hist
            .iter()
            .filter(|h| h.off <= pos && pos < h.off + h.len as u64)
            .collect();
        let _ =
            writeln!(
            o,
            "  last ops on file {fi} covering offset {pos} (oldest first; in flight now: {:?}):",
            self.files[fi].locks.iter().map(|l| l.seq).collect::<Vec<_>>()
        );
        for h in hits.iter().skip(hits.len().saturating_sub(12)) {
            let mut note = String::new();
            if h.what.contains("write") {
                let k = (pos - h.off) as usize;
                let m = (h.len - k).min(actual.len()).min(16);
                let src = &self.pool[h.data + k..h.data + k + m];
                if src == &actual[..m] {
                    note = " <- the bytes read match this write's data".into();
                }
            }
            let _ = writeln!(
                o,
                "    seq={} {} off={} len={} -> {} cancel={:?}{note}",
                h.seq,
                h.what,
                h.off,
                h.len,
                fmt_res(h.res),
                h.cancel
            );
        }
        let _ = write!(
            o,
            "  reproduce: MIO_AIO_STRESS_SEED={} with the same backend and thread count (op \
             choices are reproducible, timing is not)",
            self.cfg.seed
        );
        o
    }

    fn complete_batch(&mut self, seq: u64) {
        let mut f = self.inflight.remove(&seq).expect("in flight");
        let Some(Live::Batch(lio)) = f.live.take() else {
            unreachable!("a batch")
        };
        if lio.len() != f.plan.parts.len() {
            self.fail(format!(
                "seq={seq}: batch len() {} != {}",
                lio.len(),
                f.plan.parts.len()
            ));
        }
        let results: Vec<nix_result::Result<isize>> =
            lio.into_results(|it| it.map(|r| r.result).collect());
        // Put it back (without the op) so that check_read finds the buffers.
        let parts = f.plan.parts.clone();
        self.inflight.insert(seq, f);
        if results.len() != parts.len() {
            self.fail(format!(
                "seq={seq}: batch gave {} results for {} operations",
                results.len(),
                parts.len()
            ));
        }
        for (i, (p, r)) in parts.iter().zip(&results).enumerate() {
            let r: nix_result::Result<usize> = r.map(|n| n as usize);
            match p.op {
                PartOp::Read => match r {
                    Ok(n) => self.check_read(seq, "batch-read", p, i, n),
                    Err(e) => self.fail(format!(
                        "seq={seq} batch entry {i} read file={} off={} len={}: {e}",
                        p.file, p.off, p.len
                    )),
                },
                PartOp::Write => self.check_write(seq, "batch-write", p, &r),
                PartOp::Nop => {
                    if r != Ok(0) {
                        self.fail(format!(
                            "seq={seq} batch entry {i} nop: {r:?}, expected Ok(0)"
                        ));
                    }
                }
            }
            if p.op == PartOp::Read {
                self.files[p.file].remember(Hist {
                    seq,
                    what: "batch-read",
                    off: p.off,
                    len: p.len,
                    res: errno_of(&r),
                    data: p.data,
                    cancel: None,
                });
            }
        }
        self.finish_removed(seq);
    }

    /// Reads every file back with std::fs and compares it with the model.
    fn final_check(&mut self) {
        for fi in 0..self.files.len() {
            let path = self.files[fi].path.clone();
            let data = match std::fs::read(&path) {
                Ok(d) => d,
                Err(e) => {
                    self.fail(format!("final read of {}: {e}", path.display()));
                    continue;
                }
            };
            let size = self.files[fi].size;
            if data.len() as u64 != size {
                let msg = format!(
                    "final check: file {fi} ({}) has {} bytes, model says {size}\n{}",
                    path.display(),
                    data.len(),
                    self.history(fi, size.min(data.len() as u64), u64::MAX)
                );
                self.fail(msg);
            }
            let n = data.len().min(size as usize);
            self.verify(u64::MAX, "final std::fs::read", fi, 0, &data[..n]);
        }
    }
}
