//! The pieces every in-process method shares: CPU time, the timed window, per-operation
//! accounting, random offsets and aligned buffers.

use std::{
    sync::atomic::{AtomicU8, Ordering},
    time::{Duration, Instant},
};

use nix::sys::resource::{getrusage, UsageWho};

use super::spec::{RunParams, Sample};

fn cpu_secs(who: UsageWho) -> f64 {
    let u = getrusage(who).expect("getrusage");
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 * 1e-6;
    secs(u.user_time()) + secs(u.system_time())
}

/// User + system CPU time of this process so far: every thread, including those that have
/// exited, mio-aio's worker threads and the kernel's io_uring workers (they belong to the
/// process).
pub fn cpu_self() -> f64 {
    cpu_secs(UsageWho::RUSAGE_SELF)
}

/// The phase of a run: operations are counted only while `Measure`; `Stop` asks every worker
/// to finish the operation it has in flight and stop.
#[derive(Debug, Default)]
pub struct PhaseFlag(AtomicU8);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Warmup,
    Measure,
    Stop,
}

impl PhaseFlag {
    pub fn get(&self) -> Phase {
        match self.0.load(Ordering::Relaxed) {
            0 => Phase::Warmup,
            1 => Phase::Measure,
            _ => Phase::Stop,
        }
    }

    fn set(&self, p: Phase) {
        self.0.store(p as u8, Ordering::Relaxed);
    }
}

/// The timed window of a run: CPU time and wall time between the end of the warm-up and the
/// stop.
#[derive(Debug)]
pub struct Window {
    start: Instant,
    cpu_start: f64,
    length: Duration,
    cpu: f64,
}

impl Window {
    /// Opens the window: from now on operations count.
    pub fn open(phase: &PhaseFlag) -> Window {
        let w = Window {
            cpu_start: cpu_self(),
            start: Instant::now(),
            length: Duration::ZERO,
            cpu: 0.0,
        };
        phase.set(Phase::Measure);
        w
    }

    /// Closes the window: workers stop after their current operation.
    pub fn close(&mut self, phase: &PhaseFlag) {
        phase.set(Phase::Stop);
        self.length = self.start.elapsed();
        self.cpu = cpu_self() - self.cpu_start;
    }

    /// For methods whose workers run on other threads: sleeps through warm-up and window.
    pub fn run_timed(phase: &PhaseFlag, params: &RunParams) -> Window {
        std::thread::sleep(Duration::from_secs_f64(params.warmup));
        let mut w = Window::open(phase);
        std::thread::sleep(Duration::from_secs_f64(params.secs));
        w.close(phase);
        w
    }

    /// The sample of a closed window, from the workers' counters.
    pub fn sample(&self, counters: impl IntoIterator<Item = Counter>) -> Sample {
        let (mut ops, mut all_ops, mut verified) = (0, 0, 0);
        let mut lat = Vec::new();
        for c in counters {
            ops += c.ops;
            all_ops += c.all_ops;
            verified += c.verified;
            lat.extend(c.latencies);
        }
        let (p50_ns, p99_ns) = percentiles(&mut lat);
        Sample {
            ops,
            secs: self.length.as_secs_f64(),
            cpu_secs: self.cpu,
            p50_ns,
            p99_ns,
            all_ops: Some(all_ops),
            verified: Some(verified),
            ..Sample::default()
        }
    }
}

/// One worker's count of operations finished in the window and, when asked for, their
/// latencies.
#[derive(Debug, Default)]
pub struct Counter {
    pub ops: u64,
    /// Every operation finished, in and out of the window.
    pub all_ops: u64,
    /// With `--verify`: operations whose bytes were checked (the worker sets it at the end).
    pub verified: u64,
    pub latencies: Vec<u32>,
    record: bool,
}

impl Counter {
    /// Records latencies when `qd` is 1 (at higher depths they would only cost time).
    pub fn new(qd: usize) -> Counter {
        Counter {
            record: qd == 1,
            ..Counter::default()
        }
    }

    /// When an operation starts: the time to pass to [`Counter::done`], if latencies are kept.
    #[inline]
    pub fn start(&self) -> Option<Instant> {
        self.record.then(Instant::now)
    }

    /// Accounts `n` operations that just finished, and says whether to go on.
    #[inline]
    pub fn done(&mut self, phase: &PhaseFlag, n: u64, started: Option<Instant>) -> bool {
        self.all_ops += n;
        match phase.get() {
            Phase::Warmup => true,
            Phase::Measure => {
                self.ops += n;
                if let Some(t) = started {
                    let ns = t.elapsed().as_nanos();
                    self.latencies.push(ns.min(u32::MAX as u128) as u32);
                }
                true
            }
            Phase::Stop => false,
        }
    }
}

/// p50 and p99 of `lat`, in nanoseconds.
pub fn percentiles(lat: &mut [u32]) -> (Option<u64>, Option<u64>) {
    if lat.is_empty() {
        return (None, None);
    }
    lat.sort_unstable();
    let at = |q: f64| Some(lat[((lat.len() - 1) as f64 * q).round() as usize] as u64);
    (at(0.50), at(0.99))
}

/// xorshift64*: a random block per operation for a few nanoseconds, and the bytes of `pattern`.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// A zeroed buffer whose start is aligned to 4096 bytes, as `O_DIRECT` requires.
///
/// No `unsafe`: a `Vec` 4095 bytes longer than needed is sliced from its first aligned byte.
#[derive(Debug)]
pub struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    pub fn new(len: usize) -> AlignedBuf {
        const ALIGN: usize = 4096;
        let storage = vec![0x5a_u8; len + ALIGN - 1];
        let start = storage.as_ptr().align_offset(ALIGN);
        assert!(start < ALIGN, "cannot align a byte buffer");
        AlignedBuf {
            storage,
            start,
            len,
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}
