//! Runs every point, repetition after repetition, keeping the page cache honest for the cached
//! regime.

use std::{
    collections::HashMap,
    io,
    time::{Duration, Instant},
};

use nix::sys::resource::{getrusage, UsageWho};

use super::{
    args::Options,
    child, data, fio,
    spec::{Method, Outcome, Point, Regime, RunParams, Workload},
};

/// How many times a cached point is run again after the page cache lost part of the file.
const MAX_REDOS: usize = 3;

/// How many times a failed point is tried again before it is reported as failed.
const MAX_RETRIES_AFTER_FAILURE: usize = 2;

/// Bytes read from storage by one cached point above which it missed the page cache: 8 MiB,
/// that is a few dozen misses (with readahead) in millions of operations.
const MISS_BYTES: u64 = 8 << 20;

/// The points of one repetition, in the order they run: for each regime, workload and queue
/// depth, every method one after the other, so that the methods compared in one table cell
/// ran close together in time.
pub fn plan(opts: &Options) -> Vec<Point> {
    let mut v = Vec::new();
    for regime in opts.regimes() {
        for workload in opts.workloads() {
            for &qd in &opts.qds {
                for method in Method::all() {
                    let p = Point {
                        method,
                        regime,
                        workload,
                        qd,
                    };
                    if method.runs_at(qd) && opts.selects(&p) {
                        v.push(p);
                    }
                }
            }
        }
    }
    v
}

/// Everything measured in one run of the benchmark.
#[derive(Debug, Default)]
pub struct Results {
    pub outcomes: HashMap<Point, Vec<Outcome>>,
    /// Cached points run again because the page cache had lost part of the file.
    pub redone: usize,
    /// Cached points that still missed the cache after every retry.
    pub still_evicted: usize,
    pub elapsed: Duration,
}

impl Results {
    pub fn failures(&self) -> Vec<(Point, String)> {
        let mut v: Vec<_> = self
            .outcomes
            .iter()
            .flat_map(|(p, os)| {
                os.iter().filter_map(move |o| match o {
                    Outcome::Failed(why) => Some((*p, why.clone())),
                    _ => None,
                })
            })
            .collect();
        v.sort_by_key(|(p, _)| p.to_string());
        v.dedup_by_key(|(p, _)| *p);
        v
    }
}

/// Storage reads of waited-for child processes so far, in bytes (`ru_inblock` is in 512-byte
/// units). Every point runs in a child (ours, or fio and the job processes it waits for), so the
/// difference around a point is what that point read from the device.
fn children_storage_reads() -> u64 {
    getrusage(UsageWho::RUSAGE_CHILDREN).map_or(0, |u| u.block_reads() as u64 * 512)
}

pub struct Runner<'a> {
    opts: &'a Options,
    params: RunParams,
    fio: Option<String>,
}

impl<'a> Runner<'a> {
    pub fn new(opts: &'a Options, params: RunParams, fio: Option<String>) -> Self {
        Runner { opts, params, fio }
    }

    /// Runs the whole plan `opts.reps` times, printing progress on stderr.
    pub fn run(&self) -> io::Result<Results> {
        let plan = plan(self.opts);
        let total = plan.len() * self.opts.reps;
        let per_point = self.params.warmup + self.params.secs + 0.3;
        eprintln!(
            "{} points × {} repetitions, about {:.0} minutes",
            plan.len(),
            self.opts.reps,
            (total as f64 * per_point / 60.0).ceil()
        );
        let start = Instant::now();
        let mut results = Results::default();
        let mut done = 0;
        for _ in 0..self.opts.reps {
            let mut table = None;
            for point in &plan {
                if table != Some((point.regime, point.workload)) {
                    data::sync(&self.params.file)?;
                    table = Some((point.regime, point.workload));
                }
                let outcome = self.run_point(point, &mut results)?;
                done += 1;
                eprintln!(
                    "[{done:>4}/{total} {:>5.0}s] {point}: {}",
                    start.elapsed().as_secs_f64(),
                    describe(&outcome)
                );
                results.outcomes.entry(*point).or_default().push(outcome);
            }
        }
        results.elapsed = start.elapsed();
        Ok(results)
    }

    /// One run of a point; a cached point that read from storage is run again (up to
    /// `MAX_REDOS` times) with the file back in the cache.
    fn run_point(&self, point: &Point, results: &mut Results) -> io::Result<Outcome> {
        let file = &self.params.file;
        let cached = point.regime == Regime::Cached;
        let (mut attempt, mut failures) = (0, 0);
        loop {
            if cached {
                data::ensure_resident(file)?;
            }
            let reads_before = children_storage_reads();
            let outcome = match point.method {
                Method::Fio(engine) => match &self.fio {
                    Some(_) => fio::run(engine, point, &self.params),
                    None => Outcome::NotApplicable("SKIPPED: fio is not on PATH".into()),
                },
                _ => child::spawn(point, &self.params),
            };
            let storage_reads = children_storage_reads().saturating_sub(reads_before);
            if point.workload == Workload::RandWrite && !self.opts.quick {
                // Write back what the point dirtied, outside any timed window (the quick mode
                // only does it between tables, in `run`).
                data::sync(file)?;
            }
            let outcome = match outcome {
                Outcome::Measured(s) if self.params.verify && s.verified.unwrap_or(0) == 0 => {
                    Outcome::Failed("verify: no operation's bytes were checked".into())
                }
                o => o,
            };
            if let Outcome::Failed(why) = &outcome {
                // Something else on the machine may refuse a point for a moment (a test that
                // sets kernel.io_uring_disabled, say): try again after a pause, then report it.
                // Wrong bytes are never the machine's moment: no retry.
                if failures < MAX_RETRIES_AFTER_FAILURE && !why.contains("verify") {
                    failures += 1;
                    eprintln!("    {point}: failed ({why}); trying again in 5 s");
                    std::thread::sleep(Duration::from_secs(5));
                    continue;
                }
            }
            let Outcome::Measured(mut sample) = outcome else {
                return Ok(outcome);
            };
            if cached && storage_reads > MISS_BYTES {
                let resident =
                    data::residency(file).map_or("?".into(), |r| format!("{:.1}%", r * 100.0));
                eprintln!(
                    "    {point}: read {} MiB from storage (page cache now holds {resident} of the file){}",
                    storage_reads >> 20,
                    if attempt < MAX_REDOS { ": running it again" } else { ": keeping it, marked †" }
                );
                if attempt < MAX_REDOS {
                    attempt += 1;
                    results.redone += 1;
                    continue;
                }
                sample.evicted = true;
                results.still_evicted += 1;
            }
            return Ok(Outcome::Measured(sample));
        }
    }
}

fn describe(o: &Outcome) -> String {
    match o {
        Outcome::Measured(s) => {
            let mut t = format!(
                "{:.1} kIOPS, {:.2} µs CPU/op",
                s.iops() / 1e3,
                s.cpu_us_per_op()
            );
            if let (Some(p50), Some(p99)) = (s.p50_ns, s.p99_ns) {
                t += &format!(
                    ", p50 {:.1} µs, p99 {:.1} µs",
                    p50 as f64 / 1e3,
                    p99 as f64 / 1e3
                );
            }
            if let Some(v) = s.verified {
                t += &format!(", {v} operations verified");
            }
            if let Some(i) = s.interrupted {
                t += &format!(
                    ", {:.1} interrupted polls/1k ops",
                    i as f64 * 1e3 / s.ops.max(1) as f64
                );
            }
            t
        }
        Outcome::NotApplicable(why) => format!("n/a ({why})"),
        Outcome::Failed(why) => format!("FAILED: {why}"),
    }
}
