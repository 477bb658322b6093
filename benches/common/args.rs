//! Command-line options.

use std::path::PathBuf;

use super::spec::{Point, Regime, Workload};

pub const USAGE: &str = "\
usage: cargo bench --features tokio --bench compare -- [--quick] [--verify] [--file PATH] [--secs N] [--reps N] [--only PATTERN]

  --quick         a smoke test (< 60 s): QD1 and QD32, 0.1 s per point, one repetition
  --verify        check every operation's bytes: each read against the file's known content,
                  each write by reading the block back; a mismatch fails the point. Runs only
                  the methods whose buffers are ours (mio-aio, spawn_blocking, threads). The
                  checks cost time: verified rows are not timing rows
  --file PATH     the file to work on (default: target/bench-data/bench1280m, created once:
                  pseudo-random 4 KiB blocks, each a function of its number; reads go to its
                  first 1 GiB, writes to the 256 MiB after. It must be on a file system with
                  O_DIRECT, not tmpfs. With --file, reads use the first 4/5, writes the rest)
  --secs N        the timed window of each point, in seconds (default 3; quick: 0.1)
  --reps N        repetitions of every point; tables show the median and min–max (default 3;
                  quick: 1)
  --only PATTERN  run only the points whose description contains every word of PATTERN
                  (case-insensitive; several patterns separated by commas). A point reads
                  e.g. \"mio-aio per-op (io_uring) mio-perop-io_uring cached randread\" plus
                  its queue depth, matched by a word qdN exactly: --only \"io_uring qd32\",
                  --only \"cached randread\", --only \"fio,tokio\"
";

#[derive(Clone, Debug)]
pub struct Options {
    pub quick: bool,
    pub verify: bool,
    pub file: Option<PathBuf>,
    pub secs: f64,
    pub warmup: f64,
    pub reps: usize,
    pub only: Vec<String>,
    pub qds: Vec<usize>,
    /// The command line, for the report.
    pub command: String,
}

impl Options {
    /// Parses the arguments after the program name. Cargo adds `--bench`, which is ignored.
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let (mut quick, mut verify) = (false, false);
        let (mut file, mut secs, mut reps, mut only) = (None, None, None, Vec::new());
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match a.as_str() {
                "--bench" => {}
                "--quick" => quick = true,
                "--verify" => verify = true,
                "--file" => file = Some(PathBuf::from(value("--file")?)),
                "--secs" => {
                    let v: f64 = value("--secs")?
                        .parse()
                        .map_err(|e| format!("--secs: {e}"))?;
                    if v.is_nan() || v <= 0.0 {
                        return Err("--secs must be positive".into());
                    }
                    secs = Some(v);
                }
                "--reps" => {
                    let v: usize = value("--reps")?
                        .parse()
                        .map_err(|e| format!("--reps: {e}"))?;
                    reps = Some(v.max(1));
                }
                "--only" => only.extend(
                    value("--only")?
                        .split(',')
                        .map(|p| p.trim().to_lowercase())
                        .filter(|p| !p.is_empty()),
                ),
                "-h" | "--help" => return Err(String::new()),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        let mut command = String::from(if cfg!(feature = "tokio") {
            "cargo bench --features tokio --bench compare"
        } else {
            "cargo bench --bench compare"
        });
        let shown: Vec<&String> = args.iter().filter(|a| *a != "--bench").collect();
        if !shown.is_empty() {
            command.push_str(" --");
            for a in shown {
                command.push(' ');
                command.push_str(a);
            }
        }
        Ok(Options {
            quick,
            verify,
            file,
            secs: secs.unwrap_or(if quick { 0.1 } else { 3.0 }),
            warmup: if quick { 0.03 } else { 0.5 },
            reps: reps.unwrap_or(if quick { 1 } else { 3 }),
            only,
            qds: if quick {
                vec![1, 32]
            } else {
                vec![1, 8, 32, 128]
            },
            command,
        })
    }

    /// Whether `--only` lets `point` run: some pattern whose every word is in the point's
    /// description. A word `qdN` must name the queue depth exactly (`qd1` is not `qd128`).
    /// With `--verify`, only methods whose bytes can be checked run.
    pub fn selects(&self, point: &Point) -> bool {
        if self.verify && !point.method.verifiable() {
            return false;
        }
        if self.only.is_empty() {
            return true;
        }
        let text = format!(
            "{} {} {} {}",
            point.method.label(),
            point.method.id(),
            point.regime.name(),
            point.workload.name(),
        )
        .to_lowercase();
        self.only.iter().any(|pattern| {
            pattern.split_whitespace().all(|word| {
                match word.strip_prefix("qd").map(str::parse::<usize>) {
                    Some(Ok(qd)) => qd == point.qd,
                    _ => text.contains(word),
                }
            })
        })
    }

    pub fn regimes(&self) -> [Regime; 2] {
        Regime::ALL
    }

    pub fn workloads(&self) -> [Workload; 2] {
        Workload::ALL
    }

    /// The queue depth of the CPU and ratio columns: 32, or the nearest one run.
    pub fn ref_qd(&self) -> usize {
        if self.qds.contains(&32) {
            32
        } else {
            *self.qds.iter().max().unwrap_or(&1)
        }
    }
}
